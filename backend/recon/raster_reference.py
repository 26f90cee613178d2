"""Brute-force per-pixel reference rasteriser (numpy, float64) for tests.

Independent of the PyTorch path: no tiles, no culling boxes; every pixel walks every Gaussian in
depth order. Same image model (EWA projection with gsplat's Jacobian clamping and 2D blur, alpha
capped at 0.999, contributions under 1/255 skipped, a pixel finished once its transmittance
would fall to 1e-4, pixel centres at integer coordinates).
Slow by design: use on tiny images only.
"""

from __future__ import annotations

import numpy as np


def _rotmat(q: np.ndarray) -> np.ndarray:
    w, x, y, z = q / np.linalg.norm(q)
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
        [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
        [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
    ])


def render_reference(means, quats, scales, opacities, colors, viewmat, K, width, height,
                     background, eps2d: float = 0.3, near_plane: float = 0.01):
    """One camera. means [N, 3], quats [N, 4], scales [N, 3], opacities [N], colors [N, D],
    viewmat [4, 4], K [3, 3], background [D]. Returns (colour [H, W, D], alpha [H, W], depth [H, W])."""
    means, quats, scales = (np.asarray(a, np.float64) for a in (means, quats, scales))
    opacities, colors = np.asarray(opacities, np.float64), np.asarray(colors, np.float64)
    viewmat, K = np.asarray(viewmat, np.float64), np.asarray(K, np.float64)
    background = np.asarray(background, np.float64)
    R, t = viewmat[:3, :3], viewmat[:3, 3]
    fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
    splats = []
    for m, q, s, o, c in zip(means, quats, scales, opacities, colors):
        p = R @ m + t
        if p[2] <= near_plane:
            continue
        rot = _rotmat(q)
        cov_cam = R @ (rot @ np.diag(s**2) @ rot.T) @ R.T
        limx = (width - cx - 0.5) / fx + 0.3 * 0.5 * width / fx, (cx + 0.5) / fx + 0.3 * 0.5 * width / fx
        limy = (height - cy - 0.5) / fy + 0.3 * 0.5 * height / fy, (cy + 0.5) / fy + 0.3 * 0.5 * height / fy
        tx = p[2] * min(limx[0], max(-limx[1], p[0] / p[2]))
        ty = p[2] * min(limy[0], max(-limy[1], p[1] / p[2]))
        J = np.array([[fx / p[2], 0.0, -fx * tx / p[2] ** 2], [0.0, fy / p[2], -fy * ty / p[2] ** 2]])
        cov2 = J @ cov_cam @ J.T + eps2d * np.eye(2)
        if np.linalg.det(cov2) <= 0:
            continue
        mean2 = np.array([fx * p[0] / p[2] + cx, fy * p[1] / p[2] + cy])
        splats.append((p[2], mean2, np.linalg.inv(cov2), o, np.append(c, p[2])))
    splats.sort(key=lambda s: s[0])
    D = colors.shape[1]
    out = np.zeros((height, width, D + 1))
    acc = np.zeros((height, width))
    for i in range(height):
        for j in range(width):
            T = 1.0
            px = np.array([j, i], dtype=np.float64)
            for _, mean2, conic, o, feat in splats:
                d = mean2 - px
                sigma = 0.5 * d @ conic @ d
                alpha = min(0.999, o * np.exp(-sigma))
                if sigma < 0 or alpha < 1.0 / 255.0:
                    continue
                if T * (1.0 - alpha) <= 1e-4:  # pixel done (gsplat's early termination)
                    break
                out[i, j] += alpha * T * feat
                T *= 1.0 - alpha
            acc[i, j] = 1.0 - T
    rgb = out[..., :D] + (1.0 - acc)[..., None] * background
    return rgb, acc, out[..., D]
