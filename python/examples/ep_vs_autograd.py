"""EP gradients from ffebm for a PyTorch-initialised ff-EBM, against torch.autograd.

Notebook-style (run it whole, or cell by cell in an editor that knows ``# %%``):

    python python/examples/ep_vs_autograd.py                     # cifar10_tiny, batch 8
    python python/examples/ep_vs_autograd.py --preset mnist_mlp --batch 4

1. The model is written in plain PyTorch (``torch_ffebm.py`` beside this file) and
   initialised by PyTorch's own default initialisers.
2. Its ``state_dict()`` goes into ``ffebm.Model.load_state_dict`` as is.
3. ffebm computes the EP gradient of one batch (BP-EP chaining, centered ±beta); PyTorch
   computes the implicit-differentiation gradient with ``torch.autograd`` through T2
   unrolled sweeps from the same free equilibrium (ffebm's ``id-exact``).
4. Per parameter: cosine and relative error of EP against autograd, and how close ffebm's
   own ID-exact is to autograd. The gradients then drive a torch optimiser step.
"""

# %%
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

import ffebm

sys.path.insert(0, str(Path(__file__).resolve().parent))
from torch_ffebm import TorchFfebm  # noqa: E402

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--preset", default="cifar10_tiny", help="model description of this preset")
parser.add_argument("--batch", type=int, default=8)
parser.add_argument("--beta", type=float, default=0.05, help="EP nudging strength")
parser.add_argument("--t1", type=int, help="free-phase sweeps (default: the preset's)")
parser.add_argument("--t2", type=int, help="nudged / unrolled sweeps (default: the preset's)")
parser.add_argument("--seed", type=int, default=0)
args = parser.parse_args()

# %% The ff-EBM in PyTorch, initialised by PyTorch, and the same model in ffebm
preset = ffebm.preset(args.preset)
cfg = preset["model"]
t1 = args.t1 or preset["algorithm"]["t1"]
t2 = args.t2 or preset["algorithm"]["t2"]
torch.manual_seed(args.seed)
net = TorchFfebm(cfg)
model = ffebm.Model.from_dict(cfg)
model.load_state_dict(net.state_dict())  # torch tensors go straight in (no copy into NumPy)
print(model)

# %% One batch (random normalised images; any [B, C, H, W] float32 array or tensor works)
gen = torch.Generator().manual_seed(args.seed + 1)
x = torch.randn(args.batch, *cfg["input"], generator=gen)
y = torch.randint(0, cfg["classes"], (args.batch,), generator=gen)

# %% EP in ffebm, ID by autograd in PyTorch
t = time.perf_counter()
ep = model.gradients(x, y, algo="ep", beta=args.beta, t1=t1, t2=t2)
t_ep = time.perf_counter() - t
exact = model.gradients(x, y, algo="id-exact", t1=t1, t2=t2)
t = time.perf_counter()
auto = net.id_gradients(x, y, t1, t2)
t_auto = time.perf_counter() - t
print(f"loss {ep.loss:.4f}; ffebm EP {t_ep:.2f} s, torch free phase + autograd BPTT {t_auto:.2f} s "
      f"(T1 {t1}, T2 {t2}, beta {args.beta}, batch {args.batch})")

# %% Per-parameter agreement
print(f"{'parameter':<34} {'cos(EP, autograd)':>18} {'rel err EP':>11} {'max rel dev ID-exact':>21}")
worst = 1.0
for name, a in auto.items():
    a = a.numpy().astype(np.float64)
    e = ep.grads[name].astype(np.float64)
    cos = float((e * a).sum() / (np.linalg.norm(e) * np.linalg.norm(a) + 1e-30))
    rel = float(np.linalg.norm(e - a) / (np.linalg.norm(a) + 1e-30))
    dev = float(np.abs(exact.grads[name] - a).max() / max(np.abs(a).max(), 1e-12))
    worst = min(worst, cos)
    print(f"{name:<34} {cos:>18.6f} {rel:>11.2e} {dev:>21.2e}")
print(f"lowest cosine between ffebm's EP and torch.autograd: {worst:.6f}")

# %% The EP gradients drive a PyTorch optimiser (torch.from_numpy shares the memory)
opt = torch.optim.Adam(net.parameters(), lr=1e-3)
for name, p in net.named_parameters():
    p.grad = torch.from_numpy(ep.grads[name])
opt.step()
model.load_state_dict(net.state_dict())
after = model.gradients(x, y, algo="ep", beta=args.beta, t1=t1, t2=t2)
print(f"after one Adam step on the EP gradients: loss {ep.loss:.4f} -> {after.loss:.4f}")
