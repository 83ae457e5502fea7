"""The compiled core's TCP fast lane (core/src/lane.rs, `TcpTracker.drive` in capture/tcp.py).

Each crafted capture here makes flows enter the lane, leave it (a retransmission, a
segment out of order, a bare ACK, a deadline, a FIN) and come back, and is analysed on
both implementations: the JSON Lines must be byte for byte the same, hold the records
written out below, and the lane must have taken segments (so a lane that stopped taking
any would fail here rather than pass on the Python path).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import analyzer.core as core
import resegment as R
from analyzer.capture import tcp
from analyzer.cli.main import main

CLIENT, SERVER = ("127.0.0.1", 40000), ("127.0.0.2", 1863)


pytestmark = pytest.mark.usefixtures("compiled_core")


class Session:
    """A TCP connection written segment by segment: sequence numbers and ACKs follow the bytes
    unless a step says otherwise."""

    def __init__(self, client=CLIENT, server=SERVER, isn=(1000, 5000), ts=1_000_000.0) -> None:
        self.client, self.server = client, server
        self.nxt = {"c2s": isn[0], "s2c": isn[1]}
        self.segs: list[R.Seg] = []
        self.ts = ts

    def _seg(self, direction, seq, ack, flags, data, ts):
        src, dst = (self.client, self.server) if direction == "c2s" else (self.server, self.client)
        if ts is None:
            self.ts += 0.01
            ts = self.ts
        self.segs.append(R.Seg(ts, src[0], dst[0], src[1], dst[1], seq & tcp.MASK, ack & tcp.MASK, flags, data))
        return seq

    def handshake(self):
        c, s = self.nxt["c2s"], self.nxt["s2c"]
        self._seg("c2s", c, 0, "S", b"", None)
        self._seg("s2c", s, c + 1, "SA", b"", None)
        self._seg("c2s", c + 1, s + 1, "A", b"", None)
        self.nxt = {"c2s": c + 1, "s2c": s + 1}
        return self

    def send(self, direction, data: bytes, *, ack=None, ts=None, flags="PA"):
        """`data` in order; ACKs everything the peer sent unless `ack` is given. Returns its seq."""
        other = "s2c" if direction == "c2s" else "c2s"
        seq = self.nxt[direction]
        self._seg(direction, seq, self.nxt[other] if ack is None else ack, flags, data, ts)
        self.nxt[direction] = (seq + len(data)) & tcp.MASK
        return seq

    def again(self, direction, seq, data: bytes, *, ack=None, ts=None):
        """A segment at `seq` that does not move the stream on (a retransmission, or one early)."""
        other = "s2c" if direction == "c2s" else "c2s"
        self._seg(direction, seq, self.nxt[other] if ack is None else ack, "PA", data, ts)

    def fin(self, direction):
        other = "s2c" if direction == "c2s" else "c2s"
        self._seg(direction, self.nxt[direction], self.nxt[other], "FA", b"", None)
        self.nxt[direction] += 1


def write(tmp_path: Path, *sessions: Session) -> Path:
    segs = sorted((s for session in sessions for s in session.segs), key=lambda s: s.ts)
    return R.write(segs, tmp_path / "lane.pcap")


def analyze(path: Path, out: Path, implementation: str, monkeypatch, *extra: str) -> tuple[bytes, int]:
    """The JSON Lines of `analyze` and how many segments the lane took."""
    taken = 0
    fast = tcp.TcpTracker._fast

    def counted(self, *args):
        nonlocal taken
        taken += 1
        return fast(self, *args)
    with monkeypatch.context() as m:
        m.setattr(tcp.TcpTracker, "_fast", counted)
        if implementation == "python":
            m.setattr(core, "CORE", None)
        main(["analyze", str(path), "--json", str(out), "--no-redact", "--no-plugins", "--quiet", *extra])
    return out.read_bytes(), taken


def both(tmp_path, monkeypatch, path, *extra) -> tuple[list[dict], int]:
    """The records of `path`, the same on both implementations, and the segments the lane took."""
    want, none = analyze(path, tmp_path / "python.jsonl", "python", monkeypatch, *extra)
    got, taken = analyze(path, tmp_path / "rust.jsonl", "rust", monkeypatch, *extra)
    assert none == 0
    assert got == want
    return [json.loads(line) for line in want.splitlines()], taken


def summary(records: list[dict]) -> list[tuple]:
    """Each record in short: commands by code and direction, anomalies by name, streams."""
    out = []
    for r in records:
        if r["kind"] == "command":
            out.append((r["stream"], r["dir"], r["cmd"]))
        elif r["kind"] == "anomaly":
            out.append((r.get("stream"), r["name"], r.get("offset")))
        elif r["kind"] == "stream":
            out.append((r["stream"], "stream"))
        elif r["kind"] == "transaction":
            out.append((r["stream"], "transaction", r["cmd"], r["outcome"]))
    return out


def login(s: Session) -> Session:
    s.handshake()
    s.send("c2s", b"VER 1 MSNP8 CVR0\r\n")
    s.send("s2c", b"VER 1 MSNP8\r\n")
    return s


def test_retransmission_mid_stream_leaves_the_lane_and_comes_back(tmp_path, monkeypatch):
    s = login(Session())
    first = s.send("c2s", b"PNG\r\n")
    s.send("s2c", b"QNG 50\r\n", ack=first)   # does not acknowledge the PNG: its bytes are kept
    s.again("c2s", first, b"PNG\r\n")          # seen again, same bytes
    s.send("c2s", b"PNG\r\n")
    s.send("s2c", b"QNG 49\r\n")
    s.send("c2s", b"PNG\r\n")
    records, taken = both(tmp_path, monkeypatch, write(tmp_path, s))
    assert summary(records) == [
        ("1", "c2s", "VER"), ("1", "s2c", "VER"), ("1", "transaction", "VER", "answered"),
        ("1", "c2s", "PNG"), ("1", "s2c", "QNG"), ("1", "transaction", "PNG", "answered"),
        ("1", "tcp.retransmission", 18),
        ("1", "c2s", "PNG"), ("1", "s2c", "QNG"), ("1", "transaction", "PNG", "answered"),
        ("1", "c2s", "PNG"),
        ("1", "msnp.reply.unanswered", 28), ("1", "transaction", "PNG", "unanswered"), ("1", "stream"),
    ]
    assert taken >= 4


def test_unacknowledged_bytes_kept_by_the_lane_check_a_retransmission(tmp_path, monkeypatch):
    """Different bytes at an offset the peer has not acknowledged: tcp.overlap_mismatch, checked
    against the bytes the lane kept; once acknowledged (on a data segment the lane takes, or a
    bare ACK it does not) they are not kept, and a second copy is only a retransmission."""
    s = login(Session())
    a = s.send("c2s", b"PNG\r\n")
    s.send("s2c", b"QNG 50\r\n", ack=a)            # the lane: acknowledges nothing new
    s.again("c2s", a, b"PXG\r\n")                  # differs from the kept copy
    b = s.send("c2s", b"PNG\r\n")
    s.send("s2c", b"QNG 49\r\n")                   # the lane: acknowledges both PNGs, trims them
    s.again("c2s", b, b"PXG\r\n")                  # differs, but nothing is kept to compare
    c = s.send("c2s", b"PNG\r\n")
    s._seg("s2c", s.nxt["s2c"], s.nxt["c2s"] - 2, "A", b"", None)   # a bare ACK: two bytes still unacknowledged
    s.again("c2s", c, b"PXG\r\n")                  # the two kept bytes are "\r\n": the same
    s.again("c2s", c + 3, b"\n\n")                 # the last of them differs
    s.send("s2c", b"QNG 48\r\n")
    records, taken = both(tmp_path, monkeypatch, write(tmp_path, s))
    anomalies = [(r["name"], r["offset"]) for r in records if r["kind"] == "anomaly"]
    assert anomalies == [
        ("tcp.overlap_mismatch", 18), ("tcp.retransmission", 18),
        ("tcp.retransmission", 23),
        ("tcp.retransmission", 28), ("tcp.overlap_mismatch", 31), ("tcp.retransmission", 31),
    ]
    assert [r["cmd"] for r in records if r["kind"] == "command"] == ["VER", "VER", "PNG", "QNG", "PNG", "QNG",
                                                                     "PNG", "QNG"]
    assert taken >= 4


def test_out_of_order_then_in_order_and_the_lane_again(tmp_path, monkeypatch):
    s = login(Session())
    seq = s.nxt["c2s"]
    s.again("c2s", seq + 5, b"PNG\r\n")   # the second PNG first: it waits
    s.again("c2s", seq, b"PNG\r\n")       # the first fills the hole: both delivered
    s.nxt["c2s"] = seq + 10
    s.send("s2c", b"QNG 50\r\n")
    for _ in range(3):
        s.send("c2s", b"PNG\r\n")
        s.send("s2c", b"QNG 50\r\n")
    records, taken = both(tmp_path, monkeypatch, write(tmp_path, s))
    commands = [(r["dir"], r["cmd"], r["offset"]) for r in records if r["kind"] == "command"]
    assert commands == [("c2s", "VER", 0), ("s2c", "VER", 0), ("c2s", "PNG", 18), ("c2s", "PNG", 23),
                        ("s2c", "QNG", 13), ("c2s", "PNG", 28), ("s2c", "QNG", 21), ("c2s", "PNG", 33),
                        ("s2c", "QNG", 29), ("c2s", "PNG", 38), ("s2c", "QNG", 37)]
    assert [(r["name"], r["offset"]) for r in records if r["kind"] == "anomaly"] == [
        ("msnp.reply.unanswered", 38)]   # the last PNG, at the end of the capture
    assert taken >= 6   # the six segments after the hole closed


def test_sequence_numbers_wrap_inside_the_lane(tmp_path, monkeypatch):
    s = login(Session(isn=(tcp.MASK - 30, tcp.MASK - 3)))
    for i in range(6):
        s.send("c2s", b"PNG\r\n")
        s.send("s2c", b"QNG 50\r\n")
    last = (s.nxt["c2s"] - 5) & tcp.MASK            # past the wrap
    s.again("c2s", last, b"PNG\r\n")
    records, taken = both(tmp_path, monkeypatch, write(tmp_path, s))
    assert [r["offset"] for r in records if r["kind"] == "command" and r["dir"] == "c2s"] == [
        0, 18, 23, 28, 33, 38, 43]
    assert [r["offset"] for r in records if r["kind"] == "command" and r["dir"] == "s2c"] == [
        0, 13, 21, 29, 37, 45, 53]
    assert [(r["name"], r["offset"]) for r in records if r["kind"] == "anomaly"] == [("tcp.retransmission", 43)]
    assert taken >= 10


def test_timeouts_fire_between_segments_the_lane_takes(tmp_path, monkeypatch):
    """Flow 1 asks and goes quiet; flow 2 talks on in the lane. The reply timeout (a pairing
    deadline) and the idle timeout of flow 1 fire between flow 2's segments, in time order."""
    one = login(Session(ts=1_000_000.0))
    one.send("c2s", b"CHG 2 NLN 0\r\n")   # at 1,000,000.06
    two = login(Session(client=("127.0.0.3", 40001), ts=1_000_000.5))
    for i in range(12):
        two.send("c2s", b"PNG\r\n", ts=1_000_001.0 + 10 * i)
        two.send("s2c", b"QNG 50\r\n", ts=1_000_001.5 + 10 * i)
    records, taken = both(tmp_path, monkeypatch, write(tmp_path, one, two),
                          "--reply-timeout", "25", "--idle-timeout", "70")
    short = summary(records)
    unanswered = short.index(("1", "transaction", "CHG", "unanswered"))
    closed = short.index(("1", "stream"))
    pngs = [i for i, r in enumerate(short) if r == ("2", "c2s", "PNG")]
    assert pngs[2] < unanswered < pngs[3]     # 1,000,000.06 + 25 s falls between the 3rd and 4th PNG
    assert pngs[6] < closed < pngs[7]         # its last segment + 70 s between the 7th and 8th
    assert [r for r in records if r["kind"] == "stream"][0]["end"] == pytest.approx(1_000_000.06)
    assert taken >= 20


def test_a_connection_that_fails_in_the_lane_counts_bytes_only(tmp_path, monkeypatch):
    from analyzer.msnp import pairing
    observe = pairing.TransactionTracker.observe_into

    def broken(self, cmd, out):
        if cmd.cmd == "QRY":
            raise RuntimeError("injected")
        return observe(self, cmd, out)
    monkeypatch.setattr(pairing.TransactionTracker, "observe_into", broken)
    s = login(Session())
    for _ in range(3):
        s.send("c2s", b"PNG\r\n")
        s.send("s2c", b"QNG 50\r\n")
    s.send("c2s", b"QRY 9 msmsgs@msnmsgr.com 32\r\n0123456789abcdef0123456789abcdef")
    for _ in range(3):
        s.send("c2s", b"PNG\r\n")
        s.send("s2c", b"QNG 50\r\n")
    s.fin("c2s")
    s.fin("s2c")
    records, taken = both(tmp_path, monkeypatch, write(tmp_path, s))
    anomalies = [r for r in records if r["kind"] == "anomaly"]
    assert [(a["name"], a["detail"]) for a in anomalies] == [("analyzer.internal_error", "RuntimeError: injected")]
    # The QRY's events are lost with the failure and nothing after it is decoded.
    assert [r["cmd"] for r in records if r["kind"] == "command"] == ["VER", "VER"] + ["PNG", "QNG"] * 3
    assert records.index(anomalies[0]) > max(i for i, r in enumerate(records) if r["kind"] == "command")
    [stream] = [r for r in records if r["kind"] == "stream"]
    assert (stream["bytes"]["c2s"], stream["bytes"]["s2c"]) == (18 + 6 * 5 + 61, 13 + 6 * 8)
    assert taken >= 6


def test_a_flow_leaves_the_lane_at_its_fin_and_a_new_one_on_the_same_ports_enters_it(tmp_path, monkeypatch):
    s = login(Session())
    s.send("c2s", b"PNG\r\n")
    s.send("s2c", b"QNG 50\r\n")
    s.send("c2s", b"OUT\r\n")
    s.fin("c2s")
    s.fin("s2c")
    again = login(Session(isn=(9000, 7000), ts=s.ts + 200))
    again.send("c2s", b"PNG\r\n")
    again.send("s2c", b"QNG 50\r\n")
    records, taken = both(tmp_path, monkeypatch, write(tmp_path, s, again))
    ver = [("c2s", "VER"), ("s2c", "VER"), ("transaction", "VER", "answered")]
    png = [("c2s", "PNG"), ("s2c", "QNG"), ("transaction", "PNG", "answered")]
    assert [r[1:] for r in summary(records) if r[0] == "1"] == [
        *ver, *png, ("c2s", "OUT"), ("transaction", "OUT", "no_reply_expected"), ("stream",)]
    assert [r[1:] for r in summary(records) if r[0] == "2"] == [*ver, *png, ("stream",)]
    assert [r["bytes"] for r in records if r["kind"] == "stream"] == [{"c2s": 28, "s2c": 21}, {"c2s": 23, "s2c": 21}]
    assert taken >= 4


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.data())
def test_random_sessions_are_the_same_on_both_implementations(tmp_path_factory, monkeypatch, data):
    """Sessions with retransmissions (same or other bytes), segments swapped, bare ACKs of any
    value, bytes left unacknowledged (few or many), pauses past the timeouts and the quiet
    release, and sequence numbers near the wrap, interleaved on two flows, each now and then
    with only one side in the capture."""
    draw = data.draw
    sessions = []
    for n in range(2):
        isn = (draw(st.sampled_from([1000, tcp.MASK - 20, tcp.MASK - 2])), draw(st.sampled_from([5000, tcp.MASK - 7])))
        s = login(Session(client=("127.0.0.1", 40000 + n), isn=isn, ts=1_000_000.0 + n * 0.005))
        for _ in range(draw(st.integers(1, 12))):
            step = draw(st.sampled_from(["pair", "pair", "pair", "again", "other", "swap", "ack", "pause", "big"]))
            s.ts += 0.02
            if step == "big":   # hundreds of bytes the server leaves unacknowledged
                start = s.send("c2s", b"PNG\r\n" * draw(st.sampled_from([20, 60])))
                s.send("s2c", b"QNG 50\r\n", ack=start)
            elif step == "pair":
                s.send("c2s", b"PNG\r\n")
                s.send("s2c", b"QNG 50\r\n", ack=draw(st.sampled_from([None, s.nxt["c2s"] - 3])))
            elif step in ("again", "other"):
                back = draw(st.integers(1, 8))
                seq = (s.nxt["c2s"] - back) & tcp.MASK
                s.again("c2s", seq, (b"PNG\r\n" if step == "again" else b"PXG\r\n")[:back + 2])
            elif step == "swap":
                seq = s.nxt["c2s"]
                s.again("c2s", (seq + 5) & tcp.MASK, b"PNG\r\n")
                s.again("c2s", seq, b"PNG\r\n")
                s.nxt["c2s"] = (seq + 10) & tcp.MASK
            elif step == "ack":
                s._seg("s2c", s.nxt["s2c"], s.nxt["c2s"] - draw(st.integers(0, 12)), "A", b"", None)
            else:
                s.ts += draw(st.sampled_from([5.0, 9.97, 11.0, 30.0, 100.0]))
        if draw(st.booleans()):
            s.fin("c2s")
        # One side only in the capture now and then (a one-sided connection goes in the lane with
        # its other direction not started).
        side = draw(st.sampled_from(["both", "both", "both", "c2s", "s2c"]))
        if side != "both":
            s.segs = [seg for seg in s.segs if (seg.sport == s.client[1]) == (side == "c2s")]
        sessions.append(s)
    tmp_path = tmp_path_factory.mktemp("lane")
    extra = draw(st.sampled_from([(), ("--reply-timeout", "20", "--idle-timeout", "60"), ("--reorder-timeout", "3")]))
    records, _ = both(tmp_path, monkeypatch, write(tmp_path, *sessions), *extra)
    assert any(r["kind"] == "command" for r in records)


def test_pcapng_and_frames_left_to_scapy_between_lane_segments(tmp_path, monkeypatch):
    """pcapng goes through the lane too; a frame of a link type the core does not decode (PPP
    on a second interface, dissected by scapy in its place) reaches the tracker in file order."""
    import struct

    from scapy.layers.l2 import Ether

    def block(kind, body):
        body += b"\0" * (-len(body) % 4)
        return struct.pack("<II", kind, len(body) + 12) + body + struct.pack("<I", len(body) + 12)
    s = login(Session())
    for _ in range(4):
        s.send("c2s", b"PNG\r\n")
        s.send("s2c", b"QNG 50\r\n")
    out = block(0x0A0D0D0A, struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1))
    out += block(1, struct.pack("<HHI", 1, 0, 0)) + block(1, struct.pack("<HHI", 9, 0, 0))
    for i, seg in enumerate(s.segs):
        ip = bytes(R._ip_tcp(seg, False))
        ppp = i in (7, 10)   # the first PNG's QNG and the third PNG
        ether = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02", type=0x0800)
        frame = b"\xff\x03\x00\x21" + ip if ppp else bytes(ether / ip)
        micros = round(seg.ts * 1e6)
        out += block(6, struct.pack("<5I", 1 if ppp else 0, micros >> 32, micros & 0xFFFFFFFF, len(frame),
                                    len(frame)) + frame)
    path = tmp_path / "mixed.pcapng"
    path.write_bytes(out)
    records, taken = both(tmp_path, monkeypatch, path)
    assert [r["cmd"] for r in records if r["kind"] == "command"] == ["VER", "VER"] + ["PNG", "QNG"] * 4
    assert [r["name"] for r in records if r["kind"] == "anomaly"] == ["capture.fallback_dissection"]
    assert taken >= 4


def test_a_flow_without_syn_leaves_its_halves_to_the_lane_and_gets_them_back(tmp_path, monkeypatch):
    """A flow first seen mid-session (no SYN, no ACK strikes) holds no HalfStreams while it is in
    the lane (the lane holds their state); a retransmission takes it out (they are made again,
    with the lane's sequence state) and it comes back; both implementations give the same records."""
    s = Session()
    s.send("c2s", b"VER 1 MSNP8 CVR0\r\n")
    s.send("s2c", b"VER 1 MSNP8\r\n")
    s.ts += 1.0                                 # past the start window
    s.send("c2s", b"PNG\r\n")
    s.send("s2c", b"QNG 50\r\n")
    first = s.send("c2s", b"PNG\r\n")
    s.send("s2c", b"QNG 49\r\n", ack=first)
    s.again("c2s", first, b"PNG\r\n")           # seen again: the flow leaves the lane
    s.send("c2s", b"PNG\r\n")
    s.send("s2c", b"QNG 48\r\n")
    s.send("c2s", b"PNG\r\n")
    s.send("s2c", b"QNG 47\r\n")
    seen = []
    fast = tcp.TcpTracker._fast

    def watched(self, flow, *args):
        seen.append(flow.halves is tcp.IN_LANE)
        return fast(self, flow, *args)
    monkeypatch.setattr(tcp.TcpTracker, "_fast", watched)
    records, taken = both(tmp_path, monkeypatch, write(tmp_path, s))
    assert taken >= 4 and seen and all(seen)
    assert ("1", "tcp.retransmission", 23) in summary(records)
    assert [r["cmd"] for r in records if r["kind"] == "transaction"] == ["VER", "PNG", "PNG", "PNG", "PNG"]


@pytest.mark.parametrize("late", [b"", b"VER 1 MSNP8\r\n"])
def test_a_one_sided_connection_goes_in_the_lane_with_its_other_direction_not_started(tmp_path, monkeypatch, late):
    """Only the client's side is in the capture: the flow goes in the lane with the server's
    direction not started (it holds no HalfStreams there) and the lane takes the client's
    segments; a late segment of the server's direction (a bare ACK, or data: a start window of
    its own) goes to Python, which takes the flow out; both implementations give the same records."""
    s = Session()
    s.send("c2s", b"VER 1 MSNP8 CVR0\r\n")
    s.ts += 1.0                                 # past the start window
    for _ in range(4):
        s.send("c2s", b"PNG\r\n")
    if late:
        s.send("s2c", late)
    else:
        s._seg("s2c", s.nxt["s2c"], s.nxt["c2s"], "A", b"", None)
    s.ts += 1.0                                 # past the server direction's own start window
    for _ in range(3):
        s.send("c2s", b"PNG\r\n")
    seen = []
    fast = tcp.TcpTracker._fast

    def watched(self, flow, index, *args):
        seen.append((flow.halves is tcp.IN_LANE, flow.dirs[index]))
        return fast(self, flow, index, *args)
    monkeypatch.setattr(tcp.TcpTracker, "_fast", watched)
    records, taken = both(tmp_path, monkeypatch, write(tmp_path, s))
    assert taken >= 5 and seen and all(in_lane and d == "c2s" for in_lane, d in seen)
    codes = [(r["dir"], r["cmd"]) for r in records if r["kind"] == "command"]
    assert codes.count(("c2s", "PNG")) == 7
    assert (("s2c", "VER") in codes) == bool(late)


def _quiet_spell(gap: float) -> Session:
    """Both directions keep unacknowledged bytes (300 and 320), the flow is
    silent for `gap` seconds, then the server's next segment comes in order (the lane takes it)
    and both sides retransmit their kept bytes with other bytes."""
    s = login(Session())
    c = s.send("c2s", b"PNG\r\n" * 60, ts=1_000_100.0)
    s_ = s.send("s2c", b"QNG 50\r\n" * 40, ack=c, ts=1_000_100.5)     # acknowledges nothing of the PNGs
    s.send("s2c", b"QNG 49\r\n", ack=c, ts=1_000_100.5 + gap)          # the first segment after the spell
    s.again("c2s", c, b"PXG\r\n", ack=s_, ts=1_000_100.6 + gap)       # differs from the kept copy, if kept
    s.again("s2c", s_, b"QXG 50\r\n", ack=c, ts=1_000_100.7 + gap)
    return s


@pytest.mark.parametrize("gap, extra, kept", [
    (10.0, (), True),                                  # exactly UNACKED_QUIET: still kept
    (10.000001, (), False),                            # a microsecond more: released
    (2.0, ("--reorder-timeout", "3"), True),           # a shorter reorder timeout is the interval
    (3.5, ("--reorder-timeout", "3"), False),
])
def test_the_lane_releases_a_quiet_flow_by_the_python_rule(tmp_path, monkeypatch, gap, extra, kept):
    """The quiet release (tcp.py `released`, core/src/lane.rs `released`): the segment after a
    silence longer than the quiet interval finds no unacknowledged bytes in either direction, so
    the retransmissions after it are compared with nothing. The lane takes that segment and
    applies the rule itself (its count says so); both implementations give the same records."""
    released = {}
    fast = tcp.TcpTracker._fast

    def watched(self, flow, index, events, ts, size):
        released[ts] = self._lane.released[0]   # flows the lane released at a segment, so far
        return fast(self, flow, index, events, ts, size)
    monkeypatch.setattr(tcp.TcpTracker, "_fast", watched)
    records, taken = both(tmp_path, monkeypatch, write(tmp_path, _quiet_spell(gap)), *extra)
    mismatches = [r["offset"] for r in records if r["kind"] == "anomaly" and r["name"] == "tcp.overlap_mismatch"]
    assert mismatches == ([18, 13] if kept else [])
    assert [r["offset"] for r in records if r["kind"] == "anomaly" and r["name"] == "tcp.retransmission"] == [18, 13]
    # The lane took the segments before and after the spell, and released at the second.
    before, after = (min(released, key=lambda ts: abs(ts - want)) for want in (1_000_100.5, 1_000_100.5 + gap))
    assert abs(before - 1_000_100.5) < 1e-3 and abs(after - 1_000_100.5 - gap) < 1e-3
    assert released[after] - released[before] == (0 if kept else 1)


def test_the_lane_frees_the_bytes_of_flows_that_stay_silent(tmp_path, monkeypatch):
    """A flow holding unacknowledged bytes that never speaks again: the lane's quiet queue drops
    them once the lane's clock (another flow's segments) is past its last segment plus the quiet
    interval, not before, and only once."""
    one = login(Session(ts=1_000_000.0))
    one.send("c2s", b"PNG\r\n" * 60, ts=1_000_001.0)
    one.send("s2c", b"QNG 50\r\n", ack=one.nxt["c2s"] - 300, ts=1_000_001.5)   # the lane holds 300 bytes
    two = login(Session(client=("127.0.0.3", 40001), ts=1_000_000.5))
    for i in range(30):
        two.send("c2s", b"PNG\r\n", ts=1_000_002.0 + i)
        two.send("s2c", b"QNG 50\r\n", ts=1_000_002.25 + i)
    seen = []
    fast = tcp.TcpTracker._fast

    def watched(self, flow, index, events, ts, size):
        seen.append((ts, self._lane.released[1]))
        return fast(self, flow, index, events, ts, size)
    monkeypatch.setattr(tcp.TcpTracker, "_fast", watched)
    both(tmp_path, monkeypatch, write(tmp_path, one, two))
    assert seen and all(n == (1 if ts > 1_000_011.5 else 0) for ts, n in seen)


def test_the_quiet_queue_frees_bytes_kept_after_it_emptied(tmp_path, monkeypatch):
    """The quiet queue empties (the one flow holding bytes was released), then that flow keeps
    bytes again at a segment the lane takes, and no flow enters the lane after it: the queue
    still frees them once the lane's clock (the other flow's bare ACKs, which hold nothing) is
    past that segment plus the quiet interval."""
    one = login(Session(ts=1_000_000.0))
    one.send("c2s", b"PNG\r\n" * 60, ts=1_000_001.0)
    one.send("s2c", b"QNG 50\r\n", ack=one.nxt["c2s"] - 300, ts=1_000_001.5)   # released after 1,000,011.5
    one.send("c2s", b"PNG\r\n" * 60, ts=1_000_015.0)
    one.send("s2c", b"QNG 50\r\n", ack=one.nxt["c2s"] - 300, ts=1_000_015.5)   # kept again: after 1,000,025.5
    two = login(Session(client=("127.0.0.3", 40001), ts=1_000_000.5))
    for i in range(30):   # the lane's clock moves on; two holds no bytes
        two._seg("c2s", two.nxt["c2s"], two.nxt["s2c"], "A", b"", 1_000_002.0 + i)
    two.send("c2s", b"PNG\r\n", ts=1_000_032.0)
    seen = {}
    fast = tcp.TcpTracker._fast

    def watched(self, flow, index, events, ts, size):
        seen[ts] = self._lane.released[1]   # flows the quiet queue released, so far
        return fast(self, flow, index, events, ts, size)
    monkeypatch.setattr(tcp.TcpTracker, "_fast", watched)
    both(tmp_path, monkeypatch, write(tmp_path, one, two))
    assert seen[1_000_015.0] == 1 and seen[1_000_032.0] == 2


def test_kept_bytes_do_not_change_the_order_deadlines_come_due_in(tmp_path, monkeypatch):
    """Two flows closed by one late segment (both idle): they close in the order of their
    deadlines. Flow 2 keeps 300 unacknowledged bytes (the lane holds them; the Python path frees
    them from a queue of its own): that must not move its deadline before flow 1's on either
    implementation, or the two would write their records in different orders."""
    one = login(Session(ts=1_000_000.0))
    two = login(Session(client=("127.0.0.3", 40001), ts=1_000_001.0))
    two.send("c2s", b"PNG\r\n" * 60, ts=1_000_030.0)
    two.send("s2c", b"QNG 50\r\n", ack=two.nxt["c2s"] - 300, ts=1_000_030.5)
    late = Session(client=("127.0.0.4", 40002), ts=1_000_200.0).handshake()
    records, taken = both(tmp_path, monkeypatch, write(tmp_path, one, two, late),
                          "--idle-timeout", "60", "--reply-timeout", "1000")
    assert [r["stream"] for r in records if r["kind"] == "stream"] == ["1", "2"]
    assert taken >= 1


def test_a_reply_that_came_leaves_no_deadline_to_come_due_for_nothing(tmp_path, monkeypatch):
    """Each PNG sets the flow's deadline at its reply timeout; its QNG comes half a second later,
    and the deadline is set again there (`_refresh`, at the same delivery on both paths), so no
    segment of the lane is handed to Python for a deadline with nothing left to do (`_time`).
    The last PNG gets no reply: its timeout still fires, between the other flow's segments."""
    s = login(Session())
    for i in range(20):
        s.send("c2s", b"PNG\r\n", ts=1_000_010.0 + 10 * i)
        s.send("s2c", b"QNG 50\r\n", ts=1_000_010.5 + 10 * i)
    s.send("c2s", b"PNG\r\n", ts=1_000_300.0)
    other = login(Session(client=("127.0.0.3", 40001), ts=1_000_290.0))
    for i in range(4):
        other.send("c2s", b"PNG\r\n", ts=1_000_301.0 + 2 * i)
        other.send("s2c", b"QNG 50\r\n", ts=1_000_301.5 + 2 * i)
    crossings = []
    time = tcp.TcpTracker._time

    def counted(self, ts):
        crossings.append(ts)
        return time(self, ts)
    monkeypatch.setattr(tcp.TcpTracker, "_time", counted)
    records, taken = both(tmp_path, monkeypatch, write(tmp_path, s, other), "--reply-timeout", "5")
    assert taken >= 40
    assert crossings == [1_000_305.5]   # only the unanswered PNG's timeout (at 1,000,305)
    short = summary(records)
    pngs = [i for i, r in enumerate(short) if r == ("2", "c2s", "PNG")]
    qngs = [i for i, r in enumerate(short) if r == ("2", "s2c", "QNG")]
    assert pngs[2] < short.index(("1", "transaction", "PNG", "unanswered")) < qngs[2]   # 1,000,305.0 < 305 + 5 < 305.5


def _slow_segments(monkeypatch) -> list:
    """The segments the lane hands to Python (`_slow`), as (flags, payload length)."""
    seen = []
    slow = tcp.TcpTracker._slow

    def counted(self, ts, key, seq, ack, flags, payload):
        seen.append((flags, len(payload)))
        return slow(self, ts, key, seq, ack, flags, payload)
    monkeypatch.setattr(tcp.TcpTracker, "_slow", counted)
    return seen


def test_the_lane_takes_bare_acks_and_they_keep_a_flow_from_its_idle_close(tmp_path, monkeypatch):
    """Bare ACKs of a flow in the lane stay in the lane (no call to Python), yet count as the
    flow's activity as `segment` counts them: a flow that only ACKs for longer than the idle
    timeout is not closed as idle, and one whose ACKs stop is closed at its last ACK's time."""
    s = login(Session())
    s.send("c2s", b"PNG\r\n")
    s.send("s2c", b"QNG 50\r\n")
    for i in range(8):   # 8 x 20 s of bare ACKs only: past the 60 s idle timeout, never idle 60 s
        s._seg("s2c", s.nxt["s2c"], s.nxt["c2s"], "A", b"", s.ts + 20.0 * (i + 1))
    s.ts += 170.0
    s.send("c2s", b"PNG\r\n")
    s.send("s2c", b"QNG 50\r\n")
    quiet = login(Session(client=("127.0.0.3", 40001), ts=s.ts - 200.0))
    quiet.send("c2s", b"PNG\r\n")
    quiet.send("s2c", b"QNG 50\r\n")
    quiet._seg("s2c", quiet.nxt["s2c"], quiet.nxt["c2s"], "A", b"", quiet.ts + 30.0)   # its last segment
    slow = _slow_segments(monkeypatch)
    records, taken = both(tmp_path, monkeypatch, write(tmp_path, s, quiet), "--idle-timeout", "60")
    assert taken >= 6
    bare_in_python = [f for f, n in slow if n == 0 and f == 0x10]
    assert len(bare_in_python) <= 2   # each flow's handshake ACK, before it enters the lane
    streams = {r["stream"]: r for r in records if r["kind"] == "stream"}
    assert len(streams) == 2                                    # no idle close split the first flow
    first = next(k for k, r in streams.items() if r["client"] == "127.0.0.1:40000")
    assert sum(1 for r in summary(records) if r[0] == first and r[1:] == ("c2s", "PNG")) == 2
    other = next(k for k, r in streams.items() if k != first)
    assert streams[other]["end"] < streams[first]["start"] + 200   # closed as idle, long before the first


def test_the_lane_s_bare_acks_move_capture_time_and_the_flow_s_last_time_as_python_does(tmp_path, monkeypatch):
    """A bare ACK whose timestamp runs ahead of the next segments' (capture clocks step back),
    ACKs that release a quiet flow's kept bytes before a retransmission, and flows evicted at
    the flow limit by the time of their last ACK: the same records on both implementations."""
    flows = []
    for n in range(6):
        s = login(Session(client=("127.0.0.1", 41000 + n), ts=1_000_000.0 + n))
        start = s.send("c2s", b"PNG\r\n" * 60)           # 300 bytes the server leaves unacknowledged
        s.send("s2c", b"QNG 50\r\n", ack=start)
        s._seg("s2c", s.nxt["s2c"], start + 2, "A", b"", s.ts + 12.0 - n)   # later than what follows
        s.again("c2s", start, b"PXG\r\n", ts=s.ts + 0.5)   # other bytes: compared only if still kept
        s._seg("s2c", s.nxt["s2c"], s.nxt["c2s"], "A", b"", 1_000_050.0 + 3 * (5 - n))
        flows.append(s)
    late = login(Session(client=("127.0.0.9", 42000), ts=1_000_070.0))   # past the limit: evicts
    late.send("c2s", b"PNG\r\n")
    records, taken = both(tmp_path, monkeypatch, write(tmp_path, *flows, late), "--max-flows", "4")
    assert taken > 0
    assert any(r["kind"] == "stream" for r in records)
