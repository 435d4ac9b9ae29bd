"""A DVS pixel emulator: intensity frames in, events out (numpy only).

Each pixel works the way a DVS pixel does, as ESIM (Rebecq et al., CoRL 2018) and
v2e (Hu, Liu and Delbruck, CVPR Workshops 2021) model it; this is our own code:

* **Log intensity.** The pixel sees ``log(I)``; below a knee it turns linear (the
  tangent of the log at the knee) so that black pixels stay finite and a dark
  pixel's contrast gain does not blow up, as v2e's ``lin_log`` does.
* **Contrast thresholds.** A pixel remembers the log intensity of its last event
  (its reference) and fires ON each time ``log I`` rises ``on_threshold`` above it,
  OFF each time it falls ``off_threshold`` below; the reference moves one threshold
  per event. The thresholds differ from pixel to pixel (a Gaussian mismatch,
  drawn once per pixel from the seed and fixed for the emulator's life).
* **Interpolated time.** Between two frames ``log I`` is taken to move linearly,
  so a pixel crossing k thresholds emits k events at the times the straight line
  crosses them, not all at the frame's timestamp (ESIM's model).
* **Refractory period.** After an event a pixel cannot fire for
  ``refractory_us``; crossings inside it are lost, but the reference still follows
  the input (a real pixel is held in reset, tracking its input, while refractory).
* **Leak events.** Junction leakage slowly lowers the reference, so a pixel in
  constant light emits ON events at about ``leak_rate_hz``; each pixel's rate
  varies by ``leak_jitter_fraction`` and starts at a random phase so that the
  sensor does not blink all at once.
* **Shot noise.** Spurious events at ``shot_noise_rate_hz`` per pixel (ON and OFF
  together, half each), uniform in time and over the sensor. v2e raises the rate
  in dark pixels; ours is uniform. They obey the refractory period like signal
  events (in time order with them) and start one, but leave the reference alone.

Not modelled: the photoreceptor's low-pass bandwidth (v2e ``cutoff_hz``), per-event
threshold noise, and motion within a frame interval that is not linear in log
intensity (v2e interpolates frames with Super SloMo first; feed frames often enough).

Where the defaults of ``DvsParams`` come from:

* ``on_threshold`` = ``off_threshold`` = 0.2 (natural-log units) and
  ``threshold_sigma`` = 0.03: v2e's command-line defaults (``--pos_thres``,
  ``--neg_thres``, ``--sigma_thres``).
* ``min_threshold`` = 0.01: the floor v2e clips mismatched thresholds to.
* ``refractory_us`` = 1000 (1 ms): between v2e's "clean" preset (0) and its
  "noisy" preset (10 ms); short enough that an edge moving one pixel a
  millisecond still fires at every pixel it crosses.
* ``leak_rate_hz`` = 0.1 and ``leak_jitter_fraction`` = 0.1: v2e's "noisy"
  preset (its command-line default leak is 0.01 Hz).
* ``shot_noise_rate_hz`` = 0: off, so that emulated training data is clean unless
  asked for (v2e's command-line default is 0.001 Hz, its "noisy" preset 5 Hz).
* ``linlog_knee`` = 20/255: v2e's ``lin_log`` switches from linear to log at 20
  of 255 digital numbers.

Events come out as ``core.events.EVENT_DTYPE`` sorted by timestamp (then pixel),
inside the sensor, so they pass ``core.events.validate_events``. Everything is
deterministic under the seed; the only loop runs over the events one pixel
emits within one frame interval (for the refractory chain), never over pixels.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from core.events import SensorSize, empty_events, make_events

# Far enough in the past that no pixel is refractory at the first frame.
_NEVER_US = np.iinfo(np.int64).min // 4


@dataclass(frozen=True)
class DvsParams:
    """Pixel model parameters; the module docstring says where each default comes from."""

    on_threshold: float = 0.2  # rise of log intensity per ON event (ln units)
    off_threshold: float = 0.2  # fall of log intensity per OFF event (ln units)
    threshold_sigma: float = 0.03  # pixel-to-pixel std of both thresholds
    min_threshold: float = 0.01  # mismatched thresholds are clipped to at least this
    refractory_us: int = 1000  # dead time after each event of a pixel
    leak_rate_hz: float = 0.1  # mean ON leak events per pixel per second
    leak_jitter_fraction: float = 0.1  # pixel-to-pixel relative std of the leak rate
    shot_noise_rate_hz: float = 0.0  # ON+OFF noise events per pixel per second
    linlog_knee: float = 20 / 255  # intensity below which the response is linear

    def __post_init__(self):
        if not (self.on_threshold > 0 and self.off_threshold > 0):
            raise ValueError("on_threshold and off_threshold must be > 0")
        if not self.min_threshold > 0:
            raise ValueError("min_threshold must be > 0")
        if not (0 < self.linlog_knee <= 1):
            raise ValueError("linlog_knee must be in (0, 1]")
        for name in ("threshold_sigma", "leak_rate_hz", "leak_jitter_fraction"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name} must be >= 0")
        if not self.shot_noise_rate_hz >= 0:
            raise ValueError("shot_noise_rate_hz must be >= 0")
        if int(self.refractory_us) != self.refractory_us or self.refractory_us < 0:
            raise ValueError("refractory_us must be a non-negative integer")


def lin_log(intensity: np.ndarray, knee: float) -> np.ndarray:
    """``log(I)`` above ``knee``, its tangent at ``knee`` below (finite at I = 0)."""
    intensity = np.asarray(intensity, dtype=np.float64)
    log_knee = np.log(knee)
    linear = log_knee + (intensity - knee) / knee
    return np.where(intensity >= knee, np.log(np.maximum(intensity, knee)), linear)


def _mismatched(mean: float, sigma: float, floor: float, rng, shape) -> np.ndarray:
    """Per-pixel thresholds: Gaussian around ``mean``, clipped to ``floor``."""
    values = np.full(shape, float(mean))
    if sigma > 0:
        values += sigma * rng.standard_normal(shape)
    return np.maximum(values, floor)


class DvsEmulator:
    """A stateful emulated DVS sensor fed one intensity frame at a time.

    ``push(frame, t_us)`` takes an HxW frame (float in [0, 1], or uint8 0..255)
    taken at ``t_us`` (strictly increasing) and returns the events the pixels
    emitted since the previous frame. The first frame only sets the pixels'
    references and returns no events.
    """

    def __init__(self, width: int, height: int, params: DvsParams | None = None, seed: int = 0):
        if width < 1 or height < 1:
            raise ValueError(f"sensor size must be positive, got {width}x{height}")
        self.sensor = SensorSize(int(width), int(height))
        self.params = params if params is not None else DvsParams()
        # Separate streams: the fixed pattern does not change when noise is toggled.
        fixed_seed, noise_seed = np.random.SeedSequence(seed).spawn(2)
        fixed = np.random.default_rng(fixed_seed)
        self._noise_rng = np.random.default_rng(noise_seed)
        self._on, self._off, leak_hz = self._fixed_pattern(fixed)
        # Per-pixel fall of the reference per µs: one ON threshold per leak event.
        self._leak_per_us = leak_hz * self._on * 1e-6 if self.params.leak_rate_hz > 0 else None
        # uint8 frames go through a lookup table: one take instead of a log per pixel.
        self._uint8_log = lin_log(np.arange(256) / 255.0, self.params.linlog_knee)
        self._reference: np.ndarray | None = None  # log intensity of the last event
        self._previous_log: np.ndarray | None = None
        self._previous_t: int | None = None
        self._last_event_t = np.full(self.pixel_count, _NEVER_US, dtype=np.int64)

    @property
    def pixel_count(self) -> int:
        return self.sensor.width * self.sensor.height

    @property
    def on_thresholds(self) -> np.ndarray:
        """Each pixel's ON threshold (height x width, a copy)."""
        return self._on.reshape(self.sensor.height, self.sensor.width).copy()

    @property
    def off_thresholds(self) -> np.ndarray:
        """Each pixel's OFF threshold (height x width, a copy)."""
        return self._off.reshape(self.sensor.height, self.sensor.width).copy()

    def _fixed_pattern(self, rng) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        p, n = self.params, self.pixel_count
        on = _mismatched(p.on_threshold, p.threshold_sigma, p.min_threshold, rng, n)
        off = _mismatched(p.off_threshold, p.threshold_sigma, p.min_threshold, rng, n)
        leak = _mismatched(p.leak_rate_hz, p.leak_rate_hz * p.leak_jitter_fraction, 0.0, rng, n)
        return on, off, leak

    def push(self, frame: np.ndarray, t_us: int) -> np.ndarray:
        """Events (EVENT_DTYPE, sorted by timestamp) between the previous frame and this one."""
        t_us = int(t_us)
        log_frame = self._log_frame(frame)
        if self._previous_t is None:
            self._start(log_frame, t_us)
            return empty_events()
        if t_us <= self._previous_t:
            raise ValueError(
                f"frame timestamps must increase: {t_us} µs after {self._previous_t} µs"
            )
        t0, dt = self._previous_t, t_us - self._previous_t
        # Leak lowers the reference linearly in time, like a rise of the input.
        leak = self._leak_per_us * dt if self._leak_per_us is not None else 0.0
        self._reference -= leak
        after = log_frame - self._reference
        # Only pixels past a threshold need more work (a few percent of a moving scene).
        pixels = np.flatnonzero((after >= self._on) | (after <= -self._off))
        before = self._previous_log[pixels] - self._reference[pixels]
        if self._leak_per_us is not None:
            before -= leak[pixels]
        signal, moved = self._crossings(pixels, before, after[pixels], t0, dt)
        self._reference[pixels] += moved
        candidates = [signal, self._shot_noise(t0, dt)]
        self._previous_log, self._previous_t = log_frame, t_us
        return self._pack(*self._refractory_filter(candidates, t0, dt), t0)

    def _start(self, log_frame: np.ndarray, t_us: int) -> None:
        self._previous_log, self._previous_t = log_frame, t_us
        self._reference = log_frame.copy()
        if self.params.leak_rate_hz > 0:
            # A random phase within one ON threshold, so leak events do not all
            # arrive together (a real sensor's pixels reset at unrelated times).
            self._reference -= self._noise_rng.uniform(0.0, 1.0, self.pixel_count) * self._on

    def _log_frame(self, frame: np.ndarray) -> np.ndarray:
        """The frame's per-pixel log intensity, flattened; refuses a wrong size or range."""
        frame = np.asarray(frame)
        expected = (self.sensor.height, self.sensor.width)
        if frame.shape != expected:
            raise ValueError(
                f"frame of shape {frame.shape} (height, width) does not fit the emulated "
                f"{self.sensor} sensor, which takes frames of shape {expected}; "
                "resize (and convert to grey) before pushing"
            )
        if frame.dtype == np.uint8:
            return self._uint8_log[frame.ravel()]
        if frame.dtype.kind not in "fiub":
            raise ValueError(f"frame dtype {frame.dtype} is not a number")
        flat = frame.astype(np.float64, copy=False).ravel()
        if not np.all((flat >= 0.0) & (flat <= 1.0)):  # also false for NaN
            raise ValueError("float frames must hold intensities in [0, 1] (no NaN)")
        return lin_log(flat, self.params.linlog_knee)

    def _crossings(self, pixels: np.ndarray, before: np.ndarray, after: np.ndarray, t0, dt):
        """Threshold crossings of ``pixels`` between two frames.

        ``before``/``after`` are their log intensity minus reference at the two
        frames (leak included); crossing i of a pixel is where the straight line
        from ``before`` to ``after`` reaches i thresholds. Returns the candidate
        events (times, pixels, polarities; each pixel's in time order) and how far
        each pixel's reference moves."""
        on, off = self._on[pixels], self._off[pixels]
        ons = np.floor(np.maximum(after, 0.0) / on).astype(np.int64)
        offs = np.floor(np.maximum(-after, 0.0) / off).astype(np.int64)
        moved = ons * on - offs * off
        counts = ons + offs  # a straight line crosses only one way: one of them is 0
        # One row per crossing: its pixel's index into ``pixels`` and its number i.
        owner = np.repeat(np.arange(pixels.size), counts)
        first_row = np.cumsum(counts) - counts
        number = np.arange(owner.size) - first_row[owner] + 1
        step = np.where(ons > 0, on, -off)[owner]
        start = before[owner]
        # Clip: a reference pushed past a threshold (by shot noise) fires at once.
        fraction = np.clip((number * step - start) / (after[owner] - start), 0.0, 1.0)
        times = t0 + np.rint(fraction * dt).astype(np.int64)
        return (times, pixels[owner], (step > 0).astype(np.int64)), moved

    def _shot_noise(self, t0: int, dt: int):
        """Candidate Poisson noise events in (t0, t0 + dt], uniform over pixels."""
        rate = self.params.shot_noise_rate_hz
        count = self._noise_rng.poisson(rate * self.pixel_count * dt * 1e-6) if rate > 0 else 0
        if count == 0:
            return (np.empty(0, np.int64),) * 3
        rng = self._noise_rng
        times = t0 + 1 + rng.integers(0, dt, count)
        pixels = rng.integers(0, self.pixel_count, count)
        return times, pixels, rng.integers(0, 2, count)

    def _refractory_filter(self, candidates, t0: int, dt: int):
        """The candidate events that fall outside their pixel's refractory period,
        grouped by pixel in time order.

        A dropped event does not restart the period, so each pixel is a chain: the
        events are ranked within their pixel by time, and rank r of every pixel is
        checked at once, r = 0, 1, ... (a loop over events per pixel, not pixels)."""
        times, pixels, polarity = (np.concatenate(c) for c in zip(*candidates, strict=True))
        if candidates[1][0].size:  # crossings come grouped by pixel in time order; noise not
            by_pixel = np.argsort(pixels * (dt + 1) + (times - t0), kind="stable")
            times, pixels, polarity = times[by_pixel], pixels[by_pixel], polarity[by_pixel]
        if times.size == 0 or self.params.refractory_us == 0:
            return times, pixels, polarity
        new_pixel = np.r_[True, pixels[1:] != pixels[:-1]]
        group_start = np.maximum.accumulate(np.where(new_pixel, np.arange(pixels.size), 0))
        rank = np.arange(pixels.size) - group_start
        # Ranks are small: as uint16 the stable sort is a radix sort.
        small = rank.astype(np.uint16) if rank.max() < 2**16 else rank
        by_rank = np.argsort(small, kind="stable")
        bounds = np.searchsorted(rank[by_rank], np.arange(int(rank.max()) + 2))
        kept = np.zeros(pixels.size, dtype=bool)
        for r in range(bounds.size - 1):
            rows = by_rank[bounds[r] : bounds[r + 1]]
            kept[rows] = self._pass_refractory(pixels[rows], times[rows])
        return times[kept], pixels[kept], polarity[kept]

    def _pass_refractory(self, pixels: np.ndarray, t: np.ndarray) -> np.ndarray:
        """Mask of events (distinct pixels) outside their pixel's refractory period;
        the kept ones restart it."""
        kept = t - self._last_event_t[pixels] >= self.params.refractory_us
        self._last_event_t[pixels[kept]] = t[kept]
        return kept

    def _pack(self, times, pixels, polarity, t0: int) -> np.ndarray:
        """One EVENT_DTYPE array sorted by timestamp, then pixel (the input comes
        grouped by pixel in time order, so a stable sort by time suffices)."""
        if times.size == 0:
            return empty_events()
        offset = times - t0
        if offset.max() < 2**16:
            # Within 65 ms of the last frame (any video from 16 fps up): a radix sort.
            order = np.argsort(offset.astype(np.uint16), kind="stable")
        else:
            order = np.argsort(offset, kind="stable")
        pixels = pixels[order]
        width = self.sensor.width
        return make_events(times[order], pixels % width, pixels // width, polarity[order])
