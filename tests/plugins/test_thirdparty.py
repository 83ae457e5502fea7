"""A third-party plugin installed from a tiny fixture package, found through its entry point.

The fixture (tests/fixtures/thirdparty_plugin) is installed offline into a
temporary directory: its package is copied and a `.dist-info` with METADATA
and entry_points.txt is written from its pyproject.toml, which is what an
installer does; the CLI then runs in a subprocess with that directory on
PYTHONPATH, so importlib.metadata finds it like any installed distribution.
"""

import json
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "thirdparty_plugin"
SAMPLE = ROOT / "captures" / "msnp8_switchboard_chat.msnp"


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    target = tmp_path_factory.mktemp("site")
    meta = tomllib.loads((FIXTURE / "pyproject.toml").read_text())["project"]
    for pkg in tomllib.loads((FIXTURE / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]:
        shutil.copytree(FIXTURE / pkg, target / pkg)
    dist = target / f"{meta['name'].replace('-', '_')}-{meta['version']}.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {meta['name']}\nVersion: {meta['version']}\n")
    eps = "".join(f"[{group}]\n" + "".join(f"{k} = {v}\n" for k, v in entries.items())
                  for group, entries in meta["entry-points"].items())
    (dist / "entry_points.txt").write_text(eps)
    return target


def cli(site, *args):
    env = dict(os.environ, COLUMNS="200", PYTHONPATH=os.pathsep.join([str(site), str(ROOT)]))
    return subprocess.run([sys.executable, "-m", "analyzer", *args], capture_output=True, text=True,
                          env=env, cwd=ROOT, timeout=120)


def test_listed_by_the_plugins_command(site):
    r = cli(site, "plugins", "--json")
    assert r.returncode == 0, r.stderr
    rows = {row["name"]: row for row in map(json.loads, r.stdout.splitlines())}
    assert rows["demo"]["version"] == "2.3.4"
    assert "msnp-demo-plugin 2.3.4" in rows["demo"]["origin"] and "msnp_demo_plugin:DemoPlugin" in rows["demo"]["origin"]
    assert rows["demo"]["provides"] == ["decoder", "observer", "report"]
    assert {"mime", "chat"} <= set(rows)   # first-party ones come through the same group


def test_in_the_reports(site, tmp_path):
    out = tmp_path / "events.jsonl"
    r = cli(site, "decode", str(SAMPLE), "--json", str(out), "--fail-on", "never")
    assert r.returncode == 0, r.stderr
    assert "Demo: commands by code" in " ".join(r.stdout.split())  # the title may wrap
    anomalies = [json.loads(l) for l in out.read_text().splitlines() if '"anomaly"' in l]
    assert [a["name"] for a in anomalies] == ["plugin.demo.out_seen"]
    assert anomalies[0]["summary"] == "the client signed out (OUT)"
    r = cli(site, "decode", str(SAMPLE), "--no-plugins")
    assert "Demo:" not in r.stdout
