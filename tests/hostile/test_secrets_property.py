"""Every kind of secret in the redaction table, sent through every output, is never found there.

Kinds come from analyzer.analysis.redact's table (command parameters, payloads, MIME
headers, HTTP fields, SOAP elements); the outputs are the JSON Lines, the HTML timeline,
the verbose printer (-v, with the plugins' decoded views), the live view, the anomaly
details (a stream cut inside the secret) and the mitm layer's `http`/`login` records and log.
Names are drawn in any letter case where the protocol ignores it.
"""

from __future__ import annotations

import io
import logging
import string

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from analyzer.analysis.redact import COMMAND_SECRETS, MIME_SECRET_HEADERS, Redactor
from analyzer.cli.main import main
from analyzer.msnp.transcript import Chunk, format_chunks

WINDOW = 12  # no 12 characters of a secret in a row may appear in any output
secret = st.text(alphabet=string.ascii_uppercase + string.digits + "*!$", min_size=16, max_size=40).map(
    lambda s: "ZQ" + s)


def cased(word: str):
    return st.lists(st.booleans(), min_size=len(word), max_size=len(word)).map(
        lambda flips: "".join(c.lower() if f else c.upper() for c, f in zip(word, flips)))


def leaks(text: str, secrets: list[str]) -> list[str]:
    return [s for s in secrets for i in range(len(s) - WINDOW + 1) if s[i:i + WINDOW] in text][:3]


def msnp_kinds(draw) -> tuple[list[Chunk], list[str]]:
    """One line (or payload) per secret kind of the table, and the secrets it carries."""
    secrets = []

    def new():
        value = draw(secret)
        secrets.append(value)
        return value.encode()

    chunks = []

    def line(conn, direction, data):
        chunks.append(Chunk(direction, data, 1.0 + len(chunks) / 100, conn))

    methods = [("MD5", "S"), ("TWN", "S"), ("SSO", "S"), ("SHA", "A")]
    assert {w for r in COMMAND_SECRETS if r.cmd == "USR" for i, words, neg in r.words if i == 0 and not neg
            for w in words} == \
        {m.encode() for m, _ in methods}  # every method of the table is drawn here
    line("ns", "c2s", b"VER 1 MSNP18 CVR0\r\n")
    for n, (method, stage) in enumerate(methods, 2):
        code, m, s = draw(cased("USR")), draw(cased(method)), draw(cased(stage))
        line("ns", "c2s", f"{code} {n} {m} {s} ".encode() + new() + b" " + new() + b"\r\n")
    line("ns", "c2s", b"QRY 7 msmsgs@msnmsgr.com 32\r\n" + new()[:32].ljust(32, b"0"))
    line("ns", "s2c", b"XFR 8 SB 127.0.0.1:1863 CKI " + new() + b" 1 0\r\n")
    line("ns", "s2c", b"RNG 1175 127.0.0.1:1863 CKI " + new() + b" alice@example.com Alice\r\n")
    headers = b""
    for name in sorted(MIME_SECRET_HEADERS):
        shown = draw(cased(name)) + draw(st.sampled_from([":", " :", ": ", ":\t"]))
        headers += shown.encode() + new() + b"\r\n"
    profile = b"MIME-Version: 1.0\r\nContent-Type: text/x-msmsgsprofile; charset=UTF-8\r\n" + headers + b"\r\n"
    line("ns", "s2c", b"MSG Hotmail Hotmail %d\r\n" % len(profile) + profile)
    line("sb", "c2s", b"USR 1 bob@example.com " + new() + b"\r\n")
    line("sb", "c2s", b"ANS 2 bob@example.com " + new() + b" 1175\r\n")
    invite = (b"MIME-Version: 1.0\r\nContent-Type: text/x-msmsgsinvite; charset=UTF-8\r\n\r\n"
              b"Invitation-Command: ACCEPT\r\n" + headers.replace(b"ZQ", b"ZQ") + b"\r\n")
    line("sb", "s2c", b"MSG alice@example.com Alice %d\r\n" % len(invite) + invite)
    # A stream cut inside a secret: msnp.line.truncated quotes the start of the line.
    method, stage = draw(st.sampled_from(methods))
    line("cut", "c2s", f"USR 9 {method} {stage} ".encode() + new())
    return chunks, secrets


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.data())
def test_no_secret_kind_reaches_any_msnp_output(tmp_path, capsys, data):
    chunks, secrets = msnp_kinds(data.draw)
    src = tmp_path / "s.msnp"
    src.write_text(format_chunks(chunks))
    rc = main(["decode", "-v", str(src), "--json", str(tmp_path / "o.jsonl"), "--html", str(tmp_path / "o.html")])
    out, err = capsys.readouterr()
    assert rc in (0, 1)
    shown = out + err + (tmp_path / "o.jsonl").read_text("utf-8") + (tmp_path / "o.html").read_text("utf-8")
    assert "msnp.line.truncated" in shown
    assert leaks(shown, secrets) == []
    # The live view.
    from analyzer.analysis.run import Analysis
    from analyzer.capture.files import feed_transcript
    from analyzer.outputs.live import LiveView
    from analyzer.outputs.terminal import SafeConsole
    analysis = Analysis()
    view = LiveView(analysis, Redactor(), lines=200)
    analysis.sinks.append(view)
    feed_transcript(analysis, "s.msnp", src.read_bytes())
    analysis.finish()
    buf = io.StringIO()
    SafeConsole(file=buf, width=400).print(view)
    assert leaks(buf.getvalue(), secrets) == []
    # And the search can fail: without redaction every secret is there.
    main(["decode", "-v", str(src), "--json", str(tmp_path / "o.jsonl"), "--no-redact"])
    capsys.readouterr()
    plain = (tmp_path / "o.jsonl").read_text("utf-8")
    assert all(s[:WINDOW] in plain for s in secrets)


@settings(max_examples=40, deadline=None)
@given(st.data())
def test_no_secret_kind_reaches_the_mitm_records_or_log(data):
    from analyzer.analysis.run import Analysis
    from analyzer.capture.mitm.addon import LogSink
    from analyzer.capture.mitm.gateway import HttpExchange
    from analyzer.capture.mitm.passport import LoginLinker
    from analyzer.outputs.jsonl import JsonLinesWriter
    draw = data.draw
    secrets = [draw(secret) for _ in range(7)]
    ticket = f"t={secrets[0]}{draw(st.sampled_from(['', ',', ', ']))}{secrets[1]}&p={secrets[2]}"
    pwd = secrets[3] + draw(st.sampled_from(["", " with space", ", and,comma", "%2C"]))
    auth = (f"Passport1.4 OrgVerb=GET,OrgURL=http%3A%2F%2Fm,sign-in=alice%40example.com,"
            f"{draw(cased('pwd'))}={pwd},lc=1033,id=507")
    cookie = draw(cased("Set-Cookie"))
    login = HttpExchange("GET", "login.passport.com", f"/login2.srf?t={secrets[4]}&pwd={secrets[5]}",
                         [(draw(cased("Authorization")), auth)], b"", 200,
                         [(draw(cased("Authentication-Info")),
                           f"Passport1.4 da-status=success,from-PP='{ticket}',ru=http://m"),
                          (cookie, f"MSPAuth={secrets[6]}; path=/")], b"", 1.2, 1.5, scheme="https")
    out = io.StringIO()
    red = Redactor()
    analysis = Analysis([JsonLinesWriter(out, red), LogSink(red)])
    linker = LoginLinker(analysis)
    analysis.sinks.append(linker)
    log = io.StringIO()
    handler = logging.StreamHandler(log)
    logging.getLogger().addHandler(handler)
    logging.getLogger().setLevel(logging.INFO)
    try:
        conn = analysis.open(client="127.0.0.1:4000", server="127.0.0.1:1863")
        linker.http(login)
        analysis.feed(conn, "c2s", b"VER 1 MSNP8 CVR0\r\nUSR 3 TWN S " + ticket.replace(" ", "").encode()
                      + b"\r\n", 3.0)
        analysis.finish()
    finally:
        logging.getLogger().removeHandler(handler)
    text = out.getvalue() + log.getvalue()
    assert '"kind":"http"' in text and '"kind":"login"' in text
    assert leaks(text, secrets) == []
