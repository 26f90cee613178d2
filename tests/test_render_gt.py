"""scripts/render_gt.py reproduces the shared ground truth (cameras, frames, vertices, images)."""

import os
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
ASSETS = Path(os.environ.get("DSQUARE_ASSETS", ROOT.parent / "shared" / "assets")) / "animated"

try:
    import bpy  # noqa: F401

    HAVE_BPY = True
except Exception:  # pragma: no cover - bpy is installed in CI
    HAVE_BPY = False


@pytest.mark.blender
@pytest.mark.skipif(not HAVE_BPY, reason="bpy not importable")
@pytest.mark.parametrize("name", ["RiggedSimple", "AnimatedMorphCube"])  # skinned and shape-key clips
def test_render_gt_matches_the_shared_ground_truth(name, tmp_path):
    gt_path = ASSETS / "gt" / f"{name}_v16_f8_64.npz"
    if not gt_path.exists():
        pytest.skip(f"shared assets missing: {gt_path}")
    sys.path.insert(0, str(ROOT / "scripts"))
    import render_gt

    out = tmp_path / "gt.npz"
    # 2 frames of a looping clip are the shared renders' frames 0 and 4
    assert render_gt.main([str(ASSETS / f"{name}.glb"), "--views", "16", "--frames", "2", "--resolution", "64",
                           "--out", str(out)]) == 0
    mine, ref = np.load(out), np.load(gt_path)
    np.testing.assert_allclose(mine["K"], ref["K"], atol=1e-4)
    np.testing.assert_allclose(mine["w2c"], ref["w2c"], atol=1e-5)
    np.testing.assert_allclose(mine["frames"], ref["frames"][[0, 4]], atol=1e-4)
    np.testing.assert_allclose(mine["verts"], ref["verts"][[0, 4]], atol=1e-5)
    assert np.array_equal(mine["faces"], ref["faces"]) and bool(mine["clip_loops"]) == bool(ref["clip_loops"])
    assert mine["images"].shape == (16, 2, 64, 64, 4)
    a = mine["images"][..., :3].astype(np.float64) / 255
    b = ref["images"][:, [0, 4], ..., :3].astype(np.float64) / 255
    per_frame = [-10 * np.log10(((a[:, f] - b[:, f]) ** 2).mean()) for f in range(2)]
    assert min(per_frame) > 30.0, per_frame  # the animation is played, not just the rest pose
