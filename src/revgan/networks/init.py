"""Weight initialisation (pix2pix/CycleGAN conventions) that respects zero-initialised layers."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.modules.batchnorm import _NormBase
from torch.nn.modules.conv import _ConvNd

from revgan.errors import UserError

INIT_TYPES = ("normal", "xavier", "kaiming", "orthogonal")

# Attribute set on a layer whose weights must stay zero at init (last conv of a coupling's F/G,
# so the reversible core starts as the identity). init_weights leaves such layers alone.
ZERO_INIT_ATTR = "_zero_init"

_AFFINE_NORMS = (_NormBase, nn.GroupNorm, nn.LayerNorm)


def zero_init(module: nn.Module) -> nn.Module:
    """Zero ``module``'s weight and bias and flag it so ``init_weights`` keeps it zero."""
    with torch.no_grad():
        for name in ("weight", "bias"):
            param = getattr(module, name, None)
            if param is not None:
                param.zero_()
    setattr(module, ZERO_INIT_ATTR, True)
    return module


def init_weights(net: nn.Module, init_type: str = "normal", init_gain: float = 0.02) -> nn.Module:
    """Initialise conv/linear weights (biases 0) and affine norm weights ~ N(1, gain).

    Modules flagged by :func:`zero_init` are skipped, so the order "build (zero-init) then
    init_weights" keeps the identity-at-init property. Invertible 1x1 convolutions are not
    ``_ConvNd`` subclasses and keep their orthogonal initialisation (a N(0, 0.02) matrix
    would be nearly singular and make the inverse ill-conditioned).
    """
    if init_type not in INIT_TYPES:
        raise UserError(f"unknown init_type '{init_type}'; choose one of {', '.join(INIT_TYPES)}")
    with torch.no_grad():
        for m in net.modules():
            if getattr(m, ZERO_INIT_ATTR, False):
                continue
            if isinstance(m, (_ConvNd, nn.Linear)):
                if init_type == "normal":
                    nn.init.normal_(m.weight, 0.0, init_gain)
                elif init_type == "xavier":
                    nn.init.xavier_normal_(m.weight, gain=init_gain)
                elif init_type == "kaiming":
                    nn.init.kaiming_normal_(m.weight, a=0, mode="fan_in")
                else:
                    nn.init.orthogonal_(m.weight, gain=init_gain)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, _AFFINE_NORMS) and getattr(m, "weight", None) is not None:
                nn.init.normal_(m.weight, 1.0, init_gain)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
    return net
