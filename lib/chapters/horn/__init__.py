"""Chapter 05_horn: tracking sparse-autoencoder (SAE) features through fine-tuning and SLERP merging (after Horn &
Elliott 2024, "Tracking Universal Features Through Fine-Tuning and Model Merging", arXiv 2410.12391).

The method, at the study's scale:

1. Models. A one-layer Mistral-style LM `base` (English prose + Python) is fine-tuned on two new domains, `stories`
   and `lua`; the two fine-tunes are merged by SLERP, `merged = slerp(lua, stories, t=0.58)` (mergekit semantics:
   t=0 is Lua, lib.merging).
2. One SAE per model on the MLP activations `blocks.0.mlp.hook_post` (the input of the down projection; lib.sae),
   trained on the model's own data mixture, as the paper does.
3. Matching. Every SAE reads the same comparison tokens (held-out base data); feature i of a parent and feature j of
   a child are the same feature when their activations correlate at r >= 0.8 over those tokens
   (`lib.sae.feature_correlations`). Along each edge parent -> child, parent features persist or disappear and child
   features emerge (`lib.sae.feature_flow`). Beside it, the two matchers of the paper's released code (`matching`:
   token profiles at r >= 0.8; the L1 "flow" matcher, similarity 0.05 and consistency 0.8), with its released counts.
4. Interpretation. The paper asks GPT-4 to explain features; offline, a feature is labelled by the token class of its
   top activations. Two case studies follow a variable-assignment feature (`=` in code) and a Python-exception
   feature (`raise`, `except`, `...Error`).

Two references the paper does not have: the same edges with the child's SAE trained from another seed (the paper
gives all SAEs one seed, so parent and child SAEs share their initialisation), and a control, two SAEs of the *same*
model that differ only in their seed. Every feature-persistence verdict is read against that control: where it is
too low, the SAEs do not identify features and the claim is not testable at this scale.

    config   the notebook's validated parameters (no verdict thresholds)
    build    the base, the fine-tunes, the merge and the SAEs, through the cache; `synthesis_pairs`
    matching the paper's token-profile and flow matchers, from their definitions (numerics only)
    measure  accuracy along the SLERP path, the feature comparison (cached), shares, categories, case studies
    claims   the paper's claims as rules (the matching threshold and margins as constants), `claims(measured)`
    report   figures, tables, computed sentences and the results record

Data (lib.corpora): `stories` = literary fortune cookies (Debian `fortunes`), the only narrative-like English that
ships offline (TinyStories cannot be downloaded); `lua` = Lua sources of six Debian packages (the paper used the Lua
subset of The Stack).
"""
