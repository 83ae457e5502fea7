"""mime: MSG payloads as MIME (headers, charset, body) and what each kind of message means.

Decodes every `MSG` payload: the headers, the charset and the body, and then
by content type: chat text with its `X-MMS-IM-Format` font and colour, typing
notifications (`text/x-msmsgscontrol`), old-style invitations
(`text/x-msmsgsinvite`, file transfer included), the profile the NS sends at
login (`text/x-msmsgsprofile`, MSPAuth redacted) and e-mail notifications.
Counts the kinds seen (report section) and flags payloads that are not MIME.
`parse_mime` and `classify` are used by the chat plugin too.
"""

from __future__ import annotations

from collections import Counter
from urllib.parse import unquote

from analyzer.analysis.redact import MIME_SECRET_HEADERS
from analyzer.plugins import DecodedView, Plugin, section, section_table

# The one table of secrets (analyzer.analysis.redact); the redactor compares names case-insensitively.
SECRET_HEADERS = MIME_SECRET_HEADERS

# Application-GUIDs of old-style (text/x-msmsgsinvite) invitations.
INVITE_APPS = {
    "{5D3E02AB-6190-11D3-BBBB-00C04F795683}": "file transfer",
    "{44BBA842-CC51-11CF-AAFA-00AA00B6015C}": "NetMeeting",
}

EFFECTS = {"B": "bold", "I": "italic", "U": "underline", "S": "strikethrough"}


# The kinds (`classify`, `KINDS`) are the codec's: one classification of a payload, kept with
# the parsed message, serves this plugin, chat and p2p.
from analyzer.msnp.mime import (KINDS, MimeMessage, charset_decodes, classify, parse_headers,  # noqa: F401
                                parse_mime)  # (re-exported)


def parse_font(value: str) -> list[tuple[str, str]]:
    """X-MMS-IM-Format: FN (font, URL-encoded), EF (effects), CO (colour, BGR hex), CS, PF, RL."""
    items = {}
    for part in value.split(";"):
        key, _, val = part.strip().partition("=")
        if key:
            items[key.strip().upper()] = val.strip()
    out = []
    if "FN" in items:
        out.append(("font", unquote(items["FN"])))
    if "EF" in items:
        effects = [EFFECTS.get(c, c) for c in items["EF"].upper() if c.strip()]
        out.append(("effects", ", ".join(effects) or "none"))
    if "CO" in items:
        try:
            bgr = int(items["CO"] or "0", 16)
            out.append(("colour", f"#{bgr & 0xFF:02x}{(bgr >> 8) & 0xFF:02x}{(bgr >> 16) & 0xFF:02x}"))
        except ValueError:
            out.append(("colour", f"unreadable {items['CO']!r}"))
    if "CS" in items:
        out.append(("font charset", items["CS"]))
    if "PF" in items:
        out.append(("pitch and family", items["PF"]))
    if items.get("RL") == "1":
        out.append(("direction", "right to left"))
    return out


def _shown(text: str, limit: int = 2000) -> str:
    return text if len(text) <= limit else text[:limit] + f"... ({len(text) - limit} more characters)"


def describe(msg: MimeMessage, kind: str) -> DecodedView:
    """A DecodedView of one MSG payload."""
    fields = [(k or "(no name)", v) for k, v in msg.headers]
    view = DecodedView(f"MSG {msg.content_type or '(no content type)'}: {kind}", fields,
                       secrets=SECRET_HEADERS, priority=10)
    if kind == "text":
        view.fields.append(("charset", msg.charset))
        fmt = msg.header("X-MMS-IM-Format")
        if fmt:
            view.children.append(DecodedView("format", parse_font(fmt)))
        view.body = _shown(msg.text())
    elif kind == "typing":
        view.fields.append(("typing", msg.header("TypingUser") or "?"))
    elif kind in ("invitation", "email", "profile"):
        inner = parse_headers(msg.body)
        title = kind
        if kind == "invitation":
            guid = (dict((k.lower(), v) for k, v in inner).get("application-guid") or "").upper()
            command = dict((k.lower(), v) for k, v in inner).get("invitation-command", "?")
            app = INVITE_APPS.get(guid) or dict((k.lower(), v) for k, v in inner).get("application-name", "?")
            title = f"invitation {command}: {app}"
        if inner:
            view.children.append(DecodedView(title, [(k or "(no name)", v) for k, v in inner],
                                             secrets=SECRET_HEADERS))
    elif kind in ("other", "control", "datacast", "emoticon", "clientcaps", "system"):
        if msg.body:
            view.body = _shown(msg.text())
    return view


MAX_TYPES = 1000  # distinct content types counted one by one; the rest together
MAX_KNOWN_CHARSETS = 256  # charset names Python knows, remembered so as not to look each one up again
_KNOWN_CHARSETS: set[str] = set()
OTHER_TYPES = f"(other: past {MAX_TYPES} distinct types)"


class MimePlugin(Plugin):
    name = "mime"
    version = "1.0"
    description = "MSG payloads as MIME: headers, charset, body; fonts, typing, invitations, profile, e-mail"
    commands = frozenset({"MSG"})
    anomalies = {
        "not_mime": ("warning", "a MSG payload without MIME headers (no blank line, no Content-Type)"),
        "bad_charset": ("info", "a MSG payload declares a charset Python does not decode text in; shown as UTF-8"),
    }

    def __init__(self) -> None:
        self.kinds: Counter[str] = Counter()  # a fixed set of kinds
        self.types: Counter[str] = Counter()

    def decode(self, cmd, conn):
        if cmd.cmd != "MSG" or not cmd.payload:
            return None
        msg = parse_mime(cmd.payload)
        return describe(msg, classify(msg))

    def on_command(self, conn, cmd) -> None:
        if cmd.cmd != "MSG" or cmd.payload is None:
            return
        msg = parse_mime(cmd.payload)
        kind = msg.kind
        self.kinds[kind] += 1
        types = self.types
        ctype = msg.content_type or "(none)"
        if ctype in types or len(types) < MAX_TYPES:
            types[ctype] += 1
        else:  # content types come off the wire: a crafted run of unique ones must not grow this
            types[OTHER_TYPES] += 1
        if kind == "malformed":
            self.report(conn, "not_mime", f"{len(cmd.payload)}-byte MSG payload without MIME headers", cmd)
        else:
            charset = msg.params.get("charset")
            if charset is not None and charset not in _KNOWN_CHARSETS:
                if not charset_decodes(charset):
                    self.report(conn, "bad_charset", f"charset {charset!r}", cmd)
                elif len(_KNOWN_CHARSETS) < MAX_KNOWN_CHARSETS:  # names off the wire: bounded
                    _KNOWN_CHARSETS.add(charset)

    def html_sections(self) -> list[dict]:
        if not self.kinds:
            return []
        return [section("MSG payloads by kind", ["kind", "count"],
                        [[k, n] for k, n in self.kinds.most_common()]),
                section("MSG payloads by content type", ["content type", "count"],
                        [[t, n] for t, n in self.types.most_common()])]

    def terminal_sections(self) -> list:
        return [section_table(s) for s in self.html_sections()[:1]]
