"""analyzer/jsonl.py: the command fast path writes exactly what the generic encoder writes."""

import io
import json
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from analyzer.analysis.run import Analysis
from analyzer.msnp import C2S, S2C, Command
from analyzer.capture.files import feed_capture
from analyzer.outputs.jsonl import JsonLinesWriter, _encode, command_line
from analyzer.analysis.redact import Redactor

ROOT = Path(__file__).resolve().parents[2]
REAL = ROOT.parent / "shared" / "captures-real"


class Both:
    """A sink that writes every command both ways and keeps the pairs."""

    def __init__(self):
        self.writer = JsonLinesWriter(io.StringIO(), Redactor(key=b"k" * 16))
        self.pairs = []

    def event(self, conn, event):
        if type(event) is Command:
            generic = _encode(self.writer.record(conn, event))
            self.writer.out = io.StringIO()
            self.writer.event(conn, event)
            self.pairs.append((self.writer.out.getvalue(), generic + "\n"))

    def stream(self, conn):
        pass

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
    line = command_line(stream, cmd, record["params"], record.get("payload"))
    assert line == _encode(record)
    assert json.loads(line) == record


def test_unusual_values_fall_back_to_the_generic_encoder():
    cmd = Command(C2S, "PNG", None, [], b"PNG\r\n", None, None, 0, float("nan"))
    assert command_line("1", cmd, [], None) is None
    out = io.StringIO()
    JsonLinesWriter(out).event(None, cmd)
    # NaN is not JSON (issue #15): the generic path writes null, and the line parses.
    assert '"ts":null' in out.getvalue() and json.loads(out.getvalue())["ts"] is None
