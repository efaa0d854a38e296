"""benchmarks/bench_soak.py: the warm-up is fixed before the run and the verdict keeps it."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

BENCH_DIR = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCH_DIR))  # the script imports benchmarks/harness.py
_spec = importlib.util.spec_from_file_location("_bench_soak_warmup", BENCH_DIR / "bench_soak.py")
soak = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(soak)


def _result(path: Path, **extra) -> Path:
    """A soak result whose RSS jumps by 50 MB at iteration 250, then stays flat."""
    samples = [{"iteration": i, "time_s": i / 10, "heap_bytes": 20 * soak.MB,
                "rss_bytes": (100 + (50 if i >= 250 else 0)) * soak.MB}
               for i in range(0, 1001, 50)]
    path.write_text(json.dumps({"settings": {"warmup": 200}, "samples": samples, **extra}))
    return path


def test_resummarize_keeps_the_runs_own_warmup(tmp_path):
    results = soak.resummarize(_result(tmp_path / "a.json"), max_slope=2.0)
    assert results["settings"]["warmup"] == 200
    assert results["summary"]["warmup_iteration"] == 200
    assert results["target"]["status"] == "MISS"  # the jump lies after the warm-up
    # a file re-summarised at a later warm-up by the old script goes back to the run's own
    old = _result(tmp_path / "b.json", resummarized={"previous_warmup": 200})
    json_text = json.loads(old.read_text())
    json_text["settings"]["warmup"] = 500
    old.write_text(json.dumps(json_text))
    again = soak.resummarize(old, max_slope=2.0)
    assert again["summary"]["warmup_iteration"] == 200 and "resummarized" not in again
    assert again["target"]["status"] == "MISS"


def test_a_warmup_cannot_be_chosen_after_the_run():
    with pytest.raises(soak.UserError, match="warm-up its run recorded"):
        soak.parse_args(["--from_json", "x.json", "--warmup", "500"])
    assert soak.parse_args([]).warmup == 500  # the default, fixed before any run
    assert soak.parse_args(["--warmup", "300"]).warmup == 300
