"""The still prior (``backend/recon/static.py``): which pixels changed between frames, which canonical
points every view saw standing still, and what the prior does to a fit."""

import numpy as np
import pytest
import torch

from backend.recon import fit
from backend.recon.static import change_masks, still_weights
from protocol.cameras import orbit_rig

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _frames_with_a_moving_square(V=3, F=3, size=32):
    rgb = np.ones((V, F, size, size, 3), dtype=np.float32)
    for v in range(V):
        for f in range(F):
            rgb[v, f, 4:10, 4:10] = (0.2, 0.4, 0.8)  # still
            rgb[v, f, 20:26, 10 + 3 * f : 16 + 3 * f] = (0.9, 0.3, 0.1)  # moves 3 px right per frame
    return rgb


def test_change_masks_mark_what_moved_and_ignore_a_colour_cast():
    rgb = _frames_with_a_moving_square()
    rgb[1, 2] *= np.array([0.95, 1.0, 0.96], dtype=np.float32)  # a whole-image cast is no change
    changed = change_masks(rgb, threshold=0.1, dilation=1)
    assert changed.shape == (3, 3, 32, 32) and changed.dtype == bool
    assert not changed[:, 0].any()  # frame 0 against itself
    assert not changed[:, 1:, 4:10, 4:10].any()  # the still square
    assert changed[:, 1:, 20:26, 10:13].all()  # where the moving square left
    assert changed[:, 2, 20:26, 16:22].all()  # where it arrived
    assert changed[:, 1, 19, 10].all()  # dilated by one pixel
    assert not changed[:, 1, 0:3].any()  # background far away


def test_still_weights_need_every_view_unchanged():
    rig = orbit_rig(4, 32, elevation_deg=10.0)
    K = torch.tensor(rig.K, dtype=torch.float32)
    w2c = torch.tensor(rig.w2c, dtype=torch.float32)
    points = torch.tensor([[0.0, 0.0, 0.0], [0.1, 0.05, 0.3], [0.0, 0.0, 9.0]])  # centre, off-centre, far outside
    changed = torch.zeros(4, 2, 32, 32, dtype=torch.bool)
    w = still_weights(points, changed, K, w2c)
    assert w.shape == (2, 3)
    assert w[:, :2].eq(1).all() and w[:, 2].eq(0).all()  # a point outside the images is never called still
    # one view sees a change where the second point projects at frame 1: it is free there, not at frame 0
    cam = w2c[2, :3, :3] @ points[1] + w2c[2, :3, 3]
    u, v = (K[2] @ cam)[:2] / cam[2]
    changed[2, 1, int(round(float(v))), int(round(float(u)))] = True
    w = still_weights(points, changed, K, w2c)
    assert w[1].tolist()[:2] == [1.0, 0.0] and w[0, 1] == 1.0


def test_a_one_pixel_shift_frees_a_small_still_part():
    # a generator's images are shifted independently; the prior must switch itself off, not pin
    # moving parts (a still scene shifted by a pixel in one frame reads as changed along its edges)
    rgb = _frames_with_a_moving_square()
    rgb[:, 1] = np.roll(rgb[:, 1], 1, axis=3)
    changed = change_masks(rgb, threshold=0.1, dilation=2)
    assert changed[:, 1, 4:10, 3:11].all()
