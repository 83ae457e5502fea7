"""The sans-IO MSNP reader: one per direction of a TCP connection.

Contract:
- `feed(data, ts)` takes bytes in any chunking and returns the events that are
  now complete (`Command`, `Skipped`, `Anomaly`), in stream order. Incomplete
  data stays pending; nothing is returned for it until it completes.
- `close(ts)` says the stream ended and flushes what is pending as a truncated
  command or skipped bytes, with an anomaly.
- `gap(n, ts)` says n bytes are missing from the stream (a capture hole); the
  reader resynchronises at the next plausible command line.
- It never raises on input: malformed bytes become `Anomaly` events and the
  bytes themselves come back as `Skipped`, so every byte is accounted for.
- It knows nothing of sockets, files or clocks: `ts` is whatever the caller passes.

The negotiated protocol version lives in a `ProtocolState` shared by the two
readers of a connection, because the server's `VER` reply decides how the
client's later lines are framed too.
"""

from __future__ import annotations

from analyzer.msnp.events import C2S, S2C, Anomaly, Command, Skipped
from analyzer.msnp.framing import PAYLOAD, is_error_code, parse_version, to_length
from analyzer.msnp.tables import (C2S_NO_TRID, C2S_PAYLOAD, ERROR_NAMES, ERROR_PAYLOAD_VERSION,
                     KNOWN_COMMANDS, S2C_NEEDS_TRID, S2C_NO_TRID, S2C_NO_TRID_SYN_BLOCK,
                     S2C_PAYLOAD, STRICT_LENGTH, SYN_BLOCK_VERSION, TRID_MAX)

DEFAULT_MAX_LINE = 64 * 1024
DEFAULT_MAX_PAYLOAD = 1024 * 1024

_LINE, _PAYLOAD, _DISCARD, _SKIP = range(4)

# How a line's first parameter is read as a TrID.
_TRID_NONE = 0        # never a TrID (PNG from the client; NLN, MSG, RNG, ... from the server)
_TRID_IF_NUMBER = 1   # a TrID when it is a number (a pushed line may lack one)
_TRID_ALWAYS = 2      # required: a missing or malformed one is an anomaly
_TRID_SYN_BLOCK = 3   # LSG/LST: none in an MSNP8+ SYN block, else as _TRID_IF_NUMBER


def _trid_mode(code: bytes, client: bool) -> int:
    if client:
        return _TRID_NONE if code in C2S_NO_TRID else _TRID_ALWAYS
    if code in S2C_NO_TRID:
        return _TRID_NONE
    if code in S2C_NO_TRID_SYN_BLOCK:
        return _TRID_SYN_BLOCK
    return _TRID_ALWAYS if code in S2C_NEEDS_TRID else _TRID_IF_NUMBER


def _table(client: bool) -> dict[bytes, tuple[str, int, int | None]]:
    """Known code -> (its text, TrID mode, first version with a payload or None): one lookup per line.

    The payload column is framing.PAYLOAD's (the one framing rule); `_parse` applies it
    inline (a faster copy of framing.payload_length, checked against it by
    tests/msnp/test_framing.py).
    """
    payloads = PAYLOAD[C2S if client else S2C]
    return {c: (c.decode("ascii"), _trid_mode(c, client), payloads[c][0] if c in payloads else None)
            for c in KNOWN_COMMANDS}


_CLIENT_TABLE = _table(True)
_SERVER_TABLE = _table(False)
_DIGITS = frozenset(b"0123456789")


def _too_long_detail(max_line: int, head: bytes) -> str:
    # The same text whether the line arrived whole or in pieces (chunking must not show).
    return f"no line end within {max_line} bytes (starts {head!r})"


_OLD_LISTS = frozenset({b"FL", b"AL", b"BL", b"RL"})


def _old_list_line(lookup: bytes, tokens: list[bytes]) -> bool:
    """An LST/LSG line of the MSNP2-7 shape: TrID, list version, then (LST) a list name or
    (LSG) item number, count and group id, all numbers."""
    n = len(tokens)
    if n < 3 or not tokens[1].isdigit():
        return False
    if lookup == b"LST":
        return tokens[2] in _OLD_LISTS
    return n >= 7 and all(t.isdigit() for t in tokens[1:6])


class ProtocolState:
    """What both directions of one connection know about its dialect."""

    __slots__ = ("version", "offered", "min_version", "max_version")

    def __init__(self, version: int | None = None) -> None:
        self.version = version          # negotiated (server's VER reply), or None
        self.offered: list[int] | tuple = ()  # versions the client offered (a list once VER is read)
        self.min_version = 0            # lower bound inferred from features seen
        self.max_version = 0            # upper bound inferred from lines seen (7: the MSNP2-7 dialect), or 0

    @property
    def effective(self) -> int | None:
        """The version that decides framing: negotiated, else the client's best offer."""
        if self.version is not None:
            return self.version
        if self.offered:
            return max(self.offered)
        return None


class CommandReader:
    # Two per connection, tens of thousands of connections open at once on a busy server's
    # capture: ten slots (112 bytes). The limits are one tuple shared by the readers that have
    # the same (`_limits`); which side sent the bytes, and so the first-token table, comes from
    # `direction`.
    __slots__ = ("direction", "state", "_limits", "_chunks", "_pending_len", "_offset", "_mode", "_partial",
                 "_need", "_garbage")

    def __init__(self, direction: str, state: ProtocolState | None = None, *,
                 max_line: int = DEFAULT_MAX_LINE,
                 max_payload: int = DEFAULT_MAX_PAYLOAD) -> None:
        if direction not in (C2S, S2C):
            raise ValueError(f"direction must be {C2S!r} or {S2C!r}")
        self.direction = direction
        self.state = state if state is not None else ProtocolState()
        self._limits = _limits(max_line, max_payload)
        # Pending bytes (in _LINE mode: no \n among them); () when there are none, so an
        # idle reader holds no list (thousands are open at once on a busy server).
        self._chunks: list[bytes] | tuple = ()
        self._pending_len = 0
        self._offset = 0                # stream offset of the first pending byte
        self._mode = _LINE
        self._partial: Command | None = None  # command waiting for its payload
        self._need = 0                  # bytes still wanted in _PAYLOAD / _SKIP mode
        self._garbage = False           # inside a run of undecodable lines

    # -- public API ---------------------------------------------------------

    @property
    def max_line(self) -> int:
        return self._limits[0]

    @property
    def max_payload(self) -> int:
        return self._limits[1]

    @property
    def offset(self) -> int:
        """Stream offset of the next byte the reader has not yet turned into an event."""
        return self._offset

    @property
    def pending(self) -> int:
        return self._pending_len

    def feed(self, data: bytes, ts: float | None = None) -> list:
        out: list = []
        if not data:
            return out
        if type(data) is not bytes:
            data = bytes(data)
        if self._mode == _SKIP or self._mode == _DISCARD:
            data = self._skip(data, ts, out)
            if not data:
                return out
        if self._chunks:
            self._chunks.append(data)
            self._pending_len += len(data)
            if self._mode == _LINE:
                if data.find(b"\n") < 0:
                    if self._pending_len > self.max_line:
                        self._overlong_pending(ts, out)
                    return out
            elif self._pending_len < self._need:
                return out
            buf = b"".join(self._chunks)
            self._chunks = ()
            self._pending_len = 0
        else:
            if self._mode == _PAYLOAD and len(data) < self._need:
                self._chunks = [data]
                self._pending_len = len(data)
                return out
            buf = data
        self._parse(buf, ts, out)
        return out

    def close(self, ts: float | None = None) -> list:
        """End of stream: flush whatever is pending, as truncated."""
        out: list = []
        if self._mode == _PAYLOAD and self._partial is not None:
            cmd = self._partial
            have = b"".join(self._chunks)
            cmd.payload = have
            cmd.ts = ts if ts is not None else cmd.ts
            out.append(Anomaly("msnp.payload.truncated",
                               f"{cmd.cmd} announced {cmd.payload_len} bytes, stream ended after {len(have)}",
                               self.direction, cmd.offset, ts, cmd.trid))
            out.append(cmd)
            self._offset += len(have)
        elif self._chunks:
            have = b"".join(self._chunks)
            out.append(Anomaly("msnp.line.truncated",
                               f"stream ended inside a line of {len(have)} bytes: {have[:40]!r}",
                               self.direction, self._offset, ts))
            out.append(Skipped(self.direction, have, self._offset, ts))
            self._offset += len(have)
        self._chunks = ()
        self._pending_len = 0
        self._partial = None
        self._mode = _LINE
        return out

    def gap(self, size: int, ts: float | None = None) -> list:
        """`size` bytes are missing here; drop what depended on them and resynchronise."""
        out: list = []
        if self._mode == _PAYLOAD and self._partial is not None:
            cmd = self._partial
            have = self._pending_len
            remaining = cmd.payload_len - have - size
            cmd.payload = None  # damaged: the bytes we hold are not the payload
            cmd.ts = ts if ts is not None else cmd.ts
            out.append(cmd)
            if have:
                out.append(Skipped(self.direction, b"".join(self._chunks), self._offset, ts))
            self._offset += have + size
            self._chunks, self._pending_len, self._partial = (), 0, None
            if remaining > 0:
                self._mode, self._need = _SKIP, remaining
            else:
                # The gap ran past the payload's end: the next line may start mid-way.
                self._mode, self._garbage = _LINE, True
            return out
        if self._mode == _SKIP:
            self._need -= size
            self._offset += size
            if self._need <= 0:
                self._mode, self._garbage = _LINE, True
            return out
        if self._chunks:
            out.append(Skipped(self.direction, b"".join(self._chunks), self._offset, ts))
            self._offset += self._pending_len
            self._chunks, self._pending_len = (), 0
        self._offset += size
        self._mode, self._garbage = _LINE, True
        return out

    # -- internals ----------------------------------------------------------

    def _skip(self, data: bytes, ts, out: list) -> bytes:
        """Consume bytes of an overlong line (_DISCARD) or a damaged payload (_SKIP)."""
        if self._mode == _DISCARD:
            nl = data.find(b"\n")
            if nl < 0:
                out.append(Skipped(self.direction, data, self._offset, ts))
                self._offset += len(data)
                return b""
            out.append(Skipped(self.direction, data[:nl + 1], self._offset, ts))
            self._offset += nl + 1
            self._mode, self._garbage = _LINE, True
            return data[nl + 1:]
        take = min(self._need, len(data))
        out.append(Skipped(self.direction, data[:take], self._offset, ts))
        self._offset += take
        self._need -= take
        if self._need == 0:
            self._mode = _LINE
        return data[take:]

    def _overlong_pending(self, ts, out: list) -> None:
        have = b"".join(self._chunks)
        out.append(Anomaly("msnp.line.too_long", _too_long_detail(self.max_line, have[:40]),
                           self.direction, self._offset, ts))
        out.append(Skipped(self.direction, have, self._offset, ts))
        self._offset += len(have)
        self._chunks, self._pending_len = (), 0
        self._mode = _DISCARD

    def _parse(self, buf: bytes, ts, out: list) -> None:
        direction = self.direction
        pos = 0
        n = len(buf)
        base = self._offset
        if self._mode == _PAYLOAD:
            cmd = self._partial
            need = self._need
            cmd.payload = buf[:need]
            cmd.ts = ts
            out.append(cmd)
            self._partial = None
            self._mode = _LINE
            pos = need
        max_line, max_payload = self._limits
        client = direction == C2S
        fast = _CLIENT_TABLE if client else _SERVER_TABLE
        append = out.append
        # Odd bytes in a line's content send it down the slow path: a tab (rare, so
        # one scan of the read spares a scan per line) or any \r (the line end's
        # \r is not in the content). Membership is tested with the byte's value:
        # `b"\r" in content` first tries its needle as an integer, and the
        # TypeError raised and cleared inside costs about six times the scan.
        tabs = 9 in buf
        garbage = self._garbage  # kept in step with self._garbage: read on every line
        find = buf.find
        while True:
            nl = find(b"\n", pos)
            if nl < 0:
                break
            off = base + pos
            if nl - pos > max_line:
                append(Anomaly("msnp.line.too_long", _too_long_detail(max_line, buf[pos:pos + 40]),
                               direction, off, ts))
                append(Skipped(direction, buf[pos:nl + 1], off, ts))
                pos = nl + 1
                self._garbage = garbage = True
                continue
            if buf[nl - 1] == 13 and nl > pos:
                content = buf[pos:nl - 1]
            else:
                content = buf[pos:nl]
                append(Anomaly("msnp.newline.bare_lf", "line ended with \\n only", direction, off, ts))
            tokens = content.split(b" ")
            info = fast.get(tokens[0])
            if info is None or b"" in tokens or 13 in content or (tabs and 9 in content):
                tokens = self._slow_tokens(content, tokens, off, ts, out)
                if tokens is None:
                    append(Skipped(direction, buf[pos:nl + 1], off, ts))
                    pos = nl + 1
                    garbage = self._garbage
                    continue
                code = tokens[0]
                lookup = code.upper()
                info = fast.get(lookup)
                if info is None:  # unknown or numeric code
                    info = (None, _TRID_ALWAYS if client or lookup.isdigit() else _TRID_IF_NUMBER, None)
                text = code.decode("ascii")
                # A code frames a payload only as the client reads it, exactly ("msg" is not MSG):
                # see analyzer/msnp/framing.py.
                mode, minver = info[1], (info[2] if lookup == code else None)
            else:
                text, mode, minver = info
                lookup = tokens[0]
            if garbage:
                self._garbage = garbage = False
            ntok = len(tokens)
            # -- TrID (see the _TRID_* modes above)
            trid = None
            if mode:
                if mode == _TRID_SYN_BLOCK:
                    mode = _TRID_NONE if self._syn_block_line(lookup, tokens) else _TRID_IF_NUMBER
                if mode and ntok > 1 and tokens[1].isdigit():
                    trid = int(tokens[1])
                    if trid > TRID_MAX or (trid == 0 and client):
                        self._trid(tokens, ntok, off, ts, out, text, client)
                elif mode == _TRID_ALWAYS:
                    trid = self._trid(tokens, ntok, off, ts, out, text, client)
                if tokens[0] == b"VER":
                    self._learn_version(tokens, trid, off, ts, out)
            # -- payload
            if minver is None:
                if info[0] is None and lookup.isdigit():
                    length = self._error_shape(lookup, tokens, ntok, trid, off, ts, out)
                    if length is None:
                        append(Command(direction, text, trid, tokens[1:], buf[pos:nl + 1], None, None, off, ts))
                        pos = nl + 1
                        continue
                else:
                    append(Command(direction, text, trid, tokens[1:], buf[pos:nl + 1], None, None, off, ts))
                    pos = nl + 1
                    continue
            else:
                length = None
                if ntok >= (2 if trid is None else 3) and (minver == 0 or (self.state.effective or minver) >= minver):
                    last = tokens[-1]
                    if last.isdigit():
                        length = int(last) if len(last) < 19 else to_length(last)
                    elif lookup in STRICT_LENGTH:
                        append(Anomaly("msnp.payload.bad_length", f"{text} length field {last[:20]!r}",
                                       direction, off, ts, trid))
                elif lookup in STRICT_LENGTH and lookup != b"UBX":
                    append(Anomaly("msnp.payload.bad_length", f"{text} has no length field",
                                   direction, off, ts, trid))
                if length is None:
                    append(Command(direction, text, trid, tokens[1:], buf[pos:nl + 1], None, None, off, ts))
                    pos = nl + 1
                    continue
            start = nl + 1
            if length > max_payload:
                # Framed as the client frames it (the length is honoured), but not kept.
                append(Anomaly("msnp.payload.too_large",
                               f"{text} announces {length} bytes (cap {max_payload}); skipped, not kept",
                               direction, off, ts, trid))
                append(Command(direction, text, trid, tokens[1:], buf[pos:start], None, length, off, ts))
                end = start + length
                if end <= n:
                    if length:
                        append(Skipped(direction, buf[start:end], base + start, ts))
                    pos = end
                    continue
                if start < n:
                    append(Skipped(direction, buf[start:], base + start, ts))
                self._mode, self._need = _SKIP, end - n
                self._offset = base + n
                return
            end = start + length
            if end <= n:
                append(Command(direction, text, trid, tokens[1:], buf[pos:start], buf[start:end], length, off, ts))
                pos = end
                continue
            # The payload is not all here yet.
            self._partial = Command(direction, text, trid, tokens[1:], buf[pos:start], None, length, off, ts)
            self._mode = _PAYLOAD
            self._need = length
            rest = buf[start:]
            self._offset = base + start
            if rest:
                self._chunks = [rest]
                self._pending_len = len(rest)
            return
        rest = buf[pos:] if pos else buf
        self._offset = base + pos
        if rest:
            self._chunks = [rest]
            self._pending_len = len(rest)
            if len(rest) > max_line:
                self._overlong_pending(ts, out)

    def _slow_tokens(self, content: bytes, tokens: list[bytes], offset: int, ts, out: list):
        """Tokens of an unusual line (odd white space, unknown code), or None to skip it."""
        direction = self.direction
        if 9 in content or b"" in tokens:  # 9: tab (see _parse on byte values)
            if 9 in content:
                out.append(Anomaly("msnp.whitespace.tab", "tab used as a separator", direction, offset, ts))
            spaced = content.replace(b"\t", b" ")
            if spaced.startswith(b" "):
                out.append(Anomaly("msnp.whitespace.leading", "white space before the command code",
                                   direction, offset, ts))
            if spaced.endswith(b" ") and spaced.strip(b" "):
                out.append(Anomaly("msnp.whitespace.trailing", "white space at the end of the line",
                                   direction, offset, ts))
            if b"  " in spaced.strip(b" "):
                out.append(Anomaly("msnp.whitespace.multiple_spaces", "more than one space between parameters",
                                   direction, offset, ts))
            tokens = [t for t in spaced.split(b" ") if t]
            if not tokens:
                out.append(Anomaly("msnp.line.empty", "empty line" if not content else "line of white space only",
                                   direction, offset, ts))
                return None
        if 13 in content:  # 13: carriage return
            out.append(Anomaly("msnp.newline.bare_cr", "bare \\r inside a line", direction, offset, ts))
        code = tokens[0]
        if code in KNOWN_COMMANDS:
            return tokens
        plain = len(code) == 3 and code.isascii()
        if plain and code.isdigit():
            if self.direction == C2S:
                out.append(Anomaly("msnp.error.from_client", f"client sent error code {code.decode()}",
                                   direction, offset, ts))
            return tokens
        if plain and code.isalpha() and not self._garbage:
            if code.isupper():
                out.append(Anomaly("msnp.command.unknown", f"unknown command {code.decode()}",
                                   direction, offset, ts))
                return tokens
            out.append(Anomaly("msnp.command.lowercase", f"command code {code.decode()!r}",
                               direction, offset, ts))
            return tokens
        if not self._garbage:
            if not code.isascii() and len(code) <= 6:
                out.append(Anomaly("msnp.command.non_ascii", f"command code {code[:12]!r}", direction, offset, ts))
            else:
                out.append(Anomaly("msnp.line.garbage", f"undecodable line {content[:40]!r}", direction, offset, ts))
            self._garbage = True
        return None

    def _syn_block_line(self, lookup: bytes, tokens: list[bytes]) -> bool:
        """Whether an LSG/LST line has the MSNP8+ shape (no TrID)."""
        state = self.state
        version = state.effective
        if version is not None:
            return version >= SYN_BLOCK_VERSION
        # Unknown version (the capture starts after VER): the lines seen tell the dialect.
        # MSNP2-7 list lines start with a TrID and the list version (`LST 8 FL 12 1 2 handle
        # nick`, `LSG 8 12 1 1 0 name 0`); MSNP8+ ones with a handle, or with a group id
        # and name (`LSG 0 Other%20Contacts 0`). Once one line has shown its dialect,
        # the ambiguous ones are read in it.
        if state.max_version and state.max_version < SYN_BLOCK_VERSION:
            return False
        if state.min_version >= SYN_BLOCK_VERSION:
            return True
        if _old_list_line(lookup, tokens):
            state.max_version = SYN_BLOCK_VERSION - 1
            return False
        return True

    def _trid(self, tokens: list[bytes], ntok: int, offset: int, ts, out: list, text: str, client: bool):
        if ntok < 2:
            out.append(Anomaly("msnp.trid.missing", f"{text} without a TrID", self.direction, offset, ts))
            return None
        token = tokens[1]
        if not token.isdigit():
            out.append(Anomaly("msnp.trid.not_integer", f"{text} TrID {token[:20]!r}", self.direction, offset, ts))
            return None
        trid = int(token)
        if trid > TRID_MAX:
            out.append(Anomaly("msnp.trid.out_of_range", f"{text} TrID {trid}", self.direction, offset, ts, trid))
        elif trid == 0 and client:
            out.append(Anomaly("msnp.trid.zero_from_client", f"{text} 0", self.direction, offset, ts, trid))
        return trid

    def _error_shape(self, code: bytes, tokens, ntok, trid, offset, ts, out):
        """Payload length of a numeric error, or None; flags odd shapes."""
        number = int(code)
        if number not in ERROR_NAMES:
            out.append(Anomaly("msnp.error.unknown_code", f"error {number}", self.direction, offset, ts, trid))
        if ntok <= 2:
            return None
        version = self.state.effective
        if ntok == 3 and tokens[2].isdigit() and (version is None or version >= ERROR_PAYLOAD_VERSION):
            return to_length(tokens[2])
        out.append(Anomaly("msnp.error.with_params", f"error {number} with {ntok - 2} extra parameter(s)",
                           self.direction, offset, ts, trid))
        return None

    def _learn_version(self, tokens: list[bytes], trid, offset: int, ts, out: list) -> None:
        versions = [v for v in (parse_version(t) for t in tokens[2:]) if v is not None]
        state = self.state
        if self.direction == C2S:
            if versions:
                state.offered = versions
            return
        if versions:
            chosen = versions[0]
            if state.offered and chosen not in state.offered:
                out.append(Anomaly("msnp.version.not_offered",
                                   f"server chose MSNP{chosen}; client offered "
                                   + ", ".join(f"MSNP{v}" for v in state.offered),
                                   self.direction, offset, ts, trid))
            state.version = chosen
        elif tokens[2:3] == [b"0"]:
            out.append(Anomaly("msnp.version.rejected",
                               "server supports none of "
                               + (", ".join(f"MSNP{v}" for v in state.offered) or "the offered versions"),
                               self.direction, offset, ts, trid))


_DEFAULT_LIMITS = (DEFAULT_MAX_LINE, DEFAULT_MAX_PAYLOAD)


def _limits(max_line: int, max_payload: int) -> tuple:
    """A reader's (max_line, max_payload): the defaults' one tuple when they are those."""
    if max_line == DEFAULT_MAX_LINE and max_payload == DEFAULT_MAX_PAYLOAD:
        return _DEFAULT_LIMITS
    return (max_line, max_payload)


def connection_readers(version: int | None = None, *, max_line: int = DEFAULT_MAX_LINE,
                       max_payload: int = DEFAULT_MAX_PAYLOAD):
    """A connection's shared `ProtocolState` and its two readers `(state, c2s, s2c)`.

    The compiled core's (`analyzer._core`, same contract, same event objects) when it was
    built, else these; odd limits or versions (negative) stay on this reference.
    """
    from analyzer.core import CORE
    plain = (version is None or (type(version) is int and version >= 0)) and max_line >= 0 and max_payload >= 0
    mod = CORE if CORE is not None and plain else None
    state = (mod.ProtocolState if mod else ProtocolState)(version)
    reader = mod.CommandReader if mod else CommandReader
    return (state, reader(C2S, state, max_line=max_line, max_payload=max_payload),
            reader(S2C, state, max_line=max_line, max_payload=max_payload))

