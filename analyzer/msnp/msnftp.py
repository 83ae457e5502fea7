"""MSNFTP: the file transfer of MSNP2-8 clients, on a direct TCP connection of its own.

An invitation on the switchboard (`text/x-msmsgsinvite`, `Application-Name:
File Transfer`) names the file; the sender's ACCEPT gives `IP-Address`,
`Port` and an `AuthCookie`. The receiver connects there and the two speak
lines without TrIDs:

    receiver: VER MSNFTP            sender: VER MSNFTP
    receiver: USR handle cookie     sender: FIL size
    receiver: TFR                   sender: data blocks, each a 3-byte header
                                            (0 then the block length, little-endian;
                                            1 0 0 ends the transfer early) and the bytes
    receiver: BYE code              (CCL from either side cancels)

`FtpReader(direction)` is sans-IO like `CommandReader`: `feed(data, ts)`
returns events, every byte in exactly one `Command`, `FileData` or `Skipped`
event, in order, however TCP chopped the stream. After `FIL size` the
direction's reader reads blocks until `size` bytes arrived (or a block header
says the sender stopped), then lines again. A line longer than `max_line` is
skipped (`msnftp.line.too_long`). `looks_like_msnftp` recognises the first
line of such a connection.
"""

from __future__ import annotations

from analyzer.msnp.events import Anomaly, Command, Skipped

MAX_LINE = 1024
BLOCK_HEADER = 3
FTP_COMMANDS = frozenset({"VER", "USR", "FIL", "TFR", "BYE", "CCL"})


def looks_like_msnftp(first: list[bytes]) -> bool:
    """The tokens of a connection's first line: `VER MSNFTP` (or `VER n MSNFTP`)."""
    return len(first) in (2, 3) and first[0] == b"VER" and first[-1] == b"MSNFTP"


class FileData:
    """One MSNFTP data block: its 3-byte header and bytes (`raw`), where it sits in the file."""

    __slots__ = ("direction", "raw", "offset", "ts", "file_offset", "stop")

    def __init__(self, direction: str, raw: bytes, offset: int, ts: float | None,
                 file_offset: int, stop: bool) -> None:
        self.direction = direction
        self.raw = raw
        self.offset = offset            # stream offset of the block header
        self.ts = ts
        self.file_offset = file_offset  # offset of the block's first byte in the file
        self.stop = stop                # the sender's "end of data" block (header byte 1)

    @property
    def data(self) -> bytes:
        return self.raw[BLOCK_HEADER:]

    def __repr__(self) -> str:
        return f"<FileData {self.direction} {len(self.raw) - BLOCK_HEADER}B file@{self.file_offset}>"


class FtpReader:
    def __init__(self, direction: str, max_line: int = MAX_LINE) -> None:
        self.direction = direction
        self.max_line = max_line
        self.buf = bytearray()
        self.offset = 0          # stream offset of buf[0]
        self.expect = 0          # file bytes still to come in blocks (0: line mode)
        self.file_offset = 0

    def feed(self, data: bytes, ts: float | None = None) -> list:
        self.buf += data
        out: list = []
        while self.buf:
            if self.expect:
                if len(self.buf) < BLOCK_HEADER:
                    break
                kind, size = self.buf[0], self.buf[1] | self.buf[2] << 8
                if kind != 0:
                    out.append(self._take(BLOCK_HEADER, ts, block=True, stop=True))
                    self.expect = 0
                    continue
                if len(self.buf) < BLOCK_HEADER + size:
                    break
                event = self._take(BLOCK_HEADER + size, ts, block=True)
                self.file_offset += size
                self.expect = max(0, self.expect - size)
                out.append(event)
                continue
            nl = self.buf.find(b"\n")
            if nl < 0:
                if len(self.buf) > self.max_line:
                    out.append(Anomaly("msnftp.line.too_long", f"no line end in {len(self.buf)} bytes",
                                       self.direction, self.offset, ts))
                    out.append(self._skip(len(self.buf), ts))
                break
            out.append(self._line(nl + 1, ts))
        return out

    def gap(self, size: int, ts: float | None = None) -> list:
        """Bytes missing from the capture: in block mode they count as file bytes never seen."""
        self.offset += size + len(self.buf)
        lost = len(self.buf)
        self.buf.clear()
        if self.expect:
            self.file_offset += size + lost
            self.expect = max(0, self.expect - size - lost)
        return []

    def close(self, ts: float | None = None) -> list:
        if not self.buf:
            return []
        return [self._skip(len(self.buf), ts)]

    def _take(self, n: int, ts, block: bool = False, stop: bool = False):
        raw = bytes(self.buf[:n])
        del self.buf[:n]
        start = self.offset
        self.offset += n
        return FileData(self.direction, raw, start, ts, self.file_offset, stop)

    def _skip(self, n: int, ts) -> Skipped:
        raw = bytes(self.buf[:n])
        del self.buf[:n]
        start = self.offset
        self.offset += n
        return Skipped(self.direction, raw, start, ts)

    def _line(self, n: int, ts) -> Command:
        raw = bytes(self.buf[:n])
        del self.buf[:n]
        start = self.offset
        self.offset += n
        tokens = raw.split()
        code = tokens[0].decode("ascii", "replace") if tokens else ""
        args = tokens[1:]
        if code == "FIL" and args and args[0].isdigit():
            self.expect = int(args[0])
            self.file_offset = 0
        return Command(self.direction, code, None, args, raw, None, None, start, ts)
