"""Adversarial losses and the WGAN-GP gradient penalty."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from revgan.errors import UserError

GAN_MODES = ("lsgan", "vanilla", "wgangp", "hinge")


class GANLoss(nn.Module):
    """One adversarial objective for generator and discriminator.

    ``lsgan`` (least squares, CycleGAN), ``vanilla`` (cross-entropy on logits, pix2pix),
    ``wgangp`` (Wasserstein critic; add :func:`gradient_penalty`) and ``hinge``.
    """

    def __init__(self, mode: str):
        super().__init__()
        if mode not in GAN_MODES:
            raise UserError(f"unknown --gan_mode '{mode}'; choose one of {', '.join(GAN_MODES)}")
        self.mode = mode

    def forward(self, prediction: Tensor, target_is_real: bool,
                for_discriminator: bool = True) -> Tensor:
        prediction = prediction.float()  # losses in fp32 under autocast
        if self.mode == "lsgan":
            target = torch.full_like(prediction, 1.0 if target_is_real else 0.0)
            return nn.functional.mse_loss(prediction, target)
        if self.mode == "vanilla":
            target = torch.full_like(prediction, 1.0 if target_is_real else 0.0)
            return nn.functional.binary_cross_entropy_with_logits(prediction, target)
        if self.mode == "wgangp":
            return -prediction.mean() if target_is_real else prediction.mean()
        # hinge: margins for the discriminator, plain critic score for the generator
        if for_discriminator:
            sign = -1.0 if target_is_real else 1.0
            return torch.relu(1.0 + sign * prediction).mean()
        return -prediction.mean()


def gradient_penalty(discriminator: nn.Module, real: Tensor, fake: Tensor,
                     weight: float = 10.0) -> Tensor:
    """WGAN-GP: penalise the critic's gradient norm away from 1 on real/fake mixtures."""
    alpha = torch.rand((real.shape[0],) + (1,) * (real.ndim - 1), device=real.device)
    mixed = (alpha * real.detach() + (1 - alpha) * fake.detach()).requires_grad_(True)
    score = discriminator(mixed)
    (grad,) = torch.autograd.grad(score.sum(), mixed, create_graph=True)
    norms = grad.flatten(1).norm(2, dim=1)
    return weight * ((norms - 1) ** 2).mean()
