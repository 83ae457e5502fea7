"""Protocol tables the codec reads (see ../shared/PROTOCOL.md).

Kept as data, not code: which commands exist, which carry a payload in which
direction from which version, which server lines carry no TrID, and the
numeric error names.
"""

from __future__ import annotations

# Every command code seen in MSNP2..MSNP21 traffic that this analyzer knows.
KNOWN_COMMANDS: frozenset[bytes] = frozenset(c.encode() for c in """
ACK ADC ADD ADG ADL ANS BLP BPR BYE CAL CHG CHL CVQ CVR FLN FQY GCF GTC ILN IMS INF IPG
IRO JOI LSG LST MSG NAK NLN NOT OUT PAG PGD PNG PRP PUT QNG QRY REA REG REM RFS RMG RML
RNG SBP SBS SDC SDG SND SYN UBM UBN UBX URL USR UUM UUN UUX VER XFR SBS GET DEL NFY
""".split())

# Payload commands: (direction, code) -> the first protocol version that uses a payload.
# 0 means every version.
C2S_PAYLOAD: dict[bytes, int] = {
    b"MSG": 0, b"QRY": 0, b"PAG": 0, b"UUX": 10,
    b"ADL": 13, b"RML": 13, b"FQY": 13, b"UUN": 13, b"UUM": 13, b"PUT": 18, b"DEL": 18,
}
S2C_PAYLOAD: dict[bytes, int] = {
    b"MSG": 0, b"NOT": 0, b"UBX": 11, b"GCF": 11, b"UUX": 10,
    b"ADL": 13, b"RML": 13, b"UBN": 13, b"UBM": 13, b"IPG": 13, b"FQY": 13,
    b"NFY": 18, b"SDG": 18, b"PUT": 18, b"DEL": 18,
}
# For these a last parameter that is not a number is a broken length, not "no payload".
STRICT_LENGTH: frozenset[bytes] = frozenset([b"MSG", b"QRY", b"PAG", b"NOT", b"IPG", b"UBX"])
# Numeric errors carry a payload (`241 trid length`) from this version on.
ERROR_PAYLOAD_VERSION = 13

# Server lines whose first parameter is never a TrID (asynchronous, or an opaque number).
S2C_NO_TRID: frozenset[bytes] = frozenset(c.encode() for c in
    "NLN FLN BPR UBX UBN UBM JOI BYE OUT RFS MSG NOT IPG RNG QNG NFY SDG".split())
# Lines inside an MSNP8+ SYN answer carry no TrID (LSG's first number is a group id).
S2C_NO_TRID_SYN_BLOCK: frozenset[bytes] = frozenset(c.encode() for c in "LSG LST".split())
SYN_BLOCK_LINES: frozenset[bytes] = frozenset(c.encode() for c in "GTC BLP PRP LSG LST BPR".split())
SYN_BLOCK_VERSION = 8
# Client lines with no TrID.
C2S_NO_TRID: frozenset[bytes] = frozenset([b"PNG", b"OUT"])
# Server replies that must carry a TrID (a missing one is worth flagging).
S2C_NEEDS_TRID: frozenset[bytes] = frozenset(c.encode() for c in
    "VER CVR XFR CHG ILN SYN ADC ADG RMG REG REA CAL ANS IRO ACK NAK QRY CHL".split())

TRID_MAX = 4294967295

ERROR_NAMES: dict[int, str] = {
    200: "syntax error", 201: "invalid parameter", 205: "invalid principal",
    206: "domain name missing", 207: "already logged in", 208: "invalid principal name",
    209: "invalid friendly name", 210: "list full", 215: "already there", 216: "not on list",
    217: "principal not on-line", 218: "already in mode", 219: "in opposite list",
    223: "too many groups", 224: "invalid group", 225: "principal not in group",
    229: "group name too long", 230: "cannot remove group zero", 231: "invalid group",
    280: "switchboard failed", 281: "transfer to switchboard failed",
    300: "required field missing", 302: "not logged in", 500: "internal server error",
    501: "database server error", 502: "command disabled", 510: "file operation failed",
    520: "memory allocation failed", 540: "challenge response failed", 600: "server busy",
    601: "server unavailable", 602: "peer NS down", 603: "database connection failed",
    604: "server going down", 605: "server unavailable", 707: "could not create connection",
    710: "bad CVR parameters", 711: "write is blocking", 712: "session overload",
    713: "calling too rapidly", 714: "too many sessions", 715: "not expected",
    717: "bad friend file", 731: "not expected", 800: "changing too rapidly",
    910: "server too busy", 911: "authentication failed", 912: "server too busy",
    913: "not allowed when offline", 918: "server too busy", 919: "server too busy",
    920: "not accepting new principals", 921: "server too busy", 922: "server too busy",
    923: "kids passport without parental consent", 924: "passport account not yet verified",
    928: "bad ticket", 931: "account not on this NS",
}


def error_name(code: int) -> str:
    return ERROR_NAMES.get(code, "unknown error")
