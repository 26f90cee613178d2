"""Per-image corrections (``backend/recon/corrections.py``): a sub-pixel shift and a colour gain/bias
per training image, learned during the fit and left out of renders of new cameras."""

import numpy as np
import pytest
import torch

from backend.recon import fit
from backend.recon.corrections import ImageCorrections, shift_gauge
from backend.recon.raster import rasterize
from protocol.cameras import orbit_rig

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SIZE = 32


def _scene():
    g = torch.Generator().manual_seed(1)
    means = (torch.rand(220, 3, generator=g) * 2 - 1) * torch.tensor([0.35, 0.3, 0.5])
    colours = torch.rand(220, 3, generator=g) * 0.7 + 0.1  # textured, so shifts are visible inside too
    return means, colours


def _render(rig, K=None):
    """Images uint8 [V, 1, H, W, 3] of the static scene (intrinsics K [V, 3, 3] override the rig's)."""
    means, colours = _scene()
    N = means.shape[0]
    q = torch.zeros(N, 4)
    q[:, 0] = 1
    K = torch.tensor(rig.K if K is None else K, dtype=torch.float32)
    out = rasterize(means, q, torch.full((N, 3), 0.06), torch.full((N,), 0.95), colours,
                    torch.tensor(rig.w2c, dtype=torch.float32), K, SIZE, SIZE)
    return (out.rgb.clamp(0, 1)[:, None].numpy() * 255).round().astype(np.uint8)


def test_identity_at_start_and_mean_zero_over_images():
    c = ImageCorrections(3, 4)
    K = torch.eye(3).expand(4, 3, 3)
    frames = torch.tensor([0, 2])
    assert torch.equal(c.intrinsics(K, frames), K[None].expand(2, -1, -1, -1))
    rgb = torch.rand(2, 4, 8, 8, 3)
    assert torch.equal(c.colour(rgb, frames), rgb)
    assert torch.allclose(c.resample(rgb, frames), rgb, atol=1e-6)
    assert float(c.regulariser().detach()) == 0.0
    with torch.no_grad():
        c.raw_shift += torch.tensor([3.0, -1.0])  # a common shift is no disagreement between images
        c.raw_log_gain += 0.2  # nor a common colour cast
    assert torch.allclose(c.shift, torch.zeros(3, 4, 2), atol=1e-5)
    assert torch.allclose(c.log_gain, torch.zeros(3, 4, 3), atol=1e-6)
    with torch.no_grad():
        c.raw_shift[1, 2] += torch.tensor([1.2, 0.0])
    shift = c.shift.detach()
    mean = shift.mean(0)
    assert torch.allclose(mean.sum(0), torch.zeros(2), atol=1e-5)  # the frames' mean has no common part
    deviation = shift - mean  # ... but each frame's own disagreement is kept as it is
    raw = c.raw_shift.detach()
    assert torch.allclose(deviation, raw - raw.mean(0), atol=1e-5)
    assert float(c.regulariser().detach()) > 0.0


def test_shifts_that_a_translation_of_the_object_explains_are_not_corrections():
    rig = orbit_rig(8, SIZE, elevation_deg=15.0)
    K = rig.K.copy()
    gauge = shift_gauge(rig.K, rig.w2c).numpy()
    # the image motion of moving the object by (0.05, -0.03, 0.02): projected in every view
    X = np.array([0.05, -0.03, 0.02])
    cam0 = rig.w2c[:, :3, 3]
    cam1 = cam0 + rig.w2c[:, :3, :3] @ X
    uv = lambda c: np.stack([K[:, 0, 0] * c[:, 0] / c[:, 2], K[:, 1, 1] * c[:, 1] / c[:, 2]], -1)
    motion = (uv(cam1) - uv(cam0)).reshape(-1)
    assert np.abs(motion).max() > 0.5  # pixels
    assert np.abs(gauge @ motion).max() < 0.05 * np.abs(motion).max()
    noise = np.random.default_rng(0).normal(size=16)
    assert np.linalg.norm(gauge @ noise) > 0.6 * np.linalg.norm(noise)  # 11 of 16 dimensions stay


def test_principal_point_shift_and_resampling_move_the_render_alike():
    rig = orbit_rig(4, SIZE, elevation_deg=15.0)
    c = ImageCorrections(1, 4)
    with torch.no_grad():
        c.raw_shift[0, 1] = torch.tensor([1.5, -0.75])
    frames = torch.tensor([0])
    shifted_k = c.intrinsics(torch.tensor(rig.K, dtype=torch.float32), frames)[0].detach().numpy()
    by_k = _render(rig, shifted_k)[:, 0].astype(np.float32) / 255
    plain = torch.tensor(_render(rig)[:, 0].astype(np.float32) / 255)[None]
    by_resample = c.resample(plain, frames)[0].detach().numpy()
    err_same = np.abs(by_k - by_resample).mean(axis=(1, 2, 3))
    err_none = np.abs(by_k - plain[0].numpy()).mean(axis=(1, 2, 3))
    # the moved view: both ways agree far better than leaving it in place (resampling blurs a little)
    assert err_same[1] < 0.5 * err_none[1], (err_same, err_none)
    assert err_same.max() < 0.5 * err_none[1]  # the others moved back by a quarter of it (mean zero), alike


@pytest.fixture(scope="module")
def shifted_fit():
    """A static scene seen by 8 cameras; view 3's image was taken with a principal point off by
    (+1.5, -1.0) px and view 5's is 12 % darker in red and 8 % in blue (the white background too)."""
    rig = orbit_rig(8, SIZE, elevation_deg=15.0)
    K = rig.K.copy()
    K[3, 0, 2] += 1.5
    K[3, 1, 2] -= 1.0
    images = _render(rig, K).astype(np.float64)
    images[5, ..., 0] *= 0.88
    images[5, ..., 2] *= 0.92
    images = np.clip(images.round(), 0, 255).astype(np.uint8)
    return fit(images, rig.K, rig.w2c, [0.0], iterations=150, num_gaussians=300, num_nodes=8, track=False,
               w_hull=0.0, seed=0)


def test_a_shifted_image_gets_its_shift_back(shifted_fit):
    report = shifted_fit.summary["corrections"]
    assert report["shift_mode"] == "intrinsics"
    shift = np.array(report["shift_px"])[0]  # [V, 2]
    rig = orbit_rig(8, SIZE, elevation_deg=15.0)
    true = np.zeros((8, 2))
    true[3] = [1.5, -1.0]
    # what is identifiable: the shift less any part the scene could explain (common, 3-D translation)
    expected = (shift_gauge(rig.K, rig.w2c).numpy() @ true.reshape(-1)).reshape(8, 2)
    assert np.linalg.norm(expected[3]) > 1.2  # most of it
    assert np.linalg.norm(shift - expected, axis=-1).max() < 0.4, (shift, expected)


def test_a_colour_cast_image_gets_its_gain_and_bias_back(shifted_fit):
    report = shifted_fit.summary["corrections"]
    gain, bias = np.array(report["gain"])[0], np.array(report["bias"])[0]  # [V, 3]
    mid = gain * 0.5 + bias  # what each image's correction makes of a mid-grey render
    rest = lambda x: np.delete(x, 5, axis=0).mean(0)
    assert mid[5, 0] - rest(mid)[0] < -0.035, mid[:, 0]  # -0.06 expected
    assert mid[5, 2] - rest(mid)[2] < -0.02, mid[:, 2]  # -0.04 expected
    assert abs(mid[5, 1] - rest(mid)[1]) < 0.015, mid[:, 1]  # green untouched
    others = np.delete(mid, 5, axis=0)
    assert np.abs(others - others.mean(0)).max() < 0.015, others  # the consistent images need none


def test_silhouette_alignment_finds_a_shifted_silhouette_and_restores_the_hull():
    from backend.recon.align import align_silhouettes, shifted_intrinsics
    from backend.recon.carve import silhouettes, visual_hull

    rig = orbit_rig(8, SIZE, elevation_deg=15.0)
    K = rig.K.copy()
    K[2, 0, 2] -= 2.0  # view 2's image sits 2 px left and 1 px down
    K[2, 1, 2] += 1.0
    masks = silhouettes(_render(rig, K)[:, 0].astype(np.float32) / 255)
    shifts = align_silhouettes(masks, rig.K, rig.w2c)
    true = np.zeros((8, 2))
    true[2] = [-2.0, 1.0]
    expected = (shift_gauge(rig.K, rig.w2c).numpy() @ true.reshape(-1)).reshape(8, 2)
    assert np.linalg.norm(shifts - expected, axis=-1).max() < 0.6, (shifts, expected)
    consistent = silhouettes(_render(rig)[:, 0].astype(np.float32) / 255)
    assert np.all(align_silhouettes(consistent, rig.K, rig.w2c) == 0.0)  # nothing to align: left alone
    truth = visual_hull(consistent, rig.K, rig.w2c, dilation=0)[0]
    raw = visual_hull(masks, rig.K, rig.w2c, dilation=0)[0]
    aligned = visual_hull(masks, shifted_intrinsics(rig.K, shifts), rig.w2c, dilation=0)[0]
    assert len(raw) < 0.9 * len(truth)  # the shifted silhouette shaves the hull
    assert abs(len(aligned) - len(truth)) < 0.5 * abs(len(raw) - len(truth)), (len(truth), len(raw), len(aligned))
