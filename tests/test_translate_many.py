"""``revgan translate`` over a folder: each output appears whole or not at all, and after a
kill midway a rerun with ``--skip_existing`` writes only what is missing (issue #13)."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from helpers import cli_error, run_cli, tiny_flags
from PIL import Image

from revgan.demo.scenes import make_demo_dataset

# Runs ``revgan translate`` and SIGKILLs itself at the N-th rename of a finished output into
# the output folder: the output's bytes are written and synced, the rename has not happened.
KILLED_AT_RENAME = textwrap.dedent("""
    import os, signal, sys

    out_dir = os.path.realpath(sys.argv[1])
    kill_at = int(sys.argv[2])
    renames = 0
    real_replace = os.replace

    def replace(src, dst, *args, **kwargs):
        global renames
        if os.path.realpath(os.fspath(dst)).startswith(out_dir + os.sep):
            renames += 1
            if renames == kill_at:
                os.kill(os.getpid(), signal.SIGKILL)
        return real_replace(src, dst, *args, **kwargs)

    os.replace = replace
    from revgan.cli.main import main
    main(sys.argv[3:])
""")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("translate_many")
    data = make_demo_dataset(work / "demo", size=32, n_train=2, n_test=1, n_val=1)
    run_cli("train", "--dataroot", data["unpaired"], "--name", "run", "--checkpoints_dir",
            work / "ck", *tiny_flags("unpaired_revgan"), "--n_epochs", "1",
            "--n_epochs_decay", "0")
    return work / "ck" / "run"


def make_inputs(folder: Path, count: int) -> list[Path]:
    rng = np.random.default_rng(7)
    paths = []
    for i in range(count):
        path = folder / ("sub" if i % 3 == 0 else "") / f"img_{i:02d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (24, 40, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    return sorted(paths)


def outputs(folder: Path) -> dict[str, tuple[int, int, int]]:
    """Each output's inode, modification time and size: a rewrite changes them."""
    return {str(p.relative_to(folder)): (p.stat().st_ino, p.stat().st_mtime_ns, p.stat().st_size)
            for p in sorted(folder.rglob("*.png"))}


def test_a_kill_midway_leaves_whole_outputs_and_skip_existing_completes_the_rest(
        run_dir, tmp_path, capsys):
    sources = make_inputs(tmp_path / "in", 10)
    out = tmp_path / "out"
    common = ["translate", "--model_dir", run_dir, "--input", tmp_path / "in", "--gpu_ids",
              "-1", "--no_progress"]
    kill_at = 5
    done = subprocess.run([sys.executable, "-c", KILLED_AT_RENAME, out, str(kill_at),
                           *map(str, common), "--output", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == -signal.SIGKILL, done.stderr[-2000:]

    # Killed with the 5th output written under a temporary name: 4 whole outputs, no 5th.
    finished = outputs(out)
    expected = [str(s.relative_to(tmp_path / "in")) for s in sources]
    assert sorted(finished) == sorted(expected[:kill_at - 1])
    for name in finished:
        assert Image.open(out / name).size == (40, 24)  # each one a whole, readable image
    leftovers = [p for p in out.rglob(".*.tmp")]
    assert len(leftovers) == 1 and leftovers[0].name.startswith(f".{Path(expected[4]).name}.")

    # Without --skip_existing the rerun refuses and changes nothing.
    line = cli_error(capsys, *common, "--output", out)
    assert "exists" in line and "--skip_existing" in line
    assert outputs(out) == finished

    run_cli(*common, "--output", out, "--skip_existing")
    assert "wrote 6 file(s)" in capsys.readouterr().out
    after = outputs(out)
    assert sorted(after) == sorted(expected)
    for name, before in finished.items():  # the finished outputs were not rewritten
        assert after[name] == before
    assert not list(out.rglob(".*.tmp"))  # the killed run's partial write is cleaned up

    # The completed folder equals one uninterrupted run.
    run_cli(*common, "--output", tmp_path / "clean")
    for name in expected:
        np.testing.assert_array_equal(np.array(Image.open(out / name)),
                                      np.array(Image.open(tmp_path / "clean" / name)))


def test_skip_existing_and_overwrite_contradict(run_dir, tmp_path, capsys):
    make_inputs(tmp_path / "in", 1)
    line = cli_error(capsys, "translate", "--model_dir", run_dir, "--input", tmp_path / "in",
                     "--output", tmp_path / "out", "--gpu_ids", "-1", "--skip_existing",
                     "--overwrite")
    assert "--overwrite" in line and "--skip_existing" in line
    assert not (tmp_path / "out").exists()


def test_the_rss_benchmark_sees_growth_and_flatness():
    """benchmarks/bench_translate_many.py's summary: a leak of 0.1 MB per file shows as
    +90 MB after the warm-up and +10 MB per 100 files; a flat run shows neither."""
    import importlib.util

    bench_dir = Path(__file__).resolve().parents[1] / "benchmarks"
    sys.path.insert(0, str(bench_dir))  # the script imports benchmarks/harness.py
    try:
        spec = importlib.util.spec_from_file_location("_bench_translate_many",
                                                      bench_dir / "bench_translate_many.py")
        bench = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(bench)
    finally:
        sys.path.remove(str(bench_dir))
    files = 1000
    leaking = [(i * 0.1, i, 400 + 0.1 * i) for i in range(files + 1)]
    summary = bench.summarize(leaking, files)
    assert summary["growth_after_warmup_mb"] == pytest.approx(90.0)
    assert summary["slope_mb_per_100_files"] == pytest.approx(10.0)
    flat = [(i * 0.1, i, 400 + (i % 2) * 0.5) for i in range(files + 1)]
    summary = bench.summarize(flat, files)
    assert abs(summary["growth_after_warmup_mb"]) <= 0.5
    assert abs(summary["slope_mb_per_100_files"]) < 0.01
    assert summary["rss_peak_mb"] == 400.5 and summary["files_at_end"] == files
