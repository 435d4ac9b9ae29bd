"""Sources: time chunking, synthetic events, the DV network stream (real NetworkWriter on
loopback) and the camera's no-camera error."""

from __future__ import annotations

import socket
import threading
import time

import dv_processing as dv
import numpy as np
import pytest

from core.events import EVENT_DTYPE, SensorSize, make_events, validate_events
from core.source import SourceEnd, SourceError, TimeChunker, split_by_count
from streamer.sources import (
    CameraSource,
    DvNetworkSource,
    SyntheticSource,
    discover_cameras,
    dv_message,
    parse_host_port,
)


def _events(timestamps) -> np.ndarray:
    t = np.asarray(timestamps, dtype=np.int64)
    return make_events(t, t % 34, (t // 34) % 34, t % 2)


def _chunk_all(chunker: TimeChunker, pieces) -> list[np.ndarray]:
    chunks = []
    for piece in pieces:
        chunks += chunker.push(piece)
    return chunks + chunker.flush()


def test_time_chunks_follow_the_grid_and_do_not_depend_on_read_batches():
    rng = np.random.default_rng(1)
    events = _events(np.sort(rng.integers(0, 20_000, 3000)))
    whole = _chunk_all(TimeChunker(1000), [events])
    cuts = np.sort(rng.integers(0, len(events), 7))
    batched = _chunk_all(TimeChunker(1000), np.split(events, cuts))
    assert len(whole) == len(batched)
    for a, b in zip(whole, batched, strict=True):
        assert np.array_equal(a, b)
    assert all(c.dtype == EVENT_DTYPE for c in whole + batched)  # concatenate drops padding
    assert np.array_equal(np.concatenate(whole), events)
    windows = [set(chunk["timestamp"] // 1000) for chunk in whole]
    assert all(len(w) == 1 for w in windows)  # each chunk inside one 1 ms window
    assert [w.pop() for w in windows] == sorted(set(events["timestamp"] // 1000))


def test_dense_windows_are_split_by_count_and_nothing_is_lost():
    events = _events(np.repeat(np.arange(5) * 1000, 250))  # 250 events at each ms
    chunks = _chunk_all(TimeChunker(10_000, max_chunk_events=100), [events[:600], events[600:]])
    assert max(len(c) for c in chunks) <= 100
    assert np.array_equal(np.concatenate(chunks), events)
    assert split_by_count(events[:0], 10) == []


def test_chunk_origin_shifts_the_grid():
    events = _events([0, 499, 500, 1499, 1500])
    chunks = _chunk_all(TimeChunker(1000, origin_us=500), [events])
    assert [list(c["timestamp"]) for c in chunks] == [[0, 499], [500, 1499], [1500]]


def test_synthetic_rate_per_second_of_event_time_is_the_configured_one():
    rate = 200_000
    source = SyntheticSource(rate, chunk_us=1000, duration_us=1_000_000, seed=3)
    items = list(source.items(threading.Event()))
    assert isinstance(items[-1], SourceEnd)
    chunks = items[:-1]
    assert all(c.dtype == EVENT_DTYPE for c in chunks)
    events = np.concatenate(chunks, dtype=EVENT_DTYPE)
    validate_events(events, source.sensor, "synthetic")
    assert 0 <= events["timestamp"][0] and events["timestamp"][-1] < 1_000_000
    assert abs(len(events) - rate) < 5 * np.sqrt(rate)  # Poisson: within 5 sigma
    assert len(chunks) == 1000  # one chunk per 1 ms
    per_chunk = [len(c) for c in chunks]
    assert 150 < np.mean(per_chunk) < 250


def test_synthetic_is_a_moving_pattern_and_seeded():
    source = SyntheticSource(100_000, sensor=SensorSize(64, 48), duration_us=200_000, seed=5)
    events = np.concatenate(list(source.items(threading.Event()))[:-1], dtype=EVENT_DTYPE)
    early = events[events["timestamp"] < 20_000]
    late = events[(events["timestamp"] >= 160_000) & (events["timestamp"] < 180_000)]
    # Most events sit near a centre that moves: the mean position changes over time.
    shift = np.hypot(early["x"].mean() - late["x"].mean(), early["y"].mean() - late["y"].mean())
    assert shift > 5
    occupancy = np.bincount(early["y"].astype(int) * 64 + early["x"], minlength=64 * 48)
    assert (occupancy > 0).mean() < 0.5  # concentrated, not uniform noise
    assert 0.3 < events["polarity"].mean() < 0.7
    again = SyntheticSource(100_000, sensor=SensorSize(64, 48), duration_us=200_000, seed=5)
    first = next(iter(again.items(threading.Event())))
    assert np.array_equal(first, next(iter(source.items(threading.Event()))))


def test_synthetic_stops_when_asked():
    stop = threading.Event()
    items = SyntheticSource(1000).items(stop)  # infinite without a duration
    next(items)
    stop.set()
    assert list(items) == []


def test_no_camera_gives_a_clear_error():
    if discover_cameras():
        pytest.skip("a camera is attached to this machine")
    with pytest.raises(SourceError, match="no iniVation camera attached.*discover"):
        CameraSource()
    with pytest.raises(SourceError, match="no iniVation camera attached"):
        CameraSource("DVXplorer_DXA00000")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class DvServer:
    """A real dv.io.NetworkWriter on loopback, as the DV software serves events.

    Deleting a NetworkWriter while a client is still connected hangs (its
    disconnect callback needs the GIL the destructor holds), so ``close``
    waits until the client has gone first."""

    def __init__(self, sensor=(34, 34), name="DVXplorer_TEST01"):
        self.port = _free_port()
        stream = dv.io.Stream.EventStream(0, "events", name, sensor)
        self.writer = dv.io.NetworkWriter("127.0.0.1", self.port, stream)

    def wait_for_client(self, timeout_s=5.0):
        deadline = time.monotonic() + timeout_s
        while self.writer.getClientCount() == 0:
            assert time.monotonic() < deadline, "the reader never connected"
            time.sleep(0.005)

    def write(self, events: np.ndarray) -> None:
        store = dv.EventStore()
        for e in events:
            store.push_back(int(e["timestamp"]), int(e["x"]), int(e["y"]), bool(e["polarity"]))
        self.writer.writeEvents(store)

    def close(self, timeout_s=5.0):
        deadline = time.monotonic() + timeout_s
        while self.writer.getClientCount() and time.monotonic() < deadline:
            time.sleep(0.01)
        del self.writer


@pytest.fixture
def dv_server():
    server = DvServer()
    yield server
    server.close()


def test_dv_network_source_reads_what_a_network_writer_sends(dv_server):
    source = DvNetworkSource("127.0.0.1", dv_server.port)
    try:
        assert source.sensor == SensorSize(34, 34)
        assert "DVXplorer_TEST01" in source.description
        assert f"127.0.0.1:{dv_server.port}" in source.description
        dv_server.wait_for_client()
        sent = _events(np.arange(1_000_000, 1_000_000 + 3000, 3))
        dv_server.write(sent[:500])
        dv_server.write(sent[500:])
        stop = threading.Event()
        received = []
        deadline = time.monotonic() + 5
        for item in source.items(stop):
            received.append(item)
            if sum(len(c) for c in received) >= len(sent) or time.monotonic() > deadline:
                stop.set()
        assert np.array_equal(np.concatenate(received), sent)
    finally:
        source.close()


def test_dv_network_connection_failure_names_host_and_port():
    port = _free_port()  # nothing listens there
    with pytest.raises(SourceError, match=f"DV network stream at 127.0.0.1:{port}.*refused") as e:
        DvNetworkSource("127.0.0.1", port)
    # dv-processing's text names the C++ header and function it came from: not ours to show.
    assert ".hpp" not in str(e.value) and "boost" not in str(e.value), str(e.value)


def test_dv_errors_keep_the_message_and_drop_the_cpp_source_path():
    with pytest.raises(RuntimeError) as e:  # dv-processing's own error text
        dv.io.camera.open("NO_SUCH_SERIAL_0")
    assert ".hpp" in str(e.value) and "Stacktrace" in str(e.value)
    assert dv_message(e.value) == "Could not find device with given serial number"
    with pytest.raises(RuntimeError) as e:
        dv.io.NetworkReader("127.0.0.1", _free_port())
    assert dv_message(e.value) == "connect: Connection refused"


def test_parse_host_port():
    assert parse_host_port("127.0.0.1:7777") == ("127.0.0.1", 7777)
    assert parse_host_port("[::1]:7777") == ("::1", 7777)
    for bad in ("7777", "host:", "host:99999", ":7777"):
        with pytest.raises(ValueError, match="HOST:PORT"):
            parse_host_port(bad)
