"""Scripted switchboard sessions that exchange objects, for the extraction tests.

What the real captures in ../shared/captures-real/ lack: a display picture
whose SHA1D is wrong, a transfer cut short, a declined offer, hostile P2P
headers (offsets and sizes that lie, overlapping chunks that differ, a session
that never ends), MSNFTP oddities. Each builder returns `(chunks,
connections)` for `captures.make_pcaps.chunk_packets`, which turns them into
real-looking TCP (handshake, MSS-sized segments, FIN). Every line is built
with `encode_command`, so payload lengths are exact; addresses are loopback.

The P2P messages are built here from the documents' layouts, independently of
`analyzer.msnp.p2p` (the code under test):
- version 1: `<IIQQIIIIQ` (session, identifier, offset, total, size, flags,
  ack id, ack unique id, ack size), data, `>I` footer;
- version 2: `>BBHI` (header length, op, payload size, base id) + padding,
  data header `>BBHI` (length, TF, package, session) + TLV 1 (remaining, `>Q`).
"""

from __future__ import annotations

import base64
import hashlib
import struct

from analyzer.msnp import C2S, S2C, encode_command
from analyzer.msnp.transcript import Chunk

ALICE, BOB = "alice@example.com", "bob@example.com"
BOB_GUID = "{a6f3b20d-5c3e-4f8b-9a7e-2d1c0b9a8f7e}"
FT_GUID = "{5D3E02AB-6190-11D3-BBBB-00C04F795683}"
OBJ_GUID = "{A4268EEC-FEC5-49E5-95C3-F126696BDBF6}"
SB = {"sb": ("127.0.0.1:50100", "127.0.0.3:1864")}
CHUNK = 1202


def v1(session: int, ident: int, offset: int, total: int, data: bytes, flags: int = 0, footer: int = 0) -> bytes:
    return struct.pack("<IIQQIIIIQ", session, ident, offset, total, len(data), flags, 0, 0, 0) + data + \
        struct.pack(">I", footer)


def v2(session: int, base: int, data: bytes, remaining: int, first: bool, tf: int = 0x04, footer: int = 12) -> bytes:
    if session == 0 and not data:
        return struct.pack(">BBHI", 8, 0, 0, base) + struct.pack(">I", footer)
    tlv = struct.pack(">BBQ", 1, 8, remaining) if remaining else b""
    dh_len = 8 + len(tlv) + (-(8 + len(tlv)) % 4)
    dh = struct.pack(">BBHI", dh_len, tf | (0x01 if first else 0), 0, session) + tlv
    dh += b"\x00" * (dh_len - len(dh))
    return struct.pack(">BBHI", 8, 0, len(dh) + len(data), base) + dh + data + struct.pack(">I", footer)


def p2p_msg(body: bytes, dest: str) -> bytes:
    return (f"MIME-Version: 1.0\r\nContent-Type: application/x-msnmsgrp2p\r\nP2P-Dest: {dest}\r\n\r\n"
            .encode() + body)


def slp(start: str, call_id: str, body: str, frm: str = ALICE, to: str = BOB, cseq: int = 0) -> bytes:
    head = (f"{start}\r\nTo: <msnmsgr:{to}>\r\nFrom: <msnmsgr:{frm}>\r\n"
            f"Via: MSNSLP/1.0/TLP ;branch={{B{cseq}-{call_id[1:-1]}}}\r\nCSeq: {cseq} \r\nCall-ID: {call_id}\r\n"
            f"Max-Forwards: 0\r\nContent-Type: application/x-msnmsgr-sessionreqbody\r\n"
            f"Content-Length: {len(body) + 1}\r\n\r\n{body}")
    return head.encode() + b"\x00"


def ft_context(name: str, size: int) -> str:
    raw = struct.pack("<IIQI", 574, 2, size, 1) + name.encode("utf-16-le").ljust(520, b"\x00") + b"\xff" * 4
    return base64.b64encode(raw).decode()


def msnobj(creator: str, data: bytes, sha1d: bytes | None = None) -> str:
    sha1d = hashlib.sha1(data).digest() if sha1d is None else sha1d
    return (f'<msnobj Creator="{creator}" Size="{len(data)}" Type="3" Location="TFR1.tmp" Friendly="AAA=" '
            f'SHA1D="{base64.b64encode(sha1d).decode()}"/>')


class Board:
    """One switchboard connection seen from alice's client: alice's MSGs go c2s, bob's come s2c."""

    def __init__(self, version: int = 15) -> None:
        self.chunks: list[Chunk] = []
        self.ts = 10.0
        self.trid = 1
        self.version = version
        self.add(C2S, encode_command("USR", 1, [ALICE, "1863.1234.5678"]))
        self.add(S2C, encode_command("USR", 1, ["OK", ALICE, "Alice"]))

    def add(self, direction: str, data: bytes) -> None:
        self.ts += 0.01
        self.chunks.append(Chunk(direction, data, self.ts, "sb"))

    def dest(self, who: str) -> str:
        return f"{who};{BOB_GUID}" if self.version >= 16 and who == BOB else who

    def alice(self, body: bytes, to: str = BOB) -> None:
        self.trid += 1
        self.add(C2S, encode_command("MSG", self.trid, ["D"], p2p_msg(body, self.dest(to))))

    def bob(self, body: bytes, to: str = ALICE) -> None:
        self.add(S2C, encode_command("MSG", None, [BOB, "Bob"], p2p_msg(body, to)))

    def text(self, direction: str, mime: bytes) -> None:
        if direction == C2S:
            self.trid += 1
            self.add(C2S, encode_command("MSG", self.trid, ["N"], mime))
        else:
            self.add(S2C, encode_command("MSG", None, [BOB, "Bob"], mime))

    def done(self):
        return self.chunks, dict(SB)


def file_transfer(data: bytes, name: str = "report.pdf", *, answer: str = "200 OK", stop_after: int | None = None,
                  bye: bool = True, session: int = 4242, call: str = "{11111111-0000-0000-0000-000000000001}",
                  chunks: list | None = None, announce: int | None = None, total: int | None = None) -> tuple:
    """alice sends bob a file over P2P (version 1). `answer` "603 Decline" declines it;
    `stop_after` bytes cuts it short (no BYE); `chunks` overrides the (offset, bytes) list sent."""
    b = Board(15)
    size = len(data) if announce is None else announce
    invite = slp("INVITE MSNMSGR:bob@example.com MSNSLP/1.0", call,
                 f"EUF-GUID: {FT_GUID}\r\nSessionID: {session}\r\nAppID: 2\r\nContext: {ft_context(name, size)}\r\n\r\n")
    b.alice(_slp_v1(invite))
    b.bob(_slp_v1(slp(f"MSNSLP/1.0 {answer}", call, f"SessionID: {session}\r\n\r\n", frm=BOB, to=ALICE, cseq=1)))
    if answer.startswith("603"):
        return b.done()
    parts = chunks if chunks is not None else [(o, data[o:o + CHUNK]) for o in range(0, len(data), CHUNK)]
    sent = 0
    for offset, piece in parts:
        if stop_after is not None and sent >= stop_after:
            break
        b.alice(v1(session, 200, offset, len(data) if total is None else total, piece, flags=0x1000030, footer=2))
        sent += len(piece)
    if bye and stop_after is None:
        b.bob(_slp_v1(slp("BYE MSNMSGR:alice@example.com MSNSLP/1.0", call, "\r\n", frm=BOB, to=ALICE, cseq=0)))
    return b.done()


def _slp_v1(text: bytes, ident: int = 100) -> bytes:
    return v1(0, ident, 0, len(text), text)


def display_picture_v2(picture: bytes, *, sha1d: bytes | None = None,
                       call: str = "{22222222-0000-0000-0000-000000000002}", session: int = 777) -> tuple:
    """alice asks bob for his display picture (MSNP18, version-2 headers); bob sends it in two parts."""
    b = Board(18)
    context = base64.b64encode(msnobj(BOB, picture, sha1d).encode() + b"\x00").decode()
    invite = slp(f"INVITE MSNMSGR:{BOB};{BOB_GUID} MSNSLP/1.0", call,
                 f"EUF-GUID: {OBJ_GUID}\r\nSessionID: {session}\r\nAppID: 12\r\nContext: {context}\r\n\r\n")
    b.alice(v2(0, 1000, invite, 0, True, tf=0))
    b.bob(v2(0, 5000, slp("MSNSLP/1.0 200 OK", call, f"SessionID: {session}\r\n\r\n", frm=BOB, to=ALICE, cseq=1),
             0, True, tf=0))
    b.bob(v2(session, 6000, b"\x00\x00\x00\x00", 0, True, tf=0))   # data preparation
    half = len(picture) // 2
    b.bob(v2(session, 6100, picture[:half], len(picture) - half, True))
    b.bob(v2(session, 6200, picture[half:], 0, False))
    b.alice(v2(0, 1100, slp(f"BYE MSNMSGR:{BOB};{BOB_GUID} MSNSLP/1.0", call, "\r\n"), 0, True, tf=0))
    return b.done()


def ink(data: bytes, parts: int = 1, drop: int | None = None) -> tuple:
    """bob sends alice ink (image/gif, base64 body), split in `parts` chunks; `drop` loses one."""
    b = Board(8)
    text = b"base64:" + base64.b64encode(data)
    size = -(-len(text) // parts)
    pieces = [text[i:i + size] for i in range(0, len(text), size)]
    mid = "{33333333-0000-0000-0000-000000000003}"
    for i, piece in enumerate(pieces):
        if i == drop:
            continue
        if i == 0:
            head = f"MIME-Version: 1.0\r\nContent-Type: image/gif\r\nMessage-ID: {mid}\r\nChunks: {len(pieces)}\r\n\r\n"
        else:
            head = f"Message-ID: {mid}\r\nChunk: {i}\r\n\r\n"
        b.text(S2C, head.encode() + piece)
    return b.done()


MSNFTP = {"sb": SB["sb"], "ftp": ("127.0.0.1:50200", "127.0.0.5:6891")}


def msnftp(data: bytes, name: str = "notes.txt", *, cookie: str = "31415926", cut: int | None = None,
           decline: bool = False, long_line: bool = False) -> tuple:
    """alice offers bob a file the MSNP8 way; bob (this capture's client) accepts and fetches it
    over MSNFTP. `cut` stops the data after that many bytes; `decline` rejects the offer."""
    b = Board(8)
    # Seen from bob's client this time: alice's messages arrive s2c.
    b.chunks.clear()
    b.add(C2S, encode_command("ANS", 1, [BOB, "1863.1234.5678", "11752013"]))
    b.add(S2C, encode_command("ANS", 1, ["OK"]))
    invite = ("MIME-Version: 1.0\r\nContent-Type: text/x-msmsgsinvite; charset=UTF-8\r\n\r\n"
              f"Application-Name: File Transfer\r\nApplication-GUID: {FT_GUID}\r\nInvitation-Command: INVITE\r\n"
              f"Invitation-Cookie: 7\r\nApplication-File: {name}\r\nApplication-FileSize: {len(data)}\r\n\r\n")
    b.add(S2C, encode_command("MSG", None, [ALICE, "Alice"], invite.encode()))
    if decline:
        answer = ("MIME-Version: 1.0\r\nContent-Type: text/x-msmsgsinvite; charset=UTF-8\r\n\r\n"
                  "Invitation-Command: CANCEL\r\nInvitation-Cookie: 7\r\nCancel-Code: REJECT\r\n\r\n")
        b.add(C2S, encode_command("MSG", 2, ["N"], answer.encode()))
        return b.chunks, dict(MSNFTP)
    accept = ("MIME-Version: 1.0\r\nContent-Type: text/x-msmsgsinvite; charset=UTF-8\r\n\r\n"
              "Invitation-Command: ACCEPT\r\nInvitation-Cookie: 7\r\nLaunch-Application: FALSE\r\n"
              "Request-Data: IP-Address:\r\n\r\n")
    b.add(C2S, encode_command("MSG", 2, ["N"], accept.encode()))
    address = ("MIME-Version: 1.0\r\nContent-Type: text/x-msmsgsinvite; charset=UTF-8\r\n\r\n"
               f"Invitation-Command: ACCEPT\r\nInvitation-Cookie: 7\r\nIP-Address: 127.0.0.5\r\nPort: 6891\r\n"
               f"AuthCookie: {cookie}\r\n\r\n")
    b.add(S2C, encode_command("MSG", None, [ALICE, "Alice"], address.encode()))
    ts = b.ts

    def ftp(direction, raw):
        nonlocal ts
        ts += 0.01
        b.chunks.append(Chunk(direction, raw, ts, "ftp"))

    ftp(C2S, b"VER MSNFTP\r\n")
    ftp(S2C, b"VER MSNFTP\r\n")
    ftp(C2S, f"USR {BOB} {cookie}\r\n".encode())
    if long_line:
        ftp(S2C, b"X" * 1500)
        return b.chunks, dict(MSNFTP)
    ftp(S2C, f"FIL {len(data)}\r\n".encode())
    ftp(C2S, b"TFR\r\n")
    limit = len(data) if cut is None else cut
    for offset in range(0, limit, 2045):
        piece = data[offset:min(offset + 2045, limit)]
        ftp(S2C, bytes([0, len(piece) & 0xFF, len(piece) >> 8]) + piece)
    if cut is None:
        ftp(C2S, b"BYE 16777989\r\n")
    return b.chunks, dict(MSNFTP)
