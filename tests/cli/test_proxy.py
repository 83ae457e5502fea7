"""The `proxy` and `demo` commands as a user runs them (subprocesses, bounded in time)."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import subprocess
import sys

import pytest
from scapy.utils import RawPcapNgReader

from analyzer.scripted import EchoServer

PY = [sys.executable, "-m", "analyzer"]


def cli(*args, timeout=60):
    return subprocess.run(PY + list(args), capture_output=True, text=True, timeout=timeout)


def test_demo_finishes_by_itself_with_json_and_recording(tmp_path):
    jpath, rpath = tmp_path / "demo.jsonl", tmp_path / "demo.pcapng"
    out = cli("demo", "--quiet", "--json", str(jpath), "--record", str(rpath))
    assert out.returncode == 0, out.stderr
    assert "Traceback" not in out.stderr and "MSNP connections" in out.stdout
    records = [json.loads(line) for line in jpath.read_text().splitlines()]
    streams = [r for r in records if r["kind"] == "stream"]
    assert sorted(r["role"] for r in streams) == ["DS", "DS", "NS", "NS", "SB", "SB", "SB", "SB"]
    assert {r["version"] for r in streams if r["role"] != "SB"} == {"MSNP8", "MSNP15"}
    assert sum(r["kind"] == "rewrite" for r in records) == 6
    with RawPcapNgReader(str(rpath)) as reader:
        assert sum(1 for _ in reader) > 50


def test_demo_recording_reads_back_with_analyze(tmp_path):
    rpath = tmp_path / "demo.pcapng"
    assert cli("demo", "--quiet", "--msnp", "8", "--record", str(rpath)).returncode == 0
    if cli("analyze", "--help").returncode != 0:
        pytest.skip("the analyze command is not in this tree")
    out = cli("analyze", str(rpath), "--json", "-")
    assert out.returncode == 0, out.stderr
    kinds = [json.loads(line)["kind"] for line in out.stdout.splitlines()]
    assert kinds.count("stream") == 4 and "command" in kinds


def test_demo_live_view_is_shown_when_not_quiet():
    out = cli("demo", "--msnp", "15")
    assert out.returncode == 0, out.stderr
    assert "msnp-analyzer demo (scripted service on loopback)" in out.stdout
    assert re.search(r"\[\d+\] >>> OUT", out.stdout) and re.search(r"\[\d+\] <<< MSG ", out.stdout)


def test_sigint_with_open_connections_prints_the_report_and_exits_0():
    async def go():
        echo = await EchoServer().start()
        host, port = echo.address
        proc = await asyncio.create_subprocess_exec(
            *PY, "proxy", "--upstream", f"{host}:{port}", "--listen", "127.0.0.1:0", "--quiet",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        try:
            line = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode()
            m = re.search(r"listening on ([\d.]+):(\d+)", line)
            assert m, line
            reader, writer = await asyncio.open_connection(m.group(1), int(m.group(2)))
            writer.write(b"VER 1 MSNP8 CVR0\r\n")
            await writer.drain()
            assert await asyncio.wait_for(reader.readline(), 10) == b"VER 1 MSNP8 CVR0\r\n"
            proc.send_signal(signal.SIGINT)
            rest, err = await asyncio.wait_for(proc.communicate(), 20)
            eof = await asyncio.wait_for(reader.read(), 10)
            writer.close()
            return proc.returncode, rest.decode(), err.decode(), eof
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
            await echo.stop()
    code, out, err, eof = asyncio.run(go())
    assert code == 0, err
    assert "MSNP connections" in out and "Traceback" not in err
    assert eof == b""


def test_usage_errors_are_one_line_and_exit_2():
    bad = cli("proxy", "--upstream", "host:notaport")
    assert bad.returncode == 2 and "expected HOST[:PORT]" in bad.stderr and "Traceback" not in bad.stderr
    wild = cli("proxy", "--upstream", "127.0.0.1", "--listen", "0.0.0.0:0")
    assert wild.returncode == 2 and "--advertise" in wild.stderr
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        taken = cli("proxy", "--upstream", "127.0.0.1", "--listen", f"127.0.0.1:{port}", "--quiet")
    assert taken.returncode == 2 and "cannot listen" in taken.stderr
    assert len(taken.stderr.strip().splitlines()) == 1


def test_duration_stops_by_itself_and_help_answers():
    out = cli("proxy", "--upstream", "127.0.0.1:9", "--listen", "127.0.0.1:0", "--duration", "0.3", "--quiet")
    assert out.returncode == 0 and "no MSNP connections" in out.stdout
    helptext = cli("proxy", "--help").stdout
    for option in ("--upstream", "--listen", "--advertise", "--record", "--json", "--quiet"):
        assert option in helptext


@pytest.mark.skipif(not os.path.exists("/usr/bin/tshark") and not os.environ.get("CI"), reason="tshark not installed (CI installs it)")
def test_tshark_reads_the_recording(tmp_path):
    rpath = tmp_path / "demo.pcapng"
    assert cli("demo", "--quiet", "--msnp", "8", "--record", str(rpath)).returncode == 0
    out = subprocess.run(["tshark", "-r", str(rpath), "-q", "-z", "conv,tcp"], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.count("<->") == 4


def test_loop_option_is_used_and_a_missing_uvloop_is_a_usage_error(tmp_path):
    for loop in ("asyncio", "auto"):
        out = cli("proxy", "--upstream", "127.0.0.1:9", "--listen", "127.0.0.1:0", "--duration", "0.2",
                  "--quiet", "--loop", loop)
        assert out.returncode == 0, out.stderr
        if loop == "asyncio":
            assert "(asyncio loop)" in out.stdout
        else:
            assert re.search(r"\((uvloop|asyncio) loop\)", out.stdout)
    # uvloop made unimportable: auto falls back to asyncio, an explicit --loop uvloop is exit 2 in one line
    (tmp_path / "uvloop.py").write_text("raise ImportError('hidden by the test')\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(tmp_path), os.environ.get("PYTHONPATH")])))
    auto = subprocess.run(PY + ["proxy", "--upstream", "127.0.0.1:9", "--listen", "127.0.0.1:0",
                                "--duration", "0.2", "--quiet"], capture_output=True, text=True, timeout=60, env=env)
    assert auto.returncode == 0 and "(asyncio loop)" in auto.stdout, auto.stderr
    hard = subprocess.run(PY + ["proxy", "--upstream", "127.0.0.1:9", "--listen", "127.0.0.1:0",
                                "--quiet", "--loop", "uvloop"], capture_output=True, text=True, timeout=60, env=env)
    assert hard.returncode == 2 and "uvloop" in hard.stderr and "Traceback" not in hard.stderr
    assert len(hard.stderr.strip().splitlines()) == 1
    assert "--loop" in cli("proxy", "--help").stdout


def test_verbose_shows_what_the_client_was_given_and_the_recording_says_how_to_dissect_it(tmp_path):
    rpath = tmp_path / "demo.pcapng"
    out = cli("demo", "--msnp", "8", "-v", "--record", str(rpath))
    assert out.returncode == 0, out.stderr
    # the server's line as sent (upstream address), then the address the client was given
    m = re.search(r"<<< XFR 3 NS (\S+) .*\n\s+= \[\d+\] XFR NS rewritten for the client: (\S+) -> (\S+)", out.stdout)
    assert m and m.group(1) == m.group(2) and m.group(3) != m.group(2), out.stdout[:3000]
    options = re.search(r"tshark ((?:-d tcp\.port==\d+,msnms ?)+)", out.stdout)
    assert options, out.stdout[-2000:]
    ports = {int(p) for p in re.findall(r"tcp\.port==(\d+)", options.group(1))}
    assert int(m.group(3).rsplit(":", 1)[1]) in ports  # the NS listener the client was sent to
    if not os.path.exists("/usr/bin/tshark"):
        return
    # with those options tshark decodes every leg (DS, NS and both switchboards) as MSNP
    shown = subprocess.run(["tshark", "-r", str(rpath), *options.group(1).split(), "-Y", "msnms",
                            "-T", "fields", "-e", "tcp.stream"], capture_output=True, text=True, timeout=60)
    assert shown.returncode == 0, shown.stderr
    assert len(set(shown.stdout.split())) == 4


def test_demo_stream_records_say_both_legs_through_the_analysis_process(tmp_path):
    jpath = tmp_path / "demo.jsonl"
    out = cli("demo", "--quiet", "--msnp", "8", "--json", str(jpath))
    assert out.returncode == 0, out.stderr
    streams = [r for r in map(json.loads, jpath.read_text().splitlines()) if r["kind"] == "stream"]
    assert len(streams) == 4
    for r in streams:
        near, far = r["legs"]
        assert (near["leg"], far["leg"]) == ("client", "upstream")
        assert near["client"] == r["client"] and far["server"] == r["server"]
        assert near["server"] != far["server"] and near["client"] != far["client"]
    assert {r["version"] for r in streams} == {"MSNP8"}  # the switchboards too, from their NS

def test_an_upstream_equal_to_the_listen_address_is_one_line_exit_2():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    for upstream in (f"127.0.0.1:{port}", f"localhost:{port}"):
        out = cli("proxy", "--upstream", upstream, "--listen", f"127.0.0.1:{port}", "--quiet")
        assert out.returncode == 2 and "own listening address" in out.stderr, out.stderr
        assert "Traceback" not in out.stderr and len(out.stderr.strip().splitlines()) == 1
    bad = cli("proxy", "--upstream", "127.0.0.1:9", "--allow-target", "10.0.0.0/33", "--quiet")
    assert bad.returncode == 2 and "--allow-target" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1
    bad = cli("proxy", "--upstream", "127.0.0.1:9", "--idle-timeout", "0", "--quiet")
    assert bad.returncode == 2 and "--idle-timeout" in bad.stderr


def test_the_listening_line_and_the_report_say_which_policy_is_in_force():
    out = cli("proxy", "--upstream", "127.0.0.1:9", "--listen", "127.0.0.1:0", "--duration", "0.3", "--quiet",
              "--allow-target", "127.1.0.0/24", "--max-listeners", "5")
    assert out.returncode == 0, out.stderr
    listening = next(line for line in out.stdout.splitlines() if "listening on" in line)
    assert "target policy: follow 127.0.0.0/24, 127.1.0.0/24" in listening and "5 listeners" in listening
    tail = out.stdout[out.stdout.index("no MSNP connections"):]
    assert "proxy target policy: follow 127.0.0.0/24, 127.1.0.0/24" in tail and "proxy limits hit: none" in tail
    helptext = cli("proxy", "--help").stdout
    for option in ("--allow-target", "--allow-any-target", "--max-listeners", "--max-per-address", "--max-rate",
                   "--idle-timeout", "--first-byte-timeout"):
        assert option in helptext
