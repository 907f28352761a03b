"""lib.tasks.instructions: answers correct by construction, disjoint splits, encoding and scoring on known cases."""
import re

import numpy as np
import pytest
import torch

from lib import corpora
from lib.tasks import instructions as I
from lib.tokenizers import train_bpe

GENERATED = ("reverse", "count", "num2words", "words2num", "py_eval")
SOURCED = tuple(t for t in I.TASKS if t not in GENERATED)
needs_sources = pytest.mark.skipif(not (corpora.have_package("wordnet-base") and corpora.have_package("dict-gcide")),
                                   reason="offline sources missing (make data)")


@pytest.fixture(scope="module")
def tok():
    texts = [I.prompt(e) + " " + e.answer for t in GENERATED for e in I.candidates(t)[:200]]
    return train_bpe(texts, vocab_size=400)


@pytest.mark.parametrize("n, words", [(0, "zero"), (13, "thirteen"), (40, "forty"), (47, "forty seven"),
                                      (100, "one hundred"), (347, "three hundred forty seven"),
                                      (2000, "two thousand"), (2019, "two thousand nineteen")])
def test_number_words(n, words):
    assert I.number_words(n) == words


def test_number_words_rejects_out_of_range():
    with pytest.raises(ValueError, match="9999"):
        I.number_words(10_000)


def test_spec_table_is_consistent():
    assert len(I.TASKS) >= 12 and len(I.CLUSTERS) >= 4
    assert {s.kind for s in I.SPECS.values()} == set(I.KINDS)
    for cluster in I.CLUSTERS:  # every cluster has at least two tasks
        assert sum(s.cluster == cluster for s in I.SPECS.values()) >= 2


@pytest.mark.parametrize("task", GENERATED)
def test_generated_answers_are_correct(task):
    d = I.build(task, 60, 30)
    for e in d.train + d.test:
        words = e.input.split()
        expected = {"reverse": lambda: " ".join(reversed(words)), "count": lambda: str(len(words)),
                    "num2words": lambda: I.number_words(int(e.input)),
                    "words2num": lambda: str([n for n in range(I.N_NUMBERS) if I.number_words(n) == e.input][0]),
                    "py_eval": lambda: str(eval(e.input))}[task]()  # noqa: S307
        assert e.answer == expected


@pytest.mark.parametrize("task", GENERATED)
def test_splits_are_disjoint_and_sized(task):
    d = I.build(task, 50, 20)
    assert len(d.train) == 50 and len(d.test) == 20
    train, test = {e.key for e in d.train}, {e.key for e in d.test}
    assert not train & test
    assert all(I.in_test(k, 0.2) for k in test) and not any(I.in_test(k, 0.2) for k in train)


def test_number_tasks_share_their_split():
    a, b = I.build("num2words", 100, 50), I.build("words2num", 100, 50)
    assert not {e.key for e in a.train} & {e.key for e in b.test}
    assert not {e.key for e in b.train} & {e.key for e in a.test}


def test_build_is_deterministic_and_too_many_fails():
    assert I.build("count", 20, 10).test == I.build("count", 20, 10).test
    with pytest.raises(ValueError, match="fewer than asked"):
        I.build("num2words", 10, 5000)


@needs_sources
@pytest.mark.slow
def test_sourced_tasks_are_balanced_and_valid():
    for task in SOURCED:
        d = I.build(task, 100, 40)
        assert not {e.key for e in d.train} & {e.key for e in d.test}
        for e in d.train + d.test:
            assert e.answer in e.choices and len(set(e.choices)) == len(e.choices)
        if task != "antonym":  # fixed label set: balanced within one example per class
            counts = np.unique([e.answer for e in d.test], return_counts=True)[1]
            assert counts.max() - counts.min() <= 1
        if task in ("isa", "synonym"):
            assert all(len(e.input.split()) == 3 and e.input.split()[1] == ";" for e in d.test)
        if task == "isa":  # the second word is a topic class; a "no" names a class of none of the word's senses
            classes = set(I.TOPICS.values())
            assert all(e.input.split()[2] in classes for e in d.train + d.test)
            senses = {}
            for s in I._synsets():
                if s.pos == "n" and s.lexname in I.TOPICS:
                    for w in filter(None, map(I._word, s.words)):
                        senses.setdefault(w, set()).add(I.TOPICS[s.lexname])
            for e in d.train + d.test:
                x, y = e.input.split()[0], e.input.split()[2]
                assert (y in senses[x]) == (e.answer == "yes")
        if task == "antonym":
            assert all(e.input.endswith(f"{e.choices[0]} or {e.choices[1]}") for e in d.test)
        if task == "gloss_match":
            assert all(e.input.split(":")[0].strip()[:4] not in e.input.split(":", 1)[1].lower() for e in d.test)
            pos_of = {}  # (word, definition) -> part of speech; a "no" joins a word to another part's definition
            for w, p, t in I._gcide():
                pos_of.setdefault(t, set()).add(p)
                pos_of.setdefault(w, set()).add(p)
            for e in d.test:
                word, text = e.input.split(": ", 1)
                if e.answer == "no":
                    assert pos_of[text] - pos_of[word], e
        if task == "code_type":
            assert all(e.answer != "function" or e.input.startswith("def ") for e in d.test)


def test_encode_masks_everything_but_the_answer(tok):
    exs = I.build("count", 4, 4).test
    enc = I.encode(exs, tok, max_len=128)
    for i, e in enumerate(exs):
        n = int(enc.attention_mask[i].sum())
        answer = enc.labels[i][enc.labels[i] != -100].tolist()
        assert answer[-1] == tok.eos_token_id
        assert tok.decode(answer[:-1]) == " " + e.answer
        assert tok.decode(enc.input_ids[i, 1:enc.last[i] + 1]) == I.prompt(e)  # position 0 is the bos token
        assert enc.labels[i, :enc.last[i] + 1].eq(-100).all() and enc.labels[i, n:].eq(-100).all()


def test_encode_cuts_long_prompts_from_the_left(tok):
    exs = I.build("reverse", 2, 2).test
    enc = I.encode(exs, tok, max_len=20)
    assert enc.input_ids.shape[1] <= 20
    assert tok.decode(enc.input_ids[0, :enc.last[0] + 1]).endswith("Answer:")


class Oracle(torch.nn.Module):
    """Peeks at the next token: its argmax is always the true next token (or, `wrong`, never is)."""

    def __init__(self, vocab, wrong=False):
        super().__init__()
        self.vocab, self.wrong, self.dummy = vocab, wrong, torch.nn.Parameter(torch.zeros(1))

    @property
    def device(self):
        return self.dummy.device

    def forward(self, ids, attention_mask=None, output_hidden_states=False, logits_to_keep=0):
        logits = torch.zeros(*ids.shape, self.vocab)
        nxt = torch.roll(ids, -1, dims=1)
        logits.scatter_(-1, ((nxt + int(self.wrong)) % self.vocab).unsqueeze(-1), 10.0)
        hidden = tuple(torch.randn(*ids.shape, 8) for _ in range(3)) if output_hidden_states else None
        keep = slice(-logits_to_keep, None) if isinstance(logits_to_keep, int) else logits_to_keep  # as in HF
        return type("Out", (), {"logits": logits[:, keep], "hidden_states": hidden})()


def test_oracle_scores_exactly_one_and_a_shifted_model_zero(tok):
    exs = I.build("py_eval", 4, 12).test  # a generation task: a shifted answer is wrong
    right, _ = I.evaluate(Oracle(len(tok)), tok, exs, 128)
    wrong, states = I.evaluate(Oracle(len(tok), wrong=True), tok, exs, 128, states=True)
    assert right == {"exact_match": 1.0, "accuracy": 1.0}
    assert wrong == {"exact_match": 0.0, "accuracy": 0.0}
    assert states.shape == (2, 12, 8)  # hidden_states[1:] of a 3-entry tuple


def test_choice_accuracy_uses_the_gold_choice(tok):
    exs = [I.Example("isa", f"k{i}", "2 ; 3", a, ("yes", "no")) for i, a in enumerate(["yes", "no", "no"])]
    first, distinct = I.first_token_ids(exs, tok)
    assert distinct.all() and first.shape == (3, 2)
    metrics, _ = I.evaluate(Oracle(len(tok)), tok, exs, 64)
    assert metrics["accuracy"] == 1.0


def test_clashing_choices_fall_back_to_whole_answers(tok):
    exs = [I.Example("antonym", "k", "x", "seven one", ("seven one", "seven two"))]
    _, distinct = I.first_token_ids(exs, tok)
    assert not distinct.any()
    assert I.evaluate(Oracle(len(tok)), tok, exs, 64)[0]["accuracy"] == 1.0


def test_json_round_trip():
    data = {t: I.build(t, 5, 3) for t in ("count", "py_eval")}
    back = I.from_json(I.to_json(data))
    assert back["count"].test == data["count"].test and I.fingerprint(back) == I.fingerprint(data)


def test_templates_end_where_the_answer_starts():
    e = I.Example("count", "k", "a b", "2")
    assert I.prompt(e, "plain").endswith("Answer:")
    assert re.search(r"\[/INST\]$", I.prompt(e, "llama2"))


def test_count_is_a_structured_label_task():
    d = I.build("count", 20, 10)
    assert all(e.choices == ("2", "3", "4", "5", "6") for e in d.test)
    assert I.SPECS["count"].kind == "structured" and I.SPECS["count"].answer == "label"
    for answer in I.ANSWER_TYPES:  # both answer types exist
        assert any(s.answer == answer for s in I.SPECS.values())
    assert all(bool(I.build(t, 5, 3).test[0].choices) == (I.SPECS[t].answer == "label") for t in GENERATED)


def test_logits_only_where_answers_are_read_match_the_full_pass(tok):
    """forward_rows unembeds only from the last prompt token on: its log-probabilities, exact match and first-token
    scores equal those computed from every position's logits; last_states equals its states."""
    import transformers as tf

    torch.manual_seed(0)
    model = tf.GPT2LMHeadModel(tf.GPT2Config(vocab_size=len(tok), n_positions=128, n_embd=16, n_layer=2,
                                             n_head=2)).eval()
    exs = I.build("count", 4, 6).test + I.build("reverse", 4, 6).test
    enc = I.encode(exs, tok, 64)
    first, _ = I.first_token_ids(I.build("count", 4, 12).test[:12], tok)
    out = I.forward_rows(model, enc, first_ids=first, states=True, batch_size=5)
    with torch.no_grad():
        full = model(enc.input_ids, attention_mask=enc.attention_mask, output_hidden_states=True)
    lp = torch.log_softmax(full.logits[:, :-1].float(), -1)
    labels = enc.labels[:, 1:]
    on = labels.ne(-100)
    tok_lp = lp.gather(-1, labels.clamp(min=0)[..., None])[..., 0] * on
    assert np.allclose(out["logp"], tok_lp.sum(1).numpy(), atol=1e-4)
    hit = (lp.argmax(-1) == labels) | ~on
    assert np.array_equal(out["exact"], hit.all(1).numpy())
    at = torch.arange(len(exs))
    want = lp[at, enc.last].gather(-1, first)
    assert np.allclose(out["first"], want.numpy(), atol=1e-4)
    assert np.allclose(I.last_states(model, enc, batch_size=3), out["states"], atol=1e-5)
