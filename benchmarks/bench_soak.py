"""Soak test of the training loop: does process memory stay flat over a long run?

    python benchmarks/bench_soak.py [--iterations 2000] [--quick] [--model unpaired_revgan]
                                    [--out benchmarks/results/soak.json] [--overwrite]

Runs a real training (``revgan.train.loop.Trainer``, in this process) on a tiny demo dataset for
many epochs, with periodic checkpoints, the HTML page, TensorBoard logging and validation on,
and samples the resident set size (``/proc/self/statm``) and the live glibc heap
(``revgan.engine.memory.heap_bytes``) every few iterations by wrapping the model's
``optimize``. Reports
memory after warm-up and at the end, the growth per 1000 iterations and a least-squares slope
after warm-up (target: flat). Prints a table and writes JSON with every sample.

The warm-up is fixed before the run (``--warmup``, recorded in the JSON) and the verdict
always uses it: choosing it after seeing the samples would let any curve pass.
``--from_json`` recomputes a summary with the warm-up that run recorded, never another one.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch: see revgan/__init__.py

import argparse  # noqa: E402
import contextlib  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import resource  # noqa: E402
import shutil  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
from harness import machine_info, output_paths, publish  # noqa: E402

from revgan.cli.options import parse_options  # noqa: E402
from revgan.demo.scenes import make_demo_dataset  # noqa: E402
from revgan.engine.memory import has_heap_counter, heap_bytes  # noqa: E402
from revgan.errors import UserError, exits_cleanly  # noqa: E402
from revgan.train import distributed  # noqa: E402
from revgan.train.loop import Trainer  # noqa: E402

MB = 2.0**20
PAGE = os.sysconf("SC_PAGE_SIZE")
RESULTS = Path(__file__).resolve().parent / "results"


def rss_bytes() -> int:
    """Resident set size of this process (second field of /proc/self/statm, in pages)."""
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * PAGE


def _loadavg() -> list[float] | None:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


class MemorySampler:
    """Wraps ``model.optimize`` to record (iteration, seconds, RSS, heap) every ``every`` calls."""

    def __init__(self, model, every: int):
        self.every = every
        self.iterations = 0
        self.t0 = time.perf_counter()
        self.samples: list[dict] = []
        self._optimize = model.optimize
        model.optimize = self._wrapped  # instance attribute: shadows the method, code untouched
        self.sample()

    def sample(self) -> None:
        self.samples.append({"iteration": self.iterations,
                             "time_s": round(time.perf_counter() - self.t0, 3),
                             "rss_bytes": rss_bytes(),
                             "heap_bytes": heap_bytes() if has_heap_counter() else None})

    def _wrapped(self) -> None:
        self._optimize()
        self.iterations += 1
        if self.iterations % self.every == 0:
            self.sample()


def _slope_per_1000(its: list[int], values: list[float]) -> float | None:
    if len(its) < 3 or len(set(its)) < 2:
        return None
    return float(np.polyfit(np.asarray(its, float), np.asarray(values, float), 1)[0] * 1000)


def summarize(samples: list[dict], warmup: int) -> dict:
    """Memory at warm-up and at the end, growth and fitted slope, for RSS and heap (MB)."""
    after = [s for s in samples if s["iteration"] >= warmup]
    if len(after) < 2:
        raise UserError(f"too few samples after the warm-up of {warmup} iterations; "
                        "lower --warmup or --sample_every, or raise --iterations")
    first, last = after[0], after[-1]
    span = last["iteration"] - first["iteration"]
    out = {"warmup_iteration": first["iteration"], "end_iteration": last["iteration"],
           "samples_after_warmup": len(after)}
    for key in ("rss", "heap"):
        if first[f"{key}_bytes"] is None:
            continue
        series = [s[f"{key}_bytes"] / MB for s in after]
        growth = series[-1] - series[0]
        out[key] = {
            "start_mb": samples[0][f"{key}_bytes"] / MB,
            "warmup_mb": series[0], "end_mb": series[-1], "growth_mb": growth,
            "mb_per_1000_iterations": growth / span * 1000 if span else None,
            "fit_slope_mb_per_1000_iterations": _slope_per_1000(
                [s["iteration"] for s in after], series),
            "max_minus_min_mb": max(series) - min(series),
        }
    return out


def epoch_split(iterations: int, n_train: int) -> tuple[int, int, int]:
    epochs = max(2, math.ceil(iterations / n_train))
    n_epochs = (epochs + 1) // 2
    return n_epochs, epochs - n_epochs, epochs * n_train


def train_options(args: argparse.Namespace, dataroot: Path, work: Path) -> tuple[list[str], dict]:
    n_epochs, n_decay, iterations = epoch_split(args.iterations, args.n_train)
    epochs = n_epochs + n_decay
    # epoch checkpoints and validation about every --checkpoint_every iterations, as a long
    # real run would have them; plus the iteration-based "latest" checkpoint
    every_epochs = max(1, round(args.checkpoint_every / args.n_train))
    argv = ["--dataroot", str(dataroot), "--name", "soak", "--model", args.model,
            "--netG", args.netG, "--ngf", str(args.ngf), "--ndf", str(args.ngf),
            "--n_epochs", str(n_epochs), "--n_epochs_decay", str(n_decay),
            "--gpu_ids", "-1", "--num_threads", "0", "--preprocess", "none",
            "--checkpoints_dir", str(work / "checkpoints"), "--no_progress",
            "--print_freq", str(args.print_freq), "--display_freq", str(args.display_freq),
            "--save_latest_freq", str(args.checkpoint_every),
            "--save_epoch_freq", str(every_epochs),
            "--val_freq", str(every_epochs), "--val_size", "2"]
    settings = {"model": args.model, "netG": args.netG, "size": args.size, "ngf": args.ngf,
                "n_train": args.n_train, "epochs": epochs, "iterations": iterations,
                "checkpoint_every_iterations": args.checkpoint_every,
                "epoch_checkpoint_and_validation_every_epochs": every_epochs,
                "display_freq": args.display_freq, "print_freq": args.print_freq,
                "warmup": args.warmup, "sample_every": args.sample_every,
                "threads": args.threads, "html": True, "tensorboard": True}
    return argv, settings


def run(args: argparse.Namespace, log=print) -> dict:
    torch.set_num_threads(args.threads)
    keep = args.work_dir is not None
    work = Path(args.work_dir) if keep else Path(tempfile.mkdtemp(prefix="revgan_soak_"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        data = make_demo_dataset(work / "data", size=args.size, n_train=args.n_train,
                                 n_test=2, n_val=2, seed=0)
        split = "paired" if args.model in ("paired_revgan", "pix2pix") else "unpaired"
        argv, settings = train_options(args, Path(data[split]), work)
        opt = parse_options(argv, is_train=True)
        results = {"benchmark": "soak", "machine": machine_info(torch.device("cpu")),
                   "loadavg_start": _loadavg(), "settings": settings, "argv": argv}
        log(f"soak: {settings['iterations']} iterations of {args.model} ({args.netG}, "
            f"{args.size}px, ngf {args.ngf}) over {settings['epochs']} epochs in {work}")
        logfile = work / "train.log"
        with logfile.open("w") as fh, contextlib.redirect_stdout(fh):
            trainer = Trainer(opt)
            sampler = MemorySampler(trainer.model, args.sample_every)
            t0 = time.perf_counter()
            try:
                trainer.run()
            finally:
                distributed.teardown(trainer.dist)
            elapsed = time.perf_counter() - t0
        if sampler.samples[-1]["iteration"] != sampler.iterations:
            sampler.sample()
        run_dir = work / "checkpoints" / "soak"
        results.update({
            "iterations_run": sampler.iterations, "train_time_s": elapsed,
            "s_per_iteration": elapsed / max(1, sampler.iterations),
            "max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "outputs": {
                "checkpoint_files": len(list(run_dir.glob("*_net_*"))),
                "tensorboard_event_files": len(list(run_dir.rglob("events.out.tfevents*"))),
                "html_page": (run_dir / "web" / "index.html").is_file(),
                "loss_log_lines": sum(1 for _ in (run_dir / "loss_log.txt").open()),
            },
            "summary": summarize(sampler.samples, args.warmup),
            "samples": sampler.samples, "loadavg_end": _loadavg()})
    finally:
        if not keep:
            shutil.rmtree(work, ignore_errors=True)
    set_target(results, args.max_slope)
    return results


def set_target(results: dict, max_slope: float) -> None:
    slope = results["summary"]["rss"]["fit_slope_mb_per_1000_iterations"]
    results["target"] = {"max_rss_slope_mb_per_1000_iterations": max_slope,
                         "status": "PASS" if slope is not None and abs(slope) <= max_slope
                         else "MISS"}


def run_warmup(results: dict) -> int:
    """The warm-up a result's run was started with. (Files written before the warm-up was
    fixed kept the run's own value under ``resummarized.previous_warmup``.)"""
    earlier = results.get("resummarized", {}).get("previous_warmup")
    return int(earlier if earlier is not None else results["settings"]["warmup"])


def resummarize(path: Path, max_slope: float) -> dict:
    """An earlier result with its summary and verdict recomputed from its samples, at the
    warm-up its run was started with."""
    try:
        results = json.loads(Path(path).read_text())
        samples = results["samples"]
        warmup = run_warmup(results)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise UserError(f"cannot read soak samples from {path}: {exc}")
    results.pop("resummarized", None)
    results["settings"]["warmup"] = warmup
    results["summary"] = summarize(samples, warmup)
    set_target(results, max_slope)
    return results


def _f(value, spec: str = ".1f") -> str:
    return "n/a" if value is None else format(value, spec)


def markdown(results: dict) -> str:
    s, summ = results["settings"], results["summary"]
    lines = [f"### Soak: {results['iterations_run']} training iterations of {s['model']} "
             f"({s['netG']}, {s['size']}px, ngf {s['ngf']}, {s['n_train']} images, "
             f"{s['epochs']} epochs)", "",
             "| memory (MB) | after set-up | at warm-up (it "
             f"{summ['warmup_iteration']}) | at end (it {summ['end_iteration']}) | growth | "
             "MB / 1000 it | fit slope MB / 1000 it | max − min after warm-up |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for key, label in (("rss", "RSS (/proc/self/statm)"), ("heap", "glibc heap (mallinfo2)")):
        if key in summ:
            m = summ[key]
            lines.append(f"| {label} | {m['start_mb']:.1f} | {m['warmup_mb']:.1f} | "
                         f"{m['end_mb']:.1f} | {m['growth_mb']:+.2f} | "
                         f"{_f(m['mb_per_1000_iterations'], '+.2f')} | "
                         f"{_f(m['fit_slope_mb_per_1000_iterations'], '+.2f')} | "
                         f"{m['max_minus_min_mb']:.2f} |")
    out = results["outputs"]
    t = results["target"]
    bound = t["max_rss_slope_mb_per_1000_iterations"]
    lines += ["", f"Target: RSS slope after the warm-up of {s['warmup']} iterations (fixed "
              f"before the run) within ±{bound} MB / 1000 iterations: "
              f"**{t['status']}**. Peak RSS {results['max_rss_mb']:.0f} MB; "
              f"{results['train_time_s']:.0f} s ({results['s_per_iteration']:.3f} s/iteration); "
              f"wrote {out['checkpoint_files']} weight files, "
              f"{out['tensorboard_event_files']} TensorBoard event file(s), "
              f"{out['loss_log_lines']} loss-log lines, HTML page: {out['html_page']}."]
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--iterations", type=int, default=2000, help="training images in all")
    p.add_argument("--model", default="unpaired_revgan",
                   choices=("unpaired_revgan", "paired_revgan", "cycle_gan", "pix2pix"))
    p.add_argument("--netG", default="resnet_2blocks")
    p.add_argument("--size", type=int, default=32, help="demo image size")
    p.add_argument("--ngf", type=int, default=8)
    p.add_argument("--n_train", type=int, default=8, help="training images (many epochs)")
    p.add_argument("--warmup", type=int, default=None,
                   help="iterations before the fit, fixed before the run and recorded in the "
                        "JSON (default 500: past the first checkpoint and validation, whose "
                        "first run allocates lasting buffers); not allowed with --from_json")
    p.add_argument("--sample_every", type=int, default=20, help="iterations between samples")
    p.add_argument("--checkpoint_every", type=int, default=250,
                   help="iterations between checkpoints (and epoch checkpoints/validation)")
    p.add_argument("--display_freq", type=int, default=100)
    p.add_argument("--print_freq", type=int, default=20)
    p.add_argument("--max_slope", type=float, default=2.0,
                   help="largest |RSS slope| after warm-up counted as flat, MB / 1000 iterations")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--quick", action="store_true",
                   help="smoke run: 40 iterations, warm-up 8, a sample every 4")
    p.add_argument("--work_dir", default=None,
                   help="keep the run here (default: a temporary folder, removed)")
    p.add_argument("--out", default=None, help="JSON path (default benchmarks/results/soak.json, "
                                               "soak_quick.json with --quick); .md beside it")
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--from_json", default=None,
                   help="no training: re-summarise the samples of an earlier result at the "
                        "warm-up its run recorded, with this --max_slope (writes --out)")
    return p


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    args = build_parser().parse_args(argv)
    if args.from_json and args.warmup is not None:
        raise UserError("--from_json uses the warm-up its run recorded; a warm-up chosen "
                        "after seeing the samples is not a measurement (drop --warmup)")
    if args.quick:
        args.iterations, args.warmup, args.sample_every = 40, 8, 4
        args.checkpoint_every, args.display_freq, args.print_freq = 16, 10, 10
    if args.warmup is None:
        args.warmup = 500
    for key in ("iterations", "size", "ngf", "n_train", "sample_every", "checkpoint_every",
                "display_freq", "print_freq", "threads"):
        if getattr(args, key) < 1:
            raise UserError(f"--{key} must be at least 1, got {getattr(args, key)}")
    if args.warmup < 0 or (args.warmup >= args.iterations and not args.from_json):
        raise UserError(f"--warmup must be in [0, --iterations), got {args.warmup}")
    return args


@exits_cleanly
def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    default = RESULTS / ("soak_quick.json" if args.quick else "soak.json")
    out, report = output_paths(args.out, default, args.overwrite)
    if args.from_json:
        results = resummarize(Path(args.from_json), args.max_slope)
    else:
        results = run(args, log=lambda msg: print(msg, file=sys.stderr, flush=True))
    return publish(results, markdown(results), out, report)


if __name__ == "__main__":
    main()
