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

Limits (options of `proxy`): `buffer` is that high-water mark per side
(`--buffer`, default 256 KiB; a side holds at most it plus one read, 256 KiB);
`max_connections` caps the relays open at once (`--max-connections`, default
4096 or what the open-file limit allows): a client beyond it is accepted and
closed at once, counted in `Proxy.refused`, and the first refusal of a run is
reported as `proxy.connection_limit` (a connection storm does not flood the
log; the notice at stop gives the count).

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

from analyzer.analysis.run import Analysis
from analyzer.msnp import C2S, S2C, Anomaly
from analyzer.msnp.facts import format_address as join_address
from analyzer.msnp.rewrite import AddressRewriter
from analyzer.capture.pcapng_writer import PcapngWriter, TcpRecorder

WRITE_HIGH_WATER = 256 * 1024  # per side: above this, the other side stops being read


LOOPS = ("auto", "uvloop", "asyncio")


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

    # -- set-up -------------------------------------------------------------

    def client_made(self, transport) -> None:
        self.client = transport
        proxy = self.proxy
        if len(proxy.relays) >= proxy.max_connections:
            self.done = True
            transport.close()
            proxy.refuse(transport.get_extra_info("peername"))
            return
        transport.pause_reading()  # until the upstream connection is up
        transport.set_write_buffer_limits(high=proxy.buffer)
        peer = transport.get_extra_info("peername")
        local = transport.get_extra_info("sockname")
        proxy.relays.add(self)
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
        self.server = transport
        transport.set_write_buffer_limits(high=self.proxy.buffer)
        self.upstream_local = transport.get_extra_info("sockname")[:2]
        self.proxy.upstream_locals.append(self.upstream_local)
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
        ts = _now()
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
        ts = _now()
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
                self._anomaly("proxy.rewrite_failed", f"{r.cmd} {r.kind} {r.original}: {r.reason}", S2C, r.offset, ts)
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
        self.proxy.relays.discard(self)

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
                 on_notice=None, max_connections: int | None = None, buffer: int = WRITE_HIGH_WATER) -> None:
        self.upstream = upstream
        self.max_connections = max_connections if max_connections is not None else default_max_connections()
        self.buffer = buffer
        self.refused = 0
        self.analysis = analysis if analysis is not None else Analysis()
        self.listen = listen
        self.advertise = advertise or listen[0]
        self.recorder = recorder
        self.connect_timeout = connect_timeout
        self.on_notice = on_notice
        self.listeners: dict[tuple[str, int], Listener] = {}
        self.relays: set[Relay] = set()
        self.notices: list[str] = []
        self.upstream_locals: list[tuple] = []
        self.rewrites = 0
        self._record_failed = False
        self.main: Listener | None = None

    @property
    def address(self) -> tuple[str, int]:
        return self.main.address

    async def start(self) -> "Proxy":
        self.main = Listener("DS", self.upstream, rewrite=True)
        sock = self._bind(self.listen[1])
        await self._serve(self.main, sock)
        self.listeners[self.upstream] = self.main
        return self

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
        listener.server = await loop.create_server(lambda: _Side(Relay(self, listener), C2S), sock=sock)

    def route(self, kind: str, host: str, port: int) -> tuple[str, int] | None:
        """The address of our listener for upstream (host, port), created on first sight."""
        key = (host, port)
        listener = self.listeners.get(key)
        if listener is None:
            sock = self._bind(0)  # bound now, so the address is real before the line is sent
            listener = Listener(kind, key, rewrite=kind != "SB")
            listener.address = sock.getsockname()[:2]
            listener.ready = asyncio.ensure_future(self._serve(listener, sock))
            self.listeners[key] = listener
        return self.advertise, listener.address[1]

    def emit(self, conn, record: dict) -> None:
        """A record of the proxy's own (a `rewrite`) for the sinks, wherever the analysis runs."""
        self.analysis.record(conn, record)  # an Analysis, or the proxy worker's RemoteAnalysis

    def notice(self, text: str) -> None:
        self.notices.append(text)
        if self.on_notice is not None:
            try:
                self.on_notice(text)
            except Exception:  # noqa: BLE001
                pass

    def refuse(self, peer) -> None:
        """A client beyond --max-connections was closed at once: count it, report the first."""
        self.refused += 1
        if self.refused == 1:
            who = join_address(*peer[:2]) if peer else "?"
            self.notice(f"connection limit ({self.max_connections}) reached: closing new clients "
                        f"(first: {who}) until connections end")
            try:
                self.analysis.anomaly(None, Anomaly(
                    "proxy.connection_limit",
                    f"{self.max_connections} connections open (--max-connections): {who} and every client "
                    f"after it while the limit held was closed at once", None, None, time.time()))
            except Exception:  # noqa: BLE001 - forwarding never depends on the analysis
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
        if self.refused > 1:
            self.notice(f"connection limit: {self.refused} clients were closed at once in all")
