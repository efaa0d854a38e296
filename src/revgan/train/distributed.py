"""Multi-process training with PyTorch's own engine (torchrun + DistributedDataParallel).

Started by ``torchrun --nproc_per_node N train.py ...``: every process trains on its share
of each epoch (:class:`revgan.train.loop.EpochSampler`), gradients are averaged by DDP, and
only rank 0 writes logs, pages and checkpoints.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from revgan.config import RunConfig
from revgan.errors import UserError


@dataclass
class DistState:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device | None = None

    @property
    def enabled(self) -> bool:
        return self.world > 1

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()


def setup(opt: RunConfig) -> DistState:
    """Join the process group torchrun describes in the environment (if any)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistState()
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() and str(opt.gpu_ids).strip() != "-1"
    if use_cuda:
        torch.cuda.set_device(local_rank)
        device = torch.device(f"cuda:{local_rank}")
    else:
        device = torch.device("cpu")
    if not dist.is_initialized():
        dist.init_process_group("nccl" if use_cuda else "gloo")
    return DistState(rank, world, local_rank, device)


def wrap_model(model, state: DistState, opt: RunConfig) -> None:
    """Wrap every network of ``model`` in DDP (``--norm sync_batch`` builds SyncBatchNorm,
    which falls back to plain batch norm in a single process).

    Each network is used through one DDP wrapper in the step that trains it; steps that only
    need a network's output (a discriminator inside the generator loss) call the plain module,
    so no parameter waits for a gradient it will not get and ``find_unused_parameters`` is
    not needed.
    """
    if not state.enabled:
        return
    if state.device.type != "cuda" and any(isinstance(m, nn.SyncBatchNorm)
                                           for net in model.nets.values()
                                           for m in net.modules()):
        raise UserError("--norm sync_batch needs CUDA devices under torchrun (PyTorch's "
                        "SyncBatchNorm has no CPU implementation); use --norm batch or instance")
    for key, net in model.nets.items():
        if not any(p.requires_grad for p in net.parameters()):
            continue
        device_ids = [state.device.index] if state.device.type == "cuda" else None
        model.nets[key] = nn.parallel.DistributedDataParallel(net, device_ids=device_ids)


def teardown(state: DistState) -> None:
    if state.enabled and dist.is_initialized():
        dist.destroy_process_group()
