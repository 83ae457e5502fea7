"""Passport/Nexus and RST/SSO login recognition, linking to USR, and redaction of their secrets."""

import io
import json

from analyzer.analysis.run import Analysis
from analyzer.capture.mitm.gateway import HttpExchange
from analyzer.capture.mitm.passport import LoginLinker, passport_fields, recognise, ticket_key
from analyzer.outputs.jsonl import JsonLinesWriter
from analyzer.analysis.redact import Redactor

TICKET = "t=T1cketAAA*bbb$&p=PprofXYZ$"
NEXUS = HttpExchange("GET", "nexus.passport.com", "/rdr/pprdr.asp", [], b"", 200,
                     [("PassportURLs", "DARealm=Passport.Net,DALogin=login.passport.com/login2.srf,DAReg=x")],
                     b"", 1.0, 1.1, scheme="https")
AUTH = ("Passport1.4 OrgVerb=GET,OrgURL=http%3A%2F%2Fmessenger%2Emsn%2Ecom,sign-in=alice%40example.com,"
        "pwd=hunter2,lc=1033,id=507,tw=40,fs=1,ru=http%3A%2F%2Fmessenger%2Emsn%2Ecom,ct=1062764229,kpp=1,kv=5,"
        "ver=2.1.0173.1,tpf=43f8a4c8ed940c04e3740be46c4d1619")
LOGIN_OK = HttpExchange("GET", "login.passport.com", "/login2.srf", [("Authorization", AUTH)], b"", 200,
                        [("Authentication-Info", f"Passport1.4 da-status=success,tname=MSPAuth,tname=MSPProf,"
                                                 f"tname=MSPSec,from-PP='{TICKET}',ru=http://messenger.msn.com")],
                        b"", 1.2, 1.5, scheme="https")
LOGIN_BAD = HttpExchange("GET", "login.passport.com", "/login2.srf", [("Authorization", AUTH)], b"", 401,
                         [("WWW-Authenticate", "Passport1.4 da-status=failed,srealm=Passport.NET,prompt")],
                         b"", 1.2, 1.5, scheme="https")
RST_REQ = (b'<Envelope><Header><wsse:Security><wsse:UsernameToken Id="user"><wsse:Username>bob@example.com'
           b'</wsse:Username><wsse:Password>s3cret&amp;x</wsse:Password></wsse:UsernameToken></wsse:Security>'
           b'</Header><Body/></Envelope>')
RST_RESP = (b'<S:Envelope><S:Body><wst:RequestSecurityTokenResponseCollection>'
            b'<wst:RequestSecurityTokenResponse><wst:RequestedSecurityToken>'
            b'<wsse:BinarySecurityToken Id="Compact1">t=SSOtick&amp;p=SSOprof</wsse:BinarySecurityToken>'
            b'</wst:RequestedSecurityToken><wst:RequestedProofToken><wst:BinarySecret>Zm9vYmFy</wst:BinarySecret>'
            b'</wst:RequestedProofToken></wst:RequestSecurityTokenResponse>'
            b'</wst:RequestSecurityTokenResponseCollection></S:Body></S:Envelope>')
RST = HttpExchange("POST", "login.live.com", "/RST.srf", [("Content-Type", "text/xml")], RST_REQ, 200,
                   [("Content-Type", "text/xml")], RST_RESP, 2.0, 2.4, scheme="https")


def run(exchanges_first, lines, *, no_redact=False):
    out = io.StringIO()
    red = Redactor(enabled=not no_redact)
    analysis = Analysis([JsonLinesWriter(out, red)], redactor=red)
    linker = LoginLinker(analysis)
    analysis.sinks.append(linker)
    conn = analysis.open(client="127.0.0.1:4000", server="127.0.0.1:1863")
    if exchanges_first:
        for ex in exchanges_first:
            linker.http(ex)
    for direction, data in lines:
        analysis.feed(conn, direction, data, 3.0)
    if not exchanges_first:
        for ex in (NEXUS, LOGIN_OK):
            linker.http(ex)
    analysis.finish()
    return [json.loads(line) for line in out.getvalue().splitlines()], out.getvalue(), analysis


TWN = [("c2s", b"VER 1 MSNP8 CVR0\r\n"), ("s2c", b"VER 1 MSNP8 CVR0\r\n"),
       ("c2s", f"USR 3 TWN S {TICKET}\r\n".encode()), ("s2c", b"USR 3 OK alice@example.com Alice 1 0\r\n")]


def test_recognise_the_three_kinds():
    assert recognise(NEXUS).role == "nexus" and recognise(NEXUS).outcome == "info"
    ok = recognise(LOGIN_OK)
    assert (ok.role, ok.outcome, ok.handle, ok.tickets) == ("passport", "success", "alice@example.com", [TICKET])
    assert recognise(LOGIN_BAD).outcome == "failed"
    rst = recognise(RST)
    assert (rst.role, rst.outcome, rst.handle, rst.tickets) == ("rst", "success", "bob@example.com",
                                                                 ["t=SSOtick&p=SSOprof"])
    assert recognise(HttpExchange("GET", "example.com", "/index.html")) is None


def test_passport_fields_and_ticket_keys():
    f = passport_fields("Passport1.4 da-status=success,from-PP='t=a,b&p=c',ru=x")
    assert f["da-status"] == "success" and f["from-PP"] == "t=a,b&p=c" and f["ru"] == "x"
    assert ticket_key("t=abc&p=def") == ticket_key("'t=abc&amp;p=zzz'") == "abc"


def test_twn_login_linked_to_usr_line_redacted():
    recs, text, analysis = run([NEXUS, LOGIN_OK], TWN)
    logins = [r for r in recs if r["kind"] == "login"]
    assert len(logins) == 1
    login = logins[0]
    assert login["stream"] == "1" and login["method"] == "TWN" and login["handle"] == "alice@example.com"
    assert [s["role"] for s in login["steps"]] == ["nexus", "passport"]
    assert login["outcome"] == "success"
    usr = next(r for r in recs if r["kind"] == "command" and r["cmd"] == "USR" and r["dir"] == "c2s")
    assert usr["params"][2] == login["ticket"]  # same mask: the timeline can match them
    assert "hunter2" not in text and "T1cketAAA" not in text and "PprofXYZ" not in text
    assert "alice%40example.com" in login["steps"][1]["headers"]["Authorization"]  # not a secret
    # the login record comes after the USR line it explains
    kinds = [(r["kind"], r.get("cmd")) for r in recs]
    assert kinds.index(("login", None)) > kinds.index(("command", "USR"))


def test_ticket_seen_before_the_login_still_links():
    recs, _, _ = run(None, TWN)
    logins = [r for r in recs if r["kind"] == "login"]
    assert len(logins) == 1 and logins[0]["stream"] == "1"


def test_sso_login_linked_and_soap_secrets_redacted():
    lines = [("c2s", b"VER 1 MSNP15 CVR0\r\n"), ("s2c", b"VER 1 MSNP15 CVR0\r\n"),
             ("c2s", b"USR 3 SSO S t=SSOtick&p=SSOprof AAAAresponseBBBB\r\n")]
    recs, text, _ = run([RST], lines)
    login = next(r for r in recs if r["kind"] == "login")
    assert login["method"] == "SSO" and login["handle"] == "bob@example.com"
    assert "SSOtick" not in text and "s3cret" not in text and "AAAAresponseBBBB" not in text


def test_no_redact_shows_the_ticket():
    recs, text, _ = run([NEXUS, LOGIN_OK], TWN, no_redact=True)
    assert next(r for r in recs if r["kind"] == "login")["ticket"] == TICKET
    assert "hunter2" in text


def test_failed_login_is_an_anomaly():
    analysis = Analysis()
    LoginLinker(analysis).http(LOGIN_BAD)
    assert analysis.capture_anomalies["passport.login.failed"] == 1


def test_redactor_header_and_text():
    r = Redactor(key=b"k" * 16)
    auth = r.header("Authorization", AUTH)
    assert "hunter2" not in auth and "pwd=<redacted:" in auth and "lc=1033" in auth
    info = r.header("Authentication-Info", f"Passport1.4 da-status=success,from-PP='{TICKET}',ru=http://m")
    assert "T1cketAAA" not in info and "PprofXYZ" not in info and info.endswith("',ru=http://m")
    cookie = r.header("Set-Cookie", "MSPAuth=abc123; path=/")
    assert "abc123" not in cookie and cookie.startswith("MSPAuth=<redacted:")
    body = r.text(RST_REQ + RST_RESP)
    for secret in (b"s3cret", b"SSOtick", b"Zm9vYmFy"):
        assert secret not in body
    assert b"bob@example.com" in body
    off = Redactor(enabled=False)
    assert off.header("Authorization", AUTH) == AUTH and off.text(RST_REQ) == RST_REQ


def test_a_huge_header_is_cut_in_the_records_and_still_redacted():
    # A crafted megabyte Authorization header: the record keeps MAX_SHOWN characters, says how many
    # more there were, and the password inside the kept part is still masked.
    from analyzer.capture.mitm.passport import MAX_SHOWN
    huge = AUTH + ",x=" + "a" * (1 << 20)
    login = HttpExchange("GET", "login.passport.com", "/login2.srf", [("Authorization", huge)], b"", 200,
                         LOGIN_OK.response_headers, b"", 1.2, 1.5, scheme="https")
    recs, text, _ = run([NEXUS, login], TWN)
    shown = next(r for r in recs if r["kind"] == "http" and r["via"] == "passport")["headers"]["Authorization"]
    assert shown.endswith(f"[... {len(huge) - MAX_SHOWN} more characters]")
    assert len(shown) < MAX_SHOWN + 64
    assert "hunter2" not in text and "sign-in=alice%40example.com" in shown
    assert len(text) < 4 * MAX_SHOWN + 8192  # the login record's copy of the step is cut too
