"""Coverage-guided fuzzing of the file readers (atheris), bounded in time: pcapng and mitmproxy flow files.

    python3 bench/fuzz_inputs.py pcapng --seconds 180
    python3 bench/fuzz_inputs.py flows --seconds 180

bench/fuzz_codec.py fuzzes the codec; this fuzzes what reads the files around it.
The seeds are real files: the bundled pcapng sample (plain and gzip'd), the
pcapng inputs of tests/hostile/, and flow files written by mitmproxy's own
FlowWriter (TCP MSNP flows, an HTTP gateway flow, Passport logins) plus the
damaged ones of tests/hostile/. An input that breaks an invariant is saved to
tests/hostile/fuzz_crashes/ (`<target>-<sha1>`) and becomes a regression test
(tests/hostile/test_fuzz_checks.py runs every file there through its check).
libFuzzer ends the process when the time is up and prints the figures
(`stat::number_of_executed_units`, `stat::average_exec_per_sec`); each finding is
printed as it is found (`FOUND ...`).

Invariant 1 of issue #15, checked on every input (`check_pcapng`, `check_flows`):
- the whole reading path (CaptureFile and TCP reassembly into an Analysis; or
  is_flow_file and read_flow_file) ends in a result or in the one-line error
  of unusable input (CaptureError / FlowFileError, a single line), never in
  any other exception, and no `analyzer.internal_error`;
- every JSON line written is strict JSON (no NaN/Infinity) and valid UTF-8;
- everything read before the damage is kept: reading the input cut where the
  reader said it stopped yields the same packets (the same flows) and no damage.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# bench/html.py would shadow the standard library's html (mitmproxy imports it).
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != ROOT / "bench"]
sys.path.insert(0, str(ROOT))

CACHE = ROOT / "bench" / ".cache"
CRASHES = ROOT / "tests" / "hostile" / "fuzz_crashes"
HOSTILE = ROOT / "tests" / "hostile"
TMP = Path(tempfile.gettempdir())


class InvariantBroken(AssertionError):
    pass


def _strict_json(text: str) -> None:
    text.encode("utf-8")  # strict: a lone surrogate fails here

    def bad(name):
        raise InvariantBroken(f"{name} in JSON Lines")
    for line in text.splitlines():
        json.loads(line, parse_constant=bad)


def _file(data: bytes, suffix: str) -> Path:
    path = TMP / f"msnp-fuzz-{os.getpid()}{suffix}"
    path.write_bytes(data)
    return path


def _packets(data: bytes) -> tuple[list, list]:
    """(packets, damage) of our pcapng block reader on `data`."""
    from analyzer.capture.pcapng import PcapngBlocks
    blocks = PcapngBlocks(io.BytesIO(data))
    packets = [(p.linktype, p.ts, p.data) for p in blocks.packets_from()]
    return packets, blocks.anomalies


def check_pcapng(data: bytes) -> None:
    from analyzer.analysis.run import Analysis
    from analyzer.capture.detect import Detector
    from analyzer.capture.files import analyze_file
    from analyzer.capture.pcap import CaptureError, CaptureFile
    from analyzer.outputs.jsonl import JsonLinesWriter
    path = _file(data, ".pcapng")
    try:
        capture = CaptureFile(str(path))
    except CaptureError as exc:
        if "\n" in str(exc):
            raise InvariantBroken(f"a multi-line error: {exc!r}") from None
        return
    out = io.StringIO()
    analysis = Analysis([JsonLinesWriter(out)])
    try:
        analyze_file(capture, analysis, Detector(), buffer=65536, reorder_timeout=0.5, idle_timeout=60)
        analysis.finish()
    finally:
        capture.close()
    _strict_json(out.getvalue())
    if analysis.capture_anomalies.get("analyzer.internal_error"):
        raise InvariantBroken("analyzer.internal_error")
    if capture.pcapng:
        raw = data if not data.startswith(b"\x1f\x8b") else None
        if raw is not None:
            packets, damage = _packets(raw)
            if damage:
                _, offset, _ = damage[0]
                kept, again = _packets(raw[:offset])
                if kept != packets or again:
                    raise InvariantBroken(f"cut at the damage ({offset}): {len(kept)} packets, "
                                          f"{len(packets)} before; damage again: {again}")


def check_flows(data: bytes) -> None:
    from analyzer.analysis.run import Analysis
    from analyzer.capture.mitm.flows import FlowFileError, is_flow_file, read_flow_file
    from analyzer.outputs.jsonl import JsonLinesWriter
    path = _file(data, ".mitm")

    def read(p):
        out = io.StringIO()
        analysis = Analysis([JsonLinesWriter(out)])
        try:
            reader = read_flow_file(p, analysis)
        except FlowFileError as exc:
            if "\n" in str(exc):
                raise InvariantBroken(f"a multi-line error: {exc!r}") from None
            return None, out.getvalue(), analysis
        analysis.finish()
        return reader, out.getvalue(), analysis

    is_flow_file(path)  # must not raise, whatever it answers
    reader, text, analysis = read(path)
    _strict_json(text)
    if analysis.capture_anomalies.get("analyzer.internal_error"):
        raise InvariantBroken("analyzer.internal_error")
    if reader is not None and reader.stopped_at is not None:
        cut = _file(data[:reader.stopped_at], ".cut.mitm")
        again, _, _ = read(cut)
        got = (again.tcp_flows, again.http_flows, again.stopped_at) if again else None
        if got != (reader.tcp_flows, reader.http_flows, None):
            raise InvariantBroken(f"cut at the damage ({reader.stopped_at}): {got} vs "
                                  f"{(reader.tcp_flows, reader.http_flows)}")


CHECKS = {"pcapng": check_pcapng, "flows": check_flows}


def pcapng_seeds() -> list[bytes]:
    sample = (ROOT / "captures" / "msnp18_login_chat.pcapng").read_bytes()
    seeds = [sample[:6000], gzip.compress(sample[:3000])]
    seeds += [p.read_bytes() for p in sorted(HOSTILE.glob("*.pcapng"))]
    return seeds


def flow_seeds() -> list[bytes]:
    from mitmproxy import io as mio
    from mitmproxy import tcp
    from mitmproxy.test import tflow
    flows = [tflow.ttcpflow(messages=[tcp.TCPMessage(True, b"VER 1 MSNP8 CVR0\r\n", 1.0),
                                      tcp.TCPMessage(False, b"VER 1 MSNP8 CVR0\r\nCVR 2 1 1 1 a b\r\n", 1.1)]),
             tflow.tflow(resp=True)]
    gw = tflow.tflow(resp=True)
    gw.request.method = "POST"
    gw.request.path = "/gateway/gateway.dll?Action=open&Server=NS&IP=ns.example"
    gw.request.headers["Content-Type"] = "application/x-msn-messenger"
    gw.request.content = b"VER 1 MSNP8 CVR0\r\n"
    gw.response.headers["X-MSN-Messenger"] = "SessionID=1.1; GW-IP=127.0.0.1"
    gw.response.content = b"VER 1 MSNP8 CVR0\r\n"
    login = tflow.tflow(resp=True)
    login.request.path = "/login2.srf"
    login.request.headers["Authorization"] = "Passport1.4 sign-in=a%40b.c,pwd=x,lc=1033"
    login.response.headers["Authentication-Info"] = "Passport1.4 da-status=success,from-PP='t=a&p=b'"
    seeds = []
    for group in ([flows[0]], [flows[0], gw], [login, flows[0]], [flows[1]]):
        out = io.BytesIO()
        writer = mio.FlowWriter(out)
        for f in group:
            writer.add(f)
        seeds.append(out.getvalue())
    seeds += [p.read_bytes()[:8192] for p in sorted(HOSTILE.glob("flow_*.mitm")) if p.stat().st_size < 10000]
    return seeds


SEEDS = {"pcapng": pcapng_seeds, "flows": flow_seeds}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("target", choices=sorted(CHECKS))
    parser.add_argument("--seconds", type=int, default=180, help="how long to fuzz (default 180)")
    args = parser.parse_args()

    import atheris

    corpus = CACHE / f"fuzz-{args.target}"
    corpus.mkdir(parents=True, exist_ok=True)
    CRASHES.mkdir(parents=True, exist_ok=True)
    for seed in SEEDS[args.target]():
        (corpus / hashlib.sha1(seed).hexdigest()).write_bytes(seed)
    print(f"seed corpus: {len(list(corpus.iterdir()))} inputs in {corpus}", flush=True)

    with atheris.instrument_imports(include=["analyzer"]):
        import analyzer.capture.mitm.flows  # noqa: F401
        import analyzer.capture.pcap  # noqa: F401
        import analyzer.capture.pcapng  # noqa: F401
        import analyzer.capture.tcp  # noqa: F401
        import analyzer.outputs.jsonl  # noqa: F401

    check = CHECKS[args.target]
    found = []

    def target(data: bytes) -> None:
        try:
            check(data)
        except BaseException as exc:  # noqa: BLE001 - every failure is a finding (RecursionError too)
            if isinstance(exc, KeyboardInterrupt):
                raise
            name = CRASHES / f"{args.target}-{hashlib.sha1(data).hexdigest()[:16]}"
            if not name.exists():
                name.write_bytes(data)
                found.append((name, repr(exc)[:300]))
                print(f"FOUND {name.name}: {exc!r}"[:400], flush=True)


    argv = [sys.argv[0], str(corpus), f"-max_total_time={args.seconds}", "-max_len=16384",
            "-print_final_stats=1", "-runs=-1", "-timeout=30", "-rss_limit_mb=2048"]
    atheris.Setup(argv, target)
    try:
        atheris.Fuzz()
    except SystemExit:
        pass
    return 1 if found else 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    sys.exit(main())
