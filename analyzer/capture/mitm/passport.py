"""Logins over HTTPS (Passport 1.4 / Nexus, and RST/SSO), tied to the MSNP line that uses their ticket.

MSNP8-14 clients log in with Passport 1.4: `GET /rdr/pprdr.asp` on the Nexus
answers `PassportURLs: ...,DALogin=login.example/login2.srf,...`; then
`GET /login2.srf` with `Authorization: Passport1.4 ...,sign-in=..,pwd=..,...`
answers `Authentication-Info: Passport1.4 da-status=success,...,from-PP='t=..&p=..'`
(or 302 `da-status=redir` to another login server, or 401 `da-status=failed`).
The client then sends `USR trid TWN S t=..&p=..` to the NS. MSNP15+ clients
POST a SOAP `RequestSecurityToken` to `/RST.srf` (`<wsse:Username>`,
`<wsse:Password>`), get `<wsse:BinarySecurityToken>t=..&amp;p=..</...>` tokens
back, and send `USR trid SSO S t=..&p=.. <response>`.

Contract:
- `recognise(HttpExchange)` returns a `LoginStep` for a Nexus, Passport or RST
  exchange, else None. Never raises on input.
- `LoginLinker` is a sink (add it last to an `Analysis`'s sinks): it watches
  `USR .. TWN S` / `USR .. SSO S` commands, and `http(exchange)` takes the HTTPS
  side; when a ticket issued by a login is presented on a connection, in either
  order, it emits one `login` record on that connection (the steps, who, the
  outcome), so the timeline shows the login end to end.
- Tickets and passwords in every record go through the `Redactor`.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit

from analyzer.msnp import C2S, Anomaly, Command
from analyzer.msnp.facts import login
from analyzer.analysis.redact import Redactor
from analyzer.capture.mitm.gateway import HttpExchange, header

NEXUS, PASSPORT, RST = "nexus", "passport", "rst"
_SHOWN_HEADERS = ("Authorization", "Authentication-Info", "WWW-Authenticate", "PassportURLs", "Location")
# Characters of one header value or URL kept in a record (a Passport header is a few hundred): a
# crafted megabyte header is cut before it is redacted and written, saying how much was left out.
MAX_SHOWN = 8192
_WORD = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_")
_PREFIX_MAX = 64  # longest namespace prefix looked at (`wsse:`, `wst:`, `ps:`)
_FAULT = re.compile(rb"<(?:\w+:)?Fault\b|FailedAuthentication|<psf:error", re.S)
_T_VALUE = re.compile(r"(?:^|[&'\s])t=([^&'\s,]+)")


def elements(body: bytes, name: bytes) -> list[bytes]:
    """The text of every `<name ...>text</name>` (any namespace prefix on either tag), in order.

    What the regex `<(?:\\w+:)?name\\b[^>]*>(.*?)</(?:\\w+:)?name>` finds, in one
    left-to-right pass: the regex scans to the end of the body again for every
    unclosed tag (an 820 kB login body of them took 77 s); here each byte is
    looked at a bounded number of times whatever the tags."""
    out: list[bytes] = []
    n, size = len(body), len(name)
    pos = 0
    start = None    # where the text of the open element begins
    gt = -1         # the next '>' at or after some earlier point (each stretch is searched once)
    while True:
        i = body.find(name, pos)
        if i < 0:
            return out
        end = i + size
        pos = end
        if end < n and body[end] in _WORD:
            continue  # `Usernames`: not this tag (\b)
        j = i
        if j and body[j - 1] == 0x3A:  # ':' after a namespace prefix
            k, low = j - 1, max(0, j - 1 - _PREFIX_MAX)
            while k > low and body[k - 1] in _WORD:
                k -= 1
            if k == j - 1:
                continue
            j = k
        if j >= 2 and body[j - 1] == 0x2F and body[j - 2] == 0x3C:  # '</'
            if start is not None and body[end:end + 1] == b">":
                out.append(body[start:j - 2])
                start = None
                pos = end + 1
        elif j >= 1 and body[j - 1] == 0x3C and start is None:  # '<'
            if gt < end:
                gt = body.find(b">", end)
                if gt < 0:
                    return out  # no tag can end: nothing more can match
            start = pos = gt + 1


def ticket_key(ticket: str) -> str:
    """What identifies a ticket: its `t=` value (the `p=` part is optional), else the whole."""
    ticket = html.unescape(ticket.strip().strip("'\""))
    m = _T_VALUE.search(ticket)
    return m.group(1) if m else ticket


def passport_fields(value: str | None) -> dict[str, str]:
    """`Passport1.4 a=1,b='x,y',c=3` -> {"a": "1", "b": "x,y", "c": "3"} (quotes kept off)."""
    out: dict[str, str] = {}
    if not value:
        return out
    text = value.strip()
    if text.lower().startswith("passport1.4"):
        text = text[len("passport1.4"):]
    # What `\\s*([\\w-]+)=('[^']*'|[^,]*)\\s*,?` found with re.finditer, in one pass: that
    # regex retried its key at every position of a long run without '=' (quadratic).
    pos, n = 0, len(text)
    while True:
        eq = text.find("=", pos)
        if eq < 0:
            return out
        k = eq
        while k > pos and (text[k - 1].isalnum() or text[k - 1] in "_-"):
            k -= 1
        value = eq + 1
        if k == eq:  # no key right before this '='
            pos = value
            continue
        close = text.find("'", value + 1) if text.startswith("'", value) else -1
        if close >= 0:
            val, pos = text[value:close + 1], close + 1
        else:
            comma = text.find(",", value)
            pos = n if comma < 0 else comma
            val = text[value:pos]
        out.setdefault(text[k:eq], val[1:-1] if val.startswith("'") and val.endswith("'") else val)


@dataclass
class LoginStep:
    role: str                       # nexus, passport or rst
    exchange: HttpExchange
    handle: str | None = None
    outcome: str = "unknown"        # success, failed, redirect, info, no_response
    tickets: list[str] = field(default_factory=list)


def recognise(x: HttpExchange) -> LoginStep | None:
    try:
        return _recognise(x)
    except Exception:  # noqa: BLE001 - an odd exchange is just not a login step
        return None


def _recognise(x: HttpExchange) -> LoginStep | None:
    path = urlsplit(x.path).path.lower()
    if path.endswith("/rdr/pprdr.asp"):
        step = LoginStep(NEXUS, x)
        step.outcome = "no_response" if x.status is None else (
            "info" if header(x.response_headers, "PassportURLs") else "failed")
        return step
    auth = header(x.request_headers, "Authorization") or ""
    if path.endswith("/login2.srf") or path.endswith("/login.srf") or auth.lower().startswith("passport1.4"):
        step = LoginStep(PASSPORT, x)
        signin = passport_fields(auth).get("sign-in")
        step.handle = unquote(signin) if signin else None
        if x.status is None:
            step.outcome = "no_response"
            return step
        info = passport_fields(header(x.response_headers, "Authentication-Info"))
        www = passport_fields(header(x.response_headers, "WWW-Authenticate"))
        status = (info.get("da-status") or www.get("da-status") or "").lower()
        if info.get("from-PP"):
            step.tickets.append(info["from-PP"])
        if status == "success" or step.tickets:
            step.outcome = "success"
        elif status == "redir" or 300 <= x.status < 400:
            step.outcome = "redirect"
        else:
            step.outcome = "failed"
        return step
    if re.search(r"/rst\d*\.srf$", path):
        step = LoginStep(RST, x)
        users = elements(x.request_body or b"", b"Username")
        if users:
            step.handle = html.unescape(users[0].decode("utf-8", "replace")).strip()
        if x.status is None:
            step.outcome = "no_response"
            return step
        body = x.response_body or b""
        step.tickets = [html.unescape(t.decode("utf-8", "replace")).strip()
                        for t in elements(body, b"BinarySecurityToken")]
        if x.status == 200 and step.tickets and not _FAULT.search(body):
            step.outcome = "success"
        else:
            step.outcome = "failed"
        return step
    return None


def shown(value: str) -> str:
    """`value` cut to MAX_SHOWN characters, the cut saying how many more there were."""
    if len(value) <= MAX_SHOWN:
        return value
    return f"{value[:MAX_SHOWN]}[... {len(value) - MAX_SHOWN} more characters]"


def step_record(step: LoginStep, redactor: Redactor) -> dict:
    """One HTTPS exchange of a login, redacted, for `http` and `login` records."""
    x = step.exchange
    headers = {}
    for name in _SHOWN_HEADERS:
        value = header(x.request_headers, name) or header(x.response_headers, name)
        if value is not None:
            headers[name] = redactor.header(name, shown(value))
    return {"role": step.role, "method": x.method,
            "url": redactor.text(shown(x.url).encode("utf-8", "surrogatepass")).decode("utf-8", "replace"),
            "status": x.status, "ts": x.ts_request, "ts_end": x.ts_response, "outcome": step.outcome,
            "handle": step.handle, "headers": headers}


def usr_ticket(cmd: Command) -> tuple[str, str] | None:
    """(method, ticket) of a client's `USR trid TWN|SSO S ticket ...`, else None."""
    if cmd.cmd != "USR" or cmd.direction != C2S:
        return None
    found = login(cmd)
    if found is not None and found.method in ("TWN", "SSO") and found.stage == "S" and found.value is not None:
        return found.method, found.value.decode("utf-8", "replace")
    return None


MAX_TICKETS = 10_000  # tickets held per table (issued, presented, linked) before the oldest go


class LoginLinker:
    """A sink that ties HTTPS logins to the MSNP connection that presents their ticket."""

    def __init__(self, analysis, redactor: Redactor | None = None) -> None:
        self.analysis = analysis
        # The run's redactor, so a masked ticket matches the one the writers show in the USR line.
        self.redactor = redactor or analysis.redactor
        self.chain: list[LoginStep] = []               # steps since the last ticket was issued
        self.issued: dict[str, list[LoginStep]] = {}   # ticket key -> the steps that issued it
        self.presented: dict[str, tuple] = {}          # ticket key -> (conn, method, ticket, ts), not yet linked
        self.linked: dict[str, None] = {}               # ticket keys linked (a set in insertion order)
        self.steps = 0
        self.forgotten = 0                              # tickets dropped at MAX_TICKETS

    # -- the HTTPS side -------------------------------------------------------

    def http(self, x: HttpExchange) -> LoginStep | None:
        step = recognise(x)
        if step is None:
            return None
        self.steps += 1
        rec = step_record(step, self.redactor)
        rec = {"kind": "http", "via": step.role, **{k: v for k, v in rec.items() if k != "role"}}
        self.analysis.record(None, rec)
        if step.outcome == "failed":
            self.analysis.anomaly(None, Anomaly(
                "passport.login.failed", f"{step.role} login for {step.handle or '?'} refused (HTTP {x.status})",
                None, None, x.ts_response))
        self.chain.append(step)
        if step.tickets:
            chain, self.chain = self.chain, []
            for ticket in step.tickets:
                key = ticket_key(ticket)
                self.issued[key] = chain
                self._bound(self.issued, x.ts_response)
                waiting = self.presented.pop(key, None)
                if waiting is not None:
                    self._link(key, *waiting)
        del self.chain[:-16]  # a client that never gets a ticket must not grow this forever
        return step

    # -- the MSNP side (Sink protocol) ----------------------------------------

    def event(self, conn, event) -> None:
        if type(event) is not Command or conn is None or event.cmd != "USR":
            return
        found = usr_ticket(event)
        if found is None:
            return
        method, ticket = found
        key = ticket_key(ticket)
        if key in self.issued:
            self._link(key, conn, method, ticket, event.ts)
        else:
            self.presented[key] = (conn, method, ticket, event.ts)
            self._bound(self.presented, event.ts)

    def stream(self, conn) -> None:
        pass

    def close(self) -> None:
        pass

    def _bound(self, table: dict, ts) -> None:
        """Past MAX_TICKETS entries the oldest is forgotten (a long mitm run must not grow
        these forever); the first time, one `passport.ticket_limit`."""
        if len(table) <= MAX_TICKETS:
            return
        del table[next(iter(table))]
        self.forgotten += 1
        if self.forgotten == 1:
            self.analysis.anomaly(None, Anomaly(
                "passport.ticket_limit",
                f"more than {MAX_TICKETS} login tickets held at once (issued, presented or linked); the "
                f"oldest are forgotten from here on: a later USR or login with one of them is not linked",
                None, None, ts))

    def _link(self, key: str, conn, method: str, ticket: str, ts) -> None:
        if key in self.linked:
            return
        self.linked[key] = None
        self._bound(self.linked, ts)
        steps = self.issued.get(key, [])
        records = [step_record(s, self.redactor) for s in steps]
        handle = next((s.handle for s in reversed(steps) if s.handle), None)
        outcome = steps[-1].outcome if steps else "unknown"
        self.analysis.record(conn, {
            "kind": "login", "method": method, "handle": handle, "outcome": outcome, "ts": ts,
            "ticket": self.redactor.mask(ticket.encode()) if self.redactor.enabled else ticket,
            "start": records[0]["ts"] if records else None, "steps": records})



