"""The `PluginManager`: runs plugins in isolation (budget, failures, the threaded backlog);
a `Sink` of the analysis. See `analyzer.plugins` for the contract."""

from __future__ import annotations

import gc
import queue
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any, Callable

from analyzer.anomalies import CATALOGUE, Severity, register
from analyzer.msnp import Anomaly, Command, Transaction
from analyzer.msnp.mime import parse_mime
from analyzer.plugins.api import HOOKS, PLUGIN_NAME, DecodedView, Plugin, capabilities, section

DEFAULT_BUDGET = 1.0       # seconds per call before a plugin is disabled
DEFAULT_BACKLOG = 10000    # events queued for threaded observers before dropping


# -- the manager --------------------------------------------------------------


_EVERY_KIND = object()   # `_targets` without a MSG payload kind to filter by


class _ByKind(dict):
    """A MSG's (plugin, bound on_command) pairs by payload kind (`_calls`), when a plugin that
    takes MSG names the kinds it wants (`msg_kinds`). The kinds are a fixed set: bounded."""

    __slots__ = ()

    def of(self, manager: "PluginManager", cmd: Command) -> tuple:
        payload = cmd.payload   # the payload's kind (None: no payload), once per MSG of a capture
        kind = None if payload is None else parse_mime(payload).kind
        found = self.get(kind)
        if found is None:
            found = self[kind] = tuple((lp, lp.plugin.on_command)
                                       for lp in manager._targets("on_command", "MSG", kind))
        return found


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
    msg_kinds: frozenset | None = None  # the MSG payload kinds on_command wants (None: all)

    def __post_init__(self) -> None:
        # A hook inherited unchanged from the Plugin base class is a no-op: never call it.
        cls = type(self.plugin)
        self.hooks = frozenset(h for h in HOOKS if getattr(cls, h, None) is not None
                               and getattr(cls, h) is not getattr(Plugin, h, None))
        self.commands = _names(getattr(self.plugin, "commands", None), str.upper)
        self.msg_kinds = _names(getattr(self.plugin, "msg_kinds", None), str.lower)


def _names(wanted, case) -> frozenset | None:
    """A plugin's `commands` (codes, upper case) or `msg_kinds` (kinds, lower case) as a frozenset:
    one name or any collection of them; None (everything) for None or what is not a collection."""
    if wanted is None:
        return None
    if isinstance(wanted, str):
        wanted = [wanted]
    try:
        return frozenset(case(str(name)) for name in wanted)
    except TypeError:
        return None


def _warn_stderr(message: str) -> None:
    print(f"msnp-analyzer: {message}", file=sys.stderr)


_collector = {"since": None, "total": 0.0}


def _time_collections(phase: str, info: dict) -> None:
    if phase == "start":
        _collector["since"] = time.perf_counter()
    elif _collector["since"] is not None:
        _collector["total"] += time.perf_counter() - _collector["since"]
        _collector["since"] = None


def _collector_seconds() -> float:
    """Seconds (perf_counter) the garbage collector has run so far in this process."""
    since = _collector["since"]
    return _collector["total"] + (time.perf_counter() - since if since is not None else 0.0)


def _plugin_clock(perf_counter=time.perf_counter, collector=_collector) -> float:
    """`perf_counter()` less `_collector_seconds()`, in one reading: the difference of two
    readings is the time between them that was not the garbage collector's."""
    since = collector["since"]
    if since is not None:   # read during a collection: the clock stands still since it began
        return since - collector["total"]
    return perf_counter() - collector["total"]


gc.callbacks.append(_time_collections)


class PluginManager:
    """Runs plugins in isolation; a `Sink` for `Analysis` (add it last)."""

    def __init__(self, analysis=None, budget: float = DEFAULT_BUDGET, threaded: bool = False,
                 backlog: int = DEFAULT_BACKLOG, warn: Callable[[str], None] | None = None,
                 clock: Callable[[], float] = time.perf_counter,
                 collector_seconds: Callable[[], float] | None = None) -> None:
        self.analysis = analysis
        self.budget = budget
        self.warn = warn or _warn_stderr
        self.clock = clock
        # Time the garbage collector spent (on `clock`'s scale): not the plugin's. A full
        # collection of a busy capture's heap (thousands of connections open) can take a
        # second, and would otherwise disable whichever plugin it happened to interrupt.
        if collector_seconds is None:
            collector_seconds = _collector_seconds if clock is time.perf_counter else (lambda: 0.0)
        self.collector_seconds = collector_seconds
        # One reading of both: the time a plugin is charged is the difference of two readings.
        # `event_batch` reads it inline (a frame less per reading: a capture's every routed
        # command is timed): `(_tick() if since is None else since) - total` of `_gc`, which is
        # `_plugin_clock` for the default clock; for another, `_tick` reads both and `_gc` stays 0.
        if clock is time.perf_counter and collector_seconds is _collector_seconds:
            self._now = _plugin_clock
            self._tick, self._gc = time.perf_counter, _collector
        else:
            self._now = lambda: clock() - collector_seconds()
            self._tick, self._gc = self._now, {"since": None, "total": 0.0}
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
        # Who gets what: (hook,) (or, for on_command, the command's code) -> the enabled plugins
        # that take it; `_calls`: command code (or Transaction) -> ((plugin, its bound
        # hook), ...) of those. Both rebuilt (new dicts) whenever a plugin is added or disabled.
        self._routes: dict = {}
        self._calls: dict = {}
        self._observing = False   # an enabled plugin takes commands or transactions (see _rerouted)
        if threaded:
            self._queue = queue.Queue(maxsize=backlog)
            self._worker = threading.Thread(target=self._serve, name="msnp-plugins", daemon=True)
            self._worker.start()

    # -- loading ------------------------------------------------------------

    def add(self, plugin, origin: str, version: str | None = None) -> LoadedPlugin | None:
        name = getattr(plugin, "name", "") or type(plugin).__name__.lower()
        if not PLUGIN_NAME.match(name):
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
        self._rerouted()
        return loaded

    def _rerouted(self) -> None:
        """The plugins changed (one added or disabled): routes are worked out again."""
        self._routes, self._calls = {}, {}
        self._observing = any(lp.enabled and ("on_command" in lp.hooks or "on_transaction" in lp.hooks)
                              for lp in self.loaded)

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
        now = self._now
        start = now()
        try:
            result = method(*args)
        except Exception as exc:  # noqa: BLE001 - a plugin's failure must not stop the analysis
            self._failed(lp, exc, hook)
            return default
        elapsed = now() - start
        lp.calls += 1
        lp.seconds += elapsed
        if self.budget and elapsed > self.budget:
            self._too_slow(lp, elapsed, hook)
        return result

    def _failed(self, lp: LoadedPlugin, exc: Exception, hook: str) -> None:
        self._disable(lp, "analyzer.plugin.failed",
                      f"plugin {lp.name} raised {type(exc).__name__}: {exc} in {hook}; disabled for the rest of the run")

    def _too_slow(self, lp: LoadedPlugin, elapsed: float, hook: str) -> None:
        self._disable(lp, "analyzer.plugin.too_slow",
                      f"plugin {lp.name} took {elapsed:.3f} s in {hook} (budget {self.budget:g} s); "
                      "disabled for the rest of the run")

    def _disable(self, lp: LoadedPlugin, name: str, detail: str) -> None:
        if not lp.enabled:
            return
        lp.enabled = False
        lp.problem = detail
        self._rerouted()
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
            targets = self._command_calls(event)
            if not targets:
                return  # no plugin wants this code: not even queued
            if self._queue is None:
                self._call_each(targets, "on_command", conn, event)
                return
            item = ("on_command", conn, event)
        elif kind is Transaction:
            targets = self._calls.get(Transaction)
            if targets is None:
                targets = self._calls_for(Transaction, "on_transaction")
            if not targets:
                return
            if self._queue is None:
                self._call_each(targets, "on_transaction", conn, event)
                return
            item = ("on_transaction", conn, event)
        else:
            return  # anomalies (ours included), skipped bytes, other layers' records
        self._dispatch(item)

    def event_batch(self, conn, events: list) -> None:
        """The events of one feed (`Analysis` passes them together): each plugin takes its
        share in one timed call (one budget check per batch, not per command). The budget
        then bounds the batch: a batch is what one read of bytes held.

        The plugins of a batch are timed in a chain: the reading that ends one plugin's share
        starts the next one's (k plugins, k + 1 readings)."""
        if not self._observing:       # no plugin takes commands or transactions (--no-plugins)
            return
        if self._queue is not None:   # the threaded observers queue event by event
            for event in events:
                self.event(conn, event)
            return
        calls = self._calls
        routed = targets = None       # the one event that has plugins to call, and their calls
        for event in events:
            kind = type(event)
            if kind is Command:
                found = calls.get(event.cmd)
                if found is None:
                    found = self._calls_for(event.cmd, "on_command")
                if type(found) is _ByKind:
                    found = found.of(self, event)
            elif kind is Transaction:
                found = calls.get(Transaction)
                if found is None:
                    found = self._calls_for(Transaction, "on_transaction")
            else:
                continue
            if found:
                if routed is not None:
                    self._batch_of_several(conn, events)
                    return
                routed, targets = event, found
        if routed is None:
            return
        # The usual batch: one event (a command, perhaps with the transaction it ended) for plugins.
        # The clock is `_plugin_clock` read inline (see __init__).
        tick, gc_time, budget = self._tick, self._gc, self.budget
        start = None
        for lp, method in targets:
            if not lp.enabled:
                continue
            if start is None:
                since = gc_time["since"]
                start = (tick() if since is None else since) - gc_time["total"]
            try:
                method(conn, routed)
            except Exception as exc:  # noqa: BLE001 - a plugin's failure must not stop the analysis
                self._failed(lp, exc, "on_command" if type(routed) is Command else "on_transaction")
                start = None
                continue
            since = gc_time["since"]
            end = (tick() if since is None else since) - gc_time["total"]
            elapsed = end - start
            start = end
            lp.calls += 1
            lp.seconds += elapsed
            if budget and elapsed > budget:
                self._too_slow(lp, elapsed, "on_command" if type(routed) is Command else "on_transaction")
                start = None

    def _batch_of_several(self, conn, events: list) -> None:
        """`event_batch` for a batch with several events for plugins: each plugin (in the order
        the events first reach them) takes all of its share, timed as one."""
        calls = self._calls
        work: dict = {}               # id(plugin) -> (LoadedPlugin, [(hook, bound hook, event), ...])
        for event in events:
            kind = type(event)
            if kind is Command:
                hook = "on_command"
                targets = calls.get(event.cmd)
                if targets is None:
                    targets = self._calls_for(event.cmd, hook)
                if type(targets) is _ByKind:
                    targets = targets.of(self, event)
            elif kind is Transaction:
                hook = "on_transaction"
                targets = calls.get(Transaction)
                if targets is None:
                    targets = self._calls_for(Transaction, hook)
            else:
                continue
            for lp, method in targets:
                entry = work.get(id(lp))
                if entry is None:
                    entry = work[id(lp)] = (lp, [])
                entry[1].append((hook, method, event))
        now, budget = self._now, self.budget
        start = None
        for lp, items in work.values():
            if not lp.enabled:
                continue
            if start is None:
                start = now()
            done = 0
            hook = items[0][0]
            try:
                for hook, method, event in items:
                    method(conn, event)
                    done += 1
            except Exception as exc:  # noqa: BLE001 - a plugin's failure must not stop the analysis
                self._failed(lp, exc, hook)
                start = None
                continue
            end = now()
            elapsed = end - start
            start = end
            lp.calls += done
            lp.seconds += elapsed
            if budget and elapsed > budget:
                self._too_slow(lp, elapsed, hook)
                start = None

    def _calls_for(self, key, hook: str) -> tuple:
        """The (plugin, bound hook) pairs for a command code (hook on_command) or for
        on_transaction (key: the class Transaction, which no code off the wire can equal),
        remembered in `_calls` until the plugins change. For MSG, when a plugin that takes it
        names the payload kinds it wants, a `_ByKind` of such tuples instead."""
        calls = self._calls
        if hook == "on_command":
            found = self._targets(hook, key)
            if key == "MSG" and any(lp.msg_kinds is not None for lp in found):
                calls[key] = by_kind = _ByKind()
                return by_kind
        else:
            found = self._targets(hook)
        targets = calls[key] = tuple((lp, getattr(lp.plugin, hook)) for lp in found)
        return targets

    def _call_each(self, targets: tuple, hook: str, conn, event) -> None:
        """`_run` for one command or transaction on the synchronous path: its (plugin, bound
        hook) pairs already routed (`_calls`), no item tuple built."""
        call = self._call
        for lp, _ in targets:
            if lp.enabled:
                call(lp, hook, conn, event)

    def _targets(self, hook: str, code: str | None = None, kind=_EVERY_KIND) -> list:
        """The enabled plugins that take `hook` (for on_command: that want `code`, and for a
        MSG whose payload is of `kind` (None: no payload), that want that kind)."""
        return [lp for lp in self.loaded if lp.enabled and hook in lp.hooks
                and (code is None or lp.commands is None or code in lp.commands)
                and (kind is _EVERY_KIND or lp.msg_kinds is None or (kind is not None and kind in lp.msg_kinds))]

    def _command_calls(self, cmd: Command) -> tuple:
        """The (plugin, bound on_command) pairs that take `cmd`: the `_calls` route of its code,
        and of a MSG's payload kind when some plugin names kinds (`event_batch` reads the same
        routes inline)."""
        found = self._calls.get(cmd.cmd)
        if found is None:
            found = self._calls_for(cmd.cmd, "on_command")
        if type(found) is _ByKind:
            found = found.of(self, cmd)
        return found

    def _route(self, hook: str, args: tuple = ()) -> list:
        """The enabled plugins that take this call (for on_command: that want its command)."""
        if hook == "on_command":
            return [lp for lp, _ in self._command_calls(args[1])]
        routes = self._routes
        key = (hook,)   # a tuple: no code off the wire
        targets = routes.get(key)
        if targets is None:
            targets = routes[key] = self._targets(hook)
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
