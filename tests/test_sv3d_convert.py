"""SV3D_p's original checkpoint layout -> diffusers: parity with the original network, key
conversion, per-frame camera conditioning, refusal of checkpoints that do not fit."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))

from sgm_reference import TINY_SV3D_PARAMS, RefVideoUNet, randomize_, sv3d_vector, timestep_embedding  # noqa: E402

from backend.errors import InvalidInput  # noqa: E402
from backend.models.sgm_convert import (  # noqa: E402
    CheckpointMismatch, build_diffusers_unet, diffusers_to_sgm, parse_sgm_params, sgm_to_diffusers,
)
from backend.models.sv3d import SV3D_P_PARAMS, unet_from_sgm  # noqa: E402
from backend.models.video_unet import sinusoidal_embedding  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")

T = 5


@pytest.fixture(scope="module")
def reference():
    torch.manual_seed(0)
    ref = RefVideoUNet(TINY_SV3D_PARAMS).eval()
    randomize_(ref, torch.Generator().manual_seed(0))
    return ref


def _inputs(seed=1, frames=T):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(frames, 8, 8, 8, generator=g)
    c_noise = 0.25 * torch.log(torch.full((frames,), 3.7))
    context = torch.randn(frames, 1, TINY_SV3D_PARAMS["context_dim"], generator=g)
    cond_aug = torch.full((frames,), 1e-5)
    polar = math.pi / 2 - torch.full((frames,), math.radians(10.0))
    azimuth = torch.remainder(torch.arange(1, frames + 1) * 2 * math.pi / frames, 2 * math.pi)
    return x, c_noise, context, cond_aug, polar, azimuth


@pytest.mark.parametrize("prefixed", [True, False])
def test_unet_from_sgm_reproduces_the_original_network(reference, prefixed):
    sd = reference.state_dict()
    if prefixed:
        sd = {"model.diffusion_model." + k: v for k, v in sd.items()}
        sd["conditioner.embedders.0.open_clip.dummy"] = torch.zeros(3)  # a whole checkpoint carries more
    net = unet_from_sgm(sd, TINY_SV3D_PARAMS)
    x, c_noise, context, cond_aug, polar, azimuth = _inputs()
    with torch.no_grad():
        want = reference(x, c_noise, context, sv3d_vector(cond_aug, polar, azimuth), T)
        got = net(x, c_noise, context, cond_aug, polar, azimuth)
    assert got.shape == (T, 4, 8, 8)
    assert want.abs().mean() > 0.1  # the comparison is not between two zeros
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


def test_batched_sequences_match_one_at_a_time(reference):
    net = unet_from_sgm(reference.state_dict(), TINY_SV3D_PARAMS)
    a, b = _inputs(1), _inputs(2)
    with torch.no_grad():
        both = net(*[torch.cat([u, v]) for u, v in zip(a, b)], num_frames=T)
        one = torch.cat([net(*a), net(*b)])
    torch.testing.assert_close(both, one, rtol=1e-5, atol=1e-5)


def test_key_conversion_round_trip(reference):
    spec = parse_sgm_params(TINY_SV3D_PARAMS)
    original = reference.state_dict()
    converted, unmatched = sgm_to_diffusers(original, spec)
    assert unmatched == []
    expected = build_diffusers_unet(spec).state_dict()
    assert set(converted) == set(expected)
    assert all(tuple(converted[k].shape) == tuple(expected[k].shape) for k in expected)
    back = diffusers_to_sgm(converted, spec, prefix="model.diffusion_model.")
    assert set(back) == {"model.diffusion_model." + k for k in original}
    for k, v in original.items():
        assert back["model.diffusion_model." + k] is v  # renamed, never copied or altered


def test_full_size_sv3d_p_layout_converts_key_for_key():
    """The released SV3D_p architecture (built on the meta device: no memory, no weights)."""
    with torch.device("meta"):
        ref = RefVideoUNet(SV3D_P_PARAMS)
    spec = parse_sgm_params(SV3D_P_PARAMS)
    assert spec.block_out_channels == (320, 640, 1280, 1280) and spec.heads == (5, 10, 20, 20)
    assert spec.attention == (True, True, True, False)
    converted, unmatched = sgm_to_diffusers(ref.state_dict(), spec)
    expected = build_diffusers_unet(spec).state_dict()
    assert unmatched == [] and set(converted) == set(expected)
    assert all(tuple(converted[k].shape) == tuple(expected[k].shape) for k in expected)
    assert sum(v.numel() for v in expected.values()) > 1.4e9  # the 1.5 B-parameter network


def test_per_frame_camera_conditioning_reaches_each_frame(reference):
    """With temporal mixing switched off (mix factors -> +inf, alpha = 1) frames are independent, so
    changing one view's azimuth must change exactly that view's output: the camera is embedded per
    frame, not per clip."""
    sd = {k: (torch.full_like(v, 30.0) if k.endswith("mix_factor") else v) for k, v in reference.state_dict().items()}
    net = unet_from_sgm(sd, TINY_SV3D_PARAMS)
    x, c_noise, context, cond_aug, polar, azimuth = _inputs()
    x = x[:1].expand(T, -1, -1, -1).contiguous()  # identical frames: only the cameras differ
    with torch.no_grad():
        base = net(x, c_noise, context, cond_aug, polar, azimuth)
        for k in range(T):
            assert (base[k] - base[(k + 1) % T]).abs().max() > 1e-3  # each frame sees its own camera
        for k in (0, 3):
            az = azimuth.clone()
            az[k] += 0.7
            moved = net(x, c_noise, context, cond_aug, polar, az)
            changed = [(moved[i] - base[i]).abs().max().item() > 1e-4 for i in range(T)]
            assert changed == [i == k for i in range(T)]
            pol = polar.clone()
            pol[k] -= 0.3
            moved = net(x, c_noise, context, cond_aug, pol, azimuth)
            assert [(moved[i] - base[i]).abs().max().item() > 1e-4 for i in range(T)] == [i == k for i in range(T)]


def test_refuses_checkpoints_with_missing_unexpected_or_misshaped_keys(reference):
    sd = {"model.diffusion_model." + k: v for k, v in reference.state_dict().items()}
    del sd["model.diffusion_model.input_blocks.1.0.in_layers.0.weight"]
    del sd["model.diffusion_model.output_blocks.2.1.time_stack.0.attn2.to_k.weight"]
    sd["model.diffusion_model.input_blocks.1.0.extra_layer.weight"] = torch.zeros(3)
    sd["model.diffusion_model.label_emb.0.0.weight"] = torch.zeros(128, 768)  # SVD's width, not SV3D's 1280
    with pytest.raises(CheckpointMismatch) as err:
        unet_from_sgm(sd, TINY_SV3D_PARAMS)
    e = err.value
    assert e.field == "checkpoint"
    assert e.missing == sorted(["input_blocks.1.0.in_layers.0.weight",
                                "output_blocks.2.1.time_stack.0.attn2.to_k.weight"])
    assert e.unexpected == ["input_blocks.1.0.extra_layer.weight"]
    assert e.mismatched == ["label_emb.0.0.weight"]
    msg = str(e)
    for part in ("2 missing keys", "input_blocks.1.0.in_layers.0.weight", "1 unexpected key",
                 "input_blocks.1.0.extra_layer.weight", "1 wrongly shaped key", "label_emb.0.0.weight"):
        assert part in msg


def test_refuses_unsupported_network_params():
    with pytest.raises(InvalidInput) as err:
        unet_from_sgm({}, dict(TINY_SV3D_PARAMS, use_linear_in_transformer=False))
    assert err.value.field == "sgm_params.use_linear_in_transformer"
    with pytest.raises(InvalidInput) as err:
        unet_from_sgm({}, dict(TINY_SV3D_PARAMS, adm_in_channels=768))
    assert err.value.field == "sgm_params.adm_in_channels" and "1280" in str(err.value)
    with pytest.raises(InvalidInput) as err:
        parse_sgm_params({k: v for k, v in TINY_SV3D_PARAMS.items() if k != "context_dim"})
    assert err.value.field == "sgm_params.context_dim"


def test_sinusoids_follow_stability_convention():
    from diffusers.models.embeddings import get_timestep_embedding

    t = torch.tensor([0.0, 1e-5, 0.5, math.pi, 2 * math.pi, -1.3, 127.0])
    for dim in (256, 512, 7):
        ours = sinusoidal_embedding(t, dim)
        torch.testing.assert_close(ours, timestep_embedding(t, dim))
        if dim % 2 == 0:
            torch.testing.assert_close(ours, get_timestep_embedding(t, dim, flip_sin_to_cos=True,
                                                                    downscale_freq_shift=0))
    # first half cosines, second half sines, frequency 1 first
    e = sinusoidal_embedding(torch.tensor([0.3]), 8)[0]
    freqs = torch.exp(-math.log(10000.0) * torch.arange(4) / 4)
    torch.testing.assert_close(e, torch.cat([torch.cos(0.3 * freqs), torch.sin(0.3 * freqs)]))
