"""Reading and writing 3D volumes (NIfTI, .npy, .npz) as float32 C×D×H×W arrays.

NIfTI stores a 4D multi-channel volume channel-LAST (x, y, z, c); here every volume is
channel-FIRST, so readers move the channel axis to the front and the NIfTI writer moves it
back. The NIfTI affine and header travel in :class:`VolumeMeta` so a written result opens
aligned with its input in any viewer. Values are returned in the file's own units: intensity
normalisation is the job of :mod:`revgan.data.intensity`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from revgan.errors import UserError

VOLUME_EXTENSIONS = (".nii.gz", ".nii", ".npy", ".npz")
_NPZ_KEYS = ("arr_0", "volume")


@dataclass
class VolumeMeta:
    """What a volume file held besides its voxels.

    affine: 4×4 voxel-to-world matrix (NIfTI; for arrays, a diagonal of ``spacing``);
    header: the nibabel header (None for arrays); spacing: voxel size per spatial axis;
    dtype: the stored sample type; format: "nifti", "npy" or "npz"; shape: C×D×H×W as read.
    """

    affine: np.ndarray = field(default_factory=lambda: np.eye(4))
    header: Any = None
    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0)
    dtype: str = "float32"
    format: str = "npy"
    shape: tuple[int, ...] = ()


def volume_suffix(path: str | Path) -> str:
    """The volume extension of ``path`` ('.nii.gz', '.nii', '.npy', '.npz') or ''."""
    name = Path(path).name.lower()
    return next((ext for ext in VOLUME_EXTENSIONS if name.endswith(ext)), "")


def volume_stem(path: str | Path) -> str:
    """File name without its volume extension (``x.nii.gz`` -> ``x``)."""
    name = Path(path).name
    suffix = volume_suffix(path)
    return name[: len(name) - len(suffix)] if suffix else Path(path).stem


def is_volume_file(path: str | Path) -> bool:
    return bool(volume_suffix(path))


def list_volumes(folder: str | Path) -> list[Path]:
    """All volume files below ``folder`` (recursive), sorted by path."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"volume folder not found: {folder}")
    paths = sorted(p for p in folder.rglob("*") if p.is_file() and is_volume_file(p))
    if not paths:
        raise UserError(f"no volumes ({', '.join(VOLUME_EXTENSIONS)}) found in {folder}")
    return paths


def read_volume(path: str | Path) -> tuple[np.ndarray, VolumeMeta]:
    """Read a volume as float32 C×D×H×W plus its :class:`VolumeMeta`.

    3D data gives C=1. 4D NIfTI is channel-last (x, y, z, c), 4D .npy/.npz channel-first.
    Unreadable files, non-3D data, NaN/inf and empty volumes raise :class:`UserError`.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"volume file not found: {path}")
    suffix = volume_suffix(path)
    if suffix in (".nii", ".nii.gz"):
        data, meta = _read_nifti(path)
    elif suffix == ".npy":
        data, meta = _read_npy(path)
    elif suffix == ".npz":
        data, meta = _read_npz(path)
    else:
        raise UserError(f"{path}: unsupported volume extension (use one of "
                        f"{', '.join(VOLUME_EXTENSIONS)})")
    if data.size == 0:
        raise UserError(f"{path}: volume is empty (shape {tuple(data.shape)})")
    if not np.isfinite(data).all():
        raise UserError(f"{path}: volume contains NaN or infinite values")
    meta.shape = tuple(int(s) for s in data.shape)
    return data, meta


def write_volume(
    path: str | Path,
    array: np.ndarray | torch.Tensor,
    meta: VolumeMeta | None = None,
    dtype: str | np.dtype = np.float32,
) -> Path:
    """Write a C×D×H×W (or D×H×W) array; the format follows the extension.

    NIfTI keeps ``meta``'s affine, voxel spacing and header; C>1 is stored channel-last as
    NIfTI expects. .npy/.npz store the array channel-first (3D when C=1, as most tools
    expect). Integer ``dtype`` rounds and clips to its range. Creates parent folders and
    overwrites ``path`` (callers decide whether that is allowed).
    """
    path = Path(path)
    if isinstance(array, torch.Tensor):
        array = array.detach().to("cpu", torch.float32).numpy()
    array = np.asarray(array)
    if array.ndim == 3:
        array = array[None]
    if array.ndim != 4:
        raise UserError(f"{path}: expected a C×D×H×W volume, got shape {tuple(array.shape)}")
    out = _cast(array, np.dtype(dtype), path)
    suffix = volume_suffix(path)
    if not suffix:
        raise UserError(f"{path}: unsupported volume extension (use one of "
                        f"{', '.join(VOLUME_EXTENSIONS)})")
    stored = out[0] if out.shape[0] == 1 else out
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if suffix == ".npy":
            np.save(path, stored)
        elif suffix == ".npz":
            np.savez_compressed(path, volume=stored)
        else:
            _write_nifti(path, out, meta)
    except OSError as exc:  # a parent that is a file, no permission, disk full
        raise UserError(f"cannot write volume {path}: {exc.strerror or exc}") from None
    return path


# --- readers ---------------------------------------------------------------------------


def _to_channel_first(data: np.ndarray, path: Path, channel_last: bool) -> np.ndarray:
    if data.ndim == 3:
        return data[None]
    if data.ndim == 4:
        return np.moveaxis(data, -1, 0) if channel_last else data
    kind = "2D" if data.ndim <= 2 else f"{data.ndim}D"
    raise UserError(f"{path}: expected a 3D volume (optionally with channels), "
                    f"got {kind} data of shape {tuple(data.shape)}")


def _read_nifti(path: Path) -> tuple[np.ndarray, VolumeMeta]:
    import nibabel as nib

    try:
        image = nib.load(str(path))
        shape = image.shape
        # 5D with a singleton 4th axis is NIfTI's layout for vector images (x, y, z, 1, c).
        if len(shape) == 5 and shape[3] == 1:
            data = np.asarray(image.dataobj, dtype=np.float32).reshape(shape[:3] + shape[4:])
        else:
            data = np.asarray(image.get_fdata(dtype=np.float32))
        stored = str(image.get_data_dtype())
    except UserError:
        raise
    except Exception as exc:  # nibabel/gzip/zlib raise many types for corrupt files
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UserError(f"cannot read NIfTI volume {path}: {reason}") from None
    data = np.ascontiguousarray(_to_channel_first(data, path, channel_last=True), np.float32)
    zooms = tuple(float(z) for z in image.header.get_zooms()[:3])
    meta = VolumeMeta(affine=np.asarray(image.affine, dtype=np.float64).copy(),
                      header=image.header.copy(), spacing=zooms, dtype=stored, format="nifti")
    return data, meta


def _array_meta(data: np.ndarray, fmt: str) -> VolumeMeta:
    return VolumeMeta(dtype=str(data.dtype), format=fmt)


def _as_float(data: np.ndarray, path: Path) -> np.ndarray:
    if data.dtype.kind not in "biuf":
        raise UserError(f"{path}: unsupported sample type {data.dtype}")
    return np.ascontiguousarray(data, dtype=np.float32)


def _read_npy(path: Path) -> tuple[np.ndarray, VolumeMeta]:
    try:
        data = np.load(path, allow_pickle=False)
    except Exception as exc:
        raise UserError(f"cannot read .npy volume {path}: {exc}") from None
    meta = _array_meta(data, "npy")
    return _to_channel_first(_as_float(data, path), path, channel_last=False), meta


def _read_npz(path: Path) -> tuple[np.ndarray, VolumeMeta]:
    try:
        with np.load(path, allow_pickle=False) as archive:
            keys = list(archive.keys())
            if len(keys) == 1:
                key = keys[0]
            else:
                key = next((k for k in _NPZ_KEYS if k in keys), None)
                if key is None:
                    raise UserError(f"{path}: .npz holds arrays {keys}; expected one array or "
                                    f"one named {' or '.join(_NPZ_KEYS)}")
            data = archive[key]
    except UserError:
        raise
    except Exception as exc:
        raise UserError(f"cannot read .npz volume {path}: {exc}") from None
    meta = _array_meta(data, "npz")
    return _to_channel_first(_as_float(data, path), path, channel_last=False), meta


# --- writers ---------------------------------------------------------------------------


def _cast(array: np.ndarray, dtype: np.dtype, path: Path) -> np.ndarray:
    if dtype.kind == "f":
        return np.ascontiguousarray(array, dtype=dtype)
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        return np.clip(np.rint(array), info.min, info.max).astype(dtype)
    raise UserError(f"{path}: cannot write volumes as {dtype}")


def _write_nifti(path: Path, array: np.ndarray, meta: VolumeMeta | None) -> None:
    import nibabel as nib

    data = array[0] if array.shape[0] == 1 else np.moveaxis(array, 0, -1)
    if meta is not None and meta.header is not None:
        header = meta.header.copy()
        cls = nib.Nifti2Image if isinstance(header, nib.Nifti2Header) else nib.Nifti1Image
        image = cls(data, meta.affine, header=header)
    else:
        affine = np.asarray(meta.affine if meta is not None else np.eye(4), dtype=np.float64)
        image = nib.Nifti1Image(data, affine)
        if meta is not None:
            image.header.set_zooms(tuple(meta.spacing) + image.header.get_zooms()[3:])
    image.set_data_dtype(data.dtype)
    # The input's scaling (scl_slope/inter) described its stored integers, not our floats.
    image.header.set_slope_inter(None, None)
    try:
        nib.save(image, str(path))
    except Exception as exc:
        raise UserError(f"cannot write NIfTI volume {path}: {exc}") from None
