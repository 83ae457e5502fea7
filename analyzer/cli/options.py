"""Command-line options shared by the sub-commands, and how a run's result becomes an exit status.

Only `analyzer.cli` imports this module: the layers below never see argparse.
"""

from __future__ import annotations

import argparse
import sys

from analyzer.analysis.connection import Limits
from analyzer.analysis.run import Analysis
from analyzer.anomalies import Severity
from analyzer.errors import EXIT_ANOMALIES, EXIT_OK
from analyzer.plugins import DEFAULT_BUDGET, GROUP

LINK_WINDOW = 300.0  # seconds of capture time after a login's last connection before it settles


def _size(text: str) -> int:
    units = {"k": 1024, "m": 1024 ** 2, "g": 1024 ** 3}
    given = text
    text = text.strip().lower().rstrip("ib").rstrip("b")
    try:
        if text and text[-1] in units:
            value = int(float(text[:-1]) * units[text[-1]])
        else:
            value = int(text)
    except (ValueError, OverflowError):
        raise argparse.ArgumentTypeError(f"not a size: {given!r} (use e.g. 65536, 64k, 1m)") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"not a size: {given!r} (0 or more bytes)")
    return value


def _count(text: str) -> int:
    """A positive whole number (limits such as --max-pending, --max-flows)."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"not a positive whole number: {text!r}")
    return value


def _version(text: str) -> int:
    """A protocol version, 2 to 21 (MSNP2 to MSNP21)."""
    try:
        value = int(text.upper().removeprefix("MSNP"))
    except ValueError:
        value = 0
    if not 2 <= value <= 21:
        raise argparse.ArgumentTypeError(f"not an MSNP version: {text!r} (2 to 21)")
    return value


def _listen_port(text: str) -> int:
    """A port to listen on: 0 (any free one) to 65535."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"not a TCP port: {text!r} (0 for any free one, to 65535)")
    return value


def _count_or_zero(text: str) -> int:
    """A whole number, 0 or more (0 meaning "none", as --idle-timeout 0: never)."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"not a whole number, 0 or more: {text!r}")
    return value


def _port(text: str) -> int:
    """A TCP port, 1 to 65535."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"not a TCP port: {text!r} (1 to 65535)")
    return value


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
    out.add_argument("-v", "--verbose", action="store_true",
                     help="print every decoded command, one line each (anomalies under their line)")
    out.add_argument("-q", "--quiet", action="store_true",
                     help="print no report and no live view: errors only (the exit status and the files "
                          "asked for are unchanged)")
    out.add_argument("--local-time", action="store_true",
                     help="show times of day in this machine's time zone (default: UTC, marked Z)")
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
                     help=f"largest payload kept for analysis; a longer one is skipped (still framed by its "
                          f"length, as the client frames it) (default {d.max_payload})")
    lim.add_argument("--reply-timeout", type=_seconds, default=d.reply_timeout, metavar="SECONDS",
                     help=f"a request unanswered this long is reported (default {d.reply_timeout:g})")
    lim.add_argument("--max-pending", type=_count, default=d.max_pending, metavar="N",
                     help=f"requests awaiting replies per connection before the oldest is dropped (default {d.max_pending})")
    add_plugin_options(p)


def add_plugin_options(p: argparse.ArgumentParser) -> None:
    """`--plugin`, `--no-plugins`, `--plugin-budget` for every command that loads plugins."""
    g = p.add_argument_group("plugins")
    g.add_argument("--plugin", action="append", default=[], metavar="MODULE_OR_FILE", dest="plugins",
                   help="load this plugin too: a module name or a .py file (repeatable)")
    g.add_argument("--no-plugins", action="store_true",
                   help=f"do not load the plugins installed in the entry-point group {GROUP} "
                        "(explicit --plugin ones still load)")
    g.add_argument("--plugin-budget", type=_seconds, default=DEFAULT_BUDGET, metavar="SECONDS",
                   help=f"a plugin whose single call takes longer is disabled (default {DEFAULT_BUDGET:g}; 0: no limit)")


def report_console(args):
    """The console for human output: stderr when JSON goes to stdout, so pipes stay clean."""
    from analyzer.outputs.terminal import SafeConsole
    return SafeConsole(stderr=bool(getattr(args, "json", None) == "-"))


def exit_status(analysis: Analysis, fail_on: str) -> int:
    if fail_on == "never":
        return EXIT_OK
    worst = analysis.worst_severity()
    if worst is not None and worst >= Severity.parse(fail_on):
        return EXIT_ANOMALIES
    return EXIT_OK


def interactive(args, console) -> bool:
    """Whether a live run gets the interactive console: a terminal on both ends, no -v, no -q."""
    return not args.verbose and not args.quiet and console.is_terminal and sys.stdin.isatty()
