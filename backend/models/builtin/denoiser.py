"""The built-in video and multi-view denoisers behind the ``SequenceDenoiser`` interface.

``DenoiserNet`` (trainable): the sequence UNet plus the conditioning SVD/SV3D use, scaled down:
  * the conditioning latent [C, h, w] concatenated to every frame's noisy input (SVD's concat cond);
  * a small learned image embedding of that latent in place of CLIP, added to the noise embedding;
  * multi-view with ``cfg.lift``: the front view lifted into a volume and rendered into every output
    view's camera (``lift.OrbitLift``), concatenated as extra input channels (the 3-D prior);
  * per frame: a frame-index embedding (video; index ``seq_len`` = "a single image at an unknown
    time", used by joint image training and the one-image marginal) or a camera embedding of
    (elevation, azimuth relative to the conditioning view) per output view (multi-view, like SV3D_p).

``BuiltinDenoiser`` wraps a net with EDM preconditioning (``EDMScaling``), input checks that refuse
wrong frame/view counts, resolutions or cameras before any network call, and optional
classifier-free guidance.
"""

from __future__ import annotations

import hashlib
import math
from collections import OrderedDict
from typing import Sequence

import torch
from torch import Tensor, nn
import torch.nn.functional as F

from backend.errors import InvalidInput
from backend.models.base import Cond, EDMScaling
from backend.models.builtin.config import DenoiserConfig
from backend.models.builtin.lift import OrbitLift
from backend.models.builtin.unet import SequenceUNet

KINDS = ("video", "multiview")


def fourier_features(x: Tensor, dim: int, max_period: float = 100.0) -> Tensor:
    """x [N] -> [N, dim] sin/cos features at log-spaced frequencies (x ~ 0.25 log sigma, in [-2, 2])."""
    half = dim // 2
    freqs = torch.exp(torch.linspace(0.0, math.log(max_period), half, device=x.device)) * 2.0
    ang = x.float()[:, None] * freqs[None]
    return torch.cat([ang.sin(), ang.cos()], dim=1)


def camera_features(elevation: Tensor, azimuth: Tensor) -> Tensor:
    """Per-view camera features [..., 8] from elevation and relative azimuth (radians)."""
    az, el = azimuth.float(), elevation.float()
    feats = [torch.sin(k * az) for k in (1, 2, 3)] + [torch.cos(k * az) for k in (1, 2, 3)]
    feats += [torch.sin(el), torch.cos(el)]
    return torch.stack(feats, dim=-1)


class DenoiserNet(nn.Module):
    """F(c_in * x, c_noise, conditions) of EDM: the raw network output, [B, T, C, h, w]."""

    def __init__(self, cfg: DenoiserConfig):
        super().__init__()
        if cfg.kind not in KINDS:
            raise ValueError(f"DenoiserConfig.kind must be one of {KINDS}, got {cfg.kind!r}")
        self.cfg = cfg
        D = cfg.unet.emb_dim
        latent_size = cfg.image_size // 4
        C = cfg.unet.latent_channels
        self.noise_mlp = nn.Sequential(nn.Linear(128, D), nn.SiLU(), nn.Linear(D, D))
        self.image_enc = nn.Sequential(  # the learned stand-in for CLIP: latent [C, 16, 16] -> [D]
            nn.Conv2d(C, 64, 3, padding=1), nn.SiLU(),
            nn.Conv2d(64, 128, 3, stride=2, padding=1), nn.SiLU(),
            nn.Conv2d(128, D, 3, stride=2, padding=1), nn.SiLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(D, D),
        )
        if cfg.kind == "video":
            self.frame_emb = nn.Embedding(cfg.seq_len + 1, D)  # index seq_len = single image
        else:
            self.camera_mlp = nn.Sequential(nn.Linear(8, D), nn.SiLU(), nn.Linear(D, D))
        self.lift = None
        if cfg.lift is not None:
            if cfg.kind != "multiview":
                raise ValueError("DenoiserConfig.lift is for the multi-view model only")
            if cfg.unet.cond_channels != cfg.lift.channels:
                raise ValueError(f"unet.cond_channels must be lift.out + 1 = {cfg.lift.channels}, got {cfg.unet.cond_channels}")
            self.lift = OrbitLift(cfg.lift, C, latent_size, cfg.image_size)
        elif cfg.unet.cond_channels:
            raise ValueError("unet.cond_channels without a lift: nothing would fill those input channels")
        self.unet = SequenceUNet(cfg.unet, latent_size)

    def forward(self, x_in: Tensor, c_noise: Tensor, cond_latent: Tensor, keep: Tensor,
                frame_index: Tensor | None = None, elevation: Tensor | None = None,
                azimuth: Tensor | None = None, renders: Tensor | None = None) -> Tensor:
        """x_in [B, T, C, h, w] (already scaled by c_in), c_noise [B], cond_latent [B, C, h, w],
        keep [B] (1 = conditioned, 0 = condition dropped), frame_index [B, T] long (video) or
        elevation/azimuth [B, T] radians (multi-view). ``renders`` [B, T, lift.channels, h, w]: the
        lift's renders when the caller already has them (training reuses them for its auxiliary loss);
        computed here otherwise. Returns [B, T, C, h, w]."""
        B, T = x_in.shape[:2]
        keep = keep.to(x_in.dtype)
        cond = cond_latent * keep.view(B, 1, 1, 1)
        emb = self.noise_mlp(fourier_features(c_noise, 128)) + self.image_enc(cond) * keep[:, None]
        if self.cfg.kind == "video":
            per_frame = self.frame_emb(frame_index)
        else:
            per_frame = self.camera_mlp(camera_features(elevation, azimuth))
        emb = F.silu(emb[:, None, :] + per_frame)  # [B, T, D]
        parts = [x_in, cond[:, None].expand(B, T, *cond.shape[1:])]
        if self.lift is not None:
            if renders is None:  # rendered for the conditioned rows only (guidance's other half gets zeros)
                rows = keep.nonzero().squeeze(1)
                renders = x_in.new_zeros(B, T, self.cfg.lift.channels, *x_in.shape[-2:])
                if rows.numel():
                    renders = renders.index_copy(0, rows, self.lift(cond_latent[rows], elevation[rows], azimuth[rows]))
            parts.append(renders * keep.view(B, 1, 1, 1, 1))
        return self.unet(torch.cat(parts, dim=2), emb)


def _res_text(n: int) -> str:
    return f"{n}\u00d7{n}"


class BuiltinDenoiser:
    """A ``SequenceDenoiser`` over a ``DenoiserNet``.

    seq_len: 8 for the video (frames) and multi-view (views) models, 1 for the video model's
    one-image marginal (``single=True``). ``guidance`` is the classifier-free guidance scale.
    """

    PRIOR_CACHE = 16  # batches of conditions whose 3-D prior renders are kept

    def __init__(self, net: DenoiserNet, latent_space: str, *, single: bool = False, guidance: float | None = None,
                 device: str = "cpu", name: str | None = None):
        cfg = net.cfg
        if single and cfg.kind != "video":
            raise ValueError("only the video model provides the one-image marginal")
        self.net = net.to(device).eval()
        self.cfg = cfg
        self.kind = cfg.kind
        self.single = single
        self.device = device
        self.seq_len = 1 if single else cfg.seq_len
        s = cfg.image_size
        self.image_size = s
        self.latent_shape = (cfg.unet.latent_channels, s // 4, s // 4)
        self.latent_space = latent_space
        self.guidance = float(cfg.guidance if guidance is None else guidance)
        if not math.isfinite(self.guidance) or self.guidance < 0:
            raise InvalidInput("guidance", f"must be a finite number >= 0, got {guidance}")
        self.scaling = EDMScaling(cfg.scaling, cfg.sigma_data)
        self.name = name or {"video": "built-in one-image model" if single else "built-in video model",
                             "multiview": "built-in multi-view model"}[cfg.kind]
        self.unit = "views" if cfg.kind == "multiview" else "frames"
        self.calls = 0
        self.prior_renders = 0  # lift evaluations (cache misses), multi-view with the 3-D prior only
        self._prior_cache: OrderedDict[str, Tensor] = OrderedDict()

    # ----------------------------------------------------------------- checks
    def _expect(self) -> str:
        unit = self.unit if self.seq_len != 1 else self.unit[:-1]
        return f"{self.name} expects {self.seq_len} {unit} at {_res_text(self.image_size)}"

    def _resolution_of(self, conds: Sequence[Cond]) -> int | None:
        for c in conds:
            if c is not None and torch.is_tensor(c.image) and c.image.dim() == 3 and tuple(c.image.shape[1:]) != (self.image_size,) * 2:
                return int(c.image.shape[-1])
            if c is not None and torch.is_tensor(c.latent) and c.latent.dim() == 3 and tuple(c.latent.shape) != self.latent_shape:
                return int(c.latent.shape[-1]) * 4
        return None

    def check_sequence(self, seq_len: int, conds: Sequence[Cond]) -> None:
        """Refuse wrong sequence lengths, resolutions and cameras (InvalidInput) before any network call."""
        res = self._resolution_of(conds)
        if seq_len != self.seq_len or res is not None:
            got = f"got {seq_len} at {_res_text(res if res is not None else self.image_size)}"
            raise InvalidInput(self.unit if seq_len != self.seq_len else "resolution", f"{self._expect()}, {got}")
        lo, hi = self.cfg.elevation_range_deg
        for j, c in enumerate(conds):
            if not isinstance(c, Cond):
                raise InvalidInput(f"conds[{j}]", f"expected a Cond, got {type(c).__name__}")
            if not torch.is_tensor(c.latent) or tuple(c.latent.shape) != self.latent_shape:
                got = tuple(c.latent.shape) if torch.is_tensor(c.latent) else None
                raise InvalidInput(f"conds[{j}].latent", f"{self.name} needs the conditioning latent {self.latent_shape}, got {got}")
            if not torch.isfinite(c.latent).all():
                raise InvalidInput(f"conds[{j}].latent", "contains NaN or infinite values")
            if self.kind != "multiview":
                continue
            for fname in ("elevation", "azimuth"):
                t = getattr(c, fname)
                if not torch.is_tensor(t) or t.dim() != 1 or t.shape[0] != self.seq_len:
                    got = tuple(t.shape) if torch.is_tensor(t) else None
                    raise InvalidInput(f"conds[{j}].{fname}",
                                       f"{self.name} needs one {fname} per view ({self.seq_len} cameras, radians), got {got}")
                if not torch.isfinite(t).all():
                    raise InvalidInput(f"conds[{j}].{fname}", "contains NaN or infinite values")
            el = torch.rad2deg(c.elevation.double())
            if (el < lo - 0.5).any() or (el > hi + 0.5).any():
                raise InvalidInput(f"conds[{j}].elevation", f"{self.name} was trained on orbit elevations "
                                   f"{lo:g}\u00b0..{hi:g}\u00b0, got {el.min().item():.1f}\u00b0..{el.max().item():.1f}\u00b0")

    # ---------------------------------------------------------------- denoise
    def _frame_inputs(self, conds: Sequence[Cond], B: int, T: int, device) -> dict:
        if self.kind == "video":
            idx = torch.full((B, T), self.cfg.seq_len, dtype=torch.long) if self.single else \
                torch.arange(T, dtype=torch.long).expand(B, T)
            return {"frame_index": idx.to(device)}
        el = torch.stack([c.elevation.to(torch.float32) for c in conds]).to(device)
        az = torch.stack([c.azimuth.to(torch.float32) for c in conds]).to(device)
        return {"elevation": el, "azimuth": az}

    def _prior(self, cond: Tensor, frames: dict) -> Tensor:
        """The lift's renders [B, T, channels, h, w] for these conditions and cameras. They depend on neither x
        nor sigma, so they are computed once per distinct batch of conditions and reused by every later
        step (a sampler revisits the same few batches; the lift is over a third of a forward pass)."""
        el, az = frames["elevation"], frames["azimuth"]
        h = hashlib.sha1()
        for t in (cond, el, az):
            h.update(str(tuple(t.shape)).encode())
            h.update(t.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
        key = h.hexdigest()
        hit = self._prior_cache.get(key)
        if hit is None:
            self.prior_renders += 1
            hit = self.net.lift(cond, el, az)
            self._prior_cache[key] = hit
            while len(self._prior_cache) > self.PRIOR_CACHE:
                self._prior_cache.popitem(last=False)
        else:
            self._prior_cache.move_to_end(key)
        return hit

    @torch.no_grad()
    def denoise(self, x: Tensor, sigma: Tensor, conds: Sequence[Cond]) -> Tensor:
        """x [B, T, C, h, w] at noise levels sigma [B]; one Cond per sequence -> x0 [B, T, C, h, w]."""
        if not torch.is_tensor(x) or x.dim() != 5 or tuple(x.shape[2:]) != self.latent_shape:
            got = tuple(x.shape) if torch.is_tensor(x) else type(x).__name__
            raise InvalidInput("x", f"{self._expect()}: latents [B, {self.seq_len}, {', '.join(map(str, self.latent_shape))}], got {got}")
        B, T = x.shape[:2]
        if len(conds) != B:
            raise InvalidInput("conds", f"expected {B} conditions (one per sequence), got {len(conds)}")
        self.check_sequence(T, conds)
        sigma = torch.as_tensor(sigma, dtype=torch.float32).reshape(-1).to(self.device)
        if sigma.numel() == 1:
            sigma = sigma.expand(B)
        if sigma.numel() != B or not torch.isfinite(sigma).all() or (sigma <= 0).any():
            raise InvalidInput("sigma", f"expected {B} positive finite noise levels, got {sigma.tolist()}")
        c_skip, c_out, c_in, c_noise = self.scaling(sigma)
        xf = x.to(self.device, torch.float32)
        x_in = xf * c_in.view(B, 1, 1, 1, 1)
        cond = torch.stack([c.latent.to(torch.float32) for c in conds]).to(self.device)
        frames = self._frame_inputs(conds, B, T, self.device)
        self.calls += 1
        renders = self._prior(cond, frames) if self.net.lift is not None else None
        if self.guidance == 1.0:
            out = self.net(x_in, c_noise, cond, torch.ones(B, device=self.device), renders=renders, **frames)
        else:
            keep = torch.cat([torch.ones(B), torch.zeros(B)]).to(self.device)
            if renders is not None:  # the unconditioned half gets no prior (zeroed by keep anyway)
                renders = torch.cat([renders, torch.zeros_like(renders)])
            both = self.net(torch.cat([x_in, x_in]), torch.cat([c_noise, c_noise]), torch.cat([cond, cond]), keep,
                            renders=renders, **{k: torch.cat([v, v]) for k, v in frames.items()})
            out_c, out_u = both[:B], both[B:]
            out = out_u + self.guidance * (out_c - out_u)
        x0 = self.scaling.x0(xf, sigma, out, c_skip, c_out)
        return x0.to(x.dtype).to(x.device)
