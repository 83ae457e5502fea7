"""The capture reader: formats, link layers, padding, damage, and what is not a capture."""

from __future__ import annotations

import socket
import struct
from pathlib import Path

import pytest

import resegment as R
from analyzer.capture.pcap import CaptureError, CaptureFile, decode_ip, split_key
from analyzer.msnp.facts import format_address

REAL = Path(__file__).resolve().parents[2].parent / "shared" / "captures-real"
NDPI = REAL / "ndpi_msnms.pcap"
PPA = REAL / "ppa1e_msnms.pcap"
needs_real = pytest.mark.skipif(not NDPI.exists(), reason="../shared/captures-real is not beside the clone")


def ipv4_tcp(payload: bytes, *, src="127.0.0.1", dst="127.0.0.2", sport=5000, dport=1863,
             seq=1000, flags=0x18, pad: bytes = b"") -> bytes:
    tcp = struct.pack(">HHIIBBHHH", sport, dport, seq, 0, 5 << 4, flags, 65535, 0, 0)
    total = 20 + len(tcp) + len(payload)
    ip = struct.pack(">BBHHHBBH4s4s", 0x45, 0, total, 1, 0x4000, 64, 6, 0,
                     socket.inet_aton(src), socket.inet_aton(dst))
    return ip + tcp + payload + pad


def write_pcap(path: Path, linktype: int, frames: list[bytes], nano: bool = False, start=1_000_000_000) -> Path:
    magic = 0xA1B23C4D if nano else 0xA1B2C3D4
    with open(path, "wb") as f:
        f.write(struct.pack("<IHHiIII", magic, 2, 4, 0, 0, 65535, linktype))
        for i, frame in enumerate(frames):
            f.write(struct.pack("<IIII", start + i, 123456789 if nano else 123456, len(frame), len(frame)))
            f.write(frame)
    return path


ETHER = b"\x02\0\0\0\0\x02\x02\0\0\0\0\x01\x08\x00"


def test_payload_length_comes_from_the_ip_header_not_the_frame(tmp_path):
    frame = ETHER + ipv4_tcp(b"PNG\r\n", pad=b"\xde\xad\xbe\xef\0\0")
    [seg] = list(CaptureFile(str(write_pcap(tmp_path / "p.pcap", 1, [frame]))).segments())
    ts, key, seq, ack, flags, payload = seg
    assert payload == b"PNG\r\n"
    assert split_key(key) == ("127.0.0.1", 5000, "127.0.0.2", 1863)
    assert seq == 1000 and flags == 0x18


def test_nanosecond_timestamps(tmp_path):
    path = write_pcap(tmp_path / "ns.pcap", 1, [ETHER + ipv4_tcp(b"PNG\r\n")], nano=True)
    capture = CaptureFile(str(path))
    [seg] = list(capture.segments())
    assert capture.nano
    assert seg[0] == pytest.approx(1_000_000_000.123456789, abs=1e-6)


def test_non_tcp_and_fragments_are_skipped(tmp_path):
    udp = bytearray(ipv4_tcp(b"PNG\r\n"))
    udp[9] = 17
    frag = bytearray(ipv4_tcp(b"PNG\r\n"))
    frag[6:8] = b"\x20\x00"  # more fragments
    arp = b"\x02\0\0\0\0\x02\x02\0\0\0\0\x01\x08\x06" + b"\0" * 28
    path = write_pcap(tmp_path / "x.pcap", 1, [ETHER + bytes(udp), ETHER + bytes(frag), arp,
                                               ETHER + ipv4_tcp(b"OUT\r\n")])
    capture = CaptureFile(str(path))
    segs = list(capture.segments())
    assert [s[5] for s in segs] == [b"OUT\r\n"]
    assert capture.packets == 4


def test_ipv6_extension_headers_are_walked():
    tcp = struct.pack(">HHIIBBHHH", 5000, 1863, 7, 0, 5 << 4, 0x18, 65535, 0, 0) + b"PNG\r\n"
    hop = bytes([6, 0]) + b"\0" * 6   # hop-by-hop options, next header TCP
    src, dst = socket.inet_pton(socket.AF_INET6, "::1"), socket.inet_pton(socket.AF_INET6, "::2")
    ip6 = struct.pack(">IHBB", 6 << 28, len(hop) + len(tcp), 0, 64) + src + dst
    key, seq, ack, flags, payload = decode_ip(ip6 + hop + tcp, 0)
    assert payload == b"PNG\r\n" and seq == 7
    sip, sport, dip, dport = split_key(key)
    assert (sip, sport, dip, dport) == ("::1", 5000, "::2", 1863)
    assert format_address(sip, sport) == "[::1]:5000"


@needs_real
def test_truncated_capture_keeps_everything_before_the_damage(tmp_path):
    data = NDPI.read_bytes()
    cut = tmp_path / "cut.pcap"
    cut.write_bytes(data[:len(data) // 2 + 7])
    analysis, got = R.analyze(cut)
    whole, _ = R.analyze(NDPI)
    assert "capture.truncated" in got.names()
    [(stream, anomaly)] = [(c, a) for c, a in got.anomalies if a.name == "capture.truncated"]
    assert stream is None and "cut.pcap at byte" in anomaly.detail
    n = sum(analysis.totals()["commands"].values())
    assert 100 < n < 364
    # What was read decodes exactly as in the whole file, command for command.
    got_lines = {line for d in got.lines.values() for lines in d.values() for line in lines}
    all_lines = {line for c2s, s2c in R.analyze(NDPI)[1].signature() for line in c2s + s2c}
    assert got_lines <= all_lines


def test_record_with_impossible_length_is_damage(tmp_path):
    path = write_pcap(tmp_path / "d.pcap", 1, [ETHER + ipv4_tcp(b"PNG\r\n", flags=0x18)])
    with open(path, "ab") as f:
        f.write(struct.pack("<IIII", 1, 0, 0x7FFFFFFF, 60) + b"junk")
    capture = CaptureFile(str(path))
    segs = list(capture.segments())
    assert len(segs) == 1
    assert [a.name for a in capture.anomalies] == ["capture.damaged"]


def test_truncated_pcapng(tmp_path):
    segs = R.read(PPA) if PPA.exists() else []
    if not segs:
        pytest.skip("needs the real captures")
    path = R.write(segs, tmp_path / "t.pcapng", pcapng=True)
    data = path.read_bytes()
    path.write_bytes(data[:-30])
    analysis, got = R.analyze(path)
    assert "capture.truncated" in got.names()
    assert sum(analysis.totals()["commands"].values()) >= 20


def test_unknown_link_type_is_reported_once_and_skipped(tmp_path):
    path = write_pcap(tmp_path / "u.pcap", 147, [b"\0" * 40, b"\0" * 40])  # LINKTYPE_USER0
    capture = CaptureFile(str(path))
    assert list(capture.segments()) == []
    assert [a.name for a in capture.anomalies] == ["capture.unknown_linktype"]


def test_link_type_scapy_knows_goes_through_fallback_dissection(tmp_path):
    ppp = b"\xff\x03\x00\x21"  # PPP in HDLC framing, protocol IPv4
    path = write_pcap(tmp_path / "ppp.pcap", 9, [ppp + ipv4_tcp(b"VER 1 MSNP8 CVR0\r\n"),
                                                 ppp + ipv4_tcp(b"OUT\r\n", seq=1018)])
    capture = CaptureFile(str(path))
    segs = list(capture.segments())
    assert [s[5] for s in segs] == [b"VER 1 MSNP8 CVR0\r\n", b"OUT\r\n"]
    assert [a.name for a in capture.anomalies] == ["capture.fallback_dissection"]


@pytest.mark.parametrize("content, message", [
    (b"", "empty file"),
    (b"this is not a capture at all, just text\n", "not a pcap or pcapng capture"),
])
def test_not_a_capture(tmp_path, content, message):
    path = tmp_path / "bad.pcap"
    path.write_bytes(content)
    with pytest.raises(CaptureError, match=message):
        CaptureFile(str(path))


def test_missing_file():
    with pytest.raises(CaptureError, match="no such file"):
        CaptureFile("/nonexistent/capture.pcap")


@needs_real
def test_a_classic_pcap_is_read_without_importing_scapy():
    # scapy's import alone costs about 40 MB: only pcapng, odd link types and writing need it.
    import subprocess
    import sys
    code = ("import sys\n"
            "from analyzer.capture.pcap import CaptureFile\n"
            f"c = CaptureFile({str(NDPI)!r})\n"
            "print(sum(1 for _ in c.segments()), c.format, 'scapy' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["364", "pcap", "False"]


# Every test here runs on both readers: the pure-Python reference and the compiled core.
pytestmark = pytest.mark.usefixtures("implementation")


def test_split_key_writes_addresses_as_ipaddress_does():
    import ipaddress
    import random
    rnd = random.Random(5)
    for n in (4, 16):
        for _ in range(500):
            a, b = rnd.randbytes(n), rnd.randbytes(n)
            if n == 16 and rnd.random() < 0.5:   # runs of zeros (the :: form)
                a = bytes(8) + a[8:]
            key = a + b + (1863).to_bytes(2, "big") + (40000).to_bytes(2, "big")
            assert split_key(key) == (str(ipaddress.ip_address(a)), 1863, str(ipaddress.ip_address(b)), 40000)
    for edge in (bytes(4), b"\xff" * 4, b"\x7f\x00\x00\x01", b"\x00\x00\x00\x01"):
        assert split_key(edge + edge + bytes(4))[0] == str(ipaddress.ip_address(edge))
