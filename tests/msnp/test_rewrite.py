"""AddressRewriter: byte-exact XFR/RNG address rewriting, in any chunking."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from analyzer.msnp import encode_command
from analyzer.msnp.rewrite import AddressRewriter, Rewrite

ROUTES = {("NS", "10.0.0.5", 1863): ("127.0.0.1", 40001),
          ("SB", "10.0.0.9", 1864): ("127.0.0.1", 40002),
          ("SB", "sb.example.com", 1863): ("127.0.0.1", 40003)}


def route(kind, host, port):
    return ROUTES.get((kind, host, port))


def chunkings(data: bytes):
    yield "whole", [data]
    yield "bytewise", [data[i:i + 1] for i in range(len(data))]
    rng = random.Random(7)
    for k in range(5):
        cuts = sorted(rng.sample(range(1, len(data)), min(len(data) - 1, rng.randint(1, 12))))
        yield f"random{k}", [data[a:b] for a, b in zip([0] + cuts, cuts + [len(data)])]


def run(data: bytes, **kw) -> tuple[bytes, list[Rewrite], AddressRewriter]:
    results = []
    for name, chunks in chunkings(data):
        rw = AddressRewriter(route, **kw)
        out, recs = [], []
        for chunk in chunks:
            o, r = rw.feed(chunk)
            out.append(o)
            recs += r
        out.append(rw.close())
        results.append((name, b"".join(out), recs, rw))
    first = results[0]
    for name, out, recs, _ in results[1:]:
        assert out == first[1], f"{name} chunking differs from whole"
        assert recs == first[2], f"{name} rewrites differ"
    return first[1], first[2], first[3]


def test_xfr_ns_msnp8_rewritten_and_nothing_else():
    data = (b"VER 1 MSNP8 CVR0\r\nCVR 2 6.0.0602 6.0.0602 1.0.0000 http://x http://y\r\n"
            b"XFR 3 NS 10.0.0.5:1863 0 10.0.0.1:1863\r\n")
    out, recs, _ = run(data)
    assert out == data.replace(b"XFR 3 NS 10.0.0.5:1863", b"XFR 3 NS 127.0.0.1:40001")
    assert recs == [Rewrite("XFR", "NS", "10.0.0.5:1863", "127.0.0.1:40001", data.index(b"XFR"))]


def test_xfr_sb_with_and_without_msnp13_trailing_fields():
    plain = b"XFR 10 SB 10.0.0.9:1864 CKI 17262740.1050826919.32308\r\n"
    trailing = b"XFR 11 SB 10.0.0.9:1864 CKI 1726.1050.3230 U messenger.msn.com 1\r\n"
    out, recs, _ = run(plain + trailing)
    assert out == (plain + trailing).replace(b"10.0.0.9:1864", b"127.0.0.1:40002")
    assert [r.rewritten for r in recs] == ["127.0.0.1:40002"] * 2
    assert recs[1].offset == len(plain)


def test_rng_rewritten_including_hostname_targets():
    line = b"RNG 11752013 sb.example.com:1863 CKI 849102291.520491932 bob@example.com Bob%20B U messenger.msn.com 1\r\n"
    out, recs, _ = run(line)
    assert out == line.replace(b"sb.example.com:1863", b"127.0.0.1:40003")
    assert recs[0].cmd == "RNG" and recs[0].kind == "SB"


def test_payload_text_that_looks_like_xfr_is_not_rewritten():
    body = b"MIME-Version: 1.0\r\nContent-Type: text/plain\r\n\r\nXFR 1 SB 10.0.0.9:1864 CKI x\r\nRNG 1 10.0.0.9:1864 CKI y a b\r\n"
    msg = encode_command("MSG", None, ["bob@example.com", "Bob"], body)
    real = b"XFR 12 SB 10.0.0.9:1864 CKI zzz\r\n"
    data = b"VER 1 MSNP8 CVR0\r\n" + msg + real
    out, recs, _ = run(data)
    assert out == b"VER 1 MSNP8 CVR0\r\n" + msg + real.replace(b"10.0.0.9:1864", b"127.0.0.1:40002")
    assert len(recs) == 1 and recs[0].offset == data.index(real)


def test_not_and_msnp11_ubx_payloads_are_skipped_but_ubx_before_msnp11_is_a_line():
    payload = b"<x>XFR 1 NS 10.0.0.5:1863 0 a</x>"
    ubx = encode_command("UBX", None, ["bob@example.com"], payload)
    note = encode_command("NOT", None, [], payload)
    data = b"VER 1 MSNP15 MSNP14 CVR0\r\n" + note + ubx
    out, recs, _ = run(data)
    assert out == data and recs == []
    # MSNP13+ numeric errors carry a payload too
    err = b"VER 1 MSNP15 CVR0\r\n241 5 " + str(len(payload)).encode() + b"\r\n" + payload
    assert run(err)[0] == err


def test_route_refusal_and_bad_address_leave_the_line_alone():
    data = b"XFR 3 NS 10.9.9.9:1863 0 10.0.0.1:1863\r\nXFR 4 SB nonsense:port CKI c\r\n"
    out, recs, _ = run(data)
    assert out == data
    assert [(r.rewritten, r.reason) for r in recs] == [(None, "no route"), (None, "not a host:port")]


def test_routing_exception_is_reported_not_raised():
    def broken(kind, host, port):
        raise OSError("no ports left")
    rw = AddressRewriter(broken)
    line = b"XFR 3 NS 10.0.0.5:1863 0 10.0.0.1:1863\r\n"
    out, recs = rw.feed(line)
    assert out == line and recs[0].rewritten is None and "no ports left" in recs[0].reason


def test_bare_host_means_port_1863_and_lf_only_lines_keep_their_ending():
    ROUTES[("NS", "ns.example.com", 1863)] = ("127.0.0.1", 40009)
    try:
        out, recs, _ = run(b"XFR 3 NS ns.example.com 0\n")
    finally:
        del ROUTES[("NS", "ns.example.com", 1863)]
    assert out == b"XFR 3 NS 127.0.0.1:40009 0\n"


def test_held_line_is_released_when_overlong_and_bytes_are_kept():
    data = b"XFR 3 NS " + b"a" * 300 + b"\r\nXFR 4 NS 10.0.0.5:1863 0 x\r\n"
    out, recs, _ = run(data, max_line=100)
    assert out == data.replace(b"XFR 4 NS 10.0.0.5:1863", b"XFR 4 NS 127.0.0.1:40001")
    # The overlong one went out as it was, and says so (the client may still follow it).
    assert [(r.cmd, r.rewritten, r.offset) for r in recs] == [("XFR", None, 0), ("XFR", "127.0.0.1:40001", 311)]
    assert "longer than 100 bytes" in recs[0].reason


def test_only_xfr_and_rng_lines_are_held_back():
    rw = AddressRewriter(route)
    out, _ = rw.feed(b"ILN 5 NLN bob@example.com Bob\r\nCHG 6 NL")
    assert out == b"ILN 5 NLN bob@example.com Bob\r\nCHG 6 NL"  # forwarded at once
    out, _ = rw.feed(b"N\r\nXF")
    assert out == b"N\r\n" and rw.pending == b"XF"
    out, _ = rw.feed(b"R 7 NS 10.0.0.5:1863 0 x")
    assert out == b"" and rw.pending == b"XFR 7 NS 10.0.0.5:1863 0 x"
    assert rw.close() == b"XFR 7 NS 10.0.0.5:1863 0 x"  # truncated: released unchanged
    rw = AddressRewriter(route)
    assert rw.feed(b"XO") == (b"XO", [])  # cannot become XFR: not held
    assert rw.feed(b"K\r\nRNGX 1 10.0.0.9:1864\r\n") == (b"K\r\nRNGX 1 10.0.0.9:1864\r\n", [])


def test_prefix_that_is_not_xfr_is_released_in_order():
    rw = AddressRewriter(route)
    got = [rw.feed(b"R")[0], rw.feed(b"N")[0], rw.feed(b"X 1\r\nOK\r\n")[0]]
    assert b"".join(got) == b"RNX 1\r\nOK\r\n"
    assert got[0] == b"" and got[1] == b""


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from([
    b"XFR 3 NS 10.0.0.5:1863 0 10.0.0.1:1863\r\n", b"RNG 1 10.0.0.9:1864 CKI c a b\r\n",
    b"MSG a b 5\r\nXFR 1", b"ILN 1 NLN a b\r\n", b"\r\n", b"XF", b"garbage\x00\xff", b"\n",
    b"NOT 3\r\nRNG", b"VER 1 MSNP15 CVR0\r\n", b"241 5 2\r\nXF"]), max_size=20),
    st.lists(st.integers(1, 40), max_size=30))
def test_identity_route_is_byte_exact_whatever_the_input(parts, cuts):
    data = b"".join(parts)
    rw = AddressRewriter(lambda kind, host, port: (host, port))
    out, pos = [], 0
    for c in cuts:
        out.append(rw.feed(data[pos:pos + c])[0])
        pos += c
    out.append(rw.feed(data[pos:])[0])
    out.append(rw.close())
    assert b"".join(out) == data


@pytest.mark.parametrize("junk", [bytes(range(256)) * 4, b"\r" * 1000, b"XFR" * 500])
def test_junk_never_raises_and_is_forwarded(junk):
    out, _, _ = run(junk, max_line=200)
    assert out == junk


class _GeneralLoopOnly(AddressRewriter):
    """The rewriter without its skimming fast path: every byte through feed's general loop."""

    def _skim(self, data: bytes) -> int:
        return 0


_PIECES = [b"MSG 1 N 5\r\nhello", b"MSG a@b Nick 30\r\nXFR 1 SB 1.2.3.4:1863 CKI x\r\nabc",
           b"XFR 2 NS 10.0.0.1:1863 0 127.0.0.1:1863\r\n", b"RNG 123 5.6.7.8:1863 CKI 999 a@b N\r\n",
           b"VER 1 MSNP15 CVR0\r\n", b"VER 1 MSNP8\r\n", b"UBX a@b 12\r\n<Data></Data>", b"911 5 4\r\nabcd",
           b"CHG 3 NLN 0\r\n", b" MSG 1 N 3\r\nxyz", b"MSG\r\n", b"MSG 0\r\n", b"MSGX 1 N 3\r\n", b"NOT 10\r\nXFR 1 NS ",
           b"\r\n", b"\n", b"XF\r\n", b"MSG 1 N 99999999999\r\n", b"GCF 1 5\r\nhello", b"\tMSG 1 2\r\nhi",
           b"MSG 1\tN 2\r\nhi", b"X" * 50 + b"\r\n", b"ADL 1 3\r\nabc", b"MSG 1 N 5 \r\nhello", b"RN",
           b"G 1 9.9.9.9:1 CKI x\r\n", b"\r\nMSG 1 N 2\r\nab"]


@settings(max_examples=400, deadline=None)
@given(parts=st.lists(st.sampled_from(_PIECES), min_size=1, max_size=30),
       sizes=st.lists(st.sampled_from([1, 2, 3, 5, 17, 64, 1000]), min_size=1, max_size=50),
       max_line=st.sampled_from([40, 16384]))
def test_skimming_fast_path_changes_nothing(parts, sizes, max_line):
    def route(kind, host, port):
        return ("127.0.0.1", 4000 + port % 100)
    stream = b"".join(parts)
    fast = AddressRewriter(route, max_line=max_line)
    slow = _GeneralLoopOnly(route, max_line=max_line)
    pos, i = 0, 0
    while pos < len(stream):
        size = sizes[i % len(sizes)]
        chunk = stream[pos:pos + size]
        pos, i = pos + size, i + 1
        a, b = fast.feed(chunk), slow.feed(chunk)
        assert a[0] == b[0] and [repr(r) for r in a[1]] == [repr(r) for r in b[1]]
        assert (fast._mode, fast._need, bytes(fast._line), fast._offset, fast.version) == \
               (slow._mode, slow._need, bytes(slow._line), slow._offset, slow.version)
    assert fast.close() == slow.close()
