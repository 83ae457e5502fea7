"""Errors and exit statuses every layer may raise or return.

Exit status, for scripts: 0 success; 1 anomalies at or above `--fail-on` were
found; 2 unusable input or usage (missing file, not a capture): a one-line
error on stderr, never a traceback.
"""

EXIT_OK, EXIT_ANOMALIES, EXIT_UNUSABLE = 0, 1, 2


class UsageError(Exception):
    """Unusable input: reported as one line, exit status 2."""


def open_input(path: str):
    """A binary file object for a file named on the command line ('-': standard input), or UsageError."""
    import sys
    from pathlib import Path
    if path == "-":
        return sys.stdin.buffer
    p = Path(path)
    if not p.exists():
        raise UsageError(f"{path}: no such file")
    if p.is_dir():
        raise UsageError(f"{path}: is a directory")
    try:
        return open(p, "rb")
    except OSError as exc:
        raise UsageError(f"{path}: {exc.strerror}") from None


def read_input(path: str) -> bytes:
    """The bytes of a file named on the command line ('-': standard input), or UsageError."""
    import sys
    from pathlib import Path
    if path == "-":
        return sys.stdin.buffer.read()
    p = Path(path)
    if not p.exists():
        raise UsageError(f"{path}: no such file")
    if p.is_dir():
        raise UsageError(f"{path}: is a directory")
    try:
        return p.read_bytes()
    except OSError as exc:
        raise UsageError(f"{path}: {exc.strerror}") from None
