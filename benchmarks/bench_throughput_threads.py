"""Where the cores go during the lossless throughput run: the CPU share of every thread
of the producer and the worker while the events stream, read from /proc (Linux).

    .venv/bin/python benchmarks/bench_throughput_threads.py [--runs 3] [--seconds 15]

Each run is ``stcsnn bench throughput --synthetic 10M --seconds S --json`` (what
bench_throughput_rounds.py runs). Every 0.1 s this script reads the CPU time of each
thread of the two processes (``/proc/PID/task/TID/stat``) and the machine's idle time
(``/proc/stat``). The streaming window runs from the first sample at which the
worker's ZeroMQ I/O thread has started receiving to the last at which it still
received; shares are CPU seconds in that window per second of it (1.0 = one whole
core), medians over the runs. Threads: ``main`` is the worker's processing thread and
the producer's publishing loop; the worker's busiest other thread is its receiving
thread. Also how often the worker's processing thread blocked (voluntary context
switches per second in the window). ``--max-chunk-events`` is passed on (the old
65,536-event messages for comparison). Writes
benchmarks/results/throughput_threads.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run as a script: the sibling below is found from the root

from benchmarks.bench_throughput_rounds import throughput_command, write_report  # noqa: E402

SAMPLE_S = 0.1
TICKS_PER_S = os.sysconf("SC_CLK_TCK")


def _process_role(pid: int) -> str | None:
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return None
    words = [w.decode(errors="replace") for w in command]
    if "stcsnn" not in words:
        return None
    after = words[words.index("stcsnn") + 1 :]
    return after[0] if after and after[0] in ("produce", "worker") else None


def _threads(pid: int) -> dict[str, float]:
    """Thread name -> CPU seconds so far (``main``, ``zmq io <tid>``, ``thread <tid>``)."""
    times: dict[str, float] = {}
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return times
    for tid in tids:
        try:
            stat = Path(f"/proc/{pid}/task/{tid}/stat").read_text()
        except OSError:
            continue
        comm = stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2 :].split()
        seconds = (int(fields[11]) + int(fields[12])) / TICKS_PER_S
        if int(tid) == pid:
            name = "main"
        elif comm.startswith("ZMQbg/IO"):
            name = f"zmq io {tid}"
        elif comm.startswith("ZMQbg"):
            continue
        else:
            name = f"thread {tid}"
        times[name] = times.get(name, 0.0) + seconds
    return times


def _main_blocks(pid: int) -> int:
    """How often the process's main thread has blocked so far (voluntary switches)."""
    try:
        status = Path(f"/proc/{pid}/task/{pid}/status").read_text()
    except OSError:
        return 0
    line = next(x for x in status.splitlines() if x.startswith("voluntary_ctxt_switches"))
    return int(line.split()[1])


def _idle_s() -> float:
    """Idle CPU seconds of the whole machine so far (all cores)."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    return (int(fields[3]) + int(fields[4])) / TICKS_PER_S


def one_run(seconds: float, options: list[str]) -> dict:
    command = [sys.executable, "-m", *throughput_command(seconds, options)]
    bench = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, text=True)
    samples = []  # (time, idle seconds, {(role, thread): cpu seconds}, worker main blocks)
    while bench.poll() is None:
        roles = {
            pid: _process_role(pid) for pid in map(int, filter(str.isdigit, os.listdir("/proc")))
        }
        threads, blocks = {}, 0
        for pid, role in roles.items():
            if role:
                threads.update({(role, name): s for name, s in _threads(pid).items()})
            if role == "worker":
                blocks = _main_blocks(pid)
        samples.append((time.monotonic(), _idle_s(), threads, blocks))
        time.sleep(SAMPLE_S)
    report = json.loads(bench.communicate()[0])
    io = [sum(s for (role, name), s in t.items() if name.startswith("zmq io") and role == "worker")
          for _, _, t, _ in samples]  # fmt: skip
    rising = [i for i in range(1, len(io)) if io[i] > io[i - 1]]
    first, last = rising[0] - 1, rising[-1]
    window = samples[first : last + 1]
    window_s = window[-1][0] - window[0][0]
    shares: dict[str, float] = {}
    for role, name in {key for _, _, t, _ in window for key in t}:
        seen = [t[(role, name)] for _, _, t, _ in window if (role, name) in t]  # one may exit
        label = f"{'producer' if role == 'produce' else role} {name}"
        label = "".join(label.rpartition(" zmq io")[:2]) if " zmq io " in label else label
        shares[label] = round(shares.get(label, 0.0) + (seen[-1] - seen[0]) / window_s, 3)
    idle0, idle1 = window[0][1], window[-1][1]
    return {
        "events_per_s": report["events_per_s"],
        "ratio": report["ratio"],
        "window_s": round(window_s, 2),
        "idle_cores": round((idle1 - idle0) / window_s, 3),
        "worker_main_blocks_per_s": round((window[-1][3] - window[0][3]) / window_s),
        "cores": shares,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument(
        "--max-chunk-events", type=int, help="passed on (default: the producer's own)"
    )
    parser.add_argument(
        "--out", type=Path, default=ROOT / "benchmarks/results/throughput_threads.json"
    )
    args = parser.parse_args()
    cap = args.max_chunk_events
    options = [] if cap is None else ["--max-chunk-events", str(cap)]
    runs = []
    for _ in range(args.runs):
        runs.append(one_run(args.seconds, options))
        print(json.dumps(runs[-1]), flush=True)
    # The worker's receiving thread: its busiest thread besides main and zmq io.
    for run in runs:
        others = {k: v for k, v in run["cores"].items() if k.startswith("worker thread")}
        if others:
            busiest = max(others, key=others.get)
            run["cores"]["worker receiving thread"] = run["cores"].pop(busiest)
    keys = ["worker main", "worker receiving thread", "worker zmq io", "producer main",
            "producer zmq io"]  # fmt: skip
    medians = {key: statistics.median(run["cores"].get(key, 0.0) for run in runs) for key in keys}
    medians["idle"] = statistics.median(run["idle_cores"] for run in runs)
    medians["worker main blocks per s"] = statistics.median(
        run["worker_main_blocks_per_s"] for run in runs
    )
    result = {
        "command": " ".join(throughput_command(args.seconds, options)),
        "cores_in_streaming_window_median": medians,
        "events_per_s_median": statistics.median(run["events_per_s"] for run in runs),
        "runs": runs,
    }
    write_report(args.out, result, medians)


if __name__ == "__main__":
    main()
