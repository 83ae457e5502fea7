"""TCP reassembly for offline captures: segments in, ordered bytes per direction out.

Contract:
- `TcpTracker(analysis, ...)` takes every TCP segment of a capture through
  `segment(ts, key, seq, ack, flags, payload)` (the tuples `pcap.py` yields),
  in file order, and `finish(ts)` at the end of the capture.
- Per direction it delivers bytes in sequence order, each byte once:
  retransmissions and partial overlaps are cut away (`tcp.retransmission`,
  and `tcp.overlap_mismatch` when the bytes differ from the first copy, as
  far as the bytes the peer has not yet acknowledged reach: one buffer per
  direction, at most UNACKED bytes),
  out-of-order segments wait in a bounded buffer, sequence numbers wrap at
  2^32. A hole that does not fill (buffer full, reorder timeout, FIN, RST or
  end of capture) is reported as `tcp.gap` with its size and passed to the
  codec (`Analysis.gap`), which resynchronises; no byte is invented.
- Streams without a SYN (captures that start mid-session) start at the lowest
  sequence number seen in a short window of their first segments (SYNC_WINDOW
  data segments per direction, or START_WINDOW seconds), so a capture that
  starts with a reordered pair still starts at the right byte. Windows close
  oldest first, so stream ids follow the order flows were first seen. At most
  MAX_SYNCING windows are open at once: past it the oldest closes early
  (`capture.start_window_limit`, once per file with the count).
- A flow whose window closes holding one side's SYN and nothing else (an
  attempt nobody answered: a scan, a SYN flood) is forgotten there and then
  (`stats["syn_only_flows"]`), not held to the idle timeout; a later segment
  of its 4-tuple starts a flow of its own.
- A hole is given up (`tcp.gap`) when the peer has ACKed past it several
  times (the receiver got bytes the capture never will), when the buffer is
  full, after the reorder timeout, or at FIN/RST/end of capture.
- MSNP detection and the client/server decision are `detect.py`'s; only MSNP
  flows (and MSNFTP file-transfer flows, `Connection.protocol`) become `Connection`s (stream ids "1", "2", ... in order of
  detection). Other flows are remembered as ignored (their segments cost one
  dict lookup) until FIN, RST or the idle timeout, and count in `max_flows`.
- A connection is closed (`Analysis.close`, which releases its decoders) as
  soon as both directions ended (FIN delivered) or on RST; a SYN on a 4-tuple
  that is still open starts a new connection (port reuse). Memory grows with
  the number of open flows times the configured buffers, not with the file.
- Timeouts (idle flows, holes waiting for their bytes, the pairing's reply
  and linger deadlines) come from one deadline queue: each flow has one entry,
  at the earliest of its deadlines, moved on lazily when it comes due; a
  segment costs nothing for the flows that are not due. The queue is a
  calendar: a small heap per second of capture time and a heap of those
  seconds, so a deadline costs a heap of the few due in its second, not one of
  every open flow's (entries come out in (time, order set) order, as one heap
  of them all gives them; see `_push`, `_due`).
- Delivered bytes the peer has not acknowledged are kept (at most UNACKED per
  direction) to compare retransmissions with; a flow quiet for more than
  `TcpTracker.quiet` seconds drops them (`released`, applied before its next
  segment). Freeing the bytes of a flow that stays silent is memory only and has
  its own queue (`_releases`; the lane, its own), so it never moves a flow's
  deadline: both implementations close flows and expire requests in one order.
- The compiled fast lane (`FastLane`, core/src/lane.rs), when the core reads the capture
  (`drive`, pcap and pcapng): a flow in the fast state (open, an MSNP connection on the compiled reader that
  has not failed, a direction started, nothing out of order, no FIN) is handed to the
  lane with its sequence state (`_enlane`, after the segment that made it so); the lane then
  takes the common case of `segment` for it (data in order, no SYN/FIN/RST, capture time
  crossing no deadline, tombstone expiry or start window) with no Python tuple or call but
  `_fast`, which does what `_deliver` does after the reader. The flow leaves the lane
  (`_unlane`: its state written back into its `HalfStream`s) before anything else touches
  it: a segment the lane did not take, its close, a failed connection. The lane applies the
  quiet release (`released`) itself, at the flow's next segment and for flows that stay
  silent on its own clock, so the deadlines of a flow in the lane are only its pairing
  timeouts and its idle close (`_due` does not touch the lane's state).
- At most `max_flows` flows are open at once: a new flow beyond that closes
  the least recently active sixteenth of them first (their holes become
  gaps, their connections end; a later segment of one starts a new flow), and
  the file gets one `capture.flow_limit` anomaly with the count at `finish`.
"""

from __future__ import annotations

import heapq
import struct
import sys
from collections import OrderedDict, deque
from itertools import chain

from analyzer.msnp import C2S, S2C, Anomaly
from analyzer.analysis.connection import MSNP
from analyzer.msnp.facts import format_address
from analyzer.capture import detect
from analyzer.capture.detect import Early

MASK = 0xFFFFFFFF
HALF = 0x80000000
FIN, SYN, RST, PSH, ACK = 0x01, 0x02, 0x04, 0x08, 0x10

DEFAULT_BUFFER = 1024 * 1024        # out-of-order bytes held per direction
# A hole waits while its bytes can still come: until --tcp-buffer is full, the connection
# ends, or the peer ACKs past it (they were sent but never captured). A capture-time limit
# would turn bytes that come later in the file (keep-alives a minute apart, reordered) into
# gaps, so there is none by default (--reorder-timeout sets one).
DEFAULT_REORDER_TIMEOUT = float("inf")
DEFAULT_IDLE_TIMEOUT = 1800.0        # a flow silent this long is closed
DEFAULT_MAX_FLOWS = 100_000          # flows open at once (MSNP, not-yet-decided and ignored ones)
SYNC_WINDOW = 8                      # data segments per direction before a SYN-less flow picks its start
ACK_STRIKES = 3                      # peer ACKs past a hole before it is given up
START_WINDOW = 0.5                   # seconds a SYN-less direction waits for reordered first segments
SYNC_WINDOW_MAX = 32                 # segments a flow holds at most while it picks its start
UNACKED = 16 * 1024                  # delivered bytes not yet acknowledged, kept per direction to check retransmissions
# A flow silent this long drops its unacknowledged bytes (the quiet release, `released`): a
# retransmission comes within seconds (TCP's retransmission timeout starts at 1 s), so its ACK
# is simply not in the capture (a capture of data segments only, a lost mirror packet). A busy
# capture keeps thousands of idle flows open between keep-alives; they should hold no bytes.
UNACKED_QUIET = 10.0
TOMBSTONE_SECONDS = 120.0            # late segments of a closed flow are dropped this long
MAX_SYNCING = 4096                   # start windows open at once (flows and late halves); past it the oldest closes
FAR = 1e15                           # deadlines past this (inf) wait in the plain heap, not by the second
NEVER = float("inf")
_SIGN, _BITS = 1 << 63, (1 << 64) - 1
_double = struct.Struct("<d")


def _entry(due: float, seq: int) -> int:
    """A deadline queue entry: one int ordered as the tuple (due, seq) is, for every `due` but NaN
    (the double's bits made to order as the doubles do, -0.0 taken as 0.0, above 64 bits of
    `seq`). An int of 44 bytes where a tuple and its seq cost 88, on each of tens of thousands of
    open flows; like the tuple it holds no reference, so the garbage collector never tracks it."""
    bits = int.from_bytes(_double.pack(due + 0.0), "little")
    return ((bits ^ _BITS if bits & _SIGN else bits | _SIGN) << 64) | seq


def _due_of(entry: int) -> float:
    """The `due` of an `_entry`."""
    bits = entry >> 64
    return _double.unpack((bits ^ _SIGN if bits & _SIGN else bits ^ _BITS).to_bytes(8, "little"))[0]
# A flow's `dirs` (half index -> direction): one of these two, shared by every flow (a tuple made
# per flow cost each of tens of thousands open at once 56 bytes).
CLIENT_FIRST, SERVER_FIRST = (C2S, S2C), (S2C, C2S)


def released(now: float, last_ts: float, quiet: float) -> bool:
    """The quiet release: a flow whose last segment was at `last_ts` keeps no unacknowledged bytes
    (either direction) once capture time `now` is more than `quiet` seconds past it
    (`TcpTracker.quiet`: UNACKED_QUIET, or the reorder timeout when shorter). `segment` applies
    it before it handles a flow's segment (inline), so a retransmission after a quiet spell is
    compared with nothing; a deadline (`_due`) frees the bytes of a flow that stays silent, by
    the same rule, which drops only what that next segment would drop (capture time `now` never
    goes back). The compiled lane's copy is core/src/lane.rs `released`, applied the same two
    ways (tests/capture/test_lane.py compares the implementations at the boundary)."""
    return now - last_ts > quiet


class HalfStream:
    """One direction of a flow: sequence bookkeeping, unacknowledged bytes, its SYN; the rest
    (out-of-order buffer, FIN, a late start window, ACK strikes) in a `HalfExtra` made when
    first needed and dropped when it is back at its defaults (`settle`).

    Tens of thousands of directions are open at once on a busy server's capture, nearly all of
    them in order with nothing pending: six slots (80 bytes) where all fifteen cost 160. The
    rare fields read as before (`half.pending`, `half.fin`, ...: their defaults when there is
    no `extra`); they are written through `more`, which makes the `HalfExtra`."""

    __slots__ = ("index", "nxt", "pos", "sent", "isn", "extra")

    def __init__(self, index: int) -> None:
        self.index = index
        self.nxt: int | None = None   # raw sequence number of the next byte expected
        self.pos = 0                  # stream offset of that byte
        self.sent: bytearray | None = None   # delivered bytes the peer has not acknowledged: [pos - len, pos)
        self.isn: int | None = None   # initial sequence number, from this direction's SYN
        self.extra: HalfExtra | None = None   # the rare fields, when any is not at its default

    @property
    def more(self) -> HalfExtra:
        """The rare fields, to write one (made now if the half has none)."""
        extra = self.extra
        if extra is None:
            self.extra = extra = HalfExtra()
        return extra

    def settle(self) -> None:
        """Drop `extra` when every field that is read holds its default again (a hole filled, a
        late start window over): `ack_upto` is read only with ACK strikes, `seen` only in the
        flow's start window (`_start` sets it back to 0)."""
        extra = self.extra
        if (extra is not None and not extra.pending and extra.pending_since is None and not extra.pending_bytes
                and extra.fin is None and not extra.ended and extra.window is None and not extra.seen
                and not extra.ack_strikes):
            self.extra = None

    # The rare fields, read: their defaults without `extra`.
    @property
    def pending(self) -> dict[int, bytes] | None:
        extra = self.extra
        return None if extra is None else extra.pending

    @property
    def starts(self) -> list[int] | None:
        extra = self.extra
        return None if extra is None else extra.starts

    @property
    def pending_bytes(self) -> int:
        extra = self.extra
        return 0 if extra is None else extra.pending_bytes

    @property
    def pending_since(self) -> float | None:
        extra = self.extra
        return None if extra is None else extra.pending_since

    @property
    def fin(self) -> int | None:
        extra = self.extra
        return None if extra is None else extra.fin

    @property
    def ended(self) -> bool:
        extra = self.extra
        return False if extra is None else extra.ended

    @property
    def window(self) -> list | None:
        extra = self.extra
        return None if extra is None else extra.window

    @property
    def seen(self) -> int:
        extra = self.extra
        return 0 if extra is None else extra.seen

    @property
    def ack_strikes(self) -> int:
        extra = self.extra
        return 0 if extra is None else extra.ack_strikes


class HalfExtra:
    """The fields of a `HalfStream` that keep their defaults nearly all the time."""

    __slots__ = ("pending", "starts", "pending_bytes", "pending_since", "fin", "ended", "window", "seen",
                 "ack_strikes", "ack_upto")

    def __init__(self) -> None:
        self.pending: dict[int, bytes] | None = None   # stream offset -> bytes, not yet deliverable
        self.starts: list[int] | None = None   # the keys of `pending`, a heap (the next one first)
        self.pending_bytes = 0
        self.pending_since: float | None = None
        self.fin: int | None = None   # stream offset of the FIN
        self.ended = False
        self.window: list | None = None  # a late half's first segments, while its start is chosen
        self.seen = 0                 # data segments in the flow's start window
        self.ack_strikes = 0          # peer ACKs seen past a hole in this direction
        self.ack_upto = 0             # the furthest of them (stream offset)


class Flow:
    """One TCP connection (a 4-tuple from SYN, or from first sight, to FIN/RST).

    Tens of thousands are open at once on a busy server's capture: the tracker's tables hold
    the flow itself (the flow table maps both keys to it; a segment's half is the one whose
    key it came with), and each direction's SYN is its half's `isn`. What it holds only until it
    is decided (start window, early deliveries, the client's side from a SYN) is a `FlowStart`,
    dropped then (`start`): twelve slots, 128 bytes where fifteen cost 160. Those fields read
    as before (`flow.window`, `flow.early`, ...: None, 0 once decided)."""

    __slots__ = ("key", "rkey", "halves", "state", "start", "conn", "dirs", "last_ts", "due", "entry", "lane",
                 "release_at")

    def __init__(self, key: bytes, rkey: bytes, ts: float) -> None:
        self.key = key                    # half 0's key (the segment that made the flow)
        self.rkey = rkey                  # half 1's: its reverse
        self.halves = (HalfStream(0), HalfStream(1))
        self.state = "sync"               # sync -> open (deciding / msnp) -> closed
        self.start: FlowStart | None = FlowStart()   # until MSNP-ness is decided (or the flow closed)
        self.conn = None                  # the analysis Connection, once MSNP
        self.dirs: tuple | None = None    # half index -> C2S/S2C (CLIENT_FIRST or SERVER_FIRST)
        self.last_ts = ts
        self.due = NEVER                  # when its entry in the deadline heap comes due
        self.entry: int | None = None     # that entry (`_entry`; see TcpTracker.deadlines)
        self.lane: int | None = None      # its slot in the compiled fast lane, while it is there
        self.release_at: float | None = None   # its entry in TcpTracker._releases, if any

    @property
    def keys(self) -> tuple:
        """(half 0's key, half 1's key). Two slots, not a tuple kept: 48 bytes less on each of tens
        of thousands of flows open at once."""
        return (self.key, self.rkey)

    @property
    def window(self) -> list | None:
        start = self.start
        return None if start is None else start.window

    @property
    def early(self) -> list | None:
        start = self.start
        return None if start is None else start.early

    @property
    def early_bytes(self) -> int:
        start = self.start
        return 0 if start is None else start.early_bytes

    @property
    def client_hint(self) -> int | None:
        start = self.start
        return None if start is None else start.client_hint


class FlowStart:
    """What a `Flow` holds from its first segment until the detector decides it (MSNP or not)."""

    __slots__ = ("window", "early", "early_bytes", "client_hint")

    def __init__(self) -> None:
        self.window: list | None = []     # segments held while the start is chosen
        self.early: list | None = []      # deliveries held while MSNP-ness is decided
        self.early_bytes = 0
        self.client_hint: int | None = None   # half index of the client, from SYN / SYN-ACK


class IgnoredFlow:
    """A flow that is not MSNP: its segments are skipped until FIN, RST or the idle timeout."""

    __slots__ = ("keys", "last_ts", "due", "entry")

    def __init__(self, keys: tuple, ts: float) -> None:
        self.keys = keys
        self.last_ts = ts
        self.due = NEVER
        self.entry: int | None = None


class TcpTracker:
    def __init__(self, analysis, *, buffer: int = DEFAULT_BUFFER,
                 reorder_timeout: float = DEFAULT_REORDER_TIMEOUT,
                 idle_timeout: float = DEFAULT_IDLE_TIMEOUT,
                 detector: detect.Detector | None = None, max_flows: int = DEFAULT_MAX_FLOWS) -> None:
        self.analysis = analysis
        self.max_flows = max(1, max_flows)
        self.evicted = 0
        self.buffer = buffer
        self.reorder_timeout = reorder_timeout
        self.idle_timeout = idle_timeout
        self.quiet = min(reorder_timeout, UNACKED_QUIET)   # the quiet release's interval (`released`)
        # A flow's entry earlier than its pairing's next expiry and than this long past a segment
        # it delivered is set again there (`_refresh`), not left to come due for nothing.
        self._stale_after = idle_timeout / 2
        self.detector = detector or detect.Detector()
        self._on_referral = self.detector.referral   # one bound method for every connection
        # key -> Flow (the segment's half: 0 for keys[0], 1 for keys[1]) or IgnoredFlow
        self.flows: dict[bytes, object] = {}
        # Flows open, in the order they were first seen, each its own key (no id() int per flow).
        self.open: dict[Flow, Flow] = {}
        self.ignored: dict[IgnoredFlow, IgnoredFlow] = {}
        self.tombstones: dict[bytes, float] = {}
        self._stones: deque = deque()          # (time written, key), oldest first, to expire tombstones
        # Start windows open, oldest first: whole flows, and late halves (flow, half, ts).
        # OrderedDicts: windows close oldest first, and a plain dict's first item is found by
        # scanning past every deleted slot before it (quadratic in a SYN flood).
        self.syncing: OrderedDict[int, tuple] = OrderedDict()        # id(flow) -> (seq, flow, ts)
        self.syncing_halves: OrderedDict[int, tuple] = OrderedDict()  # id(half) -> (seq, flow, half, ts)
        self.window_closed_early = 0           # start windows closed before their time (MAX_SYNCING)
        self._sync_seq = 0
        # The start time of the oldest window when _expire_windows last found nothing to close
        # (-inf once the windows change): until START_WINDOW past it, a segment skips the look.
        self._window_ts = -NEVER
        # The deadline queue: entries ordered as (due, seq) tuples would be (`_entry`: one int
        # each, seq the order they were set in), and the flow of each live entry in `_due_flows`
        # (at most one per flow). The entries hold no reference, so the garbage collector stops
        # tracking them: a busy capture keeps tens of thousands of deadlines for minutes of
        # capture time, and entries it had to track were promoted by the million to its oldest
        # generation, each promotion bringing the next full collection nearer.
        # Entries are kept by the second they fall in (`_buckets`, each a heap; `_seconds`, a
        # heap of those seconds): with twenty thousand connections open, one heap of them all
        # walked fifteen levels of entries scattered in memory per deadline. A time that is not
        # a finite number of seconds goes in the heap `deadlines` instead.
        self.deadlines: list = []
        self._buckets: dict[int, list] = {}
        self._seconds: list[int] = []
        self._next_due = NEVER                 # the earliest entry (perhaps cancelled), NEVER: none
        self._due_flows: dict[int, object] = {}   # entry -> its flow
        self._due_seq = 0
        self._stale = 0                        # cancelled entries still queued
        # Flows outside the lane holding unacknowledged bytes, (when they may have gone quiet,
        # flow), about in time order: their bytes are freed by `released` (`_release_quiet`), a
        # keep-alive's few too (on a busy capture nearly every idle flow holds its last reply
        # unacknowledged, some 130 bytes with the bytearray, as the lane frees them). Memory only, and kept apart from the deadline queue: whether a flow
        # holds bytes must not change when or in which order its deadlines come due (the lane
        # keeps its flows' bytes itself, and both implementations give the same records).
        self._releases: deque = deque()
        # The first of `_releases` (NEVER: none), checked apart from `_next_due`: a flow's kept
        # bytes wake neither the deadline queue nor `_due`.
        self._next_release = NEVER
        self.now = 0.0
        self._lane = None                      # the compiled fast lane, while `drive` runs
        self.stats = {"segments": 0, "ignored_segments": 0, "late_segments": 0, "flows": 0,
                      "msnp_flows": 0, "ignored_flows": 0, "syn_only_flows": 0}

    # -- input ------------------------------------------------------------------

    def segment(self, ts: float, key: bytes, seq: int, ack: int, flags: int, payload: bytes) -> None:
        # `_advance(ts)`, inline: capture time moves on with nearly every packet, and this is
        # the Python path's per-packet frame (the lane goes through `_advance`; the tests that
        # compare both paths record for record, tests/capture/test_lane.py among them, and
        # `bench/fuzz_capture.py --tcp` hold the two equal).
        if ts > self.now:
            self.now = ts
            if self._next_due < ts:
                self._due(ts)
            if self._next_release < ts:
                self._release_quiet(ts)
            stones = self._stones
            if stones and stones[0][0] < ts - TOMBSTONE_SECONDS:
                self._expire_tombstones(ts)
        if (self.syncing or self.syncing_halves) and ts - self._window_ts > START_WINDOW:
            self._expire_windows(ts)
        flow = self.flows.get(key)
        if flow is None:
            flow = self._new_flow(ts, key, seq, flags, payload)
            if flow is None:
                return
        elif type(flow) is IgnoredFlow:
            flow.last_ts = ts
            if flags & (FIN | RST):
                self._forget_ignored(flow)
            return
        # The half this key names: keys[1]'s when the two keys are one (a host talking to itself
        # on one port), as `_new_flow` wrote keys[1] last.
        index = 1 if key == flow.rkey else 0
        if self.now - flow.last_ts > self.quiet:   # `released`, inline: the quiet release
            for half in flow.halves:
                half.sent = None
        flow.last_ts = ts
        if payload and not flags & (SYN | FIN | RST) and flow.conn is not None:
            # The common case, kept short: the next bytes of an MSNP stream, neither half holding
            # anything rare (a half with `extra` but nothing pending, an old ACK strike or the
            # other side's FIN, goes the general way, which does the same with in-order bytes).
            half = flow.halves[index]
            other = flow.halves[1 - index]
            if seq == half.nxt and half.extra is None and other.extra is None:
                if other.sent is not None and flags & ACK:
                    self._ack_sent(other, ack)
                n = len(payload)
                half.nxt = (seq + n) & MASK
                half.pos += n
                sent = half.sent  # _remember, inlined: this is the per-packet path
                if sent is None:
                    half.sent = sent = bytearray(payload)
                else:
                    sent += payload
                if len(sent) > UNACKED:
                    del sent[:len(sent) - UNACKED]
                self._deliver(flow, index, payload, ts)
                return
        if flags & SYN:
            if self._syn(flow, index, ts, key, seq, flags, payload):
                return
            seq = (seq + 1) & MASK  # data on a SYN starts after the SYN's own sequence number
        if flow.window is not None:
            flow.window.append((index, seq, flags, payload, ts))
            if payload:
                flow.halves[index].more.seen += 1
            if self._window_full(flow):
                self._start(flow)
            return
        if flags & ACK:
            other = flow.halves[1 - index]
            if other.sent is not None:
                self._ack_sent(other, ack)
            if other.pending and other.nxt is not None:
                self._acked(flow, other, ack, ts)
        self._segment(flow, flow.halves[index], ts, seq, flags, payload)
        if flow.state == "open":
            self._reschedule(flow)

    def _advance(self, ts: float) -> None:
        """Capture time reached `ts` (a segment's): deadlines that passed, tombstones that
        expired and start windows that closed are dealt with first (`segment` has this inline)."""
        if ts > self.now:
            self.now = ts
            if self._next_due < ts:
                self._due(ts)
            if self._next_release < ts:
                self._release_quiet(ts)
            stones = self._stones
            if stones and stones[0][0] < ts - TOMBSTONE_SECONDS:
                self._expire_tombstones(ts)
        if (self.syncing or self.syncing_halves) and ts - self._window_ts > START_WINDOW:
            self._expire_windows(ts)

    @staticmethod
    def _ack_sent(half: HalfStream, ack: int) -> None:
        """The peer acknowledged `half` up to `ack`: those bytes are not kept any longer."""
        d = (half.nxt - ack) & MASK   # bytes delivered but not acknowledged
        if d == 0 or d >= HALF:       # everything (or more) acknowledged
            half.sent = None
            return
        sent = half.sent
        if d < len(sent):
            del sent[:len(sent) - d]

    @staticmethod
    def _window_full(flow: Flow) -> bool:
        """Enough of the flow's first segments to choose where each direction starts:
        both SYNs, or SYNC_WINDOW data segments per direction (or SYNC_WINDOW_MAX in all).
        Otherwise the window closes START_WINDOW seconds after the flow's first segment."""
        first, second = flow.halves
        if first.isn is not None and second.isn is not None or len(flow.window) >= SYNC_WINDOW_MAX:
            return True
        return all(h.isn is not None or h.seen >= SYNC_WINDOW for h in flow.halves)

    def _expire_windows(self, ts: float) -> None:
        """Close start windows older than START_WINDOW, oldest first (stream ids follow first sight),
        and the oldest ones early while more than MAX_SYNCING are open (counted: a capture that
        opens thousands of flows within half a second, a SYN flood, cannot hold them all)."""
        flows, halves = self.syncing, self.syncing_halves
        while flows or halves:
            head = next(iter(flows.values())) if flows else None
            head_half = next(iter(halves.values())) if halves else None
            crowded = len(flows) + len(halves) > MAX_SYNCING
            if head_half is None or head is not None and head[0] < head_half[0]:
                if ts - head[2] <= START_WINDOW:
                    if not crowded:
                        self._window_ts = head[2]
                        return
                    self.window_closed_early += 1
                self._start(head[1])
            else:
                if ts - head_half[3] <= START_WINDOW:
                    if not crowded:
                        self._window_ts = head_half[3]
                        return
                    self.window_closed_early += 1
                self._start_half(head_half[1], head_half[2])

    def _acked(self, flow: Flow, half: HalfStream, ack: int, ts) -> None:
        """The peer acknowledged bytes of `half` that the capture does not hold: those holes never fill."""
        extra = half.extra   # there is one: something is pending
        d = (ack - half.nxt) & MASK
        if not d or d >= HALF:
            extra.ack_strikes = 0
            return
        # One ACK past a hole may come from a capture that reordered across directions
        # (mirror ports, merged files); several ACKs, each further than the last, mean
        # the peer got bytes this capture never will.
        upto = half.pos + d
        if extra.ack_strikes and upto <= extra.ack_upto:
            return
        extra.ack_upto = upto
        extra.ack_strikes += 1
        if extra.ack_strikes < ACK_STRIKES:
            return
        extra.ack_strikes = 0
        while half.pending and flow.state != "closed":
            start = half.starts[0]
            if start >= upto:
                return
            if start > half.pos:
                size = start - half.pos
                self._gap(flow, half, size, ts, f"{size} bytes missing at offset {half.pos} "
                                                f"(acknowledged by the peer, never captured)")
                half.pos = start
                half.nxt = (half.nxt + size) & MASK
            self._drain(flow, half, ts)

    def _evict(self, ts) -> None:
        """Too many open flows: close the least recently active sixteenth (amortised: no scan per flow)."""
        if self._lane is not None:   # the lane's bare ACKs move a flow's last_ts (`_lane_clock`)
            last = self._lane.last
            for flow in self.open.values():
                if flow.lane is not None:
                    flow.last_ts = last(flow.lane)
        victims = heapq.nsmallest(max(1, self.max_flows // 16), chain(self.open.values(), self.ignored.values()),
                                  key=lambda f: f.last_ts)
        for flow in victims:
            if type(flow) is IgnoredFlow:
                self._forget_ignored(flow)
                continue
            self._close(flow, flow.last_ts)
            for k in flow.keys:  # not late segments: a later segment starts a new flow
                self.tombstones.pop(k, None)
        self.evicted += len(victims)

    def finish(self, ts: float | None = None) -> None:
        """End of capture: flush every open flow (holes become gaps) and close it."""
        for flow in list(self.open.values()):
            # A flow still open ends at its own last segment; no tombstone (they are all
            # forgotten below: two per flow open, thousands on a busy capture, made for nothing).
            self._close(flow, flow.last_ts, final=True)
        if self.evicted:
            self.analysis.anomaly(None, Anomaly(
                "capture.flow_limit",
                f"more than {self.max_flows} TCP flows open at once (--max-flows): {self.evicted} of the least "
                f"recently active were closed early", None, None, ts))
            self.evicted = 0
        if self.window_closed_early:
            self.analysis.anomaly(None, Anomaly(
                "capture.start_window_limit",
                f"more than {MAX_SYNCING} TCP flows in their start window at once: {self.window_closed_early} "
                f"windows closed before their {START_WINDOW:g} s (a flow that starts without its SYN may "
                f"then start after a reordered first segment, reported as a tcp.gap)", None, None, ts))
            self.window_closed_early = 0
        if self.detector.endpoints_dropped:
            self.analysis.anomaly(None, Anomaly(
                "capture.endpoint_limit",
                f"more than {detect.MAX_ENDPOINTS} server addresses named by XFR/RNG lines: "
                f"{self.detector.endpoints_dropped} later ones were not learned (a flow to one of them is "
                f"still MSNP by its port or its first line)", None, None, ts))
            self.detector.endpoints_dropped = 0
        self.flows.clear()
        self.ignored.clear()
        self.tombstones.clear()
        self._stones.clear()
        self.deadlines.clear()
        self._buckets.clear()
        self._seconds.clear()
        self._next_due = NEVER
        self._due_flows.clear()
        self._releases.clear()
        self._next_release = NEVER
        self._stale = 0

    # -- flows ------------------------------------------------------------------

    def _new_flow(self, ts, key, seq, flags, payload):
        stone = self.tombstones.get(key)
        if stone is not None:
            if ts - stone < TOMBSTONE_SECONDS and not (flags & SYN and not flags & ACK):
                self.stats["late_segments"] += 1
                return None
            del self.tombstones[key]
        if not payload and not flags & (SYN | FIN | RST):
            # A bare ACK tells nothing about the stream; do not open a flow for it.
            return None
        if flags & (RST | FIN) and not payload:
            return None
        if len(self.open) + len(self.ignored) >= self.max_flows:
            self._evict(ts)
        from analyzer.capture.pcap import reverse_key
        rkey = reverse_key(key)
        self.tombstones.pop(rkey, None)
        flow = Flow(key, rkey, ts)
        self.flows[key] = flow
        self.flows[rkey] = flow
        self.open[flow] = flow
        self._sync_seq += 1
        self.syncing[id(flow)] = (self._sync_seq, flow, ts)
        self._window_ts = -NEVER
        self._schedule(flow, ts + self.idle_timeout)
        self.stats["flows"] += 1
        return flow

    def _syn(self, flow: Flow, index: int, ts, key, seq, flags, payload) -> bool:
        """A SYN: note the ISN, or start a new flow on a reused 4-tuple. True when consumed."""
        half = flow.halves[index]
        known = half.isn
        if known == seq:
            return not payload  # a retransmitted SYN
        if known is None and (flow.window is not None or (flags & ACK and half.nxt is None)):
            half.isn = seq
            start = flow.start   # none once decided: the detector reads the hint no more
            if start is not None and start.client_hint is None:
                start.client_hint = 1 - index if flags & ACK else index
            if flow.window is None:
                half.nxt = (seq + 1) & MASK
            elif not payload and flow.halves[1 - index].isn is not None:
                self._start(flow)
            return not payload
        if flags & ACK:
            return not payload  # a stray SYN/ACK: nothing to learn from it
        # A new SYN on a running 4-tuple: that connection is over, a new one starts.
        self._close(flow, ts)
        for k in flow.keys:
            self.tombstones.pop(k, None)
        self.segment(ts, key, seq, 0, flags, payload)
        return True

    @staticmethod
    def _lowest(seqs) -> int | None:
        """The earliest of some sequence numbers, modulo 2^32 (relative to the first one)."""
        first = None
        low = 0
        for seq in seqs:
            if first is None:
                first = seq
                continue
            d = (seq - first) & MASK
            if d >= HALF and d - (1 << 32) < low:
                low = d - (1 << 32)
        return None if first is None else (first + low) & MASK

    def _start(self, flow: Flow):
        """Choose each half's first byte (SYN, else the lowest sequence in the window) and replay."""
        # Flows seen before this one start first, so stream ids follow first sight.
        syncing = self.syncing
        if id(flow) in syncing:
            while True:
                other = next(iter(syncing.values()))[1]
                if other is flow:
                    break
                self._start(other)
        else:
            while syncing:
                self._start(next(iter(syncing.values()))[1])
        syncing.pop(id(flow), None)
        self._window_ts = -NEVER
        start = flow.start   # there is one: the window is open
        window, start.window = start.window, None
        if not window and (flow.halves[0].isn is None or flow.halves[1].isn is None):
            # One side's SYN and nothing else through the whole window: an attempt that got
            # no answer (a scan, a flood, a server that is down). Nothing to decode: forget it
            # rather than hold it to the idle timeout; a later segment starts a flow of its own.
            self._forget_syn_only(flow)
            return None
        for half in flow.halves:
            if half.extra is not None:   # its count of data segments in the window, read no more
                half.extra.seen = 0
                half.settle()
            isn = half.isn
            if isn is not None:
                half.nxt = (isn + 1) & MASK
                continue
            half.nxt = self._lowest(seq for index, seq, flags, payload, ts in window
                                    if index == half.index and payload)
        flow.state = "open"
        for index, seq, flags, payload, ts in window:
            if flow.state != "open":
                break
            self._segment(flow, flow.halves[index], ts, seq, flags, payload)
        return None

    def _start_half(self, flow: Flow, half: HalfStream) -> None:
        self.syncing_halves.pop(id(half), None)
        self._window_ts = -NEVER
        extra = half.extra   # there is one: the window
        window, extra.window = extra.window, None
        half.settle()
        half.nxt = self._lowest(seq for seq, flags, payload, ts in window if payload)
        if half.nxt is None:
            half.nxt = window[0][0]
        for seq, flags, payload, ts in window:
            self._segment(flow, half, ts, seq, flags, payload)

    def _segment(self, flow: Flow, half: HalfStream, ts, seq, flags, payload) -> None:
        if flow.state == "closed":
            return
        if half.nxt is None:
            if not payload and not flags & FIN:
                if flags & RST:
                    self._close(flow, ts)
                return
            # This direction's first data came after the flow's start window: give it a
            # window of its own (the other direction carries on meanwhile).
            extra = half.more
            if extra.window is None:
                extra.window = []
                self._sync_seq += 1
                self.syncing_halves[id(half)] = (self._sync_seq, flow, half, ts)
                self._window_ts = -NEVER
            extra.window.append((seq, flags, payload, ts))
            if len(extra.window) >= SYNC_WINDOW or flags & (FIN | RST):
                self._start_half(flow, half)
            return
        if payload:
            d = (seq - half.nxt) & MASK
            if d == 0 and not half.pending:
                n = len(payload)
                half.nxt = (seq + n) & MASK
                half.pos += n
                self._remember(half, payload)
                self._deliver(flow, half.index, payload, ts)
            else:
                self._out_of_order(flow, half, ts, seq, d, payload)
        if flags & FIN and half.fin is None:
            d = (seq + len(payload) - half.nxt) & MASK
            half.more.fin = half.pos + (d if d < HALF else d - (1 << 32))
        if half.extra is not None:   # nothing pending, no FIN, not ended without it
            if half.pending and half.pending_since is not None and ts - half.pending_since > self.reorder_timeout:
                self._fill_gap(flow, half, ts)
            if half.fin is not None and not half.ended and half.pos >= half.fin and not half.pending:
                self._end(flow, half, ts)
        if flags & RST:
            self._close(flow, ts)
        elif half.ended and flow.halves[1 - half.index].ended:
            self._close(flow, ts)

    def _out_of_order(self, flow: Flow, half: HalfStream, ts, seq, d, payload) -> None:
        if d >= HALF:
            # Starts before what was delivered: a retransmission, maybe with new bytes after it.
            back = (1 << 32) - d
            n = len(payload)
            if n == 1 and back == 1:
                return  # a keep-alive probe: one byte below the window, never data
            start = half.pos - back
            self._check_overlap(flow, half, start, payload, ts)
            if n <= back:
                self._anomaly(flow, half, "tcp.retransmission",
                              f"{n} bytes at offset {start} seen again", start, ts)
                return
            payload = payload[back:]
            seq = (seq + back) & MASK
            d = 0
            if not half.pending:
                half.nxt = (seq + len(payload)) & MASK
                half.pos += len(payload)
                self._remember(half, payload)
                self._deliver(flow, half.index, payload, ts)
                return
        start = half.pos + d
        extra = half.more
        if extra.pending is None:
            extra.pending, extra.starts = {}, []
        old = extra.pending.get(start)
        if old is not None:
            if old[:len(payload)] != payload[:len(old)]:
                self._anomaly(flow, half, "tcp.overlap_mismatch",
                              f"two copies of offset {start} differ", start, ts)
            if len(old) >= len(payload):
                return
            extra.pending_bytes -= len(old)
        else:
            heapq.heappush(extra.starts, start)
        extra.pending[start] = payload
        extra.pending_bytes += len(payload)
        if extra.pending_since is None:
            extra.pending_since = ts
        self._drain(flow, half, ts)
        if half.pending_bytes > self.buffer:
            self._fill_gap(flow, half, ts)

    def _drain(self, flow: Flow, half: HalfStream, ts) -> None:
        """Deliver pending segments that now continue the stream (the half's `extra` is dropped
        when that leaves nothing rare in it)."""
        extra = half.extra   # there is one: something is pending
        pending = extra.pending
        starts = extra.starts
        while pending:
            start = starts[0]
            if start > half.pos:
                return
            heapq.heappop(starts)
            data = pending.pop(start)
            extra.pending_bytes -= len(data)
            if not pending:
                extra.pending_since = None
            end = start + len(data)
            if end <= half.pos:
                self._check_overlap(flow, half, start, data, ts)
                continue
            if start < half.pos:
                self._check_overlap(flow, half, start, data, ts)
                data = data[half.pos - start:]
            half.pos += len(data)
            half.nxt = (half.nxt + len(data)) & MASK
            self._remember(half, data)
            self._deliver(flow, half.index, data, ts)
            if flow.state == "closed":
                return
        half.settle()

    def _fill_gap(self, flow: Flow, half: HalfStream, ts, everything: bool = False) -> None:
        """The hole before the first pending segment will not fill: report it and move on.

        Skips holes until the buffer is back under its limit (all of them when
        `everything`, at the end of the flow)."""
        while half.pending and flow.state != "closed":
            start = half.starts[0]
            if start > half.pos:
                size = start - half.pos
                self._gap(flow, half, size, ts, f"{size} bytes missing at offset {half.pos}")
                half.pos = start
                half.nxt = (half.nxt + size) & MASK
            self._drain(flow, half, ts)
            if not everything and half.pending_bytes <= self.buffer:
                break
        if half.pending:
            half.extra.pending_since = ts

    def _gap(self, flow: Flow, half: HalfStream, size: int, ts, detail: str) -> None:
        if flow.conn is not None:
            direction = flow.dirs[half.index]
            self.analysis.anomaly(flow.conn, Anomaly("tcp.gap", detail, direction, half.pos, ts))
            self.analysis.gap(flow.conn, direction, size, ts)
        elif flow.state != "closed" and flow.early is not None:
            flow.early.append(Early(half.index, ts, anomaly="tcp.gap", detail=detail, offset=half.pos, size=size))

    @staticmethod
    def _remember(half: HalfStream, data: bytes) -> None:
        """Keep delivered bytes until the peer acknowledges them (at most UNACKED)."""
        sent = half.sent
        if sent is None:
            half.sent = sent = bytearray(data)
        else:
            sent += data
        if len(sent) > UNACKED:
            del sent[:len(sent) - UNACKED]

    def _check_overlap(self, flow: Flow, half: HalfStream, start: int, data: bytes, ts) -> None:
        """Compare a second copy of delivered bytes with the first (as far as the unacknowledged bytes reach)."""
        sent = half.sent
        if not sent:
            return
        base = half.pos - len(sent)
        lo, hi = max(start, base), min(start + len(data), half.pos)
        if lo < hi and data[lo - start:hi - start] != sent[lo - base:hi - base]:
            self._anomaly(flow, half, "tcp.overlap_mismatch",
                          f"retransmitted bytes at offset {lo} differ from the first copy "
                          f"(the first copy was kept)", lo, ts)

    def _end(self, flow: Flow, half: HalfStream, ts) -> None:
        half.more.ended = True
        if flow.conn is not None:
            self.analysis.end(flow.conn, flow.dirs[half.index], ts)

    def _close(self, flow: Flow, ts, final: bool = False) -> None:
        """Close `flow` at `ts` (holes become gaps, its connection ends); its keys become tombstones
        (late segments of it start nothing) unless `final` (the end of the capture)."""
        if flow.state == "closed":
            return
        if flow.lane is not None:
            self._unlane(flow)
        if flow.window is not None:
            self._start(flow)
            if flow.state == "closed":
                return
        for half in flow.halves:
            if half.window:
                self._start_half(flow, half)
        if flow.state == "closed":
            return
        for half in flow.halves:
            if half.pending:
                self._fill_gap(flow, half, ts, everything=True)
            if half.fin is not None and half.pos < half.fin and flow.state != "closed":
                size = half.fin - half.pos
                self._gap(flow, half, size, ts, f"{size} bytes missing before the FIN at offset {half.fin}")
                half.pos = half.fin
        if flow.conn is None and flow.early:
            self.detector.decide(self, flow, final=True)
        was_open = flow.state != "closed"
        flow.state = "closed"
        if flow.conn is not None and was_open:
            for half in flow.halves:
                if half.fin is not None and not half.ended:
                    self._end(flow, half, ts)
            self.analysis.close(flow.conn, ts)
        for key in flow.keys:
            self.flows.pop(key, None)
        if not final:   # at the end of the capture no late segment can come
            stone = ts if ts is not None else self.now
            for key in flow.keys:
                self.tombstones[key] = stone
                self._stones.append((self.now, key))
            if len(self._stones) > 2 * self.max_flows:
                # Capture time that stands still (every packet at one instant) never expires them:
                # at most two per open flow's worth are kept, the oldest forgotten first.
                for _ in range(len(self._stones) - 2 * self.max_flows):
                    _, old = self._stones.popleft()
                    if self.tombstones.get(old) is not None and old not in self.flows:
                        del self.tombstones[old]
        self.open.pop(flow, None)
        self._release(flow)

    def _forget_syn_only(self, flow: Flow) -> None:
        flow.state = "closed"
        for key in flow.keys:
            if self.flows.get(key) is flow:
                del self.flows[key]
        self.open.pop(flow, None)
        self._release(flow)
        self.stats["syn_only_flows"] += 1

    def _expire_tombstones(self, ts: float) -> None:
        stones, tombstones = self._stones, self.tombstones
        while stones and stones[0][0] < ts - TOMBSTONE_SECONDS:
            _, key = stones.popleft()
            stone = tombstones.get(key)
            if stone is not None and ts - stone > TOMBSTONE_SECONDS:
                del tombstones[key]

    def _release(self, flow: Flow) -> None:
        self.syncing.pop(id(flow), None)
        self._window_ts = -NEVER
        for half in flow.halves:
            self.syncing_halves.pop(id(half), None)
            half.sent = None
            extra = half.extra
            if extra is not None:
                extra.pending, extra.starts, extra.window = None, None, None
        start = flow.start
        if start is not None:   # no early deliveries any more; a start window still open stays
            start.early = None
            if start.window is None:
                flow.start = None
        flow.conn = None   # the Connection is the analysis's now: nothing here keeps it
        self._cancel(flow)

    def _forget_ignored(self, ignored: IgnoredFlow) -> None:
        for key in ignored.keys:
            if self.flows.get(key) is ignored:
                del self.flows[key]
        self.ignored.pop(ignored, None)
        self._cancel(ignored)

    # -- bytes out ----------------------------------------------------------------

    def _deliver(self, flow: Flow, index: int, data: bytes, ts) -> None:
        conn = flow.conn
        if conn is None:
            start = flow.start   # undecided: there is one
            start.early.append(Early(index, ts, data))
            start.early_bytes += len(data)
            self.detector.decide(self, flow, final=False)
            return
        self.analysis.feed(conn, flow.dirs[index], data, ts)
        # A request now awaiting its reply brings the flow's deadline forward, a reply that came
        # may leave it stale (both as the lane's `_fast` does); the bytes just kept are freed
        # once the flow is quiet (`_releases`).
        wake = conn.wake
        due = flow.due
        if wake < due:
            if flow.state == "open":
                self._schedule(flow, wake)
        elif due < wake and ts is not None and due < ts + self._stale_after and flow.state == "open":
            self._refresh(flow)
        if flow.release_at is None and ts is not None and flow.halves[index].sent is not None:
            self._release_at(flow, ts + self.quiet)

    def _anomaly(self, flow: Flow, half: HalfStream, name: str, detail: str, offset, ts) -> None:
        if flow.conn is not None:
            self.analysis.anomaly(flow.conn, Anomaly(name, detail, flow.dirs[half.index], offset, ts))
        elif flow.early is not None:
            flow.early.append(Early(half.index, ts, anomaly=name, detail=detail, offset=offset))

    # -- called by the detector ---------------------------------------------------

    def accept(self, flow: Flow, client_index: int, protocol: str = "msnp") -> None:
        """The flow is MSNP (or MSNFTP, `protocol`) and half `client_index` is the client: open its connection."""
        from analyzer.capture.pcap import split_key
        sip, sport, dip, dport = split_key(flow.keys[0])
        a, b = format_address(sip, sport), format_address(dip, dport)
        client, server = (a, b) if client_index == 0 else (b, a)
        server = sys.intern(server)   # many connections share a server: one string for them all
        flow.dirs = CLIENT_FIRST if client_index == 0 else SERVER_FIRST
        flow.conn = self.analysis.open(client, server, protocol=protocol)
        flow.conn.on_referral = self._on_referral  # servers named by XFR/RNG are MSNP servers
        self.stats["msnp_flows"] += 1
        early, flow.start = flow.early, None   # decided (its window closed before any delivery)
        for item in early:
            if item.data is not None:
                self._deliver(flow, item.index, item.data, item.ts)
                continue
            direction = flow.dirs[item.index]
            self.analysis.anomaly(flow.conn, Anomaly(item.anomaly, item.detail, direction, item.offset, item.ts))
            if item.anomaly == "tcp.gap":
                self.analysis.gap(flow.conn, direction, item.size, item.ts)
        for half in flow.halves:
            if half.ended:
                self.analysis.end(flow.conn, flow.dirs[half.index], flow.last_ts)

    def reject(self, flow: Flow) -> None:
        """The flow is not MSNP: forget its bytes, skip its segments from now on."""
        self.stats["ignored_flows"] += 1
        flow.start = None   # decided (its window closed before any delivery)
        flow.state = "closed"
        ignored = IgnoredFlow(flow.keys, flow.last_ts)
        for key in flow.keys:
            self.flows[key] = ignored
        self.ignored[ignored] = ignored
        self.open.pop(flow, None)
        self._release(flow)
        self._schedule(ignored, ignored.last_ts + self.idle_timeout)

    # -- timeouts -----------------------------------------------------------------

    def _schedule(self, flow, due: float) -> None:
        """Make sure `flow` is looked at by `due` (a new entry only when that is earlier)."""
        if due < flow.due:
            self._cancel(flow)
            self._push(flow, due)

    def _push(self, flow, due: float) -> None:
        """`flow`'s entry, at `due` (it has none): in the heap of its second (see `deadlines`)."""
        flow.due = due
        self._due_seq = seq = self._due_seq + 1
        flow.entry = entry = _entry(due, seq)
        self._due_flows[entry] = flow
        if -FAR < due < FAR:
            second = int(due)   # monotone: an earlier second holds only earlier deadlines
            bucket = self._buckets.get(second)
            if bucket is None:
                self._buckets[second] = [entry]
                heapq.heappush(self._seconds, second)
            else:
                heapq.heappush(bucket, entry)
        else:
            heapq.heappush(self.deadlines, entry)
        if due < self._next_due:
            self._next_due = due

    def _cancel(self, flow) -> None:
        """Drop `flow`'s entry (it stays queued, stale, until it comes out or the queue is
        compacted: the queue holds at most twice as many entries as there are flows)."""
        entry = flow.entry
        if entry is not None:
            del self._due_flows[entry]
            flow.entry = None
            self._stale += 1
            if self._stale > 64 and self._stale > len(self._due_flows):   # half the entries
                self._compact()
        flow.due = NEVER

    def _compact(self) -> None:
        """Drop the cancelled entries (the heaps are rebuilt, empty seconds forgotten)."""
        live = self._due_flows
        heap = self.deadlines
        heap[:] = [e for e in heap if e in live]
        heapq.heapify(heap)
        buckets = {}
        for second, bucket in self._buckets.items():
            kept = [e for e in bucket if e in live]
            if kept:
                heapq.heapify(kept)
                buckets[second] = kept
        self._buckets = buckets
        self._seconds = list(buckets)
        heapq.heapify(self._seconds)
        first = self._first()[1]
        self._next_due = NEVER if first is None else live[first].due
        self._stale = 0

    def _first(self) -> tuple:
        """The heap holding the earliest entry (a second's, or `deadlines`) and that entry (None:
        the queue is empty), cancelled or not."""
        heap = self.deadlines
        seconds = self._seconds
        if seconds:
            where = self._buckets[seconds[0]]
            first = where[0]
            if heap and heap[0] < first:
                return heap, heap[0]
            return where, first
        return heap, (heap[0] if heap else None)

    def _take(self, where: list) -> None:
        """Remove the first entry of `where` (as `_first` named it)."""
        heapq.heappop(where)
        if not where and where is not self.deadlines:
            del self._buckets[heapq.heappop(self._seconds)]

    def _reschedule(self, flow: Flow) -> None:
        """After a segment: a hole that started waiting, or a request now awaiting its reply,
        may bring the flow's deadline forward."""
        self._schedule(flow, self._waiting(flow, flow.due))

    def _waiting(self, flow: Flow, due: float) -> float:
        """The earliest of `due`, the reorder timeout of a hole waiting in either half, and the
        pairing's next expiry."""
        for half in flow.halves:
            since = half.pending_since
            if since is not None and since + self.reorder_timeout < due:
                due = since + self.reorder_timeout
        conn = flow.conn
        if conn is not None:
            wake = conn.wake
            if wake < due:
                due = wake
        return due

    def _due(self, ts: float) -> None:
        """Capture time passed the earliest deadlines: idle flows close, stale holes become gaps,
        requests past their reply timeout are reported; each flow is then scheduled again."""
        heap = self.deadlines
        live = self._due_flows
        pop = heapq.heappop
        bound = _entry(ts, 0)   # the entries before it are due before `ts`
        idle, reorder = self.idle_timeout, self.reorder_timeout
        quiet_after = self.quiet
        while True:
            # `_first` and `_take`, inline (two frames per deadline otherwise); `_buckets` and
            # `_seconds` are read anew each time: a compaction below replaces them.
            seconds = self._seconds
            if seconds:
                where = self._buckets[seconds[0]]
                soonest = where[0]
                if heap and heap[0] < soonest:
                    where = heap
                    soonest = heap[0]
            elif heap:
                where = heap
                soonest = heap[0]
            else:
                self._next_due = NEVER
                break
            if soonest >= bound:   # its due is `ts` or later
                self._next_due = _due_of(soonest)
                break
            pop(where)
            if not where and where is not heap:
                del self._buckets[pop(seconds)]
            flow = live.pop(soonest, None)
            if flow is None:
                self._stale -= 1
                continue   # superseded by an earlier entry, or the flow is gone
            flow.entry = None
            flow.due = NEVER
            if type(flow) is Flow and flow.lane is not None:
                flow.last_ts = self._lane.last(flow.lane)   # its bare ACKs (see `_lane_clock`)
            last = flow.last_ts
            if type(flow) is IgnoredFlow:
                if ts - last > idle:
                    self._forget_ignored(flow)
                else:
                    self._schedule(flow, last + idle)
                continue
            if flow.state == "closed":
                continue
            if ts - last > idle:
                self._close(flow, last)
                continue
            if flow.lane is not None:
                pass   # nothing pending; the lane releases its unacknowledged bytes itself
            else:
                quiet = released(ts, last, quiet_after)
                for half in flow.halves:
                    since = half.pending_since
                    if half.pending and since is not None and ts - since > reorder:
                        self._fill_gap(flow, half, ts)
                    if quiet:
                        # Unacknowledged bytes of a flow quiet this long: the ACK is not in the
                        # capture (a retransmission would have come by now); they are not kept
                        # (its next segment would drop them: this frees them meanwhile).
                        half.sent = None
            conn = flow.conn
            if conn is not None and flow.state != "closed" and conn.wake < ts:
                self.analysis.tick(conn, ts)
            if flow.state == "closed":
                continue
            # The flow's next deadline, the earliest of: idle, a hole waiting, the pairing's next
            # expiry (one entry; unacknowledged bytes are `_releases`', not the queue's).
            due = self._waiting(flow, last + idle)
            if flow.entry is not None:   # a gap filled above delivered bytes, which scheduled it
                self._schedule(flow, due)
            elif due < NEVER:
                self._push(flow, due)

    # -- the compiled fast lane ---------------------------------------------------

    def drive(self, capture, progress=None) -> float | None:
        """Read `capture` (a classic pcap file the compiled core reads) through the fast lane:
        every segment in file order, each either taken by the lane (then `_fast`) or given to
        `segment` (`_slow`). Returns the last segment's time (None: no segment). The capture is
        then over: what may follow is `finish` (flows that were plain in the lane keep no halves)."""
        from analyzer.core import CORE
        self._lane = CORE.FastLane(unacked=UNACKED, quiet=self.quiet, tombstone_seconds=TOMBSTONE_SECONDS,
                                   start_window=START_WINDOW)
        self._reader_type = CORE.CommandReader
        try:
            return capture.drive(self._lane, self._slow, self._fast, self._time, progress)
        finally:
            self._lane_clock()
            take = self._lane.take
            for flow in list(self.open.values()):   # an exception left some in the lane
                if flow.lane is None:
                    continue
                if flow.halves is IN_LANE:
                    # The capture is over: `finish` only closes the flow, which reads nothing of
                    # halves that were plain (`_plain`) and drops their kept bytes, so they are
                    # not made again (thousands of flows are open at the end of a busy capture).
                    flow.last_ts = take(flow.lane, flow.key, flow.rkey)[2]
                    flow.lane = None
                else:
                    self._unlane(flow)
            self._lane = None

    def _slow(self, ts: float, key: bytes, seq: int, ack: int, flags: int, payload: bytes) -> tuple:
        """A segment the lane did not take: `segment`, its flow out of the lane first and back in
        after when it is in the fast state. Returns the horizon the lane checks time against."""
        self._lane_clock()
        flow = self.flows.get(key)
        left = None
        if type(flow) is Flow and flow.lane is not None:
            self._unlane(flow)
            left = flow
        self.segment(ts, key, seq, ack, flags, payload)
        flow = self.flows.get(key)
        if type(flow) is Flow and flow.lane is None and self._lane_ready(flow):
            self._enlane(flow)
        if left is not None and left.lane is None:
            self._release_later(left)
        return self._horizon()

    def _horizon(self) -> tuple:
        """What the lane checks a segment's time against (see core/src/lane.rs, `Horizon`)."""
        stones = self._stones
        return (self.now, self._head(), stones[0][0] if stones else None,
                self._window_ts if self.syncing or self.syncing_halves else None)

    def _head(self) -> float:
        """When the deadline queue next has something to do: its first live entry (cancelled
        ones before it are dropped now, as `_due` would drop them, so they stop no segment)."""
        live = self._due_flows
        while True:
            where, first = self._first()
            if first is None:
                self._next_due = NEVER
                return NEVER
            flow = live.get(first)
            if flow is not None:
                # `_releases` (flows outside the lane, memory only) wait for a segment that goes
                # to `segment` anyway: no segment of the lane crosses for them.
                due = flow.due   # the entry's own (`_push`)
                self._next_due = due
                return due
            self._take(where)
            self._stale -= 1

    def _time(self, ts: float) -> tuple:
        """The lane holds a segment at `ts` that crosses the horizon: `_advance` to it first."""
        self._lane_clock()
        self._advance(ts)
        return self._horizon()

    def _fast(self, flow: Flow, index: int, events, ts: float, size: int) -> float | None:
        """A segment the lane took: it applied the quiet release, advanced the half's sequence
        state, kept its bytes and fed the reader (`events`); the rest of the common case of
        `segment` and `_deliver`. Returns the deadline heap's head when a deadline was set (the
        only way it moves here), else None."""
        now = self._lane.now   # `ts` or later (`_lane_clock`, inline)
        if now > self.now:
            self.now = now
        flow.last_ts = ts
        conn = flow.conn
        self.analysis.took(conn, flow.dirs[index], size, ts, events)
        if conn.failed:
            self._unlane(flow)
            self._release_later(flow)
        wake = conn.wake
        due = flow.due
        if wake < due:
            if flow.state == "open":
                self._schedule(flow, wake)   # a request now awaits its reply
                return self._head()
        elif due < wake and due < ts + self._stale_after and flow.state == "open":
            if self._refresh(flow):
                return self._head()
        return None

    def _refresh(self, flow: Flow) -> bool:
        """`flow` delivered bytes and its entry in the deadline queue is earlier than its pairing's
        next expiry (the reply came) and than half an idle timeout past them (it spoke since
        the entry was set): set it again at the earliest deadline it has now, as `_due` would
        when it came due, so that it does not come due for nothing (for the lane: a segment
        handed to Python only for that). True when the entry moved. Both paths call this at the
        same deliveries (`_deliver`, `_fast`), so their deadlines come due alike."""
        due = self._waiting(flow, flow.last_ts + self.idle_timeout)
        if due <= flow.due:
            return False
        self._cancel(flow)
        if due < NEVER:
            self._push(flow, due)
        return True

    def _release_later(self, flow: Flow) -> None:
        """`flow` left the lane and stays out: the unacknowledged bytes it brought back are freed
        once it is quiet, as `_deliver` arranges it for bytes kept outside the lane."""
        if flow.state == "open" and flow.release_at is None and _holds(flow):
            self._release_at(flow, flow.last_ts + self.quiet)

    def _release_at(self, flow: Flow, due: float) -> None:
        flow.release_at = due
        releases = self._releases
        if not releases:
            self._next_release = due
        releases.append((due, flow))

    def _release_quiet(self, now: float) -> None:
        """Capture time reached `now`: the flows queued in `_releases` before it drop their
        unacknowledged bytes if quiet (`released`), or are queued again at their last segment plus
        the quiet interval. Memory only: their next segment would drop the same bytes."""
        releases, quiet = self._releases, self.quiet
        while releases and releases[0][0] < now:
            _, flow = releases.popleft()
            flow.release_at = None
            if flow.state != "open" or flow.lane is not None:
                continue   # closed (nothing kept), or the lane keeps its bytes now
            if released(now, flow.last_ts, quiet):
                for half in flow.halves:
                    half.sent = None
            elif _holds(flow):
                due = flow.last_ts + quiet
                self._release_at(flow, due if due >= now else now)
        self._next_release = releases[0][0] if releases else NEVER

    def _lane_ready(self, flow: Flow) -> bool:
        """Whether the common case of `segment` is all the next segments of `flow` may need."""
        conn = flow.conn
        if (flow.state != "open" or flow.window is not None or conn is None or conn.failed
                or conn.protocol != MSNP or type(conn.c2s) is not self._reader_type
                or type(conn.s2c) is not self._reader_type):
            return False
        started = False
        for half in flow.halves:
            if half.pending or half.fin is not None or half.window is not None:
                return False
            if half.nxt is not None:
                started = True
        # A direction not started (a one-sided connection: the capture holds one side) goes in
        # as such; the lane takes none of its segments (the first goes to `segment`, which takes
        # the flow out), and the started one's as for any flow.
        return started

    def _enlane(self, flow: Flow) -> None:
        first, second = flow.halves
        conn = flow.conn
        readers = (conn.c2s, conn.s2c) if flow.dirs[0] == C2S else (conn.s2c, conn.c2s)
        flow.lane = self._lane.add(flow, flow.key, flow.rkey, flow.last_ts, first.nxt, first.pos, first.sent,
                                   second.nxt, second.pos, second.sent, *readers)
        first.sent = second.sent = None   # the lane keeps them now
        if _plain(first) and _plain(second):
            # All the halves hold now is what the lane holds (nxt, pos, unacknowledged bytes):
            # they are made again when the flow leaves it (tens of thousands of flows sit in the
            # lane at once on a busy server's capture; two HalfStreams cost each 300 bytes).
            # Everything that reads a flow's halves takes it out of the lane first, or (the
            # deadline's `_waiting`) finds none, as it would find nothing pending.
            flow.halves = IN_LANE

    def _unlane(self, flow: Flow) -> None:
        first, second, flow.last_ts = self._lane.take(flow.lane, flow.key, flow.rkey)
        flow.lane = None
        if flow.halves is IN_LANE:
            flow.halves = (HalfStream(0), HalfStream(1))
        for half, (nxt, pos, sent) in zip(flow.halves, (first, second)):
            half.nxt, half.pos, half.sent = nxt, pos, sent

    def _lane_clock(self) -> None:
        """The lane takes a flow's bare ACKs without calling Python (`segment` would only have
        moved the clock, the flow's `last_ts` and its peer's unacknowledged bytes): capture time
        is the lane's clock if that is later, and a flow's `last_ts` is read from the lane by
        whatever looks at it while the flow is there (`_due`, `_evict`; `_unlane` takes it back,
        as `drive` does for every flow before `finish`)."""
        now = self._lane.now
        if now > self.now:
            self.now = now


IN_LANE = ()   # a flow's halves while the lane holds all of their state (see _enlane), and after `drive`


def _holds(flow: Flow) -> bool:
    """Whether either half of `flow` keeps unacknowledged bytes."""
    for half in flow.halves:
        if half.sent is not None:
            return True
    return False


def _plain(half: HalfStream) -> bool:
    """Whether `half`, of a flow going into the lane, holds nothing a new HalfStream would not once
    given the lane's nxt, pos and sent back: no SYN (isn), no ACK strikes (`ack_upto` is read only
    with strikes), nothing pending or ended (the lane takes no such flow), `seen` is read only in
    the start window, which is over."""
    return half.isn is None and not half.ack_strikes and not half.pending and half.fin is None
