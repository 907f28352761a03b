"""The measurements of chapter 01_lin, one function per page section: models in, DataFrames out.

0. the task as this base tokenizes it;  1. learning (steps to criterion, accuracies);  2. psychometric curves;
3. per-layer linear CKA between the models (Kornblith et al. 2019, `lib.similarity.linear_cka`), at the last prompt
token and over all prompt tokens;  4. per-layer relative weight change of tuned from base;  5. restoring one block
at a time to its base weights inside tuned;  6. linear probes (`lib.probing`) for the context and both streams.

Rows carry `seed` wherever a quantity is measured per run, so `claims.py` decides over seeds.
"""
from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from lib import evals, models, probing
from lib.hooks import model_spec
from lib.similarity import grouped_weight_change, linear_cka
from lib.tasks import cdm

from .build import KINDS, Run, TaskData, accuracy, choice_logit
from .config import Config

SCRATCH_REF = "scratch vs scratch'"  # two scratch seeds: how far independent solutions from random starts agree
PAIRS = ("tuned vs base", "scratch vs base", "tuned vs scratch", SCRATCH_REF)
READOUTS = {"last": "at the last prompt token", "prompt": "over all prompt tokens"}
TARGETS = ("context", "relevant", "irrelevant")


@dataclass
class Measured:
    """Everything the claims read: one table per section (see the functions below for their columns)."""
    learn: pd.DataFrame  # learning_table
    cka: pd.DataFrame  # cka_table
    wchange: pd.DataFrame  # weight_change_table
    restore: pd.DataFrame  # restore_table
    probes: pd.DataFrame  # probe_table


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
    """One row per run: steps to criterion (NaN if not reached) and accuracies on test, held-out and by congruence."""
    cols = ("kind", "seed", "reached", "steps_to_criterion", "steps_trained", "test_acc", "congruent_acc",
            "incongruent_acc", "heldout_acc", "train_seconds")
    rows = [{c: r.metrics[c] for c in cols} for rs in runs.values() for r in rs]
    return pd.DataFrame(rows).astype({"steps_to_criterion": float})


def learning_curves(runs: dict[str, list[Run]]) -> pd.DataFrame:
    """Validation accuracy during training: kind, seed, step, val_acc."""
    return pd.concat([r.evals().assign(kind=r.kind, seed=r.seed) for rs in runs.values() for r in rs],
                     ignore_index=True)


# ------------------------------------------------------------------------------------------------ 2. psychometric
def psychometric(base, runs: dict[str, list[Run]], data: TaskData) -> pd.DataFrame:
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


# ------------------------------------------------------------------------------------------------ 3. CKA
def layer_states(model, enc: dict, batch_size: int = 256, tokens: str = "last") -> list[np.ndarray]:
    """Residual stream after each block: n_layers arrays (rows, d_model).

    tokens="last": one row per prompt, at the last prompt token (where the answer is read out); "prompt": one row
    per prompt token (the answer token and padding left out), prompts in order. From ``output_hidden_states``:
    entry L + 1 is the output of block L; the last one is after the final norm. The embedding entry is left out.
    """
    device = model.device

    def states(b: dict) -> tuple[torch.Tensor, ...]:
        ids, mask = b["input_ids"].to(device), b["attention_mask"].to(device)
        hs = model(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states[1:]
        last = b["last"].to(device)  # (B,)
        if tokens == "last":
            return tuple(h[torch.arange(len(ids), device=device), last].float().cpu() for h in hs)
        keep = torch.arange(ids.shape[1], device=device)[None] <= last[:, None]  # (B, T) prompt positions
        return tuple(h[keep].float().cpu() for h in hs)

    with evals.eval_mode(model):
        out = evals.batched(states, {k: enc[k] for k in ("input_ids", "attention_mask", "last")}, batch_size)
    return [layer.numpy() for layer in out]


def all_states(base, runs: dict[str, list[Run]], enc: dict, tokens: str = "last") -> dict:
    """States per layer (see layer_states): {"base": [...], ("tuned", seed): [...], ("scratch", seed): [...]}."""
    st = {"base": layer_states(base.model, enc, tokens=tokens)}
    st.update({(r.kind, r.seed): layer_states(r.model, enc, tokens=tokens) for rs in runs.values() for r in rs})
    return st


def cka_table(states: dict[str, dict], seeds: list[int]) -> pd.DataFrame:
    """Linear CKA per readout (key of `states`: "last" / "prompt"), model pair, seed and layer.

    scratch vs scratch' pairs seed s with the next seed (the last with the first)."""
    rows = []
    for tokens, st in states.items():
        for i, s in enumerate(seeds):
            other = seeds[(i + 1) % len(seeds)]
            pairs = dict(zip(PAIRS, ((("tuned", s), "base"), (("scratch", s), "base"),
                                     (("tuned", s), ("scratch", s)), (("scratch", s), ("scratch", other)))))
            for pair, (a, b) in pairs.items():
                for layer, (X, Y) in enumerate(zip(st[a], st[b])):
                    rows.append({"tokens": tokens, "pair": pair, "seed": s, "layer": layer, "cka": linear_cka(X, Y)})
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


def restore_table(base, tuned: list[Run], enc: dict) -> pd.DataFrame:
    """Test accuracy of tuned with one block restored to base, per seed and block; drop = tuned - restored."""
    rows = []
    for r in tuned:
        full = accuracy(r.model, enc)
        for layer in range(model_spec(r.model).n_layers):
            with restored_block(r.model, base.model, layer):
                acc = accuracy(r.model, enc)
            rows.append({"seed": r.seed, "layer": layer, "tuned_acc": full, "restored_acc": acc, "drop": full - acc})
    return pd.DataFrame(rows)


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


# ------------------------------------------------------------------------------------------------ the record
def model_sizes(base, runs: dict[str, list[Run]]) -> dict:
    spec = model_spec(base.model)
    info = {"layers": spec.n_layers, "d_model": spec.d_model, "heads": spec.n_heads,
            "params": models.n_params(base.model), "source": base.source}
    return {"base": info, **{kind: {**info, "seeds": len(runs[kind])} for kind in KINDS}}
