"""The `proxy` and `demo` sub-commands.

`msnp-analyzer proxy --upstream HOST[:PORT]` runs the live proxy until Ctrl-C
(or SIGTERM, or `--duration`), then prints the same report as `analyze` and
exits 0 (or 1 with an explicit `--fail-on`). `msnp-analyzer demo` starts the
built-in scripted MSNP service on loopback and runs a scripted client through
the proxy, MSNP8 then MSNP15, so the whole thing can be seen with no legacy
client at hand; it stops by itself.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
import time

from analyzer.cli.options import _count, _seconds, _size, add_analysis_options, report_console
from analyzer.errors import EXIT_OK, EXIT_UNUSABLE, UsageError
from analyzer.msnp.facts import format_address, parse_address

REFRESH = 0.25


def register(sub) -> None:
    p = sub.add_parser(
        "proxy", help="run a live MSNP proxy between a legacy client and its server",
        description="Listen for an MSN Messenger client and relay it to --upstream, analysing every "
                    "command live. XFR and RNG addresses are rewritten so the notification server and "
                    "every switchboard connection also pass through the proxy. Ctrl-C stops it and "
                    "prints the report.",
        epilog="example: msnp-analyzer proxy --upstream messenger.example.net --record session.pcapng\n"
               "then point the client's server setting at 127.0.0.1 (port 1863).",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--upstream", required=True, metavar="HOST[:PORT]",
                   help="the dispatch (or notification) server the client would use (port 1863 if omitted)")
    _common(p, listen_default="127.0.0.1:1863")
    p.add_argument("--connect-timeout", type=_seconds, default=10.0, metavar="SECONDS",
                   help="give up connecting upstream after this long (default 10)")
    from analyzer.capture.proxy.relay import WRITE_HIGH_WATER
    p.add_argument("--max-connections", type=_count, metavar="N",
                   help="relays open at once; a client beyond it is closed at once, reported once as "
                        "proxy.connection_limit (default 4096, or what the open-file limit allows)")
    p.add_argument("--buffer", type=_size, default=WRITE_HIGH_WATER, metavar="BYTES",
                   help=f"per-connection write buffer high-water mark per side: above it the other side "
                        f"stops being read (default {WRITE_HIGH_WATER})")
    p.add_argument("--duration", type=_seconds, metavar="SECONDS",
                   help="stop by itself after this long (default: run until Ctrl-C)")
    _policy_options(p)
    from analyzer.capture.proxy.relay import LOOPS
    p.add_argument("--loop", choices=LOOPS, default="auto",
                   help="the event loop that forwards: 'uvloop' (libuv, transports in C: a higher message "
                        "rate and lower latency), 'asyncio' (the standard library's), or 'auto' (default: "
                        "uvloop when it is installed, else asyncio)")
    p.add_argument("--analysis", choices=["process", "inline"], default="process",
                   help="where the analysis runs: 'process' (default) in a process of its own fed in "
                        "batches, so decoding never slows forwarding; 'inline' on the forwarding "
                        "loop itself (for debugging, or where processes cannot be forked)")
    p.add_argument("--analysis-backlog", type=float, default=64, metavar="MIB",
                   help="with --analysis process: at most this many MiB forwarded but not yet "
                        "analysed; beyond it the newest bytes are forwarded unanalysed and "
                        "proxy.analysis_backlog is reported (default 64)")
    add_analysis_options(p)
    p.set_defaults(func=cmd_proxy, fail_on="never")

    d = sub.add_parser(
        "demo", help="see the proxy at work on a built-in scripted MSNP service (no client needed)",
        description="Start a small scripted MSNP service (dispatch, notification and switchboard "
                    "servers, and a second user who answers) on loopback, and run a scripted client "
                    "conversation through the live proxy: login, XFR to the NS, a switchboard opened "
                    "with XFR SB, an invitation with RNG, chat, logout. Finishes by itself.")
    d.add_argument("--msnp", choices=["8", "15", "both"], default="both",
                   help="the dialect(s) the scripted client speaks (default: both, MSNP8 then MSNP15)")
    _common(d, listen_default="127.0.0.1:0")
    d.add_argument("--pace", type=_seconds, metavar="SECONDS",
                   help="pause between the client's commands (default 0.04 on a terminal, else 0)")
    add_analysis_options(d)
    d.set_defaults(func=cmd_demo, fail_on="never")


def _policy_options(p) -> None:
    from analyzer.capture.proxy.relay import ProxyLimits
    d = ProxyLimits()
    g = p.add_argument_group("target policy and limits (see the README's Limits table)")
    g.add_argument("--allow-target", action="append", default=[], metavar="CIDR|HOST[:PORT]",
                   help="also follow XFR/RNG referrals to this network, address or host name (repeatable); "
                        "by default only the upstream's own /24 (IPv4) or /64 (IPv6) and its name are followed")
    g.add_argument("--allow-any-target", action="store_true",
                   help="follow referrals to any host (this machine's loopback and link-local addresses "
                        "still only when the upstream is on loopback or --allow-target names them)")
    g.add_argument("--max-listeners", type=int, default=d.max_listeners, metavar="N",
                   help=f"listeners opened for referral targets; an idle one is closed to make room, else "
                        f"the referral is forwarded as sent (proxy.listener_limit) (default {d.max_listeners})")
    g.add_argument("--max-per-address", type=int, default=d.max_per_address, metavar="N",
                   help=f"connections open at once from one client address (default {d.max_per_address})")
    g.add_argument("--max-rate", type=float, default=d.rate_per_address, metavar="PER_SECOND",
                   help=f"new connections per second from one client address, in bursts of up to twice "
                        f"that (default {d.rate_per_address:g})")
    g.add_argument("--idle-timeout", type=float, default=d.idle_timeout, metavar="SECONDS",
                   help=f"close a connection silent both ways this long (default {d.idle_timeout:g}: an NS "
                        f"pings about every 50 s)")
    g.add_argument("--first-byte-timeout", type=float, default=d.first_byte_timeout, metavar="SECONDS",
                   help=f"close a client that sends nothing this long after connecting (default "
                        f"{d.first_byte_timeout:g}: a client sends VER, USR or ANS at once)")


def _common(p, listen_default: str) -> None:
    p.add_argument("--listen", default=listen_default, metavar="ADDR:PORT",
                   help=f"where to listen for the client (default {listen_default}; loopback only "
                        "unless you give another address)")
    p.add_argument("--advertise", metavar="HOST",
                   help="the address written into rewritten XFR/RNG lines (default: the --listen "
                        "address; required when listening on all interfaces)")
    p.add_argument("--record", metavar="FILE",
                   help="write the session as it happens to a pcapng FILE (readable by analyze, tshark, Wireshark)")
    p.add_argument("--quiet", action="store_true", help="no live view (the final report is still printed)")


def _address(text: str, what: str, default_port: int = 1863) -> tuple[str, int]:
    if text.endswith(":0"):  # an ephemeral port (for listening)
        address = parse_address(text[:-2])
        address = address and (address[0], 0)
    else:
        address = parse_address(text) if ":" in text else (text, default_port)
    if address is None or not address[0]:
        raise UsageError(f"{what} {text!r}: expected HOST[:PORT]")
    return address


class _Session:
    """What a proxy or demo run sets up: analysis, sinks, recorder, live view, report."""

    def __init__(self, args, title: str, plugins: bool = True) -> None:
        from analyzer.cli.run import Run, RunOptions
        from analyzer.outputs.live import LiveView
        self.args = args
        # JSON Lines flushed per line (a live run), -v, link records, the --html timeline (at exit).
        self.analysis_run = Run(RunOptions.from_args(args, html=args.html), report_console(args), flush=True)
        self.console = self.analysis_run.console
        self.live = None
        self.analysis = self.analysis_run.analysis
        if not args.verbose and not args.quiet:
            # The run's redactor: one key, so the live view's hashes match the JSON's.
            self.live = LiveView(self.analysis, self.analysis_run.redactor, title=title)
            self.analysis_run.add(self.live)
        self.plugins = None
        self.report_lines: list[str] = []  # the proxy's policy and limits, printed after the report
        if plugins:  # else start_plugins() in the analysis process (their thread must live there)
            self.start_plugins()
        self.recorder = None
        if args.record:
            from analyzer.capture.pcapng_writer import PcapngWriter
            try:
                f = open(args.record, "wb")
            except OSError as exc:
                raise UsageError(f"{args.record}: {exc.strerror}") from None
            self.analysis_run.files.append(f)
            self.recorder = PcapngWriter(f)

    def start_plugins(self) -> None:
        # Observers run on a worker thread fed by a bounded queue: a slow plugin never stalls forwarding.
        self.plugins = self.analysis_run.load_plugins(threaded=True, warn=self.notice)

    def notice(self, text: str) -> None:
        if self.live is not None:
            self.live.notice(text)
        else:
            self.console.print(f"[yellow]! {text}[/yellow]", highlight=False)

    def listen_address(self) -> tuple[str, int]:
        host, port = _address(self.args.listen, "--listen", 1863)
        if host in ("0.0.0.0", "::", "") and not self.args.advertise:
            raise UsageError("listening on all interfaces: give the address clients should be sent to "
                             "with --advertise HOST")
        return host, port

    async def run(self, body) -> None:
        """Run `body(live)` under a rich Live view when on a terminal (`live` is None otherwise)."""
        live = None
        if self.live is not None and self.console.is_terminal:
            from rich.live import Live
            live = Live(self.live, console=self.console, auto_refresh=False, transient=False,
                        vertical_overflow="visible")
            live.start()
        try:
            await body(live)
        finally:
            self.end_live(live)

    def end_live(self, live) -> None:
        """Stop the rich Live display (or, off a terminal, print the view once)."""
        if live is not None:
            live.refresh()
            live.stop()
        elif self.live is not None:
            self.console.print(self.live)

    def finish(self) -> int:
        self.analysis.finish()
        self.analysis_run.close()
        status = self.analysis_run.report()
        for line in self.report_lines:  # never wrapped: scripts grep the report for them
            self.console.print(f"proxy {line}", highlight=False, markup=False, soft_wrap=True)
        return status


def policy_and_limits(args, upstream):
    """The TargetPolicy and ProxyLimits the options ask for (UsageError on a bad value)."""
    from analyzer.capture.proxy.relay import ProxyLimits
    from analyzer.capture.targets import TargetPolicy
    d = ProxyLimits()
    try:
        policy = TargetPolicy(upstream, getattr(args, "allow_target", []) or [],
                              getattr(args, "allow_any_target", False))
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    values = {name: getattr(args, option, getattr(d, name)) for name, option in (
        ("max_listeners", "max_listeners"), ("max_per_address", "max_per_address"),
        ("rate_per_address", "max_rate"), ("idle_timeout", "idle_timeout"),
        ("first_byte_timeout", "first_byte_timeout"))}
    for name, value in values.items():
        if not value > 0 or value != value:
            option = {"rate_per_address": "max-rate"}.get(name, name.replace("_", "-"))
            raise UsageError(f"--{option}: expected a positive number, got {value}")
    return policy, ProxyLimits(**values)


def _make_proxy(session: _Session, upstream, listen, connect_timeout=10.0):
    from analyzer.capture.proxy.relay import WRITE_HIGH_WATER, Proxy
    args = session.args
    policy, limits = policy_and_limits(args, upstream)
    return Proxy(upstream, session.analysis, listen=listen, advertise=args.advertise,
                 recorder=session.recorder, connect_timeout=connect_timeout, on_notice=session.notice,
                 max_connections=getattr(args, "max_connections", None),
                 buffer=getattr(args, "buffer", WRITE_HIGH_WATER), policy=policy, limits=limits)


async def _start(proxy) -> None:
    try:
        await proxy.start()
    except OSError as exc:
        raise UsageError(f"cannot listen on {format_address(*proxy.listen)}: {exc.strerror or exc}") from None


def cmd_proxy(args) -> int:
    from analyzer.capture.proxy.relay import LoopUnavailable, loop_factory, run
    upstream = _address(args.upstream, "--upstream")
    try:
        _, loop_name = loop_factory(args.loop)
    except LoopUnavailable as exc:
        raise UsageError(f"--loop uvloop: {exc}") from None
    in_process = _analysis_process(args)
    session = _Session(args, f"msnp-analyzer proxy -> {format_address(*upstream)}", plugins=not in_process)
    listen = session.listen_address()
    remote = None
    if in_process:
        worker, ours = _fork_analysis(session)

    async def body(live) -> None:
        nonlocal remote
        if in_process:
            from analyzer.capture.proxy.worker import RemoteAnalysis
            remote = await RemoteAnalysis(ours, session.analysis.limits,
                                          int(args.analysis_backlog * 1024 * 1024)).start()
        proxy = _make_proxy(session, upstream, listen, args.connect_timeout)
        if remote is not None:  # the analysis (and the live view, the report) run in the other process
            proxy.analysis = remote
            proxy.on_notice = remote.on_notice = remote.notice
        await _start(proxy)
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.add_signal_handler(sig, stop.set)
            except (NotImplementedError, RuntimeError):
                pass
        where = format_address(*proxy.address)
        text = (f"listening on {where}, relaying to {format_address(*upstream)} ({loop_name} loop); "
                f"{proxy.describe()}; Ctrl-C to stop")
        if remote is not None:
            remote.print(text, "bold")
        else:
            session.console.print(text, style="bold", highlight=False, soft_wrap=True)
        deadline = None if args.duration is None else time.monotonic() + args.duration
        try:
            while not stop.is_set():
                wait = REFRESH if deadline is None else max(0.0, min(REFRESH, deadline - time.monotonic()))
                try:
                    await asyncio.wait_for(stop.wait(), wait)
                except asyncio.TimeoutError:
                    pass
                if deadline is not None and time.monotonic() >= deadline:
                    break
                proxy.tick()
                if remote is not None:
                    remote.status(_status(proxy))
                elif live is not None:
                    session.live.status = _status(proxy)
                    live.refresh()
        finally:
            await proxy.stop()
            _say_dissect_options(session, proxy, remote)
            for sig in (signal.SIGINT, signal.SIGTERM):
                try:
                    loop.remove_signal_handler(sig)
                except (NotImplementedError, RuntimeError):
                    pass
            if remote is not None:
                for line in proxy.summary():
                    remote.report(line)
                remote.finished = await remote.finish(timeout=120)
            else:
                session.report_lines.extend(proxy.summary())

    if in_process:
        return _await_analysis(session, worker, ours, lambda: run(body(None), args.loop), lambda: remote)
    try:
        run(session.run(body), args.loop)
    except KeyboardInterrupt:
        pass
    return session.finish()


def _analysis_process(args) -> bool:
    """Whether `proxy` runs its analysis in a process of its own (needs fork())."""
    if args.analysis_backlog <= 0:
        raise UsageError("--analysis-backlog: expected a positive number of MiB")
    if args.analysis != "process":
        return False
    import multiprocessing
    return "fork" in multiprocessing.get_all_start_methods()


def _fork_analysis(session: _Session):
    """Fork the analysis process; it gets the session (sinks, live view, report) and one end of a socket pair."""
    import multiprocessing
    import socket
    from analyzer.capture.proxy.worker import serve
    ours, theirs = socket.socketpair()
    worker = multiprocessing.get_context("fork").Process(
        target=_analysis_main, args=(serve, session, theirs, ours), name="msnp-analysis")
    worker.start()
    theirs.close()
    return worker, ours


def _analysis_main(serve, session, sock, other_end) -> None:
    other_end.close()  # so that the forwarding process's end closing is seen here
    sys.exit(serve(session, sock))


def _await_analysis(session: _Session, worker, ours, body, remote) -> int:
    """Run the forwarding side, then wait (bounded) for the analysis process's report and status."""
    try:
        body()
    except KeyboardInterrupt:
        pass
    except BaseException:
        worker.kill()  # a usage error (a busy --listen port, ...): no report to wait for
        worker.join(5)
        raise
    finally:
        try:
            ours.close()  # if the run was cut short, the analysis process sees the end and reports
        except OSError:
            pass
    done = remote() is not None and getattr(remote(), "finished", False)
    worker.join(None if done else 120)
    if session.recorder is not None:
        try:
            session.recorder.close()
        except OSError:
            pass
    if worker.exitcode is None:
        worker.terminate()
        worker.join(5)
        raise UsageError("the analysis process did not finish in time; its report is lost")
    if worker.exitcode not in (EXIT_OK, 1):
        raise UsageError(f"the analysis process failed (exit status {worker.exitcode})")
    return worker.exitcode


def _say_dissect_options(session: _Session, proxy, remote) -> None:
    """With --record: the tshark options that show the NS and SB legs as MSNP (see README)."""
    options = proxy.dissect_options() if session.recorder is not None else ""
    if options:
        text = f"recording: the NS/SB legs are on ports Wireshark does not know; tshark {options}"
        if remote is not None:
            remote.print(text, "dim")
        else:
            session.console.print(text, style="dim", highlight=False, soft_wrap=True)


def _status(proxy) -> str:
    return (f"listening on {format_address(*proxy.address)} | open connections {len(proxy.relays)} | "
            f"listeners {len(proxy.listeners)} | addresses rewritten {proxy.rewrites}")


def cmd_demo(args) -> int:
    from analyzer.scripted import ScriptedClient, ScriptedService, ScriptError
    session = _Session(args, "msnp-analyzer demo (scripted service on loopback)")
    listen = session.listen_address()
    pace = args.pace if args.pace is not None else (0.04 if session.console.is_terminal and session.live else 0.0)
    versions = {"8": [8], "15": [15], "both": [8, 15]}[args.msnp]
    failures: list[str] = []

    async def body(live) -> None:
        service = await ScriptedService(host="127.0.0.1").start()
        proxy = _make_proxy(session, service.address("DS"), listen)
        await _start(proxy)
        session.console.print(f"scripted service on {format_address(*service.address('DS'))} (DS), "
                              f"proxy on {format_address(*proxy.address)}", style="bold", highlight=False, soft_wrap=True)

        async def refresher() -> None:
            while True:
                await asyncio.sleep(REFRESH / 2)
                if live is not None:
                    session.live.status = _status(proxy)
                    live.refresh()
        task = asyncio.ensure_future(refresher())
        try:
            for version in versions:
                client = ScriptedClient(*proxy.address, version=version, timeout=10.0, pace=pace)
                try:
                    await asyncio.wait_for(client.run(), 60)
                except (ScriptError, asyncio.TimeoutError) as exc:
                    failures.append(f"MSNP{version} client: {exc or 'timed out'}")
            failures.extend(service.errors)
        finally:
            task.cancel()
            await proxy.stop()
            _say_dissect_options(session, proxy, None)
            session.report_lines.extend(proxy.summary())
            await service.stop()
            if live is not None:
                live.refresh()

    asyncio.run(session.run(body))
    status = session.finish()
    for failure in failures:
        session.console.print(f"[red]demo script failed: {failure}[/red]", highlight=False)
    return EXIT_UNUSABLE if failures else status
