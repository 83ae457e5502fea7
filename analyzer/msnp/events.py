"""Events the codec emits: a decoded command, a run of skipped bytes, an anomaly.

Every byte that goes into a `CommandReader` comes back out in exactly one
`Command` or `Skipped` event (or is still pending at the end), in order, so
`b"".join(e.raw for e in events if not isinstance(e, Anomaly))` re-emits the
input byte for byte.

The classes use `__slots__` and are not frozen: a frozen dataclass costs about
twice as much to build, and the codec builds one per command. Treat them as
immutable all the same.
"""

from __future__ import annotations

from urllib.parse import unquote_to_bytes

from analyzer.anomalies import Severity, spec

C2S = "c2s"  # client to server
S2C = "s2c"  # server to client


def _text(raw: bytes) -> str:
    # Wire bytes are UTF-8 in practice; anything else is shown as \xNN, never lost.
    return raw.decode("utf-8", "backslashreplace")


class Command:
    """One MSNP command: the line, its parsed parts, and its payload if it has one.

    `args` are the raw tokens after the command code (the TrID included, when the
    line has one); `params` are the tokens after the TrID, decoded for display.
    """

    __slots__ = ("direction", "cmd", "trid", "args", "line", "payload",
                 "payload_len", "offset", "ts")

    def __init__(self, direction: str, cmd: str, trid: int | None, args: list[bytes],
                 line: bytes, payload: bytes | None, payload_len: int | None,
                 offset: int, ts: float | None) -> None:
        self.direction = direction
        self.cmd = cmd
        self.trid = trid
        self.args = args
        self.line = line
        self.payload = payload
        self.payload_len = payload_len
        self.offset = offset
        self.ts = ts

    @property
    def raw(self) -> bytes:
        """The exact bytes of this command on the wire (line end and payload included)."""
        return self.line if self.payload is None else self.line + self.payload

    @property
    def raw_params(self) -> list[bytes]:
        return self.args[1:] if self.trid is not None else self.args

    @property
    def params(self) -> list[str]:
        args = self.args if self.trid is None else self.args[1:]
        return [a.decode("utf-8", "backslashreplace") for a in args]  # as _text, inline: once per command

    def decoded_params(self) -> list[str]:
        """Parameters with URL-encoding undone (friendly names, personal messages)."""
        return [_text(unquote_to_bytes(a)) for a in self.raw_params]

    @property
    def newline(self) -> bytes:
        return b"\r\n" if self.line.endswith(b"\r\n") else b"\n"

    def with_param(self, index: int, value: bytes) -> bytes:
        """The raw line with parameter `index` (counted as in `params`) replaced.

        Every other byte (separators, odd white space, the line end) is kept, so
        a proxy that rewrites an address changes nothing else. The payload, if
        any, is not included.
        """
        want = index + (1 if self.trid is not None else 0) + 1  # token number incl. the code
        line = replace_token(self.line, want, value)
        if line is not None:
            return line
        raise IndexError(f"{self.cmd} has no parameter {index}")

    def __repr__(self) -> str:
        extra = f" +{len(self.payload)}B" if self.payload is not None else ""
        return f"<Command {self.direction} {self.raw[:60]!r}{extra} @{self.offset}>"


def replace_token(line: bytes, index: int, value: bytes) -> bytes | None:
    """`line` with its white-space-separated token `index` (0: the command code) replaced.

    Every other byte (separators, odd white space, the line end) is kept. None
    when the line has no such token.
    """
    pos, token, n = 0, -1, len(line)
    while pos < n:
        while pos < n and line[pos] in b" \t\r\n":
            pos += 1
        if pos >= n:
            break
        start = pos
        while pos < n and line[pos] not in b" \t\r\n":
            pos += 1
        token += 1
        if token == index:
            return line[:start] + value + line[pos:]
    return None


class Skipped:
    """Bytes the codec could not decode as a command (garbage, an overlong line)."""

    __slots__ = ("direction", "raw", "offset", "ts")

    def __init__(self, direction: str, raw: bytes, offset: int, ts: float | None) -> None:
        self.direction = direction
        self.raw = raw
        self.offset = offset
        self.ts = ts

    def __repr__(self) -> str:
        return f"<Skipped {self.direction} {len(self.raw)}B @{self.offset}>"


class Anomaly:
    """A named oddity and where it was seen (direction, byte offset, time)."""

    __slots__ = ("name", "detail", "direction", "offset", "ts", "trid")

    def __init__(self, name: str, detail: str, direction: str | None, offset: int | None,
                 ts: float | None, trid: int | None = None) -> None:
        self.name = name
        self.detail = detail
        self.direction = direction
        self.offset = offset
        self.ts = ts
        self.trid = trid

    @property
    def severity(self) -> Severity:
        return spec(self.name).severity

    @property
    def summary(self) -> str:
        return spec(self.name).summary

    def __repr__(self) -> str:
        return f"<Anomaly {self.name} {self.direction}@{self.offset}: {self.detail}>"


def encode_command(cmd: str, trid: int | None, params: list[str | bytes],
                   payload: bytes | None = None, newline: bytes = b"\r\n") -> bytes:
    """Build a well-formed command line (and payload, whose length is appended)."""
    parts = [cmd.encode("ascii")]
    if trid is not None:
        parts.append(str(trid).encode("ascii"))
    parts += [p if isinstance(p, bytes) else p.encode("utf-8") for p in params]
    if payload is not None:
        parts.append(str(len(payload)).encode("ascii"))
    return b" ".join(parts) + newline + (payload or b"")
