"""The `msnp-analyzer` command line.

Exit status, for scripts: 0 success; 1 anomalies at or above `--fail-on` were
found; 2 unusable input or usage (missing file, not a capture): a one-line
error on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import sys

from analyzer import __version__
from analyzer.cli import analyze, contacts, export, extract, mitm, proxy
from analyzer.cli import plugins as plugins_cmd
from analyzer.cli.options import _version, add_analysis_options, add_plugin_options, report_console
from analyzer.cli.run import Run, RunOptions, plugin_options, plugins_from
from analyzer.errors import EXIT_OK, EXIT_UNUSABLE, UsageError
from analyzer.anomalies import CATALOGUE

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
               "  msnp-analyzer chat capture.pcap                 who said what on each switchboard\n"
               "  msnp-analyzer extract capture.pcap -o DIR       the files and pictures exchanged, checked\n"
               "  msnp-analyzer contacts capture.pcap             contact lists and presence per login\n\n"
               "exit status: 0 ok, 1 anomalies at or above --fail-on, 2 unusable input.\n"
               "Run 'msnp-analyzer COMMAND --help' for a command's options.",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    from analyzer.core import describe
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}, {describe()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    # In the order a newcomer needs them (argparse lists them as registered).
    for command in (analyze, proxy, mitm, export, extract, contacts, plugins_cmd):
        command.register(sub)

    p = sub.add_parser("anomalies", help="list the anomaly catalogue (names, severities, summaries)",
                       description="List every anomaly the analyzer can report.")
    p.add_argument("--json", action="store_true", help="as JSON Lines")
    add_plugin_options(p)  # plugins' own plugin.<name>.<what> names are listed too
    p.set_defaults(func=cmd_anomalies)

    p = sub.add_parser(
        "decode", help="decode a raw one-direction byte stream or a transcript file (or any input)",
        description="Decode MSNP bytes that are not in a capture file: a raw byte stream of one "
                    "direction, or a transcript ('>>> ' client lines, '<<< ' server lines; see README). "
                    "Captures and mitmproxy flow files are read as by 'analyze'.",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("files", nargs="+", metavar="FILE",
                   help="raw bytes, a transcript, a capture or a flow file ('-' for stdin)")
    p.add_argument("--dir", choices=["c2s", "s2c"], help="direction of a raw file (default: guessed)")
    p.add_argument("--msnp", type=_version, metavar="N", help="assume protocol version N (for mid-stream data)")
    add_analysis_options(p)
    p.set_defaults(func=cmd_decode)

    return parser


def cmd_anomalies(args) -> int:
    plugins_from(plugin_options(args))  # registers the plugins' anomaly names
    if args.json:
        import json
        for s in CATALOGUE.values():
            print(json.dumps({"name": s.name, "severity": str(s.severity), "summary": s.summary}))
        return EXIT_OK
    from rich.table import Table
    from analyzer.outputs.terminal import SafeConsole as Console
    table = Table(title="MSNP analyzer anomaly catalogue")
    table.add_column("name")
    table.add_column("severity")
    table.add_column("summary")
    for s in sorted(CATALOGUE.values(), key=lambda s: s.name):
        table.add_row(s.name, str(s.severity), s.summary)
    Console().print(table)
    return EXIT_OK




def cmd_decode(args) -> int:
    from analyzer.capture.files import feed_inputs, open_inputs
    with open_inputs(args.files) as inputs:
        run = Run(RunOptions.from_args(args, html=args.html, sources=args.files), report_console(args))
        analysis = run.analysis
        run.load_plugins()
        try:
            feed_inputs(analysis, inputs, version=args.msnp, direction=args.dir)
            analysis.finish()
        finally:
            run.close()
    return run.report()


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_UNUSABLE
    try:
        return args.func(args)
    except UsageError as exc:
        from analyzer.text import visible
        print(f"msnp-analyzer: error: {visible(str(exc))}", file=sys.stderr)  # one line, whatever it quotes
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
