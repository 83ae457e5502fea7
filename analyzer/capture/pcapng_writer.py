"""Writing a pcapng of a live session: synthesised TCP packets around the real bytes.

The proxy does not see packets, only each side's byte stream, so the recording
is synthesised: per connection a SYN / SYN-ACK / ACK handshake, the data in
segments (sequence and acknowledgement numbers advancing with the bytes), and a
FIN (or RST) per side at the end, in IPv4 or IPv6 over Ethernet
(LINKTYPE_ETHERNET), with correct IP and TCP checksums and the real time each
chunk was forwarded. Wireshark, tshark and scapy's `RawPcapNgReader` read it.

Each block is written with one `write` and flushed at once, so a proxy that
dies leaves a file that reads up to its last packet.

Contract: `PcapngWriter(file)` writes the section and interface headers;
`TcpRecorder(writer, client, server)` records one connection; nothing here
raises on data (only the file's own `OSError`s propagate).
"""

from __future__ import annotations

import ipaddress
import struct
import time
from typing import BinaryIO

LINKTYPE_ETHERNET = 1
SNAPLEN = 262144
SEGMENT = 16384  # payload bytes per synthesised segment (fits any IPv4 packet)

_SHB, _IDB, _EPB = 0x0A0D0D0A, 0x00000001, 0x00000006
_CLIENT_MAC = bytes.fromhex("02000000c11e")
_SERVER_MAC = bytes.fromhex("020000005e7f")
SYN, ACK, FIN, RST, PSH = 0x02, 0x10, 0x01, 0x04, 0x08


def _pad(data: bytes) -> bytes:
    return data + b"\0" * (-len(data) % 4)


def _option(code: int, value: bytes) -> bytes:
    return struct.pack("<HH", code, len(value)) + _pad(value)


def _block(kind: int, body: bytes) -> bytes:
    total = 12 + len(body)
    return struct.pack("<II", kind, total) + body + struct.pack("<I", total)


def inet_checksum(data: bytes) -> int:
    """The Internet checksum (RFC 1071) of IP headers and TCP segments."""
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


class PcapngWriter:
    """A pcapng section with one Ethernet interface; `packet()` appends an EPB."""

    def __init__(self, out: BinaryIO, application: str = "msnp-analyzer proxy") -> None:
        self.out = out
        shb = struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1) + _option(4, application.encode()) + _option(0, b"")
        idb = struct.pack("<HHI", LINKTYPE_ETHERNET, 0, SNAPLEN) + _option(2, b"msnp-proxy") \
            + _option(9, bytes([6])) + _option(0, b"")
        self._write(_block(_SHB, shb) + _block(_IDB, idb))
        self.packets = 0

    def packet(self, frame: bytes, ts: float | None = None) -> None:
        micros = int((time.time() if ts is None else ts) * 1_000_000)
        body = struct.pack("<IIIII", 0, micros >> 32, micros & 0xFFFFFFFF, len(frame), len(frame)) + _pad(frame)
        self._write(_block(_EPB, body))
        self.packets += 1

    def _write(self, data: bytes) -> None:
        self.out.write(data)
        self.out.flush()

    def close(self) -> None:
        self.out.close()


class TcpRecorder:
    """One TCP connection, as seen between `client` and `server` ((ip, port) pairs)."""

    def __init__(self, writer: PcapngWriter, client: tuple[str, int], server: tuple[str, int],
                 isn: tuple[int, int] = (0x1000, 0x8000)) -> None:
        self.writer = writer
        self.ends = {"c2s": (ipaddress.ip_address(client[0]), client[1]),
                     "s2c": (ipaddress.ip_address(server[0]), server[1])}
        if self.ends["c2s"][0].version != self.ends["s2c"][0].version:
            # One family per connection: map an IPv4 peer into IPv6 if they differ.
            self.ends = {k: (_as_v6(ip), port) for k, (ip, port) in self.ends.items()}
        self.seq = {"c2s": isn[0], "s2c": isn[1]}
        self.fin = {"c2s": False, "s2c": False}
        self.ip_id = 0
        self.closed = False

    def open(self, ts: float | None = None) -> None:
        """The three-way handshake."""
        self._segment("c2s", SYN, b"", ts, ack=False)
        self.seq["c2s"] += 1
        self._segment("s2c", SYN | ACK, b"", ts)
        self.seq["s2c"] += 1
        self._segment("c2s", ACK, b"", ts)

    def data(self, direction: str, data: bytes, ts: float | None = None) -> None:
        if self.closed or self.fin[direction]:
            return
        for i in range(0, len(data), SEGMENT):
            piece = data[i:i + SEGMENT]
            self._segment(direction, PSH | ACK, piece, ts)
            self.seq[direction] = (self.seq[direction] + len(piece)) & 0xFFFFFFFF

    def end(self, direction: str, ts: float | None = None) -> None:
        """`direction`'s sender closed its side (FIN), acknowledged by the other."""
        if self.closed or self.fin[direction]:
            return
        self._segment(direction, FIN | ACK, b"", ts)
        self.seq[direction] = (self.seq[direction] + 1) & 0xFFFFFFFF
        self.fin[direction] = True
        self._segment(_other(direction), ACK, b"", ts)
        if all(self.fin.values()):
            self.closed = True

    def reset(self, direction: str, ts: float | None = None) -> None:
        """`direction`'s sender reset the connection."""
        if self.closed:
            return
        self._segment(direction, RST | ACK, b"", ts)
        self.closed = True

    def _segment(self, direction: str, flags: int, payload: bytes, ts, ack: bool = True) -> None:
        (src, sport), (dst, dport) = self.ends[direction], self.ends[_other(direction)]
        acknum = self.seq[_other(direction)] if ack else 0
        tcp = struct.pack("!HHIIBBHHH", sport, dport, self.seq[direction], acknum, 5 << 4, flags,
                          65535, 0, 0) + payload
        if src.version == 4:
            pseudo = src.packed + dst.packed + struct.pack("!BBH", 0, 6, len(tcp))
        else:
            pseudo = src.packed + dst.packed + struct.pack("!IxxxB", len(tcp), 6)
        tcp = tcp[:16] + struct.pack("!H", inet_checksum(pseudo + tcp)) + tcp[18:]
        if src.version == 4:
            self.ip_id = (self.ip_id + 1) & 0xFFFF
            ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), self.ip_id, 0x4000, 64, 6, 0,
                             src.packed, dst.packed)
            ip = ip[:10] + struct.pack("!H", inet_checksum(ip)) + ip[12:]
            ethertype = 0x0800
        else:
            ip = struct.pack("!IHBB16s16s", 6 << 28, len(tcp), 6, 64, src.packed, dst.packed)
            ethertype = 0x86DD
        macs = (_SERVER_MAC + _CLIENT_MAC) if direction == "c2s" else (_CLIENT_MAC + _SERVER_MAC)
        self.writer.packet(macs + struct.pack("!H", ethertype) + ip + tcp, ts)


def _other(direction: str) -> str:
    return "s2c" if direction == "c2s" else "c2s"


def _as_v6(ip):
    return ip if ip.version == 6 else ipaddress.IPv6Address(f"::ffff:{ip}")
