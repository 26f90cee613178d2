"""Silhouette alignment: estimate each image's sub-pixel shift before carving.

A visual hull is the intersection of the silhouettes' viewing cones, so one silhouette that sits a
pixel or two off (generated images do) shaves that much off the hull everywhere it is the tightest
view: thin parts (legs, tails) can vanish from the hull, and with them from the initial Gaussians and
the hull-tracked motion. Consistent silhouettes carve the largest hull, so the shifts are found by
maximising a soft hull volume over them:

    volume(s) = sum_p prod_v m_v(pi_v(p) + s_v)

with p the voxels of a generous hull (dilated silhouettes, some views allowed to disagree), pi_v the
projection into view v, s_v view v's shift in pixels and m_v its silhouette blurred by about a pixel
(bilinear lookups, so the volume is differentiable in the shifts). The shifts' mean over the views
and the part a 3-D translation would explain are projected out (no disagreement). A few dozen Adam steps per frame; no rendering.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from .carve import visual_hull
from .corrections import shift_gauge
from .losses import blur_images


def shifted_intrinsics(K: np.ndarray, shifts: np.ndarray) -> np.ndarray:
    """Intrinsics K [V, 3, 3] with principal points moved by shifts [V, 2] (pixels): the cameras
    that saw each image where it actually is."""
    out = np.array(K, dtype=np.float64, copy=True)
    out[:, 0, 2] += shifts[:, 0]
    out[:, 1, 2] += shifts[:, 1]
    return out


def align_silhouettes(masks: np.ndarray, K: np.ndarray, w2c: np.ndarray, *, max_shift: float = 3.0,
                      resolution: int = 48, steps: int = 60, lr: float = 0.1, blur_px: float = 0.75,
                      prior: float = 0.01, min_gain: float = 0.03) -> np.ndarray:
    """Shifts [V, 2] (pixels, x along the width) that make silhouettes masks [V, H, W] (cameras
    K [V, 3, 3], OpenCV w2c [V, 4, 4]) carve the largest common hull, with no common part and no part
    a 3-D translation of the object would explain (``corrections.shift_gauge``: the volume does not
    change along those); ``prior`` pulls them toward zero where the volume is flat. Zeros when there
    is nothing to align (fewer than 3 views or no hull) or when the shifts grow the (hard) visual hull
    by less than ``min_gain`` (consistent silhouettes: measured on the ground-truth renders, the
    found shifts grow it by at most 2 %, against 6-50 % on the same renders shifted by up to 2 px)."""
    V, H, W = masks.shape
    if V < 3:
        return np.zeros((V, 2))
    pad = int(np.ceil(max_shift))
    occ = np.zeros((0, 3))
    for tol in (V // 4, V // 2):
        occ, _ = visual_hull(masks, K, w2c, resolution=resolution, tolerance=tol, dilation=pad)
        if occ.shape[0] >= 16:
            break
    if occ.shape[0] < 16:
        return np.zeros((V, 2))
    pts = torch.tensor(occ, dtype=torch.float32)
    Kt = torch.tensor(K, dtype=torch.float32)
    Rt = torch.tensor(w2c, dtype=torch.float32)
    cam = torch.einsum("vij,pj->vpi", Rt[:, :3, :3], pts) + Rt[:, None, :3, 3]
    z = cam[..., 2].clamp_min(1e-6)
    uv = torch.stack([Kt[:, None, 0, 0] * cam[..., 0] / z + Kt[:, None, 0, 2],
                      Kt[:, None, 1, 1] * cam[..., 1] / z + Kt[:, None, 1, 2]], -1)  # [V, P, 2]
    soft = torch.tensor(masks, dtype=torch.float32)[..., None]
    if blur_px > 0:
        soft = blur_images(soft, blur_px)
    soft = soft.permute(0, 3, 1, 2)  # [V, 1, H, W]
    gauge = shift_gauge(K, w2c)  # [2V, 2V]
    raw = torch.zeros(V, 2, requires_grad=True)
    opt = torch.optim.Adam([raw], lr=lr)
    scale = torch.tensor([2.0 / W, 2.0 / H])
    for _ in range(steps):
        s = (gauge @ raw.reshape(-1)).reshape(V, 2)
        p = uv + s[:, None, :]  # where each voxel lies in the image as it was generated
        grid = (p + 0.5) * scale - 1
        m = F.grid_sample(soft, grid[:, None], mode="bilinear", padding_mode="zeros", align_corners=False)[:, 0, 0]
        volume = m.clamp_min(1e-6).log().sum(0).exp().sum()  # soft count of voxels inside every silhouette
        opt.zero_grad()
        (-volume / pts.shape[0] + prior * (s**2).sum(-1).mean()).backward()
        opt.step()
        with torch.no_grad():
            raw.clamp_(-max_shift, max_shift)
    with torch.no_grad():
        s = (gauge @ raw.reshape(-1)).reshape(V, 2).numpy().astype(np.float64)
    before = visual_hull(masks, K, w2c, resolution=resolution, dilation=0)[0].shape[0]
    after = visual_hull(masks, shifted_intrinsics(K, s), w2c, resolution=resolution, dilation=0)[0].shape[0]
    if after < (1.0 + min_gain) * before:
        return np.zeros((V, 2))
    return s
