"""The proxy under faults: unreachable upstream, cut payloads, garbage, resets, back-pressure, stop()."""

from __future__ import annotations

import asyncio
import hashlib
import os
import socket
import struct

import pytest

from analyzer.analysis.run import Analysis
from analyzer.capture.proxy.relay import WRITE_HIGH_WATER, Proxy
from analyzer.msnp import S2C
from analyzer.scripted import EchoServer
from capture.proxy.recording import Recording

LOOP = "127.0.0.1"


def run(coro, timeout=20):
    return asyncio.run(asyncio.wait_for(coro, timeout))


async def read_all(reader, limit=30):
    return await asyncio.wait_for(reader.read(), limit)


async def until(condition, timeout=20.0):
    """Wait for `condition()` to be true (a bounded wait on a state, not on a time)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not (value := condition()):
        if loop.time() > deadline:
            raise AssertionError(f"condition not met in {timeout} s")
        await asyncio.sleep(0.01)
    return value


def free_port() -> int:
    with socket.socket() as s:
        s.bind((LOOP, 0))
        return s.getsockname()[1]


def test_upstream_refuses_closes_the_client_and_names_the_target():
    async def go():
        port = free_port()
        sink = Recording()
        proxy = await Proxy((LOOP, port), Analysis([sink]), listen=(LOOP, 0)).start()
        reader, writer = await asyncio.open_connection(*proxy.address)
        writer.write(b"VER 1 MSNP8 CVR0\r\n")
        try:
            got = await read_all(reader)
        except ConnectionResetError:  # closed with the unread VER in its buffer: the kernel resets
            got = b""
        writer.close()
        await proxy.stop()
        return got, proxy, sink
    got, proxy, sink = run(go())
    assert got == b""
    target = f"{LOOP}:"
    assert any(target in n and "unreachable" in n for n in proxy.notices)
    found = sink.anomalies("proxy.upstream_unreachable")
    assert len(found) == 1 and found[0].detail.startswith(target)
    assert not proxy.relays


def test_upstream_closing_in_the_middle_of_a_payload():
    cut = b"VER 1 MSNP8 CVR0\r\nMSG bob@example.com Bob 100\r\n" + b"x" * 40

    async def go():
        async def server(reader, writer):
            await reader.readline()
            writer.write(cut)
            await writer.drain()
            writer.close()
        upstream = await asyncio.start_server(server, LOOP, 0)
        sink = Recording()
        analysis = Analysis([sink])
        proxy = await Proxy(upstream.sockets[0].getsockname()[:2], analysis, listen=(LOOP, 0)).start()
        reader, writer = await asyncio.open_connection(*proxy.address)
        writer.write(b"VER 1 MSNP8 CVR0\r\n")
        got = await read_all(reader)
        writer.close()
        await proxy.stop()
        upstream.close()
        analysis.finish()
        return got, sink
    got, sink = run(go())
    assert got == cut
    truncated = sink.anomalies("msnp.payload.truncated")
    assert len(truncated) == 1 and truncated[0].direction == S2C


def test_garbage_and_megabyte_lines_are_relayed_unchanged_and_flagged():
    junk = bytes(range(256)) * 64 + b"\r\n" + b"Z" * (1024 * 1024) + b"\r\n" + b"\x00\xff" * 1000
    follow = b"PNG\r\n"

    async def go():
        echo = await EchoServer().start()
        sink = Recording()
        analysis = Analysis([sink])
        proxy = await Proxy(echo.address, analysis, listen=(LOOP, 0)).start()
        reader, writer = await asyncio.open_connection(*proxy.address)
        writer.write(junk)
        writer.write(follow)
        await writer.drain()
        writer.write_eof()
        got = await read_all(reader)
        writer.close()
        # the proxy still works for the next client
        reader, writer = await asyncio.open_connection(*proxy.address)
        writer.write(b"VER 1 MSNP8 CVR0\r\n")
        await writer.drain()
        again = await asyncio.wait_for(reader.readline(), 10)
        writer.close()
        await proxy.stop()
        await echo.stop()
        analysis.finish()
        return got, again, sink, proxy
    got, again, sink, proxy = run(go())
    assert hashlib.sha256(got).digest() == hashlib.sha256(junk + follow).digest()
    assert again == b"VER 1 MSNP8 CVR0\r\n"
    assert sink.anomalies("msnp.line.too_long") and sink.anomalies("msnp.line.garbage")
    assert not sink.anomalies("analyzer.internal_error") and proxy.notices == []


def test_client_reset_resets_the_upstream():
    async def go():
        closed = asyncio.get_running_loop().create_future()

        async def server(reader, writer):
            try:
                while await reader.read(65536):
                    pass
                closed.set_result("eof")
            except ConnectionResetError:
                closed.set_result("reset")
        upstream = await asyncio.start_server(server, LOOP, 0)
        sink = Recording()
        proxy = await Proxy(upstream.sockets[0].getsockname()[:2], Analysis([sink]), listen=(LOOP, 0)).start()
        sock = socket.create_connection(proxy.address)
        sock.sendall(b"VER 1 MSNP8 CVR0\r\n")
        while not proxy.upstream_locals:
            await asyncio.sleep(0.01)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()  # RST
        how = await asyncio.wait_for(closed, 10)
        await proxy.stop()
        upstream.close()
        return how, proxy, sink
    how, proxy, sink = run(go())
    assert how == "reset"
    assert len(sink.anomalies("proxy.reset")) == 1 and not proxy.relays


def test_half_close_is_passed_on_and_the_reply_still_arrives():
    async def go():
        async def server(reader, writer):
            data = await reader.read()  # until the client's EOF
            writer.write(b"got " + str(len(data)).encode() + b"\r\n")
            await writer.drain()
            writer.close()
        upstream = await asyncio.start_server(server, LOOP, 0)
        proxy = await Proxy(upstream.sockets[0].getsockname()[:2], listen=(LOOP, 0)).start()
        reader, writer = await asyncio.open_connection(*proxy.address)
        writer.write(b"PNG\r\n" * 10)
        writer.write_eof()
        got = await read_all(reader)
        writer.close()
        await proxy.stop()
        upstream.close()
        return got
    assert run(go()) == b"got 50\r\n"


def test_back_pressure_bounds_the_proxy_buffers_and_loses_nothing():
    size = 32 * 1024 * 1024
    blob = os.urandom(1024) * (size // 1024)

    async def go():
        release = asyncio.Event()
        digest = asyncio.get_running_loop().create_future()

        async def server(reader, writer):
            await release.wait()
            h, n = hashlib.sha256(), 0
            while chunk := await reader.read(1 << 20):
                h.update(chunk)
                n += len(chunk)
            digest.set_result((n, h.hexdigest()))
            writer.close()
        upstream = await asyncio.start_server(server, LOOP, 0, limit=65536)
        proxy = await Proxy(upstream.sockets[0].getsockname()[:2], listen=(LOOP, 0)).start()
        reader, writer = await asyncio.open_connection(*proxy.address)
        writer.write(blob)
        drained = asyncio.ensure_future(writer.drain())
        # The upstream is not reading: the proxy must stop reading the client (however long
        # the machine takes to get there), and the client's writes must stay pending.
        relay = await until(lambda: next(iter(proxy.relays), None))
        # the upstream's write buffer filled up (pause_writing) and the client stopped being read
        await until(lambda: relay.server is not None and proxy.hits["buffer"] and not relay.client.is_reading())
        client_paused = not relay.client.is_reading()
        held = relay.server.get_write_buffer_size()
        assert not drained.done()
        release.set()
        await drained
        writer.write_eof()
        result = await asyncio.wait_for(digest, 20)
        writer.close()
        await proxy.stop()
        upstream.close()
        return held, client_paused, result
    held, client_paused, (n, h) = run(go(), timeout=40)
    assert client_paused
    assert held <= WRITE_HIGH_WATER + 256 * 1024
    assert n == size and h == hashlib.sha256(blob).hexdigest()


def test_analysis_failure_is_reported_once_and_relaying_goes_on():
    class Broken(Recording):
        def event(self, conn, event):
            raise RuntimeError("sink bug")

    async def go():
        echo = await EchoServer().start()
        analysis = Analysis([Broken()])
        proxy = await Proxy(echo.address, analysis, listen=(LOOP, 0)).start()
        reader, writer = await asyncio.open_connection(*proxy.address)
        for i in range(50):
            writer.write(f"CHG {i} NLN 0\r\n".encode())
            await writer.drain()
        writer.write_eof()
        got = await read_all(reader)
        writer.close()
        await proxy.stop()
        await echo.stop()
        return got, proxy, analysis
    got, proxy, analysis = run(go())
    assert got == b"".join(f"CHG {i} NLN 0\r\n".encode() for i in range(50))
    assert len(proxy.notices) == 1 and "sink bug" in proxy.notices[0]
    conn = next(iter(analysis.connections.values()))
    assert conn.anomalies["analyzer.internal_error"] == 1


def test_unrewritable_address_is_flagged_and_forwarded_unchanged():
    line = b"XFR 3 NS not:an:address 0 x\r\n"

    async def go():
        async def server(reader, writer):
            await reader.readline()
            writer.write(line)
            await writer.drain()
            writer.close()
        upstream = await asyncio.start_server(server, LOOP, 0)
        sink = Recording()
        proxy = await Proxy(upstream.sockets[0].getsockname()[:2], Analysis([sink]), listen=(LOOP, 0)).start()
        reader, writer = await asyncio.open_connection(*proxy.address)
        writer.write(b"USR 3 TWN I a@b.c\r\n")
        got = await read_all(reader)
        writer.close()
        await proxy.stop()
        upstream.close()
        return got, sink
    got, sink = run(go())
    assert got == line
    assert len(sink.anomalies("proxy.rewrite_failed")) == 1


def test_stop_with_open_connections_closes_them_and_the_listeners():
    async def go():
        echo = await EchoServer().start()
        analysis = Analysis()
        proxy = await Proxy(echo.address, analysis, listen=(LOOP, 0)).start()
        clients = []
        for _ in range(5):
            reader, writer = await asyncio.open_connection(*proxy.address)
            writer.write(b"PNG\r\n")
            await writer.drain()
            assert await asyncio.wait_for(reader.readline(), 10) == b"PNG\r\n"
            clients.append((reader, writer))
        assert len(proxy.relays) == 5
        await asyncio.wait_for(proxy.stop(), 10)
        ends = [await read_all(r, 10) for r, _ in clients]
        for _, w in clients:
            w.close()
        with pytest.raises(OSError):
            await asyncio.open_connection(*proxy.address)
        analysis.finish()
        await echo.stop()
        return ends, proxy, analysis
    ends, proxy, analysis = run(go())
    assert ends == [b""] * 5 and not proxy.relays
    assert all(c.closed for c in analysis.connections.values())
