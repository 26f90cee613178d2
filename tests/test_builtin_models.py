"""The built-in model set: shapes, interface, input checks, weight files (random networks; fast)."""

from __future__ import annotations

import math

import pytest
import torch

from backend.errors import InvalidInput
from backend.models.base import Autoencoder, Cond, ModelSet, SequenceDenoiser
from backend.models.builtin import MissingWeights, load_builtin
from backend.models.builtin.weights_io import FILES, save_network
from backend.models.registry import load_model_set
from backend.sampling.compose import Known, sample_matrix
from backend.sampling.schedules import karras_sigmas, logistic_weight


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def ms() -> ModelSet:
    return load_builtin(untrained=True)


def _mv_conds(ms, lat, n=8, elev_deg=10.0):
    el = torch.full((n,), math.radians(elev_deg))
    az = torch.deg2rad(torch.arange(n) * (360.0 / n))
    return ms.multiview_cond(lat, el, az)


def test_untrained_set_has_the_advertised_shapes_and_limits(ms):
    assert isinstance(ms.autoencoder, Autoencoder)
    for m in (ms.video, ms.multiview, ms.element):
        assert isinstance(m, SequenceDenoiser)
        assert m.latent_shape == (4, 16, 16)
        assert m.latent_space == ms.autoencoder.latent_space
    assert (ms.video.seq_len, ms.multiview.seq_len, ms.element.seq_len) == (8, 8, 1)
    assert ms.limits.views == (8,) and ms.limits.frames == (8,) and ms.limits.resolution == 64
    assert ms.limits.elevation_deg == (0.0, 30.0)
    assert 0 < ms.sigma_min < ms.sigma_max
    img = torch.rand(3, 3, 64, 64) * 2 - 1
    lat = ms.autoencoder.encode(img)
    assert lat.shape == (3, 4, 16, 16)
    assert ms.autoencoder.decode(lat).shape == (3, 3, 64, 64)


def test_denoise_shapes_and_edm_skip_at_tiny_noise(ms):
    x = torch.randn(2, 8, 4, 16, 16)
    lat = torch.randn(4, 16, 16)
    out = ms.multiview.denoise(x, torch.full((2,), 0.5), [_mv_conds(ms, lat)] * 2)
    assert out.shape == x.shape and out.dtype == x.dtype and torch.isfinite(out).all()
    # EDM preconditioning: at sigma -> 0 the skip connection dominates, x0 -> x
    tiny = ms.video.denoise(x, torch.full((2,), 1e-4), [ms.video_cond(lat)] * 2)
    assert torch.allclose(tiny, x, atol=1e-3)
    single = ms.element.denoise(x[:, :1], torch.full((2,), 2.0), [ms.video_cond(lat)] * 2)
    assert single.shape == (2, 1, 4, 16, 16)


def test_conditioning_changes_the_prediction(ms):
    """Each model reads its conditions: front latent and cameras (multi-view), frame-0 latent (video)."""
    torch.manual_seed(0)
    x = torch.randn(1, 8, 4, 16, 16)
    a, b = torch.randn(4, 16, 16), torch.randn(4, 16, 16)
    s = torch.full((1,), 1.0)
    # untrained nets start with zero-initialised outputs; perturb them so outputs depend on inputs
    for net in (ms.video.net, ms.multiview.net):
        with torch.no_grad():
            for p in net.parameters():
                if p.abs().sum() == 0:
                    p.normal_(0, 0.02)
    va, vb = ms.video.denoise(x, s, [ms.video_cond(a)]), ms.video.denoise(x, s, [ms.video_cond(b)])
    assert (va - vb).abs().max() > 1e-4
    m1 = ms.multiview.denoise(x, s, [_mv_conds(ms, a, elev_deg=5.0)])
    m2 = ms.multiview.denoise(x, s, [_mv_conds(ms, a, elev_deg=25.0)])
    assert (m1 - m2).abs().max() > 1e-5


def test_wrong_counts_and_resolutions_are_refused_with_what_is_expected(ms):
    lat = torch.zeros(4, 16, 16)
    with pytest.raises(InvalidInput, match=r"built-in multi-view model expects 8 views at 64×64, got 12 at 128×128"):
        ms.multiview.check_sequence(12, [ms.multiview_cond(torch.zeros(4, 32, 32), torch.zeros(12), torch.zeros(12),
                                                          image=torch.zeros(3, 128, 128))])
    with pytest.raises(InvalidInput, match=r"built-in video model expects 8 frames at 64×64, got 14 at 64×64") as e:
        ms.video.check_sequence(14, [ms.video_cond(lat)])
    assert e.value.field == "frames"
    with pytest.raises(InvalidInput, match=r"expects 8 frames at 64×64, got 8 at 128×128") as e:
        ms.video.check_sequence(8, [ms.video_cond(torch.zeros(4, 32, 32))])
    assert e.value.field == "resolution"
    with pytest.raises(InvalidInput, match=r"one elevation per view \(8 cameras"):
        ms.multiview.check_sequence(8, [ms.multiview_cond(lat, torch.zeros(7), torch.zeros(8))])
    with pytest.raises(InvalidInput, match=r"trained on orbit elevations 0°..30°, got 60.0°"):
        ms.multiview.check_sequence(8, [_mv_conds(ms, lat, elev_deg=60.0)])
    with pytest.raises(InvalidInput, match="conditioning latent"):
        ms.video.check_sequence(8, [Cond()])
    # denoise refuses before any network call
    calls = ms.video.calls
    with pytest.raises(InvalidInput):
        ms.video.denoise(torch.zeros(1, 14, 4, 16, 16), torch.ones(1), [ms.video_cond(lat)])
    with pytest.raises(InvalidInput, match="latents"):
        ms.video.denoise(torch.zeros(1, 8, 4, 32, 32), torch.ones(1), [ms.video_cond(lat)])
    assert ms.video.calls == calls
    with pytest.raises(InvalidInput, match="images"):
        ms.autoencoder.encode(torch.zeros(1, 3, 128, 128))


def test_sampler_refuses_a_wrong_matrix_through_the_models(ms):
    V, F = 12, 8
    lat = torch.zeros(4, 16, 16)
    vc = [ms.video_cond(lat) for _ in range(V)]
    mc = [_mv_conds(ms, lat, n=V) for _ in range(F)]
    sig = karras_sigmas(2, ms.sigma_min, ms.sigma_max)
    with pytest.raises(InvalidInput, match="expects 8 views"):
        sample_matrix(ms.video, ms.multiview, torch.randn(V, F, 4, 16, 16), sig, video_conds=vc, multiview_conds=mc,
                      weight=logistic_weight())


def test_composed_sampling_runs_and_keeps_known_entries(ms):
    V = F = 8
    g = torch.Generator().manual_seed(0)
    truth = torch.randn(V, F, 4, 16, 16, generator=g)
    mask = torch.zeros(V, F, dtype=torch.bool)
    mask[:, 0] = True
    mask[0, :] = True
    sig = karras_sigmas(1, ms.sigma_min, ms.sigma_max)
    out = sample_matrix(ms.video, ms.multiview, torch.randn(V, F, 4, 16, 16, generator=g) * float(sig[0]), sig,
                        video_conds=[ms.video_cond(truth[v, 0]) for v in range(V)],
                        multiview_conds=[_mv_conds(ms, truth[0, f]) for f in range(F)], weight=logistic_weight(),
                        known=Known(mask, truth))
    assert out.shape == truth.shape and torch.isfinite(out).all()
    assert torch.equal(out[mask], truth[mask])


def test_guidance_uses_the_unconditional_branch(ms):
    g = load_builtin(untrained=True, guidance_multiview=2.0)
    assert g.multiview.guidance == 2.0 and ms.multiview.guidance == 1.0
    x = torch.randn(1, 8, 4, 16, 16)
    with torch.no_grad():
        for p in g.multiview.net.parameters():
            if p.abs().sum() == 0:
                p.normal_(0, 0.02)
    cond = [_mv_conds(g, torch.randn(4, 16, 16))]
    a = g.multiview.denoise(x, torch.ones(1), cond)
    g.multiview.guidance = 1.0
    b = g.multiview.denoise(x, torch.ones(1), cond)
    assert (a - b).abs().max() > 1e-6
    with pytest.raises(InvalidInput, match="guidance"):
        load_builtin(untrained=True, guidance_video=-1.0)


def test_missing_weights_fail_clearly_and_never_fall_back_to_random(tmp_path):
    with pytest.raises(MissingWeights, match=r"weights are missing: .*autoencoder.safetensors.*untrained=True"):
        load_builtin(checkpoints=str(tmp_path))
    with pytest.raises(ValueError, match="unknown options"):
        load_builtin(untrained=True, resolution=128)


def test_weight_files_round_trip_and_must_belong_together(tmp_path, ms):
    space = ms.autoencoder.latent_space
    save_network(tmp_path / FILES["autoencoder"], "autoencoder", ms.autoencoder.net, ms.autoencoder.cfg, space, step=3)
    save_network(tmp_path / FILES["video"], "video", ms.video.net, ms.video.cfg, space, step=4)
    save_network(tmp_path / FILES["multiview"], "multiview", ms.multiview.net, ms.multiview.cfg, space, step=5)
    loaded = load_model_set("builtin", checkpoints=str(tmp_path))
    assert loaded.info["steps"] == {"autoencoder": "3", "video": "4", "multiview": "5"}
    x = torch.randn(1, 8, 4, 16, 16)
    conds = [ms.video_cond(torch.randn(4, 16, 16))]
    # float16 storage: the loaded network agrees with the original to fp16 precision
    assert torch.allclose(loaded.video.denoise(x, torch.ones(1), conds), ms.video.denoise(x, torch.ones(1), conds), atol=2e-2)
    save_network(tmp_path / FILES["multiview"], "multiview", ms.multiview.net, ms.multiview.cfg, "another-space")
    with pytest.raises(ValueError, match="do not belong together"):
        load_builtin(checkpoints=str(tmp_path))
    save_network(tmp_path / FILES["multiview"], "video", ms.video.net, ms.video.cfg, space)
    with pytest.raises(ValueError, match="not a dsquare built-in multiview weight file"):
        load_builtin(checkpoints=str(tmp_path))


def test_networks_do_not_shadow_torch_module_methods(ms):
    """A method named like one of nn.Module's (``_apply``, ``to``, ``train``...) on a built-in network silently
    breaks ``.to()`` / ``.float()`` / ``.eval()``; none may exist, and dtype/device moves must reach every tensor."""
    import copy

    from torch import nn

    allowed = {"__init__", "forward", "extra_repr", "__doc__", "__module__", "__dict__", "__weakref__", "__annotations__"}
    reserved = set(vars(nn.Module)) - allowed
    for net in (ms.autoencoder.net, ms.video.net, ms.multiview.net):
        ours = {type(m) for m in net.modules() if type(m).__module__.startswith("backend.models.builtin")}
        assert len(ours) >= 2
        for cls in ours:
            clash = sorted(set(vars(cls)) & reserved)
            assert not clash, f"{cls.__name__} overrides nn.Module.{clash}"
        moved = copy.deepcopy(net).double()
        assert all(t.dtype == torch.float64 for t in list(moved.parameters()) + [b for b in moved.buffers()
                                                                                 if b.is_floating_point()])
        assert next(moved.float().parameters()).dtype == torch.float32
