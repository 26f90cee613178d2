"""The dsquare client: non-blocking, thread-safe, usable from ``bpy.app.timers`` and from scripts.

A background I/O thread owns the ZeroMQ DEALER socket: it sends what the public methods queue,
receives and decodes what the server sends, pings the server every heartbeat interval and, when
the server has been silent for ``timeout_s``, reports ``ConnectionLost``, opens a fresh socket and
says Hello again. After the new Welcome it re-sends the jobs the server had not acknowledged and
re-attaches to the ones still running, so a server restart or a network drop loses nothing the
server still knows about (and says ``unknown_job`` about what it lost).

Public methods never block on the network (``wait``/``wait_connected`` are the exceptions, for
scripts and tests)::

    client = Client("tcp://127.0.0.1:5557").connect()
    ...                                   # later, e.g. in a timer callback:
    for event in client.poll():           # Welcome, Accepted, Progress, Preview, Result, Error, ConnectionLost
        ...
    job_id = client.submit(submit)        # raises ProtocolError at once if the job breaks the limits
    client.cancel(job_id)

Arrays in a submitted job are sent without copying: do not modify them until the job is accepted.
Arrays in received messages may be read-only views of the received frames (copy to modify).
The I/O thread is a daemon; call ``close()`` when done (an add-on: in ``unregister``). ``close()``
leaves the jobs running on the server (re-attach later by id) unless ``cancel_jobs=True``; a client
that simply vanishes has its jobs cancelled after the server's heartbeat timeout.
Only ``protocol`` and pyzmq are imported (no torch, no bpy).
"""

from __future__ import annotations

import collections
import logging
import threading
import time
import uuid
from dataclasses import dataclass, field, replace
from typing import Any

import zmq

from protocol.codec import DecodeLimits, decode, encode
from protocol.errors import ErrorCode, ProtocolError
from protocol.messages import (Accepted, Attach, Bye, Cancel, Error, Hello, Limits, Message, Ping, Pong, Preview,
                               Progress, Result, Submit, Welcome)
from protocol.validate import check_submit

log = logging.getLogger("dsquare.client")

CLIENT_NAME = "dsquare-client"
MAX_SUBMIT_ATTEMPTS = 3
DEFAULT_TIMEOUT_S = 10.0
DEFAULT_HEARTBEAT_S = 1.0
LOOP_S = 0.01  # the I/O thread's poll period: the most any command waits before it is sent


@dataclass(frozen=True)
class ConnectionLost:
    """Client-side event: the server has been silent for ``silent_s`` seconds; the client is
    reconnecting (a new ``Welcome`` follows when the server answers again)."""

    reason: str
    silent_s: float


Event = Message | ConnectionLost


@dataclass(frozen=True)
class CurveKeys:
    """CURVE keys (Z85, 40 characters each): the server's public key and this client's pair."""

    server_public: bytes
    public: bytes
    secret: bytes


def load_curve_keys(server_public_file: str, client_secret_file: str) -> CurveKeys:
    """Keys from the files ``python -m backend keys`` writes (``NAME.key``, ``NAME.key_secret``)."""
    import zmq.auth

    server_public, _ = zmq.auth.load_certificate(server_public_file)
    public, secret = zmq.auth.load_certificate(client_secret_file)
    if secret is None:
        raise ProtocolError(ErrorCode.INVALID_INPUT, "client_secret_file", f"{client_secret_file} holds no secret key",
                            "a NAME.key_secret file")
    return CurveKeys(server_public, public, secret)


JOB_STATES = ("sending", "queued", "running", "done", "failed", "cancelled")
TERMINAL_STATES = ("done", "failed", "cancelled")


@dataclass
class JobInfo:
    """What the client knows about one job (a snapshot when returned by ``job``/``jobs``).

    state: 'sending' (not yet acknowledged), 'queued', 'running', 'done', 'failed', 'cancelled'.
    """

    job_id: str
    state: str = "sending"
    queue_position: int = 0
    progress: Progress | None = None
    result: Result | None = None
    error: Error | None = None
    submitted_at: float = 0.0
    finished_at: float | None = None
    attempts: int = 0
    frames: list | None = field(default=None, repr=False)  # the encoded Submit, kept until acknowledged

    @property
    def finished(self) -> bool:
        return self.state in TERMINAL_STATES


class Client:
    """Thread-safe, non-blocking dsquare client (see the module docstring).

    endpoint: 'tcp://host:port' of ``python -m backend serve``; curve: keys when the server uses
    CURVE; timeout_s: server silence after which the client reconnects; max_message_bytes: the
    largest message accepted from the server (results can be large); max_events: events kept for
    ``poll`` (the oldest Progress/Preview events are dropped first, never a job's last message);
    keep_finished: finished jobs remembered for ``job``/``wait``.
    """

    def __init__(self, endpoint: str = "tcp://127.0.0.1:5557", *, name: str = CLIENT_NAME, curve: CurveKeys | None = None,
                 timeout_s: float = DEFAULT_TIMEOUT_S, heartbeat_interval_s: float | None = None,
                 max_message_bytes: int = 2**31 - 1, max_events: int = 10_000, keep_finished: int = 64):
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be positive, got {timeout_s}")
        self.endpoint = endpoint
        self.name = name
        self.curve = curve
        self.timeout_s = float(timeout_s)
        self._heartbeat_override = heartbeat_interval_s
        self.max_message_bytes = int(max_message_bytes)
        self.max_events = int(max_events)
        self.keep_finished = int(keep_finished)
        self.routing_id = b"dsq-" + uuid.uuid4().hex[:16].encode()

        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._commands: collections.deque = collections.deque()
        self._events: collections.deque = collections.deque()
        self._jobs: dict[str, JobInfo] = {}
        self._welcome: Welcome | None = None
        self._state = "idle"  # idle | connecting | connected | closed
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._fatal: BaseException | None = None
        self.stats = collections.Counter()

    # ----------------------------------------------------------------------------------- public API

    def connect(self) -> "Client":
        """Start the I/O thread and say Hello. Returns at once; a ``Welcome`` event follows."""
        with self._lock:
            if self._state == "closed":
                raise ProtocolError(ErrorCode.NOT_CONNECTED, "client", "this client was closed; make a new one")
            if self._thread is None:
                self._state = "connecting"
                self._thread = threading.Thread(target=self._run, name=f"dsquare-client-{self.routing_id.decode()}",
                                                daemon=True)
                self._thread.start()
        return self

    @property
    def state(self) -> str:
        """'idle' (not connected yet), 'connecting', 'connected' or 'closed'."""
        return self._state

    @property
    def welcome(self) -> Welcome | None:
        """The last Welcome (server version, models, device, limits), or None before the first."""
        return self._welcome

    @property
    def limits(self) -> Limits | None:
        return None if self._welcome is None else self._welcome.limits

    def hello(self) -> Welcome | None:
        """Ask the server for a fresh Welcome (arrives as an event); returns the last one known."""
        self._command(("send", encode(Hello(client=self.name))))
        return self._welcome

    def submit(self, submit: Submit) -> str:
        """Queue a job for sending; returns its job id at once.

        Checked here against the server's advertised limits: raises ProtocolError (naming the
        field and the limit) for a job the server would refuse, and NOT_CONNECTED before the
        first Welcome (the limits are not known yet).
        """
        welcome = self._welcome
        if self._state == "closed":
            raise ProtocolError(ErrorCode.NOT_CONNECTED, "client", "this client was closed", "", submit.job_id)
        if welcome is None:
            raise ProtocolError(ErrorCode.NOT_CONNECTED, "connection",
                                f"no answer from the server at {self.endpoint} yet; its limits are unknown", "",
                                submit.job_id)
        frames = encode(submit, welcome.limits.max_message_bytes)  # dtype/shape refusals name the field
        # check exactly what the server will decode (arrays coerced by the encoder, zero-copy views)
        check_submit(decode(frames, DecodeLimits(max_message_bytes=welcome.limits.max_message_bytes)), welcome.limits)
        with self._lock:
            old = self._jobs.get(submit.job_id)
            if old is not None and not old.finished:
                raise ProtocolError(ErrorCode.INVALID_INPUT, "job_id", "a job with this id is already running",
                                    "unique job ids", submit.job_id)
            self._jobs[submit.job_id] = JobInfo(submit.job_id, "sending", submitted_at=time.monotonic(), frames=frames)
            self._commands.append(("submit", submit.job_id))
        return submit.job_id

    def cancel(self, job_id: str) -> None:
        """Ask the server to cancel a job (it ends with an Error event, code 'cancelled')."""
        self._command(("send", encode(Cancel(job_id))))

    def attach(self, job_id: str) -> None:
        """Follow a job by id (e.g. one submitted before Blender was restarted). Its events, or its
        result if it has finished (kept by the server for ``result_ttl_s``), arrive as events."""
        with self._lock:
            info = self._jobs.get(job_id)
            if info is None or info.finished:
                self._jobs[job_id] = JobInfo(job_id, "queued", submitted_at=time.monotonic())
        self._command(("send", encode(Attach(job_id))))

    def poll(self, max_events: int | None = None) -> list[Event]:
        """Everything that arrived since the last call (oldest first). Never blocks."""
        with self._lock:
            n = len(self._events) if max_events is None else min(max_events, len(self._events))
            return [self._events.popleft() for _ in range(n)]

    def job(self, job_id: str) -> JobInfo | None:
        """A snapshot of what is known about a job, or None."""
        with self._lock:
            info = self._jobs.get(job_id)
            return None if info is None else replace(info, frames=None)

    def jobs(self) -> dict[str, JobInfo]:
        with self._lock:
            return {k: replace(v, frames=None) for k, v in self._jobs.items()}

    def forget(self, job_id: str) -> None:
        """Drop a finished job (and its result) from the client's memory."""
        with self._lock:
            info = self._jobs.get(job_id)
            if info is not None and info.finished:
                del self._jobs[job_id]

    def close(self, cancel_jobs: bool = False, timeout: float = 2.0) -> None:
        """Say Bye (cancelling this client's unfinished jobs if ``cancel_jobs``) and stop."""
        with self._lock:
            if self._state == "closed":
                return
            thread = self._thread
            if thread is not None:
                self._commands.append(("bye", cancel_jobs))
            self._state = "closed"
            self._changed.notify_all()
        if thread is not None:
            self._stop.set()
            thread.join(timeout)

    def __enter__(self) -> "Client":
        return self.connect()

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------------ blocking helpers (scripts/tests)

    def wait_connected(self, timeout: float = DEFAULT_TIMEOUT_S) -> Welcome:
        """Block until a Welcome has arrived. Raises TimeoutError. Not for Blender's main thread."""
        if self._thread is None:
            self.connect()
        with self._changed:
            ok = self._changed.wait_for(lambda: self._welcome is not None or self._state == "closed", timeout)
            if not ok or self._welcome is None:
                raise TimeoutError(f"no Welcome from {self.endpoint} within {timeout} s")
            return self._welcome

    def wait(self, job_id: str, timeout: float | None = None) -> Result:
        """Block until the job finishes: its Result, or raises ProtocolError (failed, cancelled,
        refused) or TimeoutError. Not for Blender's main thread."""
        with self._changed:
            def finished() -> bool:
                info = self._jobs.get(job_id)
                return info is None or info.finished or self._state == "closed"

            if not self._changed.wait_for(finished, timeout):
                raise TimeoutError(f"job {job_id} did not finish within {timeout} s")
            info = self._jobs.get(job_id)
            if info is None:
                raise ProtocolError(ErrorCode.UNKNOWN_JOB, "job_id", "this client knows no such job", "", job_id)
            if info.result is not None:
                return info.result
            if info.error is not None:
                raise ProtocolError.from_message(info.error)
            raise ProtocolError(ErrorCode.NOT_CONNECTED, "client", "the client was closed before the job finished", "", job_id)

    # ------------------------------------------------------------------------------ the I/O thread

    def _command(self, cmd: tuple) -> None:
        with self._lock:
            if self._state == "closed":
                raise ProtocolError(ErrorCode.NOT_CONNECTED, "client", "this client was closed")
            self._commands.append(cmd)
        if self._thread is None:
            self.connect()

    def _emit(self, event: Event) -> None:
        with self._lock:
            self._events.append(event)
            if len(self._events) > self.max_events:
                self._shed_events()
            self._changed.notify_all()

    def _shed_events(self) -> None:
        """Drop the oldest Progress/Preview events until half of ``max_events`` remain (a job's
        last message, Welcome, ConnectionLost are never dropped)."""
        droppable = sum(isinstance(e, (Progress, Preview)) for e in self._events)
        to_drop = min(droppable, len(self._events) - self.max_events // 2)
        kept: collections.deque = collections.deque()
        for e in self._events:
            if to_drop > 0 and isinstance(e, (Progress, Preview)):
                to_drop -= 1
                self.stats["events_dropped"] += 1
                continue
            kept.append(e)
        self._events = kept

    def _heartbeat_s(self) -> float:
        if self._heartbeat_override is not None:
            return self._heartbeat_override
        if self._welcome is not None:
            return self._welcome.limits.heartbeat_interval_s
        return DEFAULT_HEARTBEAT_S

    def _open_socket(self) -> None:
        sock = self._ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.ROUTING_ID, self.routing_id)
        sock.setsockopt(zmq.RCVHWM, 0)
        sock.setsockopt(zmq.SNDHWM, 1000)
        sock.setsockopt(zmq.MAXMSGSIZE, self.max_message_bytes)
        sock.setsockopt(zmq.RECONNECT_IVL, 100)
        sock.setsockopt(zmq.RECONNECT_IVL_MAX, 2000)
        if self.curve is not None:
            sock.curve_serverkey = self.curve.server_public
            sock.curve_publickey = self.curve.public
            sock.curve_secretkey = self.curve.secret
        sock.connect(self.endpoint)
        self._sock = sock
        self._outbox: collections.deque = collections.deque()
        self._send(encode(Hello(client=self.name)))

    def _run(self) -> None:
        self._sock = None
        self._ctx = zmq.Context()
        self._seq = 0
        now = time.monotonic()
        self._last_recv = now
        self._last_ping = 0.0
        self._had_welcome = False
        try:
            self._open_socket()
            while not self._stop.is_set():
                self._drain_commands()
                self._flush()
                if self._sock.poll(int(LOOP_S * 1000), zmq.POLLIN):
                    self._receive()
                self._tick()
            self._drain_commands(final=True)
            self._flush()
            self._sock.setsockopt(zmq.LINGER, 500)  # let the Bye go out
        except Exception as exc:  # a bug: surface it to the caller instead of dying silently
            log.exception("dsquare client I/O thread failed")
            self._fatal = exc
            self._emit(Error(code=ErrorCode.INTERNAL, message=f"client I/O thread failed: {exc!r}", field="client"))
        finally:
            try:
                if getattr(self, "_sock", None) is not None:
                    self._sock.close()
            finally:
                self._ctx.term()
                with self._lock:
                    self._state = "closed"
                    self._changed.notify_all()

    def _send(self, frames: list) -> None:
        self._outbox.append(frames)

    def _flush(self) -> None:
        while self._outbox:
            try:
                self._sock.send_multipart(self._outbox[0], flags=zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return  # the pipe is full; retry next loop
            self._outbox.popleft()
            self.stats["sent"] += 1

    def _drain_commands(self, final: bool = False) -> None:
        while True:
            with self._lock:
                if not self._commands:
                    return
                cmd = self._commands.popleft()
            kind = cmd[0]
            if kind == "send":
                self._send(cmd[1])
            elif kind == "submit":
                self._send_submit(cmd[1])
            elif kind == "bye":
                self._send(encode(Bye(cancel_jobs=bool(cmd[1]))))

    def _send_submit(self, job_id: str) -> None:
        with self._lock:
            info = self._jobs.get(job_id)
            if info is None or info.frames is None or info.state != "sending":
                return
            info.attempts += 1
            frames = info.frames
        self._send(frames)

    def _receive(self) -> None:
        for _ in range(1000):
            try:
                frames = self._sock.recv_multipart(flags=zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return
            self._last_recv = time.monotonic()
            self.stats["received"] += 1
            try:
                msg = decode(frames, DecodeLimits(max_message_bytes=self.max_message_bytes))
            except ProtocolError as err:
                log.warning("malformed message from the server: %s", err)
                self._emit(err.to_message())
                continue
            self._handle(msg)

    def _handle(self, msg: Message) -> None:
        if isinstance(msg, Pong):
            self._on_pong(msg)
            return
        if isinstance(msg, Welcome):
            with self._lock:
                self._welcome = msg
                self._state = "connected" if self._state != "closed" else "closed"
                resend = [j for j in self._jobs.values() if j.state == "sending"]
                reattach = [j.job_id for j in self._jobs.values() if j.state in ("queued", "running")]
                self._changed.notify_all()
            if self._had_welcome:
                for info in resend:
                    self._send_submit(info.job_id)
                for job_id in reattach:
                    self._send(encode(Attach(job_id)))
            self._had_welcome = True
            self._emit(msg)
            return
        job_id = getattr(msg, "job_id", "")
        with self._lock:
            info = self._jobs.get(job_id) if job_id else None
            if info is not None and info.finished:
                return  # a re-sent terminal message or a straggler: the job's end was already reported
            if info is not None:
                if isinstance(msg, Accepted):
                    info.state = "running" if msg.queue_position < 0 else "queued"
                    info.queue_position = msg.queue_position
                    info.frames = None  # acknowledged: the server has it
                elif isinstance(msg, Progress):
                    info.progress = msg
                    if info.state == "sending":
                        info.frames = None
                    info.state = "queued" if msg.stage == "queued" else "running"
                elif isinstance(msg, Result):
                    self._finish(info, "done", result=msg)
                elif isinstance(msg, Error):
                    self._finish(info, "cancelled" if msg.code == ErrorCode.CANCELLED else "failed", error=msg)
        self._emit(msg)

    def _finish(self, info: JobInfo, state: str, result: Result | None = None, error: Error | None = None) -> None:
        info.state, info.result, info.error, info.frames = state, result, error, None
        info.finished_at = time.monotonic()
        finished = [j for j in self._jobs.values() if j.finished]
        if len(finished) > self.keep_finished:
            finished.sort(key=lambda j: j.finished_at or 0.0)
            for old in finished[: len(finished) - self.keep_finished]:
                del self._jobs[old.job_id]
        self._changed.notify_all()

    def _on_pong(self, pong: Pong) -> None:
        lost = []
        with self._lock:
            for job_id, server_state in pong.jobs.items():
                info = self._jobs.get(job_id)
                if info is None or info.finished:
                    continue
                if server_state == "unknown":
                    if info.state == "sending":
                        if info.attempts >= MAX_SUBMIT_ATTEMPTS:
                            lost.append((info, f"the server did not receive the job after {info.attempts} attempts"))
                        elif self._state == "connected":
                            self._commands.append(("submit", job_id))
                    else:
                        lost.append((info, "the server no longer knows this job (was it restarted?)"))
                elif server_state in ("done", "failed", "cancelled"):
                    # its last message was lost on the way (e.g. a full send queue): ask again
                    self._commands.append(("send", encode(Attach(job_id))))
            for info, why in lost:
                err = Error(code=ErrorCode.UNKNOWN_JOB, message=why, field="job_id", job_id=info.job_id)
                self._finish(info, "failed", error=err)
                self._events.append(err)

    def _tick(self) -> None:
        now = time.monotonic()
        if now - self._last_ping >= self._heartbeat_s():
            self._last_ping = now
            self._seq += 1
            with self._lock:
                waiting = [j.job_id for j in self._jobs.values() if not j.finished][:256]
            self._send(encode(Ping(seq=self._seq, jobs=waiting)))
        silent = now - self._last_recv
        if silent > self.timeout_s:
            self.stats["reconnects"] += 1
            log.info("server %s silent for %.1f s: reconnecting", self.endpoint, silent)
            with self._lock:
                if self._state != "closed":
                    self._state = "connecting"
            self._emit(ConnectionLost(f"no answer from {self.endpoint} for {silent:.1f} s; reconnecting", silent))
            self._sock.close(linger=0)
            self._open_socket()
            self._last_recv = now
