"""The `extract` command: files under DIR only, safe names, a manifest, nothing overwritten without --force."""

from __future__ import annotations

import hashlib
import json
import os

import pytest

from analyzer.cli.main import main
from analyzer.outputs.objects import safe_name
from captures import transfers
from captures.make_pcaps import chunk_packets, write
from plugin_helpers import REAL

needs_real = pytest.mark.skipif(not (REAL / "ft15.pcapng").exists(), reason="../shared/captures-real not beside the clone")
SOURCES = {"pattern100k.bin": "ecb1a29cdbd0ce37137b2a871c527ff5a28bd72596c66c2ff77ec1a699ce9fc8",
           "hello.txt": "244eb98177b355916f4ec06ab3b3fbc9e820f218a0e6f90b3c7e6432e3127125"}


def manifest(out):
    return [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]


@needs_real
@pytest.mark.parametrize("name", ["ft15.pcapng", "msnftp8.pcapng"])
def test_real_captures_extract_with_the_published_hashes(tmp_path, name, capsys):
    out = tmp_path / "out"
    assert main(["extract", str(REAL / name), "-o", str(out)]) == 0
    records = [r for r in manifest(out) if r["status"] == "complete"]
    assert sorted(r["name"] for r in records) == ["hello.txt", "pattern100k.bin"]
    for r in records:
        assert hashlib.sha256((out / r["file"]).read_bytes()).hexdigest() == SOURCES[r["name"]] == r["sha256"]
        secret = r["call_id"] or r["cookie"]
        assert secret.startswith("<redacted:")   # Call-IDs and cookies are secrets
    assert main(["extract", str(REAL / name), "-o", str(out)]) == 2   # a second run does not write over it
    assert "--force" in capsys.readouterr().err
    assert main(["extract", str(REAL / name), "-o", str(out), "--force", "--no-redact"]) == 0
    assert not any(r["call_id"] or "" for r in manifest(out) if r["call_id"] and r["call_id"].startswith("<redacted"))


def test_hostile_names_stay_inside_the_directory(tmp_path):
    data = b"MZ" + os.urandom(100)
    names = ["../../etc/passwd", "..\\..\\boot.ini", "CON.txt", "nul", ".bashrc", "a\x07b\x1b[31m.txt",
             "x" * 300 + ".exe", "", "/abs/path"]
    chunks, conns = [], None
    for i, name in enumerate(names):
        built, conns = transfers.file_transfer(data, name, session=100 + i,
                                               call=f"{{11111111-0000-0000-0000-0000000001{i:02d}}}")
        chunks += [c.__class__(c.direction, c.data, c.ts + i, c.conn) for c in built[(2 if i else 0):]]
    pcap = tmp_path / "t.pcap"
    write(pcap, chunk_packets(chunks, conns), pcapng=False)
    out = tmp_path / "out"
    (out / "sub").mkdir(parents=True)
    assert main(["extract", str(pcap), "-o", str(out)]) == 0
    written = sorted(p.name for p in out.iterdir() if p.name not in ("manifest.jsonl", "sub"))
    assert len(written) == len(names) and not list((out / "sub").iterdir())
    assert not (tmp_path / "etc").exists() and not list(tmp_path.glob("*.ini"))
    for name in written:
        assert "/" not in name and "\\" not in name and not any(ord(ch) < 32 for ch in name)
        assert len(name.encode()) <= 130 and (out / name).read_bytes() == data
        assert (out / name).stat().st_mode & 0o777 == 0o600
    # The manifest keeps what was sent (the context's 520-byte name field holds 260 characters;
    # a nameless object is named after its kind and session).
    expected = {n[:260] for n in names if n} | {"file-session-107.bin"}
    assert {r["name"] for r in manifest(out)} == expected


def test_safe_name_rules():
    assert safe_name("../../etc/passwd") == "passwd"
    assert safe_name("C:\\Windows\\system32\\cmd.exe") == "cmd.exe"
    assert safe_name("CON") == "_CON" and safe_name("com1.txt") == "_com1.txt" and safe_name("LPT9.log") == "_LPT9.log"
    assert safe_name("..") == "object" and safe_name("...", "file") == "file" and safe_name(".hidden") == "hidden"
    assert safe_name("a\x00b\nc\u202ed.txt") == "abcd.txt"   # control and bidi characters dropped
    assert safe_name('a<b>:"|?*.txt') == "a_b______.txt"
    long = safe_name("é" * 200 + ".jpeg")
    assert long.endswith(".jpeg") and len(long.encode()) <= 120


def test_existing_files_are_not_overwritten_without_force(tmp_path):
    data = os.urandom(500)
    pcap = tmp_path / "t.pcap"
    built = transfers.file_transfer(data, "a.bin")
    write(pcap, chunk_packets(*built), pcapng=False)
    out = tmp_path / "out"
    out.mkdir()
    (out / "0001-a.bin").write_bytes(b"keep me")
    os.symlink(tmp_path / "elsewhere", out / "0001-a-2.bin")
    assert main(["extract", str(pcap), "-o", str(out)]) == 0
    assert (out / "0001-a.bin").read_bytes() == b"keep me" and not (tmp_path / "elsewhere").exists()
    (record,) = manifest(out)
    assert record["file"] == "0001-a-3.bin" and (out / record["file"]).read_bytes() == data
    assert main(["extract", str(pcap), "-o", str(tmp_path / "t.pcap")]) == 2   # not a directory


def test_max_object_size_option(tmp_path):
    data = os.urandom(50_000)
    pcap = tmp_path / "t.pcap"
    write(pcap, chunk_packets(*transfers.file_transfer(data, "big.bin")), pcapng=False)
    out = tmp_path / "out"
    assert main(["extract", str(pcap), "-o", str(out), "--max-object-size", "16k", "--fail-on", "never"]) == 0
    (record,) = manifest(out)
    assert record["status"] == "partial" and record["size_received"] == 16 * 1024
    assert (out / record["file"]).read_bytes() == data[:16 * 1024] and "limit" in record["problems"][0]


def test_export_shows_the_objects_and_the_contacts(tmp_path):
    from outputs.test_html import page_meta
    picture = b"\x89PNG\r\n\x1a\n" + os.urandom(500)
    pcap = tmp_path / "t.pcap"
    write(pcap, chunk_packets(*transfers.display_picture_v2(picture, sha1d=b"\x02" * 20)), pcapng=False)
    out = tmp_path / "t.html"
    assert main(["export", str(pcap), "-o", str(out), "--fail-on", "never"]) == 0
    (section,) = [s for s in page_meta(out)["sections"] if s["title"].startswith("Objects exchanged")]
    row = section["rows"][0]
    assert row[0] == "display picture" and row[2].endswith(".png") and row[5] == "complete" and row[7] == "mismatch"
    assert row[-1].startswith("<redacted:")
