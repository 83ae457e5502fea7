"""The live terminal view of a proxy session (rich): connections and the latest commands.

`LiveView` is an analysis sink (`event`, `stream`, `close`) that keeps the
last few commands, finished transactions, anomalies and address rewrites, and
a rich renderable (`__rich__`) of the session: one row per connection (role,
version, handle, counts, anomalies) and the latest lines scrolling below with
their direction, TrID, pairing outcome and latency, anomalies highlighted.
The proxy command puts it in a `rich.live.Live` and refreshes it a few times a
second; it never touches the forwarding path. Secrets are redacted as in
every export.
"""

from __future__ import annotations

import time
from collections import deque

from rich.console import Group
from rich.table import Table
from rich.text import Text

from analyzer.analysis.run import Analysis
from analyzer.anomalies import Severity
from analyzer.msnp import C2S, Anomaly, Command, Transaction
from analyzer.analysis.redact import Redactor
from analyzer.text import visible
from analyzer.outputs.terminal import SEVERITY_STYLE, _anomaly_text, _ms, percentile

OUTCOME_STYLE = {"answered": "green", "error": "red", "no_reply_expected": "dim", "unanswered": "yellow"}


class LiveView:
    def __init__(self, analysis: Analysis, redactor: Redactor | None = None, lines: int = 14,
                 connections: int = 10, title: str = "msnp-analyzer proxy") -> None:
        self.analysis = analysis
        self.redactor = redactor or Redactor()
        self.recent: deque[Text] = deque(maxlen=lines)
        self.notices: deque[str] = deque(maxlen=4)
        self.max_connections = connections
        self.title = title
        self.status = ""
        self.started = time.time()

    # -- sink -----------------------------------------------------------------

    def event(self, conn, event) -> None:
        stream = conn.id if conn is not None else "-"
        kind = type(event)
        if kind is Command:
            self.recent.append(self._command(stream, event))
        elif kind is Transaction:
            if event.outcome != "no_reply_expected":
                self.recent.append(self._transaction(stream, event))
        elif kind is Anomaly:
            style = SEVERITY_STYLE[event.severity]
            text = Text(f"[{stream}] ! {event.name}", style=style)
            text.append(f"  {visible(self.redactor.detail(event))[:100]}", style="dim" if event.severity < Severity.ERROR else style)
            self.recent.append(text)
        elif isinstance(event, dict) and event.get("kind") == "rewrite":
            self.recent.append(Text(f"[{stream}] ~ {event['cmd']} {event['target']} "
                                    f"{event['original']} -> {event['rewritten']}", style="cyan"))

    def stream(self, conn) -> None:
        pass

    def close(self) -> None:
        pass

    def notice(self, text: str) -> None:
        self.notices.append(text)

    # -- rendering ------------------------------------------------------------

    def _command(self, stream: str, cmd: Command) -> Text:
        c2s = cmd.direction == C2S
        line = Text(f"[{stream}] {'>>>' if c2s else '<<<'} ", style="blue" if c2s else "magenta")
        line.append(cmd.cmd, style="bold")
        if cmd.trid is not None:
            line.append(f" {cmd.trid}", style="green")
        params = visible(" ".join(self.redactor.params(cmd)))  # shown as escapes, never obeyed
        if params:
            line.append(" " + (params if len(params) <= 90 else params[:87] + "..."))
        if cmd.payload is not None:
            line.append(f"  +{len(cmd.payload)}B", style="dim")
        return line

    @staticmethod
    def _transaction(stream: str, txn: Transaction) -> Text:
        text = Text(f"[{stream}]     {txn.cmd} {txn.trid} ", style="dim")
        text.append(txn.outcome, style=OUTCOME_STYLE.get(txn.outcome, ""))
        if txn.error:
            text.append(f" ({txn.error})", style="red")
        if txn.latency_ms is not None:
            text.append(f" {txn.latency_ms:.1f} ms", style="bold")
        return text

    def connections_table(self) -> Table:
        table = Table(title=self.title, expand=False, title_justify="left")
        for col in ("stream", "role", "version", "client", "upstream", "handle", "state",
                    "commands", "latency p50/p99 ms", "anomalies"):
            table.add_column(col, overflow="fold")
        conns = list(self.analysis.connections.values())
        shown = sorted(conns, key=lambda c: (c.closed, -int(c.id) if c.id.isdigit() else 0))[:self.max_connections]
        for conn in sorted(shown, key=lambda c: int(c.id) if c.id.isdigit() else 0):
            lat = conn.latencies
            table.add_row(conn.id, conn.role or "?", conn.version_label or "?", conn.client or "?",
                          conn.server or "?", conn.handle or "-",
                          Text("closed", style="dim") if conn.closed else Text("open", style="green"),
                          str(sum(conn.commands.values())),
                          "/".join(_ms(percentile(lat, q)) for q in (0.5, 0.99)),
                          _anomaly_text(conn.anomalies))
        if len(conns) > len(shown):
            table.caption = f"{len(conns) - len(shown)} more connection(s) not shown"
        return table

    def __rich__(self) -> Group:
        parts = [self.connections_table()]
        recent = Text("\n").join(self.recent) if self.recent else Text("(waiting for traffic)", style="dim")
        parts.append(recent)
        for note in self.notices:
            parts.append(Text(f"! {note}", style="bold yellow"))
        if self.status:
            parts.append(Text(self.status, style="dim"))
        return Group(*parts)
