"""plugins/chat.py and `msnp-analyzer chat`: readable transcripts with each sender named."""

import json

import pytest

from analyzer.cli.main import main
from plugin_helpers import REAL, SAMPLE, reader_available, run, transcript
from msnp_analyzer_plugins.chat import ChatPlugin


def lines(manager):
    return [(sb.stream, l.sender, l.text) for sb in manager.get("chat").transcripts() for l in sb.lines]


def test_sample_transcript_names_both_sides():
    _, manager = run(SAMPLE, ChatPlugin())
    assert lines(manager) == [("1", "alice@example.com", "Hello Bob, are you there?"),
                              ("1", "bob@example.com", "Hi Alice! Yes."),
                              ("1", "alice@example.com", "Great, see you later.")]


TEXT = ("MIME-Version: 1.0\\r\\nContent-Type: text/plain; charset=UTF-8\\r\\n\\r\\n")
TYPING = "MIME-Version: 1.0\\r\\nContent-Type: text/x-msmsgscontrol\\r\\nTypingUser: {}\\r\\n\\r\\n\\r\\n"


def client_msg(trid, body):
    payload = body.replace("\\r\\n", "\r\n")
    return f">>> MSG {trid} N {len(payload.encode())}\\r\\n{body}\n"


def test_mid_session_sender_from_typing_user_seen_after_the_message(tmp_path):
    f = transcript(tmp_path, client_msg(5, TEXT + "first") + client_msg(6, TYPING.format("carol@example.com")))
    _, manager = run(f, ChatPlugin())
    assert lines(manager) == [("1", "carol@example.com", "first")]


def test_mid_session_sender_from_the_ns_login_or_unknown(tmp_path):
    ns = "@ns >>> USR 1 TWN I dave@example.com\\r\\n\n@ns <<< USR 1 OK dave@example.com Dave 1 0\\r\\n\n"
    sb = client_msg(5, TEXT + "hello").replace(">>>", "@sb >>>")
    _, manager = run(transcript(tmp_path, ns + sb), ChatPlugin())
    assert lines(manager) == [("sb", "dave@example.com", "hello")]
    analysis, manager = run(transcript(tmp_path, sb, "alone.msnp"), ChatPlugin())
    assert lines(manager) == [("sb", None, "hello")]
    assert analysis.connections["sb"].anomalies["plugin.chat.unknown_sender"] == 1


def test_ppa1e_through_the_plugin():
    _, manager = run(REAL / "ppa1e_msnms.pcap", ChatPlugin())
    senders = [s for _, s, _ in lines(manager)]
    assert senders.count("tesla_brian@hotmail.com") == 4 and senders.count("tesla_thomas@hotmail.com") == 3


needs_reader = pytest.mark.skipif(not reader_available(), reason="the pcap reader (analyzer/capture) is not in this tree")


@needs_reader
def test_chat_command_on_ppa1e_names_every_sender(capsys):
    assert main(["chat", str(REAL / "ppa1e_msnms.pcap")]) == 0
    out = capsys.readouterr().out
    msgs = [l for l in out.splitlines() if l[:4].isdigit()]
    assert len(msgs) == 7
    assert sum(": " in l and "tesla_brian@hotmail.com: " in l for l in msgs) == 4
    assert sum("tesla_thomas@hotmail.com: " in l for l in msgs) == 3
    assert "unknown" not in out
    assert "tesla_brian@hotmail.com: Hey Brian" in out
    assert "tesla_thomas@hotmail.com: maybe we should try hacking into a server to mess with him?" in out


@needs_reader
def test_chat_command_on_ndpi_prints_its_34_messages(capsys):
    assert main(["chat", str(REAL / "ndpi_msnms.pcap"), "--json"]) == 0
    recs = [json.loads(l) for l in capsys.readouterr().out.splitlines()]
    assert len(recs) == 34
    assert all(r["sender"] in ("jujurius@msn.com", "cecile260992@hotmail.com") for r in recs)
    # the first switchboard starts mid-session: its user is known only from TypingUser headers
    first = [r for r in recs if r["dir"] == "c2s"][0]
    assert first["sender"] == "jujurius@msn.com" and first["text"].startswith("ouai mai tu voi")
    assert len({r["stream"] for r in recs}) == 5


def test_chat_command_bad_input(tmp_path, capsys):
    assert main(["chat", str(tmp_path / "missing.pcap")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no such file" in err


def test_chat_html_section_rows():
    _, manager = run(SAMPLE, ChatPlugin())
    (sec,) = manager.html_sections()
    assert sec["columns"] == ["time", "sender", "text"]
    assert sec["rows"][1] == ["+2.650s", "bob@example.com", "Hi Alice! Yes."]


def test_terminal_section_lists_the_first_chats_and_counts_the_rest(tmp_path):
    from rich.console import Console
    import io
    from msnp_analyzer_plugins import chat as chat_module
    boards = chat_module.TERMINAL_ROWS + 5
    text = "".join(client_msg(i + 1, TEXT + f"hello {i}").replace(">>>", f"@sb{i} >>>") for i in range(boards))
    _, manager = run(transcript(tmp_path, text), ChatPlugin())
    assert len(manager.get("chat").transcripts()) == boards
    out = io.StringIO()
    Console(file=out, width=200).print(*manager.get("chat").terminal_sections())
    rendered = out.getvalue()
    listed = [line for line in rendered.splitlines() if line.startswith("│ sb")]
    assert len(listed) == chat_module.TERMINAL_ROWS
    assert "5 more chats" in rendered and "│ 5 " in rendered.split("5 more chats")[1].splitlines()[0]


def summary_only():
    plugin = ChatPlugin()
    plugin.html_report = False  # as `analyze` without --html sets it
    return plugin


def test_without_an_html_report_counts_and_times_are_kept_but_no_text(tmp_path):
    _, full = run(SAMPLE, ChatPlugin())
    _, brief = run(SAMPLE, summary_only())
    (a,), (b,) = full.get("chat").transcripts(), brief.get("chat").transcripts()
    assert len(a.lines) == 3 and b.lines == ()    # the shared empty tuple: no list per board
    assert all(sb.lines == () for sb in brief.get("chat").switchboards.values())
    assert (b.messages, b.client_messages) == (3, 2)
    assert (b.first_message, b.last_message) == (a.lines[0].ts, a.lines[-1].ts)
    assert b.participants == a.participants == ["alice@example.com", "bob@example.com"]
    # the unnamed-sender finding does not need the text either
    sb = client_msg(5, TEXT + "hello").replace(">>>", "@sb >>>")
    analysis, _ = run(transcript(tmp_path, sb), summary_only())
    assert analysis.connections["sb"].anomalies["plugin.chat.unknown_sender"] == 1


@needs_reader
def test_analyze_keeps_chat_text_only_when_it_writes_html(tmp_path, monkeypatch, capsys):
    made = []
    original = ChatPlugin.__init__

    def record(self):
        original(self)
        made.append(self)
    monkeypatch.setattr(ChatPlugin, "__init__", record)
    monkeypatch.setenv("COLUMNS", "200")  # wide enough for the chats table (80 columns get blocks)
    assert main(["analyze", str(REAL / "ppa1e_msnms.pcap")]) == 0
    (plain,) = made
    row = capsys.readouterr().out.split("Chats")[1].splitlines()[4]
    assert [c.strip() for c in row.split("│")[1:4:2]] == ["1", "7"]  # the board and its message count
    (board,) = plain.transcripts()
    assert plain.html_report is False and board.messages == 7 and board.lines == ()
    page = tmp_path / "t.html"
    assert main(["analyze", str(REAL / "ppa1e_msnms.pcap"), "--html", str(page)]) == 0
    html_plugin = made[1]
    assert html_plugin.html_report is True and len(html_plugin.transcripts()[0].lines) == 7
    assert "maybe we should try hacking into a server to mess with him?" in page.read_text()


def test_summary_mode_folds_ended_boards_past_the_listed_ones_into_the_same_table(tmp_path):
    from rich.console import Console
    import io
    from msnp_analyzer_plugins import chat as chat_module
    boards = chat_module.TERMINAL_ROWS + 7
    # Each board names its user (USR), so it can be folded when it ends; boards end in
    # the order they opened but later ones spoke first: the earliest speakers stay listed.
    text = "".join(f"{i} @sb{i} >>> USR 1 alice@example.com 1234.{i}\\r\\n\n" for i in range(boards))
    text += "".join(f"{1000 - i} " + client_msg(2, TEXT + f"hello {i}").replace(">>>", f"@sb{i} >>>")
                    for i in range(boards))
    tables = []
    for plugin in (ChatPlugin(), summary_only()):
        _, manager = run(transcript(tmp_path, text), plugin)
        out = io.StringIO()
        Console(file=out, width=200).print(*plugin.terminal_sections())
        tables.append(out.getvalue())
    assert tables[0] == tables[1] and "7 more chats" in tables[1]
    brief = manager.get("chat")
    assert brief.folded[:2] == [7, 7] and brief.switchboards == {}
    assert len(brief.transcripts()) == chat_module.TERMINAL_ROWS
    assert brief.transcripts()[0].stream == f"sb{boards - 1}" and f"sb{boards - 1} " in tables[1]


def test_html_lines_are_capped_per_board_and_overall_and_the_rest_counted(tmp_path):
    # Two boards of 6 messages; at most 4 lines per board and 7 overall are kept for the HTML report.
    text = "".join(client_msg(i + 1, TEXT + f"hello {i}").replace(">>>", f"@sb{b} >>>")
                   for b in range(2) for i in range(6))
    _, manager = run(transcript(tmp_path, text), ChatPlugin(line_limit=(4, 7)))
    a, b = manager.get("chat").transcripts()
    assert [len(a.lines), len(b.lines)] == [4, 3] and [a.more_lines, b.more_lines] == [2, 3]
    assert (a.messages, b.messages) == (6, 6)
    sections = manager.get("chat").html_sections()
    assert [len(s["rows"]) for s in sections] == [5, 4]
    assert sections[1]["rows"][-1][2].startswith("3 more messages")
    # The chat command keeps every line.
    from msnp_analyzer_plugins.chat import ALL_LINES
    _, manager = run(transcript(tmp_path, text, "all.msnp"), ChatPlugin(line_limit=ALL_LINES))
    assert [len(sb.lines) for sb in manager.get("chat").transcripts()] == [6, 6]


def test_html_sections_list_the_first_chats_and_count_the_rest(tmp_path, monkeypatch):
    from msnp_analyzer_plugins import chat as chat_module
    monkeypatch.setattr(chat_module, "HTML_BOARDS", 3)
    text = "".join(client_msg(i + 1, TEXT + f"hello {i}").replace(">>>", f"@sb{i} >>>") for i in range(5))
    _, manager = run(transcript(tmp_path, text), ChatPlugin())
    sections = manager.get("chat").html_sections()
    assert [s["title"].split(" (")[0] for s in sections[:3]] == [f"Chat on switchboard sb{i}" for i in range(3)]
    assert sections[3]["title"] == "2 more chats" and sections[3]["rows"][0][:2] == ["2", "2"]
    assert len(sections) == 4


def test_server_message_senders_are_read_as_facts_reads_them_within_a_bound(monkeypatch):
    # The plugin remembers (handle, service) per MSG's first parameter, at most MAX_SENDERS
    # of them: the participants it names are those facts.sender names, however many senders.
    from analyzer.msnp import S2C, Command
    from analyzer.msnp.facts import sender
    from msnp_analyzer_plugins import chat as chat_module
    monkeypatch.setattr(chat_module, "MAX_SENDERS", 3)
    plugin = ChatPlugin()

    class Conn:
        id, client, server, role, handle = "7", None, None, "SB", None

    payload = TEXT.replace("\\r\\n", "\r\n").encode() + b"hi"
    tokens = [b"a@example.com", b"B@Example.com;{1}", b"Hotmail", b"c@example.com", b"a@example.com",
              b"d@example.com", b"B@Example.com;{1}", b"e@example.com", b"hotmail"]
    expected = []
    for n, token in enumerate(tokens):
        cmd = Command(S2C, "MSG", None, [token, b"Nick", str(len(payload)).encode()], b"", payload,
                      len(payload), n, float(n))
        plugin.on_command(Conn(), cmd)
        found = sender(cmd)
        if not found.service and found.endpoint.handle not in expected:
            expected.append(found.endpoint.handle)
        assert len(plugin._senders) <= 3
    board = plugin.switchboards["7"]
    assert board.others == expected == ["a@example.com", "B@Example.com", "c@example.com", "d@example.com",
                                        "e@example.com"]
    assert board.messages == len(tokens)


def test_a_board_names_each_participant_once_and_keeps_a_set_only_past_a_few(monkeypatch):
    # Thousands of boards are open at once on a busy server: one of a few people is looked up
    # in its list (no set per board); past OTHERS_SCANNED a set keeps each JOI one lookup.
    from analyzer.msnp import S2C, Command
    from msnp_analyzer_plugins import chat as chat_module
    monkeypatch.setattr(chat_module, "OTHERS_SCANNED", 4)
    plugin = ChatPlugin()

    class Conn:
        id, client, server, role, handle = "7", None, None, "SB", None

    def joi(n, handle):
        line = b"JOI %s Nick\r\n" % handle
        plugin.on_command(Conn(), Command(S2C, "JOI", None, [handle, b"Nick"], line, None, None, n, float(n)))

    for n, h in enumerate([b"a@x.com", b"b@x.com", b"A@x.com;{1}", b"b@x.com", b"c@x.com"]):
        joi(n, h)
    board = plugin.switchboards["7"]
    assert board.others == ["a@x.com", "b@x.com", "A@x.com", "c@x.com"] and plugin._others_seen == {}
    for n, h in enumerate([b"d@x.com", b"a@x.com", b"e@x.com", b"d@x.com", b"c@x.com"], 10):
        joi(n, h)
    assert board.others == ["a@x.com", "b@x.com", "A@x.com", "c@x.com", "d@x.com", "e@x.com"]
    assert plugin._others_seen == {"7": set(board.others)}
