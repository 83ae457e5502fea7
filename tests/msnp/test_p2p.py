"""msnp/p2p.py: both binary header versions, MSNSLP, MSNObject and the file-transfer context."""

import hashlib

from analyzer.msnp.p2p import file_context, msnobject, parse_p2p, parse_slp
from captures import transfers


def test_version_1_and_version_2_headers():
    m = parse_p2p(transfers.p2p_msg(transfers.v1(9, 3, 100, 300, b"abc", flags=0x1000030, footer=2), "bob@example.com"))
    assert (m.version, m.session_id, m.offset, m.total_size, m.data, m.footer, m.problem) == \
        (1, 9, 100, 300, b"abc", 2, None)
    m = parse_p2p(transfers.p2p_msg(transfers.v2(77, 5, b"hello", 10, True), "bob@example.com;{g}"))
    assert (m.version, m.session_id, m.data, m.remaining, m.first, m.footer, m.problem) == \
        (2, 77, b"hello", 10, True, 12, None)
    m = parse_p2p(transfers.p2p_msg(transfers.v2(77, 6, b"world", 0, False), "bob@example.com;{g}"))
    assert (m.remaining, m.first) == (0, False)
    prep = parse_p2p(transfers.p2p_msg(transfers.v2(77, 6, b"\0\0\0\0", 0, True, tf=0), "b;{g}"))
    assert prep.is_data_preparation()


def test_lying_version_2_sizes_are_problems_not_crashes():
    body = transfers.v2(77, 5, b"hello", 10, True)
    for cut in range(len(body)):
        m = parse_p2p(transfers.p2p_msg(body[:cut], "bob@example.com;{g}"))
        assert m.problem is not None or m.version == 2
    bad = bytearray(body)
    bad[0] = 200   # header length beyond the message
    assert "outside" in parse_p2p(transfers.p2p_msg(bytes(bad), "bob@example.com;{g}")).problem


def test_slp_msnobject_and_file_context():
    invite = parse_slp(transfers.slp("INVITE MSNMSGR:bob@example.com MSNSLP/1.0", "{C}", "SessionID: 5\r\n\r\n"))
    assert invite.call_id == "{C}" and invite.session_id == 5
    obj = msnobject(transfers.msnobj("bob@example.com", b"picture"))
    assert obj.sha1d == hashlib.sha1(b"picture").digest() and obj.size == 7 and obj.kind == "display picture"
    ctx = file_context(transfers.ft_context("..\\..\\evil.exe", 1234))
    assert (ctx.name, ctx.size) == ("..\\..\\evil.exe", 1234)   # as sent: the store makes it safe
    assert file_context("!!") is None and msnobject("no object") is None
