"""`proxy --analysis process`: the analysis in a process of its own, and its bounded backlog."""

from __future__ import annotations

import asyncio
import json
import pickle
import re
import signal
import socket
import struct
import sys

import pytest

from analyzer.capture.proxy.worker import AnomalySeen, Data, Gap, Opened, RemoteAnalysis
from analyzer.msnp import C2S, S2C
from analyzer.scripted import EchoServer

PY = [sys.executable, "-m", "analyzer"]


async def _through_cli(tmp_path, extra, body):
    """Run `proxy` to an echo server with --json, let `body(reader, writer)` talk, SIGINT, return the run."""
    echo = await EchoServer().start()
    host, port = echo.address
    jpath = tmp_path / "run.jsonl"
    proc = await asyncio.create_subprocess_exec(
        *PY, "proxy", "--upstream", f"{host}:{port}", "--listen", "127.0.0.1:0", "--quiet",
        "--json", str(jpath), *extra, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        line = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode()
        m = re.search(r"listening on ([\d.]+):(\d+)", line)
        assert m, line
        reader, writer = await asyncio.open_connection(m.group(1), int(m.group(2)))
        got = await body(reader, writer)
        writer.close()
        proc.send_signal(signal.SIGINT)
        out, err = await asyncio.wait_for(proc.communicate(), 60)
        records = [json.loads(x) for x in jpath.read_text().splitlines()]
        return proc.returncode, out.decode(), err.decode(), records, got
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        await echo.stop()


async def _lines(reader, writer, lines):
    for line in lines:
        writer.write(line)
        assert await asyncio.wait_for(reader.readexactly(len(line)), 10) == line


@pytest.mark.parametrize("mode", ["process", "inline"])
def test_every_command_reaches_the_json_and_the_report_in_both_modes(tmp_path, mode):
    lines = [f"CHG {i} NLN 0\r\n".encode() for i in range(1, 301)]

    async def body(reader, writer):
        await _lines(reader, writer, lines[:100])
        burst = b"".join(lines[100:])  # many commands in one read
        writer.write(burst)
        return await asyncio.wait_for(reader.readexactly(len(burst)), 10)

    code, out, err, records, got = asyncio.run(_through_cli(tmp_path, ["--analysis", mode], body))
    assert code == 0 and "Traceback" not in err, err
    assert got == b"".join(lines[100:])
    for direction in (C2S, S2C):
        trids = [r["trid"] for r in records if r["kind"] == "command" and r["dir"] == direction]
        assert trids == list(range(1, 301))
    assert [r["kind"] for r in records].count("stream") == 1
    assert "MSNP connections" in out and "CHG" in out


def test_backlog_over_the_limit_is_forwarded_unanalysed_and_named_once(tmp_path):
    # --analysis-backlog 0.001 MiB = 1,048 bytes: a 5 KB burst in one read cannot be queued for analysis.
    head = [f"CHG {i} NLN 0\r\n".encode() for i in range(1, 6)]
    burst = b"".join(f"CHG {i} NLN 0\r\n".encode() for i in range(100, 420))
    tail = [f"CHG {i} NLN 0\r\n".encode() for i in range(1000, 1006)]

    async def body(reader, writer):
        await _lines(reader, writer, head)
        writer.write(burst)
        echoed = await asyncio.wait_for(reader.readexactly(len(burst)), 10)
        await _lines(reader, writer, tail)
        return echoed

    code, out, err, records, got = asyncio.run(
        _through_cli(tmp_path, ["--analysis", "process", "--analysis-backlog", "0.001"], body))
    assert code == 0 and "Traceback" not in err, err
    assert got == burst  # forwarding is untouched by the analysis falling behind
    backlog = [r for r in records if r["kind"] == "anomaly" and r["name"] == "proxy.analysis_backlog"]
    assert len(backlog) == 1 and "limit 1,048" in backlog[0]["detail"]
    c2s = [r["trid"] for r in records if r["kind"] == "command" and r["dir"] == C2S]
    assert c2s[:5] == [1, 2, 3, 4, 5]
    assert not set(range(100, 420)) <= set(c2s)  # the burst was not analysed...
    assert {1001, 1002, 1003, 1004, 1005} <= set(c2s)  # ...and the analysis resumed after the hole
    assert "proxy.analysis_backlog" in out


def test_remote_analysis_batches_per_flush_and_fills_the_hole_once_drained():
    async def frame(sock):
        loop = asyncio.get_running_loop()
        data = b""
        while len(data) < 4 or len(data) < 4 + struct.unpack("!I", data[:4])[0]:
            chunk = await asyncio.wait_for(loop.sock_recv(sock, 65536), 10)
            assert chunk
            data += chunk
        return pickle.loads(data[4:])

    async def go():
        ours, theirs = socket.socketpair()
        theirs.setblocking(False)
        remote = await RemoteAnalysis(ours, max_backlog=100).start()
        conn = remote.open("127.0.0.1:1", "127.0.0.1:2")
        remote.feed(conn, C2S, b"x" * 60, 1.0)
        remote.feed(conn, C2S, b"y" * 60, 2.0)   # 120 > 100: not sent, counted as a hole
        remote.feed(conn, S2C, b"z" * 10, 3.0)   # still in the hole (60 > 50 outstanding)
        assert conn.dropped == {C2S: 60, S2C: 10} and remote.dropped == 70
        size, first = await frame(theirs)        # one frame for the whole loop iteration
        theirs.send(struct.pack("!Q", size))     # the analysis process caught up: the hole is filled
        size2, second = await frame(theirs)
        remote.feed(conn, C2S, b"w" * 10, 4.0)
        size3, third = await frame(theirs)
        ours.close()
        theirs.close()
        return size, first, size2, second, size3, third, conn
    size, first, size2, second, size3, third, conn = asyncio.run(go())
    assert size == 60 and [type(r) for r in first] == [Opened, Data, AnomalySeen]
    assert first[2].name == "proxy.analysis_backlog" and conn.anomalies["proxy.analysis_backlog"] == 1
    assert size2 == 0 and {type(g) for g in second} == {Gap} \
        and sorted((g.conn_id, g.direction, g.size) for g in second) == [(conn.id, C2S, 60), (conn.id, S2C, 10)]
    assert size3 == 10 and third == [Data(conn.id, C2S, b"w" * 10, 4.0)]
