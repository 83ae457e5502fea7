"""Reports rendered into 80- and 200-column consoles: nothing cropped, no name broken across lines."""

from __future__ import annotations

import io
import re
from pathlib import Path

import pytest
from rich.console import Console

from analyzer.analysis.run import Analysis
from analyzer.capture.files import feed_capture
from analyzer.outputs.terminal import render_report
from analyzer.plugins import PluginManager, discover

ROOT = Path(__file__).resolve().parents[2]
REAL = ROOT.parent / "shared" / "captures-real"
SAMPLES = sorted(p.name for p in (ROOT / "captures").iterdir() if p.suffix in (".pcap", ".pcapng", ".msnp"))


def analysed(paths):
    analysis = Analysis([])
    manager = PluginManager(analysis)
    discover(manager)
    analysis.sinks.append(manager)
    for i, path in enumerate(paths):
        feed_capture(analysis, str(path), prefix=f"{i}-")
    analysis.finish()
    return analysis, manager


def rendered(analysis, manager, width: int, extra=()) -> str:
    out = io.StringIO()
    console = Console(file=out, width=width, color_system=None, legacy_windows=False)
    render_report(analysis, console, extra=[*manager.terminal_sections(), *extra])
    return out.getvalue()


BOX = set("┏┃┡│├└┌┓┩┤┘┐╇╋┼┳┻┬┴━─")


def assert_no_table_cropped(lines):
    """A table drawn wider than the console loses its right edge: every table line ends on a border."""
    for line in lines:
        stripped = line.rstrip()
        if stripped and stripped[0] in BOX:
            assert stripped[-1] in "┓┃┩│┤┘┐", f"a table cut at the right edge: {line!r}"


def names_that_must_stay_whole(analysis) -> set[str]:
    names = set()
    for conn in analysis.connections.values():
        names.update(conn.anomalies)
        names.update(x for x in (conn.client, conn.server, conn.handle) if x and " " not in x)
    names.update(analysis.totals()["anomalies"])
    return names


@pytest.mark.parametrize("width", [80, 200])
@pytest.mark.parametrize("sample", SAMPLES)
def test_sample_reports_fit(sample, width):
    analysis, manager = analysed([ROOT / "captures" / sample])
    text = rendered(analysis, manager, width)
    lines = text.splitlines()
    assert all(len(line) <= width for line in lines)
    assert "…" not in text  # rich's mark of a cropped cell
    assert_no_table_cropped(lines)
    for name in names_that_must_stay_whole(analysis):
        assert any(name in line for line in lines), f"{name!r} broken or cropped at {width} columns"
    # every column header word of the connection report appears whole
    for header in ("anomalies", "transactions", "commands", "latency"):
        assert re.search(rf"\b{header}\b", text), header


@pytest.mark.skipif(not REAL.is_dir(), reason="../shared/captures-real is not beside the clone")
@pytest.mark.parametrize("width", [80, 200])
def test_a_real_capture_with_chats_fits(width):
    analysis, manager = analysed([REAL / "ndpi_msnms.pcap"])
    text = rendered(analysis, manager, width)
    lines = text.splitlines()
    assert "…" not in text and all(len(line) <= width for line in lines)
    assert_no_table_cropped(lines)
    for name in names_that_must_stay_whole(analysis):
        assert any(name in line for line in lines), name


def test_narrow_reports_become_blocks_and_wide_ones_stay_tables():
    analysis, manager = analysed([ROOT / "captures" / "msnp8_anomalies.pcap"])
    narrow = rendered(analysis, manager, 80)
    wide = rendered(analysis, manager, 200)
    assert "anomalies: msnp.whitespace.leading 1" in narrow     # a block: `header: value`
    assert "┃ anomalies" in wide or "anomalies  " in wide          # a table with its header row
    assert "msnp.whitespace.multiple_spaces" in wide.replace("\n", " ")


def test_a_long_file_name_is_not_cut():
    from analyzer.cli.analyze import capture_table

    class Capture:
        path = "captures/" + "a_rather_long_capture_file_name_from_a_revival_server" + ".pcapng"
        format, nano, linktype = "pcapng", False, 1
    analysis, manager = analysed([ROOT / "captures" / "msnp8_login_chat.pcap"])
    stats = {"packets": 1, "flows": 1, "msnp_flows": 1, "ignored_flows": 0}
    text = rendered(analysis, manager, 80, extra=[capture_table([(Capture, stats)])])
    assert Capture.path in text.splitlines() or any(Capture.path in line for line in text.splitlines())


def test_verbose_prints_an_anomaly_under_the_line_it_belongs_to(capsys):
    """The codec reports a line's white-space anomaly just before the line: -v waits for that line
    instead of printing the anomaly under whatever came before (often the other direction's reply)."""
    from analyzer.cli.main import main
    main(["decode", str(ROOT / "captures" / "anomalies.msnp"), "-v", "--no-plugins"])
    lines = capsys.readouterr().out.splitlines()
    at = next(i for i, line in enumerate(lines) if "msnp.whitespace.multiple_spaces" in line)
    assert ">>> CVR 2" in lines[at - 1], lines[at - 2:at + 1]
    at = next(i for i, line in enumerate(lines) if "msnp.reply.out_of_order" in line)
    assert "<<< ADD 11" in lines[at - 1], lines[at - 2:at + 1]  # the reply that overtook XFR 10
