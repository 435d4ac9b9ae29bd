"""Live and synthetic event sources: an iniVation camera, a DV network stream, a generator.

Each implements ``core.source.Source``; the producer (``streamer/producer.py``)
publishes any of them, and a file replay (``replay/player.py``) alike.

dv-processing is imported only by the sources that need it.
"""

from __future__ import annotations

import math
import re
import threading
from collections.abc import Iterator

import numpy as np

from core.events import EVENT_DTYPE, SensorSize
from core.source import (
    DEFAULT_CHUNK_US,
    DEFAULT_MAX_CHUNK_EVENTS,
    SourceEnd,
    SourceError,
    SourceItem,
    split_by_count,
)

DEFAULT_SYNTHETIC_SENSOR = SensorSize(128, 128)
NORMAL_POOL = 1 << 21  # standard normal samples the synthetic source draws its spread from
POLL_INTERVAL_S = 0.001  # live sources: wait between empty reads of a non-blocking input


# --- live camera -----------------------------------------------------------------------


def describe_camera(descriptor) -> str:
    """One line for a ``dv.io.camera.discover()`` entry: model, serial, USB bus/address."""
    model = str(descriptor.cameraModel).rsplit(".", 1)[-1]
    return (
        f"{model} serial {descriptor.serialNumber} "
        f"(USB bus {descriptor.busNumber}, address {descriptor.devAddress})"
    )


def discover_cameras() -> list:
    """The iniVation cameras dv-processing can open right now (descriptors)."""
    import dv_processing as dv

    return list(dv.io.camera.discover())


# dv-processing's error texts: "file.hpp(88): signature()\nRuntimeError: message\nStacktrace:
# ..." or "message [system:111 at /path/file.hpp:588 in function '...']".
_SOURCE_LOCATION_LINE = re.compile(r"^\S+\.(?:h|hh|hpp|c|cc|cpp|cxx)\(\d+\):")
_BRACKETED_LOCATION = re.compile(r"\s*\[[^\[]*? at \S+\.(?:h|hh|hpp|c|cc|cpp|cxx):\d+.*$")


def dv_message(error: BaseException) -> str:
    """A dv-processing error's message in one line, without its C++ source path,
    signature and stack trace."""
    text = str(error).split("\nStacktrace:", 1)[0]
    lines = []
    for line in text.splitlines():
        line = _BRACKETED_LOCATION.sub("", line).strip()
        if line and not _SOURCE_LOCATION_LINE.match(line):
            lines.append(re.sub(r"^RuntimeError: ", "", line))
    return "; ".join(lines) or type(error).__name__


def _batches_of(reader, stop_event: threading.Event, max_chunk_events: int, ended: str):
    """Poll a non-blocking dv-processing input until it stops running or we are stopped."""
    while not stop_event.is_set():
        try:
            batch = reader.getNextEventBatch()
        except RuntimeError as error:
            raise SourceError(f"{ended}: {dv_message(error)}") from None
        if batch is None:
            if not reader.isRunning():
                yield SourceEnd(ended)
                return
            stop_event.wait(POLL_INTERVAL_S)
            continue
        yield from split_by_count(batch.numpy(), max_chunk_events)


class CameraSource:
    """A live iniVation camera through ``dv.io.camera`` (chosen by serial, else the first).

    ``dv.io.camera.open()`` without a camera raises a bare IndexError and an
    unknown serial a RuntimeError with a C++ stack trace, so we check
    ``discover()`` first and say what is attached."""

    live = True

    def __init__(
        self,
        serial: str | None = None,
        *,
        packet_interval_us: int | None = DEFAULT_CHUNK_US,
        max_chunk_events: int = DEFAULT_MAX_CHUNK_EVENTS,
    ):
        import datetime

        import dv_processing as dv

        found = discover_cameras()
        if not found:
            raise SourceError(
                "no iniVation camera attached: dv.io.camera.discover() found none "
                "(check the USB cable, and on Linux the udev rules that give access to it)"
            )
        if serial is None:
            descriptor = found[0]
        else:
            matches = [d for d in found if d.serialNumber == serial]
            if not matches:
                attached = "; ".join(describe_camera(d) for d in found)
                raise SourceError(f"no camera with serial {serial!r}; attached: {attached}")
            descriptor = matches[0]
        try:
            self._camera = dv.io.camera.open(descriptor)
        except RuntimeError as error:
            raise SourceError(
                f"cannot open {describe_camera(descriptor)}: {dv_message(error)}"
            ) from None
        resolution = self._camera.getEventResolution()
        if resolution is None:
            raise SourceError(f"{describe_camera(descriptor)} has no event stream")
        self.sensor = SensorSize(int(resolution[0]), int(resolution[1]))
        self.serial = descriptor.serialNumber
        self.description = f"camera {self._camera.getCameraName()} ({self.sensor})"
        if packet_interval_us:
            self._camera.setTimeInterval(datetime.timedelta(microseconds=packet_interval_us))
        self.max_chunk_events = max_chunk_events

    def items(self, stop_event: threading.Event) -> Iterator[SourceItem]:
        yield from _batches_of(
            self._camera, stop_event, self.max_chunk_events, f"camera {self.serial} disconnected"
        )

    def close(self) -> None:
        self._camera = None


# --- DV network stream -----------------------------------------------------------------


class DvNetworkSource:
    """Events served over TCP by the DV software (or any ``dv.io.NetworkWriter``).

    The stream's sensor and camera name come from its stream definition; the
    stream ends when the server closes the connection."""

    live = True

    def __init__(self, host: str, port: int, *, max_chunk_events: int = DEFAULT_MAX_CHUNK_EVENTS):
        import dv_processing as dv

        self.address = f"{host}:{port}"
        try:
            self._reader = dv.io.NetworkReader(host, int(port))
        except RuntimeError as error:
            raise SourceError(
                f"cannot connect to the DV network stream at {self.address}: {dv_message(error)} "
                "(is the DV software's network output running there?)"
            ) from None
        if not self._reader.isEventStreamAvailable():
            raise SourceError(f"the DV network stream at {self.address} carries no events")
        resolution = self._reader.getEventResolution()
        self.sensor = SensorSize(int(resolution[0]), int(resolution[1]))
        self.description = (
            f"DV stream {self._reader.getCameraName()} at {self.address} ({self.sensor})"
        )
        self.max_chunk_events = max_chunk_events

    def items(self, stop_event: threading.Event) -> Iterator[SourceItem]:
        yield from _batches_of(
            self._reader,
            stop_event,
            self.max_chunk_events,
            f"DV stream at {self.address} closed",
        )

    def close(self) -> None:
        """Disconnect (drops the reader; the server sees the client leave)."""
        self._reader = None


def parse_host_port(text: str) -> tuple[str, int]:
    """``"host:port"`` (IPv6 as ``[::1]:7777``) -> (host, port), with a clear error."""
    host, sep, port = text.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"expected HOST:PORT (e.g. 127.0.0.1:7777), got {text!r}")
    return host, int(port)


# --- synthetic -------------------------------------------------------------------------


def format_rate(events_per_s: float) -> str:
    if events_per_s >= 1e6:
        return f"{events_per_s / 1e6:g} M ev/s"
    if events_per_s >= 1e3:
        return f"{events_per_s / 1e3:g} k ev/s"
    return f"{events_per_s:g} ev/s"


class SyntheticSource:
    """Events at a configurable rate for load tests: a blob circling the sensor plus noise.

    Time is simulated: chunk k covers ``[k * chunk_us, (k + 1) * chunk_us)``
    and holds Poisson(rate * chunk_us) events, so the rate per second of event
    time is the configured one and the producer's pacing sets the wall-clock
    rate. ``polarity`` is 1 on the blob's leading edge and 0 on its trailing
    edge, as a moving bright object would give."""

    live = False

    def __init__(
        self,
        events_per_s: float,
        *,
        sensor: SensorSize = DEFAULT_SYNTHETIC_SENSOR,
        chunk_us: int = DEFAULT_CHUNK_US,
        duration_us: int | None = None,
        seed: int = 0,
        orbit_period_us: int = 1_000_000,
        noise_fraction: float = 0.1,
        max_chunk_events: int = DEFAULT_MAX_CHUNK_EVENTS,
    ):
        if not events_per_s > 0 or not math.isfinite(events_per_s):
            raise ValueError(f"events_per_s must be a positive number, got {events_per_s}")
        if chunk_us <= 0:
            raise ValueError(f"chunk_us must be positive, got {chunk_us}")
        self.events_per_s = float(events_per_s)
        self.sensor = SensorSize(int(sensor[0]), int(sensor[1]))
        self.chunk_us = int(chunk_us)
        self.duration_us = duration_us
        self.seed = seed
        self.orbit_period_us = orbit_period_us
        self.noise_fraction = noise_fraction
        self.max_chunk_events = max_chunk_events
        self.description = f"synthetic {format_rate(events_per_s)} ({self.sensor})"

    def chunk(
        self, rng: np.random.Generator, start_us: int, end_us: int, normals: np.ndarray
    ) -> np.ndarray:
        """The events of ``[start_us, end_us)`` of simulated time; ``normals`` is the
        pool of standard normal samples of this run (``normal_pool``).

        Vectorised for load tests at tens of M events/s: timestamps by counting
        (no sort), the blob's position once per microsecond rather than per event,
        and its spread drawn from a pool of normal samples."""
        width, height = self.sensor
        span_us = end_us - start_us
        count = int(rng.poisson(self.events_per_s * span_us / 1e6))
        per_us = np.bincount(rng.integers(0, span_us, count), minlength=span_us)
        offset = np.repeat(np.arange(span_us), per_us)  # sorted by construction
        phase = 2 * np.pi * (start_us + np.arange(span_us)) / self.orbit_period_us
        cos, sin = np.cos(phase)[offset], np.sin(phase)[offset]
        radius = 0.3 * min(width, height)
        spread = max(min(width, height) / 12, 1.0)
        dx, dy = _draw_normals(rng, normals, count) * spread
        x = width / 2 + radius * cos + dx
        y = height / 2 + radius * sin + dy
        # Direction of motion is (-sin, cos): events ahead of the centre turn on.
        polarity = (-dx * sin + dy * cos) > 0
        noise = rng.random(count) < self.noise_fraction
        noisy = int(noise.sum())
        x[noise] = rng.integers(0, width, noisy)
        y[noise] = rng.integers(0, height, noisy)
        polarity[noise] = rng.random(noisy) < 0.5
        events = np.empty(count, dtype=EVENT_DTYPE)
        events["timestamp"] = start_us + offset
        events["x"] = np.clip(x, 0, width - 1).astype(np.int16)
        events["y"] = np.clip(y, 0, height - 1).astype(np.int16)
        events["polarity"] = polarity
        return events

    def normal_pool(self, rng: np.random.Generator) -> np.ndarray:
        """Standard normal samples for the blob's spread, about 16 chunks' worth."""
        per_chunk = self.events_per_s * self.chunk_us / 1e6
        size = int(min(NORMAL_POOL, max(4096, 32 * per_chunk)))
        return rng.standard_normal(size, dtype=np.float32)

    def items(self, stop_event: threading.Event) -> Iterator[SourceItem]:
        rng = np.random.default_rng(self.seed)
        normals = self.normal_pool(rng)
        start_us = 0
        while not stop_event.is_set():
            end_us = start_us + self.chunk_us
            if self.duration_us is not None:
                end_us = min(end_us, self.duration_us)
                if end_us <= start_us:
                    yield SourceEnd(f"synthetic source done after {self.duration_us} µs")
                    return
            chunk = self.chunk(rng, start_us, end_us, normals)
            yield from split_by_count(chunk, self.max_chunk_events)
            start_us = end_us

    def close(self) -> None:
        pass


def _draw_normals(rng: np.random.Generator, pool: np.ndarray, count: int) -> np.ndarray:
    """``[2, count]`` standard normal samples: a contiguous slice of ``pool`` at a random
    place (drawing them afresh was half the synthetic generator's time)."""
    need = 2 * count
    if need > len(pool):
        return rng.standard_normal((2, count), dtype=np.float32)
    start = int(rng.integers(0, len(pool) - need + 1))
    return pool[start : start + need].reshape(2, count)
