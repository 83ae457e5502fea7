"""Regular expressions that were quadratic on crafted payloads (issue #16, invariant 1).

Each rewritten rule is checked against the regular expression it replaces on
random inputs built from the pieces that matter (same matches, same output),
and on the pathological input that once took seconds (by its result: timings
live in bench/scaling.py, class `unclosed_tags`).
"""

from __future__ import annotations

import random
import re

from analyzer.analysis import contacts, redact
from analyzer.msnp import p2p

PIECES = [b"<d", b"</d>", b"<c", b">", b" n=\"", b"\"", b"a", b"bob", b"=", b" ", b" l=\"3\"", b"<", b"/",
          b"\n", b"<Password", b"<wsse:Password", b"<x:CipherValue", b"<BinarySecurityToken", b"secret", b"<ml>"]
OLD_SOAP = re.compile(rb"(<(?:[\w.-]+:)?(?:Password|BinarySecret|BinarySecurityToken|CipherValue)\b[^>]*>)([^<]+)",
                      re.IGNORECASE)
OLD_DOMAIN = re.compile(rb"<d\b([^>]*)>(.*?)</d>", re.S)
OLD_CONTACT = re.compile(rb"<c\b([^>]*)>")
OLD_ATTR = re.compile(rb'(\w+)\s*=\s*"([^"]*)"')


def samples(n: int, seed: int):
    rng = random.Random(seed)
    for _ in range(n):
        yield b"".join(rng.choice(PIECES) for _ in range(rng.randint(0, 40)))


def test_the_soap_rule_replaces_exactly_what_the_regex_replaced():
    def show(m):
        return b"[%d:%s|%s]" % (m.start(), m.group(1), m.group(2))
    for text in samples(20000, 1):
        assert redact._SOAP.sub(show, text) == OLD_SOAP.sub(show, text), text


def test_the_soap_rule_on_thousands_of_unclosed_tags():
    r = redact.Redactor(enabled=True, key=b"k" * 16)
    text = b"<Password " * 20000 + b">hunter2</Password>"
    out = r.text(text)
    assert out.endswith(b">" + r.mask(b"hunter2").encode() + b"</Password>")
    assert b"hunter2" not in out and r.text(b"<Password " * 20000) == b"<Password " * 20000


def test_attribute_names_start_at_a_word_boundary_and_match_the_same():
    for text in samples(5000, 2):
        assert contacts._ATTR.findall(text) == OLD_ATTR.findall(text)
        assert p2p._ATTR.findall(text.decode("latin-1")) == [
            (a.decode("latin-1"), b.decode("latin-1")) for a, b in OLD_ATTR.findall(text)]
    assert contacts._ATTR.findall(b"a" * 50000 + b'=x n="bob"') == [(b"n", b"bob")]


def well_formed(seed: int) -> bytes:
    rng = random.Random(seed)
    doms = []
    for d in range(rng.randint(0, 4)):
        users = b"".join(b'<c n="u%d" l="%d" t="1"/>' % (rng.randint(0, 99), rng.randint(0, 7))
                         for _ in range(rng.randint(0, 5)))
        doms.append(b'<d n="example%d.com">%s</d>' % (d, users))
    return b'<ml l="1">' + b"".join(doms) + b"</ml>"


def test_ml_documents_read_the_same_and_unclosed_domains_cost_one_pass():
    for seed in range(2000):
        doc = well_formed(seed)
        old = [(d.groups(), [c.group(1) for c in OLD_CONTACT.finditer(d.group(2))]) for d in OLD_DOMAIN.finditer(doc)]
        new = [(d.groups(), [c.group(1) for c in contacts._CONTACT.finditer(d.group(2))])
               for d in contacts._DOMAIN.finditer(doc)]
        assert new == old
    crafted = b"<ml>" + b"<d n='x'>" * 50000 + b'<d n="example.com"><c n="bob" l="1"/></d></ml>'
    assert list(contacts._ml_entries(crafted)) == [("bob@example.com", 1)]


def test_an_msnobject_after_thousands_of_unclosed_tags():
    text = "<msnobj " * 20000 + '<msnobj Creator="bob@example.com" Type="3" SHA1D="x"/>'
    obj = p2p.msnobject(text)
    assert obj is not None and obj.type == "3"
