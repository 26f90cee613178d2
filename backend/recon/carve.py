"""Initialisation from the matrix's first frame: silhouettes and space carving.

The turntable at time 0 (every view of frame 0) gives silhouettes; a voxel of the unit cube is kept
when it projects inside the (dilated) silhouette of every view that sees it, with ``tolerance``
views allowed to disagree (generated images are not perfectly consistent). Gaussians start on the
surface voxels of that visual hull.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def background_colour(image: np.ndarray) -> np.ndarray:
    """Median colour of an image's one-pixel border: image [H, W, 3] float -> [3]."""
    border = np.concatenate([image[0], image[-1], image[:, 0], image[:, -1]], 0)
    return np.median(border, axis=0)


def silhouettes(rgb: np.ndarray, alpha: np.ndarray | None = None, threshold: float = 0.06) -> np.ndarray:
    """Foreground masks [..., H, W] bool from RGB on a plain background [..., H, W, 3] in [0, 1]
    (pixels whose colour differs from the image's border colour by more than ``threshold``),
    or from coverage alpha [..., H, W] when given."""
    if alpha is not None:
        return alpha > 0.25
    flat = rgb.reshape((-1,) + rgb.shape[-3:])
    out = np.empty(flat.shape[:-1], dtype=bool)
    for i, img in enumerate(flat):
        out[i] = np.abs(img - background_colour(img)).max(-1) > threshold
    return out.reshape(rgb.shape[:-1])


def dilate(masks: np.ndarray, pixels: int) -> np.ndarray:
    """Square dilation of masks [..., H, W] by ``pixels``."""
    if pixels <= 0:
        return masks
    t = torch.from_numpy(masks.reshape((-1, 1) + masks.shape[-2:]).astype(np.float32))
    t = F.max_pool2d(t, 2 * pixels + 1, stride=1, padding=pixels)
    return t.numpy().reshape(masks.shape) > 0.5


def visual_hull(masks: np.ndarray, K: np.ndarray, w2c: np.ndarray, resolution: int = 48,
                tolerance: int = 0, dilation: int = 1, extent: float = 1.0) -> tuple[np.ndarray, float]:
    """Occupied voxel centres [P, 3] of the visual hull of masks [V, H, W] (cameras K [V, 3, 3],
    OpenCV w2c [V, 4, 4]) inside the cube [-extent, extent]³, and the voxel size."""
    V, H, W = masks.shape
    masks = dilate(masks, dilation)
    step = 2 * extent / resolution
    axis = -extent + step * (np.arange(resolution) + 0.5)
    grid = np.stack(np.meshgrid(axis, axis, axis, indexing="ij"), -1).reshape(-1, 3)
    misses = np.zeros(grid.shape[0], dtype=np.int32)
    for v in range(V):
        cam = grid @ w2c[v, :3, :3].T + w2c[v, :3, 3]
        z = cam[:, 2]
        pix = cam @ K[v].T
        u = np.round(pix[:, 0] / np.maximum(z, 1e-9)).astype(np.int64)
        w = np.round(pix[:, 1] / np.maximum(z, 1e-9)).astype(np.int64)
        inside = (z > 0) & (u >= 0) & (u < W) & (w >= 0) & (w < H)
        hit = np.zeros(grid.shape[0], dtype=bool)
        hit[inside] = masks[v, w[inside], u[inside]]
        misses += (inside & ~hit).astype(np.int32)
    occ = misses <= tolerance
    return grid[occ], step


def surface_voxels(points: np.ndarray, step: float) -> np.ndarray:
    """The voxels among ``points`` (centres on a grid of spacing ``step``) with an empty 6-neighbour."""
    if points.shape[0] == 0:
        return points
    keys = np.round(points / step).astype(np.int64)
    table = {tuple(k) for k in keys}
    out = []
    for p, k in zip(points, keys):
        for d in ((1, 0, 0), (-1, 0, 0), (0, 1, 0), (0, -1, 0), (0, 0, 1), (0, 0, -1)):
            if (k[0] + d[0], k[1] + d[1], k[2] + d[2]) not in table:
                out.append(p)
                break
    return np.asarray(out).reshape(-1, 3)


def sample_colours(points: np.ndarray, rgb: np.ndarray, masks: np.ndarray, K: np.ndarray, w2c: np.ndarray) -> np.ndarray:
    """Mean colour [P, 3] of points [P, 3] over the views where they project inside the mask
    (rgb [V, H, W, 3], masks [V, H, W]); grey where no view does."""
    V, H, W = masks.shape
    acc = np.zeros((points.shape[0], 3))
    cnt = np.zeros(points.shape[0])
    for v in range(V):
        cam = points @ w2c[v, :3, :3].T + w2c[v, :3, 3]
        pix = cam @ K[v].T
        z = np.maximum(cam[:, 2], 1e-9)
        u = np.clip(np.round(pix[:, 0] / z).astype(np.int64), 0, W - 1)
        w = np.clip(np.round(pix[:, 1] / z).astype(np.int64), 0, H - 1)
        ok = masks[v, w, u]
        acc[ok] += rgb[v, w[ok], u[ok]]
        cnt[ok] += 1
    out = np.full((points.shape[0], 3), 0.5)
    seen = cnt > 0
    out[seen] = acc[seen] / cnt[seen, None]
    return out


def initial_points(rgb0: np.ndarray, masks0: np.ndarray, K: np.ndarray, w2c: np.ndarray, count: int,
                   rng: np.random.Generator, resolution: int = 48) -> tuple[np.ndarray, np.ndarray, float]:
    """``count`` points on the visual hull of the first frame (rgb0 [V, H, W, 3], masks0 [V, H, W]),
    their colours and the voxel size. Falls back to a random ball when carving leaves nothing."""
    occ, step = np.zeros((0, 3)), 2.0 / resolution
    for tol in (0, 1, 2):
        occ, step = visual_hull(masks0, K, w2c, resolution=resolution, tolerance=tol)
        if occ.shape[0] >= 8:
            break
    if occ.shape[0] < 8:  # nothing consistent: random points in the unit ball
        pts = rng.normal(size=(count, 3))
        pts *= (rng.uniform(size=(count, 1)) ** (1 / 3)) * 0.8 / np.linalg.norm(pts, axis=1, keepdims=True)
        return pts, sample_colours(pts, rgb0, masks0, K, w2c), 0.05
    surf = surface_voxels(occ, step)
    pool = surf if surf.shape[0] >= 8 else occ
    pick = rng.integers(0, pool.shape[0], size=count)
    pts = pool[pick] + rng.uniform(-0.5, 0.5, size=(count, 3)) * step
    return pts, sample_colours(pts, rgb0, masks0, K, w2c), step
