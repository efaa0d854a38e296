"""The training loop: data, steps, logging, visuals, validation, checkpoints, exact resume.

A run folder has one writer (:class:`revgan.runs.lock.RunLock`). SIGTERM or SIGINT (what
SLURM and Kubernetes send before a kill) finishes the current iteration, commits the
``latest`` checkpoint, prints the command that resumes and exits with 128 + the signal
number; further signals wait until that commit is done.
"""

from __future__ import annotations

import math
import os
import random
import shlex
import shutil
import signal
import sys
import threading
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from revgan.config import RunConfig, select_device
from revgan.data import create_dataset
from revgan.data.datasets import seed_worker
from revgan.errors import Interrupted, UserError, require_creatable
from revgan.models import create_model
from revgan.models.base import BaseModel
from revgan.reporting.progress import progress_bar
from revgan.runs.checkpoints import (
    commit_checkpoint,
    load_checkpoint,
    recover,
    rng_state,
    set_rng_state,
    state_path,
)
from revgan.runs.lock import LOCK_NAME, RunLock
from revgan.runs.run_folder import save_config
from revgan.train import distributed

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class SeededItems(Dataset):
    """Makes every item a pure function of (seed, epoch, index).

    Random crops, flips and partner choices then do not depend on the number of loader
    workers or on where a run was resumed, which is what makes resume exact.
    """

    def __init__(self, dataset: Dataset, seed: int):
        self.dataset = dataset
        self.seed = seed
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        seed = (self.seed * 1_000_003 + self.epoch * 100_003 + int(index)) % (2**63 - 1)
        np_state, py_state = np.random.get_state(), random.getstate()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            np.random.seed(seed % 2**32)
            random.seed(seed)
            try:
                return self.dataset[index]
            finally:
                np.random.set_state(np_state)
                random.setstate(py_state)


class EpochSampler(Sampler[int]):
    """A per-epoch permutation fixed by the seed, split over ranks, resumable mid-epoch."""

    def __init__(self, size: int, seed: int, shuffle: bool, rank: int = 0, world: int = 1):
        self.size, self.seed, self.shuffle = size, seed, shuffle
        self.rank, self.world = rank, world
        self.epoch = 0
        self.skip = 0

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        self.epoch, self.skip = epoch, skip

    def _order(self) -> list[int]:
        if self.shuffle:
            generator = torch.Generator().manual_seed(self.seed * 7919 + self.epoch)
            order = torch.randperm(self.size, generator=generator).tolist()
        else:
            order = list(range(self.size))
        per_rank = math.ceil(self.size / self.world)
        order += order[: per_rank * self.world - self.size]  # pad so ranks get equal shares
        return order[self.rank::self.world]

    def __iter__(self):
        return iter(self._order()[self.skip:])

    def __len__(self) -> int:
        return max(0, math.ceil(self.size / self.world) - self.skip)


def seed_everything(seed: int, deterministic: bool) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(deterministic)
    torch.backends.cudnn.deterministic = deterministic
    torch.backends.cudnn.benchmark = not deterministic and torch.cuda.is_available()


def _crossed(total: int, step: int, period: int) -> bool:
    return total // period > (total - step) // period


def _worker_init(worker_id: int) -> None:
    """Loader workers leave SIGINT/SIGTERM to the main process, which stops them itself:
    a Ctrl-C reaches the whole process group, and a worker dying of it would end the run
    before its checkpoint."""
    for signum in STOP_SIGNALS:
        signal.signal(signum, signal.SIG_IGN)
    seed_worker(worker_id)


class StopSignals:
    """Records SIGTERM/SIGINT instead of dying of them; the loop stops at a safe point.
    (SIGXFSZ needs nothing: Python ignores it, so a write over ``ulimit -f`` fails with EFBIG
    and is handled as a full disk.)"""

    def __init__(self):
        self.signum: int | None = None
        self.count = 0
        self._previous: dict[int, object] = {}

    def _record(self, signum: int, frame) -> None:
        self.signum = self.signum or signum
        self.count += 1

    def install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return  # signal handlers can only be set from the main thread
        for signum in STOP_SIGNALS:
            self._previous[signum] = signal.signal(signum, self._record)

    def restore(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()

    def wait(self, seen: int, timeout: float = 300.0) -> None:
        """Block until a signal beyond the first ``seen`` arrives (test hooks)."""
        deadline = time.monotonic() + timeout
        while self.count <= seen and time.monotonic() < deadline:
            time.sleep(0.005)


class FaultHooks:
    """Deterministic fault injection for the robustness tests, read from the environment
    once, here and nowhere else:

    - ``REVGAN_TEST_KILL_AFTER_COMMITS=N``: SIGKILL this process right after its Nth commit;
    - ``REVGAN_TEST_PAUSE_AT_ITER=N``: in this process's Nth iteration (after the step,
      before its bookkeeping) print ``revgan-test: paused`` on stderr, wait for a signal;
    - ``REVGAN_TEST_PAUSE_IN_COMMIT=N``: in the Nth commit, once its journal is written and
      before its renames, print ``revgan-test: committing`` and wait for a signal.
    """

    def __init__(self, signals: StopSignals):
        env = os.environ
        self.signals = signals
        self.kill_after_commits = int(env.get("REVGAN_TEST_KILL_AFTER_COMMITS", 0))
        self.pause_at_iter = int(env.get("REVGAN_TEST_PAUSE_AT_ITER", 0))
        self.pause_in_commit = int(env.get("REVGAN_TEST_PAUSE_IN_COMMIT", 0))
        self.iterations = self.commits = 0

    def _pause(self, where: str) -> None:
        seen = self.signals.count
        print(f"revgan-test: {where}", file=sys.stderr, flush=True)
        self.signals.wait(seen)

    def after_step(self) -> None:
        self.iterations += 1
        if self.iterations == self.pause_at_iter:
            self._pause(f"paused at iteration {self.iterations}")

    def before_publish(self):
        """The commit's hook, or None: called with the journal written, before the renames."""
        if self.pause_in_commit and self.commits + 1 == self.pause_in_commit:
            return lambda: self._pause(f"committing (commit {self.commits + 1})")
        return None

    def after_commit(self) -> None:
        self.commits += 1
        if self.commits == self.kill_after_commits:
            os.kill(os.getpid(), signal.SIGKILL)


def resume_command() -> str:
    """The command line that resumes this run: this one, with ``--continue_train``."""
    argv = list(sys.argv)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if argv[1:2] == ["train"]:
        program, args = ["revgan"] if world == 1 else ["-m", "revgan.cli.main"], argv[1:]
    elif Path(argv[0]).name == "train.py":
        program, args = ["python", argv[0]] if world == 1 else [argv[0]], argv[1:]
    else:  # called as a library: the options are not on a command line
        return "revgan train <the same options> --continue_train"
    args = [a for a in args if a not in ("--continue_train", "--overwrite")]
    command = shlex.join([*program, *args, "--continue_train"])
    if world > 1:
        nodes = world // int(os.environ.get("LOCAL_WORLD_SIZE", world))
        launcher = f"torchrun --nproc_per_node {world // nodes}" if nodes == 1 else \
            "torchrun <the same launcher options>"
        command = f"{launcher} {command}"
    return command


class Trainer:
    def __init__(self, opt: RunConfig):
        self.opt = opt
        self.dist = distributed.setup(opt)
        self.device = self.dist.device or select_device(opt.gpu_ids)
        self.run_dir = Path(opt.checkpoints_dir) / opt.name
        self.is_main = self.dist.rank == 0
        self.lock = RunLock(self.run_dir)  # held by rank 0, the one writer
        self.signals = StopSignals()
        self.hooks = FaultHooks(self.signals)
        try:
            self._set_up()
        except BaseException:
            self.lock.release()
            raise

    def _set_up(self) -> None:
        opt = self.opt
        seed_everything(opt.seed, opt.deterministic)  # same seed on every rank: same init
        self._check_run_dir()
        dataset = create_dataset(opt)
        if len(dataset) == 0:
            raise UserError(f"the dataset in {opt.dataroot} is empty")
        self.items = SeededItems(dataset, opt.seed)
        self.sampler = EpochSampler(len(dataset), opt.seed, not opt.serial_batches,
                                    self.dist.rank, self.dist.world)
        self.val_dataset = None
        if opt.val_freq:
            from revgan.train.validation import validation_options

            self.val_dataset = create_dataset(validation_options(opt))
        self.model: BaseModel = create_model(opt, self.device)
        distributed.wrap_model(self.model, self.dist, opt)
        self.epoch, self.epoch_iter, self.total_iters = opt.epoch_count, 0, 0
        self.best: float | None = None
        self.latest_at: tuple[int, int] | None = None  # (epoch, epoch_iter) of the last save
        if opt.continue_train:
            self._resume()
        elif opt.epoch_count > 1 and state_path(self.run_dir, "latest").exists():
            # the reference's manual resume: weights from --epoch, schedule from --epoch_count
            load_checkpoint(self.run_dir, opt.epoch, self.model.nets, self.device, False)
        self._commit_run_dir()  # only now that data, model and checkpoint are known good
        self.logger, self.page = self._reporting(len(dataset))

    # -- set-up -------------------------------------------------------------------------
    def _take_lock(self) -> None:
        """One writer per run folder: refuse a live one, take over a dead one's lock."""
        self.lock.acquire()
        note = self.lock.describe_taken_over()
        if note:
            print(f"revgan: {note}", file=sys.stderr)

    def _refuse_trained_run(self) -> None:
        opt, run = self.opt, self.run_dir
        has_run = run.is_dir() and any(run.glob("*_net_*.safetensors"))
        if has_run and not (opt.continue_train or opt.overwrite or opt.epoch_count > 1):
            raise UserError(f"{run} already holds a trained run; pass --continue_train to "
                            "resume it, --overwrite to start again, or another --name")

    def _check_run_dir(self) -> None:
        """Refuse a run folder that cannot be used, before anything is written (a new
        folder is created, and locked, only once set-up has succeeded)."""
        opt, run = self.opt, self.run_dir
        if self.is_main:
            require_creatable(run, "run folder")
            if run.is_dir():
                self._take_lock()  # before recover(): only the writer may touch the files
            recover(run)
            self._refuse_trained_run()
            if opt.continue_train and not state_path(run, "latest").exists():
                raise UserError(f"--continue_train: no checkpoint to resume in {run} "
                                "(latest_train_state.pt is missing)")
        self.dist.barrier()

    def _commit_run_dir(self) -> None:
        """Replace (--overwrite) or create the run folder and write the options."""
        opt, run = self.opt, self.run_dir
        if self.is_main:
            if not self.lock.held:  # a new folder: another process may have made it since
                self._take_lock()
                self._refuse_trained_run()
            if opt.overwrite and not opt.continue_train and \
                    any(run.glob("*_net_*.safetensors")):
                for child in run.iterdir():  # all but the lock we hold
                    if child.name == LOCK_NAME:
                        continue
                    if child.is_dir() and not child.is_symlink():
                        shutil.rmtree(child)
                    else:
                        child.unlink()
            save_config(opt, run)
        self.dist.barrier()

    def _reporting(self, dataset_size: int):
        from revgan.reporting.results_page import TrainingPage
        from revgan.reporting.tracking import RunLogger

        opt = self.opt
        logger = RunLogger(self.run_dir, opt.name, use_tensorboard=not opt.no_tensorboard,
                           use_wandb=opt.use_wandb, enabled=self.is_main,
                           dataset_size=dataset_size, echo=opt.no_progress)
        page = None
        if self.is_main and not opt.no_html:
            page = TrainingPage(self.run_dir / "web", f"Experiment name = {opt.name}")
        return logger, page

    # -- checkpoints --------------------------------------------------------------------
    def _state(self) -> dict:
        return {"model": self.model.training_state(), "rng": rng_state(),
                "counters": {"epoch": self.epoch, "epoch_iter": self.epoch_iter,
                             "total_iters": self.total_iters, "world": self.dist.world},
                "best": self.best}

    def save(self, label: str, with_state: bool = True) -> None:
        if self.is_main:
            commit_checkpoint(self.run_dir, label, self.model.nets, self.opt.architecture(),
                              self._state() if with_state else None,
                              before_publish=self.hooks.before_publish())
            self.hooks.after_commit()
        if label == "latest" and with_state:
            self.latest_at = (self.epoch, self.epoch_iter)
        self.dist.barrier()

    def _stop_signal(self) -> int:
        """The stop signal any rank received (0: none): all ranks stop at the same step."""
        signum = self.signals.signum or 0
        if self.dist.enabled:
            flag = torch.tensor([signum], device=self.dist.device)
            torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
            signum = int(flag.item())
        return signum

    def _stop_if_signalled(self) -> None:
        """At a step boundary after SIGTERM/SIGINT: commit ``latest`` and stop."""
        signum = self._stop_signal()
        if not signum:
            return
        if self.latest_at != (self.epoch, self.epoch_iter):
            self.save("latest")
        message = (f"stopped by {signal.Signals(signum).name} at epoch {self.epoch}, "
                   f"iteration {self.epoch_iter}; checkpoint 'latest' saved in {self.run_dir}. "
                   f"Resume with: {resume_command()}") if self.is_main else ""
        raise Interrupted(message, 128 + signum)

    def _resume(self) -> None:
        state = load_checkpoint(self.run_dir, "latest", self.model.nets, self.device, True)
        self.model.load_training_state(state["model"])
        counters = state["counters"]
        if counters.get("world", 1) != self.dist.world:
            raise UserError(f"the checkpoint was written by {counters.get('world')} process(es); "
                            f"resume with the same number (now {self.dist.world})")
        self.epoch, self.epoch_iter = counters["epoch"], counters["epoch_iter"]
        self.total_iters = counters["total_iters"]
        self.best = state.get("best")
        set_rng_state(state["rng"])

    # -- loop ---------------------------------------------------------------------------
    def _loader(self) -> DataLoader:
        opt = self.opt
        self.items.epoch = self.epoch
        skip = self.epoch_iter // self.dist.world
        self.sampler.set_epoch(self.epoch, skip)
        # A generator of its own: creating the iterator then draws its worker seeds from it,
        # not from the global RNG, whose state a mid-epoch resume restores exactly.
        generator = torch.Generator().manual_seed(opt.seed * 7919 + self.epoch)
        return DataLoader(self.items, batch_size=opt.batch_size, sampler=self.sampler,
                          num_workers=opt.num_threads, worker_init_fn=_worker_init,
                          generator=generator,
                          pin_memory=self.device.type == "cuda",
                          persistent_workers=False)

    def run(self) -> Path:
        opt = self.opt
        last_epoch = opt.n_epochs + opt.n_epochs_decay + opt.epoch_count - 1
        total = (last_epoch - self.epoch + 1) * len(self.items)
        bar = progress_bar(total=total, desc=opt.name, disable=opt.no_progress
                           or not self.is_main, initial=0)
        self.signals.install()
        try:
            while self.epoch <= last_epoch:
                self._run_epoch(bar)
                self._end_epoch(last_epoch)
                if self.epoch <= last_epoch:
                    self._stop_if_signalled()
        finally:
            self.signals.restore()
            bar.close()
            self.logger.close()
        return self.run_dir

    def _run_epoch(self, bar) -> None:
        batches = iter(self._loader())
        try:
            self._run_steps(batches, bar)
        finally:
            # Workers ignore SIGTERM (_worker_init), so the terminate() Python's exit sends
            # to them would not end them: stop them here, whatever ended the epoch.
            shutdown = getattr(batches, "_shutdown_workers", None)
            if shutdown is not None:
                shutdown()

    def _run_steps(self, batches, bar) -> None:
        opt, model = self.opt, self.model
        model.train()
        t_data = time.perf_counter()
        for data in batches:
            t_start = time.perf_counter()
            model.set_input(data)
            model.optimize()
            self.hooks.after_step()
            if model.nonfinite_streak >= opt.max_nonfinite:
                raise UserError(f"{model.nonfinite_streak} training steps in a row had "
                                f"non-finite losses ({model.nonfinite_total} in all); stopped. "
                                "The last good checkpoint is kept; try a lower --lr or --amp "
                                "none")
            step = data[next(iter(data))].shape[0] * self.dist.world
            self.total_iters += step
            self.epoch_iter += step
            bar.update(step)
            t_comp = (time.perf_counter() - t_start) / max(1, step)
            if opt.print_freq and _crossed(self.total_iters, step, opt.print_freq):
                losses = model.losses
                bar.set_postfix({k: f"{v:.3f}" for k, v in list(losses.items())[:4]})
                self.logger.log_losses(self.epoch, self.epoch_iter, self.total_iters, losses,
                                       model.learning_rates(), t_comp, t_start - t_data)
            if _crossed(self.total_iters, step, opt.display_freq):
                self._display()
            if _crossed(self.total_iters, step, opt.save_latest_freq):
                self.save("latest")
                if opt.save_by_iter:
                    self.save(f"iter_{self.total_iters}", with_state=False)
            self._stop_if_signalled()
            t_data = time.perf_counter()

    def _display(self) -> None:
        if not self.is_main:
            return
        visuals = {k: v[:1] for k, v in self.model.train_visuals().items()}
        self.logger.log_images(self.total_iters, visuals, dims=self.opt.dims)
        if self.page is not None:
            self.page.add_visuals(self.epoch, self.epoch_iter, visuals, dims=self.opt.dims)
            self.page.set_plots(self.logger.write_plots(self.run_dir / "web" / "plots"))
            self.page.save()

    def _end_epoch(self, last_epoch: int) -> None:
        opt = self.opt
        metric = None
        if opt.val_freq and self.epoch % opt.val_freq == 0:
            metric = self._validate()
        self.model.update_learning_rate(metric)
        finished = self.epoch
        self.epoch, self.epoch_iter = self.epoch + 1, 0
        # Per-epoch work follows --save_epoch_freq, not every epoch: with short epochs a
        # checkpoint and a page rewrite per epoch would cost more than the training.
        if finished % opt.save_epoch_freq == 0 or finished == last_epoch:
            if finished == last_epoch:
                self._display()
            self.save("latest")
            self.save(str(finished), with_state=False)

    def _validate(self) -> float | None:
        from revgan.train.validation import validate

        results = validate(self.model, self.opt, self.device, self.val_dataset)
        if not results:
            return None
        self.logger.log_metrics(self.total_iters, self.epoch, results)
        key = self.opt.save_best
        if key is None:
            return results.get("MAE")
        if key not in results:
            raise UserError(f"--save_best {key}: validation gives {', '.join(results)}")
        value = results[key]
        lower_is_better = key.split("_")[-1].upper() in ("MAE", "MSE", "L1")
        better = self.best is None or (value < self.best if lower_is_better else
                                       value > self.best)
        if better:
            self.best = value
            self.save("best", with_state=False)
        return results.get("MAE", value)


def train(opt: RunConfig) -> Path:
    trainer = Trainer(opt)
    try:
        return trainer.run()
    finally:
        trainer.lock.release()
        distributed.teardown(trainer.dist)
