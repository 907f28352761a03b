"""lib.tasks.entities: answers correct by construction, single-token checks, shared positions, and the counterfactual
sets (corruptions, DCM desiderata) as specified in research/papers.md (Paper 3 (a))."""
import numpy as np
import pytest
import torch

from lib.tasks import entities as E
from lib.tokenizers import train_bpe

WORDS = ("apple", "book", "car", "cup", "dog", "egg", "fish", "hat", "key", "lamp", "map", "pen", "ring", "shoe")


@pytest.fixture(scope="module")
def tok():
    rng = np.random.default_rng(0)
    vocab = E.Vocab(WORDS, E.LABELS)
    texts = [p + a for p, a in zip(E.prompts(vocab, E.sample(vocab, 400, 7, rng)),
                                   E.answers(vocab, E.sample(vocab, 400, 7, rng)))]
    return train_bpe(texts * 3, vocab_size=400)


@pytest.fixture(scope="module")
def vocab(tok):
    return E.make_vocab(tok, WORDS, n_boxes=7)


def test_answers_are_correct_by_construction(vocab):
    b = E.sample(vocab, 50, 7, np.random.default_rng(1))
    for i, (text, answer) in enumerate(zip(E.prompts(vocab, b), E.answers(vocab, b))):
        label = vocab.labels[b.query[i]]
        assert text.endswith(f"Box {label} contains the")
        assert f"the {answer.strip()} is in Box {label}".lower() in text.lower()
        assert text.count(f"Box {label}") == 2  # once in the context, once in the query
    assert (b.answer >= 0).all() and all(len(set(row)) == 7 for row in b.objects)
    assert all(len(set(row)) == 7 for row in b.labels)
    assert E.prompt(vocab, b, 0).startswith("The ") and E.prompt(vocab, b, 0).count(", the ") == 6


def test_single_token_words_drop_split_words(tok):
    assert set(WORDS) <= set(E.single_token_words(tok, WORDS))
    assert "hippopotamus" not in E.single_token_words(tok, ("hippopotamus",))
    with pytest.raises(ValueError, match="single-token objects"):
        E.make_vocab(tok, WORDS[:5], n_boxes=7)


def test_encode_positions(tok, vocab):
    b = E.sample(vocab, 20, 7, np.random.default_rng(2))
    enc = E.encode(tok, vocab, b)
    ids = enc["input_ids"]
    obj_ids, lab_ids = E.token_ids(tok, vocab)
    assert torch.equal(ids[:, enc["object_pos"]], obj_ids[torch.as_tensor(b.objects)])
    assert torch.equal(ids[:, enc["label_pos"]], lab_ids[torch.as_tensor(b.labels)])
    assert torch.equal(ids[:, enc["query_pos"]], lab_ids[torch.as_tensor(b.query)])
    rows = torch.arange(20)
    assert torch.equal(ids[rows, enc["prev_query_pos"]], ids[:, enc["query_pos"]])  # the query's earlier occurrence
    assert torch.equal(enc["answer_ids"], obj_ids[torch.as_tensor(b.answer)])
    # the answer is the object 6 tokens before its label here ("obj is in B o x L" or shorter when Box is one token)
    box = torch.as_tensor(b.query_box)
    assert torch.equal(ids[rows, enc["object_pos"][box]], enc["answer_ids"])
    full = tok([t + a for t, a in zip(E.prompts(vocab, b), E.answers(vocab, b))])["input_ids"]
    assert [row[-1] for row in full] == enc["answer_ids"].tolist()  # the answer is the next single token


def test_encode_refuses_multi_token_objects(tok):
    bad = E.Vocab(("hippopotamus",) + WORDS, E.LABELS)
    b = E.Boxes(np.array([[0, 1]]), np.array([[0, 1]]), np.array([0]))
    with pytest.raises(ValueError, match="single token"):
        E.encode(tok, bad, b)


def test_corrupt_has_random_query_letters(vocab):
    c = E.corrupt(vocab, 400, 7, np.random.default_rng(3))
    absent = (c.query_box < 0).mean()
    assert 0.5 < absent < 0.9  # 19 of 26 letters are not in a 7-box context
    assert (c.answer[c.query_box < 0] == -1).all()


def test_desiderata_targets(vocab):
    rng = np.random.default_rng(4)
    base = E.sample(vocab, 300, 7, rng)
    rows = np.arange(300)
    for kind in ("positional", "object"):
        src, target = E.desideratum(vocab, base, kind, rng)
        assert (src.query_box != base.query_box).all() and (src.query_box >= 0).all()
        assert all(not set(s) & set(b) for s, b in zip(src.objects, base.objects))  # no shared object
        expected = base.objects[rows, src.query_box] if kind == "positional" else src.answer
        assert (target == expected).all()
    assert all(t not in b for t, b in zip(E.desideratum(vocab, base, "object", rng)[1], base.objects))
    src, target = E.desideratum(vocab, base, "box_label", rng)
    j = (base.labels == src.query[:, None]).argmax(1)  # where the source's query label sits in base
    assert (base.labels == src.query[:, None]).any(1).all() and (src.query != base.query).all()
    assert (src.query_box != j).all() and (src.query_box != base.query_box).all()
    assert (target == base.objects[rows, j]).all()
    with pytest.raises(ValueError, match="kind"):
        E.desideratum(vocab, base, "colour", rng)


def test_arithmetic_texts_are_exact():
    for line in E.arithmetic_texts(50, np.random.default_rng(5)):
        expr, value = line.split("? ")[1].rstrip(".").split(" = ")
        assert eval(expr) == int(value)  # noqa: S307 - our own generated arithmetic


def test_word_tokenizer_gives_the_papers_layout(tmp_path):
    """lib.tasks.wordvocab: every word one token, a segment 7 tokens, the query label at last - 2; saves and loads."""
    from transformers import AutoTokenizer

    from lib.tasks import wordvocab as W
    wt = W.word_tokenizer(E.OBJECTS, E.LABELS)
    voc = E.make_vocab(wt, E.OBJECTS, n_boxes=7)
    assert voc.objects == E.OBJECTS and voc.labels == E.LABELS  # every object and label is a single token
    assert len(wt) == len(W.words(E.OBJECTS, E.LABELS)) < 300
    enc = E.encode(wt, voc, E.sample(voc, 20, 7, np.random.default_rng(3)))
    assert enc["input_ids"].shape[1] == 7 * 7 + 4 and enc["query_pos"] == enc["last"] - 2
    assert torch.equal(torch.diff(enc["label_pos"]), torch.full((6,), 7))
    assert wt.unk_token_id not in enc["input_ids"]
    assert wt("3 goes to F, 7 goes to Q. F plus Q is 10")["input_ids"].count(wt.unk_token_id) == 0
    wt.save_pretrained(tmp_path)
    back = AutoTokenizer.from_pretrained(tmp_path)
    text = E.prompt(voc, E.sample(voc, 1, 7, np.random.default_rng(4)), 0)
    assert back(text)["input_ids"] == wt(text)["input_ids"]


def test_word_tokenizer_with_bos_keeps_the_layout_one_position_later(tmp_path):
    from transformers import AutoTokenizer

    from lib.tasks import wordvocab as W
    wt, plain = W.word_tokenizer(E.OBJECTS, E.LABELS, bos=True), W.word_tokenizer(E.OBJECTS, E.LABELS)
    voc = E.make_vocab(wt, E.OBJECTS, n_boxes=7)
    b = E.sample(voc, 5, 7, np.random.default_rng(5))
    enc, enc0 = E.encode(wt, voc, b), E.encode(plain, voc, b)
    assert (enc["input_ids"][:, 0] == wt.bos_token_id).all() and torch.equal(enc["input_ids"][:, 1:], enc0["input_ids"])
    assert torch.equal(enc["object_pos"], enc0["object_pos"] + 1) and enc["query_pos"] == enc["last"] - 2
    wt.save_pretrained(tmp_path)
    assert AutoTokenizer.from_pretrained(tmp_path)(E.prompt(voc, b, 0))["input_ids"] == enc["input_ids"][0].tolist()


def test_bound_and_pure_arithmetic_are_right_and_bind_names():
    from lib.tasks import arithmetic as A
    voc = E.Vocab(E.OBJECTS, E.LABELS)
    rng = np.random.default_rng(6)
    for prompt, answer in A.bound_arithmetic(voc, 300, rng):
        context, query = prompt.split(". ")
        value = {b.split(" goes to ")[1]: int(b.split(" goes to ")[0]) for b in context.split(", ")}
        assert A.ARITH_NAMES[0] <= len(value) <= A.ARITH_NAMES[1]  # distinct names
        x, op, y, _ = query.split(" ")
        want = value[x] + value[y] if op == "plus" else value[x] - value[y]
        assert x != y and int(answer) == want >= 0 and answer.startswith(" ")
    for prompt, answer in A.pure_arithmetic(300, rng):
        a, op, b, _ = prompt.split(" ")
        assert int(answer) == (int(a) + int(b) if op == "plus" else int(a) - int(b)) >= 0
        assert max(int(a), int(b)) <= A.ARITH_MAX
