"""benchmarks/bench_quality.py: the facades loader, its smoke run (--quick) and its metrics."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import load_benchmark
from PIL import Image

quality = load_benchmark("bench_quality")


def _facades_like(root: Path, n_train: int = 3, n_test: int = 2) -> None:
    """pix2pix layout: photo (reddish) on the left, labels (blue) on the right."""
    for split, first, n in (("train", 1, n_train), ("test", 1 + n_train, n_test)):
        (root / split).mkdir(parents=True)
        for k in range(first, first + n):
            array = np.zeros((16, 32, 3), np.uint8)
            array[:, :16] = (200, 40 + k, 40)
            array[:, 16:] = (0, 0, 255)
            Image.fromarray(array).save(root / split / f"{k}.jpg", quality=95)


def test_loads_the_pix2pix_layout(tmp_path):
    _facades_like(tmp_path / "f", n_train=11)
    data = quality.load_facades(tmp_path / "f", 16, n_train=10, n_test=5)
    photos, labels = data["train"]
    assert photos.shape == labels.shape == (10, 3, 16, 16)
    assert data["test"][0].shape[0] == 2
    assert photos[:, 0].mean() > 0.4 and photos[:, 2].mean() < -0.4  # left half: the photo
    assert labels[:, 2].mean() > 0.9 and labels[:, 0].mean() < -0.9
    # numeric order (1, 2, ..., 10), not text order (1, 10, 2, ...): image 2 is the second
    assert photos[1, 1].mean() == pytest.approx((40 + 2) / 127.5 - 1, abs=0.03)


def test_missing_data_is_one_clear_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        quality.main(["--dataroot", str(tmp_path / "nowhere"), "--out", str(tmp_path / "q.json")])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "facades data not found" in err[0]


def test_batches_pair_or_unpair():
    photos, labels = torch.arange(6.0).view(6, 1, 1, 1), -torch.arange(6.0).view(6, 1, 1, 1)
    data = {"train": (photos, labels)}
    order = (torch.arange(6), torch.tensor([3, 4, 5, 0, 1, 2]))
    g = torch.Generator().manual_seed(0)
    for step in range(6):
        paired = quality._batch(data, quality.RUNS["paired_revgan"], order, step, g)
        assert paired["A"].item() == -paired["B"].item() == step  # the same image
        unpaired = quality._batch(data, quality.RUNS["cycle_gan"], order, step, g)
        assert unpaired["A"].item() == step and -unpaired["B"].item() == (step + 3) % 6


def test_checkerboard_ratio():
    torch.manual_seed(0)
    smooth = torch.nn.functional.avg_pool2d(torch.randn(2, 3, 34, 34), 3, 1)
    pattern = (torch.arange(32).view(1, 32) + torch.arange(32).view(32, 1)) % 2 * 0.5
    assert quality.checkerboard_ratio(smooth, smooth) == pytest.approx(1.0)
    assert quality.checkerboard_ratio(smooth + pattern, smooth) > 3


def test_quality_quick(tmp_path, capsys):
    out = tmp_path / "q.json"
    quality.main(["--quick", "--runs", "paired_revgan,pix2pix", "--no_curve_fid",
                  "--rev_option", "upsample=resize", "--out", str(out)])
    data = json.loads(out.read_text())
    assert data["settings"]["rev_options"] == {"upsample": "resize"}
    rows = {(r["run"], r["budget"]): r for r in data["results"]}
    assert list(rows) == [("paired_revgan", "iterations"), ("pix2pix", "iterations"),
                          ("paired_revgan", "wallclock")]
    for key, row in rows.items():
        assert "error" not in row, (key, row.get("error"), row.get("traceback"))
        assert row["peak_step_bytes"] > 0 and row["all_nets_params"] > row["generator_params"]
        for m in row["test"].values():
            assert math.isfinite(m["PSNR"]) and -1 <= m["SSIM"] <= 1 and 0 < m["MAE"] <= 2
            assert m["FID"] >= 0 and math.isfinite(m["KID"]) and m["checker"] > 0
    rev, p2p = rows[("paired_revgan", "iterations")], rows[("pix2pix", "iterations")]
    # one bidirectional RevGAN run answers both tasks; the U-Net pix2pix one
    assert set(rev["test"]) == {quality.L2P, quality.P2L} and set(p2p["test"]) == {quality.L2P}
    assert 0 < rev["cycle_L1"] < 2 and p2p["cycle_L1"] is None
    assert [p["iteration"] for p in rev["curve"]] == [6, 12]
    assert "FID" not in rev["curve"][0][quality.L2P]
    # equal wall-clock: RevGAN's iterations fill pix2pix's training time at its own pace
    wall = rows[("paired_revgan", "wallclock")]
    assert wall["wallclock_budget_s"] == p2p["train_time_s"]
    assert wall["iterations"] == max(2, round(p2p["train_time_s"] / rev["s_per_iteration"]))
    status = {t["target"]: t["status"] for t in data["targets"]}
    assert all(v in ("met", "missed") for k, v in status.items() if "labels→photo" in k
               and ": paired_revgan" in k)
    assert all(v == "not run" for k, v in status.items() if "unpaired" in k or "photo→" in k)
    assert Path(data["curves_png"]).stat().st_size > 0
    assert "| paired_revgan | wallclock | labels→photo |" in out.with_suffix(".md").read_text()
    assert "| pix2pix | iterations |" in capsys.readouterr().out
    # an existing result is never replaced without --overwrite (checked before any work)
    with pytest.raises(SystemExit) as exc:
        quality.main(["--quick", "--out", str(out)])
    assert exc.value.code == 2
