"""What every training objective shares: devices, precision, optimisers, schedules, state."""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Iterable

import torch
from torch import Tensor, nn

from revgan.config import RunConfig
from revgan.data.domains import ends
from revgan.data.transforms import pad_to_multiple
from revgan.engine.recompute import set_recompute
from revgan.engine.reversible import ReversibleSequence
from revgan.errors import UserError
from revgan.models.pool import ImagePool
from revgan.networks import define_D, define_G, define_rev_G
from revgan.runs.checkpoints import unwrap

DIRECTIONS = ("AtoB", "BtoA")


class OneWay(nn.Module):
    """A single baseline generator (pix2pix): only A→B exists."""

    def __init__(self, G: nn.Module):
        super().__init__()
        self.G = G
        self.size_divisor = getattr(G, "size_divisor", 1)

    def forward(self, x: Tensor, direction: str = "AtoB") -> Tensor:
        if direction != "AtoB":
            raise UserError("this generator was trained for A→B only; use --direction AtoB")
        return self.G(x)


class GeneratorPair(nn.Module):
    """Two independent baseline generators (CycleGAN): G_A for A→B, G_B for B→A."""

    def __init__(self, G_A: nn.Module, G_B: nn.Module):
        super().__init__()
        self.G_A, self.G_B = G_A, G_B
        self.size_divisor = max(getattr(G_A, "size_divisor", 1), getattr(G_B, "size_divisor", 1))

    def forward(self, x: Tensor, direction: str = "AtoB") -> Tensor:
        return self.G_A(x) if direction == "AtoB" else self.G_B(x)


def build_generator(opt: RunConfig, kind: str) -> nn.Module:
    """``kind``: 'rev' (shared reversible core), 'pair' (two baselines), 'single'."""
    net = _build_generator(opt, kind)
    on = opt.recompute_stages == "on"
    if set_recompute(net, on) == 0 and on and not opt.fully_reversible:
        raise UserError(f"--recompute_stages on: the {opt.netG} generator has no stages to "
                        "re-run (ResNet and RevGAN generators have)")
    return net


def _build_generator(opt: RunConfig, kind: str) -> nn.Module:
    dropout = not opt.no_dropout
    if kind == "rev":
        return define_rev_G(opt.netG, opt.input_nc, opt.output_nc, opt.ngf, opt.norm, opt.dims,
                            opt.n_downsampling, opt.coupling, not opt.use_naive,
                            opt.fully_reversible, opt.init_type, opt.init_gain, dropout,
                            fixed_point=not opt.float_couplings, keep_blocks=opt.keep_blocks,
                            upsample=opt.upsample, zero_init=opt.core_init == "zero",
                            residual=opt.residual)
    down = 2 if opt.n_downsampling is None else opt.n_downsampling
    make = lambda i, o: define_G(opt.netG, i, o, opt.ngf, opt.norm, dropout,  # noqa: E731
                                 opt.dims, opt.init_type, opt.init_gain, down,
                                 opt.uncancelled_bias, opt.upsample, opt.residual)
    if kind == "pair":
        return GeneratorPair(make(opt.input_nc, opt.output_nc), make(opt.output_nc, opt.input_nc))
    return OneWay(make(opt.input_nc, opt.output_nc))


def compilable_parts(nets: dict[str, nn.Module]) -> list[nn.Module]:
    """The non-reversible parts: discriminators, baseline generators, RevGAN encoders and
    decoders. The reversible core stays eager (its custom autograd function recomputes
    blocks in backward). ``Module.compile`` works in place, so checkpoints keep their keys."""
    parts = []
    for net in nets.values():
        reversible = [m for m in net.modules() if isinstance(m, ReversibleSequence)]
        if not reversible:
            parts.append(net)
            continue
        for name in ("encoder_A", "encoder_B", "decoder_A", "decoder_B"):
            if isinstance(getattr(net, name, None), nn.Module):
                parts.append(getattr(net, name))
    return parts


def uses_grouped_backward(opt: RunConfig, kind: str) -> bool:
    """``--grouped_backward``: auto means on for the reversible generators (``kind`` 'rev')
    and off for the baselines, whose upstream-style step stays the reference."""
    return {"on": True, "off": False}.get(opt.grouped_backward, kind == "rev")


def build_discriminator(opt: RunConfig, input_nc: int) -> nn.Module:
    return define_D(opt.netD, input_nc, opt.ndf, opt.n_layers_D, opt.norm, opt.dims,
                    opt.init_type, opt.init_gain)


def make_scheduler(optimizer: torch.optim.Optimizer, opt: RunConfig):
    """LR policies: linear (constant, then linear to zero), step, plateau, cosine."""
    if opt.lr_policy == "linear":
        def factor(epoch: int) -> float:
            return 1.0 - max(0, epoch + opt.epoch_count - opt.n_epochs) / float(
                opt.n_epochs_decay + 1)
        return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
    if opt.lr_policy == "step":
        return torch.optim.lr_scheduler.StepLR(optimizer, opt.lr_decay_iters, gamma=0.1)
    if opt.lr_policy == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="min", factor=0.2,
                                                          threshold=0.01, patience=5)
    return torch.optim.lr_scheduler.CosineAnnealingLR(
        optimizer, T_max=max(1, opt.n_epochs + opt.n_epochs_decay), eta_min=0)


def restore_schedule_position(scheduler, saved: dict) -> None:
    """Move a scheduler fresh from :func:`make_scheduler` (this run's options) to the
    saved epoch. Only the position comes from the checkpoint: a run resumed with more
    epochs or another step size follows its new schedule, and the same schedule gives the
    same LRs bit for bit. The schedules are replayed from the base LR, since StepLR and
    CosineAnnealingLR compute each LR from the previous one."""
    if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
        scheduler.load_state_dict(saved)  # no schedule to change: its state is its position
        return
    if scheduler.last_epoch != 0:
        raise ValueError("restore_schedule_position needs a scheduler that has not stepped")
    for group, base in zip(scheduler.optimizer.param_groups, scheduler.base_lrs):
        group["lr"] = base
    with warnings.catch_warnings():  # stepping without optimiser steps is the point here
        warnings.simplefilter("ignore", UserWarning)
        for _ in range(int(saved["last_epoch"])):
            scheduler.step()


class BaseModel:
    """Holds networks, optimisers, schedulers, scalers and pools of one objective.

    Subclasses set ``visual_names`` and implement ``forward``,
    ``optimize_parameters`` and ``test_visuals``.
    """

    visual_names: list[str] = []

    def __init__(self, opt: RunConfig, device: torch.device):
        self.opt = opt
        self.device = device
        self.is_train = opt.isTrain
        self.nets: dict[str, nn.Module] = {}
        self.optimizers: dict[str, torch.optim.Optimizer] = {}
        self.schedulers: dict = {}
        self.scalers: dict[str, torch.amp.GradScaler] = {}
        self.pools: dict[str, ImagePool] = {}
        self.losses: dict[str, float] = {}
        self.nonfinite_total = 0
        self.nonfinite_streak = 0
        self._step_skipped = False
        # backward each group of generator loss terms as soon as it is formed (step_in_groups)
        self.grouped_backward = False
        self.amp_dtype = {"none": None, "bf16": torch.bfloat16,
                          "fp16": torch.float16}[opt.amp]

    # -- set-up -------------------------------------------------------------------------
    def make_optimizer(self, name: str, nets: list[nn.Module]) -> None:
        params = [p for net in nets for p in net.parameters()]
        self.optimizers[name] = torch.optim.Adam(params, lr=self.opt.lr,
                                                 betas=(self.opt.beta1, 0.999))
        self.scalers[name] = torch.amp.GradScaler(
            self.device.type, enabled=self.amp_dtype == torch.float16)

    def setup(self) -> None:
        for net in self.nets.values():
            net.to(self.device)
        backend = self.opt.compile
        if backend:
            for part in compilable_parts(self.nets):
                part.compile(backend=backend)
        if self.is_train:
            self.schedulers = {k: make_scheduler(o, self.opt) for k, o in self.optimizers.items()}

    def plain(self, name: str) -> nn.Module:
        """The network without its DDP wrapper: for uses that must not sync gradients."""
        return unwrap(self.nets[name])

    @property
    def generator(self) -> nn.Module:
        return self.plain("G")

    # -- data ---------------------------------------------------------------------------
    def set_input(self, data: dict) -> None:
        """Model domain A is data folder A, or B when training runs B→A (as upstream)."""
        source, target = ends(self.opt.direction)
        self.real_A = data[source].to(self.device) if source in data else None
        self.real_B = data[target].to(self.device) if target in data else None
        paths = data.get(f"{source}_paths") or data.get("A_paths")
        self.image_paths = list(paths) if isinstance(paths, (list, tuple)) else [paths]

    # -- precision and steps ------------------------------------------------------------
    def autocast(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    @staticmethod
    def set_requires_grad(nets: list[nn.Module], flag: bool) -> None:
        for net in nets:
            for p in net.parameters():
                p.requires_grad_(flag)

    def apply_step(self, name: str, loss: Tensor) -> None:
        """Backward and step one optimiser, unless the loss is not finite (then skip it)."""
        optimizer, scaler = self.optimizers[name], self.scalers[name]
        optimizer.zero_grad(set_to_none=True)
        if not torch.isfinite(loss.detach()).all():
            self._step_skipped = True
            return
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()

    def step_in_groups(self, name: str, groups: Iterable[Callable[[], Tensor]]) -> None:
        """Zero, backpropagate and step optimiser ``name`` for the sum of the groups' losses.

        Each group is a callable that runs its forward and returns its loss. With
        ``grouped_backward`` a group is backpropagated as soon as it is formed, so its graph
        is freed before the next group's forward and the step's peak memory is that of the
        largest group, not of all of them (a sum's gradient is the sum of the gradients, so
        the result is the same). Otherwise the losses are summed and backpropagated once,
        as upstream. Forwards run in the same order either way, so random draws (dropout)
        and norm statistics match. DDP needs one backward per forward set, so wrapped
        networks always use the summed backward. A non-finite loss skips the step.
        """
        optimizer, scaler = self.optimizers[name], self.scalers[name]
        optimizer.zero_grad(set_to_none=True)
        grouped = self.grouped_backward and not any(
            isinstance(net, nn.parallel.DistributedDataParallel) for net in self.nets.values())
        total, finite = None, True
        for group in groups:
            with self.autocast():
                loss = group()
            # the remaining forwards still run: the D step and the visuals need their fakes
            finite = finite and bool(torch.isfinite(loss.detach()).all())
            if not finite:
                continue
            if grouped:
                scaler.scale(loss).backward()
            else:
                total = loss if total is None else total + loss
        if not finite:
            optimizer.zero_grad(set_to_none=True)
            self._step_skipped = True
            return
        if total is not None:
            scaler.scale(total).backward()
        scaler.step(optimizer)
        scaler.update()

    def optimize(self) -> None:
        """One training iteration; counts iterations whose losses were not finite."""
        self._step_skipped = False
        self.optimize_parameters()
        if self._step_skipped:
            self.nonfinite_total += 1
            self.nonfinite_streak += 1
        else:
            self.nonfinite_streak = 0

    def record(self, **losses: Tensor) -> None:
        for key, value in losses.items():
            self.losses[key] = float(value.detach()) if torch.is_tensor(value) else float(value)

    # -- inference ----------------------------------------------------------------------
    def translate(self, x: Tensor, direction: str) -> Tensor:
        """Generator output for any input size.

        Inputs larger than ``--window_size`` (volumes: larger than the training patch) go
        through blended sliding windows; others are padded to the network's stride and
        cropped back.
        """
        from revgan.models.sliding_window import sliding_window_translate

        G, dims = self.generator, self.opt.dims
        multiple = getattr(G, "size_divisor", 1)

        def run(t: Tensor) -> Tensor:
            with self.autocast():
                return G(t, direction).float()

        window = self.opt.window_size or (self.opt.patch_size if dims == 3 else None)
        if window is not None:
            window = tuple(window) * dims if len(window) == 1 else tuple(window)
            if any(s > w for s, w in zip(x.shape[2:], window)):
                return sliding_window_translate(run, x, window, self.opt.overlap,
                                                multiple=multiple, device=self.device,
                                                output_device=x.device)
        padded, crop = pad_to_multiple(x, multiple, dims)
        return run(padded)[crop]

    def eval(self) -> None:
        for net in self.nets.values():
            net.eval()

    def train(self) -> None:
        for net in self.nets.values():
            net.train()

    @torch.no_grad()
    def test(self) -> dict[str, Tensor]:
        return self.test_visuals()

    # -- schedules ----------------------------------------------------------------------
    def update_learning_rate(self, metric: float | None = None) -> None:
        for scheduler in self.schedulers.values():
            if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
                scheduler.step(metric if metric is not None else 0.0)
            else:
                scheduler.step()

    def learning_rates(self) -> dict[str, float]:
        return {k: o.param_groups[0]["lr"] for k, o in self.optimizers.items()}

    # -- training state -----------------------------------------------------------------
    def training_state(self) -> dict:
        return {
            "optimizers": {k: o.state_dict() for k, o in self.optimizers.items()},
            "schedulers": {k: s.state_dict() for k, s in self.schedulers.items()},
            "scalers": {k: s.state_dict() for k, s in self.scalers.items()},
            "pools": {k: p.state_dict() for k, p in self.pools.items()},
            "nonfinite": [self.nonfinite_total, self.nonfinite_streak],
        }

    def load_training_state(self, state: dict) -> None:
        try:
            for key, optimizer in self.optimizers.items():
                optimizer.load_state_dict(state["optimizers"][key])
            for key, scheduler in self.schedulers.items():
                restore_schedule_position(scheduler, state["schedulers"][key])
            for key, scaler in self.scalers.items():
                scaler.load_state_dict(state["scalers"][key])
            for key, pool in self.pools.items():
                pool.load_state_dict(state["pools"][key], self.device)
        except (KeyError, ValueError, RuntimeError) as exc:
            raise UserError(f"the training state does not fit this model ({exc})")
        self.nonfinite_total, self.nonfinite_streak = state.get("nonfinite", [0, 0])
