"""The HTML timeline without a browser: embedding, CSP, redaction, rows, the export command."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from analyzer.outputs.html import page_data

from analyzer.outputs.html import CHUNK, hexdump, split_payload
from analyzer.outputs.html.template import embed_json
from outputs.browser.pages import HOSTILE_BODY, hostile_page, sample_page, write_page
from captures.sessions import SESSIONS

REAL = Path(__file__).resolve().parents[2].parent / "shared" / "captures-real"


def scripts(page: str) -> list[tuple[str, str]]:
    return re.findall(r"<script([^>]*)>(.*?)</script>", page, re.S)


def test_embed_json_is_inert_inside_a_script_element():
    value = {"x": "</script><!-- <script> & \u2028\u2029 é"}
    text = embed_json(value)
    for bad in ("<", ">", "&", "\u2028", "\u2029"):
        assert bad not in text
    assert json.loads(text) == value


def test_page_has_a_strict_csp_and_every_script_is_data_or_nonced(tmp_path):
    page_path = tmp_path / "t.html"
    sample_page(page_path)
    page = page_path.read_text()
    csp = re.search(r'http-equiv="Content-Security-Policy" content="([^"]+)"', page).group(1)
    assert "default-src 'none'" in csp and "unsafe-inline" not in csp and "unsafe-eval" not in csp
    nonce = re.search(r"script-src 'nonce-([^']+)'", csp).group(1)
    assert f"style-src 'nonce-{nonce}'" in csp
    found = scripts(page)
    code = [attrs for attrs, _ in found if "application/json" not in attrs]
    assert code == [f' nonce="{nonce}"']
    assert re.findall(r"<style([^>]*)>", page) == [f' nonce="{nonce}"']
    # Nothing that would make the browser fetch anything.
    assert not re.search(r"\b(src|href)\s*=", page.split("<script", 1)[0].split("</style>", 1)[1])
    assert "http://" not in page.replace("http-equiv", "") or "http://" in embedded_text(page)


def embedded_text(page: str) -> str:
    return "".join(body for attrs, body in scripts(page) if "application/json" in attrs)


def test_hostile_strings_never_reach_the_markup(tmp_path):
    path = tmp_path / "h.html"
    hostile_page(path)
    page = path.read_text()
    outside = re.sub(r"<script[^>]*>.*?</script>", "", page, flags=re.S)
    assert "__pwned" not in outside
    # Only our own script element ends with </script>: one per element, none from the data.
    assert page.count("</script>") == len(scripts(page))
    data = [json.loads(body) for attrs, body in scripts(page) if "application/json" in attrs]
    rows = [r for chunk in data[1:] for r in chunk]
    assert any(r[6] and r[6][1] == HOSTILE_BODY for r in rows)


def test_rows_pair_transactions_and_attach_anomalies(tmp_path):
    _, timeline = sample_page(tmp_path / "t.html")
    meta, rows = timeline.data()
    # Every command is one row; anomalies at a command's position go onto that row.
    assert sum(1 for r in rows if r[3] not in ("!", "~")) == meta["totals"]["commands"]
    for i, r in enumerate(rows):
        if r[8] and r[8][0] == 0:
            for rep in r[8][1]:
                assert rows[rep][8] == [1, i] and rows[rep][0] == r[0]
    ws = [r for r in rows if r[7] and any(a[0].startswith("msnp.whitespace.") for a in r[7])]
    assert ws and all(r[3] not in ("!", "~") for r in ws)
    # Lanes are contiguous and ordered by session.
    for lane in meta["lanes"]:
        assert {rows[i][0] for i in range(lane["first"], lane["first"] + lane["count"])} == \
            {meta["lanes"].index(lane)}
    sessions = [lane["session"] for lane in meta["lanes"]]
    assert sessions == sorted(sessions, key=sessions.index)
    assert meta["totals"]["logins"] == 2


def test_rows_are_chunked(tmp_path):
    many = {f"s{i}": SESSIONS["msnp8"] for i in range(20)}
    path = tmp_path / "many.html"
    _, timeline = write_page(path, many)
    meta = timeline.data()[0]
    page = path.read_text()
    ids = re.findall(r'<script type="application/json" id="(c\d+)">', page)
    assert len(ids) == meta["chunks"] == -(-meta["rows"] // CHUNK) > 1
    # The first chunk comes before the code, the others after it: the first screen needs no more.
    code_at = page.index("<script nonce=")
    assert page.index('id="c0"') < code_at < page.index('id="c1"')


def test_secrets_are_redacted_unless_asked(tmp_path):
    ticket = "53*1hAu8ADuD3TEwdXoOMi08sD"
    xfr = next(c.data for c in SESSIONS["msnp8"] if c.conn == "ns" and c.data.startswith(b"XFR") and b"CKI" in c.data)
    cookie = xfr.split()[5].decode()
    redacted = tmp_path / "r.html"
    sample_page(redacted)
    text = redacted.read_text()
    assert ticket not in text and "<redacted:" not in text and "\\u003credacted:" in text
    raw = tmp_path / "raw.html"
    sample_page(raw, redact=False)
    assert ticket in raw.read_text()
    assert cookie in raw.read_text() and cookie not in text


def test_split_payload_mime_and_binary():
    head, body, is_hex, n = split_payload(b"MIME-Version: 1.0\r\nContent-Type: text/plain\r\n\r\nhi")
    assert head == "MIME-Version: 1.0\r\nContent-Type: text/plain" and body == "hi" and not is_hex and n == 49
    p2p = b"MIME-Version: 1.0\r\nContent-Type: application/x-msnmsgrp2p\r\nP2P-Dest: a@b\r\n\r\n" + bytes(range(52))
    head, body, is_hex, n = split_payload(p2p)
    assert is_hex and body.startswith("000000  00 01 02") and "P2P-Dest" in head
    assert split_payload(b"<xml/>")[:3] == ["", "<xml/>", 0]
    assert hexdump(b"AB\x00") == "000000  41 42 00" + " " * 39 + "  AB."


def run_cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "analyzer", *args], capture_output=True, text=True, cwd=cwd)


def test_export_command_writes_a_page_and_json(tmp_path):
    from analyzer.msnp.transcript import format_chunks
    src = tmp_path / "msnp8.msnp"
    src.write_text(format_chunks(SESSIONS["msnp8"]))
    out = tmp_path / "t.html"
    proc = run_cli("export", str(src), str(Path("captures/msnp8_switchboard_chat.msnp").resolve()),
                   "-o", str(out), "--json", str(tmp_path / "t.jsonl"))
    assert proc.returncode == 0, proc.stderr
    page = out.read_text()
    meta, _ = page_data(page)
    assert meta["sources"] == ["msnp8.msnp", "msnp8_switchboard_chat.msnp"]
    assert [l["id"] for l in meta["lanes"] if l["id"].startswith("1:")] == ["1:ds", "1:ns", "1:sb1", "1:sb2"]
    assert "2:1" in [l["id"] for l in meta["lanes"]]
    kinds = {json.loads(line)["kind"] for line in (tmp_path / "t.jsonl").read_text().splitlines()}
    assert {"command", "link", "session", "chat"} <= kinds


@pytest.mark.parametrize("args, message", [
    (["export", "nope.pcap", "-o", "x.html"], "nope.pcap: no such file"),
    (["export", "README.md", "-o", "x.html"], "README.md: not a capture, transcript or MSNP stream: a text file starting '# msnp-analyzer'"),
    (["export", "captures/msnp8_switchboard_chat.msnp", "-o", "/nonexistent/dir/x.html"], "does not exist"),
])
def test_export_unusable_input_is_one_line_and_exit_2(args, message):
    proc = run_cli(*args)
    assert proc.returncode == 2
    assert message in proc.stderr and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


@pytest.mark.skipif(not (REAL / "ndpi_msnms.pcap").exists(), reason="../shared/captures-real not beside the clone")
def test_export_reads_a_pcap(tmp_path):
    out = tmp_path / "ndpi.html"
    proc = run_cli("export", str(REAL / "ndpi_msnms.pcap"), "-o", str(out))
    assert proc.returncode in (0, 1), proc.stderr
    meta, _ = page_data(out.read_text())
    assert meta["totals"]["connections"] == 6
    linked = [l for l in meta["lanes"] if l["link"]]
    assert len(linked) == 4 and all(l["link"]["from"] == "2" for l in linked)


def page_meta(path: Path) -> dict:
    return page_data(path.read_text())[0]


def test_decode_html_option(tmp_path):
    out = tmp_path / "d.html"
    proc = run_cli("decode", "captures/msnp8_switchboard_chat.msnp", "--html", str(out))
    assert proc.returncode == 0, proc.stderr
    meta = page_meta(out)
    assert meta["sources"] == ["msnp8_switchboard_chat.msnp"] and meta["rows"] == meta["totals"]["commands"]
    proc = run_cli("decode", "captures/msnp8_switchboard_chat.msnp", "--html", str(tmp_path / "no" / "x.html"))
    assert proc.returncode == 2 and "cannot write there" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.skipif(not (REAL / "ndpi_msnms.pcap").exists(), reason="../shared/captures-real not beside the clone")
def test_analyze_html_option(tmp_path):
    out = tmp_path / "a.html"
    proc = run_cli("analyze", str(REAL / "ndpi_msnms.pcap"), "--html", str(out), "--json", str(tmp_path / "a.jsonl"))
    assert proc.returncode in (0, 1), proc.stderr
    meta = page_meta(out)
    assert meta["totals"]["connections"] == 6 and sum(1 for lane in meta["lanes"] if lane["link"]) == 4
    links = [json.loads(line) for line in (tmp_path / "a.jsonl").read_text().splitlines()
             if '"kind":"link"' in line]
    assert sum(1 for link in links if link["linked"]) == 4


def test_proxy_html_is_written_at_exit(tmp_path):
    # `demo` runs the live proxy (the same session code as `proxy`) on a scripted loopback service.
    out = tmp_path / "p.html"
    proc = run_cli("demo", "--msnp", "8", "--quiet", "--html", str(out), "--json", str(tmp_path / "p.jsonl"))
    assert proc.returncode == 0, proc.stderr
    meta = page_meta(out)
    roles = [lane["role"] for lane in meta["lanes"]]
    assert roles[:2] == ["DS", "NS"] and roles.count("SB") >= 2
    assert meta["totals"]["logins"] == 1
    assert [lane["link"]["by"] for lane in meta["lanes"][1:]][:1] == ["xfr_ns"]
    assert all(lane["link"] for lane in meta["lanes"] if lane["role"] == "SB")


def test_plugins_contribute_sections_and_decoded_payloads(tmp_path):
    out = tmp_path / "s.html"
    proc = run_cli("export", "captures/msnp8_login_chat.pcap", "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    page = out.read_text()
    meta = page_meta(out)
    titles = {s["plugin"]: s["title"] for s in meta["sections"] if s["plugin"]}
    assert {"challenge", "chat", "mime"} <= set(titles)
    challenge = next(s for s in meta["sections"] if s["plugin"] == "challenge")
    # The analyzer's own sections (contact lists) carry no plugin name.
    assert any(s["plugin"] is None and s["title"].startswith("Contacts of ") for s in meta["sections"])
    assert [row[-1] for row in challenge["rows"]] == ["correct"]
    chunk = json.loads(re.search(r'id="c0">(.*?)</script>', page, re.S).group(1))
    decoded = [r[6][4] for r in chunk if r[6] and len(r[6]) > 4]
    assert decoded and any(d["plugin"] == "mime" for d in decoded)
    # Without plugins there is nothing of theirs in the page.
    proc = run_cli("export", "captures/msnp8_login_chat.pcap", "-o", str(out), "--no-plugins")
    assert proc.returncode == 0 and [s for s in page_meta(out)["sections"] if s["plugin"]] == []
