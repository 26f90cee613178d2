"""Add-on building blocks in headless bpy 5.0.1: keyframes (4.2-5.x helper), shape-key timelines,
PC2 caches and the Mesh Cache modifier, previews, reference clips, legacy wheels, settings."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile

import numpy as np
import pytest

bpy = pytest.importorskip("bpy", reason="bpy (headless Blender) is not installed")

from addon_helpers import fresh_file  # noqa: E402
from blender_addon import anim, bake, clip, deps, previews  # noqa: E402

pytestmark = pytest.mark.blender


def _points_object(points: np.ndarray, name: str = "pts"):
    me = bpy.data.meshes.new(name)
    me.vertices.add(points.shape[0])
    me.vertices.foreach_set("co", points.astype(np.float32).ravel())
    ob = bpy.data.objects.new(name, me)
    bpy.context.scene.collection.objects.link(ob)
    return ob


def _evaluated(ob) -> np.ndarray:
    ev = ob.evaluated_get(bpy.context.evaluated_depsgraph_get())
    me = ev.to_mesh()
    co = np.empty(len(me.vertices) * 3, np.float32)
    me.vertices.foreach_get("co", co)
    ev.to_mesh_clear()
    return co.reshape(-1, 3)


def test_slotted_action_helper_writes_keys_in_bulk():
    fresh_file()
    ob = _points_object(np.zeros((1, 3)))
    action = anim.ensure_action(ob, "move")
    assert anim.has_slotted_actions()  # 5.0: slots, no Action.fcurves
    assert not hasattr(action, "fcurves")
    fc = anim.ensure_fcurve(action, ob, "location", 0)
    assert anim.ensure_fcurve(action, ob, "location", 0) == fc  # found, not duplicated
    frames = np.arange(1, 101, dtype=np.float32)
    values = np.sin(frames / 10.0)
    anim.set_keyframes(fc, frames, values, "CONSTANT")
    assert len(fc.keyframe_points) == 100
    assert all(k.interpolation == "CONSTANT" for k in fc.keyframe_points)
    assert len(anim.action_fcurves(action, ob)) == 1
    scene = bpy.context.scene
    for f in (1, 37, 100):
        scene.frame_set(f)
        assert ob.location.x == pytest.approx(float(values[f - 1]), abs=1e-6)
    anim.set_keyframes(fc, [1, 2], [5, 6])  # replacing keys
    assert len(fc.keyframe_points) == 2
    anim.remove_animation(ob)
    assert ob.animation_data is None and "move" not in bpy.data.actions


def test_hat_keys_sum_to_one_everywhere():
    frame_of = np.array([1.0, 4.0, 7.0, 10.0])
    for t in np.linspace(-2, 13, 61):
        total = 0.0
        for i in range(4):
            fr, val = anim.hat_keys(i, frame_of)
            total += np.interp(t, fr, val, left=val[0], right=val[-1])
        assert total == pytest.approx(1.0)
    with pytest.raises(ValueError):
        anim.hat_keys(4, frame_of)


def test_shape_key_timeline_is_exact_at_keys_and_linear_between():
    from blender_addon.importer import ResultImporter, ImportSpec

    fresh_file()
    rng = np.random.default_rng(0)
    F, N = 5, 200
    centers = rng.normal(size=(F, N, 3)).astype(np.float32) * 0.3
    spec = ImportSpec(name="T", centers=centers, colors=np.zeros((N, 3), np.uint8), opacities=np.ones(N, np.float32),
                      scales=np.full((N, 3), 0.01, np.float32), vertices=None,
                      frame_of=np.array([10.0, 13.0, 16.0, 19.0, 22.0]), matrix_world=np.eye(4),
                      to_local=lambda p: np.asarray(p, np.float64), local_scale=1.0, set_frame_range=False)
    out = ResultImporter(spec).run()
    ob = bpy.data.objects[out.point_cloud]
    scene = bpy.context.scene
    ob.modifiers[0].show_viewport = False  # read the mesh vertices, not the points
    for f, frame in enumerate(spec.frame_of):
        scene.frame_set(int(frame))
        np.testing.assert_allclose(_evaluated(ob), centers[f], atol=2e-6)
    scene.frame_set(14)  # 1/3 of the way from key 1 (frame 13) to key 2 (frame 16)
    np.testing.assert_allclose(_evaluated(ob), centers[1] * 2 / 3 + centers[2] / 3, atol=2e-6)
    scene.frame_set(0)
    np.testing.assert_allclose(_evaluated(ob), centers[0], atol=2e-6)  # held before the start
    scene.frame_set(100)
    np.testing.assert_allclose(_evaluated(ob), centers[-1], atol=2e-6)  # held after the end


def test_pc2_round_trip_and_mesh_cache_modifier(tmp_path):
    fresh_file()
    rng = np.random.default_rng(1)
    pos = rng.normal(size=(6, 40, 3)).astype(np.float32)
    path = str(tmp_path / "c.pc2")
    bake.write_pc2(path, pos, start=10.0, rate=1.0)
    back = bake.read_pc2(path)
    assert back.start == 10.0 and back.rate == 1.0
    np.testing.assert_array_equal(back.positions, pos)
    assert os.path.getsize(path) == 32 + pos.nbytes
    ob = _points_object(np.zeros((40, 3)))
    bake.attach_pc2(ob, path, frame_start=10)
    scene = bpy.context.scene
    for i in range(6):
        scene.frame_set(10 + i)
        np.testing.assert_allclose(_evaluated(ob), pos[i], atol=1e-6)
    with pytest.raises(bake.BakeError):
        bake.write_pc2(path, pos[:, :, :2])
    (tmp_path / "bad.pc2").write_bytes(b"NOTACACHE" * 10)
    with pytest.raises(bake.BakeError):
        bake.read_pc2(str(tmp_path / "bad.pc2"))


def test_contact_sheet_and_preview_image():
    fresh_file()
    imgs = np.zeros((2, 3, 4, 5, 3), np.uint8)
    imgs[1, 2] = 200
    sheet = previews.contact_sheet(imgs, gap=1)
    assert sheet.shape == (2 * 5 - 1, 3 * 6 - 1, 4)
    assert (sheet[5:9, 12:17, :3] == 200).all() and (sheet[:4, :5, :3] == 0).all() and (sheet[4, :, :3] == 255).all()
    row = previews.contact_sheet(np.full((5, 4, 4, 4), 7, np.uint8))  # 5 images wrap into a 3x2 grid
    assert row.shape[:2] == (2 * 6 - 2, 3 * 6 - 2)
    img = previews.show("matrix", imgs)
    default = previews.contact_sheet(imgs)
    assert img.name == "D² Matrix" and tuple(img.size) == (default.shape[1], default.shape[0])
    np.testing.assert_array_equal(previews.read_image("D² Matrix")[..., :3], previews.contact_sheet(imgs)[..., :3])
    previews.show("matrix", imgs[:1])  # a different size updates the same image
    assert len([i for i in bpy.data.images if i.name.startswith("D² Matrix")]) == 1


def _write_png(path, rgba: np.ndarray) -> None:
    H, W = rgba.shape[:2]
    img = bpy.data.images.new("tmp_png", W, H, alpha=True)
    img.pixels.foreach_set((rgba[::-1].astype(np.float32) / 255.0).ravel())
    img.filepath_raw = str(path)
    img.file_format = "PNG"
    img.save()
    bpy.data.images.remove(img)


def test_reference_clip_from_image_sequence(tmp_path):
    fresh_file()
    for i in range(7):
        rgba = np.zeros((20, 40, 4), np.uint8)
        rgba[..., 0] = 30 * i
        rgba[..., 3] = 255
        _write_png(tmp_path / f"walk_{i + 1:04d}.png", rgba)
    (tmp_path / "other.png").write_bytes(b"")  # not part of the sequence
    clipa = clip.load_clip(str(tmp_path / "walk_0003.png"), frames=4, size=16, start=2)
    assert clipa.shape == (4, 16, 16, 4) and clipa.dtype == np.uint8
    # letterboxed: 40x20 -> 16x8 centred, transparent white above and below
    assert (clipa[:, :4, :, 3] == 0).all() and (clipa[:, :4, :, :3] == 255).all()
    assert (clipa[:, 4:12, :, 3] == 255).all()
    np.testing.assert_array_equal(clipa[:, 8, 8, 0], [60, 90, 120, 150])  # frames 2..5
    with pytest.raises(clip.ClipError) as err:
        clip.load_clip(str(tmp_path / "walk_0001.png"), frames=8, size=16)
    assert err.value.field == "clip_start" and "7 frames" in err.value.message
    with pytest.raises(clip.ClipError) as err:
        clip.load_clip(str(tmp_path / "missing.png"), frames=2, size=16)
    assert err.value.field == "clip_path"


@pytest.mark.skipif(not bpy.app.ffmpeg.supported, reason="this bpy build has no FFmpeg")
def test_reference_clip_from_movie(tmp_path):
    fresh_file()
    scene = bpy.data.scenes.new("make_movie")
    r = scene.render
    r.resolution_x, r.resolution_y, r.resolution_percentage = 32, 32, 100
    scene.view_settings.view_transform = "Standard"
    ed = scene.sequence_editor_create()
    for i in range(5):
        strip = ed.strips.new_effect(name=f"c{i}", type="COLOR", channel=1, frame_start=1 + i, length=1)
        strip.color = (i / 4.0, 0.2, 1.0 - i / 4.0)
    scene.frame_start, scene.frame_end = 1, 5
    r.image_settings.media_type = "VIDEO"
    r.image_settings.file_format = "FFMPEG"
    r.ffmpeg.format, r.ffmpeg.codec, r.ffmpeg.constant_rate_factor = "MPEG4", "H264", "LOSSLESS"
    r.filepath = str(tmp_path / "clip_")
    with bpy.context.temp_override(scene=scene):
        bpy.ops.render.render(animation=True)
    bpy.data.scenes.remove(scene)
    movie = next(p for p in tmp_path.iterdir() if p.suffix == ".mp4")
    frames = clip.load_clip(str(movie), frames=3, size=16, start=1)
    assert frames.shape == (3, 16, 16, 4)
    red = frames[:, 8, 8, 0].astype(int)
    assert red[0] < red[1] < red[2]  # frames 1, 2, 3 in order (red rises)
    assert abs(red[1] - 128) < 20  # colour strips are in display space: 0.5 -> 128
    scenes = len(bpy.data.scenes)
    with pytest.raises(clip.ClipError):
        clip.load_clip(str(movie), frames=5, size=16, start=3)
    assert len(bpy.data.scenes) == scenes  # the temporary scene is gone


def test_resize_preserves_mean_and_fit_square_shape():
    rng = np.random.default_rng(0)
    img = rng.uniform(size=(30, 50, 4)).astype(np.float32)
    small = clip.resize(img, 10, 17)
    assert small.shape == (10, 17, 4)
    assert small.mean() == pytest.approx(img.mean(), abs=0.01)
    big = clip.resize(img, 60, 100)
    assert big.shape == (60, 100, 4) and big.min() >= img.min() - 1e-6 and big.max() <= img.max() + 1e-6


def test_legacy_wheel_selection():
    linux = dict(system="linux", machine="x86_64", glibc=(2, 31))
    assert deps.wheel_fits("pyzmq-27.3.0-cp311-cp311-manylinux_2_26_x86_64.manylinux_2_28_x86_64.whl", (3, 11), **linux)
    assert not deps.wheel_fits("pyzmq-27.3.0-cp311-cp311-manylinux_2_26_x86_64.whl", (3, 11), system="linux",
                               machine="x86_64", glibc=(2, 17))
    assert deps.wheel_fits("pyzmq-27.3.0-cp312-abi3-manylinux_2_28_x86_64.whl", (3, 13), **linux)
    assert not deps.wheel_fits("pyzmq-27.3.0-cp312-abi3-manylinux_2_28_x86_64.whl", (3, 11), **linux)
    assert not deps.wheel_fits("msgpack-1.2.4-cp313-cp313-manylinux2014_x86_64.whl", (3, 11), **linux)
    assert deps.wheel_fits("msgpack-1.2.4-cp311-cp311-manylinux2014_x86_64.whl", (3, 11), **linux)
    assert deps.wheel_fits("msgpack-1.2.4-cp311-cp311-win_amd64.whl", (3, 11), system="win32", machine="AMD64")
    mac = dict(system="darwin", machine="arm64", macos=(14, 2))
    assert deps.wheel_fits("pyzmq-27.3.0-cp311-cp311-macosx_10_15_universal2.whl", (3, 11), **mac)
    assert deps.wheel_fits("msgpack-1.2.4-cp311-cp311-macosx_11_0_arm64.whl", (3, 11), **mac)
    assert not deps.wheel_fits("msgpack-1.2.4-cp311-cp311-macosx_10_9_x86_64.whl", (3, 11), **mac)
    assert not deps.wheel_fits("msgpack-1.2.4-cp311-cp311-win_amd64.whl", (3, 11), **linux)


def test_legacy_wheels_unpack_and_import(tmp_path):
    """A legacy install gets pyzmq/msgpack from its bundled wheels: built here as tiny stand-in wheels
    (pure-Python modules named zmq and msgpack), unpacked and imported in a Python without site-packages."""
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    tag = f"cp{sys.version_info[0]}{sys.version_info[1]}"
    for dist, mod in (("pyzmq", "zmq"), ("msgpack", "msgpack")):
        with zipfile.ZipFile(wheels / f"{dist}-1.0-{tag}-{tag}-manylinux_2_17_x86_64.whl", "w") as zf:
            zf.writestr(f"{mod}/__init__.py", f"WHERE = 'unpacked {dist}'\n")
        with zipfile.ZipFile(wheels / f"{dist}-1.0-{tag}-{tag}-win_amd64.whl", "w") as zf:
            zf.writestr(f"{mod}/__init__.py", "WHERE = 'wrong platform'\n")
    code = (
        "import importlib.util, sys, pathlib\n"
        f"spec = importlib.util.spec_from_file_location('deps', {deps.__file__!r})\n"
        "deps = importlib.util.module_from_spec(spec); spec.loader.exec_module(deps)\n"
        f"left = deps.ensure_wheels(pathlib.Path({str(wheels)!r}), pathlib.Path({str(tmp_path / '_deps')!r}))\n"
        "import zmq, msgpack\n"
        "print(left, zmq.WHERE, msgpack.WHERE)\n"
    )
    if not (sys.platform.startswith("linux") and deps.platform_ok("manylinux_2_17_x86_64")):
        pytest.skip("stand-in wheels are tagged for Linux x86_64")
    out = subprocess.run([sys.executable, "-S", "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[] unpacked pyzmq unpacked msgpack"


def test_point_cloud_material_renders_the_point_colours():
    """Left half red points, right half blue: a Cycles render of the imported point cloud shows them."""
    from blender_addon import render
    from blender_addon.importer import ImportSpec, ResultImporter
    from protocol.cameras import orbit_rig

    fresh_file()
    rng = np.random.default_rng(0)
    N = 400
    pts = rng.uniform(-0.7, 0.7, (N, 3)).astype(np.float32)
    pts[:, 1] = 0.0
    colors = np.where(pts[:, :1] < 0, [[255, 0, 0]], [[0, 0, 255]]).astype(np.uint8)
    spec = ImportSpec(name="T", centers=pts[None], colors=colors, opacities=np.ones(N, np.float32),
                      scales=np.full((N, 3), 0.06, np.float32), vertices=None, frame_of=np.array([1.0]),
                      matrix_world=np.eye(4), to_local=lambda p: np.asarray(p, np.float64), local_scale=1.0,
                      set_frame_range=False)
    pc = bpy.data.objects[ResultImporter(spec).run().point_cloud]
    rig = orbit_rig(1, 48, elevation_deg=0.0)
    img = render.render_orbit([pc], rig.K, rig.w2c, norm=render.Normalisation((0.0, 0.0, 0.0), 1.0),
                              settings=render.RenderSettings(resolution=48, engine="CYCLES", samples=4))[0, 0]
    left, right = img[:, :20], img[:, 28:]
    assert (img[..., 3] > 200).mean() > 0.1
    np.testing.assert_allclose(left[left[..., 3] > 200][:, :3].mean(0), [255, 0, 0], atol=8)
    np.testing.assert_allclose(right[right[..., 3] > 200][:, :3].mean(0), [0, 0, 255], atol=8)
