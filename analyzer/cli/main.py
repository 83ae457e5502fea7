"""The `msnp-analyzer` command line.

Exit status, for scripts: 0 success; 1 anomalies at or above `--fail-on` were
found; 2 unusable input or usage (missing file, not a capture): a one-line
error on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from analyzer import __version__
from analyzer.analysis.run import Analysis
from analyzer.anomalies import CATALOGUE, Severity
from analyzer.analysis.connection import Limits

EXIT_OK, EXIT_ANOMALIES, EXIT_UNUSABLE = 0, 1, 2


class UsageError(Exception):
    """Unusable input: reported as one line, exit status 2."""


def _size(text: str) -> int:
    units = {"k": 1024, "m": 1024 ** 2, "g": 1024 ** 3}
    text = text.strip().lower().rstrip("ib").rstrip("b")
    try:
        if text and text[-1] in units:
            return int(float(text[:-1]) * units[text[-1]])
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (use e.g. 65536, 64k, 1m)") from None


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0:  # also NaN
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (seconds, 0 or more, or inf)")
    return value


def add_analysis_options(p: argparse.ArgumentParser, html: bool = True) -> None:
    """Options every command that decodes traffic shares."""
    out = p.add_argument_group("output")
    out.add_argument("--json", metavar="FILE", help="write JSON Lines events to FILE ('-' for stdout)")
    out.add_argument("-v", "--verbose", action="store_true", help="print every decoded command")
    if html:
        out.add_argument("--html", metavar="FILE",
                         help="write a self-contained HTML timeline to FILE at the end (see README)")
    out.add_argument("--link-window", type=_seconds, default=LINK_WINDOW, metavar="SECONDS",
                     help="with --json on a long capture, a login's link, session and chat records are "
                          "written once all its connections ended this long ago (capture time) and no "
                          f"open one could join it; later connections are not linked to it "
                          f"(default {LINK_WINDOW:g}; inf: all at the end)")
    out.add_argument("--no-redact", action="store_true",
                     help="show passwords' MD5 answers, tickets and cookies as they were on the wire")
    out.add_argument("--fail-on", metavar="SEVERITY", default="error", type=str.lower,
                     choices=["info", "warning", "error", "never"],
                     help="exit 1 if an anomaly of this severity or worse is found (default: error)")
    lim = p.add_argument_group("limits")
    d = Limits()
    lim.add_argument("--max-line", type=_size, default=d.max_line, metavar="BYTES",
                     help=f"longest command line accepted (default {d.max_line})")
    lim.add_argument("--max-payload", type=_size, default=d.max_payload, metavar="BYTES",
                     help=f"largest payload accepted (default {d.max_payload})")
    lim.add_argument("--reply-timeout", type=float, default=d.reply_timeout, metavar="SECONDS",
                     help=f"a request unanswered this long is reported (default {d.reply_timeout:g})")
    lim.add_argument("--max-pending", type=int, default=d.max_pending, metavar="N",
                     help=f"requests awaiting replies per connection before the oldest is dropped (default {d.max_pending})")
    from analyzer.plugins import add_plugin_options
    add_plugin_options(p)


def limits_from(args) -> Limits:
    return Limits(max_line=args.max_line, max_payload=args.max_payload,
                  reply_timeout=args.reply_timeout, max_pending=args.max_pending)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="msnp-analyzer",
        description="Decode, pair and check MSN Messenger Protocol (MSNP) traffic.",
        epilog="examples:\n"
               "  msnp-analyzer analyze capture.pcapng            a report per MSNP connection\n"
               "  msnp-analyzer analyze capture.pcap --json - | jq -c 'select(.kind==\"anomaly\")'\n"
               "  msnp-analyzer proxy --upstream HOST[:PORT]      point a legacy client at 127.0.0.1:1863\n"
               "  msnp-analyzer demo                              the proxy at work, no client needed\n"
               "  msnp-analyzer export capture.pcap -o t.html     a self-contained HTML timeline\n"
               "  msnp-analyzer chat capture.pcap                 who said what on each switchboard\n\n"
               "exit status: 0 ok, 1 anomalies at or above --fail-on, 2 unusable input.\n"
               "Run 'msnp-analyzer COMMAND --help' for a command's options.",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    from analyzer.cli.commands import register  # the capture-layer commands live beside their adapters
    register(sub)

    p = sub.add_parser("anomalies", help="list the anomaly catalogue (names, severities, summaries)",
                       description="List every anomaly the analyzer can report.")
    p.add_argument("--json", action="store_true", help="as JSON Lines")
    from analyzer.plugins import add_plugin_options
    add_plugin_options(p)  # plugins' own plugin.<name>.<what> names are listed too
    p.set_defaults(func=cmd_anomalies)

    p = sub.add_parser(
        "decode", help="decode a raw one-direction byte stream or a transcript file",
        description="Decode MSNP bytes that are not in a capture file: a raw byte stream of one "
                    "direction, or a transcript ('>>> ' client lines, '<<< ' server lines; see README).",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("file", metavar="FILE", help="raw bytes or a transcript ('-' for stdin)")
    p.add_argument("--dir", choices=["c2s", "s2c"], help="direction of a raw file (default: guessed)")
    p.add_argument("--msnp", type=int, metavar="N", help="assume protocol version N (for mid-stream data)")
    add_analysis_options(p)
    p.set_defaults(func=cmd_decode)

    return parser


def cmd_anomalies(args) -> int:
    from analyzer.plugins import load_plugins
    load_plugins(args, None)  # registers the plugins' anomaly names
    if args.json:
        import json
        for s in CATALOGUE.values():
            print(json.dumps({"name": s.name, "severity": str(s.severity), "summary": s.summary}))
        return EXIT_OK
    from rich.console import Console
    from rich.table import Table
    table = Table(title="MSNP analyzer anomaly catalogue")
    table.add_column("name")
    table.add_column("severity")
    table.add_column("summary")
    for s in sorted(CATALOGUE.values(), key=lambda s: s.name):
        table.add_row(s.name, str(s.severity), s.summary)
    Console().print(table)
    return EXIT_OK


def _read_input(path: str) -> bytes:
    if path == "-":
        return sys.stdin.buffer.read()
    p = Path(path)
    if not p.exists():
        raise UsageError(f"{path}: no such file")
    if p.is_dir():
        raise UsageError(f"{path}: is a directory")
    try:
        return p.read_bytes()
    except OSError as exc:
        raise UsageError(f"{path}: {exc.strerror}") from None


def guess_direction(data: bytes) -> str:
    """Which side sent a raw stream, from its first lines."""
    from analyzer.msnp import C2S, S2C
    server_only = {b"NLN", b"FLN", b"ILN", b"IRO", b"JOI", b"BYE", b"QNG", b"RNG", b"NOT", b"CHL", b"UBX"}
    for line in data.split(b"\n")[:50]:
        parts = line.strip().split(b" ")
        code = parts[0]
        if code in server_only or code.isdigit():
            return S2C
        if code == b"PNG" or (code == b"MSG" and len(parts) > 1 and parts[1].isdigit()):
            return C2S
        if code == b"MSG" and len(parts) > 1:
            return S2C
    return C2S


def output_sinks(args, console, redactor=None, flush: bool = False):
    """JSON writer (flushed per line if `flush`: live runs), verbose printer, links and --html
    as the options ask. Returns (sinks, files to close)."""
    from analyzer.outputs.jsonl import JsonLinesWriter
    from analyzer.analysis.redact import Redactor
    from analyzer.outputs.terminal import VerbosePrinter
    if redactor is None:
        redactor = Redactor(enabled=not args.no_redact)
    sinks, files = [], []
    if args.json:
        if args.json == "-":
            out = sys.stdout
        else:
            try:
                out = open(args.json, "w", encoding="utf-8")
            except OSError as exc:
                raise UsageError(f"{args.json}: {exc.strerror}") from None
            files.append(out)
        sinks.append(JsonLinesWriter(out, redactor, flush=flush))
    if args.verbose:
        sinks.append(VerbosePrinter(console, redactor))
    return link_and_html_sinks(args, redactor, sinks), files


SETTLE_AFTER = 1000  # ended connections held for linking before settled logins are written
LINK_WINDOW = 300.0  # seconds of capture time after a login's last connection before it settles


def link_and_html_sinks(args, redactor, sinks: list) -> list:
    """`sinks` plus linking: link records for the JSON Lines writers, and the `--html` timeline.

    The Linker goes first (it only observes), the LinkWriter after the writers (it
    writes the link/session/chat records as logins settle and when the run
    finishes), the HTML timeline
    last (written at the end, sharing the Linker). Raises UsageError for an
    unwritable --html path.
    """
    from analyzer.outputs.jsonl import JsonLinesWriter
    from analyzer.analysis.linking import Linker, LinkWriter
    writers = [s for s in sinks if isinstance(s, JsonLinesWriter)]
    html = getattr(args, "html", None)
    if not writers and not html:
        return sinks
    # Without a timeline (which shows every link at the end), settled logins are
    # written as they settle and forgotten: memory stays flat on long captures.
    linker = Linker(redactor, settle_after=None if html else SETTLE_AFTER,
                    window=getattr(args, "link_window", LINK_WINDOW))
    out = [linker] + sinks
    if writers:
        out.append(LinkWriter(linker, writers))
    if html:
        parent = Path(html).resolve().parent
        if Path(html).is_dir() or not parent.is_dir():
            raise UsageError(f"{html}: cannot write there (not a file in an existing directory)")
        from analyzer.outputs.html import html_sinks
        sources = getattr(args, "captures", None) or ([args.file] if getattr(args, "file", None) else [])
        out += html_sinks(html, redactor, sources=[Path(s).name for s in sources], linker=linker)
    return out


def report_console(args):
    """The console for human output: stderr when JSON goes to stdout, so pipes stay clean."""
    from rich.console import Console
    return Console(stderr=bool(getattr(args, "json", None) == "-"))


def exit_status(analysis: Analysis, fail_on: str) -> int:
    if fail_on == "never":
        return EXIT_OK
    worst = analysis.worst_severity()
    if worst is not None and worst >= Severity.parse(fail_on):
        return EXIT_ANOMALIES
    return EXIT_OK


def cmd_decode(args) -> int:
    from analyzer.msnp import C2S
    from analyzer.outputs.terminal import render_report
    from analyzer.msnp.transcript import looks_like_transcript
    data = _read_input(args.file)
    console = report_console(args)
    sinks, files = output_sinks(args, console)
    analysis = Analysis(sinks, limits_from(args))
    from analyzer.plugins import load_plugins
    plugins = load_plugins(args, analysis)
    try:
        if looks_like_transcript(data[:4096]):
            from analyzer.capture.files import feed_transcript
            feed_transcript(analysis, args.file, data, version=args.msnp)
        else:
            direction = args.dir or guess_direction(data)
            conn = analysis.open(conn_id="1", version=args.msnp,
                                 client=args.file if direction == C2S else None,
                                 server=args.file if direction != C2S else None)
            analysis.feed(conn, direction, data, None)
        analysis.finish()
    finally:
        for f in files:
            f.close()
    render_report(analysis, console, extra=plugins.terminal_sections())
    return exit_status(analysis, args.fail_on)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_UNUSABLE
    try:
        return args.func(args)
    except UsageError as exc:
        print(f"msnp-analyzer: error: {exc}", file=sys.stderr)
        return EXIT_UNUSABLE
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # `msnp-analyzer ... --json - | head`: the reader left; that is not an error.
        try:
            sys.stdout = None
        except Exception:  # noqa: BLE001
            pass
        return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
