"""End to end on loopback: the scripted MSNP service behind a real in-process mitmproxy with our addon.

SOCKS5 (addresses followed as they are), reverse mode (XFR/RNG rewritten to
listeners mitmproxy starts at run time), a flow file written by mitmproxy and
read back, and an HTTP gateway session. Every wait is bounded.
"""

import asyncio
import io
import json
import struct

from mitmproxy import options
from mitmproxy.tools.dump import DumpMaster

from analyzer.analysis.run import Analysis
from analyzer.capture.mitm.flows import read_flow_file
from analyzer.capture.mitm.addon import MsnpAddon
from analyzer.msnp import S2C, CommandReader
from analyzer.outputs.jsonl import JsonLinesWriter
from analyzer.scripted import Endpoint, Peer, ScriptedClient, ScriptedService

LIMIT = 30  # seconds for a whole scenario


async def socks5_open(proxy, host, port):
    reader, writer = await asyncio.open_connection(*proxy)
    writer.write(b"\x05\x01\x00")
    await writer.drain()
    assert await reader.readexactly(2) == b"\x05\x00"
    writer.write(b"\x05\x01\x00\x01" + bytes(int(p) for p in host.split(".")) + struct.pack("!H", port))
    await writer.drain()
    reply = await reader.readexactly(10)
    assert reply[1] == 0, f"SOCKS5 connect failed: {reply!r}"
    return reader, writer


class Socks5Client(ScriptedClient):
    """The scripted client, every connection through a SOCKS5 proxy (a minimal client: no auth, IPv4)."""
    proxy: tuple = ("127.0.0.1", 0)

    async def _connect(self, role, host, port):
        reader, writer = await asyncio.wait_for(socks5_open(self.proxy, host, port), self.timeout)
        endpoint = Endpoint(role, writer.get_extra_info("sockname")[:2], (host, port))
        self.endpoints.append(endpoint)
        return Peer(reader, writer, S2C, endpoint, self.timeout)


async def start_mitm(mode: str, **opts):
    out = io.StringIO()
    analysis = Analysis([JsonLinesWriter(out)])
    master = DumpMaster(options.Options(), with_termlog=False, with_dumper=False)
    master.addons.add(MsnpAddon(analysis))
    master.options.update(mode=[mode], **opts)
    task = asyncio.create_task(master.run())
    proxyserver = master.addons.get("proxyserver")
    for _ in range(250):
        if proxyserver.listen_addrs():
            break
        await asyncio.sleep(0.02)
    assert proxyserver.listen_addrs(), "mitmproxy did not start listening"
    return master, task, analysis, out, proxyserver.listen_addrs()[0][:2]


async def stop_mitm(master, task):
    master.shutdown()
    await asyncio.wait_for(task, 10)


def records(out):
    return [json.loads(line) for line in out.getvalue().splitlines()]


def commands_by_stream(recs):
    """[(role, [(dir, cmd, trid), ...]), ...] sorted, for comparing runs."""
    roles = {r["stream"]: r["role"] for r in recs if r["kind"] == "stream"}
    seqs: dict = {}
    for r in recs:
        if r["kind"] == "command":
            seqs.setdefault(r["stream"], []).append((r["dir"], r["cmd"], r["trid"]))
    return sorted((roles.get(s), seq) for s, seq in seqs.items())


async def socks5_session(version, **opts):
    service = await ScriptedService(timeout=5).start()
    try:
        master, task, analysis, out, proxy = await start_mitm("socks5@127.0.0.1:0", **opts)
        client = Socks5Client(*service.address("DS"), version=version, timeout=5)
        client.proxy = proxy
        await asyncio.wait_for(client.run(), LIMIT)
        await stop_mitm(master, task)
    finally:
        await service.stop()
    return client, service, analysis, records(out)


def test_socks5_follows_xfr_and_rng_without_rewriting():
    client, service, analysis, recs = asyncio.run(socks5_session(8))
    assert not service.errors
    assert len(client.said) == 3  # both switchboards worked
    # the client went where the servers said: the real NS and SB addresses, no rewriting
    assert [e.peer for e in client.endpoints] == [service.address(r) for r in ("DS", "NS", "SB", "SB")]
    assert not [r for r in recs if r["kind"] == "rewrite"]
    roles = sorted(r["role"] for r in recs if r["kind"] == "stream")
    assert roles == ["DS", "NS", "SB", "SB"]
    assert {r["version"] for r in recs if r["kind"] == "stream" and r["role"] in ("DS", "NS")} == {"MSNP8"}
    # every byte the server sent reached the analysis
    server_sent = sum(len(e.sent) for e in service.endpoints)
    assert sum(r["bytes"]["s2c"] for r in recs if r["kind"] == "stream") == server_sent
    assert analysis.totals()["anomalies"] == {}
    xfr = [r for r in recs if r["kind"] == "command" and r["cmd"] == "XFR" and r["dir"] == "s2c"]
    assert xfr[0]["params"][1] == "%s:%d" % service.address("NS")


def test_reverse_mode_rewrites_xfr_and_rng_to_new_listeners():
    async def go():
        service = await ScriptedService(timeout=5).start()
        try:
            ds = service.address("DS")
            master, task, analysis, out, listen = await start_mitm(f"reverse:tcp://{ds[0]}:{ds[1]}@127.0.0.1:0")
            client = ScriptedClient(*listen, version=15, timeout=5)
            await asyncio.wait_for(client.run(), LIMIT)
            modes = list(master.options.mode)
            await stop_mitm(master, task)
        finally:
            await service.stop()
        return client, service, analysis, records(out), modes
    client, service, analysis, recs, modes = asyncio.run(go())
    assert not service.errors and len(client.said) == 3
    rewrites = [r for r in recs if r["kind"] == "rewrite"]
    assert [(r["cmd"], r["target"]) for r in rewrites] == [("XFR", "NS"), ("XFR", "SB"), ("RNG", "SB")]
    assert rewrites[0]["original"] == "%s:%d" % service.address("NS")
    # the client connected to our listeners, never to the real NS/SB
    peers = ["%s:%d" % e.peer for e in client.endpoints]
    assert peers[1] == rewrites[0]["rewritten"] and peers[2] == peers[3] == rewrites[1]["rewritten"]
    assert not set(peers) & {"%s:%d" % service.address(r) for r in ("NS", "SB")}
    assert len(modes) == 3  # the DS listener plus one per distinct target (NS, SB)
    # the servers still saw every connection, through mitmproxy
    assert sorted(e.role for e in service.endpoints) == ["DS", "NS", "SB", "SB"]
    # the analysis holds what the server said (original addresses)
    xfr = [r for r in recs if r["kind"] == "command" and r["cmd"] == "XFR" and r["dir"] == "s2c"]
    assert xfr[0]["params"][1] == rewrites[0]["original"]
    assert sorted(r["role"] for r in recs if r["kind"] == "stream") == ["DS", "NS", "SB", "SB"]
    assert analysis.totals()["anomalies"] == {}


def test_flow_file_read_back_gives_the_live_commands(tmp_path):
    path = tmp_path / "flows.mitm"
    _, _, _, live = asyncio.run(socks5_session(15, save_stream_file=str(path)))
    assert path.stat().st_size > 0
    out = io.StringIO()
    analysis = Analysis([JsonLinesWriter(out)])
    reader = read_flow_file(path, analysis)
    analysis.finish()
    assert reader.tcp_flows == 4
    replay = records(out)
    assert commands_by_stream(replay) == commands_by_stream(live)
    assert len([r for r in replay if r["kind"] == "command"]) == len([r for r in live if r["kind"] == "command"])


# -- the HTTP gateway -----------------------------------------------------------

class ScriptedGateway:
    """An HTTP gateway in front of the scripted service: each session holds one TCP connection to a server."""

    def __init__(self):
        self.sessions: dict = {}
        self.requests = []
        self.count = 0

    async def start(self):
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self

    def address(self):
        return self.server.sockets[0].getsockname()[:2]

    async def stop(self):
        self.server.close()
        for _, w in self.sessions.values():
            w.close()
        await self.server.wait_closed()

    async def _serve(self, reader, writer):
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            lines = head.decode().split("\r\n")
            method, target, _ = lines[0].split(" ")
            headers = dict(line.split(": ", 1) for line in lines[1:] if line)
            body = await reader.readexactly(int(headers.get("content-length", headers.get("Content-Length", 0))))
            path = target.split("://", 1)[-1]
            path = path[path.index("/"):]
            self.requests.append((method, path))
            query = dict(p.split("=", 1) for p in path.split("?", 1)[1].split("&"))
            if query.get("Action") == "open":
                host, port = query["IP"].rsplit(":", 1)
                self.count += 1
                sid = f"{self.count}.1"
                self.sessions[sid] = await asyncio.open_connection(host, int(port))
            else:
                sid = query["SessionID"]
            sreader, swriter = self.sessions[sid]
            if body:
                swriter.write(body)
                await swriter.drain()
            data = b""
            try:  # what the server says within a short window (a real gateway buffers the same way)
                data = await asyncio.wait_for(sreader.read(65536), 0.3)
            except asyncio.TimeoutError:
                pass
            close = "; Session=close" if not data and sreader.at_eof() else ""
            writer.write(("HTTP/1.1 200 OK\r\nContent-Type: application/x-msn-messenger\r\n"
                          f"X-MSN-Messenger: SessionID={sid}; GW-IP=127.0.0.1{close}\r\n"
                          f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n").encode() + data)
            await writer.drain()
        finally:
            writer.close()


async def gateway_post(proxy, gateway, path, body=b""):
    reader, writer = await asyncio.open_connection(*proxy)
    writer.write((f"POST http://{gateway[0]}:{gateway[1]}{path} HTTP/1.1\r\nHost: {gateway[0]}:{gateway[1]}\r\n"
                  "Content-Type: application/x-msn-messenger\r\n"
                  f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode() + body)
    await writer.drain()
    raw = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    head, _, data = raw.partition(b"\r\n\r\n")
    sid = head.split(b"SessionID=", 1)[1].split(b";", 1)[0].decode()
    return sid, data


async def gateway_session(proxy, gateway, ds):
    """VER/CVR/USR to the DS through the gateway: one logical connection in three HTTP round trips."""
    reader = CommandReader(S2C)
    got = []

    async def exchange(path, body, want):
        sid, data = await gateway_post(proxy, gateway, path, body)
        got.extend(e.cmd for e in reader.feed(data) if hasattr(e, "cmd"))
        for _ in range(10):  # bounded polling for the rest of the answer
            if want in got:
                return sid
            sid, data = await gateway_post(proxy, gateway, f"/gateway/gateway.dll?Action=poll&SessionID={sid}")
            got.extend(e.cmd for e in reader.feed(data) if hasattr(e, "cmd"))
        raise AssertionError(f"no {want} from the gateway: {got}")
    sid = await exchange(f"/gateway/gateway.dll?Action=open&Server=NS&IP={ds[0]}:{ds[1]}",
                         b"VER 1 MSNP8 CVR0\r\n", "VER")
    sid = await exchange(f"/gateway/gateway.dll?SessionID={sid}",
                         b"CVR 2 0x0409 winnt 5.1 i386 MSNMSGR 6.0.0602 msmsgs alice@example.com\r\n", "CVR")
    await exchange(f"/gateway/gateway.dll?SessionID={sid}", b"USR 3 TWN I alice@example.com\r\n", "XFR")
    return got


def test_gateway_session_through_mitmproxy():
    async def go():
        service = await ScriptedService(timeout=5).start()
        gateway = await ScriptedGateway().start()
        try:
            master, task, analysis, out, proxy = await start_mitm("regular@127.0.0.1:0")
            got = await asyncio.wait_for(gateway_session(proxy, gateway.address(), service.address("DS")), LIMIT)
            await stop_mitm(master, task)
        finally:
            await gateway.stop()
            await service.stop()
        return got, analysis, records(out), gateway
    got, analysis, recs, gateway = asyncio.run(go())
    assert got == ["VER", "CVR", "XFR"]
    gw = [c for c in analysis.connections.values() if c.id.startswith("gw")]
    assert len(gw) == 1
    conn = gw[0]
    assert conn.role == "DS" and conn.version_label == "MSNP8" and conn.handle == "alice@example.com"
    assert conn.commands == {"VER": 2, "CVR": 2, "USR": 1, "XFR": 1}
    http = [r for r in recs if r["kind"] == "http" and r["via"] == "gateway"]
    assert len(http) == len(gateway.requests) and all(h["stream"] == conn.id for h in http)
    assert http[0]["action"] == "open" and http[0]["status"] == 200
    txns = {(r["cmd"], r["outcome"]) for r in recs if r["kind"] == "transaction"}
    assert ("USR", "answered") in txns
