"""Translation quality of RevGAN against pix2pix and CycleGAN on real data (CMP facades).

    python benchmarks/bench_quality.py [--dataroot ../shared/data/facades] [--size 128]
        [--iterations 400] [--ngf 32] [--ndf 32] [--runs paired_revgan,pix2pix,...]
        [--eval_every 100] [--n_val 30] [--n_test 100] [--threads 2] [--quick] [--overwrite]

Data: the pix2pix layout (``train/*.jpg``, ``test/*.jpg``; each image the photo on the left
and its label map on the right), resized to ``--size``; training adds random horizontal flips
only (no resize-and-crop jitter), the same for every model. Runs (``--runs``):

- ``paired_revgan``: one bidirectional run (labels -> photo and photo -> labels from the same
  generator and its inverse core);
- ``pix2pix`` (its default U-Net, ``unet_<size>``, batch norm, dropout) and ``pix2pix_resnet``
  (``resnet_9blocks``, instance norm: RevGAN's encoder/decoder design without reversibility),
  labels -> photo; ``pix2pix_AtoB``: the U-Net for photo -> labels;
- ``unpaired_revgan`` and ``cycle_gan`` on the same images as two unpaired sets (each batch
  pairs a photo with the labels of a different, independently drawn image).

Two budgets: **equal iterations** (every run ``--iterations`` steps, batch 1, constant LR for
the first half, linear decay to zero over the second) and **equal wall-clock** (each RevGAN
model again, with as many iterations as its measured s/iter fits into the training time its
baseline needed at equal iterations: ``paired_revgan`` <- ``pix2pix``, ``unpaired_revgan`` <-
``cycle_gan``; same LR shape over that count). Validation (``--n_val`` test pairs: PSNR, SSIM,
FID) every ``--eval_every`` iterations gives the learning curves; the final scores use
``--n_test`` test pairs: PSNR, SSIM, MAE (float outputs, range [-1, 1]), FID and KID
(Inception features, offline, ``revgan.evaluation.fid``), plus the cycle error of the
bidirectional models. Generators run as ``revgan test`` runs them (train mode, batch 1).
Writes ``quality.json``, ``quality.md`` and ``quality_curves.png`` to ``benchmarks/results/``.
``--quick``: a smoke run on generated 32 px pairs (no real data needed).
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch: see revgan/__init__.py

import argparse  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import shutil  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import traceback  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
from harness import machine_info, output_paths, prepare_output, publish  # noqa: E402
from PIL import Image  # noqa: E402

from revgan.engine.memory import peak_memory  # noqa: E402
from revgan.errors import UserError, exits_cleanly  # noqa: E402
from revgan.evaluation.fid import compute_fid_kid  # noqa: E402
from revgan.evaluation.metrics import paired_metrics  # noqa: E402
from revgan.models import create_model  # noqa: E402
from revgan.models.registry import build_config  # noqa: E402
from revgan.networks import count_parameters  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
DEFAULT_DATAROOT = Path(__file__).resolve().parents[2] / "shared" / "data" / "facades"
MB = 2.0**20
L2P, P2L = "labels→photo", "photo→labels"


@dataclass(frozen=True)
class RunSpec:
    """One training run: a registered model, its options, and which tasks it answers.

    ``direction`` is the run's ``--direction`` (data folder A = photo, B = labels, so
    ``BtoA`` makes the model's A->B labels -> photo); ``tasks`` maps a task to the generator
    direction that performs it.
    """

    model: str
    direction: str
    tasks: dict[str, str]
    values: dict = field(default_factory=dict)
    paired: bool = True
    baseline: str | None = None  # equal wall-clock: the run whose training time it gets


RUNS: dict[str, RunSpec] = {
    "paired_revgan": RunSpec("paired_revgan", "BtoA", {L2P: "AtoB", P2L: "BtoA"},
                             baseline="pix2pix"),
    "pix2pix": RunSpec("pix2pix", "BtoA", {L2P: "AtoB"}, {"netG": "unet_{size}"}),
    "pix2pix_resnet": RunSpec("pix2pix", "BtoA", {L2P: "AtoB"},
                              {"netG": "resnet_9blocks", "norm": "instance", "no_dropout": True}),
    "pix2pix_AtoB": RunSpec("pix2pix", "AtoB", {P2L: "AtoB"}, {"netG": "unet_{size}"}),
    "unpaired_revgan": RunSpec("unpaired_revgan", "BtoA", {L2P: "AtoB", P2L: "BtoA"},
                               paired=False, baseline="cycle_gan"),
    "cycle_gan": RunSpec("cycle_gan", "BtoA", {L2P: "AtoB", P2L: "BtoA"}, paired=False),
}
# (RevGAN run, baseline run, task) compared in the note and the targets
COMPARISONS = (("paired_revgan", "pix2pix", L2P), ("paired_revgan", "pix2pix_resnet", L2P),
               ("paired_revgan", "pix2pix_AtoB", P2L), ("unpaired_revgan", "cycle_gan", L2P))


# --------------------------------------------------------------------------- data


def _to_tensor(image: Image.Image, size: int) -> torch.Tensor:
    image = image.convert("RGB").resize((size, size), Image.BICUBIC)
    array = np.asarray(image, dtype=np.float32) / 127.5 - 1.0
    return torch.from_numpy(array).permute(2, 0, 1).contiguous()


def load_pix2pix_split(folder: Path, size: int, limit: int | None = None
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """(photos, labels), N×3×size×size in [-1, 1], from side-by-side images (photo left)."""
    paths = sorted((p for p in folder.iterdir()
                    if p.suffix.lower() in (".jpg", ".jpeg", ".png")),
                   key=lambda p: (len(p.stem), p.stem))[:limit]
    if not paths:
        raise UserError(f"no images in {folder}")
    photos, labels = [], []
    for path in paths:
        with Image.open(path) as im:
            w, h = im.size
            photos.append(_to_tensor(im.crop((0, 0, w // 2, h)), size))
            labels.append(_to_tensor(im.crop((w // 2, 0, w, h)), size))
    return torch.stack(photos), torch.stack(labels)


def load_facades(root: Path, size: int, n_train: int, n_test: int) -> dict:
    if not (root / "train").is_dir() or not (root / "test").is_dir():
        raise UserError(f"facades data not found at {root} (needs train/ and test/ in the "
                        "pix2pix layout; pass --dataroot, or --quick for generated data)")
    train, test = (load_pix2pix_split(root / s, size, n) for s, n in
                   (("train", n_train), ("test", n_test)))
    return {"train": train, "test": test, "source": str(root)}


def synthetic_pairs(n: int, size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Facade-like generated pairs: label maps of coloured rectangles and their 'photos'
    (a fixed colour mapping, a shading gradient and a little texture)."""
    g = torch.Generator().manual_seed(seed)
    palette = torch.rand(6, 3, generator=g) * 2 - 1
    photo_colours = torch.rand(6, 3, generator=g) * 1.6 - 0.8
    labels = torch.empty(n, 3, size, size)
    photos = torch.empty(n, 3, size, size)
    ramp = torch.linspace(-0.2, 0.2, size).view(1, size, 1)
    for i in range(n):
        ids = torch.zeros(size, size, dtype=torch.long)
        for _ in range(6):
            x0, y0 = torch.randint(0, size - 4, (2,), generator=g).tolist()
            w, h = torch.randint(3, size // 2, (2,), generator=g).tolist()
            ids[y0:y0 + h, x0:x0 + w] = int(torch.randint(1, 6, (1,), generator=g))
        labels[i] = palette[ids].permute(2, 0, 1)
        texture = 0.1 * torch.randn(1, size, size, generator=g)
        photos[i] = (photo_colours[ids].permute(2, 0, 1) + ramp + texture).clamp(-1, 1)
    return photos, labels


# --------------------------------------------------------------------------- runs


def make_config(name: str, s: dict, iterations: int, is_train: bool = True):
    spec = RUNS[name]
    values = {k: (v.format(size=s["size"]) if isinstance(v, str) else v)
              for k, v in spec.values.items()}
    half = max(1, iterations // 2)
    values.update(dataroot=".", direction=spec.direction, ngf=s["ngf"], ndf=s["ndf"],
                  lr=s["lr"], seed=s["seed"], gpu_ids="-1",
                  n_epochs=half, n_epochs_decay=max(1, iterations - half),
                  crop_size=s["size"], load_size=s["size"], preprocess="none")
    if spec.model in ("paired_revgan", "unpaired_revgan"):
        values.update(s["rev_options"])
    return build_config(spec.model, is_train=is_train, values=values)


def _batch(data: dict, spec: RunSpec, order: torch.Tensor, step: int, g: torch.Generator
           ) -> dict:
    photos, labels = data["train"]
    n = photos.shape[0]
    i = int(order[0][step % n])
    j = i if spec.paired else int(order[1][step % n])  # unpaired: an independent draw
    photo, label = photos[i], labels[j]
    flip_photo = bool(torch.rand(1, generator=g) < 0.5)
    # paired: the same flip on both sides; unpaired: independent
    flip_label = flip_photo if spec.paired else bool(torch.rand(1, generator=g) < 0.5)
    photo = photo.flip(-1) if flip_photo else photo
    label = label.flip(-1) if flip_label else label
    return {"A": photo.unsqueeze(0), "B": label.unsqueeze(0),
            "A_paths": [f"{i}"], "B_paths": [f"{j}"]}


def _source_target(data: dict, task: str, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    photos, labels = data["test"]
    return (labels[:n], photos[:n]) if task == L2P else (photos[:n], labels[:n])


@torch.no_grad()
def translate_all(model, x: torch.Tensor, direction: str, seed: int) -> torch.Tensor:
    """One image at a time (batch 1, as in training and ``revgan test``); seeded dropout."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return torch.cat([model.translate(x[k:k + 1], direction) for k in range(x.shape[0])])


def _save_pngs(images: torch.Tensor, folder: Path) -> Path:
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    arrays = ((images.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy()
    for k, array in enumerate(arrays):
        Image.fromarray(array).save(folder / f"{k:04d}.png")
    return folder


def score(model, data: dict, task: str, direction: str, n: int, work: Path, tag: str,
          seed: int, with_fid: bool = True) -> dict:
    """PSNR/SSIM/MAE against ground truth and FID/KID against the real targets."""
    source, target = _source_target(data, task, n)
    fake = translate_all(model, source, direction, seed)
    out = {k: v for k, v in paired_metrics(fake, target, 2.0).items() if k != "MSE"}
    out["checker"] = checkerboard_ratio(fake, target)
    if with_fid:
        task_key = "l2p" if task == L2P else "p2l"
        real_dir = work / f"real_{task_key}_{n}"
        if not real_dir.exists():
            _save_pngs(target, real_dir)
        fid = compute_fid_kid(real_dir, _save_pngs(fake, work / "fake" / tag), device="cpu")
        out.update(FID=fid["fid"], KID=fid["kid_mean"], KID_std=fid["kid_std"])
    return out


def _checker_energy(x: torch.Tensor) -> torch.Tensor:
    """Mean |response| of the 2×2 checkerboard filter [[1, -1], [-1, 1]] at every pixel."""
    r = x[..., :-1, :-1] - x[..., :-1, 1:] - x[..., 1:, :-1] + x[..., 1:, 1:]
    return r.abs().mean()


def checkerboard_ratio(fake: torch.Tensor, real: torch.Tensor) -> float:
    """Energy of the finest checkerboard pattern in the outputs over that of the targets:
    ~1 for natural detail, well above 1 where the upsampling leaves a checkerboard."""
    return float(_checker_energy(fake) / _checker_energy(real).clamp_min(1e-8))


@torch.no_grad()
def cycle_error(model, data: dict, n: int, seed: int) -> float:
    """Mean |G_BA(G_AB(x)) - x| over the test labels (model domain A), float outputs."""
    x = data["test"][1][:n]
    rec = translate_all(model, translate_all(model, x, "AtoB", seed), "BtoA", seed)
    return float((rec - x).abs().mean())


def step_memory(cfg, data: dict, spec: RunSpec) -> dict:
    """Peak heap bytes of one training step above the level before it (after a warm-up).

    Gradients are dropped before the measured step, so the peak holds activations, the
    graph and new gradients; parameters and Adam state exist before and are not counted.
    """
    model = create_model(cfg, torch.device("cpu"))
    model.train()
    g = torch.Generator().manual_seed(0)
    order = (torch.arange(data["train"][0].shape[0]),) * 2
    model.set_input(_batch(data, spec, order, 0, g))
    model.optimize()  # warm-up: optimiser state, pools, lazy buffers
    for net in model.nets.values():
        net.zero_grad(set_to_none=True)
    peak, _ = peak_memory(model.optimize, torch.device("cpu"))
    return {"peak_step_bytes": peak,
            "generator_params": count_parameters(model.nets["G"]),
            "all_nets_params": sum(count_parameters(n) for n in model.nets.values())}


def train_run(name: str, data: dict, s: dict, iterations: int, work: Path, budget: str,
              log=print) -> dict:
    """Train one run for ``iterations`` steps, validating every ``eval_every``; score it."""
    spec = RUNS[name]
    cfg = make_config(name, s, iterations)
    row: dict = {"run": name, "model": spec.model, "netG": cfg.netG, "norm": cfg.norm,
                 "direction": spec.direction, "budget": budget, "iterations": iterations,
                 "seed": s["seed"], "curve": []}
    try:
        row.update(step_memory(cfg, data, spec))
        torch.manual_seed(s["seed"])
        model = create_model(cfg, torch.device("cpu"))
        model.train()
        g = torch.Generator().manual_seed(s["seed"])
        n = data["train"][0].shape[0]
        train_time, order = 0.0, None
        checkpoints = set(range(s["eval_every"], iterations, s["eval_every"])) | {iterations}
        log(f"[{name}/{budget}] {iterations} iterations ({cfg.netG}, {cfg.norm})")
        for step in range(iterations):
            if step % n == 0:
                order = (torch.randperm(n, generator=g), torch.randperm(n, generator=g))
            t0 = time.perf_counter()
            model.set_input(_batch(data, spec, order, step, g))
            model.optimize()
            model.update_learning_rate()  # one schedule "epoch" per iteration
            train_time += time.perf_counter() - t0
            if step + 1 in checkpoints:
                point = {"iteration": step + 1, "train_time_s": train_time}
                for task, direction in spec.tasks.items():
                    m = score(model, data, task, direction, s["n_val"], work,
                              f"{name}_{budget}_val", s["seed"], with_fid=s["curve_fid"])
                    point[task] = m
                row["curve"].append(point)
                log(f"[{name}/{budget}] it {step + 1}: {train_time:.0f} s, " + ", ".join(
                    f"{t} PSNR {m['PSNR']:.2f}" + (f" FID {m['FID']:.1f}" if "FID" in m else "")
                    for t, m in point.items() if isinstance(m, dict)))
        row["train_time_s"] = train_time
        row["s_per_iteration"] = train_time / iterations
        row["nonfinite_steps"] = model.nonfinite_total
        row["test"] = {task: score(model, data, task, direction, s["n_test"], work,
                                   f"{name}_{budget}_test", s["seed"] + 1)
                       for task, direction in spec.tasks.items()}
        row["cycle_L1"] = (cycle_error(model, data, s["n_test"], s["seed"] + 2)
                           if len(spec.tasks) == 2 else None)
    except Exception as exc:  # noqa: BLE001 - report and go on with the other runs
        row["error"] = f"{type(exc).__name__}: {exc}"
        row["traceback"] = traceback.format_exc()
        log(f"[{name}/{budget}] FAILED: {row['error']}")
    return row


# --------------------------------------------------------------------------- report


def _fmt(value, spec: str) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) \
        else format(value, spec)


def _final(rows: list[dict], run: str, budget: str) -> dict | None:
    for r in rows:
        if r["run"] == run and r["budget"] == budget and "error" not in r:
            return r
    return None


def targets(rows: list[dict]) -> list[dict]:
    """The issue's targets, each with the measured values and met / missed / not run."""
    def get(run, budget, task, key):
        r = _final(rows, run, budget)
        return None if r is None or task not in r["test"] else r["test"][task].get(key)

    out = []

    def check(text, a, b, ok):
        out.append({"target": text, "revgan": a, "baseline": b,
                    "status": "not run" if a is None or b is None else
                    ("met" if ok(a, b) else "missed")})

    check("labels→photo, equal iterations: paired_revgan FID ≤ pix2pix",
          get("paired_revgan", "iterations", L2P, "FID"), get("pix2pix", "iterations", L2P, "FID"),
          lambda a, b: a <= b)
    check("labels→photo, equal iterations: paired_revgan SSIM ≥ pix2pix",
          get("paired_revgan", "iterations", L2P, "SSIM"),
          get("pix2pix", "iterations", L2P, "SSIM"), lambda a, b: a >= b)
    check("labels→photo, equal wall-clock: paired_revgan FID ≤ 1.05 × pix2pix",
          get("paired_revgan", "wallclock", L2P, "FID"), get("pix2pix", "iterations", L2P, "FID"),
          lambda a, b: a <= 1.05 * b)
    check("photo→labels, equal iterations: paired_revgan PSNR ≥ pix2pix",
          get("paired_revgan", "iterations", P2L, "PSNR"),
          get("pix2pix_AtoB", "iterations", P2L, "PSNR"), lambda a, b: a >= b)
    check("labels→photo, equal iterations: unpaired_revgan FID ≤ cycle_gan",
          get("unpaired_revgan", "iterations", L2P, "FID"),
          get("cycle_gan", "iterations", L2P, "FID"), lambda a, b: a <= b)
    rev, cyc = _final(rows, "unpaired_revgan", "iterations"), _final(rows, "cycle_gan",
                                                                     "iterations")
    check("equal iterations: unpaired_revgan cycle error < cycle_gan",
          rev and rev["cycle_L1"], cyc and cyc["cycle_L1"], lambda a, b: a < b)
    return out


def markdown(results: dict) -> str:
    s = results["settings"]
    lines = [f"### Translation quality on {s['data']} ({s['size']}², ngf {s['ngf']}, ndf "
             f"{s['ndf']}, {s['n_train']} training pairs, batch 1, seed {s['seed']}, "
             f"{s['threads']} torch thread(s))", "",
             f"Budgets: **equal iterations** = {s['iterations']} iterations per run; **equal "
             "wall-clock** = each RevGAN model retrained for the training time its baseline "
             "needed at equal iterations (iterations = that time / its own measured s/iter). "
             f"Final scores on {s['n_test']} test pairs; curves on {s['n_val']} of them."
             + (f" RevGAN options: {s['rev_options']}." if s["rev_options"] else ""), "",
             "| run | budget | task | netG | G params (M) | iters | PSNR (dB) | SSIM | MAE | "
             "FID | KID×1000 | checker | cycle L1 | peak step mem (MB) | train (s) | s/iter |",
             "|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in results["results"]:
        if "error" in r:
            lines.append(f"| {r['run']} | {r['budget']} | | {r['netG']} | | {r['iterations']} "
                         f"| FAILED: {r['error'][:80]} | | | | | | | | | |")
            continue
        for task, m in r["test"].items():
            lines.append(
                f"| {r['run']} | {r['budget']} | {task} | {r['netG']} | "
                f"{r['generator_params'] / 1e6:.3f} | {r['iterations']} | "
                f"{_fmt(m['PSNR'], '.2f')} | {_fmt(m['SSIM'], '.3f')} | {_fmt(m['MAE'], '.4f')} | "
                f"{_fmt(m.get('FID'), '.1f')} | {_fmt(m.get('KID') and m['KID'] * 1000, '.1f')} | "
                f"{_fmt(m['checker'], '.2f')} | "
                f"{_fmt(r['cycle_L1'], '.4f')} | {r['peak_step_bytes'] / MB:.1f} | "
                f"{r['train_time_s']:.0f} | {r['s_per_iteration']:.3f} |")
    lines += ["", "| target (issue #11) | RevGAN | baseline | status |", "|---|---:|---:|---|"]
    for t in results["targets"]:
        lines.append(f"| {t['target']} | {_fmt(t['revgan'], '.4g')} | "
                     f"{_fmt(t['baseline'], '.4g')} | {t['status']} |")
    lines += ["", "One seed, one run per row: the run-to-run spread was not measured, so small "
              "gaps are not evidence either way. PSNR/SSIM/MAE on float outputs in [-1, 1] "
              "(data range 2); checker: energy of the 2×2 checkerboard pattern in the "
              "outputs over that in the targets (≫ 1: upsampling artifacts); FID/KID from "
              "Inception pool features of 8-bit PNGs (small sets: FID is biased upwards, "
              "compare rows only at the same image count). Cycle L1: "
              "mean |G_BA(G_AB(labels)) − labels|. Peak step mem: sampled heap above the level "
              "before one training step (activations + graph + gradients), a lower bound. "
              "Train (s): optimisation steps only, validation excluded; the machine was "
              f"shared (load average {results.get('loadavg_start')} at start), so times are "
              "indicative.", ""]
    if results.get("curves_png"):
        lines.append(f"![learning curves]({Path(results['curves_png']).name})")
    return "\n".join(lines)


def plot_curves(results: dict, path: Path) -> Path | None:
    """Validation PSNR and FID against iterations, labels→photo, every run and budget."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in results["results"] if "error" not in r and r["curve"]]
    if not rows:
        return None
    keys = ["PSNR"] + (["FID"] if results["settings"]["curve_fid"] else [])
    fig, axes = plt.subplots(1, len(keys), figsize=(6 * len(keys), 4), dpi=100, squeeze=False)
    for ax, key in zip(axes[0], keys, strict=True):
        for r in rows:
            task = L2P if L2P in r["curve"][0] else P2L
            xs = [p["iteration"] for p in r["curve"]]
            ys = [p[task].get(key, float("nan")) for p in r["curve"]]
            ax.plot(xs, ys, marker="o", markersize=3, linewidth=1.2,
                    linestyle="-" if r["budget"] == "iterations" else "--",
                    label=f"{r['run']} ({r['budget']}, {task})")
        ax.set_xlabel("iteration")
        ax.set_ylabel(f"validation {key}")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize="x-small")
    fig.suptitle(f"{results['settings']['data']}, {results['settings']['size']}², "
                 f"{results['settings']['n_val']} validation pairs")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


# --------------------------------------------------------------------------- main


def run(args: argparse.Namespace, curves_png: Path | None, log=print) -> dict:
    torch.set_num_threads(args.threads)
    runs = [r.strip() for r in args.runs.split(",") if r.strip()]
    unknown = [r for r in runs if r not in RUNS]
    if unknown or not runs:
        raise UserError(f"--runs: unknown {unknown or 'empty list'}; choose from "
                        f"{', '.join(RUNS)}")
    if args.quick and args.dataroot is None:
        train, test = (synthetic_pairs(n, args.size, args.seed + k)
                       for k, n in ((0, args.n_train), (1, args.n_test)))
        data = {"train": train, "test": test, "source": "generated pairs"}
    else:
        data = load_facades(Path(args.dataroot or DEFAULT_DATAROOT), args.size, args.n_train,
                            args.n_test)
    n_train, n_test = data["train"][0].shape[0], data["test"][0].shape[0]
    s = {"data": "generated pairs (--quick)" if data["source"] == "generated pairs"
         else f"CMP facades ({data['source']})",
         "size": args.size, "ngf": args.ngf, "ndf": args.ndf, "lr": args.lr, "seed": args.seed,
         "n_train": n_train, "n_test": n_test, "n_val": min(args.n_val, n_test),
         "iterations": args.iterations, "eval_every": args.eval_every,
         "curve_fid": not args.no_curve_fid, "threads": args.threads, "quick": args.quick,
         "wallclock": not args.no_wallclock, "runs": runs, "batch_size": 1,
         "augmentation": "random horizontal flip", "rev_options": args.rev_options}
    work = Path(tempfile.mkdtemp(prefix="revgan_quality_"))
    results = {"benchmark": "quality", "machine": machine_info(torch.device("cpu")),
               "loadavg_start": _loadavg(), "settings": s, "results": []}
    t_start = time.perf_counter()
    try:
        for name in runs:
            results["results"].append(train_run(name, data, s, args.iterations, work,
                                                 "iterations", log))
        if s["wallclock"]:
            for name in runs:
                base = RUNS[name].baseline
                base_row = _final(results["results"], base, "iterations") if base else None
                own = _final(results["results"], name, "iterations")
                if base_row is None or own is None:
                    continue
                iters = max(2, round(base_row["train_time_s"] / own["s_per_iteration"]))
                row = train_run(name, data, s, iters, work, "wallclock", log)
                row["wallclock_budget_s"] = base_row["train_time_s"]
                results["results"].append(row)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    results["total_time_s"] = time.perf_counter() - t_start
    results["loadavg_end"] = _loadavg()
    results["targets"] = targets(results["results"])
    if curves_png is not None and plot_curves(results, curves_png):
        results["curves_png"] = str(curves_png)
    return results


def _loadavg() -> list[float] | None:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataroot", default=None,
                   help=f"facades in the pix2pix layout (default {DEFAULT_DATAROOT})")
    p.add_argument("--size", type=int, default=128, help="image size (square)")
    p.add_argument("--iterations", type=int, default=400,
                   help="the equal-iterations budget, training steps per run (batch 1)")
    p.add_argument("--ngf", type=int, default=32, help="generator width, the same for all")
    p.add_argument("--ndf", type=int, default=32, help="discriminator width")
    p.add_argument("--lr", type=float, default=2e-4)
    p.add_argument("--n_train", type=int, default=400, help="training pairs (at most)")
    p.add_argument("--n_test", type=int, default=100, help="test pairs for the final scores")
    p.add_argument("--n_val", type=int, default=30, help="test pairs for the learning curves")
    p.add_argument("--eval_every", type=int, default=100, help="iterations between validations")
    p.add_argument("--no_curve_fid", action="store_true", help="curves: PSNR/SSIM only")
    p.add_argument("--no_wallclock", action="store_true", help="skip the equal wall-clock runs")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--rev_option", action="append", default=[], metavar="KEY=VALUE",
                   help="a training option for the two RevGAN models only (the method under "
                        "test), e.g. upsample=resize; repeatable")
    p.add_argument("--runs", default=",".join(RUNS), help="comma-separated run names")
    p.add_argument("--threads", type=int, default=2, help="torch threads")
    p.add_argument("--quick", action="store_true",
                   help="smoke run: 32 px generated pairs (unless --dataroot), 12 iterations, "
                        "ngf/ndf 8, 8 train / 4 test pairs")
    p.add_argument("--out", default=None,
                   help="JSON path (default benchmarks/results/quality.json, quality_quick.json "
                        "with --quick); the markdown and the curves PNG go next to it")
    p.add_argument("--overwrite", action="store_true", help="replace existing result files")
    return p


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    args = build_parser().parse_args(argv)
    if args.quick:
        args.size, args.ngf, args.ndf, args.iterations = 32, 8, 8, 12
        args.n_train, args.n_test, args.n_val, args.eval_every = 8, 4, 4, 6
    for key in ("iterations", "size", "ngf", "ndf", "n_train", "n_test", "n_val", "eval_every",
                "threads"):
        if getattr(args, key) < 1:
            raise UserError(f"--{key} must be at least 1, got {getattr(args, key)}")
    args.rev_options = {}
    for item in args.rev_option:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UserError(f"--rev_option expects KEY=VALUE, got {item!r}")
        try:
            args.rev_options[key] = json.loads(value)
        except json.JSONDecodeError:
            args.rev_options[key] = value
    if args.size < 16 or args.size & (args.size - 1):
        raise UserError(f"--size must be a power of two >= 16 (unet_<size>), got {args.size}")
    return args


@exits_cleanly
def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    default = RESULTS / ("quality_quick.json" if args.quick else "quality.json")
    out, report = output_paths(args.out, default, args.overwrite)
    curves = prepare_output(out.with_name(out.stem + "_curves.png"), args.overwrite)
    results = run(args, curves, log=lambda msg: print(msg, file=sys.stderr, flush=True))
    return publish(results, markdown(results), out, report)


if __name__ == "__main__":
    main()
