"""What chapter 3 trains or loads, through the cache: the prompt sets, the base and tuned models per seed, and the
chapter's synthesis pairs.

    pre = get_pretrained(cfg)                      # the starting point: an untrained binder (smoke, tiny) or a model
    data = task_data(cfg, pre.tokenizer)           # every prompt set, encoded
    runs = get_models(cfg, pre, data)              # {seed: {"base": Trained, "arith_bound": ..., "arith_pure": ...,
                                                   #         "track": ...}}

In smoke and tiny the base is the chapter's own: a small Llama (RoPE, RMSNorm, SwiGLU) with a word-level vocabulary
(lib.tasks.wordvocab: every word of the prompts one token, as in Llama's tokenizer for the paper's prompts), trained
from random initialisation on the boxes task alone with a curriculum (2-3 boxes first, then 2..n_boxes with fewer
boxes more often) to the end of a cosine schedule, with fresh prompts every step (lib.chapters.prakash.binder). The
tuned models are fine-tunes of it, of every weight (lora_rank 0, as FLoat) or LoRA adapters on q and v (as Goat): on
bound arithmetic, on pure arithmetic (lib.tasks.arithmetic), on more tracking.
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

from lib import bases, evals, models, train
from lib.artifacts import Artifact, load_or_compute
from lib.chapters.prakash.config import Config
from lib.hooks import forward, take
from lib.lenses import seed_at
from lib.chapters.prakash import binder
from lib.chapters.prakash.binder import accuracy, box_shares, lm_rows, predictions, tracking_pairs  # noqa: F401
from lib.tasks import arithmetic as A, entities as E

# The code that makes the models: part of their cache key (an edit to any of these retrains them). The bases are
# made by lib.chapters.prakash.binder alone; the fine-tunes by this module too.
BASE_CODE = binder.CODE
CODE = (sys.modules[__name__], *BASE_CODE, "lib.tasks.arithmetic")

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


def answer_accuracy(model, tokenizer, pairs: list[tuple[str, str]], batch: int = 250) -> float:
    """Share of (prompt, answer) pairs whose answer's first token is the top prediction after the prompt (greedy)."""
    rows = lm_rows(tokenizer, pairs)
    first = rows["labels"].ne(-100).int().argmax(1)  # the first answer position
    want = rows["input_ids"][torch.arange(len(pairs)), first]
    with evals.eval_mode(model):
        logits = evals.batched(lambda b: forward(model, {"input_ids": b["input_ids"],
                                                        "attention_mask": b["attention_mask"]}),
                               {"input_ids": rows["input_ids"], "attention_mask": rows["attention_mask"]}, batch)
    return float(logits[torch.arange(len(pairs)), first - 1].argmax(-1).eq(want).float().mean())


# ------------------------------------------------------------------------------------------------ models
def _train_base(cfg: Config, pre: bases.Base, data: TaskData, seed: int, out: Path) -> dict:
    model, history = binder.train_base(cfg, pre, data.vocab, data.enc["val"], seed)
    return _finish(model, pre, data, out, history)


def get_pretrained(cfg: Config) -> bases.Base:
    """The starting model: the chapter's untrained binder (smoke, tiny), a packaged model (local), llama-7b or a
    folder (paper)."""
    if cfg.profile in ("smoke", "tiny") and not cfg.base_source:
        return binder.binder(cfg)
    if cfg.profile == "local" and not cfg.base_source:
        return bases.load(f"local:{cfg.local_model}", device=cfg.device)
    return bases.load(cfg.base_source, device=cfg.device, allow_network=cfg.allow_network)


def trains_base(cfg: Config) -> bool:
    """Whether this profile trains the base (smoke, tiny) or uses the starting model as it is (local, paper)."""
    return cfg.profile in ("smoke", "tiny") and not cfg.base_source


def tuning_pairs(cfg: Config, vocab: E.Vocab, kind: str, n: int, rng: np.random.Generator) -> list[tuple[str, str]]:
    """The (prompt, answer) pairs of fine-tune `kind` (also its held-out check, from another stream)."""
    if kind == "arith_bound":
        return A.bound_arithmetic(vocab, n, rng)
    if kind == "arith_pure":
        return A.pure_arithmetic(n, rng)
    return tracking_pairs(vocab, n, box_shares(cfg.n_boxes, easy=False), rng)


def _train_tuned(cfg: Config, pre: bases.Base, base, data: TaskData, kind: str, seed: int, out: Path) -> dict:
    """base fine-tuned on `kind`'s pairs (LoRA on q, v, or every weight when lora_rank is 0), the loss on the
    answers; its metrics hold the accuracy on its own objective (200 held-out pairs) before and after."""
    model = copy.deepcopy(base)
    steps, lr = (cfg.track_steps, cfg.track_lr) if kind == "track" else (cfg.arith_steps, cfg.arith_lr)
    rng = np.random.default_rng([20_000, seed, zlib.crc32(kind.encode())])
    rows = lm_rows(pre.tokenizer, tuning_pairs(cfg, data.vocab, kind, steps * cfg.batch_size, rng))
    check = tuning_pairs(cfg, data.vocab, kind, 200, np.random.default_rng([30_000, seed, zlib.crc32(kind.encode())]))
    before = answer_accuracy(model, pre.tokenizer, check)
    tcfg = train.TrainConfig("causal_lm", n_steps=steps, batch_size=cfg.batch_size, lr=lr, weight_decay=0.0,
                             warmup_steps=min(20, steps // 10), schedule="cosine", seed=seed, bf16=cfg.use_bf16(),
                             lora_rank=cfg.lora_rank, progress=False, desc=f"{kind} seed {seed}")
    train.train(model, rows, tcfg)
    train.merge_lora(model) if cfg.lora_rank else None
    return {**_finish(model.eval(), pre, data, out), "objective_acc_before": before,
            "objective_acc": answer_accuracy(model, pre.tokenizer, check)}


def _finish(model, pre: bases.Base, data: TaskData, out: Path, history=None) -> dict:
    models.save_model(model, pre.tokenizer, out / "model")
    (out / "evals.json").write_text(json.dumps(history or []))
    return {"val_acc": accuracy(model, data.enc["val"]),
            "steps": (history or [{"step": None}])[-1]["step"], "n_params": models.n_params(model)}


@dataclass
class Trained:
    name: str  # base | arith_bound | arith_pure | track
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


FINE_TUNING = ("arith_steps", "arith_lr", "track_steps", "track_lr", "batch_size", "lora_rank")


def _train_keys(cfg: Config, name: str) -> dict:
    """The settings that shape model `name` (evaluation sizes and analysis settings left out; the base's key also
    leaves out the fine-tunes' settings)."""
    skip = {"seed", "recompute", "n_seeds", "tuned", "test_size", "curve_size", "analysis_size", "pp_size",
            "heads_base", "heads_tuned", "mean_size", "random_draws", "sweep_repeats", "device", "allow_network",
            *(FINE_TUNING if name == "base" else ())}
    return {k: v for k, v in cfg.key_dict().items() if k not in skip and not k.startswith("dcm_")}


def get_model(cfg: Config, pre: bases.Base, data: TaskData, name: str, seed: int, base: Trained | None = None,
              cached_only: bool = False) -> Trained:
    """base or a tuned model for `seed`, through the artifact cache (key: training settings + the starting model)."""
    if name == "arith_bound" and cfg.tuned_source:  # a released fine-tuned model (paper profile)
        b = bases.load(cfg.tuned_source, device=cfg.device, allow_network=cfg.allow_network)
        return Trained(name, seed, b.model, None, b.key)
    if name == "base" and not trains_base(cfg):  # local, paper: the starting model is the base
        return Trained(name, seed, pre.model, None, pre.key)
    compute = (_not_cached if cached_only else partial(_train_base, cfg, pre, data, seed) if name == "base"
               else partial(_train_tuned, cfg, pre, base.model if base else None, data, name, seed))
    fps = [pre.key, data.fingerprint] + ([base.key] if base is not None and base.key else [])
    art = load_or_compute(f"prakash_{name}", {"name": name, "seed": seed, "train": _train_keys(cfg, name)}, compute,
                          fingerprints=fps, recompute=cfg.recompute and not cached_only,
                          code=BASE_CODE if name == "base" else CODE)
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
