"""The client's own behaviour: never blocks, refuses early, reports a silent server, keeps a job's
last message when it sheds events, is safe to use from several threads."""

from __future__ import annotations

import threading
import time

import pytest

from backend.simulate import SimulatedRunner
from protocol.client import Client, ConnectionLost
from protocol.errors import ErrorCode, ProtocolError
from protocol.messages import Error, Progress, Result, Welcome
from tests.protocol_fixtures import make_submit
from tests.server_fixtures import running_server, wait_for

NOBODY = "tcp://127.0.0.1:9"  # discard port: nothing answers


def test_without_a_server_nothing_blocks_and_the_silence_is_reported():
    c = Client(NOBODY, timeout_s=0.3).connect()
    try:
        t0 = time.monotonic()
        assert c.poll() == [] and c.state == "connecting" and c.welcome is None
        with pytest.raises(ProtocolError) as info:
            c.submit(make_submit())
        assert info.value.code == ErrorCode.NOT_CONNECTED and info.value.field == "connection"
        c.cancel("some-job")
        c.attach("other-job")
        assert time.monotonic() - t0 < 0.5  # none of these waited for the network
        with pytest.raises(TimeoutError):
            c.wait_connected(0.2)
        assert wait_for(lambda: any(isinstance(e, ConnectionLost) for e in c.poll()), 3)
        assert c.stats["reconnects"] >= 1
    finally:
        c.close()
    assert c.state == "closed"
    c.close()  # idempotent
    with pytest.raises(ProtocolError):
        c.cancel("x")


def test_events_are_shed_oldest_progress_first_never_the_result():
    runner = SimulatedRunner(step_s=0.0005, fit_s_per_50=0.0)
    with running_server(runner) as srv, Client(srv.endpoint, max_events=40) as c:
        c.wait_connected(5)
        sub = make_submit(steps=300)
        c.submit(sub)
        c.wait(sub.job_id, 20)
        events = c.poll()
        assert len(events) <= 40 and c.stats["events_dropped"] > 250
        assert isinstance(events[0], Welcome)
        assert [type(e) for e in events if not isinstance(e, Progress)][-1] is Result


def test_one_client_shared_by_threads():
    with running_server(SimulatedRunner(step_s=0.001), max_queue_per_client=8) as srv, Client(srv.endpoint) as c:
        c.wait_connected(5)
        ids, errors = [], []

        def work():
            try:
                jid = c.submit(make_submit(steps=2))
                ids.append(jid)
                c.wait(jid, 20)
            except Exception as exc:  # pragma: no cover - reported below
                errors.append(exc)

        threads = [threading.Thread(target=work) for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert not errors and len(set(ids)) == 6
        assert all(c.job(j).state == "done" for j in ids)


def test_duplicate_running_job_id_and_unknown_attach():
    with running_server(SimulatedRunner(step_s=0.02)) as srv, Client(srv.endpoint) as c:
        c.wait_connected(5)
        sub = make_submit(steps=20)
        c.submit(sub)
        with pytest.raises(ProtocolError) as info:
            c.submit(sub)
        assert info.value.field == "job_id"
        c.attach("no-such-job")
        with pytest.raises(ProtocolError) as info:
            c.wait("no-such-job", 5)
        assert info.value.code == ErrorCode.UNKNOWN_JOB
        assert isinstance(c.wait(sub.job_id, 10), Result)
        errors = [e for e in c.poll() if isinstance(e, Error)]
        assert [e.job_id for e in errors] == ["no-such-job"]
