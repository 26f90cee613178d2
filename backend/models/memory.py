"""How many sequences fit on the GPU at once, and in which precision to run.

Inference keeps, per frame, every skip connection of the UNet's down path (they wait for the up
path) plus the working set of the largest block: at full resolution a transformer block holds its
input, the residual, the spatial/temporal mix and the GEGLU feed-forward (8x the channels projected,
4x gated), about 20 x C0 x h x w values. With flash / memory-efficient SDPA attention adds no
tokens^2 term; with the math kernel (CPU, or half-precision fallbacks) it adds heads x tokens^2.

    per_sequence_bytes = T * bytes_per_value * (skips + 20 * C0 * h * w [+ heads0 * (h * w)^2])

``max_batch`` divides the free memory (minus a reserve) by that figure with a safety margin.
``measure_sequence_bytes`` checks the estimate on a real GPU (``scripts/bench_sampler.py`` prints
both on CUDA; not yet run on a GPU).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch

from backend.errors import InvalidInput

WORKING_SET_FACTOR = 20  # values per pixel per channel of level 0 live at the peak (see module docstring)
DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
          "float16": torch.float16, "fp16": torch.float16}


@dataclass(frozen=True)
class UNetShape:
    """What activation memory depends on: channels per level, ResBlocks per level, heads at level 0."""

    block_out_channels: tuple[int, ...]
    layers_per_block: int
    heads0: int

    @classmethod
    def of(cls, unet) -> "UNetShape":
        cfg = unet.config
        heads = cfg.num_attention_heads
        heads0 = heads if isinstance(heads, int) else heads[0]
        lpb = cfg.layers_per_block if isinstance(cfg.layers_per_block, int) else max(cfg.layers_per_block)
        return cls(tuple(int(c) for c in cfg.block_out_channels), int(lpb), int(heads0))


def sequence_bytes(shape: UNetShape, seq_len: int, latent_hw: tuple[int, int], bytes_per_value: int,
                   math_attention: bool = False) -> int:
    """Estimated peak activation bytes of one sequence of ``seq_len`` frames in one UNet call."""
    h, w = int(latent_hw[0]), int(latent_hw[1])
    chans = shape.block_out_channels
    skips = chans[0] * h * w  # conv_in
    for level, c in enumerate(chans):
        hl, wl = _down(h, level), _down(w, level)
        skips += shape.layers_per_block * c * hl * wl
        if level < len(chans) - 1:
            skips += c * _down(h, level + 1) * _down(w, level + 1)
    working = WORKING_SET_FACTOR * chans[0] * h * w
    if math_attention:
        working += shape.heads0 * (h * w) ** 2
    return int(seq_len) * int(bytes_per_value) * (skips + working)


def _down(n: int, level: int) -> int:
    for _ in range(level):
        n = (n + 1) // 2
    return n


def max_batch(free_bytes: int, per_sequence_bytes: int, reserve_bytes: int = 0, safety: float = 0.8,
              cap: int | None = None) -> int:
    """Largest number of sequences per network call that fits in ``safety`` of (free - reserve).

    Returns 0 when not even one sequence fits (the caller refuses with a clear message)."""
    if per_sequence_bytes <= 0:
        raise ValueError(f"per_sequence_bytes must be positive, got {per_sequence_bytes}")
    if not 0.0 < safety <= 1.0:
        raise ValueError(f"safety must be in (0, 1], got {safety}")
    usable = (int(free_bytes) - int(reserve_bytes)) * safety
    n = int(usable // per_sequence_bytes) if usable > 0 else 0
    return min(n, cap) if cap is not None else n


def free_bytes(device: str | torch.device) -> int:
    """Free memory on ``device``: the CUDA allocator's view of the GPU, or available host RAM."""
    dev = torch.device(device)
    if dev.type == "cuda":
        free, _total = torch.cuda.mem_get_info(dev)
        # memory PyTorch has cached but not handed out is free for our purposes too
        return int(free + torch.cuda.memory_reserved(dev) - torch.cuda.memory_allocated(dev))
    import psutil

    return int(psutil.virtual_memory().available)


def auto_max_batch(unet, seq_len: int, latent_hw: tuple[int, int], device: str | torch.device,
                   dtype: torch.dtype, reserve_bytes: int = 2 * 2**30, cap: int | None = None,
                   free: int | None = None, what: str = "model") -> int:
    """``max_batch`` for ``unet`` on ``device`` (free memory measured now unless given)."""
    per_seq = sequence_bytes(UNetShape.of(unet), seq_len, latent_hw, torch.finfo(dtype).bits // 8,
                             math_attention=torch.device(device).type != "cuda")
    free = free_bytes(device) if free is None else int(free)
    n = max_batch(free, per_seq, reserve_bytes, cap=cap)
    if n < 1:
        raise InvalidInput("device", f"not enough memory on {device} for the {what}: one sequence of {seq_len} "
                                     f"frames needs about {per_seq / 2**30:.1f} GiB, {free / 2**30:.1f} GiB free "
                                     f"(lower the resolution, or use --dtype bfloat16)")
    return n


def resolve_dtype(name: str | torch.dtype | None, device: str | torch.device) -> torch.dtype:
    """'auto' -> bfloat16 on GPUs that support it, float16 on other GPUs, float32 on CPU."""
    if isinstance(name, torch.dtype):
        return name
    if name is None or name == "auto":
        dev = torch.device(device)
        if dev.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    if name not in DTYPES:
        raise InvalidInput("dtype", f"expected auto or one of {sorted(DTYPES)}, got {name!r}")
    return DTYPES[name]


def measure_sequence_bytes(run: Callable[[int], None], batches: Sequence[int] = (1, 2),
                           device: str | torch.device = "cuda") -> int:
    """Measured peak bytes per extra sequence on CUDA: ``run(n)`` does one network call on n sequences."""
    peaks = []
    for n in batches:
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        run(n)
        torch.cuda.synchronize(device)
        peaks.append(torch.cuda.max_memory_allocated(device) - base)
    return int((peaks[-1] - peaks[0]) / (batches[-1] - batches[0]))
