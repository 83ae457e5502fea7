"""The MSN HTTP gateway: MSNP tunnelled through HTTP POSTs, decoded sans-IO.

A client behind a strict firewall sends its MSNP bytes as the bodies of
`POST /gateway/gateway.dll?Action=open&Server=NS&IP=host` (first request of a
session) and then `POST /gateway/gateway.dll?SessionID=id` (data) or
`?Action=poll&SessionID=id` (empty body, asks for pending server data), with
`Content-Type: application/x-msn-messenger`. Each response body carries the
server's MSNP bytes and the header
`X-MSN-Messenger: SessionID=id; GW-IP=addr` (the id for the next request, and
the gateway address to send it to), with `Session=close` when the session ends.

Contract:
- `GatewayDecoder.exchange(HttpExchange)` takes one finished HTTP round trip and
  returns events: `SessionOpened`, `GatewayData` (bytes for one direction of the
  session's logical MSNP connection), `RoundTrip` (the HTTP exchange itself, for
  the timeline), `SessionClosed` and `Anomaly`. An exchange that is not a
  gateway request returns `[]`. It never raises on input.
- `GatewayFeeder` turns those events into calls on an `Analysis`: one
  `Connection` per gateway session, fed by the same codec as a TCP connection,
  plus an `http` record per round trip for the sinks.

It does no I/O: the mitmproxy addon and the flow-file reader both build
`HttpExchange` objects from mitmproxy's HTTP flows and pass them in.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, urlsplit

from analyzer.msnp import C2S, S2C, Anomaly

GATEWAY_PATH = "/gateway/gateway.dll"
CONTENT_TYPE = "application/x-msn-messenger"


def header(headers, name: str) -> str | None:
    """Case-insensitive header lookup in a list of (name, value) pairs or a mapping."""
    items = headers.items() if hasattr(headers, "items") else headers
    lname = name.lower()
    for key, value in items:
        if key.lower() == lname:
            return value
    return None


@dataclass
class HttpExchange:
    """One HTTP request and its response (None when it got none), free of mitmproxy types."""
    method: str
    host: str | None
    path: str                      # path and query, as in the request line
    request_headers: list = field(default_factory=list)
    request_body: bytes = b""
    status: int | None = None
    response_headers: list = field(default_factory=list)
    response_body: bytes = b""
    ts_request: float | None = None
    ts_response: float | None = None
    client: str | None = None      # "ip:port" of the client
    server: str | None = None      # "ip:port" the request went to
    scheme: str = "http"
    error: str | None = None       # why there is no response

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.host or '?'}{self.path}"


def parse_messenger_header(value: str | None) -> dict[str, str]:
    """`SessionID=1.2; GW-IP=10.0.0.1; Session=close` -> {"SessionID": "1.2", ...}."""
    out: dict[str, str] = {}
    if not value:
        return out
    for part in value.split(";"):
        key, sep, val = part.strip().partition("=")
        if sep and key:
            out[key.strip()] = val.strip()
    return out


def is_gateway(path: str) -> bool:
    return urlsplit(path).path.lower() == GATEWAY_PATH


@dataclass(eq=False)
class GatewaySession:
    """One gateway session: one logical MSNP connection."""
    number: int
    server_type: str | None        # "NS" or "SB" from Action=open, None if joined mid-session
    target: str | None             # the IP= of Action=open: the MSNP server behind the gateway
    gateway: str | None            # the HTTP host the session was opened on
    client: str | None
    session_ids: list[str] = field(default_factory=list)
    gw_ip: str | None = None
    round_trips: int = 0
    polls: int = 0
    closed: bool = False


@dataclass
class SessionOpened:
    session: GatewaySession
    ts: float | None


@dataclass
class GatewayData:
    session: GatewaySession
    direction: str
    data: bytes
    ts: float | None


@dataclass
class RoundTrip:
    session: GatewaySession | None
    exchange: HttpExchange
    action: str                    # "open", "data", "poll"
    session_id: str | None         # the id the request named (None for open)
    next_session_id: str | None    # the id the response handed out


@dataclass
class SessionClosed:
    session: GatewaySession
    ts: float | None
    reason: str


MAX_SESSIONS = 1000      # sessions listed in `GatewayDecoder.sessions` (the latest)
MAX_SESSION_IDS = 10_000  # SessionIDs remembered; a request naming a forgotten one is gateway.session.unknown
IDS_PER_SESSION = 16     # SessionIDs listed per session (the latest)


class GatewayDecoder:
    def __init__(self) -> None:
        self.sessions: deque[GatewaySession] = deque(maxlen=MAX_SESSIONS)
        self.opened = 0
        self._by_id: OrderedDict[str, GatewaySession] = OrderedDict()

    def exchange(self, x: HttpExchange) -> list:
        try:
            return self._exchange(x)
        except Exception as exc:  # noqa: BLE001 - fail-open: a bug here must not stop the proxy
            return [Anomaly("analyzer.internal_error", f"gateway: {type(exc).__name__}: {exc}",
                            None, None, x.ts_request)]

    def _exchange(self, x: HttpExchange) -> list:
        if not is_gateway(x.path):
            return []
        out: list = []
        query = dict(parse_qsl(urlsplit(x.path).query, keep_blank_values=True))
        action = query.get("Action", "").lower()
        sid = query.get("SessionID")
        ts = x.ts_request
        if x.method.upper() != "POST":
            out.append(Anomaly("gateway.request.malformed", f"{x.method} {x.path}: the gateway only takes POST",
                               C2S, None, ts))
        ctype = header(x.request_headers, "Content-Type")
        if x.request_body and (ctype or "").split(";")[0].strip().lower() != CONTENT_TYPE:
            out.append(Anomaly("gateway.content_type", f"request Content-Type {ctype!r}, expected {CONTENT_TYPE}",
                               C2S, None, ts))
        session: GatewaySession | None
        if action == "open":
            server_type = query.get("Server", "").upper() or None
            target = query.get("IP") or None
            if server_type not in ("NS", "SB") or not target:
                out.append(Anomaly("gateway.request.malformed",
                                   f"Action=open needs Server=NS|SB and IP=host: {x.path}", C2S, None, ts))
            session = self._new(server_type, target, x)
            out.append(SessionOpened(session, ts))
            kind = "open"
        elif sid:
            session = self._by_id.get(sid)
            if session is None:
                out.append(Anomaly("gateway.session.unknown",
                                   f"SessionID={sid} was never opened in this capture; decoded as a new connection",
                                   C2S, None, ts))
                session = self._new(None, None, x)
                self._remember(session, sid)
                out.append(SessionOpened(session, ts))
            elif session.closed:
                out.append(Anomaly("gateway.session.after_close",
                                   f"SessionID={sid} used after the gateway closed it", C2S, None, ts))
            kind = "poll" if action == "poll" else "data"
        else:
            out.append(Anomaly("gateway.request.malformed",
                               f"a gateway request with neither Action=open nor SessionID: {x.path}", C2S, None, ts))
            out.append(RoundTrip(None, x, action or "?", None, None))
            return out

        session.round_trips += 1
        if kind == "poll":
            session.polls += 1
            if x.request_body:
                out.append(Anomaly("gateway.poll.body", f"a poll carried {len(x.request_body)} bytes",
                                   C2S, None, ts))
        if x.request_body:
            out.append(GatewayData(session, C2S, x.request_body, ts))

        next_sid = None
        if x.status is None:
            out.append(Anomaly("gateway.http.error",
                               f"no response ({x.error or 'connection closed'}); server data of this round trip is lost",
                               S2C, None, x.ts_response or ts))
            out.append(RoundTrip(session, x, kind, sid, None))
            return out
        fields = parse_messenger_header(header(x.response_headers, "X-MSN-Messenger"))
        next_sid = fields.get("SessionID")
        if x.status != 200:
            out.append(Anomaly("gateway.http.error", f"HTTP {x.status} from the gateway", S2C, None, x.ts_response))
        elif not next_sid and fields.get("Session", "").lower() != "close":
            out.append(Anomaly("gateway.header.missing",
                               "a gateway response without 'X-MSN-Messenger: SessionID=...'", S2C, None, x.ts_response))
        if next_sid:
            self._remember(session, next_sid)
        if fields.get("GW-IP"):
            session.gw_ip = fields["GW-IP"]
        if x.status == 200 and x.response_body:
            out.append(GatewayData(session, S2C, x.response_body, x.ts_response))
        out.append(RoundTrip(session, x, kind, sid, next_sid))
        if fields.get("Session", "").lower() == "close" and not session.closed:
            session.closed = True
            out.append(SessionClosed(session, x.ts_response, "Session=close"))
        return out

    def _new(self, server_type, target, x: HttpExchange) -> GatewaySession:
        self.opened += 1
        session = GatewaySession(self.opened, server_type, target, x.host, x.client)
        self.sessions.append(session)
        return session

    def _remember(self, session: GatewaySession, sid: str) -> None:
        if sid not in session.session_ids:
            session.session_ids.append(sid)
            if len(session.session_ids) > IDS_PER_SESSION:
                del session.session_ids[0]
        self._by_id[sid] = session
        self._by_id.move_to_end(sid)
        if len(self._by_id) > MAX_SESSION_IDS:   # a mitm run of days: the oldest ids are forgotten
            self._by_id.popitem(last=False)


def round_trip_record(rt: RoundTrip, redactor=None) -> dict:
    """The `http` JSON Lines record of one gateway round trip."""
    x = rt.exchange
    latency = None
    if x.ts_request is not None and x.ts_response is not None:
        latency = round((x.ts_response - x.ts_request) * 1000, 3)
    return {"kind": "http", "via": "gateway", "action": rt.action, "method": x.method,
            "url": x.url, "status": x.status, "ts": x.ts_request, "ts_end": x.ts_response,
            "latency_ms": latency, "session_id": rt.session_id, "next_session_id": rt.next_session_id,
            "bytes": {"c2s": len(x.request_body), "s2c": len(x.response_body)}}


class GatewayFeeder:
    """Feeds gateway sessions into an `Analysis`, one `Connection` per session."""

    def __init__(self, analysis) -> None:
        self.analysis = analysis
        self.decoder = GatewayDecoder()
        self.connections: dict[int, object] = {}   # session number -> Connection
        self.exchanges = 0

    def exchange(self, x: HttpExchange) -> list:
        """Handle one HTTP round trip; returns the decoder's events (empty if not the gateway)."""
        events = self.decoder.exchange(x)
        if not events:
            return events
        self.exchanges += 1
        analysis = self.analysis
        session = None
        for event in events:  # open first, so an anomaly about the request lands on its connection
            if type(event) is SessionOpened:
                s = event.session
                server = f"{s.target or '?'} via gateway {s.gateway or '?'}"
                conn_id = f"gw{s.number}"
                conn = analysis.open(client=s.client, server=server,
                                     conn_id=None if conn_id in analysis.connections else conn_id)
                if s.server_type == "SB":
                    conn.role = "SB"
                self.connections[s.number] = conn
            if getattr(event, "session", None) is not None:
                session = event.session
        here = self.connections.get(session.number) if session is not None else None
        for event in events:
            kind = type(event)
            if kind is GatewayData:
                conn = self.connections.get(event.session.number)
                if conn is not None:
                    analysis.feed(conn, event.direction, event.data, event.ts)
            elif kind is RoundTrip:
                analysis.record(here, round_trip_record(event))
            elif kind is SessionClosed:
                # Forgotten once closed: a long mitm run holds only its open sessions.
                conn = self.connections.pop(event.session.number, None)
                if conn is not None:
                    analysis.close(conn, event.ts)
            elif kind is Anomaly:
                analysis.anomaly(here, event)
        return events
