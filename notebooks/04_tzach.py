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
# # Accuracy per token and strong-match clusters in a BERT-6
#
# **Paper.** Tzach, Gross, Koresh, Rosner, Shpringer, Halevi & Kanter (2025), *Learning Mechanism Underlying NLP
# Pre-Training and Fine-Tuning*, arXiv 2509.03407.
#
# **The claims.** Read a masked language model token type by token type. The *accuracy per token* APT(t) is the
# share of the positions selected for masking whose original token t the model recovers; its unweighted mean over
# token types, ⟨APT⟩, is the paper's order parameter of pre-training. In a BERT-6 pre-trained on Wikipedia:
#
# - ⟨APT⟩ rises along the transformer blocks, from **0.037 at the embedding to 0.31 after block 6** (Table 1);
#   APT rises with token frequency and with the size W_S of the pre-training set;
# - pre-training groups tokens into finite, small clusters of *strong-match* tokens (tokens predicted in place of
#   one another), which sharpen towards the output;
# - fine-tuning accuracy on classification (FewRel, DBpedia) rises along the blocks;
# - the fine-tuned classifier's confidence does not depend on the mean APT of its input's tokens.
#
# **Prerequisites.** The BERT base of the *base models* page (`bases.load("study:bert", profile)`); WordNet 3.0 from the
# data page. It trains the small-data BERTs of section 3 and the fine-tuned classifiers of section 5.
# **Runtime:** the appendix ({doc}`08_performance`) lists this build's time for every notebook.

# %% tags=["parameters"]
profile = "tiny"  # str, one of smoke | tiny | local | paper: the settings file notebooks/params/04_tzach/<profile>.yaml
params = {}  # dict: overrides as one mapping, e.g. {"seed": 1}; the single parameters below win
# None below means the profile's value
seed = None  # int, in [0, 2147483647]: seed of the first run; further seeds count up from it
recompute = None  # bool: rebuild cached artifacts instead of loading them
base_source = None  # str: '': the study's BERT base (00_base_models); else a folder or hub id of a BERT masked LM
allow_network = None  # bool: let the paper profile download base_source from the hub
device = None  # str, one of 'auto', 'cpu', 'cuda': where models run
bf16 = None  # bool | str, one of 'auto', True, False: bf16 autocast while training: 'auto' (bf16 only where the hardware runs it natively: a CPU with AVX512-BF16/AMX or a CUDA device with bf16; fp32 elsewhere), true or false; fine-tuning and probe heads
n_seeds = None  # int, in [1, 20]: seeds: mask draws of held-out windows (APT; pooled as more positions), task splits (fine-tuning)
n_ctx = None  # int, in [8, 512]: tokens per held-out window (capped by the model)
eval_rows = None  # int, in [4, 1000000]: held-out windows masked per seed for APT
probe_rows = None  # int, in [4, 1000000]: training windows whose masked positions train the probes
probe_steps = None  # int, in [1, 1000000]: AdamW steps of each fresh MLM head (probe)
probe_batch = None  # int, in [1, 65536]: masked positions per probe step
probe_lr = None  # float, in [1e-06, 1.0]: probe learning rate (constant)
apt_top_k = None  # int, in [1, 100000]: k of APT(k): mean APT over the k most frequent token types
freq_bins = None  # int, in [2, 100]: log-spaced frequency bins for APT against frequency
ws_fractions = None  # list, in [0.0001, 1.0]: pre-training set sizes W_S, as fractions of the base's rows (the W_S claim's sign test needs 6 sizes)
ws_protocol = None  # str, one of 'same_epochs', 'same_steps': smaller W_S: as many epochs (steps scale with W_S) or as many steps as the base
ws_same_steps = None  # list, in [0.0001, 0.9999]: with same_epochs: sizes also pre-trained for the base's number of steps, beside the sweep (more data against more compute)
ws_full_steps = None  # int, in [0, 10000000]: steps at W_S: 1 (0: the base's own; needed for base_source)
ws_lr = None  # float, in [0.0, 1.0]: learning rate of the W_S models (0: the base's recipe)
cluster_min_count = None  # int, in [1, 1000000]: token types selected fewer times are left out of clusters
topic_classes = None  # list, each one of 'noun.Tops', 'noun.act', 'noun.animal', 'noun.artifact', 'noun.attribute', 'noun.body', 'noun.cognition', 'noun.communication', 'noun.event', 'noun.feeling', 'noun.food', 'noun.group', 'noun.location', 'noun.motive', 'noun.object', 'noun.person', 'noun.phenomenon', 'noun.plant', 'noun.possession', 'noun.process', 'noun.quantity', 'noun.relation', 'noun.shape', 'noun.state', 'noun.substance', 'noun.time': WordNet lexicographer files of the topic task (DBpedia-like)
relations = None  # list, each one of 'hypernym', 'instance_of', 'part_meronym', 'member_meronym', 'substance_meronym', 'antonym', 'similar_to', 'derivation', 'also_see', 'pertainym', 'entailment', 'cause', 'attribute': WordNet relations of the relation task (FewRel-like)
task_per_class = None  # int, in [4, 100000]: examples per class in each task (train + test)
task_train_per_class = None  # int, in [2, 100000]: of which in the training split
task_max_len = None  # int, in [8, 512]: tokens per task input (longer ones are cut)
ft_steps = None  # int, in [1, 1000000]: steps of full fine-tuning (classifier for analysis 6)
ft_batch = None  # int, in [1, 4096]
ft_lr = None  # float, in [1e-06, 1.0]: peak fine-tuning learning rate (linear decay)
n_ft_seeds = None  # int, in [1, 20]: fully fine-tuned classifiers per task (seed: split seed)
n_boot = None  # int, in [10, 1000000]: bootstrap resamples for correlation intervals
local_model = None  # str, one of 'smollm2-135m-instruct', 'gemma-3-270m': local profile model
local_rows = None  # int, in [1, 100000]: local profile: held-out blocks of local_n_ctx tokens
local_n_ctx = None  # int, in [8, 4096]

# %%
from lib import page
from lib.chapters.tzach import build, claims, config, measure, report

cfg = config.Config.from_namespace(globals())  # every parameter validated before any work starts
page.setup()
cfg.table()

# %% [markdown]
# ## The models
#
# The *base* is the study's BERT-6 masked LM from the base-models page: six pre-LN blocks (RoBERTa-PreLayerNorm:
# each sublayer's LayerNorm before it, one final LayerNorm after the last block, no dropout), a WordPiece
# vocabulary trained on the offline English corpus, and a one-cycle learning rate (warm-up, then linear decay to
# 0). It trains with `bert_mask_rate` of the positions selected (80 % of those replaced by [MASK], 10 % by a random
# token, 10 % unchanged), the MLM head applied to the selected positions only; every evaluation here uses the
# paper's 15 %. The base-models page trains `bert_seeds` such BERTs, identical but for the seed of their
# initialisation, batch order and masks: they are the replicates of the depth and cluster claims (`base`,
# `base #2`, ...). The *control* has the same architecture and random weights. Held-out windows come from the
# English corpus's validation documents, which no model trained on.
#
# Before any APT claim is read, each pre-trained model must have learned more than token frequencies: its held-out
# masked-LM loss must lie `claims.MIN_LOSS_GAP` nats below that of the unigram predictor fitted on the pre-training
# rows. A model on the frequency plateau predicts the frequent tokens everywhere, and its APT structure (a rise with
# frequency, a few clusters of tokens it predicts everywhere) is the plateau's, not pre-training's.

# %%
s = build.setup(cfg)
report.text_profile(s)

# %%
gaps = measure.loss_gaps(s)  # held-out loss of every pre-trained model against the unigram predictor
report.training_table(s, gaps)

# %%
report.text_training(s, gaps)

# %% [markdown]
# ## 1. APT and token frequency
#
# *Does the model recover frequent tokens more often than rare ones?* The held-out windows are masked with the
# paper's protocol (15 %, 80/10/10; the base trained at `bert_mask_rate`), `n_seeds` times with different draws, pooled: the draws add positions, they are
# not replicates of the model. Only [MASK] positions count here (the 10 % shown unchanged can be copied). ⟨APT⟩ is
# the mean over the token types selected at least `measure.MIN_OCCURRENCES` (20) times: a type seen once or twice
# has APT 0 or 1, so the paper's mean over every type seen depends on the size of the test set. APT(k) is our
# reading of the paper's APT(50), whose definition we could not check: the mean APT over the k most frequent token
# types of the pre-training rows (k = `apt_top_k`; the other reading, types with ≥ 50 occurrences, is close to our
# ⟨APT⟩). The rule compares APT with two baselines on the same types: the random-init control and the unigram
# predictor (a guess drawn from the pre-training frequencies, expected APT(t) = p(t)), because any model that
# predicts frequent tokens has an APT that rises with frequency. An evaluation with fewer than
# `claims.MIN_POSITIONS` selected positions per model leaves every APT claim "not testable at this scale".

# %% mystnb={"figure": {"caption": "Left, APT of each token type selected at least 20 times at [MASK] positions (final MLM head) against its frequency in the pre-training rows, beside the random-init control and the unigram predictor p(t); right, mean APT per log-spaced frequency bin after block 0 and the middle block (tuned head) and after the last block (the model's own head).", "name": "fig-tzach-frequency"}}
blocks = measure.blocks(s)  # every block, base and control, two readouts, n_seeds mask draws (cached)
fa = measure.final_apt(s, blocks)
report.frequency_figure(fa)

# %%
report.text_frequency(s, fa)

# %% [markdown]
# ## 2. ⟨APT⟩ along the blocks
#
# *How much of the masked token can be read from the output of block b?* The paper does not say how it reads an
# intermediate block, so two readouts are compared: the **logit lens** applies the base's trained MLM head to block
# b's output as it is; the **tuned head** (the headline, fixed before looking at results) starts from a copy of the
# model's own MLM head and is trained on the frozen block-b states at the [MASK] positions of masked training
# windows (tuned-lens style: at step 0 it is the logit lens). It asks what the block *holds*, not whether the
# block already speaks the output head's language. Both are reported on **[MASK] positions**. **Block 0 is
# defined by its readout:** the embedding output at a [MASK] position is the [MASK] embedding plus the position,
# so block 0's ⟨APT⟩ is what the tuned head can guess from the position alone. The spread that decides the claim
# is over independently pre-trained models (see the rule), not over mask draws.

# %% mystnb={"figure": {"caption": "⟨APT⟩ (types selected at least 20 times) after each block (0 = embedding output) of each pre-trained base and of the random control, read out by the tuned head (the model's MLM head trained on the frozen block, solid) and by the model's own MLM head (logit lens, dashed); left over the [MASK] positions (the headline), right over all selected positions (the 10 % shown unchanged can be copied). Mask draws pooled. Stars: the paper's values for its BERT-6 (shown when the model has six blocks).", "name": "fig-tzach-blocks"}}
report.blocks_figure(blocks)

# %%
measure.block_summary(blocks)

# %%
report.text_blocks(s, blocks)

# %% [markdown]
# ## 3. ⟨APT⟩ and the size of the pre-training set
#
# *Does more pre-training data give a higher ⟨APT⟩?* Smaller-data BERTs of the base's architecture are pre-trained
# here on the first fraction of the base's pre-training rows (fewer distinct documents). With `ws_protocol =
# same_epochs` each sees its rows as many times as the base saw its own (about once), so its steps scale with
# W_S, as in the paper's fixed number of epochs per W_S, and it is cheap; `same_steps` keeps the base's step count
# instead (several epochs on the smaller sets). Under `same_epochs` more data also means more compute, so the sizes
# in `ws_same_steps` are trained a second time for the base's steps: the triangles of the figure, which separate
# the two.

# %% mystnb={"figure": {"caption": "⟨APT⟩ and APT(k) of the final MLM head against the number of pre-training rows (log axis), the mask draws pooled; top axis: tokens processed; triangle: the base's steps on fewer rows. Table: the models of this page.", "name": "fig-tzach-ws"}}
ws = measure.ws(s, blocks)
report.ws_figure(ws)

# %%
report.models_table(s, ws)

# %%
report.text_ws(ws)

# %% [markdown]
# ## 4. Token confusion matrix and strong-match clusters
#
# *Which tokens does the model take for one another?* M[i, j] counts selected positions with true token i
# predicted as j (a sparse matrix, never dense, so a 30k vocabulary is fine). Following the paper, rows whose
# maximum is off the diagonal are dropped and each kept row is divided by its diagonal, so M̂[i, i] = 1. Our rule
# for clusters (the paper gives none): tokens i, j are linked when M̂[i, j] reaches the threshold of the
# small-clusters rule (`claims.CLUSTER_THRESHOLD`, stated under Verdict) in either direction; clusters are the connected components with at least two tokens. Token types selected fewer than
# `cluster_min_count` times are left out (their row maximum is noise). One number per block says how *sharp* the
# clustering is: the share of the kept tokens' confusions that land on a member of their own cluster. Everything
# is on [MASK] positions. The rules compare each model with a **null** that shuffles its predictions across
# positions (both marginals kept, the pairing broken: clusters of tokens the model predicts everywhere appear in
# it too) and with the random-init control; the sharpening's interval is a bootstrap over positions.

# %% mystnb={"figure": {"caption": "Left, the size distribution of the strong-match clusters of the base's final head; middle, how many token types keep their row maximum on the diagonal after each block (the rows the normalisation keeps); right, the share of those tokens' confusions that fall inside their cluster, shown where enough token types are kept (`MIN_KEPT`).", "name": "fig-tzach-clusters"}}
clusters, final = measure.clusters(s, blocks, claims.CLUSTER_THRESHOLD)
evidence = measure.cluster_evidence(s, blocks, clusters, claims.CLUSTER_THRESHOLD, claims.MIN_KEPT)  # nulls, bootstrap
report.clusters_figure(clusters, final)

# %%
report.text_clusters(s, clusters, final)

# %%
report.cluster_examples(s, final)

# %% [markdown]
# ## 5. Classification accuracy along the blocks
#
# *Does a classifier reading block b do better the deeper b is?* Two WordNet tasks stand in for the paper's:
# **topic** (DBpedia-like: a noun definition → its lexicographer file, e.g. `noun.animal`) and **relation**
# (FewRel-like: a word pair → its WordNet relation, e.g. hypernym, part meronym, antonym). The representation after
# block b is the mean over the input's tokens; a logistic-regression head is trained on it with the encoder frozen,
# for the pre-trained base, the random control and the fully fine-tuned base (*tuned*). Seeds are different
# train/test splits.

# %% mystnb={"figure": {"caption": "Test accuracy of a logistic head on the frozen, mean-pooled output of each block, for the pre-trained base, the random control and the fine-tuned base; mean ± sd over splits; dotted: chance.", "name": "fig-tzach-finetune"}}
fin = measure.finetune(s)
report.finetune_figure(fin)

# %%
report.text_finetune(s, fin)

# %% [markdown]
# ## 6. Confidence and the input's APT
#
# *Is the classifier less sure of inputs made of poorly predicted tokens?* For each test input of the fine-tuned
# classifier: its confidence (largest class probability) against the mean APT (final MLM head, all seeds pooled)
# of its tokens, with 95 % bootstrap intervals.

# %% mystnb={"figure": {"caption": "Confidence of the fine-tuned classifier against the mean APT of each test input's tokens.", "name": "fig-tzach-confidence"}}
conf = measure.confidence(s, fin, fa)
report.confidence_figure(conf)

# %%
report.text_confidence(conf)

# %% [markdown]
# ## Extension: APT along the layers of a packaged causal LM
#
# In the `local` profile the analysis of section 2 runs on a real pretrained model shipped in a PyPI package
# (SmolLM2-135M-Instruct): **next-token accuracy of an instruction-tuned, 4-bit-quantised causal LM**, read through
# the logit lens (final norm and unembedding applied to each layer). Its last layer is the model's own output by
# construction, so a rise along the layers is guaranteed by the lens: this is a different claim from the paper's
# masked-token one, shown as an extension and never scored as a reproduction.

# %%
local = measure.local_apt(s)
report.local_figure(local)

# %% [markdown]
# *Figure (`local` profile): next-token ⟨APT⟩ and position-weighted accuracy after each layer of the packaged causal
# LM, read through its final norm and unembedding.*

# %%
report.text_local(local)

# %% [markdown]
# ## Verdict
#
# Rules, fixed in `lib.chapters.tzach.claims` before the runs (each threshold a constant there, none a parameter):

# %%
page.rules((claims.DEPTH_CAUSAL,) if s.base is None else claims.RULES)

# %%
verdicts = (claims.local_claims(local) if s.base is None else
            claims.claims(measure.for_claims(s, blocks, fa, ws, evidence, fin, conf, gaps)))
page.verdict_table(verdicts)

# %% [markdown]
# ## What differs from the paper
#
# - **Scale** (next cell, computed). The `paper` profile takes a BERT L6-H768 from the hub (Turc et al. 2019), not
#   the paper's own checkpoint, which is not released.
# - **The BERT's recipe.** The paper's BERT-6 is a standard (post-LN) BERT trained with 15 % masking; ours is
#   pre-LN and trains with `bert_mask_rate` of the positions selected (both for a small CPU budget: pre-LN tolerates
#   a higher learning rate, and more selected positions give more supervised targets per token processed). The APT
#   evaluation keeps the paper's 15 %, 80/10/10.
# - **Data.** Held-out text is the offline English corpus (GCIDE, WordNet glosses, Python docs), not Wikipedia;
#   the fine-tuning sets are WordNet-derived stand-ins for DBpedia-14 and FewRel, and WordNet glosses were also
#   pre-training text (as Wikipedia was for the paper's model).
# - **Method choices the paper leaves open:** the intermediate-block readout (both shown; the tuned head is the
#   headline), APT(50) (top-k by frequency), ⟨APT⟩ over types selected ≥ 20 times rather than every type seen, the
#   cluster threshold and rule, the sharpness number, and the per-block classifier (frozen states and a logistic
#   head, not a BERT truncated to b blocks and fine-tuned), compared with the control's at the same block.
# - **W_S** is varied over the study's own rows with as many epochs per size, on a far smaller range than the
#   paper's article counts.

# %%
report.text_differences(s)

# %%
record = report.write_results(s, verdicts)
