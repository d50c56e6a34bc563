import errno
import os

import pytest

import mtlib.io
from mtlib.io import OutputError, atomic_dir, atomic_path, check_output, resolve_dir, write_text


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
    with pytest.raises(RuntimeError, match="boom"), atomic_path(path) as tmp:
        tmp.write_text("half of the new")
        raise RuntimeError("boom")
    assert path.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["f.txt"]


def test_a_failed_write_is_reported_against_the_target_not_the_temporary(tmp_path, monkeypatch):
    def disk_full(tmp, path):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(tmp))

    monkeypatch.setattr(mtlib.io, "_commit", disk_full)
    path = tmp_path / "f.txt"
    with pytest.raises(OSError) as caught:
        write_text(path, "new")
    assert caught.value.errno == errno.ENOSPC and caught.value.filename == str(path)
    assert list(tmp_path.iterdir()) == []


def test_a_rust_writer_error_keeps_its_errno(tmp_path):
    class SafetensorLikeError(Exception):
        pass

    with pytest.raises(OSError) as caught, atomic_path(tmp_path / "w.safetensors"):
        raise SafetensorLikeError("Error while serializing: I/O error: No space left on device (os error 28)")
    assert caught.value.errno == errno.ENOSPC and caught.value.filename == str(tmp_path / "w.safetensors")


def test_atomic_dir_swaps_whole_folders(tmp_path):
    target = tmp_path / "ckpt"
    for text in ("one", "two"):
        with atomic_dir(target) as tmp:
            (tmp / "a.txt").write_text(text)
    assert (target / "a.txt").read_text() == "two" and resolve_dir(target) == target
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]


def test_check_output_refuses_folders_and_inputs(tmp_path):
    source = tmp_path / "in.csv"
    source.write_text("x")
    (tmp_path / "link.csv").symlink_to(source)
    for output in (source, tmp_path / "link.csv", tmp_path / "." / "in.csv"):
        with pytest.raises(OutputError, match="is the input"):
            check_output(output, [source])
    with pytest.raises(OutputError, match="is a folder"):
        check_output(tmp_path, [source])
    check_output(tmp_path / "out.csv", [source])  # a new file elsewhere is fine
