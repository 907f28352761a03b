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
# # Appendix: speed and memory
#
# Speed is a property of the study that we measure, not assume. This page reports, for the build that rendered
# it: how long every notebook took; how close the shared training loop and the batched patching sweep come to
# their lower bounds; and the cost of the two heaviest analysis kernels. Quote the *ratios*: they carry over to
# other machines, absolute seconds do not. A fuller report with cold and warm caches and peak memory per notebook
# comes from `make bench` (`python -m lib.bench`), shown at the end when one exists.
#
# The 16k × 16k feature correlation dominates this page's own time.

# %% tags=["parameters"]
profile = "tiny"  # str, one of smoke | tiny | local | paper: the settings file notebooks/params/08_performance/<profile>.yaml
params = {}  # dict: overrides as one mapping, e.g. {"seed": 1}; the single parameters below win
# None below means the profile's value
seed = None  # int, in [0, 2147483647]: seed of the first run; further seeds count up from it
recompute = None  # bool: rebuild cached artifacts instead of loading them
train_steps = None  # int, in [2, 10000]: steps of each loop in the training-loop overhead benchmark
sweep_batch = None  # int, in [1, 4096]: prompts in the patching-sweep benchmark
cka_n = None  # int, in [10, 1000000]: rows of the CKA benchmark
cka_d = None  # int, in [2, 65536]: columns of the CKA benchmark
sae_features = None  # int, in [16, 65536]: features per SAE in the feature-correlation benchmark
sae_tokens = None  # int, in [16, 1000000]: tokens in the feature-correlation benchmark
bench_report = None  # str: report of the last `make bench` to show (if it exists)

# %%
from lib import page
from lib.chapters import performance as study

cfg = study.Config.from_namespace(globals())  # every parameter validated before any work starts
page.setup()
cfg.table()

# %% [markdown]
# ## Notebooks of this build

# %%
timings = study.build_timings()
study.timings_text(timings)

# %%
timings

# %% [markdown]
# ## Overheads against lower bounds

# %%
m = study.micro(cfg)
study.micro_text(m)

# %%
study.ratio_table(m)

# %% [markdown]
# The sweep batches heads: the clean batch is replicated once per head in a chunk, and each copy patches a
# different head, so one forward pass tests many heads ({ref}`method-patching`). The lower bound is one plain
# forward pass per head at the clean batch size.

# %%
study.kernel_table(m)

# %% [markdown]
# ## The last `make bench`

# %%
header, bench_table = study.last_bench(cfg)
study.bench_text(header, cfg)

# %%
bench_table

# %%
loads = study.local_loads_table(header)
study.loads_text(loads)

# %%
loads

# %% [markdown]
# ## Precision and the hardware's ceiling
#
# Every chapter trains with `bf16: auto`: bf16 autocast only where the CPU (AVX512-BF16 or AMX) or GPU runs bf16
# natively, fp32 elsewhere, because emulated bf16 is several times *slower* than fp32. The last `make bench`
# measured both on its machine, and how close each base model's training comes to the fp32 matrix-multiply peak
# at its own shapes (one thread; training cost per token from Kaplan et al.'s 6N rule plus attention).

# %%
prec = study.precision_table(header)
study.precision_text(header)

# %%
prec

# %%
study.throughput_table(header)

# %%
study.compile_text(header)

