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
        command("MSG", [b"A", b"30"], trid=6, payload=b"MIME-Version: 1.0\r\nAuthCookie: 1234\r\n\r\npwd=x"),  # a password
        command("JOI", ["nämé@example.com".encode(), b"N%C3%A4m%C3%A9"], direction=S2C),
        command("QNG", [b"50"], ts=1e-5, direction=S2C),                                    # 1e-05 in Python
        late,
        Skipped(S2C, b"\x00garbage\r\n", 12, 0.0),
        Anomaly("msnp.line.garbage", "b'USR 3 MD5 S x'", C2S, 0, 1.0),
        {"kind": "login", "handle": "a@b.c", "took": 1.5e-7},                               # a plugin's record
        {"kind": "note", "stream": "other", "v": "\ud800"},                                 # a lone surrogate
        command("CHG", [b"NLN"], trid=2 ** 70),                                             # past 64 bits
        command("RNG", [b"1.2.3.4:1863", b"CKI", b"17262740.1050826919.32308"], trid=None, direction=S2C),
        command("MSG", [b"A", b"30"], trid=8, payload=b"MIME-Version: 1.0\r\nAuthCookie: 1234\r\n\r\n"),  # a header
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
        # Secret parameters and secret header lines are masked by the core too (the redactor's
        # table and key).
        assert events[1] in own and events[3] in own and events[13] in own and events[14] in own
        # A payload a free-text rule the core does not copy may change (a password) is the redactor's.
        assert events[4] not in own if redact and payloads else events[4] in own
        assert events[6] not in own and events[7] not in own and events[9] not in own


def test_the_lines_come_in_batch_order_around_the_declined_ones():
    events = mixed()
    writer = JsonLinesWriter(io.StringIO(), Redactor(True, key=b"test"))
    marks = iter(range(100))
    data = writer._formatter.lines("1", events, lambda conn, event: b"<%d>\n" % next(marks), None)
    lines = data.decode().splitlines()
    assert [line for line in lines if line.startswith("<")] == [f"<{i}>" for i in range(len(events) - 8)]
    assert lines[0].startswith('{"kind":"command"') and lines[1].startswith('{"kind":"command"')
    assert lines[2].startswith('{"kind":"transaction"') and lines[3].startswith('{"kind":"command"')
    assert lines[4] == "<0>"
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


# -- the `stream` record ------------------------------------------------------------------------

from collections import Counter  # noqa: E402

from hypothesis import given, settings, strategies as st  # noqa: E402

from analyzer.outputs.jsonl import encode, stream_record  # noqa: E402


class Tracker:
    def __init__(self, gave_up) -> None:
        self.gave_up = gave_up


class StreamConn:
    """What `stream_record` reads of a Connection, set freely."""

    def __init__(self, **fields) -> None:
        self.__dict__.update(fields)
        self.bytes = {"c2s": fields.pop("c2s"), "s2c": fields.pop("s2c")}

    @property
    def command_total(self) -> int:   # as Connection's, from the counts drawn
        return sum(self.commands.values())

    def outcome_counts(self):
        return iter(self.outcomes.items())


texts = st.one_of(st.none(), st.sampled_from(["127.0.0.1:1863", "SB", "NS", "MSNP11", "MSNP2-7", "a@b.c", "nämé ☃",
                                              "x\u2028y\x85", "q\"\\\n", "\udc80"]), st.text(max_size=6))
times = st.one_of(st.none(), st.just(0.0), st.floats(), st.floats(1e9, 2e9), st.integers(0, 2 ** 40).map(lambda n: n / 1e6),
                  st.integers(-3, 2 ** 66))
counts = st.dictionaries(st.one_of(st.sampled_from(["answered", "error", "timeout", "no_reply_expected", "tcp.gap"]),
                                   st.text(max_size=4)), st.integers(0, 2 ** 63 - 1), max_size=4)


@st.composite
def stream_conns(draw) -> StreamConn:
    return StreamConn(id=draw(st.one_of(st.sampled_from(["1", "2:7"]), texts)), client=draw(texts), server=draw(texts),
                      role=draw(texts), version_label=draw(texts), handle=draw(texts), first_ts=draw(times),
                      last_ts=draw(times), c2s=draw(st.integers(0, 2 ** 64)), s2c=draw(st.integers(0, 2 ** 40)),
                      commands=Counter(draw(st.dictionaries(st.sampled_from(["MSG", "USR", "CHG", "ß"]),
                                                            st.integers(0, 2 ** 62), max_size=3))),
                      outcomes=Counter(draw(counts)), anomalies=Counter(draw(counts)),
                      legs=draw(st.sampled_from([None, [], [{"leg": "client", "ts": 1.5}]])),
                      tracker=draw(st.sampled_from([None, Tracker(0), Tracker(3)])))


@settings(max_examples=400, deadline=None)
@given(stream_conns())
def test_the_stream_line_is_the_python_writer_s(conn):
    writer = JsonLinesWriter(io.StringIO(), Redactor(True, key=b"test"))
    line = writer._formatter.stream_line(conn)
    want = (encode(stream_record(conn)) + "\n").encode()
    if line is not None:
        assert line == want
    plain = all(t is None or type(t) is float and (t == 0.0 or 1e-4 <= abs(t) < 1e16) for t in (conn.first_ts, conn.last_ts))
    utf8 = all(type(v) is not str or v.encode("utf-8", "surrogatepass") == v.encode("utf-8", "ignore")
               for v in (conn.id, conn.client, conn.server, conn.role, conn.version_label, conn.handle,
                         *conn.outcomes, *conn.anomalies))
    if plain and utf8 and not conn.legs and conn.bytes["c2s"] < 2 ** 64:
        assert line is not None   # the core writes the common records itself
    for compiled in (True, False):   # through the writer, to a text stream
        out = io.StringIO()
        writer = JsonLinesWriter(out, Redactor(True, key=b"test"))
        if not compiled:
            writer._compiled = None
        writer.stream(conn)
        assert out.getvalue().encode() == want


def test_the_stream_lines_of_a_real_capture_are_the_core_s_and_the_python_writer_s(tmp_path):
    from analyzer.analysis.run import Analysis
    from analyzer.capture.files import feed_capture
    from pathlib import Path
    written = {}
    for compiled in (True, False):
        path = tmp_path / f"{compiled}.jsonl"
        out = open_output(str(path))
        writer = JsonLinesWriter(out, Redactor(True, key=b"test"))
        if not compiled:
            writer._compiled = None
        else:
            stream_line = writer._formatter.stream_line
            made = []

            class Spy:
                def stream_line(self, conn):
                    made.append(stream_line(conn))
                    return made[-1]
            writer._formatter = Spy()
        analysis = Analysis([writer])
        feed_capture(analysis, str(Path(__file__).resolve().parents[3] / "shared" / "captures-real" / "ndpi_msnms.pcap"))
        analysis.finish()
        out.close()
        written[compiled] = path.read_bytes()
    assert written[True] == written[False]
    assert made and all(line is not None for line in made)
    assert sum(b'"kind":"stream"' in line for line in written[True].splitlines()) == len(made)


def test_times_and_latencies_are_written_as_repr_writes_them_in_bulk():
    """The core writes plain-range floats by the fewest decimals that read back (a proof in
    core/src/jsonl.rs, `push_float_fixed`) or by Rust's shortest digits: repr's text either way,
    checked here on many pcap-like times, latencies and arbitrary doubles."""
    import random
    import struct
    rng = random.Random(18)
    values = [1115371249.437368, 1732950000.000001, 62.632, 0.0001, 9999999999999998.0, 0.30000000000000004]
    for _ in range(6000):
        values.append(rng.randrange(10 ** 9, 2 * 10 ** 9) + rng.randrange(10 ** 6) / 1e6)   # pcap times
        values.append(rng.randrange(10 ** 8) / 1e3)                                         # latencies, ms
        values.append(struct.unpack("<d", rng.randbytes(8))[0])                             # any double
        values.append(rng.random() * 10 ** rng.randrange(-4, 16))
    formatter = JsonLinesWriter(io.StringIO(), Redactor(True, key=b"test"))._formatter
    events = [Skipped(C2S, b"", 0, value) for value in values]
    lines = formatter.lines("1", events, lambda conn, event: b"-\n", None).decode().splitlines()
    for value, line in zip(values, lines, strict=True):
        if value == value and (value == 0.0 or 1e-4 <= abs(value) < 1e16):
            assert f'"ts":{value!r},' in line, value
        else:
            assert line == "-"


def test_a_text_stream_in_another_encoding_gets_the_same_records_with_escapes():
    """`--json -` on a stdout that is not UTF-8 (PYTHONIOENCODING=ascii): a batch the stream
    cannot take goes event by event, and each line it cannot take is written with JSON
    escapes: the same records, no traceback."""
    import json
    raw = io.BytesIO()
    out = io.TextIOWrapper(raw, encoding="ascii", newline="")
    writer = JsonLinesWriter(out, Redactor(True, key=b"test"))
    events = mixed()
    writer.event_batch(Conn("1"), events)
    conn = StreamConn(id="1", client=None, server=None, role="SB", version_label=None, handle="nämé ☃", first_ts=1.5,
                      last_ts=2.5, c2s=1, s2c=2, commands=Counter(), outcomes=Counter(), anomalies=Counter(),
                      legs=None, tracker=None)
    writer.stream(conn)
    out.flush()
    got = [json.loads(line) for line in raw.getvalue().decode("ascii").splitlines()]
    want = [json.loads(line) for line in python_lines(events, "1", True, True).decode().splitlines()]
    assert got == want + [json.loads(encode(stream_record(conn)))]
