"""Reading and writing 3D volumes (NIfTI, .npy, .npz) as float32 C×D×H×W arrays.

NIfTI stores a 4D multi-channel volume channel-LAST (x, y, z, c); here every volume is
channel-FIRST, so readers move the channel axis to the front and the NIfTI writer moves it
back. The NIfTI affine and header travel in :class:`VolumeMeta` so a written result opens
aligned with its input in any viewer. Values are returned in the file's own units: intensity
normalisation is the job of :mod:`revgan.data.intensity`.
"""

from __future__ import annotations

import gzip
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from revgan.data.files import check_readable, list_data_files, shown
from revgan.errors import UserError
from revgan.runs.atomic import atomic_path

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
    if not suffix and Path(path).is_dir():  # a DICOM series folder keeps its whole name
        return name
    return name[: len(name) - len(suffix)] if suffix else Path(path).stem


def is_volume_file(path: str | Path) -> bool:
    return bool(volume_suffix(path))


def list_volumes(folder: str | Path) -> list[Path]:
    """All volume files and DICOM series folders below ``folder`` (recursive), sorted."""
    from revgan.data.dicom import is_dicom_series

    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"volume folder not found: {folder}")
    paths = list_data_files(folder, is_volume_file, accept_folder=is_dicom_series)
    if not paths:
        raise UserError(f"no volumes ({', '.join(VOLUME_EXTENSIONS)} or DICOM series "
                        f"folders) found in {folder}")
    return paths


def read_volume(path: str | Path) -> tuple[np.ndarray, VolumeMeta]:
    """Read a volume as float32 C×D×H×W plus its :class:`VolumeMeta`.

    3D data gives C=1. 4D NIfTI is channel-last (x, y, z, c), 4D .npy/.npz channel-first.
    A folder is read as one DICOM series (:mod:`revgan.data.dicom`), with a RAS affine.
    Unreadable files, non-3D data, NaN/inf and empty volumes raise :class:`UserError`.
    """
    path = Path(path)
    suffix = volume_suffix(path)
    if path.is_file():
        check_readable(path, "volume")
    if path.is_dir():  # a folder holding one DICOM series
        from revgan.data.dicom import read_dicom_series

        data, affine = read_dicom_series(path)
        meta = VolumeMeta(affine=affine, spacing=tuple(np.linalg.norm(affine[:3, :3], axis=0)),
                          format="dicom")
    elif not path.is_file():
        raise UserError(f"volume file not found: {path}")
    elif suffix in (".nii", ".nii.gz"):
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


def check_volume_file(path: str | Path) -> None:
    """The checks of :func:`read_volume` that need no voxels (exists, readable, format,
    3D + channels, no zero-length axis, fits in memory): cheap, for refusing a folder of
    inputs before any output is written. Folders (DICOM series): their headers."""
    path = Path(path)
    if path.is_dir():
        from revgan.data.dicom import check_dicom_series

        return check_dicom_series(path)
    if not path.is_file():
        raise UserError(f"volume file not found: {path}")
    check_readable(path, "volume")
    suffix = volume_suffix(path)
    try:
        if suffix in (".nii", ".nii.gz"):
            _open_nifti(path)
        elif suffix == ".npy":
            _check_npy(path)
        elif suffix == ".npz":
            with np.load(path, allow_pickle=False) as archive:
                _npz_key(archive, path)
        else:
            raise UserError(f"{path}: unsupported volume extension (use one of "
                            f"{', '.join(VOLUME_EXTENSIONS)})")
    except UserError:
        raise
    except Exception as exc:  # a damaged header
        raise _nifti_error(path, exc) if suffix.startswith(".nii") else UserError(
            f"cannot read {suffix} volume {path}: {exc}") from None


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
    replaces ``path`` atomically (callers decide whether that is allowed).
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
        # Written beside ``path`` and renamed over it: a reader or a kill sees no half file.
        # The temporary name has no volume extension, so formats are chosen here, not by name.
        with atomic_path(path) as temp, open(temp, "wb") as handle:
            if suffix == ".npy":
                np.save(handle, stored)
            elif suffix == ".npz":
                np.savez_compressed(handle, volume=stored)
            else:
                _write_nifti(path, out, meta, handle, compress=suffix == ".nii.gz")
    except OSError as exc:  # a parent that is a file, no permission, disk full
        raise UserError(f"cannot write volume {path}: {exc.strerror or exc}") from None
    return path


# --- readers ---------------------------------------------------------------------------


def max_volume_bytes() -> int:
    """The largest float32 volume a reader will allocate: the machine's physical memory, or
    ``REVGAN_MAX_VOLUME_BYTES`` when set (a lower limit for a shared machine)."""
    value = os.environ.get("REVGAN_MAX_VOLUME_BYTES", "").strip()
    if value:
        try:
            return int(float(value))
        except ValueError:
            raise UserError(f"REVGAN_MAX_VOLUME_BYTES must be a number of bytes, got {value!r}")\
                from None
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # not POSIX: no limit of our own
        return 2**63 - 1


def _size_text(nbytes: float) -> str:
    for unit, power in (("TiB", 40), ("GiB", 30), ("MiB", 20)):
        if nbytes >= 2**power:
            return f"{nbytes / 2**power:.3g} {unit}"
    return f"{nbytes:.0f} bytes"


def check_volume_shape(path: str | Path, shape: tuple[int, ...]) -> None:
    """Refuse, from a header alone, before any voxel is read: not 3D (+ channels), an axis
    of length zero, or more voxels than memory can hold as float32 (``max_volume_bytes``).

    ``shape`` is the stored shape with NIfTI's vector layout (x, y, z, 1, c) already
    reduced to (x, y, z, c).
    """
    shape = tuple(int(s) for s in shape)
    if len(shape) not in (3, 4):
        raise UserError(f"{shown(path)}: expected a 3D volume (optionally with channels), got "
                        f"{len(shape)}D data of shape {shape}")
    if min(shape) < 1:
        raise UserError(f"{shown(path)}: volume has a zero-length dimension (shape {shape})")
    nbytes, limit = math.prod(shape) * 4, max_volume_bytes()
    if nbytes > limit:
        raise UserError(f"{shown(path)}: header claims a volume of shape {shape}, "
                        f"{_size_text(nbytes)} as float32, more than the {_size_text(limit)} "
                        f"this machine can hold (REVGAN_MAX_VOLUME_BYTES sets the limit)")


def _npy_shape(handle) -> tuple[int, ...]:
    """The shape in a .npy header, read without the data."""
    version = np.lib.format.read_magic(handle)
    read = (np.lib.format.read_array_header_1_0 if version == (1, 0)
            else np.lib.format.read_array_header_2_0)
    return tuple(read(handle)[0])


def _to_channel_first(data: np.ndarray, path: Path, channel_last: bool) -> np.ndarray:
    if data.ndim == 3:
        return data[None]
    if data.ndim == 4:
        return np.moveaxis(data, -1, 0) if channel_last else data
    kind = "2D" if data.ndim <= 2 else f"{data.ndim}D"
    raise UserError(f"{path}: expected a 3D volume (optionally with channels), "
                    f"got {kind} data of shape {tuple(data.shape)}")


def _open_nifti(path: Path) -> tuple[Any, tuple[int, ...]]:
    """The image with its header checked and its voxels not yet read, and its shape."""
    import nibabel as nib

    image = nib.load(str(path))
    shape = image.shape
    # 5D with a singleton 4th axis is NIfTI's layout for vector images (x, y, z, 1, c).
    if len(shape) == 5 and shape[3] == 1:
        shape = shape[:3] + shape[4:]
    check_volume_shape(path, shape)
    return image, shape


def _nifti_error(path: Path, exc: Exception) -> UserError:
    reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return UserError(f"cannot read NIfTI volume {path}: {reason}")


def _read_nifti(path: Path) -> tuple[np.ndarray, VolumeMeta]:
    try:
        image, shape = _open_nifti(path)
        if len(image.shape) == 5:
            data = np.asarray(image.dataobj, dtype=np.float32).reshape(shape)
        else:
            data = np.asarray(image.get_fdata(dtype=np.float32))
        stored = str(image.get_data_dtype())
    except UserError:
        raise
    except Exception as exc:  # nibabel/gzip/zlib raise many types for corrupt files
        raise _nifti_error(path, exc) from None
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


def _check_npy(path: Path) -> None:
    with open(path, "rb") as handle:
        check_volume_shape(path, _npy_shape(handle))


def _read_npy(path: Path) -> tuple[np.ndarray, VolumeMeta]:
    try:
        _check_npy(path)
        data = np.load(path, allow_pickle=False)
    except UserError:
        raise
    except Exception as exc:
        raise UserError(f"cannot read .npy volume {path}: {exc}") from None
    meta = _array_meta(data, "npy")
    return _to_channel_first(_as_float(data, path), path, channel_last=False), meta


def _npz_key(archive: Any, path: Path) -> str:
    """The volume's array in an open .npz, its header checked."""
    keys = list(archive.keys())
    if len(keys) == 1:
        key = keys[0]
    else:
        key = next((k for k in _NPZ_KEYS if k in keys), None)
        if key is None:
            raise UserError(f"{path}: .npz holds arrays {keys}; expected one array or "
                            f"one named {' or '.join(_NPZ_KEYS)}")
    member_name = f"{key}.npy" if f"{key}.npy" in archive.zip.namelist() else key
    with archive.zip.open(member_name) as member:
        check_volume_shape(path, _npy_shape(member))
    return key


def _read_npz(path: Path) -> tuple[np.ndarray, VolumeMeta]:
    try:
        with np.load(path, allow_pickle=False) as archive:
            data = archive[_npz_key(archive, path)]
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


def _write_nifti(path: Path, array: np.ndarray, meta: VolumeMeta | None, handle: Any,
                 compress: bool) -> None:
    """Write ``array`` as NIfTI into the open binary ``handle`` (named ``path`` in errors)."""
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
        if compress:  # nibabel's own level for .nii.gz; mtime 0 keeps equal files equal
            with gzip.GzipFile(fileobj=handle, mode="wb", compresslevel=1, mtime=0) as stream:
                image.to_stream(stream)
        else:
            image.to_stream(handle)
    except OSError:
        raise
    except Exception as exc:
        raise UserError(f"cannot write NIfTI volume {path}: {exc}") from None
