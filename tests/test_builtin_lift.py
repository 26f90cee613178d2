"""The multi-view model's 3-D prior: its cameras are the rig's, its renders are where geometry says, and
a warm-started network with the prior computes what the old one did until it learns to use it."""

from __future__ import annotations

import math
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from backend.models.builtin.config import DenoiserConfig, LiftConfig, UNetConfig
from backend.models.builtin.denoiser import DenoiserNet
from backend.models.builtin.lift import OrbitLift, orbit_cameras
from backend.models.builtin.weights_io import save_network
from protocol.cameras import orbit_rig, project

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _lift(**kw) -> OrbitLift:
    torch.manual_seed(0)
    return OrbitLift(LiftConfig(**kw), latent_channels=4, latent_size=16, image_size=64)


def test_cameras_project_like_the_orbit_rig():
    m = _lift()
    el, az = np.array([0.0, 12.0, 30.0, 7.0]), np.array([0.0, 45.0, 200.0, 315.0])
    rig = orbit_rig(4, 64, elevation_deg=el, azimuth_deg=az)
    pts = np.random.default_rng(1).uniform(-1, 1, (20, 3))
    uv, depth = project(pts, rig.K, rig.w2c)
    R, pos = orbit_cameras(torch.tensor(np.deg2rad(el)).float(), torch.tensor(np.deg2rad(az)).float(), m.distance)
    for v in range(4):
        grid, z = m._project(torch.tensor(pts).float()[None], R[v:v + 1], pos[v:v + 1])
        u = (grid[0] + 1) / 2 * 64 - 0.5  # back from grid_sample's normalised coordinates to pixel centres
        np.testing.assert_allclose(u.numpy(), uv[v], atol=1e-3)
        np.testing.assert_allclose(z[0].numpy(), depth[v], atol=1e-4)


def _blob_volume(m: OrbitLift, centre, radius: float) -> torch.Tensor:
    G = m.cfg.grid
    inside = ((m.voxels - torch.tensor(centre)).norm(dim=-1) < radius).float()
    feat = torch.zeros(m.cfg.out, inside.numel())
    feat[0] = 1.0
    return torch.cat([inside[None] * 60.0, feat]).view(1, -1, G, G, G)


def _centroid(op: torch.Tensor) -> tuple[float, float]:
    ys, xs = torch.meshgrid(torch.arange(op.shape[0]).float(), torch.arange(op.shape[1]).float(), indexing="ij")
    s = op.sum()
    return float((op * xs).sum() / s), float((op * ys).sum() / s)


def test_render_puts_a_blob_where_each_camera_sees_it():
    m = _lift(grid=32)
    # a ball on +X: right of centre from the front (camera on -Y), centred from azimuth 90 (camera on +X),
    # left from the back; a ball on the origin is centred everywhere with the projected size
    vol = _blob_volume(m, (0.5, 0.0, 0.0), 0.3)
    r = m.render(vol, torch.zeros(1, 3), torch.tensor([[0.0, math.pi / 2, math.pi]]))
    assert r.shape == (1, 3, m.cfg.out + 1, 16, 16)
    op = r[0, :, -1]
    cx = [_centroid(o)[0] for o in op]
    assert cx[0] > 10.0 and abs(cx[1] - 7.5) < 0.6 and cx[2] < 5.0
    assert op.max() > 0.95 and op[:, 0, 0].max() < 1e-3  # opaque ball, empty corners
    # features are composited with the opacity: feature 0 (1 inside the ball) equals the opacity
    torch.testing.assert_close(r[0, :, 0], op, atol=1e-4, rtol=0)
    centred = m.render(_blob_volume(m, (0.0, 0.0, 0.0), 0.5), torch.zeros(1, 1), torch.zeros(1, 1))[0, 0, -1]
    expected = math.pi * (m.focal * 0.5 / math.sqrt(m.distance**2 - 0.25) / 4) ** 2  # latent pixels
    assert abs(float(centred.sum()) - expected) / expected < 0.15


def test_lift_reads_the_front_view_along_its_rays():
    """A voxel's features come from the front-view pixel it projects to: changing the conditioning
    latent on one side of the image changes only volume columns that project there."""
    m = _lift(feat=4).eval()
    m.encoder = torch.nn.Identity()  # the encoder's receptive field is the whole image; test the lifting itself
    lat = torch.zeros(1, 4, 16, 16)
    with torch.no_grad():
        base = m.volume(lat, torch.zeros(1), torch.zeros(1))
        lat2 = lat.clone()
        lat2[..., :, 14:] = 3.0  # rightmost two latent columns (+X side seen from the front)
        vol = m.volume(lat2, torch.zeros(1), torch.zeros(1))
    changed = (vol - base).abs().amax(dim=(0, 1))  # [z, y, x]
    G = m.cfg.grid
    assert changed[:, :, : G // 2].max() == 0.0  # the -X half never sees those pixels
    assert changed[:, :, -2:].max() > 0.0


def test_denoiser_with_lift_refuses_bad_configs_and_runs():
    unet = UNetConfig(channels=(16, 32, 32), groups=8, full_attention=(2,))
    with pytest.raises(ValueError, match="cond_channels"):
        DenoiserNet(DenoiserConfig(kind="multiview", unet=unet, lift=LiftConfig()))
    with pytest.raises(ValueError, match="multi-view"):
        DenoiserNet(DenoiserConfig(kind="video", unet=replace(unet, cond_channels=9), lift=LiftConfig()))
    net = DenoiserNet(DenoiserConfig(kind="multiview", unet=replace(unet, cond_channels=9), lift=LiftConfig()))
    B, V = 2, 8
    az = torch.deg2rad(45.0 * torch.arange(V).float()).expand(B, V)
    for p in net.parameters():  # zero-initialised outputs would hide what the inputs do
        p.data.add_(0.05 * torch.randn_like(p))
    x, keep, el = torch.randn(B, V, 4, 16, 16), torch.tensor([1.0, 0.0]), torch.full((B, V), 0.2)
    with torch.no_grad():
        out = net(x, torch.zeros(B), torch.randn(B, 4, 16, 16), keep, elevation=el, azimuth=az)
        other = net(x, torch.zeros(B), torch.randn(B, 4, 16, 16), keep, elevation=el, azimuth=az)
    assert out.shape == (B, V, 4, 16, 16) and torch.isfinite(out).all()
    # a dropped condition (classifier-free guidance's other half) drops the 3-D prior with it
    assert (out[0] - other[0]).abs().max() > 1e-3
    torch.testing.assert_close(out[1], other[1])


def test_warm_start_keeps_the_old_network_exactly(tmp_path):
    """--init: copied weights plus zero weights on the new input channels, so the widened network's
    output equals the old network's whatever the prior renders."""
    import train

    torch.manual_seed(0)
    unet = UNetConfig(channels=(16, 32, 32), groups=8, full_attention=(2,))
    old = DenoiserNet(DenoiserConfig(kind="multiview", unet=unet))
    for p in old.parameters():  # zero-initialised outputs would make the comparison vacuous
        p.data.add_(0.05 * torch.randn_like(p))
    path = tmp_path / "mv.safetensors"
    save_network(path, "multiview", old, old.cfg, "space", dtype=torch.float32)
    new = DenoiserNet(DenoiserConfig(kind="multiview", unet=replace(unet, cond_channels=9), lift=LiftConfig()))
    train.warm_start(new, str(path))
    B, V = 2, 8
    args = (torch.randn(B, V, 4, 16, 16), torch.rand(B), torch.randn(B, 4, 16, 16), torch.ones(B))
    cams = {"elevation": torch.full((B, V), 0.3), "azimuth": torch.deg2rad(45.0 * torch.arange(V).float()).expand(B, V)}
    with torch.no_grad():
        a = old(*args, **cams)
        b = new(*args, **cams)
        c = new(*args, **cams, renders=torch.randn(B, V, 9, 16, 16))
    assert a.abs().max() > 1e-3
    torch.testing.assert_close(b, a)
    torch.testing.assert_close(c, a)
    assert new.unet.conv_in.weight[:, 8:].abs().max() == 0.0


def test_denoiser_renders_the_prior_once_per_condition_and_matches_the_uncached_net():
    from backend.models.base import Cond, EDMScaling
    from backend.models.builtin.denoiser import BuiltinDenoiser

    torch.manual_seed(0)
    unet = UNetConfig(channels=(16, 32, 32), groups=8, full_attention=(2,), cond_channels=9)
    net = DenoiserNet(DenoiserConfig(kind="multiview", unet=unet, lift=LiftConfig()))
    for p in net.parameters():
        p.data.add_(0.05 * torch.randn_like(p))
    den = BuiltinDenoiser(net, "space", guidance=2.0)
    B, V = 3, 8
    az = torch.deg2rad(45.0 * torch.arange(V).float())
    conds = [Cond(latent=torch.randn(4, 16, 16), elevation=torch.full((V,), 0.1 * b), azimuth=az) for b in range(B)]
    x = torch.randn(B, V, 4, 16, 16)
    first = den.denoise(x, torch.full((B,), 2.0), conds)
    second = den.denoise(x * 0.5, torch.full((B,), 1.0), conds)  # another step, same conditions
    assert den.prior_renders == 1 and den.calls == 2
    den.denoise(x[:2], torch.full((2,), 2.0), conds[:2])  # another batch of conditions renders anew
    assert den.prior_renders == 2
    # the uncached computation, straight through the network (prior rendered inside forward)
    scaling = EDMScaling(net.cfg.scaling, net.cfg.sigma_data)
    for xs, s, got in ((x, 2.0, first), (x * 0.5, 1.0, second)):
        sigma = torch.full((B,), s)
        c_skip, c_out, c_in, c_noise = scaling(sigma)
        cond = torch.stack([c.latent for c in conds])
        el = torch.stack([c.elevation for c in conds])
        azs = torch.stack([c.azimuth for c in conds])
        with torch.no_grad():
            both = net(torch.cat([xs, xs]) * torch.cat([c_in, c_in]).view(-1, 1, 1, 1, 1), torch.cat([c_noise, c_noise]),
                       torch.cat([cond, cond]), torch.cat([torch.ones(B), torch.zeros(B)]),
                       elevation=torch.cat([el, el]), azimuth=torch.cat([azs, azs]))
        out = both[B:] + 2.0 * (both[:B] - both[B:])
        torch.testing.assert_close(got, scaling.x0(xs, sigma, out, c_skip, c_out), atol=1e-5, rtol=1e-5)
