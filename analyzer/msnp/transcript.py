"""The transcript format: an exact, human-readable record of both directions.

One chunk of bytes per line, in the order they were seen:

    # comments and blank lines are ignored
    >>> VER 1 MSNP8 CVR0\\r\\n                 client to server
    <<< VER 1 MSNP8 CVR0\\r\\n                 server to client
    0.250 >>> PNG\\r\\n                        optional time in seconds first
    0.300 @sb1 <<< JOI bob@example.com Bob\\r\\n   optional connection label

The data after `>>> ` or `<<< ` is taken byte for byte, with the escapes
`\\r \\n \\t \\\\ \\xHH` (and nothing else) undone; the file's own line end is
not part of the data, so `\\r\\n` must be written. A time is seconds, at most
MAX_TIME (the end of the year 9999); a larger one is a bad line. `>>>`/`<<<` follow the old
MSNP documents' convention (client sends `>>>`, receives `<<<`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from analyzer.msnp import C2S, S2C

_ESCAPE = re.compile(rb"\\(x[0-9a-fA-F]{2}|[rnt\\])")
_SIMPLE = {b"r": b"\r", b"n": b"\n", b"t": b"\t", b"\\": b"\\"}
ARROWS = {b">>>": C2S, b"<<<": S2C}


MAX_TIME = 253402300799.0  # 9999-12-31 23:59:59 UTC in epoch seconds: the latest time a transcript may give


class TranscriptError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class Chunk:
    direction: str
    data: bytes
    ts: float | None = None
    conn: str | None = None


def unescape(text: bytes) -> bytes:
    def sub(m: re.Match) -> bytes:
        code = m.group(1)
        return bytes([int(code[1:], 16)]) if code[:1] == b"x" else _SIMPLE[code]
    return _ESCAPE.sub(sub, text)


def escape(data: bytes) -> str:
    out = []
    for b in data:
        if b == 0x5C:
            out.append("\\\\")
        elif b == 0x0D:
            out.append("\\r")
        elif b == 0x0A:
            out.append("\\n")
        elif b == 0x09:
            out.append("\\t")
        elif 0x20 <= b < 0x7F:
            out.append(chr(b))
        else:
            out.append(f"\\x{b:02x}")
    return "".join(out)


def looks_like_transcript(head: bytes) -> bool:
    for line in head.splitlines()[:20]:
        line = line.strip()
        if not line or line.startswith(b"#"):
            continue
        return bool(re.match(rb"^(\d+(\.\d+)?\s+)?(@\S+\s+)?(>>>|<<<)( |$)", line))
    return False


_LINE = re.compile(rb"^\s*(?:(\d+(?:\.\d+)?)\s+)?(?:@(\S+)\s+)?(>>>|<<<)(?: (.*))?$", re.S)


def iter_chunks(text: bytes):
    """The chunks of a transcript one at a time (memory stays flat however long it is);
    raises TranscriptError with the line number on a bad line, when it gets there."""
    number = 0
    pos, n = 0, len(text)
    while pos < n:
        nl = text.find(b"\n", pos)
        if nl < 0:
            nl = n
        line = text[pos:nl].rstrip(b"\r")
        pos = nl + 1
        number += 1
        stripped = line.strip()
        if not stripped or stripped.startswith(b"#"):
            continue
        m = _LINE.match(line)
        if not m:
            raise TranscriptError(f"line {number}: expected '>>> ' or '<<< ' and data, got {line[:40]!r}")
        ts = float(m.group(1)) if m.group(1) else None
        if ts is not None and not ts <= MAX_TIME:
            # 400 digits make float() say Infinity, which no JSON or clock can show.
            raise TranscriptError(f"line {number}: time {m.group(1)[:20].decode()}... is beyond the year 9999"
                                  if len(m.group(1)) > 20 else
                                  f"line {number}: time {m.group(1).decode()} is beyond the year 9999")
        conn = m.group(2).decode("utf-8", "replace") if m.group(2) else None
        yield Chunk(ARROWS[m.group(3)], unescape(m.group(4) or b""), ts, conn)


def check(text: bytes) -> None:
    """Raise TranscriptError for the first bad line, keeping nothing (run before feeding anything)."""
    for _ in iter_chunks(text):
        pass


def parse(text: bytes) -> list[Chunk]:
    """Chunks of a transcript; raises TranscriptError with the line number on bad lines."""
    return list(iter_chunks(text))


def format_chunks(chunks: list[Chunk]) -> str:
    """A transcript that parses back to the same bytes (one line per wire line)."""
    lines = []
    for chunk in chunks:
        arrow = ">>>" if chunk.direction == C2S else "<<<"
        prefix = ""
        if chunk.ts is not None:
            prefix += f"{chunk.ts:.6f} "
        if chunk.conn is not None:
            prefix += f"@{chunk.conn} "
        for piece in chunk.data.splitlines(keepends=True) or [b""]:
            lines.append(f"{prefix}{arrow} {escape(piece)}")
    return "\n".join(lines) + "\n"
