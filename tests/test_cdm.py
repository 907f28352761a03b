"""lib.tasks.cdm: answers correct by construction, ranges, disjoint splits, the psychometric grid, encoding."""
import numpy as np
import pytest
import torch

from lib.tasks import cdm
from lib.tokenizers import train_bpe

SPEC = cdm.CDMSpec()  # digits 0-9, levels 1-8


@pytest.fixture(scope="module")
def tok():
    """A byte-level BPE trained on task text, so ' left' / ' right' are single tokens and ' A' is too."""
    df = cdm.sample_trials(SPEC, 400, seed=0)
    texts = [p + a for p, a in zip(cdm.prompts(df, SPEC), cdm.answers(df, SPEC))] + [" A B"] * 50
    return train_bpe(texts, vocab_size=400)


def test_answer_is_decided_by_the_relevant_stream_only():
    df = cdm.sample_trials(SPEC, 500, seed=1)
    first, second = np.where(df.context == "motion", df.m1, df.c1), np.where(df.context == "motion", df.m2, df.c2)
    assert (df.choice == (first < second).astype(int)).all()  # 0 = " left" = the first number is larger
    assert (df.rel_ev == first - second).all()
    assert (df.irr_ev == np.where(df.context == "motion", df.c1 - df.c2, df.m1 - df.m2)).all()
    assert (df.congruent == (np.sign(df.rel_ev) == np.sign(df.irr_ev))).all()
    assert (df.difficulty == df.rel_ev.abs()).all() and set(df.difficulty) == set(SPEC.levels)
    assert (df.rel_ev != 0).all()  # no ties


def test_numbers_stay_in_range_and_conditions_are_balanced():
    df = cdm.sample_trials(SPEC, 2000, seed=2)
    nums = df[["m1", "m2", "c1", "c2"]].to_numpy()
    assert nums.min() == 0 and nums.max() == 9
    assert 0.45 < df.congruent.mean() < 0.55 and 0.45 < df.choice.mean() < 0.55
    assert 0.45 < (df.context == "motion").mean() < 0.55


def test_heldout_pairs_sum_to_nine_and_never_appear_in_training():
    held = cdm.pairs(SPEC, "heldout")
    assert sorted(map(tuple, held)) == sorted((a, 9 - a) for a in range(10))  # 0/9 ... 9/0: ten ordered pairs
    assert len(cdm.pairs(SPEC, "train")) == 90 - 10
    s = cdm.make_splits(SPEC, {"train": 300, "val": 100, "test": 100, "heldout": 80}, seed=3)
    sets = {k: set(cdm.prompts(v, SPEC)) for k, v in s.items()}
    assert [len(sets[k]) for k in ("train", "val", "test", "heldout")] == [300, 100, 100, 80]  # distinct prompts
    assert not sets["train"] & sets["val"] and not sets["train"] & sets["test"] and not sets["val"] & sets["test"]
    for name in ("train", "val", "test"):
        df = s[name]
        assert ((df.m1 + df.m2) != 9).all() and ((df.c1 + df.c2) != 9).all()
    h = s["heldout"]
    rel_sum = (h.m1 + h.m2).where(h.context == "motion", h.c1 + h.c2)
    irr_sum = (h.c1 + h.c2).where(h.context == "motion", h.m1 + h.m2)
    assert (rel_sum == 9).all() and (irr_sum != 9).all()
    assert set(h.difficulty) == {1, 3, 5, 7, 9}


def test_sampling_is_seeded():
    a, b = cdm.sample_trials(SPEC, 50, seed=4), cdm.sample_trials(SPEC, 50, seed=4)
    assert a.equals(b) and not a.equals(cdm.sample_trials(SPEC, 50, seed=5))
    assert cdm.fingerprint(a, SPEC) == cdm.fingerprint(b, SPEC) != cdm.fingerprint(a.iloc[1:], SPEC)


def test_psychometric_grid_is_complete():
    df = cdm.psychometric_trials(SPEC, reps=2, seed=0)
    assert len(df) == 2 * 16 * 16 * 2
    counts = df.groupby(["context", "motion_ev", "color_ev"]).size()
    assert len(counts) == 2 * 16 * 16 and (counts == 2).all()
    assert ((df.m1 + df.m2) != 9).all()


def test_prompt_format():
    df = cdm.trials_from_evidence(SPEC, ["color", "color"], [-4, -4], [7, 7], np.random.default_rng(0),
                                  first=["motion", "color"])
    texts = cdm.prompts(df, SPEC)
    r = df.iloc[0]
    assert texts[0] == f"context: color. motion: {r.m1} vs {r.m2}. color: {r.c1} vs {r.c2}. answer:"
    r = df.iloc[1]
    assert texts[1] == f"context: color. color: {r.c1} vs {r.c2}. motion: {r.m1} vs {r.m2}. answer:"
    assert r.m1 - r.m2 == -4 and r.c1 - r.c2 == 7 and cdm.answers(df, SPEC) == [" left", " left"]


def test_which_stream_comes_first_is_random_and_independent_of_the_context():
    df = cdm.sample_trials(SPEC, 2000, seed=7)
    assert 0.45 < (df["first"] == "motion").mean() < 0.55
    same = (df["first"] == df["context"]).groupby(df["context"]).mean()
    assert ((0.4 < same) & (same < 0.6)).all()  # the cue does not name a fixed position


def test_encode_puts_one_answer_label_after_the_prompt(tok):
    df = cdm.sample_trials(SPEC, 40, seed=6)
    enc = cdm.encode(df, SPEC, tok)
    a = enc["answer_ids"].tolist()
    assert a == list(cdm.answer_ids(tok, SPEC))
    for i, p in enumerate(cdm.prompts(df, SPEC)):
        n = len(tok(p)["input_ids"])
        assert enc["last"][i] == n - 1 and enc["attention_mask"][i].sum() == n + 1
        labelled = (enc["labels"][i] != -100).nonzero().flatten().tolist()
        assert labelled == [n] and enc["labels"][i, n] == a[df.choice.iloc[i]] == enc["input_ids"][i, n]
    assert tok.decode(enc["input_ids"][0, : int(enc["last"][0]) + 1]) == cdm.prompts(df, SPEC)[0]


def test_prompt_length_does_not_reveal_the_context(tok):
    df = cdm.sample_trials(SPEC, 100, seed=7)
    for fmt in cdm.FORMATS:
        spec = cdm.CDMSpec(format=fmt)
        assert not cdm.context_sets_length(cdm.encode(df, spec, tok), df)
    enc = cdm.encode(df, SPEC, tok)
    enc["last"] = enc["last"] + torch.tensor((df.context == "motion").to_numpy(), dtype=torch.long)  # a leak
    assert cdm.context_sets_length(enc, df)


def test_multi_token_answers_are_refused(tok):
    with pytest.raises(ValueError, match="single tokens"):
        cdm.answer_ids(tok, cdm.CDMSpec(answers=(" left", " sinister")))
    assert cdm.number_tokens(tok, 10, 12).index.tolist() == [10, 11, 12]


@pytest.mark.parametrize("kwargs", [dict(lo=5, hi=5), dict(levels=(0, 1)), dict(levels=(9,)), dict(levels=(10,)),
                                    dict(answers=(" a", " a")), dict(format="json")])
def test_invalid_spec(kwargs):
    with pytest.raises(ValueError):
        cdm.CDMSpec(**kwargs)
