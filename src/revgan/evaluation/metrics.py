"""Paired image metrics (MAE, MSE, PSNR, SSIM) and cycle metrics, for 2D and 3D tensors.

Tensors are ``N×C×H×W`` or ``N×C×D×H×W`` (a lone ``C×H×W`` image is accepted too).
``data_range`` is always explicit: networks work in [-1, 1], so pass ``data_range=2.0`` there;
8-bit files use 255, 16-bit files 65535. PSNR is ``10·log10(range²/MSE)`` computed here in
float64 from the MSE (torchmetrics' PSNR goes through float32 and is off by ~1e-6 dB).

SSIM (Wang et al. 2004, K1 0.01, K2 0.03) uses a Gaussian window of 11 px (sigma 1.5) and
reflect-padded borders, one value per position of the input, averaged over channels and
positions. Images smaller than the window get ``k = min(11, smallest spatial size made odd)``
with ``sigma = 1.5 * k / 11``. The window is isotropic in 2D and 3D. It is computed here, in
float64, one item at a time, by filtering separably (one 1D pass per axis), which gives
torchmetrics' values (to ~1e-15) without its dense k^dims window: torchmetrics unfolds that
window over five stacked moment maps (5 x 11³ values per voxel in 3D, ~31 GB for a 96×64×96
volume), while this stays below ~8 copies of one item in float64.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from revgan.errors import UserError

SSIM_KERNEL = 11
SSIM_SIGMA = 1.5


def _as_batch(
    pred: Tensor, target: Tensor, dtype: torch.dtype | None = torch.float64
) -> tuple[Tensor, Tensor]:
    """Checked ``N×C×…`` views of both tensors, detached and cast to ``dtype`` (kept if None)."""
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
    if dtype is None:
        return pred.detach(), target.detach()
    # float64 keeps PSNR of near-identical 16-bit images exact enough
    return pred.detach().to(dtype), target.detach().to(dtype)


def ssim_kernel_size(spatial_shape: tuple[int, ...] | torch.Size) -> int:
    """Odd Gaussian window size that fits the smallest spatial side (at most 11)."""
    smallest = min(int(s) for s in spatial_shape)
    k = min(SSIM_KERNEL, smallest if smallest % 2 == 1 else smallest - 1)
    return max(k, 1)


def _gaussian_window(k: int) -> list[float]:
    """Normalised 1D Gaussian weights of the SSIM window of size ``k`` (sigma 1.5·k/11)."""
    sigma = SSIM_SIGMA * k / SSIM_KERNEL
    x = torch.arange(k, dtype=torch.float64) - (k - 1) / 2
    g = torch.exp(-0.5 * (x / sigma) ** 2)
    return (g / g.sum()).tolist()


def _local_mean(a: Tensor, b: Tensor | None, weights: list[float]) -> Tensor:
    """Gaussian-weighted local mean of ``a`` (or of ``a * b``) over the spatial axes of a
    ``C×…`` tensor, reflect-padded so the result has the input's shape.

    Separable: per spatial axis, a reflect pad then a 1D filter as ``len(weights)`` shifted
    in-place adds. That is a 1D convolution without the ``len(weights)``-fold column buffer
    that ``F.conv*`` builds on CPU (measured: ~11 maps), so at most ~2.2 maps of the input's
    size exist at once.
    """
    x = a if b is None else a * b  # the only reference: each step below frees its input
    k = len(weights)
    half = k // 2
    for axis in range(1, x.dim()):
        n = x.shape[axis]
        if half:
            # reflect (edge not repeated), as F.pad(mode="reflect")
            index = torch.cat([torch.arange(half, 0, -1), torch.arange(n),
                               torch.arange(n - 2, n - 2 - half, -1)]).to(x.device)
            x = x.index_select(axis, index)
        out = x.narrow(axis, 0, n) * weights[0]
        for j in range(1, k):
            out.add_(x.narrow(axis, j, n), alpha=weights[j])
        x = out
        del out  # no second reference: the next pad frees this map
    return x


def _ssim_map_item(pred: Tensor, target: Tensor, data_range: float, k: int) -> Tensor:
    """SSIM map of one ``C×…`` item (float64, same shape)."""
    w = _gaussian_window(k)
    x, y = pred.to(torch.float64), target.to(torch.float64)
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    mu_x = _local_mean(x, None, w)
    mu_y = _local_mean(y, None, w)
    # variances clamped at 0 one by one (round-off can make them slightly negative)
    var = _local_mean(x, x, w).addcmul_(mu_x, mu_x, value=-1).clamp_(min=0)
    var.add_(_local_mean(y, y, w).addcmul_(mu_y, mu_y, value=-1).clamp_(min=0))
    cs = _local_mean(x, y, w).addcmul_(mu_x, mu_y, value=-1)
    del x, y
    cs.mul_(2).add_(c2).div_(var.add_(c2))  # contrast-structure term
    del var
    lum = torch.mul(mu_x, mu_y).mul_(2).add_(c1)
    lum.div_(mu_x.square_().add_(mu_y.square_()).add_(c1))
    return lum.mul_(cs)


def ssim_map(pred: Tensor, target: Tensor, data_range: float) -> Tensor:
    """SSIM at every position (float64, the inputs' batched shape)."""
    data_range = _check_range(data_range)
    pred, target = _as_batch(pred, target, dtype=None)
    k = ssim_kernel_size(pred.shape[2:])
    out = torch.empty(pred.shape, dtype=torch.float64, device=pred.device)
    for i in range(pred.shape[0]):
        out[i] = _ssim_map_item(pred[i], target[i], data_range, k)
    return out


def ssim_per_item(pred: Tensor, target: Tensor, data_range: float) -> Tensor:
    """SSIM per item (mean over channels and positions), shape ``N``, float64. Items are
    processed one at a time, so memory stays a few copies of one item."""
    data_range = _check_range(data_range)
    pred, target = _as_batch(pred, target, dtype=None)
    k = ssim_kernel_size(pred.shape[2:])
    return torch.stack([_ssim_map_item(p, t, data_range, k).mean()
                        for p, t in zip(pred, target, strict=True)])


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
    del diff  # not held through SSIM's own maps
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
