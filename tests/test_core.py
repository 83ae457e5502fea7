"""The compiled core's place in the package: how it is chosen, named, built and tested.

- `--version` names the implementation; MSNP_ANALYZER_PURE_PYTHON=1 forces the Python path.
- Without the compiled module the analyzer still runs, gives the same JSON Lines, and says
  once that it runs on the slower path.
- The crate's own tests (`cargo test`) run from here, so the README's test command runs them.
- `pip install .` without a Rust toolchain still builds a usable (pure-Python) package.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import analyzer.core as core

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "captures" / "msnp8_login_chat.pcap"


def run_python(code: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env={**os.environ, **(env or {})})


def test_version_names_the_implementation():
    forced = run_python("from analyzer.cli.main import main; main(['--version'])",
                        {core.FORCE_PYTHON: "1"})
    assert "pure Python (MSNP_ANALYZER_PURE_PYTHON is set)" in forced.stdout
    if core.CORE is not None:
        native = run_python("from analyzer.cli.main import main; main(['--version'])", {core.FORCE_PYTHON: ""})
        assert "compiled core (Rust)" in native.stdout


def test_the_core_is_built_where_the_readme_installs_it():
    if os.environ.get("CI"):
        assert core.CORE is not None, core.REASON
    elif core.CORE is None:
        pytest.skip(core.REASON)
    assert core.IMPLEMENTATION == "rust"


# A run where the compiled module cannot be imported (as after an install without Rust),
# on a capture counted as big, twice in one process: one note, the same records.
WITHOUT_CORE = """
import sys
sys.modules["analyzer._core"] = None
import analyzer.cli.analyze as a
a.BIG_CAPTURE = 0
from analyzer.cli.main import main
from analyzer.core import IMPLEMENTATION
print(IMPLEMENTATION)
for out in sys.argv[1:]:
    main(["analyze", {sample!r}, "--no-redact", "--json", out])
"""


def test_without_the_compiled_module_the_analyzer_runs_and_says_so_once(tmp_path):
    outs = [str(tmp_path / "a.jsonl"), str(tmp_path / "b.jsonl")]
    proc = subprocess.run([sys.executable, "-c", WITHOUT_CORE.format(sample=str(SAMPLE)), *outs], cwd=ROOT,
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, core.FORCE_PYTHON: ""})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[0] == "python"
    notes = [line for line in proc.stderr.splitlines() if "pure-Python path" in line]
    assert len(notes) == 1 and "not built" in notes[0]
    reference = subprocess.run([sys.executable, "-m", "analyzer", "analyze", str(SAMPLE), "--no-redact",
                                "--json", "-"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert Path(outs[0]).read_text() == Path(outs[1]).read_text() == reference.stdout


def test_forcing_python_prints_no_note(tmp_path):
    code = WITHOUT_CORE.format(sample=str(SAMPLE)).replace('sys.modules["analyzer._core"] = None', "")
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path / "a.jsonl")], cwd=ROOT,
                          capture_output=True, text=True, timeout=120, env={**os.environ, core.FORCE_PYTHON: "1"})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[0] == "python"
    assert "pure-Python path" not in proc.stderr


def test_cargo_test_passes():
    """The crate's own unit tests (decoders, record reader) beside its code."""
    cargo = shutil.which("cargo")
    if cargo is None:
        if os.environ.get("CI"):
            pytest.fail("cargo is missing under CI")
        pytest.skip("no Rust toolchain")
    proc = subprocess.run([cargo, "test", "--quiet", "--manifest-path", str(ROOT / "core" / "Cargo.toml")],
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert " 0 failed" in proc.stdout and "test result: ok" in proc.stdout


def test_install_without_a_rust_toolchain_gives_a_pure_python_package(tmp_path):
    """`pip install .` on a machine with no cargo: the optional extension is skipped, not fatal."""
    import importlib.util
    if importlib.util.find_spec("setuptools_rust") is None:  # not imported here: pip's build does that
        pytest.skip("setuptools-rust is not installed (it is in the test extra)")
    src = tmp_path / "src"
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True,
                           text=True, check=True).stdout.split()
    for name in files:
        if (ROOT / name).is_file():
            (src / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, src / name)
    # A PATH with python but no cargo or rustc; CARGO/RUSTC unset.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "python3").symlink_to(sys.executable)
    env = {k: v for k, v in os.environ.items() if k not in ("CARGO", "RUSTC", "CARGO_HOME", "RUSTUP_HOME")}
    env["PATH"] = f"{bin_dir}:/usr/bin:/bin"
    env["HOME"] = str(tmp_path)  # no ~/.cargo/bin reachable
    assert shutil.which("cargo", path=env["PATH"]) is None
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                           "-w", str(tmp_path / "dist"), str(src)], env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    [wheel] = (tmp_path / "dist").glob("*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "analyzer/core.py" in names and "analyzer/capture/pcap.py" in names
    # The HTML page's assets are package data (pyproject.toml): the installed page needs them.
    from analyzer.outputs.html.template import ASSET_FILES
    assert {f"analyzer/outputs/html/assets/{name}" for name in ASSET_FILES} <= set(names)
    assert not [n for n in names if n.startswith("analyzer/_core")]


@pytest.mark.skipif(core.CORE is None, reason="the compiled core is not built here")
def test_readers_share_their_code_tables():
    """A busy capture holds thousands of connections open, two readers each: a reader must not
    carry its own 26^3-slot code table (about 420 KB: 2,500 connections once peaked at 2.1 GB)."""
    code = """
import resource
from analyzer.msnp.reader import connection_readers
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
held = [connection_readers(8) for _ in range(2000)]
grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
print(grown)
"""
    proc = run_python(code)
    assert proc.returncode == 0, proc.stderr
    grown_kb = int(proc.stdout.split()[-1])
    assert grown_kb < 150_000, f"4,000 readers grew the process by {grown_kb} KB"
