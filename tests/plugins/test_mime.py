"""plugins/mime.py: MSG payloads as MIME."""

from analyzer.msnp import S2C, Command
from analyzer.analysis.redact import Redactor
from plugin_helpers import REAL, SAMPLE, run
from msnp_analyzer_plugins.mime import MimePlugin, classify, describe, parse_font, parse_mime


def msg(payload: bytes, direction=S2C) -> Command:
    return Command(direction, "MSG", None, [b"Hotmail", b"Hotmail", str(len(payload)).encode()],
                   b"", payload, len(payload), 0, None)


def test_sample_kinds_and_text_view():
    analysis, manager = run(SAMPLE, MimePlugin())
    assert manager.get("mime").kinds == {"text": 3, "typing": 2}
    payload = (b"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=UTF-8\r\n"
               b"X-MMS-IM-Format: FN=MS%20Shell%20Dlg; EF=BI; CO=C81ABB; CS=0; PF=2\r\n\r\nh\xc3\xa9 there")
    view = manager.decode_payload(msg(payload))
    assert view.body == "hé there" and ("charset", "UTF-8") in view.fields
    fmt = dict(view.children[0].fields)
    assert fmt["font"] == "MS Shell Dlg" and fmt["colour"] == "#bb1ac8" and fmt["effects"] == "bold, italic"


def test_font_colour_is_bgr():
    assert dict(parse_font("FN=Arial; CO=ff"))["colour"] == "#ff0000"
    assert dict(parse_font("CO=ff0000"))["colour"] == "#0000ff"
    assert dict(parse_font("RL=1"))["direction"] == "right to left"


def test_typing_invitation_profile_email():
    typing = parse_mime(b"MIME-Version: 1.0\r\nContent-Type: text/x-msmsgscontrol\r\nTypingUser: a@b.c\r\n\r\n\r\n")
    assert classify(typing) == "typing"
    invite = parse_mime(
        b"MIME-Version: 1.0\r\nContent-Type: text/x-msmsgsinvite; charset=UTF-8\r\n\r\n"
        b"Application-Name: File Transfer\r\nApplication-GUID: {5D3E02AB-6190-11d3-BBBB-00C04F795683}\r\n"
        b"Invitation-Command: INVITE\r\nInvitation-Cookie: 12345\r\nApplication-File: notes.txt\r\n"
        b"Application-FileSize: 1024\r\n\r\n")
    view = describe(invite, classify(invite))
    assert classify(invite) == "invitation"
    assert view.children[0].title == "invitation INVITE: file transfer"
    assert ("Application-File", "notes.txt") in view.children[0].fields
    accept = parse_mime(b"Content-Type: text/x-msmsgsinvite\r\n\r\nInvitation-Command: ACCEPT\r\n"
                        b"Invitation-Cookie: 12345\r\nIP-Address: 10.0.0.1\r\nPort: 6891\r\nAuthCookie: 999\r\n\r\n")
    child = describe(accept, "invitation").children[0]
    shown = dict(child.to_dict(Redactor(key=b"k"))["fields"])
    assert shown["AuthCookie"].startswith("<redacted:") and shown["Port"] == "6891"
    profile = parse_mime(b"MIME-Version: 1.0\r\nContent-Type: text/x-msmsgsprofile; charset=UTF-8\r\n"
                         b"LoginTime: 1115370000\r\nMSPAuth: 2AAAAsecretticket\r\nClientIP: 1.2.3.4\r\n\r\n")
    assert classify(profile) == "profile"
    d = describe(profile, "profile").to_dict(Redactor(key=b"k"))
    assert "2AAAAsecretticket" not in str(d) and ["ClientIP", "1.2.3.4"] in d["fields"]
    assert "2AAAAsecretticket" in str(describe(profile, "profile").to_dict(Redactor(enabled=False)))
    mail = parse_mime(b"MIME-Version: 1.0\r\nContent-Type: text/x-msmsgsemailnotification; charset=UTF-8\r\n\r\n"
                      b"From: Bob\r\nSubject: hello\r\nDest-Folder: ACTIVE\r\n\r\n")
    assert classify(mail) == "email"
    assert ("Subject", "hello") in describe(mail, "email").children[0].fields


def test_not_mime_is_flagged(tmp_path):
    from analyzer.anomalies import CATALOGUE
    f = tmp_path / "t.msnp"
    f.write_text(">>> MSG 1 U 5\\r\\nhello\n")
    analysis, manager = run(f, MimePlugin())
    assert manager.get("mime").kinds == {"malformed": 1}
    assert analysis.connections["1"].anomalies["plugin.mime.not_mime"] == 1
    assert "plugin.mime.not_mime" in CATALOGUE


def test_ndpi_all_244_msg_payloads_classified():
    analysis, manager = run(REAL / "ndpi_msnms.pcap", MimePlugin())
    kinds = manager.get("mime").kinds
    assert analysis.totals()["commands"]["MSG"] == 244
    assert sum(kinds.values()) == 244
    assert kinds == {"typing": 210, "text": 34}  # no "other", no "malformed"


def test_ppa1e_kinds():
    _, manager = run(REAL / "ppa1e_msnms.pcap", MimePlugin())
    assert manager.get("mime").kinds["text"] == 7


def test_unknown_charset_is_flagged_and_shown_as_utf8(tmp_path):
    body = "MIME-Version: 1.0\\r\\nContent-Type: text/plain; charset=x-nonsense\\r\\n\\r\\nhi"
    f = tmp_path / "t.msnp"
    f.write_text(f">>> MSG 1 N {len(body.replace(chr(92) + 'r' + chr(92) + 'n', '  '))}\\r\\n{body}\n")
    analysis, manager = run(f, MimePlugin())
    assert analysis.connections["1"].anomalies["plugin.mime.bad_charset"] == 1
    assert parse_mime(b"Content-Type: text/plain; charset=x-nonsense\r\n\r\nhi").text() == "hi"


def test_a_payload_is_parsed_and_classified_once_for_the_plugins_that_read_it():
    # mime, chat and p2p look at the same MSG payload in turn: one parse, one classification.
    payload = b"MIME-Version: 1.0\r\nContent-Type: text/x-msmsgscontrol\r\nTypingUser: once@b.c\r\n\r\n\r\n"
    first = parse_mime(payload)   # a payload no other test parses (parse_mime is memoised)
    # classified as it enters the memo (every dispatch asks the kind first; the memo counts
    # what a message holds once nothing more is added to it), then never again
    assert first._kind == "typing" and first._typing_user == "once@b.c"
    first._kind = "checked"
    assert classify(first) == "checked" and first.typing_user == "once@b.c"
    first._kind = "typing"
    assert parse_mime(bytes(bytearray(payload))) is first
    nobody = parse_mime(b"Content-Type: text/x-msmsgscontrol\r\nX-Once: 1\r\n\r\n\r\n")
    assert classify(nobody) == "control" and nobody.typing_user is None


def test_charsets_python_cannot_decode_text_in_are_flagged_and_shown_as_utf8():
    # Off the wire: a NUL in the name (ValueError), codecs that cannot replace bad bytes (idna,
    # punycode, undefined), codecs that are not text codecs (base64): none may disable a
    # plugin; each is reported once per message as bad_charset and the text shown as UTF-8.
    from analyzer.analysis.run import Analysis
    from analyzer.plugins import PluginManager
    from msnp_analyzer_plugins.chat import ChatPlugin
    analysis = Analysis([])
    manager = PluginManager(analysis, warn=lambda message: None)
    manager.add(MimePlugin(), "test")
    manager.add(ChatPlugin(), "test")
    analysis.sinks.append(manager)
    conn = analysis.open(conn_id="1")
    names = [b"a\x00b", b"idna", b"punycode", b"undefined", b"base64", b"utf-8", b"latin-1"]
    for n, name in enumerate(names):
        payload = b"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=" + name + b"\r\n\r\nh\xc3\xa9 \xff" + bytes([n])
        analysis.feed(conn, S2C, b"MSG bob@example.com Bob %d\r\n" % len(payload) + payload, float(n))
        assert parse_mime(payload).text().startswith("hé" if name != b"latin-1" else "hÃ©")
    assert all(lp.enabled for lp in manager.loaded)
    assert analysis.connections["1"].anomalies["plugin.mime.bad_charset"] == 5
    lines = manager.get("chat").switchboards["1"].lines
    assert [line.text[:2] for line in lines] == ["hé"] * 6 + ["hÃ"]
