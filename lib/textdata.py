"""From documents to training tensors: token blocks for language modelling, sampled from corpora.

Language models here train on fixed-length blocks: documents are tokenized, joined with an end-of-text
token between them and cut into rows of `n_ctx` tokens (the GPT-2 recipe). Masked LMs take one document
window per row instead ([CLS] ... [SEP], padded), so no row mixes two documents.
"""
from __future__ import annotations

import random

import numpy as np
import torch


def sample_docs(docs: list[str], n_chars: int, seed: int) -> list[str]:
    """Whole documents in a seeded random order until `n_chars` characters (long ones cut at 20k chars)."""
    order = list(range(len(docs)))
    random.Random(seed).shuffle(order)
    out, total = [], 0
    for i in order:
        if total >= n_chars:
            break
        d = docs[i][:20_000]
        out.append(d)
        total += len(d)
    return out


def pack_blocks(tokenizer, docs: list[str], n_ctx: int, max_blocks: int | None = None) -> torch.Tensor:
    """(n_blocks, n_ctx) LongTensor of documents joined by the end-of-text token (causal LMs)."""
    eos = tokenizer.eos_token_id
    ids: list[int] = []
    need = None if max_blocks is None else max_blocks * n_ctx
    for start in range(0, len(docs), 256):
        for row in tokenizer(docs[start:start + 256], add_special_tokens=False)["input_ids"]:
            ids.extend(row)
            ids.append(eos)
        if need is not None and len(ids) >= need:
            break
    n = len(ids) // n_ctx if need is None else min(len(ids) // n_ctx, max_blocks)
    if n == 0:
        raise ValueError(f"{len(ids)} tokens cannot fill one block of {n_ctx}: give more text")
    return torch.tensor(np.asarray(ids[: n * n_ctx], dtype=np.int64)).view(n, n_ctx)


def mlm_windows(tokenizer, docs: list[str], n_ctx: int, max_rows: int | None = None) -> dict[str, torch.Tensor]:
    """Rows of `[CLS] doc [SEP] doc [SEP] ...` for masked-LM training, packed up to `n_ctx` tokens.

    Short documents (dictionary glosses) are packed several to a row, as RoBERTa's full-sentence inputs, so
    little of each row is padding; a document longer than a row is cut into windows. A row is padded only
    when the next document does not fit. Returns {"input_ids": (N, n_ctx), "attention_mask": (N, n_ctx)}.
    """
    body = n_ctx - 2
    rows, row = [], []

    def flush():
        if len(row) >= 8:
            rows.append([tokenizer.cls_token_id, *row[:n_ctx - 1]])
        row.clear()

    for start in range(0, len(docs), 256):
        for ids in tokenizer(docs[start:start + 256], add_special_tokens=False)["input_ids"]:
            for i in range(0, max(1, len(ids) - body // 4), body):
                piece = [*ids[i:i + body], tokenizer.sep_token_id]
                if len(row) + len(piece) > n_ctx - 1:
                    flush()
                row.extend(piece)
        if max_rows is not None and len(rows) >= max_rows:
            break
    flush()
    rows = rows[:max_rows]
    if not rows:
        raise ValueError("no document is long enough for a masked-LM window: give more text")
    input_ids = torch.full((len(rows), n_ctx), tokenizer.pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(rows), n_ctx), dtype=torch.long)
    for r, ids in enumerate(rows):
        input_ids[r, : len(ids)] = torch.tensor(ids)
        mask[r, : len(ids)] = 1
    return {"input_ids": input_ids, "attention_mask": mask}


def mixture(corpus_docs: dict[str, list[str]], shares: dict[str, float], n_chars: int, seed: int) -> list[str]:
    """Documents from several corpora in the given character shares, shuffled together (seeded)."""
    docs = []
    for k, (name, d) in enumerate(sorted(corpus_docs.items())):
        docs += sample_docs(d, int(n_chars * shares[name]), seed + k)
    random.Random(seed).shuffle(docs)
    return docs
