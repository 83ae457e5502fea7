"""The framing rule of MSNP: where a line ends, its tokens, and whether a payload follows it.

One rule for every consumer: the reader (what the analysis decodes) and the
address rewriter (what the proxy forwards, and so what the client parses) both
frame a stream with these functions, so the two can never disagree on where a
payload ends and the next command starts. A consumer may keep a faster copy of
a step on its hot path only where a property test checks it against this module
on the same inputs (tests/msnp/test_framing.py).

How a client reads the server, decided from the protocol documents
(shared/seeds/002_015451aacc722977.txt "Commands", shared/PROTOCOL.md):

- A line ends at `\\n`; a `\\r` right before it belongs to the line end. A bare
  `\\r` elsewhere is an ordinary byte of the line ("will accept ... just \\n,
  but not just \\r").
- "Each parameter is separated by a space"; the server also accepts "multiple
  spaces between parameters, tabs instead of spaces, tabs mixed with spaces,
  and trailing spaces and tabs". A client that tolerates what a server
  tolerates splits on runs of space (0x20) and tab (0x09) and ignores them at
  either end, so a leading space does not hide a command. Nothing else is a
  separator: `\\x0b`, `\\x0c`, `\\r` are bytes of a token (`MSG\\x0bHotmail` is
  one token, not the command `MSG`).
- The command code is the first token, compared exactly: "a three letter,
  all-caps, command code". `msg` is not `MSG` and frames no payload; an error
  code is three digits.
- A payload command's line (the direction's table below, from its first
  version; every version when the version is unknown) carries a payload when
  its last token is all ASCII digits and it has enough tokens for that token
  not to be the TrID: 2 for the lines that carry no TrID (`MSG sender nick 29`
  from a server, `NOT 120`), 3 for the rest (`UUX 5 0`). A numeric error
  `code trid length` (exactly three tokens) carries one from MSNP13, or when
  the version is unknown.
- The payload is the next `length` bytes, whatever their number: a cap on
  payload size (`--max-payload`) limits what a consumer keeps, never where the
  next line starts.
- The version is the first `MSNPn` among the third and later tokens of the
  server's `VER` line.
- A line longer than `max_line` bytes (without its `\\n`) is not framed: no
  payload follows it. This is the one place where a bounded consumer and an
  unbounded client may differ; every consumer uses the same bound.

No I/O, no clock; never raises on input.
"""

from __future__ import annotations

from analyzer.msnp.events import C2S, S2C
from analyzer.msnp.tables import C2S_NO_TRID, C2S_PAYLOAD, ERROR_PAYLOAD_VERSION, S2C_NO_TRID, S2C_PAYLOAD

SEPARATORS = b" \t"
HUGE = 1 << 62  # a length token too long to convert: "the rest of the stream"


def _payload_table(payloads: dict[bytes, int], no_trid: frozenset[bytes]) -> dict[bytes, tuple[int, int]]:
    """code -> (first version with a payload, fewest tokens for the last to be a length)."""
    return {code: (minver, 2 if code in no_trid else 3) for code, minver in payloads.items()}


# Per direction: the payload commands, as (first version, fewest tokens).
PAYLOAD: dict[str, dict[bytes, tuple[int, int]]] = {
    C2S: _payload_table(C2S_PAYLOAD, C2S_NO_TRID),
    S2C: _payload_table(S2C_PAYLOAD, S2C_NO_TRID),
}


def content(line: bytes) -> bytes:
    """A line without its line end (`\\n`, or `\\r\\n`)."""
    if line.endswith(b"\n"):
        line = line[:-1]
        if line.endswith(b"\r"):
            line = line[:-1]
    return line


def too_long(line: bytes, max_line: int) -> bool:
    """Whether a line (with or without its `\\n`) is past the bound and goes unframed."""
    return len(line) - line.endswith(b"\n") > max_line


def tokens(text: bytes) -> list[bytes]:
    """A line's content split into tokens: runs of space and tab separate, and are ignored at the ends."""
    if 9 in text:  # a tab (tested by value: see reader._parse)
        text = text.replace(b"\t", b" ")
    parts = text.split(b" ")
    if b"" in parts:
        parts = [p for p in parts if p]
    return parts


def token_spans(text: bytes) -> list[tuple[int, int]]:
    """(start, end) of each token of `tokens(text)`, in order."""
    spans = []
    pos, n = 0, len(text)
    while pos < n:
        while pos < n and text[pos] in SEPARATORS:
            pos += 1
        if pos >= n:
            break
        start = pos
        while pos < n and text[pos] not in SEPARATORS:
            pos += 1
        spans.append((start, pos))
    return spans


def to_length(token: bytes) -> int:
    """An all-digit token as a length (a token of 19 digits or more is HUGE)."""
    return int(token) if len(token) < 19 else HUGE


def parse_version(token: bytes) -> int | None:
    if token[:4] == b"MSNP" and token[4:].isdigit() and len(token) < 12:
        return int(token[4:])
    return None


def version_of(toks: list[bytes]) -> int | None:
    """The version a server's `VER` line chooses (None: not a VER line, or no version in it)."""
    if toks and toks[0] == b"VER":
        for token in toks[2:]:
            version = parse_version(token)
            if version is not None:
                return version
    return None


def is_error_code(code: bytes) -> bool:
    return len(code) == 3 and code.isdigit()


def payload_length(toks: list[bytes], direction: str, version: int | None) -> int | None:
    """The length of the payload that follows a line with these tokens, or None for no payload."""
    if not toks:
        return None
    code = toks[0]
    entry = PAYLOAD[direction].get(code)
    if entry is not None:
        minver, fewest = entry
        if len(toks) >= fewest and (minver == 0 or (version or minver) >= minver) and toks[-1].isdigit():
            return to_length(toks[-1])
        return None
    if (len(toks) == 3 and is_error_code(code) and toks[2].isdigit()
            and (version is None or version >= ERROR_PAYLOAD_VERSION)):
        return to_length(toks[2])
    return None


class Span:
    """One framed piece of a stream: a line (`payload` False) or the payload after one."""

    __slots__ = ("start", "end", "payload", "tokens")

    def __init__(self, start: int, end: int, payload: bool, toks: list[bytes] | None) -> None:
        self.start, self.end, self.payload, self.tokens = start, end, payload, toks

    def __repr__(self) -> str:
        return f"Span({self.start}, {self.end}, {'payload' if self.payload else 'line'})"


def frame(data: bytes, direction: str, *, max_line: int, version: int | None = None,
          learn_version: bool = True) -> list[Span]:
    """The rule applied to a whole stream: its lines and payloads, in order.

    The reference for tests and tools (consumers frame incrementally). A final
    line without `\\n`, or a payload cut short, ends the list as it stands.
    `tokens` is None for an overlong line. The version is learnt from `VER`
    lines in this stream when `learn_version` (the server's stream).
    """
    out: list[Span] = []
    pos, n = 0, len(data)
    while pos < n:
        nl = data.find(b"\n", pos)
        end = n if nl < 0 else nl + 1
        line = data[pos:end]
        if too_long(line, max_line):
            out.append(Span(pos, end, False, None))
            pos = end
            continue
        if nl < 0:
            out.append(Span(pos, end, False, tokens(content(line))))
            break
        toks = tokens(content(line))
        out.append(Span(pos, end, False, toks))
        pos = end
        if learn_version:
            chosen = version_of(toks)
            if chosen is not None:
                version = chosen
        length = payload_length(toks, direction, version)
        if length:
            stop = min(n, pos + length)
            out.append(Span(pos, stop, True, None))
            pos = stop
    return out
