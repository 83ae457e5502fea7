"""p2p: application/x-msnmsgrp2p payloads: both binary header versions and MSNSLP inside.

The codec is `analyzer.msnp.p2p` (the 48-byte version-1 header up to MSNP15,
the version-2 header with its TLVs and data header from MSNP16 on). This
plugin shows each P2P message decoded (`decode`), follows each MSNSLP Call-ID
from INVITE to its answer and BYE (report section), and flags headers whose
sizes contradict the payload (`plugin.p2p.bad_header`). MSNSLP messages split
over several P2P messages are reassembled (`analysis.objects.SlpAssembler`)
before they are read.

Memory is bounded: at most `MAX_CALLS` calls are followed at once (the
oldest is folded into the totals when a new one would exceed it) and the
report lists the first `MAX_ROWS`; the rest are counted by application and
outcome.
"""

from __future__ import annotations

from collections import Counter, OrderedDict
from dataclasses import dataclass, field

from analyzer.analysis.objects import SlpAssembler, message_parties
from analyzer.msnp.p2p import P2PMessage, parse_p2p, parse_slp, slp_address
from analyzer.plugins import TERMINAL_ROWS, DecodedView, Plugin, section, section_table

from msnp_analyzer_plugins.mime import parse_mime

# Kept for callers of the version-1 layout (tests build headers with it).
from analyzer.msnp.p2p import V1_HEADER as HEADER  # noqa: F401

MAX_CALLS = 10_000   # calls followed at once
MAX_ROWS = 1_000     # calls listed in the HTML section (the terminal lists TERMINAL_ROWS)
MAX_STATES = 16      # MSNSLP steps kept per call
MAX_STEPS = 64       # distinct MSNSLP messages remembered per call to skip relayed copies
MAX_GROUPS = 64      # (application, last step) groups counted for calls let go; the rest in one
GROUP_ROWS = 10      # of those, rows in a report section; the rest summed in one row


def describe(p2p: P2PMessage) -> DecodedView:
    view = DecodedView("MSG application/x-msnmsgrp2p", [("P2P-Dest", p2p.dest or "?")], priority=20)
    if p2p.src:
        view.fields.append(("P2P-Src", p2p.src))
    if p2p.version is not None:
        view.children.append(DecodedView(f"binary header (version {p2p.version})", list(p2p.fields)))
    if p2p.footer is not None:
        view.fields.append(("footer (application id)", str(p2p.footer)))
    if p2p.problem:
        view.fields.append(("problem", p2p.problem))
    slp = parse_slp(p2p.data) if p2p.session_id == 0 and p2p.first and p2p.data else None
    if slp is not None:
        app = slp.application()
        title = f"MSNSLP {slp.method}" + (f": {app}" if app else "")
        view.children.append(DecodedView(title, [("start line", slp.start_line)] + slp.headers,
                                         children=[DecodedView("body", slp.body)] if slp.body else []))
    elif p2p.session_id == 0 and p2p.data:
        view.fields.append(("MSNSLP", "continuation of a message split over several P2P messages"))
    elif p2p.data:
        view.fields.append(("data", f"{len(p2p.data)} bytes of session {p2p.session_id}"))
    return view


@dataclass
class Call:
    call_id: str
    stream: str
    application: str | None = None
    sender: str | None = None
    receiver: str | None = None
    states: list[str] = field(default_factory=list)
    seen: set = field(default_factory=set)   # (method, CSeq, branch): the same step seen on two streams


def is_p2p(cmd) -> bool:
    return (cmd.cmd == "MSG" and bool(cmd.payload)
            and cmd.payload.find(b"application/x-msnmsgrp2p", 0, 300) >= 0
            and parse_mime(cmd.payload).content_type == "application/x-msnmsgrp2p")


class P2PPlugin(Plugin):
    name = "p2p"
    version = "2.0"
    description = ("application/x-msnmsgrp2p binary headers (version 1 and 2) and MSNSLP "
                   "(INVITE, 200 OK, 603 Decline, BYE) by Call-ID")
    commands = frozenset({"MSG"})
    msg_kinds = frozenset({"p2p"})   # is_p2p: Content-Type application/x-msnmsgrp2p, nothing else
    anomalies = {
        "bad_header": ("warning", "a P2P payload whose binary header, sizes or footer contradict its length"),
    }

    def __init__(self) -> None:
        self.calls: OrderedDict[str, Call] = OrderedDict()
        self.messages = 0
        self.slp = 0
        self.folded: Counter[tuple[str, str]] = Counter()  # (application, last step) of calls let go
        self.assembler = SlpAssembler()

    def decode(self, cmd, conn):
        if not is_p2p(cmd):
            return None
        return describe(parse_p2p(cmd.payload))

    def on_command(self, conn, cmd) -> None:
        if not is_p2p(cmd):
            return
        p2p = parse_p2p(cmd.payload)
        self.messages += 1
        if p2p.problem:
            self.report(conn, "bad_header", p2p.problem, cmd)
        if p2p.session_id != 0 or not p2p.data or p2p.version is None:
            return
        sender, recipient = message_parties(conn, cmd, p2p)
        data = self.assembler.add(sender, recipient, p2p)
        slp = parse_slp(data) if data is not None else None
        if slp is None:
            return
        self.slp += 1
        call_id = slp.call_id or "?"
        call = self.calls.get(call_id)
        if call is None:
            if len(self.calls) >= MAX_CALLS:
                _, old = self.calls.popitem(last=False)
                key = (old.application or "?", old.states[-1] if old.states else "?")
                if key not in self.folded and len(self.folded) >= MAX_GROUPS:
                    key = ("other applications", "?")   # an application is named by any GUID on the wire
                self.folded[key] += 1
            call = self.calls[call_id] = Call(call_id, conn.id if conn is not None else "-")
        step = (slp.method, slp.get("CSeq"), slp.get("Via"))
        if step in call.seen:
            return  # the same message relayed to the other participant's connection
        if len(call.seen) < MAX_STEPS:
            call.seen.add(step)
        call.application = call.application or slp.application()
        if slp.method == "INVITE":
            call.sender = call.sender or slp_address(slp.get("From"))
            call.receiver = call.receiver or slp_address(slp.get("To"))
        if len(call.states) < MAX_STATES:
            call.states.append(slp.method)

    def _rows(self, limit: int) -> list[list]:
        rows = []
        for c in self.calls.values():
            if len(rows) >= limit:
                break
            rows.append([c.stream, self._masked(c.call_id), c.application or "?", c.sender or "?", c.receiver or "?",
                         " -> ".join(c.states)])
        more = Counter(self.folded)
        for c in list(self.calls.values())[limit:]:
            more[(c.application or "?", c.states[-1] if c.states else "?")] += 1
        # At most GROUP_ROWS rows for the calls not listed (the largest groups), the rest in one.
        groups = sorted(more.items(), key=lambda kv: (-kv[1], kv[0]))
        for (app, last), n in sorted(groups[:GROUP_ROWS]):
            rows.append(["", f"{n} more calls", app, "", "", f"last step: {last}"])
        rest = groups[GROUP_ROWS:]
        if rest:
            rows.append(["", f"{sum(n for _, n in rest)} more calls", f"{len(rest)} other applications or steps",
                         "", "", ""])
        return rows

    def _masked(self, call_id: str) -> str:
        """A Call-ID is a secret of the session (as a cookie is): masked with the run's key."""
        redactor = self.redactor
        if redactor is not None and not redactor.enabled:
            return call_id
        if redactor is None:
            return "<redacted>"
        return redactor.mask(call_id.encode("utf-8", "surrogateescape"))

    def _section(self, limit: int) -> list[dict]:
        if not self.messages:
            return []
        return [section(f"P2P sessions ({self.messages} P2P messages, {self.slp} MSNSLP)",
                        ["stream", "Call-ID", "application", "from", "to", "MSNSLP"], self._rows(limit))]

    def html_sections(self) -> list[dict]:
        return self._section(MAX_ROWS)

    def terminal_sections(self) -> list:
        return [section_table(s) for s in self._section(TERMINAL_ROWS)]
