"""Blended sliding-window translation of arrays, volume files and image folders."""

from __future__ import annotations

import itertools
import math

import nibabel as nib
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import run_cli

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


def window_starts(size: int, window: int, overlap: float) -> list[int]:
    """Where overlapping windows start along one axis: every ``window * (1 - overlap)``
    voxels, the last one flush with the end."""
    step = int(window * (1 - overlap))
    starts = list(range(0, size - window + 1, step))
    return starts if starts[-1] == size - window else [*starts, size - window]


def window_weights(window: tuple[int, ...], gaussian: bool) -> torch.Tensor:
    """Blend weights over one window: a Gaussian centred on the window with sigma = window / 8
    per axis, floored at 1e-3 so that every voxel counts (MONAI's "gaussian" mode); or 1."""
    if not gaussian:
        return torch.ones(window, dtype=torch.float64)
    axes = [torch.exp(-0.5 * ((torch.arange(w, dtype=torch.float64) - (w - 1) / 2) / (w / 8))**2)
            for w in window]
    weights = axes[0]
    for axis in axes[1:]:
        weights = weights[..., None] * axis
    return weights.clamp(min=1e-3)


def blended_reference(fn, x: torch.Tensor, window: int, overlap: float,
                      gaussian: bool = True) -> torch.Tensor:
    """The weighted average of every window's output at every voxel, computed window by window
    here, independently of the code under test (float64 sums)."""
    spatial = x.shape[2:]
    size = (window,) * len(spatial)
    weights = window_weights(size, gaussian)
    total, norm = None, torch.zeros(spatial, dtype=torch.float64)
    for start in itertools.product(*(window_starts(s, window, overlap) for s in spatial)):
        where = (slice(None), slice(None)) + tuple(slice(a, a + window) for a in start)
        y = fn(x[where]).double()
        if total is None:
            total = torch.zeros(*y.shape[:2], *spatial, dtype=torch.float64)
        total[where] += y * weights
        norm[where[2:]] += weights
    return total / norm


def add_window_mean(t: torch.Tensor) -> torch.Tensor:
    """Content-dependent: each window shifts by three times its own mean."""
    return t + 3 * t.mean(dim=tuple(range(2, t.ndim)), keepdim=True)


def asymmetric_conv(t: torch.Tensor) -> torch.Tensor:
    """Position-dependent: a non-symmetric kernel with zero padding, so voxels near a window's
    edge come out differently from each window that holds them."""
    dims = t.ndim - 2
    kernel = torch.arange(1.0, 3**dims + 1).reshape(1, 1, *(3,) * dims) / 3**dims
    return (F.conv2d if dims == 2 else F.conv3d)(t, kernel, padding=1)


@pytest.mark.parametrize("fn", [add_window_mean, asymmetric_conv])
@pytest.mark.parametrize("shape, window", [((1, 1, 40, 40), 16), ((1, 1, 24, 32, 24), 16)],
                         ids=["2d", "3d"])
def test_overlapping_windows_are_blended_with_gaussian_weights(fn, shape, window):
    gen = torch.Generator().manual_seed(0)
    ramp = torch.linspace(-1, 1, shape[-1])  # windows differ: their means differ
    x = ramp + 0.3 * torch.rand(shape, generator=gen)
    out = sliding_window_translate(fn, x, window, overlap=0.5, mode="gaussian")
    gaussian = blended_reference(fn, x, window, 0.5)
    uniform = blended_reference(fn, x, window, 0.5, gaussian=False)
    # A voxel on a window border: the last of the first window, inside the second.
    border = (0, 0, window - 1, *(window // 2,) * (len(shape) - 3))
    assert abs(gaussian[border] - uniform[border]) > 0.05  # the weighting matters here
    assert abs(out[border].item() - gaussian[border].item()) < 1e-5
    torch.testing.assert_close(out.double(), gaussian, atol=1e-5, rtol=0)  # every voxel


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


def _smooth_volume(shape: tuple[int, ...], seed: int) -> np.ndarray:
    """Values in [-1, 1] with structure at the scale of a few voxels."""
    rng = np.random.default_rng(seed)
    grids = np.meshgrid(*[np.linspace(0, math.pi * 2, s) for s in shape], indexing="ij")
    wave = sum(np.sin(g * (i + 1) + rng.uniform(0, 6)) for i, g in enumerate(grids))
    return np.clip(wave / 3 + 0.2 * rng.standard_normal(shape), -1, 1).astype(np.float32)


def test_translate_cli_blends_real_generator_windows_with_gaussian_weights(tmp_path):
    """`revgan translate` with a trained 3D generator: a voxel on a window border holds the
    Gaussian-weighted average of the generator's outputs on the windows that contain it."""
    affine = np.diag([1.0, 1.0, 1.0, 1.0])
    for side in "AB":
        (tmp_path / "data" / f"train{side}").mkdir(parents=True)
        for i in range(2):
            nib.save(nib.Nifti1Image(_smooth_volume((16, 16, 16), i), affine),
                     tmp_path / "data" / f"train{side}" / f"v{i}.nii.gz")
    ck = tmp_path / "ck"
    # Data already in [-1, 1] (--intensity none): the network's own output is what is written.
    run_cli("train", "--dataroot", tmp_path / "data", "--name", "run", "--checkpoints_dir", ck,
            "--model", "paired_revgan3d", "--netG", "resnet_1blocks", "--ngf", "4", "--ndf", "4",
            "--patch_size", "16", "--samples_per_volume", "1", "--intensity", "none",
            "--num_threads", "0", "--no_progress", "--gpu_ids", "-1", "--n_epochs", "1",
            "--n_epochs_decay", "0")
    volume = _smooth_volume((32, 16, 16), 7)
    nib.save(nib.Nifti1Image(volume, affine), tmp_path / "in.nii.gz")
    run_cli("translate", "--model_dir", ck / "run", "--input", tmp_path / "in.nii.gz",
            "--output", tmp_path / "out.nii.gz", "--window_size", "16", "--overlap", "0.5",
            "--no_progress", "--gpu_ids", "-1")
    written = nib.load(tmp_path / "out.nii.gz").get_fdata()

    from revgan.infer.load import load_generator

    G, _ = load_generator(ck / "run", "latest", torch.device("cpu"))

    def generator(t: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return G(t, "AtoB").float().clamp(-1, 1)

    x = torch.from_numpy(volume)[None, None]
    gaussian = blended_reference(generator, x, 16, 0.5)[0, 0].numpy()
    uniform = blended_reference(generator, x, 16, 0.5, gaussian=False)[0, 0].numpy()
    # windows start at 0, 8, 16 along the first axis: voxel 15 is the first window's last
    border = (15, 8, 8)
    assert abs(gaussian[border] - uniform[border]) > 1e-3  # the windows disagree there
    assert abs(written[border] - gaussian[border]) < 1e-5
    np.testing.assert_allclose(written, gaussian, atol=1e-5, rtol=0)
