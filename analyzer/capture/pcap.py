"""Capture files in, TCP segments out: the pcap/pcapng boundary of the analyzer.

Contract:
- `CaptureFile(path)` opens a pcap or pcapng file (optionally gzip'd) with
  scapy's raw readers (`RawPcapReader` / `RawPcapNgReader`: no per-packet
  dissection). A missing file or one that is not a capture raises
  `CaptureError` with a one-line message.
- `CaptureFile.segments()` yields one tuple per TCP segment, in file order:
  `(ts, key, seq, ack, flags, payload)` where `key` is the packed
  `src ip + dst ip + src port + dst port` of the segment (12 bytes for IPv4,
  36 for IPv6; `split_key` turns it back into addresses). Everything that is
  not TCP over IPv4/IPv6 is skipped before anything is allocated for it.
- IP fragments of TCP are not reassembled (MSNP never needs it; a capture
  that holds them lost its MTU fight): they are counted and reported once per
  file as `capture.ip_fragment`; the bytes they carried become a `tcp.gap`.
- Pcap records that are empty or longer than the file's snapshot length
  (when that is a sane value) are reported once per file as
  `capture.bad_record` with their count; their contents are still decoded.
- The TCP payload length comes from the IP header, never from the frame
  length: short Ethernet frames carry padding that is not part of the stream.
- Damage is never an exception: a truncated or corrupt file yields every
  packet before the damage, then `CaptureFile.anomalies` holds a
  `capture.truncated` / `capture.damaged` anomaly saying where it stopped.
  Link types the fast decoder does not know are dissected by scapy (slow,
  reported once as `capture.fallback_dissection`), or skipped when scapy does
  not know them either (`capture.unknown_linktype`).

Classic pcap files (plain or gzip'd, either byte order, micro- or
nanosecond magic) are opened and read by our own code (`ClassicPcap` and the
record loop): scapy is not even imported for them (its import alone costs
about 40 MB and a second), and its per-record `read_packet` built a metadata
namedtuple per packet, a third of the whole budget on a large file. Anything
else (pcapng, a damaged header) is scapy's. pcapng goes through
`RawPcapNgReader` record by record (its blocks carry per-interface link types
and time resolutions).
"""

from __future__ import annotations

import ipaddress
import logging
import os
import socket
import struct

from analyzer.msnp import Anomaly

# Link-layer header types (https://www.tcpdump.org/linktypes.html).
LINKTYPE_NULL = 0
LINKTYPE_ETHERNET = 1
LINKTYPE_RAW = 101
LINKTYPE_LOOP = 108
LINKTYPE_LINUX_SLL = 113
LINKTYPE_LINUX_SLL2 = 276
LINKTYPE_IPV4 = 228
LINKTYPE_IPV6 = 229
# DLT_RAW's historical values on some BSDs (12, 14) appear in old files.
RAW_IP_LINKTYPES = frozenset({LINKTYPE_RAW, 12, 14, LINKTYPE_IPV4, LINKTYPE_IPV6})
KNOWN_LINKTYPES = frozenset({LINKTYPE_NULL, LINKTYPE_ETHERNET, LINKTYPE_LOOP,
                             LINKTYPE_LINUX_SLL, LINKTYPE_LINUX_SLL2}) | RAW_IP_LINKTYPES

ETH_IPV4, ETH_IPV6 = 0x0800, 0x86DD
VLAN_TAGS = frozenset({0x8100, 0x88A8, 0x9100, 0x9200})
IPPROTO_TCP = 6
# IPv6 extension headers we walk over to find TCP (fragments are not reassembled).
IPV6_EXTENSIONS = frozenset({0, 43, 60, 51})
IPV6_FRAGMENT = 44

MAX_RECORD = 256 * 1024 * 4  # a pcap record longer than this is corruption, not a packet
# A gzip'd capture is read up to this many times its own size (at least INFLATE_FLOOR):
# real captures deflate 2-20x, a crafted one 1,000x (1 MB to 1 GiB), and the cost must
# follow the file's size. Past the cap reading stops with `capture.inflate_limit`.
INFLATE_RATIO = 100
INFLATE_FLOOR = 64 * 1024 * 1024
FRAGMENT = ()  # decode_ip's answer for a TCP fragment (not None: the caller counts them)

_u16 = struct.Struct(">H").unpack_from
_tcp = struct.Struct(">HHIIH").unpack_from
# Ethernet type, IPv4 version/IHL, total length, fragment field, protocol, then TCP seq, ack,
# offset/flags (the addresses and ports, bytes 26-38, are sliced out as the flow key).
_ETH_IP4_TCP = struct.Struct(">12xHBxH2xHxB14xIIH").unpack_from


class CaptureError(Exception):
    """The file cannot be used at all (missing, not a capture): one line, exit 2."""


def split_key(key: bytes) -> tuple[str, int, str, int]:
    """`(src ip, src port, dst ip, dst port)` of a segment key, as text."""
    n = (len(key) - 4) // 2
    sport, dport = struct.unpack_from(">HH", key, 2 * n)
    if n == 4:   # dotted quad, as ipaddress writes it (a tenth of its time: once per flow)
        return (socket.inet_ntoa(key[:4]), sport, socket.inet_ntoa(key[4:8]), dport)
    return (str(ipaddress.ip_address(key[:n])), sport, str(ipaddress.ip_address(key[n:2 * n])), dport)


def reverse_key(key: bytes) -> bytes:
    n = (len(key) - 4) // 2
    return key[n:2 * n] + key[:n] + key[2 * n + 2:] + key[2 * n:2 * n + 2]


def decode_ip(data, o: int, end: int | None = None):
    """The TCP segment in the IP packet at `data[o:end]`: `(key, seq, ack, flags, payload)`,
    `FRAGMENT` for a fragment of a TCP datagram, or None (not TCP)."""
    if end is None:
        end = len(data)
    if o >= end:
        return None
    version = data[o] >> 4
    if version == 4:
        if end - o < 20 or data[o + 9] != IPPROTO_TCP:
            return None
        if _u16(data, o + 6)[0] & 0x3FFF:
            return FRAGMENT  # the TCP header may not even be here
        total = _u16(data, o + 2)[0]
        t = o + ((data[o] & 15) << 2)
        stop = o + total if total else end  # 0: TSO capture, length unknown
        addrs = data[o + 12:o + 20]
    elif version == 6:
        if end - o < 40:
            return None
        nh = data[o + 6]
        stop = o + 40 + _u16(data, o + 4)[0]
        addrs = data[o + 8:o + 40]
        t = o + 40
        while nh in IPV6_EXTENSIONS and t + 8 <= end:
            nh, t = data[t], t + ((data[t + 1] + 2) << 2 if nh == 51 else (data[t + 1] + 1) << 3)
        if nh != IPPROTO_TCP:
            return FRAGMENT if nh == IPV6_FRAGMENT else None
        if o + 40 == stop:
            return None  # jumbogram or empty
    else:
        return None
    if t + 20 > end:
        return None
    sport_dport = data[t:t + 4]
    _, _, seq, ack, offflags = _tcp(data, t)
    p = t + ((offflags >> 12) << 2)
    if stop > end:
        stop = end  # cut by the snap length: the missing bytes become a tcp.gap later
    return addrs + sport_dport, seq, ack, offflags & 0x3F, data[p:stop] if p < stop else b""


def link_offset(linktype: int, data) -> int:
    """Where the IP header starts in a frame of this link type, or -1 (not IP / unknown).
    A link layer that names the IP version (an EtherType, LINKTYPE_IPV4 and _IPV6) must find
    that version in the header's first nibble (Wireshark's "bogus IP version"): a frame
    whose EtherType says IPv4 over a version-6 header is not decoded as either. The core's
    `link_offset` (core/src/decode.rs) is the same rule."""
    n = len(data)
    if linktype == LINKTYPE_ETHERNET:
        o, etype = 14, (_u16(data, 12)[0] if n >= 14 else 0)
        while etype in VLAN_TAGS and o + 4 <= n:
            etype = _u16(data, o + 2)[0]
            o += 4
        return _announced(data, o, etype)
    if linktype in RAW_IP_LINKTYPES:
        if linktype == LINKTYPE_IPV4:
            return _announced(data, 0, ETH_IPV4)
        if linktype == LINKTYPE_IPV6:
            return _announced(data, 0, ETH_IPV6)
        return 0
    if linktype == LINKTYPE_LINUX_SLL:
        return _announced(data, 16, _u16(data, 14)[0]) if n >= 16 else -1
    if linktype == LINKTYPE_LINUX_SLL2:
        return _announced(data, 20, _u16(data, 0)[0]) if n >= 20 else -1
    if linktype in (LINKTYPE_NULL, LINKTYPE_LOOP):
        # The family is in host (NULL) or network (LOOP) byte order and its value
        # for IPv6 differs per OS: the IP version nibble is the reliable test.
        return 4 if n > 4 and data[4] >> 4 in (4, 6) else -1
    return -1


_VERSIONS = {ETH_IPV4: 4, ETH_IPV6: 6}


def _announced(data, o: int, etype: int, end: int | None = None) -> int:
    """`o` when `etype` names IPv4 or IPv6 and the header at `data[o]` (before `end`) is of
    that version, else -1."""
    want = _VERSIONS.get(etype)
    if want is None or o >= (len(data) if end is None else end) or data[o] >> 4 != want:
        return -1
    return o


class _WarningTrap(logging.Handler):
    """Collects scapy's reader warnings so damage is reported as an anomaly, not log noise."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


# The four classic pcap magics as they appear in the file: byte order (and nanoseconds).
_MAGICS = {b"\xd4\xc3\xb2\xa1": ("<", False), b"\xa1\xb2\xc3\xd4": (">", False),
           b"\x4d\x3c\xb2\xa1": ("<", True), b"\xa1\xb2\x3c\x4d": (">", True)}


class ClassicPcap:
    """A classic pcap file opened without scapy: its header fields and the file positioned
    at the first record (the attributes the record loop reads, as scapy's reader has them)."""

    def __init__(self, f, endian: str, nano: bool, snaplen: int, linktype: int) -> None:
        self.f, self.endian, self.nano, self.snaplen, self.linktype = f, endian, nano, snaplen, linktype

    @classmethod
    def open(cls, path: str) -> "ClassicPcap | None":
        """The file as a classic pcap, or None when it is something else (scapy then decides)."""
        import gzip
        f = open(path, "rb")
        try:
            if f.read(2) == b"\x1f\x8b":
                f.close()
                f = gzip.open(path, "rb")
            else:
                f.seek(0)
            header = f.read(24)
            known = _MAGICS.get(header[:4]) if len(header) == 24 else None
            if known is None:
                f.close()
                return None
            endian, nano = known
            snaplen, linktype = struct.unpack(endian + "II", header[16:24])
            return cls(f, endian, nano, snaplen, linktype)
        except (OSError, EOFError):   # a damaged gzip stream: scapy reports it as today
            f.close()
            return None

    def close(self) -> None:
        self.f.close()


class _CappedInflate:
    """A gzip stream that ends (reads return b"") once `cap` inflated bytes were read."""

    def __init__(self, f, cap: int) -> None:
        self._f = f
        self.cap = cap
        self.inflated = 0
        self.hit = False
        self.cut = False     # the gzip stream ended before its end-of-stream marker

    def read(self, size: int = -1) -> bytes:
        room = self.cap - self.inflated
        if room <= 0:
            self.hit = True
            return b""
        data = self._read(room if size is None or size < 0 else min(size, room))
        self.inflated += len(data)
        if self.inflated >= self.cap and self._read(1):
            self.hit = True
        return data

    def _read(self, size: int) -> bytes:
        """Up to `size` inflated bytes. A stream cut short reads as the end of the file after
        the last byte it unpacks (GzipFile.read raised EOFError and dropped what it had
        unpacked of that read): the record loop then reports the damage where it stops."""
        parts, got = [], 0
        while got < size and not self.cut:
            try:
                part = self._f.read1(size - got)
            except EOFError:
                self.cut = True
                break
            if not part:
                break
            parts.append(part)
            got += len(part)
        return b"".join(parts)

    def __getattr__(self, name):
        return getattr(self._f, name)


class CaptureFile:
    def __init__(self, path: str, inflate_ratio: int = INFLATE_RATIO) -> None:
        self.path = path     # how reports name the file (open_captures may set the name the user gave)
        self.source = path   # where it is read from
        if not os.path.exists(path):
            raise CaptureError(f"{path}: no such file")
        if os.path.isdir(path):
            raise CaptureError(f"{path}: is a directory")
        self.size = os.path.getsize(path)
        logger = logging.getLogger("scapy.runtime")
        self._trap = _WarningTrap()
        logger.addHandler(self._trap)
        self._propagate = logger.propagate
        logger.propagate = False
        try:
            classic = ClassicPcap.open(path)
        except OSError:
            classic = None   # unreadable: scapy's open below says why, as it always did
        try:
            if classic is not None:
                self.reader = classic
            else:
                from scapy.utils import RawPcapReader
                self.reader = RawPcapReader(path)
        except Exception as exc:  # noqa: BLE001 - scapy's own errors, OSError and EOFError
            self._untrap()
            reason = str(exc).strip() or "unreadable"
            if isinstance(exc, OSError):
                reason = exc.strerror or reason
            elif "No data" in reason:
                reason = "empty file"
            else:
                reason = "not a pcap or pcapng capture"
            raise CaptureError(f"{path}: {reason}") from None
        self.pcapng = classic is None and type(self.reader).__name__ == "RawPcapNgReader"
        self.format = "pcapng" if self.pcapng else "pcap"
        self.gzip = not hasattr(self.reader.f, "raw") and type(self.reader.f).__name__ == "GzipFile"
        self._inflate = None
        if self.gzip:
            self._inflate = _CappedInflate(self.reader.f, max(INFLATE_FLOOR, inflate_ratio * self.size))
            self.reader.f = self._inflate
        self.linktype = getattr(self.reader, "linktype", None)
        self.nano = bool(getattr(self.reader, "nano", False))
        self.anomalies: list[Anomaly] = []
        self.packets = 0        # records read
        self.position = 0       # bytes of the file consumed (for progress)
        self.fragments = 0      # TCP fragments seen (not reassembled)
        self.bad_records = 0    # empty records, or longer than the snapshot length
        self._warned_links: set[int] = set()
        self._counted = False
        self._first_bad = None

    # -- public -----------------------------------------------------------------

    @property
    def implementation(self) -> str:
        """"rust" when the compiled core reads this file, else "python" (the reference)."""
        from analyzer.core import CORE
        if CORE is None or self.gzip or (not self.pcapng and self.linktype not in KNOWN_LINKTYPES):
            return "python"  # gzip'd files and pcap files of exotic link types stay on the reference path
        return "rust"

    def segments(self):
        try:
            if self.pcapng:
                if self.implementation == "rust":
                    yield from self._core_pcapng_segments()
                else:
                    yield from self._pcapng_segments()
            elif self.implementation == "rust":
                yield from self._core_segments()
            else:
                yield from self._pcap_segments()
        finally:
            self.close()
            self._report_counts()

    @property
    def lane(self) -> bool:
        """Whether `drive` can read this file (the compiled core reads it)."""
        return self.implementation == "rust"

    def drive(self, lane, slow, fast, time, progress=None) -> float | None:
        """The same segments as `segments`, handed one by one to the compiled TCP fast lane
        (`TcpTracker.drive`: `lane`, and its `slow`, `fast` and `time` calls). `progress(self)` every
        16,384 segments. Returns the last segment's time (None: no segment)."""
        from analyzer.core import CORE
        try:
            if self.pcapng:
                return self._drive_pcapng(CORE, lane, slow, fast, time, progress)
            self.reader.f.close()  # the core reads the file itself, from the first record on
            reader = CORE.PcapSegments(self.source, 24, self.reader.endian == ">", self.nano, self.linktype,
                                       getattr(self.reader, "snaplen", 0) or 0)
            run = reader.run
            while True:
                n = run(lane, slow, fast, time, 0x4000)
                self.position, self.packets = reader.position, reader.packets
                self.fragments, self.bad_records = reader.fragments, reader.bad_records
                if n < 0x4000:
                    break
                if progress is not None:
                    progress(self)
            if reader.first_bad is not None:
                self._first_bad = (*reader.first_bad, getattr(self.reader, "snaplen", 0) or 0)
            if reader.damage is not None:
                self._record_damage(*reader.damage)
            return reader.last_ts
        finally:
            self.close()
            self._report_counts()

    def _drive_pcapng(self, core, lane, slow, fast, time, progress):
        """`drive` on a pcapng file (`_core_pcapng_segments`' packets): frames of link types the
        core does not decode are dissected by `_fallback` in their place."""
        reader = core.PcapngSegments(self.source)
        fallback_fragments = 0

        def other(ts, linktype, frame):
            nonlocal fallback_fragments
            seg = self._fallback(linktype, frame)
            if seg is None:
                return None
            if seg is FRAGMENT:
                fallback_fragments += 1
                return None
            return slow(ts, *seg)
        run = reader.run
        while True:
            n = run(lane, slow, fast, time, other, 0x4000)
            self.position, self.packets = reader.position, reader.packets
            self.fragments = reader.fragments + fallback_fragments
            if n < 0x4000:
                break
            if progress is not None:
                progress(self)
        self.fragments = reader.fragments + fallback_fragments
        self.position = self.size if not reader.anomalies else reader.position
        self._pcapng_report(reader)
        return reader.last_ts

    def close(self) -> None:
        self._untrap()
        try:
            self.reader.close()
        except Exception:  # noqa: BLE001 - closing a damaged gzip stream can fail
            pass

    # -- classic pcap -------------------------------------------------------------

    def _pcap_segments(self):
        f = self.reader.f
        endian = self.reader.endian
        rec = struct.Struct(endian + "IIII").unpack_from
        scale = 1e-9 if self.nano else 1e-6
        linktype = self.linktype
        fast_ethernet = linktype == LINKTYPE_ETHERNET
        if linktype not in KNOWN_LINKTYPES:
            self._unknown_link(linktype)
        decode = decode_ip
        u16 = _u16
        eth_ip4_tcp = _ETH_IP4_TCP
        pos = 24  # file offset of buf[0]
        buf = b""
        i = 0
        packets = 0
        tcp = 0  # TCP segments: progress is published every 16,384 of them
        read = f.read
        chunk = 1 << 20
        snaplen = getattr(self.reader, "snaplen", 0) or 0
        snap = snaplen if 0 < snaplen <= MAX_RECORD else MAX_RECORD  # an absurd snaplen is only a hint
        fragments = bad = 0
        while True:
            if len(buf) - i < 16:
                more = read(chunk)
                buf = buf[i:] + more
                pos += i
                i = 0
                if len(buf) < 16:
                    if buf:
                        self._record_damage("header", pos, packets + 1, len(buf), 16)
                    break
            sec, frac, caplen, wirelen = rec(buf, i)
            if caplen > MAX_RECORD:
                self._record_damage("length", pos + i, packets + 1, 0, caplen)
                break
            start = i + 16
            stop = start + caplen
            if stop > len(buf):
                more = read(max(chunk, caplen))
                buf = buf[i:] + more
                pos += i
                i, start, stop = 0, 16, 16 + caplen
                if stop > len(buf):
                    self._record_damage("record", pos, packets + 1, len(buf) - 16, caplen)
                    break
            packets += 1
            i = stop
            if not 0 < caplen <= snap:
                if not bad:
                    self._first_bad = (pos + start - 16, packets, caplen, snaplen)
                bad += 1
            # Ethernet (with VLAN tags) inline: it is nearly every capture.
            if fast_ethernet:
                if caplen >= 54:
                    # Plain Ethernet + IPv4 without options + TCP: one unpack, two slices.
                    etype, vhl, total, frag, proto, seq, ack, offflags = eth_ip4_tcp(buf, start)
                    if etype == ETH_IPV4 and vhl == 0x45 and proto == IPPROTO_TCP and not frag & 0x3FFF:
                        end = start + 14 + total if total else stop
                        if end > stop:
                            end = stop
                        p = start + 34 + ((offflags >> 12) << 2)
                        tcp += 1
                        if tcp & 0x3FFF == 0:
                            self.position = pos + i
                            self.packets = packets
                            self.fragments, self.bad_records = fragments, bad
                        yield (sec + frac * scale, buf[start + 26:start + 38], seq, ack, offflags & 0x3F,
                               buf[p:end] if p < end else b"")
                        continue
                etype = u16(buf, start + 12)[0] if caplen >= 14 else 0
                o = start + 14
                if etype != ETH_IPV4:
                    while etype in VLAN_TAGS and o + 4 <= stop:
                        etype = u16(buf, o + 2)[0]
                        o += 4
                    if _announced(buf, o, etype, stop) < 0:
                        continue
                elif caplen < 34 or buf[start + 23] != IPPROTO_TCP or buf[o] >> 4 != 4:
                    continue  # IPv4 but not TCP (the commonest skip), or not IPv4 (`link_offset`)
                seg = decode(buf, o, stop)
            else:
                frame = buf[start:stop]
                o = link_offset(linktype, frame) if linktype in KNOWN_LINKTYPES else -2
                if o == -2:
                    seg = self._fallback(linktype, frame)
                elif o < 0:
                    continue
                else:
                    seg = decode(frame, o)
            if seg is None:
                continue
            if seg is FRAGMENT:
                fragments += 1
                continue
            tcp += 1
            if tcp & 0x3FFF == 0:
                self.position = pos + i
                self.packets = packets
                self.fragments, self.bad_records = fragments, bad
            yield (sec + frac * scale, *seg)
        self.position = pos + i
        self.packets = packets
        self.fragments, self.bad_records = fragments, bad

    def _core_segments(self):
        """The same records as `_pcap_segments`, read and decoded by the compiled core in batches."""
        from analyzer.core import CORE
        self.reader.f.close()  # the core reads the file itself, from the first record on
        reader = CORE.PcapSegments(self.source, 24, self.reader.endian == ">", self.nano, self.linktype,
                                   getattr(self.reader, "snaplen", 0) or 0)
        read = reader.read
        while True:
            batch = read(4096)
            self.position, self.packets = reader.position, reader.packets
            self.fragments, self.bad_records = reader.fragments, reader.bad_records
            if not batch:
                break
            yield from batch
        if reader.first_bad is not None:
            self._first_bad = (*reader.first_bad, getattr(self.reader, "snaplen", 0) or 0)
        if reader.damage is not None:
            self._record_damage(*reader.damage)

    def _record_damage(self, kind: str, offset: int, record: int, have: int, caplen: int) -> None:
        """Where a classic pcap file stops being readable (both readers word it here)."""
        if kind == "header":
            detail = f"the capture ends inside the header of record {record} ({have} of 16 bytes)"
        elif kind == "record":
            detail = f"the capture ends inside record {record} ({have} of {caplen} bytes)"
        else:
            detail = f"record {record} claims {caplen} bytes: not a packet record"
        self._damage("capture.damaged" if kind == "length" else "capture.truncated", offset, record - 1, detail)

    # -- pcapng -------------------------------------------------------------------

    def _pcapng_segments(self):
        # Our own block reader (analyzer.capture.pcapng) over the file scapy opened:
        # every standard block type, Simple Packet Blocks included, and damage named.
        from analyzer.capture.pcapng import PcapngBlocks
        blocks = PcapngBlocks(self.reader.f)
        tcp = 0
        for linktype, ts, data, _number, _at in blocks.packets_from():
            if linktype in KNOWN_LINKTYPES:
                o = link_offset(linktype, data)
                if o < 0:
                    continue
                seg = decode_ip(data, o)
            else:
                seg = self._fallback(linktype, data)
            if seg is None:
                continue
            if seg is FRAGMENT:
                self.fragments += 1
                continue
            tcp += 1
            if tcp & 0xFFF == 0:
                self.position = blocks.position
                self.packets = blocks.packets
            yield (ts, *seg)
        self.packets = blocks.packets
        self.position = self.size if not blocks.anomalies else blocks.position
        self._pcapng_report(blocks)

    def _core_pcapng_segments(self):
        """The same packets as `_pcapng_segments`, read and decoded by the compiled core in batches;
        frames of link types the core does not decode come back for `_fallback`, in their place."""
        from analyzer.core import CORE
        reader = CORE.PcapngSegments(self.source)
        read = reader.read
        fallback_fragments = 0
        while True:
            batch = read(4096)
            self.position, self.packets = reader.position, reader.packets
            self.fragments = reader.fragments + fallback_fragments
            if not batch:
                break
            for item in batch:
                if item[1] is not None:
                    yield item
                    continue
                ts, _, linktype, frame, _, _ = item
                seg = self._fallback(linktype, frame)
                if seg is None:
                    continue
                if seg is FRAGMENT:
                    fallback_fragments += 1
                    continue
                yield (ts, *seg)
        self.fragments = reader.fragments + fallback_fragments
        self.position = self.size if not reader.anomalies else reader.position
        self._pcapng_report(reader)

    def _pcapng_report(self, blocks) -> None:
        """A pcapng file's counted anomalies and damage (both readers report through here)."""
        base = os.path.basename(self.path)
        if blocks.simple_packets:
            self.anomalies.append(Anomaly(
                "capture.pcapng.no_timestamp",
                f"{base}: {blocks.simple_packets} packet(s) in Simple Packet Blocks, which carry no time; "
                f"each was given the time of the packet before it",
                None, None, None))
        if blocks.bad_blocks:
            offset, why = blocks.first_bad
            self.anomalies.append(Anomaly(
                "capture.bad_record",
                f"{base}: {blocks.bad_blocks} packet block(s) skipped or cut; the first at byte {offset}: {why}",
                None, offset, None))
        for name, offset, detail in blocks.anomalies:
            self._damage(name, offset, blocks.packets, detail)

    # -- helpers ------------------------------------------------------------------

    def _tell(self, f):
        try:
            return f.tell()
        except (OSError, ValueError):
            return None

    def _report_counts(self) -> None:
        """The once-per-file anomalies that carry a count (fragments, bad records, inflation)."""
        if self._counted:
            return
        self._counted = True
        base = os.path.basename(self.path)
        if self._inflate is not None and self._inflate.hit:
            self.anomalies.append(Anomaly(
                "capture.inflate_limit",
                f"{base}: the gzip'd file ({self.size} bytes) inflates past {self._inflate.cap} bytes "
                f"({INFLATE_RATIO} times its size, at least {INFLATE_FLOOR}); reading stopped there, "
                f"after {self.packets} packets", None, None, None))
        if self.bad_records:
            offset, number, caplen, snaplen = self._first_bad
            self.anomalies.append(Anomaly(
                "capture.bad_record",
                f"{base}: {self.bad_records} record(s) empty or longer than the snapshot length {snaplen}; "
                f"the first is record {number} at byte {offset} ({caplen} bytes); their contents were still decoded",
                None, offset, None))
        if self.fragments:
            self.anomalies.append(Anomaly(
                "capture.ip_fragment",
                f"{base}: {self.fragments} fragment(s) of TCP datagrams were not reassembled; "
                f"their bytes are missing from the streams (tcp.gap where a stream needed them)",
                None, None, None))

    def _damage(self, name: str, offset, packets: int, detail: str) -> None:
        if name == "capture.truncated" and self._inflate is not None and self._inflate.hit:
            return  # not the file's end: the inflation cap's (capture.inflate_limit says so)
        where = f" at byte {offset}" if offset is not None else ""
        self.anomalies.append(Anomaly(name, f"{os.path.basename(self.path)}{where}: {detail}; "
                                            f"the {packets} packets before it were analysed",
                                      None, offset, None))

    def _unknown_link(self, linktype) -> bool:
        """Report once per link type; True when scapy can dissect it."""
        import scapy.layers.all  # noqa: F401 - fills conf.l2types; slow, so only for odd link types
        from scapy.config import conf
        known = conf.l2types.get(linktype) is not None if linktype is not None else False
        if linktype not in self._warned_links:
            self._warned_links.add(linktype)
            if known:
                self.anomalies.append(Anomaly(
                    "capture.fallback_dissection",
                    f"link type {linktype}: not in the fast decoder, dissected by scapy (slow)",
                    None, None, None))
            else:
                self.anomalies.append(Anomaly(
                    "capture.unknown_linktype",
                    f"link type {linktype}: neither the fast decoder nor scapy knows it; its packets were skipped",
                    None, None, None))
        return known

    def _fallback(self, linktype, data):
        """Dissect one frame with scapy and hand its IP layer to our decoder."""
        if linktype not in self._warned_links and not self._unknown_link(linktype):
            return None
        from scapy.config import conf
        cls = conf.l2types.get(linktype)
        if cls is None:
            return None
        try:
            from scapy.layers.inet import IP
            from scapy.layers.inet6 import IPv6
            pkt = cls(bytes(data))
            layer = pkt.getlayer(IP) or pkt.getlayer(IPv6)
            if layer is None:
                return None
            return decode_ip(bytes(layer), 0)
        except Exception:  # noqa: BLE001 - a frame scapy cannot dissect is skipped
            return None

    def _untrap(self) -> None:
        logger = logging.getLogger("scapy.runtime")
        if self._trap in logger.handlers:
            logger.removeHandler(self._trap)
            logger.propagate = self._propagate
