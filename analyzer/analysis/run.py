"""The analysis of a whole capture or proxy session: connections plus the sinks that show them.

Capture layers (pcap reader, live proxy, mitmproxy addon, the `decode`
command) stay thin: they open a `Connection` here per TCP connection, feed it
bytes, and close it. Every event goes to each sink (`Sink.event`), a closed
connection to `Sink.stream`; sinks are the JSON Lines writer, the verbose
terminal printer, the HTML timeline, plugins. Closed connections keep their
counters (for the final report) but drop their decoders.

The events of one feed reach the sinks sink by sink, in the sinks' order: each
sink sees all of them (through `event_batch` when it has one) before the next
sink sees any. A sink that declares `event_codes` (a frozenset of command
codes) is handed only the `Command`s with those codes, nothing else; a sink that
declares `watches` (the Linker) is handed, through `event_batch`, only the feeds
that hold a command it watches on that connection (it says which with
`Connection.watch`; `Connection._absorb`, which looks at every command anyway,
marks the connection `watched`) and each connection's feeds until one such sink
keeps it (`Connection.linked`, from its first feed). How each sink is called is
worked out once per list of sinks, not per event.
"""

from __future__ import annotations

import math
import random
from array import array
from collections import Counter, deque
from typing import Protocol

from analyzer.msnp import Anomaly, Command, Transaction
from analyzer.analysis.connection import Connection, Limits, add_codes
from analyzer.analysis.redact import Redactor


MAX_VERSIONS = 64  # protocol versions counted one by one in a run's totals; the rest as "other"
KEEP_CLOSED = 1000  # closed connections kept one by one for the report; the rest go into the totals


class Sink(Protocol):
    def event(self, conn: Connection | None, event) -> None: ...
    def stream(self, conn: Connection) -> None: ...
    def close(self) -> None: ...
    # Optional:
    #   event_batch(conn, events): takes a feed's events together, in place of `event`;
    #   event_codes: frozenset[str]: `event` takes only the Commands with these codes
    #     (it would ignore every other event): Analysis hands it nothing else.
    #   watches: True: `event_batch` takes only the feeds of a connection that hold a command
    #     it watches there (`Connection.watched`), and those of a connection no sink keeps
    #     yet (`Connection.linked` None); `event` still takes anomalies and records.


_BATCH = object()  # a route's mode: the sink's event_batch takes the events together
_EVERY = None      # a route's mode: the sink's event takes each event
_WATCHED = object()  # a route's mode: the sink's event_batch takes the feeds it watches


CAPTURE_NOTES = 20  # capture-level anomalies kept with their detail (file, offset) for the report


class Analysis:
    def __init__(self, sinks: list | None = None, limits: Limits | None = None,
                 redactor: Redactor | None = None) -> None:
        self.sinks: list = list(sinks or [])
        self.limits = limits or Limits()
        # The run's redactor, for records built outside the sinks (a mitm login's ticket):
        # one key, so a masked value matches the same value masked by the writers.
        self.redactor = redactor or Redactor()
        self.connections: dict[str, Connection] = {}
        self.capture_anomalies: Counter[str] = Counter()  # not tied to one connection
        self.capture_notes: list = []  # the first few of those, with their detail, for the report
        self._next_id = 0
        # Bounded memory for long captures: with keep_closed set, only that many closed
        # connections stay in `connections`; older ones are folded into `folded` (their
        # counts, and a fixed-size sample of their latencies) once their sinks saw them.
        self.keep_closed: int | None = KEEP_CLOSED
        self.folded = Folded()
        self._closed: deque[str] = deque()
        self.finished = False  # finish() ran: the sinks are closed
        # How each sink takes events, worked out for the list of sinks in `_routed`
        # (`sinks` is a plain list that callers extend: compared, and redone when it changed).
        self._routed: list = []
        self._routes: tuple = ()       # (callable, mode) per sink, in order: see _route
        self._takers: tuple = ()       # the `event` of each sink that takes anomalies and records
        self._watching = False         # some sink `watches` (see _emit)

    def new_id(self) -> str:
        self._next_id += 1
        return str(self._next_id)

    def open(self, client: str | None = None, server: str | None = None,
             conn_id: str | None = None, version: int | None = None, protocol: str = "msnp") -> Connection:
        conn = Connection(conn_id or self.new_id(), client, server, self.limits, version, protocol)
        self.connections[conn.id] = conn
        return conn

    def feed(self, conn: Connection, direction: str, data: bytes, ts: float | None = None) -> list:
        return self._emit(conn, conn.feed(direction, data, ts))

    def took(self, conn: Connection, direction: str, size: int, ts: float | None, events) -> list:
        """`feed` for a caller that fed the connection's reader itself (see `Connection.took`)."""
        return self._emit(conn, conn.took(direction, size, ts, events))

    def gap(self, conn: Connection, direction: str, size: int, ts: float | None = None) -> list:
        return self._emit(conn, conn.gap(direction, size, ts))

    def end(self, conn: Connection, direction: str, ts: float | None = None) -> list:
        return self._emit(conn, conn.end(direction, ts))

    def one_sided(self, conn: Connection, direction: str) -> None:
        """The input holds only `direction` of `conn` (a raw byte stream): said once, as
        `capture.one_sided`; requests are then not expected to get replies the input cannot hold."""
        from analyzer.msnp import C2S
        if conn.tracker is not None:
            conn.tracker.one_sided = direction
        side = "client's (c2s)" if direction == C2S else "server's (s2c)"
        self.anomaly(conn, Anomaly("capture.one_sided", f"only the {side} side of this connection is in the "
                                   f"input; no request is paired with a reply", direction, None, None))

    def legs(self, conn: Connection, legs: list[dict]) -> None:
        """A relay's two TCP connections behind `conn`: [{"leg": "client", "client", "server"},
        {"leg": "upstream", "client", "server"}] (the live proxy; `stream` records carry them)."""
        conn.legs = legs

    def tick(self, conn: Connection, ts: float) -> list:
        return self._emit(conn, conn.tick(ts))

    def close(self, conn: Connection, ts: float | None = None) -> list:
        if conn.closed:
            return []
        events = self._emit(conn, conn.close(ts))
        for sink in self.sinks:
            sink.stream(conn)
        conn.release()
        if self.keep_closed is not None:
            self._closed.append(conn.id)
            while len(self._closed) > self.keep_closed:
                old = self.connections.pop(self._closed.popleft(), None)
                if old is not None:
                    self.folded.add(old)
        return events

    def anomaly(self, conn: Connection | None, anomaly: Anomaly) -> None:
        """An anomaly found by a capture layer (tcp.gap, capture.truncated, ...)."""
        if conn is not None:
            conn.anomalies[anomaly.name] += 1
        else:
            self.capture_anomalies[anomaly.name] += 1
            if len(self.capture_notes) < CAPTURE_NOTES:
                self.capture_notes.append(anomaly)
        if self.sinks != self._routed:
            self._route()
        for event in self._takers:
            event(conn, anomaly)

    def record(self, conn: Connection | None, record: dict) -> None:
        """A record of a capture layer's own (an HTTP login step, a proxy rewrite) for every sink
        (but those that take only some commands)."""
        if self.sinks != self._routed:
            self._route()
        for event in self._takers:
            event(conn, record)

    def finish(self, ts: float | None = None) -> None:
        """Close every connection, then the sinks: once. A second call (the mitm addon's `done`
        and its wrapper both finish the run) must not write the end-of-run records again."""
        for conn in list(self.connections.values()):
            self.close(conn, ts)
        if self.finished:
            return
        self.finished = True
        for sink in self.sinks:
            sink.close()

    def _emit(self, conn: Connection, events: list) -> list:
        if events:
            if self.sinks != self._routed:
                self._route()
            watched = False
            if self._watching:
                # Read once for every watching sink (the first one handed the feed keeps the
                # connection), and reset for the next feed.
                watched = conn.watched
                if watched:
                    conn.watched = False
                elif conn.linked is None:
                    watched = True
            for take, mode in self._routes:
                if mode is _EVERY:
                    for event in events:
                        take(conn, event)
                elif mode is _BATCH:
                    take(conn, events)
                elif mode is _WATCHED:
                    if watched:
                        take(conn, events)
                else:   # the sink's event_codes
                    for event in events:
                        if type(event) is Command and event.cmd in mode:
                            take(conn, event)
        return events

    def _route(self) -> None:
        """Work out how each sink takes events (see the module docstring), for `sinks` as it is."""
        routes, takers = [], []
        watching = False
        for sink in self.sinks:
            codes = getattr(sink, "event_codes", None)
            batch = getattr(sink, "event_batch", None)
            if getattr(sink, "watches", False) and batch is not None:
                takers.append(sink.event)
                routes.append((batch, _WATCHED))
                watching = True
                continue
            if codes is not None:
                codes = frozenset(codes)
                if codes:   # none: a sink whose event takes nothing (its stream and close still run)
                    routes.append((sink.event, codes))
                continue
            takers.append(sink.event)
            routes.append((batch, _BATCH) if batch is not None else (sink.event, _EVERY))
        self._routes, self._takers = tuple(routes), tuple(takers)
        self._watching = watching
        self._routed = list(self.sinks)

    # -- totals for reports ---------------------------------------------------

    def totals(self) -> dict:
        folded = self.folded
        commands: Counter[str] = Counter(folded.commands)
        anomalies: Counter[str] = Counter(self.capture_anomalies)
        anomalies.update(folded.anomalies)
        outcomes: Counter[str] = Counter(folded.outcomes)
        versions: Counter[str] = Counter(folded.versions)
        for conn in self.connections.values():
            add_codes(commands, conn.command_counts())
            anomalies.update(conn.anomalies)
            for outcome, n in conn.outcome_counts():
                outcomes[outcome] += n
            if conn.version_label:
                add_codes(versions, ((conn.version_label, 1),), MAX_VERSIONS)
        return {"connections": len(self.connections) + folded.count, "commands": commands,
                "anomalies": anomalies, "outcomes": outcomes, "versions": versions}

    def worst_severity(self):
        from analyzer.anomalies import spec
        names = self.totals()["anomalies"]
        return max((spec(name).severity for name in names), default=None)


class Folded:
    """What closed connections dropped from `Analysis.connections` still add to the totals."""

    SAMPLE = 100_000  # latencies kept (a uniform sample) for the total's percentiles

    def __init__(self) -> None:
        self.count = 0
        self.commands: Counter[str] = Counter()
        self.anomalies: Counter[str] = Counter()
        self.outcomes: Counter[str] = Counter()
        self.versions: Counter[str] = Counter()
        self.latencies = array("d")
        self._seen = 0            # latencies seen (the sample is of those)
        self._next: int | None = None   # where the next one kept is (see _sample)
        self._weight = 0.0
        self._random = random.Random(1863)

    def add(self, conn: Connection) -> None:
        self.count += 1
        add_codes(self.commands, conn.command_counts())
        if conn._anomalies:
            self.anomalies.update(conn._anomalies)
        outcomes = self.outcomes
        for outcome, n in conn.outcome_counts():
            outcomes[outcome] += n
        label = conn.version_label
        if label:   # a VER line can name any of ten million versions: 64 kept one by one
            add_codes(self.versions, ((label, 1),), MAX_VERSIONS)
        values = conn._latencies
        if values:
            self._sample(values)

    def _sample(self, values) -> None:
        """Add `values` (latencies) to the uniform sample of SAMPLE kept of all seen: the first
        SAMPLE as they come, then each later one replaces a random kept one with probability
        SAMPLE / seen (reservoir sampling). The replaced ones are found by skipping ahead a
        random count at a time (Li's algorithm L: the same distribution as drawing for each
        value, with a draw per replacement, so a long capture's many latencies cost little)."""
        kept, seen, size = self.latencies, self._seen, self.SAMPLE
        room = size - len(kept)
        if room > 0:
            kept.extend(values[:room])
        n = len(values)
        end = seen + n
        self._seen = end
        if end <= size:
            return
        rnd = self._random

        def uniform() -> float:   # in (0, 1): its log is finite
            u = rnd.random()
            while u == 0.0:
                u = rnd.random()
            return u

        if self._next is None:   # the sample just filled: the first skip
            self._weight = math.exp(math.log(uniform()) / size)
            self._next = size + int(math.log(uniform()) / math.log1p(-self._weight))
        # `_next`: the position (0-based, over every value seen) of the next one kept.
        while self._next < end:
            kept[rnd.randrange(size)] = values[self._next - seen]
            self._weight *= math.exp(math.log(uniform()) / size)
            self._next += 1 + int(math.log(uniform()) / math.log1p(-self._weight))


__all__ = ["Analysis", "Folded", "Sink", "Transaction"]
