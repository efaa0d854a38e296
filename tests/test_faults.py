"""Faults a long training run meets, each exercised for real: signals sent to a training
process, a second live process on the same run folder, a full file system, changed bytes.

The training processes pause at exact points through the loop's test hooks
(``REVGAN_TEST_*``, see :class:`revgan.train.loop.FaultHooks`), so every test is
deterministic whatever the machine's speed: no polling by wall clock.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import queue
import random
import resource
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import cli_error, run_cli, tiny_flags, weights

from revgan.demo.scenes import make_demo_dataset
from revgan.infer.load import load_generator
from revgan.runs.checkpoints import load_checkpoint, load_training_state, weights_path
from revgan.runs.lock import LOCK_NAME

# (runpy warns when revgan.cli's package imports its main module: not these tests' concern)
CLI = [sys.executable, "-W", "ignore:'revgan.cli.main' found in sys.modules:RuntimeWarning",
       "-m", "revgan.cli.main"]
ENV = {**os.environ, "OMP_NUM_THREADS": "2"}  # every run: a fresh process, same threads
NETS = ("G", "D_A", "D_B")
# 6 images, batch 1: iterations 1-6 in epoch 1, 7-12 in epoch 2; "latest" every 2 of them
COMMON = ["--n_epochs", "1", "--n_epochs_decay", "1", "--deterministic",
          "--save_latest_freq", "2", "--pool_size", "3", "--display_freq", "1000",
          "--no_html", "--no_tensorboard"]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict:
    return make_demo_dataset(tmp_path_factory.mktemp("demo"), size=32, n_train=6, n_test=2,
                             n_val=2)


def train_args(data, ck, name, *extra) -> list[str]:
    return ["train", "--dataroot", str(data["unpaired"]), "--name", name, "--checkpoints_dir",
            str(ck), *tiny_flags("unpaired_revgan"), *COMMON, *extra]


@pytest.fixture(scope="module")
def straight(data, tmp_path_factory) -> Path:
    """An uninterrupted run, in a fresh process like the interrupted ones."""
    ck = tmp_path_factory.mktemp("straight")
    subprocess.run([*CLI, *train_args(data, ck, "run")], check=True, env=ENV,
                   capture_output=True)
    return ck / "run"


def assert_same_weights(run_a: Path, run_b: Path) -> None:
    for net in NETS:
        a = weights(run_a / f"latest_net_{net}.safetensors")
        b = weights(run_b / f"latest_net_{net}.safetensors")
        assert a.keys() == b.keys()
        assert all(np.array_equal(a[k].numpy(), b[k].numpy()) for k in a), net


class Child:
    """A training subprocess; a thread collects its stderr lines so the test can wait for a
    hook's marker line without polling."""

    def __init__(self, argv: list[str], hooks: dict[str, int] | None = None, **popen):
        env = {**ENV, **{k: str(v) for k, v in (hooks or {}).items()}}
        self.proc = subprocess.Popen([*CLI, *argv], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, text=True, env=env, **popen)
        self.lines: queue.Queue = queue.Queue()
        self.err: list[str] = []
        self.reader = threading.Thread(target=self._pump, daemon=True)
        self.reader.start()

    def _pump(self) -> None:
        for line in self.proc.stderr:
            self.err.append(line)
            self.lines.put(line)
        self.lines.put(None)

    def wait_for(self, marker: str, timeout: float = 300) -> None:
        while True:
            line = self.lines.get(timeout=timeout)
            if line is None:
                raise AssertionError(f"the child ended before '{marker}':\n"
                                     + "".join(self.err)[-3000:])
            if marker in line:
                return

    def finish(self, timeout: float = 300) -> int:
        code = self.proc.wait(timeout)
        self.reader.join(timeout)
        return code

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@contextlib.contextmanager
def child(*args, **kwargs):
    started = Child(*args, **kwargs)
    try:
        yield started
    finally:
        started.kill()


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file()}


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()
                  if p.name.endswith((".pending", ".tmp", ".commit.json")))


# --- 1. preemption ---------------------------------------------------------------------------

def test_sigterm_mid_iteration_commits_and_the_printed_command_resumes_exactly(data, tmp_path,
                                                                               straight):
    """SIGTERM in a random iteration (fixed seed), then a second signal while the checkpoint
    is being committed: the iteration completes, the commit completes, exit 143 with one line
    whose command resumes to weights equal to an uninterrupted run's, bit for bit. Both signals
    go to the whole process group, loader workers included, as Ctrl-C and SLURM send them."""
    stop_at = random.Random(1913).randrange(1, 12)  # iterations 1..11 of 12
    # "latest" is committed every 2 iterations: the commit after iteration k is ceil(k/2)
    hooks = {"REVGAN_TEST_PAUSE_AT_ITER": stop_at,
             "REVGAN_TEST_PAUSE_IN_COMMIT": (stop_at + 1) // 2}
    with child(train_args(data, tmp_path, "run", "--num_threads", "2"), hooks,
               start_new_session=True) as trainer:
        trainer.wait_for("revgan-test: paused at iteration")
        os.killpg(trainer.proc.pid, signal.SIGTERM)  # during iteration `stop_at`
        trainer.wait_for("revgan-test: committing")
        os.killpg(trainer.proc.pid, signal.SIGINT)  # during the commit: must wait for it
        code = trainer.finish()
    assert code == 143, "".join(trainer.err)
    lines = [line for line in trainer.err if line.strip()]
    assert len(lines) == 3 and "Traceback" not in "".join(lines), lines  # 2 markers + 1 line
    line = lines[-1]
    assert line.startswith("revgan: stopped by SIGTERM") and "Resume with: " in line, line
    run = tmp_path / "run"
    assert leftovers(run) == []
    state = load_checkpoint(run, "latest", {}, torch.device("cpu"), with_state=True)
    assert state["counters"]["total_iters"] == stop_at  # the signalled iteration finished
    command = shlex.split(line.split("Resume with: ", 1)[1])
    assert command[:2] == ["revgan", "train"] and command[-1] == "--continue_train"
    subprocess.run([*CLI, *command[1:]], check=True, env=ENV, capture_output=True)
    assert_same_weights(straight, run)


# --- 5 (#14). SIGKILL, and 2. a dead writer's lock --------------------------------------------

def test_sigkill_after_a_commit_then_resume_is_exact_and_takes_over_the_lock(data, tmp_path,
                                                                            straight):
    """The child kills itself (SIGKILL) right after its 4th commit, at iteration 8: nothing
    runs its clean-up, the lock file names a dead process; the resume takes it over and
    ends equal to the uninterrupted run."""
    with child(train_args(data, tmp_path, "run"),
               {"REVGAN_TEST_KILL_AFTER_COMMITS": 4}) as trainer:
        assert trainer.finish() == -signal.SIGKILL
    run = tmp_path / "run"
    dead = json.loads((run / LOCK_NAME).read_text())
    assert dead["pid"] == trainer.proc.pid
    assert load_training_state(run / "latest_train_state.pt")["counters"]["total_iters"] == 8
    resumed = subprocess.run([*CLI, *train_args(data, tmp_path, "run", "--continue_train")],
                             env=ENV, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert f"took over the lock of {run} left by pid {trainer.proc.pid}" in resumed.stderr
    assert not (run / LOCK_NAME).exists()  # a clean end releases it
    assert_same_weights(straight, run)


# --- 2. one writer, readers beside it --------------------------------------------------------

def test_second_writer_is_refused_and_readers_see_whole_checkpoints(data, tmp_path, capsys):
    """A live trainer paused inside its 2nd commit (new files pending, journal written,
    nothing renamed yet): a second `train` is refused naming it; `translate` and a checkpoint
    load read the commit's complete new files and write nothing into the run folder."""
    run = tmp_path / "run"
    with child(train_args(data, tmp_path, "run"), {"REVGAN_TEST_PAUSE_IN_COMMIT": 2}) as trainer:
        trainer.wait_for("revgan-test: committing")
        before = snapshot(run)
        assert any(name.endswith(".pending") for name in before)
        line = cli_error(capsys, *train_args(data, tmp_path, "run", "--continue_train"))
        assert f"pid {trainer.proc.pid} on host {socket.gethostname()}" in line, line
        line = cli_error(capsys, *train_args(data, tmp_path, "run", "--overwrite"))
        assert f"pid {trainer.proc.pid}" in line, line
        G, _ = load_generator(run, "latest")
        source = next((Path(data["unpaired"]) / "testA").iterdir())
        run_cli("translate", "--model_dir", run, "--input", source, "--output",
                tmp_path / "out.png", "--gpu_ids", "-1", "--no_progress")
        assert (tmp_path / "out.png").is_file()
        assert snapshot(run) == before  # readers wrote nothing, touched no pending file
        trainer.proc.send_signal(signal.SIGTERM)
        assert trainer.finish() == 143, "".join(trainer.err)
    committed = weights(weights_path(run, "latest", "G"))
    read = G.state_dict()
    assert committed.keys() == read.keys()
    assert all(torch.equal(committed[k], read[k]) for k in committed)  # the 2nd commit
    assert leftovers(run) == []


# --- 3. a full disk --------------------------------------------------------------------------

def _checkpoint_names(run: Path) -> list[str]:
    return sorted(p.name for p in run.iterdir() if p.name.startswith("latest_"))


def _assert_stopped_cleanly(run: Path, before: dict[str, bytes], err: str) -> None:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    assert "no space left to save checkpoint 'latest'" in lines[0], lines[0]
    assert leftovers(run) == []  # partial files removed
    assert {k: v for k, v in snapshot(run).items() if k.startswith("latest_")} == before
    state = load_checkpoint(run, "latest", {}, torch.device("cpu"), with_state=True)
    assert state["counters"]["total_iters"] == 6  # the previous checkpoint, loadable


@pytest.fixture
def tmpfs(tmp_path):
    """A real 2 MiB file system (tmpfs), mounted where the test may mount (root)."""
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root; the RLIMIT_FSIZE test covers the path")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount_point)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip()}); the RLIMIT_FSIZE "
                    "test covers the path")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def test_full_disk_keeps_the_previous_checkpoint(data, tmpfs, capsys):
    run_cli(*train_args(data, tmpfs, "run", "--n_epochs_decay", "0"))  # epoch 1: 6 iterations
    run = tmpfs / "run"
    before = {k: v for k, v in snapshot(run).items() if k.startswith("latest_")}
    state_size = len(before["latest_train_state.pt"])
    # fill the disk but for half a training state: the next checkpoint cannot fit
    free = os.statvfs(tmpfs).f_bavail * os.statvfs(tmpfs).f_frsize
    filler = tmpfs / "filler"
    with filler.open("wb") as handle:
        handle.write(b"\0" * max(0, free - state_size // 2))
    assert os.statvfs(tmpfs).f_bavail * os.statvfs(tmpfs).f_frsize < state_size
    with pytest.raises(SystemExit) as exc:
        run_cli(*train_args(data, tmpfs, "run", "--continue_train"))
    assert exc.value.code == 2
    _assert_stopped_cleanly(run, before, capsys.readouterr().err)
    filler.unlink()  # space again: the run resumes from the kept checkpoint
    run_cli(*train_args(data, tmpfs, "run", "--continue_train"))
    assert load_training_state(run / "latest_train_state.pt")["counters"]["total_iters"] == 12


def test_full_disk_while_writing_results_is_one_line(trained, data, tmpfs, capsys):
    """`revgan test` writing its results to a full disk: exit 2, one line naming the file,
    no partial file left."""
    free = os.statvfs(tmpfs).f_bavail * os.statvfs(tmpfs).f_frsize
    (tmpfs / "filler").write_bytes(b"\0" * (free - 12 * 1024))
    line = cli_error(capsys, "test", "--dataroot", data["unpaired"], "--name", "run",
                     "--checkpoints_dir", trained.parent, "--results_dir", tmpfs / "res",
                     "--model", "unpaired_revgan", "--gpu_ids", "-1", "--no_progress")
    assert "No space left on device" in line and "the partial file is removed" in line, line
    assert not [p for p in tmpfs.rglob("*") if p.name.endswith((".tmp", ".pending"))]


def test_file_size_limit_keeps_the_previous_checkpoint(data, tmp_path):
    """RLIMIT_FSIZE (works without root): a write past it fails with EFBIG."""
    run_cli(*train_args(data, tmp_path, "run", "--n_epochs_decay", "0"))
    run = tmp_path / "run"
    before = {k: v for k, v in snapshot(run).items() if k.startswith("latest_")}
    largest_other = max(len(v) for k, v in snapshot(run).items()
                        if k != "latest_train_state.pt")
    state_size = len(before["latest_train_state.pt"])
    assert largest_other < state_size
    limit = (largest_other + state_size) // 2  # every file fits but the training state

    def limited() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of being killed
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    done = subprocess.run([*CLI, *train_args(data, tmp_path, "run", "--continue_train")],
                          env=ENV, capture_output=True, text=True, preexec_fn=limited)
    assert done.returncode == 2, done.stderr
    _assert_stopped_cleanly(run, before, done.stderr)


# --- 4. corruption ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def trained(data, tmp_path_factory) -> Path:
    ck = tmp_path_factory.mktemp("trained")
    run_cli(*train_args(data, ck, "run", "--n_epochs_decay", "0"))
    return ck / "run"


@pytest.mark.parametrize("damage", ["flip", "truncate"])
@pytest.mark.parametrize("target", ["latest_net_G.safetensors", "latest_train_state.pt"])
def test_changed_bytes_stop_the_load_with_one_line(trained, data, tmp_path, capsys, damage,
                                                   target):
    """Policy: a checkpoint whose bytes changed is not loaded (no silent fallback): one line
    naming the file, exit 2, nothing written."""
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    path = run / target
    raw = bytearray(path.read_bytes())
    if damage == "flip":
        raw[len(raw) * 3 // 4] ^= 0x01  # one bit, inside the tensor data
    else:
        del raw[len(raw) - 100:]
    path.write_bytes(bytes(raw))
    before = snapshot(run)
    line = cli_error(capsys, *train_args(data, tmp_path, "run", "--continue_train"))
    assert f"{path} is corrupted" in line and "sha256" in line, line
    if target.endswith(".safetensors"):
        line = cli_error(capsys, "translate", "--model_dir", run, "--input",
                         next((Path(data["unpaired"]) / "testA").iterdir()), "--output",
                         tmp_path / "out.png", "--gpu_ids", "-1", "--no_progress")
        assert f"{path} is corrupted" in line, line
    assert snapshot(run) == before


def test_lock_without_flock_checks_the_named_process(tmp_path, monkeypatch):
    """Where the file system has no flock (ENOLCK: some Lustre and old NFS mounts), the lock
    file's pid decides: a live process on this host refuses, a dead one is taken over, one
    on another host cannot be checked and refuses with the file to delete."""
    from revgan.runs import lock as runlock

    def no_flock(fd, operation):
        raise OSError(errno.ENOLCK, "No locks available")

    def write_owner(pid: int, host: str) -> None:
        (tmp_path / LOCK_NAME).write_text(json.dumps({"pid": pid, "host": host}))

    monkeypatch.setattr(runlock.fcntl, "flock", no_flock)
    holder = subprocess.Popen(["sleep", "60"])
    try:
        write_owner(holder.pid, socket.gethostname())
        with pytest.raises(runlock.RunFolderBusy, match=f"pid {holder.pid} on host"):
            runlock.RunLock(tmp_path).acquire()
        write_owner(holder.pid, "elsewhere")
        with pytest.raises(runlock.RunFolderBusy, match="delete .*\\.lock"):
            runlock.RunLock(tmp_path).acquire()
    finally:
        holder.kill()
        holder.wait()
    write_owner(holder.pid, socket.gethostname())  # now dead
    taken = runlock.RunLock(tmp_path)
    taken.acquire()
    assert f"pid {holder.pid}" in taken.describe_taken_over()
    assert json.loads((tmp_path / LOCK_NAME).read_text())["pid"] == os.getpid()
    taken.release()
    assert not (tmp_path / LOCK_NAME).exists()


def _ddp_rank(rank: int, world: int, port: int, argv: list[str], out: Path) -> None:
    """One rank of a 2-process CPU run (gloo); its stderr and exit code go to ``out``."""
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    if rank == 1:
        os.environ["REVGAN_TEST_PAUSE_AT_ITER"] = "2"
    os.dup2(os.open(out / f"{rank}.err", os.O_WRONLY | os.O_CREAT | os.O_TRUNC), 2)
    torch.set_num_threads(1)
    from revgan.cli.main import main

    try:
        main(["train", *argv])
        code = 0
    except SystemExit as exc:
        code = exc.code
    (out / f"{rank}.code").write_text(str(code))


def test_sigterm_to_one_rank_stops_every_rank_at_the_same_step(data, tmp_path):
    """Under DDP a signal may reach one rank only: the ranks agree (an all-reduce after every
    step), all stop after the same step, rank 0 commits it, every rank exits 143."""
    import torch.multiprocessing as mp

    out = tmp_path / "ranks"
    out.mkdir()
    argv = [*train_args(data, tmp_path, "run")[1:], "--save_latest_freq", "1000"]
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    ranks = mp.start_processes(_ddp_rank, args=(2, port, argv, out), nprocs=2, join=False,
                               start_method="spawn")
    try:
        # rank 1 waits inside its 2nd step for a signal; rank 0 waits for rank 1 in the
        # collective after that step: no timing matters once the marker is written
        marker, deadline = out / "1.err", time.monotonic() + 300
        while "revgan-test: paused" not in (marker.read_text() if marker.exists() else ""):
            assert time.monotonic() < deadline and all(p.is_alive() for p in ranks.processes)
            time.sleep(0.05)
        os.kill(ranks.processes[1].pid, signal.SIGTERM)
        deadline = time.monotonic() + 120  # seconds are needed; ranks that disagree hang
        while not ranks.join(timeout=5):  # True once every rank has ended
            assert time.monotonic() < deadline, "the ranks did not stop"
    finally:
        for process in ranks.processes:
            process.kill()
    assert [(out / f"{r}.code").read_text() for r in (0, 1)] == ["143", "143"]
    line = (out / "0.err").read_text().strip().splitlines()[-1]
    assert line.startswith("revgan: stopped by SIGTERM at epoch 1, iteration 4"), line
    state = load_checkpoint(tmp_path / "run", "latest", {}, torch.device("cpu"), True)
    assert state["counters"] == {"epoch": 1, "epoch_iter": 4, "total_iters": 4, "world": 2}


def test_overwrite_replaces_the_run_under_its_lock(trained, data, tmp_path):
    """--overwrite empties the run folder but for the lock it holds, then trains afresh."""
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    (run / "web").mkdir(exist_ok=True)
    (run / "web" / "old.html").write_text("old")
    run_cli(*train_args(data, tmp_path, "run", "--overwrite", "--n_epochs_decay", "0"))
    assert not (run / "web" / "old.html").exists() and not (run / LOCK_NAME).exists()
    assert load_training_state(run / "latest_train_state.pt")["counters"]["total_iters"] == 6


def test_atomic_writes_get_the_usual_permissions(tmp_path):
    """mkstemp's private 0600 must not leak into checkpoints and results others read."""
    import os

    from revgan.runs.atomic import atomic_write_text

    old = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "f.txt", "x")
    finally:
        os.umask(old)
    assert (tmp_path / "f.txt").stat().st_mode & 0o777 == 0o644
