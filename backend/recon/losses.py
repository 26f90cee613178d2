"""Photometric losses for fitting generated images.

As the Diffusion² paper does for generated data: D-SSIM and LPIPS, each weighted per image by its
confidence (C_ssim = SSIM, C_lpips = 1 - LPIPS, both measured on the current render and not
differentiated), no L1. Where ``lpips`` cannot be imported or built (CPU machines: it needs
torchvision and its pretrained backbones), L1 + D-SSIM, the D-SSIM term still confidence-weighted.
The loss in use is reported by name (``PhotometricLoss.name``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

LOSS_NAMES = ("auto", "l1+dssim", "dssim+lpips")


def _gauss_window(size: int = 11, sigma: float = 1.5, device=None, dtype=None) -> Tensor:
    x = torch.arange(size, device=device, dtype=dtype) - (size - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    return g / g.sum()


def _blur_matrix(n: int, window: int, sigma: float, device, dtype) -> Tensor:
    """[n, n] matrix applying a 1D Gaussian window with replicate padding along an axis of length n."""
    g = _gauss_window(window, sigma, device, dtype)
    pad = window // 2
    src = (torch.arange(n, device=device)[:, None] + torch.arange(window, device=device)[None, :] - pad).clamp(0, n - 1)
    m = torch.zeros(n, n, device=device, dtype=dtype)
    m.scatter_add_(1, src, g[None].expand(n, -1).contiguous())
    return m


_BLUR_CACHE: dict = {}


def _blur(t: Tensor, window: int, sigma: float) -> Tensor:
    """Separable Gaussian blur of [..., H, W] as two matrix products (much faster on CPU than
    single-channel convolutions)."""
    H, W = t.shape[-2:]
    key = (H, W, window, sigma, t.device, t.dtype)
    if key not in _BLUR_CACHE:
        _BLUR_CACHE[key] = (_blur_matrix(H, window, sigma, t.device, t.dtype),
                            _blur_matrix(W, window, sigma, t.device, t.dtype).T.contiguous())
    mh, mw = _BLUR_CACHE[key]
    return mh @ (t @ mw)


def blur_images(images: Tensor, sigma: float) -> Tensor:
    """Gaussian blur (std ``sigma`` pixels) of images [B, H, W, C]."""
    window = 2 * int(math.ceil(3 * sigma)) + 1
    return _blur(images.permute(0, 3, 1, 2), window, float(sigma)).permute(0, 2, 3, 1)


def ssim_map(x: Tensor, y: Tensor, window: int = 11, sigma: float = 1.5) -> Tensor:
    """SSIM map of images x, y [B, H, W, C] in [0, 1] (Gaussian window, replicate borders) -> [B, H, W, C]."""
    xc = x.permute(0, 3, 1, 2)
    yc = y.permute(0, 3, 1, 2)
    stacked = _blur(torch.stack([xc, yc, xc * xc, yc * yc, xc * yc], 0), window, sigma)
    mx, my, xx, yy, xy = stacked.unbind(0)
    vx, vy, cov = xx - mx * mx, yy - my * my, xy - mx * my
    c1, c2 = 0.01**2, 0.03**2
    s = ((2 * mx * my + c1) * (2 * cov + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    return s.permute(0, 2, 3, 1)


def ssim(x: Tensor, y: Tensor) -> Tensor:
    """Mean SSIM per image: x, y [B, H, W, C] -> [B]."""
    return ssim_map(x, y).mean(dim=(1, 2, 3))


def psnr(x: Tensor, y: Tensor) -> Tensor:
    """PSNR in dB per image: x, y [B, H, W, C] in [0, 1] -> [B]."""
    mse = ((x - y) ** 2).mean(dim=(1, 2, 3)).clamp_min(1e-12)
    return -10.0 * torch.log10(mse)


def _try_lpips(device) -> tuple[object | None, str]:
    """An LPIPS network on ``device`` or (None, why not)."""
    try:
        import lpips  # noqa: F401  (needs torchvision; absent on CPU machines by design)
    except Exception as exc:  # ImportError, or torchvision failing to load
        return None, f"lpips not importable ({type(exc).__name__}: {exc})"
    try:
        net = lpips.LPIPS(net="vgg", verbose=False).to(device).eval()
        for p in net.parameters():
            p.requires_grad_(False)
        return net, ""
    except Exception as exc:  # e.g. backbone weights not downloadable
        return None, f"lpips could not be built ({type(exc).__name__}: {exc})"


@dataclass
class LossTerms:
    """total: scalar; per-image ssim [B] (and lpips [B] when used), detached."""

    total: Tensor
    ssim: Tensor
    lpips: Tensor | None = None


class PhotometricLoss:
    """``name`` is 'l1+dssim' or 'dssim+lpips'; ``fallback_reason`` says why LPIPS is not used."""

    def __init__(self, kind: str = "auto", device="cpu", l1_weight: float = 0.8, dssim_weight: float = 0.2,
                 lpips_weight: float = 0.2, confidence: bool = True):
        if kind not in LOSS_NAMES:
            raise ValueError(f"loss must be one of {LOSS_NAMES}, got {kind!r}")
        self.net, self.fallback_reason = (None, "") if kind == "l1+dssim" else _try_lpips(device)
        if kind == "dssim+lpips" and self.net is None:
            raise RuntimeError(f"loss 'dssim+lpips' requested but {self.fallback_reason}")
        if kind == "l1+dssim":
            self.fallback_reason = "l1+dssim requested"
        self.name = "dssim+lpips" if self.net is not None else "l1+dssim"
        self.l1_weight, self.dssim_weight, self.lpips_weight = l1_weight, dssim_weight, lpips_weight
        self.confidence = confidence

    def _weights(self, score: Tensor) -> Tensor:
        """Per-image confidences [B], normalised to mean 1, no gradient."""
        if not self.confidence:
            return torch.ones_like(score)
        c = score.detach().clamp_min(1e-3)
        return c / c.mean()

    def __call__(self, pred: Tensor, target: Tensor) -> LossTerms:
        """pred, target [B, H, W, 3] in [0, 1]."""
        s = ssim(pred, target)
        dssim = 1.0 - s
        if self.net is None:
            l1 = (pred - target).abs().mean(dim=(1, 2, 3))
            total = (self.l1_weight * l1 + self.dssim_weight * self._weights(s) * dssim).mean()
            return LossTerms(total, s.detach())
        x = pred.permute(0, 3, 1, 2) * 2 - 1
        y = target.permute(0, 3, 1, 2) * 2 - 1
        lp = self.net(x, y).reshape(-1)
        total = (self._weights(s) * dssim + self.lpips_weight * self._weights(1.0 - lp) * lp).mean()
        return LossTerms(total, s.detach(), lp.detach())


def psnr_from_mse(mse: float) -> float:
    return -10.0 * math.log10(max(mse, 1e-12))
