"""Finds the CUDA runtime a CUDA build of genesis._C links (libcudart.so.<major>), before
_C is imported.

The extension looks for it next to genesis first (its RPATH names the nvidia-cuda-runtime
wheel's folder in the same site-packages, as torch and CuPy do). This covers the other
layouts: the wheel installed in another site-packages folder on sys.path (a venv over system
packages), or a runtime that torch or the system already provides. A CPU-only build needs
nothing and this does nothing for it."""

import ctypes
import glob
import os
import sys


def _wheel_candidates():
    for base in sys.path:
        nvidia = os.path.join(base or ".", "nvidia")
        if not os.path.isdir(nvidia):
            continue
        # CUDA 13+ wheels: nvidia/cu13/lib; CUDA 12 wheels: nvidia/cuda_runtime/lib.
        yield from sorted(glob.glob(os.path.join(nvidia, "cu[0-9]*", "lib", "libcudart.so.*")), reverse=True)
        yield from sorted(glob.glob(os.path.join(nvidia, "cuda_runtime", "lib", "libcudart.so.*")), reverse=True)


def _toolkit_candidates():
    # A toolkit install that is not on the loader's path (CUDA_HOME / CUDA_PATH, /usr/local/cuda).
    roots = [os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda"]
    for root in filter(None, roots):
        for lib in ("lib64", "lib"):
            yield from sorted(glob.glob(os.path.join(root, lib, "libcudart.so.[0-9]*")), reverse=True)


def preload():
    """Load the first libcudart found in an nvidia-cuda-runtime wheel on sys.path (else in a
    CUDA toolkit), globally, so that the dynamic loader resolves _C's dependency to it. Returns
    its path, or None."""
    for path in list(_wheel_candidates()) + list(_toolkit_candidates()):
        try:
            ctypes.CDLL(path, mode=ctypes.RTLD_GLOBAL)
            return path
        except OSError:
            continue
    return None


def import_error_hint(error):
    """A clearer ImportError for a CUDA build whose runtime is missing, or None."""
    if "libcudart" not in str(error):
        return None
    return ImportError(
        f"{error}. This genesis was built with the CUDA backend and loads the CUDA runtime from "
        "the nvidia-cuda-runtime wheel: install it with `pip install genesis[cuda13]` (or "
        "[cuda12], matching the toolkit genesis was built with), or put the toolkit's "
        "libcudart on the loader path"
    )
