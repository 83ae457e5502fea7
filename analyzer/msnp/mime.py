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

from functools import lru_cache


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


_UNSET = object()


class MimeMessage:
    """A parsed MSG payload. Only what every plugin reads is worked out when it is parsed (the
    body, whether a blank line separated it, the content type and its parameters); the header
    list, the kind and the typing user are worked out at their first use and kept: a busy
    capture parses hundreds of thousands of distinct payloads, most of them only classified."""

    __slots__ = ("_head", "_headers", "body", "content_type", "params", "separated", "_kind", "_typing_user")

    def __init__(self, headers: list[tuple[str, str]] | None, body: bytes, content_type: str,
                 params: dict[str, str], separated: bool, head: bytes = b"") -> None:
        self._head = head              # the header block, parsed into `headers` on first use
        self._headers = headers
        self.body = body
        self.content_type = content_type   # lower case, without parameters ("" when absent)
        self.params = params               # content-type parameters (charset, ...)
        self.separated = separated         # a blank line separated headers from body
        self._kind = None
        self._typing_user = _UNSET

    @property
    def headers(self) -> list[tuple[str, str]]:
        headers = self._headers
        if headers is None:
            headers = self._headers = parse_headers(self._head)
        return headers

    def __eq__(self, other) -> bool:
        if not isinstance(other, MimeMessage):
            return NotImplemented
        return (self.headers, self.body, self.content_type, self.params, self.separated) == \
            (other.headers, other.body, other.content_type, other.params, other.separated)

    __hash__ = None

    def __repr__(self) -> str:
        return (f"MimeMessage(headers={self.headers!r}, body={self.body!r}, content_type={self.content_type!r}, "
                f"params={self.params!r}, separated={self.separated!r})")

    def header(self, name: str) -> str | None:
        low = name.lower()
        if self._headers is None and low.isascii() and low.replace("-", "").isalnum() and "k" not in low:
            value = _first_value(self._head, name.upper().encode())
            return None if value is None else value.decode("utf-8", "replace").strip()
        for key, value in self.headers:
            if key.lower() == low:
                return value
        return None

    @property
    def typing_user(self) -> str | None:
        """The `TypingUser` header (a typing notification names who types), worked out once."""
        user = self._typing_user
        if user is _UNSET:
            head = self._head
            at = head.find(b"\n", len(_USUAL)) + 1 if self._headers is None and head.startswith(_USUAL) else 0
            if at and head.startswith(b"TypingUser:", at):
                # The usual layout (MIME-Version, Content-Type, then TypingUser): the first line
                # `header` would find, found without upper-casing the block (a busy server's
                # typing notifications are parsed anew nearly every time: 20,000 users between).
                stop = head.find(b"\n", at)
                user = head[at + 11:stop if stop != -1 else len(head)].decode("utf-8", "replace").strip()
            else:
                user = self.header("TypingUser")
            self._typing_user = user
        return user

    @property
    def kind(self) -> str:
        """`classify(self)`, worked out once."""
        kind = self._kind
        if kind is None:
            if not self.content_type:
                kind = "malformed" if not self.separated else "other"
            else:
                kind = KINDS.get(self.content_type, "other")
                if kind == "typing" and self.typing_user is None:
                    kind = "control"
            self._kind = kind
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
    lf = payload.find(b"\n\n") if cut == -1 else payload.find(b"\n\n", 0, cut + 1)   # one before it
    if lf != -1:
        cut, sep_len = lf, 2
    if cut == -1:
        head, body, separated = payload, b"", False
    else:
        head, body, separated = payload[:cut], payload[cut + sep_len:], True
    if head.startswith(_USUAL):
        # Nearly every client starts its headers this way: the first header named
        # Content-Type is then the second line (what `_first_value` would find, found sooner).
        stop = head.find(b"\n", len(_USUAL))
        value = head[len(_USUAL):stop] if stop != -1 else head[len(_USUAL):]
    else:
        value = _first_value(head, b"CONTENT-TYPE")
    content_type, params = _content_type(value) if value is not None else ("", {})
    return MimeMessage(None, body, content_type, params, separated, head)


_USUAL = b"MIME-Version: 1.0\r\nContent-Type:"


def _first_value(head: bytes, name: bytes) -> bytes | None:
    """The raw value of the first header `parse_headers` would name `name` (upper-case ASCII,
    no K), without building the header list: a name that equals it once decoded, stripped and
    lower-cased holds its bytes in some case (no character but the Kelvin sign lower-cases to
    ASCII), so only the lines holding them are looked at, in order. Lines end at LF; a CR
    before it is white space the strips of the value remove."""
    upper = head.upper()
    at = upper.find(name)
    want = name.decode().lower()
    while at != -1:
        start = head.rfind(b"\n", 0, at) + 1
        stop = head.find(b"\n", at)
        if stop == -1:
            stop = len(head)
        key, sep, value = head[start:stop].partition(b":")
        if sep and key.decode("utf-8", "replace").strip().lower() == want:
            return value
        at = upper.find(name, stop)
    return None


@lru_cache(maxsize=256)
def _content_type(value: bytes) -> tuple[str, dict[str, str]]:
    """A Content-Type header's value: the type (lower case) and its parameters. Remembered:
    a capture holds a handful of distinct values (the parameters dict is shared, read-only)."""
    params: dict[str, str] = {}
    parts = [p.strip() for p in value.decode("utf-8", "replace").strip().split(";")]
    for p in parts[1:]:
        k, _, v = p.partition("=")
        if k:
            params[k.strip().lower()] = v.strip().strip('"')
    return parts[0].lower(), params


_parse_small = lru_cache(maxsize=64)(_parse_mime)
