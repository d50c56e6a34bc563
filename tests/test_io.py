import os

import pytest

from mtlib.io import atomic_dir, resolve_dir, write_text


def test_atomic_write_replaces_whole_file_with_usual_permissions(tmp_path):
    path = tmp_path / "a" / "f.txt"
    write_text(path, "one")
    write_text(path, "two")
    umask = os.umask(0)
    os.umask(umask)
    assert path.read_text() == "two" and path.stat().st_mode & 0o777 == 0o666 & ~umask
    assert [p.name for p in path.parent.iterdir()] == ["f.txt"]


def test_failed_write_leaves_the_old_file(tmp_path):
    path = tmp_path / "f.txt"
    write_text(path, "old")

