"""Reversible engine: invertible blocks and a memory-saving stack of them.

Every block here has ``forward(x, rng=None)`` and ``inverse(y, rng=None)``. A
:class:`ReversibleSequence` chains blocks and, when memory saving is on, keeps only the
output of the whole chain for backward: each block's input is rebuilt from its output with
``inverse`` and the block is re-run with grad enabled, one block at a time. The input the
caller passed in is never freed, resized or rewritten (an op before the stack may have saved
it for its own backward, e.g. a ReLU), so gradients equal plain autograd up to the
round-off of the inversion. Works for any number of spatial dims (2D and 3D alike).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator

import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _NormBase

from revgan.errors import UserError

# --------------------------------------------------------------------------- RNG replay


class RngReplay:
    """Records the RNG state at named call sites once, then replays it on later calls.

    The coupling inverse calls G before F, the forward F before G, so one state per call
    site (not one per block) is needed for dropout inside F/G to draw the same mask in the
    forward, the reconstruction and the recomputation.
    """

    def __init__(self, device: torch.device):
        self.device = device
        self.states: dict[str, tuple[Tensor, Tensor | None]] = {}

    def _get(self) -> tuple[Tensor, Tensor | None]:
        cuda = torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None
        return torch.get_rng_state(), cuda

    @contextlib.contextmanager
    def scope(self, key: str) -> Iterator[None]:
        if key not in self.states:
            self.states[key] = self._get()
            yield
            return
        cuda_devices = [self.device] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=cuda_devices):
            cpu_state, cuda_state = self.states[key]
            torch.set_rng_state(cpu_state)
            if cuda_state is not None:
                torch.cuda.set_rng_state(cuda_state, self.device)
            yield


def _call(fn: nn.Module, x: Tensor, rng: RngReplay | None, key: str) -> Tensor:
    if rng is None:
        return fn(x)
    with rng.scope(key):
        return fn(x)


# --------------------------------------------------------------------------- blocks


class InvertibleModule(nn.Module):
    """Base class: subclasses implement ``forward`` and its exact ``inverse``."""

    def forward(self, x: Tensor, rng: RngReplay | None = None) -> Tensor:  # pragma: no cover
        raise NotImplementedError

    def inverse(self, y: Tensor, rng: RngReplay | None = None) -> Tensor:  # pragma: no cover
        raise NotImplementedError


class _Coupling(InvertibleModule):
    def __init__(self, F: nn.Module, G: nn.Module, split: int | None = None):
        super().__init__()
        self.F = F
        self.G = G
        self.split = split

    def _halves(self, x: Tensor) -> tuple[Tensor, Tensor]:
        channels = x.shape[1]
        split = self.split if self.split is not None else channels // 2
        if not 0 < split < channels:
            raise ValueError(f"cannot split {channels} channels at {split}")
        return x[:, :split], x[:, split:]


class _RoundToGrid(torch.autograd.Function):
    """Rounds to a fixed-point grid; the gradient passes straight through."""

    @staticmethod
    def forward(ctx, t: Tensor, scale: float) -> Tensor:
        return torch.round(t * scale) / scale

    @staticmethod
    def backward(ctx, grad: Tensor):
        return grad, None


def round_to_grid(t: Tensor, bits: int) -> Tensor:
    """Snap ``t`` to multiples of ``2**-bits`` (exact in fp32 while ``|t| < 2**(24 - bits)``)."""
    scale = float(2**bits)
    if torch.is_grad_enabled() and t.requires_grad:
        return _RoundToGrid.apply(t, scale)
    return torch.mul(t, scale).round_().div_(scale)  # one new tensor, not three


class AdditiveCoupling(_Coupling):
    """``y1 = x1 + F(x2)``, ``y2 = x2 + G(y1)``; inverse subtracts in the opposite order.

    ``split`` is the number of channels of ``x1`` (default: half). F maps the ``x2`` part to
    the ``x1`` shape and G the other way; with equal halves they keep the shape of a half.

    With ``fixed_point_bits`` (default 16) the stream and the outputs of F and G are snapped
    to a grid of ``2**-bits`` (straight-through gradient), so every sum is exact in fp32 and
    the inverse reproduces the input bit for bit at any depth (the idea of fixed-point
    reversible networks, MacKay et al. 2018). Exact while values stay below
    ``2**(24 - bits)`` = 256; beyond that the sums round as ordinary floats would. The only
    loss is the first rounding of the input (at most ``2**-(bits + 1)`` ≈ 7.6e-6).
    ``None`` gives plain float couplings, whose round-trip error grows with depth.

    The sums run in the dtype of the residual stream, so under autocast F and G may compute
    in 16 bit while the stream (and hence invertibility) stays in fp32.
    """

    def __init__(self, F: nn.Module, G: nn.Module, split: int | None = None,
                 fixed_point_bits: int | None = 16):
        super().__init__(F, G, split)
        self.fixed_point_bits = fixed_point_bits

    def _snap(self, t: Tensor, dtype: torch.dtype) -> Tensor:
        t = t.to(dtype)
        bits = self.fixed_point_bits
        return t if bits is None or dtype != torch.float32 else round_to_grid(t, bits)

    def _stream(self, t: Tensor, snap_input: bool) -> tuple[Tensor, Tensor]:
        """The halves of the residual stream, snapped unless the caller knows they are on
        the grid already (inside a stack of grid-preserving blocks)."""
        h1, h2 = self._halves(t)
        if not snap_input:
            return h1, h2
        return self._snap(h1, t.dtype), self._snap(h2, t.dtype)

    def _add(self, base: Tensor, branch: Tensor, sign: int, out: Tensor) -> Tensor:
        """``out = base + sign * snap(branch)`` without grad, in two passes over ``branch``
        (scale and round in place) and one sum; the grid's power-of-two scale is exact, so
        the result equals ``base + sign * _snap(branch)`` bit for bit."""
        branch = branch.to(base.dtype)
        bits = self.fixed_point_bits
        if bits is None or base.dtype != torch.float32:
            return torch.add(base, branch, alpha=sign, out=out)
        scale = float(2**bits)
        return torch.add(base, branch.mul(scale).round_(), alpha=sign / scale, out=out)

    def forward(self, x: Tensor, rng: RngReplay | None = None, *,
                snap_input: bool = True) -> Tensor:
        x1, x2 = self._stream(x, snap_input)
        # traced (ONNX/TorchScript export): the functional form, since a tracer does not
        # follow writes through out= into views of an empty buffer
        if torch.is_grad_enabled() or torch.jit.is_tracing():
            y1 = x1 + self._snap(_call(self.F, x2, rng, "F"), x1.dtype)
            y2 = x2 + self._snap(_call(self.G, y1, rng, "G"), x2.dtype)
            return torch.cat([y1, y2], dim=1)
        # without grad: write both halves straight into the output (no cat copy)
        y = torch.empty_like(x, memory_format=torch.contiguous_format)
        y1, y2 = self._halves(y)
        self._add(x1, _call(self.F, x2, rng, "F"), 1, y1)
        self._add(x2, _call(self.G, y1, rng, "G"), 1, y2)
        return y

    def inverse(self, y: Tensor, rng: RngReplay | None = None, *,
                snap_input: bool = True) -> Tensor:
        y1, y2 = self._stream(y, snap_input)
        if torch.is_grad_enabled() or torch.jit.is_tracing():
            x2 = y2 - self._snap(_call(self.G, y1, rng, "G"), y2.dtype)
            x1 = y1 - self._snap(_call(self.F, x2, rng, "F"), y1.dtype)
            return torch.cat([x1, x2], dim=1)
        x = torch.empty_like(y, memory_format=torch.contiguous_format)
        x1, x2 = self._halves(x)
        self._add(y2, _call(self.G, y1, rng, "G"), -1, x2)
        self._add(y1, _call(self.F, x2, rng, "F"), -1, x1)
        return x

    # Fused backward (RevNet, Gomez et al. 2017): rebuilding the input already evaluates
    # F(x2) and G(y1), the very values the backward needs, so each is run once with grad
    # instead of once to invert and again to recompute. The rebuilt input and its gradient
    # are written into one buffer each (no cat copies).

    @staticmethod
    def _branch_grad(net: nn.Module, key: str, inp: Tensor, dtype: torch.dtype,
                     grad_out: Tensor, rng: RngReplay | None, params: list[Tensor]):
        leaf = inp.detach().requires_grad_(True)
        with torch.enable_grad():
            out = _call(net, leaf, rng, key).to(dtype)
            # the snap's gradient is the identity: differentiate the raw output, snap its value
            grads = torch.autograd.grad(out, [leaf, *params], grad_out, allow_unused=True)
        return out.detach(), grads[0], dict(zip(params, grads[1:]))

    def _trainable(self) -> tuple[list[Tensor], list[Tensor]]:
        return ([p for p in self.F.parameters() if p.requires_grad],
                [p for p in self.G.parameters() if p.requires_grad])

    def backward_forward(self, y: Tensor, grad_y: Tensor, rng: RngReplay | None = None, *,
                         snap_input: bool = True):
        """For ``y = forward(x)``: return ``x``, dL/dx and dL/dθ given dL/dy."""
        params_F, params_G = self._trainable()
        y1, y2 = self._stream(y, snap_input)
        dy1, dy2 = self._halves(grad_y)
        x = torch.empty_like(y, memory_format=torch.contiguous_format)
        dx = torch.empty_like(x)
        x1, x2 = self._halves(x)
        dx1, dx2 = self._halves(dx)
        g, g_in, grads = self._branch_grad(self.G, "G", y1, y2.dtype, dy2, rng, params_G)
        self._add(y2, g, -1, x2)
        torch.add(dy1, g_in, out=dx1)
        f, f_in, grads_F = self._branch_grad(self.F, "F", x2, y1.dtype, dx1, rng, params_F)
        self._add(y1, f, -1, x1)
        torch.add(dy2, f_in, out=dx2)
        grads.update(grads_F)
        return x, dx, grads

    def backward_inverse(self, x: Tensor, grad_x: Tensor, rng: RngReplay | None = None, *,
                         snap_input: bool = True):
        """For ``x = inverse(y)``: return ``y``, dL/dy and dL/dθ given dL/dx."""
        params_F, params_G = self._trainable()
        x1, x2 = self._stream(x, snap_input)
        dx1, dx2 = self._halves(grad_x)
        y = torch.empty_like(x, memory_format=torch.contiguous_format)
        dy = torch.empty_like(y)
        y1, y2 = self._halves(y)
        dy1, dy2 = self._halves(dy)
        f, f_in, grads = self._branch_grad(self.F, "F", x2, x1.dtype, -dx1, rng, params_F)
        self._add(x1, f, 1, y1)
        torch.add(dx2, f_in, out=dy2)
        g, g_in, grads_G = self._branch_grad(self.G, "G", y1, x2.dtype, -dy2, rng, params_G)
        self._add(x2, g, 1, y2)
        torch.add(dx1, g_in, out=dy1)
        grads.update(grads_G)
        return y, dy, grads


class AffineCoupling(_Coupling):
    """Affine coupling with a bounded scale: ``y1 = x1 * s(x2) + t(x2)``, then the same for y2.

    F (and G) output twice the channels of the half they update: a raw log-scale and a
    shift. The log-scale is squashed to ``b * tanh(raw / b)`` (``b = scale_bound``), so each
    scale lies in ``[exp(-b), exp(b)]``; the reference's unbounded ``exp`` overflows after
    about nine blocks. Zero F/G outputs give the identity.
    """

    def __init__(self, F: nn.Module, G: nn.Module, split: int | None = None,
                 scale_bound: float = 0.5):
        super().__init__(F, G, split)
        self.scale_bound = scale_bound

    def _scale_shift(self, h: Tensor, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
        raw, shift = h.to(dtype).chunk(2, dim=1)
        log_scale = self.scale_bound * torch.tanh(raw / self.scale_bound)
        return torch.exp(log_scale), shift

    def forward(self, x: Tensor, rng: RngReplay | None = None) -> Tensor:
        x1, x2 = self._halves(x)
        s, t = self._scale_shift(_call(self.F, x2, rng, "F"), x1.dtype)
        y1 = x1 * s + t
        s, t = self._scale_shift(_call(self.G, y1, rng, "G"), x2.dtype)
        y2 = x2 * s + t
        return torch.cat([y1, y2], dim=1)

    def inverse(self, y: Tensor, rng: RngReplay | None = None) -> Tensor:
        y1, y2 = self._halves(y)
        s, t = self._scale_shift(_call(self.G, y1, rng, "G"), y2.dtype)
        x2 = (y2 - t) / s
        s, t = self._scale_shift(_call(self.F, x2, rng, "F"), y1.dtype)
        x1 = (y1 - t) / s
        return torch.cat([x1, x2], dim=1)


class ChannelPermutation(InvertibleModule):
    """A fixed random permutation of channels (exact in both directions)."""

    def __init__(self, channels: int, seed: int = 0):
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        perm = torch.randperm(channels, generator=generator)
        self.register_buffer("perm", perm)
        self.register_buffer("inv_perm", torch.argsort(perm))

    def forward(self, x: Tensor, rng: RngReplay | None = None) -> Tensor:
        return x[:, self.perm]

    def inverse(self, y: Tensor, rng: RngReplay | None = None) -> Tensor:
        return y[:, self.inv_perm]


class Invertible1x1Conv(InvertibleModule):
    """Learned channel mixing ``y = W x`` at every voxel, initialised to a random rotation."""

    def __init__(self, channels: int, seed: int = 0):
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        q, _ = torch.linalg.qr(torch.randn(channels, channels, generator=generator))
        self.weight = nn.Parameter(q)

    @staticmethod
    def _mix(matrix: Tensor, x: Tensor) -> Tensor:
        kernel = matrix.to(x.dtype).reshape(*matrix.shape, *([1] * (x.ndim - 2)))
        conv = (None, nn.functional.conv1d, nn.functional.conv2d, nn.functional.conv3d)
        return conv[x.ndim - 2](x, kernel)

    def forward(self, x: Tensor, rng: RngReplay | None = None) -> Tensor:
        return self._mix(self.weight, x)

    def inverse(self, y: Tensor, rng: RngReplay | None = None) -> Tensor:
        # Invert in float64: the matrix is small and the extra precision keeps round trips tight.
        inv = torch.linalg.inv(self.weight.double())
        return self._mix(inv, y)


class Squeeze(InvertibleModule):
    """Space-to-depth: each ``factor**dims`` neighbourhood becomes channels (exact)."""

    def __init__(self, dims: int, factor: int = 2):
        super().__init__()
        self.dims = dims
        self.factor = factor

    def forward(self, x: Tensor, rng: RngReplay | None = None) -> Tensor:
        n, c, *size = x.shape
        f, d = self.factor, self.dims
        if any(s % f for s in size):
            raise UserError(f"spatial size {tuple(size)} is not divisible by {f}")
        shape = [n, c]
        for s in size:
            shape += [s // f, f]
        x = x.reshape(shape)
        # (n, c, s1, f, s2, f, ...) -> (n, c, f, f, ..., s1, s2, ...)
        order = [0, 1] + [3 + 2 * i for i in range(d)] + [2 + 2 * i for i in range(d)]
        return x.permute(order).reshape(n, c * f**d, *[s // f for s in size])

    def inverse(self, y: Tensor, rng: RngReplay | None = None) -> Tensor:
        n, cf, *size = y.shape
        f, d = self.factor, self.dims
        c = cf // f**d
        y = y.reshape(n, c, *([f] * d), *size)
        order = [0, 1]
        for i in range(d):
            order += [2 + d + i, 2 + i]
        return y.permute(order).reshape(n, c, *[s * f for s in size])


class Inverted(InvertibleModule):
    """Runs a block backwards: ``forward`` is the block's ``inverse`` and vice versa."""

    def __init__(self, block: InvertibleModule):
        super().__init__()
        self.block = block

    def forward(self, x: Tensor, rng: RngReplay | None = None) -> Tensor:
        return self.block.inverse(x, rng)

    def inverse(self, y: Tensor, rng: RngReplay | None = None) -> Tensor:
        return self.block.forward(y, rng)

    def __getattr__(self, name: str):
        # fused backward passes swap roles too, where the inner block has them
        if name in ("backward_forward", "backward_inverse"):
            other = "backward_inverse" if name == "backward_forward" else "backward_forward"
            return getattr(self.block, other)
        return super().__getattr__(name)


# --------------------------------------------------------------------------- memory saving


def _tracking_norms(module: nn.Module) -> list[_NormBase]:
    return [m for m in module.modules() if isinstance(m, _NormBase) and m.track_running_stats]


@contextlib.contextmanager
def frozen_running_stats(module: nn.Module | list[_NormBase]) -> Iterator[None]:
    """Undo running-statistic updates made inside the block (recomputation must not count
    a batch twice); batch statistics themselves are still used, so outputs are unchanged.
    Takes the block or the list of its statistic-tracking norms."""
    candidates = module if isinstance(module, list) else _tracking_norms(module)
    norms = [m for m in candidates if m.training]
    saved = [[b.clone() for b in (m.running_mean, m.running_var, m.num_batches_tracked)
              if b is not None] for m in norms]
    try:
        yield
    finally:
        for m, buffers in zip(norms, saved):
            live = [b for b in (m.running_mean, m.running_var, m.num_batches_tracked)
                    if b is not None]
            for dst, src in zip(live, buffers):
                dst.copy_(src)


def _autocast_state(device_type: str) -> tuple[bool, torch.dtype]:
    return torch.is_autocast_enabled(device_type), torch.get_autocast_dtype(device_type)


class _Step:
    """One block as the memory-saving pass runs it: its forward (``run``), the inverse that
    rebuilds its input (``rebuild``), the fused backward where it has one, the norms whose
    statistics the recomputation must not update, and whether its input is known to lie on
    the fixed-point grid already (then the additive coupling skips snapping it)."""

    __slots__ = ("module", "run", "rebuild", "fused", "norms")

    def __init__(self, block: nn.Module, reverse: bool, on_grid: bool, norms: list):
        self.module, self.norms = block, norms
        inner, flipped = block, reverse
        while isinstance(inner, Inverted):
            inner, flipped = inner.block, not flipped
        if isinstance(inner, AdditiveCoupling):
            kw = {"snap_input": not on_grid}
            fwd, inv = inner.forward, inner.inverse
            bwd_f, bwd_i = inner.backward_forward, inner.backward_inverse
            self.run = (lambda x, rng=None: inv(x, rng, **kw)) if flipped else (
                lambda x, rng=None: fwd(x, rng, **kw))
            self.rebuild = (lambda y, rng=None: fwd(y, rng, **kw)) if flipped else (
                lambda y, rng=None: inv(y, rng, **kw))
            self.fused = (lambda y, g, rng=None: bwd_i(y, g, rng, **kw)) if flipped else (
                lambda y, g, rng=None: bwd_f(y, g, rng, **kw))
        else:
            self.run = block.inverse if reverse else block.forward
            self.rebuild = block.forward if reverse else block.inverse
            self.fused = getattr(block, "backward_inverse" if reverse else "backward_forward",
                                 None)


def _grid_bits(block: nn.Module) -> int | None | bool:
    """The grid a block keeps its output on given an input on it: the coupling's bits,
    ``None`` for blocks that only move values (permutation, squeeze), ``False`` for blocks
    that leave the grid (affine and float couplings, learned mixing)."""
    while isinstance(block, Inverted):
        block = block.block
    if isinstance(block, AdditiveCoupling):
        return block.fixed_point_bits if block.fixed_point_bits is not None else False
    return None if isinstance(block, (ChannelPermutation, Squeeze)) else False


class _ReversibleFunction(torch.autograd.Function):
    """Runs invertible steps without saving intermediates; backward rebuilds them."""

    @staticmethod
    def forward(ctx, x: Tensor, steps: list, rngs: list, params_count: int, *params: Tensor):
        device_type = x.device.type
        ctx.steps, ctx.rngs, ctx.params = steps, rngs, params
        ctx.autocast = (device_type, *_autocast_state(device_type))
        y = x
        for step, rng in zip(steps, rngs):
            y = step.run(y, rng)
        if y is x:  # keep our saved output distinct from the caller's tensor
            y = x.clone()
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, grad_y: Tensor):
        (y,) = ctx.saved_tensors
        device_type, autocast_on, autocast_dtype = ctx.autocast
        index = {id(p): i for i, p in enumerate(ctx.params)}
        param_grads: list[Tensor | None] = [None] * len(ctx.params)
        for step, rng in zip(reversed(ctx.steps), reversed(ctx.rngs)):
            # only the bookkeeping that is needed: autocast if it was on, statistic restore
            # if a norm tracks statistics (RNG replay exists only for stochastic blocks)
            with contextlib.ExitStack() as scope:
                if autocast_on:
                    scope.enter_context(torch.autocast(device_type, autocast_dtype))
                if step.norms:
                    scope.enter_context(frozen_running_stats(step.norms))
                if step.fused is not None:
                    y, grad_y, grads = step.fused(y, grad_y, rng)
                else:
                    y, grad_y, grads = _rebuild_and_recompute(step, y, grad_y, rng)
            for p, g in grads.items():
                i = index.get(id(p))
                if g is None or i is None:
                    continue
                param_grads[i] = g if param_grads[i] is None else param_grads[i] + g
        return (grad_y, None, None, None, *param_grads)


def _rebuild_and_recompute(step: _Step, y: Tensor, grad_y: Tensor, rng: RngReplay | None):
    """The generic backward of one block: invert, then recompute with grad."""
    params = [p for p in step.module.parameters() if p.requires_grad]
    with torch.no_grad():
        x = step.rebuild(y, rng)
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        out = step.run(x, rng)
        grads = torch.autograd.grad(out, [x, *params], grad_y, allow_unused=True)
    return x.detach(), grads[0], dict(zip(params, grads[1:]))


class ReversibleSequence(nn.Module):
    """A stack of invertible blocks whose training memory does not grow with depth.

    With ``memory_saving`` on, only the stack's output is kept for backward; each block's
    input is rebuilt by inversion and the block recomputed during backward. With it off the
    stack is plain autograd (for checks and debugging; ``--use_naive``). Both directions
    (``forward`` and ``inverse``) save memory and give correct gradients.

    ``keep_blocks`` trades memory for time: the last ``keep_blocks`` blocks run (in the
    direction of the call) keep their activations under plain autograd, the others are
    rebuilt; 0 rebuilds all of them, ``len(self)`` is plain autograd. Gradients are the same
    in every setting.

    ``fp32_stream`` keeps the coupling sums in fp32 under autocast (F and G may still run in
    16 bit), so inversion error stays at fp32 level with mixed precision.

    The set of blocks is fixed after construction (the per-block norm and dropout lists are
    cached on first use); weights, ``fixed_point_bits`` and train/eval may change.
    """

    def __init__(self, blocks: Iterable[nn.Module], memory_saving: bool = True,
                 fp32_stream: bool = True, keep_blocks: int = 0):
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.memory_saving = memory_saving
        self.fp32_stream = fp32_stream
        self.keep_blocks = keep_blocks
        self._cache: tuple[list, bool] | None = None

    def __len__(self) -> int:
        return len(self.blocks)

    def _structure(self) -> tuple[list, bool]:
        """Per-block statistic-tracking norms, and whether any block has dropout."""
        if self._cache is None:
            norms = [_tracking_norms(b) for b in self.blocks]
            dropout = any(isinstance(m, nn.modules.dropout._DropoutNd) for m in self.modules())
            self._cache = (norms, dropout)
        return self._cache

    def _grid(self) -> int | None:
        """The fixed-point bits when every block keeps the stream on one grid, else None."""
        bits = {_grid_bits(b) for b in self.blocks} - {None}
        if len(bits) == 1 and False not in bits:
            return bits.pop()
        return None

    def _run(self, x: Tensor, reverse: bool) -> Tensor:
        if self.fp32_stream and x.is_floating_point() and x.dtype in (torch.float16,
                                                                       torch.bfloat16):
            x = x.float()
        blocks = list(reversed(self.blocks)) if reverse else list(self.blocks)
        needs_graph = torch.is_grad_enabled() and (
            x.requires_grad or any(p.requires_grad for p in self.parameters()))
        keep = min(max(self.keep_blocks, 0), len(blocks))
        if not (self.memory_saving and needs_graph) or keep == len(blocks):
            for block in blocks:
                x = block.inverse(x) if reverse else block.forward(x)
            return x
        norms, dropout = self._structure()
        if reverse:
            norms = norms[::-1]
        bits = self._grid() if x.dtype == torch.float32 else None
        if bits is not None:  # snap once here; every block then keeps the stream on the grid
            x = round_to_grid(x, bits)
        saved = len(blocks) - keep
        steps = [_Step(b, reverse, bits is not None, n)
                 for b, n in zip(blocks[:saved], norms[:saved])]
        stochastic = self.training and dropout
        rngs = [RngReplay(x.device) if stochastic else None for _ in steps]
        params = [p for b in blocks[:saved] for p in b.parameters() if p.requires_grad]
        x = _ReversibleFunction.apply(x, steps, rngs, len(params), *params)
        for block in blocks[saved:]:
            x = block.inverse(x) if reverse else block.forward(x)
        return x

    def forward(self, x: Tensor) -> Tensor:
        return self._run(x, reverse=False)

    def inverse(self, y: Tensor) -> Tensor:
        return self._run(y, reverse=True)
