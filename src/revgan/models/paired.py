"""The pix2pix objective: conditional adversarial loss + L1 to the paired target.

``pix2pix`` trains one direction with one conditional PatchGAN. ``paired_revgan`` trains
both directions of one reversible generator, each with its own conditional PatchGAN on
``cat(input, output)``, as the reference does.
"""

from __future__ import annotations

import torch
from torch import nn

from revgan.config import RunConfig
from revgan.models.base import (
    BaseModel,
    build_discriminator,
    build_generator,
    uses_grouped_backward,
)
from revgan.models.losses import GANLoss, gradient_penalty


class PairedModel(BaseModel):
    def __init__(self, opt: RunConfig, device: torch.device, generator: str,
                 bidirectional: bool):
        super().__init__(opt, device)
        self.bidirectional = bidirectional
        self.grouped_backward = uses_grouped_backward(opt, generator)
        self.nets["G"] = build_generator(opt, generator)
        self.visual_names = ["real_A", "fake_B", "real_B"]
        if bidirectional:
            self.visual_names += ["fake_A"]
        if self.is_train:
            channels = opt.input_nc + opt.output_nc
            # D_B judges A→B outputs given their input; D_A the reverse direction.
            self.nets["D_B"] = build_discriminator(opt, channels)
            discriminators = [self.nets["D_B"]]
            if bidirectional:
                self.nets["D_A"] = build_discriminator(opt, channels)
                discriminators.append(self.nets["D_A"])
            self.gan = GANLoss(opt.gan_mode)
            self.l1 = nn.L1Loss()
            self.make_optimizer("G", [self.nets["G"]])
            self.make_optimizer("D", discriminators)
        self.setup()

    def _directions(self):
        """(direction, input, target, discriminator name, suffix) for each trained direction."""
        out = [("AtoB", self.real_A, self.real_B, "D_B", "B")]
        if self.bidirectional:
            out.append(("BtoA", self.real_B, self.real_A, "D_A", "A"))
        return out

    def forward(self) -> None:
        G = self.nets["G"]
        self.fake_B = G(self.real_A, "AtoB")
        if self.bidirectional:
            self.fake_A = G(self.real_B, "BtoA")

    def _generator_groups(self) -> list:
        """One group of terms (GAN + L1) per direction (see ``step_in_groups``)."""
        G = self.nets["G"]

        def direction(direction: str, source, target, d_name: str, s: str):
            def group() -> torch.Tensor:
                fake = G(source, direction)
                setattr(self, f"fake_{s}", fake)
                pred = self.plain(d_name)(torch.cat([source, fake], 1))
                gan = self.gan(pred, True, for_discriminator=False)
                l1 = self.l1(fake.float(), target) * self.opt.lambda_L1
                self.record(**{f"G_GAN_{s}": gan, f"G_L1_{s}": l1})
                return gan + l1
            return group

        return [direction(*args) for args in self._directions()]

    def optimize_parameters(self) -> None:
        opt = self.opt
        discriminators = [self.plain(d) for _, _, _, d, _ in self._directions()]
        self.set_requires_grad(discriminators, False)
        self.step_in_groups("G", self._generator_groups())
        self.set_requires_grad(discriminators, True)
        for _ in range(opt.D_rollout):
            loss_D = 0.0
            with self.autocast():
                for direction, source, target, d_name, _ in self._directions():
                    fake = (self.fake_B if direction == "AtoB" else self.fake_A).detach()
                    D = self.nets[d_name]
                    real_pair = torch.cat([source, target], 1)
                    fake_pair = torch.cat([source, fake], 1)
                    loss = 0.5 * (self.gan(D(real_pair), True) + self.gan(D(fake_pair), False))
                    if opt.gan_mode == "wgangp":
                        loss = loss + gradient_penalty(D, real_pair, fake_pair, opt.lambda_gp)
                    self.record(**{d_name: loss})
                    loss_D = loss_D + loss
            self.apply_step("D", loss_D)

    def test_visuals(self) -> dict[str, torch.Tensor]:
        out = {"real_A": self.real_A, "fake_B": self.translate(self.real_A, "AtoB")}
        if self.real_B is not None:
            out["real_B"] = self.real_B
            if self.bidirectional:
                out["fake_A"] = self.translate(self.real_B, "BtoA")
        return out

    def train_visuals(self) -> dict[str, torch.Tensor]:
        return {name: getattr(self, name).detach() for name in self.visual_names
                if getattr(self, name, None) is not None}
