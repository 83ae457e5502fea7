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

from analyzer.plugins.api import HOOKS, TERMINAL_ROWS, DecodedView, Plugin, capabilities, section, section_table
from analyzer.plugins.discovery import (GROUP, PluginLoadError, PluginOptions, discover, load_explicit,
                                        load_plugins)
from analyzer.plugins.manager import DEFAULT_BACKLOG, DEFAULT_BUDGET, LoadedPlugin, PluginManager

__all__ = ["Plugin", "DecodedView", "PluginManager", "LoadedPlugin", "GROUP", "TERMINAL_ROWS", "section",
           "section_table", "discover", "load_explicit", "PluginOptions", "load_plugins", "PluginLoadError",
           "capabilities", "HOOKS", "DEFAULT_BUDGET", "DEFAULT_BACKLOG"]
