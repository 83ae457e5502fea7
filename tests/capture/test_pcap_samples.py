"""The sample captures in captures/: what make_pcaps.py makes, and what the analyzer finds in them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import resegment as R
from analyzer.analysis.run import Analysis
from captures import make_pcaps
from captures.sessions import ANOMALY_NAMES, CONNECTIONS, SESSIONS

CAPTURES = Path(__file__).resolve().parents[2] / "captures"


def transcript_signature(session: str):
    """The command sequences the codec finds in the session fed directly, without TCP."""
    got = R.Collector()
    analysis = Analysis([got])
    conns = {}
    for chunk in SESSIONS[session]:
        conn = conns.get(chunk.conn) or conns.setdefault(chunk.conn, analysis.open())
        analysis.feed(conn, chunk.direction, chunk.data, chunk.ts)
    analysis.finish()
    return got.signature()


def test_committed_samples_are_what_the_script_makes(tmp_path):
    for path in make_pcaps.main(tmp_path):
        assert path.read_bytes() == (CAPTURES / path.name).read_bytes(), path.name


@pytest.mark.parametrize("filename", sorted(make_pcaps.SAMPLES))
def test_sample_decodes_like_its_session(filename):
    session, pcapng = make_pcaps.SAMPLES[filename]
    analysis, got = R.analyze(CAPTURES / filename)
    assert got.signature() == transcript_signature(session)
    assert not {n for n in got.names() if n.startswith(("tcp.", "capture."))}
    # Each connection at the addresses the session (and its XFR/RNG lines) name, sides right.
    found = sorted((c.client, c.server) for c in analysis.connections.values())
    assert found == sorted(CONNECTIONS[session].values())


def test_msnp8_sample_has_ds_ns_and_switchboards():
    analysis, got = R.analyze(CAPTURES / "msnp8_login_chat.pcap")
    roles = {c.server: c.role for c in analysis.connections.values()}
    assert roles == {"127.0.0.1:1863": "DS", "127.0.0.2:1863": "NS", "127.0.0.3:1864": "SB", "127.0.0.4:1864": "SB"}
    assert {c.version_label for c in analysis.connections.values() if c.role != "SB"} == {"MSNP8"}
    # The stream ids follow first sight: the DS first.
    assert analysis.connections["1"].role == "DS"


def test_anomaly_sample_raises_each_seeded_anomaly():
    analysis, got = R.analyze(CAPTURES / "msnp8_anomalies.pcap")
    assert ANOMALY_NAMES <= got.names()


def test_readme_first_command_runs_on_the_sample():
    r = subprocess.run([sys.executable, "-m", "analyzer", "analyze", str(CAPTURES / "msnp8_login_chat.pcap")],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "MSNP connections" in r.stdout and "DS" in r.stdout and "SB" in r.stdout


# Every test here runs on both readers: the pure-Python reference and the compiled core.
pytestmark = pytest.mark.usefixtures("implementation")
