"""``backend.recon.fit`` end to end on a small synthetic 4D scene (a body and a part that rises),
plus progress, cancel, divergence, exports and the loss report."""

import json
import threading

import numpy as np
import pytest
import torch

from backend.errors import Cancelled
from backend.recon import Fit4D, fit
from backend.recon import fitting as fit_module
from backend.recon.losses import PhotometricLoss, psnr
from backend.recon.ply import PROPERTIES, read_ply
from backend.recon.raster import rasterize
from protocol.cameras import orbit_rig

V, F, SIZE, RISE = 12, 3, 32, 0.3


def _scene():
    g = torch.Generator().manual_seed(0)
    body = (torch.rand(150, 3, generator=g) * 2 - 1) * torch.tensor([0.25, 0.2, 0.45])
    part = torch.tensor([0.45, 0.0, 0.0]) + (torch.rand(60, 3, generator=g) * 2 - 1) * torch.tensor([0.12, 0.12, 0.12])
    means = torch.cat([body, part])
    colours = torch.cat([torch.tensor([[0.85, 0.35, 0.2]]).expand(150, 3), torch.tensor([[0.15, 0.3, 0.85]]).expand(60, 3)])
    is_part = torch.arange(210) >= 150
    return means, colours, is_part


def _frame_means(t: float):
    means, _, is_part = _scene()
    return means + is_part[:, None] * torch.tensor([0.0, 0.0, RISE * t])


def _render(rig, times):
    means, colours, _ = _scene()
    N = means.shape[0]
    frames = torch.stack([_frame_means(float(t)) for t in times])
    q = torch.zeros(N, 4)
    q[:, 0] = 1
    out = rasterize(frames, q, torch.full((N, 3), 0.07), torch.full((N,), 0.95), colours,
                    torch.tensor(rig.w2c, dtype=torch.float32), torch.tensor(rig.K, dtype=torch.float32), SIZE, SIZE)
    rgba = torch.cat([out.rgb, out.alpha], -1).clamp(0, 1)  # [F, V, H, W, 4]
    return (rgba.permute(1, 0, 2, 3, 4).numpy() * 255).round().astype(np.uint8)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def matrix():
    rig = orbit_rig(V, SIZE, elevation_deg=20.0)
    times = np.linspace(0.0, 1.0, F)
    return rig, times, _render(rig, times)


@pytest.fixture(scope="module")
def fitted(matrix):
    rig, times, images = matrix
    train = np.arange(0, V, 2)
    calls = []
    picked = []
    original = fit_module._Fitter._pick_frames

    def spy(self, active, warmup):
        frames = original(self, active, warmup)
        picked.append(frames.tolist())
        return frames

    fit_module._Fitter._pick_frames = spy
    try:
        result = fit(images[train][..., :3], rig.K[train], rig.w2c[train], times, iterations=150, num_gaussians=400,
                     num_nodes=48, seed=0, on_progress=lambda i, n, loss: calls.append((i, n, loss)))
    finally:
        fit_module._Fitter._pick_frames = original
    result.picked = picked
    return result, calls


def test_every_frame_is_fitted_and_frame_zero_anchors_every_step(fitted):
    result, _ = fitted
    steps = result.picked
    assert len(steps) == result.summary["iterations"]
    assert all(s[0] == 0 and s == sorted(set(s)) and all(0 <= f < F for f in s) for s in steps)
    late = steps[len(steps) // 2 :]  # after the canonical warm-up every frame takes turns
    assert set(f for s in late for f in s) == set(range(F))
    assert all(len(s) == min(2, F) for s in late)  # frames_per_step (default 2) frames per step


def test_fit_reconstructs_unseen_views_from_rgb_only(matrix, fitted):
    rig, times, images = matrix
    result, _ = fitted
    assert isinstance(result, Fit4D)
    assert result.summary["loss"] == "l1+dssim" or result.summary["loss"] == "dssim+lpips"
    assert result.summary["used_alpha"] is False
    assert len(result.summary["fit_psnr_per_view"]) == V // 2
    test = np.arange(1, V, 2)
    truth = torch.tensor(images[test][..., :3] / 255.0, dtype=torch.float32)  # [Vt, F, H, W, 3]
    scores = []
    for i, v in enumerate(test):
        for f, t in enumerate(times):
            img = result.render(rig.K[v], rig.w2c[v], float(t), SIZE, SIZE)
            assert img.shape == (SIZE, SIZE, 3) and img.min() >= 0 and img.max() <= 1
            scores.append(float(psnr(torch.tensor(img)[None], truth[i, f][None])))
    blank = float(psnr(torch.ones_like(truth.reshape(-1, SIZE, SIZE, 3)), truth.reshape(-1, SIZE, SIZE, 3)).mean())
    assert np.mean(scores) > 24.0 and np.mean(scores) > blank + 8.0


def test_displacement_moves_the_rising_part_and_not_the_body(fitted):
    result, _ = fitted
    means, _, is_part = _scene()
    disp = result.displacement(means.numpy(), [0.0, 0.5, 1.0])  # [T, P, 3]
    assert disp.shape == (3, means.shape[0], 3) and disp.dtype == np.float32
    assert np.abs(disp[0]).max() == 0.0  # time 0 is the canonical frame
    part = disp[2][is_part.numpy()].mean(0)
    body = np.linalg.norm(disp[2][~is_part.numpy()], axis=-1).mean()
    assert part[2] > 0.6 * RISE, part
    assert body < 0.3 * RISE
    assert 0.2 * RISE < disp[1][is_part.numpy(), 2].mean() < 0.8 * RISE  # interpolated half-way


def test_rendered_centres_are_the_motion_field_plus_small_residuals(fitted):
    # centres = canonical means moved by the smooth field (what displacement() transfers to a mesh)
    # + per-keyframe residual offsets (render detail), which are zero at the canonical frame 0
    result, _ = fitted
    g = result.gaussians
    means = g.means.detach().numpy()
    disp = result.displacement(means, result.times)  # [F, N, 3]
    residual = result.centres - (means[None] + disp)
    np.testing.assert_allclose(residual, g.key_offsets().detach().numpy(), atol=1e-5)
    assert np.abs(residual[0]).max() == 0.0
    assert np.abs(residual[1:]).max() > 0.0  # the residuals were fitted
    assert np.linalg.norm(residual, axis=-1).mean() < 0.25 * RISE  # ... and stay small next to the motion


def test_per_image_corrections_stay_near_identity_on_consistent_images(fitted):
    result, _ = fitted
    report = result.summary["corrections"]  # on by default, reported in the summary
    assert report["shift_mode"] == "intrinsics"
    assert np.array(report["shift_px"]).shape == (F, V // 2, 2)
    assert report["shift_px_max"] < 0.35
    assert 0.97 < report["gain_min"] and report["gain_max"] < 1.03 and report["bias_abs_max"] < 0.03


def test_progress_is_reported_at_least_every_50_iterations(fitted):
    _, calls = fitted
    its = [c[0] for c in calls]
    assert its[-1] == 150 and all(c[1] == 150 for c in calls)
    assert max(np.diff([0] + its)) <= 50
    assert all(np.isfinite(c[2]) for c in calls)


def test_per_frame_arrays_and_ply_export(fitted, tmp_path):
    result, _ = fitted
    a = result.arrays()
    N = result.num_gaussians
    assert a["centres"].shape == (F, N, 3) and a["rotations"].shape == (F, N, 4)
    assert a["colours"].shape == (N, 3) and a["opacities"].shape == (N,) and a["scales"].shape == (N, 3)
    assert all(a[k].dtype == np.float32 for k in ("centres", "rotations", "colours", "opacities", "scales"))
    np.testing.assert_allclose(a["centres"][0], result.gaussians.means.detach().numpy(), atol=1e-6)
    paths = result.export_ply(tmp_path)
    assert len(paths) == F
    header = paths[1].read_bytes().split(b"end_header")[0].decode()
    assert all(f"property float {p}" in header for p in PROPERTIES)
    back = read_ply(paths[1])
    np.testing.assert_allclose(back["means"], a["centres"][1], atol=1e-6)
    np.testing.assert_allclose(back["colours"], a["colours"], atol=1e-5)
    np.testing.assert_allclose(back["opacities"], a["opacities"], atol=1e-5)
    np.testing.assert_allclose(back["scales"], a["scales"], rtol=1e-5)
    summary = json.loads(result.save_summary(tmp_path / "fit.json").read_text())
    for key in ("loss", "iterations", "seconds", "fit_psnr_per_view", "num_gaussians", "stop_reason"):
        assert key in summary


def test_cancel_stops_the_fit(matrix):
    rig, times, images = matrix
    event = threading.Event()
    seen = []

    def progress(i, n, loss):
        seen.append(i)
        if i >= 25:
            event.set()

    with pytest.raises(Cancelled):
        fit(images[::3], rig.K[::3], rig.w2c[::3], times, iterations=400, num_gaussians=200, num_nodes=16,
            track=False, on_progress=progress, cancel=event)
    assert max(seen) <= 50  # cancel is checked at least every 50 iterations


def test_divergence_stops_and_returns_the_last_good_state(matrix, monkeypatch):
    rig, times, images = matrix
    original = fit_module._Fitter._loss
    count = {"n": 0}

    def flaky(self, *args, **kwargs):
        count["n"] += 1
        loss = original(self, *args, **kwargs)
        return loss * float("nan") if count["n"] >= 35 else loss

    monkeypatch.setattr(fit_module._Fitter, "_loss", flaky)
    result = fit(images[::3], rig.K[::3], rig.w2c[::3], times, iterations=200, num_gaussians=200, num_nodes=16,
                 track=False)
    assert result.summary["stop_reason"] == "diverged"
    assert result.summary["diverged_at"] == 35
    assert result.summary["iterations"] <= 35
    assert all(torch.isfinite(p).all() for p in result.gaussians.parameters())
    assert np.isfinite(result.centres).all()


def test_loss_reports_lpips_fallback():
    loss = PhotometricLoss("auto")
    if loss.name == "l1+dssim":
        assert loss.fallback_reason  # says why LPIPS is not used
        with pytest.raises(RuntimeError):
            PhotometricLoss("dssim+lpips")
    x = torch.rand(2, 16, 16, 3)
    assert float(loss(x, x).total) < 1e-6
    assert float(loss(x, torch.rand(2, 16, 16, 3)).total) > 0.05
