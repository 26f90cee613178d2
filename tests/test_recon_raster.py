"""The CPU rasteriser against a brute-force per-pixel reference, its hand-written backward against
autograd, batching, and (with CUDA) agreement with gsplat."""

import numpy as np
import pytest
import torch

from backend.recon.projection import project_gaussians
from backend.recon.raster import rasterize
from backend.recon.raster_gsplat import gsplat_available
from backend.recon.raster_reference import render_reference
from backend.recon.raster_torch import _Composite, _pairs, _segments
from protocol.cameras import orbit_rig, project


def _scene(n=60, seed=0, spread=0.5, opaque=True):
    g = torch.Generator().manual_seed(seed)
    means = (torch.rand(n, 3, generator=g) * 2 - 1) * spread
    quats = torch.randn(n, 4, generator=g)
    scales = torch.rand(n, 3, generator=g) * 0.15 + 0.03
    lo = 0.5 if opaque else 0.05
    opac = torch.rand(n, generator=g) * (1 - lo) * 0.98 + lo
    cols = torch.rand(n, 3, generator=g)
    return means, quats, scales, opac, cols


def test_cpu_rasteriser_matches_brute_force_reference():
    W, H = 20, 16
    rig = orbit_rig(3, W, H, elevation_deg=25.0)
    means, quats, scales, opac, cols = _scene()
    bg = torch.tensor([1.0, 0.9, 0.8])
    out = rasterize(means, quats, scales, opac, cols, torch.tensor(rig.w2c, dtype=torch.float32),
                    torch.tensor(rig.K, dtype=torch.float32), W, H, background=bg, backend="torch")
    assert out.rgb.shape == (3, H, W, 3) and out.alpha.shape == (3, H, W, 1) and out.depth.shape == (3, H, W, 1)
    terminated = 0
    for v in range(3):
        rgb, alpha, depth = render_reference(means.numpy(), quats.numpy(), scales.numpy(), opac.numpy(),
                                             cols.numpy(), rig.w2c[v], rig.K[v], W, H, bg.numpy())
        np.testing.assert_allclose(out.rgb[v].numpy(), rgb, atol=2e-5)
        np.testing.assert_allclose(out.alpha[v, ..., 0].numpy(), alpha, atol=2e-5)
        np.testing.assert_allclose(out.depth[v, ..., 0].numpy(), depth, atol=1e-4)
        terminated += int((alpha > 0.999).sum())
    assert terminated > 20, "the scene must exercise early termination"
    assert 0.2 < float(out.alpha.mean()) < 0.95  # non-trivial coverage


def test_projected_centres_follow_the_protocol_cameras():
    rig = orbit_rig(4, 48, 32)
    means, quats, scales, opac, _ = _scene(20)
    proj = project_gaussians(means[None], quats[None], scales[None], opac[None],
                             torch.tensor(rig.w2c, dtype=torch.float32)[None],
                             torch.tensor(rig.K, dtype=torch.float32)[None], 48, 32)
    pix, depth = project(means.numpy().astype(np.float64), rig.K, rig.w2c)
    np.testing.assert_allclose(proj.means2d[0].numpy(), pix, atol=1e-3)
    np.testing.assert_allclose(proj.depths[0].numpy(), depth, atol=1e-5)


def test_batch_dimensions_render_each_frame_with_its_own_gaussians():
    W = H = 16
    rig = orbit_rig(2, W, H)
    means, quats, scales, opac, cols = _scene(30)
    frames = torch.stack([means, means + torch.tensor([0.2, 0.0, 0.1]), means * 0.7])  # [3, N, 3]
    K = torch.tensor(rig.K, dtype=torch.float32)
    w2c = torch.tensor(rig.w2c, dtype=torch.float32)
    batched = rasterize(frames, quats, scales, opac, cols, w2c, K, W, H)
    assert batched.rgb.shape == (3, 2, H, W, 3)
    for f in range(3):
        single = rasterize(frames[f], quats, scales, opac, cols, w2c, K, W, H)
        torch.testing.assert_close(batched.rgb[f], single.rgb, atol=1e-6, rtol=0)
    assert (batched.rgb[0] - batched.rgb[1]).abs().max() > 0.1


def test_composite_backward_matches_autograd():
    W, H, N = 18, 14, 50
    rig = orbit_rig(3, W, H)
    means, quats, scales, opac, cols = (t.double() for t in _scene(N, seed=3))
    proj = project_gaussians(means[None], quats[None], scales[None], opac[None], torch.tensor(rig.w2c)[None],
                             torch.tensor(rig.K)[None], W, H)
    G = 3 * N

    def leaves():
        return (proj.means2d.reshape(G, 2).detach().clone().requires_grad_(True),
                proj.conics.reshape(G, 3).detach().clone().requires_grad_(True),
                opac[None, None].expand(1, 3, N).reshape(G).clone().requires_grad_(True),
                torch.cat([cols[None, None].expand(1, 3, N, 3), proj.depths[..., None].detach()], -1)
                .reshape(G, 4).clone().requires_grad_(True))

    a = leaves()
    pixel, gauss, x, y = _pairs(*[t.detach() for t in a[:3]], proj.radii.reshape(G, 2),
                                proj.depths.detach().reshape(G), N, W, H)
    npix = 3 * H * W
    up = torch.randn(npix, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    (_Composite.apply(*a, gauss, pixel, x, y, npix) * up).sum().backward()

    b = leaves()  # the same compositing written with plain autograd ops
    m2, con, o, feat = b
    m, c = m2[gauss], con[gauss]
    dx, dy = m[:, 0] - x, m[:, 1] - y
    sigma = 0.5 * (c[:, 0] * dx * dx + c[:, 2] * dy * dy) + c[:, 1] * dx * dy
    alpha = (o[gauss] * torch.exp(-sigma)).clamp_max(0.999)
    seg, first = _segments(pixel)
    lt = torch.log1p(-alpha)
    ex = torch.cumsum(lt, 0) - lt
    w = alpha * torch.exp(ex - ex[first][seg])
    out = torch.zeros(npix, 5, dtype=torch.float64).index_add(0, pixel, torch.cat([w[:, None] * feat[gauss], w[:, None]], 1))
    (out * up).sum().backward()
    for got, want in zip(a, b):
        assert want.grad.abs().max() > 0.1
        torch.testing.assert_close(got.grad, want.grad, atol=1e-9, rtol=1e-7)


def test_pair_keys_are_the_same_in_32_and_64_bits(monkeypatch):
    """The packed (pixel, depth rank) sort key is 32-bit when it fits; the 64-bit path gives the same pairs."""
    import backend.recon.raster_torch as rt

    W, H, N = 24, 20, 60
    rig = orbit_rig(4, W, H, elevation_deg=20.0)
    means, quats, scales, opac, cols = _scene(N, seed=5)
    proj = project_gaussians(means[None], quats[None], scales[None], opac[None], torch.tensor(rig.w2c, dtype=torch.float32)[None],
                             torch.tensor(rig.K, dtype=torch.float32)[None], W, H)
    G = 4 * N
    args = (proj.means2d.reshape(G, 2), proj.conics.reshape(G, 3), opac[None, None].expand(1, 4, N).reshape(G),
            proj.radii.reshape(G, 2), proj.depths.reshape(G), N, W, H)
    short = rt._pairs(*args)
    monkeypatch.setattr(rt, "KEY32_LIMIT", 0)
    long = rt._pairs(*args)
    assert short[0].numel() > 500
    for s, lg in zip(short, long):
        assert torch.equal(s, lg)
    # pairs of a pixel are contiguous and front to back
    pixel, gauss = short[0], short[1]
    same = pixel[1:] == pixel[:-1]
    depth = proj.depths.reshape(G)
    assert bool((depth[gauss[1:]][same] >= depth[gauss[:-1]][same]).all())
    assert bool((pixel[1:] >= pixel[:-1]).all())


def test_gradient_descent_through_the_rasteriser_fits_a_target():
    W = H = 24
    rig = orbit_rig(2, W, H)
    K = torch.tensor(rig.K, dtype=torch.float32)
    w2c = torch.tensor(rig.w2c, dtype=torch.float32)
    means, quats, scales, opac, cols = _scene(8, seed=5, spread=0.3)
    target = rasterize(means, quats, scales, opac, cols, w2c, K, W, H).rgb
    moved = (means + 0.08).clone().requires_grad_(True)
    colours = torch.full_like(cols, 0.5).requires_grad_(True)
    opt = torch.optim.Adam([moved, colours], lr=0.01)
    first = None
    for _ in range(60):
        loss = (rasterize(moved, quats, scales, opac, colours, w2c, K, W, H).rgb - target).abs().mean()
        first = float(loss) if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert float(loss) < 0.5 * first


@pytest.mark.cuda
@pytest.mark.skipif(not gsplat_available(), reason="no CUDA")
def test_gsplat_agrees_with_cpu_rasteriser():
    W, H = 64, 48
    rig = orbit_rig(4, W, H)
    means, quats, scales, opac, cols = _scene(300, seed=7, opaque=False)
    frames = torch.stack([means, means + 0.05])
    K = torch.tensor(rig.K, dtype=torch.float32)
    w2c = torch.tensor(rig.w2c, dtype=torch.float32)
    cpu = rasterize(frames, quats, scales, opac, cols, w2c, K, W, H, backend="torch")
    dev = torch.device("cuda")
    gpu = rasterize(frames.to(dev), quats.to(dev), scales.to(dev), opac.to(dev), cols.to(dev), w2c.to(dev),
                    K.to(dev), W, H, backend="gsplat")
    assert gpu.backend == "gsplat"
    torch.testing.assert_close(gpu.rgb.cpu(), cpu.rgb, atol=2e-3, rtol=0)
    torch.testing.assert_close(gpu.alpha.cpu(), cpu.alpha, atol=2e-3, rtol=0)
    torch.testing.assert_close(gpu.depth.cpu(), cpu.depth, atol=2e-2, rtol=0)
