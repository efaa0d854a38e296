"""What both demo data generators do with their output folder: reuse, refuse or replace.

A generated set is complete when its manifest (written last) holds the same parameters and
every expected file exists; such a set is reused as it is. Anything else in a non-empty folder
is refused unless the caller asked to overwrite, which removes only the generator's own
folders and manifest, never other files the user keeps there.
"""

from __future__ import annotations

import argparse
import json
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from revgan.errors import UserError


def check_counts(counts: dict[str, int], most: int) -> None:
    """Each count an integer in [0, most]; at least one training item."""
    for name, n in counts.items():
        if not isinstance(n, int) or n < 0 or n > most:
            raise UserError(f"{name} must be an integer between 0 and {most}, got {n}")
    if counts["n_train"] < 1:
        raise UserError("n_train must be at least 1")


def is_complete(root: Path, manifest: str, params: dict[str, Any],
                expected: Iterable[Path]) -> bool:
    try:
        saved = json.loads((root / manifest).read_text())
    except (OSError, ValueError):
        return False
    if not isinstance(saved, dict) or any(saved.get(k) != v for k, v in params.items()):
        return False
    return all(p.is_file() for p in expected)


def prepare(root: Path, manifest: str, params: dict[str, Any], expected: Iterable[Path],
            owned: Iterable[str], overwrite: bool, what: str) -> bool:
    """True if ``root`` already holds this set (reuse it); else leave ``root`` ready to write.

    ``owned``: the top-level folders the generator writes (removed on ``overwrite``);
    ``what``: how messages name the set (e.g. "demo dataset").
    """
    owned = list(owned)
    if root.exists() and not root.is_dir():
        raise UserError(f"{what} root is a file: {root}")
    if not (root.is_dir() and any(root.iterdir())):
        return False
    if is_complete(root, manifest, params, expected):
        return True
    if not overwrite:
        why = (f"holds a {what} made with other parameters" if (root / manifest).is_file()
               else f"is not empty and holds no complete {what}")
        raise UserError(f"{root} {why}; choose another folder or pass overwrite "
                        f"(--overwrite) to replace its {', '.join(o + '/' for o in owned)}")
    for name in owned:
        if (root / name).exists():
            shutil.rmtree(root / name)
    (root / manifest).unlink(missing_ok=True)
    return False


def write_manifest(root: Path, manifest: str, content: dict[str, Any]) -> None:
    """Written last: its presence marks the set complete."""
    (root / manifest).write_text(json.dumps(content, indent=2) + "\n")


def command_line(prog: str, description: str, n_train: int, n_test: int
                 ) -> argparse.ArgumentParser:
    """The options both ``python -m revgan.demo.<generator> ROOT`` commands share."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("root", type=Path, help="output folder")
    parser.add_argument("--n_train", "--n-train", type=int, default=n_train)
    parser.add_argument("--n_test", "--n-test", type=int, default=n_test)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--overwrite", action="store_true")
    return parser
