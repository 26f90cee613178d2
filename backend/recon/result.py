"""``Fit4D``: the fitted 4D Gaussians and everything the pipeline and the add-on read from them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from .model import Gaussians
from .motion import MotionField, catmull_rom_weights
from .ply import write_ply
from .raster import rasterize


def _t(x, dtype=torch.float32, device="cpu") -> torch.Tensor:
    return torch.as_tensor(np.asarray(x), dtype=dtype, device=device)


class Fit4D:
    """Canonical Gaussians (frame 0) + motion field, at keyframe ``times`` [F].

    Arrays for the add-on (float32 numpy): ``centres`` [F, N, 3], ``rotations`` [F, N, 4] (w, x, y, z),
    ``colours`` [N, 3] in [0, 1], ``opacities`` [N], ``scales`` [N, 3] (standard deviations).
    ``summary`` is the JSON-able fit report (loss used, iterations, time, per-view fit PSNR).
    """

    def __init__(self, gaussians: Gaussians, motion: MotionField, times: np.ndarray, backend: str = "torch"):
        self.gaussians = gaussians
        self.motion = motion
        self.times = np.asarray(times, dtype=np.float64)
        self.backend = backend
        self.summary: dict = {}
        self._idx = motion.neighbours(gaussians.means)

    @property
    def device(self) -> torch.device:
        return self.gaussians.means.device

    @property
    def num_gaussians(self) -> int:
        return len(self.gaussians)

    # -- per-frame arrays -------------------------------------------------------------------------
    @torch.no_grad()
    def _state(self, frames=None, times=None) -> tuple[torch.Tensor, torch.Tensor]:
        g = self.gaussians
        if frames is not None:
            frames = torch.as_tensor(frames, dtype=torch.long, device=self.device)
            means, quats = self.motion.warp(g.means, g.quats, frames=frames, idx=self._idx)
            return means + g.key_offsets()[frames], quats
        t = _t(times, torch.float64, self.device).reshape(-1)
        means, quats = self.motion.warp(g.means, g.quats, times=t, idx=self._idx)
        W = catmull_rom_weights(t, self.motion.key_times).to(means.dtype)
        return means + torch.einsum("tf,fnc->tnc", W, g.key_offsets()), quats

    @property
    def centres(self) -> np.ndarray:
        return self._state(frames=range(len(self.times)))[0].cpu().numpy().astype(np.float32)

    @property
    def rotations(self) -> np.ndarray:
        q = self._state(frames=range(len(self.times)))[1]
        return (q / q.norm(dim=-1, keepdim=True)).cpu().numpy().astype(np.float32)

    @property
    def colours(self) -> np.ndarray:
        return self.gaussians.colours.detach().cpu().numpy().astype(np.float32)

    @property
    def opacities(self) -> np.ndarray:
        return self.gaussians.opacities.detach().cpu().numpy().astype(np.float32)

    @property
    def scales(self) -> np.ndarray:
        return self.gaussians.scales.detach().cpu().numpy().astype(np.float32)

    # -- motion transfer --------------------------------------------------------------------------
    @torch.no_grad()
    def displacement(self, points, times) -> np.ndarray:
        """How canonical points [P, 3] (normalised object space at time 0) move: [T, P, 3] offsets
        at ``times`` [T] in [0, 1] (interpolated between keyframes; the end poses are held outside).

        This is the smooth motion field alone (the deformation graph), which is defined everywhere;
        the Gaussians' small per-frame residuals (render detail) are not transferred."""
        p = _t(points, device=self.device).reshape(-1, 3)
        t = _t(times, torch.float64, self.device).reshape(-1)
        moved, _ = self.motion.warp(p, None, times=t)
        return (moved - p[None]).cpu().numpy().astype(np.float32)

    # -- rendering --------------------------------------------------------------------------------
    @torch.no_grad()
    def render_frames(self, K, w2c, frames, height: int, width: int) -> torch.Tensor:
        """Render cameras K [C, 3, 3], w2c [C, 4, 4] at keyframes ``frames`` [T]: [T, C, H, W, 3]."""
        means, quats = self._state(frames=frames)
        return self._raster(means, quats, K, w2c, height, width)

    @torch.no_grad()
    def render_times(self, K, w2c, times, height: int, width: int) -> torch.Tensor:
        """Render cameras K [C, 3, 3], w2c [C, 4, 4] at ``times`` [T]: [T, C, H, W, 3]."""
        means, quats = self._state(times=times)
        return self._raster(means, quats, K, w2c, height, width)

    def _raster(self, means, quats, K, w2c, height, width) -> torch.Tensor:
        g = self.gaussians
        K = _t(K, device=self.device).reshape(-1, 3, 3)
        w2c = _t(w2c, device=self.device).reshape(-1, 4, 4)
        T = means.shape[0]
        out = rasterize(means, quats, g.scales, g.opacities, g.colours, w2c[None].expand(T, -1, -1, -1),
                        K[None].expand(T, -1, -1, -1), int(width), int(height), backend=self.backend)
        return out.rgb.clamp(0, 1)

    def render(self, intrinsics, world_to_cam, time: float, height: int, width: int) -> np.ndarray:
        """One image [H, W, 3] float in [0, 1] on white, camera K [3, 3] and OpenCV w2c [4, 4] at ``time``."""
        img = self.render_times(np.asarray(intrinsics)[None], np.asarray(world_to_cam)[None], [float(time)], height, width)
        return img[0, 0].cpu().numpy()

    # -- export -----------------------------------------------------------------------------------
    def save_ply(self, path, frame: int) -> Path:
        """One keyframe as a standard 3DGS PLY (readable by common splat viewers)."""
        means, quats = self._state(frames=[int(frame)])
        return write_ply(path, means[0].cpu().numpy(), quats[0].cpu().numpy(), self.scales, self.opacities, self.colours)

    def export_ply(self, directory, prefix: str = "frame") -> list[Path]:
        """Every keyframe as ``{prefix}_{f:04d}.ply`` in ``directory``."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        return [self.save_ply(directory / f"{prefix}_{f:04d}.ply", f) for f in range(len(self.times))]

    def save_summary(self, path) -> Path:
        path = Path(path)
        path.write_text(json.dumps(self.summary, indent=2))
        return path

    def arrays(self) -> dict[str, np.ndarray]:
        """Everything the add-on needs, as float32 arrays (plus ``times`` float64)."""
        return {"centres": self.centres, "rotations": self.rotations, "colours": self.colours,
                "opacities": self.opacities, "scales": self.scales, "times": self.times}
