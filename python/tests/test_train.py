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
    assert ev["sets"][seen[-1]["test_name"]]["top1"] == pytest.approx(seen[-1]["test_top1"])


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


def test_a_run_started_from_a_model_trains_as_the_cli_from_those_weights(cli, data_dir, tmp_path):
    """`start_run` saves a model as the step-0 checkpoint of a new run. From the weights the
    seed gives, training it (Python `init=` or `ffebm train --resume`) is the fresh CLI run
    bit for bit; from other weights, CLI and Python agree with each other and not with it."""
    fresh = tmp_path / "fresh"
    args = ["train", "--preset", "mnist_mlp", "--seed", "7", "--out", fresh, "-q"]
    for s in SETS:
        args += ["--set", s]
    run_cli(cli, *args)
    same = ffebm.Model.from_preset("mnist_mlp", seed=7)
    r = ffebm.train(preset="mnist_mlp", out_dir=tmp_path / "same", overrides=SETS, seed=7,
                    quiet=True, init=same)
    assert r.completed
    assert (tmp_path / "same" / "config.toml").read_text() == (fresh / "config.toml").read_text()
    assert records(tmp_path / "same") == records(fresh)
    for name in ("checkpoint_last.safetensors", "checkpoint_best.safetensors"):
        same_checkpoint(tmp_path / "same" / name, fresh / name)

    other = ffebm.Model.from_preset("mnist_mlp", seed=8)
    run_dir = ffebm.start_run(tmp_path / "cli", other, preset="mnist_mlp", overrides=SETS, seed=7)
    assert run_dir == str(tmp_path / "cli")
    assert (tmp_path / "cli" / "config.toml").read_text() == (fresh / "config.toml").read_text()
    saved = ffebm.Model.load(tmp_path / "cli" / "checkpoint_last.safetensors")
    for k, v in other.state_dict().items():
        assert np.array_equal(bits(saved.state_dict()[k]), bits(v)), k
    run_cli(cli, "train", "--resume", tmp_path / "cli", "-q")
    ffebm.train(preset="mnist_mlp", out_dir=tmp_path / "py", overrides=SETS, seed=7, quiet=True,
                init=other)
    assert records(tmp_path / "py") == records(tmp_path / "cli") != records(fresh)
    same_checkpoint(tmp_path / "py" / "checkpoint_last.safetensors",
                    tmp_path / "cli" / "checkpoint_last.safetensors")


def test_start_run_errors_write_nothing(data_dir, tmp_path):
    cifar = ffebm.Model.from_preset("cifar10_tiny")
    with pytest.raises(ValueError, match=r"differs from the run's \[model\] in .*`input`"):
        ffebm.start_run(tmp_path / "a", cifar, preset="mnist_mlp", overrides=SETS)
    with pytest.raises(ValueError, match=r"differs from the run's \[model\]"):
        ffebm.train(preset="mnist_mlp", out_dir=tmp_path / "a", overrides=SETS, init=cifar, quiet=True)
    assert not (tmp_path / "a").exists()
    m = ffebm.Model.from_preset("mnist_mlp")
    ffebm.start_run(tmp_path / "b", m, preset="mnist_mlp", overrides=SETS)
    before = (tmp_path / "b" / "checkpoint_last.safetensors").read_bytes()
    with pytest.raises(ValueError, match="already holds a run"):
        ffebm.start_run(tmp_path / "b", m, preset="mnist_mlp", overrides=SETS)
    with pytest.raises(ValueError, match="do not give init"):
        ffebm.train(out_dir=tmp_path / "b", resume=True, init=m)
    assert (tmp_path / "b" / "checkpoint_last.safetensors").read_bytes() == before
    with pytest.raises(ValueError, match="optim.lrr"):
        ffebm.start_run(tmp_path / "c", m, preset="mnist_mlp", overrides={"optim.lrr": 1.0})
    assert not (tmp_path / "c").exists()


#: A small run of the MNIST DRN preset (batch 4, warm start): seconds.
DRN_SETS = ["data.train_limit=120", "data.test_limit=100", "train.epochs=2", "train.log_every=10"]


def test_drn_preset_trains_as_the_cli_and_resumes_its_warm_start(cli, data_dir, tmp_path):
    """drn_xs carries each batch's free states to the next (warm start): a Python run stopped
    after epoch 1 and resumed (the carried states come from its checkpoint) writes the CLI's
    uninterrupted run, and a run started from the seed's model through `init=` does too."""
    args = ["train", "--preset", "drn_xs", "--seed", "3", "--out", tmp_path / "cli", "-q"]
    for s in DRN_SETS:
        args += ["--set", s]
    run_cli(cli, *args)
    part = ffebm.train(preset="drn_xs", out_dir=tmp_path / "py", overrides=DRN_SETS, seed=3,
                       quiet=True, callback=lambda r: r["epoch"] < 1)
    assert not part.completed
    carried = [k for k in ffebm.load_tensors(tmp_path / "py" / "checkpoint_last.safetensors")
               if k.startswith("carry.")]
    assert carried == ["carry.0.0", "carry.0.1"]
    assert ffebm.train(out_dir=tmp_path / "py", resume=True, quiet=True).completed
    init = ffebm.Model.from_preset("drn_xs", seed=3)
    ffebm.train(preset="drn_xs", out_dir=tmp_path / "init", overrides=DRN_SETS, seed=3,
                quiet=True, init=init)
    cli_records = records(tmp_path / "cli")
    assert len(cli_records) >= 2 + 60 // 10
    assert records(tmp_path / "py") == cli_records == records(tmp_path / "init")
    for d in ("py", "init"):
        same_checkpoint(tmp_path / d / "checkpoint_last.safetensors",
                        tmp_path / "cli" / "checkpoint_last.safetensors")
    # the checkpoint (carried states beside the weights) loads and evaluates as `ffebm eval`
    last = tmp_path / "py" / "checkpoint_last.safetensors"
    assert ffebm.Model.load(last).defaults["warm_start"] is True
    ev = ffebm.evaluate(last)
    out = run_cli(cli, "eval", "--checkpoint", last).stdout
    last_epoch = [r for r in cli_records if r["kind"] == "epoch"][-1]
    name = last_epoch["test_name"]  # e.g. test-first100 with data.test_limit
    m = ev["sets"][name]
    assert ev["step"] == 60 and m["top1"] == pytest.approx(last_epoch["test_top1"])
    assert f"{name}: {m['samples']} images, loss {m['loss']:.4f}, top1 {m['top1']:.2f}%" in out, out
