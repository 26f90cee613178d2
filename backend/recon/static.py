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
from .corrections import shift_gauge, shift_images
from .losses import blur_images


def change_masks(rgb: np.ndarray, threshold: float = 0.1, dilation: int = 2, search: float = 4.0,
                 blur: float = 0.7, K=None, w2c=None, consistent: float = 0.85) -> np.ndarray:
    """Pixels that changed between frame 0 and each frame: rgb [V, F, H, W, 3] in [0, 1] ->
    bool [V, F, H, W] in frame 0's pixels (frame 0 is all False).

    Each image is first divided by its background colour (a colour cast of the whole image is no
    change). A generator also places each image a pixel or two off, independently, which would read
    as change along every edge; so frame f is first moved onto frame 0 of its view by the translation
    (``align_to_first``, at most ``search`` px) under which the fewest pixels changed, and both are
    blurred by ``blur`` px (std) so that the resampling itself does not read as change (``search`` 0
    compares the images as they are, unblurred). A pixel changed when any channel then moved by more
    than ``threshold``; the masks are dilated by ``dilation`` pixels.

    An object that really moves a little as a whole (a hop, a sway, a small turn) also looks like
    misplaced images, but its image shifts agree across the views: they are what a 3-D translation of
    the object, or a shift common to all views, makes in these cameras. So given the cameras (K
    [V, 3, 3], OpenCV w2c [V, 4, 4]), a frame whose shifts are more than ``consistent`` (fraction of
    their squared length) such a motion is aligned only by the rest (``corrections.shift_gauge``),
    and the motion reads as change. Independent misplacements agree that well by chance rarely: with
    8 views the motion spans 5 of 16 dimensions, which take a third of random shifts' squared
    length on average and more than 0.85 of it in 0.03 % of frames (0.7: 1 %).

    Measured on the four assets' true vertices (bench_recon's matrices): no vertex called still moved
    more than 0.007 on the clean or the corrupted matrices of RiggedSimple, RiggedFigure and the
    AnimatedMorphCube (objects are about 2 across); on the Fox, where everything moves, under 1 % of
    the vertices were called still, moving 0.01 on average."""
    V, F_, H, W, _ = rgb.shape
    bg = np.stack([[background_colour(rgb[v, f]) for f in range(F_)] for v in range(V)])  # [V, F, 3]
    img = torch.from_numpy(np.clip(rgb / np.maximum(bg, 0.05)[:, :, None, None, :], 0, 1)).float()
    out = np.zeros((V, F_, H, W), dtype=bool)
    if F_ < 2:
        return out
    first = img[:, :1].expand(V, F_ - 1, H, W, 3).reshape(-1, H, W, 3)
    later = img[:, 1:].reshape(-1, H, W, 3)
    if search > 0:
        shift = align_to_first(later, first, threshold, search).reshape(V, F_ - 1, 2)
        if K is not None and w2c is not None:
            shift = without_consistent_motion(shift, shift_gauge(K, w2c), consistent)
        later = shift_images(later, shift.reshape(-1, 2))
        if blur > 0:
            first, later = blur_images(first, blur), blur_images(later, blur)
    out[:, 1:] = ((later - first).abs().amax(-1) > threshold).reshape(V, F_ - 1, H, W).numpy()
    return dilate(out, dilation)


def without_consistent_motion(shift: Tensor, projector: Tensor, consistent: float) -> Tensor:
    """Per-frame image shifts [V, F, 2] where a frame's shifts are more than ``consistent`` (fraction
    of their squared length) what a motion of the whole object would make (``projector`` [2V, 2V]
    from ``shift_gauge`` removes that part) -> that frame's shifts with that part removed."""
    V, F_, _ = shift.shape
    flat = shift.permute(1, 0, 2).reshape(F_, 2 * V).double()  # [F, 2V]
    rest = flat @ projector.double().T
    total = (flat**2).sum(1)
    motion = total - (rest**2).sum(1)
    flat = torch.where((motion > consistent * total)[:, None], rest, flat)
    return flat.reshape(F_, V, 2).permute(1, 0, 2).to(shift.dtype)


@torch.no_grad()
def align_to_first(images: Tensor, first: Tensor, threshold: float, search: float) -> Tensor:
    """Translation [N, 2] px (``shift_images``'s convention) that moves each image [N, H, W, 3] onto
    its ``first`` [N, H, W, 3] with the fewest pixels differing by more than ``threshold``: a whole-
    pixel search within +-``search``, then quarter pixels around the best; ties go to the shortest.
    Where most of an object stands still this is the image's misplacement; where all of it moves,
    whatever shift leaves the least change."""
    shift = torch.zeros(images.shape[0], 2)
    for step, radius in ((1.0, float(np.floor(search))), (0.25, 0.75)):
        offsets = torch.arange(-radius, radius + 1e-6, step)
        candidates = torch.stack(torch.meshgrid(offsets, offsets, indexing="xy"), -1).reshape(-1, 2)
        counts = torch.stack([((shift_images(images, shift + c) - first).abs().amax(-1) > threshold).sum((1, 2))
                              for c in candidates]).float()  # [K, N]
        counts = counts + 1e-3 * (shift[None] + candidates[:, None]).norm(dim=-1)  # ties: the shortest
        shift = shift + candidates[counts.argmin(0)]
    return shift


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
