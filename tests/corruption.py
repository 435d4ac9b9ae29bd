"""What a reader may do with a damaged file, checked the same way for every format.

Every damaged file must either parse into events that keep the readers'
promises (EVENT_DTYPE, inside the sensor, timestamps non-decreasing, polarity
0 or 1) or raise FormatError / EventValidationError naming the file. Any
other exception is a bug.
"""

from __future__ import annotations

import numpy as np

from core.events import EVENT_DTYPE, EventValidationError, FormatError

EXPECTED_ERRORS = (FormatError, EventValidationError)


def check_outcome(read, path, case: str) -> str:
    """``read(path)``'s outcome, "ok" or the error class name; fails the test
    (naming ``case``) on anything a reader must not do."""
    try:
        recording = read(path)
    except EXPECTED_ERRORS as error:
        assert str(path) in str(error), f"{case}: error does not name the file: {error}"
        return type(error).__name__
    except Exception as error:  # noqa: BLE001 - the point of the test
        raise AssertionError(f"{case}: unexpected {type(error).__name__}: {error}") from error
    events = recording.events
    assert events.dtype == EVENT_DTYPE, case
    if len(events):
        assert events["x"].min() >= 0 and events["x"].max() < recording.sensor.width, case
        assert events["y"].min() >= 0 and events["y"].max() < recording.sensor.height, case
        assert (np.diff(events["timestamp"]) >= 0).all(), case
        assert set(np.unique(events["polarity"]).tolist()) <= {0, 1}, case
    return "ok"
