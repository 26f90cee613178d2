"""EWA projection of 3D Gaussians into pinhole cameras (pure PyTorch, differentiable).

Camera convention (``protocol/cameras.py``): OpenCV world-to-camera matrices (x right, y down,
z forward) and intrinsics whose principal point is in pixel-centre coordinates (pixel ``i`` covers
``[i - 0.5, i + 0.5]``). gsplat puts pixel centres at ``i + 0.5``; ``to_gsplat_intrinsics`` converts.

The projection follows gsplat 1.5's ``fully_fused_projection`` (same Jacobian clamping, 2D blur
``eps2d``, opacity-aware screen radius, near plane), so both rasterisers cull the same Gaussians.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from .geometry import covariance_3d

ALPHA_THRESHOLD = 1.0 / 255.0
MAX_ALPHA = 0.999
EXTEND_SIGMA = 3.33


@dataclass
class Projected:
    """Per image and Gaussian screen-space quantities; shapes [B, C, N, ...] (B batches, C cameras).

    means2d: [B, C, N, 2] pixel-centre coordinates (u along the width).
    conics:  [B, C, N, 3] inverse 2D covariance (a, b, c) = [[a, b], [b, c]].
    depths:  [B, C, N] camera-space z.
    radii:   [B, C, N, 2] integer half-extent of the screen bounding box (x, y); 0 = culled.
    """

    means2d: Tensor
    conics: Tensor
    depths: Tensor
    radii: Tensor

    @property
    def visible(self) -> Tensor:
        return (self.radii > 0).all(-1)


def to_gsplat_intrinsics(Ks: Tensor) -> Tensor:
    """Our pixel-centre intrinsics [..., 3, 3] -> gsplat's (pixel centres at i + 0.5)."""
    out = Ks.clone()
    out[..., 0, 2] += 0.5
    out[..., 1, 2] += 0.5
    return out


def project_gaussians(
    means: Tensor,
    quats: Tensor,
    scales: Tensor,
    opacities: Tensor,
    viewmats: Tensor,
    Ks: Tensor,
    width: int,
    height: int,
    *,
    eps2d: float = 0.3,
    near_plane: float = 0.01,
    far_plane: float = 1e10,
) -> Projected:
    """Project Gaussians means/quats/scales [B, N, 3|4|3], opacities [B, N] into cameras
    viewmats [B, C, 4, 4], Ks [B, C, 3, 3]."""
    R = viewmats[..., :3, :3]  # [B, C, 3, 3]
    t = viewmats[..., :3, 3]  # [B, C, 3]
    mc = torch.einsum("bcij,bnj->bcni", R, means) + t[:, :, None, :]  # [B, C, N, 3]
    cov = covariance_3d(quats, scales)[:, None]  # [B, 1, N, 3, 3] world space

    x, y, z = mc.unbind(-1)
    fx, fy = Ks[..., 0, 0][..., None], Ks[..., 1, 1][..., None]  # [B, C, 1]
    cx, cy = Ks[..., 0, 2][..., None], Ks[..., 1, 2][..., None]
    cxg, cyg = cx + 0.5, cy + 0.5  # gsplat's principal point, for its clamping limits
    zs = torch.where(z.abs() < 1e-6, torch.full_like(z, 1e-6), z)
    tan_x, tan_y = 0.5 * width / fx, 0.5 * height / fy
    lim_xp, lim_xn = (width - cxg) / fx + 0.3 * tan_x, cxg / fx + 0.3 * tan_x
    lim_yp, lim_yn = (height - cyg) / fy + 0.3 * tan_y, cyg / fy + 0.3 * tan_y
    tx = zs * torch.minimum(lim_xp, torch.maximum(-lim_xn, x / zs))
    ty = zs * torch.minimum(lim_yp, torch.maximum(-lim_yn, y / zs))
    # rows of J @ R (the EWA Jacobian composed with the camera rotation), [B, C, N, 3] each
    Rb = R[:, :, None]  # [B, C, 1, 3, 3]
    r0, r1, r2 = Rb[..., 0, :], Rb[..., 1, :], Rb[..., 2, :]
    t0 = (fx / zs)[..., None] * r0 - (fx * tx / (zs * zs))[..., None] * r2
    t1 = (fy / zs)[..., None] * r1 - (fy * ty / (zs * zs))[..., None] * r2
    s0 = (cov * t0[..., None, :]).sum(-1)  # Σ t0ᵀ, [B, C, N, 3]
    s1 = (cov * t1[..., None, :]).sum(-1)
    a = (t0 * s0).sum(-1) + eps2d
    b = (t0 * s1).sum(-1)
    c = (t1 * s1).sum(-1) + eps2d
    det = a * c - b * b
    det_safe = torch.where(det > 0, det, torch.ones_like(det))
    conics = torch.stack([c / det_safe, -b / det_safe, a / det_safe], dim=-1)
    u = fx * x / zs + cx
    v = fy * y / zs + cy
    means2d = torch.stack([u, v], dim=-1)

    with torch.no_grad():
        op = opacities[:, None, :].expand_as(z)
        extend = torch.sqrt(2.0 * torch.log(op.clamp_min(ALPHA_THRESHOLD) / ALPHA_THRESHOLD))
        extend = extend.clamp_max(EXTEND_SIGMA)
        rx = torch.ceil(extend * torch.sqrt(a.clamp_min(0)))
        ry = torch.ceil(extend * torch.sqrt(c.clamp_min(0)))
        ug, vg = u + 0.5, v + 0.5
        ok = (z > near_plane) & (z < far_plane) & (det > 0) & (op >= ALPHA_THRESHOLD)
        ok &= (rx > 0) | (ry > 0)
        ok &= ~((ug + rx <= 0) | (ug - rx >= width) | (vg + ry <= 0) | (vg - ry >= height))
        ok &= torch.isfinite(u) & torch.isfinite(v)
        radii = torch.stack([torch.where(ok, rx, 0), torch.where(ok, ry, 0)], -1).to(torch.int32)
    return Projected(means2d=means2d, conics=conics, depths=z, radii=radii)


def tile_grid(width: int, height: int, tile_size: int) -> tuple[int, int]:
    """(tiles across, tiles down)."""
    return math.ceil(width / tile_size), math.ceil(height / tile_size)
