"""Generate the hostile capture corpus: files built to break capture readers.

    python3 captures/make_hostile.py OUTDIR [--heavy]

Each case is a function returning the file's bytes (or writing it in pieces,
for the big ones) and what a correct analyzer must do with it. Files are
written with a pcap writer of our own (struct) because scapy will not write
malformed headers. Light cases run in the normal test suite
(tests/test_hostile.py); `--heavy` adds the multi-hundred-megabyte ones used by
bench/hostile.py.
"""

from __future__ import annotations

import argparse
import random
import struct
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from analyzer.capture.pcapng_writer import inet_checksum  # noqa: E402

PCAP_MAGIC = 0xA1B2C3D4
LINKTYPE_ETHERNET = 1
LINKTYPE_RAW = 101


def ip4(a: str) -> bytes:
    return bytes(int(x) for x in a.split("."))


def tcp_segment(src: str, sport: int, dst: str, dport: int, seq: int, ack: int, flags: str,
                payload: bytes = b"", options: bytes = b"", ip_options: bytes = b"",
                ip_id: int = 1, frag: int = 0, total_len: int | None = None) -> bytes:
    """An IPv4 packet carrying one TCP segment (checksums correct)."""
    bits = {"F": 1, "S": 2, "R": 4, "P": 8, "A": 16}
    flag_value = sum(bits[f] for f in flags)
    options += b"\0" * (-len(options) % 4)
    offset = (20 + len(options)) // 4
    tcp = struct.pack("!HHIIBBHHH", sport, dport, seq & 0xFFFFFFFF, ack & 0xFFFFFFFF,
                      offset << 4, flag_value, 65535, 0, 0) + options
    pseudo = ip4(src) + ip4(dst) + struct.pack("!BBH", 0, 6, len(tcp) + len(payload))
    csum = inet_checksum(pseudo + tcp + payload)
    tcp = tcp[:16] + struct.pack("!H", csum) + tcp[18:]
    ip_options += b"\0" * (-len(ip_options) % 4)
    ihl = (20 + len(ip_options)) // 4
    length = total_len if total_len is not None else 4 * ihl + len(tcp) + len(payload)
    ip = struct.pack("!BBHHHBBH4s4s", 0x40 | ihl, 0, length, ip_id, frag, 64, 6, 0,
                     ip4(src), ip4(dst)) + ip_options
    ip = ip[:10] + struct.pack("!H", inet_checksum(ip)) + ip[12:]
    return ip + tcp + payload


def ethernet(ip_packet: bytes, ethertype: int = 0x0800) -> bytes:
    return b"\x02\0\0\0\0\x02" + b"\x02\0\0\0\0\x01" + struct.pack("!H", ethertype) + ip_packet


def pcap_header(linktype: int = LINKTYPE_ETHERNET, snaplen: int = 262144, magic: int = PCAP_MAGIC) -> bytes:
    return struct.pack("<IHHiIII", magic, 2, 4, 0, 0, snaplen, linktype)


def pcap_record(frame: bytes, ts: float, incl_len: int | None = None, orig_len: int | None = None) -> bytes:
    sec = int(ts)
    usec = int(round((ts - sec) * 1e6))
    incl = len(frame) if incl_len is None else incl_len
    orig = len(frame) if orig_len is None else orig_len
    return struct.pack("<IIII", sec, usec, incl, orig) + frame


class Conversation:
    """Builds the packets of one TCP connection, client on the left."""

    def __init__(self, client=("10.0.0.2", 40000), server=("10.0.0.1", 1863), isn_c=1000, isn_s=5000,
                 ts=1_000_000.0):
        self.client, self.server = client, server
        self.seq = {"c": isn_c, "s": isn_s}
        self.ts = ts
        self.frames: list[tuple[float, bytes]] = []

    def _pkt(self, side: str, flags: str, payload: bytes = b"", **kw) -> bytes:
        src, dst = (self.client, self.server) if side == "c" else (self.server, self.client)
        other = "s" if side == "c" else "c"
        return tcp_segment(src[0], src[1], dst[0], dst[1], self.seq[side], self.seq[other], flags,
                           payload, **kw)

    def add(self, side: str, flags: str, payload: bytes = b"", **kw) -> None:
        self.ts += 0.001
        self.frames.append((self.ts, ethernet(self._pkt(side, flags, payload, **kw))))
        self.seq[side] += len(payload) + (1 if ("S" in flags or "F" in flags) else 0)

    def handshake(self) -> "Conversation":
        self.add("c", "S")
        self.add("s", "SA")
        self.add("c", "A")
        return self

    def send(self, side: str, data: bytes, mss: int = 1400, **kw) -> "Conversation":
        for i in range(0, len(data), mss):
            self.add(side, "PA", data[i:i + mss], **kw)
        return self

    def finish(self) -> "Conversation":
        self.add("c", "FA")
        self.add("s", "FA")
        self.add("c", "A")
        return self

    def records(self) -> bytes:
        return b"".join(pcap_record(f, ts) for ts, f in self.frames)


SESSION_C = (b"VER 1 MSNP8 CVR0\r\nUSR 2 alice@example.com 1234.5678\r\nCAL 3 bob@example.com\r\n"
             b"MSG 4 A 90\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=UTF-8\r\n\r\n"
             b"Hello from before the damageOUT\r\n")
SESSION_S = (b"VER 1 MSNP8 CVR0\r\nUSR 2 OK alice@example.com Alice\r\nCAL 3 RINGING 99\r\n"
             b"JOI bob@example.com Bob\r\nACK 4\r\n")
SESSION_COMMANDS = 10  # 5 from the client, 5 from the server


def clean_session(**kw) -> Conversation:
    conv = Conversation(**kw).handshake()
    conv.send("c", SESSION_C[:18]).send("s", SESSION_S[:18])
    conv.send("c", SESSION_C[18:]).send("s", SESSION_S[18:])
    return conv.finish()


def clean_pcap() -> bytes:
    return pcap_header() + clean_session().records()


@dataclass
class Case:
    name: str
    build: Callable[[], bytes]
    expect: str  # what a correct analyzer does (for the README table and the tests)
    heavy: bool = False


def _truncations() -> list[Case]:
    data = clean_pcap()
    # record boundaries: after the 24-byte header, each record is 16 + incl_len
    bounds, pos = [], 24
    while pos < len(data):
        incl = struct.unpack_from("<I", data, pos + 8)[0]
        pos += 16 + incl
        bounds.append(pos)
    cases = []
    for i, b in enumerate(bounds[:-1]):
        cases.append(Case(f"truncated_at_record_{i + 1}", lambda b=b: data[:b],
                          "reads every complete record; reports the unfinished connection as it is"))
        cases.append(Case(f"truncated_mid_record_{i + 1}", lambda b=b: data[:b + 21],
                          "reads every complete record, then capture.truncated naming the offset"))
    cases.append(Case("truncated_mid_header", lambda: data[:13], "one-line error, exit 2 (no packet)"))
    return cases


def bad_magic() -> bytes:
    return b"\x00\x01\x02\x03" + clean_pcap()[4:]


def absurd_snaplen() -> bytes:
    return pcap_header(snaplen=0xFFFFFFFF) + clean_session().records()


ABSURD_AFTER = 6  # good records before the absurd one (handshake, both VERs, the client's commands)


def absurd_record_length() -> bytes:
    # A record announcing 2 GiB after a few good ones: must not be allocated.
    conv = clean_session()
    good = b"".join(pcap_record(f, ts) for ts, f in conv.frames[:ABSURD_AFTER])
    return pcap_header() + good + struct.pack("<IIII", 1_000_100, 0, 0x7FFFFFFF, 0x7FFFFFFF) + b"x" * 64


def zero_and_oversize_records() -> bytes:
    conv = clean_session()
    recs = [pcap_record(f, ts) for ts, f in conv.frames]
    recs.insert(3, pcap_record(b"", 1_000_000.0035))
    recs.insert(5, pcap_record(b"\x02" * 14 + b"\x45" + b"\0" * 70_000, 1_000_000.0045))  # bigger than snaplen 65535
    return pcap_header(snaplen=65535) + b"".join(recs)


def ipv4_options_and_fragments() -> bytes:
    conv = Conversation().handshake()
    conv.send("c", SESSION_C[:18], ip_options=b"\x01\x01\x01\x00")  # NOPs + EOL
    conv.send("s", SESSION_S)
    frames = list(conv.frames)
    # a fragmented datagram (first fragment, MF set): not reassembled, reported
    frag = tcp_segment("10.0.0.2", 40000, "10.0.0.1", 1863, conv.seq["c"], conv.seq["s"], "PA",
                       SESSION_C[18:60], frag=0x2000)
    frames.append((conv.ts + 0.001, ethernet(frag)))
    return pcap_header() + b"".join(pcap_record(f, ts) for ts, f in frames)


def ipv6_extension_headers() -> bytes:
    def ip6(src_last: int, dst_last: int, sport, dport, seq, ack, flags, payload):
        tcp4 = tcp_segment("10.0.0.2", sport, "10.0.0.1", dport, seq, ack, flags, payload)
        tcp = tcp4[20:]
        hop_by_hop = bytes([6, 0]) + b"\x01\x04\0\0\0\0"   # next header TCP, PadN option
        body = hop_by_hop + tcp
        src = b"\x20\x01\x0d\xb8" + b"\0" * 11 + bytes([src_last])
        dst = b"\x20\x01\x0d\xb8" + b"\0" * 11 + bytes([dst_last])
        hdr = struct.pack("!IHBB", 6 << 28, len(body), 0, 64) + src + dst  # next header 0: hop-by-hop
        return ethernet(hdr + body, 0x86DD)
    frames = [(1.0, ip6(2, 1, 40000, 1863, 1000, 0, "PA", SESSION_C[:18])),
              (1.1, ip6(1, 2, 1863, 40000, 5000, 1018, "PA", SESSION_S[:18]))]
    return pcap_header() + b"".join(pcap_record(f, ts) for ts, f in frames)


def tcp_options() -> bytes:
    opts = b"\x02\x04\x05\xb4" + b"\x01\x03\x03\x07" + b"\x08\x0a" + b"\0\0\0\1\0\0\0\0"  # MSS, WS, timestamps
    conv = Conversation().handshake()
    conv.send("c", SESSION_C, options=opts).send("s", SESSION_S, options=opts)
    return pcap_header() + conv.finish().records()


def sequence_wraparound() -> bytes:
    conv = Conversation(isn_c=0xFFFFFFF0, isn_s=0xFFFFFF00).handshake()
    conv.send("c", SESSION_C, mss=7).send("s", SESSION_S, mss=5)
    return pcap_header() + conv.finish().records()


def syn_flood(count: int = 5000) -> bytes:
    recs = [pcap_header()]
    for i in range(count):
        frame = ethernet(tcp_segment(f"10.1.{i // 250 % 250}.{i % 250 + 1}", 1024 + i % 60000, "10.0.0.1", 1863,
                                     i * 7919, 0, "S"))
        recs.append(pcap_record(frame, 1_000_000 + i / 1000))
    return b"".join(recs)


def tiny_connections(count: int = 50_000) -> bytes:
    recs = [pcap_header()]
    ts = 1_000_000.0
    for i in range(count):
        client = (f"10.{2 + i // 62500}.{i // 250 % 250}.{i % 250 + 1}", 1024 + i % 60000)
        c = tcp_segment(client[0], client[1], "10.0.0.1", 1863, 100, 0, "PA", b"PNG\r\n")
        s = tcp_segment("10.0.0.1", 1863, client[0], client[1], 200, 105, "PA", b"QNG 50\r\n")
        ts += 0.0001
        recs.append(pcap_record(ethernet(c), ts))
        recs.append(pcap_record(ethernet(s), ts + 0.00005))
    return b"".join(recs)


def declared_2gb_payload() -> bytes:
    conv = Conversation().handshake()
    conv.send("c", b"MSG 1 A 2147483648\r\nhello\r\nMSG 2 U 5\r\nafter")
    return pcap_header() + conv.finish().records()


def binary_garbage(size: int = 200_000) -> bytes:
    rng = random.Random(1863)
    conv = Conversation().handshake()
    conv.send("c", bytes(rng.getrandbits(8) for _ in range(size)))
    conv.send("c", b"\r\nPNG\r\n")
    conv.send("s", b"QNG 50\r\n")
    return pcap_header() + conv.finish().records()


def write_long_line(path: Path, size: int = 100 * 1024 * 1024) -> None:
    """A 100 MB line without a newline, streamed to disk (never held in memory)."""
    conv = Conversation().handshake()
    with path.open("wb") as f:
        f.write(pcap_header() + conv.records())
        conv.frames.clear()
        block = b"A" * 1400
        for _ in range(size // len(block)):
            conv.add("c", "PA", block)
            ts, frame = conv.frames.pop()
            f.write(pcap_record(frame, ts))
        conv.send("c", b"\r\nPNG\r\n").send("s", b"QNG 50\r\n").finish()
        f.write(conv.records())


def cases(heavy: bool = False) -> list[Case]:
    out = _truncations() + [
        Case("bad_magic", bad_magic, "one-line error 'not a capture', exit 2"),
        Case("absurd_snaplen", absurd_snaplen, "decodes normally (snaplen is only a hint)"),
        Case("absurd_record_length", absurd_record_length,
             "everything before the record, then capture.damaged; nothing allocated for the 2 GiB"),
        Case("zero_and_oversize_records", zero_and_oversize_records,
             "capture.bad_record (once, with the count) for the empty and the oversize record; decodes the rest"),
        Case("ipv4_options_and_fragments", ipv4_options_and_fragments,
             "honours IP options; capture.ip_fragment for the fragment (not reassembled), its bytes never delivered"),
        Case("ipv6_extension_headers", ipv6_extension_headers, "walks the extension headers to TCP"),
        Case("tcp_options", tcp_options, "honours the TCP data offset"),
        Case("sequence_wraparound", sequence_wraparound, "reassembles across 2^32"),
        Case("syn_flood", syn_flood, "5,000 SYNs, no data: no stream reported, bounded memory"),
        Case("declared_2gb_payload", declared_2gb_payload,
             "msnp.payload.too_large, then resynchronises on the next line"),
        Case("binary_garbage", binary_garbage, "msnp.line.garbage once, resynchronises on PNG"),
    ]
    heavy_cases = [
        Case("tiny_connections_50000", tiny_connections, "50,000 streams reported, memory bounded", heavy=True),
    ]
    return out + (heavy_cases if heavy else [])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("outdir", type=Path)
    parser.add_argument("--heavy", action="store_true", help="also the big cases (50,000 connections, 100 MB line)")
    args = parser.parse_args()
    args.outdir.mkdir(parents=True, exist_ok=True)
    for case in cases(args.heavy):
        (args.outdir / f"{case.name}.pcap").write_bytes(case.build())
    if args.heavy:
        write_long_line(args.outdir / "line_100mb.pcap")
    print(f"wrote {len(list(args.outdir.glob('*.pcap')))} files to {args.outdir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
