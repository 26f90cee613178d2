"""The svd-sv3d model set on tiny random checkpoints in the real formats: loading, EDM scaling,
guidance, SV3D's camera handling, conditioning, and sampling through the composed sampler."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))

from tiny_stability import (  # noqa: E402
    FRAMES, RESOLUTION, VIEWS, load_tiny_model_set, random_image, write_checkpoints,  # noqa: F401
)

from backend.errors import InvalidInput  # noqa: E402
from backend.models.base import Cond, EDMScaling, ModelSet  # noqa: E402
from backend.models.guidance import Guidance  # noqa: E402
from backend.models.stability_encoders import LATENT_SPACE, content_seed  # noqa: E402
from backend.models.sv3d import sv3d_cameras  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return write_checkpoints(tmp_path_factory.mktemp("checkpoints"))


@pytest.fixture(scope="module")
def models(ckpt):
    return load_tiny_model_set(ckpt)


@pytest.fixture(scope="module")
def images():
    return torch.stack([random_image(i) for i in range(VIEWS)])


def _cameras(n=VIEWS, start=0):
    az = torch.tensor([2 * math.pi * ((v + start) % n) / n for v in range(n)])
    return torch.full((n,), math.radians(10.0)), az


def test_model_set_shape_and_shared_latent_space(models):
    assert models.name == "svd-sv3d"
    assert models.video.latent_space == models.multiview.latent_space == models.autoencoder.latent_space == LATENT_SPACE
    assert models.video.latent_shape == models.multiview.latent_shape == (4, 8, 8)
    # theorem mode's one-entry marginal: SVD on one-frame sequences, sharing the network and encoders
    assert models.element is not models.video and models.element.net is models.video.net
    assert models.element.encoder is models.video.encoder and models.element.max_frames == 1
    assert models.element.latent_space == LATENT_SPACE
    assert models.limits.views == (VIEWS,) and models.limits.frames == (FRAMES,)
    assert models.limits.resolution == RESOLUTION and models.sigma_max == 700.0


def test_vscaling_with_edm_cnoise_formulas():
    sigma = torch.tensor([0.002, 0.5, 1.0, 14.6, 700.0])
    c_skip, c_out, c_in, c_noise = EDMScaling("v")(sigma)
    torch.testing.assert_close(c_skip, 1.0 / (sigma**2 + 1.0))
    torch.testing.assert_close(c_out, -sigma / torch.sqrt(sigma**2 + 1.0))
    torch.testing.assert_close(c_in, 1.0 / torch.sqrt(sigma**2 + 1.0))
    torch.testing.assert_close(c_noise, 0.25 * torch.log(sigma))


def test_svd_denoise_is_edm_v_prediction_of_the_network(models, images):
    """x0 = x / (s^2 + 1) - s / sqrt(s^2 + 1) * F(x / sqrt(s^2 + 1) | z_cond, log(s) / 4, clip, vector)."""
    video = models.video
    saved = video.guidance
    video.guidance = Guidance("none")
    try:
        g = torch.Generator().manual_seed(5)
        x = torch.randn(2, FRAMES, 4, 8, 8, generator=g) * 3.0
        sigma = torch.tensor([3.0, 0.4])
        conds = [ModelSet.video_cond(models.autoencoder.encode(images[i:i + 1])[0], images[i]) for i in range(2)]
        x0 = video.denoise(x, sigma, conds)
        for b in range(2):
            s = float(sigma[b])
            context, z = video.encoder(conds[b], 0.02)
            inp = torch.cat([x[b] / math.sqrt(s * s + 1), z[None].expand(FRAMES, -1, -1, -1)], dim=1)
            vec = torch.tensor([[6.0, 127.0, 0.02]]).expand(FRAMES, 3)
            with torch.no_grad():
                F = video.net.run(inp, torch.full((FRAMES,), 0.25 * math.log(s)), context, vec, FRAMES)
            want = x[b] / (s * s + 1) - s / math.sqrt(s * s + 1) * F
            torch.testing.assert_close(x0[b], want, rtol=1e-4, atol=1e-4)
    finally:
        video.guidance = saved


def test_guidance_scales_and_combination(models, images):
    lin = Guidance("linear", 1.5, 3.0).scales(25)
    torch.testing.assert_close(lin, torch.linspace(1.5, 3.0, 25))
    tri = Guidance("triangle", 1.0, 2.5).scales(21)
    assert float(tri[0]) == 1.0 and float(tri[-1]) == 1.0 and abs(float(tri[10]) - 2.5) < 1e-6
    assert all(float(tri[i]) < float(tri[i + 1]) for i in range(10))  # rises to the middle view
    torch.testing.assert_close(tri, tri.flip(0))
    assert not Guidance("linear", 1.0, 1.0).active(5) and Guidance("triangle", 1.0, 2.5).active(5)
    with pytest.raises(InvalidInput):
        Guidance("cosine")

    video = models.video  # guided x0 = x0_u + s_t (x0_c - x0_u), s = linspace(1.0, 2.5, 4) for 4-frame SVD
    g = torch.Generator().manual_seed(6)
    x = torch.randn(1, FRAMES, 4, 8, 8, generator=g)
    sigma = torch.tensor([1.7])
    cond = ModelSet.video_cond(models.autoencoder.encode(images[:1])[0], images[0])
    guided = video.denoise(x, sigma, [cond])
    c_skip, c_out, c_in, c_noise = EDMScaling("v")(sigma)
    context, z = video.encoder(cond, 0.02)
    vec = torch.tensor([[6.0, 127.0, 0.02]]).expand(FRAMES, 3)

    def x0(ctx, lat):
        inp = torch.cat([x[0] * c_in, lat[None].expand(FRAMES, -1, -1, -1)], dim=1)
        with torch.no_grad():
            return c_skip * x[0] + c_out * video.net.run(inp, c_noise, ctx, vec, FRAMES)

    x_c, x_u = x0(context, z), x0(torch.zeros_like(context), torch.zeros_like(z))
    s = torch.linspace(1.0, 2.5, FRAMES).view(FRAMES, 1, 1, 1)
    torch.testing.assert_close(guided[0], x_u + s * (x_c - x_u), rtol=1e-4, atol=1e-4)


def test_guidance_only_within_its_sigma_range(models, images):
    video = models.video
    cond = ModelSet.video_cond(models.autoencoder.encode(images[:1])[0], images[0])
    x = torch.randn(1, FRAMES, 4, 8, 8, generator=torch.Generator().manual_seed(12))
    s_in, s_out = torch.tensor([1.7]), torch.tensor([5.0])
    saved = video.guidance
    try:
        video.guidance = Guidance("linear", 1.0, 2.5)
        guided = video.denoise(x, s_in, [cond])
        video.guidance = Guidance("none")
        plain = video.denoise(x, s_out, [cond])
        video.guidance = Guidance("linear", 1.0, 2.5, sigma_range=(0.5, 2.0))
        torch.testing.assert_close(video.denoise(x, s_in, [cond]), guided)
        before = video.sequences
        torch.testing.assert_close(video.denoise(x, s_out, [cond]), plain)
        assert video.sequences - before == 1  # no unconditional pass outside the range
        mixed = video.denoise(torch.cat([x, x]), torch.cat([s_in, s_out]), [cond, cond])
        torch.testing.assert_close(mixed, torch.cat([guided, plain]), rtol=1e-5, atol=1e-5)
    finally:
        video.guidance = saved


def test_a_jobs_guidance_scale_sets_the_peak_and_is_restored(models):
    from backend.pipeline import _guidance

    video_default, mv_default = models.video.guidance, models.multiview.guidance
    with _guidance(models, 2.0):  # what the pipeline does with Options.guidance
        assert models.video.guidance == Guidance("linear", 1.0, 2.0)
        assert models.multiview.guidance == Guidance("triangle", 1.0, 2.0)
    assert models.video.guidance == video_default and models.multiview.guidance == mv_default
    with _guidance(models, 1.0):  # scale 1: no guidance, one network pass
        assert not models.video.guidance.active(FRAMES) and not models.multiview.guidance.active(VIEWS)
    with pytest.raises(InvalidInput):
        models.video.guidance = "strong"
    assert models.video.guidance == video_default


def test_sv3d_cameras_put_the_conditioning_view_last():
    el = torch.tensor([0.1, 0.2, 0.3, 0.4])
    az = torch.tensor([0.0, math.pi / 2, math.pi, 3 * math.pi / 2])
    order, polar, azn = sv3d_cameras(el, az)
    assert order.tolist() == [1, 2, 3, 0]
    torch.testing.assert_close(polar, (math.pi / 2 - el[order]).float())
    torch.testing.assert_close(azn, torch.tensor([math.pi / 2, math.pi, 3 * math.pi / 2, 0.0]))
    # an orbit given from another start, with negative angles: still rotated to end at azimuth 0
    order, _, azn = sv3d_cameras(el, torch.tensor([-math.pi / 2, 0.0, math.pi / 2, math.pi]))
    assert order.tolist() == [2, 3, 0, 1]
    torch.testing.assert_close(azn, torch.tensor([math.pi / 2, math.pi, 3 * math.pi / 2, 0.0]))
    order, _, azn = sv3d_cameras(el, az, azimuth_sign=-1.0)  # the other turning direction
    torch.testing.assert_close(azn, torch.tensor([3 * math.pi / 2, math.pi, math.pi / 2, 0.0]))
    with pytest.raises(InvalidInput) as err:
        sv3d_cameras(el, az + 0.3)
    assert err.value.field == "cond.azimuth" and "azimuth 0" in str(err.value)


def test_sv3d_runs_the_column_in_orbit_order_and_returns_it_in_matrix_order(models, images):
    mv = models.multiview
    lat0 = models.autoencoder.encode(images[:1])[0]
    el, az = _cameras()
    g = torch.Generator().manual_seed(7)
    x = torch.randn(1, VIEWS, 4, 8, 8, generator=g)
    sigma = torch.tensor([2.5])
    out = mv.denoise(x, sigma, [ModelSet.multiview_cond(lat0, el, az, images[0])])
    # the same column listed from view 2 on: same views, same cameras -> same x0 per view
    perm = torch.tensor([2, 3, 0, 1])
    out_p = mv.denoise(x[:, perm], sigma, [ModelSet.multiview_cond(lat0, el[perm], az[perm], images[0])])
    torch.testing.assert_close(out_p, out[:, perm], rtol=1e-4, atol=1e-4)
    # and the network saw the front view last: recompute in orbit order by hand
    c_skip, c_out, c_in, c_noise = EDMScaling("v")(sigma)
    context, z = mv.encoder(ModelSet.multiview_cond(lat0, el, az, images[0]), 1e-5)
    order = torch.tensor([1, 2, 3, 0])
    vec = torch.stack([torch.full((VIEWS,), 1e-5), math.pi / 2 - el[order],
                       torch.tensor([math.pi / 2, math.pi, 3 * math.pi / 2, 0.0])], dim=1)
    scales = torch.tensor([1.0, 2.0, 2.0, 1.0]).view(VIEWS, 1, 1, 1)  # triangle 1 -> 2.5 over 4 views

    def x0(ctx, lat):
        inp = torch.cat([x[0, order] * c_in, lat[None].expand(VIEWS, -1, -1, -1)], dim=1)
        with torch.no_grad():
            return c_skip * x[0, order] + c_out * mv.net.run(inp, c_noise, ctx, vec, VIEWS)

    x_u, x_c = x0(torch.zeros_like(context), torch.zeros_like(z)), x0(context, z)
    want = torch.empty_like(x_c)
    want[order] = x_u + scales * (x_c - x_u)
    torch.testing.assert_close(out[0], want, rtol=1e-4, atol=1e-4)


def test_results_do_not_depend_on_max_batch(models, images):
    video = models.video
    lat = models.autoencoder.encode(images)
    conds = [ModelSet.video_cond(lat[v], images[v]) for v in range(VIEWS)]
    x = torch.randn(VIEWS, FRAMES, 4, 8, 8, generator=torch.Generator().manual_seed(8))
    sigma = torch.full((VIEWS,), 5.0)
    whole = video.denoise(x, sigma, conds)
    saved, video.max_batch = video.max_batch, 3
    try:
        calls = video.calls
        chunked = video.denoise(x, sigma, conds)
        assert video.calls - calls == 3  # 8 sequences (4 conditional + 4 unconditional) in chunks of 3
    finally:
        video.max_batch = saved
    torch.testing.assert_close(chunked, whole, rtol=1e-5, atol=1e-5)


def test_condition_encoder_caches_and_seeds_noise_from_the_image(models, images):
    enc = models.video.encoder
    c1, c2 = Cond(image=images[0]), Cond(image=images[0].clone())
    ctx1, z1 = enc(c1, 0.02)
    ctx_again, z_again = enc(c1, 0.02)
    assert z_again is z1  # cached
    ctx2, z2 = enc(c2, 0.02)  # another Cond with the same picture: the same noise, the same latent
    torch.testing.assert_close(z2, z1)
    _, z_other = enc(Cond(image=images[1]), 0.02)
    assert not torch.allclose(z_other, z1)
    _, z_clean = enc(Cond(image=images[0]), 0.0)
    torch.testing.assert_close(z_clean, models.autoencoder.encode_unscaled(images[:1])[0])
    noisy = images[0] + 0.02 * torch.randn(images[0].shape, generator=torch.Generator().manual_seed(
        content_seed(images[0], 0)))
    torch.testing.assert_close(z1, models.autoencoder.encode_unscaled(noisy[None])[0])
    # a Cond with only a latent is decoded to an image first
    lat = models.autoencoder.encode(images[:1])[0]
    ctx3, _ = enc(Cond(latent=lat), 1e-5)
    torch.testing.assert_close(ctx3, enc.clip(models.autoencoder.decode(lat[None])))


def test_refuses_bad_sequences_before_any_network_call(models, images):
    lat = models.autoencoder.encode(images[:1])[0]
    calls = models.video.calls
    with pytest.raises(InvalidInput) as err:
        models.video.check_sequence(FRAMES + 1, [])
    assert err.value.field == "frames" and str(FRAMES) in str(err.value)
    with pytest.raises(InvalidInput) as err:
        models.video.check_sequence(FRAMES, [Cond()])
    assert err.value.field == "conds[0].image"
    with pytest.raises(InvalidInput) as err:
        models.multiview.check_sequence(VIEWS, [ModelSet.multiview_cond(lat, *_cameras(VIEWS + 1), images[0])])
    assert err.value.field == "conds[0].azimuth"
    with pytest.raises(InvalidInput) as err:
        el, az = _cameras()
        models.multiview.check_sequence(VIEWS, [ModelSet.multiview_cond(lat, el, az + 0.5, images[0])])
    assert err.value.field == "conds[0].azimuth"
    with pytest.raises(InvalidInput) as err:
        models.video.denoise(torch.zeros(1, FRAMES, 4, 8, 8), torch.ones(1), [Cond(image=images[0][:, :8])])
    assert err.value.field == "conds[0].image"
    assert models.video.calls == calls


def test_composed_sampling_with_the_real_adapters(models, images):
    ae = models.autoencoder
    lat = ae.encode(images)
    saved = models.video.guidance, models.multiview.guidance  # guidance is tested above; halve the work here
    models.video.guidance = models.multiview.guidance = Guidance("none")
    try:
        _sample_and_decode(models, images, ae, lat)
    finally:
        models.video.guidance, models.multiview.guidance = saved


def _sample_and_decode(models, images, ae, lat):
    from backend.sampling.compose import VRS, sample_matrix
    from backend.sampling.schedules import karras_sigmas, logistic_weight

    el, az = _cameras()
    video_conds = [ModelSet.video_cond(lat[v], images[v]) for v in range(VIEWS)]
    mv_conds = [ModelSet.multiview_cond(lat[0], el, az, images[0]) for _ in range(FRAMES)]
    sigmas = karras_sigmas(2, models.sigma_min, models.sigma_max)
    x_T = torch.randn(VIEWS, FRAMES, *ae.latent_shape, generator=torch.Generator().manual_seed(9)) * sigmas[0]
    out = sample_matrix(models.video, models.multiview, x_T.float(), sigmas, video_conds=video_conds,
                        multiview_conds=mv_conds, weight=logistic_weight(), vrs=VRS(steps=1, repeats=2),
                        generator=torch.Generator().manual_seed(1))
    assert out.shape == x_T.shape and torch.isfinite(out).all()
    frames = ae.decode(out[0])
    assert frames.shape == (FRAMES, 3, RESOLUTION, RESOLUTION) and frames.abs().max() <= 1.0
    theorem = sample_matrix(models.video, models.multiview, x_T.float(), sigmas[-2:], video_conds=video_conds,
                            multiview_conds=mv_conds, weight=0.5, combine="theorem", element=models.element)
    assert torch.isfinite(theorem).all()


def test_registry_and_checkpoint_errors(ckpt, tmp_path, monkeypatch):
    from backend.models.registry import load_model_set

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(InvalidInput) as err:  # nothing local, nothing cached, offline
        load_model_set("svd-sv3d", device="cpu", checkpoints=str(tmp_path))
    assert err.value.field == "checkpoints"
    assert "stabilityai/stable-video-diffusion-img2vid-xt" in str(err.value) and "HF_HUB_OFFLINE" in str(err.value)
    (tmp_path / "svd-xt").symlink_to(ckpt / "svd-xt")  # SVD present, SV3D missing
    with pytest.raises(InvalidInput) as err:
        load_tiny_model_set(tmp_path)
    assert err.value.field == "checkpoints" and "sv3d_p.safetensors" in str(err.value)
    with pytest.raises(InvalidInput) as err:
        load_tiny_model_set(ckpt, max_batch=0)
    assert err.value.field == "max_batch"
    with pytest.raises(InvalidInput) as err:
        load_tiny_model_set(ckpt, steps=4)
    assert err.value.field == "steps"
    with pytest.raises(InvalidInput) as err:
        load_model_set("svd-sv3d", device="cuda:0" if not torch.cuda.is_available() else "tpu", checkpoints=str(ckpt))
    assert err.value.field == "device"


def test_pipeline_stage_one_runs_on_the_real_adapters(models, mode="image"):
    """The backend's stage one (turntable / one image -> orbit, reference motion, composed matrix,
    decode) with the svd-sv3d model set: conditions, cameras and limits fit together."""
    import numpy as np

    from backend.pipeline import sample_stage_one, validate_submit
    from protocol.cameras import orbit_rig
    from protocol.messages import Cameras, Options, Submit, new_job_id

    rig = orbit_rig(VIEWS, RESOLUTION, elevation_deg=10.0)
    rng = np.random.default_rng(0)
    tt = rng.integers(0, 255, size=(VIEWS, RESOLUTION, RESOLUTION, 4), dtype=np.uint8)
    tt[..., 3] = 255
    if mode == "image":
        tt = tt[:1]
    sub = Submit(job_id=new_job_id(), mode=mode, turntable=tt, cameras=Cameras.from_rig(rig),
                 options=Options(frames=FRAMES, steps=1, seed=3, fit_iterations=10, guidance=2.0, previews=False))
    validate_submit(sub, models)
    out = sample_stage_one(sub, models)
    assert out.images.shape == (VIEWS, FRAMES, RESOLUTION, RESOLUTION, 3)
    assert out.latents.shape == (VIEWS, FRAMES, 4, 8, 8) and torch.isfinite(out.latents).all()
    if mode != "image":
        np.testing.assert_array_equal(out.images[:, 0], tt[..., :3])
    assert models.video.guidance == Guidance("linear", 1.0, 2.5)  # the job's scale was undone
