"""The one place that builds a run: its options, its sinks in order, its plugins, its end.

Every sub-command that analyses traffic turns its argparse namespace into a
`RunOptions` (`RunOptions.from_args`, here and nowhere else) and builds a `Run`
from it. The layers below see the typed pieces (`Limits`, `PluginOptions`, a
`Redactor`, file names), never argparse.

A run's sinks, in the order every event reaches them:

0. what was exchanged: the `ContactBook` (with `--json` or an HTML report: its
   `contact` and `presence` records go to the JSON writer) and the objects'
   `Extractor` (the command's own, `extract`; else, for an HTML report, one
   that keeps no bytes); first, so they close before the timeline shows them,
1. the `Linker` (it only observes; present with `--json` or an HTML report),
2. the JSON Lines writer (`--json`), then the verbose printer (`-v`),
3. the `LinkWriter` (with `--json`: link, session and chat records as logins
   settle and at the end),
4. the HTML timeline (`--html`, or `export -o`; written at the end),
5. whatever the command adds with `Run.add` (the proxy's live view),
6. the `PluginManager` (`Run.load_plugins`), last.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

from analyzer.analysis.connection import Limits
from analyzer.analysis.linking import Linker, LinkWriter
from analyzer.analysis.redact import Redactor
from analyzer.analysis.run import Analysis
from analyzer.cli.options import LINK_WINDOW, exit_status
from analyzer.errors import UsageError
from analyzer.plugins import PluginLoadError, PluginManager, PluginOptions, load_plugins

SETTLE_AFTER = 1000  # ended connections held for linking before settled logins are written


@dataclass(frozen=True, slots=True)
class RunOptions:
    """What a run is asked for."""
    json: str | None = None          # JSON Lines to this file ('-': stdout)
    verbose: bool = False            # print every decoded command
    html: str | None = None          # the HTML timeline's file
    sources: tuple[str, ...] = ()    # the inputs, named in the HTML report
    link_window: float = LINK_WINDOW
    redact: bool = True
    fail_on: str = "error"
    limits: Limits = field(default_factory=Limits)
    plugins: PluginOptions = PluginOptions()
    record: str | None = None        # the proxy's pcapng recording (written by the proxy itself)
    quiet: bool = False              # no terminal report
    local_time: bool = False         # times of day in the local zone (default UTC)

    @classmethod
    def from_args(cls, args, *, html: str | None = None, sources=()) -> RunOptions:
        """From the options `cli.options.add_analysis_options` declared; `html` and `sources`
        differ per command (`--html` or `export -o`; capture files, a decoded file, none)."""
        return cls(json=args.json, verbose=args.verbose, html=html, sources=tuple(sources),
                   record=getattr(args, "record", None),
                   quiet=getattr(args, "quiet", False), local_time=getattr(args, "local_time", False),
                   link_window=args.link_window, redact=not args.no_redact, fail_on=args.fail_on,
                   limits=Limits(max_line=args.max_line, max_payload=args.max_payload,
                                 reply_timeout=args.reply_timeout, max_pending=args.max_pending),
                   plugins=plugin_options(args))


def plugin_options(args) -> PluginOptions:
    return PluginOptions(explicit=tuple(args.plugins), installed=not args.no_plugins, budget=args.plugin_budget)


def plugins_from(options: PluginOptions, analysis=None, **kwargs) -> PluginManager:
    """`load_plugins`, with a plugin named on the command line that cannot load as a usage error."""
    try:
        return load_plugins(options, analysis, **kwargs)
    except PluginLoadError as exc:
        raise UsageError(str(exc)) from None


class Run:
    """One run: `analysis` (feed it), its sinks, `plugins` once loaded, `files` to close.

    `flush`: the JSON writer flushes every line (live runs). Raises UsageError for
    an unwritable --json or --html path, before anything is opened.
    """

    def __init__(self, options: RunOptions, console, *, flush: bool = False, extractor=None) -> None:
        from analyzer.outputs.atomic import open_output, refuse_inputs
        from analyzer.outputs.jsonl import JsonLinesWriter
        from analyzer.outputs.terminal import VerbosePrinter
        refuse_inputs([options.json, options.html, options.record], options.sources)
        self.options = options
        self.console = console
        self.redactor = Redactor(enabled=options.redact)  # one key: masked values match across outputs
        self.files: list = []
        self.plugins: PluginManager | None = None
        self.timeline = None
        if options.html:
            path = Path(options.html)
            if path.is_dir() or not path.resolve().parent.is_dir():
                raise UsageError(f"{options.html}: cannot write there (not a file in an existing directory)")
        self.writer = None
        if options.json:
            if options.json == "-":
                out = sys.stdout
            else:
                # Renamed over options.json when the run ends well; a live run writes it as it goes.
                out = open_output(options.json, live=flush)
                self.files.append(out)
            self.writer = JsonLinesWriter(out, self.redactor, flush=flush)
        from analyzer.clock import Clock
        self.zone = Clock(local=options.local_time)  # one time convention for every view of the run
        self.printer = VerbosePrinter(console, self.redactor, zone=self.zone) if options.verbose else None
        self.linker = None
        if self.writer is not None or options.html:
            # Without a timeline (which shows every link at the end), settled logins are
            # written as they settle and forgotten: memory stays flat on long captures.
            self.linker = Linker(self.redactor, settle_after=None if options.html else SETTLE_AFTER,
                                 window=options.link_window)
        if options.html:
            from analyzer.outputs.html import HtmlTimeline
            self.timeline = HtmlTimeline(options.html, self.linker, self.redactor,
                                         sources=[Path(s).name for s in options.sources])
        sinks = [s for s in (self.linker, self.writer, self.printer) if s is not None]
        if self.writer is not None:
            sinks.append(LinkWriter(self.linker, [self.writer]))
        if self.timeline is not None:
            sinks.append(self.timeline)
        self.contacts, self.extractor = self._exchange(extractor)
        sinks[:0] = [s for s in (self.contacts, self.extractor) if s is not None]
        self.analysis = Analysis(sinks, options.limits, redactor=self.redactor)
        if self.extractor is not None:
            self.extractor.reporter = self.analysis.anomaly
        if self.linker is not None:
            self.linker.reporter = self.analysis.anomaly
        if self.contacts is not None:
            self.contacts.reporter = self.analysis.anomaly

    def _exchange(self, extractor):
        """The contact book and the objects' extractor this run needs (sink 0 above), and the
        timeline's sections that show them."""
        from analyzer.analysis.contacts import ContactBook, contacts_sections
        from analyzer.analysis.objects import Extractor
        from analyzer.outputs.objects import objects_section
        book = None
        if self.writer is not None or self.timeline is not None:
            writer = self.writer
            book = ContactBook(on_record=(lambda rec: writer.event(None, rec)) if writer is not None else None,
                               history=200 if self.timeline is not None else 0)
        if extractor is None and self.timeline is not None:
            extractor = Extractor(None)
        if self.timeline is not None:
            redactor = self.redactor
            self.timeline.extra_sections.append(lambda: contacts_sections(book))
            self.timeline.extra_sections.append(
                lambda: [objects_section(extractor.records, redactor, extractor.more)] if extractor.records else [])
        return book, extractor

    def add_printer(self) -> None:
        """The one-line-per-command printer, also without -v (live runs whose output is not a terminal)."""
        if self.printer is None:
            from analyzer.outputs.terminal import VerbosePrinter
            self.printer = VerbosePrinter(self.console, self.redactor, zone=self.zone)
            self.add(self.printer)
            if self.plugins is not None:
                self.printer.views = self.plugins.decode_payload

    def add(self, sink) -> None:
        """A sink of the command's own (before the plugins)."""
        sinks = self.analysis.sinks
        sinks.insert(len(sinks) - (self.plugins is not None), sink)

    def load_plugins(self, *, threaded: bool = False, warn=None, html_report: bool = True) -> PluginManager:
        """Load the plugins, give their decoder to the verbose printer and the timeline, and add
        the manager as the last sink. `threaded`: observers run on a worker thread (live runs)."""
        manager = plugins_from(self.options.plugins, self.analysis, threaded=threaded, warn=warn,
                               html_report=html_report)
        if self.printer is not None:
            self.printer.views = manager.decode_payload
        if self.timeline is not None:
            self.timeline.plugins = manager
        self.analysis.sinks.append(manager)
        self.plugins = manager
        return manager

    def close(self) -> None:
        """Close the files the run opened (idempotent). Call it in a `finally`: an output
        closed while an exception propagates is discarded (see outputs/atomic.py)."""
        files, self.files = self.files, []
        for f in files:
            try:
                f.close()
            except OSError:
                pass

    def report(self, extra=()) -> int:
        """The terminal report (plugins' sections, then `extra`) and the exit status."""
        from analyzer.outputs.terminal import render_report
        if self.options.quiet:
            return exit_status(self.analysis, self.options.fail_on)
        sections = self.plugins.terminal_sections() if self.plugins is not None else []
        render_report(self.analysis, self.console, extra=[*sections, *extra])
        return exit_status(self.analysis, self.options.fail_on)


__all__ = ["RunOptions", "Run", "plugin_options", "plugins_from", "SETTLE_AFTER"]
