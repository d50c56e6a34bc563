"""Atomic writes: a reader sees the old file or the new one, never half of one.

Every write goes through two functions, :func:`_temporary` (a fresh file or folder beside
the target) and :func:`_commit` (the rename that makes it the target): a failure anywhere
before the commit leaves the target as it was and removes the temporary. A failure is
re-raised as an ``OSError`` naming the target, not the temporary. Fault-injection tests
patch these two functions to simulate a read-only file system, a full disk or a kill.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import tempfile
from pathlib import Path

import pandas as pd

from mtlib.errors import OutputError

_UMASK = os.umask(0)
os.umask(_UMASK)


def _temporary(path: Path, folder: bool) -> Path:
    """A new empty file (or folder) beside ``path``, named ``.<name>.<random>.tmp``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if folder:
        return Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the file the usual permissions
    return Path(tmp)


def _commit(tmp: Path, path: Path) -> None:
    """``tmp`` takes the place of ``path``. For a folder the swap is two renames; if a crash
    falls between them the previous folder survives as ``.<name>.old``, which
    :func:`resolve_dir` still finds."""
    if not tmp.is_dir():
        os.replace(tmp, path)
        return
    old = path.with_name(f".{path.name}.old")
    if old.exists():
        shutil.rmtree(old)
    if path.exists():
        os.replace(path, old)
    os.replace(tmp, path)
    shutil.rmtree(old, ignore_errors=True)


def _errno(err: Exception) -> int | None:
    """The errno of a failed write: an OSError's, or the one a library written in Rust
    (safetensors) puts in its message as ``(os error N)``."""
    if isinstance(err, OSError):
        return err.errno
    found = re.search(r"\(os error (\d+)\)", str(err))
    return int(found.group(1)) if found else None


@contextlib.contextmanager
def _atomic(path: str | Path, folder: bool):
    path = Path(path)
    tmp = None
    try:
        tmp = _temporary(path, folder)
        yield tmp
        _commit(tmp, path)
    except Exception as err:
        code = _errno(err)
        if code is None:
            raise
        raise OSError(code, os.strerror(code), str(path)) from err  # name the target, not the temporary
    finally:
        if tmp is not None and tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        elif tmp is not None and os.path.lexists(tmp):
            os.unlink(tmp)


def atomic_path(path: str | Path):
    """Yields a temporary path beside ``path``; on success it replaces ``path``."""
    return _atomic(path, folder=False)


def atomic_dir(path: str | Path):
    """Yields a fresh temporary folder; on success it takes the place of ``path``."""
    return _atomic(path, folder=True)


def write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(path: str | Path, data) -> None:
    write_text(path, json.dumps(data, indent=2, sort_keys=False) + "\n")


def write_csv(path: str | Path, frame: pd.DataFrame, **kwargs) -> None:
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False, **kwargs)


def resolve_dir(path: str | Path) -> Path | None:
    """``path`` if it exists, else its surviving ``.old`` copy, else None."""
    path = Path(path)
    old = path.with_name(f".{path.name}.old")
    return path if path.exists() else old if old.exists() else None


def check_output(path: str | Path, inputs=()) -> None:
    """Refuse an output ``path`` that is a folder, or that is one of ``inputs`` (the same
    path, or the same file through a symbolic or hard link): outputs never overwrite inputs."""
    path = Path(path)
    if path.is_dir():
        raise OutputError(f"{path}: is a folder (give a file path for the output)")
    for source in map(Path, inputs):
        same = path.exists() and source.exists() and os.path.samefile(path, source)
        if same or path.resolve() == source.resolve():
            raise OutputError(f"{path}: is the input {source} (outputs never overwrite inputs; choose another path)")

