import numpy as np
import pandas as pd
import pytest
import torch

from mtlib.model.backbone import load_tokenizer
from mtlib.config import BackboneConfig
from mtlib.data.encode import BatchStream, EncodedSplit, collate, encode_split, epoch_batches, eval_batches


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer(BackboneConfig("tiny-random", 64, True))


def pairs(*rows):
    return pd.DataFrame([{"id": f"p{i}", "sentence1": a, "sentence2": b, "similarity": 1.0}
                         for i, (a, b) in enumerate(rows)])


def test_sentence_pair_is_one_sequence_with_segments_and_end_padding(tokenizer):
    split = encode_split(tokenizer, pairs(("the cat", "a dog runs fast"), ("hi", "yo")), "sts", "sentence", 64)
    batch = collate(split, np.array([0, 1]), tokenizer.pad_token_id)
    part = batch.inputs[0]
    cls, sep, pad = tokenizer.cls_token_id, tokenizer.sep_token_id, tokenizer.pad_token_id
    a, b = tokenizer("the cat", add_special_tokens=False)["input_ids"], tokenizer("a dog runs fast", add_special_tokens=False)["input_ids"]
    expected = [cls, *a, sep, *b, sep]
    assert part["input_ids"][0].tolist() == expected
    assert part["token_type_ids"][0].tolist() == [0] * (len(a) + 2) + [1] * (len(b) + 1)
    # the shorter row is padded at the END only, and its mask marks exactly the real tokens
    row = part["input_ids"][1].tolist()
    n = int(part["attention_mask"][1].sum())
    assert row[n - 1] == sep and all(t == pad for t in row[n:]) and pad not in row[:n]
    assert part["token_type_ids"][1, n:].eq(0).all()
    assert len(batch.inputs) == 1 and part["input_ids"].shape[1] == len(expected)  # dynamic padding


@pytest.mark.parametrize("pad_to", [None, 70])
def test_collate_pads_every_part_row_by_row_as_a_reference_would(pad_to):
    """The vectorised collate against the obvious row-by-row fill, on ragged two-part rows."""
    rng = np.random.default_rng(0)
    n = 40
    parts = []
    for _ in range(2):
        lengths = rng.integers(1, 60, n)
        parts.append(([rng.integers(5, 900, k).tolist() for k in lengths], [rng.integers(0, 2, k).tolist() for k in lengths]))
    split = EncodedSplit("sts", [f"r{i}" for i in range(n)], parts, rng.uniform(0, 5, n))
    rows = rng.permutation(n)[:13]
    batch = collate(split, rows, pad_id=3, pad_to=pad_to)
    for (ids, types), got in zip(parts, batch.inputs):
        width = pad_to or max(len(ids[i]) for i in rows)
        expected = {k: torch.full((len(rows), width), fill, dtype=torch.long)
                    for k, fill in (("input_ids", 3), ("attention_mask", 0), ("token_type_ids", 0))}
        for r, i in enumerate(rows):
            expected["input_ids"][r, :len(ids[i])] = torch.tensor(ids[i])
            expected["token_type_ids"][r, :len(ids[i])] = torch.tensor(types[i])
            expected["attention_mask"][r, :len(ids[i])] = 1
        for key, tensor in expected.items():
            assert got[key].dtype == torch.long and torch.equal(got[key], tensor), key
    assert batch.ids == [f"r{i}" for i in rows] and batch.index.tolist() == rows.tolist()
    assert torch.equal(batch.labels, torch.tensor(split.labels[rows], dtype=torch.float32))


def test_truncation_cuts_the_longer_sentence_first(tokenizer):
    long, short = "word " * 40, "tiny pair"
    split = encode_split(tokenizer, pairs((long, short)), "sts", "sentence", 16)
    ids, types = split.parts[0][0][0], split.parts[0][1][0]
    assert len(ids) == 16
    short_ids = tokenizer(short, add_special_tokens=False)["input_ids"]
    assert ids[-len(short_ids) - 1:-1] == short_ids  # the short sentence survives whole
    assert sum(types) == len(short_ids) + 1


def test_embedding_mode_encodes_each_sentence_alone(tokenizer):
    split = encode_split(tokenizer, pairs(("the cat", "a dog")), "sts", "embedding", 64)
    batch = collate(split, np.array([0]), tokenizer.pad_token_id)
    assert len(batch.inputs) == 2
    for part, text in zip(batch.inputs, ("the cat", "a dog")):
        assert part["input_ids"][0].tolist() == tokenizer(text)["input_ids"]
        assert part["token_type_ids"].eq(0).all()


def test_cache_round_trip_and_key(tokenizer, tmp_path):
    frame = pairs(("the cat", "a dog"), ("one two", "three"))
    first = encode_split(tokenizer, frame, "sts", "sentence", 64, cache_dir=tmp_path, backbone="tiny-random")
    assert len(list(tmp_path.glob("*.safetensors"))) == 1
    again = encode_split(tokenizer, frame, "sts", "sentence", 64, cache_dir=tmp_path, backbone="tiny-random")
    assert again.parts == first.parts
    encode_split(tokenizer, frame, "sts", "sentence", 32, cache_dir=tmp_path, backbone="tiny-random")
    encode_split(tokenizer, frame, "sts", "embedding", 64, cache_dir=tmp_path, backbone="tiny-random")
    assert len(list(tmp_path.glob("*.safetensors"))) == 3  # max length and pair mode are in the key


@pytest.mark.parametrize("bucketing", [False, True])
def test_epoch_batches_use_every_row_once(bucketing):
    lengths = np.random.default_rng(0).integers(5, 60, size=503)
    batches = epoch_batches(lengths, 16, torch.Generator().manual_seed(1), bucketing, bucket_factor=4)
    rows = np.concatenate(batches)
    assert sorted(rows.tolist()) == list(range(503))


def test_bucketing_reduces_padding():
    lengths = np.random.default_rng(0).integers(5, 60, size=2000)

    def padding(bucketing):
        batches = epoch_batches(lengths, 32, torch.Generator().manual_seed(1), bucketing)
        return sum(len(b) * lengths[b].max() - lengths[b].sum() for b in batches)

    assert padding(True) < 0.3 * padding(False)


def test_stream_resumes_exactly_across_passes(tokenizer):
    frame = pairs(*[(f"w{i} x", "y " * (i % 7 + 1)) for i in range(30)])
    split = encode_split(tokenizer, frame, "sts", "sentence", 64)
    a = BatchStream(split, 8, seed=3, pad_id=0)
    ids = [a.next().ids for _ in range(10)]  # 4 batches per pass: crosses two pass boundaries
    b = BatchStream(split, 8, seed=3, pad_id=0)
    [b.next() for _ in range(6)]
    c = BatchStream(split, 8, seed=3, pad_id=0)
    c.load_state_dict(b.state_dict())
    assert [c.next().ids for _ in range(4)] == ids[6:]
    assert ids[:4] != ids[4:8]  # each pass is reshuffled


def test_eval_batches_cover_the_split_and_restore_order(tokenizer):
    frame = pairs(*[(f"w{i}", "y " * (i % 5 + 1)) for i in range(11)])
    split = encode_split(tokenizer, frame, "sts", "sentence", 64)
    seen = np.concatenate([b.index for b in eval_batches(split, 4, 0)])
    assert sorted(seen.tolist()) == list(range(11))
