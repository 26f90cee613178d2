"""Procedural objects/motions (numpy) and the dataset renderer (bpy) behind the built-in models."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))

import procedural as P  # noqa: E402


def test_objects_and_motions_are_reproducible_and_start_at_rest():
    times = np.arange(8) / 8
    kinds, names = set(), set()
    for seed in range(60):
        a = P.make_object(np.random.default_rng(seed))
        b = P.make_object(np.random.default_rng(seed))
        assert np.array_equal(a.verts, b.verts) and a.colors == b.colors
        rng = np.random.default_rng([seed, 1])
        m = P.make_motion(rng, a)
        verts = P.animate(a, m, times)
        assert verts.shape == (8, len(a.verts), 3) and np.isfinite(verts).all()
        assert np.allclose(verts[0], a.verts, atol=1e-9), "frame 0 must be the rest pose"
        move = np.linalg.norm(verts - verts[:1], axis=-1).max()
        extent = np.linalg.norm(a.verts.max(0) - a.verts.min(0))
        assert move > 0.02 * extent, f"seed {seed}: {m.names} barely moves"
        assert len(a.face_material) == len(a.faces) and a.face_material.max() < len(a.colors)
        for c in a.colors:  # never near white: silhouettes must stay visible on the white background
            assert min(c) < 0.75
        kinds.add(a.kind)
        names.update(m.names)
    assert kinds == set(P.TEMPLATES)
    assert len(names) >= 7, f"motions used: {sorted(names)}"


def test_each_motion_moves_its_target():
    obj = P.make_object(np.random.default_rng(3))
    for name in P.MOTIONS:
        params = P._motion_params(name, np.random.default_rng(0), obj)
        if params is None:
            continue
        m = P.Motion((name,), [params])
        v = P.animate(obj, m, [0.0, 0.3])
        assert np.allclose(v[0], obj.verts), name
        assert np.abs(v[1] - v[0]).max() > 1e-3, name


@pytest.mark.blender
def test_rendered_items_follow_the_camera_convention(tmp_path):
    pytest.importorskip("bpy")
    import make_dataset as M

    for split, count in (("val-video", 2), ("val-multiview", 2), ("eval", 1)):
        assert M.main(["--split", split, "--count", str(count), "--out", str(tmp_path), "--shard-size", "4"]) == 0
    vid = np.load(tmp_path / "val-video" / "shard_00000.npz")
    mv = np.load(tmp_path / "val-multiview" / "shard_00000.npz")
    ev = np.load(tmp_path / "eval" / "shard_00000.npz")
    assert vid["images"].shape == (2, 8, 64, 64, 4)
    assert mv["images"].shape == (2, 8, 64, 64, 4)
    assert ev["images"].shape == (1, 8, 8, 64, 64, 4)
    for imgs in (vid["images"], mv["images"], ev["images"]):
        a = imgs[..., 3]
        cover = (a > 128).mean(axis=(-1, -2))
        assert (cover > 0.02).all() and (cover < 0.7).all(), "object visible and inside the frame"
        border = np.concatenate([imgs[..., 0, :, :3], imgs[..., -1, :, :3], imgs[..., :, 0, :3], imgs[..., :, -1, :3]], -2)
        assert (border > 250).mean() > 0.97, "white background around the object"
        bg = imgs[..., :3][a == 0]
        assert (bg == 255).all()
    # a video clip: one camera, the object moves; a static orbit: views differ, cameras 45 deg apart
    assert (vid["azimuth_deg"] == vid["azimuth_deg"][:, :1]).all()
    assert np.abs(vid["images"][:, 0].astype(int) - vid["images"][:, -1]).mean() > 0.5
    steps = np.diff(mv["azimuth_deg"], axis=1) % 360
    assert np.allclose(steps, 45.0)
    assert ev["azimuth_deg"][0, 0] == 0.0
    # same seed -> the same pixels
    M.main(["--split", "val-video", "--count", "2", "--out", str(tmp_path / "again"), "--shard-size", "4"])
    again = np.load(tmp_path / "again" / "val-video" / "shard_00000.npz")
    assert np.array_equal(again["images"], vid["images"])
