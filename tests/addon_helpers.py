"""Shared helpers of the add-on tests (headless bpy 5.0.1): a fresh file, driving the session's
poll step, a checking stand-in for ``UILayout`` and snapshots of the user's scene."""

from __future__ import annotations

import hashlib
import time

import bpy
import numpy as np


def fresh_file() -> None:
    """An empty factory file (registered add-on classes survive)."""
    bpy.ops.wm.read_factory_settings(use_empty=True)


def drive(session, until, timeout: float = 30.0, sleep: float = 0.005) -> None:
    """Call ``session.poll_step()`` (what the timer does) until ``until()`` or the timeout."""
    t0 = time.monotonic()
    while not until():
        if time.monotonic() - t0 > timeout:
            raise TimeoutError(f"session still {session.ui_state} / {session.job.phase if session.job else None} "
                               f"after {timeout} s; notice: {session.notice}")
        session.poll_step()
        time.sleep(sleep)


def mesh_digest(obj) -> str:
    """A hash of a mesh object's data that changes with any vertex, face, modifier or transform change."""
    me = obj.data
    co = np.empty(len(me.vertices) * 3, np.float32)
    me.vertices.foreach_get("co", co)
    loops = np.empty(len(me.loops), np.int32)
    me.loops.foreach_get("vertex_index", loops)
    h = hashlib.sha256()
    h.update(co.tobytes())
    h.update(loops.tobytes())
    h.update(np.array(obj.matrix_world, np.float64).tobytes())
    h.update(repr([(m.name, m.type) for m in obj.modifiers]).encode())
    h.update(repr(me.shape_keys is not None).encode())
    h.update(repr([m.name if m else None for m in me.materials]).encode())
    h.update(obj.name.encode() + me.name.encode())
    return h.hexdigest()


RENDER_FIELDS = ("engine", "resolution_x", "resolution_y", "resolution_percentage", "film_transparent", "filepath",
                 "use_compositing", "use_sequencer")


def scene_snapshot(scene=None) -> dict:
    """What Generate must leave alone in the user's scene (the import later sets fps/range on purpose)."""
    scene = scene or bpy.context.scene
    r = scene.render
    view_layer = bpy.context.view_layer
    return {
        "render": {f: getattr(r, f) for f in RENDER_FIELDS},
        "format": (r.image_settings.file_format, r.image_settings.color_mode),
        "view": (scene.view_settings.view_transform, scene.view_settings.look),
        "frame": (scene.frame_current, scene.frame_start, scene.frame_end, r.fps, r.fps_base),
        "camera": scene.camera.name if scene.camera else None,
        "world": scene.world.name if scene.world else None,
        "selected": sorted(o.name for o in view_layer.objects if o.select_get()),
        "active": view_layer.objects.active.name if view_layer.objects.active else None,
        "window_scene": bpy.context.window.scene.name if bpy.context.window else None,
        "scenes": sorted(s.name for s in bpy.data.scenes),
        "objects": sorted(o.name for o in bpy.data.objects),
        "cameras": len(bpy.data.cameras), "lights": len(bpy.data.lights), "worlds": len(bpy.data.worlds),
        "images": sorted(i.name for i in bpy.data.images  # Blender's own render buffer is not the user's
                         if not i.name.startswith("D² ") and i.type != "RENDER_RESULT"),
    }


def datablock_counts() -> dict:
    return {attr: len(getattr(bpy.data, attr)) for attr in
            ("objects", "meshes", "materials", "node_groups", "actions", "collections", "shape_keys", "scenes",
             "cameras", "lights", "worlds")}


# ------------------------------------------------------------------------------ UILayout stand-in


def _enum_ids(func: str, param: str) -> set[str]:
    return {i.identifier for i in bpy.types.UILayout.bl_rna.functions[func].parameters[param].enum_items}


class CheckingLayout:
    """Records what a panel draws and checks every call the way Blender would: properties exist on
    their data, operators are registered, icons are real icon names. ``calls`` lists (method, detail)."""

    ICONS = None

    def __init__(self, root=None):
        self.root = root or self
        if root is None:
            self.calls: list[tuple[str, str]] = []
            if CheckingLayout.ICONS is None:
                CheckingLayout.ICONS = _enum_ids("label", "icon")
        self.enabled = True
        self.alert = False
        self.active = True
        self.scale_y = 1.0
        self.scale_x = 1.0
        self.use_property_split = False
        self.use_property_decorate = True

    def _log(self, kind: str, detail: str) -> None:
        self.root.calls.append((kind, detail))

    def _icon(self, icon: str) -> None:
        assert icon in CheckingLayout.ICONS, f"unknown icon {icon!r}"

    def _child(self):
        return CheckingLayout(self.root)

    def row(self, align=False, heading=""):
        return self._child()

    def column(self, align=False, heading=""):
        return self._child()

    def box(self):
        return self._child()

    def split(self, factor=0.0, align=False):
        return self._child()

    def label(self, text="", icon="NONE", icon_value=0):
        self._icon(icon)
        self._log("label", text)

    def prop(self, data, prop, text=None, icon="NONE", expand=False, slider=False, toggle=-1, emboss=True, **kw):
        assert prop in data.bl_rna.properties, f"{type(data).__name__} has no property {prop!r}"
        self._icon(icon)
        self._log("prop", prop)

    def operator(self, idname, text=None, icon="NONE", **kw):
        module, name = idname.split(".")
        assert hasattr(getattr(bpy.ops, module), name), f"operator {idname} is not registered"
        getattr(getattr(bpy.ops, module), name).get_rna_type()  # raises if the operator is gone
        self._icon(icon)
        self._log("operator", idname)
        return _OperatorProps()

    def progress(self, text="", factor=0.0, type="BAR"):
        assert 0.0 <= factor <= 1.0, f"progress factor {factor} outside [0, 1]"
        assert type in ("BAR", "RING")
        self._log("progress", text)

    def template_icon(self, icon_value=0, scale=1.0):
        self._log("template_icon", str(icon_value))

    def separator(self, factor=1.0):
        pass


class _OperatorProps:
    def __setattr__(self, key, value):
        object.__setattr__(self, key, value)


class FakePanel:
    def __init__(self, layout):
        self.layout = layout


def draw_all_panels(context) -> list[tuple[str, str]]:
    """Draw every D² panel (those whose poll passes) and the status bar item; returns the calls."""
    from blender_addon import panel

    layout = CheckingLayout()
    for cls in panel.CLASSES:
        if hasattr(cls, "poll") and not cls.poll(context):
            continue
        layout.calls.append(("panel", cls.__name__))
        cls.draw(FakePanel(layout), context)
    layout.calls.append(("panel", "status_bar"))
    panel.draw_status_bar(FakePanel(layout), context)
    return layout.calls
