"""Tests for mtlib.data.augment: the length filter and EDA (Wei and Zou 2019)."""
import random
import re
from collections import Counter

import numpy as np
import pandas as pd
import pytest

from mtlib.data import augment
from mtlib.data.nltk_data import DEFAULT_TARGET, is_complete

needs_data = pytest.mark.skipif(
    not is_complete(DEFAULT_TARGET),
    reason=f"NLTK data not built in {DEFAULT_TARGET}: run `python -m mtlib.data.nltk_data`",
)

SENTENCE = "the quick brown fox jumps over the lazy dog"  # 9 words: alpha 0.1 -> n = 1
SEEDS = range(12)


def _words(text):
    return text.split()


# --- length filter ---------------------------------------------------------------------

def test_length_filter_drops_exactly_the_longest_two_percent():
    rng = np.random.default_rng(0)
    lengths = rng.permutation(200)  # distinct lengths 0..199
    df = pd.DataFrame({"id": [f"r{i}" for i in range(200)], "len": lengths})
    kept, dropped = augment.length_filter(df, lengths)
    assert dropped == 4 and len(kept) == 196
    assert set(df["len"]) - set(kept["len"]) == {196, 197, 198, 199}
    assert kept.index.is_monotonic_increasing  # original order and index kept


def test_length_filter_breaks_ties_by_position_and_sums_pairs():
    df = pd.DataFrame({"s1": [1, 5, 2, 5, 5], "s2": [0, 1, 0, 1, 1]})
    kept, dropped = augment.length_filter(df, df["s1"] + df["s2"], fraction=0.4)
    assert dropped == 2
    assert list(kept.index) == [0, 2, 4]  # rows 1 and 3 tie with 4; earlier ones go


def test_length_filter_fraction_zero_keeps_everything():
    df = pd.DataFrame({"x": range(10)})
    kept, dropped = augment.length_filter(df, np.arange(10), fraction=0)
    assert dropped == 0 and kept.equals(df)


def test_length_filter_counts_like_the_study():
    df = pd.DataFrame({"x": range(8544)})
    assert augment.length_filter(df, np.ones(8544))[1] == 170  # floor(0.02 * 8544)
    assert augment.length_filter(df.iloc[:100], np.ones(100), fraction=0.29)[1] == 29


def test_length_filter_rejects_bad_input():
    df = pd.DataFrame({"x": range(3)})
    with pytest.raises(ValueError, match="one length per row"):
        augment.length_filter(df, [1, 2])
    with pytest.raises(ValueError, match="fraction"):
        augment.length_filter(df, [1, 2, 3], fraction=1.0)


# --- EDA operations --------------------------------------------------------------------

def _wordnet_forms(word, hyphen=" "):
    """Lower-cased lemma names of all synsets of ``word``; '_' -> ' ', '-' -> ``hyphen``."""
    from nltk.corpus import wordnet

    return {lemma.replace("_", " ").replace("-", hyphen).lower()
            for synset in wordnet.synsets(word) for lemma in synset.lemma_names()}


def _replacements(before, after):
    """Every (word, replacement) such that swapping one word of ``before`` gives ``after``."""
    extra = len(after) - len(before)
    return [(before[i], " ".join(after[i:i + extra + 1])) for i in range(len(before))
            if before[:i] == after[:i] and before[i + 1:] == after[i + extra + 1:]]


@needs_data
@pytest.mark.parametrize("seed", SEEDS)
def test_random_swap_keeps_the_multiset_of_words(seed):
    out = augment.eda(SENTENCE, seed, operation="random_swap")
    assert Counter(_words(out)) == Counter(_words(SENTENCE))
    assert out != SENTENCE


@needs_data
@pytest.mark.parametrize("seed", SEEDS)
def test_random_deletion_removes_words_and_adds_none(seed):
    out = augment.eda(SENTENCE, seed, operation="random_deletion")
    assert len(_words(out)) == len(_words(SENTENCE)) - 1
    assert not Counter(_words(out)) - Counter(_words(SENTENCE))


@needs_data
@pytest.mark.parametrize("seed", SEEDS)
def test_synonym_replacement_uses_a_wordnet_synonym(seed):
    after = augment.eda(SENTENCE, seed, operation="synonym_replacement")
    candidates = _replacements(_words(SENTENCE), _words(after))
    assert candidates, f"{after!r} is not {SENTENCE!r} with one word replaced"
    # nlpaug writes multi-word lemmas with spaces (john_brown -> john brown)
    assert any(new != old and new in _wordnet_forms(old) and old not in {"the", "over"}
               for old, new in candidates)


@needs_data
@pytest.mark.parametrize("seed", SEEDS)
def test_random_insertion_adds_one_wordnet_synonym_of_a_word(seed):
    before = _words(SENTENCE)
    after = _words(augment.eda(SENTENCE, seed, operation="random_insertion"))
    assert len(after) == len(before) + 1
    inserted = [after[j] for j in range(len(after)) if after[:j] + after[j + 1:] == before]
    assert inserted, f"{after} is not {before} with one word inserted"
    assert any(word in _wordnet_forms(source, hyphen="-")
               for word in inserted for source in set(before))


@needs_data
def test_random_insertion_without_synonyms_leaves_the_sentence():
    assert augment.random_insertion(["xyzzy", "plugh", "."], 0.1, random.Random(0)) == [
        "xyzzy", "plugh", "."]


@needs_data
@pytest.mark.parametrize("operation", [*augment.OPERATIONS, None])
def test_same_seed_same_output(operation):
    first = [augment.eda(SENTENCE, seed, operation=operation) for seed in SEEDS]
    again = [augment.eda(SENTENCE, seed, operation=operation) for seed in SEEDS]
    assert first == again
    assert len(set(first)) > 1  # and the seed matters
    rng_a, rng_b = random.Random(3), random.Random(3)
    assert [augment.eda(SENTENCE, rng_a) for _ in range(5)] == [
        augment.eda(SENTENCE, rng_b) for _ in range(5)]


@needs_data
def test_eda_leaves_global_random_state_alone():
    py_state, np_state = random.getstate(), np.random.get_state()
    for seed in SEEDS:
        augment.eda(SENTENCE, seed)
    assert random.getstate() == py_state
    assert np.array_equal(np.random.get_state()[1], np_state[1])


@needs_data
def test_eda_edge_cases():
    assert augment.eda("", 0) == ""
    assert all(augment.eda("wonderful", seed) for seed in SEEDS)  # no swap/delete of 1 word
    with pytest.raises(ValueError, match="random_swap"):
        augment.eda(SENTENCE, 0, operation="back_translation")


def test_missing_nltk_data_names_the_setup_command(tmp_path):
    with pytest.raises(RuntimeError, match=r"python -m mtlib\.data\.nltk_data"):
        augment.eda(SENTENCE, 0, operation="random_swap", nltk_data=tmp_path / "absent")


# --- class balancing -------------------------------------------------------------------

def _sst_like():
    sentences = ["a dull and lifeless movie", "the acting is wooden", "an ok film overall",
                 "it is fine i guess", "a moving and splendid story", "great fun for kids",
                 "a truly wonderful picture", "bright clever and funny"]
    return pd.DataFrame({"id": [f"s{i}" for i in range(8)], "sentence": sentences,
                         "sentiment": [0, 0, 1, 1, 2, 2, 2, 2]}, index=range(10, 18))


def _quora_like():
    return pd.DataFrame({
        "id": ["q0", "q1", "q2", "q3"],
        "sentence1": ["how do i learn python fast", "what is the best movie ever",
                      "why is the sky blue", "how can i sleep better"],
        "sentence2": ["what is the quickest way to learn python", "which film is the greatest",
                      "what makes the sky look blue", "what is the capital of france"],
        "is_duplicate": [1.0, 1.0, 1.0, 0.0],
    })


@needs_data
def test_balance_classes_equalises_and_keeps_originals():
    df = _sst_like()
    out, counts = augment.balance_classes(df, ["sentence"], "sentiment", seed=0)
    assert list(out["sentiment"].value_counts().sort_index()) == [4, 4, 4]
    assert counts.to_dict() == {"before": {0: 2, 1: 2, 2: 4}, "after": {0: 4, 1: 4, 2: 4}}
    assert out.iloc[: len(df)].equals(df.reset_index(drop=True))
    assert out["sentiment"].dtype == df["sentiment"].dtype
    new = out.iloc[len(df):]
    assert out["id"].is_unique
    sources = df.set_index("id")
    for row in new.itertuples():
        source_id, k = re.fullmatch(r"(s\d)-aug(\d+)", row.id).groups()
        assert sources.loc[source_id, "sentiment"] == row.sentiment


@needs_data
def test_balance_classes_augments_both_sentences_of_a_pair():
    df = _quora_like()
    out, counts = augment.balance_classes(df, ["sentence1", "sentence2"], "is_duplicate", seed=1)
    assert counts["after"].tolist() == [3, 3]
    assert out["is_duplicate"].dtype == np.float64
    new = out.iloc[len(df):]
    assert list(new["id"]) == ["q3-aug1", "q3-aug2"]
    assert (new["is_duplicate"] == 0.0).all()
    assert all(n != df.loc[3, "sentence1"] for n in new["sentence1"])
    assert all(n != df.loc[3, "sentence2"] for n in new["sentence2"])


@needs_data
def test_balance_classes_is_deterministic():
    first, _ = augment.balance_classes(_sst_like(), "sentence", "sentiment", seed=5)
    again, _ = augment.balance_classes(_sst_like(), "sentence", "sentiment", seed=5)
    other, _ = augment.balance_classes(_sst_like(), "sentence", "sentiment", seed=6)
    assert first.equals(again)
    assert not first.equals(other)


def test_balanced_input_gains_no_rows():
    df = _sst_like().iloc[:4]
    out, counts = augment.balance_classes(df, ["sentence"], "sentiment", seed=0)
    assert out.equals(df.reset_index(drop=True))
    assert (counts["before"] == counts["after"]).all()


# --- writing ---------------------------------------------------------------------------

def test_write_augmented_uses_the_course_layout(tmp_path):
    df = _sst_like()
    path = augment.write_augmented(df, tmp_path / "sub" / "sst-train-aug.csv")
    assert path.read_text().splitlines()[0] == "\tid\tsentence\tsentiment"
    back = pd.read_csv(path, sep="\t", index_col=0)
    pd.testing.assert_frame_equal(back, df.reset_index(drop=True), check_dtype=False)


def test_write_augmented_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "quora-train-aug.csv"
    path.write_text("old complete file\n")

    def fail_halfway(self, f, **kwargs):
        f.write("\tid\tsentence1\n0\tq0\tpartial")
        raise OSError("disk full")

    monkeypatch.setattr(pd.DataFrame, "to_csv", fail_halfway)
    with pytest.raises(OSError, match="disk full"):
        augment.write_augmented(_quora_like(), path)
    assert path.read_text() == "old complete file\n"
    assert [p.name for p in tmp_path.iterdir()] == [path.name]
