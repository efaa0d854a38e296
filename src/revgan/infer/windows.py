"""Full-size translation of image and volume files, window by window
(:mod:`revgan.models.sliding_window`), in the input's units."""

from __future__ import annotations

import glob
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from revgan.data.intensity import Normalizer, make_normalizer, normalizer_from_dict, output_stats
from revgan.errors import UserError, require_creatable
from revgan.models.sliding_window import sliding_window_translate

Fn = Callable[[Tensor], Tensor]


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


def _is_series(path: Path, dims: int) -> bool:
    """A DICOM series folder: one volume input, written as ``<name>.nii.gz``."""
    from revgan.data.dicom import is_dicom_series

    return dims == 3 and is_dicom_series(path)


def _inputs(input_path: Path, dims: int) -> list[Path]:
    if _is_series(input_path, dims):
        return [input_path]
    if input_path.is_dir():
        if dims == 3:
            from revgan.data.volumes import list_volumes

            return list_volumes(input_path)
        from revgan.data.images import list_images

        return list_images(input_path)
    if not input_path.is_file():
        raise UserError(f"input not found: {input_path}")
    return [input_path]


def _writes_dicom(source: Path, target: Path, dims: int) -> bool:
    """A DICOM series in and an output without extension: the result as a DICOM series."""
    return dims == 3 and source.is_dir() and not target.suffix


def _check_target(target: Path, dims: int, dicom: bool = False) -> None:
    """Refuse an output that cannot be written before translating anything."""
    if dims == 3:
        from revgan.data.volumes import VOLUME_EXTENSIONS, volume_suffix

        ok, allowed = dicom or bool(volume_suffix(target)), VOLUME_EXTENSIONS
    else:
        from revgan.data.images import IMAGE_EXTENSIONS

        ok, allowed = target.suffix.lower() in IMAGE_EXTENSIONS, sorted(IMAGE_EXTENSIONS)
    if not ok:
        raise UserError(f"output {target}: unsupported extension for {dims}D data (use one of "
                        f"{', '.join(allowed)})")
    if target.is_dir() and not dicom:
        raise UserError(f"output {target} is a folder; give a file name")
    require_creatable(target.parent, "output folder")


def _check_source(source: Path, dims: int) -> None:
    """What an input's header can tell (readable, format, shape, size), without its data."""
    if dims == 3:
        from revgan.data.volumes import check_volume_file

        check_volume_file(source)
    else:
        from revgan.data.images import image_size

        image_size(source)


def _remove_partial_writes(target: Path) -> None:
    """Delete the temporary files an atomic write of ``target`` left when it was killed."""
    for leftover in target.parent.glob(f".{glob.escape(target.name)}.*.tmp"):
        leftover.unlink(missing_ok=True)


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
    skip_existing: bool = False,
) -> list[Path]:
    """Translate one file, or every file of a folder into a folder with the same names.

    3D (``dims=3``): volumes via :func:`read_volume`/:func:`write_volume`, keeping NIfTI
    affine and header; intensities normalised with ``normalizer_in`` and mapped back with
    ``normalizer_out``. 2D: images via ``read_image`` (already in [-1, 1]; ``input_nc``
    channels, default 3) and ``write_image`` at ``bit_depth`` (default: 16 for 16-bit inputs,
    else 8). An existing output is an error unless ``overwrite`` (replace it) or
    ``skip_existing`` (keep it and translate only the missing ones: how a folder interrupted
    midway is completed); the input itself is never overwritten. Every input's header is
    checked before anything is written, and every output is written atomically, so a kill
    leaves whole outputs or none. Returns the paths written.
    """
    if dims not in (2, 3):
        raise UserError(f"dims must be 2 or 3, got {dims}")
    if overwrite and skip_existing:
        raise UserError("--overwrite and --skip_existing contradict each other; give one")
    input_path, output_path = Path(input_path), Path(output_path)
    sources = _inputs(input_path, dims)

    def named(target: Path, source: Path) -> Path:
        return target.with_name(target.name + ".nii.gz") if source.is_dir() else target

    if input_path.is_dir() and sources != [input_path]:
        if output_path.is_file():
            raise UserError(f"input {input_path} is a folder, so the output must be a folder, "
                            f"but {output_path} is a file")
        targets = [named(output_path / s.relative_to(input_path), s) for s in sources]
    else:
        targets = [named(output_path / input_path.name, input_path) if output_path.is_dir()
                   else output_path]
    pairs: list[tuple[Path, Path]] = []
    for source, target in zip(sources, targets):
        if target.resolve() == source.resolve():
            raise UserError(f"output {target} would overwrite its input; choose another path")
        if target.exists() and not overwrite:
            if skip_existing and target.is_file():
                continue
            raise UserError(f"output {target} exists; remove it or pass --overwrite "
                            "(or --skip_existing to keep it)")
        _check_target(target, dims, _writes_dicom(source, target, dims))
        pairs.append((source, target))
    for source, _ in pairs:  # headers only: a bad file stops the run before any output
        _check_source(source, dims)
    for _, target in pairs:
        _remove_partial_writes(target)
    if progress:
        from tqdm import tqdm

        pairs = tqdm(pairs, desc="translate", unit="file")
    kwargs: dict[str, Any] = dict(window_size=window_size, overlap=overlap, multiple=multiple,
                                  device=device, mode=mode, sw_batch_size=sw_batch_size)
    written = []
    for source, target in pairs:
        if dims == 3:
            from revgan.data.volumes import read_volume, write_volume

            array, meta = read_volume(source)
            if input_nc is not None and array.shape[0] != input_nc:
                raise UserError(f"{source}: volume has {array.shape[0]} channels, the model "
                                f"expects {input_nc}")
            out = translate_array(fn, array, normalizer_in, normalizer_out, **kwargs)
            if _writes_dicom(source, target, dims):
                from revgan.data.dicom import write_dicom_series

                write_dicom_series(target, out, source, "revgan translate")
            else:
                write_volume(target, out, meta)
        else:
            from revgan.data.images import read_image, write_image

            image, meta = read_image(source, input_nc or 3)
            out = translate_array(fn, image, "none", "none", **kwargs)
            depth = bit_depth or (16 if meta.bit_depth >= 16 else 8)
            write_image(target, out, bit_depth=depth)
        written.append(target)
    return written
