"""Float64 (and float32) reference numbers for ffebm's DRN blocks from energy-based-learning.

Regenerate the fixture (byte-identical files; about 1 minute on 2 cores), from the repo root:

    EBL_GIT=/work/.mirror/rain-neuromorphics+energy-based-learning/repo   # `fetch` mirror
    EBL_COMMIT=6b253fd8a5d267535f58ab79992256ef10031ceb
    rm -rf /tmp/ebl && mkdir -p /tmp/ebl
    git --git-dir=$EBL_GIT archive $EBL_COMMIT | tar -x -C /tmp/ebl
    FFEBM_EBL_DIR=/tmp/ebl FFEBM_EBL_COMMIT=$EBL_COMMIT /work/venv-ref/bin/python \
        tools/reference/make_drn_fixtures.py --mnist /work/shared/data/mnist --out tests/fixtures/drn_ebl

(torch 2.5.1 CPU, numpy, safetensors; torchvision is not needed). energy-based-learning (ebl,
github.com/rain-neuromorphics/energy-based-learning) is NOT part of ffebm and none of its code
is committed here.

Nothing of ebl's numerics is re-implemented: the script builds ebl's own
`DeepResistiveEnergy`, `SquaredError`, `Network`, `QuadraticMinimizer`, `AugmentedFunction`,
`EquilibriumProp` and `Backprop`, wired as `papers/fast-drn/drn.py` wires them, with the
DRN-XS settings (layers [(2,28,28),(100,),(10,)], input gain 100, 4 iterations, asynchronous
updates, beta 1, centered EP), once with `torch.set_default_dtype(torch.float64)` and once
in float32. Both runs start from the same weights and inputs (widened exactly to float64 for
the float64 run), so the float64 run is the exact answer for the numbers ffebm reads. Every
phase starts as ffebm starts it: the free phase from zero states, both nudged phases of EP and
the unrolled iterations of Backprop from the free state.

Size (the fixture stays well under 1 MB): the conductances are drawn in float32 and rounded
once to float16, which both runs and ffebm widen exactly, so weights.safetensors is stored in
float16 (313 kB instead of 627 kB); of the gradients of DenseWeight_0 (1568 x 100 entries),
the files keep the 64 rows (input nodes) listed in `rows`: 24 pixels that are lit in the batch
and 8 that are dark, each in both input channels (+x and -x), with all 100 hidden columns.
Every other reference tensor is stored whole. `--compare` checks whole tensors.

Outputs (folder --out):
  weights.safetensors        DenseWeight_0 (2,28,28,100), DenseWeight_1 (100,10), Bias_1 (100,),
                             Bias_2 (10,): ebl's parameter names and shapes, float16
  batch.safetensors          x (4,1,28,28) float32 raw pixels in [0,1], y (4,) int64
  ebl_float64.safetensors    the float64 run: free.Layer_1 (4,100), free.Layer_2 (4,10), loss,
                             ep.<param>, bp.<param> (DenseWeight_0: ep|bp.DenseWeight_0.rows
                             (64,100), the rows `rows` (64,) of the (1568,100) gradient),
                             rounded once to float32
  ebl_float32.safetensors    the float32 run (ebl's own precision): free.*, loss,
                             ep.DenseWeight_0.rows
  summary.json               relative L2 errors of the float32 run against the float64 run
                             (whole tensors), diode active sets, norms, how far one iteration
                             more or less moves the float64 numbers

With --compare G.safetensors (the output of `ffebm grad --preset drn_xs --weights
<out>/weights.safetensors --input <out>/batch.safetensors`) the script re-runs the float64
reference and prints the relative L2 error of every tensor of G (ebl names, whole tensors;
`logits` against the free output layer) against it, unrounded. --algo says which ebl
estimator G is compared with (ep for `--algo ep`, bp for `--algo id-exact`).
"""
import argparse
import gzip
import json
import os
import struct
import sys

EBL = os.environ.get("FFEBM_EBL_DIR")
if not EBL:
    sys.exit("set FFEBM_EBL_DIR to an extracted energy-based-learning checkout (folder containing model/ and training/)")
sys.path.insert(0, EBL)

import numpy as np  # noqa: E402
import torch  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402

# ebl's own classes (as papers/fast-drn/drn.py imports them)
from model.resistive.network import DeepResistiveEnergy  # noqa: E402
from model.function.network import Network  # noqa: E402
from model.function.cost import SquaredError  # noqa: E402
from model.resistive.minimizer import QuadraticMinimizer  # noqa: E402
from training.sgd import EquilibriumProp, Backprop, AugmentedFunction  # noqa: E402
from model.variable.layer import Layer  # noqa: E402
from model.variable.parameter import Bias, DenseWeight  # noqa: E402

LAYER_SHAPES = [(2, 28, 28), (100,), (10,)]
WEIGHT_GAINS = [1.0, 1.0]
INPUT_GAIN = 100.0
ITERATIONS = 4
NUDGING = 1.0
BATCH = 4
WEIGHT_SEED = 20250801
# ebl's kaiming_uniform scale for the seeded draws; drn.py initialises with [1, 1]. With gain 1
# on DenseWeight_1 the hidden layer is ~40x more tightly tied to the input than to the output,
# every relaxation converges to float32 precision in about 3 sweeps, and the fixture could
# not tell 3 sweeps from 4 (or one update order from another). Gain 10 makes the output pull
# on the hidden layer: one sweep more or less then moves the numbers by 1e-4 to 1e-2.
INIT_GAINS = [1.0, 10.0]
BIAS_SCALE = 0.5


def read_idx(path, magic):
    with gzip.open(path, "rb") as f:
        data = f.read()
    (m,) = struct.unpack(">i", data[:4])
    if m != magic:
        sys.exit(f"{path}: magic {m}, expected {magic}")
    if magic == 2051:
        n, rows, cols = struct.unpack(">iii", data[4:16])
        return np.frombuffer(data, dtype=np.uint8, offset=16).reshape(n, rows, cols)
    (n,) = struct.unpack(">i", data[4:8])
    return np.frombuffer(data, dtype=np.uint8, offset=8).reshape(n)


def mnist_batch(folder):
    """The first BATCH training images as torchvision's ToTensor() gives them in float32
    (uint8 / 255, no normalisation, no padding: ebl's `normalize=False`, 28x28)."""
    images = read_idx(os.path.join(folder, "train-images-idx3-ubyte.gz"), 2051)[:BATCH]
    labels = read_idx(os.path.join(folder, "train-labels-idx1-ubyte.gz"), 2049)[:BATCH]
    x = torch.from_numpy(images.copy()).to(torch.float32).div(255.0).unsqueeze(1)
    y = torch.from_numpy(labels.astype(np.int64))
    return x, y


def seeded_weights():
    """ebl's DenseWeight initialisation (kaiming_uniform: U(-gain/sqrt(fan_in),
    +gain/sqrt(fan_in)), then clamped to >= 0) with the gains INIT_GAINS, drawn from a seeded
    generator; biases U(-BIAS_SCALE, BIAS_SCALE) instead of ebl's zeros so that they matter.
    Drawn in float32, returned rounded to float16."""
    g = torch.Generator().manual_seed(WEIGHT_SEED)
    out = {}
    for j, (pre, post) in enumerate(zip(LAYER_SHAPES[:-1], LAYER_SHAPES[1:])):
        fan_in = int(np.prod(pre))
        bound = INIT_GAINS[j] / np.sqrt(fan_in)
        w = (torch.rand(pre + post, generator=g, dtype=torch.float32) * 2 - 1) * bound
        out[f"DenseWeight_{j}"] = w.clamp(min=0.0)
    for j, shape in enumerate(LAYER_SHAPES[1:]):
        b = (torch.rand(shape, generator=g, dtype=torch.float32) * 2 - 1) * BIAS_SCALE
        out[f"Bias_{j + 1}"] = b
    # rounded once to float16 (stored so, to keep the fixture small); float16 -> float32 ->
    # float64 is exact, so every run and ffebm see the same numbers
    return {k: v.to(torch.float16) for k, v in out.items()}


def run_ebl(dtype, weights, x, y):
    """Free phase from zero, ebl's centered EP and ebl's Backprop, both from the free state."""
    torch.set_default_dtype(dtype)
    # ebl numbers layers and parameters with class counters: reset them so that the names
    # are those of a fresh process (Bias_1, DenseWeight_0, ...)
    Layer._counter = 0
    Bias._counter = 0
    DenseWeight._counter = 0
    energy_fn = DeepResistiveEnergy(LAYER_SHAPES, WEIGHT_GAINS, INPUT_GAIN)
    energy_fn.set_device("cpu")
    params = energy_fn.params()
    layers = energy_fn.layers()
    assert [p.name for p in params] == ["Bias_1", "Bias_2", "DenseWeight_0", "DenseWeight_1"], [p.name for p in params]
    # ebl's Parameter always allocates float32; widen our float32 values exactly
    for p in params:
        p.state = weights[p.name].to(torch.float32).to(dtype).clone()
    cost_fn = SquaredError(layers[-1])
    network = Network(energy_fn)
    free_layers = network.free_layers()

    free_minimizer = QuadraticMinimizer(energy_fn, free_layers)
    free_minimizer.num_iterations = ITERATIONS
    free_minimizer.mode = "asynchronous"

    augmented_fn = AugmentedFunction(energy_fn, cost_fn)
    nudged_minimizer = QuadraticMinimizer(augmented_fn, free_layers)
    nudged_minimizer.num_iterations = ITERATIONS
    nudged_minimizer.mode = "asynchronous"
    ep = EquilibriumProp(params, layers, augmented_fn, cost_fn, nudged_minimizer)
    ep.nudging = NUDGING
    ep.variant = "centered"

    bp_minimizer = QuadraticMinimizer(energy_fn, free_layers)
    bp_minimizer.num_iterations = ITERATIONS
    bp_minimizer.mode = "asynchronous"
    bp = Backprop(params, layers, cost_fn, bp_minimizer)

    network.set_input(x.to(dtype), reset=True)  # free layers at zero
    free_minimizer.compute_equilibrium()
    cost_fn.set_target(y)
    cost_fn._target = cost_fn._target.to(dtype)  # ebl makes the one-hot target float32
    free = {layer.name: layer.state.clone() for layer in free_layers}
    loss = cost_fn.eval().mean().detach().clone()

    ep_grads = ep.compute_gradient()  # -beta phase, then +beta phase, each from the free state
    ep_states = {layer.name: layer.state.clone() for layer in free_layers}  # the +beta state
    for layer in free_layers:  # ebl leaves the network in its last nudged state
        layer.state = free[layer.name].clone()
    bp_grads = bp.compute_gradient()
    out = {"loss": loss}
    for name, t in free.items():
        out[f"free.{name}"] = t
    for p, g in zip(params, ep_grads):
        out[f"ep.{p.name}"] = g.detach().clone()
    for p, g in zip(params, bp_grads):
        out[f"bp.{p.name}"] = g.detach().clone()
    torch.set_default_dtype(torch.float32)
    return out, ep_states


ROWS_LIT, ROWS_DARK = 24, 8


def gradient_rows(x):
    """The rows (input nodes, flat in ebl's (2, 28, 28) input layer) of DenseWeight_0's gradients
    kept in the fixture: ROWS_LIT pixels lit in some image of the batch and ROWS_DARK pixels dark
    in all of them, evenly spaced, each in both channels (+x at p, -x at 784 + p)."""
    lit = (x.reshape(x.shape[0], -1) > 0).any(dim=0)
    pixels = lit.numel()

    def spaced(idx, n):
        return idx[np.linspace(0, len(idx) - 1, n).round().astype(int)]

    on = spaced(torch.nonzero(lit).flatten().numpy(), ROWS_LIT)
    off = spaced(torch.nonzero(~lit).flatten().numpy(), ROWS_DARK)
    p = np.sort(np.concatenate([on, off]))
    return torch.from_numpy(np.concatenate([p, p + pixels]).astype(np.int64))


def stored(run, rows, keys=None):
    """A run's tensors as the fixture keeps them: DenseWeight_0's gradients as their `rows`
    (`<key>.rows`, (R, 100)), everything else whole; all float32."""
    out = {}
    for k, v in run.items():
        if keys is not None and k not in keys:
            continue
        if k.endswith(".DenseWeight_0"):
            out[k + ".rows"] = v.reshape(-1, v.shape[-1])[rows].to(torch.float32).contiguous()
        else:
            out[k] = v.to(torch.float32).contiguous()
    return out


def rel_l2(a, b):
    a, b = a.to(torch.float64), b.to(torch.float64)
    return float((a - b).norm() / b.norm().clamp(min=1e-300))


def active_set(t):
    """Which hidden diodes conduct (state != 0)."""
    return (t != 0).cpu().numpy()


def compare(args, weights, x, y):
    ref, _ = run_ebl(torch.float64, weights, x, y)
    g = load_file(args.compare)
    prefix = "ep." if args.algo == "ep" else "bp."
    print(f"{args.compare} against ebl's float64 {args.algo.upper()} (relative L2 error)")
    for key in sorted(g):
        if key == "logits":
            ref_t = ref["free.Layer_2"]
        elif key == "loss":
            ref_t = ref["loss"]
        elif prefix + key in ref:
            ref_t = ref[prefix + key]
        else:
            continue
        if tuple(g[key].shape) != tuple(ref_t.shape):
            sys.exit(f"{key}: shape {tuple(g[key].shape)} in {args.compare}, ebl's is {tuple(ref_t.shape)}")
        print(f"  {key:<16} {rel_l2(g[key], ref_t):.3e}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mnist", default="/work/shared/data/mnist", help="folder with the MNIST IDX .gz files")
    ap.add_argument("--out", default="tests/fixtures/drn_ebl")
    ap.add_argument("--compare", help="an `ffebm grad` output (ebl names) to compare with the float64 run")
    ap.add_argument("--algo", choices=["ep", "bp"], default="ep")
    args = ap.parse_args()
    torch.set_num_threads(2)
    x, y = mnist_batch(args.mnist)
    weights = seeded_weights()
    if args.compare:
        compare(args, weights, x, y)
        return

    commit = os.environ.get("FFEBM_EBL_COMMIT")
    if not commit:
        sys.exit("set FFEBM_EBL_COMMIT to the ebl commit extracted in FFEBM_EBL_DIR (it is recorded in the fixture)")
    r64, plus64 = run_ebl(torch.float64, weights, x, y)
    r32, plus32 = run_ebl(torch.float32, weights, x, y)
    global ITERATIONS
    sensitivity = {}
    for it in (3, 5):  # how far one iteration less or more moves the float64 numbers
        ITERATIONS = it
        r_it, _ = run_ebl(torch.float64, weights, x, y)
        sensitivity[str(it)] = {k: rel_l2(r_it[k], r64[k]) for k in sorted(r64)}
    ITERATIONS = 4

    summary = {
        "ebl_commit": commit,
        "torch": torch.__version__,
        "batch_labels": y.tolist(),
        "float32_vs_float64_rel_l2": {k: rel_l2(r32[k], r64[k]) for k in sorted(r64)},
        "float32_vs_float64_rel_l2_ep.DenseWeight_0_rows": rel_l2(
            *(stored(r, gradient_rows(x), ["ep.DenseWeight_0"])["ep.DenseWeight_0.rows"] for r in (r32, r64))),
        "norms_float64": {k: float(r64[k].norm()) for k in sorted(r64)},
        "hidden_active_sets_equal": {
            "free": bool((active_set(r32["free.Layer_1"]) == active_set(r64["free.Layer_1"])).all()),
            "plus_beta": bool((active_set(plus32["Layer_1"]) == active_set(plus64["Layer_1"])).all()),
        },
        "hidden_active_fraction_free": float(active_set(r64["free.Layer_1"]).mean()),
        "free_output_range": [float(r64["free.Layer_2"].min()), float(r64["free.Layer_2"].max())],
        "loss": float(r64["loss"]),
        "iterations_3_or_5_vs_4_rel_l2_float64": sensitivity,
        "init_gains": INIT_GAINS,
    }
    for k, v in summary["float32_vs_float64_rel_l2"].items():
        print(f"ebl float32 vs float64  {k:<18} {v:.3e}")
    print("hidden active sets equal (float32 vs float64):", summary["hidden_active_sets_equal"])

    os.makedirs(args.out, exist_ok=True)

    def meta(what):
        # one metadata key: safetensors writes several in a random order, and the files are
        # meant to be byte-identical from run to run
        return {"provenance": f"energy-based-learning {summary['ebl_commit'][:12]} (DRN-XS: layers "
                f"[(2,28,28),(100,),(10,)], input gain 100, 4 asynchronous iterations, centered EP, "
                f"beta 1) run by ffebm's tools/reference/make_drn_fixtures.py; {what}"}

    save_file({k: v.contiguous() for k, v in weights.items()}, os.path.join(args.out, "weights.safetensors"),
              metadata=meta("ebl parameter names and shapes; float32 draws rounded to float16"))
    save_file({"x": x.contiguous(), "y": y.contiguous()}, os.path.join(args.out, "batch.safetensors"),
              metadata=meta("x: the first 4 MNIST training images as uint8/255 in float32; y: their labels"))
    rows = gradient_rows(x)
    save_file({"rows": rows, **stored(r64, rows)}, os.path.join(args.out, "ebl_float64.safetensors"),
              metadata=meta("computed in float64, stored rounded once to float32; DenseWeight_0 "
                            "gradients: the rows `rows` of their (1568, 100) view"))
    keep32 = ["free.Layer_1", "free.Layer_2", "loss", "ep.DenseWeight_0"]
    save_file({"rows": rows, **stored(r32, rows, keep32)}, os.path.join(args.out, "ebl_float32.safetensors"),
              metadata=meta("computed in float32 (ebl's own precision); DenseWeight_0 gradients: "
                            "the rows `rows` of their (1568, 100) view"))
    with open(os.path.join(args.out, "summary.json"), "w") as f:
        json.dump(summary, f, indent=2, sort_keys=True)
        f.write("\n")
    print("wrote", args.out)


if __name__ == "__main__":
    main()
