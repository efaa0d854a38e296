"""Validation during training: metrics on a held-out split, to pick the best epoch."""

from __future__ import annotations

import copy
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from revgan.config import RunConfig
from revgan.data import create_dataset
from revgan.errors import UserError
from revgan.evaluation.metrics import cycle_metrics_per_item, paired_metrics_per_item

DATA_RANGE = 2.0  # images and volumes are compared in [-1, 1]


def validation_phase(opt: RunConfig) -> str:
    """``val`` (aligned: ``<dataroot>/val``; unaligned: ``valA``/``valB``), else ``test``."""
    root = Path(opt.dataroot)
    for phase in ("val", "test"):
        if (root / phase).is_dir() or (root / f"{phase}A").is_dir():
            return phase
    raise UserError(f"--val_freq needs a held-out split: {root}/val (or valA/valB) "
                    "does not exist")


def validation_options(opt: RunConfig) -> RunConfig:
    val = copy.copy(opt)
    val.phase = validation_phase(opt)
    val.isTrain, val.serial_batches, val.no_flip = False, True, True
    val.max_dataset_size = opt.val_size
    return val


def _mean(rows: list[dict[str, float]], prefix: str) -> dict[str, float]:
    return {f"{prefix}{k}": sum(r[k] for r in rows) / len(rows) for k in rows[0]}


@torch.no_grad()
def validate(model, opt: RunConfig, device: torch.device,
             dataset=None) -> dict[str, float]:
    """Mean metrics in [-1, 1]: MAE/MSE/PSNR/SSIM of A→B against B where pairs exist,
    ``*_A`` for B→A, and ``cycle_*`` reconstruction errors for unpaired models."""
    dataset = dataset if dataset is not None else create_dataset(validation_options(opt))
    loader = DataLoader(dataset, batch_size=1, shuffle=False, num_workers=0)
    model.eval()
    rows: dict[str, list[dict[str, float]]] = {}
    try:
        for data in loader:
            paired = "B_paths" in data and _same_item(data["A_paths"], data["B_paths"])
            model.set_input(data)
            visuals = model.test()
            if paired and "real_B" in visuals:
                rows.setdefault("", []).extend(
                    paired_metrics_per_item(visuals["fake_B"], visuals["real_B"], DATA_RANGE))
                if "fake_A" in visuals:
                    rows.setdefault("A_", []).extend(paired_metrics_per_item(
                        visuals["fake_A"], visuals["real_A"], DATA_RANGE))
            for side in ("A", "B"):
                if f"rec_{side}" in visuals:
                    rows.setdefault(f"cycle_{side}_", []).extend(cycle_metrics_per_item(
                        visuals[f"real_{side}"], visuals[f"rec_{side}"], DATA_RANGE))
    finally:
        model.train()
    out: dict[str, float] = {}
    for prefix, values in rows.items():
        out.update(_mean(values, prefix))
    return out


def _same_item(a_paths, b_paths) -> bool:
    """Aligned items carry one file for both; unaligned ones pair only by equal names."""
    a = [Path(p).name for p in (a_paths if isinstance(a_paths, (list, tuple)) else [a_paths])]
    b = [Path(p).name for p in (b_paths if isinstance(b_paths, (list, tuple)) else [b_paths])]
    return a == b
