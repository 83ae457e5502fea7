"""analyzer/outputs/console.py: the interactive console, driven headless with Textual's pilot."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from analyzer.analysis.redact import Redactor
from analyzer.analysis.run import Analysis
from analyzer.capture.files import feed_transcript
from analyzer.clock import UTC
from analyzer.outputs.console import ConsoleModel, build_console
from analyzer.plugins import PluginManager
from msnp_analyzer_plugins.mime import MimePlugin

pytest.importorskip("textual")
from textual.widgets import DataTable, Input, Static  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


def fed_model(*transcripts: str) -> ConsoleModel:
    """A model fed through a real Analysis, with the mime plugin's decoder for the detail pane."""
    redactor = Redactor()
    manager = PluginManager(None)
    manager.add(MimePlugin(), "test")
    model = ConsoleModel(redactor, views=manager.decode_payload)
    analysis = Analysis([model])
    for i, name in enumerate(transcripts):
        feed_transcript(analysis, name, (ROOT / "captures" / name).read_bytes(), prefix=f"t{i}-")
    analysis.finish()
    return model


def stream_rows(app) -> list:
    table = app.query_one("#stream", DataTable)
    return [app.rows_by_key[key.value] for key in table.rows]


def run(coro):
    return asyncio.run(coro)


def test_connections_appear_and_selecting_one_filters_the_stream():
    model = fed_model("msnp8.msnp")
    streams = sorted({r.stream for r in model.all_rows() if r.kind == "command"})
    assert len(streams) >= 3  # DS, NS and switchboards

    async def scenario():
        app = build_console(model, "test")
        async with app.run_test(size=(80, 24)) as pilot:
            await pilot.pause()
            conns = app.query_one("#conns", DataTable)
            assert conns.row_count == len(model.conns) >= 3
            assert {r.stream for r in stream_rows(app)} >= set(streams)
            conns.focus()
            conns.move_cursor(row=1)
            await pilot.press("enter")
            await pilot.pause()
            chosen = app.selected
            assert chosen is not None
            shown = stream_rows(app)
            assert shown and {r.stream for r in shown} == {chosen}
            await pilot.press("a")  # all connections again
            await pilot.pause()
            assert len({r.stream for r in stream_rows(app)}) >= 3
    run(scenario())


def test_the_detail_pane_shows_a_decoded_msg():
    model = fed_model("msnp8_switchboard_chat.msnp")

    async def scenario():
        app = build_console(model, "test")
        async with app.run_test(size=(80, 24)) as pilot:
            await pilot.pause()
            stream = app.query_one("#stream", DataTable)
            rows = stream_rows(app)
            index = next(i for i, r in enumerate(rows) if r.cmd == "MSG" and r.command.payload
                         and b"text/plain" in r.command.payload)
            stream.focus()
            stream.move_cursor(row=index)
            await pilot.pause()
            detail = str(app.query_one("#detail_text", Static).render())
            assert "MSG" in detail and "payload:" in detail
            assert "[mime]" in detail  # the plugin's decoding, not the raw bytes
    run(scenario())


def test_filters_narrow_the_rows_and_clear_restores_them():
    model = fed_model("msnp8.msnp")

    async def scenario():
        app = build_console(model, "test")
        async with app.run_test(size=(80, 24)) as pilot:
            await pilot.pause()
            everything = len(stream_rows(app))
            await pilot.press("c")
            box = app.query_one("#filter", Input)
            assert box.has_focus
            await pilot.press(*"XFR", "enter")
            await pilot.pause()
            rows = stream_rows(app)
            assert rows and {r.cmd for r in rows} == {"XFR"} and len(rows) < everything
            await pilot.press("x")
            await pilot.pause()
            assert len(stream_rows(app)) == everything
            await pilot.press("slash", *"CKI", "enter")  # text filter
            await pilot.pause()
            rows = stream_rows(app)
            assert rows and all("CKI" in r.text for r in rows)
    run(scenario())


def test_anomalies_are_marked_on_their_own_line_and_can_be_shown_alone():
    model = fed_model("anomalies.msnp")
    marked = {r.cmd: [n for n, _, _ in r.anomalies] for r in model.all_rows() if r.anomalies}
    # the white-space anomaly of the client's CVR sits on that CVR, not on the server's VER before it
    assert "msnp.whitespace.multiple_spaces" in marked.get("CVR", [])
    assert "msnp.whitespace.multiple_spaces" not in marked.get("VER", [])

    async def scenario():
        app = build_console(model, "test")
        async with app.run_test(size=(80, 24)) as pilot:
            await pilot.pause()
            await pilot.press("exclamation_mark")
            await pilot.pause()
            rows = stream_rows(app)
            assert rows and all(r.anomalies for r in rows)
    run(scenario())


def test_usable_at_80x24_and_on_resize_rows_never_wrap():
    model = fed_model("msnp8.msnp", "anomalies.msnp")

    async def scenario():
        app = build_console(model, "test")
        async with app.run_test(size=(80, 24)) as pilot:
            await pilot.pause()
            stream = app.query_one("#stream", DataTable)
            assert stream.size.height >= 5 and stream.size.width <= 80
            assert sum(c.get_render_width(stream) for c in stream.columns.values()) <= 80 + 2
            await pilot.resize_terminal(200, 50)
            await pilot.pause()
            app.refresh_data()  # what the next tick does
            await pilot.pause()
            assert sum(c.get_render_width(stream) for c in stream.columns.values()) > 120
            assert stream.row_count == len([r for r in model.all_rows()])
    run(scenario())


def test_quitting_calls_back_so_the_proxy_stops():
    model = fed_model("msnp8.msnp")
    called = []

    async def scenario():
        app = build_console(model, "test", on_quit=lambda: called.append(1))
        async with app.run_test(size=(80, 24)) as pilot:
            await pilot.press("q")
            await pilot.pause()
    run(scenario())
    assert called == [1]


def test_wire_text_is_shown_with_visible_escapes_and_times_are_labelled():
    from analyzer.msnp import C2S, Command
    model = ConsoleModel(Redactor())
    analysis = Analysis([model])
    conn = analysis.open(conn_id="1")
    analysis.feed(conn, C2S, b"CAL 1 evil\x1b]52;c;aGk=\x07@example.com\r\n", 1_167_609_600.5)
    [row] = [r for r in model.all_rows() if r.kind == "command"]
    assert "\x1b" not in row.text and "\\x1b" in row.text
    assert UTC.time(row.ts) == "00:00:00.500Z"
    assert isinstance(row.command, Command)
