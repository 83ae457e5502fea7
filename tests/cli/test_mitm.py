"""The `mitm` sub-command: starts, stops by itself, reports bad mitmproxy options as exit 2."""

import json

from analyzer.cli.main import main


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


def test_live_view_on_a_terminal():
    # The live view appears only on a terminal: run the command in a pseudo-terminal.
    import os
    import pty
    import subprocess
    import sys
    import time
    master, slave = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "analyzer", "mitm", "--listen-port", "0", "--duration", "1"],
                            stdin=slave, stdout=slave, stderr=slave, close_fds=True)
    os.close(slave)
    out = b""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        out += chunk
    proc.wait(timeout=30)
    os.close(master)
    text = out.decode("utf-8", "replace")
    assert proc.returncode == 0
    assert "msnp-analyzer mitm" in text and "waiting for traffic" in text
