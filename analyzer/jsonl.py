"""JSON Lines export: one JSON object per line, for jq and scripts.

The schema (also in the README) is a contract: fields are only ever added.
Kinds: "command", "transaction", "anomaly", "skipped", "stream" (written when
a connection closes, with its final role and version), and later kinds added
by other layers ("link", ...). `stream` ids are strings, stable within a run.
"""

from __future__ import annotations

import json
from typing import IO

from .codec import Anomaly, Command, Skipped, Transaction
from .connection import Connection
from .redact import Redactor


# One encoder for the run: json.dumps with options builds a new JSONEncoder per call.
_encode = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


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
            "transactions": dict(conn.outcomes), "anomalies": dict(conn.anomalies)}
