"""Codec throughput against a minimal line-splitting loop, measured in the same run.

    python3 bench/codec.py [--mb 50] [--repeat 3]

Builds a synthetic two-way MSNP session of about --mb megabytes (a realistic
mix: switchboard chat MSGs with MIME payloads and their ACKs, typing
notifications, presence NLN/UBX, PNG/QNG, CHG/ILN, XFR SB), cuts it into
TCP-sized reads in wire order, and times:

- codec: everything `analyzer.connection.Connection.feed` does (framing,
  TrIDs, payloads, pairing, anomalies, counters), both directions;
- reference: `for line in data.split(b"\\r\\n"): line.split(b" ")` over the
  same bytes, the least any line-based decoder must do.

Prints MB/s for each and their ratio (codec / reference); the target is 0.25.
Median ratio of --repeat alternating runs. No network, no files.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from analyzer.codec import C2S, S2C, Anomaly, encode_command  # noqa: E402
from analyzer.connection import Connection  # noqa: E402

TARGET = 0.25
READ = 16 * 1024  # bytes per read, as a socket or a pcap reassembler hands them over


def _text(body: str) -> bytes:
    return ("MIME-Version: 1.0\r\nContent-Type: text/plain; charset=UTF-8\r\n"
            "X-MMS-IM-Format: FN=Segoe%20UI; EF=; CO=0; CS=0; PF=22\r\n\r\n" + body).encode()


def _typing(handle: str) -> bytes:
    return f"MIME-Version: 1.0\r\nContent-Type: text/x-msmsgscontrol\r\nTypingUser: {handle}\r\n\r\n\r\n".encode()


PHRASES = ["hi", "how are you doing today?", "did you see the game last night? unbelievable ending",
           "ok", "brb", "lol", "sending you the file now, tell me when it arrives",
           "I'll be there at eight, save me a seat near the window please"]


def build_session(target_bytes: int) -> list[tuple[str, bytes]]:
    """Wire-ordered (direction, bytes) events of one long NS+SB-like session."""
    events: list[tuple[str, bytes]] = []
    size = 0
    trid = 1
    i = 0

    def add(direction, data):
        nonlocal size
        events.append((direction, data))
        size += len(data)

    add(C2S, encode_command("VER", trid, ["MSNP12", "CVR0"]))
    add(S2C, encode_command("VER", trid, ["MSNP12", "CVR0"]))
    while size < target_bytes:
        i += 1
        trid += 1
        phrase = PHRASES[i % len(PHRASES)]
        add(C2S, encode_command("MSG", trid, ["U"], _typing("alice@example.com")))
        trid += 1
        add(C2S, encode_command("MSG", trid, ["A"], _text(phrase)))
        add(S2C, encode_command("ACK", trid, []))
        add(S2C, encode_command("MSG", None, ["bob@example.com", "Bob"], _typing("bob@example.com")))
        add(S2C, encode_command("MSG", None, ["bob@example.com", "Bob"], _text(PHRASES[(i * 3) % len(PHRASES)])))
        if i % 4 == 0:
            add(S2C, encode_command("NLN", None, ["AWY", f"user{i % 50}@example.com", "Friend", "1342177324"]))
            add(S2C, encode_command("UBX", None, [f"user{i % 50}@example.com"],
                                    b"<Data><PSM>busy</PSM><CurrentMedia></CurrentMedia></Data>"))
        if i % 10 == 0:
            add(C2S, b"PNG\r\n")
            add(S2C, b"QNG 50\r\n")
        if i % 25 == 0:
            trid += 1
            add(C2S, encode_command("CHG", trid, ["NLN", "1342177324"]))
            add(S2C, encode_command("CHG", trid, ["NLN", "1342177324"]))
            add(S2C, encode_command("ILN", trid, ["NLN", "bob@example.com", "Bob", "1342177324"]))
            trid += 1
            add(C2S, encode_command("XFR", trid, ["SB"]))
            add(S2C, encode_command("XFR", trid, ["SB", "127.0.0.3:1864", "CKI", f"{i}.1050826919.32308"]))
    return events


def as_reads(events: list[tuple[str, bytes]]) -> list[tuple[str, bytes]]:
    """Consecutive same-direction bytes coalesced into reads of at most READ bytes."""
    reads: list[tuple[str, bytes]] = []
    direction, buf = None, bytearray()
    for d, data in events:
        if d != direction and buf:
            reads.append((direction, bytes(buf)))
            buf = bytearray()
        direction = d
        buf += data
        while len(buf) >= READ:
            reads.append((direction, bytes(buf[:READ])))
            del buf[:READ]
    if buf:
        reads.append((direction, bytes(buf)))
    return reads


def run_codec(reads) -> tuple[float, Connection, int]:
    conn = Connection("bench")
    anomalies = 0
    feed = conn.feed
    t0 = time.perf_counter()
    for direction, data in reads:
        feed(direction, data, 1.0)
    events = conn.close(1.0)
    elapsed = time.perf_counter() - t0
    anomalies = sum(1 for e in events if type(e) is Anomaly) + sum(conn.anomalies.values())
    return elapsed, conn, anomalies


def run_reference(data: bytes) -> float:
    t0 = time.perf_counter()
    for line in data.split(b"\r\n"):
        line.split(b" ")
    return time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mb", type=float, default=50.0, help="session size in MB (default 50)")
    ap.add_argument("--repeat", type=int, default=3, help="alternating runs of each; the median pair is reported (default 3)")
    args = ap.parse_args()
    events = build_session(int(args.mb * 1_000_000))
    reads = as_reads(events)
    data = b"".join(d for _, d in events)
    mb = len(data) / 1_000_000
    # Codec and reference run alternately and each pair gives a ratio; the median
    # pair is reported, so a burst of load on a shared machine skews neither side.
    pairs = []
    conn = None
    for _ in range(args.repeat):
        elapsed, conn, anomalies = run_codec(reads)
        pairs.append((elapsed, run_reference(data)))
    pairs.sort(key=lambda p: p[1] / p[0])
    codec_best, ref_best = pairs[len(pairs) // 2]
    commands = sum(conn.commands.values())
    codec_rate, ref_rate = mb / codec_best, mb / ref_best
    ratio = codec_rate / ref_rate
    print(f"session: {mb:.1f} MB, {len(reads)} reads, {commands} commands, "
          f"{sum(conn.outcomes.values())} transactions, {anomalies} anomalies")
    print(f"codec (Connection.feed):        {codec_rate:8.1f} MB/s  ({codec_best:.2f} s, "
          f"{commands / codec_best / 1e6:.2f} M commands/s)")
    print(f"reference (split lines+spaces): {ref_rate:8.1f} MB/s  ({ref_best:.2f} s)")
    print(f"ratio codec/reference: {ratio:.2f} (target >= {TARGET})  {'OK' if ratio >= TARGET else 'BELOW TARGET'}")
    return 0 if ratio >= TARGET else 1


if __name__ == "__main__":
    sys.exit(main())
