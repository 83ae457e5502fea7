"""Sans-IO rewriting of the server addresses in `XFR` and `RNG` lines (server to client).

A proxy that wants to keep a client under observation when the server sends it
elsewhere (`XFR trid NS host:port ...`, `XFR trid SB host:port CKI cookie ...`,
`RNG sessid host:port CKI cookie ...`) replaces that `host:port` with an address
of its own. `AddressRewriter` does exactly that and nothing else:

- `feed(data)` takes the server's bytes in any chunking and returns
  `(out, rewrites)`: the bytes to forward now and a `Rewrite` record for each
  `XFR`/`RNG` line it saw. Every other byte comes out unchanged and at once.
  Only a line that starts with `XFR` or `RNG` is held back, until its line end
  (bounded by `max_line`; a longer one is released unchanged).
- It frames lines and payloads just enough to know where payloads are (the
  server-to-client payload commands of the codec's tables, version learnt from
  the server's `VER`), so the text `XFR 1 SB 1.2.3.4:1863 CKI x` inside a `MSG`
  body is never touched.
- `close()` returns whatever is still held (a truncated line), unchanged.
- `pending` is the bytes held right now: if a caller catches an exception from
  `feed`, forwarding `pending` (read before the call) plus the chunk loses nothing.
- The address to write comes from `route(kind, host, port)` (`kind` is `"NS"` or
  `"SB"`), which returns `(host, port)`, or None to leave the line alone.

It does no I/O and knows no clock, so the asyncio proxy and a mitmproxy addon can
share it; it never raises on input.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from analyzer.msnp.events import replace_token
from analyzer.msnp.facts import format_address, referral_fields
from analyzer.msnp.reader import DEFAULT_MAX_LINE, DEFAULT_MAX_PAYLOAD, parse_version
from analyzer.msnp.tables import ERROR_PAYLOAD_VERSION, S2C_PAYLOAD

Route = Callable[[str, str, int], "tuple[str, int] | None"]

_LINE, _PAYLOAD, _OVERLONG = range(3)
_HELD = (b"XFR", b"RNG")
_SPACE = b" \t\n\r\x0b\x0c"  # what bytes.split() takes for white space
_FRAMED = _SPACE + b"0123456789"  # a line starting with one of these may be an error code with a payload


@dataclass(frozen=True, slots=True)
class Rewrite:
    """One `XFR`/`RNG` address seen in the server's stream.

    `offset` is the line's offset in the server's byte stream; `rewritten` is
    None when the line was left as it was (`reason` says why).
    """
    cmd: str
    kind: str
    original: str
    rewritten: str | None
    offset: int
    reason: str | None = None


def _may_be_held(head: bytes, unfinished: bool) -> bool:
    """Could a line starting with `head` (up to 3 bytes) be an XFR or RNG line?"""
    if head in _HELD:
        return True
    return unfinished and len(head) < 3 and any(h.startswith(head) for h in _HELD)


class AddressRewriter:
    def __init__(self, route: Route, *, max_line: int = DEFAULT_MAX_LINE,
                 max_payload: int = DEFAULT_MAX_PAYLOAD, version: int | None = None) -> None:
        self.route = route
        self.max_line = max_line
        self.max_payload = max_payload
        self.version = version
        self._mode = _LINE
        self._need = 0            # payload bytes still to pass through
        self._line = bytearray()  # the current line so far (bytes already forwarded unless held)
        self._held = False        # the current line is being held back for rewriting
        self._offset = 0          # stream offset of the first byte of the next chunk

    @property
    def pending(self) -> bytes:
        """Bytes received but not yet returned (a held XFR/RNG line)."""
        return bytes(self._line) if self._held else b""

    def feed(self, data: bytes) -> tuple[bytes, list[Rewrite]]:
        out: list[bytes] = []
        rewrites: list[Rewrite] = []
        n = len(data)
        pos = 0
        run = 0  # start of the run of input bytes forwarded unchanged, not yet in out
        base = self._offset
        line = self._line
        if self._mode == _LINE and not line:
            pos = self._skim(data)  # whole ordinary lines and payloads, with few Python steps each
        while pos < n:
            if self._mode == _PAYLOAD:
                take = min(self._need, n - pos)
                self._need -= take
                pos += take
                if not self._need:
                    self._mode = _LINE
                continue
            nl = data.find(b"\n", pos)
            end = n if nl < 0 else nl + 1
            if self._mode == _OVERLONG:
                pos = end
                if nl >= 0:
                    self._mode = _LINE
                continue
            if not line:
                self._held = _may_be_held(data[pos:min(end, pos + 3)], nl < 0)
                if self._held and pos > run:
                    out.append(data[run:pos])
            elif self._held and len(line) < 3:
                # The line began as a prefix of XFR/RNG: is it one after all?
                if not _may_be_held((bytes(line) + data[pos:end])[:3], nl < 0):
                    out.append(bytes(line))
                    self._held = False
                    run = pos
            if nl < 0:  # the line goes on in a later chunk
                if len(line) + end - pos > self.max_line:
                    if self._held:
                        out.append(bytes(line))
                        self._held = False
                        run = pos
                    line.clear()
                    self._mode = _OVERLONG
                else:
                    line += data[pos:end]
                pos = end
                continue
            if line:
                start = base + pos - len(line)
                line += data[pos:end]
                whole = bytes(line)
                line.clear()
            else:
                start = base + pos
                whole = data[pos:end]
            pos = end
            tokens = whole.split() if len(whole) <= self.max_line + 2 else None
            if self._held:
                self._held = False
                out.append(self._rewrite(whole, tokens, start, rewrites) if tokens else whole)
                run = end
            if tokens:
                self._frame(tokens)
        if not self._held and run < n:
            out.append(data[run:] if run else data)
        self._offset = base + n
        return b"".join(out), rewrites

    def close(self) -> bytes:
        """End of stream: release a held, unfinished line unchanged."""
        rest = self.pending
        self._line.clear()
        self._held = False
        self._mode = _LINE
        return rest

    # -- internals ------------------------------------------------------------

    def _skim(self, data: bytes) -> int:
        """From a line start: pass whole lines that cannot be held, and payloads inside `data`.

        Returns where `feed`'s general loop takes over (an XFR/RNG line, an unfinished or
        long line, a payload going on past `data`), in the state it would have reached
        itself: a payload command's line (code, a space, ..., the length last) is framed
        here exactly as `_frame` does; VER and lines starting with a digit (error codes)
        or white space go through `_frame`; any other line cannot start a payload.
        """
        n = len(data)
        pos = 0
        find = data.find
        payload = S2C_PAYLOAD
        limit = self.max_line
        max_payload = self.max_payload
        while pos < n:
            nl = find(b"\n", pos)
            if nl < 0 or nl - pos > limit:
                return pos
            head = data[pos:pos + 3]
            if head in _HELD:
                return pos
            minver = payload.get(head)
            if minver is not None and data[pos + 3] in _SPACE:
                parts = data[pos:nl + 1].rsplit(None, 1)
                pos = nl + 1
                if len(parts) == 2:  # at least one token after the code
                    last = parts[1]
                    if (minver == 0 or (self.version or minver) >= minver) and last.isdigit():
                        length = int(last)
                        if length and length <= max_payload:
                            if pos + length > n:
                                self._mode = _PAYLOAD
                                self._need = length
                                return pos
                            pos += length
            elif head == b"VER" or data[pos] in _FRAMED:
                tokens = data[pos:nl + 1].split()
                pos = nl + 1
                if tokens:
                    self._frame(tokens)
                    if self._mode == _PAYLOAD:
                        if pos + self._need > n:
                            return pos
                        pos += self._need
                        self._mode = _LINE
                        self._need = 0
            else:
                pos = nl + 1
        return pos

    def _frame(self, tokens: list[bytes]) -> None:
        """Learn the version, and whether a payload follows this line."""
        code = tokens[0]
        if code == b"VER":
            for token in tokens[2:]:
                version = parse_version(token)
                if version is not None:
                    self.version = version
                    break
            return
        length = None
        minver = S2C_PAYLOAD.get(code)
        if minver is not None:
            if len(tokens) >= 2 and (minver == 0 or (self.version or minver) >= minver) and tokens[-1].isdigit():
                length = int(tokens[-1])
        elif code.isdigit() and len(tokens) == 3 and tokens[2].isdigit() and (
                self.version is None or self.version >= ERROR_PAYLOAD_VERSION):
            length = int(tokens[2])
        if length and length <= self.max_payload:
            self._mode = _PAYLOAD
            self._need = length

    def _rewrite(self, line: bytes, tokens: list[bytes], offset: int, rewrites: list[Rewrite]) -> bytes:
        code = tokens[0]
        if code not in _HELD:
            return line  # e.g. "XFRX ...": not an XFR line after all
        first = 2 if code == b"XFR" else 1  # XFR trid NS|SB host:port ...; RNG sessid host:port ... (no TrID)
        found = referral_fields(code.decode(), tokens[first:])
        if found is None:
            return line
        cmd, kind, original, address = found.cmd, found.kind, found.target, found.address
        index = first + found.index
        if address is None:
            rewrites.append(Rewrite(cmd, kind, original, None, offset, "not a host:port"))
            return line
        try:
            target = self.route(kind, *address)
        except Exception as exc:  # noqa: BLE001 - a routing failure leaves the line alone
            rewrites.append(Rewrite(cmd, kind, original, None, offset, f"{type(exc).__name__}: {exc}"))
            return line
        if target is None:
            rewrites.append(Rewrite(cmd, kind, original, None, offset, "no route"))
            return line
        new = format_address(*target)
        rewrites.append(Rewrite(cmd, kind, original, new, offset))
        replaced = replace_token(line, index, new.encode())
        return line if replaced is None else replaced


