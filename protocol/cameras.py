"""Orbit camera rigs shared by the add-on, the backend, the datasets and the evaluation.

Pure numpy (importable inside Blender). One convention everywhere:

* World: right-handed, +Z up; the object is normalised into the unit sphere at the origin.
* Azimuth 0 puts the camera on -Y looking toward +Y (the object's front); azimuth grows
  counter-clockwise seen from above (90 deg puts the camera on +X). Positive elevation is above.
* Cameras are OpenCV: x right, y down, z forward. ``w2c`` maps world points to camera space;
  pixel (u, v) of a world point X is ``(K @ (R @ X + t))[:2] / z`` with u along the width.
* Intrinsics: ``fx = fy = (W / 2) / tan(fov / 2)`` (fov is horizontal), principal point at
  ``((W - 1) / 2, (H - 1) / 2)`` in pixel-centre coordinates (pixel i covers [i - 0.5, i + 0.5]).
* Distance: chosen so that the unit sphere covers ``fill`` of the image width.

These match the ground-truth renders in ``shared/assets/animated/gt`` exactly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

DEFAULT_FOV_DEG = 33.8
DEFAULT_FILL = 0.8
DEFAULT_ELEVATION_DEG = 10.0
MAX_ABS_ELEVATION_DEG = 85.0


def orbit_distance(fov_deg: float = DEFAULT_FOV_DEG, fill: float = DEFAULT_FILL) -> float:
    """Camera distance at which the unit sphere's silhouette spans ``fill`` of the image width."""
    if not 0.0 < fov_deg < 180.0:
        raise ValueError(f"fov_deg must be in (0, 180), got {fov_deg}")
    if not 0.0 < fill < 1.0:
        raise ValueError(f"fill must be in (0, 1), got {fill}")
    half_extent = fill * math.tan(math.radians(fov_deg) / 2.0)  # tan of the sphere's angular radius
    return math.sqrt(1.0 + 1.0 / half_extent**2)


def intrinsics(fov_deg: float, width: int, height: int) -> np.ndarray:
    """Pinhole intrinsics [3, 3] with a horizontal field of view ``fov_deg``."""
    f = (width / 2.0) / math.tan(math.radians(fov_deg) / 2.0)
    return np.array([[f, 0.0, (width - 1) / 2.0], [0.0, f, (height - 1) / 2.0], [0.0, 0.0, 1.0]])


def camera_position(azimuth_deg: float, elevation_deg: float, distance: float) -> np.ndarray:
    """World position [3] of an orbit camera looking at the origin."""
    a, e = math.radians(azimuth_deg), math.radians(elevation_deg)
    return distance * np.array([math.sin(a) * math.cos(e), -math.cos(a) * math.cos(e), math.sin(e)])


def look_at_w2c(position: np.ndarray, target: np.ndarray | None = None) -> np.ndarray:
    """OpenCV world-to-camera matrix [4, 4] for a camera at ``position`` looking at ``target`` (+Z up)."""
    position = np.asarray(position, dtype=np.float64)
    target = np.zeros(3) if target is None else np.asarray(target, dtype=np.float64)
    forward = target - position
    forward /= np.linalg.norm(forward)
    right = np.cross(forward, np.array([0.0, 0.0, 1.0]))
    norm = np.linalg.norm(right)
    if norm < 1e-8:
        raise ValueError("camera looks straight up or down; elevation must stay within +-85 degrees")
    right /= norm
    down = np.cross(forward, right)
    rot = np.stack([right, down, forward])
    w2c = np.eye(4)
    w2c[:3, :3] = rot
    w2c[:3, 3] = -rot @ position
    return w2c


@dataclass(frozen=True)
class OrbitRig:
    """V cameras on an orbit around the unit sphere. Arrays are float64.

    azimuth_deg, elevation_deg: [V]; K: [V, 3, 3]; w2c, c2w: [V, 4, 4] (OpenCV).
    """

    azimuth_deg: np.ndarray
    elevation_deg: np.ndarray
    distance: float
    fov_deg: float
    width: int
    height: int
    K: np.ndarray
    w2c: np.ndarray
    c2w: np.ndarray

    @property
    def num_views(self) -> int:
        return int(self.azimuth_deg.shape[0])

    def project(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Project world points [P, 3] into every view: pixels [V, P, 2] (u, v) and depths [V, P]."""
        return project(points, self.K, self.w2c)

    def subset(self, views) -> "OrbitRig":
        """The rig restricted to some view indices (e.g. the even views for training)."""
        idx = np.asarray(views)
        return OrbitRig(self.azimuth_deg[idx], self.elevation_deg[idx], self.distance, self.fov_deg,
                        self.width, self.height, self.K[idx], self.w2c[idx], self.c2w[idx])


def orbit_rig(
    num_views: int,
    width: int,
    height: int | None = None,
    *,
    elevation_deg: float | np.ndarray = DEFAULT_ELEVATION_DEG,
    fov_deg: float = DEFAULT_FOV_DEG,
    fill: float = DEFAULT_FILL,
    azimuth_start_deg: float = 0.0,
    azimuth_deg: np.ndarray | None = None,
) -> OrbitRig:
    """An orbit of ``num_views`` cameras, evenly spaced in azimuth from ``azimuth_start_deg``.

    ``elevation_deg`` may be one value or one per view; ``azimuth_deg`` overrides the even spacing.
    """
    if int(num_views) < 1:
        raise ValueError(f"num_views must be >= 1, got {num_views}")
    height = width if height is None else height
    if width < 1 or height < 1:
        raise ValueError(f"image size must be positive, got {width}x{height}")
    if azimuth_deg is None:
        azimuth_deg = azimuth_start_deg + 360.0 * np.arange(num_views) / num_views
    azimuth_deg = np.asarray(azimuth_deg, dtype=np.float64).reshape(-1)
    if azimuth_deg.shape[0] != num_views:
        raise ValueError(f"azimuth_deg must have {num_views} entries, got {azimuth_deg.shape[0]}")
    elevation_deg = np.broadcast_to(np.asarray(elevation_deg, dtype=np.float64), (num_views,)).copy()
    if np.any(np.abs(elevation_deg) > MAX_ABS_ELEVATION_DEG):
        raise ValueError(f"elevation_deg must be within +-{MAX_ABS_ELEVATION_DEG}, got {elevation_deg.tolist()}")
    distance = orbit_distance(fov_deg, fill)
    K = np.repeat(intrinsics(fov_deg, width, height)[None], num_views, axis=0)
    w2c = np.stack([look_at_w2c(camera_position(a, e, distance)) for a, e in zip(azimuth_deg, elevation_deg)])
    c2w = np.linalg.inv(w2c)
    return OrbitRig(azimuth_deg, elevation_deg, distance, fov_deg, int(width), int(height), K, w2c, c2w)


def project(points: np.ndarray, K: np.ndarray, w2c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Project world points [P, 3] with K [V, 3, 3] and w2c [V, 4, 4]: pixels [V, P, 2], depths [V, P]."""
    points = np.asarray(points, dtype=np.float64)
    K = np.asarray(K, dtype=np.float64).reshape(-1, 3, 3)
    w2c = np.asarray(w2c, dtype=np.float64).reshape(-1, 4, 4)
    cam = np.einsum("vij,pj->vpi", w2c[:, :3, :3], points) + w2c[:, None, :3, 3]
    depth = cam[..., 2]
    pix = np.einsum("vij,vpj->vpi", K, cam)
    return pix[..., :2] / pix[..., 2:3], depth
