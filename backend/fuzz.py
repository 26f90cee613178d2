"""Malformed messages for robustness tests of the server (``tests/test_server_fuzz.py`` and
``scripts/soak_server.py``): random bytes, truncated msgpack, wrong types, huge declared shapes,
unknown kinds, wrong versions, bad dtypes, missing and extra frames, NaN cameras, out-of-limit jobs.
Every one of them must be answered with an Error (none is a valid request)."""

from __future__ import annotations

import struct
from typing import Iterator

import msgpack
import numpy as np

from protocol.codec import ARRAY_EXT, encode
from protocol.messages import PROTOCOL_VERSION, Cameras, Options, Submit

CATEGORIES = ("random_bytes", "truncated", "wrong_types", "huge_shape", "unknown_kind", "wrong_version", "bad_dtype",
              "frame_mismatch", "not_a_map", "bad_content", "empty", "deep_nesting", "bad_ext", "server_only_kind")


def _pick(rng: np.random.Generator, options: list):
    return options[int(rng.integers(len(options)))]


def _ref(i: int) -> msgpack.ExtType:
    return msgpack.ExtType(ARRAY_EXT, struct.pack("<I", i))


def _pack(kind, body, arrays=(), version=PROTOCOL_VERSION) -> bytes:
    return msgpack.packb({"v": version, "k": kind, "b": body, "a": list(arrays)}, use_bin_type=True)


def _valid_submit(rng: np.random.Generator, views: int = 4, res: int = 16) -> Submit:
    from protocol.cameras import orbit_rig

    return Submit(job_id=f"fuzz{rng.integers(1 << 40)}", mode="static3d",
                  turntable=rng.integers(0, 256, (views, res, res, 4), dtype=np.uint8),
                  cameras=Cameras.from_rig(orbit_rig(views, res)), options=Options(frames=4, steps=2))


def malformed(rng: np.random.Generator, category: str) -> list[bytes]:
    """One malformed message (a list of frames) of the given category."""
    if category == "random_bytes":
        return [rng.bytes(int(rng.integers(1, 512)))]
    if category == "truncated":
        frames = [bytes(f) for f in encode(_valid_submit(rng))]
        cut = int(rng.integers(1, len(frames[0])))
        return [frames[0][:cut]] + frames[1:]
    if category == "wrong_types":
        bodies = [
            ("submit", {"job_id": int(rng.integers(100)), "mode": "static3d"}),
            ("submit", {"job_id": "a", "mode": 3, "turntable": "pixels"}),
            ("ping", {"seq": "one", "jobs": {}}),
            ("ping", {"seq": 1.5}),
            ("cancel", {"job_id": None}),
            ("attach", {"job_id": [1, 2]}),
            ("hello", {"client": b"bytes", "protocol": "1"}),
            ("bye", {"cancel_jobs": "yes"}),
            ("submit", {"job_id": "a", "mode": "static3d", "turntable": _ref(0), "cameras": [], "options": {}}),
        ]
        kind, body = bodies[int(rng.integers(len(bodies)))]
        arrays = [["u1", [1, 1, 1, 4]]] if "turntable" in body and isinstance(body["turntable"], msgpack.ExtType) else []
        return [_pack(kind, body, arrays)] + ([b"\0" * 4] if arrays else [])
    if category == "huge_shape":
        dims = [int(d) for d in rng.integers(2**20, 2**31 - 1, size=4)]
        dims[-1] = 4
        if rng.random() < 0.5:
            dims[0] = 2**62  # beyond any sane size
        return [_pack("submit", {"job_id": "huge", "mode": "static3d", "turntable": _ref(0)}, [["u1", dims]]), b"\0" * 64]
    if category == "unknown_kind":
        return [_pack(_pick(rng, ["exec", "shutdown", "", "SUBMIT", "result2"]), {"job_id": "x"})]
    if category == "wrong_version":
        return [_pack("hello", {"client": "old"}, version=int(_pick(rng, [0, 2, 99, -1, 2**40])))]
    if category == "bad_dtype":
        code = str(_pick(rng, ["O", "<U8", ">f4", "V16", "b1", "c8", "M8", "f4"]))  # f4 is wrong for uint8 images
        return [_pack("preview", {"job_id": "x", "kind": "k", "images": _ref(0)}, [[code, [1, 1, 1, 4]]]), b"\0" * 16]
    if category == "frame_mismatch":
        frames = [bytes(f) for f in encode(_valid_submit(rng))]
        if rng.random() < 0.5:
            return frames[:-1]  # a missing array frame
        return frames + [b"extra"]
    if category == "not_a_map":
        return [msgpack.packb(_pick(rng, [[1, 2, 3], "submit", 42, None, True]), use_bin_type=True)]
    if category == "bad_content":
        sub = _valid_submit(rng)
        choice = int(rng.integers(4))
        if choice == 0:
            sub.cameras.world_to_cam = sub.cameras.world_to_cam.copy()
            sub.cameras.world_to_cam[0, 0, 0] = np.nan
        elif choice == 1:
            sub.options.frames = 10_000
        elif choice == 2:
            sub.mode = "teleport"
        else:
            sub.options.steps = 10**9
        return [bytes(f) for f in encode(sub)]
    if category == "empty":
        return [b""]
    if category == "deep_nesting":
        return [b"\x91" * int(rng.integers(2000, 20000)) + b"\x90"]
    if category == "bad_ext":
        return [_pack("cancel", {"job_id": msgpack.ExtType(int(rng.integers(2, 100)), rng.bytes(8))})]
    if category == "server_only_kind":
        return [_pack(str(_pick(rng, ["welcome", "accepted", "progress", "result", "error", "pong"])), {"job_id": "x"})]
    raise ValueError(f"unknown fuzz category {category!r}")


def malformed_stream(n: int, seed: int = 0) -> Iterator[tuple[str, list[bytes]]]:
    """n malformed messages, cycling through the categories."""
    rng = np.random.default_rng(seed)
    for i in range(n):
        category = CATEGORIES[i % len(CATEGORIES)]
        yield category, malformed(rng, category)
