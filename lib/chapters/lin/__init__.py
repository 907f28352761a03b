"""Chapter 01_lin: a pretrained GPT fine-tuned on a context-dependent decision task, against the same architecture
trained from scratch (after Lin 2024, "Fine-tuned network relies on generic representation to solve unseen
cognitive task", arXiv 2406.18926).

Three models per seed: `base` (the pretrained LM), `tuned` (base fine-tuned on the task, loss on the answer token
only) and `scratch` (the same architecture, randomly initialised, trained on the same data); both trainings stop at
the first evaluation whose validation accuracy reaches `criterion` (or at a step cap). The analyses, mostly at the
last prompt token where the answer is read out: learning curves, psychometric curves by context, per-layer linear
CKA, per-layer weight change, restoring one block at a time to its base weights, and linear probes.

    config   the notebook's validated parameters (no verdict thresholds)
    build    the base, the task data and the trained runs, through the cache; `synthesis_pairs`
    measure  one function per page section: models in, tables out
    claims   the paper's claims as rules (thresholds as constants), `claims(measured)`
    report   figures, tables, computed sentences and the results record

Profiles: `smoke` / `tiny` use the study's own GPT (`bases.load("study:gpt")`); `local` a packaged
SmolLM2-135M-Instruct, fine-tuned with LoRA; `paper` GPT-2 (124M) from the hub or a local folder (`base_source`).
"""
