"""``revgan translate``: a trained generator applied to a file or a folder, at full size.

Inputs larger than the window are translated window by window with Gaussian blending
(:mod:`revgan.models.sliding_window`); volumes keep their affine and header and come back in
input units.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from revgan.config import DIRECTIONS, REQUIRED, option, select_device
from revgan.data.domains import ends, folder_of
from revgan.errors import UserError
from revgan.infer.load import load_generator
from revgan.infer.volume_units import domain_normalizer
from revgan.infer.windows import translate_path


@dataclass
class TranslateOptions:
    """The options of ``revgan translate``."""

    model_dir: str = option(REQUIRED, "a run folder: checkpoints/<name>")
    input: str = option(REQUIRED, "an image/volume file or a folder of them")
    output: str = option(REQUIRED, "output file (or folder for a folder)")
    direction: str = option("AtoB", "translation direction", choices=DIRECTIONS)
    epoch: str = option("latest", "checkpoint: latest, best or a number")
    window_size: tuple[int, ...] | None = option(None, "sliding window (default: the training "
                                                 "crop or patch size)", kind="ints")
    overlap: float = option(0.5, "sliding-window overlap")
    sw_batch_size: int = option(1, "windows per forward pass")
    bit_depth: int | None = option(None, "bits of output images (default: the input's)",
                                   choices=(8, 16))
    gpu_ids: str = option("auto", "'auto', '-1' for the CPU, or a CUDA device id")
    overwrite: bool = option(False, "replace existing outputs")
    skip_existing: bool = option(False, "keep existing outputs and translate only the missing "
                                        "ones (completes an interrupted folder)")
    no_progress: bool = option(False, "no progress bar")


def translate_files(args: TranslateOptions) -> list[Path]:
    """Translate ``args.input`` (a file or a folder) with the run in ``args.model_dir``."""
    if not 0 <= args.overlap < 1:
        raise UserError(f"--overlap must be in [0, 1), got {args.overlap}")
    if args.sw_batch_size < 1:
        raise UserError("--sw_batch_size must be at least 1")
    device = select_device(args.gpu_ids)
    G, opt = load_generator(Path(args.model_dir), args.epoch, device)
    dims = opt.dims
    window = args.window_size or (opt.patch_size if dims == 3 else (opt.crop_size,))
    window = tuple(window) * dims if len(window) == 1 else tuple(window)
    source, target = ends(args.direction)

    @torch.no_grad()
    def translate(x: torch.Tensor) -> torch.Tensor:
        return G(x, args.direction).float().clamp(-1, 1)

    norm_in = norm_out = None
    if dims == 3:
        norm_in = domain_normalizer(opt, folder_of(source, opt.direction))
        norm_out = domain_normalizer(opt, folder_of(target, opt.direction))
    input_nc = opt.input_nc if source == "A" else opt.output_nc
    written = translate_path(translate, Path(args.input), Path(args.output), dims, window,
                             overlap=args.overlap, multiple=getattr(G, "size_divisor", 1),
                             device=device, normalizer_in=norm_in, normalizer_out=norm_out,
                             input_nc=input_nc, bit_depth=args.bit_depth,
                             overwrite=args.overwrite, sw_batch_size=args.sw_batch_size,
                             progress=not args.no_progress, skip_existing=args.skip_existing)
    print(f"wrote {len(written)} file(s): {written[0] if len(written) == 1 else args.output}"
          + (" (existing outputs kept)" if args.skip_existing else ""))
    return written
