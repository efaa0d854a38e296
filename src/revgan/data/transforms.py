"""2D preprocessing (resize, crop, flip) with torch only, and padding to a network's stride.

Preprocess modes follow pytorch-CycleGAN-and-pix2pix:
- ``resize_and_crop``: resize to load_size×load_size, then crop crop_size×crop_size;
- ``crop``: crop crop_size×crop_size from the image as it is;
- ``scale_width``: scale the width to load_size, keeping the aspect ratio (height at least
  crop_size);
- ``scale_width_and_crop``: scale_width, then crop crop_size×crop_size;
- ``none``: leave the image as it is. Unlike upstream we do not resample it to a multiple of 4
  (that would alter pixel values); inference pads with :func:`pad_to_multiple` instead.

Randomness: in training (``opt.isTrain``) the crop is random and the image is flipped
horizontally with probability 1/2 unless ``opt.no_flip``. At test time the crop is centred and
nothing is flipped (upstream crops at random even at test time; a centred crop makes test
results reproducible). Random draws use torch's global RNG, so ``torch.manual_seed`` makes a
run repeatable and DataLoader workers get distinct streams.

Parameters are drawn once by :func:`get_params` and can be applied to several images (both
halves of an aligned pair get the same crop and flip).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from revgan.config import RunConfig
from revgan.errors import UserError

PREPROCESS_MODES = ("resize_and_crop", "crop", "scale_width", "scale_width_and_crop", "none")
RESIZE_METHODS = ("bicubic", "bilinear", "nearest", "area")


def _options(opt: RunConfig) -> tuple[str, int, int, bool, bool]:
    preprocess = opt.preprocess
    if preprocess not in PREPROCESS_MODES:
        raise UserError(f"unknown --preprocess '{preprocess}'; choose one of "
                        f"{', '.join(PREPROCESS_MODES)}")
    load_size = opt.load_size
    crop_size = opt.crop_size
    if load_size < 1 or crop_size < 1:
        raise UserError(f"load_size and crop_size must be positive, got {load_size}, {crop_size}")
    is_train = opt.isTrain
    flip = is_train and not opt.no_flip
    return preprocess, load_size, crop_size, is_train, flip


def resized_size(opt: RunConfig, size_hw: tuple[int, int]) -> tuple[int, int]:
    """Height and width after the resize step of ``opt.preprocess`` (before cropping)."""
    preprocess, load_size, crop_size, _, _ = _options(opt)
    h, w = int(size_hw[0]), int(size_hw[1])
    if preprocess == "resize_and_crop":
        return load_size, load_size
    if preprocess.startswith("scale_width"):
        if w == load_size and h >= crop_size:
            return h, w
        return int(max(load_size * h / w, crop_size)), load_size
    return h, w


def get_params(opt: RunConfig, size_hw: tuple[int, int]) -> dict[str, Any]:
    """Draw the crop position and flip for an image of ``size_hw`` (H, W) before resizing.

    Returns ``{"resize": (h, w) or None, "crop": (top, left, size) or None, "flip": bool}``.
    """
    preprocess, _, crop_size, is_train, may_flip = _options(opt)
    h, w = resized_size(opt, size_hw)
    resize = (h, w) if (h, w) != tuple(int(s) for s in size_hw) else None
    crop = None
    if preprocess in ("resize_and_crop", "crop", "scale_width_and_crop"):
        if h < crop_size or w < crop_size:
            raise UserError(f"crop_size {crop_size} is larger than the image ({h}×{w} after "
                            f"'{preprocess}'); lower --crop_size or raise --load_size")
        if is_train:
            top = int(torch.randint(0, h - crop_size + 1, ()).item())
            left = int(torch.randint(0, w - crop_size + 1, ()).item())
        else:
            top, left = (h - crop_size) // 2, (w - crop_size) // 2
        crop = (top, left, crop_size)
    flip = bool(may_flip and torch.rand(()).item() < 0.5)
    return {"resize": resize, "crop": crop, "flip": flip}


def apply_transform(
    image: np.ndarray | torch.Tensor,
    opt: RunConfig,
    params: dict[str, Any] | None = None,
    method: str = "bicubic",
) -> torch.Tensor:
    """Resize, crop and flip a C×H×W image in [-1, 1] as drawn in ``params``.

    ``params=None`` draws fresh ones. Resampling overshoot (bicubic) is clamped to [-1, 1].
    """
    if method not in RESIZE_METHODS:
        raise UserError(f"unknown resize method '{method}'; choose one of "
                        f"{', '.join(RESIZE_METHODS)}")
    if isinstance(image, np.ndarray):
        image = np.ascontiguousarray(image)  # torch cannot wrap negative strides
    x = torch.as_tensor(image, dtype=torch.float32)
    if x.ndim != 3:
        raise UserError(f"expected a C×H×W image, got shape {tuple(x.shape)}")
    if params is None:
        params = get_params(opt, tuple(x.shape[-2:]))
    if params.get("resize") is not None:
        x = resize(x, params["resize"], method)
    if params.get("crop") is not None:
        top, left, size = params["crop"]
        if top + size > x.shape[-2] or left + size > x.shape[-1]:
            raise UserError(f"crop {size}×{size} at ({top}, {left}) does not fit an image of "
                            f"{x.shape[-2]}×{x.shape[-1]}")
        x = x[:, top:top + size, left:left + size]
    if params.get("flip"):
        x = torch.flip(x, dims=[-1])
    return x.contiguous()


def resize(x: torch.Tensor, size_hw: tuple[int, int], method: str = "bicubic") -> torch.Tensor:
    """Resize a C×H×W tensor; antialiased when shrinking with bilinear/bicubic."""
    size_hw = (int(size_hw[0]), int(size_hw[1]))
    if tuple(x.shape[-2:]) == size_hw:
        return x
    kwargs: dict[str, Any] = {}
    if method in ("bilinear", "bicubic"):
        kwargs = {"align_corners": False, "antialias": True}
    out = F.interpolate(x[None], size=size_hw, mode=method, **kwargs)[0]
    return out.clamp_(-1.0, 1.0) if method == "bicubic" else out


def pad_to_multiple(
    x: torch.Tensor, multiple: int, dims: int, mode: str = "reflect"
) -> tuple[torch.Tensor, tuple[slice, ...]]:
    """Pad the last ``dims`` axes of ``x`` up to a multiple of ``multiple``.

    Padding is split evenly before/after each axis. ``mode`` is "reflect" (falls back to
    "replicate" when an axis is too short to reflect) or "replicate". Returns the padded tensor
    and slices such that ``padded[slices]`` has the original shape. Works for N×C×H×W
    (dims=2) and N×C×D×H×W (dims=3), with or without the leading N.
    """
    if dims not in (2, 3):
        raise UserError(f"dims must be 2 or 3, got {dims}")
    if mode not in ("reflect", "replicate"):
        raise UserError(f"unknown padding mode '{mode}'")
    if multiple < 1:
        raise UserError(f"multiple must be positive, got {multiple}")
    if x.ndim < dims + 1:
        raise UserError(f"expected at least {dims + 1} axes for dims={dims}, got "
                        f"shape {tuple(x.shape)}")
    sizes = x.shape[-dims:]
    before, after = [], []
    for size in sizes:
        total = math.ceil(size / multiple) * multiple - size
        before.append(total // 2)
        after.append(total - total // 2)
    slices = (slice(None),) * (x.ndim - dims) + tuple(
        slice(b, b + s) for b, s in zip(before, sizes, strict=True)
    )
    if not any(before) and not any(after):
        return x, slices
    if mode == "reflect" and any(max(b, a) >= s for b, a, s in zip(before, after, sizes,
                                                                    strict=True)):
        mode = "replicate"
    # F.pad lists the last axis first; flattening the leading axes into one batch axis lets
    # reflect/replicate padding accept any number of them.
    pad = [p for b, a in zip(reversed(before), reversed(after), strict=True) for p in (b, a)]
    lead = tuple(x.shape[:-dims])
    y = F.pad(x.reshape((-1, 1) + tuple(sizes)), pad, mode=mode)
    return y.reshape(lead + tuple(y.shape[-dims:])), slices
