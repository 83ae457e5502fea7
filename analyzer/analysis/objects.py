"""What was exchanged: files, pictures and ink rebuilt from the traffic, and checked.

`Extractor` is a sink (see `analysis.run.Sink`). It follows

- P2P over the switchboard (`analyzer.msnp.p2p`, both header versions): the
  MSNSLP calls (INVITE with EUF-GUID and AppID, 200 OK, 603 Decline, BYE;
  split messages reassembled by `SlpAssembler`) and the data of each P2P
  session, placed by offset (version 1: offset and total size; version 2:
  total = the first message's bytes + its "data remaining", offset = total -
  remaining - bytes). A session is tied to its call by SessionID and the two
  parties; the file name and size come from the file-transfer context, the
  announced size and SHA1D of a display picture, emoticon, wink or voice clip
  from its MSNObject;
- MSNFTP (MSNP2-8): the `text/x-msmsgsinvite` invitation (file name, size,
  ACCEPT with AuthCookie, CANCEL) and the MSNFTP connection that presents the
  cookie (`USR handle cookie`, `FIL size`, data blocks);
- ink and pictures sent as MSG (`image/gif`, `application/x-ms-ink`, chunked
  by `Message-ID`/`Chunks`/`Chunk`), decoded from their `base64:` body.

A switchboard seen from both participants carries each message twice: the
data of a session is keyed by (sender, recipient, session id), not by
connection, so both copies fill one object (a second copy that differs from
the first is `objects.overlap_mismatch`; the first copy is kept).

Bytes go to a `Store` (`outputs.objects.DirectoryStore` writes files;
`MemoryStore` here, for tests; None keeps no bytes and hashes only what
arrives in order). Every object ends as one `ObjectRecord` (`records()` and
the `on_record` callback): complete, partial (with the missing byte ranges)
or declined; a transfer that never finishes is partial, never dropped.

Bounds, whatever the input claims: an object's bytes stop at `max_object`
(`objects.too_large`), all objects' at `max_total`; at most `max_open`
transfers and calls are followed at once (the least recently active is
finished as it stands, `objects.limit`); an object's received ranges are at
most `MAX_RANGES` (`objects.bad_range` beyond); sizes claimed by a header are
never allocated.
"""

from __future__ import annotations

import base64
import hashlib
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Callable, Protocol

from analyzer.msnp import C2S, Anomaly, Command
from analyzer.msnp.mime import parse_mime
from analyzer.msnp.msnftp import FileData
from analyzer.msnp.p2p import (APP_IDS, FILE_TRANSFER_GUID, MAX_SLP, MSNOBJECT_GUID, MsnObject, P2PMessage,
                               context_text, file_context, msnobject, parse_p2p, parse_slp, slp_address)

DEFAULT_MAX_OBJECT = 256 * 1024 * 1024       # bytes kept of one object
DEFAULT_MAX_TOTAL = 4 * 1024 * 1024 * 1024   # bytes kept of all objects of a run
DEFAULT_MAX_OPEN = 10_000                    # transfers, calls and invitations followed at once
MAX_RANGES = 4096                            # disjoint received ranges per object
MAX_PENDING_SLP = 1000                       # MSNSLP messages being reassembled at once
MAX_INK_CHUNKS = 1024
KEEP_RECORDS = 1000                          # object records kept for the report (all go to on_record)

P2P_TYPE = "application/x-msnmsgrp2p"
INVITE_TYPE = "text/x-msmsgsinvite"
INK_TYPES = {"image/gif": "ink", "application/x-ms-ink": "ink"}

KIND_BY_APP = {"file transfer": "file", "display picture": "display picture", "emoticon": "emoticon",
               "wink": "wink", "voice clip": "voice clip", "ink": "ink", "background": "background",
               "dynamic display picture": "display picture", "avatar": "display picture"}

MAGIC = [(b"\x89PNG\r\n\x1a\n", ".png"), (b"GIF8", ".gif"), (b"\xff\xd8\xff", ".jpg"), (b"BM", ".bmp"),
         (b"RIFF", ".wav"), (b"MSCF", ".cab"), (b"\x00", ".isf")]


def normalise(handle: str | bytes | None) -> str | None:
    """`bob@example.com` from `bob@example.com;{guid}`, `1:bob@example.com` or bytes."""
    if handle is None:
        return None
    if isinstance(handle, bytes):
        handle = handle.decode("utf-8", "replace")
    handle = handle.strip().split(";", 1)[0]
    if ":" in handle and handle.split(":", 1)[0].isdigit():
        handle = handle.split(":", 1)[1]
    return handle.lower() or None


def message_parties(conn, cmd: Command, p2p: P2PMessage | None = None) -> tuple[str | None, str | None]:
    """(sender, recipient) of a switchboard MSG: the client's own handle or the server's `MSG handle`,
    and P2P-Dest (or, for a message the server delivers, the connection's own user)."""
    handle = normalise(getattr(conn, "handle", None))
    if cmd.direction == C2S:
        sender = handle
        recipient = normalise(p2p.dest) if p2p is not None and p2p.dest else None
    else:
        sender = normalise(cmd.raw_params[0]) if cmd.raw_params else None
        recipient = normalise(p2p.dest) if p2p is not None and p2p.dest else handle
    if p2p is not None and p2p.src:
        sender = normalise(p2p.src) or sender
    return sender, recipient


def sniff_extension(head: bytes) -> str:
    for magic, ext in MAGIC:
        if head.startswith(magic):
            return ext
    return ".bin"


# -- MSNSLP reassembly -------------------------------------------------------------------------------


class SlpAssembler:
    """MSNSLP messages split over several P2P messages (session id 0), put back together.

    `add(sender, recipient, p2p, stream)` returns the whole message's bytes
    when `p2p` completes one, else None. Bounded: messages larger than
    MAX_SLP are not reassembled; at most MAX_PENDING_SLP wait at once.
    """

    def __init__(self) -> None:
        self.pending: OrderedDict[tuple, list] = OrderedDict()

    def add(self, sender, recipient, p2p: P2PMessage, stream: str | None = None) -> bytes | None:
        if p2p.version == 1:
            total, offset = p2p.total_size or 0, p2p.offset or 0
            if offset == 0 and total <= len(p2p.data):
                return p2p.data
            if total > MAX_SLP or offset + len(p2p.data) > total:
                return None
            key = (stream, sender, recipient, p2p.identifier)
            entry = self.pending.get(key)
            if entry is None:
                if offset != 0:
                    return None
                entry = self.pending[key] = [bytearray(total), 0, set()]
            if offset in entry[2]:
                return None
            entry[2].add(offset)
            entry[0][offset:offset + len(p2p.data)] = p2p.data
            entry[1] += len(p2p.data)
            done = entry[1] >= total
        else:
            key = (stream, sender, recipient, "v2")
            if p2p.first:
                if not p2p.remaining:
                    self.pending.pop(key, None)
                    return p2p.data
                if p2p.remaining + len(p2p.data) > MAX_SLP:
                    return None
                entry = self.pending[key] = [bytearray(p2p.data), 0, None]
            else:
                entry = self.pending.get(key)
                if entry is None:
                    return None
                entry[0] += p2p.data
                if len(entry[0]) > MAX_SLP:
                    del self.pending[key]
                    return None
            done = not p2p.remaining
        if done:
            del self.pending[key]
            return bytes(entry[0])
        self.pending.move_to_end(key)
        while len(self.pending) > MAX_PENDING_SLP:
            self.pending.popitem(last=False)
        return None


# -- storage -----------------------------------------------------------------------------------------


class Spool(Protocol):
    def write(self, offset: int, data: bytes) -> None: ...
    def read(self, offset: int, size: int) -> bytes: ...


class Store(Protocol):
    """Where object bytes go while they arrive, and where finished objects are kept."""

    def spool(self) -> Spool: ...
    def keep(self, spool: Spool, record: "ObjectRecord", size: int) -> str | None: ...
    def discard(self, spool: Spool) -> None: ...


class MemorySpool:
    def __init__(self) -> None:
        self.buf = bytearray()

    def write(self, offset: int, data: bytes) -> None:
        if offset > len(self.buf):
            self.buf.extend(bytes(offset - len(self.buf)))
        self.buf[offset:offset + len(data)] = data

    def read(self, offset: int, size: int) -> bytes:
        return bytes(self.buf[offset:offset + size])


class MemoryStore:
    """Keeps finished objects in `kept` (name -> bytes): for tests and small runs."""

    def __init__(self) -> None:
        self.kept: dict[str, bytes] = {}

    def spool(self) -> MemorySpool:
        return MemorySpool()

    def keep(self, spool: MemorySpool, record, size: int) -> str:
        name = f"{len(self.kept) + 1:04d}-{record.name}"
        self.kept[name] = bytes(spool.buf[:size])
        return name

    def discard(self, spool) -> None:
        pass


# -- objects -----------------------------------------------------------------------------------------


@dataclass
class ObjectRecord:
    """One object as the manifest lists it (see README, manifest.jsonl)."""
    kind: str                      # file, display picture, emoticon, wink, voice clip, ink, p2p data
    via: str                       # p2p, msnftp, msg
    name: str                      # the name the sender gave (not yet made safe: the store does that)
    announced: int | None
    received: int
    status: str                    # complete, partial, declined
    missing: list[list[int]]
    sha256: str | None
    sha1d: str | None              # "verified", "mismatch", or None (no SHA1D, or not complete)
    sender: str | None
    recipient: str | None
    streams: list[str]
    start: float | None
    end: float | None
    call_id: str | None = None     # MSNSLP Call-ID (secret: redacted in the manifest)
    cookie: str | None = None      # MSNFTP AuthCookie (secret: redacted in the manifest)
    session_id: int | None = None
    file: str | None = None        # the file written, relative to the output directory
    problems: list[str] = field(default_factory=list)

    def to_dict(self, redactor=None) -> dict:
        def secret(value):
            if value is None or redactor is None or not redactor.enabled:
                return value
            return redactor.mask(value.encode("utf-8", "surrogateescape"))
        return {"kind": "object", "object": self.kind, "via": self.via, "name": self.name, "file": self.file,
                "size_announced": self.announced, "size_received": self.received, "status": self.status,
                "missing": self.missing, "sha256": self.sha256, "sha1d": self.sha1d,
                "sender": self.sender, "recipient": self.recipient, "streams": self.streams,
                "start": self.start, "end": self.end, "call_id": secret(self.call_id),
                "cookie": secret(self.cookie), "session_id": self.session_id, "problems": self.problems}


class Transfer:
    """One object being rebuilt: received ranges, hashes of what arrived in order, its spool."""

    def __init__(self, extractor: "Extractor", kind: str, via: str, sender, recipient, ts) -> None:
        self.x = extractor
        self.kind = kind
        self.via = via
        self.name: str | None = None
        self.announced: int | None = None
        self.limit: int | None = None      # bytes beyond this are not part of the object (announced size)
        self.sender, self.recipient = sender, recipient
        self.streams: list[str] = []
        self.start = self.end = ts
        self.ranges: list[list[int]] = []  # sorted, disjoint [start, end)
        self.received = 0
        self.sha256 = hashlib.sha256()
        self.sha1 = hashlib.sha1()
        self.hashed = 0                    # bytes [0, hashed) went through the hashes
        self.spool = None
        self.call = None
        self.cookie: str | None = None
        self.session_id: int | None = None
        self.msnobj: MsnObject | None = None
        self.problems: list[str] = []
        self.declined = False
        self.truncated = False
        self.v2_next: dict[str, int] = {}
        self.v2_total: int | None = None
        self.head = b""                    # the first bytes, to name the type when no store keeps them

    def note(self, problem: str) -> None:
        if len(self.problems) < 20 and problem not in self.problems:
            self.problems.append(problem)

    def seen(self, stream: str | None, ts) -> None:
        if stream is not None and stream not in self.streams and len(self.streams) < 16:
            self.streams.append(stream)
        if ts is not None:
            self.start = ts if self.start is None else min(self.start, ts)
            self.end = ts if self.end is None else max(self.end, ts)

    def add(self, offset: int, data: bytes, conn=None, ts=None) -> None:
        """Bytes at `offset` of the object; what lies beyond the limits or was already received is cut."""
        x = self.x
        if offset < 0 or not data:
            return
        end = offset + len(data)
        if self.limit is not None and self.limit > x.max_object and not self.truncated:
            self.truncated = True
            x.report(conn, "objects.too_large", f"{self.kind} announced as {self.limit} bytes, more than the "
                                                f"limit of {x.max_object} (--max-object-size): only that much is kept", ts)
            self.note(f"announced larger than the limit of {x.max_object} bytes: kept up to it")
        limit = self.limit if self.limit is not None else x.max_object
        if self.limit is not None and end > self.limit:
            x.report(conn, "objects.bad_range", f"{self.kind} data at {offset}..{end} beyond the announced "
                                                f"size {self.limit}: cut", ts)
            self.note(f"data beyond the announced size {self.limit} was cut")
        limit = min(limit, x.max_object)
        if end > limit:
            if end > x.max_object and not self.truncated:
                self.truncated = True
                x.report(conn, "objects.too_large", f"{self.kind} larger than the limit of {x.max_object} "
                                                    f"bytes (--max-object-size): the rest is not kept", ts)
                self.note(f"larger than the limit of {x.max_object} bytes: kept up to it")
            data = data[:max(0, limit - offset)]
            end = offset + len(data)
            if not data:
                return
        for lo, hi in self._new_parts(offset, end, conn, data, ts):
            part = data[lo - offset:hi - offset]
            if x.total + len(part) > x.max_total:
                if not x.total_reported:
                    x.total_reported = True
                    x.report(conn, "objects.too_large", f"all objects together passed the limit of "
                                                        f"{x.max_total} bytes: later bytes are not kept", ts)
                self.note("the run's total extraction limit was reached")
                self.truncated = True
                return
            if len(self.ranges) >= MAX_RANGES and not self._touches(lo, hi):
                x.report(conn, "objects.bad_range", f"{self.kind}: more than {MAX_RANGES} separate byte "
                                                    f"ranges; data at {lo} dropped", ts)
                self.note(f"more than {MAX_RANGES} separate ranges")
                continue
            x.total += len(part)
            self.received += len(part)
            if lo == 0:
                self.head = part[:16]
            if x.store is not None:
                if self.spool is None:
                    self.spool = x.store.spool()
                self.spool.write(lo, part)
            self._insert(lo, hi)
            if lo == self.hashed:
                self.sha256.update(part)
                self.sha1.update(part)
                self.hashed = hi
        # Parts that arrived early join the hashes once the bytes before them are in.
        if self.spool is not None and self.ranges and self.ranges[0][0] == 0 and self.ranges[0][1] > self.hashed:
            self._rehash(self.ranges[0][1])

    def _rehash(self, upto: int) -> None:
        step = 1 << 20
        while self.hashed < upto:
            n = min(step, upto - self.hashed)
            chunk = self.spool.read(self.hashed, n)
            if len(chunk) != n:
                return
            self.sha256.update(chunk)
            self.sha1.update(chunk)
            self.hashed += n

    def _touches(self, lo: int, hi: int) -> bool:
        return any(r[0] <= hi and lo <= r[1] for r in self.ranges)

    def _new_parts(self, start: int, end: int, conn, data: bytes, ts) -> list[tuple[int, int]]:
        """The parts of [start, end) not received yet; overlaps with earlier bytes are compared."""
        parts, pos = [], start
        for lo, hi in self.ranges:
            if hi <= pos:
                continue
            if lo >= end:
                break
            if lo > pos:
                parts.append((pos, lo))
            olo, ohi = max(lo, start), min(hi, end)
            if self.spool is not None and olo < ohi:
                if self.spool.read(olo, ohi - olo) != data[olo - start:ohi - start]:
                    self.x.report(conn, "objects.overlap_mismatch",
                                  f"{self.kind}: bytes {olo}..{ohi} arrived again with other content "
                                  f"(the first copy is kept)", ts)
                    self.note(f"bytes {olo}..{ohi} arrived twice with different content")
            pos = max(pos, hi)
            if pos >= end:
                break
        if pos < end:
            parts.append((pos, end))
        return parts

    def _insert(self, lo: int, hi: int) -> None:
        ranges = self.ranges
        i = 0
        while i < len(ranges) and ranges[i][1] < lo:
            i += 1
        j = i
        while j < len(ranges) and ranges[j][0] <= hi:
            lo, hi = min(lo, ranges[j][0]), max(hi, ranges[j][1])
            j += 1
        ranges[i:j] = [[lo, hi]]

    def size(self) -> int:
        return self.ranges[-1][1] if self.ranges else 0

    def missing(self) -> list[list[int]]:
        total = self.announced if self.announced is not None else self.size()
        out, pos = [], 0
        for lo, hi in self.ranges:
            if lo > pos:
                out.append([pos, min(lo, total)])
            pos = hi
        if pos < total:
            out.append([pos, total])
        return [r for r in out if r[0] < r[1]]

    def finish(self) -> ObjectRecord:
        x = self.x
        size = self.size()
        missing = self.missing()
        complete = (not missing and not self.truncated and self.received > 0
                    and (self.announced is None or size == self.announced))
        if self.declined and not self.received:
            status, missing = "declined", []
        elif complete:
            status = "complete"
        else:
            status = "partial"
        whole = self.hashed == size and size > 0
        sha256 = self.sha256.hexdigest() if whole else None
        sha1d = None
        if self.msnobj is not None and self.msnobj.sha1d is not None and status == "complete" and whole:
            sha1d = "verified" if self.sha1.digest() == self.msnobj.sha1d else "mismatch"
            if sha1d == "mismatch":
                x.report(None, "objects.sha1d_mismatch",
                         f"{self.kind} from {self.sender}: SHA1 {self.sha1.hexdigest()} is not the MSNObject's "
                         f"SHA1D {self.msnobj.sha1d.hex()}", self.end)
                self.note("SHA1 of the data differs from the MSNObject's SHA1D")
        name = self.name or self._default_name()
        call = self.call
        record = ObjectRecord(self.kind, self.via, name, self.announced, self.received, status, missing, sha256,
                              sha1d, self.sender, self.recipient, list(self.streams), self.start, self.end,
                              call.call_id if call is not None else None, self.cookie, self.session_id,
                              problems=list(self.problems))
        if self.spool is not None:
            if size:
                record.file = x.store.keep(self.spool, record, size)
            else:
                x.store.discard(self.spool)
            self.spool = None
        return record

    def _default_name(self) -> str:
        ext = sniff_extension(self.head) if self.head else ".bin"
        base = self.kind.replace(" ", "-")
        if self.msnobj is not None and self.msnobj.sha1d is not None:
            return f"{base}-{self.msnobj.sha1d.hex()[:12]}{ext}"
        if self.session_id is not None:
            return f"{base}-session-{self.session_id}{ext}"
        return f"{base}{ext}"


@dataclass
class SlpCall:
    call_id: str
    application: str | None = None
    sender: str | None = None          # the INVITE's From
    recipient: str | None = None       # the INVITE's To
    session_id: int | None = None
    context: object | None = None      # the file-transfer context (name, size)
    msnobj: MsnObject | None = None
    states: list[str] = field(default_factory=list)
    start: float | None = None
    stream: str | None = None
    transfer: Transfer | None = None
    seen: set = field(default_factory=set)   # (method, CSeq, Via): one step relayed to both parties

    @property
    def pair(self) -> frozenset:
        return frozenset((self.sender, self.recipient))


@dataclass
class Invitation:
    """An MSNFTP (text/x-msmsgsinvite) file-transfer offer."""
    cookie: str                        # Invitation-Cookie (not secret: a small counter)
    sender: str | None
    recipient: str | None
    name: str | None
    size: int | None
    start: float | None
    stream: str | None
    auth_cookie: str | None = None
    state: str = "INVITE"
    transfer: Transfer | None = None


class Extractor:
    """A sink that rebuilds exchanged objects (see the module docstring)."""

    def __init__(self, store: Store | None = None, *, max_object: int = DEFAULT_MAX_OBJECT,
                 max_total: int = DEFAULT_MAX_TOTAL, max_open: int = DEFAULT_MAX_OPEN,
                 on_record: Callable[[ObjectRecord], None] | None = None,
                 report: Callable[[object, Anomaly], None] | None = None) -> None:
        self.store = store
        self.max_object = max_object
        self.max_total = max_total
        self.max_open = max_open
        self.on_record = on_record
        self.reporter = report
        self.total = 0
        self.total_reported = False
        self.limit_reported = False
        self.slp = SlpAssembler()
        self.calls: OrderedDict[str, SlpCall] = OrderedDict()
        self.by_session: dict[tuple, SlpCall] = {}
        self.transfers: OrderedDict[tuple, Transfer] = OrderedDict()
        self.invitations: OrderedDict[tuple, Invitation] = OrderedDict()
        self.by_auth_cookie: dict[str, Invitation] = {}
        self.ftp: dict[str, dict] = {}      # MSNFTP connection id -> its state
        self.ink: OrderedDict[tuple, dict] = OrderedDict()
        self.ink_seen: OrderedDict[tuple, None] = OrderedDict()
        self.records: list[ObjectRecord] = []   # the first KEEP_RECORDS (all go to on_record)
        self.more = 0
        self.finished = False

    # -- sink -------------------------------------------------------------------------------------------

    def report(self, conn, name: str, detail: str, ts=None) -> None:
        if self.reporter is not None:
            self.reporter(conn, Anomaly(name, detail, None, None, ts))

    def event(self, conn, event) -> None:
        kind = type(event)
        if kind is FileData:
            self._ftp_data(conn, event)
            return
        if kind is not Command or conn is None:
            return
        if getattr(conn, "protocol", "msnp") == "msnftp":
            self._ftp_command(conn, event)
            return
        if event.cmd != "MSG" or not event.payload:
            return
        head = event.payload[:400]
        if b"msnmsgrp2p" in head:
            if parse_mime(event.payload).content_type == P2P_TYPE:
                self._p2p(conn, event)
        elif b"msmsgsinvite" in head:
            if parse_mime(event.payload).content_type == INVITE_TYPE:
                self._invitation(conn, event)
        elif b"image/gif" in head or b"x-ms-ink" in head or b"Message-ID" in head:
            self._ink(conn, event)

    def stream(self, conn) -> None:
        state = self.ftp.pop(conn.id, None)
        if state is not None and state.get("transfer") is not None:
            self._retire(("msnftp", conn.id))

    def close(self) -> None:
        if self.finished:
            return
        self.finished = True
        for key in list(self.transfers):
            self._retire(key)
        for call in list(self.calls.values()):
            self._call_record(call)
        for inv in list(self.invitations.values()):
            self._invitation_record(inv)
        for key in list(self.ink):
            self._ink_finish(key)
        self.calls.clear()
        self.invitations.clear()

    # -- records ----------------------------------------------------------------------------------------

    def _emit(self, record: ObjectRecord) -> None:
        if len(self.records) < KEEP_RECORDS:
            self.records.append(record)
        else:
            self.more += 1
        if self.on_record is not None:
            self.on_record(record)

    def _retire(self, key) -> None:
        transfer = self.transfers.pop(key, None)
        if transfer is None:
            return
        if transfer.call is not None:
            transfer.call.transfer = None
            transfer.call.states.append("data")
        self._emit(transfer.finish())

    def _bound(self, table: OrderedDict, what: str, retire) -> None:
        while len(table) > self.max_open:
            key = next(iter(table))
            if not self.limit_reported:
                self.limit_reported = True
                self.report(None, "objects.limit", f"more than {self.max_open} {what} open at once: the least "
                                                   f"recently active are finished as they stand")
            retire(key)

    def _call_record(self, call: SlpCall) -> None:
        """A call that carried no data: a declined or unanswered offer of an object."""
        self.calls.pop(call.call_id, None)
        self.by_session.pop((call.pair, call.session_id), None)
        if "data" in call.states or call.transfer is not None:
            return
        kind = KIND_BY_APP.get(call.application or "")
        if kind is None:
            return  # webcam, activities: nothing to extract
        t = Transfer(self, kind, "p2p", call.recipient if kind != "file" else call.sender,
                     call.sender if kind != "file" else call.recipient, call.start)
        t.seen(call.stream, call.start)
        self._dress(t, call)
        t.declined = any(s.startswith("603") for s in call.states)
        if not t.declined:
            t.note("no data seen: " + " -> ".join(call.states[:8]))
        self._emit(t.finish())

    # -- P2P --------------------------------------------------------------------------------------------

    def _p2p(self, conn, cmd: Command) -> None:
        p2p = parse_p2p(cmd.payload)
        if p2p.version is None or not p2p.data:
            return
        sender, recipient = message_parties(conn, cmd, p2p)
        if p2p.session_id == 0:
            data = self.slp.add(sender, recipient, p2p, conn.id)
            if data is not None:
                slp = parse_slp(data)
                if slp is not None:
                    self._slp(conn, cmd, slp)
            return
        if p2p.is_data_preparation():
            return
        key = ("p2p", frozenset((sender, recipient)), p2p.session_id)
        transfer = self.transfers.get(key)
        if transfer is None:
            call = self.by_session.get((frozenset((sender, recipient)), p2p.session_id))
            app = call.application if call is not None else APP_IDS.get(p2p.footer or 0)
            transfer = Transfer(self, KIND_BY_APP.get(app or "", "p2p data"), "p2p", sender, recipient, cmd.ts)
            transfer.session_id = p2p.session_id
            if call is not None:
                self._dress(transfer, call)
            self.transfers[key] = transfer
            self._bound(self.transfers, "transfers", self._retire)
        else:
            self.transfers.move_to_end(key)
        transfer.seen(conn.id, cmd.ts)
        if p2p.version == 1:
            total = p2p.total_size or 0
            if transfer.announced is None:
                transfer.announced = total
                transfer.limit = total
            elif total != transfer.announced and transfer.call is None:
                transfer.note(f"total size changes from {transfer.announced} to {total}")
                self.report(conn, "objects.bad_range", f"P2P session {p2p.session_id}: total size "
                                                       f"{total} contradicts {transfer.announced}", cmd.ts)
            transfer.add(p2p.offset or 0, p2p.data, conn, cmd.ts)
            return
        # Version 2: the first message's bytes plus what remains give the total.
        remaining = p2p.remaining or 0
        if p2p.first and transfer.v2_total is None:
            transfer.v2_total = len(p2p.data) + remaining
            if transfer.announced is None:
                transfer.announced = transfer.limit = transfer.v2_total
        if transfer.v2_total is not None:
            offset = transfer.v2_total - remaining - len(p2p.data)
            if offset < 0:
                self.report(conn, "objects.bad_range", f"P2P session {p2p.session_id}: {len(p2p.data)} bytes "
                                                       f"with {remaining} remaining exceed the total "
                                                       f"{transfer.v2_total}", cmd.ts)
                transfer.note("a message claims more data than the total")
                return
        else:
            offset = transfer.v2_next.get(conn.id, 0)
        transfer.v2_next[conn.id] = offset + len(p2p.data)
        transfer.add(offset, p2p.data, conn, cmd.ts)

    def _dress(self, transfer: Transfer, call: SlpCall) -> None:
        """What the call tells about the object: its name, size, MSNObject."""
        transfer.call = call
        call.transfer = transfer
        transfer.session_id = call.session_id
        if call.context is not None:
            transfer.name = call.context.name or None
            transfer.announced = call.context.size
            transfer.limit = call.context.size
        if call.msnobj is not None:
            transfer.msnobj = call.msnobj
            if call.msnobj.size is not None:
                transfer.announced = call.msnobj.size
                transfer.limit = call.msnobj.size
            if call.msnobj.friendly:
                transfer.name = transfer.name or None

    def _slp(self, conn, cmd: Command, slp) -> None:
        call_id = slp.call_id
        if not call_id:
            return
        call = self.calls.get(call_id)
        if call is None:
            call = self.calls[call_id] = SlpCall(call_id, start=cmd.ts, stream=conn.id)
            self._bound(self.calls, "calls", lambda k: self._call_record(self.calls[k]))
        else:
            self.calls.move_to_end(call_id)
        step = (slp.method, slp.get("CSeq"), slp.get("Via"))
        if step in call.seen:
            return
        if len(call.seen) < 32:
            call.seen.add(step)
        if len(call.states) < 16:
            call.states.append(slp.method)
        if slp.method == "INVITE" and call.application is None and slp.get("EUF-GUID", "body"):
            call.application = slp.application()
            call.sender = slp_address(slp.get("From"))
            call.recipient = slp_address(slp.get("To"))
            guid = (slp.get("EUF-GUID", "body") or "").upper()
            context = slp.get("Context", "body") or ""
            if guid == FILE_TRANSFER_GUID:
                call.context = file_context(context)
            elif guid == MSNOBJECT_GUID:
                call.msnobj = msnobject(context_text(context) or "")
        sid = slp.session_id
        if sid is not None and call.session_id is None and call.sender is not None:
            call.session_id = sid
            self.by_session[(call.pair, sid)] = call
            transfer = self.transfers.get(("p2p", call.pair, sid))
            if transfer is not None and transfer.call is None:
                self._dress(transfer, call)

    # -- MSNFTP -----------------------------------------------------------------------------------------

    def _invitation(self, conn, cmd: Command) -> None:
        msg = parse_mime(cmd.payload)
        fields = dict((k.lower(), v) for k, v in _body_headers(msg.body))
        command = (fields.get("invitation-command") or "").upper()
        cookie = fields.get("invitation-cookie")
        if not cookie:
            return
        sender, recipient = message_parties(conn, cmd)
        if command == "INVITE":
            if (fields.get("application-name") or "").lower() != "file transfer" and \
                    (fields.get("application-guid") or "").upper() != FILE_TRANSFER_GUID:
                return
            inv = self.invitations.get((sender, cookie))
            if inv is not None:  # the same offer relayed to the other participant's connection
                inv.recipient = inv.recipient or recipient
                return
            size = fields.get("application-filesize")
            self.invitations[(sender, cookie)] = Invitation(
                cookie, sender, recipient, fields.get("application-file"),
                int(size) if size and size.isdigit() else None, cmd.ts, conn.id)
            self._bound(self.invitations, "invitations", lambda k: self._invitation_record(self.invitations[k]))
            return
        # An answer: from the invitee (ACCEPT, CANCEL) or the inviter (ACCEPT with the address).
        inv = self.invitations.get((sender, cookie))
        if inv is None and recipient is not None:
            inv = self.invitations.get((recipient, cookie))
        if inv is None:
            inv = next((v for (who, c), v in self.invitations.items() if c == cookie and who != sender), None)
        if inv is None:
            return
        if sender != inv.sender:
            inv.recipient = inv.recipient or sender
        if command == "ACCEPT":
            inv.state = "ACCEPT"
            auth = fields.get("authcookie")
            if auth and inv.auth_cookie is None:
                inv.auth_cookie = auth
                self.by_auth_cookie[auth] = inv
        elif command == "CANCEL" and inv.transfer is None:
            code = (fields.get("cancel-code") or "").upper()
            inv.state = "REJECT" if code == "REJECT" else f"CANCEL {code}".strip()

    def _invitation_record(self, inv: Invitation) -> None:
        self.invitations.pop(next((k for k, v in self.invitations.items() if v is inv), None), None)
        if inv.auth_cookie:
            self.by_auth_cookie.pop(inv.auth_cookie, None)
        if inv.transfer is not None:
            return
        t = Transfer(self, "file", "msnftp", inv.sender, inv.recipient, inv.start)
        t.seen(inv.stream, inv.start)
        t.name, t.announced, t.cookie = inv.name, inv.size, inv.auth_cookie
        t.declined = inv.state != "ACCEPT" and inv.state != "INVITE"
        if not t.declined:
            t.note("accepted, but no MSNFTP connection with its cookie was seen" if inv.state == "ACCEPT"
                   else "offered, never answered")
        self._emit(t.finish())

    def _ftp_command(self, conn, cmd: Command) -> None:
        state = self.ftp.setdefault(conn.id, {})
        if cmd.cmd == "USR" and len(cmd.args) >= 2 and "cookie" not in state:
            state["handle"] = normalise(cmd.args[0])
            state["cookie"] = cmd.args[1].decode("utf-8", "replace")
        elif cmd.cmd == "FIL" and cmd.args and cmd.args[0].isdigit() and state.get("transfer") is None:
            inv = self.by_auth_cookie.get(state.get("cookie") or "")
            sender = inv.sender if inv is not None else None
            recipient = inv.recipient if inv is not None else state.get("handle")
            t = Transfer(self, "file", "msnftp", sender, recipient, cmd.ts)
            t.seen(conn.id, cmd.ts)
            t.announced = t.limit = int(cmd.args[0])
            t.cookie = state.get("cookie")
            if inv is not None:
                inv.transfer = t
                t.name = inv.name
                t.seen(inv.stream, inv.start)
                if inv.size is not None and inv.size != t.announced:
                    t.note(f"FIL {t.announced} but the invitation announced {inv.size} bytes")
            else:
                t.name = f"msnftp-stream-{conn.id}.bin"
                t.note("no invitation with this cookie was seen")
            state["transfer"] = t
            self.transfers[("msnftp", conn.id)] = t
            self._bound(self.transfers, "transfers", self._retire)
        elif cmd.cmd == "CCL" and state.get("transfer") is not None:
            state["transfer"].note(f"cancelled (CCL from the {'receiver' if cmd.direction == C2S else 'sender'})")

    def _ftp_data(self, conn, block: FileData) -> None:
        state = self.ftp.get(conn.id) if conn is not None else None
        transfer = state.get("transfer") if state else None
        if transfer is None:
            return
        transfer.seen(None, block.ts)
        if block.stop:
            transfer.note("the sender stopped the transfer (end-of-data block)")
            return
        transfer.add(block.file_offset, block.data, conn, block.ts)

    # -- ink and pictures in MSG ------------------------------------------------------------------------

    def _ink(self, conn, cmd: Command) -> None:
        msg = parse_mime(cmd.payload)
        sender, recipient = message_parties(conn, cmd)
        message_id = msg.header("Message-ID")
        ctype = msg.content_type
        if not message_id:
            if ctype in INK_TYPES:
                self._ink_object(conn, cmd, sender, recipient, ctype, [msg.body], cmd.ts, cmd.ts)
            return
        key = (sender, message_id)
        entry = self.ink.get(key)
        if entry is None:
            if ctype not in INK_TYPES:
                return
            chunks = msg.header("Chunks")
            n = int(chunks) if chunks and chunks.isdigit() else 1
            if n < 1 or n > MAX_INK_CHUNKS:
                self.report(conn, "objects.bad_range", f"ink message with {chunks} chunks", cmd.ts)
                return
            entry = self.ink[key] = {"type": ctype, "n": n, "parts": {0: msg.body}, "start": cmd.ts,
                                     "end": cmd.ts, "stream": conn.id, "recipient": recipient, "conn": conn}
            self._bound(self.ink, "ink messages", self._ink_finish)
        else:
            index = msg.header("Chunk")
            if index is None or not index.isdigit() or not 0 < int(index) < entry["n"]:
                return
            entry["parts"].setdefault(int(index), msg.body)
            entry["end"] = cmd.ts
        if len(entry["parts"]) == entry["n"]:
            self._ink_finish(key)

    def _ink_finish(self, key) -> None:
        entry = self.ink.pop(key, None)
        if entry is None:
            return
        parts = [entry["parts"].get(i) for i in range(entry["n"])]
        self._ink_object(entry["conn"], None, key[0], entry["recipient"], entry["type"], parts,
                         entry["start"], entry["end"], stream=entry["stream"])

    def _ink_object(self, conn, cmd, sender, recipient, ctype, parts, start, end, stream=None) -> None:
        missing = [i for i, p in enumerate(parts) if p is None]
        text = b"".join(p for p in parts if p is not None).strip()
        if text.lower().startswith(b"base64:"):
            text = text[7:]
        try:
            data = base64.b64decode(text, validate=False)
        except ValueError:
            data = b""
        key = (sender, hashlib.sha256(text).hexdigest())
        if key in self.ink_seen:
            return  # the same ink relayed to the other participant's connection
        self.ink_seen[key] = None
        while len(self.ink_seen) > self.max_open:
            self.ink_seen.popitem(last=False)
        t = Transfer(self, "ink", "msg", sender, recipient, start)
        t.seen(stream or conn.id, end)
        if not data:
            t.note("the body is not base64")
        if missing:
            t.note(f"chunks {missing} of {len(parts)} never arrived")
            t.truncated = True
        t.announced = None if missing else len(data)
        t.add(0, data, conn, end)
        t.name = "ink" + (".gif" if data.startswith(b"GIF8") else ".isf" if ctype == "application/x-ms-ink"
                          else sniff_extension(data[:16]))
        self._emit(t.finish())


def _body_headers(body: bytes) -> list[tuple[str, str]]:
    from analyzer.msnp.mime import parse_headers
    return parse_headers(body)
