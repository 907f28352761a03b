"""What chapter 01_lin trains or loads, through the cache: the pretrained base, the task's splits, and per seed
five runs on the same data:

    tuned         the base fine-tuned on the task
    scratch       the same architecture from a fresh random start (its `init`, rebuilt from the seed)
    shuffled      the base with every weight tensor's entries permuted (norms kept, features destroyed), then
                  fine-tuned like tuned: the null for "the pretrained features matter"
    frozen_early  the base fine-tuned with the earlier half of its blocks frozen
    frozen_late   the base fine-tuned with the later half of its blocks frozen

Every run trains its whole step budget (no early stop, so runs are compared after the same number of updates);
`steps_to_criterion` is the first validation check that reaches `cfg.criterion`. The fine-tunes share `tuned_lr`
and `tuned_max_steps`, scratch has its own (the tiny profile sets them equal). Each run is
an artifact `lin_<kind>` keyed by its training settings, the base's key, the task data's fingerprint and the
source of the code that trains it (`CODE`). `synthesis_pairs` hands the synthesis chapter its base -> tuned pairs,
from the cache only.
"""
from __future__ import annotations

import copy
import dataclasses
import functools
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from lib import bases, evals, models, train
from lib.artifacts import Artifact, load_or_compute
from lib.config import ConfigError
from lib.hooks import model_spec
from lib.lenses import seed_at
from lib.tasks import cdm

from .config import Config

PAPER = ("Lin 2024, Fine-tuned network relies on generic representation to solve unseen cognitive task "
         "(arXiv 2406.18926)")
KINDS = ("tuned", "scratch", "shuffled", "frozen_early", "frozen_late")
STARTS = {"tuned": "base", "scratch": "init", "shuffled": "shuffled base", "frozen_early": "base",
          "frozen_late": "base"}  # where each kind starts from
# The modules whose source trains a run: part of every run's cache key, so an edit to any of them retrains.
CODE = (__name__, "lib.train", "lib.models", "lib.tasks.cdm", "lib.evals")


# ------------------------------------------------------------------------------------------------ base and data
def get_base(cfg: Config) -> bases.Base:
    """The pretrained model of the profile: the study's GPT (smoke, tiny), a packaged model (local), GPT-2 or a
    folder (paper), on `cfg.device`."""
    if cfg.profile in ("smoke", "tiny"):
        return bases.load("study:gpt", cfg.profile, device=cfg.device)
    if cfg.profile == "local":
        return bases.load(f"local:{cfg.local_model}", device=cfg.device)  # a missing package is named
    return bases.load(cfg.base_source, device=cfg.device, allow_network=cfg.allow_network)


def task_spec(cfg: Config) -> cdm.CDMSpec:
    return cdm.CDMSpec(cfg.num_lo, cfg.num_hi, cfg.levels, cfg.answers, cfg.prompt_format)


@dataclass
class TaskData:
    spec: cdm.CDMSpec
    trials: dict[str, pd.DataFrame]  # train, val, test, heldout, psych
    enc: dict[str, dict]  # the same splits as cdm.encode tensors
    fingerprint: str


def task_data(cfg: Config, tokenizer, n_ctx: int | None = None) -> TaskData:
    """The task's splits, encoded for `tokenizer`; checks the answers are single tokens and prompts fit `n_ctx`."""
    spec = task_spec(cfg)
    sizes = {"train": cfg.train_size, "val": cfg.val_size, "test": cfg.test_size, "heldout": cfg.heldout_size}
    trials = cdm.make_splits(spec, sizes, cfg.seed)
    trials["psych"] = cdm.psychometric_trials(spec, cfg.psych_reps, cfg.seed + 5000)
    try:
        cdm.answer_ids(tokenizer, spec)
    except ValueError as err:
        raise ConfigError(f"parameter 'answers' = {cfg.answers!r}: {err}") from None
    enc = {}
    for name, df in trials.items():
        enc[name] = cdm.encode(df, spec, tokenizer)
        T = enc[name]["input_ids"].shape[1]
        if n_ctx is not None and T > n_ctx:
            raise ConfigError(f"prompts of {T} tokens exceed the model's {n_ctx} positions: use "
                              f"prompt_format='compact'")
    fp = "".join(cdm.fingerprint(df, spec) for df in trials.values())
    return TaskData(spec, trials, enc, fp)


def n_positions(model) -> int | None:
    c = model.config
    return getattr(c, "n_positions", None) or getattr(c, "max_position_embeddings", None)


# ------------------------------------------------------------------------------------------------ the task metric
def choice_logit(model, enc: dict, batch_size: int = 256) -> np.ndarray:
    """(N,) logit(answers[0]) - logit(answers[1]) at the last prompt token: > 0 means the model picks answers[0]."""
    a, device = enc["answer_ids"], model.device

    def diff(b: dict) -> torch.Tensor:
        logits = model(input_ids=b["input_ids"].to(device),
                       attention_mask=b["attention_mask"].to(device)).logits.float()  # (B, T, d_vocab)
        last = logits[torch.arange(len(b["last"]), device=device), b["last"].to(device)]  # (B, d_vocab)
        return (last[:, a[0]] - last[:, a[1]]).cpu()

    with evals.eval_mode(model):
        out = evals.batched(diff, {k: enc[k] for k in ("input_ids", "attention_mask", "last")}, batch_size)
    return out.numpy()


def accuracy(model, enc: dict, rows=None) -> float:
    """Two-way accuracy: the answer token with the larger logit is the choice (rows: optional boolean mask)."""
    correct = (choice_logit(model, enc) < 0).astype(int) == enc["choice"].numpy()
    return float(correct[rows].mean() if rows is not None else correct.mean())


def label_accuracy(model, inputs: dict, answer_ids: tuple[int, int]) -> float:
    """Task accuracy from HF-style inputs (input_ids, attention_mask, labels with one answer token per row)."""
    pos = (inputs["labels"] != -100).float().argmax(1)  # (B,) the answer position
    rows = torch.arange(len(pos))
    enc = {"input_ids": inputs["input_ids"], "attention_mask": inputs["attention_mask"], "last": pos - 1,
           "answer_ids": torch.tensor(answer_ids),
           "choice": (inputs["labels"][rows, pos] == answer_ids[1]).long()}
    return accuracy(model, enc)


# ------------------------------------------------------------------------------------------------ training
def train_config(cfg: Config, kind: str, seed: int) -> train.TrainConfig:
    tuned = kind != "scratch"
    return train.TrainConfig(
        objective="causal_lm", n_steps=cfg.tuned_max_steps if tuned else cfg.scratch_max_steps,
        batch_size=cfg.batch_size, lr=cfg.tuned_lr if tuned else cfg.scratch_lr, weight_decay=cfg.weight_decay,
        warmup_steps=cfg.warmup_steps, schedule=cfg.schedule, eval_every=cfg.eval_every, seed=seed,
        bf16=cfg.use_bf16(),
        lora_rank=cfg.lora_rank if tuned else 0, freeze_embeddings=cfg.freeze_embeddings and tuned,
        progress=False, desc=f"{kind} seed {seed}")


def scratch_init(base_model, seed: int):
    """The base's architecture (same HF config) with fresh random weights from `seed`; global RNG untouched."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = type(base_model)(base_model.config)
    return model.to(torch.float32).to(base_model.device).eval()


def shuffled_init(base_model, seed: int):
    """A copy of the base whose every parameter tensor has its entries permuted at random (seeded): each tensor
    keeps its norm and distribution of values, the learned features are gone."""
    model = copy.deepcopy(base_model)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():  # a tied LM head is the same tensor as the embedding: permuted once
            flat = p.detach().flatten()
            p.copy_(flat[torch.randperm(flat.numel(), generator=gen).to(flat.device)].view_as(p))
    return model.eval()


def frozen_blocks(n_layers: int, kind: str) -> list[int]:
    """The blocks a run keeps fixed: the earlier half (frozen_early), the later half (frozen_late), else none.
    With an odd count the middle block trains in both."""
    early, late = list(range(n_layers // 2)), list(range((n_layers + 1) // 2, n_layers))
    return {"frozen_early": early, "frozen_late": late}.get(kind, [])


def start_model(base_model, kind: str, seed: int):
    """The model a run of `kind` starts from, with the blocks it must not train set to requires_grad=False."""
    if kind == "scratch":
        return scratch_init(base_model, seed)
    model = shuffled_init(base_model, seed) if kind == "shuffled" else copy.deepcopy(base_model)
    blocks = model_spec(model).blocks
    for layer in frozen_blocks(len(blocks), kind):
        blocks[layer].requires_grad_(False)
    return model


def fit(model, data: TaskData, tcfg: train.TrainConfig, criterion: float) -> tuple[list[dict], int | None]:
    """Train the whole step budget; returns (evals, the first checked step whose validation accuracy reaches
    `criterion`, or None). evals: [{"step", "val_acc"}], the first at step 0 (before training)."""
    history = [{"step": 0, "val_acc": accuracy(model, data.enc["val"])}]

    def check(m) -> dict:
        step = min(len(history) * tcfg.eval_every, tcfg.n_steps)  # called every eval_every steps and at the end
        history.append({"step": step, "val_acc": accuracy(m, data.enc["val"])})
        return {}

    train.train(model, cdm.train_tensors(data.enc["train"]), tcfg, eval_fn=check)
    reached = next((e["step"] for e in history if e["val_acc"] >= criterion), None)
    if tcfg.lora_rank:
        train.merge_lora(model)
    return history, reached


def _compute_run(cfg: Config, base: bases.Base, data: TaskData, kind: str, seed: int, out: Path) -> dict:
    model = start_model(base.model, kind, seed)
    tcfg = train_config(cfg, kind, seed)
    start = time.perf_counter()
    history, reached = fit(model, data, tcfg, cfg.criterion)
    seconds = time.perf_counter() - start
    model.eval()
    models.save_model(model, base.tokenizer, out / "model")
    (out / "evals.json").write_text(json.dumps(history))
    test = data.trials["test"]
    return {"kind": kind, "seed": seed, "reached": reached is not None, "steps_to_criterion": reached,
            "steps_trained": history[-1]["step"], "train_seconds": seconds, "n_params": models.n_params(model),
            "val_acc": history[-1]["val_acc"], "test_acc": accuracy(model, data.enc["test"]),
            "heldout_acc": accuracy(model, data.enc["heldout"]),
            "congruent_acc": accuracy(model, data.enc["test"], test["congruent"].to_numpy()),
            "incongruent_acc": accuracy(model, data.enc["test"], ~test["congruent"].to_numpy())}


@dataclass
class Run:
    kind: str
    seed: int
    model: torch.nn.Module
    artifact: Artifact

    @property
    def metrics(self) -> dict:
        return self.artifact.metrics

    def evals(self) -> pd.DataFrame:
        return pd.DataFrame(json.loads((self.artifact.path / "evals.json").read_text()))


def _not_cached(out: Path) -> dict:
    raise RuntimeError("this model is not in the cache: run notebook 01_lin with the same profile first")


def get_run(cfg: Config, base: bases.Base, data: TaskData, kind: str, seed: int, cached_only: bool = False) -> Run:
    """A tuned or scratch model (cached artifact `lin_<kind>`): loaded, or trained now unless `cached_only`."""
    tcfg = {k: v for k, v in train_config(cfg, kind, seed).__dict__.items() if k not in ("progress", "desc")}
    key = {"kind": kind, "seed": seed, "train": tcfg, "criterion": cfg.criterion, "source": base.source}
    compute = _not_cached if cached_only else functools.partial(_compute_run, cfg, base, data, kind, seed)
    art = load_or_compute(f"lin_{kind}", key, compute, fingerprints=[base.key, data.fingerprint], code=CODE,
                          recompute=cfg.recompute and not cached_only)
    model, _ = models.load_model(art.path / "model")
    return Run(kind, seed, model.to(base.model.device).eval(), art)


def train_all(cfg: Config, base: bases.Base, data: TaskData) -> dict[str, list[Run]]:
    return {kind: [get_run(cfg, base, data, kind, s) for s in cfg.seeds] for kind in KINDS}


def words_runs(cfg: Config, base: bases.Base, runs: dict[str, list[Run]]) -> tuple[dict[str, list[Run]], str]:
    """tuned and scratch on the wordier `words` prompt: the page's own runs when that is already its prompt, else
    `cfg.words_seeds` seeds trained now (through the cache). Returns (runs, why there are none: "" if there are)."""
    if cfg.prompt_format == "words":
        return {k: runs[k] for k in ("tuned", "scratch")}, ""
    if not cfg.words_seeds:
        return {}, "words_seeds is 0 in this profile"
    wcfg = dataclasses.replace(cfg, prompt_format="words")
    try:
        data = task_data(wcfg, base.tokenizer, n_positions(base.model))
    except ConfigError as err:
        return {}, str(err)
    seeds = wcfg.seeds[:cfg.words_seeds]
    return {k: [get_run(wcfg, base, data, k, s) for s in seeds] for k in ("tuned", "scratch")}, ""


def starts(base: bases.Base, seeds) -> dict:
    """The untrained starting points other than the base, rebuilt from their seeds (cheap, not cached):
    {("init", seed): scratch's random start, ("shuffled base", seed): the shuffled run's start}."""
    out = {("init", s): scratch_init(base.model, s) for s in seeds}
    out.update({("shuffled base", s): shuffled_init(base.model, s) for s in seeds})
    return out


# ------------------------------------------------------------------------------------------------ synthesis
def synthesis_pairs(profile: str = "tiny", params: dict | None = None, seed_index: int = 0) -> list[dict]:
    """base -> tuned pairs of this chapter for its `seed_index`-th seed, from the cache only: the pretrained base and
    its fine-tuned copy, and the scratch model's random initialisation and the trained scratch model."""
    cfg = Config.load(profile, params)
    seed = seed_at(cfg.seeds, seed_index)
    base = get_base(cfg)
    data = task_data(cfg, base.tokenizer)
    tuned, scratch = (get_run(cfg, base, data, k, seed, cached_only=True) for k in ("tuned", "scratch"))
    test = data.enc["test"]
    inputs = {k: test[k][:256] for k in ("input_ids", "attention_mask", "labels")}
    metric = functools.partial(label_accuracy, answer_ids=tuple(int(i) for i in test["answer_ids"]))
    common = {"tokenizer": base.tokenizer, "inputs": inputs, "metric": metric}
    return [{"name": "lin_tuned", "base": base.model, "tuned": tuned.model, **common},
            {"name": "lin_scratch", "base": scratch_init(base.model, seed), "tuned": scratch.model, **common}]
