"""Differential fuzzing of the compiled core against the Python reference (atheris), bounded.

    python3 bench/fuzz_core.py --seconds 300

Each input is read as bench/fuzz_codec.py's little script (version, then chunks with
their directions) and goes through both implementations of one connection's readers
(`analyzer._core.CommandReader` and `analyzer.msnp.reader.CommandReader`, sharing a
`ProtocolState` per implementation), whole and re-cut into 1..7-byte pieces, with a gap
in the middle; and the input's bytes are also decoded as a raw frame of every link type
by both frame decoders. The Python reader's events (whole input) are also written as JSON
Lines by `JsonLinesWriter` with and without the core's formatter (redacting and not). Any difference in any event field, any exception and any Rust
panic (pyo3 raises it as PanicException) is a finding: the input is saved to
tests/fuzz_crashes/core-*, where tests/msnp/test_reader_core.py's corpus test picks it up
as a regression. Without atheris (`pip install atheris`) it runs a seeded random-mutation
loop over the same seeds for the same time instead. A finding gives a non-zero exit (under
atheris: libFuzzer's crash report; its closing "Done N runs in S second(s)" gives the figures).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

CRASHES = ROOT / "tests" / "fuzz_crashes"


class Different(AssertionError):
    pass


def fields(event) -> tuple:
    return (type(event).__name__, *(getattr(event, s) for s in type(event).__slots__))


def run(mod, version, steps):
    from analyzer.msnp import C2S, S2C
    state = mod.ProtocolState(version)
    readers = {d: mod.CommandReader(d, state, max_line=512, max_payload=4096) for d in (C2S, S2C)}
    out = []
    for direction, action, data, ts in steps:
        r = readers[direction]
        events = r.feed(data, ts) if action == "feed" else r.gap(data, ts) if action == "gap" else r.close(ts)
        out += [fields(e) for e in events]
        out.append((r.offset, r.pending))
    out.append((state.version, list(state.offered)))
    return out


def check(data: bytes) -> None:
    from analyzer.core import CORE
    from analyzer.capture.pcap import KNOWN_LINKTYPES, decode_ip, link_offset
    from analyzer.msnp import C2S, S2C
    from analyzer.msnp import reader as reference
    from fuzz_codec import script_from
    version, chunks = script_from(data)
    whole = [(d, "feed", c, i * 0.25) for i, (d, c) in enumerate(chunks)]
    cut = []
    for i, (d, c) in enumerate(chunks):
        step = 1 + (i % 7)
        cut += [(d, "feed", c[j:j + step], i) for j in range(0, len(c), step)]
        if i == len(chunks) // 2:
            cut.append((d, "gap", 1 + len(c) % 97, None))
    for steps in (whole, cut):
        steps = steps + [(C2S, "close", None, 99.0), (S2C, "close", None, None)]
        want = run(reference, version, steps)
        got = run(CORE, version, steps)
        if got != want:
            first = next(i for i, (a, b) in enumerate(zip(got, want)) if a != b) if len(got) == len(want) else -1
            raise Different(f"reader events differ at {first}: {got[first] if first >= 0 else len(got)} "
                            f"vs {want[first] if first >= 0 else len(want)}")
    check_json(version, whole)
    for linktype in sorted(KNOWN_LINKTYPES):
        o = link_offset(linktype, data)
        want = None if o < 0 else decode_ip(data, o)
        if CORE.decode_frame_py(linktype, data) != want:
            raise Different(f"frame decoders differ on link type {linktype}")


def check_json(version, steps) -> None:
    """The reader's events as JSON Lines, written with and without the compiled formatter."""
    import io
    from analyzer.analysis.redact import Redactor
    from analyzer.msnp import C2S, S2C
    from analyzer.msnp import reader as reference
    from analyzer.outputs.jsonl import JsonLinesWriter
    state = reference.ProtocolState(version)
    readers = {d: reference.CommandReader(d, state, max_line=512, max_payload=4096) for d in (C2S, S2C)}
    events = []
    for direction, _, data, ts in steps:
        events += readers[direction].feed(data, ts)
    for d in (C2S, S2C):
        events += readers[d].close(None)

    class Conn:
        id = "1"
    for redact in (True, False):
        outs = []
        for compiled in (True, False):
            out = io.StringIO()
            writer = JsonLinesWriter(out, Redactor(redact, key=b"fuzz"))
            if not compiled:
                writer._compiled = None
            for event in events:
                writer.event(Conn, event)
            outs.append(out.getvalue())
        if outs[0] != outs[1]:
            a, b = outs[0].splitlines(), outs[1].splitlines()
            first = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
            raise Different(f"JSON lines differ (redact={redact}) at line {first}: "
                            f"{a[first:first + 1]} vs {b[first:first + 1]}")


def seeds() -> list[bytes]:
    from fuzz_codec import build_seeds
    corpus = [p.read_bytes() for p in sorted((ROOT / "tests" / "fuzz_corpus").iterdir())]
    return corpus + build_seeds()


def save(data: bytes, why: str, found: list) -> None:
    name = CRASHES / f"core-{hashlib.sha1(data).hexdigest()[:16]}"
    if not name.exists():
        CRASHES.mkdir(parents=True, exist_ok=True)
        name.write_bytes(data)
        found.append((name, why))
        print(f"FOUND {name.name}: {why}", flush=True)


def target_for(found: list, counter: list, reraise: bool):
    def target(data: bytes) -> None:
        counter[0] += 1
        try:
            check(data)
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException as exc:  # noqa: BLE001 - PanicException derives from BaseException
            save(data, f"{type(exc).__name__}: {exc}"[:300], found)
            if reraise:
                # libFuzzer ends the process itself (no code runs after atheris.Fuzz): a crash
                # report and a non-zero exit are how a finding shows there.
                raise
    return target


def mutate(rng: random.Random, data: bytes, pool: list[bytes]) -> bytes:
    b = bytearray(data)
    for _ in range(rng.randint(1, 8)):
        op = rng.randrange(6)
        at = rng.randrange(len(b) + 1)
        if op == 0 and b:
            b[at % len(b)] = rng.randrange(256)
        elif op == 1:
            b[at:at] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
        elif op == 2:
            del b[at:at + rng.randint(1, 16)]
        elif op == 3:
            b[at:at] = rng.choice([b" ", b"\t", b"\r", b"\n", b"\r\n", b"0", b"99999999999999999999", b"MSNP",
                                   b"MSG ", b"VER ", b"LST ", b"911 ", b"UBX "])
        elif op == 4:
            other = rng.choice(pool)
            s = rng.randrange(len(other) + 1)
            b[at:at] = other[s:s + rng.randint(1, 64)]
        else:
            b = b[:at]
    return bytes(b[:4096])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=int, default=300, help="how long to fuzz (default 300)")
    ap.add_argument("--seed", type=int, default=1, help="seed of the fallback mutation loop")
    args = ap.parse_args()
    from analyzer.core import CORE, REASON
    if CORE is None:
        print(f"the compiled core is not built: {REASON}", file=sys.stderr)
        return 2
    try:
        import atheris
    except ImportError:
        atheris = None
    if atheris is not None:
        with atheris.instrument_imports(include=["analyzer"]):
            import analyzer.capture.pcap  # noqa: F401
            import analyzer.msnp.reader  # noqa: F401
    pool = seeds()
    found: list = []
    counter = [0]
    target = target_for(found, counter, reraise=atheris is not None)
    started = time.monotonic()
    if atheris is not None:
        corpus = ROOT / "bench" / ".cache" / "fuzz-core-corpus"
        corpus.mkdir(parents=True, exist_ok=True)
        for s in pool:
            (corpus / hashlib.sha1(s).hexdigest()).write_bytes(s)
        atheris.Setup([sys.argv[0], str(corpus), f"-max_total_time={args.seconds}", "-max_len=4096",
                       "-print_final_stats=1", "-runs=-1"], target)
        try:
            atheris.Fuzz()
        except SystemExit:
            pass
    else:
        rng = random.Random(args.seed)
        for s in pool:
            target(s)
        while time.monotonic() - started < args.seconds:
            target(mutate(rng, rng.choice(pool), pool))
    elapsed = time.monotonic() - started
    engine = "atheris" if atheris is not None else "random mutation"
    print(f"fuzzed {elapsed:.0f} s ({engine}): {counter[0]:,} inputs, findings: {len(found)}", flush=True)
    for name, why in found:
        print(f"  {name.relative_to(ROOT)}: {why}")
    return 1 if found else 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    sys.exit(main())
