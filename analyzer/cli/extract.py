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
    from analyzer.analysis.redact import Redactor
    from analyzer.analysis.run import Analysis
    from analyzer.capture.files import feed_capture
    from analyzer.cli.options import exit_status, limits_from, report_console
    from analyzer.cli.run import exchange_sinks, output_sinks
    from analyzer.errors import UsageError
    from analyzer.outputs.objects import DirectoryStore, ManifestWriter, objects_section
    from analyzer.plugins import load_plugins, section_table
    for path in args.captures:
        if not Path(path).exists():
            raise UsageError(f"{path}: no such file")
    store = DirectoryStore(args.output, force=args.force)
    console = report_console(args)
    redactor = Redactor(enabled=not args.no_redact)
    sinks, files = output_sinks(args, console, redactor)
    manifest = store.manifest()
    files.append(manifest)
    writer = ManifestWriter(manifest, redactor)
    extractor = Extractor(store, max_object=args.max_object_size, max_total=args.max_extract_total,
                          on_record=writer)
    sinks = exchange_sinks(sinks, redactor, html=bool(args.html), extractor=extractor)
    if extractor not in sinks:
        sinks.insert(0, extractor)
    analysis = Analysis(sinks, limits_from(args))
    extractor.reporter = analysis.anomaly
    load_plugins(args, analysis, html_report=bool(args.html))
    try:
        many = len(args.captures) > 1
        for n, path in enumerate(args.captures, 1):
            feed_capture(analysis, path, prefix=f"{n}:" if many else "", version=args.msnp)
        analysis.finish()
    finally:
        for f in files:
            f.close()
    if extractor.records:
        console.print(section_table(objects_section(extractor.records, redactor, extractor.more)))
    complete = sum(1 for r in extractor.records if r.status == "complete")
    print(f"{writer.count} objects ({complete} complete) listed in {store.dir / 'manifest.jsonl'}; "
          f"{len(store.written)} files written", file=sys.stderr)
    return exit_status(analysis, args.fail_on)


__all__ = ["register", "cmd_extract"]
