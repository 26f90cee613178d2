"""Wire format: one msgpack header frame, then one raw frame per numpy array (ZeroMQ multipart).

Header (msgpack map, at most ``DecodeLimits.max_header_bytes``)::

    {"v": PROTOCOL_VERSION, "k": "<kind>", "b": {<fields>}, "a": [[dtype, [shape...]], ...]}

In the body ``b`` an array field holds the msgpack extension ``ExtType(ARRAY_EXT, index)`` (index
as 4 bytes little-endian) pointing at frame ``1 + index``; ``a[index]`` declares its dtype (a short
code from ``DTYPES``, little-endian) and shape (C order). This is the pattern of pyzmq's
"serialising numpy arrays" recipe and of Dask's protocol; nothing is ever pickled (no
msgpack-numpy: it unpickles object arrays).

Decoding checks, in this order and before touching array data: the number of frames and total
size against the limit; the header's size, msgpack well-formedness, version and kind; then, per
field, the Python type, and for arrays the declared dtype (allow-list and the field's own list),
rank, fixed axes, and that the element count times the item size equals the frame length. Only
then is the frame viewed as an array, without copying (read-only) unless it is misaligned.
Every failure raises ``ProtocolError`` naming the field (e.g. ``turntable.shape``) and the limit.
"""

from __future__ import annotations

import dataclasses
import math
import struct
import types
import typing
from dataclasses import dataclass
from typing import Any, Sequence, Union

import msgpack
import numpy as np

from protocol.errors import ErrorCode, ProtocolError
from protocol.messages import MESSAGE_TYPES, PROTOCOL_VERSION, ArraySpec, Message

ARRAY_EXT = 1
DTYPES = {"u1": np.dtype("u1"), "u2": np.dtype("<u2"), "i4": np.dtype("<i4"), "i8": np.dtype("<i8"),
          "f2": np.dtype("<f2"), "f4": np.dtype("<f4"), "f8": np.dtype("<f8")}
"""The dtypes that may travel (little-endian). No object, string, bool or structured dtypes."""

MAX_DIM = 2**31 - 1
MAX_STR = 4096


@dataclass(frozen=True)
class DecodeLimits:
    """What ``decode`` accepts. max_message_bytes bounds all frames together."""

    max_message_bytes: int = 64 * 2**20
    max_header_bytes: int = 1 * 2**20
    max_arrays: int = 16
    max_container_len: int = 4096


def _mib(n: int) -> str:
    return f"{n} bytes ({n / 2**20:.1f} MiB)"


# ------------------------------------------------------------------------------------------------ encode


class _ArrayRef:
    __slots__ = ("index",)

    def __init__(self, index: int):
        self.index = index


def _prepare_array(value: Any, spec: ArraySpec, path: str) -> np.ndarray:
    """Coerce ``value`` to an array matching ``spec`` (casting between numeric dtypes of the same
    family when needed), or raise ProtocolError naming ``path``."""
    arr = np.asarray(value)
    if arr.dtype.kind not in "uif":
        raise ProtocolError(ErrorCode.BAD_MESSAGE, f"{path}.dtype", f"expected {spec.describe()}, got dtype {arr.dtype}",
                            spec.describe())
    if arr.dtype.byteorder == ">":
        arr = arr.astype(arr.dtype.newbyteorder("<"))
    code = _short_code(arr.dtype)
    if code not in spec.dtypes:
        target = DTYPES[spec.dtypes[0]]
        if target.kind == "u" and arr.dtype.kind != "u":
            raise ProtocolError(ErrorCode.BAD_MESSAGE, f"{path}.dtype",
                                f"expected {spec.describe()}, got dtype {arr.dtype} (convert to uint8 first)", spec.describe())
        arr = arr.astype(target)
    _check_shape(tuple(arr.shape), spec, path)
    return np.ascontiguousarray(arr)


def _short_code(dtype: np.dtype) -> str | None:
    for code, dt in DTYPES.items():
        if dtype == dt:
            return code
    return None


def _to_wire(value: Any, hint: Any, path: str, arrays: list[np.ndarray], spec: ArraySpec | None = None) -> Any:
    if spec is not None:
        if value is None:
            return None
        arr = _prepare_array(value, spec, path)
        arrays.append(arr)
        return msgpack.ExtType(ARRAY_EXT, struct.pack("<I", len(arrays) - 1))
    if dataclasses.is_dataclass(value):
        return _dataclass_to_wire(value, path, arrays)
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (list, tuple)):
        return [_to_wire(v, None, f"{path}[{i}]", arrays) for i, v in enumerate(value)]
    if isinstance(value, dict):
        return {str(k): _to_wire(v, None, f"{path}.{k}", arrays) for k, v in value.items()}
    if isinstance(value, np.ndarray):
        raise ProtocolError(ErrorCode.BAD_MESSAGE, path, "an array in a field that does not take arrays")
    return value


def _dataclass_to_wire(obj: Any, path: str, arrays: list[np.ndarray]) -> dict:
    out = {}
    for f in dataclasses.fields(obj):
        sub = f"{path}.{f.name}" if path else f.name
        out[f.name] = _to_wire(getattr(obj, f.name), None, sub, arrays, f.metadata.get("array"))
    return out


def encode(msg: Message, max_message_bytes: int | None = None) -> list:
    """Message -> frames [header bytes, array buffers...] for ``socket.send_multipart``.

    Array frames are zero-copy memoryviews of C-contiguous little-endian arrays (copies only where
    a cast or a reordering was needed): do not modify the arrays until the message is sent.
    Raises ProtocolError (too_large) if the frames exceed ``max_message_bytes``, or (bad_message)
    if an array does not fit its field.
    """
    if not isinstance(msg, Message) or msg.KIND not in MESSAGE_TYPES:
        raise TypeError(f"not a protocol message: {type(msg).__name__}")
    arrays: list[np.ndarray] = []
    body = _dataclass_to_wire(msg, "", arrays)
    header = {"v": PROTOCOL_VERSION, "k": msg.KIND, "b": body,
              "a": [[_short_code(a.dtype), list(a.shape)] for a in arrays]}
    frames = [msgpack.packb(header, use_bin_type=True)] + [memoryview(a.reshape(-1).view(np.uint8)) for a in arrays]
    if max_message_bytes is not None:
        total = sum(len(f) for f in frames)
        if total > max_message_bytes:
            raise ProtocolError(ErrorCode.TOO_LARGE, "message",
                                f"the {msg.KIND} message is {_mib(total)}; the server reads at most {_mib(max_message_bytes)}",
                                _mib(max_message_bytes), getattr(msg, "job_id", ""))
    return frames


# ------------------------------------------------------------------------------------------------ decode


def _buffer(frame: Any) -> memoryview:
    buf = getattr(frame, "buffer", None)  # zmq.Frame
    return memoryview(buf if buf is not None else frame)


def _ext_hook(code: int, data: bytes):
    if code == ARRAY_EXT and len(data) == 4:
        return _ArrayRef(struct.unpack("<I", data)[0])
    raise ValueError(f"unknown msgpack extension type {code} of {len(data)} bytes")


def _bad(path: str, message: str, limit: str = "") -> ProtocolError:
    return ProtocolError(ErrorCode.BAD_MESSAGE, path or "message", message, limit)


def _type_name(value: Any) -> str:
    return "array" if isinstance(value, _ArrayRef) else type(value).__name__


def _check_shape(shape: tuple, spec: ArraySpec, path: str) -> None:
    if len(shape) != spec.rank:
        raise _bad(f"{path}.shape", f"expected {spec.rank} axes {spec.describe()}, got shape {list(shape)}", spec.describe())
    for axis, (d, want) in enumerate(zip(shape, spec.shape)):
        if want is None:
            continue
        allowed = (want,) if isinstance(want, int) else want
        if d not in allowed:
            raise _bad(f"{path}.shape", f"axis {axis} must be {'/'.join(map(str, allowed))}, got shape {list(shape)}",
                       spec.describe())


class _Decoder:
    def __init__(self, frames: Sequence[Any], descriptors: list, limits: DecodeLimits):
        self.frames = frames
        self.descriptors = descriptors
        self.used: set[int] = set()
        self.limits = limits

    def array(self, ref: Any, spec: ArraySpec, path: str) -> np.ndarray:
        if not isinstance(ref, _ArrayRef):
            raise _bad(path, f"expected an array {spec.describe()}, got {_type_name(ref)}", spec.describe())
        i = ref.index
        if i >= len(self.descriptors):
            raise _bad(path, f"refers to array {i} but the header declares {len(self.descriptors)}")
        if i in self.used:
            raise _bad(path, f"array {i} is referred to twice")
        self.used.add(i)
        desc = self.descriptors[i]
        if not (isinstance(desc, list) and len(desc) == 2 and isinstance(desc[0], str) and isinstance(desc[1], list)):
            raise _bad(f"{path}", "array descriptor must be [dtype, [shape...]]")
        code, shape = desc
        if code not in DTYPES:
            raise _bad(f"{path}.dtype", f"dtype {code[:16]!r} is not allowed; allowed: {sorted(DTYPES)}", "/".join(sorted(DTYPES)))
        if code not in spec.dtypes:
            raise _bad(f"{path}.dtype", f"expected {spec.describe()}, got dtype {code}", spec.describe())
        if not all(isinstance(d, int) and not isinstance(d, bool) and 0 <= d <= MAX_DIM for d in shape):
            raise _bad(f"{path}.shape", f"shape must be non-negative integers <= {MAX_DIM}, got {shape[:8]}", str(MAX_DIM))
        _check_shape(tuple(shape), spec, path)
        dtype = DTYPES[code]
        nbytes = math.prod(shape) * dtype.itemsize  # exact Python integer: no overflow
        buf = _buffer(self.frames[1 + i])
        if nbytes != buf.nbytes:
            raise _bad(f"{path}.shape", f"shape {shape} of {code} needs {nbytes} bytes but its frame has {buf.nbytes}",
                       f"{buf.nbytes} bytes")
        arr = np.frombuffer(buf, dtype=dtype).reshape(shape)
        if not arr.flags.aligned:
            arr = arr.copy()
        return arr

    def value(self, raw: Any, hint: Any, path: str) -> Any:
        origin = typing.get_origin(hint)
        if origin is Union or origin is types.UnionType:
            args = [a for a in typing.get_args(hint) if a is not type(None)]
            if raw is None and len(args) < len(typing.get_args(hint)):
                return None
            if len(args) != 1:
                raise TypeError(f"unsupported annotation {hint}")
            return self.value(raw, args[0], path)
        if hint is int:
            if isinstance(raw, int) and not isinstance(raw, bool):
                return raw
            raise _bad(path, f"expected an integer, got {_type_name(raw)}")
        if hint is float:
            if isinstance(raw, (int, float)) and not isinstance(raw, bool):
                return float(raw)
            raise _bad(path, f"expected a number, got {_type_name(raw)}")
        if hint is bool:
            if isinstance(raw, bool):
                return raw
            raise _bad(path, f"expected true/false, got {_type_name(raw)}")
        if hint is str:
            if isinstance(raw, str):
                if len(raw) > MAX_STR:
                    raise _bad(path, f"text of {len(raw)} characters; at most {MAX_STR}", str(MAX_STR))
                return raw
            raise _bad(path, f"expected text, got {_type_name(raw)}")
        if origin is list:
            if not isinstance(raw, list):
                raise _bad(path, f"expected a list, got {_type_name(raw)}")
            (item,) = typing.get_args(hint)
            return [self.value(v, item, f"{path}[{i}]") for i, v in enumerate(raw)]
        if origin is dict:
            if not isinstance(raw, dict):
                raise _bad(path, f"expected a map, got {_type_name(raw)}")
            _, item = typing.get_args(hint)
            return {str(k): self.value(v, item, f"{path}.{k}") for k, v in raw.items()}
        if isinstance(hint, type) and dataclasses.is_dataclass(hint):
            if not isinstance(raw, dict):
                raise _bad(path, f"expected a map of {hint.__name__} fields, got {_type_name(raw)}")
            return self.dataclass(hint, raw, path)
        raise TypeError(f"unsupported annotation {hint!r} at {path}")

    def dataclass(self, cls: type, raw: dict, path: str) -> Any:
        hints = _hints(cls)
        kwargs = {}
        for f in dataclasses.fields(cls):
            sub = f"{path}.{f.name}" if path else f.name
            if f.name not in raw:
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                    raise _bad(sub, "missing")
                continue
            spec = f.metadata.get("array")
            value = raw[f.name]
            if spec is not None:
                optional = f.default is None
                kwargs[f.name] = None if (value is None and optional) else self.array(value, spec, sub)
            else:
                kwargs[f.name] = self.value(value, hints[f.name], sub)
        # fields the peer sent that we do not know are ignored (forward compatibility within a version)
        return cls(**kwargs)


_HINTS: dict[type, dict[str, Any]] = {}


def _hints(cls: type) -> dict[str, Any]:
    if cls not in _HINTS:
        _HINTS[cls] = typing.get_type_hints(cls)
    return _HINTS[cls]


def peek_job_id(frames: Sequence[Any], limits: DecodeLimits = DecodeLimits()) -> str:
    """Best effort: the job_id a (possibly malformed) message names, so that an Error can be routed
    to the job; '' when there is none. Never raises."""
    try:
        header = _buffer(frames[0])
        if header.nbytes > limits.max_header_bytes:
            return ""
        obj = msgpack.unpackb(header, raw=False, strict_map_key=True, ext_hook=lambda c, d: None)
        job_id = obj.get("b", {}).get("job_id", "")
        return job_id if isinstance(job_id, str) and len(job_id) <= 64 else ""
    except Exception:
        return ""


def decode(frames: Sequence[Any], limits: DecodeLimits = DecodeLimits()) -> Message:
    """Frames (bytes or zmq.Frame) -> Message. Raises ProtocolError naming the field at fault.

    Arrays are views of the frames where possible (read-only); keep the frames alive with them
    (the views do).
    """
    if len(frames) == 0:
        raise _bad("message", "empty message")
    if len(frames) > 1 + limits.max_arrays:
        raise _bad("message", f"{len(frames)} frames; at most {1 + limits.max_arrays}", f"{1 + limits.max_arrays} frames")
    total = sum(_buffer(f).nbytes for f in frames)
    if total > limits.max_message_bytes:
        raise ProtocolError(ErrorCode.TOO_LARGE, "message", f"the message is {_mib(total)}; at most {_mib(limits.max_message_bytes)}",
                            _mib(limits.max_message_bytes))
    header_buf = _buffer(frames[0])
    if header_buf.nbytes > limits.max_header_bytes:
        raise ProtocolError(ErrorCode.TOO_LARGE, "header", f"header of {_mib(header_buf.nbytes)}; at most {_mib(limits.max_header_bytes)}",
                            _mib(limits.max_header_bytes))
    n = limits.max_container_len
    try:
        header = msgpack.unpackb(header_buf, raw=False, strict_map_key=True, ext_hook=_ext_hook, use_list=True,
                                 max_str_len=limits.max_header_bytes,
                                 max_bin_len=0, max_array_len=n, max_map_len=n, max_ext_len=16)
    except Exception as exc:  # msgpack raises several types (ExtraData, ValueError, StackError, ...)
        raise _bad("header", f"not a msgpack header: {type(exc).__name__}: {str(exc)[:120]}") from None
    if not isinstance(header, dict):
        raise _bad("header", f"header must be a map, got {_type_name(header)}")
    version = header.get("v")
    if not isinstance(version, int) or isinstance(version, bool):
        raise _bad("v", f"protocol version must be an integer, got {_type_name(version)}")
    if version != PROTOCOL_VERSION:
        raise ProtocolError(ErrorCode.VERSION_MISMATCH, "v",
                            f"this peer speaks protocol {PROTOCOL_VERSION}, the message is version {version}; update the add-on or the backend",
                            str(PROTOCOL_VERSION))
    kind = header.get("k")
    if not isinstance(kind, str) or kind not in MESSAGE_TYPES:
        shown = kind[:32] if isinstance(kind, str) else _type_name(kind)
        raise _bad("k", f"unknown message kind {shown!r}; expected one of {sorted(MESSAGE_TYPES)}")
    descriptors = header.get("a", [])
    if not isinstance(descriptors, list):
        raise _bad("a", f"array descriptors must be a list, got {_type_name(descriptors)}")
    if len(descriptors) != len(frames) - 1:
        raise _bad("a", f"header declares {len(descriptors)} arrays but {len(frames) - 1} array frames follow")
    body = header.get("b")
    if not isinstance(body, dict):
        raise _bad("b", f"body must be a map, got {_type_name(body)}")
    dec = _Decoder(frames, descriptors, limits)
    msg = dec.dataclass(MESSAGE_TYPES[kind], body, "")
    if len(dec.used) != len(descriptors):
        raise _bad("a", f"{len(descriptors) - len(dec.used)} array frames are not referred to by any field")
    return msg
