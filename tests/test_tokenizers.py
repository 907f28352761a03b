"""lib.tokenizers: exact BPE round trips, WordPiece normalised round trips, sizes, save/load, determinism."""
import pytest
from transformers import AutoTokenizer

from lib.tokenizers import EOT, WORDPIECE_SPECIALS, train_bpe, train_wordpiece

ENGLISH = [
    "The quick brown fox jumps over the lazy dog. It was the best of times, it was the worst of times.",
    "A dictionary defines a word: its meaning, its origin, and examples of how it is used in a sentence.",
    "Fine-tuning changes a model's weights a little; does it change what the model computes?",
]
CODE = [
    "def add(a, b):\n    \"\"\"Return the sum.\"\"\"\n    return a + b\n",
    "class Stack:\n    def __init__(self):\n        self.items = []\n\n    def push(self, x):\n"
    "        self.items.append(x)\n",
    "for i in range(10):\n\tif i % 2 == 0:\n\t\tprint(f'{i} is even')  # comment\n",
]
CORPUS = (ENGLISH + CODE) * 20


@pytest.fixture(scope="module")
def bpe():
    return train_bpe(CORPUS, vocab_size=400)


@pytest.fixture(scope="module")
def wordpiece():
    return train_wordpiece(CORPUS, vocab_size=300)


@pytest.mark.parametrize("text", [
    CODE[1],
    "  leading spaces, trailing spaces   ",
    "mixed\r\nline endings\n\n\nand\ttabs",
    "unicode: café, naïve, Straße, 日本語, emoji 🙂, math ∑ x² ≠ y",
    "def f(x):\n    return x ** 2  # never seen: ~`|\\ {} []\n" + ENGLISH[0],
    "",
])
def test_bpe_round_trip_is_exact(bpe, text):
    ids = bpe(text)["input_ids"]
    assert bpe.decode(ids) == text


def test_bpe_special_token_is_everything(bpe):
    eot = bpe.convert_tokens_to_ids(EOT)
    assert eot == 0
    assert bpe.bos_token_id == bpe.eos_token_id == bpe.unk_token_id == bpe.pad_token_id == eot
    assert bpe("hello")["input_ids"][0] != eot  # no special tokens are added when encoding
    assert bpe.decode([eot]) == EOT


def test_bpe_vocab_size_respected():
    small = train_bpe(CORPUS, vocab_size=300)
    assert len(small) == 300  # the corpus has plenty of pairs: the vocabulary fills up
    assert len(train_bpe(CORPUS, vocab_size=100_000)) < 100_000  # too few pairs: stops early, never exceeds


def test_bpe_is_deterministic(bpe):
    again = train_bpe(CORPUS, vocab_size=400)
    assert again.get_vocab() == bpe.get_vocab()
    assert again.backend_tokenizer.to_str() == bpe.backend_tokenizer.to_str()  # merges in the same order


def test_bpe_save_load_gives_identical_ids(bpe, tmp_path):
    bpe.save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    text = CODE[2] + ENGLISH[2] + " 日本"
    assert loaded(text)["input_ids"] == bpe(text)["input_ids"]
    assert loaded.decode(loaded(text)["input_ids"]) == text
    assert loaded.eos_token == loaded.pad_token == EOT


def _squash(text):
    return "".join(text.lower().split())


@pytest.mark.parametrize("text", [ENGLISH[0], ENGLISH[1], "Return the SUM of a and b.", CODE[0]])
def test_wordpiece_round_trip_up_to_normalisation(wordpiece, text):
    ids = wordpiece(text)["input_ids"]
    assert wordpiece.unk_token_id not in ids
    assert _squash(wordpiece.decode(ids, skip_special_tokens=True)) == _squash(text)


def test_wordpiece_specials_and_template(wordpiece):
    assert wordpiece.convert_tokens_to_ids(list(WORDPIECE_SPECIALS)) == [0, 1, 2, 3, 4]
    assert (wordpiece.pad_token_id, wordpiece.mask_token_id) == (0, 4)
    ids = wordpiece("the fox")["input_ids"]
    assert ids[0] == wordpiece.cls_token_id and ids[-1] == wordpiece.sep_token_id
    pair = wordpiece("the fox", "the dog")
    assert pair["input_ids"].count(wordpiece.sep_token_id) == 2 and 1 in pair["token_type_ids"]


def test_wordpiece_vocab_size_and_case():
    assert len(train_wordpiece(CORPUS, vocab_size=120)) <= 120
    cased = train_wordpiece(CORPUS, vocab_size=300, lowercase=False)
    assert cased.decode(cased("The")["input_ids"], skip_special_tokens=True) == "The"


def test_wordpiece_save_load_gives_identical_ids(wordpiece, tmp_path):
    wordpiece.save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    assert loaded(ENGLISH[1])["input_ids"] == wordpiece(ENGLISH[1])["input_ids"]
    assert loaded.mask_token_id == wordpiece.mask_token_id


def test_wordpiece_is_deterministic(wordpiece):
    assert train_wordpiece(CORPUS, vocab_size=300).get_vocab() == wordpiece.get_vocab()


@pytest.mark.parametrize("fn, size", [(train_bpe, 100), (train_wordpiece, 3), (train_bpe, "many")])
def test_invalid_vocab_size_names_the_field(fn, size):
    with pytest.raises(ValueError, match="vocab_size"):
        fn(CORPUS, vocab_size=size)
