"""Checkpoints: safetensors weights + JSON config, a separate training state, atomic writes.

A kill at any moment leaves the previous checkpoint intact: every file is written to a
temporary name, flushed with fsync and renamed over the old one. Loading never unpickles
arbitrary objects: weights are safetensors, the training state is read with
``torch.load(weights_only=True)``.

Saving and restoring a whole run: all networks plus the training state, as one commit.

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
import pickle
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save
from torch import nn

from revgan.errors import UserError
from revgan.runs.atomic import atomic_write_bytes, atomic_write_text, fsync_dir


def weights_path(folder: Path, label: str | int, net: str) -> Path:
    return Path(folder) / f"{label}_net_{net}.safetensors"


def state_path(folder: Path, label: str | int) -> Path:
    return Path(folder) / f"{label}_train_state.pt"


def unwrap(net: nn.Module) -> nn.Module:
    """The plain module inside DistributedDataParallel or torch.compile wrappers."""
    net = getattr(net, "module", net)
    return getattr(net, "_orig_mod", net)


def network_bytes(net: nn.Module, config: dict) -> bytes:
    """Weights as safetensors; ``config`` (JSON) goes into the file's metadata."""
    tensors = {k: v.detach().cpu().contiguous().clone()
               for k, v in unwrap(net).state_dict().items()}
    return save(tensors, metadata={"revgan_config": json.dumps(config)})


def save_network(path: Path, net: nn.Module, config: dict) -> None:
    atomic_write_bytes(path, network_bytes(net, config))


def read_config(path: Path) -> dict:
    """The configuration stored with a weights file."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            meta = handle.metadata() or {}
    except (SafetensorError, OSError) as exc:
        raise UserError(f"{path} is not a readable safetensors checkpoint ({exc})")
    return json.loads(meta.get("revgan_config", "{}"))


def load_network(path: Path, net: nn.Module, device: torch.device | str = "cpu") -> None:
    """Load weights into ``net``; a file of another architecture is one clear error."""
    path = Path(path)
    if not path.exists():
        legacy = path.with_suffix(".pth")
        hint = f" (found {legacy.name}: pickled checkpoints are not loaded)" \
            if legacy.exists() else ""
        raise UserError(f"checkpoint not found: {path}{hint}")
    try:
        tensors = load_file(str(path), device=str(device))
    except (SafetensorError, OSError, ValueError) as exc:
        raise UserError(f"{path} is not a readable safetensors checkpoint ({exc})")
    target = unwrap(net)
    own = target.state_dict()
    missing = sorted(set(own) - set(tensors))
    unexpected = sorted(set(tensors) - set(own))
    wrong = [k for k in own if k in tensors and tuple(own[k].shape) != tuple(tensors[k].shape)]
    if missing or unexpected or wrong:
        config = read_config(path)
        trained = ", ".join(f"{k}={config[k]}" for k in ("model", "netG", "netD", "ngf", "ndf",
                                                           "norm", "input_nc", "output_nc")
                            if k in config)
        detail = (f"{len(missing)} missing, {len(unexpected)} unexpected, "
                  f"{len(wrong)} of another shape")
        raise UserError(f"{path.name} belongs to another architecture ({detail}); it was "
                        f"trained with {trained or 'unknown options'}")
    target.load_state_dict(tensors)


def save_training_state(path: Path, state: dict) -> None:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def load_training_state(path: Path) -> dict:
    """Tensors, numbers, strings and containers only: anything else is refused."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"training state not found: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else "unsafe content"
        raise UserError(f"refusing to load {path}: it holds objects other than tensors and "
                        f"plain data ({first[:120]})")
    except (RuntimeError, EOFError, OSError, ValueError) as exc:
        raise UserError(f"cannot read training state {path}: {str(exc).splitlines()[0]}")


def rng_state() -> dict:
    """All RNG states as tensors and plain data (safe to load with weights_only)."""
    import random

    import numpy as np

    np_state = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {"keys": torch.from_numpy(np_state[1].astype("int64")), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "gauss": float(np_state[4])},
        "python": list(random.getstate()[1]),
    }
    if torch.cuda.is_available():
        state["cuda"] = [s for s in torch.cuda.get_rng_state_all()]
    return state


def set_rng_state(state: dict) -> None:
    import random

    import numpy as np

    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype("uint32"), n["pos"],
                         n["has_gauss"], n["gauss"]))
    random.setstate((3, tuple(state["python"]), None))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


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
    fsync_dir(folder)
    journal.unlink()
    fsync_dir(folder)


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
