"""Jobs on the server: the ``Reporter`` a pipeline talks to, the job record, and the FIFO queue.

A runner (``backend.pipeline.run_job`` by default) has the signature::

    run_job(submit: protocol.messages.Submit, models: ModelSet | None, report: Reporter,
            cancel: threading.Event) -> protocol.messages.Result

It calls ``report.progress`` at least once per sampling step and per 50 fitting iterations, may
call ``report.preview`` as often as it likes (the server throttles), raises
``backend.errors.Cancelled`` when ``cancel`` is set and ``backend.errors.InvalidInput`` for bad job
content. ``report.progress`` itself raises ``Cancelled`` once the job is cancelled, so a job stops
within one step even where the runner forgets to look at ``cancel``.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Protocol

import numpy as np

from backend.errors import Cancelled
from protocol.messages import Message, Preview, Progress, Result, Submit

log = logging.getLogger("dsquare.jobs")

MAX_PREVIEW_SIDE = 256
MAX_PREVIEW_IMAGES = 64


class Reporter(Protocol):
    """How a running job tells its client what it is doing."""

    def progress(self, stage: str, step: int, total: int, message: str = "") -> None:
        """stage: 'sampling', 'fitting', ...; step of total (total 0: unknown). Raises Cancelled
        when the job has been cancelled."""
        ...

    def preview(self, kind: str, images: np.ndarray) -> None:
        """Small pictures of work in progress: uint8 [N, H, W, 3|4]. Throttled to one per
        ``preview_interval_s`` (the latest wins); downscaled to at most 256 px."""
        ...


Runner = Callable[[Submit, object, Reporter, threading.Event], Result]


def shrink_preview(images: np.ndarray, max_side: int = MAX_PREVIEW_SIDE, max_images: int = MAX_PREVIEW_IMAGES) -> np.ndarray:
    """uint8 [N, H, W, C] -> at most max_images images of at most max_side pixels (strided), C-contiguous."""
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] not in (3, 4):
        raise ValueError(f"previews are uint8 [N, H, W, 3|4], got {images.dtype} {list(images.shape)}")
    if images.shape[0] > max_images:
        images = images[np.linspace(0, images.shape[0] - 1, max_images).round().astype(int)]
    step = max(1, -(-max(images.shape[1], images.shape[2]) // max_side))
    return np.ascontiguousarray(images[:, ::step, ::step])


class JobReporter:
    """The server's Reporter for one job: turns calls into Progress/Preview messages.

    send: called with each message (from the worker thread); cancel: the job's cancel event.
    ETA is per stage: time per step so far in this stage times the steps left.
    """

    def __init__(self, job_id: str, send: Callable[[Message], None], cancel: threading.Event,
                 preview_interval_s: float = 1.0, previews: bool = True, clock: Callable[[], float] = time.monotonic):
        self.job_id = job_id
        self._send = send
        self._cancel = cancel
        self._interval = preview_interval_s
        self._previews = previews
        self._clock = clock
        self._started = clock()
        self._stage: str | None = None
        self._stage_t0 = self._started
        self._stage_step0 = 0
        self._last_preview = -float("inf")
        self._pending: Preview | None = None
        self.progress_sent = 0
        self.previews_sent = 0
        self.last_progress: Progress | None = None

    def progress(self, stage: str, step: int, total: int, message: str = "") -> None:
        if self._cancel.is_set():
            raise Cancelled(f"job {self.job_id} cancelled")
        now = self._clock()
        step, total = int(step), int(total)
        if stage != self._stage:
            self._stage, self._stage_t0, self._stage_step0 = stage, now, step
        done = step - self._stage_step0
        eta = (now - self._stage_t0) / done * (total - step) if done > 0 and total > 0 else -1.0
        msg = Progress(job_id=self.job_id, stage=str(stage), step=step, total=total, eta_s=float(max(eta, -1.0)),
                       elapsed_s=now - self._started, message=str(message)[:500])
        self.last_progress = msg
        self._send(msg)
        self.progress_sent += 1
        self._flush_preview(now)

    def preview(self, kind: str, images: np.ndarray) -> None:
        if not self._previews:
            return
        try:
            small = shrink_preview(images)
        except ValueError as exc:  # a pipeline bug; previews are optional, so the job goes on
            log.warning("job %s: preview dropped: %s", self.job_id, exc)
            return
        self._pending = Preview(job_id=self.job_id, kind=str(kind), images=small.copy())
        self._flush_preview(self._clock())

    def _flush_preview(self, now: float) -> None:
        if self._pending is not None and now - self._last_preview >= self._interval:
            self._send(self._pending)
            self._pending = None
            self._last_preview = now
            self.previews_sent += 1


JOB_QUEUED, JOB_RUNNING, JOB_DONE, JOB_FAILED, JOB_CANCELLED = "queued", "running", "done", "failed", "cancelled"
FINISHED = (JOB_DONE, JOB_FAILED, JOB_CANCELLED)


@dataclass(eq=False)
class Job:
    """One job on the server. ``owner`` is the ZeroMQ routing id its events go to (Attach moves
    it); ``owner_key`` the client's CURVE public key ('' without CURVE)."""

    job_id: str
    submit: Submit | None
    owner: bytes
    owner_key: str = ""
    state: str = JOB_QUEUED
    cancel: threading.Event = field(default_factory=threading.Event)
    submitted_at: float = field(default_factory=time.monotonic)
    started_at: float | None = None
    finished_at: float | None = None
    terminal: Message | None = None
    terminal_frames: list | None = None
    terminal_bytes: int = 0
    last_progress: Progress | None = None
    seq: int = 0  # submission order

    @property
    def finished(self) -> bool:
        return self.state in FINISHED


class JobQueue:
    """Bounded FIFO of queued jobs, shared by the I/O thread (put, remove) and the workers (take)."""

    def __init__(self, max_jobs: int):
        self.max_jobs = max_jobs
        self._jobs: collections.deque[Job] = collections.deque()
        self._cond = threading.Condition()
        self._closed = False

    def __len__(self) -> int:
        with self._cond:
            return len(self._jobs)

    def put(self, job: Job) -> int:
        """Append; returns the number of jobs ahead. Raises OverflowError when full."""
        with self._cond:
            if len(self._jobs) >= self.max_jobs:
                raise OverflowError(f"{len(self._jobs)} jobs queued")
            self._jobs.append(job)
            self._cond.notify()
            return len(self._jobs) - 1

    def take(self, timeout: float) -> Job | None:
        """The oldest job, now marked running; None after ``timeout`` or once closed."""
        with self._cond:
            if not self._cond.wait_for(lambda: self._jobs or self._closed, timeout) or self._closed:
                return None
            job = self._jobs.popleft()
            job.state = JOB_RUNNING
            job.started_at = time.monotonic()
            return job

    def remove(self, job: Job) -> bool:
        """Take a queued job out (cancel); False if a worker already took it."""
        with self._cond:
            try:
                self._jobs.remove(job)
            except ValueError:
                return False
            return True

    def positions(self) -> dict[str, int]:
        with self._cond:
            return {j.job_id: i for i, j in enumerate(self._jobs)}

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
