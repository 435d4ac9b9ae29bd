"""The dashboard under load: its refresh rate and CPU, and the worker's latency with and
without it attached, in one run of producer -> worker at 1 M events/s.

    .venv/bin/python benchmarks/bench_dashboard.py [--phase-s 10] [--rate 1M]
    .venv/bin/python benchmarks/bench_dashboard.py --screenshot-only   # docs/dashboard.png

Writes benchmarks/results/dashboard.json (and docs/dashboard.png).

Load case: ``stcsnn produce --synthetic 1M --speed 1`` -> ``stcsnn worker`` (the
default checkpoint, CPU) as separate processes on loopback (streamer/processes.py,
which learns their endpoints from their status channel), and a subscriber in
this process that takes every prediction (and the worker's stats) and computes
the processing latency the way the streaming benchmark does: prediction
received minus ``sent_ns`` of the last events message in it. The run
alternates phases of ``--phase-s`` seconds: no dashboard, ``stcsnn dashboard`` attached
(its phase starts ``--warmup-s`` after its window is up, so that its start is not counted),
``--cycles`` times, and a last phase without it: alternating spreads the load
of other jobs on a shared machine over both cases. Latency is also pooled
over all phases of each case. Per phase: latency p50/p99, predictions/s, events/s and
drops from the worker's stats, CPU of each process from /proc; for the
dashboard also its own summary (frames drawn per second, frame intervals).

Screenshot: a real-time replay of shuffled real N-MNIST training samples
through producer -> worker -> ``stcsnn dashboard --screenshot``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import zmq

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from replay.paths import data_root  # noqa: E402
from streamer import wire  # noqa: E402
from streamer.processes import (  # noqa: E402
    Child,
    Supervisor,
    start_dashboard,
    start_producer,
    start_worker,
)

CLOCK_TICKS_PER_S = os.sysconf("SC_CLK_TCK")
CASES = ("without dashboard", "with dashboard", "cpu burner instead")
STOP_TIMEOUT_S = 15.0


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process so far (Linux /proc)."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS_PER_S


def dashboard_summary(dashboard: Child, timeout_s: float) -> dict:
    """The summary of a dashboard that exits by itself (``--exit-after``): its final
    stats from the status channel."""
    dashboard.process.wait(timeout=timeout_s)
    dashboard.stop(STOP_TIMEOUT_S)
    summary = dashboard.result()
    if summary is None:
        raise RuntimeError(dashboard.failure(f"exited with code {dashboard.returncode}"))
    return summary


class Burner:
    """The control case's CPU burner (this script with ``--burn``) as a plain process."""

    def __init__(self, duty: float):
        self.process = subprocess.Popen(
            [sys.executable, __file__, "--burn", str(duty)], cwd=ROOT, stdin=subprocess.DEVNULL
        )
        self.pid = self.process.pid

    def stop(self) -> None:
        self.process.kill()
        self.process.wait()


class PredictionLog(threading.Thread):
    """Every prediction and stats message of the worker, time-stamped on arrival."""

    def __init__(self, endpoint: str):
        super().__init__(daemon=True)
        self.socket = zmq.Context.instance().socket(zmq.SUB)
        self.socket.setsockopt(zmq.RCVHWM, 1_000_000)
        self.socket.setsockopt(zmq.LINGER, 0)
        for message_type in ("prediction", "stats"):
            self.socket.setsockopt(zmq.SUBSCRIBE, wire.topic(message_type))
        self.socket.connect(endpoint)
        self.predictions: list[tuple[float, float, float]] = []  # (mono s, latency ms, infer)
        self.stats: list[tuple[float, dict]] = []
        self.stop_event = threading.Event()

    def run(self) -> None:
        wire_stats = wire.WireStats()
        log = _QuietLog()
        while not self.stop_event.is_set():
            message = wire.receive(self.socket, wire_stats, log, timeout_ms=100)
            if message is None:
                continue
            now_ns = time.time_ns()
            if isinstance(message, wire.Prediction):
                latency_ms = (now_ns - message.sent_ns) / 1e6
                infer_ms = float(message.timings_ms.get("infer", np.nan))
                self.predictions.append((time.monotonic(), latency_ms, infer_ms))
            elif isinstance(message, wire.Stats):
                self.stats.append((time.monotonic(), dict(message.values)))
        self.socket.close(0)

    def pooled(self, windows: list[tuple[float, float]]) -> dict:
        """Latency over several phases together (more predictions, steadier p99)."""
        latency = np.asarray(
            [p[1] for p in self.predictions if any(a <= p[0] < b for a, b in windows)]
        )
        return {
            "predictions": len(latency),
            "latency_ms_p50": round(float(np.percentile(latency, 50)), 2),
            "latency_ms_p90": round(float(np.percentile(latency, 90)), 2),
            "latency_ms_p99": round(float(np.percentile(latency, 99)), 2),
        }

    def phase(self, start_s: float, end_s: float, stream: str) -> dict:
        rows = [p for p in self.predictions if start_s <= p[0] < end_s]
        latency = np.asarray([p[1] for p in rows])
        infer = np.asarray([p[2] for p in rows])
        stats = [s for t, s in self.stats if start_s <= t < end_s]
        result = {
            "predictions": len(rows),
            "predictions_per_s": round(len(rows) / (end_s - start_s), 2),
            "latency_ms_p50": round(float(np.percentile(latency, 50)), 2) if len(rows) else None,
            "latency_ms_p99": round(float(np.percentile(latency, 99)), 2) if len(rows) else None,
            "infer_ms_p50": round(float(np.nanpercentile(infer, 50)), 3) if len(rows) else None,
        }
        if len(stats) >= 2:
            first, last = stats[0], stats[-1]
            span_s = last["uptime_s"] - first["uptime_s"]
            received = [s.get("events_received", {}).get(stream, 0) for s in (first, last)]
            result["events_per_s"] = round((received[1] - received[0]) / span_s)
            for name in ("dropped_events", "steps_skipped", "predictions_dropped"):
                result[name] = last.get(name, 0) - first.get(name, 0)
        return result


class _QuietLog:
    def warning(self, *args) -> None:
        pass


def run_load(args: argparse.Namespace) -> dict:
    phase_s, warmup_s = args.phase_s, args.warmup_s
    supervisor = Supervisor()
    log = burner = None
    try:
        producer = supervisor.start(
            start_producer(
                ["--synthetic", args.rate, "--speed", "1"]
                + ["--stream-id", "synthetic", "--wait-subscribers", "1", "--quiet"],
                cwd=ROOT,
            )
        )
        worker = supervisor.start(
            start_worker(
                producer.endpoint,
                ["--model", args.model] if args.model else [],
                cwd=ROOT,
            )
        )
        model, device = worker.ready["model"], worker.ready["device"]
        log = PredictionLog(worker.endpoint)
        log.start()
        time.sleep(args.settle_s)  # torch warm-up, queues settled
        phases: list[dict] = []
        pids = {"producer": producer.pid, "worker": worker.pid}
        windows: dict[str, list[tuple[float, float]]] = {case: [] for case in CASES}

        def measure(attached: str, extra_pids: dict | None = None) -> None:
            watched = {**pids, **(extra_pids or {})}
            start_s, start_cpu = time.monotonic(), {k: cpu_s(p) for k, p in watched.items()}
            load_1min = os.getloadavg()[0]
            time.sleep(phase_s)
            end_s = time.monotonic()
            result = {"case": attached, **log.phase(start_s, end_s, "synthetic")}
            result["cpu_percent"] = {
                k: round(100 * (cpu_s(p) - start_cpu[k]) / (end_s - start_s), 1)
                for k, p in watched.items()
            }
            result["load_average_1min_at_start"] = round(load_1min, 2)
            windows[attached].append((start_s, end_s))
            phases.append(result)
            print(json.dumps(result), flush=True)

        dashboard_summaries = []
        for _ in range(args.cycles):
            measure("without dashboard")
            # Its --exit-after runs from when its window is up (the "ready" status).
            dashboard = supervisor.start(
                start_dashboard(
                    worker.endpoint,
                    ["--source", f"synthetic {args.rate} ev/s", "--quiet"]
                    + ["--exit-after", str(warmup_s + phase_s + 0.5)]
                    + ["--screenshot", str(args.load_screenshot)],
                    cwd=ROOT,
                )
            )
            time.sleep(warmup_s)  # first frames, queues settled: not measured
            measure("with dashboard", {"dashboard": dashboard.pid})
            dashboard_summaries.append(dashboard_summary(dashboard, timeout_s=30))
            if args.control:
                burner = Burner(0.15)
                time.sleep(1.0)
                measure("cpu burner instead", {"cpu burner": burner.pid})
                burner.stop()
                burner = None
        measure("without dashboard")
    finally:
        if log is not None:
            log.stop_event.set()
        if burner is not None:
            burner.stop()
        supervisor.stop_all(STOP_TIMEOUT_S)
    pooled = {}
    for name in CASES:
        if not windows[name]:
            continue
        pooled[name] = log.pooled(windows[name])
        rows = [p for p in phases if p["case"] == name]
        pooled[name]["worker_cpu_percent"] = round(
            float(np.mean([p["cpu_percent"]["worker"] for p in rows])), 1
        )
        if name == "cpu burner instead":
            pooled[name]["burner_cpu_percent"] = round(
                float(np.mean([p["cpu_percent"]["cpu burner"] for p in rows])), 1
            )
        if name == "with dashboard":
            pooled[name]["dashboard_cpu_percent"] = round(
                float(np.mean([p["cpu_percent"]["dashboard"] for p in rows])), 1
            )
            pooled[name]["dashboard_frames_per_s"] = [
                d["frames_per_s"] for d in dashboard_summaries
            ]
    return {
        "case": f"producer synthetic {args.rate} ev/s real time -> worker -> dashboard",
        "model": model,
        "device": device,
        "phase_s": phase_s,
        "cycles": args.cycles,
        "pooled": pooled,
        "phases": phases,
        "dashboard_summaries": dashboard_summaries,
        "worker_final_stats": worker.result(),
    }


def run_screenshot(args: argparse.Namespace) -> dict:
    """Real N-MNIST samples in real time through the pipeline; the dashboard's PNG.

    Start order makes the stream begin only once everyone listens: the producer
    waits for the worker, the worker connects to it only once the dashboard
    subscribed to its predictions."""
    samples = data_root() / "nmnist" / "Train"
    if not samples.is_dir():
        raise SystemExit(f"no N-MNIST data at {samples}")
    source = f"replay of shuffled N-MNIST training samples ({samples.name}/), real time"
    supervisor = Supervisor()
    try:
        producer = supervisor.start(
            start_producer(
                ["--replay", str(samples), "--shuffle", "--seed", str(args.seed)]
                + ["--limit", "100", "--speed", "1", "--wait-subscribers", "1"]
                + ["--stream-id", "nmnist", "--quiet"],
                cwd=ROOT,
            )
        )
        worker = supervisor.start(
            start_worker(producer.endpoint, ["--wait-subscribers", "1", "--quiet"], cwd=ROOT)
        )
        dashboard = supervisor.start(
            start_dashboard(
                worker.endpoint,
                ["--source", source, "--screenshot", str(args.png)]
                + ["--exit-after", str(args.screenshot_after_s)],
                cwd=ROOT,
            )
        )
        summary = dashboard_summary(dashboard, timeout_s=args.screenshot_after_s + 60)
    finally:
        supervisor.stop_all(STOP_TIMEOUT_S)
    png = Path(args.png).resolve()
    size = png.stat().st_size
    print(f"screenshot {args.png}: {size} bytes", flush=True)
    return {
        "png": str(png.relative_to(ROOT)) if png.is_relative_to(ROOT) else str(png),
        "bytes": size,
        "source": source,
        "dashboard_summary": summary,
    }


def burn(duty: float, period_s: float = 0.033) -> None:
    """Use ``duty`` of one core in short bursts (the control case: CPU, but no sockets)."""
    while True:
        started = time.perf_counter()
        while time.perf_counter() - started < duty * period_s:
            pass
        time.sleep((1 - duty) * period_s)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", default="1M", help="synthetic events/s (default 1M)")
    parser.add_argument("--phase-s", type=float, default=10.0)
    parser.add_argument(
        "--cycles", type=int, default=3, help="without/with dashboard pairs (default 3)"
    )
    parser.add_argument("--warmup-s", type=float, default=4.0)
    parser.add_argument("--settle-s", type=float, default=3.0)
    parser.add_argument("--model", help="worker checkpoint (default: the worker's default)")
    parser.add_argument("--screenshot-only", action="store_true")
    parser.add_argument("--screenshot-after-s", type=float, default=12.0)
    parser.add_argument("--seed", type=int, default=0, help="N-MNIST shuffle seed")
    parser.add_argument("--out", default=str(ROOT / "benchmarks/results/dashboard.json"))
    parser.add_argument("--png", default=str(ROOT / "docs/dashboard.png"))
    parser.add_argument(
        "--control",
        action="store_true",
        help="also a phase with a plain CPU burner (15%% of a core) in the dashboard's place",
    )
    parser.add_argument("--burn", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.burn:
        burn(args.burn)
    args.load_screenshot = Path(tempfile.gettempdir()) / "stcsnn_dashboard_load.png"
    report = {
        "benchmark": "dashboard",
        "command": "python benchmarks/bench_dashboard.py " + " ".join(sys.argv[1:]),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU(s), shared",
        "python": platform.python_version(),
    }
    if not args.screenshot_only:
        report["load"] = run_load(args)
    report["screenshot"] = run_screenshot(args)
    if not args.screenshot_only:
        Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
