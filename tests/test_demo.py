"""`revgan demo --quick` runs the whole README job end to end on generated data."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from helpers import run_cli
from PIL import Image

from revgan.demo.run import DemoOptions, input_baseline, run_demo
from revgan.errors import UserError


def _row(out: str, label: str) -> list[str]:
    line = next(line for line in out.splitlines() if line.startswith(label))
    return line[len(label):].split()


def test_demo_quick_2d(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    threads = torch.get_num_threads()
    run_cli("demo", "--quick", "--no_progress", "--gpu_ids", "-1", "--threads", "1")
    assert torch.get_num_threads() == threads  # the demo's setting does not leak
    out = capsys.readouterr().out
    for run in ("demo_unpaired_revgan", "demo_paired_revgan"):
        assert (tmp_path / "results" / run / "test_latest" / "index.html").is_file()
        assert (tmp_path / "checkpoints" / run / "web" / "index.html").is_file()
    # each model's MAE/PSNR/SSIM, then the baseline's, in the same columns
    baseline = _row(out, "baseline: input as output")
    assert float(baseline[1]) > 0.2 and 5 < float(baseline[2]) < 20  # labels are far from photos
    for model in ("unpaired_revgan", "paired_revgan"):
        cells = _row(out, model)
        assert all(np.isfinite(float(v)) for v in cells[1:4])
    assert re.search(r"paired_revgan: MAE \d+% (lower|higher) than the input's", out)
    assert re.search(r"demo finished in \d+ s \(CPU \d+ s, 1 thread per process\)", out)
    # a second demo reuses the data and replaces the runs
    run_cli("demo", "--quick", "--no_progress", "--gpu_ids", "-1")


def test_demo_quick_3d(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run_cli("demo", "--3d", "--quick", "--no_progress", "--gpu_ids", "-1")
    out = capsys.readouterr().out
    assert "translated" in out
    assert list((tmp_path / "results" / "demo_paired_revgan3d").glob("translated_*.nii.gz"))
    page = tmp_path / "results" / "demo_paired_revgan3d" / "test_latest" / "index.html"
    assert page.is_file()
    model_mae, input_mae, change = _row(out, "  MAE (input units)")
    model_mae, input_mae = float(model_mae), float(input_mae)
    assert model_mae > 0 and input_mae > 0
    # the relative change printed beside them follows from the two numbers
    assert change.endswith("%") and abs(float(change[:-1]) - 100 * (model_mae / input_mae - 1)) <= 1
    assert re.search(r"model MAE \d+% (lower|higher) than the input's", out)


def test_input_baseline_compares_inputs_with_targets(tmp_path):
    images = tmp_path / "images"
    rng = np.random.default_rng(0)
    target = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
    for label, pixels in (("real_A", np.clip(target.astype(int) + 51, 0, 255)),
                          ("real_B", target)):
        (images / label).mkdir(parents=True)
        Image.fromarray(pixels.astype(np.uint8)).save(images / label / "0000.png")
    got = input_baseline(tmp_path)
    expected = np.abs(np.clip(target.astype(int) + 51, 0, 255) - target).mean() / 127.5
    assert got["MAE"] == pytest.approx(expected, rel=1e-5)


def test_schedule_choice_is_checked():
    with pytest.raises(UserError, match="--quick and --full"):
        run_demo(DemoOptions(quick=True, full=True))
    with pytest.raises(UserError, match="--threads"):
        run_demo(DemoOptions(threads=0))
