"""Generate the sample captures in captures/ from the scripted sessions (captures/sessions.py).

    python3 captures/make_pcaps.py [OUTDIR]      (default: the directory of this script)

Each session becomes one capture of real-looking TCP: per connection a
three-way handshake, the session's bytes in segments of at most one MSS with
an ACK from the peer after each, and a FIN exchange at the end; realistic
timestamps (the session's times from an epoch base), Ethernet/IPv4 with
loopback addresses: the DS on 127.0.0.1:1863, the NS and switchboards on the
addresses the DS's `XFR ... NS` and the NS's `XFR ... SB` / `RNG` lines name.
The output is deterministic (fixed sequence numbers, IP ids and times), so the
tests can check that the committed files are what this script makes.
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
if str(HERE.parent) not in sys.path:
    sys.path.insert(0, str(HERE.parent))

from scapy.layers.inet import IP, TCP  # noqa: E402
from scapy.layers.l2 import Ether  # noqa: E402
from scapy.packet import Raw  # noqa: E402
from scapy.utils import PcapNgWriter, PcapWriter  # noqa: E402

from analyzer.msnp import C2S  # noqa: E402
from captures.sessions import CONNECTIONS, SESSIONS  # noqa: E402

EPOCH = 1_136_116_800.0    # 2006-01-01T12:00:00Z: the era of these clients
MSS = 1460
CLIENT_MAC, SERVER_MAC = "00:16:3e:00:00:01", "00:16:3e:00:00:02"

# sample file -> (session name, pcapng?)
SAMPLES = {
    "msnp8_login_chat.pcap": ("msnp8", False),     # DS -> NS -> two switchboards, MSNP8 (TWN)
    "msnp2_login_chat.pcap": ("msnp2", False),     # MD5 login era
    "msnp12_login_chat.pcap": ("msnp12", False),
    "msnp15_login_chat.pcap": ("msnp15", False),   # SSO login
    "msnp18_login_chat.pcapng": ("msnp18", True),  # endpoints with machine GUIDs; pcapng on purpose
    "msnp8_anomalies.pcap": ("anomalies", False),  # each white space, ordering and interleaving anomaly
}


def _split(addr: str) -> tuple[str, int]:
    host, port = addr.rsplit(":", 1)
    return host, int(port)


class _Conn:
    def __init__(self, index: int, client: str, server: str) -> None:
        self.client, self.server = _split(client), _split(server)
        self.seq = {C2S: 0x10000000 + index * 0x01000000, "s2c": 0x70000000 + index * 0x01000000}
        self.ip_id = {C2S: 1000 * (index + 1), "s2c": 1000 * (index + 1) + 500}

    def packet(self, direction: str, ts: float, flags: str, data: bytes = b"", consume: int = 0):
        src, dst = (self.client, self.server) if direction == C2S else (self.server, self.client)
        smac, dmac = (CLIENT_MAC, SERVER_MAC) if direction == C2S else (SERVER_MAC, CLIENT_MAC)
        other = "s2c" if direction == C2S else C2S
        ack = self.seq[other] if "A" in flags else 0
        self.ip_id[direction] += 1
        pkt = (Ether(src=smac, dst=dmac)
               / IP(src=src[0], dst=dst[0], id=self.ip_id[direction] & 0xFFFF, ttl=128, flags="DF")
               / TCP(sport=src[1], dport=dst[1], seq=self.seq[direction], ack=ack, flags=flags, window=64240))
        if data:
            pkt = pkt / Raw(data)
        self.seq[direction] = (self.seq[direction] + len(data) + consume) & 0xFFFFFFFF
        pkt.time = EPOCH + ts
        return pkt


def session_packets(name: str) -> list:
    return chunk_packets(SESSIONS[name], CONNECTIONS[name])


def chunk_packets(chunks: list, connections: dict) -> list:
    """Packets for `chunks` (transcript Chunks labelled by connection), `connections[label]` =
    (client, server) addresses: handshake, MSS-sized segments each ACKed, FIN exchange."""
    conns: dict[str, _Conn] = {}
    last: dict[str, float] = {}
    events: list[tuple[float, int, object]] = []   # (time, order, thunk) built in time order
    order = 0
    for chunk in chunks:
        last[chunk.conn] = chunk.ts
    for chunk in chunks:
        conn = conns.get(chunk.conn)
        if conn is None:
            client, server = connections[chunk.conn]
            conn = conns[chunk.conn] = _Conn(len(conns), client, server)
            t = chunk.ts - 0.03
            for direction, flags, dt in ((C2S, "S", 0.0), ("s2c", "SA", 0.01), (C2S, "A", 0.02)):
                events.append((t + dt, order, (conn, direction, flags, b"", 1 if "S" in flags else 0)))
                order += 1
        other = "s2c" if chunk.direction == C2S else C2S
        for i in range(0, len(chunk.data), MSS):
            piece = chunk.data[i:i + MSS]
            events.append((chunk.ts, order, (conn, chunk.direction, "PA", piece, 0)))
            order += 1
        events.append((chunk.ts + 0.0002, order, (conn, other, "A", b"", 0)))
        order += 1
    for label, conn in conns.items():
        t = last[label] + 0.05
        for direction, flags, dt in ((C2S, "FA", 0.0), ("s2c", "FA", 0.001), (C2S, "A", 0.002)):
            events.append((t + dt, order, (conn, direction, flags, b"", 1 if "F" in flags else 0)))
            order += 1
    # Sequence numbers are assigned in time order, so the file is what the wire would show.
    events.sort(key=lambda e: (e[0], e[1]))
    return [conn.packet(direction, ts, flags, data, consume)
            for ts, _, (conn, direction, flags, data, consume) in events]


def write(path: Path, packets: list, pcapng: bool) -> None:
    if pcapng:
        writer = PcapNgWriter(str(path))
    else:
        writer = PcapWriter(str(path), linktype=1, sync=False)
    for pkt in packets:
        writer.write(pkt)
    writer.close()


def main(outdir: Path = HERE) -> list[Path]:
    outdir.mkdir(parents=True, exist_ok=True)
    written = []
    for filename, (session, pcapng) in SAMPLES.items():
        path = outdir / filename
        write(path, session_packets(session), pcapng)
        written.append(path)
    return written


if __name__ == "__main__":
    for p in main(Path(sys.argv[1]) if len(sys.argv) > 1 else HERE):
        print(p)
