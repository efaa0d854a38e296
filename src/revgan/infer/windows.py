"""Full-size translation of large images and volumes by blended sliding windows.

The network sees fixed-size windows (so its memory does not grow with the input); windows
overlap and are blended with Gaussian weights by MONAI's ``sliding_window_inference``, which
normalises by the summed weights, so there are no seams and a constant offset stays
constant. Windows run on ``device`` while the full-size output and weight map stay on CPU
(or wherever ``output_device`` says).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from revgan.data.intensity import Normalizer, make_normalizer, normalizer_from_dict, output_stats
from revgan.errors import UserError, require_creatable

Fn = Callable[[Tensor], Tensor]


def _per_dim(value: int | Sequence[int], n: int, what: str) -> tuple[int, ...]:
    values = (value,) * n if isinstance(value, int) else tuple(int(v) for v in value)
    if len(values) != n or any(v < 1 for v in values):
        raise UserError(f"{what} must be a positive integer or {n} of them, got {value}")
    return values


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def sliding_window_translate(
    fn: Fn,
    x: Tensor,
    window_size: int | Sequence[int],
    overlap: float = 0.5,
    mode: str = "gaussian",
    sw_batch_size: int = 1,
    device: torch.device | str | None = None,
    multiple: int = 1,
    output_device: torch.device | str | None = "cpu",
    progress: bool = False,
) -> Tensor:
    """Apply ``fn`` to ``x`` (N×C×spatial, 2D or 3D) window by window and blend the results.

    ``window_size`` must be a multiple of ``multiple`` (the network's total stride). Along an
    axis shorter than the window, the window shrinks to the axis rounded up to ``multiple``
    and the input is edge-padded to that and cropped back afterwards, so any input size works.
    ``fn`` runs under ``torch.no_grad`` on ``device`` (default: ``x``'s device); the blended
    output is accumulated on ``output_device``.
    """
    from monai.inferers import sliding_window_inference

    if x.ndim not in (4, 5):
        raise UserError(f"expected an N×C×H×W or N×C×D×H×W tensor, got shape {tuple(x.shape)}")
    if not 0.0 <= overlap < 1.0:
        raise UserError(f"overlap must be in [0, 1), got {overlap}")
    if multiple < 1:
        raise UserError(f"multiple must be at least 1, got {multiple}")
    spatial = tuple(x.shape[2:])
    window = _per_dim(window_size, len(spatial), "window size")
    bad = [w for w in window if w % multiple]
    if bad:
        raise UserError(f"window size {window} must be a multiple of {multiple} (the network's "
                        f"stride); try {tuple(_round_up(w, multiple) for w in window)}")
    # Shrink windows to short axes (rounded up to the stride), then pad those axes to fit.
    window = tuple(min(w, _round_up(s, multiple)) for w, s in zip(window, spatial))
    padded = tuple(max(s, w) for s, w in zip(spatial, window))
    if padded != spatial:
        pad: list[int] = []
        for s, p in reversed(list(zip(spatial, padded))):
            before = (p - s) // 2
            pad += [before, p - s - before]
        x = F.pad(x, pad, mode="replicate")
    device = torch.device(device) if device is not None else x.device
    output_device = torch.device(output_device) if output_device is not None else x.device

    def predictor(window_batch: Tensor) -> Tensor:
        # MONAI weights the predictor's output in place; an output that shares memory with
        # its input window (identity, views) would then corrupt the input being translated.
        y = fn(window_batch)
        if y.untyped_storage().data_ptr() == window_batch.untyped_storage().data_ptr():
            y = y.clone()
        return y

    with torch.no_grad():
        out = sliding_window_inference(
            x, roi_size=window, sw_batch_size=sw_batch_size, predictor=predictor, overlap=overlap,
            mode=mode, sw_device=device, device=output_device, progress=progress,
        )
    if hasattr(out, "as_tensor"):  # MONAI may hand back a MetaTensor
        out = out.as_tensor()
    if padded != spatial:
        crop = [slice(None), slice(None)]
        crop += [slice((p - s) // 2, (p - s) // 2 + s) for s, p in zip(spatial, padded)]
        out = out[tuple(crop)]
    return out


def translate_array(
    fn: Fn,
    array: np.ndarray,
    normalizer_in: Normalizer | dict | str | None,
    normalizer_out: Normalizer | dict | str | None,
    window_size: int | Sequence[int],
    overlap: float = 0.5,
    multiple: int = 1,
    device: torch.device | str | None = None,
    mode: str = "gaussian",
    sw_batch_size: int = 1,
) -> np.ndarray:
    """Translate one C×spatial array in input units; returns the output in input units.

    The input is normalised with ``normalizer_in`` fitted on it; the output is mapped back
    with ``normalizer_out`` fitted on the same input (see :mod:`revgan.data.intensity`).
    Normalisation is pointwise, so it is applied window by window: memory beyond the input and
    output arrays is MONAI's one-channel weight map plus one batch of windows in the network.
    """
    norm_in, norm_out = _normalizer(normalizer_in), _normalizer(normalizer_out)
    array = np.ascontiguousarray(array, dtype=np.float32)
    if not array.flags.writeable:  # torch.from_numpy wants writeable memory (only read here)
        array = array.copy()
    stats_in, stats_out = norm_in.fit(array), output_stats(norm_out, array)

    def normalised_fn(window: Tensor) -> Tensor:
        return fn(norm_in.normalize(window, stats_in))

    y = sliding_window_translate(normalised_fn, torch.from_numpy(array)[None], window_size,
                                 overlap=overlap, mode=mode, sw_batch_size=sw_batch_size,
                                 device=device, multiple=multiple)
    out = y[0].to(torch.float32).numpy()  # MONAI's fresh output buffer: safe to reuse
    return np.asarray(norm_out.denormalize(out, stats_out, inplace=True), dtype=np.float32)


def _normalizer(value: Normalizer | dict | str | None) -> Normalizer:
    if isinstance(value, str):
        return make_normalizer(value)
    return normalizer_from_dict(value)


def _inputs(input_path: Path, dims: int) -> list[Path]:
    if input_path.is_dir():
        if dims == 3:
            from revgan.data.volumes import list_volumes

            return list_volumes(input_path)
        from revgan.data.images import list_images

        return list_images(input_path)
    if not input_path.is_file():
        raise UserError(f"input not found: {input_path}")
    return [input_path]


def _check_target(target: Path, dims: int) -> None:
    """Refuse an output that cannot be written before translating anything."""
    if dims == 3:
        from revgan.data.volumes import VOLUME_EXTENSIONS, volume_suffix

        ok, allowed = bool(volume_suffix(target)), VOLUME_EXTENSIONS
    else:
        from revgan.data.images import IMAGE_EXTENSIONS

        ok, allowed = target.suffix.lower() in IMAGE_EXTENSIONS, sorted(IMAGE_EXTENSIONS)
    if not ok:
        raise UserError(f"output {target}: unsupported extension for {dims}D data (use one of "
                        f"{', '.join(allowed)})")
    if target.is_dir():
        raise UserError(f"output {target} is a folder; give a file name")
    require_creatable(target.parent, "output folder")


def translate_path(
    fn: Fn,
    input_path: str | Path,
    output_path: str | Path,
    dims: int,
    window_size: int | Sequence[int],
    overlap: float = 0.5,
    multiple: int = 1,
    device: torch.device | str | None = None,
    normalizer_in: Normalizer | dict | str | None = None,
    normalizer_out: Normalizer | dict | str | None = None,
    input_nc: int | None = None,
    bit_depth: int | None = None,
    overwrite: bool = False,
    mode: str = "gaussian",
    sw_batch_size: int = 1,
    progress: bool = False,
) -> list[Path]:
    """Translate one file, or every file of a folder into a folder with the same names.

    3D (``dims=3``): volumes via :func:`read_volume`/:func:`write_volume`, keeping NIfTI
    affine and header; intensities normalised with ``normalizer_in`` and mapped back with
    ``normalizer_out``. 2D: images via ``read_image`` (already in [-1, 1]; ``input_nc``
    channels, default 3) and ``write_image`` at ``bit_depth`` (default: 16 for 16-bit inputs,
    else 8). An existing output is an error unless ``overwrite``; the input itself is never
    overwritten. Returns the written paths.
    """
    if dims not in (2, 3):
        raise UserError(f"dims must be 2 or 3, got {dims}")
    input_path, output_path = Path(input_path), Path(output_path)
    sources = _inputs(input_path, dims)
    if input_path.is_dir():
        if output_path.is_file():
            raise UserError(f"input {input_path} is a folder, so the output must be a folder, "
                            f"but {output_path} is a file")
        targets = [output_path / s.relative_to(input_path) for s in sources]
    else:
        targets = [output_path / input_path.name if output_path.is_dir() else output_path]
    for source, target in zip(sources, targets):
        if target.resolve() == source.resolve():
            raise UserError(f"output {target} would overwrite its input; choose another path")
        if target.exists() and not overwrite:
            raise UserError(f"output {target} exists; remove it or pass --overwrite")
        _check_target(target, dims)

    pairs: list[tuple[Path, Path]] = list(zip(sources, targets))
    if progress:
        from tqdm import tqdm

        pairs = tqdm(pairs, desc="translate", unit="file")
    kwargs: dict[str, Any] = dict(window_size=window_size, overlap=overlap, multiple=multiple,
                                  device=device, mode=mode, sw_batch_size=sw_batch_size)
    for source, target in pairs:
        if dims == 3:
            from revgan.data.volumes import read_volume, write_volume

            array, meta = read_volume(source)
            if input_nc is not None and array.shape[0] != input_nc:
                raise UserError(f"{source}: volume has {array.shape[0]} channels, the model "
                                f"expects {input_nc}")
            out = translate_array(fn, array, normalizer_in, normalizer_out, **kwargs)
            write_volume(target, out, meta)
        else:
            from revgan.data.images import read_image, write_image

            image, meta = read_image(source, input_nc or 3)
            out = translate_array(fn, image, "none", "none", **kwargs)
            depth = bit_depth or (16 if meta.bit_depth >= 16 else 8)
            write_image(target, out, bit_depth=depth)
    return targets
