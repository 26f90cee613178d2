"""4D Gaussian reconstruction: fit animated Gaussians to a views x frames image matrix.

    from backend.recon import fit
    result = fit(images, intrinsics, world_to_cam, times, iterations=600, on_progress=..., cancel=...)
    result.render(K, w2c, time, H, W)          # [H, W, 3] on white
    result.displacement(points, times)         # [T, P, 3] motion of canonical (time-0) points
    result.centres, result.colours, ...        # per-frame arrays for the add-on
    result.export_ply(dir); result.save_summary(path)
"""

from .fitting import FitOptions, fit
from .result import Fit4D

__all__ = ["fit", "Fit4D", "FitOptions"]
