"""What a line means: the fields of the lines that tie connections and people together.

Each rule here is written once and read by every consumer (linking, the
connection's role and handle, flow detection, the proxy's rewriter, the
mitmproxy login linker, plugins); nobody else counts token positions.

- `parse_address(text)`: `host:port`, `[v6]:port`, or a bare host (port 1863)
  into an `Address`; None for anything else (no port, a port outside 1-65535,
  an unbracketed IPv6 address with a port, garbage). `host_of` is its host.
- `parse_endpoint(token)`: `handle` or MSNP16+ `handle;{machine-guid}` (one
  person, several places) into an `Endpoint`.
- `referral(cmd)` / `referral_fields(code, params)`: a server's `XFR trid NS
  host:port ...`, `XFR trid SB host:port CKI cookie ...` or `RNG sessid
  host:port CKI cookie inviter nick ...` into a `Referral`; None for any other
  line or one too short to hold its target.
- `login(cmd)`: the fields of a `USR` or `ANS` line, either direction, into a
  `Login` (the NS's `USR trid MD5|TWN|SSO I|S value`, the switchboard's
  `USR trid handle cookie` and `ANS trid handle cookie sessid`, the server's
  `USR trid OK handle nick ...`); None for any other line.
- `arrival(cmd)`: a switchboard's `IRO` or `JOI` into an `Arrival`; `sender(cmd)`:
  who a server's `MSG sender nick length` names (`Hotmail`: the service itself).

Pure functions of bytes: no I/O, never raise on input. Text fields are
decoded as the events module does (UTF-8, anything else as \\xNN).
"""

from __future__ import annotations

from dataclasses import dataclass
from sys import intern
from typing import NamedTuple
from urllib.parse import unquote_to_bytes

from analyzer.msnp.events import C2S, Command, _text

DEFAULT_PORT = 1863
AUTH_METHODS = frozenset({b"MD5", b"TWN", b"SSO"})


# -- host:port ------------------------------------------------------------------

class Address(NamedTuple):  # a tuple: `socket.connect(address)` and `host, port = address` work
    host: str            # a name or an IP address, IPv6 without brackets
    port: int

    def __str__(self) -> str:
        return format_address(self.host, self.port)


def format_address(host: str, port: int) -> str:
    """`host:port`, with an IPv6 address in brackets (as in URLs)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def parse_address(text: str | bytes) -> Address | None:
    """`host:port` (or `[v6]:port`, or a bare host meaning port 1863), else None."""
    if isinstance(text, bytes):
        text = _text(text)
    if not text:
        return None
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or not host:
            return None
        if not rest:
            return Address(host, DEFAULT_PORT)
        if not rest.startswith(":") or not rest[1:].isdigit() or not rest[1:].isascii():
            return None
        port = int(rest[1:])
    else:
        host, sep, port_text = text.rpartition(":")
        if not sep:
            host, port_text = text, str(DEFAULT_PORT)
        if not host or not port_text.isdigit() or not port_text.isascii() or ":" in host:
            return None
        port = int(port_text)
    if not 0 < port < 65536:
        return None
    return Address(_share(_HOSTS, host, str), port)


def host_of(text: str | None) -> str | None:
    """The host of a `host:port` or `[v6]:port` text; the text itself when it is not one."""
    if not text:
        return None
    address = parse_address(text)
    return text if address is None else address.host


# -- handle;{guid} ----------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Endpoint:
    text: str              # as on the wire: 'bob@x' or 'bob@x;{guid}'
    handle: str            # the person: 'bob@x'
    guid: str | None       # the place: '{guid}', None before MSNP16


def parse_endpoint(token: bytes) -> Endpoint:
    # Interned: one user's handle is kept by the connection, linking's participants and the
    # chat plugin, on every connection of its login; one string serves them all (interned
    # strings are freed when the last holder lets go).
    handle, sep, guid = token.partition(b";")
    text = intern(_text(token))
    return Endpoint(text, intern(_text(handle)) if sep else text, _text(guid) if sep else None)


def handle_of(token: bytes) -> str:
    """The person of a `handle` or `handle;{guid}` token."""
    return intern(_text(token.partition(b";")[0]))


def nick_text(raw: bytes) -> str:
    """A friendly name as sent (URL-encoded UTF-8) as text."""
    return _share(_NICKS, raw, _nick)


def _nick(raw: bytes) -> str:
    return _text(unquote_to_bytes(raw))


# -- one string for equal short tokens ------------------------------------------------

SHARED_TEXTS = 1024   # texts remembered per table (see _share); the table starts again past that
SHARED_LENGTH = 256   # longer tokens are not remembered

_NICKS: dict[bytes, str] = {}     # nick token -> its text
_TARGETS: dict[bytes, str] = {}   # XFR/RNG host:port token -> its text
_HOSTS: dict[str, str] = {}       # a host of parse_address -> that text


def _share(table: dict, key, make):
    """`make(key)`, the same string object for equal keys: a user's nick, a switchboard
    server's address and host are kept by linking on each of thousands of connections open
    at once on a busy server (the same nick on every login of that user, the same address in
    every referral). Remembered in a bounded table of short tokens, not `sys.intern`ed (its
    strings are immortal on Python 3.12, and these come off the wire without bound)."""
    text = table.get(key)
    if text is None:
        text = make(key)
        if len(key) <= SHARED_LENGTH:
            if len(table) >= SHARED_TEXTS:
                table.clear()
            table[key] = text
    return text


# -- XFR / RNG --------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Referral:
    """A server line that sends the client to another server (`XFR` or `RNG`)."""
    cmd: str                        # "XFR" or "RNG"
    kind: str                       # "NS" or "SB": the kind of server it points to
    target: str                     # the host:port token as sent
    address: Address | None         # that token parsed, None when it is not a host:port
    index: int                      # position of the target among the line's parameters
    auth: bytes | None = None       # the authentication method named ("CKI")
    cookie: bytes | None = None     # the CKI cookie the client presents to the switchboard
    sessid: str | None = None       # RNG: the session id the client answers with
    inviter: Endpoint | None = None  # RNG: who invites
    inviter_nick: bytes | None = None  # RNG: their friendly name, URL-encoded as sent


def referral_fields(code: str, params: list[bytes]) -> Referral | None:
    """`params` are the tokens after the TrID (XFR) or after the code (RNG, which has none)."""
    n = len(params)
    if code == "XFR":
        if n < 2 or params[0] not in (b"NS", b"SB"):
            return None
        kind, index = params[0].decode(), 1
        auth = params[2] if n >= 3 and kind == "SB" else None
        cookie = params[3] if auth == b"CKI" and n >= 4 else None
        target = _share(_TARGETS, params[1], _text)
        return Referral("XFR", kind, target, parse_address(target), index, auth, cookie)
    if code == "RNG":
        if n < 2:
            return None
        auth = params[2] if n >= 3 else None
        cookie = params[3] if auth == b"CKI" and n >= 4 else None
        target = _share(_TARGETS, params[1], _text)
        return Referral("RNG", "SB", target, parse_address(target), 1, auth, cookie,
                        sessid=_text(params[0]),
                        inviter=parse_endpoint(params[4]) if n >= 5 else None,
                        inviter_nick=params[5] if n >= 6 else None)
    return None


def referral(cmd: Command) -> Referral | None:
    """The referral a server's `XFR`/`RNG` command makes, else None."""
    if cmd.direction == C2S or cmd.cmd not in ("XFR", "RNG"):
        return None
    return referral_fields(cmd.cmd, cmd.raw_params)


# -- USR / ANS --------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Login:
    """The fields of a `USR` or `ANS` line.

    `server` is "SB" for a switchboard login (`USR trid handle cookie`, `ANS`),
    "NS" for a notification-server login step (`USR trid MD5|TWN|SSO ...`),
    None for the server's `USR trid OK ...` (either kind).
    """
    cmd: str                       # "USR" or "ANS"
    server: str | None
    method: str | None = None      # "MD5", "TWN", "SSO" (NS logins)
    stage: str | None = None       # "I" (initial), "S" (subsequent), "OK" (accepted)
    endpoint: Endpoint | None = None  # who logs in
    cookie: bytes | None = None    # SB: the CKI cookie presented
    sessid: str | None = None      # ANS: the session id answered
    value: bytes | None = None     # NS "S" stage: the challenge (server) or the answer/ticket (client)
    nick: bytes | None = None      # OK: the friendly name, URL-encoded as sent


def login(cmd: Command) -> Login | None:
    code = cmd.cmd
    if code != "USR" and code != "ANS":
        return None
    params = cmd.raw_params
    n = len(params)
    if not n:
        return None
    if cmd.direction == C2S:
        if code == "ANS":
            if n < 2:
                return None
            return Login("ANS", "SB", endpoint=parse_endpoint(params[0]), cookie=params[1],
                         sessid=_text(params[2]) if n >= 3 else None)
        if params[0] in AUTH_METHODS:
            stage = _text(params[1]) if n >= 2 else None
            return Login("USR", "NS", params[0].decode(), stage,
                         endpoint=parse_endpoint(params[2]) if stage == "I" and n >= 3 else None,
                         value=params[2] if stage == "S" and n >= 3 else None)
        if n < 2:
            return None
        return Login("USR", "SB", endpoint=parse_endpoint(params[0]), cookie=params[1])
    if code != "USR":
        return None
    if params[0] == b"OK":
        return Login("USR", None, stage="OK", endpoint=parse_endpoint(params[1]) if n >= 2 else None,
                     nick=params[2] if n >= 3 else None)
    if params[0] in AUTH_METHODS:
        stage = _text(params[1]) if n >= 2 else None
        return Login("USR", "NS", params[0].decode(), stage, value=params[2] if n >= 3 else None)
    return None


# -- IRO / JOI ----------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Arrival:
    """Someone in a switchboard: `IRO trid n total handle nick` (was there) or `JOI handle nick` (came)."""
    cmd: str
    endpoint: Endpoint
    nick: bytes | None             # URL-encoded as sent


def arrival(cmd: Command) -> Arrival | None:
    if cmd.direction == C2S:
        return None
    params = cmd.raw_params
    if cmd.cmd == "IRO":
        index = 2
    elif cmd.cmd == "JOI":
        index = 0
    else:
        return None
    if len(params) <= index:
        return None
    return Arrival(cmd.cmd, parse_endpoint(params[index]), params[index + 1] if len(params) > index + 1 else None)


# -- MSG (server to client) ------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Sender:
    """Who a server's `MSG sender nick length` names."""
    endpoint: Endpoint
    nick: bytes | None             # URL-encoded as sent
    service: bool                  # `Hotmail`: the service's own notice, not a person


def sender(cmd: Command) -> Sender | None:
    """The sender of a server's `MSG`; None for a client's `MSG trid ...` or an empty line."""
    if cmd.cmd != "MSG" or cmd.direction == C2S:
        return None
    params = cmd.raw_params
    if not params:
        return None
    endpoint = parse_endpoint(params[0])
    return Sender(endpoint, params[1] if len(params) >= 3 else None, endpoint.handle.lower() == "hotmail")


__all__ = ["Address", "Arrival", "Endpoint", "Login", "Referral", "Sender", "AUTH_METHODS", "DEFAULT_PORT",
           "arrival", "format_address", "nick_text", "sender", "handle_of", "host_of", "login", "parse_address", "parse_endpoint",
           "referral", "referral_fields"]
