"""Turntable rendering (headless bpy 5.0.1): the cameras sent to the backend are the ones that
rendered, to the pixel; the user's scene is untouched; animated objects render at the asked frame."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

bpy = pytest.importorskip("bpy", reason="bpy (headless Blender) is not installed")

import blender_addon  # noqa: E402
from addon_helpers import drive, fresh_file, mesh_digest, scene_snapshot  # noqa: E402
from blender_addon import render, session as session_mod  # noqa: E402
from fake_backend import FakeBackend, fake_limits  # noqa: E402
from protocol.cameras import project  # noqa: E402

pytestmark = pytest.mark.blender

ROOT = Path(__file__).resolve().parents[1]
ASSETS = Path(os.environ.get("DSQUARE_ASSETS", ROOT.parent / "shared" / "assets"))


@pytest.fixture(scope="module", autouse=True)
def addon():
    fresh_file()
    blender_addon.register()
    yield
    blender_addon.unregister()


def _material(name, rgb):
    mat = bpy.data.materials.new(name)
    mat.diffuse_color = (*rgb, 1.0)
    mat.node_tree.nodes["Principled BSDF"].inputs["Base Color"].default_value = (*rgb, 1.0)
    return mat


def _body_with_marker(marker_local=(0.9, -0.5, 0.7), radius=0.12):
    """A grey icosphere with a small red ball centred on ``marker_local`` (one mesh, two materials)."""
    import bmesh

    bm = bmesh.new()
    bmesh.ops.create_icosphere(bm, subdivisions=2, radius=0.8)
    for f in bm.faces:
        f.material_index = 0
    ret = bmesh.ops.create_icosphere(bm, subdivisions=2, radius=radius)
    bmesh.ops.translate(bm, verts=ret["verts"], vec=marker_local)
    for f in {f for v in ret["verts"] for f in v.link_faces}:
        f.material_index = 1
    me = bpy.data.meshes.new("body")
    bm.to_mesh(me)
    bm.free()
    me.materials.append(_material("grey", (0.5, 0.5, 0.5)))
    me.materials.append(_material("red", (1.0, 0.0, 0.0)))
    ob = bpy.data.objects.new("Body", me)
    bpy.context.scene.collection.objects.link(ob)
    ob.location = (3.0, -2.0, 1.5)
    ob.rotation_euler = (0.4, -0.3, 1.2)
    ob.scale = (2.0, 1.5, 1.8)
    return ob


def _user_scene_setup():
    """A user's scene with settings a turntable must not touch."""
    scene = bpy.context.scene
    scene.render.engine = "CYCLES"
    scene.render.resolution_x, scene.render.resolution_y = 1234, 567
    scene.render.filepath = "//renders/shot_"
    scene.render.film_transparent = False
    scene.render.image_settings.file_format = "JPEG"
    scene.frame_start, scene.frame_end = 5, 50
    scene.frame_set(7)
    cam = bpy.data.objects.new("UserCam", bpy.data.cameras.new("UserCam"))
    scene.collection.objects.link(cam)
    scene.camera = cam
    lamp = bpy.data.objects.new("Lamp", bpy.data.lights.new("Lamp", "POINT"))
    scene.collection.objects.link(lamp)
    return cam, lamp


def test_sent_cameras_project_a_known_vertex_to_where_blender_rendered_it():
    fresh_file()
    marker = np.array([0.9, -0.5, 0.7])
    ob = _body_with_marker(tuple(marker))
    cam, lamp = _user_scene_setup()
    lamp.select_set(True)
    bpy.context.view_layer.objects.active = ob
    ob.select_set(True)
    before, digest = scene_snapshot(), mesh_digest(ob)
    settings = bpy.context.scene.dsquare
    session = session_mod.get()
    with FakeBackend(steps=1, step_s=0.0, limits=fake_limits(resolution=96)) as fb:
        settings.server = fb.endpoint
        settings.views, settings.frames, settings.resolution, settings.elevation = 8, 4, 96, 20.0
        assert bpy.ops.dsquare.generate() == {"FINISHED"}
        assert scene_snapshot() == before  # rendering left the user's scene as it was
        assert mesh_digest(ob) == digest
        drive(session, lambda: bool(fb.submits), timeout=10)
        sub = fb.submits[0]  # decoded on the backend's side of the wire
        session.cancel()
        drive(session, lambda: not session.busy, timeout=10)
    cams = sub.cameras
    images = np.asarray(sub.turntable)
    assert images.shape == (8, 96, 96, 4)
    assert (images[:, 0, 0] == [255, 255, 255, 0]).all()  # white background, alpha 0
    np.testing.assert_allclose(cams.elevation_deg, 20.0)
    np.testing.assert_allclose(cams.azimuth_deg, np.arange(8) * 45.0)
    # the marker's centre in the normalised space the cameras live in
    mw = np.array(ob.matrix_world)
    world = mw[:3, :3] @ marker + mw[:3, 3]
    norm = session.job.capture.norm
    pix, depth = project(norm.to_normalised(world[None]), cams.intrinsics, cams.world_to_cam)
    # the ball's pixels: clearly red (the grey body's faint tints do not count)
    img = images.astype(np.float64)
    red = (img[..., 0] - np.maximum(img[..., 1], img[..., 2]) > 30.0) & (img[..., 3] > 0)
    _, body_depth = project(norm.to_normalised(mw[:3, 3][None]), cams.intrinsics, cams.world_to_cam)
    checked = 0
    for v in range(8):
        if depth[v, 0] > body_depth[v, 0]:
            continue  # the ball is behind the body's centre: (partly) hidden in this view
        ys, xs = np.nonzero(red[v])
        assert len(xs) >= 6, f"view {v}: the red ball is not in the image"
        err = np.hypot(xs.mean() - pix[v, 0, 0], ys.mean() - pix[v, 0, 1])
        assert err < 1.0, f"view {v}: ball rendered at ({xs.mean():.2f}, {ys.mean():.2f}), the sent cameras say {pix[v, 0]}"
        checked += 1
    assert checked >= 4
    # the vertices sent are the evaluated mesh in the same normalised space
    verts = np.asarray(sub.vertices)
    assert verts.shape == (len(ob.data.vertices), 3)
    assert np.abs(np.linalg.norm(verts, axis=1).max() - 1.0) < 1e-5
    co = np.empty(verts.size, np.float32)
    ob.data.vertices.foreach_get("co", co)
    np.testing.assert_allclose(norm.to_normalised(co.reshape(-1, 3) @ mw[:3, :3].T + mw[:3, 3]), verts, atol=1e-5)


def test_render_orbit_renders_each_asked_frame_and_restores_the_users_frame():
    fresh_file()
    import bmesh

    me = bpy.data.meshes.new("c")
    bm = bmesh.new()
    bmesh.ops.create_cube(bm, size=0.3)
    bm.to_mesh(me)
    bm.free()
    ob = bpy.data.objects.new("c", me)
    bpy.context.scene.collection.objects.link(ob)
    ob.location = (-0.5, 0, 0)
    ob.keyframe_insert("location", frame=1)
    ob.location = (0.5, 0, 0)
    ob.keyframe_insert("location", frame=11)
    scene = bpy.context.scene
    scene.frame_set(3)
    x_at_3 = ob.location.x
    from protocol.cameras import orbit_rig

    rig = orbit_rig(1, 32)
    imgs = render.render_orbit([ob], rig.K, rig.w2c, settings=render.RenderSettings(resolution=32),
                               norm=render.Normalisation((0.0, 0.0, 0.0), 1.0), frames=[1, 6, 11])
    cx = [np.nonzero(imgs[0, f, ..., 3] > 128)[1].mean() for f in range(3)]
    assert cx[0] < cx[1] < cx[2] and cx[2] - cx[0] > 8  # it moved right, frame by frame
    assert scene.frame_current == 3 and ob.location.x == pytest.approx(x_at_3)
    current = render.render_orbit([ob], rig.K, rig.w2c, settings=render.RenderSettings(resolution=32),
                                  norm=render.Normalisation((0.0, 0.0, 0.0), 1.0))
    cx3 = np.nonzero(current[0, 0, ..., 3] > 128)[1].mean()
    assert cx[0] < cx3 < cx[1]  # frames=None renders the user's current frame (3)


def _psnr(a, b):
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return 10 * np.log10(255.0 ** 2 / max(mse, 1e-12))


@pytest.mark.skipif(not (ASSETS / "animated" / "gt" / "RiggedSimple_v16_f8_64.npz").is_file(),
                    reason="shared assets (shared/assets/animated) not found")
def test_orbit_matches_ground_truth_renders_at_later_frames():
    """The shared ground truth of a skinned asset at frames after the first: this failed (≈16 dB)
    while ``render`` evaluated animation at the window scene's frame instead of the render scene's."""
    fresh_file()
    d = np.load(ASSETS / "animated" / "gt" / "RiggedSimple_v16_f8_64.npz")
    bpy.ops.import_scene.gltf(filepath=str(ASSETS / "animated" / "RiggedSimple.glb"))
    objects = [o for o in bpy.context.scene.objects if o.type == "MESH"]
    norm = render.Normalisation(tuple(map(float, d["norm_center"])), float(d["norm_scale"]))
    views, frames = [4, 12], [2, 5]
    imgs = render.render_orbit(objects, d["K"][views], d["w2c"][views], settings=render.RenderSettings(resolution=64),
                               norm=norm, frames=d["frames"][frames])
    for i, v in enumerate(views):
        for j, f in enumerate(frames):
            assert _psnr(imgs[i, j], d["images"][v, f]) > 23.0, (v, f)
