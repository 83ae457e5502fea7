"""`msnp-analyzer extract CAPTURE... -o DIR`: the files, pictures and ink exchanged, rebuilt and checked.

Reads captures as `export` does (`capture.files.feed_capture`: pcap, pcapng,
transcripts), follows P2P transfers and MSNFTP connections
(`analysis.objects.Extractor`), writes each object into DIR under a safe name
(`outputs.objects.DirectoryStore`) and one line per object into
DIR/manifest.jsonl (secrets redacted unless --no-redact). Files are never
opened or run. Exit status as for every command: 0, 1 (anomalies at or above
--fail-on, e.g. a SHA1D mismatch with --fail-on error), 2 (unusable input,
or DIR already holds a manifest and --force was not given).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def register(sub) -> None:
    from analyzer.analysis.objects import DEFAULT_MAX_OBJECT, DEFAULT_MAX_TOTAL
    from analyzer.cli.options import _size, add_analysis_options
    p = sub.add_parser(
        "extract", help="rebuild the files, pictures and ink exchanged (P2P, MSNFTP) into a directory",
        description="Rebuild what was exchanged: P2P files, display pictures, emoticons, winks, voice "
                    "clips (both P2P header versions, MSNSLP calls followed), MSNFTP transfers of "
                    "MSNP2-8 and ink. Each object is written into DIR under a safe name and listed in "
                    "DIR/manifest.jsonl: kind, name, size announced and received, complete or partial "
                    "(missing byte ranges), sha256, SHA1D verified or not, sender, recipient, streams, "
                    "times, Call-ID or cookie (redacted). Nothing written is ever opened or run.",
        epilog="example: msnp-analyzer extract capture.pcapng -o objects/\n"
               "exit status: 0 ok, 1 anomalies at or above --fail-on, 2 unusable input.",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("captures", nargs="+", metavar="CAPTURE", help="pcap, pcapng or transcript file")
    p.add_argument("-o", "--output", required=True, metavar="DIR", help="directory to write the objects into")
    p.add_argument("--force", action="store_true",
                   help="write into a DIR that already holds an extraction, replacing files of the same name")
    p.add_argument("--max-object-size", type=_size, default=DEFAULT_MAX_OBJECT, metavar="BYTES",
                   help=f"bytes kept of one object; the rest is not written and the object is partial "
                        f"(default {DEFAULT_MAX_OBJECT})")
    p.add_argument("--max-extract-total", type=_size, default=DEFAULT_MAX_TOTAL, metavar="BYTES",
                   help=f"bytes kept of all objects together (default {DEFAULT_MAX_TOTAL})")
    p.add_argument("--msnp", type=int, metavar="N", help="assume protocol version N for transcripts")
    add_analysis_options(p)
    p.set_defaults(func=cmd_extract)


def cmd_extract(args) -> int:
    from analyzer.analysis.objects import Extractor
    from analyzer.capture.files import feed_capture
    from analyzer.cli.options import report_console
    from analyzer.cli.run import Run, RunOptions
    from analyzer.errors import UsageError
    from analyzer.outputs.objects import DirectoryStore, ManifestWriter
    for path in args.captures:
        if not Path(path).exists():
            raise UsageError(f"{path}: no such file")
    store = DirectoryStore(args.output, force=args.force)
    extractor = Extractor(store, max_object=args.max_object_size, max_total=args.max_extract_total)
    run = Run(RunOptions.from_args(args, html=args.html, sources=args.captures), report_console(args),
              extractor=extractor)
    manifest = store.manifest()
    run.files.append(manifest)
    writer = ManifestWriter(manifest, run.redactor)
    extractor.on_record = writer
    run.load_plugins(html_report=bool(args.html))
    try:
        many = len(args.captures) > 1
        for n, path in enumerate(args.captures, 1):
            feed_capture(run.analysis, path, prefix=f"{n}:" if many else "", version=args.msnp)
        run.analysis.finish()
    finally:
        run.close()
    status = run.report()
    if extractor.records:
        run.console.print(objects_table(extractor.records, extractor.more))
    print(f"{writer.count} objects ({writer.complete} complete) listed in {store.dir / 'manifest.jsonl'}; "
          f"{len(store.written)} files written", file=sys.stderr)
    return status


def objects_table(records, more: int = 0, rows: int = 40):
    """The terminal's view of the objects: narrower than the manifest (which has every field)."""
    from rich.table import Table
    table = Table(title=f"Objects exchanged ({len(records) + more})")
    for col in ("object", "file", "bytes", "status", "SHA1D", "from -> to"):
        table.add_column(col, overflow="fold")
    for r in records[:rows]:
        size = f"{r.received:,}" + (f"/{r.announced:,}" if r.announced is not None and r.announced != r.received else "")
        status = r.status + (f" (missing {len(r.missing)} ranges)" if r.missing and r.status == "partial" else "")
        table.add_row(r.kind, r.file or f"({r.name})", size, status, r.sha1d or "",
                      f"{r.sender or '?'} -> {r.recipient or '?'}")
    if len(records) + more > rows:
        table.add_row(f"{len(records) + more - rows} more", "(see manifest.jsonl)", "", "", "", "")
    return table


__all__ = ["register", "cmd_extract"]
