"""P2P over the switchboard: the binary headers of `application/x-msnmsgrp2p` and MSNSLP.

A P2P message is a MSG whose MIME body is binary: a header, the message
bytes, and a 4-byte big-endian footer (the application id). Two header
versions exist:

- version 1 (up to MSNP15): 48 bytes, little-endian: session id, identifier,
  data offset, total size, message size, flags, acknowledged identifier,
  acknowledged unique id, acknowledged data size;
- version 2 (MSNP16 on, `P2P-Dest: handle;{machine-guid}`): a header length,
  an operation code, the payload size and a base identifier (big-endian), TLVs
  up to the header length; then, when the payload is not empty, a data header
  (its own length, a TF combination, a package number, the session id, TLVs,
  among them the data still to come after this message) and the data.

`parse_p2p(payload)` decodes either (the one whose sizes add up; the
`P2P-Dest` form decides when neither does) and never raises: a header that
does not fit is described in `problem`. When the session id is 0 the data is
MSNSLP (SIP-like text: INVITE, 200 OK, 603 Decline, BYE) once reassembled;
`parse_slp` reads it. `msnobject` reads an MSNObject (`<msnobj ... SHA1D=...>`)
and `file_context` the binary file-transfer context of an INVITE.
"""

from __future__ import annotations

import base64
import re
import struct
from dataclasses import dataclass, field

from analyzer.msnp.mime import parse_headers, parse_mime

V1_HEADER = struct.Struct("<IIQQIIIIQ")  # 48 bytes
FOOTER = struct.Struct(">I")
V2_FIXED = struct.Struct(">BBHI")        # header length, op code, payload size, base identifier
V2_DATA = struct.Struct(">BBHI")         # data header length, TF combination, package number, session id

FLAGS = {0x1: "unknown-1", 0x2: "ack", 0x4: "waiting", 0x8: "error", 0x20: "msnobject data",
         0x40: "bye ack", 0x80: "closing ack", 0x1000000: "file data"}
V2_TF = {0x01: "first", 0x04: "msnobject data", 0x06: "file data"}
V2_OPS = {0x01: "SYN", 0x02: "RAK"}

EUF_GUIDS = {
    "{5D3E02AB-6190-11D3-BBBB-00C04F795683}": "file transfer",
    "{A4268EEC-FEC5-49E5-95C3-F126696BDBF6}": "display picture or emoticon",
    "{4BD96FC0-AB17-4425-A14A-439185962DC8}": "webcam (send)",
    "{1C9AA97E-9C05-4583-A3BD-908A196F1E92}": "webcam (receive)",
    "{6A13AF9C-5308-4F35-923A-67E8DDA40C2F}": "activity",
}
FILE_TRANSFER_GUID = "{5D3E02AB-6190-11D3-BBBB-00C04F795683}"
MSNOBJECT_GUID = "{A4268EEC-FEC5-49E5-95C3-F126696BDBF6}"
# MSNObject Type attribute (values of the MSNC documents)
MSNOBJ_TYPES = {"1": "avatar", "2": "emoticon", "3": "display picture", "4": "shared file", "5": "background",
                "7": "dynamic display picture", "8": "wink", "10": "voice clip", "11": "voice clip",
                "12": "state", "14": "location"}
# AppIDs of the footer / INVITE (a second opinion when the EUF-GUID is shared)
APP_IDS = {1: "display picture", 2: "file transfer", 11: "emoticon", 12: "display picture",
           14: "wink", 17: "ink"}
_START = re.compile(r"^(INVITE|BYE|ACK|MSNSLP/\d\.\d)\b")
MAX_SLP = 64 * 1024   # an MSNSLP message larger than this is not reassembled


@dataclass(slots=True)
class P2PMessage:
    """One P2P message as the header describes it (both versions in one shape).

    `offset` and `total_size` are the version-1 fields; a version-2 message has
    `remaining` (data still to come after this one, from the data header TLV)
    instead, and `offset`/`total_size` stay None.
    """
    version: int | None            # 1, 2, or None when no header could be read
    session_id: int = 0
    identifier: int = 0
    flags: int = 0                 # v1 flags; v2: the TF combination of the data header
    offset: int | None = None
    total_size: int | None = None
    remaining: int | None = None
    message_size: int = 0
    data: bytes = b""
    footer: int | None = None
    dest: str | None = None
    src: str | None = None
    problem: str | None = None
    fields: list[tuple[str, str]] = field(default_factory=list)  # header fields for display
    opcode: int = 0
    package: int = 0
    ack: bool = False

    @property
    def first(self) -> bool:
        """The first message of its data (v1: offset 0; v2: the TF `first` bit)."""
        return self.offset == 0 if self.version == 1 else bool(self.flags & 0x01)

    def is_data_preparation(self) -> bool:
        """The 4 zero bytes a sender puts before an MSNObject's data (not part of the object)."""
        if self.session_id == 0 or self.data != b"\x00\x00\x00\x00":
            return False
        if self.version == 1:
            return self.flags == 0 and self.total_size == 4 and self.offset == 0
        return self.flags == 0x01 and not self.remaining


def flag_names(flags: int) -> str:
    if not flags:
        return "0x0 (none)"
    names = [n for bit, n in FLAGS.items() if flags & bit]
    return f"0x{flags:x} ({', '.join(names) or 'unknown'})"


def _endpoint(value: str | None) -> str | None:
    return value.strip() if value else None


def parse_p2p(payload: bytes) -> P2PMessage:
    """Decode a whole MSG payload of type application/x-msnmsgrp2p (never raises)."""
    msg = parse_mime(payload)
    body = msg.body
    dest, src = _endpoint(msg.header("P2P-Dest")), _endpoint(msg.header("P2P-Src"))
    v1_fits = len(body) >= V1_HEADER.size + FOOTER.size and \
        struct.unpack_from("<I", body, 32)[0] + V1_HEADER.size + FOOTER.size == len(body)
    v2_fits = False
    if not v1_fits and len(body) >= V2_FIXED.size + FOOTER.size:
        hl, _, size, _ = V2_FIXED.unpack_from(body)
        v2_fits = hl >= V2_FIXED.size and hl + size + FOOTER.size == len(body)
    if v1_fits:
        return _parse_v1(body, dest, src)
    if v2_fits or (dest and ";{" in dest) or (src and ";{" in src):
        return _parse_v2(body, dest, src)
    return _parse_v1(body, dest, src)


def _split_footer(rest: bytes, size: int, what: str) -> tuple[bytes, int | None, str | None]:
    """(the `size` bytes after a header, the footer after them, a problem): both versions end so."""
    data = rest[:size]
    if len(rest) < size + FOOTER.size:
        return data, None, f"{what} {size} but only {len(rest)} bytes follow the header (footer missing)"
    footer = FOOTER.unpack_from(rest, size)[0]
    extra = len(rest) - size - FOOTER.size
    return data, footer, (f"{extra} bytes after the footer" if extra else None)


def _parse_v1(body: bytes, dest, src) -> P2PMessage:
    if len(body) < V1_HEADER.size:
        return P2PMessage(None, data=body, dest=dest, src=src,
                          problem=f"binary part of {len(body)} bytes, shorter than the 48-byte header")
    (sid, ident, offset, total, size, flags, ack_id, ack_uid, ack_size) = V1_HEADER.unpack_from(body)
    data, footer, problem = _split_footer(body[V1_HEADER.size:], size, "message size")
    if size and offset + size > total:
        problem = problem or f"offset {offset} + size {size} beyond the total size {total}"
    fields = [("session id", str(sid)), ("identifier", str(ident)), ("offset", str(offset)),
              ("total size", str(total)), ("message size", str(size)), ("flags", flag_names(flags)),
              ("ack identifier", str(ack_id)), ("ack unique id", str(ack_uid)), ("ack data size", str(ack_size))]
    return P2PMessage(1, sid, ident, flags, offset, total, None, size, data, footer, dest, src, problem,
                      fields, ack=bool(flags & 0x2))


def _tlvs(block: bytes) -> list[tuple[int, bytes]]:
    out, i = [], 0
    while i + 2 <= len(block):
        t, n = block[i], block[i + 1]
        if t == 0:  # padding
            break
        out.append((t, block[i + 2:i + 2 + n]))
        i += 2 + n
    return out


def _parse_v2(body: bytes, dest, src) -> P2PMessage:
    if len(body) < V2_FIXED.size:
        return P2PMessage(None, data=body, dest=dest, src=src,
                          problem=f"binary part of {len(body)} bytes, shorter than the version-2 header")
    hl, op, size, base = V2_FIXED.unpack_from(body)
    if hl < V2_FIXED.size or hl > len(body):
        return P2PMessage(2, identifier=base, dest=dest, src=src, data=b"",
                          problem=f"version-2 header length {hl} outside 8..{len(body)}")
    fields = [("header length", str(hl)), ("operation", f"0x{op:x} ({V2_OPS.get(op & 0x3, 'none')})"),
              ("payload size", str(size)), ("base identifier", str(base))]
    ack = False
    for t, v in _tlvs(body[V2_FIXED.size:hl]):
        if t == 1:
            fields.append(("peer info", v.hex()))
        elif t == 2 and len(v) == 4:
            ack = True
            fields.append(("ack identifier", str(struct.unpack(">I", v)[0])))
        elif t == 3 and len(v) == 4:
            fields.append(("nak identifier", str(struct.unpack(">I", v)[0])))
        else:
            fields.append((f"TLV 0x{t:x}", v.hex()))
    payload, footer, problem = _split_footer(body[hl:], size, "payload size")
    msg = P2PMessage(2, identifier=base, message_size=size, footer=footer, dest=dest, src=src,
                     problem=problem, fields=fields, opcode=op, ack=ack)
    if not payload:
        return msg
    if len(payload) < V2_DATA.size:
        msg.problem = problem or f"payload of {len(payload)} bytes, shorter than the 8-byte data header"
        return msg
    dhl, tf, package, sid = V2_DATA.unpack_from(payload)
    if dhl < V2_DATA.size or dhl > len(payload):
        msg.problem = problem or f"data header length {dhl} outside 8..{len(payload)}"
        return msg
    remaining = 0
    for t, v in _tlvs(payload[V2_DATA.size:dhl]):
        if t == 1 and len(v) == 8:
            remaining = struct.unpack(">Q", v)[0]
        else:
            fields.append((f"data TLV 0x{t:x}", v.hex()))
    tf_names = [n for bit, n in V2_TF.items() if tf & bit == bit] or ["none"]
    fields += [("data header length", str(dhl)), ("TF", f"0x{tf:x} ({', '.join(tf_names)})"),
               ("package number", str(package)), ("session id", str(sid)),
               ("data remaining", str(remaining))]
    msg.session_id, msg.flags, msg.package, msg.remaining = sid, tf, package, remaining
    msg.data = payload[dhl:]
    return msg


# -- MSNSLP -------------------------------------------------------------------


@dataclass(slots=True)
class SLPMessage:
    start_line: str
    method: str                        # INVITE, BYE, ACK, or the status ("200 OK")
    headers: list[tuple[str, str]]
    body: list[tuple[str, str]]

    def get(self, name: str, where: str = "headers") -> str | None:
        low = name.lower()
        for k, v in getattr(self, where):
            if k.lower() == low:
                return v
        return None

    @property
    def call_id(self) -> str | None:
        return self.get("Call-ID")

    @property
    def session_id(self) -> int | None:
        value = self.get("SessionID", "body")
        return int(value) if value and value.strip().isdigit() else None

    def application(self) -> str | None:
        """What an INVITE asks for: file transfer, display picture, emoticon, ... (None: no EUF-GUID)."""
        guid = (self.get("EUF-GUID", "body") or "").upper()
        if not guid:
            return None
        if guid == MSNOBJECT_GUID:
            obj = msnobject(context_text(self.get("Context", "body") or "") or "")
            if obj is not None and obj.kind:
                return obj.kind
            app = APP_IDS.get(int(self.get("AppID", "body") or 0) if (self.get("AppID", "body") or "").isdigit() else 0)
            return app or "display picture or emoticon"
        return EUF_GUIDS.get(guid, f"unknown application {guid}")


def parse_slp(data: bytes) -> SLPMessage | None:
    """An MSNSLP message from its (reassembled) bytes; None when it is not MSNSLP."""
    text = data.rstrip(b"\x00").decode("utf-8", "replace")
    if not _START.match(text):
        return None
    head, _, body = text.replace("\r\n", "\n").partition("\n\n")
    lines = head.split("\n")
    start = lines[0].strip()
    if start.startswith("MSNSLP/"):
        method = start.split(" ", 1)[1] if " " in start else start
    else:
        method = start.split(" ", 1)[0]
    headers = parse_headers("\n".join(lines[1:]).encode())
    return SLPMessage(start, method, headers, parse_headers(body.encode()))


def slp_address(value: str | None) -> str | None:
    """`bob@example.com` from `<msnmsgr:bob@example.com;{guid}>`."""
    if not value:
        return None
    m = re.search(r"<msnmsgr:([^>;]+)", value)
    return (m.group(1) if m else value).strip().lower()


def context_bytes(context: str) -> bytes | None:
    try:
        return base64.b64decode(context.strip() + "=" * (-len(context.strip()) % 4))
    except (ValueError, TypeError):
        return None


def context_text(context: str) -> str | None:
    raw = context_bytes(context)
    return None if raw is None else raw.rstrip(b"\x00").decode("utf-8", "replace")


# -- MSNObject and the file-transfer context ----------------------------------


@dataclass(slots=True, frozen=True)
class MsnObject:
    creator: str | None
    size: int | None
    type: str | None
    location: str | None
    friendly: str | None
    sha1d: bytes | None                # the SHA1 of the data, decoded from base64

    @property
    def kind(self) -> str | None:
        if self.type is None:
            return None
        return MSNOBJ_TYPES.get(self.type, f"msnobject type {self.type}")


_ATTR = re.compile(r'\b(\w+)\s*=\s*"([^"]*)"')   # from a word boundary: linear on long words
_MSNOBJ = re.compile(r"<msnobj\b([^<>]*)>")            # attributes stop at the next `<`: linear


def msnobject(text: str) -> MsnObject | None:
    """An `<msnobj .../>` element's attributes; None when `text` holds none."""
    m = _MSNOBJ.search(text)
    if not m:
        return None
    attrs = dict(_ATTR.findall(m.group(1)))
    size = attrs.get("Size")
    sha1d = None
    if attrs.get("SHA1D"):
        try:
            sha1d = base64.b64decode(attrs["SHA1D"], validate=True)
        except ValueError:
            sha1d = None
        if sha1d is not None and len(sha1d) != 20:
            sha1d = None
    friendly = None
    if attrs.get("Friendly"):
        raw = context_bytes(attrs["Friendly"])
        friendly = raw.decode("utf-16-le", "replace").rstrip("\x00") if raw else None
    return MsnObject(attrs.get("Creator"), int(size) if size and size.isdigit() else None,
                     attrs.get("Type"), attrs.get("Location"), friendly, sha1d)


@dataclass(slots=True, frozen=True)
class FileContext:
    name: str
    size: int


FILE_CONTEXT = struct.Struct("<IIQI")  # length, version, file size, type; then 520 bytes UTF-16LE name


def file_context(context: str) -> FileContext | None:
    """The file name and size of a file-transfer INVITE's base64 Context (None if unreadable)."""
    raw = context_bytes(context)
    if raw is None or len(raw) < FILE_CONTEXT.size + 2:
        return None
    _length, _version, size, _type = FILE_CONTEXT.unpack_from(raw)
    name_raw = raw[FILE_CONTEXT.size:FILE_CONTEXT.size + 520]
    name = name_raw.decode("utf-16-le", "replace").split("\x00", 1)[0]
    return FileContext(name, size)
