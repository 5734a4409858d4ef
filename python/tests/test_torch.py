"""PyTorch round trips: a torch module's `state_dict()` goes into ffebm, gradients come back
as torch tensors, and they match the authors' PyTorch numbers (the reference fixtures, same
tolerances as tests/integration/reference_fixtures.rs) and `torch.autograd` on the same
ff-EBM written in PyTorch (python/examples/torch_ffebm.py)."""

from __future__ import annotations

import numpy as np
import pytest

import ffebm
from conftest import CASES, FIXTURES, case_batch, case_model, need, rel_max


@pytest.fixture(scope="module")
def torch():
    t = need("torch")
    t.set_num_threads(2)
    return t


def torch_module(torch, m: ffebm.Model, state_dict=None):
    from torch_ffebm import TorchFfebm

    torch.manual_seed(0)
    net = TorchFfebm(m.config)
    if state_dict is not None:
        # strict: the torch module has exactly the reference state_dict names
        net.load_state_dict({k: torch.from_numpy(v) for k, v in state_dict.items()}, strict=True)
    return net


@pytest.mark.parametrize("case", sorted(CASES))
def test_state_dict_round_trip_matches_the_reference_fixtures(torch, case):
    _, t1, t2, beta = CASES[case]
    m = case_model(case)
    net = torch_module(torch, m, ffebm.load_tensors(FIXTURES / case / "weights.safetensors"))
    m.load_state_dict(net.state_dict())  # torch tensors straight in
    x, y = case_batch(case)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    free = m.free_phase(xt, t1=t1)
    ep = ffebm.load_tensors(FIXTURES / case / "ep.safetensors")
    for k, block in enumerate(free.states):
        for l, s in enumerate(block):
            assert rel_max(s, ep[f"state.{k}.{l}"], 1e-3) < 2e-5, (case, k, l)
    assert rel_max(free.logits, ep["logits"], 1e-3) < 2e-5
    for algo, file, compare_loss in [("ep", "ep", True), ("id-reference", "bptt", False),
                                     ("id-exact", "bptt_exact", False)]:
        want = ffebm.load_tensors(FIXTURES / case / f"{file}.safetensors")
        g = m.gradients(xt, yt, algo=algo, t1=t1, t2=t2, beta=beta, bn_compat=True)
        names = [k for k in want if k.startswith("grad.")]
        assert sorted(names) == sorted(f"grad.{n}" for n in g.grads), (case, algo)
        for name, arr in g.grads.items():
            grad = torch.from_numpy(arr)  # back into torch without a copy
            assert grad.data_ptr() == arr.ctypes.data
            assert rel_max(grad.numpy(), want[f"grad.{name}"], 1e-6) < 5e-4, (case, algo, name)
        if compare_loss:
            assert abs(g.loss - float(want["loss"])) < 1e-5
        for name, v in g.bn_after.items():
            w = want[f"bn_after.{name}"]
            if name.endswith("num_batches_tracked"):
                assert int(v) == int(w), (case, algo, name)
            else:
                assert rel_max(v, w, 1e-3) < 2e-5, (case, algo, name)


def test_ffebm_id_exact_equals_torch_autograd_and_ep_agrees(torch):
    """A PyTorch-initialised model: ffebm's ID-exact equals autograd through the unrolled
    sweeps of the torch ff-EBM, and ffebm's EP agrees with both at small beta."""
    m = ffebm.Model.from_toml(CASES["two_block_bn_pool"][0])
    net = torch_module(torch, m)
    with torch.no_grad():  # couplings large enough to matter (as the fixtures' V = 0.1)
        for blk in net.blocks:
            for syn in list(blk.synapses)[1:]:
                if isinstance(syn, torch.nn.Conv2d):
                    syn.weight.mul_(3.0)
    m.load_state_dict(net.state_dict())
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(4, 3, 8, 8, generator=gen)
    y = torch.randint(0, 10, (4,), generator=gen)
    t1, t2 = 40, 15
    free_t = net.free_phase(x, t1)
    free_f = m.free_phase(x, t1=t1)
    for k in range(len(free_t)):
        for l in range(len(free_t[k])):
            assert rel_max(free_f.states[k][l], free_t[k][l].numpy(), 1e-3) < 2e-5, (k, l)
    auto = net.id_gradients(x, y, t1, t2)
    exact = m.gradients(x, y, algo="id-exact", t1=t1, t2=t2, beta=0.01)
    ep = m.gradients(x, y, algo="ep", t1=t1, t2=t2, beta=0.01)
    reference = m.gradients(x, y, algo="id-reference", t1=t1, t2=t2)
    assert sorted(auto) == sorted(exact.grads)
    for name, a in auto.items():
        a = a.numpy()
        assert rel_max(exact.grads[name], a, 1e-6) < 1e-5, name  # measured <= 4e-7
        e = ep.grads[name].ravel().astype(np.float64)
        cos = float(e @ a.ravel() / (np.linalg.norm(e) * np.linalg.norm(a) + 1e-30))
        assert cos > 0.999, (name, cos)  # measured >= 0.99999
    # autograd differentiates the top-down use of a coupling weight too: the reference's
    # BPTT variant (which treats it as a constant) is off by ~20% there
    assert rel_max(reference.grads["blocks.0.synapses.1.weight"],
                   auto["blocks.0.synapses.1.weight"].numpy(), 1e-6) > 0.05
