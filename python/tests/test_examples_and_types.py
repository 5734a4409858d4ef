"""The example script runs and shows EP agreeing with torch.autograd; the type stubs match
the native module (mypy's stubtest) and the package type-checks strictly."""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

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



#: typing names that Python 3.9's typing module lacks.
TYPING_AFTER_3_9 = {"TypeAlias", "ParamSpec", "Concatenate", "TypeGuard", "Self", "Never",
                    "LiteralString", "Required", "NotRequired", "Unpack", "TypeVarTuple",
                    "assert_never", "assert_type", "reveal_type", "dataclass_transform",
                    "override", "TypeIs", "ReadOnly", "is_typeddict"}


def python_sources():
    """The shipped package (modules and stubs), the examples and the benchmark."""
    root = EXAMPLES.parent
    for d in (PACKAGE, root / "examples", root / "bench"):
        yield from sorted(d.glob("*.py"))
        yield from sorted(d.glob("*.pyi"))


def py39_problems(src: str, name: str, stub: bool = False) -> list:
    """What in `src` needs Python > 3.9: newer syntax (SyntaxError), `X | Y` annotations
    evaluated at run time (not under `from __future__ import annotations`, not a stub),
    typing names newer than 3.9, `zip(strict=)`."""
    tree = ast.parse(src, name, feature_version=(3, 9))
    lazy = stub or any(
        isinstance(n, ast.ImportFrom) and n.module == "__future__"
        and any(a.name == "annotations" for a in n.names) for n in tree.body)
    annotations = set()
    for n in ast.walk(tree):
        if isinstance(n, (ast.arg, ast.AnnAssign)) and n.annotation is not None:
            annotations.update(map(id, ast.walk(n.annotation)))
        if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.returns is not None:
            annotations.update(map(id, ast.walk(n.returns)))
    problems = []
    for n in ast.walk(tree):
        where = f"{name}:{getattr(n, 'lineno', '?')}"
        if isinstance(n, ast.BinOp) and isinstance(n.op, ast.BitOr) and id(n) in annotations and not lazy:
            problems.append(f"{where}: `X | Y` annotation evaluated at run time")
        if isinstance(n, ast.ImportFrom) and n.module == "typing":
            problems += [f"{where}: typing.{a.name} is newer than 3.9"
                         for a in n.names if a.name in TYPING_AFTER_3_9]
        if isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name) \
                and n.value.id == "typing" and n.attr in TYPING_AFTER_3_9:
            problems.append(f"{where}: typing.{n.attr} is newer than 3.9")
        if isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id == "zip" \
                and any(k.arg == "strict" for k in n.keywords):
            problems.append(f"{where}: zip(strict=) is 3.10+")
    return problems


def test_sources_stay_python_3_9():
    """The wheel is abi3 for CPython >= 3.9, and mypy no longer type-checks against 3.9:
    the package, its stubs, the examples and the benchmark use nothing newer."""
    files = list(python_sources())
    assert len(files) >= 7, files
    problems = [p for f in files for p in py39_problems(f.read_text(), f.name, f.suffix == ".pyi")]
    assert not problems, "\n".join(problems)
    # the check finds what it looks for
    with pytest.raises(SyntaxError):
        py39_problems("match x:\n    case 1:\n        pass\n", "m.py")
    bad = "from typing import TypeAlias\ndef f(x: int | None) -> None:\n    zip(a, b, strict=True)\n"
    assert len(py39_problems(bad, "b.py")) == 3
    assert py39_problems("from __future__ import annotations\n" + bad.replace("TypeAlias", "Any"), "ok.py") == \
        ["ok.py:4: zip(strict=) is 3.10+"]
