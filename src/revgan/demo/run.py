"""``revgan demo``: a self-contained run on generated data (no download, CPU friendly).

Makes label maps ↔ rendered street scenes (:mod:`revgan.demo.scenes`), trains an unpaired and
a paired RevGAN for a short schedule, tests both and prints where the pages are plus a few
numbers. ``--3d`` does the same for volumes (:mod:`revgan.demo.volumes`).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from revgan.cli.argparsing import ArgumentParser
from revgan.errors import UserError

# Sized to finish in a few minutes on two CPU cores while visibly learning.
DEMO_2D = dict(size=64, n_train=200, n_val=16, n_test=16, ngf=32, ndf=32, netG="resnet_6blocks")


def _parser() -> argparse.ArgumentParser:
    p = ArgumentParser(prog="revgan demo", description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--root", default="./datasets/revgan_demo", help="where to write the data")
    p.add_argument("--checkpoints_dir", default="./checkpoints")
    p.add_argument("--results_dir", default="./results/")
    p.add_argument("--epochs", type=int, default=None,
                   help="epochs per model (default: 2 unpaired, 3 paired; 3D: 16)")
    p.add_argument("--n_train", type=int, default=None, help="training scenes")
    p.add_argument("--size", type=int, default=None, help="image size (2D)")
    p.add_argument("--gpu_ids", default="auto")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="a tiny smoke run (seconds)")
    p.add_argument("--3d", dest="three_d", action="store_true", help="the volume demo")
    p.add_argument("--no_progress", action="store_true")
    return p


def _train_and_test(model: str, dataroot: Path, name: str, args, common: list[str],
                    epochs: int) -> dict:
    from revgan.cli.main import cmd_test, cmd_train

    flags = ["--dataroot", str(dataroot), "--name", name, "--model", model,
             "--checkpoints_dir", args.checkpoints_dir, "--gpu_ids", args.gpu_ids,
             "--seed", str(args.seed), *common]
    if args.no_progress:
        flags.append("--no_progress")
    start = time.perf_counter()
    run_dir = Path(args.checkpoints_dir) / name
    resume = ["--overwrite"] if run_dir.exists() else []
    decay = epochs // 2  # constant learning rate for the first half, then linear decay
    cmd_train([*flags, *resume, "--n_epochs", str(epochs - decay), "--n_epochs_decay",
               str(decay), "--display_freq", "100", "--print_freq", "50",
               "--save_epoch_freq", "1000"])
    seconds = time.perf_counter() - start
    cmd_test([*flags, "--results_dir", args.results_dir, "--eval_metrics", "--overwrite",
              "--num_test", "1000"])
    out = Path(args.results_dir) / name / "test_latest"
    summary = json.loads((out / "metrics.json").read_text())
    return {"model": model, "train_seconds": seconds, "page": out / "index.html",
            "train_page": run_dir / "web" / "index.html", "summary": summary}


def _metric(summary: dict, pair: str, key: str) -> float | None:
    entry = summary.get("pairs", {}).get(pair, {}).get("metrics", {}).get(key)
    return None if entry is None else entry.get("mean")


def run_2d(args) -> list[dict]:
    from revgan.demo.scenes import make_demo_dataset

    size = args.size or (32 if args.quick else DEMO_2D["size"])
    n_train = args.n_train or (8 if args.quick else DEMO_2D["n_train"])
    n_eval = 4 if args.quick else DEMO_2D["n_test"]
    data = make_demo_dataset(Path(args.root), size=size, n_train=n_train, n_test=n_eval,
                             n_val=n_eval, seed=args.seed)
    ngf = 8 if args.quick else DEMO_2D["ngf"]
    netG = "resnet_2blocks" if args.quick else DEMO_2D["netG"]
    common = ["--ngf", str(ngf), "--ndf", str(ngf), "--netG", netG,
              "--load_size", str(size + size // 8), "--crop_size", str(size),
              "--num_threads", "0"]
    # An unpaired step runs the generator six times, a paired one twice: about the same
    # minutes for 2 and 3 epochs (~400 and ~600 steps), enough to see the translation.
    unpaired_epochs = args.epochs or (1 if args.quick else 2)
    paired_epochs = args.epochs or (1 if args.quick else 3)
    runs = [_train_and_test("unpaired_revgan", data["unpaired"], "demo_unpaired_revgan", args,
                            common, unpaired_epochs),
            _train_and_test("paired_revgan", data["paired"], "demo_paired_revgan", args,
                            common + ["--preprocess", "none"], paired_epochs)]
    print("\nrevgan demo (2D): label maps <-> rendered scenes, "
          f"{n_train} training images of {size}x{size}")
    print(f"{'model':<18}{'train s':>9}{'L1 A→B vs truth':>17}{'PSNR A→B':>10}"
          f"{'cycle L1 A':>12}  page")
    for run in runs:
        s = run["summary"]
        l1 = _metric(s, "fake_B_vs_real_B", "MAE_norm")
        psnr = _metric(s, "fake_B_vs_real_B", "PSNR_norm")
        cycle = _metric(s, "rec_A_vs_real_A", "L1_norm")
        fmt = lambda v, f: "-" if v is None else format(v, f)  # noqa: E731
        print(f"{run['model']:<18}{run['train_seconds']:>9.0f}{fmt(l1, '.3f'):>17}"
              f"{fmt(psnr, '.2f'):>10}{fmt(cycle, '.3f'):>12}  {run['page']}")
    print("(errors in [-1, 1] units; training pages: "
          + ", ".join(str(r["train_page"]) for r in runs) + ")")
    print(f"Train on the same data yourself: python train.py --dataroot {data['unpaired']} "
          f"--name my_run --model unpaired_revgan --load_size {size + size // 8} "
          f"--crop_size {size}")
    return runs


def run_3d(args) -> dict:
    """Blurred (half-resolution) phantoms → sharp ones with ``paired_revgan3d``."""
    from revgan.cli.main import cmd_translate
    from revgan.demo.volumes import make_demo_volumes

    shape = (24, 24, 24) if args.quick else (32, 32, 32)
    data = make_demo_volumes(Path(args.root) / "volumes", n_train=2 if args.quick else 8,
                             n_test=1 if args.quick else 2, shape=shape, seed=args.seed)
    common = ["--netG", "edsrF_2" if args.quick else "edsrF_4",
              "--ngf", "4" if args.quick else "16", "--ndf", "4" if args.quick else "16",
              "--patch_size", "16", "--samples_per_volume", "2" if args.quick else "8",
              "--num_threads", "0", "--intensity", "window", "--window", "0", "1000"]
    epochs = args.epochs or (1 if args.quick else 16)
    run = _train_and_test("paired_revgan3d", data["root"], "demo_paired_revgan3d", args,
                          common, epochs)
    source = sorted((Path(data["root"]) / "testA").glob("*.nii.gz"))[0]
    output = Path(args.results_dir) / "demo_paired_revgan3d" / f"translated_{source.name}"
    cmd_translate(["--model_dir", str(Path(args.checkpoints_dir) / "demo_paired_revgan3d"),
                   "--input", str(source), "--output", str(output), "--overwrite",
                   "--gpu_ids", args.gpu_ids, "--no_progress"])
    s = run["summary"]
    print(f"\nrevgan demo (3D): half-resolution → full-resolution phantoms, "
          f"{shape[0]}³ volumes, trained {run['train_seconds']:.0f} s")
    for label, key in (("MAE (input units)", "MAE_file"), ("PSNR dB", "PSNR_file"),
                       ("SSIM", "SSIM_file")):
        value = _metric(s, "fake_B_vs_real_B", key)
        print(f"  {label:<18} {'-' if value is None else format(value, '.3f')}")
    print(f"full held-out volume translated to {output} (same affine as {source})")
    print(f"page with axial/coronal/sagittal mid-slices: {run['page']}")
    return run


def main(argv: list[str]) -> None:
    args = _parser().parse_args(argv)
    if args.epochs is not None and args.epochs < 1:
        raise UserError("--epochs must be at least 1")
    if args.three_d:
        run_3d(args)
        return
    run_2d(args)
