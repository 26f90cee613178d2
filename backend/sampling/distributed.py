"""Rows and columns sharded over processes with ``torch.distributed``, without touching the sampler.

``ShardedDenoiser`` wraps any ``SequenceDenoiser``: every process runs the same ``sample_matrix``
(same inputs, same seeded generator), and at each network call each rank denoises its contiguous
share of the batch of sequences (rows for the video model, columns for the multi-view model), then
all ranks all-gather the x0 estimates, so every rank holds the full matrix after each step. The
result equals the single-process result (sequences are denoised independently).

Usage on N GPUs (``torchrun --nproc-per-node N script.py``)::

    dist.init_process_group("nccl"); torch.cuda.set_device(rank)
    models = load_model_set("svd-sv3d", device=f"cuda:{rank}", checkpoints=DIR)
    video, multiview = ShardedDenoiser(models.video), ShardedDenoiser(models.multiview)
    x = sample_matrix(video, multiview, x_T, sigmas, ..., generator=torch.Generator().manual_seed(seed))
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.distributed as dist
from torch import Tensor

from backend.models.base import Cond, SequenceDenoiser


def shard_range(n: int, world: int, rank: int) -> tuple[int, int]:
    """Contiguous balanced share [lo, hi) of n items for ``rank`` of ``world`` (first ranks take the extra)."""
    if world < 1 or not 0 <= rank < world:
        raise ValueError(f"rank {rank} outside a world of {world}")
    base, extra = divmod(int(n), int(world))
    lo = rank * base + min(rank, extra)
    return lo, lo + base + (1 if rank < extra else 0)


class ShardedDenoiser:
    """A ``SequenceDenoiser`` that splits every batch over the ranks of ``group`` and all-gathers x0.

    inner: the per-process denoiser (on this rank's device). group: a process group (default: world).
    """

    def __init__(self, inner: SequenceDenoiser, group=None):
        if not dist.is_available() or not dist.is_initialized():
            raise RuntimeError("ShardedDenoiser needs torch.distributed initialised (init_process_group)")
        self.inner = inner
        self.group = group
        self.seq_len = inner.seq_len
        self.latent_shape = tuple(inner.latent_shape)
        self.latent_space = inner.latent_space
        check = getattr(inner, "check_sequence", None)
        if check is not None:
            self.check_sequence = check

    @property
    def world(self) -> int:
        return dist.get_world_size(self.group)

    @property
    def rank(self) -> int:
        return dist.get_rank(self.group)

    def denoise(self, x: Tensor, sigma: Tensor, conds: Sequence[Cond]) -> Tensor:
        """x [B, T, C, h, w] -> x0 [B, T, C, h, w]; this rank computes only its share of the B sequences."""
        B, world = int(x.shape[0]), self.world
        lo, hi = shard_range(B, world, self.rank)
        if hi > lo:
            local = self.inner.denoise(x[lo:hi], sigma[lo:hi], list(conds[lo:hi]))
        else:
            local = x[:0]
        size = math.ceil(B / world)
        padded = torch.zeros((size, *x.shape[1:]), dtype=x.dtype, device=x.device)
        padded[: hi - lo] = local.to(device=x.device, dtype=x.dtype)
        gathered = [torch.empty_like(padded) for _ in range(world)]
        dist.all_gather(gathered, padded, group=self.group)
        parts = []
        for r, part in enumerate(gathered):
            r_lo, r_hi = shard_range(B, world, r)
            parts.append(part[: r_hi - r_lo])
        return torch.cat(parts)
