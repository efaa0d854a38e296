"""Blended sliding-window translation of arrays, volume files and image folders."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import torch

from revgan.errors import UserError
from revgan.infer.windows import sliding_window_translate, translate_array, translate_path


def identity(t: torch.Tensor) -> torch.Tensor:
    return t


def _volume(shape=(45, 61, 37), seed=0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-1, 1, size=(1, *shape)).astype(np.float32)


@pytest.mark.parametrize("window,overlap,multiple", [(16, 0.5, 1), (32, 0.25, 8)])
def test_identity_translation_has_no_seams_in_3d(window, overlap, multiple):
    x = _volume()
    before = x.copy()
    y = translate_array(identity, x, "none", "none", window, overlap=overlap, multiple=multiple)
    assert y.shape == x.shape and y.dtype == np.float32
    assert np.abs(y - x).max() < 1e-5  # everywhere, window borders and volume edges included
    np.testing.assert_array_equal(x, before)  # the input is never written to


def test_identity_returns_input_units_with_per_volume_normalisation():
    x = _volume(shape=(21, 18, 13), seed=1) * 0.5 + 0.25
    for kind in ("minmax", "zscore", "percentile"):
        y = translate_array(identity, x, kind, kind, 8, overlap=0.5)
        inside = (x >= np.percentile(x, 0.5)) & (x <= np.percentile(x, 99.5))
        assert np.abs(y - x)[inside].max() < 1e-5, kind


def test_identity_translation_has_no_seams_in_2d():
    x = np.random.default_rng(2).uniform(-1, 1, size=(3, 45, 61)).astype(np.float32)
    y = translate_array(identity, x, "none", "none", 16, overlap=0.5, multiple=4)
    assert np.abs(y - x).max() < 1e-5


def test_gaussian_weights_normalise_so_a_constant_stays_constant():
    x = torch.randn(1, 2, 45, 61, 37)
    out = sliding_window_translate(lambda t: torch.zeros_like(t) + 0.7, x, (16, 32, 16),
                                   overlap=0.5, mode="gaussian")
    assert out.shape == x.shape
    torch.testing.assert_close(out, torch.full_like(x, 0.7), atol=1e-6, rtol=0)


def test_pointwise_network_is_reproduced_exactly_and_channels_may_change():
    x = torch.randn(1, 1, 30, 26)

    def fn(t: torch.Tensor) -> torch.Tensor:
        return torch.cat([torch.tanh(t), t * t], dim=1)

    out = sliding_window_translate(fn, x, 16, overlap=0.25)
    assert out.shape == (1, 2, 30, 26)
    torch.testing.assert_close(out, fn(x), atol=1e-5, rtol=1e-5)


def test_inputs_smaller_than_the_window_are_padded_and_cropped_back():
    seen: list[tuple[int, ...]] = []

    def fn(t: torch.Tensor) -> torch.Tensor:
        seen.append(tuple(t.shape[2:]))
        return t * 2

    x = torch.randn(1, 1, 5, 7, 40)
    out = sliding_window_translate(fn, x, 16, overlap=0.5, multiple=4)
    torch.testing.assert_close(out, 2 * x)
    assert seen and all(s == (8, 8, 16) for s in seen)  # windows stay multiples of 4


def test_window_must_be_a_multiple_of_the_network_stride():
    with pytest.raises(UserError, match="multiple of 4"):
        sliding_window_translate(identity, torch.zeros(1, 1, 20, 20), 18, multiple=4)
    with pytest.raises(UserError, match="overlap"):
        sliding_window_translate(identity, torch.zeros(1, 1, 20, 20), 16, overlap=1.0)


def test_translate_path_volume_file_and_folder_keep_affine_and_refuse_overwrite(tmp_path):
    affine = np.diag([1.5, 2.0, 2.5, 1.0])
    affine[:3, 3] = [-10.0, 5.0, 3.0]
    src = tmp_path / "in"
    src.mkdir()
    for name in ("a.nii.gz", "b.nii.gz"):
        data = np.random.default_rng(len(name)).normal(size=(9, 10, 11)).astype(np.float32)
        nib.save(nib.Nifti1Image(data * 100 + 400, affine), str(src / name))

    written = translate_path(identity, src, tmp_path / "out", dims=3, window_size=8,
                             overlap=0.5, normalizer_in="minmax", normalizer_out="minmax")
    assert [p.name for p in written] == ["a.nii.gz", "b.nii.gz"]
    for p in written:
        image, original = nib.load(str(p)), nib.load(str(src / p.name))
        np.testing.assert_allclose(image.affine, affine)
        np.testing.assert_allclose(image.header.get_zooms(), (1.5, 2.0, 2.5))
        np.testing.assert_allclose(image.get_fdata(), original.get_fdata(), atol=1e-3)

    with pytest.raises(UserError, match="exists"):
        translate_path(identity, src, tmp_path / "out", dims=3, window_size=8)
    with pytest.raises(UserError, match="channels"):
        translate_path(identity, src / "a.nii.gz", tmp_path / "one.nii.gz", dims=3,
                       window_size=8, input_nc=2)
    with pytest.raises(UserError, match="overwrite its input"):
        translate_path(identity, src / "a.nii.gz", src / "a.nii.gz", dims=3, window_size=8,
                       overwrite=True)
    window = {"kind": "window", "window": [100.0, 800.0]}
    single = translate_path(lambda t: t * 0 - 1, src / "a.nii.gz", tmp_path / "out", dims=3,
                            window_size=8, normalizer_in="minmax", normalizer_out=window,
                            overwrite=True)
    assert single == [tmp_path / "out" / "a.nii.gz"]  # into the existing folder
    np.testing.assert_allclose(nib.load(str(single[0])).get_fdata(), 100.0)  # -1 -> window low


def test_translate_path_2d_images(tmp_path):
    from revgan.data.images import read_image, write_image

    src = tmp_path / "imgs"
    rng = np.random.default_rng(3)
    for name in ("p.png", "q.png"):
        write_image(src / name, rng.uniform(-1, 1, size=(3, 37, 29)).astype(np.float32))
    out = translate_path(identity, src, tmp_path / "res", dims=2, window_size=16, overlap=0.5,
                         input_nc=3)
    assert [p.name for p in out] == ["p.png", "q.png"]
    for p in out:
        np.testing.assert_array_equal(read_image(p, 3)[0], read_image(src / p.name, 3)[0])
    with pytest.raises(UserError, match="not found"):
        translate_path(identity, tmp_path / "missing", tmp_path / "x", dims=2, window_size=16)
