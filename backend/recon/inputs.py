"""Checks on what ``fit`` is given. Every refusal is an ``InvalidInput`` naming the field and the limit."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from backend.errors import InvalidInput

MIN_SIZE, MAX_SIZE = 8, 4096
MAX_VIEWS, MAX_FRAMES = 256, 512
WHITE_LEVEL = 250  # an image whose every pixel is at least this in every channel counts as white


@dataclass
class FitInputs:
    """Validated inputs. rgb [V, F, H, W, 3] float32 on white in [0, 1]; alpha [V, F, H, W] or None;
    K [V, 3, 3], w2c [V, 4, 4] float64; times [F] float64."""

    rgb: np.ndarray
    alpha: np.ndarray | None
    K: np.ndarray
    w2c: np.ndarray
    times: np.ndarray

    @property
    def shape(self) -> tuple[int, int, int, int]:
        V, F, H, W = self.rgb.shape[:4]
        return V, F, H, W


def _array(value, field: str, dtype=None) -> np.ndarray:
    try:
        return np.asarray(value, dtype=dtype)
    except Exception as exc:
        raise InvalidInput(field, f"must be an array, got {type(value).__name__} ({exc})") from None


def check_inputs(images, intrinsics, world_to_cam, times) -> FitInputs:
    images = _array(images, "images")
    if images.ndim != 5 or images.shape[-1] not in (3, 4):
        raise InvalidInput("images", f"must be uint8 [V, F, H, W, 3 or 4], got shape {tuple(images.shape)}")
    if images.size == 0:
        raise InvalidInput("images", f"is empty (shape {tuple(images.shape)}); need at least 1 view and 1 frame")
    if images.dtype != np.uint8:
        raise InvalidInput("images", f"must be uint8 (0-255), got {images.dtype}")
    V, F, H, W, C = images.shape
    if V > MAX_VIEWS:
        raise InvalidInput("images", f"at most {MAX_VIEWS} views, got {V}")
    if F > MAX_FRAMES:
        raise InvalidInput("images", f"at most {MAX_FRAMES} frames, got {F}")
    if not (MIN_SIZE <= H <= MAX_SIZE and MIN_SIZE <= W <= MAX_SIZE):
        raise InvalidInput("images", f"height and width must be within {MIN_SIZE}..{MAX_SIZE} pixels, got {H}x{W}")

    K = _array(intrinsics, "intrinsics", np.float64)
    if K.shape != (V, 3, 3):
        raise InvalidInput("intrinsics", f"expected [{V}, 3, 3] (one camera per view in images), got {tuple(K.shape)}")
    if not np.isfinite(K).all():
        raise InvalidInput("intrinsics", "contains NaN or infinite values")
    if (K[:, 0, 0] <= 0).any() or (K[:, 1, 1] <= 0).any():
        raise InvalidInput("intrinsics", "focal lengths K[v, 0, 0] and K[v, 1, 1] must be positive")

    w2c = _array(world_to_cam, "world_to_cam", np.float64)
    if w2c.shape != (V, 4, 4):
        raise InvalidInput("world_to_cam", f"expected [{V}, 4, 4] (one camera per view in images), got {tuple(w2c.shape)}")
    if not np.isfinite(w2c).all():
        raise InvalidInput("world_to_cam", "contains NaN or infinite values")
    R = w2c[:, :3, :3]
    ortho = np.abs(R @ R.transpose(0, 2, 1) - np.eye(3)).max(axis=(1, 2))
    bad = np.nonzero((ortho > 1e-3) | (np.linalg.det(R) < 0) | (np.abs(w2c[:, 3] - [0, 0, 0, 1]).max(1) > 1e-6))[0]
    if bad.size:
        raise InvalidInput("world_to_cam", f"view {int(bad[0])} is not a rigid OpenCV world-to-camera matrix "
                                           "(rotation must be orthonormal with det +1, last row [0, 0, 0, 1])")

    t = _array(times, "times", np.float64).reshape(-1) if np.ndim(times) <= 1 else _array(times, "times")
    if t.ndim != 1 or t.shape[0] != F:
        raise InvalidInput("times", f"expected [{F}] (one time per frame in images), got shape {tuple(np.shape(times))}")
    if not np.isfinite(t).all() or (t < 0).any() or (t > 1).any():
        raise InvalidInput("times", f"must be finite and within [0, 1], got {t.tolist()}")
    if F > 1 and (np.diff(t) <= 0).any():
        raise InvalidInput("times", f"must be strictly increasing (frame 0 is the canonical frame), got {t.tolist()}")

    rgb8 = images[..., :3]
    alpha = images[..., 3].astype(np.float32) / 255.0 if C == 4 else None
    if C == 4:
        blank = (images[..., 3] == 0).reshape(V, F, -1).all(-1)
        what = "has zero alpha everywhere (no object)"
    else:
        blank = (rgb8 >= WHITE_LEVEL).reshape(V, F, -1).all(-1)
        what = "is entirely white (no object)"
    if blank.all():
        raise InvalidInput("images", f"every image {what}")
    if blank.any():
        v, f = (int(i) for i in np.argwhere(blank)[0])
        raise InvalidInput("images", f"image [view {v}, frame {f}] {what}; {int(blank.sum())} of {V * F} images are blank")
    return FitInputs(rgb8.astype(np.float32) / 255.0, alpha, K, w2c, t)
