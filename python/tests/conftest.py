"""Shared fixtures of the Python tests: the repository, the `ffebm` command line, the
reference fixtures (authors' PyTorch numbers) and the shared datasets.

Under CI (``CI=true``) a missing piece (the CLI binary, torch, pandas, the data) fails the
test instead of skipping it, so a green CI run has run every test.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import ffebm

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "tests" / "fixtures" / "reference"
EXAMPLES = REPO / "python" / "examples"
IN_CI = os.environ.get("CI", "").lower() == "true"

if str(EXAMPLES) not in sys.path:
    sys.path.insert(0, str(EXAMPLES))


def missing(what: str):
    """Skip locally, fail under CI."""
    if IN_CI:
        pytest.fail(f"{what} (required under CI)")
    pytest.skip(what)


def need(module: str):
    try:
        return __import__(module)
    except ImportError:
        missing(f"{module} is not installed")


@pytest.fixture(scope="session")
def cli() -> Path:
    """The `ffebm` binary: $FFEBM_BIN, else target/release/ffebm of this repository."""
    path = Path(os.environ.get("FFEBM_BIN", REPO / "target" / "release" / "ffebm"))
    if not path.exists():
        pytest.fail(f"{path} not found: build it with `cargo build --release` or set FFEBM_BIN")
    return path


def run_cli(cli: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    r = subprocess.run([str(cli), *map(str, args)], capture_output=True, text=True)
    if check and r.returncode != 0:
        raise AssertionError(f"ffebm {' '.join(map(str, args))} failed:\n{r.stderr}")
    return r


@pytest.fixture(scope="session")
def data_dir() -> Path:
    d = os.environ.get("FFEBM_DATA")
    if not d or not Path(d).is_dir():
        missing("FFEBM_DATA is not set (the shared datasets)")
    return Path(d)


# The reference fixture cases (tests/fixtures/reference/README.md): model description
# (ffebm TOML), T1, T2, beta.
TWO_BLOCK = """
input = [3, 8, 8]
classes = 10
alpha = 0.5
init_v = 0.1
[[blocks]]
channels = [3, 4, 6]
pools = "mm"
clamp_last = true
[[blocks]]
channels = [6, 8]
pools = "-"
norm = "none"
fc = [16]
"""

ONE_BLOCK = """
input = [1, 8, 8]
classes = 10
alpha = 1.0
init_v = 0.1
[[blocks]]
channels = [1, 4]
pools = "m"
fc = [12]
"""

CASES = {
    "two_block_bn_pool": (TWO_BLOCK, 30, 10, 0.1),
    "one_block_dense": (ONE_BLOCK, 20, 8, 0.2),
    "norm_pool": (
        TWO_BLOCK.replace("clamp_last = true", "clamp_last = true\nnorm_pool = true", 1),
        30,
        10,
        0.1,
    ),
}


def case_model(name: str) -> ffebm.Model:
    return ffebm.Model.from_toml(CASES[name][0])


def case_batch(name: str):
    b = ffebm.load_tensors(FIXTURES / name / "batch.safetensors")
    return b["x"], b["y"]


def bits(a) -> np.ndarray:
    """The bit pattern of a float32 array (equality of these is bit identity)."""
    a = np.ascontiguousarray(a, dtype=np.float32)
    return a.view(np.uint32)


def rel_max(a, b, floor: float) -> float:
    """max |a - b| / max(max |b|, floor), as the Rust reference-fixture tests."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    assert a.shape == b.shape, (a.shape, b.shape)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), floor))


def assert_same_as_cli(g: ffebm.Gradients, path) -> int:
    """Every tensor of `ffebm grad`'s output file equals the Python result bit for bit."""
    want = ffebm.load_tensors(path)
    readouts = ("state_after.", "power.")  # BN statistics after the step; DRN resistor power
    grads = {k: v for k, v in want.items() if k not in ("loss", "logits") and not k.startswith(readouts)}
    for k, v in want.items():
        if k.startswith("power."):
            assert np.all(np.isfinite(v)) and np.all(v > 0), (k, v)
    assert sorted(grads) == sorted(g.grads), "gradient names differ from the CLI's"
    for name, w in grads.items():
        assert g.grads[name].dtype == np.float32 and g.grads[name].shape == w.shape, name
        assert np.array_equal(bits(g.grads[name]), bits(w)), f"{name} differs from ffebm grad"
    assert np.float32(g.loss) == want["loss"], (g.loss, want["loss"])
    assert np.array_equal(bits(g.logits), bits(want["logits"]))
    after = {k[len("state_after."):]: v for k, v in want.items() if k.startswith("state_after.")}
    assert sorted(after) == sorted(g.bn_after)
    for name, w in after.items():
        assert np.array_equal(np.asarray(g.bn_after[name]), w), name
    return len(grads)
