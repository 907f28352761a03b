"""Chapter 3's own base (smoke, tiny): a small Llama over a word-level vocabulary, trained from random initialisation
on the boxes task alone, and the helpers that read it (accuracy at the last position).

This module is the whole of what makes a base, so it (with lib.train, lib.models and the task modules) is the cached
bases' code key: edits to the fine-tunes or the page code (lib.chapters.prakash.build) leave the bases cached.

    pre = binder(cfg)                                          # untrained; its tokenizer and key
    model, history = train_base(cfg, pre, vocab, val_enc, seed)
"""
from __future__ import annotations

import hashlib
import json

import numpy as np
import torch

from lib import bases, evals, models, train
from lib.chapters.prakash.config import Config
from lib.hooks import forward
from lib.progress import Ticker
from lib.tasks import entities as E, wordvocab as W

CODE = (__name__, "lib.train", "lib.models", "lib.tasks.entities", "lib.tasks.wordvocab")

# The base's training recipe (smoke, tiny), fixed before its results were read (pilots of 2026-12-02/03: with all
# box counts from the start, or 2e-3, or batch 32, or several queries per context from the start, or a GPT-2 with
# learned positions, the model stayed on the query-blind plateau).
N_CTX = 128  # positions of the chapter's own base (12 boxes are 90 tokens)
EASY_BOXES = (2, 3)  # box counts of the curriculum's first base_easy_steps
MIX = (0.25, 0.25, 0.2, 0.15, 0.1, 0.05)  # shares of 2, 3, 4, ... boxes afterwards (the last share repeats above 7)
WARMUP = 100  # linear warm-up steps of the base, then cosine decay to 0
BETAS = (0.9, 0.98)  # AdamW betas of the base (no weight decay, gradients clipped at norm 1)


def box_shares(n_boxes: int, easy: bool) -> np.ndarray:
    """Shares of 2..n_boxes boxes in a training batch: EASY_BOXES only in the curriculum's first part, then MIX."""
    counts = np.arange(2, n_boxes + 1)
    w = (np.isin(counts, EASY_BOXES).astype(float) if easy
         else np.array([MIX[min(k - 2, len(MIX) - 1)] for k in counts]))
    return w / w.sum()


def tracking_pairs(vocab: E.Vocab, n: int, shares: np.ndarray, rng: np.random.Generator) -> list[tuple[str, str]]:
    """n (prompt, answer) pairs with 2.. boxes drawn by `shares`, one query per prompt, in random order."""
    counts = rng.choice(np.arange(2, len(shares) + 2), n, p=shares)
    out = []
    for nb in np.unique(counts):
        b = E.sample(vocab, int((counts == nb).sum()), int(nb), rng)
        out += list(zip(E.prompts(vocab, b), E.answers(vocab, b)))
    return [out[i] for i in rng.permutation(len(out))]


def lm_rows(tokenizer, pairs: list[tuple[str, str]], T: int | None = None) -> dict:
    """Rows prompt + answer, right-padded to T (default: the longest), the loss on the answer's tokens only."""
    prompt_len = [len(tokenizer(p)["input_ids"]) for p, _ in pairs]
    rows = [tokenizer(p + a)["input_ids"] for p, a in pairs]
    T = T or max(map(len, rows))
    ids = torch.full((len(pairs), T), tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0)
    labels, mask = torch.full_like(ids, -100), torch.zeros_like(ids)
    for i, (row, k) in enumerate(zip(rows, prompt_len)):
        row = row[:T]
        ids[i, :len(row)], mask[i, :len(row)] = torch.tensor(row), 1
        labels[i, k:len(row)] = ids[i, k:len(row)]
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def length_groups(tokenizer, pairs: list[tuple[str, str]]) -> list[tuple[dict, float]]:
    """The rows of `pairs` split by token length, each group padded to its own length, with its share of the
    batch's answer tokens: the shares' weighted sum of the groups' mean losses is the whole batch's mean loss, so
    the gradient is the one padded batch's, at the cost of the rows' own lengths (a 2-7 box batch: about 0.6x)."""
    lengths = np.array([len(tokenizer(p + a)["input_ids"]) for p, a in pairs])
    groups = [lm_rows(tokenizer, [pairs[i] for i in np.flatnonzero(lengths == n)]) for n in np.unique(lengths)]
    counts = [int(g["labels"][:, 1:].ne(-100).sum()) for g in groups]
    return [(g, c / sum(counts)) for g, c in zip(groups, counts)]


def predictions(model, enc: dict, batch: int = 250) -> torch.Tensor:
    """(N,) the top next-token prediction at the last position of each prompt."""
    rows = {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}
    with evals.eval_mode(model):
        return evals.batched(lambda b: forward(model, {**b, "logits_to_keep": 1})[:, -1].argmax(-1), rows, batch)


def accuracy(model, enc: dict, batch: int = 250) -> float:
    """Fraction of prompts whose top next-token prediction at the last position is the answer."""
    return float(predictions(model, enc, batch).eq(enc["answer_ids"]).float().mean())


def binder(cfg: Config) -> bases.Base:
    """The chapter's own starting point (smoke, tiny): an untrained small Llama over the word-level vocabulary."""
    tok = W.word_tokenizer(E.OBJECTS, E.LABELS, bos=True)
    arch = models.ModelConfig("llama", d_model=cfg.base_d_model, n_layers=cfg.base_layers, n_heads=cfg.base_heads,
                              d_mlp=4 * cfg.base_d_model, n_ctx=N_CTX, d_vocab=len(tok))
    spec = json.dumps({"arch": arch.to_dict(), "words": W.words(E.OBJECTS, E.LABELS)}, sort_keys=True)
    key = "prakash_binder:" + hashlib.sha256(spec.encode()).hexdigest()[:16]
    source = (f"the chapter's own {arch.n_layers}-layer Llama (d_model {arch.d_model}, {arch.n_heads} heads per "
              f"layer, a {len(tok)}-word vocabulary), trained from random initialisation on the boxes task only")
    return bases.Base(models.build_model(arch, tok).eval(), tok, key, source)


def train_base(cfg: Config, pre: bases.Base, vocab: E.Vocab, val: dict, seed: int) -> tuple[torch.nn.Module, list]:
    """The binder trained on the boxes task: the curriculum, fresh prompts every step, cosine to the last step.
    Returns (the model in eval mode, its checks [{step, val_acc, train_loss}] on the encoded prompts `val`)."""
    device = models.resolve_device(cfg.device)
    model = models.build_model(models.model_config_of(pre.model), pre.tokenizer, seed=seed).to(device)
    history = [{"step": 0, "val_acc": accuracy(model, val)}]
    steps = cfg.base_steps
    if steps:
        tcfg = train.TrainConfig("causal_lm", n_steps=steps, batch_size=cfg.base_batch, lr=cfg.base_lr,
                                 warmup_steps=min(WARMUP, steps // 10), schedule="cosine", seed=seed,
                                 bf16=cfg.use_bf16())
        rng = np.random.default_rng([10_000, seed])
        opt = torch.optim.AdamW(model.parameters(), lr=cfg.base_lr, betas=BETAS, weight_decay=0.0)
        tick, losses = Ticker(f"training base seed {seed}", steps), []
        model.train()
        for step in range(steps):
            pairs = tracking_pairs(vocab, cfg.base_batch, box_shares(cfg.n_boxes, step < cfg.base_easy_steps),
                                   rng)
            for group in opt.param_groups:
                group["lr"] = train.lr_at(step, tcfg)
            loss_sum, tokens = 0.0, 0
            for rows, share in length_groups(pre.tokenizer, pairs):
                batch = {k: v.to(device) for k, v in rows.items()}
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=tcfg.bf16):
                    loss = train.causal_lm_loss(model, batch) * share
                loss.backward()
                loss_sum, tokens = loss_sum + loss.item(), tokens + int(batch["attention_mask"].sum())
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            opt.zero_grad(set_to_none=True)
            losses.append(loss_sum)
            tick.update(tokens=tokens)
            if (step + 1) % cfg.eval_every == 0 or step + 1 == steps:
                history.append({"step": step + 1, "val_acc": accuracy(model, val),
                                "train_loss": float(np.mean(losses[-cfg.eval_every:]))})
                model.train()
        tick.close()
    return model.eval(), history
