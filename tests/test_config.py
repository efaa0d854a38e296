"""The typed configuration: one source of defaults, flags that reach training, config files."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import yaml
from helpers import cli_error

from revgan.cli.options import build_parser, parse_options
from revgan.config import RunConfig, option_fields
from revgan.data import create_dataset
from revgan.errors import UserError
from revgan.models.registry import MODELS, build_config
from revgan.runs.run_folder import save_config

SRC = Path(__file__).resolve().parents[1] / "src" / "revgan"


def test_no_option_is_read_with_a_fallback_default():
    """A fallback in ``getattr(opt, key, default)`` is a second default that can disagree."""
    offenders = [f"{path.relative_to(SRC)}:{n}" for path in SRC.rglob("*.py")
                 for n, line in enumerate(path.read_text().splitlines(), 1)
                 if re.search(r"getattr\((self\.)?opt\b", line)]
    assert not offenders, offenders


def _volume_folder(root: Path) -> Path:
    """trainA/trainB with one 10³ volume holding the values 0..999 (one voxel each)."""
    volume = np.arange(1000, dtype=np.float32).reshape(10, 10, 10)
    for side in "AB":
        (root / f"train{side}").mkdir(parents=True)
        nib.save(nib.Nifti1Image(volume, np.eye(4)), root / f"train{side}" / "v.nii.gz")
    return root


@pytest.mark.parametrize("percentiles", [(5.0, 95.0), (20.0, 80.0)])
def test_percentiles_reach_the_training_dataset(tmp_path, percentiles):
    """``--percentiles`` used to be dropped in training (0.5/99.5 always)."""
    root = _volume_folder(tmp_path / "d")
    opt = parse_options(["--dataroot", str(root), "--model", "paired_revgan3d",
                         "--intensity", "percentile", "--percentiles", *map(str, percentiles),
                         "--patch_size", "10", "--flip_axes", "", "--samples_per_volume", "1"],
                        is_train=True)
    item = create_dataset(opt)[0]
    # Values at or below the low percentile map to -1: that is low% of the 1000 voxels.
    clipped_low = float((item["A"] <= -1 + 1e-6).float().mean())
    clipped_high = float((item["A"] >= 1 - 1e-6).float().mean())
    assert clipped_low == pytest.approx(percentiles[0] / 100, abs=0.002)
    assert clipped_high == pytest.approx(1 - percentiles[1] / 100, abs=0.002)


def test_volume_options_reach_the_dataset(tmp_path):
    root = _volume_folder(tmp_path / "d")
    opt = parse_options(["--dataroot", str(root), "--model", "unpaired_revgan3d",
                         "--volume_cache_mb", "7", "--patch_size", "8"], is_train=True)
    dataset = create_dataset(opt)
    assert dataset.samples == 4  # the one default of --samples_per_volume
    assert dataset.A.cache_bytes == 7 * 2**20
    assert dataset[0]["A"].shape == (1, 8, 8, 8)


def test_dims_3_with_a_2d_model_is_one_line(capsys, tmp_path):
    line = cli_error(capsys, "train", "--dataroot", tmp_path, "--model", "cycle_gan",
                     "--dims", "3")
    assert "2D model" in line and "cycle_gan3d" in line


def test_train_refuses_the_test_model(capsys, tmp_path):
    assert "only tests" in cli_error(capsys, "train", "--dataroot", tmp_path, "--model", "test")


def test_every_field_is_a_flag_with_its_default_in_help():
    for is_train in (True, False):
        parser = build_parser(is_train)
        flags = {a.dest for a in parser._actions}
        names = {f.name for f in option_fields(is_train)}
        assert names <= flags
        text = parser.format_help()
        assert "(default: 286)" in text and "(default: 0.5)" in text  # load_size, overlap


def test_model_defaults_come_from_the_registry():
    for name, spec in MODELS.items():
        if spec.generator is None:
            continue
        cfg = build_config(name, True, {"dataroot": "d"})
        for key, value in spec.defaults.items():
            assert getattr(cfg, key) == value, (name, key)
    # an explicit value beats the model's default
    assert build_config("pix2pix", True, {"dataroot": "d", "norm": "instance"}).norm == "instance"


@pytest.mark.parametrize("suffix", [".json", ".yaml"])
def test_config_file_round_trip_and_flags_win(tmp_path, suffix):
    original = parse_options(["--dataroot", "data", "--model", "paired_revgan3d", "--ngf", "8",
                              "--percentiles", "2", "98", "--patch_size", "16,16,8",
                              "--max_dataset_size", "5", "--name", "x"], is_train=True)
    save_config(original, tmp_path)  # what every run writes: train_opt.json
    saved = json.loads((tmp_path / "train_opt.json").read_text())
    path = tmp_path / f"run{suffix}"
    path.write_text(yaml.safe_dump(saved) if suffix == ".yaml" else json.dumps(saved))
    again = parse_options(["--config", str(path)], is_train=True)
    skip = {"explicit"}
    assert {k: v for k, v in dataclasses.asdict(again).items() if k not in skip} == \
        {k: v for k, v in dataclasses.asdict(original).items() if k not in skip}
    flagged = parse_options(["--config", str(path), "--ngf", "16"], is_train=True)
    assert flagged.ngf == 16 and flagged.patch_size == (16, 16, 8)


def test_config_file_mistakes_are_one_line(tmp_path, capsys):
    unknown = tmp_path / "u.yaml"
    unknown.write_text("dataroot: d\nngff: 3\n")
    assert "unknown option 'ngff'" in cli_error(capsys, "train", "--config", unknown)
    wrong = tmp_path / "w.json"
    wrong.write_text(json.dumps({"dataroot": "d", "ngf": "many"}))
    assert "'ngf'" in cli_error(capsys, "train", "--config", wrong)
    broken = tmp_path / "b.yaml"
    broken.write_text("dataroot: [d\n")
    assert "not valid YAML" in cli_error(capsys, "train", "--config", broken)
    assert "cannot read" in cli_error(capsys, "train", "--config", tmp_path / "missing.json")


def test_typed_values_are_checked():
    with pytest.raises(UserError, match="direction"):
        RunConfig.from_dict({"direction": "sideways"}).validate()
    with pytest.raises(UserError, match="patch_size"):
        build_config("unpaired_revgan3d", True, {"dataroot": "d", "patch_size": (8, 8)})


def test_a_run_older_than_an_architecture_option_keeps_loading(tmp_path):
    """unpaired_revgan now defaults to --upsample resize; a run saved before the option
    existed (no 'upsample' key) was built with transposed convolutions and must load so."""
    from helpers import run_cli

    from revgan.demo.scenes import make_demo_dataset
    from revgan.infer.load import load_generator

    make_demo_dataset(tmp_path / "data", size=32, n_train=2, n_test=1, n_val=1)
    run_cli("train", "--dataroot", tmp_path / "data" / "unpaired", "--name", "old",
            "--checkpoints_dir", tmp_path / "ck", "--netG", "resnet_1blocks", "--ngf", "4",
            "--ndf", "4", "--n_epochs", "1", "--n_epochs_decay", "0", "--load_size", "32",
            "--crop_size", "32", "--num_threads", "0", "--no_progress", "--gpu_ids", "-1",
            "--upsample", "transpose")
    saved = tmp_path / "ck" / "old" / "train_opt.json"
    values = json.loads(saved.read_text())
    del values["upsample"]
    saved.write_text(json.dumps(values))
    G, cfg = load_generator(tmp_path / "ck" / "old")
    assert cfg.upsample == "transpose"
    run_cli("test", "--dataroot", tmp_path / "data" / "unpaired", "--name", "old",
            "--checkpoints_dir", tmp_path / "ck", "--results_dir", tmp_path / "res",
            "--num_test", "1", "--gpu_ids", "-1", "--no_progress")
    assert list((tmp_path / "res" / "old").rglob("*.png"))
