"""Every input the fuzzer ever flagged (tests/fuzz_crashes/) and a sample of its corpus
(tests/fuzz_corpus/) still satisfy the codec's invariants (bench/fuzz_codec.py `check`)."""

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.append(str(ROOT / "bench"))  # appended: bench/html.py must not shadow the stdlib's html

from fuzz_codec import InvariantBroken, check, encode_script, script_from  # noqa: E402

INPUTS = sorted(p for d in ("fuzz_crashes", "fuzz_corpus") for p in (ROOT / "tests" / d).glob("*")
                if p.is_file() and not p.name.startswith("."))


@pytest.mark.parametrize("path", INPUTS, ids=lambda p: f"{p.parent.name}/{p.name[:20]}")
def test_fuzz_input_keeps_invariants(path):
    check(path.read_bytes())


def test_corpus_is_present():
    assert len(INPUTS) >= 20


def test_script_round_trip():
    chunks = [("c2s", b"VER 1 MSNP8 CVR0\r\n"), ("s2c", b"x" * 300)]
    version, back = script_from(encode_script(2, chunks))
    assert version == 8
    assert b"".join(c for d, c in back if d == "s2c") == b"x" * 300


def test_check_detects_lost_bytes(monkeypatch):
    # The invariant checker must notice if the codec dropped bytes.
    from analyzer.msnp import events
    monkeypatch.setattr(events.Command, "raw", property(lambda self: self.line))
    with pytest.raises(InvariantBroken):
        check(encode_script(2, [("c2s", b"MSG 1 U 5\r\nhello")]))


# Every test here runs on both implementations: the pure-Python reference and the compiled core.
pytestmark = pytest.mark.usefixtures("implementation")
