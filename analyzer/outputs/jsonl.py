"""JSON Lines export: one JSON object per line, for jq and scripts.

The schema (also in the README) is a contract: fields are only ever added.
Kinds: "command", "transaction", "anomaly", "skipped", "stream" (written when
a connection closes, with its final role and version), and later kinds added
by other layers ("link", ...). `stream` ids are strings, stable within a run.
"""

from __future__ import annotations

import json
from typing import IO

from analyzer.msnp import Anomaly, Command, Skipped, Transaction
from analyzer.analysis.connection import Connection
from analyzer.analysis.redact import Redactor


# One encoder for the run: json.dumps with options builds a new JSONEncoder per call.
_encode = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
# What that encoder uses for a string (the C version): quotes and escapes it.
_quote = json.encoder.encode_basestring


def _number(value) -> str | None:
    """A JSON number or null as `_encode` writes it; None for anything else (then `_encode` is used)."""
    if value is None:
        return "null"
    kind = type(value)
    if kind is float:
        return float.__repr__(value) if value - value == 0.0 else None  # NaN and infinities: _encode
    if kind is int:
        return int.__repr__(value)
    return None


def command_line(stream, event: Command, params: list[str], payload: str | None) -> str | None:
    """The JSON of a command record, byte for byte what `_encode(record)` gives, built
    directly (one per command: the bulk of an export); None when a field is of a type
    this does not know, and the caller falls back to `_encode`."""
    ts = _number(event.ts)
    trid = _number(event.trid)
    length = _number(event.payload_len)
    if ts is None or trid is None or length is None or type(event.offset) is not int:
        return None
    if stream is None:
        stream_json = "null"
    elif type(stream) is str:
        stream_json = _quote(stream)
    else:
        return None
    line = (f'{{"kind":"command","stream":{stream_json},"dir":{_quote(event.direction)},"ts":{ts},'
            f'"offset":{int.__repr__(event.offset)},"cmd":{_quote(event.cmd)},"trid":{trid},'
            f'"params":[{",".join(map(_quote, params))}],"payload_len":{length}')
    if payload is not None:
        return f'{line},"payload":{_quote(payload)}}}'
    return line + "}"


def _text(raw: bytes | None) -> str | None:
    return None if raw is None else raw.decode("utf-8", "backslashreplace")


class JsonLinesWriter:
    """A sink that writes every event as a line of JSON to a text stream."""

    def __init__(self, out: IO[str], redactor: Redactor | None = None, payloads: bool = True,
                 flush: bool = False) -> None:
        self.out = out
        self.redactor = redactor or Redactor()
        self.payloads = payloads
        self.flush_each = flush

    def record(self, conn: Connection | None, event) -> dict | None:
        stream = conn.id if conn is not None else None
        kind = type(event)
        if kind is Command:
            rec = {"kind": "command", "stream": stream, "dir": event.direction, "ts": event.ts,
                   "offset": event.offset, "cmd": event.cmd, "trid": event.trid,
                   "params": self.redactor.params(event), "payload_len": event.payload_len}
            if self.payloads and event.payload is not None:
                rec["payload"] = _text(self.redactor.payload(event))
            return rec
        if kind is Transaction:
            req = event.request
            return {"kind": "transaction", "stream": stream, "trid": event.trid, "cmd": event.cmd,
                    "request": {"ts": req.ts, "offset": req.offset},
                    "replies": [{"cmd": r.cmd, "ts": r.ts, "offset": r.offset} for r in event.replies],
                    "outcome": event.outcome, "error": event.error, "latency_ms": event.latency_ms}
        if kind is Anomaly:
            return {"kind": "anomaly", "stream": stream, "name": event.name,
                    "severity": str(event.severity), "dir": event.direction, "ts": event.ts,
                    "offset": event.offset, "trid": event.trid, "detail": event.detail,
                    "summary": event.summary}
        if kind is Skipped:
            return {"kind": "skipped", "stream": stream, "dir": event.direction, "ts": event.ts,
                    "offset": event.offset, "length": len(event.raw)}
        if isinstance(event, dict):
            return {"stream": stream, **event} if "stream" not in event else event
        return None

    def event(self, conn: Connection | None, event) -> None:
        if type(event) is Command:
            # The fast path of record() + _write() for the commonest record.
            params = self.redactor.params(event)
            payload = None
            if self.payloads and event.payload is not None:
                payload = _text(self.redactor.payload(event))
            line = command_line(conn.id if conn is not None else None, event, params, payload)
            if line is not None:
                self.out.write(line + "\n")
                if self.flush_each:
                    self.out.flush()
                return
        rec = self.record(conn, event)
        if rec is not None:
            self._write(rec)

    def stream(self, conn: Connection) -> None:
        self._write(stream_record(conn))

    def _write(self, rec: dict) -> None:
        self.out.write(_encode(rec))
        self.out.write("\n")
        if self.flush_each:
            self.out.flush()

    def close(self) -> None:
        self.out.flush()


def stream_record(conn: Connection) -> dict:
    return {"kind": "stream", "stream": conn.id, "client": conn.client, "server": conn.server,
            "role": conn.role, "version": conn.version_label, "handle": conn.handle,
            "start": conn.first_ts, "end": conn.last_ts,
            "bytes": {"c2s": conn.bytes["c2s"], "s2c": conn.bytes["s2c"]},
            "commands": sum(conn.commands.values()),
            "transactions": dict(conn.outcomes), "anomalies": dict(conn.anomalies),
            **({"legs": conn.legs} if getattr(conn, "legs", None) else {})}
