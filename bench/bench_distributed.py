"""Distributed benchmark: sharded optimizer state (genesis.distributed) against DDP, on CPU
with gloo, 2 ranks on this machine; and flat buffers against per-tensor steps in one process.

Part 1 (two processes, one thread each, the same model and data in one run): per training
iteration (forward + backward + gradient reduction + step + parameter all-gather, which is
what a user waits for; ZeRO-2 overlaps its reduction with backward), for
  ddp+genesis   DistributedDataParallel, unsharded genesis AdamW
  zero1         genesis ZeroOptimizer(stage=1), genesis AdamW
  zero2         genesis ZeroOptimizer(stage=2), genesis AdamW
  torch-zero    DDP + torch ZeroRedundancyOptimizer with torch AdamW (foreach)
  zero2-sg      genesis ZeroOptimizer(stage=2, shard_grads=True), genesis AdamW
  zero2-overlap genesis ZeroOptimizer(stage=2, overlap_param_gather=model), genesis AdamW:
                step() only starts the parameter all-gather, the next forward waits for it
                module by module
  ddp+genesis-lamb, zero2-lamb   the same with genesis LAMB (ZeroOptimizer keeps each tensor
                whole on one rank for it: docs/distributed.md)
Iterations run back to back (one barrier before the timed ones), and an iteration's time runs
from the end of the previous one, so whatever one step leaves in flight (zero2-overlap's
gathers) is paid for in the next iteration's forward. It reports the median iteration time, the bytes this rank wrote to its sockets per
iteration (/proc/self/io wchar: gloo's sockets are the only writes during the loop), the
optimizer state bytes this rank holds, and the gradient bytes it keeps between backward and
step.

Part 2 (--flat; one process): genesis AdamW step time over 2000 tensors x 10 and 2000 x 1000
elements, per tensor (today's path) and with the tensors in one FlatParameters buffer.

Part 3 (--collectives; two processes, one thread each): one 40 MB float32 buffer reduce-scattered,
all-gathered and reduced by torch.distributed's gloo collectives and by genesis.distributed.comm's
(point-to-point on gloo: NOTE: [gloo reduce-scatter and all-gather] in
genesis/distributed/comm.py), beside gloo's all-reduce of the same buffer; median of 7.

Usage:
  python bench/bench_distributed.py            # all parts (two or three minutes)
  python bench/bench_distributed.py --quick    # smaller model, fewer steps (smoke run)
"""

import argparse
import datetime
import os
import socket
import statistics
import sys
import time

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import genesis
from genesis.distributed import FlatParameters, ZeroOptimizer, comm

WIDTH, LAYERS, BATCH = 2304, 4, 16  # 4 x (2304^2 + 2304) = 21.2M parameters


def _wchar():
    with open("/proc/self/io") as f:
        return int(next(line for line in f if line.startswith("wchar")).split()[1])


def _model(width, layers):
    torch.manual_seed(0)
    mods = []
    for _ in range(layers):
        mods += [torch.nn.Linear(width, width), torch.nn.Tanh()]
    return torch.nn.Sequential(*mods)


def _state_bytes(opt):
    if isinstance(opt, ZeroOptimizer):
        return opt.local_state_bytes()
    inner = getattr(opt, "optim", opt)  # ZeroRedundancyOptimizer keeps the local optimizer here
    return sum(
        v.numel() * v.element_size()
        for s in inner.state.values()
        for k, v in s.items()
        if isinstance(v, torch.Tensor) and k != "step"
    )


def _grad_bytes(net, opt):
    if isinstance(opt, ZeroOptimizer):
        return opt.local_gradient_bytes()
    return sum(p.grad.numel() * p.grad.element_size() for p in net.parameters() if p.grad is not None)


def _setup(name, width, layers):
    from torch.distributed.optim import ZeroRedundancyOptimizer
    from torch.nn.parallel import DistributedDataParallel

    model = _model(width, layers)
    cls = genesis.optim.LAMB if name.endswith("-lamb") else genesis.optim.AdamW
    name = name.removesuffix("-lamb")
    if name == "ddp+genesis":
        net = DistributedDataParallel(model)
        return net, cls(net.parameters(), lr=1e-4)
    if name == "torch-zero":
        net = DistributedDataParallel(model)
        return net, ZeroRedundancyOptimizer(net.parameters(), optimizer_class=torch.optim.AdamW, lr=1e-4)
    stage = 1 if name == "zero1" else 2
    return model, ZeroOptimizer(
        model.parameters(),
        cls,
        stage=stage,
        shard_grads=name == "zero2-sg",
        overlap_param_gather=model if name == "zero2-overlap" else None,
        lr=1e-4,
    )


SETUPS = (
    "ddp+genesis",
    "zero1",
    "zero2",
    "zero2-overlap",
    "torch-zero",
    "zero2-sg",
    "ddp+genesis-lamb",
    "zero2-lamb",
)


def _worker(rank, world_size, port, width, layers, steps, setups, batch, queue):
    _init(rank, world_size, port)
    x = torch.randn(batch, width, generator=torch.Generator().manual_seed(rank))
    rows = {}
    for name in setups:
        net, opt = _setup(name, width, layers)
        times, sent = [], []
        dist.barrier()
        w0, t0 = _wchar(), time.perf_counter()
        for i in range(steps + 2):  # two warm-up iterations
            net(x).square().mean().backward()
            opt.step()
            grads = _grad_bytes(net, opt)
            opt.zero_grad()
            t1, w1 = time.perf_counter(), _wchar()
            if i >= 2:
                times.append(t1 - t0)
                sent.append(w1 - w0)
            t0, w0 = t1, w1
        if isinstance(opt, ZeroOptimizer):
            opt.wait_param_gather()
        rows[name] = (statistics.median(times), statistics.median(sent), _state_bytes(opt), grads)
        del net, opt
    queue.put((rank, rows))
    dist.barrier()
    dist.destroy_process_group()


def _two_ranks(worker, *args):
    """Run worker(rank, world_size, port, *args, queue) in two spawned processes; returns
    {rank: what each put on the queue}."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=worker, args=(r, 2, port, *args, queue)) for r in range(2)]
    for p in procs:
        p.start()
    results = dict(queue.get(timeout=1800) for _ in procs)
    for p in procs:
        p.join(60)
        if p.is_alive():
            p.terminate()
    return results


def _init(rank, world_size, port):
    torch.set_num_threads(1)
    genesis.set_num_threads(1)
    dist.init_process_group(
        "gloo",
        init_method=f"tcp://127.0.0.1:{port}",
        rank=rank,
        world_size=world_size,
        timeout=datetime.timedelta(seconds=300),
    )


def distributed_part(width, layers, steps, setups=SETUPS, batch=BATCH):
    results = _two_ranks(_worker, width, layers, steps, setups, batch)
    params = layers * (width * width + width)
    print(
        f"\n2 ranks, gloo, 1 thread each; model {params / 1e6:.1f}M float32 parameters "
        f"({layers} x Linear({width}, {width})), batch {batch} per rank; median of {steps} "
        "iterations; rank 0's numbers\n"
    )
    print("| setup | iteration ms | MB sent / iteration | state MB / rank | grad MB / rank | vs ddp+genesis time |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    base = results[0].get("ddp+genesis", next(iter(results[0].values())))[0]
    for name, (t, sent, state, grads) in results[0].items():
        print(
            f"| {name} | {t * 1e3:.1f} | {sent / 1e6:.1f} | {state / 1e6:.1f} | {grads / 1e6:.1f} | {base / t:.2f}x |"
        )


def _collectives_worker(rank, world_size, port, numel, reps, queue):
    _init(rank, world_size, port)
    data = torch.randn(numel, generator=torch.Generator().manual_seed(rank))
    full = data.clone()
    piece = torch.empty(numel // world_size)
    mine = full[rank * piece.numel() : (rank + 1) * piece.numel()]
    summed = data.clone()  # its values grow over the rounds: only the time matters
    pool = comm.BufferPool(1)
    cases = {
        "all-reduce (gloo)": lambda: dist.all_reduce(full),
        "reduce-scatter (gloo)": lambda: dist.reduce_scatter_tensor(piece, data),
        "reduce-scatter (genesis)": lambda: comm.reduce_scatter(piece, data, None, pool=pool),
        "all-gather (gloo)": lambda: dist.all_gather_into_tensor(full, mine.clone()),
        "all-gather (genesis)": lambda: comm.all_gather(full, mine, None),
        "reduce to rank 0 (gloo)": lambda: dist.reduce(summed, 0),
        "reduce to rank 0 (genesis)": lambda: comm.reduce(summed, 0, None, pool=pool),
    }
    times = {name: [] for name in cases}
    for _ in range(reps + 1):  # the first round warms up
        for name, fn in cases.items():
            dist.barrier()
            w0, t0 = _wchar(), time.perf_counter()
            fn()
            times[name].append((time.perf_counter() - t0, _wchar() - w0))
    queue.put((rank, {name: (statistics.median(t for t, _ in v[1:]), v[-1][1]) for name, v in times.items()}))
    dist.barrier()
    dist.destroy_process_group()


def collectives_part(numel, reps):
    results = _two_ranks(_collectives_worker, numel, reps)
    print(
        f"\n2 ranks, gloo, 1 thread each: one float32 buffer of {numel * 4 / 1e6:.0f} MB; median of {reps}; "
        "rank 0's time, both ranks' bytes\n"
    )
    print("| collective | ms | MB sent by both ranks |")
    print("| --- | ---: | ---: |")
    for name, (t, sent) in results[0].items():
        print(f"| {name} | {t * 1e3:.1f} | {(sent + results[1][name][1]) / 1e6:.1f} |")


def _time(fn, reps):
    fn()
    fn()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def flat_part(reps, threads):
    torch.set_num_threads(threads)
    genesis.set_num_threads(threads)
    print(f"\nOne process, {threads} thread(s): genesis AdamW step, median of {reps}\n")
    print("| tensors x elements | per tensor ms | flat buffer ms | speed-up | torch fused ms |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for count, numel in ((2000, 10), (2000, 1000)):

        def params(numel=numel, count=count):
            torch.manual_seed(0)
            ps = [torch.randn(numel, requires_grad=True) for _ in range(count)]
            for p in ps:
                p.grad = torch.randn(numel)
            return ps

        per_tensor = genesis.optim.AdamW(params(), lr=1e-4)
        flat = FlatParameters(params())
        flat_opt = genesis.optim.AdamW(flat.param_groups, lr=1e-4)
        fused = torch.optim.AdamW(params(), lr=1e-4, fused=True)
        t_tensor = _time(per_tensor.step, reps)
        t_flat = _time(flat_opt.step, reps)
        t_fused = _time(fused.step, reps)
        print(
            f"| {count} x {numel} | {t_tensor * 1e3:.3f} | {t_flat * 1e3:.3f} | "
            f"{t_tensor / t_flat:.1f}x | {t_fused * 1e3:.3f} |"
        )


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--distributed", action="store_true", help="only part 1")
    parser.add_argument("--flat", action="store_true", help="only part 2")
    parser.add_argument("--collectives", action="store_true", help="only part 3")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch", type=int, default=BATCH, help="part 1's batch per rank")
    parser.add_argument("--setups", default=",".join(SETUPS), help="part 1's setups, comma-separated")
    args = parser.parse_args(argv)
    width, layers, steps, reps = (WIDTH, LAYERS, 10, 50) if not args.quick else (256, 2, 3, 5)
    print(
        f"# bench_distributed on {os.cpu_count()} CPU(s), torch {torch.__version__}, "
        f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC"
    )
    every = not (args.distributed or args.flat or args.collectives)
    if every or args.distributed:
        distributed_part(width, layers, steps, tuple(args.setups.split(",")), args.batch)
    if every or args.flat:
        flat_part(reps, args.threads)
    if every or args.collectives:
        collectives_part(10_000_000 if not args.quick else 10_000, 7 if not args.quick else 2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
