"""The one typed configuration: every option's name, type, default and help, in one place.

:class:`RunConfig` is a flat dataclass (``cfg.ngf``, ``cfg.direction``) assembled from groups
(model, data, volumes, precision, training, logging, testing). The command line is generated
from its fields (``revgan.cli.options``), model-dependent defaults come from the model
registry (``revgan.models.registry``), and a run saves it as ``train_opt.json``, which
``revgan train --config`` reads back. Nothing else holds a default.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from revgan.errors import UserError

GAN_MODES = ("lsgan", "vanilla", "wgangp", "hinge")
INTENSITY_KINDS = ("minmax", "percentile", "window", "zscore", "none")
PREPROCESS_MODES = ("resize_and_crop", "crop", "scale_width", "scale_width_and_crop", "none")
DIRECTIONS = ("AtoB", "BtoA")
REQUIRED = dataclasses.MISSING  # an option without a default: the command line must give it


def option(default: Any, help: str, *, flags: tuple[str, ...] = (), choices=None,
           only: str | None = None, kind: str | None = None, architecture: bool = False,
           test_default: Any = dataclasses.MISSING) -> Any:
    """A configuration field with its command-line metadata.

    ``flags``: older spellings that set the same field; ``only``: ``"train"`` or ``"test"``
    for options of one command; ``kind``: how text is parsed (``ints``: ``32`` or
    ``32,32,16``; ``pair``: two floats; ``optional_const``: a flag with an optional value);
    ``architecture``: the option shapes the networks, so ``test`` takes it from the trained
    run; ``test_default``: the default of ``revgan test`` where it differs.
    """
    meta = dict(help=help, flags=flags, choices=choices, only=only, kind=kind,
                architecture=architecture, test_default=test_default)
    if isinstance(default, (list, dict)):
        raise TypeError("use tuples for sequence defaults")
    if default is REQUIRED:
        return field(metadata=meta)
    return field(default=default, metadata=meta)


def derived(default: Any) -> Any:
    """A field computed from the others, never given on the command line."""
    return field(default=default, metadata=dict(derived=True))


@dataclass
class BasicOptions:
    dataroot: str | None = option(None, "dataset folder (trainA/trainB, train/, or volumes "
                                        "in <phase>A/B)")
    name: str = option("experiment_name", "run name: checkpoints/<name>")
    gpu_ids: str = option("auto", "'auto' (CUDA if present), '-1' for CPU, or e.g. '0' or '0,1'")
    checkpoints_dir: str = option("./checkpoints", "folder of the run folders")
    seed: int = option(0, "random seed")
    deterministic: bool = option(False, "deterministic algorithms (bitwise reproducible on CPU)")
    overwrite: bool = option(False, "allow replacing an existing run or results folder")
    verbose: bool = option(False, "print more")
    suffix: str = option("", "appended to --name (may use {model}, {netG})")


@dataclass
class ModelOptions:
    model: str = option("unpaired_revgan", "model name (see the registry: revgan.models)")
    dims: int = option(2, "2 for images, 3 for volumes (set by the *3d model names)",
                       choices=(2, 3), architecture=True)
    input_nc: int = option(3, "channels of domain A", architecture=True)
    output_nc: int = option(3, "channels of domain B", architecture=True)
    ngf: int = option(64, "generator filters in the first layer", architecture=True)
    ndf: int = option(64, "discriminator filters", architecture=True)
    netG: str = option("resnet_9blocks", "resnet_<N>blocks (RevGAN: core depth N), edsrF_<N>, "
                       "unet_128, unet_256, unet_<size>", flags=("--which_model_netG",),
                       architecture=True)
    netD: str = option("basic", "basic (70x70 PatchGAN), n_layers, pixel",
                       flags=("--which_model_netD",), architecture=True)
    n_layers_D: int = option(3, "layers of an n_layers D", architecture=True)
    norm: str = option("instance", "normalisation layers",
                       choices=("instance", "batch", "sync_batch", "none"), architecture=True)
    init_type: str = option("normal", "weight initialisation",
                            choices=("normal", "xavier", "kaiming", "orthogonal"))
    init_gain: float = option(0.02, "scale of the initialisation")
    no_dropout: bool = option(False, "no dropout in the generator", architecture=True)
    coupling: str = option("additive", "coupling of the reversible core",
                           choices=("additive", "affine"), architecture=True)
    upsample: str = option("transpose", "x2 layers of the ResNet/RevGAN decoders: transpose "
                           "(ConvT3 s2, the reference) or resize (nearest x2 + conv3: no "
                           "checkerboard artifacts)", choices=("transpose", "resize"),
                           architecture=True)
    core_init: str = option("zero", "last conv of every F/G of the RevGAN core: zero (the core "
                            "starts as the identity) or normal (--init_type; when F/G end in "
                            "a norm, zero makes that norm amplify the first gradients ~300x)",
                            choices=("zero", "normal"))
    n_downsampling: int | None = option(None, "stride-2 layers in the generator's encoder "
                                              "(default: 2; 1 for edsrF)", architecture=True)
    use_naive: bool = option(False, "plain autograd in the reversible core (no memory saving)")
    keep_blocks: int = option(0, "reversible core: the last N blocks run keep their "
                              "activations (faster, more memory); 0 rebuilds all, the core "
                              "depth is plain autograd; gradients are the same")
    recompute_stages: str = option("off", "re-run the generator's encoders and decoders (ResNet: "
                                   "head, each block, tail) in backward, keeping only their "
                                   "inputs: lower peak memory, same gradients, one more "
                                   "forward of those stages", choices=("on", "off"))
    fully_reversible: bool = option(False, "invertible encoders/decoders too (whole generator "
                                           "memory-flat)", architecture=True)
    uncancelled_bias: bool = option(False, "U-Net: a bias on the two down convolutions no norm "
                                    "follows, as pix2pix has with instance norm (set by "
                                    "revgan import)", architecture=True)
    float_couplings: bool = option(False, "RevGAN core: additive couplings in plain float, not "
                                   "on the exact 2**-16 grid, as the 2019 RevGAN (set by "
                                   "revgan import)", architecture=True)
    residual: bool = option(False, "global skip: the generator outputs its input plus a "
                            "learned correction (super-resolution, denoising); needs "
                            "input_nc == output_nc", architecture=True)


@dataclass
class DataOptions:
    dataset_mode: str = option("unaligned", "how A and B are paired",
                               choices=("aligned", "unaligned", "single"))
    direction: str = option("AtoB", "translation direction (BtoA swaps the folders)",
                            flags=("--which_direction",), choices=DIRECTIONS)
    serial_batches: bool = option(False, "no shuffling, B in order")
    num_threads: int = option(4, "data loading workers", flags=("--nThreads",))
    batch_size: int = option(1, "items per step", flags=("--batchSize",))
    load_size: int = option(286, "resize images to this size", flags=("--loadSize",))
    crop_size: int = option(256, "then crop to this size", flags=("--fineSize",))
    max_dataset_size: float = option(math.inf, "use at most this many items")
    preprocess: str = option("resize_and_crop", "image preprocessing",
                             flags=("--resize_or_crop",), choices=PREPROCESS_MODES)
    no_flip: bool = option(False, "no random flips")
    display_winsize: int = option(256, "display size of images on the pages")
    epoch: str = option("latest", "which checkpoint to load: 'latest', 'best' or an epoch "
                                  "number", flags=("--which_epoch",))


@dataclass
class VolumeOptions:
    patch_size: tuple[int, ...] = option((32, 32, 32), "training patch size of volumes, e.g. "
                                         "32 or 32,32,16", kind="ints", architecture=True)
    samples_per_volume: int = option(4, "patches drawn from a volume per visit")
    foreground_sampling: bool = option(False, "draw patch centres from voxels above the "
                                              "background")
    flip_axes: tuple[int, ...] = option((0, 1, 2), "spatial axes for random flips ('' for "
                                        "none)", kind="ints")
    intensity: str = option("minmax", "intensity mapping of volumes to [-1, 1] (saved with "
                            "the model)", choices=INTENSITY_KINDS, architecture=True)
    window: tuple[float, float] | None = option(None, "fixed intensity window LOW HIGH, e.g. "
                                                "-1000 2000 for CT", kind="pair",
                                                architecture=True)
    intensity_B: str | None = option(None, "intensity mapping of domain B if it differs from "
                                     "--intensity", choices=INTENSITY_KINDS, architecture=True)
    window_B: tuple[float, float] | None = option(None, "fixed window of domain B if it "
                                                  "differs from --window", kind="pair",
                                                  architecture=True)
    percentiles: tuple[float, float] = option((0.5, 99.5), "percentiles LOW HIGH of the "
                                              "percentile mapping", kind="pair",
                                              architecture=True)
    window_size: tuple[int, ...] | None = option(None, "sliding-window size for full-size "
                                                 "inference (default: patch size)", kind="ints")
    overlap: float = option(0.5, "sliding-window overlap")
    volume_cache_mb: int = option(1024, "memory for decoded volumes kept between patches (MB)")


@dataclass
class PrecisionOptions:
    amp: str = option("none", "mixed precision", choices=("none", "bf16", "fp16"))
    compile: str | None = option(None, "torch.compile the non-reversible parts (backend: "
                                       "inductor)", kind="optional_const")


@dataclass
class TrainOptions:
    phase: str = option("train", "data split to use", test_default="test")
    n_epochs: int = option(100, "epochs at the starting learning rate", flags=("--niter",),
                           only="train")
    n_epochs_decay: int = option(100, "epochs of decay to zero", flags=("--niter_decay",),
                                 only="train")
    epoch_count: int = option(1, "starting epoch number (the reference's manual resume)",
                              only="train")
    continue_train: bool = option(False, "resume from the latest checkpoint with optimizer "
                                         "and RNG state", only="train")
    beta1: float = option(0.5, "Adam beta1", only="train")
    lr: float = option(0.0002, "learning rate", only="train")
    gan_mode: str = option("lsgan", "GAN loss", choices=GAN_MODES, only="train")
    pool_size: int = option(50, "image pool size", only="train")
    lr_policy: str = option("linear", "learning-rate schedule",
                            choices=("linear", "step", "plateau", "cosine"), only="train")
    lr_decay_iters: int = option(50, "step policy period", only="train")
    lambda_A: float = option(10.0, "cycle A->B->A weight", only="train")
    lambda_B: float = option(10.0, "cycle B->A->B weight", only="train")
    lambda_identity: float = option(0.5, "identity loss weight", only="train")
    lambda_L1: float = option(100.0, "L1 weight of the paired objective", only="train")
    lambda_gp: float = option(10.0, "WGAN-GP penalty weight", only="train")
    D_rollout: int = option(1, "D steps per G step", only="train")
    grouped_backward: str = option("auto", "backpropagate each independent group of "
                                   "generator loss terms as soon as it is formed (lower peak "
                                   "memory, same gradients); auto: on for RevGAN models",
                                   choices=("auto", "on", "off"), only="train")
    max_nonfinite: int = option(10, "stop after this many non-finite steps in a row",
                                only="train")


@dataclass
class LoggingOptions:
    display_freq: int = option(400, "images between visuals", only="train")
    print_freq: int = option(100, "images between loss logs", only="train")
    save_latest_freq: int = option(5000, "images between 'latest' checkpoints", only="train")
    save_epoch_freq: int = option(5, "epochs between epoch checkpoints", only="train")
    save_by_iter: bool = option(False, "also keep iteration-numbered checkpoints",
                                only="train")
    no_html: bool = option(False, "no HTML page", only="train")
    no_tensorboard: bool = option(False, "no TensorBoard logs", only="train")
    use_wandb: bool = option(False, "log to Weights & Biases", only="train")
    val_freq: int = option(0, "epochs between validations on <dataroot>/val* (0: off)",
                           only="train")
    val_size: int = option(20, "items per validation", only="train")
    save_best: str | None = option(None, "keep the checkpoint with the best validation METRIC "
                                         "(e.g. psnr, mae)", only="train")
    no_progress: bool = option(False, "no progress bar")


@dataclass
class TestOptions:
    results_dir: str = option("./results/", "folder of the results", only="test")
    aspect_ratio: float = option(1.0, "aspect ratio of the result images", only="test")
    eval: bool = option(False, "eval mode (batch norm statistics)", only="test")
    num_test: int = option(50, "how many items to test", only="test")
    model_suffix: str = option("", "load net_G<suffix> (model test)", only="test")
    eval_metrics: bool = option(False, "compute MAE/MSE/PSNR/SSIM (or cycle error) after "
                                       "testing", only="test")


GROUPS = {"basic": BasicOptions, "model": ModelOptions, "data": DataOptions,
          "volumes (3D)": VolumeOptions, "precision and speed": PrecisionOptions,
          "training": TrainOptions, "logging and checkpoints": LoggingOptions,
          "testing": TestOptions}


@dataclass
class RunConfig(TestOptions, LoggingOptions, TrainOptions, PrecisionOptions, VolumeOptions,
                DataOptions, ModelOptions, BasicOptions):
    """Everything a run needs; see :data:`GROUPS` for the sections."""

    isTrain: bool = derived(True)
    explicit: tuple[str, ...] = derived(())  # the options the user set, not defaulted

    # -- views ---------------------------------------------------------------------------
    def intensity_of(self, folder: str) -> tuple[str, tuple[float, float] | None,
                                                 tuple[float, float]]:
        """(kind, window, percentiles) of the files in data folder ``A`` or ``B``."""
        if folder == "A":
            return self.intensity, self.window, self.percentiles
        window = self.window_B if self.window_B is not None else self.window
        return self.intensity_B or self.intensity, window, self.percentiles

    def architecture(self) -> dict:
        """What is stored with the weights: enough to rebuild the networks."""
        saved = self.to_dict()
        return {"model": self.model, **{k: saved[k] for k in architecture_keys()}}

    def adopt_architecture(self, saved: dict) -> None:
        """Take a trained run's architecture for every option not set explicitly.

        A key the run predates takes the option's global default: an architecture option's
        global default is always the behaviour from before it existed (models choose newer
        designs through their registry defaults), so older runs keep loading.
        """
        trained = RunConfig.from_dict(saved, strict=False)
        for key in architecture_keys():
            if key not in self.explicit:
                setattr(self, key, getattr(trained, key))
        self.validate()

    def replace(self, **changes) -> RunConfig:
        return dataclasses.replace(self, **changes)

    # -- serialisation -------------------------------------------------------------------
    def to_dict(self) -> dict:
        out = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, float) and math.isinf(value):
                value = "inf"
            elif isinstance(value, tuple):
                value = list(value)
            out[f.name] = value
        return out

    @classmethod
    def from_dict(cls, values: dict, strict: bool = True, source: str = "config") -> RunConfig:
        """Typed values from JSON/YAML; ``strict`` refuses keys that are not options."""
        known = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - set(known))
        if unknown and strict:
            raise UserError(f"{source}: unknown option '{unknown[0]}' (see 'revgan train "
                            "--help' for the option names)")
        return cls(**{k: coerce(known[k], v, source) for k, v in values.items() if k in known})

    # -- checks --------------------------------------------------------------------------
    def validate(self) -> None:
        """Refuse out-of-range values with one line naming the option; fill derived ones."""
        for f in dataclasses.fields(self):
            choices = f.metadata.get("choices")
            value = getattr(self, f.name)
            if choices and value is not None and value not in choices:
                raise UserError(f"--{f.name} must be one of {', '.join(map(str, choices))}, "
                                f"got {value!r}")
        positive = ["ngf", "ndf", "batch_size", "load_size", "crop_size", "n_layers_D",
                    "samples_per_volume", "volume_cache_mb"]
        positive += ["D_rollout", "display_freq", "print_freq", "save_latest_freq",
                     "save_epoch_freq", "max_nonfinite", "val_size"] if self.isTrain else [
                     "num_test"]
        for key in positive:
            if getattr(self, key) < 1:
                raise UserError(f"--{key} must be at least 1, got {getattr(self, key)}")
        for key in ("num_threads", "n_downsampling", "epoch_count", "pool_size", "n_epochs",
                    "n_epochs_decay", "val_freq", "keep_blocks"):
            if getattr(self, key) is not None and getattr(self, key) < 0:
                raise UserError(f"--{key} must not be negative, got {getattr(self, key)}")
        if self.residual and self.input_nc != self.output_nc:  # before any data is read
            raise UserError(f"--residual adds the input to the output, so it needs as many "
                            f"input as output channels (got {self.input_nc} and "
                            f"{self.output_nc})")
        if self.isTrain:
            if not self.lr > 0 or not math.isfinite(self.lr):
                raise UserError(f"--lr must be a positive number, got {self.lr}")
            if not 0 <= self.beta1 < 1:
                raise UserError(f"--beta1 must be in [0, 1), got {self.beta1}")
            for key in ("lambda_A", "lambda_B", "lambda_identity", "lambda_L1", "lambda_gp"):
                if getattr(self, key) < 0:
                    raise UserError(f"--{key} must not be negative, got {getattr(self, key)}")
            if self.n_epochs + self.n_epochs_decay < 1:
                raise UserError("--n_epochs plus --n_epochs_decay must be at least 1")
        if self.input_nc not in (1, 2, 3, 4) and self.dims == 2:
            raise UserError(f"--input_nc must be 1 to 4 for images, got {self.input_nc}")
        if self.output_nc < 1 or self.input_nc < 1:
            raise UserError("--input_nc and --output_nc must be at least 1")
        if self.preprocess in ("resize_and_crop", "scale_width_and_crop") and \
                self.crop_size > self.load_size:
            raise UserError(f"--crop_size {self.crop_size} is larger than --load_size "
                            f"{self.load_size}; a crop cannot exceed the resized image")
        if not 0 <= self.overlap < 1:
            raise UserError(f"--overlap must be in [0, 1), got {self.overlap}")
        for key in ("patch_size", "window_size") if self.dims == 3 else ("window_size",):
            sizes = getattr(self, key)
            if sizes is not None and (len(sizes) not in (1, self.dims) or min(sizes) < 1):
                raise UserError(f"--{key} must be one positive integer or {self.dims}, "
                                f"got {','.join(map(str, sizes))}")
        for key in ("window", "window_B"):
            pair = getattr(self, key)
            if pair is not None and not pair[0] < pair[1]:
                raise UserError(f"--{key} LOW must be below HIGH, got {pair}")
        if not 0 <= self.percentiles[0] < self.percentiles[1] <= 100:
            raise UserError(f"--percentiles must satisfy 0 <= LOW < HIGH <= 100, got "
                            f"{self.percentiles}")
        if self.window is not None and self.intensity == "minmax" and \
                "intensity" not in self.explicit:
            self.intensity = "window"  # a window given alone means: use it
        if self.intensity == "window" and self.window is None:
            raise UserError("--intensity window needs --window LOW HIGH (e.g. -1000 2000)")
        if self.intensity_of("B")[0] == "window" and self.intensity_of("B")[1] is None:
            raise UserError("--intensity_B window needs --window_B LOW HIGH")


def architecture_keys() -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(RunConfig) if f.metadata.get("architecture"))


def option_fields(is_train: bool) -> list[dataclasses.Field]:
    """The fields ``revgan train`` (or ``test``) accepts, in their sections' order."""
    skip = "test" if is_train else "train"
    return [f for f in dataclasses.fields(RunConfig)
            if not f.metadata.get("derived") and f.metadata.get("only") != skip]


def defaults(is_train: bool) -> dict:
    """Every option's default for ``train`` or ``test`` (before model defaults)."""
    out = {}
    for f in dataclasses.fields(RunConfig):
        test_default = f.metadata.get("test_default", dataclasses.MISSING)
        use_test = not is_train and test_default is not dataclasses.MISSING
        out[f.name] = test_default if use_test else f.default
    return out


def base_type(f: dataclasses.Field) -> str:
    """``int``, ``float``, ``bool``, ``str`` or ``tuple``: the field's annotation, less None."""
    annotation = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
    return annotation.split("|")[0].split("[")[0].strip()


def parse_ints(text: str) -> tuple[int, ...]:
    """``32`` or ``32,32,16`` (or ``32x32x16``); ``''`` is the empty tuple."""
    try:
        return tuple(int(v) for v in str(text).replace("x", ",").split(",") if v.strip())
    except ValueError:
        raise UserError(f"expected integers like 32 or 32,32,16, got '{text}'") from None


def coerce(f: dataclasses.Field, value: Any, source: str = "config") -> Any:
    """A JSON/YAML value as the field's type (lists to tuples, ``"inf"`` to infinity)."""
    if value is None or f.metadata.get("derived") and f.name != "explicit":
        return value
    kind, base = f.metadata.get("kind"), base_type(f)
    try:
        if f.name == "explicit" or kind in ("ints", "pair"):
            if kind == "ints" and isinstance(value, (int, str)):
                return parse_ints(str(value))
            items = tuple(value) if isinstance(value, (list, tuple)) else None
            if items is None or (kind == "pair" and len(items) != 2):
                raise ValueError
            return tuple(float(v) for v in items) if kind == "pair" else \
                tuple(int(v) for v in items) if kind == "ints" else tuple(items)
        if base == "bool":
            if not isinstance(value, bool):
                raise ValueError
            return value
        if base == "float":
            if value == "inf":
                return math.inf
            if isinstance(value, bool):
                raise ValueError
            return float(value)
        if base == "int":
            if isinstance(value, bool) or float(value) != int(value):
                raise ValueError
            return int(value)
        if isinstance(value, (list, dict)):
            raise ValueError
        return str(value)
    except (TypeError, ValueError):
        raise UserError(f"{source}: option '{f.name}' has a value of the wrong type: "
                        f"{value!r}") from None


def read_config_file(path: str | Path) -> dict:
    """The options in a YAML or JSON file (``train_opt.json`` of a run included)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot read the config file {path}: {exc}") from None
    try:
        if path.suffix.lower() in (".yaml", ".yml"):
            import yaml

            values = yaml.safe_load(text)
        else:
            values = json.loads(text)
    except Exception as exc:  # a parser's own error types; one line either way
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UserError(f"{path} is not valid {path.suffix.lstrip('.').upper() or 'JSON'}: "
                        f"{first}") from None
    if not isinstance(values, dict):
        raise UserError(f"{path}: expected a mapping of option names to values")
    values = {k: v for k, v in values.items() if k not in ("isTrain", "explicit")}
    RunConfig.from_dict(values, strict=True, source=str(path))  # unknown keys, wrong types
    return values


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
