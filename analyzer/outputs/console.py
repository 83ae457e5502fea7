"""The interactive console of `proxy`, `mitm` and `demo` (Textual), and the model it shows.

`ConsoleModel` is an analysis sink: it keeps a summary per connection and a
bounded ring of the latest rows (commands, anomalies, rewrites, notices), each
with what the detail pane needs, and nothing else. Its calls may come from
another thread (the proxy's analysis process feeds it from its record loop
while the console runs on the main thread): every access goes through one lock,
and the console only ever copies out what changed since it last looked.

`MsnpConsole` is the Textual app: a connection list (grouped by login handle:
role, version, state, counts), the command stream for all connections or the
selected one (direction, command, TrID, pairing outcome and latency, anomaly
marks), a detail pane for the highlighted row (parameters, the plugins'
decoding of the payload, the anomalies of that line), filters (text, command
codes, anomalies only), pause and follow, and a footer with the keys. It
polls the model four times a second, so the forwarding path never waits for
it; rows never wrap (long text is cut to the screen, the detail pane shows it
whole). Text from the wire is shown through `analyzer.text.visible`;
secrets are redacted as in every export.
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass, field

from analyzer.analysis.redact import Redactor
from analyzer.anomalies import Severity
from analyzer.clock import UTC, Clock
from analyzer.msnp import C2S, S2C, Anomaly, Command, Transaction
from analyzer.outputs.terminal import LineAnomalies
from analyzer.text import visible

MAX_ROWS = 5000          # rows the model keeps (older ones are dropped; --json keeps everything)
MAX_CONNECTIONS = 2000   # connection summaries kept (the oldest closed ones go first)
SHOWN_ROWS = 2000        # rows the console's stream table holds at once
REFRESH = 0.25           # seconds between two looks at the model


@dataclass(slots=True)
class Row:
    """One line of the command stream."""

    seq: int
    stream: str
    kind: str                    # command, anomaly, rewrite, notice
    ts: float | None = None
    direction: str | None = None
    cmd: str = ""
    trid: int | None = None
    text: str = ""               # redacted, printable parameters (or the anomaly / notice text)
    offset: int | None = None
    outcome: str | None = None   # the pairing outcome of a request, once known
    latency_ms: float | None = None
    error: str | None = None
    anomalies: list = field(default_factory=list)   # (name, severity, detail) of this line
    command: Command | None = None                  # for the detail pane's decoding
    conn: object = None

    def severity(self) -> int:
        return max((s for _, s, _ in self.anomalies), default=-1)


@dataclass(slots=True)
class ConnSummary:
    stream: str
    role: str = "?"
    version: str = "?"
    handle: str = "-"
    client: str = "?"
    server: str = "?"
    closed: bool = False
    commands: int = 0
    anomalies: int = 0
    worst: int = -1
    first_seq: int = 0


class ConsoleModel:
    """An analysis sink holding what the console shows; safe to feed from another thread."""

    def __init__(self, redactor: Redactor | None = None, views=None, max_rows: int = MAX_ROWS,
                 max_connections: int = MAX_CONNECTIONS) -> None:
        self.redactor = redactor or Redactor()
        self.views = views        # plugins' decoder (the verbose printer's): (command, conn) -> DecodedView
        self.lock = threading.Lock()
        self.rows: deque[Row] = deque(maxlen=max_rows)
        self.conns: dict[str, ConnSummary] = {}
        self.max_connections = max_connections
        self.seq = 0
        self.changed: set[int] = set()     # rows updated after they were added (pairing, anomalies)
        self.conns_version = 0
        self.status = ""
        self.requests: dict[tuple, Row] = {}   # (stream, trid) -> the request's row, until paired
        self.lines: dict[tuple, Row] = {}      # (stream, direction) -> the last command row
        self.placing = LineAnomalies()         # which line an anomaly belongs to (the rule of -v)
        self.ended = threading.Event()     # set when no more records will come: the console closes

    # -- sink -------------------------------------------------------------------

    def _summary(self, conn) -> ConnSummary:
        summary = self.conns.get(conn.id)
        if summary is None:
            if len(self.conns) >= self.max_connections:
                victim = next((k for k, s in self.conns.items() if s.closed), next(iter(self.conns)))
                del self.conns[victim]
            summary = self.conns[conn.id] = ConnSummary(conn.id, first_seq=self.seq)
        summary.role = conn.role or "?"
        summary.version = conn.version_label or "?"
        summary.handle = visible(conn.handle or "-")
        summary.client = visible(conn.client or "?")
        summary.server = visible(conn.server or "?")
        return summary

    def _add(self, row: Row) -> Row:
        self.seq += 1
        row.seq = self.seq
        if len(self.rows) == self.rows.maxlen:
            old = self.rows[0]
            self.changed.discard(old.seq)
            if old.trid is not None and self.requests.get((old.stream, old.trid)) is old:
                del self.requests[(old.stream, old.trid)]
        self.rows.append(row)
        return row

    def event(self, conn, event) -> None:
        kind = type(event)
        with self.lock:
            stream = conn.id if conn is not None else "-"
            if kind is Command:
                summary = self._summary(conn) if conn is not None else None
                if summary is not None:
                    summary.commands += 1
                    self.conns_version += 1
                params = " ".join(self.redactor.params(event))
                row = self._add(Row(0, stream, "command", event.ts, event.direction, visible(event.cmd),
                                    event.trid, visible(params), event.offset, command=event, conn=conn))
                if event.payload is not None:
                    row.text += f"  +{len(event.payload)}B"
                self.lines[(stream, event.direction)] = row
                before, own = self.placing.line(stream, event.direction, event.offset)
                for anomaly in before:
                    self._anomaly_row(stream, anomaly)
                for anomaly in own:
                    row.anomalies.append((anomaly.name, anomaly.severity, visible(self.redactor.detail(anomaly))))
                if event.trid is not None and event.direction == C2S:
                    self.requests[(stream, event.trid)] = row
            elif kind is Transaction:
                row = self.requests.pop((stream, event.trid), None)
                if row is not None and row.cmd == event.cmd:
                    row.outcome = event.outcome
                    row.latency_ms = event.latency_ms
                    row.error = visible(event.error) if event.error else None
                    self.changed.add(row.seq)
            elif kind is Anomaly:
                summary = self._summary(conn) if conn is not None else None
                if summary is not None:
                    summary.anomalies += 1
                    summary.worst = max(summary.worst, int(event.severity))
                    self.conns_version += 1
                if self.placing.hold(stream, event):
                    return
                last = self.lines.get((stream, event.direction))
                if last is not None and event.offset is not None and last.offset == event.offset:
                    last.anomalies.append((event.name, event.severity, visible(self.redactor.detail(event))))
                    self.changed.add(last.seq)
                    return
                self._anomaly_row(stream, event)
            elif isinstance(event, dict) and event.get("kind") == "rewrite":
                self._add(Row(0, stream, "rewrite", event.get("ts"), event.get("dir"), event.get("cmd", ""),
                              None, visible(f"{event.get('target', '')} {event.get('original')} -> "
                                              f"{event.get('rewritten')} (the client was given the proxy)")))

    def _anomaly_row(self, stream: str, event: Anomaly) -> None:
        row = self._add(Row(0, stream, "anomaly", event.ts, event.direction, "!", None,
                            visible(f"{event.name}: {self.redactor.detail(event)}"), event.offset))
        row.anomalies.append((event.name, event.severity, visible(self.redactor.detail(event))))

    def stream(self, conn) -> None:
        with self.lock:
            summary = self._summary(conn)
            summary.closed = True
            self.conns_version += 1
            for stream, anomaly in self.placing.end(conn.id):
                self._anomaly_row(stream, anomaly)
            for key in ((conn.id, C2S), (conn.id, S2C)):   # looked up: no search over every stream
                self.lines.pop(key, None)
            for key in [k for k in self.requests if k[0] == conn.id]:
                del self.requests[key]

    def close(self) -> None:
        pass

    def notice(self, text: str) -> None:
        with self.lock:
            self._add(Row(0, "-", "notice", None, None, "*", None, visible(text)))

    def set_status(self, text: str) -> None:
        with self.lock:
            self.status = visible(text)

    # -- what the console reads ---------------------------------------------------

    def since(self, seq: int) -> tuple[list[Row], list[Row], int]:
        """Rows added after `seq`, rows changed since the last call, and the newest seq."""
        with self.lock:
            if not self.rows or self.rows[-1].seq <= seq:
                new = []
            else:
                first = self.rows[0].seq
                start = max(0, seq + 1 - first)
                new = [self.rows[i] for i in range(start, len(self.rows))]
            changed = [r for r in self.rows if r.seq in self.changed and r.seq <= seq] if self.changed else []
            self.changed.clear()
            return new, changed, self.seq

    def all_rows(self) -> list[Row]:
        with self.lock:
            return list(self.rows)

    def snapshot(self) -> tuple[list[Row], int]:
        """Every row kept and the newest seq, in one look (a redraw starts from here)."""
        with self.lock:
            self.changed.clear()
            return list(self.rows), self.seq

    def connections(self) -> tuple[list[ConnSummary], int]:
        """Connection summaries grouped by login handle (first seen first), and a version number."""
        with self.lock:
            conns = [ConnSummary(**{k: getattr(c, k) for k in ConnSummary.__slots__}) for c in self.conns.values()]
            version = self.conns_version
        first_of: dict[str, int] = {}
        for c in conns:
            first_of[c.handle] = min(first_of.get(c.handle, c.first_seq), c.first_seq)
        conns.sort(key=lambda c: (first_of[c.handle], c.handle, c.first_seq))
        return conns, version

    def detail(self, row: Row, zone: Clock = UTC) -> list[str]:
        """The detail pane's lines for `row`."""
        lines = []
        when = zone.time(row.ts) if row.ts is not None else "-"
        if row.kind == "command":
            arrow = "client -> server" if row.direction == C2S else "server -> client"
            lines.append(f"{when}  stream {row.stream}  {arrow}  offset {row.offset}")
            cmd = row.command
            head = f"{row.cmd}" + (f" {row.trid}" if row.trid is not None else "")
            params = self.redactor.params(cmd, decoded=True) if cmd is not None else []
            lines.append(visible(" ".join([head, *params])))
            if row.outcome:
                pairing = f"pairing: {row.outcome}"
                if row.error:
                    pairing += f" ({row.error})"
                if row.latency_ms is not None:
                    pairing += f", {row.latency_ms:.1f} ms"
                lines.append(pairing)
            if cmd is not None and cmd.payload is not None:
                lines.append(f"payload: {len(cmd.payload)} bytes")
                view = None
                if self.views is not None:
                    try:
                        view = self.views(cmd, row.conn)
                    except Exception:  # noqa: BLE001 - a decoder failing only costs the decoded view
                        view = None
                if view is not None:
                    lines.extend("  " + visible(text) for text in view.lines(self.redactor))
                else:
                    raw = self.redactor.payload(cmd) or b""
                    text = raw[:2000].decode("utf-8", "replace")
                    lines.extend("  " + visible(part) for part in text.split("\r\n")[:40])
        else:
            lines.append(f"{when}  stream {row.stream}  {row.kind}")
            lines.append(row.text)
        for name, severity, detail in row.anomalies:
            lines.append(f"! {name} ({Severity(severity)}): {detail}")
        return lines


# -- the Textual app ---------------------------------------------------------------

def build_console(model: ConsoleModel, title: str, zone: Clock = UTC, on_quit=None):
    """The console app for `model` (Textual is imported here, only when a console is asked for)."""
    from rich.text import Text
    from textual.app import App, ComposeResult
    from textual.binding import Binding
    from textual.containers import Vertical
    from textual.css.query import NoMatches
    from textual.widgets import DataTable, Footer, Input, Static

    outcome_style = {"answered": "green", "error": "red", "unanswered": "yellow", "no_reply_expected": "dim"}
    severity_style = {int(Severity.INFO): "cyan", int(Severity.WARNING): "yellow", int(Severity.ERROR): "bold red"}

    class MsnpConsole(App):
        TITLE = "msnp-analyzer"
        CSS = """
        Screen { layout: vertical; }
        #status { height: 1; background: $boost; color: $text; }
        #conns { height: auto; max-height: 7; }
        #stream { height: 1fr; min-height: 5; }
        #detail { height: 6; border-top: solid $primary; overflow-y: auto; }
        #filter { display: none; }
        #filter.shown { display: block; }
        """
        BINDINGS = [
            Binding("q", "quit_console", "Quit"),
            Binding("ctrl+c", "quit_console", "Quit", show=False, priority=True),
            Binding("slash", "filter_text", "Filter"),
            Binding("c", "filter_commands", "Cmds"),
            Binding("exclamation_mark", "anomalies_only", "Anomalies"),
            Binding("a", "all_connections", "All conns"),
            Binding("x", "clear_filters", "Clear"),
            Binding("p", "pause", "Pause"),
            Binding("f", "follow", "Follow"),
            Binding("escape", "close_filter", "Close", show=False),
        ]

        def __init__(self) -> None:
            super().__init__()
            self.model = model
            self.zone = zone
            self.title_text = title
            self.on_quit = on_quit
            self.last_seq = 0
            self.conns_version = -1
            self.selected: str | None = None     # the connection whose commands are shown (None: all)
            self.text_filter = ""
            self.command_filter: frozenset[str] = frozenset()
            self.anomalies_only = False
            self.paused = False
            self.following = True
            self.filter_mode = "text"
            self.rows_by_key: dict[str, Row] = {}
            self.quitting = False
            self.built_width = 0
            self.id_width = 4          # grows (to 13) with the longest connection id seen
            self.ready = False  # set once on_mount has built the tables

        def compose(self) -> ComposeResult:
            yield Static(id="status")
            conns = DataTable(id="conns", cursor_type="row", zebra_stripes=True)
            yield conns
            stream = DataTable(id="stream", cursor_type="row", cell_padding=0)
            yield stream
            yield Input(placeholder="filter", id="filter")
            with Vertical(id="detail"):
                yield Static("", id="detail_text")
            yield Footer()

        def on_mount(self) -> None:
            conns = self.query_one("#conns", DataTable)
            for label, key in (("id", "id"), ("login", "login"), ("role", "role"), ("version", "version"),
                               ("state", "state"), ("cmds", "cmds"), ("anom", "anom"),
                               ("client -> server", "addr")):
                conns.add_column(label, key=key)
            self._stream_columns()
            self.ready = True
            self.refresh_data()
            self.set_interval(REFRESH, self.refresh_data)

        def _stream_columns(self) -> None:
            stream = self.query_one("#stream", DataTable)
            stream.clear(columns=True)
            # Fixed widths, each with a space for a gutter (no cell padding): the text gets the rest.
            for label, key, width in self._fixed():
                stream.add_column(label, key=key, width=width)
            stream.add_column("text", key="text", width=self._text_width())
            self.built_width = self.size.width

        def _fixed(self):
            """The stream's fixed columns: (label, key, width), each width with a space for a gutter."""
            return (("time", "time", 14), ("id", "id", self.id_width), ("dir", "dir", 4), ("cmd", "cmd", 4),
                    ("trid", "trid", 5), ("pairing", "pairing", 10))

        def _text_width(self) -> int:
            # what the fixed columns leave, less the vertical scrollbar
            return max(12, self.size.width - sum(w for _, _, w in self._fixed()) - 2)

        def on_resize(self, event) -> None:
            self.call_after_refresh(self._fit_width)

        def _fit_width(self) -> None:
            if self.ready and self.size.width != self.built_width:
                try:
                    self._rebuild()
                except NoMatches:
                    self.ready = False   # a resize queued while the app is torn down

        # -- data --------------------------------------------------------------

        def _status_line(self) -> str:
            parts = [self.title_text]
            if self.selected is not None:
                parts.append(f"connection {self.selected}")
            if self.text_filter:
                parts.append(f"/{self.text_filter}")
            if self.command_filter:
                parts.append("cmd " + ",".join(sorted(self.command_filter)))
            if self.anomalies_only:
                parts.append("anomalies only")
            if self.paused:
                parts.append("PAUSED")
            elif not self.following:
                parts.append("not following")
            parts.append(f"times {self.zone.zone}")
            if self.model.status:
                parts.append(self.model.status)
            return " | ".join(parts)

        def refresh_data(self) -> None:
            try:
                self._refresh_data()
            except NoMatches:
                # A timer tick while the app is torn down (a test's run_test ending, the
                # terminal closing): the screen's widgets are gone before the app itself.
                self.ready = False

        def _refresh_data(self) -> None:
            if not self.ready:
                return
            if self.model.ended.is_set():
                self._leave()
                return
            if self.size.width != self.built_width:
                self._rebuild()
            self.query_one("#status", Static).update(Text(self._status_line(), no_wrap=True, overflow="ellipsis"))
            conns, version = self.model.connections()
            if version != self.conns_version:
                self.conns_version = version
                self._fill_connections(conns)
                wanted = min(13, max((len(c.stream) for c in conns), default=3) + 1)
                if wanted > self.id_width:
                    self.id_width = wanted
                    self._rebuild()  # shows every row up to now
                    return
            if self.paused:
                return
            new, changed, self.last_seq = self.model.since(self.last_seq)
            stream = self.query_one("#stream", DataTable)
            for row in changed:
                key = str(row.seq)
                if key in self.rows_by_key:
                    stream.update_cell(key, "pairing", self._pairing(row))
                    stream.update_cell(key, "text", self._text(row), update_width=False)
            added = False
            for row in new:
                if self._wanted(row):
                    self._add_row(stream, row)
                    added = True
            self._trim(stream)
            if added and self.following:
                stream.move_cursor(row=stream.row_count - 1, animate=False)

        def _fill_connections(self, conns) -> None:
            table = self.query_one("#conns", DataTable)
            cursor = table.cursor_row
            table.clear()
            for c in conns:
                style = severity_style.get(c.worst, "")
                table.add_row(c.stream, c.handle, c.role, c.version,
                              Text("closed", style="dim") if c.closed else Text("open", style="green"),
                              str(c.commands), Text(str(c.anomalies), style=style),
                              f"{c.client} -> {c.server}", key=c.stream)
            if conns:
                table.move_cursor(row=min(cursor, len(conns) - 1), animate=False)

        def _wanted(self, row: Row) -> bool:
            if self.selected is not None and row.stream != self.selected:
                return False
            if self.anomalies_only and not row.anomalies:
                return False
            if self.command_filter and row.cmd not in self.command_filter:
                return False
            if self.text_filter:
                needle = self.text_filter.lower()
                haystack = f"{row.stream} {row.cmd} {row.trid} {row.text} " + " ".join(n for n, _, _ in row.anomalies)
                if needle not in haystack.lower():
                    return False
            return True

        def _pairing(self, row: Row) -> Text:
            if row.outcome is None:
                return Text("")
            label = {"no_reply_expected": "-", "answered": "ok"}.get(row.outcome, row.outcome)
            if row.latency_ms is not None and row.outcome != "no_reply_expected":
                label += f" {row.latency_ms:.0f}ms"
            return Text(label, style=outcome_style.get(row.outcome, ""))

        def _text(self, row: Row) -> Text:
            text = Text(row.text, no_wrap=True, overflow="ellipsis")
            if row.anomalies:
                names = ", ".join(n for n, _, _ in row.anomalies)
                if row.kind == "command":
                    text.append(f"  ! {names}", style=severity_style.get(row.severity(), "yellow"))
                text.stylize(severity_style.get(row.severity(), ""), 0, 0)
            if row.kind == "anomaly":
                text.stylize(severity_style.get(row.severity(), "yellow"))
            elif row.kind == "rewrite":
                text.stylize("cyan")
            elif row.kind == "notice":
                text.stylize("bold yellow")
            return text

        def _add_row(self, stream: DataTable, row: Row) -> None:
            key = str(row.seq)
            arrow = {C2S: ">>>", None: ""}.get(row.direction, "<<<")
            stream.add_row(self.zone.time(row.ts) if row.ts is not None else "",
                           row.stream, Text(arrow, style="blue" if row.direction == C2S else "magenta"),
                           Text(row.cmd, style="bold"), "" if row.trid is None else str(row.trid),
                           self._pairing(row), self._text(row), key=key)
            self.rows_by_key[key] = row

        def _trim(self, stream: DataTable) -> None:
            while stream.row_count > SHOWN_ROWS:
                first = next(iter(self.rows_by_key))
                stream.remove_row(first)
                del self.rows_by_key[first]

        def _rebuild(self) -> None:
            if not self.ready:
                return
            self._stream_columns()
            self.rows_by_key.clear()
            stream = self.query_one("#stream", DataTable)
            rows, self.last_seq = self.model.snapshot()
            wanted = [r for r in rows if self._wanted(r)][-SHOWN_ROWS:]
            for row in wanted:
                self._add_row(stream, row)
            if wanted and self.following:
                stream.move_cursor(row=stream.row_count - 1, animate=False)
            self.query_one("#detail_text", Static).update("")
            self.query_one("#status", Static).update(Text(self._status_line(), no_wrap=True, overflow="ellipsis"))

        # -- events --------------------------------------------------------------

        def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
            if event.data_table.id != "stream" or event.row_key is None:
                return
            row = self.rows_by_key.get(event.row_key.value)
            if row is not None:
                lines = self.model.detail(row, self.zone)
                self.query_one("#detail_text", Static).update(Text("\n".join(lines)))
            stream = event.data_table
            self.following = event.cursor_row >= stream.row_count - 1

        def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
            if event.data_table.id == "conns" and event.row_key is not None:
                self.selected = None if self.selected == event.row_key.value else event.row_key.value
                self.following = True
                self._rebuild()

        def on_input_submitted(self, event: Input.Submitted) -> None:
            value = event.value.strip()
            if self.filter_mode == "text":
                self.text_filter = value
            else:
                self.command_filter = frozenset(c.upper() for c in value.replace(",", " ").split())
            event.input.remove_class("shown")
            self.query_one("#stream", DataTable).focus()
            self._rebuild()

        # -- actions -------------------------------------------------------------

        def _open_filter(self, mode: str, current: str, placeholder: str) -> None:
            self.filter_mode = mode
            box = self.query_one("#filter", Input)
            box.placeholder = placeholder
            box.value = current
            box.add_class("shown")
            box.focus()

        def action_filter_text(self) -> None:
            self._open_filter("text", self.text_filter, "text to look for (Enter to apply, empty to clear)")

        def action_filter_commands(self) -> None:
            self._open_filter("commands", " ".join(sorted(self.command_filter)),
                              "command codes, e.g. MSG XFR (Enter to apply, empty to clear)")

        def action_close_filter(self) -> None:
            box = self.query_one("#filter", Input)
            if box.has_class("shown"):
                box.remove_class("shown")
                self.query_one("#stream", DataTable).focus()

        def action_anomalies_only(self) -> None:
            self.anomalies_only = not self.anomalies_only
            self._rebuild()

        def action_all_connections(self) -> None:
            self.selected = None
            self._rebuild()

        def action_clear_filters(self) -> None:
            self.selected, self.text_filter, self.command_filter, self.anomalies_only = None, "", frozenset(), False
            self.paused, self.following = False, True
            self._rebuild()

        def action_pause(self) -> None:
            self.paused = not self.paused
            if not self.paused:
                self.refresh_data()

        def action_follow(self) -> None:
            self.following = True
            stream = self.query_one("#stream", DataTable)
            if stream.row_count:
                stream.move_cursor(row=stream.row_count - 1, animate=False)

        def action_quit_console(self) -> None:
            if self.on_quit is not None and not self.quitting:
                self.quitting = True
                self.on_quit()
            self._leave()

        def _leave(self) -> None:
            # Nothing refreshes once the app is on its way out: its widgets are being removed,
            # and a timer tick or a resize queued before the exit would look for them.
            self.ready = False
            self.exit()

        def on_unmount(self) -> None:
            self.ready = False

        def check_action(self, action: str, parameters) -> bool | None:
            # While the filter box has the focus, letters are typed into it, not taken as keys.
            if action not in ("quit_console", "close_filter") and isinstance(self.focused, Input):
                return False
            return True

    return MsnpConsole()


__all__ = ["ConsoleModel", "Row", "ConnSummary", "build_console"]
