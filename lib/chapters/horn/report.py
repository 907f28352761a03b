"""What the 05_horn page shows: figures (each function returns a matplotlib Figure), tables, the sentences with
computed numbers (Markdown via lib.page.md) and the results record. No numerics beyond formatting: those are in
`measure`, the verdicts in `claims`."""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from lib import models, page, plotting, results, stats

from lib.chapters.horn import measure
from lib.chapters.horn.build import DOMAINS, MODELS
from lib.chapters.horn.claims import MATCH, PAPER, RULES
from lib.chapters.horn.measure import CATEGORIES, CONTROL, CROSS, EDGES

COLOURS = {"base": plotting.PALETTE["base"], "stories": plotting.PALETTE["stories"], "lua": plotting.PALETTE["lua"],
           "merged": "#8172b3", "base@next": "#937860"}
DATA_OF = {"base": "English + Python (00_base_models)", "stories": "base, fine-tuned on fortunes (stories)",
           "lua": "base, fine-tuned on Lua sources", "merged": "SLERP(lua, stories, t)"}


def _done(fig: Figure) -> Figure:
    """Lay out and detach from pyplot, so the notebook shows the returned figure exactly once."""
    fig.tight_layout()
    plt.close(fig)
    return fig


def edge_label(a: str, b: str) -> str:
    if (a, b) == CONTROL:
        return "control: base → base, other SAE seed"
    return f"{a} → {b.removesuffix('@next')}" + (", other SAE seed" if b.endswith("@next") else "")


# --------------------------------------------------------------------------- the four models, interpolation
def models_table(ms: dict, acc: dict, cfg) -> pd.DataFrame:
    rows = []
    for name, m in ms.items():
        row = {"model": name, "what": DATA_OF[name].replace("t)", f"t={cfg.merge_t})"),
               "parameters (M)": models.n_params(m.model) / 1e6}
        row.update({f"accuracy on {d} (val)": acc["models"][name][d] for d in DOMAINS})
        rows.append(row)
    return pd.DataFrame(rows).set_index("model").round(3)


def models_text(ms: dict, acc: dict, cfg) -> page.Markdown:
    arch, a = ms["base"].model.config, acc["models"]
    return page.md(
        f"Profile `{cfg.profile}`: every model has one layer, d_model = {arch.hidden_size}, d_mlp = "
        f"{arch.intermediate_size}, {arch.num_attention_heads} heads, a {arch.vocab_size}-token vocabulary and "
        f"{models.n_params(ms['base'].model) / 1e6:.2f} M parameters. Fine-tuning on stories raises next-token "
        f"accuracy there from {a['base']['stories']:.3f} to {a['stories']['stories']:.3f}, on Lua from "
        f"{a['base']['lua']:.3f} to {a['lua']['lua']:.3f}; the merge reaches {a['merged']['stories']:.3f} on stories "
        f"and {a['merged']['lua']:.3f} on Lua.")


def plot_sweep(acc: dict, cfg) -> Figure:
    sweep = pd.DataFrame(acc["sweep"])
    fig, ax = plt.subplots(figsize=(6.5, 3.4))
    for d in ("stories", "lua", "base"):
        ax.plot(sweep["t"], sweep[d], "o-", c=COLOURS[d], label=f"{d} validation")
        ax.axhline(acc["models"]["base"][d], c=COLOURS[d], ls=":", lw=1)
    ax.axvline(cfg.merge_t, c="k", ls="--", lw=1, label=f"merge (t={cfg.merge_t})")
    ax.set(xlabel="SLERP t (0 = lua fine-tune, 1 = stories fine-tune)", ylabel="next-token accuracy")
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1, 0.5))
    return _done(fig)


def sweep_text(acc: dict) -> page.Markdown:
    sweep = pd.DataFrame(acc["sweep"]).set_index("t")
    return page.md(
        f"From t = 0 to t = 1, stories accuracy goes {sweep['stories'].iloc[0]:.3f} → {sweep['stories'].iloc[-1]:.3f} "
        f"and Lua accuracy {sweep['lua'].iloc[0]:.3f} → {sweep['lua'].iloc[-1]:.3f}; base-data accuracy stays between "
        f"{sweep['base'].min():.3f} and {sweep['base'].max():.3f} (base model: {acc['models']['base']['base']:.3f}).")


# --------------------------------------------------------------------------- SAEs
def sae_table(saes: dict[int, dict]) -> pd.DataFrame:
    rows = []
    for name in MODELS:
        ms = [saes[i][name][1] for i in saes]
        rows.append({"model": name, "features": ms[0]["d_sae"], "FVE": stats.describe([m["fve"] for m in ms]),
                     "loss recovered": stats.describe([m["loss_recovered"] for m in ms]),
                     "L0 (features/token)": stats.describe([m["l0"] for m in ms], "{:.1f}"),
                     "dead (%)": stats.describe([100 * m["dead_share"] for m in ms], "{:.1f}")})
    return pd.DataFrame(rows).set_index("model")


def sae_text(saes: dict[int, dict], cfg) -> page.Markdown:
    fve = [saes[i][n][1]["fve"] for i in saes for n in MODELS]
    rec = [saes[i][n][1]["loss_recovered"] for i in saes for n in MODELS]
    return page.md(f"{len(saes)} seeds × 4 models: FVE {min(fve):.2f}–{max(fve):.2f}, loss recovered "
                   f"{min(rec):.2f}–{max(rec):.2f}, with {saes[0]['base'][1]['d_sae']} features ({cfg.sae_expansion}× "
                   f"d_mlp; the paper used 16×).")


# --------------------------------------------------------------------------- persistence
def flow_table(comps: list[dict]) -> pd.DataFrame:
    """Persisting / disappearing / emerging shares at r >= MATCH per edge, mean ± sd over seeds."""
    df, rows = measure.flow_shares(comps, MATCH), []
    for edge, g in df.groupby(["parent", "child"], sort=False):
        row = {"edge": edge_label(*edge)}
        for k in ("persisting", "disappearing", "emerging"):
            row[f"{k} (%)"] = stats.describe(100 * g[k], "{:.1f}")
        row["alive parent / child"] = f"{g['n_parent'].mean():.0f} / {g['n_child'].mean():.0f}"
        rows.append(row)
    return pd.DataFrame(rows).set_index("edge")


def _band(ax, x0, x1, y0, y1, colour, alpha):
    """A smooth ribbon from the interval y0 = (lo, hi) at x0 to y1 at x1."""
    u = np.linspace(0, 1, 60)
    s = 3 * u**2 - 2 * u**3
    ax.fill_between(x0 + (x1 - x0) * u, y0[0] + (y1[0] - y0[0]) * s, y0[1] + (y1[1] - y0[1]) * s,
                    color=colour, alpha=alpha, lw=0)


def plot_flow(comp: dict) -> Figure:
    """Sankey-style flow of features along the four edges at r >= MATCH: parent bar (persisting | disappearing) on
    the left, child bar (matched | emerging) on the right; heights proportional to alive features."""
    fig, axes = plt.subplots(1, len(EDGES), figsize=(12, 3.4))
    for ax, (a, b) in zip(axes, EDGES):
        f = measure.flow(comp, a, b, MATCH)
        sh, n_a, n_b = f.shares(), f.n_parent, f.n_child
        P, M = len(f.persisting), len(f.matched)
        D, E, sc, w = n_a - P, n_b - M, 1 / max(n_a, n_b, 1), 0.06
        ax.add_patch(Rectangle((0, 1 - P * sc), w, P * sc, color=COLOURS[a]))
        ax.add_patch(Rectangle((0, 1 - (P + D) * sc), w, D * sc, color="0.6"))
        ax.add_patch(Rectangle((1 - w, 1 - M * sc), w, M * sc, color=COLOURS[b]))
        ax.add_patch(Rectangle((1 - w, 1 - (M + E) * sc), w, E * sc, color=COLOURS[b], alpha=0.45))
        _band(ax, w, 1 - w, (1 - P * sc, 1), (1 - M * sc, 1), COLOURS[a], 0.5)
        mid_d, mid_e = 1 - (P + D / 2) * sc, 1 - (M + E / 2) * sc
        _band(ax, w, 0.45, (1 - (P + D) * sc, 1 - P * sc), (mid_d, mid_d), "0.6", 0.35)
        _band(ax, 0.55, 1 - w, (mid_e, mid_e), (1 - (M + E) * sc, 1 - M * sc), COLOURS[b], 0.25)
        ax.text(0.5, 1.02, f"persist {sh['persisting']:.0%}", ha="center", fontsize=8)
        ax.text(0.3, mid_d, f"disappear\n{sh['disappearing']:.0%}", ha="center", va="center", fontsize=8)
        ax.text(0.72, mid_e, f"emerge\n{sh['emerging']:.0%}", ha="center", va="center", fontsize=8)
        ax.set(xlim=(-0.02, 1.02), ylim=(min(1 - (P + D) * sc, 1 - (M + E) * sc) - 0.02, 1.1))
        ax.set_title(f"{a} ({n_a}) → {b} ({n_b})", fontsize=9)
        ax.axis("off")
    return _done(fig)


def plot_threshold(comps: list[dict]) -> Figure:
    """Persisting share against the correlation threshold, mean over seeds with a min-max band."""
    grid = np.round(np.arange(0.3, 0.96, 0.05), 2)
    df = measure.threshold_sweep(comps, grid)
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.3), sharey=True)
    for ax, edges, title in ((axes[0], EDGES, "parent and child SAE: same seed (paper)"),
                             (axes[1], CROSS, "child SAE: another seed")):
        for a, b in (*edges, CONTROL):
            vals = df[(df["parent"] == a) & (df["child"] == b)].pivot(index="seed", columns="threshold", values="persisting").to_numpy()
            domain = b.removesuffix("@next") if a == "base" else a  # colour by the fine-tuning domain involved
            style = (dict(c="k", ls="--") if (a, b) == CONTROL
                     else dict(c=COLOURS[domain], ls="-" if a == "base" else "-."))
            label = "control: same model" if (a, b) == CONTROL else edge_label(a, b).split(",")[0]
            ax.plot(grid, vals.mean(0), label=label, **style)
            ax.fill_between(grid, vals.min(0), vals.max(0), color=style["c"], alpha=0.12, lw=0)
        ax.axvline(MATCH, c="0.4", lw=1, ls=":")
        ax.set(xlabel="correlation threshold", title=title, ylim=(0, 1))
    axes[0].set_ylabel("persisting share of parent features")
    axes[1].legend(fontsize=8, loc="center left", bbox_to_anchor=(1, 0.5))
    return _done(fig)


def persistence_text(comps: list[dict]) -> page.Markdown:
    """The page's sentences on persistence along the edges against the two references."""
    per_seed = measure.persistence(comps, MATCH)
    pers, cross = np.mean(per_seed), np.mean(measure.persistence(comps, MATCH, CROSS))
    ctrl = np.mean(measure.persistence(comps, MATCH, [CONTROL]))
    return page.md(
        f"At r ≥ {MATCH}, on average {100 * pers:.1f} % of parent features persist along an edge when parent and "
        f"child SAEs share their seed, as in the paper (per seed: {', '.join(f'{100 * p:.1f} %' for p in per_seed)}), "
        f"and {100 * cross:.1f} % when the child's SAE comes from another seed. But two SAEs of the *same* base model "
        f"that differ only in their seed share just {100 * ctrl:.1f} % of their features. So re-training the SAE "
        f"alone already loses {100 * (1 - ctrl):.0f} % of the features; fine-tuning or merging removes "
        f"{100 * max(0.0, 1 - cross / ctrl) if ctrl else 0:.0f} % of those that survive re-seeding.")


# --------------------------------------------------------------------------- what persists
def plot_categories(comps: list[dict]) -> Figure:
    mean, sd = measure.category_shares(comps, MATCH)
    fig, ax = plt.subplots(figsize=(7.5, 3.2))
    x, width = np.arange(len(CATEGORIES)), 0.27
    for k, (fate, colour) in enumerate((("persisting", "#4c72b0"), ("disappearing", "0.6"), ("emerging", "#dd8452"))):
        ax.bar(x + (k - 1) * width, mean[fate], width, yerr=sd[fate], color=colour, label=fate, capsize=2)
    ax.set_xticks(x, CATEGORIES, fontsize=8)
    ax.set(ylabel="share of features")
    ax.legend(fontsize=8)
    return _done(fig)


def categories_text(comps: list[dict]) -> page.Markdown:
    mean, _ = measure.category_shares(comps, MATCH)
    gap = measure.generic_gap(comps, MATCH)
    punct = mean.loc["punctuation/whitespace"]
    return page.md(f"Punctuation/whitespace features make up {100 * punct['persisting']:.0f} % of persisting and "
                   f"{100 * punct['disappearing']:.0f} % of disappearing features (difference per seed: "
                   f"{', '.join(f'{g:+.2f}' for g in gap)}).")


def _snippet(text: tuple, ids: np.ndarray, pos: int, ctx: int) -> str:
    start = pos // ctx * ctx
    piece = lambda a, b: "".join(text[t] for t in ids[a:b])  # noqa: E731
    s = piece(max(start, pos - 8), pos) + "⟦" + text[ids[pos]] + "⟧" + piece(pos + 1, min(start + ctx, pos + 3))
    return s.replace("\n", "⏎").replace("|", "¦")


def contexts(comp: dict, tokenizer, name: str, j: int, ctx: int, n: int = 3) -> str:
    """The top-n activating contexts of feature j of `name`, the token in ⟦ ⟧ (newlines as ⏎)."""
    text, ids = measure.vocab_text(tokenizer), comp["ids"].reshape(-1)
    idx, val = comp[f"{name}__top_idx"][:, j], comp[f"{name}__top_val"][:, j]
    return "  ·  ".join(f"{_snippet(text, ids, int(p), ctx)} ({v:.2g})" for p, v in zip(idx[:n], val[:n]) if v > 0)


def contexts_table(comp: dict, tokenizer, cfg, n: int = 3) -> pd.DataFrame:
    rows = []
    for j, role in measure.example_features(comp, n):
        cat = comp["base__category"][j]
        rows.append({"base feature": j, "role": role, "category": CATEGORIES[cat] if cat >= 0 else "dead",
                     "best r in stories": round(float(comp["base__stories__row_max"][j]), 2),
                     "best r in lua": round(float(comp["base__lua__row_max"][j]), 2),
                     "top contexts (activation)": contexts(comp, tokenizer, "base", j, cfg.sae_ctx)})
    return pd.DataFrame(rows).set_index("base feature")


# --------------------------------------------------------------------------- case studies
def case_table(comps: list[dict], kind: str) -> pd.DataFrame:
    """The base feature most selective for `kind` and its best match in each model, over seeds."""
    df, rows = measure.case_study(comps, kind), []
    for name in MODELS:
        g = df[df["model"] == name]
        rows.append({"model": name, "matched feature (seed 0)": int(g["feature"].iloc[0]),
                     "r with the base feature": stats.describe(g["r"]),
                     "selectivity of the match": stats.describe(g["selectivity"]),
                     "most selective feature of the model": stats.describe(g["best_selectivity"])})
    return pd.DataFrame(rows).set_index("model")


def case_text(comps: list[dict]) -> page.Markdown:
    r = {k: measure.case_study(comps, k).groupby("model", sort=False)["r"].mean() for k in measure.CASES}
    r_a, r_e = r["assign"], r["except"]
    weakest = min(r_a["stories"], r_a["lua"], r_a["merged"])
    if r_e["stories"] >= MATCH > r_e["lua"]:
        verdict = "it has no match in Lua but one in stories, as the paper's story suggests."
    elif max(r_e["stories"], r_e["lua"]) < MATCH:
        verdict = ("it has no match in Lua, but none in stories either, so at this scale the loss is not specific to "
                   "the Lua fine-tune.")
    else:
        verdict = "it keeps a match in Lua."
    return page.md(
        f"The assignment feature's best partners correlate at {r_a['stories']:.2f} (stories), {r_a['lua']:.2f} (lua) "
        f"and {r_a['merged']:.2f} (merged), {'all' if weakest >= MATCH else 'not all'} at or above the threshold of "
        f"{MATCH}. The exception feature's best Lua partner correlates at {r_e['lua']:.2f}, its best stories partner "
        f"at {r_e['stories']:.2f}: " + verdict)


# --------------------------------------------------------------------------- scale, results record
def scale_text(ms: dict, saes: dict, cfg) -> page.Markdown:
    return page.md(
        f"Scale here: {models.n_params(ms['base'].model) / 1e6:.2f} M parameters against about 35 M in the paper; "
        f"{saes[0]['base'][1]['d_sae']} SAE features ({cfg.sae_expansion}× d_mlp) trained for {cfg.sae_steps} steps "
        f"of {cfg.sae_batch_size} activations against 16,384 features; {cfg.compare_tokens} comparison tokens against "
        f"120,000 (5,000 × 24); {cfg.n_seeds} SAE seeds, "
        f"{'one fine-tune per seed' if cfg.finetune_seeds else 'one fine-tuning seed'}.")


def write_results(claims_: list, ms: dict, saes: dict, cfg) -> dict:
    sizes = {name: {"n_params": models.n_params(m.model), "d_model": m.model.config.hidden_size,
                    "d_mlp": m.model.config.intermediate_size, "d_sae": saes[0][name][1]["d_sae"]}
             for name, m in ms.items()}
    return results.write("05_horn", PAPER, cfg.profile, sizes, claims_, rules={r.id: r.text() for r in RULES},
                         n_seeds=cfg.n_seeds, precision=cfg.precision)
