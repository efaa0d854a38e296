"""Metrics against hand-computed values and a direct numpy SSIM; visuals and plots."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image

from revgan.errors import UserError
from revgan.evaluation.metrics import (
    cycle_metrics,
    cycle_metrics_per_item,
    paired_metrics,
    paired_metrics_per_item,
    ssim_kernel_size,
    ssim_map,
    ssim_per_item,
)
from revgan.reporting.plots import plot_curves
from revgan.reporting.visuals import save_display_png, to_display


def _numpy_ssim(x: np.ndarray, y: np.ndarray, data_range: float, k: int, sigma: float) -> float:
    """Wang et al. 2004 SSIM of two H×W arrays: Gaussian window, reflect-padded borders."""
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    half = k // 2
    g = np.exp(-0.5 * (np.arange(-half, half + 1) / sigma) ** 2)
    w = np.outer(g, g) / np.outer(g, g).sum()

    def local_mean(a: np.ndarray) -> np.ndarray:
        p = np.pad(a, half, mode="reflect")
        out = np.zeros_like(a)
        for i in range(a.shape[0]):
            for j in range(a.shape[1]):
                out[i, j] = (p[i:i + k, j:j + k] * w).sum()
        return out

    mx, my = local_mean(x), local_mean(y)
    vx = np.maximum(local_mean(x * x) - mx**2, 0)
    vy = np.maximum(local_mean(y * y) - my**2, 0)
    cxy = local_mean(x * y) - mx * my
    s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
    return float(s.mean())


def test_constant_offset_exact() -> None:
    target = torch.rand(2, 1, 12, 12) * 1.6 - 0.8
    pred = target + 0.1
    m = paired_metrics(pred, target, data_range=2.0)
    assert m["MAE"] == pytest.approx(0.1, abs=1e-6)
    assert m["MSE"] == pytest.approx(0.01, abs=1e-6)
    assert m["PSNR"] == pytest.approx(10 * math.log10(2.0**2 / 0.01), abs=1e-4)
    # same offset in 8-bit units: range 255, offset 12.75 -> same PSNR
    m255 = paired_metrics((pred + 1) * 127.5, (target + 1) * 127.5, data_range=255.0)
    assert m255["MAE"] == pytest.approx(12.75, abs=1e-3)
    assert m255["PSNR"] == pytest.approx(m["PSNR"], abs=1e-4)


def test_identical_images() -> None:
    x = torch.rand(3, 2, 16, 16)
    rows = paired_metrics_per_item(x, x, 1.0)
    assert len(rows) == 3
    for r in rows:
        assert r["MAE"] == 0 and r["MSE"] == 0
        assert r["SSIM"] == pytest.approx(1.0, abs=1e-9)
        assert math.isinf(r["PSNR"])


def test_ssim_matches_numpy_formula() -> None:
    rng = np.random.default_rng(0)
    x = rng.random((16, 16))
    y = np.clip(x + 0.2 * rng.standard_normal((16, 16)), 0, 1)
    ref = _numpy_ssim(x, y, 1.0, k=11, sigma=1.5)
    got = paired_metrics(torch.from_numpy(y)[None, None], torch.from_numpy(x)[None, None], 1.0)
    assert got["SSIM"] == pytest.approx(ref, abs=1e-6)
    assert 0.1 < ref < 0.99  # a non-trivial case


def test_ssim_tiny_image_uses_smaller_window() -> None:
    assert ssim_kernel_size((8, 20)) == 7
    assert ssim_kernel_size((64, 64, 64)) == 11
    assert ssim_kernel_size((5, 9)) == 5
    rng = np.random.default_rng(1)
    x, y = rng.random((8, 9)), rng.random((8, 9))
    ref = _numpy_ssim(x, y, 1.0, k=7, sigma=1.5 * 7 / 11)
    got = paired_metrics(torch.from_numpy(y)[None, None], torch.from_numpy(x)[None, None], 1.0)
    assert got["SSIM"] == pytest.approx(ref, abs=1e-6)


def test_3d_metrics_and_per_item_order() -> None:
    target = torch.rand(2, 1, 6, 12, 12)
    pred = target.clone()
    pred[1] += 0.05
    rows = paired_metrics_per_item(pred, target, 1.0)
    assert rows[0]["SSIM"] == pytest.approx(1.0, abs=1e-9) and math.isinf(rows[0]["PSNR"])
    assert rows[1]["MAE"] == pytest.approx(0.05, abs=1e-6)
    assert rows[1]["PSNR"] == pytest.approx(10 * math.log10(1 / 0.05**2), abs=1e-3)
    assert rows[1]["SSIM"] < 1.0


def _torchmetrics_ssim(pred: torch.Tensor, target: torch.Tensor, data_range: float) -> torch.Tensor:
    """revgan's previous SSIM: torchmetrics' dense-window SSIM with revgan's window rule."""
    from torchmetrics.functional.image import structural_similarity_index_measure

    k = ssim_kernel_size(pred.shape[2:])
    dims = pred.dim() - 2
    return structural_similarity_index_measure(
        pred.double(), target.double(), gaussian_kernel=True, sigma=[1.5 * k / 11] * dims,
        kernel_size=[k] * dims, reduction="none", data_range=data_range)


@pytest.mark.parametrize("shape", [
    (3, 2, 16, 16), (2, 1, 24, 17), (1, 3, 8, 20), (1, 1, 2, 7), (1, 1, 1, 1),
    (2, 1, 16, 16, 16), (1, 2, 13, 20, 22), (1, 1, 9, 12, 7), (1, 1, 3, 3, 3)])
def test_separable_ssim_equals_torchmetrics(shape) -> None:
    """Same window, constants, data range and reflect borders as the dense-window version,
    with and without the window shrinking, in 2D and 3D, correlated and unrelated pairs."""
    g = torch.Generator().manual_seed(len(shape) * 100 + shape[-1])
    for data_range in (1.0, 2.0, 65535.0):
        target = torch.rand(shape, generator=g) * data_range
        noisy = (target + 0.15 * data_range * torch.randn(shape, generator=g))
        unrelated = torch.rand(shape, generator=g) * data_range
        for pred in (noisy.clamp(0, data_range), unrelated):
            ref = _torchmetrics_ssim(pred, target, data_range)
            got = ssim_per_item(pred, target, data_range)
            assert got.dtype == torch.float64 and got.shape == ref.shape
            torch.testing.assert_close(got, ref, rtol=0, atol=1e-10)
    smap = ssim_map(pred, target, data_range)
    assert smap.shape == pred.shape
    torch.testing.assert_close(smap.flatten(1).mean(1), got, rtol=0, atol=1e-12)


@pytest.mark.parametrize("shape", [(2, 3, 16, 16), (1, 1, 12, 10, 14)])
def test_ssim_of_identical_inputs_is_one(shape) -> None:
    x = torch.rand(shape, dtype=torch.float32)
    torch.testing.assert_close(ssim_per_item(x, x, 1.0), torch.ones(shape[0], dtype=torch.float64))
    flat = torch.full(shape, 0.3)  # zero variance everywhere
    torch.testing.assert_close(ssim_per_item(flat, flat, 1.0),
                               torch.ones(shape[0], dtype=torch.float64))


def test_3d_ssim_memory_stays_a_small_multiple_of_the_volume(require) -> None:
    """A 96×64×96 volume: torchmetrics' dense 11³ window needed ~31 GB (13000× the input);
    the separable filter works one item at a time on a few float64 maps."""
    from revgan.engine.memory import has_heap_counter, peak_memory

    require(has_heap_counter(), "needs glibc's mallinfo2 to measure the heap")
    g = torch.Generator().manual_seed(0)
    target = torch.rand(1, 1, 96, 64, 96, generator=g)
    pred = (target + 0.1 * torch.randn(target.shape, generator=g)).clamp(0, 1)
    input_bytes = target.numel() * target.element_size()
    peak, ssim = peak_memory(lambda: ssim_per_item(pred, target, 1.0), torch.device("cpu"))
    assert 0.5 < float(ssim[0]) < 0.99
    assert peak < 20 * input_bytes, f"peak {peak / input_bytes:.1f}x the input's bytes"


def test_cycle_metrics() -> None:
    real = torch.zeros(1, 1, 8, 8)
    rec = real + 0.5
    assert cycle_metrics(real, rec, 2.0) == pytest.approx(
        {"L1": 0.5, "PSNR": 10 * math.log10(4 / 0.25)})
    assert len(cycle_metrics_per_item(torch.zeros(3, 1, 4, 4), torch.ones(3, 1, 4, 4), 2.0)) == 3


def test_metric_errors_are_user_errors() -> None:
    with pytest.raises(UserError):
        paired_metrics(torch.zeros(1, 1, 8, 8), torch.zeros(1, 1, 8, 9), 2.0)
    with pytest.raises(UserError):
        paired_metrics(torch.zeros(1, 1, 8, 8), torch.zeros(1, 1, 8, 8), 0.0)


def test_to_display_2d_and_3d(tmp_path) -> None:
    gray = torch.linspace(-1, 1, 20).view(1, 4, 5)
    out = to_display(gray)
    assert out.shape == (4, 5, 3) and out.dtype == np.uint8
    assert out[0, 0].tolist() == [0, 0, 0] and out[-1, -1].tolist() == [255, 255, 255]
    rgb = -torch.ones(1, 3, 4, 5)
    rgb[:, 0] = 1.0
    assert to_display(rgb)[0, 0].tolist() == [255, 0, 0]
    assert to_display(torch.zeros(2, 4, 5)).shape == (4, 5, 3)  # first channel
    vol = -torch.ones(1, 1, 6, 8, 10)  # D=6, H=8, W=10 (black)
    vol[0, 0, 3] = 1.0  # the axial mid-slice is white
    m = to_display(vol)
    # axial H×W = 8×10, coronal D×W = 6×10, sagittal D×H = 6×8, 2 px gaps
    assert m.shape == (8, 10 + 2 + 10 + 2 + 8, 3)
    assert (m[:, :10] == 255).all()
    assert (m[:, 10:12] == 0).all()  # gap
    assert (m[3, 12:22] == 255).all() and (m[2, 12:22] == 0).all()  # row D=3 in coronal
    assert to_display(vol[0], dims=3).shape == m.shape
    path = save_display_png(vol, tmp_path / "v.png")
    assert np.asarray(Image.open(path)).shape == m.shape


def test_plot_curves(tmp_path) -> None:
    path = plot_curves({"G_A": [(0.1, 1.0), (0.5, 0.7), (1.0, float("inf"))], "D_A": []},
                       tmp_path / "c.png", "losses", "loss")
    with Image.open(path) as im:
        assert im.size[0] > 100 and im.size[1] > 100
    assert plot_curves({}, tmp_path / "empty.png", "t", "y").is_file()


# --- evaluate_results on tiny results folders ----------------------------------------------


def _save_gray(path, array, dtype) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(array, dtype=dtype)).save(path)


def test_evaluate_paired_2d_and_3d(tmp_path) -> None:
    import json

    import nibabel as nib

    from revgan.evaluation.results import evaluate_results, page_tables, read_metrics_csv

    images = tmp_path / "images"
    ramp8 = np.tile(np.arange(0, 200, 10), (12, 1))  # 12×20, values 0..190
    for item in ("a", "b"):
        _save_gray(images / "real_B" / f"{item}.png", ramp8, np.uint8)
        _save_gray(images / "fake_B" / f"{item}.png", ramp8 + 10, np.uint8)
    ramp16 = ramp8 * 300
    _save_gray(images / "real_A" / "a.png", ramp16, np.uint16)
    _save_gray(images / "fake_A" / "a.png", ramp16 + 1000, np.uint16)
    _save_gray(images / "rec_A" / "a.png", ramp16, np.uint16)  # perfect cycle
    # a volume item (float NIfTI, range 0..500) with its montage PNG that must be ignored
    vol = np.linspace(0, 500, 8 * 12 * 12, dtype=np.float32).reshape(8, 12, 12)
    nib.save(nib.Nifti1Image(vol, np.eye(4)), str(images / "real_B" / "v.nii.gz"))
    nib.save(nib.Nifti1Image(vol + 5, np.eye(4)), str(images / "fake_B" / "v.nii.gz"))
    for label in ("real_B", "fake_B"):
        _save_gray(images / label / "v.png", np.zeros((4, 4)), np.uint8)

    summary = evaluate_results(tmp_path)
    rows = read_metrics_csv(tmp_path / "metrics.csv")
    by_key = {(r["pair"], r["item"]): r for r in rows}
    assert set(by_key) == {("fake_B_vs_real_B", "a"), ("fake_B_vs_real_B", "b"),
                           ("fake_B_vs_real_B", "v"), ("fake_A_vs_real_A", "a"),
                           ("rec_A_vs_real_A", "a")}
    r8 = by_key[("fake_B_vs_real_B", "a")]
    assert r8["MAE_file"] == pytest.approx(10.0) and r8["MSE_file"] == pytest.approx(100.0)
    assert r8["data_range_file"] == 255.0
    assert r8["PSNR_file"] == pytest.approx(10 * math.log10(255**2 / 100), abs=1e-6)
    assert r8["MAE_norm"] == pytest.approx(10 * 2 / 255, abs=1e-6)
    assert r8["PSNR_norm"] == pytest.approx(r8["PSNR_file"], abs=1e-4)
    r16 = by_key[("fake_A_vs_real_A", "a")]
    assert r16["MAE_file"] == pytest.approx(1000.0, abs=1e-3)
    assert r16["data_range_file"] == 65535.0
    assert r16["PSNR_file"] == pytest.approx(10 * math.log10(65535**2 / 1000**2), abs=1e-5)
    rv = by_key[("fake_B_vs_real_B", "v")]
    assert rv["data_range_file"] == pytest.approx(500.0)
    assert rv["MAE_file"] == pytest.approx(5.0, abs=1e-4)
    assert rv["MAE_norm"] == pytest.approx(5.0 * 2 / 500, abs=1e-6)
    assert rv["PSNR_file"] == pytest.approx(10 * math.log10(500**2 / 25), abs=1e-4)
    assert 0 < rv["SSIM_file"] < 1
    cyc = by_key[("rec_A_vs_real_A", "a")]
    assert cyc["L1_file"] == 0 and math.isinf(cyc["PSNR_file"]) and "SSIM_file" not in cyc

    stats = summary["pairs"]["fake_B_vs_real_B"]
    assert stats["count"] == 3 and stats["kind"] == "paired"
    expected_mae = (10 + 10 + 5) / 3
    assert stats["metrics"]["MAE_file"]["mean"] == pytest.approx(expected_mae, abs=1e-4)
    assert stats["metrics"]["MAE_file"]["std"] == pytest.approx(
        np.std([10, 10, 5]), abs=1e-4)
    on_disk = json.loads((tmp_path / "metrics.json").read_text())
    assert on_disk["pairs"]["rec_A_vs_real_A"]["metrics"]["PSNR_file"]["mean"] is None  # inf

    per_item, flat = page_tables(tmp_path)
    assert per_item["a"]["fake_B_vs_real_B/MAE_file"] == pytest.approx(10.0)
    assert flat["fake_B_vs_real_B/MAE_file"] == pytest.approx(expected_mae, abs=1e-4)
    assert math.isinf(flat["rec_A_vs_real_A/PSNR_file"])


def test_evaluate_unpaired_uses_cycle_pairs(tmp_path) -> None:
    from revgan.evaluation.results import evaluate_results, read_metrics_csv

    images = tmp_path / "images"
    base = np.tile(np.arange(20, 220, 10), (16, 1))
    _save_gray(images / "real_A" / "horse1.png", base, np.uint8)
    _save_gray(images / "fake_B" / "horse1.png", base[::-1], np.uint8)
    _save_gray(images / "rec_A" / "horse1.png", base + 4, np.uint8)
    _save_gray(images / "real_B" / "zebra1.png", base, np.uint8)
    _save_gray(images / "fake_A" / "zebra1.png", base[:, ::-1], np.uint8)
    _save_gray(images / "rec_B" / "zebra1.png", base - 2, np.uint8)

    summary = evaluate_results(tmp_path, paired=False)
    assert set(summary["pairs"]) == {"rec_A_vs_real_A", "rec_B_vs_real_B"}
    rows = {r["pair"]: r for r in read_metrics_csv(tmp_path / "metrics.csv")}
    assert rows["rec_A_vs_real_A"]["L1_file"] == pytest.approx(4.0)
    assert rows["rec_B_vs_real_B"]["L1_norm"] == pytest.approx(2 * 2 / 255, abs=1e-6)
    assert rows["rec_B_vs_real_B"]["PSNR_file"] == pytest.approx(
        10 * math.log10(255**2 / 4), abs=1e-6)
    assert rows["rec_A_vs_real_A"]["kind"] == "cycle"
    # auto mode: item names differ between A and B, so no translation pairs either
    assert set(evaluate_results(tmp_path)["pairs"]) == set(summary["pairs"])


def test_evaluate_user_errors(tmp_path) -> None:
    from revgan.evaluation.results import evaluate_results

    with pytest.raises(UserError, match="results folder not found"):
        evaluate_results(tmp_path / "nope")
    (tmp_path / "images" / "real_A").mkdir(parents=True)
    with pytest.raises(UserError, match="nothing to evaluate"):
        evaluate_results(tmp_path)
    with pytest.raises(UserError, match="no 'fake_B' folder"):
        evaluate_results(tmp_path, pairs=[("fake_B", "real_B")])
    _save_gray(tmp_path / "images" / "real_B" / "x.png", np.zeros((8, 8)), np.uint8)
    _save_gray(tmp_path / "images" / "fake_B" / "x.png", np.zeros((8, 9)), np.uint8)
    with pytest.raises(UserError, match="different shapes"):
        evaluate_results(tmp_path)
