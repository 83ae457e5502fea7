"""JSON Lines from `analyze`, byte for byte the same on both implementations.

Every sample capture and every real capture in ../shared/captures-real/ is analysed twice
in this process, once on the pure-Python path and once with the compiled core, with the
same redaction key; the outputs must be identical (and not empty).
"""

from __future__ import annotations

from pathlib import Path

import pytest

import analyzer.core as core
from analyzer.cli.main import main

ROOT = Path(__file__).resolve().parents[2]
REAL = ROOT.parent / "shared" / "captures-real"
CAPTURES = sorted([*(ROOT / "captures").glob("*.pcap*"), *REAL.glob("*.pcap*")])


def analyze(path: Path, out: Path, implementation: str, monkeypatch, *extra: str) -> bytes:
    with monkeypatch.context() as m:
        if implementation == "python":
            m.setattr(core, "CORE", None)
        main(["analyze", str(path), "--json", str(out), *extra])
    return out.read_bytes()


@pytest.fixture(autouse=True)
def fixed_redaction_key(monkeypatch):
    import analyzer.analysis.redact as redact
    original = redact.Redactor.__init__

    def init(self, enabled=True, key=None):
        original(self, enabled, b"parity" if key is None else key)
    monkeypatch.setattr(redact.Redactor, "__init__", init)


pytestmark = pytest.mark.usefixtures("compiled_core")


@pytest.mark.parametrize("path", CAPTURES, ids=lambda p: p.name)
def test_json_lines_are_identical(path, tmp_path, monkeypatch):
    want = analyze(path, tmp_path / "python.jsonl", "python", monkeypatch)
    got = analyze(path, tmp_path / "rust.jsonl", "rust", monkeypatch)
    assert want.count(b"\n") > 0
    assert got == want


def test_json_lines_are_identical_with_small_limits(tmp_path, monkeypatch):
    path = ROOT / "captures" / "msnp8_anomalies.pcap"
    extra = ("--max-line", "40", "--max-payload", "64", "--no-plugins")
    want = analyze(path, tmp_path / "python.jsonl", "python", monkeypatch, *extra)
    got = analyze(path, tmp_path / "rust.jsonl", "rust", monkeypatch, *extra)
    assert b"msnp.line.too_long" in want or b"msnp.payload.too_large" in want
    assert got == want


@pytest.mark.parametrize("name", ["msnp8_login_chat.pcap", "ft15.pcapng"])
def test_json_lines_are_identical_without_redaction(name, tmp_path, monkeypatch):
    """--no-redact: the compiled JSON formatter writes the secret-bearing commands too."""
    path = next(p for p in CAPTURES if p.name == name)
    want = analyze(path, tmp_path / "python.jsonl", "python", monkeypatch, "--no-redact")
    got = analyze(path, tmp_path / "rust.jsonl", "rust", monkeypatch, "--no-redact")
    assert b'"cmd":"USR"' in want and b"<redacted:" not in want
    assert got == want
