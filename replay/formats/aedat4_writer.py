"""Writing AEDAT4 files with dv-processing, for tests, benchmarks and conversions.

``write_aedat4`` builds dv-processing ``EventStore`` objects from our arrays.
There is no bulk path from numpy in dv-processing 2.0.4 (``EventStore``,
``EventPacket`` and its ``EventVector`` take events one by one, the arrays
their ``numpy()`` methods return are copies, and none exposes a buffer), so the
fastest route measured is ``EventStore.push_back`` of the tuples of
``ndarray.tolist()`` with the garbage collector paused: ~3.5-4 M events/s for
building the stores, 10x slower than reading (``aedat4.py``).
"""

from __future__ import annotations

import gc
import os
from pathlib import Path

import numpy as np

from core.events import SensorSize, as_events, validate_events

WRITE_PACKET_EVENTS = 100_000
COMPRESSIONS = ("lz4", "lz4_high", "zstd", "zstd_high", "none")


def write_aedat4(
    path: str | os.PathLike,
    events: np.ndarray,
    sensor: SensorSize,
    *,
    camera_name: str = "stcsnn",
    compression: str = "lz4",
    packet_events: int = WRITE_PACKET_EVENTS,
) -> None:
    """Write ``events`` as the event stream of an AEDAT4 file (dv-processing's
    ``MonoCameraWriter``, event-only configuration). The file appears whole or
    not at all (written beside it, then renamed)."""
    import dv_processing as dv

    source = str(path)
    events = as_events(events, source)
    validate_events(events, sensor, source)
    if compression not in COMPRESSIONS:
        raise ValueError(f"compression must be one of {COMPRESSIONS}, got {compression!r}")
    if packet_events < 1:
        raise ValueError(f"packet_events must be >= 1, got {packet_events}")
    compression_type = getattr(dv.CompressionType, compression.upper())
    config = dv.io.MonoCameraWriter.EventOnlyConfig(
        camera_name, (int(sensor.width), int(sensor.height)), compression_type
    )
    path = Path(path)
    # dv-processing aborts the process (std::terminate) unless the name ends in .aedat4.
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial.aedat4")
    try:
        writer = dv.io.MonoCameraWriter(str(partial), config)
        gc_was_enabled = gc.isenabled()
        gc.disable()  # millions of short-lived tuples: the collector only slows this down
        try:
            for start in range(0, len(events), packet_events):
                writer.writeEvents(_event_store(dv, events[start : start + packet_events]))
        finally:
            if gc_was_enabled:
                gc.enable()
        del writer  # dv-processing finishes the file when the writer is destroyed
        os.replace(partial, path)
    finally:
        if partial.exists():
            partial.unlink()


def _event_store(dv, events: np.ndarray):
    store = dv.EventStore()
    push_back = store.push_back
    for event in events.tolist():
        push_back(event)
    return store
