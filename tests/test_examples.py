"""The example plugin the README shows is a file of the repository, identical to the README's copy, and works."""

from __future__ import annotations

import json
import re
from pathlib import Path

from analyzer.cli.main import main

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "msnp_pings.py"


def test_the_readme_plugin_is_examples_msnp_pings_py():
    readme = (ROOT / "README.md").read_text()
    code = readme.split("## Plugins", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]
    assert EXAMPLE.read_text() == code
    assert "--plugin examples/msnp_pings.py" in readme


def test_msnp_pings_decodes_uux_counts_keepalives_and_flags_a_slow_qng(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    # the README's own try-it command
    assert main(["decode", str(ROOT / "captures" / "msnp12.msnp"), "-v", "--plugin", str(EXAMPLE)]) == 0
    out = capsys.readouterr().out
    assert "[pings]" in out  # its UUX view
    assert "Keep-alives" in out and re.search(r"│ ns\s+│ 2\s+│", out)  # its section: two PNG/QNG on the NS
    slow = tmp_path / "slow.msnp"
    slow.write_text("0.0 >>> PNG\\r\\n\n1.0 <<< QNG 50\\r\\n\n2.0 >>> PNG\\r\\n\n8.5 <<< QNG 50\\r\\n\n")
    records = tmp_path / "r.jsonl"
    assert main(["decode", str(slow), "--no-plugins", "--plugin", str(EXAMPLE), "--json", str(records),
                 "--fail-on", "never"]) == 0
    names = [r["name"] for r in map(json.loads, records.read_text().splitlines()) if r["kind"] == "anomaly"]
    assert names == ["plugin.pings.slow_qng"]
    assert re.search(r"│ 1\s+│ 2\s+│", capsys.readouterr().out)
