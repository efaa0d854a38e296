"""Turn network tensors in [-1, 1] into 8-bit RGB pictures for pages and TensorBoard.

2D: ``C×H×W`` -> ``H×W×3``. 3D: ``C×D×H×W`` -> three orthogonal mid-slices (axial D-mid,
coronal H-mid, sagittal W-mid) side by side, each padded to a common height, with small gaps.
1 channel -> gray, 3 channels -> RGB, any other count -> first channel as gray.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from revgan.errors import UserError
from revgan.runs.atomic import atomic_path

GAP = 2  # pixels between the slices of a 3D montage
GAP_VALUE = 0  # black gaps/padding


def _rgb(t: Tensor) -> np.ndarray:
    """C×H×W float in [-1, 1] -> H×W×3 uint8."""
    if t.shape[0] == 3:
        chw = t
    else:
        chw = t[:1].expand(3, *t.shape[1:])
    x = ((chw.nan_to_num(0.0).clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return x.permute(1, 2, 0).contiguous().numpy()


def mid_slices(vol: Tensor) -> list[Tensor]:
    """Axial, coronal and sagittal mid-slices of a ``C×D×H×W`` volume, each ``C×·×·``."""
    _, d, h, w = vol.shape
    return [vol[:, d // 2], vol[:, :, h // 2], vol[:, :, :, w // 2]]


def montage(images: list[np.ndarray], gap: int = GAP) -> np.ndarray:
    """Place ``H_i×W_i×3`` uint8 pictures side by side, top-aligned, with ``gap`` px between."""
    height = max(im.shape[0] for im in images)
    width = sum(im.shape[1] for im in images) + gap * (len(images) - 1)
    out = np.full((height, width, 3), GAP_VALUE, dtype=np.uint8)
    x = 0
    for im in images:
        out[: im.shape[0], x : x + im.shape[1]] = im
        x += im.shape[1] + gap
    return out


def _single_item(t: Tensor, dims: int | None) -> Tensor:
    """Strip a batch dim so that ``t`` is ``C×H×W`` (2D) or ``C×D×H×W`` (3D)."""
    if dims is None:
        if t.dim() == 5:
            dims = 3
        elif t.dim() == 3:
            dims = 2
        elif t.dim() == 4:
            # 4D is either 1×C×H×W (a 2D batch of one) or C×D×H×W (one volume). Models emit
            # 2D images with 1 or 3 channels, and a volume of depth 1 or 3 is not a volume in
            # practice; pass ``dims`` to remove the guess.
            dims = 2 if t.shape[0] == 1 and t.shape[1] in (1, 3) else 3
        else:
            raise UserError(f"cannot display a tensor of shape {tuple(t.shape)}")
    if dims not in (2, 3):
        raise UserError(f"dims must be 2 or 3, got {dims}")
    if t.dim() == dims + 2:
        t = t[0]  # first item of a batch
    if t.dim() != dims + 1:
        raise UserError(f"cannot display a tensor of shape {tuple(t.shape)} as {dims}D")
    return t


def to_display(t: Tensor, dims: int | None = None) -> np.ndarray:
    """``C×H×W`` or ``C×D×H×W`` in [-1, 1] (a leading batch dim shows its first item)
    -> ``H×W×3`` uint8. ``dims`` (2 or 3) resolves 4D tensors; see :func:`_single_item`."""
    t = _single_item(t.detach().to("cpu", torch.float32), dims)
    if t.dim() == 3:
        return _rgb(t)
    return montage([_rgb(s) for s in mid_slices(t)])


def save_display_png(t: Tensor, path: Path | str, dims: int | None = None) -> Path:
    """Save :func:`to_display` of ``t`` as an 8-bit RGB PNG; returns the path."""
    path = Path(path)
    with atomic_path(path) as temp:  # a page being viewed never shows half an image
        Image.fromarray(to_display(t, dims)).save(temp, format="PNG")
    return path
