"""One MSNP connection under analysis: both directions' readers, the pairing, what we learn.

Every capture layer (pcap, live proxy, mitmproxy) creates a `Connection` per
TCP connection (or gateway session) and feeds it bytes with `feed(direction,
data, ts)`. It returns the codec's events plus finished transactions, and keeps
the per-connection facts a report needs: role (DS/NS/SB), negotiated or
inferred version, user handle, counts, latencies.

Fail-open: if the analysis itself raises (a bug), the connection reports
`analyzer.internal_error` once and from then on only counts bytes. The caller
(a proxy) keeps forwarding regardless.
"""

from __future__ import annotations

import random
import sys
from array import array
from collections import Counter
from dataclasses import dataclass
from typing import Callable, NamedTuple

from analyzer.msnp import (C2S, S2C, DEFAULT_MAX_LINE, DEFAULT_MAX_PAYLOAD, Anomaly, Command,
                    Transaction, TransactionTracker)
from analyzer.msnp.msnftp import FtpReader
from analyzer.msnp.facts import Referral, login, referral, sender
from analyzer.msnp.reader import connection_readers

_NEVER = float("inf")
LATENCY_SAMPLE = 10_000  # latencies kept per connection for its percentiles
MAX_COMMAND_CODES = 256  # distinct command codes counted one by one per connection (and 1,024 per run)
MAX_RUN_CODES = 1024
OTHER_CODES = "other"    # the bucket past them (a code is 3 characters in MSNP: it cannot be one)
_RANDOM = random.Random(1863)  # fixed seed: the same capture gives the same report

SB_SERVER_CODES = frozenset({"IRO", "JOI", "BYE", "ACK", "NAK"})
SB_CLIENT_CODES = frozenset({"ANS", "CAL", "MSG"})  # only switchboards take client MSG
NS_CODES = frozenset({"CHG", "ILN", "NLN", "FLN", "SYN", "ADL", "UUX", "UBX", "RNG", "CHL",
                      "QRY", "LST", "LSG", "ADC", "BPR", "PRP", "GCF", "NOT", "SBS", "UUN", "UBN"})
MSNP, MSNFTP = "msnp", "msnftp"   # what a connection speaks (Connection.protocol)


def _allow_digits(max_line: int) -> None:
    """Let int() read any all-digit token a line can hold (a TrID, a length, an error code).

    CPython refuses int() of more than 4,300 digits (a guard against its quadratic
    conversion), so a crafted 5,000-digit TrID raised inside the reader and cost the
    connection its analysis. A token is at most a line (`--max-line`, 64 KiB by default),
    so raising the guard to the line cap keeps the cost bounded per line (linear in the
    input) and every such token is decoded and reported (msnp.trid.out_of_range).
    """
    limit = getattr(sys, "get_int_max_str_digits", lambda: 0)()
    if limit and limit < max_line + 1:
        sys.set_int_max_str_digits(max_line + 1)


def add_codes(into: Counter, counts, limit: int = MAX_RUN_CODES) -> None:
    """Add command counts, (code, count) pairs (`Connection.command_counts`, a Counter's
    items), to `into`, keeping at most `limit` codes one by one: codes past that are counted
    under OTHER_CODES (a run's totals over many connections stay bounded)."""
    for code, n in counts:
        if code in into or len(into) < limit:
            into[code] += n
        else:
            into[OTHER_CODES] += n


class CodeSet:
    """Command codes in the order a connection first saw them, with each code's place: the keys
    of a connection's command counts (`Connection.commands`), shared by every connection that saw
    the same codes in the same order (a busy server's capture holds tens of thousands of
    connections open, nearly all with one of a few sequences of codes; each then keeps only an
    array of counts, not a dict of its own).

    Shared sets form a tree from `NO_CODES` (`grow`), bounded by SHARED_CODES codes in all:
    past that, and for a set made only for one connection (`private`), `grow` extends a copy
    that the connection owns alone, in place from then on (hostile traffic with ever new codes
    costs each connection its own codes, as a dict did, never the shared tree)."""

    __slots__ = ("codes", "index", "grown", "private")

    def __init__(self, codes: list, private: bool = False) -> None:
        self.codes = codes                  # in first-seen order
        self.index = {code: i for i, code in enumerate(codes)}
        self.grown: dict | None = None      # code -> the shared set of `codes` plus that code
        self.private = private

    def grow(self, code: str) -> CodeSet:
        """These codes and `code` after them (a set the caller may keep in place of this one)."""
        if self.private:
            self.index[code] = len(self.codes)
            self.codes.append(code)
            return self
        grown = self.grown
        if grown is not None:
            found = grown.get(code)
            if found is not None:
                return found
        global _shared_codes
        if _shared_codes + len(self.codes) + 1 > SHARED_CODES:
            return CodeSet(self.codes + [code], private=True)
        _shared_codes += len(self.codes) + 1
        found = CodeSet(self.codes + [code])
        if grown is None:
            grown = self.grown = {}
        grown[code] = found
        return found


SHARED_CODES = 65_536   # codes held by shared CodeSets in all (a few MB at most)
_shared_codes = 0
NO_CODES = CodeSet([])


@dataclass
class Limits:
    """Resource limits for decoding one connection (documented in the README)."""
    max_line: int = DEFAULT_MAX_LINE
    max_payload: int = DEFAULT_MAX_PAYLOAD
    reply_timeout: float = 60.0
    linger: float = 3.0
    max_pending: int = 1000


class Connection:
    # Thousands are open at once on a busy server's capture: slots, and the two readers and
    # byte counts as fields rather than dicts keyed by direction.
    __slots__ = ("id", "client", "server", "protocol", "state", "c2s", "s2c", "_tracker", "_limits", "role", "handle",
                 "_codes", "_counts", "_anomalies", "_outcome", "_outcome_n", "_outcomes", "_latencies", "latency_count", "c2s_bytes", "s2c_bytes",
                 "first_ts", "last_ts", "first_command_ts", "last_command_ts", "latest_command_ts",
                 "failed", "closed", "logged_in", "inherited_version", "legs",
                 "on_referral", "linked", "_watch", "watched")

    def __init__(self, conn_id: str, client: str | None = None, server: str | None = None,
                 limits: Limits | None = None, version: int | None = None, protocol: str = MSNP) -> None:
        limits = limits or Limits()
        self.id = conn_id
        self.client = client
        self.server = server
        self.protocol = protocol
        _allow_digits(limits.max_line)
        self.state, self.c2s, self.s2c = connection_readers(version, max_line=limits.max_line,
                                                            max_payload=limits.max_payload)
        if protocol == MSNFTP:
            # The file-transfer connection of MSNP2-8 (analyzer.msnp.msnftp): lines without
            # TrIDs and data blocks; nothing to pair, no role to learn.
            self.c2s, self.s2c = FtpReader(C2S), FtpReader(S2C)
        # The pairing exists while it holds something (see `tracker`): an idle connection
        # (an NS between keep-alives) keeps no tracker, only its counters.
        self._tracker: TransactionTracker | None = None
        self._limits = limits
        self.role: str | None = "MSNFTP" if protocol == MSNFTP else None
        self.handle: str | None = None
        # The command counts (`commands`): the codes, shared (CodeSet), and one count per code,
        # made at the first command.
        self._codes = NO_CODES
        self._counts: array | None = None
        # Made when first needed (the properties below): most connections never see an
        # anomaly, and one that is idle holds no more than its counters.
        self._anomalies: Counter[str] | None = None
        # Transactions by outcome in first-seen order (see `outcomes`): the first outcome and its
        # count in two fields, the others (at most four, often none) as a flat list [outcome,
        # count, ...]: two fields where a list of the first cost 80 bytes (and a Counter 220) on
        # each of thousands of open connections.
        self._outcome: str | None = None
        self._outcome_n = 0
        self._outcomes: list | None = None
        self._latencies: array | None = None  # at most LATENCY_SAMPLE: a uniform sample past that
        self.latency_count = 0         # latencies seen beyond the first LATENCY_SAMPLE
        self.c2s_bytes = 0
        self.s2c_bytes = 0
        self.first_ts: float | None = None
        self.last_ts: float | None = None
        # The times of its commands (`_absorb`), where `first_ts`/`last_ts` are those of its bytes:
        # the first and the last command with a time, and the latest time of any (capture times
        # may step back). The run's Linker reads them here rather than looking at every event.
        self.first_command_ts: float | None = None
        self.last_command_ts: float | None = None
        self.latest_command_ts: float | None = None
        self.failed = False
        self.closed = False
        self.logged_in = False
        # A switchboard negotiates no version: linking gives it that of the NS that sent it there.
        self.inherited_version: str | None = None
        self.legs: list[dict] | None = None  # the live proxy's two TCP legs (see Analysis.legs)
        # Told of each XFR/RNG the server sends (the pcap detector learns server addresses so).
        self.on_referral: Callable[[Referral], None] | None = None
        # What the run's Linker keeps of this connection while it is open (analysis.linking's
        # StreamFacts): found from each of its events without a look-up by id in a table of
        # thousands of open connections (a cache miss per event on a busy capture).
        self.linked = None
        # The command codes a sink watches on this connection (`watch`; the Linker's), and whether
        # a feed since the run last routed one held such a command (`Analysis._emit` hands the
        # watching sink only those feeds, and resets it).
        self._watch = NO_WATCH
        self.watched = False

    # -- facts ----------------------------------------------------------------

    @property
    def version(self) -> int | None:
        return self.state.effective

    @property
    def version_label(self) -> str | None:
        if self.state.effective is not None:
            return f"MSNP{self.state.effective}"
        if self.state.min_version:
            return f"MSNP{self.state.min_version}+"
        if self.state.max_version:
            return f"MSNP2-{self.state.max_version}"  # the dialect its lines showed (VER not seen)
        return self.inherited_version

    @property
    def commands(self) -> Counter[str]:
        """Commands seen, by code, in the order each code was first seen (a new Counter per call:
        read it, do not count into it; `_absorb` counts)."""
        counts = self._counts
        return Counter() if counts is None else Counter(dict(zip(self._codes.codes, counts)))

    def command_counts(self):
        """`commands.items()` without the Counter: (code, count) pairs, in first-seen order
        (what a run's totals and the stream record read of a closing connection)."""
        counts = self._counts
        return () if counts is None else zip(self._codes.codes, counts)

    @property
    def command_total(self) -> int:
        """`sum(commands.values())`: the commands seen (the stream record's `commands`)."""
        counts = self._counts
        return 0 if counts is None else sum(counts)

    def outcome_counts(self):
        """`outcomes.items()` without the Counter: (outcome, count) pairs, in first-seen order."""
        first = self._outcome
        if first is None:
            return ()
        more = self._outcomes
        if more is None:
            return ((first, self._outcome_n),)
        return [(first, self._outcome_n), *zip(more[::2], more[1::2])]

    @property
    def anomalies(self) -> Counter[str]:
        """Anomalies seen on this connection, by name."""
        if self._anomalies is None:
            self._anomalies = Counter()
        return self._anomalies

    @property
    def outcomes(self) -> Counter[str]:
        """Transactions settled, by outcome, in the order each outcome was first seen (a new
        Counter per call: read it, do not count into it; `_count` counts)."""
        return Counter(dict(self.outcome_counts()))

    @property
    def latencies(self) -> array:
        """Reply latencies in ms (a uniform sample of LATENCY_SAMPLE past that many)."""
        if self._latencies is None:
            self._latencies = array("d")
        return self._latencies

    @property
    def tracker(self) -> TransactionTracker | None:
        """The pairing of this connection's requests and replies (None once released).

        Made when a command needs it; dropped when it holds nothing (no request waiting,
        nothing lingering, nothing given up, not one-sided) by `tick`, or at the end of a
        feed when nothing can time out: a new one then starts where the old one would stand."""
        tracker = self._tracker
        if tracker is None and self.c2s is not None:
            limits = self._limits
            tracker = self._tracker = TransactionTracker(reply_timeout=limits.reply_timeout, linger=limits.linger,
                                                         max_pending=limits.max_pending)
        return tracker

    @tracker.setter
    def tracker(self, value: TransactionTracker | None) -> None:
        self._tracker = value   # a caller's own (a test's failing tracker)

    @property
    def given_up(self) -> int:
        """Requests the pairing gave up at its pending limit (`pending_given_up` of the stream
        record): read without making a tracker (a tracker that gave up is never dropped)."""
        tracker = self._tracker
        return 0 if tracker is None else tracker.gave_up

    @property
    def readers(self) -> dict:
        """Each direction's reader (empty once released)."""
        return {} if self.c2s is None else {C2S: self.c2s, S2C: self.s2c}

    @property
    def bytes(self) -> dict[str, int]:
        """Bytes seen per direction."""
        return {C2S: self.c2s_bytes, S2C: self.s2c_bytes}

    @property
    def wake(self) -> float:
        """When `tick` next has something to time out (inf: nothing waits, or the connection is over)."""
        tracker = self._tracker
        return tracker.wake if tracker is not None and not self.failed else _NEVER   # an attribute

    def watch(self, c2s: frozenset, s2c: frozenset) -> None:
        """Set `watched` from now on at each command with a code of `c2s` from the client or of
        `s2c` from the server (a sink's choice: see `Analysis._emit`; the sets are shared)."""
        self._watch = watch_of(c2s, s2c)

    # -- feeding --------------------------------------------------------------

    def feed(self, direction: str, data: bytes, ts: float | None = None) -> list:
        # `took` after the reader, inline: this is the Python path's per-packet frame (the
        # compiled lane calls `took`; the tests comparing both paths hold the two equal).
        if not data:
            return []
        if direction == C2S:
            self.c2s_bytes += len(data)
        else:
            self.s2c_bytes += len(data)
        if ts is not None:
            if self.first_ts is None:
                self.first_ts = ts
            self.last_ts = ts
        if self.failed:
            return []
        try:
            events = (self.c2s if direction == C2S else self.s2c).feed(data, ts)
            if self.protocol != MSNP:
                return self._absorb_ftp(events)
            return self._absorb(events) if events else events
        except Exception as exc:  # noqa: BLE001 - fail-open is the contract
            return self._fail(exc, direction, ts)

    def took(self, direction: str, size: int, ts: float | None, events) -> list:
        """The rest of `feed` once the reader of `direction` took `size` bytes at `ts` and returned
        `events` (or raised that exception): for a caller that feeds the reader itself (the
        compiled TCP lane, capture/tcp.py)."""
        if direction == C2S:
            self.c2s_bytes += size
        else:
            self.s2c_bytes += size
        if ts is not None:
            if self.first_ts is None:
                self.first_ts = ts
            self.last_ts = ts
        if self.failed:
            return []
        try:
            if type(events) is not list and isinstance(events, BaseException):
                raise events
            if self.protocol != MSNP:
                return self._absorb_ftp(events)
            return self._absorb(events) if events else events
        except Exception as exc:  # noqa: BLE001 - fail-open is the contract
            return self._fail(exc, direction, ts)

    def gap(self, direction: str, size: int, ts: float | None = None) -> list:
        if self.failed:
            return []
        try:
            return self._absorb((self.c2s if direction == C2S else self.s2c).gap(size, ts))
        except Exception as exc:  # noqa: BLE001
            return self._fail(exc, direction, ts)

    def tick(self, ts: float) -> list:
        tracker = self._tracker
        if self.failed or tracker is None:
            return []
        try:
            events = self._absorb(tracker.tick(ts))
            if tracker.idle:
                # Timed out or settled since: nothing waits (an NS between keep-alives). Dropped
                # here, where the capture's deadline brings each connection once, rather than
                # after every reply (a tracker per request would cost time).
                self._tracker = None
            return events
        except Exception as exc:  # noqa: BLE001
            return self._fail(exc, None, ts)

    def _saw(self, ts: float | None) -> None:
        """A TCP event of this connection at `ts` (a FIN, the close): the stream lasts until then,
        not only until its last command (msnp.py logs out by closing the socket)."""
        if ts is not None:
            if self.first_ts is None:
                self.first_ts = ts
            if self.last_ts is None or ts > self.last_ts:
                self.last_ts = ts

    def end(self, direction: str, ts: float | None = None) -> list:
        """One direction ended (FIN): flush that reader."""
        self._saw(ts)
        if self.failed:
            return []
        try:
            return self._absorb((self.c2s if direction == C2S else self.s2c).close(ts))
        except Exception as exc:  # noqa: BLE001
            return self._fail(exc, direction, ts)

    def close(self, ts: float | None = None) -> list:
        """The connection is over (at `ts`, when known): flush both readers and every open transaction."""
        if self.closed:
            return []
        self.closed = True
        self._saw(ts)
        if self.failed:
            return []
        try:
            events = self._absorb(self.c2s.close(ts) + self.s2c.close(ts))
            tracker = self._tracker
            return events + self._absorb(tracker.close(ts)) if tracker is not None else events
        except Exception as exc:  # noqa: BLE001
            return self._fail(exc, None, ts)

    def release(self) -> None:
        """Drop the decoders and the pairing of a closed connection; its counters stay for the report."""
        self.c2s = self.s2c = None
        self._tracker = None

    # -- internals ------------------------------------------------------------

    def _sample(self, value: float) -> None:
        """Past LATENCY_SAMPLE latencies, keep a uniform sample (reservoir): the report's
        percentiles stay honest and a connection's memory stays bounded."""
        self.latency_count += 1
        j = _RANDOM.randrange(LATENCY_SAMPLE + self.latency_count)
        if j < LATENCY_SAMPLE:
            self.latencies[j] = value

    def _fail(self, exc: Exception, direction: str | None, ts) -> list:
        self.failed = True
        self.anomalies["analyzer.internal_error"] += 1
        return [Anomaly("analyzer.internal_error", f"{type(exc).__name__}: {exc}", direction, None, ts)]

    def _absorb(self, events: list) -> list:
        """Count what the reader produced and pass commands on to the pairing."""
        out: list = []
        append = out.append
        tracker = self._tracker
        observe = tracker.observe_into if tracker is not None else None
        index = self._codes.index
        counts = self._counts
        watch = self._watch
        notable = watch.notable
        last = None          # the time of the last command with one, and the latest
        latest = _NO_TIME
        for event in events:
            append(event)
            kind = type(event)
            if kind is Command:
                code = event.cmd
                seen = index.get(code)
                if seen is not None:
                    counts[seen] += 1
                else:
                    self._new_code(event, out)
                    index, counts = self._codes.index, self._counts
                ts = event.ts
                if ts is not None:
                    last = ts
                    if ts > latest:
                        latest = ts
                if code in notable or self.role is None:   # one look-up for both checks below
                    if code in _HINT_CODES or self.role is None:
                        self._learn(event)
                    if code in (watch.c2s if event.direction == C2S else watch.s2c):
                        self.watched = True
                mark = len(out)
                if observe is not None:
                    observe(event, out)
                elif event.direction == S2C:
                    # A server line while the connection has no tracker (nothing waits): judged by
                    # the shared empty one (an orphan reply, or nothing), which keeps nothing of it
                    # (see _EMPTY_TRACKER); no tracker is made for a switchboard's pushed lines.
                    _EMPTY_TRACKER.observe_into(event, out)
                elif not _settle_fresh(event, out):   # OUT, MSG U: no tracker made only to be dropped
                    tracker = self.tracker
                    observe = tracker.observe_into
                    observe(event, out)
                if len(out) > mark:
                    self._count(out, mark)
            elif kind is Anomaly:
                self.anomalies[event.name] += 1
            elif kind is Transaction:
                self._count([event], 0)
        if last is not None:
            self._timed(events, last, latest)
        if tracker is not None and tracker.wake == _NEVER and tracker.idle:
            # Nothing waits and nothing can time out: the capture's deadline will never bring
            # this connection to `tick` for it, so it is dropped here (a client's MSG U makes a
            # tracker that holds nothing: thousands of boards idle at once on a busy server).
            # A float comparison per feed when the tracker waits.
            self._tracker = None
        return out

    def _timed(self, events: list, last: float, latest: float) -> None:
        """Commands of `events` had times, the last `last` and the latest `latest`: keep them
        (`first_command_ts` ...); the first ever is looked for only once."""
        self.last_command_ts = last
        if self.first_command_ts is None:
            self.first_command_ts = _first_time(events)
        top = self.latest_command_ts
        if top is None or latest > top:
            self.latest_command_ts = latest

    def _count_code(self, code: str) -> None:
        """One more command with `code` (counted one by one, whatever the limit)."""
        codes = self._codes
        seen = codes.index.get(code)
        if seen is not None:
            self._counts[seen] += 1
            return
        self._codes = codes.grow(code)
        if self._counts is None:
            self._counts = array("Q", (1,))
        else:
            self._counts.append(1)

    def _new_code(self, cmd: Command, out: list) -> None:
        """A code not seen before on this connection (`cmd`, the last event in `out`): counted
        one by one up to MAX_COMMAND_CODES codes, then under OTHER_CODES."""
        if len(self._codes.codes) < MAX_COMMAND_CODES:
            self._count_code(cmd.cmd)
        else:
            self._other_code(cmd, out)

    def _other_code(self, cmd: Command, out: list) -> None:
        """A code past MAX_COMMAND_CODES distinct ones (`cmd`, the last event in `out`): counted
        under OTHER_CODES; the first time, one `msnp.command.code_limit` just before it."""
        first = OTHER_CODES not in self._codes.index
        self._count_code(OTHER_CODES)
        if first:
            self.anomalies["msnp.command.code_limit"] += 1
            code = cmd.cmd if len(cmd.cmd) <= 40 else cmd.cmd[:40] + "..."
            out.insert(len(out) - 1, Anomaly(
                "msnp.command.code_limit",
                f"more than {MAX_COMMAND_CODES} distinct command codes on this connection: from {code!r} on, "
                f"codes not seen before are counted together as '{OTHER_CODES}'",
                cmd.direction, cmd.offset, cmd.ts, cmd.trid))

    def _absorb_ftp(self, events: list) -> list:
        """MSNFTP events: commands and anomalies counted, nothing paired."""
        out: list = []
        watch = self._watch
        last = None
        latest = _NO_TIME
        for event in events:
            out.append(event)
            kind = type(event)
            if kind is Command:
                seen = self._codes.index.get(event.cmd)
                if seen is not None:
                    self._counts[seen] += 1
                else:
                    self._new_code(event, out)
                if event.cmd == "USR" and event.direction == C2S and event.args and self.handle is None:
                    self.handle = event.args[0].decode("utf-8", "replace")
                if event.cmd in (watch.c2s if event.direction == C2S else watch.s2c):
                    self.watched = True
                ts = event.ts
                if ts is not None:
                    last = ts
                    if ts > latest:
                        latest = ts
            elif kind is Anomaly:
                self.anomalies[event.name] += 1
        if last is not None:
            self._timed(events, last, latest)
        return out

    def _count(self, settled: list, start: int = 0) -> list:
        """Count the transactions and anomalies the pairing settled (`settled[start:]`)."""
        first, latencies = self._outcome, self._latencies
        for i in range(start, len(settled)):
            event = settled[i]
            if type(event) is Anomaly:
                self.anomalies[event.name] += 1
            else:
                outcome = event.outcome
                if first == outcome:     # the first outcome seen: most transactions'
                    self._outcome_n += 1
                elif first is None:
                    first = self._outcome = outcome
                    self._outcome_n = 1
                elif self._outcomes is None:
                    self._outcomes = [outcome, 1]
                else:
                    _add_outcome(self._outcomes, outcome)
                latency = event.latency_ms
                if latency is not None:
                    if latencies is None:
                        latencies = self._latencies = array("d")
                    if len(latencies) < LATENCY_SAMPLE:
                        latencies.append(latency)
                    else:
                        self._sample(latency)
        return settled

    def _learn(self, cmd: Command) -> None:
        """Role, handle and version hints from one command."""
        code = cmd.cmd
        state = self.state
        if cmd.direction == C2S:
            if code == "USR" or code == "ANS":
                found = login(cmd)
                if found is None:
                    if code == "ANS":
                        self.role = "SB"
                    return
                if found.server == "NS":
                    if found.stage == "I" and found.endpoint is not None:
                        self.handle = found.endpoint.text
                    if found.method == "SSO":
                        state.min_version = max(state.min_version, 15)
                    elif found.method == "TWN":
                        state.min_version = max(state.min_version, 8)
                    if self.role is None:
                        self.role = "NS"  # may turn out to be a DS (XFR NS answers the USR)
                else:
                    self.role = "SB"
                    self.handle = found.endpoint.handle
            elif code in SB_CLIENT_CODES:
                self.role = "SB"
            elif code in NS_CODES and self.role is None:
                self.role = "NS"
        else:
            if code == "XFR" or code == "RNG":
                found = referral(cmd)
                if found is not None:
                    if found.kind == "NS" and not self.logged_in:
                        self.role = "DS"
                    if self.on_referral is not None:
                        self.on_referral(found)
                if code == "RNG" and self.role != "SB":
                    self.role = "NS"
            elif code == "USR":
                found = login(cmd)
                if found is not None and found.stage == "OK":
                    self.logged_in = True
                    if self.role == "DS":
                        self.role = "NS"
                    if self.handle is None and found.endpoint is not None:
                        self.handle = found.endpoint.handle
            elif code in SB_SERVER_CODES:
                self.role = "SB"
            elif code == "MSG" and self.role is None:
                found = sender(cmd)
                if found is None or not found.service:  # the service's own notices come on an NS
                    self.role = "SB"
            elif code in NS_CODES and self.role != "SB":
                self.role = "NS"
            if code == "UBX":
                state.min_version = max(state.min_version, 11)
            elif code == "QNG" and cmd.raw_params:
                state.min_version = max(state.min_version, 9)
            elif code in ("ADL", "RML") and cmd.payload:
                state.min_version = max(state.min_version, 13)


def _first_time(events: list) -> float:
    """The time of the first command of `events` that has one (there is one)."""
    return next(e.ts for e in events if type(e) is Command and e.ts is not None)


def _add_outcome(counts: list, outcome: str) -> None:
    """One more `outcome` in a connection's flat [outcome, count, ...] list of the outcomes after
    its first (see Connection._outcomes)."""
    for i in range(0, len(counts), 2):
        if counts[i] == outcome:
            counts[i + 1] += 1
            return
    counts += (outcome, 1)


# The tracker that judges a server line of a connection with none (see `_absorb`): a tracker
# that holds nothing keeps nothing of a server line (`TransactionTracker._reply` only reads its
# empty tables: an orphan anomaly or nothing; its wake is inf, so nothing expires), so one
# serves every connection. tests/analysis/test_connection.py checks it stays empty.
_EMPTY_TRACKER = TransactionTracker()
_settle_fresh = TransactionTracker.settle_fresh

_HINT_CODES = frozenset({"USR", "XFR", "RNG", "ANS", "UBX", "QNG", "ADL", "RML"})
_NO_TIME = float("-inf")   # below every command time (`_absorb`'s latest before the first)


class Watch(NamedTuple):
    """The codes a sink watches on a connection (`Connection.watch`), from the client and from
    the server, and those with the hints `_learn` takes: the codes `_absorb` looks at closer."""
    c2s: frozenset
    s2c: frozenset
    notable: frozenset


_WATCHES: dict[tuple, Watch] = {}   # shared: thousands of connections watch the same few sets


def watch_of(c2s: frozenset, s2c: frozenset) -> Watch:
    found = _WATCHES.get((c2s, s2c))
    if found is None:
        if len(_WATCHES) >= 64:   # a sink making ever new sets: not shared past a few
            return Watch(c2s, s2c, _HINT_CODES | c2s | s2c)
        found = _WATCHES[(c2s, s2c)] = Watch(c2s, s2c, _HINT_CODES | c2s | s2c)
    return found


NO_WATCH = watch_of(frozenset(), frozenset())
