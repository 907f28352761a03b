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
# # The entity-tracking circuit before and after fine-tuning
#
# **The paper.** Prakash, Rott Shaham, Haklay, Belinkov and Bau (ICLR 2024), *Fine-Tuning Enhances Existing
# Mechanisms: A Case Study on Entity Tracking* (arXiv 2402.14811). Llama-7B reads prompts like "The apple is in Box
# F, the computer is in Box Q, … Box F contains the" and answers " apple" 66% of the time on 7 boxes; Goat and FLoat,
# Llama fine-tuned on *arithmetic*, reach 82%. Path patching finds a circuit of four head groups — Value Fetcher
# (VF), Position Transmitter (PT), Position Detector (PD), Structure Reader (SR) — that keeps the whole of Llama's
# accuracy (faithfulness 1.00) and most of Goat's (0.89). DCM shows VF heads carry the object (45.6% of outputs follow
# the object desideratum), PT and PD heads the *position* of the correct segment (36.9%, 44.0%), no group the box
# label (0%). Cross-model activation patching (CMAP) of Goat's circuit heads into Llama lifts Llama to 0.82: the
# fine-tuned model runs the same mechanism, better.
#
# **This page** rebuilds the study at small scale: the study's 4-layer GPT made into a partial entity tracker
# (`base`), then fine-tuned on arithmetic (`arith`, the Goat analogue) and on more entity tracking (`track`), each for
# several seeds; every method runs through `lib.patching` on per-head outputs (`attn.hook_z`).
#
# **Prerequisites:** the base models page (its `gpt` model is loaded from the cache). **Runtime:** tiny profile
# about 10 min on 2 shared CPU cores with the models cached; training the models from scratch adds the time given
# below.

# %% tags=["parameters"]
profile = "tiny"  # smoke | tiny | local | paper: the settings file notebooks/params/03_prakash/<profile>.yaml
params = {}  # overrides of that file, e.g. {"n_seeds": 5, "heads_base": [4, 2, 2, 2]}

# %%
import time

from lib import plotting
from lib.studies import prakash as study

start = time.perf_counter()
cfg = study.Config.load(profile, params)  # validates every value before any work starts
plotting.setup()
cfg.table()

# %% [markdown]
# ## The task and the models
#
# The prompt is the paper's, word for word; objects are nouns and labels capital letters that are one token for the
# model's tokenizer, so every prompt has the same length and the positions of the objects, the labels, the query label
# (last − 2) and the last token ("the") are shared. The counterfactual sets (corrupted runs, the mean-ablation
# reference, the three DCM desiderata) come from `lib.tasks.entities`.
#
# `base` starts from the pretrained GPT and trains on a mixture of its pretraining text and entity prompts with 2 to
# 7 boxes (loss on the answer only), stopping at the first check where 7-box validation accuracy reaches
# `base_target` — a partial entity tracker like Llama-7B. `arith` continues from `base` on arithmetic lines only;
# `track` on more entity prompts.

# %%
pre = study.get_pretrained(cfg)
data = study.task_data(cfg, pre.tokenizer)
plotting.say(study.size_text(pre, data, cfg))
t0 = time.perf_counter()
runs = study.get_models(cfg, pre, data)
model_seconds = time.perf_counter() - t0
acc = study.accuracy_table(runs, data)
study.accuracy_summary(acc, cfg)

# %%
plotting.say(study.accuracy_text(acc, cfg) + " " + study.training_text(runs, model_seconds))

# %% [markdown]
# **With fewer boxes?** The same models on fresh prompts with 2 to `n_boxes` boxes (the base's entity training mixed
# all these sizes): where is each model above a guess among the boxes?

# %%
curve = study.box_curve(runs, data, pre.tokenizer, cfg)
study.box_curve_summary(curve)

# %% [markdown]
# **What do the models answer?** Accuracy alone cannot tell a model that binds each object to its box from one that
# has only learnt to answer with *some* object from the prompt. The table splits the test answers: the share that
# names one of the prompt's objects ("in context"), the accuracy, the share naming the object of each box position,
# and the accuracy a *query-blind* model would get with those same box shares (it ignores which box is asked for).
# Binding shows as accuracy above that baseline.

# %%
answers = study.answer_profile(runs, data)
study.answer_profile_summary(answers)

# %%
plotting.say(study.answer_profile_text(answers, cfg))

# %% [markdown]
# ## 1. Path patching: the four head groups
#
# Path patching (Wang et al. 2022) runs a clean prompt with one sender head's output replaced by its value on a
# corrupted prompt (other objects and labels, a random query letter) while every other head stays frozen at its
# clean value, so only the sender's direct path moves; the score is the relative change of p(answer). In the paper's
# order: VF heads act on the logits at the last token; PT heads at the last token act on VF *queries*; PD heads at the
# query label act on PT *values*; SR heads at the previous query label act on PD values. The `heads_base` /
# `heads_tuned` most negative heads form each group (the paper's Llama counts, 20/5/10/5 of 1024 heads, scaled down).

# %%
found = study.discover_all(runs, data, cfg)
study.circuit_table(found)

# %% mystnb={"figure": {"caption": "Path-patching score of every head (layer × head) at each stage, first seed: blue lowers p(answer) when patched (kept), red raises it; boxes mark the heads kept.", "name": "fig-prakash-scores"}}
study.plot_scores(found, cfg.seed, study.model_names(cfg))

# %% [markdown]
# ### How expensive is a sweep?
#
# A sweep patches each of the model's heads in turn. `lib.patching` stacks many copies of the batch in one forward
# pass, one copy per head; the lower bound is one plain forward pass per head at the same batch size.

# %%
cost = study.sweep_cost(runs[cfg.seed]["base"].model, data, cfg)
plotting.say(f"Batched sweep over {study.model_spec(pre.model).n_layers * study.model_spec(pre.model).n_heads} heads "
             f"on {cfg.pp_size} prompts: {cost.sweep_s:.3f} s against {cost.lower_bound_s:.3f} s for the forward "
             f"passes alone, a ratio of {cost.ratio:.2f} in wall time and {cost.cpu_ratio:.2f} in CPU time "
             f"(shared 2-core machine: wall times are noisy).")

# %% [markdown]
# ## 2. Is the circuit faithful, in base and after fine-tuning?
#
# Mean ablation as in the paper: at every position but the last, the query label and the previous query label, every
# head takes its mean output over reference prompts; at those three positions so does every head outside the group
# assigned there (VF and PT at the last token, PD at the query label, SR at the previous query label).
# Faithfulness = circuit accuracy / model accuracy; the baseline keeps as many random heads (`random_draws` draws).
# The circuit analyses (this section, CMAP and knockout) use the first `analysis_size` test prompts; the models'
# accuracies above use all `test_size`.

# %%
faith = study.faithfulness_table(runs, found, data, cfg)
study.faithfulness_summary(faith)

# %%
plotting.say(study.faithfulness_text(faith))

# %% [markdown]
# ## 3. Do the tuned circuits reuse the base's heads?
#
# Precision: the share of a base group's heads that the tuned model's path patching also finds; recall: the share of
# the tuned group that came from base. Chance precision is what a random tuned group of the same size would give.

# %%
ov = study.overlap_table(found, cfg)
study.overlap_summary(ov)

# %% [markdown]
# ## 4. What does each group encode? (DCM)
#
# Desiderata-based Component Masking (Davies et al. 2023) learns, per group, a binary mask over its heads such that
# taking the masked heads' outputs from a source prompt turns the answer into the desideratum's target: the base
# prompt's object at the source's query *position* (positional), the source's object (object value), or the base
# object carrying the source's query label (box label). Reported: % of fresh test prompts whose output equals the
# target with the selected heads patched (base circuit, λ = `dcm_lam`).

# %%
dcm = study.dcm_table(runs, found, data, cfg)
study.dcm_summary(dcm)

# %% mystnb={"figure": {"caption": "Share (%) of outputs equal to each desideratum's target when the DCM-selected heads of each group of the base circuit are patched from the source prompt, per model (mean and standard deviation over seeds).", "name": "fig-prakash-dcm"}}
study.plot_dcm(dcm)

# %% [markdown]
# ## 5. Where does the fine-tuned model's gain come from? (CMAP)
#
# Cross-model activation patching: base runs the test prompts with the outputs of the tuned circuit's heads, group by
# group, taken from the tuned model on the same prompt.

# %%
cm = study.cmap_table(runs, found, data)
study.cmap_summary(cm)

# %% [markdown]
# ## 6. Attention knockout
#
# Attention from one position to another is blocked in every head of layers k to the last (Geva et al. 2023); the
# control blocks the last token from a *wrong* object.

# %% mystnb={"figure": {"caption": "Test accuracy when attention is knocked out in layers k and above (k = number of layers: nothing knocked out), per model, mean and standard deviation over seeds. The paper's Llama: last → correct object 0.04 up to layer 16, query label → previous query label 0.05 at layer 1, last → query label 0.37 up to layer 11.", "name": "fig-prakash-knockout"}}
ko = study.knockout_table(runs, data, cfg)
study.plot_knockout(ko)

# %%
plotting.say(study.knockout_text(ko))

# %% [markdown]
# ## Verdict
#
# Each claim is judged by the rule in its `reason` (thresholds are config values: `margin`, `faith_min`, `dcm_none`).
# The circuit claims also need a base that beats chance (1 / `n_boxes` + `margin`): without that there is no
# mechanism to find, whatever the patching numbers say.

# %%
claims = study.verdicts(acc, faith, ov, dcm, cm, ko, cfg)
study.verdict_table(claims)

# %%
plotting.say("\n".join(f"- **{c.verdict}**: {c.claim} Ours: {c.ours}. ({c.reason}.)" for c in claims))

# %% [markdown]
# ## What differs from the paper
#
# - **Models and scale.** Llama-7B (32 layers × 32 heads) and Goat / FLoat in the paper; here the study's 4-layer,
#   16-head GPT, given the task by our own training (the paper's base never saw the task), so "partial" accuracy is a
#   stopping rule, not an emergent ability. Head counts per group are scaled to 16 heads.
# - **Whether the base tracks entities at all.** The paper's base solves 66% of 7-box prompts by itself. Ours must
#   learn the task in `base_steps` steps, and the accuracy, the answer profile and the accuracy by box count above say
#   whether it did; when it did not, every circuit claim is judged not reproduced, because there is no mechanism to
#   dissect. The `local` profile asks the same of packaged pretrained models (its settings file lists what we
#   measured).
# - **The fine-tuned model.** Goat and FLoat were tuned on large arithmetic data sets; `arith` is a short run on
#   synthetic arithmetic lines. `track` (more entity tracking) is our addition, so that there is a better model to
#   compare circuits with whatever arithmetic does.
# - **Data.** The prompt format is the paper's; the objects are the nouns that are single tokens for our 4096-token
#   BPE, and "Box" is three tokens here, so a segment is 9 tokens instead of 7.
# - **Methods.** The procedures follow the paper's code as summarised in research/papers.md; the DCM percentages are
#   measured on fresh test prompts once (the paper: 10 draws of 500); the verdict thresholds are ours.

# %%
record = study.write_results(cfg, pre, runs, claims, cost)
plotting.say(f"Results written for profile `{record['profile']}`: {len(record['claims'])} claims; page run time "
             f"{time.perf_counter() - start:.0f} s.")
