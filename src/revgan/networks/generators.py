"""Baseline (non-reversible) generators: the CycleGAN ResNet generator and the pix2pix U-Net.

Both are dims-generic (2D images or 3D volumes). The ResNet head/tail builders are shared
with the RevGAN generator in :mod:`revgan.networks.reversible_generators`.
"""

from __future__ import annotations

import math
import re

import torch
from torch import Tensor, nn

from revgan.engine.recompute import RecomputedSequential
from revgan.errors import UserError
from revgan.networks import layers
from revgan.networks.init import init_weights, zero_init

# 3D U-Nets stop at this many levels whatever unet_<N> says (the reference's 3D U-Net depth),
# so every unet name runs on volume patches whose sides are multiples of 16.
UNET_MAX_DOWNS_3D = 4

G_PATTERNS = "resnet_<N>blocks (e.g. resnet_9blocks, resnet_6blocks), unet_128, unet_256, unet_<N>"


def check_input(x: Tensor, channels: int, divisor: int, what: str = "input") -> None:
    """Raise UserError for a wrong channel count or a size the network's stride cannot take."""
    if x.shape[1] != channels:
        raise UserError(f"{what} has {x.shape[1]} channels, the network expects {channels}")
    if any(s % divisor for s in x.shape[2:]):  # no int(): torch.export keeps sizes symbolic
        size = tuple(int(s) for s in x.shape[2:])
        raise UserError(
            f"{what} size {size} is not divisible by {divisor} (the network's total stride); "
            "crop, pad or resize it")


def check_residual(residual: bool, input_nc: int, output_nc: int) -> bool:
    """``residual`` (a global skip, output = input + correction) needs equal channel counts."""
    if residual and input_nc != output_nc:
        raise UserError(f"--residual adds the input to the output, so it needs as many input "
                        f"as output channels (got {input_nc} and {output_nc})")
    return residual


def make_correction(decoder: nn.Module) -> None:
    """Turn the output part of a residual generator into a correction: its last convolution
    starts at zero, so the generator starts as the identity (the input is the best guess
    before training: for super-resolution, the interpolated volume; a random correction
    starts worse), and its final tanh is dropped (the correction is linear). A tanh on the
    correction was measured to trap training: Adam's first steps move every weight of the
    zero-initialised conv by about the learning rate at once, the summed correction lands
    beyond ±2 where tanh is flat, and there its gradient vanishes (MNI152 x2
    super-resolution, benchmarks/bench_sr3d.py: the correction stuck at +1 everywhere, PSNR
    5.6 dB). The output is therefore unbounded, as the fully reversible generator's is;
    the losses pull it into [-1, 1], and writing results clamps it."""
    zero_init([m for m in decoder.modules() if isinstance(m, nn.modules.conv._ConvNd)][-1])
    name = [n for n, m in decoder.named_modules() if isinstance(m, nn.Tanh)][-1]
    parent_name, _, child = name.rpartition(".")
    setattr(decoder.get_submodule(parent_name) if parent_name else decoder, child,
            nn.Identity())


# --------------------------------------------------------------------------- ResNet parts


def resnet_head(input_nc: int, ngf: int, n_downsampling: int, norm: str, dims: int,
                kernel: int = 7, pad=layers.reflection_pad) -> list[nn.Module]:
    """Pad, Conv<kernel> (-> ngf), Norm, ReLU; n_downsampling x [Conv3 s2 (x2 ch), Norm, ReLU].

    ResNet/CycleGAN: reflection padding and a 7-wide kernel; the 3D edsr design: replication
    padding and a 5-wide kernel."""
    norm_layer, bias = layers.norm_layer(dims, norm), layers.uses_bias(norm)
    mods: list[nn.Module] = [
        pad(dims, kernel // 2),
        layers.conv(dims, input_nc, ngf, kernel_size=kernel, padding=0, bias=bias),
        norm_layer(ngf),
        nn.ReLU(True),
    ]
    for i in range(n_downsampling):
        ch = ngf * 2**i
        mods += [layers.conv(dims, ch, ch * 2, kernel_size=3, stride=2, padding=1, bias=bias),
                 norm_layer(ch * 2),
                 nn.ReLU(True)]
    return mods


def resnet_tail(output_nc: int, ngf: int, n_downsampling: int, norm: str, dims: int,
                kernel: int = 7, pad=layers.reflection_pad, upsample: str = "transpose"
                ) -> list[nn.Module]:
    """n_downsampling x [Up x2 (/2 ch), Norm, ReLU], then Pad, Conv<kernel>, Tanh.

    ``upsample``: see :func:`revgan.networks.layers.upsample_x2` (default: ConvT3 s2)."""
    norm_layer, bias = layers.norm_layer(dims, norm), layers.uses_bias(norm)
    mods: list[nn.Module] = []
    for i in range(n_downsampling):
        ch = ngf * 2 ** (n_downsampling - i)
        mods += [layers.upsample_x2(dims, ch, ch // 2, upsample, bias),
                 norm_layer(ch // 2),
                 nn.ReLU(True)]
    mods += [pad(dims, kernel // 2),
             layers.conv(dims, ngf, output_nc, kernel_size=kernel, padding=0),
             nn.Tanh()]
    return mods


class ResnetBlock(nn.Module):
    """x + [ReflPad1 Conv3 Norm ReLU (Dropout) ReflPad1 Conv3 Norm](x)."""

    def __init__(self, dim: int, norm: str = "instance", use_dropout: bool = False, dims: int = 2):
        super().__init__()
        norm_layer, bias = layers.norm_layer(dims, norm), layers.uses_bias(norm)
        mods: list[nn.Module] = [layers.reflection_pad(dims, 1),
                                 layers.conv(dims, dim, dim, kernel_size=3, bias=bias),
                                 norm_layer(dim),
                                 nn.ReLU(True)]
        if use_dropout:
            mods.append(nn.Dropout(0.5))
        mods += [layers.reflection_pad(dims, 1),
                 layers.conv(dims, dim, dim, kernel_size=3, bias=bias),
                 norm_layer(dim)]
        self.conv_block = nn.Sequential(*mods)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv_block(x)


class ResnetGenerator(nn.Module):
    """The CycleGAN ResNet generator (Johnson et al.): head, n_blocks residual blocks, tail."""

    def __init__(self, input_nc: int, output_nc: int, ngf: int = 64, norm: str = "instance",
                 n_blocks: int = 9, n_downsampling: int = 2, use_dropout: bool = False,
                 dims: int = 2, upsample: str = "transpose", residual: bool = False):
        super().__init__()
        if n_blocks < 0 or n_downsampling < 0:
            raise UserError("n_blocks and n_downsampling must be >= 0")
        self.input_nc, self.output_nc = input_nc, output_nc
        self.residual = check_residual(residual, input_nc, output_nc)
        self.size_divisor = 2**n_downsampling
        core_ch = ngf * 2**n_downsampling
        head = resnet_head(input_nc, ngf, n_downsampling, norm, dims)
        # stages of --recompute_stages: the head, each block, the tail
        self.model = RecomputedSequential(
            *head,
            *[ResnetBlock(core_ch, norm, use_dropout, dims) for _ in range(n_blocks)],
            *resnet_tail(output_nc, ngf, n_downsampling, norm, dims, upsample=upsample),
            stages=range(len(head), len(head) + n_blocks + 1))
        if self.residual:
            make_correction(self.model)

    def forward(self, x: Tensor) -> Tensor:
        check_input(x, self.input_nc, self.size_divisor)
        return x + self.model(x) if self.residual else self.model(x)


# --------------------------------------------------------------------------- U-Net


class UnetSkipBlock(nn.Module):
    """One U-Net level: down conv, the inner levels, up conv; concatenates its input (skip)."""

    def __init__(self, outer_nc: int, inner_nc: int, input_nc: int | None = None,
                 submodule: nn.Module | None = None, outermost: bool = False,
                 norm: str = "instance", use_dropout: bool = False, dims: int = 2,
                 uncancelled_bias: bool = False):
        super().__init__()
        self.outermost = outermost
        innermost = submodule is None
        norm_layer, bias = layers.norm_layer(dims, norm), layers.uses_bias(norm)
        input_nc = outer_nc if input_nc is None else input_nc
        # No norm follows the outermost and innermost down convs, so a bias there is a real
        # parameter; pix2pix has one with instance norm (uncancelled_bias), revgan by default not.
        down_bias = bias or (uncancelled_bias and (outermost or innermost))
        down = layers.conv(dims, input_nc, inner_nc, kernel_size=4, stride=2, padding=1,
                           bias=down_bias)
        up_in = inner_nc if innermost else inner_nc * 2
        if outermost:
            up = layers.conv_transpose(dims, up_in, outer_nc, kernel_size=4, stride=2, padding=1)
            mods = [down, submodule, nn.ReLU(True), up, nn.Tanh()]
        else:
            up = layers.conv_transpose(dims, up_in, outer_nc, kernel_size=4, stride=2, padding=1,
                                       bias=bias)
            mods = [nn.LeakyReLU(0.2, True), down]
            if not innermost:  # pix2pix: no norm on the 1-pixel bottleneck
                mods += [norm_layer(inner_nc), submodule]
            mods += [nn.ReLU(True), up, norm_layer(outer_nc)]
            if use_dropout:
                mods.append(nn.Dropout(0.5))
        self.model = nn.Sequential(*mods)

    def forward(self, x: Tensor) -> Tensor:
        if self.outermost:
            return self.model(x)
        return torch.cat([x, self.model(x)], dim=1)


class UnetGenerator(nn.Module):
    """The pix2pix U-Net with ``num_downs`` stride-2 levels (input sides divisible by 2**num_downs).

    Level ``i`` (0 = outermost) has ``ngf * min(2**i, 8)`` inner channels; dropout (if asked)
    sits in the middle levels at full width (levels 4 .. num_downs-2), as in pix2pix, so
    ``unet_256`` (8 downs) and ``unet_128`` (7 downs) are the pix2pix networks. In 3D the
    name ``unet_<N>`` is capped at ``UNET_MAX_DOWNS_3D`` = 4 levels by :func:`define_G`
    (the reference's 3D depth; a 7-level U-Net would need 128^3 patches), so 3D U-Nets run
    on any patch whose sides are multiples of 16 and have no dropout levels.
    """

    def __init__(self, input_nc: int, output_nc: int, num_downs: int, ngf: int = 64,
                 norm: str = "instance", use_dropout: bool = False, dims: int = 2,
                 uncancelled_bias: bool = False, residual: bool = False):
        super().__init__()
        if num_downs < 2:
            raise UserError(f"a U-Net needs at least 2 levels, got {num_downs}")
        self.input_nc, self.output_nc = input_nc, output_nc
        self.residual = check_residual(residual, input_nc, output_nc)
        self.size_divisor = 2**num_downs

        def width(i: int) -> int:
            return ngf * min(2**i, 8)

        block: nn.Module | None = None
        for i in reversed(range(1, num_downs)):
            dropout = use_dropout and 4 <= i <= num_downs - 2
            block = UnetSkipBlock(width(i - 1), width(i), submodule=block, norm=norm,
                                  use_dropout=dropout, dims=dims,
                                  uncancelled_bias=uncancelled_bias)
        self.model = UnetSkipBlock(output_nc, ngf, input_nc=input_nc, submodule=block,
                                   outermost=True, norm=norm, dims=dims,
                                   uncancelled_bias=uncancelled_bias)
        if self.residual:
            make_correction(self.model)

    def forward(self, x: Tensor) -> Tensor:
        check_input(x, self.input_nc, self.size_divisor)
        return x + self.model(x) if self.residual else self.model(x)


# --------------------------------------------------------------------------- registry


def parse_resnet_blocks(name: str) -> int | None:
    """``resnet_<N>blocks`` -> N, else None."""
    m = re.fullmatch(r"resnet_(\d+)blocks", name)
    return int(m.group(1)) if m else None


def unet_num_downs(name: str, dims: int) -> int | None:
    """``unet_<N>`` -> log2(N) levels (capped at 4 in 3D); None if ``name`` is not a U-Net name."""
    m = re.fullmatch(r"unet_(\d+)", name)
    if not m:
        return None
    size = int(m.group(1))
    if size < 4 or size & (size - 1):
        raise UserError(f"'{name}': the U-Net input size N in unet_<N> must be a power of two >= 4")
    downs = int(math.log2(size))
    return min(downs, UNET_MAX_DOWNS_3D) if dims == 3 else downs


def define_G(netG: str, input_nc: int, output_nc: int, ngf: int = 64, norm: str = "instance",
             use_dropout: bool = False, dims: int = 2, init_type: str = "normal",
             init_gain: float = 0.02, n_downsampling: int = 2,
             uncancelled_bias: bool = False, upsample: str = "transpose",
             residual: bool = False) -> nn.Module:
    """Build and initialise a baseline generator by name (see ``G_PATTERNS``).

    ``upsample``: the ResNet decoder's x2 layers (U-Nets keep their ConvT4 s2, whose kernel
    the stride divides, so it has no checkerboard of its own). ``residual``: output = input +
    a linear correction that starts at zero, see :func:`make_correction`.

    ``uncancelled_bias``: U-Nets get a bias on the two down convolutions no norm follows,
    as pix2pix's U-Net has with instance norm (imported checkpoints need it)."""
    layers.norm_layer(dims, norm)  # validates dims and norm early, with a clear message
    n_blocks = parse_resnet_blocks(netG)
    if n_blocks is not None:
        net: nn.Module = ResnetGenerator(input_nc, output_nc, ngf, norm, n_blocks,
                                         n_downsampling, use_dropout, dims, upsample,
                                         residual)
    else:
        downs = unet_num_downs(netG, dims)
        if downs is None:
            raise UserError(f"unknown generator '{netG}'; valid: {G_PATTERNS}")
        net = UnetGenerator(input_nc, output_nc, downs, ngf, norm, use_dropout, dims,
                            uncancelled_bias, residual)
    return init_weights(net, init_type, init_gain)
