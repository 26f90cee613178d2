"""Rows and columns sharded over 2 processes (gloo, CPU): the composed sampler's result equals the
single-process result."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from backend.sampling.distributed import shard_range  # noqa: E402

V, F, P = 5, 3, 6  # 5 rows (odd: uneven shares), 3 columns (one rank gets 1), 6 pixels


def _problem():
    from backend.models.base import Cond
    from backend.models.gaussian import GaussianDenoiser, ar1_correlation, circular_correlation
    from backend.sampling.schedules import karras_sigmas, logistic_weight

    video = GaussianDenoiser(ar1_correlation(F, 0.8), F, (1, 1, P))
    multiview = GaussianDenoiser(circular_correlation(V, 0.6), V, (1, 1, P))
    sigmas = karras_sigmas(6, 0.01, 20.0)
    x_T = torch.randn(V, F, 1, 1, P, generator=torch.Generator().manual_seed(3), dtype=torch.float64) * sigmas[0]
    kwargs = dict(video_conds=[Cond() for _ in range(V)], multiview_conds=[Cond() for _ in range(F)],
                  weight=logistic_weight())
    return video, multiview, x_T, sigmas, kwargs


def _sample(video, multiview):
    from backend.sampling.compose import VRS, sample_matrix

    _, _, x_T, sigmas, kwargs = _problem()
    return sample_matrix(video, multiview, x_T, sigmas, vrs=VRS(steps=3, repeats=2),
                         generator=torch.Generator().manual_seed(11), **kwargs)


def _worker(rank: int, world: int, init_file: str, out_dir: str) -> None:
    from backend.sampling.distributed import ShardedDenoiser

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        video, multiview, *_ = _problem()
        result = _sample(ShardedDenoiser(video), ShardedDenoiser(multiview))
        torch.save({"x": result, "video_sequences": video.sequences, "mv_sequences": multiview.sequences},
                   f"{out_dir}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_shard_range_splits_evenly_and_covers_everything():
    for n in range(0, 12):
        for world in (1, 2, 3, 5):
            spans = [shard_range(n, world, r) for r in range(world)]
            assert spans[0][0] == 0 and spans[-1][1] == n
            assert all(spans[r][1] == spans[r + 1][0] for r in range(world - 1))
            sizes = [hi - lo for lo, hi in spans]
            assert max(sizes) - min(sizes) <= 1
    with pytest.raises(ValueError):
        shard_range(4, 2, 2)


@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed is not available in this build")
def test_two_gloo_processes_reproduce_the_single_process_matrix(tmp_path):
    video, multiview, *_ = _problem()
    single = _sample(video, multiview)
    mp.spawn(_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    r0, r1 = torch.load(tmp_path / "rank0.pt"), torch.load(tmp_path / "rank1.pt")
    torch.testing.assert_close(r0["x"], single, rtol=0, atol=1e-12)
    torch.testing.assert_close(r1["x"], single, rtol=0, atol=1e-12)
    # the work was split: each rank denoised only its share of the rows and of the columns
    assert r0["video_sequences"] + r1["video_sequences"] == video.sequences
    assert r0["mv_sequences"] + r1["mv_sequences"] == multiview.sequences
    assert 0 < r1["video_sequences"] < video.sequences
