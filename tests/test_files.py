import re

import numpy as np
import pytest

from mtlib.data import files
from mtlib.data.files import DataError, find_data_dir, read_task_file, subsample
from tests.helpers import write_task_files

HEADER = "\tid\tsentence1\tsentence2\tsimilarity\n"


def write(tmp_path, text, name="sts-train.csv"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_reads_generated_files_with_typed_labels(tmp_path):
    folder = write_task_files(tmp_path / "d")
    sst = read_task_file(folder / "ids-sst-train.csv", "sst")
    assert list(sst.columns) == ["id", "sentence", "sentiment"] and sst["sentiment"].dtype.kind == "i"
    sts = read_task_file(folder / "sts-dev.csv", "sts")
    assert sts["similarity"].dtype.kind == "f"
    test = read_task_file(folder / "sts-test-student.csv", "sts")
    assert "similarity" not in test.columns


def test_quoted_fields_and_crlf(tmp_path):
    path = write(tmp_path, HEADER.replace("\n", "\r\n") + '0\ta\t"""Hi"" there"\tyes\t2.5\r\n')
    frame = read_task_file(path, "sts")
    assert frame.loc[0, "sentence1"] == '"Hi" there' and frame.loc[0, "similarity"] == 2.5


@pytest.mark.parametrize("body, message", [
    ("0\ta\tx\ty\t5.5\n", r"sts-train.csv:2: column 'similarity': label '5.5' outside 0..5"),
    ("0\ta\tx\ty\thigh\n", r"sts-train.csv:2: column 'similarity': cannot parse label 'high'"),
    ("0\ta\tx\ty\t1\n1\tb\t \ty\t1\n", r"sts-train.csv:3: column 'sentence1' is empty"),
    ("0\ta\tx\ty\t1\n1\ta\tx\ty\t2\n", r"sts-train.csv:3: column 'id': duplicate id 'a' \(first on line 2\)"),
    ("0\ta\tx\ty\n", r"sts-train.csv:2: expected 5 tab-separated fields, found 4"),
])
def test_bad_rows_name_file_line_and_column(tmp_path, body, message):
    with pytest.raises(DataError, match=message):
        read_task_file(write(tmp_path, HEADER + body), "sts")


def test_bad_sst_labels(tmp_path):
    head = "\tid\tsentence\tsentiment\n"
    with pytest.raises(DataError, match=r":2: column 'sentiment': label '5' outside 0..4"):
        read_task_file(write(tmp_path, head + "0\ta\tgood\t5\n", "s.csv"), "sst")
    with pytest.raises(DataError, match=r":2: column 'sentiment': label '2.5' is not an integer"):
        read_task_file(write(tmp_path, head + "0\ta\tgood\t2.5\n", "s.csv"), "sst")


def test_missing_file_column_and_wrong_separator(tmp_path):
    with pytest.raises(DataError, match="nope.csv: file not found"):
        read_task_file(tmp_path / "nope.csv", "sts")
    with pytest.raises(DataError, match=r":1: missing column\(s\) \['sentence2'\]"):
        read_task_file(write(tmp_path, "\tid\tsentence1\tsimilarity\n0\ta\tx\t1\n"), "sts")
    with pytest.raises(DataError, match=r":1: missing column\(s\) \['similarity'\]"):
        read_task_file(write(tmp_path, "\tid\tsentence1\tsentence2\n0\ta\tx\ty\n"), "sts", labelled=True)
    with pytest.raises(DataError, match="comma-separated"):
        read_task_file(write(tmp_path, ",id,sentence1,sentence2,similarity\n0,a,x,y,1\n"), "sts")


def test_quora_rows_with_empty_label_are_dropped_with_a_warning(tmp_path, caplog):
    text = "\tid\tsentence1\tsentence2\tis_duplicate\n0\ta\tx\ty\t1.0\n1\tb\tx\t\t\n2\tc\tx\ty\t0.0\n"
    with caplog.at_level("WARNING", logger="mtlib.data.files"):
        frame = read_task_file(write(tmp_path, text, "quora-dev.csv"), "para")
    (record,) = caplog.records
    assert re.match(r"quora-dev.csv: dropped 1 row\(s\).*line 3 \(id b\)", record.getMessage())
    assert str(tmp_path) not in record.getMessage()  # the file's name only: it ends up in executed notebooks
    assert frame["id"].tolist() == ["a", "c"] and frame["is_duplicate"].tolist() == [1, 0]


def test_a_file_without_rows_is_refused(tmp_path):
    with pytest.raises(DataError, match=r"sts-train.csv: no rows after the header$"):
        read_task_file(write(tmp_path, HEADER + "\n"), "sts")
    quora = write(tmp_path, "\tid\tsentence1\tsentence2\tis_duplicate\n0\ta\tx\ty\t\n", "quora-dev.csv")
    with pytest.raises(DataError, match=r"no rows after the header once 1 with an empty 'is_duplicate' are dropped"):
        read_task_file(quora, "para")


def test_subsample_is_seeded_and_keeps_file_order(tmp_path):
    frame = read_task_file(write_task_files(tmp_path / "d", n_train=40) / "ids-sst-train.csv", "sst")
    a, b, c = subsample(frame, 10, 1), subsample(frame, 10, 1), subsample(frame, 10, 2)
    assert a.equals(b) and not a.equals(c) and len(a) == 10
    positions = [frame.index[frame["id"] == i][0] for i in a["id"]]
    assert positions == sorted(positions)
    assert subsample(frame, None, 1).equals(frame)


def test_find_data_dir_order(tmp_path, monkeypatch):
    explicit = write_task_files(tmp_path / "explicit")
    env = write_task_files(tmp_path / "env")
    monkeypatch.setenv("MTLIB_DATA", str(env))
    assert find_data_dir(explicit) == explicit
    assert find_data_dir() == env
    monkeypatch.delenv("MTLIB_DATA")
    project = tmp_path / "proj"
    project.mkdir()
    write_task_files(tmp_path / "shared" / "data" / "cs224n")
    assert find_data_dir(root=project) == (tmp_path / "shared" / "data" / "cs224n").resolve()
    with pytest.raises(DataError, match="course data not found"):
        find_data_dir(root=tmp_path / "elsewhere" / "x")
    with pytest.raises(DataError, match="data folder not found"):
        find_data_dir(tmp_path / "missing")


def test_real_quora_dev_layout_quirk_is_handled_like_pandas(tmp_path, caplog):
    # a field that opens with a quote but never closes it runs to the end of the line
    text = '\tid\tsentence1\tsentence2\tis_duplicate\n0\ta\tq?\t"""Where is it?"\t\n1\tb\tx\ty\t1.0\n'
    with caplog.at_level("WARNING", logger="mtlib.data.files"):
        frame = read_task_file(write(tmp_path, text, "quora-dev.csv"), "para")
    assert "id a" in caplog.text
    assert frame["id"].tolist() == ["b"]
    assert np.array_equal(frame["is_duplicate"].to_numpy(), [1])


def test_download_copies_every_course_file_and_leaves_no_partial_one(tmp_path, monkeypatch):
    source = write_task_files(tmp_path / "course")
    url = source.resolve().as_uri() + "/"
    monkeypatch.setattr(files, "KNOWN_SHA256", {})  # generated files: their own hashes
    target = files.download(tmp_path / "raw", base_url=url)
    fetched = sorted(p.name for p in target.iterdir())
    assert fetched == sorted(p.name for p in source.iterdir() if p.name not in files.NOT_DOWNLOADED)
    assert all((target / name).read_bytes() == (source / name).read_bytes() for name in fetched)


def test_download_refuses_a_file_whose_hash_is_not_the_course_files(tmp_path):
    source = write_task_files(tmp_path / "course")
    with pytest.raises(DataError, match="sha256 .* does not match the course file"):
        files.download(tmp_path / "raw", base_url=source.resolve().as_uri() + "/")
    assert list((tmp_path / "raw").iterdir()) == []  # nothing written, not even a temporary file
