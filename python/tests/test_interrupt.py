"""Ctrl-C (SIGINT) interrupts long calls: KeyboardInterrupt within a fraction of a second,
the model unchanged; training stops at a step boundary with a valid checkpoint and resumes
to the same end as an uninterrupted run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

CHILD = Path(__file__).with_name("interrupt_child.py")


def step_recorded(run_dir: Path, step: int, timeout: float = 120.0):
    """Waits until metrics.jsonl holds the record of optimiser step `step`."""
    end = time.time() + timeout
    while time.time() < end:
        try:
            for line in open(run_dir / "metrics.jsonl"):
                r = json.loads(line)
                if r["kind"] == "step" and r["step"] == step:
                    return
        except (OSError, ValueError):
            pass
        time.sleep(0.01)
    raise AssertionError(f"no record of step {step} in {run_dir}")


def interrupt(mode: str, tmp_path: Path, signals: int = 1, delay: float = 0.5, before=None):
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    p = subprocess.Popen([sys.executable, str(CHILD), mode, str(tmp_path)], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, env=env)
    try:
        line = p.stdout.readline()
        assert line.strip() == "ready", (line, p.stderr.read() if p.poll() is not None else "")
        if before is not None:
            before()
        time.sleep(delay)
        sent = time.time()
        p.send_signal(signal.SIGINT)
        err_head = ""
        if signals == 2:
            # the second Ctrl-C once the first one was seen (the step is still running)
            while "interrupt: finishing the current step" not in err_head:
                line = p.stderr.readline()
                assert line, err_head
                err_head += line
            p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=300)
        err = err_head + err
    finally:
        if p.poll() is None:
            p.kill()
    lines = dict(l.split(" ", 1) for l in out.splitlines() if " " in l)
    return lines, out, err, sent


@pytest.mark.parametrize("mode", ["gradients", "gdd", "free_phase"])
def test_ctrl_c_interrupts_a_computation(tmp_path, mode):
    lines, out, err, sent = interrupt(mode, tmp_path)
    assert "interrupted" in lines, (out, err)
    latency = float(lines["interrupted"]) - sent  # of a call that would take hours
    assert latency < 2.0, latency  # measured 3 ms (one sweep of cifar10_tiny at batch 4)
    assert lines["unchanged"] == "True" and lines["usable"] == "True", out


def test_ctrl_c_stops_training_at_a_step_with_a_checkpoint(data_dir, tmp_path):
    lines, out, err, _ = interrupt("train", tmp_path, delay=0.3)
    assert "interrupted" in lines, (out, err)
    msg = json.loads(lines["interrupted"])
    assert "training interrupted after 1 complete epoch(s); state saved to" in msg, msg
    assert "resume=True" in msg
    state = json.loads(lines["checkpoint"])
    assert state["epoch"] == 1 and 0 < state["batch"] < 50, state  # mid-epoch 2
    assert lines["resumed-equal"] == "True", out


def test_second_ctrl_c_aborts_training_and_the_last_checkpoint_stays_valid(data_dir, tmp_path):
    # during the (long) evaluation of epoch 2: the step in progress cannot finish first
    lines, out, err, _ = interrupt("train-abort", tmp_path, signals=2, delay=0.05,
                                   before=lambda: step_recorded(tmp_path / "run", 2))
    assert "interrupted" in lines, (out, err)
    msg = json.loads(lines["interrupted"])
    assert "aborted by a second interrupt; the last complete checkpoint" in msg, msg
    state = json.loads(lines["checkpoint"])
    assert state["epoch"] == 1, state
    assert lines["resumed-equal"] == "True", out
