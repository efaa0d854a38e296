"""Layer factories chosen by ``dims`` (2 or 3), so 2D and 3D share one code path."""

from __future__ import annotations

import functools

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
        return nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"),
                             replication_pad(dims, 1),
                             conv(dims, ch_in, ch_out, kernel_size=3, bias=bias))
    raise UserError(f"unknown upsampling '{mode}'; choose one of {', '.join(UPSAMPLES)}")


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
