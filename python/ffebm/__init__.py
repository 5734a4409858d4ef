"""ffebm from Python: feedforward-tied energy-based models (Nest & Ernoult, NeurIPS 2024)
simulated by ffebm's Rust core, with NumPy (or CPU PyTorch) arrays in and out.

>>> import ffebm, numpy as np
>>> m = ffebm.Model.from_preset("cifar10_tiny", seed=0)
>>> x = np.random.default_rng(0).standard_normal((4, 3, 32, 32), dtype=np.float32)
>>> g = m.gradients(x, np.array([0, 1, 2, 3]), algo="ep")
>>> sorted(g.grads)[:1], g.loss  # doctest: +SKIP

Shapes are NCHW like PyTorch and parameters use the reference ``state_dict`` names, so a
PyTorch ``state_dict()`` goes straight into :meth:`Model.load_state_dict`. Long calls
release the GIL and stop on Ctrl-C with KeyboardInterrupt. Bad shapes, dtypes and keys raise
ValueError with the command line's messages.
"""

from __future__ import annotations

import json
import os
from typing import (
    Any,
    Callable,
    Dict,
    Iterable,
    List,
    Mapping,
    NamedTuple,
    Optional,
    Tuple,
    Union,
    cast,
)

from . import _ffebm
from ._convert import PathLike, config_text, tensors_to_numpy
from ._convert import overrides as _overrides
from ._model import GDD_COLUMNS, FreePhase, Gradients, Model

__version__ = "0.1.0"

__all__ = [
    "GDD_COLUMNS",
    "FreePhase",
    "Gradients",
    "Model",
    "TrainResult",
    "evaluate",
    "load_tensors",
    "preset",
    "presets",
    "save_tensors",
    "set_threads",
    "start_run",
    "threads",
    "train",
]


def presets() -> List[str]:
    """Names of the built-in presets (as ``ffebm presets``)."""
    return list(_ffebm.presets())


def preset(name: str, classes: Optional[int] = None) -> Dict[str, Any]:
    """A preset as a dict: ``summary``, ``model`` (the model description), ``algorithm``
    (the ``[algorithm]`` settings: ``name``, ``t1``, ``t2``, ``beta``, ``variant``,
    ``tol``, orders, ...; as :attr:`Model.defaults`) and ``train`` hyper-parameters
    (``dataset``, ``batch_size``, ``epochs``, ``optim``, ``schedule``, ``normalize``,
    ``pad_to_32``)."""
    return cast(Dict[str, Any], json.loads(_ffebm.preset_json(name, classes)))


def set_threads(n: int) -> None:
    """Worker threads of the compute core (default: all cores, or ``RAYON_NUM_THREADS``).
    Only before the first computation of the process."""
    _ffebm.set_threads(n)


def threads() -> int:
    """Worker threads of the compute core."""
    return _ffebm.threads()


def load_tensors(
    path: PathLike, *, with_metadata: bool = False
) -> Union[Dict[str, Any], Tuple[Dict[str, Any], Dict[str, str]]]:
    """Named tensors of a safetensors file as NumPy arrays (floating point as float32,
    integers as int64), in file order; with ``with_metadata`` also the string metadata."""
    tensors, meta = _ffebm.read_tensors(os.fspath(path))
    return (tensors, meta) if with_metadata else tensors


def save_tensors(
    path: PathLike, tensors: Mapping[str, Any], metadata: Optional[Mapping[str, str]] = None
) -> None:
    """Writes float32 and integer arrays (or CPU torch tensors) to a safetensors file,
    atomically (e.g. a batch ``{"x": x, "y": y}`` for ``ffebm grad --input``)."""
    _ffebm.write_tensors(os.fspath(path), tensors_to_numpy(tensors), dict(metadata or {}))


class TrainResult(NamedTuple):
    """What :func:`train` returns."""

    run_dir: str
    #: False when the callback stopped the run early (it can be resumed).
    completed: bool
    #: The epoch records of ``metrics.jsonl`` (train/val/test loss, top-1, top-5, ...).
    epochs: List[Dict[str, Any]]
    #: The model after the last step.
    model: Model


def train(
    config: Union[PathLike, Mapping[str, Any], None] = None,
    out_dir: Optional[PathLike] = None,
    *,
    preset: Optional[str] = None,
    overrides: Union[Mapping[str, Any], Iterable[str], None] = None,
    seed: int = 0,
    epochs: Optional[int] = None,
    classes: Optional[int] = None,
    data_dir: Optional[PathLike] = None,
    download: bool = False,
    resume: bool = False,
    callback: Optional[Callable[[Dict[str, Any]], Optional[bool]]] = None,
    quiet: bool = False,
    init: Optional[Model] = None,
) -> TrainResult:
    """Trains a model and writes its run directory exactly as ``ffebm train`` does (same
    options, same seed: same ``config.toml``, metrics and checkpoints).

    ``config``: a TOML run description file or a dict with its sections, merged over
    ``preset``; ``overrides``: ``{"optim.lr": 3e-4}`` or ``["optim.lr=3e-4"]`` (``--set``);
    ``out_dir``: the run directory (required); ``resume=True`` continues the run in
    ``out_dir`` from its last checkpoint. ``callback(record)`` is called after every epoch
    (and its checkpoints) with the epoch's metrics dict; returning ``False`` stops the run
    there (resumable), raising stops it with that exception. ``init``: start a new run from
    this model's weights (e.g. a PyTorch ``state_dict`` loaded into it) instead of the
    seed's initialisation, through :func:`start_run`.

    Ctrl-C finishes the current step, saves ``checkpoint_last`` and raises KeyboardInterrupt
    (a second Ctrl-C aborts the step; the last checkpoint stays valid). Progress goes to
    the process's stderr unless ``quiet``.
    """
    if out_dir is None:
        raise ValueError("out_dir is required: the run directory to write (or to resume)")
    text = None if resume else config_text(config)
    if resume and (config is not None or preset is not None):
        raise ValueError("resume=True continues the run in out_dir; do not give config or preset")
    if resume and init is not None:
        raise ValueError("resume=True continues the run in out_dir from its checkpoint; do not give init")
    run_dir, completed, epochs_json, net = _ffebm.train(
        os.fspath(out_dir),
        preset,
        text,
        _overrides(overrides),
        classes,
        epochs,
        None if data_dir is None else os.fspath(data_dir),
        download,
        resume,
        seed,
        quiet,
        callback,
        None if init is None else init._net,
    )
    return TrainResult(run_dir, completed, json.loads(epochs_json), Model(net))


def start_run(
    out_dir: PathLike,
    model: Model,
    config: Union[PathLike, Mapping[str, Any], None] = None,
    *,
    preset: Optional[str] = None,
    overrides: Union[Mapping[str, Any], Iterable[str], None] = None,
    seed: int = 0,
    epochs: Optional[int] = None,
    classes: Optional[int] = None,
    data_dir: Optional[PathLike] = None,
    download: bool = False,
) -> str:
    """Saves ``model`` as the step-0 checkpoint of a new run: writes ``out_dir/config.toml``
    (the run as :func:`train` resolves the same options) and ``checkpoint_last.safetensors``
    (the model's weights and BN statistics, zero optimiser moments), and returns the run
    directory. ``ffebm train --resume out_dir`` or ``train(out_dir=out_dir, resume=True)``
    then trains it, exactly as a fresh run whose initialisation had given these weights.

    The model must be the run's ``[model]`` (build it from the same preset or description);
    a differing description, a directory already holding a run or data that does not load
    raise ValueError (FileNotFoundError for missing data) and write nothing."""
    return _ffebm.start_run(
        os.fspath(out_dir),
        model._net,
        preset,
        config_text(config),
        _overrides(overrides),
        classes,
        epochs,
        None if data_dir is None else os.fspath(data_dir),
        download,
        seed,
    )



def evaluate(
    checkpoint: PathLike,
    *,
    data_dir: Optional[PathLike] = None,
    overrides: Union[Mapping[str, Any], Iterable[str], None] = None,
    seed: int = 0,
    quiet: bool = True,
) -> Dict[str, Any]:
    """Evaluates a checkpoint on its run's test set(s) as ``ffebm eval`` does: a dict with
    ``epoch``, ``step`` and ``sets`` = ``{name: {loss, top1, top5, samples, sweeps}}``."""
    return cast(Dict[str, Any], json.loads(
        _ffebm.evaluate(
            os.fspath(checkpoint),
            _overrides(overrides),
            None if data_dir is None else os.fspath(data_dir),
            seed,
            quiet,
        )
    ))
