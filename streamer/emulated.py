"""The built-in digit scene: printed digits moved along N-MNIST's saccades before an
emulated DVS sensor (``core/emulator.py``), with ground-truth labels.

N-MNIST (Orchard et al., "Converting Static Image Datasets to Spiking Neuromorphic
Datasets Using Saccades", Front. Neurosci. 2015) was recorded by an ATIS camera on a
pan-tilt unit facing a monitor that showed each MNIST digit; the unit made three
saccades of about 100 ms each along an isosceles triangle and came back to where it
started, and the recording was cropped to 34x34 pixels. ``EmulatedDigitsSource`` plays
that scene without a camera or a data set:

* **Digits.** 0-9 rendered with Pillow in the DejaVu fonts that ship with matplotlib,
  white on a dark background (see Contrast), normalised the way MNIST was: the glyph
  scaled so that its larger side is 20 px, then placed in a 28x28 box with its centre
  of mass at the box's centre. Rendered at ``SUPERSAMPLE`` times the size and averaged
  down, so that the strokes have grey, anti-aliased edges like the scanned MNIST digits.
* **Path.** The image moves on the sensor along the triangle (0, 0) -> (2.5, 4.5) ->
  (5, 0) -> (0, 0) pixels (x right, y down): down-right, up-right, then back left, one
  saccade per 100 ms, each with a raised-cosine velocity profile (still at both ends,
  as the pan-tilt unit stops between saccades). The paper's exact angles were not at
  hand here, so the directions, extents and pauses are those measured on the 30 real
  samples in ``stcsnn/demo_data``: the event centroid moves about +2/+4, +3/-4 and
  -4/0 px (x/y) in the three thirds, and the event rate dips near 100 and 200 ms. The
  path is centred in the 34x34 sensor.
* **Smooth motion.** Each 1 ms frame shifts the 28x28 image by its sub-pixel position
  with bilinear weights (the image splatted onto its four nearest integer offsets), so
  the emulated pixels see intensity change gradually, not in whole-pixel jumps.
* **Contrast.** A monitor's black is not black, and the ATIS's thresholds are not
  the emulator's defaults: with a perfect black the default pixel fires about 2.8
  times as many events as the real recordings hold. The background is therefore
  ``BACKGROUND`` = 0.3 of white, calibrated on one statistic only: the mean events
  per sample of the 30 real samples in ``stcsnn/demo_data`` (4,281; the scene gives
  about 4,300 in DejaVuSans). Not calibrated on any model's accuracy.
* **Variety.** Printed digits do not vary like handwriting; each sample's path starts
  at a random offset of up to ``JITTER_PX`` = 1 px in x and y (our choice, not the
  paper's), and each sample's emulator has its own seed (mismatch, leak phases), so
  that repeats of a digit in a font are not identical streams.
* **Samples.** Each sample is its own 300 ms recording, as in N-MNIST (the digit
  changed on the monitor between recordings, which the data set does not hold): a
  fresh emulator, seeded from the scene's seed and the sample's number, starts on
  the sample's first frame. Samples follow each other back to back, each announced by a
  ``Labels`` message (label = the digit, span = the sample) before its events, in
  1 ms chunks. The order is shuffled with the seed in blocks that hold every digit in
  every chosen font once, so any block's worth of samples is balanced.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from core.emulator import DvsEmulator, DvsParams
from core.events import SensorSize
from core.labels import LabelSegment
from core.source import (
    DEFAULT_CHUNK_US,
    DEFAULT_MAX_CHUNK_EVENTS,
    Labels,
    SourceEnd,
    SourceItem,
    TimeChunker,
)

EMULATED_DIGITS_SENSOR = SensorSize(34, 34)  # N-MNIST's crop of the ATIS sensor
DIGIT_FONTS = ("DejaVuSans", "DejaVuSerif", "DejaVuSansMono", "DejaVuSans-Bold")
BOX_PX = 28  # MNIST's image size
DIGIT_PX = 20  # MNIST's digits fit a 20x20 box inside it
SUPERSAMPLE = 8  # glyphs are drawn this many times larger, then averaged down
FRAME_US = 1000  # one emulator frame per millisecond
SACCADE_US = 100_000
# The triangle's corners in pixels (x right, y down), visited in order and back to the first.
SACCADE_CORNERS = ((0.0, 0.0), (2.5, 4.5), (5.0, 0.0))
SAMPLE_US = SACCADE_US * len(SACCADE_CORNERS)
# The monitor's black relative to its white: 0.3 gives the real samples' event count
# (about 4,300 events per sample, against 11,900 for a perfect black; module docstring).
BACKGROUND = 0.3
JITTER_PX = 1.0  # each sample's path starts up to this far off centre, in x and in y


def font_path(name: str) -> Path:
    """The TrueType file of a DejaVu font that matplotlib ships (``DejaVuSans`` ...)."""
    import matplotlib

    path = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / f"{name}.ttf"
    if not path.is_file():
        raise ValueError(
            f"no font {name!r} in matplotlib's fonts (have e.g. {', '.join(DIGIT_FONTS)})"
        )
    return path


@functools.lru_cache(maxsize=64)
def digit_image(digit: int, font: str) -> np.ndarray:
    """A 28x28 float image in [0, 1] of ``digit`` in ``font``, normalised like MNIST:
    larger side 20 px, centre of mass at the box's centre."""
    from PIL import Image, ImageDraw, ImageFont

    scale = SUPERSAMPLE
    face = ImageFont.truetype(str(font_path(font)), size=DIGIT_PX * scale * 2)
    canvas = Image.new("L", (DIGIT_PX * scale * 4, DIGIT_PX * scale * 4), 0)
    ImageDraw.Draw(canvas).text((DIGIT_PX * scale, 0), str(digit), fill=255, font=face)
    glyph = canvas.crop(canvas.getbbox())
    fit = DIGIT_PX * scale / max(glyph.size)
    glyph = glyph.resize(
        (max(1, round(glyph.width * fit)), max(1, round(glyph.height * fit))),
        Image.Resampling.LANCZOS,
    )
    large = np.asarray(glyph, dtype=np.float64) / 255.0
    return _centre_of_mass_box(large, scale)


def _centre_of_mass_box(glyph: np.ndarray, scale: int) -> np.ndarray:
    """``glyph`` (drawn ``scale`` times larger) pasted in a 28x28 box (same scale) with
    its centre of mass at the centre, then averaged down to 28x28."""
    side = BOX_PX * scale
    rows, cols = np.indices(glyph.shape)
    mass = glyph.sum()
    top = round(side / 2 - (rows * glyph).sum() / mass)
    left = round(side / 2 - (cols * glyph).sum() / mass)
    top = min(max(top, 0), side - glyph.shape[0])  # the 20 px glyph always fits
    left = min(max(left, 0), side - glyph.shape[1])
    large = np.zeros((side, side))
    large[top : top + glyph.shape[0], left : left + glyph.shape[1]] = glyph
    return large.reshape(BOX_PX, scale, BOX_PX, scale).mean(axis=(1, 3)).clip(0.0, 1.0)


def saccade_offset(t_us: float) -> tuple[float, float]:
    """The image's (x, y) offset in pixels at ``t_us`` into a sample (0..SAMPLE_US)."""
    corners = SACCADE_CORNERS + SACCADE_CORNERS[:1]
    k = min(int(t_us // SACCADE_US), len(SACCADE_CORNERS) - 1)
    phase = (t_us - k * SACCADE_US) / SACCADE_US
    progress = (1 - np.cos(np.pi * min(max(phase, 0.0), 1.0))) / 2  # raised cosine
    (x0, y0), (x1, y1) = corners[k], corners[k + 1]
    return x0 + (x1 - x0) * progress, y0 + (y1 - y0) * progress


def path_origin(sensor: SensorSize) -> tuple[float, float]:
    """Where the box's top-left corner starts so that the whole path is centred."""
    xs, ys = zip(*SACCADE_CORNERS, strict=True)
    return (
        (sensor.width - BOX_PX - (max(xs) - min(xs))) / 2 - min(xs),
        (sensor.height - BOX_PX - (max(ys) - min(ys))) / 2 - min(ys),
    )


def place(
    image: np.ndarray, sensor: SensorSize, x: float, y: float, background: float = 0.0
) -> np.ndarray:
    """A sensor-sized frame of ``background`` with ``image``'s top-left corner at (x, y),
    sub-pixel positions by bilinear weights; what falls outside the sensor is cut off."""
    height, width = image.shape
    frame = np.full((sensor.height + height + 2, sensor.width + width + 2), background)
    image = image - background  # splat the difference: the weights sum to 1
    ix, iy = int(np.floor(x)), int(np.floor(y))
    fx, fy = x - ix, y - iy
    # Work in a frame padded by the image's size on the top-left, then crop.
    for dy, wy in ((0, 1 - fy), (1, fy)):
        for dx, wx in ((0, 1 - fx), (1, fx)):
            top, left = iy + dy + height, ix + dx + width
            if 0 <= top and top + height <= frame.shape[0] and 0 <= left:
                if left + width <= frame.shape[1]:
                    frame[top : top + height, left : left + width] += wy * wx * image
    sensor_frame = frame[height : height + sensor.height, width : width + sensor.width]
    return sensor_frame.clip(0.0, 1.0)


@dataclass(frozen=True)
class DigitSample:
    digit: int
    font: str
    index: int = 0  # its place in the stream: seeds its emulator and its jitter


class EmulatedDigitsSource:
    """Printed digits on N-MNIST's saccade path before an emulated 34x34 DVS (see the
    module docstring). ``samples`` digits, or endlessly when None."""

    live = False

    def __init__(
        self,
        *,
        samples: int | None = None,
        fonts: Sequence[str] = ("DejaVuSans",),
        seed: int = 0,
        params: DvsParams | None = None,
        background: float = BACKGROUND,
        jitter_px: float = JITTER_PX,
        chunk_us: int = DEFAULT_CHUNK_US,
        max_chunk_events: int = DEFAULT_MAX_CHUNK_EVENTS,
    ):
        if samples is not None and samples <= 0:
            raise ValueError(f"samples must be positive, got {samples}")
        if not fonts:
            raise ValueError("at least one font is needed")
        for font in fonts:
            font_path(font)  # a missing font fails here, before anything plays
        self.samples = samples
        self.fonts = tuple(fonts)
        self.seed = seed
        self.params = params
        if not 0.0 <= background < 1.0:
            raise ValueError(f"background must be in [0, 1), got {background}")
        self.background = float(background)
        self.jitter_px = float(jitter_px)
        self.chunk_us = int(chunk_us)
        self.max_chunk_events = max_chunk_events
        self.sensor = EMULATED_DIGITS_SENSOR
        count = "endless" if samples is None else f"{samples}"
        self.description = (
            f"emulated digits ({count} samples, {', '.join(self.fonts)}; {self.sensor})"
        )
        self.samples_played = 0

    def order(self) -> Iterator[DigitSample]:
        """The samples in play order: shuffled blocks of every digit in every font."""
        rng = np.random.default_rng(self.seed)
        block = [(d, f) for f in self.fonts for d in range(10)]
        played = 0
        while self.samples is None or played < self.samples:
            for index in rng.permutation(len(block)):
                if self.samples is not None and played >= self.samples:
                    return
                yield DigitSample(*block[index], index=played)
                played += 1

    def items(self, stop_event: threading.Event) -> Iterator[SourceItem]:
        start_us = 0
        for sample in self.order():
            if stop_event.is_set():
                return
            yield from self.sample_items(sample, start_us)
            self.samples_played += 1
            start_us += SAMPLE_US + 1  # the last frame's events may fall on its end
        yield SourceEnd(f"emulated digits done: {self.samples_played} sample(s) played")

    def sample_items(self, sample: DigitSample, start_us: int) -> Iterator[SourceItem]:
        """Labels, then the 1 ms chunks of one sample starting at ``start_us``."""
        end_us = start_us + SAMPLE_US + 1
        yield Labels(
            (LabelSegment(sample.digit, start_us, end_us),),
            sample=f"digit {sample.digit} in {sample.font}",
        )
        sample_seed = np.random.SeedSequence([self.seed, sample.index])
        emulator = DvsEmulator(
            *self.sensor, params=self.params, seed=int(sample_seed.generate_state(1)[0])
        )
        image = self.background + (1.0 - self.background) * digit_image(sample.digit, sample.font)
        origin_x, origin_y = path_origin(self.sensor)
        if self.jitter_px > 0:
            shift = np.random.default_rng(sample_seed).uniform(-1, 1, 2) * self.jitter_px
            origin_x, origin_y = origin_x + shift[0], origin_y + shift[1]
        chunker = TimeChunker(self.chunk_us, 0, self.max_chunk_events)
        for t_us in range(0, SAMPLE_US + 1, FRAME_US):
            dx, dy = saccade_offset(t_us)
            frame = place(image, self.sensor, origin_x + dx, origin_y + dy, self.background)
            yield from chunker.push(emulator.push(frame, start_us + t_us))
        yield from chunker.flush()

    def close(self) -> None:
        pass
