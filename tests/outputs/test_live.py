"""The live view renders connections and the latest commands, redacted, anomalies highlighted."""

from __future__ import annotations

import io

from rich.console import Console

from analyzer.analysis.run import Analysis
from analyzer.msnp import C2S, S2C
from analyzer.outputs.live import LiveView


def render(view) -> str:
    console = Console(file=io.StringIO(), width=160, color_system=None)
    console.print(view)
    return console.file.getvalue()


def test_connections_commands_latency_rewrites_and_anomalies():
    analysis = Analysis()
    view = LiveView(analysis, lines=50)
    analysis.sinks.append(view)
    conn = analysis.open(client="127.0.0.1:5000", server="10.0.0.1:1863")
    analysis.feed(conn, C2S, b"VER 1 MSNP8 CVR0\r\nUSR 2 alice@example.com 1726.1050.3230\r\n", 1.0)
    analysis.feed(conn, S2C, b"VER 1 MSNP8 CVR0\r\nUSR 2 OK alice@example.com Alice\r\n", 1.0125)
    analysis.feed(conn, C2S, b"CAL  3 bob@example.com\r\n", 1.1)
    view.event(conn, {"kind": "rewrite", "cmd": "XFR", "target": "SB", "original": "10.0.0.9:1863",
                      "rewritten": "127.0.0.1:40000"})
    view.notice("upstream 10.0.0.2:1863 unreachable: Connection refused")
    text = render(view)
    assert "127.0.0.1:5000" in text and "10.0.0.1:1863" in text and "SB" in text and "MSNP8" in text
    assert "[1] >>> VER 1 MSNP8 CVR0" in text and "[1] <<< USR 2 OK alice@example.com Alice" in text
    assert "1726.1050.3230" not in text and "<redacted:" in text  # the cookie is a secret
    assert "VER 1 answered 12.5 ms" in text
    assert "! msnp.whitespace.multiple_spaces" in text
    assert "~ XFR SB 10.0.0.9:1863 -> 127.0.0.1:40000" in text
    assert "! upstream 10.0.0.2:1863 unreachable" in text
    analysis.close(conn, 2.0)
    assert "closed" in render(view)


def test_scrolls_and_caps_the_connection_rows():
    analysis = Analysis()
    view = LiveView(analysis, lines=3, connections=2)
    analysis.sinks.append(view)
    for i in range(4):
        conn = analysis.open()
        analysis.feed(conn, C2S, f"PNG\r\nCHG {i} NLN 0\r\n".encode(), float(i))
    text = render(view)
    assert "2 more connection(s) not shown" in text
    assert text.count(">>>") == 3 and "CHG 3 NLN 0" in text and "CHG 0 NLN" not in text
