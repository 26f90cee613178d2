"""CURVE: unknown keys get nothing, known keys work; non-loopback binds need keys or --insecure."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from backend.errors import InvalidInput
from backend.security import CurveConfig, check_bind, is_loopback_endpoint, make_keys
from backend.simulate import SimulatedRunner
from protocol.client import Client, load_curve_keys
from protocol.errors import ErrorCode, ProtocolError
from protocol.messages import Hello, Result, Welcome
from tests.protocol_fixtures import make_submit
from tests.server_fixtures import raw_socket, request, running_server

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("endpoint, local", [
    ("tcp://127.0.0.1:5557", True), ("tcp://localhost:5557", True), ("tcp://[::1]:5557", True),
    ("tcp://127.0.0.2:1", True), ("ipc:///tmp/dsq", True), ("inproc://x", True),
    ("tcp://*:5557", False), ("tcp://0.0.0.0:5557", False), ("tcp://192.168.1.5:5557", False),
    ("tcp://[::]:5557", False), ("tcp://eth0:5557", False), ("udp://127.0.0.1:1", False), ("nonsense", False),
])
def test_loopback_detection(endpoint, local):
    assert is_loopback_endpoint(endpoint) is local


def test_non_loopback_bind_needs_curve_or_insecure(tmp_path):
    with pytest.raises(InvalidInput) as info:
        check_bind("tcp://0.0.0.0:5557", None, insecure=False)
    assert info.value.field == "bind" and "--insecure" in info.value.message
    check_bind("tcp://0.0.0.0:5557", None, insecure=True)
    check_bind("tcp://127.0.0.1:5557", None, insecure=False)
    out = subprocess.run([sys.executable, "-m", "backend", "serve", "--bind", "tcp://0.0.0.0:5999"], capture_output=True,
                         text=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=60)
    assert out.returncode == 2 and "bind" in out.stderr and "--insecure" in out.stderr


def test_keys_command_writes_a_pair_and_refuses_to_overwrite(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "backend", "keys", "alice", "--dir", str(tmp_path)]
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env, timeout=60)
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "alice.key").is_file() and (tmp_path / "alice.key_secret").is_file()
    assert (tmp_path / "alice.key_secret").stat().st_mode & 0o077 == 0
    again = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env, timeout=60)
    assert again.returncode == 2 and "already exists" in again.stderr
    with pytest.raises(InvalidInput):
        make_keys(tmp_path, "../evil")
    with pytest.raises(InvalidInput) as info:
        CurveConfig.load(tmp_path / "alice.key_secret", tmp_path / "empty")
    assert info.value.field == "allow"


def test_curve_unknown_key_gets_nothing_known_key_works(tmp_path):
    server_dir, allow_dir, other_dir = tmp_path / "server", tmp_path / "allow", tmp_path / "other"
    _, server_secret = make_keys(server_dir, "server")
    make_keys(allow_dir, "alice")
    make_keys(allow_dir, "bob")
    make_keys(other_dir, "mallory")
    curve = CurveConfig.load(server_secret, allow_dir)
    with running_server(SimulatedRunner(step_s=0.01), curve=curve, bind="tcp://127.0.0.1:*") as srv:
        alice = load_curve_keys(str(server_dir / "server.key"), str(allow_dir / "alice.key_secret"))
        bob = load_curve_keys(str(server_dir / "server.key"), str(allow_dir / "bob.key_secret"))
        mallory = load_curve_keys(str(server_dir / "server.key"), str(other_dir / "mallory.key_secret"))
        for keys in (mallory, None):  # an unknown key, and no encryption at all
            with raw_socket(srv.endpoint, None if keys is None else (keys.server_public, keys.public, keys.secret)) as s:
                assert request(s, Hello(), timeout=1.0) is None
        assert srv.stats["received"] == 0
        with Client(srv.endpoint, curve=alice) as a:
            w = a.wait_connected(5)
            assert isinstance(w, Welcome) and w.info["curve"] == "on"
            sub = make_submit(steps=3)
            assert isinstance(a.wait(a.submit(sub), 10), Result)
        with Client(srv.endpoint, curve=bob) as b:  # another known key cannot take alice's job
            b.wait_connected(5)
            b.attach(sub.job_id)
            with pytest.raises(ProtocolError) as info:
                b.wait(sub.job_id, 5)
            assert info.value.code == ErrorCode.UNKNOWN_JOB
        with Client(srv.endpoint, curve=alice) as a2:  # alice, from a new session, can
            a2.wait_connected(5)
            a2.attach(sub.job_id)
            assert isinstance(a2.wait(sub.job_id, 5), Result)
