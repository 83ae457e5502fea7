"""CommandReader: framing, TrIDs, payloads by direction and version, resynchronisation."""

from __future__ import annotations

import pytest

from analyzer.msnp import C2S, S2C, Anomaly, Command, CommandReader, ProtocolState, Skipped, encode_command


def read(direction: str, data: bytes, version: int | None = None, **kw):
    reader = CommandReader(direction, ProtocolState(version), **kw)
    return reader.feed(data, 1.0) + reader.close(2.0)


def commands(events):
    return [e for e in events if type(e) is Command]


def names(events):
    return [e.name for e in events if type(e) is Anomaly]


def reemitted(events) -> bytes:
    return b"".join(e.raw for e in events if type(e) in (Command, Skipped))


# -- framing -----------------------------------------------------------------

def test_crlf_and_bare_lf_both_end_a_line():
    events = read(C2S, b"PNG\r\nPNG\nPNG\r\n")
    assert [c.cmd for c in commands(events)] == ["PNG", "PNG", "PNG"]
    assert names(events) == ["msnp.newline.bare_lf"]
    assert commands(events)[1].newline == b"\n"


def test_bare_cr_is_not_a_line_end():
    events = read(C2S, b"CAL 2 bob@example.com\rCAL 3 x\r\n")
    cmds = commands(events)
    assert len(cmds) == 1
    assert cmds[0].trid == 2
    assert "msnp.newline.bare_cr" in names(events)


def test_incomplete_line_waits_then_flushes_as_truncated_on_close():
    reader = CommandReader(C2S)
    assert reader.feed(b"CAL 2 bob@exa") == []
    assert reader.pending == 13
    events = reader.close()
    assert names(events) == ["msnp.line.truncated"]
    assert [e.raw for e in events if type(e) is Skipped] == [b"CAL 2 bob@exa"]


def test_parameters_split_on_space_never_on_nbsp():
    nick = "Bob\u00a0Smith".encode("utf-8")  # raw UTF-8 with a no-break space inside
    events = read(S2C, b"NLN NLN bob@example.com " + nick + b" 0\r\n", version=8)
    cmd = commands(events)[0]
    assert cmd.raw_params == [b"NLN", b"bob@example.com", nick, b"0"]
    assert names(events) == []


def test_tab_separator_is_tolerated_with_an_anomaly():
    events = read(C2S, b"CAL\t2 bob@example.com\r\n")
    cmd = commands(events)[0]
    assert (cmd.cmd, cmd.trid, cmd.params) == ("CAL", 2, ["bob@example.com"])
    assert names(events) == ["msnp.whitespace.tab"]


def test_trailing_and_multiple_spaces_keep_tokens_and_flag():
    events = read(C2S, b"CAL  2 bob@example.com \r\n")
    assert commands(events)[0].params == ["bob@example.com"]
    assert sorted(names(events)) == ["msnp.whitespace.multiple_spaces", "msnp.whitespace.trailing"]


def test_with_param_replaces_one_token_byte_exact():
    line = b"XFR 10 SB 127.0.0.3:1864  CKI 1234.5678\r\n"
    cmd = commands(read(S2C, line, version=8))[0]
    assert cmd.with_param(1, b"127.0.0.9:2000") == b"XFR 10 SB 127.0.0.9:2000  CKI 1234.5678\r\n"
    with pytest.raises(IndexError):
        cmd.with_param(9, b"x")


# -- TrIDs ---------------------------------------------------------------------

@pytest.mark.parametrize("line,direction,trid", [
    (b"CAL 2 bob@example.com\r\n", C2S, 2),
    (b"PNG\r\n", C2S, None),
    (b"OUT\r\n", C2S, None),
    (b"ACK 17\r\n", S2C, 17),
    (b"NAK 18\r\n", S2C, 18),
    (b"CHL 0 29409134351025259292\r\n", S2C, 0),
    (b"NLN NLN bob@example.com Bob 0\r\n", S2C, None),
    (b"FLN bob@example.com\r\n", S2C, None),
    (b"JOI bob@example.com Bob\r\n", S2C, None),
    (b"BYE bob@example.com\r\n", S2C, None),
    (b"RNG 11752013 127.0.0.3:1864 CKI 1.2 bob@example.com Bob\r\n", S2C, None),
    (b"RNG 8f2c6a51d3b9 127.0.0.3:1864 CKI 1.2 bob@example.com Bob\r\n", S2C, None),
    (b"QNG 45\r\n", S2C, None),
    (b"217 5\r\n", S2C, 5),
    (b"IRO 1 1 2 bob@example.com Bob\r\n", S2C, 1),
    (b"ADD 0 RL 12 bob@example.com Bob\r\n", S2C, 0),
])
def test_trid_extraction_follows_the_protocol_table(line, direction, trid):
    events = read(direction, line, version=8)
    cmd = commands(events)[0]
    assert cmd.trid == trid
    assert names(events) == []


def test_msnp8_syn_block_lines_have_no_trid_but_msnp2_lst_has_one():
    assert commands(read(S2C, b"LSG 0 Other%20Contacts 0\r\n", version=8))[0].trid is None
    assert commands(read(S2C, b"LST bob@example.com Bob 11 0\r\n", version=8))[0].trid is None
    assert commands(read(S2C, b"LST 8 FL 12 1 2 bob@example.com Bob\r\n", version=2))[0].trid == 8
    # Version unknown (capture started late): the shape decides for LST.
    assert commands(read(S2C, b"LST 8 FL 12 1 2 bob@example.com Bob\r\n"))[0].trid == 8
    assert commands(read(S2C, b"LST bob@example.com Bob 11 0\r\n"))[0].trid is None


@pytest.mark.parametrize("line,name", [
    (b"CAL\r\n", "msnp.trid.missing"),
    (b"CAL x bob@example.com\r\n", "msnp.trid.not_integer"),
    (b"CAL -1 bob@example.com\r\n", "msnp.trid.not_integer"),
    (b"CAL 4294967296 bob@example.com\r\n", "msnp.trid.out_of_range"),
    (b"CAL 0 bob@example.com\r\n", "msnp.trid.zero_from_client"),
])
def test_bad_client_trids_are_named(line, name):
    assert names(read(C2S, line)) == [name]


def test_largest_trid_is_fine():
    events = read(C2S, b"CAL 4294967295 bob@example.com\r\n")
    assert commands(events)[0].trid == 4294967295
    assert names(events) == []


# -- payloads ------------------------------------------------------------------

def test_payload_is_exactly_the_announced_length_and_the_next_command_follows():
    body = b"MIME-Version: 1.0\r\nContent-Type: text/plain\r\n\r\nhello"
    data = encode_command("MSG", 4, ["A"], body) + b"PNG\r\n"
    cmds = commands(read(C2S, data))
    assert [c.cmd for c in cmds] == ["MSG", "PNG"]
    assert cmds[0].payload == body and cmds[0].payload_len == len(body)


@pytest.mark.parametrize("direction,line,version,payload", [
    (C2S, b"MSG 4 A 3\r\n", 8, True),
    (S2C, b"MSG bob@example.com Bob 3\r\n", 8, True),
    (C2S, b"QRY 10 msmsgs@msnmsgr.com 3\r\n", 8, True),
    (S2C, b"QRY 10\r\n", 8, False),
    (C2S, b"PAG 5 bob@example.com 3\r\n", 8, True),
    (S2C, b"NOT 3\r\n", 8, True),
    (S2C, b"IPG 3\r\n", 13, True),
    (C2S, b"UUX 5 3\r\n", 12, True),
    (S2C, b"UUX 5 0\r\n", 12, True),
    (S2C, b"UBX bob@example.com 3\r\n", 12, True),
    (S2C, b"UBX bob@example.com 1 3\r\n", 15, True),
    (S2C, b"GCF 9 Shields.xml 3\r\n", 12, True),
    (S2C, b"GCF 0 3\r\n", 15, True),
    (C2S, b"ADL 9 3\r\n", 15, True),
    (S2C, b"ADL 9 OK\r\n", 15, False),
    (S2C, b"ADL 0 3\r\n", 15, True),
    (C2S, b"RML 9 3\r\n", 15, True),
    (S2C, b"RML 9 OK\r\n", 15, False),
    (C2S, b"FQY 9 3\r\n", 15, True),
    (C2S, b"UUN 9 bob@example.com 1 3\r\n", 15, True),
    (S2C, b"UBN bob@example.com 1 3\r\n", 15, True),
    (C2S, b"UUM 9 bob@example.com 32 1 3\r\n", 15, True),
    (S2C, b"UBM bob@example.com 32 1 3\r\n", 15, True),
    (S2C, b"241 9 3\r\n", 15, True),
    (S2C, b"241 9\r\n", 15, False),
    (S2C, b"217 9\r\n", 8, False),
    # Direction matters: the client's ADL/RML/UUX carry a payload only in versions that have them.
    (C2S, b"UUX 5 3\r\n", 8, False),
    (C2S, b"ADL 9 3\r\n", 12, False),
    (S2C, b"UBX bob@example.com 3\r\n", 10, False),
])
def test_which_commands_carry_payloads(direction, line, version, payload):
    events = read(direction, line + b"xyz", version=version)
    first = commands(events)[0]
    if payload:
        expected = b"" if line.endswith(b" 0\r\n") else b"xyz"
        assert first.payload == expected
    else:
        assert first.payload is None
    assert reemitted(events) == line + b"xyz"


def test_version_learned_from_ver_decides_framing_of_later_lines():
    state = ProtocolState()
    client, server = CommandReader(C2S, state), CommandReader(S2C, state)
    client.feed(b"VER 1 MSNP8 CVR0\r\n")
    assert state.effective == 8  # inferred from the client's offer before the reply
    server.feed(b"VER 1 MSNP8 CVR0\r\n")
    assert state.version == 8
    events = client.feed(b"UUX 2 3\r\nabc")  # MSNP8 has no UUX payload: "abc" is a pending line
    assert commands(events)[0].payload is None
    assert client.pending == 3


def test_version_rejected_and_not_offered():
    state = ProtocolState()
    CommandReader(C2S, state).feed(b"VER 1 MSNP8 MSNP7 CVR0\r\n")
    assert names(CommandReader(S2C, state).feed(b"VER 1 0\r\n")) == ["msnp.version.rejected"]
    assert names(CommandReader(S2C, state).feed(b"VER 1 MSNP12 CVR0\r\n")) == ["msnp.version.not_offered"]
    assert names(CommandReader(S2C, state).feed(b"VER 1 MSNP7 CVR0\r\n")) == []


def test_split_payload_waits_for_all_its_bytes():
    reader = CommandReader(S2C)
    assert reader.feed(b"MSG bob@example.com Bob 10\r\n0123") == []
    events = reader.feed(b"456789PNG")
    assert commands(events)[0].payload == b"0123456789"
    assert reader.pending == 3


def test_payload_over_the_cap_is_framed_as_the_client_frames_it_but_not_kept():
    # The cap limits what the analysis keeps, never where the next line starts
    # (analyzer/msnp/framing.py): the 48 bytes after the line are the payload the
    # client reads, so the XFR among them is not a command, and CAL after it is.
    body = b"MIME-Version: 1.0\r\n\r\nXFR 9 SB 10.1.2.3:1863 CKI x\r\n"
    data = b"MSG 4 A %d\r\n" % len(body) + body + b"CAL 5 bob@example.com\r\n"
    events = read(C2S, data, max_payload=16)
    assert names(events) == ["msnp.payload.too_large"]
    assert [c.cmd for c in commands(events)] == ["MSG", "CAL"]
    assert commands(events)[0].payload is None and commands(events)[0].payload_len == len(body)
    assert reemitted(events) == data


def test_absurd_payload_length_skips_the_rest_of_the_stream_in_constant_memory():
    reader = CommandReader(C2S)
    events = reader.feed(b"MSG 4 A 99999999999999999999999\r\nCAL 5 bob@example.com\r\n")
    assert names(events) == ["msnp.payload.too_large"] and [c.cmd for c in commands(events)] == ["MSG"]
    for _ in range(100):
        assert not commands(reader.feed(b"CAL 6 x\r\n" * 100))
    assert reader.pending == 0


def test_payload_cap_is_configurable():
    assert names(read(C2S, b"MSG 4 A 100\r\n" + b"x" * 100, max_payload=64))[0] == "msnp.payload.too_large"
    assert names(read(C2S, b"MSG 4 A 100\r\n" + b"x" * 100, max_payload=100)) == []


def test_bad_length_and_truncated_payload():
    assert "msnp.payload.bad_length" in names(read(C2S, b"MSG 4 A abc\r\n"))
    events = read(C2S, b"MSG 4 A 10\r\nshort")
    assert names(events) == ["msnp.payload.truncated"]
    assert commands(events)[0].payload == b"short"


def test_overlong_line_is_skipped_and_decoding_resyncs():
    data = b"CAL 2 " + b"x" * 200 + b"\r\nPNG\r\n"
    for step in (len(data), 7, 1):
        reader = CommandReader(C2S, max_line=64)
        events = []
        for i in range(0, len(data), step):
            events += reader.feed(data[i:i + step])
        events += reader.close()
        assert names(events) == ["msnp.line.too_long"], step
        assert [c.cmd for c in commands(events)] == ["PNG"]
        assert reemitted(events) == data


def test_garbage_is_reported_once_per_run_and_commands_after_it_decode():
    data = b"\x16\x03\x01\x00\xa5garbage\r\nmore junk\r\nPNG\r\n"
    events = read(C2S, data)
    assert names(events) == ["msnp.line.garbage"]
    assert [c.cmd for c in commands(events)] == ["PNG"]
    assert reemitted(events) == data


def test_unknown_lowercase_and_error_from_client():
    assert names(read(C2S, b"ZZZ 1\r\n")) == ["msnp.command.unknown"]
    assert names(read(C2S, b"cal 2 bob@example.com\r\n")) == ["msnp.command.lowercase"]
    assert names(read(C2S, b"217 5\r\n")) == ["msnp.error.from_client"]
    assert names(read(C2S, b"\xc3\xa9A 1\r\n")) == ["msnp.command.non_ascii"]


def test_gap_drops_a_damaged_payload_and_resyncs():
    reader = CommandReader(C2S)
    events = reader.feed(b"MSG 4 A 20\r\n01234")
    events += reader.gap(10)
    events += reader.feed(b"56789PNG\r\n")
    cmds = commands(events)
    assert [c.cmd for c in cmds] == ["MSG", "PNG"]
    assert cmds[0].payload is None  # damaged, not pretended whole
    assert reader.offset == 12 + 20 + 5


def test_empty_feed_and_bad_direction():
    assert CommandReader(C2S).feed(b"") == []
    with pytest.raises(ValueError):
        CommandReader("sideways")


# Every test here runs on both implementations: the pure-Python reference and the compiled core.
pytestmark = pytest.mark.usefixtures("implementation")


def test_a_mid_session_msnp2_to_7_capture_shows_its_dialect():
    # VER was cut away: the first LST line shows the MSNP2-7 shape, so the LSG line after it
    # (ambiguous alone) keeps its TrID too, and the connection says which dialect it speaks.
    state = ProtocolState()
    reader = CommandReader(S2C, state)
    cmds = commands(reader.feed(b"SYN 8 12\r\nLST 8 FL 12 1 1 bob@example.com Bob\r\n"
                                b"LSG 8 12 1 1 0 Other%20Contacts 0\r\n", 1.0))
    assert [(c.cmd, c.trid) for c in cmds] == [("SYN", 8), ("LST", 8), ("LSG", 8)]
    assert state.max_version == 7
    # an LSG of that shape shows it on its own
    [lsg] = commands(read(S2C, b"LSG 8 12 1 1 0 Other%20Contacts 0\r\n"))
    assert lsg.trid == 8 and lsg.raw_params[0] == b"12"
    # and the MSNP8+ shapes stay without a TrID
    assert commands(read(S2C, b"LSG 0 Other%20Contacts 0\r\n"))[0].trid is None
    from analyzer.analysis.connection import Connection
    conn = Connection("1")
    conn.feed(S2C, b"LST 8 FL 12 1 1 bob@example.com Bob\r\n", 1.0)
    assert conn.version_label == "MSNP2-7"
