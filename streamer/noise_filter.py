"""dv-processing's background-activity noise filter on numpy events, for live input.

Run it on the source sensor, before sensor adaptation (``core/adapt.py``).
"""

from __future__ import annotations

from collections import deque
from datetime import timedelta

import numpy as np

from core.events import EVENT_DTYPE, SensorSize, as_events


class NoiseFilter:
    """dv-processing's ``BackgroundActivityNoiseFilter`` on numpy events.

    An event passes when a neighbouring pixel fired within
    ``background_activity_us`` before it. dv-processing keeps the per-pixel
    state between calls, so feed consecutive chunks of one stream.

    Cost: the filter itself is fast (tens of M events/s), but dv-processing
    2.0.4 has no bulk numpy -> EventStore path, so ``filter`` builds the store
    event by event (a few M events/s here; see benchmarks/results/compress.json,
    ``noise_filter``). Use ``filter_store``
    when the events already come as an ``EventStore`` (a dv camera or network
    stream): that path stays fast.
    """

    def __init__(self, sensor: SensorSize, background_activity_us: int = 2000):
        import dv_processing as dv

        self.sensor = SensorSize(*sensor)
        self.background_activity_us = int(background_activity_us)
        self._filter = dv.noise.BackgroundActivityNoiseFilter(
            (self.sensor.width, self.sensor.height),
            backgroundActivityDuration=timedelta(microseconds=self.background_activity_us),
        )

    def filter_store(self, store) -> np.ndarray:
        """An ``dv.EventStore`` in, the events that pass as EVENT_DTYPE out."""
        self._filter.accept(store)
        out = self._filter.generateEvents().numpy()
        return out if out.dtype == EVENT_DTYPE else as_events(out)

    def filter(self, events: np.ndarray) -> np.ndarray:
        """EVENT_DTYPE in (sorted, in ``sensor``), the events that pass out."""
        events = as_events(events)
        if len(events) == 0:
            return events
        return self.filter_store(to_event_store(events))


def to_event_store(events: np.ndarray):
    """EVENT_DTYPE -> ``dv.EventStore``. dv-processing 2.0.4 has no bulk path,
    so this calls ``push_back`` once per event (3-6 M events/s here)."""
    import dv_processing as dv

    store = dv.EventStore()
    columns = zip(
        events["timestamp"].tolist(),
        events["x"].tolist(),
        events["y"].tolist(),
        (events["polarity"] != 0).tolist(),
        strict=True,
    )
    deque(map(store.push_back, columns), maxlen=0)
    return store
