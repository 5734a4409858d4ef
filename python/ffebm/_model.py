"""`ffebm.Model`: an ff-EBM from Python, with NumPy (or CPU torch) arrays in and out."""

from __future__ import annotations

import json
import os
from typing import Any, Dict, List, Mapping, NamedTuple, Optional, Tuple, Union, cast

import numpy as np

from . import _ffebm
from ._convert import PathLike, tensors_to_numpy, to_numpy

#: Columns of the static gradient analysis table, as in `ffebm gdd`'s gdd.csv.
GDD_COLUMNS = (
    "tensor",
    "block",
    "cos_id_exact",
    "rel_error_id_exact",
    "norm_ratio_id_exact",
    "sign_agreement_id_exact",
    "cos_id_reference",
    "rel_error_id_reference",
    "norm_ratio_id_reference",
    "sign_agreement_id_reference",
)


class FreePhase(NamedTuple):
    """Result of :meth:`Model.free_phase`."""

    #: ``states[k][l]``: free equilibrium of layer ``l`` of block ``k``; conv layers are
    #: ``[B, C, H, W]`` arrays with channels-last strides (the core's memory, not copied),
    #: dense layers (every layer of a resistive block) ``[B, F]``.
    states: List[List[np.ndarray]]
    #: ``[B, classes]`` output scores: the readout of the last block's last layer, or that
    #: layer itself for a model without a readout (``cost = "squared-error"``).
    logits: np.ndarray
    #: Sweeps each block ran.
    sweeps: List[int]


class Gradients(NamedTuple):
    """Result of :meth:`Model.gradients` (what ``ffebm grad`` writes)."""

    #: ``+dL/dtheta`` for the mean loss over the batch, one float32 array per parameter,
    #: under the names the weights were given with (PyTorch ``state_dict`` names).
    grads: Dict[str, np.ndarray]
    #: Mean cost of the free phase: cross-entropy of the logits, or ``½‖s − onehot(y)‖²``
    #: of the last layer for a model with ``cost = "squared-error"``.
    loss: float
    logits: np.ndarray
    sweeps: List[int]
    #: BatchNorm running statistics after the step (``state_after.*`` of ``ffebm grad``).
    bn_after: Dict[str, np.ndarray]
    #: Wall time of the computation inside the core, without the binding's conversions.
    seconds: float


class Model:
    """A feedforward-tied energy-based model.

    Build one with :meth:`from_preset`, :meth:`from_toml`, :meth:`from_file`,
    :meth:`from_dict` or :meth:`load`. Arrays are NCHW float32 like PyTorch; parameters use
    the reference implementation's ``state_dict`` names (``blocks.0.synapses.1.weight``,
    ``blocks.0.feedforward.2.running_mean``, ``readout.1.weight``, ...). Blocks may be deep
    Hopfield networks or deep resistive networks (``kind = "resistive"``: conductances and
    biases in ``blocks.{k}.synapses.{i}``; without a feedforward conv when ``channels =
    [C_in]``, so no ``synapses.0``); a model with ``cost = "squared-error"`` has no
    ``readout.*``.

    Computations release the GIL and can be interrupted with Ctrl-C (KeyboardInterrupt
    within one relaxation sweep; the model is left unchanged).
    """

    __slots__ = ("_net",)

    def __init__(self, net: "_ffebm.Net") -> None:
        if not isinstance(net, _ffebm.Net):
            raise TypeError(
                "use Model.from_preset, from_toml, from_file, from_dict or load to build a model"
            )
        self._net = net

    # ---- construction -------------------------------------------------------------
    @classmethod
    def from_preset(cls, name: str, *, seed: int = 0, classes: Optional[int] = None) -> "Model":
        """The model of a built-in preset (see :func:`ffebm.presets`), initialised from
        ``seed`` exactly as ``ffebm ... --preset NAME --seed SEED``. Its ``[algorithm]``
        settings (T1, T2, beta, tol, EP variant, update orders, ...) become the defaults of
        :meth:`gradients` and friends (see :attr:`defaults`). Inputs are fed as the preset's
        runs feed them: normalised, except the MNIST DRN presets (``drn_xs``, ``drn_1h``),
        which take raw 28x28 images in [0, 1]."""
        return cls(_ffebm.Net.from_preset(name, classes, seed))

    @classmethod
    def from_toml(cls, text: str, *, seed: int = 0, classes: Optional[int] = None) -> "Model":
        """A model from a TOML description (the ``[model]`` keys at top level, as
        ``ffebm grad --model F.toml``). It has no algorithm defaults: give ``t1``, ``t2``
        and (for EP) ``beta``; the rest is the paper's EP schedule."""
        return cls(_ffebm.Net.from_toml(text, classes, seed))

    @classmethod
    def from_file(cls, path: PathLike, *, seed: int = 0, classes: Optional[int] = None) -> "Model":
        """A model from a TOML description file."""
        with open(os.fspath(path), encoding="utf-8") as f:
            return cls.from_toml(f.read(), seed=seed, classes=classes)

    @classmethod
    def from_dict(
        cls, config: Mapping[str, Any], *, seed: int = 0, classes: Optional[int] = None
    ) -> "Model":
        """A model from a dict with the TOML description's keys, e.g.
        ``{"input": [3, 8, 8], "classes": 10, "alpha": 0.5, "init_v": 0.1,
        "blocks": [{"channels": [3, 4, 6], "pools": "mm"}]}``."""
        return cls(_ffebm.Net.from_json(json.dumps(dict(config)), classes, seed))

    @classmethod
    def load(cls, path: PathLike, *, seed: int = 0) -> "Model":
        """An ffebm checkpoint (``runs/x/checkpoint_best.safetensors``; the run's
        ``[algorithm]`` becomes the defaults) or a file written by :meth:`save`."""
        return cls(_ffebm.Net.load(os.fspath(path), seed))

    def copy(self) -> "Model":
        """An independent copy (weights, key names, defaults)."""
        return Model(self._net.copy())

    # ---- weights ------------------------------------------------------------------
    def load_weights(self, path: PathLike) -> None:
        """Loads every parameter and buffer from a safetensors file: a PyTorch
        ``state_dict`` of the reference model (reference names) or an ffebm checkpoint, as
        ``ffebm grad --weights``. A missing or unknown key or a wrong shape raises
        ValueError naming it; the model is then unchanged."""
        self._net.load_weights(os.fspath(path))

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True) -> None:
        """Sets parameters and buffers from a dict of arrays (NumPy arrays or CPU torch
        tensors, e.g. ``torch_model.state_dict()``). float32 for weights, integers for
        ``num_batches_tracked``. With ``strict`` every tensor must be given (aliases such as
        ``blocks.0.feedforward.0.weight`` may stand for ``blocks.0.synapses.0.weight``; if
        both are given they must be equal); otherwise the others keep their values. Unknown
        keys, wrong shapes and dtypes raise ValueError; the model is then unchanged.
        Gradients are returned under the names used here."""
        self._net.set_tensors(tensors_to_numpy(state_dict), strict)

    def state_dict(self) -> Dict[str, np.ndarray]:
        """Parameters and BN buffers as a dict of NumPy arrays under the reference names (a
        copy of the model's tensors: changing them does not change the model)."""
        return self._net.tensors()

    def save(self, path: PathLike) -> None:
        """Writes the weights (reference names) with the model description and algorithm
        defaults in the metadata, atomically. :meth:`load` reads it back; ``ffebm grad
        --weights`` and ``safetensors.torch.load_file`` read the tensors."""
        self._net.save(os.fspath(path))

    # ---- description ----------------------------------------------------------------
    @property
    def config(self) -> Dict[str, Any]:
        """The model description as a dict (the TOML description's keys)."""
        return cast(Dict[str, Any], json.loads(self._net.config_json()))

    @property
    def config_toml(self) -> str:
        return self._net.config_toml()

    @property
    def defaults(self) -> Optional[Dict[str, Any]]:
        """The preset's or run's ``[algorithm]`` settings as a dict (``name``, ``t1``,
        ``t2``, ``beta``, ``variant``, ``tol`` (None when absent), ``per_sample_tol``,
        ``free_order``, ``nudged_order``, ``bn_updates``, ``warm_start``), or None for a
        model from a description."""
        d = self._net.defaults()
        if d is None:
            return None
        return cast(Dict[str, Any], json.loads(d))

    def algorithm(
        self,
        *,
        algo: str = "ep",
        beta: Optional[float] = None,
        t1: Optional[int] = None,
        t2: Optional[int] = None,
        tol: Optional[float] = None,
        variant: Optional[str] = None,
        bn_compat: Optional[bool] = None,
    ) -> Dict[str, Any]:
        """The ``[algorithm]`` settings :meth:`gradients` uses with these options (the
        defaults with the options applied over them), as a dict like :attr:`defaults`. Bad
        or missing values raise ValueError as :meth:`gradients` would."""
        return cast(
            Dict[str, Any],
            json.loads(self._net.algorithm(algo, t1, t2, beta, tol, variant, bn_compat)),
        )

    @property
    def input_shape(self) -> Tuple[int, int, int]:
        """``(C, H, W)`` of one input image."""
        return self._net.input_shape

    @property
    def classes(self) -> int:
        return self._net.classes

    @property
    def num_blocks(self) -> int:
        return self._net.num_blocks

    @property
    def num_params(self) -> int:
        return self._net.num_params

    @property
    def param_names(self) -> List[str]:
        """Names of the trainable parameters (ffebm order)."""
        return self._net.param_names()

    def __repr__(self) -> str:
        c, h, w = self.input_shape
        return (
            f"ffebm.Model({self._net.origin}: {self.num_blocks} blocks, input {c}x{h}x{w}, "
            f"{self.classes} classes, {self.num_params} parameters)"
        )

    # ---- computations ----------------------------------------------------------------
    def free_phase(
        self,
        x: Any,
        *,
        t1: Optional[int] = None,
        tol: Optional[float] = None,
        mode: str = "train",
    ) -> FreePhase:
        """Relaxes every block of batch ``x`` (``[B, C, H, W]`` float32, as the model's runs
        feed it) from zero states, in the defaults' free-phase order. ``mode="train"``
        normalises with batch statistics (as in a training step), ``"eval"`` with the BN
        running statistics (as in evaluation). ``tol=0`` disables a default tolerance."""
        if mode not in ("train", "eval"):
            raise ValueError(f"mode `{mode}`: expected `train` or `eval`")
        d = self._net.free_phase(to_numpy(x), mode == "eval", t1, tol)
        return FreePhase(d["states"], d["logits"], d["sweeps"])

    def gradients(
        self,
        x: Any,
        y: Any,
        *,
        algo: str = "ep",
        beta: Optional[float] = None,
        t1: Optional[int] = None,
        t2: Optional[int] = None,
        tol: Optional[float] = None,
        variant: Optional[str] = None,
        bn_compat: Optional[bool] = None,
        update_bn: bool = False,
    ) -> Gradients:
        """Gradients of one batch as in a training step (BN in training mode, free phase
        from zero states), bit for bit what ``ffebm grad`` computes with the same weights,
        batch and settings.

        ``algo``: ``"ep"`` (BP-EP chaining), ``"id-exact"`` or ``"id-reference"`` (truncated
        BPTT; refused on resistive blocks). ``beta``, ``t1``, ``t2``, ``tol`` default to the
        preset's or run's (``tol=0`` disables a default tolerance). ``variant`` (EP only):
        ``"centered"`` (contrasts the +beta and -beta states, error O(beta²)),
        ``"positive"`` (+beta against the free state) or ``"negative"`` (free state
        against -beta), both O(beta); default the preset's or run's, else centered.
        ``bn_compat``: True updates BN running statistics at every feedforward evaluation,
        as the reference code does, False once per batch; default the preset's or run's.
        ``update_bn``: apply the step's BN running-statistics update to the model
        (otherwise it is only reported in ``bn_after``). :meth:`algorithm` shows the
        settings a call uses."""
        d = self._net.gradients(
            to_numpy(x), to_numpy(y), algo, t1, t2, beta, tol, variant, bn_compat, update_bn
        )
        return Gradients(
            d["grads"], d["loss"], d["logits"], d["sweeps"], d["bn_after"], d["seconds"]
        )

    def gdd_report(
        self,
        x: Any,
        y: Any,
        *,
        beta: Optional[float] = None,
        t1: Optional[int] = None,
        t2: Optional[int] = None,
        variant: Optional[str] = None,
        coords: int = 4,
        seed: int = 0,
        transients: bool = True,
    ) -> Dict[str, Any]:
        """The whole static gradient analysis of one batch (``gdd.json`` of ``ffebm gdd``):
        per tensor EP (with ``variant``, see :meth:`gradients`) against ID-exact and
        ID-reference, and with ``transients`` the EP estimate after t nudged sweeps against
        ID truncated to t sweeps for ``coords`` coordinates per tensor (chosen with
        ``seed``)."""
        return cast(
            Dict[str, Any],
            json.loads(
                self._net.gdd(
                    to_numpy(x), to_numpy(y), t1, t2, beta, variant, coords, seed, transients
                )
            ),
        )

    def gdd(
        self,
        x: Any,
        y: Any,
        *,
        beta: Optional[float] = None,
        t1: Optional[int] = None,
        t2: Optional[int] = None,
        variant: Optional[str] = None,
        as_frame: Optional[bool] = None,
    ) -> Union[Dict[str, List[Any]], Any]:
        """EP against ID per parameter tensor for one batch (the table of ``ffebm gdd``'s
        gdd.csv: cosine, relative error, norm ratio and sign agreement against ID-exact and
        ID-reference). A pandas DataFrame when pandas is installed (or ``as_frame=True``),
        else a dict of columns (``as_frame=False`` forces the dict)."""
        rep = self.gdd_report(
            x, y, beta=beta, t1=t1, t2=t2, variant=variant, coords=0, transients=False
        )
        cols: Dict[str, List[Any]] = {c: [] for c in GDD_COLUMNS}
        for t in rep["tensors"]:
            cols["tensor"].append(t["name"])
            cols["block"].append(t["block"])
            for variant in ("exact", "reference"):
                a = t[f"vs_id_{variant}"]
                cols[f"cos_id_{variant}"].append(a["cosine"])
                cols[f"rel_error_id_{variant}"].append(a["rel_error"])
                cols[f"norm_ratio_id_{variant}"].append(a["norm_ratio"])
                cols[f"sign_agreement_id_{variant}"].append(a["sign_agreement"])
        if as_frame is False:
            return cols
        try:
            import pandas as pd  # type: ignore[import-untyped, unused-ignore]
        except ImportError:
            if as_frame:
                raise
            return cols
        return pd.DataFrame(cols)

    def time_gradients(
        self,
        x: Any,
        y: Any,
        *,
        beta: Optional[float] = None,
        t1: Optional[int] = None,
        t2: Optional[int] = None,
    ) -> float:
        """Seconds one EP ``compute_gradients`` takes inside Rust on this batch (no argument
        conversion, no result conversion): the baseline for measuring the binding's cost."""
        return self._net.time_gradients(to_numpy(x), to_numpy(y), t1, t2, beta)
