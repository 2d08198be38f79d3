"""Runs a test case in a child interpreter, so that a crash (a segfault from a stale pointer)
fails that one test instead of killing the whole pytest run.

A case is Python source; it reports its findings by calling ``report(**values)`` (JSON-able
values), which the parent receives as a dict. genesis, torch (when installed), numpy and the
tests' ``reference`` module are importable in the child.
"""

import json
import os
import subprocess
import sys
import textwrap

_TESTS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_PRELUDE = f"""
import json, sys
sys.path.insert(0, {_TESTS!r})
def report(**values):
    print("REPORT " + json.dumps(values), flush=True)
"""


def run_case(source, setup="", timeout=300):
    """Run `setup` then `source` in a fresh interpreter; return what `source` reported (a
    dict). Fails with the child's output if it crashed, raised or reported nothing."""
    code = _PRELUDE + textwrap.dedent(setup) + "\n" + textwrap.dedent(source)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout)
    tail = (proc.stdout[-3000:] + "\n" + proc.stderr[-3000:]).strip()
    assert proc.returncode == 0, f"child exited with {proc.returncode}:\n{tail}"
    reports = [line[len("REPORT ") :] for line in proc.stdout.splitlines() if line.startswith("REPORT ")]
    assert reports, f"child reported nothing:\n{tail}"
    return json.loads(reports[-1])


def facts_prelude(facts):
    """A child's first lines: torch's batched tensor facts on (the default) or off
    (GENESIS_TENSOR_FACTS=0; NOTE: [batched tensor facts] in csrc/python/bindings.cpp)."""
    return "import os\nos.environ['GENESIS_TENSOR_FACTS'] = '0'\n" if facts == "off" else ""


# Source for a child: a torch.Tensor subclass and a torch function mode that passes every call
# through, the two things that keep a step or a clip off its guarded paths.
ODD_TENSORS = """
import torch

class Sub(torch.Tensor):
    pass

class Passthrough(torch.overrides.TorchFunctionMode):
    def __torch_function__(self, func, types, args=(), kwargs=None):
        return func(*args, **(kwargs or {}))
"""
