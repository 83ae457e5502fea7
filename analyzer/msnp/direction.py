"""Which side sent a line, and so a raw MSNP stream: the one rule both the `decode`
command and the capture's flow detector use.

`side_of_line(tokens)` says C2S, S2C or None (the line alone cannot tell) from the
tokens of one command line, by what only one side sends (PROTOCOL.md):

- only servers send numeric errors, presence (`NLN`, `FLN`, `ILN`, `UBX`, `UBN`, `UBM`,
  `BPR`), switchboard notices (`IRO`, `JOI`, `BYE`, `ACK`, `NAK`), `RNG`, `NOT`, `CHL`,
  `QNG`, `SBS`, `IPG`; only clients send `PNG`, `CVR`, `PAG`, `UUM`, `UUN`;
- `MSG trid ...` is a client's, `MSG handle nick length` a server's;
- `LST trid list` and `LSG trid` are MSNP2-7 client requests; every other `LST`/`LSG`
  (the replies, and the lines of an MSNP8+ `SYN` answer) is the server's;
- `CAL trid RINGING sessid`, `ANS trid OK` and `QRY trid` are the server's answers to
  the client's `CAL trid handle`, `ANS trid handle cookie sessid`, `QRY trid id 32`;
- `GTC`, `BLP`, `PRP` without a TrID are lines of an MSNP8+ `SYN` answer (the server's);
- `USR trid OK ...` is the server's; `USR trid MD5|TWN|SSO I handle` the client's; in the
  `S` stage the server sends its policy or salt (`lc=...`, `MBI_KEY...`, digits) and the
  client its ticket (`t=...`) or MD5 answer (32 hex digits); `USR trid handle cookie`
  is a client's switchboard login.

`guess_direction(data)` applies it to a stream's first lines (the first that tells
wins; C2S when none does).
"""

from __future__ import annotations

import re

from analyzer.msnp.events import C2S, S2C

SERVER_ONLY = frozenset({b"NLN", b"FLN", b"ILN", b"IRO", b"JOI", b"BYE", b"QNG", b"RNG", b"NOT",
                         b"CHL", b"UBX", b"ACK", b"NAK", b"BPR", b"SBS", b"IPG", b"UBN", b"UBM"})
CLIENT_ONLY = frozenset({b"PNG", b"CVR", b"PAG", b"UUM", b"UUN"})
_AUTH_METHODS = frozenset({b"MD5", b"TWN", b"SSO"})
_MD5_ANSWER = re.compile(rb"[0-9a-fA-F]{32}\Z")
_SYN_LINES = frozenset({b"GTC", b"BLP", b"PRP"})
GUESS_LINES = 50


def side_of_line(tokens: list[bytes]) -> str | None:
    """C2S or S2C for a command line split into tokens, None when the line alone cannot tell."""
    if not tokens:
        return None
    code = tokens[0]
    n = len(tokens)
    if code in SERVER_ONLY or code.isdigit():
        return S2C
    if code in CLIENT_ONLY:
        return C2S
    if code == b"MSG":
        return None if n < 2 else C2S if tokens[1].isdigit() else S2C
    if code == b"LST" or code == b"LSG":
        request = n == (3 if code == b"LST" else 2) and tokens[1].isdigit()
        return C2S if request else S2C
    if code == b"CAL" or code == b"ANS":
        if n < 3:
            return None
        return S2C if tokens[2] in (b"RINGING", b"OK") else C2S
    if code == b"QRY":
        return S2C if n == 2 else C2S if n > 2 else None
    if code == b"USR":
        return _usr_side(tokens)
    if code in _SYN_LINES and n >= 2 and not tokens[1].isdigit():
        return S2C  # a line of an MSNP8+ SYN answer (the client's GTC/BLP/PRP carry a TrID)
    return None


def _usr_side(tokens: list[bytes]) -> str | None:
    if len(tokens) < 3:
        return None
    first = tokens[2]
    if first == b"OK":
        return S2C
    if first not in _AUTH_METHODS:
        return C2S if len(tokens) >= 4 else None   # USR trid handle cookie (a switchboard login)
    stage = tokens[3] if len(tokens) >= 4 else None
    if stage == b"I":
        return C2S
    if stage != b"S" or len(tokens) < 5:
        return None
    value = tokens[4]
    if first == b"MD5":
        return C2S if _MD5_ANSWER.match(value) else S2C   # the answer, or the server's salt
    return C2S if value.startswith(b"t=") else S2C         # the ticket, or the server's policy


def guess_direction(data: bytes) -> str:
    """Which side sent a raw stream, from its first lines."""
    for line in data.split(b"\n", GUESS_LINES)[:GUESS_LINES]:
        side = side_of_line(line.split())
        if side is not None:
            return side
    return C2S
