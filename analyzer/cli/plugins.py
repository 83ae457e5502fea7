"""`msnp-analyzer plugins` (what is loaded, from where, its version) and `msnp-analyzer chat CAPTURE`.

`chat` is the chat plugin run on its own: a transcript per switchboard with
each sender's handle, from a pcap/pcapng capture (through the same reader
and TCP reassembly as `analyze`, which needs no TCP handshake) or a
transcript file. Exit status: 0, or 2 for unusable input (one line on stderr).
"""

from __future__ import annotations

import argparse
import json
import sys

from analyzer.cli.options import _version
from analyzer.errors import EXIT_ANOMALIES, EXIT_OK
from analyzer.text import clean_data, visible
from analyzer.cli.options import add_plugin_options
from analyzer.cli.run import plugin_options, plugins_from
from analyzer.outputs.jsonl import one_line


def register(sub) -> None:
    p = sub.add_parser("plugins", help="list the plugins that load: name, version, origin, what they provide",
                       description="List the plugins this run would load (entry-point group "
                                   "msnp_analyzer.plugins, plus --plugin ones), where each comes from, "
                                   "its version, and whether it loaded.")
    p.add_argument("--json", action="store_true", help="as JSON Lines")
    add_plugin_options(p)
    p.set_defaults(func=cmd_plugins)

    p = sub.add_parser(
        "chat", help="print a readable transcript of every switchboard chat in a capture",
        description="Print every text message of every switchboard in a capture: time (UTC), "
                    "sender handle, text. Works on captures without a TCP handshake or login: the "
                    "client's own messages are attributed from the switchboard's USR/ANS line, its "
                    "TypingUser headers, or the NS login in the same capture.",
        epilog="exit status: 0 ok, 1 the transcript is partial (the capture is truncated or damaged, or\n"
               "bytes of a connection are missing: said on stderr), 2 unusable input.",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("captures", nargs="+", metavar="CAPTURE",
                   help="pcap, pcapng, mitmproxy flow file, transcript or MSNP byte stream ('-' for stdin)")
    p.add_argument("--json", action="store_true",
                   help="one JSON object per message: stream, ts, sender, nick, dir, text")
    p.add_argument("--msnp", type=_version, metavar="N", help="assume protocol version N (transcripts)")
    p.add_argument("--local-time", action="store_true",
                   help="times in this machine's time zone (default: UTC, marked Z)")
    p.set_defaults(func=cmd_chat)


def cmd_plugins(args) -> int:
    manager = plugins_from(plugin_options(args))
    rows = manager.describe()
    if args.json:
        for row in rows:
            print(json.dumps(row, ensure_ascii=False))
        return EXIT_OK
    from analyzer.outputs.terminal import SafeConsole as Console
    from rich.table import Table
    table = Table(title="msnp-analyzer plugins")
    for col in ("name", "version", "provides", "origin", "state"):
        table.add_column(col, overflow="fold")
    for row in rows:
        table.add_row(row["name"] or "-", row["version"] or "-", ", ".join(row["provides"]) or "-",
                      row["origin"], row["state"])
    console = Console()
    if rows:
        console.print(table)
    else:
        console.print("no plugins loaded")
    return EXIT_OK


def feed_capture(path: str, analysis, msnp: int | None = None) -> None:
    """Read any input (see analyzer.capture.files) into `analysis` (then call finish())."""
    from analyzer.capture.files import feed_capture as feed
    feed(analysis, path, version=msnp)


def json_line(rec: dict) -> str:
    """One JSON line that any UTF-8 writer can write (lone surrogates escaped, see analyzer.text)."""
    try:
        line = json.dumps(rec, ensure_ascii=False, allow_nan=False)
        line.encode("utf-8")
        return one_line(line)
    except ValueError:  # UnicodeEncodeError is one
        return one_line(json.dumps(clean_data(rec), ensure_ascii=False))


# What makes a chat transcript partial: bytes that never reached the decoder.
PARTIAL = ("capture.truncated", "capture.damaged", "tcp.gap", "capture.ip_fragment", "mitm.flowfile.corrupt")


def cmd_chat(args) -> int:
    from msnp_analyzer_plugins.chat import ALL_LINES, UNKNOWN, ChatPlugin, format_ts

    from analyzer.clock import Clock
    zone = Clock(local=args.local_time)

    from analyzer.analysis.run import Analysis
    from analyzer.plugins import PluginManager
    analysis = Analysis([])
    manager = PluginManager(analysis)
    manager.add(ChatPlugin(line_limit=ALL_LINES), "msnp_analyzer_plugins.chat (the chat command)")
    partial = _PartialNotes()
    analysis.sinks += [manager, partial]
    from analyzer.capture.files import feed_inputs, open_inputs
    with open_inputs(args.captures) as inputs:
        feed_inputs(analysis, inputs, version=args.msnp)
        analysis.finish()
    chat = manager.get("chat")
    boards = chat.transcripts()
    out = sys.stdout
    if not boards:
        print("msnp-analyzer: no chat messages found", file=sys.stderr)
    for sb in boards:
        if args.json:
            for line in sb.lines:
                out.write(json_line({"stream": sb.stream, "ts": line.ts, "sender": line.sender or UNKNOWN,
                                     "nick": line.nick, "dir": line.direction, "text": line.text}) + "\n")
            continue
        # Every string here came from the wire: shown, never obeyed (analyzer.text.visible).
        who = ", ".join(sb.participants) or UNKNOWN
        out.write(visible(f"== switchboard {sb.stream}  {sb.client or '?'} <-> {sb.server or '?'}  ({who})")
                  + "\n")
        for line in sb.lines:
            text = visible(line.text.replace("\r\n", "\n"), keep="\n\t").replace("\n", "\n    ")
            out.write(f"{format_ts(line.ts, zone)}  {visible(line.sender or UNKNOWN)}: {text}\n")
        out.write("\n")
    out.flush()
    if partial.notes:
        more = f" (and {partial.count - 1} more)" if partial.count > 1 else ""
        print(f"msnp-analyzer: warning: the transcript is partial: {partial.notes[0]}{more}", file=sys.stderr)
        return EXIT_ANOMALIES
    return EXIT_OK


class _PartialNotes:
    """A sink that keeps why a chat transcript may miss messages (the first reason, and a count)."""

    def __init__(self) -> None:
        self.notes: list[str] = []
        self.count = 0

    def event(self, conn, event) -> None:
        name = getattr(event, "name", None)
        if name in PARTIAL:
            self.count += 1
            if not self.notes:
                where = f"stream {conn.id}: " if conn is not None else ""
                self.notes.append(f"{where}{name}: {event.detail}")

    def stream(self, conn) -> None:
        pass

    def close(self) -> None:
        pass


__all__ = ["register", "cmd_plugins", "cmd_chat", "feed_capture"]
