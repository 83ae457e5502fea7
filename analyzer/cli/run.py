"""The one place that builds a run's sinks: JSON Lines, the verbose printer, linking, the HTML timeline.

Sub-commands call `output_sinks`; the order of the sinks is decided here only.
"""

from __future__ import annotations

import sys
from pathlib import Path

from analyzer.cli.options import LINK_WINDOW
from analyzer.errors import UsageError


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
        sources = getattr(args, "captures", None) or getattr(args, "files", None) or []
        out += html_sinks(html, redactor, sources=[Path(s).name for s in sources], linker=linker)
    return out


