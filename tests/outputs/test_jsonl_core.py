"""The compiled core's JSON Lines formatter (`analyzer._core.JsonFormatter`) against the
Python writer, which stays the rule: `JsonLinesWriter` with the formatter writes exactly
what it writes without it, for any command, transaction, skipped run and anomaly, whatever
the redaction and payload settings. The formatter leaves to Python what it does not format
(secrets to mask, floats past the plain range, ints past 64 bits), and the tests also say
that it does format the common records (so the equality is not won by always declining).
"""

from __future__ import annotations

import io

import pytest
from hypothesis import given, settings, strategies as st

from analyzer.analysis.redact import Redactor
from analyzer.msnp import C2S, S2C, Anomaly, Command, Skipped
from analyzer.msnp.pairing import Transaction
from analyzer.outputs.jsonl import JsonLinesWriter

CHAT = b"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=UTF-8\r\nX-MMS-IM-Format: FN=Arial\r\n\r\n"


pytestmark = pytest.mark.usefixtures("compiled_core")


class Conn:
    def __init__(self, stream: str) -> None:
        self.id = stream


def written(events, *, compiled: bool, redact: bool = True, payloads: bool = True) -> str:
    out = io.StringIO()
    writer = JsonLinesWriter(out, Redactor(redact, key=b"test"), payloads=payloads)
    if compiled:
        assert writer._compiled is not None
    else:
        writer._compiled = None
    for conn, event in events:
        writer.event(conn, event)
    return out.getvalue()


def formatter(redact: bool = True, payloads: bool = True):
    return JsonLinesWriter(io.StringIO(), Redactor(redact, key=b"test"), payloads=payloads)._formatter.line


# -- the records the formatter writes, and those it leaves to Python ----------------------

def msg(payload: bytes, ts=1115371249.437368, code="MSG", direction=S2C) -> Command:
    line = b"%s 5 A %d\r\n" % (code.encode(), len(payload))
    return Command(direction, code, 5, [b"5", b"A", str(len(payload)).encode()], line, payload, len(payload), 100, ts)


def test_common_records_are_formatted_by_the_core_as_python_writes_them():
    req = Command(C2S, "CHG", 7, [b"7", b"NLN", b"0"], b"CHG 7 NLN 0\r\n", None, None, 0, 1.5)
    rep = Command(S2C, "CHG", 7, [b"7", b"NLN", b"0"], b"CHG 7 NLN 0\r\n", None, None, 0, 1.75)
    txn = Transaction(req, 1)
    txn.replies.append(rep)
    txn.outcome, txn.latency_ms = "answered", 250.0
    events = [(Conn("1"), msg(CHAT + "héllo \"you\"\t\\ \x01".encode() + b"\xff")), (Conn("1"), txn),
              (Conn("2"), Skipped(C2S, b"\x00garbage\r\n", 12, None)), (None, req)]
    fmt = formatter()
    for conn, event in events:
        assert fmt(conn.id if conn else None, event) is not None
    assert written(events, compiled=True) == written(events, compiled=False)
    assert '"payload":"MIME-Version' in written(events, compiled=True)


@pytest.mark.parametrize("event", [
    Command(C2S, "USR", 3, [b"3", b"MD5", b"S", b"0123456789abcdef"], b"USR 3 MD5 S 0123456789abcdef\r\n",
            None, None, 0, 1.0),
    Command(C2S, "usr", None, [b"3", b"MD5", b"S", b"0123"], b"usr 3 MD5 S 0123\r\n", None, None, 0, 1.0),
    msg(b"MIME-Version: 1.0\r\nContent-Type: text/x-msmsgsinvite\r\n\r\nAuthCookie: 1234\r\n"),
    msg(b"MIME-Version: 1.0\r\nContent-Type: text/plain\r\nSID: 1\r\n\r\nhi"),
    msg(b"https://login/?t=secret&p=other"),
    msg(b"x", ts=1e16),
    msg(b"x", ts=float("nan")),
    Command(C2S, "CHG", 2 ** 70, [str(2 ** 70).encode(), b"NLN"], b"CHG ...\r\n", None, None, 0, 1.0),
    Anomaly("msnp.line.garbage", "b'USR 3 MD5 S x'", C2S, 0, 1.0),
], ids=["secret-params", "secret-lower-case", "mime-secret", "chat-head-secret", "ticket", "big-float", "nan",
        "big-trid", "anomaly"])
def test_what_may_need_python_is_left_to_python(event):
    assert formatter()("1", event) is None
    assert written([(Conn("1"), event)], compiled=True) == written([(Conn("1"), event)], compiled=False)


def test_without_redaction_secret_commands_are_the_cores():
    event = Command(C2S, "USR", 3, [b"3", b"MD5", b"S", b"abc"], b"USR 3 MD5 S abc\r\n", None, None, 0, 1.0)
    assert formatter(redact=False)("1", event) is not None
    assert '"abc"' in written([(Conn("1"), event)], compiled=True, redact=False)


# -- any record: hypothesis -------------------------------------------------------------------

SECRETISH = [b"SID: 1", b"  authcookie :x", b"Nonce:\t{x}", b"kv: 3", b"MSPAuth: t", b"X-Y: z", b"charset=UTF-8",
             b"t=1", b"p=2", b"pwd=3", b"Passwd=4", b"<Password>x</Password>", b"<BinarySecret>y</BinarySecret>",
             b"from-PP='t=1&p=2'", b"<ml/>", b"=", b"\xff\xfe", "é".encode()]

tokens = st.one_of(st.binary(max_size=10), st.sampled_from([b"MD5", b"S", b"I", b"SB", b"CKI", b"OK", b"TWN", b"SSO",
                                                            b"12345.678", b"a@b.c", b"127.0.0.1:1863"]))
times = st.one_of(st.none(), st.floats(), st.floats(0, 2e9), st.integers(-2 ** 70, 2 ** 70),
                  st.integers(0, 2 ** 40).map(lambda n: n / 1024), st.integers(0, 2 ** 30).map(lambda n: n / 1000))
ints = st.one_of(st.none(), st.integers(0, 2 ** 70), st.integers(-5, 70000))
payloads = st.one_of(
    st.none(), st.binary(max_size=60),
    st.tuples(st.sampled_from([b"", CHAT[:45], b"MIME-Version: 1.0\r\nContent-Type: text/x-msmsgscontrol"]),
              st.lists(st.sampled_from(SECRETISH), max_size=5), st.booleans(), st.binary(max_size=20))
    .map(lambda t: t[0] + b"\r\n".join(t[1]) + (b"\r\n\r\n" if t[2] else b"\n") + t[3]))
codes = st.one_of(st.sampled_from(["MSG", "USR", "usr", "XFR", "RNG", "ANS", "QRY", "CHG", "ILN", "PNG", "QNG", "ADL",
                                   "Usr", "ß"]), st.text(max_size=4))


@st.composite
def commands(draw) -> Command:
    trid = draw(ints)
    args = draw(st.lists(tokens, max_size=7))
    if trid is not None:
        args = [str(trid).encode()] + args
    payload = draw(payloads)
    return Command(draw(st.sampled_from([C2S, S2C])), draw(codes), trid, args, b"line\r\n", payload,
                   draw(ints) if payload is not None else None, draw(st.integers(0, 2 ** 65)), draw(times))


@st.composite
def transactions(draw) -> Transaction:
    txn = Transaction(draw(commands()), 1)
    txn.replies.extend(draw(st.lists(commands(), max_size=3)))
    txn.outcome = draw(st.sampled_from([None, "answered", "error", "timeout", "unanswered"]))
    txn.error = draw(st.one_of(st.none(), st.text(max_size=8)))
    txn.latency_ms = draw(times)
    txn.more_replies = draw(st.sampled_from([0, 0, 3]))
    return txn


skipped = st.builds(Skipped, st.sampled_from([C2S, S2C]), st.binary(max_size=20), st.integers(0, 2 ** 64), times)
anomalies = st.builds(Anomaly, st.sampled_from(["msnp.line.garbage", "tcp.gap"]), st.text(max_size=20),
                      st.sampled_from([C2S, S2C, None]), ints, times)
streams = st.one_of(st.none(), st.sampled_from(["1", "2:7"]), st.text(max_size=6))


@settings(max_examples=400, deadline=None)
@given(st.lists(st.tuples(streams, st.one_of(commands(), transactions(), skipped, anomalies)), min_size=1, max_size=8),
       st.booleans(), st.booleans())
def test_any_records_are_written_alike(events, redact, payloads):
    events = [(Conn(s) if s is not None else None, e) for s, e in events]
    assert written(events, compiled=True, redact=redact, payloads=payloads) == \
        written(events, compiled=False, redact=redact, payloads=payloads)


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.floats(allow_nan=False, allow_infinity=False), st.floats(1e-4, 1e16),
                 st.integers(0, 2 ** 53).map(lambda n: n / 8), st.integers(0, 2 ** 53).map(lambda n: n / 1e6)))
def test_floats_are_written_as_repr_writes_them(value):
    line = formatter()("1", Skipped(C2S, b"", 0, value))
    if value == 0.0 or 1e-4 <= abs(value) < 1e16:
        assert line is not None and f'"ts":{value!r},' in line
    else:
        assert line is None


def test_line_separators_from_the_wire_are_escaped_as_python_escapes_them():
    """U+2028, U+2029 and U+0085 (which str.splitlines splits on) in a parameter, a payload
    and a stream id: the formatter writes the escapes the Python writer writes."""
    breaks = "\u2028\u2029\x85".encode()
    cmd = Command(S2C, "JOI", None, [b"a" + breaks + b"@example.com", b"A" + breaks], b"JOI\r\n", None, None, 0, 2.5)
    events = [(Conn("s" + breaks.decode()), msg(b"hi " + breaks + b" \xe2\x80 \xc2")), (Conn("1"), cmd)]
    assert formatter()(None, cmd) is not None   # formatted by the core, not declined
    fast, slow = written(events, compiled=True), written(events, compiled=False)
    assert fast == slow
    assert len(fast.splitlines()) == 2 and "\u2028" not in fast and "\\u2028" in fast


def _written_by(stream, events, batch: bool, compiled: bool = True) -> bytes:
    raw = io.BytesIO()
    out = io.TextIOWrapper(raw, encoding="utf-8", newline="")   # strict: a lone surrogate cannot be written
    writer = JsonLinesWriter(out, Redactor(True, key=b"test"))
    assert writer._compiled is not None
    if not compiled:
        writer._compiled = None
    conn = Conn(stream) if stream is not None else None
    if batch:
        writer.event_batch(conn, events)
    else:
        for event in events:
            writer.event(conn, event)
    out.flush()
    return raw.getvalue()


@settings(max_examples=300, deadline=None)
@given(st.one_of(streams, st.just("\udc80")),
       st.lists(st.one_of(commands(), transactions(), skipped, anomalies, st.just({"kind": "login", "n": 1.5e-7})),
                min_size=1, max_size=6), st.booleans())
def test_a_feed_s_batch_is_written_as_its_events_one_by_one(stream, events, compiled):
    """`event_batch` writes the lines of a batch in one piece: the same bytes as event by event
    (and, for the core's lines, as the Python writer's), also when a record is Python's (a
    secret) or the output cannot take a line (a lone surrogate in the stream id: written
    cleaned, as `event` writes it)."""
    batched = _written_by(stream, events, batch=True, compiled=compiled)
    assert batched == _written_by(stream, events, batch=False, compiled=compiled)
    assert batched == _written_by(stream, events, batch=True, compiled=not compiled)


def test_a_batch_with_a_line_the_output_cannot_take_is_written_cleaned():
    cmd = Command(S2C, "PNG", None, [], b"PNG\r\n", None, None, 0, 1.5)
    written = _written_by("\udc80", [cmd, cmd], batch=True).decode().splitlines()
    assert len(written) == 2 and all('"stream":"\\\\x80"' in line for line in written)   # cleaned
