"""analysis/run.py: how the events of a feed reach the sinks."""

from analyzer.analysis.contacts import ContactBook
from analyzer.analysis.run import Analysis
from analyzer.msnp import C2S, S2C, Anomaly, Command, Transaction


class Every:
    def __init__(self, log, name):
        self.log, self.name = log, name

    def event(self, conn, event):
        self.log.append((self.name, type(event).__name__, getattr(event, "cmd", None)))

    def stream(self, conn):
        self.log.append((self.name, "stream", conn.id))

    def close(self):
        pass


class Codes(Every):
    event_codes = frozenset({"CHG", "UUX"})


class Nothing(Every):
    event_codes = frozenset()


class Batched(Every):
    def event_batch(self, conn, events):
        self.log.append((self.name, "batch", [getattr(e, "cmd", None) for e in events]))


def test_each_sink_takes_a_feed_s_events_before_the_next_and_only_what_it_declares():
    log = []
    analysis = Analysis([Codes(log, "codes"), Every(log, "every"), Nothing(log, "nothing"), Batched(log, "batch")])
    conn = analysis.open(conn_id="1")
    analysis.feed(conn, C2S, b"PNG\r\nCHG 1 NLN 0\r\nUUX 2 0\r\n", 1.0)
    assert log == [("codes", "Command", "CHG"), ("codes", "Command", "UUX"),
                   ("every", "Command", "PNG"), ("every", "Command", "CHG"), ("every", "Command", "UUX"),
                   ("batch", "batch", ["PNG", "CHG", "UUX"])]
    log.clear()
    analysis.anomaly(conn, Anomaly("tcp.gap", "a gap", C2S, 0, 1.0))
    analysis.record(conn, {"kind": "login"})
    # Anomalies and records reach the sinks that take every event (a batch sink through event).
    assert log == [("every", "Anomaly", None), ("batch", "Anomaly", None),
                   ("every", "dict", None), ("batch", "dict", None)]
    log.clear()
    analysis.close(conn, 2.0)
    assert [entry for entry in log if entry[1] == "stream"] == [
        ("codes", "stream", "1"), ("every", "stream", "1"), ("nothing", "stream", "1"), ("batch", "stream", "1")]


def test_a_sink_added_or_removed_between_feeds_is_routed_from_the_next_event():
    log = []
    analysis = Analysis([Every(log, "first")])
    conn = analysis.open(conn_id="1")
    analysis.feed(conn, C2S, b"PNG\r\n", 1.0)
    analysis.sinks.append(Codes(log, "later"))
    analysis.feed(conn, C2S, b"CHG 1 NLN 0\r\n", 1.5)
    analysis.sinks.pop(0)
    analysis.feed(conn, C2S, b"UUX 3 0\r\n", 2.0)
    analysis.sinks[:] = [Every(log, "replaced")]
    analysis.anomaly(conn, Anomaly("tcp.gap", "a gap", C2S, 0, 2.5))
    assert log == [("first", "Command", "PNG"), ("first", "Command", "CHG"), ("later", "Command", "CHG"),
                   ("later", "Command", "UUX"), ("replaced", "Anomaly", None)]


def test_the_contact_book_declares_every_code_it_reads():
    # Its event ignores any other code: declaring them lets the run skip the call.
    from analyzer.analysis import contacts
    assert ContactBook.event_codes == contacts._CODES
    book = ContactBook()
    conn = Analysis([]).open(conn_id="1")
    conn.role, conn.handle = "NS", "alice@example.com"
    book.event(conn, Command(S2C, "PNG", None, [], b"PNG\r\n", None, None, 0, 1.0))
    book.event(conn, Transaction(Command(C2S, "PNG", None, [], b"PNG\r\n", None, None, 0, 1.0), 1))
    assert book.logins == {}   # nothing outside its codes is read
    book.event(conn, Command(S2C, "NLN", None, [b"NLN", b"bob@example.com", b"Bob"], b"", None, None, 0, 1.0))
    assert book.logins


def test_the_folded_latencies_are_a_bounded_uniform_sample_of_every_closed_connection_s():
    """Folded keeps SAMPLE latencies of all the closed connections' (reservoir sampling with
    skips): bounded, each kept one really seen, and uniform over the whole run: as many from
    the later connections as from the first ones, not the first SAMPLE seen."""
    from array import array
    from types import SimpleNamespace
    from analyzer.analysis.run import Folded

    folded = Folded()
    folded.SAMPLE = 1000
    seen = 0
    for size in [0, 7, 993, 1, 4000] + [250] * 396:   # 104,001 in all, the sample filling mid-connection
        values = array("d", range(seen, seen + size))
        seen += size
        folded.add(SimpleNamespace(command_counts=lambda: (), outcome_counts=lambda: (), _anomalies=None,
                                   version_label=None, _latencies=values))
    kept = list(folded.latencies)
    assert folded._seen == seen == 104_001 and folded.count == 401
    assert len(kept) == 1000 and len(set(kept)) == 1000 and all(0 <= v < seen for v in kept)
    late = sum(v >= seen // 2 for v in kept)   # the second half of the values: about half the sample
    assert 430 < late < 570
    assert 0.45 * seen < sum(kept) / len(kept) < 0.55 * seen
