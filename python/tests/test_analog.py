"""Analog overrides from Python train a non-ideal circuit: the run records pulses, the
checkpoint holds the device tensors, and every pair-held weight is G+ − G−."""

from __future__ import annotations

import json

import numpy as np
import pytest

import ffebm
from conftest import bits

#: A small MNIST run (as tests/integration/analog_pair.rs) with varied, pulse-programmed
#: weights held by differential pairs, refreshed after every step.
OVERRIDES = {
    "data.train_limit": 320,
    "data.test_limit": 200,
    "data.batch_size": 32,
    "algorithm.t1": 6,
    "algorithm.t2": 4,
    "train.epochs": 1,
    "analog.weight_std": 0.05,
    "analog.device": "constant-step",
    "analog.device_pair": "differential",
    "analog.dw_min": 5e-5,
    "analog.w_max": 0.02,
    "analog.refresh_every": 1,
    "analog.refresh_upper_thres": 0.5,
    "analog.refresh_lower_thres": 0.01,
}


def test_analog_overrides_train_a_non_ideal_circuit(data_dir, tmp_path):
    run = ffebm.train(preset="mnist_mlp", out_dir=tmp_path / "pair", overrides=OVERRIDES,
                      seed=7, quiet=True)
    assert run.completed
    config = (tmp_path / "pair" / "config.toml").read_text()
    assert 'device_pair = "differential"' in config and "weight_std = 0.05" in config
    # the epoch record counts update and refresh pulses of the one energy-based block
    with open(tmp_path / "pair" / "metrics.jsonl") as f:
        epochs = [r for r in map(json.loads, f) if r["kind"] == "epoch"]
    assert len(epochs) == 1
    assert epochs[0]["pulses"]["block0"] > 0
    assert epochs[0]["refresh_pulses"]["block0"] >= 0
    assert run.epochs[0]["pulses"] == epochs[0]["pulses"]
    # the checkpoint holds the device draws and the conductance pairs; w = G+ − G−
    t = ffebm.load_tensors(tmp_path / "pair" / "checkpoint_last.safetensors")
    xi = [k for k in t if k.startswith("analog.xi.")]
    g_plus = [k for k in t if k.startswith("analog.g_plus.")]
    assert xi and g_plus and len(g_plus) == len(xi)
    for k in g_plus:
        name = k[len("analog.g_plus."):]
        gp, gm = t[k], t["analog.g_minus." + name]
        assert (gp >= 0).all() and (gm >= 0).all() and (gp <= 0.02).all() and (gm <= 0.02).all()
        assert np.array_equal(bits(t[name]), bits(gp - gm)), name
        assert t["analog.dw_plus." + name].shape == gp.shape
        assert t["analog.dw_minus." + name].shape == gp.shape
    # ξ ~ N(0, 1): the circuit really is varied
    draws = np.concatenate([t[k].ravel() for k in xi])
    assert draws.size > 1000 and abs(draws.std() - 1.0) < 0.05


def test_bad_analog_overrides_name_the_key(data_dir, tmp_path):
    bad = {**OVERRIDES, "analog.device_pair": "triple"}
    with pytest.raises(ValueError, match="analog.device_pair"):
        ffebm.train(preset="mnist_mlp", out_dir=tmp_path / "bad", overrides=bad, quiet=True)
