"""msnp/msnftp.py: the MSNFTP reader decodes identically however TCP chopped the stream."""

from analyzer.msnp.events import Anomaly, Command, Skipped
from analyzer.msnp.msnftp import FileData, FtpReader, looks_like_msnftp

SENDER = (b"VER MSNFTP\r\nFIL 5000\r\n" + bytes([0, 0xFD, 0x07]) + b"a\nb" * 681 + b"x\n"
          + bytes([0, 0xFD, 0x07]) + b"y" * 2045 + bytes([0, 0xCA, 0x03]) + b"z" * 970)


def run(chunks):
    reader = FtpReader("s2c")
    events = []
    for c in chunks:
        events += reader.feed(c)
    return events + reader.close()


def summary(events):
    return [(type(e).__name__, e.cmd if type(e) is Command else getattr(e, "file_offset", None),
             e.raw) for e in events if type(e) is not Anomaly]


def test_blocks_and_lines_whole_bytewise_and_with_trailing_bytes():
    whole = run([SENDER])
    assert [e.cmd for e in whole if type(e) is Command] == ["VER", "FIL"]
    blocks = [e for e in whole if type(e) is FileData]
    assert [b.file_offset for b in blocks] == [0, 2045, 4090] and b"".join(b.data for b in blocks) == \
        (b"a\nb" * 681 + b"x\n" + b"y" * 2045 + b"z" * 970)
    assert summary(run([SENDER[i:i + 1] for i in range(len(SENDER))])) == summary(whole)
    # after the announced size the reader is back to lines; bytes left over come out as Skipped
    tail = run([SENDER + b"BYE 16777989\r\npartial"])
    assert [type(e).__name__ for e in tail[-2:]] == ["Command", "Skipped"] and tail[-2].cmd == "BYE"
    assert b"".join(e.raw for e in tail) == SENDER + b"BYE 16777989\r\npartial"


def test_the_senders_stop_block_and_a_long_line():
    events = run([b"FIL 10\r\n" + bytes([1, 0, 0]) + b"CCL\r\n"])
    assert [type(e).__name__ for e in events] == ["Command", "FileData", "Command"] and events[1].stop
    events = run([b"X" * 2000])
    assert [e.name for e in events if type(e) is Anomaly] == ["msnftp.line.too_long"]
    assert sum(len(e.raw) for e in events if type(e) is Skipped) == 2000


def test_first_line_recognition():
    assert looks_like_msnftp([b"VER", b"MSNFTP"]) and looks_like_msnftp([b"VER", b"1", b"MSNFTP"])
    assert not looks_like_msnftp([b"VER", b"1", b"MSNP8", b"CVR0"]) and not looks_like_msnftp([])
