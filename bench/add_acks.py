"""A copy of a classic Ethernet/IPv4 pcap with the peer's bare ACK after each TCP data segment.

    python3 bench/add_acks.py IN.pcap OUT.pcap

The bench files (copies of ndpi_msnms.pcap) hold data segments only; a real capture holds
about one bare ACK per data segment. Each ACK added: MAC and IP addresses and ports swapped,
seq = the segment's ack, ack = its seq plus its length, flags ACK, window 65535, the same
timestamp; checksums left zero (the analyzer and tshark do not check them). Records are the
same as for the input: time `msnp-analyzer analyze` and tshark on both to see what ACKs cost.
"""

from __future__ import annotations

import struct
import sys


def main() -> int:
    if len(sys.argv) != 3:
        print(__doc__.strip())
        return 2
    src, dst = sys.argv[1], sys.argv[2]
    with open(src, "rb") as f, open(dst, "wb") as out:
        header = f.read(24)
        if header[:4] not in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1", b"\xa1\xb2\xc3\xd4", b"\xa1\xb2\x3c\x4d"):
            print(f"{src}: not a classic pcap file", file=sys.stderr)
            return 2
        out.write(header)
        endian = "<" if header[:4] in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1") else ">"
        packets = added = 0
        while True:
            record = f.read(16)
            if len(record) < 16:
                break
            sec, frac, incl, _ = struct.unpack(endian + "IIII", record)
            data = f.read(incl)
            out.write(record)
            out.write(data)
            packets += 1
            if len(data) < 54 or data[12:14] != b"\x08\x00" or data[23] != 6:
                continue   # Ethernet, IPv4, TCP only
            ihl = (data[14] & 15) * 4
            tcp = 14 + ihl
            if len(data) < tcp + 20:
                continue
            total = struct.unpack(">H", data[16:18])[0]
            length = total - ihl - (data[tcp + 12] >> 4) * 4
            if length <= 0:
                continue
            sport, dport, seq, ack = struct.unpack(">HHII", data[tcp:tcp + 12])
            ip = bytearray(data[14:34])
            ip[0] = 0x45
            ip[2:4] = struct.pack(">H", 40)
            ip[10:12] = b"\0\0"
            ip[12:16], ip[16:20] = data[30:34], data[26:30]
            segment = struct.pack(">HHIIBBHHH", dport, sport, ack, (seq + length) & 0xFFFFFFFF, 0x50, 0x10, 65535, 0, 0)
            packet = data[6:12] + data[0:6] + b"\x08\x00" + bytes(ip) + segment
            out.write(struct.pack(endian + "IIII", sec, frac, len(packet), len(packet)))
            out.write(packet)
            added += 1
    print(f"{packets:,} packets, {added:,} bare ACKs added -> {dst}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
