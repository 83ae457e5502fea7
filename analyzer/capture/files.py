"""What the offline commands read, fed into an `Analysis`: transcripts, pcap/pcapng, flow files.

One place decides what a file is and which capture layer reads it, so
`decode`, `export` and `chat` agree. Unusable input raises `UsageError`
(exit 2, one line).
"""

from __future__ import annotations

from pathlib import Path

from analyzer.errors import UsageError, read_input

PCAP_MAGICS = (b"\xd4\xc3\xb2\xa1", b"\xa1\xb2\xc3\xd4", b"\x4d\x3c\xb2\xa1", b"\xa1\xb2\x3c\x4d",
               b"\x0a\x0d\x0d\x0a", b"\x1f\x8b")


def is_pcap(path: str) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(4).startswith(PCAP_MAGICS)
    except OSError:
        return False


def open_captures(paths: list[str]):
    """Open every file before reading any, so a bad argument fails fast (exit 2)."""
    from analyzer.capture.pcap import CaptureError, CaptureFile
    files = []
    try:
        for path in paths:
            files.append(CaptureFile(path))
    except CaptureError as exc:
        for f in files:
            f.close()
        raise UsageError(str(exc)) from None
    return files


def analyze_file(capture, analysis, detector, *, buffer, reorder_timeout, idle_timeout, progress=None,
                 max_flows=None) -> dict:
    """Stream one capture through TCP reassembly into `analysis`. Returns the tracker's counts."""
    from analyzer.capture.tcp import DEFAULT_MAX_FLOWS, TcpTracker
    tracker = TcpTracker(analysis, buffer=buffer, reorder_timeout=reorder_timeout,
                         idle_timeout=idle_timeout, detector=detector,
                         max_flows=max_flows if max_flows is not None else DEFAULT_MAX_FLOWS)
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


def feed_pcap(analysis, path: str) -> None:
    """A pcap/pcapng file through the analyze command's own entry (reader, TCP reassembly, detection)."""
    from analyzer.capture.detect import Detector
    from analyzer.capture.tcp import DEFAULT_BUFFER, DEFAULT_IDLE_TIMEOUT, DEFAULT_REORDER_TIMEOUT
    [capture] = open_captures([path])
    try:
        analyze_file(capture, analysis, Detector(), buffer=DEFAULT_BUFFER,
                     reorder_timeout=DEFAULT_REORDER_TIMEOUT, idle_timeout=DEFAULT_IDLE_TIMEOUT)
    finally:
        capture.close()


def feed_capture(analysis, path: str, prefix: str = "", version: int | None = None) -> None:
    """A pcap/pcapng capture or a transcript; anything else is unusable input."""
    from analyzer.msnp.transcript import looks_like_transcript
    p = Path(path)
    if not p.exists():
        raise UsageError(f"{path}: no such file")
    if p.is_dir():
        raise UsageError(f"{path}: is a directory")
    if is_pcap(path):
        feed_pcap(analysis, path)
        return
    data = read_input(path)
    if not looks_like_transcript(data[:4096]):
        raise UsageError(f"{path}: not a pcap, pcapng or transcript file")
    conns = feed_transcript(analysis, path, data, prefix, version)
    last = max((c.last_ts for c in conns.values() if c.last_ts is not None), default=None)
    for conn in conns.values():
        analysis.close(conn, last)
