"""Property tests: however TCP chops a stream, the codec says the same thing and loses no byte.

For every scripted session (MSNP2, 8, 12, 15, 18 and the anomaly session) and
every connection direction: feeding the bytes whole, one byte at a time and in
random chunkings gives identical events; random mutations never raise (and never
trip the fail-open path); re-emitting `.raw` of Command and Skipped events (plus
what close() flushes) gives back the input exactly.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from analyzer.msnp import C2S, S2C, Anomaly, Command, CommandReader, ProtocolState, Skipped
from analyzer.analysis.connection import Connection, Limits
from captures.sessions import SESSIONS, VERSIONS, streams

STREAMS = [(name, conn, direction, data)
           for name, chunks in SESSIONS.items()
           for conn, per in streams(chunks).items()
           for direction, data in per.items() if data]
IDS = [f"{name}-{conn}-{direction}" for name, conn, direction, _ in STREAMS]
PROPS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def signature(event):
    """What an event says, independent of object identity (ts is fixed by the caller)."""
    kind = type(event)
    if kind is Command:
        return ("C", event.direction, event.cmd, event.trid, tuple(event.args), event.line,
                event.payload, event.payload_len, event.offset)
    if kind is Anomaly:
        return ("A", event.name, event.detail, event.direction, event.offset, event.trid)
    return ("S", event.direction, event.raw, event.offset)


def normalise(events):
    """Signatures, with adjacent Skipped runs merged.

    A skipped run (garbage, an overlong line) is emitted as its bytes arrive,
    since holding an unbounded run to emit it once would defeat the line cap;
    where the run is cut depends on the chunking, what it contains does not.
    """
    out = []
    for event in events:
        if type(event) is Skipped and out and out[-1][0] == "S":
            prev = out[-1]
            out[-1] = ("S", prev[1], prev[2] + event.raw, prev[3])
        else:
            out.append(signature(event))
    return out


def run(direction: str, pieces, version: int | None, **kw):
    reader = CommandReader(direction, ProtocolState(version), **kw)
    events = []
    for piece in pieces:
        events += reader.feed(piece, 0.0)
    return events + reader.close(0.0)


def split(data: bytes, cuts: list[int]):
    points = sorted({c % (len(data) + 1) for c in cuts})
    edges = [0] + points + [len(data)]
    return [data[a:b] for a, b in zip(edges, edges[1:])]


def reemit(events) -> bytes:
    return b"".join(e.raw for e in events if type(e) in (Command, Skipped))


@pytest.mark.parametrize("name,conn,direction,data", STREAMS, ids=IDS)
def test_whole_and_byte_at_a_time_agree_and_reemit_exactly(name, conn, direction, data):
    version = VERSIONS[name] if conn == "ns" or conn == "ds" else None
    whole = run(direction, [data], version)
    bytewise = run(direction, [data[i:i + 1] for i in range(len(data))], version)
    assert normalise(whole) == normalise(bytewise)
    assert reemit(whole) == data
    assert reemit(bytewise) == data
    assert any(type(e) is Command for e in whole)


@pytest.mark.parametrize("name,conn,direction,data", STREAMS, ids=IDS)
@PROPS
@given(cuts=st.lists(st.integers(min_value=0, max_value=1 << 20), max_size=40))
def test_random_chunkings_agree(name, conn, direction, data, cuts):
    whole = run(direction, [data], None)
    chunked = run(direction, split(data, cuts), None)
    assert normalise(chunked) == normalise(whole)
    assert reemit(chunked) == data


def mutate(data: bytes, edits) -> bytes:
    buf = bytearray(data)
    for kind, pos, value in edits:
        if not buf:
            buf.append(value)
            continue
        pos %= len(buf)
        if kind == 0:
            buf[pos] = value
        elif kind == 1:
            buf.insert(pos, value)
        elif kind == 2:
            del buf[pos]
        else:  # the separators and line ends the codec cares about most
            buf.insert(pos, b" \t\r\n0:"[value % 6])
    return bytes(buf)


EDITS = st.lists(st.tuples(st.integers(0, 3), st.integers(0, 1 << 20), st.integers(0, 255)),
                 min_size=1, max_size=12)


@pytest.mark.parametrize("name", sorted(SESSIONS))
@PROPS
@given(edits=EDITS, cuts=st.lists(st.integers(0, 1 << 20), max_size=20), data=st.data())
def test_mutated_sessions_never_raise_and_still_reemit(name, edits, cuts, data):
    chunks = SESSIONS[name]
    per = streams(chunks)
    conn_label = data.draw(st.sampled_from(sorted(per)))
    direction = data.draw(st.sampled_from([C2S, S2C]))
    mutated = mutate(per[conn_label][direction], edits)
    limits = Limits(max_line=data.draw(st.sampled_from([64, 65536])),
                    max_payload=data.draw(st.sampled_from([16, 1 << 20])))
    # Through the whole Connection (reader, pairing, role learning), both directions.
    conn = Connection("m", limits=limits)
    events = []
    other = S2C if direction == C2S else C2S
    for piece in split(mutated, cuts):
        events += conn.feed(direction, piece, 1.0)
        events += conn.feed(other, per[conn_label][other][:64], 1.0)
    events += conn.close(2.0)
    assert not conn.failed, [e for e in events if type(e) is Anomaly and e.name == "analyzer.internal_error"]
    mine = [e for e in events if type(e) in (Command, Skipped) and e.direction == direction]
    assert b"".join(e.raw for e in mine) == mutated


@PROPS
@given(blob=st.binary(max_size=2000), cuts=st.lists(st.integers(0, 1 << 20), max_size=20),
       direction=st.sampled_from([C2S, S2C]), version=st.sampled_from([None, 2, 8, 13, 18]))
def test_random_bytes_never_raise_and_reemit(blob, cuts, direction, version):
    events = run(direction, split(blob, cuts), version, max_line=128, max_payload=256)
    assert reemit(events) == blob
    assert normalise(events) == normalise(run(direction, [blob], version, max_line=128, max_payload=256))


# Every test here runs on both implementations: the pure-Python reference and the compiled core.
pytestmark = pytest.mark.usefixtures("implementation")
