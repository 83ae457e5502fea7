"""Test-only helper: the MSNP byte streams inside the real captures.

The product's pcap reader lives elsewhere (analyzer/capture/); this helper
exists so the codec can be checked against real traffic independently of it.
It uses scapy's `rdpcap`, which is fine for two small files in tests and stays
out of the product path.

Each TCP connection on port 1863 becomes a list of `Chunk`s in capture order
(retransmitted or overlapping bytes are dropped, so each direction is its
byte stream exactly once). The TCP payload length comes from the IP total
length, not the frame length: short Ethernet frames carry padding.
"""

from __future__ import annotations

from pathlib import Path

from analyzer.msnp import C2S, S2C
from analyzer.msnp.transcript import Chunk

REAL_CAPTURES = Path(__file__).resolve().parents[1].parent / "shared" / "captures-real"
MSNP_PORT = 1863


def _payload(pkt) -> bytes:
    from scapy.layers.inet import IP, TCP
    ip, tcp = pkt[IP], pkt[TCP]
    size = ip.len - ip.ihl * 4 - tcp.dataofs * 4
    return bytes(tcp.payload)[:max(size, 0)]


def capture_chunks(name: str) -> list[Chunk]:
    """Every MSNP payload chunk of capture `name`, labelled per connection, in capture order."""
    from scapy.layers.inet import IP, TCP
    from scapy.utils import rdpcap
    chunks: list[Chunk] = []
    next_seq: dict[tuple, int] = {}
    for pkt in rdpcap(str(REAL_CAPTURES / name)):
        if IP not in pkt or TCP not in pkt:
            continue
        ip, tcp = pkt[IP], pkt[TCP]
        if MSNP_PORT not in (tcp.sport, tcp.dport):
            continue
        data = _payload(pkt)
        flow = (ip.src, tcp.sport, ip.dst, tcp.dport)
        if tcp.flags & 0x02:  # SYN: the stream starts at seq + 1
            next_seq[flow] = (tcp.seq + 1) & 0xFFFFFFFF
            continue
        if not data:
            continue
        seq = tcp.seq
        expected = next_seq.get(flow)
        if expected is not None:
            skip = (expected - seq) & 0xFFFFFFFF
            if skip and skip < 0x80000000:  # retransmission or overlap
                if skip >= len(data):
                    continue
                data, seq = data[skip:], expected
        next_seq[flow] = (seq + len(data)) & 0xFFFFFFFF
        if tcp.dport == MSNP_PORT:
            direction, client = C2S, (ip.src, tcp.sport)
        else:
            direction, client = S2C, (ip.dst, tcp.dport)
        chunks.append(Chunk(direction, data, float(pkt.time), f"{client[0]}:{client[1]}"))
    return chunks


def capture_streams(name: str) -> dict[str, dict[str, bytes]]:
    """conn label -> {direction: the whole byte stream of that direction}."""
    streams: dict[str, dict[str, bytes]] = {}
    for chunk in capture_chunks(name):
        per = streams.setdefault(chunk.conn, {C2S: b"", S2C: b""})
        per[chunk.direction] += chunk.data
    return streams


def decode(chunks: list[Chunk], limits=None, version: int | None = None):
    """Run chunks through one `Connection` per label, close them; returns (events, connections).

    `events` is a list of (conn label, event) in the order the codec produced them.
    """
    from analyzer.analysis.connection import Connection
    conns: dict = {}
    events: list = []
    last_ts = None
    for chunk in chunks:
        label = chunk.conn or "1"
        conn = conns.get(label)
        if conn is None:
            conn = conns[label] = Connection(label, limits=limits, version=version)
        events += [(label, e) for e in conn.feed(chunk.direction, chunk.data, chunk.ts)]
        last_ts = chunk.ts if chunk.ts is not None else last_ts
    for label, conn in conns.items():
        events += [(label, e) for e in conn.close(last_ts)]
    return events, conns
