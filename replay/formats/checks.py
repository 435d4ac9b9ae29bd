"""The checks the AEDAT 2.0 and 3.1 decoders make of each block of events.

Both decode a file block by block and promise what every reader promises
(events inside the sensor, timestamps never going backwards); their errors
name the file, the event's index among those yielded and the byte it was
decoded from, which only the decoder knows (``byte_of``: index in the block
-> file offset).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from core.events import EventValidationError, SensorSize, find_backwards


def inside_sensor(
    x: np.ndarray,
    y: np.ndarray,
    sensor: SensorSize,
    on_out_of_sensor: str,
    source: str,
    first_index: int,
    byte_of: Callable[[int], int],
) -> np.ndarray | None:
    """None when every (x, y) lies inside ``sensor``. Else, with
    ``on_out_of_sensor="skip"``, the indices of those that do; with ``"error"``,
    EventValidationError naming the first that does not (event ``first_index + i``)."""
    outside = (x >= sensor.width) | (y >= sensor.height)
    if x.dtype.kind == "i":  # signed coordinates (DAVIS, flipped by the chip's size)
        outside |= (x < 0) | (y < 0)
    if not outside.any():
        return None
    if on_out_of_sensor == "error":
        i = int(np.argmax(outside))
        raise EventValidationError(
            source,
            f"event {first_index + i}",
            f"x={int(x[i])}, y={int(y[i])} is outside the {sensor} sensor "
            f"(byte {byte_of(i)}; on_out_of_sensor='skip' drops such events)",
        )
    return np.flatnonzero(~outside)


def check_order(
    events: np.ndarray,
    previous_us: int | None,
    source: str,
    first_index: int,
    byte_of: Callable[[int], int],
) -> None:
    """EventValidationError where a timestamp goes backwards, within ``events``
    or from ``previous_us`` (the last timestamp of the block before)."""
    i = find_backwards(events, previous_us)
    if i >= 0:
        t = events["timestamp"]
        before = previous_us if i == 0 else int(t[i - 1])
        raise EventValidationError(
            source,
            f"event {first_index + i}",
            f"timestamp {int(t[i])} µs goes backwards (previous {before} µs; byte {byte_of(i)})",
        )
