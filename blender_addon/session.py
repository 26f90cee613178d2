"""The add-on's connection to the backend and its job, advanced from ``bpy.app.timers``.

Threads: ``protocol.client.Client`` owns the network on its own I/O thread (sockets, encoding,
decoding, heartbeats); everything here runs on Blender's main thread, in short steps:
``Session.poll_step`` takes what arrived (``client.poll()``, never blocking), updates the state the
panel draws, writes previews into image data-blocks and imports a finished result a few pieces at a
time, stopping after ``tick_budget_s`` so that no timer tick holds the UI for long (the longest tick
is measured: ``tick_max_s``). Timers and modal operators do not run in background mode, so headless
tests and scripts call ``poll_step`` themselves.

States the panel shows (``ui_state``): 'disconnected', 'connecting', 'connected', 'running',
'finished', 'error'. Errors are told twice: a headline an artist understands, with the backend's own
message underneath (``Notice``), in the panel and in the status bar (``reporter``).
"""

from __future__ import annotations

import ipaddress
import math
import time
import traceback
from dataclasses import dataclass, field
from typing import Callable
from urllib.parse import urlparse

import bpy
import numpy as np

from . import previews
from ._protocol import errors as perrors
from ._protocol import messages as pmsg
from ._protocol import missing_dependencies, module
from .importer import ImportOutcome, ImportSpec, ResultImporter
from .turntable import Capture

ErrorCode = perrors.ErrorCode

CLIENT_NAME = "dsquare-blender"
BUSY_INTERVAL_S = 0.05
IDLE_INTERVAL_S = 0.5

STAGE_SPANS = {
    "sending": (0.0, 0.01), "queued": (0.01, 0.02), "encoding": (0.02, 0.04), "turntable": (0.04, 0.14),
    "reference": (0.14, 0.25), "sampling": (0.25, 0.70), "decoding": (0.70, 0.74), "fitting": (0.74, 0.95),
    "transfer": (0.95, 0.97), "importing": (0.97, 1.0),
}
STAGE_WORDS = {
    "sending": "Sending the turntable", "queued": "Waiting in the queue", "encoding": "Encoding the turntable",
    "turntable": "Generating the turntable", "reference": "Generating the reference motion",
    "sampling": "Composing views × frames", "decoding": "Decoding images", "fitting": "Fitting 4D Gaussians",
    "transfer": "Transferring motion to the mesh", "importing": "Importing the animation",
    "connecting": "Connecting to the backend", "cancelling": "Cancelling",
}

# What an artist reads for each error code (the backend's message goes underneath).
HEADLINES = {
    ErrorCode.VERSION_MISMATCH: "The backend speaks another protocol version: update the add-on or the backend",
    ErrorCode.TOO_LARGE: "The job is too large for the backend: use fewer views, frames or a lower resolution",
    ErrorCode.LIMIT_EXCEEDED: "A setting is beyond what the backend allows",
    ErrorCode.INVALID_INPUT: "The backend refused the job's settings",
    ErrorCode.QUEUE_FULL: "The backend is busy (its queue is full): try again later",
    ErrorCode.UNKNOWN_JOB: "The backend lost track of the job (was it restarted?)",
    ErrorCode.NOT_CONNECTED: "Not connected to the backend",
    ErrorCode.CANCELLED: "Generation cancelled",
    ErrorCode.JOB_FAILED: "Generation failed on the backend",
    ErrorCode.INTERNAL: "The backend hit an internal error",
    ErrorCode.BAD_MESSAGE: "The backend could not read the job (a bug: please report it)",
}


@dataclass
class Notice:
    """A message for the artist: ``headline`` in their words, ``detail`` the backend's own message."""

    level: str  # 'ERROR', 'WARNING', 'INFO'
    headline: str
    detail: str = ""
    field: str = ""

    def text(self) -> str:
        return self.headline + (f"\n{self.detail}" if self.detail else "")


@dataclass
class ImportPrefs:
    """How a finished job comes into the scene (see ``importer.ImportSpec``)."""

    transfer_motion: bool = True
    hide_original: bool = True
    match_scene_fps: bool = True
    set_frame_range: bool = True
    point_size: float = 1.0


@dataclass
class Job:
    """One job: what was sent and what the import needs. ``phase``: 'waiting' (for a connection),
    'sending', 'queued', 'running', 'cancelling', 'importing', 'finished', 'failed', 'cancelled'."""

    submit: "pmsg.Submit"
    capture: Capture
    prefs: ImportPrefs
    scene_name: str
    frame_start: int
    phase: str = "waiting"
    stage: str = "sending"
    step: int = 0
    total: int = 0
    eta_s: float = -1.0
    message: str = ""
    queue_position: int = 0
    factor: float = 0.0
    started_at: float = field(default_factory=time.monotonic)
    cancel_requested_at: float | None = None
    tick_max_s: float = 0.0
    result_frames: int = 0
    released: bool = False
    metrics: dict = field(default_factory=dict)
    timings: dict = field(default_factory=dict)
    thumbnails: np.ndarray | None = None  # the generated matrix, small: uint8 [V, F, h, w, 3]

    @property
    def job_id(self) -> str:
        return self.submit.job_id

    @property
    def active(self) -> bool:
        return self.phase in ("waiting", "sending", "queued", "running", "cancelling", "importing")


def is_loopback(endpoint: str) -> bool:
    """True for endpoints on this computer: ipc://, inproc://, tcp://127.x.x.x, tcp://[::1], localhost."""
    parsed = urlparse(endpoint)
    if parsed.scheme in ("ipc", "inproc"):
        return True
    host = (parsed.hostname or "").strip("[]").lower()
    if host in ("localhost", "localhost.localdomain"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_endpoint(endpoint: str) -> str:
    """The endpoint, stripped; raises ValueError (in artist's words) for a malformed one."""
    endpoint = endpoint.strip()
    parsed = urlparse(endpoint)
    if parsed.scheme in ("ipc", "inproc") and (parsed.netloc or parsed.path):
        return endpoint
    if parsed.scheme != "tcp":
        raise ValueError(f"server address must look like tcp://HOST:PORT, got {endpoint!r}")
    try:
        port = parsed.port
    except ValueError:
        port = None
    if not parsed.hostname or port is None or not 0 < port < 65536:
        raise ValueError(f"server address must look like tcp://HOST:PORT (port 1-65535), got {endpoint!r}")
    return endpoint


def online_access() -> bool:
    """Blender's "Allow Online Access" preference (4.2+); always True on older versions."""
    return bool(getattr(bpy.app, "online_access", True))


def default_reporter(level: str, text: str) -> None:
    """Report in the window's status bar (through the add-on's report operator), else print."""
    try:
        if hasattr(bpy.ops, "dsquare") and hasattr(bpy.ops.dsquare, "report"):
            bpy.ops.dsquare.report(level=level, message=text)
            return
    except RuntimeError as exc:
        if text.splitlines()[0] in str(exc):
            return  # an operator's ERROR report also raises in Python: it has been reported
    except (TypeError, AttributeError):
        pass
    print(f"[D²] {level}: {text}")


class Session:
    """See the module docstring. One job at a time."""

    def __init__(self, *, reporter: Callable[[str, str], None] | None = None, connect_timeout_s: float = 5.0,
                 lost_timeout_s: float = 60.0, cancel_timeout_s: float = 10.0, tick_budget_s: float = 0.02,
                 client_timeout_s: float = 10.0):
        self.reporter = reporter or default_reporter
        self.connect_timeout_s = connect_timeout_s
        self.lost_timeout_s = lost_timeout_s
        self.cancel_timeout_s = cancel_timeout_s
        self.tick_budget_s = tick_budget_s
        self.client_timeout_s = client_timeout_s
        self.client = None
        self.endpoint = ""
        self.connection = "disconnected"  # disconnected | connecting | connected | lost
        self.welcome = None
        self.connect_started = 0.0
        self.lost_since: float | None = None
        self.job: Job | None = None
        self.rendering: tuple[int, int] | None = None  # (views done, V) while Generate renders the turntable
        self.notice: Notice | None = None
        self.outcome: ImportOutcome | None = None
        self.history: list[Notice] = []
        self.tick_max_s = 0.0
        self.tick_count = 0
        self.tick_log: list[tuple[str, float, float]] | None = None  # (phase, wall s, CPU s) per tick, when a list
        self._importer: ResultImporter | None = None
        self._import_steps = None
        self._pending_result = None

    # ---------------------------------------------------------------------------------- state

    @property
    def busy(self) -> bool:
        return self.rendering is not None or (self.job is not None and self.job.active)

    @property
    def ui_state(self) -> str:
        """'disconnected', 'connecting', 'connected', 'running', 'finished' or 'error'."""
        if self.busy:
            return "running"
        if self.notice is not None and self.notice.level == "ERROR":
            return "error"
        if self.job is not None and self.job.phase == "finished":
            return "finished"
        if self.connection in ("connected", "lost"):
            return "connected"
        if self.connection == "connecting":
            return "connecting"
        return "disconnected"

    def status_text(self) -> str:
        """One line for the panel and the status bar: stage, step, ETA."""
        if self.rendering is not None:
            return f"Rendering the turntable {self.rendering[0]}/{self.rendering[1]} (Esc cancels)"
        job = self.job
        if job is None or not job.active:
            return ""
        if job.phase == "waiting":
            return STAGE_WORDS["connecting"] + "…"
        if job.phase == "cancelling":
            return STAGE_WORDS["cancelling"] + "…"
        words = STAGE_WORDS.get(job.stage, job.stage.replace("_", " ").capitalize())
        if job.stage == "queued" and job.queue_position > 0:
            words += f" ({job.queue_position} ahead)"
        if job.total > 0:
            words += f" {job.step}/{job.total}"
        if job.eta_s >= 0:
            words += f" · ETA {format_seconds(job.eta_s)}"
        if self.connection == "lost":
            words += " · connection lost, reconnecting…"
        return words

    def welcome_summary(self) -> list[str]:
        """Lines describing the connected backend: models, device, limits."""
        w = self.welcome
        if w is None:
            return []
        lim = w.limits
        return [
            f"Models: {w.models} on {w.device}",
            f"Views: {', '.join(map(str, lim.views))}",
            f"Frames: {', '.join(map(str, lim.frames))}",
            f"Resolution ≤ {lim.resolution} px · steps ≤ {lim.max_steps}",
            f"Elevation {lim.elevation_deg[0]:g}° to {lim.elevation_deg[1]:g}° · vertices ≤ {lim.max_vertices}",
        ]

    # --------------------------------------------------------------------------------- notices

    def _notify(self, level: str, headline: str, detail: str = "", field: str = "") -> Notice:
        notice = Notice(level, headline, detail, field)
        self.history.append(notice)
        del self.history[:-50]
        if level in ("ERROR", "WARNING") or self.notice is not None:
            self.notice = notice if level != "INFO" else None
        try:
            self.reporter(level, notice.text())
        except Exception:  # a broken reporter must not break the job
            traceback.print_exc()
        return notice

    def dismiss(self) -> None:
        """Clear the shown notice (and a failed or cancelled job's leftovers)."""
        self.notice = None
        if self.job is not None and self.job.phase in ("failed", "cancelled"):
            self.job = None

    def _notify_protocol_error(self, err, default_headline: str = "") -> None:
        code = getattr(err, "code", "")
        headline = HEADLINES.get(code, default_headline or "The backend reported an error")
        detail = getattr(err, "message", str(err))
        fld = getattr(err, "field", "")
        limit = getattr(err, "limit", "")
        if fld:
            detail = f"{fld}: {detail}"
        if limit:
            detail += f" (limit: {limit})"
        level = "INFO" if code == ErrorCode.CANCELLED else "ERROR"
        self._notify(level, headline, detail, fld)

    # ------------------------------------------------------------------------------ connection

    def connect(self, endpoint: str) -> bool:
        """Start connecting (returns at once; a Welcome or an 'unreachable' error follows).
        Returns False, with a notice, when it cannot even start."""
        try:
            endpoint = check_endpoint(endpoint)
        except ValueError as exc:
            self._notify("ERROR", "The server address is not valid", str(exc), "server")
            return False
        if not is_loopback(endpoint) and not online_access():
            self._notify("ERROR", "Online access is disabled: dsquare may only reach a backend on this computer",
                         f"{endpoint} is not on this computer. Allow online access in Preferences ▸ System ▸ "
                         "Network, or run the backend locally (tcp://127.0.0.1:PORT).", "server")
            return False
        missing = missing_dependencies()
        if missing:
            self._notify("ERROR", "dsquare's networking libraries are missing",
                         f"Not importable: {', '.join(missing)}. Install dsquare as an extension (Blender 4.2+), "
                         "which installs them, or pip install them into Blender's Python.", "dependencies")
            return False
        if self.client is not None and self.endpoint == endpoint and self.connection in ("connecting", "connected", "lost"):
            return True
        self.disconnect(cancel_jobs=False, keep_job=True)
        client_mod = module("client")
        self.client = client_mod.Client(endpoint, name=f"{CLIENT_NAME} {addon_version()}",
                                        timeout_s=self.client_timeout_s).connect()
        self.endpoint = endpoint
        self.connection = "connecting"
        self.connect_started = time.monotonic()
        self.welcome = None
        if self.notice is not None and self.notice.field in ("server", "connection", "dependencies"):
            self.notice = None
        ensure_timer()
        return True

    def disconnect(self, cancel_jobs: bool = True, keep_job: bool = False) -> None:
        """Close the connection (cancelling this client's jobs on the backend when asked)."""
        client, self.client = self.client, None
        if client is not None:
            try:
                client.close(cancel_jobs=cancel_jobs, timeout=1.0)
            except Exception:
                traceback.print_exc()
        self.connection = "disconnected"
        self.welcome = None
        self.lost_since = None
        if not keep_job and self.job is not None and self.job.active and self.job.phase != "importing":
            self.job.phase = "cancelled"

    def shutdown(self) -> None:
        """Unregistering: stop everything, remove a half-finished import."""
        if self._importer is not None:
            self._importer.abort()
        self._importer = self._import_steps = None
        self.disconnect(cancel_jobs=True)

    # ------------------------------------------------------------------------------------ jobs

    def start_job(self, submit, capture: Capture, prefs: ImportPrefs, endpoint: str, scene=None) -> bool:
        """Send a job (connecting first if needed). Returns False, with a notice, when refused at once."""
        if self.busy:
            self._notify("ERROR", "A generation is already running: cancel it first", "", "job")
            return False
        scene = scene or bpy.context.scene
        self.notice = None
        self.outcome = None
        self.job = Job(submit=submit, capture=capture, prefs=prefs, scene_name=scene.name,
                       frame_start=int(scene.frame_start))
        previews.show("turntable", capture.images)
        if self.client is None or self.endpoint != endpoint.strip() or self.connection == "disconnected":
            if not self.connect(endpoint):
                self.job.phase = "failed"
                return False
        if self.connection in ("connected", "lost") and self.welcome is not None:
            return self._send_job()
        return True  # sent when the Welcome arrives

    def _send_job(self) -> bool:
        job = self.job
        try:
            self.client.submit(job.submit)
        except perrors.ProtocolError as err:
            job.phase = "failed"
            self._notify_protocol_error(err, "The backend would refuse this job")
            return False
        job.phase, job.stage, job.started_at = "sending", "sending", time.monotonic()
        self._tag_redraw()
        return True

    def cancel(self) -> None:
        """Cancel the job at any point: turntable rendering, not yet sent, queued, running, or being imported."""
        if self.rendering is not None:
            self.rendering = None  # the Generate operator sees it at its next step and stops
            self._notify("INFO", "Generation cancelled: nothing was imported")
            return
        job = self.job
        if job is None or not job.active:
            return
        if job.phase == "importing":
            if self._importer is not None:
                self._importer.abort()
            self._importer = self._import_steps = None
            self._finish_cancelled()
            return
        if job.phase == "waiting" or self.client is None:
            self._finish_cancelled()
            return
        try:
            self.client.cancel(job.job_id)
        except perrors.ProtocolError:
            self._finish_cancelled()
            return
        job.phase = "cancelling"
        job.cancel_requested_at = time.monotonic()
        self._tag_redraw()

    def _release(self, job: Job) -> None:
        """A finished job keeps only what the panel shows: the images, the sent arrays and the
        client's copy of the result (which can be large) are let go."""
        job.released = True
        if self.client is not None:
            try:
                self.client.forget(job.job_id)
            except Exception:
                pass
        job.capture.images = None
        job.submit.turntable = job.submit.reference = job.submit.vertices = None

    def _finish_cancelled(self) -> None:
        if self.job is not None:
            self.job.phase = "cancelled"
        self._notify("INFO", "Generation cancelled: nothing was imported")
        self._tag_redraw()

    def _fail(self, headline: str, detail: str = "", field: str = "") -> None:
        if self.job is not None and self.job.active:
            self.job.phase = "failed"
        self._notify("ERROR", headline, detail, field)
        self._tag_redraw()

    # ------------------------------------------------------------------------------ the timer

    def poll_step(self, budget_s: float | None = None) -> None:
        """One timer tick: handle what arrived, then import for at most ``budget_s`` seconds."""
        t0 = time.perf_counter()
        c0 = time.thread_time()
        phase_before = self.job.phase if self.job is not None else ""
        budget = self.tick_budget_s if budget_s is None else budget_s
        deadline = t0 + budget
        try:
            if self.client is not None:
                for event in self.client.poll(max_events=64):
                    self._handle(event)
                    if time.perf_counter() > deadline:
                        break
                self._check_timeouts()
            if self._import_steps is not None:
                self._advance_import(deadline)
            if self.job is not None and not self.job.active and not self.job.released:
                self._release(self.job)
        except Exception as exc:  # never let the timer die silently
            traceback.print_exc()
            if self._importer is not None:
                self._importer.abort()
                self._importer = self._import_steps = None
            self._fail("dsquare hit an unexpected error (a bug: please report it)", repr(exc))
        dt = time.perf_counter() - t0
        if self.tick_log is not None:
            phase_after = self.job.phase if self.job is not None else ""
            label = phase_before if phase_after == phase_before else f"{phase_before}>{phase_after}"
            self.tick_log.append((label, dt, time.thread_time() - c0))
        self.tick_count += 1
        self.tick_max_s = max(self.tick_max_s, dt)
        if self.job is not None and (self.job.active or self.job.phase in ("finished", "failed", "cancelled")):
            self.job.tick_max_s = max(self.job.tick_max_s, dt)

    def timer_interval(self) -> float | None:
        if self.busy:
            return BUSY_INTERVAL_S
        if self.client is not None:
            return IDLE_INTERVAL_S
        return None

    def _check_timeouts(self) -> None:
        now = time.monotonic()
        if self.connection == "connecting" and now - self.connect_started > self.connect_timeout_s:
            endpoint = self.endpoint
            self.disconnect(cancel_jobs=False, keep_job=True)
            if self.job is not None and self.job.active:
                self.job.phase = "failed"
            self._notify("ERROR", "The dsquare backend is unreachable",
                         f"No answer from {endpoint} within {self.connect_timeout_s:g} s. Is it running? "
                         "Start it with: python -m backend serve", "server")
            self._tag_redraw()
            return
        if self.connection == "lost" and self.lost_since is not None and now - self.lost_since > self.lost_timeout_s:
            endpoint = self.endpoint
            self.disconnect(cancel_jobs=False)
            if self.job is not None:
                self.job.phase = "failed"
            self._notify("ERROR", "Lost the connection to the backend",
                         f"No answer from {endpoint} for {self.lost_timeout_s:g} s", "connection")
            return
        job = self.job
        if job is not None and job.phase == "cancelling" and job.cancel_requested_at is not None:
            if now - job.cancel_requested_at > self.cancel_timeout_s:
                self._finish_cancelled()

    def _handle(self, event) -> None:
        client_mod = module("client")
        if isinstance(event, client_mod.ConnectionLost):
            if self.connection == "connected":
                self.connection = "lost"
                self.lost_since = time.monotonic()
                self._notify("WARNING", "Lost the connection to the backend: reconnecting…", event.reason, "connection")
            return
        if isinstance(event, pmsg.Welcome):
            self._on_welcome(event)
            return
        if isinstance(event, pmsg.Error):
            self._on_error(event)
            return
        job = self.job
        job_id = getattr(event, "job_id", None)
        if job is None or job_id != job.job_id or not job.active:
            return  # another client's or an old job's straggler
        if isinstance(event, pmsg.Accepted):
            if job.phase in ("sending", "queued", "running"):
                job.queue_position = event.queue_position
                job.phase = "running" if event.queue_position < 0 else "queued"
                if job.phase == "queued":
                    self._set_stage(job, "queued", 0, 0, -1.0)
        elif isinstance(event, pmsg.Progress):
            if job.phase != "cancelling":
                job.phase = "queued" if event.stage == "queued" else "running"
            job.message = event.message
            self._set_stage(job, event.stage, event.step, event.total, event.eta_s)
        elif isinstance(event, pmsg.Preview):
            previews.show(event.kind, event.images)
        elif isinstance(event, pmsg.Result):
            if job.phase == "cancelling":
                return  # the cancel lost the race; keep waiting for the server's answer to it
            self._on_result(event)
        self._tag_redraw()

    def _set_stage(self, job: Job, stage: str, step: int, total: int, eta_s: float) -> None:
        job.stage, job.step, job.total, job.eta_s = stage, int(step), int(total), float(eta_s)
        lo, hi = STAGE_SPANS.get(stage, (job.factor, job.factor))
        within = (step / total) if total > 0 else 0.0
        job.factor = max(job.factor, min(1.0, lo + (hi - lo) * max(0.0, min(1.0, within))))

    def _on_welcome(self, welcome) -> None:
        if welcome.protocol != pmsg.PROTOCOL_VERSION:
            self.disconnect(cancel_jobs=False)
            self._fail(HEADLINES[ErrorCode.VERSION_MISMATCH],
                       f"backend protocol {welcome.protocol}, add-on protocol {pmsg.PROTOCOL_VERSION}", "protocol")
            return
        was = self.connection
        self.welcome = welcome
        self.connection = "connected"
        self.lost_since = None
        if self.notice is not None and self.notice.field == "connection":
            self.notice = None
        if was == "lost":
            self._notify("INFO", "Reconnected to the backend")
        job = self.job
        if job is not None and job.phase == "waiting":
            self._send_job()
        self._tag_redraw()

    def _on_error(self, err) -> None:
        job = self.job
        if err.job_id:
            if job is None or err.job_id != job.job_id or not job.active:
                return
            if err.code == ErrorCode.CANCELLED:
                self._finish_cancelled()
                return
            if job.phase == "importing":
                return  # the result is already here
            job.phase = "failed"
            self._notify_protocol_error(err)
            self._tag_redraw()
            return
        if err.code == ErrorCode.VERSION_MISMATCH:
            self.disconnect(cancel_jobs=False)
            self._fail(HEADLINES[ErrorCode.VERSION_MISMATCH], err.message, "protocol")
            return
        if job is not None and job.phase == "sending":
            job.phase = "failed"
            self._notify_protocol_error(err, "The backend refused the job")
            self._tag_redraw()
            return
        self._notify("WARNING", "The backend reported a problem", f"{err.code}: {err.message}", err.field)

    # ---------------------------------------------------------------------------------- import

    def _on_result(self, result) -> None:
        job = self.job
        job.result_frames = int(result.centers.shape[0])
        job.metrics, job.timings = dict(result.metrics), dict(result.timings)
        if result.thumbnails is not None:
            job.thumbnails = np.array(result.thumbnails, dtype=np.uint8)  # own copy: small, kept for reports
        try:
            spec = self.import_spec(job, result)
            scene = bpy.data.scenes.get(job.scene_name) or bpy.context.scene
            self._importer = ResultImporter(spec, scene)
        except Exception as exc:
            self._fail("The result could not be imported", str(exc), "result")
            return
        if result.thumbnails is not None and result.thumbnails.size:
            previews.show("matrix", result.thumbnails)
        self._import_steps = self._importer.steps()
        job.phase = "importing"
        self._set_stage(job, "importing", 0, 0, -1.0)

    def import_spec(self, job: Job, result) -> ImportSpec:
        """Where and how the result goes: the captured object's frame, the job's timing."""
        cap = job.capture
        F = int(result.centers.shape[0])
        fps = float(job.submit.options.fps)
        scene = bpy.data.scenes.get(job.scene_name) or bpy.context.scene
        times = np.asarray(result.frame_times, dtype=np.float64).reshape(-1)
        if times.shape[0] != F or not np.all(np.isfinite(times)) or (F > 1 and np.any(np.diff(times) <= 0)):
            times = np.arange(F) / fps
        times = times - times[0]
        if job.prefs.match_scene_fps:
            scene_fps = (max(1, round(fps)), max(1, round(fps)) / fps)
            frame_of = job.frame_start + times * fps
        else:
            scene_fps = None
            frame_of = job.frame_start + times * (scene.render.fps / scene.render.fps_base)
        vertices = result.vertices if (job.prefs.transfer_motion and result.vertices is not None) else None
        return ImportSpec(
            name=cap.object_name, centers=result.centers, colors=result.colors, opacities=result.opacities,
            scales=result.scales, vertices=vertices, frame_of=np.asarray(frame_of, dtype=np.float64),
            matrix_world=cap.matrix_world, to_local=cap.to_local, local_scale=cap.local_scale(),
            source_object=cap.object_name, source_vertex_count=cap.vertex_count, hide_original=job.prefs.hide_original,
            point_size=job.prefs.point_size, scene_fps=scene_fps, set_frame_range=job.prefs.set_frame_range)

    def _advance_import(self, deadline: float) -> None:
        steps = self._import_steps
        try:
            while True:
                next(steps)
                if time.perf_counter() >= deadline:
                    return
        except StopIteration:
            pass
        except Exception as exc:  # the importer has already removed what it made
            self._importer = self._import_steps = None
            traceback.print_exc()
            self._fail("The result could not be imported; nothing was added to the scene", str(exc), "result")
            return
        outcome = self._importer.outcome
        self._importer = self._import_steps = None
        self.outcome = outcome
        job = self.job
        job.phase = "finished"
        job.factor = 1.0
        push_undo("D² Import Animation")
        summary = (f"Animated '{job.capture.object_name}': {job.result_frames} frames"
                   + (f", motion on '{outcome.animated_mesh}'" if outcome.animated_mesh else ""))
        self._notify("INFO", summary)
        for warning in outcome.warnings:
            self._notify("WARNING", "Imported with a warning", warning, "result")
        self._tag_redraw()

    # ---------------------------------------------------------------------------------- redraw

    def _tag_redraw(self) -> None:
        wm = getattr(bpy.context, "window_manager", None)
        if wm is None:
            return
        for window in wm.windows:
            screen = window.screen
            if screen is None:
                continue
            for area in screen.areas:
                if area.type in ("VIEW_3D", "STATUSBAR", "PROPERTIES"):
                    area.tag_redraw()


def format_seconds(s: float) -> str:
    s = max(0.0, float(s))
    if s < 60:
        return f"{math.ceil(s)} s"
    m, sec = divmod(int(round(s)), 60)
    if m < 60:
        return f"{m} min {sec:02d} s"
    h, m = divmod(m, 60)
    return f"{h} h {m:02d} min"


def push_undo(message: str) -> None:
    """An undo step for what a timer did (operators get theirs automatically)."""
    if bpy.app.background:
        return
    try:
        bpy.ops.ed.undo_push(message=message)
    except RuntimeError:
        pass


def addon_version() -> str:
    from . import bl_info

    return ".".join(map(str, bl_info["version"]))


# ------------------------------------------------------------------------------------ singleton

SESSION: Session | None = None


def get() -> Session:
    """The add-on's session (made on first use)."""
    global SESSION
    if SESSION is None:
        SESSION = Session()
    return SESSION


def timer() -> float | None:
    """The ``bpy.app.timers`` callback: one ``poll_step``; stops itself when there is nothing to watch."""
    session = SESSION
    if session is None:
        return None
    session.poll_step()
    return session.timer_interval()


def ensure_timer() -> None:
    if not bpy.app.timers.is_registered(timer):
        bpy.app.timers.register(timer, first_interval=BUSY_INTERVAL_S, persistent=True)


def stop_timer() -> None:
    if bpy.app.timers.is_registered(timer):
        bpy.app.timers.unregister(timer)


def reset() -> None:
    """Unregister: stop the timer, close the client, forget the session."""
    global SESSION
    stop_timer()
    if SESSION is not None:
        SESSION.shutdown()
    SESSION = None
