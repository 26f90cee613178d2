"""Noise-level and composition-weight schedules for the Diffusion² sampler.

A weight schedule gives the multi-view model's share w in [0, 1] of the composed x0 estimate as a
function of (step index, number of steps, view index):

    x0[v, f] = w * x0_columns[v, f] + (1 - w) * x0_rows[v, f]

w = 0 is pure video model (rows), w = 1 pure multi-view model (columns).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Protocol, Sequence

import torch
from torch import Tensor

from backend.errors import InvalidInput


def karras_sigmas(n: int, sigma_min: float, sigma_max: float, rho: float = 7.0) -> Tensor:
    """Karras et al. (2022) noise levels: n decreasing sigmas from sigma_max to sigma_min, then 0.

    Returns a float64 tensor [n + 1] whose last entry is 0.
    """
    if int(n) != n or n < 1:
        raise InvalidInput("n", f"number of steps must be a positive integer, got {n}")
    if not (0.0 < sigma_min < sigma_max) or not math.isfinite(sigma_max):
        raise InvalidInput("sigma_min", f"need 0 < sigma_min < sigma_max < inf, got {sigma_min}, {sigma_max}")
    if rho <= 0:
        raise InvalidInput("rho", f"rho must be positive, got {rho}")
    ramp = torch.linspace(0.0, 1.0, int(n), dtype=torch.float64) if n > 1 else torch.zeros(1, dtype=torch.float64)
    lo, hi = sigma_min ** (1.0 / rho), sigma_max ** (1.0 / rho)
    sigmas = (hi + ramp * (lo - hi)) ** rho
    return torch.cat([sigmas, torch.zeros(1, dtype=torch.float64)])


class WeightSchedule(Protocol):
    def __call__(self, step: int, num_steps: int, view: int) -> float: ...


ViewProfile = Callable[[int], float] | Sequence[float] | None


def _progress(step: int, num_steps: int) -> float:
    return 0.0 if num_steps <= 1 else step / (num_steps - 1)


def _profile_value(profile: ViewProfile, view: int) -> float:
    if profile is None:
        return 1.0
    if callable(profile):
        return float(profile(view))
    return float(profile[view])


def _check_unit(name: str, value: float) -> None:
    if not (0.0 <= value <= 1.0) or math.isnan(value):
        raise InvalidInput(name, f"must be within [0, 1], got {value}")


@dataclass(frozen=True)
class _Schedule:
    """A base schedule times an optional per-view profile multiplier (both in [0, 1])."""

    base: Callable[[float], float]
    profile: ViewProfile = None
    name: str = "schedule"

    def __call__(self, step: int, num_steps: int, view: int = 0) -> float:
        return self.base(_progress(step, num_steps)) * _profile_value(self.profile, view)

    def __repr__(self) -> str:  # readable in reports
        return self.name


def constant_weight(w: float, profile: ViewProfile = None) -> WeightSchedule:
    """w at every step."""
    _check_unit("w", w)
    return _Schedule(lambda p: w, profile, f"constant({w})")


def linear_weight(w_start: float, w_end: float, profile: ViewProfile = None) -> WeightSchedule:
    """w moves linearly from w_start (first step) to w_end (last step)."""
    _check_unit("w_start", w_start)
    _check_unit("w_end", w_end)
    return _Schedule(lambda p: w_start + (w_end - w_start) * p, profile, f"linear({w_start}->{w_end})")


def cosine_weight(w_start: float = 1.0, w_end: float = 0.0, profile: ViewProfile = None) -> WeightSchedule:
    """w follows half a cosine from w_start to w_end: flat at both ends, fastest in the middle."""
    _check_unit("w_start", w_start)
    _check_unit("w_end", w_end)
    return _Schedule(
        lambda p: w_end + (w_start - w_end) * 0.5 * (1.0 + math.cos(math.pi * p)), profile,
        f"cosine({w_start}->{w_end})",
    )


def logistic_weight(
    s0: float = 0.5, k: float = 20.0, w_min: float = 0.0, w_max: float = 1.0, profile: ViewProfile = None
) -> WeightSchedule:
    """The paper's schedule: w = w_min + (w_max - w_min) * (1 - 1 / (1 + exp(-k * (step / (N - 1) - s0)))).

    Early steps lean on the multi-view model (w near w_max), late steps on the video model.
    """
    _check_unit("w_min", w_min)
    _check_unit("w_max", w_max)
    if w_min > w_max:
        raise InvalidInput("w_min", f"must not exceed w_max, got w_min={w_min} > w_max={w_max}")
    if not math.isfinite(k) or not math.isfinite(s0):
        raise InvalidInput("k", f"k and s0 must be finite, got k={k}, s0={s0}")

    def base(p: float) -> float:
        z = -k * (p - s0)
        # 1 - 1/(1+e^z) = e^z/(1+e^z) = sigmoid(z), written stably
        sig = 1.0 / (1.0 + math.exp(-z)) if z >= 0 else math.exp(z) / (1.0 + math.exp(z))
        return w_min + (w_max - w_min) * sig

    return _Schedule(base, profile, f"logistic(s0={s0}, k={k}, w_min={w_min}, w_max={w_max})")


def angular_view_profile(num_views: int, reference_view: int = 0, floor: float = 0.5) -> Callable[[int], float]:
    """Per-view multiplier for w: ``floor`` at the reference view, 1 at the opposite side of the orbit.

    Views near the reference (where the video model's conditioning frame is most informative)
    lean on the video model; views far from it lean on the multi-view model.
    """
    if num_views < 1:
        raise InvalidInput("num_views", f"must be >= 1, got {num_views}")
    _check_unit("floor", floor)

    def profile(view: int) -> float:
        angle = 2.0 * math.pi * (view - reference_view) / num_views
        return floor + (1.0 - floor) * 0.5 * (1.0 - math.cos(angle))

    return profile


def weights_per_view(weight: WeightSchedule | float, step: int, num_steps: int, num_views: int) -> Tensor:
    """Evaluate a schedule (or a constant) for every view: float64 [V], checked to lie in [0, 1]."""
    if callable(weight):
        values = [float(weight(step, num_steps, v)) for v in range(num_views)]
    else:
        values = [float(weight)] * num_views
    w = torch.tensor(values, dtype=torch.float64)
    if torch.isnan(w).any() or (w < 0).any() or (w > 1).any():
        raise InvalidInput("weight", f"multi-view share must be within [0, 1] at every step and view, got {values} at step {step}")
    return w


def schedule_from_options(name: str, **params) -> WeightSchedule:
    """Build a schedule by name ('logistic', 'constant', 'linear', 'cosine'), e.g. from job options."""
    table = {"logistic": logistic_weight, "constant": constant_weight, "linear": linear_weight, "cosine": cosine_weight}
    if name not in table:
        raise InvalidInput("schedule", f"unknown schedule {name!r}; expected one of {sorted(table)}")
    try:
        return table[name](**params)
    except TypeError as exc:
        raise InvalidInput("schedule_params", f"bad parameters for {name} schedule: {exc}") from None
