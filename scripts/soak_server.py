"""Soak the backend server the way the issue's proof asks, against real server processes on loopback.

    python scripts/soak_server.py                       # simulated runner (no models)
    python scripts/soak_server.py --runner pipeline --models builtin   # the real pipeline, small sizes

Starts ``python -m backend serve`` as a subprocess and measures, in one run:
  1. fuzz: N malformed messages (backend.fuzz) -> one Error each; server RSS before/after; still up;
  2. load: C clients x J jobs -> all complete, FIFO per client, none lost, none duplicated;
     poll() call times on the client side (the add-on's timer budget is 50 ms);
  3. a client process killed (SIGKILL) mid-job -> the worker is free for the next job within
     the heartbeat timeout (seen by a second client whose job was queued behind);
  4. cancel mid-sampling -> how many steps ran after the cancel, and how long it took;
  5. an oversize message -> Error too_large (and the server lives on);
  6. CURVE: a second server with an allow-list; an unknown key gets nothing, a known key works.
Prints the figures and writes them as JSON with --json.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse  # noqa: E402
import collections  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import signal  # noqa: E402
import socket  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

import msgpack  # noqa: E402
import numpy as np  # noqa: E402
import psutil  # noqa: E402
import zmq  # noqa: E402
from tqdm import tqdm  # noqa: E402

from backend.fuzz import malformed_stream  # noqa: E402
from protocol.cameras import orbit_rig  # noqa: E402
from protocol.client import Client, load_curve_keys  # noqa: E402
from protocol.codec import decode, encode  # noqa: E402
from protocol.errors import ErrorCode, ProtocolError  # noqa: E402
from protocol.messages import Cameras, Error, Hello, Options, Progress, Result, Submit, Welcome, new_job_id  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
PARTS = ("fuzz", "load", "killed", "cancel", "oversize", "curve")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(args, extra: list[str] = ()) -> tuple[subprocess.Popen, str]:
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    cmd = [sys.executable, "-m", "backend", "serve", "--bind", endpoint, "--runner", args.runner,
           "--heartbeat-timeout", str(args.heartbeat_timeout), "--max-queue-per-client", str(max(args.jobs, 4)),
           "--max-queue", str(max(32, args.clients * args.jobs + 4)), *extra]
    if args.runner == "simulated":
        cmd += ["--sim-step", str(args.sim_step)]
    else:
        cmd += ["--models", args.models, "--device", args.device] + (["--untrained"] if args.untrained else [])
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    return proc, endpoint


def stop_server(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def job(welcome: Welcome, args, steps: int | None = None, seed: int = 0) -> Submit:
    """The smallest job the server accepts (small sizes), with real orbit cameras."""
    lim = welcome.limits
    V, F, res = min(lim.views), min(lim.frames), lim.resolution
    rng = np.random.default_rng(seed)
    rig = orbit_rig(V, res, elevation_deg=min(max(10.0, lim.elevation_deg[0]), lim.elevation_deg[1]))
    tt = np.full((V, res, res, 4), 255, np.uint8)
    yy, xx = np.mgrid[:res, :res]
    disc = (yy - res / 2) ** 2 + (xx - res / 2) ** 2 < (0.3 * res) ** 2
    tt[:, disc, :3] = rng.integers(0, 256, (V, 1, 3), dtype=np.uint8)
    return Submit(job_id=new_job_id(), mode="static3d", turntable=tt, cameras=Cameras.from_rig(rig),
                  options=Options(frames=F, steps=steps or args.steps, seed=seed, fit_iterations=args.fit_iterations))


def rss(proc) -> int:
    return psutil.Process(proc.pid).memory_info().rss


# ------------------------------------------------------------------------------------------------ parts


def fuzz(endpoint: str, proc, n: int, window: int = 200) -> dict:
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(endpoint)

    def run(stream: list, bar: bool) -> tuple[collections.Counter, int]:
        codes, missing, count = collections.Counter(), 0, len(stream)
        for start in tqdm(range(0, count, window), desc=f"fuzz x{count}", disable=not bar, unit_scale=window):
            batch = stream[start:start + window]
            for _, frames in batch:
                sock.send_multipart(frames)
            for _ in batch:
                if not sock.poll(10_000):
                    missing += 1
                    continue
                reply = decode(sock.recv_multipart())
                codes[reply.code if isinstance(reply, Error) else f"not an error: {reply.KIND}"] += 1
        return codes, missing

    run(list(malformed_stream(1400, 1)), False)  # warm-up
    stream = list(malformed_stream(n, 2))
    before = rss(proc)
    t0 = time.perf_counter()
    codes, missing = run(stream, True)
    seconds = time.perf_counter() - t0
    after = rss(proc)
    sock.send_multipart(encode(Hello(client="soak")))
    alive = sock.poll(5000) and isinstance(decode(sock.recv_multipart()), Welcome)
    sock.close(0)
    ctx.term()
    return {"messages": n, "errors_received": sum(v for k, v in codes.items() if not k.startswith("not")),
            "no_reply": missing, "codes": dict(codes), "seconds": round(seconds, 2), "per_s": round(n / seconds),
            "server_rss_before_mib": round(before / 2**20, 1), "server_rss_after_mib": round(after / 2**20, 1),
            "rss_growth_mib": round((after - before) / 2**20, 2), "server_alive_after": bool(alive)}


def load(endpoint: str, args) -> dict:
    clients = [Client(endpoint, name=f"soak-{i}").connect() for i in range(args.clients)]
    welcome = clients[0].wait_connected(60)
    for c in clients[1:]:
        c.wait_connected(60)
    submitted, submit_t = {}, {}
    for ci, c in enumerate(clients):
        submitted[ci] = []
        for j in range(args.jobs):
            sub = job(welcome, args, seed=100 * ci + j)
            submit_t[sub.job_id] = time.perf_counter()
            submitted[ci].append(c.submit(sub))
    total = args.clients * args.jobs
    finished = {ci: [] for ci in range(len(clients))}
    latency, poll_ms, failures = {}, [], []
    t0 = time.perf_counter()
    with tqdm(total=total, desc=f"{args.clients} clients x {args.jobs} jobs") as bar:
        while sum(map(len, finished.values())) < total and time.perf_counter() - t0 < args.load_timeout:
            for ci, c in enumerate(clients):
                p0 = time.perf_counter()
                events = c.poll()
                poll_ms.append((time.perf_counter() - p0) * 1000)
                for ev in events:
                    if isinstance(ev, (Result, Error)) and ev.job_id:
                        finished[ci].append(ev.job_id)
                        latency[ev.job_id] = time.perf_counter() - submit_t.get(ev.job_id, t0)
                        if isinstance(ev, Error):
                            failures.append(f"{ev.code}: {ev.field}: {ev.message}")
                        bar.update(1)
            time.sleep(0.02)  # a Blender timer tick
    wall = time.perf_counter() - t0
    all_finished = [j for js in finished.values() for j in js]
    for c in clients:
        c.close()
    return {"jobs": total, "completed": len(all_finished) - len(failures), "failed": failures[:5],
            "lost": total - len(set(all_finished)), "duplicated": len(all_finished) - len(set(all_finished)),
            "fifo_per_client": all(finished[ci] == submitted[ci] for ci in finished),
            "wall_s": round(wall, 2), "job_latency_s_median": round(float(np.median(list(latency.values()))), 2),
            "job_latency_s_max": round(max(latency.values()), 2), "poll_calls": len(poll_ms),
            "poll_ms_p50": round(float(np.percentile(poll_ms, 50)), 3),
            "poll_ms_p99": round(float(np.percentile(poll_ms, 99)), 3), "poll_ms_max": round(max(poll_ms), 3)}


CHILD = """
import sys, time, argparse
sys.path.insert(0, {root!r})
sys.path.insert(0, {root!r} + "/scripts")
from protocol.client import Client
from protocol.messages import Progress
from soak_server import job
c = Client({endpoint!r}).connect()
w = c.wait_connected(30)
c.submit(job(w, argparse.Namespace(steps=w.limits.max_steps, fit_iterations={fit})))
while True:
    for e in c.poll():
        if isinstance(e, Progress) and e.stage == "sampling" and e.step >= 2:
            print("running", flush=True)
    time.sleep(0.01)
"""


def killed_client(endpoint: str, args) -> dict:
    observer = Client(endpoint, name="observer").connect()
    welcome = observer.wait_connected(60)
    code = CHILD.format(root=str(ROOT), endpoint=endpoint, fit=args.fit_iterations)
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, cwd=ROOT)
    line = child.stdout.readline().strip()
    if line != "running":
        child.kill()
        return {"error": f"child client did not start its job ({line!r})"}
    queued = observer.submit(job(welcome, args, steps=2))
    time.sleep(0.3)
    child.send_signal(signal.SIGKILL)
    killed = time.perf_counter()
    child.wait()
    started = None
    while time.perf_counter() - killed < args.heartbeat_timeout + 30:
        for e in observer.poll():
            if isinstance(e, Progress) and e.job_id == queued and e.stage != "queued" and started is None:
                started = time.perf_counter() - killed
        if started is not None:
            break
        time.sleep(0.005)
    result_ok = False
    try:
        result_ok = isinstance(observer.wait(queued, args.load_timeout), Result)
    except (ProtocolError, TimeoutError):
        pass
    observer.close()
    return {"heartbeat_timeout_s": args.heartbeat_timeout,
            "worker_free_after_kill_s": None if started is None else round(started, 3),
            "within_timeout": started is not None and started <= args.heartbeat_timeout,
            "next_job_completed": result_ok}


def cancel_latency(endpoint: str, args) -> dict:
    c = Client(endpoint, name="canceller").connect()
    welcome = c.wait_connected(60)
    sub = job(welcome, args, steps=welcome.limits.max_steps)
    c.submit(sub)
    steps, times = [], []
    t_cancel, step_at_cancel, t_end, code = None, None, None, None
    deadline = time.perf_counter() + args.load_timeout
    while time.perf_counter() < deadline and t_end is None:
        for e in c.poll():
            if isinstance(e, Progress) and e.stage == "sampling":
                steps.append(e.step)
                times.append(time.perf_counter())
                if t_cancel is None and e.step >= 3:
                    t_cancel, step_at_cancel = time.perf_counter(), e.step
                    c.cancel(sub.job_id)
            elif isinstance(e, Error) and e.job_id == sub.job_id:
                t_end, code = time.perf_counter(), e.code
        time.sleep(0.002)
    c.close()
    if t_end is None or t_cancel is None:
        return {"error": "the job neither reached step 3 nor ended"}
    step_s = float(np.median(np.diff(times[: max(2, len(times))]))) if len(times) > 1 else float("nan")
    return {"code": code, "steps_after_cancel": max(steps) - step_at_cancel,
            "cancel_to_error_s": round(t_end - t_cancel, 3), "step_s_median": round(step_s, 3),
            "within_one_step": max(steps) - step_at_cancel <= 1}


def oversize(endpoint: str) -> dict:
    c = Client(endpoint).connect()
    limit = c.wait_connected(60).limits.max_message_bytes
    c.close()
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(endpoint)
    header = msgpack.packb({"v": 1, "k": "cancel", "b": {"job_id": "big"}, "a": [["u1", [limit]]]})
    sock.send_multipart([header, b"\0" * limit])
    reply = decode(sock.recv_multipart()) if sock.poll(10_000) else None
    sock.send_multipart(encode(Hello()))
    alive = sock.poll(5000) and isinstance(decode(sock.recv_multipart()), Welcome)
    sock.close(0)
    ctx.term()
    return {"limit_bytes": limit, "sent_bytes": limit + len(header),
            "reply": None if reply is None else f"{reply.code} ({reply.field}: limit {reply.limit})",
            "refused_with_error": isinstance(reply, Error) and reply.code == ErrorCode.TOO_LARGE,
            "server_alive_after": bool(alive)}


def curve(args) -> dict:
    from backend.security import make_keys

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        _, server_secret = make_keys(tmp / "server", "server")
        make_keys(tmp / "allow", "artist")
        make_keys(tmp / "strangers", "stranger")
        proc, endpoint = start_server(args, ["--curve-secret", str(server_secret), "--allow", str(tmp / "allow")])
        try:
            known = load_curve_keys(str(tmp / "server" / "server.key"), str(tmp / "allow" / "artist.key_secret"))
            unknown = load_curve_keys(str(tmp / "server" / "server.key"), str(tmp / "strangers" / "stranger.key_secret"))
            with Client(endpoint, curve=known) as c:
                welcome = c.wait_connected(60)
                result = c.wait(c.submit(job(welcome, args, steps=2)), args.load_timeout)
            with Client(endpoint, curve=unknown, timeout_s=60) as stranger:
                t0 = time.perf_counter()
                got = []
                while time.perf_counter() - t0 < 3.0:
                    got += stranger.poll()
                    time.sleep(0.05)
        finally:
            stop_server(proc)
    return {"known_key_job": type(result).__name__, "unknown_key_events_in_3s": len(got)}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runner", default="simulated", help="simulated (no models) or pipeline")
    p.add_argument("--models", default="builtin")
    p.add_argument("--device", default="cpu")
    p.add_argument("--untrained", action="store_true", help="random networks of the built-in architecture")
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--jobs", type=int, default=3)
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--fit-iterations", type=int, default=100)
    p.add_argument("--sim-step", type=float, default=0.02)
    p.add_argument("--fuzz", type=int, default=10_000)
    p.add_argument("--heartbeat-timeout", type=float, default=2.0)
    p.add_argument("--load-timeout", type=float, default=900.0)
    p.add_argument("--json", default=None, help="write the figures here")
    p.add_argument("--parts", default=",".join(PARTS), help="which proofs to run (comma-separated)")
    args = p.parse_args()

    figures = {"runner": args.runner,
               "models": "simulated" if args.runner == "simulated" else args.models + (" (untrained)" if args.untrained else ""),
               "machine": f"{psutil.cpu_count()} CPUs (shared; timings are noisy)"}
    parts = set(args.parts.split(","))
    unknown = parts - set(PARTS)
    if unknown:
        p.error(f"unknown parts {sorted(unknown)}; choose from {','.join(PARTS)}")
    proc, endpoint = start_server(args)
    try:
        if "fuzz" in parts and args.fuzz > 0:
            figures["fuzz"] = fuzz(endpoint, proc, args.fuzz)
        if "load" in parts:
            figures["load"] = load(endpoint, args)
        if "killed" in parts:
            figures["killed_client"] = killed_client(endpoint, args)
        if "cancel" in parts:
            figures["cancel"] = cancel_latency(endpoint, args)
        if "oversize" in parts:
            figures["oversize"] = oversize(endpoint)
        figures["server_alive_at_end"] = proc.poll() is None
    finally:
        stop_server(proc)
        err = proc.stderr.read()
        if "Traceback" in err:
            figures["server_tracebacks"] = err.count("Traceback")
            figures["server_last_traceback"] = err[err.rindex("Traceback"):][:2000]
    if "curve" in parts:
        figures["curve"] = curve(args)
    print(json.dumps(figures, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
