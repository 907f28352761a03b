"""What chapter 4's page shows: figures (returned, never shown here), tables, computed sentences (Markdown from
the measured values: the page types no number) and the results record."""
from __future__ import annotations

import matplotlib.pyplot as plt
from matplotlib.ticker import NullFormatter
import numpy as np
import pandas as pd

from lib import models, page, plotting, results
from lib.chapters.tzach import build
from lib.chapters.tzach.claims import MIN_KEPT, MIN_LOSS_GAP, PAPER_APT
from lib.chapters.tzach.config import CHAPTER, PAPER
from lib.chapters.tzach.measure import MIN_OCCURRENCES, block_summary

NOT_LOCAL = "*Not run in the `local` profile (see the extension section).*"


def _done(fig):
    """Lay out and close a figure (so it is displayed once, as the cell's value), and return it."""
    fig.tight_layout()
    plt.close(fig)
    return fig


def _n_params(model) -> float:
    return models.n_params(model) / 1e6


def models_table(s: build.Setup, ws: pd.DataFrame | None = None):
    if s.base is None:
        return page.md(NOT_LOCAL)
    c = s.base.config
    arch = {"layers": c.num_hidden_layers, "d_model": c.hidden_size, "heads": c.num_attention_heads,
            "vocab": c.vocab_size, "parameters (M)": _n_params(s.base)}
    rows = [{"model": name, "role": "pre-trained masked LM", **arch, "pre-training rows": s.memo.get("n_pretrain_rows")}
            for name in ("base", *s.replicas)] + [
        {"model": "control", "role": "same architecture, random init", **arch, "pre-training rows": 0}]
    if ws is not None:
        for (f, r, st), _ in ws.groupby(["fraction", "rows", "steps"]):
            rows.append({"model": f"W_S × {f:g}" + (f", {st} steps" if (ws["fraction"] == f).sum() > 1 else ""),
                         "role": f"pre-trained here, {st} steps", **arch,
                         "pre-training rows": r})
    return pd.DataFrame(rows).set_index("model").round(3)


# ------------------------------------------------------------------------------------------------ figures
def frequency_figure(fa: dict | None):
    if fa is None:
        return page.md(NOT_LOCAL)
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 3.6))
    t = fa["types"].query("freq > 0").sort_values("freq")
    a1.scatter(t["freq"], t["apt"], s=4, alpha=0.3, label="token type (base)")
    a1.scatter(t["freq"], t["control"], s=4, alpha=0.3, marker="x", color=plotting.PALETTE["control"],
               label="token type (control)")
    a1.plot(t["freq"], t["unigram"], "k:", label="unigram predictor, p(t)")
    for (name, b), ls in zip(fa["bins"].items(), (":", "--", "-")):
        a2.plot(np.sqrt(b["bin_lo"] * b["bin_hi"]), b["mean_apt"], ls, marker="o", ms=3, label=name)
    if t.empty:
        a1.text(0.5, 0.5, f"no token type selected ≥ {MIN_OCCURRENCES} times", ha="center", transform=a1.transAxes)
    for ax, title, shown in ((a1, "final head, per token type", not t.empty),
                             (a2, "mean APT per frequency bin", bool(fa["bins"]))):
        ax.set(xlabel="frequency in the pre-training rows", ylabel="APT", title=title)
        if shown:
            ax.set_xscale("log")
            ax.legend(fontsize=8)
    return _done(fig)


def blocks_figure(res, n_layers_paper: int = 6):
    if res is None:
        return page.md(NOT_LOCAL)
    summ = block_summary(res)
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for ax, col in zip(axes, ("mean_apt_mask", "mean_apt_all")):
        for (m, r), g in summ.groupby(["model", "readout"]):
            color = plotting.PALETTE["control" if m == "control" else "base"]
            ax.plot(g["block"], g[col], ("-" if r == "probe" else "--") + ("s" if m == "control" else "o"), ms=4,
                    color=color, alpha=1.0 if m in ("base", "control") else 0.5,
                    label=f"{m}, {'tuned head' if r == 'probe' else 'logit lens'}")
        ax.set(xlabel="block (0 = embeddings)", ylabel="⟨APT⟩",
               title="[MASK] positions (headline)" if col == "mean_apt_mask" else "all selected positions")
    if summ["block"].max() == n_layers_paper:
        axes[0].plot(list(PAPER_APT), list(PAPER_APT.values()), "k*", ms=10, label="paper (Table 1)")
    axes[0].legend(fontsize=8)
    return _done(fig)


def ws_figure(ws: pd.DataFrame | None):
    if ws is None:
        return page.md(NOT_LOCAL)
    g, extra = _split_ws(ws)
    fig, ax = plt.subplots(figsize=(6, 3.4))
    for col, fmt in (("mean_apt", "-o"), ("apt_top", "--s")):
        ax.plot(g["rows"], g[col], fmt, label="⟨APT⟩" if col == "mean_apt" else "APT(k), k most frequent")
    if len(extra):  # off the ladder: the base's steps on fewer rows (the top axis does not apply to them)
        ax.plot(extra["rows"], extra["mean_apt"], "^", color="C3", ms=8,
                label=f"⟨APT⟩ at the base's {int(extra['steps'].iloc[0])} steps (several epochs)")
    ax.set(xscale="log", xlabel="pre-training rows W_S", ylabel="APT (final head)", title="APT against W_S")
    k = _tokens_per_row(g)
    if k is not None:  # one epoch at every size: the same sweep is a compute ladder, read on the top axis
        top = ax.secondary_xaxis("top", functions=(lambda r: r * k, lambda t: t / k))
        top.set_xlabel("tokens processed (compute)")
        top.set_xticks(g["rows"] * k, [f"{t / 1e6:.2g}M" for t in g["rows"] * k])
        top.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xticks(g["rows"], [f"{int(r):,}" for r in g["rows"]])  # the sizes themselves: log minor labels collide
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.legend(fontsize=8)
    return _done(fig)


def _split_ws(ws: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(the sweep, the extra `same_steps` models beside a `same_epochs` sweep), each sorted by rows."""
    ws = ws.sort_values("rows")
    if "protocol" not in ws or ws["protocol"].nunique() < 2:
        return ws, ws.iloc[:0]
    extra = ws["protocol"] == "same_steps"
    return ws[~extra], ws[extra]


def _tokens_per_row(w: pd.DataFrame) -> float | None:
    """Tokens processed per pre-training row when every size of the sweep shares it (within 5 %), else None."""
    if "tokens" not in w or not w["tokens"].notna().all():
        return None
    ratio = (w["tokens"] / w["rows"]).to_numpy(float)
    return float(ratio.mean()) if np.ptp(ratio) <= 0.05 * ratio.mean() else None


def clusters_figure(cl: pd.DataFrame | None, final: dict | None):
    if cl is None:
        return page.md(NOT_LOCAL)
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.4))
    hist = final["size_histogram"] if final else {}
    axes[0].bar(list(hist), list(hist.values()), width=0.8, color=plotting.PALETTE["base"])
    axes[0].set(xlabel="cluster size (tokens)", ylabel="clusters", title="strong-match clusters, final head")
    axes[0].xaxis.get_major_locator().set_params(integer=True)
    for (m, r), g in cl.groupby(["model", "readout"]):
        fmt = ("-" if r == "probe" else "--") + ("s" if m == "control" else "o")
        color = plotting.PALETTE["control" if m == "control" else "base"]
        alpha = 1.0 if m in ("base", "control") else 0.5  # further pre-trained copies: lighter
        axes[1].plot(g["block"], g["n_kept"], fmt, color=color, alpha=alpha, label=f"{m}, {r}")
        ok = g["n_kept"] >= MIN_KEPT
        axes[2].plot(g["block"][ok], g["concentration"][ok], fmt, color=color, alpha=alpha, label=f"{m}, {r}")
    axes[1].set(xlabel="block", ylabel="token types", yscale="symlog", title="diagonal is the row maximum")
    axes[2].set(xlabel="block", ylabel="share of confusions", title="confusions on a cluster partner")
    axes[1].legend(fontsize=8)
    return _done(fig)


def finetune_figure(fin: dict | None):
    if fin is None:
        return page.md(NOT_LOCAL)
    tab = fin["table"]
    fig, axes = plt.subplots(1, tab["task"].nunique(), figsize=(10, 3.4), squeeze=False)
    for ax, (task, g) in zip(axes[0], tab.groupby("task")):
        for m, gm in g.groupby("model"):
            agg = gm.groupby("block")["accuracy"]
            ax.errorbar(agg.mean().index, agg.mean(), yerr=agg.std().fillna(0), fmt="-o", ms=4, capsize=2,
                        color=plotting.PALETTE.get(m, "k"), label=m)
        ax.axhline(g["chance"].iloc[0], color="k", ls=":", lw=1, label="chance")
        ax.set(xlabel="block", ylabel="test accuracy", title=f"{task} task")
        ax.legend(fontsize=8)
    return _done(fig)


def confidence_figure(conf: dict | None):
    if conf is None:
        return page.md(NOT_LOCAL)
    fig, axes = plt.subplots(1, len(conf), figsize=(10, 3.4), squeeze=False)
    for ax, (task, c) in zip(axes[0], conf.items()):
        ax.scatter(c["mean_apt"], c["confidence"], s=6, alpha=0.4, color=plotting.PALETTE["tuned"])
        ax.set(xlabel="mean APT of the input's tokens", ylabel="classifier confidence (max prob.)",
               title=f"{task}: Spearman {c['spearman']:.2f}")
    return _done(fig)


def local_figure(df: pd.DataFrame | None):
    if df is None:
        return page.md("*The causal-LM extension runs in the `local` profile only.*")
    fig, ax = plt.subplots(figsize=(6, 3.4))
    ax.plot(df["block"], df["mean_apt"], "-o", label="⟨APT⟩")
    ax.plot(df["block"], df["accuracy"], "--s", label="accuracy (position-weighted)")
    ax.set(xlabel="layer", ylabel="next-token APT (logit lens)", title="packaged causal LM")
    ax.legend(fontsize=8)
    return _done(fig)


def cluster_examples(s: build.Setup, final: dict | None, n: int = 12):
    """The largest strong-match clusters of the final head, decoded (a note when there are none)."""
    if s.base is None:
        return page.md("")
    if not final or not final["clusters"]:
        return page.md("*No strong-match cluster at the final head.*")
    return pd.DataFrame([{"size": len(c), "tokens": " · ".join(s.tok.convert_ids_to_tokens(c.tolist()))}
                         for c in final["clusters"][:n]])


# -------------------------------------------------------------------------------------- computed prose
def _fmt(m: float, sd: float) -> str:
    return f"{m:.3f} ± {sd:.3f}"


def text_profile(s: build.Setup):
    if s.base is None:
        return page.md(f"Profile `{s.cfg.profile}`: causal-LM extension with `{s.cfg.local_model}`.")
    c = s.base.config
    kind = "pre-LN (RoBERTa-PreLayerNorm)" if c.model_type == "roberta-prelayernorm" else "post-LN BERT"
    return page.md(f"Profile `{s.cfg.profile}`: {1 + len(s.replicas)} pre-trained masked LM(s) from {s.source}, "
                   f"{kind} with {c.num_hidden_layers} blocks, d_model {c.hidden_size}, {c.num_attention_heads} "
                   f"heads, vocabulary {c.vocab_size}, {_n_params(s.base):.2f} M parameters each; {s.cfg.n_seeds} "
                   f"mask draws of the held-out windows.")


def training_table(s: build.Setup, gaps: pd.DataFrame | None) -> pd.DataFrame | None:
    """One row per pre-trained model: how it was trained (the study's bases) and its held-out loss check."""
    if gaps is None:
        return None
    spec, rows = s.spec, []
    for g in gaps.to_dict("records"):
        t = s.memo.get("trained", {}).get(g["model"]) or {}
        arch = t.get("arch", {})
        rows.append({"model": g["model"], "blocks": arch.get("family", s.source),
                     "steps": spec.bert_steps if t else None, "batch": spec.bert_batch_size if t else None,
                     "mask rate": spec.bert_mask_rate if t else None, "tokens processed": t.get("tokens_seen"),
                     "epochs": t.get("epochs"), "train wall s": t.get("train_seconds"),
                     "tokens/s": t.get("tokens_per_s"), "held-out loss": g["val_loss"],
                     "unigram loss": g["unigram_loss"], "gap (nats)": g["gap"]})
    return pd.DataFrame(rows).round(3)


def text_training(s: build.Setup, gaps: pd.DataFrame | None):
    if gaps is None:
        return page.md("")
    least = gaps.loc[gaps["gap"].idxmin()]
    ok = least["gap"] >= MIN_LOSS_GAP
    return page.md(
        f"Held-out masked-LM loss on {int(gaps['n_targets'].iloc[0])} selected tokens (15 %, one fixed draw): the "
        f"least-trained pre-trained model, `{least['model']}`, is {abs(least['gap']):.2f} nats "
        f"{'below' if least['gap'] >= 0 else 'above'} the unigram predictor ({least['val_loss']:.2f} against "
        f"{least['unigram_loss']:.2f}). The APT claims need a loss "
        f"{MIN_LOSS_GAP} nats below the unigram's in every model (`claims.MIN_LOSS_GAP`): "
        + ("met, so the APT structure below belongs to models that have learned more than token frequencies."
           if ok else "**not met**, so every APT claim below is *not testable at this scale*: a model this close to "
           "the frequency plateau recovers few masked tokens from their context, and the structure of its APT says "
           "little about a pre-trained BERT's. The figures are still shown. `bert_steps` on the base-models page sets "
           "how long the BERTs train (the cost grows in proportion)."))


def text_frequency(s: build.Setup, fa: dict | None):
    if fa is None:
        return page.md("")
    lo, hi = fa["rho_ci"]
    t = fa["types"]
    return page.md(
        f"On {fa['n_positions']} held-out [MASK] positions (the mask draws pooled), {fa['n_types']} token types are "
        f"selected at least {MIN_OCCURRENCES} times; over them the base's own head reaches ⟨APT⟩ = "
        f"{fa['mean_apt']:.3f} and APT({s.cfg.apt_top_k}) = {fa['apt_top']:.3f} (position-weighted accuracy "
        f"{fa['accuracy']:.3f}; the paper's unrestricted mean over every type seen, once or more, would be "
        f"{fa['mean_apt_all_types']:.3f}). The control averages {t['control'].mean() if len(t) else 0:.3f} "
        f"over the same types and the unigram predictor {t['unigram'].mean() if len(t) else 0:.3f}. APT against "
        f"frequency has Spearman ρ = {fa['rho']:.2f} (95 % bootstrap interval [{lo:.2f}, {hi:.2f}]); the rule reads "
        f"the excess over those baselines, not ρ itself.")


def text_blocks(s: build.Setup, res):
    if res is None:
        return page.md("")
    summ = block_summary(res).query("model == 'base'").set_index(["readout", "block"])
    L, m, a = s.n_layers, summ["mean_apt_mask"], summ["mean_apt_all"]
    n = summ["n_types"]["probe"][L]
    return page.md(
        f"Over {s.memo['n_eval_windows']} held-out windows, {s.cfg.n_seeds} mask draws pooled "
        f"({int(summ['n_positions']['probe'][L])} [MASK] positions; ⟨APT⟩ over the {int(n)} types selected ≥ "
        f"{MIN_OCCURRENCES} times there). Base, tuned head, [MASK] positions (the headline): ⟨APT⟩ "
        f"{m['probe'][0]:.3f} at block 0 → {m['probe'][L]:.3f} after block {L}; logit lens {m['lens'][0]:.3f} → "
        f"{m['lens'][L]:.3f}. Over all selected positions, where the 10 % shown unchanged can simply be copied: "
        f"tuned head {a['probe'][0]:.3f} → {a['probe'][L]:.3f}, lens {a['lens'][0]:.3f} → {a['lens'][L]:.3f}. "
        f"The paper reports {PAPER_APT[0]} → {PAPER_APT[6]}; the absolute values are not comparable: its vocabulary "
        f"is 30,522 WordPiece types and ours {s.base.config.vocab_size}, its text Wikipedia and ours the offline "
        f"corpus, and its unrestricted mean over every type seen depends on how large the test set is.")


def text_ws(ws: pd.DataFrame | None):
    if ws is None:
        return page.md("")
    w, extra = _split_ws(ws)
    tok = ("tokens" in w and w["tokens"].notna().all())
    ladder = ""
    if _tokens_per_row(w) is not None:
        ladder = (" Every size is processed in proportion to its rows (tokens per row within 5 % of each other), "
                  "so this sweep is also a budget ladder (top axis of the figure: tokens processed): more data and "
                  "more compute rise together along it.")
        ladder += (_text_same_steps(w, extra) if len(extra) else
                   " The two cannot be told apart without models trained for the base's steps on fewer rows "
                   "(`ws_same_steps`).")
    return page.md("⟨APT⟩ of the final head on [MASK] positions by pre-training set: " + "; ".join(
        f"{int(r.rows)} rows ({int(r.steps)} steps" + (f", {int(r.tokens):,} tokens processed" if tok else "")
        + f") {r.mean_apt:.4f} over {int(r.n_types)} types" for r in w.itertuples())
        + f" (types selected ≥ {MIN_OCCURRENCES} times). A model that always predicts the same token would score "
        "about 1 / (that number of types)." + ladder)


def _text_same_steps(w: pd.DataFrame, extra: pd.DataFrame) -> str:
    """How much of the sweep's rise the base's compute alone buys on fewer rows, per extra model."""
    top = w.iloc[-1]
    out = []
    for r in extra.itertuples():
        if top.steps != r.steps:  # the sweep's largest size is not the base at these steps: nothing to compare with
            out.append(f" A model on {int(r.rows)} rows trained for {int(r.steps)} steps: ⟨APT⟩ {r.mean_apt:.4f}.")
            continue
        same = w[w["rows"] == r.rows]
        txt = (f" To tell data from compute, a model on {int(r.rows)} rows was also trained for the base's "
               f"{int(r.steps)} steps ({r.steps / same['steps'].iloc[0]:.0f}x its one-epoch steps)" if len(same) else
               f" A model on {int(r.rows)} rows was also trained for {int(r.steps)} steps")
        txt += f": ⟨APT⟩ {r.mean_apt:.4f}, against {top.mean_apt:.4f} for the base's {int(top.rows)} rows at as many steps"
        if len(same):
            lo = float(same["mean_apt"].iloc[0])
            txt += f" and {lo:.4f} for the same rows at {int(same['steps'].iloc[0])} steps"
            if top.mean_apt - lo > 0:
                share = (r.mean_apt - lo) / (top.mean_apt - lo)
                txt += (f". Compute alone buys none of the rise between those two ({share:.0%}): it needs the "
                        "additional rows" if share <= 0 else
                        f". Compute alone buys {share:.0%} of the rise between those two; the rest needs the "
                        "additional rows" if share < 1 else
                        f". Compute alone buys all of the rise between those two ({share:.0%}): at this scale the "
                        "additional rows add nothing beyond the additional steps")
        out.append(txt + ".")
    return "".join(out)


def text_clusters(s: build.Setup, cl: pd.DataFrame | None, final: dict | None):
    if cl is None:
        return page.md("")
    p = cl.query("model == 'base' and readout == 'probe'").set_index("block")
    L, ok = s.n_layers, p.query("n_kept >= @MIN_KEPT")["concentration"].dropna()
    sharp = (f"where at least {MIN_KEPT} are kept, the share of confusions on a cluster partner goes "
             f"{ok.iloc[0]:.2f} (block {ok.index[0]}) → {ok.iloc[-1]:.2f} (block {ok.index[-1]})" if len(ok) >= 2
             else f"too few blocks keep {MIN_KEPT} or more token types to measure sharpness")
    return page.md(
        f"Final head: {final['n_kept']} token types keep their row maximum on the diagonal (of those selected "
        f"≥ {s.cfg.cluster_min_count} times); {final['n_clusters']} strong-match clusters hold "
        f"{final['n_clustered']} of them (largest {final['max_size']}). With a fresh head per block the kept types "
        f"go {p['n_kept'].iloc[0]} (block 0) → {p['n_kept'].iloc[L]} (block {L}); {sharp}.")


def text_finetune(s: build.Setup, fin: dict | None):
    if fin is None:
        return page.md("")
    m = fin["table"].groupby(["task", "model", "block"])["accuracy"].agg(["mean", "std"]).fillna(0)
    L, parts = s.n_layers, []
    for task in m.index.get_level_values(0).unique():
        b, c = m.loc[(task, "base")], m.loc[(task, "control")]
        tuned = m.loc[(task, "tuned")] if (task, "tuned") in m.index.droplevel(2) else None
        parts.append(f"{task}: pre-trained {_fmt(*b.loc[0])} (block 0) → {_fmt(*b.loc[L])} (block {L}), control "
                     f"{_fmt(*c.loc[0])} → {_fmt(*c.loc[L])}"
                     + (f", fine-tuned {tuned['mean'].loc[0]:.3f} → {tuned['mean'].loc[L]:.3f}" if tuned is not None
                        else ""))
    return page.md(f"Test accuracy of a logistic head on frozen, mean-pooled states (n = {s.cfg.n_seeds} splits): "
                   + "; ".join(parts) + ".")


def text_confidence(conf: dict | None):
    if conf is None:
        return page.md("")
    return page.md("; ".join(
        f"{t}: fine-tuned accuracy {c['accuracy']:.3f} (chance {c['chance']:.3f}), Pearson r = {c['pearson']:.2f} "
        f"[{c['pearson_ci'][0]:.2f}, {c['pearson_ci'][1]:.2f}], Spearman ρ = {c['spearman']:.2f} "
        f"[{c['spearman_ci'][0]:.2f}, {c['spearman_ci'][1]:.2f}] over {c['n']} test inputs"
        for t, c in conf.items()) + ".")


def text_local(df: pd.DataFrame | None):
    if df is None:
        return page.md("")
    mid = len(df) // 2
    # no token type selected MIN_OCCURRENCES times (few local_rows): every ⟨APT⟩ is NaN and there is no peak
    peak = f"highest at layer {df['block'][int(df['mean_apt'].idxmax())]}" if df["mean_apt"].notna().any() else \
        "no token type is selected often enough for ⟨APT⟩: raise local_rows"
    return page.md(
        "*What this is:* next-token accuracy per type of an instruction-tuned, 4-bit-quantised causal LM, read "
        "through the logit lens, whose last layer is the model's own output by construction, so a rise along the "
        "layers is guaranteed by the lens. It is a different claim from the paper's and is not scored as a "
        "reproduction. "
        f"Next-token ⟨APT⟩ through the logit lens: {df['mean_apt'].iloc[0]:.3f} at the embeddings, "
        f"{df['mean_apt'].iloc[mid]:.3f} at layer {mid}, {df['mean_apt'].iloc[-1]:.3f} after the last layer "
        f"({peak}); position-weighted accuracy {df['accuracy'].iloc[0]:.3f} → "
        f"{df['accuracy'].iloc[-1]:.3f}, APT(k) {df['apt_top'].iloc[0]:.3f} → {df['apt_top'].iloc[-1]:.3f}.")


def text_differences(s: build.Setup):
    """The scale bullet of "What differs from the paper", with this run's numbers."""
    if s.base is None:
        return page.md(f"- **Model.** A packaged causal LM (`{s.cfg.local_model}`), not a masked LM: an extension "
                       f"only.")
    c = s.base.config
    source = f"`{s.cfg.base_source}` from the hub" if s.cfg.base_source else "the study's own base"
    return page.md(
        f"- **Scale.** The paper's BERT-6 has hidden size 768 and a 30,522-token vocabulary and was pre-trained on "
        f"Wikipedia for 50 epochs; this run's ({source}) has {c.num_hidden_layers} blocks, hidden size "
        f"{c.hidden_size} and {c.vocab_size} tokens"
        + (f", pre-trained on {s.memo['n_pretrain_rows']} windows of offline English."
           if s.memo.get("n_pretrain_rows") else "."))


# ---------------------------------------------------------------------------------------- results record
def write_results(s: build.Setup, claim_list: list) -> dict:
    if s.base is None:
        info = {s.cfg.local_model: {"role": "packaged causal LM (local extension)"}}
    else:
        c = s.base.config
        info = {n: {"layers": c.num_hidden_layers, "d_model": c.hidden_size, "vocab": c.vocab_size,
                    "n_params": models.n_params(m), "role": r}
                for n, m, r in (("base", s.base, "pre-trained BERT"), ("control", s.control, "random init"))}
    return results.write(CHAPTER, PAPER, s.cfg.profile, info, claim_list, precision=s.cfg.precision)
