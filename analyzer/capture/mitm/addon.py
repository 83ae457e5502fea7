"""The mitmproxy addon: MSNP analysis inside mitmproxy (stock `mitmdump -s` or `msnp-analyzer mitm`).

    mitmdump --mode socks5 -s analyzer/capture/mitm/addon.py --set msnp_jsonl=events.jsonl

What it does, hook by hook:
- `next_layer`: a connection whose first client line is `VER|USR|ANS trid ...`
  is raw MSNP, so it gets mitmproxy's TCP layer (mitmproxy would otherwise take
  `VER 1 MSNP8 CVR0` for an HTTP request line). Other traffic is left alone, so
  the HTTP gateway and HTTPS logins still reach the `response` hook.
- `tcp_start`/`tcp_message`/`tcp_end`/`tcp_error`: one `Connection` per TCP
  flow; each message is a chunk (never a command: the codec frames it), fed to
  that direction's reader. The flow's message list is emptied after feeding, so
  an NS connection up for hours holds no chunks, unless flows are being saved
  (`-w`/`save_stream_file`, or `msnp_keep_messages`): then mitmproxy needs them.
  mitmproxy closes TCP connections idle for 10 minutes, which would cut idle
  switchboards and NS connections between keep-alives: `msnp_idle_timeout`
  (seconds, 0 = never, the default) replaces that limit per MSNP connection.
- In reverse mode (`reverse:tcp://ds.example:1863`) server `XFR`/`RNG` addresses
  are rewritten to a new reverse listener that mitmproxy starts at run time for
  each target (so the client's NS and SB connections stay under observation),
  when the proxy's target policy allows the target (analyzer/capture/targets.py:
  the reverse target's /24 or /64, `msnp_allow_target`, `msnp_allow_any_target`)
  and it is not one of our own listeners; otherwise the line is forwarded as
  sent and `proxy.target_refused` names the target.
  In SOCKS5 and transparent modes nothing is rewritten: the client's next
  connection goes through the proxy by itself.
- `response`/`error` (HTTP): gateway sessions (`/gateway/gateway.dll`) become
  connections; Passport/Nexus and RST logins are tied to the `USR` that uses
  their ticket.
- `done`: every connection is closed and the totals logged.

A failing analysis never stops the proxy: each hook catches, logs, and forwards.
"""

from __future__ import annotations

import logging
import re
import socket
import sys
import time
import typing
from pathlib import Path

if __package__ in (None, ""):  # loaded by `mitmdump -s path/to/mitm.py` from a source tree
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from mitmproxy import ctx, http, tcp  # noqa: E402

from analyzer.analysis.run import Analysis  # noqa: E402
from analyzer.msnp import C2S, S2C, Anomaly, Command  # noqa: E402
from analyzer.capture.mitm.flows import FlowAnalyzer, address, closed_at, exchange_from_flow, tcp_endpoints  # noqa: E402
from analyzer.analysis.redact import Redactor  # noqa: E402
from analyzer.text import visible  # noqa: E402

logger = logging.getLogger("msnp")

NEVER = 10 * 365 * 24 * 3600  # "no idle timeout": mitmproxy's watchdog sleeps this long
_MSNP_FIRST_LINE = re.compile(rb"^(VER|USR|ANS) \d+ [^\r\n]*\r?\n")
_MSNP_PREFIX = re.compile(rb"^(V(E(R( \d*)?)?)?|U(S(R( \d*)?)?)?|A(N(S( \d*)?)?)?|(VER|USR|ANS) \d+ [^\r\n]{0,1024})$")


def msnp_first_line(data: bytes) -> bool | None:
    """True: raw MSNP. False: something else. None: too early to say."""
    if _MSNP_FIRST_LINE.match(data):
        return True
    if _MSNP_PREFIX.match(data):
        return None
    return False


class LogSink:
    """Live view for a stock mitmdump: one log line per command, anomaly and login."""

    def __init__(self, redactor: Redactor) -> None:
        self.redactor = redactor

    def event(self, conn, event) -> None:
        stream = conn.id if conn is not None else "-"
        if type(event) is Command:
            arrow = ">>>" if event.direction == C2S else "<<<"
            trid = f" {event.trid}" if event.trid is not None else ""
            params = " ".join(self.redactor.params(event))
            logger.info(visible(f"[msnp {stream}] {arrow} {event.cmd}{trid} {params}".rstrip()))
        elif type(event) is Anomaly:
            logger.warning(visible(f"[msnp {stream}] ! {event.name}: {self.redactor.detail(event)}"))
        elif isinstance(event, dict) and event.get("kind") in ("login", "rewrite"):
            logger.info(visible(f"[msnp {stream}] {event['kind']}: " + ", ".join(
                f"{k}={v}" for k, v in event.items() if k in ("method", "handle", "outcome", "original", "rewritten"))))

    def stream(self, conn) -> None:
        logger.info(visible(f"[msnp {conn.id}] closed: {conn.role or '?'} {conn.version_label or '?'} "
                            f"{sum(conn.commands.values())} commands, anomalies {dict(conn.anomalies) or '-'}"))

    def close(self) -> None:
        pass


class _TcpState:
    __slots__ = ("conn", "rewriter")

    def __init__(self, conn, rewriter) -> None:
        self.conn = conn
        self.rewriter = rewriter


class MsnpAddon:
    def __init__(self, analysis: Analysis | None = None) -> None:
        """`analysis` is given by our wrapper; a stock mitmdump builds one from the options at start."""
        self.analysis = analysis
        self.flows: FlowAnalyzer | None = FlowAnalyzer(analysis) if analysis is not None else None
        self._owned_files: list = []
        self._tcp: dict[str, _TcpState] = {}
        self.listeners: dict[tuple[str, int], tuple[str, int]] = {}  # target -> our reverse listener
        self._roots: dict[tuple[str, int], tuple[str, int]] = {}  # a listener's target -> the user's reverse target
        self._policies: dict[tuple[str, int], object] = {}  # the user's reverse target -> its TargetPolicy
        self._new_modes: list[str] = []
        self.errors = 0

    # -- set-up ---------------------------------------------------------------

    def load(self, loader) -> None:
        loader.add_option("msnp_jsonl", str, "", "Write MSNP events as JSON Lines to this file ('-' for stdout).")
        loader.add_option("msnp_redact", bool, True, "Redact MD5 answers, tickets, passwords and cookies in exports.")
        loader.add_option("msnp_verbose", bool, True, "Log every decoded MSNP command (the live view of mitmdump).")
        loader.add_option("msnp_sniff", bool, True,
                          "Treat connections whose first line is VER/USR/ANS as raw MSNP (TCP layer), not HTTP.")
        loader.add_option("msnp_idle_timeout", int, 0,
                          "Close MSNP connections idle this many seconds (0: never; mitmproxy's own limit is 600).")
        loader.add_option("msnp_keep_messages", bool, False,
                          "Keep every TCP message in its flow (memory grows with the session; implied by -w).")
        loader.add_option("msnp_rewrite", bool, True,
                          "In reverse mode, rewrite XFR/RNG addresses to new reverse listeners.")
        loader.add_option("msnp_advertise_host", str, "",
                          "Host written into rewritten XFR/RNG lines (default: the address the client connected to).")
        loader.add_option("msnp_allow_target", typing.Sequence[str], [],
                          "Reverse mode: also follow XFR/RNG referrals to this CIDR, ADDRESS[:PORT] or HOST[:PORT] "
                          "(default: only the reverse target's own /24 or /64 and its name).")
        loader.add_option("msnp_allow_any_target", bool, False,
                          "Reverse mode: follow referrals to any host (this machine's loopback/link-local "
                          "addresses still only when the reverse target is on loopback or named).")

    def running(self) -> None:
        if self.analysis is None:
            self.analysis = self._analysis_from_options()
            self.flows = FlowAnalyzer(self.analysis)

    def _analysis_from_options(self) -> Analysis:
        from analyzer.outputs.jsonl import JsonLinesWriter
        redactor = Redactor(enabled=ctx.options.msnp_redact)
        sinks: list = []
        path = ctx.options.msnp_jsonl
        if path:
            if path == "-":
                out = sys.stdout
            else:
                from analyzer.outputs.atomic import open_output
                out = open_output(path)  # renamed over `path` when mitmproxy is done
                self._owned_files.append(out)
            sinks.append(JsonLinesWriter(out, redactor, flush=True))
        if ctx.options.msnp_verbose:
            sinks.append(LogSink(redactor))
        return Analysis(sinks, redactor=redactor)

    def _ensure(self) -> None:
        if self.analysis is None:  # a hook before `running` (tests with taddons)
            self.running()

    # -- layer choice -----------------------------------------------------------

    def next_layer(self, nextlayer) -> None:
        try:
            if not ctx.options.msnp_sniff:
                return
            context = nextlayer.context
            if context.client.transport_protocol != "tcp" or not context.layers:
                return
            from mitmproxy.proxy.layers import TCPLayer, modes
            layers = list(context.layers)
            chosen = nextlayer.layer
            if chosen is not None and layers and layers[-1] is chosen:
                layers.pop()  # mitmproxy's own choice (a layer adds itself to the stack when made)
            if not layers or not isinstance(layers[-1], (modes.Socks5Proxy, modes.TransparentProxy)):
                return  # only right after the proxy mode; reverse tcp:// is TCP already
            if isinstance(chosen, TCPLayer):
                return
            verdict = msnp_first_line(nextlayer.data_client())
            if verdict is False or (verdict is None and nextlayer.data_server()):
                return
            if chosen is not None and context.layers[-1] is chosen:
                context.layers.pop()
            # Raw MSNP: TCP. Too early to tell: no layer yet, mitmproxy asks again with more data.
            nextlayer.layer = TCPLayer(context) if verdict else None
        except Exception:  # noqa: BLE001
            logger.exception("msnp: next_layer failed; mitmproxy's own choice stands")

    # -- raw TCP --------------------------------------------------------------

    def tcp_start(self, flow: tcp.TCPFlow) -> None:
        try:
            self._ensure()
            self._start(flow)
            self._lift_idle_timeout(flow)
        except Exception:  # noqa: BLE001
            self._failed("tcp_start")

    def _start(self, flow) -> _TcpState:
        client, server = tcp_endpoints(flow)
        conn = self.analysis.open(client=client, server=server)
        rewriter = None
        if self._reverse(flow) and ctx.options.msnp_rewrite:
            from analyzer.msnp.rewrite import AddressRewriter
            limits = self.analysis.limits
            rewriter = AddressRewriter(lambda kind, host, port: self._route(flow, kind, host, port),
                                       max_line=limits.max_line)
        state = self._tcp[flow.id] = _TcpState(conn, rewriter)
        return state

    def _lift_idle_timeout(self, flow) -> None:
        proxyserver = ctx.master.addons.get("proxyserver") if ctx.master else None
        handler = getattr(proxyserver, "connections", {}).get(flow.client_conn.id)
        if handler is not None:
            handler.timeout_watchdog.timeout = ctx.options.msnp_idle_timeout or NEVER

    async def tcp_message(self, flow: tcp.TCPFlow) -> None:
        message = flow.messages[-1]
        try:
            self._ensure()
            state = self._tcp.get(flow.id) or self._start(flow)
            direction = C2S if message.from_client else S2C
            data = message.content
            if direction == C2S and state.rewriter is not None and state.rewriter.wants_client:
                state.rewriter.client(data)
            if direction == S2C and state.rewriter is not None:
                await self._rewrite(flow, state, message)
            self.analysis.feed(state.conn, direction, data, message.timestamp)
        except Exception:  # noqa: BLE001
            self._failed("tcp_message")
        finally:
            if not (ctx.options.msnp_keep_messages or getattr(ctx.options, "save_stream_file", None)):
                # The proxy layer holds `message` itself; the flow needs no history.
                flow.messages.clear()

    def tcp_end(self, flow: tcp.TCPFlow) -> None:
        self._end(flow, None)

    def tcp_error(self, flow: tcp.TCPFlow) -> None:
        self._end(flow, flow.error)

    def _end(self, flow, error) -> None:
        try:
            state = self._tcp.pop(flow.id, None)
            if state is None:
                return
            if state.rewriter is not None and state.rewriter.pending:
                state.rewriter.close()
            ts = flow.error.timestamp if error else None
            if error:
                self.analysis.anomaly(state.conn, Anomaly("mitm.connection.error", error.msg, None, None, ts))
            # the TCP close, not the last message: mitmproxy's end time, else now (this hook runs then)
            self.analysis.close(state.conn, ts or closed_at(flow) or time.time())
        except Exception:  # noqa: BLE001
            self._failed("tcp_end")

    # -- reverse mode: XFR/RNG rewriting --------------------------------------------

    @staticmethod
    def _reverse(flow) -> bool:
        from mitmproxy.proxy.mode_specs import ReverseMode
        return isinstance(getattr(flow.client_conn, "proxy_mode", None), ReverseMode)

    def _policy(self, flow):
        """The target policy for a flow: that of the user's reverse target it descends from."""
        from analyzer.capture.targets import TargetPolicy
        mode = flow.client_conn.proxy_mode
        upstream = tuple(mode.address)
        root = self._roots.get(upstream, upstream)
        policy = self._policies.get(root)
        if policy is None:
            policy = self._policies[root] = TargetPolicy(
                root, list(ctx.options.msnp_allow_target), ctx.options.msnp_allow_any_target)
        return root, policy

    def _route(self, flow, kind: str, host: str, port: int):
        from analyzer.capture.targets import Refused
        target = (host, port)
        found = self.listeners.get(target)
        if found is None:
            root, policy = self._policy(flow)
            reason = policy.check(host, port)
            ours = {l[1] for l in self.listeners.values()} | {flow.client_conn.sockname[1]}
            if reason is None and port in ours and self._is_local(host, flow):
                from analyzer.msnp.facts import format_address
                reason = f"{format_address(host, port)} is one of the proxy's own listeners (a loop)"
            if reason is not None:
                return Refused(reason)
            self._roots[target] = root
            listen_host = flow.client_conn.sockname[0]
            with socket.socket(socket.AF_INET6 if ":" in listen_host else socket.AF_INET) as s:
                s.bind((listen_host, 0))
                listen_port = s.getsockname()[1]
            from analyzer.msnp.facts import format_address
            self._new_modes.append(f"reverse:tcp://{format_address(host, port)}@{format_address(listen_host, listen_port)}")
            found = self.listeners[target] = (listen_host, listen_port)
        advertise = ctx.options.msnp_advertise_host or found[0]
        return advertise, found[1]

    @staticmethod
    def _is_local(host: str, flow) -> bool:
        from analyzer.capture.targets import ip_of, this_machine
        if host in (flow.client_conn.sockname[0], ctx.options.msnp_advertise_host, ctx.options.listen_host):
            return True
        address = ip_of(host)
        if address is None:
            return False
        if this_machine(address):
            return True
        try:
            with socket.socket(socket.AF_INET6 if address.version == 6 else socket.AF_INET) as probe:
                probe.bind((str(address), 0))
            return True
        except OSError:
            return False

    async def _rewrite(self, flow, state: _TcpState, message) -> None:
        rewriter = state.rewriter
        held = rewriter.pending
        try:
            out, rewrites = rewriter.feed(message.content)
        except Exception:  # noqa: BLE001 - forward what we have, stop rewriting this connection
            state.rewriter = None
            message.content = held + message.content
            self._failed("rewrite")
            return
        if self._new_modes:
            modes, self._new_modes = self._new_modes, []
            ctx.options.update(mode=list(ctx.options.mode) + modes)
            await ctx.master.addons.get("proxyserver").setup_servers()
            logger.info(f"msnp: new reverse listeners {modes}")
        message.content = out
        for rw in rewrites:
            if rw.rewritten is None:
                self.analysis.anomaly(state.conn, Anomaly(
                    getattr(rw.reason, "anomaly", "mitm.rewrite.skipped"),
                    f"{rw.cmd} {rw.kind} {rw.original}: {rw.reason}; forwarded as sent", S2C, rw.offset,
                    message.timestamp))
            else:
                record = {"kind": "rewrite", "cmd": rw.cmd, "target": rw.kind, "original": rw.original,
                          "rewritten": rw.rewritten, "offset": rw.offset, "ts": message.timestamp}
                self.analysis.record(state.conn, record)

    # -- HTTP: gateway and logins ---------------------------------------------------

    def response(self, flow: http.HTTPFlow) -> None:
        self._http(flow)

    def error(self, flow: http.HTTPFlow) -> None:
        if flow.response is None:
            self._http(flow)

    def _http(self, flow) -> None:
        try:
            self._ensure()
            self.flows.http_flow(flow)
        except Exception:  # noqa: BLE001
            self._failed("http")

    # -- the end ----------------------------------------------------------------

    def done(self) -> None:
        if self.analysis is None:
            return
        try:
            self.analysis.finish()
            totals = self.analysis.totals()
            logger.info(f"msnp: {totals['connections']} connections, {sum(totals['commands'].values())} commands, "
                        f"anomalies {dict(totals['anomalies']) or '-'}")
        except Exception:  # noqa: BLE001
            self._failed("done")
        finally:
            for f in self._owned_files:
                f.close()
            self._owned_files.clear()

    def _failed(self, where: str) -> None:
        self.errors += 1
        logger.exception(f"msnp: analysis failed in {where}; traffic is still forwarded")


addons = [MsnpAddon()]

__all__ = ["MsnpAddon", "LogSink", "msnp_first_line", "address", "exchange_from_flow"]
