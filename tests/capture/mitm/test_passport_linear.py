"""The login body and header scanners are linear and find what the regular expressions they replace found."""

import re

from hypothesis import given, settings
from hypothesis import strategies as st

from analyzer.capture.mitm.passport import elements, passport_fields

# The expressions the scanners replace (quadratic on unclosed tags / runs without '='): the reference.
TOKEN = re.compile(rb"<(?:\w+:)?BinarySecurityToken\b[^>]*>(.*?)</(?:\w+:)?BinarySecurityToken>", re.S)
USERNAME = re.compile(rb"<(?:\w+:)?Username\b[^>]*>(.*?)</(?:\w+:)?Username>", re.S)


def reference_fields(text: str) -> dict:
    out = {}
    for m in re.finditer(r"\s*([\w-]+)=('[^']*'|[^,]*)\s*,?", text):
        val = m.group(2)
        out.setdefault(m.group(1), val[1:-1] if val.startswith("'") and val.endswith("'") else val)
    return out


PIECES = [b"<", b">", b"</", b"/", b"Username", b"BinarySecurityToken", b"wsse:", b"ps:", b"x", b" ", b"s",
          b"Id=\"1\"", b"\n", b":", b"t=1&amp;p=2", b"Usernames"]


@settings(max_examples=400, deadline=None)
@given(st.lists(st.sampled_from(PIECES), max_size=30))
def test_elements_finds_what_the_regex_found(pieces):
    body = b"".join(pieces)
    assert elements(body, b"Username") == USERNAME.findall(body)
    assert elements(body, b"BinarySecurityToken") == TOKEN.findall(body)


FIELD_PIECES = ["a", "b-c", "=", ",", "'", " ", "x y", "sign-in", "pwd", "da-status", "success", "\t", "é", "_"]


@settings(max_examples=400, deadline=None)
@given(st.lists(st.sampled_from(FIELD_PIECES), max_size=30))
def test_passport_fields_finds_what_the_regex_found(pieces):
    text = "".join(pieces)
    assert passport_fields(text) == reference_fields(text.strip())


def test_real_shapes():
    body = (b'<S:Envelope><wsse:Username Id="u">bob@example.com</wsse:Username>'
            b'<wsse:BinarySecurityToken Id="Compact1">t=A&amp;p=B</wsse:BinarySecurityToken>'
            b'<BinarySecurityToken>t=C</BinarySecurityToken></S:Envelope>')
    assert elements(body, b"Username") == [b"bob@example.com"]
    assert elements(body, b"BinarySecurityToken") == [b"t=A&amp;p=B", b"t=C"]
    assert passport_fields("Passport1.4 OrgVerb=GET,sign-in=bob%40example.com,pwd=x,from-PP='t=1&p=2,3'") == {
        "OrgVerb": "GET", "sign-in": "bob%40example.com", "pwd": "x", "from-PP": "t=1&p=2,3"}


def test_unclosed_tags_and_runs_without_equals_are_scanned_once():
    # Counted, not timed: the scanner looks at the body a bounded number of times. A
    # quadratic scan of these 2 MB would take minutes; a linear one well under a second.
    body = b"<wsse:Username>" + b"<wsse:Username>x" * 100_000 + b"<BinarySecurityToken" * 50_000
    assert elements(body, b"Username") == [] and elements(body, b"BinarySecurityToken") == []
    assert passport_fields("Passport1.4 " + "a" * 1_000_000) == {}
