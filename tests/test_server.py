"""The server's mechanics on loopback, with the simulated runner (a job with steps, progress and
cancel, but no models): handshake, FIFO, cancel, heartbeats, attach, limits, failures."""

from __future__ import annotations

import collections
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import msgpack
import numpy as np
import pytest

from backend.errors import InvalidInput
from backend.simulate import SimulatedRunner
from protocol.client import Client
from protocol.codec import encode
from protocol.errors import ErrorCode, ProtocolError
from protocol.messages import (Accepted, Attach, Bye, Cancel, Error, Hello, Ping, Pong, Preview, Progress, Result,
                               Welcome)
from tests.protocol_fixtures import make_result, make_submit
from tests.server_fixtures import raw_socket, receive, request, running_server, wait_for

ROOT = Path(__file__).resolve().parents[1]


def test_hello_gets_welcome_with_model_and_server_limits():
    with running_server(max_queue_per_client=3, max_vertices=1234) as srv, raw_socket(srv.endpoint) as sock:
        w = request(sock, Hello(client="test"))
        assert isinstance(w, Welcome)
        assert w.protocol == 1 and w.limits.views == [4, 8] and w.limits.frames == [4, 8] and w.limits.resolution == 16
        assert w.limits.max_steps == 400 and w.limits.max_queue_per_client == 3 and w.limits.max_vertices == 1234
        # derived message limit: full turntable (8 views) + reference (8 frames) + vertices + 1 MiB header
        assert w.limits.max_message_bytes == 16 * 16 * 4 * 16 + 1234 * 12 + 2**20
        pong = request(sock, Ping(seq=7, jobs=["nope"]))
        assert isinstance(pong, Pong) and pong.seq == 7 and pong.jobs == {"nope": "unknown"}


def test_eight_clients_three_jobs_each_all_complete_fifo_none_lost_or_duplicated():
    runner = SimulatedRunner(step_s=0.002, gaussians=50)
    with running_server(runner, max_queue=32, max_queue_per_client=3) as srv:
        clients = [Client(srv.endpoint, name=f"c{i}").connect() for i in range(8)]
        for c in clients:
            c.wait_connected(5)
        submitted = {c: [c.submit(make_submit(steps=3, seed=i)) for i in range(3)] for c in clients}
        finished = {c: [] for c in clients}
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and sum(map(len, finished.values())) < 24:
            for c in clients:
                for ev in c.poll():
                    if isinstance(ev, (Result, Error)) and ev.job_id:
                        finished[c].append((type(ev).__name__, ev.job_id))
            time.sleep(0.01)
        for c in clients:
            assert [k for k, _ in finished[c]] == ["Result"] * 3, finished[c]
            assert [j for _, j in finished[c]] == submitted[c], "results out of FIFO order"
            c.close()
        assert sorted(runner.started) == sorted(j for js in submitted.values() for j in js)  # each ran exactly once
        assert srv.stats["jobs_done"] == 24 and srv.stats["accepted"] == 24
        starts = {j: i for i, j in enumerate(runner.started)}
        for js in submitted.values():
            assert starts[js[0]] < starts[js[1]] < starts[js[2]]


def test_progress_every_step_and_previews_throttled_to_one_per_second():
    runner = SimulatedRunner(step_s=0.025, fit_s_per_50=0.0)
    with running_server(runner) as srv, Client(srv.endpoint) as c:
        c.wait_connected(5)
        sub = make_submit(steps=60)
        sub.options.fit_iterations = 500
        c.submit(sub)
        c.wait(sub.job_id, 30)
        events = c.poll()
        sampling = [e.step for e in events if isinstance(e, Progress) and e.stage == "sampling"]
        assert set(range(60)) <= set(sampling)
        fitting = [e.step for e in events if isinstance(e, Progress) and e.stage == "fitting"]
        assert set(range(0, 500, 50)) <= set(fitting)
        etas = [e.eta_s for e in events if isinstance(e, Progress) and e.stage == "sampling" and e.step > 5]
        assert all(e >= 0 for e in etas) and etas[0] > etas[-1]
        previews = [e for e in events if isinstance(e, Preview)]
        assert 1 <= len(previews) <= 3  # 60 previews offered over ~1.5 s of sampling
        assert previews[0].images.shape == (4, 16, 16, 3)


def test_cancel_mid_sampling_stops_within_one_step_and_frees_the_worker():
    runner = SimulatedRunner(step_s=0.1)
    with running_server(runner) as srv, Client(srv.endpoint) as c:
        c.wait_connected(5)
        first, second = make_submit(steps=300), make_submit(steps=2)
        c.submit(first)
        c.submit(second)
        assert wait_for(lambda: runner.steps_done.get(first.job_id, 0) >= 3, 10)
        steps_at_cancel = runner.steps_done[first.job_id]
        c.cancel(first.job_id)
        with pytest.raises(ProtocolError) as info:
            c.wait(first.job_id, 10)
        assert info.value.code == ErrorCode.CANCELLED
        assert runner.steps_done[first.job_id] - steps_at_cancel <= 1
        assert isinstance(c.wait(second.job_id, 10), Result)  # the worker went on to the next job
        assert c.job(first.job_id).state == "cancelled"


def test_cancel_queued_job_never_runs():
    runner = SimulatedRunner(step_s=0.05)
    with running_server(runner) as srv, Client(srv.endpoint) as c:
        c.wait_connected(5)
        a, b = make_submit(steps=20), make_submit(steps=2)
        c.submit(a)
        c.submit(b)
        assert wait_for(lambda: c.job(b.job_id).state == "queued", 5)
        c.cancel(b.job_id)
        with pytest.raises(ProtocolError) as info:
            c.wait(b.job_id, 10)
        assert info.value.code == ErrorCode.CANCELLED and "before it started" in info.value.message
        c.wait(a.job_id, 10)
        assert b.job_id not in runner.started


def test_oversize_messages_are_refused_with_an_error_and_the_server_stays_up():
    with running_server() as srv:
        limit = srv.limits.max_message_bytes
        sub = make_submit()
        frames = encode(sub)
        hdr = msgpack.unpackb(frames[0], ext_hook=lambda c, d: msgpack.ExtType(c, d))
        hdr["a"].append(["u1", [limit]])
        big = [msgpack.packb(hdr)] + list(frames[1:]) + [b"\0" * limit]  # over the limit, under the socket's 2x
        with raw_socket(srv.endpoint) as sock:
            err = request(sock, big)
            assert isinstance(err, Error) and err.code == ErrorCode.TOO_LARGE and err.field == "message"
            assert str(limit) in err.limit and err.job_id == sub.job_id
            # one frame beyond the socket's hard limit: ZeroMQ drops that connection unread
            sock.send_multipart([b"x", b"\0" * (2 * limit + 1)])
            assert receive(sock, 0.5) is None
        with raw_socket(srv.endpoint) as sock:
            assert isinstance(request(sock, Hello()), Welcome)  # the server lives on
            assert isinstance(request(sock, sub), Accepted)


def test_client_refuses_oversize_and_out_of_limit_jobs_before_sending():
    small, big = make_submit(views=4), make_submit(views=8)
    limit = (sum(len(f) for f in encode(small)) + sum(len(f) for f in encode(big))) // 2
    with running_server(max_message_bytes=limit) as srv, Client(srv.endpoint) as c:
        c.wait_connected(5)
        with pytest.raises(ProtocolError) as info:
            c.submit(big)
        assert info.value.code == ErrorCode.TOO_LARGE and str(limit) in info.value.limit
        with pytest.raises(ProtocolError) as info:
            c.submit(make_submit(views=5))
        assert info.value.code == ErrorCode.LIMIT_EXCEEDED and info.value.field == "cameras.azimuth_deg.shape"
        assert srv.stats["accepted"] == 0
        assert isinstance(c.wait(c.submit(small), 10), Result)


def test_server_refuses_jobs_beyond_its_limits_naming_field_and_limit():
    with running_server() as srv, raw_socket(srv.endpoint) as sock:
        sub = make_submit(frames=5)
        err = request(sock, sub)
        assert isinstance(err, Error) and err.code == ErrorCode.LIMIT_EXCEEDED
        assert (err.field, err.job_id) == ("options.frames", sub.job_id) and "4, 8" in err.limit
        err = request(sock, Accepted("x", 1))
        assert isinstance(err, Error) and err.code == ErrorCode.BAD_MESSAGE and err.field == "k"
        err = request(sock, Cancel("nope"))
        assert err.code == ErrorCode.UNKNOWN_JOB and err.job_id == "nope"
        err = request(sock, Attach("nope"))
        assert err.code == ErrorCode.UNKNOWN_JOB


def test_queue_limits_per_client_and_in_all():
    runner = SimulatedRunner(step_s=0.02)
    with running_server(runner, max_queue_per_client=2, max_queue=2) as srv:
        a, b = Client(srv.endpoint).connect(), Client(srv.endpoint).connect()
        a.wait_connected(5), b.wait_connected(5)
        a1 = a.submit(make_submit(steps=100))
        assert wait_for(lambda: srv.busy[0], 5)  # a1 runs; the queue is empty
        a2, a3 = a.submit(make_submit(steps=1)), a.submit(make_submit(steps=1))
        with pytest.raises(ProtocolError) as info:
            a.wait(a3, 5)
        assert info.value.code == ErrorCode.QUEUE_FULL and info.value.field == "queue"
        assert "2 jobs per client" in info.value.limit
        b1, b2 = b.submit(make_submit(steps=1)), b.submit(make_submit(steps=1))  # queue: a2, b1 -> b2 refused
        with pytest.raises(ProtocolError) as info:
            b.wait(b2, 5)
        assert info.value.code == ErrorCode.QUEUE_FULL and info.value.limit == "2 jobs"
        a.cancel(a1)
        for client, job in ((a, a2), (b, b1)):
            assert isinstance(client.wait(job, 10), Result)
        a.close(), b.close()


def failing_runner(submit, models, report, cancel):
    report.progress("sampling", 0, 1)
    if submit.options.seed == 1:
        raise InvalidInput("options.seed", "seed 1 is unlucky")
    if submit.options.seed == 2:
        return make_result(submit.job_id, views=8)  # wrong number of views
    raise RuntimeError("out of GPU memory")


def test_failing_jobs_end_with_an_error_and_the_server_goes_on():
    with running_server(failing_runner) as srv, Client(srv.endpoint) as c:
        c.wait_connected(5)
        codes = []
        for seed in (0, 1, 2):
            jid = c.submit(make_submit(seed=seed))
            with pytest.raises(ProtocolError) as info:
                c.wait(jid, 10)
            codes.append((info.value.code, info.value.field))
            if seed == 0:
                assert "out of GPU memory" in info.value.message
        assert codes == [(ErrorCode.JOB_FAILED, ""), (ErrorCode.INVALID_INPUT, "options.seed"),
                         (ErrorCode.JOB_FAILED, "thumbnails.shape")]
        assert srv.stats["jobs_failed"] == 3


def test_attach_to_a_finished_job_from_another_client_and_resubmit_is_not_a_second_job():
    runner = SimulatedRunner(step_s=0.001)
    with running_server(runner) as srv:
        with Client(srv.endpoint) as a:
            a.wait_connected(5)
            sub = make_submit(vertices=9)
            first = a.wait(a.submit(sub), 10)
        with Client(srv.endpoint) as b, raw_socket(srv.endpoint) as sock:
            b.wait_connected(5)
            b.attach(sub.job_id)
            again = b.wait(sub.job_id, 5)
            np.testing.assert_array_equal(again.vertices, first.vertices)
            assert isinstance(request(sock, sub), Result)  # the same job id again: its result, not a new run
        assert runner.started.count(sub.job_id) == 1 and srv.stats["accepted"] == 1


def test_silent_client_has_its_jobs_cancelled_after_the_heartbeat_timeout():
    runner = SimulatedRunner(step_s=0.02)
    with running_server(runner, heartbeat_timeout_s=0.6) as srv, raw_socket(srv.endpoint) as sock:
        sub = make_submit(steps=400)
        assert isinstance(request(sock, sub), Accepted)
        assert wait_for(lambda: srv.busy[0], 5)
        t0 = time.monotonic()
        assert wait_for(lambda: not srv.busy[0], 5)  # no pings are sent on this socket
        assert time.monotonic() - t0 < 0.6 + 0.5
        assert wait_for(lambda: srv.job_states()[sub.job_id] == "cancelled", 1)
        assert srv.stats["clients_timed_out"] == 1


CHILD = """
import sys, time
sys.path.insert(0, {root!r})
from protocol.client import Client
from tests.protocol_fixtures import make_submit
c = Client({endpoint!r}).connect()
c.wait_connected(10)
job = c.submit(make_submit(steps=400))
print(job, flush=True)
time.sleep(60)
"""


def test_killed_client_mid_job_is_cancelled_and_worker_freed_within_the_heartbeat_timeout():
    runner = SimulatedRunner(step_s=0.02)
    timeout = 1.0
    with running_server(runner, heartbeat_timeout_s=timeout) as srv:
        code = CHILD.format(root=str(ROOT), endpoint=srv.endpoint)
        child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, cwd=ROOT)
        try:
            job_id = child.stdout.readline().strip()
            assert job_id, "the child client did not submit"
            assert wait_for(lambda: runner.steps_done.get(job_id, 0) >= 3, 10)
        finally:
            child.send_signal(signal.SIGKILL)
            child.wait()
        killed = time.monotonic()
        assert wait_for(lambda: not srv.busy[0], timeout + 2)
        freed_after = time.monotonic() - killed
        # the last heartbeat went out at most one interval (0.2 s) before the kill; the server checks every
        # 0.1 s and the job stops within one 0.02 s step; 0.4 s more for a busy shared CI machine
        assert timeout - 0.25 <= freed_after <= timeout + 0.1 + 0.02 + 0.4, freed_after
        assert wait_for(lambda: srv.job_states()[job_id] == "cancelled", 1)


def test_bye_cancels_unfinished_jobs():
    runner = SimulatedRunner(step_s=0.02)
    with running_server(runner) as srv:
        c = Client(srv.endpoint).connect()
        c.wait_connected(5)
        jid = c.submit(make_submit(steps=400))
        assert wait_for(lambda: srv.busy[0], 5)
        c.close(cancel_jobs=True)
        assert wait_for(lambda: srv.job_states()[jid] == "cancelled", 3)


def test_server_restart_client_reconnects_and_resends_unacknowledged_jobs():
    runner = SimulatedRunner(step_s=0.001)
    with running_server(runner) as srv:
        endpoint = srv.endpoint
        c = Client(endpoint, timeout_s=0.5, heartbeat_interval_s=0.1).connect()
        c.wait_connected(5)
    lost = wait_for(lambda: any(type(e).__name__ == "ConnectionLost" for e in c.poll()), 5)
    assert lost and c.state == "connecting"
    sub = make_submit()
    c.submit(sub)  # limits are known from the last Welcome; the job waits for a server
    time.sleep(0.3)
    runner2 = SimulatedRunner(step_s=0.001)
    with running_server(runner2, bind=endpoint) as srv2:
        result = c.wait(sub.job_id, 10)
        assert isinstance(result, Result) and c.state == "connected"
        time.sleep(0.3)
        assert runner2.started == [sub.job_id]  # sent twice maybe, run once
        assert srv2.stats["accepted"] == 1
    c.close()


def test_job_lost_by_a_restarted_server_is_reported_unknown():
    runner = SimulatedRunner(step_s=0.05)
    with running_server(runner) as srv:
        endpoint = srv.endpoint
        c = Client(endpoint, timeout_s=0.5, heartbeat_interval_s=0.1).connect()
        c.wait_connected(5)
        jid = c.submit(make_submit(steps=400))
        assert wait_for(lambda: c.job(jid).state == "running", 5)
    with running_server(SimulatedRunner(), bind=endpoint):
        with pytest.raises(ProtocolError) as info:
            c.wait(jid, 10)
        assert info.value.code == ErrorCode.UNKNOWN_JOB
    c.close()


def test_finished_results_expire_after_the_ttl_and_the_store_is_bounded():
    runner = SimulatedRunner(step_s=0.001)
    with running_server(runner, result_ttl_s=0.5) as srv, Client(srv.endpoint) as c:
        c.wait_connected(5)
        jid = c.wait(c.submit(make_submit()), 10).job_id
        assert srv.job_states()[jid] == "done"
        assert wait_for(lambda: jid not in srv.job_states(), 3)
        c.forget(jid)
        c.attach(jid)
        with pytest.raises(ProtocolError) as info:
            c.wait(jid, 5)
        assert info.value.code == ErrorCode.UNKNOWN_JOB and "expired" in info.value.message
    with running_server(runner, result_store_bytes=1) as srv, Client(srv.endpoint) as c:
        c.wait_connected(5)
        first = c.wait(c.submit(make_submit()), 10).job_id
        second = c.wait(c.submit(make_submit()), 10).job_id
        assert wait_for(lambda: first not in srv.job_states() and second not in srv.job_states(), 3)
        assert srv.stats["results_evicted"] == 2


def test_client_table_is_bounded():
    with running_server(max_clients=2) as srv:
        with raw_socket(srv.endpoint) as a, raw_socket(srv.endpoint) as b, raw_socket(srv.endpoint) as c:
            assert isinstance(request(a, Hello()), Welcome) and isinstance(request(b, Hello()), Welcome)
            err = request(c, Hello())
            assert isinstance(err, Error) and err.code == ErrorCode.LIMIT_EXCEEDED and err.field == "clients"
            request(a, Bye(cancel_jobs=True), timeout=0.2)  # a leaves: room for c
            assert isinstance(request(c, Hello()), Welcome)
