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


def _mitm_session_then_sigterm(tmp_path):
    """`msnp-analyzer mitm` in a child process, one scripted MSNP8 session through its SOCKS5
    listener, then SIGTERM. Returns (exit status, stdout, JSON records, HTML path)."""
    import asyncio
    import os
    import re
    import selectors
    import signal
    import subprocess
    import sys
    import time

    from analyzer.scripted import ScriptedService
    from tests.scenarios.test_mitm_e2e import Socks5Client
    out, html = tmp_path / "events.jsonl", tmp_path / "t.html"
    proc = subprocess.Popen([sys.executable, "-m", "analyzer", "mitm", "--mode", "socks5", "--listen-port", "0",
                             "--quiet", "--json", str(out), "--html", str(html)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            env={**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "200"})
    try:
        text, port = b"", None
        sel = selectors.DefaultSelector()
        sel.register(proc.stdout, selectors.EVENT_READ)
        deadline = time.monotonic() + 30
        while port is None and time.monotonic() < deadline and proc.poll() is None:
            if sel.select(timeout=1):
                text += os.read(proc.stdout.fileno(), 65536)
                m = re.search(rb"listening on 127\.0\.0\.1:(\d+)", text)
                port = int(m.group(1)) if m else None
        assert port, text.decode(errors="replace")

        async def session():
            service = await ScriptedService(timeout=5).start()
            try:
                client = Socks5Client(*service.address("DS"), version=8, timeout=5)
                client.proxy = ("127.0.0.1", port)
                await asyncio.wait_for(client.run(), 30)
            finally:
                await service.stop()
            return client
        client = asyncio.run(session())
        assert len(client.said) == 3
        proc.send_signal(signal.SIGTERM)
        rest, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    recs = [json.loads(line) for line in out.read_text().splitlines()]
    return proc.returncode, (text + rest).decode(errors="replace"), recs, html


def test_sigterm_stops_cleanly_and_every_record_is_written_once(tmp_path):
    rc, text, recs, html = _mitm_session_then_sigterm(tmp_path)
    # SIGTERM is an orderly stop, as for `proxy`: exit 0, the report, the HTML and the records
    assert rc == 0, text
    assert "Traceback" not in text and "connections" in text
    assert html.stat().st_size > 0
    kinds = {}
    for r in recs:
        kinds.setdefault(r["kind"], []).append(json.dumps(r, sort_keys=True))
    assert sorted(r["role"] for r in recs if r["kind"] == "stream") == ["DS", "NS", "SB", "SB"]
    assert len(kinds["session"]) == 1 and len(kinds["chat"]) == 2 and len(kinds["link"]) == 3
    # each record once: the addon's `done` and the wrapper both finish the run
    for kind in ("link", "session", "chat", "stream"):
        assert len(kinds[kind]) == len(set(kinds[kind])), kind


def test_reverse_mode_says_which_target_policy_is_in_force(capsys):
    rc = main(["mitm", "--mode", "reverse:tcp://127.0.0.1:9", "--listen-port", "0", "--duration", "0.3",
               "--allow-target", "127.1.0.0/24", "--quiet"])
    out = capsys.readouterr().out
    assert rc == 0
    assert out.count("reverse reverse:tcp://127.0.0.1:9: target policy: follow 127.0.0.0/24, 127.1.0.0/24") == 2
    rc = main(["mitm", "--mode", "reverse:tcp://127.0.0.1:9", "--listen-port", "0", "--duration", "0.3",
               "--allow-target", "10.0.0.0/99"])
    assert rc == 2 and "--allow-target" in capsys.readouterr().err
