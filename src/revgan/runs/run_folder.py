"""The options a run folder keeps: ``opt.txt`` (readable, as the reference writes it) and
``train_opt.json`` / ``test_opt.json`` (the typed configuration, loadable again)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from revgan.config import RunConfig, defaults
from revgan.errors import UserError
from revgan.runs.atomic import atomic_write_text


def save_config(cfg: RunConfig, folder: Path, stem: str = "train_opt") -> None:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    base = defaults(cfg.isTrain)
    lines = ["----------------- Options ---------------"]
    for f in sorted(dataclasses.fields(cfg), key=lambda f: f.name):
        value = getattr(cfg, f.name)
        note = "" if base.get(f.name, value) == value else f"\t[default: {base[f.name]}]"
        lines.append(f"{f.name:>25}: {value!s:<30}{note}")
    lines.append("----------------- End -------------------")
    atomic_write_text(folder / ("opt.txt" if cfg.isTrain else "test_opt.txt"),
                      "\n".join(lines) + "\n")
    atomic_write_text(folder / f"{stem}.json", json.dumps(cfg.to_dict(), indent=1))


def saved_options(folder: Path) -> dict | None:
    """The raw options a training run saved, or None where it saved none."""
    path = Path(folder) / "train_opt.json"
    if not path.exists():
        return None
    try:
        values = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"cannot read {path}: {exc}")
    if not isinstance(values, dict):
        raise UserError(f"{path} does not hold a mapping of options")
    return values


def load_run_config(folder: Path) -> RunConfig:
    """The training configuration of a run folder (older runs' extra keys are ignored)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"no trained run at {folder}")
    values = saved_options(folder)
    if values is None:
        raise UserError(f"{folder} has no train_opt.json (is it a revgan run folder?)")
    return RunConfig.from_dict(values, strict=False, source=str(folder / "train_opt.json"))
