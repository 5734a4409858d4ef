"""Deep resistive networks from Python: models without a readout (squared-error cost) or
without a feedforward conv give `ffebm grad`'s gradients bit for bit, the DRN presets keep
their whole `[algorithm]` (orders, warm start) and their state dicts round-trip, and the
EP variants reach the core."""

from __future__ import annotations

import re

import numpy as np
import pytest

import ffebm
from conftest import assert_same_as_cli, bits, need, run_cli

# One resistive block with a pooled feedforward conv; squared-error cost, so no readout.
DRN = """
input = [2, 4, 4]
classes = 3
alpha = 0.5
init_v = 0.5
cost = "squared-error"
[[blocks]]
kind = "resistive"
channels = [2, 3]
pools = "m"
norm = "none"
fc = [6, 3]
gain = 2.0
"""

# A Hopfield conv block (BN) chained into a resistive block without a feedforward conv.
CHAIN = """
input = [2, 4, 4]
classes = 3
alpha = 0.5
init_v = 0.5
cost = "squared-error"
[[blocks]]
channels = [2, 4, 4]
pools = "m-"
norm = "batchnorm"
clamp_last = true
[[blocks]]
kind = "resistive"
channels = [4]
pools = ""
norm = "none"
fc = [8, 3]
gain = 3.0
"""

# A resistive block without a feedforward conv under the cross-entropy readout (wide enough
# that no output unit starts with every conductance clamped to 0: the readout's nudge adds
# nothing to a unit's quadratic coefficient).
READOUT = """
input = [2, 4, 4]
classes = 3
alpha = 0.5
init_v = 0.5
[[blocks]]
kind = "resistive"
channels = [2]
pools = ""
norm = "none"
fc = [16, 4]
gain = 2.0
"""

MODELS = {"drn": DRN, "chain": CHAIN, "readout": READOUT}
T1, T2, BETA = 12, 6, 0.1
DRN_XS_KEYS = {
    "blocks.0.synapses.1.weight": (100, 2 * 784),  # the input enters as [u, -u]
    "blocks.0.synapses.1.bias": (100,),
    "blocks.0.synapses.2.weight": (10, 100),
    "blocks.0.synapses.2.bias": (10,),
}


def small_batch(tmp_path, b=3, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((b, 2, 4, 4), dtype=np.float32)
    y = np.array([0, 2, 1, 2, 0][:b])
    path = tmp_path / "batch.safetensors"
    ffebm.save_tensors(path, {"x": x, "y": y})
    return x, y, path


def mnist_batch(tmp_path, b=4, seed=0):
    """Raw 28x28 images in [0, 1], as the MNIST DRN presets are fed."""
    rng = np.random.default_rng(seed)
    x = rng.random((b, 1, 28, 28), dtype=np.float32)
    y = rng.integers(0, 10, size=b)
    path = tmp_path / "mnist_batch.safetensors"
    ffebm.save_tensors(path, {"x": x, "y": y})
    return x, y, path


@pytest.mark.parametrize("algo", ["ep", "id-exact"])
@pytest.mark.parametrize("name", sorted(MODELS))
def test_resistive_models_match_ffebm_grad(cli, tmp_path, name, algo):
    text = MODELS[name]
    (tmp_path / "model.toml").write_text(text)
    x, y, batch = small_batch(tmp_path)
    out = tmp_path / "g.safetensors"
    run_cli(cli, "grad", "--model", tmp_path / "model.toml", "--seed", 7, "--input", batch,
            "--algo", algo, "--t1", T1, "--t2", T2, "--beta", BETA, "--out", out, "-q")
    m = ffebm.Model.from_toml(text, seed=7)
    g = m.gradients(x, y, algo=algo, t1=T1, t2=T2, beta=BETA)
    n = assert_same_as_cli(g, out)
    names = set(g.grads)
    assert n == len(m.param_names) == len(names)
    assert any(k.startswith("readout.") for k in names) == (name == "readout")
    no_ff = {"drn": None, "chain": "blocks.1.synapses.0.weight", "readout": "blocks.0.synapses.0.weight"}[name]
    assert no_ff is None or no_ff not in names
    assert g.sweeps == [T1] * m.num_blocks


def test_id_reference_is_refused_on_resistive_blocks_as_by_the_cli(cli, tmp_path):
    (tmp_path / "model.toml").write_text(DRN)
    x, y, batch = small_batch(tmp_path)
    r = run_cli(cli, "grad", "--model", tmp_path / "model.toml", "--input", batch,
                "--algo", "id-reference", "--t1", T1, "--t2", T2, "--beta", BETA,
                "--out", tmp_path / "g.safetensors", "-q", check=False)
    assert r.returncode != 0 and not (tmp_path / "g.safetensors").exists()
    m = ffebm.Model.from_toml(DRN)
    with pytest.raises(ValueError, match="is resistive: `id-reference`") as e:
        m.gradients(x, y, algo="id-reference", t1=T1, t2=T2)
    assert str(e.value) in r.stderr


def test_drn_xs_preset_matches_ffebm_grad_with_its_algorithm(cli, tmp_path):
    """The preset's whole [algorithm] is used (drn_xs relaxes its nudged phases even layers
    first, not the paper's odd-first): the CLI's gradients bit for bit."""
    p = ffebm.preset("drn_xs")
    assert p["train"]["normalize"] is False and p["train"]["pad_to_32"] is False
    assert p["model"]["cost"] == "squared-error" and p["model"]["input"] == [1, 28, 28]
    m = ffebm.Model.from_preset("drn_xs", seed=4)
    assert m.defaults == p["algorithm"]
    assert m.defaults["nudged_order"] == "even-first" and m.defaults["warm_start"] is True
    x, y, batch = mnist_batch(tmp_path)
    out = tmp_path / "g.safetensors"
    run_cli(cli, "grad", "--preset", "drn_xs", "--seed", 4, "--input", batch, "--out", out, "-q")
    g = m.gradients(x, y)
    assert assert_same_as_cli(g, out) == 4 and set(g.grads) == set(DRN_XS_KEYS)
    # the paper's odd-first nudged phases give other gradients: the order is not ignored
    other = ffebm.Model.from_toml(m.config_toml, seed=4).gradients(x, y, t1=4, t2=4, beta=1.0)
    assert not np.array_equal(other.grads["blocks.0.synapses.1.weight"], g.grads["blocks.0.synapses.1.weight"])


def test_drn_xs_state_dict_round_trips(cli, tmp_path):
    m = ffebm.Model.from_preset("drn_xs", seed=1)
    sd = m.state_dict()
    assert {k: v.shape for k, v in sd.items()} == DRN_XS_KEYS
    assert all(v.dtype == np.float32 for v in sd.values())
    assert sd["blocks.0.synapses.1.weight"].min() >= 0  # conductances
    # into a model seeded differently: the same tensors, bit for bit
    other = ffebm.Model.from_preset("drn_xs", seed=2)
    assert not np.array_equal(other.state_dict()["blocks.0.synapses.1.weight"], sd["blocks.0.synapses.1.weight"])
    other.load_state_dict(sd)
    back = other.state_dict()
    assert list(back) == list(sd)
    for k in sd:
        assert np.array_equal(bits(back[k]), bits(sd[k])), k
    x, y, batch = mnist_batch(tmp_path)
    ref = m.gradients(x, y)
    g = other.gradients(x, y)
    for k in ref.grads:
        assert np.array_equal(bits(g.grads[k]), bits(ref.grads[k])), k
    # through CPU torch tensors, as a PyTorch state_dict() would come
    torch = need("torch")
    t = ffebm.Model.from_preset("drn_xs", seed=3)
    t.load_state_dict({k: torch.from_numpy(v) for k, v in sd.items()})
    for k in sd:
        assert np.array_equal(bits(t.state_dict()[k]), bits(sd[k])), k
    # through a file: description, algorithm defaults and tensors; the CLI reads its weights
    m.save(tmp_path / "drn.safetensors")
    loaded = ffebm.Model.load(tmp_path / "drn.safetensors")
    assert loaded.config == m.config and loaded.defaults == m.defaults
    for k, v in loaded.state_dict().items():
        assert np.array_equal(bits(v), bits(sd[k])), k
    out = tmp_path / "g.safetensors"
    run_cli(cli, "grad", "--preset", "drn_xs", "--seed", 99, "--weights", tmp_path / "drn.safetensors",
            "--input", batch, "--out", out, "-q")
    assert_same_as_cli(loaded.gradients(x, y), out)
    assert_same_as_cli(ref, out)
    # a DHN's readout is no key of a model without one; a missing conductance is named
    with pytest.raises(ValueError, match=re.escape("unexpected key `readout.1.weight`")):
        other.load_state_dict({**sd, "readout.1.weight": np.zeros((10, 10), np.float32)})
    missing = {k: v for k, v in sd.items() if k != "blocks.0.synapses.2.weight"}
    with pytest.raises(ValueError, match=re.escape("missing key `blocks.0.synapses.2.weight`")):
        other.load_state_dict(missing)
    for k in sd:  # failed loads changed nothing
        assert np.array_equal(bits(other.state_dict()[k]), bits(sd[k])), k


def test_free_phase_of_a_model_without_readout_returns_its_output_layer(tmp_path):
    m = ffebm.Model.from_preset("drn_xs", seed=0)
    x, _, _ = mnist_batch(tmp_path, b=5)
    f = m.free_phase(x)
    assert [s.shape for s in f.states[0]] == [(5, 100), (5, 10)] and f.sweeps == [4]
    assert np.array_equal(bits(f.logits), bits(f.states[0][-1]))


def test_ep_variants_reach_the_core(tmp_path):
    """For one block, the one-sided estimates average to the centered one:
    ((E(s+) - E(s*)) / b + (E(s*) - E(s-)) / b) / 2 = (E(s+) - E(s-)) / 2b, up to rounding."""
    m = ffebm.Model.from_preset("drn_xs", seed=0)
    x, y, _ = mnist_batch(tmp_path)
    centered = m.gradients(x, y)
    explicit = m.gradients(x, y, variant="centered")
    pos = m.gradients(x, y, variant="positive")
    neg = m.gradients(x, y, variant="negative")
    for k, c in centered.grads.items():
        assert np.array_equal(bits(explicit.grads[k]), bits(c)), k
        scale = np.abs(c).max()
        assert np.abs(pos.grads[k] - c).max() > 1e-2 * scale, f"{k}: positive equals centered"
        assert np.abs(neg.grads[k] - c).max() > 1e-2 * scale, f"{k}: negative equals centered"
        avg = (pos.grads[k].astype(np.float64) + neg.grads[k]) / 2
        assert np.abs(avg - c).max() <= 1e-5 * scale, k
    assert m.algorithm(variant="negative")["variant"] == "negative"
