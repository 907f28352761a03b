"""What page 01_lin shows: figures (returned, never shown here), summary tables, computed sentences (Markdown via
`page.md`) and the results record. Every number in the page's prose comes from these functions."""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from lib import page, plotting, results, stats
from lib.claims import Claim

from .build import PAPER
from .config import Config
from .measure import COMPARE, READOUTS, RETAIN, STREAMS, TARGETS, layer_means, model_sizes

COLOURS = {**plotting.PALETTE, "shuffled": "#c44e52", "frozen_early": "#937860", "frozen_late": "#da8bc3",
           "init": "#8c8c8c", "shuffled base": "#c44e52",
           "tuned vs base": plotting.PALETTE["tuned"], "scratch vs init": plotting.PALETTE["scratch"],
           "shuffled vs its start": "#c44e52", "tuned vs scratch": plotting.PALETTE["control"],
           "tuned vs tuned'": plotting.PALETTE["tuned"], "scratch vs scratch'": plotting.PALETTE["scratch"]}


def _done(fig) -> plt.Figure:
    return plotting.finish(fig)


def point_label(n_blocks: int):
    """Tick labels of the read points: blocks 0..n-1 (before the final norm), then the final norm."""
    return lambda v: "final norm" if v == n_blocks else ("embed" if v < 0 else str(int(v)))


def _ticks(ax, layers, n_blocks: int):
    layers = sorted(set(int(v) for v in layers))
    ax.set_xticks(layers, [point_label(n_blocks)(v) for v in layers], fontsize=8)


# ------------------------------------------------------------------------------------------------ 0. the task
def task_text(cfg: Config, source: str, facts: dict):
    """How the prompts tokenize for this base model (from measure.task_facts)."""
    n_tok, a = facts["number_tokens"], facts["answer_tokens"]
    numbers = (f"every number {cfg.num_lo}-{cfg.num_hi} (with its leading space) is one token" if n_tok.max() == 1
               else f"{(n_tok == 1).mean():.0%} of the numbers {cfg.num_lo}-{cfg.num_hi} (with their leading space) "
                    f"are one token, the longest {int(n_tok.max())}")
    held = ", ".join(f"{x} vs {y}" for x, y in facts["heldout_pairs"])
    size = (f"{facts['n_layers']} blocks, d_model {facts['d_model']}, {facts['n_heads']} heads, "
            f"{facts['n_params'] / 1e6:.2f} M parameters; tuned and scratch have the same architecture")
    lo, hi = facts["length_range"]
    leak = ("DEPENDS on the context (a positional shortcut)" if facts["context_sets_length"]
            else "does not depend on the context")
    return page.md(
        f"Profile `{cfg.profile}`, base model: {source} ({size}). The answers {cfg.answers[0]!r} and "
        f"{cfg.answers[1]!r} are single tokens ({a[0]!r}, {a[1]!r}); {numbers}. A trial (prompt and answer) is "
        f"{lo:.0f}-{hi:.0f} tokens long; its length {leak}. Held out of training: the comparisons {held} (both "
        f"orders). Splits: {cfg.train_size} training, {cfg.val_size} validation, {cfg.test_size} test and "
        f"{cfg.heldout_size} held-out-comparison prompts; {facts['congruent_share']:.0%} of training trials are "
        f"congruent.")


# ------------------------------------------------------------------------------------------------ 1. learning
def learning_summary(table: pd.DataFrame) -> pd.DataFrame:
    """Per kind: seeds reaching the criterion and mean ± sd of steps and accuracies."""
    rows = {}
    for kind, g in table.groupby("kind", sort=False):
        steps = g["steps_to_criterion"].dropna()
        rows[kind] = {"reached criterion": f"{int(g['reached'].sum())}/{len(g)}",
                      "steps to criterion": stats.describe(steps, "{:.0f}") if len(steps) else "never",
                      **{name: stats.describe(g[col]) for name, col in (
                          ("test accuracy", "test_acc"), ("congruent", "congruent_acc"),
                          ("incongruent", "incongruent_acc"), ("held-out pairs", "heldout_acc"))}}
    return pd.DataFrame(rows).T


def plot_learning(curves: pd.DataFrame, table: pd.DataFrame, criterion: float) -> plt.Figure:
    fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(11, 3.8), gridspec_kw={"width_ratios": [1.4, 1]})
    for kind, g in curves.groupby("kind", sort=False):
        for i, (_, ev) in enumerate(g.groupby("seed")):
            ax0.plot(ev["step"], ev["val_acc"], color=COLOURS[kind], alpha=0.7, lw=1, label=kind if i == 0 else None)
    ax0.axhline(criterion, ls="--", c="k", lw=1, label="criterion")
    ax0.set(xlabel="training step", ylabel="validation accuracy", title="Learning curves (one line per seed)")
    ax0.legend(fontsize=7)
    cols = {"test": "test_acc", "incongruent": "incongruent_acc", "held-out pairs": "heldout_acc"}
    kinds = list(dict.fromkeys(table["kind"]))
    x, w = np.arange(len(cols)), 0.8 / len(kinds)
    for j, kind in enumerate(kinds):
        g = table[table["kind"] == kind]
        ax1.bar(x + w * (j - (len(kinds) - 1) / 2), [g[c].mean() for c in cols.values()], w, color=COLOURS[kind],
                yerr=[g[c].std() for c in cols.values()], label=kind, capsize=2)
    ax1.axhline(0.5, ls=":", c="k", lw=1)
    ax1.set(xticks=x, xticklabels=list(cols), ylim=(0, 1), ylabel="accuracy", title="After training")
    return _done(fig)


def learning_text(table: pd.DataFrame, criterion: float, cfg: Config):
    parts = []
    for kind, g in table.groupby("kind", sort=False):
        steps = g["steps_to_criterion"].dropna()
        reach = (f"reached {criterion:.0%} validation accuracy in {int(g['reached'].sum())}/{len(g)} seeds"
                 + (f" after {stats.describe(steps, '{:.0f}')} steps" if len(steps) else ""))
        parts.append(f"**{kind}** {reach}; test accuracy {stats.describe(g['test_acc'])} "
                     f"(incongruent trials {stats.describe(g['incongruent_acc'])}), "
                     f"held-out comparisons {stats.describe(g['heldout_acc'])}")
    matched = (cfg.tuned_lr == cfg.scratch_lr and cfg.tuned_max_steps == cfg.scratch_max_steps)
    budget = (f"Every run trained the same {cfg.tuned_max_steps} steps at learning rate {cfg.tuned_lr:g}" if matched
              else f"Fine-tunes trained {cfg.tuned_max_steps} steps at {cfg.tuned_lr:g}, scratch "
                   f"{cfg.scratch_max_steps} steps at {cfg.scratch_lr:g} (budgets NOT matched in this profile)")
    return page.md(budget + ". " + "; ".join(parts) + " (chance is 0.5).")


# ------------------------------------------------------------------------------------------------ 2. psychometric
def plot_psychometric(psych: pd.DataFrame) -> plt.Figure:
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
    return _done(fig)


def psych_text(effects: pd.DataFrame):
    parts = [f"**{m}** relevant swing {stats.describe(g['relevant swing'], '{:.2f}')}, irrelevant swing "
             f"{stats.describe(g['irrelevant swing'], '{:.2f}')}"
             for m, g in effects.groupby("model", sort=False)]
    return page.md("How far each stream moves the choice (1: fully, 0: not at all): " + "; ".join(parts) + ".")


# ------------------------------------------------------------------------------------------------ 3. similarity
def _curves(ax, df: pd.DataFrame, value: str, pairs, n_blocks: int):
    for pair in pairs:
        g = df[df["pair"] == pair]
        st = g.groupby("layer")[value].agg(["mean", "std"])
        ax.errorbar(st.index, st["mean"], yerr=st["std"].fillna(0), marker="o", ms=3, capsize=3, label=pair,
                    c=COLOURS[pair], ls="--" if "'" in pair else "-")
    _ticks(ax, df["layer"], n_blocks)


def plot_similarity(sim: pd.DataFrame, n_blocks: int) -> plt.Figure:
    """Top: retention of the starting point (R^2, debiased CKA) per readout; bottom: CKA between trained models."""
    readouts = list(dict.fromkeys(sim["tokens"]))
    fig, axes = plt.subplots(3, len(readouts), figsize=(5 * len(readouts), 8.4), sharey="row", squeeze=False)
    for j, tokens in enumerate(readouts):
        d = sim[sim["tokens"] == tokens]
        for i, (value, pairs, what) in enumerate((("r2", RETAIN, "R² of the start from the trained model"),
                                                  ("cka", RETAIN, "debiased CKA with the start"),
                                                  ("cka", COMPARE, "debiased CKA between trained models"))):
            _curves(axes[i, j], d, value, pairs, n_blocks)
            axes[i, j].set(title=f"{READOUTS[tokens]}", ylabel=what if j == 0 else None, ylim=(-0.1, 1.02))
        axes[2, j].set_xlabel("block (then the final norm)")
    axes[0, -1].legend(fontsize=7)
    axes[2, -1].legend(fontsize=7)
    return _done(fig)


def similarity_text(sim: pd.DataFrame, n_blocks: int):
    d = sim[(sim["tokens"] == "last") & (sim["layer"] < n_blocks)]
    parts = [f"{pair}: R² {layer_means(d, 'r2', {'pair': pair}).mean():.2f}, CKA "
             f"{layer_means(d, 'cka', {'pair': pair}).mean():.2f}" for pair in RETAIN]
    parts += [f"{pair}: CKA {layer_means(d, 'cka', {'pair': pair}).mean():.2f}" for pair in COMPARE]
    return page.md("At the last prompt token, mean over seeds and blocks: " + "; ".join(parts) + ".")


# ------------------------------------------------------------------------------------------------ 4-5. per block
def plot_weight_change(df: pd.DataFrame) -> plt.Figure:
    st = df.groupby("layer")["change"].agg(["mean", "std"])
    fig, ax = plt.subplots(figsize=(5.5, 3.2))
    ax.bar(st.index, st["mean"], yerr=st["std"].fillna(0), color=COLOURS["tuned"], capsize=3)
    ax.plot(df["layer"], df["change"], "k.", ms=3)  # one dot per seed
    ax.set(xticks=st.index, xticklabels=["embed" if v < 0 else f"block {v}" for v in st.index],
           ylabel="‖ΔW‖ / ‖W_base‖")
    return _done(fig)


def plot_restore(df: pd.DataFrame) -> plt.Figure:
    fig, ax = plt.subplots(figsize=(6, 3.2))
    layers = sorted(df["layer"].unique())
    for j, part in enumerate(dict.fromkeys(df["part"])):
        st = df[df["part"] == part].groupby("layer")["drop"].agg(["mean", "std"])
        ax.bar(np.array(layers) + 0.4 * (j - 0.5), st["mean"], 0.4, yerr=st["std"].fillna(0), capsize=3,
               label={"attn": "attention", "mlp": "MLP"}[part], color=("#4c72b0", "#dd8452")[j])
    ax.set(xticks=layers, xticklabels=[f"block {v}" for v in layers], ylabel="accuracy drop")
    ax.legend(fontsize=8)
    return _done(fig)


def layer_text(df: pd.DataFrame, value: str, what: str):
    m = layer_means(df[df["layer"] >= 0], value)
    return page.md(f"{what} is largest in block {int(m.idxmax())} ({m.max():.3f}) and smallest in block "
                   f"{int(m.idxmin())} ({m.min():.3f}); mean over seeds, {df['seed'].nunique()} seeds.")


def restore_text(df: pd.DataFrame):
    parts = []
    for part, g in df.groupby("part", sort=False):
        m = g.groupby("layer")["drop"].mean()
        parts.append(f"restoring the {'attention' if part == 'attn' else 'MLP'} costs "
                     + ", ".join(f"{v:.3f}" for v in m) + " (blocks in order)")
    return page.md("Mean accuracy drop over seeds: " + "; ".join(parts) + ".")


# ------------------------------------------------------------------------------------------------ 6. probes
def plot_probes(probes: pd.DataFrame, n_blocks: int) -> plt.Figure:
    targets = [t for t in (*TARGETS, *STREAMS) if t in set(probes["target"])]
    fig, axes = plt.subplots(1, len(targets), figsize=(3.2 * len(targets), 3.3), sharey=True, squeeze=False)
    for ax, target in zip(axes[0], targets):
        d = probes[probes["target"] == target]
        for name, g in d.groupby("model", sort=False):
            st = g.groupby("layer")["accuracy"].agg(["mean", "std"])
            ax.errorbar(st.index, st["mean"], yerr=st["std"].fillna(0), marker="o", ms=3, capsize=3, label=name,
                        c=COLOURS[name], ls="--" if name == "init" else "-")
        ax.axhline(d["chance"].mean(), ls=":", c="k", lw=1, label="chance")
        ax.plot(*layer_means(d, "control", {"model": "base"}).reset_index().to_numpy().T, "k--", lw=0.8,
                label="base, shuffled labels")
        ax.set(title=target if target in TARGETS else f"{target} sign (context-free)", ylim=(0.3, 1.02))
        _ticks(ax, d["layer"], n_blocks)
    axes[0, 0].set_ylabel("probe accuracy (cross-validated)")
    axes[0, -1].legend(fontsize=7)
    return _done(fig)


def probe_text(probes: pd.DataFrame, n_blocks: int):
    d = probes[probes["layer"] < n_blocks].groupby(["target", "model"], sort=False)["accuracy"].mean().unstack()
    parts = [f"{t}: " + ", ".join(f"{m} {d.loc[t, m]:.2f}" for m in d.columns if pd.notna(d.loc[t, m]))
             for t in d.index]
    return page.md("Probe accuracy averaged over the blocks (mean over seeds; init is the untrained random network "
                   "of each seed): " + "; ".join(parts) + ".")


# ------------------------------------------------------------------------------------------------ 7. readout
def plot_readout(readout: pd.DataFrame, n_blocks: int) -> plt.Figure:
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.2), sharey=True)
    for ax, split in zip(axes, ("test", "heldout")):
        d = readout[readout["split"] == split]
        for name, g in d.groupby("model", sort=False):
            st = g.groupby("layer")["accuracy"].agg(["mean", "std"])
            ax.errorbar(st.index, st["mean"], yerr=st["std"].fillna(0), marker="o", ms=3, capsize=3, label=name,
                        c=COLOURS[name])
        ax.axhline(0.5, ls=":", c="k", lw=1)
        ax.set(title={"test": "test prompts", "heldout": "held-out comparisons"}[split], ylim=(0.3, 1.02))
        _ticks(ax, d["layer"], n_blocks)
    axes[0].set_ylabel("readout accuracy")
    axes[-1].legend(fontsize=7)
    return _done(fig)


def readout_text(readout: pd.DataFrame, n_blocks: int):
    d = readout[(readout["layer"] < n_blocks)]
    best = d.groupby(["split", "model", "seed"])["accuracy"].max().groupby(["split", "model"]).mean().unstack()
    parts = [f"{split}: " + ", ".join(f"{m} {best.loc[split, m]:.2f}" for m in best.columns) for split in best.index]
    return page.md("Best-block accuracy of a linear readout of the answer on frozen states (mean over seeds): "
                   + "; ".join(parts) + ".")


# ------------------------------------------------------------------------------------------------ verdict
def verdict_text(claims: list[Claim]):
    return page.md("\n".join(f"- **{c.verdict}**: {c.claim} Ours: {c.ours}."
                             + (f" ({c.reason}.)" if c.precondition else "") for c in claims))


def write_results(cfg: Config, base, runs, claims: list[Claim]) -> dict:
    return results.write("01_lin", PAPER, cfg.profile, model_sizes(base, runs), claims, precision=cfg.precision)
