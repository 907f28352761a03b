"""The measurements of chapter 01_lin, one function per page section: models in, DataFrames out.

0. the task as this base tokenizes it;  1. learning (steps to criterion, accuracies, for every kind of run);
2. psychometric curves;  3. per block, how much of its starting point a trained model keeps (debiased linear CKA,
Kornblith et al. 2019, and linear predictivity: the share of the start's states a ridge map recovers from the
trained model's, out of sample), and how alike two trained models are;  4. per-block relative weight change of
tuned from base;  5. restoring one block's attention or MLP to its base weights inside tuned;  6. linear probes
(`lib.probing`) for the context, both streams and, context-free, each stream's sign, with random-init baselines;
7. a linear readout of the answer trained on the frozen base's (and a random init's) states.

Every block is read at its output, before the final norm; the final norm's output is one more point (layer
`n_layers`). Rows carry `seed` wherever a quantity is measured per run, so `claims.py` decides over seeds.
"""
from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from lib import evals, hooks, models, probing
from lib.hooks import FAMILIES, model_spec
from lib.similarity import grouped_weight_change, linear_cka
from lib.tasks import cdm

from .build import KINDS, Run, TaskData, accuracy, choice_logit
from .config import Config

# A trained model against its own starting point: how much of the start it keeps.
RETAIN = {"tuned vs base": ("tuned", "base"), "scratch vs init": ("scratch", "init"),
          "shuffled vs its start": ("shuffled", "shuffled base")}
# Two trained models: the primed pairs take seed s with the next seed (the last with the first).
COMPARE = {"tuned vs scratch": ("tuned", "scratch"), "tuned vs tuned'": ("tuned", "tuned'"),
           "scratch vs scratch'": ("scratch", "scratch'")}
PAIRS = (*RETAIN, *COMPARE)
READOUTS = {"last": "at the last prompt token", "prompt": "over all prompt tokens"}
PROMPT_READOUT_PROMPTS = 128  # the all-tokens readout uses the first test prompts (about 2,000 token rows)
TARGETS = ("context", "relevant", "irrelevant")
STREAMS = ("motion", "color")  # the context-free targets: each stream's own sign, whatever the context
PARTS = ("attn", "mlp")
RIDGE = 1e-2  # ridge strength of the linear predictivity map, relative to the mean eigenvalue of X^T X


@dataclass
class Measured:
    """Everything the claims read: one table per section (see the functions below for their columns)."""
    learn: pd.DataFrame  # learning_table
    curves: pd.DataFrame  # learning_curves
    sim: pd.DataFrame  # similarity_table
    wchange: pd.DataFrame  # weight_change_table
    restore: pd.DataFrame  # restore_table
    probes: pd.DataFrame  # probe_table
    readout: pd.DataFrame  # readout_table
    words: pd.DataFrame  # learning_table of the words-prompt runs (empty if none)
    words_why: str = ""  # why there are no words-prompt runs


def layer_means(df: pd.DataFrame, value: str, where: dict | None = None) -> pd.Series:
    """Mean of `value` over seeds, per layer (rows filtered by `where` = {column: value})."""
    for col, v in (where or {}).items():
        df = df[df[col] == v]
    return df.groupby("layer")[value].mean()


# ------------------------------------------------------------------------------------------------ 0. the task
def examples(data: TaskData, n: int = 4) -> pd.DataFrame:
    """A few training trials with their prompt, answer and condition."""
    df = data.trials["train"].head(n)
    return pd.DataFrame({"prompt": cdm.prompts(df, data.spec), "answer": cdm.answers(df, data.spec),
                         "relevant evidence": df["rel_ev"], "irrelevant evidence": df["irr_ev"],
                         "congruent": df["congruent"]})


def task_facts(cfg: Config, base, data: TaskData) -> dict:
    """How the prompts tokenize for this base: answer tokens, number tokens, trial lengths, the context leak."""
    tok, spec = base.tokenizer, model_spec(base.model)
    lengths = data.enc["train"]["attention_mask"].sum(1).float()
    return {"answer_tokens": [tok.convert_ids_to_tokens(int(i)) for i in data.enc["test"]["answer_ids"]],
            "number_tokens": cdm.number_tokens(tok, cfg.num_lo, cfg.num_hi),
            "heldout_pairs": [(a, b) for a, b in cdm.pairs(data.spec, "heldout") if a > b],
            "length_range": (float(lengths.min()), float(lengths.max())),
            "context_sets_length": cdm.context_sets_length(data.enc["train"], data.trials["train"]),
            "congruent_share": float(data.trials["train"]["congruent"].mean()),
            "n_layers": spec.n_layers, "d_model": spec.d_model, "n_heads": spec.n_heads,
            "n_params": models.n_params(base.model)}


# ------------------------------------------------------------------------------------------------ 1. learning
def learning_table(runs: dict[str, list[Run]]) -> pd.DataFrame:
    """One row per run (every kind): steps to criterion (NaN if not reached) and accuracies on test, held-out and by
    congruence."""
    cols = ("kind", "seed", "reached", "steps_to_criterion", "steps_trained", "test_acc", "congruent_acc",
            "incongruent_acc", "heldout_acc", "train_seconds")
    rows = [{c: r.metrics[c] for c in cols} for rs in runs.values() for r in rs]
    return pd.DataFrame(rows, columns=list(cols)).astype({"steps_to_criterion": float})


def learning_curves(runs: dict[str, list[Run]]) -> pd.DataFrame:
    """Validation accuracy during training: kind, seed, step, val_acc."""
    return pd.concat([r.evals().assign(kind=r.kind, seed=r.seed) for rs in runs.values() for r in rs],
                     ignore_index=True)


# ------------------------------------------------------------------------------------------------ 2. psychometric
def psychometric(base, runs: dict[str, list[Run]], data: TaskData) -> pd.DataFrame:
    """P(answers[0]) on every psychometric trial, for base, tuned and scratch: columns model, seed + the trial
    columns."""
    trials, frames = data.trials["psych"], []
    every = [("base", -1, base.model)] + [(r.kind, r.seed, r.model) for k in ("tuned", "scratch") for r in runs[k]]
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


# ------------------------------------------------------------------------------------------------ 3. similarity
def layer_states(model, enc: dict, batch_size: int = 256, tokens: str = "last") -> list[np.ndarray]:
    """Residual stream at every block's output (before the final norm) and after the final norm: n_layers + 1
    arrays (rows, d_model).

    tokens="last": one row per prompt, at the last prompt token (where the answer is read out); "prompt": one row
    per prompt token (the answer token and padding left out), prompts in order."""
    device, n = model.device, model_spec(model).n_layers

    def states(b: dict) -> tuple[torch.Tensor, ...]:
        ids, mask = b["input_ids"].to(device), b["attention_mask"].to(device)
        seen = {}
        save = [(f"blocks.{L}.hook_resid_post", lambda act, name: seen.__setitem__(name, act)) for L in range(n)]
        with hooks.hooks(model, save):
            final = model(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states[-1]
        hs = [seen[f"blocks.{L}.hook_resid_post"] for L in range(n)] + [final]  # (B, T, d_model) each
        last = b["last"].to(device)  # (B,)
        if tokens == "last":
            return tuple(h[torch.arange(len(ids), device=device), last].float().cpu() for h in hs)
        keep = torch.arange(ids.shape[1], device=device)[None] <= last[:, None]  # (B, T) prompt positions
        return tuple(h[keep].float().cpu() for h in hs)

    with evals.eval_mode(model):
        out = evals.batched(states, {k: enc[k] for k in ("input_ids", "attention_mask", "last")}, batch_size)
    return [layer.numpy() for layer in out]


def readout_enc(enc: dict, tokens: str) -> dict:
    """The prompts a readout uses: all test prompts for "last", the first PROMPT_READOUT_PROMPTS for "prompt"."""
    if tokens == "last":
        return enc
    return {k: v[:PROMPT_READOUT_PROMPTS] if k != "answer_ids" else v for k, v in enc.items()}


def all_states(models_by_key: dict, enc: dict, tokens: str = "last") -> dict:
    """States per point (see layer_states) of every model in {key: model}, e.g. "base", ("tuned", seed)."""
    enc = readout_enc(enc, tokens)
    return {key: layer_states(m, enc, tokens=tokens) for key, m in models_by_key.items()}


def trained_models(base, runs: dict[str, list[Run]], starts: dict, kinds=("tuned", "scratch", "shuffled")) -> dict:
    """{"base": base, (kind, seed): trained model, ("init" | "shuffled base", seed): starting point}."""
    out = {"base": base.model, **starts}
    out.update({(r.kind, r.seed): r.model for k in kinds for r in runs[k]})
    return out


def linear_predictivity(X, Y, folds: int = 2, seed: int = 0) -> float:
    """Share of the variance of Y (n, q) that a ridge map from X (n, p) recovers on held-out rows (cross-validated
    R^2, pooled over Y's columns): 1 when Y is a linear function of X, about 0 when X carries nothing of Y."""
    X, Y = np.asarray(X, np.float64), np.asarray(Y, np.float64)
    parts = np.array_split(np.random.default_rng(seed).permutation(len(X)), folds)
    sse = sst = 0.0
    for k, test in enumerate(parts):
        train = np.concatenate([p for j, p in enumerate(parts) if j != k])
        mx, my = X[train].mean(0), Y[train].mean(0)
        Xt = X[train] - mx
        G = Xt.T @ Xt  # (p, p)
        W = np.linalg.solve(G + RIDGE * np.trace(G) / len(G) * np.eye(len(G)), Xt.T @ (Y[train] - my))
        sse += float(((Y[test] - (X[test] - mx) @ W - my) ** 2).sum())
        sst += float(((Y[test] - my) ** 2).sum())
    return 1.0 - sse / sst if sst > 0 else 0.0


def _pair_keys(seeds: list[int], i: int) -> dict[str, tuple]:
    s, other = seeds[i], seeds[(i + 1) % len(seeds)]

    def key(name):
        if name == "base":
            return "base"
        return (name[:-1], other) if name.endswith("'") else (name, s)

    return {p: (key(a), key(b)) for p, (a, b) in {**RETAIN, **COMPARE}.items()}


def similarity_table(states: dict[str, dict], seeds: list[int]) -> pd.DataFrame:
    """Debiased linear CKA per readout (key of `states`: "last" / "prompt"), pair, seed and point; for the RETAIN
    pairs also `r2`, the linear predictivity of the starting point's states from the trained model's."""
    rows = []
    for tokens, st in states.items():
        for i, s in enumerate(seeds):
            for pair, (a, b) in _pair_keys(seeds, i).items():
                for layer, (X, Y) in enumerate(zip(st[a], st[b])):
                    row = {"tokens": tokens, "pair": pair, "seed": s, "layer": layer,
                           "cka": linear_cka(X, Y, debiased=True)}
                    if pair in RETAIN:
                        row["r2"] = linear_predictivity(X, Y)
                    rows.append(row)
    return pd.DataFrame(rows)


# ------------------------------------------------------------------------------------------------ 4. weight change
_BLOCK = re.compile(r"(?:^|\.)(?:h|layers)\.(\d+)\.")


def layer_group(name: str):
    """Block index of a parameter name, "embed" for token / position embeddings, None for the rest (final norm,
    a tied LM head)."""
    m = _BLOCK.search(name)
    if m:
        return int(m.group(1))
    return "embed" if any(k in name for k in ("wte", "wpe", "embed_tokens")) else None


def weight_change_table(base, tuned: list[Run]) -> pd.DataFrame:
    """‖W_tuned - W_base‖ / ‖W_base‖ pooled per block (and embeddings, layer -1), one row per seed and group."""
    sd = base.model.state_dict()
    rows = [{"seed": r.seed, "group": g, "change": v}
            for r in tuned for g, v in grouped_weight_change(sd, r.model.state_dict(), layer_group).items()]
    df = pd.DataFrame(rows)
    df["layer"] = df["group"].map(lambda g: g if isinstance(g, int) else -1)
    return df


# ------------------------------------------------------------------------------------------------ 5. restore
def part_module(model, layer: int, part: str) -> torch.nn.Module:
    """Block `layer` ("block"), or its attention ("attn") or MLP ("mlp") sub-module."""
    spec = model_spec(model)
    block, fam = spec.blocks[layer], FAMILIES[spec.family]
    if part == "block":
        return block
    path = {"attn": fam.o_proj, "mlp": fam.down_proj}[part].rsplit(".", 1)[0]  # "attn.c_proj" -> "attn"
    return block.get_submodule(path)


@contextlib.contextmanager
def restored_block(tuned, base, layer: int, part: str = "block"):
    """Inside the block, `tuned` runs with block `layer` (or only its "attn" / "mlp") set back to the base's
    weights; restored on exit."""
    target, source = part_module(tuned, layer, part), part_module(base, layer, part)
    saved = {k: v.detach().clone() for k, v in target.state_dict().items()}
    target.load_state_dict(source.state_dict())
    try:
        yield tuned
    finally:
        target.load_state_dict(saved)


def restore_table(base, tuned: list[Run], enc: dict) -> pd.DataFrame:
    """Test accuracy of tuned with one block's attention or MLP restored to base, per seed, block and part;
    drop = tuned - restored."""
    rows = []
    for r in tuned:
        full = accuracy(r.model, enc)
        for layer in range(model_spec(r.model).n_layers):
            for part in PARTS:
                with restored_block(r.model, base.model, layer, part):
                    acc = accuracy(r.model, enc)
                rows.append({"seed": r.seed, "layer": layer, "part": part, "tuned_acc": full, "restored_acc": acc,
                             "drop": full - acc})
    return pd.DataFrame(rows)


# ------------------------------------------------------------------------------------------------ 6. probes
def probe_targets(trials: pd.DataFrame) -> dict[str, np.ndarray]:
    """Binary labels: the context, the sign of the relevant and of the irrelevant evidence, and (context-free)
    the sign of the motion and of the colour evidence."""
    return {"context": (trials["context"] == "motion").to_numpy().astype(int),
            "relevant": (trials["rel_ev"] > 0).to_numpy().astype(int),
            "irrelevant": (trials["irr_ev"] > 0).to_numpy().astype(int),
            "motion": (trials["motion_ev"] > 0).to_numpy().astype(int),
            "color": (trials["color_ev"] > 0).to_numpy().astype(int)}


def probe_table(states: dict, trials: pd.DataFrame, cfg: Config) -> pd.DataFrame:
    """Probe accuracy per model (base, init: untrained baselines; tuned, scratch), seed, point and target (a
    shuffled-label control for base). Trained models are probed for TARGETS, the untrained ones also for STREAMS."""
    targets, frames = probe_targets(trials), []
    for key, acts in states.items():
        name, seed = ("base", -1) if key == "base" else key
        if name not in ("base", "init", "tuned", "scratch"):
            continue
        wanted = {t: y for t, y in targets.items() if t in TARGETS or name in ("base", "init")}
        df = probing.probe_layers(acts, wanted, cfg.probe_folds, cfg.probe_C, cfg.seed, control=key == "base")
        frames.append(df.assign(model=name, seed=seed))
    return pd.concat(frames, ignore_index=True)


# ------------------------------------------------------------------------------------------------ 7. readout
def readout_table(models_by_key: dict, data: TaskData, cfg: Config, n_train: int = 1024) -> pd.DataFrame:
    """A linear readout of the answer trained on a frozen model's last-token states (the first `n_train` training
    prompts), scored on the test and held-out prompts: model, seed, layer, split, accuracy."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    train = {k: v[:n_train] if k != "answer_ids" else v for k, v in data.enc["train"].items()}
    rows = []
    for key, model in models_by_key.items():
        name, seed = ("base", -1) if key == "base" else key
        fit_on = layer_states(model, train)
        scored = {split: layer_states(model, data.enc[split]) for split in ("test", "heldout")}
        for layer, X in enumerate(fit_on):
            clf = make_pipeline(StandardScaler(), LogisticRegression(C=cfg.probe_C, max_iter=2000))
            clf.fit(X, train["choice"].numpy())
            for split, st in scored.items():
                acc = float((clf.predict(st[layer]) == data.enc[split]["choice"].numpy()).mean())
                rows.append({"model": name, "seed": seed, "layer": layer, "split": split, "accuracy": acc})
    return pd.DataFrame(rows)


# ------------------------------------------------------------------------------------------------ the record
def model_sizes(base, runs: dict[str, list[Run]]) -> dict:
    spec = model_spec(base.model)
    info = {"layers": spec.n_layers, "d_model": spec.d_model, "heads": spec.n_heads,
            "params": models.n_params(base.model), "source": base.source}
    return {"base": info, **{kind: {**info, "seeds": len(runs[kind])} for kind in KINDS}}
