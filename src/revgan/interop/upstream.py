"""Generators of pytorch-CycleGAN-and-pix2pix (``*_net_G_A.pth``, ``*_net_G_B.pth``,
``*_net_G.pth``): their key layout and the architecture their tensors imply.

The upstream ``ResnetGenerator`` keeps every layer in one ``model`` Sequential (pad, conv,
norm, ReLU, the downsampling triples, ``ResnetBlock``s with a ``conv_block`` Sequential,
the upsampling triples, pad, conv, tanh) and ``UnetGenerator`` nests
``UnetSkipConnectionBlock``s, each with a ``model`` Sequential whose submodule sits at
index 1 (outermost) or 3 (others). revgan's generators keep the same indices, so names map
one to one under a prefix (``G_A.``, ``G_B.`` or ``G.``). What differs: upstream gives
every convolution a bias when the norm is instance norm; revgan leaves out those that the
following instance norm cancels (dropped on import, see :mod:`revgan.interop.foreign`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from torch import Tensor

from revgan.errors import UserError


@dataclass
class Architecture:
    """What a foreign generator's tensors say about how it was built."""

    netG: str
    norm: str
    ngf: int
    input_nc: int
    output_nc: int
    use_dropout: bool | None  # None: not visible in the weights (U-Net: dropout is last)
    n_downsampling: int | None = None


def _norm_from(state: dict[str, Tensor], first_conv: str) -> str:
    """Upstream: batch norm -> affine norms with running statistics and no conv biases;
    instance norm -> convolutions with biases; none -> neither."""
    if any(key.endswith(".running_var") and key.removesuffix("running_var") + "weight" in state
           for key in state):
        return "batch"
    return "instance" if f"{first_conv}.bias" in state else "none"


def infer_architecture(state: dict[str, Tensor], what: str) -> Architecture:
    """Read netG/norm/ngf/channels (and, for ResNets, dropout) off an upstream state dict."""
    if "model.model.0.weight" in state:
        depth = max(key.split(".").count("model") - 1 for key in state)
        first, last = state["model.model.0.weight"], state.get("model.model.3.weight")
        if last is None or first.dim() != 4:
            raise UserError(f"{what}: not a 2D U-Net generator (no 'model.model.3.weight')")
        return Architecture(netG=f"unet_{2 ** depth}",
                            norm=_norm_from(state, "model.model.0"),
                            ngf=first.shape[0], input_nc=first.shape[1], output_nc=last.shape[1],
                            use_dropout=None)
    if "model.1.weight" in state:
        blocks = sorted({int(m.group(1)) for key in state
                         if (m := re.match(r"model\.(\d+)\.conv_block\.", key))})
        first = state["model.1.weight"]
        if not blocks or first.dim() != 4:
            raise UserError(f"{what}: not a 2D ResNet or U-Net generator of "
                            "pytorch-CycleGAN-and-pix2pix (no residual blocks found)")
        n_down = (blocks[0] - 4) // 3  # pad, conv, norm, ReLU, then 3 layers per level
        last_index = blocks[-1] + 1 + 3 * n_down + 1  # the final conv follows a pad
        last = state.get(f"model.{last_index}.weight")
        if last is None:
            raise UserError(f"{what}: architecture mismatch at 'model.{last_index}.weight': "
                            "expected the output convolution there")
        dropout = f"model.{blocks[0]}.conv_block.6.weight" in state
        return Architecture(netG=f"resnet_{len(blocks)}blocks",
                            norm=_norm_from(state, "model.1"), ngf=first.shape[0],
                            input_nc=first.shape[1], output_nc=last.shape[0],
                            use_dropout=dropout, n_downsampling=n_down)
    raise UserError(f"{what}: not a generator of pytorch-CycleGAN-and-pix2pix (no "
                    "'model.1.weight' or 'model.model.0.weight'; is it a discriminator?)")


def prefixed(state: dict[str, Tensor], prefix: str) -> dict[str, Tensor]:
    """Upstream names under revgan's wrapper (``G_A.``, ``G_B.`` for CycleGAN, ``G.``)."""
    return {f"{prefix}{key}": value for key, value in state.items()}
