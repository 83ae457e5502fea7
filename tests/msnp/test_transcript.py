"""The transcript format: escapes, labels, times, round trips, clear errors."""

from __future__ import annotations

import pytest

from analyzer.msnp import C2S, S2C
from analyzer.msnp.transcript import Chunk, TranscriptError, escape, format_chunks, looks_like_transcript, parse, unescape
from captures.sessions import SESSIONS


def test_parse_arrows_times_labels_and_escapes():
    chunks = parse(b"# comment\n\n0.250 @sb1 >>> CAL 2 bob@example.com\\r\\n\n<<< \\x00\\t\\\\x\n")
    assert chunks == [Chunk(C2S, b"CAL 2 bob@example.com\r\n", 0.25, "sb1"), Chunk(S2C, b"\x00\t\\x", None, None)]


def test_the_file_line_end_is_not_data_and_unknown_escapes_stay():
    assert parse(b">>> PNG\r\n")[0].data == b"PNG"
    assert unescape(b"\\q\\r") == b"\\q\r"


@pytest.mark.parametrize("name", sorted(SESSIONS))
def test_format_then_parse_gives_the_same_bytes_per_connection(name):
    chunks = SESSIONS[name]
    again = parse(format_chunks(chunks).encode())
    def joined(cs):
        out = {}
        for c in cs:
            out.setdefault((c.conn, c.direction), bytearray()).extend(c.data)
        return out
    assert joined(again) == joined(chunks)
    assert {c.ts for c in again} <= {c.ts for c in chunks}


def test_escape_round_trips_every_byte():
    data = bytes(range(256))
    assert unescape(escape(data).encode()) == data


def test_bad_line_names_its_number():
    with pytest.raises(TranscriptError, match="line 2"):
        parse(b">>> PNG\\r\\n\nPNG\\r\\n\n")


def test_looks_like_transcript():
    assert looks_like_transcript(b"# x\n0.5 @ns >>> PNG\\r\\n\n")
    assert not looks_like_transcript(b"PNG\r\nQNG 50\r\n")
