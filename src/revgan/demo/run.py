"""``revgan demo``: a self-contained run on generated data (no download, CPU friendly).

Makes label maps ↔ rendered street scenes (:mod:`revgan.demo.scenes`), trains an unpaired and
a paired RevGAN, tests both and prints their numbers beside the trivial baseline (each input
taken as its own translation) and where the pages are. ``--3d`` does the same for volumes
(:mod:`revgan.demo.volumes`): half-resolution phantoms → full resolution.

The default schedule is sized to finish in about two minutes on two CPU cores; ``--full`` is
the longer one (bigger generators, more steps), ``--quick`` a smoke run of seconds.
"""

from __future__ import annotations

import os
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from revgan.config import option
from revgan.errors import UserError


@dataclass
class DemoOptions:
    """The options of ``revgan demo``."""

    root: str = option("./datasets/revgan_demo", "where to write the data")
    checkpoints_dir: str = option("./checkpoints", "where the runs go")
    results_dir: str = option("./results/", "where the test pages go")
    full: bool = option(False, "the longer schedule (bigger generators, more steps; about "
                               "15 minutes on two CPU cores)")
    quick: bool = option(False, "a tiny smoke run (seconds)")
    three_d: bool = option(False, "the volume demo", flags=("--3d",))
    epochs: int | None = option(None, "epochs per model (unset: the schedule's)")
    n_train: int | None = option(None, "training scenes or volumes (unset: the schedule's)")
    size: int | None = option(None, "image size, 2D (unset: the schedule's)")
    threads: int = option(1, "CPU threads per process; these networks are small, and one "
                             "thread wastes no time waiting on the others")
    gpu_ids: str = option("auto", "'auto' (CUDA if present), '-1' for the CPU, or a device id")
    seed: int = option(0, "random seed (data and training)")
    no_progress: bool = option(False, "no progress bars")


@dataclass(frozen=True)
class Schedule2D:
    """Data, networks and steps of the 2D demo."""

    size: int
    n_train: int
    n_eval: int
    ngf: int
    netG: str
    batch_size: int
    lr: float
    unpaired_epochs: int
    paired_epochs: int
    lambda_identity: float


@dataclass(frozen=True)
class Schedule3D:
    """Data, networks and steps of the 3D demo."""

    shape: int
    n_train: int
    n_test: int
    netG: str
    ngf: int
    patch: int
    samples_per_volume: int
    batch_size: int
    lr: float
    epochs: int
    residual: bool
    lambda_L1: float


# The default 2D schedule was chosen by measuring single-thread CPU seconds per training
# image and the test error against the true photos: a core of 3 couplings at ngf 16 costs a
# fifth of the ngf 32 / 6-coupling generator per image, and batches of 4 amortise the
# per-step overhead. 250 unpaired steps (1000 scenes, ~140 s) and 200 paired ones (~90 s),
# side by side, reach MAE 0.218 and 0.193 (PSNR 17.1 and 17.8 dB), a little better than the
# ngf 32 / 6-coupling generator after 400 steps of one scene (0.237 and 0.203, in
# benchmarks/results/quality.md). A higher learning rate did not help (5e-4: unpaired 0.244,
# paired 0.199). The identity loss is off: it asks G_AB to leave photos unchanged, which is
# no help for labels → photo (CycleGAN leaves it off for such pairs) and costs two of the
# eight generator passes of an unpaired step.
SCHEDULES_2D = {
    "quick": Schedule2D(size=32, n_train=8, n_eval=4, ngf=8, netG="resnet_2blocks",
                        batch_size=2, lr=2e-4, unpaired_epochs=1, paired_epochs=1,
                        lambda_identity=0.0),
    "default": Schedule2D(size=64, n_train=200, n_eval=16, ngf=16, netG="resnet_3blocks",
                          batch_size=4, lr=2e-4, unpaired_epochs=5, paired_epochs=4,
                          lambda_identity=0.0),
    "full": Schedule2D(size=64, n_train=200, n_eval=16, ngf=32, netG="resnet_6blocks",
                       batch_size=1, lr=2e-4, unpaired_epochs=2, paired_epochs=3,
                       lambda_identity=0.5),
}
# 3D, chosen by measuring the test MAE against the input's (21.1 here): the old setting
# (instance norm, the reference's init, a stride-2 core, window 0..1000) ended at 44, worse
# than its input. Now: no normalisation layers (as in EDSR, the super-resolution network
# edsrF follows), since instance norm removes each patch's mean intensity, which
# super-resolution must keep, and makes windowed inference depend on the window; He
# (kaiming) initialisation, which keeps the signal's scale through un-normalised layers; the
# core at full resolution (nothing to undo by a transposed convolution); learning rate 1e-3
# (2e-3: 21.7). The intensity window has a margin around the phantoms' 0..1000, so neither
# the background nor the brightest organ sits where the output tanh saturates (44 -> 33).
# That reached 19.1 in 512 steps (9% below the input). Then, measured the same way (512
# steps, one thread): --residual, the network learning only the correction to its blurred
# input, 20.5 with a random initial correction but 17.1 (19% below) with the correction
# starting at zero (the generator starts as the identity, i.e. at the input's own score);
# lambda_L1 1000 instead of 100 (the GAN term, which adds texture rather than accuracy,
# weighs a tenth as much) 16.9 (20%); 640 steps, with --recompute_stages off (these patches
# are tiny: recomputation only costs time), 16.4 (22% below) in 152 s wall on one core.
# (Those runs had a tanh on the correction; it is linear now, see
# revgan.networks.generators.make_correction: 16.45, 22% below, 148 s wall for the demo.)
SCHEDULES_3D = {
    "quick": Schedule3D(shape=24, n_train=2, n_test=1, netG="edsrF_2", ngf=4, patch=16,
                        samples_per_volume=2, batch_size=1, lr=1e-3, epochs=1, residual=True,
                        lambda_L1=1000.0),
    "default": Schedule3D(shape=32, n_train=8, n_test=2, netG="edsrF_4", ngf=16, patch=16,
                          samples_per_volume=8, batch_size=1, lr=1e-3, epochs=10,
                          residual=True, lambda_L1=1000.0),
    "full": Schedule3D(shape=32, n_train=8, n_test=2, netG="edsrF_4", ngf=16, patch=16,
                       samples_per_volume=8, batch_size=1, lr=1e-3, epochs=20, residual=True,
                       lambda_L1=1000.0),
}
WINDOW_3D = (-250.0, 1250.0)


def _schedule_name(args: DemoOptions) -> str:
    if args.quick and args.full:
        raise UserError("choose one of --quick and --full")
    return "quick" if args.quick else "full" if args.full else "default"


@contextmanager
def _threads(count: int):
    """Run with ``count`` intra-op threads, restoring the caller's setting after."""
    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _train_and_test(model: str, dataroot: Path, name: str, args: DemoOptions, epochs: int,
                    shared: dict, training: dict) -> dict:
    """Train ``model`` for ``epochs`` (constant learning rate for the first half, then linear
    decay), test it with metrics, and return its times, folders and mean metrics.

    ``shared``: options of both training and testing (data preprocessing); ``training``:
    options of training only (networks, steps). The test takes the networks from the run.
    """
    from revgan.infer.test_split import run_test
    from revgan.models.registry import build_config
    from revgan.train.loop import train

    common = dict(dataroot=str(dataroot), name=name, checkpoints_dir=args.checkpoints_dir,
                  gpu_ids=args.gpu_ids, seed=args.seed, no_progress=args.no_progress,
                  overwrite=True, **shared)
    decay = epochs // 2
    start = time.perf_counter()
    run_dir = train(build_config(model, is_train=True, values=dict(
        common, n_epochs=epochs - decay, n_epochs_decay=decay, display_freq=400,
        print_freq=100, save_epoch_freq=1000, num_threads=0, **training)))
    seconds = time.perf_counter() - start
    out = run_test(build_config(model, is_train=False, values=dict(
        common, results_dir=args.results_dir, eval_metrics=True, num_test=1000)))
    return {"model": model, "train_seconds": seconds, "results": out,
            "page": out / "index.html", "train_page": Path(run_dir) / "web" / "index.html",
            "metrics": _means(out)}


def _usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _quiet_train_and_test(args: DemoOptions, job: dict) -> dict:
    """``_train_and_test`` in a worker process: no progress bar, its printing discarded
    (the run's loss_log.txt and pages keep everything), ``args.threads`` threads."""
    import contextlib

    torch.set_num_threads(args.threads)
    quiet = DemoOptions(**{**vars(args), "no_progress": True})
    with open(os.devnull, "w") as sink, contextlib.redirect_stdout(sink):
        return _train_and_test(args=quiet, **job)


def _side_by_side(args: DemoOptions, first: dict, second: dict) -> list[dict]:
    """Train and test two models: ``second`` in a worker process while ``first`` runs here
    when two CPUs are free for it (two single-thread processes keep two cores busy with no
    time lost to threads waiting on each other), else one after the other."""
    on_gpu = args.gpu_ids.strip() not in ("-1", "cpu") and torch.cuda.is_available()
    if on_gpu or _usable_cpus() < 2 * args.threads:
        return [_train_and_test(args=args, **first), _train_and_test(args=args, **second)]
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        later = pool.submit(_quiet_train_and_test, args, second)
        result = _train_and_test(args=args, **first)
        return [result, later.result()]


def _means(results: Path) -> dict[str, float]:
    """``<pair>/<metric>`` -> mean over the test items, from the test's metrics.json."""
    import json

    summary = json.loads((results / "metrics.json").read_text())
    return {f"{pair}/{key}": stats["mean"]
            for pair, info in summary.get("pairs", {}).items()
            for key, stats in info["metrics"].items() if stats["mean"] is not None}


def input_baseline(results: Path) -> dict[str, float]:
    """The trivial baseline's metrics: every test input taken as its own translation.

    Compares ``images/real_A`` with ``images/real_B`` as the test compares ``fake_B`` with
    ``real_B``: images in [-1, 1] (range 2, the ``*_norm`` numbers), volumes in their files'
    units with the target's range (the ``*_file`` numbers). Returns MAE, PSNR and SSIM.
    """
    from revgan.data.images import read_image
    from revgan.data.volumes import read_volume
    from revgan.evaluation.metrics import paired_metrics_per_item

    rows = []
    for source in sorted((results / "images" / "real_A").iterdir()):
        volume = source.name.endswith(".nii.gz")
        if not volume and source.suffix != ".png":
            continue
        if not volume and (source.parent / (source.stem + ".nii.gz")).exists():
            continue  # the montage of a volume
        target = results / "images" / "real_B" / source.name
        if volume:
            a, b = (np.asarray(read_volume(p)[0], dtype=np.float64) for p in (source, target))
            data_range = float(b.max() - b.min()) or 1.0
        else:
            a, b = (np.asarray(read_image(p, 3)[0], dtype=np.float64) for p in (source, target))
            data_range = 2.0
        rows += paired_metrics_per_item(torch.from_numpy(a)[None], torch.from_numpy(b)[None],
                                        data_range)
    if not rows:
        raise UserError(f"no test inputs to compare in {results / 'images'}")
    return {key: float(np.mean([r[key] for r in rows])) for key in ("MAE", "PSNR", "SSIM")}


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _lower_by(model: float | None, baseline: float) -> str:
    if model is None:
        return "no result"
    change = 100 * (1 - model / baseline)
    return f"{abs(change):.0f}% {'lower' if change >= 0 else 'higher'} than the input's"


def run_2d(args: DemoOptions) -> list[dict]:
    from revgan.demo.scenes import make_demo_dataset

    plan = SCHEDULES_2D[_schedule_name(args)]
    size = args.size or plan.size
    n_train = args.n_train or plan.n_train
    data = make_demo_dataset(Path(args.root), size=size, n_train=n_train, n_test=plan.n_eval,
                             n_val=plan.n_eval, seed=args.seed)
    training = dict(ngf=plan.ngf, ndf=plan.ngf, netG=plan.netG, batch_size=plan.batch_size,
                    lr=plan.lr)
    # unpaired: random crops of slightly enlarged scenes (the reference's augmentation);
    # paired: the scenes as they are
    resized = dict(load_size=size + size // 8, crop_size=size)
    runs = _side_by_side(
        args,
        dict(model="unpaired_revgan", dataroot=data["unpaired"], name="demo_unpaired_revgan",
             epochs=args.epochs or plan.unpaired_epochs, shared=resized,
             training=dict(training, lambda_identity=plan.lambda_identity)),
        dict(model="paired_revgan", dataroot=data["paired"], name="demo_paired_revgan",
             epochs=args.epochs or plan.paired_epochs, shared=dict(preprocess="none"),
             training=training))
    baseline = input_baseline(runs[-1]["results"])
    print(f"\nrevgan demo (2D): label maps → rendered scenes, {n_train} training scenes of "
          f"{size}x{size}, {len(list((data['paired'] / 'test').iterdir()))} test scenes")
    print(f"{'':<26}{'train s':>8}{'MAE A→B':>10}{'PSNR A→B':>10}{'SSIM A→B':>10}"
          f"{'cycle L1 A':>12}  page")
    for run in runs:
        m = run["metrics"]
        print(f"{run['model']:<26}{run['train_seconds']:>8.0f}"
              f"{_fmt(m.get('fake_B_vs_real_B/MAE_norm'), '.3f'):>10}"
              f"{_fmt(m.get('fake_B_vs_real_B/PSNR_norm'), '.2f'):>10}"
              f"{_fmt(m.get('fake_B_vs_real_B/SSIM_norm'), '.3f'):>10}"
              f"{_fmt(m.get('rec_A_vs_real_A/L1_norm'), '.3f'):>12}  {run['page']}")
    print(f"{'baseline: input as output':<26}{'-':>8}{baseline['MAE']:>10.3f}"
          f"{baseline['PSNR']:>10.2f}{baseline['SSIM']:>10.3f}{'-':>12}")
    print("MAE and PSNR in [-1, 1] units against the true photo; "
          + "; ".join(f"{r['model']}: MAE "
                      + _lower_by(r["metrics"].get("fake_B_vs_real_B/MAE_norm"),
                                  baseline["MAE"]) for r in runs))
    print("training pages: " + ", ".join(str(r["train_page"]) for r in runs))
    print(f"Train on the same data yourself: revgan train --dataroot {data['unpaired']} "
          f"--name my_run --model unpaired_revgan --load_size {size + size // 8} "
          f"--crop_size {size}")
    return runs


def run_3d(args: DemoOptions) -> dict:
    """Blurred (half-resolution) phantoms → sharp ones with ``paired_revgan3d``."""
    from revgan.demo.volumes import make_demo_volumes
    from revgan.infer.translate import TranslateOptions, translate_files

    plan = SCHEDULES_3D[_schedule_name(args)]
    shape = (plan.shape,) * 3
    data = make_demo_volumes(Path(args.root) / "volumes", n_train=args.n_train or plan.n_train,
                             n_test=plan.n_test, shape=shape, seed=args.seed)
    run = _train_and_test(
        "paired_revgan3d", data["root"], "demo_paired_revgan3d", args,
        args.epochs or plan.epochs, {},
        dict(netG=plan.netG, ngf=plan.ngf, ndf=plan.ngf, norm="none", init_type="kaiming",
             n_downsampling=0,
             patch_size=(plan.patch,) * 3, samples_per_volume=plan.samples_per_volume,
             batch_size=plan.batch_size, lr=plan.lr, intensity="window", window=WINDOW_3D,
             residual=plan.residual, lambda_L1=plan.lambda_L1, recompute_stages="off"))
    source = data["files"]["testA"][0]
    output = Path(args.results_dir) / "demo_paired_revgan3d" / f"translated_{source.name}"
    translate_files(TranslateOptions(
        model_dir=str(Path(args.checkpoints_dir) / "demo_paired_revgan3d"), input=str(source),
        output=str(output), overwrite=True, gpu_ids=args.gpu_ids, no_progress=True))
    baseline = input_baseline(run["results"])
    m = run["metrics"]
    print(f"\nrevgan demo (3D): half-resolution → full-resolution phantoms, "
          f"{'x'.join(map(str, shape))} voxels, trained {run['train_seconds']:.0f} s")
    print(f"  {'':<20}{'model':>10}{'input':>10}{'change':>12}")
    for label, key in (("MAE (input units)", "MAE"), ("PSNR dB", "PSNR"), ("SSIM", "SSIM")):
        value = m.get(f"fake_B_vs_real_B/{key}_file")
        change = ("-" if value is None else f"{100 * (value / baseline[key] - 1):+.0f}%"
                  if key == "MAE" else f"{value - baseline[key]:+.2f}{' dB' * (key == 'PSNR')}")
        print(f"  {label:<20}{_fmt(value, '.3f'):>10}{baseline[key]:>10.3f}{change:>12}")
    print(f"  (input: the half-resolution volume itself, the trivial baseline; model MAE "
          f"{_lower_by(m.get('fake_B_vs_real_B/MAE_file'), baseline['MAE'])})")
    print(f"full held-out volume translated to {output} (same affine as {source})")
    print(f"page with axial/coronal/sagittal mid-slices: {run['page']}")
    return run


def run_demo(args: DemoOptions) -> list[dict]:
    """The demo ``args`` describe; returns each model's result (name, times, metrics)."""
    if args.epochs is not None and args.epochs < 1:
        raise UserError("--epochs must be at least 1")
    if args.threads < 1:
        raise UserError("--threads must be at least 1")
    _schedule_name(args)
    start, cpu = time.perf_counter(), os.times()
    with _threads(args.threads):
        runs = [run_3d(args)] if args.three_d else run_2d(args)
    used = os.times()
    cpu_seconds = sum(used[:4]) - sum(cpu[:4])  # user and system, with worker processes
    print(f"demo finished in {time.perf_counter() - start:.0f} s "
          f"(CPU {cpu_seconds:.0f} s, {args.threads} thread{'s' if args.threads > 1 else ''} "
          "per process)")
    return runs
