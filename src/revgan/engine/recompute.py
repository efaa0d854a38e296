"""Recomputed stages: a Sequential that keeps only its stage inputs for backward.

Once the reversible core keeps almost nothing, a training step's peak is held by the
full-resolution activations of the generator's encoders and decoders (measured:
``benchmarks/profile_step_memory.py``). :class:`RecomputedSequential` runs each stage under
``torch.utils.checkpoint`` (non-reentrant): only the stage's input is kept, and the stage is
re-run in backward. The RNG state is replayed (dropout draws the same mask) and
running-statistic updates of the re-run are undone, so gradients, outputs and buffers equal
those of the plain Sequential.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from revgan.engine.reversible import _tracking_norms, frozen_running_stats


class RecomputedSequential(nn.Sequential):
    """``nn.Sequential`` (same modules, same state-dict keys) that, with ``recompute`` on
    and a graph being built, keeps only the input of each stage and re-runs the stage in
    backward.

    ``stages``: the indices where a new stage starts (besides 0); default: the whole
    Sequential is one stage. Off, not training a graph, or traced for export it is a plain
    Sequential.
    """

    def __init__(self, *modules: nn.Module, stages: Sequence[int] = ()):
        super().__init__(*modules)
        bounds = sorted({0, *(i for i in stages if 0 < i < len(modules)), len(modules)})
        self.stage_bounds = list(zip(bounds, bounds[1:]))
        self.recompute = False

    def _stage(self, start: int, end: int):
        modules = [self[i] for i in range(start, end)]
        norms = [n for m in modules for n in _tracking_norms(m)]
        calls = [0]

        def run(x: Tensor) -> Tensor:
            calls[0] += 1
            # the re-run in backward must not count the batch in the running statistics again
            again = calls[0] > 1 and norms
            with frozen_running_stats(norms) if again else contextlib.nullcontext():
                for module in modules:
                    x = module(x)
            return x

        return run

    def forward(self, x: Tensor) -> Tensor:
        needs_graph = torch.is_grad_enabled() and (
            x.requires_grad or any(p.requires_grad for p in self.parameters()))
        if not (self.recompute and needs_graph) or torch.jit.is_tracing():
            return super().forward(x)
        for start, end in self.stage_bounds:
            x = checkpoint(self._stage(start, end), x, use_reentrant=False,
                           preserve_rng_state=True)
        return x


def set_recompute(module: nn.Module, on: bool) -> int:
    """Switch every :class:`RecomputedSequential` in ``module``; returns how many there are."""
    found = [m for m in module.modules() if isinstance(m, RecomputedSequential)]
    for m in found:
        m.recompute = on
    return len(found)
