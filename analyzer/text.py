"""Text from the wire made safe for where it is shown: terminals, JSON, HTML, file names.

Captures, transcripts and flow files come from strangers, and so do the strings
decoded from them (parameters, chat text, MIME headers, file names). Two rules:

- `visible(text)` for a terminal: every character a terminal would act on
  instead of showing it becomes a visible escape, so no capture can write the
  clipboard (OSC 52), retitle the window, clear the screen or move the cursor:
  C0 controls (ESC, BEL, CR, backspace, ...), DEL, the C1 controls U+0080-U+009F
  (8-bit CSI and OSC), the bidirectional overrides and isolates (which reorder
  what is shown), and lone surrogates (which no terminal encoding can write).
  They are written the way Python writes them in a string (`\\x1b`, `\\x9b`,
  `\\u202e`); a lone surrogate from `surrogateescape` (a byte that was not UTF-8,
  as in a file name) as that byte, `\\xe9`. Newline and tab are kept only when
  asked (`keep="\\n\\t"`). The result is printable and `visible` of it is itself.
- `clean(text)` for JSON and HTML, which escape control characters themselves:
  only the lone surrogates (no UTF-8 writer can encode them) are replaced, by
  the same escapes.

Neither raises, for any `str`.
"""

from __future__ import annotations

import re

_SURROGATES = "\ud800-\udfff"
_BIDI = "\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069"
_CONTROLS = "\x00-\x08\x0b-\x1f\x7f-\x9f"
_UNSAFE = re.compile(f"[\t\n{_CONTROLS}{_SURROGATES}{_BIDI}]")
_UNSAFE_KEEP_LINES = re.compile(f"[{_CONTROLS}{_SURROGATES}{_BIDI}]")
_SURROGATE = re.compile(f"[{_SURROGATES}]")


def _escape(m: re.Match) -> str:
    code = ord(m.group())
    if code < 0x100:
        return f"\\x{code:02x}"
    if 0xDC80 <= code <= 0xDCFF:  # surrogateescape: the byte that was not UTF-8
        return f"\\x{code - 0xDC00:02x}"
    return f"\\u{code:04x}"


def visible(text: str, keep: str = "") -> str:
    """`text` with every terminal control (and lone surrogate) shown as an escape.

    `keep` may hold "\\n" and/or "\\t": those are left as they are (multi-line text).
    """
    if text.isprintable():  # the common case, checked in C
        return text
    if not keep:
        return _UNSAFE.sub(_escape, text)
    out = _UNSAFE_KEEP_LINES.sub(_escape, text)
    if "\n" not in keep:
        out = out.replace("\n", "\\x0a")
    if "\t" not in keep:
        out = out.replace("\t", "\\x09")
    return out


def clean(text: str) -> str:
    """`text` with its lone surrogates replaced by escapes: encodable as UTF-8, as JSON and HTML need."""
    if text.isascii():
        return text
    return _SURROGATE.sub(_escape, text)


def clean_data(value):
    """A JSON-able value with every string `clean`ed and every non-finite float made None.

    Dict keys are cleaned too. Used when a record cannot be written as it is
    (the rare case: a writer tries the record first).
    """
    kind = type(value)
    if kind is str:
        return clean(value)
    if kind is float:
        return value if value - value == 0.0 else None
    if isinstance(value, dict):
        return {clean(k) if isinstance(k, str) else k: clean_data(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean_data(v) for v in value]
    return value
