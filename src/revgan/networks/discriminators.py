"""PatchGAN and pixel discriminators (dims-generic)."""

from __future__ import annotations

from torch import Tensor, nn

from revgan.errors import UserError
from revgan.networks import layers
from revgan.networks.init import init_weights

D_NAMES = ("basic", "n_layers", "pixel")


class NLayerDiscriminator(nn.Module):
    """PatchGAN: one real/fake score per overlapping patch.

    Conv4 s2 + LeakyReLU(0.2); ``n_layers - 1`` x [Conv4 s2 (channels x2, capped at 8 ndf),
    Norm, LeakyReLU]; Conv4 s1, Norm, LeakyReLU; Conv4 s1 -> 1 channel (all padding 1).
    With ``n_layers=3`` the receptive field is 70 pixels.
    """

    def __init__(self, input_nc: int, ndf: int = 64, n_layers: int = 3, norm: str = "instance",
                 dims: int = 2):
        super().__init__()
        if n_layers < 1:
            raise UserError(f"n_layers_D must be >= 1, got {n_layers}")
        norm_layer, bias = layers.norm_layer(dims, norm), layers.uses_bias(norm)
        self.input_nc = input_nc
        mods: list[nn.Module] = [layers.conv(dims, input_nc, ndf, kernel_size=4, stride=2,
                                             padding=1),
                                 nn.LeakyReLU(0.2, True)]
        mult = 1
        for n in range(1, n_layers + 1):
            prev, mult = mult, min(2**n, 8)
            stride = 2 if n < n_layers else 1
            mods += [layers.conv(dims, ndf * prev, ndf * mult, kernel_size=4, stride=stride,
                                 padding=1, bias=bias),
                     norm_layer(ndf * mult),
                     nn.LeakyReLU(0.2, True)]
        mods.append(layers.conv(dims, ndf * mult, 1, kernel_size=4, stride=1, padding=1))
        self.model = nn.Sequential(*mods)

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x)


class PixelDiscriminator(nn.Module):
    """1x1 PatchGAN: classifies every pixel/voxel on its own (colour statistics only)."""

    def __init__(self, input_nc: int, ndf: int = 64, norm: str = "instance", dims: int = 2):
        super().__init__()
        norm_layer, bias = layers.norm_layer(dims, norm), layers.uses_bias(norm)
        self.input_nc = input_nc
        self.net = nn.Sequential(
            layers.conv(dims, input_nc, ndf, kernel_size=1),
            nn.LeakyReLU(0.2, True),
            layers.conv(dims, ndf, ndf * 2, kernel_size=1, bias=bias),
            norm_layer(ndf * 2),
            nn.LeakyReLU(0.2, True),
            layers.conv(dims, ndf * 2, 1, kernel_size=1, bias=bias))

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


def define_D(netD: str, input_nc: int, ndf: int = 64, n_layers_D: int = 3,
             norm: str = "instance", dims: int = 2, init_type: str = "normal",
             init_gain: float = 0.02) -> nn.Module:
    """Build and initialise a discriminator: ``basic``, ``n_layers`` (n_layers_D) or ``pixel``.

    ``basic`` is the 3-layer 70x70 PatchGAN in 2D and, as in the reference's 3D code, a
    2-layer PatchGAN in 3D (fits 16^3 patches; a 3-layer one needs sides of at least 32).
    """
    if netD == "basic":
        net: nn.Module = NLayerDiscriminator(input_nc, ndf, 3 if dims == 2 else 2, norm, dims)
    elif netD == "n_layers":
        net = NLayerDiscriminator(input_nc, ndf, n_layers_D, norm, dims)
    elif netD == "pixel":
        net = PixelDiscriminator(input_nc, ndf, norm, dims)
    else:
        raise UserError(f"unknown discriminator '{netD}'; choose one of {', '.join(D_NAMES)}")
    return init_weights(net, init_type, init_gain)
