"""Memory/speed benchmark of revgan's reversible engine (issue #2).

    python benchmarks/bench_memory.py [--quick] [--depths 4,8,16,32,64]
                                      [--out benchmarks/results/memory.json] [--report PATH]
                                      [--threads N] [--isolate] [--device cpu|cuda] [--overwrite]

Prints a markdown table and writes JSON (and the markdown next to it with --report). The
measuring logic lives in ``benchmarks/harness.py`` (also run by ``revgan bench`` from a checkout).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from harness import (
    add_memory_options,
    markdown_report,
    prepare_output,
    run_from_args,
    write_text,
)

from revgan.errors import exits_cleanly


@exits_cleanly
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=None,
                        help="JSON path (default benchmarks/results/memory.json, "
                             "memory_quick.json with --quick)")
    parser.add_argument("--report", default=None, help="also write the markdown table here")
    add_memory_options(parser)
    args = parser.parse_args(argv)
    default = "memory_quick.json" if args.quick else "memory.json"
    out = prepare_output(Path(args.out) if args.out else Path("benchmarks/results") / default,
                         args.overwrite)
    report = prepare_output(Path(args.report), args.overwrite) if args.report else None
    results = run_from_args(args)
    text = markdown_report(results)
    print(text)
    write_text(out, json.dumps(results, indent=1) + "\n")
    if report is not None:
        write_text(report, text + "\n")
    print(f"results: {out}")


if __name__ == "__main__":
    main()
