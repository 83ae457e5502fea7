"""Who was on whose list, and who was online when: contact lists and presence per login.

`ContactBook` is a sink. On notification-server connections it reads

- the lists as the server gave them: `LST` (MSNP2-7: `LST trid LIST ver
  index count handle nick [groups]`; MSNP8-9: `LST handle nick lists
  [groups]`; MSNP10-12: `LST N=handle F=nick C=id lists [groups]`), the
  groups (`LSG`), and later changes (`ADD`/`ADC`/`REM`);
- from MSNP13 on, the `ADL` XML (`<ml><d n="domain"><c n="user" l="lists"/>`):
  the client's (its address book, fetched over SOAP, which a capture of
  MSNP does not hold: groups and nicknames are not there) and the server's
  `ADL 0` pushes (someone added you);
- presence: `ILN` (initial), `NLN` (changes), `FLN` (offline) for contacts,
  and the server's `CHG` answer for the login itself.

List bits: 1 forward, 2 allow, 4 block, 8 reverse, 16 pending.

Records (plain dicts, see README's JSON Lines table): `presence` records go
to `on_record` as they happen (nothing kept for them unless `history` is
set, for the HTML strip); `contact` records, one per (login, contact), at
`close()`. Bounds: MAX_CONTACTS contacts in all and MAX_LOGINS users (more
are counted in `dropped`, and `contacts.limit` says so once, at `close()`,
through `reporter`), `history` presence changes per contact (the newest kept).
"""

from __future__ import annotations

import re
from collections import deque
from typing import Callable
from urllib.parse import unquote

from analyzer.msnp import C2S, S2C, Command

LIST_BITS = [(1, "forward"), (2, "allow"), (4, "block"), (8, "reverse"), (16, "pending")]
LIST_NAMES = {"FL": "forward", "AL": "allow", "BL": "block", "RL": "reverse", "PL": "pending"}
STATUS = {"NLN": "online", "BSY": "busy", "IDL": "idle", "BRB": "be right back", "AWY": "away",
          "PHN": "on the phone", "LUN": "out to lunch", "HDN": "hidden", "FLN": "offline"}
MAX_CONTACTS = 100_000
MAX_LOGINS = 100_000   # users followed; a contact of a user past it is counted in `dropped`
# Linear on any payload: a tag's attributes stop at the next `<` and a domain's content at the
# next `<d` (with `[^>]*` or `.*?`, each unclosed tag scanned to the end of the payload:
# 8,000 unclosed `<d>` took 15 s); attribute names start at a word boundary (`\w+` tried from
# every letter of a long word was quadratic too). Well-formed `<ml>` documents read the same.
_CONTACT = re.compile(rb"<c\b([^<>]*)>")
_DOMAIN = re.compile(rb"<d\b([^<>]*)>((?:[^<]++|<(?!/?d\b))*+)</d>")
_ATTR = re.compile(rb'\b(\w+)\s*=\s*"([^"]*)"')
_CODES = frozenset({"LST", "LSG", "ADD", "ADC", "REM", "ADL", "RML", "ILN", "NLN", "FLN", "CHG"})


def lists_from_bits(bits: int) -> list[str]:
    return [name for bit, name in LIST_BITS if bits & bit]


def _handle(raw: bytes | str) -> str:
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
    if ":" in text and text.split(":", 1)[0].isdigit():  # MSNP18 `1:bob@example.com`
        text = text.split(":", 1)[1]
    return text.split(";", 1)[0].lower()


def _nick(raw: bytes) -> str:
    return unquote(raw.decode("utf-8", "replace"))


class Contact:
    __slots__ = ("handle", "lists", "groups", "nickname", "source", "first", "status", "changes", "history")

    def __init__(self, handle: str, ts, history: int) -> None:
        self.handle = handle
        self.lists: set[str] = set()
        self.groups: list[str] = []
        self.nickname: str | None = None
        self.source: str | None = None
        self.first = ts
        self.status: str | None = None
        self.changes = 0
        self.history: deque | None = deque(maxlen=history) if history else None


class Login:
    def __init__(self, handle: str) -> None:
        self.handle = handle
        self.streams: list[str] = []
        self.version: str | None = None
        self.contacts: dict[str, Contact] = {}
        self.groups: dict[str, str] = {}     # group id -> name
        self.start = self.end = None


class ContactBook:
    event_codes = _CODES   # the run hands `event` only these commands (see analysis.run)

    def __init__(self, on_record: Callable[[dict], None] | None = None, history: int = 0) -> None:
        self.on_record = on_record
        self.history = history
        self.logins: dict[str, Login] = {}
        self.count = 0
        self.dropped = 0
        self.closed = False
        self.reporter = None   # Analysis.anomaly (set by the run): told of the limit at close()

    # -- sink ---------------------------------------------------------------------------------------

    def event(self, conn, event) -> None:
        if type(event) is not Command or conn is None or event.cmd not in _CODES:
            return
        if conn.role not in ("NS", None) or getattr(conn, "protocol", "msnp") != "msnp":
            return
        handle = conn.handle
        if not handle:
            return
        login = self._login(conn, _handle(handle))
        if login is None:
            return
        ts = event.ts
        if ts is not None:
            login.start = ts if login.start is None else min(login.start, ts)
            login.end = ts if login.end is None else max(login.end, ts)
        code = event.cmd
        p = event.raw_params
        if event.direction == S2C:
            if code == "LST":
                self._lst(login, event, p)
            elif code == "LSG":
                self._lsg(login, event, p)
            elif code in ("ADD", "ADC") and len(p) >= 2:
                self._add(login, event, p)
            elif code == "REM" and len(p) >= 2:
                self._rem(login, p)
            elif code == "ADL" and event.payload:
                self._adl(login, event.payload, ts, "ADL (server)")
            elif code in ("ILN", "NLN") and len(p) >= 2:
                self._presence(login, conn, event, p)
            elif code == "FLN" and p:
                self._set(login, conn, _handle(p[0]), "FLN", code, None, ts)
            elif code == "CHG" and p:
                self._set(login, conn, login.handle, p[0].decode("ascii", "replace"), code, None, ts)
        elif code == "ADL" and event.payload:
            self._adl(login, event.payload, ts, "ADL (client)")
        elif code == "RML" and event.payload:
            for who, _bits in _ml_entries(event.payload):
                c = login.contacts.get(who)
                if c is not None:
                    c.lists -= set(lists_from_bits(_bits))

    def stream(self, conn) -> None:
        pass

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self.on_record is not None:
            for rec in self.contact_records():
                self.on_record(rec)
        if self.dropped and self.reporter is not None:
            from analyzer.msnp import Anomaly
            self.reporter(None, Anomaly(
                "contacts.limit", f"more than {MAX_CONTACTS} contacts or {MAX_LOGINS} users in the capture: "
                f"{self.dropped} contact lines past them were counted, not kept", None, None, None))

    # -- reading -----------------------------------------------------------------------------------

    def _login(self, conn, handle: str) -> Login | None:
        login = self.logins.get(handle)
        if login is None:
            if len(self.logins) >= MAX_LOGINS:
                self.dropped += 1
                return None
            login = self.logins[handle] = Login(handle)
        if conn.id not in login.streams and len(login.streams) < 64:
            login.streams.append(conn.id)
        login.version = conn.version_label or login.version
        return login

    def _contact(self, login: Login, who: str, ts) -> Contact | None:
        c = login.contacts.get(who)
        if c is None:
            if self.count >= MAX_CONTACTS:
                self.dropped += 1
                return None
            self.count += 1
            c = login.contacts[who] = Contact(who, ts, self.history)
        return c

    def _groups(self, login: Login, raw: bytes | None) -> list[str]:
        if not raw:
            return []
        return [login.groups.get(g, g) for g in raw.decode("utf-8", "replace").split(",") if g]

    def _lst(self, login: Login, cmd: Command, p: list[bytes]) -> None:
        if not p:
            return
        if p[0].startswith(b"N="):                       # MSNP10-12
            fields = {t[:2]: t[2:] for t in p if t[1:2] == b"=" and len(t) > 2}
            rest = [t for t in p if t[1:2] != b"="]
            who = _handle(fields.get(b"N=", b""))
            bits = int(rest[0]) if rest and rest[0].isdigit() else 0
            nick = _nick(fields[b"F="]) if b"F=" in fields else None
            groups = self._groups(login, rest[1] if len(rest) > 1 else None)
            lists = lists_from_bits(bits)
        elif p[0].decode("ascii", "replace") in LIST_NAMES and cmd.trid is not None:  # MSNP2-7
            if len(p) < 6:
                return
            who, nick = _handle(p[4]), _nick(p[5])
            lists = [LIST_NAMES[p[0].decode()]]
            groups = self._groups(login, p[6] if len(p) > 6 else None)
        else:                                             # MSNP8-9
            if len(p) < 3 or not p[2].isdigit():
                return
            who, nick, lists = _handle(p[0]), _nick(p[1]), lists_from_bits(int(p[2]))
            groups = self._groups(login, p[3] if len(p) > 3 else None)
        if not who:
            return
        c = self._contact(login, who, cmd.ts)
        if c is None:
            return
        c.lists.update(lists)
        c.nickname = nick or c.nickname
        for g in groups:
            if g not in c.groups and len(c.groups) < 64:
                c.groups.append(g)
        c.source = c.source or "LST"

    def _lsg(self, login: Login, cmd: Command, p: list[bytes]) -> None:
        if len(p) >= 6 and cmd.trid is not None:          # MSNP2-7: LSG trid ver index count id name 0
            gid, name = p[3], p[4]
        elif len(p) >= 2 and p[0].isdigit():              # MSNP8-9: LSG id name 0
            gid, name = p[0], p[1]
        elif len(p) >= 2:                                 # MSNP10+: LSG name guid
            name, gid = p[0], p[1]
        else:
            return
        if len(login.groups) < 1000:
            login.groups[gid.decode("utf-8", "replace")] = _nick(name)

    def _add(self, login: Login, cmd: Command, p: list[bytes]) -> None:
        listname = LIST_NAMES.get(p[0].decode("ascii", "replace"))
        if listname is None:
            return
        if any(t.startswith(b"N=") for t in p[1:]):       # ADC trid LIST N=handle F=nick
            fields = {t[:2]: t[2:] for t in p[1:] if t[1:2] == b"="}
            who, nick = _handle(fields.get(b"N=", b"")), fields.get(b"F=")
        elif len(p) >= 3:                                 # ADD trid LIST ver handle nick
            who, nick = _handle(p[2]), (p[3] if len(p) > 3 else None)
        else:
            return
        c = self._contact(login, who, cmd.ts) if who else None
        if c is None:
            return
        c.lists.add(listname)
        if nick:
            c.nickname = _nick(nick)
        c.source = c.source or cmd.cmd

    def _rem(self, login: Login, p: list[bytes]) -> None:
        listname = LIST_NAMES.get(p[0].decode("ascii", "replace"))
        target = p[2] if len(p) >= 3 and p[1].isdigit() else p[1]
        c = login.contacts.get(_handle(target))
        if c is not None and listname:
            c.lists.discard(listname)

    def _adl(self, login: Login, payload: bytes, ts, source: str) -> None:
        for who, bits in _ml_entries(payload):
            c = self._contact(login, who, ts)
            if c is None:
                continue
            c.lists.update(lists_from_bits(bits))
            c.source = c.source or source

    def _presence(self, login: Login, conn, cmd: Command, p: list[bytes]) -> None:
        status, who = p[0].decode("ascii", "replace"), _handle(p[1])
        rest = p[2:]
        # MSNP14-17 put the network id between the handle and the nick.
        if len(rest) >= 2 and rest[0].isdigit() and len(rest[0]) <= 2 and b":" not in p[1]:
            version = conn.version or 0
            if 14 <= version < 18:
                rest = rest[1:]
        nick = _nick(rest[0]) if rest else None
        self._set(login, conn, who, status, cmd.cmd, nick, cmd.ts)

    def _set(self, login: Login, conn, who: str, status: str, code: str, nick, ts) -> None:
        c = self._contact(login, who, ts)
        if c is None:
            return
        if nick:
            c.nickname = nick
        c.changes += 1
        c.status = status
        if c.history is not None:
            c.history.append((ts, status))
        if self.on_record is not None:
            self.on_record({"kind": "presence", "stream": conn.id, "login": login.handle, "contact": who,
                            "ts": ts, "cmd": code, "status": status, "meaning": STATUS.get(status),
                            "nickname": nick})

    # -- results -----------------------------------------------------------------------------------

    def contact_records(self) -> list[dict]:
        out = []
        for login in self.logins.values():
            for c in login.contacts.values():
                if c.handle == login.handle and not c.lists:
                    continue  # the login's own presence (CHG): not a contact
                out.append({"kind": "contact", "stream": login.streams[0] if login.streams else None,
                            "streams": list(login.streams), "login": login.handle, "version": login.version,
                            "contact": c.handle, "lists": [n for _, n in LIST_BITS if n in c.lists],
                            "groups": list(c.groups), "nickname": c.nickname, "source": c.source,
                            "first_seen": c.first, "status": c.status, "presence_changes": c.changes})
        return out


def _ml_entries(payload: bytes):
    """(handle, list bits) of each `<c n=.. l=..>` in an ADL/RML `<ml>` document."""
    for dm in _DOMAIN.finditer(payload):
        domain = dict(_ATTR.findall(dm.group(1))).get(b"n", b"")
        for cm in _CONTACT.finditer(dm.group(2)):
            attrs = dict(_ATTR.findall(cm.group(1)))
            user, bits = attrs.get(b"n"), attrs.get(b"l", b"0")
            if not user:
                continue
            who = (user + b"@" + domain) if domain else user
            yield _handle(who), int(bits) if bits.isdigit() else 0


STRIP_CELLS = 48
STRIP_MARKS = {"NLN": "█", "FLN": "·", "HDN": "·", "BSY": "▓", "IDL": "▒", "AWY": "▒", "BRB": "▒",
               "PHN": "▓", "LUN": "▒"}


def presence_strip(history, start: float, end: float, cells: int = STRIP_CELLS) -> str:
    """A text strip of `cells` characters from `start` to `end`: each cell shows the status in force
    (█ online, ▓ busy/phone, ▒ away/idle/brb/lunch, · offline or hidden, space: not known yet)."""
    if not history or start is None or end is None:
        return ""
    span = max(end - start, 1e-9)
    events = sorted((ts if ts is not None else start, status) for ts, status in history)
    out, i, current = [], 0, None
    for cell in range(cells):
        edge = start + span * (cell + 1) / cells
        while i < len(events) and events[i][0] <= edge:
            current = events[i][1]
            i += 1
        out.append(" " if current is None else STRIP_MARKS.get(current, "?"))
    return "".join(out)


def contacts_sections(book: ContactBook, limit: int = 1000) -> list[dict]:
    """HTML/terminal sections: per login, its contacts with lists, groups and a presence strip."""
    sections = []
    starts = [l.start for l in book.logins.values() if l.start is not None]
    ends = [l.end for l in book.logins.values() if l.end is not None]
    start, end = (min(starts), max(ends)) if starts else (None, None)
    for login in book.logins.values():
        rows = []
        for c in list(login.contacts.values())[:limit]:
            strip = presence_strip(c.history, start, end) if c.history is not None else ""
            rows.append([c.handle, " ".join(n for _, n in LIST_BITS if n in c.lists), ", ".join(c.groups),
                         c.nickname or "", STATUS.get(c.status, c.status or ""), str(c.changes), strip])
        if len(login.contacts) > limit:
            rows.append([f"{len(login.contacts) - limit} more contacts", "", "", "", "", "", ""])
        sections.append({"plugin": None, "title": f"Contacts of {login.handle} ({login.version or 'MSNP?'}, "
                                  f"{len(login.contacts)} entries; strip: █ online ▓ busy ▒ away · offline)",
                         "columns": ["contact", "lists", "groups", "nickname", "last status", "changes",
                                     "presence over the capture"],
                         "rows": rows})
    return sections
