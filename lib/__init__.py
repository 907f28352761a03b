"""Shared library of the "Reuse or rebuild?" study.

Every notebook imports from here; nothing reusable lives in a notebook. Modules:
config (validated notebook parameters), artifacts (the on-disk cache), corpora (offline text sources),
tokenizers, models, train, hooks/patching (activation access), similarity (CKA), merging (SLERP),
apt (accuracy per token), sae (sparse autoencoders), plotting, run (papermill runner).
"""
import os

# Bump on any change that alters a computed artifact (training, data building): it is part of every cache key.
__version__ = "0.1.0"

# Only the `paper` profile may reach the Hugging Face hub; it unsets these explicitly (lib.models).
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
if os.environ.get("STUDY_NUM_THREADS"):  # must be set before torch is imported to take effect
    for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(_var, os.environ["STUDY_NUM_THREADS"])
if os.environ.get("STUDY_BLOCK_NETWORK") == "1":
    from lib.offline import block_network

    block_network()
if os.environ.get("STUDY_PROGRESS"):  # a build's console: warnings raised in this kernel are copied there
    from lib.progress import copy_warnings

    copy_warnings()
