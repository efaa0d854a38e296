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

Every commit records the sha256 of its files in ``<label>_sha256.json``, renamed into place
last. Loading checks the bytes it reads against it: a file changed on disk (a flipped bit, a
truncation) stops the load with one line. Readers never write: while a commit is in flight
they read what its journal names, so ``test`` and ``translate`` can run beside training.
If a commit fails for lack of space, its partial files are removed and the old one stays.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import time
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load, save
from torch import nn

from revgan.errors import UserError
from revgan.runs.atomic import (
    TEMP_SUFFIX,
    DiskFullError,
    atomic_write_bytes,
    atomic_write_text,
    fsync_dir,
)


def weights_path(folder: Path, label: str | int, net: str) -> Path:
    return Path(folder) / f"{label}_net_{net}.safetensors"


def state_path(folder: Path, label: str | int) -> Path:
    return Path(folder) / f"{label}_train_state.pt"


def manifest_path(folder: Path, label: str | int) -> Path:
    return Path(folder) / f"{label}_sha256.json"


def unwrap(net: nn.Module) -> nn.Module:
    """The plain module inside DistributedDataParallel or torch.compile wrappers."""
    net = getattr(net, "module", net)
    return getattr(net, "_orig_mod", net)


def network_bytes(net: nn.Module, config: dict) -> bytes:
    """Weights as safetensors; ``config`` (JSON) goes into the file's metadata."""
    tensors = {k: v.detach().cpu().contiguous().clone()
               for k, v in unwrap(net).state_dict().items()}
    return save(tensors, metadata={"revgan_config": json.dumps(config)})


def read_config(path: Path) -> dict:
    """The configuration stored with a weights file."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            meta = handle.metadata() or {}
    except (SafetensorError, OSError) as exc:
        raise UserError(f"{path} is not a readable safetensors checkpoint ({exc})")
    return json.loads(meta.get("revgan_config", "{}"))


def _not_found(path: Path) -> UserError:
    legacy = path.with_suffix(".pth")
    hint = f" (found {legacy.name}: pickled checkpoints are not loaded)" \
        if legacy.exists() else ""
    return UserError(f"checkpoint not found: {path}{hint}")


def load_network(path: Path, net: nn.Module, data: bytes | None = None) -> None:
    """Load weights (``data``, or the file's bytes) into ``net``; a file of another
    architecture is one clear error."""
    path = Path(path)
    if data is None:
        if not path.exists():
            raise _not_found(path)
        data = path.read_bytes()
    try:
        tensors = load(data)
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
    target.load_state_dict(tensors)  # copies into the parameters, on their own device


def load_training_state(path: Path, data: bytes | None = None) -> dict:
    """Tensors, numbers, strings and containers only: anything else is refused."""
    path = Path(path)
    if data is None:
        if not path.exists():
            raise UserError(f"training state not found: {path}")
        data = path.read_bytes()
    try:
        return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
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


def _pending(final: Path) -> Path:
    return final.with_name(f".{final.name}.pending")


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def commit_checkpoint(folder: Path, label: str, nets: dict[str, nn.Module], config: dict,
                      state: dict | None,
                      before_publish: Callable[[], None] | None = None) -> None:
    """Write ``<label>_net_<X>.safetensors`` for every net (and the training state) at once.

    ``before_publish`` runs once the journal is written, before the renames (a test hook).
    Only the process holding the run folder's lock commits.
    """
    folder.mkdir(parents=True, exist_ok=True)
    files: dict[Path, bytes] = {weights_path(folder, label, k): network_bytes(n, config)
                                for k, n in nets.items()}
    if state is not None:
        buffer = io.BytesIO()
        torch.save(state, buffer)
        files[state_path(folder, label)] = buffer.getvalue()
    digests = {final.name: _sha256(data) for final, data in files.items()}
    # the manifest is renamed last: until then the old files keep their old manifest
    files[manifest_path(folder, label)] = json.dumps({"sha256": digests}, indent=1).encode()
    renames: dict[str, str] = {}
    try:
        for final, data in files.items():
            temp = _pending(final)
            renames[temp.name] = final.name
            atomic_write_bytes(temp, data)
        atomic_write_text(_journal(folder, label),
                          json.dumps({"renames": renames, "sha256": digests}))
    except BaseException as exc:
        # journal first: a journal whose pending file is gone means "already renamed"
        _journal(folder, label).unlink(missing_ok=True)
        for temp in renames:
            (folder / temp).unlink(missing_ok=True)
        if isinstance(exc, DiskFullError):
            raise DiskFullError(f"no space left to save checkpoint '{label}' in {folder} "
                                f"({exc.__cause__.strerror if exc.__cause__ else exc}); the "
                                "previous checkpoint is kept and the partial files removed")\
                from exc
        raise
    if before_publish is not None:
        before_publish()
    _roll_forward(folder, label)


def _parse_journal(raw: bytes | None) -> dict | None:
    """``{"renames": {pending: final}, "sha256": {final: digest}}``; older journals held the
    renames alone."""
    if raw is None:
        return None
    try:
        journal = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(journal, dict):
        return None
    if "renames" not in journal:
        journal = {"renames": journal, "sha256": {}}
    return journal


def _roll_forward(folder: Path, label: str) -> None:
    journal = _journal(folder, label)
    if not journal.exists():
        return
    parsed = _parse_journal(journal.read_bytes())
    for temp, final in (parsed or {"renames": {}})["renames"].items():
        if (folder / temp).exists():
            os.replace(folder / temp, folder / final)
    fsync_dir(folder)
    journal.unlink()
    fsync_dir(folder)


def recover(folder: Path) -> None:
    """Finish any checkpoint commit interrupted after its journal was written; drop the rest
    (pending files and the temporary files of killed atomic writes). Writer only: call it
    holding the run folder's lock."""
    if not folder.is_dir():
        return
    for journal in folder.glob(".*.commit.json"):
        label = journal.name[1:].removesuffix(".commit.json")
        try:
            _roll_forward(folder, label)
        except (OSError, json.JSONDecodeError):
            journal.unlink(missing_ok=True)
    for leftover in [*folder.glob(".*.pending"), *folder.glob(f".*{TEMP_SUFFIX}")]:
        leftover.unlink(missing_ok=True)


def _read_or_none(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None


class CorruptCheckpoint(UserError):
    """A committed file whose bytes differ from the sha256 recorded with its commit."""


def read_committed(folder: Path, label: str, names: list[str]) -> dict[str, bytes]:
    """The bytes of the committed files ``names`` of checkpoint ``label``, each checked
    against the sha256 recorded with its commit. Never writes.

    A commit in flight is read through its journal (its pending files or, once renamed, the
    new files, checked against the journal's digests). A mismatch seen while the journal or
    manifest changed under us is a commit racing the read: read again. A mismatch that holds
    still is corruption.
    """
    manifest_file = manifest_path(folder, label)
    for _ in range(200):
        seen = (_read_or_none(_journal(folder, label)), _read_or_none(manifest_file))
        journal = _parse_journal(seen[0])
        expected: dict[str, str] = {}
        problem: UserError | None = None
        if seen[1] is not None:
            try:
                expected = dict(json.loads(seen[1])["sha256"])
            except (ValueError, KeyError, TypeError):
                problem = CorruptCheckpoint(
                    f"{manifest_file} is corrupted (not the checksum list written with the "
                    "commit); restore it, or resume from an earlier epoch's checkpoint")
        pending_of = {}
        if journal is not None:
            pending_of = {final: temp for temp, final in journal["renames"].items()}
            expected.update(journal["sha256"])
        found: dict[str, bytes] = {}
        for name in names if problem is None else []:
            data = None
            if name in pending_of:
                data = _read_or_none(folder / pending_of[name])
            if data is None:
                data = _read_or_none(folder / name)
            if data is None:
                problem = _not_found(folder / name) if name.endswith(".safetensors") else \
                    UserError(f"training state not found: {folder / name}")
                break
            if name in expected and _sha256(data) != expected[name]:
                problem = CorruptCheckpoint(
                    f"{folder / name} is corrupted: its sha256 differs from the one recorded "
                    f"when it was saved ({manifest_file.name}), so its bytes changed on disk "
                    "(a flipped bit or a truncation); restore it from a backup, or resume from "
                    "an earlier epoch's checkpoint")
                break
            found[name] = data
        if problem is None:
            return found
        if (_read_or_none(_journal(folder, label)), _read_or_none(manifest_file)) == seen:
            raise problem
        time.sleep(0.02)  # a commit moved on while we read: read again
    raise problem


def load_checkpoint(folder: Path, label: str, nets: dict[str, nn.Module],
                    device: torch.device, with_state: bool) -> dict | None:
    """Load checkpoint ``label`` into ``nets`` (and return its training state), every file
    checked against its recorded sha256. Reads only: a writer calls :func:`recover` first.

    The weights are copied into the networks' parameters, so they land on the networks'
    device; ``device`` is where the caller keeps them (kept for the callers' signature).
    """
    del device
    folder = Path(folder)
    names = [weights_path(folder, label, key).name for key in nets]
    if with_state:
        names.append(state_path(folder, label).name)
    found = read_committed(folder, str(label), names)
    for key, net in nets.items():
        path = weights_path(folder, label, key)
        load_network(path, net, found[path.name])
    if with_state:
        path = state_path(folder, label)
        return load_training_state(path, found[path.name])
    return None
