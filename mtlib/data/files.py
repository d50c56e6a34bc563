"""Finding, reading and validating the course's task files.

Files are tab-separated with an unnamed leading index column, then ``id``, the text
column(s) and (except for test-student files) the label. Every problem is reported as
``file:line: column: what is wrong``; nothing is written when a file is bad.
"""
from __future__ import annotations

import csv
import hashlib
import logging
import os
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd

from mtlib.errors import DataError
from mtlib.io import atomic_path
from mtlib.tasks import TASKS, Task

SPLITS = ("train", "dev", "test-student")
# Notices about the data that a user cannot act on (quora-dev's rows without a label) are
# logged, not raised as warnings: a warning prints the absolute path of the module that
# raised it, and these notices end up in the executed notebooks the report is made from.
LOG = logging.getLogger(__name__)
DATA_ENV = "MTLIB_DATA"
# The course's public repository; override with MTLIB_DATA_URL (a folder URL ending in /).
DEFAULT_DATA_URL = "https://raw.githubusercontent.com/gpoesia/minbert-default-final-project/main/data/"
# sha256 of the course files (quora-train is checked only for the columns: the local mirror
# holds a recovered subset of it, so its hash differs from the course's file).
KNOWN_SHA256 = {
    "ids-sst-train.csv": "03b2b625c090f94a6afd59f114cde5282e2053aab0b101e87ed695d8a0c5b1df",
    "ids-sst-dev.csv": "a186ce94577635fbe10beaaddd50f16cccf6c30973221cefdf90deed2a584bfe",
    "ids-sst-test-student.csv": "bdd5a767faa0c26782117e37767ece154c30d5d04fb8727d09c71e3850a55c7b",
    "quora-dev.csv": "bfa3cc954a9ba300ae776a980141de65f622a3c1b97e3fd905d63245bc36d5ad",
    "sts-train.csv": "15d12efc2d656fffb1d61ac1f08ec4227f43925fd16f420c037cbd063699c21b",
    "sts-dev.csv": "ce3cad6f16062586ac7ba462c28b010a9be10c530fd5074165860d7b7ab4e93d",
    "sts-test-student.csv": "dee455745b72e9ca3ff74e7c056bd73e34bad5b8d5641045a2c1e7e131866f47",
}
NOT_DOWNLOADED = frozenset({"quora-test-student.csv"})  # the course's Quora test file: unused, unlabelled


def file_name(task: str, split: str) -> str:
    return f"{TASKS[task].file_prefix}-{split}.csv"


def find_data_dir(explicit: str | Path | None = None, root: Path | None = None) -> Path:
    """Where the course files are: an explicit path, $MTLIB_DATA, ../shared/data/cs224n
    beside the project, else data/raw (downloaded there by :func:`download` on request)."""
    for given, source in ((explicit, "given explicitly"), (os.environ.get(DATA_ENV), f"from ${DATA_ENV}")):
        if given:
            path = Path(given).expanduser()
            if not path.is_dir():
                raise DataError(f"{path}: data folder not found ({source})")
            return path
    root = root or Path.cwd()
    for candidate in (root / ".." / "shared" / "data" / "cs224n", root / "data" / "raw"):
        if (candidate / file_name("sst", "train")).exists():
            return candidate.resolve()
    raise DataError(
        "course data not found: pass --data DIR, set $MTLIB_DATA, place the files in "
        "../shared/data/cs224n or data/raw, or run `mtlib download-data` on a machine with internet"
    )


def download(target: str | Path = "data/raw", base_url: str | None = None) -> Path:
    """Fetch the eight course files into ``target`` (atomically, hash-checked where known)."""
    base_url = base_url or os.environ.get("MTLIB_DATA_URL", DEFAULT_DATA_URL)
    target = Path(target)
    target.mkdir(parents=True, exist_ok=True)
    for task in TASKS:
        for split in SPLITS:
            name = file_name(task, split)
            if (target / name).exists() or name in NOT_DOWNLOADED:
                continue
            try:
                with urllib.request.urlopen(base_url + name, timeout=60) as response:
                    data = response.read()
            except OSError as err:
                raise DataError(f"could not download {base_url + name}: {err}") from None
            digest = hashlib.sha256(data).hexdigest()
            if name in KNOWN_SHA256 and digest != KNOWN_SHA256[name]:
                raise DataError(f"{base_url + name}: sha256 {digest} does not match the course file")
            with atomic_path(target / name) as tmp:
                tmp.write_bytes(data)
    return target


def _open(path: Path):
    """The task file, opened for csv; a folder, a missing or an unreadable file is a DataError."""
    if path.is_dir():
        raise DataError(f"{path}: is a folder, not a task file")
    try:
        return path.open(newline="", encoding="utf-8")
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except OSError as err:
        raise DataError(f"{path}: cannot be read ({err.strerror or err})") from None


def _rows(path: Path, reader):
    """``(line number, fields)`` of each non-blank row, read with csv's quoting rules."""
    try:
        for fields in reader:
            if fields:
                yield reader.line_num, fields
    except UnicodeDecodeError:
        raise DataError(f"{path}:{reader.line_num + 1}: not UTF-8 text (is it a task file?)") from None
    except csv.Error as err:
        raise DataError(f"{path}:{reader.line_num}: {err}") from None


def _columns(path: Path, header: list[str], spec: Task, labelled: bool | None) -> tuple[list[str], bool]:
    """The columns to keep (id, text, label if labelled) and whether the file is labelled."""
    if len(header) == 1 and "," in header[0]:
        raise DataError(f"{path}:1: expected tab-separated columns, the header looks comma-separated")
    wanted = ["id", *spec.text_columns]
    missing = [c for c in wanted if c not in header]
    if labelled is None:
        labelled = spec.label_column in header
    elif labelled and spec.label_column not in header:
        missing.append(spec.label_column)
    if missing:
        raise DataError(f"{path}:1: missing column(s) {missing}; header has {header}")
    return wanted + [spec.label_column] * labelled, labelled


def read_task_file(path: str | Path, task: str, labelled: bool | None = None) -> pd.DataFrame:
    """Read and validate one task file into a DataFrame with ``id``, text and label columns.

    ``labelled=None`` means "labelled if the label column is present". Label values are
    converted to float (STS) or int (SST, Quora). Quora rows with an empty label are
    dropped with a logged warning that names them (quora-dev has two).
    """
    return next(iter_task_file(path, task, labelled))


def iter_task_file(path: str | Path, task: str, labelled: bool | None = None, chunk_rows: int | None = None,
                   warn: bool = True):
    """:func:`read_task_file` in DataFrames of ``chunk_rows`` rows (None: one DataFrame), so
    that a file of any size is validated in constant memory (beyond one id per row, kept
    to find duplicates). Every row is checked as it is read; ``warn=False`` leaves out the
    warning about dropped rows (for a second pass over a file)."""
    path, spec = Path(path), TASKS[task]
    with _open(path) as handle:
        reader = csv.reader(handle, delimiter="\t")
        header = next((fields for _, fields in _rows(path, reader)), None)
        if header is None:
            raise DataError(f"{path}:1: file is empty")
        wanted, labelled = _columns(path, header, spec, labelled)
        index = {c: header.index(c) for c in wanted}
        records, seen, dropped, chunks = [], {}, [], 0
        for line, fields in _rows(path, reader):
            if len(fields) != len(header):
                raise DataError(f"{path}:{line}: expected {len(header)} tab-separated fields, found {len(fields)}")
            record = {c: fields[i] for c, i in index.items()}
            if labelled and spec.drops_empty_labels and record[spec.label_column].strip() == "":
                dropped.append(f"line {line} (id {record['id']})")
                continue
            records.append(_checked(record, wanted, labelled, spec, seen, path, line))
            if chunk_rows and len(records) == chunk_rows:
                yield _frame(records, wanted, spec)
                records, chunks = [], chunks + 1
    if not seen:  # an empty frame would pass for data: a run on nothing, an empty prediction file
        left = f" once {len(dropped)} with an empty {spec.label_column!r} are dropped" if dropped else ""
        raise DataError(f"{path}: no rows after the header{left}")
    if dropped and warn:
        # The file's name, not its path: a data folder's location says nothing about the data.
        LOG.warning(f"{path.name}: dropped {len(dropped)} row(s) with an empty {spec.label_column!r}: "
                    f"{', '.join(dropped)}")
    if records or not chunks:
        yield _frame(records, wanted, spec)


def _checked(record: dict, wanted: list[str], labelled: bool, spec: Task, seen: dict, path: Path, line: int) -> dict:
    for column in wanted[:-1] if labelled else wanted:
        if record[column].strip() == "":
            raise DataError(f"{path}:{line}: column {column!r} is empty")
    if record["id"] in seen:
        raise DataError(f"{path}:{line}: column 'id': duplicate id {record['id']!r} (first on line {seen[record['id']]})")
    seen[record["id"]] = line
    if labelled:
        record[spec.label_column] = _parse_label(record[spec.label_column], spec, path, line)
    return record


def _frame(records: list[dict], wanted: list[str], spec: Task) -> pd.DataFrame:
    frame = pd.DataFrame.from_records(records, columns=wanted)
    for column in spec.text_columns:
        frame[column] = frame[column].str.strip()
    return frame


def _parse_label(raw: str, spec: Task, path: Path, line: int):
    where = f"{path}:{line}: column {spec.label_column!r}"
    try:
        value = float(raw)
    except ValueError:
        raise DataError(f"{where}: cannot parse label {raw!r} as a number") from None
    if not spec.label_min <= value <= spec.label_max or np.isnan(value):
        raise DataError(f"{where}: label {raw!r} outside {spec.label_min:g}..{spec.label_max:g}")
    if spec.integer_labels:
        if value != int(value):
            raise DataError(f"{where}: label {raw!r} is not an integer class")
        return int(value)
    return value


def subsample(frame: pd.DataFrame, size: int | None, seed: int) -> pd.DataFrame:
    """A seeded random subset of ``size`` rows (all rows, in file order, when None or larger)."""
    if size is None or size >= len(frame):
        return frame.reset_index(drop=True)
    rng = np.random.default_rng(seed)
    keep = np.sort(rng.choice(len(frame), size=size, replace=False))
    return frame.iloc[keep].reset_index(drop=True)


def load_split(data_dir: Path, task: str, split: str, size: int | None = None, seed: int = 0) -> pd.DataFrame:
    frame = read_task_file(Path(data_dir) / file_name(task, split), task, labelled=split != "test-student")
    return subsample(frame, size, seed)
