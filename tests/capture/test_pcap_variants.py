"""The real captures, and the same traffic re-segmented, reordered, retransmitted,
stripped of its handshake, VLAN-tagged, moved to IPv6, SLL or pcapng: the analyzer
must find the same MSNP command sequences in every variant."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

import resegment as R

REAL = Path(__file__).resolve().parents[2].parent / "shared" / "captures-real"
NDPI = REAL / "ndpi_msnms.pcap"
PPA = REAL / "ppa1e_msnms.pcap"
MAPI = REAL / "zeek_dce-rpc_mapi.pcap"

pytestmark = pytest.mark.skipif(not NDPI.exists(), reason="../shared/captures-real is not beside the clone")

NDPI_HISTOGRAM = {"MSG": 244, "PNG": 40, "QNG": 40, "NLN": 10, "ANS": 6, "OUT": 5, "CAL": 4, "RNG": 3,
                  "IRO": 3, "XFR": 2, "USR": 2, "JOI": 2, "BYE": 2, "UBX": 1}


def histogram(analysis) -> Counter:
    return analysis.totals()["commands"]


def test_ndpi_six_streams_and_364_commands():
    analysis, got = R.analyze(NDPI)
    assert len(analysis.connections) == 6
    assert dict(histogram(analysis)) == NDPI_HISTOGRAM
    assert sum(histogram(analysis).values()) == 364
    # Mid-session capture on 1863: every stream's server side is the 1863 end.
    assert all(c.server.endswith(":1863") for c in analysis.connections.values())
    assert not {n for n in got.names() if n.startswith(("tcp.", "capture."))}


def test_ppa1e_one_stream_no_padding_leak():
    analysis, got = R.analyze(PPA)
    assert len(analysis.connections) == 1
    assert dict(histogram(analysis)) == {"MSG": 20, "USR": 2, "CAL": 2, "JOI": 1}
    conn = next(iter(analysis.connections.values()))
    assert conn.client == "192.168.0.114:3331" and conn.server == "207.46.26.167:1863"
    # Padding would show up as garbage or a damaged line; the byte counts are the IP payloads.
    assert not got.names() & {"msnp.line.garbage", "msnp.line.truncated", "msnp.payload.truncated"}
    segs = R.read(PPA)
    assert conn.bytes["c2s"] + conn.bytes["s2c"] == sum(len(s.data) for s in segs)


def test_mapi_one_command_among_800_packets():
    analysis, got = R.analyze(MAPI)
    assert len(analysis.connections) == 1
    assert dict(histogram(analysis)) == {"MSG": 1}
    [(c2s, s2c)] = got.signature()
    assert len(c2s) == 1 and c2s[0].startswith(b"MSG ") and s2c == ()


VARIANTS = {
    "cut7": lambda s: R.cut(s, 7),
    "merge4000": lambda s: R.merge(s, 4000),
    "reordered": R.reorder,
    "retransmitted": R.retransmit,
    "no_handshake": R.strip_handshake,
    "cut7_reordered_retransmitted": lambda s: R.retransmit(R.reorder(R.cut(s, 7))),
}
LINKS = {
    "vlan": dict(link="vlan"),
    "qinq": dict(link="qinq"),
    "ipv6": dict(ipv6=True),
    "sll": dict(link="sll"),
    "sll2": dict(link="sll2"),
    "null": dict(link="null"),
    "loop_ipv6": dict(link="loop", ipv6=True),
    "raw": dict(link="raw"),
    "pcapng": dict(pcapng=True),
    "pcapng_ipv6_sll": dict(pcapng=True, ipv6=True, link="sll"),
    "nanosecond": dict(nano=True),
}


@pytest.fixture(scope="module")
def baselines():
    return {path: R.analyze(path)[1].signature() for path in (NDPI, PPA)}


@pytest.mark.parametrize("path", [NDPI, PPA], ids=["ndpi", "ppa1e"])
@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_same_commands_however_tcp_carries_them(tmp_path, baselines, path, variant):
    original = R.read(path)
    segs = VARIANTS[variant](original)
    if variant != "no_handshake" or any("S" in s.flags for s in original):  # ndpi has no handshake
        assert segs != original  # the variant really changed how the bytes travel
    if "reordered" in variant:
        assert R.swaps(original, R.reorder(original)) > 0
    out = R.write(segs, tmp_path / f"{variant}.pcap")
    analysis, got = R.analyze(out)
    assert got.signature() == baselines[path]
    assert "tcp.gap" not in got.names()
    if variant.startswith("retransmitted") or variant.endswith("retransmitted"):
        assert "tcp.retransmission" in got.names()
        assert "tcp.overlap_mismatch" not in got.names()


@pytest.mark.parametrize("path", [NDPI, PPA], ids=["ndpi", "ppa1e"])
@pytest.mark.parametrize("link", sorted(LINKS))
def test_same_commands_whatever_the_link_layer(tmp_path, baselines, path, link):
    out = R.write(R.read(path), tmp_path / f"{link}.cap", **LINKS[link])
    analysis, got = R.analyze(out)
    assert got.signature() == baselines[path]
    assert not {n for n in got.names() if n.startswith("capture.")}


# Every test here runs on both readers: the pure-Python reference and the compiled core.
pytestmark = pytest.mark.usefixtures("implementation")
