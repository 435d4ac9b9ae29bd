"""CURVE on real sockets (docs/security.md): `stcsnn keys`, a producer and a worker that
let in only the keys in their folders, and `--bind-any` refused without CURVE."""

from __future__ import annotations

import logging
import stat
import subprocess
import sys
import threading
import time

import pytest
import zmq

from streamer import processes, wire
from streamer.curve import Curve, CurveError, generate_keys
from streamer.producer import run_producer
from streamer.sources import SyntheticSource
from streamer.transport import EndpointError
from tests.pipeline_helpers import ROOT

log = logging.getLogger("test_security")


def keys(tmp_path, *names):
    """A key pair per name in ``tmp_path/keys``, and ``clients/`` holding all public keys
    but the last name's (an outsider)."""
    folder, clients = tmp_path / "keys", tmp_path / "clients"
    clients.mkdir()
    pairs = {name: generate_keys(folder, name) for name in names}
    for name in names[:-1]:
        (clients / pairs[name][0].name).write_bytes(pairs[name][0].read_bytes())
    return pairs, clients


def curve_sub(endpoint: str, secret=None, server_public=None) -> zmq.Socket:
    socket = zmq.Context.instance().socket(zmq.SUB)
    socket.setsockopt(zmq.LINGER, 0)
    socket.setsockopt(zmq.SUBSCRIBE, b"")
    if secret is not None:
        Curve.load(secret, server_file=server_public).connect(socket)
    socket.connect(endpoint)
    return socket


def first_message(socket: zmq.Socket, timeout_s: float) -> wire.Message | None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        message = wire.receive(socket, wire.WireStats(), log, timeout_ms=100)
        if message is not None:
            return message
    return None


def test_keys_command_writes_a_pair_and_keeps_the_secret_private(tmp_path):
    def keys_command(*args):
        return subprocess.run(
            [sys.executable, "-m", "stcsnn", "keys", *args], cwd=ROOT, capture_output=True,
            text=True, timeout=60,
        )  # fmt: skip

    done = keys_command("cam", "--out", str(tmp_path))
    assert done.returncode == 0, done.stderr
    public, secret = tmp_path / "cam.key", tmp_path / "cam.key_secret"
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    assert stat.S_IMODE(public.stat().st_mode) == 0o644
    curve = Curve.load(secret, server_file=public)
    assert len(curve.public_key) == 40 and curve.server_key == curve.public_key
    again = keys_command("cam", "--out", str(tmp_path))
    assert again.returncode == 1 and "exists: not overwritten" in again.stderr
    with pytest.raises(CurveError, match="needs the .key_secret"):
        Curve.load(public)
    with pytest.raises(CurveError, match="no such key file"):
        Curve.load(tmp_path / "missing.key_secret")
    (tmp_path / "junk.key_secret").write_text("not a certificate")
    with pytest.raises(CurveError, match="junk.key_secret"):
        Curve.load(tmp_path / "junk.key_secret")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CurveError, match="no client public key"):
        Curve.load(secret, clients_dir=tmp_path / "empty")


def test_bind_any_needs_curve_or_insecure():
    with pytest.raises(EndpointError, match="--insecure"):
        run_producer(SyntheticSource(1000), "tcp://0.0.0.0:0", bind_any=True)
    stop = threading.Event()
    stop.set()
    stats = run_producer(
        SyntheticSource(1000), "tcp://0.0.0.0:0", bind_any=True, insecure=True,
        stop_event=stop, settle_s=0,
    )  # fmt: skip
    assert stats.end_reason == "stopped"


def test_a_curve_producer_and_worker_let_in_only_the_keys_they_know(tmp_path):
    """producer --curve-clients -> worker (--curve-server, serving with its own folder)
    -> a dashboard-like subscriber with an allowed key; a stranger's key and a plain
    socket get nothing from either."""
    pairs, clients = keys(tmp_path, "producer", "worker", "dashboard", "stranger")
    producer = processes.start_producer(
        ["--synthetic", "20k", "--sensor", "34x34", "--wait-subscribers", "1",
         "--curve-secret", str(pairs["producer"][1]), "--curve-clients", str(clients)],
        cwd=ROOT, timeout_s=30,
    )  # fmt: skip
    worker = None
    sockets = []
    try:
        stranger = curve_sub(producer.endpoint, pairs["stranger"][1], pairs["producer"][0])
        plain = curve_sub(producer.endpoint)
        sockets += [stranger, plain]
        worker = processes.start_worker(
            producer.endpoint,
            ["--quiet", "--wait-subscribers", "1", "--hop-us", "10000",
             "--curve-secret", str(pairs["worker"][1]), "--curve-server", str(pairs["producer"][0]),
             "--curve-clients", str(clients)],
            cwd=ROOT, timeout_s=60,
        )  # fmt: skip
        allowed = curve_sub(worker.endpoint, pairs["dashboard"][1], pairs["worker"][0])
        worker_stranger = curve_sub(worker.endpoint, pairs["stranger"][1], pairs["worker"][0])
        sockets += [allowed, worker_stranger]
        got = first_message(allowed, 30)
        assert got is not None, worker.failure("no message through CURVE")
        assert first_message(worker_stranger, 1.5) is None
        assert first_message(stranger, 0.5) is None and first_message(plain, 0.5) is None
    finally:
        for socket in sockets:
            socket.close(0)
        if worker is not None:
            worker.stop()
        producer.stop()


def test_commands_refuse_bind_any_without_curve(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "stcsnn", "produce", "--synthetic", "1k",
         "--endpoint", "tcp://0.0.0.0:0", "--bind-any"],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 1 and "--insecure" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    done = subprocess.run(
        [sys.executable, "-m", "stcsnn", "worker", "--connect", "tcp://127.0.0.1:9",
         "--bind", "tcp://0.0.0.0:0", "--bind-any"],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode != 0 and "--insecure" in done.stderr
