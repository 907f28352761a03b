"""Chapter 4 (Tzach et al. 2025, arXiv 2509.03407): accuracy per token (APT) and strong-match token clusters in a
BERT-6, read block by block.

Tzach, Gross, Koresh, Rosner, Shpringer, Halevi & Kanter 2025, "Learning mechanism underlying NLP pre-training and
fine-tuning", read a masked language model token type by token type. Mask text as in pre-training (15 % of the
positions selected; of those 80 % become [MASK], 10 % a random token, 10 % stay) and, over the selected positions
only, count for each token type t how often the model recovers it:

    APT(t) = #{selected i: x_i = t, argmax p(.|i) = t} / #{selected i: x_i = t},   ⟨APT⟩ = mean_t APT(t)

(`lib.apt`). ⟨APT⟩ weighs every token type alike: an order parameter of how many *types* the model has learned.

The package, in import order: `config` (parameters) < `build` (the base, the control, the W_S models, the
fine-tuned classifiers and the per-block readouts, all through the cache) < `measure` (one function per page
section) < `claims` (the paper's numbers and the rules) < `report` (figures, tables, computed sentences, the
results record). Only the notebook `notebooks/04_tzach.py` imports all five.
"""
