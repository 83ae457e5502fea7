"""Writes the small hostile inputs of issue #15 beside this script (run it to regenerate them).

One input per case; tests/hostile/test_cases.py says which invariant each one broke.
Secrets in them are made up (SECRET_* markers), so a test can search every output for them.
"""

from __future__ import annotations

import io
import struct
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))

from analyzer.capture.pcapng_writer import PcapngWriter, TcpRecorder  # noqa: E402
from analyzer.msnp.transcript import Chunk, format_chunks  # noqa: E402

C, S = "c2s", "s2c"


def transcript(chunks, ts0: float = 1.0) -> str:
    return format_chunks([Chunk(d, data, ts0 + i * 0.01, conn) for i, (conn, d, data) in enumerate(chunks)])


def msg(sender: bytes, headers: bytes, body: bytes, direction=S) -> tuple:
    payload = b"MIME-Version: 1.0\r\n" + headers + b"\r\n" + body
    if direction == S:
        line = b"MSG " + sender + b" Alice " + str(len(payload)).encode() + b"\r\n"
    else:
        line = b"MSG 3 N " + str(len(payload)).encode() + b"\r\n"
    return ("sb1", direction, line + payload)


SB_LOGIN = [("sb1", C, b"USR 1 bob@example.com 1234.5678.SECRETSBCOOKIE\r\n"),
            ("sb1", S, b"USR 1 OK bob@example.com Bob\r\n"),
            ("sb1", C, b"CAL 2 alice@example.com\r\n"),
            ("sb1", S, b"CAL 2 RINGING 11752013\r\n"),
            ("sb1", S, b"JOI alice@example.com Alice\r\n")]


def surrogate_charset() -> bytes:
    """A text MSG whose charset (unicode_escape) decodes its body to a lone surrogate."""
    return transcript(SB_LOGIN + [
        msg(b"alice@example.com", b"Content-Type: text/plain; charset=unicode_escape\r\n", b"\\ud800 hi"),
        ("sb1", C, b"OUT\r\n")]).encode()


def escapes() -> bytes:
    """Terminal escape sequences from the wire: OSC 52 clipboard write, title change, clear screen, 8-bit CSI."""
    osc52 = b"\x1b]52;c;ZWNobyBwd25lZA==\x07"
    title = b"\x1b]0;owned\x07"
    clear = b"\x1b[2J\x1b[H"
    return transcript(SB_LOGIN[:4] + [
        ("sb1", S, b"JOI alice@example.com " + title + b"Alice\r\n"),
        ("sb1", S, b"BOGUS" + osc52 + b"\r\n"),
        msg(b"alice@example.com", b"Content-Type: text/plain; charset=UTF-8\r\n",
            b"hello " + osc52 + clear + "\u009b2J".encode() + b" \r bye"),
        ("sb1", C, b"OUT\r\n")]).encode()


def huge_time() -> bytes:
    """A 400-digit time: float() makes it Infinity."""
    return b"1" + b"0" * 399 + b" >>> VER 1 MSNP8 CVR0\\r\\n\n0.5 <<< VER 1 MSNP8 CVR0\\r\\n\n"


TICKET = b"t=SECRETTICKETt0k3n*1!$$&p=SECRETPROFILEp4ss*2"


def secrets_msnp() -> bytes:
    """Every MSNP-side secret the issue lists, one per line."""
    profile = (b"Content-Type: text/x-msmsgsprofile; charset=UTF-8\r\nLoginTime: 1\r\n"
               b"MSPAuth : SECRETMSPAUTHspace\r\nmspauth:SECRETMSPAUTHlower\r\nMSPProf: SECRETMSPPROF\r\n"
               b"sid: 507\r\nkv: 2\r\n")
    invite = (b"Application-Name: File Transfer\r\nInvitation-Command: ACCEPT\r\nInvitation-Cookie: 42\r\n"
              b"IP-Address: 127.0.0.1\r\nPort: 6891\r\nAuthCookie: SECRETAUTHCOOKIE\r\nsid: SECRETSID\r\n"
              b"kv: SECRETKV\r\n")
    return transcript([
        ("ns1", C, b"VER 1 MSNP18 CVR0\r\n"),
        ("ns1", S, b"VER 1 MSNP18\r\n"),
        ("ns1", C, b"USR 2 SSO S " + TICKET + b" SECRETSSORESPONSE {7a5a1fbe-3e5b-4c1b-8f1c-0d3cd0a0f6a1}\r\n"),
        ("ns1", C, b"USR 3 SHA A SECRETSHATICKETbase64==\r\n"),
        ("ns1", C, b"usr 4 md5 s SECRETMD5HASHlowercase\r\n"),
        ("ns1", C, b"USR 5 TWN S " + TICKET + b"\r\n"),
        ("ns1", C, b"QRY 6 msmsgs@msnmsgr.com 32\r\nSECRETQRYANSWER00000000000000000"),
        ("ns1", S, b"XFR 7 SB 127.0.0.1:1863 CKI SECRETXFRCOOKIE 1 0\r\n"),
        ("ns1", S, b"RNG 11752013 127.0.0.1:1863 CKI SECRETRNGCOOKIE alice@example.com Alice\r\n"),
        ("ns1", S, b"MSG Hotmail Hotmail " + str(len(b"MIME-Version: 1.0\r\n" + profile + b"\r\n")).encode() +
         b"\r\nMIME-Version: 1.0\r\n" + profile + b"\r\n"),
        ("sb1", C, b"ANS 1 bob@example.com SECRETANSCOOKIE 11752013\r\n"),
        msg(b"alice@example.com", b"Content-Type: text/x-msmsgsinvite; charset=UTF-8\r\n\r\n", invite),
    ]).encode()


def truncated_usr() -> bytes:
    """The stream ends inside `USR .. SSO S <ticket>`: msnp.line.truncated quotes the start of the line."""
    return transcript([("ns1", C, b"VER 1 MSNP15 CVR0\r\n"), ("ns1", S, b"VER 1 MSNP15\r\n"),
                       ("ns1", C, b"USR 3 SSO S t=SECRETCUT")]).encode()


def garbage_usr() -> bytes:
    """Binary garbage, then a ticket line inside the garbage run: msnp.line.garbage quotes it."""
    return transcript([("ns1", C, b"VER 1 MSNP15 CVR0\r\n"), ("ns1", S, b"VER 1 MSNP15\r\n"),
                       ("ns1", C, b"\x00\x01\x02 USR 3 TWN S t=SECRETGARBAGE&p=SECRETGARBAGEP\r\n"),
                       ("ns1", C, b"PNG\r\n")]).encode()


def _session_frames() -> list[tuple[float, bytes]]:
    buf = io.BytesIO()
    writer = PcapngWriter(buf)
    rec = TcpRecorder(writer, ("127.0.0.1", 50000), ("127.0.0.2", 1863))
    rec.open(1.0)
    rec.data(C, b"VER 1 MSNP8 CVR0\r\n", 1.1)
    rec.data(S, b"VER 1 MSNP8 CVR0\r\n", 1.2)
    rec.data(C, b"CVR 2 0x0409 winnt 5.1 i386 MSNMSGR 6.0.0602 MSMSGS bob@example.com\r\n", 1.3)
    rec.data(S, b"CVR 2 6.0.0602 6.0.0602 1.0.0000 http://a http://b\r\n", 1.4)
    rec.end(C, 1.5)
    rec.end(S, 1.6)
    data = buf.getvalue()
    frames, pos = [], 0
    while pos < len(data):
        kind, length = struct.unpack_from("<II", data, pos)
        if kind == 6:
            _, hi, lo, caplen, _ = struct.unpack_from("<5I", data, pos + 8)
            frames.append((((hi << 32) | lo) / 1e6, data[pos + 28:pos + 28 + caplen]))
        pos += length
    return frames


def _block(kind: int, body: bytes) -> bytes:
    body += b"\0" * (-len(body) % 4)
    return struct.pack("<II", kind, len(body) + 12) + body + struct.pack("<I", len(body) + 12)


def pcapng(snaplen: int, simple: bool, extra: bytes = b"") -> bytes:
    """A pcapng of one 4-command session; packets in Simple Packet Blocks when `simple`."""
    out = _block(0x0A0D0D0A, struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1))
    out += _block(1, struct.pack("<HHI", 1, 0, snaplen))
    out += extra
    for ts, frame in _session_frames():
        if simple:
            out += _block(3, struct.pack("<I", len(frame)) + frame)
        else:
            t = int(ts * 1e6)
            out += _block(6, struct.pack("<5I", 0, t >> 32, t & 0xFFFFFFFF, len(frame), len(frame)) + frame)
    return out


def other_blocks() -> bytes:
    """EPBs with the other standard blocks between them: NRB, ISB, DSB, a custom block, an unknown type."""
    extra = (_block(4, struct.pack("<HH", 1, 13) + b"\x7f\0\0\x02msn\0" + b"\0" * 3 + b"\0\0\0\0")
             + _block(5, struct.pack("<III", 0, 0, 0))
             + _block(10, struct.pack("<II", 0x544C534B, 8) + b"CLIENT_R")
             + _block(0x00000BAD, struct.pack("<I", 32473) + b"custom")
             + _block(0x40000123, b"future block type"))
    return pcapng(262144, False, extra)


def _tnet_dict(items: list[tuple[bytes, bytes]]) -> bytes:
    body = b"".join(k + v for k, v in items)
    return str(len(body)).encode() + b":" + body + b"}"


def _tnet_str(value: bytes) -> bytes:
    return str(len(value)).encode() + b":" + value + b","


def flow_files() -> dict[str, bytes]:
    """A good MSNP TCP flow, one damaged record, the good flow again (mitmproxy's own writer)."""
    from mitmproxy import io as mio
    from mitmproxy import tcp
    from mitmproxy.io import tnetstring
    from mitmproxy.test import tflow

    def good(n: int) -> bytes:
        flow = tflow.ttcpflow(messages=[tcp.TCPMessage(True, b"VER %d MSNP8 CVR0\r\n" % n, 10.0 + n),
                                        tcp.TCPMessage(False, b"VER %d MSNP8 CVR0\r\n" % n, 10.5 + n)])
        out = io.BytesIO()
        mio.FlowWriter(out).add(flow)
        return out.getvalue()

    state = tnetstring.loads(good(1))
    no_type = dict(state)
    del no_type["type"]
    bad_state = dict(state)
    bad_state["messages"] = [[1, 2, 3]]
    bad_state2 = dict(state)
    bad_state2["client_conn"] = "not a connection"
    deep = b"0:]"
    for _ in range(5000):
        deep = str(len(deep)).encode() + b":" + deep + b"]"
    nested = _tnet_dict([(_tnet_str(b"type"), _tnet_str(b"tcp")), (_tnet_str(b"deep"), deep)])
    return {
        "flow_no_type.mitm": good(1) + tnetstring.dumps(no_type) + good(2),
        "flow_deep.mitm": good(1) + nested + good(2),
        "flow_bad_state.mitm": good(1) + tnetstring.dumps(bad_state) + tnetstring.dumps(bad_state2) + good(2),
        "flow_cut.mitm": good(1) + good(2)[:-25],
    }


def main() -> None:
    files = {
        "surrogate_charset.msnp": surrogate_charset(),
        "escapes.msnp": escapes(),
        "huge_time.msnp": huge_time(),
        "secrets.msnp": secrets_msnp(),
        "truncated_usr.msnp": truncated_usr(),
        "garbage_usr.msnp": garbage_usr(),
        "simple_packets.pcapng": pcapng(262144, True),
        "simple_packets_snaplen0.pcapng": pcapng(0, True),
        "other_blocks.pcapng": other_blocks(),
        **flow_files(),
    }
    for name, data in files.items():
        (HERE / name).write_bytes(data)
    print("\n".join(sorted(files)))


if __name__ == "__main__":
    main()
