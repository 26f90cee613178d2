"""One rasterisation interface with two backends: gsplat on CUDA, pure PyTorch elsewhere.

    rasterize(means[..., N, 3], quats[..., N, 4], scales[..., N, 3], opacities[..., N],
              colors[..., N, D], viewmats[..., C, 4, 4], Ks[..., C, 3, 3], width, height)
        -> RasterOutput(rgb[..., C, H, W, D], alpha[..., C, H, W, 1], depth[..., C, H, W, 1])

``...`` are batch dimensions (e.g. animation frames: every frame has its own Gaussian centres and
all C views of a frame are rendered in the same call). Cameras are OpenCV world-to-camera
matrices and pixel-centre intrinsics (``protocol/cameras.py``); scales are standard deviations;
quaternions are (w, x, y, z), any norm; colours are composited over ``background`` (white by default).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from .projection import Projected
from .raster_gsplat import gsplat_available, rasterize_gsplat
from .raster_torch import rasterize_torch

BACKENDS = ("auto", "torch", "gsplat")


@dataclass
class RasterOutput:
    """rgb [..., C, H, W, D] over the background; alpha [..., C, H, W, 1]; depth [..., C, H, W, 1]
    accumulated z (divide by alpha for expected depth); proj: screen-space Gaussians flattened to
    [B, C, N, ...] (``proj.means2d`` keeps its gradient for densification when ``retain_grad``)."""

    rgb: Tensor
    alpha: Tensor
    depth: Tensor
    proj: Projected
    backend: str


def resolve_backend(backend: str, device: torch.device | str) -> str:
    """'auto' -> 'gsplat' on CUDA when gsplat is importable, else 'torch'."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "auto":
        return "gsplat" if torch.device(device).type == "cuda" and gsplat_available() else "torch"
    if backend == "gsplat" and not gsplat_available():
        raise RuntimeError("backend 'gsplat' needs CUDA and gsplat>=1.5.3,<1.6 installed")
    return backend


def rasterize(means: Tensor, quats: Tensor, scales: Tensor, opacities: Tensor, colors: Tensor,
              viewmats: Tensor, Ks: Tensor, width: int, height: int, *, background: Tensor | None = None,
              backend: str = "auto", eps2d: float = 0.3, near_plane: float = 0.01,
              retain_grad: bool = False) -> RasterOutput:
    """Render every camera of every batch entry; see the module docstring for shapes."""
    batch = means.shape[:-2]
    N, D, C = means.shape[-2], colors.shape[-1], viewmats.shape[-3]
    B = 1
    for s in batch:
        B *= int(s)
    flat = lambda t, tail: t.expand(batch + t.shape[len(t.shape) - len(tail):]).reshape((B,) + tuple(tail))
    m = flat(means, (N, 3))
    q = flat(quats, (N, 4))
    s = flat(scales, (N, 3))
    o = flat(opacities, (N,))
    c = flat(colors, (N, D))
    vm = flat(viewmats, (C, 4, 4))
    K = flat(Ks, (C, 3, 3))
    if background is None:
        background = torch.ones(D, dtype=m.dtype, device=m.device)
    bg = background.expand(batch + (C, D)).reshape(B, C, D).to(m.dtype)
    name = resolve_backend(backend, m.device)
    fn = rasterize_gsplat if name == "gsplat" else rasterize_torch
    rgb, alpha, depth, proj = fn(m, q, s, o, c, vm, K, width, height, background=bg, eps2d=eps2d,
                                 near_plane=near_plane)
    if retain_grad and proj.means2d.requires_grad:
        proj.means2d.retain_grad()
    shape = batch + (C, height, width)
    return RasterOutput(rgb.reshape(shape + (D,)), alpha.reshape(shape + (1,)), depth.reshape(shape + (1,)),
                        proj, name)
