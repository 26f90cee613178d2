#!/usr/bin/env python
"""Choose the built-in denoisers' default classifier-free guidance on the validation splits (never on
the evaluation objects): sample held-out orbits / clips at each scale and print the metrics.

  multi-view: val-multiview orbits, view 0 known, IoU and masked PSNR of views 1-7
  video:      val-video clips, frame 0 sampled freely: frame-0 PSNR, frame-to-frame change against
              the true clips', IoU / masked PSNR against the true clip

    python scripts/tune_builtin.py --checkpoints runs/snap --items 32 --steps 25 --scales 1,1.5,2,3
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402

import builtin_data as D  # noqa: E402
from backend.models.builtin import load_builtin  # noqa: E402
from backend.models.builtin.metrics import iou, masked_psnr, psnr, silhouette, to_unit  # noqa: E402
from backend.sampling.schedules import karras_sigmas  # noqa: E402
from backend.sampling.sequence import sample_sequences  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="data/builtin")
    ap.add_argument("--checkpoints", default=None)
    ap.add_argument("--items", type=int, default=32)
    ap.add_argument("--steps", type=int, default=25)
    ap.add_argument("--scales", default="1,1.5,2,3")
    ap.add_argument("--models", default="multiview,video")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    ms = load_builtin(checkpoints=args.checkpoints)
    sig = karras_sigmas(args.steps, ms.sigma_min, ms.sigma_max)
    out: dict = {}
    for kind in args.models.split(","):
        split = f"val-{kind}"
        lat = D.load_latents(args.data, split, latent_space=ms.autoencoder.latent_space)
        n = min(args.items, len(lat["index"]))
        x0 = lat["latents"][:n].float()
        truth = to_unit(D.images_to_tensor(D.load_split(args.data, split, limit=n)["images"]))
        model = ms.multiview if kind == "multiview" else ms.video
        if kind == "multiview":
            el = torch.deg2rad(torch.as_tensor(lat["elevation_deg"][:n], dtype=torch.float32))
            az = D.relative_azimuth_rad(lat["azimuth_deg"][:n])
            conds = [ms.multiview_cond(x0[i, 0], el[i], az[i]) for i in range(n)]
            known = torch.zeros(n, x0.shape[1], dtype=torch.bool)
            known[:, 0] = True
        else:
            conds = [ms.video_cond(x0[i, 0]) for i in range(n)]
            known = None
        xT = torch.randn(x0.shape, generator=torch.Generator().manual_seed(0)) * float(sig[0])
        for g in (float(s) for s in args.scales.split(",")):
            model.guidance = g
            s = sample_sequences(model, xT, sig, conds=conds, known_mask=known, known_values=x0 if known is not None else None,
                                 max_batch=16)
            img = to_unit(ms.autoencoder.decode(s.reshape(-1, *s.shape[2:]))).view(*truth.shape)
            rec = {"iou": float(iou(silhouette(img[:, 1:]), silhouette(truth[:, 1:])).mean()),
                   "masked_psnr": float(masked_psnr(img[:, 1:], truth[:, 1:]).mean())}
            if kind == "video":
                rec["frame0_psnr"] = float(psnr(img[:, 0], truth[:, 0]).mean())
                rec["change_ratio"] = float((img[:, 1:] - img[:, :-1]).abs().mean() / (truth[:, 1:] - truth[:, :-1]).abs().mean())
            out.setdefault(kind, {})[g] = rec
            print(f"{kind:9s} guidance {g:4.2f}: " + ", ".join(f"{k} {v:.3f}" for k, v in rec.items()), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
