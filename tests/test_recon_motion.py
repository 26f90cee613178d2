"""The motion field: canonical = frame 0, exact keyframes, rigid motion reproduced, ARAP measures
non-rigidity, and interpolation between keyframes."""

import math

import torch

from backend.recon.geometry import axis_angle_to_quat, quat_to_rotmat
from backend.recon.motion import MotionField, catmull_rom_weights, farthest_point_sampling


def _field(M=40, F=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    nodes = torch.rand(M, 3, generator=g) * 2 - 1
    return MotionField(nodes, torch.linspace(0, 1, F), k_blend=4)


def test_frame_zero_is_the_canonical_frame():
    m = _field()
    with torch.no_grad():
        m.trans.normal_()
        m.rotvec.normal_()
    pts = torch.rand(50, 3) * 2 - 1
    moved, _ = m.warp(pts, frames=torch.tensor([0]))
    torch.testing.assert_close(moved[0], pts, atol=1e-6, rtol=0)
    moved_t, _ = m.warp(pts, times=torch.tensor([0.0]))
    torch.testing.assert_close(moved_t[0], pts, atol=1e-6, rtol=0)


def test_a_rigid_motion_of_every_node_moves_points_rigidly():
    m = _field(M=60)
    rv = torch.tensor([0.1, -0.3, 0.2])
    R = quat_to_rotmat(axis_angle_to_quat(rv))
    shift = torch.tensor([0.2, 0.0, -0.1])
    with torch.no_grad():
        # node k: x -> R (x - p_k) + p_k + t_k reproduces x -> R x + shift when t_k = R p_k - p_k + shift
        m.rotvec[:] = rv
        m.trans[:] = (m.nodes @ R.T - m.nodes + shift)[None]
    pts = torch.rand(30, 3) * 2 - 1
    moved, q = m.warp(pts, torch.tensor([[1.0, 0, 0, 0]]).expand(30, 4), frames=torch.tensor([2]))
    torch.testing.assert_close(moved[0], pts @ R.T + shift, atol=1e-5, rtol=0)
    torch.testing.assert_close(quat_to_rotmat(q[0]), R.expand(30, 3, 3), atol=1e-5, rtol=0)
    assert float(m.arap_loss()) < 1e-10  # rigid: no ARAP energy


def test_arap_penalises_stretching():
    m = _field(M=60)
    with torch.no_grad():
        m.trans[:] = (m.nodes * 0.5)[None]  # scale by 1.5: not rigid
    assert float(m.arap_loss()) > 1e-2


def test_keyframes_are_exact_and_times_between_interpolate():
    keys = torch.tensor([0.0, 0.2, 0.5, 1.0], dtype=torch.float64)
    W = catmull_rom_weights(keys, keys)
    torch.testing.assert_close(W, torch.eye(4, dtype=torch.float64))
    q = torch.tensor([-0.5, 0.1, 0.35, 0.75, 2.0], dtype=torch.float64)
    Wq = catmull_rom_weights(q, keys)
    torch.testing.assert_close(Wq.sum(1), torch.ones(5, dtype=torch.float64))
    torch.testing.assert_close(Wq[0], W[0])  # before the first key: held
    torch.testing.assert_close(Wq[-1], W[-1])  # after the last: held
    lin = keys * 3.0 - 1.0  # a straight line is reproduced in the interior segments
    torch.testing.assert_close(Wq[2] @ lin, torch.tensor(0.35 * 3 - 1, dtype=torch.float64))


def test_points_follow_their_nearest_nodes():
    nodes = torch.tensor([[-0.5, 0, 0], [-0.45, 0.05, 0], [0.5, 0, 0], [0.55, 0.05, 0]])
    m = MotionField(nodes, torch.tensor([0.0, 1.0]), k_blend=4)
    with torch.no_grad():
        m.trans[0, 2:] = torch.tensor([0.0, 0.0, 0.3])  # the right pair moves up
    moved, _ = m.warp(torch.tensor([[-0.48, 0.02, 0.0], [0.52, 0.02, 0.0]]), frames=torch.tensor([1]))
    assert abs(float(moved[0, 0, 2])) < 0.02
    assert abs(float(moved[0, 1, 2]) - 0.3) < 0.02


def test_farthest_point_sampling_spreads():
    pts = torch.cat([torch.zeros(100, 3), torch.ones(1, 3)])
    idx = farthest_point_sampling(pts, 2)
    assert set(idx.tolist()) == {idx[0].item(), 100} and idx[0].item() != idx[1].item()
    assert math.isclose(float((pts[idx[0]] - pts[idx[1]]).norm()), math.sqrt(3), rel_tol=1e-6)


def test_strained_edges_are_released_and_rigid_ones_kept():
    # two halves: x < 0 stays, x > 0 swings up about the joint at the origin (rotation about +y)
    m = _field(M=80)
    rv = torch.tensor([0.0, -0.6, 0.0])
    R = quat_to_rotmat(axis_angle_to_quat(rv))
    right = m.nodes[:, 0] > 0
    with torch.no_grad():
        m.rotvec[:, right] = rv
        m.trans[:, right] = (m.nodes[right] @ R.T - m.nodes[right])[None]
    strain = m.edge_strain()
    crosses = right[:, None] != right[m.graph_idx]  # edges between the halves
    assert strain[~crosses].max() < 1e-5  # each half moves rigidly
    assert strain[crosses].min() > 0.05
    before = m.graph_w.clone()
    factor = m.release_strained_edges(0.05)
    torch.testing.assert_close(m.graph_w[~crosses], before[~crosses])
    assert (m.graph_w[crosses] < 0.5 * before[crosses]).float().mean() > 0.8
    assert factor.shape == before.shape
