"""The sequence UNet behind both built-in denoisers.

A light image-to-sequence UNet in the spirit of SVD's ``UNetSpatioTemporalConditionModel`` but much
cheaper per image on a CPU: 2-D residual convolutions run on every frame (batch B*T), attention mixes
the frames — per pixel along T at fine levels (SVD's temporal layers) and over all T*h*w tokens of a
sequence at the coarse levels, where content has to travel between frames or views (a rotating
object moves across the image). Every residual block is modulated by a per-frame embedding
(noise level + conditioning image + frame index or camera), as SVD adds its time/"added-time" and
SV3D its camera embeddings.

Shapes: x [B, T, C_in, h, w], emb [B, T, D] -> out [B, T, C_out, h, w].
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
import torch.nn.functional as F

from backend.models.builtin.config import UNetConfig


def _gn(ch: int, groups: int) -> nn.GroupNorm:
    g = math.gcd(ch, groups)
    return nn.GroupNorm(g, ch)


def _zero(module: nn.Module) -> nn.Module:
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


class ResBlock(nn.Module):
    """Residual block on frames [N, C, h, w] modulated by emb [N, D] (scale and shift after the second norm)."""

    def __init__(self, cin: int, cout: int, emb_dim: int, groups: int, dropout: float = 0.0):
        super().__init__()
        self.n1, self.c1 = _gn(cin, groups), nn.Conv2d(cin, cout, 3, padding=1)
        self.emb = nn.Linear(emb_dim, 2 * cout)
        self.n2 = _gn(cout, groups)
        self.drop = nn.Dropout(dropout)
        self.c2 = _zero(nn.Conv2d(cout, cout, 3, padding=1))
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        h = self.c1(F.silu(self.n1(x)))
        scale, shift = self.emb(emb)[:, :, None, None].chunk(2, dim=1)
        h = self.n2(h) * (1.0 + scale) + shift
        h = self.c2(self.drop(F.silu(h)))
        return self.skip(x) + h


class _Attention(nn.Module):
    """Multi-head self-attention on tokens [N, L, C] with a zero-initialised output (starts as identity)."""

    def __init__(self, ch: int, heads: int):
        super().__init__()
        self.heads = heads
        self.norm = nn.LayerNorm(ch)
        self.qkv = nn.Linear(ch, 3 * ch)
        self.out = _zero(nn.Linear(ch, ch))

    def forward(self, tokens: Tensor) -> Tensor:
        n, length, ch = tokens.shape
        q, k, v = self.qkv(self.norm(tokens)).view(n, length, 3, self.heads, ch // self.heads).permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(q, k, v)
        return tokens + self.out(a.transpose(1, 2).reshape(n, length, ch))


class TemporalAttention(nn.Module):
    """Attention along T for every pixel separately: frames [B*T, C, h, w] -> same."""

    def __init__(self, ch: int, heads: int, emb_dim: int, max_len: int = 16):
        super().__init__()
        self.attn = _Attention(ch, heads)
        self.frame = nn.Linear(emb_dim, ch)  # tells each token which frame/view it is

    def forward(self, x: Tensor, emb: Tensor, T: int) -> Tensor:
        N, C, h, w = x.shape
        B = N // T
        tok = x.view(B, T, C, h * w).permute(0, 3, 1, 2).reshape(B * h * w, T, C)
        fr = self.frame(emb).view(B, 1, T, C).expand(B, h * w, T, C).reshape(B * h * w, T, C)
        out = self.attn(tok + fr) - fr
        return out.view(B, h * w, T, C).permute(0, 2, 3, 1).reshape(N, C, h, w)


class FullAttention(nn.Module):
    """Attention over all T*h*w tokens of each sequence: frames [B*T, C, h, w] -> same."""

    def __init__(self, ch: int, heads: int, emb_dim: int, size: int):
        super().__init__()
        self.attn = _Attention(ch, heads)
        self.frame = nn.Linear(emb_dim, ch)
        self.pos = nn.Parameter(torch.zeros(size * size, ch))
        nn.init.normal_(self.pos, std=0.02)

    def forward(self, x: Tensor, emb: Tensor, T: int) -> Tensor:
        N, C, h, w = x.shape
        B = N // T
        if self.pos.shape[0] != h * w:
            raise ValueError(f"FullAttention built for {int(math.isqrt(self.pos.shape[0]))}^2 tokens per frame, got {h}x{w}")
        add = self.pos[None, :, :] + self.frame(emb)[:, None, :]  # [N, h*w, C]
        tok = x.view(N, C, h * w).transpose(1, 2) + add
        out = self.attn(tok.reshape(B, T * h * w, C)).view(N, h * w, C) - add
        return out.transpose(1, 2).reshape(N, C, h, w)


class SequenceUNet(nn.Module):
    """x [B, T, C_in, h, w], emb [B, T, D] -> [B, T, C_out, h, w]; h = w = latent side (16 by default)."""

    def __init__(self, cfg: UNetConfig, latent_size: int = 16):
        super().__init__()
        self.cfg = cfg
        ch, D, g = cfg.channels, cfg.emb_dim, cfg.groups
        self.conv_in = nn.Conv2d(cfg.in_channels, ch[0], 3, padding=1)

        def attn(level: int, c: int) -> nn.Module | None:
            size = latent_size >> level
            if level in cfg.full_attention:
                return FullAttention(c, cfg.heads, D, size)
            if level in cfg.temporal_attention:
                return TemporalAttention(c, cfg.heads, D)
            return None

        self.down = nn.ModuleList()
        skips = [ch[0]]
        cur = ch[0]
        for level, c in enumerate(ch):
            for _ in range(cfg.blocks):
                self.down.append(nn.ModuleList([ResBlock(cur, c, D, g, cfg.dropout), attn(level, c) or nn.Identity()]))
                cur = c
                skips.append(cur)
            if level < len(ch) - 1:
                self.down.append(nn.ModuleList([nn.Conv2d(cur, cur, 3, stride=2, padding=1)]))
                skips.append(cur)
        low = len(ch) - 1
        self.mid1 = ResBlock(cur, cur, D, g, cfg.dropout)
        self.mid_attn = FullAttention(cur, cfg.heads, D, latent_size >> low)
        self.mid2 = ResBlock(cur, cur, D, g, cfg.dropout)
        self.up = nn.ModuleList()
        for level in reversed(range(len(ch))):
            c = ch[level]
            for i in range(cfg.blocks + 1):
                self.up.append(nn.ModuleList([ResBlock(cur + skips.pop(), c, D, g, cfg.dropout),
                                              attn(level, c) or nn.Identity()]))
                cur = c
            if level > 0:
                self.up.append(nn.ModuleList([nn.Upsample(scale_factor=2, mode="nearest"),
                                              nn.Conv2d(cur, cur, 3, padding=1)]))
        self.norm_out = _gn(cur, g)
        self.conv_out = _zero(nn.Conv2d(cur, cfg.latent_channels, 3, padding=1))

    @staticmethod
    def _run_block(block: nn.ModuleList, h: Tensor, emb: Tensor, T: int) -> Tensor:
        if isinstance(block[0], ResBlock):
            h = block[0](h, emb)
            if not isinstance(block[1], nn.Identity):
                h = block[1](h, emb, T)
            return h
        for layer in block:
            h = layer(h)
        return h

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        B, T = x.shape[:2]
        e = emb.reshape(B * T, -1)
        h = self.conv_in(x.reshape(B * T, *x.shape[2:]))
        skips = [h]
        for block in self.down:
            h = self._run_block(block, h, e, T)
            skips.append(h)
        h = self.mid2(self.mid_attn(self.mid1(h, e), e, T), e)
        for block in self.up:
            if isinstance(block[0], ResBlock):
                h = torch.cat([h, skips.pop()], dim=1)
            h = self._run_block(block, h, e, T)
        out = self.conv_out(F.silu(self.norm_out(h)))
        return out.view(B, T, *out.shape[1:])
