"""The Diffusion² sampler: fill a views x frames latent matrix by composing two denoisers.

Matrix I[v, f] (v = orbit view, f = animation frame). At every step the video model denoises all
V rows (sequences over frames) and the multi-view model all F columns (sequences over views),
each as one batch; their x0 estimates are blended and an Euler step of the probability-flow ODE
follows. See ``compose_x0`` for the blend itself.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from torch import Tensor

from backend.errors import Cancelled, InvalidInput
from backend.models.base import Cond, SequenceDenoiser, check_compatible
from backend.sampling.schedules import WeightSchedule, weights_per_view

COMBINE_MODES = ("convex", "theorem")


@dataclass(frozen=True)
class VRS:
    """Variance-reducing sampling via interpolated steps: repeat each of the first ``steps`` steps
    ``repeats`` times, re-noising back to the step's starting level in between."""

    steps: int = 10
    repeats: int = 2


@dataclass(frozen=True)
class Known:
    """Entries of the matrix that are given (e.g. the turntable row, a reference clip column).

    mask: bool [V, F]; values: clean latents [V, F, C, h, w] (read only where mask is True).
    """

    mask: Tensor
    values: Tensor


def compose_x0(x0_rows: Tensor, x0_cols: Tensor, w: Tensor | None, x0_single: Tensor | None = None) -> Tensor:
    """Blend the two models' clean estimates for every entry of the matrix. All x0: [V, F, C, h, w].

    convex  (x0_single None): x0 = w[v] * x0_cols + (1 - w[v]) * x0_rows     (w: [V], the paper)
    theorem (x0_single given): x0 = x0_rows + x0_cols - x0_single            (Theorem 3.1: scores add,
        the one-entry marginal counted twice is subtracted once; x0 is affine in the score)
    """
    if x0_single is not None:
        return x0_rows + x0_cols - x0_single
    w = w.to(device=x0_rows.device, dtype=x0_rows.dtype).view(-1, 1, 1, 1, 1)
    return torch.lerp(x0_rows, x0_cols, w)  # = w * x0_cols + (1 - w) * x0_rows, in one pass


def denoise_batched(model: SequenceDenoiser, x: Tensor, sigma: float, conds: Sequence[Cond], max_batch: int | None,
                    name: str, check: bool = True) -> Tensor:
    """Run ``model.denoise`` on x [B, T, C, h, w] in chunks of at most ``max_batch`` sequences.

    check: raise FloatingPointError on NaN/inf in the output (callers that check a combination of
    several outputs at once pass False and call ``check_finite`` themselves)."""
    batch = x.shape[0]
    if max_batch is None or max_batch >= batch:  # one call: no slicing, no concatenation
        out = _denoise_checked(model, x, sigma, conds if isinstance(conds, list) else list(conds), name)
    else:
        out = torch.cat([_denoise_checked(model, x[start:start + max_batch], sigma,
                                          list(conds[start:start + max_batch]), name)
                         for start in range(0, batch, max_batch)])
    if check:
        check_finite(out, sigma, name)
    return out


def _denoise_checked(model: SequenceDenoiser, chunk: Tensor, sigma: float, conds: list, name: str) -> Tensor:
    """One network call on chunk [B, T, C, h, w] at one noise level; the output must keep the input's shape."""
    sig = torch.full((chunk.shape[0],), sigma, dtype=chunk.dtype, device=chunk.device)
    out = model.denoise(chunk, sig, conds)
    if out.shape != chunk.shape:
        raise RuntimeError(f"{name} model returned shape {tuple(out.shape)} for input {tuple(chunk.shape)}")
    return out if out.dtype == chunk.dtype else out.to(chunk.dtype)


def check_finite(out: Tensor, sigma: float, name: str) -> None:
    """Raise FloatingPointError naming the model if ``out`` holds NaN or inf."""
    if not torch.isfinite(out.sum()):  # one reduction; NaN/inf anywhere makes the sum non-finite
        if not torch.isfinite(out).all():
            raise FloatingPointError(f"{name} model returned non-finite x0 at sigma={sigma:.4g}")


@torch.no_grad()
def sample_matrix(
    video: SequenceDenoiser,
    multiview: SequenceDenoiser,
    x_T: Tensor,
    sigmas: Tensor,
    *,
    video_conds: Sequence[Cond],
    multiview_conds: Sequence[Cond],
    weight: WeightSchedule | float,
    combine: str = "convex",
    element: SequenceDenoiser | None = None,
    vrs: VRS | None = None,
    known: Known | None = None,
    max_batch: int | None = None,
    generator: torch.Generator | None = None,
    on_step: Callable[[int, int, Tensor], None] | None = None,
    cancel=None,
) -> Tensor:
    """Sample the V x F latent matrix by composing a video and a multi-view denoiser.

    Args:
        video: denoises rows: sequences over F frames, one per view (batch V).
        multiview: denoises columns: sequences over V views, one per frame (batch F).
        x_T: [V, F, C, h, w] initial noise, already scaled to ``sigmas[0]``.
        sigmas: [N + 1] strictly decreasing noise levels ending at 0 (see ``karras_sigmas``).
        video_conds: V conditions; row v is conditioned on the view-v image at time 0.
        multiview_conds: F conditions; column f on the front-view image at frame f.
        weight: multi-view share w in [0, 1]: a constant or a schedule (step, num_steps, view) -> w.
        combine: "convex" (the paper's blend) or "theorem" (rows + columns - one-entry marginal).
        element: the one-entry marginal model for "theorem" mode, called on every entry as a
            length-1 sequence with its row's condition.
        vrs: variance-reducing interpolated steps, or None.
        known: given entries, held to their noised true values at every step and returned exactly.
        max_batch: at most this many sequences per network call (results do not depend on it).
        generator: random source for VRS re-noising (makes runs reproducible).
        on_step: called as on_step(step, num_steps, x0) after every step, x0 [V, F, C, h, w].
        cancel: an object with ``is_set()``; when set, sampling stops with ``Cancelled``.

    Returns:
        the sampled clean latents [V, F, C, h, w].
    """
    V, F, weights = _validate(video, multiview, x_T, sigmas, video_conds, multiview_conds, weight, combine, element,
                              vrs, known, max_batch)
    sig = [float(s) for s in sigmas]
    num_steps = len(sig) - 1
    x = x_T.clone()  # updated in place from here on: the sampler's own work is a few passes per step
    held = HeldEntries(known, x_T, sig[0]) if known is not None else None
    element_conds = [video_conds[v] for v in range(V) for _ in range(F)] if combine == "theorem" else None

    for i in range(num_steps):
        s_cur, s_next = sig[i], sig[i + 1]
        w = weights[i]
        repeats = vrs.repeats if (vrs is not None and i < vrs.steps) else 1
        for r in range(repeats):
            if cancel is not None and cancel.is_set():
                raise Cancelled(f"sampling cancelled at step {i + 1} of {num_steps}")
            if held is not None:
                held.noised_into(x, s_cur)
            x0 = _x0_at(video, multiview, element, x, s_cur, w, combine, video_conds, multiview_conds, element_conds,
                        max_batch)
            euler_step_(x, x0, s_cur, s_next)
            if r < repeats - 1:  # interpolated step: re-noise back to s_cur and take the step again
                renoise_(x, math.sqrt(max(s_cur**2 - s_next**2, 0.0)), generator)
        if on_step is not None:
            if held is not None:
                held.clean_into(x0)  # x0 is a fresh tensor each sub-step: the preview may keep it
            on_step(i, num_steps, x0)
    if held is not None:
        held.clean_into(x)
    return x


def euler_step_(x: Tensor, x0: Tensor, s_cur: float, s_next: float) -> None:
    """In place: x <- x + (s_next - s_cur) * (x - x0) / s_cur, the probability-flow ODE's Euler step
    (dx/dsigma = (x - x0) / sigma), written as lerp(x0, x, s_next / s_cur) in one pass."""
    torch.lerp(x0, x, s_next / s_cur, out=x)


def renoise_(x: Tensor, scale: float, generator: torch.Generator | None) -> None:
    """In place: x <- x + scale * eps, eps ~ N(0, I) drawn from ``generator`` (VRS's interpolated steps)."""
    eps = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
    x.add_(eps, alpha=scale)


class HeldEntries:
    """The given entries of ``Known`` (mask [A, B], values [A, B, C, h, w]), written into a matrix in place
    (only those entries are touched); shared by ``sample_matrix`` and ``sample_sequences``.

    At noise level sigma a given entry is its true value plus sigma times the initial noise's unit draw
    (x_T / sigma_0), so the given entries follow the same noise path as a plain sampler would.
    """

    def __init__(self, known: Known, x_T: Tensor, sigma0: float):
        mask = known.mask.to(x_T.device)
        self.index = tuple(mask.nonzero(as_tuple=True))  # ([K], [K])
        self.values = known.values.to(device=x_T.device, dtype=x_T.dtype)[self.index]  # [K, C, h, w]
        self.unit_noise = x_T[self.index] / sigma0

    def noised_into(self, x: Tensor, sigma: float) -> None:
        x[self.index] = torch.add(self.values, self.unit_noise, alpha=sigma)

    def clean_into(self, x: Tensor) -> None:
        x[self.index] = self.values


def _x0_at(video, multiview, element, x, sigma, w, combine, video_conds, multiview_conds, element_conds, max_batch):
    """Composed x0 for the whole matrix x [V, F, C, h, w] at one noise level."""
    V, F = x.shape[:2]
    theorem = combine == "theorem"
    need_rows = theorem or bool((w < 1).any())  # w = 1 everywhere: the video model's x0 has weight 0
    need_cols = theorem or bool((w > 0).any())
    # The column-major copy is made first, while x is still in cache from the last Euler step (after a
    # network call it would be read back from memory).
    cols = x.transpose(0, 1).contiguous() if need_cols else None  # [F, V, C, h, w]
    x0_rows = (denoise_batched(video, x, sigma, video_conds, max_batch, "video", check=False) if need_rows
               else torch.zeros_like(x))
    if need_cols:
        x0_cols = denoise_batched(multiview, cols, sigma, multiview_conds, max_batch, "multi-view",
                                  check=False).transpose(0, 1)
        del cols  # freed before the blend allocates x0
    else:
        x0_cols = torch.zeros_like(x)
    parts = [(x0_rows, "video"), (x0_cols, "multi-view")]
    if not theorem:
        x0 = compose_x0(x0_rows, x0_cols, w)
    else:
        singles = x.reshape(V * F, 1, *x.shape[2:])
        x0_single = denoise_batched(element, singles, sigma, element_conds, max_batch, "element",
                                    check=False).reshape(x.shape)
        parts.append((x0_single, "element"))
        x0 = compose_x0(x0_rows, x0_cols, None, x0_single)
    # Finiteness is checked once, on the composed x0 (NaN/inf in any part reaches it, even at weight 0 or
    # 1, since lerp computes a + w * (b - a)); only when it fails are the parts checked to name the model.
    if not torch.isfinite(x0.sum()):
        for part, name in parts:
            check_finite(part, sigma, name)
        raise FloatingPointError(f"the composed x0 overflowed at sigma={sigma:.4g} (each model's x0 was finite)")
    return x0


def _check_conds(name: str, conds, expected: int) -> None:
    if conds is None or len(conds) != expected:
        got = "None" if conds is None else len(conds)
        raise InvalidInput(name, f"expected {expected} conditions (one per sequence), got {got}")
    for j, c in enumerate(conds):
        if not isinstance(c, Cond):
            raise InvalidInput(f"{name}[{j}]", f"expected a Cond, got {type(c).__name__}")
        for fname in ("latent", "image", "elevation", "azimuth"):
            t = getattr(c, fname)
            if t is not None and torch.is_tensor(t) and t.is_floating_point() and not torch.isfinite(t).all():
                raise InvalidInput(f"{name}[{j}].{fname}", "contains NaN or infinite values")


def _validate(video, multiview, x_T, sigmas, video_conds, multiview_conds, weight, combine, element, vrs, known,
              max_batch) -> tuple[int, int]:
    if not torch.is_tensor(x_T) or x_T.dim() != 5:
        shape = tuple(x_T.shape) if torch.is_tensor(x_T) else type(x_T).__name__
        raise InvalidInput("x_T", f"expected a tensor [V, F, C, h, w], got {shape}")
    if not x_T.is_floating_point() or not torch.isfinite(x_T).all():
        raise InvalidInput("x_T", "must be a floating-point tensor with finite values (found NaN/inf or integers)")
    V, F = int(x_T.shape[0]), int(x_T.shape[1])
    if V < 1 or F < 1:
        raise InvalidInput("x_T", f"need at least one view and one frame, got V={V}, F={F}")
    if combine not in COMBINE_MODES:
        raise InvalidInput("combine", f"expected one of {COMBINE_MODES}, got {combine!r}")
    if combine == "theorem" and element is None:
        raise InvalidInput("element", "combine='theorem' needs the one-entry marginal model passed as element=")
    check_compatible(video, multiview, element if combine == "theorem" else None)
    if tuple(x_T.shape[2:]) != tuple(video.latent_shape):
        raise InvalidInput("x_T", f"latent shape must be {tuple(video.latent_shape)} (C, h, w), got {tuple(x_T.shape[2:])}")
    if not torch.is_tensor(sigmas) or sigmas.dim() != 1 or sigmas.numel() < 2:
        raise InvalidInput("sigmas", "expected a 1-D tensor of at least 2 noise levels ending at 0")
    s = sigmas.detach().double().cpu()
    if not torch.isfinite(s).all() or (s < 0).any():
        raise InvalidInput("sigmas", "noise levels must be finite and non-negative")
    if not (s[1:] < s[:-1]).all():
        raise InvalidInput("sigmas", f"noise levels must be strictly decreasing, got {s.tolist()}")
    _check_conds("video_conds", video_conds, V)
    _check_conds("multiview_conds", multiview_conds, F)
    num_steps = s.numel() - 1
    weights = [None] * num_steps
    if combine == "convex":
        if not callable(weight) and not isinstance(weight, (int, float)):
            raise InvalidInput("weight", f"expected a number in [0, 1] or a schedule, got {type(weight).__name__}")
        weights = [weights_per_view(weight, i, num_steps, V) for i in range(num_steps)]
    if vrs is not None and (int(vrs.steps) < 0 or int(vrs.repeats) < 1):
        raise InvalidInput("vrs", f"need steps >= 0 and repeats >= 1, got steps={vrs.steps}, repeats={vrs.repeats}")
    if max_batch is not None and (int(max_batch) != max_batch or max_batch < 1):
        raise InvalidInput("max_batch", f"must be a positive integer or None, got {max_batch}")
    if known is not None:
        if tuple(known.mask.shape) != (V, F) or known.mask.dtype != torch.bool:
            raise InvalidInput("known.mask", f"expected a bool tensor [{V}, {F}], got {known.mask.dtype} {tuple(known.mask.shape)}")
        if tuple(known.values.shape) != tuple(x_T.shape):
            raise InvalidInput("known.values", f"expected shape {tuple(x_T.shape)}, got {tuple(known.values.shape)}")
        if not torch.isfinite(known.values[known.mask]).all():
            raise InvalidInput("known.values", "given entries contain NaN or infinite values")
    for name, model in (("video", video), ("multiview", multiview)):
        length, conds = (F, video_conds) if name == "video" else (V, multiview_conds)
        check = getattr(model, "check_sequence", None)
        if check is not None:
            check(length, conds)
    return V, F, weights
