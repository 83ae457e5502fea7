"""Coverage-guided fuzzing of the codec and the pairing (atheris), bounded in time.

    python3 bench/fuzz_codec.py --seconds 600        # the long run (default 600 s)
    python3 bench/fuzz_codec.py --seconds 60 --jobs 1

The seed corpus is built from the bundled transcripts (captures/*.msnp) and the
real captures in ../shared/captures-real/ (their TCP payloads, extracted with
scapy) into bench/.cache/fuzz-corpus/. An input is interpreted as a little
script (see `script_from`): which direction each chunk goes, how it is cut,
which protocol version is assumed. Any input that breaks an invariant is saved
to tests/fuzz_crashes/ and becomes a regression test
(tests/test_fuzz_regressions.py runs every file there through `check`).

Invariants checked on every input:
- the analysis never fails internally (no `analyzer.internal_error`);
- per direction, the bytes of Command and Skipped events (plus what is still
  pending at close) equal the bytes fed in, in order;
- every transaction ends with one of the four outcomes.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CACHE = ROOT / "bench" / ".cache" / "fuzz-corpus"
CRASHES = ROOT / "tests" / "fuzz_crashes"
REAL = ROOT.parent / "shared" / "captures-real"


class InvariantBroken(AssertionError):
    pass


def script_from(data: bytes):
    """Turn fuzz bytes into (version, [(direction, chunk)]).

    Byte 0 picks the version (none, 2, 8, 11, 13, 15, 18); then records of a
    control byte (bit 7: direction, bits 0-6: chunk length 1..128) followed by
    that many bytes.
    """
    versions = (None, 2, 8, 11, 13, 15, 18)
    if not data:
        return None, []
    version = versions[data[0] % len(versions)]
    chunks = []
    pos = 1
    while pos < len(data):
        ctl = data[pos]
        size = (ctl & 0x7F) + 1
        chunk = data[pos + 1:pos + 1 + size]
        pos += 1 + size
        if chunk:
            chunks.append(("s2c" if ctl & 0x80 else "c2s", chunk))
    return version, chunks


def check(data: bytes) -> None:
    """Run one fuzz input through a Connection and verify the invariants."""
    from analyzer.msnp import OUTCOMES, Anomaly, Command, Skipped, Transaction
    from analyzer.analysis.connection import Connection, Limits

    version, chunks = script_from(data)
    conn = Connection("fuzz", limits=Limits(max_line=512, max_payload=4096, reply_timeout=5.0),
                      version=version)
    fed = {"c2s": bytearray(), "s2c": bytearray()}
    seen = {"c2s": bytearray(), "s2c": bytearray()}
    events = []
    ts = 0.0
    for direction, chunk in chunks:
        ts += 0.25
        fed[direction] += chunk
        events += conn.feed(direction, chunk, ts)
    events += conn.close(ts + 1)
    for event in events:
        if isinstance(event, Anomaly) and event.name == "analyzer.internal_error":
            raise InvariantBroken(f"internal error: {event.detail}")
        if isinstance(event, (Command, Skipped)):
            seen[event.direction] += event.raw
        if isinstance(event, Transaction) and event.outcome not in OUTCOMES:
            raise InvariantBroken(f"transaction without an outcome: {event!r}")
    for direction in fed:
        if bytes(seen[direction]) != bytes(fed[direction]):
            raise InvariantBroken(f"{direction}: re-emitted {len(seen[direction])} bytes "
                                  f"!= {len(fed[direction])} fed")


def encode_script(version_index: int, chunks: list[tuple[str, bytes]]) -> bytes:
    """The inverse of script_from, for building seeds from real streams."""
    out = bytearray([version_index])
    for direction, data in chunks:
        for i in range(0, len(data), 128):
            piece = data[i:i + 128]
            out.append((0x80 if direction == "s2c" else 0) | (len(piece) - 1))
            out += piece
    return bytes(out)


def build_seeds() -> list[bytes]:
    seeds = []
    from analyzer.msnp.transcript import parse
    for path in sorted((ROOT / "captures").glob("*.msnp")):
        chunks = [(c.direction, c.data) for c in parse(path.read_bytes())]
        seeds.append(encode_script(2, chunks))  # version 8 assumed
        seeds.append(encode_script(0, chunks))
    for name in ("ndpi_msnms.pcap", "ppa1e_msnms.pcap"):
        path = REAL / name
        if not path.exists():
            continue
        from scapy.utils import rdpcap  # seeds only; the product path never uses rdpcap
        from scapy.layers.inet import IP, TCP
        streams: dict = {}
        for pkt in rdpcap(str(path)):
            if IP in pkt and TCP in pkt:
                ip, tcp = pkt[IP], pkt[TCP]
                payload = bytes(tcp.payload)[:max(0, ip.len - ip.ihl * 4 - tcp.dataofs * 4)]
                if payload:
                    key = tuple(sorted([(ip.src, tcp.sport), (ip.dst, tcp.dport)]))
                    direction = "c2s" if tcp.dport == 1863 else "s2c"
                    streams.setdefault(key, []).append((float(pkt.time), tcp.seq, direction, payload))
        for items in streams.values():
            items.sort()
            chunks = [(d, p) for _, _, d, p in items]
            seeds.append(encode_script(3, chunks)[:8192])  # MSNP11, capped for speed
    return seeds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=600, help="how long to fuzz (default 600)")
    parser.add_argument("--jobs", type=int, default=1)
    args = parser.parse_args()

    import atheris

    CACHE.mkdir(parents=True, exist_ok=True)
    CRASHES.mkdir(parents=True, exist_ok=True)
    for seed in build_seeds():
        (CACHE / hashlib.sha1(seed).hexdigest()).write_bytes(seed)
    print(f"seed corpus: {len(list(CACHE.iterdir()))} inputs in {CACHE}", flush=True)

    with atheris.instrument_imports(include=["analyzer"]):
        import analyzer.analysis.connection  # noqa: F401
        import analyzer.msnp  # noqa: F401

    found = []

    def target(data: bytes) -> None:
        try:
            check(data)
        except Exception as exc:  # noqa: BLE001 - every failure is a finding
            name = CRASHES / f"crash-{hashlib.sha1(data).hexdigest()[:16]}"
            if not name.exists():
                name.write_bytes(data)
                found.append((name, repr(exc)))
                print(f"FOUND {name.name}: {exc!r}", flush=True)

    started = time.monotonic()
    argv = [sys.argv[0], str(CACHE), f"-max_total_time={args.seconds}", "-max_len=4096",
            "-print_final_stats=1", f"-jobs={args.jobs}" if args.jobs > 1 else "-runs=-1"]
    atheris.Setup(argv, target)
    try:
        atheris.Fuzz()
    except SystemExit:
        pass
    finally:
        elapsed = time.monotonic() - started
        print(f"fuzzed {elapsed:.0f} s; invariant violations found: {len(found)}", flush=True)
        for name, why in found:
            print(f"  {name.relative_to(ROOT)}: {why}")
    return 1 if found else 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    sys.exit(main())
