"""The child process that reads an AEDAT4 file with dv-processing for ``aedat4.py``.

Why a separate process: dv-processing 2.0.4 loops forever, holding the GIL, when
a compressed packet of an AEDAT4 file is corrupt (any LZ4 frame error: a flipped
bit in a frame header, block size or end mark, and some flips inside the
compressed data; measured with randomised corruption of the real DVXplorer
recording, see ``tests/test_corruption_files.py``). Nothing inside the reading
process can stop that loop, so the parent runs dv-processing here, watches for
progress and kills this process when it stalls. A crash or a failed allocation
here cannot take the parent down either.

Run as a script (``python aedat4_child.py MODE PATH CHUNK_EVENTS COUNT MEMORY``)
with only numpy and dv-processing importable; it imports nothing from stcsnn.
It writes frames to stdout: one kind byte, a little-endian uint64 payload length,
then the payload:

- ``B`` beat (empty): alive, sent at start-up and at least every
  ``BEAT_INTERVAL_S`` while other streams are counted;
- ``P`` progress after every event batch: uint64 events decoded, uint64 batches
  read (so a stall can be placed at the event where it happened);
- ``I`` JSON: camera name, event resolution, streams and their kinds, time range,
  the numpy dtype of dv-processing's events;
- ``E`` raw events, ``CHUNK_EVENTS`` of them (the last frame shorter), in the
  16-byte layout of ``EventStore.numpy()``;
- ``C`` JSON: elements per stream (only with COUNT = 1);
- ``X`` JSON: an error dv-processing raised (stage, message, events sent before);
- ``D`` JSON: the end (events sent, event batches read).

MODE ``events`` sends the events; ``info`` sends none (with COUNT = 1 it still
decodes every stream to count its elements).
"""

from __future__ import annotations

import json
import os
import struct
import sys
import time

FRAME_HEADER = struct.Struct("<cQ")
PROGRESS = struct.Struct("<QQ")
BEAT_INTERVAL_S = 0.2
STREAM_KINDS = (
    ("events", "isStreamOfEventType"),
    ("imu", "isStreamOfImuType"),
    ("triggers", "isStreamOfTriggerType"),
    ("frames", "isStreamOfFrameType"),
    ("poses", "isStreamOfPoseType"),
    ("bounding_boxes", "isStreamOfBoundingBoxType"),
    ("timed_keypoints", "isStreamOfTimedKeyPointType"),
)


class Channel:
    """Framed writes to stdout, with beats rate-limited to one per interval."""

    def __init__(self) -> None:
        self.out = os.fdopen(os.dup(1), "wb", buffering=0)
        self.last_send = 0.0

    def send(self, kind: bytes, *payload: bytes | memoryview) -> None:
        length = sum(len(p) for p in payload)
        self._write(FRAME_HEADER.pack(kind, length))
        for part in payload:
            self._write(part)
        self.last_send = time.monotonic()

    def send_json(self, kind: bytes, value: dict) -> None:
        self.send(kind, json.dumps(value).encode())

    def progress(self, decoded: int, batches: int) -> None:
        self.send(b"P", PROGRESS.pack(decoded, batches))

    def beat(self) -> None:
        if time.monotonic() - self.last_send >= BEAT_INTERVAL_S:
            self.send(b"B")

    def _write(self, data: bytes | memoryview) -> None:
        view = memoryview(data).cast("B")
        while view:
            written = self.out.write(view)
            view = view[written:]


def limit_resources(memory_bytes: int) -> None:
    """Cap the address space, and die with the parent (a stuck decode would
    otherwise spin forever as an orphan)."""
    try:
        import resource

        if memory_bytes > 0:
            resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
    except (ImportError, ValueError, OSError):
        pass
    if sys.platform.startswith("linux"):
        try:
            import ctypes
            import signal

            libc = ctypes.CDLL(None, use_errno=True)
            pr_set_pdeathsig = 1
            libc.prctl(pr_set_pdeathsig, signal.SIGKILL, 0, 0, 0)
            if os.getppid() == 1:  # the parent is already gone
                os._exit(1)
        except (OSError, AttributeError):
            pass


def clean_message(error: BaseException) -> str:
    """dv-processing's message without the C++ source location and signature."""
    text = " ".join(str(error).split())
    marker = "() "
    if text.startswith("/") and marker in text:
        text = text.split(marker, 1)[1]
    text = text.split(" Stacktrace:", 1)[0]
    return f"{type(error).__name__}: {text}"[:400]


def describe(recording) -> dict:
    streams = {}
    for name in recording.getStreamNames():
        kind = "other"
        for candidate, test in STREAM_KINDS:
            if getattr(recording, test)(name):
                kind = candidate
                break
        streams[name] = kind
    event_streams = [name for name, kind in streams.items() if kind == "events"]
    resolution = None
    if event_streams:
        size = recording.getEventResolution(event_streams[0])
        resolution = list(size) if size is not None else None
    frame_streams = [name for name, kind in streams.items() if kind == "frames"]
    frame_size = None
    if frame_streams:
        size = recording.getFrameResolution(frame_streams[0])
        frame_size = list(size) if size is not None else None
    try:
        time_range = list(recording.getTimeRange())
        if time_range[0] > time_range[1]:  # no packets: (INT64_MAX, 0)
            time_range = None
    except Exception:  # empty files have no time range
        time_range = None
    return {
        "camera_name": recording.getCameraName(),
        "streams": streams,
        "event_stream": event_streams[0] if event_streams else None,
        "resolution": resolution,
        "frame_size": frame_size,
        "time_range": time_range,
    }


class Progress:
    """How far reading got, for the error message if dv-processing raises."""

    def __init__(self) -> None:
        self.sent = 0  # events written to the parent
        self.decoded = 0  # events dv-processing has returned
        self.batches = 0  # event batches (packets) read


def send_events(channel: Channel, recording, stream: str, chunk_events: int, progress) -> None:
    """Stream the events in frames of ``chunk_events`` events."""
    parts = []
    pending = 0

    def flush(count: int) -> None:
        nonlocal pending
        out = []
        need = count
        while need:
            head = parts[0]
            if len(head) <= need:
                out.append(parts.pop(0))
                need -= len(head)
            else:
                out.append(head[:need])
                parts[0] = head[need:]
                need = 0
        # As bytes: a structured memoryview cannot be cast to bytes.
        channel.send(b"E", *(part.view("u1") for part in out))
        pending -= count
        progress.sent += count

    while True:
        batch = recording.getNextEventBatch(stream)
        if batch is None:
            break
        progress.batches += 1
        events = batch.numpy()
        if len(events):
            parts.append(events)
            pending += len(events)
            progress.decoded += len(events)
        while pending >= chunk_events:
            flush(chunk_events)
        channel.progress(progress.decoded, progress.batches)
    if pending:
        flush(pending)


def count_elements(channel: Channel, recording, streams: dict[str, str], skip: str | None) -> dict:
    readers = {
        "events": recording.getNextEventBatch,
        "imu": recording.getNextImuBatch,
        "triggers": recording.getNextTriggerBatch,
    }
    counts = {}
    for name, kind in streams.items():
        if name == skip:
            continue
        count = 0
        if kind in readers:
            while (batch := readers[kind](name)) is not None:
                count += len(batch)
                channel.beat()
        elif kind == "frames":
            while recording.getNextFrame(name) is not None:
                count += 1
                channel.beat()
        else:
            continue
        counts[name] = count
    return counts


def main(argv: list[str]) -> int:
    mode, path, chunk_events, count, memory_bytes = argv[1:6]
    limit_resources(int(memory_bytes))
    channel = Channel()
    channel.send(b"B")
    import dv_processing as dv

    channel.send(b"B")
    stage = "open"
    progress = Progress()
    try:
        recording = dv.io.MonoCameraRecording(path)
        info = describe(recording)
        layout = dv.EventStore().numpy().dtype
        info["dtype"] = {"names": list(layout.names), "itemsize": layout.itemsize}
        info["dtype"]["offsets"] = [layout.fields[n][1] for n in layout.names]
        info["dtype"]["formats"] = [layout.fields[n][0].str for n in layout.names]
        channel.send_json(b"I", info)
        stream = info["event_stream"]
        if mode == "events" and stream is not None:
            stage = "events"
            send_events(channel, recording, stream, int(chunk_events), progress)
        if count == "1":
            stage = "count"
            skip = stream if mode == "events" else None
            counts = count_elements(channel, recording, info["streams"], skip)
            if skip is not None:
                counts[skip] = progress.sent
            channel.send_json(b"C", counts)
        channel.send_json(b"D", {"events": progress.sent, "batches": progress.batches})
    except (Exception, MemoryError) as error:  # everything dv-processing raises
        channel.send_json(
            b"X",
            {
                "stage": stage,
                "message": clean_message(error),
                "events_sent": progress.sent,
                "events_decoded": progress.decoded,
                "batches": progress.batches,
            },
        )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
