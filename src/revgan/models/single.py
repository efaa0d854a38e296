"""``--model test``: one direction of a trained generator, for inference only."""

from __future__ import annotations

import torch

from revgan.config import RunConfig
from revgan.data.domains import ends
from revgan.models.base import BaseModel, build_generator


class SingleDirectionModel(BaseModel):
    """Loads ``net_G`` of any trained model and translates ``--direction`` only."""

    def __init__(self, opt: RunConfig, device: torch.device, generator: str):
        super().__init__(opt, device)
        self.nets["G"] = build_generator(opt, generator)
        source, target = ends(opt.direction)
        self.visual_names = [f"real_{source}", f"fake_{target}"]
        self.setup()

    def set_input(self, data: dict) -> None:
        # the single dataset puts every input under "A", whichever domain it comes from
        self.real = data["A"].to(self.device)
        paths = data["A_paths"]
        self.image_paths = list(paths) if isinstance(paths, (list, tuple)) else [paths]

    def test_visuals(self) -> dict[str, torch.Tensor]:
        fake = self.translate(self.real, self.opt.direction)
        return dict(zip(self.visual_names, (self.real, fake)))
