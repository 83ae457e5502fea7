"""The streamed HTML exporter (#19): the same data as the exporter that held every row, bounded
state, the contract's additions (provenance, referrals, density, chats, rewrites, merged order)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from analyzer.analysis.linking import Linker
from analyzer.analysis.redact import Redactor
from analyzer.analysis.run import Analysis
from analyzer.capture.files import feed_capture
from analyzer.msnp import C2S, S2C, encode_command
from analyzer.outputs import html as html_out
from analyzer.outputs.html import CHUNK, HtmlTimeline
from analyzer.plugins import PluginOptions, load_plugins
from analyzer.text import clean
from outputs.html_reference import ReferenceTimeline

ROOT = Path(__file__).resolve().parents[2]
REAL = ROOT.parent / "shared" / "captures-real"
SAMPLES = sorted(p.name for p in (ROOT / "captures").iterdir() if p.suffix in (".pcap", ".pcapng", ".msnp"))
REALS = sorted(p.name for p in REAL.iterdir() if p.suffix in (".pcap", ".pcapng")) if REAL.is_dir() else []


def both(paths: list[Path], redact: bool = True, plugins: bool = True):
    """Run the streamed exporter and the reference (the exporter before streaming) side by side."""
    redactor = Redactor(enabled=redact, key=b"k" * 16)
    linker = Linker(redactor)
    new = HtmlTimeline(None, linker, redactor, sources=[p.name for p in paths])
    old = ReferenceTimeline(None, linker, redactor, sources=[p.name for p in paths])
    analysis = Analysis([linker, new, old], redactor=redactor)
    new.written = old.written = True  # rendered below
    if plugins:
        manager = load_plugins(PluginOptions(), analysis)
        new.plugins = old.plugins = manager
        analysis.sinks.append(manager)
    for n, path in enumerate(paths, 1):
        feed_capture(analysis, str(path), prefix=f"{n}:" if len(paths) > 1 else "")
    analysis.finish()
    return new, old


def masked(rows: list[list]) -> list[list]:
    """Rows with the payload length left out (it is the wire length now, the redacted one before)."""
    out = []
    for r in rows:
        r = list(r)
        if r[6]:
            r[6] = r[6][:3] + r[6][4:]
        out.append(r)
    return out


def assert_same_data(new: HtmlTimeline, old: ReferenceTimeline) -> tuple[dict, list]:
    meta, rows = new.data()
    ref_meta, ref_rows = old.data()
    assert masked(rows) == masked(ref_rows)
    assert len(rows) == meta["rows"] == ref_meta["rows"]
    for key, value in ref_meta.items():
        if key == "lanes":
            assert [{k: lane[k] for k in value[0]} for lane in meta["lanes"]] == value if value else not meta["lanes"]
        elif key == "totals":
            assert {k: meta["totals"][k] for k in value} == value
        else:
            assert meta[key] == value, key
    return meta, rows


@pytest.mark.parametrize("name", SAMPLES)
def test_streamed_data_equals_the_reference_on_the_samples(name):
    new, old = both([ROOT / "captures" / name])
    meta, rows = assert_same_data(new, old)
    assert meta["totals"]["commands"] > 0


@pytest.mark.skipif(not REALS, reason="../shared/captures-real not beside the clone")
@pytest.mark.parametrize("name", REALS)
def test_streamed_data_equals_the_reference_on_real_captures(name):
    new, old = both([REAL / name])
    assert_same_data(new, old)


def test_streamed_data_equals_the_reference_unredacted_and_merged_inputs():
    paths = [ROOT / "captures" / "msnp8.msnp", ROOT / "captures" / "msnp8_login_chat.pcap"]
    new, old = both(paths, redact=False)
    meta, _ = assert_same_data(new, old)
    assert meta["sources"] == ["msnp8.msnp", "msnp8_login_chat.pcap"]


def page_parts(page: str) -> dict[str, object]:
    return {m.group(1): json.loads(m.group(2)) for m in
            re.finditer(r'<script type="application/json" id="([a-z]\d*|meta)">(.*?)</script>', page, re.S)}


def test_merged_chunks_are_every_row_once_in_time_order():
    paths = [ROOT / "captures" / "msnp8_login_chat.pcap", ROOT / "captures" / "msnp15_login_chat.pcap"]
    new, _ = both(paths)
    parts = page_parts(new.render())
    meta = parts["meta"]
    rows = [r for k in range(meta["chunks"]) for r in parts[f"c{k}"]]
    merged = [g for k in range(meta["merged"]) for g in parts[f"m{k}"]]
    assert meta["merged"] == meta["chunks"] > 0 and all(len(parts[f"m{k}"]) <= CHUNK for k in range(meta["merged"]))
    assert sorted(merged) == list(range(len(rows)))
    times = [rows[g][1] for g in merged if rows[g][1] is not None]
    assert times == sorted(times) and len({r[0] for r in rows}) > 1
    # Ties keep lane order, and each lane keeps its own order.
    for lane in range(len(meta["lanes"])):
        mine = [g for g in merged if rows[g][0] == lane]
        assert mine == sorted(mine)


def test_payload_length_is_the_wire_length_before_redaction():
    qry = b"c8d9f9a1d13e2a4d4fb2c1b2d0f2e1a7"  # a 32-byte QRY answer: redacted, but 32 bytes on the wire
    assert len(qry) == 32
    chunks = [(C2S, encode_command("VER", 1, ["MSNP11", "CVR0"])), (S2C, encode_command("VER", 1, ["MSNP11"])),
              (S2C, encode_command("CHL", 0, ["15570131571988941333"])),
              (C2S, encode_command("QRY", 2, ["PROD0090YUAUV{2B"], qry)), (S2C, encode_command("QRY", 2, []))]
    redactor = Redactor(key=b"k" * 16)
    linker = Linker(redactor)
    timeline = HtmlTimeline(None, linker, redactor)
    analysis = Analysis([linker, timeline], redactor=redactor)
    conn = analysis.open(conn_id="ns")
    for i, (way, data) in enumerate(chunks):
        analysis.feed(conn, way, data, 1.0 + i)
    timeline.written = True
    analysis.finish()
    _, rows = timeline.data()
    [row] = [r for r in rows if r[3] == "QRY" and r[6]]
    assert row[6][3] == 32 and qry.decode() not in json.dumps(row)
    assert len(row[6][1]) != 32  # what is shown is the masked answer


def test_contract_additions_on_a_login_with_chats(tmp_path):
    new, _ = both([ROOT / "captures" / "msnp8_login_chat.pcap"])
    meta, rows = new.data()
    prov = meta["provenance"]
    assert prov["sources"] == ["msnp8_login_chat.pcap"] and prov["redacted"] is True
    assert prov["implementation"] in ("rust", "python") and prov["version"]
    times = [r[1] for r in rows if r[1] is not None]
    assert prov["first_ts"] == min(times) and prov["last_ts"] == max(times) and prov["first_ts"] > 1e8
    lanes = meta["lanes"]
    roles = [lane["role"] for lane in lanes]
    assert roles[:2] == ["DS", "NS"] and "SB" in roles
    # Each linked lane points at the XFR/RNG row of its parent that opened it.
    referred = [lane for lane in lanes if lane["referral"]]
    assert len(referred) == sum(1 for lane in lanes if lane["link"]) >= 2
    for lane in referred:
        ref = lane["referral"]
        parent = lanes[ref["lane"]]
        row = rows[ref["row"]]
        assert parent["id"] == lane["link"]["from"] and row[0] == ref["lane"]
        assert row[2] == 1 and row[3] in ("XFR", "RNG")
        assert parent["first"] <= ref["row"] < parent["first"] + parent["count"]
    assert lanes[0]["referral"] is None
    # Density: sparse bins over the capture's range that count every command and anomaly of the lane.
    assert meta["bins"] > 0
    for li, lane in enumerate(lanes):
        mine = rows[lane["first"]:lane["first"] + lane["count"]]
        bins = [b for b, _, _ in lane["density"]]
        assert bins == sorted(set(bins)) and all(0 <= b < meta["bins"] for b in bins)
        assert sum(c for _, c, _ in lane["density"]) == sum(1 for r in mine if r[3] not in ("!", "~"))
        assert sum(a for _, _, a in lane["density"]) == sum(len(r[7]) for r in mine if r[7])
    span = prov["last_ts"] - prov["first_ts"]
    last_row = rows[lanes[1]["first"] + lanes[1]["count"] - 1]
    assert lanes[1]["density"][-1][0] == min(meta["bins"] - 1, int((last_row[1] - prov["first_ts"]) / span * meta["bins"]))
    chats = meta["chats"]
    assert chats and all(lanes[c["lane"]]["role"] == "SB" for c in chats)
    assert all(isinstance(h, str) for c in chats for h in c["participants"]) and any(c["participants"] for c in chats)
    assert meta["rewrites"] == [] and meta["totals"]["rewrites"] == 0


def test_proxy_rewrites_reach_the_page(tmp_path):
    # `demo` runs the live proxy on a scripted loopback service: its XFR/RNG lines are rewritten.
    import subprocess
    import sys
    out = tmp_path / "p.html"
    proc = subprocess.run([sys.executable, "-m", "analyzer", "demo", "--msnp", "8", "--quiet", "--html", str(out)],
                          capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    parts = page_parts(out.read_text())
    meta = parts["meta"]
    rows = [r for k in range(meta["chunks"]) for r in parts[f"c{k}"]]
    rewrites = meta["rewrites"]
    assert rewrites and meta["totals"]["rewrites"] == len(rewrites)
    for rw in rewrites:
        row = rows[rw["row"]]
        assert row[0] == rw["lane"] and row[3] == rw["command"] and row[2] == 1
        assert rw["upstream"] != rw["given"] and rw["upstream"] in row[5]
        assert re.fullmatch(r"127\.\d+\.\d+\.\d+:\d+", rw["given"])
    assert {rw["command"] for rw in rewrites} >= {"XFR"}


def test_rows_live_on_disk_and_the_index_is_a_window(monkeypatch):
    monkeypatch.setattr(html_out, "INDEX_WINDOW", 50)
    redactor = Redactor(key=b"k" * 16)
    linker = Linker(redactor)
    timeline = HtmlTimeline(None, linker, redactor)
    analysis = Analysis([linker, timeline], redactor=redactor)
    conn = analysis.open(conn_id="ns")
    for i in range(400):
        analysis.feed(conn, C2S, encode_command("PNG", None, []), 1.0 + i)
        analysis.feed(conn, S2C, encode_command("QNG", None, ["50"]), 1.0 + i + 0.5)
    timeline.written = True
    lane = timeline.lanes["ns"]
    assert len(lane.index) <= 50 and lane.count == 800
    # In memory: one block being filled and 8 bytes per block written; the rows are on disk.
    assert len(lane.buf) < html_out.BLOCK * html_out.ROW_BYTES
    assert len(lane.blocks) == 800 // html_out.BLOCK
    assert timeline.table.size == len(lane.blocks) * html_out.BLOCK * html_out.ROW_BYTES
    analysis.finish()
    assert len(lane.index) <= html_out.ENDED_WINDOW and lane.pending == {}
    meta, rows = timeline.data()
    # Pairing still shows for every PNG/QNG (each answered within the window).
    assert sum(1 for r in rows if r[8] and r[8][0] == 0 and r[8][1]) == 400


def test_a_transaction_past_the_index_window_loses_its_link_not_its_rows(monkeypatch):
    monkeypatch.setattr(html_out, "INDEX_WINDOW", 8)
    redactor = Redactor(key=b"k" * 16)
    linker = Linker(redactor)
    timeline = HtmlTimeline(None, linker, redactor)
    analysis = Analysis([linker, timeline], redactor=redactor)
    conn = analysis.open(conn_id="ns")
    analysis.feed(conn, C2S, encode_command("CHG", 1, ["NLN", "0"]), 1.0)
    for i in range(20):
        analysis.feed(conn, S2C, encode_command("NLN", None, ["NLN", f"u{i}@example.com", "U", "0"]), 1.1 + i / 100)
    analysis.feed(conn, S2C, encode_command("CHG", 1, ["NLN", "0"]), 2.0)
    timeline.written = True
    analysis.finish()
    meta, rows = timeline.data()
    assert len(rows) == 22 and [r[3] for r in rows][:2] == ["CHG", "NLN"]
    assert rows[0][8] == 0  # its request fell out of the window: no link rather than a wrong one


def test_hostile_strings_stay_data_after_the_spool(tmp_path):
    from outputs.browser.pages import HOSTILE_BODY, hostile_page
    path = tmp_path / "h.html"
    hostile_page(path)
    page = path.read_text()
    assert page.count("</script>") == len(re.findall(r"<script[^>]*>", page))
    parts = page_parts(page)
    rows = [r for k in range(parts["meta"]["chunks"]) for r in parts[f"c{k}"]]
    assert any(r[6] and r[6][1] == HOSTILE_BODY for r in rows)


def test_a_lone_surrogate_is_cleaned_not_a_crash():
    redactor = Redactor(key=b"k" * 16)
    linker = Linker(redactor)
    timeline = HtmlTimeline(None, linker, redactor, sources=["bad\udcff.pcap"])
    analysis = Analysis([linker, timeline], redactor=redactor)
    conn = analysis.open(conn_id="sb")
    analysis.feed(conn, C2S, encode_command("USR", 1, ["alice@example.com", "1.2.3"]), 1.0)
    timeline.written = True
    analysis.finish()
    page = timeline.render()
    page.encode("utf-8")
    assert page_parts(page)["meta"]["sources"] == [clean("bad\udcff.pcap")] != ["bad\udcff.pcap"]


def test_a_failed_run_leaves_no_half_page(tmp_path, monkeypatch):
    out = tmp_path / "t.html"
    out.write_text("old page")
    redactor = Redactor(key=b"k" * 16)
    linker = Linker(redactor)
    timeline = HtmlTimeline(str(out), linker, redactor)
    analysis = Analysis([linker, timeline], redactor=redactor)
    conn = analysis.open(conn_id="ns")
    for i in range(3 * CHUNK):
        analysis.feed(conn, C2S, encode_command("PNG", None, []), 1.0 + i)

    def broken(plan):
        yield from HtmlTimeline._merged(timeline, plan)
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(timeline, "_merged", broken)
    with pytest.raises(OSError):
        analysis.finish()
    assert out.read_text() == "old page"
    assert [p.name for p in tmp_path.iterdir()] == ["t.html"]


@pytest.mark.parametrize("block", [1, 2, 3])
@pytest.mark.parametrize("name", ["msnp8_anomalies.pcap", "anomalies.msnp", "msnp15_login_chat.pcap"])
def test_rows_updated_on_disk_give_the_same_data(monkeypatch, block, name):
    # Tiny blocks: nearly every link and late anomaly is written into a block already on disk,
    # and rows after a connection's end go into its padded last block.
    monkeypatch.setattr(html_out, "BLOCK", block)
    new, old = both([ROOT / "captures" / name])
    meta, rows = assert_same_data(new, old)
    assert any(r[8] for r in rows) and (any(r[7] for r in rows) or "anomalies" not in name)
    assert new.table.size >= meta["rows"] * html_out.ROW_BYTES
