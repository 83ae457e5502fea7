"""The hostile capture corpus (captures/make_hostile.py) through `analyze`.

Each light case: no traceback, an exit status scripts can trust, every
command decodable before the damage decoded, and the damage named (an
anomaly by its catalogue name, or a one-line error). The heavy cases (50,000
connections, a 100 MB line) are bench/hostile.py's; scaled-down versions of
them run here.
"""

from __future__ import annotations

import json
import resource
import struct
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from analyzer.cli.main import main
from analyzer.msnp import C2S, S2C, Command, CommandReader
from captures import make_hostile as hostile

ROOT = Path(__file__).resolve().parents[2]
LIGHT = {case.name: case for case in hostile.cases(heavy=False)}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    out = tmp_path_factory.mktemp("hostile")
    for case in LIGHT.values():
        (out / f"{case.name}.pcap").write_bytes(case.build())
    return out


def analyze(path: Path, capsys, *extra):
    """Run `analyze` in-process (an exception here would be a traceback for the user)."""
    out = path.with_suffix(".jsonl")
    rc = main(["analyze", str(path), "--json", str(out), "--no-plugins", *extra])
    err = capsys.readouterr().err
    events = [json.loads(line) for line in out.read_text("utf-8").splitlines()] if out.exists() else []
    return rc, err, events


def commands(events):
    return [(e["dir"], e["cmd"]) for e in events if e["kind"] == "command"]


def anomalies(events):
    return Counter(e["name"] for e in events if e["kind"] == "anomaly")


def _payload(frame: bytes) -> bytes:
    """The TCP payload of an Ethernet/IPv4 frame of the generator (parsed here, not by pcap.py)."""
    ip = frame[14:]
    total = struct.unpack_from("!H", ip, 2)[0]
    t = (ip[0] & 15) * 4
    return ip[t + (ip[t + 12] >> 4) * 4:total]


def decodable_after(records: int) -> list[tuple[str, str]]:
    """The commands a correct reader can decode from the first `records` records of the clean session."""
    frames = [f for _, f in hostile.clean_session().frames[:records]]
    got = {C2S: b"", S2C: b""}
    for f in frames:
        client_sent = f[14 + 12:14 + 16] == hostile.ip4("10.0.0.2")
        got[C2S if client_sent else S2C] += _payload(f)
    out = []
    for direction in (C2S, S2C):
        reader = CommandReader(direction)
        out += [(direction, e.cmd) for e in reader.feed(got[direction], 0.0) if type(e) is Command]
    return out


def test_the_clean_session_decodes_to_its_ten_commands(tmp_path, capsys):
    path = tmp_path / "clean.pcap"
    path.write_bytes(hostile.clean_pcap())
    rc, err, events = analyze(path, capsys)
    assert rc == 0 and anomalies(events) == Counter()
    assert len(commands(events)) == hostile.SESSION_COMMANDS
    assert sorted(commands(events)) == sorted(decodable_after(99))


TRUNCATIONS = sorted(n for n in LIGHT if n.startswith("truncated_") and n != "truncated_mid_header")


@pytest.mark.parametrize("name", TRUNCATIONS)
def test_truncated_files_decode_everything_before_the_cut(corpus, capsys, name):
    records = int(name.rsplit("_", 1)[1])
    rc, err, events = analyze(corpus / f"{name}.pcap", capsys)
    assert "Traceback" not in err
    assert sorted(commands(events)) == sorted(decodable_after(records))
    found = anomalies(events)
    if "_mid_record_" in name:
        assert found["capture.truncated"] == 1 and rc == 1
        (cut,) = [e for e in events if e.get("name") == "capture.truncated"]
        assert f"the {records} packets before it were analysed" in cut["detail"]
    else:
        assert found["capture.truncated"] == 0
        assert rc in (0, 1)


@pytest.mark.parametrize("name, message", [("bad_magic", "not a capture: unrecognised binary data"),
                                           ("truncated_mid_header", "")])
def test_unusable_files_are_a_one_line_error(corpus, name, message):
    r = subprocess.run([sys.executable, "-m", "analyzer", "analyze", str(corpus / f"{name}.pcap")],
                       capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert r.returncode == 2
    assert "Traceback" not in r.stderr and r.stderr.strip().count("\n") == 0
    assert r.stderr.startswith("msnp-analyzer: error: ") and message in r.stderr


def test_absurd_snaplen_is_only_a_hint(corpus, capsys):
    rc, err, events = analyze(corpus / "absurd_snaplen.pcap", capsys)
    assert rc == 0 and anomalies(events) == Counter()
    assert len(commands(events)) == hostile.SESSION_COMMANDS


def test_absurd_record_length_stops_there_without_allocating_it(corpus):
    # Under a 1 GiB address-space limit: reading the 2 GiB record would be a MemoryError traceback.
    def limit():
        resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))
    out = corpus / "absurd_record_length.jsonl"
    r = subprocess.run([sys.executable, "-m", "analyzer", "analyze", str(corpus / "absurd_record_length.pcap"),
                        "--json", str(out), "--no-plugins"],
                       capture_output=True, text=True, timeout=60, cwd=ROOT, preexec_fn=limit)
    assert "Traceback" not in r.stderr and "MemoryError" not in r.stderr
    assert r.returncode == 1
    events = [json.loads(line) for line in out.read_text("utf-8").splitlines()]
    assert sorted(commands(events)) == sorted(decodable_after(hostile.ABSURD_AFTER))
    (damage,) = [e for e in events if e.get("name") == "capture.damaged"]
    assert "claims 2147483647 bytes" in damage["detail"]


def test_empty_and_oversize_records_are_named_once_and_the_rest_decodes(corpus, capsys):
    rc, err, events = analyze(corpus / "zero_and_oversize_records.pcap", capsys)
    assert len(commands(events)) == hostile.SESSION_COMMANDS
    assert anomalies(events) == Counter({"capture.bad_record": 1})
    (bad,) = [e for e in events if e["kind"] == "anomaly"]
    assert "2 record(s)" in bad["detail"] and "snapshot length 65535" in bad["detail"]


def test_a_clean_file_has_no_bad_record(tmp_path, capsys):
    path = tmp_path / "clean.pcap"
    path.write_bytes(hostile.clean_pcap())
    assert "capture.bad_record" not in anomalies(analyze(path, capsys)[2])


def test_ip_options_are_honoured_and_fragments_named(corpus, capsys):
    rc, err, events = analyze(corpus / "ipv4_options_and_fragments.pcap", capsys)
    got = commands(events)
    assert got.count((C2S, "VER")) == 1  # the segment behind IP options
    assert [c for d, c in got if d == S2C] == ["VER", "USR", "CAL", "JOI", "ACK"]
    assert (C2S, "USR") not in got  # it was in the fragment: not reassembled, not invented
    assert anomalies(events)["capture.ip_fragment"] == 1


def test_ipv6_extension_headers_are_walked_to_tcp(corpus, capsys):
    rc, err, events = analyze(corpus / "ipv6_extension_headers.pcap", capsys)
    assert rc == 0 and sorted(commands(events)) == [(C2S, "VER"), (S2C, "VER")]
    (stream,) = [e for e in events if e["kind"] == "stream"]
    assert "2001:db8::2" in json.dumps(stream)


@pytest.mark.parametrize("name", ["tcp_options", "sequence_wraparound"])
def test_tcp_options_and_wraparound_decode_cleanly(corpus, capsys, name):
    rc, err, events = analyze(corpus / f"{name}.pcap", capsys)
    assert rc == 0 and anomalies(events) == Counter()
    assert sorted(commands(events)) == sorted(decodable_after(99))


def test_syn_flood_makes_no_stream(corpus, capsys):
    rc, err, events = analyze(corpus / "syn_flood.pcap", capsys)
    assert rc == 0
    assert not [e for e in events if e["kind"] in ("stream", "command", "anomaly")]


def test_declared_2gb_payload_is_framed_as_the_client_frames_it_and_not_kept(corpus, capsys):
    rc, err, events = analyze(corpus / "declared_2gb_payload.pcap", capsys)
    assert rc == 1 and anomalies(events)["msnp.payload.too_large"] == 1
    msgs = [e for e in events if e["kind"] == "command" and e["cmd"] == "MSG"]
    # The cap limits what is kept, never the framing (analyzer/msnp/framing.py): a client
    # reads the next 2 GiB as that payload, so the MSG after it is payload too.
    assert [m["trid"] for m in msgs] == [1]


def test_binary_garbage_is_named_and_decoding_resynchronises(corpus, capsys):
    rc, err, events = analyze(corpus / "binary_garbage.pcap", capsys)
    assert anomalies(events)["msnp.line.garbage"] >= 1
    got = commands(events)
    assert (C2S, "PNG") in got and (S2C, "QNG") in got


def test_a_long_line_without_newline_is_cut_and_decoding_goes_on(tmp_path, capsys):
    path = tmp_path / "long.pcap"
    hostile.write_long_line(path, size=2 * 1024 * 1024)  # the 100 MB one is bench/hostile.py's
    rc, err, events = analyze(path, capsys)
    assert anomalies(events)["msnp.line.too_long"] == 1
    assert commands(events) == [(C2S, "PNG"), (S2C, "QNG")]


def test_flow_limit_closes_the_idlest_flows_and_loses_no_command(tmp_path, capsys):
    path = tmp_path / "tiny.pcap"
    path.write_bytes(hostile.tiny_connections(300))
    rc, err, events = analyze(path, capsys, "--max-flows", "32")
    assert anomalies(events)["capture.flow_limit"] == 1
    assert Counter(commands(events)) == Counter({(C2S, "PNG"): 300, (S2C, "QNG"): 300})
    rc, err, events = analyze(path, capsys)  # the default is far above 300
    assert "capture.flow_limit" not in anomalies(events)
    assert len(commands(events)) == 600


def test_every_light_case_has_a_test_here():
    covered = set(TRUNCATIONS) | {"bad_magic", "truncated_mid_header", "absurd_snaplen", "absurd_record_length",
                                  "zero_and_oversize_records", "ipv4_options_and_fragments",
                                  "ipv6_extension_headers", "tcp_options", "sequence_wraparound", "syn_flood",
                                  "declared_2gb_payload", "binary_garbage"}
    assert set(LIGHT) == covered
