"""The text header of AEDAT 2.0 and 3.1 files, read once for both readers.

Both formats start with ASCII lines beginning with ``#``, each ended by
``\\n`` (``\\r\\n`` as written), the first naming the version:
``#!AER-DAT2.0`` (jAER) or ``#!AER-DAT3.1`` (cAER). An AEDAT 3.1 header closes
with a ``#!END-HEADER`` line. An AEDAT 2.0 header closes with jAER's
``#End Of ASCII Header`` line where the writer put one, else where a line does
not start with ``#``; as a DAVIS record may start with the byte ``#`` (a DVS
event with y = 140-143), a ``#`` "line" holding control bytes (below 0x20,
except tab) is data, not header: jAER's header is text. AEDAT4 files start with
the same magic (``#!AER-DAT4.0``) followed by a binary header of their own
(``aedat4.py``).

Why one reader: a header comes from an untrusted file, so its reading is
bounded (at most ``MAX_HEADER_BYTES``; real headers are a few hundred bytes)
and its errors name the byte where it went wrong. Each format module then
interprets the lines it cares about.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from core.events import FormatError

MAGIC = b"#!AER-DAT"
# A file without the end of its header in the first MiB is not an AEDAT file
# and must not make us read further.
MAX_HEADER_BYTES = 1 << 20
HEADER_PROBE_BYTES = 64 << 10  # read first; the rest only for unusually long headers
# version -> (what it is, the module of replay.formats that reads it), for errors
READERS = {
    "2.0": ("AEDAT 2.0 (jAER)", "aedat2"),
    "3.1": ("AEDAT 3.1", "aedat3"),
    "4.0": ("AEDAT 4.0", "aedat4"),
}


@dataclass(frozen=True)
class TextHeader:
    version: str  # "3.1" for "#!AER-DAT3.1"
    lines: list[str]  # without line endings, the version line (and any end line) included
    line_starts: list[int]  # byte offset of each line, for errors naming one
    data_offset: int  # byte just after the header


def aedat_version(head: bytes) -> str:
    """The version named by the first line of ``head`` (which starts with
    ``MAGIC``): ``b"#!AER-DAT3.1\\r\\n..."`` gives ``"3.1"``."""
    first_line = head.split(b"\n", 1)[0]
    return first_line[len(MAGIC) :].decode("ascii", "replace").strip()


def read_text_header(
    path: str | os.PathLike,
    version: str,
    end_line: bytes | None = None,
    last_line: bytes | None = None,
) -> TextHeader:
    """The header of an AEDAT ``version`` file: ``#`` lines up to and including
    ``end_line`` or, without one, up to the first line that does not start
    with ``#`` or is not text, or up to and including an optional ``last_line``
    (compared without case, spaces and the ``#``). FormatError naming the file
    and the byte for an empty file, a file of another version or none, and a
    header that is cut short, too long or (with ``end_line``) holds a line not
    starting with ``#``."""
    source = str(path)
    with open(path, "rb") as f:
        file_size = os.fstat(f.fileno()).st_size
        head = f.read(HEADER_PROBE_BYTES)
        if len(head) < file_size and not _holds_whole_header(head, end_line, last_line):
            head += f.read(MAX_HEADER_BYTES - len(head))
    expected = f"'{MAGIC.decode()}{version}'"
    if not head:
        raise FormatError(
            source, "byte 0", f"empty file; expected an AEDAT {version} header {expected}"
        )
    if not head.startswith(MAGIC):
        raise FormatError(
            source, "byte 0", f"not an AEDAT file: expected {expected}, found {head[:16]!r}"
        )
    found = aedat_version(head)
    if found != version:
        if found in READERS:
            what, module = READERS[found]
            hint = f"it is {what}: read it with replay.formats.{module}"
        else:
            hint = f"only AEDAT {version} is supported by this reader"
        raise FormatError(source, "byte 0", f"AEDAT version {found[:20]!r}: {hint}")

    lines: list[str] = []
    line_starts: list[int] = []
    position = 0
    while _header_continues(head, position, end_line):
        line_end = head.find(b"\n", position)
        if line_end < 0:
            cut_by_limit = file_size > len(head)
            raise FormatError(source, f"byte {position}", _unended(end_line, cut_by_limit))
        raw = head[position:line_end].rstrip(b"\r")
        if not raw.startswith(b"#"):
            raise FormatError(
                source,
                f"byte {position}",
                f"header line does not start with '#' ({raw[:40]!r}) before '{end_line.decode()}'",
            )
        lines.append(raw.decode("ascii", "replace"))
        line_starts.append(position)
        position = line_end + 1
        if raw == end_line or _is_last_line(raw, last_line):
            break
    if end_line is None and position >= len(head) and file_size > len(head):
        # Every byte read is header, so where the header ends is past the limit.
        raise FormatError(
            source, f"byte {position}", f"header longer than {MAX_HEADER_BYTES} bytes"
        )
    return TextHeader(found, lines, line_starts, position)


def _unended(end_line: bytes | None, cut_by_limit: bool) -> str:
    """What is wrong with a header whose last line has no line end."""
    if end_line is None:
        if cut_by_limit:
            return f"header line longer than {MAX_HEADER_BYTES} bytes"
        return "file ends inside a header line"
    if cut_by_limit:
        return f"no '{end_line.decode()}' line within the first {MAX_HEADER_BYTES} bytes"
    return f"file ends inside the header (no '{end_line.decode()}' line)"


def _holds_whole_header(head: bytes, end_line: bytes | None, last_line: bytes | None) -> bool:
    """Whether ``head`` reaches past the header (so nothing more need be read)."""
    position = 0
    while _header_continues(head, position, end_line):
        line_end = head.find(b"\n", position)
        if line_end < 0:
            return False
        raw = head[position:line_end].rstrip(b"\r")
        if raw == end_line or _is_last_line(raw, last_line):
            return True
        position = line_end + 1
    return position < len(head)


# Bytes no text header holds (tab, line feed and carriage return aside).
_CONTROL_BYTES = bytes(b for b in range(32) if b not in (9, 10, 13)) + b"\x7f"


def _header_continues(head: bytes, position: int, end_line: bytes | None) -> bool:
    """Whether a header line starts at ``position``. With ``end_line`` every
    line up to it is header; without, a line starting with ``#`` is, unless it
    holds control bytes: then it is a binary record that starts with 0x23."""
    if end_line is not None:
        return True
    if head[position : position + 1] != b"#":
        return False
    line_end = head.find(b"\n", position)
    line = head[position : line_end if line_end >= 0 else len(head)]
    return line == line.translate(None, _CONTROL_BYTES)


def _is_last_line(raw: bytes, last_line: bytes | None) -> bool:
    if last_line is None:
        return False
    return _squeezed(raw) == _squeezed(last_line)


def _squeezed(line: bytes) -> bytes:
    """``b"# End of ASCII Header"`` -> ``b"endofasciiheader"``."""
    return line.lstrip(b"#").replace(b" ", b"").lower()
