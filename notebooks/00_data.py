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
# # The offline corpora
#
# Every model in this study is trained on text that ships inside Debian packages or with Python itself: no
# machine that builds the book can reach the internet. This page builds the four corpora the chapters share,
# reports where each comes from and under which license, and fingerprints their content: the fingerprint is
# part of the cache key of every model trained on them, so a change in the data retrains what depends on it.
#
# **Prerequisites:** `make data` (run by `make book` and `make test`) has unpacked the Debian packages into
# `data/sources/`.
# **Runtime:** the appendix ({doc}`08_performance`) lists this build's time for every notebook.

# %% tags=["parameters"]
profile = "tiny"  # str, one of smoke | tiny | local | paper: the settings file notebooks/params/00_data/<profile>.yaml
params = {}  # dict: overrides as one mapping, e.g. {"seed": 1}; the single parameters below win
# None below means the profile's value
seed = None  # int, in [0, 2147483647]: seed of the first run; further seeds count up from it
recompute = None  # bool: rebuild cached artifacts instead of loading them
corpora = None  # list, each one of 'english', 'python', 'lua', 'stories': corpora to build
max_chars = None  # int, in [10000, 1000000000]: cap per corpus (whole documents, seeded sample)
sample_docs = None  # int, in [10, 1000000]: documents per corpus drawn for the length figure

# %%
from lib import page
from lib.chapters import data as study

cfg = study.Config.from_namespace(globals())  # every parameter validated before any work starts
page.setup()
cfg.table()

# %% [markdown]
# ## Where the text comes from
#
# Each Debian package ships the MD5 of every file it installs (`md5sums`); `make data` keeps a copy beside the
# unpacked files. Before anything is read, every file is checked against it: a missing, truncated or edited file
# stops the page here, naming the file and the command that repairs it (`make data`, which unpacks that package
# again). The checksums are also part of each corpus's cache key, so a changed source is never served from an old
# cache entry.

# %%
study.source_table()

# %% [markdown]
# ## What the corpora are
#
# - **english**: definitional and technical English: the GCIDE dictionary (Webster 1913 and additions), the
#   glosses of WordNet 3.0, and the prose of the Python 3.11 documentation. Narrative English is scarce offline;
#   this is the study's stand-in for BabyLM-style generic text.
# - **python**: the CPython 3.11.2 standard library as Debian 12 packages it (`libpython3.11-minimal` and
#   `libpython3.11-stdlib`, tests excluded), whatever interpreter runs the book: the version is in the table above.
# - **lua**: the Lua sources of six Debian packages (Penlight, LuaRocks, busted, LDoc, Prosody, Lmod): the new
#   code domain of chapter 5.
# - **stories**: short literary fortune cookies (anecdotes, jokes, quotations): the study's story-like English
#   domain for chapter 5, in place of TinyStories, which does not exist offline.

# %%
built = study.build_all(cfg)
table = study.summary_table(built)
table

# %% mystnb={"figure": {"caption": "Left, the distribution of document lengths per corpus (a seeded sample); right, the share of letters, digits, whitespace and punctuation. Code spends far more of its characters on whitespace and symbols than prose does: the difference the tokenizers and the chapter-5 features have to absorb.", "name": "fig-data-overview"}}
study.overview_figure(built, cfg)

# %%
study.overview_text(built, table, cfg)

# %% [markdown]
# ## Fingerprints
#
# The `fingerprint` column is the SHA-256 (first 16 hex digits) of each corpus's documents. Rebuilding the
# corpus from the same packages and the same parameters gives the same fingerprint (a unit test checks it).
# The fingerprints are recorded next to the results so a reader can tell whether two builds saw the same data.

# %%
study.write_results(built, cfg)
