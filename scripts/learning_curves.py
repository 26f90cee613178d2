#!/usr/bin/env python
"""Print training runs' held-out learning curves side by side (markdown), to choose an architecture.

Reads RUN/log.jsonl of each run (written by ``scripts/train.py``) and prints, for every held-out
evaluation: step, CPU core-hours, wall minutes, held-out IoU / masked PSNR of samples and the
held-out denoising loss at fixed noise levels. Runs are compared at equal CPU core-hours (the
machine is shared, so wall time is noisy).

    python scripts/learning_curves.py runs/mv_a runs/mv_c
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+")
    args = ap.parse_args(argv)
    print("| run | architecture | step | CPU core-h | wall min | held-out IoU | masked PSNR (dB) | val loss σ=0.3 | σ=1 | σ=3 |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for run in map(Path, args.runs):
        cfg = json.loads((run / "config.json").read_text())["config"]["unet"] if (run / "config.json").is_file() else {}
        arch = f"{tuple(cfg.get('channels', ()))} b={cfg.get('blocks')}" if cfg else "?"
        for line in (run / "log.jsonl").read_text().splitlines():
            r = json.loads(line)
            if r.get("kind") != "eval" or "iou" not in r:
                continue
            vl = r.get("val_loss", {})
            print(f"| {run.name} | {arch} | {r['step']} | {r.get('cpu_hours', 0):.3f} | {r['elapsed_min']:.0f} | {r['iou']:.3f} | "
                  f"{r['masked_psnr']:.2f} | {vl.get('0.3', float('nan')):.4f} | {vl.get('1', float('nan')):.4f} | "
                  f"{vl.get('3', float('nan')):.4f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
