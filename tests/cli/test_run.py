"""cli/run.py: one place builds a run from a typed options object, in a documented sink order."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from analyzer.analysis.contacts import ContactBook
from analyzer.analysis.linking import Linker, LinkWriter
from analyzer.analysis.objects import Extractor
from analyzer.cli.main import build_parser
from analyzer.cli.run import Run, RunOptions
from analyzer.errors import UsageError
from analyzer.outputs.html import HtmlTimeline
from analyzer.outputs.jsonl import JsonLinesWriter
from analyzer.outputs.terminal import VerbosePrinter
from analyzer.plugins import PluginManager, PluginOptions


def console() -> Console:
    return Console(file=io.StringIO(), width=120)


def test_sinks_come_in_the_documented_order_and_plugins_are_wired_explicitly(tmp_path):
    args = build_parser().parse_args(["decode", "x.msnp", "--json", str(tmp_path / "o.jsonl"), "-v",
                                      "--html", str(tmp_path / "t.html"), "--max-line", "4096"])
    options = RunOptions.from_args(args, html=args.html, sources=list(args.files))
    assert options.limits.max_line == 4096 and options.sources == ("x.msnp",) and options.redact
    run = Run(options, console())
    try:
        extra = object.__new__(Linker)  # any object: a sink of the command's own
        run.add(extra)
        manager = run.load_plugins()
        later = object.__new__(Linker)
        run.add(later)                  # added after the plugins: still before them
        kinds = [type(s) for s in run.analysis.sinks]
        assert kinds == [ContactBook, Extractor, Linker, JsonLinesWriter, VerbosePrinter, LinkWriter, HtmlTimeline,
                         Linker, Linker, PluginManager]
        assert run.analysis.sinks[2] is run.linker and run.timeline.linker is run.linker
        assert run.analysis.sinks[-3:] == [extra, later, manager]
        assert run.printer.views == manager.decode_payload and run.timeline.plugins is manager
        assert run.analysis.redactor is run.redactor is run.writer.redactor
    finally:
        run.close()


def test_without_outputs_there_is_no_linker_and_no_file():
    run = Run(RunOptions(plugins=PluginOptions(installed=False)), console())
    assert run.analysis.sinks == [] and run.linker is None and run.files == []
    run.load_plugins()
    assert [type(s) for s in run.analysis.sinks] == [PluginManager] and run.plugins.loaded == []


def test_an_explicit_plugin_that_cannot_load_is_a_usage_error():
    with pytest.raises(UsageError, match="no_such_plugin_module"):
        Run(RunOptions(plugins=PluginOptions(explicit=("no_such_plugin_module",))), console()).load_plugins()


def test_an_unwritable_html_path_fails_before_any_file_is_opened(tmp_path):
    json_path = tmp_path / "o.jsonl"
    with pytest.raises(UsageError, match="cannot write there"):
        Run(RunOptions(json=str(json_path), html=str(tmp_path / "missing" / "t.html")), console())
    assert not json_path.exists() and list(tmp_path.iterdir()) == []
