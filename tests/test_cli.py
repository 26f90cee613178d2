"""``python -m backend serve`` as an artist's machine runs it: a process that serves a job and stops on Ctrl-C."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np

from protocol.cameras import orbit_rig
from protocol.client import Client
from protocol.messages import Cameras, Options, Result, Submit, new_job_id

ROOT = Path(__file__).resolve().parents[1]


def test_serve_command_runs_a_job_and_stops_cleanly_on_interrupt():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    endpoint = f"tcp://127.0.0.1:{port}"
    proc = subprocess.Popen([sys.executable, "-m", "backend", "serve", "--runner", "simulated", "--sim-step", "0.001",
                             "--bind", endpoint], cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        with Client(endpoint) as c:
            w = c.wait_connected(120)
            assert w.models == "simulated" and w.limits.resolution == 576
            V, res = min(w.limits.views), w.limits.resolution
            sub = Submit(job_id=new_job_id(), mode="static3d", turntable=np.zeros((V, res, res, 4), np.uint8),
                         cameras=Cameras.from_rig(orbit_rig(V, res)), options=Options(frames=4, steps=3, fit_iterations=50),
                         vertices=np.zeros((10, 3), np.float32))
            result = c.wait(c.submit(sub), 60)
            assert isinstance(result, Result) and result.vertices.shape == (4, 10, 3)
    finally:
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert f"listening on {endpoint}" in out and "Traceback" not in err
