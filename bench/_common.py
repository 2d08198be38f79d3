"""Helpers shared by the benchmarks: machine description, a step timer, the read-modify-write
memory-bandwidth probe and table printing (plain text or Markdown).

Kept free of optimizer specifics so that bench_cpu.py reads as "what is measured" and this file
as "how it is measured".
"""

import os
import platform
import statistics
import time


# --------------------------------------------------------------------------- machine info
def cpu_model():
    """The CPU's marketing name from /proc/cpuinfo (Linux), else whatever platform knows."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def physical_cores():
    """Distinct (physical id, core id) pairs in /proc/cpuinfo; None where it cannot tell
    (e.g. VMs that hide the topology)."""
    try:
        cores, phys = set(), None
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("physical id"):
                    phys = line.split(":", 1)[1].strip()
                elif line.startswith("core id"):
                    cores.add((phys, line.split(":", 1)[1].strip()))
        return len(cores) or None
    except OSError:
        return None


def last_level_cache_bytes():
    """Size of the largest cache cpu0 reports in sysfs (the LLC), or None."""
    base = "/sys/devices/system/cpu/cpu0/cache"
    best = None
    try:
        for entry in os.listdir(base):
            if not entry.startswith("index"):
                continue
            with open(os.path.join(base, entry, "size")) as f:
                text = f.read().strip()
            units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
            size = int(text[:-1]) * units[text[-1]] if text[-1] in units else int(text)
            best = size if best is None else max(best, size)
    except (OSError, ValueError):
        pass
    return best


def total_memory_bytes():
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def fmt_bytes(n):
    if n is None:
        return "unknown"
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} B"


# ---------------------------------------------------------------------------------- timing
def time_steps(step, *, warmup, seconds, min_steps, max_steps, before_each=None):
    """Run ``step()`` ``warmup`` times untimed, then time single calls with perf_counter.

    The number of timed calls adapts to the cost of one call (estimated from the warm-up) so
    that fast kernels get many samples and slow ones do not take minutes: about ``seconds`` of
    timed work, clamped to [min_steps, max_steps]. ``before_each`` (untimed) runs before every
    call, e.g. to restore gradients that the timed call modifies in place.

    Returns the list of per-call durations in seconds; the caller takes the median, which
    ignores the occasional call hit by a page fault, a timer interrupt or another process.
    """
    warm = []
    for _ in range(max(1, warmup)):
        if before_each is not None:
            before_each()
        t0 = time.perf_counter()
        step()
        warm.append(time.perf_counter() - t0)
    # The first call usually builds state (lazily allocated moments, cached plans), so the
    # last warm-up call is the better estimate of one steady-state step.
    estimate = max(warm[-1], 1e-7)
    n = int(min(max_steps, max(min_steps, round(seconds / estimate))))
    times = []
    for _ in range(n):
        if before_each is not None:
            before_each()
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    return times


def median(values):
    return statistics.median(values)


# ---------------------------------------------------------------------- memory bandwidth
def rmw_bandwidth(torch, nbytes, reps, genesis_scale=None):
    """Best-of-``reps`` read-modify-write bandwidth (GB/s, 1e9 bytes) over a float32 array of
    ``nbytes``, far larger than the caches so that DRAM, not cache, is measured.

    Kernels, each counted by the bytes it must move:
      torch x.mul_(c)   read x, write x            8 bytes/element
      torch y.add_(x)   read x and y, write y     12 bytes/element
      genesis scale     genesis' own in-place multiply (the kernel clip_grad_norm_ uses), 8 B/el.
    The maximum over repetitions is reported: bandwidth can only be under-measured (by noise),
    never over-measured, so the best run is the closest to what the machine can do.
    Returns {kernel name: GB/s}.
    """
    n = nbytes // 4
    x = torch.ones(n, dtype=torch.float32)  # ones(): every page touched before timing
    y = torch.ones(n, dtype=torch.float32)
    # 1.0000001 keeps values normal (no denormal slow path) over any number of repetitions.
    kernels = {
        "torch mul_ (8 B/elem)": (lambda: x.mul_(1.0000001), 8),
        "torch add_ (12 B/elem)": (lambda: y.add_(x), 12),
    }
    if genesis_scale is not None:
        scale = genesis_scale(x)
        kernels["genesis scale (8 B/elem)"] = (scale, 8)
    result = {}
    for name, (fn, bytes_per_elem) in kernels.items():
        fn()  # warm-up: thread pools woken, code paged in
        best = 0.0
        for _ in range(reps):
            t0 = time.perf_counter()
            fn()
            dt = time.perf_counter() - t0
            best = max(best, bytes_per_elem * n / dt / 1e9)
        result[name] = best
    return result


# ---------------------------------------------------------------------------------- tables
def format_table(headers, rows, markdown, align=None):
    """Render rows (lists of strings) under headers. ``align`` is a string of 'l'/'r' per
    column (default: first column left, the others right)."""
    if align is None:
        align = "l" + "r" * (len(headers) - 1)
    if markdown:
        sep = ["---" if a == "l" else "---:" for a in align]
        lines = ["| " + " | ".join(headers) + " |", "| " + " | ".join(sep) + " |"]
        lines += ["| " + " | ".join(row) + " |" for row in rows]
        return "\n".join(lines)
    widths = [max(len(str(c)) for c in col) for col in zip(headers, *rows)]

    def line(cells):
        return "  ".join(c.ljust(w) if a == "l" else c.rjust(w) for c, w, a in zip(cells, widths, align))

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(headers), rule] + [line(r) for r in rows])


def run_ratio_benchmark(description, heading, cases):
    """The command line of a benchmark comparing pipelines to torch's in the same run
    (bench_mixed_precision.py, bench_fused_clip.py): ``cases`` are (title, case) pairs where
    ``case(n_tensors, numel, seconds)`` returns rows (label, seconds per step, bytes per
    parameter), torch's first. Prints one table per case with ms/step, GB/s and the speed
    ratio to the first row."""
    import argparse

    import torch

    import genesis

    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--tensors", type=int, default=50)
    ap.add_argument("--numel", type=int, default=1_000_000)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--markdown", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    genesis.set_num_threads(args.threads)
    n_params = args.tensors * args.numel
    print(
        f"{'#### ' if args.markdown else ''}{heading}, {args.tensors} x {args.numel:,} = "
        f"{n_params:,} params, {args.threads} threads, CPU {cpu_model()}, "
        f"torch {torch.__version__}, genesis {genesis.__version__}\n"
    )
    for title, case in cases:
        rows = case(args.tensors, args.numel, args.seconds)
        base = rows[0][1]
        table = [
            [label, f"{sec * 1e3:.3f}", str(b), f"{b * n_params / sec / 1e9:.2f}", f"{base / sec:.2f}x"]
            for label, sec, b in rows
        ]
        print(("#### " if args.markdown else "") + title + "\n")
        print(format_table(["implementation", "ms/step", "B/param", "GB/s", "vs torch"], table, args.markdown))
        print()
