"""Preview images as Blender image data-blocks ("D² Turntable", "D² Reference Motion", "D² Matrix").

Images arrive as uint8 [N, H, W, 3|4] (a row of images) or [R, C, H, W, 3|4] (a grid, e.g. the
views x frames matrix); they are tiled into one contact sheet and written with one ``foreach_set``.
They are ordinary images: open them in an Image Editor, or look at them in the D² panel.
"""

from __future__ import annotations

import math

import bpy
import numpy as np

PREFIX = "D² "
KIND_TITLES = {
    "turntable": "Turntable",
    "reference": "Reference Motion",
    "video": "Reference Motion",
    "motion": "Reference Motion",
    "column": "Reference Motion",
    "matrix": "Matrix",
    "thumbnails": "Matrix",
}
MAX_SIDE = 1024  # contact sheets larger than this are subsampled


def image_name(kind: str) -> str:
    return PREFIX + KIND_TITLES.get(kind, kind.replace("_", " ").title())


def contact_sheet(images: np.ndarray, gap: int = 2) -> np.ndarray:
    """uint8 [N, H, W, C] (a row, wrapped into a near-square grid) or [R, C, H, W, C] (a grid)
    -> uint8 RGBA [rows*(H+gap)-gap, cols*(W+gap)-gap, 4] on white, rows top to bottom."""
    images = np.asarray(images)
    if images.dtype != np.uint8:
        raise ValueError(f"preview images must be uint8, got {images.dtype}")
    if images.ndim == 4:
        n = images.shape[0]
        cols = max(1, math.ceil(math.sqrt(n)))
        rows = math.ceil(n / cols)
        pad = np.full((rows * cols - n, *images.shape[1:]), 255, dtype=np.uint8)
        images = np.concatenate([images, pad]).reshape(rows, cols, *images.shape[1:])
    if images.ndim != 5 or images.shape[-1] not in (3, 4):
        raise ValueError(f"preview images must be [N, H, W, 3|4] or [R, C, H, W, 3|4], got {list(images.shape)}")
    if images.shape[-1] == 3:
        images = np.concatenate([images, np.full(images.shape[:-1] + (1,), 255, np.uint8)], axis=-1)
    else:  # show transparent pixels as white, fully opaque
        a = images[..., 3:4].astype(np.float32) / 255.0
        rgb = images[..., :3].astype(np.float32) * a + 255.0 * (1.0 - a)
        images = np.concatenate([np.round(rgb).astype(np.uint8), np.full_like(images[..., :1], 255)], axis=-1)
    R, C, H, W, _ = images.shape
    sheet = np.full((R * (H + gap) - gap, C * (W + gap) - gap, 4), 255, dtype=np.uint8)
    for r in range(R):
        for c in range(C):
            sheet[r * (H + gap):r * (H + gap) + H, c * (W + gap):c * (W + gap) + W] = images[r, c]
    step = max(1, math.ceil(max(sheet.shape[:2]) / MAX_SIDE))
    return sheet[::step, ::step]


def set_image(name: str, rgba: np.ndarray):
    """Create or update image ``name`` with uint8 RGBA [H, W, 4] (rows top to bottom); returns it."""
    rgba = np.asarray(rgba, dtype=np.uint8)
    H, W = int(rgba.shape[0]), int(rgba.shape[1])
    img = bpy.data.images.get(name)
    if img is not None and (img.source != "GENERATED" or tuple(img.size) != (W, H)):
        if img.source == "GENERATED":
            img.scale(W, H)
        else:
            bpy.data.images.remove(img)
            img = None
    if img is None:
        img = bpy.data.images.new(name, W, H, alpha=True)
    px = (rgba[::-1].astype(np.float32) / 255.0).ravel()  # Blender stores rows bottom-up
    img.pixels.foreach_set(px)
    img.update()
    if not bpy.app.background and img.preview is not None:
        img.preview.reload()
    return img


def show(kind: str, images: np.ndarray):
    """Tile ``images`` and store them as the preview of ``kind``; returns the image."""
    return set_image(image_name(kind), contact_sheet(images))


def read_image(name: str) -> np.ndarray | None:
    """uint8 RGBA [H, W, 4] of a preview image (rows top to bottom), or None."""
    img = bpy.data.images.get(name)
    if img is None:
        return None
    W, H = img.size
    px = np.empty(W * H * 4, dtype=np.float32)
    img.pixels.foreach_get(px)
    return np.round(px.reshape(H, W, 4)[::-1] * 255.0).astype(np.uint8)


def remove_all() -> None:
    for img in [img for img in bpy.data.images if img.name.startswith(PREFIX) and img.users == 0]:
        bpy.data.images.remove(img)
