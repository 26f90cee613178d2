#!/usr/bin/env python
"""Render the built-in models' datasets in headless Blender (bpy): procedural objects, procedural motions.

Splits (each reproducible from ``--seed``; object i of split S is built from the seed (seed, S, i)):
  video      single-view clips: 8 frames of one motion, one random camera per clip
             (azimuth uniform in [0, 360), elevation uniform in the trained range)
  multiview  static orbits: 8 views 45 degrees apart (random start azimuth, one elevation per
             sample) of one pose (a random frame of a random motion)
  eval       synchronized multi-view videos: 8 views x 8 frames, the orbit starting at the
             object's front (azimuth 0); rendered only for held-out objects, never for training
  val-video / val-multiview   small held-out sets for learning curves during training

Every image is rendered with the add-on's renderer (``blender_addon.render``: Workbench, white
background, cameras from ``protocol.cameras``, the animation normalised into the unit sphere over
all 8 frames, as the ground-truth renders are). Output: ``OUT/SPLIT/shard_NNNNN.npz`` with
  images uint8 [n, T, 64, 64, 4] (RGB over white, A = coverage), azimuth_deg / elevation_deg [n, T]
  (eval: [n, V]), times [n, T], object_seed [n], motion (json) — plus OUT/SPLIT/meta.json.
Shards that exist are skipped, so an interrupted run resumes; ``--shards a:b`` splits work
between processes.

    python scripts/make_dataset.py --split video --count 16000 --out data/builtin
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

import procedural as P  # noqa: E402
from backend.models.builtin.config import ELEVATION_RANGE_DEG, NUM_FRAMES, NUM_VIEWS  # noqa: E402
from protocol.cameras import camera_position, intrinsics, look_at_w2c, orbit_distance  # noqa: E402

SPLITS = {"video": 0, "multiview": 1, "eval": 2, "val-video": 3, "val-multiview": 4}
SHARD = 250
RES = 64


def object_rng(seed: int, split: str, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, SPLITS[split], index])


def build_blender_mesh(obj: P.ProceduralObject, name: str = "dsq_obj"):
    """A bpy mesh object for ``obj`` with one material per colour (Workbench shows material colours)."""
    import bpy

    mesh = bpy.data.meshes.new(name)
    mesh.from_pydata(obj.verts.tolist(), [], [list(map(int, f)) for f in obj.faces])
    mats = []
    for i, c in enumerate(obj.colors):
        m = bpy.data.materials.new(f"{name}_m{i}")
        m.diffuse_color = (c[0], c[1], c[2], 1.0)
        mesh.materials.append(m)
        mats.append(m)
    mesh.polygons.foreach_set("material_index", obj.face_material.astype(np.int32))
    mesh.polygons.foreach_set("use_smooth", obj.face_smooth.astype(bool))
    mesh.update()
    ob = bpy.data.objects.new(name, mesh)
    return ob, mesh, mats


def remove_blender_mesh(ob, mesh, mats) -> None:
    import bpy

    bpy.data.objects.remove(ob, do_unlink=True)
    bpy.data.meshes.remove(mesh)
    for m in mats:
        bpy.data.materials.remove(m)


def set_vertices(mesh, verts: np.ndarray) -> None:
    mesh.vertices.foreach_set("co", np.ascontiguousarray(verts, dtype=np.float32).ravel())
    mesh.update()


def sample_item(split: str, seed: int, index: int) -> dict:
    """Everything random about item ``index`` of a split (object, motion, cameras, times), from its seed."""
    rng = object_rng(seed, split, index)
    obj = P.make_object(rng)
    motion = P.make_motion(rng, obj)
    times = np.arange(NUM_FRAMES) / NUM_FRAMES
    lo, hi = ELEVATION_RANGE_DEG
    elev = float(rng.uniform(lo, hi))
    if split in ("video", "val-video"):
        az = np.full(NUM_FRAMES, rng.uniform(0.0, 360.0))
        el = np.full(NUM_FRAMES, elev)
        cams, frames = [(az[0], el[0])], list(range(NUM_FRAMES))
    elif split in ("multiview", "val-multiview"):
        start = rng.uniform(0.0, 360.0)
        az = (start + 360.0 * np.arange(NUM_VIEWS) / NUM_VIEWS) % 360.0
        el = np.full(NUM_VIEWS, elev)
        cams, frames = list(zip(az, el)), [int(rng.integers(0, NUM_FRAMES))]
    else:  # eval: synchronized orbit x frames, starting at the front
        az = 360.0 * np.arange(NUM_VIEWS) / NUM_VIEWS
        el = np.full(NUM_VIEWS, elev)
        cams, frames = list(zip(az, el)), list(range(NUM_FRAMES))
    return {"obj": obj, "motion": motion, "times": times, "cams": cams, "frames": frames, "azimuth": az,
            "elevation": el}


def render_item(scene, item: dict, settings) -> np.ndarray:
    """Render one item (split in item['split']): video -> [T, H, W, 4]; multiview -> [V, H, W, 4]; eval -> [V, F, H, W, 4]."""
    from blender_addon.render import render_image, set_camera

    obj = item["obj"]
    verts = P.animate(obj, item["motion"], item["times"])  # [F, N, 3]
    center, radius = P.bounding_sphere(verts.reshape(-1, 3))
    verts = (verts - center) / radius  # normalised over the whole clip
    ob, mesh, mats = build_blender_mesh(obj)
    scene.collection.objects.link(ob)
    K = intrinsics(settings.fov, RES, RES)
    dist = orbit_distance()
    w2cs = [look_at_w2c(camera_position(a, e, dist)) for a, e in item["cams"]]
    try:
        out = np.zeros((len(item["frames"]), len(w2cs), RES, RES, 4), np.uint8)
        for fi, f in enumerate(item["frames"]):
            set_vertices(mesh, verts[f])
            for ci, w2c in enumerate(w2cs):
                set_camera(scene, K, w2c, RES, RES)
                out[fi, ci] = render_image(scene)
    finally:
        remove_blender_mesh(ob, mesh, mats)
    if item["split"] in ("video", "val-video"):
        return out[:, 0]
    if item["split"] in ("multiview", "val-multiview"):
        return out[0]
    return out.transpose(1, 0, 2, 3, 4)


def motion_json(motion: P.Motion) -> str:
    def clean(v):
        if isinstance(v, (np.floating, np.integer)):
            return v.item()
        if isinstance(v, (list, tuple)):
            return [clean(x) for x in v]
        if isinstance(v, dict):
            return {k: clean(x) for k, x in v.items()}
        return v
    return json.dumps({"names": list(motion.names), "params": clean(motion.params)})


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--split", choices=sorted(SPLITS), required=True)
    ap.add_argument("--count", type=int, required=True, help="number of items (clips / orbits / eval objects)")
    ap.add_argument("--out", default="data/builtin", help="output folder (not committed)")
    ap.add_argument("--seed", type=int, default=2024)
    ap.add_argument("--shards", default=None, help="a:b — render only shards a..b-1 (for parallel workers)")
    ap.add_argument("--shard-size", type=int, default=SHARD)
    args = ap.parse_args(argv)

    import bpy  # noqa: F401
    from tqdm import tqdm

    from blender_addon.render import RenderSettings, temporary_scene

    out_dir = Path(args.out) / args.split
    out_dir.mkdir(parents=True, exist_ok=True)
    n_shards = math.ceil(args.count / args.shard_size)
    a, b = (0, n_shards) if args.shards is None else map(int, args.shards.split(":"))
    meta = {"split": args.split, "count": args.count, "seed": args.seed, "shard_size": args.shard_size,
            "resolution": RES, "frames": NUM_FRAMES, "views": NUM_VIEWS, "elevation_range_deg": ELEVATION_RANGE_DEG,
            "renderer": "blender_addon.render (WORKBENCH)", "command": " ".join(sys.argv)}
    (out_dir / "meta.json").write_text(json.dumps(meta, indent=1))
    settings = RenderSettings(resolution=RES, engine="WORKBENCH")
    settings.fov = 33.8
    todo = [s for s in range(a, min(b, n_shards)) if not (out_dir / f"shard_{s:05d}.npz").exists()]
    total = sum(min(args.shard_size, args.count - s * args.shard_size) for s in todo)
    bar = tqdm(total=total, desc=f"render {args.split}", unit="item", smoothing=0.05)
    t0 = time.time()
    with temporary_scene([], settings) as scene:
        for s in todo:
            idx = range(s * args.shard_size, min((s + 1) * args.shard_size, args.count))
            images, azs, els, seeds, motions = [], [], [], [], []
            for i in idx:
                item = sample_item(args.split, args.seed, i)
                item["split"] = args.split
                images.append(render_item(scene, item, settings))
                azs.append(item["azimuth"])
                els.append(item["elevation"])
                seeds.append(i)
                motions.append(motion_json(item["motion"]) + "|" + item["obj"].kind + "|" + json.dumps(item["frames"]))
                bar.update(1)
            tmp = out_dir / f"shard_{s:05d}.tmp.npz"
            np.savez_compressed(tmp, images=np.stack(images), azimuth_deg=np.stack(azs), elevation_deg=np.stack(els),
                                index=np.asarray(seeds), motion=np.asarray(motions))
            tmp.rename(out_dir / f"shard_{s:05d}.npz")
    bar.close()
    print(f"[make_dataset] {args.split}: {total} items in {time.time() - t0:.0f} s -> {out_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
