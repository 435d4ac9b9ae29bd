"""AEDAT4 files (iniVation DV), read with dv-processing (written by ``aedat4_writer.py``).

An AEDAT4 file starts with ``#!AER-DAT4.0\\r\\n``, an int32 size and an
``IOHeader`` flatbuffer (identifier ``IOHE``: compression, data table position,
an XML description of the streams), followed by compressed packets of the
streams (events, IMU, triggers, frames, ...) and a table of those packets.
dv-processing reads and writes all of it; this module adds what the project
needs around it:

- **Reading runs in a child process** (``aedat4_child.py``). dv-processing 2.0.4
  loops forever, holding the GIL, on a corrupt LZ4 packet (measured: about one
  in three randomly corrupted copies of the real DVXplorer recording), and a
  loop inside C++ cannot be interrupted from Python. The child streams events
  back through a pipe while the parent watches for progress: no progress for
  ``stall_timeout_s`` (by default 1 s plus 1 s per 5 MB of the largest packet, at
  most 10 s: ``aedat4_layout.py``) means the child is killed and a FormatError
  names the file and the event index reached. The child also has a capped address space
  (``memory_limit_bytes``) and dies with its parent. Cost: about 0.3 s to start
  the child per file, and one copy of the events through the pipe.
- Before the child starts, the first bytes are checked here (empty file, magic,
  header size, ``IOHE`` identifier) and then the packet framing
  (``aedat4_layout.py``: sizes, stream ids, compression frame magic), so most
  bad files fail fast, without a child.
- What dv-processing accepts is checked as our readers check everything: events
  inside the sensor, timestamps non-decreasing (EventValidationError naming the
  event index). A corrupt packet that still decompresses can yield wrong events
  that pass these checks; AEDAT4 has no checksum to catch that.
"""

from __future__ import annotations

import json
import os
import select
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from core.events import (
    EVENT_DTYPE,
    FormatError,
    Recording,
    SensorSize,
    concat_events,
    validate_events,
)
from replay.formats.aedat4_layout import scan_aedat4

MAGIC = b"#!AER-DAT4.0\r\n"
IOHEADER_IDENTIFIER = b"IOHE"
HEADER_SIZE = struct.Struct("<i")
MAX_IOHEADER_BYTES = 64 << 20  # real ones are a few KB of XML
DEFAULT_CHUNK_EVENTS = 1_000_000
PIPELINE_CHUNK_EVENTS = 1 << 18  # read_aedat4's chunks (measured fastest of 128 K-4 M)
STARTUP_TIMEOUT_S = 60.0  # python + numpy + dv-processing imports, on a loaded machine
DEFAULT_MEMORY_LIMIT_BYTES = 4 << 30  # the child's address space
CHILD_SCRIPT = Path(__file__).with_name("aedat4_child.py")

_FRAME_HEADER = struct.Struct("<cQ")
_PROGRESS = struct.Struct("<QQ")
_MAX_JSON_FRAME_BYTES = 16 << 20


@dataclass(frozen=True)
class Aedat4Info:
    """What an AEDAT4 file holds, as dv-processing sees it."""

    source: str
    camera_name: str
    streams: dict[str, str]  # stream name -> "events", "imu", "triggers", "frames", ...
    sensor: SensorSize | None  # resolution of the (first) event stream
    frame_size: SensorSize | None
    time_range_us: tuple[int, int] | None  # over all streams, from the file's packet table
    element_counts: dict[str, int] | None = None  # per stream, where counted
    event_stream: str | None = None

    def has(self, kind: str) -> bool:
        return kind in self.streams.values()

    def as_dict(self) -> dict:
        return {
            "camera_name": self.camera_name,
            "streams": dict(self.streams),
            "width": self.sensor.width if self.sensor else None,
            "height": self.sensor.height if self.sensor else None,
            "time_range_us": list(self.time_range_us) if self.time_range_us else None,
            "element_counts": self.element_counts,
        }


# ---------------------------------------------------------------- header check


def check_aedat4_header(path: str | os.PathLike) -> int:
    """Cheap checks of the first bytes, in this process: FormatError naming the
    byte unless the file starts like an AEDAT4 file. Returns the file size."""
    source = str(path)
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        head = f.read(len(MAGIC) + HEADER_SIZE.size + 8)
    if size == 0:
        raise FormatError(source, "byte 0", "empty file; expected an AEDAT4 header '#!AER-DAT4.0'")
    if not head.startswith(MAGIC):
        found = head[: len(MAGIC)]
        hint = ""
        if found.startswith(b"#!AER-DAT3"):
            hint = ": it is AEDAT 3.x, read it with replay.formats.aedat3"
        elif found.startswith(b"#!AER-DAT2"):
            hint = ": it is AEDAT 2.0, read it with replay.formats.aedat2"
        raise FormatError(
            source, "byte 0", f"not an AEDAT4 file: expected {MAGIC!r}, found {found!r}{hint}"
        )
    offset = len(MAGIC)
    if len(head) < offset + HEADER_SIZE.size:
        raise FormatError(source, f"byte {len(head)}", "file ends inside the header size field")
    (header_bytes,) = HEADER_SIZE.unpack_from(head, offset)
    header_end = offset + HEADER_SIZE.size + header_bytes
    if header_bytes < 8 or header_bytes > MAX_IOHEADER_BYTES or header_end > size:
        raise FormatError(
            source,
            f"byte {offset}",
            f"IOHeader size {header_bytes} does not fit (file of {size} bytes, "
            f"limit {MAX_IOHEADER_BYTES}); truncated or corrupt",
        )
    identifier_at = offset + HEADER_SIZE.size + 4
    identifier = head[identifier_at : identifier_at + 4]
    if identifier != IOHEADER_IDENTIFIER:
        raise FormatError(
            source,
            f"byte {identifier_at}",
            f"IOHeader identifier {identifier!r} is not {IOHEADER_IDENTIFIER!r}",
        )
    return size


# ---------------------------------------------------------------- reading


class Aedat4Reader:
    """The events of one AEDAT4 file, decoded by dv-processing in a child process.

    An iterator of EVENT_DTYPE arrays of ``chunk_events`` events (the last one
    shorter). ``info`` is known as soon as the reader exists; ``element_counts``
    after the last chunk when ``count_other_streams`` is set. Close it (or use
    it as a context manager) to stop the child early.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        chunk_events: int = DEFAULT_CHUNK_EVENTS,
        read_events: bool = True,
        count_other_streams: bool = False,
        stall_timeout_s: float | None = None,
        memory_limit_bytes: int = DEFAULT_MEMORY_LIMIT_BYTES,
    ):
        if chunk_events < 1:
            raise ValueError(f"chunk_events must be >= 1, got {chunk_events}")
        self.source = str(path)
        # The framing first (aedat4_layout.py): most corruption is caught there at once.
        self.layout = scan_aedat4(path, check_aedat4_header(path))
        self.stall_timeout_s = stall_timeout_s or self.layout.stall_timeout_s()
        self.element_counts: dict[str, int] | None = None
        self._events_read = 0
        self._child_decoded = 0  # events the child has decoded (it sends them in chunks)
        self._child_batches = 0
        self._previous_timestamp: int | None = None
        self._done = False
        self._process: subprocess.Popen | None = None
        self._link_dir: str | None = None
        self._stderr = tempfile.TemporaryFile()
        self._started = False
        try:
            self._spawn(path, chunk_events, read_events, count_other_streams, memory_limit_bytes)
            self.info = self._read_info()
        except BaseException:
            self.close()
            raise
        self.sensor = self.info.sensor
        if read_events and self.info.event_stream is not None and self.sensor is None:
            self.close()
            raise FormatError(
                self.source, "", f"event stream {self.info.event_stream!r} has no resolution"
            )
        if read_events and self.info.event_stream is None:
            self.close()
            kinds = ", ".join(f"{n} ({k})" for n, k in self.info.streams.items()) or "none"
            raise FormatError(
                self.source, "", f"no event stream in this AEDAT4 file (streams: {kinds})"
            )

    def _spawn(
        self,
        path: str | os.PathLike,
        chunk_events: int,
        read_events: bool,
        count_other_streams: bool,
        memory_limit_bytes: int,
    ) -> None:
        env = dict(os.environ)
        for name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            env[name] = "1"
        command = [
            sys.executable,
            str(CHILD_SCRIPT),
            "events" if read_events else "info",
            self._dv_path(path),
            str(int(chunk_events)),
            "1" if count_other_streams else "0",
            str(int(memory_limit_bytes)),
        ]
        self._process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            env=env,
            bufsize=0,
        )
        self._fd = self._process.stdout.fileno()
        _widen_pipe(self._fd)

    def _dv_path(self, path: str | os.PathLike) -> str:
        """dv-processing opens only names ending in .aedat4: others get a link that does."""
        path = os.path.abspath(path)
        if path.endswith(".aedat4"):
            return path
        self._link_dir = tempfile.mkdtemp(prefix="stcsnn-aedat4-")
        link = os.path.join(self._link_dir, "recording.aedat4")
        os.symlink(path, link)
        return link

    # -- iteration

    def __iter__(self) -> Aedat4Reader:
        return self

    def __next__(self) -> np.ndarray:
        if self._done:
            raise StopIteration
        try:
            while True:
                kind, payload = self._next_frame()
                if kind == b"E":
                    return self._checked_events(payload)
                if kind == b"C":
                    self.element_counts = json.loads(payload)
                elif kind == b"D":
                    # Everything has arrived; the child's interpreter shutdown
                    # is not worth waiting for.
                    self.close()
                    raise StopIteration
                elif kind == b"X":
                    raise self._child_error(json.loads(payload))
                else:
                    raise self._protocol_error(kind)
        except StopIteration:
            raise
        except BaseException:
            self.close()
            raise

    def _checked_events(self, payload: bytearray) -> np.ndarray:
        if len(payload) % EVENT_DTYPE.itemsize:
            raise self._protocol_error(b"E")
        events = np.frombuffer(payload, dtype=EVENT_DTYPE)
        validate_events(
            events, self.sensor, self.source, self._events_read, self._previous_timestamp
        )
        self._events_read += len(events)
        if len(events):
            self._previous_timestamp = int(events["timestamp"][-1])
        return events

    # -- frames from the child

    def _read_info(self) -> Aedat4Info:
        while True:
            kind, payload = self._next_frame()
            if kind == b"I":
                return self._parse_info(json.loads(payload))
            if kind == b"X":
                raise self._child_error(json.loads(payload))
            raise self._protocol_error(kind)

    def _parse_info(self, raw: dict) -> Aedat4Info:
        layout = raw.get("dtype", {})
        expected = {
            "names": list(EVENT_DTYPE.names),
            "itemsize": EVENT_DTYPE.itemsize,
            "offsets": [EVENT_DTYPE.fields[n][1] for n in EVENT_DTYPE.names],
            "formats": [EVENT_DTYPE.fields[n][0].str for n in EVENT_DTYPE.names],
        }
        if layout != expected:
            raise RuntimeError(
                f"dv-processing's event layout {layout} differs from EVENT_DTYPE {expected}"
            )

        def size(value) -> SensorSize | None:
            return SensorSize(int(value[0]), int(value[1])) if value else None

        time_range = raw.get("time_range")
        return Aedat4Info(
            source=self.source,
            camera_name=str(raw.get("camera_name", "")),
            streams=dict(raw.get("streams", {})),
            sensor=size(raw.get("resolution")),
            frame_size=size(raw.get("frame_size")),
            time_range_us=(int(time_range[0]), int(time_range[1])) if time_range else None,
            event_stream=raw.get("event_stream"),
        )

    def _next_frame(self) -> tuple[bytes, bytearray]:
        """The next frame other than a beat."""
        while True:
            header = bytearray(_FRAME_HEADER.size)
            self._read_exact(header)
            kind, length = _FRAME_HEADER.unpack(header)
            if kind != b"E" and length > _MAX_JSON_FRAME_BYTES:
                raise self._protocol_error(kind)
            payload = bytearray(length)
            self._read_exact(payload)
            if kind == b"B":
                self._started = True
                continue
            if kind == b"P" and length == _PROGRESS.size:
                self._child_decoded, self._child_batches = _PROGRESS.unpack(payload)
                continue
            return kind, payload

    def _read_exact(self, buffer: bytearray) -> None:
        view = memoryview(buffer)
        got = 0
        while got < len(buffer):
            timeout = self.stall_timeout_s if self._started else STARTUP_TIMEOUT_S
            try:
                ready, _, _ = select.select([self._fd], [], [], timeout)
                if not ready:
                    raise self._stall_error(timeout)
                n = os.readv(self._fd, [view[got:]])
            except InterruptedError:
                continue
            if n == 0:
                raise self._crash_error()
            got += n

    # -- errors

    def _where(self, events: int | None = None) -> str:
        return f"event {self._events_read if events is None else events}"

    def _stall_error(self, timeout: float) -> FormatError:
        self._kill()
        decoded = max(self._child_decoded, self._events_read)
        return FormatError(
            self.source,
            self._where(decoded),
            f"dv-processing made no progress for {timeout:g} s decoding event packet "
            f"{self._child_batches + 1} and was stopped (dv-processing 2.0.4 loops forever "
            "on a corrupt compressed packet); corrupt file",
        )

    def _crash_error(self) -> FormatError:
        code = self._process.wait(timeout=10)
        how = f"exit code {code}"
        if code < 0:
            try:
                how = f"signal {signal.Signals(-code).name}"
            except ValueError:
                how = f"signal {-code}"
        return FormatError(
            self.source,
            self._where(),
            f"dv-processing stopped unexpectedly ({how}) while reading{self._stderr_tail()}",
        )

    def _child_error(self, raw: dict) -> FormatError:
        stage = raw.get("stage", "")
        message = raw.get("message", "")
        if stage == "open":
            return FormatError(self.source, "", f"dv-processing cannot open it: {message}")
        if stage == "count":
            return FormatError(
                self.source, "", f"dv-processing failed while counting stream elements: {message}"
            )
        decoded = int(raw.get("events_decoded", self._events_read))
        packet = int(raw.get("batches", 0)) + 1
        return FormatError(
            self.source,
            self._where(decoded),
            f"dv-processing failed on event packet {packet}: {message}",
        )

    def _protocol_error(self, kind: bytes) -> RuntimeError:
        self._kill()
        return RuntimeError(
            f"{self.source}: unexpected frame {kind!r} from the AEDAT4 child process"
            f"{self._stderr_tail()}"
        )

    def _stderr_tail(self) -> str:
        try:
            self._stderr.seek(0, os.SEEK_END)
            size = self._stderr.tell()
            self._stderr.seek(max(0, size - 300))
            text = self._stderr.read().decode("utf-8", "replace").strip()
        except (OSError, ValueError, AttributeError):  # AttributeError: already closed
            return ""
        return f": {text.splitlines()[-1]}" if text else ""

    # -- lifetime

    def _kill(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.kill()
            self._process.wait()

    def close(self) -> None:
        """Stop the child (if still running) and release its pipe."""
        self._done = True
        if self._process is not None:
            self._kill()
            self._process.stdout.close()
            self._process = None
        stderr = getattr(self, "_stderr", None)
        if stderr is not None:
            stderr.close()
            self._stderr = None
        link_dir = getattr(self, "_link_dir", None)
        if link_dir is not None:
            shutil.rmtree(link_dir, ignore_errors=True)
            self._link_dir = None

    def __enter__(self) -> Aedat4Reader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass


def _widen_pipe(fd: int) -> None:
    """Ask Linux for a 1 MiB pipe (default 64 KiB): 16x fewer reads per chunk."""
    try:
        import fcntl

        fcntl.fcntl(fd, getattr(fcntl, "F_SETPIPE_SZ", 1031), 1 << 20)
    except (ImportError, OSError):
        pass


def iter_aedat4(
    path: str | os.PathLike,
    *,
    chunk_events: int = DEFAULT_CHUNK_EVENTS,
    stall_timeout_s: float | None = None,
) -> Aedat4Reader:
    """The events of an AEDAT4 file in EVENT_DTYPE arrays of ``chunk_events``
    (the last one shorter), in bounded memory (one chunk here, about one chunk
    in the child). The returned reader has ``.sensor`` and ``.info``."""
    return Aedat4Reader(path, chunk_events=chunk_events, stall_timeout_s=stall_timeout_s)


def read_aedat4(path: str | os.PathLike, *, stall_timeout_s: float | None = None) -> Recording:
    """The whole event stream as one Recording; sensor from ``getEventResolution()``."""
    # Small chunks let the child decode the next while this process takes the last.
    with Aedat4Reader(
        path, chunk_events=PIPELINE_CHUNK_EVENTS, stall_timeout_s=stall_timeout_s
    ) as reader:
        chunks = list(reader)
        sensor = reader.sensor
    return Recording(concat_events(chunks), sensor, str(path))


def aedat4_info(
    path: str | os.PathLike,
    *,
    count_elements: bool = False,
    stall_timeout_s: float | None = None,
) -> Aedat4Info:
    """Streams (events, imu, triggers, frames, ...), event resolution, camera
    name and time range of an AEDAT4 file, without transferring its events.
    ``count_elements`` decodes every stream to count its elements."""
    with Aedat4Reader(
        path,
        read_events=False,
        count_other_streams=count_elements,
        stall_timeout_s=stall_timeout_s,
    ) as reader:
        for _ in reader:
            pass
        counts = reader.element_counts
        info = reader.info
    if counts is None:
        return info
    return Aedat4Info(**{**info.__dict__, "element_counts": counts})


__all__ = [
    "Aedat4Info",
    "Aedat4Reader",
    "aedat4_info",
    "check_aedat4_header",
    "iter_aedat4",
    "read_aedat4",
]
