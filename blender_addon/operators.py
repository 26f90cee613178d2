"""Operators behind the D² panel's buttons."""

from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager

import bpy
from bpy.props import BoolProperty, EnumProperty, StringProperty
from bpy_extras.io_utils import ExportHelper

from . import bake, samples, session as session_mod
from ._protocol import messages as pmsg
from .clip import ClipError, load_clip
from .props import fit_to_limits, limit_problems
from .turntable import CaptureError, check_object, iter_capture_turntable

ROLE = "dsquare_role"  # custom property on imported objects: 'points' or 'mesh'


@contextmanager
def reporting_to(session, op):
    """While an operator runs, the session's notices go to the operator's own report."""
    previous = session.reporter
    session.reporter = lambda level, text: op.report({level}, text)
    try:
        yield
    finally:
        session.reporter = previous


class DSQUARE_OT_report(bpy.types.Operator):
    """Show a dsquare message in the status bar (used by the background timer)"""

    bl_idname = "dsquare.report"
    bl_label = "D² Message"
    bl_options = {"INTERNAL"}

    level: EnumProperty(items=[("INFO", "Info", ""), ("WARNING", "Warning", ""), ("ERROR", "Error", "")], default="INFO")
    message: StringProperty()

    def execute(self, context):
        self.report({self.level}, self.message)
        return {"FINISHED"}


class DSQUARE_OT_connect(bpy.types.Operator):
    """Connect to the dsquare backend and read its models and limits"""

    bl_idname = "dsquare.connect"
    bl_label = "Connect"
    bl_options = {"REGISTER"}

    def execute(self, context):
        session = session_mod.get()
        with reporting_to(session, self):
            ok = session.connect(context.scene.dsquare.server)
        return {"FINISHED"} if ok else {"CANCELLED"}


class DSQUARE_OT_disconnect(bpy.types.Operator):
    """Disconnect from the backend (a running job is cancelled)"""

    bl_idname = "dsquare.disconnect"
    bl_label = "Disconnect"
    bl_options = {"REGISTER"}

    def execute(self, context):
        session = session_mod.get()
        if session.busy:
            session.cancel()
        session.disconnect(cancel_jobs=True)
        return {"FINISHED"}


class DSQUARE_OT_dismiss(bpy.types.Operator):
    """Hide this message"""

    bl_idname = "dsquare.dismiss"
    bl_label = "Dismiss"
    bl_options = {"INTERNAL"}

    def execute(self, context):
        session_mod.get().dismiss()
        return {"FINISHED"}


class DSQUARE_OT_fit_to_backend(bpy.types.Operator):
    """Change views, frames, resolution and the other settings to values the connected backend accepts"""

    bl_idname = "dsquare.fit_to_backend"
    bl_label = "Use Backend Limits"
    bl_options = {"REGISTER", "UNDO"}

    @classmethod
    def poll(cls, context):
        return session_mod.get().welcome is not None

    def execute(self, context):
        changed = fit_to_limits(context.scene.dsquare, session_mod.get().welcome.limits)
        self.report({"INFO"}, "Set " + ", ".join(changed) if changed else "Settings already fit the backend")
        return {"FINISHED"}


class DSQUARE_OT_generate(bpy.types.Operator):
    """Render a turntable of the active mesh, send it to the backend and import the animation it sends back"""

    bl_idname = "dsquare.generate"
    bl_label = "Generate"
    bl_options = {"REGISTER"}

    @classmethod
    def poll(cls, context):
        return not session_mod.get().busy

    # One button, two ways to run: from the UI (invoke) the turntable renders one view per modal
    # timer event, so the window redraws, shows progress and Esc/Cancel stop it; from scripts and
    # in background mode (execute) it renders in one go. Both use the same steps.

    def execute(self, context):
        session = session_mod.get()
        with reporting_to(session, self):
            prepared = self._prepare(context, session)
            if prepared is None:
                return {"CANCELLED"}
            steps, reference = prepared
            wm = context.window_manager
            wm.progress_begin(0, int(context.scene.dsquare.views))
            try:
                while True:
                    try:
                        done, _ = next(steps)
                    except StopIteration as stop:
                        capture = stop.value
                        break
                    wm.progress_update(done)
            except (CaptureError, ClipError) as exc:
                session._notify("ERROR", "Cannot start: " + exc.message, "", exc.field)
                return {"CANCELLED"}
            except Exception as exc:  # a render that fails: say so, leave nothing behind
                steps.close()
                session._notify("ERROR", "The turntable could not be rendered", repr(exc), "render")
                return {"CANCELLED"}
            finally:
                wm.progress_end()
                session.rendering = None
            return self._submit(context, session, capture, reference)

    def invoke(self, context, event):
        if bpy.app.background or context.window is None:
            return self.execute(context)
        session = session_mod.get()
        with reporting_to(session, self):
            prepared = self._prepare(context, session)
        if prepared is None:
            return {"CANCELLED"}
        self._steps, self._reference = prepared
        wm = context.window_manager
        wm.progress_begin(0, int(context.scene.dsquare.views))
        self._timer = wm.event_timer_add(0.001, window=context.window)
        wm.modal_handler_add(self)
        return {"RUNNING_MODAL"}

    def _finish_modal(self, context) -> None:
        wm = context.window_manager
        wm.event_timer_remove(self._timer)
        wm.progress_end()
        session_mod.get().rendering = None
        session_mod.get()._tag_redraw()

    def modal(self, context, event):
        session = session_mod.get()
        if event.type == "ESC" or session.rendering is None:  # Esc, or Cancel pressed in the panel
            self._steps.close()  # removes the temporary scene
            self._finish_modal(context)
            self.report({"INFO"}, "D²: turntable cancelled")
            return {"CANCELLED"}
        if event.type != "TIMER" or event.timer is not self._timer:
            # other input waits: the object must not change under the camera while the views render
            # (the window still redraws; Esc cancels)
            return {"RUNNING_MODAL"}
        with reporting_to(session, self):
            try:
                done, total = next(self._steps)
            except StopIteration as stop:
                self._finish_modal(context)
                return self._submit(context, session, stop.value, self._reference)
            except (CaptureError, ClipError) as exc:
                self._finish_modal(context)
                session._notify("ERROR", "Cannot start: " + exc.message, "", exc.field)
                return {"CANCELLED"}
            except Exception as exc:  # never leave the modal handler and its timer behind
                self._steps.close()
                self._finish_modal(context)
                session._notify("ERROR", "The turntable could not be rendered", repr(exc), "render")
                return {"CANCELLED"}
        session.rendering = (done, total)
        context.window_manager.progress_update(done)
        session._tag_redraw()
        return {"RUNNING_MODAL"}

    def _prepare(self, context, session):
        """Check everything that can be checked before rendering; returns (render steps, reference) or None."""
        settings = context.scene.dsquare
        if session.busy:
            session._notify("ERROR", "A generation is already running: cancel it first", "", "job")
            return None
        obj = context.active_object
        try:
            check_object(obj)
        except CaptureError as exc:
            session._notify("ERROR", exc.message, "", exc.field)
            return None
        if obj.mode == "EDIT":
            obj.update_from_editmode()
        limits = session.welcome.limits if session.welcome is not None else None
        problems = limit_problems(settings, limits)
        if problems:
            session._notify("ERROR", "Some settings are beyond what the backend allows",
                            "; ".join(msg for _, msg in problems), problems[0][0])
            return None
        reference = None
        try:
            if settings.mode == "video":
                reference = load_clip(settings.clip_path, int(settings.frames), int(settings.resolution),
                                      int(settings.clip_start))
        except ClipError as exc:
            session._notify("ERROR", "Cannot start: " + exc.message, "", exc.field)
            return None
        steps = iter_capture_turntable(obj, views=int(settings.views), resolution=int(settings.resolution),
                                       elevation_deg=float(settings.elevation), settings=settings.render_settings(),
                                       send_vertices=settings.transfer_motion)
        session.notice = None
        session.rendering = (0, int(settings.views))
        return steps, reference

    def _submit(self, context, session, capture, reference):
        settings = context.scene.dsquare
        limits = session.welcome.limits if session.welcome is not None else None
        vertices = capture.vertices
        if vertices is not None and limits is not None and vertices.shape[0] > limits.max_vertices:
            session._notify("WARNING", "Your mesh is too dense for motion transfer: only the point cloud will come back",
                            f"vertices: {vertices.shape[0]} (limit: {limits.max_vertices})", "vertices")
            vertices = None
        submit = pmsg.Submit(job_id=pmsg.new_job_id(), mode=settings.mode, turntable=capture.images,
                             cameras=pmsg.Cameras.from_rig(capture.rig), options=settings.options(),
                             reference=reference, vertices=vertices)
        with reporting_to(session, self):
            if not session.start_job(submit, capture, settings.import_prefs(), settings.server, context.scene):
                return {"CANCELLED"}
        self.report({"INFO"}, f"D²: generating motion for '{capture.object_name}'…")
        return {"FINISHED"}


class DSQUARE_OT_cancel(bpy.types.Operator):
    """Cancel the running generation (nothing is imported)"""

    bl_idname = "dsquare.cancel"
    bl_label = "Cancel"
    bl_options = {"REGISTER"}

    @classmethod
    def poll(cls, context):
        return session_mod.get().busy

    def execute(self, context):
        session = session_mod.get()
        with reporting_to(session, self):
            session.cancel()
        return {"FINISHED"}


def result_objects(context) -> tuple[list, object | None]:
    """(every D² object of the active result, its animated mesh or None): the active object's
    result collection when it is a D² object, else the session's last import."""
    active = context.active_object
    names = []
    if active is not None and active.get(ROLE):
        for coll in active.users_collection:
            names = [ob.name for ob in coll.objects if ob.get(ROLE)]
            if names:
                break
    if not names:
        outcome = session_mod.get().outcome
        if outcome is not None:
            names = [n for n in (outcome.point_cloud, outcome.animated_mesh) if n]
    objects = [bpy.data.objects[n] for n in names if n in bpy.data.objects]
    mesh = next((ob for ob in objects if ob.get(ROLE) == "mesh"), None)
    return objects, mesh


def animation_range(objects, scene) -> tuple[int, int]:
    """The frames the D² objects' keyed shape keys span (the scene's range when none are keyed)."""
    import math

    lo = hi = None
    for ob in objects:
        key = ob.data.shape_keys if ob.type == "MESH" else None
        action = key.animation_data.action if key is not None and key.animation_data is not None else None
        if action is not None:
            a, b = action.frame_range
            lo = a if lo is None else min(lo, a)
            hi = b if hi is None else max(hi, b)
    if lo is None:
        return int(scene.frame_start), int(scene.frame_end)
    return int(math.floor(lo)), int(math.ceil(hi))


def default_bake_path(name: str, ext: str) -> str:
    safe = bpy.path.clean_name(name) or "dsquare"
    if bpy.data.filepath:
        return bpy.path.abspath(f"//dsquare/{safe}{ext}")
    return os.path.join(tempfile.gettempdir(), "dsquare", safe + ext)


class DSQUARE_OT_bake_alembic(bpy.types.Operator, ExportHelper):
    """Export the animated point cloud and mesh to an Alembic file (one sample per frame of the animation)"""

    bl_idname = "dsquare.bake_alembic"
    bl_label = "Bake Alembic"
    bl_options = {"REGISTER"}
    filename_ext = ".abc"
    filter_glob: StringProperty(default="*.abc", options={"HIDDEN"})

    @classmethod
    def poll(cls, context):
        return bool(result_objects(context)[0])

    def invoke(self, context, event):
        objects, mesh = result_objects(context)
        self.filepath = default_bake_path((mesh or objects[0]).name, ".abc")
        return super().invoke(context, event)

    def execute(self, context):
        objects, mesh = result_objects(context)
        if not self.filepath:
            self.filepath = default_bake_path((mesh or objects[0]).name, ".abc")
        first, last = animation_range(objects, context.scene)
        try:
            bake.export_alembic(objects, bpy.path.abspath(self.filepath), first, last)
        except bake.BakeError as exc:
            self.report({"ERROR"}, f"Alembic bake failed: {exc.message}")
            return {"CANCELLED"}
        self.report({"INFO"}, f"Baked {len(objects)} object(s), frames {first}-{last}, to {self.filepath}")
        return {"FINISHED"}


class DSQUARE_OT_bake_pc2(bpy.types.Operator, ExportHelper):
    """Bake the animated mesh's motion to a PC2 point cache for the Mesh Cache modifier"""

    bl_idname = "dsquare.bake_pc2"
    bl_label = "Bake PC2"
    bl_options = {"REGISTER", "UNDO"}
    filename_ext = ".pc2"
    filter_glob: StringProperty(default="*.pc2", options={"HIDDEN"})
    add_modifier: BoolProperty(name="Add Mesh Cache Modifier", default=False,
                               description="Also add a Mesh Cache modifier reading the file to the animated mesh")

    @classmethod
    def poll(cls, context):
        return result_objects(context)[1] is not None

    def invoke(self, context, event):
        self.filepath = default_bake_path(result_objects(context)[1].name, ".pc2")
        return super().invoke(context, event)

    def execute(self, context):
        _, mesh = result_objects(context)
        if not self.filepath:
            self.filepath = default_bake_path(mesh.name, ".pc2")
        scene = context.scene
        path = bpy.path.abspath(self.filepath)
        first, last = animation_range([mesh], scene)
        try:
            cache = bake.bake_pc2(mesh, path, first, last, scene)
        except (bake.BakeError, OSError) as exc:
            self.report({"ERROR"}, f"PC2 bake failed: {getattr(exc, 'message', exc)}")
            return {"CANCELLED"}
        if self.add_modifier:
            bake.attach_pc2(mesh, self.filepath, first)
        self.report({"INFO"}, f"Baked {cache.positions.shape[0]} frames x {cache.positions.shape[1]} vertices to {self.filepath}")
        return {"FINISHED"}


class DSQUARE_OT_show_colours(bpy.types.Operator):
    """Switch this window's 3D views to Material Preview, where the point cloud shows its per-point
    colours (Solid shading shows their average)"""

    bl_idname = "dsquare.show_colours"
    bl_label = "Show Point Colours"
    bl_options = {"REGISTER"}

    def execute(self, context):
        count = 0
        screen = context.screen
        for area in (screen.areas if screen is not None else []):
            if area.type == "VIEW_3D":
                for space in area.spaces:
                    if space.type == "VIEW_3D":
                        space.shading.type = "MATERIAL"
                        count += 1
        self.report({"INFO"}, f"Material Preview in {count} 3D view(s)")
        return {"FINISHED"}


class DSQUARE_OT_add_sample(bpy.types.Operator):
    """Add dsquare's sample mesh (a small flower) at the 3D cursor, to try the add-on"""

    bl_idname = "dsquare.add_sample"
    bl_label = "Add Sample Mesh"
    bl_options = {"REGISTER", "UNDO"}

    def execute(self, context):
        obj = samples.add_sample(context, location=tuple(context.scene.cursor.location))
        self.report({"INFO"}, f"Added '{obj.name}'")
        return {"FINISHED"}


CLASSES = (DSQUARE_OT_report, DSQUARE_OT_connect, DSQUARE_OT_disconnect, DSQUARE_OT_dismiss, DSQUARE_OT_fit_to_backend,
           DSQUARE_OT_generate, DSQUARE_OT_cancel, DSQUARE_OT_bake_alembic, DSQUARE_OT_bake_pc2, DSQUARE_OT_show_colours,
           DSQUARE_OT_add_sample)
