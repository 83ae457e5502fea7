"""pcapng blocks in, packets out: our own reader of the block structure (scapy opens the file).

Contract: `PcapngBlocks(f)` reads the file object `f` (plain or gzip'd, at any
position: it seeks to 0) block by block and `packets_from()` yields a `Packet`
(linktype, ts, data, record number, file offset) for every packet block:

- Enhanced Packet Blocks (6), the obsolete Packet Blocks (2) and Simple
  Packet Blocks (3), which carry no time: a simple packet gets the time of
  the packet before it in the file (0.0 before any), and the file gets one
  `capture.pcapng.no_timestamp` anomaly with their count.
- Section Header Blocks start a new section (its own byte order and
  interfaces); Interface Description Blocks give each interface its link
  type, snapshot length and time resolution and offset (`if_tsresol`,
  `if_tsoffset`). Every other block type (name resolution, statistics,
  decryption secrets, custom, types not yet defined) is skipped by its length.
- Never raises on data. A block whose length cannot be (under 12, not a
  multiple of 4, over MAX_BLOCK, or different at its end) stops reading with
  `capture.damaged`; a file that ends inside a block, or a gzip stream that
  breaks, with `capture.truncated`; a packet block that names an interface
  the section has not described, or whose captured length overruns its block,
  is counted (`bad_blocks`) and skipped. `anomalies` holds (name, offset,
  detail) for the caller to report; everything before the damage is yielded.
"""

from __future__ import annotations

import struct
import zlib
from typing import NamedTuple

SHB, IDB, PB, SPB, EPB = 0x0A0D0D0A, 1, 2, 3, 6
BYTE_ORDER_MAGIC = 0x1A2B3C4D
MAX_BLOCK = 64 * 1024 * 1024  # a block longer than this is corruption, not a packet
OPT_TSRESOL, OPT_TSOFFSET = 9, 14


class Packet(NamedTuple):
    linktype: int
    ts: float
    data: bytes
    number: int      # packet records read so far, this one included
    offset: int      # file offset of its block


class Interface(NamedTuple):
    linktype: int
    snaplen: int
    units: float     # time units per second
    offset: int      # seconds added to every time (if_tsoffset)


def _resolution(value: int) -> float:
    # if_tsresol: the high bit picks base 2 (else 10), the rest is the negative exponent.
    exponent = value & 0x7F
    return float(2 ** exponent) if value & 0x80 else float(10 ** exponent)


class PcapngBlocks:
    def __init__(self, f) -> None:
        self.f = f
        self.anomalies: list[tuple[str, int | None, str]] = []
        self.packets = 0
        self.position = 0
        self.simple_packets = 0
        self.bad_blocks = 0
        self.first_bad: tuple[int, str] | None = None

    def _read(self, n: int) -> bytes:
        try:
            return self.f.read(n)
        except (OSError, EOFError, zlib.error, ValueError) as exc:
            raise _Broken(f"{type(exc).__name__}: {exc}") from None

    def _bad(self, offset: int, why: str) -> None:
        self.bad_blocks += 1
        if self.first_bad is None:
            self.first_bad = (offset, why)

    def packets_from(self):
        """Yield every packet (see the module's contract)."""
        try:
            self.f.seek(0)
        except (OSError, ValueError):
            pass
        pos = 0
        endian = "<"
        interfaces: list[Interface] = []
        last_ts = 0.0
        try:
            while True:
                self.position = pos
                head = self._read(8)
                if not head:
                    return
                if len(head) < 8:
                    self._stop("capture.truncated", pos, f"the capture ends inside a block header "
                                                         f"({len(head)} of 8 bytes)")
                    return
                kind = struct.unpack_from(endian + "I", head)[0]
                if kind == SHB:
                    magic = self._read(4)
                    if len(magic) < 4:
                        self._stop("capture.truncated", pos, "the capture ends inside a section header")
                        return
                    if magic == struct.pack("<I", BYTE_ORDER_MAGIC):
                        endian = "<"
                    elif magic == struct.pack(">I", BYTE_ORDER_MAGIC):
                        endian = ">"
                    else:
                        self._stop("capture.damaged", pos, "a section header with no byte-order magic")
                        return
                    length = struct.unpack_from(endian + "I", head, 4)[0]
                    body = magic
                    need = length - 12 - 4
                else:
                    length = struct.unpack_from(endian + "I", head, 4)[0]
                    body = b""
                    need = length - 12
                if length < 12 or length % 4 or length > MAX_BLOCK or (kind == SHB and length < 28):
                    self._stop("capture.damaged", pos, f"block type {kind:#x} claims {length} bytes: "
                                                       "not a block length")
                    return
                rest = self._read(need + 4)
                if len(rest) < need + 4:
                    self._stop("capture.truncated", pos, f"the capture ends inside a block of {length} bytes "
                                                         f"({8 + len(body) + len(rest)} read)")
                    return
                body += rest[:need]
                if struct.unpack_from(endian + "I", rest, need)[0] != length:
                    self._stop("capture.damaged", pos, f"block type {kind:#x}: its lengths differ "
                                                       "(start and end)")
                    return
                block_at, pos = pos, pos + length
                if kind == SHB:
                    interfaces = []  # a new section describes its own interfaces
                elif kind == IDB:
                    interfaces.append(_interface(endian, body))
                elif kind in (EPB, PB, SPB):
                    self.packets += 1
                    packet = self._packet(kind, endian, body, interfaces, last_ts, block_at)
                    if packet is not None:
                        last_ts = packet.ts
                        yield packet
        except _Broken as exc:
            self._stop("capture.truncated", pos, f"the capture cannot be read past here ({exc})")

    def _packet(self, kind: int, endian: str, body: bytes, interfaces, last_ts: float, at: int):
        if kind == SPB:
            if len(body) < 4:
                self._bad(at, "a simple packet block too short for its length field")
                return None
            if not interfaces:
                self._bad(at, "a packet before any interface description")
                return None
            iface = interfaces[0]  # simple packets belong to the section's first interface
            wirelen = struct.unpack_from(endian + "I", body)[0]
            caplen = min(wirelen, len(body) - 4)
            if iface.snaplen:
                caplen = min(caplen, iface.snaplen)
            self.simple_packets += 1
            return Packet(iface.linktype, last_ts, body[4:4 + caplen], self.packets, at)
        if kind == EPB:
            if len(body) < 20:
                self._bad(at, "an enhanced packet block too short for its header")
                return None
            intid, hi, lo, caplen, _ = struct.unpack_from(endian + "5I", body)
        else:
            if len(body) < 20:
                self._bad(at, "a packet block too short for its header")
                return None
            intid, _, hi, lo, caplen, _ = struct.unpack_from(endian + "HH4I", body)
        if intid >= len(interfaces):
            self._bad(at, f"a packet on interface {intid}, which the section does not describe")
            return None
        if caplen > len(body) - 20:
            self._bad(at, f"a packet of {caplen} bytes in a block holding {len(body) - 20}")
            caplen = len(body) - 20
        iface = interfaces[intid]
        ts = ((hi << 32) | lo) / iface.units + iface.offset
        return Packet(iface.linktype, ts, body[20:20 + caplen], self.packets, at)

    def _stop(self, name: str, offset: int, detail: str) -> None:
        self.anomalies.append((name, offset, detail))


class _Broken(Exception):
    """The file object itself failed (a damaged gzip stream)."""


def _interface(endian: str, body: bytes) -> Interface:
    if len(body) < 8:
        return Interface(-1, 0, 1e6, 0)  # its packets go to the unknown-link path
    linktype, _, snaplen = struct.unpack_from(endian + "HHI", body)
    units, offset = 1e6, 0
    pos = 8
    while pos + 4 <= len(body):
        code, size = struct.unpack_from(endian + "HH", body, pos)
        value = body[pos + 4:pos + 4 + size]
        if code == 0 or len(value) < size:
            break
        if code == OPT_TSRESOL and size >= 1:
            units = _resolution(value[0])
        elif code == OPT_TSOFFSET and size >= 8:
            offset = struct.unpack_from(endian + "q", value)[0]
        pos += 4 + size + (-size % 4)
    return Interface(linktype, snaplen, units, offset)
