"""The same ff-EBM written in plain PyTorch (SPEC §1–2.3), for comparing with ffebm.

Module and parameter names follow the reference implementation's ``state_dict``
(``blocks.{k}.synapses.{i}``, ``blocks.{k}.feedforward.{0|1|2}``, ``readout.1``), so
``TorchFfebm(cfg).state_dict()`` goes straight into ``ffebm.Model.load_state_dict`` and
back. It relaxes with the same asynchronous sweeps (even layers first, from zero states)
and computes implicit-differentiation gradients with ``torch.autograd`` through T2 unrolled
sweeps — ffebm's ``id-exact`` — so EP from ffebm can be checked against autograd.

Slow and simple on purpose: no caching, every term written out.
"""

from __future__ import annotations

from typing import Dict, List, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F


class Block(nn.Module):
    """Feedforward transform F (conv [+pool] + BN, or conv + bias [+pool]) and a Deep
    Hopfield Network block (conv couplings with optional max-pool inside, then dense)."""

    def __init__(self, cfg: dict, alpha: float, in_hw: Sequence[int]):
        super().__init__()
        ch: List[int] = list(cfg["channels"])
        nconv = len(ch) - 1
        pools = [p == "m" for p in cfg["pools"][:nconv]]
        k, pad = cfg.get("kernel", 3), cfg.get("padding", 1)
        bn = cfg.get("norm", "batchnorm") == "batchnorm"
        self.alpha = cfg.get("alpha") or alpha
        self.clamp_last = cfg.get("clamp_last", False)
        self.pad = pad
        self.pools = pools
        conv0 = nn.Conv2d(ch[0], ch[1], k, padding=pad, bias=not bn)
        pool0 = nn.MaxPool2d(2) if pools[0] else nn.Identity()
        if bn and cfg.get("norm_pool", False):
            ff = [conv0, nn.BatchNorm2d(ch[1]), pool0]
        elif bn:
            ff = [conv0, pool0, nn.BatchNorm2d(ch[1])]
        else:
            ff = [conv0, pool0]
        self.feedforward = nn.Sequential(*ff)
        for m in self.feedforward:
            if isinstance(m, nn.BatchNorm2d):
                m.momentum = 0.1
                m.eps = 1e-5
        h, w = in_hw
        h, w = h + 2 * pad - k + 1, w + 2 * pad - k + 1
        if pools[0]:
            h, w = h // 2, w // 2
        self.shapes = [(ch[1], h, w)]
        synapses: List[nn.Module] = [conv0]
        for i in range(1, nconv):
            synapses.append(nn.Conv2d(ch[i], ch[i + 1], k, padding=pad))
            h, w = h + 2 * pad - k + 1, w + 2 * pad - k + 1
            if pools[i]:
                h, w = h // 2, w // 2
            self.shapes.append((ch[i + 1], h, w))
        fin = ch[-1] * h * w
        for f in cfg.get("fc", []):
            synapses.append(nn.Linear(fin, f))
            self.shapes.append((f,))
            fin = f
        self.synapses = nn.ModuleList(synapses)

    def zeros(self, b: int) -> List[torch.Tensor]:
        return [torch.zeros(b, *s) for s in self.shapes]

    def bottom_up(self, l: int, u: torch.Tensor, s: List[torch.Tensor]) -> torch.Tensor:
        """``u`` for layer 0; ``P(W_l * s_{l-1} + b_l)`` or ``W_l flat(s_{l-1}) + b_l``."""
        if l == 0:
            return u
        syn = self.synapses[l]
        if isinstance(syn, nn.Conv2d):
            y = F.conv2d(s[l - 1], syn.weight, syn.bias, padding=self.pad)
            return F.max_pool2d(y, 2) if self.pools[l] else y
        return F.linear(s[l - 1].flatten(1), syn.weight, syn.bias)

    def top_down(self, l: int, s: List[torch.Tensor]) -> torch.Tensor:
        """``conv_transpose(unpool(s_{l+1}, idx), W_{l+1})`` with the pool indices at the
        current ``s_l``, or ``W_{l+1}^T s_{l+1}``; 0 for the last layer (free phase)."""
        if l + 1 == len(s):
            return torch.zeros_like(s[l])
        syn = self.synapses[l + 1]
        if isinstance(syn, nn.Conv2d):
            above = s[l + 1]
            if self.pools[l + 1]:
                with torch.no_grad():
                    y = F.conv2d(s[l], syn.weight, syn.bias, padding=self.pad)
                    _, idx = F.max_pool2d(y, 2, return_indices=True)
                above = F.max_unpool2d(above, idx, 2, output_size=y.shape[-2:])
            return F.conv_transpose2d(above, syn.weight, padding=self.pad)
        return (s[l + 1] @ syn.weight).reshape(s[l].shape)

    def act(self, l: int, pre: torch.Tensor, n: int) -> torch.Tensor:
        if l + 1 < n or self.clamp_last:
            return torch.clamp(self.alpha * pre, 0.0, 1.0)
        return pre

    def sweep(self, u: torch.Tensor, s: List[torch.Tensor]) -> List[torch.Tensor]:
        """One asynchronous sweep, even layers first (each parity from the same snapshot)."""
        s = list(s)
        n = len(s)
        for parity in (0, 1):
            new = {l: self.act(l, self.bottom_up(l, u, s) + self.top_down(l, s), n)
                   for l in range(parity, n, 2)}
            for l, v in new.items():
                s[l] = v
        return s


class TorchFfebm(nn.Module):
    """An ff-EBM from an ffebm model description (``ffebm.Model.config``)."""

    def __init__(self, cfg: dict):
        super().__init__()
        c, h, w = cfg["input"]
        blocks = []
        hw = (h, w)
        for b in cfg["blocks"]:
            blk = Block(b, cfg["alpha"], hw)
            blocks.append(blk)
            hw = blk.shapes[-1][1:] if len(blk.shapes[-1]) == 3 else hw
        self.blocks = nn.ModuleList(blocks)
        last = self.blocks[-1].shapes[-1]
        fin = 1
        for d in last:
            fin *= d
        self.readout = nn.Sequential(nn.Flatten(), nn.Linear(fin, cfg["classes"]))

    @torch.no_grad()
    def free_phase(self, x: torch.Tensor, t1: int) -> List[List[torch.Tensor]]:
        """Free equilibria (T1 sweeps per block, blocks in order, from zero states)."""
        states = []
        inp = x
        for blk in self.blocks:
            u = blk.feedforward(inp)
            s = blk.zeros(x.shape[0])
            for _ in range(t1):
                s = blk.sweep(u, s)
            states.append(s)
            inp = s[-1]
        return states

    def id_loss(self, x: torch.Tensor, y: torch.Tensor, free: List[List[torch.Tensor]], t2: int):
        """Mean cross-entropy after T2 more sweeps in every block from the (constant) free
        states, block k+1 driven by block k's updated last layer: its autograd gradient is
        the exact truncated-BPTT (ID) gradient."""
        inp = x
        for blk, s0 in zip(self.blocks, free):
            u = blk.feedforward(inp)
            s = [t.detach() for t in s0]
            for _ in range(t2):
                s = blk.sweep(u, s)
            inp = s[-1]
        return F.cross_entropy(self.readout(inp), y)

    def id_gradients(self, x, y, t1: int, t2: int) -> Dict[str, torch.Tensor]:
        """``torch.autograd`` gradients of :meth:`id_loss` under every state-dict name."""
        self.train()
        free = self.free_phase(x, t1)
        self.zero_grad()
        self.id_loss(x, y, free, t2).backward()
        return {n: p.grad.detach().clone()
                for n, p in self.named_parameters(remove_duplicate=False)
                if p.grad is not None}
