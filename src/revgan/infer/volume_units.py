"""Writing 3D test visuals as NIfTI in the input's units, aligned with the input file."""

from __future__ import annotations

from pathlib import Path

import torch

from revgan.config import RunConfig
from revgan.data.domains import folder_of, other
from revgan.data.intensity import Normalizer, make_normalizer, output_stats
from revgan.data.volumes import read_volume, write_volume


def domain_normalizer(opt: RunConfig, folder_domain: str) -> Normalizer:
    """The intensity mapping of the files in folder ``A`` or ``B`` (saved with the run)."""
    kind, window, percentiles = opt.intensity_of(folder_domain)
    return make_normalizer(kind, window=window, percentiles=percentiles)


def write_visual_volume(path: Path, item: torch.Tensor, label: str, data: dict,
                        opt: RunConfig, trained_direction: str) -> Path:
    """Save visual ``label`` (C×D×H×W in [-1, 1]) in the units of its domain.

    ``label`` names a model domain (``fake_A``); ``trained_direction`` (the run's training
    ``--direction``) says which data folder's intensity mapping that domain has, whatever
    direction this test translates. ``data`` holds the input files under the folders they
    were read from (``opt.direction`` at test time; the single dataset: always "A"). The
    affine and header come from the volume the visual was computed from; per-volume
    intensity statistics too (a translation is mapped back with the output domain's
    normaliser fitted on its input, see :mod:`revgan.data.intensity`).
    """
    kind, domain = label.rsplit("_", 1)
    if kind == "idt":  # idt_A = G_AB(real_B) is a domain-B image, made from real_B
        domain = other(domain)
    source_domain = other(domain) if kind == "fake" else domain
    key = f"{folder_of(source_domain, opt.direction)}_paths"
    if key not in data:  # the single dataset (model test) holds its input under "A"
        key = "A_paths"
    source = Path(data[key][0])
    volume, meta = read_volume(source)
    normalizer = domain_normalizer(opt, folder_of(domain, trained_direction))
    stats = output_stats(normalizer, volume)
    values = normalizer.denormalize(item.numpy(), stats)
    return write_volume(path, values, meta)
