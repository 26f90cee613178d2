"""gsplat backend (CUDA only): the same interface as ``raster_torch.rasterize_torch``.

Written against gsplat 1.5.3's ``gsplat.rasterization`` (``packed=False`` so the projected means
keep their [B, C, N, 2] layout for densification, ``render_mode="RGB+D"`` for accumulated depth).
gsplat puts pixel centres at ``i + 0.5``; our intrinsics use pixel-centre coordinates, so the
principal point is shifted by half a pixel on the way in.
"""

from __future__ import annotations

from torch import Tensor

from .projection import Projected, to_gsplat_intrinsics


def gsplat_available() -> bool:
    """True when gsplat imports and CUDA is present (gsplat only rasterises on CUDA)."""
    try:
        import torch

        if not torch.cuda.is_available():
            return False
        import gsplat  # noqa: F401
    except Exception:
        return False
    return True


def rasterize_gsplat(means: Tensor, quats: Tensor, scales: Tensor, opacities: Tensor, colors: Tensor,
                     viewmats: Tensor, Ks: Tensor, width: int, height: int, *, background: Tensor,
                     eps2d: float = 0.3, near_plane: float = 0.01):
    """Flat batch: Gaussians [B, N, ...], cameras [B, C, ...], background [B, C, D] (CUDA tensors).

    Returns (colour [B, C, H, W, D], alpha [B, C, H, W, 1], depth [B, C, H, W, 1], Projected).
    """
    from gsplat import rasterization

    colours, alphas, meta = rasterization(
        means, quats, scales, opacities, colors, viewmats, to_gsplat_intrinsics(Ks), int(width), int(height),
        near_plane=near_plane, eps2d=eps2d, packed=False, render_mode="RGB+D", backgrounds=background,
        rasterize_mode="classic",
    )
    D = colors.shape[-1]
    means2d = meta["means2d"]
    radii = meta["radii"]
    if radii.dim() == means2d.dim() - 1:  # older layouts: one radius per Gaussian
        radii = radii[..., None].expand(means2d.shape)
    proj = Projected(means2d=means2d, conics=meta["conics"], depths=meta["depths"], radii=radii)
    return colours[..., :D], alphas, colours[..., D : D + 1], proj
