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
from .measure import READOUTS, SCRATCH_REF, TARGETS, layer_means, model_sizes

CKA_COLOURS = {"tuned vs base": plotting.PALETTE["tuned"], "scratch vs base": plotting.PALETTE["scratch"],
               "tuned vs scratch": plotting.PALETTE["control"], SCRATCH_REF: "#937860"}


def _done(fig) -> plt.Figure:
    """Lay out and detach from pyplot, so the notebook shows the returned figure exactly once."""
    fig.tight_layout()
    plt.close(fig)
    return fig


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
    fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(10, 3.6), gridspec_kw={"width_ratios": [1.6, 1]})
    for kind, g in curves.groupby("kind", sort=False):
        for i, (_, ev) in enumerate(g.groupby("seed")):
            ax0.plot(ev["step"], ev["val_acc"], color=plotting.PALETTE[kind], alpha=0.8, label=kind if i == 0 else None)
    ax0.axhline(criterion, ls="--", c="k", lw=1, label="criterion")
    ax0.set(xlabel="training step", ylabel="validation accuracy", title="Learning curves (one line per seed)")
    ax0.legend()
    cols = {"test": "test_acc", "incongruent": "incongruent_acc", "held-out pairs": "heldout_acc"}
    x = np.arange(len(cols))
    for j, (kind, g) in enumerate(table.groupby("kind", sort=False)):
        ax1.bar(x + 0.38 * (j - 0.5), [g[c].mean() for c in cols.values()], 0.38, color=plotting.PALETTE[kind],
                yerr=[g[c].std() for c in cols.values()], label=kind, capsize=3)
    ax1.axhline(0.5, ls=":", c="k", lw=1)
    ax1.set(xticks=x, xticklabels=list(cols), ylim=(0, 1), ylabel="accuracy", title="After training")
    return _done(fig)


def learning_text(table: pd.DataFrame, criterion: float):
    parts = []
    for kind, g in table.groupby("kind", sort=False):
        steps = g["steps_to_criterion"].dropna()
        reach = (f"reached {criterion:.0%} validation accuracy in {int(g['reached'].sum())}/{len(g)} seeds"
                 + (f" after {stats.describe(steps, '{:.0f}')} steps" if len(steps) else ""))
        parts.append(f"**{kind}** {reach}; test accuracy {stats.describe(g['test_acc'])} "
                     f"(incongruent trials {stats.describe(g['incongruent_acc'])}), "
                     f"held-out comparisons {stats.describe(g['heldout_acc'])}")
    return page.md("; ".join(parts) + " (chance is 0.5).")


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


# ------------------------------------------------------------------------------------------------ 3. CKA
def plot_cka(cka: pd.DataFrame) -> plt.Figure:
    readouts = list(dict.fromkeys(cka["tokens"]))
    fig, axes = plt.subplots(1, len(readouts), figsize=(5 * len(readouts), 3.4), sharey=True, squeeze=False)
    for ax, tokens in zip(axes[0], readouts):
        for pair, g in cka[cka["tokens"] == tokens].groupby("pair", sort=False):
            st = g.groupby("layer")["cka"].agg(["mean", "std"])
            ax.errorbar(st.index, st["mean"], yerr=st["std"], marker="o", capsize=3, label=pair,
                        c=CKA_COLOURS[pair], ls="--" if "'" in pair else "-")
        ax.set(title=READOUTS[tokens].capitalize(), xlabel="block", ylim=(0, 1.02),
               xticks=sorted(cka["layer"].unique()))
    axes[0, 0].set_ylabel("linear CKA")
    axes[0, -1].legend(fontsize=8)
    return _done(fig)


def cka_text(cka: pd.DataFrame):
    parts = []
    for tokens in dict.fromkeys(cka["tokens"]):
        m = {p: layer_means(cka, "cka", {"tokens": tokens, "pair": p}) for p in cka["pair"].unique()}
        parts.append(f"{READOUTS[tokens]}, CKA(tuned, base) averages {m['tuned vs base'].mean():.2f} over "
                     f"blocks (block by block {', '.join(f'{v:.2f}' for v in m['tuned vs base'])}) against "
                     f"{m['scratch vs base'].mean():.2f} for CKA(scratch, base); CKA(tuned, scratch) is "
                     f"{m['tuned vs scratch'].mean():.2f}, and two scratch seeds reach {m[SCRATCH_REF].mean():.2f}")
    return page.md("Mean over seeds: " + "; ".join(parts) + ".")


# ------------------------------------------------------------------------------------------------ 4-5. per block
def _bars_by_layer(df: pd.DataFrame, value: str, ylabel: str, label_fn=str) -> plt.Figure:
    st = df.groupby("layer")[value].agg(["mean", "std"])
    fig, ax = plt.subplots(figsize=(5.5, 3.2))
    ax.bar(st.index, st["mean"], yerr=st["std"].fillna(0), color=plotting.PALETTE["tuned"], capsize=3)
    ax.plot(df["layer"], df[value], "k.", ms=3)  # one dot per seed
    ax.set(xticks=st.index, xticklabels=[label_fn(v) for v in st.index], ylabel=ylabel)
    return _done(fig)


def plot_weight_change(df: pd.DataFrame) -> plt.Figure:
    return _bars_by_layer(df, "change", "‖ΔW‖ / ‖W_base‖", lambda v: "embed" if v < 0 else f"block {v}")


def plot_restore(df: pd.DataFrame) -> plt.Figure:
    return _bars_by_layer(df, "drop", "accuracy drop", lambda v: f"block {v}")


def layer_text(df: pd.DataFrame, value: str, what: str):
    m = layer_means(df[df["layer"] >= 0], value)
    return page.md(f"{what} is largest in block {int(m.idxmax())} ({m.max():.3f}) and smallest in block "
                   f"{int(m.idxmin())} ({m.min():.3f}); mean over seeds, {df['seed'].nunique()} seeds.")


# ------------------------------------------------------------------------------------------------ 6. probes
def plot_probes(probes: pd.DataFrame) -> plt.Figure:
    fig, axes = plt.subplots(1, len(TARGETS), figsize=(10, 3.2), sharey=True)
    for ax, target in zip(axes, TARGETS):
        d = probes[probes["target"] == target]
        for name, g in d.groupby("model", sort=False):
            st = g.groupby("layer")["accuracy"].agg(["mean", "std"])
            ax.errorbar(st.index, st["mean"], yerr=st["std"].fillna(0), marker="o", capsize=3, label=name,
                        c=plotting.PALETTE[name])
        ax.axhline(d["chance"].mean(), ls=":", c="k", lw=1, label="chance")
        ax.plot(*layer_means(d, "control", {"model": "base"}).reset_index().to_numpy().T, "k--", lw=0.8,
                label="shuffled labels")
        ax.set(title=f"{target}", xlabel="block", xticks=sorted(d["layer"].unique()), ylim=(0.3, 1.02))
    axes[0].set_ylabel("probe accuracy (cross-validated)")
    axes[-1].legend(fontsize=7)
    return _done(fig)


def probe_text(probes: pd.DataFrame):
    last = probes["layer"].max()
    d = probes[probes["layer"] == last].groupby(["target", "model"], sort=False)["accuracy"].mean().unstack()
    parts = [f"{t}: " + ", ".join(f"{m} {d.loc[t, m]:.2f}" for m in d.columns) for t in TARGETS]
    return page.md("Probe accuracy at the last block (mean over seeds): " + "; ".join(parts) + ".")


# ------------------------------------------------------------------------------------------------ verdict
def verdict_text(claims: list[Claim]):
    return page.md("\n".join(f"- **{c.verdict}**: {c.claim} Ours: {c.ours}."
                             + (f" ({c.reason}.)" if c.precondition else "") for c in claims))


def write_results(cfg: Config, base, runs, claims: list[Claim]) -> dict:
    return results.write("01_lin", PAPER, cfg.profile, model_sizes(base, runs), claims, precision=cfg.precision)
