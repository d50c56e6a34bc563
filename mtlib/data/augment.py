"""Training-data preparation: a length filter and Easy Data Augmentation.

EDA (Wei and Zou 2019, "EDA: Easy Data Augmentation Techniques for Boosting Performance
on Text Classification Tasks") makes a new example from an old one with one of four
operations, each touching n = max(1, ceil(alpha * words)) words:

- synonym replacement (SR): replace n non-stop words by a WordNet synonym
  (nlpaug ``SynonymAug(aug_src='wordnet')``, POS-aware);
- random insertion (RI): insert a WordNet synonym of a random non-stop word of the
  sentence at a random position, n times (written here, see :func:`random_insertion`);
- random swap (RS): swap two words, n times (nlpaug ``RandomWordAug(action='swap')``);
- random deletion (RD): delete n words (nlpaug ``RandomWordAug(action='delete')``).

Differences from the paper's reference code, all deliberate: n is rounded up (nlpaug's
rule) rather than down; RD deletes exactly n words instead of each word with probability
alpha; RI only inserts one-word synonyms, so one insertion adds exactly one word; text is
split on whitespace and re-joined with single spaces, not lower-cased or stripped of
punctuation (the course files are already tokenised for SST).

The study uses EDA to bring every under-represented class of SST and Quora up to the
size of the largest class (:func:`balance_classes`). WordNet, the POS tagger and the stop
words come from the project's offline NLTK folder (:mod:`mtlib.data.nltk_data`); nothing is
downloaded at run time.
"""
from __future__ import annotations

import math
import random
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd

from mtlib.data.nltk_data import use_nltk_data
from mtlib.io import atomic_path

OPERATIONS = ("synonym_replacement", "random_insertion", "random_swap", "random_deletion")
#: Operations that need at least two words to do anything sensible.
_NEEDS_TWO_WORDS = {"random_swap", "random_deletion"}
#: Like the reference EDA code: give up on RI after this many words without a synonym.
_RI_TRIES = 10


# --- length filter ---------------------------------------------------------------------

def length_filter(df: pd.DataFrame, lengths, fraction: float = 0.02) -> tuple[pd.DataFrame, int]:
    """Drop the ``fraction`` longest rows of ``df``; returns ``(kept rows, dropped count)``.

    ``lengths`` holds one length per row (for a sentence pair, the sum of both token
    counts). floor(fraction * rows) rows are dropped; among equal lengths the earlier row
    goes first, so the result is deterministic. Kept rows keep their order and index.
    """
    lengths = np.asarray(lengths)
    if lengths.shape != (len(df),):
        raise ValueError(f"need one length per row: {lengths.shape} for {len(df)} rows")
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"fraction must be in [0, 1), got {fraction}")
    n_drop = int(math.floor(fraction * len(df) + 1e-9))
    order = np.lexsort((np.arange(len(df)), -lengths))  # longest first, then by position
    keep = np.ones(len(df), dtype=bool)
    keep[order[:n_drop]] = False
    return df[keep], n_drop


# --- EDA operations --------------------------------------------------------------------

@lru_cache(maxsize=None)
def _lexicon(nltk_data: Path | None) -> tuple[frozenset, object]:
    """Stop words (lower, Capitalised and UPPER case) and nlpaug's WordNet dictionary."""
    use_nltk_data(nltk_data)
    from nlpaug.model.word_dict import WordNet
    from nltk.corpus import stopwords

    words = stopwords.words("english")
    variants = {v for w in words for v in (w, w.capitalize(), w.upper())}
    return frozenset(variants), WordNet(lang="eng", is_synonym=True)


@lru_cache(maxsize=None)
def _nlpaug_augmenters(alpha: float, nltk_data: Path | None) -> dict[str, object]:
    """nlpaug augmenters for SR, RS and RD, built once per alpha (whitespace tokens)."""
    import nlpaug.augmenter.word as naw

    stop, _ = _lexicon(nltk_data)
    common = dict(aug_p=alpha, aug_min=1, aug_max=None, tokenizer=str.split,
                  reverse_tokenizer=" ".join)
    return {
        "synonym_replacement": naw.SynonymAug(aug_src="wordnet", stopwords=stop, **common),
        "random_swap": naw.RandomWordAug(action="swap", **common),
        "random_deletion": naw.RandomWordAug(action="delete", **common),
    }


def wordnet_synonyms(word: str, nltk_data: Path | None = None) -> list[str]:
    """One-word WordNet synonyms of ``word`` (any part of speech), lower-cased and sorted.

    Multi-word lemmas (``motion_picture``) are left out so that an insertion adds exactly
    one word; the word itself is left out too.
    """
    _, wordnet = _lexicon(nltk_data)
    lemmas = {lemma.lower() for lemma in wordnet.predict(word)}
    return sorted(lemma for lemma in lemmas if "_" not in lemma and lemma != word.lower())


def random_insertion(words: list[str], alpha: float, rng: random.Random,
                     nltk_data: Path | None = None) -> list[str]:
    """EDA's RI (Wei and Zou 2019): n times, insert a synonym of a random word anywhere.

    nlpaug has no "insert a synonym" action, so this composes its pieces: a random
    alphabetic non-stop word of the sentence, a random one-word WordNet synonym of it
    (:func:`wordnet_synonyms`, nlpaug's WordNet dictionary over NLTK), inserted at a
    random position (words without synonyms: up to :data:`_RI_TRIES` tries, as in EDA)."""
    stop, _ = _lexicon(nltk_data)
    out = list(words)
    for _ in range(max(1, math.ceil(alpha * len(words)))):  # n, as nlpaug counts
        synonym = _random_synonym(out, rng, stop, nltk_data)
        if synonym is None:
            break
        out.insert(rng.randint(0, len(out)), synonym)
    return out


def _random_synonym(words, rng, stop, nltk_data) -> str | None:
    candidates = [w for w in words if w.isalpha() and w not in stop]
    for _ in range(_RI_TRIES):
        if not candidates:
            return None
        options = wordnet_synonyms(rng.choice(candidates), nltk_data)
        if options:
            return rng.choice(options)
    return None


@contextmanager
def _global_seed(seed: int):
    """Seed the global ``random`` and NumPy generators nlpaug draws from, then restore them.

    This is what ``nlpaug.util.Randomness.seed`` does for these augmenters, minus its
    seeding of torch's global generator (and CUDA's, with a fixed 2021): augmentation must
    not disturb the RNG state of training code in the same process.
    """
    py_state, np_state = random.getstate(), np.random.get_state()
    random.seed(seed)
    np.random.seed(seed)
    try:
        yield
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)


def eda(sentence: str, rng_or_seed, alpha: float = 0.1, operation: str | None = None,
        nltk_data: Path | None = None) -> str:
    """One EDA augmentation of ``sentence`` (Wei and Zou 2019).

    ``operation`` is one of :data:`OPERATIONS`, or None to draw one uniformly (swap and
    deletion only for sentences of two or more words). ``rng_or_seed`` is a seed (int) or a
    ``random.Random``: the same seed gives the same output. A sentence that offers the
    operation nothing (no synonyms, say) comes back unchanged.
    """
    rng = rng_or_seed if isinstance(rng_or_seed, random.Random) else random.Random(int(rng_or_seed))
    words = sentence.split() if isinstance(sentence, str) else []
    if not words:
        return sentence
    if operation is None:
        operation = rng.choice([op for op in OPERATIONS if len(words) > 1 or op not in _NEEDS_TWO_WORDS])
    elif operation not in OPERATIONS:
        raise ValueError(f"unknown EDA operation {operation!r}; valid: {', '.join(OPERATIONS)}")
    seed = rng.getrandbits(32)
    if operation == "random_insertion":
        return " ".join(random_insertion(words, alpha, random.Random(seed), nltk_data))
    augmenter = _nlpaug_augmenters(float(alpha), nltk_data)[operation]
    with _global_seed(seed):
        result = augmenter.augment(" ".join(words))
    return result[0] if result else " ".join(words)  # nlpaug >= 1.1.11: a list, empty on a warning


# --- class balancing -------------------------------------------------------------------

def _draw_sources(positions: np.ndarray, need: int, rng: random.Random) -> list[int]:
    """``need`` row positions: shuffled passes over ``positions``, so sources are used evenly."""
    drawn: list[int] = []
    while len(drawn) < need:
        batch = [int(p) for p in positions]
        rng.shuffle(batch)
        drawn.extend(batch[: need - len(drawn)])
    return drawn


def _augmented_ids(source_ids: list, existing_ids) -> list[str]:
    """``<id>-aug<k>`` with k counting up per source id, skipping ids already taken."""
    taken = {str(i) for i in existing_ids}
    counters: dict[str, int] = {}
    out = []
    for sid in map(str, source_ids):
        k = counters.get(sid, 0) + 1
        while f"{sid}-aug{k}" in taken:
            k += 1
        new = f"{sid}-aug{k}"
        counters[sid] = k
        taken.add(new)
        out.append(new)
    return out


def balance_classes(df: pd.DataFrame, text_columns, label_column: str, seed: int,
                    alpha: float = 0.1, id_column: str = "id",
                    nltk_data: Path | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Raise every class to the size of the largest one with EDA (Wei and Zou 2019).

    For each smaller class, source rows are drawn at random from that class (shuffled
    passes, so each source is reused as evenly as possible) and each new row is a copy of
    its source with every column in ``text_columns`` augmented by :func:`eda`
    independently: for Quora pairs both questions are rewritten, which keeps the
    "duplicate or not" label and makes the new pair differ from its source on both sides.
    New rows get ids ``<source id>-aug<k>``; other columns, the label included (its dtype
    too: int for SST, float for Quora), are copied from the source.

    Returns ``(df with the new rows appended, counts)``: the original rows come first,
    unchanged and in order (index reset to 0..n-1), and ``counts`` has one row per
    label with columns ``before`` and ``after``. Rows without a label are kept as they are.
    """
    text_columns = [text_columns] if isinstance(text_columns, str) else list(text_columns)
    rng = random.Random(seed)
    before = df[label_column].value_counts().sort_index()
    labels = df[label_column].to_numpy()
    picks: list[int] = []
    for label, count in before.items():  # each class needs the largest class's count minus its own
        picks += _draw_sources(np.flatnonzero(labels == label), int(before.max() - count), rng)
    new = df.iloc[picks].copy()
    ids = _augmented_ids(new[id_column].tolist(), df[id_column])
    new[id_column] = pd.array(ids, dtype=df[id_column].dtype)
    for col in text_columns:
        texts = [eda(text, rng, alpha, nltk_data=nltk_data) for text in new[col]]
        new[col] = pd.array(texts, dtype=df[col].dtype)
    out = pd.concat([df, new], ignore_index=True)
    after = out[label_column].value_counts().sort_index()
    counts = pd.DataFrame({"before": before, "after": after}).rename_axis(label_column)
    return out, counts


# --- writing ---------------------------------------------------------------------------

def write_augmented(df: pd.DataFrame, path) -> Path:
    """Write ``df`` atomically in the course CSVs' layout: tab-separated, an unnamed leading
    index column (0..n-1), then the frame's columns (``id``, the text columns, the label)."""
    path = Path(path)
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8", newline="") as f:
        df.reset_index(drop=True).to_csv(f, sep="\t", index=True)
    return path
