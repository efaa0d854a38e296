"""3D x2 super-resolution on real data: the MNI152 T1 template (nilearn), revgan vs baselines.

    python benchmarks/bench_sr3d.py [--resolution 2] [--iterations 1500] [--batch 8]
        [--patch 16] [--window 16] [--ngf 32] [--ndf 16] [--rev_lr 3e-4]
        [--input_upsampling cubic] [--runs paired_revgan3d,pix2pix3d] [--threads 1]
        [--quick] [--out PATH] [--overwrite]

Defaults changed after the issue #11 pilots (docs/quality.md): batch 8 (was 1), ngf 32 (was
16), paired_revgan3d LR 3e-4 (was 1e-3, which oscillates), cubic input (was trilinear), 1500
iterations (was 2000), rows paired_revgan3d and pix2pix3d (the ``*_plain`` rows on request).

Data: ``nilearn.datasets.load_mni152_template(resolution)`` (files shipped inside nilearn; no
download), cropped to even sides and scaled to [-1, 1] (``2 * v / max - 1``; background -1).
Target: that volume. Input: it averaged over 2x2x2 blocks and brought back to full size,
``--input_upsampling cubic`` (default; the ``cubic`` row below) or ``trilinear``
(``revgan.demo.volumes.low_resolution``, the 3D demo's degradation), computed once over the
whole volume as a scanner would.

Split (no leakage): along the anterior-posterior axis (array axis 1). Training patches lie
wholly in the posterior part (``y < split - gap/2``), the held-out region is the anterior part
(``y >= split + gap/2``), with a gap of ``--gap`` voxels (default 8) between them. The
degradation reaches at most 3 voxels (a 2-voxel block plus one interpolation neighbour), so
no training input or target voxel depends on a held-out voxel. The brain is left-right
symmetric, not front-back, so the held-out part is not a mirror of the training part.

Rows: ``cubic`` (``scipy.ndimage.zoom`` order 3 of the 2x2x2-averaged volume, grid-aligned like
the averaging), ``trilinear``, ``linear_filter`` (the best linear deblurring: a 3³ filter of
the models' input fitted by least squares on the training part's brain voxels), and the trained
models (``--runs``): ``paired_revgan3d`` and ``pix2pix3d`` with ``--residual`` (output = input
+ correction), ``*_plain`` without it. Each is built with revgan's own code (``build_config`` +
``create_model``) and trained for the same ``--iterations`` on random ``--patch``³ patches
whose centres are brain voxels of the training part (``--batch`` patches a step; constant LR
for the first half, linear decay to zero over the second; Adam ``--beta1``), then the held-out
region is translated with revgan's blended sliding windows (``model.translate``, ``--window``³,
default the patch, overlap 0.5). ``paired_revgan3d``: ``edsrF_<--depth>``, no normalisation, He
init, core at full resolution (the 3D demo's measured design), LR ``--rev_lr``, its core
keeping activations (``keep_blocks`` = depth: same gradients, faster); ``pix2pix3d``: its
registry defaults (4-level U-Net, instance norm), LR ``--lr``. Both use the paired objective
(GAN + ``--lambda_L1`` x L1); the RevGAN trains both directions (its inverse direction is x2
downsampling).

Columns: PSNR, SSIM (3D, 11-voxel Gaussian window) and MAE in [-1, 1] units on the held-out
region, inside the brain mask (nilearn's MNI152 brain mask; SSIM: mean of the SSIM map over
the mask) and on the whole region; generator parameters; s/iter (wall and CPU); training
time. Targets (issue #11): ``paired_revgan3d`` >= cubic + 1.5 dB PSNR (inside the mask), and
>= ``pix2pix3d`` PSNR with at most 60% of its parameters.

``--quick``: a smoke run on a generated phantom (no nilearn needed), seconds.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch: see revgan/__init__.py

import argparse  # noqa: E402
import math  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import traceback  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
from harness import machine_info, output_paths, publish  # noqa: E402

from revgan.demo.volumes import low_resolution, make_phantom  # noqa: E402
from revgan.errors import UserError, exits_cleanly  # noqa: E402
from revgan.evaluation.metrics import ssim_map  # noqa: E402
from revgan.models import create_model  # noqa: E402
from revgan.models.registry import build_config  # noqa: E402
from revgan.networks import count_parameters  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
NEEDS_NILEARN = "needs nilearn: pip install nilearn"
MODEL_RUNS = {  # run name -> (model, residual)
    "paired_revgan3d": ("paired_revgan3d", True),
    "pix2pix3d": ("pix2pix3d", True),
    "paired_revgan3d_plain": ("paired_revgan3d", False),
    "pix2pix3d_plain": ("pix2pix3d", False),
}
SPLIT_AXIS = 1  # anterior-posterior in the MNI template's array order (x, y, z)


# --------------------------------------------------------------------------- data


def _even(volume: np.ndarray) -> np.ndarray:
    return volume[tuple(slice(0, s - s % 2) for s in volume.shape)]


def load_mni(resolution: int) -> tuple[np.ndarray, np.ndarray]:
    """The MNI152 T1 template (scaled to [-1, 1]) and its brain mask, cropped to even sides."""
    try:
        from nilearn import datasets
    except ImportError:
        raise UserError(NEEDS_NILEARN) from None
    template = _even(np.asarray(datasets.load_mni152_template(resolution=resolution)
                                .get_fdata(), dtype=np.float32))
    mask = _even(np.asarray(datasets.load_mni152_brain_mask(resolution=resolution)
                            .get_fdata()) > 0.5)
    return template / template.max() * 2 - 1, mask


def synthetic_volume(side: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A generated phantom (``--quick``): [-1, 1] units, its body as the mask."""
    phantom = make_phantom(np.random.default_rng(seed), (side,) * 3)
    return phantom / 1000.0 * 2 - 1, phantom > 0


def cubic_upsampling(volume: np.ndarray) -> np.ndarray:
    """``scipy.ndimage.zoom`` order 3 of the 2x2x2-averaged volume back to full size.

    ``grid_mode=True`` treats voxels as cells, as the averaging and the trilinear input do
    (``align_corners=False``): a low-resolution voxel's centre sits between its two
    full-resolution voxels, not on the first one."""
    from scipy.ndimage import zoom

    small = torch.nn.functional.avg_pool3d(torch.from_numpy(volume)[None, None].double(), 2)
    up = zoom(small[0, 0].numpy(), 2, order=3, grid_mode=True, mode="nearest")
    return up.astype(np.float32)


def _stencils(volume: np.ndarray, where: np.ndarray, radius: int) -> np.ndarray:
    """Each selected voxel's (2 radius + 1)³ neighbourhood (edge-padded), plus a constant 1."""
    k = 2 * radius + 1
    padded = np.pad(volume, radius, mode="edge").astype(np.float64)
    idx = np.argwhere(where)
    cols = [padded[idx[:, 0] + i, idx[:, 1] + j, idx[:, 2] + m]
            for i in range(k) for j in range(k) for m in range(k)]
    return np.stack(cols + [np.ones(len(idx))], 1)


def linear_filter(train: dict, test: dict, radius: int = 1) -> np.ndarray:
    """The best linear filter baseline: a (2 radius + 1)³ convolution (+ offset) of the models'
    input, fitted by least squares to the target on the training part's brain voxels, applied
    to the held-out part. It shows how much of a model's gain a linear deblurring gives."""
    a = _stencils(train["input"], train["mask"], radius)
    weights = np.linalg.lstsq(a, train["target"][train["mask"]].astype(np.float64),
                              rcond=None)[0]
    whole = np.ones(test["input"].shape, bool)
    return (_stencils(test["input"], whole, radius) @ weights).reshape(whole.shape) \
        .astype(np.float32)


def split(data: dict, gap: int) -> dict:
    """Training part, held-out part (with their masks) and the patch-centre candidates."""
    n = data["target"].shape[SPLIT_AXIS]
    cut = n // 2
    lo, hi = cut - gap // 2, cut + (gap - gap // 2)

    def part(array: np.ndarray, start: int, stop: int) -> np.ndarray:
        index = [slice(None)] * 3
        index[SPLIT_AXIS] = slice(start, stop)
        return array[tuple(index)]

    return {"train": {k: part(v, 0, lo) for k, v in data.items()},
            "test": {k: part(v, hi, n) for k, v in data.items()},
            "train_range": [0, lo], "test_range": [hi, n]}


def patch_sampler(train: dict, patch: int, seed: int, batch: int = 1):
    """Batches of ``batch`` random ``patch``³ (input, target) pairs lying wholly in the
    training part, each centred near a brain voxel (clamped so the patch fits)."""
    shape = np.array(train["target"].shape)
    if (shape < patch).any():
        sides = tuple(int(s) for s in shape)
        raise UserError(f"--patch {patch} does not fit the training part {sides}; use a "
                        "smaller --patch")
    centres = np.argwhere(train["mask"])
    if len(centres) == 0:
        raise UserError("the training part holds no brain voxel")
    rng = np.random.default_rng(seed)

    def draw() -> dict:
        boxes = []
        for _ in range(batch):
            corner = np.clip(centres[rng.integers(len(centres))] - patch // 2, 0, shape - patch)
            boxes.append(tuple(slice(c, c + patch) for c in corner))
        a, b = (torch.from_numpy(np.stack([train[k][box] for box in boxes]))[:, None]
                for k in ("input", "target"))
        return {"A": a, "B": b, "A_paths": ["mni"] * batch, "B_paths": ["mni"] * batch}

    return draw


# --------------------------------------------------------------------------- metrics


def region_metrics(pred: np.ndarray, target: np.ndarray, mask: np.ndarray) -> dict:
    """PSNR, SSIM, MAE ([-1, 1] units, range 2) on the whole region and inside ``mask``
    (SSIM there: the mean of revgan's SSIM map, reflect-padded borders, over the mask)."""
    p, t = (torch.from_numpy(np.ascontiguousarray(v, dtype=np.float32)) for v in (pred, target))
    m = torch.from_numpy(mask)
    smap = ssim_map(p[None, None], t[None, None], 2.0)[0, 0]

    def scores(diff: torch.Tensor, ssim: torch.Tensor) -> dict:
        mse = float(diff.pow(2).mean())
        return {"PSNR": 10 * math.log10(4.0 / mse) if mse > 0 else float("inf"),
                "SSIM": float(ssim.mean()), "MAE": float(diff.abs().mean())}

    diff = (p - t).double()
    return {"mask": scores(diff[m], smap[m]), "whole": scores(diff, smap)}


# --------------------------------------------------------------------------- training


def make_config(run: str, args: argparse.Namespace, is_train: bool = True):
    model, residual = MODEL_RUNS[run]
    half = max(1, args.iterations // 2)
    values = dict(dataroot=".", ngf=args.ngf, ndf=args.ndf, seed=args.seed, gpu_ids="-1",
                  patch_size=(args.patch,) * 3, residual=residual, batch_size=args.batch,
                  window_size=(args.window,) * 3, n_epochs=half,
                  n_epochs_decay=max(1, args.iterations - half), lr=args.lr, overlap=0.5,
                  lambda_L1=args.lambda_L1, beta1=args.beta1)
    if model == "paired_revgan3d":
        # at these patch sizes memory is no concern, time is: nothing is recomputed
        values.update(netG=f"edsrF_{args.depth}", norm="none", init_type="kaiming",
                      n_downsampling=0, lr=args.rev_lr, recompute_stages="off",
                      keep_blocks=args.depth)
    return build_config(model, is_train=is_train, values=values)


def train_and_test(run: str, parts: dict, args: argparse.Namespace, log=print) -> dict:
    cfg = make_config(run, args)
    row: dict = {"run": run, "model": cfg.model, "residual": cfg.residual, "netG": cfg.netG,
                 "norm": cfg.norm, "lr": cfg.lr, "iterations": args.iterations}
    try:
        torch.manual_seed(args.seed)
        model = create_model(cfg, torch.device("cpu"))
        model.train()
        row["generator_params"] = count_parameters(model.nets["G"])
        draw = patch_sampler(parts["train"], args.patch, args.seed, args.batch)
        wall = cpu = 0.0
        log(f"[{run}] {args.iterations} iterations ({cfg.netG}, norm {cfg.norm}, "
            f"{row['generator_params']} generator parameters)")
        for step in range(args.iterations):
            batch = draw()
            t0, c0 = time.perf_counter(), time.process_time()
            model.set_input(batch)
            model.optimize()
            model.update_learning_rate()  # one schedule "epoch" per iteration
            wall += time.perf_counter() - t0
            cpu += time.process_time() - c0
            if (step + 1) % max(1, args.iterations // 4) == 0:
                log(f"[{run}] it {step + 1}: {wall:.0f} s wall, {cpu:.0f} s CPU")
        row.update(train_time_s=wall, train_cpu_s=cpu, s_per_iteration=wall / args.iterations,
                   cpu_s_per_iteration=cpu / args.iterations,
                   nonfinite_steps=model.nonfinite_total)
        model.eval()
        test = parts["test"]
        x = torch.from_numpy(np.ascontiguousarray(test["input"]))[None, None]
        t0 = time.perf_counter()
        with torch.no_grad():
            pred = model.translate(x, "AtoB")[0, 0].numpy()
        row["translate_s"] = time.perf_counter() - t0
        row.update(region_metrics(pred, test["target"], test["mask"]))
        log(f"[{run}] held-out PSNR {row['mask']['PSNR']:.2f} dB in the brain mask, "
            f"{row['whole']['PSNR']:.2f} dB whole")
    except Exception as exc:  # noqa: BLE001 - report and go on with the other runs
        row["error"] = f"{type(exc).__name__}: {exc}"
        row["traceback"] = traceback.format_exc()
        log(f"[{run}] FAILED: {row['error']}")
    return row


# --------------------------------------------------------------------------- report


def _row(rows: list[dict], run: str) -> dict | None:
    return next((r for r in rows if r["run"] == run and "error" not in r), None)


def targets(rows: list[dict]) -> list[dict]:
    rev, p2p, cubic = (_row(rows, n) for n in ("paired_revgan3d", "pix2pix3d", "cubic"))
    out = []

    def check(text: str, measured: str, ok: bool | None) -> None:
        out.append({"target": text, "measured": measured,
                    "verdict": "n/a" if ok is None else "met" if ok else "missed"})

    if rev and cubic:
        gain = rev["mask"]["PSNR"] - cubic["mask"]["PSNR"]
        check("paired_revgan3d PSNR >= cubic + 1.5 dB (brain mask)",
              f"{rev['mask']['PSNR']:.2f} vs {cubic['mask']['PSNR']:.2f} ({gain:+.2f} dB)",
              gain >= 1.5)
    else:
        check("paired_revgan3d PSNR >= cubic + 1.5 dB (brain mask)", "not run", None)
    if rev and p2p:
        gain = rev["mask"]["PSNR"] - p2p["mask"]["PSNR"]
        check("paired_revgan3d PSNR >= pix2pix3d PSNR (brain mask)",
              f"{rev['mask']['PSNR']:.2f} vs {p2p['mask']['PSNR']:.2f} ({gain:+.2f} dB)",
              gain >= 0)
        ratio = rev["generator_params"] / p2p["generator_params"]
        check("paired_revgan3d generator parameters <= 60% of pix2pix3d's",
              f"{rev['generator_params']} vs {p2p['generator_params']} ({100 * ratio:.0f}%)",
              ratio <= 0.6)
    else:
        check("paired_revgan3d vs pix2pix3d (PSNR, parameters)", "not run", None)
    return out


def _fmt(value, spec: str) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) \
        else format(value, spec)


def markdown(results: dict) -> str:
    s, m = results["settings"], results["machine"]
    lines = [
        "# 3D x2 super-resolution: MNI152 T1 template" if not s["quick"] else
        "# 3D x2 super-resolution: smoke run on a generated phantom (--quick)",
        "",
        f"Volume {results['data']['source']}, {'x'.join(map(str, results['data']['shape']))} "
        f"voxels, [-1, 1] units. Input: 2x2x2 average, {s['input_upsampling']} "
        "back. Training patches from "
        f"axis-{SPLIT_AXIS} slices {results['data']['train_range']}, held-out region "
        f"{results['data']['test_range']} ({results['data']['gap']}-slice gap; the "
        "degradation reaches 3 voxels, so no leakage). Patch "
        f"{s['patch']}³, batch {s['batch']}, {s['iterations']} iterations per model "
        f"(constant LR, then linear decay over the second half; Adam beta1 "
        f"{s['beta1']}), ngf {s['ngf']}, ndf {s['ndf']}; paired_revgan3d: "
        f"edsrF_{s['depth']}, no norm, He init, full-resolution core, LR {s['rev_lr']}; "
        f"pix2pix3d: registry defaults, LR {s['lr']}; both: GAN + {s['lambda_L1']:g} x L1. "
        f"Held-out region translated with sliding windows ({s['window']}³, "
        "overlap 0.5, Gaussian blend). linear_filter: a 3³ filter of the models' input "
        "fitted by least squares on the training part's brain voxels (the best linear "
        "deblurring inside the brain; fitted there only, so its whole-region scores are "
        "not comparable).",
        "",
        f"Machine: {m['cpu']}, torch {m['torch']}, {m['threads']} thread(s); load average "
        f"{results['loadavg_start']} at start, {results['loadavg_end']} at end (a shared "
        "machine: wall times are inflated, CPU times are the steadier measure). Whole run "
        f"{results['total_s']:.0f} s wall.",
        "",
        "| row | residual | PSNR mask | SSIM mask | MAE mask | PSNR whole | SSIM whole | "
        "MAE whole | G params | s/iter (wall) | s/iter (CPU) | train s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results["rows"]:
        if "error" in r:
            lines.append(f"| {r['run']} | FAILED: {r['error']} |" + " |" * 10)
            continue
        k, w = r["mask"], r["whole"]
        lines.append(
            f"| {r['run']} | {_fmt(r.get('residual'), '')} | {k['PSNR']:.2f} | {k['SSIM']:.4f} "
            f"| {k['MAE']:.4f} | {w['PSNR']:.2f} | {w['SSIM']:.4f} | {w['MAE']:.4f} | "
            f"{_fmt(r.get('generator_params'), 'd')} | {_fmt(r.get('s_per_iteration'), '.3f')} "
            f"| {_fmt(r.get('cpu_s_per_iteration'), '.3f')} | "
            f"{_fmt(r.get('train_time_s'), '.0f')} |")
    lines += ["", "| target | measured | verdict |", "|---|---|---|"]
    lines += [f"| {t['target']} | {t['measured']} | {t['verdict']} |" for t in results["targets"]]
    return "\n".join(lines)


def _loadavg() -> list[float] | None:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


def run(args: argparse.Namespace, log=print) -> dict:
    start = time.perf_counter()
    loadavg_start = _loadavg()
    if args.quick:
        target, mask = synthetic_volume(40, args.seed)
        source = "generated phantom (revgan.demo.volumes.make_phantom)"
    else:
        target, mask = load_mni(args.resolution)
        source = f"nilearn MNI152 T1 template, {args.resolution} mm"
    volumes = {"target": target, "trilinear": low_resolution(target), "mask": mask,
               "cubic": cubic_upsampling(target)}
    volumes["input"] = volumes[args.input_upsampling]  # what the models translate
    parts = split(volumes, args.gap)
    test = parts["test"]
    test["linear_filter"] = linear_filter(parts["train"], test)
    rows = [{"run": name, "residual": None, **region_metrics(test[name], test["target"],
                                                             test["mask"])}
            for name in ("cubic", "trilinear", "linear_filter")]
    for name in args.runs:
        rows.append(train_and_test(name, parts, args, log))
    results = {"settings": {k: v for k, v in vars(args).items() if k not in ("out",)},
               "data": {"source": source, "shape": list(target.shape), "gap": args.gap,
                        "split_axis": SPLIT_AXIS, "train_range": parts["train_range"],
                        "test_range": parts["test_range"],
                        "train_brain_voxels": int(parts["train"]["mask"].sum()),
                        "test_brain_voxels": int(test["mask"].sum())},
               "machine": machine_info(torch.device("cpu")), "loadavg_start": loadavg_start,
               "rows": rows, "targets": targets(rows)}
    results["loadavg_end"] = _loadavg()
    results["total_s"] = time.perf_counter() - start
    return results


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--resolution", type=int, default=2, choices=(1, 2),
                   help="MNI template voxel size in mm")
    p.add_argument("--iterations", type=int, default=1500,
                   help="training steps per model (default 1500; was 2000 at batch 1)")
    p.add_argument("--patch", type=int, default=16, help="training patch side (multiple of 16)")
    p.add_argument("--batch", type=int, default=8,
                   help="patches per training step, both models (default 8; was 1)")
    p.add_argument("--window", type=int, default=None,
                   help="test-time sliding-window side (default: --patch)")
    p.add_argument("--beta1", type=float, default=0.5, help="Adam beta1, both models")
    p.add_argument("--ngf", type=int, default=32,
                   help="generator width, the same for all (default 32; was 16)")
    p.add_argument("--ndf", type=int, default=16, help="discriminator width")
    p.add_argument("--depth", type=int, default=4, help="couplings of the RevGAN core")
    p.add_argument("--lr", type=float, default=2e-4, help="pix2pix3d learning rate")
    p.add_argument("--rev_lr", type=float, default=3e-4,
                   help="paired_revgan3d learning rate (default 3e-4; was 1e-3, which "
                        "collapsed mid-run in pilots: docs/quality.md)")
    p.add_argument("--lambda_L1", type=float, default=1000.0,
                   help="L1 weight of the paired objective (GAN weight 1), both models; "
                        "1000: the 3D demo's measured setting (lower MAE than 100)")
    p.add_argument("--input_upsampling", default="cubic", choices=("trilinear", "cubic"),
                   help="how the models' input is brought back to full size (default cubic; "
                        "was trilinear)")
    p.add_argument("--gap", type=int, default=8, help="slices between training and held-out")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--runs", default="paired_revgan3d,pix2pix3d",
                   help=f"comma-separated model rows, of {', '.join(MODEL_RUNS)} (default: the "
                        "two --residual rows)")
    p.add_argument("--threads", type=int, default=1, help="torch threads")
    p.add_argument("--quick", action="store_true",
                   help="smoke run on a generated 40³ phantom: 2 iterations, batch 2, "
                        "patch 16, ngf 4")
    p.add_argument("--out", default=None, help="JSON path (default benchmarks/results/"
                   "sr3d.json, sr3d_quick.json with --quick); the markdown goes next to it")
    p.add_argument("--overwrite", action="store_true", help="replace existing result files")
    return p


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    args = build_parser().parse_args(argv)
    if args.quick:
        args.iterations, args.batch, args.patch, args.ngf, args.ndf, args.depth = \
            2, 2, 16, 4, 4, 2
    args.runs = [r.strip() for r in args.runs.split(",") if r.strip()]
    unknown = [r for r in args.runs if r not in MODEL_RUNS]
    if unknown:
        raise UserError(f"--runs: unknown {', '.join(unknown)}; choose from "
                        f"{', '.join(MODEL_RUNS)}")
    if args.window is None:
        args.window = args.patch
    for key in ("iterations", "batch", "ngf", "ndf", "depth", "threads"):
        if getattr(args, key) < 1:
            raise UserError(f"--{key} must be at least 1, got {getattr(args, key)}")
    if args.patch < 16 or args.patch % 16:
        raise UserError(f"--patch must be a multiple of 16 (the 3D U-Net's stride), "
                        f"got {args.patch}")
    if args.window < args.patch or args.window % 16:
        raise UserError(f"--window must be a multiple of 16 and at least --patch, "
                        f"got {args.window}")
    if args.gap < 6:
        raise UserError(f"--gap must be at least 6 (the degradation reaches 3 voxels), "
                        f"got {args.gap}")
    return args


@exits_cleanly
def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    default = RESULTS / ("sr3d_quick.json" if args.quick else "sr3d.json")
    out, report = output_paths(args.out, default, args.overwrite)
    results = run(args, log=lambda msg: print(msg, file=sys.stderr, flush=True))
    return publish(results, markdown(results), out, report)


if __name__ == "__main__":
    main()
