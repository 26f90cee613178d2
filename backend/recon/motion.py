"""The motion field: a sparse deformation graph (embedded deformation) keyframed in time.

M control nodes sit at canonical positions ``p_m`` (canonical = the first frame, time 0 of the
matrix: the user's static mesh). Each node has a rigid transform per keyframe (rotation vector
``r_fm``, translation ``t_fm``; keyframe 0 is pinned to the identity, so the canonical frame *is*
frame 0). Any canonical point ``x`` moves by blending its K nearest nodes:

    x(t) = sum_k w_k(x) [R_k(t) (x - p_k) + p_k + t_k(t)],   w_k ∝ exp(-|x - p_k|² / (2 ρ_k²))

Gaussian centres and the user's mesh vertices are moved by the *same* field, so motion that makes
the renders right is the motion transferred to the mesh. Between keyframes, translations follow a
cubic Hermite spline with Catmull-Rom tangents through the keyframes and rotation vectors too (exact at the keyframes);
outside the keyframe range the end poses are held.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from .geometry import axis_angle_to_quat, normalize_quat, quat_multiply, quat_to_rotmat


def catmull_rom_weights(query: Tensor, keys: Tensor) -> Tensor:
    """Interpolation matrix [T, F] so that ``W @ values[F]`` is the cubic Hermite spline through
    (keys[f], values[f]) with Catmull-Rom tangents for uneven keys (central differences over the
    actual times, one-sided at the ends), evaluated at ``query`` [T]. Exact at the keys, reproduces
    straight lines, holds the end values outside [keys[0], keys[-1]]."""
    F_ = keys.shape[0]
    q = query.to(keys.dtype).clamp(keys[0], keys[-1])
    T_ = q.shape[0]
    W = torch.zeros(T_, F_, dtype=keys.dtype, device=keys.device)
    if F_ == 1:
        W[:, 0] = 1.0
        return W
    # tangent m_i = sum_j D[i, j] p_j
    D = torch.zeros(F_, F_, dtype=keys.dtype, device=keys.device)
    for i in range(F_):
        a, b = max(i - 1, 0), min(i + 1, F_ - 1)
        D[i, b] += 1.0 / (keys[b] - keys[a])
        D[i, a] -= 1.0 / (keys[b] - keys[a])
    i = torch.searchsorted(keys, q, right=True).clamp(1, F_ - 1) - 1  # segment [i, i+1]
    dt = keys[i + 1] - keys[i]
    u = ((q - keys[i]) / dt).clamp(0, 1)
    u2, u3 = u * u, u * u * u
    h00, h10, h01, h11 = 2 * u3 - 3 * u2 + 1, u3 - 2 * u2 + u, -2 * u3 + 3 * u2, u3 - u2
    rows = torch.arange(T_, device=keys.device)
    W.index_put_((rows, i), h00, accumulate=True)
    W.index_put_((rows, i + 1), h01, accumulate=True)
    W += (h10 * dt)[:, None] * D[i] + (h11 * dt)[:, None] * D[i + 1]
    return W


def farthest_point_sampling(points: Tensor, count: int, seed: int = 0) -> Tensor:
    """Indices [count] of well-spread points among points [P, 3]."""
    P = points.shape[0]
    count = min(count, P)
    g = torch.Generator().manual_seed(seed)
    chosen = torch.empty(count, dtype=torch.long)
    chosen[0] = torch.randint(P, (1,), generator=g)
    dist = torch.full((P,), float("inf"), dtype=points.dtype)
    for i in range(1, count):
        dist = torch.minimum(dist, ((points - points[chosen[i - 1]]) ** 2).sum(-1))
        chosen[i] = torch.argmax(dist)
    return chosen


def knn(query: Tensor, ref: Tensor, k: int, chunk: int = 4096) -> tuple[Tensor, Tensor]:
    """k nearest ``ref`` [M, 3] points of each ``query`` [P, 3]: (indices [P, k], squared distances [P, k])."""
    k = min(k, ref.shape[0])
    idx, d2 = [], []
    for s in range(0, query.shape[0], chunk):
        d = torch.cdist(query[s : s + chunk], ref) ** 2
        v, i = torch.topk(d, k, dim=1, largest=False)
        idx.append(i)
        d2.append(v)
    if not idx:
        return torch.zeros(0, k, dtype=torch.long), torch.zeros(0, k)
    return torch.cat(idx), torch.cat(d2)


class MotionField(nn.Module):
    """nodes [M, 3] canonical positions; key_times [F] increasing (key 0 = canonical frame)."""

    def __init__(self, nodes: Tensor, key_times: Tensor, k_blend: int = 4, radius: float | None = None,
                 graph_k: int = 8):
        super().__init__()
        M, F_ = nodes.shape[0], key_times.shape[0]
        self.k_blend = min(k_blend, M)
        self.nodes = nn.Parameter(nodes.clone().float())
        if radius is None:  # about the spacing of the nodes: points follow their nearest nodes
            _, d2 = knn(nodes, nodes, min(2, M))
            radius = float(d2[:, -1].clamp_min(1e-8).sqrt().mean()) if M > 1 else 0.1
        self.log_radius = nn.Parameter(torch.full((M,), math.log(max(radius, 1e-4))))
        self.trans = nn.Parameter(torch.zeros(max(F_ - 1, 0), M, 3))
        self.rotvec = nn.Parameter(torch.zeros(max(F_ - 1, 0), M, 3))
        self.register_buffer("key_times", key_times.clone().double())
        gi, gd = knn(nodes, nodes, min(graph_k + 1, M))
        gi, gd = gi[:, 1:], gd[:, 1:]
        scale = gd.mean().clamp_min(1e-10)
        self.register_buffer("graph_idx", gi)
        self.register_buffer("graph_w", torch.exp(-gd / (2 * scale)))
        self.register_buffer("edge_scale", scale.reshape(()))

    @property
    def num_nodes(self) -> int:
        return self.nodes.shape[0]

    @property
    def num_keys(self) -> int:
        return self.key_times.shape[0]

    def key_translations(self) -> Tensor:
        """[F, M, 3], zero at key 0."""
        return torch.cat([torch.zeros_like(self.nodes)[None], self.trans], 0)

    def key_rotvecs(self) -> Tensor:
        """[F, M, 3], zero at key 0."""
        return torch.cat([torch.zeros_like(self.nodes)[None], self.rotvec], 0)

    def node_transforms(self, frames: Tensor | None = None, times: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Node rotations as quaternions [T, M, 4] and translations [T, M, 3] at keyframe indices
        ``frames`` [T] or at arbitrary ``times`` [T] (interpolated)."""
        tr, rv = self.key_translations(), self.key_rotvecs()
        if frames is not None:
            tr, rv = tr[frames], rv[frames]
        else:
            W = catmull_rom_weights(times.to(self.key_times.device).double(), self.key_times).to(tr.dtype)
            tr = torch.einsum("tf,fmc->tmc", W, tr)
            rv = torch.einsum("tf,fmc->tmc", W, rv)
        return axis_angle_to_quat(rv), tr

    @torch.no_grad()
    def neighbours(self, points: Tensor) -> Tensor:
        """Indices [P, K] of the nodes that move each canonical point."""
        return knn(points.detach(), self.nodes.detach(), self.k_blend)[0]

    def blend_weights(self, points: Tensor, idx: Tensor) -> Tensor:
        """Normalised weights [P, K] of the nodes ``idx`` for canonical points [P, 3]."""
        d2 = ((points[:, None, :] - self.nodes[idx]) ** 2).sum(-1)
        rho2 = torch.exp(2 * self.log_radius)[idx]
        return torch.softmax(-d2 / (2 * rho2), dim=-1)

    def warp(self, points: Tensor, quats: Tensor | None = None, *, frames: Tensor | None = None,
             times: Tensor | None = None, idx: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        """Move canonical points [P, 3] (and orientations [P, 4]) to keyframes ``frames`` [T] or
        ``times`` [T]: returns positions [T, P, 3] and quaternions [T, P, 4] (or None)."""
        idx = self.neighbours(points) if idx is None else idx
        nq, nt = self.node_transforms(frames, times)  # [T, M, 4], [T, M, 3]
        return self._deform(points, quats, idx, nq, nt)

    def warp_with(self, points: Tensor, idx: Tensor, rotvec: Tensor, trans: Tensor) -> Tensor:
        """Points [P, 3] moved by explicit node rotations [M, 3] and translations [M, 3]: [P, 3]."""
        return self._deform(points, None, idx, axis_angle_to_quat(rotvec)[None], trans[None])[0][0]

    def _deform(self, points, quats, idx, nq, nt):
        w = self.blend_weights(points, idx)  # [P, K]
        pk = self.nodes[idx]  # [P, K, 3]
        R = quat_to_rotmat(nq)[:, idx]  # [T, P, K, 3, 3]
        local = points[:, None, :] - pk
        # x + sum_k w_k ((R_k - I)(x - p_k) + t_k): exactly x where every transform is the identity
        offset = (R * local[None, :, :, None, :]).sum(-1) - local[None] + nt[:, idx]
        out = points[None] + (w[None, :, :, None] * offset).sum(2)
        if quats is None:
            return out, None
        q = normalize_quat((w[None, :, :, None] * nq[:, idx]).sum(2))  # blended rotation [T, P, 4]
        return out, quat_multiply(q, quats[None].expand_as(q))

    def _edge_residuals(self, rotvec: Tensor, trans: Tensor) -> tuple[Tensor, Tensor]:
        """How far each graph edge is from moving rigidly with its first node, for node rotations
        [T, M, 3] and translations [T, M, 3]: (p_j + t_j) - (p_i + t_i) - R_i (p_j - p_i) [T, M, k, 3],
        and the canonical edges p_j - p_i [M, k, 3]."""
        R = quat_to_rotmat(axis_angle_to_quat(rotvec))  # [T, M, 3, 3]
        e0 = self.nodes[self.graph_idx] - self.nodes[:, None]  # [M, k, 3]
        et = e0[None] + trans[:, self.graph_idx] - trans[:, :, None]  # [T, M, k, 3]
        pred = (R[:, :, None] * e0[None, :, :, None, :]).sum(-1)
        return et - pred, e0

    def _arap(self, rotvec: Tensor, trans: Tensor) -> Tensor:
        """ARAP energy for node rotations [T, M, 3] and translations [T, M, 3] (dimensionless)."""
        err = (self._edge_residuals(rotvec, trans)[0] ** 2).sum(-1)
        return (self.graph_w * err).sum() / (self.graph_w.sum() * trans.shape[0] * self.edge_scale)

    @torch.no_grad()
    def edge_strain(self) -> Tensor:
        """How far each graph edge is from rigid over the keyframes: [M, k], the largest over frames of
        |(p_j + t_j) - (p_i + t_i) - R_i (p_j - p_i)| / |p_j - p_i| (0 for a rigidly moving pair)."""
        if self.num_keys < 2:
            return torch.zeros_like(self.graph_w)
        res, e0 = self._edge_residuals(self.rotvec, self.trans)
        return (res.norm(dim=-1) / e0.norm(dim=-1).clamp_min(1e-8)).amax(0)

    @torch.no_grad()
    def release_strained_edges(self, strain: float) -> Tensor:
        """Scale every edge's ARAP weight by exp(-(edge_strain / strain)^2): edges the current motion
        already bends (a joint between parts that move differently) stop coupling the parts, rigid
        ones keep their weight. Returns the factors [M, k]."""
        factor = torch.exp(-((self.edge_strain() / strain) ** 2))
        self.graph_w.mul_(factor)
        return factor

    def arap_single(self, rotvec: Tensor, trans: Tensor) -> Tensor:
        """ARAP energy of one pose: rotations [M, 3], translations [M, 3]."""
        return self._arap(rotvec[None], trans[None])

    def arap_loss(self, upto: int | None = None) -> Tensor:
        """As-rigid-as-possible energy of the node graph over the first ``upto`` keyframes (all by
        default), dimensionless (squared edge error over the mean squared edge length)."""
        upto = self.num_keys if upto is None else min(upto, self.num_keys)
        if upto < 2 or self.num_nodes < 2:
            return self.nodes.sum() * 0
        return self._arap(self.rotvec[: upto - 1], self.trans[: upto - 1])

    def smoothness_loss(self, upto: int | None = None) -> Tensor:
        """Squared acceleration of node translations and rotations across the first ``upto``
        keyframes (uniform steps)."""
        upto = self.num_keys if upto is None else min(upto, self.num_keys)
        if upto < 3:
            return self.nodes.sum() * 0
        tr, rv = self.key_translations()[:upto], self.key_rotvecs()[:upto]
        acc = tr[2:] - 2 * tr[1:-1] + tr[:-2]
        racc = rv[2:] - 2 * rv[1:-1] + rv[:-2]
        return ((acc**2).sum(-1).mean() / self.edge_scale) + 0.1 * (racc**2).sum(-1).mean()
