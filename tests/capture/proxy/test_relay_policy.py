"""The proxy cannot be turned against its user (issue #14): one test per attack, loopback only.

Distinct 127.x addresses stand for other networks: the upstream lies in
127.0.0.0/24, the "other network" a hostile server points at in 127.1.0.0/24.
"""

from __future__ import annotations

import asyncio
import socket
import time

import pytest

from analyzer.analysis.run import Analysis
from analyzer.capture.proxy.relay import Proxy, ProxyLimits
from analyzer.capture.targets import TargetPolicy, parse_allowed
from analyzer.errors import UsageError
from capture.proxy.recording import Recording

LOOP = "127.0.0.1"
OTHER = "127.1.0.5"  # "another network": outside the upstream's 127.0.0.0/24


def run(coro, timeout=60):
    return asyncio.run(asyncio.wait_for(coro, timeout))


async def until(condition, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.005)


class Server:
    """An upstream that sends `script` to each client once it has read the client's first line."""

    def __init__(self, script: bytes, host: str = LOOP):
        self.script, self.host, self.server, self.peers = script, host, None, []

    async def start(self):
        self.server = await asyncio.start_server(self._serve, self.host, 0)
        return self

    @property
    def address(self):
        return self.server.sockets[0].getsockname()[:2]

    async def _serve(self, reader, writer):
        self.peers.append(writer.get_extra_info("peername"))
        try:
            await reader.readline()
            writer.write(self.script)
            await writer.drain()
            await reader.read()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()

    async def stop(self):
        self.server.close()


async def exchange(address, first=b"VER 1 MSNP8 CVR0\r\n", want=None, source=None):
    """Connect (from `source`), send `first`, read `want` bytes (or to the end)."""
    reader, writer = await asyncio.open_connection(*address, local_addr=(source, 0) if source else None)
    writer.write(first)
    got = await asyncio.wait_for(reader.readexactly(want) if want else reader.read(), 10)
    writer.close()
    return got


async def lines(address, count, first=b"VER 1 MSNP8 CVR0\r\n"):
    """Connect, send `first`, read `count` lines."""
    reader, writer = await asyncio.open_connection(*address)
    writer.write(first)
    got = [await asyncio.wait_for(reader.readline(), 20) for _ in range(count)]
    writer.close()
    return b"".join(got)


async def proxied(script: bytes, **kw):
    upstream = await Server(script).start()
    sink = Recording()
    proxy = await Proxy(upstream.address, Analysis([sink]), listen=(LOOP, 0), **kw).start()
    return upstream, proxy, sink


# -- the target policy ----------------------------------------------------------------

def test_policy_follows_the_upstreams_network_and_refuses_the_rest():
    policy = TargetPolicy(("127.0.0.1", 1863))
    assert policy.check("127.0.0.9", 1864) is None             # the upstream's /24, loopback upstream
    assert "outside the upstream's network 127.0.0.0/24" in policy.check(OTHER, 1864)
    assert policy.check("ns.example.net", 1863) is not None     # a name it was not given
    remote = TargetPolicy(("203.0.113.7", 1863))
    assert remote.check("203.0.113.99", 1863) is None
    assert remote.check("198.51.100.1", 1863) is not None
    for mine in ("127.0.0.1", "::1", "169.254.1.1", "0.0.0.0", "::ffff:127.0.0.1", "fe80::1%eth0"):
        assert "this machine" in remote.check(mine, 22), mine  # never this machine for a remote upstream
    anything = TargetPolicy(("203.0.113.7", 1863), allow_any=True)
    assert anything.check("198.51.100.1", 1863) is None
    assert anything.check("127.0.0.1", 22) is not None          # --allow-any-target does not cover it
    assert TargetPolicy(("203.0.113.7", 1863), ["127.0.0.1:2000"]).check("127.0.0.1", 2000) is None
    v6 = TargetPolicy(("2001:db8::1", 1863))
    assert v6.check("2001:db8::ffff", 1863) is None and v6.check("2001:db8:1::1", 1863) is not None


def test_a_followed_name_that_resolves_to_this_machine_is_refused():
    remote = TargetPolicy(("203.0.113.7", 1863), allow_any=True)
    assert "resolved to 127.0.0.1" in remote.check_resolved("sb.example.net", 1863, "127.0.0.1")
    assert remote.check_resolved("sb.example.net", 1863, "198.51.100.4") is None
    assert TargetPolicy(("203.0.113.7", 1863), ["sb.example.net"]).check_resolved(
        "sb.example.net", 1863, "127.0.0.1") is None                  # named by the user
    assert TargetPolicy(("127.0.0.1", 1863)).check_resolved("localhost", 1863, "127.0.0.1") is None


def test_allow_target_forms_and_errors():
    named = TargetPolicy(("203.0.113.7", 1863), ["sb.example.net", "ns.example.net:1863", "198.51.100.0/24",
                                                  "[2001:db8::5]:1863"])
    assert named.check("SB.Example.NET.", 4000) is None
    assert named.check("ns.example.net", 1863) is None and named.check("ns.example.net", 1864) is not None
    assert named.check("198.51.100.200", 1) is None
    assert named.check("2001:db8::5", 1863) is None and named.check("2001:db8::5", 80) is not None
    assert "ns.example.net" in named.describe() and "198.51.100.0/24" in named.describe()
    by_name = TargetPolicy(("messenger.example.net", 1863), upstream_addresses=[])
    assert by_name.check("Messenger.Example.Net", 1864) is None
    for bad in ("", "10.0.0.0/33", "host:99999", "a b"):
        with pytest.raises(ValueError):
            parse_allowed(bad)


def test_a_referral_to_another_network_is_forwarded_unchanged_and_named():
    # The exposure: without a policy a server line made the proxy open a listener
    # relaying to any address, loopback-only services of this machine included.
    xfr = f"XFR 2 SB {OTHER}:6000 CKI x\r\n".encode()
    ok = b"XFR 3 SB 127.0.0.77:6001 CKI y\r\n"

    async def go():
        upstream, proxy, sink = await proxied(b"VER 1 MSNP8 CVR0\r\n" + xfr + ok)
        got = await lines(proxy.address, 3)
        listeners = dict(proxy.listeners)
        await proxy.stop()
        await upstream.stop()
        return got, listeners, proxy, sink
    got, listeners, proxy, sink = run(go())
    assert xfr in got                                          # as the server sent it
    assert b"127.0.0.77:6001" not in got                       # the allowed one was rewritten
    assert (OTHER, 6000) not in listeners and ("127.0.0.77", 6001) in listeners
    refused = sink.anomalies("proxy.target_refused")
    assert len(refused) == 1 and f"{OTHER}:6000" in refused[0].detail
    assert [r["original"] for r in sink.records("rewrite")] == ["127.0.0.77:6001"]
    assert proxy.hits["targets"] == 1
    assert "127.0.0.0/24" in proxy.describe() and any("targets refused" in l for l in proxy.summary())


def test_allow_target_lets_a_real_services_other_hosts_be_followed():
    xfr = f"XFR 2 SB {OTHER}:6000 CKI x\r\n".encode()

    async def go():
        upstream = await Server(b"VER 1 MSNP8 CVR0\r\n" + xfr).start()
        sink = Recording()
        policy = TargetPolicy(upstream.address, ["127.1.0.0/24"])
        proxy = await Proxy(upstream.address, Analysis([sink]), listen=(LOOP, 0), policy=policy).start()
        got = await lines(proxy.address, 2)
        await proxy.stop()
        await upstream.stop()
        return got, proxy, sink
    got, proxy, sink = run(go())
    assert OTHER.encode() not in got and not sink.anomalies("proxy.target_refused")
    assert (OTHER, 6000) in proxy.listeners


# -- no cap on listeners -----------------------------------------------------------------

def test_a_flood_of_referrals_opens_at_most_max_listeners_and_new_clients_are_still_served():
    flood = b"".join(b"XFR %d SB 127.0.0.%d:%d CKI x\r\n" % (i, 2 + i % 200, 10000 + i) for i in range(600))

    async def go():
        upstream, proxy, sink = await proxied(b"VER 1 MSNP8 CVR0\r\n" + flood,
                                              limits=ProxyLimits(max_listeners=8))
        got = await lines(proxy.address, 601)
        most = len(proxy.listeners)
        second = await exchange(proxy.address, want=18)  # a new client still gets its reply
        await proxy.stop()
        await upstream.stop()
        return got, most, second, proxy, sink
    got, most, second, proxy, sink = run(go())
    assert most == 1 + 8 and second == b"VER 1 MSNP8 CVR0\r\n"
    assert got.count(b"127.0.0.1:") == 8                 # eight rewritten, the rest forwarded as sent
    # The second client got the same flood: the same eight listeners, 592 more refusals.
    assert proxy.hits["listeners"] == 2 * 592
    assert len(sink.anomalies("proxy.listener_limit")) == 2 * 592


def test_an_idle_listener_is_closed_and_its_port_released():
    async def go():
        upstream, proxy, sink = await proxied(b"VER 1 MSNP8 CVR0\r\nXFR 2 SB 127.0.0.9:6000 CKI x\r\n",
                                              limits=ProxyLimits(listener_idle=0.3))
        await lines(proxy.address, 2)
        assert ("127.0.0.9", 6000) in proxy.listeners
        await until(lambda: ("127.0.0.9", 6000) not in proxy.listeners)
        left = len(proxy.listeners)
        await proxy.stop()
        await upstream.stop()
        return left, proxy
    left, proxy = run(go())
    assert left == 1 and proxy.hits["listeners_closed"] == 1


# -- idle sockets, connections per address, new connections per second -------------------

def test_idle_sockets_from_one_address_cannot_lock_others_out_and_are_closed():
    # The issue: ~4,200 idle sockets locked legitimate clients out for more than 65 s.
    async def go():
        upstream, proxy, sink = await proxied(b"VER 1 MSNP8 CVR0\r\n", limits=ProxyLimits(
            max_per_address=20, rate_per_address=1000, first_byte_timeout=0.5))
        idle = []
        for _ in range(60):
            idle.append(await asyncio.open_connection(*proxy.address, local_addr=("127.0.0.2", 0)))
        held = sum(1 for r in proxy.relays if r.peer_host == "127.0.0.2")
        served = await exchange(proxy.address, want=18, source="127.0.0.3")
        await until(lambda: not proxy.relays, 10)
        for _, writer in idle:
            writer.close()
        await proxy.stop()
        await upstream.stop()
        return held, served, proxy, sink
    held, served, proxy, sink = run(go())
    assert held == 20 and proxy.hits["per_address"] == 40 and served == b"VER 1 MSNP8 CVR0\r\n"
    assert len(sink.anomalies("proxy.address_limit")) == 1
    assert proxy.hits["idle"] == 20 and len(sink.anomalies("proxy.idle_timeout")) == 20
    assert "no byte from the client" in sink.anomalies("proxy.idle_timeout")[0].detail


def test_new_connections_per_second_per_address_are_bounded():
    async def go():
        upstream, proxy, sink = await proxied(b"", limits=ProxyLimits(rate_per_address=5))
        for _ in range(30):
            _, writer = await asyncio.open_connection(*proxy.address, local_addr=("127.0.0.4", 0))
            writer.close()
        _, writer = await asyncio.open_connection(*proxy.address, local_addr=("127.0.0.5", 0))
        await until(lambda: any(r.peer_host == "127.0.0.5" for r in proxy.relays))
        writer.close()
        await proxy.stop()
        await upstream.stop()
        return proxy, sink
    proxy, sink = run(go())
    assert 10 <= proxy.hits["rate"] <= 30 - 10  # a burst of 10 (twice the rate), then about 5 a second
    assert len(sink.anomalies("proxy.rate_limit")) == 1


def test_a_connection_silent_both_ways_is_closed_after_the_idle_timeout():
    async def go():
        upstream, proxy, sink = await proxied(b"VER 1 MSNP8 CVR0\r\n", limits=ProxyLimits(idle_timeout=0.4))
        reader, writer = await asyncio.open_connection(*proxy.address)
        writer.write(b"VER 1 MSNP8 CVR0\r\n")
        assert await asyncio.wait_for(reader.readexactly(18), 10) == b"VER 1 MSNP8 CVR0\r\n"
        rest = await asyncio.wait_for(reader.read(), 10)  # closed by the proxy, not by us
        writer.close()
        await proxy.stop()
        await upstream.stop()
        return rest, sink
    rest, sink = run(go())
    assert rest == b"" and "either way" in sink.anomalies("proxy.idle_timeout")[0].detail


# -- loops ---------------------------------------------------------------------------------

def test_an_upstream_that_is_our_own_listening_address_is_refused_at_start():
    with socket.socket() as s:
        s.bind((LOOP, 0))
        port = s.getsockname()[1]

    async def go():
        with pytest.raises(UsageError, match="own listening address"):
            await Proxy((LOOP, port), Analysis(), listen=(LOOP, port)).start()
        with pytest.raises(UsageError, match="own listening address"):
            await Proxy(("0.0.0.0", port), Analysis(), listen=(LOOP, port)).start()
        # Listening on every interface (checked without binding one: tests stay on loopback).
        wildcard = Proxy((LOOP, port), Analysis(), listen=("0.0.0.0", port), advertise="127.0.0.1")
        assert "own listening address" in wildcard._loop_reason(("0.0.0.0", port))
        assert wildcard._loop_reason(("0.0.0.0", port + 1)) is None
        fine = await Proxy(("127.0.0.2", port), Analysis(), listen=(LOOP, port)).start()  # another address
        await fine.stop()
    run(go())


def test_a_referral_to_one_of_our_own_listeners_is_refused_at_run_time():
    async def go():
        upstream = await Server(b"").start()
        sink = Recording()
        proxy = await Proxy(upstream.address, Analysis([sink]), listen=(LOOP, 0)).start()
        upstream.script = b"VER 1 MSNP8 CVR0\r\nXFR 2 NS %s:%d 0 x\r\n" % (LOOP.encode(), proxy.address[1])
        got = await exchange(proxy.address, want=len(upstream.script))
        listeners = len(proxy.listeners)
        await proxy.stop()
        await upstream.stop()
        return got, listeners, upstream, sink
    got, listeners, upstream, sink = run(go())
    assert got == upstream.script and listeners == 1
    assert "own listeners" in sink.anomalies("proxy.target_refused")[0].detail


# -- the rewriter frames as the client does --------------------------------------------------

def test_an_xfr_inside_a_payload_over_max_payload_reaches_the_client_byte_exact():
    from analyzer.analysis.connection import Limits
    body = b"MIME-Version: 1.0\r\n\r\nXFR 9 SB 127.0.0.9:6000 CKI x\r\n"
    script = b"VER 1 MSNP8 CVR0\r\nMSG a@b Nick %d\r\n" % len(body) + body

    async def go():
        upstream = await Server(script).start()
        sink = Recording()
        proxy = await Proxy(upstream.address, Analysis([sink], Limits(max_payload=8)), listen=(LOOP, 0)).start()
        got = await exchange(proxy.address, want=len(script))
        await proxy.stop()
        await upstream.stop()
        return got, sink
    got, sink = run(go())
    assert got == script and not sink.records("rewrite")
    assert sink.anomalies("msnp.payload.too_large")
