"""What holds the peak of a training step: heap per phase and saved activations per part.

    python benchmarks/profile_step_memory.py --model paired_revgan --side 128 [--ngf 64]
        [--set key=value ...] [--threads 1]

After two warm-up steps, one step is run with the heap sampled continuously (the meter of
``bench_step.py``) and split into phases: each generator group's forward and backward, the
optimiser steps, the discriminator step. For each generator group it also tallies the
tensors autograd saves for backward (weights excluded), by the top-level part that saved
them (encoder_A, core, decoder_B, D_A, ...; storages counted once). Prints a markdown
report; with ``--out`` it also appends it to that file.
"""

from __future__ import annotations

import argparse
import contextlib
import time
from collections import defaultdict
from pathlib import Path

import torch
from harness import write_text

from revgan.engine.memory import PeakSampler, heap_bytes
from revgan.train.plan import random_batch, step_model

MiB = 2.0**20


class Timeline(PeakSampler):
    """Heap samples from a thread, and named phases (start, end) to split them by."""

    def __init__(self, period_s: float = 2e-4):
        super().__init__(period_s)
        self.samples, self.phases = [], []

    def _record(self, heap: int) -> None:
        super()._record(heap)
        self.samples.append((time.perf_counter(), heap))

    def __enter__(self):
        self.base = heap_bytes()
        return super().__enter__()

    @contextlib.contextmanager
    def phase(self, name: str):
        start_heap = heap_bytes()
        start = time.perf_counter()
        yield
        self.phases.append((name, start, time.perf_counter(), start_heap, heap_bytes()))

    def report(self) -> list[tuple[str, float, float, float]]:
        """Per phase: heap at start, peak, heap at end (MiB above the level before). The gaps
        between consecutive named phases (e.g. a group's backward) are phases too."""
        named = sorted(self.phases, key=lambda p: p[1])
        whole = [p for p in named if p[0] == "whole step"]
        named = [p for p in named if p[0] != "whole step"]
        phases = list(whole)
        for prev, nxt in zip(named, named[1:] + whole):
            phases.append(prev)
            t_end = nxt[1] if nxt[0] != "whole step" else nxt[2]
            if t_end > prev[2]:
                phases.append((f"after: {prev[0]}", prev[2], t_end, prev[4],
                               nxt[3] if nxt[0] != "whole step" else nxt[4]))
        out = []
        for name, t0, t1, h0, h1 in phases:
            inside = [h for t, h in self.samples if t0 <= t <= t1] + [h0, h1]
            out.append((name, (h0 - self.base) / MiB, (max(inside) - self.base) / MiB,
                        (h1 - self.base) / MiB))
        return out


class SavedTally:
    """Bytes of tensors saved for backward, by the top-level part running when saved."""

    def __init__(self, parts: dict[str, torch.nn.Module]):
        self.stack: list[str] = []
        # weights are saved for backward too, but they exist before the step anyway
        self.weights = {p.untyped_storage().data_ptr() for m in parts.values()
                        for p in m.parameters()}
        self.bytes: dict[str, int] = defaultdict(int)
        self.seen: set[int] = set()
        self.handles = []
        def enter(name: str):
            def hook(module, args) -> None:
                self.stack.append(name)
            return hook

        def leave(module, args, output) -> None:  # must return None: not to replace output
            self.stack.pop()

        for name, module in parts.items():
            self.handles.append(module.register_forward_pre_hook(enter(name)))
            self.handles.append(module.register_forward_hook(leave))

    def pack(self, t: torch.Tensor):
        storage = t.untyped_storage()
        key = storage.data_ptr()
        if key not in self.seen and key not in self.weights and storage.nbytes() > 0:
            self.seen.add(key)
            self.bytes[self.stack[-1] if self.stack else "loss/glue"] += storage.nbytes()
        return t

    def hooks(self):
        return torch.autograd.graph.saved_tensors_hooks(self.pack, lambda t: t)

    def reset(self) -> dict[str, int]:
        out = dict(self.bytes)
        self.bytes.clear()
        self.seen.clear()
        return out

    def remove(self) -> None:
        for h in self.handles:
            h.remove()


def parts_of(model) -> dict[str, torch.nn.Module]:
    parts = {}
    G = model.plain("G")
    for name, child in G.named_children():
        if name in ("G_A", "G_B", "G"):  # baseline generators: one level deeper
            for sub, grandchild in child.named_children():
                parts[f"{name}.{sub}"] = grandchild
        else:
            parts[name] = child
    for name in model.nets:
        if name != "G":
            parts[name] = model.plain(name)
    return parts


def profile(model_name: str, side: int, values: dict) -> dict:
    model = step_model(model_name, values, torch.device("cpu"))
    batch = random_batch(model, side)
    model.set_input(batch)
    for _ in range(2):
        model.optimize()
    tally = SavedTally(parts_of(model))
    timeline = Timeline()
    groups_saved: list[dict[str, int]] = []
    real_groups = model._generator_groups

    def instrumented_groups():
        wrapped = []
        for i, group in enumerate(real_groups()):
            def run(group=group, i=i):
                with tally.hooks(), timeline.phase(f"G group {i} forward"):
                    loss = group()
                groups_saved.append(tally.reset())
                return loss
            wrapped.append(run)
        return wrapped

    real_apply = model.apply_step

    def apply_step(name, loss):
        with timeline.phase(f"{name} step (backward + optimiser)"):
            real_apply(name, loss)

    model._generator_groups = instrumented_groups
    model.apply_step = apply_step
    with timeline:
        with timeline.phase("whole step"):
            model.optimize()
    tally.remove()
    return {"phases": timeline.report(), "saved": groups_saved,
            "grouped": model.grouped_backward}


def markdown(model_name: str, side: int, values: dict, result: dict) -> str:
    lines = [f"## {model_name}, side {side}, {values}", "",
             f"grouped backward: {result['grouped']}", "",
             "| phase | heap at start MiB | peak MiB | at end MiB |", "|---|---:|---:|---:|"]
    for name, h0, peak, h1 in result["phases"]:
        lines.append(f"| {name} | {h0:.1f} | {peak:.1f} | {h1:.1f} |")
    lines += ["", "Saved for backward per generator group (MiB):", "",
              "| group | " + " | ".join(["part", "MiB"]) + " |", "|---|---|---:|"]
    for i, saved in enumerate(result["saved"]):
        total = sum(saved.values())
        for part, nbytes in sorted(saved.items(), key=lambda kv: -kv[1]):
            lines.append(f"| {i} | {part} | {nbytes / MiB:.1f} |")
        lines.append(f"| {i} | **total** | **{total / MiB:.1f}** |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--side", type=int, required=True)
    parser.add_argument("--ngf", type=int, default=None)
    parser.add_argument("--set", nargs="*", default=[], help="option=value (int/float/bool)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    values: dict = {}
    if args.ngf:
        values["ngf"] = args.ngf
    for item in args.set:
        key, _, raw = item.partition("=")
        for cast in (int, float):
            try:
                values[key] = cast(raw)
                break
            except ValueError:
                continue
        else:
            values[key] = {"true": True, "false": False}.get(raw.lower(), raw)
    text = markdown(args.model, args.side, values, profile(args.model, args.side, values))
    print(text)
    if args.out:
        path = Path(args.out)
        write_text(path, (path.read_text() + "\n" if path.exists() else "") + text)


if __name__ == "__main__":
    main()
