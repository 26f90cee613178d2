#!/usr/bin/env python
"""Write the built-in models' cards (AUTOENCODER.md, VIDEO.md, MULTIVIEW.md) from what training and
evaluation recorded: the weight files' metadata, the runs' learning curves (RUN/log.jsonl), the
datasets' meta.json and ``scripts/eval_builtin.py``'s results json. Nothing in a card is typed by hand
except the fixed descriptions below.

    python scripts/write_model_cards.py --ae runs/ae --video runs/video --multiview runs/multiview \\
        --eval runs/eval/results.json --data data/builtin --out backend/models/builtin/weights
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
REPO = Path(__file__).resolve().parents[1]

from backend.models.builtin.weights_io import FILES, read_metadata  # noqa: E402

MAX_SHEET_BYTES = 300_000
CARD_NAMES = {"autoencoder": "AUTOENCODER.md", "video": "VIDEO.md", "multiview": "MULTIVIEW.md"}

DESCRIPTION = {
    "autoencoder": (
        "Convolutional autoencoder, 64×64×3 images in [-1, 1] ↔ 16×16×4 latents scaled to unit variance "
        "(`(raw - shift) * scale`, stored in the config). Deterministic encoder; trained with MSE + ½·L1, "
        "a small latent-magnitude penalty and a little noise on the latents before decoding, so that the "
        "diffusion models' samples decode cleanly. It defines the latent space both denoisers share."),
    "video": (
        "Image-to-video denoiser in the style of Stable Video Diffusion, scaled down: a sequence UNet "
        "(2-D residual blocks per frame; attention along the frames per pixel at 16×16 or over all "
        "frame×pixel tokens at 8×8 and 4×4), the frame-0 latent concatenated to every frame's input, a "
        "small learned image embedding in place of CLIP, a frame-index embedding; EDM preconditioning "
        "(`VScalingWithEDMcNoise`, σ_data = 1) and log-normal training noise levels. Joint image training "
        "(one step in six on single frames with the index “unknown time”) gives the one-image marginal "
        "`ModelSet.element`. Trained only on single-view clips (one random camera per clip), so it "
        "animates from any camera on the orbit."),
    "multiview": (
        "Multi-view denoiser in the style of SV3D_p, scaled down: the same sequence UNet over the 8 views "
        "of an orbit, conditioned on the front view's latent (concatenated to every view's input, plus the "
        "learned image embedding) and on each output view's camera (elevation, azimuth relative to the "
        "front view, as Fourier features into the per-view embedding); EDM preconditioning as the video "
        "model. Trained only on static orbits (all views at one instant of a random pose), any view "
        "serving as the front."),
}
LIFT_DESCRIPTION = (
    " With a 3-D prior (`lift` in the configuration, `backend/models/builtin/lift.py`): a small CNN reads the "
    "front view's latent, every voxel of a grid over the unit sphere takes the feature under its projection in "
    "the front camera plus a code of its depth along that ray, an MLP turns that into density and features, and "
    "the volume is alpha-composited into each output view's camera (the rig of `protocol.cameras`) at latent "
    "resolution. Those renders (features and opacity) are extra input channels of the UNet; the lift is also "
    "trained directly against the true views (a latent head and a silhouette loss). The geometry of a rotation "
    "is built in rather than learned, which a CPU training budget could not afford.")


def _warm_start_line(raw: str) -> str:
    w = json.loads(raw)
    return (f"\n- warm-started from `{w.get('file')}` ({w.get('step')} steps, {w.get('minutes')} min; its command: "
            f"`{w.get('command')}`): the steps and minutes above are this run's only")


def _curve(run: Path) -> list[dict]:
    log = run / "log.jsonl"
    if not log.is_file():
        return []
    return [json.loads(line) for line in log.read_text().splitlines() if line.strip()]


def _fmt(v, nd=3):
    return "–" if v is None else (f"{v:.{nd}f}" if isinstance(v, float) else str(v))


def learning_curve_table(kind: str, recs: list[dict]) -> str:
    evals = [r for r in recs if r["kind"] == "eval"]
    trains = [r for r in recs if r["kind"] == "train"]
    if not evals:
        return "(no evaluations recorded)\n"
    lines = []
    if kind == "autoencoder":
        lines.append("| step | wall min | CPU core-h | train loss | held-out PSNR (dB) | min PSNR |")
        lines.append("|---:|---:|---:|---:|---:|---:|")
    else:
        extra = " motion ratio |" if kind == "video" else ""
        lines.append("| step | wall min | CPU core-h | train loss | held-out IoU | held-out masked PSNR (dB) | val loss σ=0.3 / 1 / 3 |" + extra)
        lines.append("|---:|---:|---:|---:|---:|---:|---:|" + ("---:|" if kind == "video" else ""))
    for r in evals:
        near = [t for t in trains if t["step"] <= r["step"]]
        tl = near[-1]["loss"] if near else None
        cpu = r.get("cpu_hours")
        if kind == "autoencoder":
            lines.append(f"| {r['step']} | {r['elapsed_min']:.0f} | {_fmt(cpu, 2)} | {_fmt(tl, 4)} | {r['psnr_mean']:.2f} | {r['psnr_min']:.2f} |")
        else:
            vl = r.get("val_loss", {})
            vls = " / ".join(_fmt(vl.get(k), 4) for k in ("0.3", "1", "3"))
            row = f"| {r['step']} | {r['elapsed_min']:.0f} | {_fmt(cpu, 2)} | {_fmt(tl, 4)} | {r['iou']:.3f} | {r['masked_psnr']:.2f} | {vls} |"
            if kind == "video":
                row += f" {_fmt(r.get('motion_ratio'), 2)} |"
            lines.append(row)
    return "\n".join(lines) + "\n"


def eval_section(kind: str, ev: dict | None) -> str:
    if not ev:
        return "Not evaluated yet (`scripts/eval_builtin.py`).\n"
    part = ev.get({"autoencoder": "autoencoder", "video": "video", "multiview": "multiview"}[kind], {})
    src = part.get("_source", ev)
    cmd = f"\nCommand: `{src.get('command')}` ({src.get('objects')} held-out objects, {src.get('steps')} sampling steps).\n"
    if kind == "autoencoder" and "autoencoder" in ev:
        a = ev["autoencoder"]
        ok = "met" if a["psnr_mean"] >= 30 else "NOT met"
        return (f"Reconstruction PSNR over every render of the held-out objects: **{a['psnr_mean']:.2f} dB** "
                f"(5th percentile {a['psnr_p05']:.2f}, min {a['psnr_min']:.2f}); target ≥ 30 dB: {ok}.\n" + cmd)
    if kind == "multiview" and "multiview" in ev:
        m = ev["multiview"]
        rows = ["| | silhouette IoU | masked PSNR (dB) |", "|---|---:|---:|"]
        for k in ("model", "copy_front", "mean_training_orbit"):
            if k in m:
                rows.append(f"| {k.replace('_', ' ')} | {m[k]['iou']:.3f} | {m[k]['masked_psnr']:.2f} |")
        mi, mp = m["model"]["iou"], m["model"]["masked_psnr"]
        status = ("target met" if mi >= 0.85 and mp >= 20 else "floor met, target open" if mi >= 0.75 and mp >= 15
                  else "below the floor")
        return ("Given the true front view (as condition and as the known view 0), views 1–7 against the true "
                f"orbit at frames {m.get('frames')}, mean over objects:\n\n" + "\n".join(rows)
                + f"\n\nTarget IoU ≥ 0.85 and ≥ 20 dB (floor 0.75 and 15 dB): **{status}**.\n" + cmd)
    if kind == "video" and "video" in ev:
        v = ev["video"]
        r = v["change_ratio"]
        mp, mt = v["motion"], v["motion_train"]
        return (f"Given the true first frame (condition only; frame 0 is sampled too), rows {v.get('rows')} of every "
                "held-out object:\n\n"
                f"- frame 0 PSNR against the true first frame: **{v['frame0_psnr']:.2f} dB** (min {v['frame0_psnr_min']:.2f}); "
                f"target ≥ 30 dB: {'met' if v['frame0_psnr'] >= 30 else 'NOT met'}\n"
                f"- mean frame-to-frame change {mp['change']:.4f} vs the training clips' {mt['change']:.4f}: "
                f"**{100 * r:.0f}%**; target 50–200%: {'met' if 0.5 <= r <= 2 else 'NOT met'}\n"
                f"- smoothness: jerk ratio (mean |2nd difference| / mean |1st difference|) {mp['jerk_ratio']:.2f} "
                f"(training clips {mt['jerk_ratio']:.2f}); largest step / mean step {mp['max_over_mean_step']:.2f} "
                f"(training clips {mt['max_over_mean_step']:.2f})\n"
                f"- against the true motion (one plausible motion among many): IoU {v['iou_vs_truth']:.3f}, "
                f"masked PSNR {v['masked_psnr_vs_truth']:.2f} dB\n" + cmd)
    return "Not evaluated.\n"


def composition_section(ev: dict | None) -> str:
    if not ev or "composition" not in ev:
        return ""
    c = ev["composition"]
    rows = ["| method | masked PSNR (dB) | silhouette IoU |", "|---|---:|---:|"]
    for k in ("composed", "video_only", "multiview_only"):
        rows.append(f"| {k.replace('_', ' ')} | {c[k]['masked_psnr']:.2f} | {c[k]['iou']:.3f} |")
    return ("\n## Composition (both models together)\n\nKnown turntable (all views at frame 0) and true front clip "
            "(view 0, all frames); the 49 other entries sampled with `sample_matrix` and the default schedule "
            f"`{c.get('schedule')}`, against the baselines (same known entries, same noise), mean over "
            f"{c.get('objects', ev.get('objects'))} held-out objects ({c.get('_source', ev).get('steps')} sampling steps), "
            f"command `{c.get('_source', ev).get('command')}`:\n\n" + "\n".join(rows)
            + f"\n\nComposed beats both baselines on both metrics: **{c.get('beats_both')}**; per-object win rates "
            f"{json.dumps({k: v for k, v in c.items() if k.startswith('beats_') and isinstance(v, dict)})}.\n")


def data_section(kind: str, data: Path) -> str:
    splits = {"autoencoder": ["video", "multiview"], "video": ["video", "val-video"],
              "multiview": ["multiview", "val-multiview"]}[kind]
    lines = []
    for s in splits + ["eval"]:
        meta = data / s / "meta.json"
        if meta.is_file():
            m = json.loads(meta.read_text())
            command = m.get("command", "").replace(str(REPO) + "/", "")
            lines.append(f"- `{s}`: {m['count']} items, seed {m['seed']}: `{command}`")
    recipe = {
        "autoencoder": "Images of both training splits (random subsets of shards in memory), horizontally flipped half the time; "
                       "held-out PSNR on 128 images of `val-multiview`.",
        "video": "Single-view clips: 8 frames (t = 0, 1/8, …, 7/8 of the motion) of one procedural object and motion "
                 "seen from one random camera (azimuth uniform 0–360°, elevation uniform 0–30°).",
        "multiview": "Static orbits: 8 views 45° apart from a random start azimuth at one elevation (uniform 0–30°), "
                     "all at one instant (a random one of the 8 frames) of a random motion; any view can serve as the front "
                     "(the orbit is rolled at random in training).",
    }[kind]
    return (recipe + " Objects: 2–10 Blender-primitive parts joined into critters, figures, plants or stacks with random "
            "proportions and one colour (sometimes two) per part; motions: bend, twist, taper, squash-and-stretch, hop, sway, "
            "wave, spin of a part, limbs swinging (one, or two combined), at rest at frame 0. Rendered with the add-on's "
            "renderer (Workbench, white background, 64×64, the animation normalised into the unit sphere over all frames).\n\n"
            + "\n".join(lines) + "\n")


def merge_evaluations(paths: list[Path]) -> dict:
    """Merge eval_builtin.py result files (parts evaluated by separate runs); each part remembers the run it
    came from (``_source``: command, objects, steps)."""
    merged: dict = {}
    for path in paths:
        ev = json.loads(path.read_text())
        src = {k: ev.get(k) for k in ("command", "objects", "steps", "seconds")}
        for part in ("autoencoder", "multiview", "video", "composition"):
            if part in ev:
                merged[part] = {**ev[part], "_source": src}
        for k, v in src.items():
            merged.setdefault(k, v)
    return merged


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ae", required=True)
    ap.add_argument("--video", required=True)
    ap.add_argument("--multiview", required=True)
    ap.add_argument("--eval", nargs="+", default=None,
                    help="eval_builtin.py results json(s); several runs (e.g. parts run in parallel with --skip) merge")
    ap.add_argument("--data", default="data/builtin")
    ap.add_argument("--out", default="backend/models/builtin/weights")
    ap.add_argument("--sheets", default="docs/builtin",
                    help="contact sheets (from eval_builtin.py --sheets), linked relative to the card; give it relative "
                         "to the repository root")
    ap.add_argument("--extra", default=None, help="json {kind: markdown} appended to cards (e.g. architecture study)")
    args = ap.parse_args(argv)
    ev = merge_evaluations([Path(e) for e in args.eval]) if args.eval else None
    extra = json.loads(Path(args.extra).read_text()) if args.extra else {}
    out = Path(args.out)
    runs = {"autoencoder": Path(args.ae), "video": Path(args.video), "multiview": Path(args.multiview)}
    for kind, run in runs.items():
        wfile = out / FILES[kind]
        meta = read_metadata(wfile)
        cfg = json.loads(meta["config"])
        size = wfile.stat().st_size
        sheets = sorted(Path(args.sheets).glob(f"{kind}_*.png"))
        if kind != "autoencoder":
            sheets += sorted(Path(args.sheets).glob("composition_*.png"))
        for s in sheets:
            if s.stat().st_size > MAX_SHEET_BYTES:
                raise SystemExit(f"{s} is {s.stat().st_size / 1e3:.0f} KB; sheets under docs/ must stay below "
                                 f"{MAX_SHEET_BYTES / 1e3:.0f} KB")
        rel = [Path("../../../..") / s for s in sheets]
        description = DESCRIPTION[kind] + (LIFT_DESCRIPTION if cfg.get("lift") else "")
        text = [f"# Built-in {kind} model\n", description + "\n",
                "## File\n",
                f"`{FILES[kind]}`: {size / 1e6:.1f} MB (float16), latent space `{meta['latent_space']}`.\n",
                "Configuration (also in the file's metadata):\n", "```json\n" + json.dumps(cfg, indent=1) + "\n```\n",
                "## Data\n", data_section(kind, Path(args.data)),
                "## Training\n",
                f"- steps: {meta.get('step')}, wall-clock {meta.get('minutes')} min on the shared 2-core CPU machine "
                "(other engineers' jobs running at the same time; see the curve for CPU core-hours)"
                + (f"\n- final training loss (mean of the last 25 steps): {meta.get('final_train_loss', '–')}"
                   if kind != "autoencoder" else "")
                + f"\n- exact command: `{meta.get('command')}`"
                + (_warm_start_line(meta["warm_start"]) if meta.get("warm_start") else "") + "\n",
                "Learning curve (held-out evaluation during training, EMA weights):\n",
                learning_curve_table(kind, _curve(run)),
                "\n## Evaluation on held-out objects\n", eval_section(kind, ev),
                composition_section(ev) if kind != "autoencoder" else "",
                extra.get(kind, ""),
                ("\n## Samples\n\n" + "\n".join(f"![{s.stem}]({r.as_posix()})" for s, r in zip(sheets, rel)) + "\n") if sheets else ""]
        (out / CARD_NAMES[kind]).write_text("\n".join(t for t in text if t))
        print(f"[cards] wrote {out / CARD_NAMES[kind]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
