"""Writing DVS_Sign ``.npz`` samples, the inverse of ``dvs_sign.py``.

For tests and conversions (``stcsnn convert``): ``write_dvs_sign`` writes events
that ``read_dvs_sign`` reads back exactly, refusing what the sample's arrays
cannot hold (``t_us`` uint32, ``x``/``y``/``p`` uint8 on the 128x128 sensor)
rather than wrapping it.
"""

from __future__ import annotations

import os

import numpy as np

from core.events import EventValidationError, as_events, validate_events
from replay.formats.dvs_sign import DVS_SIGN_SENSOR

MAX_TIMESTAMP_US = (1 << 32) - 1  # t_us is uint32: about 71 minutes


def write_dvs_sign(path: str | os.PathLike, events: np.ndarray) -> None:
    """Write ``events`` (inside 128x128, sorted, polarity 0/1, timestamps within
    0..2^32-1 µs) as a DVS_Sign sample; EventValidationError naming the event if not."""
    source = str(path)
    events = as_events(events, source)
    validate_events(events, DVS_SIGN_SENSOR, source)
    t = events["timestamp"]
    outside = (t < 0) | (t > MAX_TIMESTAMP_US)
    if outside.any():
        i = int(np.argmax(outside))
        raise EventValidationError(
            source,
            f"event {i}",
            f"timestamp {int(t[i])} µs is outside 0-{MAX_TIMESTAMP_US} (uint32)",
        )
    np.savez(
        path,
        t_us=t.astype(np.uint32),
        x=events["x"].astype(np.uint8),
        y=events["y"].astype(np.uint8),
        p=events["polarity"].astype(np.uint8),
    )
