"""Redaction of secrets seen on the wire, for every export (JSON Lines, HTML, -v).

Secrets: MD5 answers (`USR .. MD5 S`, `QRY` payloads), Passport/SSO tickets
(`USR .. TWN S t=..`, `USR .. SSO S ..`), `MSPAuth` in profile messages,
switchboard cookies (`XFR .. SB .. CKI c`, `RNG .. CKI c`, SB `USR`/`ANS`).
Each is replaced by `<redacted:XXXXXXXX>`, an HMAC of the secret under a key
chosen per run, so the same cookie still matches across lines (the XFR that
hands it out and the USR that presents it) without being recoverable.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re

from analyzer.msnp import C2S, Command

AUTH_METHODS = (b"MD5", b"TWN", b"SSO")
_SECRET_CODES = frozenset({"USR", "ANS", "XFR", "RNG"})  # the commands secret_params looks at
_MSPAUTH = re.compile(rb"(MSPAuth:\s*)([^\r\n]+)")
_TICKET = re.compile(rb"(\bt=)([^&\s]+)|(\bp=)([^&\s]+)")
# Passwords and tokens of HTTPS logins: `pwd=` in a Passport1.4 Authorization
# header, and the SOAP elements of an RST request and its answer.
_PWD = re.compile(rb"(\bpwd=)([^,&\s]+)")
_SOAP_SECRET = re.compile(
    rb"(<(?:\w+:)?(?:Password|BinarySecret|BinarySecurityToken|CipherValue)\b[^>]*>)([^<]+)(<)")
# In Passport1.4 header fields the values end at a comma or a closing quote.
_HEADER_TICKET = re.compile(rb"(\b[tp]=)([^&\s,']+)")
_COOKIE_VALUE = re.compile(rb"(^|;\s*)([^=;\s]+=)([^;]*)")


class Redactor:
    def __init__(self, enabled: bool = True, key: bytes | None = None) -> None:
        self.enabled = enabled
        self.key = key if key is not None else os.urandom(16)

    def mask(self, secret: bytes) -> str:
        digest = hmac.new(self.key, secret, hashlib.sha256).hexdigest()[:8]
        return f"<redacted:{digest}>"

    def secret_params(self, cmd: Command) -> set[int]:
        """Indexes (into cmd.params) that hold secrets."""
        if not self.enabled:
            return set()
        params = cmd.raw_params
        code = cmd.cmd
        n = len(params)
        if cmd.direction == C2S:
            if code == "USR" and n >= 3 and params[0] in AUTH_METHODS and params[1] == b"S":
                return set(range(2, n))
            if code == "USR" and n >= 2 and params[0] not in AUTH_METHODS:
                return {1}  # SB login: handle cookie
            if code == "ANS" and n >= 2:
                return {1}
        else:
            if code == "XFR" and n >= 4 and params[0] == b"SB" and params[2] == b"CKI":
                return {3}
            if code == "RNG" and n >= 4 and params[2] == b"CKI":
                return {3}
        return set()

    def params(self, cmd: Command, decoded: bool = False) -> list[str]:
        shown = cmd.decoded_params() if decoded else cmd.params
        if cmd.cmd in _SECRET_CODES:  # (secret_params finds nothing in any other command)
            for i in self.secret_params(cmd):
                shown[i] = self.mask(cmd.raw_params[i])
        return shown

    def payload(self, cmd: Command) -> bytes | None:
        payload = cmd.payload
        if payload is None or not self.enabled:
            return payload
        if cmd.cmd == "QRY" and cmd.direction == C2S:
            return self.mask(payload).encode()
        if payload.find(b"MSPAuth") >= 0:  # not `in`: see CommandReader._parse
            payload = _MSPAUTH.sub(lambda m: m.group(1) + self.mask(m.group(2)).encode(), payload)
        return payload

    def text(self, raw: bytes) -> bytes:
        """Tickets and passwords inside free text (HTTP headers and bodies of Passport and RST logins)."""
        if not self.enabled:
            return raw
        raw = _SOAP_SECRET.sub(lambda m: m.group(1) + self.mask(m.group(2)).encode() + m.group(3), raw)
        raw = _PWD.sub(lambda m: m.group(1) + self.mask(m.group(2)).encode(), raw)
        return _TICKET.sub(lambda m: (m.group(1) or m.group(3)) + self.mask(m.group(2) or m.group(4)).encode(), raw)

    def header(self, name: str, value: str) -> str:
        """One HTTP header's value with its secrets masked (passwords, tickets, cookie values)."""
        if not self.enabled:
            return value
        raw = value.encode("utf-8", "surrogateescape")
        lname = name.lower()
        if lname in ("cookie", "set-cookie"):
            raw = _COOKIE_VALUE.sub(lambda m: m.group(1) + m.group(2) + self.mask(m.group(3)).encode(), raw)
        else:
            raw = _PWD.sub(lambda m: m.group(1) + self.mask(m.group(2)).encode(), raw)
            raw = _HEADER_TICKET.sub(lambda m: m.group(1) + self.mask(m.group(2)).encode(), raw)
        return raw.decode("utf-8", "surrogateescape")
