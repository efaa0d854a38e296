"""Networks: baseline and reversible generators, discriminators, weight initialisation."""

from __future__ import annotations

from torch import nn

from revgan.networks.discriminators import NLayerDiscriminator, PixelDiscriminator, define_D
from revgan.networks.generators import ResnetGenerator, UnetGenerator, define_G
from revgan.networks.init import init_weights, zero_init
from revgan.networks.reversible_generators import (
    FullyReversibleGenerator,
    RevGenerator,
    define_rev_G,
)


def count_parameters(module: nn.Module, trainable_only: bool = False) -> int:
    """Number of (distinct) parameters; shared parameters are counted once."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


__all__ = [
    "FullyReversibleGenerator",
    "NLayerDiscriminator",
    "PixelDiscriminator",
    "ResnetGenerator",
    "RevGenerator",
    "UnetGenerator",
    "count_parameters",
    "define_D",
    "define_G",
    "define_rev_G",
    "init_weights",
    "zero_init",
]
