"""Differential fuzzing of whole capture files: the compiled core's path against the Python one, bounded.

    python3 bench/fuzz_capture.py --seconds 300 [--seed N]

Seeds are the committed sample captures (pcap and pcapng) and the first 64 KiB of each
real capture in ../shared/captures-real/. Each input is a seed with a few random edits
(bytes overwritten, inserted or removed, a cut, a record length or block length set to
an odd value, a header byte flipped) and goes through

- both capture readers (`CaptureFile` with the core and without it): the same segments,
  anomalies and counters, or the same one-line `CaptureError`;
- one in ten: `msnp-analyzer analyze FILE --json OUT --no-redact` on each implementation
  in this process: the same exit status and the same JSON Lines, byte for byte.

With `--tcp` the edits are made to the TCP segments instead (the compiled core's fast lane
and the Python tracker see the same file and must write the same records): the first 400
IPv4 segments of each seed, then a few of: a segment sent again (the same bytes or other
bytes: a retransmission, an overlap mismatch), two swapped, one dropped, one split in two,
FIN, RST or SYN set on one, an ACK or a sequence number moved, a pause of 5 s to 40 min from
one segment on (timeouts: reply, quiet release of unacknowledged bytes, idle); the file is
written again as Ethernet/IPv4 and every input is analysed end to end by both.

Any difference, any exception other than the reader's own `CaptureError`, and any Rust
panic (pyo3 raises PanicException) is a finding: the input is saved to
tests/fuzz_crashes/capture-* (tests/capture/test_pcap_core.py reads every file there on
both readers) and the run exits 1. It prints the inputs tried and the findings.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import os
import random
import struct
import sys
import tempfile
import time
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
CRASHES = ROOT / "tests" / "fuzz_crashes"
REAL = next((p for p in (ROOT.parent / "shared" / "captures-real", ROOT.parent.parent / "shared" / "captures-real")
             if p.exists()), ROOT.parent / "shared" / "captures-real")


def seeds() -> list[bytes]:
    found = [p.read_bytes() for p in sorted((ROOT / "captures").glob("*.pcap*"))]
    found += [p.read_bytes()[:65536] for p in sorted(REAL.glob("*.pcap*"))]
    return [s for s in found if len(s) >= 24]


def mutate(rng: random.Random, data: bytes) -> bytes:
    buf = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        if not buf:
            break
        kind = rng.randrange(7)
        at = rng.randrange(len(buf))
        if kind == 0:      # overwrite a few bytes
            n = rng.randint(1, 8)
            buf[at:at + n] = bytes(rng.randrange(256) for _ in range(n))
        elif kind == 1:    # insert
            buf[at:at] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 16)))
        elif kind == 2:    # remove
            del buf[at:at + rng.randint(1, 64)]
        elif kind == 3:    # cut short
            del buf[max(1, at):]
        elif kind == 4:    # an odd 32-bit length (a record's caplen, a block's length) somewhere aligned
            at -= at % 4
            value = rng.choice([0, 1, 3, 0xFFFF, 0x10000, 0x7FFFFFFF, 0xFFFFFFFF, rng.randrange(1 << 32)])
            buf[at:at + 4] = struct.pack(rng.choice("<>") + "I", value)
        elif kind == 5:    # flip one bit
            buf[at] ^= 1 << rng.randrange(8)
        else:              # duplicate a slice (a repeated record)
            n = rng.randint(16, 256)
            buf[at:at] = buf[at:at + n]
    return bytes(buf)


def tcp_seeds(pool: list[bytes], tmp: str) -> list[list[tuple]]:
    """The first 400 IPv4 TCP segments of each seed, as the Python reader yields them."""
    import analyzer.core as core
    from analyzer.capture.pcap import CaptureError, CaptureFile
    path = os.path.join(tmp, "seed")
    found, saved = [], core.CORE
    core.CORE = None
    try:
        for data in pool:
            with open(path, "wb") as f:
                f.write(data)
            try:
                capture = CaptureFile(path)
                try:
                    segments = [seg for _, seg in zip(range(400), capture.segments()) if len(seg[1]) == 12]
                finally:
                    capture.close()
            except CaptureError:
                continue
            if segments:
                found.append(segments)
    finally:
        core.CORE = saved
    return found


def mutate_tcp(rng: random.Random, segments: list[tuple]) -> list[tuple]:
    """A few TCP-level edits of `segments` ((ts, key, seq, ack, flags, payload) tuples)."""
    segs = list(segments)
    for _ in range(rng.randint(1, 4)):
        if not segs:
            break
        i = rng.randrange(len(segs))
        ts, key, seq, ack, flags, payload = segs[i]
        kind = rng.randrange(10)
        if kind == 0 and payload:      # sent again later, the same bytes or others
            if rng.random() < 0.5:
                k = rng.randrange(len(payload))
                payload = payload[:k] + bytes([payload[k] ^ 0x20]) + payload[k + 1:]
            j = min(len(segs), i + 1 + rng.randrange(8))
            segs.insert(j, (segs[j - 1][0], key, seq, ack, flags, payload))
        elif kind == 1 and i + 1 < len(segs):
            segs[i], segs[i + 1] = segs[i + 1], segs[i]
        elif kind == 2:
            del segs[i]
        elif kind == 3 and len(payload) > 1:   # split in two
            k = rng.randrange(1, len(payload))
            segs[i:i + 1] = [(ts, key, seq, ack, flags & ~0x01, payload[:k]),
                             (ts, key, (seq + k) & 0xFFFFFFFF, ack, flags, payload[k:])]
        elif kind == 4:
            segs[i] = (ts, key, seq, ack, flags | rng.choice([0x01, 0x04, 0x02, 0x11]), payload)
        elif kind == 5:
            segs[i] = (ts, key, seq, (ack + rng.choice([-100, -3, 1, 7, 1 << 31])) & 0xFFFFFFFF, flags, payload)
        elif kind == 6:
            segs[i] = (ts, key, (seq + rng.choice([-5, -1, 1, 3, 1000])) & 0xFFFFFFFF, ack, flags, payload)
        elif kind == 7:                 # a pause from here on
            pause = rng.choice([5.0, 11.0, 65.0, 200.0, 2400.0])
            segs[i:] = [(t + pause, *rest) for t, *rest in segs[i:]]
        elif kind == 8 and payload:     # a bare ACK of the other direction in between
            rkey = key[4:8] + key[:4] + key[10:12] + key[8:10]
            segs.insert(i + 1, (ts, rkey, ack, (seq + len(payload)) & 0xFFFFFFFF, 0x10, b""))
        else:                           # time going back a little
            segs[i] = (ts - rng.choice([0.001, 1.0]), key, seq, ack, flags, payload)
    return segs


def write_tcp(segments: list[tuple]) -> bytes:
    """A classic pcap (Ethernet, IPv4) of `segments`."""
    sys.path.insert(0, str(ROOT / "captures"))
    from make_hostile import ethernet, pcap_header, pcap_record, tcp_segment
    from analyzer.capture.pcap import split_key
    out = [pcap_header()]
    for ts, key, seq, ack, flags, payload in segments:
        src, sport, dst, dport = split_key(key)
        names = "".join(c for bit, c in ((1, "F"), (2, "S"), (4, "R"), (8, "P"), (16, "A")) if flags & bit)
        out.append(pcap_record(ethernet(tcp_segment(src, sport, dst, dport, seq, ack, names, payload)),
                               max(0.0, ts)))
    return b"".join(out)


def read_both(path: str):
    import analyzer.core as core
    from analyzer.capture.pcap import CaptureError, CaptureFile
    results = []
    saved = core.CORE
    try:
        for impl in (None, saved):
            core.CORE = impl
            try:
                capture = CaptureFile(path)
                try:
                    segments = list(capture.segments())
                finally:
                    capture.close()
                results.append((segments, [(a.name, a.detail, a.offset) for a in capture.anomalies],
                                (capture.packets, capture.fragments, capture.bad_records)))
            except CaptureError as exc:
                results.append(("CaptureError", str(exc)))
    finally:
        core.CORE = saved
    return results


def analyze_both(path: str, out_dir: str):
    import analyzer.core as core
    from analyzer.cli.main import main
    results = []
    saved = core.CORE
    try:
        for n, impl in enumerate((None, saved)):
            core.CORE = impl
            out = os.path.join(out_dir, f"out{n}.jsonl")
            with redirect_stdout(io.StringIO()), redirect_stderr(io.StringIO()) as err:
                code = main(["analyze", "-q", path, "--json", out, "--no-redact", "--fail-on", "never"])
            text = Path(out).read_bytes() if os.path.exists(out) else b""
            if os.path.exists(out):
                os.unlink(out)
            results.append((code, text, err.getvalue() if code == 2 else ""))
    finally:
        core.CORE = saved
    return results


def compare_end_to_end(path: str, tmp: str, data: bytes) -> int:
    """`analyze` of the input on both paths: 1 (saved as a finding) when they differ, else 0."""
    python, rust = analyze_both(path, tmp)
    if python != rust:
        save(data, f"analyze differs (exit {python[0]} vs {rust[0]})")
        return 1
    return 0


def save(data: bytes, why: str) -> Path:
    CRASHES.mkdir(parents=True, exist_ok=True)
    path = CRASHES / f"capture-{hashlib.sha1(data).hexdigest()[:16]}"
    path.write_bytes(data)
    print(f"finding: {why} -> {path.relative_to(ROOT)}", flush=True)
    return path


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=60.0, help="how long to run (default 60)")
    ap.add_argument("--seed", type=int, default=1, help="random seed (default 1)")
    ap.add_argument("--tcp", action="store_true", help="edit TCP segments (the fast lane), not file bytes")
    args = ap.parse_args()
    import analyzer.core as core
    if core.CORE is None:
        print(f"the compiled core is not built ({core.REASON}): nothing to compare", file=sys.stderr)
        return 2
    rng = random.Random(args.seed)
    pool = seeds()
    deadline = time.monotonic() + args.seconds
    tried = analysed = findings = 0
    with tempfile.TemporaryDirectory(prefix="fuzz-capture-") as tmp:
        path = os.path.join(tmp, "input")
        flows = tcp_seeds(pool, tmp) if args.tcp else []
        while time.monotonic() < deadline:
            if args.tcp:
                data = write_tcp(mutate_tcp(rng, rng.choice(flows)))
                with open(path, "wb") as f:
                    f.write(data)
                tried += 1
                analysed += 1
                try:
                    findings += compare_end_to_end(path, tmp, data)
                except Exception as exc:  # noqa: BLE001 - any exception (a PanicException too) is a finding
                    save(data, f"{type(exc).__name__}: {exc}"[:200])
                    findings += 1
                continue
            data = mutate(rng, rng.choice(pool))
            with open(path, "wb") as f:
                f.write(data)
            tried += 1
            try:
                python, rust = read_both(path)
                if python != rust:
                    save(data, "the readers differ")
                    findings += 1
                    continue
                if tried % 10 == 0:
                    analysed += 1
                    findings += compare_end_to_end(path, tmp, data)
            except Exception as exc:  # noqa: BLE001 - any exception (a PanicException too) is a finding
                save(data, f"{type(exc).__name__}: {exc}"[:200])
                findings += 1
    read = "" if args.tcp else f"{tried} inputs read by both readers, "
    print(f"{read}{analysed} {'TCP-edited inputs ' if args.tcp else ''}analysed end to end by both, "
          f"{findings} findings in {args.seconds:g} s (seed {args.seed})")
    return 1 if findings else 0


if __name__ == "__main__":
    sys.exit(main())
