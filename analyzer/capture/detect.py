"""Which TCP flows are MSNP, and which side of each is the client.

Contract:
- `Detector.decide(tracker, flow, final)` looks at a flow that has delivered
  its first bytes and calls `tracker.accept(flow, client_index)` or
  `tracker.reject(flow)`, or returns without deciding when it needs more
  bytes (never once `final` is true).
- A flow is MSNP when one end is port 1863 or an `ip:port` an `XFR`/`RNG`
  line of this capture pointed to, or, on any other port, when the first
  line of its first bytes is an MSNP command (`looks_like_msnp`). HTTP on
  the same ports (`GET / HTTP/1.1`) is not mistaken for MSNP's `GET`.
- The client is the side that sent the SYN; without a SYN, the side whose
  port is 1863 or was named by an `XFR`/`RNG` is the server; without that,
  content decides (lines only a server sends, such as `MSG handle nick len`,
  `NLN`, `JOI` or numeric errors, versus lines only a client sends); as a
  last resort the lower port is the server's.
- A flow whose first line is `VER MSNFTP` is MSNFTP (the MSNP2-8 file
  transfer), accepted with `protocol="msnftp"`; its client is the receiver.
- `Detector.referral(command)` learns the address from a server's `XFR ...
  host:port` or `RNG ... host:port`.
- Linear: `decide` is called once per delivery while a flow is undecided; it
  keeps each flow's first HEAD_BYTES per side as they arrive and reads only the
  deliveries added since its last call (a first line sent one byte per segment
  once cost a rescan of every earlier segment per segment: 100x a normal flow).
"""

from __future__ import annotations

import ipaddress
import re
import struct
from typing import NamedTuple

from analyzer.msnp import C2S
from analyzer.msnp.direction import side_of_line
from analyzer.msnp.msnftp import looks_like_msnftp
from analyzer.msnp.facts import Referral
from analyzer.msnp.tables import KNOWN_COMMANDS

class Early(NamedTuple):
    """What a flow delivered, or what went wrong in it, while the detector had not yet decided.

    The tracker (`tcp.py`) holds these in `flow.early` and replays them into the
    connection once the flow is accepted; the detector reads the delivered bytes.
    """
    index: int                  # which half of the flow (0: the side first seen)
    ts: float | None
    data: bytes | None = None   # bytes delivered in order; None for an anomaly
    anomaly: str | None = None  # its name: "tcp.gap" (`size` bytes missing), "tcp.retransmission", ...
    detail: str | None = None
    offset: int | None = None
    size: int = 0


MSNP_PORT = 1863
HEAD_BYTES = 1024           # the first line must end within this many bytes
DECIDE_BYTES = 4096         # give up waiting for a line end after this many bytes

_HEAD = re.compile(rb"[A-Z0-9]{3}[ \t\r\n]")
# Codes that in MSNP are followed by a TrID, but that open other protocols' lines too.
_AMBIGUOUS = frozenset({b"GET", b"PUT", b"DEL"})


def first_line(data: bytes):
    """Tokens of the first line, None when it has not ended yet, [] when it is not a text line."""
    nl = data.find(b"\n", 0, HEAD_BYTES)
    if nl < 0:
        if len(data) >= 4 and not _HEAD.match(data):
            return []
        return None if len(data) < HEAD_BYTES else []
    return data[:nl].rstrip(b"\r").split()


def looks_like_msnp(data: bytes) -> bool | None:
    """True if the stream starts with an MSNP command line, False if not, None: need more bytes."""
    tokens = first_line(data)
    if tokens is None:
        return None
    if not tokens or any(t.startswith(b"HTTP/") for t in tokens):
        return False
    code = tokens[0]
    if code in KNOWN_COMMANDS:
        if code in _AMBIGUOUS:
            return len(tokens) > 1 and tokens[1].isdigit()
        return True
    # A numeric error answers a TrID: `217 5`.
    return len(code) == 3 and code.isdigit() and len(tokens) > 1 and tokens[1].isdigit()


def side_from_content(data: bytes) -> str | None:
    """Who sent a stream that starts with `data`: C2S, S2C, or None when its first line cannot tell."""
    tokens = first_line(data)
    return side_of_line(tokens) if tokens else None


MAX_ENDPOINTS = 10_000  # server addresses learned from XFR/RNG lines (a real service has a few hundred)


class Detector:
    def __init__(self, ports: frozenset[int] = frozenset({MSNP_PORT})) -> None:
        self.ports = set(ports)                       # always MSNP, server side
        self.endpoints: set[tuple[bytes, int]] = set()  # (packed ip, port) named by XFR/RNG
        self.referral_ports: set[int] = set()
        self.endpoints_dropped = 0   # referral addresses not learned past MAX_ENDPOINTS
        self._packed: dict[str, bytes] = {}   # a referral's host as the flow keys hold it (b"": a name)
        # Undecided flows: id(flow) -> [flow, head of side 0, head of side 1, first side, deliveries read].
        self._heads: dict[int, list] = {}

    def referral(self, referral: Referral) -> None:
        """Learn the `host:port` a server's XFR or RNG points the client to (at most MAX_ENDPOINTS:
        past them new addresses are counted in `endpoints_dropped`, their ports still learned)."""
        address = referral.address
        if address is None:
            return
        host = address.host
        packed = self._packed.get(host)
        if packed is None:   # every XFR/RNG names one of a few servers: each parsed once
            try:
                packed = ipaddress.ip_address(host).packed
            except ValueError:
                packed = b""   # a host name: only its port can be matched
            if len(self._packed) >= MAX_ENDPOINTS:
                self._packed.clear()
            self._packed[host] = packed
        if packed:
            endpoint = (packed, address.port)
            if len(self.endpoints) < MAX_ENDPOINTS or endpoint in self.endpoints:
                self.endpoints.add(endpoint)
            else:
                self.endpoints_dropped += 1
        self.referral_ports.add(address.port)

    def server_by_address(self, key: bytes) -> int | None:
        """0 or 1: which end of the flow keyed `key` is a known MSNP server (by address or port)."""
        n = (len(key) - 4) // 2
        pa, pb = struct.unpack_from(">HH", key, 2 * n)
        ia, ib = key[:n], key[n:2 * n]
        if (ib, pb) in self.endpoints:
            return 1
        if (ia, pa) in self.endpoints:
            return 0
        if pb in self.ports and pa not in self.ports:
            return 1
        if pa in self.ports and pb not in self.ports:
            return 0
        return None

    def decide(self, tracker, flow, final: bool) -> None:
        state = self._heads.get(id(flow))
        if state is None or state[0] is not flow:
            state = self._heads[id(flow)] = [flow, bytearray(), bytearray(), None, 0]
        early = flow.early
        for k in range(state[4], len(early)):
            item = early[k]
            if item.data:
                index = item.index
                if state[3] is None:
                    state[3] = index
                head = state[1 + index]
                if len(head) < HEAD_BYTES:
                    head += item.data[:HEAD_BYTES - len(head)]
        state[4] = len(early)
        first = state[3]
        if first is None:
            if final:
                del self._heads[id(flow)]
                tracker.reject(flow)
            return
        server = self.server_by_address(flow.keys[0])
        if server is None and not final and flow.early_bytes < DECIDE_BYTES:
            head = state[1 + first]
            if len(head) < HEAD_BYTES and 10 not in head and (len(head) < 4 or _HEAD.match(head)):
                return  # looks_like_msnp would say "need more bytes": spare the copies
        heads = [bytes(state[1]), bytes(state[2])]
        if looks_like_msnftp(first_line(heads[first]) or []):
            # MSNFTP (the MSNP2-8 file transfer) opens with `VER MSNFTP` from the receiver,
            # which would otherwise pass for an MSNP VER: decode it as what it is.
            del self._heads[id(flow)]
            tracker.accept(flow, self.ftp_client_index(flow, heads, first), protocol="msnftp")
            return
        if server is None:
            verdict = looks_like_msnp(heads[first])
            if verdict is None and not final and flow.early_bytes < DECIDE_BYTES:
                return
            if not verdict:
                del self._heads[id(flow)]
                tracker.reject(flow)
                return
        del self._heads[id(flow)]
        tracker.accept(flow, self.client_index(flow, heads, first, server))

    @staticmethod
    def ftp_client_index(flow, heads, first: int) -> int:
        """The MSNFTP receiver connects: the SYN's side, else the side that sent USR/TFR, else the first."""
        if flow.client_hint is not None:
            return flow.client_hint
        for index in (0, 1):
            for line in heads[index].split(b"\n")[:4]:
                code = line[:3]
                if code in (b"USR", b"TFR"):
                    return index
                if code == b"FIL":
                    return 1 - index
        return first

    def client_index(self, flow, heads, first: int, server: int | None) -> int:
        if flow.client_hint is not None:
            return flow.client_hint
        if server is not None:
            return 1 - server
        for index in (first, 1 - first):
            said = side_from_content(heads[index])
            if said is not None:
                return index if said == C2S else 1 - index
        n = (len(flow.keys[0]) - 4) // 2
        pa, pb = struct.unpack_from(">HH", flow.keys[0], 2 * n)
        if pa in self.referral_ports and pb not in self.referral_ports:
            return 1
        if pb in self.referral_ports and pa not in self.referral_ports:
            return 0
        if pa != pb:
            return 0 if pa > pb else 1
        return first  # an MSNP client speaks first
