"""DistributedDataParallel on the CPU (gloo, 2 processes): the gradients of a step equal those
of one process with the same global batch, and both ranks hold identical weights after it.

Gradients are compared directly, tensor by tensor, relative to each tensor's norm: weights
after Adam would hide a wrong constant factor (Adam's first step is lr times the gradient's
sign), and absolute tolerances on weights depend on the CPU's summation order.
"""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from helpers import assert_grads_equal, tiny_flags

from revgan.cli.options import parse_options
from revgan.demo.scenes import make_demo_dataset
from revgan.train import distributed
from revgan.train.loop import Trainer

WORKERS_TIMEOUT_S = 300  # about 20 s each on 2 shared cores; a hung collective must not hang CI

# DDP averages per-rank float32 gradients after backward; one process sums the same terms
# inside its conv/norm kernels in another order. Each gradient entry is a sum over the batch
# and the pixels (~2 x 32 x 32 terms) carried back through ~20 layers, so float32 round-off
# (eps = 1.2e-7) reaches a few 1e-6 of a tensor's norm where terms cancel: measured at most
# 6.6e-6 (D_B.model.11.bias, paired_revgan) on AMD EPYC, the same on every run. 1e-4 is 15x
# that, while any real fault is orders of magnitude above it (gradients summed instead of
# averaged: 100% off; one rank's image missing: ~50%). The floor (1e-6 of all gradients
# together, see helpers.assert_grads_equal) covers tensors whose true gradient is zero.
GRAD_RTOL = 1e-4


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _train(argv: list[str], out: Path, rank: int, frozen: bool = False) -> None:
    """Train, recording every optimiser step's gradients (by ``net.parameter`` name).

    ``frozen``: learning rate 0 (weights stay at their initial values), so every step's
    gradient is taken at the same weights as the first.
    """
    trainer = Trainer(parse_options(argv, is_train=True))
    model = trainer.model
    names = {id(p): f"{key}.{name}" for key in model.nets
             for name, p in model.plain(key).named_parameters()}
    steps: dict[str, list[dict[str, torch.Tensor]]] = {key: [] for key in model.optimizers}
    for key, optimizer in model.optimizers.items():
        def record(optimizer, args, kwargs, key=key):
            steps[key].append({names[id(p)]: p.grad.detach().clone()
                               for group in optimizer.param_groups for p in group["params"]
                               if p.grad is not None})

        optimizer.register_step_pre_hook(record)
        if frozen:
            for group in optimizer.param_groups:
                group["lr"] = 0.0
    trainer.run()
    weights = {key: {name: p.detach().clone() for name, p in model.plain(key).named_parameters()}
               for key in model.nets}
    buffers = {key: {name: b.clone() for name, b in model.plain(key).named_buffers()}
               for key in model.nets}
    torch.save({"steps": steps, "weights": weights, "buffers": buffers}, out / f"{rank}.pt")
    distributed.teardown(trainer.dist)


def _worker(rank: int, world: int, port: int, argv: list[str], out: Path) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    _train(argv, out, rank)


def _run_ddp(argv: list[str], out: Path, world: int = 2) -> list[dict]:
    """Train in ``world`` processes; a worker's error is raised here, a hang fails the test."""
    out.mkdir()
    context = mp.start_processes(_worker, args=(world, _free_port(), argv, out), nprocs=world,
                                 join=False, start_method="spawn")
    deadline = time.monotonic() + WORKERS_TIMEOUT_S
    while not context.join(timeout=5):  # raises if a worker failed
        if time.monotonic() > deadline:
            for process in context.processes:
                process.kill()
            pytest.fail(f"DDP workers did not finish within {WORKERS_TIMEOUT_S} s")
    return [torch.load(out / f"{rank}.pt") for rank in range(world)]


def _run_single(argv: list[str], out: Path, frozen: bool = False) -> dict:
    out.mkdir()
    _train(argv, out, 0, frozen)
    return torch.load(out / "0.pt")


def _compare(actual: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> None:
    assert actual.keys() == expected.keys() and len(expected) > 10
    keys = sorted(expected)
    assert_grads_equal([actual[k] for k in keys], [expected[k] for k in keys], rtol=GRAD_RTOL)


def _argv(tmp_path: Path, model: str, norm: str) -> list[str]:
    data = make_demo_dataset(tmp_path / "data", size=32, n_train=2, n_test=1, n_val=1)
    root = data["unpaired"] if model.startswith("unpaired") else data["paired"]
    # one epoch of two images: one step of the global batch of 2
    return ["--dataroot", str(root), "--checkpoints_dir", str(tmp_path / "ck"),
            *tiny_flags(model), "--n_epochs", "1", "--n_epochs_decay", "0", "--pool_size", "0",
            "--norm", norm, "--lr", "0.0002"]


@pytest.mark.parametrize("model", ["unpaired_revgan", "paired_revgan"])
def test_two_processes_equal_one_with_the_same_global_batch(model, tmp_path):
    argv = _argv(tmp_path, model, "instance")
    ranks = _run_ddp(argv + ["--name", "ddp", "--batch_size", "1"], tmp_path / "ddp")
    single = _run_single(argv + ["--name", "single", "--batch_size", "2"], tmp_path / "single")
    assert single["steps"].keys() == ranks[0]["steps"].keys() and len(single["steps"]) >= 2
    for key, expected in single["steps"].items():  # "G" and "D"
        assert len(expected) == 1 and len(ranks[0]["steps"][key]) == 1
        # DDP leaves the same averaged gradients on every rank ...
        first = ranks[0]["steps"][key][0]
        assert all(torch.equal(first[k], ranks[1]["steps"][key][0][k]) for k in first)
        # ... equal to one process's gradients for both images at once
        _compare(first, expected[0])
    for net, state in ranks[0]["weights"].items():  # after the step: identical ranks
        for name, value in state.items():
            assert torch.equal(value, ranks[1]["weights"][net][name]), (net, name)


def test_batch_norm_ranks_normalise_their_own_batch(tmp_path):
    """Without SyncBatchNorm (CPU) each rank normalises with its own batch's statistics, as
    PyTorch's DDP does: the averaged gradient is then the mean of the two one-image gradients,
    which one process computes at the same weights with batch size 1 and learning rate 0."""
    argv = _argv(tmp_path, "unpaired_revgan", "batch")
    ranks = _run_ddp(argv + ["--name", "ddp", "--batch_size", "1"], tmp_path / "ddp")
    single = _run_single(argv + ["--name", "single", "--batch_size", "1"], tmp_path / "single",
                         frozen=True)
    assert any("running_mean" in k for k in ranks[0]["buffers"]["G"])  # batch norm is in use
    for key, per_image in single["steps"].items():
        assert len(per_image) == 2 and len(ranks[0]["steps"][key]) == 1
        expected = {k: (per_image[0][k] + per_image[1][k]) / 2 for k in per_image[0]}
        first = ranks[0]["steps"][key][0]
        assert all(torch.equal(first[k], ranks[1]["steps"][key][0][k]) for k in first)
        _compare(first, expected)
        # and not the gradient of either image alone
        with pytest.raises(AssertionError):
            _compare(first, per_image[0])
    # Identical weights on both ranks. (Running statistics are not: DDP broadcasts rank 0's
    # before each wrapped forward, but every rank's own last forwards update its copy; only
    # rank 0 saves, so a checkpoint holds rank 0's.)
    for net, state in ranks[0]["weights"].items():
        for name, value in state.items():
            assert torch.equal(value, ranks[1]["weights"][net][name]), (net, name)
