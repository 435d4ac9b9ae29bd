import dv_processing as dv
import numpy as np
import pytest

from core.events import (
    EVENT_DTYPE,
    EventValidationError,
    SensorSize,
    as_events,
    make_events,
    validate_events,
)


def test_dtype_matches_dv_processing():
    store = dv.EventStore()
    store.push_back(5, 1, 2, True)
    assert store.numpy().dtype == EVENT_DTYPE
    assert EVENT_DTYPE.itemsize == 16


def test_make_events_roundtrips_through_dv_store():
    ev = make_events([1, 2, 3], [0, 5, 127], [1, 2, 3], [1, 0, 1])
    store = dv.EventStore()
    for e in ev:
        store.push_back(int(e["timestamp"]), int(e["x"]), int(e["y"]), bool(e["polarity"]))
    np.testing.assert_array_equal(store.numpy(), ev)


def test_validate_names_source_and_index_for_out_of_sensor():
    ev = make_events([1, 2, 3], [0, 34, 1], [0, 0, 0], [0, 1, 0])
    with pytest.raises(
        EventValidationError, match=r"cam\.bin: event 11: x=34, y=0 is outside the 34x34"
    ):
        validate_events(ev, SensorSize(34, 34), source="cam.bin", first_index=10)


def test_validate_names_backwards_timestamp():
    ev = make_events([1, 5, 4], [0, 0, 0], [0, 0, 0], [0, 1, 0])
    with pytest.raises(EventValidationError, match="event 2: timestamp 4 µs goes backwards"):
        validate_events(ev, SensorSize(34, 34), source="x")
    ok = make_events([7, 8], [0, 0], [0, 0], [0, 1])
    with pytest.raises(EventValidationError, match="event 0"):
        validate_events(ok, SensorSize(34, 34), previous_timestamp=9)
    validate_events(ok, SensorSize(34, 34), previous_timestamp=7)


def test_as_events_converts_other_layouts():
    packed = np.zeros(2, dtype=[("timestamp", "<u4"), ("x", "u1"), ("y", "u1"), ("polarity", "?")])
    packed["timestamp"] = [3, 4]
    assert as_events(packed).dtype == EVENT_DTYPE
    with pytest.raises(EventValidationError, match="expected fields"):
        as_events(np.zeros(2, dtype=[("t", "<i8")]))


def test_concat_and_copy_keep_the_exact_layout():
    from core.events import concat_events, copy_events

    a = make_events([1, 2], [0, 1], [0, 1], [0, 1])
    b = make_events([3], [2], [2], [1])
    joined = concat_events([a, b[0:1]])
    assert joined.dtype == EVENT_DTYPE
    assert joined.tobytes() == a.tobytes() + b.tobytes()
    assert copy_events(joined).tobytes() == joined.tobytes()
    assert len(concat_events([])) == 0
