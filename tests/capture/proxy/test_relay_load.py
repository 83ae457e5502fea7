"""Load (bounded, loopback): 200 concurrent clients x 1,000 commands in random chunkings, nothing lost or leaked."""

from __future__ import annotations

import asyncio
import gc
import hashlib
import importlib.util
import os
import random
import time

import pytest

from analyzer.analysis.run import Analysis
from analyzer.capture.proxy.relay import Proxy, run
from analyzer.msnp import encode_command
from analyzer.scripted import EchoServer

CLIENTS, COMMANDS = 200, 1000


def fds() -> int:
    """Open descriptors, not counting /dev/null: libuv (uvloop) opens it once, on the first
    listen, as its reserve for running out of descriptors, and keeps it for the process."""
    gc.collect()  # sockets earlier tests dropped are closed now, not in the middle of the count
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            count += os.readlink(f"/proc/self/fd/{fd}") != "/dev/null"
        except OSError:  # the descriptor listdir itself used, closed meanwhile
            pass
    return count


def script(seed: int) -> bytes:
    rng = random.Random(seed)
    parts = []
    for trid in range(1, COMMANDS + 1):
        kind = rng.random()
        if kind < 0.5:
            parts.append(encode_command("CHG", trid, ["NLN", str(rng.randint(0, 1 << 30))]))
        elif kind < 0.8:
            parts.append(encode_command("MSG", trid, ["N"], os.urandom(rng.randint(0, 300))))
        elif kind < 0.95:
            parts.append(encode_command("XFR", trid, ["SB"]))
        else:
            parts.append(b"PNG\r\n")
    return b"".join(parts)


async def client(address, seed: int):
    rng = random.Random(seed)
    data = script(seed)
    # each client from its own address (127.2.x.y), as separate machines: within the per-address limits
    reader, writer = await asyncio.open_connection(*address, local_addr=(f"127.2.{seed // 250}.{seed % 250 + 1}", 0))

    async def receive():
        h, n = hashlib.sha256(), 0
        while chunk := await reader.read(65536):
            h.update(chunk)
            n += len(chunk)
        return n, h.hexdigest()
    receiving = asyncio.ensure_future(receive())
    pos = 0
    while pos < len(data):
        size = rng.choice([1, 7, 100, 1500, 9000, 70000])
        writer.write(data[pos:pos + size])
        pos += size
        await writer.drain()
    writer.write_eof()
    got = await receiving
    writer.close()
    await writer.wait_closed()
    return (len(data), hashlib.sha256(data).hexdigest()), got


@pytest.mark.parametrize("loop", ["asyncio", pytest.param("uvloop", marks=pytest.mark.skipif(
    importlib.util.find_spec("uvloop") is None, reason="uvloop not installed"))])
def test_200_clients_every_byte_arrives_and_no_descriptor_leaks(loop):
    async def go():
        before = fds()
        echo = await EchoServer().start()
        analysis = Analysis()
        proxy = await Proxy(echo.address, analysis, listen=("127.0.0.1", 0)).start()
        started = time.monotonic()
        results = await asyncio.gather(*(client(proxy.address, seed) for seed in range(CLIENTS)))
        elapsed = time.monotonic() - started
        await proxy.stop()
        await echo.stop()
        analysis.finish()
        await asyncio.sleep(0)
        return before, fds(), results, echo, analysis, elapsed
    before, after, results, echo, analysis, elapsed = run(asyncio.wait_for(go(), 120), loop)
    sent = {digest for (_, digest), _ in results}
    for (n, digest), (m, echoed) in results:
        assert (m, echoed) == (n, digest)  # the echo came back whole, through the proxy both ways
    # the server received exactly what each client sent, and sent back what it received
    assert {received for received, _ in echo.digests} == sent
    assert all(r == s for r, s in echo.digests) and len(echo.digests) == CLIENTS
    assert after == before, f"file descriptors: {before} before, {after} after"
    totals = analysis.totals()
    assert totals["connections"] == CLIENTS
    assert sum(totals["commands"].values()) == 2 * CLIENTS * COMMANDS
    assert elapsed < 60
