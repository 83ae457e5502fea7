"""analyzer/outputs/jsonl.py: the orjson path writes exactly what the generic encoder (`json`) writes."""

import io
import json
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from analyzer.analysis.run import Analysis
from analyzer.msnp import C2S, S2C, Command
from analyzer.capture.files import feed_capture
from analyzer.outputs.jsonl import JsonLinesWriter, encode, reference
from analyzer.analysis.redact import Redactor

ROOT = Path(__file__).resolve().parents[2]
REAL = ROOT.parent / "shared" / "captures-real"


class Both:
    """A sink that writes every record both ways and keeps the pairs."""

    def __init__(self):
        self.writer = JsonLinesWriter(io.StringIO(), Redactor(key=b"k" * 16))
        self.pairs = []

    def event(self, conn, event):
        record = self.writer.record(conn, event)
        if record is not None:
            generic = reference(record)
            self.writer.out = io.StringIO()
            self.writer.event(conn, event)
            self.pairs.append((self.writer.out.getvalue(), generic + "\n"))

    def stream(self, conn):
        self.writer.out = io.StringIO()
        self.writer.stream(conn)
        from analyzer.outputs.jsonl import stream_record
        self.pairs.append((self.writer.out.getvalue(), reference(stream_record(conn)) + "\n"))

    def close(self):
        pass


def test_fast_path_equals_the_generic_encoder_on_real_and_sample_captures():
    sinks = Both()
    analysis = Analysis([sinks])
    for path in [REAL / "ndpi_msnms.pcap", REAL / "ppa1e_msnms.pcap",
                 *sorted((ROOT / "captures").glob("*.pcap"))]:
        feed_capture(analysis, str(path))
    analysis.finish()
    assert len(sinks.pairs) > 364 + 25
    kinds = {json.loads(fast)["kind"] for fast, _ in sinks.pairs}
    assert {"command", "transaction", "anomaly", "stream"} <= kinds
    for fast, generic in sinks.pairs:
        assert fast == generic
    # Secrets are still redacted on the fast path (the ndpi capture has SB cookies).
    assert any("<redacted:" in fast for fast, _ in sinks.pairs)


tokens = st.binary(min_size=1, max_size=12).filter(lambda b: b" " not in b)


@settings(max_examples=300, deadline=None)
@given(code=st.sampled_from(["MSG", "USR", "XFR", "NLN", "msg", "ç"]), trid=st.none() | st.integers(0, 2**32),
       params=st.lists(tokens, max_size=5), payload=st.none() | st.binary(max_size=40),
       ts=st.none() | st.floats(allow_nan=False, allow_infinity=False) | st.integers(0, 2**40),
       stream=st.none() | st.text(max_size=6), direction=st.sampled_from([C2S, S2C]))
def test_fast_path_equals_the_generic_encoder_on_any_command(code, trid, params, payload, ts, stream, direction):
    args = ([str(trid).encode()] if trid is not None else []) + params
    cmd = Command(direction, code, trid, args, b"x\r\n", payload, None if payload is None else len(payload), 7, ts)
    writer = JsonLinesWriter(io.StringIO(), Redactor(key=b"k" * 16))

    class Conn:
        id = stream

    record = writer.record(Conn if stream is not None else None, cmd)
    writer.event(Conn if stream is not None else None, cmd)
    line = writer.out.getvalue()
    assert line == reference(record) + "\n"
    assert json.loads(line) == record
    assert line.splitlines() == [line[:-1]]


times = (st.none() | st.integers(0, 2**40) | st.floats()
         | st.sampled_from([1e-5, 1e-4, 9.999e-5, 1e16, 9.99e15, -0.0, 5e-324, 1e308, 1.7e9]))


@settings(max_examples=300, deadline=None)
@given(request_ts=times, reply_ts=st.lists(times, max_size=3), latency=times,
       outcome=st.sampled_from(["ok", "error", "timeout", None]))
def test_a_transaction_line_equals_the_generic_encoder_at_any_time(request_ts, reply_ts, latency, outcome):
    # The writer tests each time of a transaction (request, replies, latency) inline before
    # using orjson: a time orjson writes otherwise (1e-05, 1e+16, NaN) must go to `reference`.
    from analyzer.msnp.pairing import Transaction
    request = Command(C2S, "CHG", 3, [b"3", b"NLN"], b"CHG 3 NLN\r\n", None, None, 0, request_ts)
    txn = Transaction(request, 0)
    txn.replies = [Command(S2C, "CHG", 3, [b"3", b"NLN"], b"CHG 3 NLN\r\n", None, None, 12 + i, ts)
                   for i, ts in enumerate(reply_ts)]
    txn.outcome, txn.latency_ms = outcome, latency
    writer = JsonLinesWriter(io.StringIO(), Redactor(key=b"k" * 16))

    class Conn:
        id = "4"

    record = writer.record(Conn, txn)
    writer.event(Conn, txn)
    assert writer.out.getvalue() == reference(record) + "\n"


values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.text(max_size=8)
    | st.floats() | st.sampled_from([1e-5, 1e-4, 9.999e-5, 1e16, 9.99e15, -0.0, 5e-324, 1e308]),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner, max_size=4)
    | st.dictionaries(st.integers(0, 9), inner, max_size=2), max_leaves=12)


@settings(max_examples=500, deadline=None)
@given(rec=st.dictionaries(st.text(max_size=6), values, max_size=6))
def test_encode_equals_the_generic_encoder_on_any_record(rec):
    assert encode(rec) == reference(rec)


def test_unusual_values_fall_back_to_the_generic_encoder():
    cmd = Command(C2S, "PNG", None, [], b"PNG\r\n", None, None, 0, float("nan"))
    out = io.StringIO()
    JsonLinesWriter(out).event(None, cmd)
    # NaN is not JSON (issue #15): the generic path writes null, and the line parses.
    assert '"ts":null' in out.getvalue() and json.loads(out.getvalue())["ts"] is None
    # orjson would write these differently (1e-05 as 0.00001, a lone surrogate not at all):
    # each goes through the generic encoder; NaN and infinities become null in both.
    for value in (1e-05, 1.5e16, float("inf"), "\ud800", 2**64, {1: "a"}):
        assert encode({"v": value}) == reference({"v": value})
    assert encode({"v": float("inf")}) == '{"v":null}'


def test_a_record_is_one_line_for_every_line_splitter():
    """U+2028, U+2029 and U+0085 are valid raw in a JSON string, but Python's
    str.splitlines (and JavaScript) break lines there: a record holding them from the wire
    must still be one line, on every path (orjson, the generic encoder, the fallbacks)."""
    breaks = "a\u2028b\u2029c\x85d"
    for rec in ({"kind": "x", "v": breaks}, {"kind": "x", "v": breaks, "f": 1e-9},
                {"kind": "x", "v": breaks, "t": float("nan")}, {"kind": "x", "v": breaks + "\ud800"}):
        line = encode(rec)
        assert line == reference(rec)
        assert line.splitlines() == [line]
        assert "\u2028" not in line and "\u2029" not in line and "\x85" not in line
        assert json.loads(line)["v"].startswith("a\u2028b\u2029c\x85d")
    payload = "x\u2028y".encode()
    cmd = Command(S2C, "MSG", None, [b"a\xe2\x80\xa9b", b"N", b"3"], b"MSG\r\n", payload, len(payload), 0, 1.0)
    out = io.StringIO()
    JsonLinesWriter(out, Redactor(key=b"k" * 16)).event(None, cmd)
    (line,) = out.getvalue().splitlines()
    assert json.loads(line)["params"][0] == "a\u2029b" and json.loads(line)["payload"] == "x\u2028y"


def test_a_payload_seen_again_is_written_as_the_redactor_writes_it_for_its_own_command(monkeypatch):
    # Small payload texts are remembered per (code, direction, payload): the same bytes under
    # a code whose payload is a secret (a client's QRY) or with a secret header are masked
    # each time as the redactor masks them, and the memory stays bounded.
    from analyzer.outputs import jsonl
    monkeypatch.setattr(jsonl, "PAYLOAD_MEMO", 2)
    redactor = Redactor(key=b"k" * 16)
    out = io.StringIO()
    writer = JsonLinesWriter(out, redactor)
    writer._compiled = None   # the Python writer's records (the core's lines redact on their own)
    answer = b"0123456789abcdef0123456789abcdef"
    profile = b"MIME-Version: 1.0\r\nContent-Type: text/x-msmsgsprofile\r\nMSPAuth: 2AAAAsecret\r\n\r\n"
    typing = b"MIME-Version: 1.0\r\nContent-Type: text/x-msmsgscontrol\r\nTypingUser: a@b.c\r\n\r\n\r\n"
    big = b"MIME-Version: 1.0\r\nContent-Type: text/plain\r\n\r\n" + b"x" * 600
    events = []
    for code, direction, payload in [("MSG", S2C, answer), ("QRY", C2S, answer), ("MSG", S2C, answer),
                                     ("QRY", C2S, answer), ("MSG", S2C, profile), ("MSG", C2S, typing),
                                     ("MSG", S2C, profile), ("MSG", C2S, typing), ("MSG", C2S, big),
                                     ("MSG", C2S, big)]:
        events.append(Command(direction, code, 1, [b"1", str(len(payload)).encode()], b"", bytes(payload),
                              len(payload), 0, 1.0))
    for event in events:
        writer.event(None, event)
        assert len(writer._payload_texts) <= 2
    written = [json.loads(line)["payload"] for line in out.getvalue().splitlines()]
    assert written == [redactor.payload(e).decode("utf-8", "backslashreplace") for e in events]
    assert written[0] == answer.decode() and written[1].startswith("<redacted:") and written[3] == written[1]
    assert "2AAAAsecret" not in "".join(written)


def test_a_file_the_run_opened_gets_the_same_bytes_as_a_text_stream(tmp_path):
    # An AtomicFile's lines go to its binary file as orjson's bytes (no decode and re-encode):
    # byte for byte what a text stream gets, in the same order, for every kind of line
    # (commands, transactions, anomalies, streams, a plugin-style record with a line break
    # character or a lone surrogate, which are escaped or cleaned), batch by batch and one by one.
    from analyzer.outputs.atomic import open_output
    from analyzer.outputs.jsonl import _binary_of
    redactor = Redactor(key=b"k" * 16)
    text = JsonLinesWriter(io.StringIO(), redactor)
    path = tmp_path / "run.jsonl"
    out = open_output(str(path))
    binary = JsonLinesWriter(out, redactor)
    assert binary._binary is not None and text._binary is None
    analysis = Analysis([text, binary])
    feed_capture(analysis, str(REAL / "ndpi_msnms.pcap"))
    for writer in (text, binary):
        writer.event(None, {"kind": "note", "v": "a\u2028b\x85"})
        writer.event(None, {"kind": "note", "v": "lone \ud800"})
        writer.event_batch(None, [{"kind": "note", "n": 1}, {"kind": "note", "f": 1e-9}])
    analysis.finish()
    out.close()
    written = path.read_bytes()
    assert written == text.out.getvalue().encode("utf-8")
    lines = written.decode("utf-8").splitlines()
    assert len(lines) > 364 and {json.loads(line)["kind"] for line in lines} >= {"command", "transaction", "stream"}
    notes = [line for line in lines if '"kind":"note"' in line]
    assert notes == ['{"stream":null,"kind":"note","v":"a\\u2028b\\u0085"}',
                     '{"stream":null,"kind":"note","v":"lone \\\\ud800"}',
                     '{"stream":null,"kind":"note","n":1}', '{"stream":null,"kind":"note","f":1e-09}']
    assert lines.index(notes[0]) + 3 == lines.index(notes[-1])   # in their place among the others
    # A stream the writer does not own, or one that is not UTF-8, is written as text.
    assert _binary_of(io.StringIO()) is None
    latin = open_output(str(tmp_path / "other.jsonl"))
    latin.file = io.TextIOWrapper(io.BytesIO(), encoding="latin-1")
    assert _binary_of(latin) is None
    latin.discard()


def test_a_stream_record_makes_no_pairing_for_a_connection_that_holds_none(implementation):
    from analyzer.analysis.connection import Connection
    from analyzer.analysis.redact import Redactor
    from analyzer.msnp import C2S, S2C
    conn = Connection("7", "127.0.0.1:5000", "127.0.0.2:1863")
    conn.feed(C2S, b"PNG\r\n", 1.0)
    conn.feed(S2C, b"QNG 50\r\n", 1.5)
    assert conn._tracker is None          # nothing waits: dropped
    out = io.StringIO()
    JsonLinesWriter(out, Redactor()).stream(conn)
    assert conn._tracker is None          # the record read given_up without making one
    assert '"pending_given_up"' not in out.getvalue() and '"commands":2' in out.getvalue()


def test_the_payload_texts_a_writer_remembers_stay_within_their_bytes():
    # Unique payloads of the largest size remembered, each byte one that the text writes as
    # four characters (\xff): the memo forgets all at once before it holds more than its bound.
    import gc
    import sys
    import tracemalloc
    from analyzer.outputs import jsonl
    writer = JsonLinesWriter(io.StringIO(), Redactor(key=b"k" * 16))
    events = [Command(C2S, "MSG", n, [b"N", b"512"], b"", b"%05d" % n + b"\xff" * (jsonl.PAYLOAD_MEMO_BYTES - 5),
                      jsonl.PAYLOAD_MEMO_BYTES, 0, 1.0) for n in range(1500)]
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        most = 0
        for event in events:
            assert writer._payload_text(event) == event.payload.decode("utf-8", "backslashreplace")
            assert writer._payload_held <= jsonl.PAYLOAD_MEMO_HELD
            most = max(most, len(writer._payload_texts))
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    keys = sum(sys.getsizeof(key[2]) for key in writer._payload_texts)   # the test's own bytes
    assert most > 300 and grown + keys <= writer._payload_held + 16 * 1024, (grown, keys, writer._payload_held)
    assert writer._payload_held == sum(jsonl._PAYLOAD_ENTRY + len(k[2]) + sys.getsizeof(t) + sys.getsizeof(k[0])
                                       for k, t in writer._payload_texts.items())
