"""Text from the wire made safe to show on a terminal.

Every byte of a capture is data. Control characters (C0, DEL, C1: ESC
sequences can set the window title, write the clipboard with OSC 52 or clear
the screen) and code points no terminal can print (lone surrogates, which
`charset=unicode_escape` bodies decode to) are shown as visible escapes
(`\\x1b`, `\\ud800`), never passed through. Backslashes stay as they are: this
is for reading, not for parsing back.
"""

from __future__ import annotations

import re

_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def _escape(match: re.Match) -> str:
    code = ord(match.group())
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}"


def printable(text: str) -> str:
    """`text` with every control, bidi-override and surrogate code point shown as an escape."""
    return _UNSAFE.sub(_escape, text)
