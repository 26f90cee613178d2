"""Generate -> backend -> keyframed geometry -> Alembic/PC2, and every way it can go wrong
(headless bpy 5.0.1; the timer's poll step is called directly, as timers do not run in background mode).

* Against the in-test fake backend (real socket, real codec, a Result with closed-form motion): the
  add-on's import path, exactly.
* Against the real server process (``python -m backend serve``): with the simulated runner, and with
  the built-in models once the whole pipeline is on this branch.
"""

from __future__ import annotations

import importlib
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

bpy = pytest.importorskip("bpy", reason="bpy (headless Blender) is not installed")

import blender_addon  # noqa: E402
from addon_helpers import datablock_counts, drive, fresh_file, mesh_digest, scene_snapshot  # noqa: E402
from blender_addon import bake, importer, samples, session as session_mod  # noqa: E402
from blender_addon.importer import srgb_to_linear  # noqa: E402
from fake_backend import FakeBackend, known_motion  # noqa: E402

pytestmark = pytest.mark.blender
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module", autouse=True)
def addon():
    fresh_file()
    blender_addon.register()
    yield
    blender_addon.unregister()


@pytest.fixture()
def session():
    """A fresh session (short timeouts) and a fresh file with the sample mesh selected."""
    session_mod.reset()
    s = session_mod.get()
    s.connect_timeout_s = 0.6
    s.cancel_timeout_s = 3.0
    fresh_file()
    yield s
    session_mod.reset()


def _settings(endpoint, views=4, frames=6, resolution=32, fps=12.0):
    st = bpy.context.scene.dsquare
    st.server = endpoint
    st.views, st.frames, st.resolution, st.fps = views, frames, resolution, fps
    st.steps, st.fit_iterations = 3, 20
    return st


def _user_settings():
    scene = bpy.context.scene
    scene.render.engine = "CYCLES"
    scene.render.resolution_x, scene.render.resolution_y = 1920, 804
    scene.render.filepath = "//out/frame_"
    scene.render.film_transparent = False
    scene.frame_start, scene.frame_end = 3, 90
    scene.frame_set(17)
    cam = bpy.data.objects.new("Cam", bpy.data.cameras.new("Cam"))
    scene.collection.objects.link(cam)
    scene.camera = cam


def _world_points(obj, geometry: str) -> np.ndarray:
    """World positions of an object's evaluated points ('points': the point cloud) or vertices ('mesh')."""
    ev = obj.evaluated_get(bpy.context.evaluated_depsgraph_get())
    if geometry == "points":
        gs = ev.evaluated_geometry()
        pc = gs.pointcloud
        co = np.empty(len(pc.points) * 3, np.float32)
        pc.attributes["position"].data.foreach_get("vector", co)
    else:
        me = ev.to_mesh()
        co = np.empty(len(me.vertices) * 3, np.float32)
        me.vertices.foreach_get("co", co)
        ev.to_mesh_clear()
    mw = np.array(ev.matrix_world)
    return co.reshape(-1, 3).astype(np.float64) @ mw[:3, :3].T + mw[:3, 3]


def _d2_objects():
    return [o for o in bpy.data.objects if o.get("dsquare_role") or o.name.startswith("D² ")]


def test_round_trip_with_the_fake_backend_imports_exactly_what_came_back(session, tmp_path):
    _user_settings()
    flower = samples.add_sample(bpy.context)
    flower.location = (1.0, 2.0, 0.5)
    flower.rotation_euler = (0.0, 0.0, 0.7)
    flower.scale = (1.5, 1.5, 1.5)
    bpy.context.view_layer.update()
    digest = mesh_digest(flower)
    before = scene_snapshot()
    with FakeBackend(steps=3, step_s=0.01, gaussians=400) as fb:
        st = _settings(fb.endpoint)
        assert bpy.ops.dsquare.generate() == {"FINISHED"}
        drive(session, lambda: not session.busy, timeout=30)
    assert session.job.phase == "finished", session.notice
    sub = fb.submits[0]
    res = fb.results[sub.job_id]
    F = st.frames
    assert sub.mode == "static3d" and np.asarray(sub.turntable).shape == (4, 32, 32, 4)
    assert sub.options.frames == F and sub.options.steps == 3 and sub.options.fps == 12.0

    # the user's things: the mesh is untouched, render settings and file paths too; the scene now
    # plays the animation (frame range and fps set on purpose)
    assert mesh_digest(flower) == digest and flower.hide_get()  # hidden, not modified
    after = scene_snapshot()
    for key in ("render", "format", "view", "camera", "world", "window_scene", "cameras", "lights", "worlds"):
        assert after[key] == before[key], key
    scene = bpy.context.scene
    assert (scene.frame_start, scene.frame_end, scene.render.fps, scene.render.fps_base) == (3, 3 + F - 1, 12, 1.0)
    assert scene.frame_current == 17

    out = session.outcome
    pc, mesh = bpy.data.objects[out.point_cloud], bpy.data.objects[out.animated_mesh]
    assert pc.get("dsquare_role") == "points" and mesh.get("dsquare_role") == "mesh"
    np.testing.assert_allclose(np.array(pc.matrix_world), np.array(flower.matrix_world), atol=1e-6)
    norm = session.job.capture.norm
    for f in range(F):
        scene.frame_set(3 + f)
        np.testing.assert_allclose(norm.to_normalised(_world_points(pc, "points")), res.centers[f], atol=2e-5)
        np.testing.assert_allclose(norm.to_normalised(_world_points(mesh, "mesh")), res.vertices[f], atol=2e-5)
    # the transferred motion is the fake backend's known motion of the vertices that were sent
    np.testing.assert_allclose(res.vertices[F - 1], known_motion(np.asarray(sub.vertices), F - 1), atol=1e-6)
    keys = mesh.data.shape_keys.key_blocks
    assert len(keys) == F + 1 and keys[0].name == "Basis"
    scene.frame_set(3)
    first = _world_points(mesh, "mesh")
    scene.frame_set(3 + F - 1)
    last = _world_points(mesh, "mesh")
    assert np.abs(last - first).max() > 0.05  # the shape keys move the artist's mesh
    # per-point colours (sRGB bytes -> linear colour attribute, alpha = opacity) and the material shows them
    col = np.empty(len(pc.data.vertices) * 4, np.float32)
    pc.data.color_attributes["Col"].data.foreach_get("color", col)
    col = col.reshape(-1, 4)
    np.testing.assert_allclose(col[:, :3], srgb_to_linear(res.colors / 255.0), atol=1e-5)
    np.testing.assert_allclose(col[:, 3], res.opacities, atol=1e-6)
    mat = pc.data.materials[0]
    attr = next(n for n in mat.node_tree.nodes if n.type == "ATTRIBUTE")
    assert attr.attribute_name == "Col" and attr.outputs["Color"].is_linked
    assert np.asarray(bpy.data.images["D² Matrix"].size).prod() > 0

    # Alembic: re-imports with the same frame count and positions
    abc = tmp_path / "result.abc"
    assert bpy.ops.dsquare.bake_alembic(filepath=str(abc)) == {"FINISHED"}
    assert pc.modifiers[0].show_viewport  # the points modifier is back on after the export
    check = bpy.data.scenes.new("check")
    check.render.fps, check.render.fps_base = scene.render.fps, scene.render.fps_base  # Alembic keeps seconds
    window = bpy.context.window
    window.scene = check
    bpy.ops.wm.alembic_import(filepath=str(abc), set_frame_range=True)
    assert check.frame_end - check.frame_start + 1 == F
    imported = {o.name: o for o in check.objects if o.type == "MESH"}
    assert len(imported) == 2
    pts = next(o for o in imported.values() if len(o.data.vertices) == res.centers.shape[1])
    check.frame_set(check.frame_start + 2)
    np.testing.assert_allclose(norm.to_normalised(_world_points(pts, "mesh")), res.centers[2], atol=1e-4)
    window.scene = scene

    # PC2: the animated mesh's motion, usable with the Mesh Cache modifier
    pc2 = tmp_path / "mesh.pc2"
    bpy.context.view_layer.objects.active = mesh
    assert bpy.ops.dsquare.bake_pc2(filepath=str(pc2)) == {"FINISHED"}
    cache = bake.read_pc2(str(pc2))
    assert cache.positions.shape == (F, len(mesh.data.vertices), 3)
    plain = bpy.data.objects.new("plain", bpy.data.meshes.new_from_object(flower))
    scene.collection.objects.link(plain)
    plain.matrix_world = flower.matrix_world
    bake.attach_pc2(plain, str(pc2), scene.frame_start)
    for f in (0, F // 2, F - 1):
        scene.frame_set(3 + f)
        np.testing.assert_allclose(norm.to_normalised(_world_points(plain, "mesh")), res.vertices[f], atol=2e-5)
    # the longest timer tick of this job (figures come from scripts/bench_addon.py)
    assert session.job.tick_max_s > 0


def test_reference_clip_goes_out_as_video_mode(session, tmp_path):
    from test_addon_core import _write_png

    for i in range(8):
        rgba = np.full((24, 24, 4), 255, np.uint8)
        rgba[..., 1] = 20 * i
        _write_png(tmp_path / f"ref_{i:03d}.png", rgba)
    samples.add_sample(bpy.context)
    with FakeBackend(steps=2, step_s=0.01) as fb:
        st = _settings(fb.endpoint, frames=6)
        st.motion_source = "CLIP"
        st.clip_path = str(tmp_path / "ref_000.png")
        st.clip_start = 1
        assert bpy.ops.dsquare.generate() == {"FINISHED"}
        drive(session, lambda: not session.busy, timeout=30)
    sub = fb.submits[0]
    assert sub.mode == "video"
    ref = np.asarray(sub.reference)
    assert ref.shape == (6, 32, 32, 4)
    np.testing.assert_array_equal(ref[:, 16, 16, 1], 20 * np.arange(1, 7))
    assert session.job.phase == "finished"


def test_keep_scene_fps_spreads_the_keys_and_a_deleted_original_still_gets_its_point_cloud(session, tmp_path):
    flower = samples.add_sample(bpy.context)
    scene = bpy.context.scene
    scene.render.fps, scene.frame_start = 24, 10
    with FakeBackend(steps=2, step_s=0.01) as fb:
        st = _settings(fb.endpoint, frames=4, fps=8.0)
        st.match_scene_fps = False
        assert bpy.ops.dsquare.generate() == {"FINISHED"}
        bpy.data.objects.remove(flower)  # the artist deletes the original while the backend works
        drive(session, lambda: not session.busy, timeout=20)
    assert session.job.phase == "finished"
    res = fb.results[session.job.job_id]
    out = session.outcome
    assert out.animated_mesh == "" and "no longer exists" in out.warnings[0]
    assert session.notice.level == "WARNING"
    assert (scene.render.fps, scene.frame_start, scene.frame_end) == (24, 10, 19)  # 4 frames at 8 fps = 9 scene frames
    pc = bpy.data.objects[out.point_cloud]
    norm = session.job.capture.norm
    for f, frame in enumerate((10, 13, 16, 19)):
        scene.frame_set(frame)
        np.testing.assert_allclose(norm.to_normalised(_world_points(pc, "points")), res.centers[f], atol=2e-5)
    scene.frame_set(11)  # a third of the way from generated frame 0 to 1
    np.testing.assert_allclose(norm.to_normalised(_world_points(pc, "points")),
                               res.centers[0] * 2 / 3 + res.centers[1] / 3, atol=2e-5)
    scene.frame_start, scene.frame_end = 1, 250  # the artist moved the range: bakes follow the animation
    bpy.context.view_layer.objects.active = pc
    assert bpy.ops.dsquare.bake_alembic(filepath=str(tmp_path / "keep.abc")) == {"FINISHED"}
    from blender_addon.operators import animation_range

    assert animation_range([pc], scene) == (10, 19)


# ----------------------------------------------------------------------------------------- errors


def _generate_expecting_error(match: str):
    with pytest.raises(RuntimeError, match=match):  # an ERROR report raises in scripts (status bar in the UI)
        bpy.ops.dsquare.generate()


def test_no_mesh_selected(session):
    _settings("tcp://127.0.0.1:9")
    counts = datablock_counts()
    bpy.context.view_layer.objects.active = None
    _generate_expecting_error("Select a mesh object first")
    cam = bpy.data.objects.new("Cam", bpy.data.cameras.new("Cam"))
    bpy.context.scene.collection.objects.link(cam)
    bpy.context.view_layer.objects.active = cam
    _generate_expecting_error("'Cam' is a camera, not a mesh")
    assert session.ui_state == "error" and session.client is None  # refused before any network
    counts["objects"] += 1
    counts["cameras"] += 1
    assert datablock_counts() == counts


def test_a_failing_render_is_reported_and_leaves_no_temporary_scene(session, monkeypatch):
    from blender_addon import render

    samples.add_sample(bpy.context)
    counts = datablock_counts()
    calls = []

    def broken(scene, path=None):
        calls.append(scene.name)
        if len(calls) == 2:
            raise RuntimeError("GPU lost (test)")
        return np.zeros((32, 32, 4), np.uint8)

    monkeypatch.setattr(render, "render_image", broken)
    _settings("tcp://127.0.0.1:9")
    _generate_expecting_error("The turntable could not be rendered")
    assert "GPU lost (test)" in session.notice.detail and not session.busy and session.client is None
    assert datablock_counts() == counts  # the temporary scene, its camera and world are gone


def test_backend_unreachable(session, capfd):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens here
    samples.add_sample(bpy.context)
    counts = datablock_counts()
    _settings(f"tcp://127.0.0.1:{port}")
    assert bpy.ops.dsquare.generate() == {"FINISHED"}  # rendered; waiting for the backend
    assert session.busy and session.status_text().startswith("Connecting")
    drive(session, lambda: not session.busy, timeout=10)
    assert session.ui_state == "error" and session.job.phase == "failed"
    assert session.notice.headline == "The dsquare backend is unreachable"
    assert f"127.0.0.1:{port}" in session.notice.detail and "python -m backend serve" in session.notice.detail
    assert "Error: The dsquare backend is unreachable" in capfd.readouterr().out  # reported via the status bar operator
    assert datablock_counts() == counts and session.client is None


def test_online_access_is_respected_for_remote_servers(session, monkeypatch):
    monkeypatch.setattr(session_mod, "online_access", lambda: False)
    assert not session.connect("tcp://192.0.2.10:5557")
    assert "Online access is disabled" in session.notice.headline and session.client is None
    assert session.connect("tcp://127.0.0.1:9")  # loopback stays allowed
    assert not session.connect("tcp://nohost")  # malformed: no port
    assert "not valid" in session.notice.headline and "tcp://HOST:PORT" in session.notice.detail
    assert session_mod.is_loopback("tcp://localhost:1") and session_mod.is_loopback("tcp://[::1]:1")
    assert session_mod.is_loopback("ipc:///tmp/x") and not session_mod.is_loopback("tcp://10.0.0.2:1")


def test_version_mismatch(session):
    samples.add_sample(bpy.context)
    with FakeBackend(behaviour="version") as fb:
        _settings(fb.endpoint)
        assert bpy.ops.dsquare.generate() == {"FINISHED"}
        drive(session, lambda: not session.busy, timeout=10)
    assert session.ui_state == "error"
    assert "another protocol version" in session.notice.headline
    assert "this server speaks protocol 2" in session.notice.detail
    assert not _d2_objects() and session.client is None


def test_job_failed_reports_the_backends_message_and_imports_nothing(session):
    samples.add_sample(bpy.context)
    counts = datablock_counts()
    with FakeBackend(behaviour="fail", steps=2, step_s=0.01) as fb:
        _settings(fb.endpoint)
        assert bpy.ops.dsquare.generate() == {"FINISHED"}
        drive(session, lambda: not session.busy, timeout=20)
    assert session.job.phase == "failed" and session.ui_state == "error"
    assert session.notice.headline == "Generation failed on the backend"
    assert "CUDA out of memory while fitting (fake)" in session.notice.detail and "fitting" in session.notice.detail
    assert datablock_counts() == counts and not _d2_objects()


def test_settings_beyond_the_backend_limits_are_refused_with_the_field_and_limit(session):
    samples.add_sample(bpy.context)
    with FakeBackend() as fb:
        st = _settings(fb.endpoint, views=5)  # not connected yet: found when the Welcome arrives
        assert bpy.ops.dsquare.generate() == {"FINISHED"}
        drive(session, lambda: not session.busy, timeout=10)
        assert session.job.phase == "failed"
        assert session.notice.field == "cameras.azimuth_deg.shape" and "limit: 4, 8" in session.notice.detail
        assert not fb.submits  # refused on the add-on's side, before sending
        _generate_expecting_error("Views 5: this backend makes 4, 8")  # connected now: refused before rendering
        st.views, st.frames = 4, 7
        _generate_expecting_error("Frames 7: this backend makes 4, 6, 8")


def test_cancel_while_running(session):
    samples.add_sample(bpy.context)
    counts = datablock_counts()
    with FakeBackend(steps=200, step_s=0.02) as fb:
        _settings(fb.endpoint)
        assert bpy.ops.dsquare.generate() == {"FINISHED"}
        drive(session, lambda: session.job.phase == "running" and session.job.step >= 2, timeout=15)
        assert bpy.ops.dsquare.cancel() == {"FINISHED"}
        assert session.job.phase == "cancelling"
        drive(session, lambda: not session.busy, timeout=10)
        assert fb.cancelled == [session.job.job_id]
    assert session.job.phase == "cancelled" and session.ui_state == "connected" and session.notice is None
    assert session.history[-1].headline.startswith("Generation cancelled")
    assert datablock_counts() == counts and not _d2_objects()


def test_cancel_during_import_leaves_nothing_behind(session):
    samples.add_sample(bpy.context)
    with FakeBackend(steps=1, step_s=0.0, gaussians=20000) as fb:
        _settings(fb.endpoint, frames=8)
        counts = datablock_counts()
        session.tick_budget_s = 1e-4  # one import step per tick
        assert bpy.ops.dsquare.generate() == {"FINISHED"}
        drive(session, lambda: session.job.phase == "importing", timeout=20)
        for _ in range(5):
            session.poll_step()
        assert bpy.data.objects.get("D² Flower points") is not None  # half-way through
        bpy.ops.dsquare.cancel()
    assert session.job.phase == "cancelled"
    assert datablock_counts() == counts and not _d2_objects() and not bpy.data.objects["Flower"].hide_get()
    assert (bpy.context.scene.frame_start, bpy.context.scene.render.fps) == (1, 24)


def test_failure_half_way_through_the_import_leaves_nothing_behind(session, monkeypatch):
    flower = samples.add_sample(bpy.context)

    def broken(self, coll, source):
        yield "mesh copy"
        raise RuntimeError("disk full (test)")

    monkeypatch.setattr(importer.ResultImporter, "_animated_mesh", broken)
    with FakeBackend(steps=1, step_s=0.0) as fb:
        _settings(fb.endpoint)
        counts = datablock_counts()
        assert bpy.ops.dsquare.generate() == {"FINISHED"}
        drive(session, lambda: not session.busy, timeout=20)
    assert session.job.phase == "failed"
    assert session.notice.headline == "The result could not be imported; nothing was added to the scene"
    assert "disk full (test)" in session.notice.detail
    assert datablock_counts() == counts and not _d2_objects() and not flower.hide_get()


def test_backend_restart_mid_job_is_reported_and_the_connection_comes_back(session):
    """The backend goes away mid-job: the panel says so and keeps trying; when a backend is back on
    the same port the connection returns, and the job it no longer knows fails with a clear message."""
    samples.add_sample(bpy.context)
    session.client_timeout_s = 0.5
    first = FakeBackend(steps=500, step_s=0.02)
    with first:
        _settings(first.endpoint)
        assert bpy.ops.dsquare.generate() == {"FINISHED"}
        drive(session, lambda: session.job.phase == "running", timeout=15)
    drive(session, lambda: session.connection == "lost", timeout=10)  # silence -> reconnecting
    assert session.busy and session.notice.level == "WARNING" and "reconnecting" in session.notice.headline
    assert "connection lost" in session.status_text()
    with FakeBackend(port=int(first.endpoint.rsplit(":", 1)[1])):
        drive(session, lambda: not session.busy, timeout=20)
        assert session.connection == "connected"
    assert session.job.phase == "failed"
    assert session.notice.headline == "The backend lost track of the job (was it restarted?)"
    assert not _d2_objects()


# ------------------------------------------------------------------------------------- live server


def _free_endpoint() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"tcp://127.0.0.1:{s.getsockname()[1]}"


class LiveServer:
    """``python -m backend serve`` in a subprocess on a free loopback port."""

    def __init__(self, *args: str):
        self.endpoint = _free_endpoint()
        self.proc = subprocess.Popen([sys.executable, "-m", "backend", "serve", "--bind", self.endpoint, *args], cwd=ROOT,
                                     env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        try:
            self.out, self.err = self.proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.out, self.err = self.proc.communicate()


def _live_round_trip(session, server: LiveServer, tmp_path, timeout: float, steps: int = 2):
    """Generate against a live server, then the issue's checks: evaluated positions = returned ones
    at every frame (point cloud and mesh), the Alembic file re-imports with the same frame count, the
    original mesh and the scene's render settings are unchanged. Returns (job, result, max motion)."""
    _user_settings()
    flower = samples.add_sample(bpy.context)
    digest = mesh_digest(flower)
    before = scene_snapshot()
    st = _settings(server.endpoint)
    session.connect_timeout_s = 120.0  # the server imports torch first
    assert bpy.ops.dsquare.connect() == {"FINISHED"}
    drive(session, lambda: session.connection == "connected" or server.proc.poll() is not None, timeout=150)
    assert session.connection == "connected", server.proc.stderr.read() if server.proc.poll() is not None else session.notice
    assert bpy.ops.dsquare.fit_to_backend() == {"FINISHED"}
    st.frames = min(session.welcome.limits.frames)
    st.steps, st.fit_iterations = steps, 20
    results = []
    on_result = session._on_result
    session._on_result = lambda r: (results.append(r), on_result(r))  # keep the Result this test compares with
    assert bpy.ops.dsquare.generate() == {"FINISHED"}
    drive(session, lambda: not session.busy, timeout=timeout)
    assert session.job.phase == "finished", session.notice
    res = results[0]
    out = session.outcome
    pc, mesh = bpy.data.objects[out.point_cloud], bpy.data.objects[out.animated_mesh]
    F = session.job.result_frames
    assert F == st.frames == res.centers.shape[0] and len(mesh.data.shape_keys.key_blocks) == F + 1
    scene = bpy.context.scene
    norm = session.job.capture.norm
    positions = []
    for f in range(F):
        scene.frame_set(scene.frame_start + f)
        np.testing.assert_allclose(norm.to_normalised(_world_points(pc, "points")), res.centers[f], atol=5e-5)
        positions.append(norm.to_normalised(_world_points(mesh, "mesh")))
        np.testing.assert_allclose(positions[-1], res.vertices[f], atol=5e-5)
    motion = float(np.abs(positions[-1] - positions[0]).max())
    assert mesh_digest(flower) == digest
    after = scene_snapshot()
    for key in ("render", "format", "view", "camera", "world", "cameras", "lights", "worlds"):
        assert after[key] == before[key], key
    abc = tmp_path / "live.abc"
    assert bpy.ops.dsquare.bake_alembic(filepath=str(abc)) == {"FINISHED"}
    check = bpy.data.scenes.new("check")
    check.render.fps, check.render.fps_base = scene.render.fps, scene.render.fps_base
    bpy.context.window.scene = check
    bpy.ops.wm.alembic_import(filepath=str(abc), set_frame_range=True)
    assert check.frame_end - check.frame_start + 1 == F
    bpy.context.window.scene = scene
    return session.job, res, motion


def test_live_server_simulated_runner(session, tmp_path):
    with LiveServer("--runner", "simulated", "--sim-step", "0.01") as server:
        job, res, motion = _live_round_trip(session, server, tmp_path, timeout=120)
    assert motion > 0.01  # the simulated runner sways the vertices: the shape keys move the mesh
    assert bpy.context.scene.dsquare.resolution == 576  # fitted to the simulated model set's limits
    assert job.released and job.capture.images is None  # big arrays let go once imported
    assert "Traceback" not in server.err


def _pipeline_missing() -> str:
    try:
        importlib.import_module("backend.recon").fit  # noqa: B018
    except (ImportError, AttributeError):
        return "backend.recon.fit (issue 4's 4D fitting) is not on this branch yet"
    return ""


@pytest.mark.slow
@pytest.mark.skipif(bool(_pipeline_missing()), reason=_pipeline_missing() or "pipeline present")
def test_live_server_builtin_models(session, tmp_path):
    """The issue's proof: the real server, the real pipeline, the built-in models (1 sampling step,
    20 fit iterations: plumbing, not quality; stage one alone took ~100 s for 2 steps on the loaded
    2-core machine)."""
    from backend.models.builtin import WEIGHTS_DIR

    args = [] if any(WEIGHTS_DIR.glob("*.safetensors")) else ["--untrained"]  # untrained: same nets, random weights
    with LiveServer(*args) as server:
        job, res, motion = _live_round_trip(session, server, tmp_path, timeout=400, steps=1)
    print(f"built-in models ({'untrained' if args else 'shipped weights'}): {job.result_frames} frames, "
          f"{res.centers.shape[1]} Gaussians, max vertex motion {motion:.4f}, timings {res.timings}")
    assert "Traceback" not in server.err
