"""What chapter 3 trains or loads, through the cache: the prompt sets, the base / arith / track models per seed, and
the chapter's synthesis pairs.

    pre = get_pretrained(cfg)                      # the starting model (bases.load)
    data = task_data(cfg, pre.tokenizer)           # every prompt set, encoded
    runs = get_models(cfg, pre, data)              # {seed: {"base": Trained, "arith": ..., "track": ...}}
"""
from __future__ import annotations

import copy
import json
import sys
import zlib
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import torch

from lib import bases, evals, models, textdata, train
from lib.artifacts import Artifact, load_or_compute
from lib.chapters.prakash.config import Config
from lib.hooks import forward, take
from lib.lenses import seed_at
from lib.tasks import entities as E

# The code that makes the models: part of their cache key (an edit to any of these retrains them).
CODE = (sys.modules[__name__], "lib.train", "lib.models", "lib.textdata", "lib.tasks.entities")


# ------------------------------------------------------------------------------------------------ data
@dataclass
class TaskData:
    vocab: E.Vocab
    boxes: dict[str, E.Boxes]  # test, val, pp (clean), pp_corrupt, mean, dcm_<kind>_<split> (+ _src)
    enc: dict[str, dict]  # the same sets encoded, plus "analysis" (the first analysis_size test prompts)
    targets: dict[str, torch.Tensor]  # DCM targets (token ids) per dcm_<kind>_<split>
    fingerprint: str  # of the only set that shapes training: val (the base's early stop); the cached models' key
    obj_ids: torch.Tensor  # (n_objects,) the token id of each object word (with its leading space)

    def fingerprints(self, *names: str) -> list[str]:
        """Content fingerprints of the named prompt sets (an analysis's cache key)."""
        return [f"{n}:{E.fingerprint(self.boxes[n])}" for n in names]


def set_rng(cfg: Config, name: str) -> np.random.Generator:
    """Each prompt set from its own stream: resizing one set (e.g. test_size) leaves the others, and so the cached
    models whose training saw only `val`, unchanged."""
    return np.random.default_rng([cfg.seed, zlib.crc32(name.encode())])


def task_data(cfg: Config, tokenizer) -> TaskData:
    """Every prompt set of the chapter, encoded for `tokenizer` (seeded by cfg.seed, one stream per set)."""
    words = E.OBJECTS if cfg.objects == "nouns" else E.vocab_words(tokenizer)
    vocab = E.make_vocab(tokenizer, words, n_boxes=cfg.n_boxes)
    nb, pp = cfg.n_boxes, set_rng(cfg, "pp")
    boxes = {"test": E.sample(vocab, cfg.test_size, nb, set_rng(cfg, "test")),
             "val": E.sample(vocab, cfg.val_size, nb, set_rng(cfg, "val")),
             "pp": E.sample(vocab, cfg.pp_size, nb, pp), "pp_corrupt": E.corrupt(vocab, cfg.pp_size, nb, pp),
             "mean": E.corrupt(vocab, cfg.mean_size, nb, set_rng(cfg, "mean"))}
    obj_ids, _ = E.token_ids(tokenizer, vocab)
    targets, rng = {}, set_rng(cfg, "dcm")
    for kind in E.DESIDERATA:
        for split in ("train", "test"):
            name = f"dcm_{kind}_{split}"
            boxes[name] = E.sample(vocab, cfg.dcm_size, nb, rng)
            boxes[name + "_src"], target = E.desideratum(vocab, boxes[name], kind, rng)
            targets[name] = obj_ids[torch.as_tensor(target)]
    enc = {k: E.encode(tokenizer, vocab, b) for k, b in boxes.items()}
    enc["analysis"] = take(enc["test"], slice(0, cfg.analysis_size))  # the circuit analyses' share of the test set
    return TaskData(vocab, boxes, enc, targets, E.fingerprint(boxes["val"]), obj_ids)


def curve_prompts(cfg: Config, tokenizer, vocab: E.Vocab, n_boxes: int) -> tuple[E.Boxes, dict]:
    """The accuracy-by-boxes prompts with `n_boxes` boxes (curve_size of them, their own stream)."""
    b = E.sample(vocab, cfg.curve_size, n_boxes, set_rng(cfg, f"curve{n_boxes}"))
    return b, E.encode(tokenizer, vocab, b)


def train_prompts(cfg: Config, vocab: E.Vocab, seed: int, min_boxes: int) -> list[tuple[str, str]]:
    """(prompt, answer) pairs with min_boxes..n_boxes boxes, drawn from their own seed (disjoint from the test draw)."""
    rng = np.random.default_rng(10_000 + seed)
    counts = rng.integers(min_boxes, cfg.n_boxes + 1, cfg.train_size)
    out = []
    for nb in np.unique(counts):
        b = E.sample(vocab, int((counts == nb).sum()), int(nb), rng)
        out += list(zip(E.prompts(vocab, b), E.answers(vocab, b)))
    return [out[i] for i in rng.permutation(len(out))]


def lm_rows(tokenizer, pairs: list[tuple[str, str]], texts: list[str], T: int) -> dict:
    """Training rows of length T: prompts with the loss on the answer token only, and text rows (loss everywhere).

    pairs: (prompt, answer) -> right-padded, labels -100 except the answer; texts: documents packed into blocks."""
    ids = torch.full((len(pairs), T), tokenizer.eos_token_id or 0)
    labels, mask = torch.full_like(ids, -100), torch.zeros_like(ids)
    for i, (p, a) in enumerate(pairs):
        row = tokenizer(p + a)["input_ids"][:T]
        ids[i, :len(row)], mask[i, :len(row)], labels[i, len(row) - 1] = torch.tensor(row), 1, row[-1]
    if texts:
        blocks = textdata.pack_blocks(tokenizer, texts, T)
        ids, labels = torch.cat([ids, blocks]), torch.cat([labels, blocks])
        mask = torch.cat([mask, torch.ones_like(blocks)])
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def pretrain_texts(cfg: Config, n_rows: int, T: int, seed: int) -> list[str]:
    """English + Python documents from the base model's own corpora (about n_rows blocks of T tokens)."""
    if n_rows <= 0 or cfg.profile not in ("smoke", "tiny"):
        return []
    corp = bases.source_corpora(bases.Spec.load(cfg.profile))
    docs = {n: c.split()[0] for n, c in corp.items()}
    return textdata.mixture(docs, {"english": 0.5, "python": 0.5}, n_rows * T * 5, seed)


def predictions(model, enc: dict, batch: int = 250) -> torch.Tensor:
    """(N,) the top next-token prediction at the last position of each prompt."""
    rows = {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}
    with evals.eval_mode(model):
        return evals.batched(lambda b: forward(model, {**b, "logits_to_keep": 1})[:, -1].argmax(-1), rows, batch)


def accuracy(model, enc: dict, batch: int = 250) -> float:
    """Fraction of prompts whose top next-token prediction at the last position is the answer."""
    return float(predictions(model, enc, batch).eq(enc["answer_ids"]).float().mean())


# ------------------------------------------------------------------------------------------------ models
def get_pretrained(cfg: Config) -> bases.Base:
    """The starting model: the study GPT (smoke, tiny), a packaged model (local), llama-7b or a folder (paper)."""
    if cfg.profile in ("smoke", "tiny") and not cfg.base_source:
        return bases.load("study:gpt", cfg.profile, device=cfg.device)
    if cfg.profile == "local" and not cfg.base_source:
        return bases.load(f"local:{cfg.local_model}", device=cfg.device)
    return bases.load(cfg.base_source, device=cfg.device, allow_network=cfg.allow_network)


def _tcfg(cfg: Config, steps: int, lr: float, seed: int, desc: str) -> train.TrainConfig:
    return train.TrainConfig("causal_lm", n_steps=steps, batch_size=cfg.batch_size, lr=lr, weight_decay=0.01,
                             warmup_steps=min(20, steps // 10), schedule="constant", eval_every=cfg.eval_every,
                             seed=seed, bf16=cfg.use_bf16(), lora_rank=cfg.lora_rank,
                             progress=False, desc=f"{desc} seed {seed}")


class TargetReached(Exception):
    """Raised by the evaluation callback: the base reached base_target (lib.train has no early stop)."""


def _train_base(cfg: Config, pre: bases.Base, data: TaskData, seed: int, out: Path) -> dict:
    """Entity pre-training of the base, stopped at the first check with val accuracy >= base_target."""
    model = copy.deepcopy(pre.model)
    history = [{"step": 0, "val_acc": accuracy(model, data.enc["val"])}]
    if cfg.base_steps and history[0]["val_acc"] < cfg.base_target:
        T = data.enc["test"]["input_ids"].shape[1] + 1
        pairs = train_prompts(cfg, data.vocab, seed, cfg.base_min_boxes)
        n_text = int(len(pairs) * cfg.text_share / (1 - cfg.text_share))
        rows = lm_rows(pre.tokenizer, pairs, pretrain_texts(cfg, n_text, T, seed), T)

        def check(m):
            history.append({"step": min(len(history) * cfg.eval_every, cfg.base_steps),
                            "val_acc": accuracy(m, data.enc["val"])})
            if history[-1]["val_acc"] >= cfg.base_target:
                raise TargetReached
            return {}
        try:
            train.train(model, rows, _tcfg(cfg, cfg.base_steps, cfg.base_lr, seed, "base"), eval_fn=check)
        except TargetReached:
            pass
        train.merge_lora(model) if cfg.lora_rank else None
    return _finish(model.eval(), pre, data, out, history)


def _train_tuned(cfg: Config, pre: bases.Base, base, data: TaskData, kind: str, seed: int, out: Path) -> dict:
    """arith: base fine-tuned on arithmetic text; track: on more entity-tracking prompts (+ pretraining text)."""
    model = copy.deepcopy(base)
    T = data.enc["test"]["input_ids"].shape[1] + 1
    if kind == "arith":
        texts = E.arithmetic_texts(cfg.arith_steps * cfg.batch_size * 6, np.random.default_rng(20_000 + seed))
        rows = {"input_ids": textdata.pack_blocks(pre.tokenizer, ["\n".join(texts)], T)}
        tcfg = _tcfg(cfg, cfg.arith_steps, cfg.arith_lr, seed, "arith")
    else:
        pairs = train_prompts(cfg, data.vocab, seed + 500, cfg.n_boxes)
        n_text = int(len(pairs) * cfg.text_share / (1 - cfg.text_share))
        rows = lm_rows(pre.tokenizer, pairs, pretrain_texts(cfg, n_text, T, seed + 500), T)
        tcfg = _tcfg(cfg, cfg.track_steps, cfg.track_lr, seed, "track")
    train.train(model, rows, tcfg)
    train.merge_lora(model) if cfg.lora_rank else None
    return _finish(model.eval(), pre, data, out)


def _finish(model, pre: bases.Base, data: TaskData, out: Path, history=None) -> dict:
    models.save_model(model, pre.tokenizer, out / "model")
    (out / "evals.json").write_text(json.dumps(history or []))
    return {"val_acc": accuracy(model, data.enc["val"]),
            "steps": (history or [{"step": None}])[-1]["step"], "n_params": models.n_params(model)}


@dataclass
class Trained:
    name: str  # base | arith | track
    seed: int
    model: torch.nn.Module
    artifact: Artifact | None
    source_key: str | None = None  # a model not trained here (paper profile): the key of where it came from

    @property
    def metrics(self) -> dict:
        return self.artifact.metrics if self.artifact else {}

    @property
    def key(self) -> str | None:
        """What identifies this model in the analyses' cache keys (None: a model made in memory, never cached)."""
        return self.artifact.key if self.artifact else self.source_key

    def history(self) -> list[dict]:
        """The base's validation checks [{step, val_acc}] (empty for a model not trained here)."""
        return json.loads((self.artifact.path / "evals.json").read_text()) if self.artifact else []


def _not_cached(out: Path) -> dict:
    raise RuntimeError("this model is not in the cache: run notebook 03_prakash with the same profile first")


def _train_keys(cfg: Config) -> dict:
    """The settings that shape the trained models (evaluation sizes and analysis settings left out)."""
    skip = {"seed", "recompute", "n_seeds", "tuned", "test_size", "curve_size", "analysis_size", "pp_size",
            "heads_base", "heads_tuned", "mean_size", "random_draws", "sweep_repeats", "device", "allow_network"}
    return {k: v for k, v in cfg.key_dict().items() if k not in skip and not k.startswith("dcm_")}


def get_model(cfg: Config, pre: bases.Base, data: TaskData, name: str, seed: int, base: Trained | None = None,
              cached_only: bool = False) -> Trained:
    """base, arith or track for `seed`, through the artifact cache (key: training settings + the starting model)."""
    if name == "arith" and cfg.tuned_source:  # a released fine-tuned model (paper profile)
        b = bases.load(cfg.tuned_source, device=cfg.device, allow_network=cfg.allow_network)
        return Trained(name, seed, b.model, None, b.key)
    if name == "base" and cfg.profile == "paper":
        return Trained(name, seed, pre.model, None, pre.key)
    compute = (_not_cached if cached_only else partial(_train_base, cfg, pre, data, seed) if name == "base"
               else partial(_train_tuned, cfg, pre, base.model if base else None, data, name, seed))
    fps = [pre.key, data.fingerprint] + ([base.artifact.key] if base is not None and base.artifact else [])
    art = load_or_compute(f"prakash_{name}", {"name": name, "seed": seed, "train": _train_keys(cfg)}, compute,
                          fingerprints=fps, recompute=cfg.recompute and not cached_only, code=CODE)
    model, _ = models.load_model(art.path / "model")
    return Trained(name, seed, model.to(models.resolve_device(cfg.device)).eval(), art)


def get_models(cfg: Config, pre: bases.Base, data: TaskData, cached_only: bool = False) -> dict:
    """{seed: {"base": Trained, "arith": ..., "track": ...}} (tuned models as listed in cfg.tuned)."""
    out = {}
    for s in cfg.seeds:
        base = get_model(cfg, pre, data, "base", s, cached_only=cached_only)
        out[s] = {"base": base, **{k: get_model(cfg, pre, data, k, s, base, cached_only) for k in cfg.tuned}}
    return out


# ------------------------------------------------------------------------------------------------ synthesis
def task_metric(model, inputs: dict) -> float:
    """Entity-tracking accuracy from {"input_ids", "attention_mask", "answer_ids"}."""
    return accuracy(model, inputs)


def synthesis_pairs(profile: str = "tiny", params: dict | None = None, seed_index: int = 0) -> list[dict]:
    """base -> tuned pairs of this chapter for its `seed_index`-th seed, loaded from the cache only."""
    cfg = Config.load(profile, params)
    s = seed_at(cfg.seeds, seed_index)
    pre = get_pretrained(cfg)
    data = task_data(cfg, pre.tokenizer)
    base = get_model(cfg, pre, data, "base", s, cached_only=True)
    test = data.enc["test"]
    inputs = {k: test[k][:256] for k in ("input_ids", "attention_mask", "answer_ids")}
    return [{"name": f"prakash_{k}", "base": base.model, "tokenizer": pre.tokenizer, "inputs": inputs,
             "metric": task_metric, "tuned": get_model(cfg, pre, data, k, s, base, cached_only=True).model}
            for k in cfg.tuned]
