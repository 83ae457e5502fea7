"""The codec on the real captures' byte streams (extracted by the test-only realstreams helper)."""

from __future__ import annotations

from collections import Counter

import pytest

from analyzer.msnp import Anomaly, Command, Skipped
from realstreams import REAL_CAPTURES, capture_streams, decode, capture_chunks

pytestmark = [pytest.mark.usefixtures("implementation"), pytest.mark.skipif(not (REAL_CAPTURES / "ndpi_msnms.pcap").exists(),
                                reason="../shared/captures-real is not beside this checkout")]


def histogram(name: str) -> Counter:
    events, _ = decode(capture_chunks(name))
    return Counter(e.cmd for _, e in events if type(e) is Command)


def test_ndpi_commands():
    h = histogram("ndpi_msnms.pcap")
    assert sum(h.values()) == 364
    assert h == Counter({"MSG": 244, "PNG": 40, "QNG": 40, "NLN": 10, "ANS": 6, "OUT": 5, "CAL": 4,
                         "RNG": 3, "IRO": 3, "XFR": 2, "USR": 2, "JOI": 2, "BYE": 2, "UBX": 1})


def test_ppa1e_commands():
    h = histogram("ppa1e_msnms.pcap")
    assert sum(h.values()) == 25
    assert h == Counter({"MSG": 20, "USR": 2, "CAL": 2, "JOI": 1})


@pytest.mark.parametrize("name", ["ndpi_msnms.pcap", "ppa1e_msnms.pcap"])
def test_real_streams_decode_cleanly_and_reemit_exactly(name):
    events, conns = decode(capture_chunks(name))
    assert not [e for _, e in events if type(e) is Skipped]
    assert not any(c.failed for c in conns.values())
    for label, per in capture_streams(name).items():
        for direction, data in per.items():
            mine = [e for lab, e in events if lab == label and type(e) in (Command, Skipped)
                    and e.direction == direction]
            assert b"".join(e.raw for e in mine) == data


def test_ndpi_roles_and_pairing():
    events, conns = decode(capture_chunks("ndpi_msnms.pcap"))
    roles = Counter(c.role for c in conns.values())
    assert roles == Counter({"SB": 5, "NS": 1})
    ns = next(c for c in conns.values() if c.role == "NS")
    assert ns.version_label == "MSNP11+"   # learnt from UBX, no VER in the capture
    # Every PNG got its QNG.
    pings = [e for _, e in events if type(e).__name__ == "Transaction" and e.cmd == "PNG"]
    assert len(pings) == 40 and all(t.outcome == "answered" for t in pings)
    assert not [e for _, e in events if type(e) is Anomaly and e.severity >= 3]
