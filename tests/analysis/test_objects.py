"""analysis/objects.py: objects rebuilt from real and scripted captures, checked byte for byte."""

from __future__ import annotations

import hashlib
import os

import pytest

from analyzer.analysis.objects import Extractor, MemoryStore
from analyzer.analysis.run import Analysis
from analyzer.capture.files import feed_capture
from analyzer.msnp.transcript import Chunk
from captures import transfers
from captures.make_pcaps import chunk_packets, write
from plugin_helpers import REAL

PATTERN = "ecb1a29cdbd0ce37137b2a871c527ff5a28bd72596c66c2ff77ec1a699ce9fc8"   # SOURCES.md
HELLO = "244eb98177b355916f4ec06ab3b3fbc9e820f218a0e6f90b3c7e6432e3127125"
PICTURE = "08617c474e4b941290d08b9e53e6ad4de4bad4dc4d5df884b848d1a16d4a59ee"
needs_real = pytest.mark.skipif(not (REAL / "ft15.pcapng").exists(), reason="../shared/captures-real not beside the clone")


def extract(path, **kw):
    store = MemoryStore()
    extractor = Extractor(store, **kw)
    analysis = Analysis([extractor])
    extractor.reporter = analysis.anomaly
    feed_capture(analysis, str(path))
    analysis.finish()
    return extractor.records, store, analysis


def capture(tmp_path, built, name="t.pcap"):
    chunks, connections = built
    path = tmp_path / name
    write(path, chunk_packets(chunks, connections), pcapng=False)
    return path


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@needs_real
def test_ft15_two_p2p_files_msnp15():
    records, store, _ = extract(REAL / "ft15.pcapng")
    files = {r.name: r for r in records}
    assert set(files) == {"pattern100k.bin", "hello.txt"}
    for name, digest, size in (("pattern100k.bin", PATTERN, 102400), ("hello.txt", HELLO, 101)):
        r = files[name]
        assert (r.kind, r.via, r.status, r.announced, r.received, r.missing) == ("file", "p2p", "complete", size, size, [])
        assert r.sha256 == digest and sha(store.kept[r.file]) == digest
        assert (r.sender, r.recipient) == ("alice@example.com", "bob@example.com") and r.call_id
        assert len(r.streams) == 2  # the switchboard seen from both users fills one object


@needs_real
def test_dp18_display_picture_version_2_headers():
    records, store, analysis = extract(REAL / "dp18.pcapng")
    (r,) = records
    assert (r.kind, r.status, r.announced, r.received, r.sha1d) == ("display picture", "complete", 1795, 1795, "verified")
    assert r.sha256 == PICTURE and sha(store.kept[r.file]) == PICTURE and r.file.endswith(".png")
    assert (r.sender, r.recipient) == ("alice@example.com", "bob@example.com")


@needs_real
def test_msnftp8_two_files_and_a_rejected_offer():
    records, store, analysis = extract(REAL / "msnftp8.pcapng")
    by_name = {r.name: r for r in records}
    assert sorted(by_name) == ["declined.txt", "hello.txt", "pattern100k.bin"]
    for name, digest in (("pattern100k.bin", PATTERN), ("hello.txt", HELLO)):
        r = by_name[name]
        assert (r.via, r.status, r.sha256) == ("msnftp", "complete", digest)
        assert sha(store.kept[r.file]) == digest and r.cookie and r.recipient == "bob@example.com"
    declined = by_name["declined.txt"]
    assert (declined.status, declined.received, declined.file, declined.announced) == ("declined", 0, None, 72)
    # MSNFTP is decoded as MSNFTP, not as MSNP: no bare-LF storm, two MSNFTP connections.
    totals = analysis.totals()
    assert totals["anomalies"]["msnp.newline.bare_lf"] == 0
    assert [c.role for c in analysis.connections.values()].count("MSNFTP") == 2


def test_display_picture_with_a_wrong_sha1d(tmp_path):
    picture = b"\x89PNG\r\n\x1a\n" + os.urandom(3000)
    records, store, analysis = extract(capture(tmp_path, transfers.display_picture_v2(picture, sha1d=b"\x01" * 20)))
    (r,) = records
    assert (r.status, r.sha1d, r.received) == ("complete", "mismatch", len(picture))
    assert store.kept[r.file] == picture
    assert analysis.totals()["anomalies"]["objects.sha1d_mismatch"] == 1
    records, store, analysis = extract(capture(tmp_path, transfers.display_picture_v2(picture), "ok.pcap"))
    assert records[0].sha1d == "verified" and "objects.sha1d_mismatch" not in analysis.totals()["anomalies"]


def test_interrupted_transfer_is_partial_with_its_missing_range(tmp_path):
    data = os.urandom(10_000)
    records, store, _ = extract(capture(tmp_path, transfers.file_transfer(data, stop_after=4000)))
    (r,) = records
    assert (r.status, r.announced) == ("partial", 10_000)
    assert r.received == 4808 and r.missing == [[4808, 10_000]]   # four 1,202-byte chunks arrived
    assert store.kept[r.file] == data[:4808] and r.sha256 == sha(data[:4808])


def test_declined_offer(tmp_path):
    records, store, _ = extract(capture(tmp_path, transfers.file_transfer(b"x" * 500, "secret.doc",
                                                                        answer="603 Decline")))
    (r,) = records
    assert (r.kind, r.name, r.status, r.received, r.file, r.announced) == ("file", "secret.doc", "declined", 0, None, 500)
    assert store.kept == {}


def test_offsets_and_sizes_that_lie_are_cut_and_reported(tmp_path):
    data = bytes(range(256)) * 8   # 2,048 bytes
    chunks = [(0, data[:1000]), (1000, data[1000:]), (1500, b"Z" * 1000)]   # the last runs past the total
    records, store, analysis = extract(capture(tmp_path, transfers.file_transfer(data, chunks=chunks)))
    (r,) = records
    assert r.status == "complete" and store.kept[r.file] == data   # the overlap differs: first copy kept
    anomalies = analysis.totals()["anomalies"]
    assert anomalies["objects.bad_range"] >= 1 and anomalies["objects.overlap_mismatch"] == 1


def test_overlapping_chunks_out_of_order(tmp_path):
    data = os.urandom(5000)
    chunks = [(3000, data[3000:]), (0, data[:2000]), (1500, data[1500:3500])]
    records, store, analysis = extract(capture(tmp_path, transfers.file_transfer(data, chunks=chunks)))
    (r,) = records
    assert (r.status, r.sha256) == ("complete", sha(data)) and store.kept[r.file] == data
    assert "objects.overlap_mismatch" not in analysis.totals()["anomalies"]


def test_a_huge_announced_size_is_never_allocated_and_stays_partial(tmp_path):
    data = os.urandom(3000)
    built = transfers.file_transfer(data, announce=2**40, total=2**40, bye=False)
    records, store, analysis = extract(capture(tmp_path, built), max_object=64 * 1024)
    (r,) = records
    assert r.status == "partial" and r.received == 3000 and r.missing == [[3000, 2**40]]
    assert analysis.totals()["anomalies"]["objects.too_large"] == 1
    assert len(store.kept[r.file]) == 3000


def test_a_session_that_never_ends_is_partial_not_dropped(tmp_path):
    data = os.urandom(4000)
    records, store, _ = extract(capture(tmp_path, transfers.file_transfer(data, stop_after=1, bye=False)))
    (r,) = records
    assert r.status == "partial" and r.received == 1202 and r.missing == [[1202, 4000]]


def test_open_transfers_are_bounded(tmp_path):
    data = os.urandom(3000)
    chunks, conns = transfers.file_transfer(data, session=1, stop_after=1)
    for s in range(2, 6):   # more sessions, none finished
        more, _ = transfers.file_transfer(data, session=s, stop_after=1,
                                          call=f"{{11111111-0000-0000-0000-00000000000{s}}}")
        chunks += [Chunk(c.direction, c.data, c.ts + s, c.conn) for c in more[2:]]   # one after the other
    records, store, analysis = extract(capture(tmp_path, (chunks, conns)), max_open=2)
    assert len(records) == 5 and all(r.status == "partial" for r in records)
    assert analysis.totals()["anomalies"]["objects.limit"] == 1


def test_ink_in_chunks_and_with_a_chunk_lost(tmp_path):
    gif = b"GIF89a" + os.urandom(2000)
    records, store, _ = extract(capture(tmp_path, transfers.ink(gif, parts=3)))
    (r,) = records
    assert (r.kind, r.via, r.status, r.name) == ("ink", "msg", "complete", "ink.gif") and store.kept[r.file] == gif
    records, store, _ = extract(capture(tmp_path, transfers.ink(gif, parts=3, drop=1), "lost.pcap"))
    assert records[0].status == "partial" and "never arrived" in records[0].problems[0]


def test_msnftp_scripted_complete_cut_and_declined(tmp_path):
    data = os.urandom(7000)
    records, store, analysis = extract(capture(tmp_path, transfers.msnftp(data)))
    (r,) = records
    assert (r.via, r.status, r.name, r.sender, r.recipient) == ("msnftp", "complete", "notes.txt",
                                                                 "alice@example.com", "bob@example.com")
    assert store.kept[r.file] == data and r.cookie == "31415926"
    records, store, _ = extract(capture(tmp_path, transfers.msnftp(data, cut=5000), "cut.pcap"))
    assert records[0].status == "partial" and records[0].missing == [[5000, 7000]]
    records, store, _ = extract(capture(tmp_path, transfers.msnftp(data, decline=True), "no.pcap"))
    assert records[0].status == "declined" and store.kept == {}
    records, store, analysis = extract(capture(tmp_path, transfers.msnftp(data, long_line=True), "long.pcap"))
    assert analysis.totals()["anomalies"]["msnftp.line.too_long"] == 1


def test_version_2_remaining_that_lies_is_cut(tmp_path):
    """A version-2 message whose data plus 'remaining' exceeds the total the first message set."""
    picture = os.urandom(2000)
    chunks, conns = transfers.display_picture_v2(picture)
    board = transfers.Board(18)
    board.bob(transfers.v2(777, 6300, b"L" * 500, 5000, False))   # claims more than the 2,000-byte total
    chunks.insert(-1, Chunk(board.chunks[-1].direction, board.chunks[-1].data, chunks[-2].ts + 0.001, "sb"))
    records, store, analysis = extract(capture(tmp_path, (chunks, conns)))
    (r,) = records
    assert r.status == "complete" and store.kept[r.file] == picture and r.sha1d == "verified"
    assert analysis.totals()["anomalies"]["objects.bad_range"] == 1


def test_no_store_still_hashes_what_arrived_in_order(tmp_path):
    data = os.urandom(6000)
    extractor = Extractor(None)
    analysis = Analysis([extractor])
    feed_capture(analysis, str(capture(tmp_path, transfers.file_transfer(data))))
    analysis.finish()
    (r,) = extractor.records
    assert (r.status, r.sha256, r.file) == ("complete", sha(data), None)


from hypothesis import given, settings, strategies as st  # noqa: E402

from analyzer.analysis.connection import Connection  # noqa: E402
from analyzer.msnp import Command  # noqa: E402


def _msg(body: bytes, dest: str) -> Command:
    payload = transfers.p2p_msg(body, dest)
    return Command("s2c", "MSG", None, [b"bob@example.com", b"Bob", str(len(payload)).encode()], b"MSG x\r\n",
                   payload, len(payload), 0, 1.0)


_v1 = st.builds(transfers.v1, st.sampled_from([0, 1, 2]), st.integers(0, 3), st.integers(0, 2**64 - 1),
                st.integers(0, 2**64 - 1), st.binary(max_size=64), st.sampled_from([0, 0x20, 0x1000030, 2]))
_v2 = st.builds(transfers.v2, st.sampled_from([0, 1, 2]), st.integers(0, 3), st.binary(max_size=64),
                st.integers(0, 2**64 - 1), st.booleans(), st.sampled_from([0, 4, 6]))


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(_v1, _v2, st.binary(max_size=80)), max_size=12))
def test_any_p2p_headers_never_crash_or_pass_the_limits(bodies):
    store = MemoryStore()
    extractor = Extractor(store, max_object=4096, max_total=8192, max_open=3)
    conn = Connection("1")
    conn.role, conn.handle = "SB", "alice@example.com"
    for i, body in enumerate(bodies):
        extractor.event(conn, _msg(body, "alice@example.com" if i % 2 else "alice@example.com;{g}"))
    extractor.close()
    assert all(len(data) <= 4096 for data in store.kept.values())
    assert sum(len(data) for data in store.kept.values()) <= 8192
    for r in extractor.records:
        assert r.status in ("complete", "partial", "declined") and r.received <= 4096
        assert all(lo < hi for lo, hi in r.missing)
