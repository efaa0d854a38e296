"""The CycleGAN objective: adversarial + cycle consistency + identity, no pairs needed.

``unpaired_revgan`` uses one generator whose reverse direction is the inverse of the same
reversible core; ``cycle_gan`` uses two independent ResNet/U-Net generators.
"""

from __future__ import annotations

import torch
from torch import nn

from revgan.config import RunConfig
from revgan.errors import UserError
from revgan.models.base import (
    BaseModel,
    build_discriminator,
    build_generator,
    uses_grouped_backward,
)
from revgan.models.losses import GANLoss, gradient_penalty
from revgan.models.pool import ImagePool


class UnpairedModel(BaseModel):
    def __init__(self, opt: RunConfig, device: torch.device, generator: str):
        super().__init__(opt, device)
        self.grouped_backward = uses_grouped_backward(opt, generator)
        self.nets["G"] = build_generator(opt, generator)
        self.visual_names = ["real_A", "fake_B", "rec_A", "real_B", "fake_A", "rec_B"]
        if self.is_train:
            if opt.lambda_identity > 0 and opt.input_nc != opt.output_nc:
                raise UserError(f"the identity loss needs equal channels in A and B "
                                f"({opt.input_nc} vs {opt.output_nc}); pass "
                                "--lambda_identity 0")
            if opt.lambda_identity > 0:
                self.visual_names += ["idt_B", "idt_A"]
            # D_A judges domain B (outputs of A→B), D_B judges domain A, as upstream.
            self.nets["D_A"] = build_discriminator(opt, opt.output_nc)
            self.nets["D_B"] = build_discriminator(opt, opt.input_nc)
            self.pools = {"A": ImagePool(opt.pool_size), "B": ImagePool(opt.pool_size)}
            self.gan = GANLoss(opt.gan_mode)
            self.l1 = nn.L1Loss()
            self.make_optimizer("G", [self.nets["G"]])
            self.make_optimizer("D", [self.nets["D_A"], self.nets["D_B"]])
        self.setup()

    def forward(self) -> None:
        G = self.nets["G"]
        self.fake_B = G(self.real_A, "AtoB")
        self.rec_A = G(self.fake_B, "BtoA")
        self.fake_A = G(self.real_B, "BtoA")
        self.rec_B = G(self.fake_A, "AtoB")

    def _generator_groups(self) -> list:
        """The generator objective as independent groups of terms (see ``step_in_groups``):
        each direction's cycle with its GAN term, then each identity term."""
        opt, G = self.opt, self.nets["G"]
        real = {"A": self.real_A, "B": self.real_B}
        lam = {"A": opt.lambda_A, "B": opt.lambda_B}

        def cycle(s: str, t: str):  # s: source domain, t: target domain
            def group() -> torch.Tensor:
                fake = G(real[s], f"{s}to{t}")
                rec = G(fake, f"{t}to{s}")
                setattr(self, f"fake_{t}", fake)
                setattr(self, f"rec_{s}", rec)
                # D_A judges domain B (outputs of A→B), D_B judges domain A, as upstream
                loss_gan = self.gan(self.plain(f"D_{s}")(fake), True, for_discriminator=False)
                loss_cycle = self.l1(rec.float(), real[s]) * lam[s]
                self.record(**{f"G_{s}": loss_gan, f"cycle_{s}": loss_cycle})
                return loss_gan + loss_cycle
            return group

        def identity(s: str, t: str):  # idt_A = G_{A→B}(real_B), as upstream
            def group() -> torch.Tensor:
                idt = G(real[t], f"{s}to{t}")
                setattr(self, f"idt_{s}", idt)
                loss = self.l1(idt.float(), real[t]) * lam[t] * opt.lambda_identity
                self.record(**{f"idt_{s}": loss})
                return loss
            return group

        groups = [cycle("A", "B"), cycle("B", "A")]
        if opt.lambda_identity > 0:
            groups += [identity("A", "B"), identity("B", "A")]
        else:
            self.record(idt_A=0.0, idt_B=0.0)
        return groups

    def _discriminator_loss(self, D: nn.Module, real: torch.Tensor,
                            fake: torch.Tensor) -> torch.Tensor:
        loss = 0.5 * (self.gan(D(real), True) + self.gan(D(fake.detach()), False))
        if self.opt.gan_mode == "wgangp":
            loss = loss + gradient_penalty(D, real, fake, self.opt.lambda_gp)
        return loss

    def optimize_parameters(self) -> None:
        D_A, D_B = self.nets["D_A"], self.nets["D_B"]
        self.set_requires_grad([D_A, D_B], False)
        self.step_in_groups("G", self._generator_groups())
        self.set_requires_grad([D_A, D_B], True)
        fake_B = self.pools["B"].query(self.fake_B.detach())
        fake_A = self.pools["A"].query(self.fake_A.detach())
        for _ in range(self.opt.D_rollout):
            with self.autocast():
                loss_D_A = self._discriminator_loss(D_A, self.real_B, fake_B)
                loss_D_B = self._discriminator_loss(D_B, self.real_A, fake_A)
            self.apply_step("D", loss_D_A + loss_D_B)
        self.record(D_A=loss_D_A, D_B=loss_D_B)

    def test_visuals(self) -> dict[str, torch.Tensor]:
        out = {"real_A": self.real_A}
        out["fake_B"] = self.translate(self.real_A, "AtoB")
        out["rec_A"] = self.translate(out["fake_B"], "BtoA")
        if self.real_B is not None:
            out["real_B"] = self.real_B
            out["fake_A"] = self.translate(self.real_B, "BtoA")
            out["rec_B"] = self.translate(out["fake_A"], "AtoB")
        return out

    def train_visuals(self) -> dict[str, torch.Tensor]:
        return {name: getattr(self, name).detach() for name in self.visual_names
                if getattr(self, name, None) is not None}
