"""Cost proportional to input: each pathological input class, doubled, against a normal chat session.

    python3 bench/scaling.py [--only NAME[,NAME...]] [--scale X] [--keep DIR] [--list]

For every class (issue #16: the crafted inputs that once cost minutes or
gigabytes, and the ones found since) this builds the input at three sizes: a
tiny one (the command's fixed cost: interpreter, imports, scapy, mitmproxy),
size n and size 2n; runs the real command (`python3 -m analyzer ...`) on each
in its own process and takes, from `wait4`, the CPU time (user + system, so
other jobs on the shared machine weigh less than on a wall clock) and the peak
RSS, plus the bytes written (JSON Lines file, terminal report). It prints per
class:

- time ratio = (cpu(2n) - cpu(tiny)) / (cpu(n) - cpu(tiny)): linear is 2.0,
  quadratic 4.0; target at most 2.5 (the `time` column says ok or OVER);
- for memory classes, the peak RSS at n and 2n and the growth above the
  fixed cost ((rss(2n) - rss(tiny)) / (rss(n) - rss(tiny))): bounded is about
  1 (the limit holds), 2 means memory proportional to the input;
- for output classes, the ratio of bytes written.

The baseline, `chat` (a normal login and switchboard chat), is measured in the
same run with the same method. Inputs are generated here (pcap records built
with captures/make_hostile.py's packet helpers, mitmproxy flow files with
mitmproxy's own test flows and FlowWriter), loopback addresses only, sizes
bounded so the whole bench runs in a few minutes. Timings live here, never in
the unit tests (tests/scenarios/test_limits.py checks the limits by counts).
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import struct
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[1]
sys.path[0] = str(ROOT)  # not bench/: its html.py would shadow the standard library's html

from captures.make_hostile import ethernet, pcap_header, pcap_record, tcp_segment  # noqa: E402

TARGET = 2.5
FLAT = 0.08  # seconds of CPU above the fixed cost below which there is nothing to take a ratio of
T0 = 1_000_000.0


# -- pcap building ------------------------------------------------------------------

class Pcap:
    """Records of any number of TCP connections, in the order they are added."""

    def __init__(self) -> None:
        self.parts = [pcap_header()]
        self.ts = T0

    def packet(self, src, dst, seq, ack, flags, payload=b"", ts=None, step=0.0001):
        if ts is None:
            self.ts += step
            ts = self.ts
        self.parts.append(pcap_record(ethernet(tcp_segment(src[0], src[1], dst[0], dst[1], seq, ack, flags,
                                                           payload)), ts))

    def data(self) -> bytes:
        return b"".join(self.parts)


class Conn:
    """One TCP connection inside a Pcap: handshake, data in MSS pieces, FIN."""

    def __init__(self, pcap: Pcap, client, server, handshake: bool = True) -> None:
        self.pcap, self.client, self.server = pcap, client, server
        self.seq = {"c": 1000, "s": 50000}
        if handshake:
            self._add("c", "S", b"")
            self.seq["c"] += 1
            self._add("s", "SA", b"")
            self.seq["s"] += 1
            self._add("c", "A", b"")

    def _add(self, side, flags, payload, **kw):
        src, dst = (self.client, self.server) if side == "c" else (self.server, self.client)
        other = "s" if side == "c" else "c"
        self.pcap.packet(src, dst, self.seq[side], self.seq[other], flags, payload, **kw)

    def send(self, side: str, data: bytes, mss: int = 1400, **kw) -> "Conn":
        for i in range(0, len(data), mss):
            piece = data[i:i + mss]
            self._add(side, "PA", piece, **kw)
            self.seq[side] += len(piece)
        return self

    def close(self) -> None:
        self._add("c", "FA", b"")
        self.seq["c"] += 1
        self._add("s", "FA", b"")
        self.seq["s"] += 1
        self._add("c", "A", b"")


def client(i: int, port: int | None = None):
    return (f"127.1.{i // 250 % 250}.{i % 250 + 1}", port or 20000 + i % 40000)


NS = ("127.0.0.2", 1863)
SB = ("127.0.0.3", 1864)


def msg(body: bytes, trid: int, mode: bytes = b"A") -> bytes:
    payload = b"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=UTF-8\r\n\r\n" + body
    return b"MSG %d %s %d\r\n" % (trid, mode, len(payload)) + payload


def server_msg(body: bytes) -> bytes:
    payload = b"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=UTF-8\r\n\r\n" + body
    return b"MSG bob@example.com Bob %d\r\n" % len(payload) + payload


def write(path: Path, data: bytes) -> list[str]:
    path.write_bytes(data)
    return [str(path)]


# -- the classes ----------------------------------------------------------------------
# Each builder takes n and a path stem, writes its input, and returns the command's
# arguments after `python3 -m analyzer`. Output files are added by the runner.

def build_chat(n: int, stem: Path) -> list[str]:
    """Baseline: an NS login and one switchboard with n messages, each acknowledged."""
    p = Pcap()
    ns = Conn(p, client(1), NS)
    ns.send("c", b"VER 1 MSNP8 CVR0\r\n").send("s", b"VER 1 MSNP8 CVR0\r\n")
    ns.send("c", b"USR 2 TWN I alice@example.com\r\n").send("s", b"USR 2 TWN S lc=1033,id=507\r\n")
    ns.send("c", b"USR 3 TWN S t=ticket&p=profile\r\n").send("s", b"USR 3 OK alice@example.com Alice 1 0\r\n")
    ns.send("c", b"XFR 4 SB\r\n").send("s", b"XFR 4 SB 127.0.0.3:1864 CKI 17262740.1050826919.32308\r\n")
    sb = Conn(p, client(2), SB)
    sb.send("c", b"USR 1 alice@example.com 17262740.1050826919.32308\r\n")
    sb.send("s", b"USR 1 OK alice@example.com Alice\r\n")
    sb.send("c", b"CAL 2 bob@example.com\r\n").send("s", b"CAL 2 RINGING 11752013\r\n")
    sb.send("s", b"JOI bob@example.com Bob\r\n")
    for i in range(n):
        sb.send("c", msg(b"message %d from alice" % i, i + 3))
        sb.send("s", b"ACK %d\r\n" % (i + 3))
        sb.send("s", server_msg(b"reply %d from bob" % i))
    sb.send("c", b"OUT\r\n")
    sb.close()
    ns.send("c", b"OUT\r\n")
    ns.close()
    return ["analyze", *write(stem.with_suffix(".pcap"), p.data())]


def build_out_of_order(n: int, stem: Path) -> list[str]:
    """Blocks of n requests (n <= --max-pending) answered newest first."""
    p = Pcap()
    ns = Conn(p, client(1), NS)
    trid = 0
    for _ in range(40):
        first = trid + 1
        reqs = b"".join(b"ADD %d FL u%d@example.com u\r\n" % (t, t) for t in range(first, first + n))
        trid += n
        ns.send("c", reqs)
        ns.send("s", b"".join(b"ADD %d FL 4 u%d@example.com u\r\n" % (t, t) for t in range(trid, first - 1, -1)))
    ns.close()
    return ["analyze", *write(stem.with_suffix(".pcap"), p.data())]


def build_msg_n_async(n: int, stem: Path) -> list[str]:
    """n `MSG N` waiting for a NAK, then n asynchronous server lines (JOI, MSG)."""
    p = Pcap()
    sb = Conn(p, client(1), SB)
    sb.send("c", b"USR 1 alice@example.com 1.2.3\r\n").send("s", b"USR 1 OK alice@example.com Alice\r\n")
    sb.send("c", b"".join(msg(b"hi", t, b"N") for t in range(2, n + 2)))
    sb.send("s", b"".join(b"JOI u%d@example.com U\r\n" % i + server_msg(b"x") for i in range(n)))
    sb.close()
    return ["analyze", *write(stem.with_suffix(".pcap"), p.data())]


def build_joi_flood(n: int, stem: Path) -> list[str]:
    """Blocks of n CALs waiting, then n JOIs of those handles (newest first)."""
    p = Pcap()
    sb = Conn(p, client(1), SB)
    sb.send("c", b"USR 1 alice@example.com 1.2.3\r\n").send("s", b"USR 1 OK alice@example.com Alice\r\n")
    trid = 1
    for _ in range(8):
        first = trid + 1
        sb.send("c", b"".join(b"CAL %d u%d@example.com\r\n" % (t, t) for t in range(first, first + n)))
        trid += n
        sb.send("s", b"".join(b"JOI u%d@example.com U\r\n" % t for t in range(trid, first - 1, -1)))
        sb.send("s", b"".join(b"CAL %d RINGING 1\r\n" % t for t in range(first, trid + 1)))
    sb.close()
    return ["analyze", *write(stem.with_suffix(".pcap"), p.data())]


def build_cal_ringing(n: int, stem: Path) -> list[str]:
    """n CALs each answered RINGING (each then waits for its JOI), then n JOIs newest first."""
    p = Pcap()
    sb = Conn(p, client(1), SB)
    sb.send("c", b"USR 1 alice@example.com 1.2.3\r\n").send("s", b"USR 1 OK alice@example.com Alice\r\n")
    for t in range(2, n + 2):
        sb.send("c", b"CAL %d u%d@example.com\r\n" % (t, t)).send("s", b"CAL %d RINGING 1\r\n" % t)
    sb.send("s", b"".join(b"JOI u%d@example.com U\r\n" % t for t in range(n + 1, 1, -1)))
    sb.close()
    return ["analyze", *write(stem.with_suffix(".pcap"), p.data())]


def build_unclosed_tags(n: int, stem: Path) -> list[str]:
    """An NS payload of n kB of unclosed `<Password` tags (redaction) and an ADL of n kB of unclosed
    `<d>` tags (the contact list): regular expressions that scanned to the end from every tag."""
    p = Pcap()
    ns = Conn(p, client(1), NS)
    ns.send("c", b"VER 1 MSNP15 CVR0\r\n").send("s", b"VER 1 MSNP15 CVR0\r\n")
    ns.send("c", b"USR 2 SSO I alice@example.com\r\n").send("s", b"USR 2 OK alice@example.com 1 0\r\n")
    body = b"MIME-Version: 1.0\r\nContent-Type: text/x-msmsgsprofile\r\n\r\n" + b"<Password " * (n * 1024 // 10)
    ns.send("s", b"MSG Hotmail Hotmail %d\r\n" % len(body) + body)
    ml = b"<ml l=\"1\">" + b"<d n='x'>" * (n * 1024 // 9) + b"</ml>"
    ns.send("c", b"ADL 3 %d\r\n" % len(ml) + ml).send("s", b"ADL 3 OK\r\n")
    ns.close()
    return ["analyze", *write(stem.with_suffix(".pcap"), p.data())]


def build_iln_flood(n: int, stem: Path) -> list[str]:
    """One CHG answered by n ILN lines: its transaction's reply list (memory)."""
    p = Pcap()
    ns = Conn(p, client(1), NS)
    ns.send("c", b"CHG 9 NLN 0\r\n").send("s", b"CHG 9 NLN 0\r\n")
    ns.send("s", b"".join(b"ILN 9 NLN u%d@example.com U 0\r\n" % i for i in range(n)), ts=T0 + 1)
    ns.close()
    return ["analyze", *write(stem.with_suffix(".pcap"), p.data())]


def build_png_unanswered(n: int, stem: Path) -> list[str]:
    """n PNGs that never get a QNG (memory, --max-pending)."""
    p = Pcap()
    ns = Conn(p, client(1), NS)
    ns.send("c", b"PNG\r\n" * n, ts=T0 + 1)
    ns.close()
    return ["analyze", *write(stem.with_suffix(".pcap"), p.data())]


def build_decode_raw(n: int, stem: Path) -> list[str]:
    """`decode` of a raw server stream of n kB (memory)."""
    line = b"NLN NLN bob@example.com Bob 0\r\n"
    path = stem.with_suffix(".raw")
    path.write_bytes(line * (n * 1024 // len(line)))
    return ["decode", str(path), "--dir", "s2c"]


def build_detect_crafted(n: int, stem: Path) -> list[str]:
    """n flows on a port that is not MSNP's, each a 1,000-byte first line in 1-byte segments."""
    p = Pcap()
    for i in range(n):
        c = Conn(p, client(i, 30000 + i), ("127.0.0.9", 5000), handshake=True)
        c.send("c", b"VER 1 " + b"x" * 1000, mss=1)
        c.close()
    return ["analyze", *write(stem.with_suffix(".pcap"), p.data())]


def build_gzip_bomb(n: int, stem: Path) -> list[str]:
    """A gzip'd pcap of n kB that inflates about 1,000 times (identical non-MSNP records)."""
    record = pcap_record(ethernet(tcp_segment("127.0.0.5", 40000, "127.0.0.6", 80, 1, 1, "PA", b"\0" * 1400)), T0)
    target = n * 1024
    path = stem.with_suffix(".pcap.gz")
    with gzip.open(path, "wb", compresslevel=9) as f:
        f.write(pcap_header())
        chunk = record * 700
        while path.stat().st_size < target:
            for _ in range(64):
                f.write(chunk)
            f.flush()
    return ["analyze", str(path)]


def rst_flow_file(path: Path, body_request: bytes, body_response: bytes, auth: str | None = None) -> None:
    from mitmproxy import io as mio
    from mitmproxy.test import tflow
    f = tflow.tflow(resp=True)
    f.request.method = "POST"
    f.request.host = "127.0.0.4"
    f.request.path = "/RST.srf"
    f.request.content = body_request
    if auth is not None:
        f.request.path = "/login2.srf"
        f.request.headers["Authorization"] = auth
    f.response.content = body_response
    with open(path, "wb") as out:
        mio.FlowWriter(out).add(f)


def build_rst_unclosed(n: int, stem: Path) -> list[str]:
    """An RST.srf login whose bodies hold n kB of unclosed Username / BinarySecurityToken tags."""
    path = stem.with_suffix(".flows")
    reps = n * 1024 // 40
    rst_flow_file(path, b"<wsse:Username>" + b"<wsse:Username>x" * reps,
                  b"<wsse:BinarySecurityToken>" * reps)
    return ["analyze", str(path)]


def build_passport_header(n: int, stem: Path) -> list[str]:
    """A Passport1.4 Authorization header of n kB with no '=' (a backtracking field regex)."""
    path = stem.with_suffix(".flows")
    rst_flow_file(path, b"", b"", auth="Passport1.4 " + "a" * (n * 1024))
    return ["analyze", str(path)]


def build_mitm_flows(n: int, stem: Path) -> list[str]:
    """A mitmproxy flow file of n RST.srf logins, each followed by its NS flow presenting the ticket."""
    from mitmproxy import io as mio
    from mitmproxy.tcp import TCPMessage
    from mitmproxy.test import tflow
    path = stem.with_suffix(".flows")
    with open(path, "wb") as out:
        writer = mio.FlowWriter(out)
        for i in range(n):
            f = tflow.tflow(resp=True)
            f.request.method, f.request.host, f.request.path = "POST", "127.0.0.4", "/RST.srf"
            f.request.content = b"<wsse:Username>u%d@example.com</wsse:Username>" % i
            f.response.content = b"<wsse:BinarySecurityToken Id=\"PPToken1\">t=tok%d&amp;p=x</wsse:BinarySecurityToken>" % i
            writer.add(f)
            t = tflow.ttcpflow()
            t.server_conn.address = ("127.0.0.2", 1863)
            t.messages = [TCPMessage(True, b"VER 1 MSNP15 CVR0\r\n"), TCPMessage(False, b"VER 1 MSNP15 CVR0\r\n"),
                          TCPMessage(True, b"USR 2 SSO S t=tok%d&p=x\r\n" % i)]
            writer.add(t)
    return ["analyze", str(path)]


def build_tcp_reverse(n: int, stem: Path) -> list[str]:
    """One connection whose client sends n bytes as 1-byte segments in reverse order (busy, #17)."""
    p = Pcap()
    c = Conn(p, client(1), NS)
    data = (b"PNG\r\n" * (n // 5 + 1))[:n]
    base = c.seq["c"]
    for i in range(n - 1, -1, -1):
        p.packet(c.client, c.server, base + i, c.seq["s"], "PA", data[i:i + 1])
    c.seq["c"] += n
    c.close()
    return ["analyze", *write(stem.with_suffix(".pcap"), p.data())]


def build_bare_syns(n: int, stem: Path) -> list[str]:
    """n bare SYNs of distinct flows inside the 0.5 s start window (busy, #17)."""
    p = Pcap()
    for i in range(n):
        p.packet(client(i, 20000 + i % 40000), NS, i * 7919, 0, "S", ts=T0 + 0.4 * i / n)
    return ["analyze", *write(stem.with_suffix(".pcap"), p.data())]


def build_synless_flows(n: int, stem: Path) -> list[str]:
    """n SYN-less flows of one data segment each inside the start window (busy, #17)."""
    p = Pcap()
    for i in range(n):
        p.packet(client(i, 20000 + i % 40000), NS, 100, 0, "PA", b"PNG\r\n", ts=T0 + 0.4 * i / n)
    return ["analyze", *write(stem.with_suffix(".pcap"), p.data())]


def build_same_cookie(n: int, stem: Path) -> list[str]:
    """One XFR SB cookie presented by n switchboard connections (busy, #17: linking)."""
    p = Pcap()
    ns = Conn(p, client(0), NS)
    ns.send("c", b"USR 3 TWN S t=x\r\n").send("s", b"USR 3 OK alice@example.com Alice 1 0\r\n")
    ns.send("c", b"XFR 4 SB\r\n").send("s", b"XFR 4 SB 127.0.0.3:1864 CKI 1.2.3\r\n")
    for i in range(n):
        sb = Conn(p, client(i + 1), SB)
        sb.send("c", b"USR 1 alice@example.com 1.2.3\r\n").send("s", b"USR 1 OK alice@example.com Alice\r\n")
        sb.close()
    ns.close()
    return ["analyze", *write(stem.with_suffix(".pcap"), p.data())]


def build_xfr_ns(n: int, stem: Path) -> list[str]:
    """A DS connection with n `XFR NS` lines and n NS connections from the same client (busy, #17)."""
    p = Pcap()
    ds = Conn(p, ("127.1.0.1", 20000), ("127.0.0.1", 1863))
    ds.send("c", b"".join(b"USR %d TWN I alice@example.com\r\n" % t for t in range(1, n + 1)))
    ds.send("s", b"".join(b"XFR %d NS 127.0.0.2:1863 0 127.0.0.1:1863\r\n" % t for t in range(1, n + 1)))
    ds.close()
    for i in range(n):
        ns = Conn(p, ("127.1.0.1", 20001 + i), NS)
        ns.send("c", b"VER 1 MSNP8 CVR0\r\n").send("s", b"VER 1 MSNP8 CVR0\r\n")
        ns.close()
    return ["analyze", *write(stem.with_suffix(".pcap"), p.data())]


def build_non_msnp_flows(n: int, stem: Path) -> list[str]:
    """n HTTP flows left open (memory beyond --max-flows 2000; busy, #17)."""
    p = Pcap()
    for i in range(n):
        c = Conn(p, client(i, 20000 + i % 40000), ("127.0.0.7", 80), handshake=True)
        c.send("c", b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    return ["analyze", *write(stem.with_suffix(".pcap"), p.data()), "--max-flows", "2000"]


def build_html(n: int, stem: Path) -> list[str]:
    """The chat baseline with --html (memory; the HTML timeline, #19)."""
    return build_chat(n, stem) + ["--html", str(stem.with_suffix(".html"))]


def build_p2p_calls(n: int, stem: Path) -> list[str]:
    """n P2P INVITEs with distinct Call-IDs on one switchboard (memory, report size; #22)."""
    p = Pcap()
    sb = Conn(p, client(1), SB)
    sb.send("c", b"USR 1 alice@example.com 1.2.3\r\n").send("s", b"USR 1 OK alice@example.com Alice\r\n")
    out = []
    for i in range(n):
        call = "{%08d-0000-0000-0000-000000000000}" % i
        slp = (f"INVITE MSNMSGR:bob@example.com MSNSLP/1.0\r\nTo: <msnmsgr:bob@example.com>\r\n"
               f"From: <msnmsgr:alice@example.com>\r\nCall-ID: {call}\r\nContent-Length: 1\r\n\r\n").encode() + b"\0"
        body = struct.pack("<IIQQIIIIQ", 0, 7, 0, len(slp), len(slp), 0, 0, 0, 0) + slp + b"\0\0\0\0"
        mime = b"MIME-Version: 1.0\r\nContent-Type: application/x-msnmsgrp2p\r\nP2P-Dest: bob@example.com\r\n\r\n"
        out.append(b"MSG %d D %d\r\n" % (i + 2, len(mime + body)) + mime + body)
    sb.send("c", b"".join(out))
    sb.close()
    return ["analyze", *write(stem.with_suffix(".pcap"), p.data())]


@dataclass
class Class:
    name: str
    build: Callable[[int, Path], list[str]]
    n: int              # size n (2n is measured too); the tiny run uses `tiny`
    tiny: int
    kind: str           # time, memory or output: what the class is about
    unit: str
    owner: str = "#16"
    json: bool = True   # write --json (records are part of the cost)


CLASSES = [
    Class("chat", build_chat, 10000, 10, "time", "messages", "baseline"),
    Class("out_of_order", build_out_of_order, 500, 2, "output", "requests per block"),
    Class("msg_n_async", build_msg_n_async, 4000, 10, "time", "MSG N + server lines"),
    Class("joi_flood", build_joi_flood, 500, 2, "time", "CALs per block"),
    Class("cal_ringing", build_cal_ringing, 4000, 10, "time", "answered CALs, then JOIs"),
    Class("unclosed_tags", build_unclosed_tags, 200, 1, "time", "kB per payload"),
    Class("iln_flood", build_iln_flood, 40000, 10, "memory", "ILN lines"),
    Class("png_unanswered", build_png_unanswered, 100000, 10, "memory", "PNGs"),
    Class("decode_raw", build_decode_raw, 4096, 4, "memory", "kB"),
    Class("detect_crafted", build_detect_crafted, 60, 1, "time", "flows"),
    Class("gzip_bomb", build_gzip_bomb, 256, 8, "time", "kB compressed", json=False),
    Class("rst_unclosed", build_rst_unclosed, 8000, 1, "time", "kB"),
    Class("passport_header", build_passport_header, 12000, 1, "time", "kB"),
    Class("mitm_flows", build_mitm_flows, 2000, 2, "time", "logins and NS flows"),
    Class("tcp_reverse", build_tcp_reverse, 4000, 10, "time", "1-byte segments", "#17 busy"),
    Class("bare_syns", build_bare_syns, 10000, 10, "time", "SYNs", "#17 busy"),
    Class("synless_flows", build_synless_flows, 10000, 10, "time", "flows", "#17 busy"),
    Class("same_cookie", build_same_cookie, 1000, 2, "time", "switchboards", "#17 busy"),
    Class("xfr_ns", build_xfr_ns, 500, 2, "time", "XFR NS + NS connections", "#17 busy"),
    Class("non_msnp_flows", build_non_msnp_flows, 10000, 10, "memory", "open HTTP flows", "#17 busy"),
    Class("html", build_html, 4000, 10, "memory", "messages", "#19 html", json=False),
    Class("p2p_calls", build_p2p_calls, 5000, 10, "memory", "calls", "#22 extract"),
]


# -- measuring --------------------------------------------------------------------------

def run(argv: list[str], stem: Path, json_out: bool, timeout: float, root: Path = ROOT) -> dict:
    out = stem.with_suffix(".jsonl")
    report = stem.with_suffix(".report")
    cmd = [sys.executable, "-m", "analyzer", *argv, "--fail-on", "never"]
    if json_out:
        cmd += ["--json", str(out)]
    started = time.perf_counter()
    with open(report, "wb") as stdout:
        proc = subprocess.Popen(cmd, cwd=root, stdout=stdout, stderr=subprocess.PIPE,
                                env={**os.environ, "COLUMNS": "120"})
        try:
            _, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            return {"error": f"over {timeout:g} s"}
    _, status, usage = os.wait4(proc.pid, 0) if proc.returncode is None else (None, 0, proc._usage)
    elapsed = time.perf_counter() - started
    result = {"rc": proc.returncode, "cpu": usage.ru_utime + usage.ru_stime, "wall": elapsed,
              "rss": usage.ru_maxrss / 1024, "json": out.stat().st_size if out.exists() else 0,
              "report": report.stat().st_size, "input": sum(Path(a).stat().st_size for a in argv
                                                            if os.sep in a and Path(a).exists()
                                                            and not a.endswith(".html"))}
    if b"Traceback" in err or proc.returncode not in (0, 1):
        result["error"] = err.decode("utf-8", "replace").strip().splitlines()[-1:] or [f"exit {proc.returncode}"]
    for f in (out, report):
        if f.exists():
            f.unlink()
    return result


class _Popen(subprocess.Popen):
    """Popen that keeps the child's rusage (wait4) instead of discarding it."""

    def _try_wait(self, wait_flags):
        try:
            pid, sts, usage = os.wait4(self.pid, wait_flags)
        except ChildProcessError:
            return (self.pid, 0)
        if pid:
            self._usage = usage
        return (pid, sts)


subprocess.Popen = _Popen  # type: ignore[misc]  # this script's own runs only


def build(cls: Class, size: int, stem: Path) -> list[str]:
    """Build an input in a process of its own: a fork of a big bench process would count in the
    measured child's peak RSS (Linux keeps the high-water mark from before exec)."""
    out = subprocess.run([sys.executable, __file__, "--build", cls.name, str(size), str(stem)],
                         check=True, capture_output=True)
    return json.loads(out.stdout)


def measure(cls: Class, workdir: Path, scale: float, timeout: float, root: Path = ROOT,
            repeat: int = 1) -> dict:
    n = max(1, int(cls.n * scale))
    rows = {}
    for label, size in (("tiny", cls.tiny), ("n", n), ("2n", 2 * n)):
        stem = workdir / f"{cls.name}_{label}"
        argv = build(cls, size, stem)
        # The least CPU of `repeat` runs: other jobs on a shared machine only ever add to it.
        runs = [run(argv, stem, cls.json, timeout, root) for _ in range(repeat)]
        good = [r for r in runs if "cpu" in r]
        rows[label] = min(good, key=lambda r: r["cpu"]) if good else runs[0]
        rows[label]["size"] = size
        for f in workdir.glob(f"{cls.name}_{label}*"):
            f.unlink()
    return rows


def ratio(a: float, b: float) -> float | None:
    return a / b if b > 0 else None


def fmt(x: float | None, spec: str = ".2f") -> str:
    return "-" if x is None else format(x, spec)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", help="comma-separated class names")
    p.add_argument("--scale", type=float, default=1.0, help="multiply every class's n (default 1)")
    p.add_argument("--timeout", type=float, default=240.0, help="seconds per run before it counts as a failure")
    p.add_argument("--keep", type=Path, help="build inputs in this directory (default: a temporary one)")
    p.add_argument("--list", action="store_true", help="list the classes and exit")
    p.add_argument("--repeat", type=int, default=2, help="runs per size; the least CPU is taken (default 2)")
    p.add_argument("--root", type=Path, default=ROOT,
                   help="run `python3 -m analyzer` from this source tree (e.g. an older commit's "
                        "`git archive`, for before/after figures; the inputs are built by this one)")
    p.add_argument("--build", nargs=3, metavar=("CLASS", "SIZE", "STEM"), help=argparse.SUPPRESS)
    args = p.parse_args()
    classes = CLASSES
    if args.build:
        name, size, stem = args.build
        cls = next(c for c in classes if c.name == name)
        print(json.dumps(cls.build(int(size), Path(stem))))
        return 0
    if args.list:
        for c in classes:
            print(f"{c.name:16} {c.kind:7} {c.owner:12} n={c.n} {c.unit}: {c.build.__doc__.splitlines()[0]}")
        return 0
    if args.only:
        wanted = set(args.only.split(","))
        unknown = wanted - {c.name for c in classes}
        if unknown:
            p.error(f"unknown class(es): {', '.join(sorted(unknown))}")
        classes = [c for c in classes if c.name in wanted]
    tmp = None
    if args.keep:
        args.keep.mkdir(parents=True, exist_ok=True)
        workdir = args.keep
    else:
        tmp = tempfile.TemporaryDirectory()
        workdir = Path(tmp.name)
    print(f"{'class':16} {'owner':11} {'n':>7} {'input n':>9} {'cpu tiny':>8} {'cpu n':>7} {'cpu 2n':>7} "
          f"{'time x':>6} {'':4} {'rss n':>7} {'rss 2n':>7} {'mem x':>5} {'out n':>9} {'out x':>5}  note")
    worst = 0.0
    for cls in classes:
        rows = measure(cls, workdir, args.scale, args.timeout, args.root, args.repeat)
        t, a, b = rows["tiny"], rows["n"], rows["2n"]
        errors = [f"{k}: {r['error']}" for k, r in rows.items() if "error" in r]
        if "cpu" not in a or "cpu" not in b or "cpu" not in t:
            print(f"{cls.name:16} {cls.owner:11} {a['size']:>7} FAILED {'; '.join(errors)}")
            continue
        tx = ratio(b["cpu"] - t["cpu"], a["cpu"] - t["cpu"])
        mx = ratio(b["rss"] - t["rss"], a["rss"] - t["rss"])
        out_a, out_b = a["json"] + a["report"], b["json"] + b["report"]
        ox = ratio(out_b, out_a)
        if a["cpu"] - t["cpu"] < FLAT and b["cpu"] - t["cpu"] < FLAT:
            tx, verdict = None, "flat"  # both within the fixed cost's noise: nothing grew
        else:
            verdict = "ok" if tx is not None and tx <= TARGET else "OVER"
        if cls.kind == "time" or cls.kind == "output":
            worst = max(worst, tx or 0.0)
        note = "; ".join(errors)
        print(f"{cls.name:16} {cls.owner:11} {a['size']:>7} {a['input'] / 1e6:>8.2f}M {t['cpu']:>8.2f} "
              f"{a['cpu']:>7.2f} {b['cpu']:>7.2f} {fmt(tx):>6} {verdict:4} {a['rss']:>6.0f}M {b['rss']:>6.0f}M "
              f"{fmt(mx, '.2f'):>5} {out_a / 1e6:>8.2f}M {fmt(ox):>5}  {cls.kind}{': ' + note if note else ''}",
              flush=True)
    print(f"\ntime x = (cpu 2n - cpu tiny) / (cpu n - cpu tiny), target <= {TARGET} (flat: both within "
          f"{FLAT} s of the fixed cost); mem x = the same for peak RSS (about 1: bounded); out = JSON Lines + "
          f"terminal report bytes at n, out x their ratio at 2n.")
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
