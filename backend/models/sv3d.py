"""SV3D_p behind the ``SequenceDenoiser`` interface: the multi-view (orbit) model.

SV3D_p is a VideoUNet (same architecture as SVD) whose "frames" are the views of an orbit. What
differs from SVD, all from generative-models' ``configs/inference/sv3d_p.yaml`` and
``scripts/sampling/simple_video_sample.py``:

* The vector input is 1280 wide and given *per frame*: sinusoidal embeddings of the noise
  augmentation (256), the polar angle (512) and the azimuth (512) of each view, concatenated.
  diffusers' stock forward embeds one vector per clip, so ``VideoUNet`` runs its own forward.
* Cameras: polar = pi/2 - elevation; azimuth relative to the conditioning view, in [0, 2 pi); the
  conditioning view is the *last* frame of the orbit (azimuth 0). dsquare's columns put the front
  (conditioning) view wherever the orbit has it, so ``SV3DDenoiser`` rotates each column to end at
  the front view before the network and back after.
* Guidance: ``TrianglePredictionGuider`` (1.0 at both ends of the orbit, i.e. next to the
  conditioning view, up to 2.5 half way round); noise augmentation cond_aug = 1e-5.
* Weights: Stability's single file ``sv3d_p.safetensors`` in the original key layout, converted by
  ``unet_from_sgm``. It shares SVD's VAE encoder (latent space) and CLIP image encoder.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

import torch
from torch import Tensor, nn

from backend.errors import InvalidInput
from backend.models.base import Cond
from backend.models.guidance import Guidance
from backend.models.sgm_convert import (
    SgmUNetSpec, build_diffusers_unet, load_strict, module_prefix_map, parse_sgm_params, rename_keys, sgm_to_diffusers,
)
from backend.models.stability_denoiser import StabilityVideoDenoiser
from backend.models.stability_encoders import ConditionEncoder
from backend.models.video_unet import VideoUNet, per_frame

#: ``model.params.network_config.params`` of configs/inference/sv3d_p.yaml.
SV3D_P_PARAMS: dict[str, Any] = dict(
    adm_in_channels=1280, num_classes="sequential", use_checkpoint=True, in_channels=8, out_channels=4,
    model_channels=320, attention_resolutions=[4, 2, 1], num_res_blocks=2, channel_mult=[1, 2, 4, 4],
    num_head_channels=64, use_linear_in_transformer=True, transformer_depth=1, context_dim=1024,
    spatial_transformer_attn_type="softmax-xformers", extra_ff_mix_layer=True, use_spatial_context=True,
    merge_strategy="learned_with_images", video_kernel_size=[3, 1, 1],
)
SV3D_VECTOR_WIDTHS = (256, 512, 512)  # cond_aug, polar, azimuth (conditioner order)
SV3D_GUIDANCE = Guidance("triangle", 1.0, 2.5)
SV3D_COND_AUG = 1e-5
SV3D_VIEWS = 21
AZIMUTH_TOLERANCE = 1e-3  # radians: how close a view must be to the conditioning camera


class SV3DNet(VideoUNet):
    """The SV3D_p network with the original call signature (see ``forward``)."""

    def forward(self, x: Tensor, c_noise: Tensor, context: Tensor, cond_aug: Tensor, polar_rad: Tensor,
                azimuth_rad: Tensor, num_frames: int | None = None) -> Tensor:
        """What the original ``VideoUNet`` returns for ``y`` = the conditioner's per-frame vector.

        x: [N, 8, h, w] with N = B * num_frames (default: one sequence, num_frames = N);
        c_noise: [N], [B] or scalar; context: [N, 1, D] (or [B, 1, D]);
        cond_aug, polar_rad, azimuth_rad: [N] (one value per frame; [B] or scalar broadcast).
        Returns [N, 4, h, w].
        """
        T = int(num_frames) if num_frames is not None else int(x.shape[0])
        B = max(1, x.shape[0] // T)
        cols = [per_frame(torch.as_tensor(v, dtype=torch.float32, device=x.device).reshape(-1), B, T, name)
                for v, name in ((cond_aug, "cond_aug"), (polar_rad, "polar_rad"), (azimuth_rad, "azimuth_rad"))]
        return self.run(x, c_noise, context, torch.stack(cols, dim=1), num_frames=T)


def sgm_key_names(spec: SgmUNetSpec):
    """A function mapping diffusers key names back to original names (for error messages)."""
    inverse = {v: k for k, v in module_prefix_map(spec).items()}

    def back(keys):
        mapping, _ = rename_keys(keys, inverse)
        return [mapping.get(k, k) for k in keys]

    return back


def unet_from_sgm(state_dict: Mapping[str, Tensor], sgm_params: Mapping[str, Any] = SV3D_P_PARAMS, *,
                  dtype: torch.dtype | None = None, device: str | torch.device = "cpu") -> SV3DNet:
    """Build the diffusers-based SV3D_p network from an original-layout state dict.

    state_dict: the network's weights, keys with or without ``model.diffusion_model.`` (a whole
        ``sv3d_p.safetensors`` works: conditioner and first-stage keys are ignored).
    sgm_params: the original ``network_config.params`` (default: SV3D_p's). The vector input must be
        1280 wide (noise augmentation 256 + polar 512 + azimuth 512).
    Raises ``CheckpointMismatch`` (an InvalidInput on field ``checkpoint``) listing missing,
    unexpected or mis-shaped keys.
    """
    spec = parse_sgm_params(sgm_params)
    if spec.adm_in_channels != sum(SV3D_VECTOR_WIDTHS):
        raise InvalidInput("sgm_params.adm_in_channels", f"SV3D_p's vector is {sum(SV3D_VECTOR_WIDTHS)} wide "
                                                         f"(256 + 512 + 512), got {spec.adm_in_channels}")
    converted, unmatched = sgm_to_diffusers(state_dict, spec)
    unet = build_diffusers_unet(spec, addition_time_embed_dim=SV3D_VECTOR_WIDTHS[0])
    load_strict(unet, converted, what="the SV3D_p network", unmatched=unmatched, rename_back=sgm_key_names(spec))
    if dtype is not None:
        unet = nn.Module.to(unet, dtype)  # (diffusers' own .to warns about fp32 modules this network lacks)
    net = SV3DNet(unet.to(device), SV3D_VECTOR_WIDTHS)
    from diffusers.models.attention_processor import AttnProcessor2_0

    net.unet.set_attn_processor(AttnProcessor2_0())
    return net.eval()


def sv3d_cameras(elevation: Tensor, azimuth: Tensor, azimuth_sign: float = 1.0,
                 field: str = "cond") -> tuple[Tensor, Tensor, Tensor]:
    """SV3D's camera inputs for one column of T views.

    elevation, azimuth: [T] radians (azimuth relative to the conditioning view, counter-clockwise
    seen from above). Returns (order [T] long, polar [T], azimuth [T]) in network order: the views
    rotated so that the conditioning view (azimuth 0) comes last, polar = pi/2 - elevation, azimuth
    = sign * azimuth mod 2 pi (exactly 0 for the conditioning view).
    """
    el = torch.as_tensor(elevation, dtype=torch.float64).reshape(-1)
    az = torch.as_tensor(azimuth, dtype=torch.float64).reshape(-1)
    T = az.numel()
    if el.numel() != T:
        raise InvalidInput(f"{field}.elevation", f"need one elevation per view ({T}), got {el.numel()}")
    if not (torch.isfinite(el).all() and torch.isfinite(az).all()):
        raise InvalidInput(f"{field}.azimuth", "camera angles must be finite")
    if (el.abs() >= math.pi / 2).any():
        raise InvalidInput(f"{field}.elevation", "elevations must be strictly between -90 and 90 degrees")
    az = torch.remainder(float(azimuth_sign) * az, 2 * math.pi)
    dist = torch.minimum(az, 2 * math.pi - az)
    k = int(torch.argmin(dist))
    if float(dist[k]) > AZIMUTH_TOLERANCE:
        raise InvalidInput(f"{field}.azimuth", "SV3D_p generates an orbit that ends at the conditioning view: one "
                                               "view must have azimuth 0 (the front view); closest is "
                                               f"{math.degrees(float(dist[k])):.2f} degrees away")
    order = torch.tensor([(k + 1 + i) % T for i in range(T)], dtype=torch.long)
    az_net = az[order].clone()
    az_net[-1] = 0.0
    polar = math.pi / 2 - el[order]
    return order, polar.float(), az_net.float()


class SV3DDenoiser(StabilityVideoDenoiser):
    """SV3D_p on sequences over views (columns of the matrix).

    The Cond carries the front view's image (or latent) at the column's frame, and per-view
    ``elevation`` / ``azimuth`` [T] in radians (azimuth relative to the front view).
    azimuth_sign: +1 if SV3D's azimuth turns the same way as dsquare's (counter-clockwise seen from
    above), -1 otherwise.
    """

    name = "SV3D_p"
    sequence_field = "views"

    def __init__(self, net: VideoUNet, encoder: ConditionEncoder | None, *, latent_shape, seq_len: int = SV3D_VIEWS,
                 max_frames: int | None = None, guidance: Guidance = SV3D_GUIDANCE, cond_aug: float = SV3D_COND_AUG,
                 azimuth_sign: float = 1.0, max_batch: int | None = None):
        if tuple(net.vector_widths) != SV3D_VECTOR_WIDTHS:
            raise InvalidInput("sv3d", f"SV3D_p's vector is (cond_aug, polar, azimuth) at (256, 512, 512), the "
                                       f"network has widths {net.vector_widths}")
        if azimuth_sign not in (1, -1, 1.0, -1.0):
            raise InvalidInput("azimuth_sign", f"must be +1 or -1, got {azimuth_sign}")
        super().__init__(net, encoder, latent_shape=latent_shape, seq_len=seq_len, max_frames=max_frames,
                         guidance=guidance, cond_aug=cond_aug, max_batch=max_batch)
        self.azimuth_sign = float(azimuth_sign)

    def cameras(self, cond: Cond, T: int, field: str) -> tuple[Tensor, Tensor, Tensor]:
        if cond.azimuth is None or cond.elevation is None:
            raise InvalidInput(f"{field}.azimuth", "SV3D_p needs per-view elevation and azimuth (radians)")
        if torch.as_tensor(cond.azimuth).numel() != T:
            raise InvalidInput(f"{field}.azimuth", f"need one azimuth per view ({T}), got "
                                                   f"{torch.as_tensor(cond.azimuth).numel()}")
        return sv3d_cameras(cond.elevation, cond.azimuth, self.azimuth_sign, field)

    def frame_order(self, cond: Cond, T: int, field: str) -> Tensor | None:
        order = self.cameras(cond, T, field)[0]
        return None if bool((order == torch.arange(T)).all()) else order

    def frame_vector(self, cond: Cond, T: int, order: Tensor | None) -> Tensor:
        _, polar, az = self.cameras(cond, T, "cond")
        cond_aug = float((cond.extra or {}).get("cond_aug", self.cond_aug))
        return torch.stack([torch.full((T,), cond_aug), polar, az], dim=1)


def load_sv3d_unet(path: str, *, sgm_params: Mapping[str, Any] = SV3D_P_PARAMS, dtype: torch.dtype = torch.float32,
                   device: str = "cpu") -> SV3DNet:
    """SV3D_p's network from Stability's single file (``sv3d_p.safetensors``)."""
    from safetensors.torch import load_file

    try:
        state_dict = load_file(path, device="cpu")
    except Exception as exc:  # unreadable or not safetensors
        raise InvalidInput("checkpoints", f"cannot read {path} as safetensors: {exc}") from exc
    return unet_from_sgm(state_dict, sgm_params, dtype=dtype, device=device)
