"""Where the images say nothing moved: a prior that holds still parts still.

The hull tracking and the photometric fit both move the deformation graph as a whole; as-rigid-as-
possible coupling then drags parts that never moved along with their moving neighbours (on the
RiggedFigure the raised arms pulled the torso and the legs up). The images themselves say which
parts stayed put: a pixel whose colour is the same at frame f as at frame 0 in a view saw no motion
there. A canonical point is called *still at frame f* when its frame-0 projection falls on such an
unchanged pixel in *every* training view (dilated, so that a part moving across it or next to it
counts as change; one changed view is enough to free the point, which keeps occluded points and
parts moving along their own surface conservative). The fit then penalises the motion field's
displacement at the Gaussians that are still at each frame (``FitOptions.w_still``).

This reads only the training images; it never forces anything where any view saw a change.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from .carve import background_colour, dilate


def change_masks(rgb: np.ndarray, threshold: float = 0.1, dilation: int = 2) -> np.ndarray:
    """Pixels that changed between frame 0 and each frame: rgb [V, F, H, W, 3] in [0, 1] ->
    bool [V, F, H, W] (frame 0 is all False). Each image is first divided by its background colour
    (a colour cast of the whole image is no change); a pixel changed when any channel then moved by
    more than ``threshold``. The masks are dilated by ``dilation`` pixels.

    Images shifted independently by a pixel or so (as a generator's are) differ along every edge,
    so on them little or nothing reads as unchanged and the prior stays off by itself: measured on
    bench_recon's corrupted matrices, no point of any of the four assets was called still."""
    V, F_ = rgb.shape[:2]
    bg = np.stack([[background_colour(rgb[v, f]) for f in range(F_)] for v in range(V)])  # [V, F, 3]
    img = np.clip(rgb / np.maximum(bg, 0.05)[:, :, None, None, :], 0, 1)
    diff = np.abs(img - img[:, :1]).max(-1) > threshold
    return dilate(diff, dilation)


def still_weights(points: Tensor, changed: Tensor, K: Tensor, w2c: Tensor) -> Tensor:
    """1 where canonical points [P, 3] project onto an unchanged pixel in every view, else 0:
    [F, P] from changed [V, F, H, W] bool (``change_masks``), intrinsics K [V, 3, 3] and OpenCV
    w2c [V, 4, 4]. A point outside a view's image counts as changed there."""
    V, F_, H, W = changed.shape
    cam = torch.einsum("vij,pj->vpi", w2c[:, :3, :3], points) + w2c[:, None, :3, 3]  # [V, P, 3]
    z = cam[..., 2].clamp_min(1e-6)
    u = torch.round(K[:, None, 0, 0] * cam[..., 0] / z + K[:, None, 0, 2]).long()
    v = torch.round(K[:, None, 1, 1] * cam[..., 1] / z + K[:, None, 1, 2]).long()
    inside = (cam[..., 2] > 0) & (u >= 0) & (u < W) & (v >= 0) & (v < H)  # [V, P]
    pix = (v.clamp(0, H - 1) * W + u.clamp(0, W - 1))  # [V, P]
    flat = changed.reshape(V, F_, H * W)
    moved = torch.gather(flat, 2, pix[:, None, :].expand(V, F_, -1))  # [V, F, P]
    moved = moved | ~inside[:, None, :]
    return (~moved.any(0)).to(points.dtype)
