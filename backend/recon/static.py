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

from protocol.cameras import project

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


def still_weights(points: Tensor, changed: Tensor, K, w2c) -> Tensor:
    """1 where canonical points [P, 3] project onto an unchanged pixel in every view, else 0:
    [F, P] from changed [V, F, H, W] bool (``change_masks``), intrinsics K [V, 3, 3] and OpenCV
    w2c [V, 4, 4] (``protocol.cameras.project``). A point outside a view's image counts as changed there."""
    V, F_, H, W = changed.shape
    pix, depth = project(points.detach().cpu().numpy(), K, w2c)  # [V, P, 2], [V, P]
    front = depth > 0
    uv = np.round(np.where(front[..., None], pix, -1.0)).astype(np.int64)
    u, v = uv[..., 0], uv[..., 1]
    inside = torch.from_numpy(front & (u >= 0) & (u < W) & (v >= 0) & (v < H)).to(changed.device)  # [V, P]
    index = torch.from_numpy(np.clip(v, 0, H - 1) * W + np.clip(u, 0, W - 1)).to(changed.device)  # [V, P]
    moved = torch.gather(changed.reshape(V, F_, H * W), 2, index[:, None, :].expand(V, F_, -1))  # [V, F, P]
    moved = moved | ~inside[:, None, :]
    return (~moved.any(0)).to(points.dtype)
