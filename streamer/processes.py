"""stcsnn's commands as supervised child processes, and how a child tells its parent
that it is ready and how it ended.

* ``Child``: one ``stcsnn COMMAND ...`` process, started in its own process
  group (so a terminal's Ctrl-C reaches only the parent, which then stops the
  children in order) through ``python -m streamer.processes --child-of PID``,
  which asks Linux to kill it if the parent dies (``PR_SET_PDEATHSIG``), so
  not even a killed parent leaves processes behind. ``stop()`` sends SIGINT
  to the group (the commands' clean stop), then SIGTERM, then SIGKILL after
  timeouts. Its stderr is forwarded line by line (prefixed) if asked.
* The **status channel**: the child inherits the write end of a pipe and gets
  ``--status-fd N``; the command writes one JSON object per line there:
  ``{"status": "ready", "endpoint": ..., ...}`` once its socket is bound and
  ``{"status": "done", "stats": {...}}`` when it ends (the object ``--json``
  prints). The parent reads endpoints and results from it, never from the
  human-readable log.
* ``start_producer`` / ``start_worker`` / ``start_dashboard``: a child of each
  kind, returned once ready; ``streamer/pipeline.py`` composes them.
* ``Supervisor``: children started in order and stopped together, whatever happens.
"""

from __future__ import annotations

import collections
import contextlib
import gc
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

LAUNCHER = "streamer.processes"
COMMAND_MODULE = "stcsnn"  # run as `python -m stcsnn COMMAND ...` (a process boundary, no import)
TAIL_LINES = 30
DEFAULT_START_TIMEOUT_S = 120.0  # torch import, torch.compile, a camera's start


class ChildFailed(RuntimeError):
    """A child process exited (or never became ready); the message says which and why."""


class StatusChannel:
    """The writing side of the status channel (a command's ``--status-fd``); a no-op
    without one. A parent that went away is not an error."""

    def __init__(self, fd: int | None):
        self._file = os.fdopen(fd, "w", buffering=1) if fd is not None else None

    def send(self, status: str, **fields: Any) -> None:
        if self._file is None:
            return
        with contextlib.suppress(OSError, ValueError):
            self._file.write(json.dumps({"status": status, **fields}) + "\n")
            self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            with contextlib.suppress(OSError):
                self._file.close()
            self._file = None


def freeze_startup_objects() -> None:
    """Put everything allocated so far (modules, torch, the model) out of the cyclic
    garbage collector's reach, once a process has started. A full collection walks
    the ~170,000 objects of a worker and pauses it for tens of milliseconds
    (benchmarks/bench_gc_pause.py); Python runs one rarely, but then in the middle
    of a hop. Later objects are collected as usual."""
    gc.collect()
    gc.freeze()


def add_status_option(parser) -> None:
    """``--status-fd N`` on the commands that run as children (produce, worker, dashboard)."""
    parser.add_argument(
        "--status-fd",
        type=int,
        metavar="FD",
        help="write JSON status lines (ready with the endpoint, done with the final stats) "
        "to this inherited file descriptor; for supervising processes",
    )


class Child:
    """One supervised ``stcsnn ARGS...`` process (see the module docstring)."""

    def __init__(
        self,
        name: str,
        args: Sequence[str],
        *,
        echo: Callable[[str], None] | None = None,
        cwd: str | os.PathLike | None = None,
    ):
        self.name = name
        self.echo = echo  # callable(line) for forwarded stderr lines, or None
        status_read, status_write = os.pipe()
        self.argv = [
            sys.executable,
            "-m",
            LAUNCHER,
            "--child-of",
            str(os.getpid()),
            COMMAND_MODULE,
            *args,
            "--status-fd",
            str(status_write),
        ]
        try:
            self.process = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                bufsize=1,
                start_new_session=True,  # its own process group: a terminal's Ctrl-C skips it
                cwd=cwd,
                env=dict(os.environ, PYTHONUNBUFFERED="1"),
                pass_fds=(status_write,),
            )
        finally:
            os.close(status_write)
        self.pid = self.process.pid
        self.interrupted = False  # SIGINT sent: a second one would abort its clean stop
        self.stdout_lines: list[str] = []
        self.stderr_tail: collections.deque[str] = collections.deque(maxlen=TAIL_LINES)
        self.statuses: list[dict[str, Any]] = []
        self._status_changed = threading.Condition()
        self._readers = [
            threading.Thread(target=self._read_stdout, daemon=True),
            threading.Thread(target=self._read_stderr, daemon=True),
            threading.Thread(target=self._read_status, args=(status_read,), daemon=True),
        ]
        for reader in self._readers:
            reader.start()

    # -- output -------------------------------------------------------------------------

    def _read_stdout(self) -> None:
        for line in self.process.stdout:
            self.stdout_lines.append(line.rstrip("\n"))

    def _read_stderr(self) -> None:
        for line in self.process.stderr:
            line = line.rstrip("\n")
            self.stderr_tail.append(line)
            if self.echo is not None:
                self.echo(f"[{self.name}] {line}")

    def _read_status(self, fd: int) -> None:
        with os.fdopen(fd) as channel:
            for line in channel:
                with contextlib.suppress(ValueError):
                    status = json.loads(line)
                    if isinstance(status, dict):
                        with self._status_changed:
                            self.statuses.append(status)
                            self._status_changed.notify_all()
        with self._status_changed:
            self._status_changed.notify_all()

    def _first(self, name: str, *, last: bool = False) -> dict[str, Any] | None:
        ordered = reversed(self.statuses) if last else iter(self.statuses)
        return next((s for s in ordered if s.get("status") == name), None)

    def status(self, name: str) -> dict[str, Any] | None:
        """The last status line called ``name`` so far, or None."""
        with self._status_changed:
            return self._first(name, last=True)

    def wait_status(self, name: str, timeout_s: float) -> dict[str, Any]:
        """The first status line called ``name``; ChildFailed if the process ends first
        or nothing comes within ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        with self._status_changed:
            while (found := self._first(name)) is None:
                if self.process.poll() is not None:
                    if self._readers[2].is_alive():  # its last lines may be on their way,
                        self._status_changed.wait(0.5)  # or a grandchild holds the pipe
                    if (found := self._first(name)) is not None:
                        return found
                    code = self.process.returncode
                    raise ChildFailed(self.failure(f"exited with code {code}"))
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise ChildFailed(self.failure(f"was not ready within {timeout_s:g} s"))
                self._status_changed.wait(min(remaining, 0.2))
            return found

    @property
    def ready(self) -> dict[str, Any]:
        """What the child said when it became ready (``{}`` before)."""
        return self.status("ready") or {}

    @property
    def endpoint(self) -> str:
        """The endpoint the child bound (producer: events; worker: predictions)."""
        return self.ready["endpoint"]

    def result(self) -> dict[str, Any] | None:
        """The final stats of the ``done`` status line (what ``--json`` prints), if any."""
        done = self.status("done")
        return done.get("stats") if done else None

    def failure(self, what: str) -> str:
        """``"NAME WHAT"`` and the child's last stderr lines, unless ``echo`` has shown
        them already (then once is enough: they are right above)."""
        if self.process.poll() is not None:
            self._readers[1].join(1.0)  # its last lines are read (and echoed) first
        if self.echo is not None:
            return f"{self.name} {what}"
        tail = "\n".join(f"  {line}" for line in list(self.stderr_tail)[-8:])
        return f"{self.name} {what}" + (f"; its last words:\n{tail}" if tail else "")

    # -- lifetime -----------------------------------------------------------------------

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
        final stats short."""
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


def _start(
    name: str,
    args: Sequence[str],
    *,
    echo: Callable[[str], None] | None,
    cwd: str | os.PathLike | None,
    timeout_s: float,
) -> Child:
    child = Child(name, args, echo=echo, cwd=cwd)
    try:
        child.wait_status("ready", timeout_s)
    except BaseException:
        child.stop(timeout_s=2.0)
        raise
    return child


def start_producer(
    args: Sequence[str],
    *,
    name: str = "producer",
    echo: Callable[[str], None] | None = None,
    cwd: str | os.PathLike | None = None,
    timeout_s: float = DEFAULT_START_TIMEOUT_S,
) -> Child:
    """``stcsnn produce ARGS`` on a free loopback port unless ARGS name ``--endpoint``;
    returned once it has bound (``child.endpoint``)."""
    endpoint = [] if "--endpoint" in args else ["--endpoint", "tcp://127.0.0.1:0"]
    return _start(name, ["produce", *endpoint, *args], echo=echo, cwd=cwd, timeout_s=timeout_s)


def start_worker(
    connect: str | Sequence[str],
    args: Sequence[str],
    *,
    name: str = "worker",
    echo: Callable[[str], None] | None = None,
    cwd: str | os.PathLike | None = None,
    timeout_s: float = DEFAULT_START_TIMEOUT_S,
) -> Child:
    """``stcsnn worker --connect ENDPOINT... ARGS``, predictions on a free loopback port
    unless ARGS name ``--bind``; returned once bound (``child.endpoint``; ``child.ready``
    also says ``model``, ``device``, ``hop_us``)."""
    endpoints = [connect] if isinstance(connect, str) else list(connect)
    bind = [] if "--bind" in args else ["--bind", "tcp://127.0.0.1:0"]
    argv = ["worker", *(a for e in endpoints for a in ("--connect", e)), *bind, *args]
    return _start(name, argv, echo=echo, cwd=cwd, timeout_s=timeout_s)


def start_dashboard(
    connect: str,
    args: Sequence[str] = (),
    *,
    name: str = "dashboard",
    echo: Callable[[str], None] | None = None,
    cwd: str | os.PathLike | None = None,
    timeout_s: float = DEFAULT_START_TIMEOUT_S,
) -> Child:
    """``stcsnn dashboard --connect ENDPOINT ARGS``, returned once its window is up and
    subscribed."""
    argv = ["dashboard", "--connect", connect, *args]
    return _start(name, argv, echo=echo, cwd=cwd, timeout_s=timeout_s)


class Supervisor:
    """Children started in order and stopped together, whatever happens."""

    def __init__(self):
        self.children: list[Child] = []

    def start(self, child: Child) -> Child:
        self.children.append(child)
        return child

    def failed(self, expected_to_finish: tuple[Child | None, ...] = ()) -> Child | None:
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


# --- the child launcher ---------------------------------------------------------------


def _die_with_parent(parent_pid: int) -> None:
    """Ask Linux to kill this process when its parent dies; exit now if it already has.

    SIGKILL, not SIGTERM: a parent that is itself killed cannot stop its children
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
        sys.exit(f"{LAUNCHER}: the parent (pid {parent_pid}) is gone; not starting")


def _child_main(argv: list[str]) -> None:
    """``python -m streamer.processes --child-of PID MODULE ARGS...``: MODULE as __main__."""
    import faulthandler
    import runpy

    # A crash in native code (numpy, ZeroMQ, torch) leaves its Python stack in the
    # child's last words instead of a bare "exited with code -11".
    faulthandler.enable()
    if len(argv) < 3 or argv[0] != "--child-of" or not argv[1].isdigit():
        sys.exit(f"usage: python -m {LAUNCHER} --child-of PID MODULE [ARGS...]")
    _die_with_parent(int(argv[1]))
    module = argv[2]
    sys.argv = [module, *argv[3:]]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    _child_main(sys.argv[1:])
