"""Turntable / orbit rendering in a temporary scene (pure bpy; no add-on registration needed).

Used by the add-on (turntable of the artist's mesh), by ``scripts/make_dataset.py`` (training data)
and ``scripts/render_gt.py`` (synchronized ground truth), so all three render identically:
white background, RGBA (A = coverage), cameras from ``protocol.cameras`` (OpenCV convention).

The user's scene is never modified: rendering happens in a new scene that links the objects, and
the object is normalised into the unit sphere by moving the *cameras* (a similarity transform of
the whole setup leaves the image unchanged), never the object.
"""

from __future__ import annotations

import math
import os
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Iterable, Sequence

import bpy
import numpy as np
from mathutils import Matrix

ENGINES = {"WORKBENCH": "BLENDER_WORKBENCH", "CYCLES": "CYCLES"}


@dataclass(frozen=True)
class Normalisation:
    """normalised = (world - center) * scale; the object then lies inside the unit sphere."""

    center: tuple[float, float, float]
    scale: float

    def to_normalised(self, points: np.ndarray) -> np.ndarray:
        return (np.asarray(points, dtype=np.float64) - np.asarray(self.center)) * self.scale

    def to_world(self, points: np.ndarray) -> np.ndarray:
        return np.asarray(points, dtype=np.float64) / self.scale + np.asarray(self.center)

    def matrix(self) -> np.ndarray:
        """4x4 world -> normalised."""
        m = np.eye(4) * self.scale
        m[3, 3] = 1.0
        m[:3, 3] = -self.scale * np.asarray(self.center)
        return m


@dataclass
class RenderSettings:
    """engine: 'WORKBENCH' (fast, flat studio shading) or 'CYCLES' (quality); resolution in pixels."""

    resolution: int = 64
    engine: str = "WORKBENCH"
    samples: int = 16
    color_type: str = "TEXTURE"  # Workbench: base-colour textures where present, else material colour
    extra: dict = field(default_factory=dict)


def evaluated_local_vertices(obj, depsgraph=None) -> np.ndarray:
    """float64 [P, 3] vertices of the evaluated object (modifiers, shape keys, skinning) in its local space."""
    depsgraph = depsgraph or bpy.context.evaluated_depsgraph_get()
    ev = obj.evaluated_get(depsgraph)
    mesh = ev.to_mesh()
    try:
        co = np.empty(len(mesh.vertices) * 3, dtype=np.float32)
        mesh.vertices.foreach_get("co", co)
    finally:
        ev.to_mesh_clear()
    return co.reshape(-1, 3).astype(np.float64)


def evaluated_vertices(obj, depsgraph=None) -> np.ndarray:
    """World-space positions [P, 3] of a mesh object's evaluated vertices (modifiers, shape keys, skinning)."""
    depsgraph = depsgraph or bpy.context.evaluated_depsgraph_get()
    co = evaluated_local_vertices(obj, depsgraph)
    mw = np.array(obj.evaluated_get(depsgraph).matrix_world)
    return co @ mw[:3, :3].T + mw[:3, 3]


def bounding_sphere_normalisation(points: np.ndarray) -> Normalisation:
    """Centre = bounding-box centre, scale = 1 / farthest point's distance (so the object fits the unit sphere)."""
    points = np.asarray(points, dtype=np.float64).reshape(-1, 3)
    if points.shape[0] == 0:
        raise ValueError("object has no vertices to normalise")
    center = 0.5 * (points.min(0) + points.max(0))
    radius = float(np.linalg.norm(points - center, axis=1).max())
    if radius <= 0 or not math.isfinite(radius):
        raise ValueError("object has zero size; cannot normalise it")
    return Normalisation(tuple(float(c) for c in center), 1.0 / radius)


def _dependencies(objects: Iterable) -> list:
    """Objects plus what their evaluation needs (parents, armature/deform modifier targets)."""
    out, stack = [], list(objects)
    while stack:
        ob = stack.pop()
        if ob is None or ob in out:
            continue
        out.append(ob)
        stack.append(ob.parent)
        for mod in getattr(ob, "modifiers", []):
            target = getattr(mod, "object", None)
            if target is not None:
                stack.append(target)
    return out


@contextmanager
def temporary_scene(objects: Sequence, settings: RenderSettings, name: str = "dsquare_render"):
    """A new scene linking ``objects`` (and their dependencies) with white-background render settings.

    Yields the scene; on exit removes it with everything it created. The window's scene, the objects'
    data and every other scene's settings are left untouched.
    """
    window = bpy.context.window
    previous = window.scene if window is not None else None
    scene = bpy.data.scenes.new(name)
    created_objects, created_data = [], []
    try:
        for ob in _dependencies(objects):
            scene.collection.objects.link(ob)
        world = bpy.data.worlds.new(name + "_world")
        created_data.append(world)
        world.color = (1.0, 1.0, 1.0)
        if bpy.app.version < (5, 0, 0):
            world.use_nodes = False  # the plain world colour lights the scene
        elif world.node_tree is not None:  # 5.0+: worlds always use nodes; light with white
            for node in world.node_tree.nodes:
                if node.type == "BACKGROUND":
                    node.inputs["Color"].default_value = (1.0, 1.0, 1.0, 1.0)
        scene.world = world
        r = scene.render
        r.engine = ENGINES[settings.engine.upper()]
        r.resolution_x = r.resolution_y = int(settings.resolution)
        r.resolution_percentage = 100
        r.pixel_aspect_x = r.pixel_aspect_y = 1.0
        r.film_transparent = True
        r.image_settings.file_format = "PNG"
        r.image_settings.color_mode = "RGBA"
        r.image_settings.color_depth = "8"
        r.use_compositing = False
        r.use_sequencer = False
        scene.view_settings.view_transform = "Standard"
        scene.view_settings.look = "None"
        scene.view_settings.exposure = 0.0
        scene.view_settings.gamma = 1.0
        scene.display_settings.display_device = "sRGB"
        if r.engine == "BLENDER_WORKBENCH":
            sh = scene.display.shading
            sh.light = "STUDIO"
            sh.studio_light = "Default"
            sh.use_world_space_lighting = True  # shading fixed in world space: the same from every view
            sh.color_type = settings.color_type
            sh.show_cavity = False
            sh.show_shadows = False
            sh.show_specular_highlight = False
            sh.show_object_outline = False
            sh.show_backface_culling = False
            scene.display.render_aa = "8"
        else:
            scene.cycles.samples = int(settings.samples)
            scene.cycles.device = "CPU"
            scene.cycles.use_denoising = False
            for idx, (rot, energy) in enumerate((((0.6, 0.2, -0.8), 3.0), ((1.1, 0.0, 2.4), 1.5))):
                light = bpy.data.lights.new(f"{name}_sun{idx}", "SUN")
                light.energy = energy
                created_data.append(light)
                lob = bpy.data.objects.new(f"{name}_sun{idx}", light)
                lob.rotation_euler = rot
                scene.collection.objects.link(lob)
                created_objects.append(lob)
        cam_data = bpy.data.cameras.new(name + "_cam")
        created_data.append(cam_data)
        cam = bpy.data.objects.new(name + "_cam", cam_data)
        scene.collection.objects.link(cam)
        created_objects.append(cam)
        scene.camera = cam
        yield scene
    finally:
        if window is not None and previous is not None and window.scene != previous:
            window.scene = previous
        for ob in created_objects:
            bpy.data.objects.remove(ob, do_unlink=True)
        bpy.data.scenes.remove(scene)
        # The "Render Result" image that rendering creates stays, as after any render in Blender: the
        # render pipeline swaps results in and out of its slots, and a CI run that removed it here segfaulted
        # in a later render.
        for block in created_data:
            coll = {"World": bpy.data.worlds, "Camera": bpy.data.cameras}.get(type(block).__name__, bpy.data.lights)
            if block.users == 0:
                coll.remove(block)


def set_camera(scene, K: np.ndarray, w2c: np.ndarray, width: int, height: int, norm: Normalisation | None = None) -> None:
    """Place the scene camera so that it renders exactly like the OpenCV camera (K, w2c) in
    normalised space (w2c maps normalised points); ``norm`` maps the real object into that space."""
    cam = scene.camera
    c2w = np.linalg.inv(np.asarray(w2c, dtype=np.float64))
    rot = c2w[:3, :3] @ np.diag([1.0, -1.0, -1.0])  # OpenCV (x right, y down, z fwd) -> Blender (-z fwd, y up)
    pos = c2w[:3, 3]
    if norm is not None:
        pos = norm.to_world(pos[None])[0]
    m = np.eye(4)
    m[:3, :3] = rot
    m[:3, 3] = pos
    cam.matrix_world = Matrix(m.tolist())
    data = cam.data
    data.type = "PERSP"
    data.sensor_fit = "HORIZONTAL"
    data.sensor_width = 36.0
    data.lens = float(K[0, 0]) * 36.0 / width
    # Principal point offset from the image centre (pixel-centre coordinates), in units of the width.
    data.shift_x = -(float(K[0, 2]) - (width - 1) / 2.0) / width
    data.shift_y = (float(K[1, 2]) - (height - 1) / 2.0) / width
    dist = float(np.linalg.norm(c2w[:3, 3]))
    scale = 1.0 if norm is None else 1.0 / norm.scale
    data.clip_start = max(1e-4, (dist - 2.0) * 0.5) * scale
    data.clip_end = (dist + 2.0) * 2.0 * scale


def render_image(scene, path: str | None = None) -> np.ndarray:
    """Render the scene's camera; returns uint8 [H, W, 4]: RGB composited over white, A = coverage."""
    own = path is None
    if own:
        fd, path = tempfile.mkstemp(suffix=".png", prefix="dsquare_")
        os.close(fd)
    try:
        scene.render.filepath = path
        # Render the scene as the context's scene: with ``render(scene=...)`` Blender 5.0 evaluates
        # animation at the *window* scene's frame, not at this scene's frame.
        with bpy.context.temp_override(scene=scene):
            bpy.ops.render.render(write_still=True)
        img = bpy.data.images.load(path, check_existing=False)
        try:
            w, h = img.size
            px = np.empty(w * h * 4, dtype=np.float32)
            img.pixels.foreach_get(px)
        finally:
            bpy.data.images.remove(img)
        rgba = px.reshape(h, w, 4)[::-1]  # Blender stores rows bottom-up
        a = rgba[..., 3:4]
        rgb = rgba[..., :3] * a + (1.0 - a)  # straight alpha over white
        out = np.concatenate([rgb, a], axis=-1)
        return np.clip(np.round(out * 255.0), 0, 255).astype(np.uint8)
    finally:
        if own and os.path.exists(path):
            os.remove(path)


def run_steps(steps, progress=None):
    """Run a step generator (yielding (done, total), returning its result) to its end in one call,
    passing each step to ``progress(done, total)``; returns the generator's result."""
    while True:
        try:
            done, total = next(steps)
        except StopIteration as stop:
            return stop.value
        if progress is not None:
            progress(done, total)


def render_orbit(objects: Sequence, K: np.ndarray, w2c: np.ndarray, *, settings: RenderSettings,
                 norm: Normalisation, frames: Sequence[float] | None = None, progress=None) -> np.ndarray:
    """Render every camera (K [V,3,3], w2c [V,4,4] in normalised space) at every frame.

    frames: scene frame numbers (fractional allowed); None renders the current state once (the
    context scene's current frame, as the user sees it). The context scene is re-evaluated at its own
    frame afterwards, so the shared objects show the user's frame again.
    Returns uint8 [V, F, H, W, 4] (F = 1 when frames is None).
    """
    return run_steps(iter_render_orbit(objects, K, w2c, settings=settings, norm=norm, frames=frames), progress)


def iter_render_orbit(objects: Sequence, K: np.ndarray, w2c: np.ndarray, *, settings: RenderSettings,
                      norm: Normalisation, frames: Sequence[float] | None = None):
    """``render_orbit`` one image per ``next()``: yields (images done, total); returns the images
    uint8 [V, F, H, W, 4] as the generator's value. Closing the generator early removes the
    temporary scene (so a modal operator can render between UI events and stop on Esc)."""
    K = np.asarray(K, dtype=np.float64).reshape(-1, 3, 3)
    w2c = np.asarray(w2c, dtype=np.float64).reshape(-1, 4, 4)
    res = int(settings.resolution)
    user_scene = bpy.context.scene
    current = user_scene.frame_current + user_scene.frame_subframe
    frame_list = [None] if frames is None else list(frames)
    out = np.zeros((w2c.shape[0], len(frame_list), res, res, 4), dtype=np.uint8)
    total = len(frame_list) * w2c.shape[0]
    try:
        with temporary_scene(objects, settings) as scene:
            for fi, frame in enumerate(frame_list):
                _set_frame(scene, current if frame is None else frame)
                for v in range(w2c.shape[0]):
                    set_camera(scene, K[v], w2c[v], res, res, norm)
                    out[v, fi] = render_image(scene)
                    yield fi * w2c.shape[0] + v + 1, total
    finally:
        if frames is not None:  # evaluating other frames wrote animated values into the shared objects
            try:
                _set_frame(user_scene, current)
            except ReferenceError:  # the scene went away meanwhile
                pass
    return out


def _set_frame(scene, frame: float) -> None:
    whole = math.floor(frame)
    scene.frame_set(int(whole), subframe=float(frame - whole))
