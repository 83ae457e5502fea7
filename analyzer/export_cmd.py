"""The `export` sub-command: captures in, one self-contained HTML timeline out.

    msnp-analyzer export CAPTURE... -o timeline.html

CAPTURE is a pcap/pcapng file (read by the pcap reader, as `analyze` does) or
a transcript (`>>> `/`<<< ` lines, see README). Several captures go into one
timeline; transcript connection labels are prefixed with the file's number
when there is more than one file, so they stay distinct. Linking (DS->NS->SB,
login sessions, chats) is `analyzer.linking`'s; the page is `analyzer.html`'s.
`--json FILE` writes the same run as JSON Lines (with the link records).
Secrets are redacted unless `--no-redact`.
"""

from __future__ import annotations

import sys
from pathlib import Path

PCAP_MAGICS = (b"\xd4\xc3\xb2\xa1", b"\xa1\xb2\xc3\xd4", b"\x4d\x3c\xb2\xa1", b"\xa1\xb2\x3c\x4d",
               b"\x0a\x0d\x0d\x0a", b"\x1f\x8b")


def register(sub) -> None:
    import argparse
    from .cli import add_analysis_options
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


def _is_pcap(path: str) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(4).startswith(PCAP_MAGICS)
    except OSError:
        return False


def feed_transcript(analysis, path: str, data: bytes, prefix: str = "", version: int | None = None) -> None:
    """Feed a transcript's chunks, one Connection per `@label` (default "1")."""
    from .cli import UsageError
    from .transcript import TranscriptError, parse
    try:
        chunks = parse(data)
    except TranscriptError as exc:
        raise UsageError(f"{path}: {exc}") from None
    conns = {}
    for chunk in chunks:
        key = chunk.conn or "1"
        conn = conns.get(key)
        if conn is None:
            conn = conns[key] = analysis.open(conn_id=prefix + key, version=version)
        analysis.feed(conn, chunk.direction, chunk.data, chunk.ts)
    last = max((c.ts for c in chunks if c.ts is not None), default=None)
    for conn in conns.values():
        analysis.close(conn, last)


def feed_pcap(analysis, path: str) -> None:
    """A pcap/pcapng file through the analyze command's own entry (reader, TCP reassembly, detection)."""
    from .capture.analyze_cmd import analyze_file, open_captures
    from .capture.detect import Detector
    from .capture.tcp import DEFAULT_BUFFER, DEFAULT_IDLE_TIMEOUT, DEFAULT_REORDER_TIMEOUT
    [capture] = open_captures([path])
    analyze_file(capture, analysis, Detector(), buffer=DEFAULT_BUFFER,
                 reorder_timeout=DEFAULT_REORDER_TIMEOUT, idle_timeout=DEFAULT_IDLE_TIMEOUT)


def feed_capture(analysis, path: str, prefix: str = "", version: int | None = None) -> None:
    from .cli import UsageError, _read_input
    from .transcript import looks_like_transcript
    if not Path(path).exists():
        raise UsageError(f"{path}: no such file")
    if _is_pcap(path):
        feed_pcap(analysis, path)
        return
    data = _read_input(path)
    if not looks_like_transcript(data[:4096]):
        raise UsageError(f"{path}: not a pcap, pcapng or transcript file")
    feed_transcript(analysis, path, data, prefix, version)


def cmd_export(args) -> int:
    from .analysis import Analysis
    from .cli import UsageError, exit_status, limits_from, output_sinks, report_console
    from .html import HtmlTimeline
    from .linking import Linker
    from .redact import Redactor
    from .report import render_report
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
    from .plugins import load_plugins
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
    print(f"timeline written to {out_path}", file=sys.stderr)
    return exit_status(analysis, args.fail_on)
