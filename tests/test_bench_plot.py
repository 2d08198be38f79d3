"""The benchmarks' --json output and bench/plot.py, which turns it into the committed charts."""

import json
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
CHARTS = ["adamw_ms_vs_params.png", "adamw_ms_vs_tensors.png", "bandwidth_fraction.png", "loss_curves.png"]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_bench_cpu_writes_json(tmp_path):
    out = tmp_path / "bench_cpu.json"
    subprocess.run(
        [
            sys.executable,
            str(BENCH / "bench_cpu.py"),
            "--quick",
            "--threads",
            "1",
            "--workloads",
            "small",
            "--ops",
            "SGD",
            "--seconds",
            "0.01",
            "--warmup",
            "1",
            "--min-steps",
            "2",
            "--max-steps",
            "3",
            "--json",
            str(out),
        ],
        check=True,
        capture_output=True,
        cwd=tmp_path,
    )
    data = json.loads(out.read_text())
    assert data["benchmark"] == "bench_cpu" and data["rmw_gbs"] > 0
    rows = data["results"]
    assert {r["impl"] for r in rows} >= {"genesis", "torch for-loop", "torch foreach"}
    for r in rows:
        assert (r["op"], r["workload"]) == ("SGD", "small")
        assert r["ms_per_step"] > 0 and r["steps"] >= 2
        # The derived numbers are the table's: bytes moved over time, and that over the op's
        # reference bandwidth, the larger of the run's first probe and one after the op's rows.
        n_params = r["n_tensors"] * r["numel"]
        seconds = r["ms_per_step"] / 1e3
        assert r["gbs"] == pytest.approx(r["bytes_per_param"] * n_params / seconds / 1e9)
        assert r["rmw_gbs"] >= data["rmw_gbs"]
        assert r["bandwidth_fraction"] == pytest.approx(r["gbs"] / r["rmw_gbs"])


def test_bench_memory_writes_json(tmp_path):
    """bench_memory.py's state column is the state arrays' bytes (float32: 8 per parameter and a
    4-byte step per tensor; 8-bit: 2 per parameter, a float32 scale per 256-element block and
    state, and the step), and its peak holds at least that state."""
    if not pathlib.Path("/proc/self/clear_refs").exists():
        pytest.skip("bench_memory.py needs Linux's /proc/self/clear_refs")
    out = tmp_path / "memory.json"
    subprocess.run(
        [sys.executable, str(BENCH / "bench_memory.py"), "--params", "2e6", "--tensors", "4", "--json", str(out)],
        check=True,
        capture_output=True,
        cwd=tmp_path,
    )
    data = json.loads(out.read_text())
    results, n, tensors = data["results"], 2_000_000, 4
    for name, r in results.items():
        expected = 2 * n + 2 * 4 * tensors * -(-(n // tensors) // 256) if "8-bit" in name else 8 * n
        assert r["state"] == expected + 4 * tensors, name
        assert r["peak"] >= 0.95 * r["state"], name
    assert len(results) == 5


def test_plot_draws_every_chart_from_the_committed_results(tmp_path):
    pytest.importorskip("matplotlib")
    subprocess.run(
        [sys.executable, str(BENCH / "plot.py"), "--results", str(BENCH / "results"), "--out", str(tmp_path)],
        check=True,
        capture_output=True,
    )
    for name in CHARTS:
        data = (tmp_path / name).read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 10_000, name


def test_committed_charts_exist_and_are_shown():
    readme = (ROOT / "README.md").read_text()
    for name in CHARTS:
        assert (BENCH / name).read_bytes().startswith(PNG_MAGIC), name
        assert f"bench/{name}" in readme, f"{name} is not shown in the README"
