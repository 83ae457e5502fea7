"""TransactionTracker: each request with its replies, outcomes, latency, ordering anomalies."""

from __future__ import annotations

import pytest

from analyzer.msnp import C2S, S2C, Anomaly, CommandReader, ProtocolState, Transaction, TransactionTracker


class Wire:
    """Feeds lines through real readers into one tracker, with explicit times."""

    def __init__(self, version: int | None = 8, **kw) -> None:
        state = ProtocolState(version)
        self.readers = {C2S: CommandReader(C2S, state), S2C: CommandReader(S2C, state)}
        self.tracker = TransactionTracker(**kw)
        self.events: list = []

    def c(self, line: bytes, ts: float = 0.0):
        return self._feed(C2S, line, ts)

    def s(self, line: bytes, ts: float = 0.0):
        return self._feed(S2C, line, ts)

    def _feed(self, direction, line, ts):
        for event in self.readers[direction].feed(line, ts):
            self.events.append(event)
            if type(event).__name__ == "Command":
                self.events += self.tracker.observe(event)
        return self

    def close(self, ts: float | None = None):
        self.events += self.tracker.close(ts)
        return self

    @property
    def txns(self) -> list[Transaction]:
        return [e for e in self.events if type(e) is Transaction]

    def txn(self, cmd: str, trid=None) -> Transaction:
        found = [t for t in self.txns if t.cmd == cmd and (trid is None or t.trid == trid)]
        assert len(found) == 1, (cmd, trid, self.txns)
        return found[0]

    @property
    def anomalies(self) -> list[str]:
        return [e.name for e in self.events if type(e) is Anomaly]


def test_simple_answer_with_latency():
    w = Wire().c(b"XFR 10 SB\r\n", 1.0).s(b"XFR 10 SB 127.0.0.3:1864 CKI 1.2\r\n", 1.25).close()
    t = w.txn("XFR", 10)
    assert t.outcome == "answered" and abs(t.latency_ms - 250.0) < 1e-6
    assert w.anomalies == []


def test_error_reply():
    w = Wire().c(b"REM 12 FL nobody@example.com\r\n", 1.0).s(b"216 12\r\n", 1.1).close()
    t = w.txn("REM", 12)
    assert (t.outcome, t.error) == ("error", "216 not on list")


def test_chg_then_ilns_belong_to_the_chg():
    w = (Wire().c(b"CHG 9 NLN 0\r\n").s(b"CHG 9 NLN 0\r\n").s(b"ILN 9 NLN bob@example.com Bob 0\r\n")
         .s(b"ILN 9 AWY carol@example.com Carol 0\r\n").close())
    assert [r.cmd for r in w.txn("CHG", 9).replies] == ["CHG", "ILN", "ILN"]
    assert w.anomalies == []


def test_msnp2_syn_with_lst_lines_carrying_the_trid():
    w = (Wire(version=2).c(b"SYN 8 0\r\n").s(b"SYN 8 12\r\n").s(b"GTC 8 12 A\r\n").s(b"BLP 8 12 AL\r\n")
         .s(b"LST 8 FL 12 1 1 bob@example.com Bob\r\n").s(b"LST 8 RL 12 1 1 bob@example.com Bob\r\n").close())
    assert [r.cmd for r in w.txn("SYN", 8).replies] == ["SYN", "GTC", "BLP", "LST", "LST"]
    assert w.anomalies == []


def test_msnp8_syn_block_counted_from_the_syn_line():
    w = (Wire(version=8).c(b"SYN 8 0\r\n").s(b"SYN 8 24 2 1\r\n").s(b"GTC A\r\n").s(b"BLP AL\r\n")
         .s(b"LSG 0 Other%20Contacts 0\r\n").s(b"LST bob@example.com Bob 11 0\r\n")
         .s(b"BPR PHH 555\r\n").s(b"LST carol@example.com Carol 11 0\r\n").s(b"BPR PHH 556\r\n").close())
    t = w.txn("SYN", 8)
    assert [r.cmd for r in t.replies] == ["SYN", "GTC", "BLP", "LSG", "LST", "BPR", "LST", "BPR"]
    assert t.block == [0, 0]
    assert w.anomalies == []


def test_syn_block_cut_short_is_named():
    w = Wire(version=8).c(b"SYN 8 0\r\n").s(b"SYN 8 24 3 0\r\n").s(b"LST bob@example.com Bob 11 0\r\n").close()
    assert w.anomalies == ["msnp.syn.block_incomplete"]


def test_ans_with_iro_lines_before_ans_ok():
    w = (Wire().c(b"ANS 1 alice@example.com 1.2 11752013\r\n", 0.0)
         .s(b"IRO 1 1 2 bob@example.com Bob\r\n", 0.1).s(b"IRO 1 2 2 carol@example.com Carol\r\n", 0.2)
         .s(b"ANS 1 OK\r\n", 0.3).close())
    t = w.txn("ANS", 1)
    assert [r.cmd for r in t.replies] == ["IRO", "IRO", "ANS"]
    assert abs(t.latency_ms - 100.0) < 1e-6  # first reply
    assert w.anomalies == []


def test_cal_ringing_then_joi_of_the_called_endpoint():
    w = (Wire().c(b"CAL 2 bob@example.com\r\n").s(b"CAL 2 RINGING 11752013\r\n")
         .s(b"JOI bob@example.com;{a6f3b20d} Bob\r\n").s(b"JOI bob@example.com;{6e5d4c3b} Bob\r\n").close())
    assert [r.cmd for r in w.txn("CAL", 2).replies] == ["CAL", "JOI", "JOI"]


def test_png_qng_pair_by_order():
    w = Wire().c(b"PNG\r\n", 0.0).c(b"PNG\r\n", 1.0).s(b"QNG 50\r\n", 1.5).s(b"QNG 49\r\n", 2.5).close()
    pings = [t for t in w.txns if t.cmd == "PNG"]
    assert [round(t.latency_ms) for t in pings] == [1500, 1500]
    assert w.anomalies == []


def test_msg_modes():
    w = (Wire().c(b"MSG 3 U 2\r\nhi").c(b"MSG 4 A 2\r\nhi").c(b"MSG 5 D 2\r\nhi").c(b"MSG 6 N 2\r\nhi")
         .s(b"ACK 4\r\n").s(b"NAK 5\r\n").close())
    assert w.txn("MSG", 3).outcome == "no_reply_expected"
    assert w.txn("MSG", 4).outcome == "answered"
    assert (w.txn("MSG", 5).outcome, w.txn("MSG", 5).error) == ("error", "NAK")
    assert w.txn("MSG", 6).outcome == "no_reply_expected"
    assert w.anomalies == []


def test_unanswered_on_close_and_on_timeout():
    w = Wire(reply_timeout=5.0).c(b"XFR 10 SB\r\n", 0.0).c(b"CAL 11 bob@example.com\r\n", 10.0).close(11.0)
    assert w.txn("XFR", 10).outcome == "unanswered"
    assert w.txn("CAL", 11).outcome == "unanswered"
    assert w.anomalies.count("msnp.reply.unanswered") == 2


def test_out_of_order_is_one_anomaly_per_overtaking_reply_saying_how_many():
    w = (Wire().c(b"XFR 10 SB\r\n").c(b"ADD 11 FL dave@example.com dave\r\n").c(b"REM 12 FL x@example.com\r\n")
         .s(b"216 12\r\n").s(b"ADD 11 FL 4 dave@example.com dave\r\n").s(b"XFR 10 SB 127.0.0.3:1864 CKI 1.2\r\n")
         .close())
    # 216 12 overtook 10 and 11, ADD 11 overtook 10, XFR 10 overtook nothing: two, not three pairs.
    ooo = [e for e in w.events if type(e) is Anomaly]
    assert [(a.name, a.trid) for a in ooo] == [("msnp.reply.out_of_order", 12), ("msnp.reply.out_of_order", 11)]
    assert "2 earlier request(s)" in ooo[0].detail and "1 earlier request(s)" in ooo[1].detail


def test_newest_first_replies_give_one_anomaly_each_not_one_per_pair():
    n = 1000
    w = Wire(max_pending=n)
    for trid in range(1, n + 1):
        w.c(b"ADD %d FL u%d@example.com u\r\n" % (trid, trid))
    for trid in range(n, 0, -1):
        w.s(b"ADD %d FL 4 u%d@example.com u\r\n" % (trid, trid))
    w.close()
    ooo = [e for e in w.events if type(e) is Anomaly]
    assert len(ooo) == n - 1  # the old rule gave n*(n-1)/2 = 499,500
    assert ooo[0].detail.endswith(f"before the replies to {n - 1} earlier request(s) still waiting")
    assert all(t.outcome == "answered" for t in w.txns) and len(w.txns) == n


def test_multi_reply_block_counts_once_and_started_blocks_are_not_overtaken():
    w = (Wire().c(b"XFR 10 SB\r\n").c(b"CHG 11 NLN 0\r\n").s(b"CHG 11 NLN 0\r\n")
         .s(b"ILN 11 NLN bob@example.com Bob 0\r\n").s(b"ILN 11 NLN carol@example.com Carol 0\r\n")
         .s(b"XFR 10 SB 127.0.0.3:1864 CKI 1.2\r\n").close())
    assert w.anomalies == ["msnp.reply.out_of_order"]  # not one per ILN
    w = (Wire().c(b"ANS 1 alice@example.com 1.2 11752013\r\n").s(b"IRO 1 1 1 bob@example.com Bob\r\n")
         .c(b"MSG 2 A 2\r\nhi").s(b"ACK 2\r\n").s(b"ANS 1 OK\r\n").close())
    assert "msnp.reply.out_of_order" not in w.anomalies  # ANS's replies had begun before the ACK


def test_in_order_replies_are_not_flagged():
    w = (Wire().c(b"XFR 10 SB\r\n").c(b"ADD 11 FL dave@example.com dave\r\n")
         .s(b"XFR 10 SB 127.0.0.3:1864 CKI 1.2\r\n").s(b"ADD 11 FL 4 dave@example.com dave\r\n").close())
    assert w.anomalies == []


def test_async_while_a_single_reply_is_awaited_is_ordinary_traffic():
    # PROTOCOL.md: an NLN between PNG and QNG, or any push while a request awaits its one reply,
    # is not interleaving; nor is the GCF between USR SSO I and USR SSO S (MSNP13+).
    w = Wire().c(b"XFR 10 SB\r\n").s(b"NLN AWY bob@example.com Bob 0\r\n").s(b"XFR 10 SB 1:1 CKI 1\r\n").close()
    assert w.anomalies == []
    w = (Wire().c(b"PNG\r\n").s(b"NLN AWY bob@example.com Bob 0\r\n").s(b"RNG 1 1:1 CKI 2 b@x B\r\n")
         .s(b"QNG 50\r\n").close())
    assert w.anomalies == []
    w = (Wire(version=15).c(b"USR 3 SSO I alice@example.com\r\n").s(b"GCF 0 4\r\n<x/>")
         .s(b"USR 3 SSO S MBI_KEY_OLD x\r\n").close())
    assert w.anomalies == []


def test_lines_inside_a_block_of_related_replies_are_interleaved():
    # an NLN between two ILNs
    w = (Wire().c(b"CHG 9 NLN 0\r\n").s(b"CHG 9 NLN 0\r\n").s(b"ILN 9 NLN bob@example.com Bob 0\r\n")
         .s(b"NLN AWY dave@example.com Dave 0\r\n").s(b"ILN 9 NLN carol@example.com Carol 0\r\n").close())
    assert w.anomalies == ["msnp.async.interleaved"]
    # an ILN among the BPRs of a SYN list (the CHG's reply, then its ILN, inside the counted list)
    w = (Wire().c(b"SYN 5 0\r\n").c(b"CHG 6 NLN 0\r\n").s(b"SYN 5 7 2 0\r\n")
         .s(b"LST bob@example.com Bob 11 0\r\n").s(b"BPR PHH 555\r\n")
         .s(b"ILN 6 NLN dave@example.com Dave 0\r\n")
         .s(b"BPR PHW 556\r\n").s(b"LST carol@example.com Carol 11 0\r\n").close())
    assert "msnp.async.interleaved" in w.anomalies
    # a push between IRO lines
    w = (Wire().c(b"ANS 1 alice@example.com 1.2 11752013\r\n").s(b"IRO 1 1 2 bob@example.com Bob\r\n")
         .s(b"JOI dave@example.com Dave\r\n").s(b"IRO 1 2 2 carol@example.com Carol\r\n").s(b"ANS 1 OK\r\n")
         .close())
    assert w.anomalies == ["msnp.async.interleaved"]
    # the same pushes after the block ended are not
    w = (Wire().c(b"ANS 1 alice@example.com 1.2 11752013\r\n").s(b"IRO 1 1 1 bob@example.com Bob\r\n")
         .s(b"ANS 1 OK\r\n").s(b"JOI dave@example.com Dave\r\n").close())
    assert w.anomalies == []


def test_two_outstanding_cals_each_get_their_joi():
    w = (Wire().c(b"CAL 2 bob@example.com\r\n", 0.0).c(b"CAL 3 carol@example.com\r\n", 0.1)
         .s(b"CAL 2 RINGING 11752013\r\n", 0.2).s(b"CAL 3 RINGING 11752013\r\n", 0.3)
         .s(b"MSG 4 A 2\r\nhi", 0.4)
         .s(b"JOI bob@example.com Bob\r\n", 5.0).s(b"JOI carol@example.com Carol\r\n", 9.0).close())
    assert [r.cmd for r in w.txn("CAL", 2).replies] == ["CAL", "JOI"]
    assert [r.cmd for r in w.txn("CAL", 3).replies] == ["CAL", "JOI"]
    assert w.txn("CAL", 2).outcome == w.txn("CAL", 3).outcome == "answered"
    assert w.anomalies == []


def test_async_inside_a_multi_reply_block_is_interleaved_only_if_the_block_goes_on():
    inside = (Wire().c(b"CHG 9 NLN 0\r\n").s(b"CHG 9 NLN 0\r\n").s(b"NLN AWY carol@example.com Carol 0\r\n")
              .s(b"ILN 9 NLN bob@example.com Bob 0\r\n").close())
    assert inside.anomalies == ["msnp.async.interleaved"]
    after = (Wire().c(b"CHG 9 NLN 0\r\n").s(b"CHG 9 NLN 0\r\n").s(b"ILN 9 NLN bob@example.com Bob 0\r\n")
             .s(b"NLN AWY carol@example.com Carol 0\r\n").close())
    assert after.anomalies == []
    syn = (Wire(version=8).c(b"SYN 8 0\r\n").s(b"SYN 8 24 2 0\r\n").s(b"LST bob@example.com Bob 11 0\r\n")
           .s(b"NLN AWY carol@example.com Carol 0\r\n").s(b"LST carol@example.com Carol 11 0\r\n").close())
    assert syn.anomalies == ["msnp.async.interleaved"]


def test_async_with_nothing_waiting_is_fine():
    w = Wire().s(b"NLN AWY bob@example.com Bob 0\r\n").s(b"CHL 0 123\r\n").close()
    assert w.anomalies == []


def test_orphan_unexpected_duplicate_and_pending_limit():
    assert Wire().s(b"XFR 77 SB 1:1 CKI 1\r\n").close().anomalies == ["msnp.reply.orphan"]
    assert Wire().s(b"QNG 50\r\n").close().anomalies == ["msnp.reply.orphan"]
    w = Wire().c(b"XFR 10 SB\r\n").s(b"CAL 10 RINGING 1\r\n").close()
    assert w.anomalies == ["msnp.reply.unexpected_command"]
    w = Wire().c(b"XFR 10 SB\r\n").c(b"XFR 10 SB\r\n").s(b"XFR 10 SB 1:1 CKI 1\r\n").s(b"XFR 10 SB 1:1 CKI 2\r\n").close()
    assert w.anomalies == ["msnp.trid.duplicate_pending"]
    assert [t.outcome for t in w.txns] == ["answered", "answered"]
    w = Wire(max_pending=2).c(b"XFR 1 SB\r\n").c(b"XFR 2 SB\r\n").c(b"XFR 3 SB\r\n").close()
    assert w.anomalies == ["msnp.trid.pending_limit"] + ["msnp.reply.unanswered"] * 2


def test_pending_limit_is_one_anomaly_with_the_count_and_covers_pngs_and_msg_n():
    w = Wire(max_pending=10)
    for _ in range(500):
        w.c(b"PNG\r\n")
    for trid in range(1, 501):
        w.c(b"MSG %d N 2\r\nhi" % trid)
        w.c(b"XFR %d SB\r\n" % (1000 + trid))
    assert w.tracker.waiting <= 10  # pings, MSG N and requests together
    # Said when the limit is first hit (the 11th PNG), not at the connection's end.
    first = [i for i, e in enumerate(w.events) if type(e) is Anomaly and e.name == "msnp.trid.pending_limit"]
    assert len(first) == 1 and w.events[first[0]].offset == w.events[first[0] - 1].offset == 50
    assert "the oldest, PNG (request at offset 0), given up as unanswered" in w.events[first[0]].detail
    w.close()
    limit = [e for e in w.events if type(e) is Anomaly and e.name == "msnp.trid.pending_limit"]
    assert len(limit) == 1
    # Given up: all 500 PNGs and the XFRs but the last 5 (the last 10 entries, 5 MSG N and 5 XFR,
    # waited to the end); a MSG N pushed out just stops waiting for a NAK, as at --linger.
    assert w.tracker.gave_up == 995
    assert w.anomalies.count("msnp.reply.unanswered") == 5  # the 5 XFRs still waiting at the end
    assert sum(1 for t in w.txns if t.outcome == "unanswered") == 1000 and len(w.txns) == 1500


def test_answered_cals_waiting_for_their_joi_are_held_to_max_pending():
    # A CAL answered RINGING lingers for its JOI (up to the reply timeout); a flood of them
    # is bounded like the requests still waiting, and each JOI looks only at its handle's CALs.
    w = Wire(max_pending=10)
    for trid in range(1, 501):
        w.c(b"CAL %d u%d@example.com\r\n" % (trid, trid)).s(b"CAL %d RINGING 1\r\n" % trid)
        assert len(w.tracker._lingering) <= 10
    w.s(b"JOI u500@example.com U\r\n").s(b"JOI u1@example.com U\r\n")
    assert w.tracker.gave_up == 490 and len(w.tracker._calls) == 10
    w.close()
    assert w.anomalies.count("msnp.trid.pending_limit") == 1
    assert len(w.txns) == 500 and all(t.outcome == "answered" for t in w.txns)
    assert [r.cmd for r in w.txn("CAL", 500).replies] == ["CAL", "JOI"]
    assert [r.cmd for r in w.txn("CAL", 1).replies] == ["CAL"]   # let go before u1 joined


def test_msg_n_waits_for_its_nak_apart_from_reply_blocks():
    # Server lines while many MSG N wait are not "inside" any block, and a NAK still finds its MSG.
    w = Wire()
    for trid in range(1, 201):
        w.c(b"MSG %d N 2\r\nhi" % trid, 0.0)
        w.s(b"JOI u%d@example.com U\r\n" % trid, 0.0)
    w.s(b"NAK 7\r\n", 0.1).close(0.2)
    assert w.anomalies == []
    assert (w.txn("MSG", 7).outcome, w.txn("MSG", 7).error) == ("error", "NAK")
    assert not w.tracker._inside


def test_joi_finds_its_cal_by_handle_among_many():
    w = Wire()
    for trid in range(1, 301):
        w.c(b"CAL %d u%d@example.com\r\n" % (trid, trid))
    for trid in range(300, 0, -1):
        w.s(b"JOI u%d@example.com;{guid} U\r\n" % trid)
    w.s(b"CAL 150 RINGING 1\r\n").close()
    assert [r.cmd for r in w.txn("CAL", 150).replies] == ["JOI", "CAL"]
    assert all([r.cmd for r in t.replies][:1] == ["JOI"] for t in w.txns)
    assert w.tracker._calls == {}


def test_a_transaction_lists_at_most_max_replies_and_counts_the_rest():
    from analyzer.msnp.pairing import MAX_REPLIES
    w = Wire().c(b"CHG 9 NLN 0\r\n").s(b"CHG 9 NLN 0\r\n")
    line = b"ILN 9 NLN bob@example.com Bob 0\r\n"
    w.s(line * (MAX_REPLIES + 41)).close()
    t = w.txn("CHG", 9)
    assert len(t.replies) == MAX_REPLIES and t.more_replies == 42
    assert w.anomalies == ["msnp.reply.list_limit"]


def test_ds_answers_usr_with_xfr_ns():
    w = Wire().c(b"USR 3 TWN I alice@example.com\r\n").s(b"XFR 3 NS 127.0.0.2:1863 0 127.0.0.1:1863\r\n").close()
    assert w.txn("USR", 3).outcome == "answered"
    assert w.anomalies == []


def test_tick_expires_old_requests():
    w = Wire(reply_timeout=5.0).c(b"XFR 10 SB\r\n", 0.0)
    settled = w.tracker.tick(6.0)
    assert [type(e).__name__ for e in settled] == ["Anomaly", "Transaction"]
    assert settled[1].outcome == "unanswered"


# Every test here runs on both implementations: the pure-Python reference and the compiled core.
pytestmark = pytest.mark.usefixtures("implementation")


_FRESH_LINES = [
    b"OUT\r\n", b"OUT 4\r\n", b"MSG 5 U 3\r\nabc", b"MSG 6 N 3\r\nabc", b"MSG 7 A 3\r\nabc",
    b"MSG 8 D 3\r\nabc", b"PNG\r\n", b"QRY 9 msmsgs@msnmsgr.com 32\r\n" + b"0" * 32,
    b"XFR 10 SB\r\n", b"CAL 11 bob@example.com\r\n", b"SYN 12 0 0\r\n", b"CHG 13 NLN 0\r\n",
    b"USR 14 TWN I alice@example.com\r\n", b"VER 0 MSNP8 CVR0\r\n", b"ANS 15 a@b.c 1.2 3\r\n",
    b"LST 16 FL\r\n", b"XYZ\r\n", b"xyz 17\r\n", b"123 18\r\n", b"BLP 19 AL\r\n",
]


@pytest.mark.parametrize("line", _FRESH_LINES)
@pytest.mark.parametrize("version", [2, 8, 15, None])
def test_settle_fresh_is_what_a_new_tracker_does(line, version):
    """`settle_fresh` (a connection without a tracker) settles a client line exactly as a new
    tracker's `observe` does, and takes only the lines that leave that tracker holding nothing."""
    state = ProtocolState(version)
    commands = [e for e in CommandReader(C2S, state).feed(line, 5.0) if type(e).__name__ == "Command"]
    assert commands, line
    for cmd in commands:
        fresh = TransactionTracker()
        expected = fresh.observe(cmd)
        out: list = []
        taken = TransactionTracker.settle_fresh(cmd, out)
        assert taken == (fresh.idle and fresh.wake == float("inf")), (line, version)
        if taken:
            assert [type(e) for e in out] == [type(e) for e in expected]
            assert [vars(e) for e in out] == [vars(e) for e in expected]   # request, outcome, seq, ...
        else:
            assert out == []
