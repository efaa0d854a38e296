"""Writing 3D test visuals as NIfTI in the input's units, aligned with the input file."""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from revgan.data.intensity import Normalizer, make_normalizer, output_stats
from revgan.data.volumes import read_volume, write_volume


def domain_normalizer(opt: argparse.Namespace, folder_domain: str) -> Normalizer:
    """The intensity mapping of the files in folder ``A`` or ``B`` (saved with the run)."""
    return make_normalizer(getattr(opt, f"norm_{folder_domain}", "minmax") or "minmax",
                           window=getattr(opt, f"window_{folder_domain}", None),
                           percentiles=getattr(opt, "percentiles", None) or (0.5, 99.5))


def _folder(model_domain: str, direction: str) -> str:
    """Model domains are data folders, swapped when training ran B→A."""
    return model_domain if direction == "AtoB" else {"A": "B", "B": "A"}[model_domain]


def write_visual_volume(path: Path, item: torch.Tensor, label: str, data: dict,
                        opt: argparse.Namespace) -> Path:
    """Save visual ``label`` (C×D×H×W in [-1, 1]) in the units of its domain.

    The affine and header come from the volume the visual was computed from; per-volume
    intensity statistics too (a translation is mapped back with the output domain's
    normaliser fitted on its input, see :mod:`revgan.data.intensity`).
    """
    kind, domain = label.rsplit("_", 1)
    source_domain = domain if kind in ("real", "rec", "idt") else {"A": "B", "B": "A"}[domain]
    key = f"{_folder(source_domain, opt.direction)}_paths"
    if key not in data:  # the single dataset (model test) holds its input under "A"
        key = "A_paths"
    source = Path(data[key][0])
    volume, meta = read_volume(source)
    normalizer = domain_normalizer(opt, _folder(domain, opt.direction))
    stats = output_stats(normalizer, volume)
    values = normalizer.denormalize(item.numpy(), stats)
    return write_volume(path, values, meta)
