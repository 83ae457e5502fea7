"""Issue #15, case by case: each input beside this file and the invariant it broke.

1. no traceback, exit 0/1/2, what was read before the damage kept, every text path
   survives any code point; 2. no secret in any output; 3. nothing from the wire acts
   on the terminal; 4. no input overwritten, no half-written output.
The inputs are written by make_inputs.py (run it to regenerate them).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from analyzer.cli.main import main

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
SAMPLE = ROOT / "captures" / "msnp8_login_chat.pcap"
ESC = ("\x1b", "\x9b", "\x07", "\x90", "\x9d")  # ESC, 8-bit CSI, BEL, 8-bit DCS and OSC


def cli(capsys, *argv) -> tuple[int, str, str]:
    """Run the command in this process: an exception here is the traceback a user would see."""
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def page_data(path: Path) -> list:
    """Every JSON element a timeline page embeds, parsed strictly (the page shows nothing if one fails)."""
    import re
    page = path.read_bytes().decode("utf-8")
    blocks = re.findall(r'<script type="application/json" id="[^"]+">(.*?)</script>', page, re.S)
    assert blocks
    return [strict_json(b) for b in blocks]


def jsonl(path: Path) -> list[dict]:
    raw = path.read_bytes()
    raw.decode("utf-8")  # valid UTF-8 (strict)
    return [json.loads(line) for line in raw.decode().splitlines()]


def strict_json(line: str):
    def bad(name):
        raise AssertionError(f"{name} is not JSON")
    return json.loads(line, parse_constant=bad)


# -- 1. crashes ----------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["chat", "chat-json", "decode", "export"])
def test_a_charset_decoding_to_a_lone_surrogate_reaches_every_writer(tmp_path, capsys, mode):
    src = HERE / "surrogate_charset.msnp"
    if mode == "chat":
        rc, out, _ = cli(capsys, "chat", src)
        assert "\\ud800 hi" in out
    elif mode == "chat-json":
        rc, out, _ = cli(capsys, "chat", "--json", src)
        assert [strict_json(line)["text"] for line in out.splitlines()] == ["\\ud800 hi"]
    elif mode == "decode":
        rc, out, _ = cli(capsys, "decode", "-v", src, "--json", tmp_path / "o.jsonl", "--html", tmp_path / "o.html")
        recs = jsonl(tmp_path / "o.jsonl")
        assert sum(r["kind"] == "command" for r in recs) == 7
        assert "\\ud800" in out
        assert "\\ud800 hi" in (tmp_path / "o.html").read_text("utf-8")
        assert "\\ud800 hi" in json.dumps(page_data(tmp_path / "o.html"))
    else:
        rc, _, _ = cli(capsys, "export", src, "-o", tmp_path / "t.html")
        assert (tmp_path / "t.html").stat().st_size > 10_000
    assert rc in (0, 1)


def test_a_file_name_that_is_not_utf8_reaches_every_writer(tmp_path, capsys):
    odd = tmp_path / os.fsdecode(b"caf\xe9 \x1b[2J.pcap")
    shutil.copy(SAMPLE, odd)
    rc, out, _ = cli(capsys, "analyze", odd, "--json", tmp_path / "o.jsonl", "--html", tmp_path / "o.html")
    assert rc == 0 and "\x1b" not in out  # the name is in the captures table, escaped (and folded)
    assert sum(r["kind"] == "command" for r in jsonl(tmp_path / "o.jsonl")) > 20
    assert "caf\\xe9 \x1b[2J.pcap" in page_data(tmp_path / "o.html")[0]["sources"]  # the name, escaped
    rc, _, _ = cli(capsys, "export", odd, "-o", tmp_path / os.fsdecode(b"t\xff.html"))
    assert rc == 0 and (tmp_path / os.fsdecode(b"t\xff.html")).stat().st_size > 10_000
    assert cli(capsys, "chat", odd)[0] == 0


@pytest.mark.parametrize("name", ["simple_packets.pcapng", "simple_packets_snaplen0.pcapng", "other_blocks.pcapng"])
def test_every_standard_pcapng_block_type_is_read(tmp_path, capsys, name):
    rc, _, _ = cli(capsys, "analyze", HERE / name, "--json", tmp_path / "o.jsonl")
    recs = jsonl(tmp_path / "o.jsonl")
    assert [r["cmd"] for r in recs if r["kind"] == "command"] == ["VER", "VER", "CVR", "CVR"]
    anomalies = [r["name"] for r in recs if r["kind"] == "anomaly"]
    if name.startswith("simple"):
        assert anomalies == ["capture.pcapng.no_timestamp"]  # and no capture.truncated
    else:
        assert anomalies == []  # NRB, ISB, DSB, custom and unknown blocks are no damage
    assert rc == 0
    rc, _, _ = cli(capsys, "export", HERE / name, "-o", tmp_path / "t.html")
    assert rc == 0
    assert cli(capsys, "chat", HERE / name)[0] == 0


@pytest.mark.parametrize("name,after", [("flow_no_type.mitm", True), ("flow_deep.mitm", True),
                                        ("flow_bad_state.mitm", True), ("flow_cut.mitm", False)])
def test_a_damaged_flow_file_keeps_its_good_flows(tmp_path, capsys, name, after):
    rc, _, _ = cli(capsys, "analyze", HERE / name, "--json", tmp_path / "o.jsonl")
    recs = jsonl(tmp_path / "o.jsonl")
    vers = sorted(r["trid"] for r in recs if r["kind"] == "command")
    assert vers == ([1, 1, 2, 2] if after else [1, 1])  # the flow before the damage, and the one after it
    assert [r["name"] for r in recs if r["kind"] == "anomaly"] == ["mitm.flowfile.corrupt"]
    assert rc == 1


def test_an_absurd_transcript_time_is_a_one_line_error_and_no_output_is_touched(tmp_path, capsys):
    out = tmp_path / "o.jsonl"
    out.write_text("before\n")
    rc, _, err = cli(capsys, "decode", HERE / "huge_time.msnp", "--json", out)
    assert rc == 2 and err.count("\n") == 1 and "beyond the year 9999" in err
    assert out.read_text() == "before\n" and list(tmp_path.iterdir()) == [out]


def test_json_lines_never_hold_infinity_or_nan():
    import io

    from analyzer.msnp import C2S, Anomaly, Command
    from analyzer.outputs.jsonl import JsonLinesWriter
    buf = io.StringIO()
    writer = JsonLinesWriter(buf)
    writer.event(None, Command(C2S, "PNG", None, [], b"PNG\r\n", None, None, 0, float("inf")))
    writer.event(None, Anomaly("msnp.line.garbage", "x", C2S, 0, float("-inf")))
    writer.event(None, {"kind": "http", "ts": float("nan"), "url": "\ud800\udce9"})
    recs = [strict_json(line) for line in buf.getvalue().splitlines()]
    assert [r["ts"] for r in recs] == [None, None, None]
    assert recs[2]["url"] == "\\ud800\\xe9"


# -- 2. secrets ----------------------------------------------------------------------


def outputs_of(tmp_path, capsys, src, *extra) -> str:
    rc, out, err = cli(capsys, "decode", "-v", src, "--json", tmp_path / "o.jsonl", "--html", tmp_path / "o.html",
                       *extra)
    assert rc in (0, 1)
    return out + err + (tmp_path / "o.jsonl").read_text("utf-8") + (tmp_path / "o.html").read_text("utf-8")


SECRETS = ["SECRETTICKETt0k3n", "SECRETPROFILEp4ss", "SECRETSSORESPONSE", "SECRETSHATICKETbase64",
           "SECRETMD5HASHlowercase", "SECRETQRYANSWER", "SECRETXFRCOOKIE", "SECRETRNGCOOKIE",
           "SECRETMSPAUTHspace", "SECRETMSPAUTHlower", "SECRETMSPPROF", "SECRETANSCOOKIE",
           "SECRETAUTHCOOKIE", "SECRETSID", "SECRETKV"]


def test_every_secret_of_the_issue_is_masked_in_every_output(tmp_path, capsys):
    text = outputs_of(tmp_path, capsys, HERE / "secrets.msnp")
    leaked = [s for s in SECRETS if s in text]
    assert leaked == []
    assert "SHA A <redacted:" in text and "usr 4 md5 s <redacted:" in text.lower()
    # --no-redact shows them in the JSON Lines and in the HTML page: the search above could fail.
    outputs_of(tmp_path, capsys, HERE / "secrets.msnp", "--no-redact")
    for name in ("o.jsonl", "o.html"):
        shown = (tmp_path / name).read_text("utf-8")
        assert [s for s in SECRETS if s not in shown] == [], name


@pytest.mark.parametrize("name,anomaly", [("truncated_usr.msnp", "msnp.line.truncated"),
                                          ("garbage_usr.msnp", "msnp.line.garbage")])
def test_anomaly_details_quoting_raw_bytes_are_redacted(tmp_path, capsys, name, anomaly):
    text = outputs_of(tmp_path, capsys, HERE / name)
    assert anomaly in text and "SECRET" not in text
    recs = jsonl(tmp_path / "o.jsonl")
    detail = next(r["detail"] for r in recs if r["name" if r["kind"] == "anomaly" else "kind"] == anomaly)
    assert "<redacted:" in detail


def test_passport_password_and_ticket_in_http_and_login_records():
    from tests.capture.mitm.test_passport import NEXUS, TWN, run
    from analyzer.capture.mitm import passport
    from analyzer.capture.mitm.gateway import HttpExchange
    ticket = "t=TICKETpart1,TICKETpart2 x&p=PROFILEpart"
    auth = ("Passport1.4 OrgVerb=GET,OrgURL=http%3A%2F%2Fm,sign-in=alice%40example.com,"
            "pwd=PASSWORD with space, and comma,lc=1033,id=507,tw=40")
    login = HttpExchange("GET", "login.passport.com", "/login2.srf?t=URLTICKET&pwd=URLPASSWORD",
                         [("Authorization", auth)], b"", 200,
                         [("Authentication-Info", f"Passport1.4 da-status=success,from-PP='{ticket}',ru=http://m"),
                          ("Set-Cookie", "MSPAuth=COOKIEVALUE; path=/")], b"", 1.2, 1.5, scheme="https")
    lines = [*TWN[:2], ("c2s", f"USR 3 TWN S {ticket.replace(' ', '')}\r\n".encode())]
    recs, text, _ = run([NEXUS, login], lines)
    for part in ("TICKETpart", "PROFILEpart", "PASSWORD", "with space", "and comma", "URLTICKET", "URLPASSWORD"):
        assert part not in text, part
    assert any(r["kind"] == "http" and r["via"] == passport.PASSPORT for r in recs)
    assert "lc=1033" in text and "sign-in=alice%40example.com" in text


# -- 3. terminal ----------------------------------------------------------------------


def test_escape_sequences_from_the_wire_never_reach_the_terminal(tmp_path, capsys):
    rc, out, err = cli(capsys, "decode", "-v", HERE / "escapes.msnp")
    assert rc in (0, 1)
    assert not any(c in out + err for c in ESC)
    assert "\\x1b]52;c;" in out and "\\x1b]0;owned" in out  # shown, as escapes
    rc, out, _ = cli(capsys, "chat", HERE / "escapes.msnp")
    assert rc == 0 and not any(c in out for c in ESC) and "\r" not in out
    assert "hello \\x1b]52;c;ZWNobyBwd25lZA==\\x07\\x1b[2J\\x1b[H\\x9b2J \\x0d bye" in out


def test_the_live_console_shows_escapes():
    from analyzer.analysis.redact import Redactor
    from analyzer.analysis.run import Analysis
    from analyzer.capture.files import feed_transcript
    from analyzer.outputs.console import ConsoleModel
    model = ConsoleModel(Redactor())
    analysis = Analysis([model])
    feed_transcript(analysis, "escapes.msnp", (HERE / "escapes.msnp").read_bytes())
    analysis.finish()
    shown = [r.text for r in model.all_rows()]
    shown += [line for r in model.all_rows() for line in model.detail(r)]
    shown += [c.handle for c in model.connections()[0]]
    assert shown and all(text.isprintable() for text in shown)
    assert any("\\x1b]0;owned" in text for text in shown)


# -- 4. outputs -----------------------------------------------------------------------


@pytest.mark.parametrize("argv", [["export", "{c}", "-o", "{c}"], ["analyze", "{c}", "--json", "{c}"],
                                  ["analyze", "{c}", "--html", "{link}"], ["decode", "{t}", "--html", "{t}"],
                                  ["chat", "{c}"]])
def test_an_output_that_is_an_input_is_refused(tmp_path, capsys, argv):
    cap = tmp_path / "c.pcap"
    shutil.copy(SAMPLE, cap)
    os.link(cap, tmp_path / "link.pcap")
    tr = tmp_path / "t.msnp"
    shutil.copy(HERE / "escapes.msnp", tr)
    before = cap.read_bytes(), tr.read_bytes()
    rc, _, err = cli(capsys, *[a.format(c=cap, link=tmp_path / "link.pcap", t=tr) for a in argv])
    if argv[0] == "chat":
        assert rc == 0  # writes no file: nothing to refuse
    else:
        assert rc == 2 and err.count("\n") == 1 and "is an input of this run" in err
    assert (cap.read_bytes(), tr.read_bytes()) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.pcap", "link.pcap", "t.msnp"]


def test_a_failed_run_leaves_the_old_output_and_no_half_file(tmp_path, capsys):
    out, html = tmp_path / "o.jsonl", tmp_path / "o.html"
    out.write_text("old json\n")
    html.write_text("old html\n")
    bad = tmp_path / "bad.pcap"
    bad.write_bytes(SAMPLE.read_bytes()[:24] + b"\xff" * 3)  # a header and then garbage: read, then named
    rc, _, _ = cli(capsys, "analyze", SAMPLE, tmp_path / "missing.pcap", "--json", out, "--html", html)
    assert rc == 2 and out.read_text() == "old json\n" and html.read_text() == "old html\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.pcap", "o.html", "o.jsonl"]
    rc, _, _ = cli(capsys, "analyze", SAMPLE, "--json", out, "--html", html)
    assert rc == 0 and out.read_text().startswith('{"kind"') and html.read_text().startswith("<!DOCTYPE html>")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.pcap", "o.html", "o.jsonl"]


def test_the_atomic_writer_discards_on_an_exception_and_writes_devices_in_place(tmp_path):
    from analyzer.outputs.atomic import open_output
    target = tmp_path / "x.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with open_output(target) as f:
            f.write("half")
            raise RuntimeError("the run failed")
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["x.txt"]
    with open_output(target) as f:
        f.write("new")
    assert target.read_text() == "new" and [p.name for p in tmp_path.iterdir()] == ["x.txt"]
    with open_output("/dev/null") as f:  # not renamed over: still the device
        f.write("x")
    assert Path("/dev/null").is_char_device()


BREAKS = "\u2028\u2029\x85"


@pytest.mark.parametrize("mode", ["analyze", "contacts", "chat"])
def test_a_line_separator_from_the_wire_keeps_each_json_record_on_one_line(tmp_path, capsys, mode):
    """U+2028, U+2029 and U+0085 in a handle, a friendly name and a message: every JSON
    Lines writer escapes them, so str.splitlines (and JavaScript) see one record per line."""
    from analyzer.msnp.transcript import Chunk, format_chunks
    b = BREAKS.encode()
    body = b"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=UTF-8\r\n\r\nhi" + b + b"there"
    chunks = [("ns1", "c2s", b"VER 1 MSNP8 CVR0\r\n"), ("ns1", "s2c", b"VER 1 MSNP8\r\n"),
              ("ns1", "c2s", b"USR 2 MD5 I bob@example.com\r\n"),
              ("ns1", "s2c", b"USR 2 OK bob@example.com Bob%E2%80%A8%C2%85 1\r\n"),
              ("ns1", "s2c", b"ILN 3 NLN al" + b + b"ice@example.com Al%E2%80%A9ice\r\n"),
              ("sb1", "c2s", b"USR 1 bob@example.com 1234.5678\r\n"), ("sb1", "s2c", b"USR 1 OK bob@example.com Bob\r\n"),
              ("sb1", "s2c", b"JOI al" + b + b"ice@example.com Alice\r\n"),
              ("sb1", "s2c", b"MSG al" + b + b"ice@example.com Alice " + str(len(body)).encode() + b"\r\n" + body)]
    src = tmp_path / "breaks.msnp"
    src.write_text(format_chunks([Chunk(d, data, 1.0 + i / 10, conn) for i, (conn, d, data) in enumerate(chunks)]))
    out = tmp_path / "o.jsonl"
    if mode == "chat":   # --json is a switch there: JSON Lines on standard output
        rc, text, _ = cli(capsys, mode, "--json", src)
    else:
        rc, _, _ = cli(capsys, mode, src, "--json", out)
        text = out.read_bytes().decode("utf-8")
    assert rc in (0, 1)
    lines = text.split("\n")[:-1]
    assert lines and text.splitlines() == lines
    assert not any(ch in text for ch in BREAKS)
    values = json.dumps([strict_json(line) for line in lines], ensure_ascii=False)
    assert any(ch in values for ch in BREAKS)   # the characters are kept, as escapes
