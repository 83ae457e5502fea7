"""The mitmproxy addon, driven by mitmproxy's own test helpers (taddons, tflow)."""

import asyncio
import io
import json
from pathlib import Path

from mitmproxy import tcp
from mitmproxy.proxy import layer
from mitmproxy.proxy.context import Context
from mitmproxy.proxy.events import DataReceived
from mitmproxy.proxy.layers import TCPLayer, modes
from mitmproxy.test import taddons, tflow

from analyzer.analysis.run import Analysis
from analyzer.capture.mitm.addon import MsnpAddon, msnp_first_line
from analyzer.outputs.jsonl import JsonLinesWriter
from capture.mitm.test_flows import gateway_flow  # the same gateway POST the flow-file tests use

ROOT = Path(__file__).resolve().parents[3]
SESSION = [
    (True, b"VER 1 MSNP8 CVR0\r\n"), (False, b"VER 1 MSNP8 CVR0\r\n"),
    (True, b"USR 2 TWN I alice@example.com\r\n"), (False, b"USR 2 TWN S lc=1033,id=507\r\n"),
    (True, b"USR 3 TWN S t=abc&p=def\r\n"), (False, b"USR 3 OK alice@example.com Alice 1 0\r\n"),
    (True, b"MSG 4 N 5\r\nhello"), (False, b"NLN NLN bob@example.com Bob\r\n"),
]


def chunks(data: bytes, size: int):
    return [data[i:i + size] for i in range(0, len(data), size)]


async def drive(addon, flow, pieces):
    """Feed (from_client, bytes) pieces as separate tcp_message hooks; return what stayed in the flow."""
    addon.tcp_start(flow)
    kept = 0
    for from_client, data in pieces:
        flow.messages.append(tcp.TCPMessage(from_client, data))
        await addon.tcp_message(flow)
        kept = max(kept, len(flow.messages))
    addon.tcp_end(flow)
    return kept


def run_session(split: int, **options):
    out = io.StringIO()
    analysis = Analysis([JsonLinesWriter(out)])
    addon = MsnpAddon(analysis)

    async def go():
        with taddons.context(addon) as tctx:
            if options:
                tctx.configure(addon, **options)
            pieces = [(fc, piece) for fc, data in SESSION for piece in chunks(data, split)]
            return await drive(addon, tflow.ttcpflow(messages=[]), pieces)
    kept = asyncio.run(go())
    analysis.finish()
    return [json.loads(line) for line in out.getvalue().splitlines()], kept, analysis


def test_chunks_are_not_messages():
    """Whole lines, 1-byte chunks and 7-byte chunks decode to the same commands."""
    results = []
    for split in (1000, 1, 7):
        recs, _, _ = run_session(split)
        results.append([(r["dir"], r["cmd"], r["trid"], r["params"] if r["cmd"] != "USR" else None)
                        for r in recs if r["kind"] == "command"])
    assert results[0] == results[1] == results[2]
    assert [c[1] for c in results[0]] == ["VER", "VER", "USR", "USR", "USR", "USR", "MSG", "NLN"]


def test_messages_dropped_after_feeding_unless_kept():
    recs, kept, analysis = run_session(3)
    assert kept == 0  # emptied after each hook: nothing accumulates
    stream = next(r for r in recs if r["kind"] == "stream")
    assert stream["role"] == "NS" and stream["handle"] == "alice@example.com"
    assert stream["bytes"]["c2s"] == sum(len(d) for fc, d in SESSION if fc)
    _, kept, _ = run_session(3, msnp_keep_messages=True)
    assert kept == sum(len(chunks(d, 3)) for _, d in SESSION)


def test_ticket_redacted_in_jsonl():
    recs, _, _ = run_session(5)
    usr = [r for r in recs if r["kind"] == "command" and r["cmd"] == "USR" and r["dir"] == "c2s"][1]
    assert usr["params"][2].startswith("<redacted:")


def test_tcp_error_becomes_a_named_anomaly():
    analysis = Analysis()
    addon = MsnpAddon(analysis)

    async def go():
        with taddons.context(addon):
            f = tflow.ttcpflow(messages=[])
            addon.tcp_start(f)
            f.messages.append(tcp.TCPMessage(True, b"VER 1 MSNP8 CVR0\r\n"))
            await addon.tcp_message(f)
            f.error = tflow.terr("connection reset")
            addon.tcp_error(f)
    asyncio.run(go())
    conn = next(iter(analysis.connections.values()))
    assert conn.closed and conn.anomalies["mitm.connection.error"] == 1


def test_gateway_flow_through_response_hook():
    analysis = Analysis()
    addon = MsnpAddon(analysis)

    async def go():
        with taddons.context(addon):
            addon.response(gateway_flow())
    asyncio.run(go())
    conn = analysis.connections["gw1"]
    assert conn.commands == {"VER": 2} and conn.version_label == "MSNP8"


def test_stock_script_loads_and_builds_its_own_analysis(tmp_path):
    out = tmp_path / "events.jsonl"

    async def go():
        with taddons.context() as tctx:
            module = tctx.script(str(ROOT / "analyzer" / "capture" / "mitm" / "addon.py"))
            tctx.configure(module, msnp_jsonl=str(out), msnp_verbose=False)
            addon = module.addons[0]
            addon.running()
            await drive(addon, tflow.ttcpflow(messages=[]), SESSION)
            addon.done()
    asyncio.run(go())
    recs = [json.loads(line) for line in out.read_text().splitlines()]
    assert sum(r["kind"] == "command" for r in recs) == 8


def test_first_line_sniffing():
    assert msnp_first_line(b"VER 1 MSNP8 CVR0\r\n") is True
    assert msnp_first_line(b"USR 1 alice@example.com 123.456\r\n") is True
    assert msnp_first_line(b"VER 1 MSN") is None and msnp_first_line(b"V") is None
    assert msnp_first_line(b"GET / HTTP/1.1\r\n") is False
    assert msnp_first_line(b"POST /gateway/gateway.dll?Action=open HTTP/1.1\r\n") is False
    assert msnp_first_line(b"\x16\x03\x01\x02\x00") is False


def _next_layer_after_socks(data: bytes, addon):
    with taddons.context(addon) as tctx:
        context = Context(tflow.tclient_conn(), tctx.options)
        modes.Socks5Proxy(context)
        nl = layer.NextLayer(context)
        nl.events.append(DataReceived(context.client, data))
        # what mitmproxy's own nextlayer addon picks for a line that looks like HTTP
        nl.layer = _http_layer(context)
        addon.next_layer(nl)
        return nl, context


def _http_layer(context):
    from mitmproxy.proxy.layers import HttpLayer
    from mitmproxy.proxy.layers.http import HTTPMode
    return HttpLayer(context, HTTPMode.transparent)


def test_next_layer_turns_msnp_into_tcp_and_leaves_http():
    nl, context = _next_layer_after_socks(b"VER 1 MSNP8 CVR0\r\n", MsnpAddon(Analysis()))
    assert isinstance(nl.layer, TCPLayer)
    assert [type(x).__name__ for x in context.layers] == ["Socks5Proxy", "TCPLayer"]
    nl, _ = _next_layer_after_socks(b"POST /gateway/gateway.dll?Action=open HTTP/1.1\r\n", MsnpAddon(Analysis()))
    assert type(nl.layer).__name__ == "HttpLayer"
    nl, _ = _next_layer_after_socks(b"VER 1 MS", MsnpAddon(Analysis()))
    assert nl.layer is None  # wait for the whole first line


def test_unroutable_xfr_in_reverse_mode_is_named_and_forwarded():
    from mitmproxy.proxy.mode_specs import ProxyMode
    analysis = Analysis()
    addon = MsnpAddon(analysis)
    line = b"XFR 5 NS not-an-address:x 0\r\n"

    async def go():
        with taddons.context(addon):
            f = tflow.ttcpflow(messages=[])
            f.client_conn.proxy_mode = ProxyMode.parse("reverse:tcp://127.0.0.1:1863")
            addon.tcp_start(f)
            f.messages.append(tcp.TCPMessage(False, line))
            msg = f.messages[-1]
            await addon.tcp_message(f)
            addon.tcp_end(f)
            return msg.content
    forwarded = asyncio.run(go())
    assert forwarded == line
    conn = next(iter(analysis.connections.values()))
    assert conn.anomalies["mitm.rewrite.skipped"] == 1


def test_reverse_mode_follows_only_targets_the_policy_allows():
    # The same target policy as the proxy: the reverse target's /24 (here 127.0.0.0/24), nothing else.
    from mitmproxy.proxy.mode_specs import ProxyMode
    analysis = Analysis()
    addon = MsnpAddon(analysis)
    line = b"XFR 5 SB 127.1.0.5:6000 CKI x\r\n"

    async def go():
        with taddons.context(addon) as tctx:
            f = tflow.ttcpflow(messages=[])
            f.client_conn.proxy_mode = ProxyMode.parse("reverse:tcp://127.0.0.1:1863")
            addon.tcp_start(f)
            f.messages.append(tcp.TCPMessage(False, line))
            msg = f.messages[-1]
            await addon.tcp_message(f)
            allowed = addon._route(f, "SB", "127.0.0.9", 6001)
            own = addon._route(f, "SB", "127.0.0.1", allowed[1])  # one of our own listeners: a loop
            tctx.options.update(msnp_allow_target=["127.1.0.0/24"])
            addon._policies.clear()
            named = addon._route(f, "SB", "127.1.0.5", 6000)
            addon.tcp_end(f)
            return msg.content, allowed, own, named
    forwarded, allowed, own, named = asyncio.run(go())
    assert forwarded == line and addon.listeners.keys() >= {("127.0.0.9", 6001), ("127.1.0.5", 6000)}
    conn = next(iter(analysis.connections.values()))
    assert conn.anomalies["proxy.target_refused"] == 1
    assert isinstance(allowed, tuple) and "own listeners" in own and isinstance(named, tuple)
