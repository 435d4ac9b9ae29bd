"""Shared by the streaming tests: real producer/worker processes, a test subscriber,
a trained test checkpoint, N-MNIST playlists, process trees."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np

from models.checkpoint import load_checkpoint, save_checkpoint
from models.default_checkpoints import default_checkpoint
from streamer import pipeline, processes, wire
from streamer.processes import Child
from tests.conftest import shared_path

ROOT = Path(__file__).resolve().parent.parent


def save_test_checkpoint(path: Path) -> Path:
    """A copy of the committed N-MNIST checkpoint (trained by this project's code).

    Not an untrained network: one of those, even with perturbed BatchNorm
    statistics, never spikes on real N-MNIST input, so its readout is a constant
    and any comparison of predictions would pass."""
    model, config, extra = load_checkpoint(default_checkpoint("nmnist"))
    return save_checkpoint(path, model, config, extra={"note": "test copy of nmnist.pt"})


def nmnist_playlist(tmp_path: Path, digits=range(5), per_digit: int = 1) -> Path:
    """A playlist of real N-MNIST samples (labels come from their ``<digit>/`` folders)."""
    root = shared_path("nmnist/Train")
    lines = []
    for digit in digits:
        lines += [str(p) for p in sorted((root / str(digit)).glob("*.bin"))[:per_digit]]
    playlist = tmp_path / "samples.txt"
    playlist.write_text("\n".join(lines) + "\n")
    return playlist


def start_producer(*args: str, name: str = "producer") -> tuple[Child, str]:
    """``stcsnn produce`` in its own process on a free port (``--endpoint`` may override)."""
    child = processes.start_producer(
        ["--json", "--quiet", *args], name=name, cwd=ROOT, timeout_s=30
    )
    return child, child.endpoint


def start_worker(connect: str, *args: str, name: str = "worker") -> tuple[Child, str]:
    """``stcsnn worker`` in its own process, predictions on a free port."""
    child = processes.start_worker(
        connect, ["--json", "--quiet", *args], name=name, cwd=ROOT, timeout_s=60
    )
    return child, child.endpoint


class Subscriber(pipeline.Subscriber):
    """The test's SUB socket on a worker's output, keeping what it received."""

    def __init__(self, endpoint: str, topics=(b"",)):
        super().__init__(endpoint, topics)
        self.messages: list[wire.Message] = []

    def collect(self, until, timeout_s: float = 20.0, children=()) -> list[wire.Message]:
        """Receive until ``until(message)`` is true; fail on timeout or a dead child."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            received = self.receive(timeout_ms=100)
            if received is None:
                for child in children:
                    if child.returncode not in (None, 0):
                        raise AssertionError(child.failure(f"exited with {child.returncode}"))
                continue
            self.messages.append(received[0])
            if until(received[0]):
                return self.messages
        tails = "\n".join(child.failure("(still running)") for child in children)
        raise AssertionError(
            f"condition not met within {timeout_s} s ({len(self.messages)} messages)\n{tails}"
        )

    def of_type(self, message_type: str) -> list[wire.Message]:
        return [m for m in self.messages if m.type == message_type]


def predictions_logits(messages) -> np.ndarray:
    return np.array([m.logits for m in messages if isinstance(m, wire.Prediction)])


def _ppid_and_state(pid: int) -> tuple[int, str] | None:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        return int(fields[1]), fields[0]
    except (OSError, IndexError, ValueError):
        return None


def descendants(pid: int) -> set[int]:
    """Every live process below ``pid`` (Linux /proc)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            info = _ppid_and_state(int(entry))
            if info is not None:
                children.setdefault(info[0], []).append(int(entry))
    found: set[int] = set()
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def alive(pid: int) -> bool:
    """Running (a zombie waiting to be reaped does not count)."""
    info = _ppid_and_state(pid)
    return info is not None and info[1] != "Z"


def wait_gone(pids, timeout_s: float = 10.0) -> set[int]:
    """The pids still alive after waiting up to ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    left = {pid for pid in pids if alive(pid)}
    while left and time.monotonic() < deadline:
        time.sleep(0.05)
        left = {pid for pid in left if alive(pid)}
    return left
