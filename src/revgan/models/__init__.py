"""Training objectives. One class per objective; 3D is the same class with ``dims=3``."""

from __future__ import annotations

import argparse

import torch

from revgan.errors import UserError
from revgan.models.base import BaseModel
from revgan.models.paired import PairedModel
from revgan.models.single import SingleDirectionModel
from revgan.models.unpaired import UnpairedModel

# model name -> (objective, generator kind, trains both directions)
SPECS: dict[str, tuple[str, str, bool]] = {
    "unpaired_revgan": ("unpaired", "rev", True),
    "paired_revgan": ("paired", "rev", True),
    "cycle_gan": ("unpaired", "pair", True),
    "pix2pix": ("paired", "single", False),
}
SPECS.update({f"{name}3d": spec for name, spec in list(SPECS.items())})


def generator_kind(model: str) -> str:
    return SPECS[model.removesuffix("3d") if model not in SPECS else model][1]


def create_model(opt: argparse.Namespace, device: torch.device,
                 trained_model: str | None = None) -> BaseModel:
    """Build the model named by ``opt.model``; ``test`` needs the trained model's name."""
    if opt.model == "test":
        if trained_model is None:
            raise UserError("--model test needs a trained run (checkpoints/<name>/"
                            "train_opt.json) to know which generator to build")
        return SingleDirectionModel(opt, device, generator_kind(trained_model))
    if opt.model not in SPECS:
        raise UserError(f"unknown --model '{opt.model}'; choose one of {', '.join(SPECS)}, test")
    objective, kind, both = SPECS[opt.model]
    if objective == "unpaired":
        return UnpairedModel(opt, device, kind)
    return PairedModel(opt, device, kind, bidirectional=both)


__all__ = ["BaseModel", "SPECS", "create_model", "generator_kind"]
