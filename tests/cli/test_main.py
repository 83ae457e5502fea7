"""The `decode` command: exit statuses scripts can trust, JSON that parses, one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from analyzer.anomalies import CATALOGUE
from analyzer.cli.main import main

ROOT = Path(__file__).resolve().parents[2]
CAPTURES = ROOT / "captures"


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "analyzer", *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=120)


def test_clean_transcript_exits_0():
    assert main(["decode", str(CAPTURES / "msnp8.msnp"), "--fail-on", "info"]) == 0


def test_readme_sample_decodes_cleanly_with_its_chat():
    result = run("decode", "captures/msnp8_switchboard_chat.msnp", "-v", "--fail-on", "info")
    assert result.returncode == 0, result.stderr
    assert "MSG" in result.stdout and "ACK" in result.stdout


def test_anomaly_transcript_exits_1_with_fail_on_warning():
    assert main(["decode", str(CAPTURES / "anomalies.msnp"), "--fail-on", "warning"]) == 1
    assert main(["decode", str(CAPTURES / "anomalies.msnp"), "--fail-on", "error"]) == 0
    assert main(["decode", str(CAPTURES / "anomalies.msnp"), "--fail-on", "never"]) == 0


def test_missing_file_exits_2_with_one_line_and_no_traceback():
    result = run("decode", "no/such/file.msnp")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "no such file" in lines[0]
    assert "Traceback" not in result.stderr


def test_malformed_transcript_exits_2_with_one_line(tmp_path):
    bad = tmp_path / "bad.msnp"
    bad.write_bytes(b">>> VER 1 MSNP8 CVR0\\r\\n\nthis is not a transcript line\n")
    result = run("decode", str(bad))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "line 2" in lines[0]
    assert "Traceback" not in result.stderr


def test_json_to_stdout_parses_line_by_line_and_holds_everything():
    result = run("decode", "captures/msnp8.msnp", "--json", "-")
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in result.stdout.splitlines()]
    kinds = {r["kind"] for r in records}
    assert {"command", "transaction", "stream"} <= kinds
    assert sum(1 for r in records if r["kind"] == "command") == 67
    assert "MSNP connections" in result.stderr  # the human report moved out of the pipe


def test_raw_one_direction_stream(tmp_path):
    raw = tmp_path / "s2c.bin"
    raw.write_bytes(b"NLN NLN bob@example.com Bob 0\r\nMSG bob@example.com Bob 2\r\nhiQNG 50\r\n")
    result = run("decode", str(raw), "--json", "-")
    assert result.returncode == 0, result.stderr
    cmds = [json.loads(l) for l in result.stdout.splitlines() if json.loads(l)["kind"] == "command"]
    assert [c["cmd"] for c in cmds] == ["NLN", "MSG", "QNG"] and {c["dir"] for c in cmds} == {"s2c"}


def test_anomalies_json_lists_every_catalogue_name():
    result = run("anomalies", "--json")
    assert result.returncode == 0
    names = {json.loads(line)["name"] for line in result.stdout.splitlines()}
    # Plugin names registered in this test process by other tests' plugins are not
    # known to a fresh process; the core names and the first-party plugins' are.
    assert names >= {n for n in CATALOGUE if not n.startswith("plugin.")}
    assert "plugin.challenge.wrong_answer" in names


def test_no_command_prints_help_and_exits_2(capsys):
    assert main([]) == 2
    assert "decode" in capsys.readouterr().out


@pytest.mark.parametrize("args, message", [
    (["analyze", "captures/msnp8.msnp", "--port", "99999"], "--port: not a TCP port: '99999'"),
    (["analyze", "captures/msnp8.msnp", "--port", "0"], "--port: not a TCP port: '0'"),
    (["analyze", "captures/msnp8.msnp", "--tcp-buffer", "-1"], "--tcp-buffer: not a size: '-1'"),
    (["analyze", "captures/msnp8.msnp", "--reorder-timeout", "-5"], "--reorder-timeout: not a duration"),
    (["analyze", "captures/msnp8.msnp", "--max-flows", "0"], "--max-flows: not a positive whole number"),
    (["decode", "captures/msnp8.msnp", "--max-pending", "-3"], "--max-pending: not a positive whole number"),
    (["decode", "captures/msnp8.msnp", "--reply-timeout", "nan"], "--reply-timeout: not a duration"),
    (["analyze", "captures/msnp8.msnp", "--plugin-budget", "nan"], "--plugin-budget: not a duration"),
    (["analyze", "captures/msnp8.msnp", "--plugin-budget", "-1"], "--plugin-budget: not a duration"),
    (["decode", "captures/msnp8.msnp", "--msnp", "99"], "--msnp: not an MSNP version: '99'"),
    (["chat", "captures/msnp8.msnp", "--msnp", "1"], "--msnp: not an MSNP version: '1'"),
    (["mitm", "--listen-port", "70000"], "--listen-port: not a TCP port: '70000'"),
    (["proxy", "--upstream", "127.0.0.1", "--duration", "-1"], "--duration: not a duration: '-1'"),
])
def test_out_of_range_option_values_are_usage_errors(args, message, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(args)
    assert exit_.value.code == 2
    assert message in capsys.readouterr().err
