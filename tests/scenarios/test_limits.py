"""Cost proportional to input (issue #16): each pathological class stays within its limit and says so.

Counts, never timings (bench/scaling.py measures the time ratios): how many
times an input is looked at, how much is held at once, how many records come
out, and the one anomaly that reports a limit.
"""

from __future__ import annotations

import gzip
import io
import json

from rich.console import Console

from analyzer.analysis.run import Analysis
from analyzer.capture import pcap as pcap_module
from analyzer.capture.detect import Detector
from analyzer.capture.tcp import Early
from analyzer.capture.files import RAW_CHUNK, open_captures
from analyzer.cli.main import main
from captures.make_hostile import clean_pcap, ethernet, pcap_header, pcap_record, tcp_segment


class CountingList(list):
    """A list that counts the items read from it by index."""

    reads = 0

    def __getitem__(self, i):
        CountingList.reads += 1
        return super().__getitem__(i)


class FakeFlow:
    def __init__(self):
        self.early = CountingList()
        self.early_bytes = 0
        self.keys = (b"\x7f\0\0\x01\x7f\0\0\x02" + (30000).to_bytes(2, "big") + (5000).to_bytes(2, "big"),)
        self.client_hint = None


class FakeTracker:
    def __init__(self):
        self.verdicts = []

    def accept(self, flow, client):
        self.verdicts.append(("accept", client))

    def reject(self, flow):
        self.verdicts.append(("reject",))


def test_detection_reads_each_delivery_once_however_it_is_chopped():
    # A first line sent one byte per segment on a port that is not MSNP's: the detector
    # is asked after every byte and must not re-read the earlier ones each time.
    detector, tracker, flow = Detector(), FakeTracker(), FakeFlow()
    CountingList.reads = 0
    line = b"VER 1 " + b"x" * 900 + b"\r\n"
    for i in range(len(line)):
        flow.early.append(Early(0, 0.0, line[i:i + 1]))
        flow.early_bytes += 1
        detector.decide(tracker, flow, final=False)
        if tracker.verdicts:
            break
    assert tracker.verdicts == [("accept", 0)]  # the client spoke first, VER is MSNP
    assert CountingList.reads == len(line)      # each delivery read once (was n*(n+1)/2)
    assert detector._heads == {}                # nothing kept once decided


def test_detection_forgets_a_flow_it_rejects_and_keeps_at_most_the_head():
    detector, tracker, flow = Detector(), FakeTracker(), FakeFlow()
    for _ in range(3000):  # one byte at a time, never a line end, 3,000 bytes
        flow.early.append(Early(0, 0.0, b"A"))
        flow.early_bytes += 1
        detector.decide(tracker, flow, final=False)
        if tracker.verdicts:
            break
        state = detector._heads[id(flow)]
        assert len(state[1]) <= 1024  # HEAD_BYTES: the head kept, not the flow
    assert tracker.verdicts == [("reject",)] and detector._heads == {}


def test_decode_feeds_a_raw_stream_in_bounded_reads(tmp_path, monkeypatch):
    line = b"NLN NLN bob@example.com Bob 0\r\n"
    path = tmp_path / "raw.bin"
    path.write_bytes(line * 20_000)  # 640 kB
    seen = []
    original = Analysis.feed

    def feed(self, conn, direction, data, ts=None):
        events = original(self, conn, direction, data, ts)
        seen.append((len(data), len(events)))
        return events

    monkeypatch.setattr(Analysis, "feed", feed)
    out = tmp_path / "out.jsonl"
    assert main(["decode", str(path), "--dir", "s2c", "--json", str(out)]) == 0
    assert sum(n for n, _ in seen) == path.stat().st_size
    assert max(n for n, _ in seen) <= RAW_CHUNK and len(seen) == -(-path.stat().st_size // RAW_CHUNK)
    # the events of one read are bounded by what one read can hold, not by the file
    assert max(e for _, e in seen) <= RAW_CHUNK // len(line) + 2
    commands = sum(1 for rec in out.read_text().splitlines() if json.loads(rec)["kind"] == "command")
    assert commands == 20_000  # the lines across read boundaries are whole


def test_gzip_inflation_is_capped_and_reported_once(tmp_path, monkeypatch):
    monkeypatch.setattr(pcap_module, "INFLATE_FLOOR", 256 * 1024)
    record = pcap_record(ethernet(tcp_segment("127.0.0.5", 40000, "127.0.0.6", 80, 1, 1, "PA", b"\0" * 1000)), 1.0)
    path = tmp_path / "bomb.pcap.gz"
    with gzip.open(path, "wb") as f:
        f.write(pcap_header() + record * 2000)  # 2 MB inflated from a few kB
    [capture] = open_captures([str(path)])
    segments = sum(1 for _ in capture.segments())
    names = [a.name for a in capture.anomalies]
    assert names == ["capture.inflate_limit"]  # not also capture.truncated: the file did not end there
    cap = max(256 * 1024, 100 * path.stat().st_size)
    assert segments == capture.packets <= cap // len(record) + 1 < 2000
    assert f"past {cap} bytes" in capture.anomalies[0].detail


def test_a_gzip_capture_within_the_cap_reads_whole(tmp_path):
    path = tmp_path / "clean.pcap.gz"
    path.write_bytes(gzip.compress(clean_pcap()))
    [capture] = open_captures([str(path)])
    assert sum(1 for _ in capture.segments()) > 0
    assert capture.anomalies == []


def test_joi_flood_lists_each_participant_once_and_the_terminal_cell_stays_short(tmp_path):
    lines = [">>> USR 1 alice@example.com 1.2.3\\r\\n", "<<< USR 1 OK alice@example.com Alice\\r\\n"]
    lines += [f"<<< JOI u{i}@example.com U{i}\\r\\n" for i in range(3000)]
    lines += [f"<<< JOI u{i}@example.com U{i}\\r\\n" for i in range(3000)]  # the same people again
    body = "MIME-Version: 1.0\\r\\nContent-Type: text/plain; charset=UTF-8\\r\\n\\r\\nhi"
    lines += [f"<<< MSG u1@example.com U1 {len(body.replace(chr(92) * 2, chr(92)).encode().decode('unicode_escape'))}"
              f"\\r\\n<<< {body}"]
    path = tmp_path / "flood.msnp"
    path.write_text("\n".join(lines) + "\n")
    out = tmp_path / "out.jsonl"
    report = io.StringIO()
    import analyzer.cli.main as cli_main
    console = Console(file=report, width=120)
    original = cli_main.report_console
    cli_main.report_console = lambda args: console
    try:
        assert main(["decode", str(path), "--json", str(out)]) == 0
    finally:
        cli_main.report_console = original
    chats = [json.loads(r) for r in out.read_text().splitlines() if json.loads(r)["kind"] == "chat"]
    assert len(chats) == 1
    handles = [p["handle"] for p in chats[0]["participants"]]
    assert len(handles) == 3001 and handles[0] == "alice@example.com"  # the user, then 3,000 once each
    assert "+2991 more" in report.getvalue()  # 10 listed in the Chats table's cell
    assert max(len(line) for line in report.getvalue().splitlines()) <= 120


def test_a_connection_keeps_a_bounded_sample_of_its_latencies():
    from analyzer.analysis.connection import LATENCY_SAMPLE, Connection
    conn = Connection("1")
    n = LATENCY_SAMPLE * 3
    for i in range(n):
        conn.feed("c2s", b"PNG\r\n", float(i))
        conn.feed("s2c", b"QNG 50\r\n", i + 0.25)
    assert conn.outcomes["answered"] == n                  # every transaction counted
    assert len(conn.latencies) == LATENCY_SAMPLE          # but only a sample of latencies held
    assert set(conn.latencies) == {250.0} and conn.latency_count == n - LATENCY_SAMPLE


def test_every_run_folds_closed_connections_past_keep_closed():
    from analyzer.analysis.run import KEEP_CLOSED, Analysis
    analysis = Analysis()
    for _ in range(KEEP_CLOSED + 500):
        conn = analysis.open()
        analysis.feed(conn, "c2s", b"PNG\r\n", 1.0)
        analysis.close(conn, 2.0)
    assert len(analysis.connections) == KEEP_CLOSED and analysis.folded.count == 500
    assert analysis.totals()["connections"] == KEEP_CLOSED + 500
    assert analysis.totals()["commands"]["PNG"] == KEEP_CLOSED + 500


def test_mime_counts_at_most_max_types_content_types():
    from analyzer.msnp import CommandReader
    from msnp_analyzer_plugins.mime import MAX_TYPES, OTHER_TYPES, MimePlugin
    plugin = MimePlugin()
    reader = CommandReader("c2s")
    n = MAX_TYPES + 50
    for i in range(n):
        payload = b"MIME-Version: 1.0\r\nContent-Type: text/x-crafted-%d\r\n\r\nx" % i
        for cmd in reader.feed(b"MSG %d U %d\r\n" % (i + 1, len(payload)) + payload):
            plugin.on_command(None, cmd)
    assert len(plugin.types) == MAX_TYPES + 1 and plugin.types[OTHER_TYPES] == 50
    assert sum(plugin.types.values()) == n  # every message still counted


def test_login_linker_holds_at_most_max_tickets_per_table_and_says_so_once():
    from analyzer.capture.mitm import passport
    from analyzer.msnp import Anomaly, CommandReader

    class Recorder:
        def __init__(self):
            self.anomalies, self.records = [], []
            self.redactor = None

        def anomaly(self, conn, anomaly):
            self.anomalies.append(anomaly)

        def record(self, conn, rec):
            self.records.append(rec)

    from analyzer.analysis.redact import Redactor
    run = Recorder()
    linker = passport.LoginLinker(run, Redactor())
    reader = CommandReader("c2s")
    n = passport.MAX_TICKETS + 300
    for i in range(n):  # USR with tickets no login issued (a capture without the HTTPS side)
        for cmd in reader.feed(b"USR %d TWN S t=ticket%d&p=x\r\n" % (i + 1, i)):
            linker.event(object(), cmd)
    assert len(linker.presented) == passport.MAX_TICKETS and linker.forgotten == 300
    assert [a.name for a in run.anomalies if type(a) is Anomaly] == ["passport.ticket_limit"]


def _crafted_codes(n: int) -> list[bytes]:
    """n distinct three-letter codes no MSNP version defines (each an msnp.command.unknown)."""
    from itertools import product
    from string import ascii_uppercase
    from analyzer.msnp.tables import KNOWN_COMMANDS
    codes = ("".join(t).encode() for t in product(ascii_uppercase[::-1], repeat=3))
    return [c for c in codes if c not in KNOWN_COMMANDS][:n]


def test_a_connection_counts_at_most_max_command_codes_one_by_one_and_says_so_once():
    from analyzer.analysis.connection import MAX_COMMAND_CODES, OTHER_CODES, Connection
    from analyzer.msnp import Anomaly, Command
    conn = Connection("1")
    codes = _crafted_codes(MAX_COMMAND_CODES + 44)
    events = conn.feed("s2c", b"".join(b"%s %d x\r\n" % (c, i) for i, c in enumerate(codes, 1)), 1.0)
    events += conn.feed("s2c", b"%s 9 x\r\n" % codes[-1], 2.0)   # a code past the cap, again
    assert len(conn.commands) == MAX_COMMAND_CODES + 1
    assert conn.commands[OTHER_CODES] == 45 and sum(conn.commands.values()) == len(codes) + 1
    limits = [i for i, e in enumerate(events) if type(e) is Anomaly and e.name == "msnp.command.code_limit"]
    assert len(limits) == 1 and conn.anomalies["msnp.command.code_limit"] == 1
    first_over = events[limits[0] + 1]   # the anomaly sits just before the line that hit the cap
    assert type(first_over) is Command and first_over.cmd == codes[MAX_COMMAND_CODES].decode()
    assert repr(first_over.cmd) in events[limits[0]].detail


def test_a_run_totals_at_most_max_run_codes_one_by_one():
    from analyzer.analysis.connection import MAX_COMMAND_CODES, MAX_RUN_CODES, OTHER_CODES
    from analyzer.analysis.run import KEEP_CLOSED
    analysis = Analysis()
    analysis.keep_closed = 2   # fold most connections: both the folded and the kept are capped
    codes = _crafted_codes(MAX_COMMAND_CODES * 6)
    lines = 0
    for k in range(6):
        conn = analysis.open()
        chunk = codes[k * MAX_COMMAND_CODES:(k + 1) * MAX_COMMAND_CODES]
        analysis.feed(conn, "s2c", b"".join(b"%s 1 x\r\n" % c for c in chunk), 1.0)
        lines += len(chunk)
        analysis.close(conn, 2.0)
    totals = analysis.totals()["commands"]
    assert len(analysis.folded.commands) <= MAX_RUN_CODES + 1
    assert len(totals) == MAX_RUN_CODES + 1 and sum(totals.values()) == lines
    assert totals[OTHER_CODES] == lines - MAX_RUN_CODES
    assert KEEP_CLOSED > 2


def test_the_pending_limit_is_said_when_first_hit_and_counted_in_the_stream_record():
    from analyzer.analysis.connection import Limits
    from analyzer.msnp import Anomaly
    from analyzer.outputs.jsonl import JsonLinesWriter
    out = io.StringIO()
    analysis = Analysis([JsonLinesWriter(out)], limits=Limits(max_pending=100))
    conn = analysis.open("127.0.0.1:40000", "127.0.0.2:1863")
    said = analysis.feed(conn, "c2s", b"PNG\r\n" * 101, 1.0)   # one past the limit
    assert [e.name for e in said if type(e) is Anomaly] == ["msnp.trid.pending_limit"]
    analysis.feed(conn, "c2s", b"PNG\r\n" * 400, 2.0)
    analysis.close(conn, 3.0)
    records = [json.loads(line) for line in out.getvalue().splitlines()]
    stream = next(r for r in records if r["kind"] == "stream")
    assert stream["anomalies"]["msnp.trid.pending_limit"] == 1
    assert stream["pending_given_up"] == 401   # the first one, then one per PNG past the limit
    assert sum(1 for r in records if r.get("name") == "msnp.trid.pending_limit") == 1


def _linked_run():
    from analyzer.analysis.linking import Linker, LinkWriter
    from analyzer.analysis.redact import Redactor
    from analyzer.outputs.jsonl import JsonLinesWriter
    out = io.StringIO()
    redactor = Redactor(enabled=False)
    linker = Linker(redactor)
    writer = JsonLinesWriter(out, redactor)
    analysis = Analysis([linker, writer, LinkWriter(linker, [writer])])
    linker.reporter = analysis.anomaly
    return analysis, linker, out


def test_a_switchboard_lists_at_most_max_participants_and_says_so_once():
    from analyzer.analysis.linking import MAX_PARTICIPANTS
    from msnp_analyzer_plugins.chat import MAX_OTHERS, ChatPlugin, _listed
    from analyzer.plugins.manager import PluginManager
    analysis, linker, out = _linked_run()
    chat = ChatPlugin()
    manager = PluginManager(analysis)
    manager.add(chat, "test")
    analysis.sinks.append(manager)
    sb = analysis.open("127.0.0.1:40000", "127.0.0.3:1864")
    analysis.feed(sb, "c2s", b"USR 1 alice@example.com 1.2.3\r\n", 1.0)
    analysis.feed(sb, "s2c", b"USR 1 OK alice@example.com Alice\r\n", 1.0)
    n = MAX_PARTICIPANTS + 40
    analysis.feed(sb, "s2c", b"".join(b"JOI u%d@example.com U\r\n" % i for i in range(n)), 2.0)
    analysis.finish()
    records = [json.loads(line) for line in out.getvalue().splitlines()]
    chats = [r for r in records if r["kind"] == "chat"]
    assert len(chats[0]["participants"]) == MAX_PARTICIPANTS          # the user and the first arrivals
    assert chats[0]["more_participants"] == n + 1 - MAX_PARTICIPANTS  # the rest counted
    names = [r["name"] for r in records if r["kind"] == "anomaly"]
    assert names.count("linking.participant_limit") == 1
    assert names.count("plugin.chat.participant_limit") == 1
    board = chat.switchboards.get(sb.id) or chat._shown[0]
    assert len(board.others) == MAX_OTHERS and board.more_others == n - MAX_OTHERS
    assert _listed(board.participants, more=board.more_others).endswith(f"+{n + 1 - 10} more")
    assert len(chat.ns_handles) <= 2


def test_a_connection_keeps_at_most_max_referrals_for_linking_and_says_so_once():
    from analyzer.analysis.linking import MAX_REFERRALS
    analysis, linker, out = _linked_run()
    ns = analysis.open("127.0.0.1:40000", "127.0.0.2:1863")
    n = MAX_REFERRALS + 30
    analysis.feed(ns, "c2s", b"".join(b"XFR %d SB\r\n" % t for t in range(1, n + 1)), 1.0)
    analysis.feed(ns, "s2c", b"".join(b"XFR %d SB 127.0.0.3:1864 CKI c%d\r\n" % (t, t) for t in range(1, n + 1)), 1.0)
    assert len(linker.referrals) == MAX_REFERRALS and len(linker._ns_of_cookie) == MAX_REFERRALS
    analysis.finish()
    names = [json.loads(line).get("name") for line in out.getvalue().splitlines()]
    assert names.count("linking.referral_limit") == 1


def test_the_detector_learns_at_most_max_endpoints_from_referrals_and_the_file_says_so():
    from analyzer.capture import detect
    from analyzer.capture.tcp import TcpTracker
    from analyzer.msnp import CommandReader
    from analyzer.msnp.facts import referral
    from resegment import Collector
    got = Collector()
    analysis = Analysis([got])
    detector = detect.Detector()
    tracker = TcpTracker(analysis, detector=detector)
    reader = CommandReader("s2c")
    n = detect.MAX_ENDPOINTS + 25
    lines = b"".join(b"XFR %d SB 127.%d.%d.%d:1864 CKI 1\r\n" % (t, t >> 16 & 255, t >> 8 & 255, t & 255)
                     for t in range(1, n + 1))
    for cmd in reader.feed(lines):
        detector.referral(referral(cmd))
    assert len(detector.endpoints) == detect.MAX_ENDPOINTS and detector.referral_ports == {1864}
    tracker.finish(1.0)
    limit = [a for _, a in got.anomalies if a.name == "capture.endpoint_limit"]
    assert len(limit) == 1 and ": 25 later ones were not learned" in limit[0].detail


def test_the_contact_book_follows_at_most_max_logins_and_says_so_once(monkeypatch):
    from analyzer.analysis import contacts
    monkeypatch.setattr(contacts, "MAX_LOGINS", 3)
    records, said = [], []
    book = contacts.ContactBook(on_record=records.append)
    book.reporter = lambda conn, anomaly: said.append(anomaly)
    analysis = Analysis([book])
    for i in range(5):
        ns = analysis.open("127.0.0.1:%d" % (40000 + i), "127.0.0.2:1863")
        analysis.feed(ns, "c2s", b"USR 1 MD5 I user%d@example.com\r\n" % i, 1.0)
        analysis.feed(ns, "s2c", b"LST bob@example.com Bob 11\r\n", 1.0)
        analysis.close(ns, 2.0)
    analysis.finish()
    assert len(book.logins) == 3 and book.dropped == 2
    assert len([r for r in records if r["kind"] == "contact"]) == 3
    assert [a.name for a in said] == ["contacts.limit"] and ": 2 contact lines" in said[0].detail


def test_a_stream_ending_costs_the_same_however_many_wait_for_their_line():
    from analyzer.msnp import Anomaly
    from analyzer.outputs.terminal import LineAnomalies

    class CountingKeys(dict):
        scanned = 0

        def __iter__(self):
            for key in super().__iter__():
                CountingKeys.scanned += 1
                yield key
    placing = LineAnomalies()
    placing.waiting, placing.last = CountingKeys(), CountingKeys()
    for i in range(2000):   # 2,000 streams, each with an anomaly ahead of its line
        placing.line(str(i), "c2s", 0)
        assert placing.hold(str(i), Anomaly("msnp.whitespace.tab", "x", "c2s", 10, None))
    ended = [placing.end(str(i)) for i in range(2000)]
    assert all(len(e) == 1 for e in ended) and not placing.waiting and not placing.last
    assert CountingKeys.scanned == 0   # looked up by key: no search over every stream


def test_closed_flows_leave_at_most_two_tombstones_per_open_flow_when_time_stands_still():
    from analyzer.capture.tcp import ACK, FIN, SYN, TcpTracker
    analysis = Analysis()
    tracker = TcpTracker(analysis, max_flows=50)
    server = b"\x7f\x00\x00\x02"
    for i in range(1000):   # 1,000 whole connections, every packet at the same capture time
        c = b"\x7f\x01" + i.to_bytes(2, "big")
        port = (20000 + i).to_bytes(2, "big")
        key, rkey = c + server + port + (1863).to_bytes(2, "big"), server + c + (1863).to_bytes(2, "big") + port
        tracker.segment(5.0, key, 100, 0, SYN, b"")
        tracker.segment(5.0, rkey, 900, 101, SYN | ACK, b"")
        tracker.segment(5.0, key, 101, 901, ACK | 0x08, b"PNG\r\n")
        tracker.segment(5.0, rkey, 901, 106, ACK | 0x08, b"QNG 50\r\n")
        tracker.segment(5.0, key, 106, 909, FIN | ACK, b"")
        tracker.segment(5.0, rkey, 909, 107, FIN | ACK, b"")
        assert len(tracker.tombstones) <= 2 * 50 + 2 and len(tracker._stones) <= 2 * 50 + 2
    tracker.finish(5.0)
    assert sum(c.outcomes["answered"] for c in analysis.connections.values()) + analysis.folded.outcomes["answered"] == 1000


def test_the_mitm_gateway_remembers_a_bounded_number_of_session_ids(monkeypatch):
    from analyzer.capture.mitm import gateway
    monkeypatch.setattr(gateway, "MAX_SESSION_IDS", 20)
    monkeypatch.setattr(gateway, "MAX_SESSIONS", 10)
    dec = gateway.GatewayDecoder()
    for i in range(200):
        session = dec._new("NS", "127.0.0.2", type("X", (), {"host": "127.0.0.5", "client": "127.0.0.1"})())
        for k in range(30):   # a response handing out a new SessionID each time
            dec._remember(session, f"{i}.{k}")
        assert len(session.session_ids) == gateway.IDS_PER_SESSION
    assert len(dec._by_id) == 20 and len(dec.sessions) == 10 and dec.opened == 200
    assert dec.sessions[-1].number == 200 and "199.29" in dec._by_id and "0.0" not in dec._by_id


def test_a_run_counts_at_most_max_versions_one_by_one():
    from analyzer.analysis.run import MAX_VERSIONS
    analysis = Analysis()
    analysis.keep_closed = 5
    n = MAX_VERSIONS + 36
    for i in range(n):   # each connection negotiates a version of its own (MSNP + up to 7 digits)
        conn = analysis.open()
        analysis.feed(conn, "c2s", b"VER 1 MSNP%d CVR0\r\n" % (100 + i), 1.0)
        analysis.feed(conn, "s2c", b"VER 1 MSNP%d CVR0\r\n" % (100 + i), 1.0)
        analysis.close(conn, 2.0)
    versions = analysis.totals()["versions"]
    assert len(analysis.folded.versions) <= MAX_VERSIONS + 1 and len(versions) == MAX_VERSIONS + 1
    assert sum(versions.values()) == n and versions["other"] == n - MAX_VERSIONS
