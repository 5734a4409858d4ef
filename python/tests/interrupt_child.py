"""Child process of test_interrupt.py: starts a long call, prints `ready`, and reports how
the SIGINT its parent then sends ends it. Usage: interrupt_child.py MODE WORKDIR."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

import ffebm

mode, work = sys.argv[1], Path(sys.argv[2])


def say(*a):
    print(*a, flush=True)


MNIST = ["data.test_limit=100", "data.batch_size=32", "algorithm.t1=6", "algorithm.t2=4",
         "train.epochs=2"]


def interrupted_then_resumed(sets, callback=None):
    """Runs, reports how the interrupt ended the run and its checkpoint, resumes it, and
    reports whether the result equals an uninterrupted run's."""
    def run(out_dir, **kw):
        return ffebm.train(preset="mnist_mlp", quiet=True, seed=3, overrides=sets,
                           out_dir=out_dir, **kw)

    try:
        run(work / "run", callback=callback)
        say("not interrupted")
    except KeyboardInterrupt as e:
        say("interrupted", json.dumps(str(e)))
    ckpt = work / "run" / "checkpoint_last.safetensors"
    say("checkpoint", ffebm.load_tensors(ckpt, with_metadata=True)[1]["loop_state"])
    ffebm.train(out_dir=work / "run", resume=True, quiet=True)
    run(work / "full")
    say("resumed-equal", records(work / "run") == records(work / "full"))


def records(d):
    """Every metrics record without its wall-clock fields."""
    out = []
    for line in open(d / "metrics.jsonl"):
        r = json.loads(line)
        out.append({k: v for k, v in r.items() if k not in ("time", "images_per_s", "epoch_time")})
    return out


if mode in ("gradients", "gdd", "free_phase"):
    m = ffebm.Model.from_preset("cifar10_tiny")
    before = m.state_dict()
    x = np.random.default_rng(0).standard_normal((4, 3, 32, 32), dtype=np.float32)
    y = np.arange(4)
    say("ready")
    try:
        if mode == "gradients":
            m.gradients(x, y, t1=10**7)  # hours, were it not interrupted
        elif mode == "gdd":
            m.gdd_report(x, y, t1=5, t2=10**6, transients=True)
        else:
            m.free_phase(x, t1=10**7)
        say("not interrupted")
    except KeyboardInterrupt:
        say(f"interrupted {time.time():.6f}")
    after = m.state_dict()
    say("unchanged", all(np.array_equal(before[k], after[k]) for k in before))
    g = m.gradients(x, y, t1=2, t2=2)  # still usable
    say("usable", np.isfinite(g.loss))
elif mode == "train":
    # 50 steps per epoch: the parent interrupts 0.3 s into epoch 2
    def ready(rec):
        if rec["epoch"] == 1:
            say("ready")

    interrupted_then_resumed(MNIST + ["data.train_limit=1600", "train.log_every=5"], ready)
elif mode == "train-abort":
    # one step per epoch and a long evaluation: the parent interrupts twice during the
    # evaluation of epoch 2 (after the step record of step 2 appears)
    say("ready")
    interrupted_then_resumed(MNIST + ["data.train_limit=32", "data.test_limit=4000",
                                      "train.log_every=1"])
