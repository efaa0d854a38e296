"""``revgan import``: turn generators trained elsewhere into a normal revgan run folder.

The run folder holds what training writes (``train_opt.json``/``opt.txt`` and
``latest_net_G.safetensors``), so ``revgan test``, ``translate``, ``export`` and
:func:`revgan.load` treat it as any other run, plus ``import.json`` saying where it came
from. Nothing is written unless every file is read, mapped and checked; the folder appears
in one rename.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from revgan.config import REQUIRED, RunConfig, option
from revgan.errors import UserError, require_creatable
from revgan.interop import revgan2019, upstream
from revgan.interop.foreign import fit_state_dict, read_state_dict
from revgan.models.base import build_generator
from revgan.models.registry import build_config, generator_kind
from revgan.runs.checkpoints import commit_checkpoint
from revgan.runs.run_folder import save_config

SOURCES = ("cyclegan", "pix2pix", "revgan")


@dataclass
class ImportOptions:
    """The options of ``revgan import``."""

    checkpoint: tuple[str, ...] = option(
        REQUIRED, "the generator file(s): CycleGAN *_net_G_A.pth *_net_G_B.pth (or one), "
        "pix2pix *_net_G.pth, RevGAN the five *_net_G_{A,B}_{enc,dec}.pth, *_net_G_core.pth",
        kind="many")
    name: str = option(REQUIRED, "name of the new run: checkpoints/<name>")
    from_: str = option(REQUIRED, "where the files come from", choices=SOURCES)
    checkpoints_dir: str = option("./checkpoints", "folder of the run folders")
    netG: str | None = option(None, "generator (default: what the weights show), e.g. "
                              "resnet_9blocks, unet_256")
    norm: str | None = option(None, "norm (default: what the weights show)",
                              choices=("instance", "batch", "none"))
    no_dropout: bool | None = option(None, "the generator had no dropout (default: what the "
                                     "weights show; pix2pix: dropout)")
    overwrite: bool = option(False, "replace an existing run of that name")


def import_command(args: ImportOptions) -> Path:
    """``revgan import``: import, then say what was dropped and where the run is."""
    result = import_checkpoints(args.from_, list(args.checkpoint), args.name,
                                args.checkpoints_dir, args.netG, args.norm, args.no_dropout,
                                args.overwrite)
    cfg = result.config
    for note in result.notes:
        print(f"note: {note}")
    print(f"imported {args.from_} {cfg.netG} (norm {cfg.norm}, ngf {cfg.ngf}, "
          f"{cfg.input_nc}->{cfg.output_nc} channels) as {cfg.model} run {result.run_dir}")
    return result.run_dir


@dataclass
class ImportResult:
    run_dir: Path
    config: RunConfig
    notes: list[str] = field(default_factory=list)


def _assign_upstream(source: str, paths: list[Path]) -> dict[str, Path]:
    """revgan's generator prefix (``G_A.``, ``G_B.``, ``G.``) for each upstream file."""
    if source == "pix2pix" or len(paths) == 1:
        if len(paths) != 1:
            raise UserError("pix2pix has one generator: give one --checkpoint (*_net_G.pth)")
        return {"G.": paths[0]}
    if len(paths) != 2:
        raise UserError("CycleGAN: give --checkpoint *_net_G_A.pth *_net_G_B.pth (both "
                        "directions) or one generator file (one direction)")
    named = {}
    for path in paths:
        m = re.search(r"G_([AB])\.pth$", path.name)
        if m:
            named[f"G_{m.group(1)}."] = path
    if len(named) == 2:
        return named
    return {"G_A.": paths[0], "G_B.": paths[1]}  # as given: A→B first


def _config(model: str, name: str, checkpoints_dir: Path, arch: upstream.Architecture,
            netG, norm, no_dropout, extra: dict) -> RunConfig:
    values = dict(
        name=name, checkpoints_dir=str(checkpoints_dir),
        netG=arch.netG if netG is None else netG, norm=arch.norm if norm is None else norm,
        ngf=arch.ngf, input_nc=arch.input_nc, output_nc=arch.output_nc,
        upsample="transpose", **extra)  # both references upsample with ConvTranspose
    if no_dropout is not None:
        values["no_dropout"] = no_dropout
    elif arch.use_dropout is not None:
        values["no_dropout"] = not arch.use_dropout
    if arch.n_downsampling is not None:
        values["n_downsampling"] = arch.n_downsampling
    return build_config(model, True, values)


def _check_sizes(cfg: RunConfig, what: str) -> None:
    if cfg.input_nc < 1 or cfg.output_nc < 1:
        raise UserError(f"{what}: no image channels in the first or last layer")


def import_checkpoints(source: str, checkpoints: list[str | Path], name: str,
                       checkpoints_dir: str | Path = "./checkpoints", netG: str | None = None,
                       norm: str | None = None, no_dropout: bool | None = None,
                       overwrite: bool = False) -> ImportResult:
    """Import upstream/RevGAN generator files as run ``checkpoints_dir/name``.

    ``netG``, ``norm`` and ``no_dropout`` default to what the weights show; given, they
    must agree with the weights (else one line naming the first mismatching key).
    """
    if source not in SOURCES:
        raise UserError(f"--from must be one of {', '.join(SOURCES)}, got {source!r}")
    if not name or "/" in name or name in (".", ".."):
        raise UserError(f"--name must be a plain folder name, got {name!r}")
    paths = [Path(p) for p in checkpoints]
    if not paths:
        raise UserError("give the checkpoint file(s) with --checkpoint")
    run_dir = Path(checkpoints_dir) / name
    if run_dir.exists() and not overwrite:
        raise UserError(f"{run_dir} already exists (choose another --name, or --overwrite)")
    require_creatable(checkpoints_dir, "checkpoints folder")

    renamed: dict[str, Tensor] = {}
    origin: dict[str, str] = {}  # revgan's name -> the file's, for error messages
    if source == "revgan":
        files = revgan2019.assign_files(paths)
        states = {part: read_state_dict(path) for part, path in files.items()}
        arch = revgan2019.infer_architecture(states)
        for part, state in states.items():
            mapped = revgan2019.rename(part, state)
            renamed.update(mapped)
            origin.update({new: f"'{old}' of {files[part].name}"
                           for new, old in zip(mapped, state)})
        cfg = _config("unpaired_revgan", name, Path(checkpoints_dir), arch, netG, norm,
                      no_dropout, dict(coupling="additive", fully_reversible=False,
                           float_couplings=True))
        what = "RevGAN " + os.path.commonprefix([p.name for p in files.values()]) + "*.pth"
    else:
        files = _assign_upstream(source, paths)
        states = {prefix: read_state_dict(path) for prefix, path in files.items()}
        archs = {prefix: upstream.infer_architecture(state, files[prefix].name)
                 for prefix, state in states.items()}
        arch = archs.get("G_A.", archs.get("G."))
        if "G_B." in archs:
            other = archs["G_B."]
            if (other.netG, other.norm, other.ngf, other.input_nc, other.output_nc) != (
                    arch.netG, arch.norm, arch.ngf, arch.output_nc, arch.input_nc):
                raise UserError(f"{files['G_B.'].name} is not the B→A twin of "
                                f"{files['G_A.'].name} ({other.netG}/{other.norm}/ngf "
                                f"{other.ngf} vs {arch.netG}/{arch.norm}/ngf {arch.ngf})")
        for prefix, state in states.items():
            renamed.update(upstream.prefixed(state, prefix))
            origin.update({prefix + key: f"'{key}' of {files[prefix].name}" for key in state})
        first = states[next(iter(states))]
        extra = {}
        if "unet" in (netG or arch.netG) and "model.model.0.bias" in first:
            extra["uncancelled_bias"] = True
        model = "cycle_gan" if len(files) == 2 else "pix2pix"
        cfg = _config(model, name, Path(checkpoints_dir), arch, netG, norm, no_dropout, extra)
        what = ", ".join(p.name for p in files.values())
    _check_sizes(cfg, what)

    generator = build_generator(cfg, generator_kind(cfg.model))
    fitted, notes = fit_state_dict(renamed, generator, what, origin)
    generator.load_state_dict(fitted)
    notes.extend(_test_mode_notes(source, cfg))
    _write_run(run_dir, cfg, generator, source, paths, notes, overwrite)
    return ImportResult(run_dir, cfg, notes)


def _test_mode_notes(source: str, cfg: RunConfig) -> list[str]:
    if cfg.norm == "batch" or not cfg.no_dropout:
        reference = ("the reference RevGAN's test.py" if source == "revgan"
                     else "upstream test.py without --eval")
        return [f"revgan runs the generator in eval mode (batch norm with its running "
                f"statistics, no dropout), as upstream test.py --eval does; {reference} uses "
                "per-batch statistics and active dropout instead"]
    return []


def _write_run(run_dir: Path, cfg: RunConfig, generator: torch.nn.Module, source: str,
               paths: list[Path], notes: list[str], overwrite: bool) -> None:
    """Write the whole run folder next to its place, then rename it in."""
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{run_dir.name}.import-", dir=run_dir.parent))
    try:
        save_config(cfg, staging)
        commit_checkpoint(staging, "latest", {"G": generator}, cfg.architecture(), None)
        provenance = dict(source=source, files=[str(p.resolve()) for p in paths], notes=notes)
        (staging / "import.json").write_text(json.dumps(provenance, indent=1))
        if run_dir.exists():
            if not overwrite:
                raise UserError(f"{run_dir} already exists (choose another --name, or "
                                "--overwrite)")
            shutil.rmtree(run_dir)
        os.replace(staging, run_dir)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
