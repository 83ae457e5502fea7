"""Extracted objects on disk: the directory, safe file names, `manifest.jsonl`, report sections.

`DirectoryStore(dir, force)` is the `analysis.objects.Store` of the extract
command. Safety contract:
- every file is created directly in `dir` (never in a sub-directory, never
  through a symbolic link: `O_NOFOLLOW`, and the final name is checked to
  resolve inside `dir`), with mode 0600, and never opened, run or parsed;
- names are made safe by `safe_name`: the last path component only, control
  and reserved characters replaced, no leading dot, Windows device names
  (CON, NUL, COM1, ...) prefixed, at most 120 bytes, and a number in front
  (`0001-name`) so two objects never share a name;
- nothing is overwritten unless `force`: an existing name gets `-2`, `-3`, ...
  and a directory that already holds a `manifest.jsonl` is refused (exit 2);
- bytes arrive in `.part` scratch files in `dir` (at most `OPEN_FILES` held
  open at once), renamed to their final name when the object is finished.
"""

from __future__ import annotations

import os
import re
import unicodedata
from collections import OrderedDict
from pathlib import Path

from analyzer.errors import UsageError
from analyzer.outputs.jsonl import encode

OPEN_FILES = 32
MAX_NAME = 120
_RESERVED = re.compile(r'[<>:"/\\|?*\x00-\x1f\x7f]')
_DEVICES = frozenset({"CON", "PRN", "AUX", "NUL", "CLOCK$", "CONIN$", "CONOUT$",
                      *(f"COM{i}" for i in range(10)), *(f"LPT{i}" for i in range(10))})
MANIFEST = "manifest.jsonl"


def safe_name(name: str | None, fallback: str = "object") -> str:
    """A file name that is one harmless path component on POSIX and Windows alike."""
    name = (name or "").replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(ch for ch in name if unicodedata.category(ch) not in ("Cc", "Cf", "Cs", "Co", "Cn")
                   or ch in "\t")
    name = _RESERVED.sub("_", name).strip(" .\t")
    if not name:
        name = fallback
    stem = name.split(".", 1)[0].upper().rstrip(" ")
    if stem in _DEVICES:
        name = "_" + name
    encoded = name.encode("utf-8")
    if len(encoded) > MAX_NAME:
        stem, dot, ext = name.rpartition(".")
        ext = ("." + ext) if dot and len(ext.encode()) <= 16 else ""
        base = (stem if dot else name).encode("utf-8")[:MAX_NAME - len(ext.encode())]
        name = base.decode("utf-8", "ignore").rstrip(" .") + ext
    return name


class FileSpool:
    __slots__ = ("path", "store", "fd")

    def __init__(self, store: "DirectoryStore", path: Path) -> None:
        self.store = store
        self.path = path
        self.fd: int | None = None

    def _open(self) -> int:
        if self.fd is None:
            self.fd = self.store._acquire(self)
        else:
            self.store.open.move_to_end(id(self))
        return self.fd

    def write(self, offset: int, data: bytes) -> None:
        os.pwrite(self._open(), data, offset)

    def read(self, offset: int, size: int) -> bytes:
        return os.pread(self._open(), size, offset)

    def close(self) -> None:
        if self.fd is not None:
            self.store.open.pop(id(self), None)
            os.close(self.fd)
            self.fd = None


class DirectoryStore:
    def __init__(self, directory: str, force: bool = False) -> None:
        path = Path(directory)
        if path.exists() and not path.is_dir():
            raise UsageError(f"{directory}: exists and is not a directory")
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UsageError(f"{directory}: {exc.strerror or exc}") from None
        if (path / MANIFEST).exists() and not force:
            raise UsageError(f"{directory}: already holds an extraction ({MANIFEST}); use --force to write over it")
        self.dir = path.resolve()
        self.force = force
        self.count = 0
        self.parts = 0
        self.open: OrderedDict[int, FileSpool] = OrderedDict()
        self.written: list[str] = []

    def _create(self, name: str, exclusive: bool = True) -> int:
        flags = os.O_WRONLY | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_BINARY", 0)
        flags |= os.O_EXCL if exclusive else os.O_TRUNC
        return os.open(self.dir / name, flags, 0o600)

    def spool(self) -> FileSpool:
        while True:
            self.parts += 1
            name = f".part-{os.getpid()}-{self.parts}"
            try:
                os.close(self._create(name))
                break
            except FileExistsError:
                continue
            except OSError as exc:
                raise UsageError(f"{self.dir}: {exc.strerror or exc}") from None
        return FileSpool(self, self.dir / name)

    def _acquire(self, spool: FileSpool) -> int:
        while len(self.open) >= OPEN_FILES:
            _, old = self.open.popitem(last=False)
            os.close(old.fd)
            old.fd = None
        fd = os.open(spool.path, os.O_RDWR | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_BINARY", 0))
        self.open[id(spool)] = spool
        return fd

    def keep(self, spool: FileSpool, record, size: int) -> str:
        """Give the finished object its final, safe, unused name; returns that name."""
        spool._open()
        os.ftruncate(spool.fd, size)
        spool.close()
        self.count += 1
        fallback = record.kind.replace(" ", "-")
        base = f"{self.count:04d}-{safe_name(record.name, fallback)}"
        name, n = base, 1
        while True:
            target = self.dir / name
            if Path(os.path.abspath(target)).parent != self.dir:  # cannot happen with a safe name
                raise UsageError(f"{name}: would be written outside {self.dir}")
            if not os.path.lexists(target) or (self.force and target.is_file() and not target.is_symlink()):
                break
            n += 1
            stem, dot, ext = base.rpartition(".")
            name = f"{stem}-{n}.{ext}" if dot and stem else f"{base}-{n}"
        os.replace(spool.path, target)
        self.written.append(name)
        return name

    def discard(self, spool: FileSpool) -> None:
        spool.close()
        try:
            os.unlink(spool.path)
        except OSError:
            pass

    def manifest(self):
        """The manifest file, opened for writing (replaced only with --force, checked at start)."""
        return open(self.dir / MANIFEST, "w", encoding="utf-8")


class ManifestWriter:
    """Writes each object record as a line of JSON (secrets through the run's Redactor)."""

    def __init__(self, out, redactor=None) -> None:
        self.out = out
        self.redactor = redactor
        self.count = 0
        self.complete = 0

    def __call__(self, record) -> None:
        self.complete += record.status == "complete"
        self.out.write(encode(record.to_dict(self.redactor)) + "\n")  # the JSON Lines rule (outputs/jsonl.py)
        self.count += 1


MAX_ROWS = 1000


def objects_section(records: list, redactor=None, more: int = 0) -> dict:
    """The HTML/terminal section: one row per object (plain strings, escaped by the renderer)."""
    rows = []
    for r in records[:MAX_ROWS]:
        d = r.to_dict(redactor)
        missing = ", ".join(f"{a}-{b}" for a, b in d["missing"][:8]) + (" ..." if len(d["missing"]) > 8 else "")
        rows.append([d["object"], d["via"], d["file"] or d["name"], _num(d["size_announced"]),
                     _num(d["size_received"]), d["status"] + (f" (missing {missing})" if missing else ""),
                     (d["sha256"] or "")[:16], d["sha1d"] or "", d["sender"] or "?", d["recipient"] or "?",
                     " ".join(d["streams"]), _time(d["start"]), _time(d["end"]),
                     d["call_id"] or d["cookie"] or ""])
    extra = len(records) - len(rows) + more
    if extra > 0:
        rows.append([f"{extra} more objects (see manifest.jsonl)"] + [""] * 13)
    return {"plugin": None, "title": f"Objects exchanged ({len(records) + more})",
            "columns": ["object", "via", "name", "announced", "received", "status", "sha256", "SHA1D",
                        "from", "to", "streams", "start", "end", "Call-ID / cookie"],
            "rows": rows}


def _num(value) -> str:
    return "" if value is None else f"{value:,}"


def _time(ts) -> str:
    if ts is None:
        return ""
    import datetime
    return datetime.datetime.fromtimestamp(ts, datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
