"""What the offline commands read: one input model for `analyze`, `export`, `chat` and `decode`.

Every command that reads traffic takes the same inputs, told apart by their
content, never by their name: pcap and pcapng captures (gzip'd or not),
mitmproxy flow files, transcripts (`>>> `/`<<< ` lines), raw MSNP byte streams
of one direction, several files at once, and `-` for standard input (pipes and
other non-regular files are read once into a temporary file, since a capture
or a flow file is read by path). `open_inputs` names each file's kind before
anything is read (so a bad argument fails fast, exit 2), and says in one line
what a file is when it cannot use it; `feed_input` reads one into an
`Analysis`. Unusable input raises `UsageError`.
"""

from __future__ import annotations

import gzip
import os
import re
import shutil
import stat
import sys
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path

from analyzer.errors import UsageError, open_input, read_input

PCAP_MAGICS = (b"\xd4\xc3\xb2\xa1", b"\xa1\xb2\xc3\xd4", b"\x4d\x3c\xb2\xa1", b"\xa1\xb2\x3c\x4d",
               b"\x0a\x0d\x0d\x0a", b"\x1f\x8b")
_CAPTURE_MAGICS = PCAP_MAGICS[:-1]
GZIP_MAGIC = b"\x1f\x8b"
GZIP_WBITS = 16 + zlib.MAX_WBITS   # zlib reads one gzip member
HEAD = 65536            # bytes looked at to tell what a file is
MAX_UNZIPPED = 4 << 30  # a gzip'd transcript, stream or flow file is unpacked to disk up to this
KINDS = ("capture", "flows", "transcript", "stream")
RAW_CHUNK = 64 * 1024   # bytes of a raw stream fed to the codec at a time
# A raw MSNP byte stream starts with a command the protocol knows (or an error number),
# then a space or a line end: a text file that merely starts with a capital word is not one.
_MSNP_FIRST_LINE = re.compile(rb"^([A-Z]{3}|\d{3})(?: [\x21-\x7e]|\r?\n)")


def is_pcap(path: str) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(4).startswith(PCAP_MAGICS)
    except OSError:
        return False


@dataclass(frozen=True, slots=True)
class Input:
    """One file named on the command line, and what it turned out to be."""
    name: str    # as given ('-' for standard input)
    kind: str    # one of KINDS
    path: str    # where to read it (a temporary copy for stdin, pipes and gzip'd non-captures)
    damage: str | None = None   # a gzip'd file cut short: what was unpacked before the cut (input.truncated)


class Inputs(list):
    """The inputs of a run; `close()` removes the temporary copies."""

    def __init__(self) -> None:
        super().__init__()
        self.temporary: list[str] = []

    def close(self) -> None:
        for path in self.temporary:
            try:
                os.unlink(path)
            except OSError:
                pass
        self.temporary.clear()

    def __enter__(self) -> "Inputs":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def open_inputs(names: list[str], *, streams: bool = True) -> Inputs:
    """What each named file is; UsageError (one line) for the first that cannot be used.

    `streams`: whether a raw MSNP byte stream of one direction is accepted (it
    always is; a command may pass False where a stream makes no sense)."""
    if names.count("-") > 1:
        raise UsageError("-: standard input can be read only once")
    inputs = Inputs()
    try:
        for name in names:
            inputs.append(_identify(name, inputs, streams))
    except BaseException:
        inputs.close()
        raise
    return inputs


def _spool(source, inputs: Inputs, limit: int | None = None, name: str = "") -> str:
    """Copy a stream into a temporary file (removed by `inputs.close()`)."""
    fd, path = tempfile.mkstemp(prefix="msnp-analyzer-", suffix=".input")
    inputs.temporary.append(path)
    copied = 0
    with os.fdopen(fd, "wb") as out:
        while True:
            chunk = source.read(1 << 20)
            if not chunk:
                break
            copied += len(chunk)
            if limit is not None and copied > limit:
                raise UsageError(f"{name}: unpacks to more than {limit >> 30} GiB; unpack it yourself")
            out.write(chunk)
    return path


def _identify(name: str, inputs: Inputs, streams: bool) -> Input:
    path = name
    if name == "-":
        path = _spool(sys.stdin.buffer, inputs)
    else:
        try:
            mode = os.stat(name).st_mode
        except FileNotFoundError:
            raise UsageError(f"{name}: no such file") from None
        except OSError as exc:
            raise UsageError(f"{name}: {exc.strerror}") from None
        if stat.S_ISDIR(mode):
            raise UsageError(f"{name}: is a directory")
        if not stat.S_ISREG(mode):  # a pipe, a FIFO, /dev/stdin: read once, keep a copy
            try:
                with open(name, "rb") as f:
                    path = _spool(f, inputs)
            except OSError as exc:
                raise UsageError(f"{name}: {exc.strerror}") from None
    head = _head(name, path)
    if not head:
        raise UsageError(f"{name}: empty file")
    if head.startswith(_CAPTURE_MAGICS):
        return Input(name, "capture", path)
    if head.startswith(GZIP_MAGIC):
        inner = _gunzip_head(name, path)
        if inner.startswith(_CAPTURE_MAGICS) or not inner:
            return Input(name, "capture", path)  # the capture reader unpacks it as it goes
        path, damage = _gunzip(path, inputs, MAX_UNZIPPED, name)
        head = inner
    else:
        damage = None
    kind = _kind(path, head, streams)
    if kind is None:
        raise UsageError(f"{name}: {describe(head)}; msnp-analyzer reads pcap, pcapng, mitmproxy flow files, "
                         f"transcripts and MSNP byte streams")
    return Input(name, kind, path, damage)


def _gunzip(path: str, inputs: Inputs, limit: int, name: str) -> tuple[str, str | None]:
    """Unpack a gzip'd transcript, stream or flow file into a temporary file (removed by
    `inputs.close()`), every member of it. A file cut short keeps every byte unpacked before
    the cut (gzip's own reader raises EOFError and loses the last block it was inflating):
    returns (path, what was cut) then, else (path, None). Damage inside the data, past what
    could be unpacked, is a one-line UsageError."""
    fd, out_path = tempfile.mkstemp(prefix="msnp-analyzer-", suffix=".input")
    inputs.temporary.append(out_path)
    unpacked = 0
    inflate, fed = zlib.decompressobj(GZIP_WBITS), False

    def write(data: bytes) -> None:
        nonlocal unpacked
        unpacked += len(data)
        if unpacked > limit:
            raise UsageError(f"{name}: unpacks to more than {limit >> 30} GiB; unpack it yourself")
        out.write(data)

    try:
        with open(path, "rb") as src, os.fdopen(fd, "wb") as out:
            # Small reads: one call inflates at most about 1,000 times what it was given.
            while chunk := src.read(1 << 14):
                while chunk:
                    if not fed and not chunk.strip(b"\0"):
                        break   # zero padding after the last member
                    fed = True
                    write(inflate.decompress(chunk))
                    if not inflate.eof:
                        break
                    chunk = inflate.unused_data   # the next member, if any
                    inflate, fed = zlib.decompressobj(GZIP_WBITS), False
            if fed:
                write(inflate.flush())   # a cut-short member: what it can still give
    except zlib.error as exc:
        raise UsageError(f"{name}: a damaged gzip file ({exc}) after {unpacked} unpacked bytes") from None
    except OSError as exc:
        raise UsageError(f"{name}: {exc.strerror}") from None
    if fed:   # a member started and not finished: the file was cut short
        return out_path, (f"{name}: the gzip file ends before its end-of-stream marker; the {unpacked} bytes "
                          f"unpacked before the cut were analysed")
    return out_path, None


def _gunzip_head(name: str, path: str) -> bytes:
    """The first HEAD unpacked bytes of a gzip file, or as many as a cut-short file holds:
    a truncated .pcap.gz is still a capture, whose reader keeps every packet before the
    cut and reports capture.truncated (`read(HEAD)` raised EOFError and lost them all)."""
    inner = b""
    try:
        with gzip.open(path, "rb") as f:
            while len(inner) < HEAD:
                part = f.read1(HEAD - len(inner))
                if not part:
                    break
                inner += part
    except EOFError:
        if not inner:
            raise UsageError(f"{name}: a damaged gzip file (it ends before any unpacked byte)") from None
    except OSError as exc:
        raise UsageError(f"{name}: a damaged gzip file ({exc})") from None
    return inner


def _head(name: str, path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read(HEAD)
    except OSError as exc:
        raise UsageError(f"{name}: {exc.strerror}") from None


def _kind(path: str, head: bytes, streams: bool) -> str | None:
    from analyzer.msnp.transcript import looks_like_transcript
    if looks_like_transcript(head[:4096]):
        return "transcript"
    if streams:
        from analyzer.msnp.tables import KNOWN_COMMANDS
        m = _MSNP_FIRST_LINE.match(head)
        if m and (m.group(1) in KNOWN_COMMANDS or m.group(1).isdigit()):
            return "stream"
    if head[:1].isdigit():
        from analyzer.capture.mitm.flows import is_flow_file
        if is_flow_file(path):
            return "flows"
    return None


def describe(head: bytes) -> str:
    """What a file we cannot use seems to be, in a few words (for the one-line error)."""
    known = ((b"PK\x03\x04", "a ZIP archive"), (b"%PDF", "a PDF document"), (b"\x7fELF", "an executable (ELF)"),
             (b"MZ", "a Windows executable"), (b"\x89PNG", "a PNG image"), (b"\xff\xd8\xff", "a JPEG image"),
             (b"BZh", "a bzip2 file (unpack it first)"), (b"\xfd7zXZ", "an xz file (unpack it first)"),
             (b"(\xb5/\xfd", "a zstd file (unpack it first)"), (b"SQLite format 3", "an SQLite database"))
    for magic, what in known:
        if head.startswith(magic):
            return f"not a capture: it is {what}"
    text = head.lstrip()
    if text.startswith(b'{"kind"'):
        return "not a capture: it is JSON Lines (msnp-analyzer's own --json output?)"
    if text[:1] in (b"{", b"["):
        return "not a capture: it looks like JSON"
    if text[:1] == b"<":
        return "not a capture: it looks like HTML or XML"
    sample = head[:512]
    printable = sum(32 <= b < 127 or b in (9, 10, 13) for b in sample)
    if printable >= len(sample) * 0.95:
        first = head.split(b"\n", 1)[0][:40].decode("ascii", "replace").strip()
        return f"not a capture, transcript or MSNP stream: a text file starting {first!r}"
    return "not a capture: unrecognised binary data"


def open_captures(paths: list[str], names: list[str] | None = None):
    """Open every capture before reading any, so a bad argument fails fast (exit 2).
    `names`: how to call each in messages (the command-line name of a temporary copy)."""
    from analyzer.capture.pcap import CaptureError, CaptureFile
    files = []
    try:
        for i, path in enumerate(paths):
            capture = CaptureFile(path)
            if names is not None and names[i] != path:
                capture.path = names[i]  # reports and anomalies name the file the user gave
            files.append(capture)
    except CaptureError as exc:
        for f in files:
            f.close()
        message = str(exc)
        if names is not None:
            message = message.replace(paths[len(files)], names[len(files)])
        raise UsageError(message) from None
    return files


def analyze_file(capture, analysis, detector, *, buffer, reorder_timeout, idle_timeout, progress=None,
                 max_flows=None) -> dict:
    """Stream one capture through TCP reassembly into `analysis`. Returns the tracker's counts."""
    from analyzer.capture.tcp import DEFAULT_MAX_FLOWS, TcpTracker
    tracker = TcpTracker(analysis, buffer=buffer, reorder_timeout=reorder_timeout,
                         idle_timeout=idle_timeout, detector=detector,
                         max_flows=max_flows if max_flows is not None else DEFAULT_MAX_FLOWS)
    if capture.lane:
        last_ts = tracker.drive(capture, progress)   # the compiled core's TCP fast lane
    else:
        segment = tracker.segment
        last_ts = None
        n = 0
        for ts, key, seq, ack, flags, payload in capture.segments():
            segment(ts, key, seq, ack, flags, payload)
            last_ts = ts
            n += 1
            if progress is not None and n & 0x3FFF == 0:
                progress(capture)
    tracker.finish(tracker.now if tracker.now else last_ts)
    for anomaly in capture.anomalies:
        analysis.anomaly(None, anomaly)
    stats = dict(tracker.stats)
    stats["packets"] = capture.packets
    return stats


def feed_transcript(analysis, path: str, data: bytes, prefix: str = "", version: int | None = None) -> dict:
    """A transcript's chunks, one Connection per `@label` (default "1"), ids prefixed by `prefix`."""
    from analyzer.msnp.transcript import TranscriptError, check, iter_chunks
    try:
        check(data)  # a bad line is exit 2 before anything is written; then fed one chunk at a time
    except TranscriptError as exc:
        raise UsageError(f"{path}: {exc}") from None
    conns: dict = {}
    for chunk in iter_chunks(data):
        key = chunk.conn or "1"
        conn = conns.get(key)
        if conn is None:
            conn = conns[key] = analysis.open(conn_id=prefix + key, version=version)
        analysis.feed(conn, chunk.direction, chunk.data, chunk.ts)
    return conns


def feed_input(analysis, inp: Input, *, prefix: str = "", version: int | None = None,
               direction: str | None = None, detector=None, buffer: int | None = None,
               reorder_timeout: float | None = None, idle_timeout: float | None = None,
               max_flows: int | None = None, progress=None) -> dict | None:
    """Read one input into `analysis`. Captures go through TCP reassembly (returns (counts, the
    CaptureFile)),
    flow files through the mitmproxy layer, transcripts and streams straight to the codec.
    `prefix` goes before transcript and stream connection ids (several files in one run)."""
    if inp.kind == "capture":
        from analyzer.capture.detect import Detector
        from analyzer.capture.tcp import DEFAULT_BUFFER, DEFAULT_IDLE_TIMEOUT, DEFAULT_REORDER_TIMEOUT
        [capture] = open_captures([inp.path], [inp.name])
        try:
            stats = analyze_file(capture, analysis, detector or Detector(),
                                 buffer=DEFAULT_BUFFER if buffer is None else buffer,
                                 reorder_timeout=DEFAULT_REORDER_TIMEOUT if reorder_timeout is None else reorder_timeout,
                                 idle_timeout=DEFAULT_IDLE_TIMEOUT if idle_timeout is None else idle_timeout,
                                 progress=progress, max_flows=max_flows)
        finally:
            capture.close()
        if progress is not None and hasattr(progress, "file_done"):
            progress.file_done(capture)
        return stats, capture
    if inp.damage is not None:
        _truncated(analysis, inp)
    if inp.kind == "flows":
        from analyzer.capture.mitm.flows import FlowFileError, read_flow_file
        try:
            read_flow_file(inp.path, analysis)
        except FlowFileError as exc:
            raise UsageError(str(exc).replace(inp.path, inp.name)) from None
        return None
    if inp.kind == "transcript":
        data = read_input(inp.path)  # a transcript is checked whole before anything is fed
        conns = feed_transcript(analysis, inp.name, data, prefix, version)
        for conn in conns.values():
            analysis.close(conn, conn.last_ts)  # each at its own last line: a transcript has no TCP close
        return None
    from analyzer.msnp import C2S
    from analyzer.msnp.direction import guess_direction
    source = open_input(inp.path)
    try:
        try:
            data = source.read(RAW_CHUNK)
        except OSError as exc:
            raise UsageError(f"{inp.name}: {exc.strerror}") from None
        way = direction or guess_direction(data)
        conn = analysis.open(conn_id=prefix + "1", version=version,
                             client=inp.name if way == C2S else None, server=inp.name if way != C2S else None)
        analysis.one_sided(conn, way)
        # Read and fed RAW_CHUNK at a time, as a socket would deliver it: the events of one
        # read are written and dropped before the next, and the file is never held whole.
        while data:
            analysis.feed(conn, way, data, None)
            data = source.read(RAW_CHUNK)
    finally:
        source.close()
    analysis.close(conn)
    return None


def _truncated(analysis, inp: Input) -> None:
    """A gzip'd input cut short: named once, before what could be unpacked is read."""
    from analyzer.msnp import Anomaly
    analysis.anomaly(None, Anomaly("input.truncated", inp.damage, None, None, None))


def feed_inputs(analysis, inputs: list[Input], *, version: int | None = None, direction: str | None = None,
                **capture_options) -> list:
    """Every input in order. Transcript and stream connection ids get the file's number as a
    prefix when there are several files, so they stay distinct. Returns [(CaptureFile, counts)]
    for the captures (the analyze command's table)."""
    many = len(inputs) > 1
    captures = []
    for n, inp in enumerate(inputs, 1):
        got = feed_input(analysis, inp, prefix=f"{n}:" if many else "", version=version, direction=direction,
                         **capture_options)
        if got is not None:
            stats, capture = got
            captures.append((capture, stats))
    return captures


def feed_capture(analysis, path: str, prefix: str = "", version: int | None = None) -> None:
    """Any input (see `open_inputs`) into `analysis`; the plugins' and tests' shortcut."""
    with open_inputs([path]) as inputs:
        feed_input(analysis, inputs[0], prefix=prefix, version=version)
