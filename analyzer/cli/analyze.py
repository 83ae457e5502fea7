"""`msnp-analyzer analyze CAPTURE...`: offline analysis of pcap and pcapng files.

The glue between the capture reader (`pcap.py`), TCP reassembly (`tcp.py`)
and the shared analysis, report and JSON Lines sinks. Each file is read in
one streaming pass (memory bounded by the open connections and the TCP
buffers); its flows are closed at its end, stream ids continue across files.
Exit status as for every command: 0, 1 (anomalies at or above --fail-on),
2 (unusable input: one line on stderr, no traceback).
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import time
from contextlib import contextmanager

from analyzer.cli.options import _count, _port, _seconds, _size, _version, add_analysis_options, report_console
from analyzer.cli.run import Run, RunOptions

PROGRESS_AFTER = 0.5   # seconds: quicker files get no progress bar
BIG_CAPTURE = 20_000_000  # bytes: on the pure-Python path, a run this large says once that it is slower
KEEP_CLOSED = 1000     # closed connections kept one by one for the report; the rest go into the totals


def register(sub) -> None:
    p = sub.add_parser(
        "analyze", help="analyze pcap/pcapng captures (MSNP on 1863 and wherever XFR/RNG point)",
        description="Read pcap or pcapng captures, reassemble TCP, find the MSNP streams (port 1863, "
                    "the addresses XFR and RNG lines name, and any stream that starts with an MSNP "
                    "command), decode and pair every command, and report per connection.",
        epilog="exit status: 0 ok, 1 anomalies at or above --fail-on, 2 unusable input.\n"
               "Link types: Ethernet (802.1Q/QinQ), Linux SLL/SLL2, BSD loopback, raw IPv4/IPv6;\n"
               "others are dissected by scapy (slow, reported once).",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("captures", nargs="+", metavar="CAPTURE",
                   help="pcap or pcapng (gzip'd is fine), mitmproxy flow file, transcript or MSNP byte "
                        "stream ('-' for stdin)")
    p.add_argument("--msnp", type=_version, metavar="N",
                   help="assume protocol version N for transcripts and byte streams that start after VER")
    add_analysis_options(p)  # includes the plugin options
    tcp = p.add_argument_group("TCP reassembly")
    from analyzer.capture.tcp import DEFAULT_BUFFER, DEFAULT_IDLE_TIMEOUT, DEFAULT_MAX_FLOWS, DEFAULT_REORDER_TIMEOUT
    tcp.add_argument("--tcp-buffer", type=_size, default=DEFAULT_BUFFER, metavar="BYTES",
                     help=f"out-of-order bytes held per direction before a hole is given up as a "
                          f"tcp.gap (default {DEFAULT_BUFFER})")
    tcp.add_argument("--reorder-timeout", type=_seconds, default=DEFAULT_REORDER_TIMEOUT, metavar="SECONDS",
                     help="capture time a hole may wait for its bytes (default: no limit; a hole waits "
                          "until --tcp-buffer is full, the connection ends or the peer ACKs past it)")
    tcp.add_argument("--idle-timeout", type=_seconds, default=DEFAULT_IDLE_TIMEOUT, metavar="SECONDS",
                     help=f"close a connection silent this long (default {DEFAULT_IDLE_TIMEOUT:g})")
    tcp.add_argument("--max-flows", type=_count, default=DEFAULT_MAX_FLOWS, metavar="N",
                     help=f"TCP flows open at once; beyond it the least recently active are closed early, "
                          f"reported once as capture.flow_limit (default {DEFAULT_MAX_FLOWS})")
    tcp.add_argument("--port", type=_port, action="append", default=[], metavar="PORT",
                     help="also treat this TCP port as an MSNP server port (repeatable; 1863 always is)")
    p.set_defaults(func=cmd_analyze)


class _Progress:
    """A rich progress bar on stderr that appears only once a file takes more than a moment."""

    def __init__(self, total_bytes: int) -> None:
        self.enabled = sys.stderr.isatty() and not os.environ.get("CI")
        self.total = total_bytes
        self.started = time.monotonic()
        self.bar = None
        self.task = None
        self.done = 0   # bytes of the files already finished

    def __call__(self, capture) -> None:
        if not self.enabled:
            return
        from rich.markup import escape

        from analyzer.text import visible
        if self.bar is None:
            if time.monotonic() - self.started < PROGRESS_AFTER:
                return
            from analyzer.outputs.terminal import SafeConsole
            from rich.progress import (BarColumn, DownloadColumn, Progress, TextColumn,
                                       TimeRemainingColumn, TransferSpeedColumn)
            self.bar = Progress(TextColumn("[bold]{task.description}"), BarColumn(), DownloadColumn(),
                                TransferSpeedColumn(), TimeRemainingColumn(),
                                console=SafeConsole(stderr=True), transient=True)
            self.bar.start()
            self.task = self.bar.add_task("reading", total=self.total)
        self.bar.update(self.task, completed=self.done + capture.position,
                        description=escape(visible(os.path.basename(capture.path))))  # a name is data

    def file_done(self, capture) -> None:
        self.done += capture.size

    def stop(self) -> None:
        if self.bar is not None:
            self.bar.stop()


def cmd_analyze(args) -> int:
    run, per_file = analyze(args)
    return run.report(extra=[capture_table(per_file)] if per_file else [])


def analyze(args) -> tuple[Run, list]:
    """Read every input of `args` into a new run; returns the run (analysis finished, files
    closed) and each capture with its reassembly statistics."""
    from analyzer.capture.files import open_inputs
    # Every input named before any is read: pcap/pcapng, mitmproxy flow files (TCP flows,
    # gateway and login HTTP flows), transcripts, MSNP byte streams, '-' (see capture/files.py).
    with open_inputs(args.captures) as inputs:
        return _analyze(args, inputs)


def _analyze(args, inputs) -> tuple[Run, list]:
    from analyzer.capture.detect import MSNP_PORT, Detector
    from analyzer.capture.files import feed_inputs
    run = Run(RunOptions.from_args(args, html=args.html, sources=args.captures), report_console(args))
    analysis = run.analysis
    analysis.keep_closed = KEEP_CLOSED  # memory flat however long the capture: older ones are summed up
    run.load_plugins(html_report=bool(args.html))
    detector = Detector(frozenset({MSNP_PORT, *args.port}))
    total = sum(os.path.getsize(i.path) for i in inputs if i.kind == "capture")
    if total >= BIG_CAPTURE:
        from analyzer.core import note_fallback
        note_fallback(lambda line: print(line, file=sys.stderr))
    progress = _Progress(total)
    per_file = []
    try:
        with _young_collections(YOUNG_COLLECTION):
            per_file = feed_inputs(analysis, inputs, version=args.msnp, detector=detector, buffer=args.tcp_buffer,
                                   reorder_timeout=args.reorder_timeout, idle_timeout=args.idle_timeout,
                                   progress=progress, max_flows=args.max_flows)
        progress.stop()
        analysis.finish()
    finally:
        progress.stop()
        run.close()
    return run, per_file


# While inputs are read, the garbage collector looks at young objects after this many new
# ones (CPython's default, 700, suits small programs): reading allocates millions of objects
# that die young without cycles, and on a busy capture every collection that promotes some
# of them brings nearer a full collection of tens of thousands of open connections (about
# 10% of a 20,000-connection run went to the collector; `bench/pcap.py --busy`).
YOUNG_COLLECTION = 20_000


@contextmanager
def _young_collections(threshold: int):
    """The collector's thresholds for the duration of the block: young objects every
    `threshold`, the middle generation every 20 of those, a full collection at most every
    10 of these (and, as always, only when the survivors grew by a quarter of the heap)."""
    before = gc.get_threshold()
    gc.set_threshold(threshold, 20, 10)
    try:
        yield
    finally:
        gc.set_threshold(*before)


def capture_table(per_file):
    from rich.table import Table
    table = Table(title="Captures", show_header=True)
    for col in ("file", "format", "link", "packets", "TCP flows", "MSNP streams", "other flows"):
        table.add_column(col)
    for capture, stats in per_file:
        table.add_row(capture.path, capture.format + (" (ns)" if capture.nano else ""),
                      str(capture.linktype) if capture.linktype is not None else "per interface",
                      str(stats["packets"]), str(stats["flows"]), str(stats["msnp_flows"]),
                      str(stats["ignored_flows"]))
    return table


__all__ = ["register", "cmd_analyze", "analyze"]
