"""Plain sampling of independent sequences with one denoiser (no composition).

Used for the reference video (column 0 generated from the front render), the turntable row in
``image`` mode, and as the baseline the composed sampler reduces to at w = 0 or w = 1.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import torch
from torch import Tensor

from backend.errors import Cancelled, InvalidInput
from backend.models.base import Cond, SequenceDenoiser
from backend.sampling.compose import VRS, HeldEntries, Known, denoise_batched, euler_step_, renoise_


@torch.no_grad()
def sample_sequences(
    model: SequenceDenoiser,
    x_T: Tensor,
    sigmas: Tensor,
    *,
    conds: Sequence[Cond],
    known_mask: Tensor | None = None,
    known_values: Tensor | None = None,
    vrs: VRS | None = None,
    max_batch: int | None = None,
    generator: torch.Generator | None = None,
    on_step: Callable[[int, int, Tensor], None] | None = None,
    cancel=None,
) -> Tensor:
    """Euler sampling of B sequences x_T [B, T, C, h, w] (scaled to sigmas[0]) with one model.

    known_mask [B, T] bool / known_values [B, T, C, h, w]: entries held to their noised values and
    returned exactly (e.g. the conditioning frame). Returns [B, T, C, h, w].
    """
    if not torch.is_tensor(x_T) or x_T.dim() != 5:
        raise InvalidInput("x_T", "expected a tensor [B, T, C, h, w]")
    if not torch.isfinite(x_T).all():
        raise InvalidInput("x_T", "contains NaN or infinite values")
    if len(conds) != x_T.shape[0]:
        raise InvalidInput("conds", f"expected {x_T.shape[0]} conditions, got {len(conds)}")
    s = sigmas.detach().double().cpu()
    if s.dim() != 1 or s.numel() < 2 or not (s[1:] < s[:-1]).all() or (s < 0).any():
        raise InvalidInput("sigmas", "expected a strictly decreasing 1-D tensor of noise levels ending at 0")
    check = getattr(model, "check_sequence", None)
    if check is not None:
        check(x_T.shape[1], conds)
    sig = [float(v) for v in s]
    num_steps = len(sig) - 1
    x = x_T.clone()
    held = HeldEntries(Known(known_mask, known_values), x_T, sig[0]) if known_mask is not None else None
    for i in range(num_steps):
        repeats = vrs.repeats if (vrs is not None and i < vrs.steps) else 1
        for r in range(repeats):
            if cancel is not None and cancel.is_set():
                raise Cancelled(f"sampling cancelled at step {i + 1} of {num_steps}")
            if held is not None:
                held.noised_into(x, sig[i])
            x0 = denoise_batched(model, x, sig[i], conds, max_batch, "sequence")
            euler_step_(x, x0, sig[i], sig[i + 1])
            if r < repeats - 1:
                renoise_(x, math.sqrt(max(sig[i] ** 2 - sig[i + 1] ** 2, 0.0)), generator)
        if on_step is not None:
            if held is not None:  # the preview shows the given entries as given (on a copy: x0 is the model's)
                x0 = x0.clone()
                held.clean_into(x0)
            on_step(i, num_steps, x0)
    if held is not None:
        held.clean_into(x)
    return x
