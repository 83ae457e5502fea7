"""p2p: application/x-msnmsgrp2p payloads: the binary header, the footer and MSNSLP inside.

A P2P message is a MSG whose MIME body is binary: a 48-byte little-endian
header (session id, identifier, data offset, total size, message size, flags,
acknowledged identifier, acknowledged unique id, acknowledged data size), the
message bytes, and a 4-byte big-endian footer (the application id). When the
session id is 0 the message is MSNSLP, SIP-like text: INVITE, 200 OK, 603
Decline, BYE, with a Call-ID and, in the INVITE body, an EUF-GUID naming the
application (file transfer, display picture or emoticon, webcam). The plugin
decodes both, follows each Call-ID from INVITE to its answer and BYE (report
section), and flags truncated headers and sizes that contradict the payload.
"""

from __future__ import annotations

import base64
import re
import struct
from dataclasses import dataclass, field

from analyzer.plugins import DecodedView, Plugin, section, section_table

from msnp_analyzer_plugins.mime import parse_headers, parse_mime

HEADER = struct.Struct("<IIQQIIIIQ")  # 48 bytes
FOOTER = struct.Struct(">I")

FLAGS = {0x1: "unknown-1", 0x2: "ack", 0x4: "waiting", 0x8: "error", 0x20: "msnobject data",
         0x40: "bye ack", 0x80: "closing ack", 0x1000000: "file data"}

EUF_GUIDS = {
    "{5D3E02AB-6190-11D3-BBBB-00C04F795683}": "file transfer",
    "{A4268EEC-FEC5-49E5-95C3-F126696BDBF6}": "display picture or emoticon",
    "{4BD96FC0-AB17-4425-A14A-439185962DC8}": "webcam (send)",
    "{1C9AA97E-9C05-4583-A3BD-908A196F1E92}": "webcam (receive)",
}
MSNOBJ_TYPES = {"2": "emoticon", "3": "display picture", "5": "background", "8": "wink", "11": "voice clip"}
_START = re.compile(r"^(INVITE|BYE|ACK|MSNSLP/\d\.\d)\b")


@dataclass
class P2PHeader:
    session_id: int
    identifier: int
    offset: int
    total_size: int
    message_size: int
    flags: int
    ack_identifier: int
    ack_unique_id: int
    ack_data_size: int

    def flag_names(self) -> str:
        if not self.flags:
            return "0x0 (none)"
        names = [n for bit, n in FLAGS.items() if self.flags & bit]
        return f"0x{self.flags:x} ({', '.join(names) or 'unknown'})"


@dataclass
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

    def application(self) -> str | None:
        guid = (self.get("EUF-GUID", "body") or "").upper()
        if not guid:
            return None
        app = EUF_GUIDS.get(guid, f"unknown application {guid}")
        if guid == "{A4268EEC-FEC5-49E5-95C3-F126696BDBF6}":
            kind = msnobject_type(self.get("Context", "body") or "")
            if kind:
                app = kind
        return app


@dataclass
class P2PMessage:
    header: P2PHeader | None
    data: bytes
    footer: int | None
    dest: str | None
    problem: str | None = None
    slp: SLPMessage | None = None


def msnobject_type(context: str) -> str | None:
    try:
        xml = base64.b64decode(context + "=" * (-len(context) % 4)).decode("utf-8", "replace")
    except (ValueError, TypeError):
        return None
    m = re.search(r'Type="(\d+)"', xml)
    return MSNOBJ_TYPES.get(m.group(1), f"msnobject type {m.group(1)}") if m else None


def parse_slp(data: bytes) -> SLPMessage | None:
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


def parse_p2p(payload: bytes) -> P2PMessage:
    """Decode a whole MSG payload of type application/x-msnmsgrp2p (never raises)."""
    msg = parse_mime(payload)
    body = msg.body
    dest = msg.header("P2P-Dest")
    if len(body) < HEADER.size:
        return P2PMessage(None, body, None, dest, f"binary part of {len(body)} bytes, shorter than the 48-byte header")
    header = P2PHeader(*HEADER.unpack_from(body))
    rest = body[HEADER.size:]
    problem = None
    if len(rest) >= header.message_size + FOOTER.size:
        data = rest[:header.message_size]
        footer = FOOTER.unpack_from(rest, header.message_size)[0]
        if len(rest) != header.message_size + FOOTER.size:
            problem = f"{len(rest) - header.message_size - FOOTER.size} bytes after the footer"
    else:
        data, footer = rest[:header.message_size], None
        problem = (f"message size {header.message_size} but only {len(rest)} bytes follow the header "
                   "(footer missing)")
    if header.message_size and header.offset + header.message_size > header.total_size:
        problem = problem or (f"offset {header.offset} + size {header.message_size} beyond the total "
                              f"size {header.total_size}")
    result = P2PMessage(header, data, footer, dest, problem)
    if header.session_id == 0 and header.offset == 0 and data:
        result.slp = parse_slp(data)
    return result


def describe(p2p: P2PMessage) -> DecodedView:
    fields = [("P2P-Dest", p2p.dest or "?")]
    view = DecodedView("MSG application/x-msnmsgrp2p", fields, priority=20)
    h = p2p.header
    if h is not None:
        view.children.append(DecodedView("binary header", [
            ("session id", str(h.session_id)), ("identifier", str(h.identifier)),
            ("offset", str(h.offset)), ("total size", str(h.total_size)),
            ("message size", str(h.message_size)), ("flags", h.flag_names()),
            ("ack identifier", str(h.ack_identifier)), ("ack unique id", str(h.ack_unique_id)),
            ("ack data size", str(h.ack_data_size))]))
    if p2p.footer is not None:
        view.fields.append(("footer (application id)", str(p2p.footer)))
    if p2p.problem:
        view.fields.append(("problem", p2p.problem))
    if p2p.slp is not None:
        slp = p2p.slp
        app = slp.application()
        title = f"MSNSLP {slp.method}" + (f": {app}" if app else "")
        view.children.append(DecodedView(title, [("start line", slp.start_line)] + slp.headers,
                                         children=[DecodedView("body", slp.body)] if slp.body else []))
    elif h is not None and h.session_id == 0 and h.offset:
        view.fields.append(("MSNSLP", f"continuation at offset {h.offset} of {h.total_size}"))
    elif h is not None and p2p.data:
        view.fields.append(("data", f"{len(p2p.data)} bytes of session {h.session_id}"))
    return view


@dataclass
class Call:
    call_id: str
    stream: str
    application: str | None = None
    sender: str | None = None
    receiver: str | None = None
    states: list[str] = field(default_factory=list)


class P2PPlugin(Plugin):
    name = "p2p"
    version = "1.0"
    description = "application/x-msnmsgrp2p binary headers and MSNSLP (INVITE, 200 OK, BYE) by Call-ID"
    commands = frozenset({"MSG"})
    anomalies = {
        "bad_header": ("warning", "a P2P payload whose binary header, sizes or footer contradict its length"),
    }

    def __init__(self) -> None:
        self.calls: dict[str, Call] = {}
        self.messages = 0
        self.slp = 0

    def decode(self, cmd, conn):
        if cmd.cmd != "MSG" or not cmd.payload or cmd.payload.find(b"application/x-msnmsgrp2p", 0, 200) < 0:
            return None
        if parse_mime(cmd.payload).content_type != "application/x-msnmsgrp2p":
            return None
        return describe(parse_p2p(cmd.payload))

    def on_command(self, conn, cmd) -> None:
        if cmd.cmd != "MSG" or not cmd.payload or cmd.payload.find(b"application/x-msnmsgrp2p", 0, 200) < 0:
            return
        if parse_mime(cmd.payload).content_type != "application/x-msnmsgrp2p":
            return
        p2p = parse_p2p(cmd.payload)
        self.messages += 1
        if p2p.problem:
            self.report(conn, "bad_header", p2p.problem, cmd)
        slp = p2p.slp
        if slp is None:
            return
        self.slp += 1
        call_id = slp.get("Call-ID") or "?"
        call = self.calls.get(call_id)
        if call is None:
            call = self.calls[call_id] = Call(call_id, conn.id if conn is not None else "-")
        call.application = call.application or slp.application()
        if slp.method == "INVITE":
            call.sender = call.sender or _address(slp.get("From"))
            call.receiver = call.receiver or _address(slp.get("To"))
        call.states.append(slp.method)

    def html_sections(self) -> list[dict]:
        if not self.messages:
            return []
        rows = [[c.stream, c.call_id, c.application or "?", c.sender or "?", c.receiver or "?",
                 " -> ".join(c.states)] for c in self.calls.values()]
        return [section(f"P2P sessions ({self.messages} P2P messages, {self.slp} MSNSLP)",
                        ["stream", "Call-ID", "application", "from", "to", "MSNSLP"], rows)]

    def terminal_sections(self) -> list:
        return [section_table(s) for s in self.html_sections()]


def _address(value: str | None) -> str | None:
    if not value:
        return None
    m = re.search(r"<msnmsgr:([^>;]+)", value)
    return m.group(1) if m else value
