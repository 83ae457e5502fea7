"""analyzer/msnp/mime.py: the memo that lets the plugins share one parse holds small payloads only."""

from __future__ import annotations

from analyzer.msnp import mime


def test_small_payloads_are_parsed_once_and_large_ones_are_never_held():
    small = b"MIME-Version: 1.0\r\nContent-Type: text/x-msmsgscontrol\r\nTypingUser: memo@test\r\n\r\n"
    first = mime.parse_mime(small)
    assert mime.parse_mime(bytes(small)) is first          # the plugins share one parse
    before = mime._parse_small.cache_info()
    big = b"Content-Type: text/plain\r\n\r\n" + b"x" * (mime.MEMO_BYTES + 1)
    one, two = mime.parse_mime(big), mime.parse_mime(big)
    assert one is not two and one.body == two.body == b"x" * (mime.MEMO_BYTES + 1)
    after = mime._parse_small.cache_info()
    # a payload above MEMO_BYTES neither hits nor enters the memo: at most 64 small ones are held
    assert (after.hits, after.misses, after.currsize) == (before.hits, before.misses, before.currsize)
    assert mime._parse_small.cache_info().maxsize * mime.MEMO_BYTES <= 1 << 20
