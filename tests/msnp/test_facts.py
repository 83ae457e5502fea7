"""The one parse of XFR/RNG/USR/ANS fields, `handle;{guid}` and host:port that every consumer reads."""

from __future__ import annotations

import pytest

from analyzer.msnp import C2S, S2C, CommandReader
from analyzer.msnp.facts import (Address, Endpoint, format_address, handle_of, host_of, login, parse_address,
                                 parse_endpoint, referral)


def one(direction: str, line: bytes):
    [cmd] = CommandReader(direction).feed(line)
    return cmd


@pytest.mark.parametrize("text, address", [
    ("1.2.3.4:1863", ("1.2.3.4", 1863)),
    ("[::1]:1864", ("::1", 1864)),
    ("[::1]", ("::1", 1863)),
    ("host", ("host", 1863)),
    (b"messenger.example.com:1865", ("messenger.example.com", 1865)),
    ("host:99999", None),       # past 65535
    ("host:0", None),
    ("host:-1", None),
    ("host:", None),
    (":1863", None),
    ("a:b:c", None),            # an IPv6 address with a port must be bracketed
    ("::1:1863", None),
    ("[::1]1863", None),
    ("[::1", None),
    ("[]:1863", None),
    ("host:\u00b9\u00b2", None),  # digits, but not ASCII ones
    ("", None),
])
def test_parse_address(text, address):
    assert parse_address(text) == address


def test_address_round_trip():
    assert format_address("::1", 5) == "[::1]:5"
    assert str(Address("127.0.0.1", 1863)) == "127.0.0.1:1863"
    assert parse_address(format_address("fe80::1", 1864)) == ("fe80::1", 1864)
    assert host_of("[::1]:1863") == "::1" and host_of("127.0.0.1:5") == "127.0.0.1"
    assert host_of("not an address:x") == "not an address:x" and host_of(None) is None


def test_endpoint():
    assert parse_endpoint(b"bob@example.com;{0F5A-11}") == Endpoint("bob@example.com;{0F5A-11}", "bob@example.com",
                                                                    "{0F5A-11}")
    assert parse_endpoint(b"bob@example.com") == Endpoint("bob@example.com", "bob@example.com", None)
    assert handle_of(b"bob@example.com;{x}") == "bob@example.com"
    assert parse_endpoint(b"b\xffb").handle == "b\\xffb"  # never lost, never raises


def test_xfr_ns():
    ref = referral(one(S2C, b"XFR 2 NS 127.0.0.2:1863 0 127.0.0.1:1863\r\n"))
    assert (ref.cmd, ref.kind, ref.target, ref.address, ref.cookie) == ("XFR", "NS", "127.0.0.2:1863",
                                                                        ("127.0.0.2", 1863), None)


def test_xfr_sb():
    ref = referral(one(S2C, b"XFR 10 SB [::1]:1864 CKI 17262740.1050826919.32308 U messenger.msn.com 1\r\n"))
    assert (ref.kind, ref.address, ref.auth, ref.cookie) == ("SB", ("::1", 1864), b"CKI",
                                                             b"17262740.1050826919.32308")
    assert ref.index == 1 and ref.sessid is None


def test_rng():
    ref = referral(one(S2C, b"RNG 11752013 127.0.0.4:1864 CKI 849102291.520491113 bob@example.com;{g} Bob%20B\r\n"))
    assert (ref.cmd, ref.kind, ref.sessid, ref.cookie) == ("RNG", "SB", "11752013", b"849102291.520491113")
    assert ref.inviter == Endpoint("bob@example.com;{g}", "bob@example.com", "{g}")
    assert ref.inviter_nick == b"Bob%20B"


@pytest.mark.parametrize("line", [
    b"XFR 2 NS\r\n", b"XFR 2 XX 1.2.3.4:1863\r\n", b"RNG 1\r\n", b"CHG 2 NLN 0\r\n",
])
def test_not_a_referral(line):
    assert referral(one(S2C, line)) is None


def test_referral_with_a_bad_target_keeps_the_token():
    ref = referral(one(S2C, b"XFR 10 SB 1.2.3.4:70000 CKI c\r\n"))
    assert ref.address is None and ref.target == "1.2.3.4:70000" and ref.cookie == b"c"


def test_a_client_line_is_no_referral():
    assert referral(one(C2S, b"XFR 10 SB\r\n")) is None


def test_logins():
    ns = login(one(C2S, b"USR 3 TWN I alice@example.com\r\n"))
    assert (ns.server, ns.method, ns.stage, ns.endpoint.handle) == ("NS", "TWN", "I", "alice@example.com")
    answer = login(one(C2S, b"USR 4 MD5 S 0123456789abcdef\r\n"))
    assert (answer.stage, answer.value, answer.endpoint) == ("S", b"0123456789abcdef", None)
    challenge = login(one(S2C, b"USR 3 TWN S lc=1033,id=507\r\n"))
    assert (challenge.server, challenge.stage, challenge.value) == ("NS", "S", b"lc=1033,id=507")
    sb = login(one(C2S, b"USR 1 alice@example.com;{g} 17262740.1050826919.32308\r\n"))
    assert (sb.server, sb.endpoint.handle, sb.endpoint.guid, sb.cookie) == (
        "SB", "alice@example.com", "{g}", b"17262740.1050826919.32308")
    ans = login(one(C2S, b"ANS 1 bob@example.com 849102291.520491113 11752013\r\n"))
    assert (ans.cmd, ans.server, ans.cookie, ans.sessid) == ("ANS", "SB", b"849102291.520491113", "11752013")
    ok = login(one(S2C, b"USR 1 OK alice@example.com Alice%20A\r\n"))
    assert (ok.server, ok.stage, ok.endpoint.handle, ok.nick) == (None, "OK", "alice@example.com", b"Alice%20A")


@pytest.mark.parametrize("direction, line", [
    (C2S, b"USR 1\r\n"), (C2S, b"USR 1 alice@example.com\r\n"), (C2S, b"ANS 1 bob@example.com\r\n"),
    (S2C, b"ANS 1 OK\r\n"), (S2C, b"USR 1 what\r\n"), (C2S, b"CAL 2 bob@example.com\r\n"),
])
def test_not_a_login(direction, line):
    assert login(one(direction, line)) is None


def test_message_sender():
    from analyzer.msnp.facts import nick_text, sender
    found = sender(one(S2C, b"MSG bob@example.com;{g} Bob%20B 4\r\nabcd"))
    assert (found.endpoint.handle, found.endpoint.guid, found.nick, found.service) == (
        "bob@example.com", "{g}", b"Bob%20B", False)
    assert nick_text(found.nick) == "Bob B"
    assert sender(one(S2C, b"MSG Hotmail Hotmail 4\r\nabcd")).service
    assert sender(one(C2S, b"MSG 4 N 4\r\nabcd")) is None


@pytest.mark.parametrize("token", [b"bob@example.com", b"Bob@Example.com;{0F5A-11}", b"a;b;c", b";{g}", b""])
def test_the_pairing_copy_of_the_endpoint_rule_agrees(token):
    # pairing.py keeps its own bytes-level copy (matching a JOI to its CAL): held to the rule here.
    from analyzer.msnp.pairing import _handle
    assert _handle(token).decode() == handle_of(token).lower()


def test_equal_short_tokens_share_one_string_within_a_bounded_table(monkeypatch):
    # Linking keeps nicks and referral addresses on each of thousands of connections open at
    # once on a busy server: equal tokens (from different lines) give one string object.
    from analyzer.msnp import facts
    monkeypatch.setattr(facts, "_NICKS", {})
    monkeypatch.setattr(facts, "SHARED_TEXTS", 3)
    first, again = facts.nick_text(b"Bob%20" + b"Smith"), facts.nick_text(b"Bob%20Smith")
    assert first == again == "Bob Smith" and first is again
    a = referral(one(S2C, b"XFR 2 SB 127.0.0.9:1864 CKI 17.1\r\n"))
    b = referral(one(S2C, b"RNG 11 127.0.0.9:1864 CKI 99.9 bob@x.com Bob\r\n"))
    assert a.target == b.target == "127.0.0.9:1864" and a.target is b.target
    assert a.address == b.address == ("127.0.0.9", 1864) and a.address.host is b.address.host
    assert parse_address("127.0.0.9:1" + "863").host is a.address.host
    long = b"x" * (facts.SHARED_LENGTH + 1)
    assert facts.nick_text(long) == "x" * len(long) and long not in facts._NICKS   # not remembered
    for n in range(10):
        assert facts.nick_text(b"n%d" % n) == f"n{n}"
        assert len(facts._NICKS) <= 3                                              # bounded
