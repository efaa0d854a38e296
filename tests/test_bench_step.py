"""A smoke run of benchmarks/bench_step.py: two rows of one setting, side by side."""

from __future__ import annotations

import json

import pytest
from helpers import load_benchmark

from revgan.errors import UserError


def _bench_step():
    return load_benchmark("bench_step")


def test_row_filter_keeps_the_baseline_and_writes_ratios(tmp_path):
    bench = _bench_step()
    out = tmp_path / "s.json"
    bench.main(["--settings", "64", "--rows", "^pix2pix U-Net$", "--repeats", "1",
                "--no_plan", "--out", str(out)])
    report = json.loads(out.read_text())
    rows = report["settings"]["64"]["rows"]
    assert set(rows) == {"pix2pix U-Net", "pix2pix resnet_9blocks"}  # baseline kept
    unet, base = rows["pix2pix U-Net"], rows["pix2pix resnet_9blocks"]
    assert unet["baseline"] == "pix2pix resnet_9blocks" and base["baseline"] is None
    for row in rows.values():
        assert row["peak_bytes"] > 0 and row["flops"] > 0 and row["s_per_iter"] > 0
    assert unet["memory_ratio"] == pytest.approx(unet["peak_bytes"] / base["peak_bytes"])
    assert unet["time_ratio"] == pytest.approx(unet["s_per_iter"] / base["s_per_iter"])
    assert unet["flops"] < base["flops"]  # the U-Net works at lower resolutions
    assert "| pix2pix U-Net | pix2pix resnet_9blocks |" in out.with_suffix(".md").read_text()
    with pytest.raises(UserError, match="exists"):
        bench.prepare_output(out, overwrite=False)
    with pytest.raises(SystemExit):
        bench.main(["--settings", "99", "--out", str(tmp_path / "t.json")])


def test_both_directions_compares_with_two_pix2pix_runs():
    bench = _bench_step()
    results = {"pix2pix resnet_9blocks": {"model": "pix2pix", "s_per_iter": 2.0,
                                          "peak_bytes": 100},
               "paired_revgan": {"model": "paired_revgan", "s_per_iter": 3.0, "peak_bytes": 80},
               "cycle_gan": {"model": "cycle_gan", "s_per_iter": 1.0, "peak_bytes": 10}}
    out = bench.both_directions(bench.settings()["128"], results)
    assert [b["row"] for b in out] == ["paired_revgan"]
    assert out[0]["time_ratio"] == pytest.approx(3.0 / 4.0)  # against two runs' time
    assert out[0]["memory_ratio"] == pytest.approx(0.8)  # runs one after the other
    assert bench.both_directions(bench.settings()["128"], {"paired_revgan": {}}) == []
