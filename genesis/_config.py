"""genesis.show_config(): how this copy of genesis was built and what it runs with.

The build facts (version, compiler, CUDA runtime and architectures) are compiled into the
extension from CMakeLists.txt; the CPU kernel variant and the thread count are decided at run
time, so they are read when asked.
"""

from . import _C, _interop

# OpenMP reports its specification as the date it was published (the _OPENMP macro).
_OPENMP_VERSIONS = {
    200505: "2.5",
    200805: "3.0",
    201107: "3.1",
    201307: "4.0",
    201511: "4.5",
    201811: "5.0",
    202011: "5.1",
    202111: "5.2",
    202411: "6.0",
}


def config():
    """The facts ``show_config`` prints, as a dict (for programs and bug reports).

    Keys: ``version``, ``compiler``, ``cpu_kernels`` (the instruction-set variant chosen at run
    time: ``"avx512"``, ``"avx2"`` or ``"baseline"``), ``cpu_kernels_built`` (the variants in the
    build), ``cpu_prefetch`` (whether the reduction rules' software prefetch runs: by default on
    Intel CPUs only; ``GENESIS_CPU_PREFETCH=0`` or ``1`` decides), ``openmp`` (specification
    version or ``None``),
    ``num_threads``, ``cuda_built``, ``cuda_runtime`` and ``cuda_architectures`` (``None``
    without CUDA), ``cuda_devices`` (GPUs visible now; 0 without CUDA), ``torch_checks`` (how a
    step checks torch tensors: ``"batched"`` by torch's guards, ``"per call"`` one torch call per
    fact with ``GENESIS_TENSOR_FACTS=0``, ``"checked path"`` where this torch lacks what the
    one-call step needs; ``None`` without torch: not installed, or ``GENESIS_NO_TORCH=1``).
    """
    info = _C.build_info
    openmp = info["openmp"]
    return {
        "version": _C.__version__,
        "compiler": info["compiler"],
        "cpu_kernels": _C.cpu_isa(),
        "cpu_kernels_built": _C.cpu_isas_built().split(),
        "cpu_prefetch": _C.cpu_prefetch(),
        "openmp": None if openmp is None else _OPENMP_VERSIONS.get(openmp, str(openmp)),
        "num_threads": _C.get_num_threads(),
        "cuda_built": _C.cuda_built(),
        "cuda_runtime": info["cuda_runtime"],
        "cuda_architectures": info["cuda_architectures"],
        "cuda_devices": _C.cuda_device_count() if _C.cuda_built() else 0,
        # registers torch with the core if it is imported (genesis.optim imports it unless GENESIS_NO_TORCH=1)
        "torch_checks": _C.tensor_facts() if _interop._torch() is not None else None,
    }


def show_config():
    """A human-readable summary of the build and run-time configuration, like
    ``torch.__config__.show()``: returns the text (``print(genesis.show_config())``)."""
    c = config()
    lines = [
        f"genesis {c['version']}",
        f"  - C++ compiler: {c['compiler']}",
        f"  - CPU kernels: {c['cpu_kernels']} of {' '.join(c['cpu_kernels_built'])} "
        "(the widest this CPU runs; GENESIS_CPU_ISA=baseline or avx2 caps it)",
        f"  - software prefetch: {'on' if c['cpu_prefetch'] else 'off'} "
        "(Adafactor's passes; on for Intel CPUs, GENESIS_CPU_PREFETCH=0 or 1 decides)",
        f"  - OpenMP: {c['openmp'] or 'not available'}, {c['num_threads']} threads "
        "(OMP_NUM_THREADS or genesis.set_num_threads)",
    ]
    if c["cuda_built"]:
        lines.append(
            f"  - CUDA: built, runtime {c['cuda_runtime']} (linked statically), "
            f"architectures {c['cuda_architectures']}, {c['cuda_devices']} device(s) "
            "visible"
        )
    else:
        lines.append("  - CUDA: not built (CPU-only package)")
    if c["torch_checks"] is not None:
        lines.append(f"  - torch tensors: {_TORCH_CHECKS[c['torch_checks']]}")
    return "\n".join(lines) + "\n"


# How a step checks torch tensors (NOTE: [one-call step] in csrc/python/bindings.cpp).
_TORCH_CHECKS = {
    "batched": "one core call per step, checked in batches by torch's guards (GENESIS_TENSOR_FACTS=0: one by one)",
    "per call": "one core call per step, checked one by one (GENESIS_TENSOR_FACTS=0 or guards not usable here)",
    "checked path": "a core call per param group (this torch lacks what the one-call step needs)",
}
