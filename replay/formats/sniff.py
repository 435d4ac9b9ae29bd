"""What an event file is, from its first bytes: the format detection's evidence.

Content before name, because files get renamed (an N-MNIST sample under its
original ``.bs2`` name, a ``.aedat4`` saved as ``.bin``), in this order:

1. magic bytes: ``#!AER-DAT2.0`` / ``3.x`` / ``4.0`` (AEDAT), the zip magic of a
   ``.npz`` whose members are DVS_Sign's arrays (``t_us``, ``x``, ``y``, ``p``),
   HDF5's ``\\x89HDF\\r\\n\\x1a\\n``, ``#ROSBAG``, Event Stream's ``Event Stream``;
   Prophesee's ``%`` text header: ``% Data file containing ...`` (DAT) or a
   ``% evt 2.0`` / ``% format EVT3`` line (RAW);
2. the extension, where a format has no magic (N-MNIST ``.bin`` / ``.bs2``) or
   its reader names the problem best (a ``.npz`` that is no zip);
3. a file without extension whose bytes are N-MNIST records: a whole number of
   5-byte records whose first ones (up to ``NMNIST_PROBE_RECORDS``) lie inside
   34x34 with timestamps rising.

``sniff_format`` names every format it recognises, read here or not;
``OTHER_FORMATS`` describes those no module here reads, so that the error can
name them. A reader for one of them is added by giving it an entry in
``replay.formats.FORMAT_NAMES`` (which is consulted first) and a branch in the
dispatch.
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import numpy as np

from core.events import FormatError
from replay.formats.aedat_header import MAGIC as AEDAT_MAGIC
from replay.formats.aedat_header import aedat_version

HEAD_BYTES = 8192  # enough for every magic and a Prophesee text header
ZIP_MAGICS = (b"PK\x03\x04", b"PK\x05\x06")
HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
ROSBAG_MAGIC = b"#ROSBAG"
EVENT_STREAM_MAGIC = b"Event Stream"
DVS_SIGN_MEMBERS = frozenset(f"{name}.npy" for name in ("t_us", "x", "y", "p"))
NMNIST_SUFFIXES = (".bin", ".bs2")
NMNIST_PROBE_RECORDS = 1000
NMNIST_SIZE = 34  # the 34x34 crop: a record's x and y bytes are below this

# Known by their extension when no content says otherwise.
EXTENSION_FORMATS = {
    ".aedat4": "aedat4",
    ".aedat3": "aedat3",
    ".npz": "dvs_sign",
    **{suffix: "nmnist" for suffix in NMNIST_SUFFIXES},
}
# Recognised here, read by no module of replay.formats: name -> what it is.
OTHER_FORMATS = {
    "hdf5": "an HDF5 file",
    "rosbag": "a ROS bag",
}
_AEDAT_MAJORS = (("4.", "aedat4"), ("3.", "aedat3"), ("2.", "aedat2"))


def read_head(path: str | os.PathLike) -> tuple[bytes, int]:
    """(the first HEAD_BYTES bytes, the file size)."""
    with open(path, "rb") as f:
        return f.read(HEAD_BYTES), os.fstat(f.fileno()).st_size


def sniff_format(path: str | os.PathLike) -> str | None:
    """The format the file's content (or, failing that, its name) shows, or
    None. FormatError for an AEDAT version no reader knows and for a zip that
    holds other things than a DVS_Sign sample."""
    head, size = read_head(path)
    suffix = Path(path).suffix.lower()
    return (
        _by_magic(str(path), head)
        or (_zip_format(path) if head.startswith(ZIP_MAGICS) else None)
        or _prophesee_format(head, suffix)
        or EXTENSION_FORMATS.get(suffix)
        or ("nmnist" if not suffix and looks_like_nmnist(head, size) else None)
    )


def _by_magic(source: str, head: bytes) -> str | None:
    if head.startswith(AEDAT_MAGIC):
        version = aedat_version(head)
        for major, name in _AEDAT_MAJORS:
            if version.startswith(major):
                return name
        raise FormatError(source, "byte 0", f"AEDAT version {version!r} is not supported")
    for magic, name in (
        (HDF5_MAGIC, "hdf5"),
        (ROSBAG_MAGIC, "rosbag"),
        (EVENT_STREAM_MAGIC, "event_stream"),
    ):
        if head.startswith(magic):
            return name
    return None


def _zip_format(path: str | os.PathLike) -> str:
    """ "dvs_sign" for a zip holding DVS_Sign's arrays, or one too damaged to list
    (its reader names the damage); FormatError for any other zip."""
    try:
        with zipfile.ZipFile(path) as archive:
            members = set(archive.namelist())
    except (zipfile.BadZipFile, OSError, ValueError):
        return "dvs_sign"
    if not members or members & DVS_SIGN_MEMBERS:
        return "dvs_sign"
    listed = ", ".join(sorted(members)[:5]) + (", ..." if len(members) > 5 else "")
    raise FormatError(
        str(path),
        "byte 0",
        f"a zip archive ({listed}) but not a DVS_Sign sample: expected the arrays "
        "t_us, x, y, p (.npy members)",
    )


def _prophesee_format(head: bytes, suffix: str) -> str | None:
    """Metavision's text header: ``%`` lines before the binary data."""
    if not head.startswith(b"%"):
        return None
    for line in head.split(b"\n"):
        if not line.startswith(b"%"):
            break
        text = line[1:].strip().lower()
        if text.startswith(b"data file containing"):
            return "prophesee_dat"
        if text.startswith((b"evt ", b"format evt")):
            return "prophesee_raw"
    return {".raw": "prophesee_raw", ".dat": "prophesee_dat"}.get(suffix)


def looks_like_nmnist(head: bytes, size: int) -> bool:
    """Whether a header-less file reads as N-MNIST records: a whole number of
    5-byte records, the first ones inside 34x34 with timestamps rising (not
    all equal, so a file of zeros is no sample)."""
    count = min(len(head), size) // 5
    if size == 0 or size % 5 or count == 0:
        return False
    records = np.frombuffer(head, np.uint8, count=min(count, NMNIST_PROBE_RECORDS) * 5)
    records = records.reshape(-1, 5).astype(np.int64)
    timestamps = ((records[:, 2] & 0x7F) << 16) | (records[:, 3] << 8) | records[:, 4]
    inside = bool((records[:, :2] < NMNIST_SIZE).all())
    return inside and bool((np.diff(timestamps) >= 0).all()) and timestamps[-1] > timestamps[0]
