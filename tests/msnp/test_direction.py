"""One rule for which side sent a line: `decode`'s guess_direction and the capture detector agree."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from analyzer.capture.detect import side_from_content
from analyzer.msnp import C2S, S2C
from analyzer.msnp.direction import guess_direction, side_of_line

# The streams the two former guessers disagreed on (one said c2s, the other s2c), plus
# their client-side twins, each with the side PROTOCOL.md gives it.
DIVERGED = [
    (b"LST N=bob@example.com F=Bob C=1234 11 1\r\n", S2C),            # a line of an MSNP8+ SYN answer
    (b"LST 12 FL 26 1 3 bob@example.com Bob\r\n", S2C),              # an MSNP2-7 LST reply
    (b"LST 12 FL\r\n", C2S),                                           # the MSNP2-7 request
    (b"ACK 5\r\n", S2C),
    (b"BPR PHH 555%20123\r\n", S2C),
    (b"UBN bob@example.com 1 20\r\n<SIP>...</SIP>xxxxxxx", S2C),
    (b"USR 3 TWN S lc=1033,id=507,tw=40,fs=1,ru=http%3A%2F%2Fmessenger%2Emsn%2Ecom\r\n", S2C),
    (b"USR 4 TWN S t=53*1hAu8ADuD3TEwdXoOMi08sD*2!cMrntTwVMTjoB3p6stWTqzbkKZPVQzA5NOt19SLI60PY!b8K4YhC!Ooo5ug$$"
     b"&p=5*1HRIAcC1vPSGxkZF\r\n", C2S),
    (b"USR 3 SSO S MBI_KEY_OLD 8CLhG/xfgYZ7TyRQ/jIAWyDmd/w4R4GF2yKLS6tYrnjzi4cFag/Nr+hxsfg5zlCf\r\n", S2C),
    (b"USR 4 SSO S t=EwCoARAnAAAUH3 2AAAAAgAAAA\r\n", C2S),
    (b"USR 3 MD5 S 1013928519.693957190\r\n", S2C),                   # the salt
    (b"USR 4 MD5 S 0123456789abcdef0123456789abcdef\r\n", C2S),       # the answer
]


@pytest.mark.parametrize("stream, side", DIVERGED)
def test_the_former_divergences_have_one_answer(stream, side):
    assert guess_direction(stream) == side
    assert side_from_content(stream) == side


@pytest.mark.parametrize("line, side", [
    (b"USR 1 OK alice@example.com Alice", S2C),
    (b"USR 1 alice@example.com 17262740.1050826919.32308", C2S),
    (b"USR 3 TWN I alice@example.com", C2S),
    (b"CAL 2 RINGING 11752013", S2C), (b"CAL 2 bob@example.com", C2S),
    (b"ANS 1 OK", S2C), (b"ANS 1 bob@example.com 849102291.520491113 11752013", C2S),
    (b"QRY 10", S2C), (b"QRY 10 msmsgs@msnmsgr.com 32", C2S),
    (b"LSG 4", C2S), (b"LSG Friends 1", S2C),
    (b"BLP AL", S2C), (b"BLP 5 AL", None), (b"GTC A", S2C),
    (b"MSG 4 N 120", C2S), (b"MSG bob@example.com Bob 120", S2C), (b"MSG", None),
    (b"217 5", S2C), (b"PNG", C2S), (b"QNG 50", S2C),
    (b"VER 1 MSNP8 CVR0", None), (b"USR", None), (b"USR 3 TWN S", None), (b"", None),
])
def test_side_of_line(line, side):
    assert side_of_line(line.split()) == side


def test_guess_direction_reads_past_lines_that_cannot_tell():
    assert guess_direction(b"VER 1 MSNP8 CVR0\r\nCVR 2 0x0409 winnt 5.1 i386 MSNMSGR 6.0.0602 MSMSGS a@b\r\n") == C2S
    assert guess_direction(b"VER 1 MSNP8 CVR0\r\nXFR 3 NS 127.0.0.1:1863 0 127.0.0.1:1863\r\nOUT\r\n") == C2S
    assert guess_direction(b"VER 1 MSNP8 CVR0\r\nCHL 0 15570131571988941333\r\n") == S2C


_CODES = [b"LST", b"LSG", b"ACK", b"BPR", b"UBN", b"USR", b"MSG", b"CAL", b"ANS", b"QRY", b"GTC", b"BLP",
          b"NLN", b"PNG", b"VER", b"CHG", b"217"]
_TOKENS = [b"1", b"12", b"OK", b"TWN", b"SSO", b"MD5", b"I", b"S", b"t=x", b"lc=1033", b"FL", b"AL",
           b"RINGING", b"a@b", b"0123456789abcdef0123456789abcdef", b"MBI_KEY_OLD"]


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(_CODES), st.lists(st.sampled_from(_TOKENS), max_size=5))
def test_the_two_callers_agree_on_every_first_line(code, params):
    line = b" ".join([code, *params]) + b"\r\n"
    said = side_from_content(line)
    assert said == side_of_line(line.split())
    assert guess_direction(line) == (said or C2S)
