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
    from analyzer.cli.options import _version, add_analysis_options
    p = sub.add_parser(
        "export", help="write a self-contained HTML timeline of one or more captures",
        description="Write one HTML file that shows the captures as a timeline: connections grouped "
                    "by login session, every command with its replies, latencies and anomalies, with "
                    "filters and search. The file makes no network request when opened; secrets are "
                    "redacted unless --no-redact.",
        epilog="example: msnp-analyzer export capture.pcapng -o timeline.html\n"
               "exit status: 0 ok, 1 anomalies at or above --fail-on, 2 unusable input.",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("captures", nargs="+", metavar="CAPTURE",
                   help="pcap, pcapng, mitmproxy flow file, transcript or MSNP byte stream ('-' for stdin)")
    p.add_argument("-o", "--output", required=True, metavar="FILE", help="the HTML file to write")
    p.add_argument("--msnp", type=_version, metavar="N", help="assume protocol version N for transcripts")
    add_analysis_options(p, html=False)  # the HTML file is -o here
    p.set_defaults(func=cmd_export)


def cmd_export(args) -> int:
    from analyzer.cli.options import report_console
    from analyzer.cli.run import Run, RunOptions
    from analyzer.errors import UsageError
    from analyzer.capture.files import feed_inputs, open_inputs
    out_path = Path(args.output)
    if out_path.is_dir():
        raise UsageError(f"{args.output}: is a directory")
    if not out_path.parent.exists():
        raise UsageError(f"{args.output}: directory {out_path.parent} does not exist")
    with open_inputs(args.captures) as inputs:  # every input named before any is read
        return _export(args, inputs, out_path, Run, RunOptions, report_console, feed_inputs)


def _export(args, inputs, out_path, Run, RunOptions, report_console, feed_inputs) -> int:
    from analyzer.errors import UsageError
    run = Run(RunOptions.from_args(args, html=str(out_path), sources=args.captures), report_console(args))
    analysis = run.analysis
    run.load_plugins()
    try:
        feed_inputs(analysis, inputs, version=args.msnp)
        try:
            analysis.finish()
        except OSError as exc:
            raise UsageError(f"{args.output}: {exc.strerror or exc}") from None
    finally:
        run.close()
    status = run.report()
    from analyzer.text import visible
    print(f"timeline written to {visible(str(out_path))}", file=sys.stderr)
    return status
