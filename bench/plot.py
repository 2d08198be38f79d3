"""Charts from the benchmarks' JSON output, written as PNGs next to this file (shown in the
README and docs/performance.md).

    python bench/plot.py [--results bench/results] [--out bench]

Reads whichever of these exist (each written by its benchmark's --json option):
  sweep_cpu.json    bench_sweep.py  -> adamw_ms_vs_params.png, adamw_ms_vs_tensors.png
  bench_cpu.json    bench_cpu.py    -> bandwidth_fraction.png
  loss_curves.json  loss_curves.py  -> loss_curves.png
"""

import argparse
import json
import pathlib

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402

HERE = pathlib.Path(__file__).resolve().parent
# One colour and marker per implementation, the same in every chart.
STYLE = {
    "torch for-loop": dict(color="#9e9e9e", marker="o"),
    "torch foreach": dict(color="#4c72b0", marker="s"),
    "torch fused": dict(color="#dd8452", marker="^"),
    "genesis": dict(color="#2ca02c", marker="D"),
}


def machine_line(data):
    m = data["machine"]
    cpu = m.get("cpu") or m.get("CPU", "?")
    threads = m.get("threads") or m.get("threads (torch and genesis)", "?")
    return f"{cpu}, threads: {str(threads).split()[0]}"


def plot_sweep(data, sweep, x_of, xlabel, title, path):
    rows = [r for r in data["results"] if r["sweep"] == sweep]
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=110)
    for impl, style in STYLE.items():
        points = sorted((x_of(r), r["ms_per_step"]) for r in rows if r["impl"] == impl)
        if points:
            xs, ys = zip(*points)
            ax.plot(xs, ys, label=impl, linewidth=2, **style)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("ms per step (median, lower is better)")
    ax.set_title(f"{title}\n{machine_line(data)}", fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_bandwidth(data, path):
    rows = [r for r in data["results"] if r["workload"] == "large"]
    ops = list(dict.fromkeys(r["op"] for r in rows))
    impls = [i for i in STYLE if any(r["impl"] == i for r in rows)]
    width = 0.8 / len(impls)
    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=110)
    for k, impl in enumerate(impls):
        xs, ys = [], []
        for j, op in enumerate(ops):
            match = [r for r in rows if r["op"] == op and r["impl"] == impl]
            if match:
                xs.append(j + (k - (len(impls) - 1) / 2) * width)
                ys.append(100 * match[0]["bandwidth_fraction"])
        ax.bar(xs, ys, width, label=impl, color=STYLE[impl]["color"])
    ax.axhline(100, color="black", linestyle="--", linewidth=1)
    limit = f"measured limit: {data['rmw_gbs']:.1f} GB/s"
    if any("rmw_gbs" in r for r in rows):  # results of bench_cpu.py from 43383b6 on
        limit += " at the start (each op: the larger of it and a probe after its rows)"
    ax.text(len(ops) - 0.5, 101, limit, ha="right", va="bottom", fontsize=8)
    ax.set_xticks(range(len(ops)))
    labels = {r["op"]: f"{r['op']}\n{r['n_tensors']} x {r['numel']:,}, {r['bytes_per_param']} B/param" for r in rows}
    ax.set_xticklabels([labels[op] for op in ops], fontsize=8)
    ax.set_ylabel("% of read-modify-write bandwidth")
    ax.set_title(
        "Bandwidth achieved, as a fraction of the limit measured in the same run\n" + machine_line(data), fontsize=10
    )
    ax.legend(fontsize=8)
    ax.grid(True, axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_losses(data, path):
    examples = data["examples"]
    fig, axes = plt.subplots(2, 4, figsize=(14, 6.5), dpi=100)
    axes = axes.ravel()
    for ax, (name, curve) in zip(axes, examples.items()):
        ax.plot(range(len(curve["losses"])), curve["losses"], color=STYLE["genesis"]["color"])
        ax.set_title(f"examples/{name}.py", fontsize=9)
        ax.set_xlabel(f"logged loss ({curve['unit']})", fontsize=8)
        ax.set_ylabel("loss", fontsize=8)
        ax.grid(True, alpha=0.3)
    configs = data["optimizer_configs"]
    # optimizer_configs: one curve per optimizer family's default setting, so the panel stays
    # readable; the script prints all of them.
    config_ax = axes[len(examples)]
    for name, losses in configs.items():
        if name in (
            "SGD momentum",
            "SGD nesterov",
            "Adam default",
            "Adam amsgrad",
            "AdamW default",
            "AdamW large model",
        ):
            config_ax.plot(losses, label=name)
    config_ax.set_title("examples/optimizer_configs.py", fontsize=9)
    config_ax.set_xlabel("step", fontsize=8)
    config_ax.legend(fontsize=7)
    config_ax.grid(True, alpha=0.3)
    for ax in axes[len(examples) + 1 :]:
        ax.axis("off")
    fig.suptitle("Training loss of the examples (genesis optimizers)")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--results", type=pathlib.Path, default=HERE / "results")
    ap.add_argument("--out", type=pathlib.Path, default=HERE)
    args = ap.parse_args()

    def read(name):
        path = args.results / name
        return json.loads(path.read_text()) if path.exists() else None

    written = []
    if (sweep := read("sweep_cpu.json")) is not None:
        plot_sweep(
            sweep,
            "params",
            lambda r: r["n_tensors"] * r["numel"],
            "parameters (10 tensors)",
            "AdamW step time against parameter count",
            args.out / "adamw_ms_vs_params.png",
        )
        plot_sweep(
            sweep,
            "tensors",
            lambda r: r["n_tensors"],
            "tensors (1000 elements each)",
            "AdamW step time against tensor count",
            args.out / "adamw_ms_vs_tensors.png",
        )
        written += ["adamw_ms_vs_params.png", "adamw_ms_vs_tensors.png"]
    if (cpu := read("bench_cpu.json")) is not None:
        plot_bandwidth(cpu, args.out / "bandwidth_fraction.png")
        written.append("bandwidth_fraction.png")
    if (losses := read("loss_curves.json")) is not None:
        plot_losses(losses, args.out / "loss_curves.png")
        written.append("loss_curves.png")
    if not written:
        raise SystemExit(f"no benchmark results in {args.results}")
    print("wrote", ", ".join(str(args.out / w) for w in written))


if __name__ == "__main__":
    main()
