"""A capture holding both legs of a relay: client<->proxy and proxy<->server, as tcpdump on the
proxy's host would see them. Each NS must link to the switchboards of its own leg.

The session runs for real through the proxy against the scripted service on loopback; the two
legs are then written into one pcapng from what each end sent and received (the client's view
of the client leg, the service's view of the upstream leg), the upstream leg a moment after the
client leg as on the wire. Both legs carry the same switchboard cookies.
"""

import asyncio
import io
import json

import pytest

from analyzer.analysis.run import Analysis
from analyzer.capture.pcapng_writer import PcapngWriter, TcpRecorder
from analyzer.capture.proxy.relay import Proxy
from analyzer.cli.main import main
from analyzer.scripted import ScriptedClient, ScriptedService

BASE = 1_700_000_000.0


async def _relayed(version):
    service = await ScriptedService(timeout=5).start()
    proxy = await Proxy(service.address("DS"), Analysis([]), listen=("127.0.0.1", 0)).start()
    client = ScriptedClient(*proxy.address, version=version, timeout=5)
    try:
        await asyncio.wait_for(client.run(), 20)
    finally:
        await proxy.stop()
        await service.stop()
    return client, service


def write_both_legs(path, client, service):
    """Connection i of the session at BASE + 10 i, timed as on the proxy's host: the client leg
    opens first and the proxy then connects upstream; the client's bytes cross the client leg
    before the upstream one, the server's bytes cross the upstream leg first."""
    assert [e.role for e in client.endpoints] == [e.role for e in service.endpoints]
    with open(path, "wb") as f:
        writer = PcapngWriter(f)
        for i, (c, s) in enumerate(zip(client.endpoints, service.endpoints)):
            t = BASE + 10 * i
            near = TcpRecorder(writer, c.local, c.peer)   # client <-> proxy
            far = TcpRecorder(writer, s.peer, s.local)    # proxy <-> server
            near.open(t)
            far.open(t + 0.01)
            near.data("c2s", bytes(c.sent), t + 0.1)
            far.data("c2s", bytes(s.received), t + 0.11)
            far.data("s2c", bytes(s.sent), t + 0.2)
            near.data("s2c", bytes(c.received), t + 0.21)
            for rec, d in ((near, 0.0), (far, 0.01)):
                rec.end("c2s", t + 0.3 + d)
                rec.end("s2c", t + 0.3 + d)


@pytest.mark.parametrize("version", [8, 15])
def test_each_leg_links_to_its_own_switchboards(tmp_path, version, capsys):
    client, service = asyncio.run(_relayed(version))
    assert not service.errors and len(client.said) == 3
    pcap = tmp_path / "both_legs.pcapng"
    write_both_legs(pcap, client, service)
    out = tmp_path / "out.jsonl"
    assert main(["analyze", str(pcap), "--json", str(out), "--fail-on", "never"]) == 0
    recs = [json.loads(line) for line in out.read_text().splitlines()]
    streams = {r["stream"]: r for r in recs if r["kind"] == "stream"}
    assert sorted(r["role"] for r in streams.values()) == ["DS", "DS", "NS", "NS", "SB", "SB", "SB", "SB"]
    proxy_host_ports = {"%s:%d" % e.peer for e in client.endpoints}
    leg = {sid: "client" if r["server"] in proxy_host_ports else "upstream" for sid, r in streams.items()}
    assert sorted(leg.values()) == ["client"] * 4 + ["upstream"] * 4
    links = [r for r in recs if r["kind"] == "link"]
    assert all(r["linked"] for r in links), [r for r in links if not r["linked"]]
    assert sorted(r["type"] for r in links) == ["ds_ns", "ds_ns"] + ["ns_sb"] * 4
    for r in links:
        # each link stays on its leg, and goes where the line that sent the client said
        assert leg[r["from"]] == leg[r["to"]], r
        assert streams[r["to"]]["server"] == r["target"], r
        if r["type"] == "ns_sb":
            assert r["target_matches_server"] is True, r
    sessions = [r for r in recs if r["kind"] == "session"]
    assert len(sessions) == 2 and all(len(s["streams"]) == 4 for s in sessions)
    assert all(len({leg[sid] for sid in s["streams"]}) == 1 for s in sessions)


def test_a_transcript_switchboard_is_not_linked_to_an_unrelated_capture(tmp_path, capsys):
    # The sample switchboard transcript presents the same cookie as the sample pcap's XFR SB,
    # but its times are relative (seconds from 0): it cannot be the switchboard of that XFR.
    from pathlib import Path
    root = Path(__file__).resolve().parents[2] / "captures"
    out = tmp_path / "out.jsonl"
    main(["export", str(root / "msnp8_switchboard_chat.msnp"), str(root / "msnp8_login_chat.pcap"),
          "-o", str(tmp_path / "t.html"), "--json", str(out), "--fail-on", "never"])
    recs = [json.loads(line) for line in out.read_text().splitlines()]
    links = [r for r in recs if r["kind"] == "link" and r["linked"]]
    assert links and all(not str(r["to"]).startswith("1:") for r in links)
    # and when the capture's own switchboard is missing, its XFR still does not take the
    # transcript's connection (the only one left with that cookie): time rules it out
    from analyzer.analysis.linking import Linker
    linker = Linker()
    analysis = Analysis([linker])
    ns = analysis.open(conn_id="ns", client="10.0.0.1:5000", server="10.0.0.2:1863")
    analysis.feed(ns, "c2s", b"XFR 13 SB\r\n", BASE)
    analysis.feed(ns, "s2c", b"XFR 13 SB 10.0.0.3:1863 CKI 17262740.1050826919.32308\r\n", BASE + 0.1)
    sb = analysis.open(conn_id="t:1")
    analysis.feed(sb, "c2s", b"USR 1 alice@example.com 17262740.1050826919.32308\r\n", 0.05)
    analysis.finish()
    links = [r for r in linker.records() if r["kind"] == "link" and r["type"] == "ns_sb"]
    assert [(r["from"], r["to"], r["linked"]) for r in links] == [("ns", None, False), (None, "t:1", False)]
    # the same switchboard a moment after the XFR, on the capture's clock, is linked
    linker = Linker()
    analysis = Analysis([linker])
    ns = analysis.open(conn_id="ns", client="10.0.0.1:5000", server="10.0.0.2:1863")
    analysis.feed(ns, "s2c", b"XFR 13 SB 10.0.0.3:1863 CKI 17262740.1050826919.32308\r\n", BASE + 0.1)
    sb = analysis.open(conn_id="sb")
    analysis.feed(sb, "c2s", b"USR 1 alice@example.com 17262740.1050826919.32308\r\n", BASE + 0.3)
    analysis.finish()
    assert [(r["from"], r["to"]) for r in linker.records() if r["kind"] == "link"] == [("ns", "sb")]
