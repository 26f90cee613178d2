"""The server's Reporter: ETA per stage, previews at most once per interval (latest wins), cancel
raised at the next progress call; and the FIFO queue."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from backend.errors import Cancelled
from backend.jobs import Job, JobQueue, JobReporter, shrink_preview
from protocol.messages import Preview, Progress


class Clock:
    def __init__(self):
        self.t = 100.0

    def __call__(self):
        return self.t


def make(previews=True, interval=1.0):
    sent, cancel, clock = [], threading.Event(), Clock()
    rep = JobReporter("j", sent.append, cancel, preview_interval_s=interval, previews=previews, clock=clock)
    return rep, sent, cancel, clock


def test_progress_eta_per_stage():
    rep, sent, _, clock = make()
    rep.progress("sampling", 0, 10)
    clock.t += 2.0
    rep.progress("sampling", 2, 10)
    clock.t += 1.0
    rep.progress("fitting", 0, 100)  # a new stage: ETA unknown until a step is done
    clock.t += 0.5
    rep.progress("fitting", 50, 100)
    p = [m for m in sent if isinstance(m, Progress)]
    assert [m.eta_s for m in p] == [-1.0, pytest.approx(8.0), -1.0, pytest.approx(0.5)]
    assert p[-1].elapsed_s == pytest.approx(3.5) and p[-1].stage == "fitting" and p[-1].job_id == "j"


def test_previews_throttled_latest_wins_and_shrunk():
    rep, sent, _, clock = make(interval=1.0)
    img = lambda v: np.full((3, 512, 300, 4), v, np.uint8)  # noqa: E731
    rep.preview("matrix", img(1))  # sent at once
    for v in (2, 3, 4):
        clock.t += 0.3
        rep.preview("matrix", img(v))  # within the second: kept, not sent
    previews = [m for m in sent if isinstance(m, Preview)]
    assert [int(p.images[0, 0, 0, 0]) for p in previews] == [1]
    clock.t += 0.2  # 1.1 s after the first
    rep.progress("sampling", 1, 10)  # flushes the pending (latest) preview
    previews = [m for m in sent if isinstance(m, Preview)]
    assert [int(p.images[0, 0, 0, 0]) for p in previews] == [1, 4]
    assert max(previews[0].images.shape[1:3]) <= 256 and previews[0].images.shape[-1] == 4
    rep.preview("bad", np.zeros((2, 8, 8), np.float32))  # a pipeline bug is dropped, the job goes on
    assert rep.previews_sent == 2


def test_previews_off_and_cancel_raises_at_next_progress():
    rep, sent, cancel, _ = make(previews=False)
    rep.preview("matrix", np.zeros((1, 8, 8, 3), np.uint8))
    rep.progress("sampling", 0, 5)
    cancel.set()
    with pytest.raises(Cancelled):
        rep.progress("sampling", 1, 5)
    assert [type(m) for m in sent] == [Progress]


def test_shrink_preview_bounds_count_and_side():
    out = shrink_preview(np.zeros((100, 600, 600, 3), np.uint8))
    assert out.shape[0] == 64 and max(out.shape[1:3]) <= 256 and out.flags.c_contiguous


def test_queue_fifo_remove_and_bound():
    q = JobQueue(max_jobs=2)
    a, b, c = (Job(x, None, b"id") for x in "abc")
    assert q.put(a) == 0 and q.put(b) == 1
    with pytest.raises(OverflowError):
        q.put(c)
    assert q.remove(b) and not q.remove(b)
    assert q.take(0.1) is a and a.state == "running"
    assert q.take(0.05) is None
    q.close()
    assert q.take(5) is None
