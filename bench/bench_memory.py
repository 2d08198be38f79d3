"""Memory an optimizer adds to a training process (CPU, Linux): AdamW's state and the peak of
what its steps allocate on top, for torch's three implementations (for-loop, foreach, fused)
and genesis with float32 and 8-bit state.

    python bench/bench_memory.py --params 50e6 --tensors 50 --markdown

Each implementation runs in a child process of its own: it makes the parameters and their
gradients, resets the kernel's resident-set high-water mark (writing 5 to
/proc/self/clear_refs), builds the optimizer and takes five steps, then reads the mark
(VmHWM). "peak" is that mark minus the resident set before the optimizer existed: the state,
whatever a step allocates transiently (torch's foreach and for-loop updates build temporaries
the size of the parameters, a tensor or a whole list of them at a time), and whatever the
allocator keeps. "state" is the bytes of the state tensors themselves. No timing is involved,
so the numbers do not depend on how busy the machine is.
"""

import argparse
import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common as common  # noqa: E402

IMPLEMENTATIONS = {
    "torch AdamW, for-loop": ("torch", dict(foreach=False)),
    "torch AdamW, foreach": ("torch", dict(foreach=True)),
    "torch AdamW, fused": ("torch", dict(fused=True)),
    "genesis AdamW, float32 state": ("genesis", {}),
    "genesis AdamW, 8-bit state": ("genesis", dict(state_dtype="int8")),
}

# Run in the child: argv = library, options as JSON, elements per tensor, tensors.
CHILD = r"""
import json, sys
import torch
import genesis

library, options, numel, tensors = sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])


def resident():
    status = dict(line.split(":", 1) for line in open("/proc/self/status") if ":" in line)
    return int(status["VmRSS"].split()[0]) * 1024, int(status["VmHWM"].split()[0]) * 1024


params = [torch.nn.Parameter(torch.randn(numel)) for _ in range(tensors)]
for p in params:
    p.grad = torch.randn(numel)
before, _ = resident()
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # the high-water mark restarts from the resident set now
opt = (torch if library == "torch" else genesis).optim.AdamW(params, lr=1e-3, **options)
for _ in range(5):
    opt.step()
_, peak = resident()
state = sum(v.numel() * v.element_size() for s in opt.state.values() for v in s.values() if torch.is_tensor(v))
print(json.dumps({"peak": peak - before, "state": state}))
"""


def measure(library, options, numel, tensors):
    out = subprocess.run(
        [sys.executable, "-c", CHILD, library, json.dumps(options), str(numel), str(tensors)],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--params", type=float, default=50e6, help="parameters in all (default 50e6)")
    ap.add_argument("--tensors", type=int, default=50)
    ap.add_argument("--markdown", action="store_true")
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args()
    if not os.path.exists("/proc/self/clear_refs"):
        sys.exit("bench_memory.py reads Linux's /proc/self/status and resets /proc/self/clear_refs")
    numel = int(args.params) // args.tensors
    params_bytes = 4 * numel * args.tensors
    rows, results = [], {}
    for name, (library, options) in IMPLEMENTATIONS.items():
        r = measure(library, options, numel, args.tensors)
        results[name] = r
        rows.append(
            [
                name,
                common.fmt_bytes(r["state"]),
                common.fmt_bytes(r["peak"]),
                common.fmt_bytes(max(r["peak"] - r["state"], 0)),
                f"{r['peak'] / params_bytes:.2f}",
            ]
        )
    print(
        ("#### " if args.markdown else "")
        + f"AdamW memory, {args.tensors} x {numel:,} float32 parameters ({common.fmt_bytes(params_bytes)})\n"
    )
    headers = ["implementation", "state", "peak above params + grads", "peak - state", "peak / params"]
    print(common.format_table(headers, rows, args.markdown))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"params": args.params, "tensors": args.tensors, "results": results}, f, indent=1)


if __name__ == "__main__":
    main()
