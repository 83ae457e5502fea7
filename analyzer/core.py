"""Which implementation runs the hot path: the compiled core (Rust, `analyzer._core`) or Python.

The core is built from `core/` by `pip install .` when a Rust toolchain is present
(setuptools-rust; see pyproject.toml). Without it the install still succeeds and
everything runs on the pure-Python modules, which stay the reference: the tests run
both and compare their outputs. `MSNP_ANALYZER_PURE_PYTHON=1` forces the Python path.

- `CORE` is the extension module, or None.
- `IMPLEMENTATION` is "rust" or "python"; `REASON` says why Python, when it is.
- `note_fallback(write)` says once per process that the slower path is in use.
"""

from __future__ import annotations

import os

FORCE_PYTHON = "MSNP_ANALYZER_PURE_PYTHON"


def _load():
    if os.environ.get(FORCE_PYTHON, "") not in ("", "0"):
        return None, f"{FORCE_PYTHON} is set"
    try:
        from analyzer import _core
    except ImportError:
        return None, "the compiled core was not built (no Rust toolchain at install time)"
    return _core, None


CORE, REASON = _load()
IMPLEMENTATION = "rust" if CORE is not None else "python"
_noted = False


def describe() -> str:
    """One phrase for `--version`: which implementation runs, and why not the core."""
    if CORE is not None:
        return f"compiled core (Rust) {CORE.VERSION}"
    return f"pure Python ({REASON})"


def note_fallback(write) -> None:
    """Say once per process that the pure-Python path runs (when it was not asked for)."""
    global _noted
    if _noted or CORE is not None or os.environ.get(FORCE_PYTHON, "") not in ("", "0"):
        return
    _noted = True
    write(f"msnp-analyzer: running on the pure-Python path ({REASON}); "
          f"large captures are slower. `pip install .` with a Rust toolchain builds the core.")
