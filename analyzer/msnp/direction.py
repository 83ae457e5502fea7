"""Which side sent a raw MSNP stream, guessed from its first lines."""

from __future__ import annotations

from analyzer.msnp.events import C2S, S2C


def guess_direction(data: bytes) -> str:
    """Which side sent a raw stream, from its first lines."""
    server_only = {b"NLN", b"FLN", b"ILN", b"IRO", b"JOI", b"BYE", b"QNG", b"RNG", b"NOT", b"CHL", b"UBX"}
    for line in data.split(b"\n", 50)[:50]:  # the first lines only: never split a whole capture
        parts = line.strip().split(b" ")
        code = parts[0]
        if code in server_only or code.isdigit():
            return S2C
        if code == b"PNG" or (code == b"MSG" and len(parts) > 1 and parts[1].isdigit()):
            return C2S
        if code == b"MSG" and len(parts) > 1:
            return S2C
    return C2S
