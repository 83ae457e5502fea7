"""JSON Lines export: one JSON object per line, for jq and scripts.

The schema (also in the README) is a contract: fields are only ever added.
Kinds: "command", "transaction", "anomaly", "skipped", "stream" (written when
a connection closes, with its final role and version), and later kinds added
by other layers ("link", ...). `stream` ids are strings, stable within a run.
"""

from __future__ import annotations

import codecs
import io
import json
import sys
from typing import IO

import orjson

from analyzer.msnp import Anomaly, Command, Skipped, Transaction
from analyzer.outputs.atomic import AtomicFile
from analyzer.analysis.connection import Connection
from analyzer.analysis.redact import SECRET_COMMANDS, Redactor
from analyzer.text import clean_data


# One encoder for the run: json.dumps with options builds a new JSONEncoder per call.
# allow_nan=False: a non-finite time must not become `Infinity` or `NaN`, which are not
# JSON; `reference` then writes the record through clean_data (null there).
_encode = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode
# The same, all ASCII (for a text stream that cannot take the rest: see _write_cleaned).
_encode_ascii = json.JSONEncoder(ensure_ascii=True, separators=(",", ":"), allow_nan=False).encode
# What that encoder uses for a string (the C version): quotes and escapes it.
_quote = json.encoder.encode_basestring

# orjson writes what `_encode` writes for str, int, bool, None, list, tuple and dict with
# str keys. It differs on floats outside [1e-4, 1e16) (1e-05 vs 0.00001, 1e+16 vs 1e16) and
# on NaN and infinities (null vs NaN): `_plain` checks every float first. Anything else
# (subclasses, dataclasses, non-str keys, ints past 64 bits, lone surrogates) makes orjson
# raise, and `encode` then uses `_encode`. tests/outputs/test_jsonl.py holds the two to it.
_OPTIONS = orjson.OPT_PASSTHROUGH_SUBCLASS | orjson.OPT_PASSTHROUGH_DATACLASS | orjson.OPT_PASSTHROUGH_DATETIME
_dumps = orjson.dumps
_LINE_OPTIONS = _OPTIONS | orjson.OPT_APPEND_NEWLINE   # the same text with its "\n" (one_line leaves "\n" be)


def _plain(value) -> bool:
    """True when every float inside `value` is one orjson writes as `_encode` does."""
    kind = type(value)
    if kind is float:
        return value == 0.0 or 1e-4 <= abs(value) < 1e16   # NaN compares False: not plain
    if kind is dict:
        for item in value.values():
            if type(item) not in _SCALARS and not _plain(item):
                return False
        return True
    if kind is list or kind is tuple:
        for item in value:
            if type(item) not in _SCALARS and not _plain(item):
                return False
    return True


_SCALARS = frozenset({str, int, bool, type(None)})


# Characters that JSON leaves raw inside a string but that line splitters other than "\n"
# split on (Python's str.splitlines, JavaScript's line terminators): escaped, so a record
# is one line for every reader. JSON text outside strings is ASCII, so escaping them
# wherever they appear in a line is exact.
_LINE_BREAKS = {0x85: "\\u0085", 0x2028: "\\u2028", 0x2029: "\\u2029"}


def one_line(line: str) -> str:
    """`line` with U+0085, U+2028 and U+2029 written as JSON escapes."""
    if line.isascii() or ("\x85" not in line and "\u2028" not in line and "\u2029" not in line):
        return line
    return line.translate(_LINE_BREAKS)


def reference(rec) -> str:
    """The rule: `_encode(rec)` with `one_line`; a record holding NaN or an infinity (not
    JSON) or a lone surrogate (not UTF-8) is written through analyzer.text.clean_data:
    null, and escapes."""
    try:
        line = _encode(rec)
        if not line.isascii():
            line.encode("utf-8")  # a lone surrogate (orjson refused it too) cannot be written
        return one_line(line)
    except ValueError:  # NaN or an infinity; or UnicodeEncodeError, a ValueError too
        return one_line(_encode(clean_data(rec)))


def encode(rec) -> str:
    """`reference(rec)`, byte for byte, through orjson when it can."""
    if _plain(rec):
        try:
            return one_line(_dumps(rec, option=_OPTIONS).decode())
        except TypeError:
            pass
    return reference(rec)


PAYLOAD_MEMO = 4096             # payload texts remembered by a writer, at most (see JsonLinesWriter._payload_text) ...
PAYLOAD_MEMO_HELD = 1 << 20    # ... holding at most this many bytes, as _payload_text counts them
PAYLOAD_MEMO_BYTES = 512       # the largest payload remembered
# What a remembered text holds besides the payload's bytes and the text: its key tuple, the
# payload's bytes object, its share of the dict's table (as analyzer.msnp.mime counts it).
_PAYLOAD_ENTRY = sys.getsizeof((0, 0, 0)) + sys.getsizeof(b"") + 128


def _text(raw: bytes | None) -> str | None:
    return None if raw is None else raw.decode("utf-8", "backslashreplace")


def _binary_of(out):
    """The binary file under `out` when every line may be written there as UTF-8 bytes, else None.

    Only for an `AtomicFile` opened as text (UTF-8, no newline translation), which the
    run opens for this writer alone: every line of it then goes to the binary file (see
    JsonLinesWriter._put), so no text waits in its text layer to be overtaken. orjson
    writes bytes: a str line costs a decode here and an encode in the text layer, 0.4 us a
    line. Any other stream (stdout, StringIO, a test's) gets text, as before."""
    if type(out) is AtomicFile and isinstance(getattr(out, "file", None), io.TextIOWrapper):
        text = out.file
        if codecs.lookup(text.encoding).name == "utf-8":
            text.flush()   # anything written before as text goes first
            return text.buffer
    return None


class JsonLinesWriter:
    """A sink that writes every event as a line of JSON to a text stream."""

    def __init__(self, out: IO[str], redactor: Redactor | None = None, payloads: bool = True,
                 flush: bool = False) -> None:
        self.out = out   # sets _binary too (see the property)
        self.redactor = redactor or Redactor()
        self.payloads = payloads
        self.flush_each = flush
        self._formatter = _compiled_lines(self)
        self._compiled = self._formatter.lines if self._formatter is not None else None
        self._declined = self._line_of   # the Python writer's line of what the core leaves to it
        # (code, direction, payload) -> the payload's text as written, for small payloads: a
        # client's typing notifications repeat byte for byte, and the redactor's look at a
        # payload costs more than the look-up (bounded by PAYLOAD_MEMO and PAYLOAD_MEMO_HELD:
        # then forgotten all at once, which keeps a hit a bare look-up).
        self._payload_texts: dict[tuple, str] = {}
        self._payload_held = 0

    @property
    def out(self) -> IO[str]:
        """The text stream written to (assignable: a new one is written from then on)."""
        return self._out

    @out.setter
    def out(self, out: IO[str]) -> None:
        self._out = out
        self._binary = _binary_of(out)

    def record(self, conn: Connection | None, event) -> dict | None:
        stream = conn.id if conn is not None else None
        kind = type(event)
        if kind is Command:
            code = event.cmd
            # Redactor.params masks only codes of SECRET_COMMANDS (in any case): the parameters
            # of every other upper-case code are cmd.params as they are, without its look.
            params = (self.redactor.params(event) if code in SECRET_COMMANDS or not code.isupper()
                      else event.params)
            rec = {"kind": "command", "stream": stream, "dir": event.direction, "ts": event.ts,
                   "offset": event.offset, "cmd": code, "trid": event.trid,
                   "params": params, "payload_len": event.payload_len}
            if event.payload is not None and self.payloads:
                rec["payload"] = self._payload_text(event)
            return rec
        if kind is Transaction:
            req = event.request
            rec = {"kind": "transaction", "stream": stream, "trid": event.trid, "cmd": event.cmd,
                   "request": {"ts": req.ts, "offset": req.offset},
                   "replies": [{"cmd": r.cmd, "ts": r.ts, "offset": r.offset} for r in event.replies],
                   "outcome": event.outcome, "error": event.error, "latency_ms": event.latency_ms}
            if event.more_replies:
                rec["more_replies"] = event.more_replies  # past the listed MAX_REPLIES (msnp.reply.list_limit)
            return rec
        if kind is Anomaly:
            return {"kind": "anomaly", "stream": stream, "name": event.name,
                    "severity": str(event.severity), "dir": event.direction, "ts": event.ts,
                    "offset": event.offset, "trid": event.trid, "detail": self.redactor.detail(event),
                    "summary": event.summary}
        if kind is Skipped:
            return {"kind": "skipped", "stream": stream, "dir": event.direction, "ts": event.ts,
                    "offset": event.offset, "length": len(event.raw)}
        if isinstance(event, dict):
            return {"stream": stream, **event} if "stream" not in event else event
        return None

    def _payload_text(self, cmd: Command) -> str:
        """`_text(self.redactor.payload(cmd))`, remembered for small payloads."""
        payload = cmd.payload
        if len(payload) > PAYLOAD_MEMO_BYTES:
            return _text(self.redactor.payload(cmd))
        key = (cmd.cmd, cmd.direction, payload)
        texts = self._payload_texts
        text = texts.get(key)
        if text is None:
            text = _text(self.redactor.payload(cmd))
            held = _PAYLOAD_ENTRY + len(payload) + sys.getsizeof(text) + sys.getsizeof(key[0])
            if len(texts) >= PAYLOAD_MEMO or self._payload_held + held > PAYLOAD_MEMO_HELD:
                texts.clear()
                self._payload_held = 0
            texts[key] = text
            self._payload_held += held
        return text

    def event(self, conn: Connection | None, event) -> None:
        text = self._text(conn, (event,))
        if text:
            self._write_lines(text, lambda: self._write_cleaned(self.record(conn, event)))

    def event_batch(self, conn: Connection | None, events: list) -> None:
        """`event` for each of a feed's events, their lines written in one piece (text the
        output cannot take: the batch goes event by event, as `event` writes it)."""
        compiled, binary = self._compiled, self._binary
        if compiled is not None and binary is not None:
            # The common case, `_text` inline (a frame less per feed): the core's bytes to the file.
            data = compiled(conn.id if conn is not None else None, events, self._declined, conn)
            if data and not self._out.closed:
                binary.write(data)
                if self.flush_each:
                    self._out.flush()
            return
        text = self._text(conn, events)
        if text:
            self._write_lines(text, lambda: [self.event(conn, event) for event in events])

    def _write_lines(self, text: str | bytes, otherwise) -> None:
        """Write `text`, lines from `_text` (UTF-8 bytes for `_binary`, else text); when the text
        stream cannot encode them, `otherwise()` writes the same records another way."""
        out = self._out
        if out.closed:
            return  # the run's file was closed (a report rendered after it): nothing to write to
        if self._binary is not None:
            self._binary.write(text)   # UTF-8 already (see _binary_of)
        else:
            try:
                out.write(text)   # a text stream encodes all of it before writing any
            except UnicodeEncodeError:
                otherwise()
        if self.flush_each:
            out.flush()

    def _text(self, conn: Connection | None, events) -> str | bytes | None:
        """The lines (newlines included) of `events`, in order: UTF-8 bytes for `_binary`,
        else text; empty or None: no record. The compiled core's formatter writes the whole
        batch in one call and calls `_line_of` back for each record it leaves to Python."""
        compiled = self._compiled
        if compiled is not None:
            data = compiled(conn.id if conn is not None else None, events, self._declined, conn)
            return data if self._binary is not None else data.decode()
        as_bytes = self._binary is not None
        line_of = self._line_of
        if len(events) == 1:
            return line_of(conn, events[0], as_bytes)
        lines = []
        for event in events:
            line = line_of(conn, event, as_bytes)
            if line is not None:
                lines.append(line)
        return (b"" if as_bytes else "").join(lines)

    def _line_of(self, conn: Connection | None, event, as_bytes: bool = True) -> str | bytes | None:
        """The line (with its newline) the Python writer writes `event` as, or None: no record;
        through orjson where it writes what the reference writes, else the reference.
        `as_bytes`: the same line in UTF-8."""
        kind = type(event)
        rec = self.record(conn, event)
        if rec is None:
            return None
        # The codec's records: only their times and latencies can be floats, so only those
        # are checked (`encode` walks the whole record), each by `_plain`'s test for a float
        # (written here once; tests/outputs/test_jsonl.py holds the lines to `reference`, times
        # outside the range included).
        if kind is Command or kind is Anomaly or kind is Skipped:
            times = (event.ts,)
        elif kind is Transaction:
            times = (event.request.ts, event.latency_ms, *[reply.ts for reply in event.replies])
        else:
            times = None    # another layer's record: `encode` decides
        data = None
        if times is not None:
            for t in times:
                if type(t) is float and t != 0.0 and not 1e-4 <= abs(t) < 1e16:
                    break
            else:
                try:
                    data = _dumps(rec, option=_LINE_OPTIONS)
                except TypeError:
                    pass
                else:
                    if data.isascii():
                        return data if as_bytes else data.decode()
        if data is not None:
            line = one_line(data.decode())
        elif times is None:
            line = encode(rec) + "\n"
        else:
            line = reference(rec) + "\n"
        return line.encode() if as_bytes else line

    def stream(self, conn: Connection) -> None:
        # The core's formatter writes the line of `stream_record` when it can (None: the
        # Python writer's; tests/outputs/test_jsonl_batch.py holds the two equal).
        line = self._formatter.stream_line(conn) if self._compiled is not None else None
        if line is None:
            self._write(stream_record(conn))
            return
        self._write_lines(line if self._binary is not None else line.decode(),
                          lambda: self._write_cleaned(stream_record(conn)))

    def _write(self, rec: dict) -> None:
        self._line(rec, encode(rec))

    def _line(self, rec: dict, line: str) -> None:
        out = self._out
        if out.closed:
            return  # the run's file was closed (a report rendered after it): nothing to write to
        try:
            self._put(one_line(line) + "\n")  # a text stream encodes all of it before writing any
        except UnicodeEncodeError:
            self._write_cleaned(rec)
        if self.flush_each:
            out.flush()

    def _put(self, text: str) -> None:
        """Write `text` (whole lines): to the binary file when there is one, else the text stream."""
        if self._binary is not None:
            self._binary.write(text.encode())   # a lone surrogate raises here, before any byte is written
        else:
            self._out.write(text)

    def _write_cleaned(self, rec: dict) -> None:
        # A lone surrogate (a plugin's odd charset, a file name that is not UTF-8):
        # every JSON line stays valid UTF-8 (see analyzer.text).
        cleaned = clean_data(rec)
        try:
            self._put(one_line(_encode(cleaned)) + "\n")
        except UnicodeEncodeError:
            # A text stream in another encoding (`--json -` with PYTHONIOENCODING=ascii or a
            # latin-1 terminal): the same JSON with every non-ASCII character as its escape.
            self._put(_encode_ascii(cleaned) + "\n")

    def close(self) -> None:
        self.out.flush()


def _compiled_lines(writer: JsonLinesWriter):
    """The compiled core's formatter of `command`, `transaction` and `skipped` lines for
    `writer` (`JsonFormatter.lines(stream, events, declined, conn)`: a batch's lines as UTF-8
    bytes, each record it leaves to the Python writer (a payload the free-text rules may
    change, a value past what it formats, another kind) written by `declined(conn, event)` in
    its place; the secret parameters of commands, and the payloads masked whole, it masks with
    the redactor's table and key: `Redactor.core_table()`), or None: no core, or a subclass
    that changes `record` or `_line_of` (its records are its own)."""
    from analyzer.core import CORE
    if CORE is None or type(writer).record is not JsonLinesWriter.record \
            or type(writer)._line_of is not JsonLinesWriter._line_of:
        return None
    return CORE.JsonFormatter(Command, Transaction, Skipped, sorted(SECRET_COMMANDS),
                              writer.redactor.enabled, writer.payloads, writer.redactor.core_table())


def stream_record(conn: Connection) -> dict:
    """The `stream` record of `conn`: the rule (the core's `JsonFormatter.stream_line` writes
    the same line, reading the same attributes; tests/outputs/test_jsonl_batch.py holds them equal)."""
    return {"kind": "stream", "stream": conn.id, "client": conn.client, "server": conn.server,
            "role": conn.role, "version": conn.version_label, "handle": conn.handle,
            "start": conn.first_ts, "end": conn.last_ts,
            "bytes": {"c2s": conn.bytes["c2s"], "s2c": conn.bytes["s2c"]},
            "commands": conn.command_total,
            "transactions": dict(conn.outcome_counts()), "anomalies": dict(conn.anomalies),
            **({"legs": conn.legs} if getattr(conn, "legs", None) else {}),
            **({"pending_given_up": given_up} if (given_up := getattr(conn, "given_up", 0)) else {})}
