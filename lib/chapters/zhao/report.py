"""The page of chapter 02_zhao: figures (returned, never shown here), tables, computed sentences (Markdown via
`page.md`) and the results record. Every figure and sentence reads the CKA estimator the verdicts read
(`claims.estimator_for`)."""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from lib import page, plotting, results, stats
from lib.chapters.zhao import claims, measure
from lib.chapters.zhao.config import Config
from lib.chapters.zhao.measure import Results
from lib.tasks import instructions as tasks_mod

LAYER_COLORS = {"shared": "#dddddd", "transition": "#f5c28a", "refinement": "#a8d5a2"}


def _done(fig):
    """Lay the figure out and close it, so the notebook shows it once: as the cell's returned value."""
    fig.tight_layout()
    plt.close(fig)
    return fig


def _mean_sd(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and sample sd over the first axis (sd 0 with one row)."""
    return x.mean(0), (x.std(0, ddof=1) if len(x) > 1 else np.zeros_like(x[0]))


def _label(res: Results, t: str) -> str:
    return f"{t}*" if t in res.held_out else t


# --------------------------------------------------------------------------- the tasks and the models
def task_table(cfg: Config, data: dict) -> pd.DataFrame:
    rows = []
    for t, d in data.items():
        ex = d.test[0]
        rows.append({"task": t, "cluster": d.spec.cluster, "kind": d.spec.kind, "source": d.spec.source,
                     "in E1": t not in cfg.held_out, "instruction": d.spec.instruction,
                     "example": f"{ex.input} → {ex.answer}", "train / test": f"{len(d.train)} / {len(d.test)}"})
    return pd.DataFrame(rows).set_index("task")


def setup_text(res: Results, cfg: Config):
    b = res.base
    tuning = (f"LoRA (rank {cfg.lora_rank}, alpha {cfg.lora_alpha:g}, on {', '.join(cfg.lora_targets)})"
              if cfg.lora_rank else "full fine-tuning of every weight")
    return page.md(
        f"Profile `{cfg.profile}`. Base E0: {b['name']}, {b['layers']} layers, d_model {b['d_model']}, "
        f"{b['parameters (M)']:.2f} M parameters, vocabulary {b['vocabulary']}. Tuning: {tuning}; "
        f"{len(res.tasks)} controls × {cfg.n_seeds} seeds at {cfg.control_steps} steps and {cfg.n_seeds} multi-task "
        f"models E1 at {cfg.e1_steps} steps, batch {cfg.batch_size}, on {len(cfg.seen)} seen tasks "
        f"(held out: {', '.join(res.held_out) or 'none'}). Computing them (when the cached artifact was made) took "
        f"{res.seconds['train']:.0f} s of training and {res.seconds['evaluate']:.0f} s of evaluation, wall time, "
        f"and {res.seconds.get('cpu', float('nan')):.0f} s of process CPU time (threads: {cfg.threads or 'default'}).")


def accuracy_table(res: Results) -> pd.DataFrame:
    """Task accuracy per model: E0, E1 (mean ± sd over seeds) and the task's own control C_t."""
    a = res.accuracy
    out = pd.DataFrame(index=pd.Index(res.tasks, name="task"))
    out["E0 (base)"] = measure.task_accuracy(res, "E0")
    for name, label in (("E1", "E1 (multi-task)"), ("C", "C_t (own task)")):
        g = a[a.model == name].groupby("task")["accuracy"]
        out[label] = [f"{m:.2f} ± {s:.2f}" for m, s in zip(g.mean()[res.tasks], g.std(ddof=1).fillna(0)[res.tasks])]
    out["in E1"] = [t not in res.held_out for t in res.tasks]
    for name, label in (("C", "C_t gain per seed"), ("E1", "E1 gain per seed")):
        gains = measure.seed_gains(res, name)
        out[label] = [" / ".join(f"{g:+.2f}" for g in row) for row in gains.to_numpy()]
    learned_c = set(measure.learned_tasks(res, claims.LEARNED_MARGIN))
    learned_e1 = set(measure.learned_tasks(res, claims.LEARNED_MARGIN, model="E1"))
    out["learned by"] = [", ".join(m for m, ok in (("C_t", t in learned_c), ("E1", t in learned_e1)) if ok) or "—"
                         for t in res.tasks]
    return out


def accuracy_text(res: Results):
    learned = measure.learned_tasks(res, claims.LEARNED_MARGIN)
    left = [t for t in res.tasks if t not in learned]
    both = claims._learned_by_both(res, res.seen)
    e1_left = [t for t in res.seen if t in learned and t not in both]
    return page.md(
        f"On the seen tasks, mean accuracy is {measure.mean_accuracy(res, 'E0', res.seen):.2f} for E0, "
        f"{measure.mean_accuracy(res, 'E1', res.seen):.2f} for E1 and {measure.mean_accuracy(res, 'C', res.seen):.2f} "
        f"for the task's own control; on the held-out tasks E1 reaches "
        f"{measure.mean_accuracy(res, 'E1', res.held_out):.2f} (E0 {measure.mean_accuracy(res, 'E0', res.held_out):.2f}). "
        f"Controls beat the base by more than {claims.LEARNED_MARGIN:g} in every seed on {len(learned)} of "
        f"{len(res.tasks)} tasks ({', '.join(learned) or 'none'}). A control that did not learn its task learned at most "
        f"the answer format: those tasks ({', '.join(left) or 'none'}) are shown in the figures but excluded from the claims. "
        f"The claims about E1 also leave out the seen tasks E1 itself did not learn in every seed "
        f"({', '.join(e1_left) or 'none'}): they read {len(both)} seen tasks ({', '.join(both) or 'none'}).")


# --------------------------------------------------------------------------- 1. similarity over layers
def heatmaps(res: Results):
    est = claims.estimator_for(res)
    fig, axes = plt.subplots(1, 2, figsize=(9, 0.32 * len(res.tasks) + 1.6), sharey=True)
    for ax, pair in zip(axes, ("E0", "E1")):
        m = res.cka[(est, pair)].mean(0)  # (tasks, layers)
        im = ax.imshow(m, vmin=0, vmax=1, cmap="viridis", aspect="auto")
        ax.set(title=f"CKA({pair}, C_t), {est}", xlabel="layer", xticks=range(res.n_layers),
               xticklabels=range(1, res.n_layers + 1), yticks=range(len(res.tasks)),
               yticklabels=[_label(res, t) for t in res.tasks])
        ax.grid(False)
        for (i, j), v in np.ndenumerate(m):
            if res.n_layers <= 12:
                ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=7, color="w" if v < 0.6 else "k")
    fig.colorbar(im, ax=axes, shrink=0.8)
    plt.close(fig)  # no tight_layout: the shared colorbar
    return fig


def cluster_figure(res: Results):
    est = claims.estimator_for(res)
    curves = {p: measure.cluster_curves(res, est, p) for p in measure.PAIRS}
    n = len(curves["E0"])
    fig, axes = plt.subplots(1, n, figsize=(2.3 * n, 2.8), sharey=True, squeeze=False)
    layers = np.arange(1, res.n_layers + 1)
    for ax, cluster in zip(axes[0], curves["E0"]):
        for pair, color in (("E0", plotting.PALETTE["base"]), ("E1", plotting.PALETTE["tuned"])):
            m, s = _mean_sd(curves[pair][cluster])
            ax.plot(layers, m, "o-", color=color, ms=3, label=f"{pair}–C_t")
            ax.fill_between(layers, m - s, m + s, color=color, alpha=0.25)
        if cluster in curves["seed"]:
            ax.plot(layers, curves["seed"][cluster].mean(0), "--", color=plotting.PALETTE["control"],
                    label="C_t–C_t'")
        ax.set(title=cluster, xlabel="layer", ylim=(0, 1.02), xticks=layers)
    axes[0, 0].set_ylabel(f"linear CKA ({est})")
    fig.legend(*axes[0, 0].get_legend_handles_labels(), loc="lower center", ncol=3, fontsize=8,
               bbox_to_anchor=(0.5, -0.08))
    return _done(fig)


def curves_text(res: Results):
    est = claims.estimator_for(res)
    e0, e1 = measure.layer_means(res, est, "E0"), measure.layer_means(res, est, "E1")
    seed = res.cka[(est, "seed")]
    ceiling = f" Two controls of the same task from different seeds agree at {seed.mean():.2f} on average." \
        if len(seed) else ""
    return page.md(
        f"Averaged over tasks and seeds ({est} CKA), CKA(E0, C_t) goes from {e0[0]:.2f} at layer 1 to {e0[-1]:.2f} "
        f"at layer {res.n_layers}; CKA(E1, C_t) from {e1[0]:.2f} to {e1[-1]:.2f}.{ceiling}")


# --------------------------------------------------------------------------- 1b. the cross-task baseline
def _claim_tasks(res: Results, names) -> list[str]:
    """The tasks among `names` that the E1 claims read: learned by their control and by E1 (all of `names` when
    none is)."""
    return claims._learned_by_both(res, names) or list(names)


def baseline_figure(res: Results):
    """Per layer, over the seen tasks whose control learned: CKA(E0, C_t), CKA(E1, C_t) and the cross-task
    baseline (mean over s != t of CKA(C_s, C_t)), mean ± sd over seeds."""
    est, idx = claims.estimator_for(res), measure.task_index(res, _claim_tasks(res, res.seen))
    layers = np.arange(1, res.n_layers + 1)
    curves = {"E0–C_t": (res.cka[(est, "E0")][:, idx].mean(1), plotting.PALETTE["base"], "o-"),
              "E1–C_t": (res.cka[(est, "E1")][:, idx].mean(1), plotting.PALETTE["tuned"], "o-"),
              "C_s–C_t, s ≠ t (cross-task baseline)": (measure.cross_baseline(res, est)[:, idx].mean(1),
                                                        plotting.PALETTE["control"], "s--")}
    fig, ax = plt.subplots(figsize=(6.5, 3))
    for label, (x, color, style) in curves.items():
        m, sd = _mean_sd(x)
        ax.plot(layers, m, style, color=color, ms=4, label=label)
        ax.fill_between(layers, m - sd, m + sd, color=color, alpha=0.2)
    ax.set(xlabel="layer", ylabel=f"linear CKA ({est})", xticks=layers, ylim=(0, 1.02))
    ax.legend(fontsize=7, loc="lower left")
    return _done(fig)


def baseline_text(res: Results):
    est, tasks = claims.estimator_for(res), _claim_tasks(res, res.seen)
    which = ("the seen tasks that both their control and E1 learned" if claims._learned_by_both(res, res.seen)
             else "the seen tasks (none learned by both its control and E1)")
    base = measure.cross_baseline(res, est)[:, measure.task_index(res, tasks)].mean(axis=(0, 1))
    net = measure.net_gain_curve(res, est, tasks).mean(1)
    gained, survived = measure.surviving_gains(res, est, tasks)
    per_seed = "; ".join(f"seed {i + 1}: {s} of {g}" for i, (g, s) in enumerate(zip(gained, survived)))
    return page.md(
        f"Every control learns the same template, loss and read-out position, so two controls of *different* tasks "
        f"already agree: on {which} ({', '.join(tasks)}), the cross-task baseline is "
        f"{base[0]:.2f} at layer 1 and {base[-1]:.2f} at layer {res.n_layers} ({est} CKA). Net of it, E1's "
        f"similarity to C_t (mean over layers) is {stats.describe(net)} over seeds. Of the tasks where E1 is closer "
        f"to C_t than E0 is, those where E1 is also closer than the other tasks' controls are, per seed: "
        f"{per_seed}.")


# --------------------------------------------------------------------------- 2. layer groups
def _group_tasks(res: Results) -> list[str]:
    """The seen tasks the layer-group rule reads (learned by their control and by E1; all seen ones if none is)."""
    return claims._learned_by_both(res, res.seen) or res.seen


def _groups(res: Results) -> tuple[np.ndarray, list[str]]:
    gains = measure.gain_curve(res, claims.estimator_for(res), _group_tasks(res))
    return gains, measure.layer_groups(gains.mean(0), claims.SHARED_BELOW, claims.REFINE_FROM)


def groups_figure(res: Results):
    gains, groups = _groups(res)
    layers = np.arange(1, res.n_layers + 1)
    fig, ax = plt.subplots(figsize=(6.5, 3))
    for i, g in enumerate(groups):
        ax.axvspan(i + 0.5, i + 1.5, color=LAYER_COLORS[g], alpha=0.6, label=g if g not in groups[:i] else None)
    for g in gains:
        ax.plot(layers, g, color=plotting.PALETTE["tuned"], lw=0.8, alpha=0.5)
    ax.plot(layers, gains.mean(0), "o-", color=plotting.PALETTE["tuned"], lw=2, label="mean over seeds")
    ax.axhline(0, color="k", lw=0.6)
    ax.set(xlabel="layer", ylabel="CKA(E1,C_t) − CKA(E0,C_t)", xticks=layers, xlim=(0.5, res.n_layers + 0.5))
    top = ax.secondary_xaxis("top", functions=(lambda x: x / res.n_layers, lambda d: d * res.n_layers))
    top.set_xlabel("relative depth")
    ax.legend(fontsize=7, loc="upper left")
    return _done(fig)


def group_table(res: Results) -> pd.DataFrame:
    """Our layer groups (from the seed-mean gain curve) beside the paper's, with relative depths."""
    _, groups = _groups(res)
    rows = []
    for name, (lo, hi) in claims.PAPER_GROUPS.items():
        ours = [i + 1 for i, g in enumerate(groups) if g == name]
        rows.append({"group": name, f"paper layers (of {claims.PAPER_LAYERS})": f"{lo}-{hi}",
                     "paper relative depth": f"{(lo - 1) / claims.PAPER_LAYERS:.2f}-{hi / claims.PAPER_LAYERS:.2f}",
                     f"our layers (of {res.n_layers})": f"{ours[0]}-{ours[-1]}" if ours else "none",
                     "our relative depth": f"{(ours[0] - 1) / res.n_layers:.2f}-{ours[-1] / res.n_layers:.2f}"
                     if ours else "-"})
    return pd.DataFrame(rows).set_index("group")


def groups_text(res: Results):
    gains, groups = _groups(res)
    per_seed = [measure.layer_groups(g, claims.SHARED_BELOW, claims.REFINE_FROM) for g in gains]
    found = " / ".join(f"{g}: " + (", ".join(str(i + 1) for i, x in enumerate(groups) if x == g) or "none")
                       for g in claims.PAPER_GROUPS)
    agree = float(np.mean([s == groups for s in per_seed]))
    paper = " / ".join(f"{lo}–{hi}" for lo, hi in claims.PAPER_GROUPS.values())
    per_task = measure.task_gains(res, claims.estimator_for(res), _group_tasks(res))
    seeds = np.mean([claims.paper_grouping(g) for g in gains])
    resampled = np.mean([claims.paper_grouping(g) for g in claims.resampled_curves(per_task)])
    return page.md(f"On {', '.join(_group_tasks(res))}, the rule finds {found} (layers of {res.n_layers}); the "
                   f"paper's groups are layers {paper} of {claims.PAPER_LAYERS}. {agree:.0%} of the seeds, each taken "
                   f"alone, give the same groups. The paper's grouping (three groups, the transition within one layer "
                   f"of its relative depth) appears in {seeds:.0%} of the seeds' curves and in {resampled:.0%} of "
                   f"{claims.RESAMPLES} bootstrap resamples of the tasks.")


# --------------------------------------------------------------------------- 3. what pre-training encodes
def encoded_figure(table: pd.DataFrame):
    fig, ax = plt.subplots(figsize=(7.5, 2.8))
    colors = [plotting.PALETTE["base"] if k == "semantic" else plotting.PALETTE["tuned"] for k in table["kind"]]
    bars = ax.bar(range(len(table)), table["E0-C_t CKA"], color=colors)
    for bar, gain in zip(bars, table["C_t gain over E0"]):
        if gain <= claims.LEARNED_MARGIN:  # the control did not beat the base: nothing task-specific to encode
            bar.set_hatch("///")
            bar.set_alpha(0.5)
    ax.set(xticks=range(len(table)), ylabel="E0–C_t CKA (mean over layers)", ylim=(0, 1))
    ax.set_xticklabels([f"{t}*" if not e else t for t, e in zip(table.index, table["in E1"])], rotation=45,
                       ha="right")
    handles = [plt.Rectangle((0, 0), 1, 1, color=plotting.PALETTE[p]) for p in ("base", "tuned")]
    handles.append(plt.Rectangle((0, 0), 1, 1, facecolor="w", edgecolor="k", hatch="///"))
    ax.legend(handles, ["semantic", "structured", f"control ≤ base + {claims.LEARNED_MARGIN:g}"], fontsize=8)
    return _done(fig)


def encoded_text(table: pd.DataFrame):
    by_kind = table.groupby("kind")["E0-C_t CKA"].mean()
    rho, lo, hi = stats.rank_correlation(table["E0-C_t CKA"], table["C_t gain over E0"])
    corr = (f"a Spearman correlation of {rho:.2f} (bootstrap {stats.LEVEL:.0%} interval [{lo:.2f}, {hi:.2f}])"
            if np.isfinite(rho) else "no defined rank correlation (one of them is the same for every task)")
    return page.md(
        f"Mean E0–C_t CKA over layers: {by_kind.get('semantic', float('nan')):.3f} for the semantic tasks and "
        f"{by_kind.get('structured', float('nan')):.3f} for the structured ones. Highest: "
        f"{', '.join(table.index[:3])}; lowest: {', '.join(table.index[-3:])}. Across tasks, the E0–C_t similarity "
        f"and how much the control gained in accuracy over the base have {corr}: a high similarity can also mean "
        f"that the control learned little, not only that pre-training already had the task.")


def probe_figure(res: Results):
    """Best-layer probe accuracy on E0's and on C_t's states per task, with the probe's chance rate."""
    table = measure.probe_table(res)
    x = np.arange(len(table))
    fig, ax = plt.subplots(figsize=(7.5, 2.8))
    ax.bar(x - 0.2, table["probe on E0"], 0.4, color=plotting.PALETTE["base"], label="probe on E0")
    ax.bar(x + 0.2, table["probe on C_t"], 0.4, color=plotting.PALETTE["tuned"], label="probe on C_t")
    ax.scatter(x, table["probe chance"], marker="_", s=200, color="k", zorder=3, label="chance (majority)")
    labels = [f"{t}{'*' if t in res.held_out else ''} ({k[:3]}, {a[:3]})"
              for t, k, a in zip(table.index, table["kind"], table["answer"])]
    ax.set(xticks=x, ylabel="probe accuracy (best layer)", ylim=(0, 1.02))
    ax.set_xticklabels(labels, rotation=45, ha="right", fontsize=7)
    ax.legend(fontsize=7)
    return _done(fig)


def probe_table(res: Results) -> pd.DataFrame:
    """`measure.probe_table` for the page: a task with no probe (no answer occurs in enough test prompts to be a
    class of the cross-validated probe, e.g. antonym, whose answer is a different word in every prompt) shows "—"."""
    return measure.probe_table(res).astype(object).where(lambda t: t.notna(), "—")


def _unprobed(res: Results) -> list[str]:
    table = measure.probe_table(res)
    return list(table.index[table["probe on E0"].isna()])


def probe_text(res: Results):
    learned = measure.learned_tasks(res, claims.LEARNED_MARGIN)
    table = measure.probe_table(res).loc[learned] if learned else measure.probe_table(res).iloc[:0]
    parts = []
    for (a, k), g in table.groupby(["answer", "kind"]):
        parts.append(f"{k} {a} tasks ({', '.join(g.index)}): {g['deficit (C_t - E0)'].mean():.3f}")
    return page.md(
        "Mean encoding deficit (probe accuracy on C_t minus on E0, best layer of each) of the tasks whose control "
        f"learned: {'; '.join(parts) or 'none'}. A deficit near 0 means the base's states already lay the answer "
        "out linearly; the claim compares kinds within one answer type only."
        + (f" No probe for {', '.join(_unprobed(res))}: no answer occurs in at least {measure.PROBE_FOLDS} test "
           "prompts, so none can be a class of the cross-validated probe." if _unprobed(res) else ""))


# --------------------------------------------------------------------------- 4. unseen tasks
def unseen_figure(res: Results):
    """CKA with each held-out task's control, E0 and E1, beside the seen-task mean; None without held-out tasks."""
    if not res.held_out:
        return None
    est = claims.estimator_for(res)
    layers = np.arange(1, res.n_layers + 1)
    panels = [(t, measure.task_index(res, [t])) for t in res.held_out]
    panels.append(("seen tasks (mean)", measure.task_index(res, res.seen)))
    fig, axes = plt.subplots(1, len(panels), figsize=(2.8 * len(panels), 2.8), sharey=True, squeeze=False)
    for ax, (title, idx) in zip(axes[0], panels):
        for pair, color in (("E0", plotting.PALETTE["base"]), ("E1", plotting.PALETTE["tuned"])):
            m, s = _mean_sd(res.cka[(est, pair)][:, idx].mean(1))
            ax.plot(layers, m, "o-", color=color, ms=3, label=f"{pair}–C_t")
            ax.fill_between(layers, m - s, m + s, color=color, alpha=0.25)
        ax.set(title=title, xlabel="layer", xticks=layers, ylim=(0, 1.02))
    axes[0, 0].set_ylabel(f"linear CKA ({est})")
    axes[0, 0].legend(fontsize=7)
    return _done(fig)


def unseen_text(res: Results):
    if not res.held_out:
        return page.md("*No task is held out in this configuration.*")
    est = claims.estimator_for(res)
    unseen, seen = measure.mean_gain(res, est, res.held_out), measure.mean_gain(res, est, res.seen)
    net_u, net_s = (measure.net_gain_curve(res, est, ts).mean(1) for ts in (res.held_out, res.seen))
    clusters = sorted({tasks_mod.SPECS[t].cluster for t in res.held_out})
    return page.md(
        f"Held out: the {', '.join(clusters)} cluster(s) ({', '.join(res.held_out)}). Mean gain over layers of E1 "
        f"over E0 in CKA with the controls ({est}, every task): {stats.describe(unseen)} on the held-out tasks "
        f"against {stats.describe(seen)} on the seen ones; net of the cross-task baseline: {stats.describe(net_u)} "
        f"against {stats.describe(net_s)}.")


# --------------------------------------------------------------------------- estimators and the verdict
def estimator_text(res: Results, cl):
    flips = [c.id for c in cl if c.extra.get("flips_between_estimators")]
    ratio = res.n_test / res.base["d_model"]
    return page.md(
        f"Here n = {res.n_test} test prompts per task against d = {res.base['d_model']} dimensions (n/d = "
        f"{ratio:.1f}), so the verdicts read the **{claims.estimator_for(res)}** estimator (the biased one only when "
        f"n/d ≥ {claims.BIASED_MIN_RATIO}). Verdicts that change with the other estimator: "
        f"{', '.join(flips) or 'none'}.")


def models_record(res: Results, cfg: Config) -> dict:
    tuning = f"LoRA r={cfg.lora_rank} alpha={cfg.lora_alpha} on {', '.join(cfg.lora_targets)}" if cfg.lora_rank \
        else "full fine-tuning"
    return {"E0": res.base, "C_t": {"count": len(res.tasks) * cfg.n_seeds, "tuning": tuning, "steps": cfg.control_steps},
            "E1": {"count": cfg.n_seeds, "tuning": tuning, "steps": cfg.e1_steps, "tasks": list(cfg.seen)}}


def write_results(res: Results, cfg: Config, cl) -> dict:
    """results/02_zhao.json, for the scorecard."""
    return results.write("02_zhao", claims.PAPER, cfg.profile, models_record(res, cfg), cl, precision=cfg.precision,
                         estimator=claims.estimator_for(res))
