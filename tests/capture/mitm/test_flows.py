"""Reading mitmproxy flow files (written here with mitmproxy's own FlowWriter and test flows)."""

import io
import json

import pytest
from mitmproxy import io as mio
from mitmproxy import tcp
from mitmproxy.test import tflow

from analyzer.analysis.run import Analysis
from analyzer.capture.mitm.flows import FlowFileError, is_flow_file, read_flow_file
from analyzer.outputs.jsonl import JsonLinesWriter


def write_flows(path, flows):
    with open(path, "wb") as f:
        writer = mio.FlowWriter(f)
        for flow in flows:
            writer.add(flow)


def msnp_flow():
    return tflow.ttcpflow(messages=[
        tcp.TCPMessage(True, b"VER 1 MSNP8 CV", 10.0), tcp.TCPMessage(True, b"R0\r\nCVR 2 0x0409 w", 10.1),
        tcp.TCPMessage(False, b"VER 1 MSNP8 CVR0\r\n", 10.2), tcp.TCPMessage(True, b"inn 5.1\r\n", 10.3),
        tcp.TCPMessage(False, b"CVR 2 1 1 1 http://a http://b\r\n", 10.4)])


def gateway_flow():
    f = tflow.tflow(resp=True)
    f.request.method = "POST"
    f.request.path = "/gateway/gateway.dll?Action=open&Server=NS&IP=ns.example"
    f.request.headers["Content-Type"] = "application/x-msn-messenger"
    f.request.content = b"VER 1 MSNP8 CVR0\r\n"
    f.response.headers["X-MSN-Messenger"] = "SessionID=1.1; GW-IP=127.0.0.1"
    f.response.content = b"VER 1 MSNP8 CVR0\r\n"
    return f


def test_tcp_and_gateway_flows(tmp_path):
    path = tmp_path / "flows.mitm"
    write_flows(path, [msnp_flow(), gateway_flow(), tflow.tflow(resp=True)])
    assert is_flow_file(path)
    out = io.StringIO()
    analysis = Analysis([JsonLinesWriter(out)])
    reader = read_flow_file(path, analysis)
    analysis.finish()
    assert (reader.tcp_flows, reader.http_flows) == (1, 2)
    recs = [json.loads(line) for line in out.getvalue().splitlines()]
    tcp_cmds = [(r["dir"], r["cmd"], r["ts"]) for r in recs if r["kind"] == "command" and r["stream"] == "1"]
    assert tcp_cmds == [("c2s", "VER", 10.1), ("s2c", "VER", 10.2), ("c2s", "CVR", 10.3), ("s2c", "CVR", 10.4)]
    assert analysis.connections["gw1"].commands == {"VER": 2}
    assert [r["via"] for r in recs if r["kind"] == "http"] == ["gateway"]


def test_damaged_after_the_first_flow_keeps_what_was_read(tmp_path):
    path = tmp_path / "cut.mitm"
    write_flows(path, [msnp_flow(), msnp_flow()])
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 40])
    analysis = Analysis()
    reader = read_flow_file(path, analysis)
    assert reader.tcp_flows == 1
    assert analysis.capture_anomalies["mitm.flowfile.corrupt"] == 1


def test_not_a_flow_file(tmp_path):
    other = tmp_path / "notes.txt"
    other.write_bytes(b"VER 1 MSNP8 CVR0\r\n")
    assert not is_flow_file(other)
    assert not is_flow_file(tmp_path / "missing")
    with pytest.raises(FlowFileError):
        read_flow_file(other, Analysis())
    with pytest.raises(FlowFileError):
        read_flow_file(tmp_path / "missing", Analysis())


def test_analyze_command_reads_flow_files_beside_pcaps(tmp_path):
    import subprocess
    import sys
    path = tmp_path / "flows.mitm"
    write_flows(path, [msnp_flow(), gateway_flow()])
    out = tmp_path / "a.jsonl"
    proc = subprocess.run([sys.executable, "-m", "analyzer", "analyze", str(path), "captures/msnp8_login_chat.pcap",
                           "--json", str(out)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    recs = [json.loads(line) for line in out.read_text().splitlines()]
    streams = {r["stream"] for r in recs if r["kind"] == "command"}
    assert "gw1" in streams and len(streams) == 1 + 1 + 4  # the TCP flow, the gateway session, 4 pcap streams
    tcp_cmds = [(r["dir"], r["cmd"]) for r in recs if r["kind"] == "command" and r["stream"] == "1"]
    assert tcp_cmds == [("c2s", "VER"), ("s2c", "VER"), ("c2s", "CVR"), ("s2c", "CVR")]
    # A damaged flow file that yields nothing is unusable input: one line, exit 2.
    bad = tmp_path / "bad.mitm"
    bad.write_bytes(path.read_bytes()[:30])
    proc = subprocess.run([sys.executable, "-m", "analyzer", "analyze", str(bad)], capture_output=True, text=True)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr


def test_a_tcp_flow_ends_at_its_close_not_its_last_message(tmp_path):
    flow = msnp_flow()  # messages 10.0 to 10.4
    flow.client_conn.timestamp_end = 13.7  # the client logged out by closing the socket
    flow.server_conn.timestamp_end = 13.75
    path = tmp_path / "f.mitm"
    write_flows(path, [flow])
    out = io.StringIO()
    analysis = Analysis([JsonLinesWriter(out)])
    read_flow_file(path, analysis)
    analysis.finish()
    [stream] = [r for r in map(json.loads, out.getvalue().splitlines()) if r["kind"] == "stream"]
    assert stream["start"] == 10.0 and stream["end"] == 13.75
