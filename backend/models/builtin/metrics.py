"""Image metrics for the built-in models' evaluation: silhouettes, IoU, PSNR and masked PSNR.

Images are float tensors [..., 3, H, W] in [0, 1] on a white background. A pixel belongs to the
silhouette when it differs from white by more than ``threshold`` in some channel (the same rule for
predictions and ground truth, so decoded images and renders are judged alike; the procedural
objects' colours are never near white).
"""

from __future__ import annotations

import torch
from torch import Tensor

SILHOUETTE_THRESHOLD = 0.1


def silhouette(images: Tensor, threshold: float = SILHOUETTE_THRESHOLD) -> Tensor:
    """[..., 3, H, W] in [0, 1] -> bool [..., H, W]: pixels that are not background white."""
    return (1.0 - images).amax(dim=-3) > threshold


def iou(a: Tensor, b: Tensor) -> Tensor:
    """IoU of boolean masks [..., H, W] -> [...]; two empty masks count as 1."""
    inter = (a & b).flatten(-2).sum(-1).double()
    union = (a | b).flatten(-2).sum(-1).double()
    return torch.where(union > 0, inter / union.clamp_min(1), torch.ones_like(union))


def psnr(pred: Tensor, true: Tensor) -> Tensor:
    """PSNR in dB over whole images [..., 3, H, W] in [0, 1] -> [...]."""
    mse = (pred.double() - true.double()).pow(2).flatten(-3).mean(-1)
    return 10.0 * torch.log10(1.0 / mse.clamp_min(1e-10))


def masked_psnr(pred: Tensor, true: Tensor, threshold: float = SILHOUETTE_THRESHOLD) -> Tensor:
    """PSNR in dB over the union of both silhouettes (background white counts only where either
    image has the object), [..., 3, H, W] -> [...]. Two empty images score 100 dB."""
    mask = (silhouette(pred, threshold) | silhouette(true, threshold)).unsqueeze(-3).double()
    se = (pred.double() - true.double()).pow(2) * mask
    n = mask.flatten(-3).sum(-1) * 3.0
    mse = se.flatten(-3).sum(-1) / n.clamp_min(1.0)
    out = 10.0 * torch.log10(1.0 / mse.clamp_min(1e-10))
    return torch.where(n > 0, out, torch.full_like(out, 100.0))


def to_unit(images: Tensor) -> Tensor:
    """[-1, 1] -> [0, 1] (clamped)."""
    return ((images + 1.0) * 0.5).clamp(0.0, 1.0)
