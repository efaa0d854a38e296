"""Rebuild a trained generator from its run folder (``checkpoints/<name>``)."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from revgan.config import RunConfig
from revgan.errors import UserError
from revgan.models.base import build_generator
from revgan.models.registry import generator_kind
from revgan.runs.checkpoints import load_checkpoint, weights_path
from revgan.runs.run_folder import load_run_config


def load_generator(model_dir: Path, epoch: str = "latest",
                   device: torch.device | str = "cpu") -> tuple[nn.Module, RunConfig]:
    """The generator of a run (both directions where the model has them) in eval mode."""
    opt = load_run_config(model_dir)
    opt.use_naive = True  # inference keeps no graph; the memory-saving path is not needed
    G = build_generator(opt, generator_kind(opt.model))
    if not weights_path(model_dir, epoch, "G").exists():
        raise UserError(f"{model_dir} has no checkpoint '{epoch}' "
                        f"({weights_path(model_dir, epoch, 'G').name} is missing)")
    load_checkpoint(Path(model_dir), str(epoch), {"G": G}, torch.device(device), False)
    return G.to(device).eval(), opt
