"""The live MSNP proxy: an asyncio TCP relay that analyses as it forwards.

A legacy client connects to our listener instead of the dispatch server; each
accepted connection gets a `Relay` that opens its own connection to the
upstream target and copies bytes both ways. The forwarding path comes first:
a chunk is written to the other side before anything looks at it, then it is
recorded (`--record`) and fed to the shared `Analysis` (which is fail-open;
any exception from it or its sinks is caught here, reported once, and the
connection goes on relaying raw bytes). The `Analysis` is either the real one
(in this process, `--analysis inline`) or `proxy_worker.RemoteAnalysis`, which
batches the same calls to an analysis process so that decoding never runs on
the forwarding core.

Following the client: on connections that can carry them (the first listener
and every NS listener), the server's bytes go through `analyzer.msnp.rewrite.
AddressRewriter`, which replaces the `host:port` of `XFR ... NS|SB` and `RNG`
with the address of a listener of ours for that upstream target. There is one
listener per upstream target, created the first time the target is seen (the
socket is bound at once, so the rewritten line is only sent once the address
exists) and reused after that. Switchboard listeners skip the rewriter: a
switchboard never sends XFR or RNG.

Flow control is the transports' own: when one side's write buffer passes its
high-water mark (`pause_writing`), reading from the other side stops until it
drains (`resume_writing`), so no buffer grows without bound. Half-close (EOF)
is passed on; a reset (or any error) on one side resets the other.

Who decides what opens: a referral is followed only when `TargetPolicy`
(analyzer/capture/targets.py) allows its target and it is not one of our own
listeners (a loop); otherwise the line goes to the client as the server sent
it and `proxy.target_refused` names the target. An upstream that is one of our
own listening addresses is refused at start (`UsageError`).

Limits (options of `proxy`, all counted in `Proxy.hits`; the first hit of each
in a run is reported as an anomaly and a notice, the counts at stop):
`buffer` is that high-water mark per side (`--buffer`, default 256 KiB; a side
holds at most it plus one read, 256 KiB); `max_connections` caps the relays
open at once (`--max-connections`, default 4096 or what the open-file limit
allows: `proxy.connection_limit`); `ProxyLimits` caps the relays per client
address (`proxy.address_limit`), new connections per second per client address
(a token bucket, `proxy.rate_limit`), the listeners opened for referral
targets (`proxy.listener_limit`; a listener with no relay left and unused for
`listener_idle` seconds is closed, and the least recently used such listener
makes room for a new one), and how long a connection may stay silent
(`proxy.idle_timeout`: no byte from the client within `first_byte_timeout` of
connecting, or no byte either way for `idle_timeout`). A client refused by a
limit is accepted and closed at once.

Event loop: `run(coro, loop)` runs the proxy on uvloop when it is installed
(`--loop auto`, the default; `--loop uvloop|asyncio` to choose): with libuv's
transports the read and the write of each chunk are C, which lowers the added
latency. Nothing here depends on the loop; one difference is handled: a loop may
deliver data although `pause_reading()` was called in `connection_made`, so
client bytes read before the upstream connection is up are held (one read, then
reading pauses) and forwarded first once it is.

`Proxy.stop()` closes the listeners and every connection; it is what Ctrl-C calls.
"""

from __future__ import annotations

import asyncio
import socket
import struct
import time
from dataclasses import dataclass, field

_now = time.time

from collections import Counter

from analyzer.analysis.run import Analysis
from analyzer.capture.pcapng_writer import PcapngWriter, TcpRecorder
from analyzer.capture.targets import Refused, TargetPolicy, ip_of, this_machine
from analyzer.errors import UsageError
from analyzer.msnp import C2S, S2C, Anomaly
from analyzer.msnp.facts import format_address as join_address
from analyzer.msnp.rewrite import AddressRewriter

WRITE_HIGH_WATER = 256 * 1024  # per side: above this, the other side stops being read


LOOPS = ("auto", "uvloop", "asyncio")
LISTENER_GRACE = 10.0  # a listener just handed to a client is never closed to make room for another


MAX_NOTICES = 1000   # notices kept for the report and tests (each also goes to on_notice)


@dataclass(frozen=True, slots=True)
class ProxyLimits:
    """Bounds on what the network can make the proxy hold (see the module docstring).

    The defaults never cut a real session: a client opens a DS, an NS and a
    switchboard per chat (a handful of connections, a few per second at login);
    it sends its first line (VER, USR or ANS) the moment it connects; an NS
    connection carries a PNG/QNG about every 50 s, so an hour of silence either
    way is a dead connection or a chat window left alone that long (the client
    opens a new switchboard for the next message).
    """
    max_listeners: int = 64          # listeners for referral targets (the first listener not counted)
    listener_idle: float = 300.0     # a listener with no relay, unused this long, is closed
    max_per_address: int = 128       # relays open at once per client address
    rate_per_address: float = 32.0   # new connections per second per client address (bursts of twice that)
    idle_timeout: float = 3600.0     # seconds without a byte either way
    first_byte_timeout: float = 30.0  # seconds from connecting to the client's first byte


# What each counted limit is called in Proxy.hits and the anomaly the first hit raises.
LIMIT_ANOMALIES = {
    "connections": "proxy.connection_limit", "per_address": "proxy.address_limit",
    "rate": "proxy.rate_limit", "listeners": "proxy.listener_limit",
}


class LoopUnavailable(Exception):
    """`--loop uvloop` was asked for and uvloop cannot be imported."""


def loop_factory(choice: str = "auto"):
    """(factory for `asyncio.Runner(loop_factory=...)`, name) for the event loop `choice` names.

    `auto` is uvloop when it can be imported (its transports read and write in C, which is
    most of what the relay does per chunk) and the standard library's loop otherwise;
    `asyncio` is always the standard one; `uvloop` insists (LoopUnavailable if it is missing).
    """
    if choice not in LOOPS:
        raise ValueError(f"unknown event loop {choice!r} (expected one of {', '.join(LOOPS)})")
    if choice != "asyncio":
        try:
            import uvloop
        except ImportError as exc:
            if choice == "uvloop":
                raise LoopUnavailable(f"uvloop cannot be imported ({exc}); "
                                      "install it (pip install uvloop) or use --loop asyncio") from None
        else:
            return uvloop.new_event_loop, "uvloop"
    return asyncio.new_event_loop, "asyncio"


def run(coro, loop: str = "auto"):
    """`asyncio.run(coro)` on the event loop `loop` names (see `loop_factory`)."""
    factory, _ = loop_factory(loop)
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(coro)


def default_max_connections() -> int:
    """4096 relays, or fewer when the open-file limit cannot hold two sockets each."""
    try:
        import resource
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    except (ImportError, OSError, ValueError):
        return 4096
    if soft == resource.RLIM_INFINITY:
        return 4096
    return max(16, min(4096, (soft - 64) // 2))


@dataclass(eq=False)
class Listener:
    """A listening socket of ours and the upstream target it leads to."""
    kind: str                    # "DS" (the --upstream target), "NS" or "SB"
    target: tuple[str, int]
    rewrite: bool
    server: asyncio.base_events.Server | None = None
    address: tuple[str, int] | None = None
    ready: asyncio.Task | None = field(default=None, repr=False)
    relays: int = 0              # relays open through it now
    last_used: float = 0.0       # monotonic time it was last handed out or its last relay ended


class _Side(asyncio.Protocol):
    """One socket of a relay; `direction` is the direction of the data it receives.

    `data_received` is the relay's bound `c2s`/`s2c` itself (a slot set per instance),
    so a chunk costs the loop one Python call, not two.
    """

    __slots__ = ("relay", "direction", "transport", "data_received")

    def __init__(self, relay: "Relay", direction: str) -> None:
        self.relay = relay
        self.direction = direction
        self.transport = None
        self.data_received = relay.c2s if direction == C2S else relay.s2c

    def connection_made(self, transport) -> None:
        self.transport = transport
        if self.direction == C2S:
            self.relay.client_made(transport)

    def eof_received(self) -> bool:
        return self.relay.eof(self.direction)

    def connection_lost(self, exc) -> None:
        self.relay.lost(self.direction, exc)

    def pause_writing(self) -> None:
        # Our write buffer is full: stop reading what would be written to us.
        self.relay.pause(self.direction)

    def resume_writing(self) -> None:
        self.relay.resume(self.direction)


class Relay:
    """One proxied connection: client socket, upstream socket, rewriter, recorder, analysis."""

    def __init__(self, proxy: "Proxy", listener: Listener) -> None:
        self.proxy = proxy
        self.listener = listener
        self.client = None
        self.server = None
        self.conn = None
        self.rewriter = AddressRewriter(proxy.route, max_line=proxy.analysis.limits.max_line) \
            if listener.rewrite else None
        self.recorder: TcpRecorder | None = None
        self.eofs: set[str] = set()
        self.done = False
        self.analysing = True
        self.upstream_local: tuple | None = None
        self._connect: asyncio.Task | None = None
        self._early: list[bytes] = []  # client bytes read before the upstream connection was up
        self._feed = None
        self.opened = 0.0              # when the client connected (time.time())
        self.last_c2s = None           # time of the client's latest chunk (None: it has sent nothing)
        self.last_s2c = None
        self.peer_host = None          # the client's address, as counted per address

    # -- set-up -------------------------------------------------------------

    def client_made(self, transport) -> None:
        self.client = transport
        proxy = self.proxy
        peer = transport.get_extra_info("peername")
        limit = proxy.admit(peer)
        if limit is not None:
            self.done = True
            transport.close()
            proxy.hit(limit, peer)
            return
        transport.pause_reading()  # until the upstream connection is up
        transport.set_write_buffer_limits(high=proxy.buffer)
        local = transport.get_extra_info("sockname")
        proxy.relays.add(self)
        self.opened = _now()
        self.peer_host = peer[0] if peer else None
        proxy.joined(self)
        self._feed = proxy.analysis.feed  # looked up once: the per-chunk path calls it directly
        self.conn = self._analyse(lambda: proxy.analysis.open(
            client=join_address(*peer[:2]), server=join_address(*self.listener.target)))
        if proxy.recorder is not None:
            self.recorder = TcpRecorder(proxy.recorder, peer[:2], local[:2])
            self._record("open")
        self._connect = asyncio.ensure_future(self._open_upstream())

    async def _open_upstream(self) -> None:
        host, port = self.listener.target
        loop = asyncio.get_running_loop()
        try:
            transport, _ = await asyncio.wait_for(
                loop.create_connection(lambda: _Side(self, S2C), host, port), self.proxy.connect_timeout)
        except (OSError, asyncio.TimeoutError) as exc:
            reason = "timed out" if isinstance(exc, asyncio.TimeoutError) else (exc.strerror or str(exc))
            self.proxy.notice(f"upstream {join_address(host, port)} unreachable: {reason}; closed the client's connection")
            self._anomaly("proxy.upstream_unreachable", f"{join_address(host, port)}: {reason}", None)
            self._record("end", S2C)
            self.finish()
            return
        except asyncio.CancelledError:
            self.finish()
            raise
        if self.done:  # the client left (or stop() was called) meanwhile
            transport.close()
            return
        if self.listener is not self.proxy.main:  # a followed name must not lead to this machine
            peer = transport.get_extra_info("peername")
            reason = self.proxy.policy.check_resolved(host, port, peer[0]) if peer else None
            if reason is not None:
                transport.close()
                self.proxy.hits["targets"] += 1
                self._anomaly("proxy.target_refused", f"{reason}; connection closed", None)
                self.finish()
                return
        self.server = transport
        transport.set_write_buffer_limits(high=self.proxy.buffer)
        self.upstream_local = transport.get_extra_info("sockname")[:2]
        self.proxy.upstream_locals.append(self.upstream_local)
        if self.conn is not None and self.analysing:
            # The stream's `client`/`server` are the client and the server it reached through
            # us; say which two TCP connections that was.
            peer = self.client.get_extra_info("peername")
            listen = self.client.get_extra_info("sockname")
            legs = [{"leg": "client", "client": join_address(*peer[:2]), "server": join_address(*listen[:2])},
                    {"leg": "upstream", "client": join_address(*self.upstream_local),
                     "server": join_address(host, port)}]
            self._analyse(lambda: self.proxy.analysis.legs(self.conn, legs))
        early, self._early = self._early, []
        for data in early:
            self.c2s(data)
        if C2S in self.eofs:  # the client's EOF came before the upstream connection was up
            try:
                transport.write_eof()
            except (OSError, RuntimeError):
                pass
        elif not self.done:
            self.client.resume_reading()

    # -- the forwarding path --------------------------------------------------

    def c2s(self, data: bytes) -> None:
        """A chunk from the client: forward it first, then record and analyse it."""
        server = self.server
        if server is None:
            # Not connected upstream yet: pause_reading() in connection_made is not honoured by
            # every loop (uvloop, CPython < 3.12), so hold this one read and pause now.
            self._early.append(data)
            self.client.pause_reading()
            return
        server.write(data)
        ts = self.last_c2s = _now()
        rw = self.rewriter
        if rw is not None and rw.wants_client:  # the client's VER offer decides framing until the server's
            rw.client(data)
        if self.recorder is not None:
            self._record("data", C2S, data, ts)
        if self.analysing:
            try:
                self._feed(self.conn, C2S, data, ts)
            except Exception as exc:  # noqa: BLE001 - forwarding never depends on the analysis
                self._analysis_failed(exc)

    def s2c(self, data: bytes) -> None:
        """A chunk from the server: rewrite XFR/RNG addresses (NS-capable listeners), forward, record, analyse."""
        rw = self.rewriter
        if rw is None:
            self.client.write(data)
            out, rewrites = data, None
        else:
            held = rw.pending
            try:
                out, rewrites = rw.feed(data)
            except Exception as exc:  # noqa: BLE001 - fail-open: forward what we have, raw from now on
                out, rewrites, self.rewriter = held + data, None, None
                self.proxy.notice(f"stream {self.conn.id if self.conn else '?'}: address rewriting failed "
                                  f"({type(exc).__name__}: {exc}); relaying raw bytes")
            if out:
                self.client.write(out)
        ts = self.last_s2c = _now()
        if self.recorder is not None and out:
            self._record("data", S2C, out, ts)
        if self.analysing:
            try:
                self._feed(self.conn, S2C, data, ts)
            except Exception as exc:  # noqa: BLE001 - forwarding never depends on the analysis
                self._analysis_failed(exc)
        if rewrites:
            self._rewritten(rewrites, ts)

    def _rewritten(self, rewrites, ts) -> None:
        for r in rewrites:
            if r.rewritten is None:
                name = getattr(r.reason, "anomaly", "proxy.rewrite_failed")
                self._anomaly(name, f"{r.cmd} {r.kind} {r.original}: {r.reason}; forwarded as sent", S2C, r.offset, ts)
                continue
            self.proxy.rewrites += 1
            record = {"kind": "rewrite", "dir": S2C, "ts": ts, "offset": r.offset, "cmd": r.cmd,
                      "target": r.kind, "original": r.original, "rewritten": r.rewritten}
            if self.analysing:
                self._analyse(lambda: self.proxy.emit(self.conn, record))

    def eof(self, direction: str) -> bool:
        ts = time.time()
        self.eofs.add(direction)
        if direction == S2C and self.rewriter is not None:
            rest = self.rewriter.close()  # a held, unfinished line goes out unchanged
            if rest:
                self.client.write(rest)
                self._record("data", S2C, rest, ts)
        other = self.server if direction == C2S else self.client
        if other is not None and not other.is_closing():
            try:
                other.write_eof()
            except (OSError, RuntimeError):
                pass
        self._record("end", direction, ts)
        if self.analysing:
            self._analyse(lambda: self.proxy.analysis.end(self.conn, direction, ts))
        if len(self.eofs) == 2:
            self.finish()
        return True  # keep the socket open: the other direction may still have data

    def lost(self, direction: str, exc) -> None:
        if self.done:
            return
        if exc is not None:
            # A reset (or an error) on one side: reset the other side too.
            who = "client" if direction == C2S else "upstream"
            self._anomaly("proxy.reset", f"{who} connection lost: {type(exc).__name__}: {exc}", direction)
            self._record("reset", direction)
            self.finish(reset=True)
        else:
            self.finish()

    def pause(self, full_side: str) -> None:
        other = self.server if full_side == C2S else self.client
        if other is not None:
            self.proxy.hits["buffer"] += 1
            other.pause_reading()

    def resume(self, full_side: str) -> None:
        other = self.server if full_side == C2S else self.client
        if other is not None and not other.is_closing():
            other.resume_reading()

    # -- the end ------------------------------------------------------------

    def finish(self, reset: bool = False) -> None:
        if self.done:
            return
        self.done = True
        if self._connect is not None and not self._connect.done() and self._connect is not asyncio.current_task():
            self._connect.cancel()
        for transport in (self.client, self.server):
            if transport is None or transport.is_closing():
                continue
            if reset:
                _abort_with_reset(transport)
            else:
                transport.close()
        if self.recorder is not None and not reset:
            self._record("end", C2S)
            self._record("end", S2C)
        if self.analysing and self.conn is not None:
            self._analyse(lambda: self.proxy.analysis.close(self.conn, time.time()))
        if self in self.proxy.relays:
            self.proxy.relays.discard(self)
            self.proxy.left(self)

    def timed_out(self, detail: str) -> None:
        """Closed by the proxy for silence (see ProxyLimits)."""
        self.proxy.hits["idle"] += 1
        self._anomaly("proxy.idle_timeout", detail, None)
        self.finish()

    # -- guarded helpers ----------------------------------------------------

    def _analyse(self, call):
        """Run an analysis call; on any exception report once and stop analysing this connection."""
        try:
            return call()
        except Exception as exc:  # noqa: BLE001 - forwarding never depends on the analysis
            self._analysis_failed(exc)
            return None

    def _analysis_failed(self, exc: Exception) -> None:
        if self.analysing:
            self.analysing = False
            name = self.conn.id if self.conn is not None else "?"
            self.proxy.notice(f"stream {name}: analysis failed ({type(exc).__name__}: {exc}); "
                              "still relaying, no longer analysed")
            if self.conn is not None:
                self.conn.failed = True
                self.conn.anomalies["analyzer.internal_error"] += 1

    def _anomaly(self, name: str, detail: str, direction, offset=None, ts=None) -> None:
        if self.conn is None:
            return
        event = Anomaly(name, detail, direction, offset, ts if ts is not None else time.time())
        if self.analysing:
            self._analyse(lambda: self.proxy.analysis.anomaly(self.conn, event))
        else:
            self.conn.anomalies[name] += 1

    def _record(self, what: str, *args) -> None:
        recorder = self.recorder
        if recorder is None:
            return
        try:
            getattr(recorder, what)(*args)
        except Exception as exc:  # noqa: BLE001 - a full disk must not stop the relay
            self.proxy.record_failed(exc)


def _abort_with_reset(transport) -> None:
    sock = transport.get_extra_info("socket")
    if sock is not None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
    transport.abort()


class Proxy:
    """Listeners, relays and the routes between them. `await start()`, then `await stop()`."""

    def __init__(self, upstream: tuple[str, int], analysis: Analysis | None = None, *,
                 listen: tuple[str, int] = ("127.0.0.1", 1863), advertise: str | None = None,
                 recorder: PcapngWriter | None = None, connect_timeout: float = 10.0,
                 on_notice=None, max_connections: int | None = None, buffer: int = WRITE_HIGH_WATER,
                 policy: TargetPolicy | None = None, limits: ProxyLimits | None = None) -> None:
        self.upstream = upstream
        self.max_connections = max_connections if max_connections is not None else default_max_connections()
        self.buffer = buffer
        self.policy = policy if policy is not None else TargetPolicy(upstream)
        self.limits = limits if limits is not None else ProxyLimits()
        self.hits: Counter[str] = Counter()  # limits hit, refusals, timeouts (see LIMIT_ANOMALIES)
        self.per_address: Counter[str] = Counter()   # relays open per client address
        self.buckets: dict[str, list[float]] = {}    # client address -> [tokens, time]: new connections
        self._local: dict[str, bool] = {}            # address -> is it this machine's (bounded cache)
        self._sweeper: asyncio.Task | None = None
        self.analysis = analysis if analysis is not None else Analysis()
        self.listen = listen
        self.advertise = advertise or listen[0]
        self.recorder = recorder
        self.connect_timeout = connect_timeout
        self.on_notice = on_notice
        self.listeners: dict[tuple[str, int], Listener] = {}
        self.ports_used: set[int] = set()  # every port a listener of ours was bound to (dissect_options)
        self.relays: set[Relay] = set()
        self.notices: list[str] = []   # the latest (MAX_NOTICES to twice that); each is also sent to on_notice
        self.upstream_locals: list[tuple] = []
        self.rewrites = 0
        self._record_failed = False
        self.main: Listener | None = None

    @property
    def address(self) -> tuple[str, int]:
        return self.main.address

    def dissect_options(self) -> str:
        """tshark/Wireshark options that decode the recording's legs as MSNP: the NS and
        switchboard listeners sit on ephemeral ports Wireshark does not know as msnms."""
        ports = sorted(self.ports_used - {1863})  # closed idle listeners' too: the recording holds them
        return " ".join(f"-d tcp.port=={port},msnms" for port in ports)

    @property
    def refused(self) -> int:
        """Clients closed at once because --max-connections relays were open."""
        return self.hits["connections"]

    async def start(self) -> "Proxy":
        self.main = Listener("DS", self.upstream, rewrite=True)
        sock = self._bind(self.listen[1])
        loop = self._loop_reason(sock.getsockname()[:2])
        if loop is not None:
            sock.close()
            raise UsageError(loop)
        await self._serve(self.main, sock)
        self.listeners[self.upstream] = self.main
        self._sweeper = asyncio.ensure_future(self._sweep())
        return self

    def describe(self) -> str:
        """The policy and limits in force, one line (the listening line and the report say it)."""
        lim = self.limits
        return (f"{self.policy.describe()}; limits: {self.max_connections} connections, "
                f"{lim.max_per_address} per client address, {lim.rate_per_address:g} new/s per address, "
                f"{lim.max_listeners} listeners, idle {lim.idle_timeout:g} s "
                f"(first byte {lim.first_byte_timeout:g} s), buffer {self.buffer} bytes per side")

    def summary(self) -> list[str]:
        """Lines for the final report: the policy in force and every limit hit, with counts."""
        lines = [self.describe()]
        names = {"connections": "--max-connections", "per_address": "--max-per-address",
                 "rate": "--max-rate", "listeners": "--max-listeners", "idle": "idle timeouts",
                 "targets": "referral targets refused (proxy.target_refused)",
                 "buffer": "back-pressure pauses (--buffer)", "listeners_closed": "idle listeners closed"}
        hit = [f"{names.get(k, k)}: {v}" for k, v in sorted(self.hits.items()) if v]
        lines.append("limits hit: " + ("; ".join(hit) if hit else "none"))
        return lines

    # -- loops ----------------------------------------------------------------

    def _is_local(self, host: str) -> bool:
        """Whether `host` is an address of this machine (loopback, unspecified, or one a socket can bind)."""
        if host in (self.listen[0], self.advertise):
            return True
        known = self._local.get(host)
        if known is not None:
            return known
        address = ip_of(host)
        local = False
        if address is not None:
            local = this_machine(address)
            if not local:
                family = socket.AF_INET6 if address.version == 6 else socket.AF_INET
                try:
                    with socket.socket(family, socket.SOCK_STREAM) as probe:
                        probe.bind((str(address), 0))
                    local = True
                except OSError:
                    local = False
        if len(self._local) < 1024:
            self._local[host] = local
        return local

    def _loop_reason(self, bound: tuple[str, int]) -> str | None:
        """Why --upstream is one of our own listening addresses (a loop), or None."""
        host, port = self.upstream
        if port != bound[1]:
            return None
        listen = ip_of(bound[0])
        wildcard = listen is not None and listen.is_unspecified
        for address in self.policy.upstream_addresses or [ip_of(host)]:
            if address is None:
                continue
            if address == listen or address.is_unspecified or (wildcard and self._is_local(str(address))):
                return (f"--upstream {join_address(host, port)} is the proxy's own listening address "
                        f"{join_address(*bound)}: it would relay to itself")
        return None

    def _own_listener(self, host: str, port: int) -> bool:
        return any(l.address is not None and l.address[1] == port for l in self.listeners.values()) \
            and self._is_local(host)

    # -- admission and limits ---------------------------------------------------

    def admit(self, peer) -> str | None:
        """None to accept a new client from `peer`, else the limit it hits."""
        if len(self.relays) >= self.max_connections:
            return "connections"
        host = peer[0] if peer else "?"
        if self.per_address[host] >= self.limits.max_per_address:
            return "per_address"
        rate = self.limits.rate_per_address
        now = time.monotonic()
        bucket = self.buckets.get(host)
        if bucket is None:
            bucket = self.buckets[host] = [2 * rate, now]
        tokens = min(2 * rate, bucket[0] + (now - bucket[1]) * rate)
        bucket[1] = now
        if tokens < 1:
            bucket[0] = tokens
            return "rate"
        bucket[0] = tokens - 1
        return None

    def joined(self, relay: Relay) -> None:
        if relay.peer_host is not None:
            self.per_address[relay.peer_host] += 1
        relay.listener.relays += 1
        relay.listener.last_used = time.monotonic()

    def left(self, relay: Relay) -> None:
        host = relay.peer_host
        if host is not None:
            self.per_address[host] -= 1
            if self.per_address[host] <= 0:
                del self.per_address[host]
        relay.listener.relays -= 1
        relay.listener.last_used = time.monotonic()

    def hit(self, limit: str, peer) -> None:
        """A client refused by a limit: count it, report the first of each kind in a run."""
        self.hits[limit] += 1
        if self.hits[limit] > 1:
            return
        who = join_address(*peer[:2]) if peer else "?"
        lim = self.limits
        what = {"connections": f"{self.max_connections} connections open (--max-connections)",
                "per_address": f"{lim.max_per_address} connections open from one address (--max-per-address)",
                "rate": f"more than {lim.rate_per_address:g} new connections per second from one address (--max-rate)",
                }[limit]
        self.notice(f"{what}: closing new clients (first: {who}) while it holds; the count is given at stop")
        try:
            self.analysis.anomaly(None, Anomaly(
                LIMIT_ANOMALIES[limit], f"{what}: {who} and every client after it while the limit held "
                "was closed at once", None, None, time.time()))
        except Exception:  # noqa: BLE001 - forwarding never depends on the analysis
            pass

    async def _sweep(self) -> None:
        """Close silent connections and idle listeners; forget full rate buckets."""
        lim = self.limits
        period = max(0.05, min(1.0, lim.first_byte_timeout / 4, lim.idle_timeout / 4, lim.listener_idle / 4))
        while True:
            await asyncio.sleep(period)
            try:
                self._sweep_once()
            except Exception as exc:  # noqa: BLE001 - the sweep must go on
                self.notice(f"limit sweep failed: {type(exc).__name__}: {exc}")

    def _sweep_once(self) -> None:
        lim = self.limits
        now = time.time()
        for relay in list(self.relays):
            if relay.done:
                continue
            if relay.last_c2s is None:
                if now - relay.opened > lim.first_byte_timeout:
                    relay.timed_out(f"no byte from the client within {lim.first_byte_timeout:g} s of connecting")
                continue
            last = max(relay.last_c2s, relay.last_s2c or 0.0)
            if now - last > lim.idle_timeout:
                relay.timed_out(f"no byte either way for {lim.idle_timeout:g} s")
        mono = time.monotonic()
        for key, listener in list(self.listeners.items()):
            if listener is not self.main and listener.relays <= 0 and mono - listener.last_used > lim.listener_idle:
                self._close_listener(key)
        rate = lim.rate_per_address
        for host, bucket in list(self.buckets.items()):
            if bucket[0] + (mono - bucket[1]) * rate >= 2 * rate:
                del self.buckets[host]

    def _close_listener(self, key) -> None:
        listener = self.listeners.pop(key)
        self.hits["listeners_closed"] += 1
        if listener.server is not None:
            listener.server.close()
        elif listener.ready is not None:
            listener.ready.add_done_callback(lambda _: listener.server and listener.server.close())

    def _bind(self, port: int) -> socket.socket:
        host = self.listen[0]
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, port))
            sock.listen(512)
            sock.setblocking(False)
        except OSError:
            sock.close()
            raise
        return sock

    async def _serve(self, listener: Listener, sock: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        listener.address = sock.getsockname()[:2]
        self.ports_used.add(listener.address[1])
        listener.server = await loop.create_server(lambda: _Side(Relay(self, listener), C2S), sock=sock)

    def route(self, kind: str, host: str, port: int) -> tuple[str, int] | Refused:
        """The address of our listener for upstream (host, port), created on first sight when allowed.

        A `Refused` reason instead when the policy refuses the target, when it is one of
        our own listeners (a loop), or when --max-listeners are open and none is idle.
        """
        key = (host, port)
        listener = self.listeners.get(key)
        if listener is None:
            reason = self.policy.check(host, port)
            if reason is None and self._own_listener(host, port):
                reason = f"{join_address(host, port)} is one of the proxy's own listeners (a loop)"
            if reason is not None:
                self.hits["targets"] += 1
                return Refused(reason)
            if len(self.listeners) - 1 >= self.limits.max_listeners and not self._make_room():
                self.hits["listeners"] += 1
                return Refused(f"{self.limits.max_listeners} listeners open, none idle (--max-listeners)",
                               "proxy.listener_limit")
            sock = self._bind(0)  # bound now, so the address is real before the line is sent
            listener = Listener(kind, key, rewrite=kind != "SB")
            listener.address = sock.getsockname()[:2]
            listener.ready = asyncio.ensure_future(self._serve(listener, sock))
            self.listeners[key] = listener
        listener.last_used = time.monotonic()
        return self.advertise, listener.address[1]

    def _make_room(self) -> bool:
        """Close the least recently used listener with no relay (not one just handed out)."""
        mono = time.monotonic()
        idle = [(l.last_used, key) for key, l in self.listeners.items()
                if l is not self.main and l.relays <= 0 and mono - l.last_used > LISTENER_GRACE]
        if not idle:
            return False
        self._close_listener(min(idle)[1])
        return True

    def emit(self, conn, record: dict) -> None:
        """A record of the proxy's own (a `rewrite`) for the sinks, wherever the analysis runs."""
        self.analysis.record(conn, record)  # an Analysis, or the proxy worker's RemoteAnalysis

    def notice(self, text: str) -> None:
        self.notices.append(text)
        if len(self.notices) > 2 * MAX_NOTICES:   # a run of days: the newest MAX_NOTICES kept (amortised)
            del self.notices[:-MAX_NOTICES]
        if self.on_notice is not None:
            try:
                self.on_notice(text)
            except Exception:  # noqa: BLE001
                pass

    def record_failed(self, exc: Exception) -> None:
        if not self._record_failed:
            self._record_failed = True
            self.notice(f"recording stopped: {type(exc).__name__}: {exc}")
        for relay in self.relays:
            relay.recorder = None
        self.recorder = None

    def tick(self) -> None:
        """Let open connections time out unanswered requests."""
        now = time.time()
        for relay in list(self.relays):
            if relay.analysing and relay.conn is not None and not relay.conn.closed:
                relay._analyse(lambda relay=relay: self.analysis.tick(relay.conn, now))

    async def stop(self) -> None:
        """Stop listening, close every connection (pending data is flushed), and wait for it."""
        if self._sweeper is not None:
            self._sweeper.cancel()
        for listener in self.listeners.values():
            if listener.ready is not None and not listener.ready.done():
                try:
                    await listener.ready
                except Exception:  # noqa: BLE001
                    pass
            if listener.server is not None:
                listener.server.close()
        for relay in list(self.relays):
            relay.finish()
        for listener in self.listeners.values():
            if listener.server is not None:
                await listener.server.wait_closed()
        # Give the transports one turn of the loop to deliver connection_lost.
        await asyncio.sleep(0)
        counted = {"connections": "connection limit", "per_address": "per-address limit",
                   "rate": "per-address rate limit"}
        for limit, what in counted.items():
            if self.hits[limit] > 1:
                self.notice(f"{what}: {self.hits[limit]} clients were closed at once in all")
