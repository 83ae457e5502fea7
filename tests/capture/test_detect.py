"""MSNP stream detection and the client/server decision."""

from __future__ import annotations

import socket
import struct

import pytest

from analyzer.analysis.run import Analysis
from analyzer.capture.detect import Detector, looks_like_msnp, side_from_content
from analyzer.capture.tcp import ACK, SYN, TcpTracker
from analyzer.msnp import C2S, S2C
from analyzer.msnp.facts import referral
from resegment import Collector


def key(src, dst) -> bytes:
    return socket.inet_aton(src[0]) + socket.inet_aton(dst[0]) + struct.pack(">HH", src[1], dst[1])


@pytest.mark.parametrize("head, verdict", [
    (b"VER 1 MSNP8 CVR0\r\n", True),
    (b"MSG hotmail Hotmail 400\r\n", True),
    (b"217 5\r\n", True),
    (b"GET 5 ab\r\n", True),                      # MSNP's GET has a TrID
    (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", False),
    (b"HTTP/1.1 200 OK\r\n", False),
    (b"220 mail.example.com ESMTP\r\n", False),   # SMTP banner: a number, but no TrID
    (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc", False),  # TLS: decided on the first bytes
    (b"VER 1 MSN", None),                          # the line has not ended yet
])
def test_looks_like_msnp(head, verdict):
    assert looks_like_msnp(head) is verdict


@pytest.mark.parametrize("head, side", [
    (b"MSG alice@example.com Alice 120\r\n", S2C),
    (b"MSG 4 A 120\r\n", C2S),
    (b"NLN NLN bob@example.com Bob 0\r\n", S2C),
    (b"CAL 2 bob@example.com\r\n", C2S),
    (b"USR 3 TWN I alice@example.com\r\n", C2S),
    (b"USR 3 TWN S ct=1,rver=1\r\n", S2C),
    (b"VER 1 MSNP8 CVR0\r\n", None),             # both sides send it
])
def test_side_from_content(head, side):
    assert side_from_content(head) == side


class Run:
    def __init__(self):
        self.got = Collector()
        self.analysis = Analysis([self.got])
        self.tracker = TcpTracker(self.analysis)
        self.ts = 10.0

    def send(self, src, dst, seq, data=b"", flags=0x18, ack=0):
        self.ts += 0.01
        self.tracker.segment(self.ts, key(src, dst), seq, ack, flags, data)

    def finish(self):
        self.tracker.finish(self.ts)
        self.analysis.finish()
        return self.analysis


A, B = ("127.0.0.1", 41000), ("127.0.0.9", 7001)


def test_content_detection_on_another_port_with_syn():
    r = Run()
    r.send(A, B, 99, flags=SYN)
    r.send(B, A, 499, flags=SYN | ACK)
    r.send(A, B, 100, b"VER 1 MSNP12 CVR0\r\n")
    r.send(B, A, 500, b"VER 1 MSNP12\r\n")
    analysis = r.finish()
    [conn] = analysis.connections.values()
    assert conn.client == "127.0.0.1:41000" and conn.server == "127.0.0.9:7001"
    assert sum(conn.commands.values()) == 2


def test_http_on_another_port_is_ignored():
    r = Run()
    r.send(A, B, 99, flags=SYN)
    r.send(A, B, 100, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    r.send(B, A, 500, b"HTTP/1.1 200 OK\r\n\r\n")
    analysis = r.finish()
    assert analysis.connections == {}
    assert r.tracker.stats["ignored_flows"] == 1


def test_xfr_names_the_server_of_a_later_flow_without_syn():
    r = Run()
    ns_client, ns = ("127.0.0.1", 42000), ("127.0.0.2", 1863)
    r.send(ns_client, ns, 1, b"XFR 9 SB\r\n")
    r.send(ns, ns_client, 1, b"XFR 9 SB 127.0.0.3:7777 CKI 17262740.1050826919.32308\r\n")
    # Mid-session switchboard on 7777, server speaking first in the capture, with a line
    # that does not tell sides (a VER): only the XFR says which end is the server.
    sb_client, sb = ("127.0.0.1", 9000), ("127.0.0.3", 7777)
    r.send(sb, sb_client, 50, b"VER 3 MSNP8\r\n")
    r.send(sb_client, sb, 60, b"OUT\r\n")
    analysis = r.finish()
    assert [c.server for c in analysis.connections.values()] == ["127.0.0.2:1863", "127.0.0.3:7777"]
    assert (bytes([127, 0, 0, 3]), 7777) in r.tracker.detector.endpoints


def test_rng_names_an_endpoint():
    d = Detector()
    from analyzer.msnp import CommandReader
    [cmd] = CommandReader(S2C).feed(b"RNG 11752013 127.0.0.4:1864 CKI 849102291.520491113 bob@example.com Bob\r\n")
    d.referral(referral(cmd))
    assert (bytes([127, 0, 0, 4]), 1864) in d.endpoints
    k = key(("127.0.0.1", 1864), ("127.0.0.4", 1864))
    assert d.server_by_address(k) == 1


def test_content_decides_sides_when_nothing_else_does():
    r = Run()
    # No SYN, no known port, both ports equal: the server-only line decides.
    x, y = ("127.0.0.1", 5555), ("127.0.0.8", 5555)
    r.send(x, y, 10, b"NLN NLN bob@example.com Bob 0\r\n")
    analysis = r.finish()
    [conn] = analysis.connections.values()
    assert conn.server == "127.0.0.1:5555"
