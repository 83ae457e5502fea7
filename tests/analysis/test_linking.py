"""Linking: DS->NS by XFR NS, NS->SB by cookie, login sessions, chats, partial captures."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from analyzer.analysis.run import Analysis
from analyzer.msnp import C2S, S2C
from analyzer.outputs.jsonl import JsonLinesWriter
from analyzer.analysis.linking import Linker, LinkWriter
from analyzer.analysis.redact import Redactor
from analyzer.msnp.transcript import Chunk
from captures.sessions import CLEAN_SESSIONS, CONNECTIONS, SESSIONS

REAL = Path(__file__).resolve().parents[2].parent / "shared" / "captures-real"


def run(chunks, addresses=None, redact=False, keep=lambda chunk: True):
    linker = Linker(Redactor(enabled=redact, key=b"k" * 16))
    analysis = Analysis([linker])
    conns = {}
    for chunk in chunks:
        if not keep(chunk):
            continue
        conn = conns.get(chunk.conn)
        if conn is None:
            client, server = (addresses or {}).get(chunk.conn, (None, None))
            conn = conns[chunk.conn] = analysis.open(client, server, conn_id=chunk.conn)
        analysis.feed(conn, chunk.direction, chunk.data, chunk.ts)
    analysis.finish()
    return linker.result(), analysis


def _feed_msnp8(analysis) -> dict:
    """The MSNP8 session fed into `analysis`, each connection with its addresses: label -> Connection."""
    conns = {}
    for c in SESSIONS["msnp8"]:
        conn = conns.get(c.conn)
        if conn is None:
            conn = conns[c.conn] = analysis.open(*CONNECTIONS["msnp8"][c.conn], conn_id=c.conn)
        analysis.feed(conn, c.direction, c.data, c.ts)
    return conns


def links_of(res, type_):
    return {(l["from"], l["to"]): l for l in res["links"] if l["type"] == type_}


def test_msnp8_links_ds_ns_and_both_switchboards_by_cookie():
    res, _ = run(SESSIONS["msnp8"], CONNECTIONS["msnp8"])
    ds_ns = links_of(res, "ds_ns")
    assert set(ds_ns) == {("ds", "ns")}
    assert ds_ns[("ds", "ns")]["evidence"] == "target address, client host and time"
    assert ds_ns[("ds", "ns")]["target"] == CONNECTIONS["msnp8"]["ns"][1]
    ns_sb = links_of(res, "ns_sb")
    assert set(ns_sb) == {("ns", "sb1"), ("ns", "sb2")}
    assert ns_sb[("ns", "sb1")]["by"] == "xfr_sb"
    assert ns_sb[("ns", "sb2")]["by"] == "rng" and ns_sb[("ns", "sb2")]["sessid"]
    for link in ns_sb.values():
        assert link["target_matches_server"] is True
    assert res["unlinked"] == []
    [session] = res["sessions"]
    assert session["streams"] == ["ds", "ns", "sb1", "sb2"]
    assert session["handle"] == "alice@example.com" and session["version"] == "MSNP8"
    assert session["complete"] and session["start"] <= session["end"]


def test_msnp8_chats_follow_participants():
    res, _ = run(SESSIONS["msnp8"], CONNECTIONS["msnp8"])
    chats = {c["stream"]: c for c in res["chats"]}
    sb1 = [(p["handle"], p["via"], p["left_via"]) for p in chats["sb1"]["participants"]]
    assert sb1 == [("alice@example.com", "self", "OUT"), ("bob@example.com", "JOI", "BYE")]
    bob = chats["sb1"]["participants"][1]
    assert bob["nick"] == "Bob" and bob["joined"] < bob["left"]
    sb2 = [(p["handle"], p["via"]) for p in chats["sb2"]["participants"]]
    assert sb2 == [("alice@example.com", "self"), ("carol@example.com", "IRO")]


@pytest.mark.parametrize("name", CLEAN_SESSIONS)
def test_every_clean_session_links_into_one_login(name):
    res, analysis = run(SESSIONS[name], CONNECTIONS[name])
    sbs = [c.id for c in analysis.connections.values() if c.role == "SB"]
    assert sbs, "each scripted session has a switchboard"
    linked = {l["to"] for l in res["links"] if l["type"] == "ns_sb"}
    assert linked == set(sbs)
    if "ds" in analysis.connections:
        assert res["unlinked"] == []
    else:  # the script starts at the NS: that much is said, nothing else
        assert [(u["type"], u["to"]) for u in res["unlinked"]] == [("ds_ns", "ns")]
    assert len(res["sessions"]) == 1
    assert set(res["sessions"][0]["streams"]) == set(analysis.connections)


def test_msnp18_endpoints_keep_their_guid():
    res, _ = run(SESSIONS["msnp18"], CONNECTIONS["msnp18"])
    handles = [p["handle"] for c in res["chats"] for p in c["participants"]]
    assert any(";{" in h for h in handles)


def test_without_addresses_links_by_time_order_and_says_so():
    res, _ = run(SESSIONS["msnp8"])
    assert links_of(res, "ds_ns")[("ds", "ns")]["evidence"].startswith("time order")


def test_ns_from_another_client_host_is_not_linked():
    addresses = dict(CONNECTIONS["msnp8"])
    addresses["ns"] = ("127.0.0.9:50999", addresses["ns"][1])
    res, _ = run(SESSIONS["msnp8"], addresses)
    assert links_of(res, "ds_ns") == {}
    reasons = [u["reason"] for u in res["unlinked"] if u["type"] == "ds_ns"]
    assert any("no later connection" in r for r in reasons)


def test_capture_without_the_ns_reports_unlinked_switchboards_and_groups_by_handle():
    res, _ = run(SESSIONS["msnp8"], CONNECTIONS["msnp8"], keep=lambda c: c.conn != "ns")
    assert links_of(res, "ns_sb") == {}
    unlinked_sbs = {u["to"]: u for u in res["unlinked"] if u["type"] == "ns_sb"}
    assert set(unlinked_sbs) == {"sb1", "sb2"}
    assert all("NS is not in it" in u["reason"] for u in unlinked_sbs.values())
    # The DS's XFR NS points at nothing in the capture.
    assert any(u["type"] == "ds_ns" and u["from"] == "ds" for u in res["unlinked"])
    assert all(not s["complete"] for s in res["sessions"])


def test_mid_session_switchboard_says_why_and_still_lists_speakers():
    sb_chunks = [c for c in SESSIONS["msnp8"] if c.conn == "sb1"]
    first_msg = next(i for i, c in enumerate(sb_chunks) if c.data.startswith(b"MSG"))
    res, _ = run(sb_chunks[first_msg:])
    [u] = res["unlinked"]
    assert u["to"] == "sb1" and "mid-session" in u["reason"]
    speakers = {p["handle"] for p in res["chats"][0]["participants"]}
    assert "bob@example.com" in speakers


def test_one_sided_capture_links_what_it_can():
    # Only the server side: the XFR SB and RNG are seen, no SB login is.
    res, _ = run(SESSIONS["msnp8"], CONNECTIONS["msnp8"], keep=lambda c: c.direction == S2C)
    assert links_of(res, "ns_sb") == {}
    by = sorted(u["by"] for u in res["unlinked"] if u["type"] == "ns_sb" and u["from"] == "ns")
    assert by == ["rng", "xfr_sb"]


def test_cookie_is_redacted_but_still_matches():
    res, _ = run(SESSIONS["msnp8"], CONNECTIONS["msnp8"], redact=True)
    link = links_of(res, "ns_sb")[("ns", "sb1")]
    assert link["cookie"].startswith("<redacted:")
    raw = next(c.data for c in SESSIONS["msnp8"] if c.conn == "sb1" and c.direction == C2S)
    cookie = raw.split()[3]
    assert cookie.decode() not in json.dumps(res["links"])


def test_link_writer_puts_records_in_json_lines():
    out = io.StringIO()
    redactor = Redactor(key=b"k" * 16)
    linker = Linker(redactor)
    writer = JsonLinesWriter(out, redactor)
    analysis = Analysis([linker, writer, LinkWriter(linker, [writer])])
    conns = {}
    for chunk in SESSIONS["msnp8"]:
        conn = conns.get(chunk.conn) or conns.setdefault(chunk.conn, analysis.open(conn_id=chunk.conn))
        analysis.feed(conn, chunk.direction, chunk.data, chunk.ts)
    analysis.finish()
    recs = [json.loads(line) for line in out.getvalue().splitlines()]
    kinds = [r["kind"] for r in recs]
    assert kinds.count("link") == 3 and kinds.count("session") == 1 and kinds.count("chat") == 2
    assert kinds.index("link") > max(i for i, k in enumerate(kinds) if k == "stream")


def test_decode_json_carries_link_records(tmp_path):
    from analyzer.msnp.transcript import format_chunks
    src = tmp_path / "msnp8.msnp"
    src.write_text(format_chunks(SESSIONS["msnp8"]))
    out = tmp_path / "out.jsonl"
    proc = subprocess.run([sys.executable, "-m", "analyzer", "decode", str(src), "--json", str(out)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    recs = [json.loads(line) for line in out.read_text().splitlines()]
    links = [r for r in recs if r["kind"] == "link" and r["linked"]]
    assert {(l["from"], l["to"]) for l in links} == {("ds", "ns"), ("ns", "sb1"), ("ns", "sb2")}


@pytest.mark.skipif(not (REAL / "ndpi_msnms.pcap").exists(), reason="../shared/captures-real not beside the clone")
def test_ndpi_rng_and_xfr_sb_each_match_a_switchboard_by_cookie_and_session_id():
    from analyzer.capture.files import feed_capture
    from analyzer.msnp import Command

    class Logins:
        """What each SB connection presented: (cmd, cookie, sessid)."""
        def __init__(self):
            self.seen = {}

        def event(self, conn, event):
            if type(event) is Command and event.direction == C2S and event.cmd in ("USR", "ANS") \
                    and conn.id not in self.seen and len(event.params) >= 2:
                self.seen[conn.id] = (event.cmd, event.params[1], event.params[2] if event.cmd == "ANS" else None)

        def stream(self, conn):
            pass

        def close(self):
            pass

    linker = Linker(Redactor(enabled=False))
    logins = Logins()
    analysis = Analysis([linker, logins])
    feed_capture(analysis, str(REAL / "ndpi_msnms.pcap"))
    analysis.finish()
    res = linker.result()
    links = [l for l in res["links"] if l["type"] == "ns_sb"]
    rng = [l for l in links if l["by"] == "rng"]
    xfr = [l for l in links if l["by"] == "xfr_sb"]
    assert len(rng) == 3 and len(xfr) == 1
    assert len({l["to"] for l in links}) == 4
    for link in rng:
        assert logins.seen[link["to"]] == ("ANS", link["cookie"], link["sessid"])
        assert link["target_matches_server"] is True
    assert logins.seen[xfr[0]["to"]] == ("USR", xfr[0]["cookie"], None)
    # Nothing unlinked among the three RNGs and the XFR SB.
    assert not [u for u in res["unlinked"] if u.get("from") and u["type"] == "ns_sb"]


# -- settling: long captures hand over settled sessions and forget their streams ----

def replicas(n: int, gap: float = 1000.0):
    """n copies of the MSNP8 login, each `gap` seconds after the last, with its own cookies."""
    from dataclasses import replace
    chunks = []
    for k in range(n):
        for c in SESSIONS["msnp8"]:
            data = c.data.replace(b"17262740", b"1726274%d" % k).replace(b"849102291", b"84910229%d" % k)
            chunks.append(replace(c, conn=f"{c.conn}-{k}", ts=c.ts + gap * k, data=data))
    return chunks


def linked_output(chunks, settle_after=None, extra=None, passes=None, window=300.0, addresses=None,
                  keep_open=(), watch=None):
    """JSON Lines of a run that closes each connection after its last chunk (as FINs do), but
    `extra` and those in `keep_open` (closed at the end of the run).
    `addresses(label)`: a connection's (client, server), else the MSNP8 session's.
    `watch(linker)`: called with the linker before the run."""
    out = io.StringIO()
    redactor = Redactor(enabled=False)
    linker = Linker(redactor, settle_after=settle_after, window=window)
    if watch is not None:
        watch(linker)
    if passes is not None:  # count the linking passes (each: the streams it linked, of those held, open)
        link = linker._link

        def counting(only=None, **options):
            still = {sid for sid, c in linker.conns.items() if c is conns.get(sid)}
            passes.append((len(linker.facts) if only is None else len(only), len(linker.facts), still))
            return link(only, **options)
        linker._link = counting
    writer = JsonLinesWriter(out, redactor)
    analysis = Analysis([linker, writer, LinkWriter(linker, [writer])])
    last = {c.conn: i for i, c in enumerate(chunks)}
    conns, held = {}, []
    for i, chunk in enumerate(chunks):
        conn = conns.get(chunk.conn)
        if conn is None:
            client, server = (addresses(chunk.conn) if addresses is not None else
                              CONNECTIONS["msnp8"].get(chunk.conn.split("-")[0], (None, None)))
            conn = conns[chunk.conn] = analysis.open(client, server, conn_id=chunk.conn)
        analysis.feed(conn, chunk.direction, chunk.data, chunk.ts)
        if last[chunk.conn] == i and chunk.conn != extra and chunk.conn not in keep_open:
            analysis.close(conn, chunk.ts)
        held.append(len(linker.facts))
    analysis.finish()
    recs = [json.loads(line) for line in out.getvalue().splitlines()]
    return recs, held


def linking_records(recs):
    return sorted(json.dumps(r, sort_keys=True) for r in recs if r["kind"] in ("link", "session", "chat"))


def test_settling_writes_the_same_records_as_linking_at_the_end_while_holding_few_streams():
    chunks = replicas(8)
    batch, batch_held = linked_output(chunks)
    settled, held = linked_output(chunks, settle_after=2)
    assert linking_records(settled) == linking_records(batch)
    sessions = [r for r in settled if r["kind"] == "session"]
    assert [s["session"] for s in sessions] == [f"L{n}" for n in range(1, 9)]
    assert all(len(s["streams"]) == 4 and s["complete"] for s in sessions)
    assert max(batch_held) == 32 and max(held) <= 8  # two logins' streams at most, not all eight
    # records came out during the run, right after their login settled
    kinds = [r["kind"] for r in settled]
    assert kinds.index("session") < kinds.index("stream", kinds.index("session"))


def test_a_settling_pass_builds_the_chat_records_of_settled_logins_only(monkeypatch):
    # Logins overlapping in time: a pass finds some settled and links the others too, which
    # wait; their chat records (a participant list each) are built when they are written.
    built = []
    real = Linker._chat
    monkeypatch.setattr(Linker, "_chat", lambda self, sid, session: built.append(sid) or real(self, sid, session))
    chunks = replicas(8, gap=15.0)
    settled, _ = linked_output(chunks, settle_after=2, window=5.0)
    chats = [r["stream"] for r in settled if r["kind"] == "chat"]
    assert len(chats) >= 8 and sorted(built) == sorted(chats)   # each once, none thrown away
    built.clear()
    batch, _ = linked_output(chunks, window=5.0)
    assert named_by_first_stream(settled) == named_by_first_stream(batch)


@pytest.mark.parametrize("one_user", [False, True])
def test_a_pass_links_only_the_ended_logins_and_what_could_join_them(one_user):
    # A busy server: logins of different client hosts overlap in time (15 s apart, each about
    # 25 s long) while other users' NS connections stay open throughout. A pass links the
    # ended streams and the streams tied to them (same cookie, same client host for an XFR NS,
    # same user), not every stream open, and finds what linking everything at the end finds.
    # With one user for all ten logins (one_user), each is tied to the others through the handle.
    from dataclasses import replace
    chunks = []
    for c in replicas(10, gap=15.0):
        k = int(c.conn.split("-")[1])
        chunks.append(c if one_user else replace(c, data=c.data.replace(b"alice@", b"al%03d@" % k)))
    lurkers = [f"lurk-{i}" for i in range(5)]
    for i, label in enumerate(lurkers):
        for c in SESSIONS["msnp8"]:
            if c.conn == "ns" and c.ts < 6.0:
                chunks.append(replace(c, conn=label, data=c.data.replace(b"alice@", b"lu%03d@" % i)))
    chunks.sort(key=lambda c: c.ts)

    def addresses(label):
        name, k = label.split("-")
        if name == "lurk":
            return f"127.0.{100 + int(k)}.1:40000", CONNECTIONS["msnp8"]["ns"][1]
        client, server = CONNECTIONS["msnp8"][name]
        port = client.rsplit(":", 1)[1]
        return f"127.0.{int(k) + 1}.1:{port}", server   # one NS and SB servers, a host per login

    batch, _ = linked_output(chunks, window=5.0, addresses=addresses, keep_open=lurkers)
    passes = []
    settled, held = linked_output(chunks, settle_after=2, window=5.0, addresses=addresses, passes=passes,
                                  keep_open=lurkers)
    assert named_by_first_stream(settled) == named_by_first_stream(batch)
    sessions = [r for r in settled if r["kind"] == "session"]
    assert sum(len(s["streams"]) == 4 and s["complete"] for s in sessions) == 10
    assert max(held) < 45   # logins settled during the run
    during = [(linked, facts) for linked, facts, still in passes if still.issuperset(lurkers)]
    # never the other users' open NS connections (nothing ties them to an ended stream)
    assert len(during) >= 5 and all(linked <= facts - len(lurkers) for linked, facts in during)


def test_the_window_decides_how_long_ended_logins_wait():
    chunks = replicas(5, gap=200.0)  # logins 200 s apart (each lasts about 20 s)
    _, held = linked_output(chunks, settle_after=2)
    _, held_short = linked_output(chunks, settle_after=2, window=10.0)
    _, held_all = linked_output(chunks, settle_after=2, window=float("inf"))
    assert max(held_short) < max(held) < max(held_all) == 20


def test_link_window_option_reaches_the_linker_and_is_checked(capsys):
    from analyzer.cli.main import build_parser, main
    from analyzer.cli.run import Run, RunOptions
    for given, want in (([], 300.0), (["--link-window", "inf"], float("inf")), (["--link-window", "30"], 30.0)):
        args = build_parser().parse_args(["decode", "x.msnp", "--json", "-", *given])
        run = Run(RunOptions.from_args(args, html=args.html), console=None)
        (linker,) = [s for s in run.analysis.sinks if isinstance(s, Linker)]
        assert linker is run.linker and linker.window == want and linker.settle_after == 1000
    with pytest.raises(SystemExit) as stop:
        main(["decode", "x.msnp", "--link-window", "-5"])
    assert stop.value.code == 2 and "not a duration: '-5'" in capsys.readouterr().err


def named_by_first_stream(recs):
    """`linking_records`, with each session named by its first stream: a login that settles
    during the run is numbered in the order logins settle, which an open stray changes."""
    names = {r["session"]: "S:" + r["streams"][0] for r in recs if r["kind"] == "session"}
    return linking_records([dict(r, session=names[r["session"]]) if r.get("session") in names else r
                            for r in recs])


def test_a_stream_without_a_user_holds_sessions_back_only_while_it_is_young():
    # A connection with no known user that starts early and stays open to the end could
    # turn out to be a switchboard of any login that ended around when it started; once it
    # has been open for the window without a user, it holds nothing back any longer (it
    # would otherwise keep every later login of a long capture from settling).
    chunks = replicas(8)
    stray = [Chunk(C2S, b"PNG\r\n", 5.0, "stray-0")] + [Chunk(C2S, b"PNG\r\n", 7990.0, "stray-0")]
    chunks = sorted(chunks + stray, key=lambda c: c.ts)
    batch, _ = linked_output(chunks, extra="stray-0")
    settled, held = linked_output(chunks, settle_after=2, extra="stray-0")
    assert named_by_first_stream(settled) == named_by_first_stream(batch)
    assert max(held) <= 9  # two logins' streams and the stray, not all 33
    kinds = [r["kind"] for r in settled]
    assert kinds.index("session") < max(i for i, k in enumerate(kinds) if k == "stream")


def test_a_young_stream_without_a_user_keeps_sessions_from_settling():
    # The same stray, starting right after the first login ended: it could still be one of
    # its switchboards, so that login waits while the stray is young.
    chunks = replicas(3)
    stray = [Chunk(C2S, b"PNG\r\n", 30.0, "stray-0"), Chunk(C2S, b"PNG\r\n", 2990.0, "stray-0")]
    chunks = sorted(chunks + stray, key=lambda c: c.ts)
    batch, _ = linked_output(chunks, extra="stray-0")
    settled, held = linked_output(chunks, settle_after=1, extra="stray-0", window=1500.0)
    assert named_by_first_stream(settled) == named_by_first_stream(batch)
    assert max(held) == 13   # nothing settled before the stray was 1500 s old


def test_past_the_bound_on_ended_streams_logins_settle_and_say_so():
    # An open connection of the same user could join every login, so none would ever
    # settle; past max_held ended streams those past the window settle anyway.
    chunks = replicas(8)
    user = [Chunk(C2S, b"USR 1 MD5 I alice@example.com\r\n", 5.0, "user-0"),
            Chunk(C2S, b"PNG\r\n", 7990.0, "user-0")]
    chunks = sorted(chunks + user, key=lambda c: c.ts)
    out = io.StringIO()
    redactor = Redactor(enabled=False)
    linker = Linker(redactor, settle_after=2, max_held=8)
    writer = JsonLinesWriter(out, redactor)
    analysis = Analysis([linker, writer, LinkWriter(linker, [writer])])
    last = {c.conn: i for i, c in enumerate(chunks)}
    conns, held = {}, []
    for i, chunk in enumerate(chunks):
        conn = conns.get(chunk.conn)
        if conn is None:
            client, server = CONNECTIONS["msnp8"].get(chunk.conn.split("-")[0], (None, None))
            conn = conns[chunk.conn] = analysis.open(client, server, conn_id=chunk.conn)
        analysis.feed(conn, chunk.direction, chunk.data, chunk.ts)
        if last[chunk.conn] == i and chunk.conn != "user-0":
            analysis.close(conn, chunk.ts)
        held.append(len(linker.facts))
    analysis.finish()
    recs = [json.loads(line) for line in out.getvalue().splitlines()]
    batch, _ = linked_output(chunks, extra="user-0")
    forced = [r for r in recs if r["kind"] == "session" and "forced" in r]
    assert forced and linker.forced == len(forced)
    assert all("ended connections were held" in r["forced"] for r in forced)
    for r in recs:
        r.pop("forced", None)
    assert named_by_first_stream(recs) == named_by_first_stream(batch)
    assert max(held) <= 8 + 2 * 4 + 1


def counted_settling(max_held: int):
    """A settling linker (every 10 ended streams) writing JSON Lines, and a one-item list
    counting its linking passes."""
    out = io.StringIO()
    redactor = Redactor(enabled=False)
    linker = Linker(redactor, settle_after=10, max_held=max_held)
    writer = JsonLinesWriter(out, redactor)
    analysis = Analysis([linker, writer, LinkWriter(linker, [writer])])
    passes = [0]
    real = linker._link

    def counting(*args, **options):
        passes[0] += 1
        return real(*args, **options)
    linker._link = counting
    return out, linker, analysis, passes


def test_logins_that_end_inside_the_window_settle_past_the_bound_and_passes_stay_few():
    # Thousands of logins ending within one second (a crafted capture, or a very busy
    # server): none is past the link window, yet the held streams stay under the bound,
    # and each pass is followed by as many new streams as it held (linear, not quadratic).
    out, linker, analysis, passes = counted_settling(max_held=100)
    n, held = 2000, []
    for i in range(n):
        conn = analysis.open("127.1.0.%d:%d" % (1 + i % 250, 20000 + i), "127.0.0.2:1863")
        analysis.feed(conn, C2S, b"USR 1 MD5 I u%d@example.com\r\n" % i, 1.0 + i / n)
        analysis.close(conn, 1.0 + i / n)
        held.append(len(linker.facts))
    analysis.finish()
    recs = [json.loads(line) for line in out.getvalue().splitlines()]
    sessions = [r for r in recs if r["kind"] == "session"]
    assert max(held) <= 100 + 10
    assert sorted(m for s in sessions for m in s["streams"]) == sorted(str(i) for i in range(1, n + 1))
    assert sum("inside the link window" in s.get("forced", "") for s in sessions) >= n - 100
    assert passes[0] <= 2 * n / 50 + 10   # a pass (about 100 held) per 50 streams or more


def test_no_pass_is_tried_while_every_held_stream_ended_inside_the_window():
    # Streams that all end within the link window: none can settle yet, so the settling passes
    # (each linear in what is held) are not tried at all; the records still come at the end.
    out, linker, analysis, passes = counted_settling(max_held=10_000)
    for i in range(2000):
        conn = analysis.open("127.1.0.%d:%d" % (1 + i % 250, 20000 + i), "127.0.0.2:1863")
        analysis.feed(conn, C2S, b"USR 1 MD5 I u%d@example.com\r\n" % i, 1.0 + i / 2000)
        analysis.close(conn, 1.0 + i / 2000)
    assert passes[0] == 0
    analysis.finish()
    sessions = [json.loads(line) for line in out.getvalue().splitlines() if '"session"' in line]
    assert len(sessions) == 2000 and passes[0] == 1


def test_thousands_of_switchboards_of_one_user_join_one_login_in_linear_time():
    # One NS of alice, then 3,000 switchboards of alice presenting a cookie no XFR names:
    # each joins the NS's login; the login's span is widened, not recomputed per switchboard.
    linker = Linker(Redactor(enabled=False))
    analysis = Analysis([linker])
    ns = analysis.open("127.1.0.1:20000", "127.0.0.2:1863")
    analysis.feed(ns, C2S, b"USR 1 TWN I alice@example.com\r\n", 1.0)
    n = 3000
    for i in range(n):
        sb = analysis.open("127.1.0.2:%d" % (30000 + i), "127.0.0.3:1864")
        analysis.feed(sb, C2S, b"USR 1 alice@example.com 9.9.%d\r\n" % i, 2.0 + i)
        analysis.close(sb, 2.5 + i)
    analysis.close(ns, 5000.0)
    calls = 0
    real_start, real_end = linker._start, linker._end

    def start(sid):
        nonlocal calls
        calls += 1
        return real_start(sid)

    def end(sid):
        nonlocal calls
        calls += 1
        return real_end(sid)
    linker._start, linker._end = start, end
    sessions = linker.result()["sessions"]
    assert len(sessions) == 1 and len(sessions[0]["streams"]) == n + 1
    assert sessions[0]["streams"] == sorted(sessions[0]["streams"], key=int)   # capture order
    assert calls <= 40 * n   # was about n * n


class CountingDict(dict):
    """A dict that counts its look-ups."""

    def __init__(self, *args):
        super().__init__(*args)
        self.lookups = 0

    def __getitem__(self, key):
        self.lookups += 1
        return super().__getitem__(key)

    def get(self, key, default=None):
        self.lookups += 1
        return super().get(key, default)


def _crowd(n: int, xfr_ns: bool):
    """n DS connections each sending its client to the same NS address (XFR NS) and n NS
    connections, or n NS connections each referring to a switchboard with the same cookie
    (XFR SB) and n switchboards presenting it: the pairs are many, the links are linear."""
    chunks, addresses = [], {}
    for k in range(n):
        ts = 100.0 + k
        if xfr_ns:
            chunks.append(Chunk(C2S, b"USR 3 MD5 I a%d@x\r\n" % k, ts, f"ds{k}"))
            chunks.append(Chunk(S2C, b"XFR 3 NS 127.0.0.9:1863 0 127.0.0.8:1863\r\n", ts, f"ds{k}"))
            chunks.append(Chunk(C2S, b"USR 4 MD5 I a%d@x\r\n" % k, ts + 0.5, f"ns{k}"))
            addresses[f"ds{k}"] = (f"127.0.1.{k % 250}:{2000 + k}", "127.0.0.8:1863")
            addresses[f"ns{k}"] = (f"127.0.1.{k % 250}:{3000 + k}", "127.0.0.9:1863")
        else:
            chunks.append(Chunk(C2S, b"USR 4 MD5 I a%d@x\r\n" % k, ts, f"ns{k}"))
            chunks.append(Chunk(S2C, b"XFR 9 SB 127.0.0.7:1863 CKI 1234.5678\r\n", ts, f"ns{k}"))
            chunks.append(Chunk(C2S, b"USR 1 a%d@x 1234.5678\r\n" % k, ts + 0.5, f"sb{k}"))
            addresses[f"ns{k}"] = (f"127.0.1.{k % 250}:{3000 + k}", "127.0.0.9:1863")
            addresses[f"sb{k}"] = (f"127.0.1.{k % 250}:{4000 + k}", "127.0.0.7:1863")
    return chunks, addresses


@pytest.mark.parametrize("xfr_ns", [True, False], ids=["XFR NS lines x connections", "one cookie x switchboards"])
def test_many_referrals_and_many_candidates_link_in_linear_look_ups(xfr_ns):
    counts = {}
    for n in (100, 200):
        chunks, addresses = _crowd(n, xfr_ns)
        linker = Linker(Redactor(enabled=False))
        linker.facts = CountingDict()
        linker.conns = CountingDict()
        analysis = Analysis([linker])
        conns = {}
        for chunk in chunks:
            conn = conns.get(chunk.conn)
            if conn is None:
                client, server = addresses[chunk.conn]
                conn = conns[chunk.conn] = analysis.open(client, server, conn_id=chunk.conn)
            analysis.feed(conn, chunk.direction, chunk.data, chunk.ts)
        analysis.finish()
        before = linker.facts.lookups + linker.conns.lookups
        res = linker._link()
        counts[n] = linker.facts.lookups + linker.conns.lookups - before
        kind = "ds_ns" if xfr_ns else "ns_sb"
        assert len([link for link in res["links"] if link["type"] == kind]) == n
    # Twice the connections, about twice the look-ups (n*n/2 before the indexes).
    assert counts[200] <= 2.5 * counts[100]


def test_a_pass_links_an_open_connection_that_shares_a_cookie_with_an_ended_one():
    # Two NS connections hand out the same switchboard cookie (a collision; an NS's XFR SB
    # lines are all it takes): the first one's XFR SB claims the switchboard, so the second
    # NS's login, which ends early, never had it. The first NS stays open: a pass that linked
    # only the ended streams would give the switchboard to the second login and settle that
    # wrong login; the pass links the open NS too (it shares the cookie) and settles what
    # linking at the end finds.
    def lines(conn, t, *pairs):
        return [Chunk(d, data, t + 0.05 * i, conn) for i, (d, data) in enumerate(pairs)]
    chunks = (
        lines("nsA", 0.0, (C2S, b"VER 1 MSNP8 CVR0\r\n"), (S2C, b"VER 1 MSNP8 CVR0\r\n"),
              (C2S, b"USR 2 TWN I carl@example.com\r\n"), (S2C, b"USR 2 OK carl@example.com Carl 1 0\r\n"),
              (C2S, b"XFR 3 SB\r\n"), (S2C, b"XFR 3 SB 127.0.0.3:1864 CKI 1111.2222\r\n"))
        + lines("nsB", 2.0, (C2S, b"VER 1 MSNP8 CVR0\r\n"), (S2C, b"VER 1 MSNP8 CVR0\r\n"),
                (C2S, b"USR 2 TWN I bob@example.com\r\n"), (S2C, b"USR 2 OK bob@example.com Bob 1 0\r\n"),
                (C2S, b"XFR 3 SB\r\n"), (S2C, b"XFR 3 SB 127.0.0.3:1864 CKI 1111.2222\r\n"))
        + lines("sbX", 3.0, (C2S, b"USR 1 bob@example.com 1111.2222\r\n"),
                (S2C, b"USR 1 OK bob@example.com Bob\r\n"), (C2S, b"OUT\r\n"))
        + lines("nsB", 3.5, (C2S, b"OUT\r\n"))
        + lines("late", 20.0, (C2S, b"VER 1 MSNP8 CVR0\r\n"), (S2C, b"VER 1 MSNP8 CVR0\r\n"))
        + lines("nsA", 50.0, (C2S, b"PNG\r\n"), (S2C, b"QNG\r\n")))
    chunks.sort(key=lambda c: c.ts)
    hosts = {"nsA": ("127.0.50.1:4000", "127.0.0.2:1863"), "nsB": ("127.0.60.1:4000", "127.0.0.2:1863"),
             "sbX": ("127.0.60.1:4001", "127.0.0.3:1864"), "late": ("127.0.70.1:4000", "127.0.0.2:1863")}
    batch, _ = linked_output(chunks, window=5.0, addresses=hosts.get, keep_open=["nsA"])
    passes = []
    settled, _ = linked_output(chunks, settle_after=2, window=5.0, addresses=hosts.get, keep_open=["nsA"],
                               passes=passes)
    assert named_by_first_stream(settled) == named_by_first_stream(batch)
    (link,) = [r for r in batch if r["kind"] == "link" and r["linked"]]
    assert (link["from"], link["to"]) == ("nsA", "sbX")
    # nsB's login settled in a pass while nsA was open, and that pass linked nsA
    settled_early = [r for r in settled if r["kind"] == "session" and r["streams"] == ["nsB"]]
    assert settled_early and settled.index(settled_early[0]) < next(
        i for i, r in enumerate(settled) if r["kind"] == "stream" and r.get("stream") == "nsA")
    assert any(still >= {"nsA"} and linked == 4 for linked, _, still in passes)


# -- incremental passes: what a pass keeps equals linking everything from scratch ---------

def _random_capture(data):
    """MSNP8 logins from a hypothesis draw: how many, how far apart, which user and client host
    each has (shared ones tie logins together), which connections are missing from the capture
    (a switchboard without its NS, an NS without its DS) and which stay open to the end."""
    from dataclasses import replace
    n = data.draw(st.integers(1, 7), label="logins")
    chunks, open_, hosts = [], [], {}
    t = 0.0
    for k in range(n):
        t += data.draw(st.sampled_from([0.5, 3.0, 12.0, 40.0, 400.0]), label="gap")
        user = data.draw(st.integers(0, 2), label="user")
        host = data.draw(st.integers(0, 2), label="host")
        missing = data.draw(st.sets(st.sampled_from(["ds", "ns", "sb1", "sb2"]), max_size=2), label="missing")
        kept = data.draw(st.sets(st.sampled_from(["ds", "ns", "sb1", "sb2"]), max_size=1), label="open")
        for c in SESSIONS["msnp8"]:
            if c.conn in missing:
                continue
            data_ = (c.data.replace(b"17262740", b"1726274%d" % k).replace(b"849102291", b"84910229%d" % k)
                     .replace(b"alice@", b"al%03d@" % user))
            label = f"{c.conn}-{k}"
            chunks.append(replace(c, conn=label, ts=c.ts + t, data=data_))
            client, server = CONNECTIONS["msnp8"][c.conn]
            hosts[label] = (f"127.0.{host + 1}.1:{client.rsplit(':', 1)[1]}{k}", server)
        open_ += [f"{c}-{k}" for c in kept - missing]
    chunks.sort(key=lambda c: c.ts)
    return chunks, open_, hosts


@given(st.data())
@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_each_pass_keeps_the_sessions_linking_everything_finds(data):
    # At every settling pass, the sessions kept (those whose streams have all ended, from the
    # groups linked again and those kept from earlier passes) are the ones a from-scratch link
    # of every stream held finds, and without a bound forcing logins out the records written
    # equal those of linking once at the end.
    from analyzer.analysis.linking import Ended
    chunks, open_, hosts = _random_capture(data)
    window = data.draw(st.sampled_from([5.0, 30.0, 300.0]), label="window")
    settle_after = data.draw(st.integers(1, 3), label="settle_after")
    checked = []

    def watch(linker):
        real = linker._relink

        def relink():
            real()
            kept = sorted((h.streams, h.end, h.user) for g in linker._groups for h in g.held)
            full = Linker._link(linker)   # everything held, from scratch
            want = sorted((tuple(s["streams"]), s["end"], (s["handle"] or "").lower()) for s in full["sessions"]
                          if all(type(linker.conns[m]) is Ended for m in s["streams"]))
            assert kept == want
            checked.append(len(kept))
        linker._relink = relink

    batch, _ = linked_output(chunks, window=window, addresses=hosts.get, keep_open=open_)
    settled, _ = linked_output(chunks, settle_after=settle_after, window=window, addresses=hosts.get,
                               keep_open=open_, watch=watch)
    if not any("forced" in r for r in settled):   # past max_held (20 x settle_after), logins are let go early
        assert named_by_first_stream(settled) == named_by_first_stream(batch)


@pytest.mark.parametrize("gap", [2.0, 60.0])
def test_a_pass_ties_an_open_login_to_a_switchboard_of_its_user_without_its_ns(gap):
    # Login 1's switchboards have no NS in the capture and join the login of the same user
    # that overlaps them (login 0: only its NS, which stays open, from another client host;
    # nothing but the user handle ties them): a pass must
    # link them with it (tied by the user handle the open NS has), not keep them as a session
    # of their own. `gap` seconds later, they overlap the NS only once its end has moved past
    # their start (it speaks again later): its group is linked again at each pass while open.
    # Logins 2 to 5 (other users and hosts) end before the NS speaks again (2) and after it
    # (3 to 5), so passes come before and after that.
    from dataclasses import replace
    late = 3 * gap + 100.0
    chunks = []
    for k in range(6):
        for c in SESSIONS["msnp8"]:
            if (k == 0 and c.conn != "ns") or (k == 1 and c.conn in ("ds", "ns")):
                continue
            data_ = c.data.replace(b"17262740", b"1726274%d" % k).replace(b"849102291", b"84910229%d" % k)
            if k >= 2:
                data_ = data_.replace(b"alice@", b"zed%d@" % k)
            chunks.append(replace(c, conn=f"{c.conn}-{k}", ts=c.ts + (k * gap if k < 2 else 2 * gap + 60.0 if k == 2 else late + 40.0 * k),
                                  data=data_))
    [last] = [c for c in chunks if c.conn == "ns-0"][-1:]
    chunks.append(replace(last, ts=late))   # the NS of login 0 speaks again, much later
    chunks.sort(key=lambda c: c.ts)

    def hosts(label):
        name, k = label.split("-")
        client, server = CONNECTIONS["msnp8"][name]
        return f"127.0.{int(k) + 1}.1:{client.rsplit(':', 1)[1]}", server

    from analyzer.analysis.linking import Ended
    checked = []

    def watch(linker):
        real = linker._relink

        def relink():
            real()
            kept = sorted(h.streams for g in linker._groups for h in g.held)
            full = Linker._link(linker)
            assert kept == sorted(tuple(s["streams"]) for s in full["sessions"]
                                  if all(type(linker.conns[m]) is Ended for m in s["streams"]))
            checked.append(linker._now)
        linker._relink = relink

    batch, _ = linked_output(chunks, window=30.0, addresses=hosts, keep_open=["ns-0"])
    settled, _ = linked_output(chunks, settle_after=1, window=30.0, addresses=hosts, keep_open=["ns-0"],
                               watch=watch)
    assert min(checked) < late < max(checked)   # passes came before and after the NS spoke again
    assert named_by_first_stream(settled) == named_by_first_stream(batch)
    [login] = [r for r in batch if r["kind"] == "session" and "ns-0" in r["streams"]]
    assert {"sb1-1", "sb2-1"} <= set(login["streams"])


def test_a_stream_that_only_ends_leaves_its_group_linked():
    # An NS stays open while its DS and switchboards end, one pass after another (a busy
    # server's logins last hours): the group is linked once, at the first pass that finds an
    # ended stream in it; the later ends change nothing linking looks at, so the passes only
    # move the sessions whose last stream ended to those held, as linking again would find them.
    from analyzer.analysis.linking import Ended
    linked = []
    real = Linker._link_groups

    def counting(self, chunk):
        linked.append(sorted(set().union(*chunk)))
        return real(self, chunk)
    linker = Linker(Redactor(enabled=False), settle_after=10 ** 6, window=5.0, max_held=10 ** 6)
    linker._link_groups = counting.__get__(linker)
    analysis = Analysis([linker])
    conns = _feed_msnp8(analysis)
    analysis.feed(conns["ns"], S2C, b"QNG 50\r\n", 100.0)   # the NS goes on: capture time moves

    def held():
        return sorted((h.streams, h.end, h.user) for g in linker._groups for h in g.held)

    def from_scratch():
        full = Linker._link(linker)
        return sorted((tuple(s["streams"]), s["end"], (s["handle"] or "").lower()) for s in full["sessions"]
                      if all(type(linker.conns[m]) is Ended for m in s["streams"]))
    for label in ("ds", "sb1", "sb2", "ns"):
        analysis.close(conns[label], 100.0 if label == "ns" else None)
        linker._settle()
        assert held() == from_scratch()
    assert linked == [["ds", "ns", "sb1", "sb2"]]
    assert held() == [(("ds", "ns", "sb1", "sb2"), 100.0, "alice@example.com")]
    assert linker.passes == 4 and linker.settled_sessions == 0   # ended inside the window: held


@given(st.sampled_from([0, 1, 2, 3, 16]), st.booleans(), st.lists(st.tuples(st.sampled_from(["JOI", "IRO", "BYE", "OUT", "MSG"]), st.integers(0, 8)),
                                max_size=70))
@settings(max_examples=300, deadline=None)
def test_participants_follow_arrivals_and_departures_as_the_rule_says(scan, login, lines_):
    # The rule: a handle's arrival lists it unless the one of that handle still there has not
    # left; a BYE takes the one still there (it leaves, unless it left already: then an
    # "unseen" one is listed, left); an OUT makes the user leave; on a switchboard whose login
    # was not seen (mid-session), a sender never listed is listed from its MSG. Checked
    # against a model of the rule, with short lists (looked through) and long ones (past
    # _SCAN: indexed; `scan` sets it low, so that both ways see the same lines).
    from analyzer.analysis import linking
    before, linking._SCAN = linking._SCAN, scan
    try:
        _participants_as_the_rule_says(login, lines_)
    finally:
        linking._SCAN = before


def _participants_as_the_rule_says(login, lines_):
    linker = Linker(Redactor(enabled=False))
    analysis = Analysis([linker])
    sb = analysis.open("127.0.0.1:40000", "127.0.0.3:1864", conn_id="sb")
    model, there = [], {}
    if login:
        analysis.feed(sb, C2S, b"USR 1 alice@example.com 1.2.3\r\n", 1.0)
        analysis.feed(sb, S2C, b"USR 1 OK alice@example.com Alice\r\n", 1.0)
        model.append(["alice@example.com", "self", 1.0, None, None])
        there["alice@example.com"] = model[0]
    for t, (cmd, k) in enumerate(lines_, 2):
        handle = f"u{k}@example.com" if k else "alice@example.com"   # the user too: after an OUT
        if cmd in ("JOI", "IRO"):
            line = (b"JOI %s U\r\n" % handle.encode() if cmd == "JOI"
                    else b"IRO 1 1 2 %s U\r\n" % handle.encode())
            analysis.feed(sb, S2C, line, float(t))
            p = there.get(handle)
            if p is None or p[3] is not None:
                there[handle] = [handle, cmd, float(t), None, None]
                model.append(there[handle])
        elif cmd == "BYE":
            analysis.feed(sb, S2C, b"BYE %s\r\n" % handle.encode(), float(t))
            p = there.pop(handle, None)
            if p is not None and p[3] is None:
                p[3:] = [float(t), "BYE"]
            else:
                model.append([handle, "unseen", None, float(t), "BYE"])
        elif cmd == "OUT":
            analysis.feed(sb, C2S, b"OUT\r\n", float(t))
            if login and model[0][3] is None:
                model[0][3:] = [float(t), "OUT"]
        else:
            body = b"MIME-Version: 1.0\r\nContent-Type: text/plain\r\n\r\nhi"
            analysis.feed(sb, S2C, b"MSG %s U %d\r\n%s" % (handle.encode(), len(body), body), float(t))
            if not login and not any(p[0] == handle for p in model):
                there[handle] = [handle, "MSG", None, None, None]
                model.append(there[handle])
    facts = linker.facts.get("sb")
    got = [[p.handle, p.via, p.joined, p.left, p.left_via] for p in (facts.participants if facts else ())]
    assert got == model


def test_an_open_connections_events_find_its_facts_on_it_and_two_linkers_keep_their_own():
    # Each event of an open connection finds the linker's facts on the connection
    # (Connection.linked), not by a look-up in a table of every open connection; a second
    # Linker on the same connections keeps its own facts and links the same.
    class Counted(dict):
        looks = 0

        def get(self, *args):
            Counted.looks += 1
            return super().get(*args)
    first, second = Linker(Redactor(enabled=False)), Linker(Redactor(enabled=False))
    first.facts = Counted()
    analysis = Analysis([first, second])
    conns = _feed_msnp8(analysis)
    assert Counted.looks == len(conns)   # once each, at its first event
    assert all(conn.linked is first.facts[label] for label, conn in conns.items())
    analysis.finish()
    assert all(conn.linked is None for conn in conns.values())   # ended: no longer kept on it
    alone, _ = run(SESSIONS["msnp8"], CONNECTIONS["msnp8"])
    for linker in (first, second):
        res = linker.result()
        assert (res["links"], res["sessions"], res["chats"]) == (alone["links"], alone["sessions"], alone["chats"])


# -- the linker is handed only the feeds it watches; command times come from the Connection --

class _NotAConnection:
    """A Connection seen as another kind of input (a test's, a tool's): the Linker keeps its
    command times and its clock itself, from every command it is handed (`Linker._take`)."""

    __slots__ = ("_conn",)
    _HIDDEN = frozenset({"linked", "watch", "first_command_ts", "last_command_ts", "latest_command_ts"})

    def __init__(self, conn) -> None:
        object.__setattr__(self, "_conn", conn)

    def __getattr__(self, name):
        if name in self._HIDDEN:
            raise AttributeError(name)
        return getattr(self._conn, name)

    def __setattr__(self, name, value) -> None:
        setattr(self._conn, name, value)


class _EveryCommand:
    """A sink handing a Linker every event of every feed, one at a time, as the run did before
    it routed by watched codes: the command-by-command feed the routed Linker must agree with."""

    def __init__(self, linker: Linker) -> None:
        self.linker = linker
        self.seen: dict = {}

    def _as(self, conn):
        if conn is None:
            return None
        plain = self.seen.get(id(conn))
        if plain is None:
            plain = self.seen[id(conn)] = (_NotAConnection(conn), conn)
        return plain[0]

    def event(self, conn, event) -> None:
        self.linker.event(self._as(conn), event)

    def stream(self, conn) -> None:
        self.linker.stream(self._as(conn))

    def close(self) -> None:
        self.linker.close()


def _timeless(analysis, label, client, server):
    """A Connection whose bytes have no times (`first_ts`, `last_ts` stay None), opened in
    `analysis`: linking then reads its commands' times wherever it needs a start or an end."""
    from analyzer.analysis.connection import Connection

    class Timeless(Connection):
        first_ts = property(lambda self: None, lambda self, value: None)
        last_ts = property(lambda self: None, lambda self, value: None)
    conn = analysis.connections[label] = Timeless(label, client, server, analysis.limits)
    return conn


@given(st.data())
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_the_routed_linker_keeps_the_times_and_clock_a_command_by_command_feed_gives(data):
    # The run hands the Linker only the feeds holding a command it watches; the times of the
    # others' commands are read from the Connection. However TCP chopped the streams, whatever
    # times the pieces carry (missing, stepping back), the times of each stream and the clock
    # equal those of a Linker handed every command, at every feed, and so do the records of the
    # settling passes (the clock decides them) and of the end. With `timeless`, the bytes carry no
    # times and every start and end linking reads is a command's.
    chunks, open_, hosts = _random_capture(data)
    rnd = data.draw(st.randoms(use_true_random=False), label="segmentation")
    timeless = data.draw(st.booleans(), label="timeless")
    window = data.draw(st.sampled_from([1.0, 5.0, 300.0]), label="window")
    settle_after = data.draw(st.sampled_from([None, 1, 2]), label="settle_after")
    pieces = []   # (label, direction, bytes, ts): each chunk cut anywhere, each piece with its own time
    for c in chunks:
        cuts = sorted(rnd.sample(range(1, len(c.data)), min(len(c.data) - 1, rnd.randint(0, 3))))
        for a, b in zip([0] + cuts, cuts + [len(c.data)]):
            ts = rnd.choice([c.ts, c.ts, c.ts - rnd.random() * 3, c.ts + rnd.random(), None])
            pieces.append((c.conn, c.direction, c.data[a:b], ts))
    routed, every = (Linker(Redactor(enabled=False), settle_after=settle_after, window=window) for _ in range(2))
    settled = {routed: [], every: []}
    clocks = {routed: [], every: []}   # the clock as each settling attempt left it (it decided by it)
    for linker in (routed, every):
        linker.on_settled = settled[linker].extend

        def settle(linker=linker, real=linker._settle):
            real()
            clocks[linker].append((linker._now, linker.passes))
        linker._settle = settle
    handed = []
    batch = routed.event_batch
    routed.event_batch = lambda conn, events: (handed.append(len(events)), batch(conn, events))
    analysis = Analysis([routed, _EveryCommand(every)])
    last = {p[0]: i for i, p in enumerate(pieces)}
    conns, want = {}, {}   # the oracle: each stream's first, last and latest command time
    clock = None
    fed = 0
    for i, (label, direction, piece, ts) in enumerate(pieces):
        conn = conns.get(label)
        if conn is None:
            conn = conns[label] = (_timeless(analysis, label, *hosts[label]) if timeless
                                   else analysis.open(*hosts[label], conn_id=label))
        for event in analysis.feed(conn, direction, piece, ts):
            fed += 1
            if type(event).__name__ == "Command" and event.ts is not None:
                first, _, latest = want.get(label, (event.ts, None, event.ts))
                want[label] = (first, event.ts, max(latest, event.ts))
                clock = event.ts if clock is None else max(clock, event.ts)
        assert (conn.first_command_ts, conn.last_command_ts, conn.latest_command_ts) == want.get(label, (None,) * 3)
        facts = every.facts.get(label)
        if facts is not None:
            assert (facts.first_ts, facts.last_ts) == want.get(label, (None,) * 2)[:2]
            assert (routed._start(label), routed._end(label)) == (every._start(label), every._end(label))
        if last[label] == i and label not in open_:
            analysis.close(conn, None if timeless else ts)
        if not any(type(every.conns.get(s)).__name__ == "Ended" for s in every.conns):
            assert every._now == clock   # no stream ended yet: the latest command time of all
    analysis.finish()
    assert clocks[routed] == clocks[every]
    assert settled[routed] == settled[every]
    assert routed._clock() == every._now
    a, b = routed.result(), every.result()
    assert (a["links"], a["unlinked"], a["sessions"], a["chats"]) == (b["links"], b["unlinked"], b["sessions"],
                                                                       b["chats"])
    assert sum(handed) <= fed   # handed the watched feeds only (see the test below)


def test_the_linker_is_handed_a_connection_s_first_feed_and_those_holding_a_command_it_watches():
    # Feeds of MSNP8 lines one at a time: the routed Linker is handed each connection's first,
    # then only those with XFR/RNG/IRO/JOI/BYE/USR (MSG while a switchboard's login is unseen)
    # from the server and USR/ANS/OUT from the client; the rest (CHG, ILN, PNG, a logged-in
    # switchboard's MSG, ...) are not handed over, yet it links as one handed everything does.
    from analyzer.analysis.linking import _WATCH_C2S, _WATCH_S2C
    linker = Linker(Redactor(enabled=False))
    handed = []
    batch = linker.event_batch
    linker.event_batch = lambda conn, events: (handed.append((conn.id, [getattr(e, "cmd", None) for e in events])),
                                               batch(conn, events))
    analysis = Analysis([linker])
    conns, want, logged_in = {}, [], set()
    for c in SESSIONS["msnp8"]:
        conn = conns.get(c.conn)
        if conn is None:
            conn = conns[c.conn] = analysis.open(*CONNECTIONS["msnp8"][c.conn], conn_id=c.conn)
        for line in c.data.split(b"\r\n")[:-1] if b"MSG" not in c.data else [c.data[:-2]]:
            events = analysis.feed(conn, c.direction, line + b"\r\n", c.ts)
            codes = [e.cmd for e in events if type(e).__name__ == "Command"]
            watched = _WATCH_C2S if c.direction == C2S else _WATCH_S2C - ({"MSG"} if c.conn in logged_in else set())
            if events and (not any(conn_id == c.conn for conn_id, _ in want) or set(codes) & watched):
                want.append((c.conn, [getattr(e, "cmd", None) for e in events]))
            if c.direction == C2S and c.conn.startswith("sb") and codes[:1] in (["USR"], ["ANS"]):
                logged_in.add(c.conn)
    analysis.finish()
    assert handed == want
    assert len(handed) < sum(1 for _ in SESSIONS["msnp8"]) // 2
    alone, _ = run(SESSIONS["msnp8"], CONNECTIONS["msnp8"])
    res = linker.result()
    assert (res["links"], res["sessions"], res["chats"]) == (alone["links"], alone["sessions"], alone["chats"])


@given(st.lists(st.tuples(st.booleans(), st.sampled_from("ab"), st.integers(0, 11)), max_size=80))
def test_an_index_of_streams_by_key_keeps_them_in_order_one_a_few_or_many(ops):
    # _tie/_untie keep one stream as itself, a few in a tuple, more in a dict (past _FEW):
    # whichever way, _tied gives the streams of a key in the order they were first tied.
    from analyzer.analysis.linking import _FEW, _tie, _tied, _untie
    index, model = {}, {"a": {}, "b": {}}
    for add, key, n in ops:
        sid = f"s{n}"
        if add:
            _tie(index, key, sid)
            model[key].setdefault(sid, None)
        else:
            _untie(index, key, sid)
            model[key].pop(sid, None)
        for k in "ab":
            assert list(_tied(index, k)) == list(model[k])
            assert (k in index) == bool(model[k])
    assert _FEW < 12   # the draws go past it
