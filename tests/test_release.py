"""Release facts: every public name is documented, the version has one source, and
genesis.show_config() reports the build and run-time configuration truthfully."""

import importlib
import importlib.metadata
import importlib.util
import inspect
import json
import os
import pathlib
import re
import subprocess
import sys

import genesis

ROOT = pathlib.Path(__file__).resolve().parent.parent

# The public modules. Names are read from each module's __all__ when the test runs, so
# optimizers and schedulers added later are checked without editing this list.
PUBLIC_MODULES = [
    "genesis",
    "genesis.optim",
    "genesis.optim.lr_scheduler",
    "genesis.nn",
    "genesis.nn.utils",
    "genesis.amp",
]


def public_objects():
    for module_name in PUBLIC_MODULES:
        module = importlib.import_module(module_name)
        assert module.__all__, f"{module_name}.__all__ is empty"
        for name in module.__all__:
            yield f"{module_name}.{name}", getattr(module, name)


def own_docstring(obj):
    # A class's inherited docstring (torch.optim.Optimizer's, say) does not document it:
    # only the class's own __doc__ counts.
    return obj.__dict__.get("__doc__") if inspect.isclass(obj) else obj.__doc__


def test_every_public_name_has_a_docstring():
    undocumented, checked = [], 0
    for qualname, obj in public_objects():
        # Plain values (genesis.enable_autocast, genesis.__version__) cannot carry a docstring;
        # the module docstrings and docs/ describe them.
        if isinstance(obj, (bool, int, float, str)):
            continue
        checked += 1
        doc = own_docstring(obj)
        if not (doc and doc.strip()):
            undocumented.append(qualname)
    assert checked >= 30, f"only {checked} public names found; __all__ lists look truncated"
    assert not undocumented, f"public names without a docstring: {undocumented}"


def test_modules_have_docstrings():
    for module_name in PUBLIC_MODULES:
        doc = importlib.import_module(module_name).__doc__
        assert doc and doc.strip(), f"{module_name} has no module docstring"


def test_all_lists_only_existing_names():
    for module_name in PUBLIC_MODULES:
        module = importlib.import_module(module_name)
        missing = [n for n in module.__all__ if not hasattr(module, n)]
        assert not missing, f"{module_name}.__all__ names missing attributes: {missing}"


def declared_version():
    text = (ROOT / "pyproject.toml").read_text()
    match = re.search(r'^version = "([^"]+)"', text, re.MULTILINE)
    assert match, "pyproject.toml has no version line"
    return match.group(1)


def test_version_has_one_source():
    version = declared_version()
    assert genesis.__version__ == version
    assert importlib.metadata.version("genesis") == version
    # The other files take it from pyproject.toml instead of repeating it.
    assert version not in (ROOT / "CMakeLists.txt").read_text()
    assert version not in (ROOT / "genesis" / "__init__.py").read_text()


def test_config_reports_the_build():
    config = genesis._config.config()
    assert config["version"] == genesis.__version__
    assert re.match(r"(GNU|Clang|AppleClang|IntelLLVM|MSVC) \d+\.\d+", config["compiler"]), config
    assert config["cpu_kernels"] in config["cpu_kernels_built"]
    assert config["cpu_kernels_built"][0] == "baseline"
    assert set(config["cpu_kernels_built"]) <= {"baseline", "avx2", "avx512"}
    assert config["cpu_prefetch"] is genesis._C.cpu_prefetch()
    assert config["num_threads"] == genesis.get_num_threads()
    assert config["cuda_built"] == genesis._C.cuda_built()
    if config["cuda_built"]:
        assert re.fullmatch(r"\d+\.\d+(\.\d+)?", config["cuda_runtime"]), config
        assert re.fullmatch(r"[0-9a-z-]+(,[0-9a-z-]+)*", config["cuda_architectures"]), config
    else:
        assert config["cuda_runtime"] is None and config["cuda_architectures"] is None
        assert config["cuda_devices"] == 0


def test_show_config_text():
    text = genesis.show_config()
    config = genesis._config.config()
    assert text.startswith(f"genesis {genesis.__version__}\n")
    assert config["compiler"] in text
    assert f"CPU kernels: {config['cpu_kernels']} of {' '.join(config['cpu_kernels_built'])}" in text
    assert f"software prefetch: {'on' if config['cpu_prefetch'] else 'off'}" in text
    assert f"{config['num_threads']} threads" in text
    assert ("CUDA: built" in text) == config["cuda_built"]
    assert ("torch tensors: " in text) == (config["torch_checks"] is not None)


def test_config_reports_how_torch_tensors_are_checked():
    """torch's guards are used when this torch has them and they pass genesis's self-test
    (NOTE: [batched tensor facts]); GENESIS_TENSOR_FACTS=0 turns them off; without torch
    (GENESIS_NO_TORCH=1 and not imported: a NumPy user) there is nothing to report."""
    code = "import json, sys, genesis\nif sys.argv[1] == 'torch': import torch\nprint(json.dumps(genesis._config.config()))"
    cases = {("1", "numpy"): None}
    if importlib.util.find_spec("torch") is not None:
        cases.update({("1", "torch"): "batched", ("0", "torch"): "per call"})
    for (facts, imported), expected in cases.items():
        env = dict(os.environ, GENESIS_TENSOR_FACTS=facts)
        if imported == "numpy":
            env["GENESIS_NO_TORCH"] = "1"
        out = subprocess.run(
            [sys.executable, "-c", code, imported], env=env, capture_output=True, text=True, check=True
        )
        assert json.loads(out.stdout)["torch_checks"] == expected, (facts, imported)


def run_config_in_child(env_extra):
    code = "import genesis, json; print(json.dumps(genesis._config.config()))"
    env = dict(os.environ, **env_extra)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def test_config_reads_run_time_choices():
    # The kernel variant and the thread count are read when asked, not frozen at build time.
    forced = run_config_in_child({"GENESIS_CPU_ISA": "baseline", "OMP_NUM_THREADS": "1"})
    assert forced["cpu_kernels"] == "baseline"
    assert forced["num_threads"] == 1
    before = genesis.get_num_threads()
    try:
        genesis.set_num_threads(before + 1)
        assert genesis._config.config()["num_threads"] == before + 1
    finally:
        genesis.set_num_threads(before)


def test_license_matches_declared_license():
    text = (ROOT / "LICENSE").read_text()
    assert "Apache License" in text and "Version 2.0, January 2004" in text
    assert re.search(r'^license = .*"Apache-2.0"', (ROOT / "pyproject.toml").read_text(), re.MULTILINE)
