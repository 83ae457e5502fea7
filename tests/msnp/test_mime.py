"""analyzer/msnp/mime.py: the memo that lets the plugins share one parse holds small payloads only."""

from __future__ import annotations

import sys

from analyzer.msnp import mime


def test_small_payloads_are_parsed_once_and_large_ones_are_never_held():
    small = b"MIME-Version: 1.0\r\nContent-Type: text/x-msmsgscontrol\r\nTypingUser: memo@test\r\n\r\n"
    first = mime.parse_mime(small)
    assert mime.parse_mime(bytes(bytearray(small))) is first     # the plugins share one parse
    held, entries = mime._held, len(mime._memo)
    big = b"Content-Type: text/plain\r\n\r\n" + b"x" * (mime.MEMO_BYTES + 1)
    one, two = mime.parse_mime(big), mime.parse_mime(big)
    assert one is not two and one.body == two.body == b"x" * (mime.MEMO_BYTES + 1)
    # a payload above MEMO_BYTES never enters the memo
    assert big not in mime._memo and (mime._held, len(mime._memo)) == (held, entries)


def _typing(n: int) -> bytes:
    return b"MIME-Version: 1.0\r\nContent-Type: text/x-msmsgscontrol\r\nTypingUser: u%05d@test\r\n\r\n\r\n" % n


def test_a_payload_repeated_after_a_thousand_others_is_still_parsed_once():
    # A busy server interleaves thousands of conversations: the typing notification of one
    # comes back after those of a thousand others (a memo of 64 entries had forgotten it).
    first = [mime.parse_mime(_typing(n)) for n in range(1000)]
    again = [mime.parse_mime(_typing(n)) for n in range(1000)]
    assert all(a is b for a, b in zip(first, again))
    assert first[7].kind == "typing" and first[7].typing_user == "u00007@test"


def _forget() -> None:
    """Empty the memo (and its dict's table, which evictions do not shrink)."""
    with mime._memo_lock:
        mime._memo.clear()
        mime._held = 0


def _settled_memo():
    """The memo's own count of what it holds, checked against a recount of its entries."""
    assert mime._held == sum(mime._held_by(k, v) for k, v in mime._memo.items())
    assert mime._held <= mime.MEMO_HELD and len(mime._memo) <= mime.MEMO_ENTRIES
    return mime._held


def _hostile(n: int, shape: str) -> bytes:
    """Payloads of the largest size memoised, unique (n), each built to make its parse cost most."""
    size, tag = mime.MEMO_BYTES, b"%08d" % n
    if shape == "typing user":   # a TypingUser of bytes that are not UTF-8: two bytes a character
        head = b"MIME-Version: 1.0\r\nContent-Type: text/x-msmsgscontrol\r\nTypingUser: " + tag
        return head + b"\xff" * (size - len(head) - 4) + b"\r\n\r\n"
    if shape == "parameters":    # a Content-Type of thousands of parameters (not shared)
        head = b"Content-Type: text/plain" + tag
        return head + b";a=b" * ((size - len(head) - 4) // 4) + b"\r\n\r\n"
    if shape == "header lines":  # thousands of short lines (the header list, when asked for)
        head = b"Content-Type: text/x-msmsgsinvite\r\n" + tag
        return (head + b"\na:b" * ((size - len(head) - 4) // 4) + b"\r\n\r\n")[:size]
    return b"Content-Type: text/plain\r\n\r\n" + tag     # tiny: the count bound


def test_the_memo_holds_at_most_its_bound_on_a_run_of_unique_hostile_payloads():
    import gc
    import tracemalloc
    for shape, count in [("typing user", 100), ("parameters", 150), ("header lines", 150), ("tiny", 6000)]:
        payloads = [_hostile(n, shape) for n in range(count)]
        _forget()
        gc.collect()
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            for payload in payloads:
                msg = mime.parse_mime(payload)
                msg.kind, msg.typing_user, msg.headers, msg.header("Chunks"), msg.text()   # all it can grow by
                assert mime.parse_mime(payload) is msg
            del msg
            gc.collect()
            grown = tracemalloc.get_traced_memory()[0] - before
        finally:
            tracemalloc.stop()
        assert len(payloads[0]) <= mime.MEMO_BYTES and (shape == "tiny" or len(payloads[0]) > mime.MEMO_BYTES - 8)
        held = _settled_memo()
        assert held > mime.MEMO_HELD * mime._SWEPT_TO * 0.9 or len(mime._memo) > mime.MEMO_ENTRIES * 0.8, shape
        # What the memo's entries really hold (the payloads are the test's own: not counted
        # by tracemalloc, counted by the memo) stays within what it counts. (The dict's table
        # also keeps the size it had at the most entries ever held, at most MEMO_ENTRIES: the
        # memo starts empty here.)
        keys = sum(sys.getsizeof(k) for k in mime._memo)
        assert grown + keys <= held + 16 * 1024, (shape, grown, keys, held)


def test_the_count_of_what_the_memo_holds_stays_exact_with_threads_racing():
    import threading
    payloads = [_typing(n) for n in range(3000)] + [_hostile(n, "typing user") for n in range(40)]
    switch = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)   # switch threads as often as possible: races, if any, show

    def work(k: int) -> None:
        for i in range(20000):
            mime.parse_mime(bytes(bytearray(payloads[(i * 7 + k * 131) % len(payloads)])))
    try:
        threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
    finally:
        sys.setswitchinterval(switch)
    assert not any(t.is_alive() for t in threads)
    _settled_memo()


# The content type is the first header `parse_headers` names Content-Type (decoded, stripped,
# lower-cased); `_parse_mime` finds it without building the header list. Payloads mixing the
# spellings that could fool a byte-level shortcut: case, white space ASCII and not, CR alone,
# bytes that are not UTF-8, colons in values, several Content-Type lines.
_PIECES = [b"Content-Type", b"content-type", b"CONTENT-TYPE", b"Content-type ", b" content-Type", b"\x1cContent-Type",
           b"\xc2\x85Content-Type", b"Content\xe2\x80\x8b-Type", b"X-Content-Type", b"Content-Typo", b"\xff", b"\xc3",
           b":", b": ", b";", b"; charset=", b"\"", b"=", b"text/plain", b"TEXT/X-MSMSGSCONTROL", b"utf-8", b" ",
           b"\t", b"\r", b"\n", b"\r\n", b"\r\n\r\n", b"\n\n", b"TypingUser: a@b", b"\xe2\x80\x83", b"MIME-Version: 1.0", b"typingUSER", b"X-MMS-IM-Format",
           b"\xe2\x84\xaaind: x", b"Kind", b"MIME-Version: 1.0\r\nContent-Type:", b"MIME-Version: 1.0\r\nContent-Type: text/plain\r\n"]


def _reference(payload: bytes):
    """What the content type and its parameters are by definition: from the full header list."""
    msg = mime._parse_mime(payload)
    content_type, params = "", {}
    for key, value in mime.parse_headers(msg._head):
        if key.lower() == "content-type":
            parts = [p.strip() for p in value.split(";")]
            content_type = parts[0].lower()
            for p in parts[1:]:
                k, _, v = p.partition("=")
                if k:
                    params[k.strip().lower()] = v.strip().strip('"')
            break
    return content_type, params


def test_the_content_type_is_the_first_content_type_header_of_the_header_list():
    from hypothesis import given, settings, strategies as st

    @settings(max_examples=3000, deadline=None, database=None)
    @given(st.lists(st.sampled_from(_PIECES) | st.binary(max_size=3), max_size=24))
    def check(pieces):
        payload = b"".join(pieces)
        msg = mime._parse_mime(payload)
        assert (msg.content_type, msg.params) == _reference(payload)
        for name in ("TypingUser", "typinguser", "Content-Type", "X-MMS-IM-Format", "", "MIME-Version", "Kind"):
            fast = mime._parse_mime(payload).header(name)     # before the header list exists
            listed = [v for k, v in mime.parse_headers(msg._head) if k.lower() == name.lower()]
            assert fast == (listed[0] if listed else None), name
        cut, size = payload.find(b"\r\n\r\n"), 4     # the blank line: the first of either spelling
        lf = payload.find(b"\n\n")
        if lf != -1 and (cut == -1 or lf < cut):
            cut, size = lf, 2
        assert (msg._head, msg.body, msg.separated) == ((payload, b"", False) if cut == -1
                                                        else (payload[:cut], payload[cut + size:], True))
        listed = [v for k, v in mime.parse_headers(msg._head) if k.lower() == "typinguser"]
        assert mime._parse_mime(payload).typing_user == (listed[0] if listed else None)
        assert msg.headers == mime.parse_headers(msg._head)

    check()


def test_the_blank_line_is_the_first_of_either_spelling():
    for payload, head, body in [(b"a: b\r\n\r\nc\n\nd", b"a: b", b"c\n\nd"),
                                (b"a: b\n\nc\r\n\r\nd", b"a: b", b"c\r\n\r\nd"),
                                (b"a: b\r\n\n\r\nc", b"a: b\r", b"\r\nc"),   # LF LF inside CR LF CR LF
                                (b"a\n\r\n\r\nb", b"a\n", b"b"),
                                (b"a: b\r\n\r\n", b"a: b", b""), (b"a: b\n\n", b"a: b", b""),
                                (b"\n\n\r\n\r\n", b"", b"\r\n\r\n")]:
        msg = mime._parse_mime(payload)
        assert (msg._head, msg.body, msg.separated) == (head, body, True), payload


def test_a_parsed_message_classifies_and_reads_its_headers_lazily():
    msg = mime._parse_mime(b"MIME-Version: 1.0\r\ncontent-TYPE : Text/X-MsMsgsControl ; charset=\"UTF-8\"\r\n"
                           b"TypingUser: who@test\r\n\r\nbody")
    assert msg._headers is None                      # nothing but the content type read yet
    assert (msg.content_type, msg.params, msg.body) == ("text/x-msmsgscontrol", {"charset": "UTF-8"}, b"body")
    assert msg.kind == "typing" and msg.typing_user == "who@test"
    assert msg.headers[0] == ("MIME-Version", "1.0") and msg.header("typinguser") == "who@test"
    nameless = mime._parse_mime(b"Content-Type: text/x-msmsgscontrol\r\n\r\n")
    assert nameless.kind == "control" and nameless.typing_user is None
    assert mime._parse_mime(b"no blank line").kind == "malformed"
    assert mime._parse_mime(b"X: y\r\n\r\n").kind == "other"
    assert mime._parse_mime(b"a: b\r\n\r\n") == mime._parse_mime(b"a: b\n\n")
