"""Layer factories chosen by ``dims`` (2 or 3), so 2D and 3D share one code path."""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import nn

from revgan.errors import UserError

NORMS = ("instance", "batch", "sync_batch", "none")


def _check_dims(dims: int) -> int:
    if dims not in (2, 3):
        raise UserError(f"dims must be 2 or 3, got {dims}")
    return dims


def conv(dims: int, *args, **kwargs) -> nn.Module:
    return (nn.Conv2d, nn.Conv3d)[_check_dims(dims) - 2](*args, **kwargs)


def conv_transpose(dims: int, *args, **kwargs) -> nn.Module:
    return (nn.ConvTranspose2d, nn.ConvTranspose3d)[_check_dims(dims) - 2](*args, **kwargs)


UPSAMPLES = ("transpose", "resize")


def upsample_x2(dims: int, ch_in: int, ch_out: int, mode: str, bias: bool) -> nn.Module:
    """Double the spatial size: ``transpose`` is a ConvTranspose 3 s2 (the reference's
    decoders); ``resize`` is nearest-neighbour x2 then a 3-wide conv, which spreads every
    input over the output evenly and so cannot make the checkerboard pattern that a 3-wide
    kernel at stride 2 makes (uneven overlap: Odena et al., Distill 2016)."""
    if mode == "transpose":
        return conv_transpose(dims, ch_in, ch_out, kernel_size=3, stride=2, padding=1,
                              output_padding=1, bias=bias)
    if mode == "resize":
        return ResizeConv(nn.Upsample(scale_factor=2, mode="nearest"), replication_pad(dims, 1),
                          conv(dims, ch_in, ch_out, kernel_size=3, bias=bias))
    raise UserError(f"unknown upsampling '{mode}'; choose one of {', '.join(UPSAMPLES)}")


# Nearest x2 then a 3-tap conv, seen from the low-resolution grid: output phase 0 of a dim
# reads input offsets (-1, 0, 0) with taps (w0, w1, w2), phase 1 reads (0, 0, +1).
# Row = phase, column = input offset (-1, 0, +1), entry = the taps summed there.
_PHASE_TAPS = torch.tensor([[[1.0, 0, 0], [0, 1, 1], [0, 0, 0]],
                            [[0.0, 0, 0], [1, 1, 0], [0, 0, 1]]])


class ResizeConv(nn.Sequential):
    """Nearest x2, replication pad 1, conv 3 -- computed as one conv on the small input
    with 2**dims phase kernels, then a pixel shuffle.

    The same function and parameters as running the three layers in turn (the same
    state-dict keys), but the x2 input is never built, so backward keeps the small input
    instead of one 2**dims times its size: the decoders' largest saved tensor.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dims, layer = x.dim() - 2, self[2]
        bias = None if layer.bias is None else layer.bias.repeat_interleave(2**dims)
        small = F.pad(x, (1, 1) * dims, mode="replicate")
        y = (F.conv2d, F.conv3d)[dims - 2](small, _phase_kernels(layer.weight, dims), bias)
        return _pixel_shuffle(y, dims)


def _phase_kernels(weight: torch.Tensor, dims: int) -> torch.Tensor:
    """(out, in, 3, ...) taps -> (out * 2**dims, in, 3, ...): one kernel per output phase,
    channels ordered (out, phase_1, ..., phase_dims) as the pixel shuffle reads them."""
    taps, phases, offsets = "tsr"[:dims], "abc"[:dims], "uvw"[:dims]
    equation = (f"oi{taps}," + ",".join(f"{a}{u}{t}" for a, u, t in zip(phases, offsets, taps))
                + f"->o{phases}i{offsets}")
    table = _PHASE_TAPS.to(device=weight.device, dtype=weight.dtype)
    kernels = torch.einsum(equation, weight, *([table] * dims))
    return kernels.reshape(weight.shape[0] * 2**dims, weight.shape[1], *(3,) * dims)


def _pixel_shuffle(y: torch.Tensor, dims: int) -> torch.Tensor:
    """(N, C * 2**dims, *S) -> (N, C, *2S), phases in the order of ``_phase_kernels``."""
    n, c, size = y.shape[0], y.shape[1] // 2**dims, y.shape[2:]
    y = y.reshape(n, c, *(2,) * dims, *size)
    order = [0, 1] + [i for d in range(dims) for i in (2 + dims + d, 2 + d)]
    return y.permute(order).reshape(n, c, *(2 * s for s in size))


def reflection_pad(dims: int, padding: int) -> nn.Module:
    return (nn.ReflectionPad2d, nn.ReflectionPad3d)[_check_dims(dims) - 2](padding)


def replication_pad(dims: int, padding: int) -> nn.Module:
    return (nn.ReplicationPad2d, nn.ReplicationPad3d)[_check_dims(dims) - 2](padding)


def norm_layer(dims: int, kind: str):
    """Return a constructor ``f(num_channels) -> nn.Module`` for the named normalisation.

    Instance norm has no affine parameters and no running statistics (as in pix2pix/CycleGAN),
    which also keeps recomputation in the reversible core free of double statistic updates.
    """
    _check_dims(dims)
    if kind == "instance":
        cls = (nn.InstanceNorm2d, nn.InstanceNorm3d)[dims - 2]
        return functools.partial(cls, affine=False, track_running_stats=False)
    if kind == "batch":
        cls = (nn.BatchNorm2d, nn.BatchNorm3d)[dims - 2]
        return functools.partial(cls, affine=True, track_running_stats=True)
    if kind == "sync_batch":
        return functools.partial(nn.SyncBatchNorm, affine=True, track_running_stats=True)
    if kind == "none":
        return lambda num_channels: nn.Identity()
    raise UserError(f"unknown norm '{kind}'; choose one of {', '.join(NORMS)}")


def uses_bias(kind: str) -> bool:
    """Whether a convolution followed by this norm needs a bias.

    Instance and batch norm subtract the channel mean, which cancels a preceding bias
    exactly. Such a bias gets only round-off as gradient, which Adam turns into
    learning-rate-sized random steps: harmless to outputs but it makes runs that differ
    only in summation order (one process vs DDP) drift apart. So it is left out.
    """
    return kind == "none"
