"""10,000 malformed messages to a live server on loopback: every one answered with an Error, the
server stays up and serves a real job afterwards, and its memory stays flat."""

from __future__ import annotations

import collections
import gc

import psutil

from backend.fuzz import CATEGORIES, malformed_stream
from protocol.client import Client
from protocol.messages import Error, Hello, Result, Welcome
from tests.protocol_fixtures import make_submit
from tests.server_fixtures import raw_socket, receive, request, running_server


def blast(sock, stream, window: int = 200) -> collections.Counter:
    """Send messages in windows, read one reply per message; returns reply codes by category."""
    replies = collections.Counter()
    batch = []
    for item in stream:
        batch.append(item)
        if len(batch) == window:
            _exchange(sock, batch, replies)
            batch = []
    if batch:
        _exchange(sock, batch, replies)
    return replies


def _exchange(sock, batch, replies):
    for _, frames in batch:
        sock.send_multipart(frames)
    for category, _ in batch:
        reply = receive(sock, 5.0)
        assert isinstance(reply, Error), f"{category}: no Error reply ({reply!r})"
        assert reply.code and reply.message and reply.field, reply
        replies[(category, reply.code)] += 1


def test_ten_thousand_malformed_messages_each_get_an_error_and_memory_stays_flat():
    proc = psutil.Process()
    with running_server() as srv, raw_socket(srv.endpoint) as sock:
        blast(sock, malformed_stream(1400, seed=1))  # warm-up: caches, allocator pools
        gc.collect()
        rss_before = proc.memory_info().rss
        replies = blast(sock, malformed_stream(10_000, seed=2))
        gc.collect()
        rss_after = proc.memory_info().rss
        assert sum(replies.values()) == 10_000
        assert {c for c, _ in replies} == set(CATEGORIES)
        assert ("wrong_version", "version_mismatch") in replies and ("bad_content", "bad_message") not in replies
        assert (rss_after - rss_before) < 16 * 2**20, f"RSS grew {(rss_after - rss_before) / 2**20:.1f} MiB"
        # still serving: handshake and a real job
        assert isinstance(request(sock, Hello()), Welcome)
        with Client(srv.endpoint) as c:
            c.wait_connected(5)
            assert isinstance(c.wait(c.submit(make_submit()), 10), Result)
        assert srv.stats["malformed"] + srv.stats["refused"] >= 10_000
