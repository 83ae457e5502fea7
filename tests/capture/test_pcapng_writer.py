"""The pcapng recorder: standard blocks, valid checksums, sequence numbers that follow the bytes."""

from __future__ import annotations

import io
import os
import shutil
import subprocess

import pytest
from scapy.layers.inet import IP, TCP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Ether
from scapy.utils import RawPcapNgReader

from analyzer.capture.pcapng_writer import SEGMENT, PcapngWriter, TcpRecorder


def record(tmp_path, client=("127.0.0.1", 50000), server=("127.0.0.1", 1863)):
    path = tmp_path / "s.pcapng"
    with open(path, "wb") as f:
        w = PcapngWriter(f)
        rec = TcpRecorder(w, client, server)
        rec.open(1000.0)
        rec.data("c2s", b"VER 1 MSNP8 CVR0\r\n", 1000.1)
        rec.data("s2c", b"VER 1 MSNP8 CVR0\r\n", 1000.2)
        rec.data("c2s", b"x" * (SEGMENT + 10), 1000.3)
        rec.end("c2s", 1000.4)
        rec.end("s2c", 1000.5)
        rec.data("c2s", b"after fin is ignored", 1000.6)
    return path


def packets(path):
    out = []
    with RawPcapNgReader(str(path)) as reader:
        for data, meta in reader:
            out.append((Ether(data), meta))
    return out


def test_handshake_data_fin_with_valid_checksums_and_sequence_numbers(tmp_path):
    pkts = packets(record(tmp_path))
    flags = [str(p[TCP].flags) for p, _ in pkts]
    assert flags == ["S", "SA", "A", "PA", "PA", "PA", "PA", "FA", "A", "FA", "A"]
    for pkt, _ in pkts:
        ip_sum, tcp_sum = pkt[IP].chksum, pkt[TCP].chksum
        fresh = Ether(bytes(pkt))
        del fresh[IP].chksum, fresh[TCP].chksum
        rebuilt = Ether(bytes(fresh))
        assert (rebuilt[IP].chksum, rebuilt[TCP].chksum) == (ip_sum, tcp_sum)
    syn = pkts[0][0][TCP]
    data = [p[TCP] for p, _ in pkts if p[TCP].flags & 0x08]
    # client data starts right after the SYN, each segment after the previous one's bytes
    assert data[0].seq == syn.seq + 1
    assert data[2].seq == data[0].seq + 18 and data[3].seq == data[2].seq + SEGMENT
    assert len(data[2].payload) == SEGMENT and bytes(data[3].payload) == b"x" * 10
    # acknowledgements follow the other side's bytes
    assert data[2].ack == data[1].seq + 18
    assert pkts[0][0][IP].src == "127.0.0.1" and pkts[0][0][TCP].dport == 1863
    assert pkts[3][1].tshigh << 32 | pkts[3][1].tslow == 1000100000


def test_ipv6_and_mixed_families(tmp_path):
    pkts = packets(record(tmp_path, client=("::1", 50000), server=("127.0.0.1", 1863)))
    assert pkts[0][0][IPv6].src == "::1" and pkts[0][0][IPv6].dst == "::ffff:127.0.0.1"
    fresh = Ether(bytes(pkts[3][0]))
    want = fresh[TCP].chksum
    del fresh[TCP].chksum
    assert Ether(bytes(fresh))[TCP].chksum == want


def test_every_block_is_flushed_as_written():
    class Counting(io.BytesIO):
        flushes = 0

        def flush(self):
            Counting.flushes += 1
            super().flush()
    buf = Counting()
    w = PcapngWriter(buf)
    before = Counting.flushes
    TcpRecorder(w, ("127.0.0.1", 1), ("127.0.0.1", 2)).data("c2s", b"abc", 1.0)
    assert Counting.flushes == before + 1 and w.packets == 1


def test_reset_ends_the_recording(tmp_path):
    buf = io.BytesIO()
    w = PcapngWriter(buf)
    rec = TcpRecorder(w, ("127.0.0.1", 1), ("127.0.0.1", 2))
    rec.reset("s2c", 1.0)
    rec.data("c2s", b"lost", 2.0)
    assert w.packets == 1


@pytest.mark.skipif(not shutil.which("tshark") and not os.environ.get("CI"), reason="tshark not installed")
def test_tshark_reads_it(tmp_path):
    path = record(tmp_path)
    out = subprocess.run(["tshark", "-r", str(path), "-T", "fields", "-e", "tcp.len"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert [int(x) for x in out.stdout.split()] == [0, 0, 0, 18, 18, SEGMENT, 10, 0, 0, 0, 0]
