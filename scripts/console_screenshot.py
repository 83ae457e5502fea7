#!/usr/bin/env python3
"""Make docs/console.svg: the interactive console at 100x30, fed with the bundled sample sessions.

    python3 scripts/console_screenshot.py [--out docs/console.svg] [--size 100x30]

The console is driven headless by Textual's pilot (as the tests do): the
samples' connections are loaded, the NS connection of the anomalies sample is
selected and a line with anomalies highlighted, so the picture shows the
connection list, the stream with its marks and the detail pane. The SVG is
Textual's own export: no network, no browser.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from analyzer.analysis.redact import Redactor  # noqa: E402
from analyzer.analysis.run import Analysis  # noqa: E402
from analyzer.capture.files import feed_transcript  # noqa: E402
from analyzer.outputs.console import ConsoleModel, build_console  # noqa: E402
from analyzer.plugins import PluginManager, discover  # noqa: E402


def model() -> ConsoleModel:
    manager = PluginManager(None)
    discover(manager)
    console_model = ConsoleModel(Redactor(), views=manager.decode_payload)
    analysis = Analysis([console_model])
    for i, name in enumerate(("msnp8.msnp", "anomalies.msnp")):
        feed_transcript(analysis, name, (ROOT / "captures" / name).read_bytes(), prefix=f"{name.split('.')[0]}-")
    analysis.finish()
    return console_model


async def shoot(out: Path, width: int, height: int) -> None:
    app = build_console(model(), "msnp-analyzer proxy -> messenger.example.net:1863")
    async with app.run_test(size=(width, height)) as pilot:
        await pilot.pause()
        from textual.widgets import DataTable
        stream = app.query_one("#stream", DataTable)
        rows = [app.rows_by_key[key.value] for key in stream.rows]
        marked = next((i for i, r in enumerate(rows) if r.anomalies and r.kind == "command"), len(rows) - 1)
        stream.focus()
        stream.move_cursor(row=marked)
        await pilot.pause()
        out.parent.mkdir(parents=True, exist_ok=True)
        app.save_screenshot(filename=out.name, path=str(out.parent))
    print(f"wrote {out}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "docs" / "console.svg"))
    parser.add_argument("--size", default="100x30", help="columns x rows (default 100x30)")
    args = parser.parse_args()
    width, height = (int(n) for n in args.size.lower().split("x"))
    asyncio.run(shoot(Path(args.out), width, height))
    return 0


if __name__ == "__main__":
    sys.exit(main())
