"""Resuming a run: the schedule of the resumed options, and bit-exact continuation."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from helpers import run_cli, tiny_flags, weights

from revgan.config import RunConfig
from revgan.demo.scenes import make_demo_dataset
from revgan.demo.volumes import make_demo_volumes
from revgan.models.base import BaseModel
from revgan.train.loop import Trainer


def _scheduled_model(policy: str, n_epochs: int, n_epochs_decay: int,
                     lr_decay_iters: int) -> BaseModel:
    """A model with one optimiser and the schedule of these options (as ``setup`` makes it)."""
    opt = RunConfig(isTrain=True, lr=0.01, lr_policy=policy, n_epochs=n_epochs,
                    n_epochs_decay=n_epochs_decay, epoch_count=1, lr_decay_iters=lr_decay_iters)
    model = BaseModel(opt, torch.device("cpu"))
    model.nets["G"] = torch.nn.Linear(2, 2)
    model.make_optimizer("G", [model.nets["G"]])
    model.setup()
    return model


def _epoch(model: BaseModel) -> None:
    """One epoch as the trainer runs it: an optimiser step, then the schedule's step."""
    model.optimizers["G"].zero_grad()
    model.nets["G"](torch.ones(1, 2)).sum().backward()
    model.optimizers["G"].step()
    model.update_learning_rate()


@pytest.mark.parametrize("policy", ["linear", "cosine", "step"])
def test_resume_with_a_longer_schedule_follows_the_new_schedule(policy):
    """Two epochs of a 2+2 schedule (step size 2), resumed as a 4+6 schedule (step size 3):
    from the resume on, every epoch's LR is that of a fresh run of the 4+6 schedule."""
    short = _scheduled_model(policy, 2, 2, lr_decay_iters=2)
    for _ in range(2):
        _epoch(short)
    state = short.training_state()

    resumed = _scheduled_model(policy, 4, 6, lr_decay_iters=3)
    resumed.load_training_state(state)
    fresh = _scheduled_model(policy, 4, 6, lr_decay_iters=3)
    for _ in range(2):
        _epoch(fresh)
    seen = []
    for epoch in range(3, 11):
        assert resumed.learning_rates() == fresh.learning_rates(), (policy, epoch)
        seen.append(fresh.learning_rates()["G"])
        _epoch(resumed)
        _epoch(fresh)
    assert len(set(seen)) > 2  # the schedule really changes the LR over these epochs


@pytest.mark.parametrize("policy", ["linear", "cosine", "step", "plateau"])
def test_resume_with_the_same_schedule_keeps_the_lr_sequence(policy):
    straight = _scheduled_model(policy, 2, 3, lr_decay_iters=2)
    first = _scheduled_model(policy, 2, 3, lr_decay_iters=2)
    for _ in range(3):
        _epoch(straight)
        _epoch(first)
    resumed = _scheduled_model(policy, 2, 3, lr_decay_iters=2)
    resumed.load_training_state(first.training_state())
    for _ in range(3):
        assert resumed.learning_rates() == straight.learning_rates()
        _epoch(resumed)
        _epoch(straight)


# -- exact resume: an interrupted run continued with --continue_train equals a straight run --

MODELS_2D = ["unpaired_revgan", "paired_revgan", "cycle_gan", "pix2pix"]
QUIET = ["--no_html", "--no_tensorboard", "--deterministic", "--save_epoch_freq", "1"]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict:
    return make_demo_dataset(tmp_path_factory.mktemp("demo"), size=32, n_train=4, n_test=1,
                             n_val=1)


class Crash(Exception):
    """A simulated kill right after a checkpoint was committed."""


def _count_and_crash(monkeypatch, crash_at_save: int | None) -> dict:
    """Count training iterations; with ``crash_at_save``, raise :class:`Crash` right after the
    n-th "latest" checkpoint (everything before it is on disk, as after a kill)."""
    counts = {"iterations": 0, "saves": 0}
    optimize, save = BaseModel.optimize, Trainer.save

    def counted_optimize(self):
        optimize(self)
        counts["iterations"] += 1

    def crashing_save(self, which, with_state=True):
        save(self, which, with_state)
        if which == "latest":
            counts["saves"] += 1
            if counts["saves"] == crash_at_save:
                raise Crash()

    monkeypatch.setattr(BaseModel, "optimize", counted_optimize)
    monkeypatch.setattr(Trainer, "save", crashing_save)
    return counts


def _assert_exact_resume(flags: list, ck: Path, monkeypatch, total: int, crash_after: int,
                         resume_flags: tuple = ()) -> None:
    """Straight run vs. a run killed after its first checkpoint (iteration ``crash_after``)
    and resumed: the resumed process does only the remaining iterations (a restart would
    redo them all) and every network ends bit for bit equal."""
    straight = _count_and_crash(monkeypatch, None)
    run_cli(*flags, "--name", "straight")
    assert straight["iterations"] == total
    interrupted = _count_and_crash(monkeypatch, 1)
    with pytest.raises(Crash):
        run_cli(*flags, "--name", "resumed")
    assert interrupted["iterations"] == crash_after
    resumed = _count_and_crash(monkeypatch, None)
    run_cli(*flags, *resume_flags, "--name", "resumed", "--continue_train")
    assert resumed["iterations"] == total - crash_after
    monkeypatch.undo()
    files = sorted(p.name for p in (ck / "straight").glob("latest_net_*.safetensors"))
    assert files and files == sorted(p.name for p in
                                     (ck / "resumed").glob("latest_net_*.safetensors"))
    for name in files:
        a, b = weights(ck / "straight" / name), weights(ck / "resumed" / name)
        assert a.keys() == b.keys()
        for key in a:
            assert torch.equal(a[key], b[key]), (name, key)


@pytest.mark.parametrize("model", MODELS_2D)
def test_exact_resume_2d(model, data, tmp_path, monkeypatch):
    """8 iterations (4 images, 1 + 1 epochs), killed after the checkpoint at iteration 3."""
    root = data["unpaired"] if model.startswith(("unpaired", "cycle")) else data["paired"]
    flags = ["train", "--dataroot", root, "--checkpoints_dir", tmp_path, *tiny_flags(model),
             *QUIET, "--n_epochs", "1", "--n_epochs_decay", "1", "--pool_size", "2",
             "--save_latest_freq", "3"]
    _assert_exact_resume(flags, tmp_path, monkeypatch, total=8, crash_after=3)


def test_exact_resume_3d(tmp_path, monkeypatch):
    """paired_revgan3d: 2 volumes x 2 patches, 1 + 1 epochs, killed after iteration 3."""
    volumes = make_demo_volumes(tmp_path / "vol", n_train=2, n_test=1, shape=(16, 16, 16))
    flags = ["train", "--dataroot", volumes["root"], "--checkpoints_dir", tmp_path / "ck",
             "--model", "paired_revgan3d", "--netG", "edsrF_2", "--ngf", "4", "--ndf", "4",
             "--patch_size", "16", "--samples_per_volume", "2", "--num_threads", "0",
             "--no_progress", "--gpu_ids", "-1", "--print_freq", "1", "--display_freq", "4",
             *QUIET, "--n_epochs", "1", "--n_epochs_decay", "1", "--save_latest_freq", "3"]
    _assert_exact_resume(flags, tmp_path / "ck", monkeypatch, total=8, crash_after=3)


def test_exact_resume_with_two_loader_workers(data, tmp_path, monkeypatch):
    """The straight run loads in the main process; the interrupted one with two workers, and
    its resume with two workers again: every step still sees the same data."""
    flags = ["train", "--dataroot", data["unpaired"], "--checkpoints_dir", tmp_path,
             *tiny_flags("unpaired_revgan"), *QUIET, "--n_epochs", "1", "--n_epochs_decay", "1",
             "--pool_size", "2", "--save_latest_freq", "3"]
    straight = _count_and_crash(monkeypatch, None)
    run_cli(*flags, "--name", "straight")
    assert straight["iterations"] == 8
    workers = ["--num_threads", "2"]  # the last value of a repeated flag wins
    _count_and_crash(monkeypatch, 1)
    with pytest.raises(Crash):
        run_cli(*flags, *workers, "--name", "resumed")
    resumed = _count_and_crash(monkeypatch, None)
    run_cli(*flags, *workers, "--name", "resumed", "--continue_train")
    assert resumed["iterations"] == 5
    monkeypatch.undo()
    for net in ("G", "D_A", "D_B"):
        a = weights(tmp_path / "straight" / f"latest_net_{net}.safetensors")
        b = weights(tmp_path / "resumed" / f"latest_net_{net}.safetensors")
        assert all(torch.equal(a[k], b[k]) for k in a), net
