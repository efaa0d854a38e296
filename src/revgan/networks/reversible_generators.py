"""Reversible generators: the RevGAN generator and a fully reversible variant.

``RevGenerator``: ``G_AB = decoder_B ∘ core ∘ encoder_A`` and
``G_BA = decoder_A ∘ core⁻¹ ∘ encoder_B`` share one invertible core (a stack of coupling
blocks); only the small encoders/decoders are per domain.

``FullyReversibleGenerator``: the down/upsampling is invertible too, so
``G_BA`` is the exact inverse of ``G_AB`` and the whole generator trains in memory that does
not grow with depth.
"""

from __future__ import annotations

import re

import torch
from torch import Tensor, nn

from revgan.engine.recompute import RecomputedSequential
from revgan.engine.reversible import (
    AdditiveCoupling,
    AffineCoupling,
    ChannelPermutation,
    Inverted,
    Invertible1x1Conv,
    ReversibleSequence,
    Squeeze,
)
from revgan.errors import UserError
from revgan.networks import layers
from revgan.networks.generators import (
    check_input,
    check_residual,
    make_correction,
    parse_resnet_blocks,
    resnet_head,
    resnet_tail,
)
from revgan.networks.init import init_weights, zero_init

COUPLINGS = ("additive", "affine")
STYLES = ("resnet", "edsr")
DIRECTIONS = ("AtoB", "BtoA")
MIXINGS = ("1x1conv", "permutation")
REV_G_PATTERNS = "resnet_<N>blocks (e.g. resnet_9blocks; N = core depth), edsrF_<N>"


def _check_choice(value: str, choices: tuple[str, ...], what: str) -> str:
    if value not in choices:
        raise UserError(f"unknown {what} '{value}'; choose one of {', '.join(choices)}")
    return value


def _coupling(coupling: str, F: nn.Module, G: nn.Module, split: int | None = None,
              fixed_point: bool = True) -> nn.Module:
    """``fixed_point=False`` gives plain float additive sums (see FullyReversibleGenerator)."""
    if coupling == "additive":
        if fixed_point:
            return AdditiveCoupling(F, G, split)
        return AdditiveCoupling(F, G, split, fixed_point_bits=None)
    return AffineCoupling(F, G, split)


def _out_mult(coupling: str) -> int:
    """Affine F/G output a log-scale and a shift for each channel they update."""
    return 2 if coupling == "affine" else 1


# --------------------------------------------------------------------------- F / G builders


def resnet_fg(ch_in: int, ch_out: int, norm: str, dims: int, use_dropout: bool = False,
              zero: bool = True) -> nn.Sequential:
    """Reference 2D F/G: [ReflPad1, Conv3, Norm, ReLU, ReflPad1, Conv3, Norm].

    With ``zero`` the last conv is zero-initialised; instance norm of an all-zero map is
    zero ((0 - 0) / sqrt(0 + eps)), so F still outputs zero and the block is the identity.
    """
    norm_layer, bias = layers.norm_layer(dims, norm), layers.uses_bias(norm)
    mods: list[nn.Module] = [layers.reflection_pad(dims, 1),
                             layers.conv(dims, ch_in, ch_in, kernel_size=3, bias=bias),
                             norm_layer(ch_in),
                             nn.ReLU(True)]
    if use_dropout:
        mods.append(nn.Dropout(0.5))
    last = layers.conv(dims, ch_in, ch_out, kernel_size=3, bias=bias)
    mods += [layers.reflection_pad(dims, 1), zero_init(last) if zero else last, norm_layer(ch_out)]
    return nn.Sequential(*mods)


def edsr_fg(ch_in: int, ch_out: int, norm: str, dims: int, use_dropout: bool = False,
            zero: bool = True, hidden: int | None = None) -> nn.Sequential:
    """Reference 3D F/G: [Norm, ReplPad1, Conv3, Norm, ReLU, ReplPad1, Conv3 (zero-init)].

    Pre-norm makes F independent of the scale of its input; the zero-initialised last conv
    makes the coupling the identity at init. ``hidden`` widens the middle (default ch_in).
    """
    hidden = ch_in if hidden is None else hidden
    norm_layer, bias = layers.norm_layer(dims, norm), layers.uses_bias(norm)
    mods: list[nn.Module] = [norm_layer(ch_in),
                             layers.replication_pad(dims, 1),
                             layers.conv(dims, ch_in, hidden, kernel_size=3, bias=bias),
                             norm_layer(hidden),
                             nn.ReLU(True)]
    if use_dropout:
        mods.append(nn.Dropout(0.5))
    last = layers.conv(dims, hidden, ch_out, kernel_size=3, bias=True)
    mods += [layers.replication_pad(dims, 1), zero_init(last) if zero else last]
    return nn.Sequential(*mods)


# --------------------------------------------------------------------------- encoders


def edsr_head(input_nc: int, ngf: int, n_downsampling: int, norm: str, dims: int
              ) -> list[nn.Module]:
    """ReplPad2, Conv5 (-> ngf), Norm, ReLU; n_downsampling x [Conv3 s2 (x2 ch), Norm, ReLU]."""
    return resnet_head(input_nc, ngf, n_downsampling, norm, dims, 5, layers.replication_pad)


def edsr_tail(output_nc: int, ngf: int, n_downsampling: int, norm: str, dims: int,
              upsample: str = "transpose") -> list[nn.Module]:
    """n_downsampling x [Up x2 (/2 ch), Norm, ReLU], then ReplPad2, Conv5, Tanh."""
    return resnet_tail(output_nc, ngf, n_downsampling, norm, dims, 5, layers.replication_pad,
                       upsample)


# --------------------------------------------------------------------------- RevGAN generator


class RevGenerator(nn.Module):
    """The RevGAN generator pair: per-domain encoder/decoder around one shared reversible core.

    ``forward(x, "AtoB") = decoder_B(core(encoder_A(x)))`` and
    ``forward(x, "BtoA") = decoder_A(core.inverse(encoder_B(x)))``.

    Styles: ``resnet`` (reference 2D: Conv7 head, ``n_downsampling`` stride-2 convs, F/G
    ending in a norm) and ``edsr`` (reference 3D ``edsrF_N``: Conv5 head, usually one
    stride-2 conv, pre-norm F/G with a zero-initialised last conv). The core has
    ``n_blocks`` couplings at ``ngf * 2**n_downsampling`` channels split in halves.
    ``zero_init`` zeroes the last conv of every F and G so the core starts as the identity
    (kept by :func:`init_weights`, which skips flagged layers). ``residual`` adds a global
    skip around each direction, outside the core: ``G_AB(x) = x + decoder_B(core(encoder_A(x)))``
    and ``G_BA(y) = y + decoder_A(core⁻¹(encoder_B(y)))``; the core is unchanged and both
    decoders end in a linear correction that starts at zero (both directions start as the
    identity; see :func:`~revgan.networks.generators.make_correction`).
    """

    def __init__(self, input_nc_A: int, input_nc_B: int, ngf: int = 64, n_blocks: int = 9,
                 n_downsampling: int = 2, norm: str = "instance", coupling: str = "additive",
                 dims: int = 2, memory_saving: bool = True, use_dropout: bool = False,
                 style: str = "resnet", zero_init: bool = True, fixed_point: bool = True,
                 keep_blocks: int = 0, upsample: str = "transpose", residual: bool = False):
        super().__init__()
        _check_choice(coupling, COUPLINGS, "coupling")
        _check_choice(style, STYLES, "generator style")
        layers.norm_layer(dims, norm)  # validate early
        if n_blocks < 1 or n_downsampling < 0:
            raise UserError("the reversible core needs n_blocks >= 1 and n_downsampling >= 0")
        self.input_nc_A, self.input_nc_B = input_nc_A, input_nc_B
        self.residual = check_residual(residual, input_nc_A, input_nc_B)
        self.size_divisor = 2**n_downsampling
        head, tail, fg = ((resnet_head, resnet_tail, resnet_fg) if style == "resnet"
                          else (edsr_head, edsr_tail, edsr_fg))
        # whole stages for --recompute_stages (only their inputs kept when it is on)
        self.encoder_A = RecomputedSequential(*head(input_nc_A, ngf, n_downsampling, norm,
                                                    dims))
        self.encoder_B = RecomputedSequential(*head(input_nc_B, ngf, n_downsampling, norm,
                                                    dims))
        self.decoder_A = RecomputedSequential(*tail(input_nc_A, ngf, n_downsampling, norm,
                                                    dims, upsample=upsample))
        self.decoder_B = RecomputedSequential(*tail(input_nc_B, ngf, n_downsampling, norm,
                                                    dims, upsample=upsample))
        if self.residual:
            make_correction(self.decoder_A)
            make_correction(self.decoder_B)
        half = ngf * 2**n_downsampling // 2
        out = half * _out_mult(coupling)
        blocks = [_coupling(coupling,
                            fg(half, out, norm, dims, use_dropout, zero_init),
                            fg(half, out, norm, dims, use_dropout, zero_init),
                            fixed_point=fixed_point)
                  for _ in range(n_blocks)]
        self.core = ReversibleSequence(blocks, memory_saving=memory_saving,
                                       keep_blocks=keep_blocks)

    @property
    def memory_saving(self) -> bool:
        return self.core.memory_saving

    @memory_saving.setter
    def memory_saving(self, value: bool) -> None:
        self.core.memory_saving = value

    @property
    def keep_blocks(self) -> int:
        """How many of the last blocks run keep their activations (the time/memory dial)."""
        return self.core.keep_blocks

    @keep_blocks.setter
    def keep_blocks(self, value: int) -> None:
        self.core.keep_blocks = value

    def encode(self, x: Tensor, domain: str) -> Tensor:
        """Map an image of ``domain`` ('A' or 'B') to core features."""
        channels = self.input_nc_A if domain == "A" else self.input_nc_B
        check_input(x, channels, self.size_divisor, f"domain {domain} input")
        return (self.encoder_A if domain == "A" else self.encoder_B)(x)

    def decode(self, h: Tensor, domain: str) -> Tensor:
        """Map core features to an image of ``domain`` ('A' or 'B')."""
        return (self.decoder_A if domain == "A" else self.decoder_B)(h)

    def forward(self, x: Tensor, direction: str = "AtoB") -> Tensor:
        if _check_choice(direction, DIRECTIONS, "direction") == "AtoB":
            y = self.decode(self.core(self.encode(x, "A")), "B")
        else:
            y = self.decode(self.core.inverse(self.encode(x, "B")), "A")
        return x + y if self.residual else y


# --------------------------------------------------------------------------- fully reversible


class FullyReversibleGenerator(nn.Module):
    """A generator pair whose downsampling is invertible too: ``G_BA`` is exactly ``G_AB⁻¹``.

    ``G_AB = enc_B⁻¹ ∘ core ∘ enc_A`` and ``G_BA = enc_A⁻¹ ∘ core⁻¹ ∘ enc_B``. Each
    domain's encoder has ``n_downsampling`` levels of [Squeeze (space-to-depth: channels x4 in
    2D, x8 in 3D), channel mixing (learned invertible 1x1 conv, or a fixed permutation),
    ``n_enc_blocks`` coupling blocks]; the core is
    ``n_blocks`` couplings. The whole chain (enc_A, core, inverted enc_B) is one
    :class:`ReversibleSequence`, so training memory does not grow with depth anywhere in the
    generator, not just in the core. Cycle consistency holds by construction. F/G are
    pre-norm conv nets (as in the 3D reference) whose hidden width comes from ``ngf``
    (``ngf * 2**level`` in encoder level ``level``, ``ngf * 2**n_downsampling / 2`` in the
    core), wider than the squeezed channels they update. With ``zero_init`` every coupling
    starts as the identity and both domains' mixings start equal, so at
    init ``G_AB`` is the identity (for equal channel counts).

    What it gives up, compared with :class:`RevGenerator`:

    - Channel counts are fixed by the input: ``C * 2**(dims * n_downsampling)`` in the core
      (48 for RGB in 2D with two levels, 64 for one-channel volumes), not a free width; the
      capacity comes from the F/G hidden width instead.
    - Exact inversion needs equal channel counts in A and B. Otherwise the smaller side is
      zero-padded to the larger before the chain and the extra channels are dropped after,
      and ``G_BA(G_AB(x))`` is only approximately ``x``.
    - The output is unbounded (no tanh): a tanh would make ``G_BA`` invert only through an
      ``atanh`` that is infinite at ±1, i.e. on every saturated pixel of a real image.
      Losses pull outputs into [-1, 1]; clamp when saving. ``bounded_output=True`` adds a
      tanh to both directions, trading the exact inverse for a bounded range.
    - Input sides must be divisible by ``2**n_downsampling`` (Squeeze cannot pad).
    - Inversion is exact up to float round-off, not bit-exact. The engine's fixed-point
      additive couplings are bit-exact only while every block keeps values on their grid;
      the learned 1x1 convolutions do not, and snapping their outputs loses ~1e-5 per level
      that the following inverses amplify (measured with random weights: 4e-4 round-trip
      error vs 7e-6 with plain float sums). So with ``mixing="1x1conv"`` (default, learned
      mixing as in Glow) the couplings use plain float sums; ``mixing="permutation"`` uses
      fixed channel permutations instead, keeps the grid and is bit-exact after the first
      rounding of the input (error <= 2**-17).
    """

    def __init__(self, input_nc_A: int, input_nc_B: int, ngf: int = 64, n_blocks: int = 9,
                 n_downsampling: int = 2, coupling: str = "additive", dims: int = 2,
                 memory_saving: bool = True, norm: str = "instance", use_dropout: bool = False,
                 n_enc_blocks: int = 2, zero_init: bool = True, bounded_output: bool = False,
                 mixing: str = "1x1conv", keep_blocks: int = 0):
        super().__init__()
        _check_choice(coupling, COUPLINGS, "coupling")
        _check_choice(mixing, MIXINGS, "channel mixing")
        fixed_point = mixing == "permutation"
        layers.norm_layer(dims, norm)
        if n_blocks < 0 or n_downsampling < 0 or n_enc_blocks < 0:
            raise UserError("n_blocks, n_downsampling and n_enc_blocks must be >= 0")
        self.input_nc_A, self.input_nc_B = input_nc_A, input_nc_B
        self.channels = max(input_nc_A, input_nc_B)
        self.size_divisor = 2**n_downsampling
        self.bounded_output = bounded_output
        mult = _out_mult(coupling)

        def couplings(ch: int, hidden: int, count: int) -> list[nn.Module]:
            split = ch // 2
            if split < 1:
                raise UserError(f"cannot build a coupling on {ch} channel(s); use n_downsampling "
                                ">= 1 or more channels")

            def fg(ch_in: int, ch_out: int) -> nn.Module:
                return edsr_fg(ch_in, ch_out * mult, norm, dims, use_dropout, zero_init, hidden)

            return [_coupling(coupling, fg(ch - split, split), fg(split, ch - split), split,
                              fixed_point)
                    for _ in range(count)]

        def encoder() -> list[nn.Module]:
            blocks: list[nn.Module] = []
            ch = self.channels
            for level in range(n_downsampling):
                ch *= 2**dims
                # Same seed for A and B: at init enc_B^-1 undoes enc_A's mixing exactly.
                mix = (Invertible1x1Conv(ch, seed=level) if mixing == "1x1conv"
                       else ChannelPermutation(ch, seed=level))
                blocks += [Squeeze(dims), mix, *couplings(ch, ngf * 2**level, n_enc_blocks)]
            return blocks

        enc_A, enc_B = encoder(), encoder()
        core_ch = self.channels * 2 ** (dims * n_downsampling)
        core_hidden = max(ngf * 2**n_downsampling // 2, 1)
        core = couplings(core_ch, core_hidden, n_blocks) if n_blocks else []
        self.n_encoder_blocks = len(enc_A)
        # One stack for the whole generator; the B encoder enters it inverted and reversed.
        self.chain = ReversibleSequence(
            [*enc_A, *core, *(Inverted(b) for b in reversed(enc_B))], memory_saving=memory_saving,
            keep_blocks=keep_blocks)

    @property
    def memory_saving(self) -> bool:
        return self.chain.memory_saving

    @memory_saving.setter
    def memory_saving(self, value: bool) -> None:
        self.chain.memory_saving = value

    @property
    def keep_blocks(self) -> int:
        """How many of the last blocks run keep their activations (the time/memory dial)."""
        return self.chain.keep_blocks

    @keep_blocks.setter
    def keep_blocks(self, value: int) -> None:
        self.chain.keep_blocks = value

    def _lift(self, x: Tensor) -> Tensor:
        missing = self.channels - x.shape[1]
        if missing == 0:
            return x
        pad = torch.zeros(x.shape[0], missing, *x.shape[2:], dtype=x.dtype, device=x.device)
        return torch.cat([x, pad], dim=1)

    def forward(self, x: Tensor, direction: str = "AtoB") -> Tensor:
        if _check_choice(direction, DIRECTIONS, "direction") == "AtoB":
            check_input(x, self.input_nc_A, self.size_divisor, "domain A input")
            y = self.chain(self._lift(x))[:, : self.input_nc_B]
        else:
            check_input(x, self.input_nc_B, self.size_divisor, "domain B input")
            y = self.chain.inverse(self._lift(x))[:, : self.input_nc_A]
        return torch.tanh(y) if self.bounded_output else y


# --------------------------------------------------------------------------- registry


def parse_rev_name(netG: str, dims: int) -> tuple[str, int]:
    """``resnet_<N>blocks`` / ``edsrF_<N>`` -> (style, core depth N).

    ``resnet_<N>blocks`` means the reference 2D design in 2D and the edsr design in 3D
    (the reference's 3D RevGAN; its 5^3 head and pre-norm zero-init blocks suit volumes).
    """
    n_blocks = parse_resnet_blocks(netG)
    if n_blocks is not None:
        return ("resnet" if dims == 2 else "edsr"), n_blocks
    m = re.fullmatch(r"edsrF_(\d+)", netG)
    if m:
        return "edsr", int(m.group(1))
    raise UserError(f"unknown reversible generator '{netG}'; valid: {REV_G_PATTERNS}")


def define_rev_G(netG: str, input_nc_A: int, input_nc_B: int, ngf: int = 64,
                 norm: str = "instance", dims: int = 2, n_downsampling: int | None = None,
                 coupling: str = "additive", memory_saving: bool = True,
                 fully_reversible: bool = False, init_type: str = "normal",
                 init_gain: float = 0.02, use_dropout: bool = False,
                 fixed_point: bool = True, keep_blocks: int = 0,
                 upsample: str = "transpose", zero_init: bool = True,
                 residual: bool = False) -> nn.Module:
    """Build and initialise a reversible generator pair by name (see ``REV_G_PATTERNS``).

    ``fixed_point=False``: the RevGAN core's additive couplings sum in plain float, as the
    2019 reference did (imported checkpoints); default: on the exact 2**-16 grid.

    ``n_downsampling=None`` picks the style's reference value: 2 for the resnet style, 1 for
    the edsr style (``edsrF_<N>``, and ``resnet_<N>blocks`` in 3D). ``keep_blocks``: see
    :class:`~revgan.engine.reversible.ReversibleSequence`. ``upsample``: the decoders' x2
    layers (:func:`revgan.networks.layers.upsample_x2`); the fully reversible generator
    has invertible decoders and only ``transpose`` (its default design). ``zero_init``:
    the core's F/G end in a zero-initialised conv (identity at init) or a normal one.
    ``residual``: a global skip around each direction (:class:`RevGenerator`); the fully
    reversible generator refuses it (its ``G_BA`` must stay the exact inverse of ``G_AB``).
    """
    style, n_blocks = parse_rev_name(netG, dims)
    if fully_reversible and upsample != "transpose":
        raise UserError("--upsample resize needs a RevGAN generator with plain decoders "
                        "(not --fully_reversible)")
    if fully_reversible and residual:
        raise UserError("--residual needs a RevGAN generator with plain decoders (with "
                        "--fully_reversible, G_BA would no longer invert G_AB)")
    if n_downsampling is None:
        n_downsampling = 2 if style == "resnet" else 1
    if fully_reversible:
        net: nn.Module = FullyReversibleGenerator(
            input_nc_A, input_nc_B, ngf, n_blocks, n_downsampling, coupling, dims,
            memory_saving, norm=norm, use_dropout=use_dropout, keep_blocks=keep_blocks,
            zero_init=zero_init)
    else:
        net = RevGenerator(input_nc_A, input_nc_B, ngf, n_blocks, n_downsampling, norm,
                           coupling, dims, memory_saving, use_dropout, style,
                           fixed_point=fixed_point, keep_blocks=keep_blocks,
                           upsample=upsample, zero_init=zero_init, residual=residual)
    return init_weights(net, init_type, init_gain)
