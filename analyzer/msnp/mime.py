"""MSG payloads as MIME: headers, a blank line, a body (the one place that splits them).

`parse_mime(payload)` never raises: a payload without a blank line is all
headers (`separated` False); header lines without a colon are kept with an
empty name. Used by the mime, chat and p2p plugins and by the object
extraction (`analyzer.analysis.objects`).

`classify(msg)` (also `msg.kind`) names the kind of a MSG payload by its
content type. A payload is parsed and classified once for all the plugins
that look at it in turn (`parse_mime` is memoised; `kind` is worked out at
its first use and kept with the message).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property, lru_cache


KINDS = {
    "text/plain": "text",
    "text/x-msmsgscontrol": "typing",
    "text/x-msmsgsinvite": "invitation",
    "application/x-msnmsgrp2p": "p2p",
    "text/x-msmsgsprofile": "profile",
    "text/x-msmsgsinitialemailnotification": "email",
    "text/x-msmsgsemailnotification": "email",
    "text/x-msmsgsactivemailnotification": "email",
    "text/x-msmsgsinitialmdatanotification": "email",
    "text/x-msmsgsoimnotification": "email",
    "text/x-mms-emoticon": "emoticon",
    "text/x-mms-animemoticon": "emoticon",
    "text/x-msnmsgr-datacast": "datacast",
    "text/x-clientcaps": "clientcaps",
    "text/x-keepalive": "keepalive",
    "text/x-msmsgssystemmessage": "system",
}


@dataclass
class MimeMessage:
    headers: list[tuple[str, str]]
    body: bytes
    content_type: str          # lower case, without parameters ("" when absent)
    params: dict[str, str]     # content-type parameters (charset, ...)
    separated: bool            # a blank line separated headers from body

    def header(self, name: str) -> str | None:
        low = name.lower()
        for key, value in self.headers:
            if key.lower() == low:
                return value
        return None

    @cached_property
    def typing_user(self) -> str | None:
        """The `TypingUser` header (a typing notification names who types)."""
        return self.header("TypingUser")

    @cached_property
    def kind(self) -> str:
        """`classify(self)`, worked out once."""
        if not self.content_type:
            return "malformed" if not self.separated else "other"
        kind = KINDS.get(self.content_type, "other")
        if kind == "typing" and self.typing_user is None:
            return "control"
        return kind

    @property
    def charset(self) -> str:
        return self.params.get("charset", "utf-8") or "utf-8"

    def text(self) -> str:
        """The body in its charset, bad bytes replaced; as UTF-8 when the charset is not one
        Python decodes text in (see `charset_decodes`)."""
        try:
            return self.body.decode(self.charset, "replace")
        except (LookupError, ValueError):  # an unknown name, a NUL in it, a codec (idna) that cannot replace
            return self.body.decode("utf-8", "replace")


def charset_decodes(name: str) -> bool:
    """Whether Python decodes text in the charset `name` with bad bytes replaced; a payload
    in any other (unknown, not a text codec, `idna`, a name with a NUL) is shown as UTF-8."""
    try:
        b"\xff".decode(name, "replace")
    except (LookupError, ValueError):
        return False
    return True


def parse_headers(block: bytes) -> list[tuple[str, str]]:
    headers = []
    for raw in block.replace(b"\r\n", b"\n").split(b"\n"):
        if not raw.strip():
            continue
        key, sep, value = raw.partition(b":")
        if not sep:
            headers.append(("", raw.decode("utf-8", "replace").strip()))
            continue
        headers.append((key.decode("utf-8", "replace").strip(), value.decode("utf-8", "replace").strip()))
    return headers


def classify(msg: MimeMessage) -> str:
    """The kind of a MSG payload: text, typing, invitation, p2p, profile, email, ... or other
    ("malformed": no content type and no blank line; "control": a typing notification that
    names no one)."""
    return msg.kind


MEMO_BYTES = 8192   # payloads up to this size are memoised (64 of them: at most about 1 MB held)


def parse_mime(payload: bytes) -> MimeMessage:
    """Split a MSG payload into headers and body (never raises).

    Memoised: the mime, chat and p2p plugins all look at the same payload in
    turn; callers must treat the result as read-only. A payload larger than
    MEMO_BYTES (rare: a client cuts its MSGs at about 1,600 bytes) is parsed each
    time, so that the memo never holds 64 payloads of the 1 MiB --max-payload allows.
    """
    if len(payload) > MEMO_BYTES:
        return _parse_mime(payload)
    return _parse_small(payload)


def _parse_mime(payload: bytes) -> MimeMessage:
    cut, sep_len = payload.find(b"\r\n\r\n"), 4
    lf = payload.find(b"\n\n")
    if lf != -1 and (cut == -1 or lf < cut):
        cut, sep_len = lf, 2
    if cut == -1:
        head, body, separated = payload, b"", False
    else:
        head, body, separated = payload[:cut], payload[cut + sep_len:], True
    headers = parse_headers(head)
    content_type, params = "", {}
    for key, value in headers:
        if key.lower() == "content-type":
            parts = [p.strip() for p in value.split(";")]
            content_type = parts[0].lower()
            for p in parts[1:]:
                k, _, v = p.partition("=")
                if k:
                    params[k.strip().lower()] = v.strip().strip('"')
            break
    return MimeMessage(headers, body, content_type, params, separated)


_parse_small = lru_cache(maxsize=64)(_parse_mime)
