"""`stcsnn inspect FILE [--json]`: describe an event file.

Prints the format, sensor size, event count, what was skipped (by kind),
first and last timestamps, duration, event rate, polarity balance, the extra
streams of an AEDAT4 file and the labels found beside the file
(``replay.formats.labels_for``). The events are read in chunks, so a file of
any length is inspected in bounded memory.

``--json`` prints one object with at least ``format``, ``width``, ``height``,
``events``, ``t_first_us``, ``t_last_us`` (null for a file without events) and
``skipped``: what the reader read but did not yield, as counts by kind (AEDAT
2.0: ``special``, ``aps``, ``imu``, ``out_of_sensor`` records; AEDAT 3.1:
``invalid``, ``out_of_sensor`` and the events of skipped packets by libcaer
type, ``special``, ``frame``, ``imu6`` ...; AEDAT4: the elements of the other
streams by kind, ``imu``, ``triggers``, ``frames``; ``{}`` for N-MNIST and
DVS_Sign, whose readers skip nothing: anything odd there is an error); also
``format_name``, ``file``, ``duration_us``, ``event_rate_per_s``,
``polarity_on_fraction``, for AEDAT4 ``streams`` (name -> kind) and
``stream_elements`` (name -> count), and where the file has labels ``labels``: a
list of ``{"class_id", "name", "start_us", "end_us"}`` (DVS128 Gesture: the
segments of the CSV beside the file, class ids 1-11; a sample in a class folder:
one entry spanning the file, ``class_id`` the class index) and
``labels_source``. A bad file prints one line naming the file and the problem on
stderr and exits with 1.
"""

from __future__ import annotations

import argparse
import json
import sys

CHUNK_EVENTS = 1_000_000


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "file",
        help="AEDAT 3.1, AEDAT4, AEDAT 2.0 (DVS128, DAVIS240/346), N-MNIST .bin/.bs2 or "
        "DVS_Sign .npz",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")


class EventSummary:
    """Count, time span and polarity balance, accumulated chunk by chunk."""

    def __init__(self) -> None:
        self.events = 0
        self.on_events = 0
        self.t_first_us: int | None = None
        self.t_last_us: int | None = None

    def add(self, chunk) -> None:
        if len(chunk) == 0:
            return
        if self.t_first_us is None:
            self.t_first_us = int(chunk["timestamp"][0])
        self.t_last_us = int(chunk["timestamp"][-1])
        self.events += len(chunk)
        self.on_events += int(chunk["polarity"].sum(dtype="int64"))

    def as_dict(self) -> dict:
        duration_us = self.t_last_us - self.t_first_us if self.t_first_us is not None else None
        rate = self.events / (duration_us / 1e6) if duration_us else None
        return {
            "events": self.events,
            "t_first_us": self.t_first_us,
            "t_last_us": self.t_last_us,
            "duration_us": duration_us,
            "event_rate_per_s": rate,
            "polarity_on_fraction": self.on_events / self.events if self.events else None,
        }


def describe(path: str) -> dict:
    """Everything ``inspect`` reports about one file, as a JSON-ready dict."""
    from replay.formats import FORMAT_NAMES, detect_format, labels_for

    name = detect_format(path)
    summary = EventSummary()
    extra: dict = {}
    if name == "aedat4":
        sensor, skipped = _read_aedat4(path, summary, extra)
    else:
        sensor, skipped = _read_events(name, path, summary)
    result = {
        "file": str(path),
        "format": name,
        "format_name": FORMAT_NAMES[name],
        "width": int(sensor.width),
        "height": int(sensor.height),
        **summary.as_dict(),
        "skipped": skipped,
        **extra,
    }
    labels = labels_for(path)
    if labels is not None:
        result.update(_labels(labels, summary, path))
    return result


def _read_events(name: str, path: str, summary: EventSummary) -> tuple:
    """(sensor, skipped counts by kind), adding every event to ``summary``.
    AEDAT 2.0 and 3.1 are read with a stats object, which counts what they
    skip; the other readers skip nothing (``{}``)."""
    from replay.formats import iter_recording

    stats = None
    if name == "aedat2":
        from replay.formats.aedat2 import Aedat2Stats, iter_aedat2, read_aedat2_header

        stats = Aedat2Stats()
        sensor = read_aedat2_header(path).sensor
        chunks = iter_aedat2(path, chunk_events=CHUNK_EVENTS, stats=stats)
    elif name == "aedat3":
        from replay.formats.aedat3 import Aedat3Stats, iter_aedat3, read_aedat3_header

        stats = Aedat3Stats()
        sensor = read_aedat3_header(path).sensor
        chunks = iter_aedat3(path, chunk_events=CHUNK_EVENTS, stats=stats)
    elif name in ("prophesee_raw", "prophesee_dat"):
        from replay.formats.prophesee import PropheseeStats, iter_prophesee, prophesee_sensor

        stats = PropheseeStats()
        sensor = prophesee_sensor(path)
        chunks = iter_prophesee(path, chunk_events=CHUNK_EVENTS, stats=stats)
    elif name == "event_stream":
        from replay.formats.event_stream import (
            EventStreamStats,
            iter_event_stream,
            read_event_stream_header,
        )

        stats = EventStreamStats()
        sensor = read_event_stream_header(path).sensor
        chunks = iter_event_stream(path, chunk_events=CHUNK_EVENTS, stats=stats)
    else:
        sensor, chunks = iter_recording(path, chunk_events=CHUNK_EVENTS)
    for chunk in chunks:
        summary.add(chunk)
    return sensor, stats.skipped() if stats is not None else {}


def _read_aedat4(path: str, summary: EventSummary, extra: dict) -> tuple:
    """(sensor, skipped: the elements of the other streams by kind); the
    streams, their element counts and the camera go to ``extra``."""
    from replay.formats.aedat4 import Aedat4Reader

    with Aedat4Reader(path, chunk_events=CHUNK_EVENTS, count_other_streams=True) as reader:
        for chunk in reader:
            summary.add(chunk)
        streams = dict(reader.info.streams)
        counts = reader.element_counts or {}
        extra["streams"] = streams
        extra["stream_elements"] = reader.element_counts
        extra["camera_name"] = reader.info.camera_name
        skipped: dict[str, int] = {}
        for stream, kind in streams.items():
            if stream != reader.info.event_stream and isinstance(counts.get(stream), int):
                skipped[kind] = skipped.get(kind, 0) + counts[stream]
        return reader.sensor, skipped


def _labels(labels, summary: EventSummary, path: str) -> dict:
    if isinstance(labels, int):
        return {
            "labels": [
                {
                    "class_id": labels,
                    "name": str(labels),
                    "start_us": summary.t_first_us,
                    "end_us": summary.t_last_us,
                }
            ],
            "labels_source": "folder",
        }
    from pathlib import Path

    from replay.formats import GESTURE_LABELS_SUFFIX
    from replay.formats.gesture_labels import FIRST_CLASS_ID, GESTURE_CLASS_NAMES

    file = Path(path)
    return {
        "labels": [
            {
                "class_id": FIRST_CLASS_ID + s.label,  # as in the CSV
                "name": GESTURE_CLASS_NAMES[s.label],
                "start_us": s.start_us,
                "end_us": s.end_us,
            }
            for s in labels
        ],
        "labels_source": str(file.with_name(file.stem + GESTURE_LABELS_SUFFIX)),
    }


def format_text(info: dict) -> str:
    lines = [
        ("file", info["file"]),
        ("format", info["format_name"]),
        ("sensor", f"{info['width']}x{info['height']}"),
        ("events", f"{info['events']:,}"),
        ("skipped", _skipped_text(info["skipped"])),
    ]
    if info["events"]:
        lines += [
            ("time", f"{info['t_first_us']} .. {info['t_last_us']} µs"),
            ("duration", f"{info['duration_us'] / 1e6:.6f} s"),
            (
                "event rate",
                f"{info['event_rate_per_s']:,.0f} events/s"
                if info["event_rate_per_s"] is not None
                else "- (all events at one timestamp)",
            ),
            ("polarity", f"{info['polarity_on_fraction']:.3f} ON"),
        ]
    if "streams" in info:
        counts = info.get("stream_elements") or {}
        lines.append(("camera", info.get("camera_name", "")))
        lines.append(
            (
                "streams",
                ", ".join(
                    f"{name} ({kind}, {counts.get(name, '?'):,})"
                    if isinstance(counts.get(name), int)
                    else f"{name} ({kind})"
                    for name, kind in info["streams"].items()
                ),
            )
        )
    if "labels" in info:
        labels = info["labels"]
        if info["labels_source"] == "folder":
            lines.append(("label", f"class {labels[0]['class_id']} (from the folder name)"))
        else:
            lines.append(("labels", f"{len(labels)} segments from {info['labels_source']}"))
            for s in labels:
                lines.append(
                    ("", f"{s['class_id']:>2} {s['name']:<28} {s['start_us']} .. {s['end_us']} µs")
                )
    width = max(len(key) for key, _ in lines)
    return "\n".join(f"{key:<{width}}  {value}" for key, value in lines)


def _skipped_text(skipped: dict) -> str:
    """``"aps 6,920, imu 350"``: the kinds with a count, or what says none."""
    shown = [f"{kind} {count:,}" for kind, count in skipped.items() if count]
    if shown:
        return ", ".join(shown)
    return "nothing" if skipped else "nothing (this reader skips nothing: odd records are errors)"


def run(args: argparse.Namespace) -> int:
    from core.events import EventError

    try:
        info = describe(args.file)
    except (EventError, OSError) as error:
        print(f"stcsnn inspect: {_one_line(error)}", file=sys.stderr)
        return 1
    print(json.dumps(info) if args.json else format_text(info))
    return 0


def _one_line(error: Exception) -> str:
    text = (
        str(error)
        if not isinstance(error, OSError) or not error.filename
        else (f"{error.filename}: {error.strerror or error}")
    )
    return " ".join(text.split())
