"""Plugins: payload decoders, observers and report sections from other packages.

A plugin is an object with the `Plugin` interface below (subclass `Plugin`, or
provide the same attributes). It may

- decode payloads: `decode(cmd, conn) -> DecodedView | None`, for every command
  that carries a payload. Each view has a `priority`; when several plugins
  decode the same payload the highest priority wins (as mitmproxy's content
  views do). `PluginManager.decode_payload(cmd)` is what the verbose printer
  and the HTML timeline call;
- observe: `on_command`, `on_transaction`, `on_connection_end`, `on_finish`,
  and raise anomalies with `self.report(conn, what, detail, cmd)`, which are
  catalogued as `plugin.<name>.<what>` (declared in the plugin's `anomalies`)
  and counted like the analyzer's own;
- contribute to reports: `terminal_sections()` (rich renderables, printed after
  the terminal report) and `html_sections()` (plain data: dicts with "title",
  "columns" and "rows" of strings, never markup; the HTML layer escapes them).

Discovery: every entry point of the group `msnp_analyzer.plugins` (first-party
plugins in `plugins/` are registered through this project's own entry points,
so they load by exactly the same path as third-party ones); `--plugin
MODULE_OR_FILE` loads one more explicitly; `--no-plugins` skips discovery
(explicit `--plugin`s still load).

Isolation, the `PluginManager`'s contract: every call into a plugin is guarded.
An exception disables that plugin for the rest of the run and is reported
once (`analyzer.plugin.failed`, naming the plugin); a call that takes longer
than the per-call budget (measured with `time.perf_counter`) disables the
plugin too (`analyzer.plugin.too_slow`). The analysis carries on and the other
plugins' results are unchanged. A budget only acts after the slow call
returns, so the live proxy also runs observers off the forwarding path
(`threaded=True`): events go into a bounded queue served by one worker
thread; when the queue is full, events are dropped for the plugins (reported
once as `analyzer.plugin.backlog`) and never block forwarding. Anomalies a
plugin raises on the worker are handed back and emitted on the caller's
thread. Decoders (`decode_payload`) always run on the caller's thread: keep
them pure and quick.
"""

from __future__ import annotations

import importlib
import importlib.util
import queue
import re
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar

from analyzer.anomalies import CATALOGUE, Severity, register
from analyzer.msnp import Anomaly, Command, Transaction

GROUP = "msnp_analyzer.plugins"
DEFAULT_BUDGET = 1.0       # seconds per call before a plugin is disabled
DEFAULT_BACKLOG = 10000    # events queued for threaded observers before dropping
TERMINAL_ROWS = 40         # rows a plugin's terminal section lists before it counts the rest
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


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
    # Set by the run before the first event: False when nothing will ask for
    # `html_sections()` (`analyze` without --html), so a plugin may skip keeping
    # what only those sections show (the chat plugin keeps no message text then).
    html_report: bool = True

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


# -- the manager --------------------------------------------------------------


@dataclass
class LoadedPlugin:
    plugin: Any
    name: str
    origin: str
    version: str
    enabled: bool = True
    problem: str | None = None
    calls: int = 0
    seconds: float = 0.0
    hooks: frozenset = frozenset()  # the hooks this plugin really implements
    commands: frozenset | None = None  # the codes on_command wants (None: all)

    def __post_init__(self) -> None:
        # A hook inherited unchanged from the Plugin base class is a no-op: never call it.
        cls = type(self.plugin)
        self.hooks = frozenset(h for h in HOOKS if getattr(cls, h, None) is not None
                               and getattr(cls, h) is not getattr(Plugin, h, None))
        wanted = getattr(self.plugin, "commands", None)
        if wanted is not None:
            if isinstance(wanted, str):
                wanted = [wanted]
            try:
                self.commands = frozenset(str(c).upper() for c in wanted)
            except TypeError:
                self.commands = None  # not a collection of codes: every command, as before


def _warn_stderr(message: str) -> None:
    print(f"msnp-analyzer: {message}", file=sys.stderr)


class PluginManager:
    """Runs plugins in isolation; a `Sink` for `Analysis` (add it last)."""

    def __init__(self, analysis=None, budget: float = DEFAULT_BUDGET, threaded: bool = False,
                 backlog: int = DEFAULT_BACKLOG, warn: Callable[[str], None] | None = None,
                 clock: Callable[[], float] = time.perf_counter) -> None:
        self.analysis = analysis
        self.budget = budget
        self.warn = warn or _warn_stderr
        self.clock = clock
        self.loaded: list[LoadedPlugin] = []
        self.load_errors: list[tuple[str, str]] = []  # (origin, problem) of plugins that failed to load
        self.raised: Counter[str] = Counter()         # plugin anomalies raised, by name
        self.dropped: Counter[str] = Counter()       # events dropped for threaded observers, by hook
        self._closed = False
        self._outbox: list[tuple] = []
        self._lock = threading.Lock()
        self._queue: queue.Queue | None = None
        self._worker: threading.Thread | None = None
        self._backlog_reported = False
        self._current: LoadedPlugin | None = None  # the plugin the worker is running
        # Who gets what: hook (or ("on_command", code)) -> the enabled plugins that
        # take it. Rebuilt (a new dict) whenever a plugin is added or disabled.
        self._routes: dict = {}
        if threaded:
            self._queue = queue.Queue(maxsize=backlog)
            self._worker = threading.Thread(target=self._serve, name="msnp-plugins", daemon=True)
            self._worker.start()

    # -- loading ------------------------------------------------------------

    def add(self, plugin, origin: str, version: str | None = None) -> LoadedPlugin | None:
        name = getattr(plugin, "name", "") or type(plugin).__name__.lower()
        if not _NAME.match(name):
            self.load_errors.append((origin, f"invalid plugin name {name!r} (use [a-z][a-z0-9_]*)"))
            self.warn(f"plugin from {origin} not loaded: invalid name {name!r}")
            return None
        if any(p.name == name for p in self.loaded):
            self.load_errors.append((origin, f"a plugin named {name!r} is already loaded"))
            self.warn(f"plugin {name} from {origin} not loaded: a plugin with that name is already loaded")
            return None
        declared = getattr(plugin, "anomalies", None) or {}
        for what, (severity, summary) in declared.items():
            if isinstance(severity, str):
                severity = Severity.parse(severity)
            register(f"plugin.{name}.{what}", severity, summary)
        try:
            plugin._reporter = self._report
        except AttributeError:
            pass  # a plugin that does not subclass Plugin and forbids attributes: it cannot report
        loaded = LoadedPlugin(plugin, name, origin, str(version or getattr(plugin, "version", None) or "-"))
        self.loaded.append(loaded)
        self._routes = {}
        return loaded

    def get(self, name: str):
        for p in self.loaded:
            if p.name == name:
                return p.plugin
        return None

    # -- isolation ----------------------------------------------------------

    def _call(self, lp: LoadedPlugin, hook: str, *args, default=None):
        if not lp.enabled:
            return default
        method = getattr(lp.plugin, hook, None)
        if method is None:
            return default
        start = self.clock()
        try:
            result = method(*args)
        except Exception as exc:  # noqa: BLE001 - a plugin's failure must not stop the analysis
            self._disable(lp, "analyzer.plugin.failed",
                          f"plugin {lp.name} raised {type(exc).__name__}: {exc} in {hook}; disabled for the rest of the run")
            return default
        elapsed = self.clock() - start
        lp.calls += 1
        lp.seconds += elapsed
        if self.budget and elapsed > self.budget:
            self._disable(lp, "analyzer.plugin.too_slow",
                          f"plugin {lp.name} took {elapsed:.3f} s in {hook} (budget {self.budget:g} s); "
                          "disabled for the rest of the run")
        return result

    def _disable(self, lp: LoadedPlugin, name: str, detail: str) -> None:
        if not lp.enabled:
            return
        lp.enabled = False
        lp.problem = detail
        self._routes = {}
        self.warn(detail)
        self._emit(None, Anomaly(name, detail, None, None, None))

    def _report(self, plugin, conn, what: str, detail: str, cmd: Command | None) -> None:
        name = f"plugin.{getattr(plugin, 'name', '?')}.{what}"
        if name not in CATALOGUE:
            register(name, Severity.WARNING, f"reported by plugin {getattr(plugin, 'name', '?')} (not declared)")
        anomaly = Anomaly(name, detail, cmd.direction if cmd else None, cmd.offset if cmd else None,
                          cmd.ts if cmd else None, cmd.trid if cmd else None)
        self._emit(conn, anomaly)

    def _emit(self, conn, anomaly: Anomaly) -> None:
        with self._lock:
            self.raised[anomaly.name] += 1
            if self._worker is not None and threading.current_thread() is self._worker:
                self._outbox.append((conn, anomaly))
                return
        self._deliver(conn, anomaly)

    def _deliver(self, conn, anomaly: Anomaly) -> None:
        if self.analysis is not None:
            self.analysis.anomaly(conn, anomaly)

    def _drain(self) -> None:
        if not self._outbox:
            return
        with self._lock:
            pending, self._outbox = self._outbox, []
        for conn, anomaly in pending:
            self._deliver(conn, anomaly)

    # -- Sink protocol ------------------------------------------------------

    def event(self, conn, event) -> None:
        kind = type(event)
        if kind is Command:
            routes = self._routes
            targets = routes.get(event.cmd)
            if targets is None:
                targets = routes[event.cmd] = self._targets("on_command", event.cmd)
            if not targets:
                return  # no plugin wants this code: not even queued
            item = ("on_command", conn, event)
        elif kind is Transaction:
            if not self._route("on_transaction"):
                return
            item = ("on_transaction", conn, event)
        else:
            return  # anomalies (ours included), skipped bytes, other layers' records
        self._dispatch(item)

    def _targets(self, hook: str, code: str | None = None) -> list:
        return [lp for lp in self.loaded if lp.enabled and hook in lp.hooks
                and (code is None or lp.commands is None or code in lp.commands)]

    def _route(self, hook: str, args: tuple = ()) -> list:
        """The enabled plugins that take this call (for on_command: that want its code)."""
        routes = self._routes
        key = args[1].cmd if hook == "on_command" else hook
        targets = routes.get(key)
        if targets is None:
            targets = routes[key] = self._targets(hook, key if hook == "on_command" else None)
        return targets

    def stream(self, conn) -> None:
        self._dispatch(("on_connection_end", conn))

    def close(self) -> None:
        if self._closed:
            return
        if self._queue is not None:
            # The end of the run may wait a bounded time for the worker to catch up.
            wait = max(self.budget * 4, 5.0)
            deadline = time.monotonic() + wait
            for item in (("on_finish",), None):
                try:
                    self._queue.put(item, timeout=max(deadline - time.monotonic(), 0.01))
                except queue.Full:
                    break
            self._worker.join(timeout=max(deadline - time.monotonic(), 0.01))
            stuck = self._current
            if self._worker.is_alive() and stuck is not None:
                self._disable(stuck, "analyzer.plugin.too_slow",
                              f"plugin {stuck.name} was still busy at the end of the run; disabled, its queued work dropped")
            self._queue = None
            self._drain()
        else:
            self._run(("on_finish",))
        self._closed = True

    def _dispatch(self, item: tuple) -> None:
        if self._queue is None:
            self._run(item)
            return
        try:
            self._queue.put_nowait(item)
        except queue.Full:
            self.dropped[item[0]] += 1
            if not self._backlog_reported:
                self._backlog_reported = True
                detail = (f"plugin observers fell {self._queue.maxsize} events behind; "
                          "events are dropped for plugins until they catch up")
                self.warn(detail)
                self._emit(None, Anomaly("analyzer.plugin.backlog", detail, None, None, None))
        self._drain()

    def _run(self, item: tuple) -> None:
        hook, *args = item
        for lp in self._route(hook, args):
            if lp.enabled:
                self._call(lp, hook, *args)

    def _serve(self) -> None:
        q = self._queue
        while True:
            item = q.get()
            if item is None:
                return
            hook, *args = item
            for lp in self._route(hook, args):
                if lp.enabled:
                    self._current = lp
                    self._call(lp, hook, *args)
            self._current = None

    # -- decoders and report contributions ----------------------------------

    def decode_payload(self, cmd: Command, conn=None) -> DecodedView | None:
        """The highest-priority view any enabled plugin gives for cmd's payload."""
        if cmd.payload is None:
            return None
        best = None
        for lp in self.loaded:
            if not lp.enabled or "decode" not in lp.hooks:
                continue
            view = self._call(lp, "decode", cmd, conn)
            if view is None:
                continue
            if not isinstance(view, DecodedView):
                self._disable(lp, "analyzer.plugin.failed",
                              f"plugin {lp.name} returned {type(view).__name__} from decode, not a DecodedView; disabled")
                continue
            if view.plugin is None:
                view.plugin = lp.name
            if best is None or view.priority > best.priority:
                best = view
        return best

    def terminal_sections(self) -> list:
        out = []
        for lp in self.loaded:
            if lp.enabled:
                out.extend(self._call(lp, "terminal_sections", default=None) or [])
        return out

    def html_sections(self) -> list[dict]:
        out = []
        for lp in self.loaded:
            if not lp.enabled:
                continue
            sections = self._call(lp, "html_sections", default=None) or []
            for sec in sections:
                if not (isinstance(sec, dict) and isinstance(sec.get("title"), str)
                        and isinstance(sec.get("columns"), list) and isinstance(sec.get("rows"), list)):
                    self._disable(lp, "analyzer.plugin.failed",
                                  f"plugin {lp.name} returned a malformed HTML section; disabled")
                    break
                out.append({"plugin": lp.name, **section(sec["title"], sec["columns"], sec["rows"])})
        return out

    def describe(self) -> list[dict]:
        """What is loaded, from where, its version and state (the `plugins` command)."""
        rows = [{"name": lp.name, "version": lp.version, "origin": lp.origin,
                 "provides": capabilities(lp.plugin),
                 "description": getattr(lp.plugin, "description", "") or "",
                 "state": "enabled" if lp.enabled else f"disabled: {lp.problem}"} for lp in self.loaded]
        rows += [{"name": None, "version": None, "origin": origin, "provides": [], "description": "",
                  "state": f"not loaded: {problem}"} for origin, problem in self.load_errors]
        return rows


# -- discovery ----------------------------------------------------------------


class PluginLoadError(Exception):
    pass


def _instances(obj, where: str) -> list:
    """Plugin instances from what an entry point or module provides."""
    if isinstance(obj, type):
        return [obj()]
    if hasattr(obj, "__file__") and hasattr(obj, "__name__") and not callable(obj):  # a module
        found = [v for v in vars(obj).values()
                 if isinstance(v, type) and issubclass(v, Plugin) and v is not Plugin
                 and v.__module__ == obj.__name__]
        if not found:
            raise PluginLoadError(f"{where} defines no Plugin subclass")
        return [cls() for cls in found]
    if callable(obj) and not any(callable(getattr(obj, h, None)) for h in HOOKS):
        return [obj()]  # a factory
    return [obj]


def discover(manager: PluginManager, group: str = GROUP) -> None:
    """Load every plugin registered in the entry-point group (failures are reported, not raised)."""
    from importlib.metadata import entry_points
    for ep in sorted(entry_points(group=group), key=lambda e: e.name):
        dist = getattr(ep, "dist", None)
        dist_label = f"{dist.metadata['Name']} {dist.version}" if dist is not None else "unknown distribution"
        origin = f"{dist_label}, entry point {ep.value}"
        try:
            plugins = _instances(ep.load(), ep.value)
        except Exception as exc:  # noqa: BLE001 - a broken third-party plugin must not stop the run
            manager.load_errors.append((origin, f"{type(exc).__name__}: {exc}"))
            manager.warn(f"plugin {ep.name} ({dist_label}) failed to load: {type(exc).__name__}: {exc}")
            continue
        for plugin in plugins:
            manager.add(plugin, origin, getattr(plugin, "version", None) or (dist.version if dist else None))


def load_explicit(manager: PluginManager, spec: str) -> None:
    """`--plugin MODULE_OR_FILE`: a .py file or directory path, or an importable module name."""
    path = Path(spec)
    try:
        if spec.endswith(".py") or path.exists():
            if path.is_dir():
                path = path / "__init__.py"
            if not path.is_file():
                raise PluginLoadError(f"{spec}: no such file")
            modname = f"msnp_analyzer_plugin_{re.sub(r'[^0-9A-Za-z_]', '_', path.stem)}"
            spec_obj = importlib.util.spec_from_file_location(modname, path)
            if spec_obj is None or spec_obj.loader is None:
                raise PluginLoadError(f"{spec}: cannot be imported")
            module = importlib.util.module_from_spec(spec_obj)
            sys.modules[modname] = module
            spec_obj.loader.exec_module(module)
            origin = f"file {path.resolve()}"
        else:
            module = importlib.import_module(spec)
            origin = f"module {spec}"
        plugins = _instances(module, spec)
    except PluginLoadError:
        raise
    except Exception as exc:  # noqa: BLE001 - reported as a usage error by the caller
        raise PluginLoadError(f"plugin {spec} failed to load: {type(exc).__name__}: {exc}") from None
    for plugin in plugins:
        manager.add(plugin, origin)


# -- command-line glue --------------------------------------------------------


def add_plugin_options(p) -> None:
    """`--plugin`, `--no-plugins`, `--plugin-budget` for every command that analyses traffic."""
    g = p.add_argument_group("plugins")
    g.add_argument("--plugin", action="append", default=[], metavar="MODULE_OR_FILE", dest="plugins",
                   help="load this plugin too: a module name or a .py file (repeatable)")
    g.add_argument("--no-plugins", action="store_true",
                   help=f"do not load the plugins installed in the entry-point group {GROUP} "
                        "(explicit --plugin ones still load)")
    g.add_argument("--plugin-budget", type=float, default=DEFAULT_BUDGET, metavar="SECONDS",
                   help=f"a plugin whose single call takes longer is disabled (default {DEFAULT_BUDGET:g}; 0: no limit)")


def load_plugins(args, analysis=None, threaded: bool = False, warn=None,
                 html_report: bool = True) -> PluginManager:
    """Build the run's PluginManager from the options, add it to `analysis` as its last sink.

    Verbose printers among the analysis's sinks get the manager's decoder, so
    `-v` shows decoded payloads. An explicit `--plugin` that cannot be loaded
    is a usage error (exit 2); a broken installed plugin is reported and skipped.
    `html_report=False` tells the plugins that no HTML sections will be asked for.
    """
    from analyzer.errors import UsageError
    manager = PluginManager(analysis, budget=getattr(args, "plugin_budget", DEFAULT_BUDGET),
                            threaded=threaded, warn=warn)
    if not getattr(args, "no_plugins", False):
        discover(manager)
    for spec in getattr(args, "plugins", None) or []:
        try:
            load_explicit(manager, spec)
        except PluginLoadError as exc:
            raise UsageError(str(exc)) from None
    if not html_report:
        for loaded in manager.loaded:
            try:
                loaded.plugin.html_report = False
            except AttributeError:
                pass  # a plugin that forbids attributes keeps what it keeps
    if analysis is not None:
        for sink in analysis.sinks:
            if hasattr(sink, "views"):
                sink.views = manager.decode_payload
            if hasattr(sink, "plugins"):  # the HTML timeline: decoded payloads and report sections
                sink.plugins = manager
        analysis.sinks.append(manager)
    return manager


__all__ = ["Plugin", "DecodedView", "PluginManager", "LoadedPlugin", "GROUP", "TERMINAL_ROWS", "section", "section_table",
           "discover", "load_explicit", "add_plugin_options", "load_plugins", "PluginLoadError", "capabilities"]
