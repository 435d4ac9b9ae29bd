"""CURVE security (ZeroMQ's CurveZMQ, authenticated by ZAP) for sockets beyond loopback.
(pyzmq is imported where used: the commands' option parsing stays light.)

A socket bound beyond loopback (``--bind-any``) publishes events or predictions to
the network, and anyone who reaches it can also send it messages (subscriptions,
the input of a worker). With CURVE every connection is encrypted and only
clients whose public key is in an allowed folder get in.

Keys are ZeroMQ certificate files, made by ``stcsnn keys NAME`` (which calls
``zmq.auth.create_certificates``): ``NAME.key`` holds the public key (give it
away), ``NAME.key_secret`` both keys (keep it; written readable by its owner only).

* serving (producer, worker's predictions): ``--curve-secret`` this process's
  ``.key_secret``, ``--curve-clients`` a folder of the ``.key`` files allowed in;
* connecting (worker to producer, dashboard to worker): ``--curve-secret`` this
  process's ``.key_secret``, ``--curve-server`` the server's ``.key``.

A worker may do both, with one key pair. ``--bind-any`` without serving keys is
refused unless ``--insecure`` says so (``check_exposure``).
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from pathlib import Path


class CurveError(ValueError):
    """A key file or folder that cannot be used, named with what is wrong."""


@dataclass(frozen=True)
class Curve:
    """One process's CURVE settings (module docstring); serving and connecting are each
    on only where their file or folder is given."""

    public_key: bytes
    secret_key: bytes
    clients_dir: Path | None = None  # serving: the public keys allowed to connect
    server_key: bytes | None = None  # connecting: the server's public key

    @property
    def serves(self) -> bool:
        return self.clients_dir is not None

    @classmethod
    def load(
        cls,
        secret_file: str | os.PathLike,
        clients_dir: str | os.PathLike | None = None,
        server_file: str | os.PathLike | None = None,
    ) -> Curve:
        import zmq

        if not zmq.has("curve"):
            raise CurveError("this ZeroMQ library was built without CURVE support")
        public, secret = _read_keys(Path(secret_file))
        if secret is None:
            raise CurveError(
                f"{secret_file}: a public key only; --curve-secret needs the .key_secret file"
            )
        if clients_dir is not None:
            clients_dir = Path(clients_dir)
            if not clients_dir.is_dir():
                raise CurveError(f"{clients_dir}: not a folder of client public keys")
            if not any(clients_dir.glob("*.key")):
                raise CurveError(f"{clients_dir}: no client public key (*.key) in it")
        server = None if server_file is None else _read_keys(Path(server_file))[0]
        return cls(public, secret, clients_dir, server)

    def serve(self, socket) -> None:
        """Make ``socket`` (before it binds) a CURVE server, if serving keys were given."""
        if self.serves:
            socket.curve_secretkey = self.secret_key
            socket.curve_publickey = self.public_key
            socket.curve_server = True

    def connect(self, socket) -> None:
        """Make ``socket`` (before it connects) a CURVE client, if a server key was given."""
        if self.server_key is not None:
            socket.curve_secretkey = self.secret_key
            socket.curve_publickey = self.public_key
            socket.curve_serverkey = self.server_key


def _read_keys(path: Path) -> tuple[bytes, bytes | None]:
    import zmq.auth

    if not path.is_file():
        raise CurveError(f"{path}: no such key file (stcsnn keys NAME makes a pair)")
    try:
        public, secret = zmq.auth.load_certificate(path)
    except (ValueError, OSError, UnicodeDecodeError) as error:
        raise CurveError(f"{path}: not a ZeroMQ certificate ({error})") from None
    if not public or len(public) != 40:
        raise CurveError(f"{path}: no 40-character public key in it")
    return public, secret


class Authenticator:
    """The ZAP handler of one context: lets in the clients whose public keys are in the
    ``Curve``'s folder (a background thread of pyzmq's; ``stop`` ends it)."""

    def __init__(self, context, curve: Curve | None):
        self._thread = None
        if curve is None or not curve.serves:
            return
        from zmq.auth.thread import ThreadAuthenticator

        self._thread = ThreadAuthenticator(context)
        self._thread.start()
        self._thread.configure_curve(domain="*", location=str(curve.clients_dir))

    def stop(self) -> None:
        if self._thread is not None:
            self._thread.stop()
            self._thread = None


class ServingContext:
    """The ZeroMQ context a producer or worker serves from: the caller's, or its own,
    with the CURVE authenticator where ``curve`` serves. ``close`` stops the
    authenticator and terminates an own context, which waits for the queued messages
    to go out (up to the sockets' linger). Without that, a process that exits next
    frees the arrays still being sent without a copy: lost messages, or a crash in
    ZeroMQ's I/O thread."""

    def __init__(self, context, curve: Curve | None):
        import zmq

        self.owned = context is None
        self.context = context or zmq.Context()
        self.authenticator = Authenticator(self.context, curve)

    def close(self, terminate: bool = True) -> None:
        """``terminate=False`` where a socket of the context may still be open."""
        self.authenticator.stop()
        if self.owned and terminate:
            self.context.term()


def check_exposure(bind_any: bool, curve: Curve | None, insecure: bool) -> None:
    """Refuse to serve beyond loopback without CURVE, unless ``insecure``."""
    from streamer.transport import EndpointError

    if bind_any and not (curve is not None and curve.serves) and not insecure:
        raise EndpointError(
            "--bind-any without CURVE would let anyone on the network read the stream "
            "and send to it: give --curve-secret and --curve-clients (stcsnn keys makes "
            "them; docs/security.md), or say --insecure"
        )


def generate_keys(folder: str | os.PathLike, name: str) -> tuple[Path, Path]:
    """``NAME.key`` and ``NAME.key_secret`` in ``folder`` (the secret one mode 0600)."""
    import zmq.auth

    if not name or "/" in name or name.startswith("."):
        raise CurveError(f"key name {name!r}: a plain file name, please")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    public, secret = folder / f"{name}.key", folder / f"{name}.key_secret"
    for path in (public, secret):
        if path.exists():
            raise CurveError(f"{path} exists: not overwritten")
    old_umask = os.umask(0o077)  # the secret file is never readable by others, not even briefly
    try:
        made = zmq.auth.create_certificates(folder, name)
    finally:
        os.umask(old_umask)
    Path(made[0]).chmod(0o644)
    return Path(made[0]), Path(made[1])


def add_curve_options(parser: argparse.ArgumentParser, *, serves: bool, connects: bool) -> None:
    group = parser.add_argument_group("security (CURVE; docs/security.md)")
    group.add_argument(
        "--curve-secret", metavar="FILE", help="this process's key pair (NAME.key_secret)"
    )
    if serves:
        group.add_argument(
            "--curve-clients",
            metavar="DIR",
            help="serve with CURVE: the public keys (*.key) allowed to connect",
        )
        group.add_argument(
            "--insecure",
            action="store_true",
            help="allow --bind-any without CURVE (anyone on the network may connect)",
        )
    if connects:
        group.add_argument(
            "--curve-server", metavar="FILE", help="connect with CURVE: the server's NAME.key"
        )


def curve_from_args(args: argparse.Namespace) -> Curve | None:
    """The ``Curve`` of the command line, None without ``--curve-secret`` (CurveError if
    a serving or connecting option is given without it)."""
    clients = getattr(args, "curve_clients", None)
    server = getattr(args, "curve_server", None)
    if args.curve_secret is None:
        if clients or server:
            raise CurveError("--curve-clients and --curve-server need --curve-secret")
        return None
    return Curve.load(args.curve_secret, clients, server)
