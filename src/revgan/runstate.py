"""Saving and restoring a whole run: all networks plus the training state, as one commit.

Files keep the reference's naming (``<label>_net_<X>``) in safetensors. A checkpoint of
several files is committed through a journal: every file is first written completely under
a temporary name, then a journal listing the renames is written atomically, then the
renames happen and the journal is removed. A kill before the journal leaves the old
checkpoint; a kill after it is rolled forward on the next load. Either way no mixture.
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import torch
from torch import nn

from .checkpoint import (
    _fsync_dir,
    atomic_write_bytes,
    atomic_write_text,
    load_network,
    load_training_state,
    network_bytes,
    state_path,
    weights_path,
)


def _journal(folder: Path, label: str) -> Path:
    return folder / f".{label}.commit.json"


def commit_checkpoint(folder: Path, label: str, nets: dict[str, nn.Module], config: dict,
                      state: dict | None) -> None:
    """Write ``<label>_net_<X>.safetensors`` for every net (and the training state) at once."""
    folder.mkdir(parents=True, exist_ok=True)
    files: dict[Path, bytes] = {weights_path(folder, label, k): network_bytes(n, config)
                                for k, n in nets.items()}
    if state is not None:
        buffer = io.BytesIO()
        torch.save(state, buffer)
        files[state_path(folder, label)] = buffer.getvalue()
    renames = {}
    for final, data in files.items():
        temp = final.with_name(f".{final.name}.pending")
        atomic_write_bytes(temp, data)
        renames[temp.name] = final.name
    atomic_write_text(_journal(folder, label), json.dumps(renames))
    _roll_forward(folder, label)


def _roll_forward(folder: Path, label: str) -> None:
    journal = _journal(folder, label)
    if not journal.exists():
        return
    renames = json.loads(journal.read_text())
    for temp, final in renames.items():
        if (folder / temp).exists():
            os.replace(folder / temp, folder / final)
    _fsync_dir(folder)
    journal.unlink()
    _fsync_dir(folder)


def recover(folder: Path) -> None:
    """Finish any checkpoint commit interrupted after its journal was written; drop the rest."""
    if not folder.is_dir():
        return
    for journal in folder.glob(".*.commit.json"):
        label = journal.name[1:].removesuffix(".commit.json")
        try:
            _roll_forward(folder, label)
        except (OSError, json.JSONDecodeError):
            journal.unlink(missing_ok=True)
    for pending in folder.glob(".*.pending"):
        pending.unlink(missing_ok=True)


def load_checkpoint(folder: Path, label: str, nets: dict[str, nn.Module],
                    device: torch.device, with_state: bool) -> dict | None:
    recover(folder)
    for key, net in nets.items():
        load_network(weights_path(folder, label, key), net, device)
    if with_state:
        return load_training_state(state_path(folder, label))
    return None
