"""The turntable of the artist's mesh: what the add-on sends to the backend.

``capture_turntable`` normalises the active object into the unit sphere (remembering the similarity
transform), builds the orbit rig of ``protocol.cameras`` and renders exactly those cameras in a
temporary scene (``render.render_orbit``): the cameras sent with the job are the ones used to render.
It also takes the evaluated mesh's vertices (modifiers and shape keys applied) in normalised space,
whose motion the backend sends back per vertex, in the same order.
"""

from __future__ import annotations

from dataclasses import dataclass

import bpy
import numpy as np

from .render import (Normalisation, RenderSettings, bounding_sphere_normalisation, evaluated_local_vertices,
                     iter_render_orbit, run_steps)
from ._protocol import cameras as pcameras

MESH_LIKE = {"MESH", "CURVE", "SURFACE", "META", "FONT"}
"""Object types whose evaluated geometry is a mesh (what the turntable renders and the motion moves)."""


class CaptureError(Exception):
    """Why the active object cannot be captured; ``field`` names the setting or input at fault."""

    def __init__(self, field: str, message: str):
        self.field = field
        self.message = message
        super().__init__(message)


@dataclass
class Capture:
    """What one Generate sends and what the import needs to put the result back.

    images: uint8 RGBA [V, H, W, 4] (white background, A = coverage), one per camera of ``rig``;
    vertices: float32 [P, 3] evaluated vertices in normalised space (None when not sent);
    local_vertices: float32 [P, 3] the same vertices in the object's local space;
    matrix_world: float64 [4, 4] of the object when captured; norm: world -> normalised space.
    """

    object_name: str
    matrix_world: np.ndarray
    norm: Normalisation
    rig: "pcameras.OrbitRig"
    images: np.ndarray
    vertices: np.ndarray | None
    local_vertices: np.ndarray
    frame: float
    settings: RenderSettings

    @property
    def vertex_count(self) -> int:
        return int(self.local_vertices.shape[0])

    def to_local(self, normalised: np.ndarray) -> np.ndarray:
        """Points [..., 3] in normalised space -> the captured object's local space (float64)."""
        pts = np.asarray(normalised, dtype=np.float64)
        world = pts / self.norm.scale + np.asarray(self.norm.center)
        inv = np.linalg.inv(self.matrix_world)
        return world @ inv[:3, :3].T + inv[:3, 3]

    def local_scale(self) -> float:
        """Length of one normalised unit in the object's local space (mean over the three axes)."""
        axes = np.linalg.norm(np.linalg.inv(self.matrix_world)[:3, :3], axis=0)
        return float(np.mean(axes)) / self.norm.scale


def check_object(obj) -> None:
    """Raise CaptureError unless ``obj`` is something the turntable can render and animate."""
    if obj is None:
        raise CaptureError("object", "Select a mesh object first: dsquare animates the active object")
    if obj.type not in MESH_LIKE:
        raise CaptureError("object", f"'{obj.name}' is a {obj.type.lower()}, not a mesh: select a mesh object")


def capture_turntable(obj, *, views: int, resolution: int, elevation_deg: float, settings: RenderSettings,
                      send_vertices: bool = True, progress=None) -> Capture:
    """Normalise ``obj`` into the unit sphere, render the V-camera orbit and take its vertices.

    The object, the user's scene (frame, selection, render settings, file paths) are left as they were.
    """
    return run_steps(iter_capture_turntable(obj, views=views, resolution=resolution, elevation_deg=elevation_deg,
                                            settings=settings, send_vertices=send_vertices), progress)


def iter_capture_turntable(obj, *, views: int, resolution: int, elevation_deg: float, settings: RenderSettings,
                           send_vertices: bool = True):
    """``capture_turntable`` one view per ``next()``: yields (views done, V), returns the Capture.
    Raises CaptureError (before rendering anything) for an object that cannot be captured."""
    check_object(obj)
    depsgraph = bpy.context.evaluated_depsgraph_get()
    local = evaluated_local_vertices(obj, depsgraph)
    if local.shape[0] == 0:
        raise CaptureError("object", f"'{obj.name}' has no vertices to render")
    mw = np.array(obj.evaluated_get(depsgraph).matrix_world, dtype=np.float64)
    world = local @ mw[:3, :3].T + mw[:3, 3]
    try:
        norm = bounding_sphere_normalisation(world)
    except ValueError as exc:
        raise CaptureError("object", f"'{obj.name}': {exc}") from None
    try:
        rig = pcameras.orbit_rig(int(views), int(resolution), elevation_deg=float(elevation_deg))
    except ValueError as exc:
        raise CaptureError("views", str(exc)) from None
    settings = RenderSettings(resolution=int(resolution), engine=settings.engine, samples=settings.samples,
                              color_type=settings.color_type, extra=dict(settings.extra))
    scene = bpy.context.scene
    frame = scene.frame_current + scene.frame_subframe
    vertices = norm.to_normalised(world).astype(np.float32) if send_vertices else None
    name = obj.name
    images = yield from iter_render_orbit([obj], rig.K, rig.w2c, settings=settings, norm=norm)
    return Capture(object_name=name, matrix_world=mw, norm=norm, rig=rig, images=images[:, 0], vertices=vertices,
                   local_vertices=local.astype(np.float32), frame=frame, settings=settings)
