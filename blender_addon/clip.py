"""Load a reference clip (an image sequence or a movie) as the job's reference motion.

The clip becomes uint8 RGBA [F, S, S, 4]: F frames from ``start`` (0-based), each fitted into a
square of S pixels (letterboxed on white, transparent where the clip has alpha), the same layout
as the turntable images. Image sequences are read with ``bpy.data.images.load``; movies are read
through a temporary scene's video sequencer (Blender's own FFmpeg), never touching the user's scenes.
"""

from __future__ import annotations

import math
import os
import re
import tempfile
from pathlib import Path

import bpy
import numpy as np

IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".exr", ".bmp", ".tga", ".webp", ".hdr"}
MOVIE_EXTENSIONS = {".mp4", ".mov", ".avi", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".ogv", ".gif"}


class ClipError(Exception):
    def __init__(self, field: str, message: str):
        self.field = field
        self.message = message
        super().__init__(message)


def sequence_files(path: str) -> list[str]:
    """The numbered image sequence ``path`` belongs to (``walk_0001.png`` -> every ``walk_####.png``,
    sorted by number), or every image in ``path`` when it is a folder."""
    p = Path(bpy.path.abspath(path))
    if p.is_dir():
        files = sorted(f for f in p.iterdir() if f.suffix.lower() in IMAGE_EXTENSIONS)
        return [str(f) for f in files]
    m = re.match(r"^(.*?)(\d+)$", p.stem)
    if m is None:
        return [str(p)]
    prefix = m.group(1)
    pattern = re.compile(re.escape(prefix) + r"(\d+)" + re.escape(p.suffix) + "$", re.IGNORECASE)
    numbered = []
    for f in p.parent.iterdir():
        mm = pattern.match(f.name)
        if mm:
            numbered.append((int(mm.group(1)), str(f)))
    return [f for _, f in sorted(numbered)]


def is_movie(path: str) -> bool:
    return Path(path).suffix.lower() in MOVIE_EXTENSIONS


def fit_square(rgba: np.ndarray, size: int) -> np.ndarray:
    """float32 RGBA [H, W, 4] (straight alpha, 0..1) -> uint8 [size, size, 4]: scaled to fit, centred,
    padded with transparent white; RGB composited over white like the turntable."""
    H, W = rgba.shape[:2]
    scale = size / max(H, W)
    h, w = max(1, round(H * scale)), max(1, round(W * scale))
    a = rgba[..., 3:4]
    premult = np.concatenate([rgba[..., :3] * a, a], axis=-1)
    small = resize(premult, h, w)
    out = np.zeros((size, size, 4), dtype=np.float32)
    y0, x0 = (size - h) // 2, (size - w) // 2
    out[y0:y0 + h, x0:x0 + w] = small
    alpha = out[..., 3:4]
    rgb = out[..., :3] + (1.0 - alpha)  # premultiplied colour over white
    return np.clip(np.round(np.concatenate([rgb, alpha], axis=-1) * 255.0), 0, 255).astype(np.uint8)


def _weights(n_in: int, n_out: int) -> np.ndarray:
    """[n_out, n_in] resampling matrix: area average when shrinking, linear when enlarging."""
    m = np.zeros((n_out, n_in), dtype=np.float32)
    if n_out <= n_in:
        edges = np.linspace(0.0, n_in, n_out + 1)
        for i in range(n_out):
            lo, hi = edges[i], edges[i + 1]
            for j in range(int(math.floor(lo)), min(n_in, int(math.ceil(hi)))):
                m[i, j] = min(hi, j + 1) - max(lo, j)
    else:
        pos = (np.arange(n_out) + 0.5) * n_in / n_out - 0.5
        pos = np.clip(pos, 0, n_in - 1)
        lo = np.floor(pos).astype(int)
        hi = np.minimum(lo + 1, n_in - 1)
        frac = (pos - lo).astype(np.float32)
        m[np.arange(n_out), lo] += 1.0 - frac
        m[np.arange(n_out), hi] += frac
    return m / m.sum(axis=1, keepdims=True)


def resize(img: np.ndarray, h: int, w: int) -> np.ndarray:
    """float32 [H, W, C] -> [h, w, C] (separable, area-averaging when shrinking)."""
    rows = _weights(img.shape[0], h)
    cols = _weights(img.shape[1], w)
    return np.einsum("ij,jkc,lk->ilc", rows, img.astype(np.float32), cols, optimize=True)


def _load_pixels(filepath: str) -> np.ndarray:
    """float32 RGBA [H, W, 4] rows top to bottom, straight alpha, display (sRGB) values."""
    try:
        img = bpy.data.images.load(filepath, check_existing=False)
    except RuntimeError as exc:
        raise ClipError("clip_path", f"cannot read {os.path.basename(filepath)}: {exc}") from None
    try:
        W, H = img.size
        if W == 0 or H == 0:
            raise ClipError("clip_path", f"cannot read {os.path.basename(filepath)} (empty or unsupported image)")
        px = np.empty(W * H * 4, dtype=np.float32)
        img.pixels.foreach_get(px)
        if img.is_float:  # linear float images (EXR, HDR): to display values
            rgb = np.clip(px.reshape(-1, 4)[:, :3], 0.0, None)
            px.reshape(-1, 4)[:, :3] = np.where(rgb <= 0.0031308, rgb * 12.92, 1.055 * rgb ** (1 / 2.4) - 0.055)
        return np.clip(px.reshape(H, W, 4)[::-1], 0.0, 1.0)
    finally:
        bpy.data.images.remove(img)


def _movie_frames(filepath: str, start: int, count: int) -> list[np.ndarray]:
    """Frames [start, start+count) of a movie, rendered through a temporary sequencer scene."""
    scene = bpy.data.scenes.new("dsquare_clip")
    tmpdir = tempfile.mkdtemp(prefix="dsquare_clip_")
    try:
        ed = scene.sequence_editor_create()
        strips = ed.strips if hasattr(ed, "strips") else ed.sequences
        try:
            strip = strips.new_movie(name="clip", filepath=filepath, channel=1, frame_start=1)
        except RuntimeError as exc:
            raise ClipError("clip_path", f"cannot open the movie {os.path.basename(filepath)}: {exc}") from None
        length = int(strip.frame_final_duration)
        if start + count > length:
            raise ClipError("clip_start", f"the movie has {length} frames; frames {start}..{start + count - 1} "
                                          f"are needed (clip start {start} + {count} frames)")
        el = strip.elements[0]
        r = scene.render
        r.resolution_x, r.resolution_y, r.resolution_percentage = int(el.orig_width), int(el.orig_height), 100
        r.use_sequencer = True
        r.image_settings.file_format = "PNG"
        r.image_settings.color_mode = "RGBA"
        scene.view_settings.view_transform = "Standard"
        scene.view_settings.look = "None"
        out = []
        for i in range(count):
            scene.frame_set(1 + start + i)
            r.filepath = os.path.join(tmpdir, f"f{i:05d}.png")
            with bpy.context.temp_override(scene=scene):
                bpy.ops.render.render(write_still=True)
            out.append(_load_pixels(r.filepath))
            os.remove(r.filepath)
        return out
    finally:
        bpy.data.scenes.remove(scene)
        try:
            os.rmdir(tmpdir)
        except OSError:
            pass


def load_clip(path: str, frames: int, size: int, start: int = 0) -> np.ndarray:
    """uint8 RGBA [frames, size, size, 4] from an image sequence (one of its files, or a folder) or a movie."""
    if not path:
        raise ClipError("clip_path", "choose a reference clip (an image sequence or a movie) first")
    abspath = bpy.path.abspath(path)
    if not os.path.exists(abspath):
        raise ClipError("clip_path", f"the reference clip {abspath} does not exist")
    if start < 0:
        raise ClipError("clip_start", f"clip start must be >= 0, got {start}")
    if is_movie(abspath):
        raw = _movie_frames(abspath, start, frames)
    else:
        files = sequence_files(abspath)
        if not files:
            raise ClipError("clip_path", f"no images in {abspath}")
        if start + frames > len(files):
            raise ClipError("clip_start", f"the image sequence has {len(files)} frames; frames {start}..{start + frames - 1} "
                                          f"are needed (clip start {start} + {frames} frames)")
        raw = [_load_pixels(f) for f in files[start:start + frames]]
    return np.stack([fit_square(px, size) for px in raw])
