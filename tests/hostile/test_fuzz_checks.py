"""The invariant checks of bench/fuzz_inputs.py, run on the hostile inputs, cut and flipped copies
of them, and every input the fuzzer ever saved (tests/hostile/fuzz_crashes/)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1] / "bench"))
import fuzz_inputs  # noqa: E402

sys.path.pop(0)

CRASHES = sorted((HERE / "fuzz_crashes").glob("*-*")) if (HERE / "fuzz_crashes").exists() else []


def variants(data: bytes) -> list[bytes]:
    """The input, cut at 23 places, and with one byte flipped at 23 places (deterministic)."""
    out = [data]
    step = max(1, len(data) // 23)
    for i in range(0, len(data), step):
        out.append(data[:i])
        out.append(data[:i] + bytes([data[i] ^ 0xA5]) + data[i + 1:])
    return out


@pytest.mark.parametrize("name", sorted(p.name for p in HERE.glob("*.pcapng")))
def test_pcapng_check_holds_on_hostile_inputs_and_their_damaged_copies(name):
    for data in variants((HERE / name).read_bytes()):
        fuzz_inputs.check_pcapng(data)


@pytest.mark.parametrize("name", sorted(p.name for p in HERE.glob("flow_*.mitm") if p.stat().st_size < 10000))
def test_flow_check_holds_on_hostile_inputs_and_their_damaged_copies(name):
    for data in variants((HERE / name).read_bytes()):
        fuzz_inputs.check_flows(data)


def test_the_checks_catch_the_bugs_of_the_issue(monkeypatch):
    # The readers as they were: scapy's TypeError on a Simple Packet Block, mitmproxy's
    # KeyError on a record without `type`; the checks let neither through.
    from analyzer.capture import pcapng
    from analyzer.capture.mitm import flows

    def spb_type_error(self, *args):
        raise TypeError("unsupported operand type(s) for <<: 'NoneType' and 'int'")

    monkeypatch.setattr(pcapng.PcapngBlocks, "_packet", spb_type_error)
    with pytest.raises(TypeError):
        fuzz_inputs.check_pcapng((HERE / "simple_packets.pcapng").read_bytes())

    def no_type(tag, data):
        raise KeyError("type")

    monkeypatch.setattr(flows, "flow_from_record", no_type)
    with pytest.raises(KeyError):
        fuzz_inputs.check_flows((HERE / "flow_no_type.mitm").read_bytes())


@pytest.mark.parametrize("path", CRASHES, ids=[p.name for p in CRASHES])
def test_every_saved_fuzz_finding_now_holds(path):
    fuzz_inputs.CHECKS[path.name.split("-")[0]](path.read_bytes())
