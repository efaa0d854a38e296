"""The whole training step, side by side: RevGAN vs CycleGAN and pix2pix (issue #10).

    python benchmarks/bench_step.py [--quick] [--settings 64,128,3d32] [--rows REGEX]
                                    [--repeats N] [--threads N] [--device cpu|cuda]
                                    [--amp none|bf16] [--no_plan] [--out PATH] [--overwrite]

One full iteration (G and D steps, optimiser steps included) after two warm-up iterations,
for every row of a setting (input side, generator width). Per row: peak step memory
(CPU: sampled glibc heap above the level before the step; CUDA: max_memory_allocated),
s/iter (best and median of the timed iterations), FLOPs per iteration (``FlopCounterMode``)
and achieved GFLOP/s, parameters, and ratios to the row's baseline. All rows of a setting
are built at once and timed in rounds (one iteration of every row per round). Time ratios
use the best iteration of each row: on a shared machine other processes only ever add
time, so the minimum is the least disturbed estimate.

Baselines are upstream-style (one summed backward): ``cycle_gan`` for the unpaired rows,
``pix2pix`` with ``resnet_9blocks`` for the paired rows; pix2pix's U-Net is a row too.
With ``--plan`` (default) it also answers "what fits in 16 GiB" (``revgan plan``) for
``unpaired_revgan3d`` vs ``cycle_gan3d`` and ``unpaired_revgan`` vs ``cycle_gan``.
Writes ``benchmarks/results/step.json`` and ``step.md`` (``step_quick.*`` with --quick).
"""

from __future__ import annotations

import argparse
import gc
import json
import re
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from harness import _loadavg, machine_info, prepare_output, write_text

from revgan.errors import UserError, exits_cleanly
from revgan.models.registry import MODELS
from revgan.train.plan import (
    PlanOptions,
    count_flops,
    measure_step_memory,
    parameter_count,
    plan_budget,
    random_batch,
    step_model,
    time_step,
)

MiB = 2.0**20
RESULTS = Path(__file__).resolve().parent / "results"


@dataclass(frozen=True)
class Setting:
    key: str  # e.g. "128" or "3d32"
    dims: int
    side: int
    ngf: int | None  # None: the model's default (3D)


@dataclass(frozen=True)
class Row:
    label: str
    model: str
    values: dict = field(default_factory=dict)
    baseline: str | None = None  # label of the row it is compared with


def settings() -> dict[str, Setting]:
    out = {}
    for side, ngf in ((64, 32), (128, 64), (256, 64)):
        out[str(side)] = Setting(str(side), 2, side, ngf)
        other = 64 if ngf == 32 else 32
        out[f"{side}n{other}"] = Setting(f"{side}n{other}", 2, side, other)
    for side in (32, 64):
        out[f"3d{side}"] = Setting(f"3d{side}", 3, side, None)
    return out


def rows(setting: Setting) -> list[Row]:
    suffix = "3d" if setting.dims == 3 else ""
    cyc, rev = f"cycle_gan{suffix}", f"unpaired_revgan{suffix}"
    p2p, prev = f"pix2pix{suffix}", f"paired_revgan{suffix}"
    idt = {"lambda_identity": 0.5} if setting.dims == 2 else {}
    unet = {} if setting.dims == 3 else {"netG": f"unet_{setting.side}"}
    res = "resnet_9blocks" if setting.dims == 2 else "resnet_6blocks"
    p2p_res = {"netG": res, "norm": "instance", "no_dropout": True}

    def other_recompute(model: str) -> dict:  # the --recompute_stages the model's row lacks
        default = MODELS[model].defaults.get("recompute_stages", "off")
        return {"recompute_stages": "off" if default == "on" else "on"}

    def flag(values: dict) -> str:
        return f"--recompute_stages {values['recompute_stages']}"

    rec = {name: other_recompute(name) for name in (cyc, rev, prev, p2p)}
    return [
        Row(cyc, cyc, {**idt}),
        Row(f"{cyc} grouped", cyc, {**idt, "grouped_backward": "on"}, cyc),
        Row(f"{cyc} {flag(rec[cyc])}", cyc, {**idt, **rec[cyc]}, cyc),
        Row(rev, rev, {**idt}, cyc),
        Row(f"{rev} {flag(rec[rev])}", rev, {**idt, **rec[rev]}, cyc),
        Row(f"{rev} summed", rev, {**idt, "grouped_backward": "off"}, cyc),
        Row(f"{rev} --use_naive", rev, {**idt, "use_naive": True}, cyc),
        Row(f"{rev} --keep_blocks 4", rev, {**idt, "keep_blocks": 4}, cyc),
        Row(f"{rev} --fully_reversible", rev, {**idt, "fully_reversible": True}, cyc),
        Row(f"{p2p} {res}", p2p, p2p_res),
        Row(f"{p2p} {res} {flag(rec[p2p])}", p2p, {**p2p_res, **rec[p2p]}, f"{p2p} {res}"),
        Row(f"{p2p} U-Net", p2p, unet, f"{p2p} {res}"),
        Row(prev, prev, {}, f"{p2p} {res}"),
        Row(f"{prev} {flag(rec[prev])}", prev, rec[prev], f"{p2p} {res}"),
        Row(f"{prev} --use_naive", prev, {"use_naive": True}, f"{p2p} {res}"),
        Row(f"{prev} --fully_reversible", prev, {"fully_reversible": True}, f"{p2p} {res}"),
    ] + ([  # the decoders' x2 layers as pix2pix's ResNet has them (2D RevGAN default: resize)
        Row(f"{prev} --upsample transpose --recompute_stages on", prev,
            {"upsample": "transpose", "recompute_stages": "on"}, f"{p2p} {res}"),
    ] if setting.dims == 2 else [])


# Targets of issue #10: (setting, row, baseline, metric, bound)
TARGETS = [
    ("128", "unpaired_revgan", "cycle_gan", "time", 0.80),
    ("256", "unpaired_revgan", "cycle_gan", "time", 0.80),
    ("64", "unpaired_revgan", "cycle_gan", "time", 1.00),
    ("128", "unpaired_revgan", "cycle_gan", "memory", 0.25),
    ("256", "unpaired_revgan", "cycle_gan", "memory", 0.25),
    ("3d64", "unpaired_revgan3d", "cycle_gan3d", "memory", 0.35),
]
for _key in ("64", "128", "256"):
    TARGETS += [(_key, "paired_revgan", "pix2pix resnet_9blocks", "memory", 0.25),
                (_key, "paired_revgan", "pix2pix resnet_9blocks", "time", 0.80)]


def measure_setting(setting: Setting, selected: list[Row], device: torch.device,
                    repeats: int, amp: str) -> dict:
    """Build every row, warm up, count FLOPs, measure memory, then time in rounds."""
    models, results = {}, {}
    for row in selected:
        values = dict(row.values, amp=amp)
        if setting.ngf is not None:
            values["ngf"] = setting.ngf
        model = step_model(row.model, values, device)
        model.set_input(random_batch(model, setting.side))
        model.optimize()
        params = parameter_count(model)
        results[row.label] = {  # counting the FLOPs is the second warm-up iteration
            "model": row.model, "options": values, "baseline": row.baseline,
            "params_G": params["G"], "params_D": sum(v for k, v in params.items() if k != "G"),
            "flops": count_flops(model),
            "generator": {"netG": model.opt.netG, "upsample": model.opt.upsample,
                          "recompute_stages": model.opt.recompute_stages}}
        models[row.label] = model
    for label, model in models.items():  # memory: one model at a time is stepping
        gc.collect()
        results[label]["peak_bytes"] = measure_step_memory(model, repeats=2)
    times: dict[str, list[float]] = {label: [] for label in models}
    for _ in range(repeats):
        for label, model in models.items():
            times[label].append(time_step(model))
    for label, result in results.items():
        result["times"] = times[label]
        result["s_per_iter"] = min(times[label])
        result["s_per_iter_median"] = statistics.median(times[label])
        result["gflops_per_s"] = result["flops"] / result["s_per_iter"] / 1e9
        base = result["baseline"]
        if base in results:
            result["time_ratio"] = result["s_per_iter"] / min(times[base])
            result["memory_ratio"] = result["peak_bytes"] / results[base]["peak_bytes"]
    del models
    gc.collect()
    return results


def both_directions(setting: Setting, results: dict) -> list[dict]:
    """``paired_revgan`` trains A→B and B→A in one run, pix2pix one direction: compare its
    rows with what a user runs for both directions, two pix2pix runs one after the other
    (time: twice one run's; peak: one run's, as they do not overlap)."""
    suffix = "3d" if setting.dims == 3 else ""
    res = "resnet_9blocks" if setting.dims == 2 else "resnet_6blocks"
    base = results.get(f"pix2pix{suffix} {res}")
    if base is None:
        return []
    out = []
    for label, r in results.items():
        if r["model"] != f"paired_revgan{suffix}":
            continue
        out.append({"row": label, "vs": f"2 runs of pix2pix{suffix} {res}",
                    "s_per_iter": r["s_per_iter"], "peak_bytes": r["peak_bytes"],
                    "base_s_per_iter": 2 * base["s_per_iter"],
                    "base_peak_bytes": base["peak_bytes"],
                    "time_ratio": r["s_per_iter"] / (2 * base["s_per_iter"]),
                    "memory_ratio": r["peak_bytes"] / base["peak_bytes"]})
    return out


def what_fits(device: torch.device, budget: str, quick: bool) -> list[dict]:
    out = []
    pairs = [("unpaired_revgan3d", "cycle_gan3d", (16, 24) if quick else (24, 32)),
             ("unpaired_revgan", "cycle_gan", (64, 96) if quick else (96, 128))]
    for models_pair in pairs:
        for model in models_pair[:2]:  # each model's defaults (2D: ngf 64, 9 blocks)
            result = plan_budget(PlanOptions(model=model, budget=budget, probe=models_pair[2],
                                             gpu_ids="-1" if device.type == "cpu" else "auto"))
            out.append({"model": model, "budget": budget, "dims": result.dims,
                        "largest_side": result.largest_side,
                        "largest_voxels": result.largest_voxels, "probes": result.probes,
                        "per_voxel_bytes": result.per_voxel, "fixed_bytes": result.fixed,
                        "static_bytes": result.static})
    return out


def _fmt(value, spec: str) -> str:
    return "–" if value is None else format(value, spec)


def _generator(row: dict) -> str:
    g = row.get("generator")
    return "–" if g is None else f"{g['netG']}, {g['upsample']}, {g['recompute_stages']}"


def markdown(report: dict) -> str:
    lines = ["# The whole training step: RevGAN vs CycleGAN and pix2pix", "",
             f"torch {report['machine']['torch']}, {report['machine']['device']}, "
             f"{report['machine']['threads']} threads, {report['machine']['cpu']}; amp "
             f"{report['amp']}; load average {report['loadavg_start']} at start, "
             f"{report['loadavg_end']} at end; {report['seconds']:.0f} s. "
             f"Command: `{report['command']}`", "",
             "peak = peak step memory above the level before the step (weights, gradients "
             "and optimiser state excluded; CPU: sampled heap, a lower bound); s/iter = best "
             f"(and median) of {report['repeats']} iterations after 2 warm-up ones, timed in "
             "rounds across the rows; ratios are to the row named in 'vs' (time: best to "
             "best). "
             "'grouped'/'summed': backward per group of loss terms / one summed backward "
             "(RevGAN default grouped, baselines summed as upstream). G: netG, upsampling, "
             "--recompute_stages of the row as built (model defaults included).", ""]
    for result in report["settings"].values():
        s = result["setting"]
        ngf = f"ngf {s['ngf']}" if s["ngf"] else "model default ngf"
        lines += [f"## {s['dims']}D, side {s['side']}, {ngf}", "",
                  "| row | vs | params G / D (M) | GFLOP/iter | s/iter best (median) | GFLOP/s | "
                  "peak MiB | time ratio | memory ratio | G |",
                  "|---|---|---:|---:|---:|---:|---:|---:|---:|---|"]
        for label, r in result["rows"].items():
            lines.append(
                f"| {label} | {r['baseline'] or '(baseline)'} | {r['params_G'] / 1e6:.2f} / "
                f"{r['params_D'] / 1e6:.2f} | {r['flops'] / 1e9:.1f} | {r['s_per_iter']:.3f} "
                f"({r['s_per_iter_median']:.3f}) | "
                f"{r['gflops_per_s']:.1f} | {r['peak_bytes'] / MiB:.1f} | "
                f"{_fmt(r.get('time_ratio'), '.2f')} | {_fmt(r.get('memory_ratio'), '.2f')} | "
                f"{_generator(r)} |")
        lines.append("")
        if result.get("both_directions"):
            lines += ["Both directions: paired_revgan trains A→B and B→A in one run (two "
                      "discriminators), pix2pix one. Against **two pix2pix runs, one after the "
                      "other** (time: 2 × one run's s/iter; peak: one run's, as they do not "
                      "overlap):", "",
                      "| row | vs | s/iter | vs s/iter | peak MiB | vs peak MiB | time ratio | "
                      "memory ratio |", "|---|---|---:|---:|---:|---:|---:|---:|"]
            for b in result["both_directions"]:
                lines.append(f"| {b['row']} | {b['vs']} | {b['s_per_iter']:.3f} | "
                             f"{b['base_s_per_iter']:.3f} | {b['peak_bytes'] / MiB:.1f} | "
                             f"{b['base_peak_bytes'] / MiB:.1f} | {b['time_ratio']:.2f} | "
                             f"{b['memory_ratio']:.2f} |")
            lines.append("")
    if report.get("what_fits"):
        lines += ["## What fits (revgan plan, batch 1)", "",
                  "| model | budget | probes (side: step MiB) | bytes/voxel | largest side | "
                  "voxels |", "|---|---|---|---:|---:|---:|"]
        for f in report["what_fits"]:
            probes = ", ".join(f"{s}: {p / MiB:.0f}" for s, p in f["probes"])
            lines.append(f"| {f['model']} | {f['budget']} | {probes} | "
                         f"{f['per_voxel_bytes']:.0f} | {f['largest_side']} | "
                         f"{f['largest_voxels']:,} |")
        lines.append("")
    if report["targets"]:
        lines += ["## Targets (issue #10)", "", "| target | measured | bound | result |",
                  "|---|---:|---:|---|"]
        for t in report["targets"]:
            lines.append(f"| {t['name']} | {t['value']:.2f} | ≤ {t['bound']} | "
                         f"{'met' if t['met'] else 'MISSED'} |")
        lines.append("")
    return "\n".join(lines)


def evaluate_targets(report: dict) -> list[dict]:
    out = []
    for key, row, base, metric, bound in TARGETS:
        result = report["settings"].get(key, {}).get("rows", {}).get(row)
        if result is None or result.get("baseline") != base:
            continue
        value = result[f"{metric}_ratio"]
        out.append({"name": f"{row} / {base}, {metric}, {key}", "value": value,
                    "bound": bound, "met": value <= bound})
    fits = {f["model"]: f for f in report.get("what_fits", [])}
    if "unpaired_revgan3d" in fits and "cycle_gan3d" in fits:
        ratio = fits["unpaired_revgan3d"]["largest_voxels"] / fits["cycle_gan3d"][
            "largest_voxels"]
        out.append({"name": "largest 3D patch voxels in 16 GiB, unpaired_revgan3d / "
                    "cycle_gan3d (higher is better; shown as baseline/revgan)",
                    "value": 1 / ratio, "bound": 0.5, "met": ratio >= 2})
    return out


@exits_cleanly
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="settings 64 and 3d32, 3 timed iterations, small plan probes")
    parser.add_argument("--settings", default=None,
                        help=f"comma-separated, of {', '.join(settings())} (default: all; "
                             "quick: 64,3d32)")
    parser.add_argument("--rows", default=None,
                        help="regular expression: keep rows whose label matches (baselines "
                             "of kept rows are kept too)")
    parser.add_argument("--repeats", type=int, default=None, help="timed iterations per row")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda if any)")
    parser.add_argument("--amp", default="none", choices=("none", "bf16"))
    parser.add_argument("--no_plan", action="store_true", help="skip the 'what fits' section")
    parser.add_argument("--budget", default="16GiB", help="budget of the 'what fits' section")
    parser.add_argument("--out", default=None, help="JSON path (markdown next to it)")
    parser.add_argument("--overwrite", action="store_true")
    args = parser.parse_args(argv)
    known = settings()
    keys = (args.settings.split(",") if args.settings else
            ["64", "3d32"] if args.quick else list(known))
    unknown = [k for k in keys if k not in known]
    if unknown:
        raise UserError(f"unknown --settings {unknown}; choose from {', '.join(known)}")
    try:
        pattern = re.compile(args.rows) if args.rows else None
    except re.error as exc:
        raise UserError(f"--rows is not a regular expression: {exc}")
    repeats = args.repeats or (3 if args.quick else 5)
    if repeats < 1:
        raise UserError("--repeats must be at least 1")
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda given but CUDA is not available")
    if args.amp != "none" and device.type != "cuda":
        raise UserError("--amp bf16 is measured on CUDA only")
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    name = "step_quick" if args.quick else "step"
    out = prepare_output(Path(args.out) if args.out else RESULTS / f"{name}.json",
                         args.overwrite)
    md_path = prepare_output(out.with_suffix(".md"), args.overwrite)
    start = time.perf_counter()
    report = {"machine": machine_info(device), "amp": args.amp, "repeats": repeats,
              "loadavg_start": _loadavg(),
              "command": "python benchmarks/bench_step.py " + " ".join(
                  sys.argv[1:] if argv is None else argv),
              "settings": {}}
    for key in keys:
        setting = known[key]
        all_rows = rows(setting)
        chosen = [r for r in all_rows if pattern is None or pattern.search(r.label)]
        needed = {r.baseline for r in chosen if r.baseline}
        chosen = [r for r in all_rows if r in chosen or r.label in needed]
        if not chosen:
            continue
        print(f"setting {key}: {', '.join(r.label for r in chosen)}", flush=True)
        measured = measure_setting(setting, chosen, device, repeats, args.amp)
        report["settings"][key] = {"setting": setting.__dict__, "rows": measured,
                                   "both_directions": both_directions(setting, measured)}
    if not args.no_plan:
        print("what fits ...", flush=True)
        report["what_fits"] = what_fits(device, args.budget, args.quick)
    report["targets"] = evaluate_targets(report)
    report["loadavg_end"] = _loadavg()
    report["seconds"] = time.perf_counter() - start
    text = markdown(report)
    print(text)
    write_text(out, json.dumps(report, indent=1, default=str) + "\n")
    write_text(md_path, text + "\n")
    print(f"results: {out}, {md_path}")


if __name__ == "__main__":
    main()
