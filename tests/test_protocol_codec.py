"""The wire codec: every message round-trips; malformed frames are refused with the field named,
before any array memory is allocated."""

from __future__ import annotations

import struct
import tracemalloc

import msgpack
import numpy as np
import pytest

from protocol.codec import ARRAY_EXT, DecodeLimits, decode, encode, peek_job_id
from protocol.errors import ErrorCode, ProtocolError
from protocol.messages import (MESSAGE_TYPES, PROTOCOL_VERSION, Accepted, Attach, Bye, Cancel, Error, Hello, Ping,
                               Pong, Preview, Progress, Result, Submit, Welcome)
from tests.protocol_fixtures import make_result, make_submit, small_limits


def raw(header: dict, *arrays: bytes) -> list[bytes]:
    return [msgpack.packb(header, use_bin_type=True), *arrays]


def ref(i: int):
    return msgpack.ExtType(ARRAY_EXT, struct.pack("<I", i))


def refusal(frames, limits=DecodeLimits()) -> ProtocolError:
    with pytest.raises(ProtocolError) as info:
        decode(frames, limits)
    return info.value


def test_submit_round_trips_with_all_fields():
    sub = make_submit(views=4, frames=4, res=16, mode="video", vertices=10)
    sub.options.schedule_params = {"s0": 0.4, "k": 12.0}
    got = decode(encode(sub))
    assert isinstance(got, Submit)
    assert got.job_id == sub.job_id and got.mode == "video"
    for name in ("turntable", "reference", "vertices"):
        np.testing.assert_array_equal(getattr(got, name), getattr(sub, name))
        assert getattr(got, name).dtype == getattr(sub, name).dtype
    for name in ("intrinsics", "world_to_cam", "elevation_deg", "azimuth_deg"):
        np.testing.assert_array_equal(getattr(got.cameras, name), getattr(sub.cameras, name))
    assert got.options.schedule_params == {"s0": 0.4, "k": 12.0}
    assert got.options.frames == 4 and got.options.previews is True


def test_every_message_kind_round_trips():
    res = make_result("j1", vertices=7)
    msgs = [Hello(client="blender"), Welcome(protocol=1, server="s", models="builtin", device="cpu", limits=small_limits(),
                                            info={"a": "b"}),
            make_submit(), Accepted("j1", 3), Progress("j1", "sampling", 2, 10, 4.5, 1.0, "hi"),
            Preview("j1", "matrix", np.zeros((2, 8, 8, 3), np.uint8)), res, Cancel("j1"), Attach("j1"),
            Ping(seq=5, jobs=["a", "b"]), Pong(seq=5, jobs={"a": "running"}, queue_length=2), Bye(cancel_jobs=False),
            Error(code="invalid_input", message="m", field="f", limit="l", job_id="j1")]
    assert {type(m) for m in msgs} == set(MESSAGE_TYPES.values())
    for msg in msgs:
        got = decode(encode(msg))
        assert type(got) is type(msg)
        for name in msg.__dataclass_fields__:
            a, b = getattr(msg, name), getattr(got, name)
            if isinstance(a, np.ndarray):
                np.testing.assert_array_equal(a, b)
            elif name in ("limits", "cameras", "options"):
                assert vars(a).keys() == vars(b).keys()
            else:
                assert a == b, name
    assert decode(encode(msgs[1])).limits.views == [4, 8]


def test_arrays_are_views_of_the_received_frames():
    sub = make_submit(res=32)
    frames = [bytes(f) for f in encode(sub)]
    got = decode(frames)
    tt_frame = next(f for f in frames if len(f) == sub.turntable.nbytes)
    assert np.shares_memory(got.turntable, np.frombuffer(tt_frame, np.uint8))


def test_encode_casts_float64_and_big_endian_and_refuses_float_images():
    sub = make_submit(vertices=5)
    sub.vertices = sub.vertices.astype(np.float64)
    sub.cameras.azimuth_deg = sub.cameras.azimuth_deg.astype(">f8")
    got = decode(encode(sub))
    assert got.vertices.dtype == np.float32 and got.cameras.azimuth_deg.dtype == np.dtype("<f8")
    np.testing.assert_allclose(got.cameras.azimuth_deg, sub.cameras.azimuth_deg)
    sub.turntable = sub.turntable.astype(np.float32)
    with pytest.raises(ProtocolError) as info:
        encode(sub)
    assert info.value.field == "turntable.dtype"
    sub = make_submit()
    sub.turntable = sub.turntable[..., :3]
    with pytest.raises(ProtocolError) as info:
        encode(sub)
    assert info.value.field == "turntable.shape" and "4" in info.value.message


def test_encode_refuses_messages_over_the_limit():
    sub = make_submit(res=32)
    with pytest.raises(ProtocolError) as info:
        encode(sub, max_message_bytes=1000)
    assert info.value.code == ErrorCode.TOO_LARGE and info.value.field == "message" and "1000" in info.value.limit
    assert info.value.job_id == sub.job_id


def good_header(kind="cancel", body=None, arrays=None):
    return {"v": PROTOCOL_VERSION, "k": kind, "b": body if body is not None else {"job_id": "x"}, "a": arrays or []}


@pytest.mark.parametrize("frames, field, code", [
    ([], "message", ErrorCode.BAD_MESSAGE),
    ([b"\xc1\xff\x00garbage"], "header", ErrorCode.BAD_MESSAGE),
    ([msgpack.packb(good_header())[:-3]], "header", ErrorCode.BAD_MESSAGE),
    (raw([1, 2, 3]), "header", ErrorCode.BAD_MESSAGE),
    (raw({**good_header(), "v": 99}), "v", ErrorCode.VERSION_MISMATCH),
    (raw({**good_header(), "v": "1"}), "v", ErrorCode.BAD_MESSAGE),
    (raw(good_header(kind="launch_missiles")), "k", ErrorCode.BAD_MESSAGE),
    (raw(good_header(body=[1])), "b", ErrorCode.BAD_MESSAGE),
    (raw(good_header(body={"job_id": 7})), "job_id", ErrorCode.BAD_MESSAGE),
    (raw(good_header(body={})), "job_id", ErrorCode.BAD_MESSAGE),
    (raw(good_header("ping", {"seq": 1, "jobs": [1, 2]})), "jobs[0]", ErrorCode.BAD_MESSAGE),
    (raw(good_header("ping", {"seq": True})), "seq", ErrorCode.BAD_MESSAGE),
    (raw(good_header("pong", {"jobs": "x"})), "jobs", ErrorCode.BAD_MESSAGE),
    (raw(good_header("cancel", {"job_id": ref(0)}, [["u1", [1]]]), b"x"), "job_id", ErrorCode.BAD_MESSAGE),
    (raw(good_header(), b"extra"), "a", ErrorCode.BAD_MESSAGE),
    (raw(good_header("preview", {"job_id": "j", "kind": "k", "images": 5})), "images", ErrorCode.BAD_MESSAGE),
    (raw(good_header("preview", {"job_id": "j", "kind": "k", "images": ref(3)}, [["u1", [1, 1, 1, 3]]]), b"123"),
     "images", ErrorCode.BAD_MESSAGE),
    (raw(good_header("preview", {"job_id": "j", "kind": "k", "images": ref(0)}, [["O", [1, 1, 1, 3]]]), b"123"),
     "images.dtype", ErrorCode.BAD_MESSAGE),
    (raw(good_header("preview", {"job_id": "j", "kind": "k", "images": ref(0)}, [[">f4", [1, 1, 1, 3]]]), b"1" * 12),
     "images.dtype", ErrorCode.BAD_MESSAGE),
    (raw(good_header("preview", {"job_id": "j", "kind": "k", "images": ref(0)}, [["f4", [1, 1, 1, 3]]]), b"1" * 12),
     "images.dtype", ErrorCode.BAD_MESSAGE),
    (raw(good_header("preview", {"job_id": "j", "kind": "k", "images": ref(0)}, [["u1", [1, 1, 3]]]), b"123"),
     "images.shape", ErrorCode.BAD_MESSAGE),
    (raw(good_header("preview", {"job_id": "j", "kind": "k", "images": ref(0)}, [["u1", [1, 1, 1, 5]]]), b"12345"),
     "images.shape", ErrorCode.BAD_MESSAGE),
    (raw(good_header("preview", {"job_id": "j", "kind": "k", "images": ref(0)}, [["u1", [1, -1, 1, 3]]]), b"123"),
     "images.shape", ErrorCode.BAD_MESSAGE),
    (raw(good_header("preview", {"job_id": "j", "kind": "k", "images": ref(0)}, [["u1", [1, 1.5, 1, 3]]]), b"123"),
     "images.shape", ErrorCode.BAD_MESSAGE),
    (raw(good_header("preview", {"job_id": "j", "kind": "k", "images": ref(0)}, [["u1", [2, 1, 1, 3]]]), b"123"),
     "images.shape", ErrorCode.BAD_MESSAGE),
    (raw(good_header("preview", {"job_id": "j", "kind": "k", "images": ref(0)}, ["u1"]), b"123"),
     "images", ErrorCode.BAD_MESSAGE),
    (raw(good_header("preview", {"job_id": "j", "kind": "k", "images": msgpack.ExtType(9, b"1234")}, [["u1", [1, 1, 1, 3]]]),
         b"123"), "header", ErrorCode.BAD_MESSAGE),
    (raw(good_header("welcome", {"protocol": 1, "server": "s", "models": "m", "device": "d", "limits": {"views": [1]}})),
     "limits.frames", ErrorCode.BAD_MESSAGE),
])
def test_malformed_messages_are_refused_naming_the_field(frames, field, code):
    err = refusal(frames)
    assert err.code == code
    assert err.field == field, err
    assert err.message


def test_huge_declared_shapes_are_refused_without_allocating():
    hdr = good_header("submit", {"job_id": "j", "mode": "static3d", "turntable": ref(0),
                                 "cameras": {}}, [["u1", [2**31 - 1, 2**31 - 1, 2**31 - 1, 4]]])
    tracemalloc.start()
    err = refusal(raw(hdr, b"\x00" * 64))
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert err.field == "turntable.shape" and "64" in err.message
    assert peak < 1_000_000
    err = refusal(raw({**hdr, "a": [["u1", [2**40, 1, 1, 4]]]}, b"\x00" * 64))
    assert err.field == "turntable.shape" and str(2**31 - 1) in err.limit


def test_size_limits_are_enforced():
    sub = make_submit(res=32)
    frames = encode(sub)
    total = sum(len(f) for f in frames)
    err = refusal(frames, DecodeLimits(max_message_bytes=total - 1))
    assert err.code == ErrorCode.TOO_LARGE and err.field == "message" and str(total - 1) in err.limit
    assert isinstance(decode(frames, DecodeLimits(max_message_bytes=total)), Submit)
    err = refusal(raw(good_header(body={"job_id": "x", "pad": "y" * 5000})), DecodeLimits(max_header_bytes=4096))
    assert err.code == ErrorCode.TOO_LARGE and err.field == "header"
    err = refusal([frames[0]] + [b""] * 40)
    assert err.field == "message" and "frames" in err.limit
    err = refusal(raw(good_header("ping", {"seq": 1, "jobs": ["a"] * 5000})))
    assert err.field == "header"  # containers longer than max_container_len


def test_deeply_nested_and_long_strings_are_refused():
    assert refusal([b"\x91" * 5000 + b"\x90"]).field == "header"
    assert refusal(raw(good_header(body={"job_id": "x" * 5000}))).field == "job_id"


def test_unknown_fields_are_ignored_and_defaults_fill_missing_optionals():
    msg = decode(raw(good_header("ping", {"seq": 3, "future_field": {"a": 1}})))
    assert isinstance(msg, Ping) and msg.seq == 3 and msg.jobs == []


def test_array_referenced_twice_or_unreferenced_is_refused():
    body = {"job_id": "j", "kind": "k", "images": ref(0)}
    err = refusal(raw(good_header("preview", body, [["u1", [1, 1, 1, 3]], ["u1", [1]]]), b"123", b"1"))
    assert err.field == "a" and "not referred" in err.message
    res = make_result("j")
    frames = encode(res)
    header = msgpack.unpackb(frames[0], ext_hook=lambda c, d: msgpack.ExtType(c, d))
    header["b"]["opacities"] = header["b"]["centers"]
    err = refusal([msgpack.packb(header)] + list(frames[1:]))
    assert "twice" in err.message


def test_peek_job_id_is_best_effort():
    assert peek_job_id(raw(good_header(body={"job_id": "abc", "x": None}))) == "abc"
    assert peek_job_id([b"\xc1junk"]) == ""
    assert peek_job_id(raw(good_header(body={"job_id": 5}))) == ""
    assert peek_job_id(raw([1])) == ""


def test_error_round_trip_through_exception():
    err = ProtocolError(ErrorCode.LIMIT_EXCEEDED, "options.steps", "too many", "1..50", "j")
    msg = err.to_message()
    back = ProtocolError.from_message(decode(encode(msg)))
    assert (back.code, back.field, back.message, back.limit, back.job_id) == (err.code, err.field, err.message, err.limit, "j")
    assert "options.steps" in str(back) and "1..50" in str(back)


def test_protocol_package_does_not_import_torch_bpy_or_backend():
    import subprocess
    import sys
    code = ("import sys, protocol.messages, protocol.codec, protocol.validate, protocol.client, protocol.cameras;"
            "bad=[m for m in ('torch','bpy','backend') if m in sys.modules]; print(bad); sys.exit(1 if bad else 0)")
    import os
    from pathlib import Path
    root = str(Path(__file__).resolve().parents[1])
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=root,
                         env={**os.environ, "PYTHONPATH": root})
    assert out.returncode == 0, out.stdout + out.stderr
