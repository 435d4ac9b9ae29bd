"""Spatio-temporal compression (METHOD.md section 1): events -> T steps of synaptic current.

Being built: offline compression, count-frame baseline, streaming compressor.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from streamer.events import SensorSize


@dataclass(frozen=True)
class CompressionConfig:
    """How a window of events becomes the model's input ``[T, 2, H', W']``.

    ``input_width`` x ``input_height`` is the model's input sensor (after any
    crop/downscale of the recording's sensor); ``spatial_factor`` then sum-pools
    pixels, so ``H' = input_height // spatial_factor``.
    """

    input_width: int
    input_height: int
    spatial_factor: int = 1
    steps: int = 4  # T
    window_us: int = 300_000  # W; one step lasts window_us // steps (the streaming hop)
    tau_s_us: float | None = None  # synaptic time constant; None means one step length
    mode: Literal["stc", "count"] = "stc"

    @property
    def input_sensor(self) -> SensorSize:
        return SensorSize(self.input_width, self.input_height)

    @property
    def step_us(self) -> int:
        return self.window_us // self.steps

    @property
    def output_shape(self) -> tuple[int, int, int]:
        s = self.spatial_factor
        return (2, self.input_height // s, self.input_width // s)
