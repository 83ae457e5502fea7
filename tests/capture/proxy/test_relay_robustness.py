"""The proxy under hostile clients, faulty upstreams and connection storms (loopback, bounded).

The load engine (well-behaved round-trip clients, hostile clients, the
misbehaving upstream) is bench/proxy_load.py's; here it runs in-process and
smaller. Every test checks that the other clients' bytes all arrive (sha256
both ways) while the fault goes on.
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib.util
import socket
import time
from pathlib import Path

import pytest

from analyzer.analysis.run import Analysis
from analyzer.capture.proxy.relay import WRITE_HIGH_WATER, Proxy
from analyzer.msnp import Anomaly

BENCH = Path(__file__).resolve().parents[3] / "bench" / "proxy_load.py"
_spec = importlib.util.spec_from_file_location("proxy_load", BENCH)
load_bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(load_bench)

LOOP = "127.0.0.1"
READ_CHUNK = 256 * 1024  # asyncio's largest single read: a side may hold its buffer plus one


class Recording:
    def __init__(self):
        self.events = []

    def event(self, conn, event):
        self.events.append(event)

    def stream(self, conn):
        pass

    def close(self):
        pass

    def anomalies(self, name):
        return [e for e in self.events if type(e) is Anomaly and e.name == name]


def run(coro, timeout=90):
    return asyncio.run(asyncio.wait_for(coro, timeout))


async def until(condition, timeout=10.0):
    """Wait for a condition with a deadline (polling the loop, not sleeping past a race)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.005)


async def started(record=True, **kw):
    upstream = await load_bench.Upstream().start()
    sink = Recording()
    analysis = Analysis([sink] if record else [])  # no recording sink: its growing heap put GC pauses in the p99
    proxy = await Proxy(upstream.address, analysis, listen=(LOOP, 0), **kw).start()
    return upstream, proxy, analysis, sink


async def stopped(upstream, proxy, analysis):
    await proxy.stop()
    await upstream.stop()
    analysis.finish()


def all_whole(result):
    return result["ok"] == result["clients"]


FAULTS = {
    "garbage": load_bench.garbage,
    "slowloris": load_bench.slowloris,
    "reset storm": load_bench.reset_storm,
    "silent upstream": load_bench.upstream_fault(load_bench.SILENT),
    "upstream reset mid-payload": load_bench.upstream_fault(load_bench.RESET),
}


@pytest.mark.parametrize("fault", FAULTS)
def test_other_clients_lose_nothing_while_a_fault_goes_on(fault):
    async def go():
        upstream, proxy, analysis, sink = await started()
        result = await load_bench.load(proxy.address, 20, 30, FAULTS[fault], limit=60)
        open_relays = len(proxy.relays)
        await stopped(upstream, proxy, analysis)
        return result, open_relays, proxy, sink
    result, open_relays, proxy, sink = run(go())
    assert all_whole(result), result["ok"]
    assert not sink.anomalies("analyzer.internal_error") and not proxy.relays
    if fault in ("reset storm", "upstream reset mid-payload"):
        assert sink.anomalies("proxy.reset")
    if fault == "garbage":
        assert sink.anomalies("msnp.line.garbage")
    if fault == "slowloris":
        assert open_relays == 50  # its connections were still held open when the others finished


def test_a_10mb_burst_to_a_slow_reader_stays_within_the_buffer_and_arrives_whole():
    async def go():
        upstream, proxy, analysis, sink = await started(buffer=64 * 1024)
        reader, writer = await asyncio.open_connection(*proxy.address)
        writer.write(load_bench.BURSTY + b" 1\r\n")
        await writer.drain()
        await until(lambda: proxy.relays and next(iter(proxy.relays)).server is not None
                    and not next(iter(proxy.relays)).server.is_reading())
        relay = next(iter(proxy.relays))
        held = relay.client.get_write_buffer_size()
        limits = relay.client.get_write_buffer_limits()
        bystander = await load_bench.load(proxy.address, 10, 20)  # served while the burst waits
        h, n = hashlib.sha256(), 0
        while chunk := await reader.read(1 << 20):
            h.update(chunk)
            n += len(chunk)
        writer.close()
        await stopped(upstream, proxy, analysis)
        return held, limits, bystander, (n, h.hexdigest())
    held, limits, bystander, (n, digest) = run(go())
    burst = load_bench.burst_bytes()
    assert limits[1] == 64 * 1024
    assert held <= 64 * 1024 + READ_CHUNK < WRITE_HIGH_WATER + READ_CHUNK
    assert all_whole(bystander)
    assert n == len(burst) and digest == hashlib.sha256(burst).hexdigest()


def test_a_client_that_vanishes_without_fin_holds_one_relay_until_stop():
    async def go():
        upstream, proxy, analysis, sink = await started()
        ghost = socket.create_connection(proxy.address)
        ghost.sendall(b"MSG 1 N 500\r\n" + b"z" * 100)  # then nothing: no FIN, no reads, no RST
        await until(lambda: len(proxy.relays) == 1 and next(iter(proxy.relays)).server is not None)
        others = await load_bench.load(proxy.address, 20, 20)
        still = len(proxy.relays)
        await stopped(upstream, proxy, analysis)
        ghost.settimeout(10)
        end = ghost.recv(1 << 20)
        while end and (more := ghost.recv(1 << 20)):
            end += more
        ghost.close()
        return others, still, proxy, end
    others, still, proxy, end = run(go())
    assert all_whole(others)
    assert still == 1 and not proxy.relays
    assert end == b"MSG 1 N 500\r\n" + b"z" * 100  # echoed, then closed by stop()


def test_connection_limit_closes_new_clients_names_it_once_and_recovers():
    async def go():
        upstream, proxy, analysis, sink = await started(max_connections=20)
        held = []
        for _ in range(20):
            reader, writer = await asyncio.open_connection(*proxy.address)
            writer.write(b"PNG\r\n")
            assert await asyncio.wait_for(reader.readline(), 10) == b"PNG\r\n"
            held.append(writer)
        refused = []
        for _ in range(30):
            reader, writer = await asyncio.open_connection(*proxy.address)
            try:
                refused.append(await asyncio.wait_for(reader.read(), 10))
            except ConnectionResetError:
                refused.append(b"")
            writer.close()
        count = proxy.refused
        for writer in held:
            writer.close()
        await until(lambda: not proxy.relays)
        after = await load_bench.load(proxy.address, 10, 10)
        await stopped(upstream, proxy, analysis)
        return refused, count, after, proxy, sink
    refused, count, after, proxy, sink = run(go())
    assert refused == [b""] * 30 and count == 30
    assert len(sink.anomalies("proxy.connection_limit")) == 1
    assert any("30 clients were closed" in n for n in proxy.notices)
    assert all_whole(after)


def test_one_client_holding_hundreds_of_connections_does_not_starve_the_others():
    async def go():
        upstream, proxy, analysis, sink = await started()

        async def holder(address, stop, deadline):
            return await load_bench.storm(address, stop, deadline, 300)
        result = await load_bench.load(proxy.address, 20, 20, holder, limit=60)
        await stopped(upstream, proxy, analysis)
        return result, sink
    result, sink = run(go())
    assert all_whole(result)
    assert not sink.anomalies("proxy.connection_limit")  # 320 is far below the default


def test_200_clients_with_one_hostile_client_lose_nothing():
    """The issue's acceptance run, in-process: 199 clients + 1 hostile, against 200 clients.

    Every client's echoes come back whole, with or without a hostile client
    beside them. The p99 comparison (at most 2x the baseline) is a timing:
    it lives in bench/proxy_load.py (proxy in its own process, figures in the
    README), not here, where a loaded 2-core machine swings one run's p99 by 10x."""
    kinds = {"garbage": load_bench.garbage, "slowloris": load_bench.slowloris,
             "reset storm": load_bench.reset_storm}

    async def go():
        upstream, proxy, analysis, sink = await started(record=False)
        await load_bench.load(proxy.address, 200, 3)  # warm-up
        for name, hostile in kinds.items():
            r = await load_bench.load(proxy.address, 200, 10, limit=60)
            assert all_whole(r), (name, "baseline", r["ok"])
            r = await load_bench.load(proxy.address, 199, 10, hostile, limit=60)
            assert all_whole(r), (name, r["ok"])
        await stopped(upstream, proxy, analysis)
    run(go(), timeout=240)
