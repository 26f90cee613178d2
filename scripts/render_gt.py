#!/usr/bin/env python
"""Synchronised ground truth for 4D reconstruction: V orbit views x F animation frames of an animated
glTF, with cameras and per-frame mesh vertices, in the format of ``shared/assets/animated/gt``
(see its README.md).

    python scripts/render_gt.py ../shared/assets/animated/Fox.glb --clip Walk --views 16 --frames 8 \
        --resolution 64 --out /tmp/Fox_v16_f8_64.npz [--sheet /tmp/Fox.png]

Uses the shared renderer (``blender_addon/render.py``) and cameras (``protocol/cameras.py``), so it
reproduces the shared renders. The object is normalised into the unit sphere over every integer
frame of the clip; a looping clip (last pose = first pose) is sampled without its end frame.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
from tqdm import tqdm  # noqa: E402

from protocol.cameras import DEFAULT_ELEVATION_DEG, DEFAULT_FILL, DEFAULT_FOV_DEG, orbit_rig  # noqa: E402


def load_asset(path: Path, clip: str | None, meshes: list[str] | None):
    """Import a glTF into an empty scene and play ``clip``: returns (mesh objects, action)."""
    import bpy

    bpy.ops.wm.read_factory_settings(use_empty=True)
    bpy.ops.import_scene.gltf(filepath=str(path))
    actions = {a.name: a for a in bpy.data.actions}
    if clip is None:
        if not actions:
            raise SystemExit(f"{path.name}: has no animation")
        clip = sorted(actions)[0]
    if clip not in actions:
        raise SystemExit(f"--clip {clip!r} not in {path.name}; clips: {', '.join(sorted(actions)) or 'none'}")
    action = actions[clip]
    owners = list(bpy.data.objects) + [ob.data.shape_keys for ob in bpy.data.objects
                                       if ob.type == "MESH" and ob.data.shape_keys is not None]
    assigned = 0
    for owner in owners:
        ad = owner.animation_data
        if ad is None:
            continue
        ad.action = action
        if getattr(ad, "action_slot", None) is None:
            slots = list(getattr(ad, "action_suitable_slots", []))
            if not slots:
                ad.action = None
                continue
            ad.action_slot = slots[0]
        assigned += 1
    if assigned == 0:
        raise SystemExit(f"clip {clip!r} drives nothing in {path.name}")
    if meshes:
        objs = [bpy.data.objects[n] for n in meshes if n in bpy.data.objects]
        missing = sorted(set(meshes) - {o.name for o in objs})
        if missing:
            raise SystemExit(f"--meshes: no object named {', '.join(missing)}")
    else:  # visible meshes (skips the importer's hidden bone-shape icospheres)
        objs = [o for o in bpy.data.objects if o.type == "MESH" and o.visible_get() and not o.hide_render]
    if not objs:
        raise SystemExit(f"{path.name}: no visible mesh")
    return sorted(objs, key=lambda o: o.name), action


def clip_frames(scene, objs, start: float, end: float, count: int, loops: bool | None):
    """F evenly spaced frames of [start, end] (end excluded for a looping clip) and whether it loops."""
    from blender_addon.render import evaluated_vertices

    if loops is None:
        def verts_at(frame):
            scene.frame_set(int(math.floor(frame)), subframe=float(frame - math.floor(frame)))
            return np.concatenate([evaluated_vertices(o) for o in objs])
        a, b = verts_at(start), verts_at(end)
        diag = float(np.linalg.norm(a.max(0) - a.min(0))) or 1.0
        loops = float(np.abs(a - b).max()) < 1e-3 * diag
    if count == 1:
        return np.array([start]), loops
    step = (end - start) / (count if loops else count - 1)
    return start + step * np.arange(count), loops


def triangles(obj) -> np.ndarray:
    mesh = obj.data
    mesh.calc_loop_triangles()
    tri = np.empty(len(mesh.loop_triangles) * 3, dtype=np.int32)
    mesh.loop_triangles.foreach_get("vertices", tri)
    return tri.reshape(-1, 3)


def render_gt(path: Path, clip: str | None, views: int, frames: int, resolution: int, engine: str,
              elevation: float, meshes: list[str] | None, loops: bool | None) -> dict:
    import bpy

    from blender_addon.render import RenderSettings, bounding_sphere_normalisation, evaluated_vertices, render_orbit

    objs, action = load_asset(path, clip, meshes)
    scene = bpy.context.scene
    start, end = (float(x) for x in action.frame_range)
    frame_list, loops = clip_frames(scene, objs, start, end, frames, loops)
    # normalise over every integer frame of the clip
    allv = []
    for fr in range(int(math.floor(start)), int(math.ceil(end)) + 1):
        scene.frame_set(fr)
        allv.append(np.concatenate([evaluated_vertices(o) for o in objs]))
    norm = bounding_sphere_normalisation(np.concatenate(allv))
    verts, offsets = [], np.cumsum([0] + [len(o.data.vertices) for o in objs])
    for fr in frame_list:
        scene.frame_set(int(math.floor(fr)), subframe=float(fr - math.floor(fr)))
        verts.append(norm.to_normalised(np.concatenate([evaluated_vertices(o) for o in objs])))
    verts = np.stack(verts).astype(np.float32)
    faces = np.concatenate([triangles(o) + off for o, off in zip(objs, offsets[:-1])]).astype(np.int32)
    rig = orbit_rig(views, resolution, elevation_deg=elevation)
    bar = tqdm(total=views * frames, desc=f"render {path.stem}", unit="img")
    t0 = time.perf_counter()
    settings = RenderSettings(resolution=resolution, engine=engine)
    images = np.zeros((views, frames, resolution, resolution, 4), dtype=np.uint8)
    for fi, fr in enumerate(frame_list):
        # Pose the *main* scene: headless, render_orbit's own frame_set on its temporary scene does
        # not re-evaluate armature actions (the render shows the last pose of the main scene).
        scene.frame_set(int(math.floor(fr)), subframe=float(fr - math.floor(fr)))
        images[:, fi] = render_orbit(objs, rig.K, rig.w2c, settings=settings, norm=norm, frames=None,
                                     progress=lambda i, n: bar.update(1))[:, 0]
    bar.close()
    per_image = (time.perf_counter() - t0) / (views * frames)
    fps = int(round(scene.render.fps / scene.render.fps_base))
    nv = verts.reshape(-1, 3)
    meta = {
        "source_file": path.name,
        "source_sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
        "clip": action.name, "clip_frame_range": [start, end], "clip_loops": bool(loops),
        "end_frame_included": not loops, "frames": [float(f) for f in frame_list], "fps": fps,
        "views": views, "azimuth_deg": rig.azimuth_deg.tolist(), "elevation_deg": elevation,
        "distance": rig.distance, "fov_deg": rig.fov_deg, "fill": DEFAULT_FILL, "resolution": resolution,
        "engine": engine, "norm_center": list(norm.center), "norm_scale": norm.scale,
        "mesh_names": [o.name for o in objs], "n_verts": int(verts.shape[1]), "n_faces": int(faces.shape[0]),
        "world_frame": "Blender world after normalisation: +Z up, glTF front (+Z) -> -Y; azimuth 0 camera on -Y",
        "camera_convention": "OpenCV (x right, y down, z forward); K principal point at ((W-1)/2,(H-1)/2)",
        "image_convention": "uint8 RGBA, RGB composited over white, A = coverage, rows top->bottom",
        "render_seconds_per_image": per_image, "bpy_version": bpy.app.version_string,
    }
    return {
        "images": images, "K": rig.K, "w2c": rig.w2c, "c2w": rig.c2w, "azimuth_deg": rig.azimuth_deg,
        "elevation_deg": rig.elevation_deg, "distance": np.float64(rig.distance), "fov_deg": np.float64(rig.fov_deg),
        "frames": np.asarray(frame_list, dtype=np.float64), "times_s": np.asarray(frame_list) / fps,
        "fps": np.int64(fps), "verts": verts, "faces": faces, "mesh_names": np.array([o.name for o in objs]),
        "mesh_vert_offsets": offsets.astype(np.int64), "norm_center": np.asarray(norm.center),
        "norm_scale": np.float64(norm.scale), "bbox_min": nv.min(0).astype(np.float64),
        "bbox_max": nv.max(0).astype(np.float64), "clip": np.array(action.name),
        "clip_frame_range": np.array([start, end]), "clip_loops": np.bool_(loops),
        "render_seconds_per_image": np.float64(per_image), "meta_json": np.array(json.dumps(meta)),
    }


def contact_sheet(images: np.ndarray, path: Path) -> None:
    """Views down, frames across, on grey separators."""
    from PIL import Image

    V, F, H, W = images.shape[:4]
    sheet = np.full((V * (H + 2) + 2, F * (W + 2) + 2, 3), 160, dtype=np.uint8)
    for v in range(V):
        for f in range(F):
            sheet[2 + v * (H + 2): 2 + v * (H + 2) + H, 2 + f * (W + 2): 2 + f * (W + 2) + W] = images[v, f, ..., :3]
    Image.fromarray(sheet).save(path)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("asset", type=Path, help="animated .glb/.gltf")
    ap.add_argument("--clip", help="action name (default: the first alphabetically)")
    ap.add_argument("--views", type=int, default=16)
    ap.add_argument("--frames", type=int, default=8)
    ap.add_argument("--resolution", type=int, default=64)
    ap.add_argument("--engine", default="WORKBENCH", choices=["WORKBENCH", "CYCLES"])
    ap.add_argument("--elevation", type=float, default=DEFAULT_ELEVATION_DEG)
    ap.add_argument("--meshes", nargs="*", help="mesh object names (default: the visible meshes)")
    ap.add_argument("--loops", choices=["auto", "yes", "no"], default="auto")
    ap.add_argument("--out", type=Path, required=True, help="output .npz")
    ap.add_argument("--sheet", type=Path, help="also save a contact sheet PNG")
    a = ap.parse_args(argv)
    if a.views < 1 or a.frames < 1 or a.resolution < 8:
        ap.error("--views and --frames must be >= 1 and --resolution >= 8")
    if not a.asset.exists():
        ap.error(f"asset not found: {a.asset}")
    loops = {"auto": None, "yes": True, "no": False}[a.loops]
    data = render_gt(a.asset, a.clip, a.views, a.frames, a.resolution, a.engine, a.elevation, a.meshes, loops)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(a.out, **data)
    if a.sheet:
        contact_sheet(data["images"], a.sheet)
    print(f"wrote {a.out}: {a.views} views x {a.frames} frames at {a.resolution}^2, "
          f"{data['verts'].shape[1]} vertices, clip {str(data['clip'])!r} loops={bool(data['clip_loops'])}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
