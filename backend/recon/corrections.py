"""Per-image corrections: what a generator gets wrong about each image, learned and then left out.

Generated images are not pixel-perfectly consistent: each one may sit a pixel or two off and carry
its own slight colour cast. Fitting one 3D scene to all of them exactly averages those errors into
the scene (blur, wrong colours, thinned silhouettes). Instead every training image (keyframe f,
view v) gets a small learnable correction that is applied to its *render* during the fit and never
to renders of new cameras:

* a 2-D sub-pixel translation ``shift`` [F, V, 2] (pixels, x along the width), applied as a
  principal-point offset of that image's camera (differentiable through the projected means; no
  resampling blur), or, for rasterisers that give no gradient to the intrinsics (gsplat), as a
  bilinear resampling of the rendered image;
* a per-channel colour gain and bias ``log_gain`` [F, V, 3], ``bias`` [F, V, 3]:
  ``rgb' = rgb * exp(log_gain) + bias`` (on the image composited over white, so the background's
  cast is corrected too).

Both are regularised toward the identity (``regulariser``) and have what the scene itself could
explain projected out, so the corrections explain only the *disagreement* between images: the
colours' mean over all images is the identity (a common cast stays in the scene's colours), and each
frame's shifts have no common part and no part that a 3-D translation of the object would make
(``set_cameras``); otherwise the shifts could carry a frame's motion (or the whole scene) off its
place, and unseen views, which get no correction, would see it there.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def _projector(basis: Tensor) -> Tensor:
    """I - Q Q^T for the column space of basis [n, k]: [n, n] float32."""
    q, _ = torch.linalg.qr(basis.double())
    return (torch.eye(basis.shape[0], dtype=torch.float64) - q @ q.T).float()


def shift_gauge(K, w2c, centre=None) -> Tensor:
    """Projector [2V, 2V] that removes from one frame's image shifts (flattened [V, 2]) their common
    part and the image motion that a small 3-D translation of the object at ``centre`` (default the
    origin) makes in cameras K [V, 3, 3], OpenCV w2c [V, 4, 4]: the shifts the scene itself could
    explain."""
    K = torch.as_tensor(K).double().cpu()
    w2c = torch.as_tensor(w2c).double().cpu()
    V = K.shape[0]
    c = torch.zeros(3, dtype=torch.float64) if centre is None else torch.as_tensor(centre).double().cpu()
    R = w2c[:, :3, :3]
    cam = R @ c + w2c[:, :3, 3]  # [V, 3]
    x, y, z = cam.unbind(-1)
    du = K[:, 0, 0, None] * (R[:, 0] / z[:, None] - (x / z**2)[:, None] * R[:, 2])  # [V, 3]
    dv = K[:, 1, 1, None] * (R[:, 1] / z[:, None] - (y / z**2)[:, None] * R[:, 2])
    translation = torch.stack([du, dv], 1).reshape(2 * V, 3)
    common = torch.eye(2, dtype=torch.float64).repeat(V, 1)  # [2V, 2]
    return _projector(torch.cat([common, translation], 1))


def project_shifts(shifts: Tensor, projector: Tensor) -> Tensor:
    """Shifts [F, V, 2] with ``projector`` [2V, 2V] (``shift_gauge``) applied to their mean over the
    frames: what would move the whole scene is removed, each frame's deviation from the mean is kept."""
    Fr, V, _ = shifts.shape
    raw = shifts.reshape(Fr, 2 * V)
    mean = raw.mean(0, keepdim=True)
    return (raw - mean + mean @ projector.T.to(raw.dtype)).reshape(Fr, V, 2)


def shift_images(images: Tensor, shift: Tensor, fill: float = 1.0) -> Tensor:
    """Images [N, H, W, C] moved by shift [N, 2] pixels (x along the width; content at p goes to
    p + shift), bilinear, ``fill`` where nothing was."""
    N, H, W, C = images.shape
    ys, xs = torch.meshgrid(torch.arange(H, dtype=images.dtype, device=images.device),
                            torch.arange(W, dtype=images.dtype, device=images.device), indexing="ij")
    src = torch.stack([xs, ys], -1)[None] - shift.to(images.dtype)[:, None, None, :]  # [N, H, W, 2]
    grid = torch.stack([(src[..., 0] + 0.5) / W * 2 - 1, (src[..., 1] + 0.5) / H * 2 - 1], -1)
    x = images.permute(0, 3, 1, 2) - fill
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False) + fill
    return out.permute(0, 2, 3, 1)


class ImageCorrections(nn.Module):
    """Corrections for ``frames`` x ``views`` training images (identity at construction)."""

    def __init__(self, frames: int, views: int):
        super().__init__()
        self.raw_shift = nn.Parameter(torch.zeros(frames, views, 2))
        self.raw_log_gain = nn.Parameter(torch.zeros(frames, views, 3))
        self.raw_bias = nn.Parameter(torch.zeros(frames, views, 3))
        # projector [2V, 2V] onto the shifts of one frame that the scene cannot explain
        self.register_buffer("shift_projector", _projector(torch.eye(2).repeat(views, 1)))  # common part only

    def set_cameras(self, K: Tensor, w2c: Tensor) -> None:
        """Project out of every frame's shifts what the scene could explain (``shift_gauge``)."""
        self.shift_projector = shift_gauge(K, w2c).to(self.raw_shift.device)

    @staticmethod
    def _centred(raw: Tensor) -> Tensor:
        return raw - raw.mean(dim=(0, 1), keepdim=True) if raw.shape[0] * raw.shape[1] > 1 else raw

    @property
    def shift(self) -> Tensor:
        """[F, V, 2] pixels. Their mean over the frames has no common part and no part a 3-D
        translation of the object would explain (those would move the whole scene); a frame's
        deviation from that mean may have (the motion field and the shifts share it)."""
        return project_shifts(self.raw_shift, self.shift_projector)

    @property
    def log_gain(self) -> Tensor:
        """[F, V, 3] (mean zero over the images)."""
        return self._centred(self.raw_log_gain)

    @property
    def bias(self) -> Tensor:
        """[F, V, 3] in colour units (mean zero over the images)."""
        return self._centred(self.raw_bias)

    def intrinsics(self, K: Tensor, frames: Tensor) -> Tensor:
        """Intrinsics [V, 3, 3] -> per image [Fb, V, 3, 3] with the principal point moved by the shift."""
        s = self.shift[frames]  # [Fb, V, 2]
        Kb = K[None].expand(s.shape[0], -1, -1, -1).clone()
        Kb[..., 0, 2] = Kb[..., 0, 2] + s[..., 0]
        Kb[..., 1, 2] = Kb[..., 1, 2] + s[..., 1]
        return Kb

    def resample(self, rgb: Tensor, frames: Tensor, fill: float = 1.0) -> Tensor:
        """Shift rendered images rgb [Fb, V, H, W, C] by their images' shifts (bilinear; outside = ``fill``)."""
        Fb, V, H, W, C = rgb.shape
        out = shift_images(rgb.reshape(Fb * V, H, W, C), self.shift[frames].reshape(Fb * V, 2), fill)
        return out.reshape(Fb, V, H, W, C)

    def colour(self, rgb: Tensor, frames: Tensor) -> Tensor:
        """Apply gain and bias to rendered images rgb [Fb, V, H, W, 3]."""
        gain = torch.exp(self.log_gain[frames])[:, :, None, None, :]
        return rgb * gain + self.bias[frames][:, :, None, None, :]

    def regulariser(self, shift_weight: float = 1.0, colour_weight: float = 1.0, shift_scale: float = 1.0,
                    colour_scale: float = 0.05) -> Tensor:
        """Squared distance from the identity, dimensionless: shifts over ``shift_scale`` pixels,
        gains and biases over ``colour_scale`` (a typical size of the errors being corrected),
        each mean over the images and weighted."""
        shift = ((self.shift / shift_scale) ** 2).sum(-1).mean()
        colour = ((self.log_gain / colour_scale) ** 2 + (self.bias / colour_scale) ** 2).sum(-1).mean()
        return shift_weight * shift + colour_weight * colour

    @torch.no_grad()
    def report(self) -> dict:
        """JSON-able summary: mean / largest shift length (px), gain and bias ranges, and per image."""
        shift = self.shift.detach().cpu()
        gain = torch.exp(self.log_gain.detach()).cpu()
        bias = self.bias.detach().cpu()
        length = shift.norm(dim=-1)
        return {
            "shift_px_mean": round(float(length.mean()), 4),
            "shift_px_max": round(float(length.max()), 4),
            "gain_min": round(float(gain.min()), 4),
            "gain_max": round(float(gain.max()), 4),
            "bias_abs_max": round(float(bias.abs().max()), 4),
            "shift_px": [[[round(float(x), 3) for x in s] for s in row] for row in shift],  # [F][V][2]
            "gain": [[[round(float(x), 4) for x in g] for g in row] for row in gain],  # [F][V][3]
            "bias": [[[round(float(x), 4) for x in b] for b in row] for row in bias],  # [F][V][3]
        }
