#!/usr/bin/env python
"""Benchmark for issue 4 (4D Gaussian reconstruction): every target in one run.

For each ground-truth asset (``<assets>/animated/gt/NAME_v16_f8_RES.npz``): fit on the 8 even views x
8 frames, then measure on the 8 odd (unseen, interleaved) views at the same frames

* unseen-view PSNR / SSIM (targets at 64²: mean PSNR >= 30 dB, every asset >= 27 dB, SSIM >= 0.95),
* the trivial baseline (average of the two neighbouring training views) and the margin over it (>= 5 dB),
* motion transfer: ``displacement`` at the true frame-0 vertices vs the true vertices of every frame,
  mean error / error of leaving the mesh still (target <= 0.4 on every asset),
* robustness: the same fit on a corrupted matrix (every image independently shifted by up to 2 px
  and colour-jittered by 5 %) and the drop in unseen-view PSNR (target <= 2 dB),
* wall time (target <= 180 s per fit on 2 CPU cores) and process CPU time, with the machine load.

    python scripts/bench_recon.py                       # all four assets, RGB input (as the pipeline)
    python scripts/bench_recon.py --asset Fox --no-robust
    python scripts/bench_recon.py --alpha                # also give the fit the coverage alpha
    python scripts/bench_recon.py --res 256 --device cuda  # GPU (gsplat) at 256²
    python scripts/bench_recon.py --gt /tmp/Fox_v42_f25_576.npz --device cuda --time-budget 55  # paper size
    # ablation at a fixed iteration budget (load-independent), one thread, per-frame figures:
    python scripts/bench_recon.py --asset Fox --threads 1 --time-budget 0 --iterations 600 \
        --options '{"corrections": false}' --per-frame

Every fit gets a time budget (default 170 s, so the 3-minute target holds by construction: the fit's
schedule adapts to the time it has); ``--time-budget 0`` runs the iteration budget alone.

The fit gets RGB on white only by default (what the pipeline passes); ``--alpha`` adds coverage.

OpenMP threads wait passively (``OMP_WAIT_POLICY=PASSIVE`` unless set): on a shared machine spinning
threads fight other processes for the cores and measure the load rather than the fit. The load
average is printed before and after every fit; the time budget makes a loaded machine fit fewer
iterations (the summary's ``iterations`` says how many).
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch starts OpenMP

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from backend.recon import fit  # noqa: E402
from backend.recon.losses import psnr, ssim  # noqa: E402

ASSETS = ("Fox", "RiggedSimple", "AnimatedMorphCube", "RiggedFigure")


def assets_root() -> Path:
    env = os.environ.get("DSQUARE_ASSETS")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "shared" / "assets"


def clip_times(d) -> np.ndarray:
    """Frame times in [0, 1] over the clip (0 = first rendered frame)."""
    start, end = (float(x) for x in d["clip_frame_range"])
    return (np.asarray(d["frames"], dtype=np.float64) - start) / max(end - start, 1e-9)


def neighbour_baseline(images: np.ndarray, test: np.ndarray) -> np.ndarray:
    """Average of the two neighbouring (training) views of each test view: [Vt, F, H, W, 3] in [0, 1]."""
    V = images.shape[0]
    rgb = images[..., :3].astype(np.float32) / 255.0
    return np.stack([0.5 * (rgb[(v - 1) % V] + rgb[(v + 1) % V]) for v in test])


def shift_image(img: np.ndarray, dx: float, dy: float, fill: float) -> np.ndarray:
    """Bilinear sub-pixel shift of [H, W, C] float by (dx, dy) pixels, filling with ``fill``."""
    H, W = img.shape[:2]
    ys, xs = np.mgrid[0:H, 0:W].astype(np.float64)
    sx, sy = xs - dx, ys - dy
    x0, y0 = np.floor(sx).astype(int), np.floor(sy).astype(int)
    fx, fy = (sx - x0)[..., None], (sy - y0)[..., None]

    def at(yy, xx):
        ok = (xx >= 0) & (xx < W) & (yy >= 0) & (yy < H)
        out = np.full(img.shape, fill, dtype=np.float64)
        out[ok] = img[yy[ok], xx[ok]]
        return out

    return ((1 - fy) * ((1 - fx) * at(y0, x0) + fx * at(y0, x0 + 1))
            + fy * ((1 - fx) * at(y0 + 1, x0) + fx * at(y0 + 1, x0 + 1)))


def corrupt(images: np.ndarray, seed: int, max_shift: float = 2.0, jitter: float = 0.05) -> np.ndarray:
    """What a generator does: every image independently shifted by up to ``max_shift`` px (uniform
    in the disc) and colour-jittered (per-channel gain in 1 +- ``jitter``, applied to the whole RGB)."""
    rng = np.random.default_rng(seed)
    out = np.empty_like(images)
    V, F = images.shape[:2]
    for v in range(V):
        for f in range(F):
            r, a = max_shift * np.sqrt(rng.uniform()), rng.uniform(0, 2 * np.pi)
            img = images[v, f].astype(np.float64) / 255.0
            fill = np.ones(img.shape[-1])
            if img.shape[-1] == 4:
                fill[3] = 0.0
            img = shift_image(img, r * np.cos(a), r * np.sin(a), fill)
            img[..., :3] = img[..., :3] * rng.uniform(1 - jitter, 1 + jitter, size=3)
            out[v, f] = np.clip(np.round(img * 255), 0, 255).astype(np.uint8)
    return out


def evaluate(result, d, test: np.ndarray) -> dict:
    H, W = d["images"].shape[2:4]
    F = d["images"].shape[1]
    pred = result.render_frames(d["K"][test], d["w2c"][test], list(range(F)), H, W).cpu()  # [F, Vt, H, W, 3]
    gt = torch.tensor(d["images"][test][..., :3] / 255.0, dtype=torch.float32).permute(1, 0, 2, 3, 4)
    p = psnr(pred.reshape(-1, H, W, 3), gt.reshape(-1, H, W, 3))
    s = ssim(pred.reshape(-1, H, W, 3), gt.reshape(-1, H, W, 3))
    verts = d["verts"].astype(np.float64)
    times = clip_times(d)
    disp = result.displacement(verts[0], times).astype(np.float64)
    err = np.linalg.norm(verts[0][None] + disp - verts, axis=-1)[1:].mean()
    still = np.linalg.norm(verts[0][None] - verts, axis=-1)[1:].mean()
    err_f = np.linalg.norm(verts[0][None] + disp - verts, axis=-1).mean(1)
    still_f = np.linalg.norm(verts[0][None] - verts, axis=-1).mean(1)
    return {"psnr": float(p.mean()), "ssim": float(s.mean()), "motion_error": float(err),
            "still_error": float(still), "motion_ratio": float(err / max(still, 1e-12)),
            "psnr_per_frame": [float(x) for x in p.reshape(F, -1).mean(1)],
            "motion_ratio_per_frame": [float(e / max(s_, 1e-12)) for e, s_ in zip(err_f[1:], still_f[1:])]}


def run_fit(images, d, train, opts, label):
    t0, c0 = time.perf_counter(), time.process_time()
    last = [t0]

    def progress(i, n, loss):
        if time.perf_counter() - last[0] > 15 or i == n:
            last[0] = time.perf_counter()
            print(f"    [{label}] it {i}/{n} loss {loss:.4f} ({time.perf_counter() - t0:.0f} s)", flush=True)

    result = fit(images, d["K"][train], d["w2c"][train], clip_times(d), on_progress=progress, **opts)
    return result, time.perf_counter() - t0, time.process_time() - c0


def bench_asset(name: str, args, path: Path | None = None) -> dict:
    path = path or assets_root() / "animated" / "gt" / f"{name}_v16_f8_{args.res}.npz"
    d = dict(np.load(path))
    V = d["images"].shape[0]
    train, test = np.arange(0, V, 2), np.arange(1, V, 2)
    images = d["images"][train] if args.alpha else d["images"][train][..., :3]
    opts = {"seed": args.seed, "device": args.device, **args.options}
    if args.iterations:
        opts["iterations"] = args.iterations
    if args.time_budget and args.time_budget > 0:
        opts["time_budget_s"] = args.time_budget
    print(f"== {name} ({path.name}): fit on {len(train)} views x {images.shape[1]} frames, "
          f"{'RGBA' if args.alpha else 'RGB'} input", flush=True)
    load0 = os.getloadavg()[0]
    result, wall, cpu = run_fit(images, d, train, opts, name)
    row = {"asset": name, "wall_s": wall, "cpu_s": cpu, "load_before": load0, "load_after": os.getloadavg()[0],
           **evaluate(result, d, test), "summary": {k: v for k, v in result.summary.items() if k != "loss_history"}}
    base = neighbour_baseline(d["images"], test)
    gt = d["images"][test][..., :3].astype(np.float32) / 255.0
    mse = ((base - gt) ** 2).reshape(len(test) * gt.shape[1], -1).mean(1)
    row["baseline_psnr"] = float(np.mean(-10 * np.log10(np.maximum(mse, 1e-12))))
    row["margin_db"] = row["psnr"] - row["baseline_psnr"]
    if args.robust:
        bad = corrupt(images, seed=args.seed + 1)
        r2, wall2, cpu2 = run_fit(bad, d, train, opts, name + " corrupted")
        e2 = evaluate(r2, d, test)
        corr2 = r2.summary.get("corrections") or {}
        row.update({"robust_psnr": e2["psnr"], "robust_drop_db": row["psnr"] - e2["psnr"],
                    "robust_motion_ratio": e2["motion_ratio"], "robust_wall_s": wall2,
                    "robust_psnr_per_frame": e2["psnr_per_frame"],
                    "robust_shift_px_mean": corr2.get("shift_px_mean", 0.0)})
    print(f"   {name}: PSNR {row['psnr']:.2f} dB  SSIM {row['ssim']:.4f}  baseline {row['baseline_psnr']:.2f} dB "
          f"(+{row['margin_db']:.2f})  motion ratio {row['motion_ratio']:.3f}"
          + (f"  robust drop {row['robust_drop_db']:.2f} dB" if args.robust else "")
          + f"  wall {wall:.0f} s  cpu {cpu:.0f} s  iterations {result.summary['iterations']} "
          f"({result.summary['stop_reason']})  N {result.num_gaussians}  loss {result.summary['loss']}  "
          f"load {load0:.1f}->{row['load_after']:.1f}", flush=True)
    corr = result.summary.get("corrections")
    if corr:
        print(f"   {name}: per-image corrections: shift mean {corr['shift_px_mean']:.2f} px (max {corr['shift_px_max']:.2f}), "
              f"gain {corr['gain_min']:.3f}..{corr['gain_max']:.3f}, |bias| <= {corr['bias_abs_max']:.3f}"
              + (f"; corrupted fit: shift mean {row['robust_shift_px_mean']:.2f} px" if args.robust else ""), flush=True)
    if args.per_frame:
        print(f"   {name}: unseen PSNR per frame {np.round(row['psnr_per_frame'], 2).tolist()}")
        print(f"   {name}: motion ratio per frame 1.. {np.round(row['motion_ratio_per_frame'], 3).tolist()}")
        if args.robust:
            print(f"   {name}: corrupted, unseen PSNR per frame {np.round(row['robust_psnr_per_frame'], 2).tolist()}")
    return row


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--asset", action="append", choices=ASSETS, help="run only these (repeatable)")
    ap.add_argument("--res", type=int, default=64, choices=[64, 256])
    ap.add_argument("--alpha", action="store_true", help="give the fit the coverage alpha too")
    ap.add_argument("--no-robust", dest="robust", action="store_false", help="skip the corrupted-matrix fit")
    ap.add_argument("--iterations", type=int, help="override the default iteration budget")
    ap.add_argument("--time-budget", type=float, default=170.0,
                    help="seconds per fit (default 170; 0 = iteration budget only)")
    ap.add_argument("--gt", type=Path, action="append",
                    help="ground-truth npz in the shared format (e.g. from scripts/render_gt.py) instead of the assets")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    ap.add_argument("--json", type=Path, help="write the rows as JSON here")
    ap.add_argument("--options", type=json.loads, default={},
                    help="extra fit options as JSON, e.g. '{\"corrections\": false, \"num_nodes\": 128}'")
    ap.add_argument("--per-frame", action="store_true", help="also print unseen PSNR and motion ratio per frame")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs, "
          f"load {os.getloadavg()[0]:.1f}, device {args.device}"
          + (f", fit options {json.dumps(args.options)}" if args.options else ""), flush=True)
    if args.gt:
        rows = [bench_asset(p.stem, args, p) for p in args.gt]
    else:
        rows = [bench_asset(n, args) for n in (args.asset or ASSETS)]
    print("\n| asset | unseen PSNR | SSIM | baseline | margin | motion ratio | robust drop | wall s | cpu s | iterations |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        drop = f"{r['robust_drop_db']:.2f}" if "robust_drop_db" in r else "-"
        print(f"| {r['asset']} | {r['psnr']:.2f} | {r['ssim']:.4f} | {r['baseline_psnr']:.2f} | {r['margin_db']:+.2f} "
              f"| {r['motion_ratio']:.3f} | {drop} | {r['wall_s']:.0f} | {r['cpu_s']:.0f} | {r['summary']['iterations']} |")
    ps = [r["psnr"] for r in rows]
    checks = {
        "mean PSNR >= 30": float(np.mean(ps)) >= 30,
        "every asset PSNR >= 27": min(ps) >= 27,
        "SSIM >= 0.95 (every asset)": min(r["ssim"] for r in rows) >= 0.95,
        "margin over baseline >= 5 dB (every asset)": min(r["margin_db"] for r in rows) >= 5,
        "motion ratio <= 0.4 (every asset)": max(r["motion_ratio"] for r in rows) <= 0.4,
        "wall time <= 180 s per fit (CPU target)": max(r["wall_s"] for r in rows) <= 180,
    }
    if args.robust:
        checks["robustness drop <= 2 dB (every asset)"] = max(r["robust_drop_db"] for r in rows) <= 2
    print(f"\nmean unseen PSNR {np.mean(ps):.2f} dB over {len(rows)} asset(s)")
    for k, ok in checks.items():
        print(f"  [{'x' if ok else ' '}] {k}")
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "checks": checks}, indent=2, default=float))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
