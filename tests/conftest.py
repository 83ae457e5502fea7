"""Test set-up: the repository root on sys.path, so `captures.sessions` imports as it does for tools."""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
TESTS = Path(__file__).resolve().parent
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))


import os  # noqa: E402

import pytest  # noqa: E402


def require_core():
    """Skip the test when the compiled core was not built, except under CI=true, where the
    README's install command must have built it (then the test fails, saying why)."""
    import analyzer.core as core
    if core.CORE is None:
        if os.environ.get("CI"):
            pytest.fail(f"the compiled core is missing under CI: {core.REASON}")
        pytest.skip(f"the compiled core is not built: {core.REASON}")


@pytest.fixture
def compiled_core():
    """For tests of the compiled core alone (`pytestmark = pytest.mark.usefixtures("compiled_core")`)."""
    require_core()


@pytest.fixture(params=["python", "rust"])
def implementation(request, monkeypatch):
    """Run a test on each implementation of the hot path (as aiohttp runs its C and Python parsers).

    "python" is the reference; "rust" is the compiled core (readers, capture reader), which a test skips when it was not
    built, except under CI=true, where the README's install command must have built it.
    """
    import analyzer.core as core
    if request.param == "python":
        monkeypatch.setattr(core, "CORE", None)
    else:
        require_core()
        # A test module that builds readers itself gets the compiled ones under the same names.
        for name in ("CommandReader", "ProtocolState"):
            if hasattr(request.module, name):
                monkeypatch.setattr(request.module, name, getattr(core.CORE, name))
    return request.param
