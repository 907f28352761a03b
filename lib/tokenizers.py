"""Small tokenizers trained on the study's own corpora.

Why train tokenizers at all: at the widths this study can afford on a CPU (d_model 128-384) the embedding and
unembedding matrices dominate the cost, so GPT-2's 50k vocabulary makes a 1M-parameter model about 3x slower
than a 4-8k vocabulary trained on the corpus itself (research/offline-resources.md).

Two algorithms, each matching the model family that uses it:

- **Byte-level BPE** (Sennrich et al. 2016; Radford et al. 2019, GPT-2) for the causal LMs. Text is first mapped
  to bytes, so every string is representable and ``decode(encode(text)) == text`` exactly (no unknown token, no
  normalisation). Merges of frequent adjacent pairs are learned until the vocabulary is full. One special token,
  ``<|endoftext|>``, doubles as bos / eos / unk / pad, as in GPT-2.
- **WordPiece** (Schuster & Nakajima 2012; Devlin et al. 2019, BERT) for the masked LM. Text is normalised
  (lowercased, accents stripped, control characters removed), split on whitespace and punctuation, and words are
  cut into a longest-match sequence of pieces (``##`` marks a continuation). The post-processor wraps every
  sequence as ``[CLS] ... [SEP]``. Decoding gives the normalised text back, up to spacing around punctuation.

Both return Hugging Face tokenizer objects, so ``save_pretrained(dir)`` and ``AutoTokenizer.from_pretrained(dir)``
work as for any hub tokenizer. Training is deterministic: the same texts in the same order give the same
vocabulary, ids included (for WordPiece this takes a detour around the library's trainer, see train_wordpiece).

Reference: the Hugging Face ``tokenizers`` library, https://huggingface.co/docs/tokenizers
"""
from __future__ import annotations

import functools
import re
import sys
import unicodedata
from collections import Counter
from collections.abc import Iterable

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import BertTokenizerFast, PreTrainedTokenizerFast

EOT = "<|endoftext|>"
WORDPIECE_SPECIALS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
N_BYTES = 256  # byte-level BPE starts from all 256 byte symbols
_PRIVATE_USE = 0xF0000  # Unicode planes 15-16: 131,072 code points that real text does not use


def train_bpe(texts: Iterable[str], vocab_size: int, min_frequency: int = 2) -> PreTrainedTokenizerFast:
    """Train a GPT-2-style byte-level BPE tokenizer.

    Args:
        texts: the training documents (any iterable of str; consumed once).
        vocab_size: the largest vocabulary wanted, special token included; at least 257 (256 bytes + ``<|endoftext|>``).
            The result can be smaller when the corpus has too few pairs occurring ``min_frequency`` times.
        min_frequency: a pair must occur this often to be merged.

    Returns:
        A ``PreTrainedTokenizerFast`` whose ``<|endoftext|>`` (id 0) is bos, eos, unk and pad token. It adds no
        special tokens when encoding (as GPT-2), so callers insert ``eos_token_id`` between documents themselves.
    """
    _check_sizes(vocab_size, N_BYTES + 1, min_frequency)
    tok = Tokenizer(models.BPE())
    # add_prefix_space=False keeps the round trip exact: no space is invented before the first word.
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    # trim_offsets=False: offsets then index the raw text, spaces included (what span-level analyses need).
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=[EOT],
        # All 256 bytes are in the vocabulary whatever the corpus, so unseen characters never become unknown.
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=EOT,
        eos_token=EOT,
        unk_token=EOT,
        pad_token=EOT,
        add_prefix_space=False,
        # The default clean-up would rewrite " ." as "." and break the exact round trip on code.
        clean_up_tokenization_spaces=False,
        model_max_length=1_000_000,  # models have their own n_ctx; this only silences length warnings
    )


def train_wordpiece(texts: Iterable[str], vocab_size: int, lowercase: bool = True) -> BertTokenizerFast:
    """Train a BERT-style WordPiece tokenizer.

    Args:
        texts: the training documents (any iterable of str; consumed once).
        vocab_size: the largest vocabulary wanted, the five special tokens included (at least 6).
        lowercase: lowercase and strip accents before splitting (as bert-base-uncased).

    Returns:
        A ``BertTokenizerFast`` with ids 0-4 = ``[PAD] [UNK] [CLS] [SEP] [MASK]``, the BERT normaliser and
        pre-tokeniser, and a post-processor that encodes a text as ``[CLS] text [SEP]`` (pairs as
        ``[CLS] a [SEP] b [SEP]`` with token type ids 0 / 1).
    """
    _check_sizes(vocab_size, len(WORDPIECE_SPECIALS) + 1, 1)
    normaliser = normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=True, lowercase=lowercase)
    # The tokenizers library's WordPieceTrainer is not deterministic: it numbers "##x" symbols in hash-map order
    # and breaks ties between equally frequent merges by those numbers. So learn the same BPE-with-continuation
    # merges with the (deterministic) BpeTrainer instead, writing each word's continuation characters as
    # private-use code points numbered in order of first appearance; "##" is put back afterwards.
    # Counting words first makes the Python side cheap: only distinct words are rewritten.
    counts = Counter()
    for text in texts:
        counts.update(_bert_words().findall(normaliser.normalize_str(text)))
    continuation = _Codes()
    marked = ((w[0] + w[1:].translate(continuation) + " ") * n for w, n in counts.items())
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=0, special_tokens=list(WORDPIECE_SPECIALS),
                                  show_progress=False)
    bpe.train_from_iterator(marked, trainer=trainer)
    start = {v: chr(k) for k, v in continuation.items()}
    vocab = {}
    for token, index in bpe.get_vocab().items():
        if token in WORDPIECE_SPECIALS:
            vocab[token] = index
        elif token[0] in start:
            vocab["##" + "".join(start[c] for c in token)] = index
        else:
            vocab[token[0] + "".join(start[c] for c in token[1:])] = index
    # BertTokenizerFast rebuilds the same pipeline (normaliser, pre-tokeniser, ## decoder, [CLS]/[SEP] template)
    # from the learned vocabulary, so the saved tokenizer reloads as a standard BERT tokenizer.
    return BertTokenizerFast(
        vocab=vocab,
        do_lower_case=lowercase,
        clean_up_tokenization_spaces=True,  # decode "word ," as "word,"
        model_max_length=1_000_000,
    )


@functools.cache
def _bert_words() -> re.Pattern:
    """BertPreTokenizer as a regex: split on whitespace, every punctuation character is a word of its own.

    BERT's punctuation: ASCII symbols and every Unicode category P* character (equal to the tokenizers library's
    splits on the Python standard library and its docs, and 10x faster than calling it from Python).
    """
    ascii_symbols = {chr(c) for c in range(33, 127) if not chr(c).isalnum()}
    punct = "".join(re.escape(chr(c)) for c in range(sys.maxunicode + 1)
                    if chr(c) in ascii_symbols or unicodedata.category(chr(c)).startswith("P"))
    return re.compile(f"[{punct}]|[^\\s{punct}]+")


class _Codes(dict):
    """A ``str.translate`` table giving each new character the next private-use code point."""

    def __missing__(self, ordinal: int) -> str:
        self[ordinal] = code = chr(_PRIVATE_USE + len(self))
        return code


def _check_sizes(vocab_size: int, smallest: int, min_frequency: int) -> None:
    if not isinstance(vocab_size, int) or vocab_size < smallest:
        raise ValueError(f"vocab_size must be an int >= {smallest}, got {vocab_size!r}")
    if not isinstance(min_frequency, int) or min_frequency < 1:
        raise ValueError(f"min_frequency must be an int >= 1, got {min_frequency!r}")
