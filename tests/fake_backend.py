"""A tiny in-test backend that speaks the real protocol (ROUTER socket, ``protocol.codec``).

It answers Hello with Welcome (or with a version-mismatch Error), Ping with Pong, and runs one job at
a time on a timed script: Accepted, Progress per step with an ETA, a Preview, then a Result whose
motion is known in closed form (``known_motion``), or an Error when told to fail. Cancel ends the job
with Error(code='cancelled'). It exists to test the add-on's side of the wire (the import path, the
state machine, errors) without models; the live round trip uses the real server.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import numpy as np
import zmq

from protocol.codec import DecodeLimits, decode, encode
from protocol.errors import ErrorCode
from protocol.messages import (PROTOCOL_VERSION, Accepted, Cancel, Error, Hello, Limits, Ping, Pong, Preview, Progress,
                               Result, Submit, Welcome)


def fake_limits(**overrides) -> Limits:
    values = dict(views=[4, 8], frames=[4, 6, 8], resolution=32, elevation_deg=[-30.0, 45.0], max_steps=50,
                  max_fit_iterations=2000, max_vertices=5000, max_message_bytes=64 * 2**20, max_queue=4,
                  max_queue_per_client=2, heartbeat_interval_s=0.5, heartbeat_timeout_s=10.0, result_ttl_s=60.0)
    values.update(overrides)
    return Limits(**values)


def known_motion(points: np.ndarray, f: int) -> np.ndarray:
    """The fake backend's motion: frame f turns the points 6 deg x f about +Z and lifts them 0.02 x f
    (normalised units). points float32 [P, 3] -> [P, 3]."""
    a = np.radians(6.0 * f)
    rot = np.array([[np.cos(a), -np.sin(a), 0.0], [np.sin(a), np.cos(a), 0.0], [0.0, 0.0, 1.0]])
    return (points.astype(np.float64) @ rot.T + [0.0, 0.0, 0.02 * f]).astype(np.float32)


def synthetic_result(sub: Submit, gaussians: int = 300, seed: int = 0) -> Result:
    rng = np.random.default_rng(seed)
    F = sub.options.frames
    V = sub.cameras.num_views
    base = (rng.uniform(-0.6, 0.6, size=(gaussians, 3))).astype(np.float32)
    if sub.vertices is not None and sub.vertices.shape[0]:
        base[: min(gaussians, sub.vertices.shape[0])] = sub.vertices[rng.permutation(sub.vertices.shape[0])[:gaussians]]
    centers = np.stack([known_motion(base, f) for f in range(F)])
    verts = None
    if sub.vertices is not None:
        verts = np.stack([known_motion(np.asarray(sub.vertices), f) for f in range(F)])
    thumbs = np.repeat(np.asarray(sub.turntable)[:V, ::4, ::4, :3][:, None], F, axis=1)
    return Result(job_id=sub.job_id, centers=centers,
                  colors=rng.integers(0, 256, size=(gaussians, 3), dtype=np.uint8),
                  opacities=rng.uniform(0.5, 1.0, size=gaussians).astype(np.float32),
                  scales=np.full((gaussians, 3), 0.01, np.float32), thumbnails=np.ascontiguousarray(thumbs),
                  frame_times=(np.arange(F) / sub.options.fps).astype(np.float32),
                  metrics={"fake": 1.0}, timings={"total": 0.1}, vertices=verts)


@dataclass
class FakeBackend:
    """Start with ``with FakeBackend() as fb:``; ``fb.endpoint`` is where it listens.

    behaviour: 'ok', 'fail' (the job fails after its steps), 'version' (Hello -> version mismatch),
    'mute' (reads but never answers: a backend that hangs).
    """

    behaviour: str = "ok"
    limits: Limits = field(default_factory=fake_limits)
    steps: int = 4
    step_s: float = 0.05
    gaussians: int = 300
    result_fn: object = None
    received: list = field(default_factory=list)
    cancelled: list = field(default_factory=list)
    port: int = 0  # 0: a free port
    submits: list = field(default_factory=list)  # every decoded Submit (what the add-on really sent)
    results: dict = field(default_factory=dict)  # job id -> the Result sent

    def __post_init__(self):
        self._ctx = zmq.Context()
        self._sock = self._ctx.socket(zmq.ROUTER)
        self._sock.setsockopt(zmq.LINGER, 0)
        if self.port:
            self._sock.bind(f"tcp://127.0.0.1:{self.port}")
            port = self.port
        else:
            port = self._sock.bind_to_random_port("tcp://127.0.0.1")
        self.endpoint = f"tcp://127.0.0.1:{port}"
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._job = None  # (identity, submit, script iterator, next time)

    def __enter__(self) -> "FakeBackend":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(60)
        if self._thread.is_alive():
            # zmq sockets are not thread-safe: closing one under a thread still polling it crashes the process
            raise RuntimeError("fake backend thread did not stop within 60 s; its socket is left open")
        self._sock.close(0)
        self._ctx.term()

    def welcome(self) -> Welcome:
        return Welcome(protocol=PROTOCOL_VERSION, server="fake-backend", models="fake", device="cpu", limits=self.limits)

    def _send(self, identity: bytes, msg) -> None:
        self._sock.send_multipart([identity, *encode(msg)], copy=False)

    def _script(self, sub: Submit):
        n = self.steps
        yield Accepted(sub.job_id, queue_position=-1)
        for i in range(n):
            yield Progress(sub.job_id, "sampling", i + 1, n, eta_s=(n - i - 1) * self.step_s, elapsed_s=i * self.step_s,
                           message=f"step {i + 1} of {n}")
        yield Preview(sub.job_id, "matrix", np.ascontiguousarray(np.asarray(sub.turntable)[:, ::2, ::2]))
        yield Progress(sub.job_id, "fitting", 1, 1, eta_s=0.0)
        if self.behaviour == "fail":
            yield Error(code=ErrorCode.JOB_FAILED, message="CUDA out of memory while fitting (fake)", field="fitting",
                        job_id=sub.job_id)
            return
        fn = self.result_fn or (lambda s: synthetic_result(s, self.gaussians))
        result = fn(sub)
        self.results[sub.job_id] = result
        yield result

    def _run(self) -> None:
        poller = zmq.Poller()
        poller.register(self._sock, zmq.POLLIN)
        while not self._stop.is_set():
            if dict(poller.poll(5)).get(self._sock):
                frames = self._sock.recv_multipart(copy=False)
                identity, payload = frames[0].bytes, frames[1:]
                msg = decode(payload, DecodeLimits(max_message_bytes=self.limits.max_message_bytes))
                self.received.append(type(msg).__name__)
                self._on(identity, msg)
            job = self._job
            if job is not None and time.monotonic() >= job[3]:
                identity, sub, script, _ = job
                try:
                    msg = next(script)
                except StopIteration:
                    self._job = None
                    continue
                self._send(identity, msg)
                done = isinstance(msg, (Result, Error))
                self._job = None if done else (identity, sub, script, time.monotonic() + self.step_s)

    def _on(self, identity: bytes, msg) -> None:
        if self.behaviour == "mute":
            return
        if isinstance(msg, Hello):
            if self.behaviour == "version":
                self._send(identity, Error(code=ErrorCode.VERSION_MISMATCH, field="protocol",
                                           message=f"this server speaks protocol {PROTOCOL_VERSION + 1}, the client {msg.protocol}",
                                           limit=str(PROTOCOL_VERSION + 1)))
            else:
                self._send(identity, self.welcome())
        elif isinstance(msg, Ping):
            states = {}
            for jid in msg.jobs:
                states[jid] = "running" if self._job is not None and self._job[1].job_id == jid else "unknown"
            self._send(identity, Pong(seq=msg.seq, jobs=states))
        elif isinstance(msg, Submit):
            self.submits.append(msg)
            self._job = (identity, msg, self._script(msg), time.monotonic())
        elif isinstance(msg, Cancel):
            self.cancelled.append(msg.job_id)
            if self._job is not None and self._job[1].job_id == msg.job_id:
                self._job = None
                self._send(identity, Error(code=ErrorCode.CANCELLED, message="cancelled by the client", job_id=msg.job_id))
