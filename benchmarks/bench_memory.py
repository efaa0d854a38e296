"""Memory/speed benchmark of revgan's reversible engine (issue #2).

    python benchmarks/bench_memory.py [--quick] [--depths 4,8,16,32,64]
                                      [--out benchmarks/results/memory.json] [--report PATH]
                                      [--threads N] [--isolate] [--device cpu|cuda] [--overwrite]
                                      [--configs plain_core,reversible_core] [--dims 2]
                                      [--no_roundtrip]

``--configs``, ``--dims`` and ``--no_roundtrip`` limit the run to the rows a question needs,
e.g. the depth-16 core time ratio:
``--depths 16 --configs plain_core,reversible_core --dims 2 --no_roundtrip``.

Prints a markdown table and writes JSON (and the markdown next to it with --report). The
measuring logic lives in ``benchmarks/harness.py`` (also run by ``revgan bench`` from a checkout).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from harness import (
    CONFIGS,
    FULL_DEPTHS,
    QUICK_DEPTHS,
    add_memory_options,
    default_specs,
    markdown_report,
    parse_depths,
    prepare_output,
    run_from_args,
    run_memory_benchmark,
    write_text,
)

from revgan.errors import UserError, exits_cleanly


def run_selected(args: argparse.Namespace) -> dict:
    """The benchmark limited to some configurations, input dims, and no round-trip table."""
    configs = args.configs.split(",") if args.configs else list(CONFIGS)
    specs = [s for s in default_specs(args.quick) if args.dims is None or s.dims == args.dims]
    depths = parse_depths(args.depths) if args.depths else list(
        QUICK_DEPTHS if args.quick else FULL_DEPTHS)
    if args.threads is not None and args.threads < 1:
        raise UserError(f"--threads must be >= 1, got {args.threads}")
    try:
        device = torch.device(args.device) if args.device else None
    except RuntimeError:
        raise UserError(f"unknown device '{args.device}'")
    threads = torch.get_num_threads()
    try:
        if args.threads is not None:
            torch.set_num_threads(args.threads)
        return run_memory_benchmark(depths, specs=specs, configs=configs, device=device,
                                    mem_repeats=2, time_repeats=3 if args.quick else 5,
                                    isolate=args.isolate,
                                    roundtrip_depths=() if args.no_roundtrip else (4, 16),
                                    quick=args.quick)
    finally:
        torch.set_num_threads(threads)


@exits_cleanly
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=None,
                        help="JSON path (default benchmarks/results/memory.json, "
                             "memory_quick.json with --quick)")
    parser.add_argument("--report", default=None, help="also write the markdown table here")
    add_memory_options(parser)
    parser.add_argument("--configs", default=None,
                        help=f"comma-separated subset of {','.join(CONFIGS)} (default: all)")
    parser.add_argument("--dims", type=int, choices=(2, 3), default=None,
                        help="only the 2D or only the 3D input (default: both)")
    parser.add_argument("--no_roundtrip", action="store_true",
                        help="skip the round-trip error table")
    args = parser.parse_args(argv)
    default = "memory_quick.json" if args.quick else "memory.json"
    out = prepare_output(Path(args.out) if args.out else Path("benchmarks/results") / default,
                         args.overwrite)
    report = prepare_output(Path(args.report), args.overwrite) if args.report else None
    selected = args.configs or args.dims or args.no_roundtrip
    results = run_selected(args) if selected else run_from_args(args)
    text = markdown_report(results)
    print(text)
    write_text(out, json.dumps(results, indent=1) + "\n")
    if report is not None:
        write_text(report, text + "\n")
    print(f"results: {out}")


if __name__ == "__main__":
    main()
