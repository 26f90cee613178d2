#!/usr/bin/env python
"""One fit for an ablation of issue 4's reconstruction: one asset, one matrix (clean or corrupted),
fit options given as JSON, evaluated exactly as ``scripts/bench_recon.py`` evaluates (unseen odd
views, motion transfer at the true frame-0 vertices), plus per-frame figures. Meant for fixed
iteration budgets on one torch thread, so that options can be compared on a shared machine.

    python scripts/recon_ablation.py Fox '{"iterations": 600}'                 # clean matrix
    python scripts/recon_ablation.py Fox '{"iterations": 600}' --corrupt       # shifted <= 2 px, jittered 5 %
    python scripts/recon_ablation.py Fox '{"num_nodes": 96}' --track-only      # motion of the hull tracking alone
    python scripts/recon_ablation.py Fox '{"iterations": 600}' --save /tmp/fox.pt   # keep the Fit4D (torch.save)

``--track-only`` stops after the initialisation (visual hulls, silhouette alignment, hull tracking)
and reports the motion-transfer ratio of that motion field, with no photometric fitting.
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
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402

import bench_recon as B  # noqa: E402
from backend.recon import fit  # noqa: E402
from backend.recon.fitting import _Fitter, make_options  # noqa: E402
from backend.recon.inputs import check_inputs  # noqa: E402
from backend.recon.result import Fit4D  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("asset", choices=B.ASSETS)
    ap.add_argument("options", nargs="?", default="{}", type=json.loads, help="fit options as JSON")
    ap.add_argument("--corrupt", action="store_true", help="fit the corrupted matrix (as bench_recon's robustness fit)")
    ap.add_argument("--track-only", action="store_true", help="initialisation and hull tracking only")
    ap.add_argument("--res", type=int, default=64, choices=[64, 256])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0, help="seed of the fit; the corruption uses seed + 1 as bench_recon")
    ap.add_argument("--save", type=Path, help="torch.save the Fit4D here")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    d = dict(np.load(B.assets_root() / "animated" / "gt" / f"{args.asset}_v16_f8_{args.res}.npz"))
    V, F = d["images"].shape[:2]
    train, test = np.arange(0, V, 2), np.arange(1, V, 2)
    images = d["images"][train][..., :3]
    if args.corrupt:
        images = B.corrupt(images, seed=args.seed + 1)
    opts = {"seed": args.seed, **args.options}
    t0, c0 = time.perf_counter(), time.process_time()
    if args.track_only:
        fitter = _Fitter(check_inputs(images, d["K"][train], d["w2c"][train], B.clip_times(d)), make_options(opts))
        g, m = fitter._init_scene()
        result = Fit4D(g, m, times=B.clip_times(d))
    else:
        result = fit(images, d["K"][train], d["w2c"][train], B.clip_times(d), **opts)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    e = B.evaluate(result, d, test)
    label = f"{args.asset} {'corrupted' if args.corrupt else 'clean'} {json.dumps(args.options)}"
    if args.track_only:
        print(f"{label} track-only: motion ratio {e['motion_ratio']:.3f}  per frame "
              f"{np.round(e['motion_ratio_per_frame'], 2).tolist()}  wall {wall:.0f} s")
    else:
        s = result.summary
        print(f"{label}\n  unseen PSNR {e['psnr']:.2f}  SSIM {e['ssim']:.4f}  motion ratio {e['motion_ratio']:.3f}  "
              f"wall {wall:.0f} s  cpu {cpu:.0f} s  iterations {s['iterations']} ({s['stop_reason']})  "
              f"N {s['num_gaussians']}  load {os.getloadavg()[0]:.1f}")
        print(f"  unseen PSNR per frame {np.round(e['psnr_per_frame'], 2).tolist()}")
        print(f"  motion ratio per frame 1.. {np.round(e['motion_ratio_per_frame'], 3).tolist()}")
        corr = s.get("corrections")
        if corr:
            print("  corrections " + json.dumps({k: v for k, v in corr.items() if not isinstance(v, list)}))
    if args.save:
        torch.save(result, args.save)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
