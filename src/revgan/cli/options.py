"""``revgan train`` / ``revgan test`` options: argparse generated from the typed config.

Every field of :class:`revgan.config.RunConfig` is a flag (with its older spellings); the
parser records only what the user typed, so defaults come from one place: the config's
fields, then the model registry's defaults, then ``--config FILE``, then the flags.
"""

from __future__ import annotations

import argparse
import dataclasses

from revgan.cli.argparsing import ArgumentParser
from revgan.config import (
    GROUPS,
    RunConfig,
    base_type,
    defaults,
    option_fields,
    parse_ints,
    read_config_file,
)
from revgan.models.registry import MODELS, build_config


def _ints(text: str) -> tuple[int, ...]:
    from revgan.errors import UserError

    try:
        return parse_ints(text)
    except UserError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _add(group, f: dataclasses.Field, shown_default) -> None:
    meta = f.metadata
    names = [f"--{f.name.rstrip('_')}", *meta["flags"]]  # from_ -> --from (a Python keyword)
    required = f.default is dataclasses.MISSING
    text = meta["help"] if required else f"{meta['help']} (default: {shown_default})"
    kw = dict(dest=f.name, default=argparse.SUPPRESS, help=text)
    if required:
        kw["required"] = True
    base = base_type(f)
    if base == "bool":
        group.add_argument(*names, action="store_true", **kw)
        return
    if meta["choices"]:
        kw["choices"] = meta["choices"]
    kind = meta["kind"]
    if kind == "ints":
        kw["type"] = _ints
    elif kind == "pair":
        kw.update(type=float, nargs=2, metavar=("LOW", "HIGH"))
    elif kind == "many":
        kw.update(nargs="+", metavar="FILE")
    elif kind == "optional_const":
        kw.update(nargs="?", const="inductor", metavar="BACKEND")
    elif base in ("int", "float"):
        kw["type"] = {"int": int, "float": float}[base]
    group.add_argument(*names, **kw)


def build_parser(is_train: bool, model: str = RunConfig.model,
                 add_help: bool = True) -> argparse.ArgumentParser:
    """The parser of ``revgan train``/``test``; its help shows ``model``'s defaults."""
    command = "train" if is_train else "test"
    p = ArgumentParser(prog=f"revgan {command}",
                       description=f"{command.capitalize()} an image-to-image translation "
                                   f"model. Defaults shown are --model {model}'s.",
                       allow_abbrev=False, add_help=add_help)
    p.add_argument("--config", default=argparse.SUPPRESS, metavar="FILE",
                   help="options from a YAML or JSON file (a run's train_opt.json too); "
                        "flags given here win")
    shown = {**defaults(is_train), **MODELS[model].defaults} if model in MODELS else \
        defaults(is_train)
    fields = {f.name: f for f in option_fields(is_train)}
    for title, cls in GROUPS.items():
        group = p.add_argument_group(title)
        for f in dataclasses.fields(cls):
            if f.name in fields:
                _add(group, fields[f.name], shown[f.name])
        if title == "model":
            group._group_actions[0].choices = tuple(MODELS)  # --model: the registry's names
        if title == "training" and is_train:
            group.add_argument("--no_lsgan", dest="gan_mode", action="store_const",
                               const="vanilla", default=argparse.SUPPRESS,
                               help="the older name for --gan_mode vanilla")
    return p


def parse_options(argv: list[str], is_train: bool) -> RunConfig:
    """The typed configuration of ``revgan train`` / ``revgan test`` for ``argv``."""
    from revgan.errors import UserError

    probe = build_parser(is_train, add_help=False)  # --help waits for the chosen model
    known, _ = probe.parse_known_args(argv)
    chosen = vars(known)
    file_values = read_config_file(chosen.pop("config")) if "config" in chosen else {}
    model = chosen.get("model") or file_values.get("model") or RunConfig.model
    if model not in MODELS:
        raise UserError(f"unknown --model '{model}'; choose one of {', '.join(MODELS)}")
    given = vars(build_parser(is_train, model).parse_args(argv))
    given.pop("config", None)
    if "dataroot" not in given and "dataroot" not in file_values:
        raise UserError(f"revgan {'train' if is_train else 'test'}: the option --dataroot is "
                        "required")
    return build_config(model, is_train, {**file_values, **given})


def parse_command(cls: type, argv: list[str], prog: str, description: str):
    """An instance of the options dataclass ``cls`` (fields made with ``config.option``)
    from ``argv``: one parser generator for every sub-command."""
    p = ArgumentParser(prog=prog, description=description, allow_abbrev=False)
    for f in dataclasses.fields(cls):
        if f.metadata.get("help") is not None:
            _add(p, f, f.default)
    values = vars(p.parse_args(argv))
    return cls(**values)
