"""MSG payloads as MIME: headers, a blank line, a body (the one place that splits them).

`parse_mime(payload)` never raises: a payload without a blank line is all
headers (`separated` False); header lines without a colon are kept with an
empty name. Used by the mime, chat and p2p plugins and by the object
extraction (`analyzer.analysis.objects`).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache


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

    @property
    def charset(self) -> str:
        return self.params.get("charset", "utf-8") or "utf-8"

    def text(self) -> str:
        try:
            return self.body.decode(self.charset, "replace")
        except LookupError:  # an unknown charset name
            return self.body.decode("utf-8", "replace")


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


@lru_cache(maxsize=64)
def parse_mime(payload: bytes) -> MimeMessage:
    """Split a MSG payload into headers and body (never raises).

    Memoised: the mime, chat and p2p plugins all look at the same payload in
    turn; callers must treat the result as read-only.
    """
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
