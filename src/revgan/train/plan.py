"""One training step, measured; and what fits in a memory budget (``revgan plan``).

A step's memory grows linearly in the number of voxels (pixels) of its input: every
activation is a map of the input's size, so ``peak(v) = fixed + per_voxel * v`` for
``v = batch * side**dims``. :func:`plan_budget` measures the step peak at two small sizes,
fits that line, adds the memory that does not depend on the input (weights, their
gradients and Adam's two moments: ``4 * parameters * bytes``), and solves for the largest
side (batch 1) and the largest batch (at a given side) that fit. The benchmark
``benchmarks/bench_step.py`` uses the same step and measurements.
"""

from __future__ import annotations

import math
import re
import statistics
import time
from dataclasses import dataclass

import torch

from revgan.config import REQUIRED, option, select_device
from revgan.engine.memory import has_heap_counter, peak_memory
from revgan.errors import UserError
from revgan.models import build_config, create_model
from revgan.models.base import BaseModel

_UNITS = {"": 1, "b": 1, "k": 1e3, "kb": 1e3, "m": 1e6, "mb": 1e6, "g": 1e9, "gb": 1e9,
          "t": 1e12, "tb": 1e12, "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}


def parse_bytes(text: str) -> int:
    """``16GiB``, ``16G`` (= GB), ``800MiB``, ``1.5e9`` -> bytes."""
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:e[0-9]+)?)\s*([a-zA-Z]*)\s*", str(text))
    unit = match.group(2).lower() if match else None
    if match is None or unit not in _UNITS:
        raise UserError(f"cannot read the memory size '{text}'; write e.g. 16GiB, 800MB")
    value = float(match.group(1)) * _UNITS[unit]
    if value <= 0:
        raise UserError(f"the memory size must be positive, got '{text}'")
    return int(value)


# --------------------------------------------------------------------------- one step


def step_model(model: str, values: dict, device: torch.device, seed: int = 0) -> BaseModel:
    """A training model of ``model`` with option ``values`` (e.g. ``{"ngf": 32}``) on ``device``."""
    cfg = build_config(model, is_train=True, values={"gpu_ids": "-1", **values})
    torch.manual_seed(seed)
    return create_model(cfg, device)


def random_batch(model: BaseModel, side: int, batch: int = 1, seed: int = 1) -> dict:
    """A batch of random images (2D) or volumes (3D) of ``side`` in both domains."""
    opt = model.opt
    size = (side,) * opt.dims
    generator = torch.Generator().manual_seed(seed)
    a = torch.rand(batch, opt.input_nc, *size, generator=generator) * 2 - 1
    b = torch.rand(batch, opt.output_nc, *size, generator=generator) * 2 - 1
    return {"A": a, "B": b, "A_paths": [f"item{i}" for i in range(batch)]}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def parameter_count(model: BaseModel) -> dict[str, int]:
    return {name: sum(p.numel() for p in net.parameters()) for name, net in model.nets.items()}


def static_bytes(model: BaseModel) -> int:
    """Weights, gradients and Adam's two moments: memory the input size does not change."""
    return sum(4 * p.numel() * p.element_size() for net in model.nets.values()
               for p in net.parameters())


def measure_step_memory(model: BaseModel, repeats: int = 2) -> int:
    """Peak bytes of one full iteration above the level before it (minimum over repeats).

    The model must have stepped once already, so that gradients and optimiser state exist
    before the measured step (they are in :func:`static_bytes`, not here).
    """
    device = model.device
    if device.type == "cpu" and not has_heap_counter():
        raise UserError("measuring CPU memory needs glibc (Linux); use a CUDA device")
    peaks = []
    for _ in range(repeats):
        _sync(device)
        peak, _ = peak_memory(model.optimize, device)
        peaks.append(peak)
    return min(peaks)


def time_step(model: BaseModel) -> float:
    """Seconds of one full iteration (G and D steps, optimiser steps included)."""
    _sync(model.device)
    start = time.perf_counter()
    model.optimize()
    _sync(model.device)
    return time.perf_counter() - start


class _GlobalOnly:
    """Stands in for FlopCounterMode's module tracker, whose hooks fail on tensors made
    inside a custom autograd function (the reversible core); only the total is needed."""

    parents = frozenset({"Global"})

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        return None


def count_flops(model: BaseModel) -> int:
    """Floating-point operations of one full iteration (``FlopCounterMode``)."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    counter.mod_tracker = _GlobalOnly()
    with counter:
        model.optimize()
    return int(counter.get_total_flops())


# --------------------------------------------------------------------------- what fits


@dataclass
class PlanOptions:
    """The options of ``revgan plan``."""

    model: str = option(REQUIRED, "model name, e.g. unpaired_revgan3d")
    budget: str = option(REQUIRED, "memory for training, e.g. 16GiB, 800MB (the whole "
                                   "device's memory less what else runs on it)")
    ngf: int | None = option(None, "generator width (default: the model's)")
    ndf: int | None = option(None, "discriminator width (default: the model's)")
    netG: str | None = option(None, "generator (default: the model's)")
    fully_reversible: bool = option(False, "the fully reversible generator")
    use_naive: bool = option(False, "plain autograd in the reversible core")
    keep_blocks: int = option(0, "reversible core blocks that keep their activations")
    recompute_stages: str | None = option(None, "as train's --recompute_stages (default: the "
                                          "model's)", choices=("on", "off"))
    grouped_backward: str = option("auto", "as train's --grouped_backward",
                                   choices=("auto", "on", "off"))
    amp: str = option("none", "mixed precision, as train's --amp",
                      choices=("none", "bf16", "fp16"))
    side: int | None = option(None, "also give the largest batch at this crop/patch side")
    probe: tuple[int, ...] | None = option(None, "the two sides measured (default 2D: 64,96; "
                                                 "3D: 24,32)", kind="ints")
    gpu_ids: str = option("auto", "device to measure on: 'auto', '-1' (CPU) or e.g. '0'")


@dataclass
class PlanResult:
    model: str
    dims: int
    budget: int
    static: int  # weights + gradients + Adam moments
    fixed: int  # step peak at zero voxels (fit)
    per_voxel: float  # step peak bytes per input voxel (fit)
    probes: list  # (side, measured step peak)
    largest_side: int  # batch 1
    multiple: int  # sides are rounded down to this
    side: int | None = None
    largest_batch: int | None = None

    def predicted(self, side: int, batch: int = 1) -> float:
        return self.static + self.fixed + self.per_voxel * batch * side**self.dims

    @property
    def largest_voxels(self) -> int:
        return self.largest_side**self.dims


def fit_line(points: list[tuple[float, float]]) -> tuple[float, float]:
    """Least-squares ``y = a + b x`` (exact through two points)."""
    xs, ys = zip(*points)
    mean_x, mean_y = statistics.fmean(xs), statistics.fmean(ys)
    slope = sum((x - mean_x) * (y - mean_y) for x, y in points) / sum(
        (x - mean_x) ** 2 for x in xs)
    return mean_y - slope * mean_x, slope


def _model_values(options: PlanOptions) -> dict:
    values = {"fully_reversible": options.fully_reversible, "use_naive": options.use_naive,
              "keep_blocks": options.keep_blocks, "grouped_backward": options.grouped_backward,
              "amp": options.amp}
    chosen = {"ngf": options.ngf, "ndf": options.ndf, "netG": options.netG,
              "recompute_stages": options.recompute_stages}
    values.update({key: value for key, value in chosen.items() if value is not None})
    return values


def plan_budget(options: PlanOptions) -> PlanResult:
    """Measure the step at two sides, fit the line in voxels, solve for the budget."""
    budget = parse_bytes(options.budget)
    device = select_device(options.gpu_ids)
    model = step_model(options.model, _model_values(options), device)
    dims = model.opt.dims
    probe = options.probe or ((24, 32) if dims == 3 else (64, 96))
    if len(probe) != 2 or probe[0] == probe[1] or min(probe) < 1:
        raise UserError(f"--probe needs two different sides, got {probe}")
    multiple = max(getattr(model.generator, "size_divisor", 1), 1)
    points = []
    for side in probe:
        if side % multiple:
            raise UserError(f"--probe side {side} is not a multiple of {multiple}, the "
                            "generator's stride")
        model.set_input(random_batch(model, side))
        model.optimize()  # warm-up: gradients and optimiser state exist from here on
        points.append((side, measure_step_memory(model)))
    fixed, per_voxel = fit_line([(side**dims, peak) for side, peak in points])
    static = static_bytes(model)
    available = budget - static - max(fixed, 0.0)
    if per_voxel <= 0:
        raise UserError("the measured step memory did not grow with the input size; "
                        "measure at larger --probe sides")
    if available <= 0:
        raise UserError(f"{options.model} does not fit in {options.budget}: the weights and "
                        f"optimiser state alone take {static / 2**30:.2f} GiB")
    largest = int(math.floor((available / per_voxel) ** (1.0 / dims)))
    largest -= largest % multiple
    if largest < 1:
        raise UserError(f"{options.model} does not fit in {options.budget}, not even at a "
                        f"side of {multiple}")
    result = PlanResult(options.model, dims, budget, static, int(fixed), per_voxel, points,
                        largest, multiple)
    if options.side is not None:
        result.side = options.side
        result.largest_batch = int(available // (per_voxel * options.side**dims))
    return result


def format_plan(result: PlanResult) -> str:
    gib = 2.0**30
    unit = "patch" if result.dims == 3 else "crop"
    shape = "×".join([str(result.largest_side)] * result.dims)
    lines = [f"{result.model}: budget {result.budget / gib:.2f} GiB",
             f"  weights + gradients + Adam state: {result.static / gib:.3f} GiB",
             "  measured step peak: " + ", ".join(
                 f"{side}^{result.dims}: {peak / 2**20:.1f} MiB" for side, peak in result.probes),
             f"  step memory ≈ {result.fixed / 2**20:.1f} MiB + "
             f"{result.per_voxel:.1f} bytes per voxel (batch × side^{result.dims})",
             f"  largest {unit} at batch 1: {shape} "
             f"({result.largest_voxels:,} voxels; multiple of {result.multiple}; predicted "
             f"{result.predicted(result.largest_side) / gib:.2f} GiB)"]
    if result.side is not None:
        lines.append(f"  largest batch at {result.side}^{result.dims}: {result.largest_batch}")
    lines.append("  (measured on this device; the line is extrapolated, so leave some margin)")
    return "\n".join(lines)


def run_plan(options: PlanOptions) -> PlanResult:
    result = plan_budget(options)
    print(format_plan(result))
    return result
