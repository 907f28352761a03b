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
# # Reproduction scorecard
#
# One row per headline claim of each paper: the claim in a sentence, the paper's number, ours (mean ± standard
# deviation over seeds where a claim has a number) with the interval its decision read, the rule in one line, and
# a verdict with its reason; for a claim that was not decided, the failed precondition (with its measured value) or
# the missing power. Nothing here is typed: every chapter writes its claims to `results/<chapter>.json` when it
# runs, with its verdicts decided by rules stated on its own page (`lib.claims`), and this page only reads and lays
# them out. The synthesis's rows, which hold the papers' conclusions against the study's common lenses, are
# listed and counted apart from the papers' own claims.
#
# The verdicts (the same vocabulary on every page; see also the {doc}`../glossary`):
# A "not reproduced" at the `tiny` scale says that a model of a few million parameters (sizes below), trained on a
# few million tokens, does not show the effect; it does not refute a paper about 7-billion-parameter models.
#
# **Prerequisites:** the chapters of the same build (`make book` runs them first).

# %% tags=["parameters"]
profile = "tiny"  # str, one of smoke | tiny | local | paper: the settings file notebooks/params/07_scorecard/<profile>.yaml
params = {}  # dict: overrides as one mapping, e.g. {"seed": 1}; the single parameters below win
# None below means the profile's value
seed = None  # int, in [0, 2147483647]: seed of the first run; further seeds count up from it
recompute = None  # bool: rebuild cached artifacts instead of loading them
results = None  # str: folder of results/*.json to read; empty: this run's own results folder (the book's, when built by `make book`)

# %% tags=["hide-input"]
from IPython.display import display

from lib import page
from lib.chapters import scorecard as study

cfg = study.Config.from_namespace(globals())  # every parameter validated before any work starts
page.setup()
display(page.vocabulary())
records, missing = study.load(cfg)
counts = study.counts_table(records, missing)
n_claims = sum(len(r["claims"]) for r in records if not study.is_synthesis(r))
n_synthesis = sum(len(r["claims"]) for r in records if study.is_synthesis(r))
page.md(f"Results read from `{cfg.folder().name}/` of this build: {len(records)} records, {n_claims} claims of "
        f"the papers and {n_synthesis} rows of the synthesis"
        + (f"; **not run in this build: {', '.join(missing)}**." if missing else "."))

# %% [markdown]
# ## At a glance

# %% tags=["hide-input"] mystnb={"figure": {"caption": "Verdicts of the headline claims, per chapter, in the profile each chapter ran in.", "name": "fig-scorecard-counts"}}
fig = study.plot_counts(counts)

# %% tags=["hide-input"]
counts

# %% tags=["hide-input"]
profiles = sorted({r["profile"] for r in records})
glance = study.write_glance(cfg, records, missing)
page.md(f"Profile(s) of these results: {', '.join(profiles) or 'none'}. "
        + ("**Smoke-profile numbers only check that the code runs; they mean nothing scientifically.**"
           if "smoke" in profiles else
           "Model sizes (parameters, in millions) are given with each chapter's claims below."))

# %% [markdown]
# ## Every claim

# %% tags=["hide-input"]
from IPython.display import display

for head, table in study.chapter_sections(records):
    display(page.md(head))
    display(table)
