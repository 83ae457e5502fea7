"""The `export` sub-command: captures in, one self-contained HTML timeline out.

    msnp-analyzer export CAPTURE... -o timeline.html

CAPTURE is a pcap/pcapng file (read by the pcap reader, as `analyze` does) or
a transcript (`>>> `/`<<< ` lines, see README). Several captures go into one
timeline; transcript connection labels are prefixed with the file's number
when there is more than one file, so they stay distinct. Linking (DS->NS->SB,
login sessions, chats) is `analyzer.analysis.linking`'s; the page is `analyzer.outputs.html`'s.
`--json FILE` writes the same run as JSON Lines (with the link records).
Secrets are redacted unless `--no-redact`.
"""

from __future__ import annotations

import sys
from pathlib import Path

def register(sub) -> None:
    import argparse
    from analyzer.cli.options import add_analysis_options
    p = sub.add_parser(
        "export", help="write a self-contained HTML timeline of one or more captures",
        description="Write one HTML file that shows the captures as a timeline: connections grouped "
                    "by login session, every command with its replies, latencies and anomalies, with "
                    "filters and search. The file makes no network request when opened; secrets are "
                    "redacted unless --no-redact.",
        epilog="example: msnp-analyzer export capture.pcapng -o timeline.html\n"
               "exit status: 0 ok, 1 anomalies at or above --fail-on, 2 unusable input.",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("captures", nargs="+", metavar="CAPTURE", help="pcap, pcapng or transcript file")
    p.add_argument("-o", "--output", required=True, metavar="FILE", help="the HTML file to write")
    p.add_argument("--msnp", type=int, metavar="N", help="assume protocol version N for transcripts")
    add_analysis_options(p, html=False)  # the HTML file is -o here
    p.set_defaults(func=cmd_export)


def cmd_export(args) -> int:
    from analyzer.analysis.run import Analysis
    from analyzer.cli.options import exit_status, limits_from, report_console
    from analyzer.cli.run import output_sinks
    from analyzer.errors import UsageError
    from analyzer.capture.files import feed_capture
    from analyzer.outputs.html import HtmlTimeline
    from analyzer.analysis.linking import Linker
    from analyzer.analysis.redact import Redactor
    from analyzer.outputs.terminal import render_report
    out_path = Path(args.output)
    if out_path.is_dir():
        raise UsageError(f"{args.output}: is a directory")
    if not out_path.parent.exists():
        raise UsageError(f"{args.output}: directory {out_path.parent} does not exist")
    for path in args.captures:
        if not Path(path).exists():
            raise UsageError(f"{path}: no such file")
    console = report_console(args)
    sinks, files = output_sinks(args, console)
    redactor = next((s.redactor for s in sinks if hasattr(s, "redactor")), None) \
        or Redactor(enabled=not args.no_redact)
    # `--json` already brought a Linker (cli.link_and_html_sinks); the timeline shares it.
    linker = next((s for s in sinks if isinstance(s, Linker)), None)
    if linker is None:
        linker = Linker(redactor)
        sinks.insert(0, linker)
    timeline = HtmlTimeline(str(out_path), linker, redactor, sources=[Path(p).name for p in args.captures])
    all_sinks = sinks + [timeline]
    analysis = Analysis(all_sinks, limits_from(args))
    from analyzer.plugins import load_plugins
    plugins = load_plugins(args, analysis)
    try:
        many = len(args.captures) > 1
        for n, path in enumerate(args.captures, 1):
            feed_capture(analysis, path, prefix=f"{n}:" if many else "", version=args.msnp)
        try:
            analysis.finish()
        except OSError as exc:
            raise UsageError(f"{args.output}: {exc.strerror or exc}") from None
    finally:
        for f in files:
            f.close()
    render_report(analysis, console, extra=plugins.terminal_sections())
    from analyzer.text import visible
    print(f"timeline written to {visible(str(out_path))}", file=sys.stderr)
    return exit_status(analysis, args.fail_on)
