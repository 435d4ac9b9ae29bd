"""Spatio-temporal compression (docs/method.md section 2): events -> T steps of synaptic current.

One numpy core serves training (``compress_clip``: a clip -> ``[T, 2, H', W']``)
and the live worker (``StreamingCompressor``: chunks in, one step out per hop),
so a model sees the same numbers in both.

Conventions (the contract the tests check):

- Step ``k`` (0-based) of a grid that starts at ``t0`` with step length ``D``
  holds the events with ``t0 + k·D <= t < t0 + (k+1)·D`` (half-open
  ``[t_k-1, t_k)``): an event at ``t0`` is in step 0, an event exactly on a
  step's end belongs to the next step.
- Its value is the synaptic current sampled at the step's end
  ``t_k = t0 + (k+1)·D``: ``I_k = γ·I_k-1 + Σ_{e in step k} exp(-(t_k - t_e)/τ_s)``
  with ``γ = exp(-D/τ_s)`` and ``I_-1 = 0`` (a clip) or the carried current
  (a stream). The count baseline is the plain number of events per step.
- Cell of an event: ``(p, y // s, x // s)`` in ``[2, H', W']``; pixels of the
  input sensor beyond ``W'·s`` or ``H'·s`` (when the input size is not a
  multiple of ``s``) are dropped; an event outside the input sensor or a
  polarity other than 0/1 is an ``EventValidationError``.
- Events must already be in the model's input sensor (``core.adapt``) and
  sorted by timestamp (offline input that is not raises; the streaming
  compressor drops backwards events itself).

Weights are computed in float32 (``exp`` of float32 arguments), sums in
float64, results are float32.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal, NamedTuple

import numpy as np

from core.events import (
    EventValidationError,
    SensorSize,
    as_events,
    find_out_of_sensor,
)

# Events processed per numpy pass: their temporaries (a few arrays of 8 bytes
# per event) stay in the L2 cache.
BLOCK_EVENTS = 1 << 16


@dataclass(frozen=True)
class CompressionConfig:
    """How a window of events becomes the model's input ``[T, 2, H', W']``.

    ``input_width`` x ``input_height`` is the model's input sensor (after any
    crop/downscale of the recording's sensor); ``spatial_factor`` then sum-pools
    pixels, so ``H' = input_height // spatial_factor``.
    """

    input_width: int
    input_height: int
    spatial_factor: int = 1
    steps: int = 4  # T
    window_us: int = 300_000  # W; one step lasts window_us // steps (the streaming hop)
    tau_s_us: float | None = None  # synaptic time constant; None means one step length
    mode: Literal["stc", "count"] = "stc"

    def __post_init__(self) -> None:
        problems = []
        for name in ("input_width", "input_height", "spatial_factor", "steps"):
            if int(getattr(self, name)) < 1:
                problems.append(f"{name} must be >= 1, found {getattr(self, name)}")
        if self.spatial_factor > min(self.input_width, self.input_height):
            problems.append(
                f"spatial_factor {self.spatial_factor} leaves no cell of the "
                f"{self.input_width}x{self.input_height} input"
            )
        if self.window_us < self.steps:
            problems.append(f"window_us {self.window_us} is shorter than one µs per step")
        if self.tau_s_us is not None and not self.tau_s_us > 0:
            problems.append(f"tau_s_us must be > 0 or None, found {self.tau_s_us}")
        if self.mode not in ("stc", "count"):
            problems.append(f"mode must be 'stc' or 'count', found {self.mode!r}")
        if problems:
            raise ValueError("CompressionConfig: " + "; ".join(problems))

    @property
    def input_sensor(self) -> SensorSize:
        return SensorSize(self.input_width, self.input_height)

    @property
    def step_us(self) -> int:
        return self.window_us // self.steps

    @property
    def output_shape(self) -> tuple[int, int, int]:
        s = self.spatial_factor
        return (2, self.input_height // s, self.input_width // s)

    def tau_us(self, step_us: float | None = None) -> float:
        """τ_s in µs for a grid of ``step_us`` steps (default: the config's own)."""
        if self.tau_s_us is not None:
            return float(self.tau_s_us)
        return float(self.step_us if step_us is None else step_us)


class StepGrid(NamedTuple):
    """``steps`` steps of ``step_us`` µs, the first starting at ``t0_us``."""

    t0_us: int
    step_us: int
    steps: int

    @property
    def end_us(self) -> int:
        return self.t0_us + self.step_us * self.steps


def clip_grid(
    events: np.ndarray,
    config: CompressionConfig,
    *,
    t0_us: int | None = None,
    window_us: int | None = None,
) -> StepGrid:
    """The T-step grid ``compress_clip`` uses for these events.

    - neither given: the whole clip, ``t0`` = first event and the shortest
      whole-µs step ``D = ceil((t_last - t_first + 1) / T)`` that still holds
      the last event;
    - ``t0_us`` and/or ``window_us`` given: the window ``[t0, t0 + W)`` with
      ``t0`` defaulting to the first event and ``W`` to ``config.window_us``;
      ``W`` must be a multiple of T so that steps are whole µs (as the
      streaming hop is).
    """
    steps = config.steps
    t = events["timestamp"]
    if t0_us is None and window_us is None:
        if len(t) == 0:
            return StepGrid(0, max(config.step_us, 1), steps)
        first, last = int(t[0]), int(t[-1])
        if last < first:
            raise EventValidationError("<memory>", "event 0", "clip timestamps are not sorted")
        return StepGrid(first, -(-(last - first + 1) // steps), steps)
    if window_us is None:
        window_us = config.window_us
    if t0_us is None:
        t0_us = int(t[0]) if len(t) else 0
    window_us = int(window_us)
    if window_us < steps or window_us % steps:
        raise ValueError(f"window_us {window_us} is not a positive multiple of steps={steps}")
    return StepGrid(int(t0_us), window_us // steps, steps)


def _pool_shift(factor: int) -> int | None:
    return factor.bit_length() - 1 if factor & (factor - 1) == 0 else None


def _check_block(events: np.ndarray, config: CompressionConfig, first_index: int) -> bool:
    """Raise on events outside the input sensor or bad polarity; return whether
    the block has events in the strip beyond ``W'·s`` / ``H'·s`` to drop."""
    x = events["x"].view(np.uint16)  # a negative coordinate becomes huge
    y = events["y"].view(np.uint16)
    p = events["polarity"].view(np.uint8)
    if len(events) == 0:
        return False
    x_max, y_max = int(x.max()), int(y.max())
    if x_max >= config.input_width or y_max >= config.input_height:
        i = find_out_of_sensor(events, config.input_sensor)
        raise EventValidationError(
            "<memory>",
            f"event {first_index + i}",
            f"x={int(events['x'][i])}, y={int(events['y'][i])} is outside the "
            f"{config.input_sensor} input sensor (adapt the events first: core.adapt)",
        )
    if int(p.max()) > 1:
        i = int(np.argmax(p > 1))
        raise EventValidationError(
            "<memory>",
            f"event {first_index + i}",
            f"polarity {int(events['polarity'][i])} is not 0 or 1",
        )
    _, height, width = config.output_shape
    s = config.spatial_factor
    return x_max >= width * s or y_max >= height * s


# Bytes 8-15 of an event as one little-endian word: x | y << 16 | p << 32 | padding.
_WORD = np.dtype("<u8")
_XYP_MASK = np.uint64((1 << 40) - 1)


class _CellIndexer:
    """Flat cell index ``p·H'W' + (y//s)·W' + x//s`` of blocks of events.

    Reads x, y and p from one contiguous copy of each event's second 8-byte
    word instead of three strided field reads; buffers are reused across blocks.
    """

    def __init__(self, config: CompressionConfig, block: int):
        self.config = config
        _, self.height, self.width = config.output_shape
        self.factor = config.spatial_factor
        self.shift = _pool_shift(self.factor)
        self.words = np.empty(block, dtype=np.uint64)
        self.x = np.empty(block, dtype=np.uint64)
        self.y = np.empty(block, dtype=np.uint64)
        self.p = np.empty(block, dtype=np.uint64)

    def __call__(
        self, events: np.ndarray, words: np.ndarray, first_index: int
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """Cells of ``events`` (``words``: their packed words) and the mask of
        the events kept (None: all), raising on events outside the sensor."""
        n = len(words)
        packed = np.bitwise_and(words, _XYP_MASK, out=self.words[:n])
        x = np.bitwise_and(packed, 0xFFFF, out=self.x[:n])
        y = np.right_shift(packed, 16, out=self.y[:n])
        y &= 0xFFFF
        p = np.right_shift(packed, 32, out=self.p[:n])
        keep = None
        if n:
            config = self.config
            x_max, y_max = int(x.max()), int(y.max())
            if x_max >= config.input_width or y_max >= config.input_height or int(p.max()) > 1:
                _check_block(events, config, first_index)  # raises, naming the event
            s = self.factor
            if x_max >= self.width * s or y_max >= self.height * s:
                keep = (x < self.width * s) & (y < self.height * s)
                x, y, p = x[keep], y[keep], p[keep]
        if self.shift:
            x >>= self.shift
            y >>= self.shift
        elif self.factor > 1:
            x //= self.factor
            y //= self.factor
        y *= self.width
        y += x
        p *= self.height * self.width
        y += p
        return y.view(np.intp), keep


def find_backwards_timestamps(t: np.ndarray) -> int:
    """Index of the first timestamp below its predecessor, or -1."""
    bad = np.flatnonzero(t[1:] < t[:-1])
    return int(bad[0]) + 1 if len(bad) else -1


def _check_sorted(t: np.ndarray, lo: int, hi: int, first_index: int) -> None:
    """Raise unless ``t[lo:hi]`` never decreases."""
    part = t[lo:hi]
    if len(part) > 1 and np.any(part[1:] < part[:-1]):
        i = lo + find_backwards_timestamps(part)
        raise EventValidationError(
            "<memory>",
            f"event {first_index + i}",
            f"timestamp {int(t[i])} µs goes backwards (previous {int(t[i - 1])} µs); "
            "compression needs sorted events",
        )


def _packed_words(events: np.ndarray) -> np.ndarray:
    return events.view(_WORD).reshape(-1, 2)[:, 1]


def inject_steps(
    events: np.ndarray,
    config: CompressionConfig,
    grid: StepGrid,
    *,
    first_index: int = 0,
) -> np.ndarray:
    """Per step, the current its own events inject by the step's end (``stc``:
    ``Σ exp(-(t_k - t_e)/τ_s)``) or their count (``count``), without carry-over.

    ``events`` must be sorted; those outside the grid are ignored. Returns
    float64 ``[grid.steps, 2·H'·W']``. ``first_index`` offsets event indices in
    error messages.
    """
    events = np.ascontiguousarray(as_events(events))
    cells_per_step = math.prod(config.output_shape)
    injected = np.zeros((grid.steps, cells_per_step), dtype=np.float64)
    t = events["timestamp"]
    words = _packed_words(events)
    edges = grid.t0_us + grid.step_us * np.arange(grid.steps + 1, dtype=np.int64)
    bounds = np.searchsorted(t, edges, side="left").tolist()
    # Sortedness is checked where the events are read anyway: block by block
    # below, and here for the events outside the grid.
    if any(b < a for a, b in zip(bounds[:-1], bounds[1:], strict=True)):
        _check_sorted(t, 0, len(t), first_index)
    _check_sorted(t, 0, bounds[0] + 1, first_index)
    stc = config.mode == "stc"
    inv_tau = np.float32(1.0 / config.tau_us(grid.step_us))
    block = min(BLOCK_EVENTS, max(bounds[-1] - bounds[0], 1))
    indexer = _CellIndexer(config, block)
    t_buffer = np.empty(block + 1, dtype=np.int64)
    weight_buffer = np.empty(block, dtype=np.float32)
    for k in range(grid.steps):
        step_end = int(edges[k + 1])
        for a in range(bounds[k], bounds[k + 1], block):
            b = min(a + block, bounds[k + 1])
            # One contiguous copy of the timestamps (and the one before) serves
            # the sortedness check and the weights.
            lo = max(a - 1, 0)
            t_block = np.subtract(t[lo:b], step_end, out=t_buffer[: b - lo])
            if len(t_block) > 1 and np.any(t_block[1:] < t_block[:-1]):
                _check_sorted(t, lo, b, first_index)
            cells, keep = indexer(events[a:b], words[a:b], first_index + a)
            if stc:
                dt = t_block[a - lo :]
                if keep is not None:
                    dt = dt[keep]
                weights = weight_buffer[: len(cells)]
                np.multiply(dt, inv_tau, out=weights, dtype=np.float32)
                np.exp(weights, out=weights)
                injected[k] += np.bincount(cells, weights=weights, minlength=cells_per_step)
            else:
                injected[k] += np.bincount(cells, minlength=cells_per_step)
    _check_sorted(t, max(bounds[-1] - 1, 0), len(t), first_index)
    return injected


def carry_current(
    injected: np.ndarray,
    gamma: float,
    current: np.ndarray | None = None,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """``I_k = γ·I_k-1 + injected_k`` over the steps of ``injected`` [n, cells],
    starting from ``current`` (zeros if None), in float32. Updates ``current``
    in place when given; returns ``out`` [n, cells] float32."""
    if out is None:
        out = np.empty(injected.shape, dtype=np.float32)
    if current is None:
        current = np.zeros(injected.shape[1:], dtype=np.float32)
    g = np.float32(gamma)
    for k in range(len(injected)):
        current *= g
        current += injected[k]
        out[k] = current
    return out


def compress_steps(
    events: np.ndarray,
    config: CompressionConfig,
    grid: StepGrid,
    *,
    initial_current: np.ndarray | None = None,
) -> np.ndarray:
    """Events on a step grid -> float32 ``[grid.steps, 2, H', W']`` (STC or counts).

    ``initial_current`` ([2, H', W'] float32, STC only) is the current carried
    in from before ``grid.t0_us``; it is updated in place to the last step's.
    """
    injected = inject_steps(events, config, grid)
    shape = (grid.steps, *config.output_shape)
    if config.mode == "count":
        return injected.astype(np.float32).reshape(shape)
    gamma = math.exp(-grid.step_us / config.tau_us(grid.step_us))
    current = None if initial_current is None else initial_current.reshape(-1)
    return carry_current(injected, gamma, current).reshape(shape)


def compress_clip(
    events: np.ndarray,
    config: CompressionConfig,
    *,
    t0_us: int | None = None,
    window_us: int | None = None,
) -> np.ndarray:
    """A clip -> float32 ``[T, 2, H', W']``, starting from zero current; the
    grid is ``clip_grid`` (whole clip, or the window ``[t0, t0 + W)``)."""
    events = as_events(events)
    return compress_steps(
        events, config, clip_grid(events, config, t0_us=t0_us, window_us=window_us)
    )


# ---------------------------------------------------------------------------
# Streaming


@dataclass
class StreamStats:
    """Counters since the compressor was made (``reset`` keeps them)."""

    events_in: int = 0
    events_dropped_late: int = 0  # below the last seen timestamp or the open step's start
    steps_emitted: int = 0
    steps_skipped: int = 0  # empty steps inside a gap longer than max_gap_steps, not emitted
    resets: int = 0


@dataclass(frozen=True)
class CompressedSteps:
    """Steps a streaming call completed: ``values[i]`` ``[2, H', W']`` float32 is
    the current (or count) sampled at ``end_us[i]``. Iterating yields
    ``(end_us, values)`` pairs."""

    end_us: np.ndarray  # int64 [n]
    values: np.ndarray  # float32 [n, 2, H', W']

    def __len__(self) -> int:
        return len(self.end_us)

    def __iter__(self) -> Iterator[tuple[int, np.ndarray]]:
        yield from zip(self.end_us.tolist(), self.values, strict=True)


@dataclass
class _StreamState:
    start_us: int | None  # grid origin; None until the first event
    open_step: int = 0  # index of the step events currently fall into
    last_us: int | None = None  # highest timestamp accepted so far
    pending: np.ndarray | None = None  # float64 [cells]: the open step's injection so far
    current: np.ndarray | None = None  # float32 [cells]: I at the end of the last closed step


class StreamingCompressor:
    """Incremental STC (or count) over a live event stream.

    Feed chunks of any size with ``push``; every time event time passes the end
    of a step (hop ``D = config.step_us``), that step is emitted with the
    current carried over from the previous one. The grid starts at ``start_us``
    or, if None, at the first event's timestamp; offline ``compress_steps`` on
    the grid ``StepGrid(start, D, n)`` over the same events gives the same
    first ``n`` steps (to float32 summation order).

    - A step closes only when an event at or after its end arrives (or
      ``advance_to`` / ``flush`` says time has passed), so emitted steps are
      final: nothing that arrives later can belong to them.
    - Steps without events are still emitted (the current decays), except
      inside a gap of more than ``max_gap_steps`` empty steps: those are
      skipped (counted in ``stats.steps_skipped``; visible as a jump in
      ``end_us``) and the current is decayed over them exactly. This bounds
      memory on a timestamp jump.
    - An event below the highest timestamp seen so far (or below ``start_us``)
      is late: counted in ``stats.events_dropped_late`` and dropped.
    """

    def __init__(
        self,
        config: CompressionConfig,
        *,
        start_us: int | None = None,
        max_gap_steps: int = 256,
    ):
        if max_gap_steps < 0:
            raise ValueError(f"max_gap_steps must be >= 0, found {max_gap_steps}")
        self.config = config
        self.step_us = config.step_us
        self.max_gap_steps = max_gap_steps
        self._cells = math.prod(config.output_shape)
        self._gamma = (
            math.exp(-self.step_us / config.tau_us(self.step_us)) if config.mode == "stc" else 0.0
        )
        self.stats = StreamStats()
        self._state = self._fresh_state(start_us)

    def _fresh_state(self, start_us: int | None) -> _StreamState:
        return _StreamState(
            start_us=None if start_us is None else int(start_us),
            last_us=None if start_us is None else int(start_us),
            pending=np.zeros(self._cells, dtype=np.float64),
            current=np.zeros(self._cells, dtype=np.float32),
        )

    # -- public API ---------------------------------------------------------

    @property
    def start_us(self) -> int | None:
        """Start of step 0 (None until the first event when not given)."""
        return self._state.start_us

    @property
    def open_step_start_us(self) -> int | None:
        s = self._state
        return None if s.start_us is None else s.start_us + s.open_step * self.step_us

    @property
    def current(self) -> np.ndarray:
        """The carried current ``[2, H', W']`` at the end of the last emitted step (a copy)."""
        return self._state.current.reshape(self.config.output_shape).copy()

    def reset(self, start_us: int | None = None) -> None:
        """Forget the stream: zero current, no open step; the next event (or
        ``start_us``) starts a new grid. ``stats`` keep counting."""
        self._state = self._fresh_state(start_us)
        self.stats.resets += 1

    def push(self, events: np.ndarray) -> CompressedSteps:
        """Add a chunk (EVENT_DTYPE, in the input sensor); return the steps it completed."""
        events = as_events(events)
        self.stats.events_in += len(events)
        state = self._state
        if len(events) == 0:
            return self._no_steps()
        _check_block(events, self.config, 0)  # raises before any state changes
        if state.start_us is None:
            state.start_us = int(events["timestamp"][0])
            state.last_us = state.start_us
        events = self._drop_late(events)
        if len(events) == 0:
            return self._no_steps()
        state.last_us = int(events["timestamp"][-1])
        # (Events on pixels beyond W'·s / H'·s advance time; inject_steps drops them.)
        return self._advance(events, self._step_of(state.last_us))

    def advance_to(self, now_us: int) -> CompressedSteps:
        """Event time has reached ``now_us`` with no further events: emit the
        steps ending at or before it. Later events below ``now_us`` are late."""
        state = self._state
        if state.start_us is None:
            return self._no_steps()
        now_us = int(now_us)
        if now_us <= state.last_us:
            return self._no_steps()
        state.last_us = now_us
        return self._advance(None, self._step_of(now_us))

    def flush(self) -> CompressedSteps:
        """Close and emit the open step now (end of stream), even if it is not
        over; the next event goes into the step after it."""
        state = self._state
        if state.start_us is None:
            return self._no_steps()
        end = state.start_us + (state.open_step + 1) * self.step_us
        steps = self._advance(None, state.open_step + 1)
        state.last_us = max(state.last_us, end)
        return steps

    # -- internals ----------------------------------------------------------

    def _no_steps(self) -> CompressedSteps:
        return CompressedSteps(
            np.empty(0, dtype=np.int64),
            np.empty((0, *self.config.output_shape), dtype=np.float32),
        )

    def _step_of(self, t_us: int) -> int:
        return (t_us - self._state.start_us) // self.step_us

    def _drop_late(self, events: np.ndarray) -> np.ndarray:
        t = events["timestamp"]
        floor_us = self._state.last_us
        if t[0] >= floor_us and (len(t) == 1 or not np.any(t[1:] < t[:-1])):
            return events
        running_max = np.maximum.accumulate(t)
        keep = t >= floor_us
        keep[1:] &= t[1:] >= running_max[:-1]
        self.stats.events_dropped_late += len(t) - int(np.count_nonzero(keep))
        return events[keep]

    def _advance(self, events: np.ndarray | None, last_step: int) -> CompressedSteps:
        """Inject ``events`` (sorted, all in steps open_step..last_step), close the
        steps before ``last_step`` and leave ``last_step`` open."""
        ends: list[np.ndarray] = []
        values: list[np.ndarray] = []
        if events is not None and len(events):
            for piece in self._split_at_gaps(events, last_step):
                piece_t = piece["timestamp"]
                self._close_until(self._step_of(int(piece_t[0])), ends, values)
                self._run(piece, self._step_of(int(piece_t[-1])), ends, values)
        self._close_until(last_step, ends, values)
        if not ends:
            return self._no_steps()
        end_us = np.concatenate(ends) if len(ends) > 1 else ends[0]
        out = np.concatenate(values) if len(values) > 1 else values[0]
        self.stats.steps_emitted += len(end_us)
        return CompressedSteps(end_us, out.reshape(len(end_us), *self.config.output_shape))

    def _split_at_gaps(self, events: np.ndarray, last_step: int) -> list[np.ndarray]:
        """Cut the chunk where more than max_gap_steps empty steps separate two
        events, so that ``_close_until`` can skip them."""
        if last_step - self._state.open_step <= self.max_gap_steps + 1:
            return [events]
        step_of_event = (events["timestamp"] - self._state.start_us) // self.step_us
        cuts = np.flatnonzero(np.diff(step_of_event) > self.max_gap_steps + 1) + 1
        return np.split(events, cuts)

    def _close_until(self, step: int, ends: list, values: list) -> None:
        """Time has reached ``step`` with no events since the open step's: emit the
        steps before it, skipping (and decaying over) a gap of more than
        max_gap_steps empty steps after the open one."""
        state = self._state
        empty = step - state.open_step - 1
        if empty > self.max_gap_steps:
            self._run(None, state.open_step + 1, ends, values)
            state.current *= np.float32(self._gamma**empty)
            state.open_step = step
            self.stats.steps_skipped += empty
        elif step > state.open_step:
            self._run(None, step, ends, values)

    def _run(self, events: np.ndarray | None, last_step: int, ends: list, values: list) -> None:
        """Steps open_step..last_step with ``events`` (or none) in them: all but
        the last are closed and appended to ``ends``/``values``."""
        state = self._state
        n_steps = last_step - state.open_step + 1
        grid = StepGrid(state.start_us + state.open_step * self.step_us, self.step_us, n_steps)
        if events is None:
            injected = np.zeros((n_steps, self._cells), dtype=np.float64)
        else:
            injected = inject_steps(events, self.config, grid)
        injected[0] += state.pending
        state.pending = injected[-1].copy()
        state.open_step = last_step
        if n_steps == 1:
            return
        closed = injected[:-1]
        if self.config.mode == "stc":
            values.append(carry_current(closed, self._gamma, state.current))
        else:
            values.append(closed.astype(np.float32))
        ends.append(grid.t0_us + self.step_us * np.arange(1, n_steps, dtype=np.int64))
