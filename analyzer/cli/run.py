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
    from analyzer.outputs.atomic import open_output, refuse_inputs
    refuse_inputs(run_outputs(args), run_inputs(args))
    if redactor is None:
        redactor = Redactor(enabled=not args.no_redact)
    sinks, files = [], []
    if args.json:
        if args.json == "-":
            out = sys.stdout
        else:
            out = open_output(args.json)  # renamed over args.json when the run ends well
            files.append(out)
        sinks.append(JsonLinesWriter(out, redactor, flush=flush))
    if args.verbose:
        sinks.append(VerbosePrinter(console, redactor))
    return link_and_html_sinks(args, redactor, sinks), files


def run_inputs(args) -> list[str]:
    """The files a run reads (none for the proxy)."""
    return [*(getattr(args, "captures", None) or []),
            *(p for p in (getattr(args, "file", None), getattr(args, "capture", None)) if isinstance(p, str))]


def run_outputs(args) -> list[str]:
    """The files a run writes."""
    return [p for p in (getattr(args, "json", None), getattr(args, "html", None), getattr(args, "output", None),
                        getattr(args, "record", None)) if isinstance(p, str)]


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
        sources = getattr(args, "captures", None) or ([args.file] if getattr(args, "file", None) else [])
        out += html_sinks(html, redactor, sources=[Path(s).name for s in sources], linker=linker)
    return out


