"""``revgan translate``: a trained generator applied to a file or a folder, at full size.

Inputs larger than the window are translated window by window with Gaussian blending
(:func:`revgan.infer.windows.sliding_window_translate`); volumes keep their affine and header
and come back in input units.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from revgan.cli.argparsing import ArgumentParser
from revgan.config import _int_tuple, select_device
from revgan.errors import UserError
from revgan.infer.load import load_generator
from revgan.infer.volume_units import _folder, domain_normalizer
from revgan.infer.windows import translate_path


def _parser() -> argparse.ArgumentParser:
    p = ArgumentParser(prog="revgan translate", description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--model_dir", required=True, help="a run folder: checkpoints/<name>")
    p.add_argument("--input", required=True, help="an image/volume file or a folder of them")
    p.add_argument("--output", required=True, help="output file (or folder for a folder)")
    p.add_argument("--direction", default="AtoB", choices=("AtoB", "BtoA"))
    p.add_argument("--epoch", default="latest", help="checkpoint: latest, best or a number")
    p.add_argument("--window_size", type=_int_tuple, default=None,
                   help="sliding window (default: the training crop or patch size)")
    p.add_argument("--overlap", type=float, default=0.5)
    p.add_argument("--sw_batch_size", type=int, default=1, help="windows per forward pass")
    p.add_argument("--bit_depth", type=int, choices=(8, 16), default=None,
                   help="bits of output images (default: the input's)")
    p.add_argument("--gpu_ids", default="auto")
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--no_progress", action="store_true")
    return p


def main(argv: list[str]) -> list[Path]:
    args = _parser().parse_args(argv)
    if not 0 <= args.overlap < 1:
        raise UserError(f"--overlap must be in [0, 1), got {args.overlap}")
    if args.sw_batch_size < 1:
        raise UserError("--sw_batch_size must be at least 1")
    device = select_device(args.gpu_ids)
    G, opt = load_generator(Path(args.model_dir), args.epoch, device)
    dims = opt.dims
    window = args.window_size or (opt.patch_size if dims == 3 else (opt.crop_size,))
    window = tuple(window) * dims if len(window) == 1 else tuple(window)
    source, target = ("A", "B") if args.direction == "AtoB" else ("B", "A")

    @torch.no_grad()
    def translate(x: torch.Tensor) -> torch.Tensor:
        return G(x, args.direction).float().clamp(-1, 1)

    norm_in = norm_out = None
    if dims == 3:
        norm_in = domain_normalizer(opt, _folder(source, opt.direction))
        norm_out = domain_normalizer(opt, _folder(target, opt.direction))
    input_nc = opt.input_nc if source == "A" else opt.output_nc
    written = translate_path(translate, Path(args.input), Path(args.output), dims, window,
                             overlap=args.overlap, multiple=getattr(G, "size_divisor", 1),
                             device=device, normalizer_in=norm_in, normalizer_out=norm_out,
                             input_nc=input_nc, bit_depth=args.bit_depth,
                             overwrite=args.overwrite, sw_batch_size=args.sw_batch_size,
                             progress=not args.no_progress)
    print(f"wrote {len(written)} file(s): {written[0] if len(written) == 1 else args.output}")
    return written
