"""The D² settings stored with each scene (``scene.dsquare``) and how they become a job."""

from __future__ import annotations

import bpy
from bpy.props import BoolProperty, EnumProperty, FloatProperty, IntProperty, StringProperty

from .render import RenderSettings
from .session import ImportPrefs
from ._protocol import messages as pmsg

SCHEDULE_ITEMS = [
    ("logistic", "Logistic", "Multi-view share w rises along a logistic curve over the steps (the paper's default)"),
    ("constant", "Constant", "The same multi-view share w at every step"),
    ("linear", "Linear", "w goes linearly from start to end over the steps"),
    ("cosine", "Cosine", "w goes from start to end along a cosine"),
]


class DSquareSettings(bpy.types.PropertyGroup):
    server: StringProperty(
        name="Server", default="tcp://127.0.0.1:5557",
        description="Address of the dsquare backend (python -m backend serve), e.g. tcp://127.0.0.1:5557")
    motion_source: EnumProperty(
        name="Motion", default="GENERATE",
        items=[("GENERATE", "Generate", "Generate the motion from the front render with the video model"),
               ("CLIP", "Reference Clip", "Use a reference clip (image sequence or movie) as the front view's motion")])
    clip_path: StringProperty(name="Clip", subtype="FILE_PATH",
                              description="Reference clip: one image of a numbered sequence, a folder of images, or a movie")
    clip_start: IntProperty(name="Clip Start", default=0, min=0, description="First clip frame to use (0 = the first)")
    views: IntProperty(name="Views", default=8, min=1, max=64, description="Cameras on the orbit (V)")
    frames: IntProperty(name="Frames", default=8, min=1, max=256, description="Animation frames to generate (F)")
    resolution: IntProperty(name="Resolution", default=64, min=8, max=2048, subtype="PIXEL",
                            description="Side of the square turntable images, in pixels (the backend's models "
                                        "work at one size: 'Use Backend Limits' sets it)")
    elevation: FloatProperty(name="Elevation", default=10.0, min=-85.0, max=85.0, precision=1,
                             description="Orbit elevation in degrees (positive: cameras above the object)")
    engine: EnumProperty(
        name="Render", default="WORKBENCH",
        items=[("WORKBENCH", "Workbench (fast)", "Flat studio shading, about 0.03 s per view"),
               ("CYCLES", "Cycles (quality)", "Path traced, slower")])
    cycles_samples: IntProperty(name="Samples", default=16, min=1, max=4096, description="Cycles samples per view")
    steps: IntProperty(name="Steps", default=25, min=1, max=1000, description="Denoising steps")
    seed: IntProperty(name="Seed", default=0, min=0, description="Random seed: the same seed gives the same motion")
    fps: FloatProperty(name="FPS", default=8.0, min=0.1, max=240.0, description="Frames per second of the generated motion")
    # Advanced
    schedule: EnumProperty(name="Schedule", items=SCHEDULE_ITEMS, default="logistic",
                           description="How the multi-view model's share w changes over the steps")
    s0: FloatProperty(name="Midpoint s0", default=0.5, min=0.0, max=1.0, description="Logistic: where w crosses the middle (fraction of the steps)")
    k: FloatProperty(name="Steepness k", default=20.0, min=0.0, max=1000.0, description="Logistic: how sharply w rises")
    w_min: FloatProperty(name="w Min", default=0.0, min=0.0, max=1.0)
    w_max: FloatProperty(name="w Max", default=1.0, min=0.0, max=1.0)
    w: FloatProperty(name="w", default=0.5, min=0.0, max=1.0, description="Constant: the multi-view share")
    w_start: FloatProperty(name="w Start", default=0.0, min=0.0, max=1.0)
    w_end: FloatProperty(name="w End", default=1.0, min=0.0, max=1.0)
    combine: EnumProperty(
        name="Combine", default="convex",
        items=[("convex", "Convex", "w·multi-view + (1−w)·video (the paper)"),
               ("theorem", "Theorem", "rows + columns − one-image marginal")])
    vrs_steps: IntProperty(name="VRS Steps", default=0, min=0, max=1000, description="Repeat the first steps with re-noising (0 = off)")
    vrs_repeats: IntProperty(name="VRS Repeats", default=2, min=1, max=16)
    use_model_guidance: BoolProperty(name="Model's Own Guidance", default=True,
                                     description="Use each model's own classifier-free guidance (recommended)")
    guidance: FloatProperty(name="Guidance", default=2.5, min=0.0, max=50.0,
                            description="Classifier-free guidance scale (1 = off); used when Model's Own Guidance is off")
    fit_iterations: IntProperty(name="Fit Iterations", default=1000, min=0, max=100000,
                                description="4D Gaussian fitting iterations")
    # Import
    transfer_motion: BoolProperty(name="Animate My Mesh", default=True,
                                  description="Move a copy of your mesh with keyed shape keys (your original stays untouched)")
    hide_original: BoolProperty(name="Hide Original", default=True,
                                description="Hide the original object in the viewport once the animated copy is in")
    match_scene_fps: BoolProperty(name="Set Scene FPS", default=True,
                                  description="Set the scene's frame rate to the generated motion's (one key per frame); "
                                              "off: keep the scene's rate and spread the keys")
    set_frame_range: BoolProperty(name="Set Frame Range", default=True,
                                  description="Set the scene's frame range to the generated animation")
    point_size: FloatProperty(name="Point Size", default=1.0, min=0.0, max=100.0,
                              description="Multiplier of the point cloud's point radius")
    show_advanced: BoolProperty(name="Advanced", default=False)

    # ------------------------------------------------------------------------------ conversion

    def schedule_params(self) -> dict[str, float]:
        names = pmsg.SCHEDULES[self.schedule]
        return {name: float(getattr(self, name)) for name in names}

    def options(self) -> "pmsg.Options":
        return pmsg.Options(frames=int(self.frames), steps=int(self.steps), seed=int(self.seed), schedule=self.schedule,
                            schedule_params=self.schedule_params(), combine=self.combine, vrs_steps=int(self.vrs_steps),
                            vrs_repeats=int(self.vrs_repeats), guidance=None if self.use_model_guidance else float(self.guidance),
                            fit_iterations=int(self.fit_iterations), fps=float(self.fps), previews=True)

    def render_settings(self) -> RenderSettings:
        return RenderSettings(resolution=int(self.resolution), engine=self.engine, samples=int(self.cycles_samples))

    def import_prefs(self) -> ImportPrefs:
        return ImportPrefs(transfer_motion=self.transfer_motion, hide_original=self.hide_original,
                           match_scene_fps=self.match_scene_fps, set_frame_range=self.set_frame_range,
                           point_size=float(self.point_size))

    @property
    def mode(self) -> str:
        return "video" if self.motion_source == "CLIP" else "static3d"


def limit_problems(settings: DSquareSettings, limits) -> list[tuple[str, str]]:
    """(field, message) for every setting the connected backend would refuse; empty when all fit."""
    if limits is None:
        return []
    out = []
    if settings.views not in limits.views:
        out.append(("views", f"Views {settings.views}: this backend makes {', '.join(map(str, limits.views))}"))
    if settings.frames not in limits.frames:
        out.append(("frames", f"Frames {settings.frames}: this backend makes {', '.join(map(str, limits.frames))}"))
    if settings.resolution != limits.resolution:
        out.append(("resolution", f"Resolution {settings.resolution}: this backend works at {limits.resolution} px"))
    lo, hi = limits.elevation_deg
    if not lo <= settings.elevation <= hi:
        out.append(("elevation", f"Elevation {settings.elevation:g}°: allowed {lo:g}° to {hi:g}°"))
    if settings.steps > limits.max_steps:
        out.append(("steps", f"Steps {settings.steps}: at most {limits.max_steps}"))
    if settings.fit_iterations > limits.max_fit_iterations:
        out.append(("fit_iterations", f"Fit iterations {settings.fit_iterations}: at most {limits.max_fit_iterations}"))
    if settings.vrs_steps > settings.steps:
        out.append(("vrs_steps", f"VRS steps {settings.vrs_steps}: at most the number of steps ({settings.steps})"))
    mode = settings.mode
    if mode not in limits.modes:
        out.append(("motion_source", f"This backend does not take {mode} jobs (it takes {', '.join(limits.modes)})"))
    return out


def fit_to_limits(settings: DSquareSettings, limits) -> list[str]:
    """Move every out-of-range setting to the nearest allowed value; returns what changed."""
    changed = []

    def nearest(value: int, allowed) -> int:
        return min(allowed, key=lambda a: (abs(a - value), a))

    if settings.views not in limits.views:
        settings.views = nearest(settings.views, limits.views)
        changed.append(f"views {settings.views}")
    if settings.frames not in limits.frames:
        settings.frames = nearest(settings.frames, limits.frames)
        changed.append(f"frames {settings.frames}")
    if settings.resolution != limits.resolution:
        settings.resolution = int(limits.resolution)
        changed.append(f"resolution {settings.resolution}")
    lo, hi = limits.elevation_deg
    if not lo <= settings.elevation <= hi:
        settings.elevation = min(max(settings.elevation, lo), hi)
        changed.append(f"elevation {settings.elevation:g}")
    if settings.steps > limits.max_steps:
        settings.steps = int(limits.max_steps)
        changed.append(f"steps {settings.steps}")
    if settings.fit_iterations > limits.max_fit_iterations:
        settings.fit_iterations = int(limits.max_fit_iterations)
        changed.append(f"fit iterations {settings.fit_iterations}")
    return changed
