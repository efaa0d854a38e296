"""Generators of the original RevGAN (tychovdo/RevGAN, CVPR 2019), 2D unpaired/paired.

The reference saves five files per checkpoint: ``<epoch>_net_G_A_enc.pth``,
``_G_B_enc``, ``_G_core``, ``_G_A_dec`` and ``_G_B_dec``. ``fake_B = G_A_dec(core(G_A_enc(A)))``
and ``fake_A = G_B_dec(core⁻¹(G_B_enc(B)))``: ``G_A_dec`` decodes *into domain B*, so it
becomes revgan's ``decoder_B`` (and ``G_B_dec`` its ``decoder_A``). Encoders and decoders
keep one ``model`` Sequential with revgan's indices. The core is
``model.<i>.rev_block.rev_block.{Fm,Gm}.<j>`` (a memcnn additive block inside a
``ReversibleResnetBlock``), revgan's ``core.blocks.<i>.{F,G}.<j>``, with the same coupling
``y1 = x1 + F(x2)``, ``y2 = x2 + G(y1)``.

Not importable: affine couplings (a different memcnn block), the 3D networks, and runs
trained with ``--no_output_tanh`` (the weights cannot tell; revgan's decoders end in tanh).
"""

from __future__ import annotations

import re
from pathlib import Path

from torch import Tensor

from revgan.errors import UserError
from revgan.interop.upstream import Architecture

PARTS = {"G_A_enc": "encoder_A.", "G_B_enc": "encoder_B.", "G_A_dec": "decoder_B.",
         "G_B_dec": "decoder_A.", "G_core": "core.blocks."}
_CORE = re.compile(r"model\.(\d+)\.rev_block\.rev_block\.(Fm|Gm)\.(.+)")


def assign_files(paths: list[Path]) -> dict[str, Path]:
    """The five files by the part their name ends in (``..._net_G_core.pth`` etc.)."""
    found: dict[str, Path] = {}
    for path in paths:
        m = re.search(r"(G_[AB]_enc|G_[AB]_dec|G_core)\.pth$", Path(path).name)
        if not m:
            raise UserError(f"{Path(path).name}: a RevGAN checkpoint file name ends in "
                            "G_A_enc.pth, G_B_enc.pth, G_core.pth, G_A_dec.pth or G_B_dec.pth")
        if m.group(1) in found:
            raise UserError(f"two files for RevGAN's {m.group(1)}: {found[m.group(1)].name}, "
                            f"{Path(path).name}")
        found[m.group(1)] = Path(path)
    missing = [part for part in PARTS if part not in found]
    if missing:
        raise UserError(f"RevGAN checkpoints come in five files; missing: "
                        f"{', '.join(f'*_net_{p}.pth' for p in missing)}")
    return found


def rename(part: str, state: dict[str, Tensor]) -> dict[str, Tensor]:
    """One file's tensors under revgan's names."""
    renamed = {}
    for key, value in state.items():
        if part == "G_core":
            m = _CORE.fullmatch(key)
            if not m:
                raise UserError(f"G_core: architecture mismatch at '{key}': expected additive "
                                "coupling blocks (model.<i>.rev_block.rev_block.Fm/Gm...; "
                                "affine couplings are not importable)")
            renamed[f"core.blocks.{m.group(1)}.{m.group(2)[0]}.{m.group(3)}"] = value
        else:
            if not key.startswith("model."):
                raise UserError(f"{part}: architecture mismatch at '{key}': expected 'model.*'")
            renamed[PARTS[part] + key.removeprefix("model.")] = value
    return renamed


def infer_architecture(states: dict[str, dict[str, Tensor]]) -> Architecture:
    """netG, norm, ngf, channels, dropout and n_downsampling from the five state dicts."""
    enc_A, enc_B, core = states["G_A_enc"], states["G_B_enc"], states["G_core"]
    for part, state in (("G_A_enc", enc_A), ("G_B_enc", enc_B)):
        if "model.1.weight" not in state or state["model.1.weight"].dim() != 4:
            raise UserError(f"{part}: architecture mismatch at 'model.1.weight': expected the "
                            "2D encoder's first convolution")
    convs = [k for k, v in enc_A.items() if re.fullmatch(r"model\.\d+\.weight", k) and v.dim() == 4]
    blocks = {int(m.group(1)) for key in core if (m := _CORE.fullmatch(key))}
    if not blocks:
        raise UserError("G_core: no additive coupling blocks found "
                        "(model.<i>.rev_block.rev_block.Fm...)")
    if any(key.endswith(".running_var") and key.removesuffix("running_var") + "weight" in enc_A
           for key in enc_A):
        norm = "batch"
    else:
        norm = "instance" if "model.1.bias" in enc_A else "none"
    return Architecture(
        netG=f"resnet_{len(blocks)}blocks", norm=norm, ngf=enc_A["model.1.weight"].shape[0],
        input_nc=enc_A["model.1.weight"].shape[1], output_nc=enc_B["model.1.weight"].shape[1],
        use_dropout="model.0.rev_block.rev_block.Fm.6.weight" in core,
        n_downsampling=len(convs) - 1)
