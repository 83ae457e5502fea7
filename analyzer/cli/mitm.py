"""`msnp-analyzer mitm`: mitmproxy embedded with the MSNP addon and our live view and report.

The proxy runs until Ctrl-C (or `--duration`), then the report is printed and
the exit status follows `--fail-on` like every other command. mitmproxy's own
options pass through `--set name=value`; `-w FILE` saves flows for
`msnp-analyzer analyze FILE` or mitmproxy itself.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal

from analyzer.cli.options import _count_or_zero, _listen_port, _seconds, add_analysis_options, report_console
from analyzer.cli.run import Run, RunOptions
from analyzer.errors import UsageError

EPILOG = """examples:
  msnp-analyzer mitm --mode socks5 --listen-port 1080 -v
      point the client's SOCKS5 proxy setting at 127.0.0.1:1080
  msnp-analyzer mitm --mode reverse:tcp://messenger.example.net:1863 --listen-port 1863 --json events.jsonl
      point the client (or its hosts file) at this machine; XFR/RNG are rewritten to new listeners
  msnp-analyzer mitm --mode regular --listen-port 8080 -w flows.mitm
      an HTTP proxy: the HTTP gateway and (with mitmproxy's CA trusted) Passport/RST logins
"""


def register(sub) -> None:
    p = sub.add_parser(
        "mitm", help="run mitmproxy with the MSNP addon (SOCKS5, transparent, reverse, HTTP gateway)",
        description="Run mitmproxy in this process with the MSNP addon: raw MSNP in SOCKS5/transparent/"
                    "reverse modes, the HTTP gateway, Passport/RST logins; live view and final report.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    m = p.add_argument_group("mitmproxy")
    m.add_argument("--mode", action="append", metavar="MODE",
                   help="socks5, transparent, regular, reverse:tcp://HOST:PORT (repeatable; default socks5)")
    m.add_argument("--listen-host", default="127.0.0.1", metavar="HOST", help="address to listen on (default 127.0.0.1)")
    m.add_argument("--listen-port", type=_listen_port, metavar="PORT", help="port (default: the mode's own, e.g. 1080 for socks5)")
    m.add_argument("-w", "--save-stream-file", metavar="FILE",
                   help="save flows to FILE (keeps every TCP message in memory until its connection ends)")
    m.add_argument("--set", action="append", default=[], metavar="NAME=VALUE", dest="mitm_set",
                   help="any mitmproxy option (repeatable), e.g. --set tcp_hosts=.* --set ssl_insecure=true")
    m.add_argument("--advertise", metavar="HOST", help="reverse mode: host written into rewritten XFR/RNG lines")
    m.add_argument("--allow-target", action="append", default=[], metavar="CIDR|HOST[:PORT]",
                   help="reverse mode: also follow XFR/RNG referrals to this network, address or host name "
                        "(repeatable; default: only the reverse target's own /24 or /64 and its name)")
    m.add_argument("--allow-any-target", action="store_true",
                   help="reverse mode: follow referrals to any host (loopback/link-local still only when the "
                        "reverse target is on loopback or --allow-target names them)")
    m.add_argument("--idle-timeout", type=_count_or_zero, default=0, metavar="SECONDS",
                   help="close MSNP connections idle this long (default 0: never; mitmproxy's own is 600)")
    m.add_argument("--duration", type=_seconds, metavar="SECONDS", help="stop after this long (default: until Ctrl-C)")
    p.add_argument("--quiet", action="store_true", help="no live view (the final report is still printed)")
    add_analysis_options(p)
    p.set_defaults(func=cmd_mitm)


async def _with_live_view(args, run: Run, body) -> None:
    """Run `body()` under the same rich live view as the proxy (on a terminal, unless --quiet/-v)."""
    console = run.console
    if args.quiet or args.verbose or not console.is_terminal:
        await body()
        return
    from rich.live import Live

    from analyzer.outputs.live import LiveView
    view = LiveView(run.analysis, run.redactor, title="msnp-analyzer mitm")
    run.add(view)
    live = Live(view, console=console, auto_refresh=False, transient=False, vertical_overflow="visible")
    live.start()

    async def refresher() -> None:
        while True:
            await asyncio.sleep(0.25)
            live.refresh()
    ticker = asyncio.ensure_future(refresher())
    try:
        await body()
    finally:
        ticker.cancel()
        live.refresh()
        live.stop()


async def _run(args, analysis, console) -> None:
    from mitmproxy import exceptions, options
    from mitmproxy.tools.dump import DumpMaster

    from analyzer.capture.mitm.addon import MsnpAddon
    opts = options.Options()
    master = DumpMaster(opts, with_termlog=False, with_dumper=False)
    master.addons.add(MsnpAddon(analysis))
    try:
        update = {"mode": args.mode or ["socks5"], "listen_host": args.listen_host,
                  "msnp_idle_timeout": args.idle_timeout}
        if args.listen_port is not None:
            update["listen_port"] = args.listen_port
        if args.save_stream_file:
            update["save_stream_file"] = args.save_stream_file
        if args.advertise:
            update["msnp_advertise_host"] = args.advertise
        from analyzer.capture.targets import parse_allowed
        for text in args.allow_target:
            try:
                parse_allowed(text)
            except ValueError as exc:
                raise UsageError(str(exc)) from None
        update["msnp_allow_target"] = list(args.allow_target)
        update["msnp_allow_any_target"] = args.allow_any_target
        opts.update(**update)
        if args.mitm_set:
            opts.set(*args.mitm_set)
    except exceptions.OptionsError as exc:
        raise UsageError(f"mitmproxy: {exc}") from None
    task = asyncio.create_task(master.run())
    # SIGTERM (and Ctrl-C) stop mitmproxy the orderly way, as the proxy command does: the addon's
    # `done` closes the connections and the report, HTML and end-of-run records are written.
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, master.shutdown)
        except (NotImplementedError, RuntimeError):
            pass
    proxyserver = master.addons.get("proxyserver")
    for _ in range(500):  # wait (bounded) for the listeners, to say where they are
        if proxyserver.listen_addrs() or task.done():
            break
        await asyncio.sleep(0.02)
    if task.done() or not proxyserver.listen_addrs():
        master.shutdown()
        await asyncio.gather(task, return_exceptions=True)
        raise UsageError("mitmproxy could not listen (port in use, or a bad --mode); see the log above")
    for addr in proxyserver.listen_addrs():
        console.print(f"[bold]mitmproxy[/bold] {', '.join(opts.mode)} listening on {addr[0]}:{addr[1]}",
                      highlight=False)
    for line in reverse_policies(args):
        console.print(line, highlight=False, markup=False, soft_wrap=True)
    try:
        if args.duration is not None:
            await asyncio.wait_for(asyncio.shield(task), args.duration)
        else:
            await task
    except asyncio.TimeoutError:
        pass
    finally:
        if not task.done():
            master.shutdown()
            await asyncio.wait_for(task, 10)
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.remove_signal_handler(sig)
            except (NotImplementedError, RuntimeError):
                pass


def reverse_policies(args) -> list[str]:
    """For each reverse mode: the target policy its XFR/RNG rewriting follows (one line each)."""
    from mitmproxy.proxy.mode_specs import ProxyMode, ReverseMode

    from analyzer.capture.targets import TargetPolicy
    lines = []
    for spec in args.mode or []:
        try:
            mode = ProxyMode.parse(spec)
        except ValueError:
            continue
        if isinstance(mode, ReverseMode):
            policy = TargetPolicy(tuple(mode.address), list(args.allow_target), args.allow_any_target)
            lines.append(f"reverse {spec}: {policy.describe()}")
    return lines


def cmd_mitm(args) -> int:
    run = Run(RunOptions.from_args(args, html=args.html), report_console(args))
    analysis, console = run.analysis, run.console
    run.load_plugins(threaded=True)
    handler = logging.StreamHandler()
    handler.setLevel(logging.WARNING)
    logging.getLogger("mitmproxy").addHandler(handler)
    try:
        asyncio.run(_with_live_view(args, run, lambda: _run(args, analysis, console)))
    except KeyboardInterrupt:
        pass
    finally:
        logging.getLogger("mitmproxy").removeHandler(handler)
        analysis.finish()  # no-op for connections the addon already closed
        run.close()
    status = run.report()
    for line in reverse_policies(args):  # never wrapped: scripts grep the report for them
        console.print(line, highlight=False, markup=False, soft_wrap=True)
    return status


__all__ = ["register", "cmd_mitm"]
