"""Measuring memory, not estimating it: live heap bytes on CPU, allocator peaks on CUDA."""

from __future__ import annotations

import ctypes
import ctypes.util
import threading
import time
from collections.abc import Callable

import torch


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks",
        "uordblks", "fordblks", "keepcost")]


_libc = None


def _mallinfo2():
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        _libc.mallinfo2.restype = _MallInfo2
    return _libc.mallinfo2()


def heap_bytes() -> int:
    """Bytes currently allocated through glibc malloc (heap chunks plus mmapped blocks).

    PyTorch's CPU allocator takes tensor storage straight from malloc, so differences of this
    number measure tensor memory exactly. Needs glibc (Linux).
    """
    info = _mallinfo2()
    return int(info.uordblks + info.hblkhd)


def has_heap_counter() -> bool:
    try:
        heap_bytes()
        return True
    except (OSError, AttributeError):
        return False


class PeakSampler:
    """Samples :func:`heap_bytes` from a thread to find the peak during a CPU computation.

    PyTorch releases the GIL inside its kernels, so the sampler runs alongside them; the
    result is a lower bound of the true peak, accurate to what one sample period misses.
    """

    def __init__(self, period_s: float = 2e-4):
        self.period_s = period_s
        self.peak = 0
        self._stop = threading.Event()

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._record(heap_bytes())
            time.sleep(self.period_s)

    def _record(self, heap: int) -> None:
        self.peak = max(self.peak, heap)

    def __enter__(self) -> PeakSampler:
        self.peak = heap_bytes()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, heap_bytes())


def peak_memory(fn: Callable[[], object], device: torch.device) -> tuple[int, object]:
    """Run ``fn`` and return (peak bytes above the level before it, fn's result).

    CUDA: ``torch.cuda.max_memory_allocated``; CPU: sampled glibc heap.
    """
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        result = fn()
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) - base, result
    base = heap_bytes()
    with PeakSampler() as sampler:
        result = fn()
    return sampler.peak - base, result
