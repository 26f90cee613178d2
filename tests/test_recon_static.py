"""The still prior (``backend/recon/static.py``): which pixels changed between frames, which canonical
points every view saw standing still, and what the prior does to a fit."""

import numpy as np
import pytest
import torch

from backend.recon import fit
from backend.recon.corrections import shift_images
from backend.recon.losses import blur_images
from backend.recon.static import align_to_first, change_masks, still_weights
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


def test_compared_as_they_are_a_one_pixel_shift_frees_a_small_still_part():
    # with the alignment off (search 0) a still scene shifted by a pixel reads as changed along its edges
    rgb = _frames_with_a_moving_square()
    rgb[:, 1] = np.roll(rgb[:, 1], 1, axis=3)
    changed = change_masks(rgb, threshold=0.1, dilation=2, search=0)
    assert changed[:, 1, 4:10, 3:11].all()


def _still_block_and_moving_block(V=2, F=3, size=40):
    """A big still block (14x14) and a small block moving 4 px down per frame: rgb [V, F, H, W, 3]."""
    rgb = np.ones((V, F, size, size, 3), dtype=np.float32)
    rgb[:, :, 6:20, 6:20] = (0.2, 0.4, 0.8)
    rgb[:, :, 8:12, 14:18] = (0.9, 0.9, 0.2)  # a detail inside the still block
    for f in range(F):
        rgb[:, f, 24 + 4 * f : 29 + 4 * f, 26:31] = (0.9, 0.3, 0.1)
    V, F_, H, W, C = rgb.shape  # edges anti-aliased, as a renderer's are
    return blur_images(torch.from_numpy(rgb.reshape(-1, H, W, C)), 0.6).numpy().reshape(rgb.shape)


def _misplace(rgb, shifts):
    """Move each image rgb [V, F, H, W, 3] by shifts [V, F, 2] px (what a generator does)."""
    V, F_, H, W, C = rgb.shape
    out = shift_images(torch.from_numpy(rgb.reshape(-1, H, W, C)), torch.tensor(shifts, dtype=torch.float32).reshape(-1, 2))
    return out.numpy().reshape(rgb.shape)


def test_align_to_first_finds_a_misplacement_to_a_quarter_pixel():
    rgb = _still_block_and_moving_block()
    first = torch.from_numpy(rgb[:, 0])
    misplaced_by = torch.tensor([[1.3, -2.6], [-0.4, 0.9]])
    found = align_to_first(shift_images(first, misplaced_by), first, threshold=0.1, search=4.0)
    assert torch.allclose(found, -misplaced_by, atol=0.25)  # moves them back
    assert found.abs().max() <= 4.0 + 0.75
    assert torch.equal(align_to_first(first, first, 0.1, 4.0), torch.zeros(2, 2))  # nothing to move: nothing


def test_change_masks_forgive_a_generators_misplacement_but_not_motion():
    rgb = _still_block_and_moving_block()
    shifts = np.array([[[0.0, 0.0], [1.4, -0.7], [-1.8, 0.6]], [[0.3, 0.5], [-0.9, -1.6], [0.2, 1.9]]])
    messy = _misplace(rgb, shifts)
    aligned = change_masks(messy, threshold=0.1, dilation=0)
    as_is = change_masks(messy, threshold=0.1, dilation=0, search=0)
    # inside the still block (frame-0 pixels, away from the moving block), compared as they are, the
    # detail's edges read as change in every image; aligned to a quarter pixel, only a few pixels do
    inside = (slice(None), slice(1, None), slice(10, 18), slice(8, 18))
    assert as_is[inside].any(axis=(2, 3)).all()
    assert aligned[inside].sum() <= 0.25 * as_is[inside].sum()
    # the moving block reads as changed wherever it left or arrived, aligned or not
    for f in (1, 2):
        assert aligned[:, f, 25:28, 27:30].all()  # where it was at frame 0
        assert aligned[:, f, 25 + 4 * f : 28 + 4 * f, 27:30].all()  # where it went (within a pixel or two)


def _blobs(rig, points, colours, size, sigma=1.6):
    """Anti-aliased coloured discs at the projections of points [P, 3] in every view: [V, H, W, 3]."""
    pix, _ = rig.project(points)
    ys, xs = np.mgrid[0:size, 0:size] + 0.5
    out = np.ones((rig.K.shape[0], size, size, 3), dtype=np.float32)
    for v in range(out.shape[0]):
        for (u, w), c in zip(pix[v], colours):
            a = np.exp(-((xs - u) ** 2 + (ys - w) ** 2) / (2 * sigma**2))[..., None].astype(np.float32)
            out[v] = out[v] * (1 - a) + a * c
    return out


def test_a_whole_object_moving_a_little_is_not_taken_for_misplaced_images():
    # a hop of the whole object shifts every view's image, but consistently with one 3-D translation
    # (independent misplacements are not): given the cameras, the hop reads as change
    size = 48
    rig = orbit_rig(8, size, elevation_deg=15.0)
    rng = np.random.default_rng(0)
    points = rng.uniform(-0.4, 0.4, (12, 3))
    colours = rng.uniform(0.1, 0.8, (12, 3)).astype(np.float32)
    rest = _blobs(rig, points, colours, size)
    hop = _blobs(rig, points + np.array([0.03, -0.02, 0.05]), colours, size)
    rgb = np.stack([rest, hop], 1)  # [V, 2, H, W, 3]
    def share_changed(changed):  # of the pixels the blobs cover at rest
        covered = rest.min(-1) < 0.8
        return changed[:, 1][covered].mean()

    blind = change_masks(rgb, threshold=0.1, dilation=0)  # no cameras: aligned away
    seeing = change_masks(rgb, threshold=0.1, dilation=0, K=rig.K, w2c=rig.w2c)
    as_is = change_masks(rgb, threshold=0.1, dilation=0, search=0)
    assert share_changed(as_is) > 0.5
    assert share_changed(blind) < 0.25  # what the rule is for
    assert share_changed(seeing) >= 0.75 * share_changed(as_is)  # (blurred before the comparison)
    # the same still scene, its images misplaced independently: still, cameras or not
    shifts = rng.uniform(-1.5, 1.5, (8, 2, 2))
    messy = _misplace(np.stack([rest, rest], 1), shifts)
    assert share_changed(change_masks(messy, threshold=0.1, dilation=0, search=0)) > 0.5
    assert share_changed(change_masks(messy, threshold=0.1, dilation=0, K=rig.K, w2c=rig.w2c)) < 0.25
