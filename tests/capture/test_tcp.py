"""TCP reassembly: order, holes, overlaps, wrap-around, starts without SYN, FIN/RST, port reuse."""

from __future__ import annotations

import socket
import struct
from collections import OrderedDict

from hypothesis import given
from hypothesis import strategies as st

from analyzer.analysis.run import Analysis
from analyzer.capture.tcp import ACK, FIN, MAX_SYNCING, RST, START_WINDOW, SYN, TcpTracker
from resegment import Collector

PSH_ACK = 0x18
CLIENT = ("127.0.0.1", 40000)
SERVER = ("127.0.0.2", 1863)


def key(src, dst) -> bytes:
    return socket.inet_aton(src[0]) + socket.inet_aton(dst[0]) + struct.pack(">HH", src[1], dst[1])


class Wire:
    """Builds segments of one connection and feeds them to a tracker."""

    def __init__(self, isn_c=1000, isn_s=5000, client=CLIENT, server=SERVER, **tracker_options):
        self.got = Collector()
        self.analysis = Analysis([self.got])
        self.tracker = TcpTracker(self.analysis, **tracker_options)
        self.seq = {"c": isn_c, "s": isn_s}
        self.client, self.server = client, server
        self.ts = 100.0

    def send(self, side, data=b"", flags=PSH_ACK, seq=None, ack=0):
        self.ts += 0.01
        src, dst = (self.client, self.server) if side == "c" else (self.server, self.client)
        s = self.seq[side] if seq is None else seq
        self.tracker.segment(self.ts, key(src, dst), s & 0xFFFFFFFF, ack, flags, data)
        if seq is None:
            self.seq[side] = (s + len(data) + (1 if flags & (SYN | FIN) else 0)) & 0xFFFFFFFF
        return s

    def handshake(self):
        self.send("c", flags=SYN)
        self.send("s", flags=SYN | ACK)
        self.send("c", flags=ACK)

    def finish(self):
        self.tracker.finish(self.ts)
        self.analysis.finish()
        return self.got


def lines(got, direction="c2s"):
    return [raw for d in got.lines.values() for raw in d[direction]]


def test_in_order_with_handshake_and_fin_closes_at_once():
    w = Wire()
    w.handshake()
    w.send("c", b"VER 1 MSNP8 CVR0\r\n")
    w.send("s", b"VER 1 MSNP8 CVR0\r\n")
    w.send("c", b"OUT\r\n")
    w.send("c", flags=FIN | ACK)
    w.send("s", flags=FIN | ACK)
    [conn] = w.analysis.connections.values()
    assert conn.closed and conn.readers == {}   # reported and released before the capture ends
    assert w.got.streams == [conn]
    assert conn.client == "127.0.0.1:40000" and conn.server == "127.0.0.2:1863"
    got = w.finish()
    assert lines(got) == [b"VER 1 MSNP8 CVR0\r\n", b"OUT\r\n"]
    assert lines(got, "s2c") == [b"VER 1 MSNP8 CVR0\r\n"]


def test_syn_decides_the_client_even_on_port_1863():
    # The client's own port is 1863 (a peer-to-peer oddity): the SYN still says who called.
    w = Wire(client=("127.0.0.1", 1863), server=("127.0.0.2", 40000))
    w.handshake()
    w.send("c", b"VER 1 MSNP8 CVR0\r\n")
    w.finish()
    [conn] = w.analysis.connections.values()
    assert conn.client == "127.0.0.1:1863"


def test_out_of_order_and_retransmitted_segments():
    w = Wire()
    w.handshake()
    base = w.seq["c"]
    stream = b"PNG\r\nCAL 2 alice@example.com\r\nCAL 3 bob@example.com\r\n"
    w.send("c", stream[30:], seq=base + 30)       # early: waits
    w.send("c", stream[:11], seq=base)            # in order
    w.send("c", stream[5:30], seq=base + 5)       # overlaps 6 bytes, fills the hole
    w.send("c", stream[:5], seq=base)             # a whole retransmission
    got = w.finish()
    assert lines(got) == [b"PNG\r\n", b"CAL 2 alice@example.com\r\n", b"CAL 3 bob@example.com\r\n"]
    names = [a.name for _, a in got.anomalies]
    assert "tcp.retransmission" in names
    assert "tcp.gap" not in names


def test_overlap_with_different_bytes_is_an_anomaly_and_first_copy_wins():
    w = Wire()
    w.handshake()
    base = w.seq["c"]
    w.send("c", b"CAL 2 alice@example.com\r\n")
    w.send("c", b"CAL 2 mallory@example.com\r\n", seq=base)
    got = w.finish()
    assert lines(got) == [b"CAL 2 alice@example.com\r\n"]
    assert "tcp.overlap_mismatch" in got.names()


def test_hole_that_never_fills_is_a_gap_and_decoding_resynchronises():
    w = Wire()
    w.handshake()
    w.send("c", b"PNG\r\n")
    w.seq["c"] += 40                                   # 40 bytes lost by the capture
    w.send("c", b" cut line\r\nCAL 5 bob@example.com\r\n")
    got = w.finish()
    gaps = [a for _, a in got.anomalies if a.name == "tcp.gap"]
    assert len(gaps) == 1 and gaps[0].detail.startswith("40 bytes missing")
    assert lines(got) == [b"PNG\r\n", b"CAL 5 bob@example.com\r\n"]  # nothing invented
    [conn] = w.analysis.connections.values()
    assert conn.bytes["c2s"] == 5 + 34  # what was captured, the hole not counted


def test_small_buffer_gives_up_on_a_hole_before_the_end():
    w = Wire(buffer=16)
    w.handshake()
    w.send("c", b"PNG\r\n")
    w.seq["c"] += 3
    w.send("c", b"X\r\nCAL 5 bob@example.com\r\n")  # 26 bytes wait: more than the buffer
    gaps = [a for _, a in w.got.anomalies if a.name == "tcp.gap"]
    assert len(gaps) == 1          # reported now, not at the end of the capture
    w.finish()


def test_peer_acks_past_a_hole_give_it_up():
    w = Wire()
    w.handshake()
    w.send("c", b"PNG\r\n")
    lost = w.seq["c"]
    w.seq["c"] += 5
    for i in range(3):
        w.send("c", b"PNG\r\n")
        w.send("s", b"QNG 50\r\n", ack=w.seq["c"])  # the server got everything, the capture did not
    [gap] = [a for _, a in w.got.anomalies if a.name == "tcp.gap"]
    assert gap.offset == 5 and gap.detail.startswith("5 bytes missing") and lost
    w.finish()


def test_sequence_numbers_wrap_around():
    w = Wire(isn_c=0xFFFFFFF0)
    w.handshake()
    w.send("c", b"VER 1 MSNP8 CVR0\r\n")   # crosses 2^32
    w.send("c", b"PNG\r\n")
    base = w.seq["c"]
    w.send("c", b"OUT\r\n", seq=base + 5)
    w.send("c", b"PNG\r\n", seq=base)
    got = w.finish()
    assert lines(got) == [b"VER 1 MSNP8 CVR0\r\n", b"PNG\r\n", b"PNG\r\n", b"OUT\r\n"]
    assert not got.names() & {"tcp.gap", "tcp.retransmission"}


def test_mid_session_start_with_reordered_first_segments():
    w = Wire(isn_c=777)
    w.send("c", b"CAL 9 bob@example.com\r\n", seq=777 + 5)   # arrives first
    w.send("c", b"PNG\r\n", seq=777)
    w.send("s", b"QNG 50\r\n")
    got = w.finish()
    assert lines(got) == [b"PNG\r\n", b"CAL 9 bob@example.com\r\n"]
    assert "tcp.gap" not in got.names()
    [conn] = w.analysis.connections.values()
    assert conn.server == "127.0.0.2:1863"   # no SYN: the 1863 end is the server


def test_one_sided_capture():
    w = Wire()
    for i in range(20):
        w.send("s", b"QNG 50\r\n")
    got = w.finish()
    assert len(lines(got, "s2c")) == 20 and lines(got) == []


def test_rst_closes_the_connection_at_once():
    w = Wire()
    w.handshake()
    w.send("c", b"PNG\r\n")
    w.send("s", flags=RST | ACK)
    [conn] = w.analysis.connections.values()
    assert conn.closed
    w.finish()


def test_reused_four_tuple_is_a_new_connection():
    w = Wire()
    w.handshake()
    w.send("c", b"VER 1 MSNP8 CVR0\r\n")
    w.seq = {"c": 90000, "s": 123}
    w.handshake()                      # a new SYN on the same 4-tuple, no FIN before it
    w.send("c", b"VER 2 MSNP9 CVR0\r\n")
    got = w.finish()
    assert len(w.analysis.connections) == 2
    assert sorted(lines(got)) == [b"VER 1 MSNP8 CVR0\r\n", b"VER 2 MSNP9 CVR0\r\n"]
    assert [c.id for c in got.streams] == ["1", "2"]


def test_late_segments_of_a_closed_connection_open_nothing():
    w = Wire()
    w.handshake()
    w.send("c", b"PNG\r\n")
    w.send("c", flags=FIN | ACK)
    w.send("s", flags=FIN | ACK)
    w.send("c", b"PNG\r\n", seq=w.seq["c"] - 6)   # a late retransmission after the close
    w.finish()
    assert len(w.analysis.connections) == 1
    assert w.tracker.stats["late_segments"] == 1


# -- cost proportional to input (counts, never timings: bench/scaling.py times them) --------


def test_one_byte_segments_in_reverse_order_each_enter_and_leave_the_buffer_once(monkeypatch):
    import heapq as real_heapq

    import analyzer.capture.tcp as tcp
    calls = {"push": 0, "pop": 0, "min": 0}

    class CountingHeapq:
        @staticmethod
        def heappush(heap, item):
            calls["push"] += 1
            real_heapq.heappush(heap, item)

        @staticmethod
        def heappop(heap):
            calls["pop"] += 1
            return real_heapq.heappop(heap)

        heapify = staticmethod(real_heapq.heapify)
        nsmallest = staticmethod(real_heapq.nsmallest)

    def counting_min(*args, **kwargs):
        items = list(args[0]) if len(args) == 1 else list(args)
        calls["min"] += len(items)
        return min(items, **kwargs)

    monkeypatch.setattr(tcp, "heapq", CountingHeapq)
    monkeypatch.setattr(tcp, "min", counting_min, raising=False)
    line = b"MSG 5 N 2000\r\n" + b"x" * 2000
    w = Wire()
    w.handshake()
    base = w.seq["c"]
    for i in reversed(range(1, len(line))):   # every byte but the first, last first
        w.send("c", line[i:i + 1], seq=base + i)
    w.send("c", line[:1], seq=base)
    got = w.finish()
    assert lines(got) == [line] and "tcp.gap" not in got.names()
    n = len(line) - 1
    # Each held byte is pushed once and popped once (a heap): no scan of the buffer per arrival.
    assert n <= calls["push"] <= n + 8 and n <= calls["pop"] <= n + 8
    assert calls["min"] <= 4 * n


class CountingValues(OrderedDict):
    """A dict that counts the items its values() hands out."""

    handed = 0

    def values(self):
        for value in super().values():
            CountingValues.handed += 1
            yield value


def test_many_flows_in_their_start_window_are_started_without_rescanning_the_others():
    CountingValues.handed = 0
    w = Wire()
    w.tracker.syncing = CountingValues()
    n = 2000
    for i in range(n):   # bare SYNs and SYN-less one-segment flows, all inside the start window
        src = ("127.0.1.%d" % (1 + i % 250), 20000 + i)
        flags, data = (SYN, b"") if i % 2 else (PSH_ACK, b"VER 1 MSNP8 CVR0\r\n")
        w.tracker.segment(100.0 + i * 1e-5, key(src, SERVER), 7000 + i, 0, flags, data)
    w.tracker.segment(101.0, key(CLIENT, SERVER), 1, 0, PSH_ACK, b"VER 1 MSNP8 CVR0\r\n")
    w.finish()
    assert len(w.analysis.connections) >= n // 2
    assert CountingValues.handed <= 4 * n   # the old start copied every open window per flow: n*n/2


def test_a_syn_nobody_answers_is_forgotten_when_its_window_closes():
    # A SYN flood (or a scan): each SYN-only flow goes at the end of its start window, not
    # at the idle timeout; an answer that comes later still opens the flow it belongs to.
    w = Wire()
    for i in range(300):
        src = ("127.0.4.%d" % (1 + i % 250), 30000 + i)
        w.tracker.segment(100.0, key(src, SERVER), 7000 + i, 0, SYN, b"")
    assert len(w.tracker.open) == 300
    late = ("127.0.4.1", 30000)
    w.tracker.segment(100.0 + START_WINDOW + 0.1, key(SERVER, late), 90, 7001, SYN | ACK, b"")
    assert w.tracker.stats["syn_only_flows"] == 300
    assert list(w.tracker.open.values())[0].keys[1] == key(late, SERVER)   # only the answered one
    assert len(w.tracker.flows) == 2 and not w.tracker.tombstones
    w.tracker.segment(100.7, key(late, SERVER), 7001, 91, PSH_ACK, b"VER 1 MSNP8 CVR0\r\n")
    w.tracker.segment(100.8, key(SERVER, late), 91, 7019, PSH_ACK, b"VER 1 MSNP8 CVR0\r\n")
    got = w.finish()
    assert got.signature() == [((b"VER 1 MSNP8 CVR0\r\n",), (b"VER 1 MSNP8 CVR0\r\n",))]
    assert "capture.start_window_limit" not in got.names()


def test_start_windows_open_at_once_are_bounded_and_the_limit_is_reported_once():
    w = Wire()
    n = MAX_SYNCING + 500
    most = 0
    for i in range(n):   # SYN-less flows and bare SYNs, all at one capture instant
        src = ("127.0.%d.%d" % (5 + i // 250 % 200, 1 + i % 250), 20000 + i % 40000)
        flags, data = (SYN, b"") if i % 2 else (PSH_ACK, b"PNG\r\n")
        w.tracker.segment(100.0, key(src, SERVER), 7000 + i, 0, flags, data)
        most = max(most, len(w.tracker.syncing) + len(w.tracker.syncing_halves))
    assert most <= MAX_SYNCING + 1
    early = n - MAX_SYNCING - 1   # a window is closed early when the next segment comes
    assert w.tracker.stats["syn_only_flows"] >= early // 2   # the bare SYNs pushed out are forgotten
    got = w.finish()
    limit = [a for _, a in got.anomalies if a.name == "capture.start_window_limit"]
    assert len(limit) == 1 and f": {early} windows closed" in limit[0].detail
    assert len(got.lines) == n // 2 + n % 2   # every SYN-less flow still decoded


def test_idle_connections_cost_nothing_while_another_one_talks():
    # 300 MSNP connections idle (nothing awaits a reply) while one talks for 20 minutes of
    # capture time: no sweep over the idle ones, which are only looked at when they come due.
    w = Wire()
    ticks = []
    real_tick = w.analysis.tick
    w.analysis.tick = lambda conn, ts: ticks.append(conn) or real_tick(conn, ts)
    for i in range(300):
        src = ("127.0.2.%d" % (1 + i % 250), 30000 + i)
        w.tracker.segment(100.0, key(src, SERVER), 1, 0, SYN, b"")
        w.tracker.segment(100.0, key(SERVER, src), 9, 2, SYN | ACK, b"")
        w.tracker.segment(100.0, key(src, SERVER), 2, 10, PSH_ACK, b"VER 1 MSNP8 CVR0\r\n")
        w.tracker.segment(100.0, key(SERVER, src), 10, 20, PSH_ACK, b"VER 1 MSNP8 CVR0\r\n")
    w.handshake()
    for i in range(1200):
        w.ts = 101.0 + i
        w.send("c", b"PNG\r\n")
        w.send("s", b"QNG 50\r\n")
    # Their VER's reply left nothing to wait for: their pairing is never ticked, where a sweep
    # over all open flows every few seconds looked at each about 240 times here. The talker's
    # QNGs each leave nothing waiting too: at most once a minute (a PNG's deadline) if at all.
    from collections import Counter
    talker = w.tracker.flows[key(CLIENT, SERVER)].conn
    counts = Counter(map(id, ticks))
    assert counts.pop(id(talker), 0) <= 1200 / 60 + 1
    assert len(counts) == 0
    assert len(w.tracker.open) == 301
    w.finish()


def test_not_msnp_flows_count_in_max_flows_and_are_released():
    w = Wire(max_flows=64)
    for i in range(1000):   # HTTP flows that never end (no FIN): ignored, but not forever
        src = ("127.0.3.%d" % (1 + i % 250), 40000 + i)
        dst = ("127.0.0.9", 80)
        w.tracker.segment(100.0 + i * 0.001, key(src, dst), 1, 0, SYN, b"")
        w.tracker.segment(100.0 + i * 0.001, key(dst, src), 5, 2, SYN | ACK, b"")
        w.tracker.segment(100.0 + i * 0.001, key(src, dst), 2, 6, PSH_ACK, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert len(w.tracker.open) + len(w.tracker.ignored) <= 64
    assert len(w.tracker.flows) <= 2 * 64
    # The idle timeout releases the rest.
    w.tracker.segment(100.0 + 4000, key(CLIENT, SERVER), 1, 0, SYN, b"")
    assert not w.tracker.ignored
    got = w.finish()
    assert "capture.flow_limit" in got.names()


def test_acknowledged_bytes_are_not_kept():
    w = Wire()
    w.handshake()
    w.send("c", b"VER 1 MSNP8 CVR0\r\n")
    half = w.tracker.flows[key(CLIENT, SERVER)].halves[0]
    assert bytes(half.sent) == b"VER 1 MSNP8 CVR0\r\n"   # not acknowledged yet
    w.send("s", b"VER 1 MSNP8 CVR0\r\n", ack=w.seq["c"] - 5)
    assert bytes(half.sent) == b"VR0\r\n"                # the last five bytes still are not
    w.send("s", flags=ACK, ack=w.seq["c"])
    assert half.sent is None                              # everything acknowledged: no buffer at all
    w.send("c", b"x" * 40000)
    assert len(half.sent) <= 16 * 1024                    # a small cap
    w.finish()


def test_a_stream_ends_at_its_tcp_close_not_its_last_command():
    # msnp.py logs out by closing the socket: the last command at t, the FINs 3.3 s later.
    w = Wire()
    w.handshake()
    w.send("c", b"VER 1 MSNP8 CVR0\r\n")
    w.send("s", b"VER 1 MSNP8 CVR0\r\n")
    last_command = w.ts
    w.ts += 3.3
    w.send("c", flags=FIN | ACK)
    w.send("s", flags=FIN | ACK)
    fin = w.ts
    [conn] = w.analysis.connections.values()
    assert conn.closed and conn.last_ts == fin and fin - last_command > 3.3
    # one still open when the capture ends ends at its own last segment, not at the capture's end
    w = Wire()
    w.handshake()
    w.send("c", b"VER 1 MSNP8 CVR0\r\n")
    w.send("s", flags=ACK)
    own_last = w.ts
    w.tracker.finish(w.ts + 500)
    [conn] = w.analysis.connections.values()
    assert conn.closed and conn.last_ts == own_last


def test_a_hole_waits_while_its_bytes_can_still_come_keepalives_a_minute_apart():
    # A PNG a minute, both sides; one client segment is written to the file late (after the
    # next two keep-alives, 130 s of capture time later): its bytes are in the capture, so
    # no tcp.gap, and every command comes out in order.
    w = Wire()
    w.handshake()
    late = None
    for minute in range(5):
        w.ts = 1000.0 + 60 * minute
        if minute == 1:
            late = (w.ts, w.seq["c"])
            w.seq["c"] += 5            # the PNG of minute 1 reaches the file later
        else:
            w.send("c", b"PNG\r\n")
        w.send("s", b"QNG 50\r\n", ack=0)
    ts, seq = late
    w.ts = 1000.0 + 60 * 4 + 10
    w.send("c", b"PNG\r\n", seq=seq)
    assert w.ts - ts > 130
    w.send("c", flags=FIN | ACK)
    w.send("s", flags=FIN | ACK)
    got = w.finish()
    assert "tcp.gap" not in got.names()
    assert lines(got) == [b"PNG\r\n"] * 5
    # the same hole with the bytes never captured is still a gap at the connection's end
    w = Wire()
    w.handshake()
    w.send("c", b"PNG\r\n")
    w.seq["c"] += 5
    w.ts += 200
    w.send("c", b"PNG\r\n")
    w.send("c", flags=FIN | ACK)
    w.send("s", flags=FIN | ACK)
    assert [a.detail for _, a in w.finish().anomalies if a.name == "tcp.gap"] == ["5 bytes missing at offset 5"]


def test_a_quiet_flow_releases_its_unacknowledged_bytes():
    # A capture without the ACKs (data segments only): the bytes are never acknowledged,
    # but once the flow has been quiet for UNACKED_QUIET seconds they are not kept; a deadline
    # frees them while the flow stays silent, however few (a keep-alive's reply is what nearly
    # every idle flow of a busy capture holds), as the lane does.
    from analyzer.capture.tcp import UNACKED_QUIET
    for pings in (b"PNG\r\n" * 60, b"PNG\r\n"):
        w = Wire()
        w.handshake()
        w.send("c", b"VER 1 MSNP8 CVR0\r\n" + pings)
        w.send("s", b"VER 1 MSNP8 CVR0\r\n" + pings.replace(b"PNG", b"QNG"))   # acknowledges nothing (ack=0)
        flow = w.tracker.flows[key(CLIENT, SERVER)]
        assert flow.halves[0].sent is not None and flow.halves[1].sent is not None
        # Another flow's segment moves capture time on (the idle flow sends nothing itself).
        other = ("127.0.0.7", 40001)
        w.tracker.segment(w.ts + UNACKED_QUIET / 2, key(other, SERVER), 1, 0, SYN, b"")
        assert flow.halves[0].sent is not None          # not quiet long enough yet
        w.tracker.segment(w.ts + UNACKED_QUIET + 1, key(other, SERVER), 1, 0, SYN, b"")
        assert flow.halves[0].sent is None and flow.halves[1].sent is None
        assert flow.state == "open"                     # released, not closed
        w.ts += UNACKED_QUIET + 2
        w.send("c", b"PNG\r\n")                         # and it carries on
        w.send("s", b"QNG 50\r\n")
        got = w.finish()
        assert lines(got) == [b"VER 1 MSNP8 CVR0\r\n"] + [b"PNG\r\n"] * (len(pings) // 5 + 1)


def test_the_segment_after_a_quiet_spell_finds_no_unacknowledged_bytes():
    # `released`: the flow's next segment after more than UNACKED_QUIET seconds (the tracker's
    # clock, here moved on by another flow) finds its unacknowledged bytes gone in both
    # directions, so a retransmission with other bytes is not compared; at exactly
    # UNACKED_QUIET they are still kept and the mismatch is reported.
    from analyzer.capture.tcp import UNACKED_QUIET, released
    assert not released(110.0, 100.0, 10.0) and released(110.5, 100.0, 10.0) and not released(90.0, 100.0, 10.0)
    for silence, kept in ((UNACKED_QUIET, True), (UNACKED_QUIET + 0.5, False)):
        w = Wire()
        w.handshake()
        w.ts = 1000.0
        png = w.send("c", b"PNG\r\n")                  # never acknowledged
        w.send("s", b"QNG 50\r\n", ack=png)
        last = w.ts
        assert w.tracker.flows[key(CLIENT, SERVER)].halves[0].sent == b"PNG\r\n"
        w.tracker.segment(last + silence, key(("127.0.0.7", 40001), SERVER), 1, 0, SYN, b"")
        w.ts = last + silence - 0.01                    # the next segment (send adds 0.01)
        w.send("s", b"QNG 49\r\n", ack=png)
        flow = w.tracker.flows[key(CLIENT, SERVER)]
        assert (flow.halves[0].sent is not None) == kept
        assert bytes(flow.halves[1].sent) == (b"QNG 50\r\nQNG 49\r\n" if kept else b"QNG 49\r\n")
        w.send("c", b"PXG\r\n", seq=png)
        names = w.finish().names()
        assert ("tcp.overlap_mismatch" in names) == kept and "tcp.retransmission" in names

# -- the deadline queue (a calendar: a heap per second) ------------------------------------


def _queued(tracker, dues):
    """Stand-in flows (ignored ones: a deadline past their idle timeout forgets them), one
    entry each at `dues[i]`, set in that order."""
    from analyzer.capture.tcp import IgnoredFlow
    flows = []
    for i, due in enumerate(dues):
        flow = IgnoredFlow((b"k%d" % i,), -1e300)
        tracker._schedule(flow, due)
        flows.append(flow)
    return flows


def test_deadlines_come_due_in_time_then_set_order_wherever_they_are_kept():
    # Deadlines set as time moves on, some out of order, many equal (within a second and across
    # the heap of times that are not a number of seconds), negative ones, and cancellations
    # (enough to compact the queue): `_due` takes them in (time, order set) order, exactly as
    # one heap of them all would, the cancelled ones never.
    import random
    rng = random.Random(17)
    tracker = TcpTracker(Analysis([]), idle_timeout=0.0)
    dues, now = [], -20.0
    for _ in range(3000):
        now += rng.choice((0.0, 0.25, 0.5, 1.0))
        dues.append(now + rng.choice((10.0, 10.5, 60.0, 1800.0)) if rng.random() < 0.8
                    else rng.choice((2e15, -float("inf"), now + rng.choice((0.0, 3.0, 600.0)) - rng.choice((0.0, 5.0, 50.0)))))
    flows = _queued(tracker, dues)
    assert tracker.deadlines and len(tracker._buckets) > 100   # both kinds of heap hold entries here
    cancelled = set(rng.sample(range(len(flows)), 1700))
    for i in sorted(cancelled):
        tracker._cancel(flows[i])
    came = []
    tracker._forget_ignored = came.append
    for ts in (-5.0, 5.0, 700.0, 1200.0, 2500.0, 4000.0, 9999.0, float("inf")):
        tracker._due(ts)
        assert tracker._next_due >= ts
    want = sorted((d, i) for i, d in enumerate(dues) if i not in cancelled)
    assert [id(f) for f in came] == [id(flows[i]) for _, i in want]
    assert tracker._head() == float("inf") and tracker._buckets == {} and tracker.deadlines == []


def test_a_deadline_is_kept_in_the_small_heap_of_its_second():
    # Twenty thousand connections' idle timeouts, quiet releases and reply timeouts spread over
    # half an hour: each comes out of a heap of the few due in its second, not of one heap of
    # them all (a heap of tens of thousands of scattered entries on a busy capture).
    tracker = TcpTracker(Analysis([]), idle_timeout=0.0)
    dues = [t * 0.1 + delay for t in range(20000) for delay in (10.0, 45.0, 1800.0)]
    _queued(tracker, dues)
    assert tracker.deadlines == [] and max(map(len, tracker._buckets.values())) <= 30
    assert sorted(tracker._seconds) == sorted(tracker._buckets) == sorted({int(d) for d in dues})
    came = []
    tracker._forget_ignored = came.append
    tracker._due(1000.0)
    assert len(came) == sum(d < 1000.0 for d in dues)
    assert min(tracker._seconds) == 1000 and len(tracker._seconds) == len(tracker._buckets)


def test_the_deadline_head_skips_cancelled_entries_in_every_heap():
    tracker = TcpTracker(Analysis([]))
    early, never, middle, late = _queued(tracker, [5.0, 2e15, 5.5, 50.0])
    assert tracker._next_due == 5.0 and tracker._head() == 5.0
    tracker._cancel(early)
    assert tracker._head() == 5.5 and tracker._next_due == 5.5
    tracker._cancel(middle)
    assert tracker._head() == 50.0 and 5 not in tracker._buckets
    tracker._cancel(late)
    assert tracker._head() == 2e15 and tracker._buckets == {} and tracker._seconds == []
    tracker._cancel(never)
    assert tracker._head() == float("inf") and tracker.deadlines == []


def test_the_end_of_the_capture_closes_open_flows_without_tombstones():
    # Tombstones keep late segments of a closed flow from starting a new one; at the end of the
    # capture there are none to come, and a busy capture closes thousands of flows there: the
    # flows closed by `finish` write none (those closed before it keep theirs until then).
    w = Wire()
    for i in range(5):
        src = ("127.0.5.%d" % (1 + i), 31000 + i)
        w.tracker.segment(100.0 + i, key(src, SERVER), 1000, 0, PSH_ACK, b"VER 1 MSNP8 CVR0\r\n")
        w.tracker.segment(100.0 + i, key(SERVER, src), 5000, 1018, PSH_ACK, b"VER 1 MSNP8\r\n")
    w.tracker.segment(106.0, key(("127.0.5.1", 31000), SERVER), 1018, 5013, RST, b"")
    assert len(w.tracker.tombstones) == 2 and len(w.tracker.open) == 4
    seen = []
    close = w.analysis.close

    def watched(conn, ts=None):
        seen.append(len(w.tracker.tombstones))
        return close(conn, ts)
    w.analysis.close = watched
    w.tracker.finish(w.ts)
    assert seen == [2, 2, 2, 2]   # the four flows still open, each closed with no tombstone added
    assert not w.tracker.open and not w.tracker.tombstones


_dues = st.floats(allow_nan=False)
_seqs = st.integers(0, (1 << 64) - 1)


@given(_dues, _seqs, _dues, _seqs)
def test_a_deadline_entry_orders_as_its_due_and_seq_do(a, s, b, t):
    # The queue keeps (due, seq) as one int (`_entry`): it must sort exactly as the tuple does
    # (equal dues, -0.0 and 0.0 among them, by seq), give its due back, and compare with
    # `_entry(ts, 0)` as its due compares with ts (`_due` stops there).
    from analyzer.capture.tcp import _due_of, _entry
    assert ((a, s) < (b, t)) == (_entry(a, s) < _entry(b, t))
    assert ((a, s) == (b, t)) == (_entry(a, s) == _entry(b, t))
    assert (a >= b) == (_entry(a, s) >= _entry(b, 0))
    assert _due_of(_entry(a, s)) == a


# -- a half's rare state (HalfStream.extra): made when needed, dropped when back at rest ------


def _at_rest(half) -> bool:
    """What `HalfStream.settle` drops: nothing pending, no FIN, no late window, no ACK strike."""
    extra = half.extra
    return (not extra.pending and extra.pending_since is None and not extra.pending_bytes and extra.fin is None
            and not extra.ended and extra.window is None and not extra.ack_strikes)


def _no_idle_extra(tracker) -> None:
    """Every started flow's halves hold an `extra` only while something rare is in it."""
    for flow in tracker.open:
        if flow.window is None:
            for half in flow.halves:
                assert half.extra is None or not _at_rest(half), vars_of(half.extra)


def vars_of(extra) -> dict:
    return {name: getattr(extra, name) for name in type(extra).__slots__}


def test_a_hole_makes_a_half_s_extra_and_filling_it_drops_it():
    w = Wire()
    w.handshake()
    flow = w.tracker.flows[key(CLIENT, SERVER)]
    client = flow.halves[0]
    assert client.isn == 1000 and client.extra is None and flow.halves[1].extra is None   # a SYN needs none
    w.send("c", b"PNG\r\n")
    assert client.extra is None
    base = w.seq["c"]
    w.send("c", b"CAL 3 bob@example.com\r\n", seq=base + 5)    # early: waits in the extra
    assert client.pending == {base + 5 - 1001: b"CAL 3 bob@example.com\r\n"} and client.pending_since is not None
    w.send("c", b"PNG\r\n", seq=base)                           # fills the hole
    assert client.extra is None and client.pending is None and client.pending_bytes == 0
    w.seq["c"] = base + 5 + len(b"CAL 3 bob@example.com\r\n")
    w.send("c", b"PNG\r\n")                                     # in order again: the common case
    assert client.extra is None
    got = w.finish()
    assert lines(got) == [b"PNG\r\n", b"PNG\r\n", b"CAL 3 bob@example.com\r\n", b"PNG\r\n"]
    assert "tcp.gap" not in got.names()


def test_ack_strikes_left_over_keep_the_extra_and_count_on_after_the_hole_filled():
    # One ACK past a hole, then the hole fills: the strike stays (as before the state was made
    # lazy), so a later hole is given up after two more ACKs past it, not three.
    w = Wire()
    w.handshake()
    client = w.tracker.flows[key(CLIENT, SERVER)].halves[0]
    w.send("c", b"PNG\r\n")
    hole = w.seq["c"]
    w.send("c", b"PNG\r\n", seq=hole + 5)
    w.send("s", b"QNG 50\r\n", ack=hole + 10)                   # one strike
    assert client.ack_strikes == 1
    w.send("c", b"PNG\r\n", seq=hole)                           # the hole fills
    assert client.pending == {} and client.ack_strikes == 1 and client.extra is not None
    w.seq["c"] = hole + 10
    w.send("c", b"PNG\r\n")
    lost = w.seq["c"]
    w.send("c", b"PNG\r\n", seq=lost + 7)                       # 7 bytes the capture never gets
    for n in range(2):
        w.send("s", b"QNG 50\r\n", ack=lost + 12 + n)
    [gap] = [a for _, a in w.got.anomalies if a.name == "tcp.gap"]
    assert gap.detail.startswith("7 bytes missing at offset 20")
    assert client.extra is None                                 # strikes spent, nothing pending
    w.send("c", b"PNG\r\n", seq=lost + 12)
    got = w.finish()
    assert lines(got) == [b"PNG\r\n"] * 6


def test_a_plain_half_counts_ack_strikes_from_none():
    # The hole fills with no strike: the extra goes, and a later hole needs its three ACKs.
    w = Wire()
    w.handshake()
    client = w.tracker.flows[key(CLIENT, SERVER)].halves[0]
    hole = w.seq["c"]
    w.send("c", b"PNG\r\n", seq=hole + 5)
    w.send("c", b"PNG\r\n", seq=hole)
    assert client.extra is None
    w.seq["c"] = hole + 10
    lost = w.seq["c"]
    w.send("c", b"PNG\r\n", seq=lost + 3)
    for n in range(3):
        assert "tcp.gap" not in w.got.names()
        w.send("s", b"QNG 50\r\n", ack=lost + 8 + n)
    [gap] = [a for _, a in w.got.anomalies if a.name == "tcp.gap"]
    assert gap.detail.startswith("3 bytes missing at offset 10") and client.extra is None
    w.finish()


def test_a_fin_keeps_the_extra_and_both_ends_close_the_connection():
    w = Wire()
    w.handshake()
    flow = w.tracker.flows[key(CLIENT, SERVER)]
    w.send("c", b"OUT\r\n")
    w.send("c", flags=FIN | ACK)
    client, server = flow.halves
    assert client.fin == 5 and client.ended and server.extra is None
    w.send("s", flags=FIN | ACK)
    assert flow.state == "closed" and server.ended
    got = w.finish()
    assert lines(got) == [b"OUT\r\n"]


def test_a_late_half_s_start_window_lives_in_its_extra():
    # The server's first bytes come after the flow's start window (a capture that starts
    # mid-session): they wait in a window of their own, then the extra goes.
    w = Wire()
    flow_key = key(CLIENT, SERVER)
    w.send("c", b"PNG\r\n")
    w.ts += START_WINDOW + 1
    w.send("c", b"PNG\r\n")
    flow = w.tracker.flows[flow_key]
    assert flow.window is None and all(h.extra is None for h in flow.halves)   # `seen` dropped with the window
    w.send("s", b"QNG 50\r\n")
    server = flow.halves[1]
    assert server.nxt is None and server.window is not None and len(server.window) == 1
    w.ts += START_WINDOW + 1
    w.send("c", b"PNG\r\n")                                     # its window closes
    assert server.extra is None and server.nxt is not None
    w.send("s", b"QNG 49\r\n")
    got = w.finish()
    assert lines(got, "s2c") == [b"QNG 50\r\n", b"QNG 49\r\n"]


@given(st.data())
def test_random_holes_reorders_and_acks_deliver_each_byte_once_and_leave_no_idle_extra(data):
    # A client stream cut into segments, sent in a locally shuffled order, some twice, some
    # never, with the server's ACKs (some past a hole) and perhaps a SYN and a FIN: whatever
    # is delivered is the stream's own bytes at their own offsets, each once, the holes given
    # up as gaps of their size, and after each segment no started half keeps an extra at rest.
    stream = b"".join(b"CAL %d u%d@example.com\r\n" % (i, i) for i in range(1, 9))
    cuts = sorted(set(data.draw(st.lists(st.integers(1, len(stream) - 1), max_size=10))))
    pieces = [(a, b) for a, b in zip([0, *cuts], [*cuts, len(stream)])]
    order = list(range(len(pieces)))
    for i in range(len(order) - 1):
        if data.draw(st.booleans()):
            order[i], order[i + 1] = order[i + 1], order[i]
    syn = data.draw(st.booleans())
    w = Wire()
    fed = []   # the client's bytes delivered, and the sizes of its gaps, in order
    feed, gap = w.analysis.feed, w.analysis.gap

    def record_feed(conn, direction, chunk, ts):
        if direction == "c2s":
            fed.append(bytes(chunk))
        return feed(conn, direction, chunk, ts)

    def record_gap(conn, direction, size, ts):
        if direction == "c2s":
            fed.append(size)
        return gap(conn, direction, size, ts)

    w.analysis.feed, w.analysis.gap = record_feed, record_gap
    if syn:
        w.handshake()
    base = w.seq["c"]
    sent = []
    for i in order:
        a, b = pieces[i]
        for _ in range(data.draw(st.sampled_from([0, 1, 1, 1, 2]))):   # lost, sent, sent twice
            w.send("c", stream[a:b], seq=base + a)
            sent.append(a)
            _no_idle_extra(w.tracker)
        if data.draw(st.booleans()):
            w.send("s", b"QNG 50\r\n", ack=(base + data.draw(st.integers(0, len(stream)))) & 0xFFFFFFFF)
            _no_idle_extra(w.tracker)
    if data.draw(st.booleans()):
        w.send("c", flags=FIN | ACK, seq=base + len(stream))
        _no_idle_extra(w.tracker)
    w.finish()
    # Without a SYN the stream starts at the lowest sequence number of its start window (which
    # here holds every segment: the server's direction never has SYNC_WINDOW of its own).
    offset = 0 if syn or not sent else min(sent)
    for item in fed:
        if type(item) is int:
            offset += item
        else:
            assert item == stream[offset:offset + len(item)]
            offset += len(item)
    assert offset <= len(stream)


def test_a_flow_keeps_its_start_state_only_until_it_is_decided():
    # The start window, early deliveries and the SYN's hint of the client live in a FlowStart,
    # dropped once the detector decided: the connection keeps the side the SYN named.
    from analyzer.capture.tcp import CLIENT_FIRST
    w = Wire(client=("127.0.0.1", 1863), server=("127.0.0.2", 40000))   # the client on the port
    w.send("c", flags=SYN)
    flow = w.tracker.flows[key(w.client, w.server)]
    assert flow.start is not None and flow.window == [] and flow.client_hint == 0
    w.send("s", flags=SYN | ACK)
    w.send("c", flags=ACK)
    assert flow.window is None and flow.early == []            # started, not decided yet
    w.send("c", b"VER 1 MSNP8 CVR0\r\n")
    w.send("s", b"VER 1 MSNP8 CVR0\r\n")
    assert flow.conn is not None and flow.start is None and flow.early is None and flow.early_bytes == 0
    assert flow.dirs is CLIENT_FIRST
    got = w.finish()
    assert lines(got) == [b"VER 1 MSNP8 CVR0\r\n"]
