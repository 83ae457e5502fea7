"""The plugin interface, discovery and isolation (analyzer/plugins.py)."""

import io
import json
import threading
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rich.console import Console

from analyzer.analysis.run import Analysis
from analyzer.anomalies import CATALOGUE
from analyzer.cli.main import main
from analyzer.msnp import C2S, Command
from analyzer.plugins import (DecodedView, Plugin, PluginManager, capabilities, discover, load_explicit,
                              section)
from analyzer.msnp.transcript import parse

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "captures" / "msnp8_switchboard_chat.msnp"
FIRST_PARTY = {"mime", "p2p", "challenge", "chat"}


def run_sample(plugins, **kw) -> tuple[Analysis, PluginManager, list[str]]:
    warnings = []
    analysis = Analysis([])
    manager = PluginManager(analysis, warn=warnings.append, **kw)
    for p in plugins:
        manager.add(p, "test")
    analysis.sinks.append(manager)
    conn = analysis.open(conn_id="1")
    for chunk in parse(SAMPLE.read_bytes()):
        analysis.feed(conn, chunk.direction, chunk.data, chunk.ts)
    analysis.finish()
    return analysis, manager, warnings


class Broken(Plugin):
    name = "broken"

    def decode(self, cmd, conn):
        raise RuntimeError("decoder bug")

    def on_command(self, conn, cmd):
        raise ZeroDivisionError("observer bug")

    def on_transaction(self, conn, t):
        raise ZeroDivisionError("observer bug")

    def html_sections(self):
        raise ValueError("report bug")


class Slow(Plugin):
    name = "slow"

    def __init__(self):
        self.calls = 0

    def on_command(self, conn, cmd):
        self.calls += 1
        time.sleep(0.1)  # the behaviour under test: a call longer than the 0.02 s budget


def first_party():
    from msnp_analyzer_plugins.chat import ChatPlugin
    from msnp_analyzer_plugins.challenge import ChallengePlugin
    from msnp_analyzer_plugins.mime import MimePlugin
    from msnp_analyzer_plugins.p2p import P2PPlugin
    return [MimePlugin(), P2PPlugin(), ChallengePlugin(), ChatPlugin()]


def test_first_party_plugins_load_through_the_entry_point_group():
    manager = PluginManager(warn=lambda m: None)
    discover(manager)
    loaded = {lp.name: lp for lp in manager.loaded}
    assert FIRST_PARTY <= set(loaded)
    assert "msnp-analyzer" in loaded["mime"].origin and "msnp_analyzer_plugins.mime:MimePlugin" in loaded["mime"].origin
    assert loaded["chat"].version == "1.0"
    assert "plugin.challenge.wrong_answer" in CATALOGUE


def test_plugins_command_lists_name_origin_version(capsys):
    assert main(["plugins", "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    by_name = {r["name"]: r for r in rows}
    assert FIRST_PARTY <= set(by_name)
    assert by_name["p2p"]["version"] == "2.0"
    assert "decoder" in by_name["p2p"]["provides"] and by_name["p2p"]["state"] == "enabled"


def test_no_plugins_and_explicit_file(tmp_path, capsys):
    f = tmp_path / "myplug.py"
    f.write_text("from analyzer.plugins import Plugin\nclass Mine(Plugin):\n    name = 'mine'\n    version = '0.7'\n"
                 "    def on_command(self, conn, cmd):\n        pass\n")
    assert main(["plugins", "--json", "--no-plugins", "--plugin", str(f)]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(r["name"], r["version"]) for r in rows] == [("mine", "0.7")]
    assert rows[0]["origin"] == f"file {f.resolve()}"
    assert rows[0]["provides"] == ["observer"]


def test_explicit_module_and_bad_plugin_is_a_usage_error(capsys):
    assert main(["plugins", "--json", "--no-plugins", "--plugin", "msnp_analyzer_plugins.challenge"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["name"] for r in rows] == ["challenge"] and rows[0]["origin"] == "module msnp_analyzer_plugins.challenge"
    assert main(["decode", str(SAMPLE), "--plugin", "no_such_module_xyz"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no_such_module_xyz" in err and "Traceback" not in err


def test_broken_and_slow_plugins_are_reported_once_and_others_unchanged():
    clean, clean_mgr, clean_warn = run_sample(first_party())
    assert clean_warn == []
    slow = Slow()
    analysis, manager, warnings = run_sample([Broken(), slow] + first_party(), budget=0.02)
    # each reported once, by name, and disabled
    assert len([w for w in warnings if "plugin broken" in w]) == 1
    assert len([w for w in warnings if "plugin slow" in w]) == 1
    assert analysis.capture_anomalies["analyzer.plugin.failed"] == 1
    assert analysis.capture_anomalies["analyzer.plugin.too_slow"] == 1
    assert slow.calls == 1
    assert [lp.enabled for lp in manager.loaded[:2]] == [False, False]
    # the others' results are unchanged
    assert manager.get("mime").kinds == clean_mgr.get("mime").kinds
    lines = lambda m: [(l.ts, l.sender, l.text) for sb in m.get("chat").transcripts() for l in sb.lines]
    assert lines(manager) == lines(clean_mgr) and len(lines(manager)) == 3
    assert analysis.totals()["commands"] == clean.totals()["commands"]
    cmd = Command(C2S, "MSG", 4, [b"4", b"N", b"5"], b"MSG 4 N 5\r\n",
                  b"MIME-Version: 1.0\r\nContent-Type: text/plain\r\n\r\nhi", 5, 0, None)
    assert manager.decode_payload(cmd).plugin == "mime"
    names = [s["title"] for s in manager.html_sections()]
    assert names == [s["title"] for s in clean_mgr.html_sections()]


def test_broken_plugin_in_decode_cli_run_completes(tmp_path, capsys):
    f = tmp_path / "broken_plugin.py"
    f.write_text("from analyzer.plugins import Plugin\nclass Bad(Plugin):\n    name = 'bad'\n"
                 "    def on_command(self, conn, cmd):\n        raise KeyError('boom')\n")
    out = tmp_path / "out.jsonl"
    rc = main(["decode", str(SAMPLE), "--plugin", str(f), "--json", str(out)])
    assert rc == 0  # a plugin failure is a warning, not an error of the capture
    err = capsys.readouterr().err
    assert err.count("plugin bad raised KeyError") == 1
    recs = [json.loads(l) for l in out.read_text().splitlines()]
    assert sum(1 for r in recs if r["kind"] == "command") == 13
    assert [r["name"] for r in recs if r["kind"] == "anomaly"] == ["analyzer.plugin.failed"]


class Counter_(Plugin):
    name = "counter"

    def __init__(self):
        self.commands = 0

    def on_command(self, conn, cmd):
        self.commands += 1


class Stuck(Plugin):
    name = "stuck"

    def __init__(self):
        self.release = threading.Event()
        self.entered = threading.Event()

    def on_command(self, conn, cmd):
        self.entered.set()
        self.release.wait(10)


def test_threaded_observers_never_block_the_caller():
    stuck, counter = Stuck(), Counter_()
    warnings = []
    analysis = Analysis([])
    manager = PluginManager(analysis, threaded=True, backlog=4, budget=0, warn=warnings.append)
    manager.add(stuck, "test")
    manager.add(counter, "test")
    analysis.sinks.append(manager)
    conn = analysis.open(conn_id="1")
    assert stuck.entered.wait(0) is False
    for i in range(50):  # the forwarding path: returns although the plugin is stuck
        analysis.feed(conn, C2S, b"PNG\r\n", float(i))
    assert stuck.entered.wait(10)
    assert counter.commands < 50 and manager.dropped["on_command"] > 0
    stuck.release.set()
    analysis.finish()
    assert [w for w in warnings if "fell" in w] and len(warnings) == 1
    assert analysis.capture_anomalies["analyzer.plugin.backlog"] == 1
    assert counter.commands == 50 - manager.dropped["on_command"]


class Reporter(Plugin):
    name = "reporter"
    anomalies = {"seen_out": ("error", "OUT seen")}

    def on_command(self, conn, cmd):
        if cmd.cmd == "OUT":
            self.report(conn, "seen_out", "bye", cmd)


def test_plugin_anomalies_are_catalogued_counted_and_exported(tmp_path, capsys):
    analysis, manager, _ = run_sample([Reporter()])
    assert CATALOGUE["plugin.reporter.seen_out"].summary == "OUT seen"
    assert analysis.connections["1"].anomalies["plugin.reporter.seen_out"] == 1
    assert str(analysis.worst_severity()) == "error"


def test_threaded_plugin_anomalies_are_delivered_on_the_callers_thread():
    analysis, manager, _ = run_sample([Reporter()], threaded=True)
    assert analysis.connections["1"].anomalies["plugin.reporter.seen_out"] == 1


class Loud(Plugin):
    name = "loud"

    def decode(self, cmd, conn):
        return DecodedView("loud", priority=50)


def test_best_priority_decoder_wins():
    from msnp_analyzer_plugins.mime import MimePlugin
    from msnp_analyzer_plugins.p2p import P2PPlugin
    manager = PluginManager()
    manager.add(MimePlugin(), "t")
    manager.add(P2PPlugin(), "t")
    payload = (b"MIME-Version: 1.0\r\nContent-Type: application/x-msnmsgrp2p\r\nP2P-Dest: bob@example.com\r\n\r\n"
               + bytes(48) + bytes(4))
    cmd = Command(C2S, "MSG", 5, [b"5", b"D", str(len(payload)).encode()], b"", payload, len(payload), 0, None)
    assert manager.decode_payload(cmd).plugin == "p2p"
    manager.add(Loud(), "t")
    assert manager.decode_payload(cmd).title == "loud"
    no_payload = Command(C2S, "PNG", None, [], b"PNG\r\n", None, None, 0, None)
    assert manager.decode_payload(no_payload) is None


def test_html_sections_are_plain_strings_and_capabilities():
    analysis, manager, _ = run_sample(first_party())
    sections = manager.html_sections()
    assert {s["plugin"] for s in sections} == {"mime", "chat"}
    for s in sections:
        assert all(isinstance(c, str) for row in s["rows"] for c in row)
    assert section("t", ["a"], [[1, None]])["rows"] == [["1", ""]]
    assert capabilities(Reporter()) == ["observer"] and capabilities(Loud()) == ["decoder"]


def test_invalid_and_duplicate_names_are_not_loaded():
    warnings = []
    manager = PluginManager(warn=warnings.append)

    class Bad(Plugin):
        name = "Bad Name"
    assert manager.add(Bad(), "t") is None
    assert manager.add(Reporter(), "t") is not None
    assert manager.add(Reporter(), "t2") is None
    assert len(warnings) == 2 and [lp.name for lp in manager.loaded] == ["reporter"]


def test_verbose_decode_shows_decoded_payloads(capsys):
    assert main(["decode", str(SAMPLE), "-v"]) == 0
    out = capsys.readouterr().out
    assert "MSG text/plain: text  [mime]" in out and "| Hello Bob, are you there?" in out
    assert "font: Arial" in out
    assert main(["decode", str(SAMPLE), "-v", "--no-plugins"]) == 0
    assert "[mime]" not in capsys.readouterr().out


def test_readme_example_plugin_runs_and_anomaly_names_are_listed(tmp_path, capsys):
    readme = (ROOT / "README.md").read_text()
    code = readme.split("## Plugins", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]
    f = tmp_path / "msnp_pings.py"
    f.write_text(code)
    assert main(["decode", str(SAMPLE), "--no-plugins", "--plugin", str(f)]) == 0
    assert "Keep-alives" in capsys.readouterr().out
    assert main(["anomalies", "--json", "--no-plugins", "--plugin", str(f)]) == 0
    names = [json.loads(l)["name"] for l in capsys.readouterr().out.splitlines()]
    assert "plugin.pings.slow_qng" in names and "analyzer.plugin.failed" in names
    assert main(["anomalies", "--json"]) == 0
    assert '"plugin.challenge.wrong_answer"' in capsys.readouterr().out


class Recorder(Plugin):
    def __init__(self, name, commands=None):
        self.name = name
        if commands is not None:
            self.commands = commands
        self.seen: list[str] = []
        self.transactions = 0

    def on_command(self, conn, cmd):
        self.seen.append(cmd.cmd)

    def on_transaction(self, conn, t):
        self.transactions += 1


@pytest.mark.parametrize("threaded", [False, True])
def test_plugins_get_only_the_commands_they_declare(threaded):
    every = Recorder("every")
    msg_only = Recorder("msgonly", frozenset({"MSG"}))
    lower = Recorder("lower", ["msg", "usr"])  # any collection of codes, any case
    analysis, manager, _ = run_sample([every, msg_only, lower], threaded=threaded)
    codes = set(every.seen)
    assert {"MSG", "USR"} <= codes and len(codes) > 2  # the sample has more than these
    assert msg_only.seen == [c for c in every.seen if c == "MSG"] and msg_only.seen
    assert lower.seen == [c for c in every.seen if c in ("MSG", "USR")]
    # Declaring commands narrows on_command only; transactions still reach everyone.
    assert every.transactions == msg_only.transactions == sum(analysis.totals()["outcomes"].values()) > 0


def test_a_disabled_plugin_drops_out_of_the_routes():
    class FailsOnThird(Recorder):
        def on_command(self, conn, cmd):
            super().on_command(conn, cmd)
            if len(self.seen) == 3:
                raise RuntimeError("third")

    failing = FailsOnThird("failing", {"MSG"})
    other = Recorder("other", {"MSG"})
    run_sample([failing, other])
    assert len(failing.seen) == 3  # no call after it was disabled
    assert len(other.seen) > 3



def test_time_the_garbage_collector_took_is_not_the_plugins():
    # A full collection of a busy capture's heap can take a second inside any plugin call:
    # the budget counts the call's time without it (a fake clock and collector here).
    from analyzer.msnp import C2S, Command
    from analyzer.plugins.manager import PluginManager
    now = {"clock": 0.0, "gc": 0.0}

    class Observer:
        name = "observer"
        commands = None

        def __init__(self, gc_seconds):
            self.gc_seconds = gc_seconds

        def on_command(self, conn, cmd):
            now["clock"] += 2.0
            now["gc"] += self.gc_seconds

    results = []
    for gc_seconds in (1.5, 0.0):
        manager = PluginManager(budget=1.0, warn=lambda message: None, clock=lambda: now["clock"],
                                collector_seconds=lambda: now["gc"])
        lp = manager.add(Observer(gc_seconds), "test")
        manager.event(None, Command(C2S, "PNG", None, [], b"PNG\r\n", None, None, 0, 1.0))
        results.append(lp.enabled)
    assert results == [True, False]   # 2 s with 1.5 s of collection: 0.5 s, within budget


def test_a_feed_s_events_reach_each_plugin_as_one_timed_batch():
    # Analysis hands a feed's events to the manager together: the plugins of a batch timed in
    # a chain (not per command: the reading that ends one plugin's share starts the next
    # one's), every event delivered, calls counted one by one, and a plugin that raises
    # mid-batch is disabled there and gets no more of it.
    readings = []

    def clock():
        readings.append(1)
        return 0.0

    class Recorder(Plugin):
        def __init__(self, name, fail_at=None):
            self.name, self.fail_at, self.seen = name, fail_at, []

        def on_command(self, conn, cmd):
            self.seen.append(cmd.cmd)
            if len(self.seen) == self.fail_at:
                raise ValueError("boom")

    analysis = Analysis([])
    manager = PluginManager(analysis, warn=lambda message: None, clock=clock, collector_seconds=lambda: 0.0)
    whole, failing = Recorder("whole"), Recorder("failing", fail_at=2)
    for p in (whole, failing):
        manager.add(p, "test")
    analysis.sinks.append(manager)
    conn = analysis.open(conn_id="1")
    analysis.feed(conn, C2S, b"PNG\r\nCHG 1 NLN 0\r\nUUX 2 0\r\nOUT\r\n", 1.0)
    assert whole.seen == ["PNG", "CHG", "UUX", "OUT"]
    assert failing.seen == ["PNG", "CHG"]                 # disabled at the second, not called again
    assert len(readings) == 2                             # start and end of whole's batch (failing's start)
    assert manager.loaded[0].calls == 4 and not manager.loaded[1].enabled
    assert "analyzer.plugin.failed" in manager.raised


def test_each_plugin_of_a_batch_is_charged_its_own_time():
    # The plugins of a batch are timed in a chain (one reading ends one plugin's share and
    # starts the next one's): each is charged what it took, less the collector's time, and
    # only the one past the budget is disabled (a fake clock and collector).
    now = {"clock": 0.0, "gc": 0.0}

    class Taking(Plugin):
        commands = {"MSG"}

        def __init__(self, name, seconds, gc_seconds=0.0):
            self.name, self.seconds, self.gc_seconds, self.seen = name, seconds, gc_seconds, 0

        def on_command(self, conn, cmd):
            self.seen += 1
            now["clock"] += self.seconds
            now["gc"] += self.gc_seconds

    analysis = Analysis([])
    manager = PluginManager(analysis, budget=1.0, warn=lambda message: None, clock=lambda: now["clock"],
                            collector_seconds=lambda: now["gc"])
    plugins = [Taking("quick", 0.25), Taking("slow", 2.0), Taking("collected", 3.0, gc_seconds=2.5),
               Taking("after", 0.5)]
    for p in plugins:
        manager.add(p, "test")
    analysis.sinks.append(manager)
    conn = analysis.open(conn_id="1")
    analysis.feed(conn, C2S, b"MSG 1 N 2\r\nhi", 1.0)
    analysis.feed(conn, C2S, b"MSG 2 N 2\r\nhi", 2.0)
    quick, slow, collected, after = manager.loaded
    assert [p.seen for p in plugins] == [2, 1, 2, 2]
    assert (quick.seconds, collected.seconds, after.seconds) == (0.5, 1.0, 1.0)
    assert [lp.enabled for lp in manager.loaded] == [True, False, True, True]
    assert slow.seconds == 2.0 and "took 2.000 s in on_command" in slow.problem


def test_the_plugin_clock_leaves_out_the_collector_s_time():
    # One reading of perf_counter less the collector's seconds; read during a collection, it
    # stands at the collection's start.
    from analyzer.plugins.manager import _plugin_clock
    assert _plugin_clock(lambda: 10.0, {"since": None, "total": 1.5}) == 8.5
    assert _plugin_clock(lambda: 10.0, {"since": 9.0, "total": 1.5}) == 7.5


def test_a_batch_reads_the_plugin_clock_inline_as_the_plugin_clock_reads():
    # event_batch reads `_plugin_clock`'s formula inline for the default clock: each plugin
    # is charged the difference of two such readings, a collection's time left out, and a
    # reading taken during a collection stands at its start.
    from analyzer.plugins.manager import _plugin_clock
    perf = {"t": 100.0}
    collector = {"since": None, "total": 0.0}
    readings = []

    def tick():
        return perf["t"]

    class Step(Plugin):
        commands = {"MSG"}

        def __init__(self, name, seconds, collect=0.0, inside=False):
            self.name, self.seconds, self.collect, self.inside = name, seconds, collect, inside

        def on_command(self, conn, cmd):
            perf["t"] += self.seconds
            collector["total"] += self.collect
            # a reading taken while a collection runs (it began `inside` 0.5 s ago)
            collector["since"] = perf["t"] - 0.5 if self.inside else None
            readings.append(_plugin_clock(tick, collector))

    analysis = Analysis([])
    manager = PluginManager(analysis, budget=1.0, warn=lambda message: None)
    manager._tick, manager._gc = tick, collector   # the default clock's inline reading, on a fake clock
    steps = [Step("plain", 0.25), Step("collected", 3.0, collect=2.5), Step("during", 0.75, inside=True),
             Step("after", 0.5)]
    for p in steps:
        manager.add(p, "test")
    analysis.sinks.append(manager)
    start = _plugin_clock(tick, collector)
    analysis.feed(analysis.open(conn_id="1"), C2S, b"MSG 1 N 2\r\nhi", 1.0)
    charged = [lp.seconds for lp in manager.loaded]
    assert charged == [b - a for a, b in zip([start] + readings, readings)]
    assert charged == [0.25, 0.5, 0.25, 1.0]
    assert all(lp.enabled for lp in manager.loaded)


def test_a_command_code_named_like_a_hook_reaches_only_on_command():
    # Codes come off the wire: one spelled as a hook's name must not reach that hook's plugins.
    from analyzer.msnp.pairing import Transaction

    class Both(Plugin):
        name = "both"

        def __init__(self):
            self.seen = []

        def on_command(self, conn, cmd):
            self.seen.append(("command", cmd.cmd))

        def on_transaction(self, conn, txn):
            self.seen.append(("transaction", txn.cmd))

        def on_finish(self):
            self.seen.append(("finish", None))

    class Commands(Plugin):
        name = "commands"
        commands = {"PNG"}

        def __init__(self):
            self.finished = False

        def on_command(self, conn, cmd):
            raise AssertionError(f"not its code: {cmd.cmd}")

        def on_finish(self):
            self.finished = True

    analysis = Analysis([])
    manager = PluginManager(analysis, warn=lambda message: None)
    both, commands = Both(), Commands()
    manager.add(both, "test")
    manager.add(commands, "test")
    png = Command(C2S, "PNG", None, [], b"PNG\r\n", None, None, 0, 1.0)
    manager.event_batch(None, [Transaction(png, 1)])
    for code in ("on_transaction", "on_finish", "on_connection_end"):
        odd = Command(C2S, code, None, [], b"", None, None, 0, 1.0)
        manager.event_batch(None, [odd])
        manager.event(None, odd)
    manager.close()
    assert both.seen == [("transaction", "PNG")] + [("command", c) for c in ("on_transaction", "on_transaction",
                         "on_finish", "on_finish", "on_connection_end", "on_connection_end")] + [("finish", None)]
    assert all(lp.enabled for lp in manager.loaded) and commands.finished


def test_a_manager_whose_plugins_observe_nothing_skips_batches_until_one_does():
    # --no-plugins, or only decoders: a feed's batch costs one test; a plugin added later
    # (or the last observer disabled) changes that at once.
    class Decoder(Plugin):
        name = "decoder"

        def decode(self, cmd, conn):
            return None

    class Observer(Plugin):
        name = "observer"

        def __init__(self):
            self.seen = []

        def on_command(self, conn, cmd):
            self.seen.append(cmd.cmd)
            if cmd.cmd == "OUT":
                raise ValueError("done")

    analysis = Analysis([])
    manager = PluginManager(analysis, warn=lambda message: None)
    analysis.sinks.append(manager)
    manager.add(Decoder(), "test")
    conn = analysis.open(conn_id="1")
    analysis.feed(conn, C2S, b"PNG\r\n", 1.0)
    assert not manager._observing
    observer = Observer()
    manager.add(observer, "test")
    analysis.feed(conn, C2S, b"CHG 1 NLN 0\r\nOUT\r\n", 2.0)
    assert observer.seen == ["CHG", "OUT"] and not manager._observing   # disabled: nothing observes
    analysis.feed(conn, C2S, b"PNG\r\n", 3.0)
    assert observer.seen == ["CHG", "OUT"]


def _msg(body: bytes, content_type: bytes, trid: int) -> bytes:
    payload = b"MIME-Version: 1.0\r\nContent-Type: " + content_type + b"\r\n\r\n" + body
    return b"MSG %d N %d\r\n" % (trid, len(payload)) + payload


class KindRecorder(Plugin):
    def __init__(self, name, kinds=None):
        self.name = name
        if kinds is not None:
            self.msg_kinds = kinds
        self.seen: list[tuple[str, object]] = []

    def on_command(self, conn, cmd):
        from analyzer.msnp.mime import parse_mime
        self.seen.append((cmd.cmd, None if cmd.payload is None else parse_mime(cmd.payload).kind))


@pytest.mark.parametrize("threaded", [False, True])
@pytest.mark.parametrize("together", [False, True])
def test_plugins_get_only_the_msg_kinds_they_declare(threaded, together):
    # A plugin naming MSG payload kinds gets the MSGs of those kinds and every other command
    # it takes, in order, on each path (a feed of one command, a feed of several, the threaded
    # observers); never a MSG without a payload. The others are not narrowed by it.
    lines = [_msg(b"hi", b"text/plain; charset=UTF-8", 1),
             _msg(b"\x00" * 48, b"application/x-msnmsgrp2p", 2),
             b"PNG\r\n",
             _msg(b"", b"text/x-msmsgscontrol\r\nTypingUser: bob@example.com", 3),
             _msg(b"no headers at all", b"", 4)[:0] + b"MSG 5 N 9\r\nno blank.",
             _msg(b"\x01" * 48, b"application/x-msnmsgrp2p", 6)]
    every = KindRecorder("every")
    p2p_only = KindRecorder("p2ponly", frozenset({"p2p"}))
    text_or_none = KindRecorder("textornone", ["TEXT", "malformed"])   # any collection, any case
    analysis = Analysis([])
    manager = PluginManager(analysis, warn=lambda message: None, threaded=threaded)
    for p in (every, p2p_only, text_or_none):
        manager.add(p, "test")
    analysis.sinks.append(manager)
    conn = analysis.open(conn_id="1")
    if together:
        analysis.feed(conn, C2S, b"".join(lines), 1.0)
    else:
        for i, line in enumerate(lines):
            analysis.feed(conn, C2S, line, 1.0 + i)
    analysis.finish()
    kinds = [k for _, k in every.seen]
    assert kinds == ["text", "p2p", None, "typing", "malformed", "p2p"]
    assert p2p_only.seen == [c for c in every.seen if c[1] == "p2p" or c[0] != "MSG"]
    assert text_or_none.seen == [c for c in every.seen if c[1] in ("text", "malformed") or c[0] != "MSG"]
    assert len(p2p_only.seen) == 3 and len(text_or_none.seen) == 3


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from([b"MIME-Version: 1.0\r\n", b"Content-Type: application/x-msnmsgrp2p\r\n",
                                 b"content-type:application/X-MSNMSGRP2P; x=1\n", b"Content-Type: text/plain\r\n",
                                 b"P2P-Dest: a@b\r\n", b"\r\n", b"\n", b"X: " + b"y" * 300 + b"\r\n",
                                 b"TypingUser: a\r\n", b"\x00\x01"]), max_size=8))
def test_the_p2p_plugin_s_msg_kinds_hold_every_payload_it_acts_on(parts):
    # p2p names {"p2p"}: a payload its own test (is_p2p) takes must be of that kind, so routing
    # by kind never keeps from it a MSG it would have acted on.
    from analyzer.msnp.mime import parse_mime
    from msnp_analyzer_plugins.p2p import P2PPlugin, is_p2p
    payload = b"".join(parts)
    cmd = Command(C2S, "MSG", 1, [b"1", b"D", str(len(payload)).encode()], b"MSG 1 D %d\r\n" % len(payload),
                  payload, len(payload), 0, None)
    if is_p2p(cmd):
        assert parse_mime(payload).kind in P2PPlugin.msg_kinds
