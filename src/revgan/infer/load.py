"""Rebuild a trained generator from its run folder (``checkpoints/<name>``)."""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import torch
from torch import nn

from revgan.config import load_saved_options
from revgan.errors import UserError
from revgan.models import generator_kind
from revgan.models.base import build_generator
from revgan.runs.checkpoints import load_checkpoint, weights_path


def saved_options(model_dir: Path) -> argparse.Namespace:
    """The training options of a run, as a namespace (JSON lists back to tuples)."""
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise UserError(f"no trained run at {model_dir}")
    saved = load_saved_options(model_dir)
    if saved is None:
        raise UserError(f"{model_dir} has no train_opt.json (is it a revgan run folder?)")
    for key, value in list(saved.items()):
        if value == "inf":
            saved[key] = math.inf
        elif isinstance(value, list):
            saved[key] = tuple(value)
    return argparse.Namespace(**saved)


def load_generator(model_dir: Path, epoch: str = "latest",
                   device: torch.device | str = "cpu") -> tuple[nn.Module, argparse.Namespace]:
    """The generator of a run (both directions where the model has them) in eval mode."""
    opt = saved_options(model_dir)
    opt.use_naive = True  # inference keeps no graph; the memory-saving path is not needed
    G = build_generator(opt, generator_kind(opt.model))
    if not weights_path(model_dir, epoch, "G").exists():
        raise UserError(f"{model_dir} has no checkpoint '{epoch}' "
                        f"({weights_path(model_dir, epoch, 'G').name} is missing)")
    load_checkpoint(Path(model_dir), str(epoch), {"G": G}, torch.device(device), False)
    return G.to(device).eval(), opt
