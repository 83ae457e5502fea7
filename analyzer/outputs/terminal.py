"""Terminal views (rich): the per-connection report and the verbose command printer.

Views wrap the analyzer's own objects (`Analysis`, `Connection`, events); the
codec never imports rich. Tests render into `Console(file=io.StringIO())`.

Reports fit the terminal: every table goes through `Fit`, which prints it as a
table when its columns fit without breaking a word, and otherwise as stacked
blocks (one block per row, `column: value` lines), so at 80 columns nothing is
cropped and no anomaly name, address or file name is cut in two. Text from the
wire goes through `analyzer.text.visible` first, and times through one
`analyzer.clock.Clock` (UTC unless `--local-time`).
"""

from __future__ import annotations

from rich.console import Console, ConsoleOptions, Group
from rich.measure import Measurement
from rich.padding import Padding
from rich.segment import Segment
from rich.table import Table
from rich.text import Text

from analyzer.clock import UTC, Clock

from analyzer.analysis.run import Analysis
from analyzer.anomalies import Severity, spec
from analyzer.msnp import C2S, S2C, Anomaly, Command, Skipped, Transaction
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


class Fit:
    """A rich Table shown as a table when it fits the width without breaking a word, else as blocks.

    rich measures a table's minimum width as the sum of its columns' longest
    words (plus borders): below that it would fold words. Then each row is
    printed as a block instead: the first cell as a heading, the other cells
    as `header: value` lines with a hanging indent, so names stay whole.
    """

    def __init__(self, table: Table) -> None:
        self.table = table

    def __rich_measure__(self, console: Console, options: ConsoleOptions) -> Measurement:
        return Measurement(1, options.max_width)

    def __rich_console__(self, console: Console, options: ConsoleOptions):
        table = self.table
        if _min_width(table) <= options.max_width:
            for col in table.columns:  # rich may otherwise shrink a column below its longest word
                col.min_width = max(col.min_width or 0, _longest_word(col))
            # rich's share-out of ratios and minimums can still overshoot by a column or two
            # (and printing crops what overshoots): lay it out first, print it only if it fits.
            if _laid_out_width(table, console, options) <= options.max_width:
                yield table
                return
        if table.title:
            yield Text(str(table.title), style="bold italic")
        headers = [_plain(col.header) for col in table.columns]
        columns = [list(col.cells) for col in table.columns]
        rows = len(columns[0]) if columns else 0
        for r in range(rows):
            cells = [_plain(col[r]) if r < len(col) else "" for col in columns]
            style = table.rows[r].style if r < len(table.rows) else None
            first = cells[0] if table.show_header else ""
            start = 1 if table.show_header else 0
            if first:
                yield Text(first, style=style or "bold")
            for header, cell in zip(headers[start:], cells[start:]):
                if not cell:
                    continue
                labels, values = header.split("\n"), cell.split("\n")
                if len(labels) != len(values):  # one label for a value of several lines
                    labels, values = [" ".join(header.split())], [cell]
                for label, value in zip(labels, values):
                    if label[:1] == value[:1] == "→":  # "→ server: → 1.2.3.4:1863" says it twice
                        label, value = label[1:].strip(), value[1:].strip()
                    line = Text(f"{label}: " if label else "", style="dim")
                    line.append(value.replace("\n", "\n" + " " * (len(label) + 2) if label else "\n"),
                                style=style or "")
                    yield Padding(line, (0, 0, 0, 2))


def _laid_out_width(table: Table, console: Console, options: ConsoleOptions) -> int:
    """The width rich will give `table` at `options` (its column layout plus the borders)."""
    widths = table._calculate_column_widths(console, options)  # rich's own layout (no public API)
    edges = (len(table.columns) + 1) if table.box and table.show_edge else (len(table.columns) - 1 if table.box else 0)
    return sum(widths) + edges


def _min_width(table: Table) -> int:
    """The narrowest `table` can be without folding a word: longest words, padding and borders."""
    pad_left, pad_right = table.padding[3], table.padding[1]
    width = 0
    for col in table.columns:
        width += max(_longest_word(col), col.min_width or 0) + pad_left + pad_right
    borders = (len(table.columns) + 1) if table.box else 0
    return width + borders + (table.show_edge and not table.box and 0)


def _longest_word(col) -> int:
    """The widest unbreakable piece of a column: a word, or a whole line where it must not wrap."""
    from rich.cells import cell_len
    texts = (_plain(col.header), *(_plain(c) for c in col.cells))
    if col.no_wrap:
        pieces = [line for text in texts for line in text.split("\n")]
    else:
        pieces = [w for text in texts for w in text.split()]
    return max((cell_len(w) for w in pieces), default=0)


def _plain(cell) -> str:
    if isinstance(cell, Text):
        return cell.plain
    return "" if cell is None else str(cell)


def clock(ts: float, zone: Clock = UTC) -> str:
    """Time of day with milliseconds, labelled (`Z` for UTC); relative times as `+1.250s`."""
    return zone.time(ts)


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
            f"\n{visible(conn.handle or '-')}",
            f"{sum(conn.commands.values())}: {_counts(conn.commands)}",
            _counts(conn.outcomes).replace("no_reply_expected", "no reply expected"),
            "\n".join(f"p{int(q * 100)} {_ms(percentile(lat, q))}" for q in (0.5, 0.9, 0.99)),
            _anomaly_text(conn.anomalies),
        )
    hidden = len(conns) - len(shown) + analysis.folded.count
    if hidden:
        table.add_row("more", f"{hidden} more connections", "", "", "",
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


def fit(renderable):
    """Tables fit the terminal (see `Fit`); anything else as it is."""
    return Fit(renderable) if isinstance(renderable, Table) else renderable


def render_report(analysis: Analysis, console: Console, extra: list | None = None) -> None:
    if analysis.connections:
        console.print(fit(connection_table(analysis)))
    else:
        console.print("[yellow]no MSNP connections found[/yellow]")
    console.print(fit(totals_table(analysis)))
    for anomaly in getattr(analysis, "capture_notes", ()):
        # capture.truncated, capture.damaged, ...: which file, where, and what was still read
        style = SEVERITY_STYLE[anomaly.severity]
        console.print(Text(f"! {anomaly.name}: {visible(anomaly.detail)}", style=style), highlight=False,
                      soft_wrap=True)
    for section in extra or []:
        console.print(fit(section))


class LineAnomalies:
    """Which command line an anomaly belongs to: the rule of -v and of the console.

    The codec reports a line's white-space and line-end anomalies just before the
    line itself (same direction, same offset); pairing reports its own about a
    line already seen. So an anomaly ahead of the last line seen in its direction
    waits for that line (at most MAX_WAITING per direction: past that, and for
    anything else, it is shown where it stands).
    """

    MAX_WAITING = 64

    def __init__(self) -> None:
        self.last: dict[tuple, int] = {}       # (stream, direction) -> offset of the last line seen
        self.waiting: dict[tuple, list] = {}   # (stream, direction) -> anomalies of lines not yet seen

    def hold(self, stream: str, anomaly: Anomaly) -> bool:
        """True when `anomaly` waits for its line; False: show it now."""
        if anomaly.direction is None or anomaly.offset is None:
            return False
        key = (stream, anomaly.direction)
        if anomaly.offset <= self.last.get(key, -1):
            return False
        waiting = self.waiting.setdefault(key, [])
        if len(waiting) >= self.MAX_WAITING:
            return False
        waiting.append(anomaly)
        return True

    def line(self, stream: str, direction: str, offset: int) -> tuple[list, list]:
        """A command line seen at `offset`: (anomalies of earlier lines that never came, this line's own)."""
        key = (stream, direction)
        self.last[key] = offset
        waiting = self.waiting.get(key)
        if not waiting:
            return [], []
        before = [a for a in waiting if a.offset < offset]
        own = [a for a in waiting if a.offset == offset]
        rest = [a for a in waiting if a.offset > offset]
        if rest:
            self.waiting[key] = rest
        else:
            del self.waiting[key]
        return before, own

    def end(self, stream: str | None = None, direction: str | None = None) -> list[tuple[str, Anomaly]]:
        """(stream, anomaly) still waiting in `stream` (one direction, or all; every stream when None)."""
        out = []
        if stream is None:
            keys = [k for k in self.waiting if direction is None or k[1] == direction]
        else:
            # Looked up, not searched for: a stream's end costs the same however many are open.
            keys = [k for k in ((stream, C2S), (stream, S2C)) if direction is None or k[1] == direction]
        for key in keys:
            out.extend((key[0], a) for a in self.waiting.pop(key, ()))
        if stream is not None and direction is None:
            self.last.pop((stream, C2S), None)
            self.last.pop((stream, S2C), None)
        return out


class VerbosePrinter:
    """A sink that prints every decoded command, one wire line per output line, as it is seen.

    An anomaly is printed under the command it belongs to (`LineAnomalies`);
    anything still waiting when its stream ends is printed then.
    """

    def __init__(self, console: Console, redactor: Redactor | None = None, decoded: bool = True,
                 zone: Clock = UTC) -> None:
        self.console = console
        self.redactor = redactor or Redactor()
        self.decoded = decoded
        self.zone = zone
        self.views = None  # plugins' decoder: (command, conn) -> DecodedView | None (analyzer.plugins)
        self.placing = LineAnomalies()

    def _print(self, text: Text) -> None:
        # soft_wrap: one wire line is one output line (grep-able), however wide.
        self.console.print(text, highlight=False, markup=False, soft_wrap=True)

    def _anomaly(self, stream: str, event: Anomaly) -> None:
        style = SEVERITY_STYLE[event.severity]
        self._print(Text(f"    ! [{stream}] {event.name}: {visible(self.redactor.detail(event))}", style=style))

    def event(self, conn: Connection | None, event) -> None:
        stream = conn.id if conn is not None else "-"
        kind = type(event)
        if kind is Command:
            before, own = self.placing.line(stream, event.direction, event.offset)
            for anomaly in before:  # anomalies of lines before this one that never became commands
                self._anomaly(stream, anomaly)
            arrow = ">>>" if event.direction == C2S else "<<<"
            line = Text()
            if event.ts is not None:
                line.append(self.zone.time(event.ts) + " ", style="dim")
            line.append(f"[{stream}] {arrow} ", style="blue" if event.direction == C2S else "magenta")
            line.append(visible(event.cmd), style="bold")
            if event.trid is not None:
                line.append(f" {event.trid}", style="green")
            params = self.redactor.params(event, decoded=self.decoded)
            if params:
                line.append(" " + visible(" ".join(params)))
            if event.payload is not None:
                line.append(f"  (+{len(event.payload)} bytes payload)", style="dim")
            self._print(line)
            for anomaly in own:
                self._anomaly(stream, anomaly)
            view = self.views(event, conn) if self.views is not None and event.payload is not None else None
            if view is not None:
                for text in view.lines(self.redactor):
                    self._print(Text("        " + visible(text), style="dim"))
        elif kind is Anomaly:
            if not self.placing.hold(stream, event):
                self._anomaly(stream, event)
        elif kind is Skipped:
            for _, anomaly in self.placing.end(stream, event.direction):
                self._anomaly(stream, anomaly)
            self._print(Text(f"    ~ [{stream}] skipped {len(event.raw)} bytes", style="dim"))
        elif kind is Transaction:
            pass
        elif kind is dict and event.get("kind") == "rewrite":
            # The line above is what the server sent; say what the client was given instead.
            self._print(Text(visible(f"    = [{stream}] {event.get('cmd')} {event.get('target')} rewritten for "
                                     f"the client: {event.get('original')} -> {event.get('rewritten')}"),
                             style="dim"))

    def stream(self, conn: Connection) -> None:
        for stream, anomaly in self.placing.end(conn.id):
            self._anomaly(stream, anomaly)

    def close(self) -> None:
        for stream, anomaly in sorted(self.placing.end(), key=lambda item: item[0]):
            self._anomaly(stream, anomaly)


__all__ = ["SafeConsole", "LineAnomalies", "render_report", "VerbosePrinter", "Fit", "fit", "connection_table", "totals_table", "percentile", "Group"]
