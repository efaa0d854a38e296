"""Smoke runs of benchmarks/bench_soak.py (--quick) and its arithmetic (bench_quality.py:
tests/test_bench_quality.py)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

BENCH_DIR = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCH_DIR))  # the scripts import benchmarks/harness.py


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"_bench_{name}", BENCH_DIR / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


soak = _load("bench_soak")


def test_smoke_soak_quick(tmp_path):
    """A smoke run: 40 iterations say nothing about a leak; what is checked is that the run
    samples, writes and judges as specified (the verdict follows from the fitted slope)."""
    out = tmp_path / "s.json"
    soak.main(["--quick", "--out", str(out), "--work_dir", str(tmp_path / "work")])
    data = json.loads(out.read_text())
    assert data["iterations_run"] == 40
    its = [s["iteration"] for s in data["samples"]]
    assert its == list(range(0, 41, 4))
    assert all(s["rss_bytes"] > 0 and s["heap_bytes"] > 0 for s in data["samples"])
    outputs = data["outputs"]
    assert outputs["checkpoint_files"] > 0 and outputs["tensorboard_event_files"] >= 1
    assert outputs["html_page"] and outputs["loss_log_lines"] >= 4
    summary = data["summary"]
    assert summary["warmup_iteration"] == 8 and summary["end_iteration"] == 40
    assert summary["rss"]["end_mb"] == data["samples"][-1]["rss_bytes"] / soak.MB
    target, slope = data["target"], summary["rss"]["fit_slope_mb_per_1000_iterations"]
    flat = abs(slope) <= target["max_rss_slope_mb_per_1000_iterations"]
    assert target["status"] == ("PASS" if flat else "MISS")
    assert "RSS (/proc/self/statm)" in out.with_suffix(".md").read_text()


def test_soak_summary_slope():
    # RSS grows 1 MB per 100 iterations after a jump during warm-up; heap stays flat
    samples = [{"iteration": i, "rss_bytes": (100 + (50 if i >= 100 else 0) + i / 100) * soak.MB,
                "heap_bytes": 20 * soak.MB} for i in range(0, 1001, 50)]
    summary = soak.summarize(samples, warmup=100)
    assert summary["warmup_iteration"] == 100 and summary["end_iteration"] == 1000
    assert summary["rss"]["growth_mb"] == pytest.approx(9.0)
    assert summary["rss"]["mb_per_1000_iterations"] == pytest.approx(10.0)
    assert summary["rss"]["fit_slope_mb_per_1000_iterations"] == pytest.approx(10.0)
    assert summary["heap"]["fit_slope_mb_per_1000_iterations"] == pytest.approx(0.0, abs=1e-9)
    with pytest.raises(soak.UserError):
        soak.summarize(samples[:3], warmup=100)
    # the verdict: a 10 MB / 1000 iterations slope misses a 5 MB bound and meets a 20 MB one
    results = {"summary": summary}
    soak.set_target(results, 5.0)
    assert results["target"]["status"] == "MISS"
    soak.set_target(results, 20.0)
    assert results["target"]["status"] == "PASS"


def test_epoch_split():
    assert soak.epoch_split(2000, 8) == (125, 125, 2000)
