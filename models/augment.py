"""Event-level augmentation of training crops: what a new recording varies.

A user's recording differs from the training set by where the signer stands
and how large they appear (shift, scale, a slight roll of the camera), how
fast they move (temporal stretch), how much contrast the scene gives (events
dropped) and the sensor's background activity (uniform noise events). Each
crop draws its own values from ``rng`` (seeded by run, epoch and sample, so a
resumed run draws the same crops). Polarity is never flipped. Mirroring left
to right (``mirror``, the share of crops mirrored) is off by default: it shows
a left-handed signer, which keeps a sign's meaning, but in a dataset whose
classes include mirror pairs (left / right swipes) it would merge them.

The transforms work on events already in the model's input sensor (after
``core.adapt.SensorAdapter``), so the same settings mean the same thing for
every dataset; events moved off the sensor are dropped.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from core.events import SensorSize, concat_events, empty_events


@dataclass(frozen=True)
class EventAugment:
    """Ranges each crop draws from uniformly (0 or (1, 1) turns a transform off)."""

    shift: float = 0.1  # translation, up to this share of the width / height
    scale: tuple[float, float] = (0.85, 1.15)  # zoom about the centre
    rotate_deg: float = 8.0  # roll, up to this angle either way
    stretch: tuple[float, float] = (0.8, 1.25)  # playback speed: > 1 plays faster
    drop: float = 0.2  # up to this share of the events removed
    noise_hz: float = 0.5  # background events per pixel and second, up to this rate
    mirror: float = 0.0  # share of crops mirrored left to right

    def __post_init__(self) -> None:
        if not (0 < self.scale[0] <= self.scale[1] and 0 < self.stretch[0] <= self.stretch[1]):
            raise ValueError(f"scale and stretch must be 0 < MIN <= MAX, found {self}")
        if not (0 <= self.drop < 1 and self.shift >= 0 and self.noise_hz >= 0):
            raise ValueError(f"drop must be in [0, 1), shift and noise_hz >= 0, found {self}")
        # true/false would read as "always" / "never"; a share says what is meant.
        if isinstance(self.mirror, bool) or not 0 <= self.mirror <= 1:
            raise ValueError(
                f"mirror must be the share of crops mirrored, in [0, 1] (e.g. 0.5), "
                f"found {self.mirror!r}"
            )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EventAugment:
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - fields
        if unknown:
            raise ValueError(
                f"unknown augmentation settings {sorted(unknown)}; known {sorted(fields)}"
            )
        pairs = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
        return cls(**pairs)

    def draw_stretch(self, rng: np.random.Generator) -> float:
        """The crop's playback speed, drawn log-uniformly (as likely faster as slower)."""
        low, high = self.stretch
        return float(math.exp(rng.uniform(math.log(low), math.log(high))))

    def apply(
        self,
        events: np.ndarray,
        sensor: SensorSize,
        t0_us: int,
        speed: float,
        duration_us: int,
        rng: np.random.Generator,
    ) -> np.ndarray:
        """``events`` of ``[t0, t0 + duration / speed)`` -> the crop's events on
        ``[t0, t0 + duration)``: played at ``speed``, moved, thinned and with
        background noise added (sorted by time)."""
        kept = events[rng.random(len(events)) >= rng.uniform(0.0, self.drop)]
        t = t0_us + np.floor((kept["timestamp"] - t0_us) * speed).astype(np.int64)
        x, y = self._move(kept["x"], kept["y"], sensor, rng)
        on = (x >= 0) & (x < sensor.width) & (y >= 0) & (y < sensor.height)
        out = empty_events(int(on.sum()))
        out["timestamp"], out["x"], out["y"] = t[on], x[on], y[on]
        out["polarity"] = kept["polarity"][on]
        noise = self._noise(sensor, t0_us, duration_us, rng)
        if len(noise):
            out = concat_events([out, noise])
            out = out[np.argsort(out["timestamp"], kind="stable")]
        return out

    def _move(
        self, x: np.ndarray, y: np.ndarray, sensor: SensorSize, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray]:
        """Mirror, rotate and scale about the sensor's centre, then shift; rounded
        to pixels."""
        cx, cy = (sensor.width - 1) / 2.0, (sensor.height - 1) / 2.0
        # Drawn only when on, so the recipes without it keep their crops.
        mirrored = self.mirror > 0 and rng.random() < self.mirror
        zoom = rng.uniform(*self.scale)
        angle = math.radians(rng.uniform(-self.rotate_deg, self.rotate_deg))
        dx = rng.uniform(-self.shift, self.shift) * sensor.width
        dy = rng.uniform(-self.shift, self.shift) * sensor.height
        c, s = zoom * math.cos(angle), zoom * math.sin(angle)
        u, v = x.astype(np.float32) - cx, y.astype(np.float32) - cy
        if mirrored:
            u = -u
        new_x = np.rint(c * u - s * v + cx + dx).astype(np.int64)
        new_y = np.rint(s * u + c * v + cy + dy).astype(np.int64)
        return new_x, new_y

    def _noise(
        self, sensor: SensorSize, t0_us: int, duration_us: int, rng: np.random.Generator
    ) -> np.ndarray:
        rate = rng.uniform(0.0, self.noise_hz) * sensor.width * sensor.height
        count = int(rng.poisson(rate * duration_us / 1e6))
        noise = empty_events(count)
        noise["timestamp"] = t0_us + rng.integers(0, max(duration_us, 1), count)
        noise["x"] = rng.integers(0, sensor.width, count)
        noise["y"] = rng.integers(0, sensor.height, count)
        noise["polarity"] = rng.integers(0, 2, count)
        return noise
