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
    return torch.round(t * scale) / scale


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

    def forward(self, x: Tensor, rng: RngReplay | None = None) -> Tensor:
        x1, x2 = (self._snap(h, x.dtype) for h in self._halves(x))
        y1 = x1 + self._snap(_call(self.F, x2, rng, "F"), x1.dtype)
        y2 = x2 + self._snap(_call(self.G, y1, rng, "G"), x2.dtype)
        return torch.cat([y1, y2], dim=1)

    def inverse(self, y: Tensor, rng: RngReplay | None = None) -> Tensor:
        y1, y2 = (self._snap(h, y.dtype) for h in self._halves(y))
        x2 = y2 - self._snap(_call(self.G, y1, rng, "G"), y2.dtype)
        x1 = y1 - self._snap(_call(self.F, x2, rng, "F"), y1.dtype)
        return torch.cat([x1, x2], dim=1)

    # Fused backward (RevNet, Gomez et al. 2017): rebuilding the input already evaluates
    # F(x2) and G(y1), the very values the backward needs, so each is run once with grad
    # instead of once to invert and again to recompute.

    def _branch_grad(self, net: nn.Module, key: str, inp: Tensor, dtype: torch.dtype,
                     grad_out: Tensor, rng: RngReplay | None):
        leaf = inp.detach().requires_grad_(True)
        params = [p for p in net.parameters() if p.requires_grad]
        with torch.enable_grad():
            out = _call(net, leaf, rng, key).to(dtype)
            # the snap's gradient is the identity: differentiate the raw output, snap its value
            grads = torch.autograd.grad(out, [leaf, *params], grad_out, allow_unused=True)
        return self._snap(out.detach(), dtype), grads[0], dict(zip(params, grads[1:]))

    def backward_forward(self, y: Tensor, grad_y: Tensor, rng: RngReplay | None = None):
        """For ``y = forward(x)``: return ``x``, dL/dx and dL/dθ given dL/dy."""
        y1, y2 = (self._snap(h, y.dtype) for h in self._halves(y))
        dy1, dy2 = self._halves(grad_y)
        g, g_in, grads = self._branch_grad(self.G, "G", y1, y2.dtype, dy2, rng)
        x2 = y2 - g
        dy1 = dy1 + g_in
        f, f_in, grads_F = self._branch_grad(self.F, "F", x2, y1.dtype, dy1, rng)
        x1 = y1 - f
        grads.update(grads_F)
        return torch.cat([x1, x2], 1), torch.cat([dy1, dy2 + f_in], 1), grads

    def backward_inverse(self, x: Tensor, grad_x: Tensor, rng: RngReplay | None = None):
        """For ``x = inverse(y)``: return ``y``, dL/dy and dL/dθ given dL/dx."""
        x1, x2 = (self._snap(h, x.dtype) for h in self._halves(x))
        dx1, dx2 = self._halves(grad_x)
        f, f_in, grads = self._branch_grad(self.F, "F", x2, x1.dtype, -dx1, rng)
        y1 = x1 + f
        dx2 = dx2 + f_in
        g, g_in, grads_G = self._branch_grad(self.G, "G", y1, x2.dtype, -dx2, rng)
        y2 = x2 + g
        grads.update(grads_G)
        return torch.cat([y1, y2], 1), torch.cat([dx1 + g_in, dx2], 1), grads


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


@contextlib.contextmanager
def frozen_running_stats(module: nn.Module) -> Iterator[None]:
    """Undo running-statistic updates made inside the block (recomputation must not count
    a batch twice); batch statistics themselves are still used, so outputs are unchanged."""
    norms = [m for m in module.modules()
             if isinstance(m, _NormBase) and m.track_running_stats and m.training]
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


class _ReversibleFunction(torch.autograd.Function):
    """Runs invertible steps without saving intermediates; backward rebuilds them."""

    @staticmethod
    def forward(ctx, x: Tensor, steps: list, rngs: list, params_count: int, *params: Tensor):
        device_type = x.device.type
        ctx.steps, ctx.rngs, ctx.params = steps, rngs, params
        ctx.autocast = (device_type, *_autocast_state(device_type))
        y = x
        for step, rng in zip(steps, rngs):
            y = step[1](y, rng)
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
        for (module, run, rebuild, fused), rng in zip(reversed(ctx.steps), reversed(ctx.rngs)):
            with torch.autocast(device_type, autocast_dtype, enabled=autocast_on), \
                    frozen_running_stats(module):
                if fused is not None:
                    y, grad_y, grads = fused(y, grad_y, rng)
                else:
                    y, grad_y, grads = _rebuild_and_recompute(module, run, rebuild, y, grad_y,
                                                              rng)
            for p, g in grads.items():
                i = index.get(id(p))
                if g is None or i is None:
                    continue
                param_grads[i] = g if param_grads[i] is None else param_grads[i] + g
        return (grad_y, None, None, None, *param_grads)


def _rebuild_and_recompute(module: nn.Module, run, rebuild, y: Tensor, grad_y: Tensor,
                           rng: RngReplay | None):
    """The generic backward of one block: invert, then recompute with grad."""
    params = [p for p in module.parameters() if p.requires_grad]
    with torch.no_grad():
        x = rebuild(y, rng)
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        out = run(x, rng)
        grads = torch.autograd.grad(out, [x, *params], grad_y, allow_unused=True)
    return x.detach(), grads[0], dict(zip(params, grads[1:]))


class ReversibleSequence(nn.Module):
    """A stack of invertible blocks whose training memory does not grow with depth.

    With ``memory_saving`` on, only the stack's output is kept for backward; each block's
    input is rebuilt by inversion and the block recomputed during backward. With it off the
    stack is plain autograd (for checks and debugging; ``--use_naive``). Both directions
    (``forward`` and ``inverse``) save memory and give correct gradients.

    ``fp32_stream`` keeps the coupling sums in fp32 under autocast (F and G may still run in
    16 bit), so inversion error stays at fp32 level with mixed precision.
    """

    def __init__(self, blocks: Iterable[nn.Module], memory_saving: bool = True,
                 fp32_stream: bool = True):
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.memory_saving = memory_saving
        self.fp32_stream = fp32_stream

    def __len__(self) -> int:
        return len(self.blocks)

    def _stochastic(self) -> bool:
        return self.training and any(
            isinstance(m, nn.modules.dropout._DropoutNd) for m in self.modules())

    def _run(self, x: Tensor, reverse: bool) -> Tensor:
        if self.fp32_stream and x.is_floating_point() and x.dtype in (torch.float16,
                                                                       torch.bfloat16):
            x = x.float()
        blocks = list(reversed(self.blocks)) if reverse else list(self.blocks)
        steps = [(b, b.inverse, b.forward, getattr(b, "backward_inverse", None)) if reverse
                 else (b, b.forward, b.inverse, getattr(b, "backward_forward", None))
                 for b in blocks]
        params = [p for p in self.parameters() if p.requires_grad]
        needs_graph = torch.is_grad_enabled() and (x.requires_grad or bool(params))
        if not (self.memory_saving and needs_graph):
            for step in steps:
                x = step[1](x)
            return x
        rngs = [RngReplay(x.device) if self._stochastic() else None for _ in steps]
        return _ReversibleFunction.apply(x, steps, rngs, len(params), *params)

    def forward(self, x: Tensor) -> Tensor:
        return self._run(x, reverse=False)

    def inverse(self, y: Tensor) -> Tensor:
        return self._run(y, reverse=True)
