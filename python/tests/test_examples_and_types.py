"""The example script runs and shows EP agreeing with torch.autograd; the type stubs match
the native module (mypy's stubtest) and the package type-checks strictly."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import ffebm
from conftest import EXAMPLES, need

PACKAGE = Path(ffebm.__file__).resolve().parent


def test_ep_vs_autograd_example(tmp_path):
    need("torch")
    r = subprocess.run(
        [sys.executable, str(EXAMPLES / "ep_vs_autograd.py"), "--preset", "mnist_mlp",
         "--batch", "4", "--t1", "15", "--t2", "8", "--beta", "0.05"],
        capture_output=True, text=True, cwd=tmp_path, timeout=600,
    )
    assert r.returncode == 0, r.stderr
    out = r.stdout
    rows = re.findall(r"^(\S+)\s+(-?[\d.]+)\s+([\d.e+-]+)\s+([\d.e+-]+)$", out, re.M)
    assert len(rows) == 8, out  # conv0 under both names, BN weight/bias, coupling w/b, readout w/b
    for name, cos, _, dev in rows:
        assert float(dev) < 1e-4, (name, dev)  # ffebm's ID-exact equals autograd
        assert float(cos) > 0.999, (name, cos)  # EP agrees with autograd (measured >= 0.99993)
    lowest = float(re.search(r"lowest cosine between ffebm's EP and torch.autograd: ([\d.]+)", out).group(1))
    assert lowest == min(float(c) for _, c, _, _ in rows)
    before, after = map(float, re.search(r"loss ([\d.]+) -> ([\d.]+)", out).groups())
    assert after < before, out


def test_stubs_match_the_native_module():
    need("mypy")
    r = subprocess.run([sys.executable, "-m", "mypy.stubtest", "ffebm._ffebm"],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr


def test_package_type_checks_strictly(tmp_path):
    need("mypy")
    # by import name: the package as installed (with its py.typed and stubs)
    r = subprocess.run([sys.executable, "-m", "mypy", "--strict", "--cache-dir", str(tmp_path),
                        "-p", "ffebm"], capture_output=True, text=True, timeout=600,
                       cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(PACKAGE.parent)})
    assert r.returncode == 0, r.stdout + r.stderr
