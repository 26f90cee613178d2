"""Checks of a decoded message's content against what the server advertised (``Limits``).

The codec guarantees types, dtypes and ranks; these checks add sizes, ranges and consistency.
The server runs them before queueing a job, the client before sending one, so that an artist
hears about a wrong frame count at once, not after a queue wait. Each failure raises
``ProtocolError`` naming the field (``turntable.shape``, ``options.steps``) and the limit.
"""

from __future__ import annotations

import math
import re

import numpy as np

from protocol.errors import ErrorCode, ProtocolError
from protocol.messages import COMBINE_MODES, MODES, SCHEDULES, Limits, Result, Submit

JOB_ID_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
MAX_SEED = 2**63 - 1
MAX_VRS_REPEATS = 16
MAX_GUIDANCE = 50.0
MAX_FPS = 240.0
MAX_COORD = 100.0


def _limit(field: str, message: str, limit: str, job_id: str = "") -> ProtocolError:
    return ProtocolError(ErrorCode.LIMIT_EXCEEDED, field, message, limit, job_id)


def _invalid(field: str, message: str, limit: str = "", job_id: str = "") -> ProtocolError:
    return ProtocolError(ErrorCode.INVALID_INPUT, field, message, limit, job_id)


def check_job_id(job_id: str) -> None:
    if not isinstance(job_id, str) or not JOB_ID_RE.match(job_id):
        raise _invalid("job_id", f"job ids are 1-64 characters of A-Z a-z 0-9 _ . -, got {str(job_id)[:80]!r}",
                       "1-64 of [A-Za-z0-9_.-]", job_id[:64] if isinstance(job_id, str) else "")


def _in_range(name: str, value: float, lo: float, hi: float, job_id: str) -> None:
    if not (isinstance(value, (int, float)) and math.isfinite(value)):
        raise _invalid(name, f"must be a finite number, got {value}", f"[{lo}, {hi}]", job_id)
    if not lo <= value <= hi:
        raise _limit(name, f"must be within [{lo}, {hi}], got {value}", f"[{lo}, {hi}]", job_id)


def check_submit(submit: Submit, limits: Limits) -> None:
    """Raise ProtocolError unless ``submit`` fits ``limits`` and is self-consistent."""
    check_job_id(submit.job_id)
    jid = submit.job_id
    if submit.mode not in MODES or submit.mode not in limits.modes:
        raise _invalid("mode", f"unknown or unsupported mode {submit.mode[:32]!r}; this server accepts {list(limits.modes)}",
                       "/".join(limits.modes), jid)
    o = submit.options
    views_ok = ", ".join(map(str, limits.views))

    # cameras: V views, finite, elevation inside the advertised range
    cams = submit.cameras
    V = int(cams.azimuth_deg.shape[0])
    if V not in limits.views:
        raise _limit("cameras.azimuth_deg.shape", f"{V} views; this model set makes {views_ok} views", views_ok, jid)
    for name in ("intrinsics", "world_to_cam", "elevation_deg"):
        arr = getattr(cams, name)
        if arr.shape[0] != V:
            raise _invalid(f"cameras.{name}.shape", f"{arr.shape[0]} entries but azimuth_deg has {V}", f"{V} views", jid)
    for name in ("intrinsics", "world_to_cam", "elevation_deg", "azimuth_deg"):
        if not np.all(np.isfinite(getattr(cams, name))):
            raise _invalid(f"cameras.{name}", "contains NaN or infinity", "finite", jid)
    lo, hi = float(limits.elevation_deg[0]), float(limits.elevation_deg[1])
    el = cams.elevation_deg
    if el.size and (el.min() < lo or el.max() > hi):
        raise _limit("cameras.elevation_deg", f"elevations {float(el.min()):.1f}..{float(el.max()):.1f} deg; allowed {lo}..{hi} deg",
                     f"[{lo}, {hi}] deg", jid)
    if np.any(np.abs(np.linalg.det(cams.world_to_cam[:, :3, :3].astype(np.float64)) - 1.0) > 1e-2):
        raise _invalid("cameras.world_to_cam", "rotation parts must be rotations (determinant 1)", "det = 1", jid)

    # turntable: V square RGBA images (image mode: the one front image), side <= resolution
    tt = submit.turntable
    n_images, H, W = int(tt.shape[0]), int(tt.shape[1]), int(tt.shape[2])
    expected = 1 if submit.mode == "image" else V
    if n_images != expected:
        what = "one front image in image mode" if submit.mode == "image" else f"one image per camera ({V})"
        raise _invalid("turntable.shape", f"{n_images} images; expected {what}", f"{expected} images", jid)
    _check_image_size("turntable.shape", H, W, limits, jid)

    # reference clip: only in video mode, F frames like the options say
    ref = submit.reference
    if submit.mode == "video":
        if ref is None:
            raise _invalid("reference", "video mode needs a reference clip [F, H, W, 4]", "required", jid)
        if ref.shape[0] != o.frames:
            raise _invalid("reference.shape", f"{ref.shape[0]} frames but options.frames is {o.frames}", f"{o.frames} frames", jid)
        _check_image_size("reference.shape", int(ref.shape[1]), int(ref.shape[2]), limits, jid)
    elif ref is not None:
        raise _invalid("reference", f"a reference clip is only used in video mode, not {submit.mode}", "video mode only", jid)

    # vertices for motion transfer
    if submit.vertices is not None:
        P = int(submit.vertices.shape[0])
        if P > limits.max_vertices:
            raise _limit("vertices.shape", f"{P} vertices; at most {limits.max_vertices}", str(limits.max_vertices), jid)
        if P == 0:
            raise _invalid("vertices.shape", "no vertices (send none instead of an empty array)", ">= 1", jid)
        if not np.all(np.isfinite(submit.vertices)):
            raise _invalid("vertices", "contains NaN or infinity", "finite", jid)
        if float(np.abs(submit.vertices).max()) > MAX_COORD:
            raise _invalid("vertices", f"coordinates beyond +-{MAX_COORD}: normalise the mesh into the unit sphere first",
                           f"+-{MAX_COORD}", jid)

    check_options(submit, limits)


def _check_image_size(field: str, H: int, W: int, limits: Limits, jid: str) -> None:
    res = limits.resolution
    if H != res or W != res:
        raise _limit(field, f"images of {W}x{H}; this model set works at {res}x{res} (render the turntable at that size)",
                     f"{res}x{res} px", jid)


def check_options(submit: Submit, limits: Limits) -> None:
    o, jid = submit.options, submit.job_id
    frames_ok = ", ".join(map(str, limits.frames))
    if o.frames not in limits.frames:
        raise _limit("options.frames", f"{o.frames} frames; this model set makes {frames_ok} frames", frames_ok, jid)
    if not 1 <= o.steps <= limits.max_steps:
        raise _limit("options.steps", f"{o.steps} steps; allowed 1..{limits.max_steps}", f"1..{limits.max_steps}", jid)
    if not 0 <= o.seed <= MAX_SEED:
        raise _limit("options.seed", f"seed {o.seed}; allowed 0..2^63-1", "0..2^63-1", jid)
    if o.schedule not in SCHEDULES:
        raise _invalid("options.schedule", f"unknown schedule {o.schedule[:32]!r}; expected one of {sorted(SCHEDULES)}",
                       "/".join(sorted(SCHEDULES)), jid)
    allowed = SCHEDULES[o.schedule]
    for key, value in o.schedule_params.items():
        if key not in allowed:
            raise _invalid(f"options.schedule_params.{key[:32]}", f"the {o.schedule} schedule takes {list(allowed)}",
                           ", ".join(allowed), jid)
        if key == "k":
            _in_range("options.schedule_params.k", value, 0.0, 1000.0, jid)
        else:
            _in_range(f"options.schedule_params.{key}", value, 0.0, 1.0, jid)
    p = o.schedule_params
    if o.schedule == "logistic" and p.get("w_min", 0.0) > p.get("w_max", 1.0):
        raise _invalid("options.schedule_params.w_min", f"w_min {p['w_min']} exceeds w_max {p.get('w_max', 1.0)}", "<= w_max", jid)
    if o.combine not in COMBINE_MODES:
        raise _invalid("options.combine", f"unknown combine mode {o.combine[:32]!r}; expected one of {list(COMBINE_MODES)}",
                       "/".join(COMBINE_MODES), jid)
    if not 0 <= o.vrs_steps <= o.steps:
        raise _limit("options.vrs_steps", f"{o.vrs_steps}; allowed 0..steps ({o.steps}); 0 turns VRS off", f"0..{o.steps}", jid)
    if not 1 <= o.vrs_repeats <= MAX_VRS_REPEATS:
        raise _limit("options.vrs_repeats", f"{o.vrs_repeats}; allowed 1..{MAX_VRS_REPEATS}", f"1..{MAX_VRS_REPEATS}", jid)
    if o.guidance is not None:  # None: the models' own guidance
        _in_range("options.guidance", o.guidance, 0.0, MAX_GUIDANCE, jid)
    if not 0 <= o.fit_iterations <= limits.max_fit_iterations:
        raise _limit("options.fit_iterations", f"{o.fit_iterations}; allowed 0..{limits.max_fit_iterations}",
                     f"0..{limits.max_fit_iterations}", jid)
    _in_range("options.fps", o.fps, 1e-3, MAX_FPS, jid)


def check_result(result: Result, submit: Submit | None = None) -> None:
    """Raise ProtocolError(job_failed) unless the Result's arrays agree with each other (and with
    the job: frames, views, vertex count). The server runs this on every pipeline output."""
    jid = result.job_id

    def bad(field: str, message: str) -> ProtocolError:
        return ProtocolError(ErrorCode.JOB_FAILED, field, f"the pipeline produced an inconsistent result: {message}", "", jid)

    F, N = int(result.centers.shape[0]), int(result.centers.shape[1])
    for name, arr in (("colors", result.colors), ("opacities", result.opacities), ("scales", result.scales),
                      ("rotations", result.rotations)):
        if arr is not None and arr.shape[0] != N:
            raise bad(f"{name}.shape", f"{arr.shape[0]} entries for {N} Gaussians")
    if result.frame_times.shape[0] != F:
        raise bad("frame_times.shape", f"{result.frame_times.shape[0]} times for {F} frames")
    if result.thumbnails.shape[1] != F:
        raise bad("thumbnails.shape", f"{result.thumbnails.shape[1]} frames in the thumbnails, {F} in centers")
    if result.vertices is not None and result.vertices.shape[0] != F:
        raise bad("vertices.shape", f"{result.vertices.shape[0]} frames of vertices, {F} in centers")
    if submit is not None:
        if F != submit.options.frames:
            raise bad("centers.shape", f"{F} frames; the job asked for {submit.options.frames}")
        if result.thumbnails.shape[0] != submit.cameras.num_views:
            raise bad("thumbnails.shape", f"{result.thumbnails.shape[0]} views; the job has {submit.cameras.num_views}")
        want_p = None if submit.vertices is None else int(submit.vertices.shape[0])
        got_p = None if result.vertices is None else int(result.vertices.shape[1])
        if want_p != got_p:
            raise bad("vertices.shape", f"{got_p} vertices per frame; the job sent {want_p}")
    for name in ("centers", "opacities", "scales", "frame_times"):
        if not np.all(np.isfinite(getattr(result, name))):
            raise bad(name, "contains NaN or infinity")
