"""`JsonFormatter.lines`: a feed's whole batch of JSON lines in one call into the compiled core.

The formatter writes the lines it formats into one UTF-8 buffer and calls the Python writer
back (`declined(context, event)`) for each record it leaves to Python, in its place. The
Python writer stays the rule: the bytes of a batch equal the Python writer's lines for the
same events, joined, whatever the redaction and payload settings, for binary and text outputs.
"""

from __future__ import annotations

import io

import pytest

from analyzer.analysis.redact import Redactor
from analyzer.msnp import C2S, S2C, Anomaly, Command, Skipped
from analyzer.msnp.pairing import Transaction
from analyzer.outputs.atomic import open_output
from analyzer.outputs.jsonl import JsonLinesWriter

pytestmark = pytest.mark.usefixtures("compiled_core")

CHAT = b"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=UTF-8\r\n\r\n"


class Conn:
    def __init__(self, stream) -> None:
        self.id = stream


def command(code: str, args: list[bytes], trid=None, payload: bytes | None = None, ts=1115371249.437368,
            direction=C2S) -> Command:
    if trid is not None:
        args = [str(trid).encode()] + args
    return Command(direction, code, trid, args, b"%s\r\n" % code.encode(), payload,
                   None if payload is None else len(payload), 40, ts)


def mixed() -> list:
    """A batch whose records the core formats, interleaved with records it leaves to Python."""
    req = command("CHG", [b"NLN", b"0"], trid=7)
    txn = Transaction(req, 1)
    txn.replies.append(command("CHG", [b"NLN", b"0"], trid=7, ts=1115371249.5, direction=S2C))
    txn.outcome, txn.latency_ms = "answered", 62.632
    late = Transaction(command("PNG", [], ts=2e16), 2)   # a time past orjson's plain range
    late.latency_ms = 1e-7
    return [
        command("MSG", [b"A", b"5"], trid=3, payload=CHAT + "héllo ☃ \u2028".encode() + b"\xff"),
        command("USR", [b"MD5", b"S", b"0123456789abcdef"], trid=4),                       # a secret
        txn,
        command("usr", [b"TWN", b"S", b"t=ticket&p=profile"], trid=5),                     # lower-case secret
        command("MSG", [b"A", b"30"], trid=6, payload=b"MIME-Version: 1.0\r\nAuthCookie: 1234\r\n\r\n"),
        command("JOI", ["nämé@example.com".encode(), b"N%C3%A4m%C3%A9"], direction=S2C),
        command("QNG", [b"50"], ts=1e-5, direction=S2C),                                    # 1e-05 in Python
        late,
        Skipped(S2C, b"\x00garbage\r\n", 12, 0.0),
        Anomaly("msnp.line.garbage", "b'USR 3 MD5 S x'", C2S, 0, 1.0),
        {"kind": "login", "handle": "a@b.c", "took": 1.5e-7},                               # a plugin's record
        {"kind": "note", "stream": "other", "v": "\ud800"},                                 # a lone surrogate
        command("CHG", [b"NLN"], trid=2 ** 70),                                             # past 64 bits
        command("RNG", [b"1.2.3.4:1863", b"CKI", b"17262740.1050826919.32308"], trid=None, direction=S2C),
    ]


def python_lines(events, stream, redact: bool, payloads: bool) -> bytes:
    """The Python writer's lines for `events`, one at a time: the rule."""
    writer = JsonLinesWriter(io.StringIO(), Redactor(redact, key=b"test"), payloads=payloads)
    writer._compiled = None
    conn = Conn(stream)
    return b"".join(line for event in events if (line := writer._line_of(conn, event)) is not None)


@pytest.mark.parametrize("redact", [True, False])
@pytest.mark.parametrize("payloads", [True, False])
@pytest.mark.parametrize("stream", ["1", "2:7", "s\u2028é", None, "\udc80"])
def test_a_mixed_batch_is_the_python_writer_s_lines_byte_for_byte(redact, payloads, stream):
    events = mixed()
    writer = JsonLinesWriter(io.StringIO(), Redactor(redact, key=b"test"), payloads=payloads)
    conn = Conn(stream)
    asked = []

    def declined(context, event):
        assert context is conn
        asked.append(event)
        return writer._line_of(context, event)

    data = writer._formatter.lines(stream, events, declined, conn)
    assert type(data) is bytes
    assert data == python_lines(events, stream, redact, payloads)
    assert len(data.splitlines()) == len(events)
    # The core formats the common records itself (the equality is not won by declining all),
    # and asks Python for the others, each once, in batch order.
    own = [e for e in events if writer._formatter.line(stream, e) is not None]
    assert asked == [e for e in events if all(e is not o for o in own)]
    if stream == "\udc80":
        assert own == []   # a stream id that is not UTF-8: every record is Python's (cleaned)
    else:
        assert events[0] in own and events[2] in own and events[5] in own
        assert events[1] not in own if redact else events[1] in own
        assert events[6] not in own and events[7] not in own and events[9] not in own


def test_the_lines_come_in_batch_order_around_the_declined_ones():
    events = mixed()
    writer = JsonLinesWriter(io.StringIO(), Redactor(True, key=b"test"))
    marks = iter(range(100))
    data = writer._formatter.lines("1", events, lambda conn, event: b"<%d>\n" % next(marks), None)
    lines = data.decode().splitlines()
    assert [line for line in lines if line.startswith("<")] == [f"<{i}>" for i in range(len(events) - 4)]
    assert lines[0].startswith('{"kind":"command"') and lines[1] == "<0>" and lines[2].startswith('{"kind":"transaction"')
    assert lines[5].startswith('{"kind":"command","stream":"1","dir":"s2c"') and '"JOI"' in lines[5]


def test_a_declined_record_without_a_line_leaves_no_line_and_anything_iterable_is_a_batch():
    events = mixed()
    writer = JsonLinesWriter(io.StringIO(), Redactor(True, key=b"test"))
    lines = writer._formatter.lines
    only_core = lines("1", tuple(events), lambda conn, event: None, None)
    assert only_core == b"".join(writer._formatter.line("1", e).encode() for e in events
                                 if writer._formatter.line("1", e) is not None)
    assert lines("1", iter(events), writer._line_of, Conn("1")) == python_lines(events, "1", True, True)
    assert lines("1", [], writer._line_of, None) == b""


@pytest.mark.parametrize("bad", ["a str", 3, bytearray(b"x\n"), b"\xff\n"])
def test_a_declined_line_that_is_not_utf8_bytes_is_an_error_not_a_wrong_line(bad):
    writer = JsonLinesWriter(io.StringIO(), Redactor(True, key=b"test"))
    with pytest.raises((TypeError, ValueError)):
        writer._formatter.lines("1", mixed(), lambda conn, event: bad, None)


def test_an_error_in_the_python_writer_reaches_the_caller():
    writer = JsonLinesWriter(io.StringIO(), Redactor(True, key=b"test"))

    def declined(conn, event):
        raise RuntimeError("boom")
    with pytest.raises(RuntimeError, match="boom"):
        writer._formatter.lines("1", mixed(), declined, None)


@pytest.mark.parametrize("redact", [True, False])
def test_the_writer_writes_a_batch_as_the_python_writer_does_to_files_and_text_streams(tmp_path, redact):
    """`event_batch` and `event` through the formatter: the same bytes to a run's file (its
    binary layer) and to a text stream as the Python writer's, batch by batch or one by one."""
    events = mixed()
    want = python_lines(events, "1", redact, True) * 3
    for compiled in (True, False):
        path = tmp_path / f"run-{compiled}.jsonl"
        file, text = open_output(str(path)), io.StringIO()
        writers = [JsonLinesWriter(file, Redactor(redact, key=b"test")), JsonLinesWriter(text, Redactor(redact, key=b"test"))]
        assert writers[0]._binary is not None and writers[1]._binary is None
        for writer in writers:
            if not compiled:
                writer._compiled = None
            writer.event_batch(Conn("1"), events)
            writer.event_batch(Conn("1"), events[:1])
            writer.event_batch(Conn("1"), events[1:])
            for event in events:
                writer.event(Conn("1"), event)
            writer.event_batch(Conn("1"), [])
        file.close()
        assert path.read_bytes() == want
        assert text.getvalue().encode() == want
