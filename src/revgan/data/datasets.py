"""2D datasets in the pytorch-CycleGAN-and-pix2pix layouts: aligned, unaligned and single.

Every item is a dict of float tensors C×H×W in [-1, 1] plus the source paths. The channel
counts follow upstream: "A" is read with ``input_nc`` for ``direction=AtoB`` and with
``output_nc`` for ``BtoA`` (the model swaps A and B later), "B" with the other.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from revgan.config import RunConfig
from revgan.data.domains import ends, folder_channels
from revgan.data.files import dataset_root, limit_paths
from revgan.data.images import image_size, list_images, read_image, to_channels
from revgan.data.transforms import apply_transform, get_params, resized_size
from revgan.errors import UserError

DATASET_MODES = ("aligned", "unaligned", "single")


def seed_worker(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: seed numpy and ``random`` from the worker's torch seed.

    Torch already gives each worker its own seed derived from the main process's RNG; this
    extends that to numpy/random so any code using them is reproducible too.
    """
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


def _channels(opt: RunConfig) -> tuple[int, int]:
    """Channels for the files' A and B domains (upstream semantics, see module docstring)."""
    input_nc, output_nc = opt.input_nc, opt.output_nc
    for name, value in (("input_nc", input_nc), ("output_nc", output_nc)):
        if value not in (1, 3):
            raise UserError(f"--{name} must be 1 or 3 for 2D images, got {value}")
    return folder_channels(input_nc, output_nc, opt.direction)


def check_batchable(paths: list[Path], opt: RunConfig, halves: bool = False) -> None:
    """Refuse, before training, images that preprocessing leaves at different sizes when a
    batch must stack several of them (the collate step would fail deep in the loader).

    Cropping modes give every image crop_size×crop_size; ``none`` and ``scale_width`` keep
    the files' own sizes or aspect ratios. ``halves``: aligned A|B files (half the width).
    Reads image headers only.
    """
    if not opt.isTrain or opt.batch_size < 2 or "crop" in opt.preprocess:
        return
    first: tuple[Path, tuple[int, int]] | None = None
    for path in paths:
        height, width = image_size(path)
        size = resized_size(opt, (height, width // 2 if halves else width))
        if first is None:
            first = (path, size)
        elif size != first[1]:
            raise UserError(
                f"--batch_size {opt.batch_size} stacks images, but --preprocess "
                f"{opt.preprocess} leaves {first[0]} at {first[1][0]}×{first[1][1]} and {path} "
                f"at {size[0]}×{size[1]}; use --preprocess resize_and_crop (or crop), or "
                "--batch_size 1")


class AlignedDataset(Dataset):
    """``<dataroot>/<phase>/`` images holding A (left half) and B (right half) side by side.

    Both halves get the same crop and flip, so the pair stays pixel-aligned.
    """

    def __init__(self, opt: RunConfig):
        self.opt = opt
        self.dir = dataset_root(opt) / opt.phase
        self.paths = limit_paths(list_images(self.dir), opt)
        self.nc_a, self.nc_b = _channels(opt)
        check_batchable(self.paths, opt, halves=True)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> dict[str, Any]:
        path = self.paths[index]
        ab, _ = read_image(path, max(self.nc_a, self.nc_b))
        width = ab.shape[2]
        if width % 2:
            raise UserError(f"{path}: aligned images hold A|B side by side, so the width must be "
                            f"even (got {width})")
        half = width // 2
        a = to_channels(ab[:, :, :half], self.nc_a, path)
        b = to_channels(ab[:, :, half:], self.nc_b, path)
        params = get_params(self.opt, a.shape[1:])
        return {
            "A": apply_transform(a, self.opt, params),
            "B": apply_transform(b, self.opt, params),
            "A_paths": str(path),
            "B_paths": str(path),
        }


class UnalignedDataset(Dataset):
    """``<dataroot>/<phase>A`` and ``<dataroot>/<phase>B``, unpaired.

    Item ``i`` takes A image ``i % len(A)`` and, for B, image ``i % len(B)`` when
    ``serial_batches`` is set, otherwise a random one (torch's RNG). Each domain gets its own
    crop and flip. The length is the larger of the two domains.
    """

    def __init__(self, opt: RunConfig):
        self.opt = opt
        root = dataset_root(opt)
        phase = opt.phase
        self.dir_A, self.dir_B = root / f"{phase}A", root / f"{phase}B"
        self.A_paths = limit_paths(list_images(self.dir_A), opt)
        self.B_paths = limit_paths(list_images(self.dir_B), opt)
        self.nc_a, self.nc_b = _channels(opt)
        check_batchable(self.A_paths, opt)
        check_batchable(self.B_paths, opt)
        self.serial = opt.serial_batches

    def __len__(self) -> int:
        return max(len(self.A_paths), len(self.B_paths))

    def __getitem__(self, index: int) -> dict[str, Any]:
        path_a = self.A_paths[index % len(self.A_paths)]
        if self.serial:
            index_b = index % len(self.B_paths)
        else:
            index_b = int(torch.randint(0, len(self.B_paths), ()).item())
        path_b = self.B_paths[index_b]
        a, _ = read_image(path_a, self.nc_a)
        b, _ = read_image(path_b, self.nc_b)
        return {
            "A": apply_transform(a, self.opt, get_params(self.opt, a.shape[1:])),
            "B": apply_transform(b, self.opt, get_params(self.opt, b.shape[1:])),
            "A_paths": str(path_a),
            "B_paths": str(path_b),
        }


class SingleDataset(Dataset):
    """One domain, for inference. Images come from the first folder that exists of
    ``<dataroot>/<phase>A`` (``<phase>B`` when ``direction=BtoA``), ``<dataroot>/<phase>``
    and ``<dataroot>`` itself (the upstream way: ``--dataroot datasets/x/testA``).

    The images are returned under "A" whatever their domain, as upstream's test model expects.
    """

    def __init__(self, opt: RunConfig):
        self.opt = opt
        root = dataset_root(opt)
        phase = opt.phase
        side = ends(opt.direction)[0]
        candidates = [root / f"{phase}{side}", root / phase, root]
        self.dir = next(c for c in candidates if c.is_dir())
        self.paths = limit_paths(list_images(self.dir), opt)
        self.nc = _channels(opt)[0]

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> dict[str, Any]:
        path = self.paths[index]
        a, _ = read_image(path, self.nc)
        return {"A": apply_transform(a, self.opt, get_params(self.opt, a.shape[1:])),
                "A_paths": str(path)}


def create_dataset(opt: RunConfig) -> Dataset:
    """Build the dataset named by ``opt.dataset_mode``; ``opt.dims == 3`` selects volumes."""
    if opt.dims == 3:
        from revgan.data.volume_datasets import create_volume_dataset

        return create_volume_dataset(opt)
    mode = opt.dataset_mode
    classes = {"aligned": AlignedDataset, "unaligned": UnalignedDataset, "single": SingleDataset}
    if mode not in classes:
        raise UserError(f"unknown --dataset_mode '{mode}'; choose one of "
                        f"{', '.join(DATASET_MODES)}")
    return classes[mode](opt)
