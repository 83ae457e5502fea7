"""Test helper: rewrite a capture in the ways TCP and capture tools really differ.

Each variant keeps every byte of every TCP stream and changes only how the
bytes are carried: segment sizes, packet order, retransmissions, the
handshake, the link layer, the IP version, the file format. The analyzer must
find the same MSNP command sequences in each (tests/test_pcap_variants.py).

Built with scapy (only in tests: the product reads captures without it).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from scapy.layers.inet import IP, TCP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import CookedLinux, Dot1AD, Dot1Q, Ether
from scapy.packet import Raw
from scapy.utils import PcapNgWriter, RawPcapReader, RawPcapWriter

try:
    from scapy.layers.l2 import CookedLinuxV2
except ImportError:  # pragma: no cover - older scapy
    CookedLinuxV2 = None


@dataclass(frozen=True)
class Seg:
    """One TCP segment, link layer stripped."""
    ts: float
    src: str
    dst: str
    sport: int
    dport: int
    seq: int
    ack: int
    flags: str
    data: bytes

    @property
    def flow(self):
        return (self.src, self.sport, self.dst, self.dport)


def read(path: Path) -> list[Seg]:
    """The TCP segments of an Ethernet capture, payloads cut at the IP length (no padding)."""
    out = []
    for raw, meta in RawPcapReader(str(path)):
        pkt = Ether(raw)
        if IP not in pkt or TCP not in pkt:
            continue
        ip, tcp = pkt[IP], pkt[TCP]
        start = ip.ihl * 4 + tcp.dataofs * 4
        data = bytes(ip)[start:ip.len]
        out.append(Seg(meta.sec + meta.usec / 1e6, ip.src, ip.dst, tcp.sport, tcp.dport,
                       tcp.seq, tcp.ack, str(tcp.flags), data))
    return out


# -- variants of the segment list ---------------------------------------------------

def cut(segs: list[Seg], size: int) -> list[Seg]:
    """Every payload cut into pieces of `size` bytes (the last piece shorter)."""
    out = []
    for s in segs:
        if len(s.data) <= size:
            out.append(s)
            continue
        for i in range(0, len(s.data), size):
            last = i + size >= len(s.data)
            flags = s.flags if last else s.flags.replace("F", "").replace("P", "")
            out.append(replace(s, seq=(s.seq + i) & 0xFFFFFFFF, data=s.data[i:i + size], flags=flags))
    return out


def merge(segs: list[Seg], limit: int) -> list[Seg]:
    """Consecutive contiguous segments of one direction merged, up to `limit` bytes each."""
    out: list[Seg] = []
    open_by_flow: dict = {}   # flow -> index in out of the segment still growing
    for s in segs:
        i = open_by_flow.get(s.flow)
        if i is not None and s.data and "S" not in s.flags and "R" not in s.flags:
            m = out[i]
            if (m.seq + len(m.data)) & 0xFFFFFFFF == s.seq and len(m.data) + len(s.data) <= limit \
                    and "F" not in m.flags:
                out[i] = replace(m, data=m.data + s.data, ack=s.ack, flags=s.flags)
                continue
        out.append(s)
        if s.data:
            open_by_flow[s.flow] = len(out) - 1
        # A packet of the other direction closes the merge only for that direction.
    return out


def reorder(segs: list[Seg], within: float = 2.0) -> list[Seg]:
    """Pairs of consecutive data segments of one direction swapped in the file.

    Only segments sent within `within` seconds of each other swap: a network
    reorders what is in flight together, not a message with one sent a minute
    later (the reassembler gives up on a hole after --reorder-timeout).
    Timestamps stay with the file positions: a capture's clock runs forward.
    """
    out = list(segs)
    positions: dict = {}
    for i, s in enumerate(segs):
        if s.data:
            positions.setdefault(s.flow, []).append(i)
    for idx in positions.values():
        for a, b in zip(idx[0::2], idx[1::2]):
            if segs[b].ts - segs[a].ts <= within:
                out[a], out[b] = out[b], out[a]
    return [replace(s, ts=segs[i].ts) for i, s in enumerate(out)]


def swaps(original: list[Seg], variant: list[Seg]) -> int:
    """How many file positions carry a different segment (to show a variant changed something)."""
    return sum(1 for a, b in zip(original, variant) if (a.seq, a.flow) != (b.seq, b.flow))


def retransmit(segs: list[Seg]) -> list[Seg]:
    """After each data segment, a retransmission whose boundaries straddle it and its predecessor."""
    out = []
    last: dict = {}
    for s in segs:
        out.append(s)
        if not s.data:
            continue
        prev = last.get(s.flow)
        last[s.flow] = s
        if prev is None or (prev.seq + len(prev.data)) & 0xFFFFFFFF != s.seq:
            continue
        half_prev = len(prev.data) // 2
        data = prev.data[half_prev:] + s.data[:max(1, len(s.data) // 2)]
        out.append(replace(s, ts=s.ts + 0.0001, seq=(prev.seq + half_prev) & 0xFFFFFFFF,
                           data=data, flags="PA"))
    return out


def strip_handshake(segs: list[Seg]) -> list[Seg]:
    """No SYN, no SYN/ACK: the capture starts mid-session."""
    return [s for s in segs if "S" not in s.flags]


# -- writing ------------------------------------------------------------------------

def _v6(addr: str) -> str:
    a, b, c, d = (int(x) for x in addr.split("."))
    return f"fd00::{a:x}{b:02x}:{c:x}{d:02x}"


def _ip_tcp(s: Seg, ipv6: bool):
    tcp = TCP(sport=s.sport, dport=s.dport, seq=s.seq, ack=s.ack, flags=s.flags, window=65535)
    ip = IPv6(src=_v6(s.src), dst=_v6(s.dst)) if ipv6 else IP(src=s.src, dst=s.dst)
    return ip / tcp / Raw(s.data) if s.data else ip / tcp


def write(segs: list[Seg], path: Path, *, link: str = "ether", ipv6: bool = False,
          pcapng: bool = False, nano: bool = False) -> Path:
    """Write segments as a capture: link is ether, vlan, qinq, sll, sll2, null, loop or raw."""
    pkts = []
    for s in segs:
        l3 = _ip_tcp(s, ipv6)
        etype = 0x86DD if ipv6 else 0x0800
        if link == "ether":
            pkt = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") / l3
        elif link == "vlan":
            pkt = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") / Dot1Q(vlan=42) / l3
        elif link == "qinq":
            pkt = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") / Dot1AD(vlan=7) / Dot1Q(vlan=42) / l3
        elif link == "sll":
            pkt = CookedLinux(pkttype=0, lladdrtype=1, lladdrlen=6, src=b"\x02\0\0\0\0\x01\0\0", proto=etype) / l3
        elif link == "sll2":
            pkt = CookedLinuxV2(proto=etype, ifindex=2, pkttype=0, lladdrtype=1, lladdrlen=6,
                                src=b"\x02\0\0\0\0\x01\0\0") / l3
        elif link in ("null", "loop", "raw"):
            pkt = l3
        else:
            raise ValueError(link)
        pkt.time = s.ts
        pkts.append(pkt)
    linktype = {"ether": 1, "vlan": 1, "qinq": 1, "sll": 113, "sll2": 276, "raw": 101,
                "null": 0, "loop": 108}[link]
    prefix = b""
    if link in ("null", "loop"):
        # The family word before each IP packet: host order for NULL, network order for LOOP.
        prefix = (30 if ipv6 else 2).to_bytes(4, "little" if link == "null" else "big")
    if pcapng:
        writer = PcapNgWriter(str(path))
        writer.linktype = linktype
        writer._write_header(None)  # section header and interface 0 with our link type
    else:
        writer = RawPcapWriter(str(path), linktype=linktype, nano=nano, sync=False)
        writer.linktype = linktype  # scapy takes 0 (NULL) for "unknown"
    for pkt in pkts:
        data = prefix + bytes(pkt)
        if not pcapng and not writer.header_present:
            writer.write_header(data)
        sec = int(pkt.time)
        frac = round((pkt.time - sec) * (1e9 if nano else 1e6))
        if pcapng:
            writer._write_packet(data, linktype, sec=float(pkt.time))
        else:
            writer.write_packet(data, sec=sec, usec=frac)
    writer.close()
    return path


# -- reading back ---------------------------------------------------------------------

class Collector:
    """A sink that keeps each stream's commands per direction, and every anomaly."""

    def __init__(self) -> None:
        self.lines: dict[str, dict[str, list[bytes]]] = {}
        self.anomalies: list = []
        self.streams: list = []

    def event(self, conn, event) -> None:
        from analyzer.msnp import Anomaly, Command
        if type(event) is Command:
            by_dir = self.lines.setdefault(conn.id, {"c2s": [], "s2c": []})
            by_dir[event.direction].append(event.raw)
        elif type(event) is Anomaly:
            self.anomalies.append((conn.id if conn is not None else None, event))

    def stream(self, conn) -> None:
        self.streams.append(conn)

    def close(self) -> None:
        pass

    def signature(self) -> list:
        """Every stream's (client commands, server commands), in a canonical order."""
        return sorted((tuple(d["c2s"]), tuple(d["s2c"])) for d in self.lines.values())

    def names(self) -> set[str]:
        return {a.name for _, a in self.anomalies}


def analyze(*paths, **options):
    """Run the analyze pipeline on capture files; returns (analysis, collector)."""
    from analyzer.analysis.run import Analysis
    from analyzer.capture.files import analyze_file, open_captures
    from analyzer.capture.detect import Detector
    from analyzer.capture.tcp import DEFAULT_BUFFER, DEFAULT_IDLE_TIMEOUT, DEFAULT_REORDER_TIMEOUT
    collector = Collector()
    analysis = Analysis([collector])
    detector = Detector()
    opts = dict(buffer=DEFAULT_BUFFER, reorder_timeout=DEFAULT_REORDER_TIMEOUT,
                idle_timeout=DEFAULT_IDLE_TIMEOUT)
    opts.update(options)
    for capture in open_captures([str(p) for p in paths]):
        analyze_file(capture, analysis, detector, **opts)
    analysis.finish()
    return analysis, collector
