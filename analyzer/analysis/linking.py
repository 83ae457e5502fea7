"""Linking: which connections belong together, and who was in each chat.

A `Linker` is a sink (see `analysis.Sink`): it watches the few commands that
tie connections together and, when asked (`result()`, or at `close()`),
returns what could be linked and what could not:

- a DS connection to the NS it referred the client to (`XFR trid NS host:port`):
  the NS connection to that server address, from the same client host, that
  started after the XFR (the earliest such); without addresses (transcripts),
  the first unlinked NS-like connection that started after the XFR;
- an NS connection to each switchboard it led to, by cookie: the NS's
  `XFR trid SB host:port CKI c` to the SB whose first client line is
  `USR trid handle c`; the NS's `RNG sessid host:port CKI c ...` to the SB
  whose `ANS trid handle c sessid` presents that cookie (and session id);
- login sessions: a DS, its NS and the NS's switchboards; switchboards whose
  NS is not in the capture join the session of an NS with the same user
  handle that overlaps them in time, else form a partial session of their own;
- chats: each switchboard's participants over time (the user, `IRO`, `JOI`,
  `BYE`; MSNP16+ `handle;{guid}` endpoints keep their endpoint).

Partial captures (mid-session, one direction only) link what they can; each
thing that could not be linked is reported with the reason, never guessed.

What it is handed (analysis.run routes a run's feeds by `watches`): of a
Connection, its first feed and then only the feeds holding a command it watches
there (`Connection.watch`: XFR/RNG/IRO/JOI/BYE/USR and, until a switchboard's
login is seen, MSG from the server; USR/ANS/OUT from the client), a few in a
hundred; the times of every command (a stream's first and last, the clock of a
settling pass) are kept by the Connection as it counts them and read from it
where they are needed (`_start`, `_end`, `_clock`). Another kind of input is
handed every event and its times are kept here (`_take`).

Records (`records()`, a generator) are dicts for the JSON Lines writer, kinds "link",
"session" and "chat" (see the README's JSON section). Cookies are passed
through the run's `Redactor`, so they still match across records but are not
disclosed unless `--no-redact`.

Settling (`settle_after`, used for JSON Lines output without an HTML timeline):
a long capture would otherwise hold every stream's facts to the end. Once more
than `settle_after` ended streams are held, the linker links what it holds and
hands the records of each login session that has settled to `on_settled`, then
forgets its streams. A session has settled when all its streams have ended,
`window` seconds of capture time have passed since the last of them, and no
stream still open could join it (one that started before that end plus the
window and whose user is unknown or the same, or that presented one of the
session's cookies, or that could answer one of its unlinked XFR NS lines). What
the window gives up: a connection that starts more than `window` seconds after
every connection of its login has ended is not linked to it (real clients
connect within seconds of the XFR or RNG that sends them).

Two bounds keep settling going on a busy capture (thousands of connections
open at once, for hours): a stream still open whose user is not known holds
sessions back only for `window` seconds after it started (a login's user is
known from its first lines; one stray without a user would otherwise keep
every later login from settling); and once more than `max_held` ended streams
are held (20 x `settle_after` unless given), the logins past the window settle
even though an open stream could still join them, and if more than `max_held`
are still held, the logins that ended first settle inside the window down to
half of it (memory stays bounded when logins end faster than the window lets
them go), their session records saying so in a "forced" field.

Passes are incremental: streams are indexed by what ties them together (cookie,
server address and client host, user handle), and a pass links again only the
groups of tied streams that changed since the last one (a stream new, with a new
key, handle, role or start), keeping of each group the sessions whose streams have
all ended and those of the others; a stream that only ended does not change what
linking finds (see `_Group`), so its group is not linked again: its sessions whose
last stream ended join those held. The records of the sessions that settle are
built by linking their groups once more. Linking a group alone finds what linking
everything finds for it, so the records are those of linking everything at each
pass. A pass looks the open streams up through one index (by cookie, handle and
start time) and links through indexes by cookie, login, session id, server
address and client host (`_Queue`), a chunk of groups at a time (`LINK_CHUNK`),
so its cost and its temporaries follow what changed, not what is held.
"""

from __future__ import annotations

import gc
import sys
from bisect import bisect_left
from dataclasses import dataclass
from operator import attrgetter

from typing import NamedTuple

import analyzer.msnp.facts as wire
from analyzer.msnp import C2S, Anomaly, Command
from analyzer.analysis.redact import Redactor

_WATCH_S2C = frozenset({"XFR", "RNG", "IRO", "JOI", "BYE", "USR", "MSG"})
_WATCH_C2S = frozenset({"USR", "ANS", "OUT"})
# A server's MSG tells something only on a switchboard whose login was not seen (a sender
# there all the same, see `_server_line`): once the login is seen, MSG is not watched.
_WATCH_S2C_LOGGED_IN = _WATCH_S2C - {"MSG"}
CLOCK_SKEW = 1.0  # seconds a switchboard may seem to start before its XFR/RNG (captures merged from two hosts)
MAX_PARTICIPANTS = 10_000  # participants listed per switchboard; later arrivals are counted (more_participants)
MAX_REFERRALS = 10_000     # XFR/RNG lines kept for linking per connection; later ones are counted, not linked


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", "backslashreplace")


@dataclass(slots=True)  # these are kept per stream for the whole run: slots keep them small
class Referral:
    """A server line that sends the client to another server."""
    kind: str                 # "xfr_ns", "xfr_sb", "rng"
    stream: str               # the connection the line was seen on
    ts: float | None
    order: int                # global order of observation (for captures without times)
    target: str               # host:port
    trid: int | None = None
    cookie: bytes | None = None
    sessid: str | None = None
    inviter: str | None = None
    linked_to: str | None = None
    offset: int | None = None  # the line's offset in its stream (the HTML timeline finds its row by it)


@dataclass(slots=True)
class Participant:
    handle: str               # as on the wire: 'bob@x' or 'bob@x;{guid}'
    nick: str | None
    joined: float | None
    via: str                  # "self", "IRO", "JOI"; "MSG"/"unseen" when only seen talking/leaving
    left: float | None = None
    left_via: str | None = None


class SbLogin(NamedTuple):
    """A switchboard login seen from the client: `USR trid handle cookie` or `ANS trid handle cookie sessid`."""
    cmd: str                  # "USR" or "ANS"
    cookie: bytes
    sessid: str | None
    ts: float | None


@dataclass(slots=True)
class StreamFacts:
    id: str
    order: int
    linker: "Linker | None" = None   # the Linker keeping these (see `Linker._facts_of`)
    first_ts: float | None = None
    last_ts: float | None = None
    sb_login: SbLogin | None = None
    # () / None until someone is listed: most streams (NS, DS) never list anyone, and
    # thousands are open at once on a busy server (see `_list`).
    participants: list[Participant] | tuple = ()
    more_participants: int = 0   # arrivals past MAX_PARTICIPANTS, counted, not listed
    referrals: int = 0           # XFR/RNG lines of this stream kept (at most MAX_REFERRALS)
    # An index over `participants` once more than _SCAN are listed, so a JOI/BYE flood costs
    # one look-up a line (a short list is looked through: most switchboards list two or three):
    latest: dict[str, Participant] | None = None  # handle -> the last of it listed (see `_latest`)
    # Settling (see `Linker._relink`): the linked group (`_Group`) the stream was last linked
    # in, its user handle as indexed (lower case), and, while it is open, its role and start
    # as they were then (a change means the group must be linked again).
    group: "_Group | None" = None
    user: str | None = None
    keys: tuple = ()      # what ties it to other streams (see `Linker._component`)
    seen_role: str | None = None
    seen_start: float | None = None


_SCAN = 16   # participants looked through one by one; past this many, indexed by handle


def _list(facts: StreamFacts, p: Participant) -> None:
    """List `p` on `facts` (its list created with the first one, its index past _SCAN)."""
    if not facts.participants:
        facts.participants = []
    facts.participants.append(p)
    if facts.latest is not None:
        facts.latest[p.handle] = p
    elif len(facts.participants) > _SCAN:
        facts.latest = {q.handle: q for q in facts.participants}   # the later of a handle wins


def _latest(facts: StreamFacts, handle: str) -> Participant | None:
    """The last participant of `handle` listed on `facts`, if any (a look through a short list,
    else the index). A handle is there when that one has not left: an arrival lists a handle
    again only after it left, a BYE lists one (left) only when none of it is there."""
    if facts.latest is not None:
        return facts.latest.get(handle)
    for p in reversed(facts.participants):
        if p.handle == handle:
            return p
    return None


_NEVER = float("inf")
_UNKEYED = object()   # the key of a stream without addresses: every pass links everything


def _address(server: str, host: str) -> str:
    """The key of the connections to `server` from client `host`. Not interned: nearly every
    key is one stream's (a busy server's clients each have their own host), and the table of
    interned strings would hold an entry for each beside it."""
    return f"{server} {host}"


_FEW = 8   # streams of a key kept in a tuple; past this many, a dict (a tuple is copied to add one)


def _tie(index: dict, key, sid: str) -> None:
    """Add `sid` to `index[key]`: one stream is kept as itself, a few in a tuple, more in a dict
    (in order, each way); most keys (a client's address, a cookie) have one or two streams, and
    a dict costs 200 bytes where a tuple of two costs 56."""
    held = index.get(key)
    if held is None:
        index[key] = sid
    elif type(held) is tuple:
        if sid not in held:
            index[key] = held + (sid,) if len(held) < _FEW else dict.fromkeys(held + (sid,))
    elif type(held) is dict:
        held[sid] = None
    elif held != sid:
        index[key] = (held, sid)


def _untie(index: dict, key, sid: str) -> None:
    held = index.get(key)
    if held is None:
        return
    if type(held) is tuple:
        if sid in held:
            rest = tuple(s for s in held if s != sid)
            index[key] = rest[0] if len(rest) == 1 else rest
        return
    if type(held) is not dict:
        if held == sid:
            del index[key]
        return
    held.pop(sid, None)
    if len(held) == 1:
        index[key] = next(iter(held))
    elif not held:
        del index[key]


def _tied(index: dict, key) -> tuple | dict:
    held = index.get(key)
    return () if held is None else held if type(held) is tuple or type(held) is dict else (held,)


_seen = attrgetter("order")   # referrals in the order seen
_first = attrgetter("key")    # held sessions in capture order
_ending = attrgetter("end")   # ... and by their end


class _OpenStreams:
    """The streams still open at a settling pass, by what could link them to a held login:
    the earliest start per cookie presented and per user handle, the earliest start of a
    recent stream whose user is not known yet, and every start (sorted, for XFR NS lines)."""

    __slots__ = ("cookie", "handle", "unknown", "starts", "timeless")

    def __init__(self) -> None:
        self.cookie: dict[bytes, float] = {}
        self.handle: dict[str, float] = {}
        self.unknown = _NEVER
        self.starts: list[float] = []
        self.timeless = False       # an open stream without any time: it could join anything


class _Held(NamedTuple):
    """A login session whose streams have all ended, as a settling pass last linked it."""
    key: tuple                # its first stream's place in capture order (see `Linker._place`)
    end: float | None
    user: str                 # its handle, lower case ("" when none)
    streams: tuple            # its streams, in capture order


class _Group:
    """Streams tied together (cookie, server address and client host, user handle: see
    `Linker._component`), linked together in a settling pass, and what that found: the login
    sessions whose streams have all ended (`held`) and those with a stream still open
    (`open`, their streams in capture order). It stays valid until one of its streams changes
    (a new key, a new handle, role or start) or, when `moving` (a switchboard without its NS
    that has a user, beside a stream still open: whether they overlap in time depends on the
    open stream's end, which moves), at every pass. A stream that only ends leaves it valid:
    linking does not look at whether a stream has ended, nor (but when `moving`) at its end,
    so the sessions are the same and those whose last open stream ended move to `held`
    (`Linker._ended_in`) without linking the group again."""

    __slots__ = ("members", "held", "open", "moving")

    def __init__(self, members) -> None:
        self.members = members
        self.held: list[_Held] = []
        self.open: list[tuple] = []
        self.moving = False


LINK_CHUNK = 2000   # streams linked at once by a settling pass (its temporaries scale with this)


class _Queue:
    """Connections that could answer a referral (one XFR NS target, one cookie), in capture
    order (start time, then first sight; those without a time last), with the ones already
    taken skipped in near-constant time (each position points on to the next one not known
    to be taken: union-find), so many referrals and many connections do not multiply."""

    __slots__ = ("sids", "starts", "keys", "untimed", "next")

    def __init__(self) -> None:
        self.sids: list[str] = []
        self.starts: list[float | None] = []
        self.keys: list[float] = []   # starts, with inf for none: for bisect
        self.untimed = None           # position of the first without a start time
        self.next: list[int] = []

    def add(self, sid: str, start: float | None) -> None:
        if start is None and self.untimed is None:
            self.untimed = len(self.sids)
        self.sids.append(sid)
        self.starts.append(start)
        self.keys.append(_NEVER if start is None else start)
        self.next.append(len(self.next))

    def _find(self, i: int) -> int:
        nxt = self.next
        n = len(nxt)
        root = i
        while root < n and nxt[root] != root:
            root = nxt[root]
        while i < n and nxt[i] != root:   # path compression
            nxt[i], i = root, nxt[i]
        return root

    def _walk(self, i: int, taken: set[str]):
        """Positions from `i` on whose connection is not taken (taken ones are passed for good)."""
        n = len(self.sids)
        i = self._find(i)
        while i < n:
            if self.sids[i] in taken:
                self.next[i] = i + 1
            else:
                yield i
            i = self._find(i + 1)

    def first_in(self, lo: float, hi: float, exclude: str, taken: set[str]) -> str | None:
        """The first connection not taken (nor `exclude`) that started in [lo, hi], or without a time."""
        for i in self._walk(bisect_left(self.keys, lo), taken):
            start = self.starts[i]
            if start is not None and start > hi:
                if self.untimed is None:
                    return None
                for j in self._walk(self.untimed, taken):
                    if self.sids[j] != exclude:
                        return self.sids[j]
                return None
            if self.sids[i] != exclude:
                return self.sids[i]
        return None

    def first_after(self, later, exclude: str, taken: set[str]) -> str | None:
        """Without a time: the first connection not taken that `later` accepts (a scan)."""
        for i in self._walk(0, taken):
            sid = self.sids[i]
            if sid != exclude and later(sid):
                return sid
        return None


class Ended:
    """What linking needs of a connection once it has ended.

    The `Connection` itself (its counters, its latencies) is released after its
    sinks have seen it; holding it here would keep every connection of a long
    capture alive until the end of the run.
    """

    __slots__ = ("id", "client", "server", "role", "handle", "version_label", "first_ts", "last_ts",
                 "first_command_ts", "last_command_ts")

    def __init__(self, conn) -> None:
        for name in self.__slots__:
            setattr(self, name, getattr(conn, name, None))


class Linker:
    """A sink that links DS->NS->SB connections, groups logins and follows chats."""

    def __init__(self, redactor: Redactor | None = None, *, settle_after: int | None = None,
                 window: float = 300.0, max_held: int | None = None) -> None:
        self.redactor = redactor or Redactor()
        self.facts: dict[str, StreamFacts] = {}
        self.conns: dict = {}
        self._referrals_of: dict[str, list[Referral]] = {}   # those of each stream, in order
        self._order = 0
        self._result: dict | None = None
        self._result_fed = 0          # `_fed` when `_result` was computed
        # Settling (see the module docstring); off unless settle_after is set.
        self.settle_after = settle_after
        self.window = window
        self.on_settled = None         # called with the records of settled sessions
        self.settled_sessions = 0      # sessions already handed over (numbering goes on after them)
        self._ended = 0                # ended streams held
        self._next_try = settle_after or 0
        self._now: float | None = None  # the latest capture time seen
        # At most this many ended streams are held: past it, logins past the window settle
        # even when an open stream could still join them ("forced" in their session record).
        self.max_held = max_held if max_held is not None else 20 * (settle_after or 0)
        self.forced = 0
        self.passes = 0                # settling passes made
        # Incremental settling (see `_relink`): the streams changed since the last pass, the
        # groups linked by earlier passes that are still valid, and streams by user handle.
        self._dirty: set[str] = set()
        self._groups: set[_Group] = set()
        self._ends: set[_Group] = set()   # groups still valid in which a stream ended since the last pass
        self._users: dict[str, str | dict[str, None]] = {}
        # No held stream ended before this: until capture time passes it by the window, no
        # login can settle, so a pass (linear in what is held) is not tried (a min, may be stale low).
        self._oldest_end = _NEVER
        self._ns_of_cookie: dict[bytes, str] = {}  # XFR SB / RNG cookie -> the stream that sent it
        # What could tie streams together in a pass (see _component): key -> its streams, where a
        # key is the cookie (bytes) of a switchboard login or an XFR SB/RNG line, or "server
        # client-host" (str, see _address) for a connection and for the target of an XFR NS line.
        self._keyed: dict[bytes | str, str | dict[str, None]] = {}   # one stream, or several (see _tie)
        self._unkeyed = 0   # streams without a server address or client host (transcripts): passes link all
        # Told of a limit hit (Analysis.anomaly, set by the run): conn, Anomaly.
        self.reporter = None

    # -- sink interface -------------------------------------------------------

    # A run (analysis.run) hands `event_batch` only the feeds of a connection that hold a command
    # watched there (`Connection.watch`, set at its first feed and once a switchboard login is
    # seen) and those until a Linker keeps it: the times of the others' commands, which every
    # command moves, are read from the Connection (`Connection.first_command_ts`, ...) where
    # they are needed (`_start`, `_end`, the clock of a settling pass: `_clock`).
    watches = True

    def event(self, conn, event) -> None:
        self.event_batch(conn, (event,))

    def event_batch(self, conn, events) -> None:
        """A feed's events of one connection (`event` is this for one): the stream is known
        from its first event of any kind (streams are numbered in that order); its commands
        say what it says of logins, referrals and participants, and give its times (kept by
        the Connection itself; here for another kind of input, see `_take`)."""
        if conn is None:
            return
        try:
            facts = conn.linked
        except AttributeError:   # not a Connection: its times are kept here
            self._take(self._facts_of(conn), events)
            return
        if facts is None or facts.linker is not self:
            facts = self._facts_of(conn)
        login = facts.sb_login
        commands = False
        for event in events:
            if type(event) is Command:
                commands = True
                self._line(facts, event)
        if commands:
            self._result = None
            if login is None and facts.sb_login is not None:
                conn.watch(_WATCH_C2S, _WATCH_S2C_LOGGED_IN)

    def _take(self, facts: StreamFacts, events) -> None:
        """`event_batch` for an input that is not a Connection (a test's, a tool's): its times
        and the clock are kept here, from every command."""
        first_ts, last_ts, now = facts.first_ts, None, self._now
        commands = False
        for event in events:
            if type(event) is not Command:
                continue
            commands = True
            ts = event.ts
            if ts is not None:
                if first_ts is None:
                    first_ts = facts.first_ts = ts
                last_ts = ts
                if now is None or ts > now:
                    now = ts
            self._line(facts, event)
        if commands:
            if last_ts is not None:
                facts.last_ts = last_ts
            self._now = now
            self._result = None

    def _line(self, facts: StreamFacts, cmd: Command) -> None:
        """What `cmd`, a command of the stream of `facts`, says of logins, referrals and participants."""
        code = cmd.cmd
        if cmd.direction == C2S:
            if code in _WATCH_C2S:
                self._client_line(facts, cmd)
        elif code in _WATCH_S2C:
            self._server_line(facts, cmd)

    def _facts_of(self, conn) -> StreamFacts:
        """The facts of `conn` (made at its first event: streams are numbered in that order),
        also kept on it (`Connection.linked`) while it is open, unless another Linker keeps its
        own there."""
        facts = self.facts.get(conn.id)
        if facts is None:
            self._order += 1
            facts = self.facts[conn.id] = StreamFacts(conn.id, self._order, self)
            self.conns[conn.id] = conn
            self._key_stream(conn.id, conn)
            watch = getattr(conn, "watch", None)
            if watch is not None:   # a Connection: from now on, it says which feeds to look at
                watch(_WATCH_C2S, _WATCH_S2C)
        if self.conns.get(conn.id) is conn and getattr(conn, "linked", False) is None:
            conn.linked = facts
        return facts

    def stream(self, conn) -> None:
        facts = self.facts.get(conn.id)
        if facts is None:
            self._order += 1
            facts = self.facts[conn.id] = StreamFacts(conn.id, self._order, self)
            self._key_stream(conn.id, conn)
        if getattr(conn, "linked", None) is facts:
            conn.linked = None   # ended: its facts go when its login settles (a later event looks them up)
        if facts.sb_login is not None and getattr(conn, "version_label", "") is None:
            # Before the writers see the stream: a switchboard speaks its NS's version.
            ns = self._ns_of_cookie.get(facts.sb_login.cookie)
            label = getattr(self.conns.get(ns), "version_label", None) if ns is not None else None
            if label is not None:
                conn.inherited_version = label
        was_open = not isinstance(self.conns.get(conn.id), Ended)
        if was_open:
            self._ended += 1
        ended = self.conns[conn.id] = Ended(conn)  # the stream is over (see Analysis.close)
        group = facts.group
        if (self._index_user(facts, self._handle(conn.id)) or group is None or group.moving or not was_open
                or self._start(conn.id) != facts.seen_start or self._role(conn.id) != facts.seen_role):
            self._dirty.add(conn.id)   # its group is linked again at the next pass
        else:
            self._ends.add(group)      # only ended: its sessions are the same (see _Group)
        self._now = self._later(self._now, getattr(conn, "latest_command_ts", None))   # its commands'
        if ended.last_ts is not None and (self._now is None or ended.last_ts > self._now):
            self._now = ended.last_ts
        end = self._end(conn.id)
        if end is not None and end < self._oldest_end:
            self._oldest_end = end
        self._result = None
        if self.settle_after is not None and self._ended > self._next_try:
            self._settle()

    def close(self) -> None:
        self.result()

    # -- observation ----------------------------------------------------------

    def _client_line(self, facts: StreamFacts, cmd: Command) -> None:
        code = cmd.cmd
        if code == "USR" or code == "ANS":
            found = wire.login(cmd)
            if found is not None and found.server == "SB" and facts.sb_login is None:
                facts.sb_login = SbLogin(found.cmd, found.cookie, found.sessid, cmd.ts)
                self._dirty.add(facts.id)   # even when the cookie already tied it (its own XFR SB line)
                self._key(facts.id, found.cookie)
                self._join(facts, found.endpoint.text, None, cmd.ts, "self")
        elif code == "OUT":
            me = facts.participants[0] if facts.participants and facts.participants[0].via == "self" else None
            if me is not None and me.left is None:
                me.left, me.left_via = cmd.ts, "OUT"

    def _server_line(self, facts: StreamFacts, cmd: Command) -> None:
        code = cmd.cmd
        params = cmd.raw_params
        if code == "XFR" or code == "RNG":
            found = wire.referral(cmd)
            if found is None:
                pass
            elif facts.referrals >= MAX_REFERRALS:
                self._limit(facts, cmd, "linking.referral_limit", facts.referrals - MAX_REFERRALS,
                            f"more than {MAX_REFERRALS} XFR/RNG lines on this connection: from this one on, they "
                            f"are not linked to the connections they refer to")
                facts.referrals += 1
            elif found.kind == "NS":
                facts.referrals += 1
                self._order += 1
                self._refer(Referral("xfr_ns", facts.id, cmd.ts, self._order, sys.intern(found.target), cmd.trid,
                                     offset=cmd.offset))
                if facts.keys and facts.keys[0] is not _UNKEYED:   # the NS connections it may lead to:
                    host = wire.host_of(getattr(self.conns.get(facts.id), "client", None))  # same client host
                    if host is not None:
                        self._key(facts.id, _address(found.target, host))
            elif found.cookie is not None:
                kind, trid = ("xfr_sb", cmd.trid) if code == "XFR" else ("rng", None)
                facts.referrals += 1
                self._order += 1   # numbers referrals and streams together, in the order seen
                # The target is one of a few servers: interned, its text is held once, not per line.
                self._refer(Referral(kind, facts.id, cmd.ts, self._order, sys.intern(found.target), trid,
                                     cookie=found.cookie, sessid=found.sessid,
                                     inviter=found.inviter.text if found.inviter else None, offset=cmd.offset))
                self._ns_of_cookie[found.cookie] = facts.id
                self._key(facts.id, found.cookie)
        elif code == "IRO" or code == "JOI":
            found = wire.arrival(cmd)
            if found is not None:
                self._join(facts, found.endpoint.text, found.nick, cmd.ts, code)
        elif code == "BYE" and params:
            handle = _text(params[0])
            p = _latest(facts, handle)
            if p is not None and p.left is None:
                p.left, p.left_via = cmd.ts, "BYE"
            elif self._room(facts, cmd):
                # Left without our seeing the arrival (mid-session capture).
                _list(facts, Participant(handle, None, None, "unseen", cmd.ts, "BYE"))
        elif code == "MSG" and not facts.sb_login:
            # Mid-session switchboard: a sender we never saw arrive was there all the same.
            found = wire.sender(cmd)
            if (found is not None and not found.service
                    and _latest(facts, found.endpoint.text) is None
                    and self._room(facts, cmd)):
                sender = found.endpoint.text
                nick = wire.nick_text(found.nick) if found.nick is not None else None
                p = Participant(sender, nick, None, "MSG")
                _list(facts, p)
        elif code == "USR" and facts.participants:
            found = wire.login(cmd)
            me = facts.participants[0]
            if found is not None and found.nick is not None and me.via == "self" and me.nick is None:
                me.nick = wire.nick_text(found.nick)

    @property
    def referrals(self) -> list[Referral]:
        """Every XFR/RNG line held, in the order seen."""
        return sorted((r for refs in self._referrals_of.values() for r in refs), key=_seen)

    def _refer(self, ref: Referral) -> None:
        self._dirty.add(ref.stream)
        mine = self._referrals_of.get(ref.stream)
        if mine is None:
            self._referrals_of[ref.stream] = [ref]
        else:
            mine.append(ref)

    def _join(self, facts: StreamFacts, handle: bytes | str, nick: bytes | None, ts, via: str) -> None:
        text = handle if type(handle) is str else _text(handle)
        p = _latest(facts, text)
        if p is not None and p.left is None:
            if nick is not None and p.nick is None:
                p.nick = wire.nick_text(nick)
            return
        if not self._room(facts, None, ts):
            return
        p = Participant(text, wire.nick_text(nick) if nick is not None else None, ts, via)
        _list(facts, p)

    def _room(self, facts: StreamFacts, cmd: Command | None, ts=None) -> bool:
        """Whether the switchboard may list one more participant (MAX_PARTICIPANTS); if not, it is counted."""
        if len(facts.participants) < MAX_PARTICIPANTS:
            return True
        facts.more_participants += 1
        self._limit(facts, cmd, "linking.participant_limit", facts.more_participants - 1,
                    f"more than {MAX_PARTICIPANTS} participants on this switchboard: later arrivals are "
                    f"counted (more_participants in its chat record), not listed", ts)
        return False

    def _limit(self, facts: StreamFacts, cmd: Command | None, name: str, before: int, detail: str, ts=None) -> None:
        """A per-stream limit hit: the first time (`before` == 0), one anomaly through `reporter`."""
        if before or self.reporter is None:
            return
        conn = self.conns.get(facts.id)
        if conn is None or isinstance(conn, Ended):
            return
        self.reporter(conn, Anomaly(name, detail, None if cmd is None else cmd.direction,
                                    None if cmd is None else cmd.offset, ts if cmd is None else cmd.ts))

    # -- what ties streams together (for settling passes) ----------------------

    def _key_stream(self, sid: str, conn) -> None:
        """Index a new stream by its server address and client host (what an XFR NS line is
        linked by); a stream without both makes every pass link everything (transcripts)."""
        server = getattr(conn, "server", None)
        host = wire.host_of(getattr(conn, "client", None))
        self._dirty.add(sid)
        if server is None or host is None:
            self._unkeyed += 1
            self.facts[sid].keys = (_UNKEYED,)
            return
        self._key(sid, _address(server, host))

    def _key(self, sid: str, key: tuple) -> None:
        facts = self.facts[sid]
        if key not in facts.keys:
            facts.keys += (key,)
            _tie(self._keyed, key, sid)
            self._dirty.add(sid)

    def _unkey(self, facts: StreamFacts) -> None:
        for key in facts.keys:
            if key is _UNKEYED:
                self._unkeyed -= 1
            else:
                _untie(self._keyed, key, facts.id)
        facts.keys = ()

    def _index_user(self, facts: StreamFacts, handle: str | None) -> bool:
        """Index a stream by its user handle (lower case); whether that changed it."""
        user = handle.lower() if handle else None
        if user == handle:
            user = handle   # already lower case (nearly always): the handle's string, not a copy
        if user == facts.user:
            return False
        if facts.user is not None:
            _untie(self._users, facts.user, facts.id)
        facts.user = user
        if user is not None:
            _tie(self._users, user, facts.id)
        return True

    def _component(self, seed: str) -> set[str]:
        """The streams tied to `seed`, transitively: by a switchboard cookie, a server address
        and client host (an XFR NS line's target and the connections that could answer it), a
        user handle (a switchboard without its NS joins a login of the same user). Linking only
        ever pairs streams that share such a key, and sessions are grouped through those pairs
        and handles, so what `_link` finds for these streams is what it would find for all."""
        keyed, users, facts = self._keyed, self._users, self.facts
        found = {seed}
        todo = [seed]
        seen_keys: set = set()    # cookies (bytes) and addresses (str)
        seen_users: set = set()
        while todo:
            sid = todo.pop()
            f = facts[sid]
            for key in f.keys:
                if key in seen_keys:
                    continue
                seen_keys.add(key)
                for other in _tied(keyed, key):
                    if other not in found:
                        found.add(other)
                        todo.append(other)
            user = f.user
            if user is not None and user not in seen_users:
                seen_users.add(user)
                for other in _tied(users, user):
                    if other not in found:
                        found.add(other)
                        todo.append(other)
        return found

    # -- linking --------------------------------------------------------------

    def result(self) -> dict:
        """Links, sessions, chats and what could not be linked (computed once per change: a
        command of an open stream is one, though `event_batch` does not see most: see `_fed`)."""
        fed = self._fed()
        if self._result is None or fed != self._result_fed:
            self._result = self._link()
            self._result_fed = fed
        return self._result

    def _fed(self) -> int:
        """The commands the open Connections held have seen (it grows with each)."""
        return sum(getattr(conn, "command_total", 0) for conn in self.conns.values() if type(conn) is not Ended)

    def _role(self, sid: str) -> str | None:
        conn = self.conns.get(sid)
        role = getattr(conn, "role", None)
        if role is None and self.facts.get(sid) and self.facts[sid].sb_login:
            return "SB"
        return role

    def _place(self, sid: str) -> tuple:
        """A stream's place in capture order: by start time (those without one last), then first sight."""
        start = self._start(sid)
        return (start is None, start or 0.0, self.facts[sid].order)

    def _start(self, sid: str) -> float | None:
        """When a stream started: its first byte's time, else its first command's."""
        return self._time(sid, "first_ts", "first_command_ts")

    def _end(self, sid: str) -> float | None:
        """When a stream ended: its last byte's time, else its last command's."""
        return self._time(sid, "last_ts", "last_command_ts")

    def _time(self, sid: str, of_bytes: str, of_commands: str) -> float | None:
        """A time of stream `sid`: its connection's `of_bytes` (`first_ts`, `last_ts`), else its
        `of_commands` (a Connection or its `Ended` keeps those), else, for another kind of input,
        the one its facts keep under the name `of_bytes` (see `_take`)."""
        conn = self.conns.get(sid)
        ts = getattr(conn, of_bytes, None)
        if ts is None:
            ts = getattr(conn, of_commands, None)
            if ts is None and sid in self.facts:
                ts = getattr(self.facts[sid], of_bytes)
        return ts

    @staticmethod
    def _later(now: float | None, ts: float | None) -> float | None:
        return ts if ts is not None and (now is None or ts > now) else now

    def _clock(self) -> float | None:
        """The linker's clock, `_now`: the latest command time of any stream (and the last byte's
        of any that ended). Those of streams still open are read from their Connections here, at
        a settling pass, rather than at each of their feeds (`event_batch` sees only a few)."""
        now, later = self._now, self._later
        for conn in self.conns.values():
            if type(conn) is not Ended:
                now = later(now, getattr(conn, "latest_command_ts", None))
        self._now = now
        return now

    def _link(self, only: set[str] | None = None, chats: bool = True) -> dict:
        """Link every stream held, or `only` those (a set closed under what ties streams
        together, see `_affected`: the result is then the full one's for them). Without
        `chats`, the chat records are not built ("chats" is None; "sids" lists the streams
        linked, in capture order): a settling pass writes those of settled sessions only.

        The garbage collector is paused meanwhile: a pass builds several objects per stream
        (queues, records) that live until it ends, so on a busy capture each pass had them
        promoted to the oldest generation and set off a full collection of a heap of tens of
        thousands of open connections (20 of them, 15% of the run). They hold no cycles:
        reference counting frees them when the pass's result is dropped."""
        paused = gc.isenabled()
        if paused:
            gc.disable()
        try:
            return self._link_all(only, chats)
        finally:
            if paused:
                gc.enable()

    def _link_all(self, only: set[str] | None, chats: bool = True) -> dict:
        links: list[dict] = []
        unlinked: list[dict] = []
        parent: dict[str, str] = {}       # child stream -> parent stream
        referred: dict[str, Referral] = {}  # child stream -> the XFR/RNG line that opened it
        if only is None:
            for sid, conn in self.conns.items():
                if sid not in self.facts:
                    self.facts[sid] = StreamFacts(sid, 10 ** 9)
            refs = self.referrals
        else:
            refs_of = self._referrals_of
            refs = sorted((r for sid in only for r in refs_of.get(sid, ())), key=_seen)
        for ref in refs:
            ref.linked_to = None   # as this pass finds it (an earlier pass's link is not kept)
        sids = sorted(self.facts if only is None else only, key=self._place)

        # NS <- SB by cookie (and session id for RNG), through queues by cookie, login command,
        # session id and server address (see _sb_pick).
        position = {sid: i for i, sid in enumerate(sids)}
        sb_queues: dict[tuple, _Queue] = {}
        sessids: dict[tuple, set] = {}
        for sid in sids:
            login = self.facts[sid].sb_login
            if login is None:
                continue
            server = getattr(self.conns.get(sid), "server", None)
            base = (login.cookie, login.cmd)
            sessids.setdefault(base, set()).add(login.sessid)
            start = self._start(sid)
            for group in (("none",),) if server is None else (("known",), ("server", server)):
                queue = sb_queues.get((*base, login.sessid, group))
                if queue is None:
                    queue = sb_queues[(*base, login.sessid, group)] = _Queue()
                queue.add(sid, start)
        claimed: set[str] = set()
        sb_refs = [r for r in refs if r.kind in ("xfr_sb", "rng")]
        chosen: dict[int, str] = {}
        # Two passes: first every referral whose target address names a switchboard connection
        # presenting its cookie (a capture of both legs of a relay holds two such connections per
        # cookie, one to the proxy's listener and one to the real server), then the rest by time.
        for exact in (True, False):
            for i, ref in enumerate(sb_refs):
                if i in chosen:
                    continue
                found = self._sb_pick(ref, sb_queues, sessids, position, claimed, exact)
                if found is not None:
                    chosen[i] = found
                    claimed.add(found)
        for i, ref in enumerate(sb_refs):
            if i not in chosen:
                unlinked.append({"kind": "link", "type": "ns_sb", "from": ref.stream, "to": None,
                                 "by": ref.kind, "ts": ref.ts, "trid": ref.trid, "target": ref.target,
                                 "cookie": self._mask(ref.cookie), "sessid": ref.sessid,
                                 "reason": "no switchboard connection in the capture presented this cookie"})
                continue
            sb = chosen[i]
            ref.linked_to = sb
            parent[sb] = ref.stream
            referred[sb] = ref
            login = self.facts[sb].sb_login
            rec = {"kind": "link", "type": "ns_sb", "from": ref.stream, "to": sb, "by": ref.kind,
                   "ts": ref.ts, "trid": ref.trid, "target": ref.target,
                   "cookie": self._mask(ref.cookie), "sessid": ref.sessid,
                   "evidence": f"{'XFR SB' if ref.kind == 'xfr_sb' else 'RNG'} cookie = {login.cmd} cookie"
                               + (" and session id" if ref.kind == "rng" and login.sessid is not None else "")}
            server = getattr(self.conns.get(sb), "server", None)
            rec["target_matches_server"] = None if server is None else server == ref.target
            if ref.inviter:
                rec["inviter"] = ref.inviter
            links.append(rec)
        for sid in sids:
            login = self.facts[sid].sb_login
            if self._role(sid) == "SB" and sid not in claimed:
                reason = ("its cookie matches no XFR SB or RNG line in the capture (the NS is not in it)"
                          if login is not None else
                          "no USR or ANS seen (the capture starts mid-session or holds one side only)")
                unlinked.append({"kind": "link", "type": "ns_sb", "from": None, "to": sid,
                                 "by": login.cmd.lower() if login else None,
                                 "cookie": self._mask(login.cookie) if login else None,
                                 "sessid": login.sessid if login else None, "reason": reason})

        # DS -> NS by target address, client host and time order: the earliest connection (in
        # `sids` order) that qualifies, found through indexes by server and client host (see
        # _Queue), so many XFR NS lines and many connections do not multiply.
        ns_taken: set[str] = set()
        queues: dict = {}
        rank: dict[str, int] = {}
        for i, sid in enumerate(sids):
            if self._role(sid) == "SB" or sid in parent:
                continue
            rank[sid] = i
            conn = self.conns.get(sid)
            server = getattr(conn, "server", None)
            host = wire.host_of(getattr(conn, "client", None))
            start = self._start(sid)
            keys = [("all",)]
            if server is None:
                keys.append(("no server",))
            else:
                keys.append(("server", server))
                keys.append(("host", server, host) if host else ("no host", server))
            for key in keys:
                queue = queues.get(key)
                if queue is None:
                    queue = queues[key] = _Queue()
                queue.add(sid, start)
        for ref in refs:
            if ref.kind != "xfr_ns":
                continue
            ds = self.conns.get(ref.stream)
            ds_client = wire.host_of(getattr(ds, "client", None))
            if ds is not None and getattr(ds, "server", None) is not None:
                keys = [("no server",)] + ([("host", ref.target, ds_client), ("no host", ref.target)]
                                           if ds_client else [("server", ref.target)])
            else:
                keys = [("all",)]
            best = None
            for key in keys:
                queue = queues.get(key)
                if queue is None:
                    continue
                if ref.ts is None:
                    after = self.facts[ref.stream].order if ref.stream in self.facts else -1
                    found = queue.first_after(lambda sid: self.facts[sid].order > after, ref.stream, ns_taken)
                else:
                    found = queue.first_in(ref.ts, ref.ts + self.window, ref.stream, ns_taken)
                if found is not None and (best is None or rank[found] < rank[best]):
                    best = found
            if best is None:
                unlinked.append({"kind": "link", "type": "ds_ns", "from": ref.stream, "to": None,
                                 "by": "xfr_ns", "ts": ref.ts, "trid": ref.trid, "target": ref.target,
                                 "reason": "no later connection to the target from this client in the capture"})
                continue
            server = getattr(self.conns.get(best), "server", None)
            by = ("target address, client host and time"
                  if server is not None and ds is not None and getattr(ds, "server", None) is not None
                  else "time order (no addresses in this capture)")
            ns_taken.add(best)
            ref.linked_to = best
            parent[best] = ref.stream
            referred[best] = ref
            links.append({"kind": "link", "type": "ds_ns", "from": ref.stream, "to": best, "by": "xfr_ns",
                          "ts": ref.ts, "trid": ref.trid, "target": ref.target, "evidence": by})
        ds_with_xfr = {r.stream for r in refs if r.kind == "xfr_ns"}
        for sid in sids:
            if self._role(sid) == "NS" and sid not in parent and sid not in ds_with_xfr:
                unlinked.append({"kind": "link", "type": "ds_ns", "from": None, "to": sid, "by": None,
                                 "reason": "no DS XFR NS to this connection in the capture"})

        sessions, session_of = self._sessions(sids, parent)
        chat_records = ([self._chat(sid, session_of.get(sid)) for sid in sids if self._role(sid) == "SB"]
                        if chats else None)
        return {"links": links, "unlinked": unlinked, "sessions": sessions, "chats": chat_records,
                "session_of": session_of, "parent": parent, "referred": referred, "sids": sids}

    def _sb_pick(self, ref: Referral, queues: dict, sessids: dict, position: dict, claimed: set[str],
                 exact: bool) -> str | None:
        """The switchboard connection that presented `ref`'s cookie with the matching login (USR
        for XFR SB, ANS for RNG, whose session id is `ref`'s or none), not yet claimed, started
        in time (see `_in_time`); the first in capture order. `exact`: only one whose server
        address is the referral's target. Otherwise one with an unknown server comes first."""
        want = "USR" if ref.kind == "xfr_sb" else "ANS"
        base = (ref.cookie, want)
        known = sessids.get(base)
        if not known:
            return None
        wanted = known if ref.kind != "rng" else [x for x in (None, ref.sessid) if x in known]
        if ref.ts is None:
            lo, hi = -_NEVER, _NEVER
        else:
            lo, hi = ref.ts - CLOCK_SKEW, ref.ts + self.window
        for group in ((("server", ref.target),) if exact else (("none",), ("known",))):
            best = None
            for sessid in wanted:
                queue = queues.get((*base, sessid, group))
                if queue is None:
                    continue
                found = queue.first_in(lo, hi, ref.stream, claimed)
                if found is not None and (best is None or position[found] < position[best]):
                    best = found
            if best is not None:
                return best
        return None

    def _in_time(self, ref: Referral, start: float | None) -> bool:
        """Could a connection that started at `start` follow `ref`? Not if it started before the
        line that sent the client there (a little skew allowed for merged captures), nor more than
        the link window after it: a transcript's relative times never match a capture's clock."""
        if ref.ts is None or start is None:
            return True
        return ref.ts - CLOCK_SKEW <= start <= ref.ts + self.window

    def _root(self, sid: str, parent: dict[str, str]) -> str:
        up = parent.get(sid)
        if up is None:
            return sid
        if up not in parent:   # the common chains (SB -> NS, NS -> DS) without a set per stream
            return up
        seen = {sid}
        while sid in parent and parent[sid] not in seen:
            sid = parent[sid]
            seen.add(sid)
        return sid

    def _handle(self, sid: str) -> str | None:
        handle = getattr(self.conns.get(sid), "handle", None)
        if handle is None and self.facts[sid].participants and self.facts[sid].participants[0].via == "self":
            handle = wire.parse_endpoint(self.facts[sid].participants[0].handle.encode()).handle
        return handle

    def _sessions(self, sids: list[str], parent: dict[str, str]):
        position = {sid: i for i, sid in enumerate(sids)}  # capture order (index() would be quadratic)
        groups: dict[str, list[str]] = {}
        for sid in sids:
            groups.setdefault(self._root(sid, parent), []).append(sid)
        # A group rooted at an unlinked SB joins an NS-rooted group of the same user that overlaps it.
        # Candidates are looked up by handle, so this stays linear in the number of groups.
        by_handle: dict[str, list[str]] = {}
        for root, members in groups.items():
            if self._role(root) != "SB":
                key = (self._session_handle(members) or "").lower()
                if key:
                    by_handle.setdefault(key, []).append(root)
        # Each group's time span is computed once and widened as switchboards join it, and the
        # groups that grew are put back in capture order once at the end: thousands of
        # switchboards of one user joining one login cost linear time (they were quadratic).
        spans: dict[str, tuple] = {}

        def span(root: str) -> tuple:
            found = spans.get(root)
            if found is None:
                starts = [t for t in map(self._start, groups[root]) if t is not None]
                ends = [t for t in map(self._end, groups[root]) if t is not None]
                found = spans[root] = (min(starts, default=None), max(ends, default=None))
            return found
        grown: set[str] = set()
        for root in list(groups):
            if self._role(root) != "SB":
                continue
            handle = (self._handle(root) or "").lower()
            if not handle:
                continue
            start, end = self._start(root), self._end(root)
            for other in by_handle.get(handle, ()):
                if other == root or other not in groups:
                    continue
                o_start, o_end = span(other)
                if None in (start, end, o_start, o_end) or (start <= o_end and end >= o_start):
                    r_start, r_end = span(root)
                    groups[other].extend(groups.pop(root))
                    spans[other] = (min((t for t in (o_start, r_start) if t is not None), default=None),
                                    max((t for t in (o_end, r_end) if t is not None), default=None))
                    grown.add(other)
                    break
        for root in grown:
            groups[root].sort(key=position.__getitem__)
        sessions, session_of = [], {}
        ordered = sorted(groups.values(), key=lambda ms: position[ms[0]])
        for n, members in enumerate(ordered, 1):
            sid_name = f"L{self.settled_sessions + n}"
            roles = [self._role(m) for m in members]
            starts = [self._start(m) for m in members if self._start(m) is not None]
            ends = [self._end(m) for m in members if self._end(m) is not None]
            version = next((getattr(self.conns.get(m), "version_label", None) for m in members
                            if self._role(m) == "NS" and getattr(self.conns.get(m), "version_label", None)), None)
            if version is None:
                version = next((getattr(self.conns.get(m), "version_label", None) for m in members
                                if getattr(self.conns.get(m), "version_label", None)), None)
            complete = "NS" in roles
            session = {"kind": "session", "session": sid_name, "handle": self._session_handle(members),
                       "version": version, "start": min(starts, default=None), "end": max(ends, default=None),
                       "streams": members, "complete": complete}
            if not complete:
                session["note"] = "no NS connection of this login in the capture"
            sessions.append(session)
            for m in members:
                session_of[m] = sid_name
        return sessions, session_of

    def _session_handle(self, members: list[str]) -> str | None:
        for want in ("NS", "DS", "SB", None):
            for m in members:
                if (want is None or self._role(m) == want) and self._handle(m):
                    return self._handle(m)
        return None

    def _chat(self, sid: str, session: str | None) -> dict:
        facts = self.facts[sid]
        return {"kind": "chat", "stream": sid, "session": session, "start": self._start(sid),
                "end": self._end(sid),
                "participants": [{"handle": p.handle, "nick": p.nick, "joined": p.joined, "via": p.via,
                                  "left": p.left, "left_via": p.left_via} for p in facts.participants],
                **({"more_participants": facts.more_participants} if facts.more_participants else {})}

    # -- settling -------------------------------------------------------------

    def _settle(self) -> None:
        """Hand over the records of the sessions that have settled and forget their streams.

        A pass links again only what changed since the last one (see `_relink`); the login
        sessions it weighs are those whose streams have all ended, as their group was last linked."""
        self._clock()
        if self._ended <= self.max_held and (self._now is None or self._oldest_end >= self._now - self.window):
            self._next_try = self._backoff()   # every held stream ended within the window: nothing can settle
            return
        self.passes += 1
        index = self._refresh()
        self._relink()
        self._result = None
        done: list[_Held] = []
        forced: dict[tuple, str] = {}     # a settled session's first stream's place -> why it was forced
        if index is not None:
            refs_of = self._referrals_of
            horizon = self._now - self.window
            held = sorted((h for group in self._groups for h in group.held), key=_first)
            ended = [h for h in held if h.end is not None and h.end < horizon]
            done = [h for h in ended if not self._could_join(h, refs_of, index)]
            if self._ended > self.max_held:
                # Too many ended streams held: logins past the window settle even though an
                # open stream could still join them, and their records say so.
                settled = {h.key for h in done}
                for h in ended:
                    if h.key not in settled:
                        forced[h.key] = (f"settled while open connections could still have joined it: more "
                                         f"than {self.max_held} ended connections were held")
                        self.forced += 1
                done = ended
                # Still too many (thousands of logins ended within the window): the logins that
                # ended first settle inside it too, down to half the bound, so memory stays
                # bounded and the next pass comes only after as many streams again (linear).
                left = self._ended - sum(len(h.streams) for h in done)
                if left > self.max_held // 2:
                    settled = {h.key for h in done}
                    young = sorted((h for h in held if h.key not in settled and h.end is not None),
                                   key=_ending)
                    for h in young:
                        if left <= self.max_held // 2:
                            break
                        forced[h.key] = (f"settled inside the link window: more than {self.max_held} ended "
                                         f"connections were held")
                        self.forced += 1
                        done.append(h)
                        left -= len(h.streams)
        if not done:
            self._next_try = self._backoff()  # nothing yet: try again later
            return
        # Settled sessions are numbered on from those handed over before, in the order decided;
        # a link record belongs to the session of the stream(s) it names. Their groups are
        # linked once more, for their records (in the order linking everything would give).
        rename: dict[str, tuple] = {}    # a settled session's first stream -> its name, why forced
        gone: set[str] = set()
        groups: set[_Group] = set()
        for h in done:
            self.settled_sessions += 1
            rename[h.streams[0]] = (f"L{self.settled_sessions}", forced.get(h.key))
            gone.update(h.streams)
            groups.add(self.facts[h.streams[0]].group)
        res = self._link(set().union(*(g.members for g in groups)), chats=False)
        records = [dict(r, linked=True) for r in res["links"] if (r["to"] or r["from"]) in gone]
        records += [dict(r, linked=False) for r in res["unlinked"] if (r["to"] or r["from"]) in gone]
        names: dict[str, str] = {}      # the session names of `res` -> the settled names
        for s in res["sessions"]:
            found = rename.get(s["streams"][0])
            if found is None:
                continue
            name, why = found
            names[s["session"]] = name
            rec = dict(s, session=name)
            if why is not None:
                rec["forced"] = why
            records.append(rec)
        session_of = res["session_of"]
        records += [dict(self._chat(sid, session_of[sid]), session=names[session_of[sid]])
                    for sid in res["sids"] if session_of[sid] in names and self._role(sid) == "SB"]
        del res
        for group in groups:
            self._groups.discard(group)
            for sid in group.members:   # what is left of these groups is linked again next pass
                if sid not in gone:
                    self.facts[sid].group = None
                    self._dirty.add(sid)
        for sid in gone:
            facts = self.facts.pop(sid)
            facts.linker = None   # a connection still pointing at them (Connection.linked) looks up anew
            self._index_user(facts, None)
            del self.conns[sid]
            self._unkey(facts)
            self._dirty.discard(sid)
            for ref in self._referrals_of.pop(sid, ()):
                if ref.cookie is not None and self._ns_of_cookie.get(ref.cookie) == sid:
                    del self._ns_of_cookie[ref.cookie]
        oldest = _NEVER
        for sid, conn in self.conns.items():
            if type(conn) is Ended:
                end = self._end(sid)
                if end is not None and end < oldest:
                    oldest = end
        self._oldest_end = oldest
        self._ended -= len(gone)
        self._next_try = self._backoff()
        if self.on_settled is not None:
            self.on_settled(records)

    def _backoff(self) -> int:
        # The next attempt once settle_after more streams have ended, or, when many
        # are held (something keeps them from settling), once as many again have.
        # Up to max_held, every settle_after more (a forced pass frees at least half of it);
        # still past it (ended streams of logins with a connection open cannot settle),
        # once as many again have ended.
        if self._ended > self.max_held:
            return 2 * self._ended
        return max(self._ended + self.settle_after, min(2 * self._ended, self.max_held + 1))

    def _refresh(self) -> "_OpenStreams | None":
        """One look at the streams still open, at the start of a pass: those whose user handle
        became known or changed are indexed again, and those whose role or start changed since
        their group was linked mark it to be linked again; and what they could join, indexed
        (None without a capture time yet: then nothing settles)."""
        now = self._now
        index = _OpenStreams() if now is not None else None
        young = now - self.window if now is not None else 0.0  # a stream this old without a handle never gets one
        dirty = self._dirty
        for sid, conn in self.conns.items():
            if type(conn) is Ended:
                continue
            facts = self.facts[sid]
            handle = self._handle(sid)
            if self._index_user(facts, handle):
                dirty.add(sid)
            start = self._start(sid)
            if facts.group is not None and (start != facts.seen_start or self._role(sid) != facts.seen_role):
                dirty.add(sid)
            if index is None:
                continue
            if start is None:
                index.timeless = True
                continue
            index.starts.append(start)
            login = facts.sb_login
            if login is not None:
                index.cookie[login.cookie] = min(index.cookie.get(login.cookie, start), start)
            if facts.user:
                index.handle[facts.user] = min(index.handle.get(facts.user, start), start)
            elif start >= young:
                index.unknown = min(index.unknown, start)
        if index is not None:
            index.starts.sort()
        return index

    def _relink(self) -> None:
        """Link again the streams changed since the last pass and every stream tied to them
        (their `_component`), a chunk of groups at a time, and keep of each group the login
        sessions whose streams have all ended. A group with no ended stream is not linked
        (nothing in it can settle yet); without addresses (transcripts) everything is one group."""
        todo = list(self._dirty)
        for group in self._groups:
            if group.moving:
                todo.extend(group.members)
        self._dirty = set()
        if self._unkeyed:
            for group in self._groups:
                for sid in group.members:
                    if sid in self.facts:
                        self.facts[sid].group = None
            self._groups.clear()
            todo = [next(iter(self.facts))] if self.facts else []
            found_all = True
        else:
            found_all = False
        facts, conns = self.facts, self.conns
        done: set[str] = set()
        chunk: list[set[str]] = []
        size = 0
        while todo:
            seed = todo.pop()
            if seed in done or seed not in facts:
                continue
            members = set(facts) if found_all else self._component(seed)
            done |= members
            for sid in members:
                old = facts[sid].group
                if old is not None:   # linked before: its other streams are looked at again too
                    self._groups.discard(old)
                    facts[sid].group = None
                    todo.extend(old.members)
            if not any(type(conns.get(sid)) is Ended for sid in members):
                continue   # all still open: nothing to settle here yet
            chunk.append(members)
            size += len(members)
            if size >= LINK_CHUNK:
                self._link_groups(chunk)
                chunk, size = [], 0
        if chunk:
            self._link_groups(chunk)
        ends, self._ends = self._ends, set()
        for group in ends:
            if group in self._groups:   # not linked again meanwhile
                self._ended_in(group)

    def _ended_in(self, group: _Group) -> None:
        """Move to `held` the sessions of `group` whose last open stream has ended, with what
        linking the group again would give them (their end, their user)."""
        conns = self.conns
        still = []
        for streams in group.open:
            if all(type(conns.get(m)) is Ended for m in streams):
                group.held.append(self._held(streams))
            else:
                still.append(streams)
        group.open = still

    def _held(self, streams: tuple) -> _Held:
        """A session whose streams (in capture order) have all ended, as `_sessions` records it."""
        ends = [t for t in map(self._end, streams) if t is not None]
        return _Held(self._place(streams[0]), max(ends, default=None),
                     (self._session_handle(streams) or "").lower(), streams)

    def _link_groups(self, chunk: list[set[str]]) -> None:
        """Link these groups (each closed under `_component`) and keep what a pass needs of them."""
        facts, conns = self.facts, self.conns
        res = self._link(set().union(*chunk), chats=False)
        parent = res["parent"]
        for members in chunk:
            group = _Group(list(members))
            self._groups.add(group)
            unlinked_user = still_open = False
            for sid in members:
                f = facts[sid]
                f.group = group
                if type(conns.get(sid)) is not Ended:
                    still_open = True
                    f.seen_start, f.seen_role = self._start(sid), self._role(sid)
                if not unlinked_user and sid not in parent and f.user and self._role(sid) == "SB":
                    unlinked_user = True
            group.moving = unlinked_user and still_open
        for s in res["sessions"]:
            streams = s["streams"]
            group = facts[streams[0]].group
            if all(type(conns.get(m)) is Ended for m in streams):
                group.held.append(_Held(self._place(streams[0]), s["end"], (s["handle"] or "").lower(),
                                        tuple(streams)))
            else:
                group.open.append(tuple(streams))

    def _could_join(self, session: _Held, refs_of: dict[str, list[Referral]], index: "_OpenStreams") -> bool:
        """Whether a stream still open might yet be linked into `session` (see the module docstring):
        one that started before the session's end plus the window and that presented one of its
        cookies, could answer one of its unlinked XFR NS lines, or whose user is the same or not
        yet known (for `window` seconds after it started: a stream still without a user by then
        holds nothing back, so one such stream cannot keep every login from settling)."""
        if index.timeless:
            return True
        latest = session.end + self.window
        if index.unknown <= latest or index.handle.get(session.user, _NEVER) <= latest:
            return True
        for m in session.streams:
            for ref in refs_of.get(m, ()):
                if ref.cookie is not None and index.cookie.get(ref.cookie, _NEVER) <= latest:
                    return True
                if ref.kind == "xfr_ns" and ref.linked_to is None:
                    if ref.ts is None:
                        if index.starts and index.starts[0] <= latest:
                            return True
                    else:
                        i = bisect_left(index.starts, ref.ts)
                        if i < len(index.starts) and index.starts[i] <= latest:
                            return True
        return False

    def _mask(self, secret: bytes | None) -> str | None:
        if secret is None:
            return None
        return self.redactor.mask(secret) if self.redactor.enabled else _text(secret)

    def records(self, res: dict | None = None):
        """Every link, unlinked item, session and chat (of `res`, else of `result()`), as
        JSON Lines records, one at a time: a long capture's are never all copied at once."""
        res = self.result() if res is None else res
        for r in res["links"]:
            yield dict(r, linked=True)
        for r in res["unlinked"]:
            yield dict(r, linked=False)
        yield from res["sessions"]
        yield from res["chats"]


class LinkWriter:
    """A sink that writes the Linker's records to other sinks (JSON Lines writers): those of
    settled sessions as they settle (see `Linker.settle_after`), the rest at the end."""

    event_codes = frozenset()   # its `event` takes nothing: the run does not call it (analysis.run)

    def __init__(self, linker: Linker, outputs: list) -> None:
        self.linker = linker
        self.outputs = outputs
        linker.on_settled = self._write  # settled sessions are written as they settle

    def _write(self, records) -> None:
        for rec in records:
            for out in self.outputs:
                out.event(None, rec)

    def event(self, conn, event) -> None:
        pass

    def stream(self, conn) -> None:
        pass

    def close(self) -> None:
        self._write(self.linker.records())
        for out in self.outputs:
            flush = getattr(getattr(out, "out", None), "flush", None)
            if flush:
                flush()


__all__ = ["Linker", "LinkWriter", "Participant", "Referral"]
