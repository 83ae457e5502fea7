"""Golden tests: each committed session transcript decodes to its committed JSON Lines, byte for byte.

Regenerate after a deliberate change with `UPDATE_GOLDEN=1 python3 -m pytest tests/test_golden.py`
and review the diff by eye (every transaction paired right, SYN blocks counted)
before committing. Each session also has explicit facts asserted below, so a
wrong golden file cannot hide a regression on its own.
"""

from __future__ import annotations

import io
import json
import os
from collections import Counter
from pathlib import Path

import pytest

from analyzer.analysis.run import Analysis
from analyzer.outputs.jsonl import JsonLinesWriter
from analyzer.analysis.redact import Redactor
from analyzer.msnp.transcript import parse
from captures.make_transcripts import render
from captures.sessions import CLEAN_SESSIONS, SESSIONS

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = Path(__file__).resolve().parents[1] / "golden"
NAMES = sorted(SESSIONS)


def decode_transcript(name: str) -> str:
    out = io.StringIO()
    analysis = Analysis([JsonLinesWriter(out, Redactor(key=b"golden"))])
    conns = {}
    for chunk in parse((ROOT / "captures" / f"{name}.msnp").read_bytes()):
        conn = conns.get(chunk.conn)
        if conn is None:
            conn = conns[chunk.conn] = analysis.open(conn_id=chunk.conn)
        analysis.feed(conn, chunk.direction, chunk.data, chunk.ts)
    analysis.finish()
    return out.getvalue()


def records(name: str) -> list[dict]:
    return [json.loads(line) for line in decode_transcript(name).splitlines()]


@pytest.mark.parametrize("name", NAMES)
def test_transcript_is_up_to_date_with_the_session(name):
    assert (ROOT / "captures" / f"{name}.msnp").read_text("utf-8") == render(name), \
        "run python3 captures/make_transcripts.py"


@pytest.mark.parametrize("name", NAMES)
def test_decoding_matches_the_golden_jsonl(name):
    got = decode_transcript(name)
    path = GOLDEN / f"{name}.jsonl"
    if os.environ.get("UPDATE_GOLDEN") == "1":
        GOLDEN.mkdir(exist_ok=True)
        path.write_text(got, "utf-8")
    assert path.exists(), f"{path} missing: run with UPDATE_GOLDEN=1"
    assert got == path.read_text("utf-8")


# -- facts per session ------------------------------------------------------------

def by_kind(recs, kind):
    return [r for r in recs if r["kind"] == kind]


def txn(recs, stream, cmd, trid):
    found = [r for r in by_kind(recs, "transaction")
             if r["stream"] == stream and r["cmd"] == cmd and r["trid"] == trid]
    assert len(found) == 1, (stream, cmd, trid)
    return found[0]


def replies(t) -> list[str]:
    return [r["cmd"] for r in t["replies"]]


EXPECTED_COMMANDS = {"msnp2": 47, "msnp8": 67, "msnp12": 57, "msnp15": 58, "msnp18": 56, "anomalies": 27}


@pytest.mark.parametrize("name", NAMES)
def test_command_counts_and_streams(name):
    recs = records(name)
    assert len(by_kind(recs, "command")) == EXPECTED_COMMANDS[name]
    streams = {r["stream"]: r for r in by_kind(recs, "stream")}
    assert set(streams) == {c.conn for c in SESSIONS[name]}
    assert sum(s["commands"] for s in streams.values()) == EXPECTED_COMMANDS[name]
    for label, s in streams.items():
        assert s["role"] == {"ds": "DS", "ns": "NS"}.get(label, "SB")
        assert s["handle"] == "alice@example.com"
    assert not by_kind(recs, "skipped")


@pytest.mark.parametrize("name", CLEAN_SESSIONS)
def test_clean_sessions_have_no_anomalies_and_no_unanswered(name):
    recs = records(name)
    assert by_kind(recs, "anomaly") == []
    outcomes = Counter(t["outcome"] for t in by_kind(recs, "transaction"))
    assert outcomes["unanswered"] == 0
    version = {"msnp2": "MSNP2", "msnp8": "MSNP8", "msnp12": "MSNP12", "msnp15": "MSNP15",
               "msnp18": "MSNP18"}[name]
    assert {s["version"] for s in by_kind(recs, "stream") if s["stream"] in ("ds", "ns")} == {version}


def test_msnp2_facts():
    recs = records("msnp2")
    syn = txn(recs, "ns", "SYN", 8)
    assert replies(syn) == ["SYN", "GTC", "BLP"] + ["LST"] * 6   # LST lines carry the TrID
    assert replies(txn(recs, "ns", "CHG", 9)) == ["CHG", "ILN", "ILN"]
    rem = txn(recs, "ns", "REM", 10)
    assert (rem["outcome"], rem["error"]) == ("error", "216 not on list")
    assert replies(txn(recs, "ds", "USR", 3)) == ["XFR"]
    assert replies(txn(recs, "sb1", "CAL", 2)) == ["CAL", "JOI"]
    md5 = [r for r in by_kind(recs, "command") if r["cmd"] == "USR" and r["trid"] == 7 and r["dir"] == "c2s"][0]
    assert md5["params"][2].startswith("<redacted:")


def test_msnp8_facts():
    recs = records("msnp8")
    syn = txn(recs, "ns", "SYN", 8)
    assert replies(syn) == ["SYN", "GTC", "BLP", "PRP", "LSG", "LSG", "LST", "BPR", "LST", "LST"]
    assert replies(txn(recs, "ns", "CHG", 9)) == ["CHG", "ILN", "ILN"]
    assert replies(txn(recs, "ns", "QRY", 10)) == ["QRY"]
    assert txn(recs, "ns", "PNG", None)["outcome"] == "answered"
    assert txn(recs, "ns", "REM", 12)["outcome"] == "error"
    assert replies(txn(recs, "sb1", "CAL", 2)) == ["CAL", "JOI"]
    assert txn(recs, "sb1", "MSG", 3)["outcome"] == "no_reply_expected"     # typing, U
    assert replies(txn(recs, "sb1", "MSG", 4)) == ["ACK"]                   # text, A
    assert txn(recs, "sb1", "MSG", 5)["outcome"] == "no_reply_expected"     # N, no NAK came
    assert replies(txn(recs, "sb2", "ANS", 1)) == ["IRO", "ANS"]
    qry = [r for r in by_kind(recs, "command") if r["cmd"] == "QRY" and r["dir"] == "c2s"][0]
    assert qry["payload"].startswith("<redacted:") and qry["payload_len"] == 32
    # The XFR's cookie and the switchboard USR's cookie redact to the same mask.
    xfr = [r for r in by_kind(recs, "command") if r["cmd"] == "XFR" and r["dir"] == "s2c" and r["stream"] == "ns"][0]
    usr = [r for r in by_kind(recs, "command") if r["cmd"] == "USR" and r["stream"] == "sb1" and r["dir"] == "c2s"][0]
    assert xfr["params"][3] == usr["params"][1] and xfr["params"][3].startswith("<redacted:")


def test_msnp12_facts():
    recs = records("msnp12")
    assert replies(txn(recs, "ns", "SYN", 8)) == ["SYN", "GTC", "BLP", "PRP", "LSG", "LST", "LST"]
    assert replies(txn(recs, "ns", "GCF", 9)) == ["GCF"]
    assert replies(txn(recs, "ns", "UUX", 11)) == ["UUX"]
    ubx = [r for r in by_kind(recs, "command") if r["cmd"] == "UBX"]
    assert [u["payload_len"] for u in ubx] == [len("<Data><PSM>At the beach</PSM><CurrentMedia></CurrentMedia></Data>"), 0]
    assert [r["params"] for r in by_kind(recs, "command") if r["cmd"] == "QNG"] == [["45"], ["50"]]


def test_msnp15_facts():
    recs = records("msnp15")
    adl = txn(recs, "ns", "ADL", 9)
    assert replies(adl) == ["ADL"] and adl["outcome"] == "answered"
    assert replies(txn(recs, "ns", "RML", 13)) == ["RML"]
    cmds = by_kind(recs, "command")
    ok = [r for r in cmds if r["cmd"] == "ADL" and r["dir"] == "s2c" and r["trid"] == 9][0]
    assert ok["params"] == ["OK"] and ok["payload_len"] is None
    push = [r for r in cmds if r["cmd"] == "ADL" and r["dir"] == "s2c" and r["trid"] == 0][0]
    assert push["payload"].startswith("<ml")
    assert [r["params"][:1] for r in cmds if r["cmd"] == "UBX"] == [["bob@example.com"], ["carol@example.com"]]
    assert replies(txn(recs, "sb1", "MSG", 5)) == ["ACK"]


def test_msnp18_facts():
    recs = records("msnp18")
    assert replies(txn(recs, "sb1", "CAL", 2)) == ["CAL", "JOI", "JOI"]   # both of bob's endpoints
    assert replies(txn(recs, "sb2", "ANS", 1)) == ["IRO", "IRO", "ANS"]
    rng = [r for r in by_kind(recs, "command") if r["cmd"] == "RNG"][0]
    assert rng["trid"] is None and rng["params"][0] == "8f2c6a51d3b94e0e9d7c2b1a0f9e8d7c"
    assert [r["params"] for r in by_kind(recs, "command") if r["cmd"] == "QNG"] == [["50"], ["48"]]


def test_anomalies_session_raises_exactly_the_seeded_anomalies():
    recs = records("anomalies")
    names = Counter(r["name"] for r in by_kind(recs, "anomaly"))
    assert names == Counter({
        "msnp.whitespace.multiple_spaces": 1, "msnp.whitespace.tab": 1, "msnp.whitespace.trailing": 1,
        "msnp.whitespace.leading": 1, "msnp.newline.bare_lf": 1,
        "msnp.reply.out_of_order": 1,       # ADD 11 answered before the earlier XFR 10: one reply overtook
        "msnp.async.interleaved": 2,        # NLN inside the SYN block, NLN between two ILNs (not the NLN before the XFR and ADD replies)
    })
    ooo = [r for r in by_kind(recs, "anomaly") if r["name"] == "msnp.reply.out_of_order"][0]
    assert ooo["trid"] == 11 and "1 earlier request(s)" in ooo["detail"]
    assert replies(txn(recs, "ns", "SYN", 5)) == ["SYN", "GTC", "BLP", "LSG", "LST", "LST"]
    assert txn(recs, "ns", "XFR", 10)["outcome"] == "answered"


# Every test here runs on both implementations: the pure-Python reference and the compiled core.
pytestmark = pytest.mark.usefixtures("implementation")
