"""3D datasets: random patches of volumes for training, whole volumes for testing.

Layouts follow the 2D datasets: ``<dataroot>/<phase>A`` and ``<dataroot>/<phase>B``. In
"aligned" mode files are paired by name (``x.nii.gz`` in A with ``x.nii.gz`` or ``x.npy`` in
B); A and B then get the same patch location and the same flips. "unaligned" samples each
domain independently; "single" reads one domain (for testing).

Patch sampling uses MONAI dictionary transforms, which apply one random draw to every key:
``SpatialPadd`` (volumes smaller than a patch, padded with -1, the bottom of the normalised
range), ``RandSpatialCropd`` (uniform) or ``RandWeightedCropd`` (foreground-weighted centres)
and ``RandFlipd`` per chosen axis. The dataset has ``n_volumes × samples_per_volume`` items;
item ``i`` draws one patch from volume ``i // samples_per_volume``. Normalised volumes are
kept in a small LRU cache so consecutive patches of a volume do not reread the file.

Intensities: ``norm_A``/``window_A`` describe the files of folder A and ``norm_B``/
``window_B`` those of folder B, whatever ``direction`` says. Channel counts follow the 2D
datasets: files of A must have ``input_nc`` channels for ``AtoB`` (``output_nc`` for
``BtoA``), files of B the other.

Foreground sampling (``foreground_sampling``): False = uniform; True = patch centres drawn
from voxels above ``min + 5% of the range`` of the (normalised) reference volume (A when
paired). A volume without such voxels falls back to uniform sampling.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from revgan.config import RunConfig
from revgan.data.domains import ends, folder_channels
from revgan.data.files import dataset_root, limit_paths  # one rule for 2D and 3D
from revgan.data.intensity import Normalizer, make_normalizer
from revgan.data.volumes import list_volumes, read_volume, volume_stem
from revgan.errors import UserError

VOLUME_DATASET_MODES = ("aligned", "unaligned", "single")
PAD_VALUE = -1.0
FOREGROUND_FRACTION = 0.05


def _patch_size(opt: RunConfig) -> tuple[int, int, int]:
    value = opt.patch_size
    sizes = tuple(value)
    if len(sizes) == 1:
        sizes = sizes * 3
    if len(sizes) != 3 or any(s < 1 for s in sizes):
        raise UserError(f"--patch_size must be one positive integer or three, got {value}")
    return sizes  # type: ignore[return-value]


def _flip_axes(opt: RunConfig) -> tuple[int, ...]:
    axes = opt.flip_axes
    if any(a not in (0, 1, 2) for a in axes):
        raise UserError(f"--flip_axes must be spatial axes among 0, 1, 2, got {axes}")
    if opt.no_flip:
        return ()
    return tuple(sorted(set(axes)))


def _normalizer(opt: RunConfig, side: str) -> Normalizer:
    kind, window, percentiles = opt.intensity_of(side)
    return make_normalizer(kind, window=window, percentiles=percentiles)


def _channels(opt: RunConfig) -> tuple[int, int]:
    """Expected channels of the files in folder A and folder B."""
    return folder_channels(opt.input_nc, opt.output_nc, opt.direction)


class _VolumeSource:
    """Reads, checks and normalises the volumes of one domain, with a small LRU cache."""

    def __init__(self, paths: list[Path], normalizer: Normalizer, channels: int,
                 cache_bytes: int):
        self.paths, self.normalizer, self.channels = paths, normalizer, channels
        self.cache: OrderedDict[int, torch.Tensor] = OrderedDict()
        self.cache_bytes, self.cached = cache_bytes, 0

    def __len__(self) -> int:
        return len(self.paths)

    def get(self, index: int) -> torch.Tensor:
        if index in self.cache:
            self.cache.move_to_end(index)
            return self.cache[index]
        path = self.paths[index]
        array, _ = read_volume(path)
        if array.shape[0] != self.channels:
            raise UserError(f"{path}: volume has {array.shape[0]} channels, expected "
                            f"{self.channels} (check --input_nc/--output_nc/--direction)")
        volume = torch.from_numpy(np.ascontiguousarray(
            self.normalizer.normalize(array, self.normalizer.fit(array)), dtype=np.float32))
        size = volume.numel() * 4
        if size <= self.cache_bytes:
            while self.cached + size > self.cache_bytes and self.cache:
                self.cached -= self.cache.popitem(last=False)[1].numel() * 4
            self.cache[index] = volume
            self.cached += size
        return volume


class VolumeDataset(Dataset):
    """Patches (training) or whole volumes (testing) of one or two domains.

    Built by :func:`create_volume_dataset`; see the module docstring for the options.
    """

    def __init__(self, opt: RunConfig):
        self.opt = opt
        self.mode = opt.dataset_mode
        if self.mode not in VOLUME_DATASET_MODES:
            raise UserError(f"unknown --dataset_mode '{self.mode}' for volumes; choose one of "
                            f"{', '.join(VOLUME_DATASET_MODES)}")
        self.is_train = opt.isTrain
        self.serial = opt.serial_batches
        self.samples = opt.samples_per_volume if self.is_train else 1
        if self.samples < 1:
            raise UserError(f"--samples_per_volume must be at least 1, got {self.samples}")
        self.patch_size = _patch_size(opt)
        self.flip_axes = _flip_axes(opt)
        self.foreground = opt.foreground_sampling
        cache = opt.volume_cache_mb * 2**20
        root, phase = dataset_root(opt), opt.phase
        nc_A, nc_B = _channels(opt)
        norm_A, norm_B = _normalizer(opt, "A"), _normalizer(opt, "B")

        if self.mode == "single":
            side = ends(opt.direction)[0]
            folder = next(c for c in (root / f"{phase}{side}", root / phase, root)
                           if c.is_dir())
            norm = norm_B if side == "B" else norm_A
            nc = nc_B if side == "B" else nc_A
            self.A = _VolumeSource(limit_paths(list_volumes(folder), opt), norm, nc, cache)
            self.B = None
        else:
            paths_A = limit_paths(list_volumes(root / f"{phase}A"), opt)
            paths_B = list_volumes(root / f"{phase}B")
            if self.mode == "aligned":
                paths_B = _partners(paths_A, root / f"{phase}A", paths_B, root / f"{phase}B")
            else:
                paths_B = limit_paths(paths_B, opt)
            self.A = _VolumeSource(paths_A, norm_A, nc_A, cache)
            self.B = _VolumeSource(paths_B, norm_B, nc_B, cache)
        self._transforms: dict[bool, Any] = {}

    def __len__(self) -> int:
        return len(self.A) * self.samples

    def __getitem__(self, index: int) -> dict[str, Any]:
        i = index // self.samples
        a = self.A.get(i)
        if self.B is None:
            return {"A": self._sample({"A": a})["A"], "A_paths": str(self.A.paths[i])}
        if self.mode == "aligned":
            j = i
            b = self.B.get(j)
            if a.shape[1:] != b.shape[1:]:
                raise UserError(f"paired volumes differ in shape: {self.A.paths[i]} "
                                f"{tuple(a.shape[1:])} vs {self.B.paths[j]} {tuple(b.shape[1:])}")
            patch = self._sample({"A": a, "B": b})
        else:
            j = i % len(self.B) if self.serial else int(torch.randint(len(self.B), ()).item())
            b = self.B.get(j)
            patch = {**self._sample({"A": a}), **self._sample({"B": b})}
        return {"A": patch["A"], "B": patch["B"],
                "A_paths": str(self.A.paths[i]), "B_paths": str(self.B.paths[j])}

    def _sample(self, data: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """One random patch (same location and flips for every key); whole volumes at test."""
        if not self.is_train:
            return data
        keys = list(data)
        weighted = self.foreground
        if weighted:
            data = {**data, "_weight": self._weights(data[keys[0]])}
        transform = self._transform(keys, weighted)
        # Seed MONAI's own generator from torch's, which DataLoader seeds per worker and per
        # epoch; MONAI's RandomState would otherwise repeat the same draws in every worker.
        transform.set_random_state(seed=int(torch.randint(2**31 - 1, ()).item()))
        out = transform(data)
        if isinstance(out, list):
            out = out[0]
        return {k: _plain(out[k]) for k in keys}

    def _weights(self, volume: torch.Tensor) -> torch.Tensor:
        ref = volume.amax(0, keepdim=True)
        lo, hi = float(ref.min()), float(ref.max())
        threshold = lo + FOREGROUND_FRACTION * (hi - lo)
        weight = (ref > threshold).to(torch.float32)
        if not weight.any():
            weight.fill_(1.0)
        return weight

    def _transform(self, keys: Sequence[str], weighted: bool) -> Any:
        from monai.transforms import (
            Compose,
            RandFlipd,
            RandSpatialCropd,
            RandWeightedCropd,
            SpatialPadd,
        )

        cache_key = (tuple(keys), weighted)
        if cache_key not in self._transforms:
            steps: list[Any] = [SpatialPadd(keys, self.patch_size, mode="constant",
                                            value=PAD_VALUE)]
            if weighted:
                # The weight map is padded with 0: no patch centres outside the volume.
                steps.append(SpatialPadd("_weight", self.patch_size, mode="constant", value=0.0))
                steps.append(RandWeightedCropd(keys, w_key="_weight",
                                               spatial_size=self.patch_size, num_samples=1))
            else:
                steps.append(RandSpatialCropd(keys, self.patch_size, random_size=False))
            steps += [RandFlipd(keys, prob=0.5, spatial_axis=a) for a in self.flip_axes]
            self._transforms[cache_key] = Compose(steps)
        return self._transforms[cache_key]


def _plain(x: Any) -> torch.Tensor:
    """MONAI returns MetaTensors; training needs only plain contiguous float tensors."""
    if hasattr(x, "as_tensor"):
        x = x.as_tensor()
    return torch.as_tensor(x, dtype=torch.float32).contiguous()


def _partners(paths_A: list[Path], dir_A: Path, paths_B: list[Path], dir_B: Path
              ) -> list[Path]:
    """The B file with the same name (without extension) for every A file."""
    by_stem: dict[str, Path] = {}
    for p in paths_B:
        key = str(p.parent.relative_to(dir_B) / volume_stem(p))
        if key in by_stem:
            raise UserError(f"two volumes share the name '{key}' in {dir_B}: {by_stem[key]} "
                            f"and {p}")
        by_stem[key] = p
    partners = []
    for a in paths_A:
        key = str(a.parent.relative_to(dir_A) / volume_stem(a))
        partner = by_stem.get(key)
        if partner is None:
            raise UserError(f"no partner for {a} in {dir_B} (expected {dir_B / key} with a "
                            "volume extension)")
        partners.append(partner)
    return partners


def create_volume_dataset(opt: RunConfig) -> Dataset:
    """The 3D dataset for ``opt`` (see module docstring). Items hold float32 C×D×H×W tensors
    in [-1, 1] under "A" (and "B"), plus "A_paths" (and "B_paths")."""
    return VolumeDataset(opt)
