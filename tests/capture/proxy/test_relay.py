"""The live proxy end to end over loopback: a scripted login through DS, NS and two switchboards."""

from __future__ import annotations

import asyncio
import importlib.util
import io
import json
import sys
from collections import defaultdict

import pytest
from scapy.layers.inet import TCP
from scapy.layers.l2 import Ether
from scapy.utils import RawPcapNgReader

from analyzer.analysis.run import Analysis
from analyzer.capture.pcapng_writer import PcapngWriter
from analyzer.capture.proxy.relay import LoopUnavailable, Proxy, loop_factory, run
from analyzer.msnp import C2S, S2C, Command, CommandReader
from analyzer.outputs.jsonl import JsonLinesWriter
from analyzer.analysis.redact import Redactor
from analyzer.scripted import ScriptedClient, ScriptedService


async def _session(version: int, record_path):
    service = await ScriptedService().start()
    out = io.StringIO()
    analysis = Analysis([JsonLinesWriter(out, Redactor(enabled=False), flush=True)])
    f = open(record_path, "wb")
    proxy = await Proxy(service.address("DS"), analysis, listen=("127.0.0.1", 0),
                        recorder=PcapngWriter(f)).start()
    client = ScriptedClient(*proxy.address, version=version, timeout=5)
    try:
        await asyncio.wait_for(client.run(), 20)
    finally:
        await proxy.stop()
        await service.stop()
        analysis.finish()
        f.close()
    records = [json.loads(line) for line in out.getvalue().splitlines()]
    return service, proxy, client, records


def _commands(data: bytes, direction: str, version_hint=None):
    reader = CommandReader(direction)
    events = reader.feed(bytes(data)) + reader.close()
    return [e for e in events if type(e) is Command]


HAVE_UVLOOP = importlib.util.find_spec("uvloop") is not None
LOOPS = [pytest.param("asyncio"),
         pytest.param("uvloop", marks=pytest.mark.skipif(not HAVE_UVLOOP, reason="uvloop not installed"))]


@pytest.fixture(params=[(8, "asyncio"), (15, "asyncio"), (8, "uvloop"), (15, "uvloop")],
                ids=["MSNP8-asyncio", "MSNP15-asyncio", "MSNP8-uvloop", "MSNP15-uvloop"])
def session(request, tmp_path):
    version, loop = request.param
    if loop == "uvloop" and not HAVE_UVLOOP:
        pytest.skip("uvloop not installed")
    path = tmp_path / "session.pcapng"
    service, proxy, client, records = run(_session(version, path), loop)
    return version, service, proxy, client, records, path


@pytest.mark.parametrize("choice", LOOPS)
def test_run_uses_the_chosen_loop(choice):
    async def which():
        return type(asyncio.get_running_loop()).__module__
    module = run(which(), choice)
    assert module.startswith("uvloop") if choice == "uvloop" else module.startswith("asyncio")
    assert loop_factory(choice)[1] == choice


def test_auto_loop_is_uvloop_when_importable_else_asyncio(monkeypatch):
    assert loop_factory("auto")[1] == ("uvloop" if HAVE_UVLOOP else "asyncio")
    monkeypatch.setitem(sys.modules, "uvloop", None)  # makes `import uvloop` raise ImportError
    factory, name = loop_factory("auto")
    assert name == "asyncio" and factory is asyncio.new_event_loop
    assert loop_factory("asyncio")[1] == "asyncio"
    with pytest.raises(LoopUnavailable, match="--loop asyncio"):
        loop_factory("uvloop")
    with pytest.raises(ValueError):
        loop_factory("trio")


def test_every_connection_goes_through_the_proxy(session):
    version, service, proxy, client, records, _ = session
    assert service.errors == []
    assert [e.role for e in service.endpoints] == ["DS", "NS", "SB", "SB"]
    # the scripted servers saw every connection come from the proxy's upstream sockets
    assert [tuple(e.peer) for e in service.endpoints] == [tuple(a) for a in proxy.upstream_locals]
    # and the client only ever connected to the proxy's listeners
    ours = {listener.address[1] for listener in proxy.listeners.values()}
    assert {e.peer[1] for e in client.endpoints} <= ours
    assert len(client.said) == 3 and "XFR 1 SB 1.2.3.4:1863 CKI x" in client.said[0]


def test_bytes_equal_except_rewritten_addresses(session):
    version, service, proxy, client, records, _ = session
    rewrites = defaultdict(list)
    for rec in records:
        if rec["kind"] == "rewrite":
            rewrites[rec["stream"]].append(rec)
    assert [(r["cmd"], r["target"]) for r in rewrites["1"]] == [("XFR", "NS")]
    assert [(r["cmd"], r["target"]) for r in rewrites["2"]] == [("XFR", "SB"), ("RNG", "SB")]
    assert set(rewrites) == {"1", "2"}
    for stream, (cl, sv) in enumerate(zip(client.endpoints, service.endpoints), 1):
        assert bytes(cl.sent) == bytes(sv.received), f"stream {stream} c2s"
        expected = bytearray(sv.sent)
        for r in sorted(rewrites[str(stream)], key=lambda r: -r["offset"]):
            end = expected.index(b"\n", r["offset"]) + 1
            line = bytes(expected[r["offset"]:end])
            assert line.count(r["original"].encode()) >= 1
            expected[r["offset"]:end] = line.replace(r["original"].encode(), r["rewritten"].encode(), 1)
            assert r["original"] != r["rewritten"]
        assert bytes(cl.received) == bytes(expected), f"stream {stream} s2c"
    # payload text that looks like an XFR line went through untouched
    assert b"X-Note: XFR 1 SB 1.2.3.4:1863 CKI x\r\n" in client.endpoints[1].received


def test_json_events_hold_every_command_with_original_addresses(session):
    version, service, proxy, client, records, _ = session
    by_stream = defaultdict(list)
    for rec in records:
        if rec["kind"] == "command":
            by_stream[rec["stream"]].append((rec["dir"], rec["cmd"], rec["trid"]))
    for stream, sv in enumerate(service.endpoints, 1):
        want_c2s = [(C2S, c.cmd, c.trid) for c in _commands(sv.received, C2S)]
        want_s2c = [(S2C, c.cmd, c.trid) for c in _commands(sv.sent, S2C)]
        got = by_stream[str(stream)]
        assert [g for g in got if g[0] == C2S] == want_c2s
        assert [g for g in got if g[0] == S2C] == want_s2c
    xfr = [r for r in records if r["kind"] == "command" and r["cmd"] == "XFR" and r["dir"] == S2C]
    ns, sb = service.address("NS"), service.address("SB")
    assert xfr[0]["params"][1] == f"{ns[0]}:{ns[1]}"  # the upstream address, not ours
    assert xfr[1]["params"][1] == f"{sb[0]}:{sb[1]}"
    streams = sorted((r for r in records if r["kind"] == "stream"), key=lambda r: int(r["stream"]))
    assert [s["role"] for s in streams] == ["DS", "NS", "SB", "SB"]
    assert not [r for r in records if r["kind"] == "anomaly" and r["severity"] == "error"]


def test_recording_holds_what_the_client_saw(session):
    version, service, proxy, client, records, path = session
    flows = defaultdict(bytearray)
    flags = defaultdict(list)
    with RawPcapNgReader(str(path)) as reader:
        for data, _ in reader:
            tcp = Ether(data)[TCP]
            key = (tcp.sport, tcp.dport)
            flows[key] += bytes(tcp.payload)
            flags[key].append(str(tcp.flags))
    for cl in client.endpoints:
        port, listener_port = cl.local[1], cl.peer[1]
        assert bytes(flows[(port, listener_port)]) == bytes(cl.sent)
        assert bytes(flows[(listener_port, port)]) == bytes(cl.received)  # rewritten lines included
        assert flags[(port, listener_port)][0] == "S" and "FA" in flags[(port, listener_port)]
        assert flags[(listener_port, port)][0] == "SA" and "FA" in flags[(listener_port, port)]


def test_stream_records_say_both_legs(session):
    version, service, proxy, client, records, _ = session
    streams = sorted((r for r in records if r["kind"] == "stream"), key=lambda r: int(r["stream"]))
    ups = sorted(service.endpoints, key=lambda e: e.peer[1])  # the proxy's upstream sockets
    for rec, mine, theirs in zip(streams, client.endpoints, service.endpoints):
        near, far = rec["legs"]
        # the client's connection to our listener, and ours to the server: both existed
        assert near == {"leg": "client", "client": "%s:%d" % mine.local, "server": "%s:%d" % mine.peer}
        assert far == {"leg": "upstream", "client": "%s:%d" % theirs.peer, "server": "%s:%d" % theirs.local}
        assert rec["client"] == near["client"] and rec["server"] == far["server"]
    assert len(ups) == len(streams)


def test_switchboards_inherit_the_version_their_ns_negotiated():
    from analyzer.analysis.linking import Linker, LinkWriter

    async def go():
        service = await ScriptedService().start()
        out = io.StringIO()
        writer = JsonLinesWriter(out, Redactor(enabled=False), flush=True)
        linker = Linker()
        analysis = Analysis([linker, writer, LinkWriter(linker, [writer])])
        proxy = await Proxy(service.address("DS"), analysis, listen=("127.0.0.1", 0)).start()
        try:
            await asyncio.wait_for(ScriptedClient(*proxy.address, version=15, timeout=5).run(), 20)
        finally:
            await proxy.stop()
            await service.stop()
            analysis.finish()
        return [json.loads(line) for line in out.getvalue().splitlines()]
    records = run(go(), "asyncio")
    versions = {r["role"]: r["version"] for r in records if r["kind"] == "stream"}
    assert versions == {"DS": "MSNP15", "NS": "MSNP15", "SB": "MSNP15"}
