"""Any network on inputs of any size: blended sliding windows.

The network sees fixed-size windows (so its memory does not grow with the input); windows
overlap and are blended with Gaussian weights by MONAI's ``sliding_window_inference``, which
normalises by the summed weights, so there are no seams and a constant offset stays
constant. Windows run on ``device`` while the full-size output and weight map stay on CPU
(or wherever ``output_device`` says).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from revgan.errors import UserError

Fn = Callable[[Tensor], Tensor]


def _per_dim(value: int | Sequence[int], n: int, what: str) -> tuple[int, ...]:
    values = (value,) * n if isinstance(value, int) else tuple(int(v) for v in value)
    if len(values) != n or any(v < 1 for v in values):
        raise UserError(f"{what} must be a positive integer or {n} of them, got {value}")
    return values


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def sliding_window_translate(
    fn: Fn,
    x: Tensor,
    window_size: int | Sequence[int],
    overlap: float = 0.5,
    mode: str = "gaussian",
    sw_batch_size: int = 1,
    device: torch.device | str | None = None,
    multiple: int = 1,
    output_device: torch.device | str | None = "cpu",
    progress: bool = False,
) -> Tensor:
    """Apply ``fn`` to ``x`` (N×C×spatial, 2D or 3D) window by window and blend the results.

    ``window_size`` must be a multiple of ``multiple`` (the network's total stride). Along an
    axis shorter than the window, the window shrinks to the axis rounded up to ``multiple``
    and the input is edge-padded to that and cropped back afterwards, so any input size works.
    ``fn`` runs under ``torch.no_grad`` on ``device`` (default: ``x``'s device); the blended
    output is accumulated on ``output_device``.
    """
    from monai.inferers import sliding_window_inference

    if x.ndim not in (4, 5):
        raise UserError(f"expected an N×C×H×W or N×C×D×H×W tensor, got shape {tuple(x.shape)}")
    if not 0.0 <= overlap < 1.0:
        raise UserError(f"overlap must be in [0, 1), got {overlap}")
    if multiple < 1:
        raise UserError(f"multiple must be at least 1, got {multiple}")
    spatial = tuple(x.shape[2:])
    window = _per_dim(window_size, len(spatial), "window size")
    bad = [w for w in window if w % multiple]
    if bad:
        raise UserError(f"window size {window} must be a multiple of {multiple} (the network's "
                        f"stride); try {tuple(_round_up(w, multiple) for w in window)}")
    # Shrink windows to short axes (rounded up to the stride), then pad those axes to fit.
    window = tuple(min(w, _round_up(s, multiple)) for w, s in zip(window, spatial))
    padded = tuple(max(s, w) for s, w in zip(spatial, window))
    if padded != spatial:
        pad: list[int] = []
        for s, p in reversed(list(zip(spatial, padded))):
            before = (p - s) // 2
            pad += [before, p - s - before]
        x = F.pad(x, pad, mode="replicate")
    device = torch.device(device) if device is not None else x.device
    output_device = torch.device(output_device) if output_device is not None else x.device

    def predictor(window_batch: Tensor) -> Tensor:
        # MONAI weights the predictor's output in place; an output that shares memory with
        # its input window (identity, views) would then corrupt the input being translated.
        y = fn(window_batch)
        if y.untyped_storage().data_ptr() == window_batch.untyped_storage().data_ptr():
            y = y.clone()
        return y

    with torch.no_grad():
        out = sliding_window_inference(
            x, roi_size=window, sw_batch_size=sw_batch_size, predictor=predictor, overlap=overlap,
            mode=mode, sw_device=device, device=output_device, progress=progress,
        )
    if hasattr(out, "as_tensor"):  # MONAI may hand back a MetaTensor
        out = out.as_tensor()
    if padded != spatial:
        crop = [slice(None), slice(None)]
        crop += [slice((p - s) // 2, (p - s) // 2 + s) for s, p in zip(spatial, padded)]
        out = out[tuple(crop)]
    return out
