"""Output files that never destroy an input and never leave half a file.

- `refuse_inputs(outputs, inputs)`: raises `UsageError` (exit 2, one line) when
  an output path names one of the inputs (the same path, or the same file
  through another name or a link), or when two outputs name the same file.
- `open_output(path)`: a text (or binary, `binary=True`) file object that
  writes to a temporary file beside `path`; `commit()` flushes, syncs and
  renames it over `path` in one step, `discard()` removes it. `close()`
  commits, unless an exception other than KeyboardInterrupt is propagating
  (the run failed: the old file, if any, stays as it was). A path that exists
  and is not a regular file (`/dev/null`, a FIFO, a terminal) is written in
  place: renaming over it would replace the device. An unwritable place
  raises `UsageError`.
"""

from __future__ import annotations

import os
import stat
import sys
import tempfile
from pathlib import Path

from analyzer.errors import UsageError


def _identity(path: str):
    """(device, inode) of an existing file, else its absolute, resolved path."""
    try:
        st = os.stat(path)
        return (st.st_dev, st.st_ino)
    except OSError:
        return str(Path(path).resolve())


def refuse_inputs(outputs, inputs) -> None:
    """UsageError if an output is one of the inputs, or two outputs are the same file ('-' is no file)."""
    seen_inputs = {}
    for path in inputs:
        if path and path != "-":
            seen_inputs.setdefault(_identity(os.fspath(path)), os.fspath(path))
    seen_outputs = {}
    for path in outputs:
        if not path or path == "-":
            continue
        path = os.fspath(path)
        ident = _identity(path)
        if ident in seen_inputs:
            raise UsageError(f"{path}: is an input of this run ({seen_inputs[ident]}); "
                             "refusing to overwrite it")
        if ident in seen_outputs:
            raise UsageError(f"{path}: named twice as an output (also {seen_outputs[ident]})")
        seen_outputs[ident] = path


class AtomicFile:
    """A file written under a temporary name and renamed over its target when the run succeeds."""

    def __init__(self, path: str, binary: bool = False) -> None:
        self.path = os.fspath(path)
        self.closed = False
        self.temp: str | None = None
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            st = None
        except OSError as exc:
            raise UsageError(f"{self.path}: {exc.strerror}") from None
        if st is not None and stat.S_ISDIR(st.st_mode):
            raise UsageError(f"{self.path}: is a directory")
        mode = "wb" if binary else "w"
        kwargs = {} if binary else {"encoding": "utf-8", "newline": "\n"}
        try:
            if st is not None and not stat.S_ISREG(st.st_mode):
                self.file = open(self.path, mode, **kwargs)  # a device or a pipe: written in place
                return
            parent = os.path.dirname(os.path.abspath(self.path))
            fd, self.temp = tempfile.mkstemp(dir=parent, prefix="." + os.path.basename(self.path) + ".",
                                             suffix=".part")
        except OSError as exc:
            raise UsageError(f"{self.path}: {exc.strerror or exc}") from None
        if st is not None:
            self._mode = stat.S_IMODE(st.st_mode)
        else:
            umask = os.umask(0)
            os.umask(umask)
            self._mode = 0o666 & ~umask
        self.file = os.fdopen(fd, mode, **kwargs)

    # -- the file interface the writers use ---------------------------------------

    def write(self, data):
        return self.file.write(data)

    def flush(self) -> None:
        self.file.flush()

    def fileno(self) -> int:
        return self.file.fileno()

    @property
    def name(self) -> str:
        return self.path

    # -- ending -------------------------------------------------------------------

    def commit(self) -> None:
        """Make the written file the output (renamed over the old one in one step)."""
        if self.closed:
            return
        self.closed = True
        if self.temp is None:
            self.file.close()
            return
        try:
            self.file.flush()
            os.fsync(self.file.fileno())
            self.file.close()
            os.chmod(self.temp, self._mode)
            os.replace(self.temp, self.path)
        except BaseException:
            self._remove()
            raise

    def discard(self) -> None:
        """Forget what was written: the output stays as it was before the run."""
        if self.closed:
            return
        self.closed = True
        try:
            self.file.close()
        except OSError:
            pass
        self._remove()

    def close(self) -> None:
        failing = sys.exc_info()[0]
        if failing is not None and not issubclass(failing, KeyboardInterrupt):
            self.discard()
        else:
            self.commit()

    def _remove(self) -> None:
        if self.temp is not None:
            try:
                os.unlink(self.temp)
            except OSError:
                pass

    def __enter__(self):
        return self

    def __exit__(self, kind, exc, tb) -> None:
        if kind is not None and not issubclass(kind, KeyboardInterrupt):
            self.discard()
        else:
            self.commit()

    def __del__(self) -> None:
        # Never committed (the run died before closing it): no half file is left behind.
        if not getattr(self, "closed", True):
            self.discard()


def open_output(path: str, binary: bool = False) -> AtomicFile:
    return AtomicFile(path, binary=binary)
