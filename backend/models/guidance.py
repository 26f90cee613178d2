"""Classifier-free guidance with a per-frame scale, as Stability's video guiders do it.

The guided clean estimate for frame t is ``x0_u + s[t] * (x0_c - x0_u)`` where x0_u is the estimate
with the image conditioning zeroed (CLIP embedding and condition latent), x0_c the conditional one.

* ``linear``   (SVD/SVD-XT, ``LinearPredictionGuider``): s = linspace(min_scale, max_scale, T).
* ``triangle`` (SV3D, ``TrianglePredictionGuider`` with period 1): s rises from min_scale at both
  ends of the orbit (next to the conditioning view) to max_scale half way round:
  s[t] = min + (max - min) * 2 * |u - floor(u + 1/2)|, u = linspace(0, 1, T).
* ``none``: no guidance (one network pass instead of two).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from backend.errors import InvalidInput

KINDS = ("linear", "triangle", "none")


@dataclass(frozen=True)
class Guidance:
    """kind, min_scale, max_scale as above. sigma_range (lo, hi): guide only at noise levels within
    it and run the conditional pass alone elsewhere ("guidance in a limited interval", Kynkaanniemi
    et al. 2024) -- half the network work at the other steps. None (default): guide at every step,
    as the original samplers do."""

    kind: str = "linear"
    min_scale: float = 1.0
    max_scale: float = 3.0
    sigma_range: tuple[float, float] | None = None

    def __post_init__(self):
        if self.kind not in KINDS:
            raise InvalidInput("guidance", f"expected one of {KINDS}, got {self.kind!r}")
        for name in ("min_scale", "max_scale"):
            v = getattr(self, name)
            if not (0.0 <= float(v) <= 30.0):
                raise InvalidInput(f"guidance.{name}", f"must be within [0, 30], got {v}")
        if self.sigma_range is not None:
            lo, hi = (float(v) for v in self.sigma_range)
            if not 0.0 <= lo < hi:
                raise InvalidInput("guidance.sigma_range", f"need 0 <= lo < hi, got {self.sigma_range}")

    def scales(self, T: int) -> Tensor:
        """Per-frame guidance scale [T] (float32)."""
        if self.kind == "none":
            return torch.ones(T)
        u = torch.linspace(0.0, 1.0, T)
        if self.kind == "linear":
            return torch.linspace(float(self.min_scale), float(self.max_scale), T)
        tri = 2.0 * (u - torch.floor(u + 0.5)).abs()
        return tri * (float(self.max_scale) - float(self.min_scale)) + float(self.min_scale)

    def active(self, T: int, sigma: float | None = None) -> bool:
        """Whether the unconditional pass is needed (some scale differs from 1, sigma within range)."""
        if self.kind == "none" or not bool((self.scales(T) != 1.0).any()):
            return False
        if self.sigma_range is not None and sigma is not None:
            return float(self.sigma_range[0]) <= float(sigma) <= float(self.sigma_range[1])
        return True


def guide(x0_uncond: Tensor, x0_cond: Tensor, scales: Tensor) -> Tensor:
    """x0_* [B, T, ...], scales [T] -> x0_u + s[t] * (x0_c - x0_u)."""
    s = scales.to(device=x0_cond.device, dtype=x0_cond.dtype).view(1, -1, *([1] * (x0_cond.dim() - 2)))
    return x0_uncond + s * (x0_cond - x0_uncond)
