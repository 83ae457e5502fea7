"""Timeline pages for the tests: the scripted sample sessions and a hostile capture."""

from __future__ import annotations

from pathlib import Path

from analyzer.analysis.run import Analysis
from analyzer.msnp import C2S, S2C, encode_command
from analyzer.outputs.html import HtmlTimeline
from analyzer.analysis.linking import Linker
from analyzer.analysis.redact import Redactor
from analyzer.msnp.transcript import Chunk
from captures.sessions import CONNECTIONS, SESSIONS

CANARY = "window.__pwned=1"
HOSTILE_NICK = "<script>window.__pwned=1</script>"
HOSTILE_IMG = "<img src=x onerror=window.__pwned=1>"
HOSTILE_BODY = ("</script><script>window.__pwned=1</script><img src=x onerror=\"window.__pwned=1\">"
                " <a href=\"javascript:window.__pwned=1\">click</a> javascript:window.__pwned=1 "
                "<!-- \u2028\u2029 <style>body{display:none}</style>")


def analyse(sessions: dict[str, list[Chunk]], addresses: dict[str, dict] | None = None,
            redact: bool = True):
    """(analysis, linker, timeline) for several named sessions; connection ids 'name:label'."""
    redactor = Redactor(enabled=redact, key=b"t" * 16)
    linker = Linker(redactor)
    timeline = HtmlTimeline(None, linker, redactor, sources=list(sessions))
    analysis = Analysis([linker, timeline])
    for name, chunks in sessions.items():
        conns = {}
        for chunk in chunks:
            conn = conns.get(chunk.conn)
            if conn is None:
                client, server = (addresses or {}).get(name, {}).get(chunk.conn, (None, None))
                conn = conns[chunk.conn] = analysis.open(client, server, conn_id=f"{name}:{chunk.conn}")
            analysis.feed(conn, chunk.direction, chunk.data, chunk.ts)
    timeline.written = True  # rendered by the caller
    analysis.finish()
    return analysis, linker, timeline


def write_page(path: Path, sessions: dict[str, list[Chunk]], addresses=None, redact: bool = True):
    analysis, linker, timeline = analyse(sessions, addresses, redact)
    path.write_text(timeline.render(), encoding="utf-8")
    return analysis, timeline


def sample_page(path: Path, redact: bool = True):
    """msnp8 (DS, NS, two switchboards) and the anomalies session, with loopback addresses."""
    names = ("msnp8", "anomalies")
    return write_page(path, {n: SESSIONS[n] for n in names}, {n: CONNECTIONS[n] for n in names}, redact)


def hostile_chunks() -> list[Chunk]:
    def c2s(data, ts):
        return Chunk(C2S, data, ts, "sb1")

    def s2c(data, ts):
        return Chunk(S2C, data, ts, "sb1")
    body = ("MIME-Version: 1.0\r\nContent-Type: text/plain; charset=UTF-8\r\n"
            f"X-Evil: {HOSTILE_IMG}\r\n\r\n{HOSTILE_BODY}").encode()
    nick = "%3Cscript%3Ewindow.__pwned=1%3C/script%3E"
    img_nick = "%3Cimg%20src=x%20onerror=window.__pwned=1%3E"
    return [
        c2s(encode_command("USR", 1, ["alice@example.com", "1.2.3"]), 0.1),
        s2c(encode_command("USR", 1, ["OK", "alice@example.com", nick]), 0.2),
        c2s(encode_command("CAL", 2, ["mallory@example.com"]), 0.3),
        s2c(encode_command("CAL", 2, ["RINGING", "1234"]), 0.4),
        s2c(encode_command("JOI", None, ["mallory@example.com", img_nick]), 0.5),
        s2c(encode_command("MSG", None, ["mallory@example.com", nick], body.replace(b"\r\n\r\n", b"\r\n\r\n", 1)), 0.6),
        c2s(encode_command("MSG", 3, ["A"], body), 0.7),
        s2c(encode_command("ACK", 3, []), 0.8),
        s2c(encode_command("BYE", None, ["<script>window.__pwned=1</script>"]), 0.9),
    ]


def hostile_page(path: Path):
    return write_page(path, {"hostile": hostile_chunks()})
