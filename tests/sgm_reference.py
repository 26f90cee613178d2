"""An independent transcription of generative-models' ``VideoUNet`` (the original SVD / SV3D network),
for parity tests of ``backend.models.sv3d.unet_from_sgm``.

Written from the original's structure (``sgm/modules/diffusionmodules/video_model.py``,
``openaimodel.py``, ``video_attention.py``, ``attention.py``, ``util.py``, ``encoders/modules.py``):
module and parameter names reproduce the original state-dict layout exactly, and the forward does
the original's computation in plain torch (explicit softmax attention, GroupNorm in float32,
[cos | sin] sinusoids), sharing no code with the diffusers-based implementation under test.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32) / half)
    args = t[:, None].float() * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1)
    return emb


class GroupNorm32(nn.GroupNorm):
    def forward(self, x):
        return super().forward(x.float()).type(x.dtype)


def gn(ch: int) -> nn.GroupNorm:
    return GroupNorm32(32, ch)


class Mixer(nn.Module):
    """AlphaBlender, merge_strategy learned_with_images, image_only_indicator all zero."""

    def __init__(self):
        super().__init__()
        self.mix_factor = nn.Parameter(torch.tensor([0.5]))

    def forward(self, spatial, temporal, view_shape):
        alpha = torch.sigmoid(self.mix_factor).view(view_shape)
        return alpha * spatial + (1.0 - alpha) * temporal


class ResBlock(nn.Module):
    def __init__(self, ch, emb_ch, out_ch=None, dims=2, kernel=3):
        super().__init__()
        out_ch = out_ch or ch
        conv = nn.Conv2d if dims == 2 else nn.Conv3d
        pad = kernel // 2 if isinstance(kernel, int) else [k // 2 for k in kernel]
        self.in_layers = nn.Sequential(gn(ch), nn.SiLU(), conv(ch, out_ch, kernel, padding=pad))
        self.emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(emb_ch, out_ch))
        self.out_layers = nn.Sequential(gn(out_ch), nn.SiLU(), nn.Dropout(0.0),
                                        conv(out_ch, out_ch, kernel, padding=pad))
        self.skip_connection = nn.Identity() if out_ch == ch else conv(ch, out_ch, 1)
        self.dims = dims

    def forward(self, x, emb):
        h = self.in_layers(x)
        e = self.emb_layers(emb).type(h.dtype)
        if self.dims == 3:  # emb [b, t, c] -> [b, c, t, 1, 1] (exchange_temb_dims)
            e = e.permute(0, 2, 1)[..., None, None]
        else:
            e = e[..., None, None]
        h = self.out_layers(h + e)
        return self.skip_connection(x) + h


class VideoResBlock(ResBlock):
    def __init__(self, ch, emb_ch, out_ch=None):
        super().__init__(ch, emb_ch, out_ch)
        oc = out_ch or ch
        self.time_stack = ResBlock(oc, emb_ch, oc, dims=3, kernel=(3, 1, 1))
        self.time_mixer = Mixer()

    def forward(self, x, emb, T):
        x = super().forward(x, emb)
        N, C, H, W = x.shape
        v = x.reshape(N // T, T, C, H, W).permute(0, 2, 1, 3, 4)  # b c t h w
        t = self.time_stack(v, emb.reshape(N // T, T, -1))
        out = self.time_mixer(v, t, (1, 1, 1, 1, 1))
        return out.permute(0, 2, 1, 3, 4).reshape(N, C, H, W)


class CrossAttention(nn.Module):
    def __init__(self, query_dim, heads, dim_head, context_dim=None):
        super().__init__()
        inner = heads * dim_head
        context_dim = context_dim or query_dim
        self.heads = heads
        self.to_q = nn.Linear(query_dim, inner, bias=False)
        self.to_k = nn.Linear(context_dim, inner, bias=False)
        self.to_v = nn.Linear(context_dim, inner, bias=False)
        self.to_out = nn.Sequential(nn.Linear(inner, query_dim), nn.Dropout(0.0))

    def forward(self, x, context=None):
        context = x if context is None else context
        q, k, v = self.to_q(x), self.to_k(context), self.to_v(context)
        b, n, _ = q.shape
        h = self.heads

        def split(t):
            return t.reshape(t.shape[0], t.shape[1], h, -1).permute(0, 2, 1, 3)

        q, k, v = split(q), split(k), split(v)
        attn = (q @ k.transpose(-1, -2)) * q.shape[-1] ** -0.5
        out = attn.softmax(dim=-1) @ v
        return self.to_out(out.permute(0, 2, 1, 3).reshape(b, n, -1))


class GEGLU(nn.Module):
    def __init__(self, dim_in, dim_out):
        super().__init__()
        self.proj = nn.Linear(dim_in, dim_out * 2)

    def forward(self, x):
        x, gate = self.proj(x).chunk(2, dim=-1)
        return x * F.gelu(gate)


class FeedForward(nn.Module):
    def __init__(self, dim, dim_out=None, mult=4):
        super().__init__()
        inner = int(dim * mult)
        self.net = nn.Sequential(GEGLU(dim, inner), nn.Dropout(0.0), nn.Linear(inner, dim_out or dim))

    def forward(self, x):
        return self.net(x)


class BasicTransformerBlock(nn.Module):
    def __init__(self, dim, heads, d_head, context_dim):
        super().__init__()
        self.attn1 = CrossAttention(dim, heads, d_head)
        self.ff = FeedForward(dim)
        self.attn2 = CrossAttention(dim, heads, d_head, context_dim)
        self.norm1, self.norm2, self.norm3 = nn.LayerNorm(dim), nn.LayerNorm(dim), nn.LayerNorm(dim)

    def forward(self, x, context):
        x = self.attn1(self.norm1(x)) + x
        x = self.attn2(self.norm2(x), context) + x
        return self.ff(self.norm3(x)) + x


class VideoTransformerBlock(nn.Module):
    def __init__(self, dim, heads, d_head, context_dim):
        super().__init__()
        self.norm_in = nn.LayerNorm(dim)
        self.ff_in = FeedForward(dim, dim_out=dim)
        self.attn1 = CrossAttention(dim, heads, d_head)
        self.ff = FeedForward(dim, dim_out=dim)
        self.norm2 = nn.LayerNorm(dim)
        self.attn2 = CrossAttention(dim, heads, d_head, context_dim)
        self.norm1, self.norm3 = nn.LayerNorm(dim), nn.LayerNorm(dim)

    def forward(self, x, context, T):
        BT, S, C = x.shape
        B = BT // T
        x = x.reshape(B, T, S, C).permute(0, 2, 1, 3).reshape(B * S, T, C)
        x = self.ff_in(self.norm_in(x)) + x
        x = self.attn1(self.norm1(x)) + x
        x = self.attn2(self.norm2(x), context) + x
        x = self.ff(self.norm3(x)) + x
        return x.reshape(B, S, T, C).permute(0, 2, 1, 3).reshape(BT, S, C)


class SpatialVideoTransformer(nn.Module):
    def __init__(self, ch, heads, d_head, depth, context_dim):
        super().__init__()
        inner = heads * d_head
        self.norm = nn.GroupNorm(32, ch, eps=1e-6)
        self.proj_in = nn.Linear(ch, inner)
        self.transformer_blocks = nn.ModuleList(
            [BasicTransformerBlock(inner, heads, d_head, context_dim) for _ in range(depth)])
        self.proj_out = nn.Linear(inner, ch)
        self.time_stack = nn.ModuleList([VideoTransformerBlock(inner, heads, d_head, context_dim)
                                         for _ in range(depth)])
        self.time_pos_embed = nn.Sequential(nn.Linear(ch, ch * 4), nn.SiLU(), nn.Linear(ch * 4, ch))
        self.time_mixer = Mixer()
        self.ch = ch

    def forward(self, x, context, T):
        N, C, H, W = x.shape
        x_in = x
        time_context = context[::T].repeat_interleave(H * W, dim=0)  # first frame's context, per pixel
        x = self.proj_in(self.norm(x).permute(0, 2, 3, 1).reshape(N, H * W, C))
        frames = torch.arange(T).repeat(N // T)
        emb = self.time_pos_embed(timestep_embedding(frames, self.ch))[:, None, :]
        for block, mix in zip(self.transformer_blocks, self.time_stack):
            x = block(x, context)
            x_mix = mix(x + emb, time_context, T)
            x = self.time_mixer(x, x_mix, (1, 1, 1))
        x = self.proj_out(x).reshape(N, H, W, C).permute(0, 3, 1, 2)
        return x + x_in


class Downsample(nn.Module):
    def __init__(self, ch):
        super().__init__()
        self.op = nn.Conv2d(ch, ch, 3, stride=2, padding=1)

    def forward(self, x):
        return self.op(x)


class Upsample(nn.Module):
    def __init__(self, ch):
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, padding=1)

    def forward(self, x):
        return self.conv(F.interpolate(x, scale_factor=2, mode="nearest"))


class Step(nn.ModuleList):
    """TimestepEmbedSequential: passes emb / context / frames to the layers that take them."""

    def forward(self, h, emb, context, T):
        for layer in self:
            if isinstance(layer, VideoResBlock):
                h = layer(h, emb, T)
            elif isinstance(layer, SpatialVideoTransformer):
                h = layer(h, context, T)
            else:
                h = layer(h)
        return h


class RefVideoUNet(nn.Module):
    """The original VideoUNet for a ``network_config.params`` dict (SVD/SV3D family)."""

    def __init__(self, p: dict):
        super().__init__()
        mc, mult, R = p["model_channels"], list(p["channel_mult"]), p["num_res_blocks"]
        depth = p.get("transformer_depth", 1)
        depth = [depth] * len(mult) if isinstance(depth, int) else list(depth)
        ctx = p["context_dim"]
        ted = mc * 4
        self.model_channels = mc
        self.time_embed = nn.Sequential(nn.Linear(mc, ted), nn.SiLU(), nn.Linear(ted, ted))
        self.label_emb = nn.Sequential(nn.Sequential(nn.Linear(p["adm_in_channels"], ted), nn.SiLU(),
                                                     nn.Linear(ted, ted)))

        def heads_for(ch):
            return ch // p["num_head_channels"], p["num_head_channels"]

        self.input_blocks = nn.ModuleList([Step([nn.Conv2d(p["in_channels"], mc, 3, padding=1)])])
        chans, ch, ds = [mc], mc, 1
        for level, m in enumerate(mult):
            for _ in range(R):
                layers = [VideoResBlock(ch, ted, m * mc)]
                ch = m * mc
                if ds in p["attention_resolutions"]:
                    layers.append(SpatialVideoTransformer(ch, *heads_for(ch), depth[level], ctx))
                self.input_blocks.append(Step(layers))
                chans.append(ch)
            if level != len(mult) - 1:
                ds *= 2
                self.input_blocks.append(Step([Downsample(ch)]))
                chans.append(ch)
        self.middle_block = Step([VideoResBlock(ch, ted), SpatialVideoTransformer(ch, *heads_for(ch), depth[-1], ctx),
                                  VideoResBlock(ch, ted)])
        self.output_blocks = nn.ModuleList()
        for level, m in list(enumerate(mult))[::-1]:
            for i in range(R + 1):
                layers = [VideoResBlock(ch + chans.pop(), ted, mc * m)]
                ch = mc * m
                if ds in p["attention_resolutions"]:
                    layers.append(SpatialVideoTransformer(ch, *heads_for(ch), depth[level], ctx))
                if level and i == R:
                    ds //= 2
                    layers.append(Upsample(ch))
                self.output_blocks.append(Step(layers))
        self.out = nn.Sequential(gn(ch), nn.SiLU(), nn.Conv2d(mc, p["out_channels"], 3, padding=1))

    def forward(self, x, timesteps, context, y, num_video_frames):
        T = num_video_frames
        emb = self.time_embed(timestep_embedding(timesteps, self.model_channels)) + self.label_emb(y)
        hs, h = [], x
        for module in self.input_blocks:
            h = module(h, emb, context, T)
            hs.append(h)
        h = self.middle_block(h, emb, context, T)
        for module in self.output_blocks:
            h = module(torch.cat([h, hs.pop()], dim=1), emb, context, T)
        return self.out(h.type(x.dtype))


def sv3d_vector(cond_aug: torch.Tensor, polar: torch.Tensor, azimuth: torch.Tensor) -> torch.Tensor:
    """The conditioner's vector for SV3D_p: ConcatTimestepEmbedderND outputs (256, 512, 512), concatenated."""
    return torch.cat([timestep_embedding(cond_aug, 256), timestep_embedding(polar, 512),
                      timestep_embedding(azimuth, 512)], dim=1)


def randomize_(module: nn.Module, generator: torch.Generator, scale: float = 1.0) -> None:
    """Give every parameter random values (the original zero-initialises several layers)."""
    with torch.no_grad():
        for name, p in module.named_parameters():
            if name.endswith("mix_factor"):
                p.copy_(torch.randn(p.shape, generator=generator))
            elif p.dim() == 1 and ("norm" in name or "in_layers.0" in name or "out_layers.0" in name
                                   or name.startswith("out.0")):
                base = 1.0 if name.endswith("weight") else 0.0
                p.copy_(base + 0.1 * torch.randn(p.shape, generator=generator))
            else:
                fan_in = p[0].numel() if p.dim() > 1 else p.numel()
                p.copy_(scale * torch.randn(p.shape, generator=generator) / math.sqrt(max(fan_in, 1)))


TINY_SV3D_PARAMS = dict(
    adm_in_channels=1280, num_classes="sequential", use_checkpoint=False, in_channels=8, out_channels=4,
    model_channels=32, attention_resolutions=[2, 1], num_res_blocks=1, channel_mult=[1, 2, 2],
    num_head_channels=16, use_linear_in_transformer=True, transformer_depth=1, context_dim=24,
    spatial_transformer_attn_type="softmax", extra_ff_mix_layer=True, use_spatial_context=True,
    merge_strategy="learned_with_images", video_kernel_size=[3, 1, 1],
)
