"""The one framing rule (analyzer/msnp/framing.py), and the consumers that keep faster copies of it.

The reader (what the analysis decodes) and the address rewriter (what the proxy
forwards, so what the client parses) are run on the same generated streams as
`framing.frame`, and must find the same payloads and the same referral lines.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from analyzer.msnp import C2S, S2C, Command, CommandReader
from analyzer.msnp import framing
from analyzer.msnp.facts import format_address, parse_address
from analyzer.msnp.rewrite import AddressRewriter


def route(kind, host, port):
    return "127.0.0.1", 4000 + port % 100


# -- the rule itself ------------------------------------------------------------------

def test_tokens_split_on_spaces_and_tabs_only():
    assert framing.tokens(b"XFR 1 SB a:1 CKI x") == [b"XFR", b"1", b"SB", b"a:1", b"CKI", b"x"]
    assert framing.tokens(b" \tXFR\t1  SB a:1 ") == [b"XFR", b"1", b"SB", b"a:1"]
    assert framing.tokens(b"MSG\x0bHotmail Hotmail 29") == [b"MSG\x0bHotmail", b"Hotmail", b"29"]
    assert framing.tokens(b"A\x0cB\rC") == [b"A\x0cB\rC"]
    assert framing.tokens(b"   ") == []
    text = b" \tXFR\t1  SB a:1 \x0b"
    assert [text[a:b] for a, b in framing.token_spans(text)] == framing.tokens(text)


@pytest.mark.parametrize("line,direction,version,length", [
    (b"MSG a@b Nick 29", S2C, None, 29),
    (b"MSG\x0bHotmail Hotmail 29", S2C, None, None),   # not the command MSG
    (b"msg a@b Nick 29", S2C, None, None),              # codes are compared exactly
    (b" MSG a@b Nick 29", S2C, None, 29),               # leading white space hides nothing
    (b"MSG\ta@b\tNick\t29", S2C, None, 29),
    (b"NOT 12", S2C, None, 12),                          # no TrID: two tokens are enough
    (b"UUX 5", S2C, 10, None),                           # 5 is the TrID
    (b"UUX 5 0", S2C, 10, 0),
    (b"UBX a@b 5", S2C, 10, None),                       # a payload from MSNP11 only
    (b"UBX a@b 5", S2C, None, 5),                        # version unknown: every version
    (b"241 7 30", S2C, 13, 30),
    (b"241 7 30", S2C, 12, None),
    (b"2410 7 30", S2C, 13, None),
    (b"MSG 1 N 99999999999999999999999", C2S, None, framing.HUGE),
    (b"NFY PUT 10", S2C, 18, 10),
])
def test_payload_length(line, direction, version, length):
    assert framing.payload_length(framing.tokens(line), direction, version) == length


def test_frame_honours_any_length_and_learns_the_version():
    data = b"VER 1 MSNP8 CVR0\r\nUBX a 3\r\nMSG a b 5\r\nhelloUBX a 3\r\n"
    spans = framing.frame(data, S2C, max_line=100)
    assert [(s.start, s.end, s.payload) for s in spans] == [
        (0, 18, False), (18, 27, False), (27, 38, False), (38, 43, True), (43, 52, False)]


# -- generated streams: the reader and the rewriter against the rule ---------------------

_LINES = [
    b"VER 1 MSNP8 CVR0\r\n", b"VER 1 MSNP15 CVR0\r\n", b"VER 1 0\r\n", b"ver 1 MSNP13\r\n",
    b"XFR 3 NS 10.0.0.5:1863 0 10.0.0.1:1863\r\n", b"XFR 4 SB 10.0.0.9:1864 CKI 1.2.3\r\n",
    b" XFR 5 SB 10.0.0.9:1864 CKI x\r\n", b"\tXFR\t6\tSB\t10.0.0.9:1\tCKI\tx\n", b"XFR\x0b7 SB 1.1.1.1:1 CKI x\r\n",
    b"XFR 8 SB 1.1.1.1:1\x0b CKI x\r\n", b"xfr 9 SB 1.1.1.1:1 CKI x\r\n", b"XFRX 1 SB 1.1.1.1:1\r\n",
    b"XFR 10 NS\r\n", b"XFR 11 SB [::1]:1863 CKI x\r\n", b"RNG 77 9.9.9.9:1863 CKI c a@b N\r\n", b"RNG 1\r\n",
    b"  RNG 78 9.9.9.9 CKI c\r\n", b"XFR 12 SB host.example CKI x\r\r\n", b"XFR 13 SB bad:port CKI x\r\n",
    b"CHG 3 NLN 0\r\n", b"ILN 1 NLN a b\r\n", b"\r\n", b"\n", b"   \r\n", b"garbage\x00\xff\r\n",
    b"MSG\r\n", b"UUX 5\r\n", b"NOT\r\n", b"QNG 50\r\n", b"217 5\r\n", b"X" * 70 + b"\r\n",
    b"XFR 14 SB 2.2.2.2:1 CKI " + b"y" * 60 + b"\r\n",
]
_PAYLOAD_HEADS = [
    b"MSG a@b Nick %d\r\n", b"MSG\x0bHotmail Hotmail %d\r\n", b" MSG a@b N %d\r\n", b"MSG\ta@b\tN\t%d\r\n",
    b"msg a@b N %d\r\n", b"NOT %d\r\n", b"UBX a@b %d\r\n", b"UUX 1 %d\r\n", b"UUX %d\r\n", b"241 5 %d\r\n",
    b"GCF 1 x %d\r\n", b"IPG %d\r\n", b"NFY PUT %d\r\n", b"MSG a b %d \r\n", b"MSG a b %d\n",
    b"MSG a@b\t%d\r\n", b"MSG  %d\r\n", b"MSG  a %d\r\n", b"NOT  %d\r\n", b"UUX 1\t%d\r\n", b"MSG a b\t %d\r\n",
]
_BODIES = [b"", b"hello", b"XFR 20 SB 3.3.3.3:1863 CKI z\r\n", b"MIME-Version: 1.0\r\n\r\nRNG 5 4.4.4.4:1 CKI q\r\n",
           b"\r\n", b"MSG a b 3\r\nabc"]


@st.composite
def streams(draw):
    parts = []
    for _ in range(draw(st.integers(1, 14))):
        if draw(st.booleans()):
            parts.append(draw(st.sampled_from(_LINES)))
        else:
            body = draw(st.sampled_from(_BODIES)) + draw(st.binary(max_size=8))
            # the announced length: the body's, or off by some bytes either way
            length = max(0, len(body) + draw(st.sampled_from([0, 0, 0, -3, 2, 40])))
            parts.append(draw(st.sampled_from(_PAYLOAD_HEADS)) % length + body)
    return b"".join(parts)


def expected_rewrite(data: bytes, max_line: int) -> tuple[bytes, list[int]]:
    """The stream as the rule says the proxy must forward it, and the offsets of the lines rewritten."""
    out, offsets, pos = [], [], 0
    for span in framing.frame(data, S2C, max_line=max_line):
        piece = data[span.start:span.end]
        toks = span.tokens
        if not span.payload and toks and piece.endswith(b"\n"):
            index = 3 if toks[0] == b"XFR" and len(toks) >= 4 and toks[2] in (b"NS", b"SB") else \
                2 if toks[0] == b"RNG" and len(toks) >= 3 else None
            address = parse_address(toks[index]) if index else None
            if address is not None:
                a, b = framing.token_spans(framing.content(piece))[index]
                piece = piece[:a] + format_address(*route("", *address)).encode() + piece[b:]
                offsets.append(span.start)
        out.append(piece)
        pos = span.end
    out.append(data[pos:])
    return b"".join(out), offsets


def chunked(data: bytes, sizes: list[int]):
    pos, i = 0, 0
    while pos < len(data):
        size = sizes[i % len(sizes)]
        yield data[pos:pos + size]
        pos, i = pos + size, i + 1


@settings(max_examples=500, deadline=None)
@given(data=streams(), sizes=st.lists(st.sampled_from([1, 2, 3, 7, 64, 4096]), min_size=1, max_size=8),
       max_line=st.sampled_from([50, 16384]))
def test_rewriter_rewrites_exactly_the_referrals_the_rule_frames(data, sizes, max_line):
    rw = AddressRewriter(route, max_line=max_line)
    out, recs = [], []
    for chunk in chunked(data, sizes):
        o, r = rw.feed(chunk)
        out.append(o)
        recs += r
    out.append(rw.close())
    want, offsets = expected_rewrite(data, max_line)
    assert b"".join(out) == want
    assert [r.offset for r in recs if r.rewritten is not None] == offsets


def payload_spans_of_reader(data: bytes, direction: str, max_line: int, max_payload: int) -> list[tuple[int, int]]:
    reader = CommandReader(direction, max_line=max_line, max_payload=max_payload)
    events = reader.feed(data) + reader.close()
    spans = []
    for e in events:
        if type(e) is Command and e.payload_len:
            start = e.offset + len(e.line)
            spans.append((start, min(len(data), start + e.payload_len)))
    return spans


@settings(max_examples=500, deadline=None)
@given(data=streams(), max_line=st.sampled_from([50, 16384]), max_payload=st.sampled_from([4, 1 << 20]))
def test_reader_frames_payloads_exactly_as_the_rule(data, max_line, max_payload):
    rule = [(s.start, s.end) for s in framing.frame(data, S2C, max_line=max_line) if s.payload]
    assert payload_spans_of_reader(data, S2C, max_line, max_payload) == rule


@settings(max_examples=300, deadline=None)
@given(data=streams(), max_line=st.sampled_from([50, 16384]))
def test_client_streams_too(data, max_line):
    data = data.replace(b"VER", b"CVR").replace(b"ver", b"cvr")  # the client's version is an offer: fixed here
    rule = [(s.start, s.end) for s in framing.frame(data, C2S, max_line=max_line, learn_version=False) if s.payload]
    assert payload_spans_of_reader(data, C2S, max_line, 1 << 20) == rule


# -- the divergences named in issues #13 and #14, as regressions --------------------------

def rewrite_all(data: bytes, **kw):
    rw = AddressRewriter(route, **kw)
    out, recs = rw.feed(data)
    return out + rw.close(), recs


def decoded(data: bytes, **kw) -> list[str]:
    reader = CommandReader(S2C, **kw)
    return [e.cmd for e in reader.feed(data) + reader.close() if type(e) is Command]


def test_msg_glued_by_a_vertical_tab_is_no_payload_command_so_the_xfr_after_it_is_rewritten():
    # #13: the rewriter took `MSG\x0bHotmail` for MSG and forwarded the XFR unrewritten
    # while the analysis decoded it: the client left the proxy unobserved.
    xfr = b"XFR 9 SB 10.1.2.3:1863 CKI 17262740.1050826919.32308\r\n"
    data = b"MSG\x0bHotmail Hotmail 29\r\n" + xfr
    out, recs = rewrite_all(data)
    assert out == data.replace(b"10.1.2.3:1863", b"127.0.0.1:4063")
    assert [(r.cmd, r.original, r.rewritten) for r in recs] == [("XFR", "10.1.2.3:1863", "127.0.0.1:4063")]
    assert decoded(data) == ["XFR"]


def test_xfr_inside_a_payload_over_max_payload_is_neither_rewritten_nor_decoded():
    # #14: the payload was larger than --max-payload, so the rewriter framed the XFR in it
    # as a line and changed the payload by a byte, breaking the client's framing.
    body = b"MIME-Version: 1.0\r\n\r\nXFR 9 SB 10.1.2.3:1863 CKI x\r\n"
    data = b"MSG a@b Nick %d\r\n" % len(body) + body + b"XFR 10 NS 10.0.0.5:1863 0 x\r\n"
    out, recs = rewrite_all(data)
    assert out == data.replace(b"NS 10.0.0.5:1863", b"NS 127.0.0.1:4063")
    assert [r.original for r in recs] == ["10.0.0.5:1863"]
    assert decoded(data, max_payload=8) == ["MSG", "XFR"]


def test_xfr_with_a_leading_space_is_rewritten():
    data = b" XFR 2 NS 10.0.0.5:1863 0 10.0.0.1:1863\r\n"
    out, recs = rewrite_all(data)
    assert out == b" XFR 2 NS 127.0.0.1:4063 0 10.0.0.1:1863\r\n" and len(recs) == 1
    assert decoded(data) == ["XFR"]


def test_xfr_glued_by_a_vertical_tab_is_left_alone_and_claims_nothing():
    # #14: `XFR\x0b` had the wrong token replaced while the record claimed success.
    data = b"XFR\x0b9 SB 10.1.2.3:1863 CKI x\r\n"
    out, recs = rewrite_all(data)
    assert out == data and recs == []
    assert decoded(data) == []


def test_tab_separated_xfr_keeps_its_tabs():
    data = b"XFR\t9\tSB\t10.1.2.3:1863\tCKI\tx\r\n"
    out, recs = rewrite_all(data)
    assert out == b"XFR\t9\tSB\t127.0.0.1:4063\tCKI\tx\r\n" and [r.rewritten for r in recs] == ["127.0.0.1:4063"]


def test_the_client_offer_decides_framing_until_the_server_chooses():
    # Offered MSNP8: UBX carries no payload yet, so the XFR after it is a line.
    data = b"UBX a@b 40\r\nXFR 9 SB 10.1.2.3:1863 CKI x\r\n"
    rw = AddressRewriter(route)
    rw.client(b"VER 1 MSNP8 CVR0\r\n")
    out, recs = rw.feed(data)
    assert len(recs) == 1 and b"127.0.0.1:4063" in out
    without_offer, recs = rewrite_all(data)  # version unknown: a payload, as the reader frames it
    assert recs == [] and without_offer == data
