"""`msnp-analyzer analyze`: exit codes, report, JSON Lines, verbose output."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from analyzer.cli.main import main

ROOT = Path(__file__).resolve().parents[2]

REAL = Path(__file__).resolve().parents[2].parent / "shared" / "captures-real"
NDPI = REAL / "ndpi_msnms.pcap"
PPA = REAL / "ppa1e_msnms.pcap"
needs_real = pytest.mark.skipif(not NDPI.exists(), reason="../shared/captures-real is not beside the clone")


def run(*argv):
    return subprocess.run([sys.executable, "-m", "analyzer", *argv], capture_output=True, text=True, timeout=120)


def test_missing_file_is_a_one_line_error():
    r = run("analyze", "/nonexistent/x.pcap")
    assert r.returncode == 2
    assert r.stderr.strip() == "msnp-analyzer: error: /nonexistent/x.pcap: no such file"


def test_not_a_capture_is_a_one_line_error(tmp_path):
    bad = tmp_path / "notes.txt"
    bad.write_text("hello\n")
    r = run("analyze", str(bad))
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0 and "not a capture, transcript or MSNP stream: a text file starting 'hello'" in r.stderr
    assert "Traceback" not in r.stderr


@needs_real
def test_json_lines_stream_records_carry_addresses(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "250")
    out = tmp_path / "o.jsonl"
    assert main(["analyze", str(PPA), "--json", str(out)]) == 0
    records = [json.loads(line) for line in out.read_text().splitlines()]
    [stream] = [r for r in records if r["kind"] == "stream"]
    assert stream["client"] == "192.168.0.114:3331" and stream["server"] == "207.46.26.167:1863"
    assert stream["commands"] == 25
    assert sum(1 for r in records if r["kind"] == "command") == 25
    report = capsys.readouterr().out
    assert "192.168.0.114:3331" in report and "207.46.26.167:1863" in report


@needs_real
def test_json_to_stdout_keeps_stdout_pure_json():
    r = run("analyze", str(NDPI), "--json", "-")
    assert r.returncode == 0
    kinds = [json.loads(line)["kind"] for line in r.stdout.splitlines()]
    assert kinds.count("stream") == 6 and kinds.count("command") == 364
    assert "MSNP connections" in r.stderr


@needs_real
def test_verbose_prints_the_commands(capsys):
    assert main(["analyze", str(PPA), "-v"]) == 0
    out = capsys.readouterr().out
    assert "CAL" in out and "JOI" in out and "MSG" in out


@needs_real
def test_fail_on_decides_the_exit_status(tmp_path):
    data = PPA.read_bytes()
    cut = tmp_path / "cut.pcap"
    cut.write_bytes(data[:len(data) - 100])
    assert main(["analyze", str(cut)]) == 1                    # capture.truncated is an error
    assert main(["analyze", str(cut), "--fail-on", "never"]) == 0


@needs_real
def test_several_files_continue_stream_ids(tmp_path):
    out = tmp_path / "o.jsonl"
    assert main(["analyze", str(PPA), str(NDPI), "--json", str(out)]) == 0
    ids = [json.loads(l)["stream"] for l in out.read_text().splitlines() if '"kind":"stream"' in l]
    assert sorted(ids, key=int) == [str(i) for i in range(1, 8)]


@needs_real
def test_memory_stays_flat_closed_connections_fold_into_the_totals(monkeypatch, capsys):
    import analyzer.cli.analyze as cmd
    monkeypatch.setattr(cmd, "KEEP_CLOSED", 2)
    monkeypatch.setenv("COLUMNS", "200")
    from analyzer.cli.main import build_parser
    run, _ = cmd.analyze(build_parser().parse_args(["analyze", str(NDPI), "--no-plugins"]))
    analysis = run.analysis
    assert len(analysis.connections) == 2 and analysis.folded.count == 4
    totals = analysis.totals()
    assert totals["connections"] == 6 and sum(totals["commands"].values()) == 364
    assert totals["commands"]["MSG"] == 244
    assert run.report() == 0
    out = capsys.readouterr().out
    assert "4 more connections" in out


def test_inputs_are_read_with_young_collections_spaced_out_and_the_thresholds_come_back(monkeypatch):
    import gc
    import analyzer.capture.files as files
    import analyzer.cli.analyze as cmd
    from analyzer.cli.main import build_parser
    seen = []
    feed = files.feed_inputs

    def watched(*args, **kwargs):
        seen.append(gc.get_threshold())
        return feed(*args, **kwargs)

    monkeypatch.setattr(files, "feed_inputs", watched)
    before = gc.get_threshold()
    run, _ = cmd.analyze(build_parser().parse_args(["analyze", str(ROOT / "captures" / "msnp8_login_chat.pcap")]))
    assert seen == [(cmd.YOUNG_COLLECTION, 20, 10)] and cmd.YOUNG_COLLECTION > before[0]
    assert gc.get_threshold() == before           # what the process had, once the inputs are read
    assert sum(run.analysis.totals()["commands"].values()) > 0


class _Stub:
    path, position, size = "big.pcap", 500, 1000


def test_progress_bar_only_on_a_terminal_and_only_when_slow(monkeypatch):
    import analyzer.cli.analyze as cmd
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.setattr(sys.stderr, "isatty", lambda: False, raising=False)
    quiet = cmd._Progress(1000)
    quiet.started -= 10
    quiet(_Stub())
    assert quiet.bar is None                    # stderr is not a terminal: no bar
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)
    quick = cmd._Progress(1000)
    quick(_Stub())
    assert quick.bar is None                    # not slow yet
    slow = cmd._Progress(1000)
    slow.started -= 10
    slow(_Stub())
    try:
        assert slow.bar is not None
        assert slow.bar.tasks[0].completed == 500 and slow.bar.tasks[0].total == 1000
    finally:
        slow.stop()


def test_report_keeps_addresses_whole_on_an_80_column_terminal():
    import io
    from rich.console import Console
    import resegment as R
    from analyzer.outputs.terminal import render_report
    analysis, _ = R.analyze(Path(__file__).resolve().parents[2] / "captures" / "msnp8_login_chat.pcap")
    buf = io.StringIO()
    render_report(analysis, Console(file=buf, width=80))
    text = buf.getvalue()
    for addr in ("127.0.0.1:50010", "127.0.0.1:1863", "127.0.0.3:1864", "alice@example.com"):
        assert any(addr in line for line in text.splitlines()), addr
    assert "DS MSNP8" in text and "NS MSNP8" in text


def test_a_truncated_capture_names_the_file_and_offset_and_chat_says_it_is_partial(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "250")
    data = (ROOT / "captures" / "msnp8_login_chat.pcap").read_bytes()
    cut = tmp_path / "cut.pcap"
    cut.write_bytes(data[:len(data) * 3 // 4 + 7])  # mid-record, inside the second switchboard
    assert main(["analyze", str(cut), "--fail-on", "never"]) == 0
    report = capsys.readouterr().out
    m = re.search(r"capture\.truncated: cut\.pcap at byte (\d+)", report)
    assert m and 0 < int(m.group(1)) < len(data), report[-1500:]
    assert main(["chat", str(cut)]) == 1
    out, err = capsys.readouterr()
    assert "Hello Bob" in out  # what was read is still shown
    assert err.startswith("msnp-analyzer: warning: the transcript is partial: capture.truncated: cut.pcap at byte")
    assert main(["chat", str(ROOT / "captures" / "msnp8_login_chat.pcap")]) == 0
    assert "partial" not in capsys.readouterr().err
