"""benchmarks/bench_sr3d.py: its smoke run (--quick, no nilearn), split and verdicts."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
from helpers import load_benchmark

sr3d = load_benchmark("bench_sr3d")


def test_smoke_sr3d_quick(tmp_path, capsys):
    out = tmp_path / "sr3d.json"
    sr3d.main(["--quick", "--runs", "paired_revgan3d,pix2pix3d", "--out", str(out)])
    results = json.loads(out.read_text())
    assert out.with_suffix(".md").read_text().startswith("# 3D x2 super-resolution")
    rows = {r["run"]: r for r in results["rows"]}
    assert list(rows) == ["cubic", "trilinear", "linear_filter", "paired_revgan3d",
                          "pix2pix3d"]
    assert not [r["error"] for r in rows.values() if "error" in r]
    for r in rows.values():
        for where in ("mask", "whole"):
            assert np.isfinite([r[where][k] for k in ("PSNR", "SSIM", "MAE")]).all()
    # cubic interpolation beats the trilinear input on the generated phantom
    assert rows["cubic"]["mask"]["PSNR"] > rows["trilinear"]["mask"]["PSNR"]
    assert results["settings"]["batch"] == 2 and results["settings"]["input_upsampling"] == "cubic"
    assert rows["paired_revgan3d"]["residual"] is True
    assert rows["paired_revgan3d"]["generator_params"] > 0
    # training and held-out parts are disjoint, separated by the gap
    data = results["data"]
    assert data["test_range"][0] - data["train_range"][1] == data["gap"] >= 6
    # each verdict follows from its own numbers
    rev, p2p, cubic = rows["paired_revgan3d"], rows["pix2pix3d"], rows["cubic"]
    expected = [rev["mask"]["PSNR"] - cubic["mask"]["PSNR"] >= 1.5,
                rev["mask"]["PSNR"] >= p2p["mask"]["PSNR"],
                rev["generator_params"] <= 0.6 * p2p["generator_params"]]
    assert [t["verdict"] for t in results["targets"]] == [
        "met" if ok else "missed" for ok in expected]
    capsys.readouterr()


def test_split_leaves_a_gap_and_patches_stay_in_training_part():
    volume = np.arange(24 * 40 * 24, dtype=np.float32).reshape(24, 40, 24)
    parts = sr3d.split({"target": volume, "input": volume, "mask": volume > 0}, gap=8)
    assert parts["train_range"] == [0, 16] and parts["test_range"] == [24, 40]
    draw = sr3d.patch_sampler(parts["train"], 16, seed=0, batch=3)
    for _ in range(7):
        item = draw()
        patch = item["B"].numpy()
        assert patch.shape == (3, 1, 16, 16, 16) and len(item["A_paths"]) == 3
        y = (patch.astype(np.int64) // 24) % 40  # each voxel's index along the split axis
        assert y.max() < 16
        assert len({float(p.mean()) for p in patch}) > 1  # a batch stacks different patches


def test_missing_nilearn_is_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "nilearn", None)  # import nilearn raises ImportError
    with pytest.raises(SystemExit) as exc:
        sr3d.main(["--out", str(tmp_path / "x.json"), "--runs", "pix2pix3d"])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].endswith("needs nilearn: pip install nilearn")


def test_cubic_baseline_is_grid_aligned():
    # a linear ramp: 2x2x2 averaging then aligned cubic interpolation gives it back inside
    ramp = np.broadcast_to(np.arange(24, dtype=np.float32)[None, :, None], (8, 24, 8)).copy()
    up = sr3d.cubic_upsampling(ramp)
    assert up.shape == ramp.shape
    np.testing.assert_allclose(up[:, 6:-6], ramp[:, 6:-6], atol=0.01)  # corner-aligned: 0.8 off


def test_separable_ssim_agrees_with_revgan_metrics():
    import torch

    from revgan.evaluation.metrics import paired_metrics

    g = torch.Generator().manual_seed(0)
    target = torch.rand(24, 20, 22, generator=g) * 2 - 1
    pred = (target + 0.2 * torch.randn(24, 20, 22, generator=g)).clamp(-1, 1)
    ref = paired_metrics(pred[None, None], target[None, None], 2.0)
    got = sr3d.region_metrics(pred.numpy(), target.numpy(), np.ones((24, 20, 22), bool))
    assert got["whole"]["PSNR"] == pytest.approx(ref["PSNR"], abs=1e-6)
    assert got["whole"]["MAE"] == pytest.approx(ref["MAE"], abs=1e-6)
    assert got["whole"]["SSIM"] == pytest.approx(ref["SSIM"], abs=1e-3)
    assert got["mask"] == got["whole"]  # a full mask is the whole region


def test_linear_filter_recovers_a_linear_degradation():
    from scipy.ndimage import correlate

    rng = np.random.default_rng(0)
    kernel = rng.normal(size=(3, 3, 3))
    parts = {}
    for name in ("train", "test"):
        x = rng.normal(size=(10, 12, 9)).astype(np.float32)
        parts[name] = {"input": x, "mask": rng.random(x.shape) > 0.5,
                       "target": (correlate(x.astype(np.float64), kernel, mode="nearest")
                                  + 0.3).astype(np.float32)}
    got = sr3d.linear_filter(parts["train"], parts["test"])
    np.testing.assert_allclose(got, parts["test"]["target"], atol=1e-4)


@pytest.mark.parametrize("argv", [["--batch", "0"], ["--window", "24"], ["--window", "0"]])
def test_bad_batch_or_window_is_a_user_error(argv):
    from revgan.errors import UserError

    with pytest.raises(UserError):
        sr3d.parse_args(argv)
