"""genesis: compiled, fused optimizers for deep-learning training.

``genesis.optim`` mirrors ``torch.optim`` (its optimizers are torch.optim.Optimizer instances where
torch is installed; Lion and LAMB besides torch's rules; lr_scheduler) and updates whole parameter groups
in one call into a C++ core; ``genesis.nn.utils`` clips gradients;
``genesis.save`` / ``genesis.load`` write and read safe checkpoints; ``genesis.amp`` and
``genesis.autocast`` handle mixed precision.
"""

try:
    from . import _C
except ImportError as error:  # a CUDA build whose runtime is not next to it: look on sys.path
    from . import _cuda_runtime

    if _cuda_runtime.preload() is None:
        hint = _cuda_runtime.import_error_hint(error)
        if hint is None:
            raise
        raise hint from error
    from . import _C

from . import nn, optim  # noqa: E402
from ._config import show_config  # noqa: E402
from .serialization import CheckpointError, load, save

# The version is set once, in pyproject.toml, and compiled into the extension by CMake.
__version__ = _C.__version__

# Module flag: when True, `with genesis.autocast():` regions run under torch.autocast; when
# False (the default) they do nothing unless asked explicitly (autocast(enabled=True)).
enable_autocast = False

from . import amp  # noqa: E402  (amp and autocast read the flag above)
from .autocast_mode import autocast  # noqa: E402


def get_num_threads():
    """Threads the CPU core uses (OpenMP's setting; OMP_NUM_THREADS works)."""
    return _C.get_num_threads()


def set_num_threads(n):
    """Set the number of threads the CPU core uses, for the whole process (ValueError below 1,
    checked by the core)."""
    _C.set_num_threads(int(n))


__all__ = [
    "optim",
    "nn",
    "amp",
    "autocast",
    "enable_autocast",
    "save",
    "load",
    "CheckpointError",
    "get_num_threads",
    "set_num_threads",
    "show_config",
    "__version__",
]
