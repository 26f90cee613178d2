"""Bake the imported animation to caches other tools read: Alembic (.abc) and PC2 (Mesh Cache).

* ``export_alembic``: the point cloud (as a vertex-only mesh: Blender's Alembic exporter writes the
  mesh, not the Geometry Nodes points, so the points modifier is switched off while exporting) and
  the animated mesh, one sample per scene frame.
* ``write_pc2`` / ``read_pc2``: the PC2 point cache format (3ds Max / Blender's Mesh Cache modifier):
  a 32-byte header ``'POINTCACHE2\\0', version 1, points, start frame, sample rate, samples`` then
  float32 [samples, points, 3] in the object's local space. Blender's Mesh Cache modifier ignores the
  header's start frame: set the modifier's ``frame_start`` (``attach_pc2`` does).
* ``sample_local_positions``: evaluated local vertex positions of an object over frames (what a
  PC2 bake writes), restoring the scene's frame afterwards.
"""

from __future__ import annotations

import math
import os
import struct
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterable, Sequence

import bpy
import numpy as np

from .render import evaluated_local_vertices

PC2_MAGIC = b"POINTCACHE2\0"
PC2_HEADER = struct.Struct("<12siiffi")


class BakeError(Exception):
    def __init__(self, field: str, message: str):
        self.field = field
        self.message = message
        super().__init__(message)


@dataclass(frozen=True)
class PC2:
    """A PC2 cache: positions float32 [S, P, 3], start frame and sample rate (frames per sample)."""

    positions: np.ndarray
    start: float
    rate: float


def write_pc2(path: str, positions: np.ndarray, start: float = 0.0, rate: float = 1.0) -> None:
    """Write float32 [S, P, 3] local positions as a PC2 file (written to a temporary name first)."""
    positions = np.asarray(positions, dtype="<f4")
    if positions.ndim != 3 or positions.shape[2] != 3:
        raise BakeError("positions", f"expected [samples, points, 3], got {list(positions.shape)}")
    if positions.shape[0] < 1 or positions.shape[1] < 1:
        raise BakeError("positions", "nothing to write: no samples or no points")
    if not (math.isfinite(rate) and rate > 0):
        raise BakeError("rate", f"sample rate must be positive, got {rate}")
    tmp = path + ".part"
    with open(tmp, "wb") as fh:
        fh.write(PC2_HEADER.pack(PC2_MAGIC, 1, positions.shape[1], float(start), float(rate), positions.shape[0]))
        fh.write(np.ascontiguousarray(positions).tobytes())
    os.replace(tmp, path)


def read_pc2(path: str) -> PC2:
    with open(path, "rb") as fh:
        head = fh.read(PC2_HEADER.size)
        if len(head) != PC2_HEADER.size:
            raise BakeError("path", f"{path} is too short to be a PC2 file")
        magic, version, points, start, rate, samples = PC2_HEADER.unpack(head)
        if magic != PC2_MAGIC or version != 1:
            raise BakeError("path", f"{path} is not a PC2 file (version 1)")
        data = np.frombuffer(fh.read(), dtype="<f4")
    if data.size != samples * points * 3:
        raise BakeError("path", f"{path}: {data.size} floats for {samples} samples x {points} points x 3")
    return PC2(data.reshape(samples, points, 3), start, rate)


@contextmanager
def _kept_frame(scene):
    frame, sub = scene.frame_current, scene.frame_subframe
    try:
        yield
    finally:
        scene.frame_set(frame, subframe=sub)


def sample_local_positions(obj, frames: Sequence[float], scene=None) -> np.ndarray:
    """float32 [len(frames), P, 3]: ``obj``'s evaluated local vertex positions at each scene frame."""
    scene = scene or bpy.context.scene
    out = None
    with _kept_frame(scene):
        for i, frame in enumerate(frames):
            whole = math.floor(frame)
            scene.frame_set(int(whole), subframe=float(frame - whole))
            co = evaluated_local_vertices(obj)  # [P, 3]
            if out is None:
                out = np.empty((len(frames), co.shape[0], 3), dtype=np.float32)
            elif co.shape[0] != out.shape[1]:
                raise BakeError("object", f"'{obj.name}' changes its vertex count over time; PC2 needs a fixed count")
            out[i] = co
    return out


def bake_pc2(obj, path: str, frame_start: int, frame_end: int, scene=None) -> PC2:
    """Bake ``obj``'s evaluated motion over [frame_start, frame_end] (one sample per frame) to ``path``."""
    if obj is None or obj.type != "MESH":
        raise BakeError("object", "select the animated mesh (or point cloud) to bake a PC2 cache")
    if frame_end < frame_start:
        raise BakeError("frame_end", f"frame_end {frame_end} is before frame_start {frame_start}")
    frames = list(range(int(frame_start), int(frame_end) + 1))
    with _points_as_vertices([obj]):  # a D² point cloud: sample its vertices, not the points
        positions = sample_local_positions(obj, frames, scene)
    _ensure_dir(path)
    write_pc2(path, positions, float(frame_start), 1.0)
    return PC2(positions, float(frame_start), 1.0)


def attach_pc2(obj, path: str, frame_start: float):
    """Add a Mesh Cache modifier reading ``path`` to ``obj``, first in its stack (the cache holds the
    base mesh's positions; the other modifiers, e.g. the points, apply after it); returns it."""
    mod = obj.modifiers.new("D² Mesh Cache", "MESH_CACHE")
    mod.cache_format = "PC2"
    mod.filepath = path
    mod.frame_start = float(frame_start)
    mod.deform_mode = "OVERWRITE"
    if len(obj.modifiers) > 1 and hasattr(obj.modifiers, "move"):
        obj.modifiers.move(len(obj.modifiers) - 1, 0)
    return mod


def _ensure_dir(path: str) -> None:
    folder = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as exc:
        raise BakeError("filepath", f"cannot create the folder {folder}: {exc.strerror}") from None


@contextmanager
def _points_as_vertices(objects: Iterable):
    """Switch off the points modifiers while exporting, so Alembic gets the vertex positions."""
    switched = []
    try:
        for ob in objects:
            for mod in ob.modifiers:
                if mod.type == "NODES" and mod.node_group is not None and mod.node_group.get("dsquare_nodes"):
                    switched.append((mod, mod.show_viewport, mod.show_render))
                    mod.show_viewport = mod.show_render = False
        yield
    finally:
        for mod, viewport, render in switched:
            mod.show_viewport, mod.show_render = viewport, render


def export_alembic(objects: Sequence, path: str, frame_start: int, frame_end: int) -> None:
    """Export ``objects`` (and only them) to an Alembic file, one sample per frame; the selection,
    the active object and the scene frame are restored afterwards."""
    objects = [ob for ob in objects if ob is not None]
    if not objects:
        raise BakeError("objects", "nothing to export: import a result first")
    if frame_end < frame_start:
        raise BakeError("frame_end", f"frame_end {frame_end} is before frame_start {frame_start}")
    _ensure_dir(path)
    view_layer = bpy.context.view_layer
    selected = [ob for ob in view_layer.objects if ob.select_get()]
    active = view_layer.objects.active
    scene = bpy.context.scene
    try:
        with _kept_frame(scene), _points_as_vertices(objects):
            for ob in selected:
                ob.select_set(False)
            for ob in objects:
                ob.select_set(True)
            wanted = dict(filepath=path, start=int(frame_start), end=int(frame_end), selected=True,
                          visible_objects_only=False, flatten=False, uvs=True, normals=True, vcolors=True,
                          face_sets=False, export_hair=False, export_particles=False, evaluation_mode="VIEWPORT")
            known = bpy.ops.wm.alembic_export.get_rna_type().properties.keys()  # options differ across 4.2-5.x
            result = bpy.ops.wm.alembic_export(**{k: v for k, v in wanted.items() if k in known})
            if "FINISHED" not in result:
                raise BakeError("filepath", f"Alembic export to {path} failed")
    finally:
        for ob in view_layer.objects:
            ob.select_set(ob in selected)
        view_layer.objects.active = active
    if not os.path.isfile(path):
        raise BakeError("filepath", f"Alembic export did not write {path}")
