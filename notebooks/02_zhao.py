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
# # Where instruction tuning makes representations task-specific
#
# **Paper.** Zhao, Ziser & Cohen (2024), *Layer by Layer: Uncovering Where Multi-Task Learning Happens in
# Instruction-Tuned Large Language Models* (EMNLP). They tune Llama-2-7B with LoRA on 69 Flan tasks together
# (the experimental model E1) and on each task alone (the control models C_t), and compare E1 and the untuned
# model (E0) with every C_t, layer by layer, with linear CKA on the last prompt token's hidden state (MOSSA).
# Their claims:
#
# 1. the pre-trained model's similarity to the controls is high in early layers and falls with depth (a sanity
#    check rather than a finding: any fine-tune changes later layers more);
# 2. the instruction-tuned model stays much closer to the controls;
# 3. some tasks (sentiment, paraphrase) are already encoded by pre-training, others (translation,
#    summarisation) need tuning;
# 4. Llama-2-7B's 32 layers fall into **shared (1–9), transition (10–15) and refinement (16–32)** groups;
# 5. the question of whether this carries over to tasks the tuned model never saw.
#
# Two controls the paper's design needs are added here: a **cross-task baseline** (how similar controls of
# *other* tasks, tuned in the same format, are to C_t) and a **direct probe** of what the base encodes.
#
# **Here.** The same design at small scale: the study's few-layer GPT-style base (its size is in the setup line
# below), instruction tasks with exact answers in six clusters (built offline from WordNet, GCIDE, the Python
# standard library and generators), one control per task, a multi-task model that leaves some tasks out, and
# several seeds for every tuned model (the parameters table says how many).
#
# **Prerequisites:** the base model of *The base models* (cached). It trains many small models (the page reports
# the measured time). **Runtime:** the appendix ({doc}`08_performance`) lists this build's time for every notebook.

# %% tags=["parameters"]
profile = "tiny"  # str, one of smoke | tiny | local | paper: the settings file notebooks/params/02_zhao/<profile>.yaml
params = {}  # dict: overrides as one mapping, e.g. {"seed": 1}; the single parameters below win
# None below means the profile's value
seed = None  # int, in [0, 2147483647]: seed of the first run; further seeds count up from it
recompute = None  # bool: rebuild cached artifacts instead of loading them
tasks = None  # list, each one of 'topic', 'pos', 'isa', 'antonym', 'synonym', 'gloss_match', 'reverse', 'count', 'num2words', 'words2num', 'code_type', 'py_eval': instruction tasks (lib.tasks.instructions)
held_out = None  # list, each one of 'topic', 'pos', 'isa', 'antonym', 'synonym', 'gloss_match', 'reverse', 'count', 'num2words', 'words2num', 'code_type', 'py_eval': tasks left out of E1's mixture (the unseen-task question): a whole cluster, so that no held-out task has a seen sibling
n_train = None  # int, in [4, 1000000]: training examples per task
n_test = None  # int, in [4, 100000]: test examples per task (CKA and accuracy)
n_seeds = None  # int, in [1, 10]: seeds of every tuned model (C_t and E1)
control_steps = None  # int, in [1, 1000000]: optimizer steps of each control model C_t
e1_steps = None  # int, in [1, 1000000]: optimizer steps of the multi-task model E1
batch_size = None  # int, in [1, 4096]: examples per step (the paper: 4 x 4 accumulation: 16)
lr = None  # float, in [1e-07, 1.0]: peak learning rate (cosine decay, 10% warm-up)
lora_rank = None  # int, in [0, 1024]: LoRA rank (0: full fine-tuning); the paper: 8
lora_alpha = None  # float, in [0.1, 10000.0]: LoRA alpha; the paper: 16
lora_targets = None  # list: module names given LoRA adapters (GPT-2's fused q/k/v projection is c_attn; Llama/Gemma: q_proj, v_proj)
max_len = None  # int, in [8, 4096]: longest prompt + answer in tokens (prompts cut from the left)
template = None  # str, one of 'plain', 'llama2': instruction template
synthesis_task = None  # str, one of 'topic', 'pos', 'isa', 'antonym', 'synonym', 'gloss_match', 'reverse', 'count', 'num2words', 'words2num', 'code_type', 'py_eval': the control model offered to the synthesis chapter
local_model = None  # str, one of 'smollm2-135m-instruct', 'gemma-3-270m': local profile: packaged model
paper_model = None  # str: paper profile: hub id or local folder
allow_network = None  # bool: paper profile: let load_hub reach the Hugging Face hub
bf16 = None  # bool | str, one of 'auto', True, False: bf16 autocast while training: 'auto' (bf16 only where the hardware runs it natively: a CPU with AVX512-BF16/AMX or a CUDA device with bf16; fp32 elsewhere), true or false; analysis stays float32
dtype = None  # str, one of 'float32', 'bfloat16': weights dtype of the base (paper: bfloat16)
device = None  # str, one of 'cpu', 'cuda', 'auto': where models run
threads = None  # int, in [0, 256]: torch CPU threads (0: the process's own: `make book` gives each kernel its share of the cores)

# %%
from lib import page
from lib.chapters.zhao import build, claims, config, measure, report

cfg = config.Config.from_namespace(globals())  # every parameter validated before any work starts
page.setup()
cfg.table()

# %% [markdown]
# ## The tasks
#
# Flan groups its tasks into clusters (NLI, sentiment, paraphrase, translation, ...). Our tasks share one
# instruction template (`Task: <instruction>` / `Input: <input>` / `Answer:`) and come in six clusters. Each is
# declared *semantic* (judge the meaning of text the base read in pre-training: the analogue of the paper's
# sentiment and paraphrase tasks) or *structured* (compute something from the input's form: the analogue of
# translation and summarisation) before any model is trained, and separately answers with a *label* or a free
# *generation* (`count` is a structured label task), so the kinds can be compared within one answer type. Train
# and test items never share a key (word, number, word list), across tasks too.

# %%
data, data_art = build.task_data(cfg)
report.task_table(cfg, data)

# %% [markdown]
# ## The models and their task accuracy
#
# E0 is the pretrained base. Every C_t and E1 is tuned from a copy of it with the loss on the answer tokens only
# (prompt tokens masked): LoRA adapters merged afterwards (the paper's recipe; smoke, local and paper profiles) or
# full fine-tuning (tiny profile; see the setup line below). Accuracy is choice accuracy for the label tasks (the
# answer with the highest log-probability among the allowed ones) and exact match of greedy decoding for the others.
# MOSSA reads C_t as the model that learned task t, so a task whose control did not beat the base in every seed is
# left out of every claim (and counted in the verdict's record); a claim about E1 also leaves out the seen tasks E1
# did not learn in every seed. The table gives each seed's gain over the base.

# %%
res, analysis_art = measure.run(cfg)
report.setup_text(res, cfg)

# %%
report.accuracy_table(res)

# %%
report.accuracy_text(res)

# %% [markdown]
# ## 1. Representations and similarity
#
# For each task t, E0, E1 and C_t read the same test prompts; the representation is the hidden state of the last
# prompt token (the `:` of `Answer:`) at every layer, and linear CKA compares E with C_t per layer. The figures use
# the estimator the verdicts read (see *Biased and debiased CKA* below). The heatmaps show the mean over seeds;
# held-out tasks are marked with `*`.

# %% mystnb={"figure": {"caption": "Linear CKA between each control C_t and the pretrained base E0 (left) or the multi-task model E1 (right), per task (rows) and layer (columns), on task t's test prompts; mean over seeds. `*` marks tasks left out of E1's training mixture.", "name": "fig-zhao-heatmaps"}}
report.heatmaps(res)

# %% mystnb={"figure": {"caption": "The same CKA averaged within each task cluster: E0–C_t and E1–C_t with ±1 sd over seeds (bands), and, dashed, two controls of the same task trained from different seeds (how similar two equally good task-specific models are).", "name": "fig-zhao-clusters"}}
report.cluster_figure(res)

# %%
report.curves_text(res)

# %% [markdown]
# ### The cross-task baseline
#
# Every tuned model here learns the same template, the same answer-only loss and the same read-out position, so
# E1 moving towards C_t could be shared format adaptation rather than task-specific information. The baseline
# MOSSA needs is the similarity of C_t to the controls of the *other* tasks, C_s for s ≠ t, on t's prompts; a
# task-specific gain is CKA(E1, C_t) above it.

# %% mystnb={"figure": {"caption": "Over the seen tasks learned by both their control and E1: CKA of E0 and E1 with C_t and the cross-task baseline (mean over the other tasks s of CKA(C_s, C_t) on task t's prompts), mean ± sd over seeds.", "name": "fig-zhao-baseline"}}
report.baseline_figure(res)

# %%
report.baseline_text(res)

# %% [markdown]
# ## 2. Shared, transition and refinement layers
#
# **Rule** (stated before looking; its thresholds are in the verdict's rules below): the gain of instruction tuning
# at layer L is the mean over the seen tasks learned by both their control and E1 of CKA(E1, C_t) − CKA(E0, C_t).
# Relative to its
# maximum over layers, layers before the first with a share at or above the lower threshold are *shared* (tuning
# changed little that the controls did not share with the base), layers from the first with a share at or above
# the upper threshold on are *refinement*, and those in between are the *transition*. The paper's grouping must
# first rest on a gain that rises with depth (in every seed's interval), then appear in most seeds' curves and in
# most bootstrap resamples of the tasks: one seed's or one task's curve is not a finding. A model with six layers
# or fewer cannot place a transition at the paper's depth within one layer, so there the claim is not testable.

# %% mystnb={"figure": {"caption": "The gain of E1 over E0 in similarity to the controls, per layer (relative depth on top); thin lines are seeds, the thick line their mean; shading shows the groups found by the rule on the mean curve.", "name": "fig-zhao-groups"}}
report.groups_figure(res)

# %%
report.group_table(res)

# %%
report.groups_text(res)

# %% [markdown]
# ## 3. Which tasks does pre-training already encode?
#
# The paper reads a high E0–C_t similarity as "pre-training already encodes the task" (sentiment, paraphrase)
# and a low one as "the task needs instruction tuning" (translation, summarisation).

# %% mystnb={"figure": {"caption": "E0–C_t CKA averaged over layers and seeds per task, coloured by the kind declared in advance; hatched bars are tasks whose control did not beat the base's accuracy (left out of the claims).", "name": "fig-zhao-encoded"}}
encoded = measure.encoded_table(res, claims.estimator_for(res))
report.encoded_figure(encoded)

# %%
encoded

# %%
report.encoded_text(encoded)

# %% [markdown]
# ### Measured directly: what a probe reads off the base
#
# A high E0–C_t similarity can also mean that the control learned little. So the encoding is probed directly: a
# linear probe (cross-validated on the test prompts) reads each task's label (label tasks) or first answer token
# (generation tasks) off the last prompt token's state, on E0 and on C_t. The kinds are compared within one answer
# type, since the semantic tasks are mostly label tasks.

# %% mystnb={"figure": {"caption": "Best-layer accuracy of a linear probe for each task's label or first answer token, on the base E0's states and on the control C_t's (mean over seeds); black bars: the probe's chance rate. In brackets: the task's kind and answer type.", "name": "fig-zhao-probe"}}
report.probe_figure(res)

# %%
report.probe_table(res)

# %%
report.probe_text(res)

# %% [markdown]
# ## 4. Unseen tasks
#
# The paper asks whether the effects carry over to tasks the tuned model never saw (its answer was not
# retrieved). Here a whole cluster is left out of E1's mixture, so no held-out task has a seen sibling: does E1
# still move towards their controls, beyond the cross-task baseline?

# %% mystnb={"figure": {"caption": "CKA with the control of each held-out task, for E0 and E1 (mean ± sd over seeds), beside the mean over seen tasks.", "name": "fig-zhao-unseen"}}
report.unseen_figure(res)

# %%
report.unseen_text(res)

# %% [markdown]
# ## Biased and debiased CKA
#
# The paper's CKA is the biased estimator, which is inflated when the number of prompts is not large against
# the width. The same comparison with the debiased estimator (Song et al. 2007; Nguyen et al. 2021):

# %%
measure.estimator_table(res)

# %% [markdown]
# ## Verdict
#
# Each claim is decided from per-seed effects: *reproduced* when the confidence interval of the mean effect lies
# above the rule's margin, *not reproduced* when it lies at or below it, *inconclusive* when it straddles it, when
# there are too few seeds, or when too few tasks' controls learned their task; *not testable at this scale* when a
# stated precondition fails. The layer-group claim is *partly* reproduced when its gain rises with depth and the
# paper's grouping is found in most seeds or in most task resamples, but not in both. The rules, as the tests read
# them:

# %%
page.rules(claims.RULES)

# %%
verdicts = claims.claims(res)
report.estimator_text(res, verdicts)

# %%
page.verdict_table(verdicts)

# %%
record = report.write_results(res, cfg, verdicts)

# %% [markdown]
# ## What differs from the paper
#
# - **Scale.** A small model pretrained by the study (a few minutes of CPU; its size is in the setup line) instead
#   of Llama-2-7B (32 layers, 4096 wide); the layer groups span a handful of layers, so relative depths are coarse.
# - **Data.** A dozen small offline tasks with exact answers instead of Flan 2021's 69 tasks and 12 clusters; no
#   sentiment, NLI, translation or summarisation data exist offline, so their analogues are lexical judgements,
#   number-name "translation" and word-list transformations. Two lexical tasks are set at this scale: `isa` asks
#   whether a noun is a kind of one of six coarse classes, and a wrong `gloss_match` definition comes from another
#   part of speech (in pilots on the tiny base, judging a pair of open-class words stayed at chance). `antonym` and
#   `synonym` keep that harder form; the accuracy table shows whether their controls learned them.
# - **Tuning.** The tiny profile fine-tunes every weight for a few hundred steps at a higher learning rate; the
#   paper trains LoRA adapters (rank 8 on q and v) for three epochs at 5e-5. In a pilot, rank-8 LoRA on GPT-2's
#   fused q/k/v projection `c_attn` learned the answer format but not the label tasks within that budget. No
#   system prompt. The E1 models see each seen task less often than its control does (the step budget); the claims
#   about E1 read only the tasks it learned. Full fine-tuning at that learning rate (chosen so that the controls
#   learn their tasks) moves the first layers too, unlike adapters on a 32-layer model, so the sanity check that
#   E0–C_t similarity falls with depth can fail here for a reason that has nothing to do with multi-task tuning.
# - **Cross-task baseline.** For each task the controls of a few other tasks (spread around the task list, the
#   count is `lib.chapters.zhao.measure.CROSS_OTHERS`) are read on its prompts, not all of them: the baseline is
#   their mean.
# - **Seeds.** Several seeds per tuned model (the paper reports one run).
# - **Representations.** As in the paper: the last prompt token, every layer, CKA per task over the test prompts
#   (a few hundred rather than up to 10,000).
