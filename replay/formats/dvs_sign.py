"""DVS_Sign samples (Chen et al. 2023): one ``.npz`` file per sample.

A sample is a numpy ``.npz`` (a zip of ``.npy`` members) holding four 1-D arrays
of equal length: ``t_us`` (uint32, sorted), ``x`` and ``y`` (uint8, 128x128
sensor) and ``p`` (uint8, 0/1). The events were converted from video, so the
timestamps fall on a 1/30 s frame grid (see the data README).

Why not plain ``np.load``: it trusts each member's ``.npy`` header and would
allocate whatever shape a corrupt header claims. Here the members' declared
sizes are checked before anything is inflated: each against ``MAX_MEMBER_BYTES``,
all together against ``MAX_TOTAL_BYTES`` and against the file's own size times
``MAX_INFLATE_RATIO`` (a few hundred KB cannot honestly hold 100 M events: real
samples inflate at most ~4x), and each header against its member's size; zip's
own CRC check catches corrupt compressed data. Whatever goes wrong is a
``FormatError`` naming the file.
Errors name the file and the byte offset of the member (or the event index).
"""

from __future__ import annotations

import os
import tokenize
import zipfile
import zlib

import numpy as np

from core.events import (
    EventValidationError,
    FormatError,
    Recording,
    SensorSize,
    find_backwards,
    make_events,
)

DVS_SIGN_SENSOR = SensorSize(128, 128)
ARRAY_NAMES = ("t_us", "x", "y", "p")
ZIP_MAGIC = b"PK\x03\x04"
EMPTY_ZIP_MAGIC = b"PK\x05\x06"
# Real samples hold at most ~130,000 events (0.5 MB for t_us); 1 GiB per array
# is far beyond any real sample and still a bound.
MAX_MEMBER_BYTES = 1 << 30
MAX_TOTAL_BYTES = 1 << 28  # all four arrays: 256 MiB, ~35 M events
MAX_INFLATE_RATIO = 64  # declared sizes / file size; real samples: at most 4.2
MAX_NPY_HEADER_BYTES = 10_000  # numpy's own default limit
_NPY_HEADER_READERS = {
    (1, 0): np.lib.format.read_array_header_1_0,
    (2, 0): np.lib.format.read_array_header_2_0,
}


def read_dvs_sign(path: str | os.PathLike, *, sensor: SensorSize = DVS_SIGN_SENSOR) -> Recording:
    """One DVS_Sign sample as a Recording (timestamps in µs as stored)."""
    source = str(path)
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        magic = f.read(4)
    if size == 0:
        raise FormatError(source, "byte 0", "empty file; expected a .npz (zip) sample")
    if magic == EMPTY_ZIP_MAGIC:
        raise FormatError(source, "byte 0", f"empty .npz: no arrays (expected {_names()})")
    if magic != ZIP_MAGIC:
        raise FormatError(source, "byte 0", f"not a .npz (zip) file: starts with {magic!r}")
    try:
        with zipfile.ZipFile(path) as archive:
            _check_declared_sizes(source, archive, size)
            arrays = _read_arrays(source, archive)
    except FormatError:
        raise
    except (
        zipfile.BadZipFile,  # no central directory: truncated or damaged
        NotImplementedError,  # a compression method or zip feature Python cannot read
        UnicodeDecodeError,  # a member name that is not text
        ValueError,
        OSError,
        EOFError,
        zlib.error,
    ) as error:
        raise FormatError(source, f"byte {size}", f"damaged .npz (zip): {error}") from None
    return Recording(_to_events(source, arrays, sensor), sensor, source)


def _check_declared_sizes(source: str, archive: zipfile.ZipFile, file_bytes: int) -> None:
    """Refuse a decompression bomb before inflating anything (module docstring)."""
    declared = sum(info.file_size for info in archive.infolist())
    limit = min(MAX_TOTAL_BYTES, max(file_bytes, 1) * MAX_INFLATE_RATIO)
    if declared > limit:
        raise FormatError(
            source,
            "byte 0",
            f"the arrays claim {declared} bytes from a {file_bytes}-byte file "
            f"(limit {limit}: at most {MAX_INFLATE_RATIO}x the file, {MAX_TOTAL_BYTES} in all)",
        )


def _names() -> str:
    return ", ".join(ARRAY_NAMES)


def _read_arrays(source: str, archive: zipfile.ZipFile) -> dict[str, np.ndarray]:
    members = {info.filename: info for info in archive.infolist()}
    found = sorted(name.removesuffix(".npy") for name in members)
    missing = [name for name in ARRAY_NAMES if f"{name}.npy" not in members]
    if missing:
        raise FormatError(
            source,
            "",
            f"array(s) {', '.join(missing)} missing; expected {_names()}, found "
            f"{', '.join(found[:10]) or 'none'}",
        )
    arrays = {}
    for name in ARRAY_NAMES:
        info = members[f"{name}.npy"]
        arrays[name] = _read_member(source, archive, info, name)
    lengths = {name: len(array) for name, array in arrays.items()}
    if len(set(lengths.values())) != 1:
        raise FormatError(
            source,
            "",
            "arrays differ in length: "
            + ", ".join(f"{name} {length}" for name, length in lengths.items()),
        )
    return arrays


def _read_member(
    source: str, archive: zipfile.ZipFile, info: zipfile.ZipInfo, name: str
) -> np.ndarray:
    where = f"byte {info.header_offset}"
    if info.file_size > MAX_MEMBER_BYTES:
        raise FormatError(
            source,
            where,
            f"array {name!r} claims {info.file_size} bytes (limit {MAX_MEMBER_BYTES})",
        )
    try:
        with archive.open(info) as member:
            version = np.lib.format.read_magic(member)
            read_header = _NPY_HEADER_READERS.get(version)
            if read_header is None:
                raise FormatError(source, where, f"array {name!r}: .npy version {version}")
            shape, fortran_order, dtype = read_header(member, max_header_size=MAX_NPY_HEADER_BYTES)
            data_bytes = info.file_size - member.tell()
            if dtype.kind not in "iu" or len(shape) != 1:
                raise FormatError(
                    source,
                    where,
                    f"array {name!r} must be a 1-D integer array, found {dtype} {shape}",
                )
            if shape[0] * dtype.itemsize != data_bytes:
                raise FormatError(
                    source,
                    where,
                    f"array {name!r}: header says {shape[0]} x {dtype} but the member holds "
                    f"{data_bytes} data bytes",
                )
            raw = member.read(data_bytes)
    except FormatError:
        raise
    except (
        ValueError,
        SyntaxError,
        TypeError,
        tokenize.TokenError,
        zipfile.BadZipFile,
        EOFError,
        OSError,
        zlib.error,
    ) as error:
        # ValueError, SyntaxError, TypeError, TokenError: what numpy raises on a bad
        # .npy magic or header; BadZipFile: CRC mismatch or bad member header;
        # EOFError, zlib.error: truncated or corrupt compressed data.
        raise FormatError(source, where, f"array {name!r} unreadable: {error}") from None
    if len(raw) != data_bytes:
        raise FormatError(source, where, f"array {name!r} is truncated")
    return np.frombuffer(raw, dtype=dtype)


def _to_events(source: str, arrays: dict[str, np.ndarray], sensor: SensorSize) -> np.ndarray:
    t, x, y, p = (arrays[name] for name in ARRAY_NAMES)
    rules = (
        ((t < 0) | (t > np.iinfo(np.int64).max), "t_us is negative or too large"),
        (
            (x < 0) | (x >= sensor.width) | (y < 0) | (y >= sensor.height),
            f"outside the {sensor} sensor",
        ),
        ((p != 0) & (p != 1), "p is not 0 or 1"),
    )
    for bad, problem in rules:
        if bad.any():
            i = int(np.argmax(bad))
            raise EventValidationError(
                source,
                f"event {i}",
                f"{problem}: t_us={int(t[i])}, x={int(x[i])}, y={int(y[i])}, p={int(p[i])}",
            )
    events = make_events(t, x, y, p)
    i = find_backwards(events)
    if i >= 0:
        raise EventValidationError(
            source,
            f"event {i}",
            f"t_us {int(t[i])} goes backwards (previous {int(t[i - 1])}); t_us must be sorted",
        )
    return events
