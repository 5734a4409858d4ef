"""Type stubs of the native module `ffebm._ffebm` (the Rust extension). Use the `ffebm`
package API; this layer takes already-converted arguments in a fixed order."""

from typing import Any, Dict, List, Optional, Tuple, final

import numpy as np

__all__ = [
    "Net",
    "evaluate",
    "preset_json",
    "presets",
    "read_tensors",
    "run_toml_of_json",
    "set_threads",
    "start_run",
    "threads",
    "toml_literal",
    "train",
    "write_tensors",
]

@final
class Net:
    """The native model: an ff-EBM with packed kernels. Use `ffebm.Model`."""

    @staticmethod
    def from_preset(name: str, classes: Optional[int], seed: int) -> Net: ...
    @staticmethod
    def from_toml(text: str, classes: Optional[int], seed: int) -> Net: ...
    @staticmethod
    def from_json(json: str, classes: Optional[int], seed: int) -> Net: ...
    @staticmethod
    def load(path: str, seed: int) -> Net: ...
    def copy(self) -> Net: ...
    def load_weights(self, path: str) -> None: ...
    def set_tensors(self, tensors: Dict[str, np.ndarray], strict: bool) -> None: ...
    def tensors(self) -> Dict[str, np.ndarray]: ...
    def save(self, path: str) -> None: ...
    def config_toml(self) -> str: ...
    def config_json(self) -> str: ...
    def defaults(self) -> Optional[str]: ...
    def algorithm(
        self,
        algo: Optional[str],
        t1: Optional[int],
        t2: Optional[int],
        beta: Optional[float],
        tol: Optional[float],
        variant: Optional[str],
        bn_compat: Optional[bool],
    ) -> str: ...
    @property
    def origin(self) -> str: ...
    @property
    def input_shape(self) -> Tuple[int, int, int]: ...
    @property
    def classes(self) -> int: ...
    @property
    def num_blocks(self) -> int: ...
    @property
    def num_params(self) -> int: ...
    def param_names(self) -> List[str]: ...
    def prepare(self) -> None: ...
    def free_phase(
        self, x: np.ndarray, eval: bool, t1: Optional[int], tol: Optional[float]
    ) -> Dict[str, Any]: ...
    def gradients(
        self,
        x: np.ndarray,
        y: np.ndarray,
        algo: str,
        t1: Optional[int],
        t2: Optional[int],
        beta: Optional[float],
        tol: Optional[float],
        variant: Optional[str],
        bn_compat: Optional[bool],
        update_bn: bool,
    ) -> Dict[str, Any]: ...
    def time_gradients(
        self,
        x: np.ndarray,
        y: np.ndarray,
        t1: Optional[int],
        t2: Optional[int],
        beta: Optional[float],
    ) -> float: ...
    def gdd(
        self,
        x: np.ndarray,
        y: np.ndarray,
        t1: Optional[int],
        t2: Optional[int],
        beta: Optional[float],
        variant: Optional[str],
        coords: int,
        seed: int,
        transients: bool,
    ) -> str: ...

def presets() -> List[str]: ...
def preset_json(name: str, classes: Optional[int] = None) -> str: ...
def toml_literal(json: str) -> str: ...
def run_toml_of_json(json: str) -> str: ...
def set_threads(n: int) -> None: ...
def threads() -> int: ...
def read_tensors(path: str) -> Tuple[Dict[str, np.ndarray], Dict[str, str]]: ...
def write_tensors(path: str, tensors: Dict[str, np.ndarray], metadata: Dict[str, str]) -> None: ...
def evaluate(
    checkpoint: str, sets: List[str], data_dir: Optional[str], seed: int, quiet: bool
) -> str: ...
def train(
    out: str,
    preset: Optional[str],
    config_toml: Optional[str],
    sets: List[str],
    classes: Optional[int],
    epochs: Optional[int],
    data_dir: Optional[str],
    download: bool,
    resume: bool,
    seed: int,
    quiet: bool,
    callback: Optional[Any],
    init: Optional[Net] = None,
) -> Tuple[str, bool, str, Net]: ...
def start_run(
    out: str,
    model: Net,
    preset: Optional[str],
    config_toml: Optional[str],
    sets: List[str],
    classes: Optional[int],
    epochs: Optional[int],
    data_dir: Optional[str],
    download: bool,
    seed: int,
) -> str: ...
