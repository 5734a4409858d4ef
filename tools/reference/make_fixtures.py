"""Generate numerical fixtures from the PyTorch reference implementation.

The reference code (github.com/rain-neuromorphics/hybrid_bp_ep_official) is NOT
part of ffebm and is not committed here.  Reconstruct it locally (its `src/`
package; see tests/fixtures/reference/README.md) and run

    FFEBM_REFERENCE_DIR=/path/to/hybrid_bp_ep_official \
        python tools/reference/make_fixtures.py --out tests/fixtures/reference

Requirements: torch (2.5.1 was used), omegaconf, numpy, safetensors.

For every case this script builds the reference `VGG` model (blocks of
`ConvPool`, analytical fixed-point stepper) from an OmegaConf dict shaped like
the repository's hydra model configs, with `torch.manual_seed(seed)` right
before construction so the weights are the reference's own GOE init, then runs
the reference's own `EP(beta, T2).run` and `BPTT(T2).run` (each on a freshly
built, identical model, in train mode, loss = CrossEntropyLoss(reduction='none')
as returned by the reference's getCriterion('cross_entropy')).

Nothing of the reference's numerics is re-implemented here: intermediate values
(free states, nudged states, error currents, BN statistics) are captured by
wrapping the reference methods (`_compute_gradients`,
`_compute_block_param_gradients`) and with a forward hook on the readout.

Output per case (folder `<out>/<case>/`):
  weights.safetensors  model.state_dict() before the step (aliased keys cloned)
  batch.safetensors    x, y
  ep.safetensors       logits, loss, grad.*, state.*, nudged_plus.*, nudged_minus.*,
                       error.*, block_x.*, bn_after_free.*, bn_after.*
  bptt.safetensors     logits, loss, free_loss, logits_T2, grad.*, state.*, bn_after_free.*, bn_after.*
  bptt_exact.safetensors  same keys; SPEC `exact` ID variant (see ExactTopDownStepper; not reference code)
  case.json            configuration, SPEC mapping and observations
Re-running produces byte-identical files.
"""
import argparse
import json
import os
import sys

REF = os.environ.get("FFEBM_REFERENCE_DIR")
if not REF:
    sys.exit("set FFEBM_REFERENCE_DIR to the reconstructed reference checkout (folder containing src/)")
sys.path.insert(0, REF)

from functools import singledispatchmethod  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402
from safetensors.torch import save_file  # noqa: E402
from src.models import getModel, IdentityModule  # noqa: E402  (reference code)
from src.models.vgg import AnalyticalFixedPointStepper  # noqa: E402  (reference code)
from src.algorithms import getAlgorithm  # noqa: E402  (reference code)

NUM_CLASSES = 10
BATCH = 4
DATA_SEED = 20240917


# --------------------------------------------------------------------------
# Case definitions (OmegaConf dicts in the layout of hydra_conf/model/*.yaml)
# --------------------------------------------------------------------------

def conv_block(size, channels, pools, norm, clamp_last, fc):
    n = len(channels) - 1
    return {
        "size": size,
        "channel": channels[0],
        "channels": list(channels),
        "kernels": [3] * n,
        "strides": [1] * n,
        "paddings": [1] * n,
        "norm": norm,
        "pools": pools,
        "alphas": [0.5] * n,
        "clamp_last": clamp_last,
        # The reference VGG pops the LAST entry of the last block's `fc` when
        # readout=True (it is the class count in the hydra configs), so the class
        # count is appended here exactly like in hydra_conf/model/*.yaml.
        "fc": list(fc),
    }


def model_cfg(alpha, T1, V, blocks, norm_pool=False):
    config = {
        "asynchronous": True,
        "activation": alpha,
        "T1": T1,
        "readout": True,
        "normalization": {
            "neurons": {"name": "zeros", "config": None},
            "weights": {"name": "goe", "config": {"V": V, "alphas": []}},
        },
    }
    if norm_pool:
        config["norm_pool"] = True  # model-level key, as read by the reference's log_hparams_tb
    return {"name": "vgg", "config": config, "blocks_config": blocks}


CASES = {
    "two_block_bn_pool": dict(
        seed=1,
        in_channels=3,
        size=8,
        alpha=0.5, T1=30, T2=10, beta=0.1, V=0.1,
        blocks=[
            conv_block(8, [3, 4, 6], "mm", "b", True, []),
            conv_block(2, [6, 8], "-", "-", False, [16, NUM_CLASSES]),
        ],
        norm_pool=False,
    ),
    "one_block_dense": dict(
        seed=2,
        in_channels=1,
        size=8,
        alpha=1.0, T1=20, T2=8, beta=0.2, V=0.1,
        blocks=[conv_block(8, [1, 4], "m", "b", False, [12, NUM_CLASSES])],
        norm_pool=False,
    ),
    "norm_pool": dict(
        seed=3,
        in_channels=3,
        size=8,
        alpha=0.5, T1=30, T2=10, beta=0.1, V=0.1,
        blocks=[
            conv_block(8, [3, 4, 6], "mm", "b", True, []),
            conv_block(2, [6, 8], "-", "-", False, [16, NUM_CLASSES]),
        ],
        norm_pool=True,
    ),
}


# --------------------------------------------------------------------------
# SPEC "exact" ID variant (NOT reference behaviour; ffebm's own definition)
# --------------------------------------------------------------------------

class ExactTopDownStepper(AnalyticalFixedPointStepper):
    """The reference's analytical stepper with ONE change: the top-down term uses
    `mod.weight` instead of `mod.weight.data`, so BPTT also differentiates the
    top-down use of each coupling weight (SPEC 2.3 `exact`).  Everything else
    (bottom-up terms, pooling/argmax, activation, sweep order) is inherited from
    the reference class.  Used only for bptt_exact.safetensors.

    (The reference's own autograd stepper, ConvPool(use_autograd=True) ->
    FixedPointStepper, is no substitute: under BPTT it differentiates Phi with
    respect to non-leaf states, so the update of layer l also picks up the path
    through layers that were computed from layer l earlier in the same graph,
    and its dynamics differ from the analytical stepper.)
    """

    @singledispatchmethod
    def grad_pre(self, mod, *args, **kwargs):
        raise NotImplementedError("grad_pre not implemented for module of type {}".format(mod))

    @grad_pre.register(nn.Linear)
    def _(self, mod, x_post, x_pre, idx, *args):
        return F.linear(x_post, mod.weight.t())

    @grad_pre.register(nn.Conv2d)
    def _(self, mod, x_post, x_pre, idx, block, *args):
        pool = block.pools[idx]
        if not isinstance(pool, IdentityModule):
            _, inds = F.max_pool2d(mod(x_pre), pool.kernel_size, stride=pool.stride, return_indices=True)
            x_post = F.max_unpool2d(x_post, inds, pool.kernel_size, stride=pool.stride)
        return F.conv_transpose2d(x_post, mod.weight, padding=block.paddings[idx], stride=block.strides[idx])


# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------

def build(case):
    cfg = OmegaConf.create(model_cfg(case["alpha"], case["T1"], case["V"], case["blocks"], case["norm_pool"]))
    torch.manual_seed(case["seed"])
    model = getModel(cfg.name, cfg, torch.device("cpu"), input_size=case["size"], num_classes=NUM_CLASSES)
    # Materialise the LazyLinear readout (its init draws from the global RNG
    # right after the blocks' init) without running the blocks, so that BN
    # running statistics are untouched.
    last = model.initialize_neurons(torch.zeros(1))[-1][-1]
    with torch.no_grad():
        model.readout(torch.zeros_like(last))
    model.train()
    return model, cfg


def state_dict_tensors(model):
    """state_dict with every tensor cloned (synapses.0 and feedforward.0 alias the same Parameter)."""
    return {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}


def bn_tensors(model):
    return {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()
            if k.endswith(("running_mean", "running_var", "num_batches_tracked"))}


def grads(model):
    """p.grad for every parameter, under every state_dict name of that parameter (aliases included)."""
    out = {}
    for k, p in model.state_dict(keep_vars=True).items():
        if isinstance(p, torch.nn.Parameter) and p.grad is not None:
            out["grad." + k] = p.grad.detach().clone().contiguous()
    return out


def states(prefix, blocks):
    return {f"{prefix}.{k}.{l}": s.detach().clone().contiguous()
            for k, layers in enumerate(blocks) for l, s in enumerate(layers)}


def saturation(blocks, clamped):
    out = {}
    for k, layers in enumerate(blocks):
        for l, s in enumerate(layers):
            s = s.detach()
            entry = {"min": float(s.min()), "max": float(s.max()), "clamped": clamped[k][l]}
            if clamped[k][l]:
                entry["frac_0"] = float((s == 0).float().mean())
                entry["frac_1"] = float((s == 1).float().mean())
                entry["frac_interior"] = 1.0 - entry["frac_0"] - entry["frac_1"]
            out[f"{k}.{l}"] = entry
    return out


def layer_description(model, case):
    """Map the reference structure to SPEC terms (layers, couplings, clamps, pools)."""
    desc = []
    for k, (b, bc) in enumerate(zip(model.blocks, case["blocks"])):
        neurons = b.initialize_neurons(1)
        layers = []
        size = bc["size"]
        for i, syn in enumerate(b.synapses):
            if isinstance(syn, torch.nn.Conv2d):
                pooled = type(b.pools[i]).__name__ == "MaxPool2d"
                kind = "feedforward conv_0 (F_k)" if i == 0 else "conv coupling"
                layers.append({
                    "layer": f"state.{k}.{i}",
                    "shape_per_sample": list(neurons[i].shape[1:]),
                    "bottom_up": f"{kind} {syn.in_channels}->{syn.out_channels}@{size}" + ("+p" if pooled else ""),
                    "weight": f"blocks.{k}.synapses.{i}.weight",
                    "bias": f"blocks.{k}.synapses.{i}.bias" if syn.bias is not None else None,
                    "clamped": bool(b.stepper.activations[i] == 1),
                })
                size = neurons[i].shape[-1]
            else:
                layers.append({
                    "layer": f"state.{k}.{i}",
                    "shape_per_sample": list(neurons[i].shape[1:]),
                    "bottom_up": f"dense {syn.in_features}->{syn.out_features}",
                    "weight": f"blocks.{k}.synapses.{i}.weight",
                    "bias": f"blocks.{k}.synapses.{i}.bias",
                    "clamped": bool(b.stepper.activations[i] == 1),
                })
        ff = [type(m).__name__ for m in b.feedforward]
        desc.append({
            "block": k,
            "input_shape_per_sample": [bc["channels"][0], bc["size"], bc["size"]],
            "feedforward_sequence": ff,
            "bn_key_prefix": next((f"blocks.{k}.feedforward.{j}" for j, m in enumerate(b.feedforward)
                                   if isinstance(m, torch.nn.BatchNorm2d)), None),
            "clamp_last": bool(bc["clamp_last"]),
            "layers": layers,
        })
    return desc


def cosine(a, b):
    a, b = a.flatten().double(), b.flatten().double()
    return float((a @ b) / (a.norm() * b.norm() + 1e-300))


# --------------------------------------------------------------------------
# running the reference algorithms with captures
# --------------------------------------------------------------------------

def run_algorithm(case, name, x, y):
    model, _ = build(case)
    loss_fn = torch.nn.CrossEntropyLoss(reduction="none")
    if name == "bptt_exact":
        for b in model.blocks:
            b._stepper.__class__ = ExactTopDownStepper
    if name == "ep":
        algo = getAlgorithm("ep", {"T2": case["T2"], "beta": case["beta"]})
    else:
        algo = getAlgorithm("bptt", {"T2": case["T2"]})
    weights_before = state_dict_tensors(model)
    cap = {"ep_blocks": {}}

    orig_cg = algo._compute_gradients

    def capture_free(out, x_, y_, neurons, model_, loss_fn_, **kw):
        cap["free"] = [[n.detach().clone() for n in b] for b in neurons]
        cap["bn_after_free"] = bn_tensors(model_)
        return orig_cg(out, x_, y_, neurons, model_, loss_fn_, **kw)

    algo._compute_gradients = capture_free

    if name == "ep":
        orig_pg = algo._compute_block_param_gradients

        def capture_nudged(block, block_x, equilibria, **kw):
            err = orig_pg(block, block_x, equilibria, **kw)
            k = [i for i, b in enumerate(model.blocks) if b is block][0]
            cap["ep_blocks"][k] = {
                "plus": [t.detach().clone() for t in equilibria[1]],   # betas = (+beta, -beta)
                "minus": [t.detach().clone() for t in equilibria[2]],
                "error": err.detach().clone(),
                "block_x": block_x.detach().clone(),
            }
            return err

        algo._compute_block_param_gradients = capture_nudged

    readout_outputs = []
    hook = model.readout.register_forward_hook(lambda m, i, o: readout_outputs.append(o.detach().clone()))
    out, loss = algo.run(model, x, y, loss_fn)
    hook.remove()

    res = {
        "logits": out.detach().clone().contiguous(),
        "loss": loss.detach().clone().reshape(()).contiguous(),
    }
    res.update(grads(model))
    res.update(states("state", cap["free"]))
    res.update({"bn_after_free." + k: v for k, v in cap["bn_after_free"].items()})
    res.update({"bn_after." + k: v for k, v in bn_tensors(model).items()})
    if name == "ep":
        for k, d in cap["ep_blocks"].items():
            res.update({f"nudged_plus.{k}.{l}": t for l, t in enumerate(d["plus"])})
            res.update({f"nudged_minus.{k}.{l}": t for l, t in enumerate(d["minus"])})
            res[f"block_x.{k}"] = d["block_x"]
            if k > 0:
                # error current passed from block k to block k-1 (k = 0's is unused)
                res[f"error.{k}"] = d["error"]
    else:
        with torch.no_grad():
            res["free_loss"] = loss_fn(out, y).mean().reshape(()).clone()
        # readout calls during BPTT.run: [free phase, after the T2 autograd sweeps]
        res["logits_T2"] = readout_outputs[-1].contiguous()
    res = {k: v.contiguous() for k, v in res.items()}
    return model, weights_before, res, cap


def convergence_residual(case, x):
    """Relative change of the last free sweep (SPEC tol measure) on a separate model."""
    model, _ = build(case)
    with torch.no_grad():
        n = model.initialize_neurons(x)
        _, n = model(x, n, case["T1"] - 1)
        prev = [[t.clone() for t in b] for b in n]
        _, n = model(x, n, 1)
    per_block = []
    for b_prev, b_now in zip(prev, n):
        per_block.append(float(np.mean([(torch.norm(a - p) / torch.norm(p).clip(min=1e-6)).item()
                                        for a, p in zip(b_now, b_prev)])))
    return per_block


def make_case(name, case, out_dir):
    torch.set_num_threads(2)
    g = torch.Generator().manual_seed(DATA_SEED + case["seed"])
    x = torch.randn(BATCH, case["in_channels"], case["size"], case["size"], generator=g)
    y = torch.randint(0, NUM_CLASSES, (BATCH,), generator=g)

    ep_model, w_ep, ep, ep_cap = run_algorithm(case, "ep", x, y)
    bp_model, w_bp, bptt, _ = run_algorithm(case, "bptt", x, y)
    _, w_ex, bptt_exact, _ = run_algorithm(case, "bptt_exact", x, y)
    for w in (w_bp, w_ex):
        assert w_ep.keys() == w.keys() and all(torch.equal(w_ep[k], w[k]) for k in w_ep), "builds differ"
    for other in (bptt, bptt_exact):
        for k in [k for k in ep if k.startswith("state.")]:
            assert torch.equal(ep[k], other[k]), "free phases differ between runs"
        assert torch.equal(ep["logits"], other["logits"])

    d = os.path.join(out_dir, name)
    os.makedirs(d, exist_ok=True)
    # one metadata entry only: safetensors writes __metadata__ from a hash map, so
    # several entries would come out in a random order and break byte-determinism
    meta = {"source": f"hybrid_bp_ep_official reference, case {name}, tools/reference/make_fixtures.py"}
    save_file(w_ep, os.path.join(d, "weights.safetensors"), metadata=meta)
    save_file({"x": x.contiguous(), "y": y.contiguous()}, os.path.join(d, "batch.safetensors"), metadata=meta)
    save_file(ep, os.path.join(d, "ep.safetensors"), metadata=meta)
    save_file(bptt, os.path.join(d, "bptt.safetensors"), metadata=meta)
    save_file(bptt_exact, os.path.join(d, "bptt_exact.safetensors"), metadata=meta)

    # ---- case.json ------------------------------------------------------
    clamped = [[bool(a == 1) for a in b.stepper.activations] for b in ep_model.blocks]
    free = [[ep[f"state.{k}.{l}"] for l in range(len(b.synapses))] for k, b in enumerate(ep_model.blocks)]
    bn_counts = {}
    for k in w_ep:
        if k.endswith("num_batches_tracked"):
            bn_counts[k] = {
                "before": int(w_ep[k]),
                "ep_after_free_phase": int(ep["bn_after_free." + k]),
                "ep_after_step": int(ep["bn_after." + k]),
                "bptt_after_free_phase": int(bptt["bn_after_free." + k]),
                "bptt_after_step": int(bptt["bn_after." + k]),
            }
    grad_names = sorted(k[5:] for k in ep if k.startswith("grad."))
    cos = {n: {"cos_ep_bptt": cosine(ep["grad." + n], bptt["grad." + n]),
               "norm_ep_over_bptt": float(ep["grad." + n].norm() / bptt["grad." + n].norm()),
               "cos_ep_bptt_exact": cosine(ep["grad." + n], bptt_exact["grad." + n]),
               "norm_ep_over_bptt_exact": float(ep["grad." + n].norm() / bptt_exact["grad." + n].norm())}
           for n in grad_names}
    cfg_in = model_cfg(case["alpha"], case["T1"], case["V"], case["blocks"], case["norm_pool"])
    info = {
        "case": name,
        "torch_version": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "reference": "rain-neuromorphics/hybrid_bp_ep_official (src/models/{base,vgg,initializers}.py, "
                     "src/algorithms/{ep,bptt}.py), classes VGG/ConvPool/AnalyticalFixedPointStepper, EP, BPTT",
        "seed": case["seed"],
        "seed_usage": "torch.manual_seed(seed) immediately before getModel(...); the LazyLinear readout is "
                      "materialised right after construction (draws continue from the same global RNG)",
        "data": {"batch": BATCH, "classes": NUM_CLASSES, "input_shape": [BATCH, case["in_channels"], case["size"], case["size"]],
                 "x": f"torch.randn with torch.Generator().manual_seed({DATA_SEED + case['seed']}) "
                      "(standing in for already-normalised images)",
                 "y": "torch.randint(0, 10) from the same generator, int64"},
        "model_config_passed_to_reference": cfg_in,
        "note_fc_pop": "VGG._make_blocks pops the last entry of the last block's fc list when readout=True "
                       "(it is the class count); the readout is nn.Sequential(Flatten, LazyLinear(10)).",
        "activation_alpha": case["alpha"],
        "T1": case["T1"],
        "T2": case["T2"],
        "beta": case["beta"],
        "goe_V": case["V"],
        "tol": None,
        "loss": "torch.nn.CrossEntropyLoss(reduction='none') (reference getCriterion default); loss = mean over batch",
        "mode": "model.train() (BN uses batch statistics and updates running stats in every feedforward call)",
        "bn_affine": "BN weight/bias left trainable here so their p.grad is recorded too; the reference's training "
                     "freezes them (getOptimizer(disable_bn_learning=True)), which changes no other gradient",
        "ep_algorithm": f"EP(beta={case['beta']}, T2={case['T2']}).run(model, x, y, loss_fn)",
        "bptt_algorithm": f"BPTT(T2={case['T2']}).run(model, x, y, loss_fn)  (= SPEC id-reference: top-down terms "
                          "use weight.data)",
        "bptt_exact_algorithm": f"BPTT(T2={case['T2']}).run with every block's stepper class swapped for "
                                "ExactTopDownStepper (tools/reference/make_fixtures.py): SPEC exact variant, "
                                "not reference behaviour",
        "spec_mapping": layer_description(ep_model, case),
        "observations": {
            "free_state_saturation": saturation(free, clamped),
            "free_phase_last_sweep_relative_change_per_block": convergence_residual(case, x),
            "bn_num_batches_tracked": bn_counts,
            "bn_updates_per_step": {
                "ep": f"T1 + 2*T2 + 2 = {case['T1'] + 2 * case['T2'] + 2} per BN block (one per sweep, one per Phi evaluation)",
                "bptt": f"T1 + T2 = {case['T1'] + case['T2']} per BN block",
            },
            "ep_vs_bptt_gradients": cos,
            "free_loss": float(ep["loss"]),
            "bptt_returned_loss": float(bptt["loss"]),
            "bptt_exact_returned_loss": float(bptt_exact["loss"]),
        },
        "files": {
            "weights.safetensors": sorted(w_ep.keys()),
            "batch.safetensors": ["x", "y"],
            "ep.safetensors": sorted(ep.keys()),
            "bptt.safetensors": sorted(bptt.keys()),
            "bptt_exact.safetensors": sorted(bptt_exact.keys()),
        },
    }
    with open(os.path.join(d, "case.json"), "w") as f:
        json.dump(info, f, indent=1, sort_keys=False)
        f.write("\n")
    return info


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--cases", nargs="*", default=list(CASES))
    args = ap.parse_args()
    torch.set_num_threads(2)
    for name in args.cases:
        info = make_case(name, CASES[name], args.out)
        obs = info["observations"]
        print(f"== {name}: free loss {obs['free_loss']:.6f}, bptt loss {obs['bptt_returned_loss']:.6f}")
        print("   saturation:", json.dumps(obs["free_state_saturation"]))
        print("   last-sweep residual:", obs["free_phase_last_sweep_relative_change_per_block"])
        print("   BN counts:", json.dumps(obs["bn_num_batches_tracked"]))
        for n, c in obs["ep_vs_bptt_gradients"].items():
            print(f"   {n:40s} cos(ep,bptt) {c['cos_ep_bptt']:+.5f}  |ep|/|bptt| {c['norm_ep_over_bptt']:.4f}"
                  f"  cos(ep,exact) {c['cos_ep_bptt_exact']:+.6f}")


if __name__ == "__main__":
    main()
