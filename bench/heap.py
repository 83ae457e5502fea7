"""Where the memory of a busy capture goes: a tracemalloc snapshot at the busiest moment.

    MSNP_ANALYZER_PURE_PYTHON=1 python bench/heap.py FILE --at 20000 [--top 30] [-- ANALYZE OPTIONS]

Runs `msnp-analyzer analyze FILE --json /dev/null` in this process with tracemalloc on
and, the first time `--at` TCP flows are open at once, takes a snapshot and prints its
allocations grouped by file and line, biggest first, with bytes per open flow. It
costs a few times the normal run (tracemalloc hooks every allocation); use it to find
what to shrink, and bench/pcap.py for the figures (RSS, speed). The run stops at the
snapshot unless `--finish` is given.

tracemalloc sees Python's allocations only: the compiled core's (Rust) buffers are not in
the table. The process's resident size at the snapshot is printed beside the traced total;
with the core, their difference above the pure-Python run's is the core's own memory.
"""

from __future__ import annotations

import argparse
import sys
import tracemalloc


def _rss() -> int:
    """This process's resident size now, in bytes (Linux; 0 elsewhere)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def implementation() -> str:
    from analyzer.core import IMPLEMENTATION
    return "compiled core" if IMPLEMENTATION == "rust" else "pure Python"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("file")
    ap.add_argument("--at", type=int, required=True, help="snapshot when this many flows are open")
    ap.add_argument("--top", type=int, default=30)
    ap.add_argument("--frames", type=int, default=1, help="frames kept per allocation (more: slower)")
    ap.add_argument("--trace", metavar="FILE:LINE", action="append", default=[],
                    help="also print the callers of the allocations made there (repeatable)")
    ap.add_argument("--finish", action="store_true", help="run to the end after the snapshot (default: stop there)")
    ap.add_argument("rest", nargs="*", help="more options for analyze (after --)")
    args = ap.parse_args()

    from analyzer.capture import tcp
    from analyzer.cli.main import main as cli

    taken: dict = {}
    segment = tcp.TcpTracker.segment

    class Taken(BaseException):  # not an Exception: the fail-open handlers must let it through
        """Raised out of the run once the snapshot is taken (unless --finish)."""

    def watched(self, *a):
        segment(self, *a)
        if not taken and len(self.open) >= args.at:
            taken["open"] = len(self.open)
            taken["conns"] = sum(1 for f in self.open.values() if f.conn is not None)
            taken["traced"] = tracemalloc.get_traced_memory()[0]
            taken["snapshot"] = tracemalloc.take_snapshot()
            taken["rss"] = _rss()
            if not args.finish:
                raise Taken


    tcp.TcpTracker.segment = watched
    tracemalloc.start(args.frames)
    try:
        code = cli(["analyze", args.file, "--json", "/dev/null", "-q", *args.rest])
    except Taken:
        code = None
    tracemalloc.stop()
    if not taken:
        print(f"never {args.at} flows open at once (exit {code})", file=sys.stderr)
        return 1
    n = taken["open"]
    snap = taken["snapshot"].filter_traces([tracemalloc.Filter(False, tracemalloc.__file__)])
    stats = snap.statistics("lineno")
    print(f"{n:,} flows open ({taken['conns']:,} MSNP connections), {taken['traced'] / 1e6:.1f} MB traced, "
          f"{taken['traced'] / n:,.0f} B per open flow; resident {taken['rss'] / 1e6:.1f} MB "
          f"({implementation()})")
    print("| bytes per open flow | blocks per flow | MB | where |")
    print("|---:|---:|---:|---|")
    for stat in stats[:args.top]:
        frame = stat.traceback[0]
        where = frame.filename.split("/analyzer/")[-1].split("/site-packages/")[-1]
        print(f"| {stat.size / n:,.0f} | {stat.count / n:.2f} | {stat.size / 1e6:.1f} | {where}:{frame.lineno} |")
    if args.trace:
        for stat in snap.statistics("traceback")[:2000]:
            frame = stat.traceback[-1]   # the allocating frame: a traceback runs oldest first
            if any(f"{frame.filename}:{frame.lineno}".endswith(t) for t in args.trace):
                print(f"\n{stat.size / 1e6:.2f} MB in {stat.count} blocks:")
                print("\n".join(stat.traceback.format()[-2 * args.frames:]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
