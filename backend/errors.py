"""Exceptions shared across the backend. ``InvalidInput`` names the field at fault."""

from __future__ import annotations


class InvalidInput(ValueError):
    """Bad input, refused before any work is done.

    ``field`` names the argument (or message field) at fault; the message says what was expected
    and what was given, in words a user can act on.
    """

    def __init__(self, field: str, message: str):
        self.field = field
        self.message = message
        super().__init__(f"{field}: {message}")


class Cancelled(RuntimeError):
    """A long-running step (sampling, fitting) was cancelled through its ``cancel`` event."""


class IncompatibleModels(InvalidInput):
    """Two models that cannot be composed (e.g. different latent spaces)."""
