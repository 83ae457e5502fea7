"""The HTML timeline: one self-contained file that shows a whole capture.

`HtmlTimeline` is a sink (see `analysis.Sink`). It turns each command (and each
anomaly or skipped run that no command explains) into one compact row, pairs
the rows of each transaction, and at `close()` writes a single HTML file:
inline CSS and JavaScript, the data embedded as JSON, a Content-Security-Policy
that forbids every network access (`default-src 'none'`, the inline script and
style allowed by a per-file nonce). Opening it makes no request to any host or
file.

Safety: every string from the wire is data. The JSON is embedded with `<`,
`>`, `&`, U+2028 and U+2029 escaped, so nothing in it can close the script
element; the page builds its DOM with `textContent` only.

Memory (streaming): a row is encoded as JSON text as soon as it is seen and
spooled to an anonymous temporary file; what comes later about it (the
transaction that pairs it, an anomaly found after it) goes to a second spool,
as a small record the row points to. What the writer needs of each row (its
spool offset and length, time, transaction link, late-anomaly link, kind and
anomaly count: `ROW_BYTES`) is a fixed-size record in a third file, the row
table, written in blocks of `BLOCK` rows per connection and updated in place.
So memory does not grow with the rows: per connection it holds its counters
and link facts, one block being filled (at most BLOCK x ROW_BYTES bytes), 8
bytes per block written, 8 bytes per anomaly row merged into its command, and,
while the connection is open, the (direction, offset) -> row index of its last
`INDEX_WINDOW` commands (that is how a transaction or a late anomaly finds its
rows; the pairing gives up earlier than that, see `Limits.max_pending` and
`MAX_REPLIES`). At `close()`
the document is written chunk by chunk through `analyzer.outputs.atomic` (a
failed run leaves no half page): meta, then the rows read back from the spool
in lane order with their links patched in, then the merged chronological order.
No step holds the page or all rows as Python objects.

Size: rows are embedded in chunks of `CHUNK` rows, each its own
`<script type="application/json">` element, parsed only when a row in it is
first needed; the page draws only the rows on screen (a virtual list). The
first screen is drawn before the browser has even read the later chunks.

Secrets go through the run's `Redactor` (params, payloads, link cookies). The
payload column's length is the length on the wire, before redaction.
"""

from __future__ import annotations

import heapq
import io
import json
import math
import os
import re
import secrets
import struct
import tempfile
from array import array
from bisect import bisect_left
from collections import Counter
from typing import NamedTuple

from analyzer import __version__
from analyzer.anomalies import CATALOGUE, spec
from analyzer.msnp import C2S, Anomaly, Command, Skipped, Transaction
from analyzer.analysis.linking import Linker
from analyzer.analysis.redact import Redactor
from analyzer.outputs.atomic import open_output
from analyzer.text import clean_data
from analyzer.outputs.html.template import embed_json, write_page

CHUNK = 1000
LANE_CHUNK = 1000          # lanes per `d{k}` element of lane details
# Lane fields the first screen does not need: written after the rows (elements d0.., then the
# chats in `dc`) and merged into meta.lanes when the document has been read.
LANE_DETAILS = ("link", "unlinked", "participants", "density", "anomalies", "referral", "parent")
DIRS = {C2S: 0, "s2c": 1}
BINS = 240                 # meta.bins: equal bins of the capture's time range (lanes[i].density)
# Times at or past this (1973-03-03) are wall-clock epoch seconds; smaller ones are a clock of their
# own (a transcript's seconds from its start). The two are never put on one axis: the page shows
# the main clock (wall-clock when there is any) and gives each clock its own start.
WALL_CLOCK = 1e8
INDEX_WINDOW = 16384       # commands per open connection whose (direction, offset) finds their row
ENDED_WINDOW = 16          # of those, kept once the connection ended (plugins' last anomalies)
PENDING_KEYS = 256         # positions per connection with anomalies waiting for their command
CAPTURE_ANOMALIES = 1000   # capture-level anomalies listed with their detail (all are counted)
REWRITES = 10000           # proxy/mitm rewrites listed (all are counted)
BLOCK = 64                 # rows per block of the row table
# A row's record in the row table: spool offset (-1: merged away), length, time (NaN: none),
# transaction link (-1 none; >= 0 a transaction record; <= -2 reply of row -p-2), the last
# late-anomaly record (-1 none; a chain), flags (_COMMAND | anomaly count).
_REC = struct.Struct("<qIdqqB")
ROW_BYTES = _REC.size
_AT, _LENGTH, _TIME, _PAIR, _LATE, _FLAGS = 0, 8, 12, 20, 28, 36
_Q = struct.Struct("<q")
_SURROGATE = re.compile("[\ud800-\udfff]")
_B = struct.Struct("<B")

# The columns of a row as the page reads it (a JSON array, for size; the page's
# script uses the same positions): the lane's index, time, direction (DIRS, 2: none),
# the code ("!" an anomaly, "~" skipped bytes), TrID, parameters or detail, payload
# (0 or split_payload's list), anomalies (0 or [[name, detail], ...]), and the
# transaction link (0, [0, reply rows, outcome, latency, error] on a request,
# [1, request row] on a reply).
LANE, TS, DIR, CODE, TRID, TEXT, PAYLOAD, ANOMALIES, PAIR = range(9)

_COMMAND = 0x80            # flags: the row is a command; the low 7 bits count its anomalies (saturating)
_NO_PAIR = -1
_HEAD = struct.Struct("<I")


class LaneTransaction(NamedTuple):
    """A transaction, by the lane positions of its request and replies (as spooled)."""
    replies: list[int]
    outcome: str
    latency: float | None
    error: str | None
_MIME_HEAD = b"MIME-Version"


def hexdump(data: bytes, width: int = 16) -> str:
    lines = []
    for pos in range(0, len(data), width):
        part = data[pos:pos + width]
        hexes = " ".join(f"{b:02x}" for b in part)
        text = "".join(chr(b) if 0x20 <= b < 0x7F else "." for b in part)
        lines.append(f"{pos:06x}  {hexes:<{width * 3 - 1}}  {text}")
    return "\n".join(lines)


def _is_text(data: bytes) -> str | None:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return None
    for ch in text:
        if ch < " " and ch not in "\r\n\t":
            return None
    return text


def split_payload(payload: bytes, wire_length: int | None = None) -> list:
    """[headers text or "", body text, is_hex, length]: MIME headers apart, binary bodies as hex.
    `length` is `wire_length` when given (the bytes on the wire when `payload` is the redacted copy)."""
    headers, body = b"", payload
    if payload.startswith(_MIME_HEAD) or (b"\r\n\r\n" in payload[:4096] and b":" in payload.split(b"\r\n", 1)[0]):
        end = payload.find(b"\r\n\r\n")
        if end >= 0:
            headers, body = payload[:end], payload[end + 4:]
    head_text = headers.decode("utf-8", "backslashreplace")
    length = len(payload) if wire_length is None else wire_length
    text = _is_text(body)
    if text is None:
        return [head_text, hexdump(body), 1, length]
    return [head_text, text, 0, length]


def _inert(value) -> bytes:
    """`embed_json` as UTF-8; a lone surrogate (a plugin's charset, a file name that is not
    UTF-8) makes every string of the value cleaned (analyzer.text) first."""
    text = embed_json(value)
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        return embed_json(clean_data(value)).encode("utf-8")


class _Spool:
    """An anonymous temporary file of records written once and read back by offset."""

    def __init__(self) -> None:
        self.file = tempfile.TemporaryFile(prefix="msnp-html-")
        self.fd = self.file.fileno()
        self.size = 0
        self.dirty = False

    def append(self, data: bytes) -> int:
        at = self.size
        self.file.write(data)
        self.size += len(data)
        self.dirty = True
        return at

    def read(self, at: int, length: int) -> bytes:
        if self.dirty:
            self.file.flush()
            self.dirty = False
        return os.pread(self.file.fileno(), length, at)

    def record(self, data: bytes) -> int:
        """A length-prefixed record (the patch spool's records)."""
        return self.append(_HEAD.pack(len(data)) + data)

    def read_record(self, at: int) -> bytes:
        head = self.read(at, 260)
        (length,) = _HEAD.unpack_from(head)
        if length <= len(head) - 4:
            return head[4:4 + length]
        return self.read(at + 4, length)

    def close(self) -> None:
        self.file.close()


class _Table:
    """The row table: fixed-size records (`_REC`) in blocks of BLOCK rows, each block one
    connection's, written and updated in place by offset (no buffering to flush)."""

    def __init__(self) -> None:
        self.file = tempfile.TemporaryFile(prefix="msnp-html-", buffering=0)
        self.fd = self.file.fileno()
        self.size = 0

    def block(self, data: bytes) -> int:
        at = self.size
        os.pwrite(self.fd, data.ljust(BLOCK * _REC.size, b"\0"), at)
        self.size += BLOCK * _REC.size
        return at

    def close(self) -> None:
        self.file.close()


class LaneInfo:
    """What the page shows of a connection once it has ended (the Connection is released)."""

    __slots__ = ("role", "client", "server", "version_label", "handle", "first_ts", "last_ts",
                 "commands", "anomalies", "outcomes")

    def __init__(self, conn) -> None:
        for name in ("role", "client", "server", "version_label", "handle", "first_ts", "last_ts"):
            setattr(self, name, getattr(conn, name, None))
        self.commands = Counter(getattr(conn, "commands", ()))
        self.anomalies = Counter(getattr(conn, "anomalies", ()))
        self.outcomes = Counter(getattr(conn, "outcomes", ()))


def clock_of(ts: float) -> str:
    """ "wall" for epoch seconds, "relative" for a clock of its own (see WALL_CLOCK)."""
    return "wall" if ts >= WALL_CLOCK else "relative"


class _Lane:
    """One connection's rows: packed per-row arrays (see the module docstring) and bounded state."""

    __slots__ = ("conn", "info", "count", "blocks", "buf", "index", "pending",
                 "dead", "referrals", "waiting_rewrites")

    def __init__(self, conn) -> None:
        self.conn = conn                     # until the connection ends, then `info`
        self.info: LaneInfo | None = None
        self.count = 0                       # rows
        self.blocks = array("q")             # offsets of this lane's blocks in the row table
        self.buf = bytearray()               # the block being filled (rows past the written blocks)
        self.index: dict[int, int] = {}      # (offset << 1 | direction) -> row, the last INDEX_WINDOW
        self.pending: dict[int, list] = {}   # key -> [(row, anomaly entry)] waiting for their command
        self.dead: array | None = None       # rows merged into their command
        self.referrals: dict[int, int] = {}  # offset of a server XFR/RNG line -> its row
        self.waiting_rewrites: dict[int, int] = {}  # key -> index in the timeline's rewrites

    def snapshot(self):
        return self.info if self.info is not None else LaneInfo(self.conn)


class HtmlTimeline:
    """A sink that spools rows and writes the HTML timeline at close()."""

    def __init__(self, out, linker: Linker, redactor: Redactor | None = None,
                 sources: list[str] | None = None, title: str | None = None) -> None:
        self.out = out
        self.linker = linker
        self.redactor = redactor or Redactor()
        self.sources = list(sources or [])
        self.title = title
        self.lanes: dict[str, _Lane] = {}
        self.capture_anomalies: list[list] = []
        self.capture_counts: Counter[str] = Counter()
        self.anomaly_names: set[str] = set()
        self.rewrites: list[dict] = []
        self.rewrite_rows: list[tuple[str, int] | None] = []
        self.rewrites_seen = 0
        self.clocks: dict[str, list[float]] = {}   # "wall"/"relative" -> [first, last]
        self.rows_spool = _Spool()
        self.patches = _Spool()
        self.table = _Table()
        self.written = False
        self.plugins = None  # a PluginManager: decoded payload views and report sections
        # Callables that return more report sections (plain data, as plugins' are): the objects
        # exchanged and the contact lists (cli.run.Run), asked for when the page is written.
        self.extra_sections: list = []
        self._sections: list | None = None

    # -- sink interface -------------------------------------------------------

    def _lane(self, conn) -> _Lane:
        lane = self.lanes.get(conn.id)
        if lane is None:
            lane = self.lanes[conn.id] = _Lane(conn)
        return lane

    def event(self, conn, event) -> None:
        kind = type(event)
        if conn is None:
            if kind is Anomaly:
                self.capture_counts[event.name] += 1
                self.anomaly_names.add(event.name)
                if len(self.capture_anomalies) < CAPTURE_ANOMALIES:
                    self.capture_anomalies.append([event.name, self.redactor.detail(event), event.ts])
            return
        lane = self._lane(conn)
        if kind is Command:
            self._command(lane, event, conn)
        elif kind is Anomaly:
            self._anomaly(lane, event)
        elif kind is Transaction:
            self._transaction(lane, event)
        elif kind is Skipped:
            self._row(lane, event.ts, DIRS.get(event.direction, 2), "~", None,
                      f"{len(event.raw)} bytes skipped (not MSNP)", 0, b"0", 0)
        elif kind is dict and event.get("kind") == "rewrite":
            self._rewrite(conn.id, lane, event)

    def stream(self, conn) -> None:
        lane = self._lane(conn)
        lane.conn = conn
        lane.info = LaneInfo(conn)
        lane.conn = None
        # The connection is over: its transactions are settled. Keep the last few positions
        # for anomalies plugins raise at their end; forget the rest.
        index = lane.index
        if len(index) > ENDED_WINDOW:
            lane.index = dict(list(index.items())[-ENDED_WINDOW:])
        lane.pending = {}
        lane.waiting_rewrites = {}
        if lane.buf:
            # Its last block goes to the table too (padded; a later row is written into it).
            lane.blocks.append(self.table.block(bytes(lane.buf)))
            lane.buf = bytearray()

    def close(self) -> None:
        if self.written:
            return
        if self.plugins is not None:
            self.plugins.close()  # let plugins finish (their last anomalies, their sections) first
        self.written = True
        if hasattr(self.out, "write"):
            self.write(self.out)
        else:
            # Written beside the target and renamed over it: a run that fails never leaves
            # half a page (nor an empty one).
            with open_output(self.out) as f:
                self.write(f)

    # -- rows -----------------------------------------------------------------

    def _row(self, lane: _Lane, ts, direction: int, code: str, trid, text: str, payload,
             anomalies: bytes, count: int, command: bool = False) -> int:
        """Spool one row (all but its lane, anomalies and link: those are written at the end)."""
        head = _inert([ts, direction, code, trid, text, payload])
        data = head[1:-1] + b"\t" + anomalies + b"\n"
        if ts is None:
            ts = math.nan
        else:
            span = self.clocks.get(clock_of(ts))
            if span is None:
                self.clocks[clock_of(ts)] = [ts, ts]
            elif ts < span[0]:
                span[0] = ts
            elif ts > span[1]:
                span[1] = ts
        rec = _REC.pack(self.rows_spool.append(data), len(data), ts, _NO_PAIR, -1,
                        (_COMMAND if command else 0) | min(count, 0x7F))
        pos = lane.count
        lane.count += 1
        block, i = divmod(pos, BLOCK)
        if block < len(lane.blocks):
            os.pwrite(self.table.fd, rec, lane.blocks[block] + i * _REC.size)
        else:
            buf = lane.buf
            buf += rec
            if len(buf) == BLOCK * _REC.size:
                lane.blocks.append(self.table.block(bytes(buf)))
                lane.buf = bytearray()
        return pos

    def _get(self, lane: _Lane, pos: int, field: int, kind: struct.Struct = _Q):
        block, i = divmod(pos, BLOCK)
        if block < len(lane.blocks):
            return kind.unpack(os.pread(self.table.fd, kind.size, lane.blocks[block] + i * _REC.size + field))[0]
        return kind.unpack_from(lane.buf, i * _REC.size + field)[0]

    def _set(self, lane: _Lane, pos: int, field: int, value, kind: struct.Struct = _Q) -> None:
        block, i = divmod(pos, BLOCK)
        if block < len(lane.blocks):
            os.pwrite(self.table.fd, kind.pack(value), lane.blocks[block] + i * _REC.size + field)
        else:
            kind.pack_into(lane.buf, i * _REC.size + field, value)

    def _records(self, lane: _Lane):
        """(row, record) of every row of `lane`, in order, read block by block."""
        fd, size, left = self.table.fd, _REC.size, lane.count
        pos = 0
        for at in lane.blocks:
            take = min(BLOCK, left - pos)
            if take <= 0:
                return
            for rec in _REC.iter_unpack(os.pread(fd, take * size, at)):
                yield pos, rec
                pos += 1
        if pos < left:
            for rec in _REC.iter_unpack(bytes(lane.buf)):
                yield pos, rec
                pos += 1

    def _index(self, lane: _Lane, key: int, pos: int) -> None:
        index = lane.index
        index[key] = pos
        if len(index) > INDEX_WINDOW:
            del index[next(iter(index))]

    def _command(self, lane: _Lane, cmd: Command, conn=None) -> None:
        red = self.redactor
        params = " ".join(red.params(cmd, decoded=True))
        payload = 0
        if cmd.payload is not None:
            payload = split_payload(red.payload(cmd) or b"", len(cmd.payload))
            if self.plugins is not None:
                view = self.plugins.decode_payload(cmd, conn)
                if view is not None:
                    payload.append(view.to_dict(red))
        d = DIRS[cmd.direction]
        key = cmd.offset << 1 | d
        anoms, count = b"0", 0
        waiting = lane.pending.pop(key, None)
        if waiting:
            # Anomalies reported before their command (a line's white space) move onto it.
            if lane.dead is None:
                lane.dead = array("q")
            for r, _ in waiting:
                self._set(lane, r, _AT, -1)
                lane.dead.append(r)
            anoms = b"[" + b",".join(entry for _, entry in waiting) + b"]"
            count = len(waiting)
        pos = self._row(lane, cmd.ts, d, cmd.cmd, cmd.trid, params, payload, anoms, count, command=True)
        self._index(lane, key, pos)
        if d == 1 and (cmd.cmd == "XFR" or cmd.cmd == "RNG"):
            lane.referrals[cmd.offset] = pos
        if lane.waiting_rewrites:
            i = lane.waiting_rewrites.pop(key, None)
            if i is not None:
                self.rewrite_rows[i] = (self.rewrite_rows[i][0], pos)

    def _anomaly(self, lane: _Lane, anomaly: Anomaly) -> None:
        detail = self.redactor.detail(anomaly)
        entry = [anomaly.name, detail]
        self.anomaly_names.add(anomaly.name)
        d = DIRS.get(anomaly.direction, 2)
        if anomaly.offset is not None and d < 2:
            key = anomaly.offset << 1 | d
            pos = lane.index.get(key)
            if pos is not None:
                # After its command was spooled: a record in the patch spool, chained to the row.
                data = _Q.pack(self._get(lane, pos, _LATE)) + _inert(entry)
                self._set(lane, pos, _LATE, self.patches.record(data))
                flags = self._get(lane, pos, _FLAGS, _B)
                if flags & 0x7F < 0x7F:
                    self._set(lane, pos, _FLAGS, flags + 1, _B)
                return
        # Not (yet) tied to a command: its own row, where it happened; merged into the
        # command at the same position if that command comes next.
        text = _inert(entry)
        pos = self._row(lane, anomaly.ts, d, "!", anomaly.trid, detail, 0, b"[" + text + b"]", 1)
        if anomaly.offset is not None and d < 2:
            pending = lane.pending
            pending.setdefault(key, []).append((pos, text))
            if len(pending) > PENDING_KEYS:
                del pending[next(iter(pending))]  # its row stays a row of its own

    def _transaction(self, lane: _Lane, txn: Transaction) -> None:
        index = lane.index
        req = index.get(txn.request.offset << 1)
        if req is None:
            return
        replies = []
        for r in txn.replies:
            pos = index.get(r.offset << 1 | DIRS[r.direction])
            if pos is not None:
                replies.append(pos)
                if self._get(lane, pos, _PAIR) == _NO_PAIR:
                    self._set(lane, pos, _PAIR, -req - 2)
        latency = None if txn.latency_ms is None else round(txn.latency_ms, 3)
        self._set(lane, req, _PAIR, self.patches.record(_inert([replies, txn.outcome, latency, txn.error])))

    def _rewrite(self, sid: str, lane: _Lane, record: dict) -> None:
        """A proxy/mitm `rewrite` record: the referral as the server sent it and as the client got it."""
        self.rewrites_seen += 1
        if len(self.rewrites) >= REWRITES:
            return
        offset = record.get("offset")
        pos = None
        if isinstance(offset, int):
            key = offset << 1 | 1
            pos = lane.index.get(key)
            if pos is None and len(lane.waiting_rewrites) < PENDING_KEYS:
                lane.waiting_rewrites[key] = len(self.rewrites)
        self.rewrites.append({"ts": record.get("ts"), "command": record.get("cmd"), "target": record.get("target"),
                              "upstream": record.get("original"), "given": record.get("rewritten")})
        self.rewrite_rows.append((sid, pos))

    # -- the page -------------------------------------------------------------

    def _order(self, links: dict) -> tuple[list[str], dict[str, str | None]]:
        order: list[str] = []
        lane_session: dict[str, str | None] = {}
        for session in links["sessions"]:
            for sid in session["streams"]:
                if sid in self.lanes and sid not in lane_session:
                    order.append(sid)
                    lane_session[sid] = session["session"]
        for sid in self.lanes:
            if sid not in lane_session:
                order.append(sid)
                lane_session[sid] = None
        return order, lane_session

    def _layout(self, order: list[str]) -> tuple[dict[str, int], dict[str, list[int]]]:
        """Each lane's first global row, and its merged-away rows (sorted)."""
        base: dict[str, int] = {}
        dead: dict[str, list[int]] = {}
        n = 0
        for sid in order:
            lane = self.lanes[sid]
            base[sid] = n
            gone = sorted(lane.dead) if lane.dead is not None else []
            dead[sid] = gone
            n += lane.count - len(gone)
        return base, dead

    def _main_clock(self) -> str | None:
        """The clock the page's axis shows: wall-clock time when the capture has any."""
        return "wall" if "wall" in self.clocks else ("relative" if self.clocks else None)

    @property
    def first_ts(self) -> float | None:
        main = self._main_clock()
        return None if main is None else self.clocks[main][0]

    @property
    def last_ts(self) -> float | None:
        main = self._main_clock()
        return None if main is None else self.clocks[main][1]

    def _density(self, lane: _Lane, clock: str | None) -> list[list[int]]:
        """The lane's rows in BINS equal bins of its clock's span (the main clock's span is the page's)."""
        if clock is None or clock not in self.clocks:
            return []
        first, last = self.clocks[clock]
        span = (last - first) or 1.0
        bins: dict[int, list[int]] = {}
        for _, (at, _, ts, _, _, f) in self._records(lane):
            if ts != ts or at < 0 or clock_of(ts) != clock:  # no time; merged away; another clock
                continue
            b = min(BINS - 1, int((ts - first) / span * BINS))
            cell = bins.get(b)
            if cell is None:
                cell = bins[b] = [b, 0, 0]
            if f & _COMMAND:
                cell[1] += 1
            cell[2] += f & 0x7F
        return [bins[b] for b in sorted(bins)]

    def meta(self) -> dict:
        """What the page embeds besides its rows (see /work/tools/html-contract.md)."""
        meta, _ = self._plan()
        meta["lanes"] = list(meta["lanes"])
        return meta

    def _plan(self):
        links = self.linker.result()
        order, lane_session = self._order(links)
        base, dead = self._layout(order)
        lane_no = {sid: i for i, sid in enumerate(order)}
        total_rows = sum(self.lanes[sid].count - len(dead[sid]) for sid in order)

        def glob(sid: str, pos: int) -> int:
            return base[sid] + pos - bisect_left(dead[sid], pos)

        totals_cmd: Counter[str] = Counter()
        totals_anom: Counter[str] = Counter(self.capture_counts)
        outcomes: Counter[str] = Counter()
        versions: Counter[str] = Counter()
        parent = links["parent"]
        referred = links.get("referred", {})
        link_by_child = {l["to"]: l for l in links["links"]}
        unlinked_by_stream: dict[str, list[str]] = {}
        for u in links["unlinked"]:
            for end in (u.get("to"), u.get("from")):
                if end:
                    unlinked_by_stream.setdefault(end, []).append(u["reason"])
        chats = {c["stream"]: c for c in links["chats"]}
        start = None
        for sid in order:
            info = self.lanes[sid].snapshot()
            totals_cmd.update(info.commands)
            totals_anom.update(info.anomalies)
            outcomes.update(info.outcomes)
            if info.version_label:
                versions[info.version_label] += 1
            if info.first_ts is not None and (start is None or info.first_ts < start):
                start = info.first_ts

        def lane_dicts():
            """Each lane's meta, one at a time (written one by one: many connections make a big meta)."""
            for sid in order:
                lane = self.lanes[sid]
                yield self._lane_meta(sid, lane, lane.snapshot(), lane_session, base, dead, lane_no, glob,
                                      parent, referred, link_by_child, unlinked_by_stream, chats)

        meta = self._meta(links, lane_dicts(), lane_no, glob, start, total_rows, totals_cmd, totals_anom,
                          outcomes, versions, len(order))
        return meta, (order, lane_no, base, dead, glob)

    def _lane_meta(self, sid, lane, info, lane_session, base, dead, lane_no, glob, parent, referred,
                   link_by_child, unlinked_by_stream, chats) -> dict:
        link = link_by_child.get(sid)
        referral = None
        ref = referred.get(sid)
        if ref is not None and ref.stream in self.lanes and ref.offset is not None:
            pos = self.lanes[ref.stream].referrals.get(ref.offset)
            if pos is not None:
                referral = {"lane": lane_no[ref.stream], "row": glob(ref.stream, pos)}
        return {
            "id": sid, "session": lane_session[sid], "role": info.role,
            "client": info.client, "server": info.server,
            "version": info.version_label, "handle": info.handle,
            "start": info.first_ts, "end": info.last_ts,
            "first": base[sid], "count": lane.count - len(dead[sid]), "commands": sum(info.commands.values()),
            "anomalies": dict(info.anomalies), "parent": parent.get(sid),
            "link": None if link is None else {"by": link["by"], "evidence": link.get("evidence"),
                                               "from": link["from"], "cookie": link.get("cookie"),
                                               "sessid": link.get("sessid")},
            "referral": referral,
            "unlinked": unlinked_by_stream.get(sid, []),
            "participants": chats.get(sid, {}).get("participants", []),
            "clock": None if info.first_ts is None else clock_of(info.first_ts),
            "density": self._density(lane, None if info.first_ts is None else clock_of(info.first_ts)),
        }

    def _meta(self, links, lanes, lane_no, glob, start, total_rows, totals_cmd, totals_anom, outcomes,
              versions, connections: int) -> dict:
        from analyzer.core import IMPLEMENTATION
        names = sorted(set(totals_anom) | self.anomaly_names)
        rewrites = []
        for rec, where in zip(self.rewrites, self.rewrite_rows):
            sid, pos = where
            rewrites.append({"lane": lane_no.get(sid), "row": None if pos is None else glob(sid, pos), **rec})
        if self._sections is None:
            self._sections = ((self.plugins.html_sections() if self.plugins is not None else [])
                              + [sec for provide in self.extra_sections for sec in provide()])
        chunks = (total_rows + CHUNK - 1) // CHUNK
        meta = {
            "title": self.title or ("MSNP timeline: " + ", ".join(self.sources) if self.sources else "MSNP timeline"),
            "sources": self.sources, "start": start, "rows": total_rows, "chunk": CHUNK,
            "chunks": chunks, "merged": chunks, "redacted": self.redactor.enabled,
            "provenance": {"sources": self.sources, "first_ts": self.first_ts, "last_ts": self.last_ts,
                           "clock": self._main_clock(),
                           "clocks": {k: {"first_ts": v[0], "last_ts": v[1]} for k, v in self.clocks.items()},
                           "version": __version__, "implementation": IMPLEMENTATION,
                           "redacted": self.redactor.enabled},
            "bins": BINS,
            "lanes": lanes,
            "sessions": [{k: s[k] for k in ("session", "handle", "version", "start", "end", "streams",
                                             "complete")} for s in links["sessions"]],
            "unlinked": links["unlinked"],
            "chats": [{"lane": lane_no[c["stream"]], "start": c["start"], "end": c["end"],
                       "participants": [p["handle"] for p in c["participants"]]}
                      for c in links["chats"] if c["stream"] in lane_no],
            "rewrites": rewrites,
            "totals": {"logins": sum(1 for s in links["sessions"] if s["complete"]),
                       "sessions": len(links["sessions"]), "connections": connections,
                       "versions": dict(versions), "commands": sum(totals_cmd.values()),
                       "by_command": dict(totals_cmd.most_common()), "transactions": dict(outcomes),
                       "anomalies": dict(sorted(totals_anom.items())), "rewrites": self.rewrites_seen},
            "catalogue": {n: [str(spec(n).severity), spec(n).summary] for n in names},
            "capture_anomalies": self.capture_anomalies,
            "sections": self._sections,
        }
        return meta

    def _rows(self, plan):
        """Every row as embedded JSON text (bytes), in lane order, links and late anomalies patched in."""
        order, lane_no, base, dead, glob = plan
        rows, patches = self.rows_spool, self.patches
        for sid in order:
            lane = self.lanes[sid]
            li = str(lane_no[sid]).encode()
            for pos, (where, length, _, p, chain, _) in self._records(lane):
                if where < 0:
                    continue
                data = rows.read(where, length)
                cut = data.rindex(b"\t")
                head, anoms = data[:cut], data[cut + 1:-1]
                if chain >= 0:
                    extra = []
                    while chain >= 0:
                        rec = patches.read_record(chain)
                        (chain,) = _Q.unpack_from(rec)
                        extra.append(rec[8:])
                    extra.reverse()
                    body = b",".join(extra)
                    anoms = b"[" + body + b"]" if anoms == b"0" else anoms[:-1] + b"," + body + b"]"
                if p == _NO_PAIR:
                    link = b"0"
                elif p <= -2:
                    link = b"[1,%d]" % glob(sid, -p - 2)
                else:
                    replies, outcome, latency, error = json.loads(patches.read_record(p))
                    link = b"[0," + _inert([[glob(sid, r) for r in replies], outcome, latency, error])[1:]
                yield b"[" + li + b"," + head + b"," + anoms + b"," + link + b"]"

    def _merged(self, plan):
        """Global row indices in chronological order across lanes (ties: lane order). Each lane is
        merged in its own order, by the latest time seen so far in it (rows without a time, or a
        clock that steps back, keep their place in their lane)."""
        order, lane_no, base, dead, glob = plan

        def lane_keys(li: int, sid: str):
            lane = self.lanes[sid]
            g = base[sid]
            latest = -math.inf
            for _, (at, _, ts, _, _, _) in self._records(lane):
                if at < 0:
                    continue
                if ts > latest:  # NaN compares false: keeps the latest
                    latest = ts
                yield (latest, li, g)
                g += 1

        for _, _, g in heapq.merge(*(lane_keys(li, sid) for li, sid in enumerate(order))):
            yield g

    def write(self, out) -> None:
        """Write the page to `out` (a text file) chunk by chunk."""
        meta, plan = self._plan()
        lanes = meta["lanes"]
        token = secrets.token_hex(16)  # where the lanes go, written one by one
        meta["lanes"] = token
        chats = meta.pop("chats")
        head, _, tail = _json_text(meta).partition(f'"{token}"')
        del meta
        # What the first screen does not need (LANE_DETAILS, the chats) is written after the rows:
        # the browser reads a bounded `meta` before the page's script runs, whatever the lane count.
        spool = tempfile.TemporaryFile("w+", encoding="utf-8")
        counted = [0]  # detail chunks begun

        def meta_text():
            yield head + "["
            for i, lane in enumerate(lanes):
                detail = {k: lane.pop(k) for k in LANE_DETAILS if k in lane}
                if i % LANE_CHUNK == 0:
                    spool.write("" if i == 0 else "]\n")
                    spool.write("[")
                    counted[0] += 1
                else:
                    spool.write(",")
                spool.write(_json_text(detail))
                yield _json_text(lane) if i == 0 else "," + _json_text(lane)
            if counted[0]:
                spool.write("]\n")
            yield "]" + tail

        def details():
            spool.seek(0)
            for line in spool:
                yield line.rstrip("\n")

        try:
            write_page(out, meta_text(), _chunks(self._rows(plan)),
                       _chunks(b"%d" % g for g in self._merged(plan)), nonce=secrets.token_urlsafe(18),
                       details=details(), chats=_json_text(chats))
        finally:
            spool.close()

    def render(self) -> str:
        """The whole page as one string (tests and small captures; `close()` streams it)."""
        buf = io.StringIO()
        self.write(buf)
        return buf.getvalue()

    def data(self) -> tuple[dict, list[list]]:
        """(meta, rows) as the page embeds them, parsed back from a rendering (for tests)."""
        return page_data(self.render())


def page_data(page: str) -> tuple[dict, list[list]]:
    """(meta, rows) of a written page, the lane details and chats merged back into meta as the
    page's script merges them once the document is read."""
    meta = json.loads(re.search(r'<script type="application/json" id="meta">(.*?)</script>', page, re.S).group(1))
    rows = [r for body in re.findall(r'<script type="application/json" id="c\d+">(.*?)</script>', page, re.S)
            for r in json.loads(body)]
    details = [d for body in re.findall(r'<script type="application/json" id="d\d+">(.*?)</script>', page, re.S)
               for d in json.loads(body)]
    for lane, detail in zip(meta["lanes"], details):
        lane.update(detail)
    chats = re.search(r'<script type="application/json" id="dc">(.*?)</script>', page, re.S)
    if chats:
        meta["chats"] = json.loads(chats.group(1))
    meta.pop("details", None)
    return meta, rows


def _json_text(value) -> str:
    """`embed_json`, with every string cleaned (analyzer.text) when one holds a lone surrogate
    (checked without making an encoded copy)."""
    text = embed_json(value)
    if _SURROGATE.search(text):
        text = embed_json(clean_data(value))
    return text


def _chunks(items):
    """JSON array texts of up to CHUNK items each (str), from items as JSON texts (bytes)."""
    batch: list[bytes] = []
    for item in items:
        batch.append(item)
        if len(batch) == CHUNK:
            yield (b"[" + b",".join(batch) + b"]").decode("utf-8")
            batch = []
    if batch:
        yield (b"[" + b",".join(batch) + b"]").decode("utf-8")


__all__ = ["HtmlTimeline", "split_payload", "hexdump", "CHUNK", "CATALOGUE", "INDEX_WINDOW", "ROW_BYTES", "BLOCK"]
