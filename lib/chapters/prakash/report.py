"""Chapter 3's page material: tables, figures (returned, never shown here), computed sentences (Markdown) and the
results record. Numbers in prose come from the measured tables; an undefined value reads "not defined (why)"."""
from __future__ import annotations

from functools import partial

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from lib import models, page, results
from lib.chapters.prakash import claims as C
from lib.chapters.prakash.build import TaskData
from lib.chapters.prakash.config import GROUPS, TUNED, Config
from lib.hooks import model_spec
from lib.tasks import entities as E

fmt2 = partial(C.shown, fmt="{:.2f}")


def _close(fig):
    fig.tight_layout()
    plt.close(fig)  # the notebook displays the returned figure once
    return fig


# ------------------------------------------------------------------------------------------------ the models
def size_text(pre, data: TaskData, cfg: Config):
    spec = model_spec(pre.model)
    ex = E.prompt(data.vocab, data.boxes["test"], 0) + E.answers(data.vocab, data.boxes["test"])[0]
    enc = data.enc["test"]
    T = enc["input_ids"].shape[1]
    seg = int(enc["label_pos"][1] - enc["label_pos"][0]) if cfg.n_boxes > 1 else None
    return page.md(
        f"Profile `{cfg.profile}`; starting model: {pre.source}: {spec.n_layers} layers × {spec.n_heads} heads "
        f"({spec.n_layers * spec.n_heads} heads in all; d_model {spec.d_model}), "
        f"{models.n_params(pre.model) / 1e6:.2f} M parameters; base and tuned models share this architecture. "
        f"{len(data.vocab.objects)} objects and {len(data.vocab.labels)} labels are single tokens for its tokenizer; "
        f"a {cfg.n_boxes}-box prompt is {T} tokens, a segment {seg} tokens (the paper's Llama: 7), the query label at "
        f"position last − {int(enc['last'] - enc['query_pos'])} (Llama: last − 2). Example: `{ex}`")


def accuracy_summary(acc: pd.DataFrame, restricted: pd.DataFrame | None = None) -> pd.DataFrame:
    rows = {}
    for name, g in acc.groupby("model", sort=False):
        rows[name] = {"model": "base" if name == "base" else TUNED[name], "test accuracy (ours)": fmt2(g["accuracy"])}
        if restricted is not None:
            r = restricted[restricted["model"] == name]["restricted accuracy"]
            rows[name]["restricted to the prompt's objects"] = fmt2(r)
        rows[name]["paper"] = C.PAPER_ACC.get(name, "—")
    return pd.DataFrame(rows).T


def accuracy_text(acc: pd.DataFrame, answers: pd.DataFrame, cfg: Config):
    parts = [f"**{n}** {C.shown(g, '{:.3f}')}" for n, g in acc.groupby("model", sort=False)["accuracy"]]
    diffs = [f"{k} − base {C.shown(C.paired_gain(acc, k), '{:.3f}')}" for k in cfg.tuned]
    gap = C.binding_gap(answers)
    seeds = sorted(acc["seed"].unique())
    bound = [s for s, g in zip(seeds, gap) if C.binds(g)]
    gaps = ", ".join(f"seed {s} {g:.2f}" for s, g in zip(seeds, gap))
    warn = (f" Binding gap (accuracy − query-blind baseline, below) per seed: {gaps}; the circuit claims read the "
            f"seeds at {C.BIND_MIN} or more: " + (", ".join(map(str, bound)) or "none") + ".")
    if not C.BINDS.met(len(bound)):
        warn += (f" **Fewer than {C.BINDS.at_least:.0f} seeds bind the query to its box**, so the circuit claims are "
                 f"judged not testable at this scale (the analyses below then describe models without the mechanism).")
    return page.md(f"Test accuracy on {cfg.test_size} {cfg.n_boxes}-box prompts (chance among the boxes 1/{cfg.n_boxes}"
                   f" = {1 / cfg.n_boxes:.2f}): " + "; ".join(parts) + ". Paired by seed: " + "; ".join(diffs) + "."
                   + warn)


def training_text(runs: dict, seconds: float):
    """How long the models took to make (when they were trained) or load (this run)."""
    base = [ms["base"].metrics.get("compute_seconds") for ms in runs.values()]
    made = [t.metrics.get("compute_seconds", 0) for ms in runs.values() for t in ms.values()]
    trained = (f"Training a base took {', '.join(f'{b:.0f}' for b in base)} s of wall time (per seed, in its own "
               f"process; other training may have shared the cores); every model "
               if all(b is not None for b in base) else "Every model ")
    return page.md(f"{trained}took {sum(made):.0f} s of wall time in all when it was made (this run: {seconds:.0f} s to train "
                   f"or load them).")


def plot_base_curves(curves: pd.DataFrame, cfg: Config):
    """The base's validation accuracy (n_boxes boxes) at each check, per seed, with the curriculum's switch marked."""
    fig, ax = plt.subplots(figsize=(6, 3))
    for s, d in curves.groupby("seed"):
        ax.plot(d["step"], d["val_acc"], marker=".", label=f"seed {s}")
    ax.axvline(cfg.base_easy_steps, color="0.5", ls=":", label="2-3 boxes only before this step")
    ax.axhline(1 / cfg.n_boxes, color="0.7", ls="--", label=f"chance (1/{cfg.n_boxes})")
    ax.set(xlabel="training step", ylabel=f"{cfg.n_boxes}-box val accuracy", ylim=(-0.02, 1.02))
    ax.legend(fontsize=7)
    return _close(fig)


def tuning_summary(runs: dict) -> pd.DataFrame:
    """Each fine-tune's accuracy on its own objective (held-out prompts), before and after: did the fine-tune happen?"""
    rows = []
    for name in [k for k in next(iter(runs.values())) if k != "base"]:
        m = [ms[name].metrics for ms in runs.values()]
        if not m[0] or "objective_acc" not in m[0]:
            continue
        rows.append({"fine-tune": name, "what": TUNED[name],
                     "own objective, before": fmt2([x["objective_acc_before"] for x in m]),
                     "own objective, after": fmt2([x["objective_acc"] for x in m])})
    return pd.DataFrame(rows)


def induction_summary(ind: pd.DataFrame) -> pd.DataFrame:
    return ind.groupby("model", sort=False)[["induction score"]].agg(fmt2)


def box_curve_summary(curve: pd.DataFrame) -> pd.DataFrame:
    """models x boxes: mean ± sd over seeds, and the chance row."""
    table = curve.groupby(["model", "boxes"], sort=False)["accuracy"].agg(fmt2).unstack("boxes")
    table.loc["chance (1 / boxes)"] = curve.drop_duplicates("boxes").set_index("boxes")["chance"].map("{:.2f}".format)
    return table.rename(columns=lambda nb: f"{nb} boxes")


def answer_profile_summary(prof: pd.DataFrame) -> pd.DataFrame:
    cols = [c for c in prof.columns if c not in ("seed", "model")]
    return prof.groupby("model", sort=False)[cols].agg(fmt2)


def answer_profile_text(prof: pd.DataFrame):
    """One sentence per model: does it copy from the prompt, and does it bind (accuracy above the query-blind rate)?"""
    parts = []
    for name, g in prof.groupby("model", sort=False):
        gap = float((g["accuracy"] - g["query-blind baseline"]).mean())
        kind = ("it binds the query to its box" if C.binds(gap) else
                f"it binds only weakly (a gap under the {C.BIND_MIN} the circuit claims need)" if gap > C.MARGIN
                else "it mostly copies an object from the prompt, without binding it to the queried box"
                if g["in context"].mean() > 0.5 else "most answers are not the prompt's objects")
        parts.append(f"**{name}** names one of the prompt's objects in {fmt2(g['in context'])} of prompts; accuracy "
                     f"{fmt2(g['accuracy'])} against {fmt2(g['query-blind baseline'])} for a query-blind choice with "
                     f"the same box shares: {kind}")
    return page.md("; ".join(parts) + ".")


# ------------------------------------------------------------------------------------------------ circuits
def circuit_table(found: dict) -> pd.DataFrame:
    """One row per (seed, model), one column per group: the heads as 'L<layer>H<head>'."""
    rows = [{"seed": s, "model": name, "group": g, "heads": ", ".join(f"L{L}H{h}" for L, h in heads) or "—"}
            for (s, name), (circuit, _) in found.items() for g, heads in circuit.items()]
    return pd.DataFrame(rows).pivot(index=["seed", "model"], columns="group", values="heads")[list(GROUPS)]


def circuit_text(found: dict, cfg: Config):
    """How many circuits kept fewer heads than asked, per group, and how many had no room for the next stage: a
    stage's senders act on its receivers' inputs, so they must sit in lower layers; receivers all in layer 0 leave
    none (PD acts on PT's values, SR on PD's)."""
    n, layers = len(found), next(iter(found.values()))[1]["VF"].shape[0]
    short = {g: sum(len(c[g]) < cfg.heads(name)[i] for (_, name), (c, _) in found.items())
             for i, g in enumerate(GROUPS)}
    empty = {g: sum(not c[g] for c, _ in found.values()) for g in GROUPS}
    floor = {nxt: sum(bool(c[g]) and max(L for L, _ in c[g]) == 0 for c, _ in found.values())
             for g, nxt in (("PT", "PD"), ("PD", "SR"))}
    return page.md(
        f"Of the {n} circuits (seeds × models), a group kept fewer heads than asked (only heads whose patch *lowers* "
        f"p(answer) are kept) in: " + ", ".join(f"{g} {short[g]}" for g in GROUPS) + "; it was empty in: "
        + ", ".join(f"{g} {empty[g]}" for g in GROUPS) + ". A stage's heads must sit below the heads they act on: "
        f"the PT heads were all in layer 0 in {floor['PD']} circuits (no head can reach their values, so no PD head), "
        f"the PD heads in {floor['SR']}. The paper's chain of four groups spans Llama-7B's 32 layers; these models "
        f"have {layers}.")


def plot_scores(found: dict, seed: int, names: list[str]):
    fig, axes = plt.subplots(len(names), 4, figsize=(10, 2.2 * len(names)), squeeze=False)
    for row, name in zip(axes, names):
        circuit, scores = found[seed, name]
        for ax, g in zip(row, GROUPS):
            s = scores[g].numpy()
            lim = max(abs(s).max(), 1e-6)
            ax.imshow(s, cmap="RdBu", vmin=-lim, vmax=lim, aspect="auto")
            for L, h in circuit[g]:
                ax.add_patch(plt.Rectangle((h - 0.5, L - 0.5), 1, 1, fill=False, ec="k", lw=2))
            ax.set(title=f"{name}: {g}", xlabel="head", ylabel="layer", xticks=range(s.shape[1]),
                   yticks=range(s.shape[0]))
    return _close(fig)


def sweep_text(cost, pre, cfg: Config):
    spec = model_spec(pre.model)
    return page.md(f"Batched sweep over {spec.n_layers * spec.n_heads} heads on {cfg.pp_size} prompts: "
                   f"{cost.sweep_s:.3f} s against {cost.lower_bound_s:.3f} s for the forward passes alone, a ratio of "
                   f"{cost.ratio:.2f} in wall time and {cost.cpu_ratio:.2f} in CPU time (shared 2-core machine: wall "
                   f"times are noisy).")


def faithfulness_summary(faith: pd.DataFrame, n_heads: int | None = None) -> pd.DataFrame:
    rows = []
    for (name, which), g in faith.groupby(["model", "circuit"], sort=False):
        paper = C.PAPER_FAITH.get(name) if which == "base" else None
        share = (f"{g['n_heads'].mean():.3g} of {n_heads} ({g['n_heads'].mean() / n_heads:.0%})"
                 if n_heads and "n_heads" in g else "—")
        rows.append({"model": name, "circuit of": which, "circuit heads": share,
                     **{c: fmt2(g[k], why=w) for c, k, w in (
                         ("model acc", "model_acc", ""), ("circuit acc", "circuit_acc", ""),
                         ("faithfulness", "faithfulness", "model accuracy 0"), ("random circuit", "random_acc", ""))},
                     "paper (model / circuit / faith. / random)": " / ".join(map(str, paper)) if paper else "—"})
    return pd.DataFrame(rows)


def faithfulness_text(faith: pd.DataFrame):
    parts = [f"the {which} circuit inside **{name}**: faithfulness {fmt2(g['faithfulness'], why='model accuracy 0')}"
             f" (random circuits of the same size {fmt2(g['random_acc'])} accuracy)"
             for (name, which), g in faith.groupby(["model", "circuit"], sort=False)]
    base = faith[(faith["model"] == "base") & (faith["circuit"] == "base")].set_index("seed")["model_acc"]
    beats = []
    for name, g in faith[(faith["model"] != "base") & (faith["circuit"] == "base")].groupby("model", sort=False):
        diff = g.set_index("seed")["circuit_acc"] - base
        beats.append(f"{name} {C.shown(diff.to_numpy(), '{:+.2f}')}")
    strongest = ("" if not beats else " The paper's strongest evidence that fine-tuning *enhances* the base mechanism "
                 "is that the base circuit alone, inside the tuned model, beats the whole base model; here, base "
                 "circuit in the tuned model − whole base model, paired by seed: " + "; ".join(beats) + ".")
    return page.md("Mean over seeds: " + "; ".join(parts) + "." + strongest)


def overlap_summary(ov: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for (name, g), d in ov.groupby(["model", "group"], sort=False):
        rows.append({"model": name, "group": g, "overlap (seed by seed)": ", ".join(
            f"{o}/{b}" for o, b in zip(d["overlap"], d["base"])),
            "precision": fmt2(d["precision"], why="no base heads in the group"),
            "recall": fmt2(d["recall"], why="no tuned heads in the group"),
            "other seeds' base circuits (null)": fmt2(d["null_precision"], why="one seed, or no base heads"),
            "chance precision": f"{d['chance'].mean():.2f}",
            "paper (Llama in FLoat): precision / recall": " / ".join(map(str, C.PAPER_OVERLAP[g]))})
    return pd.DataFrame(rows)


def dcm_summary(dcm: pd.DataFrame, model: str = "base") -> pd.DataFrame:
    rows = []
    for g, dg in dcm[dcm["model"] == model].groupby("group", sort=False):
        row = {"group": g}
        for kind in E.DESIDERATA:
            dk = dg[dg["desideratum"] == kind]
            row[f"{kind} % (ours)"] = C.shown(dk["target_pct"], "{:.1f}")
            row[f"{kind} lift"] = C.shown(dk["lift"], "{:+.1f}")
            row[f"{kind} heads"] = f"{dk['selected'].mean():.1f}/{dk['of'].mean():.0f}"
        row["paper % (positional / object / box label)"] = " / ".join(map(str, C.PAPER_DCM[g]))
        rows.append(row)
    return pd.DataFrame(rows)


def plot_dcm(dcm: pd.DataFrame):
    names = list(dict.fromkeys(dcm["model"]))
    fig, axes = plt.subplots(1, max(len(names), 1), figsize=(4 * max(len(names), 1), 3.2), sharey=True, squeeze=False)
    for ax, name in zip(axes[0], names):
        d = dcm[dcm["model"] == name].groupby(["group", "desideratum"], sort=False)["target_pct"].agg(["mean", "std"])
        groups = list(dict.fromkeys(d.index.get_level_values(0)))
        x = np.arange(len(groups))
        for j, kind in enumerate(E.DESIDERATA):
            vals = [d.loc[(g, kind)] if (g, kind) in d.index else pd.Series({"mean": 0, "std": 0}) for g in groups]
            ax.bar(x + 0.27 * (j - 1), [v["mean"] for v in vals], 0.27, yerr=[np.nan_to_num(v["std"]) for v in vals],
                   capsize=2, label=kind)
        ax.set(xticks=x, xticklabels=groups, title=f"{name} (base circuit)", ylabel="% outputs = target")
    if names:  # no DCM rows when the base circuit has no heads at all
        axes[0, -1].legend(fontsize=8)
    return _close(fig)


def cmap_summary(cm: pd.DataFrame) -> pd.DataFrame:
    rows = [{"tuned": name, "patched into base": label, "accuracy": fmt2(d["accuracy"]), "base": fmt2(d["base_acc"]),
             "tuned model": fmt2(d["tuned_acc"]),
             "paper (Goat -> Llama; 0.66 -> 0.82)": C.PAPER_CMAP[label] if name == C.CMAP_MODEL else "—"}
            for (name, label), d in cm.groupby(["model", "patched"], sort=False)]
    return pd.DataFrame(rows)


def plot_knockout(ko: pd.DataFrame):
    names = list(dict.fromkeys(ko["model"]))
    fig, axes = plt.subplots(1, len(names), figsize=(4 * len(names), 3.2), sharey=True, squeeze=False)
    for ax, name in zip(axes[0], names):
        for label, d in ko[ko["model"] == name].groupby("knockout", sort=False):
            st = d.groupby("from_layer")["accuracy"].agg(["mean", "std"])
            ax.errorbar(st.index, st["mean"], yerr=st["std"].fillna(0), marker="o", capsize=2, label=label,
                        ls="--" if "control" in label else "-")
        ax.set(title=name, xlabel="knocked out in layers k .. last (k)", ylabel="accuracy", ylim=(-0.02, 1.02))
    axes[0, -1].legend(fontsize=7)
    return _close(fig)


def knockout_text(ko: pd.DataFrame):
    d = ko[(ko["from_layer"] == 0) & (ko["model"] == "base")].groupby("knockout", sort=False)["accuracy"].mean()
    full = ko[(ko["model"] == "base") & (ko["from_layer"] == ko["from_layer"].max())]["accuracy"].mean()
    return page.md(f"Base, knocked out in every layer (full accuracy {full:.2f}): " +
                   "; ".join(f"{k} {v:.2f}" for k, v in d.items()) + " (mean over seeds).")


# ------------------------------------------------------------------------------------------------ verdicts, record
def verdict_text(claims: list):
    return page.md("\n".join(f"- **{c.verdict}**: {c.claim} Ours: {c.ours}. ({c.reason}.)" for c in claims))


def model_sizes(pre, runs: dict, cfg: Config) -> dict:
    spec = model_spec(pre.model)
    info = {"layers": spec.n_layers, "d_model": spec.d_model, "heads": spec.n_heads,
            "params": models.n_params(pre.model), "source": pre.source}
    return {name: {**info, "seeds": len(runs)} for name in cfg.model_names()}


def write_results(cfg: Config, pre, runs: dict, claims: list, cost=None) -> dict:
    # "time" in the key: tests/test_notebooks.py leaves timings out of its determinism check
    extra = {"sweep_time_ratio": cost.ratio, "sweep_cpu_time_ratio": cost.cpu_ratio} if cost is not None else {}
    return results.write("03_prakash", C.PAPER, cfg.profile, model_sizes(pre, runs, cfg), claims, **extra,
                         precision=cfg.precision)
