"""Command-line options, with the reference's flag names (upstream and older RevGAN ones).

Model-dependent defaults (dataset mode, GAN loss, generator, norm, 3D sizes) are applied
after the model name is known, as pytorch-CycleGAN-and-pix2pix does; explicit flags win.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import torch

from revgan.cli.argparsing import ArgumentParser
from revgan.errors import UserError
from revgan.models.losses import GAN_MODES

MODEL_DEFAULTS: dict[str, dict] = {
    "unpaired_revgan": dict(dataset_mode="unaligned", gan_mode="lsgan", pool_size=50,
                            netG="resnet_9blocks", norm="instance", no_dropout=True),
    "paired_revgan": dict(dataset_mode="aligned", gan_mode="vanilla", pool_size=0,
                          netG="resnet_9blocks", norm="instance", no_dropout=True),
    "cycle_gan": dict(dataset_mode="unaligned", gan_mode="lsgan", pool_size=50,
                      netG="resnet_9blocks", norm="instance", no_dropout=True),
    "pix2pix": dict(dataset_mode="aligned", gan_mode="vanilla", pool_size=0, netG="unet_256",
                    norm="batch", no_dropout=False),
    "test": dict(dataset_mode="single", netG="resnet_9blocks", norm="instance",
                 no_dropout=True),
}
# 3D: the same objectives with dims=3; sizes follow the reference's 3D experiments.
_3D = dict(dims=3, input_nc=1, output_nc=1, ngf=32, ndf=32, lambda_identity=0.0,
           preprocess="none", norm="instance", patch_size=(32, 32, 32))
MODEL_DEFAULTS.update({
    "unpaired_revgan3d": {**MODEL_DEFAULTS["unpaired_revgan"], **_3D, "netG": "edsrF_6"},
    "paired_revgan3d": {**MODEL_DEFAULTS["paired_revgan"], **_3D, "netG": "edsrF_6"},
    "cycle_gan3d": {**MODEL_DEFAULTS["cycle_gan"], **_3D, "netG": "resnet_6blocks"},
    "pix2pix3d": {**MODEL_DEFAULTS["pix2pix"], **_3D, "netG": "unet_32"},
})
MODELS = tuple(MODEL_DEFAULTS)

# Options that define the networks' shapes: `test` takes them from the training run unless
# they are given explicitly, so a checkpoint is always rebuilt as it was trained.
ARCHITECTURE_KEYS = ("input_nc", "output_nc", "ngf", "ndf", "netG", "netD", "n_layers_D",
                     "norm", "n_downsampling", "coupling", "fully_reversible", "no_dropout",
                     "dims", "intensity", "window", "intensity_B", "window_B", "percentiles",
                     "patch_size")


def _int_tuple(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.replace("x", ",").split(",") if v)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected integers like 32 or 32,32,16: {text}")
    return values


def _size_option(value) -> tuple[int, ...] | None:
    if value is None:
        return None
    return value if isinstance(value, tuple) else tuple(value)


def build_parser(is_train: bool) -> argparse.ArgumentParser:
    p = ArgumentParser(
        prog="revgan train" if is_train else "revgan test",
        description=("Train" if is_train else "Test") + " an image-to-image translation model.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter, allow_abbrev=False)
    g = p.add_argument_group("basic")
    g.add_argument("--dataroot", required=True,
                   help="dataset folder (trainA/trainB, train/, or volumes in <phase>A/B)")
    g.add_argument("--name", default="experiment_name", help="run name: checkpoints/<name>")
    g.add_argument("--gpu_ids", default="auto",
                   help="'auto' (CUDA if present), '-1' for CPU, or e.g. '0' or '0,1'")
    g.add_argument("--checkpoints_dir", default="./checkpoints")
    g.add_argument("--seed", type=int, default=0, help="random seed")
    g.add_argument("--deterministic", action="store_true",
                   help="deterministic algorithms (bitwise reproducible on CPU)")
    g.add_argument("--overwrite", action="store_true",
                   help="allow replacing an existing run or results folder")
    g.add_argument("--verbose", action="store_true")
    g.add_argument("--suffix", default="", help="appended to --name (may use {model}, {netG})")

    g = p.add_argument_group("model")
    g.add_argument("--model", default="unpaired_revgan", choices=MODELS)
    g.add_argument("--dims", type=int, choices=(2, 3), default=2,
                   help="2 for images, 3 for volumes (set by the *3d model names)")
    g.add_argument("--input_nc", type=int, default=3, help="channels of domain A")
    g.add_argument("--output_nc", type=int, default=3, help="channels of domain B")
    g.add_argument("--ngf", type=int, default=64, help="generator filters in the first layer")
    g.add_argument("--ndf", type=int, default=64, help="discriminator filters")
    g.add_argument("--netG", "--which_model_netG", dest="netG", default="resnet_9blocks",
                   help="resnet_<N>blocks (RevGAN: core depth N), edsrF_<N>, unet_128, "
                        "unet_256, unet_<size>")
    g.add_argument("--netD", "--which_model_netD", dest="netD", default="basic",
                   help="basic (70x70 PatchGAN), n_layers, pixel")
    g.add_argument("--n_layers_D", type=int, default=3, help="layers of an n_layers D")
    g.add_argument("--norm", default="instance",
                   choices=("instance", "batch", "sync_batch", "none"))
    g.add_argument("--init_type", default="normal",
                   choices=("normal", "xavier", "kaiming", "orthogonal"))
    g.add_argument("--init_gain", type=float, default=0.02)
    g.add_argument("--no_dropout", action="store_true", help="no dropout in the generator")
    g.add_argument("--coupling", default="additive", choices=("additive", "affine"),
                   help="coupling of the reversible core")
    g.add_argument("--n_downsampling", type=int, default=None,
                   help="stride-2 layers in the generator's encoder (default: 2; 1 for edsrF)")
    g.add_argument("--use_naive", action="store_true",
                   help="plain autograd in the reversible core (no memory saving)")
    g.add_argument("--fully_reversible", action="store_true",
                   help="invertible encoders/decoders too (whole generator memory-flat)")

    g = p.add_argument_group("data")
    g.add_argument("--dataset_mode", default="unaligned",
                   choices=("aligned", "unaligned", "single"))
    g.add_argument("--direction", "--which_direction", dest="direction", default="AtoB",
                   choices=("AtoB", "BtoA"))
    g.add_argument("--serial_batches", action="store_true", help="no shuffling, B in order")
    g.add_argument("--num_threads", "--nThreads", dest="num_threads", type=int, default=4,
                   help="data loading workers")
    g.add_argument("--batch_size", "--batchSize", dest="batch_size", type=int, default=1)
    g.add_argument("--load_size", "--loadSize", dest="load_size", type=int, default=286)
    g.add_argument("--crop_size", "--fineSize", dest="crop_size", type=int, default=256)
    g.add_argument("--max_dataset_size", type=float, default=math.inf)
    g.add_argument("--preprocess", "--resize_or_crop", dest="preprocess",
                   default="resize_and_crop",
                   choices=("resize_and_crop", "crop", "scale_width", "scale_width_and_crop",
                            "none"))
    g.add_argument("--no_flip", action="store_true")
    g.add_argument("--display_winsize", type=int, default=256)
    g.add_argument("--epoch", "--which_epoch", dest="epoch", default="latest",
                   help="which checkpoint to load: 'latest', 'best' or an epoch number")

    g = p.add_argument_group("volumes (3D)")
    g.add_argument("--patch_size", type=_int_tuple, default=None,
                   help="training patch size, e.g. 32 or 32,32,16")
    g.add_argument("--samples_per_volume", type=int, default=4)
    g.add_argument("--foreground_sampling", action="store_true",
                   help="draw patch centres from voxels above the background")
    g.add_argument("--flip_axes", type=_int_tuple, default=(0, 1, 2),
                   help="spatial axes for random flips ('' for none)")
    g.add_argument("--intensity", default="minmax",
                   choices=("minmax", "percentile", "window", "zscore", "none"),
                   help="intensity mapping of volumes to [-1, 1] (saved with the model)")
    g.add_argument("--window", type=float, nargs=2, default=None, metavar=("LOW", "HIGH"),
                   help="fixed intensity window, e.g. -1000 2000 for CT")
    g.add_argument("--intensity_B", default=None,
                   choices=("minmax", "percentile", "window", "zscore", "none"),
                   help="intensity mapping of domain B if it differs from --intensity")
    g.add_argument("--window_B", type=float, nargs=2, default=None, metavar=("LOW", "HIGH"),
                   help="fixed window of domain B if it differs from --window")
    g.add_argument("--percentiles", type=float, nargs=2, default=(0.5, 99.5))
    g.add_argument("--window_size", type=_int_tuple, default=None,
                   help="sliding-window size for full-size inference (default: patch size)")
    g.add_argument("--overlap", type=float, default=0.5, help="sliding-window overlap")

    g = p.add_argument_group("precision and speed")
    g.add_argument("--amp", default="none", choices=("none", "bf16", "fp16"))
    g.add_argument("--compile", nargs="?", const="inductor", default=None, metavar="BACKEND",
                   help="torch.compile the non-reversible parts (backend: inductor)")

    if is_train:
        _add_train_options(p)
    else:
        _add_test_options(p)
    return p


def _add_train_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("training")
    g.add_argument("--phase", default="train")
    g.add_argument("--n_epochs", "--niter", dest="n_epochs", type=int, default=100,
                   help="epochs at the starting learning rate")
    g.add_argument("--n_epochs_decay", "--niter_decay", dest="n_epochs_decay", type=int,
                   default=100, help="epochs of linear decay to zero")
    g.add_argument("--epoch_count", type=int, default=1,
                   help="starting epoch number (the reference's manual resume)")
    g.add_argument("--continue_train", action="store_true",
                   help="resume from the latest checkpoint with optimizer and RNG state")
    g.add_argument("--beta1", type=float, default=0.5)
    g.add_argument("--lr", type=float, default=0.0002)
    g.add_argument("--gan_mode", default="lsgan", choices=GAN_MODES)
    g.add_argument("--no_lsgan", dest="gan_mode", action="store_const", const="vanilla",
                   help="the older name for --gan_mode vanilla")
    g.add_argument("--pool_size", type=int, default=50, help="image pool size")
    g.add_argument("--lr_policy", default="linear",
                   choices=("linear", "step", "plateau", "cosine"))
    g.add_argument("--lr_decay_iters", type=int, default=50, help="step policy period")
    g.add_argument("--lambda_A", type=float, default=10.0, help="cycle A->B->A weight")
    g.add_argument("--lambda_B", type=float, default=10.0, help="cycle B->A->B weight")
    g.add_argument("--lambda_identity", type=float, default=0.5)
    g.add_argument("--lambda_L1", type=float, default=100.0)
    g.add_argument("--lambda_gp", type=float, default=10.0, help="WGAN-GP penalty weight")
    g.add_argument("--D_rollout", type=int, default=1, help="D steps per G step")
    g.add_argument("--max_nonfinite", type=int, default=10,
                   help="stop after this many non-finite steps in a row")

    g = p.add_argument_group("logging and checkpoints")
    g.add_argument("--display_freq", type=int, default=400, help="images between visuals")
    g.add_argument("--print_freq", type=int, default=100, help="images between loss logs")
    g.add_argument("--save_latest_freq", type=int, default=5000)
    g.add_argument("--save_epoch_freq", type=int, default=5)
    g.add_argument("--save_by_iter", action="store_true")
    g.add_argument("--no_html", action="store_true")
    g.add_argument("--no_tensorboard", action="store_true")
    g.add_argument("--use_wandb", action="store_true")
    g.add_argument("--val_freq", type=int, default=0,
                   help="epochs between validations on <dataroot>/val* (0: off)")
    g.add_argument("--val_size", type=int, default=20, help="items per validation")
    g.add_argument("--save_best", default=None,
                   help="keep the checkpoint with the best validation METRIC (e.g. psnr, mae)")
    g.add_argument("--no_progress", action="store_true", help="no progress bar")
    p.set_defaults(isTrain=True)


def _add_test_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("testing")
    g.add_argument("--phase", default="test")
    g.add_argument("--results_dir", default="./results/")
    g.add_argument("--aspect_ratio", type=float, default=1.0)
    g.add_argument("--eval", action="store_true", help="eval mode (batch norm statistics)")
    g.add_argument("--num_test", type=int, default=50, help="how many items to test")
    g.add_argument("--model_suffix", default="", help="load net_G<suffix> (model test)")
    g.add_argument("--eval_metrics", action="store_true",
                   help="compute MAE/MSE/PSNR/SSIM (or cycle error) after testing")
    g.add_argument("--no_progress", action="store_true", help="no progress bar")
    p.set_defaults(isTrain=False)


def _explicit(parser: argparse.ArgumentParser, argv: list[str]) -> set[str]:
    """Destinations the user set on the command line (abbreviations are disabled)."""
    tokens = (t.split("=", 1)[0] for t in argv if t.startswith("--"))
    return {parser._option_string_actions[t].dest for t in tokens
            if t in parser._option_string_actions}


def parse_options(argv: list[str], is_train: bool) -> argparse.Namespace:
    parser = build_parser(is_train)
    known, _ = parser.parse_known_args(argv)
    parser.set_defaults(**MODEL_DEFAULTS[known.model])
    opt = parser.parse_args(argv)
    opt.explicit = sorted(_explicit(parser, argv))
    if opt.suffix:
        try:
            opt.name = opt.name + "_" + opt.suffix.format(**vars(opt))
        except (KeyError, IndexError, ValueError, AttributeError) as exc:
            raise UserError(f"--suffix '{opt.suffix}': cannot fill in {exc} (use option "
                            "names in braces, e.g. {model}_{netG})") from None
    opt.patch_size = _size_option(opt.patch_size)
    opt.window_size = _size_option(opt.window_size)
    validate(opt)
    resolve_intensity(opt)
    return opt


def resolve_intensity(opt: argparse.Namespace) -> None:
    """Per-folder intensity settings (``norm_A``/``window_A``, ``norm_B``/``window_B``)."""
    opt.norm_A, opt.window_A = opt.intensity, opt.window
    opt.norm_B = opt.intensity_B or opt.intensity
    opt.window_B = opt.window_B if opt.window_B is not None else opt.window
    if opt.norm_B == "window" and opt.window_B is None:
        raise UserError("--intensity_B window needs --window_B LOW HIGH")


def validate(opt: argparse.Namespace) -> None:
    """Refuse out-of-range values with one line naming the option."""
    positive = ["ngf", "ndf", "batch_size", "load_size", "crop_size", "n_layers_D",
                "samples_per_volume"]
    positive += ["D_rollout", "display_freq", "print_freq", "save_latest_freq",
                 "save_epoch_freq", "max_nonfinite", "val_size"] if opt.isTrain else [
                 "num_test"]
    for key in positive:
        if getattr(opt, key) < 1:
            raise UserError(f"--{key} must be at least 1, got {getattr(opt, key)}")
    for key in ("num_threads", "n_downsampling", "epoch_count", "pool_size", "n_epochs",
                "n_epochs_decay", "val_freq"):
        if getattr(opt, key, None) is not None and getattr(opt, key) < 0:
            raise UserError(f"--{key} must not be negative, got {getattr(opt, key)}")
    if opt.isTrain:
        if not opt.lr > 0 or not math.isfinite(opt.lr):
            raise UserError(f"--lr must be a positive number, got {opt.lr}")
        if not 0 <= opt.beta1 < 1:
            raise UserError(f"--beta1 must be in [0, 1), got {opt.beta1}")
        for key in ("lambda_A", "lambda_B", "lambda_identity", "lambda_L1", "lambda_gp"):
            if getattr(opt, key) < 0:
                raise UserError(f"--{key} must not be negative, got {getattr(opt, key)}")
        if opt.n_epochs + opt.n_epochs_decay < 1:
            raise UserError("--n_epochs plus --n_epochs_decay must be at least 1")
    if opt.input_nc not in (1, 2, 3, 4) and opt.dims == 2:
        raise UserError(f"--input_nc must be 1 to 4 for images, got {opt.input_nc}")
    if opt.output_nc < 1 or opt.input_nc < 1:
        raise UserError("--input_nc and --output_nc must be at least 1")
    if opt.preprocess in ("resize_and_crop", "scale_width_and_crop") and \
            opt.crop_size > opt.load_size:
        raise UserError(f"--crop_size {opt.crop_size} is larger than --load_size "
                        f"{opt.load_size}; a crop cannot exceed the resized image")
    if not 0 <= opt.overlap < 1:
        raise UserError(f"--overlap must be in [0, 1), got {opt.overlap}")
    if opt.intensity == "window" and opt.window is None:
        raise UserError("--intensity window needs --window LOW HIGH (e.g. -1000 2000)")
    if opt.window is not None and not opt.window[0] < opt.window[1]:
        raise UserError(f"--window LOW must be below HIGH, got {opt.window}")
    if opt.window is not None and opt.intensity == "minmax" and "intensity" not in opt.explicit:
        opt.intensity = "window"


def select_device(gpu_ids: str) -> torch.device:
    """CUDA if present unless ``-1``; ids pick the device (the first of a list)."""
    text = str(gpu_ids).strip()
    if text in ("-1", "cpu"):
        return torch.device("cpu")
    if text in ("auto", ""):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        ids = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise UserError(f"--gpu_ids must be 'auto', '-1' or numbers like '0,1', got '{text}'")
    if not ids or ids[0] < 0:
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise UserError(f"--gpu_ids {text} asks for CUDA, but no CUDA device is available; "
                        "use --gpu_ids -1 for the CPU")
    if ids[0] >= torch.cuda.device_count():
        raise UserError(f"--gpu_ids {text}: only {torch.cuda.device_count()} CUDA device(s)")
    return torch.device(f"cuda:{ids[0]}")


def options_to_dict(opt: argparse.Namespace) -> dict:
    out = {}
    for key, value in sorted(vars(opt).items()):
        if isinstance(value, float) and math.isinf(value):
            value = "inf"
        elif isinstance(value, tuple):
            value = list(value)
        elif isinstance(value, Path):
            value = str(value)
        out[key] = value
    return out


def save_options(opt: argparse.Namespace, folder: Path, stem: str = "train_opt") -> None:
    """``opt.txt`` (readable, as the reference writes it) and ``<stem>.json``."""
    from revgan.runs.atomic import atomic_write_text

    folder.mkdir(parents=True, exist_ok=True)
    parser = build_parser(opt.isTrain)
    defaults = {a.dest: a.default for a in parser._actions}
    lines = ["----------------- Options ---------------"]
    for key, value in sorted(vars(opt).items()):
        note = "" if defaults.get(key, value) == value else f"\t[default: {defaults.get(key)}]"
        lines.append(f"{key:>25}: {value!s:<30}{note}")
    lines.append("----------------- End -------------------")
    name = "opt.txt" if opt.isTrain else "test_opt.txt"
    atomic_write_text(folder / name, "\n".join(lines) + "\n")
    atomic_write_text(folder / f"{stem}.json", json.dumps(options_to_dict(opt), indent=1))


def load_saved_options(folder: Path) -> dict | None:
    path = folder / "train_opt.json"
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise UserError(f"cannot read {path}: {exc}")


def adopt_architecture(opt: argparse.Namespace, saved: dict) -> None:
    """Take the training run's architecture for every option not given explicitly."""
    for key in ARCHITECTURE_KEYS:
        if key in saved and key not in opt.explicit:
            value = saved[key]
            if key in ("patch_size", "window", "window_B", "percentiles") and value is not None:
                value = tuple(value)
            setattr(opt, key, value)
    resolve_intensity(opt)
