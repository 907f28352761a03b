"""Chapter 3, notebook 03_prakash: the entity-tracking circuit before and after fine-tuning (after Prakash et al. 2024,
"Fine-Tuning Enhances Existing Mechanisms: A Case Study on Entity Tracking", ICLR 2024, arXiv 2402.14811).

Models per seed (smoke, tiny): ``base``, the chapter's own small Llama with a word-level vocabulary, trained from
random initialisation on the boxes task alone (``binder``: a 2-3-box curriculum, then 2..n_boxes boxes, to the end of
a cosine schedule, no stopping rule); three fine-tunes of it (``build``): ``arith_bound``, arithmetic whose operands
are bound to names (the Goat / FLoat analogue), ``arith_pure``, arithmetic without names (the control), and
``track``, more entity tracking (the positive control).

Analyses (lib.patching, per head at ``attn.hook_z``): path patching finds the head groups VF -> PT -> PD -> SR; the
circuits are evaluated by mean ablation (faithfulness against random circuits, the base circuit inside the tuned
models); overlap of base and tuned circuits; DCM per group and desideratum; CMAP tuned -> base; attention knockout.
Every analysis is a cached artifact keyed by the models it reads and its settings, so a warm build only loads.

Modules, imported in this order: ``config`` (parameters), ``binder`` (the base: its architecture, training and
accuracy; the cached bases' code key), ``build`` (fine-tunes, prompt sets, the model cache, synthesis pairs),
``measure`` (one function per page section), ``claims`` (the paper's numbers and the verdict rules), ``report``
(tables, figures, computed prose, the results record).

Profiles: ``smoke`` / ``tiny`` as above; ``local`` a packaged SmolLM2 / Gemma-3 as base (no training on the task);
``paper`` llama-7b and a fine-tuned model (FLoat) from the hub or local folders (``base_source``, ``tuned_source``).
"""
