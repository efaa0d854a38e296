"""Progress bars (tqdm) that show losses and images per second."""

from __future__ import annotations

import sys

from tqdm.auto import tqdm


def progress_bar(total: int, desc: str, disable: bool = False, initial: int = 0,
                 unit: str = "img") -> tqdm:
    return tqdm(total=total, desc=desc, disable=disable, initial=initial, unit=unit,
                dynamic_ncols=True, file=sys.stderr, smoothing=0.1)
