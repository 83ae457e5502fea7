"""Finding plugins: the entry-point group, an explicit module or file, and the one function
that builds a run's `PluginManager` from `PluginOptions`."""

from __future__ import annotations

import importlib
import importlib.util
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from analyzer.plugins.api import HOOKS, Plugin
from analyzer.plugins.manager import DEFAULT_BUDGET, PluginManager

GROUP = "msnp_analyzer.plugins"


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


@dataclass(frozen=True, slots=True)
class PluginOptions:
    """Which plugins a run loads (built from `--plugin`, `--no-plugins`, `--plugin-budget` by the CLI)."""
    explicit: tuple[str, ...] = ()   # module names or .py paths, loaded after discovery
    installed: bool = True           # discover the entry-point group
    budget: float = DEFAULT_BUDGET   # seconds per call before a plugin is disabled (0: no limit)


def load_plugins(options: PluginOptions = PluginOptions(), analysis=None, *, threaded: bool = False,
                 warn: Callable[[str], None] | None = None, html_report: bool = True) -> PluginManager:
    """Build a run's PluginManager: installed plugins (unless `options.installed` is false), then
    the explicit ones. An explicit plugin that cannot be loaded raises PluginLoadError; a broken
    installed plugin is reported and skipped. `html_report=False` tells the plugins that no HTML
    sections will be asked for. The caller adds the manager to its analysis's sinks."""
    manager = PluginManager(analysis, budget=options.budget, threaded=threaded, warn=warn)
    if options.installed:
        discover(manager)
    for spec in options.explicit:
        load_explicit(manager, spec)
    redactor = getattr(analysis, "redactor", None)
    for loaded in manager.loaded:
        try:
            if not html_report:
                loaded.plugin.html_report = False
            if redactor is not None:
                loaded.plugin.redactor = redactor
        except AttributeError:
            pass  # a plugin that forbids attributes keeps what it keeps
    return manager
