"""Add-on figures: the longest timer tick during a job, and viewport playback of the imported point cloud.

    python scripts/bench_addon.py                       # 10,000 points x 25 frames, the sample mesh
    python scripts/bench_addon.py --points 10000 --frames 25 --mesh-subdiv 3 --loops 8

1. Timer ticks. A real ``python -m backend serve``-style server runs in a subprocess (``backend.server``
   with the simulated runner returning ``--points`` Gaussians, so no models are needed); headless
   Blender (bpy) renders the turntable, submits, and calls ``Session.poll_step`` every 50 ms as the
   ``bpy.app.timers`` callback would (timers do not fire in background mode). Every tick's wall time
   and main-thread CPU time is recorded, by phase: waiting/queued/running (events, previews) and
   importing (the result built a few steps per tick).
2. Playback. The imported point cloud alone in a scene, ``scene.frame_set`` over all frames
   (``--loops`` times): frames per second for the shipped representation (shape keys keyed per frame
   + Geometry Nodes points) and two alternatives (shape keys without the points modifier; a PC2
   Mesh Cache modifier + the points modifier).

Timings on a shared machine are noisy: CPU time per tick is printed next to wall time.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

ROOT = Path(__file__).resolve().parents[1]


def serve(endpoint: str, points: int, step_s: float) -> None:
    """The server subprocess: backend.server with the simulated runner (``points`` Gaussians)."""
    from backend.server import Server, ServerConfig
    from backend.simulate import SimulatedRunner, simulated_model_limits

    server = Server(ServerConfig(bind=endpoint), model_limits=simulated_model_limits(),
                    runner=SimulatedRunner(step_s=step_s, gaussians=points), models_name="simulated")
    server.start()
    print(f"serving on {server.endpoint}", flush=True)
    server.serve_forever()


def _free_endpoint() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"tcp://127.0.0.1:{s.getsockname()[1]}"


def _percentile(values, q):
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]


def bench_ticks(args) -> tuple[dict, object]:
    import bpy
    from tqdm import tqdm

    import blender_addon
    from blender_addon import samples, session as session_mod

    endpoint = _free_endpoint()
    proc = subprocess.Popen([sys.executable, __file__, "--serve", endpoint, "--points", str(args.points),
                             "--step", str(args.step)], cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        bpy.ops.wm.read_factory_settings(use_empty=True)
        blender_addon.register()
        obj = samples.add_sample(bpy.context)
        if args.mesh_subdiv:
            mod = obj.modifiers.new("subdiv", "SUBSURF")
            mod.levels = args.mesh_subdiv
        session = session_mod.get()
        session.connect_timeout_s = 120.0
        session.tick_log = []
        st = bpy.context.scene.dsquare
        st.server = endpoint
        bpy.ops.dsquare.connect()
        t0 = time.monotonic()
        while session.connection != "connected":
            session.poll_step()
            time.sleep(0.05)
            if proc.poll() is not None or time.monotonic() - t0 > 120:
                raise RuntimeError(f"server did not start: {proc.stderr.read()[-2000:]}")
        bpy.ops.dsquare.fit_to_backend()
        st.views, st.frames, st.steps, st.fit_iterations = args.views, args.frames, args.steps, 200
        session.tick_log = []
        t_render = time.perf_counter()
        bpy.ops.dsquare.generate()
        t_render = time.perf_counter() - t_render
        bar = tqdm(total=100, desc="job", unit="%")
        while session.busy:
            session.poll_step()
            bar.n = int(100 * session.job.factor)
            bar.refresh()
            time.sleep(0.05)  # the timer's interval while a job runs
        bar.close()
        if session.job.phase != "finished":
            raise RuntimeError(f"job ended {session.job.phase}: {session.notice}")
        log = session.tick_log
        vertices = len(bpy.data.objects[session.outcome.animated_mesh].data.vertices)
        by_phase = {}
        for phase, wall, cpu in log:
            by_phase.setdefault(phase, []).append((wall, cpu))  # phase when the tick began
        walls = [w for _, w, _ in log]
        worst = max(log, key=lambda t: t[1])
        stats = dict(ticks=len(log), max_wall=max(walls), max_cpu=max(c for _, _, c in log), p99=_percentile(walls, 0.99),
                     median=statistics.median(walls), worst_phase=worst[0], render_s=t_render,
                     import_ticks=len(by_phase.get("importing", [])),
                     import_total=sum(w for w, _ in by_phase.get("importing", [])),
                     by_phase={k: (len(v), max(w for w, _ in v), max(c for _, c in v)) for k, v in by_phase.items()},
                     vertices=vertices, resolution=st.resolution)
        return stats, session
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


def bench_playback(args, session) -> dict:
    """Frames per second of a frame_set loop with one representation of the point cloud in the scene
    at a time; representations are interleaved over ``--repeats`` rounds and the best and median
    rounds are kept (the machine is shared: single rounds are noisy)."""
    import bpy
    import numpy as np

    from blender_addon import bake

    pc = bpy.data.objects[session.outcome.point_cloud]
    F = session.job.result_frames
    scene = bpy.context.scene
    first = int(scene.frame_start)
    for ob in list(scene.objects):  # only the representation under test stays in the scene
        for coll in list(ob.users_collection):
            coll.objects.unlink(ob)

    plain = pc.copy()  # shape keys, no points modifier (shares mesh + keys + action)
    plain.modifiers.remove(plain.modifiers[0])
    cached = pc.copy()  # PC2 Mesh Cache + points modifier
    cached.data = pc.data.copy()
    scene.collection.objects.link(pc)
    tmp = Path(tempfile.mkdtemp()) / "pc.pc2"
    cache = bake.bake_pc2(pc, str(tmp), first, first + F - 1)
    scene.collection.objects.unlink(pc)
    cached.shape_key_clear()
    bake.attach_pc2(cached, str(tmp), first)
    reps = {"shape keys + GN points (shipped)": pc, "shape keys, no points modifier": plain,
            "PC2 Mesh Cache + GN points": cached}

    def round_fps(ob) -> tuple[float, float]:
        scene.collection.objects.link(ob)
        try:
            scene.frame_set(first)
            t0, c0 = time.perf_counter(), time.process_time()
            for _ in range(args.loops):
                for f in range(F):
                    scene.frame_set(first + f)
            n = args.loops * F
            return n / (time.perf_counter() - t0), n / max(1e-9, time.process_time() - c0)
        finally:
            scene.collection.objects.unlink(ob)

    results = {name: [] for name in reps}
    for _ in range(args.repeats):
        for name, ob in reps.items():
            results[name].append(round_fps(ob))
    # the PC2 copy plays the same positions
    scene.collection.objects.link(cached)
    scene.frame_set(first + F - 1)
    gs = cached.evaluated_get(bpy.context.evaluated_depsgraph_get()).evaluated_geometry()
    co = np.empty(len(gs.pointcloud.points) * 3, np.float32)
    gs.pointcloud.attributes["position"].data.foreach_get("vector", co)
    assert np.allclose(co.reshape(-1, 3), cache.positions[-1], atol=1e-5), "PC2 playback differs"
    scene.collection.objects.unlink(cached)
    out = {name: dict(best=max(w for w, _ in r), median=statistics.median(w for w, _ in r),
                      cpu_median=statistics.median(c for _, c in r)) for name, r in results.items()}
    out["_points"], out["_frames"] = len(pc.data.vertices), F
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--points", type=int, default=10_000, help="Gaussians (points) in the result")
    p.add_argument("--frames", type=int, default=25)
    p.add_argument("--views", type=int, default=4)
    p.add_argument("--steps", type=int, default=25, help="simulated sampling steps")
    p.add_argument("--step", type=float, default=0.02, help="seconds per simulated sampling step")
    p.add_argument("--mesh-subdiv", type=int, default=0, help="subdivide the sample mesh (more vertices to transfer)")
    p.add_argument("--loops", type=int, default=4, help="playback loops over all frames per round")
    p.add_argument("--repeats", type=int, default=5, help="playback rounds per representation (interleaved)")
    p.add_argument("--serve", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.serve:
        serve(args.serve, args.points, args.step)
        return 0
    stats, session = bench_ticks(args)
    print(f"\nTimer ticks during one job ({args.points} points x {args.frames} frames, {stats['vertices']} mesh vertices, "
          f"{args.views} views at {stats['resolution']} px):")
    print(f"  ticks {stats['ticks']}, longest {stats['max_wall'] * 1e3:.1f} ms wall (phase '{stats['worst_phase']}'), "
          f"longest CPU {stats['max_cpu'] * 1e3:.1f} ms, p99 {stats['p99'] * 1e3:.1f} ms, median {stats['median'] * 1e3:.2f} ms")
    for phase, (n, wall, cpu) in sorted(stats["by_phase"].items()):
        print(f"    {phase:<10} {n:5d} ticks  max {wall * 1e3:6.1f} ms wall  {cpu * 1e3:6.1f} ms CPU")
    print(f"  import spread over {stats['import_ticks']} ticks, {stats['import_total'] * 1e3:.0f} ms in all")
    print(f"  turntable render: {stats['render_s']:.2f} s for {args.views} views (in the UI one view per modal step; "
          f"here in one go, headless)")
    play = bench_playback(args, session)
    print(f"\nPlayback, headless frame_set loop, {play['_points']} points x {play['_frames']} frames "
          f"({args.repeats} rounds of {args.loops} loops; frames per second of wall time, and of process CPU time):")
    print(f"  {'representation':<34} {'best':>8} {'median':>8} {'CPU-median':>11}")
    for name, r in play.items():
        if not name.startswith("_"):
            print(f"  {name:<34} {r['best']:8.0f} {r['median']:8.0f} {r['cpu_median']:11.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
