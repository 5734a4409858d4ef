"""Argument conversion shared by the Python API (no computation here)."""

from __future__ import annotations

import json
import os
from typing import Any, Dict, Iterable, List, Mapping, Union

import numpy as np

from . import _ffebm

PathLike = Union[str, "os.PathLike[str]"]


def to_numpy(a: Any) -> Any:
    """A NumPy view of `a` where possible: NumPy arrays pass through, CPU torch tensors
    become arrays sharing their memory (``.detach().numpy()``), anything else goes through
    ``numpy.asarray`` (dtype and shape are checked by the native layer, which names the
    argument in its ValueError)."""
    if isinstance(a, np.ndarray):
        return a
    if hasattr(a, "detach") and hasattr(a, "numpy"):  # torch.Tensor without importing torch
        t = a.detach()
        if getattr(t, "device", None) is not None and str(t.device) != "cpu":
            t = t.cpu()
        return t.numpy()
    return np.asarray(a)


def tensors_to_numpy(tensors: Mapping[str, Any]) -> Dict[str, Any]:
    if not isinstance(tensors, Mapping):
        raise ValueError(
            f"expected a dict of arrays (e.g. a PyTorch state_dict), got {type(tensors).__name__}"
        )
    return {str(k): to_numpy(v) for k, v in tensors.items()}


def overrides(sets: Union[Mapping[str, Any], Iterable[str], None]) -> List[str]:
    """`--set` strings from a dict ``{"optim.lr": 3e-4}`` or an iterable ``["optim.lr=3e-4"]``."""
    if sets is None:
        return []
    if isinstance(sets, str):
        raise ValueError(
            "overrides must be a dict {'key': value} or a list of 'key=value' strings, not a str"
        )
    if isinstance(sets, Mapping):
        out = []
        for k, v in sets.items():
            if isinstance(v, os.PathLike):
                v = os.fspath(v)
            out.append(f"{k}={_ffebm.toml_literal(json.dumps(v))}")
        return out
    out = [str(s) for s in sets]
    for s in out:
        if "=" not in s:
            raise ValueError(f"override `{s}`: expected key=value")
    return out


def config_text(config: Union[PathLike, Mapping[str, Any], None]) -> Union[str, None]:
    """TOML text of a run or model description given as a file path or a dict."""
    if config is None:
        return None
    if isinstance(config, Mapping):
        return _ffebm.run_toml_of_json(json.dumps(dict(config)))
    with open(os.fspath(config), encoding="utf-8") as f:
        return f.read()
