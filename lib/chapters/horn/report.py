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
from lib.chapters.horn.claims import (DEAD_MAX, FLOW_CONSISTENCY, FLOW_SIMILARITY, FVE_MIN, LOSS_RECOVERED_MIN, MATCH,
                                      PAPER, PAPER_FAMILIES, PROFILE_MATCH, RULES, SAE_QUALITY, THRESHOLDS, sae_gates)
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
    linear = pd.DataFrame(acc["sweep_linear"])
    for d in ("stories", "lua", "base"):
        ax.plot(sweep["t"], sweep[d], "o-", c=COLOURS[d], label=f"{d} validation (SLERP)")
        ax.plot(linear["t"], linear[d], "x", c=COLOURS[d], ms=7, label=f"{d}, linear interpolation")
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
def sae_text(saes: dict[int, dict], cfg) -> page.Markdown:
    fve = [saes[i][n][1]["fve"] for i in saes for n in MODELS]
    rec = [saes[i][n][1]["loss_recovered"] for i in saes for n in MODELS]
    return page.md(f"{len(saes)} seeds × 4 models: FVE {min(fve):.2f}–{max(fve):.2f}, loss recovered "
                   f"{min(rec):.2f}–{max(rec):.2f}, with {sae_size(saes, cfg)}; {sae_kind_text(cfg)}.")


def sae_size(saes: dict, cfg) -> str:
    """'2048 features (2× d_mlp; the paper used 16×)' from the trained SAEs (d_mlp from the config's source)."""
    d_sae, d_mlp = saes[0]["base"][1]["d_sae"], saes[0]["base"][1].get("d_in")
    ratio = f"{d_sae / d_mlp:g}× d_mlp" if d_mlp else (f"{cfg.sae_expansion}× d_mlp" if not cfg.sae_features else "")
    return f"{d_sae} features ({ratio + '; ' if ratio else ''}the paper used 16×)"


def sae_kind_text(cfg) -> str:
    if cfg.sae_kind == "topk":
        return (f"TopK SAEs (Gao et al. 2024): each token keeps its {cfg.sae_k} largest features, so L0 ≤ {cfg.sae_k} "
                f"by construction and no L1 penalty is tuned; the paper's SAEs are ReLU with an L1 penalty")
    return f"ReLU SAEs with an L1 penalty of {cfg.sae_l1:g}, as the paper's"


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
        f"{sae_size(saes, cfg).replace(' features', ' SAE features', 1)} trained for {cfg.sae_steps} steps "
        f"of {cfg.sae_batch_size} activations; {cfg.compare_tokens} comparison tokens against "
        f"120,000 (5,000 × 24); {cfg.n_seeds} SAE seeds, "
        f"{'one fine-tune per seed' if cfg.finetune_seeds else 'one fine-tuning seed'}.")


def write_results(claims_: list, ms: dict, saes: dict, cfg) -> dict:
    sizes = {name: {"n_params": models.n_params(m.model), "d_model": m.model.config.hidden_size,
                    "d_mlp": m.model.config.intermediate_size, "d_sae": saes[0][name][1]["d_sae"]}
             for name, m in ms.items()}
    return results.write("05_horn", PAPER, cfg.profile, sizes, claims_, rules={r.id: r.text() for r in RULES},
                         n_seeds=cfg.n_seeds, precision=cfg.precision)


# --------------------------------------------------------------------------- SAE quality as a precondition
def sae_quality_table(quality: pd.DataFrame) -> pd.DataFrame:
    """Per model, over seeds: FVE, loss recovered, dead share and L0, and whether the worst seed meets each floor."""
    rows = []
    for name, g in quality.groupby("model", sort=False):
        rows.append({"model": name, "FVE": stats.describe(g["fve"]),
                     f"FVE ≥ {FVE_MIN}": "yes" if g["fve"].min() >= FVE_MIN else "no",
                     "loss recovered": stats.describe(g["loss_recovered"]),
                     f"loss recovered ≥ {LOSS_RECOVERED_MIN}": "yes" if g["loss_recovered"].min() >= LOSS_RECOVERED_MIN
                     else "no",
                     "dead (%)": stats.describe(100 * g["dead_share"], "{:.1f}"),
                     f"dead ≤ {DEAD_MAX:.0%}": "yes" if g["dead_share"].max() <= DEAD_MAX else "no",
                     "L0 (features/token)": stats.describe(g["l0"], "{:.1f}")})
    return pd.DataFrame(rows).set_index("model")


def sae_quality_text(quality: pd.DataFrame) -> page.Markdown:
    m = sae_gates(quality)
    failed = [r.text() for r in SAE_QUALITY if not r.met(m[r.key])]
    verdict = ("Every SAE meets the three floors, so SAE quality gates no claim here."
               if not failed else "Missed: " + "; ".join(failed) + ". Every feature claim is therefore not testable "
               "at this scale.")
    return page.md(f"The floors (constants of `claims.py`): FVE ≥ {FVE_MIN}, loss recovered ≥ {LOSS_RECOVERED_MIN}, "
                   f"dead share ≤ {DEAD_MAX:.0%}, each read at the worst SAE of the chapter (measured: FVE "
                   f"{m['sae_fve_min']:.2f}, loss recovered {m['sae_loss_recovered_min']:.2f}, dead share "
                   f"{m['sae_dead_max']:.1%}). " + verdict)


# --------------------------------------------------------------------------- the three matchers
MATCHER_NAMES = {"position": f"position-level Pearson r ≥ {MATCH} (this page's verdicts)",
                 "profile": f"token-profile Pearson r ≥ {PROFILE_MATCH} (paper's correlation.py)",
                 "flow": f"flow: L1 similarity {FLOW_SIMILARITY}, consistency {FLOW_CONSISTENCY} (paper's flow data)"}


def matcher_table(comps: list[dict]) -> pd.DataFrame:
    """Persisting / disappearing / emerging shares under each matcher, per edge group, mean ± sd over seeds."""
    df, rows = measure.matcher_shares(comps, THRESHOLDS, FLOW_CONSISTENCY), []
    for (matcher, group), g in df.groupby(["matcher", "edges"], sort=False):
        rows.append({"matcher": MATCHER_NAMES[matcher], "edges": group,
                     **{f"{k} (%)": stats.describe(100 * g[k], "{:.1f}")
                        for k in ("persisting", "disappearing", "emerging")}})
    return pd.DataFrame(rows).set_index(["matcher", "edges"])


def families_table(comps: list[dict]) -> pd.DataFrame:
    """The paper's released flow-data counts beside ours (flow matcher, base into stories, lua and merged)."""
    df = measure.paper_families(comps, FLOW_SIMILARITY, FLOW_CONSISTENCY)
    rows = []
    for k in ("families", "with stories partner", "with merge partner", "whole chains"):
        rows.append({"base features": k, "paper (count)": PAPER_FAMILIES[k],
                     "paper (% of features)": round(100 * PAPER_FAMILIES[k] / PAPER_FAMILIES["features"], 2),
                     "ours (count)": stats.describe(df[k], "{:.0f}"),
                     "ours (% of features)": stats.describe(100 * df[k] / df["features"], "{:.2f}")})
    return pd.DataFrame(rows).set_index("base features")


def families_text(comps: list[dict]) -> page.Markdown:
    df = measure.paper_families(comps, FLOW_SIMILARITY, FLOW_CONSISTENCY)
    ctrl = measure.persistence(comps, FLOW_SIMILARITY, [CONTROL], "flow", FLOW_CONSISTENCY)
    paper = measure.persistence(comps, FLOW_SIMILARITY, EDGES, "flow", FLOW_CONSISTENCY)
    floor = min(float(np.min(c["base__stories__flow_dist0"], initial=np.inf)) for c in comps)
    return page.md(
        f"Under the flow matcher {100 * np.mean(df['families'] / df['features']):.1f} % of our base features are in "
        f"a family ({PAPER_FAMILIES['families']} of {PAPER_FAMILIES['features']:,}, "
        f"{100 * PAPER_FAMILIES['families'] / PAPER_FAMILIES['features']:.1f} %, in the paper's released data). The "
        f"same matcher finds a partner for {100 * np.mean(ctrl):.1f} % of base features in a second SAE of the *same* "
        f"model and {100 * np.mean(paper):.1f} % along the four edges. By its definition a feature can only join a "
        f"family if it is a candidate in the first {measure_ctx(comps)}-token sample, that is if it fires there with a "
        f"total activation below about the similarity {FLOW_SIMILARITY}. The averaged distance has a floor besides: "
        f"the child's normalised code summed over the sample's tokens, divided by the dictionary size, which shrinks "
        f"with the paper's 16,384 features. Here the smallest first-sample distance of any base feature is "
        f"{floor:.3f} (base → stories, lowest seed), so the count depends on the units of the activations, the "
        f"dictionary size and that one sample as much as on shared features.")


def measure_ctx(comps: list[dict]) -> int:
    return int(comps[0]["ids"].shape[1])


GRIDS = {"position": np.round(np.arange(0.3, 0.96, 0.05), 2), "profile": np.round(np.arange(0.3, 0.96, 0.05), 2),
         "flow": np.round(np.geomspace(0.005, measure.FLOW_MAX_SIMILARITY, 14), 4)}


def plot_matchers(comps: list[dict]) -> Figure:
    """Persisting share against each matcher's threshold: the paper's protocol, independent SAE seeds and the
    same-model control (mean over seeds, band: min to max)."""
    df = measure.matcher_sweep(comps, GRIDS, FLOW_CONSISTENCY)
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.4), sharey=True)
    styles = {"paper protocol": dict(c=COLOURS["stories"], ls="-"),
              "independent seeds": dict(c=COLOURS["lua"], ls="-."),
              "control: same model": dict(c="k", ls="--")}
    for ax, matcher in zip(axes, measure.MATCHERS):
        for group, style in styles.items():
            g = df[(df["matcher"] == matcher) & (df["edges"] == group)]
            vals = g.pivot(index="seed", columns="threshold", values="persisting")
            ax.plot(vals.columns, vals.mean(0), label=group, **style)
            ax.fill_between(vals.columns, vals.min(0), vals.max(0), color=style["c"], alpha=0.12, lw=0)
        ax.axvline(THRESHOLDS[matcher], c="0.4", lw=1, ls=":")
        title = {"position": "position-level Pearson r", "profile": "token-profile Pearson r (paper's code)",
                 "flow": f"flow matcher, consistency {FLOW_CONSISTENCY} (paper's code)"}[matcher]
        ax.set(title=title, ylim=(0, 1),
               xlabel="similarity (L1, log scale)" if matcher == "flow" else "correlation threshold")
        if matcher == "flow":
            ax.set_xscale("log")
    axes[0].set_ylabel("persisting share of parent features")
    axes[-1].legend(fontsize=8, loc="center left", bbox_to_anchor=(1, 0.5))
    return _done(fig)


# --------------------------------------------------------------------------- the multi-stage Sankey
def _split(hit_1: np.ndarray, hit_2: np.ndarray) -> list[int]:
    """Sizes of the four segments of a column, top to bottom: only 1, both, only 2, neither (boolean masks)."""
    return [int((hit_1 & ~hit_2).sum()), int((hit_1 & hit_2).sum()), int((~hit_1 & hit_2).sum()),
            int((~hit_1 & ~hit_2).sum())]


def plot_sankey(comp: dict) -> Figure:
    """Features from base through the two fine-tunes to the merge (position matcher at r ≥ MATCH, one seed), as the
    paper's Figure 2: each column stacks a model's alive features, ribbons carry matched features along the four
    edges; base and merged columns are split by which of the two fine-tunes they match (grey: neither, i.e. base
    features that disappear in both, merged features that emerge)."""
    alive = {m: comp[f"{m}__alive"].astype(bool) for m in MODELS}
    n = {m: int(alive[m].sum()) for m in MODELS}
    x = {"base": 0.0, "stories": 1.0, "lua": 1.0, "merged": 2.0}
    gap = 0.04 * max(n.values())
    sc = 0.9 / max(n["base"], n["stories"] + n["lua"] + gap, n["merged"])
    top = {"base": 1.0, "stories": 1.0, "lua": 1.0 - (n["stories"] + gap) * sc, "merged": 1.0}
    w = 0.05
    fig, ax = plt.subplots(figsize=(10, 4.8))
    fl = {e: measure.flow(comp, *e, MATCH) for e in EDGES}

    def hit(idx, size):
        out = np.zeros(size, bool)
        out[idx] = True
        return out

    # base: split by persisting into stories / lua; merged: by being matched from stories / lua
    base_seg = _split(hit(fl["base", "stories"].persisting, len(alive["base"]))[alive["base"]],
                      hit(fl["base", "lua"].persisting, len(alive["base"]))[alive["base"]])
    merged_seg = _split(hit(fl["stories", "merged"].matched, len(alive["merged"]))[alive["merged"]],
                        hit(fl["lua", "merged"].matched, len(alive["merged"]))[alive["merged"]])
    for m, seg, colours in (("base", base_seg, (COLOURS["stories"], "#6a8f9a", COLOURS["lua"], "0.7")),
                            ("merged", merged_seg, (COLOURS["stories"], "#6a8f9a", COLOURS["lua"], "0.7"))):
        y = top[m]
        for size, c in zip(seg, colours):
            ax.add_patch(Rectangle((x[m] - w / 2, y - size * sc), w, size * sc, color=c))
            y -= size * sc
    for m in ("stories", "lua"):
        ax.add_patch(Rectangle((x[m] - w / 2, top[m] - n[m] * sc), w, n[m] * sc, color=COLOURS[m]))
    for m in MODELS:
        ax.text(x[m], top[m] + 0.015, f"{m} ({n[m]})", ha="center", fontsize=9)

    def span(column_top, seg, first, last):  # vertical span of segments first..last of a split column
        hi = column_top - sum(seg[:first]) * sc
        return hi - sum(seg[first:last + 1]) * sc, hi

    ribbons = {("base", "stories"): (span(1.0, base_seg, 0, 1), None),
               ("base", "lua"): (span(1.0, base_seg, 1, 2), None),
               ("stories", "merged"): (None, span(1.0, merged_seg, 0, 1)),
               ("lua", "merged"): (None, span(1.0, merged_seg, 1, 2))}
    for (a, b), (src, dst) in ribbons.items():
        f = fl[a, b]
        src = src or (top[a] - len(f.persisting) * sc, top[a])  # fine-tune side: its persisting features, on top
        dst = dst or (top[b] - len(f.matched) * sc, top[b])  # fine-tune side: the features base features match
        _band(ax, x[a] + w / 2, x[b] - w / 2, src, dst, COLOURS[b if a == "base" else a], 0.4)
        ax.text((x[a] + x[b]) / 2, (src[0] + src[1] + dst[0] + dst[1]) / 4,
                f"{len(f.persisting)} persist ({f.shares()['persisting']:.0%})", ha="center", va="center", fontsize=7)
    ax.text(x["base"] - w, top["base"] - (sum(base_seg[:3]) + base_seg[3] / 2) * sc,
            f"{base_seg[3]} match\nneither fine-tune", ha="right", va="center", fontsize=8)
    ax.text(x["merged"] + w, top["merged"] - (sum(merged_seg[:3]) + merged_seg[3] / 2) * sc,
            f"{merged_seg[3]} emerge\nin the merge", ha="left", va="center", fontsize=8)
    ax.set(xlim=(-0.5, 2.5), ylim=(min(top[m] - n[m] * sc for m in MODELS) - 0.05, 1.08))
    ax.axis("off")
    return _done(fig)


# --------------------------------------------------------------------------- the assignment feature
def plot_assign_pairwise(comps: list[dict]) -> Figure:
    """Pairwise Pearson r of the assignment feature and its best partner in each model (one panel per seed)."""
    fig, axes = plt.subplots(1, len(comps), figsize=(3.4 * len(comps), 3.2), squeeze=False)
    for ax, (i, c) in zip(axes[0], enumerate(comps)):
        r = c["case__assign__pairwise"]
        ax.imshow(r, vmin=0, vmax=1, cmap="viridis")
        labels = [f"{m}\n#{j}" for m, j in zip(MODELS, c["case__assign__match"])]
        ax.set_xticks(range(len(MODELS)), labels, fontsize=7)
        ax.set_yticks(range(len(MODELS)), labels, fontsize=7)
        for (u, v), val in np.ndenumerate(r):
            ax.text(v, u, f"{val:.2f}", ha="center", va="center", fontsize=7, c="w" if val < 0.6 else "k")
        ax.set_title(f"SAE seed {i}", fontsize=9)
    return _done(fig)


# --------------------------------------------------------------------------- SLERP against the straight line
def shape_table(acc: dict) -> pd.DataFrame:
    """Per domain and path (SLERP, linear): end points and the curve's distance above its chord."""
    rows = []
    for path, key in (("SLERP", "sweep"), ("linear", "sweep_linear")):
        df = pd.DataFrame(acc[key]).sort_values("t")
        for d in ("stories", "lua", "base"):
            shape = measure.curve_shape(acc[key], d)
            rows.append({"domain": d, "path": path, "t = 0": df[d].iloc[0], "t = 1": df[d].iloc[-1],
                         "mean above chord": shape["mean_above_chord"], "max above chord": shape["max_above_chord"]})
    out = pd.DataFrame(rows).set_index(["domain", "path"]).round(4)
    gap = [abs(a[d] - b[d]) for a, b in zip(acc["sweep"], acc["sweep_linear"]) for d in ("stories", "lua", "base")]
    out.attrs["largest SLERP - linear gap"] = max(gap)
    return out


def shape_text(acc: dict) -> page.Markdown:
    table = shape_table(acc)
    bows = table["mean above chord"]
    return page.md(
        f"SLERP and the straight line differ by at most {table.attrs['largest SLERP - linear gap']:.4f} in accuracy at "
        f"any t and domain. Above the chord, SLERP's curves sit on average {bows.loc[('stories', 'SLERP')]:+.4f} "
        f"(stories) and {bows.loc[('lua', 'SLERP')]:+.4f} (Lua); a concave curve like the paper's would be clearly "
        f"positive, a near-linear one near 0.")
