"""The cameras an AEDAT 2.0 file can come from, named by its ``# AEChip:`` line.

jAER writes the Java class of the chip it recorded with, e.g.
``# AEChip: ch.unizh.ini.jaer.chip.retina.DVS128`` or
``# AEChip: eu.seebetter.ini.chips.davis.DAVIS240C``. The class decides how
the 32-bit addresses are read (``aedat2.py``): DVS128 addresses (16 bits) or
DAVIS addresses (DVS events beside APS samples and IMU words). We match the
class's simple name (after the last dot) without case, as AedatTools'
``ImportAedatHeaders.m`` does.

Names: jAER's classes in ``ch.unizh.ini.jaer.chip.retina`` (``DVS128``,
``Tmpdiff128``) and ``eu.seebetter.ini.chips.davis`` (``DAVIS240A/B/C``,
``DVS240`` on ``DAVIS240BaseCamera``, 240x180; ``Davis346A``, ``Davis346B``,
``Davis346BColor``, ``Davis346blue``, ``Davis346red``, ``Davis346redColor``,
``Davis346cBSI``, ``Davis346mini`` on ``Davis346BaseCamera``, 346x260; all of
them decode DVS events with ``DavisBaseCamera``'s extractor, the colour ones
with the same x/y/polarity bits), and the aliases AedatTools accepts for the
same sensors (``ImportAedatBasicSourceName.m``: ``sbret10/20/21`` =
DAVIS240A/B/C, ``davis346amono``, ``davis346brgb``, ``davis346bsi`` ...; sizes
from its ``ImportAedatDeviceAddressSpace.m``). Chips whose DVS pixels do not
map one to one onto these addresses (``DavisRGBW640``: one DVS pixel per four
APS pixels) or that were not checked (DAVIS128/208/640, ``Davis346Zynq``) are
refused by name rather than guessed.
"""

from __future__ import annotations

from dataclasses import dataclass

from core.events import FormatError, SensorSize

DVS128_LAYOUT = "dvs128"
DAVIS_LAYOUT = "davis"

DVS128_SENSOR = SensorSize(128, 128)
DAVIS240_SENSOR = SensorSize(240, 180)
DAVIS346_SENSOR = SensorSize(346, 260)

AECHIP_PREFIX = "AEChip:"

_DVS128_NAMES = ("dvs128", "tmpdiff128")
_DAVIS240_NAMES = (
    *("davis240", "davis240a", "davis240b", "davis240c", "dvs240"),
    *("sbret10", "sbret20", "sbret21"),  # the DAVIS240A/B/C chips (AedatTools)
)
_DAVIS346_NAMES = (
    *("davis346a", "davis346b", "davis346bcolor", "davis346blue", "davis346red"),
    *("davis346redcolor", "davis346cbsi", "davis346mini"),
    # AedatTools' names for the same sensor
    *("davis346", "davis346amono", "davis346argb", "davis346bmono", "davis346brgb"),
    *("davis346bsi", "davis346mono", "davis346rgb"),
)
# simple class name, lower case -> (address layout, sensor)
CHIPS: dict[str, tuple[str, SensorSize]] = {
    **{name: (DVS128_LAYOUT, DVS128_SENSOR) for name in _DVS128_NAMES},
    **{name: (DAVIS_LAYOUT, DAVIS240_SENSOR) for name in _DAVIS240_NAMES},
    **{name: (DAVIS_LAYOUT, DAVIS346_SENSOR) for name in _DAVIS346_NAMES},
}
KNOWN_CHIPS = (
    "DVS128, Tmpdiff128 (128x128); DAVIS240, DAVIS240A/B/C, DVS240 (240x180); "
    "Davis346A/B, Davis346red/blue, Davis346cBSI, Davis346mini and their Color "
    "variants (346x260)"
)


@dataclass(frozen=True)
class JaerChip:
    """The camera of an AEDAT 2.0 file, as its header names it."""

    name: str  # as written after "AEChip:"; "" when the header has no such line
    layout: str  # DVS128_LAYOUT or DAVIS_LAYOUT
    sensor: SensorSize

    @property
    def description(self) -> str:
        return self.name or "no '# AEChip:' line (read as DVS128)"


def chip_from_header(source: str, lines: list[str], line_starts: list[int]) -> JaerChip:
    """The chip the header's ``# AEChip:`` line names; DVS128 without one (files
    written before jAER named its chips, and CIFAR10-DVS conversions). An
    unknown chip is a FormatError naming it and the byte of its line."""
    for line, start in zip(lines, line_starts, strict=True):
        text = line.lstrip("#").strip()
        if not text.startswith(AECHIP_PREFIX):
            continue
        name = text[len(AECHIP_PREFIX) :].strip()
        known = CHIPS.get(name.rsplit(".", 1)[-1].lower())
        if known is None:
            raise FormatError(
                source,
                f"byte {start}",
                f"AEChip {name[:80]!r} is not a camera this AEDAT 2.0 reader knows; "
                f"known: {KNOWN_CHIPS}",
            )
        return JaerChip(name, *known)
    return JaerChip("", DVS128_LAYOUT, DVS128_SENSOR)
