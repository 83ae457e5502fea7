"""The compiled reader (`analyzer._core.CommandReader`) against the reference (`reader.py`).

Both get the same bytes: every scripted session's streams whole, byte by byte and
re-segmented at random by hypothesis, random mutations of them, the committed fuzz
corpus, hostile lines (huge numbers, odd white space, garbage, overlong lines, gaps
inside payloads) and both directions sharing one `ProtocolState`. Every event field must
be equal, timestamps included (the caller's objects come back as they went in).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import analyzer.core as core
from analyzer.msnp import C2S, S2C
from analyzer.msnp import reader as reference
from analyzer.msnp import tables
from captures.sessions import SESSIONS, VERSIONS, streams

FUZZ_CORPUS = Path(__file__).resolve().parents[1] / "fuzz_corpus"
FUZZ_FINDINGS = Path(__file__).resolve().parents[1] / "fuzz_crashes"  # bench/fuzz_core.py saves core-* here
STREAMS = [(name, conn, direction, data)
           for name, chunks in SESSIONS.items()
           for conn, per in streams(chunks).items()
           for direction, data in per.items() if data]
IDS = [f"{name}-{conn}-{direction}" for name, conn, direction, _ in STREAMS]
PROPS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


pytestmark = pytest.mark.usefixtures("compiled_core")


def fields(event) -> tuple:
    return (type(event).__name__, *(getattr(event, s) for s in type(event).__slots__))


def script(implementation, version, steps, **limits):
    """Run (direction, action, data, ts) steps through one connection's two readers."""
    mod = core.CORE if implementation == "rust" else reference
    state = mod.ProtocolState(version)
    readers = {d: mod.CommandReader(d, state, **limits) for d in (C2S, S2C)}
    events = []
    for direction, action, data, ts in steps:
        r = readers[direction]
        if action == "feed":
            events += r.feed(data, ts)
        elif action == "gap":
            events += r.gap(data, ts)
        else:
            events += r.close(ts)
        events.append(("offset", direction, r.offset, r.pending))
    events.append(("state", state.version, list(state.offered), state.effective))
    return [e if type(e) is tuple else fields(e) for e in events]


def same(version, steps, **limits):
    want = script("python", version, steps, **limits)
    got = script("rust", version, steps, **limits)
    assert got == want
    return got


def pieces(data: bytes, cuts) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    edges = [0, *points, len(data)]
    return [data[a:b] for a, b in zip(edges, edges[1:]) if b > a]


@pytest.mark.parametrize("name,conn,direction,data", STREAMS, ids=IDS)
def test_sessions_whole_and_byte_at_a_time(name, conn, direction, data):
    version = VERSIONS[name] if conn in ("ns", "ds") else None
    same(version, [(direction, "feed", data, 1.5), (direction, "close", None, 2)])
    same(version, [*((direction, "feed", data[i:i + 1], i) for i in range(len(data))),
                   (direction, "close", None, None)])


@pytest.mark.parametrize("name", sorted(SESSIONS))
def test_both_directions_share_the_version(name):
    for conn, per in streams(SESSIONS[name]).items():
        steps = [(chunk.direction, "feed", chunk.data, chunk.ts) for chunk in SESSIONS[name] if chunk.conn == conn]
        same(None, steps + [(C2S, "close", None, 9.0), (S2C, "close", None, 9.0)])


@PROPS
@given(st.sampled_from(STREAMS), st.lists(st.integers(0, 1 << 20), max_size=40),
       st.sampled_from([None, 2, 8, 11, 13, 15, 18]))
def test_random_segmentations(stream, cuts, version):
    _, _, direction, data = stream
    steps = [(direction, "feed", p, float(i)) for i, p in enumerate(pieces(data, cuts))]
    same(version, steps + [(direction, "close", None, None)])


@PROPS
@given(st.sampled_from(STREAMS), st.lists(st.tuples(st.integers(0, 1 << 20), st.binary(min_size=1, max_size=6)),
                                          min_size=1, max_size=8),
       st.lists(st.integers(0, 1 << 20), max_size=12), st.lists(st.integers(0, 1 << 20), max_size=3),
       st.sampled_from([None, 2, 8, 13, 18]), st.sampled_from([(64, 256), (65536, 1 << 20)]))
def test_mutations_gaps_and_small_limits(stream, edits, cuts, gaps, version, limits):
    _, _, direction, data = stream
    data = bytearray(data)
    for at, blob in edits:
        at %= len(data) + 1
        data[at:at + len(blob)] = blob
    steps = []
    for i, p in enumerate(pieces(bytes(data), cuts)):
        steps.append((direction, "feed", p, i))
        if gaps and i % 3 == gaps[0] % 3:
            steps.append((direction, "gap", gaps[0] % 300 + 1, None if i % 2 else i + 0.5))
    same(version, steps + [(direction, "close", None, 99.0)], max_line=limits[0], max_payload=limits[1])


HOSTILE = [
    b"CHG 123456789012345678901234567890 NLN 0\r\n",
    b"VER 1 MSNP99999999999999999999999 MSNP0 CVR0\r\nVER 1 MSNP00018\r\n",
    b"MSG 5 A 99999999999999999999999999\r\n",
    b"MSG 5 A 0000000000000000000000000000000007\r\nhello!!",
    b"\t MSG  1\tN 3 \r\nabc\r\n",
    b"msg 1 U 3\r\nabcUuu 2\r\nZZZ 3 x\r\n\xc3\xa9\xc3\xa9 1\r\n\xff\xfe\xfd\xfc\xfb\xfa\xf9 x\r\n",
    b"911 7\r\n217 8 x y\r\n241 9 12\r\n{\"a\": 1}\r\n999 1\r\n",
    b"\r\n\n \r\n\t\r\nA\rB 1\r\n",
    b"USR\r\nUSR x\r\nUSR 0\r\nUSR 4294967296 TWN\r\n",
    b"LST 1 a@b 3\r\nLSG 0 Friends\r\n",
    b"VER 1 0\r\nVER 2 MSNP8\r\n",
    b"UBX a@b 10\r\nUBX a@b x\r\nNOT 5\r\nabcdeIPG 3\r\nxyz",
    b"x" * 300 + b"\r\nPNG\r\n",
]


@pytest.mark.parametrize("data", HOSTILE, ids=range(len(HOSTILE)))
@pytest.mark.parametrize("direction", [C2S, S2C])
def test_hostile_lines(data, direction):
    for version in (None, 0, 8, 13):
        same(version, [(direction, "feed", data, 1.0), (direction, "close", None, 2.0)], max_line=128)
        same(version, [*((direction, "feed", data[i:i + 3], i) for i in range(0, len(data), 3)),
                       (direction, "gap", 5, 7.0), (direction, "feed", data, 8), (direction, "close", None, None)],
             max_line=128)


def test_fuzz_corpus():
    import sys
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
    from fuzz_codec import script_from
    files = sorted(FUZZ_CORPUS.iterdir()) + sorted(FUZZ_FINDINGS.glob("core-*"))
    assert files
    for path in files:
        version, chunks = script_from(path.read_bytes())
        steps = [(d, "feed", c, i * 0.25) for i, (d, c) in enumerate(chunks)]
        same(version, steps + [(C2S, "close", None, 50.0), (S2C, "close", None, 50.0)], max_line=512,
             max_payload=4096)


def test_a_partial_payload_keeps_its_own_time():
    steps = [(S2C, "feed", b"MSG a@b A 10\r\nhel", 1), (S2C, "feed", b"lo", 2.5), (S2C, "close", None, None)]
    got = same(None, steps)
    [cmd] = [e for e in got if e[0] == "Command"]
    assert cmd[-1] == 1 and type(cmd[-1]) is int  # close(None) keeps the time the command started at


def test_tables_are_the_reference_tables():
    """The crate's copy of tables.py, entry by entry (data copied, so it is checked here)."""
    got = core.CORE.tables()
    assert got["KNOWN_COMMANDS"] == sorted(c.decode() for c in tables.KNOWN_COMMANDS)
    assert got["C2S_PAYLOAD"] == {k.decode(): v for k, v in tables.C2S_PAYLOAD.items()}
    assert got["S2C_PAYLOAD"] == {k.decode(): v for k, v in tables.S2C_PAYLOAD.items()}
    assert got["STRICT_LENGTH"] == sorted(c.decode() for c in tables.STRICT_LENGTH)
    assert got["S2C_NO_TRID"] == sorted(c.decode() for c in tables.S2C_NO_TRID)
    assert got["S2C_NO_TRID_SYN_BLOCK"] == sorted(c.decode() for c in tables.S2C_NO_TRID_SYN_BLOCK)
    assert got["C2S_NO_TRID"] == sorted(c.decode() for c in tables.C2S_NO_TRID)
    assert got["S2C_NEEDS_TRID"] == sorted(c.decode() for c in tables.S2C_NEEDS_TRID)
    assert got["ERROR_CODES"] == sorted(tables.ERROR_NAMES)
    assert (got["TRID_MAX"], got["SYN_BLOCK_VERSION"], got["ERROR_PAYLOAD_VERSION"]) == \
        (tables.TRID_MAX, tables.SYN_BLOCK_VERSION, tables.ERROR_PAYLOAD_VERSION)
    assert (got["DEFAULT_MAX_LINE"], got["DEFAULT_MAX_PAYLOAD"]) == \
        (reference.DEFAULT_MAX_LINE, reference.DEFAULT_MAX_PAYLOAD)


@pytest.mark.parametrize("implementation", ["python", "rust"])
def test_known_codes_share_one_string(implementation):
    """A known code's `cmd` is one string for every command that carries it (a connection's
    command counts keep one key per code, and thousands of connections are open at once on a
    busy capture); an unknown code is its own string, equal as text."""
    mod = core.CORE if implementation == "rust" else reference
    ours, theirs = mod.CommandReader(C2S), mod.CommandReader(C2S)
    first = [e for e in ours.feed(b"VER 1 MSNP8 CVR0\r\nPNG\r\nXYZ 2\r\n", 1.0) if hasattr(e, "cmd")]
    again = [e for e in theirs.feed(b"VER 3 MSNP8\r\nPNG\r\nXYZ 4\r\n", 2.0) if hasattr(e, "cmd")]
    assert [e.cmd for e in first] == [e.cmd for e in again] == ["VER", "PNG", "XYZ"]
    assert first[0].cmd is again[0].cmd and first[1].cmd is again[1].cmd


def test_an_idle_compiled_reader_keeps_only_its_state():
    # Two per connection, thousands of connections open at once on a busy server: the reader
    # object holds no event buffer and no direction object of its own (its `client` flag
    # gives the shared string). 136 bytes: the Rust reader, its state, the time of a command
    # waiting for its payload, and the Python object header.
    import sys
    for direction in (C2S, S2C):
        reader = core.CORE.CommandReader(direction)
        assert reader.direction is direction
        reader.feed(b"VER 1 MSNP8 CVR0\r\nMSG 2 N 10\r\nabc", 1.0)
        assert reader.pending == 3 and sys.getsizeof(reader) <= 136
