#!/usr/bin/env python
"""The whole product in one command: a static mesh in, an animated mesh, caches and pictures out.

    .venv/bin/python scripts/demo.py                       # the shipped sample mesh, built-in models, CPU
    .venv/bin/python scripts/demo.py --mesh my_model.glb   # your own .blend / .glb / .gltf / .obj / .fbx
    .venv/bin/python scripts/demo.py --models svd-sv3d --device cuda --checkpoints /models

Starts the backend on loopback, opens headless Blender (bpy), loads the mesh, and then does what
the artist's one button does: renders the turntable, generates motion, composes the views x frames
matrix, fits 4D Gaussians, and imports the animated point cloud and the animated mesh; then bakes
Alembic and PC2. Writes to --out (default out/):

    demo.blend  demo.abc  demo.pc2  matrix.png (views down, frames across)
    turntable.gif (the animated result on an orbit)  report.json (timings per stage, settings, metrics)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
from tqdm import tqdm  # noqa: E402

MESH_SUFFIXES = (".blend", ".glb", ".gltf", ".obj", ".fbx")


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mesh", default=None, help=f"your mesh ({', '.join(MESH_SUFFIXES)}); default: the shipped sample")
    ap.add_argument("--object", default=None, help="which object of the file to animate (default: the largest mesh)")
    ap.add_argument("--models", default="builtin", help="model set: builtin (default) or svd-sv3d")
    ap.add_argument("--device", default="cpu", help="backend device, e.g. cpu or cuda")
    ap.add_argument("--checkpoints", default=None, help="checkpoint folder for real models")
    ap.add_argument("--out", default=str(ROOT / "out"), help="output folder (default: out/)")
    ap.add_argument("--steps", type=int, default=None, help="sampling steps (default: 20 on CPU, 50 on GPU)")
    ap.add_argument("--vrs-steps", type=int, default=None, help="variance-reducing repeated steps (default: 4 CPU, 10 GPU)")
    ap.add_argument("--fit-iterations", type=int, default=None, help="4D fit iterations (default: 500 CPU, 2000 GPU)")
    ap.add_argument("--frames", type=int, default=None, help="animation frames (default: what the models make)")
    ap.add_argument("--views", type=int, default=None, help="orbit views (default: what the models make)")
    ap.add_argument("--elevation", type=float, default=10.0, help="orbit elevation in degrees")
    ap.add_argument("--fps", type=float, default=8.0, help="frames per second of the animation")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--engine", default="WORKBENCH", choices=("WORKBENCH", "CYCLES"), help="turntable renderer")
    ap.add_argument("--gif-size", type=int, default=160, help="side of the turntable GIF in pixels")
    ap.add_argument("--timeout", type=float, default=3600.0, help="give up on the job after this many seconds")
    ap.add_argument("--untrained", action="store_true", help=argparse.SUPPRESS)  # plumbing tests: random networks
    return ap.parse_args(argv)


# ----------------------------------------------------------------------------------------- backend


def free_endpoint() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"tcp://127.0.0.1:{s.getsockname()[1]}"


def start_backend(args, endpoint: str, log_path: Path) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "backend", "serve", "--bind", endpoint, "--models", args.models, "--device", args.device]
    if args.checkpoints:
        cmd += ["--checkpoints", args.checkpoints]
    if args.untrained:
        cmd += ["--untrained"]
    log = open(log_path, "w")
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)


def stop_backend(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


# ----------------------------------------------------------------------------------------- Blender


def load_mesh(bpy, path: Path | None, object_name: str | None):
    """Load the user's mesh (or the sample) into the empty file; return the mesh object to animate."""
    from blender_addon import samples

    if path is None:
        return samples.add_sample(bpy.context)
    if not path.is_file():
        raise SystemExit(f"--mesh: no such file: {path}")
    suffix = path.suffix.lower()
    if suffix not in MESH_SUFFIXES:
        raise SystemExit(f"--mesh: unsupported file type {suffix!r}; expected one of {', '.join(MESH_SUFFIXES)}")
    if suffix == ".blend":
        with bpy.data.libraries.load(str(path), link=False) as (src, dst):
            dst.objects = list(src.objects)
        for ob in dst.objects:
            if ob is not None:
                bpy.context.scene.collection.objects.link(ob)
    elif suffix in (".glb", ".gltf"):
        bpy.ops.import_scene.gltf(filepath=str(path))
    elif suffix == ".obj":
        bpy.ops.wm.obj_import(filepath=str(path))
    else:
        bpy.ops.import_scene.fbx(filepath=str(path))
    meshes = [o for o in bpy.context.scene.objects if o.type == "MESH" and o.visible_get()]
    if object_name:
        meshes = [o for o in meshes if o.name == object_name]
        if not meshes:
            raise SystemExit(f"--object: no visible mesh named {object_name!r} in {path}")
    if not meshes:
        raise SystemExit(f"--mesh: {path} holds no visible mesh object")
    obj = max(meshes, key=lambda o: len(o.data.vertices))
    for o in bpy.context.view_layer.objects:
        o.select_set(False)
    obj.select_set(True)
    bpy.context.view_layer.objects.active = obj
    return obj


def orbit_gif(bpy, obj, path: Path, frames: list[int], size: int, loops: int = 2) -> int:
    """Render the animated object on a full orbit while the animation plays; save an animated GIF."""
    from PIL import Image

    from blender_addon.render import (RenderSettings, bounding_sphere_normalisation, evaluated_vertices, render_image,
                                      set_camera, temporary_scene)
    from protocol.cameras import orbit_rig

    scene = bpy.context.scene
    keep = scene.frame_current
    pts = []
    for f in frames:
        scene.frame_set(f)
        pts.append(evaluated_vertices(obj))
    scene.frame_set(keep)
    norm = bounding_sphere_normalisation(np.concatenate(pts))
    n = len(frames) * loops
    rig = orbit_rig(n, size, elevation_deg=15.0)
    images = []
    with temporary_scene([obj], RenderSettings(resolution=size)) as tmp:
        for i in tqdm(range(n), desc="turntable.gif", unit="img", leave=False):
            tmp.frame_set(frames[i % len(frames)])
            set_camera(tmp, rig.K[i], rig.w2c[i], size, size, norm)
            images.append(Image.fromarray(render_image(tmp)[..., :3]))
    duration = max(40, int(1000 / max(1.0, scene.render.fps / scene.render.fps_base)))
    images[0].save(path, save_all=True, append_images=images[1:], duration=duration, loop=0, optimize=True)
    return n


def matrix_png(thumbnails: np.ndarray, path: Path) -> tuple[int, int]:
    """Contact sheet of the generated matrix: views down, frames across."""
    from PIL import Image

    from blender_addon.previews import contact_sheet

    sheet = contact_sheet(np.asarray(thumbnails, dtype=np.uint8))
    Image.fromarray(sheet[..., :3]).save(path)
    return thumbnails.shape[0], thumbnails.shape[1]


# ----------------------------------------------------------------------------------------- main


def main(argv=None) -> int:
    args = parse_args(argv)
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    gpu = args.device.startswith("cuda")
    steps = args.steps or (50 if gpu else 20)
    vrs_steps = args.vrs_steps if args.vrs_steps is not None else (10 if gpu else 4)
    fit_iters = args.fit_iterations or (2000 if gpu else 500)
    timings: dict[str, float] = {}
    t_all = time.perf_counter()

    endpoint = free_endpoint()
    print(f"[demo] backend: {args.models} on {args.device} at {endpoint} (log: {out / 'backend.log'})")
    t0 = time.perf_counter()
    backend = start_backend(args, endpoint, out / "backend.log")
    try:
        import bpy  # headless Blender

        import blender_addon
        from blender_addon import bake, session as session_mod

        bpy.ops.wm.read_factory_settings(use_empty=True)
        blender_addon.register()
        timings["blender_start_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        mesh_path = Path(args.mesh).resolve() if args.mesh else None
        obj = load_mesh(bpy, mesh_path, args.object)
        source_name = obj.name
        timings["load_mesh_s"] = time.perf_counter() - t0
        print(f"[demo] mesh: {source_name} ({len(obj.data.vertices)} vertices) from {mesh_path or 'the shipped sample'}")

        session = session_mod.get()
        session.connect_timeout_s = 300.0
        st = bpy.context.scene.dsquare
        st.server = endpoint
        t0 = time.perf_counter()
        bpy.ops.dsquare.connect()
        print("[demo] waiting for the backend to load its models…", flush=True)
        while session.connection != "connected":
            session.poll_step()
            time.sleep(0.05)
            if backend.poll() is not None:
                raise SystemExit(f"the backend exited (code {backend.returncode}); see {out / 'backend.log'}")
            if session.ui_state == "error":
                raise SystemExit(f"could not connect: {session.notice.text() if session.notice else ''}")
        timings["backend_start_s"] = time.perf_counter() - t0
        limits = session.welcome.limits
        print(f"[demo] connected after {timings['backend_start_s']:.1f} s: models {session.welcome.models} on {session.welcome.device}; "
              f"views {limits.views}, frames {limits.frames}, {limits.resolution} px")

        bpy.ops.dsquare.fit_to_backend()
        if args.views:
            st.views = args.views
        if args.frames:
            st.frames = args.frames
        st.elevation, st.engine, st.fps, st.seed = args.elevation, args.engine, args.fps, args.seed
        st.steps, st.vrs_steps, st.fit_iterations = steps, min(vrs_steps, steps), fit_iters
        settings = {k: getattr(st, k) for k in ("views", "frames", "resolution", "elevation", "engine", "steps", "seed",
                                               "schedule", "s0", "k", "combine", "vrs_steps", "vrs_repeats",
                                               "fit_iterations", "fps", "use_model_guidance", "guidance")}

        t0 = time.perf_counter()
        if bpy.ops.dsquare.generate() != {"FINISHED"}:
            raise SystemExit(f"Generate refused: {session.notice.text() if session.notice else ''}")
        timings["turntable_render_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        stage_start: dict[str, float] = {}
        with tqdm(total=1000, desc="job", mininterval=0.5,
                  bar_format="{desc}: {percentage:3.0f}%|{bar}| {elapsed}<{remaining}") as bar:
            while session.busy:
                session.poll_step()
                job = session.job
                stage_start.setdefault(job.stage, time.perf_counter())
                bar.set_description_str(f"{session_mod.STAGE_WORDS.get(job.stage, job.stage)}"
                                        + (f" {job.step}/{job.total}" if job.total else ""), refresh=False)
                bar.update(max(0, int(1000 * job.factor) - bar.n))  # redraws at most every mininterval
                if time.perf_counter() - t0 > args.timeout:
                    bpy.ops.dsquare.cancel()
                    raise SystemExit(f"the job took longer than --timeout {args.timeout:g} s; cancelled")
                if backend.poll() is not None:
                    raise SystemExit(f"the backend exited (code {backend.returncode}); see {out / 'backend.log'}")
                time.sleep(0.02)
        job = session.job
        if job.phase != "finished":
            raise SystemExit(f"the job ended '{job.phase}': {session.notice.text() if session.notice else ''}")
        timings["job_s"] = time.perf_counter() - t0
        timings["import_s"] = time.perf_counter() - stage_start.get("importing", time.perf_counter())
        outcome = session.outcome
        pc, mesh = bpy.data.objects[outcome.point_cloud], bpy.data.objects.get(outcome.animated_mesh or "")
        scene = bpy.context.scene
        frames = list(range(scene.frame_start, scene.frame_end + 1))

        t0 = time.perf_counter()
        abc, pc2 = out / "demo.abc", out / "demo.pc2"
        bake.export_alembic([o for o in (pc, mesh) if o is not None], str(abc), scene.frame_start, scene.frame_end)
        if mesh is not None:
            bake.bake_pc2(mesh, str(pc2), scene.frame_start, scene.frame_end)
        timings["bake_s"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        matrix_shape = matrix_png(job.thumbnails, out / "matrix.png") if job.thumbnails is not None else None
        gif_frames = orbit_gif(bpy, mesh if mesh is not None else pc, out / "turntable.gif", frames, args.gif_size)
        timings["pictures_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        bpy.ops.wm.save_as_mainfile(filepath=str(out / "demo.blend"), copy=True)
        timings["save_s"] = time.perf_counter() - t0
        timings["total_s"] = time.perf_counter() - t_all

        report = {
            "mesh": str(mesh_path) if mesh_path else "sample: blender_addon/samples/flower.obj",
            "object": source_name,
            "models": session.welcome.models, "device": session.welcome.device,
            "settings": settings,
            "timings_s": timings,
            "backend_timings_s": job.timings,
            "metrics": job.metrics,
            "outputs": {"blend": "demo.blend", "alembic": "demo.abc", "pc2": "demo.pc2" if mesh is not None else None,
                        "matrix_png": "matrix.png" if matrix_shape else None, "turntable_gif": "turntable.gif"},
            "result": {"frames": len(frames), "points": len(pc.data.vertices),
                       "mesh_vertices": len(mesh.data.vertices) if mesh is not None else 0,
                       "matrix_views_frames": list(matrix_shape) if matrix_shape else None, "gif_images": gif_frames},
            "longest_timer_tick_s": job.tick_max_s,
            "machine": {"python": platform.python_version(), "cpus": os.cpu_count(), "blender": bpy.app.version_string},
        }
        (out / "report.json").write_text(json.dumps(report, indent=2, default=float))
        print(f"[demo] done in {timings['total_s']:.1f} s; wrote {out}/demo.blend, demo.abc, demo.pc2, matrix.png, "
              "turntable.gif, report.json")
        for k, v in {**timings, **{f"backend.{k}": v for k, v in job.timings.items()}}.items():
            print(f"    {k:<26}{v:8.1f} s")
        session.disconnect(cancel_jobs=True)
        return 0
    finally:
        stop_backend(backend)


if __name__ == "__main__":
    sys.exit(main())
