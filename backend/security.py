"""CURVE (ZeroMQ's built-in encryption and authentication) for the server, and the bind rule.

Rule: binding to anything but loopback (127.0.0.0/8, ::1, localhost, ipc://, inproc://) needs
CURVE keys and an allow-list of client public keys, unless the operator passes ``--insecure``.

Keys are the files pyzmq's ``zmq.auth.create_certificates`` writes: ``NAME.key`` (public, give it
away) and ``NAME.key_secret`` (keep it). The allow-list is a directory of clients' ``NAME.key``.
"""

from __future__ import annotations

import ipaddress
import os
import socket
from dataclasses import dataclass
from pathlib import Path

import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator

from backend.errors import InvalidInput


@dataclass(frozen=True)
class CurveConfig:
    """The server's key pair (Z85) and the directory of allowed client public keys."""

    public: bytes
    secret: bytes
    allow_dir: Path

    @classmethod
    def load(cls, secret_file: str | os.PathLike, allow_dir: str | os.PathLike) -> "CurveConfig":
        """From ``--curve-secret FILE`` and ``--allow DIR``; refuses a missing or empty allow-list."""
        secret_file, allow_dir = Path(secret_file), Path(allow_dir)
        if not secret_file.is_file():
            raise InvalidInput("curve_secret", f"{secret_file} is not a file; make one with 'python -m backend keys NAME'")
        try:
            public, secret = zmq.auth.load_certificate(secret_file)
        except Exception as exc:
            raise InvalidInput("curve_secret", f"cannot read a key pair from {secret_file}: {exc}") from None
        if secret is None:
            raise InvalidInput("curve_secret", f"{secret_file} holds no secret key (use the NAME.key_secret file)")
        keys = allowed_client_keys(allow_dir)
        if not keys:
            raise InvalidInput("allow", f"no client public keys (*.key) in {allow_dir}: nobody could connect")
        return cls(public, secret, allow_dir)


def allowed_client_keys(allow_dir: str | os.PathLike) -> list[bytes]:
    """The client public keys in ``allow_dir`` (``*.key`` files)."""
    allow_dir = Path(allow_dir)
    if not allow_dir.is_dir():
        raise InvalidInput("allow", f"{allow_dir} is not a directory of client public keys")
    return [zmq.auth.load_certificate(p)[0] for p in sorted(allow_dir.glob("*.key"))]


def make_keys(directory: str | os.PathLike, name: str) -> tuple[Path, Path]:
    """Write a new key pair ``NAME.key`` / ``NAME.key_secret`` into ``directory``; refuses to
    overwrite an existing pair. Returns (public file, secret file)."""
    if not name or not all(c.isalnum() or c in "-_." for c in name) or name.startswith("."):
        raise InvalidInput("name", f"key names are letters, digits, '-', '_', '.', got {name!r}")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    public, secret = directory / f"{name}.key", directory / f"{name}.key_secret"
    if public.exists() or secret.exists():
        raise InvalidInput("name", f"{public} or {secret} already exists; pick another name or delete them")
    public_file, secret_file = zmq.auth.create_certificates(str(directory), name)
    os.chmod(secret_file, 0o600)
    return Path(public_file), Path(secret_file)


def is_loopback_endpoint(endpoint: str) -> bool:
    """True when ``endpoint`` can only be reached from this machine."""
    scheme, sep, rest = endpoint.partition("://")
    if not sep:
        return False
    if scheme in ("ipc", "inproc"):
        return True
    if scheme != "tcp":
        return False
    host = rest.rsplit(":", 1)[0] if ":" in rest else rest
    if ";" in host:  # tcp://source;host:port form: judge the bound host
        host = host.split(";")[-1]
    host = host.strip("[]")
    if host in ("*", "", "0.0.0.0", "::"):
        return False
    if host == "localhost" or host == "lo":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None)
    except OSError:
        return False  # an interface name or unknown host: assume it is reachable from outside
    return bool(infos) and all(ipaddress.ip_address(i[4][0].split("%")[0]).is_loopback for i in infos)


def check_bind(endpoint: str, curve: CurveConfig | None, insecure: bool) -> None:
    """Refuse to listen beyond loopback without CURVE unless ``insecure`` is explicit."""
    if curve is None and not insecure and not is_loopback_endpoint(endpoint):
        raise InvalidInput(
            "bind",
            f"{endpoint} is reachable from other machines: give CURVE keys (--curve-secret SERVER.key_secret "
            "--allow DIR_OF_CLIENT_KEYS; make them with 'python -m backend keys NAME') or pass --insecure",
        )


def apply_curve(sock: zmq.Socket, ctx: zmq.Context, curve: CurveConfig) -> ThreadAuthenticator:
    """Make ``sock`` a CURVE server that only lets in the keys of ``curve.allow_dir``. Returns the
    running authenticator (stop it when the socket closes)."""
    auth = ThreadAuthenticator(ctx)
    auth.start()
    auth.configure_curve(domain="*", location=str(curve.allow_dir))
    sock.curve_secretkey = curve.secret
    sock.curve_publickey = curve.public
    sock.curve_server = True
    return auth
