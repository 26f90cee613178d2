#!/usr/bin/env python
"""Evaluate the built-in models against every target of issue 3, on held-out procedural objects.

The held-out objects are synchronized multi-view videos (8 views x 8 frames, the orbit starting at
the object's front) rendered only for evaluation (``make_dataset.py --split eval``). Printed:

  autoencoder   reconstruction PSNR over all held-out renders                 (target >= 30 dB)
  multi-view    given the true front view (known, and the condition), the 7 other views against
                the true orbit at frames 0 and 4: silhouette IoU and masked PSNR, mean over objects
                (target IoU >= 0.85 and >= 20 dB; floor 0.75 and 15 dB), with the baselines
                "copy the front view" and "mean training orbit"
  video         given the true first frame (condition only, frame 0 sampled freely) of the front
                row and of the view-3 row: frame-0 PSNR (target >= 30 dB), mean frame-to-frame
                change against the training clips' (target 50%..200%), smoothness (jerk ratio and
                largest step / mean step, against the training clips')
  composition   known turntable (frame 0, all views) and true front clip (view 0, all frames), the
                other 49 entries sampled by ``sample_matrix`` with the default logistic schedule,
                against the two baselines: every row from the video model alone (w = 0) and every
                column from the multi-view model alone (w = 1), same known entries, same noise

    python scripts/eval_builtin.py --data data/builtin --objects 50 --steps 25 --json runs/eval/results.json

Contact sheets (``--sheets``; each kept under 300 KB, palette-quantised if needed, so they can live
under docs/): autoencoder_samples.png (renders / reconstructions), multiview_samples.png and
video_samples.png (truth row / sample row), composition_example.png (views down, frames across:
truth | composed | video only | multi-view only).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402

import builtin_data as D  # noqa: E402
from backend.models.builtin import load_builtin  # noqa: E402
from backend.models.builtin.metrics import iou, masked_psnr, psnr, silhouette, to_unit  # noqa: E402
from backend.sampling.compose import Known, sample_matrix  # noqa: E402
from backend.sampling.schedules import constant_weight, karras_sigmas, logistic_weight  # noqa: E402
from backend.sampling.sequence import sample_sequences  # noqa: E402

EVAL_FRAMES_MV = (0, 4)
EVAL_ROWS_VIDEO = (0, 3)


def decode(ms, lat: torch.Tensor) -> torch.Tensor:
    """latents [..., C, h, w] -> images [..., 3, H, W] in [0, 1]."""
    flat = lat.reshape(-1, *lat.shape[-3:])
    img = to_unit(ms.autoencoder.decode(flat))
    return img.view(*lat.shape[:-3], *img.shape[1:])


def motion_stats(clips: torch.Tensor) -> dict:
    """clips [N, T, 3, H, W] in [0, 1] -> mean frame-to-frame change, jerk ratio, max/mean step."""
    d1 = (clips[:, 1:] - clips[:, :-1]).abs().mean(dim=(2, 3, 4))  # [N, T-1]
    d2 = (clips[:, 2:] - 2 * clips[:, 1:-1] + clips[:, :-2]).abs().mean(dim=(2, 3, 4))
    return {"change": float(d1.mean()), "jerk_ratio": float(d2.mean() / d1.mean().clamp_min(1e-8)),
            "max_over_mean_step": float((d1.max(1).values / d1.mean(1).clamp_min(1e-8)).mean())}


def mv_conds(ms, lat_front: torch.Tensor, elev_deg: np.ndarray, az_deg: np.ndarray):
    el = torch.deg2rad(torch.as_tensor(elev_deg, dtype=torch.float32))
    az = D.relative_azimuth_rad(az_deg)
    return ms.multiview_cond(lat_front, el, az)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="data/builtin")
    ap.add_argument("--checkpoints", default=None, help="weights folder (default: the shipped weights)")
    ap.add_argument("--objects", type=int, default=50)
    ap.add_argument("--compose-objects", type=int, default=None,
                    help="composition test on the first N of the objects only (default: all; 3 matrices per object)")
    ap.add_argument("--steps", type=int, default=25, help="sampling steps (Karras sigmas, Euler)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default="runs/eval/results.json")
    ap.add_argument("--sheets", default="runs/eval", help="folder for contact sheets")
    ap.add_argument("--skip", default="", help="comma list of parts to skip: ae,multiview,video,compose")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--max-batch", type=int, default=8)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    from tqdm import tqdm

    skip = set(s for s in args.skip.split(",") if s)
    t_start = time.time()
    ms = load_builtin(checkpoints=args.checkpoints)
    ev = D.load_split(args.data, "eval", limit=args.objects)
    n = len(ev["index"])
    imgs = D.images_to_tensor(ev["images"])  # [N, V, F, 3, H, W] in [-1, 1]
    truth = to_unit(imgs)
    N, V, F = imgs.shape[:3]
    elev, azim = ev["elevation_deg"], ev["azimuth_deg"]  # [N, V]
    sig = karras_sigmas(args.steps, ms.sigma_min, ms.sigma_max)
    res: dict = {"objects": n, "steps": args.steps, "seed": args.seed, "command": " ".join(sys.argv),
                 "weights": ms.info.get("weights"), "model_steps": ms.info.get("steps")}
    sheets = Path(args.sheets)
    sheets.mkdir(parents=True, exist_ok=True)

    with torch.no_grad():
        lat = torch.cat([ms.autoencoder.encode(c) for c in imgs.reshape(-1, *imgs.shape[-3:]).split(256)])
        lat = lat.view(N, V, F, *lat.shape[1:])

    # ------------------------------------------------------------------ autoencoder
    if "ae" not in skip:
        rec = decode(ms, lat)
        p = psnr(rec, truth)
        res["autoencoder"] = {"psnr_mean": float(p.mean()), "psnr_min": float(p.min()),
                              "psnr_p05": float(p.flatten().quantile(0.05))}
        _sheet_rows(sheets / "autoencoder_samples.png", [truth[:8, 0, 0], rec[:8, 0, 0], truth[:8, 4, 4], rec[:8, 4, 4]])
        res["seconds_autoencoder"] = round(time.time() - t_start, 1)
        print(f"autoencoder: reconstruction PSNR {p.mean():.2f} dB (5th percentile {res['autoencoder']['psnr_p05']:.2f}, "
              f"min {p.min():.2f}) over {p.numel()} held-out renders   [target >= 30 dB]")

    # ------------------------------------------------------------------ multi-view
    if "multiview" not in skip:
        t_part = time.time()
        cols, conds, tru = [], [], []
        for i in range(N):
            for f in EVAL_FRAMES_MV:
                cols.append(lat[i, :, f])
                conds.append(mv_conds(ms, lat[i, 0, f], elev[i], azim[i]))
                tru.append(truth[i, :, f])
        cols, tru = torch.stack(cols), torch.stack(tru)  # [M, V, ...]
        g = torch.Generator().manual_seed(args.seed)
        xT = torch.randn(cols.shape, generator=g) * float(sig[0])
        known = torch.zeros(cols.shape[:2], dtype=torch.bool)
        known[:, 0] = True
        bar = tqdm(total=args.steps, desc="multi-view sampling", unit="step")
        out = sample_sequences(ms.multiview, xT, sig, conds=conds, known_mask=known, known_values=cols,
                               max_batch=args.max_batch, on_step=lambda i, k, x0: bar.update(1))
        bar.close()
        pred = decode(ms, out)
        nv = slice(1, None)

        def score(p_img):
            i_ = iou(silhouette(p_img[:, nv]), silhouette(tru[:, nv])).mean(1).view(N, -1).mean(1)
            m_ = masked_psnr(p_img[:, nv], tru[:, nv]).mean(1).view(N, -1).mean(1)
            return float(i_.mean()), float(m_.mean())

        r = {"model": score(pred)}
        r["copy_front"] = score(tru[:, :1].expand_as(tru))
        try:
            train = D.load_split(args.data, "multiview", limit=1000)["images"]
            mean_orbit = to_unit(D.images_to_tensor(train).mean(0))  # [V, 3, H, W]
            r["mean_training_orbit"] = score(mean_orbit[None].expand_as(tru))
        except FileNotFoundError:
            pass
        res["multiview"] = {k: {"iou": v[0], "masked_psnr": v[1]} for k, v in r.items()}
        res["multiview"]["frames"] = list(EVAL_FRAMES_MV)
        for k, (a, b) in r.items():
            print(f"multi-view [{k:>19}]: silhouette IoU {a:.3f}, masked PSNR {b:.2f} dB (views 1-7, frames {EVAL_FRAMES_MV})"
                  + ("   [target IoU >= 0.85, >= 20 dB; floor 0.75, 15 dB]" if k == "model" else ""))
        _sheet_mv(sheets / "multiview_samples.png", tru, pred, rows=4)
        res["seconds_multiview"] = round(time.time() - t_part, 1)

    # ------------------------------------------------------------------ video
    if "video" not in skip:
        t_part = time.time()
        clips, conds, tru = [], [], []
        for i in range(N):
            for v in EVAL_ROWS_VIDEO:
                clips.append(lat[i, v])
                conds.append(ms.video_cond(lat[i, v, 0]))
                tru.append(truth[i, v])
        clips, tru = torch.stack(clips), torch.stack(tru)
        g = torch.Generator().manual_seed(args.seed + 1)
        xT = torch.randn(clips.shape, generator=g) * float(sig[0])
        bar = tqdm(total=args.steps, desc="video sampling", unit="step")
        out = sample_sequences(ms.video, xT, sig, conds=conds, max_batch=args.max_batch,
                               on_step=lambda i, k, x0: bar.update(1))
        bar.close()
        pred = decode(ms, out)
        f0 = psnr(pred[:, 0], tru[:, 0])
        stats_pred = motion_stats(pred)
        stats_eval = motion_stats(tru)
        try:
            tv = D.load_split(args.data, "video", limit=1000)["images"]
            stats_train = motion_stats(to_unit(D.images_to_tensor(tv)))
        except FileNotFoundError:
            stats_train = stats_eval
        ratio = stats_pred["change"] / stats_train["change"]
        ious = iou(silhouette(pred[:, 1:]), silhouette(tru[:, 1:])).mean()
        mps = masked_psnr(pred[:, 1:], tru[:, 1:]).mean()
        res["video"] = {"frame0_psnr": float(f0.mean()), "frame0_psnr_min": float(f0.min()), "motion": stats_pred,
                        "motion_train": stats_train, "motion_eval_truth": stats_eval, "change_ratio": ratio,
                        "iou_vs_truth": float(ious), "masked_psnr_vs_truth": float(mps), "rows": list(EVAL_ROWS_VIDEO)}
        print(f"video: frame-0 PSNR {f0.mean():.2f} dB (min {f0.min():.2f})   [target >= 30 dB]")
        print(f"video: mean frame-to-frame change {stats_pred['change']:.4f} vs training clips {stats_train['change']:.4f}"
              f" = {100 * ratio:.0f}%   [target 50%..200%]")
        print(f"video: smoothness: jerk ratio {stats_pred['jerk_ratio']:.2f} (training clips {stats_train['jerk_ratio']:.2f}), "
              f"largest/mean step {stats_pred['max_over_mean_step']:.2f} (training clips {stats_train['max_over_mean_step']:.2f})")
        print(f"video: against the true motion (one of many plausible): IoU {ious:.3f}, masked PSNR {mps:.2f} dB")
        _sheet_rows(sheets / "video_samples.png", [x for b in range(4) for x in (tru[b], pred[b])])
        res["seconds_video"] = round(time.time() - t_part, 1)

    # ------------------------------------------------------------------ composition
    if "compose" not in skip:
        t_part = time.time()
        nc = N if args.compose_objects is None else max(1, min(N, args.compose_objects))
        mask = torch.zeros(V, F, dtype=torch.bool)
        mask[:, 0] = True
        mask[0, :] = True
        methods = {"composed": logistic_weight(), "video_only": constant_weight(0.0), "multiview_only": constant_weight(1.0)}
        scores = {k: {"iou": [], "masked_psnr": []} for k in methods}
        bar = tqdm(total=nc * len(methods), desc="composition", unit="matrix")
        example = None
        for i in range(nc):
            g = torch.Generator().manual_seed(args.seed + 1000 + i)
            xT = torch.randn(lat[i].shape, generator=g) * float(sig[0])
            vc = [ms.video_cond(lat[i, v, 0]) for v in range(V)]
            mc = [mv_conds(ms, lat[i, 0, f], elev[i], azim[i]) for f in range(F)]
            outs = {}
            for name, w in methods.items():
                out = sample_matrix(ms.video, ms.multiview, xT, sig, video_conds=vc, multiview_conds=mc, weight=w,
                                    known=Known(mask, lat[i]), max_batch=args.max_batch)
                img = decode(ms, out)
                outs[name] = img
                sel = ~mask
                scores[name]["iou"].append(float(iou(silhouette(img[sel]), silhouette(truth[i][sel])).mean()))
                scores[name]["masked_psnr"].append(float(masked_psnr(img[sel], truth[i][sel]).mean()))
                bar.update(1)
            if example is None:
                example = (truth[i], outs)
        bar.close()
        comp = {k: {m: float(np.mean(v)) for m, v in s.items()} for k, s in scores.items()}
        wins = {f"beats_{b}": {m: float(np.mean(np.array(scores["composed"][m]) > np.array(scores[b][m])))
                               for m in ("iou", "masked_psnr")} for b in ("video_only", "multiview_only")}
        res["composition"] = {**comp, **wins, "schedule": repr(methods["composed"]), "objects": nc,
                              "per_object": scores}
        for k, s in comp.items():
            print(f"composition [{k:>14}]: masked PSNR {s['masked_psnr']:.2f} dB, silhouette IoU {s['iou']:.3f} "
                  f"(49 unknown entries per object, {nc} objects)")
        ok = all(comp["composed"][m] > comp[b][m] for b in ("video_only", "multiview_only") for m in ("iou", "masked_psnr"))
        print(f"composition: composed beats both baselines on both metrics: {ok}; per-object win rates {wins}")
        res["composition"]["beats_both"] = ok
        t, outs = example
        _sheet_matrix(sheets / "composition_example.png", t, outs)
        res["seconds_composition"] = round(time.time() - t_part, 1)

    res["seconds"] = round(time.time() - t_start, 1)
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(res, indent=1))
    print(f"[eval_builtin] {res['seconds']:.0f} s; results -> {args.json}; contact sheets -> {sheets}")
    return 0


MAX_SHEET_BYTES = 300_000


def _to_png(grid: torch.Tensor, path: Path, max_bytes: int = MAX_SHEET_BYTES) -> None:
    """grid [3, H, W] in [0, 1] -> PNG under ``max_bytes`` (palette-quantised, then halved, if needed)."""
    from PIL import Image

    arr = (grid.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()
    img = Image.fromarray(arr)
    img.save(path, optimize=True)
    if path.stat().st_size > max_bytes:
        img.quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(path, optimize=True)
    while path.stat().st_size > max_bytes and min(img.size) > 64:
        img = img.resize((img.width // 2, img.height // 2), Image.BOX)
        img.quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(path, optimize=True)


def _sheet_rows(path: Path, rows: list) -> None:
    """rows: [T, 3, H, W] each -> one image row each."""
    _to_png(torch.cat([torch.cat(list(r), dim=2) for r in rows], dim=1), path)


def _sheet_mv(path: Path, tru: torch.Tensor, pred: torch.Tensor, rows: int) -> None:
    sel = [i for i in range(0, tru.shape[0], len(EVAL_FRAMES_MV))][:rows]
    _sheet_rows(path, [x for i in sel for x in (tru[i], pred[i])])


def _sheet_matrix(path: Path, truth: torch.Tensor, outs: dict) -> None:
    """Views down, frames across; truth then each method side by side, separated by a white gap."""
    blocks = [truth] + [outs[k] for k in ("composed", "video_only", "multiview_only")]
    panels = [torch.cat([torch.cat(list(b[v]), dim=2) for v in range(b.shape[0])], dim=1) for b in blocks]
    gap = torch.ones(3, panels[0].shape[1], 8)
    _to_png(torch.cat([x for p in panels for x in (p, gap)][:-1], dim=2), path)


if __name__ == "__main__":
    sys.exit(main())
