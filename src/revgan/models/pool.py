"""History of generated images for the discriminator (Shrivastava et al. 2017)."""

from __future__ import annotations

import torch
from torch import Tensor


class ImagePool:
    """Returns, per image, either the new fake or (half the time, once full) an older one.

    The pool's contents are part of the training state so that resume is exact.
    """

    def __init__(self, size: int):
        self.size = size
        self.images: list[Tensor] = []

    def query(self, images: Tensor) -> Tensor:
        if self.size == 0:
            return images
        out = []
        for image in images.detach():
            image = image.unsqueeze(0)
            if len(self.images) < self.size:
                self.images.append(image.clone())
                out.append(image)
            elif torch.rand(1).item() > 0.5:
                index = int(torch.randint(0, self.size, (1,)).item())
                out.append(self.images[index].clone())
                self.images[index] = image.clone()
            else:
                out.append(image)
        return torch.cat(out, 0)

    def state_dict(self) -> dict:
        return {"size": self.size, "images": [t.cpu() for t in self.images]}

    def load_state_dict(self, state: dict, device: torch.device) -> None:
        self.size = state["size"]
        self.images = [t.to(device) for t in state["images"]]
