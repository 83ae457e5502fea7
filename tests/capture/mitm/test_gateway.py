"""The HTTP gateway decoder and its feeding into an Analysis."""

import io
import json

from analyzer.analysis.run import Analysis
from analyzer.capture.mitm.gateway import (GatewayData, GatewayDecoder, GatewayFeeder, HttpExchange,
                                      RoundTrip, SessionClosed, SessionOpened, parse_messenger_header)
from analyzer.outputs.jsonl import JsonLinesWriter

CT = [("Content-Type", "application/x-msn-messenger")]


def x(path, body=b"", resp=b"", sid="7.1", gw="10.0.0.9", status=200, ts=1.0, extra=""):
    headers = [("X-MSN-Messenger", f"SessionID={sid}; GW-IP={gw}{extra}")] + CT if sid else CT
    return HttpExchange("POST", "gateway.example", path, CT, body, status, headers, resp,
                        ts, ts + 0.05, "127.0.0.1:5000", "127.0.0.1:80")


def session_exchanges():
    return [
        x("/gateway/gateway.dll?Action=open&Server=NS&IP=ns.example", b"VER 1 MSNP8 CVR0\r\nCVR 2 0x0409 w",
          b"VER 1 MSNP8 CVR0\r\n", ts=1.0),
        # the CVR line was split across two POST bodies: chunks are not messages
        x("/gateway/gateway.dll?SessionID=7.1", b"in 4.10 i386 MSNMSGR 5.0.0540 MSMSGS a@example.com\r\n",
          b"CVR 2 5.0.0540 5.0.0540 1.0.0000 http://x http://y\r\n", sid="7.2", ts=2.0),
        x("/gateway/gateway.dll?Action=poll&SessionID=7.2", b"", b"", sid="7.2", ts=3.0),
        x("/gateway/gateway.dll?SessionID=7.2", b"OUT\r\n", b"", sid="7.2", ts=4.0, extra="; Session=close"),
    ]


def test_decoder_events_follow_one_session_through_changing_ids():
    dec = GatewayDecoder()
    kinds = []
    for ex in session_exchanges():
        kinds.append([type(e).__name__ for e in dec.exchange(ex)])
    assert kinds[0] == ["SessionOpened", "GatewayData", "GatewayData", "RoundTrip"]
    assert kinds[2] == ["RoundTrip"]          # an empty poll carries nothing
    assert kinds[3][-1] == "SessionClosed"
    assert len(dec.sessions) == 1
    s = dec.sessions[0]
    assert (s.server_type, s.target, s.gw_ip, s.round_trips, s.polls) == ("NS", "ns.example", "10.0.0.9", 4, 1)
    assert s.session_ids == ["7.1", "7.2"] and s.closed


def test_feeder_decodes_the_session_as_one_connection_with_round_trips():
    out = io.StringIO()
    analysis = Analysis([JsonLinesWriter(out)])
    feeder = GatewayFeeder(analysis)
    for ex in session_exchanges():
        feeder.exchange(ex)
    analysis.finish()
    recs = [json.loads(line) for line in out.getvalue().splitlines()]
    cmds = [(r["dir"], r["cmd"]) for r in recs if r["kind"] == "command"]
    assert cmds == [("c2s", "VER"), ("s2c", "VER"), ("c2s", "CVR"), ("s2c", "CVR"), ("c2s", "OUT")]
    http = [r for r in recs if r["kind"] == "http"]
    assert [h["action"] for h in http] == ["open", "data", "poll", "data"]
    assert all(h["stream"] == "gw1" for h in http)
    assert http[0]["bytes"] == {"c2s": 32, "s2c": 18} and http[0]["latency_ms"] == 50.0
    stream = [r for r in recs if r["kind"] == "stream"]
    assert len(stream) == 1 and stream[0]["version"] == "MSNP8"
    assert "gateway ns.example" not in stream[0]["server"] and "ns.example via gateway" in stream[0]["server"]
    txns = [r for r in recs if r["kind"] == "transaction"]
    assert {(t["cmd"], t["outcome"]) for t in txns} >= {("VER", "answered"), ("CVR", "answered")}
    assert analysis.totals()["anomalies"] == {}


def test_unknown_session_is_reported_and_still_decoded():
    analysis = Analysis()
    feeder = GatewayFeeder(analysis)
    feeder.exchange(x("/gateway/gateway.dll?SessionID=99.1", b"PNG\r\n", b"QNG 50\r\n", sid="99.1"))
    analysis.finish()
    conn = analysis.connections["gw1"]
    assert conn.anomalies["gateway.session.unknown"] == 1
    assert conn.commands == {"PNG": 1, "QNG": 1}


def test_http_errors_and_missing_header_are_named():
    dec = GatewayDecoder()
    dec.exchange(x("/gateway/gateway.dll?Action=open&Server=SB&IP=sb.example", b"USR 1 a@b c\r\n", b""))
    failed = HttpExchange("POST", "gw", "/gateway/gateway.dll?SessionID=7.1", CT, b"MSG 2 N 0\r\n",
                          None, [], b"", 2.0, None, error="connection reset")
    names = [e.name for e in dec.exchange(failed) if hasattr(e, "name")]
    assert names == ["gateway.http.error"]
    noheader = HttpExchange("POST", "gw", "/gateway/gateway.dll?SessionID=7.1", CT, b"", 200, CT, b"")
    assert [e.name for e in dec.exchange(noheader) if hasattr(e, "name")] == ["gateway.header.missing"]
    bad = HttpExchange("POST", "gw", "/gateway/gateway.dll?Action=open", CT, b"", 200, [], b"")
    assert "gateway.request.malformed" in [e.name for e in dec.exchange(bad) if hasattr(e, "name")]


def test_other_http_is_ignored_and_header_parsing():
    assert GatewayDecoder().exchange(HttpExchange("GET", "h", "/index.html")) == []
    assert parse_messenger_header("SessionID=1.2; GW-IP=10.1.1.1; Session=close") == {
        "SessionID": "1.2", "GW-IP": "10.1.1.1", "Session": "close"}
    assert parse_messenger_header(None) == {}


def test_same_bytes_as_one_tcp_connection():
    """A gateway session decodes to the same commands as the bytes sent over plain TCP."""
    exs = session_exchanges()
    tcp = Analysis()
    conn = tcp.open()
    gw = Analysis()
    feeder = GatewayFeeder(gw)
    for ex in exs:
        feeder.exchange(ex)
        tcp.feed(conn, "c2s", ex.request_body, ex.ts_request)
        tcp.feed(conn, "s2c", ex.response_body, ex.ts_response)
    tcp.finish()
    gw.finish()
    assert tcp.connections["1"].commands == gw.connections["gw1"].commands


def test_content_type_poll_body_and_use_after_close():
    dec = GatewayDecoder()
    dec.exchange(x("/gateway/gateway.dll?Action=open&Server=NS&IP=ns.example", b"VER 1 MSNP8 CVR0\r\n", b""))
    plain = HttpExchange("POST", "gw", "/gateway/gateway.dll?SessionID=7.1", [("Content-Type", "text/plain")],
                         b"PNG\r\n", 200, [("X-MSN-Messenger", "SessionID=7.1; GW-IP=1.2.3.4")], b"")
    assert [e.name for e in dec.exchange(plain) if hasattr(e, "name")] == ["gateway.content_type"]
    poll = x("/gateway/gateway.dll?Action=poll&SessionID=7.1", b"PNG\r\n", b"", extra="; Session=close")
    events = dec.exchange(poll)
    assert [e.name for e in events if hasattr(e, "name")] == ["gateway.poll.body"]
    assert isinstance(events[-1], SessionClosed)
    again = x("/gateway/gateway.dll?SessionID=7.1", b"OUT\r\n", b"")
    assert [e.name for e in dec.exchange(again) if hasattr(e, "name")] == ["gateway.session.after_close"]
