"""The Python API: bad input raises ValueError naming the problem (and changes nothing),
documented zero-copy paths do not copy, models round-trip through files and dicts."""

from __future__ import annotations

import re
import sys

import numpy as np
import pytest

import ffebm
from conftest import CASES, FIXTURES, bits, case_batch, case_model, need

CASE = "two_block_bn_pool"
_, T1, T2, BETA = CASES[CASE]


@pytest.fixture()
def model():
    m = case_model(CASE)
    m.load_weights(FIXTURES / CASE / "weights.safetensors")
    return m


@pytest.fixture()
def batch():
    return case_batch(CASE)


def grads(m, x, y, **kw):
    return m.gradients(x, y, t1=T1, t2=T2, beta=BETA, **kw)


# ---- bad input ----------------------------------------------------------------------
@pytest.mark.parametrize(
    "x_of, message",
    [
        (lambda x: x.astype(np.float64), "`x` has dtype float64, expected float32"),
        (lambda x: x.astype(np.int32), "`x` has dtype int32, expected float32"),
        (lambda x: x[0], "`x` has shape [3, 8, 8], expected [B, C, H, W] (NCHW)"),
        (lambda x: x[:, :2], "`x` has shape [4, 2, 8, 8] (NCHW), but the model expects [B, 3, 8, 8]"),
        (lambda x: np.zeros((4, 3, 9, 8), np.float32), "`x` has shape [4, 3, 9, 8] (NCHW), but the model expects [B, 3, 8, 8]"),
        (lambda x: x.tolist(), "`x` has dtype float64, expected float32"),
        (lambda x: "images", "`x` has dtype <U6, expected float32"),
        (lambda x: x[:, :, :, :, None], "`x` has shape [4, 3, 8, 8, 1], expected [B, C, H, W]"),
    ],
)
def test_bad_batches_raise_value_errors_naming_them(model, batch, x_of, message):
    x, y = batch
    with pytest.raises(ValueError, match=re.escape(message)):
        grads(model, x_of(x), y)


@pytest.mark.parametrize(
    "y_of, message",
    [
        (lambda y: y.astype(np.float32), "`y` has dtype float32, expected an integer type"),
        (lambda y: y[:3], "`y` has shape [3], expected [4] (one label per sample of x)"),
        (lambda y: y.reshape(2, 2), "`y` has shape [2, 2], expected [4]"),
        (lambda y: np.array([0, -1, 2, 3]), "label y[1] = -1 is negative or too large"),
        (lambda y: np.array([0, 1, 2, 10]), "10"),
    ],
)
def test_bad_labels_raise_value_errors(model, batch, y_of, message):
    x, y = batch
    with pytest.raises(ValueError, match=re.escape(message)):
        grads(model, x, y_of(y))


def test_bad_options_raise_value_errors(model, batch):
    x, y = batch
    with pytest.raises(ValueError, match="unknown algorithm `bp`"):
        grads(model, x, y, algo="bp")
    with pytest.raises(ValueError, match="mode `test`"):
        model.free_phase(x, mode="test")
    with pytest.raises(ValueError, match="t1 is required: model description has no default"):
        model.gradients(x, y, t2=3, beta=0.1)
    with pytest.raises(ValueError, match="unknown preset|no preset|`cifar11`"):
        ffebm.Model.from_preset("cifar11")
    with pytest.raises(ValueError, match=re.escape("unknown EP variant `central`: expected `centered`, `positive` or `negative`")):
        grads(model, x, y, variant="central")
    with pytest.raises(ValueError, match=re.escape("variant=`positive` is an EP setting, but algo is `id-exact`")):
        grads(model, x, y, algo="id-exact", variant="positive")
    with pytest.raises(ValueError, match=re.escape("tol = -0.001: expected a positive tolerance, or 0 to disable the default one")):
        grads(model, x, y, tol=-1e-3)
    with pytest.raises(ValueError, match=re.escape("algorithm.beta must be non-zero and finite for EP (got 0)")):
        model.gradients(x, y, t1=T1, t2=T2, beta=0.0)
    with pytest.raises(ValueError, match="invalid model description"):
        ffebm.Model.from_toml("input = [3, 8, 8]\nclases = 10")
    with pytest.raises(ValueError, match=r"blocks\[0\]"):
        ffebm.Model.from_dict({"input": [3, 8, 8], "classes": 10, "alpha": 1.0, "init_v": 0.1,
                               "blocks": [{"channels": [1, 4], "pools": "m"}]})


def test_bad_state_dicts_raise_value_errors_and_leave_the_model_unchanged(model, batch):
    x, y = batch
    before = grads(model, x, y)
    sd = model.state_dict()
    # valid values different from the model's, so that a partial load would show
    sd = {k: (v * 0.5 if v.dtype == np.float32 else v) for k, v in sd.items()}
    bad = [
        ({k: v for k, v in sd.items() if k != "blocks.1.synapses.1.weight"},
         "state_dict: missing key `blocks.1.synapses.1.weight` required by the model with 2 blocks, 10 classes"),
        ({**sd, "blocks.0.synapses.7.weight": sd["blocks.0.synapses.1.weight"]},
         "state_dict: unexpected key `blocks.0.synapses.7.weight`: the model with 2 blocks, 10 classes has no such tensor (nearest: `blocks.0.synapses.0.weight`)"),
        ({**sd, "readout.1.weight": np.zeros((10, 15), np.float32)},
         "state_dict: `readout.1.weight` has shape [10, 15], but the model expects [10, 16]"),
        ({**sd, "readout.1.weight": sd["readout.1.weight"].astype(np.float64)},
         "`readout.1.weight` has dtype float64, expected float32"),
        ({**sd, "blocks.0.feedforward.0.weight": sd["blocks.0.synapses.0.weight"] + 1},
         "state_dict: `blocks.0.synapses.0.weight` and its alias `blocks.0.feedforward.0.weight` differ"),
        ({**sd, "blocks.0.feedforward.2.num_batches_tracked": np.zeros(2, np.int64)},
         "state_dict: `blocks.0.feedforward.2.num_batches_tracked` must be a single integer"),
        ({**sd, "blocks.0.feedforward.2.running_mean": np.zeros(4, np.int64)},
         "state_dict: `blocks.0.feedforward.2.running_mean` is an integer tensor, expected floating point"),
    ]
    for d, message in bad:
        with pytest.raises(ValueError, match=re.escape(message)):
            model.load_state_dict(d)
    with pytest.raises(ValueError, match="state dict key 3 is not a str|not a str"):
        model._net.set_tensors({3: sd["readout.1.bias"]}, True)
    after = grads(model, x, y)
    for k in before.grads:
        assert np.array_equal(bits(before.grads[k]), bits(after.grads[k])), k


def test_missing_weight_files_raise_file_not_found(model, tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.safetensors"):
        model.load_weights(tmp_path / "nope.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match="not a valid safetensors file"):
        model.load_weights(tmp_path / "junk.safetensors")
    with pytest.raises(ValueError, match="no model description in its metadata"):
        ffebm.Model.load(FIXTURES / CASE / "weights.safetensors")


# ---- no copies where documented ----------------------------------------------------------
def test_results_hand_over_rust_buffers_without_copies(model, batch):
    x, y = batch
    g = grads(model, x, y)
    for name, a in [*g.grads.items(), ("logits", g.logits)]:
        # NumPy did not allocate: the array wraps the Vec the core computed into
        assert not a.flags.owndata and type(a.base).__name__ == "PySliceContainer", name
        assert a.flags.c_contiguous and a.flags.writeable and a.dtype == np.float32, name
    # both aliases of the feedforward conv are returned, as two arrays (the file had both)
    assert "blocks.0.feedforward.0.weight" in g.grads and "blocks.0.synapses.0.weight" in g.grads
    f = model.free_phase(x, t1=T1)
    s = f.states[0][0]  # [4, 4, 4, 4] NCHW view of the core's NHWC buffer
    b, c, h, w = s.shape
    assert s.strides == (h * w * c * 4, 4, w * c * 4, c * 4), s.strides
    assert not s.flags.owndata and type(s.base).__name__ == "PySliceContainer"
    assert f.states[1][1].shape == (4, 16) and f.states[1][1].flags.c_contiguous
    # the state dict is one copy of the model's tensors, handed over the same way
    sd = model.state_dict()
    assert all(type(v.base).__name__ == "PySliceContainer" for v in sd.values())


def test_channels_last_and_torch_inputs_give_identical_results(model, batch):
    x, y = batch
    ref = grads(model, x, y)
    # a channels-last array (NCHW shape, NHWC memory): the fast memcpy path
    x_cl = np.ascontiguousarray(x.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)
    assert not x_cl.flags.c_contiguous
    # a non-contiguous slice of a bigger array
    big = np.zeros((8, 3, 8, 8), np.float32)
    big[::2] = x
    for xx in (x_cl, big[::2], x.copy(order="F")):
        g = grads(model, xx, y.astype(np.int32))
        for k in ref.grads:
            assert np.array_equal(bits(g.grads[k]), bits(ref.grads[k])), k


# ---- models, files, dicts ----------------------------------------------------------------
def test_save_load_and_state_dict_round_trips(model, batch, tmp_path):
    x, y = batch
    ref = grads(model, x, y)
    model.save(tmp_path / "m.safetensors")
    back = ffebm.Model.load(tmp_path / "m.safetensors")
    assert back.config == model.config and back.defaults is None
    g = grads(back, x, y)
    for k in ref.grads:
        assert np.array_equal(bits(g.grads[k]), bits(ref.grads[k])), k
    # a fresh model of the same description, seeded differently, takes the state dict
    other = ffebm.Model.from_dict(model.config, seed=123)
    other.load_state_dict(model.state_dict())
    for k, v in other.state_dict().items():
        assert np.array_equal(v, model.state_dict()[k]), k
    # state_dict() is a copy: changing it changes nothing
    sd = model.state_dict()
    sd["readout.1.bias"][:] = 7
    assert not np.any(model.state_dict()["readout.1.bias"] == 7)
    # non-strict: only the given tensors change
    other.load_state_dict({"readout.1.bias": np.full(10, 0.5, np.float32)}, strict=False)
    assert np.all(other.state_dict()["readout.1.bias"] == 0.5)
    assert np.array_equal(other.state_dict()["readout.1.weight"], model.state_dict()["readout.1.weight"])
    with pytest.raises(ValueError, match="missing key"):
        other.load_state_dict({"readout.1.bias": np.zeros(10, np.float32)})
    # copies are independent
    c = model.copy()
    c.load_state_dict({"readout.1.bias": np.zeros(10, np.float32)}, strict=False)
    assert not np.array_equal(c.state_dict()["readout.1.bias"], model.state_dict()["readout.1.bias"])


def test_update_bn_applies_the_reported_running_statistics(model, batch):
    x, y = batch
    key = "blocks.0.feedforward.2.running_mean"
    before = model.state_dict()[key]
    g = grads(model, x, y)
    assert np.array_equal(model.state_dict()[key], before)  # reported only
    assert not np.array_equal(g.bn_after[key], before)
    g2 = grads(model, x, y, update_bn=True)
    assert np.array_equal(model.state_dict()[key], g2.bn_after[key])
    assert int(model.state_dict()["blocks.0.feedforward.2.num_batches_tracked"]) == 1
    for k in g.grads:  # the running statistics do not enter a training-mode step
        assert np.array_equal(bits(g.grads[k]), bits(g2.grads[k])), k


def test_presets_and_descriptions():
    names = ffebm.presets()
    assert "splitting_small_2block" in names and "cifar10_tiny" in names and len(names) == 20
    assert {"drn_xs", "drn_1h", "cifar10_drn"} <= set(names)
    p = ffebm.preset("splitting_small_2block")
    algo = {"name": "ep", "t1": 60, "t2": 20, "beta": 0.2, "variant": "centered", "tol": None,
            "per_sample_tol": False, "free_order": "even-first", "nudged_order": "odd-first",
            "nudged_form": "offsets", "bn_updates": "once-per-batch", "warm_start": False}
    assert p["algorithm"] == algo and p["model"]["input"] == [3, 32, 32]
    assert p["train"]["optim"]["name"] == "adam" and p["train"]["normalize"] is True
    m = ffebm.Model.from_preset("splitting_small_2block", classes=100)
    assert m.classes == 100 and m.defaults == algo
    # the settings a call uses: the defaults with the options over them
    assert m.algorithm(beta=0.1, variant="positive", bn_compat=True) == {
        **algo, "beta": 0.1, "variant": "positive", "bn_updates": "reference-compat"}
    assert m.algorithm(algo="id-exact", t2=7)["name"] == "id-exact"
    assert m.input_shape == (3, 32, 32) and m.num_blocks == 2
    assert m.param_names[0] == "blocks.0.synapses.0.weight"
    assert "splitting_small_2block" in repr(m) and str(m.num_params) in repr(m)
    assert ffebm.Model.from_toml(m.config_toml).config == m.config
    assert ffebm.threads() >= 1
    with pytest.raises(ValueError, match="already"):
        ffebm.set_threads(1)  # the pool is running (computations happened above)
    tol = ffebm.Model.from_preset("splitting_small_2block_tol")
    assert tol.defaults["tol"] == 1e-6


def test_eval_mode_free_phase_uses_running_statistics(model, batch):
    x, _ = batch
    train = model.free_phase(x, t1=T1)
    ev = model.free_phase(x, t1=T1, mode="eval")
    assert not np.array_equal(train.logits, ev.logits)
    assert train.sweeps == ev.sweeps == [T1, T1]


def test_gdd_table_is_a_dataframe_with_pandas_and_a_dict_without(model, batch, monkeypatch):
    pd = need("pandas")
    x, y = batch
    cols = model.gdd(x, y, t1=T1, t2=T2, beta=BETA, as_frame=False)
    df = model.gdd(x, y, t1=T1, t2=T2, beta=BETA)
    assert isinstance(df, pd.DataFrame) and tuple(df.columns) == ffebm.GDD_COLUMNS
    for c in ffebm.GDD_COLUMNS:
        assert list(df[c]) == cols[c], c
    # EP agrees with ID-exact on these weights (tests/fixtures/reference README: cos >= 0.999998)
    assert min(cols["cos_id_exact"]) > 0.9999
    monkeypatch.setitem(sys.modules, "pandas", None)  # as if pandas were not installed
    assert model.gdd(x, y, t1=T1, t2=T2, beta=BETA) == cols
    with pytest.raises(ImportError):
        model.gdd(x, y, t1=T1, t2=T2, beta=BETA, as_frame=True)


def test_gdd_variant_selects_the_ep_estimate(model, batch):
    """One-sided EP is O(beta) from ID-exact, centered O(beta^2): on the fixture weights the
    one-sided estimates are an order of magnitude further from ID."""
    x, y = batch
    err = {
        v: model.gdd_report(x, y, t1=T1, t2=T2, beta=BETA, variant=v, transients=False)[
            "total_rel_error_exact"]
        for v in ("centered", "positive", "negative")
    }
    assert err["positive"] > 10 * err["centered"] and err["negative"] > 10 * err["centered"], err
    assert err["positive"] != err["negative"]
    with pytest.raises(ValueError, match="unknown EP variant `one-sided`"):
        model.gdd(x, y, t1=T1, t2=T2, beta=BETA, variant="one-sided")
