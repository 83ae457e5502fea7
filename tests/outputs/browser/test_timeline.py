"""The HTML timeline in a real headless Chromium: lanes, counts, selection, filters, safety."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from .pages import CANARY, HOSTILE_BODY, HOSTILE_NICK, hostile_page, sample_page, write_page


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    path = tmp_path_factory.mktemp("html") / "sample.html"
    analysis, timeline = sample_page(path)
    meta, rows = timeline.data()
    return path, analysis, meta, rows


def visible_rows(page):
    return page.eval_on_selector_all(
        "#spacer .row", "els => els.map(e => ({row: +e.dataset.row, cls: e.className,"
        " cmd: e.querySelector('.cmd').textContent, text: e.textContent}))")


def shown_count(page) -> int:
    return int(page.text_content("#shown").split()[0])


def test_lanes_and_counts(sample, open_page):
    path, analysis, meta, rows = sample
    opened = open_page(path)
    page = opened.page
    first_lanes = page.eval_on_selector_all("#spacer .lane", "els => els.map(e => e.dataset.lane)")
    assert first_lanes[:2] == ["msnp8:ds", "msnp8:ns"]
    lanes = page.eval_on_selector_all("#f-conn option", "els => els.slice(1).map(e => e.textContent)")
    # One lane per connection, grouped by login session: msnp8's DS, NS, SB1, SB2 in that order.
    assert len(lanes) == len(analysis.connections)
    assert [lane.split("]")[0] for lane in lanes[:4]] == ["[msnp8:ds", "[msnp8:ns", "[msnp8:sb1", "[msnp8:sb2"]
    totals = analysis.totals()
    header = page.text_content("#totals")
    assert f"connections:{len(analysis.connections)}" in header.replace(" ", "")
    assert f"commands:{sum(totals['commands'].values())}" in header.replace(" ", "")
    assert "msnp.reply.out_of_order" in header and "logins:2" in header.replace(" ", "")
    assert shown_count(page) == len(rows)
    first = visible_rows(page)[0]
    assert first["cmd"] == "VER" and ">>>" in first["text"]
    assert opened.errors == []


def test_clicking_a_request_highlights_its_replies_and_shows_latency(sample, open_page):
    path, _, meta, rows = sample
    # A request with a reply in the DS lane (visible on the first screen).
    req = next(i for i, r in enumerate(rows) if r[8] and r[8][0] == 0 and r[8][1] and r[8][3] is not None)
    replies = rows[req][8][1]
    opened = open_page(path)
    page = opened.page
    page.click(f"#spacer .row[data-row='{req}'] .cmd")
    for rep in replies:
        assert "reply" in page.get_attribute(f"#spacer .row[data-row='{rep}']", "class")
    assert "selected" in page.get_attribute(f"#spacer .row[data-row='{req}']", "class")
    detail = page.text_content("#detail")
    assert f"{rows[req][8][3]:g} ms" in detail and "latency" in detail
    # Clicking a reply highlights its request instead.
    page.click(f"#spacer .row[data-row='{replies[0]}'] .cmd")
    assert "request" in page.get_attribute(f"#spacer .row[data-row='{req}']", "class")
    assert page.evaluate("location.hash") == f"#r{replies[0]}"


def test_each_filter_narrows_the_rows(sample, open_page):
    path, _, meta, rows = sample
    page = open_page(path).page
    total = shown_count(page)
    page.select_option("#f-cmd", "MSG")
    n_msg = shown_count(page)
    assert 0 < n_msg < total and n_msg == sum(1 for r in rows if r[3] == "MSG")
    assert {r["cmd"] for r in visible_rows(page)} == {"MSG"}
    page.select_option("#f-cmd", "")
    lane = next(i for i, l in enumerate(meta["lanes"]) if l["id"] == "msnp8:sb1")
    page.select_option("#f-conn", str(lane))
    assert shown_count(page) == meta["lanes"][lane]["count"] < total
    assert page.eval_on_selector_all("#spacer .lane", "els => els.map(e => e.dataset.lane)") == ["msnp8:sb1"]
    page.select_option("#f-conn", "")
    page.select_option("#f-anom", "msnp.whitespace.tab")
    marked = visible_rows(page)
    assert shown_count(page) == len(marked) >= 1
    assert all("msnp.whitespace.tab" in r["text"] for r in marked)
    page.select_option("#f-anom", "")
    page.fill("#q", "carol@example.com")
    expect(page.locator("#shown")).not_to_have_text(f"{total} of {total} rows")
    hits = visible_rows(page)
    assert 0 < shown_count(page) < total
    assert all("carol@example.com" in r["text"].lower() or r["cmd"] == "MSG" for r in hits)


def test_anomalies_are_marked_where_they_happened(sample, open_page):
    path, _, meta, rows = sample
    ooo = next(i for i, r in enumerate(rows) if r[7] and any(a[0] == "msnp.reply.out_of_order" for a in r[7]))
    page = open_page(path, fragment=f"#r{ooo}").page
    row = page.wait_for_selector(f"#spacer .row[data-row='{ooo}']")
    assert "selected" in row.get_attribute("class")
    badge = page.wait_for_selector(f"#spacer .row[data-row='{ooo}'] .badge.sev-info")
    assert badge.text_content() == "msnp.reply.out_of_order"
    assert "came before the replies to 1 earlier request(s)" in badge.get_attribute("title")
    assert "a reply came before the replies to earlier requests" in page.text_content("#detail")


def test_payload_is_shown_in_the_detail(sample, open_page):
    path, _, meta, rows = sample
    msg = next(i for i, r in enumerate(rows) if r[3] == "MSG" and r[6] and r[6][0].startswith("MIME-Version"))
    page = open_page(path, fragment=f"#r{msg}").page
    page.wait_for_selector("#detail details pre.headers")
    assert page.text_content("#detail pre.headers").startswith("MIME-Version: 1.0")
    assert page.text_content("#detail pre.body") == rows[msg][6][1]


def test_only_the_rows_on_screen_are_in_the_document(tmp_path, open_page):
    from captures.sessions import SESSIONS
    many = {f"s{i}": SESSIONS["msnp8"] for i in range(60)}  # ~4,000 rows
    _, timeline = write_page(tmp_path / "many.html", many)
    total = timeline.data()[0]["rows"]
    page = open_page(tmp_path / "many.html").page
    assert shown_count(page) == total > 3000
    assert len(visible_rows(page)) < 100
    page.eval_on_selector("#list", "el => { el.scrollTop = el.scrollHeight; }")
    page.wait_for_selector(f"#spacer .row[data-row='{total - 1}']")
    assert len(visible_rows(page)) < 100


def test_hostile_capture_runs_no_script_and_shows_markup_as_text(tmp_path, open_page):
    path = tmp_path / "hostile.html"
    _, timeline = hostile_page(path)
    opened = open_page(path)
    page = opened.page
    rows = visible_rows(page)
    for row in rows:  # every row's detail too: headers, body, parameters
        page.click(f"#spacer .row[data-row='{row['row']}'] .cmd")
    assert page.evaluate("typeof window.__pwned") == "undefined"
    assert page.evaluate("document.querySelectorAll('img, iframe, object, embed, style:not([nonce])').length") == 0
    assert page.evaluate("[...document.scripts].every(s => s.type == 'application/json' || s.nonce)")
    assert page.evaluate("document.querySelectorAll('a[href^=javascript]').length") == 0
    text = page.text_content("#list")
    assert HOSTILE_NICK in text and "<img src=x onerror=window.__pwned=1>" in text
    msg = next(r["row"] for r in rows if r["cmd"] == "MSG")
    page.click(f"#spacer .row[data-row='{msg}'] .cmd")
    assert page.text_content("#detail pre.body") == HOSTILE_BODY
    assert opened.foreign_requests() == []
    assert opened.errors == []
    assert CANARY in page.content()  # it is there, as text


def test_pages_make_no_network_request(sample, tmp_path, open_page):
    path, _, meta, rows = sample
    opened = open_page(path)
    page = opened.page
    page.select_option("#f-cmd", "MSG")
    page.select_option("#f-cmd", "")
    page.click("#spacer .row .cmd")
    assert opened.requests == [opened.url]
    assert opened.foreign_requests() == []
