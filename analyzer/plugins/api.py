"""The plugin interface: what a plugin is (`Plugin`), what it produces (`DecodedView`,
report sections) and which hooks it implements (`capabilities`). Third-party plugins
import these names from `analyzer.plugins`; see that package's docstring for the contract."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar

from analyzer.anomalies import Severity
from analyzer.msnp import Command, Transaction

TERMINAL_ROWS = 40         # rows a plugin's terminal section lists before it counts the rest
PLUGIN_NAME = re.compile(r"^[a-z][a-z0-9_]*$")  # a plugin's name: it becomes part of anomaly names


# -- what plugins produce -----------------------------------------------------


@dataclass
class DecodedView:
    """A structured decoding of one payload: a title, named fields, a body, nested parts.

    `secrets` names the fields whose values must be redacted in exports (an
    MSPAuth header, a file-transfer AuthCookie); renderers pass their
    `Redactor`. `plugin` is filled in by the manager.
    """

    title: str
    fields: list[tuple[str, str]] = field(default_factory=list)
    body: str | None = None
    children: list["DecodedView"] = field(default_factory=list)
    secrets: frozenset[str] = frozenset()
    priority: float = 0.0
    plugin: str | None = None

    def _value(self, key: str, value: str, redactor) -> str:
        if redactor is None or not redactor.enabled:
            return value
        if key in self.secrets:
            return redactor.mask(value.encode("utf-8", "surrogatepass"))
        return redactor.field(key, value)  # the one table (analyzer.analysis.redact) decides

    def _body(self, redactor) -> str | None:
        if self.body is None or redactor is None or not redactor.enabled:
            return self.body
        return redactor.text_str(self.body)

    def to_dict(self, redactor=None) -> dict:
        """Plain data for JSON and the HTML timeline."""
        return {"title": self.title, "plugin": self.plugin,
                "fields": [[k, self._value(k, v, redactor)] for k, v in self.fields],
                "body": self._body(redactor),
                "children": [c.to_dict(redactor) for c in self.children]}

    def lines(self, redactor=None, indent: str = "") -> list[str]:
        """A plain-text rendering, one string per line (the verbose printer's)."""
        out = [indent + self.title + (f"  [{self.plugin}]" if self.plugin and not indent else "")]
        for key, value in self.fields:
            out.append(f"{indent}  {key}: {self._value(key, value, redactor)}")
        body = self._body(redactor)
        if body:
            for line in body.splitlines() or [""]:
                out.append(f"{indent}  | {line}")
        for child in self.children:
            out.extend(child.lines(redactor, indent + "  "))
        return out


def section(title: str, columns: list[str], rows: list[list[Any]]) -> dict:
    """An HTML report section as plain data (every cell a string)."""
    return {"title": title, "columns": [str(c) for c in columns],
            "rows": [["" if cell is None else str(cell) for cell in row] for row in rows]}


def section_table(sec: dict):
    """The same section as a rich Table, for `terminal_sections()`."""
    from rich.table import Table
    table = Table(title=sec["title"])
    for col in sec["columns"]:
        table.add_column(col, overflow="fold")
    for row in sec["rows"]:
        table.add_row(*row)
    return table


# -- the interface ------------------------------------------------------------


class Plugin:
    """Base class for plugins: override what you need; every hook is optional.

    Class attributes: `name` (lower case, `[a-z][a-z0-9_]*`; anomalies are
    `plugin.<name>.<what>`), `version`, `description`, and `anomalies`:
    `{what: (severity, one-line summary)}` added to the catalogue at load time.
    """

    name: ClassVar[str] = ""
    version: ClassVar[str | None] = None
    description: ClassVar[str] = ""
    anomalies: ClassVar[dict[str, tuple[Severity | str, str]]] = {}
    # The command codes `on_command` is called for (e.g. {"MSG"}); None: every command.
    # Saying which is what keeps a large capture fast: the others are never dispatched.
    commands: ClassVar[frozenset[str] | None] = None
    # The kinds of MSG payload `on_command` is called for (`analyzer.msnp.mime.KINDS`' values and
    # "other", "malformed", "control", e.g. {"p2p"}); None: every MSG. A plugin that names kinds
    # is never given a MSG without a payload. The payload is classified once, by the manager,
    # and `parse_mime` then hands every plugin the same parsed message.
    msg_kinds: ClassVar[frozenset[str] | None] = None
    # Set by the run before the first event: False when nothing will ask for
    # `html_sections()` (`analyze` without --html), so a plugin may skip keeping
    # what only those sections show (the chat plugin keeps no message text then).
    html_report: bool = True
    # Set by the run before the first event: its Redactor (analyzer.analysis.redact), for
    # report sections that show a secret (mask it with `redactor.mask(raw_bytes)`: the same
    # key as every other output, so masked values still match). None: mask it entirely.
    redactor = None

    _reporter: Callable | None = None

    # payload decoder
    def decode(self, cmd: Command, conn) -> DecodedView | None:
        return None

    # observer
    def on_command(self, conn, cmd: Command) -> None:
        pass

    def on_transaction(self, conn, transaction: Transaction) -> None:
        pass

    def on_connection_end(self, conn) -> None:
        pass

    def on_finish(self) -> None:
        pass

    # report contributions
    def terminal_sections(self) -> list:
        return []

    def html_sections(self) -> list[dict]:
        return []

    # provided to the plugin
    def report(self, conn, what: str, detail: str, cmd: Command | None = None) -> None:
        """Raise the anomaly `plugin.<name>.<what>` on `conn` (at `cmd`, if given)."""
        if self._reporter is not None:
            self._reporter(self, conn, what, detail, cmd)


HOOKS = ("decode", "on_command", "on_transaction", "on_connection_end", "on_finish",
         "terminal_sections", "html_sections")


def capabilities(plugin) -> list[str]:
    """What a plugin does, from the hooks it overrides."""
    def overrides(*names):
        return any(callable(getattr(plugin, n, None)) and
                   getattr(type(plugin), n, None) is not getattr(Plugin, n, None) for n in names)
    caps = []
    if overrides("decode"):
        caps.append("decoder")
    if overrides("on_command", "on_transaction", "on_connection_end", "on_finish"):
        caps.append("observer")
    if overrides("terminal_sections", "html_sections"):
        caps.append("report")
    return caps
