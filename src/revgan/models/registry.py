"""The model registry: one entry per ``--model`` name.

An entry says which objective class trains it, which generator it builds (``rev``: one
reversible core for both directions; ``pair``: two baseline generators; ``single``: one
A→B generator), its dims, and the defaults it changes. Adding a model is one objective file
in this package plus one entry here (see docs/adding_a_model.md).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import torch

from revgan.config import RunConfig, defaults
from revgan.errors import UserError
from revgan.models.base import BaseModel
from revgan.models.paired import PairedModel
from revgan.models.single import SingleDirectionModel
from revgan.models.unpaired import UnpairedModel


@dataclass(frozen=True)
class ModelSpec:
    objective: type[BaseModel]
    generator: str | None  # None: the generator of the trained run (``--model test``)
    dims: int | None  # None: either (``--model test`` follows the trained run)
    defaults: dict = field(default_factory=dict)
    objective_args: dict = field(default_factory=dict)


_UNPAIRED = dict(dataset_mode="unaligned", gan_mode="lsgan", pool_size=50,
                 netG="resnet_9blocks", norm="instance", no_dropout=True)
_PAIRED = dict(dataset_mode="aligned", gan_mode="vanilla", pool_size=0,
               netG="resnet_9blocks", norm="instance", no_dropout=True)
# RevGAN's 2D generator: the pre-norm edsr F/G (a true identity at init, without the
# gradient spike of a zero conv under instance norm) and resize-then-conv decoders (no
# checkerboards); measured on real facades against the reference design (docs/quality.md).
_REV_2D = dict(netG="edsrF_9", n_downsampling=2, upsample="resize")
# 3D: the same objectives with dims=3; sizes follow the reference's 3D experiments.
_3D = dict(dims=3, input_nc=1, output_nc=1, ngf=32, ndf=32, lambda_identity=0.0,
           preprocess="none", norm="instance")

MODELS: dict[str, ModelSpec] = {
    "unpaired_revgan": ModelSpec(UnpairedModel, "rev", 2, {**_UNPAIRED, **_REV_2D}),
    "paired_revgan": ModelSpec(PairedModel, "rev", 2, {**_PAIRED, **_REV_2D},
                               dict(bidirectional=True)),
    "cycle_gan": ModelSpec(UnpairedModel, "pair", 2, _UNPAIRED),
    "pix2pix": ModelSpec(PairedModel, "single", 2,
                         {**_PAIRED, "netG": "unet_256", "norm": "batch", "no_dropout": False},
                         dict(bidirectional=False)),
    "test": ModelSpec(SingleDirectionModel, None, None,
                      dict(dataset_mode="single", netG="resnet_9blocks", norm="instance",
                           no_dropout=True)),
}
_NETG_3D = {"unpaired_revgan": "edsrF_6", "paired_revgan": "edsrF_6",
            "cycle_gan": "resnet_6blocks", "pix2pix": "unet_32"}
MODELS.update({
    f"{name}3d": dataclasses.replace(MODELS[name], dims=3, defaults={
        **{k: v for k, v in MODELS[name].defaults.items() if k not in _REV_2D}, **_3D,
        "netG": netG})
    for name, netG in _NETG_3D.items()})
# Where the encoders/decoders hold the step's peak once the core keeps almost nothing, they
# are re-run in backward (--recompute_stages). Measured (benchmarks/results/step_recompute_
# 3d64.md, step_recompute_2d.md): unpaired 3D 64^3 peak 0.39 -> 0.17x CycleGAN's (time
# 0.66 -> 0.83x); paired 128^2 0.83 -> 0.57x pix2pix's (time +12%). unpaired_revgan (2D)
# stays off: at 128^2 it is 0.19x CycleGAN's peak already, and on costs ~10% time.
for _name in ("paired_revgan", "unpaired_revgan3d", "paired_revgan3d"):
    MODELS[_name] = dataclasses.replace(
        MODELS[_name], defaults={**MODELS[_name].defaults, "recompute_stages": "on"})


def model_spec(name: str) -> ModelSpec:
    if name not in MODELS:
        raise UserError(f"unknown --model '{name}'; choose one of {', '.join(MODELS)}")
    return MODELS[name]


def build_config(model: str, is_train: bool, values: dict | None = None) -> RunConfig:
    """The configuration of ``model``: option defaults, then the model's, then ``values``.

    ``values`` are what the user chose (flags, a config file, keyword arguments in code);
    they are recorded as ``explicit``, so ``test`` knows which options not to take from
    the trained run.
    """
    values = dict(values or {})
    values.pop("model", None)
    spec = model_spec(model)
    if is_train and spec.generator is None:
        raise UserError(f"--model {model} only tests a trained run; train one of "
                        f"{', '.join(n for n, s in MODELS.items() if s.generator)}")
    fields = {**defaults(is_train), **spec.defaults}
    if values.get("fully_reversible"):  # its invertible resampling replaces the decoders'
        fields["upsample"] = defaults(is_train)["upsample"]
    cfg = RunConfig.from_dict({**fields, **values}, strict=True, source="options")
    cfg.model, cfg.isTrain, cfg.explicit = model, is_train, tuple(sorted(values))
    if spec.dims is not None and cfg.dims != spec.dims:
        names = [n for n, s in MODELS.items() if s.dims == cfg.dims]
        raise UserError(f"--model {model} is a {spec.dims}D model but --dims is {cfg.dims}; "
                        f"use one of {', '.join(names)}")
    if cfg.suffix:
        try:
            cfg.name = cfg.name + "_" + cfg.suffix.format(**cfg.to_dict())
        except (KeyError, IndexError, ValueError, AttributeError) as exc:
            raise UserError(f"--suffix '{cfg.suffix}': cannot fill in {exc} (use option "
                            "names in braces, e.g. {model}_{netG})") from None
    cfg.validate()
    return cfg


def generator_kind(model: str) -> str:
    """The generator a trained model name builds (``rev``, ``pair`` or ``single``)."""
    kind = model_spec(model).generator
    if kind is None:
        raise UserError("--model test has no generator of its own; give the trained run")
    return kind


def create_model(opt: RunConfig, device: torch.device,
                 trained_model: str | None = None) -> BaseModel:
    """Build the model named by ``opt.model``; ``test`` needs the trained model's name."""
    spec = model_spec(opt.model)
    if spec.generator is None:
        if trained_model is None:
            raise UserError("--model test needs a trained run (checkpoints/<name>/"
                            "train_opt.json) to know which generator to build")
        return spec.objective(opt, device, generator_kind(trained_model),
                              **spec.objective_args)
    return spec.objective(opt, device, spec.generator, **spec.objective_args)
