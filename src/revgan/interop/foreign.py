"""Reading foreign (pickled PyTorch) checkpoints safely and fitting them to a revgan network.

Only ``torch.load(weights_only=True)`` is used: a file that would need arbitrary objects
(code) to unpickle is refused, never executed.
"""

from __future__ import annotations

import pickle
import re
import warnings
from collections import OrderedDict
from pathlib import Path

import torch
from torch import Tensor, nn

from revgan.errors import UserError

StateDict = "OrderedDict[str, Tensor]"
CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d,
         nn.ConvTranspose3d)
INSTANCE_NORMS = (nn.InstanceNorm1d, nn.InstanceNorm2d, nn.InstanceNorm3d)
RUNNING_STATS = ("running_mean", "running_var", "num_batches_tracked")


def read_state_dict(path: Path) -> dict[str, Tensor]:
    """The tensors of a ``torch.save(net.state_dict())`` file, ``module.`` prefixes removed.

    Raises UserError (one line) for a missing file, a file that is not a PyTorch checkpoint,
    one whose unpickling would run code, or one that holds no state dict of tensors.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint not found: {path}")
    try:
        with warnings.catch_warnings():  # e.g. "pickle protocol 4": the error says what counts
            warnings.simplefilter("ignore")
            loaded = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        found = re.search(r"GLOBAL (\S+)", str(exc))
        detail = f"it asks for {found.group(1)}" if found else "unsafe content"
        raise UserError(f"refusing to load {path.name}: it holds objects other than tensors "
                        f"(unpickling it could run code; {detail})")
    except Exception as exc:  # noqa: BLE001 - arbitrary bytes fail anywhere in the unpickler
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"{path.name} is not a PyTorch checkpoint ({first[:100]})")
    if isinstance(loaded, dict) and "state_dict" in loaded and isinstance(
            loaded["state_dict"], dict):
        loaded = loaded["state_dict"]  # a wrapped state dict (Lightning-style); same tensors
    if not isinstance(loaded, dict) or not loaded or not all(
            isinstance(k, str) and isinstance(v, Tensor) for k, v in loaded.items()):
        raise UserError(f"{path.name} is not a network state dict (expected a mapping of "
                        "parameter names to tensors, as torch.save(net.state_dict()) writes)")
    return OrderedDict((k.removeprefix("module."), v) for k, v in loaded.items())


def _module_at(net: nn.Module, path: str) -> nn.Module | None:
    try:
        return net.get_submodule(path)
    except AttributeError:
        return None


def _followed_by_instance_norm(net: nn.Module, conv_path: str) -> bool:
    """Whether the conv at ``conv_path`` is directly followed (in its Sequential) by a
    non-affine instance norm, which subtracts the per-channel mean and so cancels a bias."""
    parent_path, _, index = conv_path.rpartition(".")
    parent = _module_at(net, parent_path) if parent_path else net
    if not isinstance(parent, nn.Sequential) or not index.isdigit():
        return False
    following = [m for m in list(parent)[int(index) + 1:] if not isinstance(m, nn.Dropout)]
    return bool(following) and isinstance(following[0], INSTANCE_NORMS) and \
        not following[0].affine


def fit_state_dict(foreign: dict[str, Tensor], net: nn.Module, what: str,
                   origin: dict[str, str] | None = None) -> tuple[dict[str, Tensor], list[str]]:
    """Match renamed foreign tensors to ``net``'s state dict; return it and notes.

    Dropped without effect on the output (each noted): convolution biases that a
    following non-affine instance norm cancels, and running statistics of instance norms
    (revgan's do not track them; the reference tested in training mode, where they are
    unused). Filled: ``num_batches_tracked`` that pre-0.4.1 files lack (unused in eval).
    Anything else that differs (a missing, extra or differently shaped tensor) is refused
    with one line naming the first such key (as the file names it: ``origin`` maps revgan's
    names back to "'<key>' of <file>").
    """
    origin = origin or {}

    def named(key: str) -> str:
        return origin.get(key, f"'{key}' of {what}")

    own = net.state_dict()
    fitted: dict[str, Tensor] = {}
    dropped_bias, dropped_stats = [], []
    for key, value in foreign.items():
        if key in own:
            if tuple(own[key].shape) != tuple(value.shape):
                raise UserError(f"architecture mismatch at {named(key)}: the file has shape "
                                f"{tuple(value.shape)}, revgan's network {tuple(own[key].shape)}")
            fitted[key] = value.to(own[key].dtype)
            continue
        owner_path, _, leaf = key.rpartition(".")
        owner = _module_at(net, owner_path)
        if leaf == "bias" and isinstance(owner, CONVS) and owner.bias is None and \
                _followed_by_instance_norm(net, owner_path):
            dropped_bias.append(key)
        elif leaf in RUNNING_STATS and isinstance(owner, INSTANCE_NORMS) and \
                not owner.track_running_stats:
            dropped_stats.append(key)
        else:
            raise UserError(f"architecture mismatch at {named(key)}: revgan's network has no "
                            "such tensor (check --netG, --norm, --no_dropout)")
    for key, value in own.items():
        if key in fitted:
            continue
        if key.endswith(".num_batches_tracked"):
            fitted[key] = torch.zeros_like(value)
            continue
        raise UserError(f"architecture mismatch: {what} lacks revgan's '{key}' (check --netG, "
                        "--norm, --no_dropout)")
    notes = []
    if dropped_bias:
        notes.append(f"{what}: dropped {len(dropped_bias)} convolution biases that the "
                     "following instance norm cancels (the output is unchanged)")
    if dropped_stats:
        notes.append(f"{what}: dropped {len(dropped_stats)} instance-norm running statistics "
                     "(unused: instance norm normalises each image by its own statistics)")
    return fitted, notes
