"""End to end on tiny generated data: train → checkpoint → resume → test, for every model."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import cli_error, run_cli, tiny_flags, weights
from PIL import Image

from revgan.cli.options import parse_options
from revgan.demo.scenes import make_demo_dataset
from revgan.reporting.tracking import parse_loss_log
from revgan.train.loop import Trainer

REPO = Path(__file__).resolve().parents[1]
MODELS_2D = ["unpaired_revgan", "paired_revgan", "cycle_gan", "pix2pix"]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("demo")
    return make_demo_dataset(root, size=32, n_train=4, n_test=3, n_val=3)


def dataroot(data: dict, model: str) -> Path:
    return data["unpaired"] if model.startswith(("unpaired", "cycle")) else data["paired"]


@pytest.mark.parametrize("model", MODELS_2D)
def test_train_checkpoint_resume_test(model, data, tmp_path):
    ck, res = tmp_path / "ck", tmp_path / "res"
    base = ["train", "--dataroot", dataroot(data, model), "--name", "run",
            "--checkpoints_dir", ck, *tiny_flags(model)]
    run_cli(*base, "--n_epochs", "1", "--n_epochs_decay", "0")
    run = ck / "run"
    for name in ("opt.txt", "train_opt.json", "loss_log.txt", "web/index.html",
                 "latest_net_G.safetensors", "latest_train_state.pt", "1_net_G.safetensors"):
        assert (run / name).is_file(), name
    assert any((run / "tensorboard").iterdir())
    first = weights(run / "latest_net_G.safetensors")

    # resume for a second epoch (linear decay) from the saved state
    run_cli(*base, "--continue_train", "--n_epochs", "1", "--n_epochs_decay", "1")
    assert (run / "2_net_G.safetensors").is_file()
    second = weights(run / "latest_net_G.safetensors")
    assert any(not np.array_equal(first[k].numpy(), second[k].numpy()) for k in first)
    entries = parse_loss_log(run / "loss_log.txt")
    assert {e[0] for e in entries} == {1, 2}
    assert all(math.isfinite(v) for _, _, losses in entries for v in losses.values())

    run_cli("test", "--dataroot", dataroot(data, model), "--name", "run", "--model", model,
            "--checkpoints_dir", ck, "--results_dir", res, "--eval_metrics", "--no_progress",
            "--gpu_ids", "-1", "--load_size", "36", "--crop_size", "32")
    out = res / "run" / "test_latest"
    assert (out / "index.html").is_file()
    labels = {p.name for p in (out / "images").iterdir()}
    assert {"real_A", "fake_B"} <= labels
    assert len(list((out / "images" / "fake_B").glob("*.png"))) == 3
    summary = json.loads((out / "metrics.json").read_text())
    assert summary["pairs"]


def test_single_direction_test_model(data, tmp_path):
    ck, res = tmp_path / "ck", tmp_path / "res"
    run_cli("train", "--dataroot", data["unpaired"], "--name", "run", "--checkpoints_dir", ck,
            *tiny_flags("unpaired_revgan"), "--n_epochs", "1", "--n_epochs_decay", "0")
    run_cli("test", "--dataroot", data["unpaired"] / "testB", "--name", "run", "--model", "test",
            "--direction", "BtoA", "--checkpoints_dir", ck, "--results_dir", res,
            "--no_progress", "--gpu_ids", "-1", "--preprocess", "none")
    out = res / "run" / "test_latest" / "images"
    assert sorted(p.name for p in out.iterdir()) == ["fake_A", "real_B"]
    # any input size: 32x32 is not needed, the generator pads to its stride and crops back
    image = Image.open(next((out / "fake_A").glob("*.png")))
    assert image.size == (32, 32)
    # the written pixels are the generator's own B->A translation of each test image
    from revgan.data.images import read_image
    from revgan.infer.load import load_generator

    G, _ = load_generator(ck / "run", "latest", torch.device("cpu"))
    sources = sorted((data["unpaired"] / "testB").iterdir())
    assert [p.stem for p in sorted((out / "fake_A").glob("*.png"))] == [p.stem for p in sources]
    for source in sources:
        x = torch.from_numpy(read_image(source, 3)[0])[None]
        with torch.no_grad():
            expected = G(x, "BtoA").clamp(-1, 1)[0].numpy()
            other_direction = G(x, "AtoB").clamp(-1, 1)[0].numpy()
        written = read_image(out / "fake_A" / f"{source.stem}.png", 3)[0]
        assert np.abs(written - expected).max() <= 1 / 255 + 1e-6  # 8-bit rounding only
        assert np.abs(written - other_direction).max() > 0.05


def _interrupt_after(monkeypatch, saves: int, label: str = "latest") -> None:
    """Make the n-th checkpoint of ``label`` the last thing a run does (a simulated crash)."""
    calls = {"n": 0}
    original = Trainer.save

    class Crash(Exception):
        pass

    def save(self, which, with_state=True):
        original(self, which, with_state)
        if which == label:
            calls["n"] += 1
            if calls["n"] == saves:
                raise Crash()

    monkeypatch.setattr(Trainer, "save", save)
    return Crash


@pytest.mark.parametrize("where", ["mid_epoch", "epoch_end"])
def test_resume_equals_uninterrupted_run(where, data, tmp_path, monkeypatch):
    flags = ["train", "--dataroot", data["unpaired"], "--checkpoints_dir", tmp_path,
             *tiny_flags("unpaired_revgan"), "--n_epochs", "1", "--n_epochs_decay", "1",
             "--deterministic", "--pool_size", "2", "--save_latest_freq", "3",
             "--save_epoch_freq", "1"]
    run_cli(*flags, "--name", "straight")
    # mid_epoch: crash right after the checkpoint at image 3 of 4; epoch_end: after epoch 1
    crash = _interrupt_after(monkeypatch, 1 if where == "mid_epoch" else 2)
    with pytest.raises(crash):
        run_cli(*flags, "--name", "resumed")
    monkeypatch.undo()
    run_cli(*flags, "--name", "resumed", "--continue_train")
    for net in ("G", "D_A", "D_B"):
        a = weights(tmp_path / "straight" / f"latest_net_{net}.safetensors")
        b = weights(tmp_path / "resumed" / f"latest_net_{net}.safetensors")
        for key in a:
            assert np.array_equal(a[key].numpy(), b[key].numpy()), (net, key)


def test_existing_run_is_not_overwritten(data, tmp_path, capsys):
    args = ["train", "--dataroot", data["unpaired"], "--name", "run", "--checkpoints_dir",
            tmp_path, *tiny_flags("unpaired_revgan"), "--n_epochs", "1", "--n_epochs_decay", "0"]
    run_cli(*args)
    before = (tmp_path / "run" / "latest_net_G.safetensors").read_bytes()
    assert "--continue_train" in cli_error(capsys, *args)
    assert (tmp_path / "run" / "latest_net_G.safetensors").read_bytes() == before


def test_reference_flag_names_map_to_the_same_options():
    old = parse_options(["--dataroot", "d", "--which_model_netG", "resnet_6blocks",
                         "--which_direction", "BtoA", "--niter", "3", "--niter_decay", "4",
                         "--loadSize", "100", "--fineSize", "90", "--no_lsgan",
                         "--batchSize", "2", "--nThreads", "1", "--resize_or_crop", "crop",
                         "--which_model_netD", "pixel"], is_train=True)
    new = parse_options(["--dataroot", "d", "--netG", "resnet_6blocks", "--direction", "BtoA",
                         "--n_epochs", "3", "--n_epochs_decay", "4", "--load_size", "100",
                         "--crop_size", "90", "--gan_mode", "vanilla", "--batch_size", "2",
                         "--num_threads", "1", "--preprocess", "crop", "--netD", "pixel"],
                        is_train=True)
    ignore = {"explicit"}
    assert {k: v for k, v in vars(old).items() if k not in ignore} == \
        {k: v for k, v in vars(new).items() if k not in ignore}
    test = parse_options(["--dataroot", "d", "--which_epoch", "5"], is_train=False)
    assert test.epoch == "5"


@pytest.mark.parametrize("command", ["train", "test"])
def test_help_lists_every_option_with_its_default(command, capsys):
    with pytest.raises(SystemExit) as exc:
        run_cli(command, "--help")
    assert exc.value.code == 0
    text = capsys.readouterr().out
    for flag in ("--dataroot", "--netG", "--which_model_netG", "--use_naive", "--coupling",
                 "--n_downsampling", "--gpu_ids", "--amp"):
        assert flag in text
    assert "(default: edsrF_9)" in " ".join(text.split())  # unpaired_revgan's own default


def test_help_shows_the_chosen_models_defaults(capsys):
    with pytest.raises(SystemExit):
        run_cli("train", "--model", "cycle_gan", "--help")
    text = " ".join(capsys.readouterr().out.split())
    assert "Defaults shown are --model cycle_gan's" in text
    assert "unet_<size> (default: resnet_9blocks)" in text


def test_seed_readme_commands_run_verbatim(tmp_path):
    """The reference README's two commands, on a dataset in the CycleGAN layout."""
    rng = np.random.default_rng(0)
    for split in ("trainA", "trainB", "testA", "testB"):
        folder = tmp_path / "datasets" / "cityscapes" / split
        folder.mkdir(parents=True)
        for i in range(1 if split.startswith("train") else 2):
            pixels = rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(folder / f"{i}.png")
    for script in ("train.py", "test.py"):
        shutil.copy(REPO / script, tmp_path / script)
    small = ["--n_epochs", "1", "--n_epochs_decay", "0", "--no_progress"]
    for command in (
        "python train.py --dataroot ./datasets/cityscapes --name example_run "
        "--model unpaired_revgan",
        "python test.py --dataroot ./datasets/cityscapes --name example_run "
        "--model unpaired_revgan",
    ):
        argv = command.split()
        argv[0] = sys.executable
        extra = small if "train.py" in command else ["--no_progress"]
        done = subprocess.run(argv + extra, cwd=tmp_path, capture_output=True, text=True,
                              timeout=900)
        assert done.returncode == 0, done.stderr[-2000:]
    assert (tmp_path / "checkpoints" / "example_run" / "web" / "index.html").is_file()
    page = tmp_path / "results" / "example_run" / "test_latest" / "index.html"
    assert page.is_file()
    assert len(list(page.parent.glob("images/fake_B/*.png"))) == 2


def test_validation_records_metrics_and_keeps_the_best(data, tmp_path):
    ck, res = tmp_path / "ck", tmp_path / "res"
    run_cli("train", "--dataroot", data["paired"], "--name", "run", "--checkpoints_dir", ck,
            *tiny_flags("paired_revgan"), "--n_epochs", "1", "--n_epochs_decay", "1",
            "--val_freq", "1", "--save_best", "PSNR", "--save_epoch_freq", "1")
    run = ck / "run"
    records = [json.loads(line) for line in (run / "val_metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2]
    assert all(k in records[0] for k in ("PSNR", "SSIM", "MAE", "A_PSNR"))
    assert (run / "best_net_G.safetensors").is_file()
    best_epoch = int(max(records, key=lambda r: r["PSNR"])["epoch"])
    assert weights(run / "best_net_G.safetensors").keys() == weights(
        run / f"{best_epoch}_net_G.safetensors").keys()
    assert all(np.array_equal(weights(run / "best_net_G.safetensors")[k].numpy(), v.numpy())
               for k, v in weights(run / f"{best_epoch}_net_G.safetensors").items())
    page = (run / "web" / "index.html").read_text()
    assert "metric_PSNR.png" in page and "losses.png" in page
    run_cli("test", "--dataroot", data["paired"], "--name", "run", "--model", "paired_revgan",
            "--checkpoints_dir", ck, "--results_dir", res, "--epoch", "best", "--no_progress",
            "--gpu_ids", "-1", "--load_size", "36", "--crop_size", "32")
    assert (res / "run" / "test_best" / "index.html").is_file()


def test_compile_wraps_the_non_reversible_parts(data, tmp_path):
    from revgan.models import create_model
    from revgan.models.base import compilable_parts

    argv = ["--dataroot", str(data["unpaired"]), "--name", "c", "--checkpoints_dir",
            str(tmp_path), *tiny_flags("unpaired_revgan"), "--compile", "eager"]
    model = create_model(parse_options(argv, is_train=True), torch.device("cpu"))
    parts = compilable_parts(model.nets)
    G = model.nets["G"]
    assert {id(p) for p in parts} == {id(G.encoder_A), id(G.encoder_B), id(G.decoder_A),
                                      id(G.decoder_B), id(model.nets["D_A"]),
                                      id(model.nets["D_B"])}
    assert all(p._compiled_call_impl is not None for p in parts)
    assert G.core._compiled_call_impl is None
    assert not any("_orig_mod" in k for k in G.state_dict())
    # one real training run through the compiled parts (dynamo capture, eager backend)
    run_cli("train", *argv, "--n_epochs", "1", "--n_epochs_decay", "0")
    assert (tmp_path / "c" / "latest_net_G.safetensors").is_file()


def test_grayscale_to_rgb(data, tmp_path):
    """One channel in A, three in B: the encoders and decoders follow --input_nc/--output_nc."""
    ck, res = tmp_path / "ck", tmp_path / "res"
    run_cli("train", "--dataroot", data["paired"], "--name", "gray", "--checkpoints_dir", ck,
            *tiny_flags("paired_revgan"), "--input_nc", "1", "--output_nc", "3",
            "--n_epochs", "1", "--n_epochs_decay", "0")
    run_cli("test", "--dataroot", data["paired"], "--name", "gray", "--model", "paired_revgan",
            "--checkpoints_dir", ck, "--results_dir", res, "--no_progress", "--gpu_ids", "-1",
            "--load_size", "36", "--crop_size", "32")
    images = res / "gray" / "test_latest" / "images"
    assert Image.open(next((images / "real_A").glob("*.png"))).mode == "L"
    assert Image.open(next((images / "fake_B").glob("*.png"))).mode == "RGB"
    assert Image.open(next((images / "fake_A").glob("*.png"))).mode == "L"
