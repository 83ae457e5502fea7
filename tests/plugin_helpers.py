"""Test helper: run plugins over a transcript or a capture, through the product's reading path."""

from pathlib import Path

from analyzer.analysis.run import Analysis
from analyzer.plugins import PluginManager
from analyzer.cli.plugins import feed_capture

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "captures" / "msnp8_switchboard_chat.msnp"
REAL = ROOT.parent / "shared" / "captures-real"


def run(path, *plugins, msnp=None):
    analysis = Analysis([])
    manager = PluginManager(analysis)
    for p in plugins:
        manager.add(p, "test")
    analysis.sinks.append(manager)
    if str(path).endswith(".pcap") and not reader_available():
        _feed_realstreams(path, analysis)   # until the product's pcap reader is in the tree
    else:
        feed_capture(str(path), analysis, msnp)
    analysis.finish()
    return analysis, manager


def transcript(tmp_path, text: str, name="t.msnp") -> Path:
    f = tmp_path / name
    f.write_text(text)
    return f


def reader_available() -> bool:
    try:
        import analyzer.capture.files  # noqa: F401
    except ImportError:
        return False
    return True


def _feed_realstreams(path, analysis):
    from realstreams import capture_chunks
    conns = {}
    for chunk in capture_chunks(Path(path).name):
        conn = conns.get(chunk.conn)
        if conn is None:
            conn = conns[chunk.conn] = analysis.open(conn_id=str(len(conns) + 1), client=chunk.conn)
        analysis.feed(conn, chunk.direction, chunk.data, chunk.ts)
