"""DICOM series folders as volumes: geometry (LPS -> RAS), slice order, translate/train/test."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from helpers import cli_error, run_cli
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

from revgan.config import RunConfig
from revgan.data.volumes import list_volumes, read_volume, volume_stem, write_volume

# An oblique orientation whose cosines are exact decimals (3-4-5 triangles), so the values
# written as DICOM strings are the values the expected affine is built from.
ROW_COSINE = np.array([0.6, 0.8, 0.0])  # direction of increasing column index
COLUMN_COSINE = np.array([-0.48, 0.36, 0.8])  # direction of increasing row index
NORMAL = np.cross(ROW_COSINE, COLUMN_COSINE)  # (0.64, -0.48, 0.6)
COLUMN_SPACING, ROW_SPACING, SLICE_SPACING = 0.5, 0.75, 2.5  # anisotropic
ORIGIN = np.array([-30.5, 12.25, 40.0])  # LPS position of the first voxel
SLOPE, INTERCEPT = 2.0, -1024.0


def expected_ras_affine() -> np.ndarray:
    """Voxel (column, row, slice) -> RAS, from the DICOM definition of the geometry."""
    lps = np.eye(4)
    lps[:3, 0] = ROW_COSINE * COLUMN_SPACING
    lps[:3, 1] = COLUMN_COSINE * ROW_SPACING
    lps[:3, 2] = NORMAL * SLICE_SPACING
    lps[:3, 3] = ORIGIN
    return np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps


def stored_volume(shape=(5, 6, 4), seed=0) -> np.ndarray:
    """Known stored samples, indexed (column, row, slice)."""
    return np.random.default_rng(seed).integers(-500, 1500, size=shape).astype(np.int16)


def write_series(folder: Path, stored: np.ndarray, series_uid: str | None = None,
                 seed: int = 0) -> None:
    """One CT series, one file per slice; files and InstanceNumbers in a shuffled order so
    only the positions give the slice order."""
    folder.mkdir(parents=True, exist_ok=True)
    series_uid = series_uid or generate_uid()
    study_uid = generate_uid()
    n_slices = stored.shape[2]
    shuffled = np.random.default_rng(seed + 100).permutation(n_slices)
    for file_index, k in enumerate(shuffled):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, meta.MediaStorageSOPInstanceUID
        ds.Modality, ds.PatientID = "CT", "phantom"
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid, series_uid
        ds.InstanceNumber = int(n_slices - file_index)  # deliberately not the slice order
        ds.Rows, ds.Columns = stored.shape[1], stored.shape[0]
        ds.PixelSpacing = [ROW_SPACING, COLUMN_SPACING]
        ds.SliceThickness = SLICE_SPACING
        ds.ImageOrientationPatient = [*ROW_COSINE.tolist(), *COLUMN_COSINE.tolist()]
        ds.ImagePositionPatient = (ORIGIN + k * SLICE_SPACING * NORMAL).round(6).tolist()
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleSlope, ds.RescaleIntercept = SLOPE, INTERCEPT
        pixels = np.ascontiguousarray(stored[:, :, k].T)  # rows × columns
        ds.PixelData = pixels.astype("<i2").tobytes()
        ds.save_as(folder / f"IM{file_index:04d}", enforce_file_format=True)


def known_values(stored: np.ndarray) -> np.ndarray:
    return stored.astype(np.float32) * SLOPE + INTERCEPT


def test_series_reads_as_the_known_volume_with_its_ras_affine(tmp_path):
    stored = stored_volume()
    write_series(tmp_path / "series", stored)
    data, meta = read_volume(tmp_path / "series")
    assert data.shape == (1, *stored.shape)
    np.testing.assert_array_equal(data[0], known_values(stored))
    np.testing.assert_allclose(meta.affine, expected_ras_affine(), atol=1e-9)
    # A voxel's world position, computed straight from the DICOM attributes (LPS), in RAS.
    i, j, k = 3, 5, 2
    lps = ORIGIN + i * COLUMN_SPACING * ROW_COSINE + j * ROW_SPACING * COLUMN_COSINE \
        + k * SLICE_SPACING * NORMAL
    np.testing.assert_allclose((meta.affine @ [i, j, k, 1])[:3], lps * [-1, -1, 1], atol=1e-9)

    out = write_volume(tmp_path / "out.nii.gz", data, meta)
    written = nib.load(out)
    np.testing.assert_array_equal(written.get_fdata(), known_values(stored))
    np.testing.assert_allclose(written.affine, expected_ras_affine(), atol=1e-5)
    np.testing.assert_allclose(written.header.get_zooms()[:3],
                               (COLUMN_SPACING, ROW_SPACING, SLICE_SPACING), atol=1e-6)


def test_series_folders_are_listed_as_volumes(tmp_path):
    write_series(tmp_path / "data" / "1.2.840.5", stored_volume())
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 4), np.float32), np.eye(4)),
             tmp_path / "data" / "case0.nii.gz")
    (tmp_path / "data" / "notes.txt").write_text("not a volume")
    listed = list_volumes(tmp_path / "data")
    assert listed == [tmp_path / "data" / "1.2.840.5", tmp_path / "data" / "case0.nii.gz"]
    assert volume_stem(listed[0]) == "1.2.840.5"  # a UID-named folder keeps its dots
    assert list_volumes(tmp_path / "data" / "1.2.840.5") == [tmp_path / "data" / "1.2.840.5"]


class Identity(torch.nn.Module):
    size_divisor = 2

    def forward(self, x, direction="AtoB"):
        return x


def _identity_run(monkeypatch):
    from revgan.infer import translate as translate_module

    opt = RunConfig(dims=3, patch_size=(8, 8, 8), direction="AtoB", intensity="minmax",
                    input_nc=1, output_nc=1)
    monkeypatch.setattr(translate_module, "load_generator", lambda *a, **k: (Identity(), opt))


def test_translate_a_series_and_a_folder_of_series_to_nifti(tmp_path, monkeypatch):
    _identity_run(monkeypatch)
    stored = stored_volume(shape=(10, 12, 6), seed=1)
    write_series(tmp_path / "in" / "s1", stored, seed=1)
    write_series(tmp_path / "in" / "s2", stored_volume(shape=(10, 12, 6), seed=2), seed=2)
    out = tmp_path / "one.nii.gz"
    run_cli("translate", "--model_dir", tmp_path, "--input", tmp_path / "in" / "s1",
            "--output", out, "--no_progress", "--gpu_ids", "-1")
    written = nib.load(out)
    # Identity through min-max normalisation and back: the known volume, float rounding.
    np.testing.assert_allclose(written.get_fdata(), known_values(stored), atol=2e-3)
    np.testing.assert_allclose(written.affine, expected_ras_affine(), atol=1e-5)

    run_cli("translate", "--model_dir", tmp_path, "--input", tmp_path / "in",
            "--output", tmp_path / "many", "--no_progress", "--gpu_ids", "-1")
    assert sorted(p.name for p in (tmp_path / "many").iterdir()) == ["s1.nii.gz", "s2.nii.gz"]
    np.testing.assert_allclose(nib.load(tmp_path / "many" / "s1.nii.gz").get_fdata(),
                               written.get_fdata(), atol=1e-6)


def test_translate_a_series_to_a_dicom_series_on_request(tmp_path, monkeypatch):
    """An output path without extension for a series input: a new DICOM series with the
    source's geometry and study, new UIDs, and the values within the rescale step."""
    from pydicom import dcmread

    _identity_run(monkeypatch)
    stored = stored_volume(shape=(10, 12, 6), seed=5)
    write_series(tmp_path / "in", stored, seed=5)
    out = tmp_path / "derived"
    run_cli("translate", "--model_dir", tmp_path, "--input", tmp_path / "in", "--output", out,
            "--no_progress", "--gpu_ids", "-1")
    data, meta = read_volume(out)
    step = float(dcmread(next(out.iterdir())).RescaleSlope)
    assert step < 0.1
    np.testing.assert_allclose(data[0], known_values(stored), atol=step / 2 + 2e-3)
    np.testing.assert_allclose(meta.affine, expected_ras_affine(), atol=1e-6)
    source, derived = dcmread(next((tmp_path / "in").iterdir())), dcmread(next(out.iterdir()))
    assert derived.StudyInstanceUID == source.StudyInstanceUID
    assert derived.SeriesInstanceUID != source.SeriesInstanceUID
    assert list(derived.ImageType) == ["DERIVED", "SECONDARY"]
    uids = {dcmread(f).SOPInstanceUID for f in out.iterdir()}
    assert len(uids) == 6 and source.SOPInstanceUID not in uids
    assert not list(tmp_path.glob(".derived.*"))  # no partial folder left


def test_a_bad_series_in_a_folder_stops_before_any_output(tmp_path, capsys, monkeypatch):
    _identity_run(monkeypatch)
    write_series(tmp_path / "in" / "a_good", stored_volume(seed=6), seed=6)
    write_series(tmp_path / "in" / "b_mixed", stored_volume(seed=7), series_uid="1.2.9.1", seed=7)
    write_series(tmp_path / "other", stored_volume(seed=8), series_uid="1.2.9.2", seed=8)
    for i, file in enumerate(sorted((tmp_path / "other").iterdir())):
        file.rename(tmp_path / "in" / "b_mixed" / f"X{i}")
    line = cli_error(capsys, "translate", "--model_dir", tmp_path, "--input", tmp_path / "in",
                     "--output", tmp_path / "out", "--gpu_ids", "-1", "--no_progress")
    assert "2 DICOM series" in line
    assert not (tmp_path / "out" / "a_good.nii.gz").exists()


def test_train_and_test_on_series_folders(tmp_path):
    root = tmp_path / "d"
    for split, seeds in (("train", (0, 1)), ("test", (2,))):
        for seed in seeds:
            stored = stored_volume(shape=(16, 16, 16), seed=seed)
            write_series(root / f"{split}A" / f"case{seed}", stored, seed=seed)
            write_series(root / f"{split}B" / f"case{seed}", stored // 2, seed=seed + 7)
    ck, res = tmp_path / "ck", tmp_path / "res"
    tiny = ["--ngf", "4", "--ndf", "4", "--patch_size", "16", "--samples_per_volume", "1",
            "--num_threads", "0", "--no_progress", "--gpu_ids", "-1"]
    run_cli("train", "--dataroot", root, "--name", "dcm", "--checkpoints_dir", ck,
            "--model", "paired_revgan3d", "--netG", "edsrF_2", *tiny,
            "--n_epochs", "1", "--n_epochs_decay", "0")
    run_cli("test", "--dataroot", root, "--name", "dcm", "--model", "paired_revgan3d",
            "--checkpoints_dir", ck, "--results_dir", res, "--no_progress", "--gpu_ids", "-1")
    fake = nib.load(res / "dcm" / "test_latest" / "images" / "fake_B" / "case2.nii.gz")
    assert fake.shape == (16, 16, 16)
    np.testing.assert_allclose(fake.affine, expected_ras_affine(), atol=1e-5)


def test_two_series_in_one_folder_is_one_clear_line(tmp_path, capsys, monkeypatch):
    _identity_run(monkeypatch)
    write_series(tmp_path / "mixed", stored_volume(seed=3), series_uid="1.2.3.1", seed=3)
    second = tmp_path / "second"
    write_series(second, stored_volume(seed=4), series_uid="1.2.3.2", seed=4)
    for i, file in enumerate(sorted(second.iterdir())):
        file.rename(tmp_path / "mixed" / f"B{i}")
    line = cli_error(capsys, "translate", "--model_dir", tmp_path, "--input", tmp_path / "mixed",
                     "--output", tmp_path / "o.nii.gz", "--gpu_ids", "-1", "--no_progress")
    assert "2 DICOM series" in line and "1.2.3.1" in line
    assert not (tmp_path / "o.nii.gz").exists()


def test_non_image_dicom_is_one_clear_line(tmp_path, capsys, monkeypatch):
    _identity_run(monkeypatch)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.88.11"  # Basic Text SR
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, generate_uid()
    ds.Modality, ds.SeriesInstanceUID = "SR", generate_uid()
    (tmp_path / "report").mkdir()
    ds.save_as(tmp_path / "report" / "SR0001", enforce_file_format=True)
    line = cli_error(capsys, "translate", "--model_dir", tmp_path, "--input",
                     tmp_path / "report", "--output", tmp_path / "o.nii.gz", "--gpu_ids", "-1",
                     "--no_progress")
    assert "without image data (SR)" in line
    assert not (tmp_path / "o.nii.gz").exists()


@pytest.mark.parametrize("problem", ["missing_slice", "no_position"])
def test_series_that_is_no_volume_is_one_line(tmp_path, problem):
    from pydicom import dcmread

    from revgan.errors import UserError

    write_series(tmp_path / "s", stored_volume(shape=(4, 4, 5)))
    files = sorted((tmp_path / "s").iterdir())
    if problem == "missing_slice":  # a gap anywhere but at the ends breaks even spacing
        middle = next(f for f in files if not np.isclose(
            (np.asarray(dcmread(f).ImagePositionPatient) - ORIGIN) @ NORMAL,
            [0, 4 * SLICE_SPACING]).any())
        middle.unlink()
        expected = "not evenly spaced"
    else:
        ds = dcmread(files[0])
        del ds.ImagePositionPatient
        ds.save_as(files[0])
        expected = "without ImagePositionPatient"
    with pytest.raises(UserError, match=expected):
        read_volume(tmp_path / "s")
