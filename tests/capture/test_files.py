"""One input model: `analyze`, `export`, `chat` and `decode` take the same inputs, by content.

pcap, pcapng, gzip'd, mitmproxy flow files, transcripts, raw MSNP byte streams,
several files, '-' for standard input and pipes; a file that cannot be used
is one line saying what it is (exit 2).
"""

from __future__ import annotations

import gzip
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest
from mitmproxy import tcp
from mitmproxy.test import tflow

from analyzer.cli.main import main
from analyzer.msnp import C2S
from analyzer.msnp.transcript import parse
from tests.capture.mitm.test_flows import write_flows

CAPTURES = Path(__file__).resolve().parents[2] / "captures"
SB_TRANSCRIPT = CAPTURES / "msnp8_switchboard_chat.msnp"


def _inputs(tmp_path) -> dict[str, Path]:
    """The same switchboard chat (or the sample login with it) in every form an input can take."""
    data = SB_TRANSCRIPT.read_bytes()
    chunks = parse(data)
    flows = tmp_path / "chat.mitm"
    write_flows(flows, [tflow.ttcpflow(messages=[tcp.TCPMessage(c.direction == C2S, c.data, 1000.0 + (c.ts or 0))
                                                 for c in chunks])])
    stream = tmp_path / "client.bin"
    stream.write_bytes(b"".join(c.data for c in chunks if c.direction == C2S))
    gz = tmp_path / "login.pcap.gz"
    gz.write_bytes(gzip.compress((CAPTURES / "msnp8_login_chat.pcap").read_bytes()))
    gz_transcript = tmp_path / "chat.msnp.gz"
    gz_transcript.write_bytes(gzip.compress(data))
    return {"pcap": CAPTURES / "msnp8_login_chat.pcap", "pcapng": CAPTURES / "msnp18_login_chat.pcapng",
            "pcap.gz": gz, "flows": flows, "transcript": SB_TRANSCRIPT, "transcript.gz": gz_transcript,
            "stream": stream}


def _commands(path: Path) -> list[dict]:
    return [r for r in map(json.loads, path.read_text().splitlines()) if r["kind"] == "command"]


@pytest.mark.parametrize("kind", ["pcap", "pcapng", "pcap.gz", "flows", "transcript", "transcript.gz", "stream"])
def test_every_command_reads_every_kind_of_input(tmp_path, kind, capsys):
    path = _inputs(tmp_path)[kind]
    seen = {}
    for command in ("analyze", "decode", "export"):
        out = tmp_path / f"{command}.jsonl"
        extra = ["-o", str(tmp_path / "t.html")] if command == "export" else []
        rc = main([command, str(path), "--json", str(out), "--fail-on", "never", *extra])
        assert rc == 0, (command, capsys.readouterr().err)
        seen[command] = [(r["dir"], r["cmd"], r["trid"]) for r in _commands(out)]
        assert seen[command], command
    assert seen["analyze"] == seen["decode"] == seen["export"]  # one reader per kind, whatever the command
    capsys.readouterr()
    assert main(["chat", str(path)]) == 0
    said = capsys.readouterr().out
    if kind == "pcapng":  # the MSNP18 sample's own chat
        assert "alice@example.com: Which of you am I talking to?" in said, said
    else:  # the sample chat (a client-only stream holds Alice's lines only)
        assert "Hello Bob" in said and ("Hi Alice" in said) == (kind != "stream"), said


def test_several_files_and_standard_input(tmp_path, capsys, monkeypatch):
    files = _inputs(tmp_path)
    out = tmp_path / "out.jsonl"
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(files["pcap"].read_bytes())))
    rc = main(["chat", "-", str(files["transcript"]), str(files["flows"])])
    assert rc == 0
    said = capsys.readouterr().out
    assert said.count("Hello Bob") == 3  # the capture's switchboard, the transcript's, the flow file's
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(files["transcript"].read_bytes())))
    assert main(["analyze", "-", "--json", str(out)]) == 0
    assert _commands(out)
    assert main(["decode", "-", "-"]) == 2
    assert "standard input can be read only once" in capsys.readouterr().err


def test_a_pipe_is_read_by_content_not_called_not_a_pcap(tmp_path):
    pcap = (CAPTURES / "msnp8_login_chat.pcap").read_bytes()
    for args in (["analyze", "-", "--json", "-"], ["analyze", "/dev/stdin", "--json", "-"]):
        proc = subprocess.run([sys.executable, "-m", "analyzer", *args], input=pcap, capture_output=True,
                              timeout=120)
        assert proc.returncode == 0, proc.stderr.decode()
        kinds = [json.loads(line)["kind"] for line in proc.stdout.splitlines()]
        assert kinds.count("stream") == 4


@pytest.mark.parametrize("content, what", [
    (b"PK\x03\x04rest of a zip", "it is a ZIP archive"),
    (b'{"kind":"command","stream":"1"}\n', "it is JSON Lines (msnp-analyzer's own --json output?)"),
    (b"Dear diary, today I captured nothing.\n", "a text file starting 'Dear diary, today I captured nothing.'"),
    (bytes(range(256)) * 4, "unrecognised binary data"),
    (b"", "empty file"),
])
def test_an_unusable_file_is_one_line_saying_what_it_is(tmp_path, capsys, content, what):
    bad = tmp_path / "input.dat"
    bad.write_bytes(content)
    for command in (["analyze"], ["decode"], ["chat"], ["export", "-o", str(tmp_path / "t.html")]):
        assert main([command[0], str(bad), *command[1:]]) == 2
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and what in err and str(bad) in err, err


def test_decode_of_a_pcap_decodes_the_capture_not_its_bytes(tmp_path, capsys):
    out = tmp_path / "d.jsonl"
    assert main(["decode", str(CAPTURES / "msnp8_login_chat.pcap"), "--json", str(out)]) == 0
    recs = [json.loads(line) for line in out.read_text().splitlines()]
    assert not [r for r in recs if r["kind"] == "anomaly"]
    assert len([r for r in recs if r["kind"] == "stream"]) == 4


def test_analyze_reads_a_transcript(tmp_path, capsys):
    # it used to reject transcripts (with no hint to use decode)
    out = tmp_path / "a.jsonl"
    assert main(["analyze", str(CAPTURES / "msnp8.msnp"), "--json", str(out)]) == 0
    assert {r["role"] for r in map(json.loads, out.read_text().splitlines()) if r["kind"] == "stream"} \
        == {"DS", "NS", "SB"}


def test_a_one_sided_stream_says_so_once_and_expects_no_replies(tmp_path, capsys):
    stream = _inputs(tmp_path)["stream"]
    out = tmp_path / "d.jsonl"
    # clean client data: --fail-on warning must not fail it
    assert main(["decode", str(stream), "--json", str(out), "--fail-on", "warning"]) == 0
    recs = [json.loads(line) for line in out.read_text().splitlines()]
    anomalies = [r["name"] for r in recs if r["kind"] == "anomaly"]
    assert anomalies == ["capture.one_sided"]
    outcomes = {r["outcome"] for r in recs if r["kind"] == "transaction"}
    assert "unanswered" not in outcomes and "not_captured" in outcomes
    # the server's side alone: replies whose requests it cannot hold are no orphans
    server = tmp_path / "server.bin"
    server.write_bytes(b"".join(c.data for c in parse(SB_TRANSCRIPT.read_bytes()) if c.direction != C2S))
    assert main(["decode", str(server), "--dir", "s2c", "--json", str(out), "--fail-on", "warning"]) == 0
    assert [r["name"] for r in map(json.loads, out.read_text().splitlines()) if r["kind"] == "anomaly"] \
        == ["capture.one_sided"]


def test_a_text_file_starting_with_a_capital_word_is_no_msnp_stream(tmp_path, capsys):
    notes = tmp_path / "notes.txt"
    notes.write_bytes(b"THE capture is in the other folder\n")
    assert main(["decode", str(notes)]) == 2
    assert "a text file starting 'THE capture is in the other folder'" in capsys.readouterr().err
    notes.write_bytes(b"QRY 18 msmsgs@msnmsgr.com 32\r\n")  # a command it knows: a stream
    assert main(["decode", str(notes), "--fail-on", "never"]) == 0


@pytest.mark.parametrize("keep", [0.3, 0.6, 0.95])
def test_a_cut_short_small_gzip_capture_keeps_what_came_before_the_cut(tmp_path, capsys, keep):
    """A .pcap.gz that unpacks to less than the detection head (64 KiB) and is cut short:
    the packets before the cut are analysed and the damage is named, not a one-line error."""
    whole = gzip.compress((CAPTURES / "msnp8_login_chat.pcap").read_bytes())
    cut = tmp_path / "cut.pcap.gz"
    cut.write_bytes(whole[:int(len(whole) * keep)])
    out = tmp_path / "o.jsonl"
    assert main(["analyze", "-q", str(cut), "--json", str(out)]) in (0, 1)
    records = [json.loads(line) for line in out.read_text().splitlines()]
    full = _commands_of(CAPTURES / "msnp8_login_chat.pcap", tmp_path, capsys)
    commands = [r for r in records if r["kind"] == "command"]
    assert 0 < len(commands) < full
    assert any(r["kind"] == "anomaly" and r["name"] == "capture.truncated" for r in records)


def _commands_of(path: Path, tmp_path: Path, capsys) -> int:
    out = tmp_path / "whole.jsonl"
    assert main(["analyze", "-q", str(path), "--json", str(out)]) == 0
    return len(_commands(out))


@pytest.mark.parametrize("form", ["transcript", "stream", "flows"])
def test_a_cut_short_gzip_input_keeps_what_was_unpacked_before_the_cut(tmp_path, capsys, form):
    """A gzip'd transcript, byte stream or flow file cut short is analysed up to the cut and the
    damage is named (input.truncated), not a one-line error that loses everything."""
    source = _inputs(tmp_path)[form]
    raw = source.read_bytes()
    # Streams and flow files concatenate; a flow file is stored, not compressed, so that the cut
    # falls after its first whole flow (its reader keeps whole flows only).
    whole = gzip.compress(raw if form == "transcript" else raw + raw, compresslevel=0 if form == "flows" else 9)
    complete = tmp_path / f"whole.{form}.gz"
    complete.write_bytes(whole)
    cut = tmp_path / f"cut.{form}.gz"
    cut.write_bytes(whole[:int(len(whole) * 0.8)])
    outs = []
    for path in (complete, cut):
        out = tmp_path / f"{path.name}.jsonl"
        assert main(["analyze", "-q", str(path), "--json", str(out), "--fail-on", "never"]) == 0
        outs.append([json.loads(line) for line in out.read_text().splitlines()])
    full, part = outs
    assert not any(r.get("name") == "input.truncated" for r in full)
    truncated = [r for r in part if r["kind"] == "anomaly" and r["name"] == "input.truncated"]
    assert len(truncated) == 1 and "cut.%s.gz" % form in truncated[0]["detail"]
    kept = [r for r in part if r["kind"] == "command"]
    assert 0 < len(kept) <= len([r for r in full if r["kind"] == "command"])
    if form != "flows":
        # every command unpacked before the cut, byte for byte the same as in the whole file
        # (the flow file's reader keeps whole flows only: it has its own damage report)
        first = [(r["cmd"], r.get("args")) for r in full if r["kind"] == "command"][:len(kept)]
        assert [(r["cmd"], r.get("args")) for r in kept] == first


def test_a_gzip_input_of_several_members_is_read_whole(tmp_path, capsys):
    """`cat a.gz b.gz` is one valid gzip file of two members: both are read, nothing is reported."""
    data = SB_TRANSCRIPT.read_bytes()
    half = data.index(b"\n", len(data) // 2) + 1
    two = tmp_path / "two.msnp.gz"
    two.write_bytes(gzip.compress(data[:half]) + gzip.compress(data[half:]))
    one = tmp_path / "one.msnp.gz"
    one.write_bytes(gzip.compress(data))
    got = []
    for path in (one, two):
        out = tmp_path / f"{path.name}.jsonl"
        assert main(["analyze", "-q", str(path), "--json", str(out), "--fail-on", "never", "--no-redact"]) == 0
        got.append([r for r in map(json.loads, out.read_text().splitlines()) if r["kind"] in ("command", "anomaly")])
    assert got[0] == got[1] and got[0]
