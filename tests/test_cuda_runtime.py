"""How a CUDA build of genesis finds its CUDA runtime (genesis/_cuda_runtime.py): the
nvidia-cuda-runtime wheel's folders on sys.path (CUDA 13+ and CUDA 12 layouts), a broken
candidate skipped without an exception, and a clear hint when libcudart is missing. Runs
without a GPU: only paths and messages."""

import sys

from genesis import _cuda_runtime


def _fake_wheel(root, sub, name):
    lib = root / "nvidia" / sub / "lib"
    lib.mkdir(parents=True)
    path = lib / name
    path.write_bytes(b"not a shared library")
    return str(path)


def test_wheel_folders_on_sys_path_are_candidates(tmp_path, monkeypatch):
    new = _fake_wheel(tmp_path / "a", "cu13", "libcudart.so.13")
    old = _fake_wheel(tmp_path / "b", "cuda_runtime", "libcudart.so.12")
    monkeypatch.setattr(sys, "path", [str(tmp_path / "a"), str(tmp_path / "b"), str(tmp_path / "none")])
    assert list(_cuda_runtime._wheel_candidates()) == [new, old]


def test_a_broken_candidate_is_skipped(tmp_path, monkeypatch):
    _fake_wheel(tmp_path, "cu13", "libcudart.so.13")
    monkeypatch.setattr(sys, "path", [str(tmp_path)])
    monkeypatch.setattr(_cuda_runtime, "_toolkit_candidates", lambda: iter(()))
    assert _cuda_runtime.preload() is None


def test_a_toolkit_named_by_cuda_home_is_a_candidate(tmp_path, monkeypatch):
    (tmp_path / "lib64").mkdir()
    (tmp_path / "lib64" / "libcudart.so.13").write_bytes(b"")
    (tmp_path / "lib64" / "libcudart.so").write_bytes(b"")  # the unversioned link is not wanted
    monkeypatch.setenv("CUDA_HOME", str(tmp_path))
    assert str(tmp_path / "lib64" / "libcudart.so.13") in list(_cuda_runtime._toolkit_candidates())
    assert str(tmp_path / "lib64" / "libcudart.so") not in list(_cuda_runtime._toolkit_candidates())


def test_missing_runtime_gets_a_hint_naming_the_extra():
    hint = _cuda_runtime.import_error_hint(ImportError("libcudart.so.13: cannot open shared object file"))
    assert isinstance(hint, ImportError) and "genesis[cuda13]" in str(hint)
    assert _cuda_runtime.import_error_hint(ImportError("something else")) is None
