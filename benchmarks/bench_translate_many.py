"""Resident memory of ``revgan translate`` over a folder of many files: does it stay flat?

    python benchmarks/bench_translate_many.py              # 1000 images (64²) and 50 volumes (32³)
    python benchmarks/bench_translate_many.py --quick      # 100 images, 10 volumes
    python benchmarks/bench_translate_many.py --files 1000 --volumes 0 --overwrite

Trains a tiny 2D run (and a tiny 3D run) on generated data, writes the input folder, then runs
the real command line (``revgan translate``) in a subprocess and samples its resident set
size (``VmRSS`` in ``/proc/<pid>/status``) every ``--interval`` seconds together with the
number of outputs already in the output folder. Reported per case: RSS once 10% of the files
are done (the warm-up, fixed before the run), at 50% and at the end, the peak, the growth from
10% to the end, and a least-squares slope over the samples after the warm-up (MB per 100
files). Target: growth ≤ ``--max_growth_mb`` (16 MB): memory flat in the number of files.
Prints a markdown table and writes ``benchmarks/results/translate_many.{json,md}``.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch: see revgan/__init__.py

import argparse  # noqa: E402
import json  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
from harness import machine_info, prepare_output, write_text  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
CLI = [sys.executable, "-c", "from revgan.cli.main import main; main()"]
WARMUP_FRACTION = 0.1


def _cli(*args, log: Path) -> None:
    with open(log, "a") as out:
        subprocess.run([*CLI, *map(str, args)], check=True, stdout=out, stderr=subprocess.STDOUT)


def train_2d(work: Path) -> Path:
    from revgan.demo.scenes import make_demo_dataset

    data = make_demo_dataset(work / "demo2d", size=32, n_train=4, n_test=1, n_val=1)
    _cli("train", "--dataroot", data["unpaired"], "--name", "run2d", "--checkpoints_dir",
         work / "ck", "--model", "unpaired_revgan", "--netG", "resnet_2blocks", "--ngf", "8",
         "--ndf", "8", "--load_size", "36", "--crop_size", "32", "--n_epochs", "1",
         "--n_epochs_decay", "0", "--num_threads", "0", "--no_progress", "--gpu_ids", "-1",
         log=work / "train.log")
    return work / "ck" / "run2d"


def train_3d(work: Path) -> Path:
    from revgan.demo.volumes import make_demo_volumes

    volumes = make_demo_volumes(work / "demo3d", n_train=2, n_test=1, shape=(24, 24, 24))
    _cli("train", "--dataroot", volumes["root"], "--name", "run3d", "--checkpoints_dir",
         work / "ck", "--model", "paired_revgan3d", "--netG", "edsrF_2", "--ngf", "4", "--ndf",
         "4", "--patch_size", "16", "--samples_per_volume", "1", "--n_epochs", "1",
         "--n_epochs_decay", "0", "--num_threads", "0", "--no_progress", "--gpu_ids", "-1",
         log=work / "train.log")
    return work / "ck" / "run3d"


def make_images(folder: Path, count: int, size: int) -> None:
    from PIL import Image

    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(count):
        # smooth random scenes: a coarse grid upsampled, so PNG sizes are realistic
        coarse = rng.integers(0, 256, (size // 8, size // 8, 3), dtype=np.uint8)
        Image.fromarray(coarse).resize((size, size), Image.BILINEAR).save(folder / f"{i:05d}.png")


def make_volumes(folder: Path, count: int, size: int) -> None:
    import nibabel as nib

    folder.mkdir(parents=True)
    rng = np.random.default_rng(1)
    for i in range(count):
        coarse = rng.normal(size=(size // 4,) * 3).astype(np.float32)
        volume = coarse.repeat(4, 0).repeat(4, 1).repeat(4, 2) * 200 + 300
        nib.save(nib.Nifti1Image(volume, np.eye(4)), str(folder / f"case_{i:03d}.nii.gz"))


def _rss_mb(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def _done(folder: Path) -> int:
    try:
        return sum(1 for entry in os.scandir(folder) if not entry.name.startswith("."))
    except FileNotFoundError:
        return 0


def sample_translation(run: Path, inputs: Path, outputs: Path, interval: float) -> dict:
    """Run ``revgan translate`` on a folder; sample (seconds, outputs done, RSS MB)."""
    start = time.perf_counter()
    process = subprocess.Popen([*CLI, "translate", "--model_dir", str(run), "--input",
                                str(inputs), "--output", str(outputs), "--gpu_ids", "-1",
                                "--no_progress"], stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    samples: list[tuple[float, int, float]] = []
    while process.poll() is None:
        rss = _rss_mb(process.pid)
        if rss is not None:
            samples.append((time.perf_counter() - start, _done(outputs), rss))
        time.sleep(interval)
    log = process.stdout.read() if process.stdout else ""
    if process.returncode != 0:
        raise SystemExit(f"revgan translate failed ({process.returncode}):\n{log[-3000:]}")
    return {"seconds": time.perf_counter() - start, "samples": samples, "log": log.strip()}


def summarize(samples: list[tuple[float, int, float]], files: int) -> dict:
    """RSS at fixed fractions of the files done, growth after the warm-up and its slope."""
    def rss_at(fraction: float) -> float:
        need = max(1, int(round(fraction * files)))
        return next(rss for _, done, rss in samples if done >= need)

    warm = max(1, int(round(WARMUP_FRACTION * files)))
    after = [(done, rss) for _, done, rss in samples if done >= warm]
    # the last sample with every file written (the process may exit before another sample)
    end = max((s for s in samples if s[1] == max(x[1] for x in samples)), key=lambda s: s[0])
    slope = 0.0
    if len({d for d, _ in after}) > 1:
        slope = float(np.polyfit([d for d, _ in after], [r for _, r in after], 1)[0]) * 100
    return {"rss_first_mb": rss_at(1 / files), "rss_warm_mb": rss_at(WARMUP_FRACTION),
            "rss_half_mb": rss_at(0.5), "rss_end_mb": end[2], "files_at_end": end[1],
            "rss_peak_mb": max(r for _, _, r in samples),
            "growth_after_warmup_mb": end[2] - rss_at(WARMUP_FRACTION),
            "slope_mb_per_100_files": slope, "n_samples": len(samples)}


def run_case(name: str, run: Path, inputs: Path, outputs: Path, files: int,
             interval: float, max_growth: float) -> dict:
    print(f"translating {files} {name} ...", flush=True)
    measured = sample_translation(run, inputs, outputs, interval)
    written = _done(outputs)
    if written != files:
        raise SystemExit(f"{name}: expected {files} outputs, found {written}")
    summary = summarize(measured["samples"], files)
    summary.update(case=name, files=files, seconds=round(measured["seconds"], 2),
                   files_per_s=round(files / measured["seconds"], 2),
                   max_growth_mb=max_growth,
                   verdict="PASS" if summary["growth_after_warmup_mb"] <= max_growth else "MISS",
                   samples=measured["samples"])
    return summary


def markdown(results: dict) -> str:
    head = ("| case | files | s | RSS at 1st file | at 10% | at 50% | at end | peak | "
            "growth 10%→end | slope per 100 files | target |\n"
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|\n")
    rows = "".join(
        f"| {c['case']} | {c['files']} | {c['seconds']:.1f} | {c['rss_first_mb']:.1f} | "
        f"{c['rss_warm_mb']:.1f} | {c['rss_half_mb']:.1f} | {c['rss_end_mb']:.1f} | "
        f"{c['rss_peak_mb']:.1f} | {c['growth_after_warmup_mb']:+.1f} | "
        f"{c['slope_mb_per_100_files']:+.2f} | {c['verdict']} (≤ {c['max_growth_mb']:g} MB) |\n"
        for c in results["cases"])
    info = results["machine"]
    return (f"# RSS of `revgan translate` over many files\n\n"
            f"`{results['command']}`\n\nMB of resident memory of the translate process "
            f"(sampled every {results['interval_s']} s); torch {info['torch']}, "
            f"{info['cpu']}, load average {results['loadavg']}.\n\n{head}{rows}")


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=1000, help="images to translate")
    parser.add_argument("--volumes", type=int, default=50, help="volumes (0: none)")
    parser.add_argument("--image_size", type=int, default=64)
    parser.add_argument("--volume_size", type=int, default=32)
    parser.add_argument("--interval", type=float, default=0.05, help="seconds between samples")
    parser.add_argument("--max_growth_mb", type=float, default=16.0)
    parser.add_argument("--quick", action="store_true", help="100 images, 10 volumes")
    parser.add_argument("--out", type=Path, default=RESULTS / "translate_many.json")
    parser.add_argument("--report", type=Path, default=None,
                        help="markdown report (default: the JSON path with .md)")
    parser.add_argument("--overwrite", action="store_true")
    args = parser.parse_args(argv)
    if args.quick:
        args.files, args.volumes = 100, 10
    if args.files < 10 or args.volumes < 0:
        parser.error("--files must be at least 10 and --volumes at least 0")
    out = prepare_output(args.out, args.overwrite)
    report = prepare_output(args.report or out.with_suffix(".md"), args.overwrite)

    work = Path(tempfile.mkdtemp(prefix="revgan-translate-many-"))
    try:
        cases = []
        run2d = train_2d(work)
        make_images(work / "images", args.files, args.image_size)
        cases.append(run_case(f"images {args.image_size}² PNG", run2d, work / "images",
                              work / "images_out", args.files, args.interval,
                              args.max_growth_mb))
        if args.volumes:
            run3d = train_3d(work)
            make_volumes(work / "volumes", args.volumes, args.volume_size)
            cases.append(run_case(f"volumes {args.volume_size}³ NIfTI", run3d,
                                  work / "volumes", work / "volumes_out", args.volumes,
                                  args.interval, args.max_growth_mb))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    command = " ".join(["python benchmarks/bench_translate_many.py",
                        *(argv if argv is not None else sys.argv[1:])])
    for case in cases:  # seconds to the ms, RSS to the 0.1 MB: enough, and a small file
        case["samples"] = [(round(t, 3), done, round(rss, 1)) for t, done, rss in case["samples"]]
    results = {"command": command,
               "interval_s": args.interval, "warmup_fraction": WARMUP_FRACTION,
               "machine": machine_info(torch.device("cpu")),
               "loadavg": [round(v, 2) for v in os.getloadavg()], "cases": cases}
    text = markdown(results)
    print(text)
    write_text(out, json.dumps(results, indent=1) + "\n")
    write_text(report, text)
    return results


if __name__ == "__main__":
    main()
