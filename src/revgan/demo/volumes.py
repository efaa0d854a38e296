"""A small built-in paired 3D dataset: low-resolution -> full-resolution phantoms.

Each phantom is a textured ellipsoidal "body" holding a few rotated ellipsoidal "organs" of
different intensities (0..1000, arbitrary units, background 0). Domain B is the phantom at
full resolution; domain A is the same phantom downsampled by 2 (2×2×2 averaging) and
upsampled back (trilinear), i.e. blurred: translating A -> B is super-resolution.

Layout under ``root``: ``trainA/ trainB/ testA/ testB/`` holding ``case_NNN.nii.gz`` with
matching names (paired), all with the same non-identity affine (1.5 mm voxels and an offset
that centres the volume), and ``demo_volumes.json`` (parameters; written last, marks
completion). Run ``python -m revgan.demo.volumes ROOT`` to make one from the command line.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from revgan.demo.folder import check_counts, command_line, prepare, write_manifest
from revgan.errors import UserError, exits_cleanly

MANIFEST = "demo_volumes.json"
FORMAT_VERSION = 1
SPACING = 1.5  # mm
SPLITS = ("trainA", "trainB", "testA", "testB")


def demo_affine(shape: Sequence[int]) -> np.ndarray:
    """1.5 mm isotropic voxels, origin chosen so the volume is centred on (0, 0, 10) mm."""
    affine = np.diag([SPACING, SPACING, SPACING, 1.0])
    affine[:3, 3] = -SPACING * (np.asarray(shape, dtype=np.float64) - 1) / 2 + [0.0, 0.0, 10.0]
    return affine


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, ...], sigma: float) -> np.ndarray:
    """Unit-variance Gaussian-smoothed noise (periodic), via the FFT: no SciPy needed."""
    spectrum = np.fft.rfftn(rng.standard_normal(shape))
    freqs = np.meshgrid(*[np.fft.fftfreq(n) for n in shape[:-1]], np.fft.rfftfreq(shape[-1]),
                        indexing="ij")
    spectrum *= np.exp(-2.0 * (np.pi * sigma) ** 2 * sum(f**2 for f in freqs))
    noise = np.fft.irfftn(spectrum, s=shape, axes=tuple(range(len(shape))))
    return noise / (noise.std() + 1e-12)


def _rotation(rng: np.random.Generator) -> np.ndarray:
    q, r = np.linalg.qr(rng.standard_normal((3, 3)))
    return q * np.sign(np.diag(r))


def _ellipsoid(coords: np.ndarray, centre: np.ndarray, radii: np.ndarray,
               rot: np.ndarray) -> np.ndarray:
    local = np.einsum("ij,j...->i...", rot.T, coords - centre[:, None, None, None])
    return ((local / radii[:, None, None, None]) ** 2).sum(0) <= 1.0


def make_phantom(rng: np.random.Generator, shape: tuple[int, int, int]) -> np.ndarray:
    """One full-resolution phantom (float32 D×H×W, values in about 0..1000)."""
    coords = np.stack(np.meshgrid(*[(np.arange(s) + 0.5) / s * 2 - 1 for s in shape],
                                  indexing="ij"))
    volume = np.zeros(shape, dtype=np.float64)
    body = _ellipsoid(coords, rng.uniform(-0.08, 0.08, 3), rng.uniform(0.7, 0.9, 3),
                      _rotation(rng))
    volume[body] = 300.0 + 40.0 * _smooth_noise(rng, shape, 1.5)[body]
    for _ in range(int(rng.integers(3, 6))):
        organ = _ellipsoid(coords, rng.uniform(-0.4, 0.4, 3), rng.uniform(0.12, 0.35, 3),
                           _rotation(rng)) & body
        level = rng.uniform(100.0, 900.0)
        volume[organ] = level + 0.08 * level * _smooth_noise(rng, shape, 1.0)[organ]
    return np.clip(volume, 0.0, 1000.0).astype(np.float32)


def low_resolution(volume: np.ndarray) -> np.ndarray:
    """Downsample by 2 (2×2×2 average) and upsample back (trilinear) to the same shape."""
    x = torch.from_numpy(volume)[None, None].to(torch.float64)
    small = F.avg_pool3d(x, 2, ceil_mode=True)
    back = F.interpolate(small, size=volume.shape, mode="trilinear", align_corners=False)
    return back[0, 0].numpy().astype(np.float32)


def _params(shape: tuple[int, int, int], n_train: int, n_test: int, seed: int) -> dict:
    return {"generator": "revgan.demo.volumes", "version": FORMAT_VERSION,
            "shape": list(shape), "n_train": n_train, "n_test": n_test, "seed": seed}


def _files(root: Path, n_train: int, n_test: int) -> dict[str, list[Path]]:
    counts = {"trainA": n_train, "trainB": n_train, "testA": n_test, "testB": n_test}
    return {split: [root / split / f"case_{i:03d}.nii.gz" for i in range(n)]
            for split, n in counts.items()}


def make_demo_volumes(
    root: str | Path,
    n_train: int = 8,
    n_test: int = 2,
    shape: Sequence[int] = (32, 32, 32),
    seed: int = 0,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Write the paired demo volumes under ``root`` (see module docstring) and describe them.

    Deterministic in ``seed``. A complete set made with the same parameters is reused; any
    other non-empty ``root`` is an error unless ``overwrite`` (which replaces only the four
    split folders and the manifest). Returns ``{"root", "trainA", "trainB", "testA",
    "testB"`` (folders), ``"files"`` (split -> paths), ``"shape", "affine", "spacing",
    "counts", "seed", "reused"}``.
    """
    from revgan.data.volumes import VolumeMeta, write_volume

    root = Path(root)
    shape = tuple(int(s) for s in shape)
    if len(shape) != 3 or any(s < 8 or s > 512 for s in shape):
        raise UserError(f"demo volume shape must be three sizes between 8 and 512, got {shape}")
    check_counts({"n_train": n_train, "n_test": n_test}, most=999)
    params = _params(shape, n_train, n_test, seed)
    files = _files(root, n_train, n_test)
    affine = demo_affine(shape)
    result = {"root": root, **{s: root / s for s in SPLITS}, "files": files, "shape": shape,
              "affine": affine, "spacing": (SPACING,) * 3,
              "counts": {"train": n_train, "test": n_test}, "seed": seed, "reused": False}
    if prepare(root, MANIFEST, params, (p for paths in files.values() for p in paths), SPLITS,
               overwrite, "demo volume set"):
        return {**result, "reused": True}

    meta = VolumeMeta(affine=affine, spacing=(SPACING,) * 3, format="nifti")
    for split_index, (split, n) in enumerate((("train", n_train), ("test", n_test))):
        for i in range(n):
            rng = np.random.default_rng([seed, split_index, i])
            full = make_phantom(rng, shape)
            write_volume(files[f"{split}A"][i], low_resolution(full), meta)
            write_volume(files[f"{split}B"][i], full, meta)
    for split in SPLITS:  # empty splits still get their folders
        (root / split).mkdir(parents=True, exist_ok=True)
    write_manifest(root, MANIFEST, {**params, "affine": affine.tolist()})
    return result


@exits_cleanly
def main(argv: list[str] | None = None) -> None:
    parser = command_line("python -m revgan.demo.volumes",
                          "Write the built-in paired 3D demo volumes.", n_train=8, n_test=2)
    parser.add_argument("--shape", type=int, nargs=3, default=(32, 32, 32))
    args = parser.parse_args(argv)
    info = make_demo_volumes(args.root, n_train=args.n_train, n_test=args.n_test,
                             shape=args.shape, seed=args.seed, overwrite=args.overwrite)
    verb = "reused" if info["reused"] else "wrote"
    print(f"{verb} demo volumes in {info['root']}: {args.n_train} train, {args.n_test} test "
          f"pairs of {'x'.join(map(str, info['shape']))} voxels")


if __name__ == "__main__":
    main()
