"""Redaction of secrets seen on the wire, for every export (JSON Lines, HTML, -v, the live view).

One table says what is secret (below: COMMAND_SECRETS, PAYLOAD_SECRETS,
MIME_SECRET_HEADERS, HTTP_COOKIE_HEADERS, FREE_TEXT_SECRETS); every output asks
a `Redactor`, which applies it:

- `params(cmd)`: the parameters of a command, the secret ones masked
  (COMMAND_SECRETS: by command, direction and the words before the secret).
- `payload(cmd)`: a payload as shown raw (JSON `payload`, the HTML payload
  pane): a QRY answer whole, MIME header lines by name (MIME_SECRET_HEADERS,
  anywhere in the payload: a file-transfer invitation carries its AuthCookie
  in the body), and the free-text secrets. A chat or typing message
  (`text/plain`, `text/x-msmsgscontrol`) has only its header block checked:
  its body is what a user typed.
- `detail(anomaly)`: an anomaly's detail; the raw bytes some of them quote
  (`msnp.line.truncated`, `msnp.line.garbage`, `msnp.line.too_long`, ...)
  are redacted as a command line would be, even when the line is cut short.
- `field(name, value)`: one named value of a decoded view (a plugin's MIME
  header, a body): masked whole when the name is secret, else free text.
- `header(name, value)`: one HTTP header (the mitm layer's `http` and `login`
  records): cookie values, and the free-text secrets in every other header.
- `text(raw)`: free text (URLs, HTTP and SOAP bodies): FREE_TEXT_SECRETS.

Names are compared case-insensitively wherever the protocol does (MIME and
HTTP header names, form fields, SOAP element names) and also for MSNP command
codes and the words of a rule (`usr 4 md5 s ...` was seen accepted by servers).

Each secret becomes `<redacted:XXXXXXXX>`, the first 8 hex digits of an
HMAC-SHA256 of the secret's exact bytes under a key chosen per run, so the
same cookie still matches across lines (the XFR that hands it out and the
USR that presents it; a Passport ticket in the `login` record and on the NS
line) without being recoverable. `Redactor(enabled=False)` (`--no-redact`)
changes nothing.

A `--record` pcapng is the raw wire and is not redacted (README, "Secrets").
"""

from __future__ import annotations

import ast
import hmac
import os
import re
from dataclasses import dataclass

from analyzer.msnp import C2S, S2C, Command

# -- the table ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ParamRule:
    """Parameters of one command that are secret.

    Parameters are counted after the TrID. `words` are conditions
    (index, allowed words in upper case, negate): all must hold. The secret is
    parameter `first` (and every one after it when `to_end`). On a line cut
    short (an anomaly quoting it) whatever is there from `first` on is masked.
    """

    cmd: str
    direction: str
    words: tuple[tuple[int, frozenset[bytes], bool], ...]
    first: int
    to_end: bool
    what: str


AUTH_METHODS = frozenset({b"MD5", b"TWN", b"SSO", b"SHA"})

COMMAND_SECRETS: tuple[ParamRule, ...] = (
    ParamRule("USR", C2S, ((0, AUTH_METHODS, False), (1, frozenset({b"S", b"A"}), False)), 2, True,
              "MD5 answer (MD5 S), Passport ticket (TWN S), SSO ticket and response (SSO S), "
              "MSNP18 SHA ticket (SHA A)"),
    ParamRule("USR", C2S, ((0, AUTH_METHODS | frozenset({b"OK"}), True),), 1, False,
              "switchboard login: the cookie after the handle"),
    ParamRule("ANS", C2S, (), 1, False, "switchboard answer: the cookie after the handle"),
    ParamRule("XFR", S2C, ((0, frozenset({b"SB"}), False), (2, frozenset({b"CKI"}), False)), 3, False,
              "switchboard cookie handed out"),
    ParamRule("RNG", S2C, ((2, frozenset({b"CKI"}), False),), 3, False, "switchboard cookie of an invitation"),
)

# Codes whose first parameter is never a TrID, even when it is a number and the reader left
# it among the parameters (RNG's first parameter is the session id).
UNNUMBERED = frozenset({"RNG"})

# Payloads masked whole: (command, direction).
PAYLOAD_SECRETS = frozenset({("QRY", C2S)})  # the MD5 answer to a CHL challenge

# MIME header lines (MSG payloads: profile, file-transfer invitation, MSNSLP bodies), by name,
# value to the line end. `nonce` authenticates an MSNSLP direct connection as AuthCookie does MSNFTP.
MIME_SECRET_HEADERS = frozenset({"mspauth", "mspprof", "authcookie", "sid", "kv", "nonce"})

# HTTP headers whose every cookie value is secret.
HTTP_COOKIE_HEADERS = frozenset({"cookie", "set-cookie"})

# Free text (URLs, HTTP headers and bodies, payloads, anomaly details): what marks a secret.
FREE_TEXT_SECRETS = (
    "Passport ticket fields t= and p= (to the next &, quote, white space or <)",
    "from-PP='...' in Authentication-Info (the whole quoted ticket)",
    "pwd=, passwd=, password= (to the next Passport1.4 field, &, or the line end)",
    "SOAP elements Password, BinarySecret, BinarySecurityToken, CipherValue (their text)",
    "MIME header lines named in MIME_SECRET_HEADERS",
)

# -- the rules as code -----------------------------------------------------------

_RULES: dict[str, tuple[ParamRule, ...]] = {}
for _rule in COMMAND_SECRETS:
    _RULES[_rule.cmd] = _RULES.get(_rule.cmd, ()) + (_rule,)
SECRET_COMMANDS = frozenset(_RULES) | frozenset(c for c, _ in PAYLOAD_SECRETS)

_PASSPORT_FIELDS = (r"OrgVerb|OrgURL|sign-in|pwd|lc|id|tw|fs|ru|ct|kpp|kv|ver|tpf|da-status|from-PP|tname|"
                    r"srealm|cbtxt|prompt|rver|rn")
_MIME_NAMES = "|".join(sorted(MIME_SECRET_HEADERS))
# The free-text secrets, one pattern each (group 2 is the secret), each run only when the
# lower-cased text holds its trigger (`_needed`): one alternation of them all cost 40 us on
# every chat message. A match right after a letter, digit, `_` or `-` is part of a longer
# name (`charset=`) and is left alone (`_free` checks the byte before it).
_FROM_PP = re.compile(rb"(from-PP\s*=\s*['\"])(.*?)(?=['\"])", re.IGNORECASE | re.DOTALL)
_PASSWORD = re.compile(rb"((?:pwd|passwd|password)=)(.*?)(?=,\s*(?:" + _PASSPORT_FIELDS.encode()
                       + rb")=|[&\r\n]|$)", re.IGNORECASE | re.MULTILINE)
_TICKET_FIELD = re.compile(rb"([tTpP]=)([^&'\"\s<]+)")
_SOAP_RULE = re.compile(rb"(<(?:[\w.-]+:)?(?:Password|BinarySecret|BinarySecurityToken|CipherValue)\b[^>]*>)([^<]+)",
                        re.IGNORECASE)
_SOAP_OPEN = re.compile(rb"<(?:[\w.-]+:)?(?:Password|BinarySecret|BinarySecurityToken|CipherValue)\b", re.IGNORECASE)
_SOAP_VALUE = re.compile(rb"[^<]+")


class _SoapRule:
    """`_SOAP_RULE.sub`, in time linear in the text: the regex tried at every secret tag's start
    scans to the next `>`, so thousands of unclosed `<Password` tags before one `>` (or none)
    cost their count squared (10,000 took 5 s). Here each tag start finds the next `>` once
    (remembered for the starts before it) and the regex runs only over a match's own span,
    so the matches and replacements are exactly the rule's."""

    pattern = _SOAP_RULE.pattern

    @staticmethod
    def sub(repl, text: bytes) -> bytes:
        out, last, pos, gt = [], 0, 0, -1
        while True:
            m = _SOAP_OPEN.search(text, pos)
            if m is None:
                break
            if gt < m.end():
                gt = text.find(b">", m.end())
                if gt < 0:
                    break   # no `>` after this start: none after any later one either
            value = _SOAP_VALUE.match(text, gt + 1)
            if value is None:
                pos = m.start() + 1
                continue
            whole = _SOAP_RULE.match(text, m.start(), value.end())
            out.append(text[last:m.start()])
            out.append(repl(whole))
            last = pos = value.end()
        if not out:
            return text
        out.append(text[last:])
        return b"".join(out)


_SOAP = _SoapRule()
_MIME_LINE = re.compile(rb"(^[ \t]*(?:" + _MIME_NAMES.encode() + rb")[ \t]*:[ \t]*)([^\r\n]+)",
                        re.IGNORECASE | re.MULTILINE)
_CHAT_HEADS = (b"MIME-Version: 1.0\r\nContent-Type: text/plain", b"MIME-Version: 1.0\r\nContent-Type: text/x-msmsgscontrol")
# The same names at a line start, on lower-cased text without IGNORECASE: a quick gate.
_MIME_GATE = re.compile(rb"\n[ \t]*(?:" + _MIME_NAMES.encode() + rb")[ \t]*:")


def _needed(low: bytes) -> list:
    """The free-text patterns that may match `low` (the text, lower-cased), cheapest checks first.

    The compiled core copies these gates, `Redactor.payload`'s chat-head test and the
    `_MIME_LINE` and `_TICKET_FIELD` substitutions (core/src/redact.rs `redact_payload`;
    a payload another rule may apply to is left to this module); change them together
    (tests/outputs/test_jsonl_core.py holds the two writers equal)."""
    rules = []
    if _MIME_GATE.search(low) or _MIME_GATE.match(b"\n" + low[:16]):
        rules.append(_MIME_LINE)
    if b"=" in low:
        if b"from-pp" in low:
            rules.append(_FROM_PP)
        if b"pwd=" in low or b"passw" in low:
            rules.append(_PASSWORD)
        # Every chat message says `charset=`: only more t= than that, or a p=, can be a ticket.
        if b"p=" in low or low.count(b"t=") > low.count(b"charset="):
            rules.append(_TICKET_FIELD)
    if b"<" in low and (b"password" in low or b"binarys" in low or b"ciphervalue" in low):
        rules.append(_SOAP)
    return rules


MASKS_KEPT = 1024   # masks remembered (Redactor.mask): bounded, the secrets come off the wire
_NAME_BYTES = frozenset(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-")
_COOKIE_VALUE = re.compile(rb"(^|;\s*)([^=;\s]+=)([^;]*)")
_BYTES_LITERAL = re.compile(r"""b'(?:[^'\\]|\\.)*'|b"(?:[^"\\]|\\.)*\"""")
_TRID = re.compile(rb"^\d+$")


class Redactor:
    def __init__(self, enabled: bool = True, key: bytes | None = None) -> None:
        self.enabled = enabled
        self.key = key if key is not None else os.urandom(16)
        # secret -> its mask, for the few most recent: a switchboard cookie or a ticket is
        # masked in each line that carries it (XFR then USR, RNG then ANS) and in its link record.
        self._masks: dict[bytes, str] = {}

    def mask(self, secret: bytes) -> str:
        masks = self._masks
        text = masks.get(secret)
        if text is None:
            digest = hmac.digest(self.key, secret, "sha256").hex()[:8]   # one call: hmac.new(...).hexdigest()
            text = f"<redacted:{digest}>"
            if len(masks) >= MASKS_KEPT:
                masks.clear()
            masks[secret] = text
        return text

    def core_table(self) -> tuple | None:
        """This redactor's key and the table as the compiled core's JSON formatter takes them
        (`JsonFormatter(..., masks=)`; core/src/redact.rs applies them as `params` and
        `payload` do, and leaves to Python a payload the free-text rules it does not copy may
        change): `(key, rules, payload_secrets, unnumbered, mime_headers)`, the rules as
        `(code, direction, [(index, [word], negate)], first, to_end)`, the MIME header names
        sorted as `_MIME_LINE` tries them. None when the core must
        not mask for this redactor (disabled, a subclass: its masks are its own, or a key
        that is not bytes)."""
        if not self.enabled or type(self) is not Redactor or type(self.key) is not bytes:
            return None
        rules = [(r.cmd, r.direction, [(i, sorted(words), negate) for i, words, negate in r.words], r.first, r.to_end)
                 for r in COMMAND_SECRETS]
        return self.key, rules, sorted(PAYLOAD_SECRETS), sorted(UNNUMBERED), sorted(MIME_SECRET_HEADERS)

    # -- MSNP command lines ---------------------------------------------------------

    def secret_params(self, cmd: Command) -> set[int]:
        """Indexes (into cmd.params) that hold secrets."""
        if not self.enabled:
            return set()
        rules = _RULES.get(cmd.cmd) or _RULES.get(cmd.cmd.upper())
        if rules is None:
            return set()
        params = cmd.raw_params
        if cmd.trid is None and params and _TRID.match(params[0]) and cmd.cmd.upper() not in UNNUMBERED:
            # A code the reader does not know (`usr`) keeps its TrID among the parameters.
            return {i + 1 for i in _secret_indexes(rules, cmd.direction, params[1:], partial=False)}
        return _secret_indexes(rules, cmd.direction, params, partial=False)

    def params(self, cmd: Command, decoded: bool = False) -> list[str]:
        shown = cmd.decoded_params() if decoded else cmd.params
        if cmd.cmd in SECRET_COMMANDS or (not cmd.cmd.isupper() and cmd.cmd.upper() in SECRET_COMMANDS):
            for i in self.secret_params(cmd):
                shown[i] = self.mask(cmd.raw_params[i])
        return shown

    def payload(self, cmd: Command) -> bytes | None:
        payload = cmd.payload
        if payload is None or not self.enabled:
            return payload
        if (cmd.cmd.upper(), cmd.direction) in PAYLOAD_SECRETS:
            return self.mask(payload).encode()
        if payload.startswith(_CHAT_HEADS):
            # A chat or typing message (most payloads): its body is what a user typed, not a
            # protocol field; only its header block is looked at, and that in one search.
            end = payload.find(b"\r\n\r\n")
            head = payload if end < 0 else payload[:end + 2]
            if _MIME_GATE.search(head.lower()) is None:
                return payload
            return _MIME_LINE.sub(self._free, head) + payload[len(head):]
        return self.text(payload)

    def line(self, raw: bytes, direction: str | None) -> bytes:
        """A (possibly cut) line as quoted raw: the secret parameters of the command in it masked.

        The command is looked for at every token (garbage may come before it); the
        rest goes through the free-text rules.
        """
        if not self.enabled:
            return raw
        tokens = list(re.finditer(rb"[^ \t\r\n]+", raw))
        out, last = [], 0
        for i, tok in enumerate(tokens):
            code = tok.group().upper().decode("latin-1")
            rules = _RULES.get(code)
            if rules is None:
                continue
            rest = tokens[i + 1:]
            if rest and _TRID.match(rest[0].group()) and code not in UNNUMBERED:
                rest = rest[1:]
            directions = (direction,) if direction in (C2S, S2C) else (C2S, S2C)
            hit: set[int] = set()
            for d in directions:
                hit |= _secret_indexes(rules, d, [t.group() for t in rest], partial=True)
            for j in sorted(hit):
                t = rest[j]
                out.append(raw[last:t.start()])
                out.append(self.mask(t.group()).encode())
                last = t.end()
        out.append(raw[last:])
        return self.text(b"".join(out))

    def detail(self, anomaly) -> str:
        """An anomaly's detail with the secrets in it (the raw bytes it quotes too) masked."""
        detail = anomaly.detail
        if not self.enabled or not detail:
            return detail
        if "b'" in detail or 'b"' in detail:
            def sub(m: re.Match) -> str:
                try:
                    raw = ast.literal_eval(m.group())
                except (ValueError, SyntaxError):
                    return m.group()
                return repr(self.line(raw, anomaly.direction))
            detail = _BYTES_LITERAL.sub(sub, detail)
        return self.text_str(detail)

    # -- free text, decoded views, HTTP ----------------------------------------------

    def text(self, raw: bytes) -> bytes:
        """Tickets, passwords and secret header lines inside free text (FREE_TEXT_SECRETS)."""
        if not self.enabled or not raw:
            return raw
        out = raw
        for pattern in _needed(raw.lower()):
            out = pattern.sub(self._free, out)
        return out

    def text_str(self, text: str) -> str:
        """`text` for a str (any code point, lone surrogates included)."""
        if not self.enabled:
            return text
        raw = text.encode("utf-8", "surrogatepass")
        out = self.text(raw)
        return text if out is raw else out.decode("utf-8", "surrogatepass")

    def _free(self, m: re.Match) -> bytes:
        start = m.start()
        if start and m.string[start - 1] in _NAME_BYTES and not m.group(1)[:1] in b"< \t":
            return m.group()  # inside a longer name: `charset=`, `xpwd=`
        secret = m.group(2)
        if not secret or secret.startswith(b"<redacted:"):
            return m.group()
        return m.group(1) + self.mask(secret).encode()

    def field(self, name: str, value: str) -> str:
        """One named value of a decoded view: masked whole when its name is secret."""
        if not self.enabled:
            return value
        if name.strip().lower() in MIME_SECRET_HEADERS:
            return self.mask(value.encode("utf-8", "surrogatepass"))
        return self.text_str(value)

    def header(self, name: str, value: str) -> str:
        """One HTTP header's value with its secrets masked (passwords, tickets, cookie values)."""
        if not self.enabled:
            return value
        raw = value.encode("utf-8", "surrogatepass")
        if name.lower() in HTTP_COOKIE_HEADERS:
            raw = _COOKIE_VALUE.sub(lambda m: m.group(1) + m.group(2) + self.mask(m.group(3)).encode(), raw)
        else:
            raw = self.text(raw)
        return raw.decode("utf-8", "surrogatepass")


def _secret_indexes(rules, direction: str, params: list[bytes], partial: bool) -> set[int]:
    n = len(params)
    for rule in rules:
        if rule.direction != direction:
            continue
        ok = True
        for index, words, negate in rule.words:
            if index >= n:
                ok = False
                break
            if (params[index].upper() in words) == negate:
                ok = False
                break
        if not ok or (rule.first >= n):
            continue
        if rule.to_end:
            return set(range(rule.first, n))
        return {rule.first}
    return set()
