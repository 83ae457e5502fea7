"""Transaction pairing: each client request with its server replies, by TrID.

Contract: `observe(command)` takes the `Command` events of both directions of
one connection in the order they were seen and returns what that settles:
finished `Transaction`s and `Anomaly` events. `tick(ts)` expires requests that
waited longer than `reply_timeout`; `close(ts)` ends the connection and flushes
everything still open (requests still waiting become unanswered). Never raises
on any sequence of commands.

A transaction ends as one of:
- "answered": the server replied (latency = first reply - request);
- "error": the reply was a numeric error (or a NAK);
- "no_reply_expected": `MSG U`, `MSG N` with no NAK, `OUT`;
- "unanswered": nothing came back before the timeout or the end;
- "not_captured": the input holds one side only (`one_sided`), so whether a
  reply came cannot be known; no anomaly.

Commands that may get more replies after their first one (CHG then ILNs, SYN
and its list, CAL then JOI) linger after that first reply and collect the rest,
until a reply to some other request arrives, `linger` seconds pass, or the
connection ends; only then is the transaction returned. A `MSG N` waits
`linger` seconds for a NAK the same way, on its own, outside the blocks. A CAL
is no block either: its JOI names the callee and may come long after, so it
waits for that JOI (up to `reply_timeout`) whatever else arrives, and several
CALs wait at once.

Interleaving (`msnp.async.interleaved`), as the protocol documents mean it: a
line that is not part of a block of related replies (CHG and its ILNs, a SYN
and its list, an MSNP2-7 LST list, IRO lines before ANS OK) arriving inside
it, i.e. with a later line of that block after it (an NLN between two ILNs, an
ILN among the BPRs of a SYN list). A line that merely arrives while some
request awaits its single reply (an NLN between PNG and QNG, a GCF between
USR SSO I and USR SSO S) is ordinary traffic.

Cost is linear in the commands and memory bounded per connection: requests,
`PNG`s and `MSG N`s awaiting a reply are at most `max_pending` together (the
oldest is given up; one `msnp.trid.pending_limit` when that first happens, the
count in `gave_up`), and so are answered requests that linger for more replies
(a CAL waits up to `reply_timeout` for its JOI: past the limit the oldest stops
lingering and is returned as it stands, counted in `gave_up` too); a
transaction lists at most `MAX_REPLIES` replies (the rest are counted, one
`msnp.reply.list_limit` per transaction); a reply that overtook earlier
requests is one `msnp.reply.out_of_order` saying how many (an order-statistics
tree counts them in log time); a `JOI` finds its `CAL` by handle in one lookup.
"""

from __future__ import annotations

from collections import deque
from types import MappingProxyType

from analyzer.msnp.events import C2S, Anomaly, Command
from analyzer.msnp.tables import SYN_BLOCK_LINES, error_name

OUTCOMES = ("answered", "error", "no_reply_expected", "unanswered", "not_captured")

# Replies a request accepts besides its own command code and numeric errors.
EXTRA_REPLIES: dict[str, frozenset[str]] = {
    "USR": frozenset({"XFR"}),   # a DS answers USR with XFR NS
    "CHG": frozenset({"ILN"}),
    "ANS": frozenset({"IRO"}),
    "MSG": frozenset({"ACK", "NAK"}),
    "SYN": frozenset(c.decode() for c in SYN_BLOCK_LINES),
    "LST": frozenset({"LSG"}),
}
# Replies that do not finish their transaction.
PARTIAL_REPLIES: dict[str, frozenset[str]] = {"ANS": frozenset({"IRO"})}
# Requests that may get more replies after the first one.
LINGERING = frozenset({"CHG", "SYN", "CAL", "LST", "LSG"})
# Of those, the ones whose replies form a block (a line of something else between two of
# them is interleaved); CAL's JOI is not a block line, it comes whenever the callee joins.
BLOCKS = frozenset({"CHG", "SYN", "LST", "LSG", "ANS"})
MAX_REPLIES = 10_000  # replies listed per transaction; later ones are counted in `more_replies`


class Transaction:
    # No __slots__: the rarely set fields live as class defaults, so building one
    # (once per request, on the hot path) sets five attributes, not eleven.
    outcome: str | None = None
    error: str | None = None
    latency_ms: float | None = None
    block: list[int] | None = None  # SYN block: [contacts left, groups left]
    deadline: float | None = None
    more_replies = 0                # replies past MAX_REPLIES, counted, not listed
    slot: int | None = None         # its place in the tracker's _Unreplied tree while it has no reply
    called: bytes | None = None     # CAL: the invited handle, indexed for JOI

    def __init__(self, request: Command, seq: int) -> None:
        self.request = request
        self.replies: list[Command] = []
        self.seq = seq
        self.cmd: str = request.cmd         # the request's, read on every reply
        self.trid: int | None = request.trid

    def __repr__(self) -> str:
        return f"<Transaction {self.cmd} {self.trid} {self.outcome} replies={len(self.replies)}>"


class _Unreplied:
    """Requests still waiting for their first reply, in request order, counted in log time.

    A Fenwick tree over slots handed out in request order: `before(txn)` is how
    many requests sent before `txn` still wait (those its reply overtakes).
    Slots of answered requests are reclaimed by renumbering the live ones when
    fewer than half of the slots are live, so the tree stays within twice the
    requests waiting (amortised constant work per request)."""

    __slots__ = ("tree", "live", "txns")

    def __init__(self) -> None:
        self.tree = [0]            # 1-based Fenwick tree
        self.live = 0
        self.txns: list = []       # slot -> Transaction or None

    def add(self, txn: Transaction) -> None:
        if len(self.txns) >= 2 * self.live + 64:
            self._compact()
        txn.slot = len(self.txns)
        self.txns.append(txn)
        self.tree.append(0)
        i = len(self.tree) - 1
        # A new last node covers (i - lowbit(i), i]: its sum is built from the nodes below it.
        low = i & -i
        total, j = 0, i - 1
        while j > i - low:
            total += self.tree[j]
            j -= j & -j
        self.tree[i] = total + 1
        self.live += 1

    def remove(self, txn: Transaction) -> None:
        slot = txn.slot
        if slot is None:
            return
        txn.slot = None
        self.txns[slot] = None
        self.live -= 1
        if not self.live:
            self.tree, self.txns = [0], []   # nothing waits: the lists start again small
            return
        i = slot + 1
        tree = self.tree
        n = len(tree)
        while i < n:
            tree[i] -= 1
            i += i & -i

    def before(self, txn: Transaction) -> int:
        i = txn.slot
        total = 0
        tree = self.tree
        while i > 0:
            total += tree[i]
            i -= i & -i
        return total

    def clear(self) -> None:
        for txn in self.txns:
            if txn is not None:
                txn.slot = None
        self.tree, self.live, self.txns = [0], 0, []

    def _compact(self) -> None:
        alive = [t for t in self.txns if t is not None]
        self.tree, self.live, self.txns = [0], 0, []
        for txn in alive:
            txn.slot = None
            self.add(txn)


def _handle(token: bytes) -> bytes:
    # MSNP16+ endpoints look like handle;{machine-guid}: one person, several places.
    return token.split(b";", 1)[0].lower()


class TransactionTracker:
    __slots__ = ("reply_timeout", "linger", "max_pending", "_seq", "_by_trid", "_order", "_pings",
                 "_lingering", "_naks", "_unreplied", "_calls", "gave_up", "_blocks",
                 "_syn_block", "wake", "_inside", "_partial", "one_sided")

    def __init__(self, *, reply_timeout: float = 60.0, linger: float = 3.0,
                 max_pending: int = 1000) -> None:
        self.reply_timeout = reply_timeout
        self.linger = linger
        self.max_pending = max_pending
        self._seq = 0
        # Every table is _EMPTY (shared, read-only) while it holds nothing, and a new dict from
        # its first entry on: an idle connection's tracker holds no containers (a dict costs
        # 64 bytes empty and keeps its table when emptied; thousands of NS connections idle
        # between keep-alives on a busy server). Writing to _EMPTY raises: each write site
        # makes the table first (`if not self._x: self._x = {}`).
        self._by_trid: dict[int, list[Transaction]] = _EMPTY   # waiting for a first reply
        self._order: dict[int, Transaction] = _EMPTY            # the same, by request order
        # PNG waiting for QNG: a deque while one waits, else () (an idle connection's tracker
        # holds no containers: a deque costs 760 bytes, and thousands of NS connections idle
        # between keep-alives on a busy server)
        self._pings: deque[Transaction] | tuple = ()
        self._lingering: dict[int, Transaction] = _EMPTY         # answered, may get more
        self._naks: dict[int, Transaction] = _EMPTY              # MSG N waiting for a possible NAK, oldest first
        self._unreplied: _Unreplied | None = None                # _order's requests without a reply yet
        self._calls: dict[bytes, dict[int, Transaction]] = _EMPTY  # invited handle -> CALs (by seq)
        self.gave_up = 0        # requests given up at the pending limit (and lingering ones let go)
        self._blocks: dict[int, Transaction] = _EMPTY            # the lingering ones whose replies form a block
        self._syn_block: Transaction | None = None           # MSNP8+ SYN list being counted
        # The earliest time at which `tick` could settle something (inf: nothing waits): no
        # request or lingering block can expire before it; inf again as soon as a reply that
        # settles a request leaves nothing that could expire (`_settled`). A plain attribute
        # (read-only to others): the capture reads each connection's after every delivery.
        self.wake = _NEVER
        # These two are () while empty, as _pings.
        self._inside: list[tuple[Transaction, Anomaly]] | tuple = ()  # async lines after a lingering reply
        self._partial: list[Transaction] | tuple = ()  # requests whose partial replies began (ANS after an IRO)
        self.one_sided: str | None = None  # the only direction in the input: expect no replies (C2S)
                                           # nor requests (S2C) that it cannot hold

    # -- public API ---------------------------------------------------------

    @property
    def waiting(self) -> int:
        return len(self._order) + len(self._pings) + len(self._naks)

    def observe(self, cmd: Command) -> list:
        out: list = []
        self.observe_into(cmd, out)
        return out

    def observe_into(self, cmd: Command, out: list) -> None:
        """As `observe`, appending what is settled to `out` (spares a list per command)."""
        ts = cmd.ts
        if ts is not None and ts > self.wake:
            self._expire(ts, out)
        if cmd.direction == C2S:
            self._request(cmd, out)
        else:
            self._reply(cmd, out)

    @property
    def idle(self) -> bool:
        """Nothing held: no request waiting, nothing lingering, no block open, nothing given up
        and both sides expected. A new tracker would then behave exactly as this one (a
        connection drops an idle tracker: thousands are open at once on a busy server)."""
        return not (self._order or self._pings or self._naks or self._lingering or self._blocks or self._calls
                    or self._by_trid or self._partial or self._inside or self.gave_up) \
            and self._syn_block is None and self.one_sided is None

    def tick(self, ts: float) -> list:
        out: list = []
        self._expire(ts, out)
        return out

    def close(self, ts: float | None = None) -> list:
        out: list = []
        for txn in list(self._lingering.values()):
            self._finish_lingering(txn, out)
        for txn in list(self._naks.values()):
            self._finish_nak_wait(txn, out)
        pings, self._pings = list(self._pings), ()
        for txn in list(self._order.values()) + pings:
            self._unanswered(txn, ts, "connection ended", out)
        self._by_trid = _EMPTY
        self._order = _EMPTY
        if self._unreplied is not None:
            self._unreplied.clear()
            self._unreplied = None
        self._calls = _EMPTY
        return out

    # -- requests -----------------------------------------------------------

    @staticmethod
    def settle_fresh(cmd: Command, out: list) -> bool:
        """What a new tracker does with the client line `cmd` when that leaves it holding
        nothing: `OUT` and `MSG U` settle at once as "no_reply_expected" (appended to `out`),
        a line without a TrID pairs with nothing. True then; False: `cmd` needs a tracker.

        For a connection with no tracker (an idle one drops it): a client's `MSG U` on a
        switchboard would otherwise make a tracker only to drop it. `_request`'s rule for
        these lines, as a new tracker applies it (tests/msnp/test_pairing.py holds the two
        equal on every kind of line)."""
        code = cmd.cmd
        if code != "OUT":
            if code == "PNG":
                return False
            if cmd.trid is None:
                return True
            args = cmd.args
            if code != "MSG" or len(args) < 2 or args[1] != b"U":
                return False
        txn = Transaction(cmd, 1)   # a new tracker's first
        txn.outcome = "no_reply_expected"
        out.append(txn)
        return True

    def _request(self, cmd: Command, out: list) -> None:
        self._seq += 1
        txn = Transaction(cmd, self._seq)
        code = cmd.cmd
        if code == "PNG":
            if not self._pings:
                self._pings = deque()
            self._pings.append(txn)
            self._wake_at(cmd.ts, self.reply_timeout)
            if len(self._order) + len(self._pings) + len(self._naks) > self.max_pending:
                self._limit(cmd, out)
            return
        trid = cmd.trid
        if code == "OUT" or trid is None:
            if code == "OUT":
                txn.outcome = "no_reply_expected"
                out.append(txn)
            return  # a line without a usable TrID cannot be paired (the reader flagged it)
        if code == "MSG":
            mode = cmd.args[1] if len(cmd.args) > 1 else b""
            if mode == b"U":
                txn.outcome = "no_reply_expected"
                out.append(txn)
                return
            if mode == b"N":  # only a NAK may come back
                txn.outcome = "no_reply_expected"
                previous = self._naks.get(trid)
                if previous is not None:
                    del self._naks[trid]
                    self._finish_nak_wait(previous, out)
                txn.deadline = None if cmd.ts is None else cmd.ts + self.linger
                if not self._naks:
                    self._naks = {}
                self._naks[trid] = txn
                self._wake_at(cmd.ts, self.linger)
                if len(self._order) + len(self._pings) + len(self._naks) > self.max_pending:
                    self._limit(cmd, out)
                return
        same = self._by_trid.get(trid)
        if same:
            out.append(Anomaly("msnp.trid.duplicate_pending",
                               f"{code} {trid} sent while {same[0].cmd} {trid} still awaits its reply",
                               C2S, cmd.offset, cmd.ts, trid))
            same.append(txn)
        else:
            if not self._by_trid:
                self._by_trid = {}
            self._by_trid[trid] = [txn]
        if not self._order:
            self._order = {}
        self._order[txn.seq] = txn
        if self._unreplied is None:
            self._unreplied = _Unreplied()
        self._unreplied.add(txn)
        if code == "CAL" and len(cmd.args) > 1:
            txn.called = _handle(cmd.args[1])
            if not self._calls:
                self._calls = {}
            self._calls.setdefault(txn.called, {})[txn.seq] = txn
        ts = cmd.ts
        if ts is not None and ts + self.reply_timeout < self.wake:   # _wake_at, inline: once per request
            self.wake = ts + self.reply_timeout
        if len(self._order) + len(self._pings) + len(self._naks) > self.max_pending:   # _limit's own test
            self._limit(cmd, out)

    def _limit(self, cmd: Command, out: list) -> None:
        """More than max_pending waiting: give up the oldest (counted; one anomaly at the end)."""
        while len(self._order) + len(self._pings) + len(self._naks) > self.max_pending:
            candidates = []
            if self._order:
                candidates.append(next(iter(self._order.values())))
            if self._pings:
                candidates.append(self._pings[0])
            if self._naks:
                candidates.append(next(iter(self._naks.values())))
            oldest = min(candidates, key=lambda t: t.seq)
            if self._naks and oldest is next(iter(self._naks.values())):
                # A MSG N that waited through max_pending later ones: its wait ends as at `linger`.
                self._finish_nak_wait(oldest, out)
                continue
            self._gave_up_one(oldest, cmd, out, "requests waited at once", "given up as unanswered")
            self._unanswered(oldest, cmd.ts, "pending limit", out, anomaly=False)

    def _gave_up_one(self, oldest: Transaction, cmd: Command, out: list, what: str, fate: str) -> None:
        """Count one transaction let go at the limit; the first time, one `msnp.trid.pending_limit`
        then and there (a live connection may last hours: its end is too late to say so)."""
        self.gave_up += 1
        if self.gave_up == 1:
            trid = "" if oldest.trid is None else f" {oldest.trid}"
            out.append(Anomaly("msnp.trid.pending_limit",
                               f"more than {self.max_pending} {what} (--max-pending): the oldest, {oldest.cmd}{trid} "
                               f"(request at offset {oldest.request.offset}), {fate}; those let go after it are "
                               f"counted (pending_given_up in the stream record)",
                               cmd.direction, cmd.offset, cmd.ts, oldest.trid))

    # -- replies ------------------------------------------------------------

    def _reply(self, cmd: Command, out: list) -> None:
        trid = cmd.trid
        code = cmd.cmd
        if trid is not None:
            waiting = self._by_trid.get(trid)
            if waiting:
                txn = waiting[0]
                want = txn.cmd
                accepted = code == want or code.isdigit() or code in EXTRA_REPLIES.get(want, ())
                if accepted or trid != 0:
                    if not accepted:
                        out.append(Anomaly("msnp.reply.unexpected_command",
                                           f"{code} {trid} answers {txn.cmd} {trid}",
                                           cmd.direction, cmd.offset, cmd.ts, trid))
                    self._first_reply(txn, cmd, out)
                    self._settled()
                    return
            nak = self._naks.get(trid) if self._naks else None
            if nak is not None and (code == "NAK" or code == "ACK" or code.isdigit()):
                del self._naks[trid]
                self._add_reply(nak, cmd, out)
                if code == "NAK" or code.isdigit():
                    nak.outcome = "error"
                    nak.error = code if code == "NAK" else f"{code} {error_name(int(code))}"
                if nak.latency_ms is None and cmd.ts is not None and nak.request.ts is not None:
                    nak.latency_ms = (cmd.ts - nak.request.ts) * 1000.0
                out.append(nak)
                self._settled()
                return
            lingering = self._lingering.get(trid)
            if lingering is not None and self._accepts(lingering, code):
                self._more_replies(lingering, cmd, out)
                if code.isdigit() or code == "NAK":
                    lingering.outcome = "error"
                    lingering.error = code if code == "NAK" else f"{code} {error_name(int(code))}"
                return
            if trid != 0:
                if self.one_sided is None:  # a server-only input cannot hold the requests
                    out.append(Anomaly("msnp.reply.orphan", f"{code} {trid} matches no request seen",
                                       cmd.direction, cmd.offset, cmd.ts, trid))
                return
        elif code == "QNG":
            if self._pings:
                txn = self._pings.popleft()
                if not self._pings:
                    self._pings = ()
                self._first_reply(txn, cmd, out)
                self._settled()
            elif self.one_sided is None:
                out.append(Anomaly("msnp.reply.orphan", "QNG without a PNG",
                                   cmd.direction, cmd.offset, cmd.ts))
            return
        elif self._syn_block is not None and code in _SYN_BLOCK_TEXT:
            self._count_block_line(self._syn_block, cmd, out)
            return
        elif code == "JOI" and cmd.args and self._join(cmd, out):
            return
        elif code in _SYN_BLOCK_TEXT:
            for txn in self._lingering.values():
                if txn.cmd == "SYN":
                    self._more_replies(txn, cmd, out)  # e.g. BPR after the last LST of the list
                    return
        # An asynchronous line (no TrID, or TrID 0 that answers nothing): most server lines
        # (a switchboard's MSG); `_note_inside`'s first test here, as no block is usually open.
        if self._lingering or self._syn_block is not None or self._partial:
            self._note_inside(None, cmd)

    def _settled(self) -> None:
        """A reply settled a request: when nothing is left that could expire, nothing is due
        (no tick comes for it, and the connection may drop this tracker now)."""
        if not (self._order or self._pings or self._naks or self._lingering):
            self.wake = _NEVER

    def _note_inside(self, part_of: Transaction | None, cmd: Command) -> None:
        """`cmd` (a line of `part_of`, or asynchronous) arrived while blocks were open: it is
        inside each of them if a later line of that block follows (`_block_goes_on`)."""
        if not (self._lingering or self._syn_block is not None or self._partial):
            return
        blocks = list(self._blocks.values())
        if self._syn_block is not None and self._syn_block not in blocks:
            blocks.append(self._syn_block)
        blocks += self._partial  # ANS whose IRO lines have begun
        if not blocks:
            return
        if not self._inside:
            self._inside = []
        elif len(self._inside) > 64:  # bounded: a block that goes quiet cannot grow this
            del self._inside[:len(self._inside) - 64]
        for txn in blocks:
            if txn is not part_of:
                self._inside.append((txn, Anomaly(
                    "msnp.async.interleaved", f"{cmd.cmd} arrived inside the replies to {txn.cmd} {txn.trid}",
                    cmd.direction, cmd.offset, cmd.ts, cmd.trid)))

    def _block_goes_on(self, txn: Transaction, out: list) -> None:
        """A further line of `txn`'s block: the lines noted inside it since were interleaved."""
        if self._inside:
            keep = []
            for owner, anomaly in self._inside:
                if owner is txn:
                    out.append(anomaly)
                elif (owner is self._syn_block or self._lingering.get(owner.trid) is owner
                      or owner in self._partial):
                    keep.append((owner, anomaly))
            self._inside = keep or ()

    def _accepts(self, txn: Transaction, code: str) -> bool:
        want = txn.cmd
        return code == want or code.isdigit() or code in EXTRA_REPLIES.get(want, ())

    def _first_reply(self, txn: Transaction, cmd: Command, out: list) -> None:
        if txn.replies:
            self._block_goes_on(txn, out)  # ANS OK after its IRO lines
        elif txn.cmd in BLOCKS:
            self._note_inside(txn, cmd)  # a CHG reply inside a SYN list, ...
        if txn.slot is not None:
            # Requests sent before this one and still waiting for their first reply have
            # been overtaken (one whose replies had begun, IRO before ANS OK, was not):
            # one anomaly for this reply, however many it overtook (PROTOCOL.md).
            overtaken = self._unreplied.before(txn)
            self._unreply(txn)
            if overtaken:
                out.append(Anomaly("msnp.reply.out_of_order",
                                   f"reply to {txn.cmd} {txn.trid} came before the replies to {overtaken} "
                                   f"earlier request(s) still waiting",
                                   cmd.direction, cmd.offset, cmd.ts, txn.trid))
        if txn.replies:
            self._add_reply(txn, cmd, out)
        else:
            txn.replies.append(cmd)
        if txn.latency_ms is None and cmd.ts is not None and txn.request.ts is not None:
            txn.latency_ms = (cmd.ts - txn.request.ts) * 1000.0
        code = cmd.cmd
        if code in PARTIAL_REPLIES.get(txn.cmd, ()):
            if len(txn.replies) == 1 and len(self._partial) < 64:  # bounded, as _inside
                if not self._partial:
                    self._partial = []
                self._partial.append(txn)
            return  # still waiting (IRO before ANS OK); latency already taken
        self._forget(txn)
        if self._lingering:
            self._close_other_lingering(txn, out)
        if code.isdigit() or code == "NAK":
            txn.outcome = "error"
            txn.error = "NAK" if code == "NAK" else f"{code} {error_name(int(code))}"
            if txn.called is not None:
                self._uncall(txn)
            out.append(txn)
            return
        txn.outcome = "answered"
        if txn.cmd == "SYN" and code == "SYN":
            params = cmd.raw_params
            if len(params) >= 3 and params[-1].isdigit() and params[-2].isdigit():
                txn.block = [int(params[-2]), int(params[-1])]
                if txn.block != [0, 0]:
                    self._syn_block = txn
        if txn.cmd in LINGERING or txn.block is not None:
            self._start_lingering(txn, cmd.ts, out)
        else:
            if txn.called is not None:
                self._uncall(txn)
            out.append(txn)

    def _add_reply(self, txn: Transaction, cmd: Command, out: list) -> None:
        """A further reply of `txn`: listed up to MAX_REPLIES, counted beyond."""
        if len(txn.replies) < MAX_REPLIES:
            txn.replies.append(cmd)
            return
        txn.more_replies += 1
        if txn.more_replies == 1:
            trid = "" if txn.trid is None else f" {txn.trid}"
            out.append(Anomaly("msnp.reply.list_limit",
                               f"{txn.cmd}{trid} has more than {MAX_REPLIES} replies; the rest are counted "
                               f"(more_replies in its transaction record), not listed",
                               cmd.direction, cmd.offset, cmd.ts, txn.trid))

    def _count_block_line(self, txn: Transaction, cmd: Command, out: list) -> None:
        self._block_goes_on(txn, out)
        self._add_reply(txn, cmd, out)
        if cmd.cmd == "LST":
            txn.block[0] -= 1
        elif cmd.cmd == "LSG":
            txn.block[1] -= 1
        if txn.block[0] <= 0 and txn.block[1] <= 0:
            self._syn_block = None
            self._wake_at(txn.deadline, 0.0)  # the complete list may now stop lingering

    def _join(self, cmd: Command, out: list) -> bool:
        who = _handle(cmd.args[0])
        calls = self._calls.get(who)
        if not calls:
            return False
        # An answered CAL of that handle (lingering) first, else the oldest waiting; only the
        # CALs of that handle are looked at (a flood of answered CALs must not make each JOI a scan).
        lingering = self._lingering
        for txn in calls.values():
            if lingering.get(txn.trid) is txn:
                break
        else:
            txn = next(iter(calls.values()))
        self._note_inside(txn, cmd)  # a JOI is a push: it may sit between IRO lines
        self._add_reply(txn, cmd, out)
        if self._lingering.get(txn.trid) is txn and cmd.ts is not None:
            # the callee joined; MSNP16+ may still add a JOI per endpoint, right after
            txn.deadline = cmd.ts + self.linger
            self._wake_at(cmd.ts, self.linger)
        return True

    def _uncall(self, txn: Transaction) -> None:
        calls = self._calls.get(txn.called)
        if calls is not None:
            calls.pop(txn.seq, None)
            if not calls:
                del self._calls[txn.called]
                if not self._calls:
                    self._calls = _EMPTY

    def _more_replies(self, txn: Transaction, cmd: Command, out: list) -> None:
        """A further reply to an answered request: asynchronous lines before it were inside its block."""
        self._block_goes_on(txn, out)
        if txn.cmd in BLOCKS:
            self._note_inside(txn, cmd)  # it may itself sit inside another open block (ILN among BPRs)
        self._add_reply(txn, cmd, out)

    # -- bookkeeping --------------------------------------------------------

    def _forget(self, txn: Transaction) -> None:
        order = self._order
        if txn.seq in order:
            del order[txn.seq]
            if not order:
                self._order = _EMPTY   # a dict keeps its table when emptied
        if self._partial and txn in self._partial:
            self._partial.remove(txn)
            if not self._partial:
                self._partial = ()
        if txn.slot is not None:
            self._unreply(txn)
        trid = txn.request.trid
        waiting = self._by_trid.get(trid)
        if waiting is not None:
            if len(waiting) == 1:
                if waiting[0] is txn:
                    del self._by_trid[trid]
                    if not self._by_trid:
                        self._by_trid = _EMPTY
            elif txn in waiting:
                waiting.remove(txn)

    def _unreply(self, txn: Transaction) -> None:
        """`txn` got its first reply or is over: out of _unreplied (dropped once nothing waits)."""
        unreplied = self._unreplied
        unreplied.remove(txn)
        if not unreplied.live:
            self._unreplied = None

    def _start_lingering(self, txn: Transaction, ts, out: list) -> None:
        previous = self._lingering.get(txn.trid)
        if previous is not None:
            del self._lingering[txn.trid]
            self._finish_lingering(previous, out)
        linger = self.reply_timeout if txn.cmd == "CAL" else self.linger  # a JOI comes when the callee joins
        txn.deadline = None if ts is None else ts + linger
        if not self._lingering:
            self._lingering = {}
        self._lingering[txn.trid] = txn
        if txn.cmd in BLOCKS:
            if not self._blocks:
                self._blocks = {}
            self._blocks[txn.trid] = txn
        self._wake_at(ts, linger)
        if len(self._lingering) > self.max_pending:
            # Answered CALs each wait for their JOI: a flood of them is held to the limit too.
            for oldest in self._lingering.values():
                if oldest is not self._syn_block and oldest is not txn:
                    break
            else:
                return
            self._gave_up_one(oldest, txn.replies[0] if txn.replies else txn.request, out,
                              "answered requests lingered for more replies at once",
                              "stopped waiting for them")
            self._finish_lingering(oldest, out)

    def _wake_at(self, ts, delay: float) -> None:
        if ts is not None and ts + delay < self.wake:
            self.wake = ts + delay

    def _close_other_lingering(self, txn: Transaction, out: list) -> None:
        if self._blocks:
            for other in list(self._blocks.values()):
                # a reply to another request ends a block; a CAL awaiting its JOI is no block
                if other is not txn and other is not self._syn_block:
                    self._finish_lingering(other, out)

    def _finish_nak_wait(self, txn: Transaction, out: list) -> None:
        if self._naks.get(txn.trid) is txn:
            del self._naks[txn.trid]
            if not self._naks:
                self._naks = _EMPTY
        out.append(txn)

    def _finish_lingering(self, txn: Transaction, out: list) -> None:
        if self._lingering.get(txn.trid) is txn:
            del self._lingering[txn.trid]
            if not self._lingering:
                self._lingering = _EMPTY
        if self._blocks.get(txn.trid) is txn:
            del self._blocks[txn.trid]
            if not self._blocks:
                self._blocks = _EMPTY
        if txn.called is not None:
            self._uncall(txn)
        if self._inside:
            self._inside = [(owner, a) for owner, a in self._inside if owner is not txn] or ()
        if txn is self._syn_block:
            self._syn_block = None
            out.append(Anomaly("msnp.syn.block_incomplete",
                               f"SYN {txn.trid} announced {txn.block[0]} more contact(s) and {txn.block[1]} group(s)",
                               txn.request.direction, txn.request.offset, txn.request.ts, txn.trid))
        out.append(txn)

    def _unanswered(self, txn: Transaction, ts, why: str, out: list, anomaly: bool = True) -> None:
        pings = self._pings
        if pings and pings[0] is txn:
            pings.popleft()
            if not pings:
                self._pings = ()
        elif txn.cmd == "PNG" and txn in pings:  # not reached: pings go oldest first
            pings.remove(txn)
        self._forget(txn)
        if txn.called is not None:
            self._uncall(txn)
        if self.one_sided is not None:
            txn.outcome = "not_captured"
            out.append(txn)
            return
        txn.outcome = "unanswered"
        if anomaly:
            out.append(Anomaly("msnp.reply.unanswered", f"{txn.cmd} {txn.trid if txn.trid is not None else ''}"
                               f" got no reply ({why})".replace("  ", " "),
                               txn.request.direction, txn.request.offset, ts, txn.trid))
        out.append(txn)

    def _expire(self, ts: float, out: list) -> None:
        limit = ts - self.reply_timeout
        while self._order:
            oldest = next(iter(self._order.values()))
            if oldest.request.ts is None or oldest.request.ts >= limit:
                break
            self._unanswered(oldest, ts, f"no reply within {self.reply_timeout:g} s", out)
        while self._pings and self._pings[0].request.ts is not None and self._pings[0].request.ts < limit:
            self._unanswered(self._pings[0], ts, f"no reply within {self.reply_timeout:g} s", out)
        if self._lingering:
            for txn in list(self._lingering.values()):
                if txn.deadline is not None and txn.deadline < ts and txn is not self._syn_block:
                    self._finish_lingering(txn, out)
        naks = self._naks
        while naks:
            txn = next(iter(naks.values()))
            if txn.deadline is None or txn.deadline >= ts:
                break
            self._finish_nak_wait(txn, out)
        # The next time anything can expire: the oldest waiting request or ping, the
        # earliest lingering deadline (requests without a time never expire).
        wake = _NEVER
        for txn in self._order.values():
            if txn.request.ts is not None:
                wake = txn.request.ts + self.reply_timeout
                break
        if self._pings and self._pings[0].request.ts is not None:
            wake = min(wake, self._pings[0].request.ts + self.reply_timeout)
        for txn in self._lingering.values():
            if txn.deadline is not None and txn.deadline < wake and txn is not self._syn_block:
                wake = txn.deadline
        if naks:
            first = next(iter(naks.values())).deadline
            if first is not None and first < wake:
                wake = first
        self.wake = wake


_NEVER = float("inf")
_EMPTY = MappingProxyType({})   # an empty table of the tracker's (read-only: see TransactionTracker)
_SYN_BLOCK_TEXT = frozenset(c.decode() for c in SYN_BLOCK_LINES)
