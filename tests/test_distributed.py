"""DistributedDataParallel on the CPU (gloo, 2 processes) equals one process with the same
global batch, and both ranks hold identical weights."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from helpers import tiny_flags

from revgan.cli.options import parse_options
from revgan.demo.scenes import make_demo_dataset
from revgan.train import distributed
from revgan.train.loop import Trainer


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _train(argv: list[str], out: Path, rank: int) -> None:
    trainer = Trainer(parse_options(argv, is_train=True))
    trainer.run()
    torch.save({name: net.state_dict() for name, net in
                ((k, trainer.model.plain(k)) for k in trainer.model.nets)}, out / f"{rank}.pt")
    distributed.teardown(trainer.dist)


def _worker(rank: int, world: int, port: int, argv: list[str], out: Path) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    _train(argv, out, rank)


@pytest.mark.parametrize("model", ["unpaired_revgan", "paired_revgan"])
def test_two_processes_equal_one_with_the_same_global_batch(model, tmp_path):
    data = make_demo_dataset(tmp_path / "data", size=32, n_train=8, n_test=2, n_val=2)
    root = data["unpaired"] if model.startswith("unpaired") else data["paired"]
    argv = ["--dataroot", str(root), "--checkpoints_dir", str(tmp_path / "ck"),
            *tiny_flags(model), "--n_epochs", "1", "--n_epochs_decay", "0", "--pool_size", "0",
            "--norm", "instance", "--lr", "0.0002"]
    ddp_dir, single_dir = tmp_path / "ddp", tmp_path / "single"
    ddp_dir.mkdir()
    single_dir.mkdir()
    mp.spawn(_worker, args=(2, _free_port(), argv + ["--name", "ddp", "--batch_size", "1"],
                            ddp_dir), nprocs=2, join=True)
    _train(argv + ["--name", "single", "--batch_size", "2"], single_dir, 0)
    rank0, rank1 = torch.load(ddp_dir / "0.pt"), torch.load(ddp_dir / "1.pt")
    single = torch.load(single_dir / "0.pt")
    for net in single:
        for key in single[net]:
            assert torch.equal(rank0[net][key], rank1[net][key]), (net, key)
    worst = {(net, key): (rank0[net][key] - value).abs().max().item()
             for net, state in single.items() for key, value in state.items()
             if value.is_floating_point()}
    top = sorted(worst.items(), key=lambda kv: -kv[1])[:5]
    assert max(worst.values()) <= 1e-5, top
