"""Sensor adaptation: events of any sensor -> the model's input sensor.

A model is trained on one input size (34x34 N-MNIST, 128x128 DVS128 Gesture);
live cameras and other recordings have others (DAVIS346 346x260, DVXplorer
640x480 or 320x240). The rule, chosen so that the model sees as much of the
scene as an integer scale allows, with no resampling of pixels:

1. scale: ``f = max(1, round(min(W_src / W_tgt, H_src / H_tgt)))`` (halves
   round up); source pixel ``(x, y)`` goes to ``(x // f, y // f)`` of a scaled
   sensor ``(W_src // f) x (H_src // f)`` (a partial block of pixels at the
   right or bottom edge is dropped);
2. centre: the scaled sensor is centred on the target, offset
   ``((W_scaled - W_tgt) // 2, (H_scaled - H_tgt) // 2)``; where it is larger
   the edges are cropped (their events dropped), where it is smaller the
   target keeps an empty border.

Rounding instead of flooring ``f`` trades a thin empty border for much more
field of view: 320x240 -> 128x128 with ``f = 1`` would keep only the central
128x128 (40% of the width), with ``f = 2`` it keeps 256x240 and leaves 4 empty
rows top and bottom. Examples (target 128x128):

========  ===  ========  =============================================
source    f    scaled    result
========  ===  ========  =============================================
346x260   2    173x130   crop 22 | 23 columns, 1 | 1 rows
320x240   2    160x120   crop 16 | 16 columns, empty 4 | 4 rows
640x480   4    160x120   crop 16 | 16 columns, empty 4 | 4 rows
128x128   1    128x128   identity
========  ===  ========  =============================================

and 34x34 -> 34x34 is the identity. Pass ``factor`` to override step 1.

A noise filter for live input (``streamer/noise_filter.py``) runs on the
source sensor, before adaptation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from core.events import SensorSize, as_events


def scale_factor(source: SensorSize, target: SensorSize) -> int:
    """The integer downscale of the rule: the ratio of the tighter dimension, rounded."""
    ratio = min(source.width / target.width, source.height / target.height)
    return max(1, math.floor(ratio + 0.5))


@dataclass(frozen=True)
class SensorAdapter:
    """Maps events of ``source`` onto ``target`` by the rule above (or an explicit ``factor``)."""

    source: SensorSize
    target: SensorSize
    factor: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "source", SensorSize(*self.source))
        object.__setattr__(self, "target", SensorSize(*self.target))
        for name in ("source", "target"):
            size = getattr(self, name)
            if size.width < 1 or size.height < 1:
                raise ValueError(f"SensorAdapter: {name} sensor {size} has no pixels")
        if self.factor is None:
            object.__setattr__(self, "factor", scale_factor(self.source, self.target))
        elif self.factor < 1 or self.factor > min(self.source):
            raise ValueError(f"SensorAdapter: factor {self.factor} does not fit {self.source}")

    @property
    def scaled(self) -> SensorSize:
        """The source sensor after the integer downscale."""
        return SensorSize(self.source.width // self.factor, self.source.height // self.factor)

    @property
    def offset(self) -> tuple[int, int]:
        """``(dx, dy)`` subtracted from scaled coordinates: > 0 crops, < 0 pads."""
        scaled = self.scaled
        return ((scaled.width - self.target.width) // 2, (scaled.height - self.target.height) // 2)

    @property
    def coverage(self) -> float:
        """The fraction of the target's pixels that source pixels land on (1.0 when the
        source fills it; 34x34 into 128x128: 0.07, the rest an empty border)."""
        scaled = self.scaled
        width = min(scaled.width, self.target.width)
        height = min(scaled.height, self.target.height)
        return width * height / (self.target.width * self.target.height)

    @property
    def is_identity(self) -> bool:
        return self.factor == 1 and self.source == self.target

    def source_window(self) -> tuple[int, int, int, int]:
        """``(x0, y0, x1, y1)``: the source pixels that land in the target (x0 <= x < x1)."""
        f = self.factor
        dx, dy = self.offset
        x0 = max(dx, 0) * f
        y0 = max(dy, 0) * f
        x1 = min(dx + self.target.width, self.scaled.width) * f
        y1 = min(dy + self.target.height, self.scaled.height) * f
        return (x0, y0, x1, y1)

    def adapt(self, events: np.ndarray) -> np.ndarray:
        """Events in ``source`` -> EVENT_DTYPE events in ``target``; events that
        fall outside the target (cropped edges, partial pixel blocks, or outside
        the source sensor) are dropped. Order is kept. The identity returns its
        input itself when nothing is dropped, otherwise a new array."""
        events = as_events(events)
        if self.is_identity:
            if not len(events):
                return events
            # Two reductions decide the common case (nothing outside); a negative
            # coordinate read as uint16 is huge.
            x = events["x"].view(np.uint16)
            y = events["y"].view(np.uint16)
            if int(x.max()) < self.target.width and int(y.max()) < self.target.height:
                return events
            inside = (x < self.target.width) & (y < self.target.height)
            return events[inside]
        x0, y0, x1, y1 = self.source_window()
        x = events["x"]
        y = events["y"]
        inside = (x >= x0) & (x < x1) & (y >= y0) & (y < y1)
        kept = events[inside]  # a copy
        dx, dy = self.offset
        f = self.factor
        kept["x"] = kept["x"] // f - dx
        kept["y"] = kept["y"] // f - dy
        return kept

    __call__ = adapt
