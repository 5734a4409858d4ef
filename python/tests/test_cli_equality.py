"""Gradients, gdd tables and model files from Python are bit-identical to the command
line's (`ffebm grad`, `ffebm gdd`) for the same weights and batch."""

from __future__ import annotations

import csv

import numpy as np
import pytest

import ffebm
from conftest import CASES, FIXTURES, assert_same_as_cli, case_batch, case_model, run_cli


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("algo", ["ep", "id-exact", "id-reference"])
def test_reference_cases_match_ffebm_grad(cli, tmp_path, case, algo):
    text, t1, t2, beta = CASES[case]
    model_file = tmp_path / "model.toml"
    model_file.write_text(text)
    weights = FIXTURES / case / "weights.safetensors"
    batch = FIXTURES / case / "batch.safetensors"
    out = tmp_path / "g.safetensors"
    compat = ["--bn-compat"] if case == "norm_pool" else []
    run_cli(cli, "grad", "--model", model_file, "--weights", weights, "--input", batch,
            "--algo", algo, "--t1", t1, "--t2", t2, "--beta", beta, "--out", out, "-q", *compat)
    x, y = case_batch(case)
    # weights loaded from the file, as --weights does
    m = case_model(case)
    m.load_weights(weights)
    g = m.gradients(x, y, algo=algo, t1=t1, t2=t2, beta=beta, bn_compat=bool(compat))
    n = assert_same_as_cli(g, out)
    # ... and given as a state dict (both aliases of the feedforward conv, as in the file)
    m2 = case_model(case)
    m2.load_state_dict(ffebm.load_tensors(weights))
    assert_same_as_cli(m2.gradients(x, y, algo=algo, t1=t1, t2=t2, beta=beta, bn_compat=bool(compat)), out)
    assert n >= 6


def test_preset_defaults_and_seeded_init_match_the_cli(cli, tmp_path):
    """A preset model initialised from a seed, its preset's T1/T2/beta, no weights file."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 3, 32, 32), dtype=np.float32)
    y = np.array([7, 2])
    batch = tmp_path / "batch.safetensors"
    ffebm.save_tensors(batch, {"x": x, "y": y})
    out = tmp_path / "g.safetensors"
    run_cli(cli, "grad", "--preset", "cifar10_tiny", "--seed", 5, "--input", batch,
            "--algo", "ep", "--out", out, "-q")
    m = ffebm.Model.from_preset("cifar10_tiny", seed=5)
    g = m.gradients(x, y)
    assert_same_as_cli(g, out)
    assert g.sweeps == [30, 30]
    # a model saved from Python is read by the CLI as weights: same gradients again
    m.save(tmp_path / "m.safetensors")
    out2 = tmp_path / "g2.safetensors"
    run_cli(cli, "grad", "--preset", "cifar10_tiny", "--seed", 99, "--weights", tmp_path / "m.safetensors",
            "--input", batch, "--algo", "ep", "--out", out2, "-q")
    assert_same_as_cli(g, out2)


def test_gdd_table_matches_ffebm_gdd(cli, tmp_path):
    case = "two_block_bn_pool"
    text, t1, t2, beta = CASES[case]
    (tmp_path / "model.toml").write_text(text)
    weights = FIXTURES / case / "weights.safetensors"
    run_cli(cli, "gdd", "--model", tmp_path / "model.toml", "--weights", weights,
            "--input", FIXTURES / case / "batch.safetensors", "--t1", t1, "--t2", t2,
            "--beta", beta, "--no-transients", "--out", tmp_path / "gdd", "-q")
    with open(tmp_path / "gdd" / "gdd.csv") as f:
        rows = list(csv.DictReader(f))
    m = case_model(case)
    m.load_weights(weights)
    x, y = case_batch(case)
    table = m.gdd(x, y, t1=t1, t2=t2, beta=beta, as_frame=False)
    assert list(table) == list(rows[0]) == list(ffebm.GDD_COLUMNS)
    assert len(table["tensor"]) == len(rows) >= 8
    for i, row in enumerate(rows):
        for col, want in row.items():
            got = table[col][i]
            # the CLI writes f64 in Rust's shortest round-trip form: parsing it is exact
            parsed = want if col == "tensor" else int(want) if col == "block" else float(want)
            assert got == parsed, (col, i, got, want)
    report = m.gdd_report(x, y, t1=t1, t2=t2, beta=beta, transients=True, coords=3)
    tr = report["tensors"][1]
    assert len(tr["ep"]) == t2 + 1 and len(tr["ep"][0]) == 3 and len(tr["id_exact"]) == t2 + 1
