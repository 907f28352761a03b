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
# **This page** rebuilds the study at small scale: a small Llama trained from random initialisation on the boxes
# task (`base`; whether it tracks entities, and how well on 7 boxes, is measured below, not assumed), then given three
# fine-tunes: arithmetic whose operands are bound to names (`arith_bound`, the Goat analogue), arithmetic without names
# (`arith_pure`, the control) and more entity tracking (`track`, the positive control), for several seeds.
# Every method runs through `lib.patching` on per-head outputs (`attn.hook_z`).
#
# **Prerequisites:** none in `smoke` and `tiny` (the chapter trains its own base); `local` loads a packaged model.
# **Runtime:** the appendix ({doc}`08_performance`) lists this build's time for every notebook. Training the models from scratch adds the time given below.

# %% tags=["parameters"]
profile = "tiny"  # str, one of smoke | tiny | local | paper: the settings file notebooks/params/03_prakash/<profile>.yaml
params = {}  # dict: overrides as one mapping, e.g. {"seed": 1}; the single parameters below win
# None below means the profile's value
seed = None  # int, in [0, 2147483647]: seed of the first run; further seeds count up from it
recompute = None  # bool: rebuild cached artifacts instead of loading them
base_source = None  # str: paper: the base model (hub id or folder); empty: the profile's default base
tuned_source = None  # str: paper: the fine-tuned model (hub id or folder), used as `arith_bound`
allow_network = None  # bool: paper profile: let the hub loader download
local_model = None  # str, one of 'smollm2-135m-instruct', 'gemma-3-270m': local profile: the packaged pretrained model
device = None  # str, one of 'cpu', 'cuda', 'auto': where models run ('auto': cuda if present)
n_seeds = None  # int, in [1, 20]: independent base/tuned model sets (seeds seed, seed+1, ...)
tuned = None  # list, each one of 'arith_bound', 'arith_pure', 'track': which tuned models to make
objects = None  # str, one of 'nouns', 'vocab': object words: concrete nouns (the paper's kind), or any single-token word (tiny BPEs)
n_boxes = None  # int, in [2, 12]: boxes per prompt (the paper: 7)
test_size = None  # int, in [8, 100000]: test prompts (the models' accuracy)
curve_size = None  # int, in [8, 100000]: prompts per box count in the accuracy-by-boxes table
analysis_size = None  # int, in [8, 100000]: the first test prompts (at most test_size) that the circuit analyses use (faithfulness, CMAP, knockout)
val_size = None  # int, in [8, 100000]: validation prompts (the base's learning curve)
base_layers = None  # int, in [1, 64]: smoke / tiny: layers of the chapter's own base (a Llama: RoPE, RMSNorm, SwiGLU)
base_d_model = None  # int, in [8, 4096]: smoke / tiny: width of the base (d_mlp: 4 x d_model)
base_heads = None  # int, in [1, 64]: smoke / tiny: attention heads per layer of the base
base_steps = None  # int, in [0, 1000000]: smoke / tiny: training steps of the base (warm-up, then cosine decay to 0 at the last step; 0: a random-init base)
base_easy_steps = None  # int, in [0, 1000000]: the first steps of the curriculum, on 2-3 boxes only; then 2..n_boxes boxes, fewer boxes more often
base_batch = None  # int, in [1, 4096]: prompts per base training step (fresh prompts every step)
base_lr = None  # float, in [1e-07, 1.0]
eval_every = None  # int, in [1, 1000000]: steps between validation checks of the base (its curve)
arith_steps = None  # int, in [1, 1000000]: steps of each arithmetic fine-tune (arith_bound, arith_pure)
arith_lr = None  # float, in [1e-07, 1.0]
track_steps = None  # int, in [1, 1000000]: steps of further entity-tracking fine-tuning (track)
track_lr = None  # float, in [1e-07, 1.0]
batch_size = None  # int, in [1, 4096]: prompts per fine-tuning step
lora_rank = None  # int, in [0, 1024]: fine-tune LoRA adapters of this rank on q and v (Goat: 8; 0: every weight, as FLoat)
bf16 = None  # bool | str, one of 'auto', True, False: bf16 autocast while training: 'auto' (bf16 only where the hardware runs it natively: a CPU with AVX512-BF16/AMX or a CUDA device with bf16; fp32 elsewhere), true or false
pp_size = None  # int, in [4, 10000]: prompts for path patching (the paper: 300)
heads_base = None  # list, in [1, 4096]: heads kept per group VF, PT, PD, SR (base)
heads_tuned = None  # list, in [1, 4096]: heads per group of the tuned circuits (the paper takes more there)
mean_size = None  # int, in [4, 100000]: reference prompts for the mean ablation
random_draws = None  # int, in [1, 1000]: random circuits of the same size (the paper: 10)
dcm_size = None  # int, in [8, 100000]: DCM training prompts per desideratum (as many for test)
dcm_lam = None  # float, in [0.0, 100.0]: DCM sparsity weight λ (the paper: 0.01)
dcm_lr = None  # float, in [1e-05, 10.0]
dcm_epochs = None  # int, in [1, 100]
sweep_repeats = None  # int, in [1, 20]: timing repeats of the sweep-cost measurement

# %%
import time

from lib import page
from lib.chapters.prakash import build, claims as rules, config, measure, report

cfg = config.Config.from_namespace(globals())  # every parameter validated before any work starts
start = time.perf_counter()
page.setup()
cfg.table()

# %% [markdown]
# ## The task and the models
#
# The prompt is the paper's, word for word; objects are nouns and labels capital letters that are one token for the
# model's tokenizer, so every prompt has the same length and the positions of the objects, the labels, the query label
# (last − 2) and the last token ("the") are shared. The counterfactual sets (corrupted runs, the mean-ablation
# reference, the three DCM desiderata) come from `lib.tasks.entities`.
#
# In `smoke` and `tiny`, `base` is the chapter's own model: a Llama (RoPE, RMSNorm, SwiGLU) with a word-level
# vocabulary, so that, as for Llama-7B on the paper's prompts, every word is one token, a segment is 7 tokens and the
# query label sits at last − 2. It is trained from random initialisation on boxes prompts only, with fresh prompts at
# every step and the loss on the answer: first `base_easy_steps` steps on 2-3 boxes, then 2 to `n_boxes` boxes with
# fewer boxes more often (7 is the rarest), to the end of a cosine schedule. There is no stopping rule: whatever
# accuracy it has on 7 boxes is where training ended, and the curve below shows whether it had converged.
# The three fine-tunes train on answer-only losses, every weight (as FLoat) when `lora_rank` is 0, as in `tiny`, or
# LoRA adapters of that rank on the query and value projections (as Goat). `arith_bound` reads prompts like "3 goes to F, 7 goes to Q. F plus Q is" → " 10" (the same binding and retrieval
# by name as the boxes); `arith_pure` reads "3 plus 7 is" → " 10"; `track` more boxes prompts. Every analysis below is
# cached per model (its key: the models, the prompt sets, the settings and the analysis code), so a warm build loads
# them.

# %%
pre = build.get_pretrained(cfg)
data = build.task_data(cfg, pre.tokenizer)
display(report.size_text(pre, data, cfg))
t0 = time.perf_counter()
runs = build.get_models(cfg, pre, data)
model_seconds = time.perf_counter() - t0
preds = measure.test_predictions(runs, data, cfg)
acc = measure.accuracy_table(runs, data, preds)
answers = measure.answer_profile(runs, data, preds)
restricted = measure.restricted_table(runs, data, cfg)
report.accuracy_summary(acc, restricted)

# %%
display(report.accuracy_text(acc, answers, cfg), report.training_text(runs, model_seconds))

# %% [markdown]
# **Did the base converge?** Its 7-box validation accuracy at every check (empty when the profile trains no base).

# %% mystnb={"figure": {"caption": "Validation accuracy of the base on n_boxes-box prompts during its training, per seed; the dotted line marks the end of the 2-3-box part of the curriculum, the dashed one chance among the boxes.", "name": "fig-prakash-base-curve"}}
curves = measure.base_curves(runs)
report.plot_base_curves(curves, cfg) if len(curves) else None

# %% [markdown]
# **Did the fine-tunes happen?** Each fine-tune's accuracy on held-out prompts of its own objective (the first token
# of the answer), before and after it; and every model's induction score: top-1 accuracy on the second copy of a
# repeated sequence of 20 random tokens, a look-back ability the paper's mechanism builds on (chance: about one over
# the vocabulary).

# %%
display(report.tuning_summary(runs))
induction = measure.induction_table(runs, data, cfg)
report.induction_summary(induction)

# %% [markdown]
# **With fewer boxes?** The same models on fresh prompts with 2 to `n_boxes` boxes (the base's entity training mixed
# all these sizes): where is each model above a guess among the boxes?

# %%
curve = measure.box_curve(runs, data, pre.tokenizer, cfg)
report.box_curve_summary(curve)

# %% [markdown]
# **What do the models answer?** Accuracy alone cannot tell a model that binds each object to its box from one that
# has only learnt to answer with *some* object from the prompt. The table splits the test answers: the share that
# names one of the prompt's objects ("in context"), the accuracy, the share naming the object of each box position,
# and the accuracy a *query-blind* model would get with those same box shares (it ignores which box is asked for).
# Binding shows as accuracy above that baseline: the *binding gap*, which every circuit claim below needs.

# %%
report.answer_profile_summary(answers)

# %%
report.answer_profile_text(answers)

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
found = measure.discover_all(runs, data, cfg)
display(report.circuit_table(found), report.circuit_text(found, cfg))

# %% mystnb={"figure": {"caption": "Path-patching score of every head (layer × head) at each stage, first seed: blue lowers p(answer) when patched (kept), red raises it; boxes mark the heads kept.", "name": "fig-prakash-scores"}}
report.plot_scores(found, cfg.seed, cfg.model_names())

# %% [markdown]
# ### How expensive is a sweep?
#
# A sweep patches each of the model's heads in turn. `lib.patching` stacks many copies of the batch in one forward
# pass, one copy per head; the lower bound is one plain forward pass per head at the same batch size.

# %%
# NBVAL_IGNORE_OUTPUT
# (a timing measured now: re-executing the page measures it again, so nbval does not compare this cell's output)
cost = measure.sweep_cost(runs[cfg.seed]["base"].model, data, cfg)
report.sweep_text(cost, pre, cfg)

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
faith = measure.faithfulness_table(runs, found, data, cfg)
spec = measure.model_spec(pre.model)
report.faithfulness_summary(faith, spec.n_layers * spec.n_heads)

# %%
report.faithfulness_text(faith)

# %% [markdown]
# ## 3. Do the tuned circuits reuse the base's heads?
#
# Precision: the share of a base group's heads that the tuned model's path patching also finds; recall: the share of
# the tuned group that came from base. Chance precision is what a random tuned group of the same size would give. In a
# small model some heads may be found in *every* model trained this way, so the verdict compares against a stricter
# null: the base circuits of the other seeds, found the same way in models this tuned model did not come from.

# %%
ov = measure.overlap_table(found)
report.overlap_summary(ov)

# %% [markdown]
# ## 4. What does each group encode? (DCM)
#
# Desiderata-based Component Masking (Davies et al. 2023) learns, per group, a binary mask over its heads such that
# taking the masked heads' outputs from a source prompt turns the answer into the desideratum's target: the base
# prompt's object at the source's query *position* (positional), the source's object (object value), or the base
# object carrying the source's query label (box label). Reported: % of fresh test prompts whose output equals the
# target with the selected heads patched (base circuit, λ = `dcm_lam`), and its *lift*: that % minus the % with
# nothing patched. The verdict reads the lift, because a target can be hit without any patch: the box-label target is
# an object of the base prompt, which a model that names prompt objects at random gives 1 time in n_boxes.

# %%
dcm = measure.dcm_table(runs, found, data, cfg)
report.dcm_summary(dcm)

# %% mystnb={"figure": {"caption": "Share (%) of outputs equal to each desideratum's target when the DCM-selected heads of each group of the base circuit are patched from the source prompt, per model (mean and standard deviation over seeds).", "name": "fig-prakash-dcm"}}
report.plot_dcm(dcm)

# %% [markdown]
# ## 5. Where does the fine-tuned model's gain come from? (CMAP)
#
# Cross-model activation patching: base runs the test prompts with the outputs of the tuned circuit's heads, group by
# group, taken from the tuned model on the same prompt. The paper's claim is about the arithmetic model, so the
# verdict reads `arith_bound`; the other fine-tunes are further rows.

# %%
cm = measure.cmap_table(runs, found, data, cfg)
report.cmap_summary(cm)

# %% [markdown]
# ## 6. Attention knockout
#
# Attention from one position to another is blocked in every head of layers k to the last (Geva et al. 2023); the
# control blocks the last token from a *wrong* object.

# %% mystnb={"figure": {"caption": "Test accuracy when attention is knocked out in layers k and above (k = number of layers: nothing knocked out), per model, mean and standard deviation over seeds. The paper's Llama: last → correct object 0.04 up to layer 16, query label → previous query label 0.05 at layer 1, last → query label 0.37 up to layer 11.", "name": "fig-prakash-knockout"}}
ko = measure.knockout_table(runs, data, cfg)
report.plot_knockout(ko)

# %%
report.knockout_text(ko)

# %% [markdown]
# ## Verdict
#
# Each claim is judged by its rule, stated here from the same declaration the test reads (`lib/chapters/prakash/
# claims.py`; the thresholds are constants there, not parameters). Seed-level decisions read a t-interval over the
# per-seed effects; the circuit claims read only the seeds whose base binds the query to its box (the binding gap
# above) and need at least two of them: without a binding base there is no mechanism to find, whatever the patching
# numbers say, and the claims are not testable at this scale. The gate matters most for the knockout: a model that
# names a prompt object at random also loses its whole accuracy when the last token cannot see the correct object
# (the unit tests show it). The two accuracy claims need room above the base instead: a base near ceiling on 7 boxes
# cannot gain the margin.

# %%
display(page.rules(rules.RULES))
measured = measure.Measured(acc, answers, faith, ov, dcm, cm, ko, cfg.n_boxes, tuple(cfg.tuned))
claims = rules.claims(measured)
page.verdict_table(claims)

# %%
report.verdict_text(claims)

# %% [markdown]
# ## What differs from the paper
#
# - **Models and scale.** Llama-7B (32 layers × 32 heads) and Goat / FLoat in the paper; here, in `tiny`, a small
#   Llama whose layers and heads are printed at the top of the page, trained on this task alone. The paper's base
#   met the task in pretraining and was never trained on it; ours learned it from scratch and never saw other text
#   (the induction score above says whether it has any general look-back ability), so its mechanism need not
#   resemble Llama's, and a chain of four head groups needs layers it may not have (the note under the circuit
#   table); how partial it is on 7 boxes is a result of the recipe (the curriculum and the schedule, fixed before
#   the seeds were read), not an emergent ability. Head counts per group are scaled to its heads, and
#   with so few heads a circuit is a large share of the model (the faithfulness table prints it): faithfulness is
#   easier to reach than in a model of 1024 heads, which is why random circuits of the same size sit beside it.
# - **The fine-tunes.** Goat was tuned with LoRA, FLoat fully, on large sets of arithmetic problems; `arith_bound`
#   is a short run on single-digit sums and differences whose operands are bound to names, which asks for the same
#   retrieval by name as the boxes, and `arith_pure` the same operations without names. Our base never saw a number
#   before its fine-tune, and LoRA on queries and values cannot change the embeddings: in trials LoRA did not learn
#   either arithmetic objective, so `tiny` fine-tunes every weight, as FLoat (the settings file says what was tried
#   and by which criterion the settings were chosen). How far each fine-tune learned its own objective is shown above
#   and bounds what it can teach. Kim, Schuster & Toshniwal (2024) find no consistent
#   entity-tracking gain from math training across model families, so a null here would not contradict the
#   literature. `track` (more entity tracking) is our addition, a positive control for "fine-tuning improves
#   tracking".
# - **DCM at this size.** With one to three heads per group, a DCM mask chooses among a handful of heads: these are
#   group-level interventions, not the head-level selection of the paper's groups of 5-50 heads.
# - **Data.** The prompt format is the paper's; the objects are the nouns that are single tokens for the model's
#   tokenizer.
# - **Methods.** The procedures follow the paper's code as summarised in research/papers.md; the DCM percentages are
#   measured on fresh test prompts once (the paper: 10 draws of 500); the verdict thresholds are ours.
# - **The `local` profile** uses a packaged pretrained model with no training on the task (its settings file lists
#   what we measured). Its answers may be any word, so the accuracy restricted to the prompt's objects is the one to
#   read there; Gemma-3-270M has a single key-value head, so the value receivers of PD and SR are shared by all the
#   heads of a layer and those stages are layer-level there.

# %%
record = report.write_results(cfg, pre, runs, claims, cost)
page.md(f"Results written for profile `{record['profile']}`: {len(record['claims'])} claims; page run time "
        f"{time.perf_counter() - start:.0f} s.")
