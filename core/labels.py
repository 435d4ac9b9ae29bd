"""Ground truth in stream time: which class holds over which span of a recording.

One ``LabelSegment`` for every labelled source (DVS128 Gesture label files,
whole-sample labels of N-MNIST / CIFAR10-DVS / DVS_Sign replays, the wire's
``labels`` message): ``label`` is the 0-based class index, ``[start_us,
end_us)`` the span in the stream's event time (µs).
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from typing import NamedTuple


class LabelSegment(NamedTuple):
    """Class ``label`` (0-based) over ``[start_us, end_us)`` of stream time."""

    label: int
    start_us: int
    end_us: int

    @property
    def duration_us(self) -> int:
        return self.end_us - self.start_us


def label_at(segments: Sequence[LabelSegment], t_us: int) -> int | None:
    """The label holding at time ``t_us``, or None where no segment covers it.

    ``segments`` must be sorted by ``start_us`` and must not overlap (as every
    labelled source here delivers them)."""
    k = bisect.bisect_right(segments, t_us, key=lambda segment: segment.start_us) - 1
    if k >= 0 and segments[k].start_us <= t_us < segments[k].end_us:
        return int(segments[k].label)
    return None
