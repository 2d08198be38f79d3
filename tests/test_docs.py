"""The documentation builds with warnings as errors (Sphinx, docs/), so a broken link, a missing
page, a bad docstring or an unreadable chart fails the tests. Needs the "docs" extra."""

import pathlib
import subprocess
import sys

import pytest

pytest.importorskip("sphinx")
pytest.importorskip("myst_parser")

ROOT = pathlib.Path(__file__).resolve().parent.parent


def test_docs_build_without_warnings(tmp_path):
    # -W: warnings are errors; -E: no cached environment.
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "sphinx",
            "-W",
            "--keep-going",
            "-E",
            "-q",
            "-b",
            "html",
            str(ROOT / "docs"),
            str(tmp_path / "html"),
        ],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr + out.stdout
    api = (tmp_path / "html" / "api.html").read_text()
    # The reference is generated from the package, not written by hand: a class and a function
    # from different modules appear with their docstrings.
    assert "genesis.optim.AdamW" in api and "clip_grad_norm_" in api
    pages = {p.name for p in (tmp_path / "html").glob("*.html")}
    for page in (
        "semantics",
        "mixed-precision",
        "checkpoint-format",
        "cpp",
        "performance",
        "migrating-from-torch",
        "install",
        "examples",
        "architecture",
    ):
        assert f"{page}.html" in pages, f"docs/{page}.md was not built"


def test_every_example_script_is_in_the_docs():
    examples = {p.name for p in (ROOT / "examples").glob("*.py")}
    text = (ROOT / "docs" / "examples.md").read_text()
    missing = [name for name in sorted(examples) if f"../examples/{name}" not in text]
    assert not missing, f"examples not shown in docs/examples.md: {missing}"
