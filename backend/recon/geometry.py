"""Small differentiable geometry helpers: quaternions, rotations, 3D covariances.

Quaternions are (w, x, y, z) and need not be normalised (as in gsplat). Everything is batched
over leading dimensions.
"""

from __future__ import annotations

import torch
from torch import Tensor


def normalize_quat(q: Tensor, eps: float = 1e-12) -> Tensor:
    """q [..., 4] -> unit quaternion [..., 4]."""
    return q / q.norm(dim=-1, keepdim=True).clamp_min(eps)


def quat_to_rotmat(q: Tensor) -> Tensor:
    """(w, x, y, z) quaternions [..., 4] (any norm) -> rotation matrices [..., 3, 3]."""
    w, x, y, z = normalize_quat(q).unbind(-1)
    r = torch.stack(
        [
            1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
            2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
            2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
        ],
        dim=-1,
    )
    return r.reshape(q.shape[:-1] + (3, 3))


def quat_multiply(a: Tensor, b: Tensor) -> Tensor:
    """Hamilton product a * b of (w, x, y, z) quaternions [..., 4] (rotation b first, then a)."""
    aw, ax, ay, az = a.unbind(-1)
    bw, bx, by, bz = b.unbind(-1)
    return torch.stack(
        [
            aw * bw - ax * bx - ay * by - az * bz,
            aw * bx + ax * bw + ay * bz - az * by,
            aw * by - ax * bz + ay * bw + az * bx,
            aw * bz + ax * by - ay * bx + az * bw,
        ],
        dim=-1,
    )


def axis_angle_to_quat(v: Tensor) -> Tensor:
    """Rotation vectors [..., 3] (axis * angle, radians) -> unit quaternions [..., 4]; smooth at 0."""
    theta2 = (v * v).sum(-1, keepdim=True)
    theta = torch.sqrt(theta2 + 1e-24)
    half = 0.5 * theta
    # sin(theta/2)/theta with its Taylor series near 0 (keeps gradients finite at the identity)
    small = theta2 < 1e-8
    k = torch.where(small, 0.5 - theta2 / 48.0, torch.sin(half) / torch.where(small, torch.ones_like(theta), theta))
    return torch.cat([torch.cos(half), v * k], dim=-1)


def axis_angle_to_rotmat(v: Tensor) -> Tensor:
    """Rotation vectors [..., 3] -> rotation matrices [..., 3, 3]."""
    return quat_to_rotmat(axis_angle_to_quat(v))


def covariance_3d(quats: Tensor, scales: Tensor) -> Tensor:
    """Σ = R S Sᵀ Rᵀ from quaternions [..., 4] and (positive) scales [..., 3] -> [..., 3, 3]."""
    m = quat_to_rotmat(quats) * scales[..., None, :]
    return (m[..., :, None, :] * m[..., None, :, :]).sum(-1)  # elementwise: no tiny batched matmuls
