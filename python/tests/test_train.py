"""Training and evaluation from Python write and report what the command line does."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

import ffebm
from conftest import bits, run_cli

#: A small MNIST run (as tests/integration/train.rs): seconds on 2 cores.
SETS = [
    "data.train_limit=320",
    "data.test_limit=200",
    "data.batch_size=32",
    "algorithm.t1=6",
    "algorithm.t2=4",
    "train.epochs=2",
    "train.log_every=3",
]
TIME_FIELDS = {"time", "images_per_s", "epoch_time"}


def records(run_dir):
    with open(run_dir / "metrics.jsonl") as f:
        return [{k: v for k, v in json.loads(line).items() if k not in TIME_FIELDS} for line in f]


def same_checkpoint(a, b):
    ta, tb = ffebm.load_tensors(a), ffebm.load_tensors(b)
    assert list(ta) == list(tb)
    for k in ta:
        if ta[k].dtype == np.float32:
            assert np.array_equal(bits(ta[k]), bits(tb[k])), k
        else:
            assert np.array_equal(ta[k], tb[k]), k


def test_python_run_directory_equals_the_cli_one(cli, data_dir, tmp_path):
    cli_dir, py_dir = tmp_path / "cli", tmp_path / "py"
    args = ["train", "--preset", "mnist_mlp", "--seed", "7", "--out", cli_dir, "-q"]
    for s in SETS:
        args += ["--set", s]
    run_cli(cli, *args)
    seen = []
    result = ffebm.train(preset="mnist_mlp", out_dir=py_dir, overrides=SETS, seed=7, quiet=True,
                         callback=seen.append)
    assert result.completed and result.run_dir == str(py_dir)
    assert (py_dir / "config.toml").read_text() == (cli_dir / "config.toml").read_text()
    py_records, cli_records = records(py_dir), records(cli_dir)
    assert len(py_records) == len(cli_records) >= 2 + 20 // 3
    assert py_records == cli_records  # every loss, accuracy, lr and sweep count equal
    for name in ("checkpoint_last.safetensors", "checkpoint_best.safetensors"):
        same_checkpoint(py_dir / name, cli_dir / name)
    # the callback saw each epoch record, the result holds them and the final model
    assert [r["epoch"] for r in seen] == [1, 2]
    assert [{k: v for k, v in r.items() if k not in TIME_FIELDS} for r in seen] == [
        r for r in py_records if r["kind"] == "epoch"]
    assert [r["test_top1"] for r in result.epochs] == [r["test_top1"] for r in seen]
    final = ffebm.Model.load(py_dir / "checkpoint_last.safetensors")
    for k, v in result.model.state_dict().items():
        assert np.array_equal(v, final.state_dict()[k]), k
    # evaluation of the checkpoint, as `ffebm eval`
    ev = ffebm.evaluate(py_dir / "checkpoint_best.safetensors")
    out = run_cli(cli, "eval", "--checkpoint", cli_dir / "checkpoint_best.safetensors").stdout
    assert ev["epoch"] == 2 and ev["step"] == 20
    for name, m in ev["sets"].items():
        line = f"{name}: {m['samples']} images, loss {m['loss']:.4f}, top1 {m['top1']:.2f}%, top5 {m['top5']:.2f}%"
        assert line in out, (line, out)
    assert ev["sets"]["test"]["top1"] == pytest.approx(seen[-1]["test_top1"])


def test_dict_config_overrides_and_early_stop(data_dir, tmp_path):
    """A dict run description and dict overrides; the callback stops after epoch 1 and the
    run resumes to the same end as an uninterrupted one."""
    config = {"data": {"train_limit": 320, "test_limit": 200, "batch_size": 32},
              "algorithm": {"t1": 6, "t2": 4}, "train": {"epochs": 2, "log_every": 3}}
    full = ffebm.train(config, tmp_path / "full", preset="mnist_mlp", seed=7, quiet=True)
    same = ffebm.train(preset="mnist_mlp", out_dir=tmp_path / "same", seed=7, quiet=True,
                       overrides={"data.train_limit": 320, "data.test_limit": 200,
                                  "data.batch_size": 32, "algorithm.t1": 6, "algorithm.t2": 4,
                                  "train.epochs": 2, "train.log_every": 3})
    assert records(tmp_path / "same") == records(tmp_path / "full")
    part = ffebm.train(config, tmp_path / "part", preset="mnist_mlp", seed=7, quiet=True,
                       callback=lambda r: r["epoch"] < 1)
    assert not part.completed and [r["epoch"] for r in part.epochs] == [1]
    done = ffebm.train(out_dir=tmp_path / "part", resume=True, quiet=True)
    assert done.completed
    assert records(tmp_path / "part") == records(tmp_path / "full")
    same_checkpoint(tmp_path / "part" / "checkpoint_last.safetensors",
                    tmp_path / "full" / "checkpoint_last.safetensors")
    assert full.completed and same.completed


def test_callback_exception_stops_training_with_a_valid_checkpoint(data_dir, tmp_path):
    class Stop(Exception):
        pass

    def cb(rec):
        raise Stop(f"epoch {rec['epoch']}")

    with pytest.raises(Stop, match="epoch 1"):
        ffebm.train(preset="mnist_mlp", out_dir=tmp_path / "r", overrides=SETS, quiet=True,
                    callback=cb)
    # epoch 1's checkpoint was written before the callback ran
    m = ffebm.Model.load(tmp_path / "r" / "checkpoint_last.safetensors")
    d = m.defaults
    assert d is not None and {k: d[k] for k in ("name", "t1", "t2", "beta", "tol")} == {
        "name": "ep", "t1": 6, "t2": 4, "beta": 0.5, "tol": None}


def test_training_errors_are_value_errors_and_leave_nothing(data_dir, tmp_path):
    with pytest.raises(ValueError, match=re.escape("optim.lrr")):
        ffebm.train(preset="mnist_mlp", out_dir=tmp_path / "bad", overrides={"optim.lrr": 1.0}, quiet=True)
    assert not (tmp_path / "bad").exists()
    with pytest.raises(ValueError, match="nothing to train"):
        ffebm.train(out_dir=tmp_path / "none")
    with pytest.raises(ValueError, match="out_dir is required"):
        ffebm.train(preset="mnist_mlp")
    with pytest.raises(FileNotFoundError, match="a run directory"):
        ffebm.train(out_dir=tmp_path / "missing", resume=True)
