"""The D² sidebar (3D View ▸ N panel ▸ tab "D²") and the status-bar progress.

Panels read the session's state and the scene's settings; they never change anything. Every state
draws: disconnected, connecting, connected, running, finished, error.
"""

from __future__ import annotations

import textwrap

import bpy

from . import previews, session as session_mod
from .props import limit_problems
from .turntable import MESH_LIKE

CATEGORY = "D²"
WRAP = 46


def wrapped(layout, text: str, icon: str = "NONE", alert: bool = False, width: int = WRAP) -> None:
    """Labels for long text, wrapped at ``width`` characters (the first line carries the icon)."""
    col = layout.column(align=True)
    col.alert = alert
    first = True
    for para in text.splitlines() or [""]:
        for line in textwrap.wrap(para, width) or [""]:
            col.label(text=line, icon=icon if first else "BLANK1")
            first = False


def draw_notice(layout, notice) -> None:
    box = layout.box()
    icon = {"ERROR": "ERROR", "WARNING": "ERROR", "INFO": "INFO"}.get(notice.level, "INFO")
    wrapped(box, notice.headline, icon=icon, alert=notice.level == "ERROR")
    if notice.detail:
        sub = box.column()
        sub.enabled = False  # greyed: the backend's own words
        wrapped(sub, notice.detail)
    box.operator("dsquare.dismiss", icon="X")


def progress_factor(session) -> float:
    if session.rendering is not None:
        done, total = session.rendering
        return min(1.0, done / max(1, total))
    return float(session.job.factor) if session.job is not None else 0.0


def draw_progress(layout, session, with_cancel: bool = True) -> None:
    job = session.job
    layout.progress(factor=progress_factor(session), type="BAR", text=session.status_text() or "Working…")
    if session.rendering is None and job is not None and job.message:
        sub = layout.column()
        sub.enabled = False
        wrapped(sub, job.message)
    if with_cancel:
        layout.operator("dsquare.cancel", icon="CANCEL")


class DSquarePanel:
    bl_space_type = "VIEW_3D"
    bl_region_type = "UI"
    bl_category = CATEGORY


class VIEW3D_PT_dsquare(DSquarePanel, bpy.types.Panel):
    """Connection to the backend and the current state."""

    bl_label = "Diffusion²"
    bl_idname = "VIEW3D_PT_dsquare"

    def draw(self, context):
        layout = self.layout
        settings = context.scene.dsquare
        session = session_mod.get()
        state = session.ui_state
        row = layout.row(align=True)
        row.prop(settings, "server", text="")
        if session.client is None:
            row.operator("dsquare.connect", text="", icon="LINKED")
        else:
            row.operator("dsquare.disconnect", text="", icon="UNLINKED")
        if session.connection == "connected":
            box = layout.box()
            col = box.column(align=True)
            col.label(text=f"Connected: {session.welcome.server}", icon="CHECKMARK")
            for line in session.welcome_summary():
                col.label(text=line, icon="BLANK1")
        elif session.connection == "connecting":
            layout.label(text="Connecting…", icon="SORTTIME")
        elif session.connection == "lost":
            layout.label(text="Connection lost: reconnecting…", icon="ERROR")
        else:
            layout.label(text="Not connected", icon="UNLINKED")
        if session.notice is not None:
            draw_notice(layout, session.notice)
        if state == "running":
            draw_progress(layout.box(), session)


class VIEW3D_PT_dsquare_generate(DSquarePanel, bpy.types.Panel):
    bl_label = "Generate"
    bl_idname = "VIEW3D_PT_dsquare_generate"
    bl_parent_id = "VIEW3D_PT_dsquare"

    def draw(self, context):
        layout = self.layout
        settings = context.scene.dsquare
        session = session_mod.get()
        obj = context.active_object
        if obj is None:
            layout.label(text="Select a mesh to animate", icon="INFO")
        elif obj.type not in MESH_LIKE:
            layout.label(text=f"'{obj.name}' is not a mesh", icon="ERROR")
        else:
            layout.label(text=obj.name, icon="MESH_DATA")
        layout.operator("dsquare.add_sample", icon="ADD")

        layout.prop(settings, "motion_source", expand=True)
        if settings.motion_source == "CLIP":
            col = layout.column(align=True)
            col.prop(settings, "clip_path")
            col.prop(settings, "clip_start")

        problems = dict(limit_problems(settings, session.welcome.limits if session.welcome else None))
        col = layout.column(align=True)
        for name in ("views", "frames", "resolution", "elevation"):
            row = col.row(align=True)
            row.alert = name in problems
            row.prop(settings, name)
        col = layout.column(align=True)
        col.prop(settings, "engine", text="")
        if settings.engine == "CYCLES":
            col.prop(settings, "cycles_samples")
        col = layout.column(align=True)
        for name in ("steps", "seed", "fps"):
            row = col.row(align=True)
            row.alert = name in problems
            row.prop(settings, name)
        if problems:
            box = layout.box()
            for message in problems.values():
                wrapped(box, message, icon="ERROR", alert=True)
            box.operator("dsquare.fit_to_backend", icon="CHECKMARK")

        row = layout.row(align=True)
        row.scale_y = 1.5
        if session.busy:
            row.operator("dsquare.cancel", icon="CANCEL")
        else:
            row.operator("dsquare.generate", icon="PLAY")


class VIEW3D_PT_dsquare_advanced(DSquarePanel, bpy.types.Panel):
    bl_label = "Advanced"
    bl_idname = "VIEW3D_PT_dsquare_advanced"
    bl_parent_id = "VIEW3D_PT_dsquare_generate"
    bl_options = {"DEFAULT_CLOSED"}

    def draw(self, context):
        layout = self.layout
        settings = context.scene.dsquare
        layout.use_property_split = True
        layout.use_property_decorate = False
        layout.prop(settings, "schedule")
        col = layout.column(align=True)
        from ._protocol import messages as pmsg

        for name in pmsg.SCHEDULES[settings.schedule]:
            col.prop(settings, name)
        layout.prop(settings, "combine")
        col = layout.column(align=True)
        col.prop(settings, "vrs_steps")
        sub = col.column(align=True)
        sub.enabled = settings.vrs_steps > 0
        sub.prop(settings, "vrs_repeats")
        layout.prop(settings, "use_model_guidance")
        row = layout.row()
        row.enabled = not settings.use_model_guidance
        row.prop(settings, "guidance")
        layout.prop(settings, "fit_iterations")


class VIEW3D_PT_dsquare_import(DSquarePanel, bpy.types.Panel):
    bl_label = "Import"
    bl_idname = "VIEW3D_PT_dsquare_import"
    bl_parent_id = "VIEW3D_PT_dsquare"
    bl_options = {"DEFAULT_CLOSED"}

    def draw(self, context):
        layout = self.layout
        settings = context.scene.dsquare
        col = layout.column(align=True)
        col.prop(settings, "transfer_motion")
        sub = col.column(align=True)
        sub.enabled = settings.transfer_motion
        sub.prop(settings, "hide_original")
        col.prop(settings, "match_scene_fps")
        col.prop(settings, "set_frame_range")
        layout.prop(settings, "point_size")


class VIEW3D_PT_dsquare_previews(DSquarePanel, bpy.types.Panel):
    bl_label = "Previews"
    bl_idname = "VIEW3D_PT_dsquare_previews"
    bl_parent_id = "VIEW3D_PT_dsquare"

    @classmethod
    def poll(cls, context):
        return any(previews.image_name(k) in bpy.data.images for k in ("turntable", "reference", "matrix"))

    def draw(self, context):
        layout = self.layout
        for kind in ("turntable", "reference", "matrix"):
            img = bpy.data.images.get(previews.image_name(kind))
            if img is None:
                continue
            layout.label(text=img.name, icon="IMAGE_DATA")
            icon_id = 0 if bpy.app.background else img.preview_ensure().icon_id
            if icon_id:
                layout.template_icon(icon_value=icon_id, scale=8.0)


class VIEW3D_PT_dsquare_result(DSquarePanel, bpy.types.Panel):
    bl_label = "Result"
    bl_idname = "VIEW3D_PT_dsquare_result"
    bl_parent_id = "VIEW3D_PT_dsquare"

    @classmethod
    def poll(cls, context):
        s = session_mod.get()
        return s.outcome is not None or (context.active_object is not None and bool(context.active_object.get("dsquare_role")))

    def draw(self, context):
        layout = self.layout
        session = session_mod.get()
        outcome = session.outcome
        if outcome is not None:
            col = layout.column(align=True)
            for name, icon in ((outcome.point_cloud, "POINTCLOUD_DATA"), (outcome.animated_mesh, "MESH_DATA")):
                if name:
                    col.label(text=name, icon=icon)
            job = session.job
            if job is not None and job.phase == "finished":
                scene = context.scene
                col.label(text=f"{job.result_frames} frames · scene {scene.frame_start}–{scene.frame_end} "
                               f"at {scene.render.fps / scene.render.fps_base:g} fps", icon="TIME")
                for key, value in sorted(job.metrics.items())[:4]:
                    col.label(text=f"{key}: {value:.4g}", icon="BLANK1")
        layout.operator("dsquare.show_colours", icon="SHADING_TEXTURE")
        row = layout.row(align=True)
        row.operator("dsquare.bake_alembic", icon="EXPORT")
        row.operator("dsquare.bake_pc2", icon="MOD_MESHDEFORM")


def draw_status_bar(self, context):
    """Appended to the status bar: progress of a running job, with Cancel."""
    session = session_mod.SESSION
    if session is None or not session.busy:
        return
    row = self.layout.row(align=True)
    row.label(text="D²")
    row.progress(factor=progress_factor(session), type="BAR", text=session.status_text() or "Working…")
    row.operator("dsquare.cancel", text="", icon="X")


CLASSES = (VIEW3D_PT_dsquare, VIEW3D_PT_dsquare_generate, VIEW3D_PT_dsquare_advanced, VIEW3D_PT_dsquare_import,
           VIEW3D_PT_dsquare_previews, VIEW3D_PT_dsquare_result)
