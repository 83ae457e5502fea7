"""The timeline's views in a real headless Chromium: the overview (lanes, referral arrows, marks),
the ladder diagram and its SVG download, the plots, keyboard navigation, the list's new controls,
provenance, and a capture of 1,200 connections."""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from playwright.sync_api import expect

from analyzer.cli.main import main as cli
from analyzer.outputs.html import page_data
from analyzer.outputs.html.template import render_page

from .pages import write_page

ROOT = Path(__file__).resolve().parents[3]
SVG = "{http://www.w3.org/2000/svg}"


def embedded(path: Path) -> tuple[dict, list]:
    return page_data(path.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def login(tmp_path_factory):
    """captures/msnp8_login_chat.pcap exported: DS, NS, an XFR switchboard and an RNG one."""
    path = tmp_path_factory.mktemp("views") / "login.html"
    assert cli(["export", "-q", str(ROOT / "captures" / "msnp8_login_chat.pcap"), "-o", str(path)]) == 0
    meta, rows = embedded(path)
    return path, meta, rows


def frames(page) -> None:
    """Wait two animation frames: what the page queued for the next frame has been drawn.
    (A function, not wait_for_function's string: the page's CSP forbids eval.)"""
    page.evaluate("() => new Promise(done => requestAnimationFrame(() => requestAnimationFrame(done)))")


def arrows(page) -> list[dict]:
    return page.eval_on_selector_all("#ov-arrows li", "els => els.map(e => ({...e.dataset}))")


def selected_row(page):
    rows = page.eval_on_selector_all("#spacer .row.selected", "els => els.map(e => +e.dataset.row)")
    return rows[0] if rows else None


def test_overview_draws_the_referral_arrows_and_a_click_on_a_mark_selects_its_row(login, open_page):
    path, meta, rows = login
    opened = open_page(path)
    page = opened.page
    ids = [l["id"] for l in meta["lanes"]]
    roles = {l["id"]: l["role"] for l in meta["lanes"]}
    drawn = {(a["from"], a["to"]): a for a in arrows(page)}
    ds, ns = ids[0], ids[1]
    assert roles[ds] == "DS" and roles[ns] == "NS"
    sbs = [i for i in ids if roles[i] == "SB"]
    assert len(sbs) == 2
    # DS -> NS from the XFR NS line; NS -> both switchboards (one XFR SB, one RNG).
    assert set(drawn) == {(ds, ns), (ns, sbs[0]), (ns, sbs[1])}
    for (src, _dst), a in drawn.items():
        r = rows[int(a["row"])]
        assert meta["lanes"][r[0]]["id"] == src and r[2] == 1 and r[3] in ("XFR", "RNG")
    assert sorted(rows[int(a["row"])][3] for a in drawn.values()) == ["RNG", "XFR", "XFR"]
    # The arrow is on the canvas: its colour where the list says it starts and, 4 px before its
    # tip, ends (within a pixel: the line is anti-aliased).
    canvas = page.query_selector("#ov-canvas")
    for a in drawn.values():
        x1, y1, x2, y2 = (float(a[k]) for k in ("x1", "y1", "x2", "y2"))
        length = max(1.0, ((x2 - x1) ** 2 + (y2 - y1) ** 2) ** 0.5)
        for x, y in ((x1, y1), (x2 - 4 * (x2 - x1) / length, y2 - 4 * (y2 - y1) / length)):
            near = page.evaluate("([x, y]) => [...document.getElementById('ov-canvas').getContext('2d')"
                                 ".getImageData(Math.round(x * devicePixelRatio) - 1, Math.round(y * devicePixelRatio) - 1, 3, 3).data]",
                                 [x, y])
            pixels = [near[k:k + 3] for k in range(0, len(near), 4)]
            # The arrows' orange (#c25e00), not a lane's grey-blue or a tick's blue/purple.
            assert any(r > 150 and 60 < g < 130 and b < 60 for r, g, b in pixels), (a, pixels)
    # A click on the RNG mark selects the RNG line in the list and shows it in the detail.
    rng = next(a for a in drawn.values() if rows[int(a["row"])][3] == "RNG")
    box = canvas.bounding_box()
    page.mouse.click(box["x"] + float(rng["x1"]), box["y"] + float(rng["y1"]))
    assert selected_row(page) == int(rng["row"])
    assert page.evaluate("location.hash") == f"#r{rng['row']}"
    assert page.text_content("#detail h2").startswith("<<< RNG")
    # Zoomed in (ctrl+wheel at the mark), single commands are ticks of their own: a click on the
    # tick of the first line of the switchboard the RNG opened (0.1 s later) selects that line.
    before = [float(v) for v in canvas.get_attribute("data-view").split(",")]
    page.mouse.move(box["x"] + float(rng["x1"]), box["y"] + float(rng["y1"]))
    page.keyboard.down("Control")
    for _ in range(6):
        page.mouse.wheel(0, -300)
    page.keyboard.up("Control")
    frames(page)
    after = [float(v) for v in canvas.get_attribute("data-view").split(",")]
    assert after[1] - after[0] < (before[1] - before[0]) / 30
    target = next(l for l in meta["lanes"] if l["id"] == rng["to"])["first"]
    t = rows[target][1]
    assert after[0] < t < after[1]
    label_w, width = 190, box["width"] - 190 - 10
    x = label_w + (t - after[0]) / (after[1] - after[0]) * width
    assert abs(x - float(rng["x1"])) > 20      # far enough from the RNG's mark to tell them apart
    page.mouse.click(box["x"] + x, box["y"] + float(rng["y2"]))
    assert selected_row(page) == target
    assert opened.errors == [] and opened.foreign_requests() == []


def test_ladder_of_the_login_ties_replies_to_requests_and_downloads_as_svg(login, open_page, tmp_path):
    path, meta, rows = login
    opened = open_page(path)
    page = opened.page
    page.click("#tabs button[data-view='ladder']")
    page.wait_for_selector("#ladder g.arrow")
    assert page.eval_on_selector("#ladder-pick", "s => s.value") == "session:L1"
    heads = page.eval_on_selector_all("#ladder > text[font-weight='bold']", "els => els.map(e => e.textContent)")
    assert heads[1:] == ["client"] + [f"{l['role']} [{l['id']}]" for l in meta["lanes"]]
    lines = [i for i, r in enumerate(rows) if r[2] in (0, 1) and r[3] not in ("!", "~")]
    drawn = page.eval_on_selector_all("#ladder g.arrow", "els => els.map(e => +e.dataset.row)")
    assert sorted(drawn) == lines
    # In time order, down the page.
    assert [rows[i][1] for i in drawn] == sorted(rows[i][1] for i in drawn)
    ties = page.eval_on_selector_all("#ladder path.tie", "els => els.map(e => [+e.dataset.request, +e.dataset.reply])")
    expected = sorted([r[8][1], i] for i, r in enumerate(rows) if r[8] and r[8][0] == 1)
    assert sorted(ties) == expected and len(ties) > 20
    latencies = page.eval_on_selector_all("#ladder text.latency", "els => els.map(e => e.textContent)")
    answered = [r for r in rows if r[8] and r[8][0] == 0 and r[8][1] and r[8][3] is not None]
    assert sorted(latencies) == sorted(f"{r[8][3]:g} ms" for r in answered)
    # A click on an arrow selects its line.
    page.click(f"#ladder g.arrow[data-row='{drawn[3]}'] text")
    assert page.evaluate("location.hash") == f"#r{drawn[3]}"
    # Download SVG: a standalone SVG file with the same arrows.
    with page.expect_download() as info:
        page.click("#ladder-svg")
    saved = tmp_path / "ladder.svg"
    info.value.save_as(saved)
    root = ET.parse(saved).getroot()
    assert root.tag == SVG + "svg" and root.get("width") and root.get("viewBox")
    arrows_in_file = [g for g in root.iter(SVG + "g") if "arrow" in (g.get("class") or "")]
    assert len(arrows_in_file) == len(lines)
    assert any(t.text == "USR 7 OK alice@example.com Alice 1 0" for t in root.iter(SVG + "text"))
    # A switchboard alone: client and that switchboard.
    sb = next(li for li, l in enumerate(meta["lanes"]) if l["role"] == "SB")
    page.select_option("#ladder-pick", f"lane:{sb}")
    assert page.eval_on_selector_all("#ladder g.arrow", "els => els.length") == meta["lanes"][sb]["count"]
    assert opened.errors == []
    assert [u for u in opened.foreign_requests() if not u.startswith("blob:")] == []


def test_plots_draw_latency_rate_and_anomalies(tmp_path, open_page):
    path = tmp_path / "both.html"
    assert cli(["export", "-q", str(ROOT / "captures" / "msnp8_login_chat.pcap"),
                str(ROOT / "captures" / "msnp8_anomalies.pcap"), "-o", str(path)]) == 0
    meta, rows = embedded(path)
    page = open_page(path).page
    page.click("#tabs button[data-view='plots']")
    page.wait_for_selector("#plots-box svg.plot")
    titles = page.eval_on_selector_all("#plots-box svg.plot > text[font-weight='bold']", "els => els.map(e => e.textContent)")
    assert titles == ["Latency over time, per command", "Keep-alive latency (PNG \u2192 QNG)",
                      "Commands per second per connection", "Anomalies over time"]
    points = page.eval_on_selector_all("#plots-box svg.plot", "els => els.map(s => s.querySelectorAll('circle').length)")
    answered = [r for r in rows if r[8] and r[8][0] == 0 and r[8][3] is not None]
    assert points[0] == sum(1 for r in answered if r[3] != "PNG") and points[1] == sum(1 for r in answered if r[3] == "PNG") >= 1
    bars = page.eval_on_selector_all("#plots-box svg.plot",
                                     "els => els[3].querySelectorAll('rect[fill=\"#e67e22\"][height]:not([width=\"10\"])').length")
    assert bars >= 1 and sum(meta["totals"]["anomalies"].values()) >= 1
    assert page.eval_on_selector_all("#plots-box svg.plot", "els => els[2].querySelectorAll('path').length") >= 2


def test_keyboard_moves_the_selection_opens_the_detail_and_searches(login, open_page):
    path, meta, rows = login
    page = open_page(path).page
    page.keyboard.press("j")
    assert selected_row(page) == 0
    page.keyboard.press("j")
    page.keyboard.press("ArrowDown")
    assert selected_row(page) == 2
    page.keyboard.press("k")
    assert selected_row(page) == 1 and page.evaluate("location.hash") == "#r1"
    page.keyboard.press("ArrowUp")
    assert selected_row(page) == 0
    # Moving past a connection's last row goes on to the next connection's first (over its header).
    last_ds = meta["lanes"][0]["count"] - 1
    page.evaluate(f"location.hash = '#r{last_ds}'")
    page.wait_for_selector(f"#spacer .row.selected[data-row='{last_ds}']")
    page.keyboard.press("j")
    assert selected_row(page) == last_ds + 1
    page.keyboard.press("Enter")
    assert page.evaluate("document.activeElement.id") == "detail"
    page.keyboard.press("/")
    assert page.evaluate("document.activeElement.id") == "q"
    page.keyboard.type("carol")
    expect(page.locator("#shown")).not_to_have_text(re.compile(rf"^{len(rows)} of"))
    page.keyboard.press("Escape")          # clears the search ...
    assert page.input_value("#q") == ""
    expect(page.locator("#shown")).to_have_text(re.compile(rf"^{len(rows)} of"))
    page.keyboard.press("Escape")          # ... then leaves it
    assert page.evaluate("document.activeElement.id") != "q"
    page.keyboard.press("Escape")          # ... then clears the selection
    assert selected_row(page) is None
    assert "Nothing selected" in page.text_content("#detail")


def test_filters_reset_and_a_hidden_row_leaves_the_detail(login, open_page):
    path, meta, rows = login
    page = open_page(path).page
    assert page.is_disabled("#reset")
    page.click("#spacer .row[data-row='0'] .cmd")
    assert "VER" in page.text_content("#detail h2")
    page.select_option("#f-cmd", "MSG")
    assert "hidden by the filters" in page.text_content("#detail")
    assert selected_row(page) is None
    page.click("#reset")
    assert page.text_content("#shown").startswith(f"{len(rows)} of {len(rows)}")
    assert page.input_value("#f-cmd") == "" and page.is_disabled("#reset")
    # The filter that hid the row is gone: Escape makes the pane say what is true now.
    page.eval_on_selector("#detail", "el => el.blur()")
    page.locator("body").focus()
    page.keyboard.press("Escape")
    assert "Nothing selected" in page.text_content("#detail")


def test_merged_order_lists_every_row_by_time_across_connections(login, open_page):
    path, meta, rows = login
    page = open_page(path).page
    page.select_option("#f-order", "merged")
    assert page.text_content("#shown").startswith(f"{len(rows)} of")
    assert page.eval_on_selector_all("#spacer .lane", "els => els.length") == 0
    page.eval_on_selector("#list", "el => { el.scrollTop = 25 * 22; }")
    frames(page)  # the virtual list draws on the next animation frame
    page.wait_for_selector("#spacer .row[data-row] .lane-tag")
    shown = page.eval_on_selector_all("#spacer .row", "els => els.map(e => +e.dataset.row)")
    expected = sorted(range(len(rows)), key=lambda i: (rows[i][1], i))
    start = expected.index(shown[0])
    assert shown == expected[start:start + len(shown)]
    assert {rows[i][0] for i in shown} != {rows[shown[0]][0]}  # several connections interleaved


def test_referral_rows_jump_to_the_connection_they_opened_and_back(login, open_page):
    path, meta, rows = login
    page = open_page(path).page
    rng = next(i for i, r in enumerate(rows) if r[3] == "RNG")
    sb = next(l for l in meta["lanes"] if l["link"] and l["link"]["by"] == "rng")
    page.evaluate(f"location.hash = '#r{rng}'")
    page.wait_for_selector(f"#spacer .row.selected[data-row='{rng}'] .badge.ref")
    page.click(f"#detail button.jump[data-lane='{sb['id']}']")
    assert page.text_content("#detail h2").startswith(f"[{sb['id']}] SB")
    assert page.is_visible(f"#spacer .lane[data-lane='{sb['id']}']")
    page.click("#detail .refs button.jump >> nth=0")     # back: the RNG line
    assert selected_row(page) == rng


def test_header_shows_provenance_with_a_local_time_switch(login, open_page):
    path, meta, rows = login
    page = open_page(path).page
    assert page.text_content("#prov-src") == "msnp8_login_chat.pcap"
    assert page.text_content("#prov-range").startswith("2006-01-01 12:00:00.050 UTC")
    assert "redacted" in page.text_content("#prov-redacted")
    assert "DS \u2192 NS" in page.get_attribute("#totals [data-total='sessions']", "title")
    page.click("#tz")
    assert re.match(r"2006-01-01 \d\d:\d\d:00\.050 UTC[+-]\d\d:\d\d", page.text_content("#prov-range"))
    page.emulate_media(media="print")
    assert page.is_visible("#prov-src") and page.is_visible("#prov-range") and not page.is_visible("#tabs")


def test_payload_badge_shows_the_length_on_the_wire(login, open_page):
    path, meta, rows = login
    page = open_page(path).page
    qry = next(i for i, r in enumerate(rows) if r[3] == "QRY" and r[6])
    page.evaluate(f"location.hash = '#r{qry}'")
    assert page.text_content(f"#spacer .row[data-row='{qry}'] .badge.pl") == f"payload {rows[qry][6][3]} B"
    assert f"Payload, {rows[qry][6][3]} bytes on the wire" in page.text_content("#detail")


def test_a_capture_without_msnp_says_so(tmp_path, open_page):
    write_page(tmp_path / "empty.html", {})
    opened = open_page(tmp_path / "empty.html")
    page = opened.page
    assert "No MSNP in this capture" in page.text_content("#list")
    assert "No MSNP in this capture" in page.text_content("#detail")
    assert "Select a row" not in page.text_content("body")
    for view in ("ladder", "plots", "summaries", "timeline"):
        page.click(f"#tabs button[data-view='{view}']")
    assert "No MSNP in this capture" in page.text_content("#plots-box")
    assert opened.errors == []


def test_rewrites_are_shown_where_the_proxy_made_them(login, open_page, tmp_path):
    path, meta, rows = login
    xfr = next(i for i, r in enumerate(rows) if r[3] == "XFR" and r[2] == 1 and r[5].startswith("SB"))
    meta = dict(meta, rewrites=[{"lane": rows[xfr][0], "row": xfr, "ts": rows[xfr][1], "command": "XFR",
                                 "upstream": "198.51.100.7:1864", "given": "127.0.0.1:41864"}])
    page_path = tmp_path / "rewritten.html"
    page_path.write_text(render_page(meta, [rows[k:k + meta["chunk"]] for k in range(0, len(rows), meta["chunk"])],
                                     "n0nce"), encoding="utf-8")
    page = open_page(page_path, fragment=f"#r{xfr}").page
    page.wait_for_selector(f"#spacer .row.selected[data-row='{xfr}']")
    detail = page.text_content("#detail")
    assert "Rewritten by the proxy" in detail and "198.51.100.7:1864" in detail and "127.0.0.1:41864" in detail
    page.click("#tabs button[data-view='summaries']")
    assert "198.51.100.7:1864" in page.text_content("#sections [data-section='rewrites']")


def test_twelve_hundred_connections_leave_the_main_view_the_window(tmp_path, open_page):
    from captures.sessions import SESSIONS
    # 300 logins of the msnp8 sample: DS, NS and two switchboards each, 1,200 connections.
    _, timeline = write_page(tmp_path / "many.html", {f"s{i}": SESSIONS["msnp8"] for i in range(300)})
    meta = timeline.data()[0]
    assert len(meta["lanes"]) == 1200
    opened = open_page(tmp_path / "many.html")
    page = opened.page
    window = page.viewport_size["height"]
    views = page.eval_on_selector("#views", "e => e.getBoundingClientRect().height")
    listed = page.eval_on_selector("#list", "e => e.getBoundingClientRect().height")
    assert page.eval_on_selector("header", "e => e.getBoundingClientRect().height") <= 60
    assert views >= 0.85 * window
    assert listed >= 0.35 * window                  # the list keeps its share beside the overview
    # The last connection: at the bottom of the list ...
    page.eval_on_selector("#list", "el => { el.scrollTop = el.scrollHeight; }")
    last = meta["lanes"][-1]
    page.wait_for_selector(f"#spacer .row[data-row='{last['first'] + last['count'] - 1}']")
    # ... and of the overview, whose lanes scroll inside it.
    page.eval_on_selector("#ov-scroll", "el => { el.scrollTop = el.scrollHeight; }")
    page.wait_for_selector("#ov-canvas[data-lanes$='-1199']", state="attached")
    drawn = page.get_attribute("#ov-canvas", "data-lanes")
    assert 1199 - int(drawn.split("-")[0]) < 40      # only the lanes on screen are drawn
    page.click("#tabs button[data-view='summaries']")
    assert page.eval_on_selector("#views", "e => e.getBoundingClientRect().height") == views
    assert opened.errors == []


def test_hostile_strings_stay_text_in_every_view_and_in_the_svg(tmp_path, open_page):
    from .pages import CANARY, HOSTILE_NICK, hostile_page
    path = tmp_path / "hostile.html"
    hostile_page(path)
    opened = open_page(path)
    page = opened.page
    page.mouse.click(*(lambda b: (b["x"] + 100, b["y"] + 30))(page.query_selector("#ov-canvas").bounding_box()))
    for view in ("ladder", "plots", "summaries", "timeline"):
        page.click(f"#tabs button[data-view='{view}']")
    page.click("#tabs button[data-view='ladder']")
    page.wait_for_selector("#ladder g.arrow")
    titles = page.eval_on_selector_all("#ladder g.arrow title", "els => els.map(e => e.textContent)")
    assert any(t.endswith("BYE " + HOSTILE_NICK) for t in titles)   # the BYE's parameter, as text
    with page.expect_download() as info:
        page.click("#ladder-svg")
    saved = tmp_path / "hostile.svg"
    info.value.save_as(saved)
    root = ET.parse(saved).getroot()                          # still well-formed XML
    assert not list(root.iter(SVG + "script")) and not list(root.iter("script"))
    assert any((t.text or "").endswith("BYE " + HOSTILE_NICK) for t in root.iter(SVG + "title"))
    assert page.evaluate("typeof window.__pwned") == "undefined"
    assert page.evaluate("document.querySelectorAll('img, iframe, object, embed, script:not([type]):not([nonce])').length") == 0
    assert [u for u in opened.foreign_requests() if not u.startswith("blob:")] == []
    assert opened.errors == []
    assert CANARY in page.content()


def test_a_capture_with_only_bytes_that_are_not_msnp_says_so_and_lists_them(tmp_path, open_page):
    from analyzer.msnp import C2S, S2C
    from analyzer.msnp.transcript import Chunk
    junk = [Chunk(C2S, b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(range(40)), 0.1, "c"),
            Chunk(S2C, b"HTTP/1.1 400 Bad Request\r\n\r\n", 0.2, "c")]
    write_page(tmp_path / "junk.html", {"junk": junk})
    opened = open_page(tmp_path / "junk.html")
    page = opened.page
    assert "No MSNP in this capture" in page.text_content("#detail")
    assert page.eval_on_selector_all("#spacer .row", "els => els.length") >= 1   # what was there, listed
    assert opened.errors == []


def test_a_busy_connection_is_drawn_from_density_until_zoomed_in(tmp_path, open_page):
    from analyzer.msnp import C2S, S2C, encode_command
    from analyzer.msnp.transcript import Chunk
    chunks = [Chunk(C2S, encode_command("VER", 1, ["MSNP8", "CVR0"]), 0.0, "ns"),
              Chunk(S2C, encode_command("VER", 1, ["MSNP8"]), 0.01, "ns")]
    for k in range(600):  # 1,200 lines in 60 s: more than the overview's width can show one by one
        chunks.append(Chunk(C2S, encode_command("PNG", None, []), 1 + k * 0.1, "ns"))
        chunks.append(Chunk(S2C, encode_command("QNG", None, ["50"]), 1.02 + k * 0.1, "ns"))
    _, timeline = write_page(tmp_path / "busy.html", {"busy": chunks})
    meta, rows = timeline.data()
    page = open_page(tmp_path / "busy.html").page
    canvas = page.query_selector("#ov-canvas")
    assert canvas.get_attribute("data-density") == "1"
    # A click still finds the line nearest to it.
    box = canvas.bounding_box()
    view = [float(v) for v in canvas.get_attribute("data-view").split(",")]
    width = box["width"] - 190 - 10
    target = 601
    x = 190 + (rows[target][1] - view[0]) / (view[1] - view[0]) * width
    page.mouse.click(box["x"] + x, box["y"] + 24 + 9)
    picked = selected_row(page)
    assert picked is not None and abs(rows[picked][1] - rows[target][1]) < 0.3
    for _ in range(6):
        page.click("#ov-in")
    frames(page)
    assert canvas.get_attribute("data-density") == "0"   # zoomed in: single lines


def test_hiding_the_overview_gives_the_list_its_room(login, open_page):
    path, meta, rows = login
    page = open_page(path).page
    before = page.eval_on_selector("#list", "e => e.getBoundingClientRect().height")
    page.click("#ov-hide")
    after = page.eval_on_selector("#list", "e => e.getBoundingClientRect().height")
    assert not page.is_visible("#overview") and after > before + 50
    page.click("#ov-show")
    assert page.is_visible("#overview")
    assert page.eval_on_selector("#list", "e => e.getBoundingClientRect().height") == before


def test_summary_tables_are_built_when_first_opened(login, open_page):
    path, meta, _ = login
    titles = [s["title"] for s in meta["sections"]]
    chat = next(s for s in meta["sections"] if s["plugin"] == "chat")
    opened = open_page(path)
    page = opened.page
    page.click("#tabs button[data-view='summaries']")
    det = f"#sections details[data-section={json.dumps(chat['title'])}]"
    assert not meta["rewrites"]
    assert page.eval_on_selector_all("#sections details[data-section] table", "t => t.length") == 0
    assert page.eval_on_selector_all("#sections details[data-section]", "d => d.length") >= len(titles)
    page.click(f"{det} > summary")
    page.wait_for_selector(f"{det} table")
    cells = page.eval_on_selector_all(f"{det} table tr", "trs => trs.length")
    assert cells == len(chat["rows"]) + 1
    assert chat["rows"][0][2] in page.text_content(det)
    page.click(f"{det} > summary")   # closed and opened again: still one table
    page.click(f"{det} > summary")
    assert page.eval_on_selector_all(f"{det} table", "t => t.length") == 1
    assert opened.errors == []


def test_the_ladder_svg_is_well_formed_xml_whatever_the_wire_carried(tmp_path, open_page):
    """NUL, C0 controls and lone surrogates cannot appear in XML 1.0: text from the wire
    holding them must not make the downloaded SVG a file no XML reader opens."""
    from analyzer.msnp.transcript import Chunk, format_chunks
    chunks = [("c2s", b"USR 1 bob@example.com 1234.5678\r\n"), ("s2c", b"USR 1 OK bob@example.com Bob\r\n"),
              ("c2s", b"CAL 2 al\x00i\x01c\x1be\xed\xa0\x80@example.com\r\n"), ("s2c", b"CAL 2 RINGING 11752013\r\n"),
              ("s2c", b"JOI al\x00ice@example.com Al\x0bice\r\n")]
    src = tmp_path / "controls.msnp"
    src.write_text(format_chunks([Chunk(d, data, 1.0 + i / 10, "sb1") for i, (d, data) in enumerate(chunks)]))
    path = tmp_path / "controls.html"
    assert cli(["export", "-q", str(src), "-o", str(path)]) in (0, 1)
    opened = open_page(path)
    page = opened.page
    page.click("#tabs button[data-view='ladder']")
    page.wait_for_selector("#ladder g.arrow")
    with page.expect_download() as info:
        page.click("#ladder-svg")
    saved = tmp_path / "ladder.svg"
    info.value.save_as(saved)
    root = ET.parse(saved).getroot()   # a parse error here: the file is not XML
    texts = " ".join(t.text or "" for t in root.iter(SVG + "text"))
    assert "CAL 2 al" in texts and "\ufffd" in texts
    assert opened.errors == []


def test_a_transcript_beside_a_pcap_keeps_its_own_clock(tmp_path, open_page):
    # A transcript's times count from 0, a pcap's are wall-clock: they share no axis. Each clock
    # gets its own start (no "+1136116800.05" in the list), the axis and the plots show the pcap's,
    # and the transcript's lanes say they are on their own clock.
    path = tmp_path / "mixed.html"
    assert cli(["export", "-q", str(ROOT / "captures" / "msnp8_login_chat.pcap"),
                str(ROOT / "captures" / "msnp8_switchboard_chat.msnp"), "-o", str(path)]) == 0
    meta, rows = embedded(path)
    prov = meta["provenance"]
    assert prov["clock"] == "wall" and set(prov["clocks"]) == {"wall", "relative"}
    assert prov["first_ts"] > 1e9 and prov["last_ts"] - prov["first_ts"] < 60
    own = [li for li, l in enumerate(meta["lanes"]) if l["clock"] == "relative"]
    assert len(own) == 1
    for l in meta["lanes"]:  # every lane's density lies within the bins of its own clock
        assert all(0 <= b[0] < meta["bins"] for b in l["density"]) and sum(b[1] for b in l["density"]) > 0
    opened = open_page(path)
    page = opened.page
    times = page.eval_on_selector_all("#spacer .row .pos", "els => els.map(e => e.textContent)")
    assert times and all(abs(float(t)) < 60 for t in times)
    lane = meta["lanes"][own[0]]
    first_own = lane["first"]
    page.evaluate(f"location.hash = '#r{first_own}'")
    assert page.text_content(f"#spacer .row[data-row='{first_own}'] .pos") == "+0.000"
    assert "own clock 0.050" in page.text_content("#prov-range")
    page.click("#tabs button[data-view='plots']")
    assert "1 connection on another clock" in page.text_content("#plots-box")
    assert opened.errors == []
