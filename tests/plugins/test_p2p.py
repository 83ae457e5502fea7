"""plugins/p2p.py: P2P binary headers and MSNSLP."""

import base64
import struct

from analyzer.msnp import encode_command
from analyzer.msnp.transcript import Chunk, format_chunks
from plugin_helpers import run, transcript
from analyzer.msnp.p2p import flag_names, parse_slp
from msnp_analyzer_plugins.p2p import HEADER, P2PPlugin, parse_p2p

FT = "{5D3E02AB-6190-11D3-BBBB-00C04F795683}"
DP = "{A4268EEC-FEC5-49E5-95C3-F126696BDBF6}"


def slp(start: str, call_id: str, body: str) -> bytes:
    head = (f"{start}\r\nTo: <msnmsgr:bob@example.com>\r\nFrom: <msnmsgr:alice@example.com>\r\n"
            f"Via: MSNSLP/1.0/TLP ;branch={{11111111-2222-3333-4444-555555555555}}\r\nCSeq: 0 \r\n"
            f"Call-ID: {call_id}\r\nMax-Forwards: 0\r\nContent-Type: application/x-msnmsgr-sessionreqbody\r\n"
            f"Content-Length: {len(body) + 1}\r\n\r\n{body}")
    return head.encode() + b"\x00"


def p2p_payload(data: bytes, session=0, offset=0, total=None, flags=0, footer=0, cut=0) -> bytes:
    total = len(data) if total is None else total
    header = HEADER.pack(session, 7, offset, total, len(data), flags, 0, 0, 0)
    body = header + data + struct.pack(">I", footer)
    mime = b"MIME-Version: 1.0\r\nContent-Type: application/x-msnmsgrp2p\r\nP2P-Dest: bob@example.com\r\n\r\n"
    return (mime + body)[:len(mime + body) - cut]


def test_header_fields_and_slp_invite():
    context = base64.b64encode(b'<msnobj Creator="a@b.c" Size="1" Type="3" Location="x.dat"/>').decode()
    p = parse_p2p(p2p_payload(slp("INVITE MSNMSGR:bob@example.com MSNSLP/1.0", "{C1}",
                                  f"EUF-GUID: {DP}\r\nSessionID: 99\r\nAppID: 1\r\nContext: {context}\r\n\r\n")))
    assert p.problem is None and p.version == 1 and p.identifier == 7 and p.footer == 0
    invite = parse_slp(p.data)
    assert invite.method == "INVITE" and invite.get("Call-ID") == "{C1}"
    assert invite.application() == "display picture"
    p = parse_p2p(p2p_payload(slp("INVITE MSNMSGR:bob@example.com MSNSLP/1.0", "{C2}", f"EUF-GUID: {FT}\r\n\r\n")))
    assert parse_slp(p.data).application() == "file transfer"
    p = parse_p2p(p2p_payload(slp("MSNSLP/1.0 200 OK", "{C2}", "SessionID: 5\r\n\r\n")))
    assert parse_slp(p.data).method == "200 OK"
    data = parse_p2p(p2p_payload(b"\x01" * 10, session=5, flags=0x1000030, footer=2))
    assert parse_slp(data.data) is None and flag_names(data.flags).startswith("0x1000030")
    assert "file data" in flag_names(data.flags) and data.session_id == 5


def test_truncated_and_inconsistent_headers():
    assert "shorter than the 48-byte header" in parse_p2p(p2p_payload(b"", cut=20)).problem
    assert "footer missing" in parse_p2p(p2p_payload(b"abc", cut=2)).problem
    assert "beyond the total size" in parse_p2p(p2p_payload(b"abcd", offset=10, total=12)).problem


def test_observer_follows_call_ids_and_flags_bad_headers(tmp_path):
    msgs = [p2p_payload(slp("INVITE MSNMSGR:bob@example.com MSNSLP/1.0", "{C9}", f"EUF-GUID: {FT}\r\n\r\n")),
            p2p_payload(slp("MSNSLP/1.0 200 OK", "{C9}", "SessionID: 5\r\n\r\n")),
            p2p_payload(slp("BYE MSNMSGR:bob@example.com MSNSLP/1.0", "{C9}", "\r\n")),
            p2p_payload(b"xyz", cut=3)]
    chunks = [Chunk("c2s", encode_command("MSG", i + 1, ["D"], m), float(i)) for i, m in enumerate(msgs)]
    analysis, manager = run(transcript(tmp_path, format_chunks(chunks)), P2PPlugin())
    call = manager.get("p2p").calls["{C9}"]
    assert call.states == ["INVITE", "200 OK", "BYE"] and call.application == "file transfer"
    assert call.sender == "alice@example.com" and call.receiver == "bob@example.com"
    assert analysis.connections["1"].anomalies["plugin.p2p.bad_header"] == 1
    (sec,) = manager.html_sections()
    assert sec["rows"][0][1:] == ["<redacted>", "file transfer", "alice@example.com", "bob@example.com",
                                  "INVITE -> 200 OK -> BYE"]
    view = manager.decode_payload(analysis and __import__("analyzer.msnp", fromlist=["Command"]).Command(
        "c2s", "MSG", 1, [b"1", b"D", b"1"], b"", msgs[0], len(msgs[0]), 0, None))
    assert view.plugin == "p2p" and view.children[1].title == "MSNSLP INVITE: file transfer"
    assert view.children[0].title == "binary header (version 1)"


def test_version_2_headers_of_a_real_msnp18_capture_are_well_formed():
    """dp18.pcapng (MSNP18, version-2 headers): no bad_header, and the display-picture call followed."""
    from plugin_helpers import REAL
    from analyzer.analysis.run import Analysis
    from analyzer.capture.files import feed_capture
    from analyzer.plugins import PluginManager
    analysis = Analysis([])
    manager = PluginManager(analysis)
    manager.add(P2PPlugin(), "test")
    analysis.sinks.append(manager)
    feed_capture(analysis, str(REAL / "dp18.pcapng"))
    analysis.finish()
    assert analysis.totals()["anomalies"]["plugin.p2p.bad_header"] == 0
    calls = list(manager.get("p2p").calls.values())
    assert len(calls) == 1 and calls[0].application == "display picture"
    assert calls[0].states == ["INVITE", "200 OK", "BYE"]
    assert calls[0].sender == "bob@example.com" and calls[0].receiver == "alice@example.com"


def test_calls_kept_are_bounded(tmp_path, monkeypatch):
    """Past MAX_CALLS the oldest call is folded into counts: the report stays small."""
    from msnp_analyzer_plugins import p2p as p2p_module
    monkeypatch.setattr(p2p_module, "MAX_CALLS", 5)
    msgs = [p2p_payload(slp("INVITE MSNMSGR:bob@example.com MSNSLP/1.0", f"{{C{i}}}", f"EUF-GUID: {FT}\r\n\r\n"))
            for i in range(40)]
    chunks = [Chunk("c2s", encode_command("MSG", i + 1, ["D"], m), float(i)) for i, m in enumerate(msgs)]
    analysis, manager = run(transcript(tmp_path, format_chunks(chunks)), P2PPlugin())
    plugin = manager.get("p2p")
    assert len(plugin.calls) == 5 and sum(plugin.folded.values()) == 35
    (sec,) = manager.html_sections()
    assert sec["rows"][-1][1] == "35 more calls" and len(sec["rows"]) == 6


def test_calls_let_go_are_counted_in_bounded_groups_and_rows(tmp_path, monkeypatch):
    """Each call of an application no one knows (any GUID on the wire names one) folded: at most
    MAX_GROUPS groups are counted and GROUP_ROWS rows shown, the rest in one row (#16)."""
    from msnp_analyzer_plugins import p2p as p2p_module
    monkeypatch.setattr(p2p_module, "MAX_CALLS", 5)
    monkeypatch.setattr(p2p_module, "MAX_GROUPS", 8)
    monkeypatch.setattr(p2p_module, "GROUP_ROWS", 4)
    n = 60
    msgs = [p2p_payload(slp("INVITE MSNMSGR:bob@example.com MSNSLP/1.0", f"{{C{i}}}",
                            f"EUF-GUID: {{00000000-0000-0000-0000-{i:012d}}}\r\n\r\n")) for i in range(n)]
    chunks = [Chunk("c2s", encode_command("MSG", i + 1, ["D"], m), float(i)) for i, m in enumerate(msgs)]
    analysis, manager = run(transcript(tmp_path, format_chunks(chunks)), P2PPlugin())
    plugin = manager.get("p2p")
    assert len(plugin.folded) == 9 and sum(plugin.folded.values()) == n - 5
    assert plugin.folded[("other applications", "?")] == n - 5 - 8
    (sec,) = manager.html_sections()
    more = [r for r in sec["rows"] if r[1].endswith("more calls")]
    assert len(more) == p2p_module.GROUP_ROWS + 1 and sum(int(r[1].split()[0]) for r in more) == n - 5


def test_the_sections_mask_call_ids_with_the_runs_key(capsys, monkeypatch):
    """An MSNSLP Call-ID is a session secret: masked in the plugin's report section as in every export."""
    import re
    from pathlib import Path

    import pytest
    from analyzer.cli.main import main
    real = Path(__file__).resolve().parents[2].parent / "shared" / "captures-real" / "ft15.pcapng"
    if not real.is_file():
        pytest.skip("../shared/captures-real is not beside the clone")
    monkeypatch.setenv("COLUMNS", "200")
    main(["analyze", str(real), "--no-redact"])
    plain = capsys.readouterr().out
    ids = set(re.findall(r"\{[0-9A-Fa-f-]{36}\}", plain.split("P2P sessions")[1]))
    assert ids, "the unredacted report shows the Call-IDs"
    main(["analyze", str(real)])
    masked = capsys.readouterr().out.split("P2P sessions")[1]
    assert not any(i in masked for i in ids) and "<redacted:" in masked
