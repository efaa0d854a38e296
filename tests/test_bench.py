"""The memory benchmark: structure of its JSON/markdown and the memory property it measures."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import harness as bench  # noqa: E402
from harness import BenchSpec  # noqa: E402

from revgan.errors import UserError

TINY = BenchSpec(dims=2, input_shape=(1, 3, 32, 32), ngf=8)


@pytest.fixture(scope="module")
def results() -> dict:
    return bench.run_memory_benchmark(
        depths=(2, 4), specs=[TINY], configs=("plain_core", "reversible_core", "revgan_G"),
        mem_repeats=1, time_repeats=1, roundtrip_depths=(3,), roundtrip_spec=TINY, log=None)


def _row(results: dict, config: str, depth: int) -> dict:
    (row,) = [m for m in results["measurements"]
              if m["config"] == config and m["depth"] == depth]
    return row


def test_smoke_memory_benchmark_json_and_verdicts(results):
    """A smoke run (timings of a tiny net say nothing); what is checked is the file's
    structure and that every verdict follows from its own numbers."""
    data = json.loads(json.dumps(results))  # serialisable as is
    assert {"machine", "settings", "measurements", "ratios", "targets", "roundtrip"} <= set(data)
    assert data["machine"]["torch"] and data["machine"]["threads"] >= 1
    assert data["settings"]["specs"][0]["core_input_shape"] == [1, 32, 8, 8]
    assert len(data["measurements"]) == 6
    for m in data["measurements"]:
        assert m["time_s"] > 0 and m["grad_bytes"] > 0 and m["param_bytes"] > 0
    ratio = [r for r in data["ratios"]["memory"] if r["config"] == "plain_core"][0]
    assert ratio["depths"] == [4, 2]
    assert data["targets"]
    for target in data["targets"]:
        meets = target["measured"] <= target["bound"]
        assert target["status"] == ("PASS" if meets else "MISS"), target


def test_reversible_core_holds_less_than_plain(results):
    plain2, plain4 = _row(results, "plain_core", 2), _row(results, "plain_core", 4)
    rev4 = _row(results, "reversible_core", 4)
    # Plain autograd keeps every block's activations; the reversible core only its output.
    assert plain4["held_bytes"] > 1.5 * plain2["held_bytes"]
    assert rev4["held_bytes"] < plain4["held_bytes"] / 4
    # Without per-parameter graph bookkeeping the reversible core holds exactly its output,
    # whatever the depth.
    rev2 = _row(results, "reversible_core", 2)
    assert abs(rev4["held_frozen_bytes"] - rev2["held_frozen_bytes"]) <= 1024
    assert rev4["held_frozen_bytes"] < 1.2 * 32 * 8 * 8 * 4
    # Gradients are the same tensors in both modes.
    assert rev4["grad_bytes"] == plain4["grad_bytes"]


def test_fixed_point_roundtrip_is_exact_on_grid(results):
    (row,) = results["roundtrip"]
    assert row["fixed_point_grid_err"] == 0.0
    assert row["fixed_point_err"] <= 2.0**-17
    assert row["float_err"] > 0.0  # float sums do round; fixed point is what removes that


def test_markdown_report(results):
    text = bench.markdown_report(results)
    assert "**Held after forward (MB)**" in text and "| (c) core, revgan memory saving |" in text
    assert "ratio 4/2" in text and "## Targets" in text and "## Round-trip error" in text


def test_cli_errors(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(SystemExit) as exc:  # out_dir under a file: cannot be created
        bench.main(["--quick", "--out_dir", str(blocker / "sub")])
    assert exc.value.code == 2
    report = tmp_path / "report.md"
    report.write_text("earlier results")
    with pytest.raises(SystemExit):
        bench.main(["--quick", "--out_dir", str(tmp_path), "--report", str(report)])
    assert report.read_text() == "earlier results"
    with pytest.raises(UserError):
        bench.parse_depths("4,x")
    with pytest.raises(UserError):
        bench.prepare_output(tmp_path, overwrite=True)
