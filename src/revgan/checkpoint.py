"""Checkpoints: safetensors weights + JSON config, a separate training state, atomic writes.

A kill at any moment leaves the previous checkpoint intact: every file is written to a
temporary name, flushed with fsync and renamed over the old one. Loading never unpickles
arbitrary objects: weights are safetensors, the training state is read with
``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import tempfile
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save
from torch import nn

from .errors import UserError


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


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


