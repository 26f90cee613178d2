#!/usr/bin/env python
"""Cost of the built-in multi-view model's 3-D prior at sampling time, measured side by side in one run.

    python scripts/bench_lift_prior.py [--threads 2] [--batch 16] [--repeats 7]

Prints the median time of one ``denoise`` call of the shipped multi-view model (its default guidance) on a
batch of orbits: re-rendering the prior in every call, and with the denoiser's per-condition cache (what
sampling does: every step after the first reuses the renders), plus the lift's share of a network forward.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from backend.models.base import Cond  # noqa: E402
from backend.models.builtin import load_builtin  # noqa: E402


def median_time(fn, repeats: int) -> float:
    fn()
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return sorted(ts)[repeats // 2]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=7)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    ms = load_builtin()
    den = ms.multiview
    if den.net.lift is None:
        raise SystemExit("the shipped multi-view model has no 3-D prior")
    B, V = args.batch, den.seq_len
    az = torch.deg2rad((360.0 / V) * torch.arange(V).float())
    conds = [Cond(latent=torch.randn(4, 16, 16), elevation=torch.full((V,), 0.2), azimuth=az) for _ in range(B)]
    x, sigma = torch.randn(B, V, 4, 16, 16), torch.full((B,), 1.0)
    call = lambda: den.denoise(x, sigma, conds)  # noqa: E731
    cached = median_time(call, args.repeats)
    den.PRIOR_CACHE = 0  # every call misses
    den._prior_cache.clear()
    uncached = median_time(call, args.repeats)
    cond = torch.stack([c.latent for c in conds])
    el, azb = torch.full((B, V), 0.2), az.expand(B, V)
    with torch.no_grad():
        fwd = median_time(lambda: den.net(x, torch.zeros(B), cond, torch.ones(B), elevation=el, azimuth=azb), args.repeats)
        lift = median_time(lambda: den.net.lift(cond, el, azb), args.repeats)
    print(f"torch {torch.__version__}, threads {args.threads}, {B} orbits x {V} views, guidance {den.guidance:g}")
    print(f"network forward (conditioned only)        {fwd * 1e3:7.1f} ms, of which the lift {lift * 1e3:.1f} ms ({100 * lift / fwd:.1f} %)")
    print(f"denoise call, prior rendered every call   {uncached * 1e3:7.1f} ms")
    print(f"denoise call, prior cached per condition  {cached * 1e3:7.1f} ms")
    print(f"ratio cached / uncached: {cached / uncached:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
