"""Every message between the Blender add-on (client) and the backend (server), as typed dataclasses.

Conversation::

    client                          server
    Hello                  ->       Welcome (protocol version, models, device, limits)
    Submit                 ->       Accepted, then Progress* and Preview*, then Result or Error
    Cancel(job_id)         ->       (the job ends with Error(code="cancelled"))
    Attach(job_id)         ->       Accepted (still queued/running: events now come here) or the
                                    job's Result/Error again (finished, kept for ``result_ttl_s``)
    Ping(jobs)             ->       Pong(job states)       every ``heartbeat_interval_s``
    Bye                    ->       (the client leaves; its unfinished jobs are cancelled)
    anything malformed     ->       Error(code, message, field, limit)

Every job ends with exactly one terminal message: ``Result`` or ``Error`` carrying its ``job_id``.

Arrays travel as raw ZeroMQ frames (see ``protocol.codec``); each array field declares its allowed
dtypes and shape pattern with ``ArraySpec``. Arrays are little-endian and C-ordered on the wire;
decoded arrays may be read-only views of the received frames.

Camera convention: ``protocol.cameras`` (object normalised into the unit sphere, OpenCV
world-to-camera matrices, azimuth 0 = front, counter-clockwise seen from above).
"""

from __future__ import annotations

import math
import uuid
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np

PROTOCOL_VERSION = 1

MODES = ("static3d", "video", "image")
"""static3d: the turntable row is given, motion is generated (column 0 from the front view).
video: turntable row given and a reference clip ``reference`` [F, H, W, 4] is column 0.
image: one reference image ``turntable`` [1, H, W, 4] (the front view at time 0); both the row
and the column are generated. ``cameras`` still describe all V output views."""

COMBINE_MODES = ("convex", "theorem")

SCHEDULES: dict[str, tuple[str, ...]] = {
    "logistic": ("s0", "k", "w_min", "w_max"),
    "constant": ("w",),
    "linear": ("w_start", "w_end"),
    "cosine": ("w_start", "w_end"),
}
"""Weight schedules (multi-view share w over steps) and the parameters each takes; see
``backend.sampling.schedules.schedule_from_options``."""


@dataclass(frozen=True)
class ArraySpec:
    """What an array field accepts. ``dtypes``: short numpy codes ('u1', 'f4', ...), the first is
    the one values are cast to when encoding from another float/int dtype. ``shape``: one entry per
    axis: None (any size), an int (exactly), or a tuple of ints (one of)."""

    dtypes: tuple[str, ...]
    shape: tuple[int | tuple[int, ...] | None, ...]

    @property
    def rank(self) -> int:
        return len(self.shape)

    def describe(self) -> str:
        dims = []
        for i, d in enumerate(self.shape):
            dims.append("*" if d is None else str(d) if isinstance(d, int) else "|".join(map(str, d)))
        return f"{'/'.join(self.dtypes)} [{', '.join(dims)}]"


def array_field(*dtypes: str, shape: tuple, optional: bool = False):
    """A dataclass field holding a numpy array that matches ``ArraySpec(dtypes, shape)``."""
    spec = ArraySpec(tuple(dtypes), tuple(shape))
    if optional:
        return field(default=None, metadata={"array": spec})
    return field(metadata={"array": spec})


def array_spec(cls, name: str) -> ArraySpec | None:
    """The ArraySpec of field ``name`` of message class ``cls``, or None if it is not an array."""
    return cls.__dataclass_fields__[name].metadata.get("array")


FLOAT = ("f4", "f8")


class Message:
    """Base of all wire messages; ``KIND`` is the name on the wire."""

    KIND: ClassVar[str] = ""


# --------------------------------------------------------------------------------------------- handshake


@dataclass(eq=False)
class Hello(Message):
    """First message of a client. ``client``: a name for logs, e.g. 'dsquare-blender 0.1'."""

    KIND: ClassVar[str] = "hello"
    client: str = "dsquare"
    protocol: int = PROTOCOL_VERSION


@dataclass(eq=False)
class Limits:
    """What the server accepts (from the model set's ``ModelLimits`` plus the server's own).

    views / frames: allowed matrix sizes V and F; resolution: the side in pixels of every turntable
    and reference image (square, exactly this size); elevation_deg: [min, max] orbit elevation; max_message_bytes: the largest message
    the server reads (the socket drops far larger ones without a reply)."""

    views: list[int]
    frames: list[int]
    resolution: int
    elevation_deg: list[float]
    max_steps: int
    max_fit_iterations: int
    max_vertices: int
    max_message_bytes: int
    max_queue: int
    max_queue_per_client: int
    heartbeat_interval_s: float
    heartbeat_timeout_s: float
    result_ttl_s: float
    modes: list[str] = field(default_factory=lambda: list(MODES))


@dataclass(eq=False)
class Welcome(Message):
    """The server's answer to Hello: its protocol version, the model set, the device(s), the limits."""

    KIND: ClassVar[str] = "welcome"
    protocol: int
    server: str
    models: str
    device: str
    limits: Limits
    info: dict[str, str] = field(default_factory=dict)


# --------------------------------------------------------------------------------------------- jobs


@dataclass(eq=False)
class Cameras:
    """The V orbit cameras (``protocol.cameras`` convention).

    intrinsics [V, 3, 3]; world_to_cam [V, 4, 4] (OpenCV); elevation_deg [V]; azimuth_deg [V].
    """

    intrinsics: np.ndarray = array_field(*FLOAT, shape=(None, 3, 3))
    world_to_cam: np.ndarray = array_field(*FLOAT, shape=(None, 4, 4))
    elevation_deg: np.ndarray = array_field(*FLOAT, shape=(None,))
    azimuth_deg: np.ndarray = array_field(*FLOAT, shape=(None,))

    @classmethod
    def from_rig(cls, rig) -> "Cameras":
        """From a ``protocol.cameras.OrbitRig``."""
        return cls(intrinsics=np.asarray(rig.K), world_to_cam=np.asarray(rig.w2c),
                   elevation_deg=np.asarray(rig.elevation_deg), azimuth_deg=np.asarray(rig.azimuth_deg))

    @property
    def num_views(self) -> int:
        return int(np.shape(self.azimuth_deg)[0])


def _default_schedule_params() -> dict[str, float]:
    return {"s0": 0.5, "k": 20.0, "w_min": 0.0, "w_max": 1.0}


@dataclass(eq=False)
class Options:
    """How to run a job.

    frames: F (one of ``Limits.frames``); steps: sampling steps; seed: noise seed;
    schedule / schedule_params: the multi-view weight schedule (``SCHEDULES``; the paper's logistic
    s0 = 0.5, k = 20 by default); combine: 'convex' (paper) or 'theorem'; vrs_steps / vrs_repeats:
    repeat the first vrs_steps steps vrs_repeats times with re-noising (vrs_steps = 0: off);
    guidance: classifier-free guidance scale (None: each model's own, 1: off); fit_iterations: 4D Gaussian fitting iterations;
    fps: frames per second of the generated animation; previews: send Preview messages.
    """

    frames: int = 8
    steps: int = 25
    seed: int = 0
    schedule: str = "logistic"
    schedule_params: dict[str, float] = field(default_factory=_default_schedule_params)
    combine: str = "convex"
    vrs_steps: int = 0
    vrs_repeats: int = 2
    guidance: float | None = None
    fit_iterations: int = 1000
    fps: float = 8.0
    previews: bool = True


def new_job_id() -> str:
    """A fresh job id (uuid4, 32 hex digits). Job ids are capabilities: whoever knows one may attach."""
    return uuid.uuid4().hex


@dataclass(eq=False)
class Submit(Message):
    """A job. turntable: uint8 RGBA [V, H, W, 4] (``image`` mode: [1, H, W, 4]), square images;
    cameras: the V views; reference: uint8 RGBA clip [F, H, W, 4] (``video`` mode only);
    Images are resolution x resolution (``Limits.resolution``). vertices: float32 [P, 3] mesh vertices in the cameras' normalised object space, whose motion
    comes back in ``Result.vertices``."""

    KIND: ClassVar[str] = "submit"
    job_id: str
    mode: str
    turntable: np.ndarray = array_field("u1", shape=(None, None, None, 4))
    cameras: Cameras
    options: Options = field(default_factory=Options)
    reference: np.ndarray | None = array_field("u1", shape=(None, None, None, 4), optional=True)
    vertices: np.ndarray | None = array_field("f4", shape=(None, 3), optional=True)


@dataclass(eq=False)
class Accepted(Message):
    """The job is queued (or was already known: a re-submit or an Attach). queue_position: jobs
    waiting ahead of it (0 = next); -1 when it is already running."""

    KIND: ClassVar[str] = "accepted"
    job_id: str
    queue_position: int = 0


@dataclass(eq=False)
class Progress(Message):
    """stage: 'queued', 'sampling', 'fitting', ...; step of total within the stage (total 0: no
    count); eta_s: seconds left in this stage (-1: unknown); elapsed_s: since the job started."""

    KIND: ClassVar[str] = "progress"
    job_id: str
    stage: str
    step: int = 0
    total: int = 0
    eta_s: float = -1.0
    elapsed_s: float = 0.0
    message: str = ""


@dataclass(eq=False)
class Preview(Message):
    """Small images of work in progress: uint8 [N, H, W, 3|4]; kind says what they show."""

    KIND: ClassVar[str] = "preview"
    job_id: str
    kind: str
    images: np.ndarray = array_field("u1", shape=(None, None, None, (3, 4)))


@dataclass(eq=False)
class Result(Message):
    """The animated result.

    centers [F, N, 3] float32: Gaussian centres per frame (normalised object space);
    colors [N, 3]: uint8, or float32 in [0, 1]; opacities [N] float32 in [0, 1];
    scales [N, 3] float32; rotations [N, 4] float32 quaternions (w, x, y, z), optional;
    vertices [F, P, 3] float32: the submitted vertices per frame (only when vertices were sent);
    thumbnails [V, F, h, w, 3] uint8: the generated views x frames matrix, small;
    frame_times [F] float32 seconds; metrics, timings: named floats (timings in seconds).
    """

    KIND: ClassVar[str] = "result"
    job_id: str
    centers: np.ndarray = array_field("f4", shape=(None, None, 3))
    colors: np.ndarray = array_field("u1", "f4", shape=(None, 3))
    opacities: np.ndarray = array_field("f4", shape=(None,))
    scales: np.ndarray = array_field("f4", shape=(None, 3))
    thumbnails: np.ndarray = array_field("u1", shape=(None, None, None, None, 3))
    frame_times: np.ndarray = array_field("f4", shape=(None,))
    metrics: dict[str, float] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    vertices: np.ndarray | None = array_field("f4", shape=(None, None, 3), optional=True)
    rotations: np.ndarray | None = array_field("f4", shape=(None, 4), optional=True)

    @property
    def num_frames(self) -> int:
        return int(self.centers.shape[0])


@dataclass(eq=False)
class Cancel(Message):
    KIND: ClassVar[str] = "cancel"
    job_id: str


@dataclass(eq=False)
class Attach(Message):
    """Re-attach to a job by id (after a reconnect, or from another session)."""

    KIND: ClassVar[str] = "attach"
    job_id: str


@dataclass(eq=False)
class Ping(Message):
    """Heartbeat. jobs: ids the client is waiting for; the Pong says where each one stands."""

    KIND: ClassVar[str] = "ping"
    seq: int = 0
    jobs: list[str] = field(default_factory=list)


JOB_STATES = ("queued", "running", "done", "failed", "cancelled", "unknown")


@dataclass(eq=False)
class Pong(Message):
    """Heartbeat answer. jobs: job id -> one of ``JOB_STATES`` for the ids in the Ping."""

    KIND: ClassVar[str] = "pong"
    seq: int = 0
    jobs: dict[str, str] = field(default_factory=dict)
    queue_length: int = 0


@dataclass(eq=False)
class Bye(Message):
    """The client leaves. cancel_jobs: cancel its queued and running jobs now (else they run on
    and the results are kept for ``result_ttl_s``)."""

    KIND: ClassVar[str] = "bye"
    cancel_jobs: bool = True


@dataclass(eq=False)
class Error(Message):
    """A refusal or a failed job. code: ``protocol.errors.ErrorCode``; field: what was at fault
    (e.g. 'turntable.shape'); limit: the limit broken, in words; job_id: '' when no job is concerned."""

    KIND: ClassVar[str] = "error"
    code: str
    message: str
    field: str = ""
    limit: str = ""
    job_id: str = ""


MESSAGE_TYPES: dict[str, type[Message]] = {
    cls.KIND: cls
    for cls in (Hello, Welcome, Submit, Accepted, Progress, Preview, Result, Cancel, Attach, Ping, Pong, Bye, Error)
}

TERMINAL_TYPES = (Result, Error)


def is_terminal(msg: Message) -> bool:
    """True for a job's last message (Result, or an Error naming a job)."""
    return isinstance(msg, Result) or (isinstance(msg, Error) and bool(msg.job_id))


def finite(x: float) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)
