"""Notebook 06_synthesis: one set of lenses on every base -> tuned pair the chapters produce.

The chapters of `lib.chapters.SYNTHESIS_SOURCES` offer their base -> tuned pairs (`<chapter>.build.synthesis_pairs`,
loaded from their caches): Lin's tuned and scratch models, Zhao et al.'s E1 and a control, Prakash et al.'s tuned
models, the BERT fine-tunes of Tzach et al., Horn & Elliott's fine-tunes and merge. Every pair goes through the three
lenses of `lib.lenses` (CKA to the base, relative weight change, cross-model patching recovery), one number per layer
point from depth 0 (embeddings) to 1 (last block), once per seed, cached per pair.

Each paper's conclusion about its pairs is a rule of `claims.py` over two per-seed indicators on the lenses, read
from their t-intervals against thresholds stated once there:

    config   the page's parameters (no thresholds)
    build    the pairs, through the lenses, cached per pair and seed; the chapters' own testability
    measure  seeds aggregated; halves; the numbers every rule and table reads
    claims   the rules, and one claim per pair
    report   the figure, the tables, the computed prose, the results record
"""
