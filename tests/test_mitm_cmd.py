"""The `mitm` sub-command: starts, stops by itself, reports bad mitmproxy options as exit 2."""

import json

from analyzer.cli import main


def test_runs_for_a_duration_and_reports(tmp_path, capsys):
    out = tmp_path / "events.jsonl"
    rc = main(["mitm", "--mode", "socks5", "--listen-port", "0", "--duration", "0.5", "--json", str(out)])
    assert rc == 0
    assert "socks5 listening on 127.0.0.1:" in capsys.readouterr().out
    assert [json.loads(line) for line in out.read_text().splitlines()] == []


def test_bad_mode_is_a_one_line_error(capsys):
    rc = main(["mitm", "--mode", "bogus:x", "--listen-port", "0", "--duration", "0.5"])
    err = capsys.readouterr().err
    assert rc == 2 and "Invalid proxy mode" in err and "Traceback" not in err
