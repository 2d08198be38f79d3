"""Shared pytest setup: tests marked `cuda` run only where torch sees a GPU and genesis was
built with its CUDA backend; elsewhere they are skipped with the reason."""

import pytest


def _cuda_skip_reason():
    try:
        import torch
    except ImportError:
        return "needs torch"
    if not torch.cuda.is_available():
        return "needs an NVIDIA GPU"
    import genesis

    if not genesis._C.cuda_built():
        return "genesis was built without CUDA"
    return None


def pytest_collection_modifyitems(config, items):
    reason = None
    checked = False
    for item in items:
        # The marker, not item.keywords: keywords also hold directory names (a checkout in a
        # folder named "cuda" would otherwise skip every test).
        if item.get_closest_marker("cuda") is None:
            continue
        if not checked:
            reason, checked = _cuda_skip_reason(), True
        if reason:
            item.add_marker(pytest.mark.skip(reason=reason))
