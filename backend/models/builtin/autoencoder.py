"""The built-in autoencoder: 64x64x3 images <-> 16x16x4 latents, the latent space both models share.

``AutoencoderNet`` is the trainable network; ``BuiltinAutoencoder`` wraps it behind the
``backend.models.base.Autoencoder`` protocol (batched, no grad, latents scaled to unit variance).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
import torch.nn.functional as F

from backend.errors import InvalidInput
from backend.models.builtin.config import AutoencoderConfig


def _norm(ch: int) -> nn.GroupNorm:
    return nn.GroupNorm(min(16, ch // 4) if ch >= 8 else 1, ch)


class ResBlock2d(nn.Module):
    """GroupNorm-SiLU-conv residual block (no time embedding)."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.n1, self.c1 = _norm(cin), nn.Conv2d(cin, cout, 3, padding=1)
        self.n2, self.c2 = _norm(cout), nn.Conv2d(cout, cout, 3, padding=1)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        h = self.c1(F.silu(self.n1(x)))
        h = self.c2(F.silu(self.n2(h)))
        return self.skip(x) + h


class AutoencoderNet(nn.Module):
    """encode: [B, 3, S, S] in [-1, 1] -> raw latents [B, C, S/4, S/4]; decode: raw latents -> images.

    Deterministic (no KL sampling): training adds a little noise to the latents before decoding and
    penalises their magnitude, which keeps the latent space smooth enough to diffuse in.
    """

    def __init__(self, cfg: AutoencoderConfig):
        super().__init__()
        if len(cfg.channels) != 3:
            raise ValueError("AutoencoderConfig.channels needs 3 entries (1x, 1/2x, 1/4x)")
        c0, c1, c2 = cfg.channels
        self.cfg = cfg
        enc: list[nn.Module] = [nn.Conv2d(3, c0, 3, padding=1)]
        enc += [ResBlock2d(c0, c0) for _ in range(cfg.encoder_blocks)]
        enc += [nn.Conv2d(c0, c1, 3, stride=2, padding=1)]
        enc += [ResBlock2d(c1, c1) for _ in range(cfg.encoder_blocks)]
        enc += [nn.Conv2d(c1, c2, 3, stride=2, padding=1)]
        enc += [ResBlock2d(c2, c2) for _ in range(cfg.encoder_blocks + 1)]
        enc += [_norm(c2), nn.SiLU(), nn.Conv2d(c2, cfg.latent_channels, 3, padding=1)]
        self.encoder = nn.Sequential(*enc)
        dec: list[nn.Module] = [nn.Conv2d(cfg.latent_channels, c2, 3, padding=1)]
        dec += [ResBlock2d(c2, c2) for _ in range(cfg.blocks)]
        dec += [nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(c2, c1, 3, padding=1)]
        dec += [ResBlock2d(c1, c1) for _ in range(cfg.blocks)]
        dec += [nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(c1, c0, 3, padding=1)]
        dec += [ResBlock2d(c0, c0) for _ in range(cfg.blocks)]
        dec += [_norm(c0), nn.SiLU(), nn.Conv2d(c0, 3, 3, padding=1)]
        self.decoder = nn.Sequential(*dec)

    def encode(self, images: Tensor) -> Tensor:
        return self.encoder(images)

    def decode(self, latents: Tensor) -> Tensor:
        return self.decoder(latents)


class BuiltinAutoencoder:
    """``Autoencoder`` protocol over ``AutoencoderNet``: images [B, 3, 64, 64] in [-1, 1] <-> latents
    [B, 4, 16, 16] with roughly unit variance (``(raw - shift) * scale``)."""

    def __init__(self, net: AutoencoderNet, latent_space: str, device: str = "cpu", max_batch: int = 64):
        self.net = net.to(device).eval()
        self.cfg = net.cfg
        self.device = device
        self.latent_space = latent_space
        s = self.cfg.image_size
        self.image_size = (s, s)
        self.latent_shape = (self.cfg.latent_channels, s // 4, s // 4)
        self.max_batch = max_batch

    def _check(self, field: str, x: Tensor, shape: tuple[int, ...], what: str) -> None:
        if not torch.is_tensor(x) or x.dim() != 4 or tuple(x.shape[1:]) != shape:
            got = tuple(x.shape) if torch.is_tensor(x) else type(x).__name__
            raise InvalidInput(field, f"built-in autoencoder expects {what} [B, {', '.join(map(str, shape))}], got {got}")
        if not x.is_floating_point() or not torch.isfinite(x).all():
            raise InvalidInput(field, "must be floating point with finite values")

    @torch.no_grad()
    def encode(self, images: Tensor) -> Tensor:
        """images [B, 3, 64, 64] in [-1, 1] -> latents [B, 4, 16, 16]."""
        self._check("images", images, (3, *self.image_size), f"images at {self.image_size[0]}x{self.image_size[1]}")
        outs = []
        for chunk in images.split(self.max_batch):
            raw = self.net.encode(chunk.to(self.device, torch.float32))
            outs.append((raw - self.cfg.shift) * self.cfg.scale)
        return torch.cat(outs).to(images.dtype)

    @torch.no_grad()
    def decode(self, latents: Tensor) -> Tensor:
        """latents [B, 4, 16, 16] -> images [B, 3, 64, 64] in [-1, 1] (clamped)."""
        self._check("latents", latents, self.latent_shape, "latents")
        outs = []
        for chunk in latents.split(self.max_batch):
            raw = chunk.to(self.device, torch.float32) / self.cfg.scale + self.cfg.shift
            outs.append(self.net.decode(raw).clamp(-1.0, 1.0))
        return torch.cat(outs).to(latents.dtype)
