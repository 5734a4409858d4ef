"""Float64 reference gradients from the authors' PyTorch code, to measure how close ffebm's
float32 EP and ID gradients are to the exact answer of the same algorithm.

The reference code (github.com/rain-neuromorphics/hybrid_bp_ep_official) is not part of
ffebm. Check it out (e.g. `git archive` of the fetched mirror) and run

    FFEBM_REFERENCE_DIR=/path/to/hybrid_bp_ep_official FFEBM_DATA=/path/to/data \\
        python tools/reference/make_f64_fixtures.py --ffebm target/release/ffebm \\
        --out tests/fixtures/reference_f64

Requirements: torch (2.5.1 used), omegaconf, numpy, safetensors, and an ffebm binary.

Two kinds of output:

* For the three tiny cases of make_fixtures.py (tests/fixtures/reference/<case>/), the
  reference's EP, BPTT (SPEC `id-reference`) and exact-BPTT gradients re-run in float64 on
  the same float32 weights and batch: `<case>/f64.safetensors` in that folder, keys
  `ep.grad.<name>`, `bptt.grad.<name>`, `bptt_exact.grad.<name>` (float64, every element).
* Two paper-scale settings, weights from ffebm's own initialisation (`ffebm presets NAME
  --export-weights --seed 0`, the SPEC §3 distributions) loaded into the reference model,
  and a batch of real CIFAR-10 test images (the first B of test_batch_first1000.bin,
  normalised as SPEC §4):
    - splitting_small_2block: batch 8, T1 60, T2 20, beta 0.2
    - static_gradient_analysis (6 blocks): batch 2, T1 15, T2 20, beta 0.02
  Their tensors are too large to store whole, so `expected.safetensors` holds, per
  parameter, a fixed sample of at most 2048 flat indices (`idx.<name>`, int64, sorted; every
  index of smaller tensors) and the float64 EP, BPTT and exact-BPTT gradients there
  (`ep64.`, `bptt64.`, `exact64.`), plus the reference's own float32 EP (`ep32.`) for
  comparison. `batch.safetensors` holds x (NCHW float32) and y (int64); `case.json` the
  settings and a SHA-256 digest of the weights ffebm exported (over name and little-endian
  data of every tensor in name order; the test checks that ffebm still initialises the same
  weights).
Re-running gives the same files up to float64 summation-order round-off of torch.
"""
import argparse
import hashlib
import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_fixtures as mf  # noqa: E402  (also puts the reference on sys.path)

import numpy as np  # noqa: E402
import torch  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402
from safetensors.numpy import save_file as save_np  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402
from src.models import getModel  # noqa: E402  (reference code)
from src.algorithms import getAlgorithm  # noqa: E402  (reference code)

SAMPLES = 2048
MEAN = np.array([0.4914, 0.4822, 0.4465], dtype=np.float32)
STD = 3 * np.array([0.2023, 0.1994, 0.2010], dtype=np.float32)
BIG = {
    "splitting_small_2block": dict(batch=8, T2=20, beta=0.2),
    "static_gradient_analysis": dict(batch=2, T2=20, beta=0.02),
}


def run(model, algo_name, x, y, T2, beta):
    """The reference's EP / BPTT / exact BPTT on `model` (train mode); gradients by name."""
    loss_fn = torch.nn.CrossEntropyLoss(reduction="none")
    if algo_name == "bptt_exact":
        for b in model.blocks:
            b._stepper.__class__ = mf.ExactTopDownStepper
    algo = getAlgorithm("ep", {"T2": T2, "beta": beta}) if algo_name == "ep" else getAlgorithm("bptt", {"T2": T2})
    model.zero_grad(set_to_none=True)
    algo.run(model, x, y, loss_fn)
    return {k: p.grad.detach().clone() for k, p in model.state_dict(keep_vars=True).items()
            if isinstance(p, torch.nn.Parameter) and p.grad is not None}


def in_dtype(make_model, dtype, fn):
    """Runs `fn(model)` on a fresh model (built in float32, where its weights are loaded)
    converted to `dtype`, with `dtype` as the default dtype."""
    model = make_model()
    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        model = model.to(dtype)
        model.train()
        return fn(model)
    finally:
        torch.set_default_dtype(old)


def tiny_cases(out_dir):
    for name, case in mf.CASES.items():
        d = os.path.join(out_dir, name)
        batch = load_file(os.path.join(d, "batch.safetensors"))
        x, y = batch["x"], batch["y"]
        weights = load_file(os.path.join(d, "weights.safetensors"))

        def make_model():
            # the fixture's float32 weights: the same circuit as the float32 fixture
            model = mf.build(case)[0]
            model.load_state_dict(weights, strict=True)
            return model

        res = {}
        for algo in ("ep", "bptt", "bptt_exact"):
            g = in_dtype(make_model, torch.float64,
                         lambda m: run(m, algo, x.double(), y, case["T2"], case["beta"]))
            res.update({f"{algo}.grad.{k}": v.contiguous() for k, v in g.items()})
        save_file(res, os.path.join(d, "f64.safetensors"),
                  metadata={"source": f"hybrid_bp_ep_official re-run in float64, case {name}, tools/reference/make_f64_fixtures.py"})
        print(f"== {name}: {len(res)} float64 gradient tensors")


def cifar_batch(n):
    data = os.environ.get("FFEBM_DATA")
    if not data:
        sys.exit("set FFEBM_DATA to the data root (with cifar10/test_batch_first1000.bin)")
    raw = np.fromfile(os.path.join(data, "cifar10", "test_batch_first1000.bin"), dtype=np.uint8)
    raw = raw.reshape(-1, 3073)[:n]
    y = raw[:, 0].astype(np.int64)
    x = raw[:, 1:].reshape(n, 3, 32, 32).astype(np.float32) / 255.0
    x = (x - MEAN[None, :, None, None]) / STD[None, :, None, None]
    return torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(y)


def weights_digest(weights):
    """SHA-256 over (name, little-endian data) of every tensor in name order."""
    h = hashlib.sha256()
    for k in sorted(weights):
        h.update(k.encode())
        h.update(weights[k].contiguous().numpy().astype(weights[k].numpy().dtype.newbyteorder("<")).tobytes())
    return h.hexdigest()


def big_case(name, spec, ffebm, out_dir, ref_dir):
    d = os.path.join(out_dir, name)
    os.makedirs(d, exist_ok=True)
    wpath = os.path.join(d, "weights.tmp.safetensors")
    subprocess.run([ffebm, "--seed", "0", "presets", name, "--export-weights", wpath], check=True)
    weights = load_file(wpath)
    os.remove(wpath)
    digest = weights_digest(weights)
    # the reference state_dict aliases synapse 0 as feedforward.0
    for k in list(weights):
        if ".synapses.0." in k:
            weights[k.replace(".synapses.0.", ".feedforward.0.")] = weights[k]
    cfg_path = os.path.join(ref_dir, "hydra_conf", "model", f"{name}.yaml")
    cfg = OmegaConf.load(cfg_path)

    def make_model():
        # a fresh config each time: the reference's VGG pops the last `fc` entry in place
        cfg = OmegaConf.load(cfg_path)
        torch.manual_seed(0)
        model = getModel(cfg.name, cfg, torch.device("cpu"), input_size=32, num_classes=mf.NUM_CLASSES)
        last = model.initialize_neurons(torch.zeros(1))[-1][-1]
        with torch.no_grad():
            model.readout(torch.zeros_like(last))
        model.load_state_dict(weights, strict=True)
        return model

    x, y = cifar_batch(spec["batch"])
    T2, beta = spec["T2"], spec["beta"]
    g64 = {}
    for a in ("ep", "bptt_exact", "bptt"):
        print(f"   {name}: reference {a} in float64 ...", flush=True)
        g64[a] = in_dtype(make_model, torch.float64, lambda m, a=a: run(m, a, x.double(), y, T2, beta))
    print(f"   {name}: reference ep in float32 ...", flush=True)
    g32 = in_dtype(make_model, torch.float32, lambda m: run(m, "ep", x, y, T2, beta))
    out = {}
    rng = np.random.default_rng(20261130)
    for k in sorted(g64["ep"]):
        if ".feedforward.0." in k:
            continue  # alias of synapses.0
        n = g64["ep"][k].numel()
        idx = np.arange(n) if n <= SAMPLES else np.sort(rng.choice(n, SAMPLES, replace=False))
        out[f"idx.{k}"] = idx.astype(np.int64)
        for tag, src in (("ep64", g64["ep"]), ("bptt64", g64["bptt"]), ("exact64", g64["bptt_exact"])):
            out[f"{tag}.{k}"] = src[k].flatten().numpy()[idx].astype(np.float64)
        out[f"ep32.{k}"] = g32[k].flatten().numpy()[idx].astype(np.float32)
    meta = {"source": f"hybrid_bp_ep_official re-run in float64, {name}, tools/reference/make_f64_fixtures.py"}
    save_np(out, os.path.join(d, "expected.safetensors"), metadata=meta)
    save_file({"x": x.contiguous(), "y": y.contiguous()}, os.path.join(d, "batch.safetensors"), metadata=meta)
    # the reference's own float32 EP against its float64 EP, per tensor (sampled)
    rel32 = {}
    for k in sorted(g64["ep"]):
        if ".feedforward.0." in k:
            continue
        a, b = out[f"ep32.{k}"].astype(np.float64), out[f"ep64.{k}"]
        rel32[k] = float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-300))
    info = {
        "case": name,
        "torch_version": torch.__version__,
        "weights": f"ffebm --seed 0 presets {name} --export-weights (ffebm's SPEC §3 initialisation)",
        "weights_sha256": digest,
        "batch": f"the first {spec['batch']} images of cifar10/test_batch_first1000.bin, SPEC §4 normalisation",
        "reference_model_config": f"hydra_conf/model/{name}.yaml of hybrid_bp_ep_official",
        "T1": int(cfg.config.T1),
        "T2": T2,
        "beta": beta,
        "samples_per_tensor": SAMPLES,
        "sample_rng": "numpy default_rng(20261130), tensors in sorted name order",
        "reference_float32_ep_rel_l2_error_vs_float64": rel32,
    }
    with open(os.path.join(d, "case.json"), "w") as f:
        json.dump(info, f, indent=1)
        f.write("\n")
    worst = max(rel32.items(), key=lambda kv: kv[1])
    print(f"== {name}: reference float32 EP worst tensor {worst[0]} rel L2 {worst[1]:.3e}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="tests/fixtures/reference_f64 (paper-scale cases)")
    ap.add_argument("--tiny-dir", default=None,
                    help="tests/fixtures/reference: also write f64.safetensors for the tiny cases")
    ap.add_argument("--ffebm", required=True, help="path to the ffebm binary (exports the weights)")
    ap.add_argument("--cases", nargs="*", default=["static_gradient_analysis", "splitting_small_2block"])
    ap.add_argument("--tiny-only", action="store_true", help="only the tiny cases")
    args = ap.parse_args()
    torch.set_num_threads(2)
    if args.tiny_dir:
        tiny_cases(args.tiny_dir)
    for name in [] if args.tiny_only else args.cases:
        big_case(name, BIG[name], args.ffebm, args.out, mf.REF)


if __name__ == "__main__":
    main()
