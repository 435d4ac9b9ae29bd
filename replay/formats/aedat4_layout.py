"""The framing of an AEDAT4 file, checked without decompressing anything.

dv-processing loops forever on some corrupt packets (aedat4.py reads in a child
process and stops it when it stalls). Much corruption is visible in the framing
alone, and is caught here in milliseconds before the child starts:

    "#!AER-DAT4.0\\r\\n"  int32 header size  IOHeader (flatbuffer, identifier IOHE)
    packet*: int32 stream id, int32 size, ``size`` bytes of one compressed packet
    the data table (one compressed block) at ``dataTablePosition``, to the end

Every packet must fit in the file and end where the next begins, name a stream
the header's XML declares, and start with its compression's frame magic (LZ4 or
Zstandard, as the IOHeader says). The largest packet bounds how long a healthy
child may take between two packets: ``stall_timeout_s`` scales with it.

IOHeader fields (dv-processing's ``IOHeader`` table): 0 ``compression`` (int32:
0 none, 1 LZ4, 2 LZ4 high, 3 Zstd, 4 Zstd high), 1 ``dataTablePosition`` (int64,
-1 while a file is being written), 2 ``infoNode`` (the streams as XML).
"""

from __future__ import annotations

import os
import re
import struct
from dataclasses import dataclass

from core.events import FormatError

MAGIC = b"#!AER-DAT4.0\r\n"
HEADER_START = len(MAGIC) + 4  # the flatbuffer begins after the int32 size
PACKET_HEADER = struct.Struct("<ii")
LZ4_FRAME_MAGIC = b"\x04\x22\x4d\x18"
ZSTD_FRAME_MAGIC = b"\x28\xb5\x2f\xfd"
FRAME_MAGIC = {1: LZ4_FRAME_MAGIC, 2: LZ4_FRAME_MAGIC, 3: ZSTD_FRAME_MAGIC, 4: ZSTD_FRAME_MAGIC}
COMPRESSION_NAMES = {0: "none", 1: "LZ4", 2: "LZ4 high", 3: "Zstd", 4: "Zstd high"}

# A healthy packet decodes in milliseconds; the floor absorbs a loaded machine and
# the slope a very large packet (measured decoding: tens of MB/s and more).
STALL_FLOOR_S = 1.0
STALL_BYTES_PER_S = 5e6
STALL_CEILING_S = 10.0


@dataclass(frozen=True)
class Aedat4Layout:
    compression: int
    streams: frozenset[int]  # the stream ids the header declares (empty: not parsed)
    packets: int
    largest_packet_bytes: int
    data_table_at: int | None  # None while a file is being written

    def stall_timeout_s(self) -> float:
        """How long the decoding child may go without progress (module docstring)."""
        slope = self.largest_packet_bytes / STALL_BYTES_PER_S
        return min(STALL_CEILING_S, STALL_FLOOR_S + slope)


def scan_aedat4(path: str | os.PathLike, size: int) -> Aedat4Layout:
    """Check the packet framing of an AEDAT4 file of ``size`` bytes whose first bytes
    were checked (``aedat4.check_aedat4_header``); FormatError naming the byte of the
    first inconsistency."""
    source = str(path)
    with open(path, "rb") as f:
        f.seek(len(MAGIC))
        (header_bytes,) = struct.unpack("<i", f.read(4))
        header = f.read(header_bytes)
        compression, table_at, info = _io_header(source, header)
        end = size if table_at is None else table_at
        if table_at is not None and not HEADER_START + header_bytes <= table_at <= size:
            raise FormatError(
                source,
                f"byte {HEADER_START}",
                f"data table position {table_at} is outside the file",
            )
        streams = frozenset(int(s) for s in re.findall(r"outInfo/(\d+)/", info))
        magic = FRAME_MAGIC.get(compression)
        at, packets, largest = HEADER_START + header_bytes, 0, 0
        while at < end:
            if at + PACKET_HEADER.size > end:
                raise _cut(source, at, end, size, "inside a packet header")
            f.seek(at)
            stream, length = PACKET_HEADER.unpack(f.read(PACKET_HEADER.size))
            if length <= 0 or at + PACKET_HEADER.size + length > end:
                raise _cut(
                    source, at, end, size, f"packet of stream {stream} declares {length} bytes"
                )
            if streams and stream not in streams:
                raise FormatError(
                    source,
                    f"byte {at}",
                    f"packet of stream {stream}, which the header does not declare",
                )
            start = at + PACKET_HEADER.size
            if magic is LZ4_FRAME_MAGIC:
                problem = _lz4_frame_problem(f, start, length)
            else:
                problem = None if magic is None or f.read(4) == magic else "no frame magic"
            if problem is not None:
                name = COMPRESSION_NAMES[compression]
                raise FormatError(
                    source,
                    f"byte {start}",
                    f"packet {packets + 1}: {name} frame: {problem}; corrupt",
                )
            packets += 1
            largest = max(largest, length)
            at += PACKET_HEADER.size + length
    return Aedat4Layout(compression, streams, packets, largest, table_at)


def _lz4_frame_problem(f, start: int, length: int) -> str | None:
    """What is wrong with the LZ4 frame of ``length`` bytes at ``start``, or None:
    magic, descriptor (reserved bits, block size, header checksum), then the chain
    of block sizes up to the end mark, which must end where the packet does
    (the LZ4 frame format, lz4/doc/lz4_Frame_format.md)."""
    end = start + length
    f.seek(start)
    head = f.read(min(length, 19))
    if head[:4] != LZ4_FRAME_MAGIC:
        return "no frame magic"
    if len(head) < 7:
        return "frame header cut short"
    flags, block_descriptor = head[4], head[5]
    if flags >> 6 != 1 or flags & 0x02 or block_descriptor & 0x8F:
        return f"frame descriptor {head[4:6].hex()} is not LZ4 frame version 1"
    block_max = 1 << (2 * ((block_descriptor >> 4) & 7) + 8)  # 4..7 -> 64 KB..4 MB
    if block_max < 1 << 16:
        return f"block size code {(block_descriptor >> 4) & 7}"
    descriptor_bytes = 2 + (8 if flags & 0x08 else 0) + (4 if flags & 0x01 else 0)
    descriptor = head[4 : 4 + descriptor_bytes]
    if (
        len(head) < 5 + descriptor_bytes
        or head[4 + descriptor_bytes] != _xxh32(descriptor) >> 8 & 0xFF
    ):
        return "frame header checksum mismatch"
    at = start + 5 + descriptor_bytes
    block_checksum = 4 if flags & 0x10 else 0
    while True:
        if at + 4 > end:
            return "frame ends inside a block size"
        f.seek(at)
        (word,) = struct.unpack("<I", f.read(4))
        at += 4
        if word == 0:
            break
        if word & 0x7FFFFFFF > block_max:
            return f"block of {word & 0x7FFFFFFF} bytes, over the frame's {block_max}"
        at += (word & 0x7FFFFFFF) + block_checksum
    at += 4 if flags & 0x04 else 0  # the content checksum
    return None if at == end else f"frame of {at - start} bytes in a packet of {length}"


_PRIME32 = (2654435761, 2246822519, 3266489917, 668265263, 374761393)


def _xxh32(data: bytes, seed: int = 0) -> int:
    """xxHash32 of a short input (under 16 bytes: the LZ4 frame descriptor)."""
    mask = 0xFFFFFFFF

    def rotl(x: int, r: int) -> int:
        return ((x << r) | (x >> (32 - r))) & mask

    assert len(data) < 16
    h = (seed + _PRIME32[4] + len(data)) & mask
    i = 0
    while i + 4 <= len(data):
        (lane,) = struct.unpack_from("<I", data, i)
        h = rotl((h + lane * _PRIME32[2]) & mask, 17) * _PRIME32[3] & mask
        i += 4
    for byte in data[i:]:
        h = rotl((h + byte * _PRIME32[4]) & mask, 11) * _PRIME32[0] & mask
    h ^= h >> 15
    h = h * _PRIME32[1] & mask
    h ^= h >> 13
    h = h * _PRIME32[2] & mask
    return h ^ (h >> 16)


def _cut(source: str, at: int, end: int, size: int, what: str) -> FormatError:
    limit = "the data table" if end < size else "the end of the file"
    return FormatError(
        source, f"byte {at}", f"{what}, past {limit} at byte {end}: truncated or corrupt"
    )


def _io_header(source: str, header: bytes) -> tuple[int, int | None, str]:
    """(compression, data table position or None, the XML) from the IOHeader flatbuffer."""

    def read(fmt: str, at: int):
        if not 0 <= at <= len(header) - struct.calcsize(fmt):
            raise FormatError(
                source, f"byte {HEADER_START + at}", "IOHeader flatbuffer out of bounds"
            )
        return struct.unpack_from(fmt, header, at)[0]

    table = read("<I", 0)
    vtable = table - read("<i", table)
    vtable_bytes = read("<H", vtable)

    def field(index: int) -> int | None:
        slot = 4 + 2 * index
        offset = read("<H", vtable + slot) if slot + 2 <= vtable_bytes else 0
        return table + offset if offset else None

    compression_at, position_at, info_at = field(0), field(1), field(2)
    compression = read("<i", compression_at) if compression_at is not None else 0
    if compression not in COMPRESSION_NAMES:
        raise FormatError(source, f"byte {HEADER_START}", f"unknown compression {compression}")
    position = read("<q", position_at) if position_at is not None else -1
    info = ""
    if info_at is not None:
        start = info_at + read("<I", info_at)
        length = read("<I", start)
        info = header[start + 4 : start + 4 + length].decode("utf-8", "replace")
    return compression, (position if position > 0 else None), info
