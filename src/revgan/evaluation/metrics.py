"""Paired image metrics (MAE, MSE, PSNR, SSIM) and cycle metrics, for 2D and 3D tensors.

Tensors are ``N×C×H×W`` or ``N×C×D×H×W`` (a lone ``C×H×W`` image is accepted too).
``data_range`` is always explicit: networks work in [-1, 1], so pass ``data_range=2.0`` there;
8-bit files use 255, 16-bit files 65535. SSIM comes from torchmetrics' functional API (it
handles 2D and 3D inputs with one code path); PSNR is ``10·log10(range²/MSE)`` computed here in
float64 from the MSE (torchmetrics' PSNR goes through float32 and is off by ~1e-6 dB).

SSIM uses a Gaussian window of 11 px (sigma 1.5) as in Wang et al. 2004. Images smaller than
that cannot hold the window, so the window shrinks to ``k = min(11, smallest spatial size made
odd)`` with ``sigma = 1.5 * k / 11`` (torchmetrics derives the Gaussian size from sigma, and
that formula yields exactly ``k``). The window is isotropic in 2D and 3D.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor
from torchmetrics.functional.image import structural_similarity_index_measure

from revgan.errors import UserError

SSIM_KERNEL = 11
SSIM_SIGMA = 1.5


def _as_batch(pred: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
    if pred.shape != target.shape:
        raise UserError(
            f"cannot compare images of different shapes {tuple(pred.shape)} and "
            f"{tuple(target.shape)}"
        )
    if pred.dim() == 3:
        # A lone C×H×W image. A 4D tensor always means N×C×H×W (C×D×H×W would be
        # ambiguous), so single volumes must carry their batch dim.
        pred, target = pred.unsqueeze(0), target.unsqueeze(0)
    if pred.dim() not in (4, 5):
        raise UserError(f"expected N×C×H×W or N×C×D×H×W tensors, got shape {tuple(pred.shape)}")
    # float64 keeps PSNR of near-identical 16-bit images exact enough
    return pred.detach().to(torch.float64), target.detach().to(torch.float64)


def ssim_kernel_size(spatial_shape: tuple[int, ...] | torch.Size) -> int:
    """Odd Gaussian window size that fits the smallest spatial side (at most 11)."""
    smallest = min(int(s) for s in spatial_shape)
    k = min(SSIM_KERNEL, smallest if smallest % 2 == 1 else smallest - 1)
    return max(k, 1)


def ssim_per_item(pred: Tensor, target: Tensor, data_range: float) -> Tensor:
    """SSIM per item (mean over channels and positions), shape ``N``."""
    pred, target = _as_batch(pred, target)
    spatial = pred.shape[2:]
    k = ssim_kernel_size(spatial)
    sigma = SSIM_SIGMA * k / SSIM_KERNEL
    dims = len(spatial)
    return structural_similarity_index_measure(
        pred,
        target,
        gaussian_kernel=True,
        sigma=[sigma] * dims,
        kernel_size=[k] * dims,
        reduction="none",
        data_range=float(data_range),
    )


def _psnr(mse: Tensor, data_range: float) -> Tensor:
    """10·log10(range² / MSE) in float64 (torchmetrics' PSNR rounds through float32);
    ``inf`` where MSE is 0."""
    return 10.0 * torch.log10(data_range**2 / mse)


def _check_range(data_range: float) -> float:
    data_range = float(data_range)
    if not math.isfinite(data_range) or data_range <= 0:
        raise UserError(f"data range must be a positive number, got {data_range}")
    return data_range


def paired_metrics_per_item(
    pred: Tensor, target: Tensor, data_range: float
) -> list[dict[str, float]]:
    """MAE, MSE, PSNR (dB) and SSIM for every item of a batch, one dict per item.

    PSNR is ``10·log10(range²/MSE)`` per item and is ``inf`` for identical images.
    """
    data_range = _check_range(data_range)
    pred, target = _as_batch(pred, target)
    reduce_dims = tuple(range(1, pred.dim()))
    diff = pred - target
    mae = diff.abs().mean(dim=reduce_dims)
    mse = diff.pow(2).mean(dim=reduce_dims)
    psnr = _psnr(mse, data_range)
    ssim = ssim_per_item(pred, target, data_range)
    return [
        {"MAE": float(a), "MSE": float(m), "PSNR": float(p), "SSIM": float(s)}
        for a, m, p, s in zip(mae, mse, psnr, ssim, strict=True)
    ]


def _mean_rows(rows: list[dict[str, float]]) -> dict[str, float]:
    return {key: sum(r[key] for r in rows) / len(rows) for key in rows[0]}


def paired_metrics(pred: Tensor, target: Tensor, data_range: float) -> dict[str, float]:
    """MAE, MSE, PSNR and SSIM computed per item, then averaged over the batch."""
    return _mean_rows(paired_metrics_per_item(pred, target, data_range))


def cycle_metrics_per_item(
    real: Tensor, rec: Tensor, data_range: float
) -> list[dict[str, float]]:
    """Cycle-consistency error per item: L1 (mean absolute error) and PSNR of rec vs real."""
    data_range = _check_range(data_range)
    rec, real = _as_batch(rec, real)
    reduce_dims = tuple(range(1, real.dim()))
    diff = rec - real
    l1 = diff.abs().mean(dim=reduce_dims)
    psnr = _psnr(diff.pow(2).mean(dim=reduce_dims), data_range)
    return [{"L1": float(a), "PSNR": float(p)} for a, p in zip(l1, psnr, strict=True)]


def cycle_metrics(real: Tensor, rec: Tensor, data_range: float) -> dict[str, float]:
    """Cycle L1 and PSNR computed per item, then averaged over the batch."""
    return _mean_rows(cycle_metrics_per_item(real, rec, data_range))
