"""The Python API: ``t = revgan.load("checkpoints/NAME"); y = t.translate(x)``.

A :class:`Translator` wraps a run folder's generator (trained or imported) and translates
inputs of any size (in sliding windows where an input is larger than the training crop or
patch), returning the kind it was given:

- a **torch tensor**: C×H×W / N×C×H×W (volumes C×D×H×W / N×C×D×H×W) in the network's
  range [-1, 1]; the result is a tensor of the same layout, dtype and device.
- a **NumPy array**: images H×W or H×W×C, integers at their dtype's full range (uint8,
  uint16) or floats in [0, 1]; the result has the same layout and dtype. Volumes (3D runs)
  D×H×W or C×D×H×W in their units (e.g. HU), mapped with the run's intensity options; the
  result is float32 in the output domain's units.
- a **PIL image**: the result is a PIL image of the same mode (L or RGB).
- a **path** (image file, NIfTI/NumPy volume, DICOM series folder): the result is the array
  written to ``output`` if given (images: H×W×C of the input's bit depth; volumes: C×D×H×W
  float32), and ``output=`` writes that file, volumes keeping the input's affine and header.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from revgan.config import RunConfig
from revgan.data.domains import folder_of
from revgan.errors import UserError
from revgan.infer.load import load_generator
from revgan.infer.volume_units import domain_normalizer
from revgan.infer.windows import translate_array
from revgan.models.registry import generator_kind

DIRECTIONS = ("AtoB", "BtoA")


class Translator:
    """A trained generator, ready to translate (see the module docstring for input kinds)."""

    def __init__(self, model_dir: str | Path, epoch: str = "latest",
                 device: torch.device | str = "cpu"):
        self.model_dir = Path(model_dir)
        self.device = torch.device(device)
        self._G, config = load_generator(self.model_dir, str(epoch), self.device)
        self.config: RunConfig = config  # the run's options: t.config.netG, t.config.dims, ...

    @property
    def directions(self) -> tuple[str, ...]:
        """The directions this run translates: pix2pix-style runs only A→B."""
        return ("AtoB",) if generator_kind(self.config.model) == "single" else DIRECTIONS

    @property
    def dims(self) -> int:
        return self.config.dims

    def to(self, device: torch.device | str) -> Translator:
        """Move the generator (e.g. ``t.to("cuda")``); returns the translator."""
        self.device = torch.device(device)
        self._G.to(self.device)
        return self

    def __repr__(self) -> str:
        c = self.config
        return (f"Translator({str(self.model_dir)!r}, model={c.model}, netG={c.netG}, "
                f"dims={c.dims}, directions={self.directions}, device={self.device})")

    # -- the network on [-1, 1] tensors ---------------------------------------------------
    def _window(self, window_size) -> tuple[int, ...]:
        window = window_size or (self.config.patch_size if self.dims == 3
                                 else (self.config.crop_size,))
        window = (window,) if isinstance(window, int) else tuple(window)
        return window * self.dims if len(window) == 1 else window

    def _channels(self, direction: str) -> int:
        return self.config.input_nc if direction == "AtoB" else self.config.output_nc

    def _run(self, chw: np.ndarray, direction: str, units: bool, window_size, overlap
             ) -> np.ndarray:
        """Translate one C×spatial float array (network range, or volume units)."""
        if chw.shape[0] != self._channels(direction):
            raise UserError(f"the input has {chw.shape[0]} channel(s); this run's "
                            f"{direction[0]} domain has {self._channels(direction)}")

        @torch.no_grad()
        def network(x: torch.Tensor) -> torch.Tensor:
            return self._G(x, direction).float().clamp(-1, 1)

        norm_in = norm_out = "none"
        if units:
            source, target = ("A", "B") if direction == "AtoB" else ("B", "A")
            norm_in = domain_normalizer(self.config, folder_of(source, self.config.direction))
            norm_out = domain_normalizer(self.config, folder_of(target, self.config.direction))
        return translate_array(network, chw, norm_in, norm_out, self._window(window_size),
                               overlap=overlap, multiple=getattr(self._G, "size_divisor", 1),
                               device=self.device)

    # -- the public entry ------------------------------------------------------------------
    def translate(self, x: Any, direction: str = "AtoB", output: str | Path | None = None,
                  window_size: int | tuple[int, ...] | None = None, overlap: float = 0.5,
                  overwrite: bool = False) -> Any:
        """Translate ``x`` (tensor, NumPy array, PIL image or path); see the module docs.

        ``window_size`` defaults to the run's crop (images) or patch (volumes) size;
        ``output`` (path inputs only) writes the result there.
        """
        if direction not in self.directions:
            raise UserError(f"direction must be one of {', '.join(self.directions)}, "
                            f"got {direction!r}")
        if not 0 <= overlap < 1:
            raise UserError(f"overlap must be in [0, 1), got {overlap}")
        if output is not None and not isinstance(x, (str, Path)):
            raise UserError("output= is for path inputs; save the returned result yourself")
        if isinstance(x, (str, Path)):
            return self._translate_path(Path(x), direction, output, window_size, overlap,
                                        overwrite)
        if isinstance(x, torch.Tensor):
            return self._translate_tensor(x, direction, window_size, overlap)
        if isinstance(x, np.ndarray):
            return self._translate_numpy(x, direction, window_size, overlap)
        if type(x).__module__.startswith("PIL."):
            return self._translate_pil(x, direction, window_size, overlap)
        raise UserError(f"cannot translate a {type(x).__name__}: give a torch tensor, a NumPy "
                        "array, a PIL image or a path")

    def _translate_tensor(self, x: torch.Tensor, direction, window_size, overlap
                          ) -> torch.Tensor:
        batched = x.dim() == self.dims + 2
        if x.dim() not in (self.dims + 1, self.dims + 2):
            raise UserError(f"a {self.dims}D run takes tensors of C×{'D×' * (self.dims - 2)}H×W "
                            f"(or with a batch axis), got shape {tuple(x.shape)}")
        items = x if batched else x[None]
        outs = [torch.from_numpy(self._run(item.detach().to("cpu", torch.float32).numpy(),
                                           direction, False, window_size, overlap))
                for item in items]
        out = torch.stack(outs).to(device=x.device, dtype=x.dtype if x.is_floating_point()
                                   else torch.float32)
        return out if batched else out[0]

    def _translate_numpy(self, x: np.ndarray, direction, window_size, overlap) -> np.ndarray:
        if self.dims == 3:
            if x.ndim not in (3, 4):
                raise UserError(f"a 3D run takes D×H×W or C×D×H×W arrays, got shape {x.shape}")
            chw = np.asarray(x, dtype=np.float32)
            out = self._run(chw if x.ndim == 4 else chw[None], direction, True, window_size,
                            overlap)
            return out if x.ndim == 4 else out[0]
        if x.ndim not in (2, 3):
            raise UserError(f"a 2D run takes H×W or H×W×C arrays, got shape {x.shape}")
        if np.issubdtype(x.dtype, np.integer):
            if x.dtype not in (np.uint8, np.uint16):
                raise UserError(f"integer images must be uint8 or uint16, got {x.dtype}")
            peak = float(np.iinfo(x.dtype).max)
        elif np.issubdtype(x.dtype, np.floating):
            peak = 1.0
        else:
            raise UserError(f"cannot translate an array of {x.dtype}")
        chw = (x[None] if x.ndim == 2 else np.moveaxis(x, -1, 0)).astype(np.float32)
        out = self._run(chw / (peak / 2) - 1, direction, False, window_size, overlap)
        values = (out + 1) * (peak / 2)
        if peak > 1:
            values = np.rint(values).clip(0, peak)
        values = values.astype(x.dtype)
        return values[0] if x.ndim == 2 and values.shape[0] == 1 else np.moveaxis(values, 0, -1)

    def _translate_pil(self, image, direction, window_size, overlap):
        from PIL import Image

        if self.dims != 2:
            raise UserError("a PIL image needs a 2D run")
        channels = self._channels(direction)
        array = np.asarray(image.convert("L" if channels == 1 else "RGB"))
        out = self._translate_numpy(array, direction, window_size, overlap)
        return Image.fromarray(out)

    def _translate_path(self, path: Path, direction, output, window_size, overlap, overwrite):
        if output is not None:
            output = Path(output)
            if output.exists() and not overwrite:
                raise UserError(f"output {output} exists; remove it or pass overwrite=True")
            if output.resolve() == path.resolve():
                raise UserError(f"output {output} would overwrite its input")
        if self.dims == 3:
            from revgan.data.volumes import read_volume, write_volume

            volume, meta = read_volume(path)
            out = self._run(volume, direction, True, window_size, overlap)
            if output is not None:
                write_volume(output, out, meta)
            return out
        from revgan.data.images import read_image, write_image

        image, meta = read_image(path, self._channels(direction))
        out = self._run(image, direction, False, window_size, overlap)
        depth = 16 if meta.bit_depth >= 16 else 8
        if output is not None:
            write_image(output, out, bit_depth=depth)
        peak = 2**depth - 1
        ints = np.rint((out.clip(-1, 1) + 1) * (peak / 2)).astype(np.uint8 if depth == 8
                                                                   else np.uint16)
        return np.moveaxis(ints, 0, -1)


def load(model_dir: str | Path, epoch: str = "latest",
         device: torch.device | str = "cpu") -> Translator:
    """The generator of a run folder (``checkpoints/NAME``, trained or imported)."""
    return Translator(model_dir, epoch, device)
