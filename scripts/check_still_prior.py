#!/usr/bin/env python
"""How well the still prior's change masks (``backend/recon/static.py``) call still what is still, on
the four assets' true frame-0 vertices: share of (vertex, frame > 0) pairs called still and how far
the called vertices truly moved, on bench_recon's clean and corrupted matrices (8 even views x 8 frames,
64²), with the misplacement search on (the default) and off.

    python scripts/check_still_prior.py
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402

import bench_recon as B  # noqa: E402
from backend.recon.static import change_masks, still_weights  # noqa: E402


def main() -> int:
    torch.set_num_threads(1)
    print("asset              matrix     search  called still  truly still (<0.01)  largest move of a called vertex")
    for asset in B.ASSETS:
        d = dict(np.load(B.assets_root() / "animated" / "gt" / f"{asset}_v16_f8_64.npz"))
        train = np.arange(0, d["images"].shape[0], 2)
        K, w2c = d["K"][train], d["w2c"][train]
        verts = torch.tensor(d["verts"], dtype=torch.float32)
        moved = (verts - verts[0]).norm(dim=-1)[1:]  # [F-1, P]
        for corrupted in (False, True):
            images = d["images"][train][..., :3]
            if corrupted:
                images = B.corrupt(images, seed=1)
            rgb = images.astype(np.float32) / 255.0
            for search in (0.0, 4.0):
                changed = torch.from_numpy(change_masks(rgb, search=search, K=K, w2c=w2c))
                still = still_weights(verts[0], changed, torch.tensor(K, dtype=torch.float32),
                                      torch.tensor(w2c, dtype=torch.float32))[1:] > 0.5
                worst = float(moved[still].max()) if still.any() else 0.0
                print(f"{asset:18s} {'corrupted' if corrupted else 'clean':9s} {search:5.1f}   "
                      f"{float(still.float().mean()):12.3f}  {float((moved < 0.01).float().mean()):19.3f}  {worst:.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
