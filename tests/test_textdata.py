"""Token blocks for LM training: packing keeps every token once and in order."""
import torch
from transformers import PreTrainedTokenizerFast
from tokenizers import Tokenizer, models, pre_tokenizers

from lib import textdata


def word_tokenizer(words):
    vocab = {w: i for i, w in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "<eos>", *words])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]", cls_token="[CLS]",
                                   sep_token="[SEP]", mask_token="[MASK]", eos_token="<eos>")


def test_pack_blocks_keeps_order_and_separators():
    tok = word_tokenizer(list("abcdefgh"))
    blocks = textdata.pack_blocks(tok, ["a b c", "d e", "f g h"], n_ctx=4)
    flat = blocks.flatten().tolist()
    assert blocks.shape == (2, 4)  # 3 + 1 + 2 + 1 + 3 + 1 = 11 tokens -> two full blocks
    assert tok.convert_ids_to_tokens(flat) == ["a", "b", "c", "<eos>", "d", "e", "<eos>", "f"]


def test_mlm_windows_pack_short_docs_and_mask_padding():
    tok = word_tokenizer(list("abcdefgh"))
    docs = ["a b c d e f g h", "a b c d e f g h", "h g f e d c b a"]  # rows shorter than 8 tokens are dropped
    out = textdata.mlm_windows(tok, docs, n_ctx=20)
    ids, mask = out["input_ids"], out["attention_mask"]
    assert ids[0, 0] == tok.cls_token_id and (ids[:, 0] == tok.cls_token_id).all()
    assert int((ids == tok.sep_token_id).sum()) == 3  # one [SEP] after every document
    assert torch.equal(mask.bool(), ids != tok.pad_token_id)


def test_sample_and_mixture_are_seeded():
    docs = [f"doc {i} " * 10 for i in range(100)]
    assert textdata.sample_docs(docs, 500, 0) == textdata.sample_docs(docs, 500, 0)
    assert textdata.sample_docs(docs, 500, 0) != textdata.sample_docs(docs, 500, 1)
    mix = textdata.mixture({"x": docs, "y": [d.upper() for d in docs]}, {"x": 0.5, "y": 0.5}, 2000, 0)
    upper = sum(d.isupper() for d in mix)
    assert 0 < upper < len(mix)
