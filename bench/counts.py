"""How often the capture's slow paths run: call counts of one `analyze` run.

    python bench/counts.py FILE [-- ANALYZE OPTIONS]

Runs `msnp-analyzer analyze FILE --json /dev/null --quiet` (plus the options given) in this
process with a few methods counted: how many times the compiled lane handed a segment to
Python because capture time passed a deadline (`TcpTracker._time`), how many times the
deadlines were looked at (`TcpTracker._due`) and what those looks set again (the idle
timeout, a pairing expiry, anything else) after an entry set for what came due (an idle
timeout the flow pushed back by speaking since, a pairing expiry whose reply came),
how many flows the lane's own quiet release emptied (at their next segment, and by its
queue for flows that stayed silent), how many pairing ticks ran (`Analysis.tick`), the
most streams the linker held at once (`Linker.facts`, read at each `Linker.stream`), its
settling passes tried and made and the streams its passes linked (`Linker._link`), the
segments the lane handed to Python (`TcpTracker._slow`; bare ACKs apart), the feeds handed
to the linker (`Linker.event_batch`), the records the compiled JSON formatter left to the
Python writer (`JsonLinesWriter._line_of`), the MIME memo's look-ups and misses (`parse_mime`
calls, and the parses it made: `mime._parse_mime`, payloads past MEMO_BYTES included), the
Python writer's payload texts and those it had to make (`JsonLinesWriter._payload_text`, and
the `Redactor.payload` calls inside it: a miss), and each plugin's calls. Counts, not times: they do not depend on the machine's load (but for the
microseconds a plugin call took, from the manager's own `calls` and `seconds`).
"""

from __future__ import annotations

import sys
from collections import Counter


def main() -> int:
    argv = sys.argv[1:]
    if not argv or argv[0].startswith("-"):
        print(__doc__.strip())
        return 2
    path, extra = argv[0], [a for a in argv[1:] if a != "--"]

    import importlib
    from analyzer.analysis.linking import Linker
    from analyzer.analysis.redact import Redactor
    from analyzer.msnp import mime
    from analyzer.analysis.run import Analysis
    from analyzer.outputs.jsonl import JsonLinesWriter
    from analyzer.plugins.manager import PluginManager
    from analyzer.capture import tcp
    from analyzer.cli.main import main as cli

    counts: Counter = Counter()
    held = [0]
    lanes = []
    inside_due = [False]

    def counted(cls, name, before=None):
        real = getattr(cls, name)

        def wrapper(self, *args, **kwargs):
            counts[f"{cls.__name__}.{name}"] += 1
            if before is not None:
                before(self, *args)
            return real(self, *args, **kwargs)
        setattr(cls, name, wrapper)

    reasons: dict = {}   # id(flow) -> what its entry in the deadline queue was set for

    def push(self, flow, due):
        conn = getattr(flow, "conn", None)
        why = ("idle timeout" if due == flow.last_ts + self.idle_timeout
               else "pairing" if conn is not None and due == conn.wake else "other")
        if inside_due[0]:
            # A look that only set the flow's deadline again: what it set, and what the entry
            # that came due was for (an idle timeout the flow pushed back by speaking since, or
            # a pairing expiry whose reply came meanwhile, ...).
            counts[f"set again by _due: {why} (came due: {reasons.get(id(flow), '?')})"] += 1
        reasons[id(flow)] = why

    def flagged(cls, name, flag, label):
        """Count `cls.name` under `label`, with `flag[0]` true while a call of it runs."""
        real = getattr(cls, name)

        def wrapper(self, *args):
            counts[label] += 1
            flag[0] = True
            try:
                return real(self, *args)
            finally:
                flag[0] = False
        setattr(cls, name, wrapper)

    counted(tcp.TcpTracker, "_time")
    counted(tcp.TcpTracker, "_enlane", lambda self, flow: lanes.append(self._lane) if not lanes else None)
    counted(tcp.TcpTracker, "_push", push)
    flagged(tcp.TcpTracker, "_due", inside_due, "TcpTracker._due")
    counted(Analysis, "tick")
    counted(JsonLinesWriter, "_line_of")

    def bare(self, ts, key, seq, ack, flags, payload):
        if not payload and flags == tcp.ACK:
            counts["TcpTracker._slow: bare ACKs"] += 1
    counted(tcp.TcpTracker, "_slow", bare)
    managers = []
    counted(PluginManager, "close", managers.append)
    counted(Linker, "stream", lambda self, conn: held.__setitem__(0, max(held[0], len(self.facts))))
    linkers = []
    counted(Linker, "close", linkers.append)
    counted(Linker, "_settle")
    counted(Linker, "_link", lambda self, only=None, chats=True: counts.update(
        {"Linker._link: streams linked": len(self.facts) if only is None else len(only)}))
    counted(Linker, "event_batch")

    # The MIME memo: every module that took `parse_mime` by name (the plugins' too) calls the
    # counted one; a miss is a parse (`_parse_mime`, looked up by `parse_mime` at each call).
    real_parse, real_lookup = mime._parse_mime, mime.parse_mime

    def parse(payload):
        counts["parse_mime: parses (misses)"] += 1
        return real_parse(payload)

    def lookup(payload):
        counts["parse_mime: calls"] += 1
        return real_lookup(payload)
    mime._parse_mime = parse
    for name in ("analyzer.msnp.mime", "analyzer.msnp.p2p", "analyzer.analysis.objects", "analyzer.plugins.manager",
                 "msnp_analyzer_plugins.mime", "msnp_analyzer_plugins.chat", "msnp_analyzer_plugins.p2p"):
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        if getattr(module, "parse_mime", None) is real_lookup:
            module.parse_mime = lookup

    # The Python writer's payload texts (pure path): a miss makes the text with the redactor.
    in_text = [False]
    flagged(JsonLinesWriter, "_payload_text", in_text, "JsonLinesWriter._payload_text: calls")
    counted(Redactor, "payload", lambda self, cmd: counts.update(
        {"JsonLinesWriter._payload_text: made (misses)": 1} if in_text[0] else {}))
    try:
        cli(["analyze", path, "--json", "/dev/null", "--quiet", *extra])
    except SystemExit:
        pass
    if lanes:
        at_segment, by_queue, _ = lanes[0].released
        counts["lane released: at the next segment"] = at_segment
        counts["lane released: silent, by its queue"] = by_queue
    counts["JsonLinesWriter._line_of"] += 0   # records left to the Python writer: shown when none
    for name, n in sorted(counts.items()):
        if name not in ("TcpTracker._push", "TcpTracker._enlane", "PluginManager.close", "Redactor.payload"):
            print(f"{name:40} {n:>12,}")
    print(f"{'streams the linker held at most':40} {held[0]:>12,}")
    for linker in linkers[:1]:
        print(f"{'linker: settling passes made':40} {linker.passes:>12,}")
    for manager in managers[:1]:
        for lp in manager.loaded:
            each = f" ({1e6 * lp.seconds / lp.calls:.2f} us a call)" if lp.calls else ""
            print(f"{'plugin ' + lp.name + ': calls':40} {lp.calls:>12,}{each}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
