"""Chapter 01_lin: a pretrained GPT fine-tuned on a context-dependent decision task, against the same architecture
trained from scratch (after Lin 2024, "Fine-tuned network relies on generic representation to solve unseen
cognitive task", arXiv 2406.18926).

Per seed, on the same data and the same step budget: `tuned` (the pretrained `base` fine-tuned on the task, loss on
the answer token only), `scratch` (the same architecture from a random start), and three controls: `shuffled` (the
base with its weights permuted within each tensor, then fine-tuned: the null for "pretrained features matter") and
`frozen_early` / `frozen_late` (fine-tunes with half the blocks frozen). The analyses, mostly at the last prompt
token where the answer is read out: learning curves, psychometric curves by context, retention of each run's
starting point per block (linear predictivity and debiased CKA) and tuned-tuned' / scratch-scratch' references,
weight change, restoring a block's attention or MLP to base, probes with random-init baselines, and a linear readout
of the answer from the frozen base.

    config   the notebook's validated parameters (no verdict thresholds)
    build    the base, the task data and the trained runs, through the cache; `synthesis_pairs`
    measure  one function per page section: models in, tables out
    claims   the paper's claims as rules (thresholds as constants), `claims(measured)`
    report   figures, tables, computed sentences and the results record

Profiles: `smoke` / `tiny` use the study's own GPT (`bases.load("study:gpt")`); `local` a packaged
SmolLM2-135M-Instruct, fine-tuned with LoRA; `paper` GPT-2 (124M) from the hub or a local folder (`base_source`).
"""
