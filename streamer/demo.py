"""The one-command demo's machinery: child processes, the prediction log and its summary.

``stcsnn demo`` (stcsnn/commands/demo.py) runs producer, worker and (once it
exists) dashboard as separate processes, as they would run on separate
machines, and watches the predictions itself. This module holds the parts
that do not depend on the command line:

* ``Child``: one process started in its own process group (so a terminal's
  Ctrl-C reaches only the demo, which then stops the children in order) and
  through ``python -m streamer.demo --child-of PID MODULE ...``, which asks
  Linux to kill it if the demo dies (``PR_SET_PDEATHSIG``), so not even a
  killed demo leaves processes behind. ``stop()`` sends SIGINT to the
  group (the commands' clean stop), then SIGTERM, then SIGKILL after timeouts.
  Its stderr is forwarded line by line (prefixed) and watched for the lines
  that announce bound endpoints.
* ``PredictionLog``: what the demo's subscriber saw (predictions, forwarded
  labels), and ``summary()``: counts, latency percentiles, streaming accuracy.

Streaming accuracy (docs/streaming.md): for each labelled segment ``[start,
end)`` of a replay (one N-MNIST sample, one gesture), the smoothed top-1 of
the *last* prediction whose hop ends within the segment (``start < t_end <=
end``) is the stream's answer for that sample; ``streaming_accuracy`` is the
fraction of segments answered correctly (a segment without any prediction
counts as wrong, and is counted in ``segments_without_prediction``).
``hop_accuracy`` scores every prediction against the label at the hop's last
microsecond (hops outside every segment are not scored);
``hop_accuracy_unsmoothed`` does the same with the raw per-step readout.
"""

from __future__ import annotations

import bisect
import collections
import contextlib
import os
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

CHILD_LAUNCHER = "streamer.demo"
TAIL_LINES = 30


class ChildFailed(RuntimeError):
    """A child process exited (or never announced itself); the message says which and why."""


class Child:
    """One supervised process (see the module docstring)."""

    def __init__(
        self,
        name: str,
        module: str,
        args: list[str],
        *,
        echo=None,
        cwd: str | None = None,
    ):
        self.name = name
        self.echo = echo  # callable(line) for forwarded stderr lines, or None
        argv = [sys.executable, "-m", CHILD_LAUNCHER, "--child-of", str(os.getpid()), module]
        self.argv = argv + list(args)
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.process = subprocess.Popen(
            self.argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            bufsize=1,
            start_new_session=True,  # its own process group: a terminal's Ctrl-C skips it
            cwd=cwd,
            env=env,
        )
        self.pid = self.process.pid
        self.interrupted = False  # SIGINT sent: a second one would abort its clean stop
        self.stdout_lines: list[str] = []
        self.stderr_tail: collections.deque[str] = collections.deque(maxlen=TAIL_LINES)
        self._stderr_lines: list[str] = []
        self._new_line = threading.Condition()
        self._readers = [
            threading.Thread(target=self._read_stdout, daemon=True),
            threading.Thread(target=self._read_stderr, daemon=True),
        ]
        for reader in self._readers:
            reader.start()

    def _read_stdout(self) -> None:
        for line in self.process.stdout:
            self.stdout_lines.append(line.rstrip("\n"))

    def _read_stderr(self) -> None:
        for line in self.process.stderr:
            line = line.rstrip("\n")
            self.stderr_tail.append(line)
            if self.echo is not None:
                self.echo(f"[{self.name}] {line}")
            with self._new_line:
                self._stderr_lines.append(line)
                self._new_line.notify_all()
        with self._new_line:
            self._new_line.notify_all()

    def wait_for(self, pattern: str, timeout_s: float) -> re.Match:
        """The first stderr line matching ``pattern``; ChildFailed if the process
        exits first or nothing matches within ``timeout_s``."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout_s
        seen = 0
        with self._new_line:
            while True:
                for line in self._stderr_lines[seen:]:
                    found = regex.search(line)
                    if found:
                        return found
                seen = len(self._stderr_lines)
                if self.process.poll() is not None and not self._readers[1].is_alive():
                    raise ChildFailed(self.failure(f"exited with code {self.process.returncode}"))
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise ChildFailed(self.failure(f"did not start within {timeout_s:g} s"))
                self._new_line.wait(min(remaining, 0.2))

    def failure(self, what: str) -> str:
        tail = "\n".join(f"  {line}" for line in list(self.stderr_tail)[-8:])
        return f"{self.name} {what}" + (f"; its last words:\n{tail}" if tail else "")

    @property
    def returncode(self) -> int | None:
        return self.process.poll()

    def signal(self, signum: int) -> None:
        self.interrupted |= signum == signal.SIGINT
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signum)

    def stop(self, timeout_s: float = 5.0) -> int:
        """SIGINT (clean stop), then SIGTERM, then SIGKILL, to the whole process group.

        SIGINT is sent once: the commands take a second one as "abort now"
        (``stop_on_signals``), which would cut their clean stop and its
        ``--json`` summary short."""
        for signum, wait_s in (
            (signal.SIGINT, timeout_s),
            (signal.SIGTERM, 2.0),
            (signal.SIGKILL, 5.0),
        ):
            if self.process.poll() is None:
                if not (signum == signal.SIGINT and self.interrupted):
                    self.signal(signum)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.process.wait(wait_s)
        # The group may hold grandchildren (a reader's helper process) that outlive it.
        self.signal(signal.SIGKILL)
        for reader in self._readers:
            reader.join(2)
        return self.process.returncode

    def json_output(self) -> dict | None:
        """The last stdout line that parses as a JSON object (the commands' ``--json``)."""
        import json

        for line in reversed(self.stdout_lines):
            with contextlib.suppress(ValueError):
                value = json.loads(line)
                if isinstance(value, dict):
                    return value
        return None


class Supervisor:
    """Children started in order and stopped together, whatever happens."""

    def __init__(self):
        self.children: list[Child] = []

    def start(self, child: Child) -> Child:
        self.children.append(child)
        return child

    def failed(self, expected_to_finish: tuple[Child, ...] = ()) -> Child | None:
        """A child that exited although it should not have (any exit of a child not in
        ``expected_to_finish``, or a non-zero exit of one that is)."""
        for child in self.children:
            code = child.returncode
            if code is None:
                continue
            if child not in expected_to_finish or code != 0:
                return child
        return None

    def stop_all(self, timeout_s: float = 5.0) -> None:
        for child in self.children:  # ask all at once, then wait for each
            if child.returncode is None:
                child.signal(signal.SIGINT)
        for child in reversed(self.children):
            child.stop(timeout_s)

    def __enter__(self) -> Supervisor:
        return self

    def __exit__(self, *exc) -> None:
        self.stop_all()


# --- what the demo's subscriber saw ------------------------------------------------------


def percentile(values: list[float], q: float) -> float | None:
    return float(np.percentile(values, q)) if values else None


@dataclass
class StreamLog:
    t_end_us: list[int] = field(default_factory=list)
    top1: list[int] = field(default_factory=list)
    top1_raw: list[int] = field(default_factory=list)
    segments: list[tuple[int, int, int]] = field(default_factory=list)  # (start, end, label)
    ended: bool = False


class PredictionLog:
    """Predictions and labels per stream, with latencies (same clock: one machine)."""

    def __init__(self):
        self.streams: dict[str, StreamLog] = {}
        self.latency_ms: list[float] = []  # last event of the hop published -> received here
        self.closing_latency_ms: list[float] = []  # the message that closed the hop -> here
        self.worker_ms: list[float] = []  # inside the worker: closing message received -> sent
        self.predictions = 0
        self.hop_us: int | None = None
        self.last_stats: dict | None = None

    def stream(self, name: str) -> StreamLog:
        return self.streams.setdefault(name, StreamLog())

    def add(self, message, received_ns: int) -> None:
        """Record one decoded message from the worker's socket."""
        log = self.stream(message.stream) if message.type != "stats" else None
        header = message.header
        if message.type == "prediction":
            try:
                log.t_end_us.append(int(header["t_end_us"]))
                log.top1.append(int(header["top1"]))
                logits = header.get("logits") or []
                log.top1_raw.append(int(np.argmax(logits)) if logits else -1)
                self.hop_us = int(header.get("hop_us") or 0) or self.hop_us
                self.latency_ms.append((received_ns - int(header["sent_ns"])) / 1e6)
                closed = int(header.get("closed_by_sent_ns") or header["sent_ns"])
                self.closing_latency_ms.append((received_ns - closed) / 1e6)
                self.worker_ms.append(float(header.get("timings_ms", {}).get("worker", 0.0)))
            except (KeyError, TypeError, ValueError):
                return
            self.predictions += 1
        elif message.type == "labels":
            for segment in header.get("segments") or []:
                with contextlib.suppress(KeyError, TypeError, ValueError):
                    log.segments.append(
                        (int(segment["start_us"]), int(segment["end_us"]), int(segment["label"]))
                    )
        elif message.type == "end":
            log.ended = True
        elif message.type == "stats":
            self.last_stats = header

    def accuracy(self) -> dict[str, Any]:
        """Streaming and per-hop accuracy over every labelled stream (module docstring)."""
        segments = correct = without = 0
        hops = hops_correct = hops_correct_raw = 0
        for log in self.streams.values():
            if not log.segments:
                continue
            order = np.argsort(log.t_end_us, kind="stable")
            t_end = np.asarray(log.t_end_us, dtype=np.int64)[order]
            top1 = np.asarray(log.top1, dtype=np.int64)[order]
            top1_raw = np.asarray(log.top1_raw, dtype=np.int64)[order]
            spans = sorted(log.segments)
            for start_us, end_us, label in spans:
                segments += 1
                last = int(np.searchsorted(t_end, end_us, side="right")) - 1
                if last < 0 or t_end[last] <= start_us:
                    without += 1
                    continue
                correct += int(top1[last] == label)
            starts = [s[0] for s in spans]
            for i, t in enumerate(t_end.tolist()):
                k = bisect.bisect_right(starts, t - 1) - 1
                if k < 0 or not spans[k][0] <= t - 1 < spans[k][1]:
                    continue
                hops += 1
                hops_correct += int(top1[i] == spans[k][2])
                hops_correct_raw += int(top1_raw[i] == spans[k][2])
        if not segments:
            return {}
        return {
            "segments": segments,
            "streaming_accuracy": correct / segments,
            "segments_without_prediction": without,
            "labelled_hops": hops,
            "hop_accuracy": hops_correct / hops if hops else None,
            "hop_accuracy_unsmoothed": hops_correct_raw / hops if hops else None,
        }

    def latency(self) -> dict[str, Any]:
        return {
            "latency_ms_p50": percentile(self.latency_ms, 50),
            "latency_ms_p99": percentile(self.latency_ms, 99),
            "closing_latency_ms_p50": percentile(self.closing_latency_ms, 50),
            "closing_latency_ms_p99": percentile(self.closing_latency_ms, 99),
            "worker_ms_p50": percentile(self.worker_ms, 50),
            "worker_ms_p99": percentile(self.worker_ms, 99),
        }


def summarise(
    log: PredictionLog,
    worker_stats: dict | None,
    producer_stats: dict | None,
    **extra: Any,
) -> dict[str, Any]:
    """The demo's one JSON object (docs/streaming.md lists the fields)."""
    worker_stats = worker_stats or log.last_stats or {}
    producer_stats = producer_stats or {}
    streams = worker_stats.get("streams") or {}
    producer_dropped = int(producer_stats.get("dropped_events") or 0)
    worker_dropped = int(worker_stats.get("dropped_events") or 0)
    steps_skipped = int(worker_stats.get("steps_skipped") or 0)
    summary: dict[str, Any] = {
        **extra,
        "streams": sorted(log.streams),
        "predictions": log.predictions,
        "hops": sum(int(s.get("steps", 0)) for s in streams.values()),
        "hop_us": log.hop_us or worker_stats.get("hop_us"),
        "dropped": producer_dropped + worker_dropped,
        "steps_skipped": steps_skipped,
        "drops": {
            "producer_events": producer_dropped,
            "producer_messages": int(producer_stats.get("dropped_messages") or 0),
            "worker_events": worker_dropped,
            "worker_messages": int(worker_stats.get("dropped_messages") or 0),
            "worker_steps_skipped": steps_skipped,
            "missing_messages": sum((worker_stats.get("missing_messages") or {}).values()),
            "malformed": worker_stats.get("malformed") or {},
            "predictions_dropped": int(worker_stats.get("predictions_dropped") or 0),
        },
        "events": producer_stats.get("events"),
        **log.latency(),
        **log.accuracy(),
    }
    if "streaming_accuracy" not in summary:
        summary["streaming_accuracy"] = None
    summary["worker"] = {
        key: worker_stats.get(key)
        for key in ("model", "device", "hop_us", "ema_tau_us", "overload", "peak_rss_mb")
    }
    return summary


# --- the child launcher ---------------------------------------------------------------


def _die_with_parent(parent_pid: int) -> None:
    """Ask Linux to kill this process when the demo dies; exit now if it already has.

    SIGKILL, not SIGTERM: a demo that is itself killed cannot stop its children
    in order anyway, and a child may not act on SIGTERM (a dashboard interrupted
    during its start-up was seen to hang and survive it); nothing may be left behind."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, int(signal.SIGKILL), 0, 0, 0)
    except (OSError, AttributeError):  # not Linux: the process group still gets stopped
        return
    if os.getppid() != parent_pid:
        sys.exit(f"{CHILD_LAUNCHER}: the demo (pid {parent_pid}) is gone; not starting")


def _child_main(argv: list[str]) -> None:
    """``python -m streamer.demo --child-of PID MODULE ARGS...``: run MODULE as __main__."""
    import runpy

    if len(argv) < 3 or argv[0] != "--child-of" or not argv[1].isdigit():
        sys.exit(f"usage: python -m {CHILD_LAUNCHER} --child-of PID MODULE [ARGS...]")
    _die_with_parent(int(argv[1]))
    module = argv[2]
    sys.argv = [module, *argv[3:]]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    _child_main(sys.argv[1:])
