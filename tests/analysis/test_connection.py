"""analysis/connection.py: what a connection keeps while it is open."""

from __future__ import annotations

from analyzer.analysis.connection import Connection
from analyzer.analysis.run import Analysis
from analyzer.msnp import C2S, S2C, Transaction


def test_an_idle_connection_holds_no_pairing_and_a_new_one_pairs_as_the_old():
    conn = Connection("1")
    conn.feed(C2S, b"VER 1 MSNP8 CVR0\r\n", 1.0)
    assert conn._tracker is not None                # a request waits
    conn.feed(C2S, b"CVR 2 0x0409 winnt 5.1 i386 MSNMSGR 6.0.0602 MSMSGS alice@example.com\r\n", 1.2)
    conn.feed(S2C, b"VER 1 MSNP8\r\n", 1.5)
    assert conn.wake == 61.0                        # the capture's deadline for this connection (the VER's,
    assert conn.tick(61.0) == [] and conn._tracker is not None   # early: the CVR still waits)
    assert conn.wake == 61.2
    conn.feed(S2C, b"CVR 2 6.0.0602 6.0.0602 6.0.0602 http://example.com http://example.com\r\n", 1.6)
    assert conn.wake == float("inf") and conn._tracker is None   # nothing waits: dropped at once
    conn.feed(C2S, b"PNG\r\n", 62.0)
    settled = conn.feed(S2C, b"QNG 50\r\n", 62.25)
    assert conn._tracker is None and conn.wake == float("inf")   # the QNG left nothing to wait for
    (ping,) = [e for e in settled if type(e) is Transaction]
    assert ping.cmd == "PNG" and ping.outcome == "answered" and ping.latency_ms == 250.0
    conn.feed(C2S, b"CHG 2 NLN 0\r\n", 130.0)
    assert conn.tracker.waiting == 1 and conn.wake == 190.0
    assert conn.close(131.0)                        # the CHG is flushed, unanswered
    assert conn.outcomes == {"answered": 3, "unanswered": 1}


def test_a_one_sided_connection_keeps_its_pairing_so_requests_stay_not_captured():
    analysis = Analysis([])
    conn = analysis.open("127.0.0.1:1", "127.0.0.2:1863")
    analysis.one_sided(conn, C2S)
    analysis.feed(conn, C2S, b"VER 1 MSNP8 CVR0\r\n", 1.0)
    analysis.feed(conn, C2S, b"PNG\r\n", 2.0)
    events = analysis.close(conn, 3.0)
    assert [e.outcome for e in events if type(e) is Transaction] == ["not_captured", "not_captured"]
    assert "msnp.reply.unanswered" not in conn.anomalies


def test_a_released_connection_makes_no_new_pairing():
    conn = Connection("1")
    conn.feed(C2S, b"PNG\r\n", 1.0)
    conn.close(2.0)
    conn.release()
    assert conn.tracker is None and conn.wake == float("inf") and conn.tick(100.0) == []


def test_a_tracker_that_holds_nothing_and_cannot_time_out_is_dropped_at_once():
    # A switchboard's server lines and the client's MSG U make a tracker with nothing to wait
    # for (wake: inf): no tick would ever come for it, so the feed drops it (thousands of boards
    # idle at once on a busy server).
    conn = Connection("1")
    conn.feed(S2C, b"JOI bob@example.com Bob\r\n", 1.0)
    assert conn._tracker is None
    events = conn.feed(S2C, b"ACK 9\r\n", 2.0)                 # still said: it answers nothing
    assert [e.name for e in events if hasattr(e, "name")] == ["msnp.reply.orphan"]
    assert conn._tracker is None
    settled = conn.feed(C2S, b"MSG 3 U 4\r\nabcd", 3.0)
    assert [t.outcome for t in settled if type(t) is Transaction] == ["no_reply_expected"]
    assert conn._tracker is None
    conn.feed(C2S, b"MSG 4 A 4\r\nabcd", 4.0)              # an ACK is awaited: kept
    assert conn._tracker is not None and conn.wake == 64.0
    conn.feed(S2C, b"ACK 4\r\n", 4.5)                      # nothing left that could expire: dropped
    assert conn._tracker is None and conn.wake == float("inf")
    conn.feed(C2S, b"MSG 5 N 4\r\nabcd", 5.0)              # a NAK may come within the linger
    assert conn._tracker is not None and conn.wake == 8.0
    assert [t.outcome for t in conn.tick(8.5)] == ["no_reply_expected"] and conn._tracker is None
    assert conn.outcomes == {"no_reply_expected": 2, "answered": 1}


def test_outcomes_are_counted_in_two_fields_and_a_flat_list_and_read_in_first_seen_order():
    # A Counter per connection cost 220 bytes on each of thousands of open connections: the
    # first outcome and its count are two fields, the others a flat [outcome, count, ...] list;
    # `outcomes` reads them as a Counter whose key order (the stream record's "transactions")
    # is the order each outcome was first seen.
    conn = Connection("1")
    assert conn._outcome is None and conn._outcomes is None and conn.outcomes == {}
    assert list(conn.outcome_counts()) == []
    conn.feed(C2S, b"CHG 1 NLN 0\r\n", 1.0)
    conn.feed(S2C, b"201 1\r\n", 1.1)
    for trid in (2, 3, 4):
        conn.feed(C2S, b"CHG %d NLN 0\r\n" % trid, 2.0)
        conn.feed(S2C, b"CHG %d NLN 0\r\n" % trid, 2.1)
    conn.feed(C2S, b"OUT\r\n", 3.0)
    conn.feed(C2S, b"CHG 5 NLN 0\r\n", 3.5)
    conn.close(4.0)
    assert (conn._outcome, conn._outcome_n) == ("error", 1)
    assert conn._outcomes == ["answered", 3, "no_reply_expected", 1, "unanswered", 1]
    assert list(conn.outcome_counts()) == [("error", 1), ("answered", 3), ("no_reply_expected", 1),
                                           ("unanswered", 1)]
    assert list(conn.outcomes.items()) == [("error", 1), ("answered", 3), ("no_reply_expected", 1),
                                           ("unanswered", 1)]
    conn.outcomes["error"] += 5                   # a copy: the connection's counts are its own
    assert conn.outcomes["error"] == 1


SERVER_LINES = [b"JOI bob@example.com Bob\r\n", b"IRO 1 1 2 bob@example.com Bob\r\n", b"ACK 9\r\n", b"NAK 9\r\n",
                b"QNG 50\r\n", b"QNG\r\n", b"CHG 3 NLN 0\r\n", b"CHG 0 NLN 0\r\n", b"ILN 7 NLN a@x.com A\r\n",
                b"NLN NLN a@x.com A\r\n", b"LST a@x.com A 11 0\r\n", b"LSG 0 Other 0\r\n", b"BPR PHH 1\r\n",
                b"SYN 4 12 1 1\r\n", b"911 5\r\n", b"500 0\r\n", b"XFR 8 SB 127.0.0.9:1864 CKI 1.2\r\n",
                b"RNG 11 127.0.0.9:1864 CKI 9.9 bob@x.com Bob\r\n", b"BYE bob@example.com\r\n", b"OUT OTH\r\n",
                b"MSG bob@example.com Bob 2\r\nhi", b"ADL 3 OK\r\n", b"USR 1 OK a@x.com A\r\n", b"CAL 2 RINGING 1\r\n"]


def test_server_lines_of_a_connection_without_a_tracker_are_judged_by_an_empty_one_that_keeps_nothing():
    # No tracker is made for the lines a server pushes while nothing waits (a switchboard's
    # messages, presence): the shared empty tracker judges them (an orphan reply, or nothing)
    # and must keep nothing of them, or one connection's lines would reach another's pairing.
    from analyzer.analysis import connection
    from analyzer.msnp import Anomaly, TransactionTracker
    shared = connection._EMPTY_TRACKER
    slots = [s for s in TransactionTracker.__slots__]
    pristine = [getattr(TransactionTracker(), s) for s in slots]
    for n, line in enumerate(SERVER_LINES):
        conn, own = Connection("a"), Connection("b")
        own.tracker                                  # made now: it judges the line itself
        got, want = conn.feed(S2C, line, float(n)), own.feed(S2C, line, float(n))
        assert conn._tracker is None, line
        assert [(e.name, e.detail) for e in got if type(e) is Anomaly] == \
               [(e.name, e.detail) for e in want if type(e) is Anomaly], line
        assert conn.anomalies == own.anomalies
    assert [getattr(shared, s) for s in slots] == pristine
    assert shared.idle and shared.wake == float("inf")
    conn = Connection("c")                              # a request still gets its own tracker
    conn.feed(C2S, b"PNG\r\n", 1.0)
    assert conn._tracker is not None and conn._tracker is not shared


def test_command_counts_share_their_codes_and_read_as_a_counter_in_first_seen_order():
    a, b, c = Connection("1"), Connection("2"), Connection("3")
    for conn in (a, b):
        conn.feed(C2S, b"VER 1 MSNP8 CVR0\r\nCVR 2 x\r\n", 1.0)
        conn.feed(C2S, b"PNG\r\nPNG\r\nVER 3 MSNP8\r\n", 2.0)
    c.feed(C2S, b"CVR 2 x\r\nVER 1 MSNP8 CVR0\r\n", 1.0)
    assert a._codes is b._codes                   # the same codes in the same order: one set
    assert a._codes is not c._codes               # another order: another set
    assert list(a.commands.items()) == [("VER", 2), ("CVR", 1), ("PNG", 2)]
    assert sum(a.commands.values()) == 5 and list(c.commands) == ["CVR", "VER"]
    assert Connection("4").commands == {}


def test_command_codes_past_the_shared_budget_are_each_connections_own(monkeypatch):
    from analyzer.analysis import connection as module
    monkeypatch.setattr(module, "_shared_codes", module.SHARED_CODES)   # the shared tree is full
    a, b = Connection("1"), Connection("2")
    for conn in (a, b):
        conn.feed(C2S, b"ZZA 1\r\nZZB 2\r\nZZA 3\r\n", 1.0)
    assert a._codes.private and a._codes is not b._codes
    assert a._codes.codes == b._codes.codes == ["ZZA", "ZZB"]
    assert a.commands == b.commands == {"ZZA": 2, "ZZB": 1}
    a.feed(C2S, b"ZZC 4\r\n", 2.0)                # a private set grows in place, for its connection alone
    assert a.commands == {"ZZA": 2, "ZZB": 1, "ZZC": 1} and b.commands == {"ZZA": 2, "ZZB": 1}
