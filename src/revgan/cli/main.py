"""The ``revgan`` command: train, test, demo, translate, eval, fid, bench, export."""

from __future__ import annotations

import sys

from revgan.cli.argparsing import ArgumentParser
from revgan.errors import UserError, exits_cleanly

COMMANDS = {
    "train": "train a model (the reference's train.py flags)",
    "test": "test a trained model on a split and write an HTML page",
    "demo": "generate a small dataset, train and test RevGAN on it (no download)",
    "translate": "translate an image/volume or a folder with a trained model",
    "eval": "metrics (MAE, MSE, PSNR, SSIM, cycle error) of a results folder",
    "fid": "FID and KID between two image folders (needs revgan[fid])",
    "bench": "memory/speed benchmark of the reversible core, as a markdown report",
    "export": "export one translation direction (torch.export .pt2, ONNX or TorchScript)",
    "import": "import CycleGAN/pix2pix/RevGAN (2019) generator checkpoints as a run folder",
    "serve": "a local web page to translate uploaded images/volumes (needs revgan[app])",
    "plan": "the largest crop/patch (and batch) that trains within a memory budget",
}


def _usage() -> str:
    lines = ["usage: revgan <command> [options]", "", "commands:"]
    lines += [f"  {name:<10} {text}" for name, text in COMMANDS.items()]
    lines += ["", "Run 'revgan <command> --help' for the options of a command."]
    return "\n".join(lines)


def cmd_train(argv: list[str]) -> None:
    import os

    from revgan.cli.options import parse_options
    from revgan.train.loop import train

    opt = parse_options(argv, is_train=True)
    run_dir = train(opt)
    if os.environ.get("RANK", "0") == "0":
        print(f"training finished; checkpoints in {run_dir}, page "
              f"{run_dir / 'web' / 'index.html'}")


def cmd_test(argv: list[str]) -> None:
    from revgan.cli.options import parse_options
    from revgan.infer.test_split import run_test

    opt = parse_options(argv, is_train=False)
    out = run_test(opt)
    print(f"results in {out / 'index.html'}")


def cmd_demo(argv: list[str]) -> None:
    from revgan.cli.options import parse_command
    from revgan.demo.run import DemoOptions, run_demo

    run_demo(parse_command(DemoOptions, argv, "revgan demo", COMMANDS["demo"]))


def cmd_translate(argv: list[str]) -> None:
    from revgan.cli.options import parse_command
    from revgan.infer.translate import TranslateOptions, translate_files

    translate_files(parse_command(TranslateOptions, argv, "revgan translate",
                                  COMMANDS["translate"]))


def cmd_plan(argv: list[str]) -> None:
    from revgan.cli.options import parse_command
    from revgan.train.plan import PlanOptions, run_plan

    run_plan(parse_command(PlanOptions, argv, "revgan plan", COMMANDS["plan"]))


def cmd_eval(argv: list[str]) -> None:
    import json

    from revgan.evaluation.results import evaluate_results

    parser = ArgumentParser(prog="revgan eval", description=COMMANDS["eval"])
    parser.add_argument("--results_dir", required=True,
                        help="a test results folder (results/<name>/test_<epoch>)")
    args = parser.parse_args(argv)
    summary = evaluate_results(args.results_dir)
    print(json.dumps(summary, indent=1))


def cmd_fid(argv: list[str]) -> None:
    import json

    from revgan.evaluation.fid import compute_fid_kid

    parser = ArgumentParser(prog="revgan fid", description=COMMANDS["fid"])
    parser.add_argument("real_dir")
    parser.add_argument("fake_dir")
    parser.add_argument("--batch_size", type=int, default=16)
    args = parser.parse_args(argv)
    print(json.dumps(compute_fid_kid(args.real_dir, args.fake_dir,
                                     batch_size=args.batch_size), indent=1))


def cmd_bench(argv: list[str]) -> None:
    import subprocess
    from pathlib import Path

    harness = Path("benchmarks") / "harness.py"
    if not harness.is_file():
        raise UserError("revgan bench runs the benchmarks of a source checkout; run it from "
                        "the repository root (benchmarks/harness.py not found here)")
    raise SystemExit(subprocess.run([sys.executable, str(harness), *argv]).returncode)


def cmd_export(argv: list[str]) -> None:
    from revgan.cli.options import parse_command
    from revgan.infer.export import ExportOptions, export_command

    export_command(parse_command(ExportOptions, argv, "revgan export", COMMANDS["export"]))


def cmd_serve(argv: list[str]) -> None:
    from revgan.app.server import ServeOptions, serve
    from revgan.cli.options import parse_command

    serve(parse_command(ServeOptions, argv, "revgan serve", COMMANDS["serve"]))


def cmd_import(argv: list[str]) -> None:
    from revgan.cli.options import parse_command
    from revgan.interop.importer import ImportOptions, import_command

    import_command(parse_command(ImportOptions, argv, "revgan import", COMMANDS["import"]))


@exits_cleanly
def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        raise UserError(f"unknown command '{command}'; choose one of {', '.join(COMMANDS)}")
    globals()[f"cmd_{command}"](rest)


if __name__ == "__main__":
    main()
