"""Live servers on loopback for the server/client tests (in-process, simulated runner)."""

from __future__ import annotations

import contextlib
import time

import msgpack
import zmq

from backend.models.base import ModelLimits
from backend.server import Server, ServerConfig
from backend.simulate import SimulatedRunner
from protocol.codec import decode, encode

SMALL_LIMITS = ModelLimits(views=(4, 8), frames=(4, 8), resolution=16, max_steps=400)


@contextlib.contextmanager
def running_server(runner=None, model_limits=SMALL_LIMITS, **config):
    config.setdefault("bind", "tcp://127.0.0.1:*")
    config.setdefault("heartbeat_interval_s", 0.2)
    config.setdefault("heartbeat_timeout_s", 3.0)
    server = Server(ServerConfig(**config), model_limits=model_limits, runner=runner or SimulatedRunner(step_s=0.01))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@contextlib.contextmanager
def raw_socket(endpoint: str, curve=None):
    """A bare DEALER for sending hand-made frames."""
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    if curve is not None:
        sock.curve_serverkey, sock.curve_publickey, sock.curve_secretkey = curve
    sock.connect(endpoint)
    try:
        yield sock
    finally:
        sock.close(0)
        ctx.term()


def request(sock, msg_or_frames, timeout: float = 5.0):
    """Send a message (or raw frames) and return the decoded reply, or None after timeout."""
    frames = encode(msg_or_frames) if not isinstance(msg_or_frames, list) else msg_or_frames
    sock.send_multipart(frames, copy=False)
    return receive(sock, timeout)


def receive(sock, timeout: float = 5.0):
    if not sock.poll(int(timeout * 1000)):
        return None
    return decode(sock.recv_multipart())


def wait_for(predicate, timeout: float = 10.0, period: float = 0.01) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(period)
    return predicate()


def header(kind: str, body: dict, arrays=(), version: int = 1) -> bytes:
    return msgpack.packb({"v": version, "k": kind, "b": body, "a": list(arrays)}, use_bin_type=True)
