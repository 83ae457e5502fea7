"""MSG payloads as MIME: headers, a blank line, a body (the one place that splits them).

`parse_mime(payload)` never raises: a payload without a blank line is all
headers (`separated` False); header lines without a colon are kept with an
empty name. Used by the mime, chat and p2p plugins and by the object
extraction (`analyzer.analysis.objects`).

`classify(msg)` (also `msg.kind`) names the kind of a MSG payload by its
content type. A payload is parsed and classified once for all the plugins
that look at it in turn, and once for as long as it stays in the memo of
`parse_mime`: a memo bounded by the bytes it holds (MEMO_HELD), not by a
count of entries, so that the payloads a busy server repeats (typing
notifications, the same headers) are parsed once even with thousands of
conversations interleaved between two of them.
"""

from __future__ import annotations

import sys
import threading


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
    body, whether a blank line separated it, the content type and its parameters); the kind
    and the typing user are worked out at their first use and kept, the header list each time
    it is asked for (by views and rare headers only): a busy capture parses hundreds of
    thousands of distinct payloads, most of them only classified, and a message the memo of
    `parse_mime` holds does not grow after it was counted (see `_held_by`)."""

    __slots__ = ("_block", "_head_end", "_headers", "body", "content_type", "params", "separated", "_kind",
                 "_typing_user", "_used")

    def __init__(self, headers: list[tuple[str, str]] | None, body: bytes, content_type: str,
                 params: dict[str, str], separated: bool, head: bytes = b"", head_end: int | None = None) -> None:
        # The header block is head[:head_end] (all of head by default): `_parse_mime` passes the
        # payload itself, so that a message the memo holds keeps no copy of its headers.
        self._block = head
        self._head_end = len(head) if head_end is None else head_end
        self._headers = headers
        self.body = body
        self.content_type = content_type   # lower case, without parameters ("" when absent)
        self.params = params               # content-type parameters (charset, ...)
        self.separated = separated         # a blank line separated headers from body
        self._kind = None
        self._typing_user = _UNSET
        self._used = True              # the memo's mark: made or asked for since its last sweep

    @property
    def _head(self) -> bytes:
        """The header block (without the blank line that ends it)."""
        block, end = self._block, self._head_end
        return block if end == len(block) else block[:end]

    @property
    def headers(self) -> list[tuple[str, str]]:
        """The header list (`parse_headers`), built anew each time unless given when made: the
        memo's bound counts what a message holds, and a list of short header lines costs
        tens of times their bytes."""
        headers = self._headers
        return headers if headers is not None else parse_headers(self._head)

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
            block, end = self._block, self._head_end
            at = block.find(b"\n", len(_USUAL), end) + 1 \
                if self._headers is None and block.startswith(_USUAL, 0, end) else 0
            if at and block.startswith(b"TypingUser:", at, end):
                # The usual layout (MIME-Version, Content-Type, then TypingUser): the first line
                # `header` would find, found without upper-casing the block.
                stop = block.find(b"\n", at, end)
                user = block[at + 11:stop if stop != -1 else end].decode("utf-8", "replace").strip()
            else:
                user = self.header("TypingUser")
            if self.content_type == _CONTROL:
                # Kept for the typing notifications `kind` asks it of (then counted by the memo,
                # see `_held_by`); looked up each time for any other payload, which no
                # first-party plugin asks it of.
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


MEMO_BYTES = 8192      # payloads up to this size are memoised (a client cuts its MSGs at about 1,600 bytes)
MEMO_HELD = 1 << 20    # the memo holds at most this many bytes, as `_held_by` counts them
MEMO_ENTRIES = 4096    # and at most this many payloads, whatever their sizes
_SWEPT_TO = 7 / 8      # a sweep evicts down to this share of both bounds: one sweep per many misses


def parse_mime(payload: bytes) -> MimeMessage:
    """Split a MSG payload into headers and body (never raises).

    Memoised: the mime, chat and p2p plugins all look at the same payload in
    turn, and a busy server repeats payloads (typing notifications, the same
    headers) with thousands of conversations interleaved between two of them;
    callers must treat the result as read-only. The memo is bounded by the
    bytes it holds (MEMO_HELD) and by a count (MEMO_ENTRIES); a payload larger
    than MEMO_BYTES is parsed each time. What it evicts is chosen as a clock
    does (`_sweep`): close to least recently used, while a hit costs a dict
    look-up and one store, no more than `functools.lru_cache` did.
    """
    msg = _memo.get(payload)
    if msg is not None:
        msg._used = True
        return msg
    if len(payload) > MEMO_BYTES:
        return _parse_mime(payload)
    return _remember(payload)


_memo: dict[bytes, MimeMessage] = {}   # payload -> its parse, oldest (or longest unswept) first
_held = 0                              # the sum of `_held_by` over `_memo`
_memo_lock = threading.Lock()          # held to add and evict (a hit takes no lock: one dict look-up)


def _remember(payload: bytes) -> MimeMessage:
    global _held
    msg = _parse_mime(payload)
    msg.kind   # worked out now (every dispatch asks it first): what the entry holds is then fixed
    held = _held_by(payload, msg)
    with _memo_lock:
        known = _memo.get(payload)
        if known is not None:   # another thread remembered it meanwhile
            return known
        _memo[payload] = msg
        _held += held
        if _held > MEMO_HELD or len(_memo) > MEMO_ENTRIES:
            _sweep()
    return msg


def _sweep() -> None:
    """Evict down to _SWEPT_TO of both bounds (called with `_memo_lock` held). A clock over
    the dict's order: the oldest entry goes unless asked for since it was last swept (or
    remembered since: a new entry is not the first to go), in which case it gets a second
    chance, moved to the end with its mark cleared. The order is walked from a copy taken
    once per pass (looking for the oldest anew for each entry would step over the slots of
    every entry removed before it)."""
    global _held
    memo = _memo
    held_to, entries_to = MEMO_HELD * _SWEPT_TO, MEMO_ENTRIES * _SWEPT_TO
    while _held > held_to or len(memo) > entries_to:
        for payload in list(memo):
            if _held <= held_to and len(memo) <= entries_to:
                break
            msg = memo.pop(payload)
            if msg._used:
                msg._used = False
                memo[payload] = msg
            else:
                _held -= _held_by(payload, msg)


def _held_by(payload: bytes, msg: MimeMessage) -> int:
    """The bytes a memo entry holds, counted against MEMO_HELD: the payload (its key, which
    holds the header block too), its body, the message, its share of the dict, the typing
    user a typing notification keeps, and the content type with its parameters unless shared
    with the memo of content types. Nothing in a remembered message grows after this is
    counted: the kind is worked out before (`_remember`), the header list is not kept, the
    typing user is kept for typing notifications only; so the count at eviction is the
    count at entry."""
    held = _ENTRY + len(payload) + len(msg.body)
    if msg._block is not payload:   # (`_parse_mime` keeps the payload itself)
        held += sys.getsizeof(msg._block)
    user = msg._typing_user
    if user.__class__ is str:
        held += sys.getsizeof(user)
    params = msg.params
    if id(params) not in _shared_params:
        held += sys.getsizeof(msg.content_type) + sys.getsizeof(params) + \
            sum(sys.getsizeof(k) + sys.getsizeof(v) for k, v in params.items())
    return held


def _parse_mime(payload: bytes) -> MimeMessage:
    cut, sep_len = payload.find(b"\r\n\r\n"), 4
    lf = payload.find(b"\n\n") if cut == -1 else payload.find(b"\n\n", 0, cut + 1)   # one before it
    if lf != -1:
        cut, sep_len = lf, 2
    if cut == -1:
        cut, body, separated = len(payload), b"", False
    else:
        body, separated = payload[cut + sep_len:], True
    if payload.startswith(_USUAL, 0, cut):
        # Nearly every client starts its headers this way: the first header named
        # Content-Type is then the second line (what `_first_value` would find, found sooner).
        stop = payload.find(b"\n", len(_USUAL), cut)
        value = payload[len(_USUAL):stop if stop != -1 else cut]
    else:
        value = _first_value(payload[:cut], b"CONTENT-TYPE")
    content_type, params = _content_type(value) if value is not None else _NO_TYPE
    return MimeMessage(None, body, content_type, params, separated, payload, cut)


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


TYPE_MEMO = 64          # Content-Type values remembered (a capture holds a handful) ...
TYPE_MEMO_BYTES = 128   # ... each of at most this many bytes (parameters cost tens of times their bytes)
_types: dict[bytes, tuple[str, dict[str, str]]] = {}
# id() of each parameters dict `_types` holds: they are held for the whole run (`_types` only
# grows, up to TYPE_MEMO), so no other object takes their ids while the memo counts on them.
_shared_params: set[int] = set()
_NO_TYPE: tuple[str, dict[str, str]] = ("", {})   # a payload without a Content-Type header
_shared_params.add(id(_NO_TYPE[1]))


def _content_type(value: bytes) -> tuple[str, dict[str, str]]:
    """A Content-Type header's value: the type (lower case) and its parameters. Remembered
    (the parameters dict is then shared, read-only): the first TYPE_MEMO distinct values of at
    most TYPE_MEMO_BYTES; any other is parsed each time (only when `parse_mime` misses)."""
    found = _types.get(value)
    if found is not None:
        return found
    params: dict[str, str] = {}
    parts = [p.strip() for p in value.decode("utf-8", "replace").strip().split(";")]
    for p in parts[1:]:
        k, _, v = p.partition("=")
        if k:
            params[k.strip().lower()] = v.strip().strip('"')
    found = (parts[0].lower(), params)
    if len(value) <= TYPE_MEMO_BYTES and len(_types) < TYPE_MEMO:
        # Marked shared before any message can hold it from `_types`; when another thread
        # stored the same value first, its parse is the one kept and this one is unmarked.
        _shared_params.add(id(params))
        kept = _types.setdefault(value, found)
        if kept is not found:
            _shared_params.discard(id(params))
            found = kept
    return found


_CONTROL = "text/x-msmsgscontrol"
# What every memo entry holds besides its bytes: the headers of the payload and body objects,
# the message, and its share of the dict's table (an entry of 24 bytes and its index, the
# table up to three times the entries it holds once evictions left it gaps).
_ENTRY = 2 * sys.getsizeof(b"") + sys.getsizeof(MimeMessage(None, b"", "", {}, False)) + 128
