"""A folder holding one DICOM series, read as a volume (pydicom).

The slices are ordered by their position along the slice normal, not by file name or
InstanceNumber, and the voxel-to-world affine is built from ImagePositionPatient,
ImageOrientationPatient and PixelSpacing. DICOM patient coordinates are LPS (x to the
patient's left, y to the back); NIfTI and nibabel use RAS, so x and y change sign.

Array layout (as nibabel gives a NIfTI): axis 0 follows the DICOM columns (along the row
direction cosine), axis 1 the rows (along the column cosine), axis 2 the slices; a
multi-sample (RGB) series puts its samples in front as channels. Values are rescaled to
real units (RescaleSlope/RescaleIntercept, e.g. Hounsfield units).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from revgan.errors import UserError

_MAGIC_OFFSET = 128
_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
# Position tolerance (mm) when checking that slices lie on one evenly spaced line.
_POSITION_TOLERANCE = 1e-2


def is_dicom_file(path: Path) -> bool:
    """A DICOM part-10 file (``DICM`` after the 128-byte preamble), or a ``*.dcm`` file.

    DICOMDIR, the index of a DICOM medium, is no image and is left out.
    """
    if path.name.upper() == "DICOMDIR" or not path.is_file():
        return False
    if path.suffix.lower() == ".dcm":
        return True
    try:
        with open(path, "rb") as handle:
            head = handle.read(_MAGIC_OFFSET + 4)
    except OSError:
        return False
    return head[_MAGIC_OFFSET:] == b"DICM"


def dicom_files(folder: Path) -> list[Path]:
    """The DICOM files directly inside ``folder`` (not in sub-folders), sorted by name."""
    return sorted(p for p in Path(folder).iterdir() if is_dicom_file(p))


def is_dicom_series(path: str | Path) -> bool:
    """Whether ``path`` is a folder with at least one DICOM file directly inside it."""
    path = Path(path)
    return path.is_dir() and any(is_dicom_file(p) for p in path.iterdir())


def _datasets(folder: Path, header_only: bool = False) -> list:
    import pydicom
    from pydicom.errors import InvalidDicomError

    files = dicom_files(folder)
    if not files:
        raise UserError(f"{folder} is a folder without DICOM files (expected one DICOM series)")
    datasets = []
    for file in files:
        try:
            datasets.append(pydicom.dcmread(file, force=file.suffix.lower() == ".dcm",
                                            stop_before_pixels=header_only))
        except (InvalidDicomError, OSError, ValueError, EOFError) as exc:
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise UserError(f"cannot read DICOM file {file}: {reason}") from None
    return datasets


def _require(ds, keyword: str, file: str):
    value = ds.get(keyword)
    if value is None or value == "":
        raise UserError(f"{file}: DICOM image without {keyword}, so its slices cannot be "
                        "placed in space")
    return value


def _check_series(folder: Path, datasets: list, header_only: bool = False) -> None:
    uids = sorted({str(ds.get("SeriesInstanceUID", "")) for ds in datasets})
    if len(uids) > 1:
        raise UserError(f"{folder} holds {len(uids)} DICOM series ({', '.join(uids[:3])}"
                        f"{', ...' if len(uids) > 3 else ''}); put each series in its own folder")
    for ds in datasets:
        # A header read stops before the pixels, so there an image is what has a size.
        if "Rows" not in ds or not (header_only or "PixelData" in ds):
            kind = ds.get("Modality", "") or str(ds.get("SOPClassUID", "unknown class"))
            raise UserError(f"{ds.filename}: a DICOM file without image data ({kind}); "
                            "a volume needs a folder holding one image series")
        if int(ds.get("NumberOfFrames", 1) or 1) > 1:
            raise UserError(f"{ds.filename}: multi-frame DICOM is not supported; "
                            "convert it to NIfTI (e.g. with dcm2niix) or to single-frame slices")


def _pixels(ds) -> np.ndarray:
    try:
        pixels = ds.pixel_array
    except Exception as exc:  # missing decoder plug-ins, truncated pixel data, ...
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UserError(f"cannot decode the pixels of {ds.filename}: {reason}") from None
    slope = float(ds.get("RescaleSlope", 1) or 1)
    intercept = float(ds.get("RescaleIntercept", 0) or 0)
    return pixels.astype(np.float32) * np.float32(slope) + np.float32(intercept)


def series_geometry(datasets: list) -> tuple[list, np.ndarray]:
    """The slices ordered along the slice normal, and the voxel-to-LPS affine (4×4)."""
    first = datasets[0]
    name = str(first.filename)
    orientation = np.asarray(_require(first, "ImageOrientationPatient", name), np.float64)
    spacing = np.asarray(_require(first, "PixelSpacing", name), np.float64)
    shape = (int(first.Rows), int(first.Columns))
    for ds in datasets[1:]:
        if not np.allclose(np.asarray(_require(ds, "ImageOrientationPatient", ds.filename),
                                      np.float64), orientation, atol=1e-4):
            raise UserError(f"{ds.filename}: slice orientation differs from {name}; "
                            "not one volume")
        if (int(ds.Rows), int(ds.Columns)) != shape or not np.allclose(
                np.asarray(_require(ds, "PixelSpacing", ds.filename), np.float64), spacing):
            raise UserError(f"{ds.filename}: slice size or pixel spacing differs from {name}; "
                            "not one volume")
    row_cosine, column_cosine = orientation[:3], orientation[3:]
    normal = np.cross(row_cosine, column_cosine)
    positions = np.array([np.asarray(_require(ds, "ImagePositionPatient", ds.filename),
                                     np.float64) for ds in datasets])
    order = np.argsort(positions @ normal, kind="stable")
    datasets = [datasets[i] for i in order]
    positions = positions[order]
    n = len(datasets)
    if n > 1:
        step = (positions[-1] - positions[0]) / (n - 1)
        if np.linalg.norm(step) < _POSITION_TOLERANCE:
            raise UserError(f"the {n} slices of {name}'s series share one position (several "
                            "echoes or time points?); a volume needs one slice per position")
        expected = positions[0] + np.arange(n)[:, None] * step
        worst = float(np.abs(positions - expected).max())
        if worst > max(_POSITION_TOLERANCE, 0.01 * float(np.linalg.norm(step))):
            raise UserError(f"the slices of {name}'s series are not evenly spaced (off by up to "
                            f"{worst:.3g} mm: missing or repeated slices?)")
    else:
        thickness = first.get("SpacingBetweenSlices") or first.get("SliceThickness") or 1.0
        step = normal * float(thickness)
    affine = np.eye(4)
    # PixelSpacing is (between rows, between columns): moving along a row (next column)
    # steps by the column spacing along the row cosine.
    affine[:3, 0] = row_cosine * spacing[1]
    affine[:3, 1] = column_cosine * spacing[0]
    affine[:3, 2] = step  # a tilted gantry gives a sheared affine, as it should
    affine[:3, 3] = positions[0]
    return datasets, affine


def check_dicom_series(folder: str | Path) -> None:
    """The checks of :func:`read_dicom_series` that need only the headers (one series, all
    images, one orientation, evenly spaced): cheap, before anything is translated."""
    folder = Path(folder)
    datasets = _datasets(folder, header_only=True)
    _check_series(folder, datasets, header_only=True)
    series_geometry(datasets)


def read_dicom_series(folder: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Read the DICOM series in ``folder`` as float32 C×X×Y×Z and its voxel-to-RAS affine."""
    folder = Path(folder)
    datasets = _datasets(folder)
    _check_series(folder, datasets)
    datasets, affine_lps = series_geometry(datasets)
    slices = [_pixels(ds) for ds in datasets]
    volume = np.stack(slices, axis=0)  # slice, row, column[, sample]
    if volume.ndim == 3:
        volume = volume[..., None]
    data = np.ascontiguousarray(volume.transpose(3, 2, 1, 0), dtype=np.float32)
    return data, _LPS_TO_RAS @ affine_lps


# --- writing a derived series ----------------------------------------------------------

# Attributes of the source slices that describe its stored pixels or its display and would
# be wrong for new values; dropped rather than carried over.
_STALE = ("SmallestImagePixelValue", "LargestImagePixelValue", "PixelPaddingValue",
          "PixelPaddingRangeLimit", "WindowCenter", "WindowWidth", "WindowCenterWidthExplanation",
          "VOILUTSequence", "ModalityLUTSequence", "RedPaletteColorLookupTableDescriptor",
          "GreenPaletteColorLookupTableDescriptor", "BluePaletteColorLookupTableDescriptor")


def _int16_scaling(values: np.ndarray) -> tuple[str, str]:
    """RescaleSlope and RescaleIntercept (as the DS strings written) that fit ``values``
    into int16 with the finest step."""
    from pydicom.valuerep import format_number_as_ds

    low, high = float(values.min()), float(values.max())
    integral = np.array_equal(values, np.rint(values)) and -32768 <= low and high <= 32767
    if integral or high == low:
        return "1", format_number_as_ds(0.0 if integral else low)
    slope = format_number_as_ds((high - low) / 65000)  # a margin for the rounded strings
    intercept = format_number_as_ds((low + high) / 2)
    return slope, intercept


def write_dicom_series(folder: str | Path, array: np.ndarray, source: str | Path,
                       description: str = "revgan") -> Path:
    """Write ``array`` (1×X×Y×Z, laid out as :func:`read_dicom_series` returns it) as a new
    DICOM series derived from the series in ``source``.

    Each slice keeps its source slice's patient, study, geometry and frame of reference and
    gets new series and instance UIDs, ImageType DERIVED\\SECONDARY, uncompressed signed
    16-bit samples and one RescaleSlope/Intercept for the whole series (values are rounded
    to that step). ``folder`` must not exist; it appears only once every slice is written.
    """
    import copy
    import os
    import shutil
    import tempfile

    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    folder, source = Path(folder), Path(source)
    datasets = _datasets(source, header_only=True)
    _check_series(source, datasets, header_only=True)
    datasets, _ = series_geometry(datasets)
    array = np.asarray(array, dtype=np.float64)
    if array.ndim == 4 and array.shape[0] != 1:
        raise UserError(f"{folder}: a DICOM series holds one channel, the result has "
                        f"{array.shape[0]}; write NIfTI instead")
    volume = array[0] if array.ndim == 4 else array
    expected = (int(datasets[0].Columns), int(datasets[0].Rows), len(datasets))
    if volume.shape != expected:
        raise UserError(f"{folder}: the result's shape {volume.shape} is not the source "
                        f"series' {expected}")
    if datasets[0].get("SamplesPerPixel", 1) != 1:
        raise UserError(f"{source}: a colour series cannot be written back as DICOM; "
                        "write NIfTI instead")
    if folder.exists():
        raise UserError(f"output {folder} exists; remove it or choose another folder")
    slope, intercept = _int16_scaling(volume)
    stored = np.clip(np.rint((volume - float(intercept)) / float(slope)), -32768, 32767)
    stored = stored.astype("<i2")
    series_uid = generate_uid()
    folder.parent.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".partial",
                                    dir=folder.parent))
    try:
        for k, original in enumerate(datasets):
            ds = copy.deepcopy(original)
            for keyword in _STALE:
                if keyword in ds:
                    delattr(ds, keyword)
            if getattr(ds, "file_meta", None) is None:  # a source file without a preamble
                ds.file_meta = FileMetaDataset()
            ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
            ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
            ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
            ds.SeriesInstanceUID = series_uid
            ds.SeriesNumber = int(original.get("SeriesNumber", 0) or 0) + 1000
            ds.SeriesDescription = description[:64]
            ds.ImageType = ["DERIVED", "SECONDARY"]
            ds.InstanceNumber = k + 1
            ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
            ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
            ds.RescaleSlope, ds.RescaleIntercept = slope, intercept
            # A header read has no PixelData element yet: add it with its VR (16-bit: OW).
            ds.add_new(0x7FE00010, "OW", np.ascontiguousarray(stored[:, :, k].T).tobytes())
            ds.save_as(partial / f"IM{k + 1:05d}.dcm", enforce_file_format=True)
        os.replace(partial, folder)
    except OSError as exc:
        raise UserError(f"cannot write DICOM series {folder}: {exc.strerror or exc}") from None
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return folder
