"""Intensity normalisation of volumes to [-1, 1] and back to the input's units.

A normaliser is chosen per domain by a short option (``minmax``, ``percentile``, ``window``,
``zscore``, ``none``) and serialised with :meth:`Normalizer.to_dict` (JSON-safe) so that the
model's checkpoint carries it and test time uses the same mapping.

Each normaliser is an affine map ``x -> (x - lo) * 2 / (hi - lo) - 1`` between ``[lo, hi]``
and ``[-1, 1]``, optionally clipped; only how ``lo``/``hi`` are found differs:

- ``minmax``: per volume, the volume's min and max (exactly invertible);
- ``percentile``: per volume, the given percentiles (default 0.5 and 99.5); values beyond
  are clipped first, so the inverse holds inside that range;
- ``window``: fixed, e.g. CT ``--window -1000 2000`` (lower, upper, in input units); clipped;
- ``zscore``: per volume, ``(x - mean) / std``, clipped at ±k std (k = ``zscore_clip``,
  default 3) and divided by k, i.e. ``lo = mean - k std``, ``hi = mean + k std``. Clipping
  rather than a tanh squash keeps the map linear, so network outputs near ±1 map back to
  finite, proportionate values;
- ``none``: the data is already in [-1, 1]; values pass through unchanged.

Statistics are taken over all channels of a volume together.

Translation A->B maps its output back with domain B's normaliser. When that normaliser is
per volume (minmax, percentile, zscore) the output has no statistics of its own, so B's
normaliser is fitted on the INPUT volume: ``stats = norm_B.fit(input)``. That is what makes
an identity translation return its input exactly when A and B share a normaliser, and it
keeps the output on the input's intensity scale. :func:`output_stats` implements the rule.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from revgan.errors import UserError

NORM_KINDS = ("minmax", "percentile", "window", "zscore", "none")
Array = np.ndarray | torch.Tensor


def _clip(x: Array, lo: float, hi: float) -> Array:
    if isinstance(x, torch.Tensor):
        return x.clamp(lo, hi)
    return np.clip(x, lo, hi)


def _as_numpy(volume: Array) -> np.ndarray:
    if isinstance(volume, torch.Tensor):
        return volume.detach().to("cpu", torch.float32).numpy()
    return np.asarray(volume, dtype=np.float32)


class Normalizer:
    """Affine map between ``[lo, hi]`` (input units) and ``[-1, 1]``; see module docstring.

    ``fit(volume)`` returns the stats ``{"lo", "hi"}`` (constants for fixed kinds);
    ``normalize(volume, stats)`` / ``denormalize(x, stats)`` apply the map and its inverse.
    Works on numpy arrays and torch tensors alike.
    """

    kind = "none"
    per_volume = False
    clips = False

    def fit(self, volume: Array | None = None) -> dict[str, float]:
        return {"lo": -1.0, "hi": 1.0}

    def normalize(self, volume: Array, stats: dict[str, float] | None = None) -> Array:
        lo, hi = self._range(stats, volume)
        if self.clips:
            volume = _clip(volume, lo, hi)
        if lo == -1.0 and hi == 1.0:
            return volume
        return (volume - lo) * (2.0 / (hi - lo)) - 1.0

    def denormalize(self, x: Array, stats: dict[str, float] | None = None,
                    inplace: bool = False) -> Array:
        """Map ``x`` from [-1, 1] back to input units (``inplace`` reuses ``x``'s memory)."""
        lo, hi = self._range(stats, None)
        if lo == -1.0 and hi == 1.0:
            return x
        if inplace:
            x += 1.0
            x *= (hi - lo) / 2.0
            x += lo
            return x
        return (x + 1.0) * ((hi - lo) / 2.0) + lo

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind}

    def _range(self, stats: dict[str, float] | None, volume: Array | None) -> tuple[float, float]:
        if stats is None:
            if self.per_volume and volume is None:
                raise ValueError(f"{self.kind} normalisation needs the stats fitted on a volume")
            stats = self.fit(volume)
        lo, hi = float(stats["lo"]), float(stats["hi"])
        if not hi > lo:  # a constant volume: any positive width keeps the map invertible
            hi = lo + 1.0
        return lo, hi

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.to_dict().items() if k != "kind")
        return f"{type(self).__name__}({args})"


class NoneNormalizer(Normalizer):
    """Data already in [-1, 1]: identity."""


class MinMaxNormalizer(Normalizer):
    kind = "minmax"
    per_volume = True

    def fit(self, volume: Array | None = None) -> dict[str, float]:
        data = _as_numpy(_required(volume, self.kind))
        return {"lo": float(data.min()), "hi": float(data.max())}


class PercentileNormalizer(Normalizer):
    kind = "percentile"
    per_volume = True
    clips = True

    def __init__(self, percentiles: Sequence[float] = (0.5, 99.5)):
        lo, hi = (float(p) for p in percentiles)
        if not 0.0 <= lo < hi <= 100.0:
            raise UserError(f"percentiles must satisfy 0 <= low < high <= 100, got {lo}, {hi}")
        self.percentiles = (lo, hi)

    def fit(self, volume: Array | None = None) -> dict[str, float]:
        data = _as_numpy(_required(volume, self.kind))
        lo, hi = np.percentile(data, self.percentiles)
        return {"lo": float(lo), "hi": float(hi)}

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "percentiles": list(self.percentiles)}


class WindowNormalizer(Normalizer):
    kind = "window"
    clips = True

    def __init__(self, window: Sequence[float]):
        if window is None or len(window) != 2:
            raise UserError("window normalisation needs --window LOWER UPPER (e.g. -1000 2000)")
        lo, hi = (float(w) for w in window)
        if not (np.isfinite(lo) and np.isfinite(hi) and hi > lo):
            raise UserError(f"--window needs LOWER < UPPER, got {lo} {hi}")
        self.window = (lo, hi)

    def fit(self, volume: Array | None = None) -> dict[str, float]:
        return {"lo": self.window[0], "hi": self.window[1]}

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "window": list(self.window)}


class ZScoreNormalizer(Normalizer):
    kind = "zscore"
    per_volume = True
    clips = True

    def __init__(self, clip: float = 3.0):
        if not clip > 0:
            raise UserError(f"z-score clip must be positive, got {clip}")
        self.clip = float(clip)

    def fit(self, volume: Array | None = None) -> dict[str, float]:
        data = _as_numpy(_required(volume, self.kind)).astype(np.float64)
        mean, std = float(data.mean()), float(data.std())
        return {"lo": mean - self.clip * std, "hi": mean + self.clip * std,
                "mean": mean, "std": std}

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "clip": self.clip}


def _required(volume: Array | None, kind: str) -> Array:
    if volume is None:
        raise ValueError(f"{kind} normalisation is fitted per volume; pass the volume")
    return volume


def make_normalizer(
    kind: str,
    window: Sequence[float] | None = None,
    percentiles: Sequence[float] = (0.5, 99.5),
    zscore_clip: float = 3.0,
) -> Normalizer:
    """The normaliser named ``kind`` (one of :data:`NORM_KINDS`)."""
    kind = (kind or "none").lower()
    if kind == "minmax":
        return MinMaxNormalizer()
    if kind == "percentile":
        return PercentileNormalizer(percentiles)
    if kind == "window":
        return WindowNormalizer(window)
    if kind == "zscore":
        return ZScoreNormalizer(zscore_clip)
    if kind == "none":
        return NoneNormalizer()
    raise UserError(f"unknown intensity normalisation '{kind}'; choose one of "
                    f"{', '.join(NORM_KINDS)}")


def normalizer_from_dict(d: dict[str, Any] | Normalizer | None) -> Normalizer:
    """Rebuild a normaliser saved with :meth:`Normalizer.to_dict` (None -> ``none``)."""
    if isinstance(d, Normalizer):
        return d
    if not d:
        return NoneNormalizer()
    if not isinstance(d, dict) or "kind" not in d:
        raise UserError(f"not a saved intensity normalisation: {d!r}")
    return make_normalizer(d["kind"], window=d.get("window"),
                           percentiles=d.get("percentiles", (0.5, 99.5)),
                           zscore_clip=d.get("clip", 3.0))


def output_stats(normalizer_out: Normalizer, input_volume: Array) -> dict[str, float]:
    """Stats to map a translation's output back to input units: ``normalizer_out`` fitted on
    the INPUT volume (see module docstring); constants for fixed normalisers."""
    return normalizer_out.fit(input_volume)
