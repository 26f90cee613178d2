"""Stability's VideoUNet computation on diffusers' ``UNetSpatioTemporalConditionModel`` weights.

SVD, SVD-XT and SV3D share one network architecture (generative-models' ``VideoUNet``). diffusers
ports it as ``UNetSpatioTemporalConditionModel``, but its forward embeds the vector conditioning
(``added_time_ids``) once per clip with a single sinusoid width. SV3D_p needs that vector per frame
and with mixed widths (noise augmentation 256 + polar 512 + azimuth 512 = 1280), so ``VideoUNet``
keeps diffusers' modules and weights and runs its own forward:

    emb[n] = time_embedding(sin(c_noise[n], C0)) + add_embedding(concat_i sin(vector[n, i], width_i))

for every frame n of every sequence, then the same down / mid / up blocks as diffusers. With one
vector per clip repeated over frames this is exactly diffusers' (and SVD's) forward.

Sinusoids follow generative-models' ``timestep_embedding``: [cos | sin], frequencies
exp(-ln(10000) * k / half) for k < half (diffusers: ``flip_sin_to_cos=True, downscale_freq_shift=0``).
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import Tensor, nn

SGM_RESNET_EPS = 1e-5  # generative-models' GroupNorm32 in every ResBlock (diffusers uses 1e-6 in some)


def sinusoidal_embedding(t: Tensor, dim: int, max_period: float = 10000.0) -> Tensor:
    """Stability's ``timestep_embedding``: t [N] (any real values) -> [N, dim] float32, [cos | sin]."""
    t = t.reshape(-1).float()
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1)
    return emb


def match_sgm_norm_eps(unet: nn.Module) -> None:
    """Set the GroupNorm eps of every spatio-temporal ResBlock to the original's 1e-5.

    diffusers builds the ResBlocks of its cross-attention down blocks with eps=1e-6; the original
    network (and the checkpoints trained with it) uses 1e-5 everywhere.
    """
    from diffusers.models.resnet import SpatioTemporalResBlock

    for module in unet.modules():
        if isinstance(module, SpatioTemporalResBlock):
            for block in (module.spatial_res_block, module.temporal_res_block):
                block.norm1.eps = SGM_RESNET_EPS
                block.norm2.eps = SGM_RESNET_EPS


class VideoUNet(nn.Module):
    """The video UNet with per-frame vector conditioning.

    unet: a diffusers ``UNetSpatioTemporalConditionModel`` (weights and blocks).
    vector_widths: sinusoid width of each scalar in the vector conditioning, in order; they must sum
        to ``unet.config.projection_class_embeddings_input_dim``. SVD: (256, 256, 256) for
        (fps_id, motion_bucket_id, cond_aug); SV3D_p: (256, 512, 512) for (cond_aug, polar, azimuth).
    """

    def __init__(self, unet: nn.Module, vector_widths: Sequence[int]):
        super().__init__()
        widths = tuple(int(w) for w in vector_widths)
        expected = int(unet.config.projection_class_embeddings_input_dim)
        if sum(widths) != expected:
            raise ValueError(f"vector widths {widths} sum to {sum(widths)}, but the network's vector input is "
                             f"{expected} wide")
        self.unet = unet
        self.vector_widths = widths
        match_sgm_norm_eps(unet)

    @property
    def dtype(self) -> torch.dtype:
        return self.unet.conv_in.weight.dtype

    @property
    def device(self) -> torch.device:
        return self.unet.conv_in.weight.device

    @property
    def in_channels(self) -> int:
        return int(self.unet.config.in_channels)

    @property
    def out_channels(self) -> int:
        return int(self.unet.config.out_channels)

    @property
    def context_dim(self) -> int:
        dim = self.unet.config.cross_attention_dim
        return int(dim if isinstance(dim, int) else dim[0])

    def embed(self, c_noise: Tensor, vector: Tensor) -> Tensor:
        """Per-frame embedding: c_noise [N], vector [N, len(vector_widths)] -> [N, 4 * C0] (network dtype)."""
        unet = self.unet
        c0 = unet.config.block_out_channels[0]
        emb = unet.time_embedding(sinusoidal_embedding(c_noise, c0).to(self.dtype))
        if vector.dim() != 2 or vector.shape[1] != len(self.vector_widths):
            raise ValueError(f"vector must be [N, {len(self.vector_widths)}], got {tuple(vector.shape)}")
        parts = [sinusoidal_embedding(vector[:, i], w) for i, w in enumerate(self.vector_widths)]
        return emb + unet.add_embedding(torch.cat(parts, dim=1).to(self.dtype))

    def forward(self, x: Tensor, c_noise: Tensor, context: Tensor, vector: Tensor, num_frames: int) -> Tensor:
        """See ``run``."""
        return self.run(x, c_noise, context, vector, num_frames)

    def run(self, x: Tensor, c_noise: Tensor, context: Tensor, vector: Tensor, num_frames: int) -> Tensor:
        """One network evaluation on B sequences of T = num_frames frames, flattened.

        x: [B*T, in_channels, h, w] (noisy latent times c_in, concatenated with the condition latent);
        c_noise: [B*T], [B] or a scalar; context: [B*T | B | 1, L, D] cross-attention tokens ([.., D]: one);
        vector: [B*T, k] or [B, k] (the scalars embedded per frame). Returns [B*T, out_channels, h, w].
        """
        N = x.shape[0]
        if num_frames < 1 or N % num_frames:
            raise ValueError(f"{N} frames cannot be split into sequences of {num_frames}")
        B = N // num_frames
        c_noise = per_frame(torch.as_tensor(c_noise, device=x.device).reshape(-1), B, num_frames, "c_noise")
        vector = per_frame(torch.as_tensor(vector, device=x.device), B, num_frames, "vector")
        if context.dim() == 2:  # one token per row: [n, D] -> [n, 1, D]
            context = context[:, None]
        context = per_frame(context, B, num_frames, "context").to(self.dtype)
        emb = self.embed(c_noise, vector)
        return self.blocks(x.to(self.dtype), emb, context, num_frames)

    def blocks(self, sample: Tensor, emb: Tensor, context: Tensor, num_frames: int) -> Tensor:
        """conv_in, down, mid, up, out with per-frame embeddings emb [N, 4*C0] and context [N, L, D]."""
        unet = self.unet
        N = sample.shape[0]
        B = N // num_frames
        image_only_indicator = torch.zeros(B, num_frames, dtype=sample.dtype, device=sample.device)
        up_factor = 2 ** unet.num_upsamplers
        forward_upsample_size = any(s % up_factor for s in sample.shape[-2:])
        upsample_size = None

        sample = unet.conv_in(sample)
        skips: tuple[Tensor, ...] = (sample,)
        for block in unet.down_blocks:
            if getattr(block, "has_cross_attention", False):
                sample, res = block(hidden_states=sample, temb=emb, encoder_hidden_states=context,
                                    image_only_indicator=image_only_indicator)
            else:
                sample, res = block(hidden_states=sample, temb=emb, image_only_indicator=image_only_indicator)
            skips += res
        sample = unet.mid_block(hidden_states=sample, temb=emb, encoder_hidden_states=context,
                                image_only_indicator=image_only_indicator)
        for i, block in enumerate(unet.up_blocks):
            res = skips[-len(block.resnets):]
            skips = skips[:-len(block.resnets)]
            if i < len(unet.up_blocks) - 1 and forward_upsample_size:
                upsample_size = skips[-1].shape[2:]
            if getattr(block, "has_cross_attention", False):
                sample = block(hidden_states=sample, temb=emb, res_hidden_states_tuple=res,
                               encoder_hidden_states=context, upsample_size=upsample_size,
                               image_only_indicator=image_only_indicator)
            else:
                sample = block(hidden_states=sample, temb=emb, res_hidden_states_tuple=res,
                               upsample_size=upsample_size, image_only_indicator=image_only_indicator)
        sample = unet.conv_out(unet.conv_act(unet.conv_norm_out(sample)))
        return sample


def per_frame(t: Tensor, B: int, T: int, name: str) -> Tensor:
    """Broadcast a per-sequence (or single) tensor to one row per frame: [1|B|B*T, ...] -> [B*T, ...]."""
    n = t.shape[0] if t.dim() else 1
    if t.dim() == 0:
        t = t.reshape(1)
    if n == B * T:
        return t
    if n == B:
        return t.repeat_interleave(T, dim=0)
    if n == 1:
        return t.expand(B * T, *t.shape[1:])
    raise ValueError(f"{name} has {n} rows; expected 1, {B} (one per sequence) or {B * T} (one per frame)")
