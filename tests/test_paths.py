"""End to end on paths no other test runs: mixed precision through resume, GAN losses, D
rollout, plain autograd, sync batch norm."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import run_cli, tiny_flags
from PIL import Image
from torch.optim.optimizer import register_optimizer_step_post_hook

from revgan.demo.scenes import make_demo_dataset
from revgan.engine.reversible import ReversibleSequence
from revgan.errors import UserError
from revgan.models import paired as paired_module
from revgan.models import unpaired as unpaired_module
from revgan.models.base import BaseModel
from revgan.models.registry import build_config, create_model
from revgan.reporting.tracking import parse_loss_log
from revgan.runs.checkpoints import load_training_state
from revgan.train.distributed import DistState, wrap_model

QUIET = ["--no_html", "--no_tensorboard"]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict:
    return make_demo_dataset(tmp_path_factory.mktemp("demo"), size=32, n_train=4, n_test=2,
                             n_val=1)


def _root(data: dict, model: str) -> Path:
    return data["unpaired"] if model.startswith(("unpaired", "cycle")) else data["paired"]


def _finite_losses(run: Path) -> list[dict]:
    entries = parse_loss_log(run / "loss_log.txt")
    assert entries, "no losses were logged"
    assert all(math.isfinite(v) for _, _, losses in entries for v in losses.values())
    return [losses for _, _, losses in entries]


def _test_outputs(data: dict, model: str, ck: Path, res: Path, name: str = "run") -> None:
    run_cli("test", "--dataroot", _root(data, model), "--name", name, "--model", model,
            "--checkpoints_dir", ck, "--results_dir", res, "--no_progress", "--gpu_ids", "-1",
            "--load_size", "32", "--crop_size", "32")
    fakes = sorted((res / name / "test_latest" / "images" / "fake_B").glob("*.png"))
    assert len(fakes) == 2
    pixels = np.asarray(Image.open(fakes[0]), dtype=np.float64)
    assert pixels.std() > 0  # an image, not a constant


class _Recorder:
    """Every model the run builds, and the scaler states right after a resume loads them."""

    def __init__(self, monkeypatch):
        self.models: list[BaseModel] = []
        self.loaded_scalers: list[dict] = []
        setup, load = BaseModel.setup, BaseModel.load_training_state
        recorder = self

        def recording_setup(model):
            setup(model)
            recorder.models.append(model)

        def recording_load(model, state):
            load(model, state)
            recorder.loaded_scalers.append({k: s.state_dict() for k, s in model.scalers.items()})

        monkeypatch.setattr(BaseModel, "setup", recording_setup)
        monkeypatch.setattr(BaseModel, "load_training_state", recording_load)


@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_mixed_precision_train_resume_test(amp, data, tmp_path, monkeypatch):
    """--amp through train -> checkpoint -> --continue_train -> test; under fp16 each
    optimiser's GradScaler state is saved and restored as it was."""
    ck, res, model = tmp_path / "ck", tmp_path / "res", "unpaired_revgan"
    flags = ["train", "--dataroot", _root(data, model), "--name", "run", "--checkpoints_dir",
             ck, *tiny_flags(model), *QUIET, "--amp", amp]
    recorder = _Recorder(monkeypatch)
    run_cli(*flags, "--n_epochs", "1", "--n_epochs_decay", "0")
    assert recorder.models[-1].amp_dtype == {"bf16": torch.bfloat16, "fp16": torch.float16}[amp]
    saved = load_training_state(ck / "run" / "latest_train_state.pt")["model"]["scalers"]
    assert set(saved) == {"G", "D"}
    if amp == "fp16":
        # enabled scalers that have adapted (the first fp16 steps overflow at the initial
        # 2^16), so a resume that started a fresh scaler would be told apart below
        for state in saved.values():
            assert 0 < state["scale"] < 2.0**16
    else:
        assert all(state == {} for state in saved.values())  # bf16 needs no loss scaling
    run_cli(*flags, "--continue_train", "--n_epochs", "1", "--n_epochs_decay", "1")
    assert recorder.loaded_scalers == [saved]
    assert {e[0] for e in parse_loss_log(ck / "run" / "loss_log.txt")} == {1, 2}
    _finite_losses(ck / "run")
    _test_outputs(data, model, ck, res)


def _count_optimizer_steps():
    """Count every optimiser step taken (a global hook; remove the returned handle)."""
    counts = {"steps": 0}

    def hook(optimizer, args, kwargs):
        counts["steps"] += 1

    return counts, register_optimizer_step_post_hook(hook)


@pytest.mark.parametrize("model, extra", [
    ("unpaired_revgan", ["--gan_mode", "wgangp"]),
    ("paired_revgan", ["--gan_mode", "wgangp"]),
    ("unpaired_revgan", ["--gan_mode", "hinge", "--D_rollout", "2"]),
    ("paired_revgan", ["--gan_mode", "hinge", "--D_rollout", "2"]),
    ("cycle_gan", ["--D_rollout", "2"]),
    ("unpaired_revgan", ["--use_naive"]),
])
def test_objectives_end_to_end(model, extra, data, tmp_path, monkeypatch):
    """4 iterations with finite losses, then a test run; each option really takes effect:
    the gradient penalty runs (wgangp), D steps D_rollout times per G step, the reversible
    core runs plain autograd (--use_naive)."""
    ck, res = tmp_path / "ck", tmp_path / "res"
    module = unpaired_module if model.startswith(("unpaired", "cycle")) else paired_module
    penalties = {"n": 0}
    real_penalty = module.gradient_penalty

    def counted_penalty(*args, **kwargs):
        penalties["n"] += 1
        return real_penalty(*args, **kwargs)

    monkeypatch.setattr(module, "gradient_penalty", counted_penalty)
    recorder = _Recorder(monkeypatch)
    counts, handle = _count_optimizer_steps()
    try:
        run_cli("train", "--dataroot", _root(data, model), "--name", "run", "--checkpoints_dir",
                ck, *tiny_flags(model), *QUIET, "--n_epochs", "1", "--n_epochs_decay", "0",
                *extra)
    finally:
        handle.remove()
    iterations = 4
    rollout = int(extra[extra.index("--D_rollout") + 1]) if "--D_rollout" in extra else 1
    assert counts["steps"] == iterations * (1 + rollout)  # one G step, `rollout` D steps
    directions = 1 if model == "pix2pix" else 2  # one penalty per discriminator and D step
    expected_penalties = iterations * rollout * directions if "wgangp" in extra else 0
    assert penalties["n"] == expected_penalties
    cores = [m for m in recorder.models[-1].generator.modules()
             if isinstance(m, ReversibleSequence)]
    if model.endswith("revgan"):
        assert cores and all(c.memory_saving == ("--use_naive" not in extra) for c in cores)
    _finite_losses(ck / "run")
    _test_outputs(data, model, ck, res)


def test_sync_batch_norm_in_one_process_is_batch_norm(data, tmp_path, monkeypatch):
    """Without a process group, --norm sync_batch trains with batch statistics (PyTorch's
    single-process fallback) and the run tests like any other."""
    ck, res, model = tmp_path / "ck", tmp_path / "res", "paired_revgan"
    recorder = _Recorder(monkeypatch)
    run_cli("train", "--dataroot", _root(data, model), "--name", "run", "--checkpoints_dir", ck,
            *tiny_flags(model), *QUIET, "--norm", "sync_batch", "--n_epochs", "1",
            "--n_epochs_decay", "0")
    norms = [m for net in recorder.models[-1].nets.values() for m in net.modules()
             if isinstance(m, torch.nn.SyncBatchNorm)]
    assert norms and all(int(m.num_batches_tracked) > 0 for m in norms)
    _finite_losses(ck / "run")
    _test_outputs(data, model, ck, res)


def test_sync_batch_norm_under_cpu_ddp_is_one_clear_error():
    """A process group on the CPU (world of 2): PyTorch's SyncBatchNorm has no CPU kernel, so
    wrapping the networks stops with one clear line before any DDP work."""
    opt = build_config("paired_revgan", is_train=True, values={
        "dataroot": ".", "norm": "sync_batch", "ngf": 4, "ndf": 4, "netG": "resnet_2blocks"})
    model = create_model(opt, torch.device("cpu"))
    state = DistState(rank=0, world=2, local_rank=0, device=torch.device("cpu"))
    with pytest.raises(UserError, match="sync_batch needs CUDA"):
        wrap_model(model, state, opt)
    assert not any(isinstance(net, torch.nn.parallel.DistributedDataParallel)
                   for net in model.nets.values())
