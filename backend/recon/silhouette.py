"""Silhouette (visual-hull) losses on the projected Gaussian centres, for long-range motion.

Photometric gradients only see a moving part where render and image already overlap; a thin leg
that moved by more than its width gives no gradient at all. Two terms do not have that limit,
because every point of the object projects inside the object's silhouette in every view, and every
silhouette pixel is the projection of some point of the object:

* ``outside``: the distance (pixels) from each Gaussian centre's projection to the silhouette,
  weighted by opacity (a distance transform sampled bilinearly, so the pull never vanishes);
* ``coverage``: the distance from silhouette pixels to the nearest projected opaque centre.

Both are in units of the image width, averaged over the images of the step.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

MAX_DT_SIZE = 128  # distance transforms are computed at most at this resolution


def distance_to_mask(masks: np.ndarray) -> np.ndarray:
    """Euclidean distance (in pixels of the input) from every pixel to the nearest True pixel of
    masks [..., H, W] (0 inside); computed at up to ``MAX_DT_SIZE`` and rescaled."""
    H, W = masks.shape[-2:]
    flat = masks.reshape(-1, H, W)
    step = max(1, int(np.ceil(max(H, W) / MAX_DT_SIZE)))
    out = np.zeros((flat.shape[0], H, W), dtype=np.float32)
    ys, xs = np.mgrid[0:H:step, 0:W:step]
    grid = torch.tensor(np.stack([ys.ravel(), xs.ravel()], 1), dtype=torch.float32)
    for i, m in enumerate(flat):
        fg = torch.tensor(np.argwhere(m), dtype=torch.float32)
        if fg.shape[0] == 0:
            out[i] = float(max(H, W))
            continue
        d = torch.full((grid.shape[0],), float("inf"))
        for s in range(0, fg.shape[0], 4096):
            d = torch.minimum(d, torch.cdist(grid, fg[s : s + 4096]).min(1).values)
        small = d.reshape(ys.shape).numpy()
        if step > 1:
            t = torch.tensor(small)[None, None]
            small = F.interpolate(t, size=(H, W), mode="bilinear", align_corners=False)[0, 0].numpy()
        out[i] = np.where(m, 0.0, np.maximum(small, 0.0))
    return out.reshape(masks.shape)


class SilhouetteLoss:
    """masks [F, V, H, W] bool (frame-major, as the fit's targets)."""

    def __init__(self, masks: np.ndarray, device, samples: int = 128, seed: int = 0):
        Fr, V, H, W = masks.shape
        self.H, self.W = H, W
        self.dist = torch.tensor(distance_to_mask(masks), device=device)  # [F, V, H, W]
        counts = masks.reshape(Fr, V, -1).sum(-1)
        pmax = max(int(counts.max()), 1)
        fg = np.zeros((Fr, V, pmax, 2), dtype=np.float32)
        valid = np.zeros((Fr, V, pmax), dtype=bool)
        for f in range(Fr):
            for v in range(V):
                yx = np.argwhere(masks[f, v])
                fg[f, v, : len(yx)] = yx[:, ::-1]  # (x, y)
                valid[f, v, : len(yx)] = True
        self.fg = torch.tensor(fg, device=device)
        self.valid = torch.tensor(valid, device=device)
        self.counts = torch.tensor(counts, device=device)
        self.samples = samples
        self.gen = torch.Generator(device="cpu").manual_seed(seed)

    def __call__(self, centres: Tensor, frames: Tensor, opacity: Tensor) -> tuple[Tensor, Tensor]:
        """centres [Fb, V, N, 2] projected Gaussian centres (pixel-centre coordinates) at ``frames`` [Fb];
        opacity [N] (used as weights, not differentiated). Returns (outside, coverage)."""
        Fb, V, N, _ = centres.shape
        w = opacity.detach()
        dist = self.dist[frames].reshape(Fb * V, 1, self.H, self.W)
        grid = torch.stack([(centres[..., 0] + 0.5) / self.W * 2 - 1, (centres[..., 1] + 0.5) / self.H * 2 - 1], -1)
        d = F.grid_sample(dist, grid.reshape(Fb * V, 1, N, 2), mode="bilinear", padding_mode="border",
                          align_corners=False).reshape(Fb, V, N)
        outside = (d * w).sum(-1).mean() / (w.sum().clamp_min(1e-6) * self.W)
        active = w > 0.2
        if int(active.sum()) == 0:
            return outside, centres.sum() * 0
        c = centres[:, :, active]  # [Fb, V, Na, 2]
        counts = self.counts[frames].reshape(-1).float()  # [Fb * V]
        pick = (torch.rand(Fb * V, self.samples, generator=self.gen).to(counts.device) * counts[:, None]).long()
        pts = torch.gather(self.fg[frames].reshape(Fb * V, -1, 2), 1, pick[..., None].expand(-1, -1, 2))
        nearest = torch.cdist(pts, c.reshape(Fb * V, -1, 2)).min(-1).values  # [Fb * V, S]
        has = (counts > 0).float()[:, None]
        coverage = (nearest * has).sum() / (has.sum().clamp_min(1) * self.samples * self.W)
        return outside, coverage
