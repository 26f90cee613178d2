"""Motion initialisation by tracking the deformation graph through per-frame visual hulls.

Every frame's silhouettes carve that frame's visual hull. Frame by frame (each starting from the
previous frame's pose, where consecutive poses are close), the keyframe's node transforms are fitted
so that the canonical surface points, moved by the motion field, match that frame's hull surface
while the node graph stays as rigid as possible: non-rigid ICP with an embedded deformation graph.
Each ICP iteration

1. finds nearest neighbours both ways (moved canonical points -> hull, hull -> moved points),
2. solves for every node translation at once: with rotations and correspondences fixed, the moved
   points are linear in the translations, so data + ARAP + a small damping term is one M x M linear
   least-squares problem (the same matrix for x, y and z),
3. updates every node rotation by Procrustes on its graph edges (the ARAP local step).

This needs no rendering, so it is cheap, and it gives the photometric fit a motion that is already
right at the scale of the silhouettes, thin parts that moved further than their own width included.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import Tensor

from .geometry import axis_angle_to_quat, quat_to_rotmat
from .motion import MotionField


def chamfer(a: Tensor, b: Tensor) -> Tensor:
    """Symmetric chamfer distance between point sets a [P, 3] and b [Q, 3] (mean of nearest distances)."""
    d = torch.cdist(a, b)
    return d.min(1).values.mean() + d.min(0).values.mean()


def rotmat_to_axis_angle(R: Tensor) -> Tensor:
    """Rotation matrices [..., 3, 3] -> rotation vectors [..., 3] (via quaternions; robust near pi)."""
    m = R
    t = m[..., 0, 0] + m[..., 1, 1] + m[..., 2, 2]
    cands = torch.stack([
        torch.stack([1 + t, m[..., 2, 1] - m[..., 1, 2], m[..., 0, 2] - m[..., 2, 0], m[..., 1, 0] - m[..., 0, 1]], -1),
        torch.stack([m[..., 2, 1] - m[..., 1, 2], 1 + m[..., 0, 0] - m[..., 1, 1] - m[..., 2, 2], m[..., 0, 1] + m[..., 1, 0], m[..., 0, 2] + m[..., 2, 0]], -1),
        torch.stack([m[..., 0, 2] - m[..., 2, 0], m[..., 0, 1] + m[..., 1, 0], 1 - m[..., 0, 0] + m[..., 1, 1] - m[..., 2, 2], m[..., 1, 2] + m[..., 2, 1]], -1),
        torch.stack([m[..., 1, 0] - m[..., 0, 1], m[..., 0, 2] + m[..., 2, 0], m[..., 1, 2] + m[..., 2, 1], 1 - m[..., 0, 0] - m[..., 1, 1] + m[..., 2, 2]], -1),
    ], -2)  # [..., 4, 4]: row i is 4 q_i q (the best-conditioned row is the one with the largest norm)
    best = cands.norm(dim=-1).argmax(-1)
    q = torch.gather(cands, -2, best[..., None, None].expand(best.shape + (1, 4)))[..., 0, :]
    q = q / q.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    q = torch.where(q[..., :1] < 0, -q, q)
    v = q[..., 1:]
    s = v.norm(dim=-1, keepdim=True)
    angle = 2 * torch.atan2(s, q[..., :1])
    return torch.where(s > 1e-9, v / s.clamp_min(1e-12) * angle, 2 * v)


def _skew(v: Tensor) -> Tensor:
    """[..., 3] -> cross-product matrices [..., 3, 3] ([v]x u = v x u)."""
    z = torch.zeros_like(v[..., 0])
    return torch.stack([torch.stack([z, -v[..., 2], v[..., 1]], -1),
                        torch.stack([v[..., 2], z, -v[..., 0]], -1),
                        torch.stack([-v[..., 1], v[..., 0], z], -1)], -2)


def _accumulate(H: Tensor, g: Tensor, nodes: Tensor, J: Tensor, r: Tensor, weight: Tensor) -> None:
    """Add sum_rows weight * J^T J and J^T r to H [6M, 6M] and g [6M]. Each residual row touches
    nodes [R, K] through Jacobian blocks J [R, K, 3, 6] (residuals r [R, 3], weights [R])."""
    R_, K = nodes.shape
    JtJ = torch.einsum("rkai,rlaj->rklij", J, J) * weight[:, None, None, None, None]  # [R, K, K, 6, 6]
    Jtr = torch.einsum("rkai,ra->rki", J, r) * weight[:, None, None]  # [R, K, 6]
    ar6 = torch.arange(6, device=H.device)
    n6 = H.shape[0]
    row = nodes[:, :, None, None, None] * 6 + ar6[:, None]  # [R, K, 1, 6, 1]
    col = nodes[:, None, :, None, None] * 6 + ar6[None, :]  # [R, 1, K, 1, 6]
    flat = (row * n6 + col).reshape(-1)  # broadcast to [R, K, K, 6, 6]
    H.view(-1).index_add_(0, flat, JtJ.reshape(-1))
    g.index_add_(0, (nodes[:, :, None] * 6 + ar6).reshape(-1), Jtr.reshape(-1))


@torch.no_grad()
def track_hulls(motion: MotionField, canonical: Tensor, hulls: Sequence[Tensor], *, iterations: int = 10,
                rigidity: float = 1.0, damping: float = 1e-4, from_rest: bool = False,
                cancel: Callable[[], bool] | None = None) -> list[float]:
    """Fit keyframes 1..F-1 of ``motion`` so that ``canonical`` points [P, 3] (frame 0) land on
    ``hulls[f]`` [Q_f, 3] (surface points of frame f's visual hull): Gauss-Newton on every node's
    translation and (linearised) rotation, nearest neighbours re-found each iteration. ``rigidity``
    weighs the ARAP energy (per edge, over the mean squared edge length) against the mean squared
    point-to-hull distances. Each frame starts from the previous frame's pose; with ``from_rest``
    also from the rest pose (frame 0), keeping the start that ends closer to the hull (the chain of
    previous poses can drift, e.g. when a cycle comes back near its start). Returns the chamfer
    distance per frame."""
    M = motion.num_nodes
    dev, dt = canonical.device, canonical.dtype
    idx = motion.neighbours(canonical)  # [P, K]
    w = motion.blend_weights(canonical, idx)  # [P, K]
    P = canonical.shape[0]
    nodes = motion.nodes.detach()
    gi, gw = motion.graph_idx, motion.graph_w  # [M, k]
    e0 = nodes[gi] - nodes[:, None]  # [M, k, 3] canonical edges
    arap_w = (rigidity / (gw.sum() * motion.edge_scale)) * gw.reshape(-1)
    edge_nodes = torch.stack([torch.arange(M, device=dev)[:, None].expand_as(gi), gi], -1).reshape(-1, 2)
    eye3 = torch.eye(3, device=dev, dtype=dt)

    def track_frame(t: Tensor, R: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
        Q = target.shape[0]
        for _ in range(iterations):
            rl = (R[idx] * (canonical[:, None, :] - nodes[idx])[..., None, :]).sum(-1)  # R_k (x - p_k) [P, K, 3]
            x = (w[..., None] * (rl + nodes[idx] + t[idx])).sum(1)  # moved points [P, 3]
            d = torch.cdist(x, target)
            fwd, bwd = d.argmin(1), d.argmin(0)
            # point rows: moved point p -> nearest hull point, and hull point q -> nearest moved point
            src = torch.cat([torch.arange(P, device=dev), bwd])
            dst = torch.cat([target[fwd], target])
            wt = torch.cat([torch.full((P,), 1.0 / P, device=dev, dtype=dt), torch.full((Q,), 1.0 / Q, device=dev, dtype=dt)])
            Jp = torch.cat([eye3.expand(src.shape[0], idx.shape[1], 3, 3), -_skew(rl[src])], -1) * w[src][..., None, None]
            H = torch.zeros(6 * M, 6 * M, device=dev, dtype=dt)
            g = torch.zeros(6 * M, device=dev, dtype=dt)
            _accumulate(H, g, idx[src], Jp, x[src] - dst, wt)
            # ARAP rows: (p_j + t_j) - (p_i + t_i) - R_i e_ij, linear in t_i, t_j, w_i
            Re = (R[:, None] * e0[..., None, :]).sum(-1)  # [M, k, 3]
            res = (e0 + t[gi] - t[:, None] - Re).reshape(-1, 3)
            Ja = torch.zeros(res.shape[0], 2, 3, 6, device=dev, dtype=dt)
            Ja[:, 0, :, :3] = -eye3
            Ja[:, 0, :, 3:] = _skew(Re.reshape(-1, 3))
            Ja[:, 1, :, :3] = eye3
            _accumulate(H, g, edge_nodes, Ja, res, arap_w)
            H.diagonal().add_(damping)
            delta = torch.linalg.solve(H, -g).reshape(M, 6)
            t = t + delta[:, :3]
            R = axis_angle_to_rotmat_(delta[:, 3:]) @ R
        return t, R

    errors = [0.0]
    rest = (torch.zeros(M, 3, device=dev, dtype=dt), torch.zeros(M, 3, device=dev, dtype=dt))
    for f in range(1, motion.num_keys):
        if cancel is not None and cancel():
            return errors
        starts = [rest] if f == 1 else [(motion.trans[f - 2].clone(), motion.rotvec[f - 2].clone())]
        if from_rest and f > 1:
            starts.append(rest)
        best = None
        for t0, rv0 in starts:
            t, R = track_frame(t0, axis_angle_to_rotmat_(rv0), hulls[f])
            rv = rotmat_to_axis_angle(R)
            err = float(chamfer(motion.warp_with(canonical, idx, rv, t), hulls[f]))
            if best is None or err < best[0]:
                best = (err, t, rv)
        errors.append(best[0])
        motion.trans[f - 1] = best[1]
        motion.rotvec[f - 1] = best[2]
    return errors


def axis_angle_to_rotmat_(v: Tensor) -> Tensor:
    return quat_to_rotmat(axis_angle_to_quat(v))
