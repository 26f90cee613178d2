"""Error codes of the wire protocol and the exception that carries one.

Every refusal names the field at fault (``turntable.shape``, ``options.steps``, ``message``) and the
limit that was broken, in words an artist can act on. The same codes travel in ``Error`` messages.
"""

from __future__ import annotations


class ErrorCode:
    """The short codes an ``Error`` message carries (plain strings on the wire)."""

    BAD_MESSAGE = "bad_message"            # not a well-formed dsquare message (bytes, msgpack, types, arrays)
    VERSION_MISMATCH = "version_mismatch"  # the peer speaks another protocol version
    TOO_LARGE = "too_large"                # message larger than the advertised max_message_bytes
    LIMIT_EXCEEDED = "limit_exceeded"      # well-formed but beyond an advertised limit (views, frames, ...)
    INVALID_INPUT = "invalid_input"        # well-formed but meaningless (NaN cameras, unknown mode, ...)
    QUEUE_FULL = "queue_full"              # the job queue (or this client's share of it) is full
    UNKNOWN_JOB = "unknown_job"            # no such job (never submitted, expired, or owned by someone else)
    NOT_CONNECTED = "not_connected"        # client side: no Welcome from the server yet
    CANCELLED = "cancelled"                # the job was cancelled (by its client or a heartbeat timeout)
    JOB_FAILED = "job_failed"              # the job ran and failed
    INTERNAL = "internal"                  # a bug in the server; the message says what happened

    ALL = (BAD_MESSAGE, VERSION_MISMATCH, TOO_LARGE, LIMIT_EXCEEDED, INVALID_INPUT, QUEUE_FULL, UNKNOWN_JOB,
           NOT_CONNECTED, CANCELLED, JOB_FAILED, INTERNAL)


class ProtocolError(Exception):
    """A refusal: ``code`` (an ``ErrorCode``), ``field`` at fault, ``message`` and the ``limit`` broken.

    Raised by the codec and the validators; the server turns it into an ``Error`` message and the
    client raises it from ``submit``/``wait``.
    """

    def __init__(self, code: str, field: str, message: str, limit: str = "", job_id: str = ""):
        self.code = code
        self.field = field
        self.message = message
        self.limit = limit
        self.job_id = job_id
        text = f"[{code}] {field}: {message}" if field else f"[{code}] {message}"
        if limit:
            text += f" (limit: {limit})"
        super().__init__(text)

    def to_message(self, job_id: str | None = None):
        """The ``Error`` message for this refusal."""
        from protocol.messages import Error

        return Error(code=self.code, message=self.message, field=self.field, limit=self.limit,
                     job_id=self.job_id if job_id is None else job_id)

    @classmethod
    def from_message(cls, error) -> "ProtocolError":
        """The exception for a received ``Error`` message."""
        return cls(error.code, error.field, error.message, error.limit, error.job_id)
