"""The compiled core's JSON Lines formatter (`analyzer._core.JsonFormatter`) against the
Python writer, which stays the rule: `JsonLinesWriter` with the formatter writes exactly
what it writes without it, for any command, transaction, skipped run and anomaly, whatever
the redaction and payload settings. The formatter leaves to Python what it does not format
(secrets to mask, floats past the plain range, ints past 64 bits), and the tests also say
that it does format the common records (so the equality is not won by always declining).
"""

from __future__ import annotations

import io
import json

import pytest
from hypothesis import given, settings, strategies as st

from analyzer.analysis.redact import PAYLOAD_SECRETS, Redactor
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
    msg(b"MIME-Version: 1.0\r\nContent-Type: text/x-msmsgsinvite\r\n\r\nAuthCookie: 1234\r\npwd=x\r\n"),
    msg(b"Authentication-Info: Passport1.4 da-status=success,from-PP='t=1&p=2'"),
    msg(b"<wsse:Password>hunter2</wsse:Password>"),
    msg(b"x", ts=1e16),
    msg(b"x", ts=float("nan")),
    Command(C2S, "CHG", 2 ** 70, [str(2 ** 70).encode(), b"NLN"], b"CHG ...\r\n", None, None, 0, 1.0),
    Anomaly("msnp.line.garbage", "b'USR 3 MD5 S x'", C2S, 0, 1.0),
    Command(C2S, "ÜSR", 3, [b"3", b"MD5", b"S", b"0123"], b"\xc3\x9cSR 3 MD5 S 0123\r\n", None, None, 0, 1.0),
], ids=["password", "from-pp", "soap", "big-float", "nan", "big-trid", "anomaly", "code-not-ascii"])
def test_what_may_need_python_is_left_to_python(event):
    assert formatter()("1", event) is None
    assert written([(Conn("1"), event)], compiled=True) == written([(Conn("1"), event)], compiled=False)


def usr(*args: bytes, code="USR", trid=3, direction=C2S, payload=None) -> Command:
    args = ([str(trid).encode()] if trid is not None else []) + list(args)
    return Command(direction, code, trid, args, b"line\r\n", payload, None if payload is None else len(payload), 0, 1.0)


@pytest.mark.parametrize("event, masked", [
    (usr(b"MD5", b"S", b"0123456789abcdef"), [2]),
    (usr(b"SSO", b"S", b"t=ticket&p=profile", b"response"), [2, 3]),
    (usr(b"3", b"MD5", b"S", b"0123", code="usr", trid=None), [3]),          # the TrID among the parameters
    (usr(b"a@b.c", b"17262740.1050826919"), [1]),                               # a switchboard login's cookie
    (usr(b"a@b.c", b"17262740.1050826919", code="ANS"), [1]),
    (usr(b"SB", b"127.0.0.1:1864", b"CKI", b"17262740.1050826919", code="XFR", direction=S2C), [3]),
    (usr(b"117", b"127.0.0.1:1864", b"CKI", b"8496.2", code="RNG", trid=None, direction=S2C), [3]),
    (usr(b"msmsgs@msnmsgr.com", b"32", code="QRY", payload=b"0123456789abcdef0123456789abcdef"), []),
    (usr(b"OK", b"a@b.c", b"Name", direction=S2C), []),
], ids=["md5", "sso", "lower-case", "sb-login", "ans", "xfr", "rng", "qry", "usr-ok"])
def test_secret_parameters_are_masked_by_the_core_as_the_redactor_masks_them(event, masked):
    """The core masks with the redactor's own table and key (Redactor.core_table): the same
    masks at the same places, and these records are not left to Python."""
    line = formatter()("1", event)
    assert line is not None
    assert line == written([(Conn("1"), event)], compiled=False)
    params = json.loads(line)["params"]
    assert [i for i, p in enumerate(params) if p.startswith("<redacted:")] == masked
    assert all(Redactor(key=b"test").mask(event.raw_params[i]) == params[i] for i in masked)
    if event.cmd == "QRY":
        assert json.loads(line)["payload"] == Redactor(key=b"test").mask(event.payload)
    assert Redactor(key=b"other").mask(b"x") != Redactor(key=b"test").mask(b"x")   # the key matters


@pytest.mark.parametrize("payload, secrets", [
    (b"MIME-Version: 1.0\r\nContent-Type: text/x-msmsgsinvite\r\n\r\nAuthCookie: 1234\r\n", [b"1234"]),
    (b"MIME-Version: 1.0\r\nContent-Type: text/plain\r\nSID: 1\r\n\r\nSID: 2", [b"1"]),
    (b"MIME-Version: 1.0\r\nContent-Type: text/x-msmsgsprofile; charset=UTF-8\r\nLoginTime: 1\r\n"
     b"MSPAuth: 7Sd$$\r\nkv: 7\r\nsid:   \r\n", [b"7Sd$$", b"7", b" "]),
    (b"https://login/?t=secret&p=other xt=1", [b"secret", b"other"]),
    (b"SID: <redacted:0000abcd>\r\nnonce : {A-B}\n\rauthcookie:x", [b"{A-B}"]),
    (b'<ml l="1"><d n="example.com"><c n="bob" l="3" t="1"/></d></ml>', []),
], ids=["invitation", "chat-head", "profile", "ticket", "mask-kept", "adl"])
def test_secret_header_lines_and_ticket_fields_are_masked_by_the_core(payload, secrets):
    event = msg(payload)
    line = formatter()("1", event)
    assert line is not None
    assert line == written([(Conn("1"), event)], compiled=False)
    shown = json.loads(line)["payload"]
    assert [shown.count(Redactor(key=b"test").mask(s)) for s in secrets] == [1] * len(secrets)
    assert shown.count("<redacted:") == len(secrets) + payload.count(b"<redacted:")


def test_a_redactor_the_core_cannot_copy_keeps_its_secret_commands():
    """A Redactor subclass (its masks may be its own) gets no table: its secret-bearing
    commands and every payload are left to the Python writer, and the two writers still agree."""
    class Upper(Redactor):
        def mask(self, secret: bytes) -> str:
            return "<hidden>"

    event = usr(b"MD5", b"S", b"0123")
    writer = JsonLinesWriter(io.StringIO(), Upper(key=b"test"))
    assert writer.redactor.core_table() is None
    assert writer._formatter.line("1", event) is None
    assert writer._formatter.line("1", msg(CHAT + b"hi")) is None
    assert writer._formatter.line("1", usr(b"NLN", b"0", code="CHG")) is not None
    out = io.StringIO()
    writer.out = out
    writer.event(Conn("1"), event)
    assert '"<hidden>"' in out.getvalue()


def test_without_redaction_secret_commands_are_the_cores():
    event = Command(C2S, "USR", 3, [b"3", b"MD5", b"S", b"abc"], b"USR 3 MD5 S abc\r\n", None, None, 0, 1.0)
    assert formatter(redact=False)("1", event) is not None
    assert '"abc"' in written([(Conn("1"), event)], compiled=True, redact=False)


# -- any record: hypothesis -------------------------------------------------------------------

SECRETISH = [b"SID: 1", b"  authcookie :x", b"Nonce:\t{x}", b"kv: 3", b"MSPAuth: t", b"X-Y: z", b"charset=UTF-8",
             b"t=1", b"p=2", b"pwd=3", b"Passwd=4", b"<Password>x</Password>", b"<BinarySecret>y</BinarySecret>",
             b"from-PP='t=1&p=2'", b"<ml/>", b"=", b"\xff\xfe", "é".encode()]

tokens = st.one_of(st.binary(max_size=10), st.sampled_from([b"MD5", b"S", b"I", b"SB", b"CKI", b"OK", b"TWN", b"SSO",
                                                            b"SHA", b"A", b"md5", b"s", b"cki", b"sb", b"12", b"12\n",
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
                                   "Usr", "ß", "xfr", "Rng", "ans", "qry", "UsR1"]), st.text(max_size=4))


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


SECRET_WORDS = [b"MD5", b"TWN", b"SSO", b"SHA", b"OK", b"S", b"A", b"I", b"SB", b"NS", b"CKI", b"md5", b"sso", b"s",
                b"cki", b"Sb", b"0", b"12", b"12\n", b"a@b.c", b"127.0.0.1:1864", b"17262740.1050826919.32308",
                b"t=ticket&p=profile", b"\xff\xfe", "é".encode()]


# The parameter shapes of the table's commands (None: any word), so the rules' conditions hold
# often; each word may then change case, and the line may be cut short or run on.
SHAPES = {"USR": [[b"MD5", b"S", None], [b"TWN", b"S", None], [b"SSO", b"S", None, None], [b"SHA", b"A", None],
                  [b"SSO", b"S", None, None, None],
                  [b"MD5", b"I", None], [None, None], [b"OK", None, None]],
          "XFR": [[b"SB", None, b"CKI", None], [b"NS", None, b"0"]],
          "RNG": [[b"11752013", None, b"CKI", None, None, None], [None, None, b"CKI", None]],
          "ANS": [[None, None, None]],
          "QRY": [[b"msmsgs@msnmsgr.com", b"32"]],
          "CHG": [[b"NLN", None]]}
word = st.one_of(st.sampled_from(SECRET_WORDS), st.binary(max_size=8))


@st.composite
def secret_command(draw) -> tuple[str, list[bytes]]:
    """A code of the table in some case and parameters of one of its shapes (now and then another's)."""
    code = draw(st.sampled_from(["USR", "USR", "USR", "XFR", "RNG", "RNG", "ANS", "QRY", "CHG"]))
    shapes = SHAPES[code] if draw(st.integers(0, 3)) else [s for shapes in SHAPES.values() for s in shapes]
    args = [w if w is not None else draw(word) for w in draw(st.sampled_from(shapes))]
    args = [w.lower() if draw(st.booleans()) else w for w in args]
    args = args[:draw(st.integers(0, len(args)))] if not draw(st.integers(0, 3)) else args + draw(st.lists(word, max_size=2))
    return draw(st.sampled_from([code, code.lower(), code.title()])), args


PAYLOAD_PIECES = [b"SID: 1", b"sid:", b"SID:   ", b"  authcookie :x", b"Nonce:\t{x}", b"kv: <redacted:0000abcd>",
                  b"MSPAuth: 7Sd$$", b"mspprof:1", b"sidx: 1", b"x-sid: 2", b"t=1", b"T=a'b", b"p=2", b"xt=3", b"-p=4",
                  b"p=\x0bq", b"t=", b"t=\xe9\xff", b"charset=UTF-8", b"<c t=\"1\"/>", b"&", b"=", b"\xff\xfe",
                  b"x", b"Content-Type: text/x-msmsgsprofile", b"t=<redacted:x>"]
PAYLOAD_SEPARATORS = [b"\r\n", b"\n", b"\r", b" ", b"\t", b"&", b"?", b"", b"\r\n\r\n"]


@st.composite
def header_payloads(draw) -> bytes:
    """Payloads of MIME header lines and ticket fields (what the core masks itself), chat heads too."""
    head = draw(st.sampled_from([b"", CHAT[:45], b"MIME-Version: 1.0\r\nContent-Type: text/x-msmsgscontrol\r\n",
                                 b"MIME-Version: 1.0\r\nContent-Type: text/x-msmsgsinvite\r\n"]))
    out = [head]
    for _ in range(draw(st.integers(0, 8))):
        out.append(draw(st.sampled_from(PAYLOAD_PIECES)) if draw(st.integers(0, 4)) else draw(st.binary(max_size=6)))
        out.append(draw(st.sampled_from(PAYLOAD_SEPARATORS)))
    return b"".join(out)


@settings(max_examples=500, deadline=None)
@given(header_payloads(), st.sampled_from(["MSG", "msg", "QRY", "UUX", "ADL"]), st.sampled_from([C2S, S2C]),
       st.booleans(), st.binary(max_size=20))
def test_payloads_are_masked_as_the_redactor_masks_them(payload, code, direction, redact, key):
    """Record for record: the core's line of a command with a payload (secret header lines,
    ticket fields, chat heads, masks already there) is the Python writer's, and the core
    writes it unless a free-text rule it does not copy (passwords, from-PP, SOAP) may apply."""
    cmd = Command(direction, code, 5, [b"5", b"A", str(len(payload)).encode()], b"line\r\n", payload, len(payload), 9,
                  1115371249.437368)
    writer = JsonLinesWriter(io.StringIO(), Redactor(redact, key=key))
    core = writer._formatter.line("1", cmd)
    low = payload.lower()
    if not any(word in low for word in (b"from-pp", b"pwd=", b"passw", b"binarys", b"ciphervalue")):
        assert core is not None
    if core is not None:
        assert core == writer._line_of(Conn("1"), cmd, as_bytes=False)


@settings(max_examples=500, deadline=None)
@given(secret_command(), st.sampled_from([C2S, S2C]), st.one_of(st.none(), st.none(), st.integers(0, 2 ** 32)),
       st.one_of(st.none(), st.binary(max_size=40), st.just(b"0123456789abcdef0123456789abcdef")),
       st.booleans(), st.binary(max_size=100))
def test_secret_bearing_commands_are_masked_as_the_redactor_masks_them(command, direction, trid, payload, redact, key):
    """Record for record: the core's line of a secret-bearing command (USR, XFR, RNG, ANS, QRY in
    any case, with and without a TrID the reader took, with and without redaction, under any
    key) is the Python writer's, and the core does write it (unless a payload the free-text
    rules may change is there)."""
    code, args = command
    if trid is not None:
        args = [str(trid).encode()] + args
    cmd = Command(direction, code, trid, args, b"line\r\n", payload, None if payload is None else len(payload), 7,
                  1115371249.437368)
    writer = JsonLinesWriter(io.StringIO(), Redactor(redact, key=key))
    core = writer._formatter.line("1", cmd)
    if payload is None or (redact and (code.upper(), direction) in PAYLOAD_SECRETS):
        assert core is not None
    if core is not None:
        assert core == writer._line_of(Conn("1"), cmd, as_bytes=False)


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


# -- other layers' records (dicts) ---------------------------------------------------------

class Name(str):
    pass


scalars = st.one_of(st.none(), st.booleans(), st.text(max_size=6), st.sampled_from(["\ud800", "a\u2028b", "\x00\"\\"]),
                    st.builds(Name, st.text(max_size=3)), st.integers(-2 ** 70, 2 ** 70), st.integers(-5, 5),
                    st.floats(), st.floats(0, 2e9), st.sampled_from([1e-5, 1.5e-7, 1e16, -0.0, 0.0, 62.632]))
keys = st.one_of(st.text(max_size=5), st.sampled_from(["kind", "stream", "ts", "\udc80"]), st.integers(0, 3),
                 st.builds(Name, st.just("k")))
data = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=3), st.tuples(inner, inner),
                                                     st.dictionaries(keys, inner, max_size=3)), max_leaves=12)


def _plain_data(value, depth=0) -> bool:
    """What the core writes itself: exact types, plain floats, ints of 64 bits, UTF-8 text, str keys."""
    kind = type(value)
    if kind in (list, tuple):
        return depth < 32 and all(_plain_data(v, depth + 1) for v in value)
    if kind is dict:
        return depth < 32 and all(type(k) is str and _plain_data(k) and _plain_data(v, depth + 1)
                                  for k, v in value.items())
    if kind is float:
        return value == 0.0 or 1e-4 <= abs(value) < 1e16
    if kind is int:
        return -2 ** 63 <= value < 2 ** 64
    if kind is str:
        return not any(0xD800 <= ord(c) <= 0xDFFF for c in value)
    return value is None or kind is bool


@settings(max_examples=500, deadline=None)
@given(st.dictionaries(keys, data, max_size=6), st.one_of(st.none(), st.sampled_from(["1", "2:7"])))
def test_other_layers_records_are_written_as_python_writes_them(record, stream):
    """A `link`, `chat` or `session` record (a dict) is the Python writer's line byte for byte,
    and the core writes it whenever it holds only plain data."""
    writer = JsonLinesWriter(io.StringIO(), Redactor(key=b"test"))
    core = writer._formatter.line(stream, record)
    conn = Conn(stream) if stream is not None else None
    if _plain_data(record):
        assert core is not None
    if core is not None:
        assert core == writer._line_of(conn, record, as_bytes=False)


def test_a_link_record_is_the_core_s():
    link = {"kind": "link", "type": "ns_sb", "from": "2", "to": "3", "ts": 1115371249.437368, "trid": None,
            "cookie": "<redacted:6d1b2b14>", "linked": True, "streams": ["1", "2"], "counts": {"a": 1}}
    line = formatter()("2", link)
    assert line is not None and line.startswith('{"stream":"2","kind":"link",')
    assert line == written([(Conn("2"), link)], compiled=False)
    assert formatter()("2", {"stream": "9", "kind": "x"}) == '{"stream":"9","kind":"x"}\n'
    assert formatter()("2", {}) == '{"stream":"2"}\n'
    nested = {"n": 1}
    for i in range(16):   # 24 levels deep: within what the core follows
        nested = {"v": [nested, (i, 0.5)]} if i % 2 else {"w": nested}
    assert formatter()("2", nested) == written([(Conn("2"), nested)], compiled=False)


def test_deep_or_odd_data_is_left_to_python():
    deep = []
    for _ in range(40):
        deep = [deep]
    for record in ({"kind": "x", "v": deep}, {"kind": "x", 0: 1}, {"kind": "x", "v": Name("n")},
                   {"kind": "x", "v": 1e-7}, {"kind": "x", "v": 2 ** 64}, {"kind": "x", "v": (1, "\udc80")}):
        assert formatter()("1", record) is None
        assert written([(Conn("1"), record)], compiled=True) == written([(Conn("1"), record)], compiled=False)
