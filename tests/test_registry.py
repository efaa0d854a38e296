"""The registry: docs/adding_a_model.md's worked example works as written."""

from __future__ import annotations

import re
import sys
import types
from pathlib import Path

import numpy as np
import pytest
from helpers import run_cli, tiny_flags
from PIL import Image

from revgan.models import registry

DOC = Path(__file__).resolve().parents[1] / "docs" / "adding_a_model.md"


@pytest.fixture
def paired_l1():
    """Register the documented model from the page's own code blocks; unregister after."""
    objective, entry = re.findall(r"```python\n(.*?)```", DOC.read_text(), re.S)
    module = types.ModuleType("revgan.models.paired_l1")
    sys.modules[module.__name__] = module
    exec(compile(objective, str(DOC), "exec"), module.__dict__)
    namespace = {"MODELS": registry.MODELS, "ModelSpec": registry.ModelSpec,
                 "PairedL1Model": module.PairedL1Model}
    exec(compile(entry, str(DOC), "exec"), namespace)
    yield registry.MODELS["paired_l1"]
    del registry.MODELS["paired_l1"], sys.modules[module.__name__]


def _aligned(root: Path, count: int = 3) -> Path:
    rng = np.random.default_rng(0)
    for phase in ("train", "test"):
        (root / phase).mkdir(parents=True)
        for i in range(count):
            a = rng.integers(0, 256, (36, 36, 3), dtype=np.uint8)
            Image.fromarray(np.concatenate([a, 255 - a], 1)).save(root / phase / f"{i}.png")
    return root


def test_documented_model_trains_resumes_and_tests(paired_l1, tmp_path):
    assert paired_l1.generator == "rev"
    data = _aligned(tmp_path / "data")
    flags = [*tiny_flags("paired_l1"), "--checkpoints_dir", tmp_path / "ck", "--name", "l1"]
    run_cli("train", "--dataroot", data, *flags, "--n_epochs", "1", "--n_epochs_decay", "0")
    run_cli("train", "--dataroot", data, *flags, "--n_epochs", "2", "--n_epochs_decay", "0",
            "--continue_train")
    log = (tmp_path / "ck" / "l1" / "loss_log.txt").read_text()
    assert "L1_fake_B" in log and "L1_fake_A" in log
    run_cli("test", "--dataroot", data, "--model", "paired_l1", "--name", "l1",
            "--checkpoints_dir", tmp_path / "ck", "--results_dir", tmp_path / "res",
            "--gpu_ids", "-1", "--no_progress", "--load_size", "32", "--crop_size", "32")
    images = tmp_path / "res" / "l1" / "test_latest" / "images"
    assert sorted(p.name for p in images.iterdir()) == ["fake_A", "fake_B", "real_A", "real_B"]
    assert len(list((images / "fake_A").glob("*.png"))) == 3


def test_every_registered_model_builds_its_default_config():
    for name, spec in registry.MODELS.items():
        if spec.generator is None:
            continue
        cfg = registry.build_config(name, True, {"dataroot": "d"})
        assert cfg.model == name and cfg.dims == spec.dims
