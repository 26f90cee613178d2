#!/usr/bin/env python
"""Sampler overhead and memory scaling with cheap dummy models (issue: foundation).

Overhead: the share of wall time spent in ``sample_matrix`` itself (blending, Euler steps, checks,
batching) rather than inside the models' ``denoise`` calls, at V = 8, F = 8 on CPU, measured side by
side in one run. Memory: peak RSS growth while sampling, for growing V*F (one subprocess per size),
with the per-entry cost and a linear fit.

    .venv/bin/python scripts/bench_compose_overhead.py [--threads 1] [--omp-wait passive]

OpenMP's wait policy decides the figure more than anything in the sampler, so it is a choice here and
printed with the load average. The default, ``--omp-wait default``, leaves OpenMP's own policy (spin a
little, then sleep): what a user's process gets, and right on a quiet machine. ``--omp-wait passive``
suits a shared, loaded machine, where threads that spin-wait between tiny ops fight other processes for
the cores and made every op up to 100x slower; on a quiet machine passive waiting makes every small op
after a network call pay for waking a sleeping thread (hundreds of microseconds on an idle VM).
"""

from __future__ import annotations

import os
import sys

_OMP_WAIT = sys.argv[sys.argv.index("--omp-wait") + 1] if "--omp-wait" in sys.argv[:-1] else "default"
if _OMP_WAIT == "passive":
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch starts OpenMP
elif _OMP_WAIT == "default":
    os.environ.pop("OMP_WAIT_POLICY", None)

import argparse
import json
import resource
import subprocess
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from torch import nn  # noqa: E402

from backend.models.base import Cond  # noqa: E402
from backend.sampling.compose import VRS, sample_matrix  # noqa: E402
from backend.sampling.schedules import karras_sigmas, logistic_weight  # noqa: E402


class DummyConvDenoiser(nn.Module):
    """A cheap stand-in with a tiny network's cost: two 3x3 convs per frame. Times its own calls."""

    def __init__(self, channels=4, hidden=64, latent_hw=16):
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(channels, hidden, 3, padding=1), nn.SiLU(), nn.Conv2d(hidden, channels, 3, padding=1))
        self.seq_len = None
        self.latent_shape = (channels, latent_hw, latent_hw)
        self.latent_space = "dummy"
        self.seconds = 0.0

    def denoise(self, x, sigma, conds):
        t = time.perf_counter()  # everything from here to the return is the model's cost
        x0 = self._forward(x, sigma)
        self.seconds += time.perf_counter() - t
        return x0

    @torch.no_grad()
    def _forward(self, x, sigma):
        B = x.shape[0]
        c_skip = (1 / (sigma**2 + 1)).view(B, 1, 1, 1, 1)
        c_in = (1 / (sigma**2 + 1).sqrt()).view(B, 1, 1, 1, 1)
        out = self.net((x * c_in).flatten(0, 1)).view_as(x)
        return c_skip * x + out


class ScaleDenoiser:
    """A model with no cost and no activations (x0 = x / (1 + sigma^2)): isolates the sampler itself."""

    seq_len = None
    latent_space = "dummy"

    def __init__(self, latent_hw=16):
        self.latent_shape = (4, latent_hw, latent_hw)
        self.seconds = 0.0

    def denoise(self, x, sigma, conds):
        return x / (1 + sigma.view(-1, 1, 1, 1, 1) ** 2)


def run_once(V: int, F: int, steps: int, latent_hw: int, seed: int = 0, kind: str = "conv") -> dict:
    torch.manual_seed(seed)
    make = DummyConvDenoiser if kind == "conv" else ScaleDenoiser
    video, mv = make(latent_hw=latent_hw), make(latent_hw=latent_hw)
    sigmas = karras_sigmas(steps, 0.002, 80.0)
    x_T = torch.randn(V, F, 4, latent_hw, latent_hw) * float(sigmas[0])
    vc = [Cond(latent=torch.zeros(4, latent_hw, latent_hw)) for _ in range(V)]
    mc = [Cond(latent=torch.zeros(4, latent_hw, latent_hw)) for _ in range(F)]
    base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t = time.perf_counter()
    sample_matrix(video, mv, x_T, sigmas, video_conds=vc, multiview_conds=mc, weight=logistic_weight(),
                  vrs=VRS(), generator=torch.Generator().manual_seed(seed))
    total = time.perf_counter() - t
    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    model = video.seconds + mv.seconds
    return {"V": V, "F": F, "total_s": total, "model_s": model, "overhead_share": (total - model) / total,
            "rss_growth_kb": peak_rss - base_rss}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=25)
    ap.add_argument("--threads", type=int, default=2, help="torch intra-op threads (default 2 = this machine's cores)")
    ap.add_argument("--repeats", type=int, default=9, help="overhead runs (the median is reported)")
    ap.add_argument("--omp-wait", choices=("passive", "default"), default="default",
                    help="OpenMP wait policy: passive (shared machine) or OpenMP's default (quiet machine)")
    ap.add_argument("--child", type=str, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.child:  # memory measurement in a fresh process
        V, F, hw = (int(v) for v in args.child.split(","))
        print(json.dumps(run_once(V, F, 3, hw, kind="scale")))
        return

    run_once(8, 8, 2, 16)  # warm-up
    print(f"torch threads {args.threads}, OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', '(OpenMP default)')}, "
          f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())} on {os.cpu_count()} CPUs")
    print(f"overhead at V=8, F=8, latent 4x16x16, {args.steps} steps + VRS (10 x 2), dummy models of two 3x3 convs "
          f"(64 hidden channels):")
    shares, bare = [], []
    for rep in range(args.repeats):
        r = run_once(8, 8, args.steps, 16, seed=rep)
        shares.append(r["overhead_share"])
        bare.append(run_once(8, 8, args.steps, 16, seed=rep, kind="scale")["total_s"])
        print(f"  run {rep}: total {r['total_s']:.3f} s, inside models {r['model_s']:.3f} s, "
              f"sampler overhead {100 * r['overhead_share']:.2f} %; same run with zero-cost models {bare[-1]:.4f} s")
    med = sorted(shares)[len(shares) // 2]
    print(f"  median sampler overhead share: {100 * med:.2f} % (target <= 5 %); "
          f"zero-cost total per sub-step: {1000 * sorted(bare)[len(bare) // 2] / (args.steps + 10):.3f} ms")

    print("\npeak memory growth while sampling (least of 3 fresh processes per size; zero-cost models, so this is the sampler's "
          "own memory; latent 4x64x64 = 64 KiB per entry, 3 steps):")
    rows = []
    for V, F in ((4, 4), (4, 8), (8, 8), (8, 16), (16, 16), (16, 32), (32, 32)):
        runs = []
        for _ in range(3):  # the least of three fresh processes: allocator arenas add transient, upward noise
            out = subprocess.run([sys.executable, __file__, "--child", f"{V},{F},64", "--omp-wait", args.omp_wait], capture_output=True, text=True,
                                 check=True)
            runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
        r = min(runs, key=lambda x: x["rss_growth_kb"])
        rows.append((V * F, r["rss_growth_kb"] / 1024))
        print(f"  V*F = {V * F:4d}: +{r['rss_growth_kb'] / 1024:8.1f} MiB  ({r['rss_growth_kb'] / (V * F):7.1f} KiB per entry)")
    n = torch.tensor([r[0] for r in rows], dtype=torch.float64)
    m = torch.tensor([r[1] for r in rows], dtype=torch.float64)
    A = torch.stack([n, torch.ones_like(n)], 1)
    coef = torch.linalg.lstsq(A, m[:, None]).solution.squeeze()
    pred = A @ coef
    r2 = 1 - float(((m - pred) ** 2).sum() / ((m - m.mean()) ** 2).sum())
    entry = 4 * 64 * 64 * 4 / 1024
    print(f"  linear fit: {coef[0] * 1024:.1f} KiB per entry (one latent = {entry:.0f} KiB) + {coef[1]:.1f} MiB; R^2 = {r2:.4f}")
    # Below a few tens of MiB the process reuses memory it already holds, so small sizes read ~0: compare
    # the per-entry cost of the largest size with that of V*F = 256 (both well above that floor).
    print(f"  per-entry growth at V*F = {rows[-1][0]} / at V*F = {rows[4][0]}: "
          f"{(rows[-1][1] / rows[-1][0]) / (rows[4][1] / rows[4][0]):.2f} (1.00 = exactly linear)")


if __name__ == "__main__":
    main()
