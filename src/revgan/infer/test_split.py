"""Testing: translate a test split with a trained run and write images plus an HTML page."""

from __future__ import annotations

import shutil
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from revgan.config import RunConfig, select_device
from revgan.data import create_dataset, write_image
from revgan.errors import UserError, require_creatable
from revgan.models import create_model
from revgan.reporting.progress import progress_bar
from revgan.reporting.visuals import save_display_png
from revgan.runs.checkpoints import load_checkpoint
from revgan.runs.run_folder import save_config, saved_options


def results_folder(opt: RunConfig) -> Path:
    return Path(opt.results_dir) / opt.name / f"{opt.phase}_{opt.epoch}"


def _prepare(opt: RunConfig) -> tuple[Path, str, str]:
    """Check the run exists, take its architecture, and return (run dir, trained model,
    training direction). The training direction says which data folder each model domain
    is; ``opt.direction`` stays what this test translates (``--model test``)."""
    run_dir = Path(opt.checkpoints_dir) / opt.name
    if not run_dir.is_dir():
        raise UserError(f"no trained run at {run_dir} (check --name and --checkpoints_dir)")
    saved = saved_options(run_dir)
    if saved is None:
        if opt.model == "test":
            raise UserError(f"{run_dir} has no train_opt.json; test it with its --model name")
        return run_dir, opt.model, opt.direction
    opt.adopt_architecture(saved)
    trained = saved.get("model", opt.model)
    if opt.model not in ("test", trained):
        raise UserError(f"{run_dir} was trained with --model {trained}, not {opt.model}")
    return run_dir, trained, saved.get("direction", "AtoB")


def _item_name(path: str) -> str:
    name = Path(path).name
    for suffix in (".nii.gz", ".nii", ".npy", ".npz"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return Path(path).stem


def save_visuals(folder: Path, name: str, visuals: dict[str, torch.Tensor], dims: int,
                 data: dict, model, trained_direction: str) -> dict[str, Path]:
    """Write each visual under ``images/<label>/`` (one folder per label, for FID tools)
    and return the page's image paths relative to ``folder``. Volumes are written in the
    units of their domain's data folder under ``trained_direction``."""
    shown = {}
    for label, tensor in visuals.items():
        item = tensor[0].detach().float().cpu().clamp(-1, 1)
        png = folder / "images" / label / f"{name}.png"
        if dims == 2:
            write_image(png, item)
        else:
            from revgan.infer.volume_units import write_visual_volume

            write_visual_volume(folder / "images" / label / f"{name}.nii.gz", item, label,
                                data, model.opt, trained_direction)
            save_display_png(item, png, dims=3)
        shown[label] = png.relative_to(folder)
    return shown


def run_test(opt: RunConfig) -> Path:
    from revgan.reporting.results_page import ResultsPage

    run_dir, trained, trained_direction = _prepare(opt)
    device = select_device(opt.gpu_ids)
    out = results_folder(opt)
    if out.exists() and not out.is_dir():
        raise UserError(f"results folder {out} is a file; use another --results_dir")
    if out.exists() and any(out.iterdir()) and not opt.overwrite:
        raise UserError(f"{out} already holds results; pass --overwrite to replace them or "
                        "use another --results_dir")
    require_creatable(out, "results folder")
    # test-time data: one item at a time, in order, no flips
    opt.batch_size, opt.serial_batches, opt.no_flip = 1, True, True
    dataset = create_dataset(opt)
    model = create_model(opt, device, trained_model=trained)
    load_checkpoint(run_dir, str(opt.epoch), {f"G{opt.model_suffix}": model.nets["G"]},
                    device, with_state=False)
    if opt.eval:
        model.eval()
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    save_config(opt, out, stem="test_opt")
    loader = DataLoader(dataset, batch_size=1, shuffle=False, num_workers=0)
    page = ResultsPage(out, f"Experiment = {opt.name}, Phase = {opt.phase}, Epoch = {opt.epoch}",
                       aspect_ratio=opt.aspect_ratio)
    count = min(len(dataset), opt.num_test)
    matched = True  # unpaired test sets whose A and B files share names are pairs too
    with progress_bar(total=count, desc=f"test {opt.name}", disable=opt.no_progress) as bar:
        for index, data in enumerate(loader):
            if index >= count:
                break
            model.set_input(data)
            visuals = model.test()
            name = _item_name(model.image_paths[0])
            if "B_paths" in data:
                matched = matched and name == _item_name(data["B_paths"][0]) == _item_name(
                    data["A_paths"][0])
            page.add_item(name, save_visuals(out, name, visuals, opt.dims, data, model,
                                                trained_direction))
            bar.update(1)
    if opt.eval_metrics:
        from revgan.evaluation.results import evaluate_results, page_tables

        evaluate_results(out, paired=matched and "B_paths" in data)
        page.set_metrics(*page_tables(out))
    page.save()
    return out
