# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Synthesis: where fine-tuning reuses and where it rebuilds
#
# Each of the five papers looked inside its own fine-tuned models with its own tools, and each reached a
# conclusion about what fine-tuning does to the base model:
#
# | paper | pairs | its conclusion |
# |---|---|---|
# | Lin (2024) | pretrained GPT-2 → fine-tuned; random init → trained from scratch | the fine-tuned model relies on pretrained representations, particularly in later layers; the scratch model builds different, task-specific mechanisms |
# | Zhao, Ziser & Cohen (2024) | Llama-2 → instruction-tuned (multi-task E1, single-task controls) | early layers are shared, later layers become task-specific (transition at about a third of the depth) |
# | Prakash et al. (2024) | Llama-7B → Goat / FLoat | the same entity-tracking circuit, enhanced |
# | Tzach et al. (2025) | pre-trained BERT-6 → fine-tuned classifiers | fine-tuning accuracy grows along the blocks of the pre-trained representation |
# | Horn & Elliott (2024) | one-layer Mistral → two domain fine-tunes → their SLERP merge | very few SAE features persist from parent to child; a few generic or universal ones do |
#
# Their methods differ (CKA, circuits, accuracy per token, SAE features), so their conclusions cannot be set side by
# side: compare the per-block CKA of chapter 1 ({numref}`fig-lin-similarity`), the per-cluster CKA of chapter 2
# ({numref}`fig-zhao-clusters`), the head scores of chapter 3 ({numref}`fig-prakash-scores`), the accuracy by block
# of chapter 4 ({numref}`fig-tzach-finetune`) and the feature flows of chapter 5 ({numref}`fig-horn-flow`). This page applies **the same lenses to every base → tuned pair the chapters of this book produce**,
# on the same kind of scale (depth from the embeddings to the last block): how similar the tuned model's residual
# stream stays to the base's, how far its weights moved, and how much of its gain on its task appears when its
# residual stream is patched into the base. That is what none of the five papers could show.
#
# **Prerequisites:** every chapter of the same profile has run (this page only loads their cached models through
# each chapter's `synthesis_pairs`; a missing cache stops the page with the name of the notebook to run).
# The lenses and the reuse index are in `lib.lenses` (three seeds per pair); the page's code is the package `lib.chapters.synthesis`
# (`build` loads the pairs and caches the lens measurements of each, `measure` aggregates the seeds, `claims` holds
# the rules, `report` the figure and the text).
# **Runtime:** the appendix ({doc}`08_performance`) lists this build's time for every notebook.

# %% tags=["parameters"]
profile = "tiny"  # str, one of smoke | tiny | local | paper: the settings file notebooks/params/06_synthesis/<profile>.yaml
params = {}  # dict: overrides as one mapping, e.g. {"seed": 1}; the single parameters below win
# None below means the profile's value
seed = None  # int, in [0, 2147483647]: seed of the first run; further seeds count up from it
recompute = None  # bool: rebuild cached artifacts instead of loading them
chapters = None  # list, each one of '01_lin', '02_zhao', '03_prakash', '04_tzach', '05_horn': notebooks whose pairs to include (empty: all)
tokens = None  # str, one of 'readout', 'all': CKA rows: the positions the metric reads, or every non-padding token
debiased = None  # bool: unbiased HSIC in CKA (the biased one is inflated when rows ~ d_model)
min_gap = None  # float, in [0.0, 1.0]: recovery is NaN when |metric(tuned) - metric(base)| is below this
recovery_level = None  # float, in [0.0, 1.0]: the table reports where recovery first exceeds this
chunk = None  # int, in [1, 4096]: examples per forward pass when reading activations
n_seeds = None  # int, in [1, 20]: seeds per pair: each chapter's first n_seeds (fewer where it has fewer)
results = None  # str: folder of the chapters' results/*.json (their own verdicts gate the synthesis); empty: this run's results folder, then the book's

# %%
from IPython.display import display

from lib import page
from lib.chapters.synthesis import build, claims as rules, config, measure, report

cfg = config.Config.from_namespace(globals())  # every parameter validated before any work starts
page.setup()
cfg.table()

# %% [markdown]
# ## The pairs
#
# The chapters are listed once, in `lib.chapters.SYNTHESIS_SOURCES`; each offers its pairs through
# `lib.chapters.<chapter>.build.synthesis_pairs`, in the book's order. Each pair comes with a batch of its task's test inputs (at most 256 examples) and the
# chapter's own task metric (higher is better). Each chapter offers one set of pairs per seed it trained; the page
# measures the first `n_seeds` of them and averages the lenses over seeds (the spread is in the table, the bands
# of the figure and the text). Where a chapter trained fewer distinct models (Tzach et al.'s full fine-tunes:
# `n_ft_seeds`; Horn & Elliott's fine-tunes are shared by all SAE seeds unless `finetune_seeds`), its pairs have
# fewer seeds, and the table says how many. The lens measurements of every pair and seed are cached, keyed by the
# content of its two models and inputs, so a second run of this page only loads the models and the measurements.
#
# Each chapter's own verdicts say whether its base could do its task at this scale: when most of a chapter's claims
# were "not testable at this scale", its pairs are not testable here either (its models' lenses are still shown).

# %%
pairs = measure.aggregate(build.run(cfg))
claim_list = rules.claims([measure.measured(p, cfg) for p in pairs])
report.setup_text(pairs, cfg)

# %% [markdown]
# ## The lenses
#
# Every lens gives one number per *layer point*: point 0 is the embedding output (`blocks.0.hook_resid_pre`),
# point $i \ge 1$ the output of block $i-1$ (`blocks.{i-1}.hook_resid_post`, before any final norm; the final
# norm's output is a point of its own, off the depth axis, reported as "CKA final norm" in the table). Point $i$ of
# a model with $n$ blocks sits at depth $i/n$, so a one-layer Mistral and a six-block BERT share one axis.
#
# 1. **CKA to the base.** Linear CKA (Kornblith et al. 2019) between the base's and the tuned model's residual
#    states $H^i_\text{base}, H^i_\text{tuned}$ (rows: the same token positions of the same inputs):
#    $\text{CKA}_i = \lVert \tilde H_\text{tuned}^{\top} \tilde H_\text{base} \rVert_F^2 /
#    (\lVert \tilde H_\text{base}^{\top} \tilde H_\text{base} \rVert_F \lVert \tilde H_\text{tuned}^{\top}
#    \tilde H_\text{tuned} \rVert_F)$ with column-centred $\tilde H$; 1 means the same representation up to a
#    rotation and a scale. Rows (`tokens`): `readout` takes the positions the chapter's metric reads — the last
#    prompt token when the answer is a labelled continuation (Lin, Zhao) or one answer token (Prakash et al.), the
#    `[CLS]` token of a BERT classifier (Tzach), every token for next-token accuracy (Horn & Elliott); `all` takes
#    every non-padding token. The classes below use `tokens`; the figure and the table show both. Where every row
#    holds the same token (the `[CLS]` embedding, a shared last prompt token), the embedding point has nothing to
#    compare and is left out (NaN). With a few hundred rows and d_model of the same order, the biased estimator
#    reads high even for unrelated representations, so `debiased` uses the unbiased HSIC (it can dip below 0).
# 2. **Relative weight change** per layer point:
#    $\Delta w_i = \sqrt{\sum_{W \in g_i} \lVert W_\text{tuned} - W_\text{base} \rVert_F^2} \big/
#    \sqrt{\sum_{W \in g_i} \lVert W_\text{base} \rVert_F^2}$ over the parameters of block $i-1$ (point 0: the
#    embedding parameters). The rest (final norm, unembedding, classifier head) is reported as "Δw head". Two
#    independent draws of the same initialiser give about $\sqrt 2$. For Lin's scratch pair the "base" is the
#    random initialisation the scratch model started from: $\Delta w$ is then the distance training travelled
#    from its random start, and a small value would mean lazy training that keeps the random features.
# 3. **Patching recovery.** Run the base on the inputs with its residual stream at point $i$ replaced, at every
#    position, by the tuned model's on the same input:
#    $r_i = (m(\text{base}; h_i \leftarrow h_i^\text{tuned}) - m(\text{base})) / (m(\text{tuned}) - m(\text{base}))$.
#    $r_i = 1$: the tuned states up to point $i$ carry the whole gain and the base's remaining layers read them
#    correctly; $r_i = 0$: none of it. When $|m(\text{tuned}) - m(\text{base})|$ is below `min_gap` there is no
#    gain to share and $r_i$ is NaN. At the last block, the gap to 1 is the share of the gain held after the
#    residual stream (final norm, unembedding, head). The formula is the same when the tuned model scores *lower*
#    than its base (a merge judged on both domains, a fine-tune on another objective): $r_i$ is then the share of
#    that loss reproduced. `min_gap` is a floor, not a significance test: with a few hundred examples, an accuracy
#    difference of a few hundredths can be sampling noise, so read small gaps with care.
#
# 4. **Reuse index.** A CKA of 0.8 means nothing by itself: two unrelated models of the same task can share much of
#    their geometry, and two seeds of the same fine-tune never reach 1. So every pair comes with two references
#    measured with the same lens on the same inputs, a *null* $n_i = \text{CKA}(\text{null}, \text{base})_i$ and a
#    *seed ceiling* $c_i = \text{CKA}(\text{tuned}, \text{tuned}')_i$ (tuned$'$: a sibling, the same fine-tune
#    of the *same base* from the chapter's next seed), and the index is
#    $\rho_i = (\text{CKA}(\text{tuned}, \text{base})_i - n_i) / (c_i - n_i)$: 0 = no closer to the base than the
#    null, 1 = as close to the base as a sibling seed is to the tuned model. The null is the chapter's model trained
#    from scratch on the same task where there is one (Lin's fine-tune); every other pair gets its base's
#    architecture freshly initialised (the table names which), and Lin's fine-tune shows how the two nulls differ.
#    A pair with no sibling has no ceiling: one tuned seed, or seeds that each start from their own base (chapter
#    3 trains a base per seed, so its tuned models of different seeds are not siblings). Its index is drawn against
#    a ceiling of 1, a lower bound of the true index, so only a decision that it lies *above* a threshold stands.
#    Lin's scratch model is the null of Lin's fine-tune and is shown beside it, not scored as a claim of its own
#    (its "base" is its own random initialisation, and its null would be another random initialisation). The null is also patched into the base, as the patching lens's null. For Horn & Elliott's
#    pairs a fourth lens comes from chapter 5's record: SAE-feature persistence with independent SAE seeds divided
#    by the same-model seed control.
#
# Each paper's conclusion is turned into a rule over the per-seed reuse index, decided from the t-interval of its
# mean against a threshold; the raw CKA and the weight change are shown but decide nothing (a fixed Δw threshold
# carries no null: the table shows how little the fine-tunes' weight changes differ); a pair is classified by its
# late-half index:

# %%
display(report.rules_text())
report.rules_table()

# %% [markdown]
# ## All pairs side by side

# %% mystnb={"figure": {"caption": "The lenses for every pair, one column per chapter, one line per pair (colour = chapter). Top: CKA of the tuned model's residual stream to the base's on the rows chosen by `tokens` (dashed: the null's CKA to the base; dotted: the seed ceiling; a missing point has nothing to compare). Second row: the reuse index (0 = null, 1 = seed ceiling; band: 95 % t-interval over seeds; dotted: `index_reuse`). Third row: relative weight change of each block (point 0: embeddings; symmetric-log axis). Bottom: share of the tuned model's metric change (gain, or loss) reproduced by patching its residual stream at that point into the base (dashed: the same with the null's residual stream; dotted: 1; a pair whose metric changed by less than `min_gap` has no curve). Lines: mean over seeds; bands: ± 1 sd over seeds (pairs with one seed have none). x: depth, 0 = embeddings, 1 = last block.", "name": "fig-synthesis-overview"}}
fig = report.figure(pairs, cfg)

# %%
report.table(pairs, claim_list, cfg)

# %% [markdown]
# *Table: per pair, the number of seeds; the mean CKA over the early (depth ≤ 0.5) and late (depth > 0.5) layer
# points, the sd over seeds of the late value, the late-half CKA on the other choice of rows and the CKA after the
# final norm (NaN for a post-LN model, which has none); the same for the
# weight change, and the weight change outside the blocks; the chapter's metric for base and tuned model; the
# first layer point from which patching reproduces more than `recovery_level` of the change; the class by the
# rule above, what the paper's conclusion expects, and the verdict (numbers: means over seeds; class and verdict:
# read from the per-seed intervals).*

# %% [markdown]
# ## The reuse index against the fine-tuning dose

# %% mystnb={"figure": {"caption": "Left: each pair's late-half reuse index (mean over seeds, bars: 95 % t-interval; hollow: one seed, index against a ceiling of 1, a lower bound) against its fine-tuning dose, the late-half relative weight change (log axis). Right: the index at every layer point of every pair on one depth axis (0 = embeddings, 1 = last block); grey: the null ± 1 sd over seeds in index units. Solid line: the null (0); dashed: the seed ceiling (1); dotted: `index_reuse`.", "name": "fig-synthesis-index"}}
sae = build.sae_persistence(cfg)
fig_index = report.headline_figure(pairs, cfg)

# %%
display(report.index_text(pairs, claim_list, cfg, sae))
measure.index_table(pairs, cfg, sae)

# %% [markdown]
# *Table: per pair, which null and ceiling its index uses; the late-half CKA to the base of the tuned model, of the
# null and of the seed ceiling, and the smaller of the two halves' ceiling-minus-null separation (the index's
# denominator); the early and late index with the t-interval of the late one over seeds; the late index on the
# other choice of CKA rows and against the random-init null; the dose; the late-half patching recovery of the tuned
# model and of the null; for Horn & Elliott's pairs, SAE persistence relative to its seed control.*

# %% [markdown]
# ## Reuse or rebuild, chapter by chapter

# %%
display(report.overall_text(pairs, claim_list, cfg))
report.chapter_text(pairs, claim_list, cfg)

# %% [markdown]
# ## Against each paper's own conclusion

# %%
report.comparison_text(pairs, claim_list, cfg)

# %% [markdown]
# ## Verdict
#
# One claim per pair: the paper's conclusion against our lenses, by its rule. These rows go to the reproduction
# scorecard, listed apart from the chapters' own claims.

# %%
report.write_results(claim_list, cfg, measure.models_info(pairs))
page.verdict_table(claim_list)

# %% [markdown]
# ## What differs from the papers
#
# - **Scale.** Every pair here is one of the study's own small models (sizes in "The pairs" above), not GPT-2, Llama-2-7B, BERT-6 or Horn & Elliott's Mistral; the lenses' meaning does not change
#   with size, but the numbers do.
# - **Few seeds.** At most `n_seeds` per pair, fewer where the chapter trained fewer models; classes and verdicts
#   are read from the t-intervals over seeds, so a pair near a threshold, or with fewer than two seeds, is
#   inconclusive rather than flipped by one more seed.
# - **Different evidence.** The papers judged reuse with their own tools (circuits, SAE features, per-token
#   accuracy); the lenses here look at whole layers. A paper's claim about circuits or features can hold while
#   the whole-layer picture says otherwise, and the verdicts here are about the whole-layer picture only.
# - **Nulls are ours.** Only Lin's chapter trains a model from scratch on its task; elsewhere the null is a random
#   initialisation of the base's architecture, a weaker null (it shares nothing, but it also solves nothing), which
#   puts the index higher than a scratch model would (Lin's pair shows by how much at this scale).
# - **Rules are ours.** The thresholds that turn curves into "reuse" or "rebuild" are stated once, as constants of
#   `lib/chapters/synthesis/claims.py`, and the rule text above is rendered from them; they are not parameters, so
#   a verdict cannot be tuned from the command line.
