"""A stream's decimated event-count image for a display, accumulated between sends.

The worker adds every push's adapted events (model input sensor) and sends the
image at most ``preview_hz`` times per second per stream: ``uint8 [2, H, W]``
(polarity OFF, ON; saturating counts) on a grid of at most PREVIEW_MAX_SIDE
pixels a side. A dense stream is sampled (every k-th event), so that it costs the
worker no more than a display needs: at most PREVIEW_MAX_EVENTS events per push
and about PREVIEW_EVENTS_PER_IMAGE per image, the stride set from the events of
the previous image; ``events_per_count`` says by how much. The worker adds
nothing while nobody subscribes to previews (``Outbox.previews_wanted``).
"""

from __future__ import annotations

import math

import numpy as np

PREVIEW_MAX_SIDE = 128
PREVIEW_MAX_EVENTS = 50_000  # per push: more are sampled
PREVIEW_EVENTS_PER_IMAGE = 20_000  # about this many counted per image at a steady rate


def preview_grid(input_height: int, input_width: int) -> tuple[int, tuple[int, int, int]]:
    """(pixels per preview cell, image shape ``(2, H, W)``) for a model input sensor."""
    factor = max(1, math.ceil(max(input_height, input_width) / PREVIEW_MAX_SIDE))
    return factor, (2, -(-input_height // factor), -(-input_width // factor))


class PreviewImage:
    """Counts since the last send, and the stream time they cover."""

    def __init__(self, input_height: int, input_width: int):
        self.factor, shape = preview_grid(input_height, input_width)
        self.counts = np.zeros(shape, dtype=np.int64)
        self.events = 0  # exact, before sampling
        self.stride = 1  # events per count (the largest sampling since the last send)
        self.image_stride = 1  # the sampling the previous image's event count calls for
        self.start_us: int | None = None
        self.sent_s = -math.inf  # time.monotonic() of the last send

    def add(self, adapted: np.ndarray) -> None:
        """Count EVENT_DTYPE events of the model's input sensor."""
        if not len(adapted):
            return
        stride = max(self.image_stride, len(adapted) // PREVIEW_MAX_EVENTS)
        sample = adapted[::stride]
        _, height, width = self.counts.shape
        cells = (
            sample["polarity"].astype(np.int64) * (height * width)
            + (sample["y"] // self.factor).astype(np.int64) * width
            + (sample["x"] // self.factor).astype(np.int64)
        )
        self.counts += np.bincount(cells, minlength=self.counts.size).reshape(self.counts.shape)
        self.events += len(adapted)
        self.stride = max(self.stride, stride)
        if self.start_us is None:
            self.start_us = int(adapted["timestamp"][0])

    def due(self, now_s: float, preview_hz: float) -> bool:
        return self.events > 0 and now_s - self.sent_s >= 1.0 / preview_hz

    def take(self, now_s: float) -> tuple[np.ndarray, int, int, int]:
        """(``uint8 [2, H, W]`` image, start µs, events, events per count), and start over."""
        image = np.minimum(self.counts, 255).astype(np.uint8)
        taken = (image, int(self.start_us), self.events, self.stride)
        self.image_stride = max(1, self.events // PREVIEW_EVENTS_PER_IMAGE)
        self.counts[:] = 0
        self.events = 0
        self.stride = 1
        self.start_us = None
        self.sent_s = now_s
        return taken
