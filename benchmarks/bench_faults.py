"""Fault injection on the real processes: how long the pipeline takes to recover and
what it counts as lost.

    .venv/bin/python benchmarks/bench_faults.py [--rate 1M]

Producer: synthetic events in real time (34x34, live policy), on a fixed loopback
port; worker: the N-MNIST checkpoint, 10 ms hops, on a fixed port; the benchmark
subscribes to the predictions. Scenarios, one after the other on fresh processes:

* ``kill_producer``: kill -9 the producer, start a new one on the same port:
  seconds from the new one's start to the first prediction of its session;
* ``kill_worker``: kill -9 the worker, start a new one on the same port: seconds
  from the kill, and from the new worker's start, to the next prediction;
* ``stop_worker``: SIGSTOP the worker for 3 s, then SIGCONT: seconds from SIGCONT
  until predictions are again within 2x the median latency before; events the
  producer dropped (its queue to the worker filled) and steps the worker skipped;
* ``slow_subscriber``: a second subscriber of the worker that never reads: the
  median and p99 latency of ours before and while it is connected;
* ``stream_flood``: a foreign publisher the worker also listens to sends 5,000
  one-message stream ids: our stream's predictions per second and latency before
  and during, the worker's refused streams and memory after.

Writes benchmarks/results/faults.json; the figures are in docs/reliability.md.
"""

from __future__ import annotations

import argparse
import json
import signal
import socket
import time
from pathlib import Path

import numpy as np
import zmq

from core.events import SensorSize, make_events
from stcsnn.commands.produce import parse_rate
from streamer import processes, wire
from streamer.pipeline import Subscriber
from streamer.prediction_log import percentile
from streamer.transport import bind_xpub

ROOT = Path(__file__).resolve().parent.parent


def free_endpoint() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"tcp://127.0.0.1:{s.getsockname()[1]}"


class Rig:
    """Producer, worker and our subscriber on fixed endpoints, restartable."""

    def __init__(self, rate: float, extra_connect: str | None = None):
        self.rate = rate
        self.producer_endpoint = free_endpoint()
        self.worker_endpoint = free_endpoint()
        self.extra_connect = extra_connect
        self.producer = self.start_producer()
        self.worker = self.start_worker()
        self.subscriber = Subscriber(self.worker_endpoint, [wire.topic("prediction")])

    def start_producer(self) -> processes.Child:
        args = ["--synthetic", str(self.rate), "--sensor", "34x34", "--quiet"]
        return processes.start_producer(
            [*args, "--endpoint", self.producer_endpoint], cwd=ROOT, timeout_s=60
        )

    def start_worker(self) -> processes.Child:
        connect = self.producer_endpoint + (f",{self.extra_connect}" if self.extra_connect else "")
        args = ["--quiet", "--threads", "1", "--hop-us", "10000", "--bind", self.worker_endpoint]
        return processes.start_worker(connect, args, cwd=ROOT, timeout_s=120)

    def predictions(self, seconds: float) -> list[tuple[wire.Prediction, int]]:
        """Everything predicted for ``seconds``, with arrival times (ns)."""
        got, deadline = [], time.monotonic() + seconds
        while time.monotonic() < deadline:
            received = self.subscriber.receive(timeout_ms=20)
            if received is not None and isinstance(received[0], wire.Prediction):
                got.append(received)
        return got

    def first_prediction(self, timeout_s: float, session: str | None = None) -> float | None:
        """Seconds until the next prediction (of the producer ``session``, if given)."""
        started = time.monotonic()
        while time.monotonic() - started < timeout_s:
            received = self.subscriber.receive(timeout_ms=10)
            if received is None or not isinstance(received[0], wire.Prediction):
                continue
            if session is None or received[0].source_session == session:
                return round(time.monotonic() - started, 3)
        return None

    def close(self) -> None:
        self.subscriber.close()
        for child in (self.worker, self.producer):
            child.stop()


def latency_ms(predictions) -> dict:
    values = [(arrived - p.sent_ns) / 1e6 for p, arrived in predictions]
    return {
        "predictions": len(values),
        "p50": round(percentile(values, 50) or 0, 3),
        "p99": round(percentile(values, 99) or 0, 3),
    }


def kill_producer(rate: float) -> dict:
    rig = Rig(rate)
    try:
        rig.predictions(2.0)
        rig.producer.process.kill()
        rig.producer.process.wait()
        started = time.monotonic()
        rig.producer = rig.start_producer()
        session = rig.producer.ready["session"]
        first = rig.first_prediction(30, session)
        return {
            "producer_start_s": round(time.monotonic() - started - (first or 0), 3),
            "first_prediction_after_start_s": first,
        }
    finally:
        rig.close()


def kill_worker(rate: float) -> dict:
    rig = Rig(rate)
    try:
        rig.predictions(2.0)
        killed = time.monotonic()
        rig.worker.process.kill()
        rig.worker.process.wait()
        rig.worker = rig.start_worker()
        started = time.monotonic()
        first = rig.first_prediction(30)
        return {
            "worker_start_s": round(started - killed, 3),
            "first_prediction_after_start_s": first,
            "first_prediction_after_kill_s": round(started - killed + (first or 0), 3),
        }
    finally:
        rig.close()


def stop_worker(rate: float, stopped_s: float = 3.0) -> dict:
    rig = Rig(rate)
    try:
        before = latency_ms(rig.predictions(3.0))
        rig.worker.signal(signal.SIGSTOP)
        time.sleep(stopped_s)
        rig.worker.signal(signal.SIGCONT)
        resumed = time.monotonic()
        recovered = None
        while recovered is None and time.monotonic() - resumed < 30:
            window = latency_ms(rig.predictions(0.25))
            if window["predictions"] and window["p50"] <= 2 * before["p50"]:
                recovered = round(time.monotonic() - resumed, 3)
        after = latency_ms(rig.predictions(2.0))
        rig.producer.signal(signal.SIGINT)
        rig.producer.process.wait(10)
        producer = rig.producer.result() or {}
        rig.worker.signal(signal.SIGINT)
        rig.worker.process.wait(10)
        worker = rig.worker.result() or {}
        return {
            "stopped_s": stopped_s,
            "latency_before_ms": before,
            "recovered_after_cont_s": recovered,
            "latency_after_ms": after,
            "producer_dropped_events": producer.get("dropped_events"),
            "producer_events": producer.get("events"),
            "worker_dropped_events": worker.get("dropped_events"),
            "worker_steps_skipped": worker.get("steps_skipped"),
        }
    finally:
        rig.close()


def slow_subscriber(rate: float) -> dict:
    rig = Rig(rate)
    idle = zmq.Context.instance().socket(zmq.SUB)
    try:
        before = latency_ms(rig.predictions(5.0))
        idle.setsockopt(zmq.RCVHWM, 1)
        idle.setsockopt(zmq.LINGER, 0)
        idle.setsockopt(zmq.SUBSCRIBE, b"")
        idle.connect(rig.worker_endpoint)
        during = latency_ms(rig.predictions(5.0))
        return {"latency_before_ms": before, "latency_with_a_stuck_subscriber_ms": during}
    finally:
        idle.close(0)
        rig.close()


def stream_flood(rate: float, streams: int = 5000) -> dict:
    context = zmq.Context.instance()
    flood_endpoint = free_endpoint()
    flood = bind_xpub(context, flood_endpoint, 100_000, 0)
    rig = Rig(rate, extra_connect=flood_endpoint)
    try:
        before = latency_ms(rig.predictions(3.0))
        n = np.arange(100)
        events = make_events(n, n % 34, n % 34, n % 2)
        started = time.monotonic()
        for k in range(streams):
            message = wire.Events(
                stream=f"flood{k}", session="x", seq=0, events=events, sensor=SensorSize(34, 34)
            )
            flood.send_multipart(wire.encode(message))
        sent_s = time.monotonic() - started
        during = latency_ms(rig.predictions(3.0))
        rig.worker.signal(signal.SIGINT)
        rig.worker.process.wait(10)
        worker = rig.worker.result() or {}
        return {
            "flood_streams": streams,
            "flood_sent_in_s": round(sent_s, 3),
            "latency_before_ms": before,
            "latency_during_and_after_ms": during,
            "streams_refused": worker.get("streams_refused"),
            "open_streams": worker.get("open_streams"),
            "worker_rss_mb": worker.get("rss_mb"),
            "stats_message_bytes": len(json.dumps(worker)),
        }
    finally:
        rig.close()
        flood.close(0)


SCENARIOS = {
    "kill_producer": kill_producer,
    "kill_worker": kill_worker,
    "stop_worker": stop_worker,
    "slow_subscriber": slow_subscriber,
    "stream_flood": stream_flood,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=parse_rate, default=1e6)
    parser.add_argument("--only", choices=sorted(SCENARIOS), action="append")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/faults.json")
    args = parser.parse_args()
    result = {"rate": args.rate}
    for name in args.only or SCENARIOS:
        result[name] = SCENARIOS[name](args.rate)
        print(json.dumps({name: result[name]}), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
