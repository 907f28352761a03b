"""Chapter 02_zhao: where instruction tuning makes representations task-specific (Zhao, Ziser & Cohen 2024).

MOSSA (Zhao, Ziser & Cohen 2022) compares an *experimental* model E with *control* models C_t, each trained on one
sub-population (here: one task) alone. Both read task t's test prompts; where the two agree (high linear CKA at
layer L), E carries the task-specific information that C_t learned. Two experimental models:

- E0: the pretrained base, untouched (how much of task t pre-training already encodes);
- E1: the base instruction-tuned on the mixture of the seen tasks (the "Llama 2-SFT" of the paper).

The representation is the hidden state of the last prompt token at every layer (Hugging Face ``hidden_states[1:]``,
the paper's choice); similarity is ``lib.similarity.linear_cka``, both the biased estimator of the paper's code and
the debiased one (the verdicts read the debiased one unless there are many more prompts than dimensions). Two
controls the design needs are added: the cross-task baseline, CKA(C_s, C_t) for s != t (every tuned model learns the
same template, so part of any move towards C_t is shared format adaptation), and linear probes that measure directly
what E0's states encode of each task's answer.

The package, imported one way: ``config`` (parameters) < ``build`` (base, task data, C_t and E1 through the cache;
the synthesis pairs) < ``measure`` (states, CKA, accuracy; one function per page section) < ``claims`` (the paper's
numbers and the rules) < ``report`` (figures, tables, computed prose, the results record).

Reference: Zhao, Ziser & Cohen, "Layer by Layer: Uncovering Where Multi-Task Learning Happens in
Instruction-Tuned Large Language Models", EMNLP 2024 (arXiv 2410.20008); code github.com/zsquaredz/layer_by_layer.
"""
