"""Terminal views (rich): the per-connection report and the verbose command printer.

Views wrap the analyzer's own objects (`Analysis`, `Connection`, events); the
codec never imports rich. Tests render into `Console(file=io.StringIO())`.
"""

from __future__ import annotations

from rich.console import Console, Group
from rich.segment import Segment
from rich.table import Table
from rich.text import Text

from analyzer.analysis.run import Analysis
from analyzer.anomalies import Severity, spec
from analyzer.msnp import C2S, Anomaly, Command, Skipped, Transaction
from analyzer.analysis.connection import Connection
from analyzer.analysis.redact import Redactor
from analyzer.text import visible

class SafeConsole(Console):
    """A rich Console that never lets text act on the terminal.

    Everything printed through it (reports, -v, the live view, plugins' sections)
    is rendered to segments; the text of each (not rich's own control segments,
    which carry its cursor moves) goes through `analyzer.text.visible`, so an ESC,
    a C1 control, a carriage return or a bidi override from the wire is shown as
    an escape instead of being obeyed. Newlines and tabs are kept.
    """

    def render(self, renderable, options=None):
        for segment in super().render(renderable, options):
            if segment.control is None and not segment.text.isprintable():
                text = visible(segment.text, keep="\n\t")
                if text != segment.text:
                    segment = Segment(text, segment.style, None)
            yield segment


SEVERITY_STYLE = {Severity.INFO: "cyan", Severity.WARNING: "yellow", Severity.ERROR: "bold red"}


def clock(ts: float) -> str:
    """Wall-clock time of day (local) with milliseconds; capture-relative seconds stay as they are."""
    if ts < 100_000_000:  # transcripts and tests use small relative times
        return f"{ts:.3f}"
    import time as _time
    try:
        return _time.strftime("%H:%M:%S", _time.localtime(ts)) + f".{int((ts % 1) * 1000):03d}"
    except (OverflowError, OSError, ValueError):  # a time beyond what the platform's clock can show
        return f"{ts:.3f}"


def percentile(values, q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    k = (len(ordered) - 1) * q
    lo = int(k)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def _counts(counter, limit: int = 6) -> str:
    if not counter:
        return "-"
    items = counter.most_common()
    text = ", ".join(f"{k} {v}" for k, v in items[:limit])
    if len(items) > limit:
        text += f", +{len(items) - limit} more"
    return text


def _anomaly_text(counter) -> Text:
    if not counter:
        return Text("-", style="green")
    text = Text()
    for i, (name, count) in enumerate(sorted(counter.items(), key=lambda kv: (-spec(kv[0]).severity, kv[0]))):
        if i:
            text.append("\n")
        text.append(f"{name} {count}", style=SEVERITY_STYLE[spec(name).severity])
    return text


MAX_ROWS = 40  # connections listed one by one; a capture with thousands gets the rest summed up


def connection_table(analysis: Analysis, max_rows: int | None = MAX_ROWS) -> Table:
    table = Table(title="MSNP connections", show_lines=True, expand=False)
    # Narrow terminals: short headers, addresses and figures never broken mid-token.
    table.add_column("id", no_wrap=True)
    table.add_column("role, version\nclient\n→ server\nhandle", no_wrap=True, min_width=15)
    table.add_column("commands", overflow="fold", ratio=3)
    table.add_column("transactions", overflow="fold", ratio=2, min_width=12)
    table.add_column("latency ms", no_wrap=True)
    table.add_column("anomalies", overflow="fold", ratio=3)
    conns = list(analysis.connections.values())
    shown = conns
    if max_rows is not None and len(conns) > max_rows:
        # The worst connections first (by anomaly severity), then the earliest.
        def rank(conn):
            worst = max((spec(n).severity for n in conn.anomalies), default=0)
            return -worst
        keep = {id(c) for c in sorted(conns, key=rank)[:max_rows]}
        shown = [c for c in conns if id(c) in keep]
    for conn in shown:
        lat = conn.latencies
        table.add_row(
            conn.id,
            f"{conn.role or '?'} {conn.version_label or ''}".rstrip() + f"\n{conn.client or '?'}\n→ {conn.server or '?'}"
            f"\n{conn.handle or '-'}",
            f"{sum(conn.commands.values())}: {_counts(conn.commands)}",
            _counts(conn.outcomes).replace("no_reply_expected", "no reply expected"),
            "\n".join(f"p{int(q * 100)} {_ms(percentile(lat, q))}" for q in (0.5, 0.9, 0.99)),
            _anomaly_text(conn.anomalies),
        )
    hidden = len(conns) - len(shown) + analysis.folded.count
    if hidden:
        table.add_row("…", f"{hidden} more connections", "", "", "",
                      "see Total below, or --json for each", style="dim")
    return table


def totals_table(analysis: Analysis) -> Table:
    totals = analysis.totals()
    table = Table(title="Total", show_header=False)
    table.add_column("what", style="bold")
    table.add_column("value", overflow="fold")
    lat = [v for conn in analysis.connections.values() for v in conn.latencies]
    lat.extend(analysis.folded.latencies)
    table.add_row("connections", str(totals["connections"]))
    table.add_row("versions", _counts(totals["versions"]))
    table.add_row("commands", f"{sum(totals['commands'].values())}: {_counts(totals['commands'], 12)}")
    table.add_row("transactions", _counts(totals["outcomes"]))
    table.add_row("latency ms", "p50 {} / p90 {} / p99 {}".format(*(_ms(percentile(lat, q)) for q in (0.5, 0.9, 0.99))))
    table.add_row("anomalies", _anomaly_text(totals["anomalies"]))
    return table


def render_report(analysis: Analysis, console: Console, extra: list | None = None) -> None:
    if analysis.connections:
        console.print(connection_table(analysis))
    else:
        console.print("[yellow]no MSNP connections found[/yellow]")
    console.print(totals_table(analysis))
    for section in extra or []:
        console.print(section)


class VerbosePrinter:
    """A sink that prints every decoded command (and anomaly) as it is seen."""

    def __init__(self, console: Console, redactor: Redactor | None = None, decoded: bool = True) -> None:
        self.console = console
        self.redactor = redactor or Redactor()
        self.decoded = decoded
        self.views = None  # plugins' decoder: (command, conn) -> DecodedView | None (analyzer.plugins)

    def event(self, conn: Connection | None, event) -> None:
        stream = conn.id if conn is not None else "-"
        kind = type(event)
        if kind is Command:
            arrow = ">>>" if event.direction == C2S else "<<<"
            line = Text()
            if event.ts is not None:
                line.append(clock(event.ts) + " ", style="dim")
            line.append(f"[{stream}] {arrow} ", style="blue" if event.direction == C2S else "magenta")
            line.append(event.cmd, style="bold")
            if event.trid is not None:
                line.append(f" {event.trid}", style="green")
            params = self.redactor.params(event, decoded=self.decoded)
            if params:
                line.append(" " + visible(" ".join(params)))  # shown as escapes, not obeyed
            if event.payload is not None:
                line.append(f"  (+{len(event.payload)} bytes payload)", style="dim")
            # soft_wrap: one wire line is one output line (grep-able), however wide.
            self.console.print(line, highlight=False, markup=False, soft_wrap=True)
            view = self.views(event, conn) if self.views is not None and event.payload is not None else None
            if view is not None:
                for text in view.lines(self.redactor):
                    self.console.print(Text("        " + visible(text), style="dim"), highlight=False,
                                       soft_wrap=True)
        elif kind is Anomaly:
            style = SEVERITY_STYLE[event.severity]
            detail = visible(self.redactor.detail(event))
            self.console.print(Text(f"    ! {event.name}: {detail}", style=style), highlight=False)
        elif kind is Skipped:
            self.console.print(Text(f"    ~ [{stream}] skipped {len(event.raw)} bytes", style="dim"))
        elif kind is Transaction:
            pass

    def stream(self, conn: Connection) -> None:
        pass

    def close(self) -> None:
        pass


__all__ = ["SafeConsole", "render_report", "VerbosePrinter", "connection_table", "totals_table", "percentile", "Group"]
