"""Chapter 3, notebook 03_prakash: the entity-tracking circuit before and after fine-tuning (after Prakash et al. 2024,
"Fine-Tuning Enhances Existing Mechanisms: A Case Study on Entity Tracking", ICLR 2024, arXiv 2402.14811).

Models per seed (tiny profile): ``base``, the study's pretrained GPT (``bases.load("study:gpt")``) trained briefly on
a mixture of its pretraining text and entity-tracking prompts, stopped at the first check where 7-box validation
accuracy reaches ``base_target`` (the paper's Llama-7B: 0.66); ``arith``, base fine-tuned on arithmetic text only (the
Goat / FLoat analogue: a *different* objective); ``track``, base fine-tuned on more entity-tracking prompts.

Analyses (lib.patching, per head at ``attn.hook_z``): path patching finds the head groups VF -> PT -> PD -> SR; the
circuits are evaluated by mean ablation (faithfulness against random circuits, the base circuit inside the tuned
models); overlap of base and tuned circuits; DCM per group and desideratum; CMAP tuned -> base; attention knockout.
Every analysis is a cached artifact keyed by the models it reads and its settings, so a warm build only loads.

Modules, imported in this order: ``config`` (parameters), ``build`` (models, prompt sets, synthesis pairs),
``measure`` (one function per page section), ``claims`` (the paper's numbers and the verdict rules), ``report``
(tables, figures, computed prose, the results record).

Profiles: ``smoke`` / ``tiny`` as above; ``local`` a packaged SmolLM2 / Gemma-3 as base (no entity pre-training);
``paper`` llama-7b and a fine-tuned model (FLoat) from the hub or local folders (``base_source``, ``tuned_source``).
"""
