"""Sphinx configuration for genesis's documentation (built by .ci/run with -W: warnings fail).

pip install ".[docs]" && python -m sphinx -W -b html docs build/docs
"""

import re

import genesis

project = "genesis"
author = "the genesis authors"
copyright = "2026, the genesis authors"
version = release = genesis.__version__

extensions = ["myst_parser", "sphinx.ext.autodoc", "sphinx.ext.napoleon", "sphinx.ext.intersphinx"]
source_suffix = {".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build"]
# "## Devices" can be linked as [Devices](#devices) within a page and as page.md#devices across.
myst_heading_anchors = 3
myst_enable_extensions = ["colon_fence"]

autodoc_member_order = "bysource"
autodoc_default_options = {"members": True, "show-inheritance": True}
# Where torch is installed the optimizers derive from torch.optim.Optimizer; the reference
# documents genesis's own signatures without importing torch's docs.
autodoc_inherit_docstrings = False

html_theme = "alabaster"
html_title = f"genesis {release}"

# docs/checkpoint-format.md shows the header's shape with <placeholders> in a json block; the
# text is right, only the colouring falls back to plain.
suppress_warnings = ["misc.highlighting_failure"]


# genesis docstrings are plain text with ``literals``; they never use reST hyperlink references.
# A bare name ending in "_" (clip_grad_norm_, zero_) would be read as one and fail the build, so
# the trailing underscore of such names is escaped before docutils sees it.
_BARE_TRAILING_UNDERSCORE = re.compile(r"\b([A-Za-z][\w.]*[A-Za-z0-9])_(?![\w`])")
_LITERAL = re.compile(r"(``.*?``|`.*?`)")


def _escape_trailing_underscores(app, what, name, obj, options, lines):
    for i, line in enumerate(lines):
        # Literal spans (odd items of the split) are kept as they are.
        parts = _LITERAL.split(line)
        lines[i] = "".join(
            part if k % 2 else _BARE_TRAILING_UNDERSCORE.sub(r"\1\\_", part) for k, part in enumerate(parts)
        )


def setup(app):
    app.connect("autodoc-process-docstring", _escape_trailing_underscores)
