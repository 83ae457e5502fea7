"""TCP reassembly for offline captures: segments in, ordered bytes per direction out.

Contract:
- `TcpTracker(analysis, ...)` takes every TCP segment of a capture through
  `segment(ts, key, seq, ack, flags, payload)` (the tuples `pcap.py` yields),
  in file order, and `finish(ts)` at the end of the capture.
- Per direction it delivers bytes in sequence order, each byte once:
  retransmissions and partial overlaps are cut away (`tcp.retransmission`,
  and `tcp.overlap_mismatch` when the bytes differ from the first copy),
  out-of-order segments wait in a bounded buffer, sequence numbers wrap at
  2^32. A hole that does not fill (buffer full, reorder timeout, FIN, RST or
  end of capture) is reported as `tcp.gap` with its size and passed to the
  codec (`Analysis.gap`), which resynchronises; no byte is invented.
- Streams without a SYN (captures that start mid-session) start at the lowest
  sequence number seen in a short window of their first segments (SYNC_WINDOW
  data segments per direction, or START_WINDOW seconds), so a capture that
  starts with a reordered pair still starts at the right byte. Windows close
  oldest first, so stream ids follow the order flows were first seen.
- A hole is given up (`tcp.gap`) when the peer has ACKed past it several
  times (the receiver got bytes the capture never will), when the buffer is
  full, after the reorder timeout, or at FIN/RST/end of capture.
- MSNP detection and the client/server decision are `detect.py`'s; only MSNP
  flows (and MSNFTP file-transfer flows, `Connection.protocol`) become `Connection`s (stream ids "1", "2", ... in order of
  detection). Other flows are remembered as ignored, and their segments cost
  one dict lookup.
- A connection is closed (`Analysis.close`, which releases its decoders) as
  soon as both directions ended (FIN delivered) or on RST; a SYN on a 4-tuple
  that is still open starts a new connection (port reuse). Memory grows with
  the number of open flows times the configured buffers, not with the file.
- At most `max_flows` flows are open at once: a new flow beyond that closes
  the least recently active sixteenth of them first (their holes become
  gaps, their connections end; a later segment of one starts a new flow), and
  the file gets one `capture.flow_limit` anomaly with the count at `finish`.
"""

from __future__ import annotations

from analyzer.msnp import C2S, S2C, Anomaly
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
DEFAULT_MAX_FLOWS = 100_000          # flows open at once (MSNP and not-yet-decided; ignored ones cost a dict entry)
SYNC_WINDOW = 8                      # data segments per direction before a SYN-less flow picks its start
ACK_STRIKES = 3                      # peer ACKs past a hole before it is given up
START_WINDOW = 0.5                   # seconds a SYN-less direction waits for reordered first segments
SYNC_WINDOW_MAX = 32                 # segments a flow holds at most while it picks its start
HISTORY = 64 * 1024                  # delivered bytes kept per direction to check retransmissions
TOMBSTONE_SECONDS = 120.0            # late segments of a closed flow are dropped this long
SWEEP_SECONDS = 5.0                  # timeouts are checked at most this often (capture time),
SWEEP_SEGMENTS = 4096                # and after this many segments,
SWEEP_LATEST = 60.0                  # or this long after they were due, whichever is first

IGNORED = object()   # flow table marker: a flow that is not MSNP


class HalfStream:
    """One direction of a flow: sequence bookkeeping, out-of-order buffer, history."""

    __slots__ = ("index", "nxt", "pos", "pending", "pending_bytes", "pending_since",
                 "history", "history_bytes", "fin", "ended", "retransmissions", "window", "seen", "ack_strikes", "ack_upto")

    def __init__(self, index: int) -> None:
        self.index = index
        self.nxt: int | None = None   # raw sequence number of the next byte expected
        self.pos = 0                  # stream offset of that byte
        self.pending: dict[int, bytes] = {}   # stream offset -> bytes, not yet deliverable
        self.pending_bytes = 0
        self.pending_since: float | None = None
        self.history: list = []       # [(offset, bytes)] of the last delivered segments
        self.history_bytes = 0
        self.fin: int | None = None   # stream offset of the FIN
        self.ended = False
        self.retransmissions = 0
        self.window: list | None = None  # a late half's first segments, while its start is chosen
        self.seen = 0                 # data segments in the flow's start window
        self.ack_strikes = 0          # peer ACKs seen past a hole in this direction
        self.ack_upto = 0             # the furthest of them (stream offset)


class Flow:
    """One TCP connection (a 4-tuple from SYN, or from first sight, to FIN/RST)."""

    __slots__ = ("keys", "halves", "syn", "client_hint", "state", "window", "early", "early_bytes",
                 "conn", "dirs", "last_ts", "first_ts")

    def __init__(self, key: bytes, rkey: bytes, ts: float) -> None:
        self.keys = (key, rkey)
        self.halves = (HalfStream(0), HalfStream(1))
        self.syn: list = [None, None]     # ISN per half, from SYN
        self.client_hint: int | None = None   # half index of the client, from SYN / SYN-ACK
        self.state = "sync"               # sync -> open (deciding / msnp) -> closed
        self.window: list | None = []     # segments held while the start is chosen
        self.early: list | None = []      # deliveries held while MSNP-ness is decided
        self.early_bytes = 0
        self.conn = None                  # the analysis Connection, once MSNP
        self.dirs: tuple | None = None    # half index -> C2S/S2C
        self.first_ts = ts
        self.last_ts = ts


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
        self.detector = detector or detect.Detector()
        self.flows: dict[bytes, object] = {}   # key -> (Flow, half index) or IGNORED
        self.open: dict[int, Flow] = {}        # id(flow) -> flow, for sweeps
        self.tombstones: dict[bytes, float] = {}
        self.syncing: dict[int, tuple] = {}    # start windows open, oldest first: (flow, half|None, ts)
        self.now = 0.0
        self._next_sweep = None
        self._count = 0
        self.stats = {"segments": 0, "ignored_segments": 0, "late_segments": 0, "flows": 0,
                      "msnp_flows": 0, "ignored_flows": 0}

    # -- input ------------------------------------------------------------------

    def segment(self, ts: float, key: bytes, seq: int, ack: int, flags: int, payload: bytes) -> None:
        self._count += 1
        if ts > self.now:
            self.now = ts
            if self._next_sweep is None:
                self._next_sweep = ts + SWEEP_SECONDS
            elif ts >= self._next_sweep and (self._count >= SWEEP_SEGMENTS or ts >= self._next_sweep + SWEEP_LATEST):
                self.sweep(ts)
        if self.syncing:
            self._expire_windows(ts)
        entry = self.flows.get(key)
        if entry is None:
            entry = self._new_flow(ts, key, seq, flags, payload)
            if entry is None:
                return
        elif entry is IGNORED:
            if flags & (FIN | RST):
                self._forget_ignored(key)
            return
        flow, index = entry
        flow.last_ts = ts
        if payload and not flags & (SYN | FIN | RST) and flow.conn is not None:
            # The common case, kept short: the next bytes of an MSNP stream, nothing pending.
            half = flow.halves[index]
            if seq == half.nxt and not half.pending and half.fin is None \
                    and not flow.halves[1 - index].pending:
                n = len(payload)
                half.nxt = (seq + n) & MASK
                start = half.pos
                half.pos = start + n
                half.history.append((start, payload))
                half.history_bytes += n
                if half.history_bytes > HISTORY:
                    self._trim_history(half)
                self._deliver(flow, index, payload, ts)
                return
        if flags & SYN:
            if self._syn(flow, index, ts, key, seq, flags, payload):
                return
            seq = (seq + 1) & MASK  # data on a SYN starts after the SYN's own sequence number
        if flow.window is not None:
            flow.window.append((index, seq, flags, payload, ts))
            if payload:
                flow.halves[index].seen += 1
            if self._window_full(flow):
                self._start(flow)
            return
        if flags & ACK:
            other = flow.halves[1 - index]
            if other.pending and other.nxt is not None:
                self._acked(flow, other, ack, ts)
        self._segment(flow, flow.halves[index], ts, seq, flags, payload)

    @staticmethod
    def _window_full(flow: Flow) -> bool:
        """Enough of the flow's first segments to choose where each direction starts:
        both SYNs, or SYNC_WINDOW data segments per direction (or SYNC_WINDOW_MAX in all).
        Otherwise the window closes START_WINDOW seconds after the flow's first segment."""
        if flow.syn[0] is not None and flow.syn[1] is not None or len(flow.window) >= SYNC_WINDOW_MAX:
            return True
        return all(flow.syn[h.index] is not None or h.seen >= SYNC_WINDOW for h in flow.halves)

    def _expire_windows(self, ts: float) -> None:
        """Close start windows older than START_WINDOW, oldest first (stream ids follow first sight)."""
        syncing = self.syncing
        while syncing:
            flow, half, first = next(iter(syncing.values()))
            if ts - first <= START_WINDOW:
                return
            if half is None:
                self._start(flow)
            else:
                self._start_half(flow, half)

    def _acked(self, flow: Flow, half: HalfStream, ack: int, ts) -> None:
        """The peer acknowledged bytes of `half` that the capture does not hold: those holes never fill."""
        d = (ack - half.nxt) & MASK
        if not d or d >= HALF:
            half.ack_strikes = 0
            return
        # One ACK past a hole may come from a capture that reordered across directions
        # (mirror ports, merged files); several ACKs, each further than the last, mean
        # the peer got bytes this capture never will.
        upto = half.pos + d
        if half.ack_strikes and upto <= half.ack_upto:
            return
        half.ack_upto = upto
        half.ack_strikes += 1
        if half.ack_strikes < ACK_STRIKES:
            return
        half.ack_strikes = 0
        while half.pending and flow.state != "closed":
            start = min(half.pending)
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
        import heapq
        victims = heapq.nsmallest(max(1, self.max_flows // 16), self.open.values(), key=lambda f: f.last_ts)
        for flow in victims:
            self._close(flow, flow.last_ts)
            for k in flow.keys:  # not late segments: a later segment starts a new flow
                self.tombstones.pop(k, None)
        self.evicted += len(victims)

    def finish(self, ts: float | None = None) -> None:
        """End of capture: flush every open flow (holes become gaps) and close it."""
        for flow in list(self.open.values()):
            self._close(flow, flow.last_ts)  # a flow still open ends at its own last segment
        if self.evicted:
            self.analysis.anomaly(None, Anomaly(
                "capture.flow_limit",
                f"more than {self.max_flows} TCP flows open at once (--max-flows): {self.evicted} of the least "
                f"recently active were closed early", None, None, ts))
            self.evicted = 0
        self.flows.clear()
        self.tombstones.clear()

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
        if len(self.open) >= self.max_flows:
            self._evict(ts)
        from analyzer.capture.pcap import reverse_key
        rkey = reverse_key(key)
        self.tombstones.pop(rkey, None)
        flow = Flow(key, rkey, ts)
        self.flows[key] = (flow, 0)
        self.flows[rkey] = (flow, 1)
        self.open[id(flow)] = flow
        self.syncing[id(flow)] = (flow, None, ts)
        self.stats["flows"] += 1
        return self.flows[key]

    def _syn(self, flow: Flow, index: int, ts, key, seq, flags, payload) -> bool:
        """A SYN: note the ISN, or start a new flow on a reused 4-tuple. True when consumed."""
        known = flow.syn[index]
        half = flow.halves[index]
        if known == seq:
            return not payload  # a retransmitted SYN
        if known is None and (flow.window is not None or (flags & ACK and half.nxt is None)):
            flow.syn[index] = seq
            if flow.client_hint is None:
                flow.client_hint = 1 - index if flags & ACK else index
            if flow.window is None:
                half.nxt = (seq + 1) & MASK
            elif not payload and flow.syn[0] is not None and flow.syn[1] is not None:
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
        for other, half, _ in list(self.syncing.values()):
            if other is flow:
                break
            if half is None:
                self._start(other)
        self.syncing.pop(id(flow), None)
        window, flow.window = flow.window, None
        for half in flow.halves:
            isn = flow.syn[half.index]
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
        self.syncing.pop(id(half), None)
        window, half.window = half.window, None
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
            if half.window is None:
                half.window = []
                self.syncing[id(half)] = (flow, half, ts)
            half.window.append((seq, flags, payload, ts))
            if len(half.window) >= SYNC_WINDOW or flags & (FIN | RST):
                self._start_half(flow, half)
            return
        if payload:
            d = (seq - half.nxt) & MASK
            if d == 0 and not half.pending:
                n = len(payload)
                half.nxt = (seq + n) & MASK
                start = half.pos
                half.pos = start + n
                self._remember(half, start, payload)
                self._deliver(flow, half.index, payload, ts)
            else:
                self._out_of_order(flow, half, ts, seq, d, payload)
        if flags & FIN and half.fin is None:
            d = (seq + len(payload) - half.nxt) & MASK
            half.fin = half.pos + (d if d < HALF else d - (1 << 32))
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
            half.retransmissions += 1
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
                self._remember(half, half.pos - len(payload), payload)
                self._deliver(flow, half.index, payload, ts)
                return
        start = half.pos + d
        old = half.pending.get(start)
        if old is not None:
            if old[:len(payload)] != payload[:len(old)]:
                self._anomaly(flow, half, "tcp.overlap_mismatch",
                              f"two copies of offset {start} differ", start, ts)
            if len(old) >= len(payload):
                return
            half.pending_bytes -= len(old)
        half.pending[start] = payload
        half.pending_bytes += len(payload)
        if half.pending_since is None:
            half.pending_since = ts
        self._drain(flow, half, ts)
        if half.pending_bytes > self.buffer:
            self._fill_gap(flow, half, ts)

    def _drain(self, flow: Flow, half: HalfStream, ts) -> None:
        """Deliver pending segments that now continue the stream."""
        pending = half.pending
        while pending:
            start = min(pending)
            if start > half.pos:
                return
            data = pending.pop(start)
            half.pending_bytes -= len(data)
            if not pending:
                half.pending_since = None
            end = start + len(data)
            if end <= half.pos:
                self._check_overlap(flow, half, start, data, ts)
                continue
            if start < half.pos:
                self._check_overlap(flow, half, start, data, ts)
                data = data[half.pos - start:]
            half.pos += len(data)
            half.nxt = (half.nxt + len(data)) & MASK
            self._remember(half, half.pos - len(data), data)
            self._deliver(flow, half.index, data, ts)
            if flow.state == "closed":
                return

    def _fill_gap(self, flow: Flow, half: HalfStream, ts, everything: bool = False) -> None:
        """The hole before the first pending segment will not fill: report it and move on.

        Skips holes until the buffer is back under its limit (all of them when
        `everything`, at the end of the flow)."""
        while half.pending and flow.state != "closed":
            start = min(half.pending)
            if start > half.pos:
                size = start - half.pos
                self._gap(flow, half, size, ts, f"{size} bytes missing at offset {half.pos}")
                half.pos = start
                half.nxt = (half.nxt + size) & MASK
            self._drain(flow, half, ts)
            if not everything and half.pending_bytes <= self.buffer:
                break
        if half.pending:
            half.pending_since = ts

    def _gap(self, flow: Flow, half: HalfStream, size: int, ts, detail: str) -> None:
        if flow.conn is not None:
            direction = flow.dirs[half.index]
            self.analysis.anomaly(flow.conn, Anomaly("tcp.gap", detail, direction, half.pos, ts))
            self.analysis.gap(flow.conn, direction, size, ts)
        elif flow.state != "closed" and flow.early is not None:
            flow.early.append(Early(half.index, ts, anomaly="tcp.gap", detail=detail, offset=half.pos, size=size))

    def _remember(self, half: HalfStream, start: int, data: bytes) -> None:
        half.history.append((start, data))
        half.history_bytes += len(data)
        if half.history_bytes > HISTORY:
            self._trim_history(half)

    @staticmethod
    def _trim_history(half: HalfStream) -> None:
        history = half.history
        if len(history) > 1:
            drop = 0
            total = half.history_bytes
            while total > HISTORY // 2 and drop < len(history) - 1:  # amortised: trim to half
                total -= len(history[drop][1])
                drop += 1
            del history[:drop]
            half.history_bytes = total

    def _check_overlap(self, flow: Flow, half: HalfStream, start: int, data: bytes, ts) -> None:
        """Compare a second copy of delivered bytes with the first (as far as history reaches)."""
        end = start + len(data)
        for hstart, hdata in reversed(half.history):
            hend = hstart + len(hdata)
            if hend <= start:
                break
            if hstart >= end:
                continue
            lo, hi = max(start, hstart), min(end, hend)
            if data[lo - start:hi - start] != hdata[lo - hstart:hi - hstart]:
                self._anomaly(flow, half, "tcp.overlap_mismatch",
                              f"retransmitted bytes at offset {lo} differ from the first copy "
                              f"(the first copy was kept)", lo, ts)
                return

    def _end(self, flow: Flow, half: HalfStream, ts) -> None:
        half.ended = True
        if flow.conn is not None:
            self.analysis.end(flow.conn, flow.dirs[half.index], ts)

    def _close(self, flow: Flow, ts) -> None:
        if flow.state == "closed":
            return
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
            self.tombstones[key] = ts if ts is not None else self.now
        self.open.pop(id(flow), None)
        self._release(flow)

    def _release(self, flow: Flow) -> None:
        for obj in (flow, *flow.halves):
            self.syncing.pop(id(obj), None)
        for half in flow.halves:
            half.history, half.pending, half.window = [], {}, None
        flow.early = None

    def _forget_ignored(self, key) -> None:
        from analyzer.capture.pcap import reverse_key
        self.flows.pop(key, None)
        self.flows.pop(reverse_key(key), None)

    # -- bytes out ----------------------------------------------------------------

    def _deliver(self, flow: Flow, index: int, data: bytes, ts) -> None:
        conn = flow.conn
        if conn is None:
            flow.early.append(Early(index, ts, data))
            flow.early_bytes += len(data)
            self.detector.decide(self, flow, final=False)
            return
        self.analysis.feed(conn, flow.dirs[index], data, ts)

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
        flow.dirs = (C2S, S2C) if client_index == 0 else (S2C, C2S)
        flow.conn = self.analysis.open(client, server, protocol=protocol)
        flow.conn.on_referral = self.detector.referral  # servers named by XFR/RNG are MSNP servers
        self.stats["msnp_flows"] += 1
        early, flow.early = flow.early, None
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
        flow.early = None
        flow.state = "closed"
        for key in flow.keys:
            self.flows[key] = IGNORED
        self.open.pop(id(flow), None)
        self._release(flow)

    # -- timeouts -----------------------------------------------------------------

    def sweep(self, ts: float) -> None:
        """Capture-time housekeeping: reply timeouts, stale holes, idle flows, old tombstones."""
        self._next_sweep = ts + SWEEP_SECONDS
        self._count = 0
        for flow in list(self.open.values()):
            if ts - flow.last_ts > self.idle_timeout:
                self._close(flow, flow.last_ts)
                continue
            for half in flow.halves:
                if half.pending and half.pending_since is not None and ts - half.pending_since > self.reorder_timeout:
                    self._fill_gap(flow, half, ts)
            if flow.conn is not None and flow.state != "closed":
                self.analysis.tick(flow.conn, ts)
        if self.tombstones:
            old = [k for k, t in self.tombstones.items() if ts - t > TOMBSTONE_SECONDS]
            for k in old:
                del self.tombstones[k]
