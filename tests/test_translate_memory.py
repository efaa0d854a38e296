"""Full-volume translation: what grows with the volume size is the output-sized arrays only.

``translate_array`` keeps the input, MONAI's output accumulator (the output) and one
one-channel blend-weight map of the output's size; everything else (one window through the
network, MONAI's window buffers) must be the same at every volume size.
"""

from __future__ import annotations

import gc

import numpy as np
import torch

from revgan.engine.memory import PeakSampler, has_heap_counter, heap_bytes
from revgan.infer.windows import translate_array

MB = 2.0**20


def _memory_beyond_output_sized_arrays(net: torch.nn.Module, size: int) -> tuple[float, float]:
    """(peak, in-window) heap bytes of translating a size³ volume, above the heap before the
    call and beyond its two output-sized arrays (output and weight map), in MB. The in-window
    number is read inside the network call (exact); the peak is sampled (best of two)."""
    volume = np.random.default_rng(0).random((1, size, size, size), dtype=np.float32)
    peaks, in_window = [], []
    for _ in range(2):
        gc.collect()
        seen = []

        def fn(window: torch.Tensor, seen: list = seen) -> torch.Tensor:
            y = net(window)
            seen.append(heap_bytes())
            return y

        before = heap_bytes()
        with PeakSampler() as sampler, torch.no_grad():
            out = translate_array(fn, volume, "minmax", "minmax", 32, overlap=0.25)
        # the output buffer becomes the returned array: at the end it is counted once
        peaks.append(sampler.peak - before - 2 * out.nbytes)
        in_window.append(max(seen) - before - 2 * out.nbytes)
        del out
    return max(peaks) / MB, max(in_window) / MB


def test_translation_memory_beyond_output_sized_arrays_is_flat(require):
    require(has_heap_counter(), "needs glibc's mallinfo2 (Linux, glibc >= 2.33)")
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv3d(1, 8, 3, padding=1), torch.nn.ReLU(),
                              torch.nn.Conv3d(8, 1, 3, padding=1)).eval()
    _memory_beyond_output_sized_arrays(net, 48)  # first call: one-time allocations
    small_peak, small_window = _memory_beyond_output_sized_arrays(net, 48)  # 0.4 MB volume
    large_peak, large_window = _memory_beyond_output_sized_arrays(net, 80)  # 2 MB volume
    # One more output-sized array would add 1.6 MB between the two sizes.
    assert abs(large_window - small_window) < 0.1, (small_window, large_window)
    assert abs(large_peak - small_peak) < 0.75, (small_peak, large_peak)
