#!/usr/bin/env python
"""Speed of the 4D Gaussian fit's optimisation loop, this tree against a baseline revision, side by
side in one run (issue 4: the CPU fit runs on a time budget, so every millisecond per iteration is
iterations the fit gets).

    python scripts/bench_fit_speed.py --baseline-rev 41d0c9c                      # all four assets
    python scripts/bench_fit_speed.py --baseline-rev 41d0c9c --asset Fox --iterations 300 --rounds 2

The baseline's ``backend/`` and ``protocol/`` are unpacked with ``git archive`` into a temporary
folder. Each fit runs in its own process (one torch thread by default, fixed iteration budget, no
time budget, seed 0), the two trees alternate, and the loop's time per iteration is measured between
the first and last progress reports (the initialisation, hulls and tracking, is timed apart). The
last column says whether both trees reached the same loss: with a change that keeps the arithmetic,
the fits are identical and only the time differs.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_recon import ASSETS  # noqa: E402  (this process only lists them; each fit imports its own tree)

ROOT = Path(__file__).resolve().parents[1]

CHILD = r"""
import json, os, sys, time
tree, asset, iterations, threads = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
sys.path.insert(0, tree)
sys.path.insert(1, os.path.join(sys.argv[5], "scripts"))
import numpy as np, torch
torch.set_num_threads(threads)
from backend.recon import fit  # before bench_recon, which puts this checkout's root on sys.path
import bench_recon as B
assert os.path.realpath(sys.modules["backend"].__path__[0]).startswith(os.path.realpath(tree))
d = dict(np.load(B.assets_root() / "animated" / "gt" / f"{asset}_v16_f8_64.npz"))
train = np.arange(0, d["images"].shape[0], 2)
marks = []
t0 = time.perf_counter()
r = fit(d["images"][train][..., :3], d["K"][train], d["w2c"][train], B.clip_times(d), iterations=iterations,
        seed=0, on_progress=lambda i, n, loss: marks.append((i, time.perf_counter())))
total = time.perf_counter() - t0
(i0, t_first), (i1, t_last) = marks[0], marks[-1]
print(json.dumps({"ms_per_it": 1000 * (t_last - t_first) / max(i1 - i0, 1), "init_s": t_first - t0, "total_s": total,
                  "iterations": r.summary["iterations"], "loss": r.summary["loss_history"][-1][1],
                  "gaussians": r.summary["num_gaussians"]}))
"""


def run_child(tree: Path, asset: str, iterations: int, threads: int) -> dict:
    env = {**os.environ, "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "PASSIVE")}
    out = subprocess.run([sys.executable, "-c", CHILD, str(tree), asset, str(iterations), str(threads), str(ROOT)],
                         capture_output=True, text=True, env=env, check=False)
    if out.returncode != 0:
        raise SystemExit(f"fit of {asset} in {tree} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def unpack(rev: str, into: Path) -> Path:
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", rev, "backend", "protocol"], capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive.stdout, check=True)
    return into


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--baseline-rev", required=True, help="git revision to compare against (e.g. 41d0c9c)")
    ap.add_argument("--asset", action="append", choices=ASSETS, help="only these (repeatable)")
    ap.add_argument("--iterations", type=int, default=200, help="fixed iteration budget per fit (default 200)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads per fit (default 1)")
    ap.add_argument("--rounds", type=int, default=1, help="fits per tree and asset (default 1; the median is kept)")
    args = ap.parse_args(argv)
    if args.iterations < 60:
        raise SystemExit("--iterations must be at least 60 (the loop is timed between progress reports every 25)")
    rows = []
    with tempfile.TemporaryDirectory(prefix="dsquare-baseline-") as tmp:
        base = unpack(args.baseline_rev, Path(tmp))
        print(f"baseline {args.baseline_rev} vs this tree ({ROOT}), {args.iterations} iterations, "
              f"{args.threads} thread(s), {args.rounds} round(s), load {os.getloadavg()[0]:.1f}", flush=True)
        for asset in args.asset or ASSETS:
            runs = {"base": [], "this": []}
            for k in range(args.rounds):
                order = (("base", base), ("this", ROOT)) if k % 2 == 0 else (("this", ROOT), ("base", base))
                for name, tree in order:
                    t = time.perf_counter()
                    runs[name].append(run_child(tree, asset, args.iterations, args.threads))
                    r = runs[name][-1]
                    print(f"  {asset:18s} {name}: {r['ms_per_it']:.0f} ms/it, init {r['init_s']:.1f} s, "
                          f"loss {r['loss']:.6f} ({time.perf_counter() - t:.0f} s)", flush=True)
            med = {n: sorted(v, key=lambda r: r["ms_per_it"])[len(v) // 2] for n, v in runs.items()}
            rows.append((asset, med["base"], med["this"]))
    print("\n| asset | baseline ms/iteration | this tree ms/iteration | speed-up | same final loss |")
    print("|---|---:|---:|---:|---|")
    for asset, b, t in rows:
        same = "yes" if b["loss"] == t["loss"] else f"no ({b['loss']:.6f} vs {t['loss']:.6f})"
        print(f"| {asset} | {b['ms_per_it']:.0f} | {t['ms_per_it']:.0f} | {b['ms_per_it'] / t['ms_per_it']:.2f}× | {same} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
