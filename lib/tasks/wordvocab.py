"""A word-level tokenizer for chapter 3's own base: one token per word of the boxes task and of its arithmetic
fine-tunes (Prakash et al. 2024's prompts are built so that every object, label and function word is one Llama token;
a word-level vocabulary gives the same layout at this scale: a segment "the apple is in Box A," is 7 tokens and the
query label sits at last - 2).

    tok = word_tokenizer(entities.OBJECTS, entities.LABELS)
    tok("The apple is in Box A. Box A contains the")["input_ids"]   # one id per word / punctuation mark

The tokenizer is a Hugging Face ``PreTrainedTokenizerFast`` (it saves and loads with the model folder); words are split
on white space and punctuation, so ``"The apple"`` and ``"The  apple"`` give the same ids.
"""
from __future__ import annotations

FUNCTION_WORDS = ("The", "the", "is", "in", "Box", "contains", ",", ".", "?", "goes", "to", "plus", "minus", "times",
                  "What", "=", "+", "-", "*")
SPECIAL = ("<pad>", "<unk>", "<eos>")
MAX_NUMBER = 99  # numbers 0..MAX_NUMBER are single tokens (the arithmetic fine-tunes' operands and results)


def words(objects, labels, max_number: int = MAX_NUMBER) -> list[str]:
    """The vocabulary in id order: special tokens, function words, labels, objects, numbers (duplicates dropped)."""
    out = []
    for w in (*SPECIAL, *FUNCTION_WORDS, *labels, *objects, *(str(i) for i in range(max_number + 1))):
        if w not in out:
            out.append(w)
    return out


def word_tokenizer(objects, labels, max_number: int = MAX_NUMBER, bos: bool = False):
    """A ``PreTrainedTokenizerFast`` with one id per word in :func:`words` (unknown words -> ``<unk>``).

    ``bos=True`` starts every encoded text with ``<eos>`` (as Llama's ``<s>``: the first position then holds no word,
    so attention has a place to rest that is not a word of the prompt)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(words(objects, labels, max_number))}
    core = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()  # \w+ | [^\w\s]+: words and punctuation marks apart
    core.decoder = decoders.WordPiece(prefix="##")  # joins words with spaces (and no space before punctuation)
    if bos:
        core.post_processor = processors.TemplateProcessing(single="<eos> $A", pair="<eos> $A $B",
                                                            special_tokens=[("<eos>", vocab["<eos>"])])
    return PreTrainedTokenizerFast(tokenizer_object=core, pad_token="<pad>", unk_token="<unk>", eos_token="<eos>",
                                   bos_token="<eos>" if bos else None)
