"""Realistic scripted MSNP sessions, one per protocol generation, for tests and sample files.

Each session is a list of `analyzer.msnp.transcript.Chunk(direction, data, ts, conn)`
in the order the bytes were seen, with one label per TCP connection ("ds",
"ns", "sb1", ...). Every line is built with `analyzer.msnp.encode_command`, so
payload lengths are exact. The scripts follow the message flows of the MSNP
documents (see ../shared/PROTOCOL.md): a dispatch server referral, a login, the
contact list, presence, a switchboard chat with typing notifications and
acknowledgements, keep-alive pings.

Interface (kept stable: the transcript and pcap generators import it):

    from captures.sessions import SESSIONS, CONNECTIONS, streams
    SESSIONS["msnp8"]            -> list[Chunk]
    CONNECTIONS["msnp8"]["sb1"]  -> ("127.0.0.1:50012", "127.0.0.1:1864")  client, server
    streams(SESSIONS["msnp8"])   -> {"sb1": {"c2s": bytes, "s2c": bytes}, ...}

Clean sessions are scripted so that no anomaly is expected: nothing
asynchronous arrives while a request waits for its reply. The "anomalies"
session seeds white space, out-of-order and interleaving anomalies on purpose.

Addresses are loopback only (127.0.0.0/8); handles use example.com.
"""

from __future__ import annotations

import hashlib

from analyzer.msnp import C2S, S2C, encode_command
from analyzer.msnp.transcript import Chunk

ALICE, BOB, CAROL, DAVE = ("alice@example.com", "bob@example.com", "carol@example.com",
                           "dave@example.com")
NS_ADDR, SB_ADDR, SB2_ADDR = "127.0.0.2:1863", "127.0.0.3:1864", "127.0.0.4:1864"
DS_ADDR = "127.0.0.1:1863"
ALICE_GUID = "{f52973b6-c926-4bad-9ba8-7c1e840e4ab0}"
ALICE_GUID2 = "{0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d}"
BOB_GUID = "{a6f3b20d-5c3e-4f8b-9a7e-2d1c0b9a8f7e}"
BOB_GUID2 = "{6e5d4c3b-2a19-4807-b6a5-948372615049}"
CAROL_GUID = "{33b3a7e4-1f2d-4c5b-8a9e-0f1e2d3c4b5a}"

# MSNP8-10 challenge: md5(challenge + product key), sent with the product id.
MSNP8_PRODUCT_ID = "msmsgs@msnmsgr.com"
MSNP8_PRODUCT_KEY = "Q1P7W2E4J9R8U3S5"


def msnp8_challenge_answer(challenge: str) -> bytes:
    return hashlib.md5((challenge + MSNP8_PRODUCT_KEY).encode("ascii")).hexdigest().encode("ascii")


def msnp11_challenge_answer(challenge: str, product_id: str, product_key: str) -> bytes:
    """MSNP11+ `QRY` answer (the published algorithm: MD5 words mixed with the challenge)."""
    digest = hashlib.md5((challenge + product_key).encode("ascii")).digest()
    words = [int.from_bytes(digest[i:i + 4], "little") for i in range(0, 16, 4)]
    h = [w & 0x7FFFFFFF for w in words]
    data = (challenge + product_id).encode("ascii")
    data += b"0" * (-len(data) % 8)
    ints = [int.from_bytes(data[i:i + 4], "little") for i in range(0, len(data), 4)]
    high = low = 0
    for i in range(0, len(ints), 2):
        temp = (0x0E79A9C1 * ints[i]) % 0x7FFFFFFF
        temp = (h[0] * (temp + high) + h[1]) % 0x7FFFFFFF
        high = (h[2] * ((ints[i + 1] + temp) % 0x7FFFFFFF) + h[3]) % 0x7FFFFFFF
        low += high + temp
    high = (high + h[1]) % 0x7FFFFFFF
    low = (low + h[3]) % 0x7FFFFFFF
    mixed = [words[0] ^ high, words[1] ^ low, words[2] ^ high, words[3] ^ low]
    return b"".join(w.to_bytes(4, "little") for w in mixed).hex().encode("ascii")


def md5_login_answer(salt: str, password: str) -> str:
    """MSNP2-7 `USR trid MD5 S` answer: md5(salt + password) in hex."""
    return hashlib.md5((salt + password).encode("utf-8")).hexdigest()


# -- MSG payloads (MIME-like headers, blank line, body) ----------------------

def typing(handle: str) -> bytes:
    return (f"MIME-Version: 1.0\r\nContent-Type: text/x-msmsgscontrol\r\n"
            f"TypingUser: {handle}\r\n\r\n\r\n").encode("utf-8")


def text(body: str) -> bytes:
    return ("MIME-Version: 1.0\r\nContent-Type: text/plain; charset=UTF-8\r\n"
            "X-MMS-IM-Format: FN=Arial; EF=; CO=0; CS=0; PF=22\r\n\r\n" + body).encode("utf-8")


def profile(handle: str) -> bytes:
    return (f"MIME-Version: 1.0\r\nContent-Type: text/x-msmsgsprofile; charset=UTF-8\r\n"
            f"LoginTime: 1062764229\r\nEmailEnabled: 1\r\nMemberIdHigh: 84736\r\n"
            f"MemberIdLow: -1988606912\r\nlang_preference: 1033\r\npreferredEmail: {handle}\r\n"
            f"country: US\r\nPostalCode: \r\nGender: \r\nKid: 0\r\nAge: \r\nBDayPre: \r\n"
            f"Birthday: \r\nWallet: \r\nFlags: 1027\r\nsid: 507\r\n"
            f"MSPAuth: 4QJ9R8n3ENcSU5V0vkdOWcmxCPyeIfvBw8lJ9qQCBgNC8J8g$$\r\n"
            f"ClientIP: 127.0.0.9\r\nClientPort: 5190\r\n\r\n").encode("utf-8")


def email_notification(unread: int) -> bytes:
    return (f"MIME-Version: 1.0\r\nContent-Type: text/x-msmsgsinitialemailnotification; charset=UTF-8\r\n"
            f"\r\nInbox-Unread: {unread}\r\nFolders-Unread: 0\r\nInbox-URL: /cgi-bin/HoTMaiL\r\n"
            f"Folders-URL: /cgi-bin/folders\r\nPost-URL: http://www.hotmail.com\r\n\r\n").encode("utf-8")


def psm(message: str, guid: str | None = None) -> bytes:
    machine = f"<MachineGuid>{guid}</MachineGuid>" if guid else ""
    return f"<Data><PSM>{message}</PSM><CurrentMedia></CurrentMedia>{machine}</Data>".encode("utf-8")


def address_list(contacts: list[tuple[str, int]]) -> bytes:
    """An ADL/RML payload: contacts as (handle, list bits), grouped by domain."""
    domains: dict[str, list[str]] = {}
    for handle, lists in contacts:
        name, domain = handle.split("@")
        domains.setdefault(domain, []).append(f'<c n="{name}" l="{lists}" t="1"/>')
    body = "".join(f'<d n="{d}">{"".join(cs)}</d>' for d, cs in domains.items())
    return f'<ml l="1">{body}</ml>'.encode("utf-8")


# -- the script builder ---------------------------------------------------------

class Script:
    """Builds a session's chunks: `c` for what the client sends, `s` for the server."""

    def __init__(self, start: float = 0.0) -> None:
        self.chunks: list[Chunk] = []
        self.t = start

    def _add(self, direction: str, conn: str, data: bytes, dt: float) -> None:
        self.t = round(self.t + dt, 6)
        self.chunks.append(Chunk(direction, data, self.t, conn))

    def c(self, conn: str, cmd: str, trid: int | None, *params: str,
          payload: bytes | None = None, dt: float = 0.05) -> None:
        self._add(C2S, conn, encode_command(cmd, trid, list(params), payload), dt)

    def s(self, conn: str, cmd: str, trid: int | None, *params: str,
          payload: bytes | None = None, dt: float = 0.05) -> None:
        self._add(S2C, conn, encode_command(cmd, trid, list(params), payload), dt)

    def raw(self, conn: str, direction: str, data: bytes, dt: float = 0.05) -> None:
        """Bytes as given (for the anomaly session's malformed lines)."""
        self._add(direction, conn, data, dt)


# -- MSNP2: MD5 login, SYN with LST lines carrying TrIDs, CHG/ILN, XFR SB ------

def msnp2() -> list[Chunk]:
    s = Script()
    ds, ns, sb = "ds", "ns", "sb1"
    s.c(ds, "VER", 1, "MSNP2", "CVR0")
    s.s(ds, "VER", 1, "MSNP2", "CVR0")
    s.c(ds, "INF", 2)
    s.s(ds, "INF", 2, "MD5")
    s.c(ds, "USR", 3, "MD5", "I", ALICE)
    s.s(ds, "XFR", 3, "NS", NS_ADDR, "0")

    s.c(ns, "VER", 4, "MSNP2", "CVR0", dt=0.2)
    s.s(ns, "VER", 4, "MSNP2", "CVR0")
    s.c(ns, "INF", 5)
    s.s(ns, "INF", 5, "MD5")
    s.c(ns, "USR", 6, "MD5", "I", ALICE)
    salt = "1013928519.693957190"
    s.s(ns, "USR", 6, "MD5", "S", salt)
    s.c(ns, "USR", 7, "MD5", "S", md5_login_answer(salt, "wonderland"))
    s.s(ns, "USR", 7, "OK", ALICE, "Alice")
    # SYN: every line of the answer carries the SYN's TrID and the list version.
    s.c(ns, "SYN", 8, "0")
    s.s(ns, "SYN", 8, "12")
    s.s(ns, "GTC", 8, "12", "A", dt=0.01)
    s.s(ns, "BLP", 8, "12", "AL", dt=0.01)
    s.s(ns, "LST", 8, "FL", "12", "1", "2", BOB, "Bob", dt=0.01)
    s.s(ns, "LST", 8, "FL", "12", "2", "2", CAROL, "Carol", dt=0.01)
    s.s(ns, "LST", 8, "AL", "12", "1", "2", BOB, "Bob", dt=0.01)
    s.s(ns, "LST", 8, "AL", "12", "2", "2", CAROL, "Carol", dt=0.01)
    s.s(ns, "LST", 8, "BL", "12", "0", "0", dt=0.01)
    s.s(ns, "LST", 8, "RL", "12", "1", "1", BOB, "Bob", dt=0.01)
    s.c(ns, "CHG", 9, "NLN")
    s.s(ns, "CHG", 9, "NLN")
    s.s(ns, "ILN", 9, "NLN", BOB, "Bob", dt=0.01)
    s.s(ns, "ILN", 9, "BSY", CAROL, "Carol", dt=0.01)
    s.s(ns, "NLN", None, "AWY", BOB, "Bob", dt=1.0)
    s.c(ns, "REM", 10, "FL", DAVE)
    s.s(ns, "216", 10)  # not on list
    s.c(ns, "XFR", 11, "SB", dt=0.5)
    s.s(ns, "XFR", 11, "SB", SB_ADDR, "CKI", "17262740.1050826919.32308")

    s.c(sb, "USR", 1, ALICE, "17262740.1050826919.32308", dt=0.1)
    s.s(sb, "USR", 1, "OK", ALICE, "Alice")
    s.c(sb, "CAL", 2, BOB)
    s.s(sb, "CAL", 2, "RINGING", "11752013")
    s.s(sb, "JOI", None, BOB, "Bob", dt=0.8)
    s.c(sb, "MSG", 3, "A", payload=text("Hi Bob, this is MSNP2."), dt=0.5)
    s.s(sb, "ACK", 3)
    s.s(sb, "MSG", None, BOB, "Bob", payload=text("Hello Alice!"), dt=1.0)
    s.s(sb, "BYE", None, BOB, dt=1.0)
    s.c(sb, "OUT", None, dt=0.2)

    s.c(ns, "PNG", None, dt=0.5)
    s.s(ns, "QNG", None)
    s.s(ns, "FLN", None, CAROL, dt=0.5)
    s.c(ns, "OUT", None, dt=0.5)
    return s.chunks


# -- MSNP8: TWN login, counted SYN block, CHL/QRY, XFR and RNG switchboards ----

TWN_POLICY = ("lc=1033,id=507,tw=40,fs=1,ru=http%3A%2F%2Fmessenger%2Emsn%2Ecom,ct=1062764229,"
              "kpp=1,kv=5,ver=2.1.0173.1,tpf=43f8a4c8ed940c04e3740be46c4d1619")
TWN_TICKET = ("t=53*1hAu8ADuD3TEwdXoOMi08sD*2!cMrntTwVMTjoB3p6stWTqzbkKZPVQzA5NOt19SLI60PY!"
              "b8K1uhYEAAA&p=16*l6hG3kKfUWyUYzjvCf2ZU8sL7Ni2HsSbPYoG7rr2!ekFEt5fQhGd8rq2")
CVR_WINNT = ("0x0409", "winnt", "5.1", "i386", "MSNMSGR", "6.0.0602", "MSMSGS")


def msnp8() -> list[Chunk]:
    s = Script()
    ds, ns, sb1, sb2 = "ds", "ns", "sb1", "sb2"
    s.c(ds, "VER", 1, "MSNP8", "CVR0")
    s.s(ds, "VER", 1, "MSNP8", "CVR0")
    s.c(ds, "CVR", 2, *CVR_WINNT, ALICE)
    s.s(ds, "CVR", 2, "6.0.0602", "6.0.0602", "6.0.0268",
        "http://download.microsoft.com/download/msnmessenger/install/6.0/W98NT42KMeXP/EN-US/SetupDl.exe",
        "http://messenger.msn.com")
    s.c(ds, "USR", 3, "TWN", "I", ALICE)
    s.s(ds, "XFR", 3, "NS", NS_ADDR, "0", DS_ADDR)

    s.c(ns, "VER", 4, "MSNP8", "CVR0", dt=0.2)
    s.s(ns, "VER", 4, "MSNP8", "CVR0")
    s.c(ns, "CVR", 5, *CVR_WINNT, ALICE)
    s.s(ns, "CVR", 5, "6.0.0602", "6.0.0602", "6.0.0268",
        "http://download.microsoft.com/download/msnmessenger/install/6.0/W98NT42KMeXP/EN-US/SetupDl.exe",
        "http://messenger.msn.com")
    s.c(ns, "USR", 6, "TWN", "I", ALICE)
    s.s(ns, "USR", 6, "TWN", "S", TWN_POLICY)
    s.c(ns, "USR", 7, "TWN", "S", TWN_TICKET, dt=0.8)
    s.s(ns, "USR", 7, "OK", ALICE, "Alice", "1", "0")
    s.s(ns, "MSG", None, "Hotmail", "Hotmail", payload=profile(ALICE))
    # MSNP8 SYN: the lines after it carry no TrID; the SYN line counts them (3 contacts, 2 groups).
    s.c(ns, "SYN", 8, "0")
    s.s(ns, "SYN", 8, "24", "3", "2")
    s.s(ns, "GTC", None, "A", dt=0.01)
    s.s(ns, "BLP", None, "AL", dt=0.01)
    s.s(ns, "PRP", None, "PHH", "01%20234%20567", dt=0.01)
    s.s(ns, "LSG", None, "0", "Other%20Contacts", "0", dt=0.01)
    s.s(ns, "LSG", None, "1", "Friends", "0", dt=0.01)
    s.s(ns, "LST", None, BOB, "Bob", "11", "1", dt=0.01)
    s.s(ns, "BPR", None, "PHH", "555%200100", dt=0.01)
    s.s(ns, "LST", None, CAROL, "Carol", "11", "0", dt=0.01)
    s.s(ns, "LST", None, DAVE, "Dave", "2", dt=0.01)
    s.c(ns, "CHG", 9, "NLN", "0")
    s.s(ns, "CHG", 9, "NLN", "0")
    s.s(ns, "ILN", 9, "NLN", BOB, "Bob", "268435492", dt=0.01)
    s.s(ns, "ILN", 9, "AWY", CAROL, "Carol", "0", dt=0.01)
    s.s(ns, "MSG", None, "Hotmail", "Hotmail", payload=email_notification(3), dt=0.5)
    challenge = "29409134351025259292"
    s.s(ns, "CHL", 0, challenge, dt=0.5)
    s.c(ns, "QRY", 10, MSNP8_PRODUCT_ID, payload=msnp8_challenge_answer(challenge))
    s.s(ns, "QRY", 10)
    s.s(ns, "NLN", None, "BSY", BOB, "Bob", "268435492", dt=1.0)
    s.c(ns, "PNG", None, dt=1.0)
    s.s(ns, "QNG", None)
    s.c(ns, "ADD", 11, "FL", "eve@example.com", "eve@example.com", "1", dt=0.5)
    s.s(ns, "ADD", 11, "FL", "25", "eve@example.com", "eve@example.com", "1")
    s.c(ns, "REM", 12, "FL", "nobody@example.com")
    s.s(ns, "216", 12)

    # Switchboard 1: alice asks for one and invites bob.
    cookie1 = "17262740.1050826919.32308"
    s.c(ns, "XFR", 13, "SB", dt=0.5)
    s.s(ns, "XFR", 13, "SB", SB_ADDR, "CKI", cookie1)
    s.c(sb1, "USR", 1, ALICE, cookie1, dt=0.1)
    s.s(sb1, "USR", 1, "OK", ALICE, "Alice")
    s.c(sb1, "CAL", 2, BOB)
    s.s(sb1, "CAL", 2, "RINGING", "11752013")
    s.s(sb1, "JOI", None, BOB, "Bob", dt=0.8)
    s.c(sb1, "MSG", 3, "U", payload=typing(ALICE), dt=0.5)
    s.c(sb1, "MSG", 4, "A", payload=text("Hello Bob, are you there?"), dt=1.5)
    s.s(sb1, "ACK", 4)
    s.s(sb1, "MSG", None, BOB, "Bob", payload=typing(BOB), dt=1.0)
    s.s(sb1, "MSG", None, BOB, "Bob", payload=text("Hi Alice! Yes."), dt=1.5)
    s.c(sb1, "MSG", 5, "N", payload=text("Great, see you later."), dt=2.0)
    s.s(sb1, "BYE", None, BOB, dt=4.0)
    s.c(sb1, "OUT", None, dt=0.2)

    # Switchboard 2: carol invites alice.
    cookie2 = "849102291.520491113"
    s.s(ns, "RNG", None, "11752099", SB2_ADDR, "CKI", cookie2, CAROL, "Carol", dt=0.5)
    s.c(sb2, "ANS", 1, ALICE, cookie2, "11752099", dt=0.1)
    s.s(sb2, "IRO", 1, "1", "1", CAROL, "Carol")
    s.s(sb2, "ANS", 1, "OK", dt=0.01)
    s.s(sb2, "MSG", None, CAROL, "Carol", payload=typing(CAROL), dt=0.5)
    s.s(sb2, "MSG", None, CAROL, "Carol", payload=text("Lunch tomorrow?"), dt=1.0)
    s.c(sb2, "MSG", 2, "A", payload=text("Sure, noon."), dt=2.0)
    s.s(sb2, "ACK", 2)
    s.c(sb2, "OUT", None, dt=1.0)

    s.s(ns, "FLN", None, CAROL, dt=0.5)
    s.c(ns, "OUT", None, dt=1.0)
    return s.chunks


# -- MSNP12: UBX/UUX personal messages, GCF, counted SYN with MSNP10+ LST shape -

def msnp12() -> list[Chunk]:
    s = Script()
    ds, ns, sb = "ds", "ns", "sb1"
    cvr = ("0x0409", "winnt", "5.1", "i386", "MSNMSGR", "7.5.0324", "msmsgs")
    s.c(ds, "VER", 1, "MSNP12", "MSNP11", "CVR0")
    s.s(ds, "VER", 1, "MSNP12", "CVR0")
    s.c(ds, "CVR", 2, *cvr, ALICE)
    s.s(ds, "CVR", 2, "7.5.0324", "7.5.0324", "7.0.0777",
        "http://msgr.dlservice.microsoft.com/download/Install_MSN_Messenger.exe", "http://messenger.msn.com")
    s.c(ds, "USR", 3, "TWN", "I", ALICE)
    s.s(ds, "XFR", 3, "NS", NS_ADDR, "0", DS_ADDR)

    s.c(ns, "VER", 4, "MSNP12", "MSNP11", "CVR0", dt=0.2)
    s.s(ns, "VER", 4, "MSNP12", "CVR0")
    s.c(ns, "CVR", 5, *cvr, ALICE)
    s.s(ns, "CVR", 5, "7.5.0324", "7.5.0324", "7.0.0777",
        "http://msgr.dlservice.microsoft.com/download/Install_MSN_Messenger.exe", "http://messenger.msn.com")
    s.c(ns, "USR", 6, "TWN", "I", ALICE)
    s.s(ns, "USR", 6, "TWN", "S", TWN_POLICY)
    s.c(ns, "USR", 7, "TWN", "S", TWN_TICKET, dt=0.8)
    s.s(ns, "USR", 7, "OK", ALICE, "1", "0")
    s.s(ns, "SBS", 0, "null")
    s.s(ns, "MSG", None, "Hotmail", "Hotmail", payload=profile(ALICE))
    s.c(ns, "SYN", 8, "2005-04-23T18:57:44.8130000-07:00", "2005-04-23T18:57:54.2070000-07:00")
    s.s(ns, "SYN", 8, "2005-04-23T18:57:44.8130000-07:00", "2005-04-23T18:57:54.2070000-07:00", "2", "1")
    s.s(ns, "GTC", None, "A", dt=0.01)
    s.s(ns, "BLP", None, "AL", dt=0.01)
    s.s(ns, "PRP", None, "MFN", "Alice", dt=0.01)
    s.s(ns, "LSG", None, "Friends", "5e8d5c0f-2f8e-4bd6-a05c-3b2e4f1c9d11", dt=0.01)
    s.s(ns, "LST", None, f"N={BOB}", "F=Bob", "C=0b2f9e1d-7c4a-4e3b-9a8f-1d2c3b4a5e6f", "11",
        "5e8d5c0f-2f8e-4bd6-a05c-3b2e4f1c9d11", dt=0.01)
    s.s(ns, "LST", None, f"N={CAROL}", "F=Carol", "C=7a6b5c4d-3e2f-4a1b-8c9d-0e1f2a3b4c5d", "3", dt=0.01)
    s.c(ns, "GCF", 9, "Shields.xml")
    s.s(ns, "GCF", 9, "Shields.xml",
        payload=b'<?xml version="1.0" encoding="utf-8" ?><config><shield><cli maj="7" min="0" '
                b'minbld="0" maxbld="9999" deny=" " /></shield><block></block></config>')
    s.c(ns, "CHG", 10, "NLN", "1342177324", "%3Cmsnobj%2F%3E")
    s.s(ns, "CHG", 10, "NLN", "1342177324", "%3Cmsnobj%2F%3E")
    s.s(ns, "ILN", 10, "NLN", BOB, "Bob", "1342177324", "%3Cmsnobj%2F%3E", dt=0.01)
    s.s(ns, "ILN", 10, "IDL", CAROL, "Carol", "1342177280", dt=0.01)
    s.s(ns, "UBX", None, BOB, payload=psm("At the beach"), dt=0.1)
    s.s(ns, "UBX", None, CAROL, payload=b"", dt=0.01)  # zero-length UBX: common
    s.c(ns, "UUX", 11, payload=psm("Writing tests", "{F26D1F07-95E2-403C-BC18-D4BFED493428}"))
    s.s(ns, "UUX", 11, "0")
    s.s(ns, "CHL", 0, "22210219642164014968", dt=1.0)
    s.c(ns, "QRY", 12, "PROD0090YUAUV{2B",
        payload=msnp11_challenge_answer("22210219642164014968", "PROD0090YUAUV{2B", "YMM8C_H7KCQ2S_KL"))
    s.s(ns, "QRY", 12)
    s.c(ns, "PNG", None, dt=1.0)
    s.s(ns, "QNG", None, "45")
    s.s(ns, "NLN", None, "BRB", BOB, "Bob", "1342177324", "%3Cmsnobj%2F%3E", dt=1.0)

    cookie = "1138712883.8234.17262740"
    s.c(ns, "XFR", 13, "SB", dt=0.5)
    s.s(ns, "XFR", 13, "SB", SB_ADDR, "CKI", cookie)
    s.c(sb, "USR", 1, ALICE, cookie, dt=0.1)
    s.s(sb, "USR", 1, "OK", ALICE, "Alice")
    s.c(sb, "CAL", 2, BOB)
    s.s(sb, "CAL", 2, "RINGING", "11752013")
    s.s(sb, "JOI", None, BOB, "Bob", "1342177324", dt=0.8)
    s.c(sb, "MSG", 3, "U", payload=typing(ALICE), dt=0.5)
    s.c(sb, "MSG", 4, "A", payload=text("Nice beach?"), dt=1.0)
    s.s(sb, "ACK", 4)
    s.s(sb, "MSG", None, BOB, "Bob", payload=typing(BOB), dt=0.5)
    s.s(sb, "MSG", None, BOB, "Bob", payload=text("Very. \u2600"), dt=1.0)
    s.s(sb, "BYE", None, BOB, dt=2.0)
    s.c(sb, "OUT", None, dt=0.2)

    s.c(ns, "PNG", None, dt=1.0)
    s.s(ns, "QNG", None, "50")
    s.c(ns, "OUT", None, dt=0.5)
    return s.chunks


# -- MSNP15: SSO login, ADL/RML with payloads, UBX with a network field --------

SSO_NONCE = "Dw9mMmfyeTuTKnUnIDjVvtlZ2gE4Mb8Lb1q1JAB1KoWtT8fMH5b4ChyWv2Kl8Jte"
SSO_TICKET = "t=EwCoARAnAAAUX2DgWqQPxd6VzwrGjlQ1dKzHjTgQ2A+XXyaVmXy2oV&p="
SSO_RESPONSE = "HAAAAAEAAAADZgAABIAAAAgAAAAUAAAASAAAAAAAAAA6tCfsQpFHplQQ1ytdA3pvJLHq"


def msnp15() -> list[Chunk]:
    s = Script()
    ds, ns, sb = "ds", "ns", "sb1"
    cvr = ("0x0409", "winnt", "5.1", "i386", "MSNMSGR", "8.5.1302", "msmsgs")
    s.c(ds, "VER", 1, "MSNP15", "CVR0")
    s.s(ds, "VER", 1, "MSNP15", "CVR0")
    s.c(ds, "CVR", 2, *cvr, ALICE)
    s.s(ds, "CVR", 2, "8.5.1302", "8.5.1302", "8.1.0178",
        "http://msgr.dlservice.microsoft.com/download/wlsetup-web.exe", "http://messenger.msn.com")
    s.c(ds, "USR", 3, "SSO", "I", ALICE)
    s.s(ds, "XFR", 3, "NS", NS_ADDR, "U", "D")

    s.c(ns, "VER", 4, "MSNP15", "CVR0", dt=0.2)
    s.s(ns, "VER", 4, "MSNP15", "CVR0")
    s.c(ns, "CVR", 5, *cvr, ALICE)
    s.s(ns, "CVR", 5, "8.5.1302", "8.5.1302", "8.1.0178",
        "http://msgr.dlservice.microsoft.com/download/wlsetup-web.exe", "http://messenger.msn.com")
    s.c(ns, "USR", 6, "SSO", "I", ALICE)
    s.s(ns, "USR", 6, "SSO", "S", "MBI_KEY_OLD", SSO_NONCE)
    s.c(ns, "USR", 7, "SSO", "S", SSO_TICKET, SSO_RESPONSE, dt=1.2)
    s.s(ns, "USR", 7, "OK", ALICE, "1", "0")
    s.s(ns, "SBS", 0, "null")
    s.s(ns, "MSG", None, "Hotmail", "Hotmail", payload=profile(ALICE))
    s.s(ns, "GCF", 0, payload=b'<Policies><Policy type="SHIELDS"><config><shield></shield>'
                              b'<block></block></config></Policy></Policies>', dt=0.05)
    s.c(ns, "BLP", 8, "AL", dt=0.5)
    s.s(ns, "BLP", 8, "AL")
    s.c(ns, "ADL", 9, payload=address_list([(BOB, 3), (CAROL, 3), (DAVE, 1)]))
    s.s(ns, "ADL", 9, "OK")
    s.c(ns, "PRP", 10, "MFN", "Alice%20%E2%98%85")
    s.s(ns, "PRP", 10, "MFN", "Alice%20%E2%98%85")
    s.c(ns, "CHG", 11, "NLN", "2789003324", "%3Cmsnobj%2F%3E")
    s.s(ns, "CHG", 11, "NLN", "2789003324", "%3Cmsnobj%2F%3E")
    s.s(ns, "ILN", 11, "NLN", BOB, "1", "Bob", "2789003324", "%3Cmsnobj%2F%3E", dt=0.01)
    s.s(ns, "ILN", 11, "AWY", CAROL, "1", "Carol", "2789003324", dt=0.01)
    s.s(ns, "UBX", None, BOB, "1", payload=psm("Coffee first"), dt=0.1)
    s.s(ns, "UBX", None, CAROL, "1", payload=b"", dt=0.01)
    s.c(ns, "UUX", 12, payload=psm("Testing MSNP15", ALICE_GUID))
    s.s(ns, "UUX", 12, "0")
    s.c(ns, "RML", 13, payload=address_list([(DAVE, 1)]), dt=0.5)
    s.s(ns, "RML", 13, "OK")
    s.s(ns, "ADL", 0, payload=address_list([("eve@example.com", 8)]), dt=1.0)  # eve added alice
    s.s(ns, "CHL", 0, "11685325143958371529", dt=1.0)
    s.c(ns, "QRY", 14, "PROD0114ES4Z%Q5W",
        payload=msnp11_challenge_answer("11685325143958371529", "PROD0114ES4Z%Q5W", "PK}_A_0N_K%O?A9S"))
    s.s(ns, "QRY", 14)
    s.c(ns, "PNG", None, dt=1.0)
    s.s(ns, "QNG", None, "50")
    s.s(ns, "NLN", None, "BSY", BOB, "1", "Bob", "2789003324", "%3Cmsnobj%2F%3E", dt=1.0)

    cookie = "1138712883.8234.17262740"
    s.c(ns, "XFR", 15, "SB", dt=0.5)
    s.s(ns, "XFR", 15, "SB", SB_ADDR, "CKI", cookie, "U", "messenger.msn.com", "1")
    s.c(sb, "USR", 1, ALICE, cookie, dt=0.1)
    s.s(sb, "USR", 1, "OK", ALICE, "Alice")
    s.c(sb, "CAL", 2, BOB)
    s.s(sb, "CAL", 2, "RINGING", "11752013")
    s.s(sb, "JOI", None, BOB, "Bob", "2789003324", dt=0.8)
    s.c(sb, "MSG", 3, "U", payload=typing(ALICE), dt=0.5)
    s.c(sb, "MSG", 4, "A", payload=text("Coffee at ten?"), dt=1.0)
    s.s(sb, "ACK", 4)
    s.s(sb, "MSG", None, BOB, "Bob", payload=typing(BOB), dt=0.5)
    s.s(sb, "MSG", None, BOB, "Bob", payload=text("Make it eleven."), dt=1.0)
    s.c(sb, "MSG", 5, "A", payload=text("Deal."), dt=1.0)
    s.s(sb, "ACK", 5)
    s.s(sb, "BYE", None, BOB, dt=2.0)
    s.c(sb, "OUT", None, dt=0.2)

    s.s(ns, "FLN", None, BOB, "1", dt=1.0)
    s.c(ns, "OUT", None, dt=0.5)
    return s.chunks


# -- MSNP18: endpoints (handle;{guid}) on the switchboard, QNG seconds --------

def msnp18() -> list[Chunk]:
    s = Script()
    ns, sb1, sb2 = "ns", "sb1", "sb2"
    a1, a2 = f"{ALICE};{ALICE_GUID}", f"{ALICE};{ALICE_GUID2}"
    b1, b2 = f"{BOB};{BOB_GUID}", f"{BOB};{BOB_GUID2}"
    c1 = f"{CAROL};{CAROL_GUID}"
    cvr = ("0x0409", "winnt", "6.1.0", "i386", "MSNMSGR", "14.0.8117.0416", "msmsgs")
    s.c(ns, "VER", 1, "MSNP18", "MSNP17", "CVR0")
    s.s(ns, "VER", 1, "MSNP18")
    s.c(ns, "CVR", 2, *cvr, ALICE)
    s.s(ns, "CVR", 2, "14.0.8117.0416", "14.0.8117.0416", "14.0.8117.0416",
        "http://msgr.dlservice.microsoft.com/download/wlsetup-web.exe", "http://messenger.msn.com")
    s.c(ns, "USR", 3, "SSO", "I", ALICE)
    s.s(ns, "USR", 3, "SSO", "S", "MBI_KEY_OLD", SSO_NONCE)
    s.c(ns, "USR", 4, "SSO", "S", SSO_TICKET, SSO_RESPONSE, ALICE_GUID, dt=1.2)
    s.s(ns, "USR", 4, "OK", ALICE, "1", "0")
    s.s(ns, "SBS", 0, "null")
    s.s(ns, "MSG", None, "Hotmail", "Hotmail", payload=profile(ALICE))
    s.c(ns, "BLP", 5, "AL", dt=0.5)
    s.s(ns, "BLP", 5, "AL")
    s.c(ns, "ADL", 6, payload=address_list([(BOB, 3), (CAROL, 3)]))
    s.s(ns, "ADL", 6, "OK")
    s.c(ns, "PRP", 7, "MFN", "Alice")
    s.s(ns, "PRP", 7, "MFN", "Alice")
    s.c(ns, "UUX", 8, payload=psm("MSNP18 here", ALICE_GUID))
    s.s(ns, "UUX", 8, "0")
    s.c(ns, "CHG", 9, "NLN", "2789003324:48", "0")
    s.s(ns, "CHG", 9, "NLN", "2789003324:48", "0")
    s.s(ns, "NLN", None, "NLN", f"1:{BOB}", "Bob", "2789003324:48", "0", dt=0.3)
    s.s(ns, "UBX", None, f"1:{BOB}", payload=psm("Two places at once"), dt=0.01)
    s.s(ns, "NLN", None, "NLN", f"1:{CAROL}", "Carol", "2789003324:48", "0", dt=0.01)
    s.s(ns, "UBX", None, f"1:{CAROL}", payload=b"", dt=0.01)
    s.c(ns, "PNG", None, dt=1.0)
    s.s(ns, "QNG", None, "50")

    cookie1 = "1138712883.8234.17262740"
    s.c(ns, "XFR", 10, "SB", dt=0.5)
    s.s(ns, "XFR", 10, "SB", SB_ADDR, "CKI", cookie1, "U", "messenger.msn.com", "1")
    s.c(sb1, "USR", 1, a1, cookie1, dt=0.1)
    s.s(sb1, "USR", 1, "OK", a1, "Alice")
    s.c(sb1, "CAL", 2, BOB)
    s.s(sb1, "CAL", 2, "RINGING", "11752013")
    # bob is signed in at two places: one JOI per endpoint, then alice's own second endpoint.
    s.s(sb1, "JOI", None, b1, "Bob", "2789003324:48", dt=0.8)
    s.s(sb1, "JOI", None, b2, "Bob", "2789003324:48", dt=0.01)
    s.s(sb1, "JOI", None, a2, "Alice", "2789003324:48", dt=0.01)
    s.c(sb1, "MSG", 3, "U", payload=typing(ALICE), dt=0.5)
    s.c(sb1, "MSG", 4, "A", payload=text("Which of you am I talking to?"), dt=1.0)
    s.s(sb1, "ACK", 4)
    s.s(sb1, "MSG", None, BOB, "Bob", payload=text("Both :)"), dt=1.0)
    s.s(sb1, "BYE", None, b2, dt=2.0)
    s.s(sb1, "BYE", None, b1, dt=0.5)
    s.c(sb1, "OUT", None, dt=0.2)

    cookie2 = "849102291.520491113.219921"
    sessid = "8f2c6a51d3b94e0e9d7c2b1a0f9e8d7c"  # revival servers use hex session ids
    s.s(ns, "RNG", None, sessid, SB2_ADDR, "CKI", cookie2, CAROL, "Carol", "U", "messenger.msn.com", "1",
        dt=0.5)
    s.c(sb2, "ANS", 1, a1, cookie2, sessid, dt=0.1)
    s.s(sb2, "IRO", 1, "1", "2", c1, "Carol", "2789003324:48")
    s.s(sb2, "IRO", 1, "2", "2", a2, "Alice", "2789003324:48", dt=0.01)
    s.s(sb2, "ANS", 1, "OK", dt=0.01)
    s.s(sb2, "MSG", None, CAROL, "Carol", payload=text("Ping from the other side"), dt=0.5)
    s.c(sb2, "MSG", 2, "A", payload=text("Pong"), dt=1.0)
    s.s(sb2, "ACK", 2)
    s.s(sb2, "BYE", None, c1, dt=1.0)
    s.c(sb2, "OUT", None, dt=0.2)

    s.c(ns, "PNG", None, dt=1.0)
    s.s(ns, "QNG", None, "48")
    s.s(ns, "FLN", None, f"1:{CAROL}", "0", dt=0.5)
    s.c(ns, "OUT", None, dt=0.5)
    return s.chunks


# -- anomalies: white space, out-of-order replies, interleaved asynchronous lines

ANOMALY_NAMES = frozenset({
    "msnp.whitespace.multiple_spaces", "msnp.whitespace.tab", "msnp.whitespace.trailing",
    "msnp.whitespace.leading", "msnp.newline.bare_lf",
    "msnp.reply.out_of_order", "msnp.async.interleaved",
})


def anomalies() -> list[Chunk]:
    """An MSNP8 login whose client writes sloppy white space and whose server reorders and interleaves.

    Seeded, in order: two spaces, a tab, trailing and leading white space, a
    bare \\n; one reordered pair of replies (XFR 10 answered after ADD 11); an
    NLN inside the SYN block and one between two ILNs (interleaved), and an NLN
    while two requests await their replies (ordinary traffic, not flagged).
    """
    s = Script()
    ns, sb = "ns", "sb1"
    s.c(ns, "VER", 1, "MSNP8", "CVR0")
    s.s(ns, "VER", 1, "MSNP8", "CVR0")
    s.raw(ns, C2S, b"CVR  2 0x0409 winnt 5.1 i386 MSNMSGR 6.0.0602 MSMSGS alice@example.com\r\n")
    s.s(ns, "CVR", 2, "6.0.0602", "6.0.0602", "6.0.0268", "http://messenger.msn.com", "http://messenger.msn.com")
    s.raw(ns, C2S, b"USR\t3 TWN I alice@example.com\r\n")
    s.s(ns, "USR", 3, "TWN", "S", TWN_POLICY)
    s.raw(ns, C2S, f"USR 4 TWN S {TWN_TICKET} \r\n".encode())
    s.s(ns, "USR", 4, "OK", ALICE, "Alice", "1", "0")
    s.raw(ns, C2S, b" SYN 5 0\r\n")
    s.s(ns, "SYN", 5, "3", "2", "1")
    s.s(ns, "GTC", None, "A", dt=0.01)
    s.s(ns, "BLP", None, "AL", dt=0.01)
    s.s(ns, "LSG", None, "0", "Other%20Contacts", "0", dt=0.01)
    s.s(ns, "LST", None, BOB, "Bob", "11", "0", dt=0.01)
    s.s(ns, "NLN", None, "NLN", CAROL, "Carol", "0", dt=0.01)   # interleaved inside the SYN block
    s.s(ns, "LST", None, CAROL, "Carol", "11", "0", dt=0.01)
    s.raw(ns, C2S, b"CHG 6 NLN 0\n")                               # bare \n: accepted
    s.s(ns, "CHG", 6, "NLN", "0")
    s.s(ns, "ILN", 6, "NLN", BOB, "Bob", "0", dt=0.01)
    s.s(ns, "NLN", None, "IDL", DAVE, "Dave", "0", dt=0.01)      # interleaved: between two ILNs of CHG 6
    s.s(ns, "ILN", 6, "NLN", CAROL, "Carol", "0", dt=0.01)
    s.c(ns, "XFR", 10, "SB", dt=0.5)
    s.c(ns, "ADD", 11, "FL", DAVE, DAVE)
    s.s(ns, "NLN", None, "AWY", BOB, "Bob", "0")                  # not interleaved: XFR and ADD merely await replies
    s.s(ns, "ADD", 11, "FL", "4", DAVE, DAVE)                      # answers the later request first
    s.s(ns, "XFR", 10, "SB", SB_ADDR, "CKI", "17262740.1050826919.32308")
    s.c(ns, "OUT", None, dt=0.5)
    return s.chunks


SESSIONS: dict[str, list[Chunk]] = {
    "msnp2": msnp2(),
    "msnp8": msnp8(),
    "msnp12": msnp12(),
    "msnp15": msnp15(),
    "msnp18": msnp18(),
    "anomalies": anomalies(),
}
CLEAN_SESSIONS = ("msnp2", "msnp8", "msnp12", "msnp15", "msnp18")
VERSIONS = {"msnp2": 2, "msnp8": 8, "msnp12": 12, "msnp15": 15, "msnp18": 18, "anomalies": 8}

_SERVERS = {"ds": DS_ADDR, "ns": NS_ADDR, "sb1": SB_ADDR, "sb2": SB2_ADDR}


def _connections(chunks: list[Chunk]) -> dict[str, tuple[str, str]]:
    out: dict[str, tuple[str, str]] = {}
    for chunk in chunks:
        if chunk.conn not in out:
            port = 50010 + len(out)
            out[chunk.conn] = (f"127.0.0.1:{port}", _SERVERS[chunk.conn])
    return out


# conn label -> (client "ip:port", server "ip:port"), loopback only.
CONNECTIONS: dict[str, dict[str, tuple[str, str]]] = {
    name: _connections(chunks) for name, chunks in SESSIONS.items()}


def streams(chunks: list[Chunk]) -> dict[str, dict[str, bytes]]:
    """Per-connection byte streams: {conn label: {"c2s": bytes, "s2c": bytes}}."""
    out: dict[str, dict[str, list[bytes]]] = {}
    for chunk in chunks:
        per = out.setdefault(chunk.conn, {C2S: [], S2C: []})
        per[chunk.direction].append(chunk.data)
    return {conn: {d: b"".join(parts) for d, parts in per.items()} for conn, per in out.items()}
