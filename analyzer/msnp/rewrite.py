"""Sans-IO rewriting of the server addresses in `XFR` and `RNG` lines (server to client).

A proxy that wants to keep a client under observation when the server sends it
elsewhere (`XFR trid NS host:port ...`, `XFR trid SB host:port CKI cookie ...`,
`RNG sessid host:port CKI cookie ...`) replaces that `host:port` with an address
of its own. `AddressRewriter` does exactly that and nothing else:

- `feed(data)` takes the server's bytes in any chunking and returns
  `(out, rewrites)`: the bytes to forward now and a `Rewrite` record for each
  `XFR`/`RNG` line it saw. Every other byte comes out unchanged and at once.
  Only a line that starts with `XFR` or `RNG` is held back, until its line end
  (bounded by `max_line`; a longer one is released unchanged, with a `Rewrite`
  record whose `rewritten` is None, since the client may still follow it).
- It frames the stream with the codec's one framing rule
  (`analyzer.msnp.framing`: the same tokens, payload commands, versions and
  lengths as the reader, and as a client reads them), so the text
  `XFR 1 SB 1.2.3.4:1863 CKI x` inside a `MSG` body is never touched, and a line
  is rewritten exactly when a client would parse it as that referral: the
  first token exactly `XFR` (then a TrID, `NS` or `SB`, the address) or `RNG`
  (then a session id, the address), tokens split on spaces and tabs, leading
  white space allowed. Payload lengths are honoured whatever their size (the
  analysis's `--max-payload` limits what it keeps, not how the stream is framed).
- The version that decides which commands carry payloads is the server's `VER`
  choice, else the client's best offer (`client(data)` reads the client's first
  line, as the reader's `ProtocolState.effective` does).
- `close()` returns whatever is still held (a truncated line), unchanged.
- `pending` is the bytes held right now: if a caller catches an exception from
  `feed`, forwarding `pending` (read before the call) plus the chunk loses nothing.
- The address to write comes from `route(kind, host, port)` (`kind` is `"NS"` or
  `"SB"`), which returns `(host, port)`, or a reason (a str) or None to leave
  the line alone: then the `Rewrite` record's `rewritten` is None. A record with
  an address is made only for a line actually rewritten.

It does no I/O and knows no clock, so the asyncio proxy and a mitmproxy addon can
share it; it never raises on input.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from analyzer.msnp import framing
from analyzer.msnp.events import S2C
from analyzer.msnp.facts import format_address, referral_fields
from analyzer.msnp.framing import HUGE, content, parse_version, payload_length, too_long, version_of
from analyzer.msnp.reader import DEFAULT_MAX_LINE

Route = Callable[[str, str, int], "tuple[str, int] | str | None"]  # an address, a reason to refuse, or None

_LINE, _PAYLOAD, _OVERLONG = range(3)
_HELD = (b"XFR", b"RNG")
_NOT, _MAYBE, _SURE = range(3)  # could the line being read be an XFR/RNG referral?
_S2C_PAYLOAD = framing.PAYLOAD[S2C]
_DIGITS = b"0123456789"


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


class AddressRewriter:
    def __init__(self, route: Route, *, max_line: int = DEFAULT_MAX_LINE, version: int | None = None) -> None:
        self.route = route
        self.max_line = max_line
        self.version = version    # the server's VER choice
        self.offered = None       # the client's best offer (its first line, when VER)
        self.wants_client = True  # client(data) still has something to learn
        self._client_line = b""
        self._mode = _LINE
        self._need = 0            # payload bytes still to pass through
        self._line = bytearray()  # the current line so far (bytes already forwarded unless held)
        self._held = False        # the current line is being held back for rewriting
        self._sure = False        # ... and its first token starts with XFR/RNG (not just white space so far)
        self._head = b""          # the line's first bytes after leading white space (up to 3) while unsure
        self._offset = 0          # stream offset of the first byte of the next chunk

    @property
    def pending(self) -> bytes:
        """Bytes received but not yet returned (a held XFR/RNG line)."""
        return bytes(self._line) if self._held else b""

    @property
    def effective(self) -> int | None:
        """The version that decides framing: the server's choice, else the client's best offer."""
        return self.version if self.version is not None else self.offered

    def client(self, data: bytes) -> None:
        """Client-to-server bytes: their first line, if `VER`, gives the offered versions."""
        if not self.wants_client:
            return
        line = self._client_line + data
        nl = line.find(b"\n")
        if nl < 0:
            self._client_line = line
            if len(line) > self.max_line:
                self.wants_client, self._client_line = False, b""
            return
        self.wants_client, self._client_line = False, b""
        if too_long(line[:nl + 1], self.max_line):
            return
        toks = framing.tokens(content(line[:nl + 1]))
        if toks and toks[0] == b"VER":
            versions = [v for v in map(parse_version, toks[2:]) if v is not None]
            if versions:
                self.offered = max(versions)

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
                self._head = b""
                verdict = self._look(data[pos:end], nl >= 0)
                self._held, self._sure = verdict != _NOT, verdict == _SURE
                if self._held and pos > run:
                    out.append(data[run:pos])
            elif self._held and not self._sure:
                verdict = self._look(data[pos:end], nl >= 0)
                if verdict == _NOT:
                    out.append(bytes(line))
                    self._held = False
                    run = pos
                else:
                    self._sure = verdict == _SURE
            if nl < 0:  # the line goes on in a later chunk
                if len(line) + end - pos > self.max_line:
                    if self._held:
                        out.append(bytes(line))  # the rest of the chunk goes out with the run from pos
                        self._overlong(bytes(line) + data[pos:end], base + pos - len(line), rewrites)
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
            tokens = None if too_long(whole, self.max_line) else framing.tokens(content(whole))
            if self._held:
                self._held = False
                if tokens is None:
                    out.append(whole)
                    self._overlong(whole, start, rewrites)
                else:
                    out.append(self._rewrite(whole, tokens, start, rewrites))
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

    def _look(self, chunk: bytes, complete: bool) -> int:
        """Could the current line be a referral, given its next bytes `chunk`? (_NOT, _MAYBE or _SURE)"""
        head = self._head
        if not head:
            chunk = chunk.lstrip(b" \t")  # still in the line's leading white space
        head = (head + chunk[:3])[:3]
        self._head = head
        if len(head) == 3:
            return _SURE if head in _HELD else _NOT
        if complete:
            return _NOT
        return _MAYBE if not head or b"XFR".startswith(head) or b"RNG".startswith(head) else _NOT

    def _skim(self, data: bytes) -> int:
        """From a line start: pass whole lines that cannot be held, and payloads inside `data`.

        Returns where `feed`'s general loop takes over (a line that may be a referral, an
        unfinished or long line, a payload going on past `data`), in the state it would
        have reached itself. A payload command's line (its code then a space) is framed
        here by a faster copy of `framing.payload_length` (tests/msnp/test_rewrite.py
        compares this path with the general loop, tests/msnp/test_framing.py both with
        the rule); VER and lines starting with a digit (error codes) or a tab go through
        `_frame`; any other line cannot start a payload.
        """
        n = len(data)
        pos = 0
        find = data.find
        payload = _S2C_PAYLOAD
        limit = self.max_line
        tabs = 9 in data  # one scan of the read spares one per line (see reader._parse)
        while pos < n:
            nl = find(b"\n", pos)
            if nl < 0 or nl - pos > limit:
                return pos
            head = data[pos:pos + 3]
            if head in _HELD or data[pos] in b" \t":
                return pos
            entry = payload.get(head)
            if entry is not None and data[pos + 3] == 32:  # 32: a space after the code
                line = data[pos:nl - 1] if data[nl - 1] == 13 else data[pos:nl]
                pos = nl + 1
                # The rule's tokens, counted only as far as framing needs (2, or 3 and more):
                # one rsplit when the line has single spaces only, else framing.tokens.
                parts = line.rsplit(b" ", 2)
                last = parts[-1]
                if not last or (tabs and 9 in line) or (len(parts) == 3 and not parts[1]):
                    parts = framing.tokens(line)
                    last = parts[-1]
                if len(parts) >= entry[1] and last.isdigit():
                    minver = entry[0]
                    if minver == 0 or ((self.version if self.version is not None else self.offered)
                                       or minver) >= minver:
                        length = int(last) if len(last) < 19 else HUGE
                        if length:
                            if pos + length > n:
                                self._mode = _PAYLOAD
                                self._need = length
                                return pos
                            pos += length
            elif head == b"VER" or data[pos] in _DIGITS or (entry is not None and data[pos + 3] == 9):
                text = data[pos:nl + 1]
                pos = nl + 1
                tokens = framing.tokens(content(text))
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
        """Learn the version, and whether a payload follows this line (framing's rule)."""
        version = version_of(tokens)
        if version is not None:
            self.version = version
            return
        length = payload_length(tokens, S2C, self.effective)
        if length:
            self._mode = _PAYLOAD
            self._need = length

    def _overlong(self, line: bytes, offset: int, rewrites: list[Rewrite]) -> None:
        """A held line passed --max-line: forwarded unchanged; reported when its code is XFR/RNG."""
        first = framing.tokens(line[:self.max_line])[:1]
        if first and first[0] in _HELD:
            rewrites.append(Rewrite(first[0].decode(), "?", "?", None, offset,
                                    f"line longer than {self.max_line} bytes: forwarded unchanged"))

    def _rewrite(self, line: bytes, tokens: list[bytes], offset: int, rewrites: list[Rewrite]) -> bytes:
        code = tokens[0]
        if code not in _HELD:
            return line  # e.g. "XFRX ...", "XFR\x0b...": not a referral to a client either
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
        if isinstance(target, str):  # the route's reason for leaving the line alone
            rewrites.append(Rewrite(cmd, kind, original, None, offset, target))
            return line
        new = format_address(*target)
        start, stop = framing.token_spans(content(line))[index]
        rewrites.append(Rewrite(cmd, kind, original, new, offset))
        return line[:start] + new.encode() + line[stop:]
