"""A 3-D prior for the built-in multi-view model: lift the front view into a volume, render it into every view.

SV3D learns novel views from millions of orbit renders on GPUs; a 2-core CPU budget can't teach a
plain UNet what a rotation does (its held-out IoU stayed near "copy the front view"). So the
built-in multi-view model gets the geometry it can't afford to learn, in the style of pixelNeRF /
lift-splat:

1. a small CNN turns the front view's latent [C, h, w] into a feature map [feat, h, w];
2. every voxel of a grid over the unit sphere (the object's normalised bounds) is projected into the
   front camera and reads the feature under it, plus a code of its depth along that ray; an MLP
   turns that into a density and ``out`` feature channels (it has to learn how deep things are);
3. each output view's camera (elevation, relative azimuth on the rig of ``protocol.cameras``) casts
   one ray per latent pixel through the volume, which is alpha-composited into
   [out + 1, h, w] (features, opacity).

The renders go to the UNet as extra per-view input channels; ``head`` decodes them to a latent so
that the lift can be trained directly against the true views (and a silhouette loss on the
opacity). All of it is differentiable and batched: shapes are [B, V, ...] throughout.
"""

from __future__ import annotations

import math
import torch
from torch import Tensor, nn
import torch.nn.functional as F

from backend.models.builtin.config import LiftConfig
from protocol.cameras import intrinsics, orbit_distance


def orbit_cameras(elevation: Tensor, azimuth: Tensor, distance: float) -> tuple[Tensor, Tensor]:
    """Rotation [..., 3, 3] and position [..., 3] (world) of look-at-origin orbit cameras, OpenCV axes.

    elevation, azimuth: radians [...]; the same convention as ``protocol.cameras.look_at_w2c``
    (azimuth 0 on -Y, +Z up): world -> camera is ``R @ (X - position)``.
    """
    ce, se, ca, sa = elevation.cos(), elevation.sin(), azimuth.cos(), azimuth.sin()
    pos = distance * torch.stack([sa * ce, -ca * ce, se], dim=-1)
    fwd = -pos / distance
    right = torch.stack([ca, sa, torch.zeros_like(ca)], dim=-1)  # normalize(cross(fwd, +Z))
    down = torch.cross(fwd, right, dim=-1)
    return torch.stack([right, down, fwd], dim=-2), pos


class _FrontEncoder(nn.Module):
    """latent [B, C, h, w] -> features [B, feat, h, w], receptive field over the whole image."""

    def __init__(self, cin: int, feat: int):
        super().__init__()
        self.a = nn.Sequential(nn.Conv2d(cin, 64, 3, padding=1), nn.SiLU(), nn.Conv2d(64, 64, 3, padding=1), nn.SiLU())
        self.b = nn.Sequential(nn.Conv2d(64, 96, 3, stride=2, padding=1), nn.SiLU(), nn.Conv2d(96, 96, 3, padding=1), nn.SiLU())
        self.c = nn.Sequential(nn.Conv2d(96, 128, 3, stride=2, padding=1), nn.SiLU(), nn.Conv2d(128, 128, 3, padding=1), nn.SiLU())
        self.up_c = nn.Sequential(nn.Conv2d(128 + 96, 96, 3, padding=1), nn.SiLU())
        self.up_b = nn.Sequential(nn.Conv2d(96 + 64, 64, 3, padding=1), nn.SiLU(), nn.Conv2d(64, feat, 1))

    def forward(self, x: Tensor) -> Tensor:
        a = self.a(x)
        b = self.b(a)
        c = self.c(b)
        b2 = self.up_c(torch.cat([F.interpolate(c, size=b.shape[-2:], mode="nearest"), b], 1))
        return self.up_b(torch.cat([F.interpolate(b2, size=a.shape[-2:], mode="nearest"), a], 1))


class OrbitLift(nn.Module):
    """cond_latent [B, C, h, w], elevation/azimuth [B, V] (radians, view 0 = the conditioning view)
    -> renders [B, V, out + 1, h, w] (features, then opacity in [0, 1])."""

    def __init__(self, cfg: LiftConfig, latent_channels: int, latent_size: int, image_size: int):
        super().__init__()
        self.cfg = cfg
        self.latent_size, self.image_size = latent_size, image_size
        self.distance = orbit_distance(cfg.fov_deg, cfg.fill)
        K = intrinsics(cfg.fov_deg, image_size, image_size)  # the rig's pinhole (square images)
        self.focal, self.centre = float(K[0, 0]), float(K[0, 2])
        self.encoder = _FrontEncoder(latent_channels, cfg.feat)
        self.depth_freqs = 6
        cin = cfg.feat + 2 * self.depth_freqs + 1 + 3
        self.mlp = nn.Sequential(nn.Conv1d(cin, cfg.hidden, 1), nn.SiLU(), nn.Conv1d(cfg.hidden, cfg.hidden, 1), nn.SiLU(),
                                 nn.Conv1d(cfg.hidden, 1 + cfg.out, 1))
        self.head = nn.Conv2d(cfg.channels, latent_channels, 1)  # renders -> latent (auxiliary loss, white where empty)
        g = torch.linspace(-1.0, 1.0, cfg.grid)
        zz, yy, xx = torch.meshgrid(g, g, g, indexing="ij")  # volume index order [D=z, H=y, W=x]
        self.register_buffer("voxels", torch.stack([xx, yy, zz], -1).reshape(-1, 3), persistent=False)
        # one ray per latent pixel, through its centre in image-pixel coordinates (pixel i covers
        # [i - 0.5, i + 0.5]): camera-space directions [h*w, 3] with z = 1
        step = image_size / latent_size
        px = (torch.arange(latent_size, dtype=torch.float32) * step + (step - 1.0) / 2.0 - self.centre) / self.focal
        dy, dx = torch.meshgrid(px, px, indexing="ij")
        self.register_buffer("ray_dirs", torch.stack([dx, dy, torch.ones_like(dx)], -1).reshape(-1, 3), persistent=False)

    # ------------------------------------------------------------------ geometry
    def _project(self, points: Tensor, R: Tensor, pos: Tensor) -> tuple[Tensor, Tensor]:
        """points [B, P, 3] into cameras R [B, 3, 3], pos [B, 3] -> normalised image coords [B, P, 2], depth [B, P]."""
        cam = torch.einsum("bij,bpj->bpi", R, points - pos[:, None])
        z = cam[..., 2].clamp_min(1e-3)
        u = self.focal * cam[..., 0] / z + self.centre
        v = self.focal * cam[..., 1] / z + self.centre
        grid = torch.stack([(u + 0.5) / self.image_size * 2 - 1, (v + 0.5) / self.image_size * 2 - 1], -1)
        return grid, cam[..., 2]

    def volume(self, cond_latent: Tensor, elevation0: Tensor, azimuth0: Tensor) -> Tensor:
        """Density and features on the grid: [B, 1 + out, G, G, G] (density >= 0 first)."""
        B = cond_latent.shape[0]
        feats = self.encoder(cond_latent)  # [B, feat, h, w]
        R, pos = orbit_cameras(elevation0, azimuth0, self.distance)
        pts = self.voxels[None].expand(B, -1, -1)
        grid, depth = self._project(pts, R, pos)
        sampled = F.grid_sample(feats, grid[:, :, None, :], mode="bilinear", padding_mode="zeros",
                                align_corners=False)[..., 0]  # [B, feat, P]
        inside = (grid.abs() <= 1.0).all(-1).to(feats.dtype)[:, None]  # [B, 1, P]
        dz = (depth - self.distance)[:, None]  # in [-sqrt 3, sqrt 3]
        k = (2.0 ** torch.arange(self.depth_freqs, device=dz.device, dtype=dz.dtype))[None, :, None] * (math.pi / 2)
        code = torch.cat([torch.sin(k * dz), torch.cos(k * dz)], 1)
        x = torch.cat([sampled, code, inside, pts.transpose(1, 2)], 1)
        raw = self.mlp(x)  # [B, 1 + out, P]
        density = F.softplus(raw[:, :1] - 2.0) * inside * 8.0
        G = self.cfg.grid
        return torch.cat([density, raw[:, 1:]], 1).view(B, -1, G, G, G)

    def render(self, vol: Tensor, elevation: Tensor, azimuth: Tensor) -> Tensor:
        """vol [B, 1 + out, G, G, G] into the cameras [B, V] -> [B, V, out + 1, h, w]."""
        B, V = elevation.shape
        h = self.latent_size
        S = self.cfg.samples
        R, pos = orbit_cameras(elevation, azimuth, self.distance)  # [B, V, 3, 3], [B, V, 3]
        d_world = torch.einsum("bvji,pj->bvpi", R, self.ray_dirs)  # R^T d
        # samples at camera depths spanning the unit sphere
        t = torch.linspace(self.distance - 1.0, self.distance + 1.0, S, device=vol.device)
        pts = pos[:, :, None, None, :] + t[None, None, None, :, None] * d_world[:, :, :, None, :]  # [B, V, hw, S, 3]
        g = pts.reshape(B, 1, V * h * h, S, 3)
        smp = F.grid_sample(vol, g, mode="bilinear", padding_mode="zeros", align_corners=True)  # [B, C, 1, V*hw, S]
        smp = smp[:, :, 0].view(B, -1, V, h * h, S)
        step = (2.0 / (S - 1)) * d_world.norm(dim=-1)  # [B, V, hw]
        alpha = 1.0 - torch.exp(-smp[:, 0] * step[..., None])  # [B, V, hw, S]
        trans = torch.cumprod(torch.cat([torch.ones_like(alpha[..., :1]), 1.0 - alpha[..., :-1] + 1e-6], -1), -1)
        w = alpha * trans
        feat = torch.einsum("bvps,bcvps->bvcp", w, smp[:, 1:])
        opacity = w.sum(-1)[:, :, None]
        return torch.cat([feat, opacity], 2).view(B, V, -1, h, h)

    def forward(self, cond_latent: Tensor, elevation: Tensor, azimuth: Tensor) -> Tensor:
        vol = self.volume(cond_latent, elevation[:, 0], azimuth[:, 0])
        return self.render(vol, elevation, azimuth)

    def predict_latent(self, renders: Tensor) -> Tensor:
        """renders [B, V, out + 1, h, w] -> latents [B, V, C, h, w] (the auxiliary reconstruction)."""
        B, V = renders.shape[:2]
        return self.head(renders.flatten(0, 1)).view(B, V, -1, *renders.shape[-2:])
