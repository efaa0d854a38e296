"""Translation quality of RevGAN against its baselines, the analogue of the paper's tables.

    python benchmarks/bench_quality.py [--iterations 2000] [--size 64] [--ngf 32] [--quick]
                                       [--models paired_revgan,pix2pix,...] [--threads 1]
                                       [--out benchmarks/results/quality.json] [--overwrite]

On the built-in demo dataset (street-scene labels -> photos, `revgan.demo.scenes`), trains
``paired_revgan`` and ``pix2pix`` on the paired split and ``unpaired_revgan`` and ``cycle_gan`` on
the unpaired split (trainA/trainB from different scenes) for the same number of training images
each, tests every model with ``revgan test --eval_metrics`` on the same test scenes (for the
unpaired models testA/testB are matching pairs, so ground-truth metrics exist) and prints one
table: A->B PSNR/SSIM/MAE against ground truth, cycle error, generator parameters, peak memory
of one training step and training time. Writes JSON (machine, settings, per-model results).
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch: see revgan/__init__.py

import argparse  # noqa: E402
import contextlib  # noqa: E402
import json  # noqa: E402
import shutil  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import traceback  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402
from harness import machine_info, prepare_output, write_text  # noqa: E402

from revgan.cli.main import main as revgan_main  # noqa: E402
from revgan.cli.options import parse_options  # noqa: E402
from revgan.data import create_dataset  # noqa: E402
from revgan.data.images import read_image  # noqa: E402
from revgan.demo.scenes import make_demo_dataset  # noqa: E402
from revgan.engine.memory import peak_memory  # noqa: E402
from revgan.errors import UserError, exits_cleanly  # noqa: E402
from revgan.models import create_model  # noqa: E402
from revgan.networks import count_parameters  # noqa: E402
from revgan.runs.checkpoints import load_checkpoint  # noqa: E402

# model -> (demo split it trains on, generator name pattern, has a B->A direction)
MODELS: dict[str, tuple[str, str, bool]] = {
    "paired_revgan": ("paired", "resnet_{depth}blocks", True),
    "pix2pix": ("paired", "unet_{size}", False),
    "unpaired_revgan": ("unpaired", "resnet_{depth}blocks", True),
    "cycle_gan": ("unpaired", "resnet_{depth}blocks", True),
}
# the paper's comparison pairs: (RevGAN model, its baseline)
COMPARISONS = (("paired_revgan", "pix2pix"), ("unpaired_revgan", "cycle_gan"))
MB = 2.0**20
RESULTS = Path(__file__).resolve().parent / "results"


def _loadavg() -> list[float] | None:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


def epoch_split(iterations: int, n_train: int) -> tuple[int, int, int]:
    """(n_epochs, n_epochs_decay, actual iterations): constant LR for half, decay for half."""
    epochs = max(2, round(iterations / n_train))
    n_epochs = (epochs + 1) // 2
    return n_epochs, epochs - n_epochs, epochs * n_train


def arch_argv(model: str, s: dict) -> list[str]:
    """The architecture flags, identical for training, testing and parameter counts."""
    netG = MODELS[model][1].format(depth=s["depth"], size=s["size"])
    return ["--netG", netG, "--ngf", str(s["ngf"]), "--ndf", str(s["ndf"])]


def train_argv(model: str, dataroot: Path, s: dict, work: Path) -> list[str]:
    return ["--dataroot", str(dataroot), "--name", model, "--model", model,
            *arch_argv(model, s),
            "--n_epochs", str(s["n_epochs"]), "--n_epochs_decay", str(s["n_epochs_decay"]),
            "--lr", str(s["lr"]), "--seed", str(s["seed"]),
            "--gpu_ids", "-1", "--num_threads", "0", "--preprocess", "none",
            "--checkpoints_dir", str(work / "checkpoints"), "--no_progress",
            "--print_freq", str(s["print_freq"]), "--display_freq", str(10**9),
            "--save_latest_freq", str(10**9), "--save_epoch_freq", str(10**6),
            "--no_html", "--no_tensorboard"]


def test_argv(model: str, dataroot: Path, s: dict, work: Path) -> list[str]:
    return ["--dataroot", str(dataroot), "--name", model, "--model", model,
            "--gpu_ids", "-1", "--num_threads", "0", "--preprocess", "none",
            "--checkpoints_dir", str(work / "checkpoints"), "--results_dir", str(work / "results"),
            "--num_test", str(s["n_test"]), "--no_progress", "--eval_metrics",
            *arch_argv(model, s)]


def _cli(argv: list[str], log: Path) -> None:
    """Run the ``revgan`` command in-process, its output appended to ``log``."""
    with log.open("a") as fh, contextlib.redirect_stdout(fh), contextlib.redirect_stderr(fh):
        print("$ revgan " + " ".join(argv), flush=True)
        revgan_main(argv)


def training_step_memory(argv: list[str], repeats: int = 2) -> dict:
    """Peak heap bytes of one training step above the level before it (after a warm-up step).

    Gradients are dropped before each measured step, so the peak holds activations, the graph
    and the new gradients; parameters and Adam state exist before and are reported apart.
    """
    opt = parse_options(argv, is_train=True)
    device = torch.device("cpu")
    batch = torch.utils.data.default_collate([create_dataset(opt)[0]])
    model = create_model(opt, device)
    model.train()
    model.set_input(batch)
    model.optimize()  # warm-up: allocates optimiser state, pools, lazy buffers
    peaks = []
    for _ in range(repeats):
        for net in model.nets.values():
            net.zero_grad(set_to_none=True)
        peak, _ = peak_memory(model.optimize, device)
        peaks.append(peak)
    params = sum(count_parameters(net) for net in model.nets.values())
    return {"peak_step_bytes": max(peaks), "all_nets_params": params,
            "discriminator_params": params - count_parameters(model.nets["G"])}


@torch.no_grad()
def cycle_error(model_name: str, argv: list[str], run_dir: Path, images: list[Path]) -> float:
    """Mean |G_BA(G_AB(x)) - x| in [-1, 1] over the test A images, in float (no 8-bit rounding).

    RevGAN: both directions are the same generator (inverse core); CycleGAN: G_B(G_A(x)).
    """
    opt = parse_options(argv, is_train=False)
    device = torch.device("cpu")
    model = create_model(opt, device)
    load_checkpoint(run_dir, "latest", {"G": model.nets["G"]}, device, with_state=False)
    errors = []
    for path in images:
        array, _ = read_image(path, opt.input_nc)
        x = torch.as_tensor(array).unsqueeze(0)
        rec = model.translate(model.translate(x, "AtoB"), "BtoA")
        errors.append(float((rec - x).abs().mean()))
    return sum(errors) / len(errors)


def _metric(summary: dict, pair: str, key: str) -> float | None:
    try:
        return summary["pairs"][pair]["metrics"][key]["mean"]
    except KeyError:
        return None


def run_model(model: str, data: dict, s: dict, work: Path, log=print) -> dict:
    split, _, bidirectional = MODELS[model]
    dataroot = Path(data[split])
    t_argv = train_argv(model, dataroot, s, work)
    logfile = work / f"{model}.log"
    row: dict = {"model": model, "netG": t_argv[t_argv.index("--netG") + 1], "split": split,
                 "iterations": s["iterations"]}
    try:
        test_opt = parse_options(test_argv(model, dataroot, s, work), is_train=False)
        G = create_model(test_opt, torch.device("cpu")).nets["G"]
        row["generator_params"] = count_parameters(G)
        del G
        log(f"[{model}] measuring one training step's memory")
        row.update(training_step_memory(t_argv))
        log(f"[{model}] training {s['iterations']} iterations ({row['netG']})")
        t0 = time.perf_counter()
        _cli(["train", *t_argv], logfile)
        row["train_time_s"] = time.perf_counter() - t0
        row["s_per_iteration"] = row["train_time_s"] / s["iterations"]
        log(f"[{model}] trained in {row['train_time_s']:.0f} s; testing")
        _cli(["test", *test_argv(model, dataroot, s, work)], logfile)
        results = work / "results" / model / "test_latest"
        summary = json.loads((results / "metrics.json").read_text())
        row["metrics_json"] = str(results / "metrics.json")
        pair = "fake_B_vs_real_B"
        row["test_items"] = summary["pairs"].get(pair, {}).get("count")
        for key in ("PSNR_norm", "SSIM_norm", "MAE_norm", "MSE_norm"):
            row[key] = _metric(summary, pair, key)
        # the test pipeline's own cycle error (unpaired models only; PNGs, 8-bit rounded)
        row["test_rec_A_L1_norm"] = _metric(summary, "rec_A_vs_real_A", "L1_norm")
        if bidirectional:
            test_a = sorted((Path(data["unpaired"]) / "testA").glob("*.png"))[: s["n_test"]]
            run_dir = work / "checkpoints" / model
            row["cycle_L1"] = cycle_error(model, test_argv(model, dataroot, s, work), run_dir,
                                          test_a)
        else:
            row["cycle_L1"] = None
    except SystemExit as exc:  # the CLI turns user errors into exit 2 (message in the log)
        row["error"] = f"revgan exited with code {exc.code}: {_last_line(logfile)}"
    except Exception as exc:  # noqa: BLE001 - report and go on with the other models
        row["error"] = f"{type(exc).__name__}: {exc}"
        row["traceback"] = traceback.format_exc()
    if "error" in row:
        log(f"[{model}] FAILED: {row['error']}")
    return row


def _last_line(path: Path) -> str:
    try:
        lines = [ln for ln in path.read_text().splitlines() if ln.strip()]
    except OSError:
        return "?"
    return lines[-1] if lines else "?"


def reference_parameter_counts() -> dict[str, int]:
    """Generator parameters at the reference's settings (ngf 64, 9 blocks, unet_256)."""
    out = {}
    for model, netG in (("cycle_gan", "resnet_9blocks"), ("unpaired_revgan", "resnet_9blocks"),
                        ("pix2pix", "unet_256")):
        opt = parse_options(["--dataroot", ".", "--model", model, "--netG", netG, "--ngf", "64"],
                            is_train=False)
        out[f"{model} {netG} ngf64"] = count_parameters(create_model(opt, torch.device("cpu"))
                                                        .nets["G"])
    return out


def _fmt(value, spec: str, missing: str = "n/a") -> str:
    return missing if value is None else format(value, spec)


def comparison_note(rows: list[dict]) -> str:
    by = {r["model"]: r for r in rows if "error" not in r}
    parts = []
    for rev, base in COMPARISONS:
        if rev in by and base in by and by[rev]["PSNR_norm"] is not None \
                and by[base]["PSNR_norm"] is not None:
            a, b = by[rev], by[base]
            parts.append(f"{rev} vs {base}: PSNR {a['PSNR_norm'] - b['PSNR_norm']:+.2f} dB, "
                         f"SSIM {a['SSIM_norm'] - b['SSIM_norm']:+.3f}, MAE "
                         f"{a['MAE_norm'] - b['MAE_norm']:+.4f} with "
                         f"{a['generator_params'] / b['generator_params']:.2f}x the generator "
                         "parameters")
    return "; ".join(parts) if parts else "no complete RevGAN/baseline pair to compare"


def markdown(results: dict) -> str:
    s = results["settings"]
    lines = [f"### Translation quality on the demo dataset ({s['size']}px, {s['n_train']} "
             f"training images per domain, {s['iterations']} iterations per model "
             f"({s['n_epochs'] + s['n_epochs_decay']} epochs, batch {s['batch_size']}), one run "
             f"per model (seed {s['seed']}), ngf {s['ngf']}, {s['n_test']} test scenes)", "",
             "| model | netG | G params (M) | PSNR A→B (dB) | SSIM A→B | MAE A→B | "
             "cycle L1 A→B→A | peak step mem (MB) | train time (s) | s/iter |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in results["results"]:
        if "error" in r:
            params = r.get("generator_params")
            lines.append(f"| {r['model']} | {r['netG']} | {_fmt(params and params / 1e6, '.3f')}"
                         f" | FAILED: {r['error'][:80]} | | | | | | |")
            continue
        lines.append(
            f"| {r['model']} | {r['netG']} | {r['generator_params'] / 1e6:.3f} | "
            f"{_fmt(r['PSNR_norm'], '.2f')} | {_fmt(r['SSIM_norm'], '.3f')} | "
            f"{_fmt(r['MAE_norm'], '.4f')} | {_fmt(r['cycle_L1'], '.4f')} | "
            f"{r['peak_step_bytes'] / MB:.1f} | {r['train_time_s']:.0f} | "
            f"{r['s_per_iteration']:.3f} |")
    lines += ["", f"Note: {results['note']}. One seed, one run per model: the run-to-run "
              "spread was not measured, so these gaps are not evidence that one model is "
              "better than another.", "",
              "Metrics in the networks' [-1, 1] range (data range 2), A→B against ground truth "
              "from `revgan test --eval_metrics`. Cycle L1: mean |G_BA(G_AB(x)) − x| on the test "
              "A images in float (RevGAN: the same generator's inverse direction; pix2pix has no "
              "B→A). Peak step mem: sampled glibc heap above the level before one training "
              "step, after a warm-up step, gradients dropped first (activations + graph + "
              "gradients; parameters and Adam state excluded); a lower bound.",
              ]
    if results["reference_params"]:
        lines += ["", "Generator parameters at the reference's settings (ngf 64; CycleGAN: both "
                  "generators): " + ", ".join(f"{k}: {v / 1e6:.2f} M"
                                              for k, v in results["reference_params"].items())]
    return "\n".join(lines)


def run(args: argparse.Namespace, log=print) -> dict:
    torch.set_num_threads(args.threads)
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = [m for m in models if m not in MODELS]
    if unknown or not models:
        raise UserError(f"--models: unknown {unknown or 'empty list'}; choose from "
                        f"{', '.join(MODELS)}")
    n_train = max(1, min(args.n_train, args.iterations // 2))
    n_epochs, n_decay, iterations = epoch_split(args.iterations, n_train)
    s = {"size": args.size, "ngf": args.ngf, "ndf": args.ndf,
         "depth": args.depth, "lr": args.lr, "seed": args.seed, "n_train": n_train,
         "n_test": args.n_test, "n_epochs": n_epochs, "n_epochs_decay": n_decay,
         "iterations": iterations, "requested_iterations": args.iterations,
         "print_freq": max(50, iterations // 10), "threads": args.threads,
         "batch_size": 1, "preprocess": "none (flips on)", "quick": args.quick}
    keep = args.work_dir is not None
    work = Path(args.work_dir) if keep else Path(tempfile.mkdtemp(prefix="revgan_quality_"))
    work.mkdir(parents=True, exist_ok=True)
    results = {"benchmark": "quality", "machine": machine_info(torch.device("cpu")),
               "loadavg_start": _loadavg(), "settings": s, "work_dir": str(work) if keep else None}
    try:
        log(f"demo dataset ({args.size}px, {n_train} train / {args.n_test} test) in {work}")
        data = make_demo_dataset(work / "data", size=args.size, n_train=n_train,
                                 n_test=args.n_test, n_val=0, seed=args.seed)
        t0 = time.perf_counter()
        results["results"] = [run_model(m, data, s, work, log) for m in models]
        results["total_time_s"] = time.perf_counter() - t0
    finally:
        if not keep:
            shutil.rmtree(work, ignore_errors=True)
    results["loadavg_end"] = _loadavg()
    # building the ngf-64 networks takes seconds: not worth it in a smoke run
    results["reference_params"] = {} if args.quick else reference_parameter_counts()
    results["note"] = comparison_note(results["results"])
    return results


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--iterations", type=int, default=2000,
                   help="training images per model (rounded to whole epochs)")
    p.add_argument("--size", type=int, default=64, help="demo image size")
    p.add_argument("--ngf", type=int, default=32, help="generator width, the same for all")
    p.add_argument("--ndf", type=int, default=None, help="discriminator width (default 64)")
    p.add_argument("--depth", type=int, default=6,
                   help="core depth of RevGAN and CycleGAN generators (resnet_<depth>blocks)")
    p.add_argument("--lr", type=float, default=2e-4)
    p.add_argument("--n_train", type=int, default=100, help="training scenes per domain")
    p.add_argument("--n_test", type=int, default=24, help="test scenes")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--models", default=",".join(MODELS), help="comma-separated model names")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads (1 keeps times steady on a shared machine)")
    p.add_argument("--quick", action="store_true",
                   help="tiny smoke run: 32px, 24 iterations, ngf 8, 8 train / 2 test scenes")
    p.add_argument("--work_dir", default=None,
                   help="keep data, checkpoints and results here (default: a temporary folder)")
    p.add_argument("--out", default=None,
                   help="JSON path (default benchmarks/results/quality.json, quality_quick.json "
                        "with --quick); the markdown table goes next to it (.md)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    return p


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    args = build_parser().parse_args(argv)
    if args.quick:
        args.size, args.ngf, args.iterations, args.n_train, args.n_test = 32, 8, 24, 8, 2
        args.ndf = args.ndf or 8
    if args.ndf is None:
        args.ndf = 64
    for key in ("iterations", "size", "ngf", "ndf", "depth", "n_train", "n_test", "threads"):
        if getattr(args, key) < 1:
            raise UserError(f"--{key} must be at least 1, got {getattr(args, key)}")
    if args.size % 4 or args.size < 16 or args.size & (args.size - 1):
        raise UserError(f"--size must be a power of two >= 16 (unet_<size>), got {args.size}")
    return args


@exits_cleanly
def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    default = RESULTS / ("quality_quick.json" if args.quick else "quality.json")
    out = prepare_output(Path(args.out) if args.out else default, args.overwrite)
    report = prepare_output(out.with_suffix(".md"), args.overwrite)
    results = run(args, log=lambda msg: print(msg, file=sys.stderr, flush=True))
    text = markdown(results)
    print(text)
    write_text(out, json.dumps(results, indent=1) + "\n")
    write_text(report, text + "\n")
    print(f"\nresults: {out}")
    return results


if __name__ == "__main__":
    main()
