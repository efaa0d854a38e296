"""Memory/speed benchmark of the reversible engine (``revgan bench``).

For each core depth it measures one training step (forward + backward of ``output.mean()``)
of seven configurations built from the same generator:

- ``plain_core``: the generator's core with plain autograd (``memory_saving=False``);
- ``checkpoint_core``: the same blocks, each wrapped in ``torch.utils.checkpoint``;
- ``reversible_core``: the same core with revgan's memory saving;
- ``revgan_G`` / ``revgan_G_plain``: the whole RevGAN generator, memory saving on / off;
- ``fully_rev_G`` / ``fully_rev_G_plain``: the fully reversible generator, on / off.

Two memory numbers per step (CPU: glibc heap, exact byte counts; CUDA: allocator counters):
*held after forward* is what the forward leaves alive for backward (exact, the robust
flatness indicator), *peak* is the sampled maximum during forward + backward (a lower bound
on CPU) minus the gradients the step creates, which are reported separately. Parameters and
the input exist before the step and are never counted. It also measures the round-trip error
``core.inverse(core(x)) - x`` of the additive core with the reference's random init.

The logic lives here so ``revgan bench`` works after ``pip install``;
``benchmarks/bench_memory.py`` is a thin command-line script around it.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from revgan.engine.memory import has_heap_counter, heap_bytes, peak_memory
from revgan.errors import UserError, exits_cleanly

CORE_CONFIGS = ("plain_core", "checkpoint_core", "reversible_core")
GEN_CONFIGS = ("revgan_G", "revgan_G_plain", "fully_rev_G", "fully_rev_G_plain")
CONFIGS = CORE_CONFIGS + GEN_CONFIGS
CONFIG_TEXT = {
    "plain_core": "(a) core, plain autograd",
    "checkpoint_core": "(b) core, torch.utils.checkpoint per block",
    "reversible_core": "(c) core, revgan memory saving",
    "revgan_G": "(d) RevGAN generator, memory saving",
    "revgan_G_plain": "(d') RevGAN generator, plain (reference)",
    "fully_rev_G": "(e) fully reversible generator, memory saving",
    "fully_rev_G_plain": "(e') fully reversible generator, plain (reference)",
}
FULL_DEPTHS = (4, 8, 16, 32, 64)
QUICK_DEPTHS = (4, 16)
# External figures, not measured here: the round-trip error of the reference's float additive
# stack as the project's design notes give it (../shared/DESIGN.md section 6: random N(0, 0.02)
# init, F ending in a norm; input size not stated). Shown beside, never as, measurements.
REFERENCE_ROUNDTRIP = {2: 3.3e-6, 48: 1.6e-4}
REFERENCE_ROUNDTRIP_SOURCE = ("external figures for the reference's code from the design notes "
                              "(DESIGN.md section 6); not measured by this benchmark; input "
                              "size not stated")
# Targets: (name, config, metric, bound); ratios are memory depth_max/depth_min.
MEMORY_TARGETS = (("core memory ratio", "reversible_core", 1.05),
                  ("fully reversible generator memory ratio", "fully_rev_G", 1.25))
TIME_TARGET = ("reversible/plain core step time", 16, 1.35)
MB = 2.0**20
MEMORY_METRICS = ("held", "held_frozen", "peak")


@dataclass(frozen=True)
class BenchSpec:
    """One input setting: ``dims``, input shape ``(N, C, *spatial)`` and generator width."""

    dims: int
    input_shape: tuple[int, ...]
    ngf: int

    def net_name(self, depth: int) -> str:
        return f"resnet_{depth}blocks" if self.dims == 2 else f"edsrF_{depth}"


REFERENCE_SPEC = BenchSpec(2, (1, 3, 256, 256), 64)  # the reference's 2D default size


def default_specs(quick: bool = False) -> list[BenchSpec]:
    """2D 1x3x128x128 with ngf 32 and 3D 1x1x32^3 with ngf 16 (quick: half the sides and ngf)."""
    if quick:
        return [BenchSpec(2, (1, 3, 64, 64), 16), BenchSpec(3, (1, 1, 16, 16, 16), 8)]
    return [BenchSpec(2, (1, 3, 128, 128), 32), BenchSpec(3, (1, 1, 32, 32, 32), 16)]


# --------------------------------------------------------------------------- building


class CheckpointedBlocks(nn.Module):
    """Runs the blocks of a ReversibleSequence one by one, each under activation checkpointing."""

    def __init__(self, blocks: nn.ModuleList):
        super().__init__()
        self.blocks = blocks

    def forward(self, x: Tensor) -> Tensor:
        for block in self.blocks:
            x = checkpoint(block, x, use_reentrant=False)
        return x


def _generator(spec: BenchSpec, depth: int, fully_reversible: bool, memory_saving: bool,
               device: torch.device) -> nn.Module:
    from revgan.networks import define_rev_G

    torch.manual_seed(0)
    channels = spec.input_shape[1]
    net = define_rev_G(spec.net_name(depth), channels, channels, ngf=spec.ngf, dims=spec.dims,
                       memory_saving=memory_saving, fully_reversible=fully_reversible)
    return net.to(device)


def _image(spec: BenchSpec, device: torch.device) -> Tensor:
    generator = torch.Generator().manual_seed(1)
    return (torch.rand(spec.input_shape, generator=generator) * 2 - 1).to(device)


def build(config: str, spec: BenchSpec, depth: int, device: torch.device
          ) -> tuple[Callable[[], Tensor], Tensor, list[Tensor]]:
    """A forward function for ``config``, its input tensor and its trainable parameters.

    Core configurations take the generator's own encoder output (detached, requiring grad) as
    input, so (a)-(c) run exactly the blocks and activations of (d). Generator inputs are
    images and do not require grad.
    """
    if config not in CONFIGS:
        raise UserError(f"unknown benchmark configuration '{config}'; "
                        f"choose from {', '.join(CONFIGS)}")
    image = _image(spec, device)
    if config in GEN_CONFIGS:
        net = _generator(spec, depth, config.startswith("fully"), not config.endswith("_plain"),
                         device)
        params = [p for p in net.parameters() if p.requires_grad]
        return (lambda: net(image)), image, params
    gen = _generator(spec, depth, False, config == "reversible_core", device)
    with torch.no_grad():
        x = gen.encode(image, "A").detach().requires_grad_(True)
    core = gen.core if config != "checkpoint_core" else CheckpointedBlocks(gen.core.blocks)
    params = [p for p in core.parameters() if p.requires_grad]
    del gen  # keep only the core alive
    return (lambda: core(x)), x, params


# --------------------------------------------------------------------------- measuring


def _allocated(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.memory_allocated(device)
    return heap_bytes()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _nbytes(tensors: Sequence[Tensor | None]) -> int:
    return sum(t.numel() * t.element_size() for t in tensors if t is not None)


class _Case:
    """One configuration ready to run: its forward, its gradient leaves and a step function."""

    def __init__(self, config: str, spec: BenchSpec, depth: int, device: torch.device):
        self.config, self.device = config, device
        self.forward, self.input, self.params = build(config, spec, depth, device)
        # Gradients a step creates: the parameters', and the input's for the core configs.
        self.leaves = [self.input, *self.params] if self.input.requires_grad else self.params
        self.param_bytes = _nbytes(self.params)

    def clear(self) -> None:
        for t in self.leaves:
            t.grad = None
        gc.collect()

    def step(self, record: dict | None = None) -> None:
        base = _allocated(self.device) if record is not None else 0
        out = self.forward()
        if record is not None:
            record["held"] = _allocated(self.device) - base
        loss = out.float().mean()
        del out
        loss.backward()

    def measure_peak(self, repeats: int) -> dict:
        """Warm-up step, then the sampled peak of ``repeats`` steps (minimum)."""
        self.clear()
        self.step()  # warm-up: lazy allocations, kernel caches
        peaks, grads, residuals = [], [], []
        for _ in range(repeats):
            self.clear()
            before = _allocated(self.device)
            peak, _ = peak_memory(self.step, self.device)
            grad_bytes = _nbytes([t.grad for t in self.leaves])
            peaks.append(peak)
            grads.append(grad_bytes)
            residuals.append(_allocated(self.device) - before - grad_bytes)
        self.clear()
        peak, grad = min(peaks), max(grads)
        return {"peak_bytes": peak - grad, "peak_total_bytes": peak, "grad_bytes": grad,
                "param_bytes": self.param_bytes, "residual_bytes": max(residuals),
                "peak_total_all": peaks}

    def held_frozen(self) -> int:
        """Held-after-forward with the parameters frozen and the input requiring grad.

        The graph still reaches every block, but without one edge (and gradient accumulator)
        per parameter tensor: the difference from ``held`` is autograd's per-parameter
        bookkeeping (~150 bytes each), the rest is activation storage.
        """
        self.clear()
        input_grad = self.input.requires_grad
        try:
            for p in self.params:
                p.requires_grad_(False)
            self.input.requires_grad_(True)
            base = _allocated(self.device)
            out = self.forward()
            held = _allocated(self.device) - base
            del out
        finally:
            for p in self.params:
                p.requires_grad_(True)
            self.input.requires_grad_(input_grad)
        self.clear()
        return held

    def timed_step(self) -> tuple[float, int]:
        """(wall time, held-after-forward bytes) of one step; reading the counter is cheap."""
        self.clear()
        record: dict = {}
        _sync(self.device)
        start = time.perf_counter()
        self.step(record)
        _sync(self.device)
        return time.perf_counter() - start, record["held"]


def measure_depth(spec: BenchSpec, depth: int, configs: Sequence[str], device: torch.device,
                  mem_repeats: int = 3, time_repeats: int = 3) -> list[dict]:
    """Memory and time of one training step of each configuration at one depth.

    The peak is measured one configuration at a time (one warm-up step, then the minimum
    over ``mem_repeats`` sampled steps: the sampler may only miss, pollution may only add).
    Gradients are reset to ``None`` before every step (as ``zero_grad()`` does) so each step
    allocates them afresh and they can be subtracted exactly. Then ``time_repeats`` rounds
    visit the configurations in turn (so a change in machine load affects all alike and their
    ratios stay fair), timing each step and reading held-after-forward without the sampler
    thread running (minimum; it is exact and should not vary). Time is the median.
    """
    cases = [_Case(c, spec, depth, device) for c in configs]
    rows = [{"dims": spec.dims, "config": c.config, "depth": depth, **c.measure_peak(mem_repeats)}
            for c in cases]
    timings: list[list[tuple[float, int]]] = [[] for _ in cases]
    for _ in range(max(time_repeats, 1)):
        for case, acc in zip(cases, timings):
            acc.append(case.timed_step())
    for row, case, acc in zip(rows, cases, timings):
        times, helds = [t for t, _ in acc], [h for _, h in acc]
        row.update(held_bytes=min(helds), held_all=helds, held_frozen_bytes=case.held_frozen(),
                   time_s=statistics.median(times), time_all=times)
    return rows


def _worker_main() -> None:
    """Subprocess entry point: a JSON job on stdin, the measurements as JSON on stdout."""
    job = json.loads(sys.stdin.read())
    torch.set_num_threads(job["threads"])
    spec = BenchSpec(job["dims"], tuple(job["input_shape"]), job["ngf"])
    rows = measure_depth(spec, job["depth"], job["configs"], torch.device(job["device"]),
                         job["mem_repeats"], job["time_repeats"])
    print("RESULT " + json.dumps(rows))


def measure_depth_isolated(spec: BenchSpec, depth: int, configs: Sequence[str],
                           device: torch.device, mem_repeats: int = 3, time_repeats: int = 3
                           ) -> list[dict]:
    """:func:`measure_depth` in a fresh Python process (nothing left over from other depths)."""
    job = {"configs": list(configs), "dims": spec.dims, "input_shape": list(spec.input_shape),
           "ngf": spec.ngf, "depth": depth, "device": str(device),
           "mem_repeats": mem_repeats, "time_repeats": time_repeats,
           "threads": torch.get_num_threads()}
    proc = subprocess.run([sys.executable, "-c", "from harness import _worker_main; "
                           "_worker_main()"], input=json.dumps(job), capture_output=True,
                          text=True, check=False)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"benchmark worker failed ({spec.dims}D, depth {depth}):\n"
                           f"{proc.stderr}")
    return json.loads(lines[-1][len("RESULT "):])


# --------------------------------------------------------------------------- round trip


def roundtrip_errors(depths: Sequence[int], spec: BenchSpec, device: torch.device,
                     bits: int = 16) -> list[dict]:
    """Max |core.inverse(core(x)) - x| of the 2D additive core with the reference's init.

    Weights are N(0, 0.02) everywhere (no zero-initialised last conv), F and G end in an
    instance norm, ``x`` is the encoder output of a random image: the core is far from the
    identity, as after training. The same weights run once with revgan's fixed-point couplings
    and once with float couplings (the reference). ``grid_err`` compares with the input
    snapped to the fixed-point grid: 0 means the inverse itself is exact and all the error
    is the one-off rounding of the input.
    """
    from revgan.engine.reversible import AdditiveCoupling, round_to_grid
    from revgan.networks import init_weights
    from revgan.networks.reversible_generators import RevGenerator

    rows = []
    for depth in depths:
        torch.manual_seed(0)
        channels = spec.input_shape[1]
        gen = RevGenerator(channels, channels, ngf=spec.ngf, n_blocks=depth,
                           n_downsampling=2, dims=spec.dims, style="resnet", zero_init=False)
        gen = init_weights(gen, "normal", 0.02).to(device).eval()
        with torch.no_grad():
            x = gen.encode(_image(spec, device), "A")
            row = {"depth": depth, "input_shape": list(spec.input_shape), "ngf": spec.ngf,
                   "core_shape": list(x.shape)}
            for mode, mode_bits in (("fixed_point", bits), ("float", None)):
                for block in gen.core.blocks:
                    if isinstance(block, AdditiveCoupling):
                        block.fixed_point_bits = mode_bits
                y = gen.core(x)
                back = gen.core.inverse(y)
                row[f"{mode}_err"] = float((back - x).abs().max())
                if mode_bits is not None:
                    row["fixed_point_grid_err"] = float((back - round_to_grid(x, bits)).abs().max())
                row[f"{mode}_max_abs_stream"] = float(y.abs().max())
                del y, back
        rows.append(row)
        del gen, x
        gc.collect()
    return rows


# --------------------------------------------------------------------------- summary


def machine_info(device: torch.device) -> dict:
    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {"torch": torch.__version__, "python": platform.python_version(),
            "platform": platform.platform(), "cpu": cpu, "cpu_count": os.cpu_count(),
            "threads": torch.get_num_threads(), "device": str(device)}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def _loadavg() -> list[float] | None:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


def _lookup(measurements: list[dict]) -> dict[tuple[int, str, int], dict]:
    return {(m["dims"], m["config"], m["depth"]): m for m in measurements}


def summarize(measurements: list[dict], depths: Sequence[int]) -> tuple[dict, list[dict]]:
    """Ratios (memory depth_max/depth_min per config; time vs plain per depth) and targets."""
    table = _lookup(measurements)
    lo, hi = min(depths), max(depths)
    ratios: dict = {"memory": [], "time": []}
    for dims in sorted({m["dims"] for m in measurements}):
        for config in CONFIGS:
            a, b = table.get((dims, config, lo)), table.get((dims, config, hi))
            if a and b:
                ratios["memory"].append({
                    "dims": dims, "config": config, "depths": [hi, lo],
                    **{metric: b[f"{metric}_bytes"] / max(a[f"{metric}_bytes"], 1)
                       for metric in MEMORY_METRICS}})
        for depth in depths:
            for num, den in (("reversible_core", "plain_core"), ("checkpoint_core", "plain_core"),
                             ("revgan_G", "revgan_G_plain"), ("fully_rev_G", "fully_rev_G_plain")):
                a, b = table.get((dims, num, depth)), table.get((dims, den, depth))
                if a and b:
                    # Rounds time every configuration in turn: pairing steps of one round
                    # cancels most of a change in machine load.
                    paired = [x / y for x, y in zip(a["time_all"], b["time_all"])]
                    ratios["time"].append({"dims": dims, "depth": depth, "config": num,
                                           "versus": den, "ratio": statistics.median(paired),
                                           "ratio_of_medians": a["time_s"] / b["time_s"]})
    targets = []
    for name, config, bound in MEMORY_TARGETS:
        for r in ratios["memory"]:
            if r["config"] == config:
                for metric in MEMORY_METRICS:
                    targets.append(_target(f"{name} depth {hi}/{lo} ({metric})", r["dims"],
                                           r[metric], bound))
    name, want_depth, bound = TIME_TARGET
    depth = want_depth if want_depth in depths else hi
    for r in ratios["time"]:
        if r["config"] == "reversible_core" and r["depth"] == depth:
            targets.append(_target(f"{name} at depth {depth}", r["dims"], r["ratio"], bound))
    return ratios, targets


def _target(name: str, dims: int, measured: float, bound: float) -> dict:
    return {"name": name, "dims": dims, "measured": measured, "bound": bound,
            "status": "PASS" if measured <= bound else "MISS"}


# --------------------------------------------------------------------------- running


def run_memory_benchmark(depths: Sequence[int] = FULL_DEPTHS,
                         specs: Sequence[BenchSpec] | None = None,
                         configs: Sequence[str] = CONFIGS, device: torch.device | None = None,
                         mem_repeats: int = 3, time_repeats: int = 3, isolate: bool = False,
                         roundtrip_depths: Sequence[int] = (2, 32, 48, 64),
                         roundtrip_spec: BenchSpec | None = None,
                         reference_size_depths: Sequence[int] = (), quick: bool = False,
                         log: Callable[[str], None] | None = print) -> dict:
    """Run every (spec, depth, config) measurement and the round-trip table; return the JSON dict.

    ``isolate`` runs each measurement in a fresh subprocess. ``roundtrip_depths`` may be empty;
    ``reference_size_depths`` adds round trips at the reference's default size (ngf 64, 256^2).
    """
    device = device or torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cpu" and not has_heap_counter():
        raise UserError("CPU memory measurement needs glibc's mallinfo2 (Linux); "
                        "run on Linux or on a CUDA device")
    if not depths or min(depths) < 1:
        raise UserError("depths must be positive integers")
    specs = list(specs) if specs is not None else default_specs(quick)
    unknown = [c for c in configs if c not in CONFIGS]
    if unknown:
        raise UserError(f"unknown configuration(s) {', '.join(unknown)}; "
                        f"choose from {', '.join(CONFIGS)}")
    say = log or (lambda _msg: None)
    started = time.perf_counter()
    load_start = _loadavg()
    run = measure_depth_isolated if isolate else measure_depth
    measurements = []
    for spec in specs:
        for depth in depths:
            for m in run(spec, depth, configs, device, mem_repeats, time_repeats):
                measurements.append(m)
                say(f"{spec.dims}D depth {depth:>3} {m['config']:<18} "
                    f"held {m['held_bytes'] / MB:8.2f} MB  peak-grads {m['peak_bytes'] / MB:8.2f}"
                    f" MB  {m['time_s'] * 1e3:8.1f} ms")
    rt_spec = roundtrip_spec or next((s for s in specs if s.dims == 2), default_specs(quick)[0])
    roundtrip = roundtrip_errors(roundtrip_depths, rt_spec, device) if roundtrip_depths else []
    if reference_size_depths:
        roundtrip += roundtrip_errors(reference_size_depths, REFERENCE_SPEC, device)
    for row in roundtrip:
        say(f"round trip depth {row['depth']}: fixed point {row['fixed_point_err']:.2e}, "
            f"float {row['float_err']:.2e}")
    ratios, targets = summarize(measurements, depths)
    core_shapes = {}
    for spec in specs:
        gen = _generator(spec, 1, False, True, torch.device("cpu"))
        with torch.no_grad():
            core_shapes[spec.dims] = list(gen.encode(_image(spec, torch.device("cpu")),
                                                     "A").shape)
    return {
        "benchmark": "memory",
        "machine": machine_info(device),
        "settings": {"quick": quick, "depths": list(depths), "configs": list(configs),
                     "mem_repeats": mem_repeats, "time_repeats": time_repeats,
                     "isolated_processes": isolate,
                     "specs": [{**asdict(s), "core_input_shape": core_shapes[s.dims]}
                               for s in specs]},
        "counted": COUNTED,
        "measurements": measurements,
        "ratios": ratios,
        "targets": targets,
        "roundtrip": roundtrip,
        "reference_roundtrip": [{"depth": d, "float_err": e, "source": REFERENCE_ROUNDTRIP_SOURCE}
                                for d, e in REFERENCE_ROUNDTRIP.items()],
        "loadavg_start": load_start,
        "loadavg_end": _loadavg(),
        "elapsed_s": time.perf_counter() - started,
    }


COUNTED = (
    "held = bytes allocated by the forward pass and still alive when it returns (output, "
    "everything saved for backward, the autograd graph); exact. held_frozen = the same with the "
    "parameters frozen and the input requiring grad: the graph then lacks autograd's "
    "per-parameter-tensor bookkeeping (~150 bytes each), so it is the activation storage "
    "alone. peak = maximum bytes allocated during forward + backward "
    "(CPU: sampled, a lower bound) minus all the gradients the step creates (parameter .grad "
    "and, for the core configs, the input's .grad; listed as 'grads'): close when the peak "
    "comes at the end of backward (memory-saving core), an underestimate when fewer gradients "
    "exist at the peak (plain autograd; generators peaking in encoder/decoder backward, which "
    "is why their ratio can fall below 1). Parameters and the input exist before the step and "
    "are counted in neither. All numbers are above the level "
    "before the step; minimum over repeats. time = median wall time of one forward + backward; "
    "time ratios = median over rounds of the ratio within a round."
)


# --------------------------------------------------------------------------- markdown


def _fmt_mb(n: float) -> str:
    return f"{n / MB:.2f}"


def markdown_report(results: dict) -> str:
    """The benchmark results as markdown tables."""
    s = results["settings"]
    machine = results["machine"]
    depths = s["depths"]
    table = _lookup(results["measurements"])
    lines = ["# revgan memory/speed benchmark", "",
             f"torch {machine['torch']}, {machine['device']}, {machine['threads']} threads, "
             f"{machine['cpu']} ({machine['cpu_count']} logical CPUs); "
             f"load average {results['loadavg_start']} at start, {results['loadavg_end']} at end; "
             f"{'quick mode, ' if s['quick'] else ''}"
             f"{'one process per measurement, ' if s['isolated_processes'] else ''}"
             f"{results['elapsed_s']:.0f} s.", "",
             f"What is counted: {results['counted']}", ""]
    lo, hi = min(depths), max(depths)
    head = "| configuration | " + " | ".join(f"depth {d}" for d in depths)
    rule = "|---|" + "---:|" * len(depths)
    for spec in s["specs"]:
        dims = spec["dims"]
        configs = [c for c in s["configs"] if (dims, c, depths[0]) in table]
        shape = "×".join(map(str, spec["input_shape"]))
        core = "×".join(map(str, spec["core_input_shape"]))
        lines += [f"## {dims}D: input {shape}, ngf {spec['ngf']}, core input {core}", ""]
        for title, key, ratio in (("Held after forward (MB)", "held_bytes", True),
                                  ("Held after forward, parameters frozen (MB)",
                                   "held_frozen_bytes", True),
                                  ("Peak of the train step, excl. gradients (MB)", "peak_bytes",
                                   True),
                                  ("Parameters / gradients (MB)", "param_bytes", False),
                                  ("Step time (ms, median)", "time_s", False)):
            lines += [f"**{title}**", "",
                      head + (f" | ratio {hi}/{lo} |" if ratio else " |"),
                      rule + ("---:|" if ratio else "")]
            for c in configs:
                cells = []
                for d in depths:
                    m = table[(dims, c, d)]
                    cells.append(f"{m[key] * 1e3:.0f}" if key == "time_s" else
                                 f"{_fmt_mb(m['param_bytes'])} / {_fmt_mb(m['grad_bytes'])}"
                                 if key == "param_bytes" else _fmt_mb(m[key]))
                if ratio:
                    a, b = table[(dims, c, lo)][key], table[(dims, c, hi)][key]
                    cells.append(f"{b / max(a, 1):.3f}")
                lines.append(f"| {CONFIG_TEXT[c]} | " + " | ".join(cells) + " |")
            lines.append("")
        time_rows = [r for r in results["ratios"]["time"] if r["dims"] == dims]
        if time_rows:
            pairs = sorted({(r["config"], r["versus"]) for r in time_rows},
                           key=lambda p: CONFIGS.index(p[0]))
            lines += ["**Time ratios**", "", "| ratio | " + " | ".join(f"depth {d}"
                                                                      for d in depths) + " |",
                      rule]
            for num, den in pairs:
                cells = [next((f"{r['ratio']:.2f}" for r in time_rows if r["depth"] == d
                               and r["config"] == num and r["versus"] == den), "–")
                         for d in depths]
                lines.append(f"| {num} / {den} | " + " | ".join(cells) + " |")
            lines.append("")
    if results["targets"]:
        lines += ["## Targets", "", "| target | dims | measured | bound | status |",
                  "|---|---:|---:|---:|---|"]
        for t in results["targets"]:
            lines.append(f"| {t['name']} | {t['dims']}D | {t['measured']:.3f} | "
                         f"≤ {t['bound']} | {t['status']} |")
        lines.append("")
    if results["roundtrip"]:
        lines += ["## Round-trip error max |core⁻¹(core(x)) − x|", "",
                  "2D additive core on the encoder output of a random image, reference init: "
                  "all convs N(0, 0.02), F/G ending in instance norm, no zero-init (the core is "
                  "far from the identity, as after training). Same weights in both columns. "
                  "'vs grid' compares with the input snapped to the 2^-16 grid (0 = the inverse "
                  "is exact; the rest is the one-off rounding of the input, at most "
                  "2^-17 ≈ 7.6e-6). 'float couplings' is the reference's scheme measured here. "
                  "'reference figure (external)' is NOT measured by this benchmark: the "
                  "figures the design notes (DESIGN.md section 6) give for the reference's "
                  "code, input size not stated; shown for orientation only.", "",
                  "| input, ngf | core | depth | revgan default (fixed point) | vs grid | "
                  "float couplings (reference scheme) | reference figure (external) | "
                  "max abs(stream) |",
                  "|---|---|---:|---:|---:|---:|---:|---:|"]
        for r in results["roundtrip"]:
            ref = REFERENCE_ROUNDTRIP.get(r["depth"])
            lines.append(f"| {'×'.join(map(str, r['input_shape']))}, {r['ngf']} | "
                         f"{'×'.join(map(str, r['core_shape']))} | {r['depth']} | "
                         f"{r['fixed_point_err']:.2e} | {r['fixed_point_grid_err']:.1e} | "
                         f"{r['float_err']:.2e} | {f'{ref:.1e}' if ref else '–'} | "
                         f"{r['fixed_point_max_abs_stream']:.1f} |")
        lines.append("")
    return "\n".join(lines)


# --------------------------------------------------------------------------- files and CLI


def prepare_output(path: Path, overwrite: bool) -> Path:
    """Create ``path``'s folder; refuse to replace an existing file unless ``overwrite``."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise UserError(f"{path} exists; pass --overwrite to replace it")
    if path.is_dir():
        raise UserError(f"{path} is a folder, not a file")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create output folder {path.parent}: {exc.strerror}")
    if not os.access(path.parent, os.W_OK):
        raise UserError(f"output folder {path.parent} is not writable")
    return path


def write_text(path: Path, text: str) -> None:
    try:
        Path(path).write_text(text)
    except OSError as exc:
        raise UserError(f"cannot write {path}: {exc.strerror}")


def output_paths(out: str | None, default: Path, overwrite: bool) -> tuple[Path, Path]:
    """A benchmark's JSON path (``--out`` or ``default``) and its markdown sibling, both
    checked before any work starts."""
    path = prepare_output(Path(out) if out else default, overwrite)
    return path, prepare_output(path.with_suffix(".md"), overwrite)


def publish(results: dict, text: str, out: Path, report: Path) -> dict:
    """Print the markdown table, then write it and the JSON."""
    print(text)
    write_text(out, json.dumps(results, indent=1) + "\n")
    write_text(report, text + "\n")
    print(f"\nresults: {out}")
    return results


def parse_depths(text: str) -> list[int]:
    try:
        depths = sorted({int(t) for t in text.split(",") if t.strip()})
    except ValueError:
        raise UserError(f"--depths must be comma-separated integers, got '{text}'")
    if not depths or depths[0] < 1:
        raise UserError(f"--depths must be positive integers, got '{text}'")
    return depths


def add_memory_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quick", action="store_true",
                        help=f"depths {QUICK_DEPTHS}, smaller inputs, fewer repeats (~1 min)")
    parser.add_argument("--depths", default=None,
                        help="comma-separated core depths (default "
                             f"{','.join(map(str, FULL_DEPTHS))})")
    parser.add_argument("--device", default=None, help="cpu or cuda[:i] (default: cuda if any)")
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads (default: torch's default; 1 is steadier on a busy "
                             "machine)")
    parser.add_argument("--isolate", action="store_true",
                        help="run every measurement in a fresh process")
    parser.add_argument("--overwrite", action="store_true", help="replace existing result files")


def run_from_args(args: argparse.Namespace) -> dict:
    """Run the memory benchmark as configured by :func:`add_memory_options`."""
    depths = parse_depths(args.depths) if args.depths else list(
        QUICK_DEPTHS if args.quick else FULL_DEPTHS)
    try:
        device = torch.device(args.device) if args.device else None
    except RuntimeError:
        raise UserError(f"unknown device '{args.device}'")
    if device is not None and device.type == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda given but CUDA is not available")
    if args.threads is not None:
        if args.threads < 1:
            raise UserError(f"--threads must be >= 1, got {args.threads}")
    mem_repeats, time_repeats = (2, 3) if args.quick else (2, 5)
    roundtrip_depths = (4, 16) if args.quick else (2, 32, 48, 64)
    reference_depths = () if args.quick else (2, 48)
    threads = torch.get_num_threads()
    try:  # the thread count is process-wide: give it back to whoever called us
        if args.threads is not None:
            torch.set_num_threads(args.threads)
        return run_memory_benchmark(depths, device=device, mem_repeats=mem_repeats,
                                    time_repeats=time_repeats, isolate=args.isolate,
                                    roundtrip_depths=roundtrip_depths,
                                    reference_size_depths=reference_depths,
                                    quick=args.quick)
    finally:
        torch.set_num_threads(threads)


def _volume_script() -> Path | None:
    script = Path(__file__).resolve().parent / "bench_translate_volume.py"
    return script if script.is_file() else None


def run_volume(quick: bool) -> str:
    """Run benchmarks/bench_translate_volume.py (from the source tree) and return its output."""
    script = _volume_script()
    if script is None:
        raise UserError("benchmarks/bench_translate_volume.py not found; run 'revgan bench "
                        "--which volume' from the repository root")
    proc = subprocess.run([sys.executable, str(script), *(["--quick"] if quick else [])],
                          capture_output=True, text=True, check=False)
    sys.stderr.write(proc.stderr)
    if proc.returncode != 0:
        raise SystemExit(proc.returncode)
    return proc.stdout


@exits_cleanly
def main(argv: list[str] | None = None) -> None:
    """``revgan bench``: run a benchmark, write JSON and a markdown report."""
    parser = argparse.ArgumentParser(prog="revgan bench", description=__doc__.splitlines()[0])
    parser.add_argument("--which", default="memory", choices=("memory", "volume"),
                        help="memory: reversible engine memory/speed; volume: "
                             "benchmarks/bench_translate_volume.py (source tree only)")
    parser.add_argument("--out_dir", default="benchmarks/results",
                        help="folder for the JSON results (default benchmarks/results)")
    parser.add_argument("--report", default=None,
                        help="markdown report path (default <out_dir>/report.md)")
    add_memory_options(parser)
    args = parser.parse_args(argv)
    out_dir = Path(args.out_dir)
    report = prepare_output(Path(args.report) if args.report else out_dir / "report.md",
                            args.overwrite)
    if args.which == "volume":
        text = run_volume(args.quick)
        print(text, end="")
        write_text(report, f"# revgan volume benchmark\n\n```\n{text}```\n")
        print(f"report: {report}")
        return
    json_path = prepare_output(out_dir / ("memory_quick.json" if args.quick else "memory.json"),
                               args.overwrite)
    results = run_from_args(args)
    text = markdown_report(results)
    print(text)
    write_text(json_path, json.dumps(results, indent=1) + "\n")
    write_text(report, text + "\n")
    print(f"results: {json_path}\nreport: {report}")


if __name__ == "__main__":
    main()
