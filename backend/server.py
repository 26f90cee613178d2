"""The dsquare backend server: one ZeroMQ ROUTER socket, a bounded FIFO job queue, one worker per device.

Threads:
  * the I/O thread owns the socket. It decodes every message (``protocol.codec``), answers what
    it cannot accept with an ``Error`` naming the field and the limit, checks jobs against the
    advertised limits (``protocol.validate``), queues them, routes each job's events to the client
    that currently owns it, answers heartbeats, cancels the jobs of clients that went silent,
    and expires finished results.
  * one worker per model set (device) takes jobs in FIFO order and runs the runner
    (``backend.pipeline.run_job`` by default) with a ``JobReporter``; what it produces goes to the
    I/O thread through a queue (workers never touch the socket).

Limits on what is read: the socket drops (without reading it) any single frame larger than
``socket_max_frame_bytes`` (2x the advertised message limit); everything else up to that is
decoded enough to answer ``too_large``. Malformed input never reaches a worker.
"""

from __future__ import annotations

import collections
import logging
import queue
import threading
import time
import traceback
from dataclasses import dataclass, field
from typing import Callable, Sequence

import zmq

from backend.errors import Cancelled, InvalidInput
from backend.jobs import FINISHED, JOB_CANCELLED, JOB_DONE, JOB_FAILED, JOB_QUEUED, JOB_RUNNING, Job, JobQueue, JobReporter, Runner
from backend.security import CurveConfig, apply_curve, check_bind
from protocol.codec import DecodeLimits, decode, encode, peek_job_id
from protocol.errors import ErrorCode, ProtocolError
from protocol.messages import (MODES, PROTOCOL_VERSION, Accepted, Attach, Bye, Cancel, Error, Hello, Limits, Message,
                               Ping, Pong, Progress, Result, Submit, Welcome)
from protocol.validate import check_result, check_submit

log = logging.getLogger("dsquare.server")

SERVER_NAME = "dsquare-backend 0.1"
LOOP_S = 0.01
HOUSEKEEPING_S = 0.1
HEADER_ALLOWANCE = 1 * 2**20


@dataclass
class ServerConfig:
    """How the server runs. ``max_message_bytes`` None: derived from the model limits (a full
    turntable + a reference clip + max_vertices + 1 MiB)."""

    bind: str = "tcp://127.0.0.1:5557"
    max_message_bytes: int | None = None
    max_vertices: int = 500_000
    max_fit_iterations: int = 20_000
    max_queue: int = 32
    max_queue_per_client: int = 4
    max_clients: int = 256
    heartbeat_interval_s: float = 1.0
    heartbeat_timeout_s: float = 10.0
    result_ttl_s: float = 900.0
    result_store_bytes: int = 1 * 2**30
    preview_interval_s: float = 1.0
    curve: CurveConfig | None = None
    insecure: bool = False
    name: str = SERVER_NAME


def derived_message_bytes(resolution: int, max_views: int, max_frames: int, max_vertices: int) -> int:
    """The largest legitimate Submit: RGBA turntable + RGBA reference clip + vertices + header."""
    image = resolution * resolution * 4
    return image * (max_views + max_frames) + max_vertices * 12 + HEADER_ALLOWANCE


@dataclass
class _ClientState:
    last_seen: float
    key: str = ""
    name: str = ""


@dataclass
class _Out:
    """Something a worker produced for the I/O thread."""

    job: Job
    msg: Message
    frames: list | None = None
    terminal: bool = False
    state: str = ""


class Server:
    """See the module docstring. ``model_sets``: one per worker/device (their first one's limits
    are advertised); without model sets (mechanics tests), give ``limits`` and ``workers``.

    runner(submit, models, report, cancel) -> Result; default ``backend.pipeline.run_job``.
    """

    def __init__(self, config: ServerConfig | None = None, *, model_sets: Sequence | None = None,
                 model_limits=None, runner: Runner | None = None, workers: int = 1, models_name: str | None = None,
                 devices: Sequence[str] | None = None):
        self.config = config = config or ServerConfig()
        self.model_sets = list(model_sets or [])
        if self.model_sets:
            model_limits = model_limits or self.model_sets[0].limits
            workers = len(self.model_sets)
            devices = devices or [m.device for m in self.model_sets]
            models_name = models_name or self.model_sets[0].name
        if model_limits is None:
            raise InvalidInput("model_limits", "give model sets or their ModelLimits")
        if workers < 1:
            raise InvalidInput("workers", f"need at least one worker, got {workers}")
        check_bind(config.bind, config.curve, config.insecure)
        if runner is None:
            from backend.pipeline import run_job as runner  # the lead's pipeline; imported only when used
        self.runner = runner
        self.models_name = models_name or "unnamed"
        self.devices = list(devices or ["cpu"] * workers)
        self.num_workers = workers
        max_bytes = config.max_message_bytes or derived_message_bytes(
            model_limits.resolution, max(model_limits.views), max(model_limits.frames), config.max_vertices)
        self.limits = Limits(
            views=[int(v) for v in model_limits.views], frames=[int(f) for f in model_limits.frames],
            resolution=int(model_limits.resolution), elevation_deg=[float(e) for e in model_limits.elevation_deg],
            max_steps=int(model_limits.max_steps), max_fit_iterations=config.max_fit_iterations,
            max_vertices=config.max_vertices, max_message_bytes=int(max_bytes), max_queue=config.max_queue,
            max_queue_per_client=config.max_queue_per_client, heartbeat_interval_s=config.heartbeat_interval_s,
            heartbeat_timeout_s=config.heartbeat_timeout_s, result_ttl_s=config.result_ttl_s, modes=list(MODES))
        self.decode_limits = DecodeLimits(max_message_bytes=self.limits.max_message_bytes)
        self.socket_max_frame_bytes = 2 * self.limits.max_message_bytes

        self._lock = threading.RLock()
        self._jobs: dict[str, Job] = {}
        self._clients: dict[bytes, _ClientState] = {}
        self._queue = JobQueue(config.max_queue)
        self._out: queue.SimpleQueue[_Out] = queue.SimpleQueue()
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._threads: list[threading.Thread] = []
        self._seq = 0
        self._start_error: BaseException | None = None
        self.endpoint: str | None = None
        self.crashed = False
        self.stats: collections.Counter = collections.Counter()
        self.busy = [False] * workers  # per worker: running a job

    # ----------------------------------------------------------------------------------- lifecycle

    def start(self, timeout: float = 10.0) -> "Server":
        """Bind and start the threads; returns once the socket is bound (``endpoint`` is set)."""
        io = threading.Thread(target=self._io_main, name="dsquare-io", daemon=True)
        io.start()
        self._threads.append(io)
        if not self._ready.wait(timeout) or self._start_error is not None:
            self._stop.set()
            raise RuntimeError(f"server failed to start on {self.config.bind}: {self._start_error!r}")
        for i in range(self.num_workers):
            t = threading.Thread(target=self._worker_main, args=(i,), name=f"dsquare-worker-{i}", daemon=True)
            t.start()
            self._threads.append(t)
        log.info("dsquare server on %s: models %s on %s, limits %s", self.endpoint, self.models_name,
                 ",".join(self.devices), self.limits)
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Cancel everything, stop the threads and close the socket."""
        self._stop.set()
        with self._lock:
            for job in self._jobs.values():
                job.cancel.set()
        self._queue.close()
        for t in self._threads:
            t.join(timeout)

    def serve_forever(self) -> None:
        """Run until interrupted (Ctrl-C)."""
        if not self._threads:
            self.start()
        try:
            while not self._stop.is_set():
                time.sleep(0.2)
        except KeyboardInterrupt:
            log.info("interrupted: stopping")
        finally:
            self.stop()

    def __enter__(self) -> "Server":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def welcome(self) -> Welcome:
        info = {str(k)[:64]: str(v)[:200] for k, v in (self.model_sets[0].info if self.model_sets else {}).items()}
        info.update(workers=str(self.num_workers), curve="on" if self.config.curve else "off")
        return Welcome(protocol=PROTOCOL_VERSION, server=self.config.name, models=self.models_name,
                       device=",".join(self.devices), limits=self.limits, info=info)

    def job_states(self) -> dict[str, str]:
        """job id -> state, for tests and the soak script."""
        with self._lock:
            return {k: j.state for k, j in self._jobs.items()}

    def idle(self) -> bool:
        """No job running and none queued."""
        return not any(self.busy) and len(self._queue) == 0

    # ---------------------------------------------------------------------------------- I/O thread

    def _io_main(self) -> None:
        ctx = zmq.Context()
        auth = None
        sock = ctx.socket(zmq.ROUTER)
        try:
            sock.setsockopt(zmq.LINGER, 0)
            sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
            sock.setsockopt(zmq.ROUTER_HANDOVER, 1)
            sock.setsockopt(zmq.MAXMSGSIZE, self.socket_max_frame_bytes)
            sock.setsockopt(zmq.SNDHWM, 10_000)
            sock.setsockopt(zmq.RCVHWM, 10_000)
            ivl = max(int(self.config.heartbeat_interval_s * 1000), 100)
            sock.setsockopt(zmq.HEARTBEAT_IVL, ivl)
            sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, max(int(self.config.heartbeat_timeout_s * 1000), 2 * ivl))
            if self.config.curve is not None:
                auth = apply_curve(sock, ctx, self.config.curve)
            sock.bind(self.config.bind)
            self.endpoint = sock.getsockopt_string(zmq.LAST_ENDPOINT)
        except Exception as exc:
            self._start_error = exc
            self._ready.set()
            sock.close(0)
            if auth is not None:
                auth.stop()
            ctx.term()
            return
        self._sock = sock
        self._ready.set()
        next_housekeeping = 0.0
        try:
            while not self._stop.is_set():
                if sock.poll(int(LOOP_S * 1000), zmq.POLLIN):
                    for _ in range(1000):
                        try:
                            frames = sock.recv_multipart(flags=zmq.NOBLOCK, copy=False)
                        except zmq.Again:
                            break
                        self._on_frames(frames)
                self._drain_out()
                now = time.monotonic()
                if now >= next_housekeeping:
                    next_housekeeping = now + HOUSEKEEPING_S
                    self._housekeeping(now)
        except Exception:  # a bug in the loop itself: log loudly, then stop (workers notice _stop)
            log.critical("server I/O loop crashed:\n%s", traceback.format_exc())
            self.crashed = True
            self._stop.set()
        finally:
            self._queue.close()
            sock.close(0)
            if auth is not None:
                auth.stop()
            ctx.term()

    def _send(self, identity: bytes, frames: list) -> bool:
        try:
            self._sock.send_multipart([identity, *frames], flags=zmq.NOBLOCK, copy=False)
            self.stats["sent"] += 1
            return True
        except zmq.Again:
            self.stats["dropped_full"] += 1  # the client is not reading; terminal messages stay for Attach
        except zmq.ZMQError as exc:
            if exc.errno == zmq.EHOSTUNREACH:
                self.stats["dropped_gone"] += 1  # the client disconnected
            else:
                log.warning("send to %r failed: %s", identity, exc)
                self.stats["dropped_error"] += 1
        return False

    def _reply(self, identity: bytes, msg: Message) -> None:
        if isinstance(msg, Error):
            self.stats["errors_sent"] += 1
        self._send(identity, encode(msg))

    def _on_frames(self, frames: list) -> None:
        self.stats["received"] += 1
        identity, body = frames[0].bytes, frames[1:]
        try:
            msg = decode(body, self.decode_limits)
        except ProtocolError as err:
            self.stats["malformed"] += 1
            self._reply(identity, err.to_message(job_id=peek_job_id(body, self.decode_limits) if body else ""))
            return
        try:
            user_id = frames[1].get("User-Id") if self.config.curve is not None else ""
        except zmq.ZMQError:
            user_id = ""
        try:
            self._dispatch(identity, user_id or "", msg)
        except ProtocolError as err:
            self.stats["refused"] += 1
            self._reply(identity, err.to_message())
        except Exception as exc:  # a server bug: answer it, log it, keep serving
            log.error("error handling %s: %s", type(msg).__name__, traceback.format_exc())
            self._reply(identity, Error(code=ErrorCode.INTERNAL, message=f"server error: {exc!r}", field="",
                                        job_id=getattr(msg, "job_id", "")))

    def _dispatch(self, identity: bytes, key: str, msg: Message) -> None:
        now = time.monotonic()
        client = self._clients.get(identity)
        if client is None:
            if len(self._clients) >= self.config.max_clients:
                raise ProtocolError(ErrorCode.LIMIT_EXCEEDED, "clients",
                                    f"{len(self._clients)} clients are connected; try again later", str(self.config.max_clients),
                                    getattr(msg, "job_id", ""))
            client = self._clients[identity] = _ClientState(now, key)
        client.last_seen = now
        if isinstance(msg, Ping):
            self._on_ping(identity, msg)
        elif isinstance(msg, Hello):
            client.name = msg.client[:100]
            self._reply(identity, self.welcome())
        elif isinstance(msg, Submit):
            self._on_submit(identity, key, msg)
        elif isinstance(msg, Cancel):
            self._on_cancel(identity, key, msg.job_id)
        elif isinstance(msg, Attach):
            self._on_attach(identity, key, msg.job_id)
        elif isinstance(msg, Bye):
            if msg.cancel_jobs:
                self._cancel_owned(identity, "the client said goodbye")
            self._clients.pop(identity, None)
        else:
            raise ProtocolError(ErrorCode.BAD_MESSAGE, "k", f"the server does not take {msg.KIND!r} messages",
                                "hello/submit/cancel/attach/ping/bye", getattr(msg, "job_id", ""))

    def _on_ping(self, identity: bytes, ping: Ping) -> None:
        states = {}
        with self._lock:
            for job_id in ping.jobs[:256]:
                job = self._jobs.get(job_id)
                states[job_id[:64]] = job.state if job is not None else "unknown"
        self._reply(identity, Pong(seq=ping.seq, jobs=states, queue_length=len(self._queue)))

    def _on_submit(self, identity: bytes, key: str, sub: Submit) -> None:
        check_submit(sub, self.limits)
        with self._lock:
            existing = self._jobs.get(sub.job_id)
            if existing is not None:  # a re-send after a reconnect: the same job, not a second one
                self.stats["resubmits"] += 1
                self._attach(identity, key, existing)
                return
            active = sum(1 for j in self._jobs.values() if j.owner == identity and not j.finished)
            if active >= self.config.max_queue_per_client:
                raise ProtocolError(ErrorCode.QUEUE_FULL, "queue",
                                    f"this client already has {active} unfinished jobs; wait for one to finish",
                                    f"{self.config.max_queue_per_client} jobs per client", sub.job_id)
            self._seq += 1
            job = Job(sub.job_id, sub, identity, key, seq=self._seq)
            try:
                ahead = self._queue.put(job)
            except OverflowError:
                raise ProtocolError(ErrorCode.QUEUE_FULL, "queue", f"the server's queue is full ({len(self._queue)} jobs)",
                                    f"{self.config.max_queue} jobs", sub.job_id) from None
            self._jobs[sub.job_id] = job
            self.stats["accepted"] += 1
        self._reply(identity, Accepted(job_id=sub.job_id, queue_position=ahead))
        self._reply(identity, Progress(job_id=sub.job_id, stage="queued", message=self._queued_text(ahead)))

    @staticmethod
    def _queued_text(ahead: int) -> str:
        return "next in line" if ahead == 0 else f"{ahead} job{'s' if ahead != 1 else ''} ahead"

    def _visible(self, job: Job | None, key: str) -> bool:
        """Jobs are found by id; with CURVE only by the key that submitted them."""
        return job is not None and (not job.owner_key or job.owner_key == key)

    def _on_cancel(self, identity: bytes, key: str, job_id: str) -> None:
        with self._lock:
            job = self._jobs.get(job_id)
            if not self._visible(job, key):
                raise ProtocolError(ErrorCode.UNKNOWN_JOB, "job_id", "no such job (never submitted, or expired)", "", job_id)
            if job.finished:
                return  # too late: its last message was already sent
            self._cancel_job(job, "cancelled by the client")

    def _cancel_job(self, job: Job, why: str) -> None:
        job.cancel.set()
        if job.state == JOB_QUEUED and self._queue.remove(job):
            self._finish(job, Error(code=ErrorCode.CANCELLED, message=f"{why} before it started", field="job_id",
                                    job_id=job.job_id), JOB_CANCELLED)
            self._update_queue_positions()
        # a running job stops at its next progress call; the worker then reports it

    def _cancel_owned(self, identity: bytes, why: str) -> None:
        with self._lock:
            for job in list(self._jobs.values()):
                if job.owner == identity and not job.finished:
                    self.stats["cancelled_for_client"] += 1
                    self._cancel_job(job, why)

    def _on_attach(self, identity: bytes, key: str, job_id: str) -> None:
        with self._lock:
            job = self._jobs.get(job_id)
            if not self._visible(job, key):
                raise ProtocolError(ErrorCode.UNKNOWN_JOB, "job_id",
                                    f"no such job (never submitted, or its result expired after {self.config.result_ttl_s:.0f} s)",
                                    f"results kept {self.config.result_ttl_s:.0f} s", job_id)
            self._attach(identity, key, job)

    def _attach(self, identity: bytes, key: str, job: Job) -> None:
        self.stats["attached"] += 1
        job.owner = identity
        if job.finished:
            if job.terminal_frames is not None:
                self._send(identity, job.terminal_frames)
            return
        position = -1 if job.state == JOB_RUNNING else self._queue.positions().get(job.job_id, 0)
        self._reply(identity, Accepted(job_id=job.job_id, queue_position=position))
        if job.last_progress is not None:
            self._reply(identity, job.last_progress)

    def _finish(self, job: Job, msg: Message, state: str, frames: list | None = None) -> None:
        """Record a job's last message and send it to its owner (I/O thread, under the lock)."""
        frames = frames if frames is not None else encode(msg)
        job.state, job.terminal, job.terminal_frames = state, msg, frames
        job.terminal_bytes = sum(len(f) for f in frames)
        job.finished_at = time.monotonic()
        job.submit = None
        self.stats[f"jobs_{state}"] += 1
        if isinstance(msg, Error):
            self.stats["errors_sent"] += 1
        self._send(job.owner, frames)

    def _update_queue_positions(self) -> None:
        for job_id, ahead in self._queue.positions().items():
            job = self._jobs.get(job_id)
            if job is not None:
                job.last_progress = Progress(job_id=job_id, stage="queued", message=self._queued_text(ahead))
                self._reply(job.owner, job.last_progress)

    def _drain_out(self) -> None:
        for _ in range(10_000):
            try:
                out = self._out.get_nowait()
            except queue.Empty:
                return
            with self._lock:
                job = out.job
                if out.msg is None:  # a worker started the job
                    self._update_queue_positions()
                    continue
                if out.terminal:
                    self._finish(job, out.msg, out.state, out.frames)
                elif not job.finished:
                    if isinstance(out.msg, Progress):
                        job.last_progress = out.msg
                    self._send(job.owner, out.frames if out.frames is not None else encode(out.msg))

    def _housekeeping(self, now: float) -> None:
        timeout = self.config.heartbeat_timeout_s
        with self._lock:
            for identity, client in list(self._clients.items()):
                if now - client.last_seen > timeout:
                    self.stats["clients_timed_out"] += 1
                    log.info("client %r silent for %.1f s: cancelling its jobs", identity, now - client.last_seen)
                    self._cancel_owned(identity, f"the client sent no heartbeat for {timeout:.1f} s")
                    del self._clients[identity]
            finished = [j for j in self._jobs.values() if j.finished]
            for job in finished:
                if now - (job.finished_at or now) > self.config.result_ttl_s:
                    del self._jobs[job.job_id]
                    self.stats["results_expired"] += 1
            total = sum(j.terminal_bytes for j in self._jobs.values() if j.finished)
            if total > self.config.result_store_bytes:
                for job in sorted((j for j in self._jobs.values() if j.finished), key=lambda j: j.finished_at or 0.0):
                    if total <= self.config.result_store_bytes:
                        break
                    total -= job.terminal_bytes
                    del self._jobs[job.job_id]
                    self.stats["results_evicted"] += 1

    # ------------------------------------------------------------------------------------- workers

    def _worker_main(self, index: int) -> None:
        models = self.model_sets[index] if self.model_sets else None
        while not self._stop.is_set():
            job = self._queue.take(timeout=0.2)
            if job is None:
                continue
            self.busy[index] = True
            try:
                self._out.put(_Out(job, None))  # queue positions moved
                self._run_job(job, models)
            finally:
                self.busy[index] = False

    def _run_job(self, job: Job, models) -> None:
        sub = job.submit
        send = lambda msg: self._out.put(_Out(job, msg))  # noqa: E731
        reporter = JobReporter(job.job_id, send, job.cancel, self.config.preview_interval_s,
                               previews=bool(sub.options.previews))
        t0 = time.monotonic()
        log.info("job %s started (mode %s, %d views x %d frames, %d steps), waited %.1f s", job.job_id, sub.mode,
                 sub.cameras.num_views, sub.options.frames, sub.options.steps, (job.started_at or t0) - job.submitted_at)
        try:
            if job.cancel.is_set():
                raise Cancelled("cancelled before it started")
            reporter.progress("starting", 0, 0, f"on {models.device if models is not None else self.devices[0]}")
            result = self.runner(sub, models, reporter, job.cancel)
            if job.cancel.is_set():
                raise Cancelled("cancelled as it finished")
            if not isinstance(result, Result):
                raise TypeError(f"the runner returned {type(result).__name__}, not a Result")
            result.job_id = job.job_id
            result.timings.setdefault("job_total", time.monotonic() - t0)
            result.timings.setdefault("queue_wait", (job.started_at or t0) - job.submitted_at)
            check_result(result, sub)
            frames = encode(result)
            self._out.put(_Out(job, result, frames, terminal=True, state=JOB_DONE))
            log.info("job %s done in %.1f s", job.job_id, time.monotonic() - t0)
            return
        except Cancelled as exc:
            err = Error(code=ErrorCode.CANCELLED, message=str(exc) or "cancelled", field="job_id", job_id=job.job_id)
            state = JOB_CANCELLED
        except InvalidInput as exc:
            err = Error(code=ErrorCode.INVALID_INPUT, message=exc.message, field=exc.field, job_id=job.job_id)
            state = JOB_FAILED
        except ProtocolError as exc:
            err = exc.to_message(job.job_id)
            state = JOB_FAILED
        except Exception as exc:
            log.error("job %s failed:\n%s", job.job_id, traceback.format_exc())
            err = Error(code=ErrorCode.JOB_FAILED, message=f"{type(exc).__name__}: {exc}"[:2000], field="", job_id=job.job_id)
            state = JOB_FAILED
        log.info("job %s %s after %.1f s: %s %s", job.job_id, state, time.monotonic() - t0, err.code, err.message[:200])
        self._out.put(_Out(job, err, encode(err), terminal=True, state=state))
