"""Crashes, kills, poisoned checkpoints and non-finite losses leave users' work intact."""

from __future__ import annotations

import hashlib
import json
import os
import pickle
from pathlib import Path

import pytest
import torch
from helpers import cli_error, run_cli, tiny_flags, weights

from revgan.demo.scenes import make_demo_dataset
from revgan.errors import UserError
from revgan.models.losses import GANLoss
from revgan.runs import checkpoints as runstate
from revgan.runs.checkpoints import load_training_state


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict:
    return make_demo_dataset(tmp_path_factory.mktemp("demo"), size=32, n_train=6, n_test=2,
                             n_val=2)


def train_args(data, ck, name, *extra):
    return ["train", "--dataroot", str(data["unpaired"]), "--name", name, "--checkpoints_dir",
            str(ck), *tiny_flags("unpaired_revgan"), *extra]


class _Exploit:
    """Unpickling this runs a command: what a malicious checkpoint would do."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_pickle_checkpoint_is_refused(data, tmp_path, capsys):
    ck = tmp_path / "ck"
    run_cli(*train_args(data, ck, "run", "--n_epochs", "1", "--n_epochs_decay", "0"))
    marker = tmp_path / "pwned"
    state = ck / "run" / "latest_train_state.pt"
    with state.open("wb") as handle:
        pickle.dump({"model": _Exploit(marker)}, handle)
    # the checksums guard against accidents, not attackers: one who can write the state can
    # rewrite its recorded sha256 too, and the unpickler must still refuse it
    manifest = ck / "run" / "latest_sha256.json"
    recorded = json.loads(manifest.read_text())
    recorded["sha256"][state.name] = hashlib.sha256(state.read_bytes()).hexdigest()
    manifest.write_text(json.dumps(recorded))
    line = cli_error(capsys, *train_args(data, ck, "run", "--continue_train", "--n_epochs", "2",
                                         "--n_epochs_decay", "0"))
    assert "refusing to load" in line
    assert not marker.exists()
    with pytest.raises(UserError):
        load_training_state(state)
    assert not marker.exists()


def test_interrupted_commit_keeps_the_old_checkpoint(tmp_path, monkeypatch):
    nets = {"G": torch.nn.Linear(3, 3), "D": torch.nn.Linear(3, 1)}
    runstate.commit_checkpoint(tmp_path, "latest", nets, {"model": "x"}, {"step": 1})
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    for net in nets.values():
        torch.nn.init.constant_(net.weight, 7.0)
    calls = {"n": 0}
    real = runstate.atomic_write_bytes

    def dying_write(path, data):  # the process dies while writing the second file
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        real(path, data)

    monkeypatch.setattr(runstate, "atomic_write_bytes", dying_write)
    with pytest.raises(KeyboardInterrupt):
        runstate.commit_checkpoint(tmp_path, "latest", nets, {"model": "x"}, {"step": 2})
    monkeypatch.undo()
    runstate.recover(tmp_path)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


def test_commit_after_journal_is_rolled_forward(tmp_path, monkeypatch):
    nets = {"G": torch.nn.Linear(3, 3)}
    runstate.commit_checkpoint(tmp_path, "latest", nets, {}, {"step": 1})
    torch.nn.init.constant_(nets["G"].weight, 3.0)
    monkeypatch.setattr(runstate, "_roll_forward", lambda folder, label: None)  # killed here
    runstate.commit_checkpoint(tmp_path, "latest", nets, {}, {"step": 2})
    monkeypatch.undo()
    fresh = {"G": torch.nn.Linear(3, 3)}
    state = runstate.load_checkpoint(tmp_path, "latest", fresh, torch.device("cpu"), True)
    assert state == {"step": 2}
    assert torch.equal(fresh["G"].weight, nets["G"].weight)


# SIGTERM, SIGKILL, a second writer, a full disk, changed bytes: tests/test_faults.py


def test_non_finite_losses_are_skipped_then_stop(data, tmp_path, monkeypatch, capsys):
    ck = tmp_path / "ck"
    real_forward = GANLoss.forward
    calls = {"n": 0}

    def poisoned(self, prediction, target_is_real, for_discriminator=True):
        calls["n"] += 1
        loss = real_forward(self, prediction, target_is_real, for_discriminator)
        return loss * float("nan") if calls["n"] > 12 else loss  # from the 3rd step on

    run_cli(*train_args(data, ck, "run", "--n_epochs", "1", "--n_epochs_decay", "0"))
    good = weights(ck / "run" / "latest_net_G.safetensors")
    monkeypatch.setattr(GANLoss, "forward", poisoned)
    line = cli_error(capsys, *train_args(data, ck, "run", "--continue_train", "--n_epochs", "3",
                                         "--n_epochs_decay", "0", "--max_nonfinite", "3",
                                         "--save_latest_freq", "1"))
    assert "non-finite" in line and "3 training steps in a row" in line
    kept = weights(ck / "run" / "latest_net_G.safetensors")
    assert all(torch.isfinite(t).all() for t in kept.values())
    assert any(not torch.equal(good[k], kept[k]) for k in good)  # two good steps were saved
