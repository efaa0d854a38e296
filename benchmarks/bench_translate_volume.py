"""Peak memory and time of full-volume translation with blended sliding windows.

Each volume size runs in its own subprocess (so allocations of one run cannot hide in the
next). Memory is reported ABOVE the input and output arrays: peak heap in use during
``translate_array`` minus the heap in use just before it (which holds the input) minus the
output's bytes. On CPU the heap is glibc's ``mallinfo2`` (main-arena bytes in use plus all
mmapped chunks; the mmap threshold is pinned at 128 KiB so every large tensor is an mmapped
chunk), sampled every millisecond in a thread, together with the resident set size (RSS,
an upper bound: it also holds freed memory the allocator kept, sampled during the first run).
Time comes from that first run, made before the mmap threshold is pinned (pinning makes every
large tensor an mmap/munmap, which is slow). On CUDA (``--device cuda``) the windows run on
the GPU and ``torch.cuda.max_memory_allocated`` is reported as well. Torch uses one thread
by default: on a shared 2-core machine, thread synchronisation otherwise dominates small
windows.

For comparison, the same volume is also translated as ONE window (``full`` rows), which is
what inference without sliding windows costs.

    python benchmarks/bench_translate_volume.py            # 128^3, 192^3, 256^3, window 64
    python benchmarks/bench_translate_volume.py --quick    # 64^3, 96^3, 128^3, window 32
    python benchmarks/bench_translate_volume.py --net rev  # revgan's edsrF_4 generator
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import platform
import resource
import subprocess
import sys
import threading
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results" / "translate_volume.json"
MB = 2**20


# --- memory probes ------------------------------------------------------------------------


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
        "fordblks", "keepcost")]


def _libc():
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallinfo2.restype = _MallInfo2
        return libc
    except (OSError, AttributeError):
        return None


LIBC = _libc()


def heap_in_use() -> int | None:
    if LIBC is None:
        return None
    info = LIBC.mallinfo2()
    return int(info.uordblks + info.hblkhd)


def rss_now() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * resource.getpagesize()


class PeakSampler(threading.Thread):
    def __init__(self, interval: float = 0.001, heap: bool = True):
        super().__init__(daemon=True)
        self.interval, self.heap, self._stop_event = interval, heap, threading.Event()
        self.peak_heap, self.peak_rss = heap_in_use() or 0, rss_now()

    def sample(self) -> None:
        if self.heap:
            self.peak_heap = max(self.peak_heap, heap_in_use() or 0)
        self.peak_rss = max(self.peak_rss, rss_now())

    def run(self) -> None:
        while not self._stop_event.is_set():
            self.sample()
            time.sleep(self.interval)

    def stop(self) -> tuple[int, int]:
        self._stop_event.set()
        self.join()
        self.sample()
        return self.peak_heap, self.peak_rss


# --- one measurement (subprocess) ---------------------------------------------------------


def build_net(kind: str, seed: int = 0):
    import torch
    from torch import nn

    torch.manual_seed(seed)
    if kind == "rev":
        from revgan.networks import define_rev_G

        net = define_rev_G("edsrF_4", 1, 1, ngf=8, norm="instance", dims=3).eval()
        multiple = int(getattr(net, "size_divisor", 2))

        def fn(t):
            return net(t, direction="AtoB")
    else:
        net = nn.Sequential(nn.Conv3d(1, 8, 3, padding=1), nn.ReLU(),
                            nn.Conv3d(8, 8, 3, padding=1), nn.ReLU(),
                            nn.Conv3d(8, 1, 3, padding=1), nn.Tanh()).eval()
        multiple, fn = 1, net
    return net, fn, multiple


def worker(args: argparse.Namespace) -> dict:
    import numpy as np
    import torch

    from revgan.infer.windows import translate_array

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    net, fn, multiple = build_net(args.net)
    net.to(device)
    size = args.size
    window = size if args.mode == "full" else args.window
    # Warm-up (lazy imports, kernel set-up): one-off costs, not per-volume ones.
    warm = min(window, 16)
    translate_array(fn, np.zeros((1, warm, warm, warm), np.float32), "minmax", "minmax",
                    warm, multiple=multiple, device=device)
    rng = np.random.default_rng(0)
    volume = (rng.standard_normal((1, size, size, size), dtype=np.float32) * 200 + 300)
    def translate():
        return translate_array(fn, volume, "minmax", "minmax", window, overlap=args.overlap,
                               multiple=multiple, device=device)

    gc.collect()
    base_rss = rss_now()
    rss_sampler = PeakSampler(heap=False)
    rss_sampler.start()
    start = time.perf_counter()
    out = translate()
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    extra_rss = rss_sampler.stop()[1] - base_rss - out.nbytes
    del out
    if LIBC is not None:
        LIBC.mallopt(-3, 128 * 1024)  # M_MMAP_THRESHOLD: fixed, so large blocks are counted
    gc.collect()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    base_heap = heap_in_use()
    sampler = PeakSampler()
    sampler.start()
    out = translate()
    peak_heap = sampler.stop()[0]
    result = {
        "size": size, "mode": args.mode, "window": window, "overlap": args.overlap,
        "net": args.net, "device": str(device), "seconds": round(seconds, 3),
        "volume_mb": round(volume.nbytes / MB, 2), "output_mb": round(out.nbytes / MB, 2),
        "extra_heap_mb": (round((peak_heap - base_heap - out.nbytes) / MB, 1)
                          if base_heap is not None else None),
        "extra_rss_mb": round(extra_rss / MB, 1),
    }
    if result["extra_heap_mb"] is not None:
        result["extra_per_volume"] = round(result["extra_heap_mb"] / result["volume_mb"], 2)
    if device.type == "cuda":
        result["cuda_peak_mb"] = round(torch.cuda.max_memory_allocated() / MB, 1)
    return result


# --- driver ---------------------------------------------------------------------------------


def run_one(args: argparse.Namespace, size: int, mode: str) -> dict:
    cmd = [sys.executable, __file__, "--worker", "--size", str(size), "--mode", mode,
           "--window", str(args.window), "--overlap", str(args.overlap), "--net", args.net,
           "--device", args.device, "--threads", str(args.threads)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"worker failed for {mode} {size}^3:\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def table(rows: list[dict]) -> str:
    head = (f"{'size':>6} {'mode':>7} {'window':>6} {'time s':>7} {'volume MB':>9} "
            f"{'extra heap MB':>13} {'x volume':>8} {'extra RSS MB':>12}")
    if any("cuda_peak_mb" in r for r in rows):
        head += f" {'CUDA peak MB':>12}"
    lines = [head, "-" * len(head)]
    for r in rows:
        line = (f"{r['size']:>5}³ {r['mode']:>7} {r['window']:>6} {r['seconds']:>7.2f} "
                f"{r['volume_mb']:>9.1f} {str(r['extra_heap_mb']):>13} "
                f"{str(r.get('extra_per_volume')):>8} {r['extra_rss_mb']:>12.1f}")
        if "cuda_peak_mb" in r:
            line += f" {r['cuda_peak_mb']:>12.1f}"
        lines.append(line)
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="64³, 96³, 128³ with window 32")
    parser.add_argument("--sizes", type=int, nargs="+", default=None)
    parser.add_argument("--window", type=int, default=None)
    parser.add_argument("--overlap", type=float, default=0.25)
    parser.add_argument("--net", choices=("tiny", "rev"), default="tiny",
                        help="tiny Conv3d stack (fast) or revgan's edsrF_4 3D generator")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (0: torch default; 1 is stable on a busy machine)")
    parser.add_argument("--no-full", action="store_true", help="skip one-window comparison")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--size", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--mode", choices=("window", "full"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.worker:
        print(json.dumps(worker(args)))
        return
    sizes = args.sizes or ([64, 96, 128] if args.quick else [128, 192, 256])
    args.window = args.window or (32 if args.quick else 64)
    rows = []
    for size in sizes:
        for mode in ("window",) if args.no_full else ("window", "full"):
            rows.append(run_one(args, size, mode))
            print(f"  done {mode} {size}³ in {rows[-1]['seconds']:.1f}s", file=sys.stderr)
    print(table(rows))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"benchmark": "translate_volume", "quick": args.quick, "window": args.window,
            "overlap": args.overlap, "net": args.net, "device": args.device,
            "python": platform.python_version(), "machine": platform.machine(),
            "memory": "extra = peak heap during translate_array - heap before - output bytes"}
    args.out.write_text(json.dumps({**meta, "rows": rows}, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
