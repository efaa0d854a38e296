"""3D volume I/O, intensity normalisation, volume datasets and the demo volumes."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from revgan.config import RunConfig
from revgan.data.intensity import NORM_KINDS, make_normalizer, normalizer_from_dict, output_stats
from revgan.data.volume_datasets import create_volume_dataset
from revgan.data.volumes import list_volumes, read_volume, volume_stem, write_volume
from revgan.demo.volumes import make_demo_volumes
from revgan.errors import UserError

AFFINE = np.array([[0.0, 0.0, 2.5, -30.0], [1.5, 0.0, 0.0, 12.0], [0.0, 1.25, 0.0, 4.0],
                   [0.0, 0.0, 0.0, 1.0]])


def _rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def _save_nifti(path: Path, data: np.ndarray, affine: np.ndarray = AFFINE) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data, affine), str(path))
    return path


# --- I/O --------------------------------------------------------------------------------


def test_nifti_round_trip_keeps_affine_zooms_header_and_data(tmp_path):
    data = _rng().normal(size=(5, 6, 7)).astype(np.float32) * 300
    src = tmp_path / "in.nii.gz"
    image = nib.Nifti1Image(data, AFFINE)
    image.header["descrip"] = b"revgan test"
    nib.save(image, str(src))

    volume, meta = read_volume(src)
    assert volume.shape == (1, 5, 6, 7) and volume.dtype == np.float32
    np.testing.assert_array_equal(volume[0], data)
    np.testing.assert_allclose(meta.spacing, (1.5, 1.25, 2.5))
    assert meta.format == "nifti"

    out = write_volume(tmp_path / "sub" / "out.nii.gz", volume * 2, meta)
    back = nib.load(str(out))
    np.testing.assert_allclose(back.affine, AFFINE)
    np.testing.assert_allclose(back.header.get_zooms(), (1.5, 1.25, 2.5))
    assert back.header["descrip"].item() == b"revgan test"
    assert back.get_data_dtype() == np.float32
    np.testing.assert_allclose(np.asarray(back.dataobj), data * 2, rtol=1e-6)


def test_scaled_integer_nifti_reads_in_real_units_and_writes_unscaled_float(tmp_path):
    data = np.arange(60, dtype=np.int16).reshape(3, 4, 5)
    image = nib.Nifti1Image(data, AFFINE)
    image.header.set_slope_inter(2.0, -100.0)
    src = tmp_path / "ct.nii"
    nib.save(image, str(src))
    volume, meta = read_volume(src)
    np.testing.assert_allclose(volume[0], data * 2.0 - 100.0)
    assert meta.dtype == "int16"
    out = write_volume(tmp_path / "out.nii", volume, meta)
    np.testing.assert_allclose(nib.load(str(out)).get_fdata(), data * 2.0 - 100.0)


def test_4d_nifti_is_channel_last_on_disk_and_channel_first_in_memory(tmp_path):
    xyzc = _rng(1).normal(size=(4, 5, 6, 2)).astype(np.float32)
    src = _save_nifti(tmp_path / "multi.nii.gz", xyzc)
    volume, meta = read_volume(src)
    assert volume.shape == (2, 4, 5, 6)
    np.testing.assert_array_equal(volume[1], xyzc[..., 1])
    out = write_volume(tmp_path / "multi_out.nii.gz", volume, meta)
    on_disk = np.asarray(nib.load(str(out)).dataobj)
    assert on_disk.shape == (4, 5, 6, 2)
    np.testing.assert_array_equal(on_disk, xyzc)


def test_npy_and_npz_round_trip(tmp_path):
    three = _rng(2).normal(size=(4, 5, 6)).astype(np.float64)
    four = _rng(3).normal(size=(2, 4, 5, 6)).astype(np.float32)
    np.save(tmp_path / "a.npy", three)
    np.savez(tmp_path / "b.npz", volume=four, spacing=np.ones(3))
    np.savez(tmp_path / "c.npz", four)
    a, meta = read_volume(tmp_path / "a.npy")
    assert a.shape == (1, 4, 5, 6) and a.dtype == np.float32 and meta.dtype == "float64"
    b, _ = read_volume(tmp_path / "b.npz")
    c, _ = read_volume(tmp_path / "c.npz")
    np.testing.assert_array_equal(b, four)
    np.testing.assert_array_equal(c, four)
    for name in ("out.npy", "out.npz"):
        write_volume(tmp_path / name, b, None)
        np.testing.assert_array_equal(read_volume(tmp_path / name)[0], four)
    write_volume(tmp_path / "one.npy", a, None)
    assert np.load(tmp_path / "one.npy").shape == (4, 5, 6)
    assert volume_stem(tmp_path / "x.nii.gz") == "x"
    assert [p.name for p in list_volumes(tmp_path)] == ["a.npy", "b.npz", "c.npz", "one.npy",
                                                        "out.npy", "out.npz"]


@pytest.mark.parametrize("case", ["2d_npy", "2d_nifti", "nan", "inf", "empty", "truncated",
                                  "garbage", "npz_keys", "missing"])
def test_bad_volumes_raise_one_line_user_errors_naming_the_file(tmp_path, case):
    if case == "2d_npy":
        path = tmp_path / "flat.npy"
        np.save(path, np.zeros((8, 8), np.float32))
    elif case == "2d_nifti":
        path = _save_nifti(tmp_path / "flat.nii.gz", np.zeros((8, 8), np.float32))
    elif case in ("nan", "inf"):
        data = np.zeros((4, 4, 4), np.float32)
        data[1, 2, 3] = np.nan if case == "nan" else np.inf
        path = _save_nifti(tmp_path / f"{case}.nii.gz", data)
    elif case == "empty":
        path = tmp_path / "empty.npy"
        np.save(path, np.zeros((0, 4, 4), np.float32))
    elif case == "truncated":
        full = _save_nifti(tmp_path / "full.nii.gz", _rng().normal(size=(16, 16, 16)))
        blob = full.read_bytes()
        path = tmp_path / "cut.nii.gz"
        path.write_bytes(blob[: len(blob) // 2])
    elif case == "garbage":
        path = tmp_path / "junk.nii.gz"
        path.write_bytes(gzip.compress(b"not a nifti file at all" * 20))
    elif case == "npz_keys":
        path = tmp_path / "many.npz"
        np.savez(path, x=np.zeros((2, 2, 2)), y=np.zeros((2, 2, 2)))
    else:
        path = tmp_path / "nothing.nii.gz"
    with pytest.raises(UserError) as info:
        read_volume(path)
    message = str(info.value)
    assert path.name in message and "\n" not in message


def test_zero_length_axis_and_wrong_rank_are_refused_from_the_header(tmp_path):
    cases = {
        "zero.nii.gz": (lambda p: _save_nifti(p, np.zeros((4, 0, 4), np.float32)),
                        r"zero-length dimension \(shape \(4, 0, 4\)\)"),
        "zero.npy": (lambda p: np.save(p, np.zeros((0, 4, 4), np.float32)),
                     r"zero-length dimension \(shape \(0, 4, 4\)\)"),
        "five.nii.gz": (lambda p: _save_nifti(p, np.zeros((4, 4, 4, 2, 2), np.float32)),
                        "got 5D data"),
        "five.npz": (lambda p: np.savez(p, volume=np.zeros((2, 2, 4, 4, 4), np.float32)),
                     "got 5D data"),
    }
    for name, (make, needle) in cases.items():
        make(tmp_path / name)
        with pytest.raises(UserError, match=needle):
            read_volume(tmp_path / name)
    # NIfTI's vector layout (x, y, z, 1, c) is a 3D volume with channels, not 5D data
    _save_nifti(tmp_path / "vector.nii.gz", np.ones((4, 5, 6, 1, 2), np.float32))
    assert read_volume(tmp_path / "vector.nii.gz")[0].shape == (2, 4, 5, 6)


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz", ".npy", ".npz"])
def test_a_volume_larger_than_the_limit_is_refused_before_allocating(tmp_path, monkeypatch,
                                                                      suffix):
    import tracemalloc

    volume = np.zeros((64, 64, 64), np.float32)  # 1 MiB as float32
    path = tmp_path / f"v{suffix}"
    if suffix == ".npy":
        np.save(path, volume)
    elif suffix == ".npz":
        np.savez(path, volume=volume)
    else:
        _save_nifti(path, volume)
    monkeypatch.setenv("REVGAN_MAX_VOLUME_BYTES", str(2**20 - 1))
    tracemalloc.start()
    try:
        with pytest.raises(UserError, match=r"header claims a volume of shape \(64, 64, 64\)"):
            read_volume(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 2**18  # the voxels were never read (1 MiB), only the header
    monkeypatch.setenv("REVGAN_MAX_VOLUME_BYTES", str(2**20))
    assert read_volume(path)[0].shape == (1, 64, 64, 64)


def test_a_header_claiming_an_impossible_volume_is_refused_on_any_machine(tmp_path):
    """A few bytes of data behind a header that claims 30000³ voxels (108 TB as float32)."""
    small = _save_nifti(tmp_path / "small.nii", np.zeros((4, 4, 4), np.float32))
    header = nib.load(str(small)).header.copy()
    header.set_data_shape((30000, 30000, 30000))
    blob = small.read_bytes()
    lying = tmp_path / "lying.nii.gz"
    lying.write_bytes(gzip.compress(header.binaryblock + blob[len(header.binaryblock):]))
    with pytest.raises(UserError, match=r"lying\.nii\.gz: header claims a volume of shape "
                                         r"\(30000, 30000, 30000\), 98.2 TiB"):
        read_volume(lying)


def test_volume_folders_follow_links_and_refuse_loops(tmp_path):
    import os

    _save_nifti(tmp_path / "data" / "a.nii.gz", np.ones((3, 3, 3), np.float32))
    _save_nifti(tmp_path / "more" / "b.nii.gz", np.ones((3, 3, 3), np.float32))
    os.symlink(tmp_path / "more", tmp_path / "data" / "linked")
    assert [p.name for p in list_volumes(tmp_path / "data")] == ["a.nii.gz", "b.nii.gz"]
    os.symlink(tmp_path / "data", tmp_path / "more" / "back")
    with pytest.raises(UserError, match="symbolic link loop"):
        list_volumes(tmp_path / "data")


def test_writes_replace_the_file_atomically(tmp_path, monkeypatch):
    """A write that fails midway leaves the earlier file as it was and no partial file."""
    import revgan.data.volumes as volumes

    for name in ("v.nii.gz", "v.npy"):
        target = write_volume(tmp_path / name, np.ones((1, 4, 4, 4), np.float32))
        before = target.read_bytes()

        def broken(handle, *args, **kwargs):
            handle.write(b"half a volume")
            raise OSError(28, "No space left on device")

        monkeypatch.setattr(volumes.np, "save", broken)
        monkeypatch.setattr(volumes.gzip, "GzipFile", lambda fileobj, **kw: broken(fileobj))
        with pytest.raises(UserError, match="No space left"):
            write_volume(target, np.zeros((1, 4, 4, 4), np.float32))
        monkeypatch.undo()
        assert target.read_bytes() == before
        assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


# --- intensity --------------------------------------------------------------------------


@pytest.mark.parametrize("kind", NORM_KINDS)
def test_normalize_then_denormalize_is_identity_inside_the_range(kind):
    rng = _rng(4)
    if kind == "none":
        x = rng.uniform(-1, 1, size=(1, 6, 7, 8)).astype(np.float32)
    else:
        x = (rng.normal(size=(1, 6, 7, 8)) * 250 + 40).astype(np.float32)
    norm = make_normalizer(kind, window=(-500.0, 600.0), percentiles=(1.0, 99.0))
    stats = norm.fit(x)
    y = norm.normalize(x, stats)
    assert float(np.min(y)) >= -1.0 - 1e-6 and float(np.max(y)) <= 1.0 + 1e-6
    back = norm.denormalize(y, stats)
    inside = (x >= stats["lo"]) & (x <= stats["hi"])
    assert inside.mean() > 0.9
    np.testing.assert_allclose(back[inside], x[inside], rtol=1e-5, atol=1e-3)
    if kind in ("percentile", "window", "zscore"):  # values beyond the range clip to it
        assert (~inside).any()
        np.testing.assert_allclose(back[~inside], np.clip(x, stats["lo"], stats["hi"])[~inside],
                                   rtol=1e-5, atol=1e-3)
    # Serialisable through JSON and rebuilt to the same map; works on torch tensors too.
    rebuilt = normalizer_from_dict(json.loads(json.dumps(norm.to_dict())))
    np.testing.assert_allclose(rebuilt.normalize(x, rebuilt.fit(x)), y, atol=1e-6)
    t = rebuilt.normalize(torch.from_numpy(x), stats)
    np.testing.assert_allclose(t.numpy(), y, atol=1e-6)


def test_minmax_and_window_map_their_range_onto_minus_one_one():
    x = np.array([10.0, 20.0, 30.0], np.float32)
    norm = make_normalizer("minmax")
    np.testing.assert_allclose(norm.normalize(x, norm.fit(x)), [-1.0, 0.0, 1.0])
    ct = make_normalizer("window", window=(-1000, 2000))
    np.testing.assert_allclose(ct.normalize(np.array([-2000.0, 500.0, 3000.0]), ct.fit(None)),
                               [-1.0, 0.0, 1.0])
    assert ct.fit(None) == {"lo": -1000.0, "hi": 2000.0}


def test_zscore_clips_at_k_standard_deviations():
    x = np.concatenate([np.zeros(50), np.ones(50) * 2.0, [100.0]]).astype(np.float32)
    norm = make_normalizer("zscore")
    stats = norm.fit(x)
    y = norm.normalize(x, stats)
    assert y[-1] == pytest.approx(1.0)
    np.testing.assert_allclose(y[:-1], (x[:-1] - stats["mean"]) / (3 * stats["std"]), atol=1e-6)


def test_output_stats_use_the_input_volume_for_per_volume_normalisers():
    x = np.linspace(-3, 7, 11, dtype=np.float32)
    minmax = make_normalizer("minmax")
    assert output_stats(minmax, x) == {"lo": -3.0, "hi": 7.0}
    window = make_normalizer("window", window=(0, 1))
    assert output_stats(window, x) == {"lo": 0.0, "hi": 1.0}


@pytest.mark.parametrize("bad", [dict(kind="bogus"), dict(kind="window"),
                                 dict(kind="window", window=(5, 1)),
                                 dict(kind="percentile", percentiles=(90, 10))])
def test_bad_normaliser_options_are_user_errors(bad):
    with pytest.raises(UserError):
        make_normalizer(**bad)


# --- datasets ---------------------------------------------------------------------------


def _opt(root: Path, **kw) -> RunConfig:
    base = dict(dataroot=str(root), phase="train", dataset_mode="aligned", patch_size=(8,),
                samples_per_volume=3, foreground_sampling=False, flip_axes=(0, 1, 2),
                intensity="none", input_nc=1, output_nc=1, isTrain=True,
                serial_batches=False, direction="AtoB", dims=3)
    base.update(kw)
    return RunConfig(**base)


def _pair_folder(root: Path, shapes=((10, 12, 9), (7, 6, 5))) -> None:
    """B = 2 A, stored as NIfTI in A and .npy in B (pairing is by name without extension)."""
    for i, shape in enumerate(shapes):
        a = _rng(10 + i).uniform(-0.5, 0.5, size=shape).astype(np.float32)
        _save_nifti(root / "trainA" / f"v{i}.nii.gz", a)
        (root / "trainB").mkdir(parents=True, exist_ok=True)
        np.save(root / "trainB" / f"v{i}.npy", 2 * a)


def test_paired_patches_share_location_and_flips(tmp_path):
    _pair_folder(tmp_path)
    torch.manual_seed(0)
    ds = create_volume_dataset(_opt(tmp_path))
    assert len(ds) == 2 * 3
    full = read_volume(tmp_path / "trainA" / "v0.nii.gz")[0][0]
    flipped_somewhere = False
    for i in range(len(ds)):
        item = ds[i]
        a, b = item["A"], item["B"]
        assert a.shape == b.shape == (1, 8, 8, 8) and a.dtype == torch.float32
        assert item["B_paths"].endswith(f"v{i // 3}.npy")
        if i >= 3:  # volume 7×6×5 is smaller than the patch: padded with -1 (both domains)
            assert (a == -1).any()
            np.testing.assert_array_equal(b[a == -1], -1)
            torch.testing.assert_close(b[a != -1], 2 * a[a != -1])
            continue
        torch.testing.assert_close(b, 2 * a)
        # The patch is a (possibly flipped) block of the volume; find which flips.
        found = False
        for axes in ([], [0], [1], [2], [0, 1], [0, 2], [1, 2], [0, 1, 2]):
            patch = np.flip(a[0].numpy(), axis=axes) if axes else a[0].numpy()
            for z in range(full.shape[0] - 7):
                for y in range(full.shape[1] - 7):
                    for x in range(full.shape[2] - 7):
                        if np.array_equal(full[z:z + 8, y:y + 8, x:x + 8], patch):
                            found, flipped_somewhere = True, flipped_somewhere or bool(axes)
        assert found
    assert flipped_somewhere


def test_foreground_sampling_centres_patches_on_bright_voxels(tmp_path):
    a = np.zeros((40, 40, 40), np.float32)
    a[30:34, 4:8, 20:24] = 1.0
    _save_nifti(tmp_path / "trainA" / "v.nii.gz", a)
    _save_nifti(tmp_path / "trainB" / "v.nii.gz", a)
    torch.manual_seed(1)
    ds = create_volume_dataset(_opt(tmp_path, foreground_sampling=True, samples_per_volume=10,
                                    flip_axes=(), intensity="minmax"))
    assert all((ds[i]["A"] > 0).any() for i in range(len(ds)))
    uniform = create_volume_dataset(_opt(tmp_path, samples_per_volume=10, flip_axes=(),
                                         intensity="minmax"))
    assert not all((uniform[i]["A"] > 0).any() for i in range(len(uniform)))


def test_unpaired_and_single_and_test_phase(tmp_path):
    _pair_folder(tmp_path, shapes=((10, 12, 9), (9, 9, 9), (11, 10, 9)))
    (tmp_path / "testA").mkdir()
    for i in range(2):
        np.save(tmp_path / "testA" / f"t{i}.npy", np.full((6, 7, 8), i - 0.5, np.float32))
    ds = create_volume_dataset(_opt(tmp_path, dataset_mode="unaligned", serial_batches=True,
                                    intensity="minmax", intensity_B="zscore"))
    item = ds[4]
    assert item["A"].shape == item["B"].shape == (1, 8, 8, 8)
    assert item["B_paths"].endswith("v1.npy")
    assert float(item["A"].min()) >= -1 and float(item["A"].max()) <= 1
    single = create_volume_dataset(_opt(tmp_path, dataset_mode="single", phase="test",
                                        isTrain=False))
    assert len(single) == 2 and set(single[1]) == {"A", "A_paths"}
    assert single[1]["A"].shape == (1, 6, 7, 8)  # whole volume at test time


def test_paired_dataset_errors_name_the_files(tmp_path):
    _pair_folder(tmp_path)
    np.save(tmp_path / "trainB" / "v1.npy", np.zeros((7, 6, 6), np.float32))
    ds = create_volume_dataset(_opt(tmp_path))
    with pytest.raises(UserError, match=r"v1\.nii\.gz.*v1\.npy"):
        ds[4]
    (tmp_path / "trainB" / "v0.npy").unlink()
    with pytest.raises(UserError, match=r"v0\.nii\.gz"):
        create_volume_dataset(_opt(tmp_path))


def test_dataset_checks_channels_and_bad_files(tmp_path):
    _pair_folder(tmp_path, shapes=((9, 9, 9),))
    with pytest.raises(UserError, match="channels"):
        create_volume_dataset(_opt(tmp_path, input_nc=2))[0]
    np.save(tmp_path / "trainA" / "v0.npy", np.zeros((9, 9), np.float32))
    (tmp_path / "trainA" / "v0.nii.gz").unlink()
    with pytest.raises(UserError, match=r"v0\.npy.*2D"):
        create_volume_dataset(_opt(tmp_path))[0]


# --- demo volumes -----------------------------------------------------------------------


def test_demo_volumes_are_paired_deterministic_and_non_identity(tmp_path):
    info = make_demo_volumes(tmp_path / "d", n_train=2, n_test=1, shape=(16, 16, 16), seed=3)
    again = make_demo_volumes(tmp_path / "e", n_train=2, n_test=1, shape=(16, 16, 16), seed=3)
    assert make_demo_volumes(tmp_path / "d", n_train=2, n_test=1, shape=(16, 16, 16),
                             seed=3)["reused"]
    names = {s: [p.name for p in list_volumes(info[s])] for s in ("trainA", "trainB",
                                                                  "testA", "testB")}
    assert names["trainA"] == names["trainB"] and len(names["trainA"]) == 2
    assert names["testA"] == names["testB"] and len(names["testA"]) == 1
    a, meta = read_volume(info["files"]["trainA"][0])
    b, _ = read_volume(info["files"]["trainB"][0])
    np.testing.assert_array_equal(b, read_volume(again["files"]["trainB"][0])[0])
    assert not np.allclose(meta.affine, np.eye(4))
    np.testing.assert_allclose(meta.spacing, (1.5, 1.5, 1.5))
    assert b.max() > 100 and not np.allclose(a, b)
    assert np.corrcoef(a.ravel(), b.ravel())[0, 1] > 0.8  # the same phantom
    # A is blurred: less high-frequency energy than B.
    assert np.abs(np.diff(a, axis=1)).mean() < np.abs(np.diff(b, axis=1)).mean()
    with pytest.raises(UserError):
        make_demo_volumes(tmp_path / "d", n_train=3, n_test=1, shape=(16, 16, 16), seed=3)
