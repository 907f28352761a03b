"""Notebook 00_base_models: the pretrained models the five findings share, trained through the cache.

| name        | architecture (tiny profile)          | data                       | used by      |
|-------------|--------------------------------------|----------------------------|--------------|
| `gpt`       | GPT-2-style causal LM                | English prose + Python     | chapters 1-3 |
| `bert`      | BERT-6 masked LM (WordPiece)         | English prose              | chapter 4    |
| `one_layer` | one-layer Mistral-style causal LM    | English prose + Python     | chapter 5    |

Chapters get them with `load_base(name, profile)`: the same profile gives the same config, hence the same
artifact key, so a chapter reuses what this notebook trained (or trains it, if the cache is empty).
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from lib import corpora, models, parallel, plotting, precision, textdata, tokenizers, train
from lib.artifacts import Artifact, is_cached, load_or_compute
from lib.config import Config as _Config, ConfigError, param
from lib.studies import data as data_study

NAMES = ("gpt", "bert", "one_layer")
BUILD_ORDER = ("bert", "gpt", "one_layer")  # longest training first, when they are spread over processes
FAMILY = {"gpt": "gpt2", "bert": "bert", "one_layer": "mistral"}


@dataclass(frozen=True)
class Config(_Config):
    notebook = "00_base_models"
    models: tuple[str, ...] = param(NAMES, choices=NAMES, doc="which base models to build")
    vocab_size: int = param(4096, lo=300, hi=65536, doc="BPE / WordPiece vocabulary size")
    tokenizer_chars: int = param(3_000_000, lo=10_000, hi=10**9, doc="characters used to train each tokenizer")
    python_share: float = param(0.5, lo=0.0, hi=1.0, doc="share of Python code in the causal LMs' data")
    n_ctx: int = param(128, lo=16, hi=2048, doc="training sequence length (tokens)")
    batch_size: int = param(16, lo=1, hi=1024, doc="sequences per step")
    lr: float = param(2e-3, lo=1e-6, hi=1.0, doc="peak AdamW learning rate (cosine decay, 5% warm-up)")
    bf16: bool | str = param("auto", choices=precision.SETTINGS, doc=precision.DOC)
    gpt_d_model: int = param(128, lo=8, hi=4096)
    gpt_n_layers: int = param(4, lo=1, hi=48)
    gpt_n_heads: int = param(4, lo=1, hi=64)
    gpt_steps: int = param(1200, lo=1, hi=10**6, doc="training steps of the GPT-style LM")
    bert_d_model: int = param(128, lo=8, hi=4096)
    bert_n_layers: int = param(6, lo=1, hi=48)
    bert_n_heads: int = param(4, lo=1, hi=64)
    bert_steps: int = param(1500, lo=1, hi=10**6, doc="training steps of the BERT-6 masked LM")
    bert_lr: float = param(1e-3, lo=1e-6, hi=1.0, doc="peak learning rate of the masked LM (post-LN BERT is unstable at 2e-3)")
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

    def arch(self, name: str) -> models.ModelConfig:
        p = {"gpt": "gpt", "bert": "bert", "one_layer": "one"}[name]
        d = getattr(self, f"{p}_d_model")
        return models.ModelConfig(
            family=FAMILY[name], d_model=d, n_layers=1 if name == "one_layer" else getattr(self, f"{p}_n_layers"),
            n_heads=getattr(self, f"{p}_n_heads"), d_mlp=self.one_d_mlp if name == "one_layer" else 4 * d,
            n_ctx=self.n_ctx, d_vocab=self.vocab_size)

    def steps(self, name: str) -> int:
        return {"gpt": self.gpt_steps, "bert": self.bert_steps, "one_layer": self.one_steps}[name]


@dataclass
class BaseModel:
    name: str
    model: torch.nn.Module
    tokenizer: object
    artifact: Artifact

    @property
    def metrics(self) -> dict:
        return self.artifact.metrics

    def history(self):
        import pandas as pd
        return pd.read_json(self.artifact.path / "history.json")


# --------------------------------------------------------------------------- data
def source_corpora(cfg: Config) -> dict[str, corpora.Corpus]:
    """The corpora exactly as the data chapter builds them for this profile."""
    dcfg = data_study.Config.load(cfg.profile)
    return {n: corpora.load_corpus(n, dcfg.max_chars, dcfg.seed) for n in ("english", "python")}


def _splits(cfg: Config, name: str, corp: dict) -> tuple[list[str], list[str]]:
    shares = {"english": 1.0, "python": 0.0} if name == "bert" else {"english": 1 - cfg.python_share,
                                                                     "python": cfg.python_share}
    train_docs = {n: c.split()[0] for n, c in corp.items() if shares[n] > 0}
    val_docs = {n: c.split()[1] for n, c in corp.items() if shares[n] > 0}
    need = cfg.steps(name) * cfg.batch_size * cfg.n_ctx * 5  # ~4 characters a token, with margin
    return (textdata.mixture(train_docs, shares, need, cfg.seed),
            textdata.mixture(val_docs, shares, cfg.eval_blocks * cfg.n_ctx * 6, cfg.seed + 1))


def get_tokenizer(cfg: Config, kind: str, corp: dict):
    """The BPE (kind="bpe", English + Python) or WordPiece (kind="wordpiece", English) tokenizer, cached."""
    shares = {"english": 1 - cfg.python_share, "python": cfg.python_share} if kind == "bpe" else {"english": 1.0}
    key = {"kind": kind, "vocab_size": cfg.vocab_size, "chars": cfg.tokenizer_chars, "shares": shares,
           "seed": cfg.seed}

    def compute(out: Path) -> dict:
        texts = textdata.mixture({n: corp[n].split()[0] for n in shares}, shares, cfg.tokenizer_chars, cfg.seed)
        tok = (tokenizers.train_bpe if kind == "bpe" else tokenizers.train_wordpiece)(texts, cfg.vocab_size)
        tok.save_pretrained(out)
        return {"vocab_size": len(tok)}

    art = load_or_compute("tokenizer", key, compute, fingerprints=[corp[n].fingerprint for n in shares],
                          recompute=cfg.recompute)
    from transformers import AutoTokenizer
    return AutoTokenizer.from_pretrained(art.path), art


# --------------------------------------------------------------------------- training
def train_config(cfg: Config, name: str) -> train.TrainConfig:
    steps = cfg.steps(name)
    return train.TrainConfig(objective="masked_lm" if name == "bert" else "causal_lm", n_steps=steps,
                             batch_size=cfg.batch_size, lr=cfg.bert_lr if name == "bert" else cfg.lr, weight_decay=0.01,
                             warmup_steps=max(1, steps // 20), schedule="cosine", eval_every=max(1, steps // 10),
                             seed=cfg.seed, bf16=cfg.use_bf16(), desc=f"base {name}")


def _tensors(cfg: Config, name: str, tok, docs: list[str], rows: int) -> dict:
    if name == "bert":
        return textdata.mlm_windows(tok, docs, cfg.n_ctx, max_rows=rows)
    return {"input_ids": textdata.pack_blocks(tok, docs, cfg.n_ctx, max_blocks=rows)}


def _compute_base(cfg: Config, name: str, tok, corp: dict, out: Path) -> dict:
    train_docs, val_docs = _splits(cfg, name, corp)
    data = _tensors(cfg, name, tok, train_docs, cfg.steps(name) * cfg.batch_size)
    val = _tensors(cfg, name, tok, val_docs, cfg.eval_blocks)
    model = models.build_model(cfg.arch(name), tok, seed=cfg.seed)
    tcfg = train_config(cfg, name)
    mask_id = tok.mask_token_id if name == "bert" else None

    def eval_fn(m):
        return {"val_loss": heldout_loss(m, val, name, mask_id, len(tok), cfg.seed)}

    start = time.perf_counter()
    hist = train.train(model, data, tcfg, eval_fn=eval_fn, mask_token_id=mask_id, vocab_size=len(tok))
    seconds = time.perf_counter() - start
    models.save_model(model, tok, out / "model", cfg.arch(name))
    (out / "evals.json").write_text(json.dumps(hist.evals))
    hist.to_frame().reset_index().to_json(out / "history.json")
    val_loss = heldout_loss(model, val, name, mask_id, len(tok), cfg.seed)
    uni = unigram_loss(data, val, name, mask_id, len(tok), cfg.seed)
    return {"n_params": models.n_params(model), "n_params_non_embedding": models.n_params(model, exclude_embeddings=True),
            "tokens_seen": hist.tokens_seen, "train_seconds": seconds, "tokens_per_s": hist.tokens_per_s,
            "train_rows": int(data["input_ids"].shape[0]), "val_loss": val_loss, "val_ppl": float(np.exp(val_loss)),
            "unigram_loss": uni, "unigram_ppl": float(np.exp(uni)), "arch": cfg.arch(name).to_dict()}


def _mlm_eval_batch(val: dict, mask_id: int, vocab: int, seed: int) -> dict:
    """A fixed masking of the held-out rows (the same for every evaluation)."""
    g = torch.Generator().manual_seed(seed + 12345)
    special = val["attention_mask"].eq(0) | val["input_ids"].lt(5)  # [PAD] [UNK] [CLS] [SEP] [MASK] are ids 0-4
    masked, labels = train.mask_tokens(val["input_ids"], mask_id, vocab, special, 0.15, g)
    return {"input_ids": masked, "labels": labels}


@torch.no_grad()
def mlm_loss(model, batch: dict, attention_mask: torch.Tensor, batch_size: int = 16) -> float:
    """Mean cross-entropy (nats) of a masked LM over the selected positions (token-weighted)."""
    total, count = 0.0, 0
    for i in range(0, len(attention_mask), batch_size):
        logits = model(batch["input_ids"][i:i + batch_size], attention_mask=attention_mask[i:i + batch_size]).logits
        labels = batch["labels"][i:i + batch_size]
        total += torch.nn.functional.cross_entropy(logits.float().flatten(0, 1), labels.flatten(), ignore_index=-100,
                                                   reduction="sum").item()
        count += int(labels.ne(-100).sum())
    return total / max(count, 1)


def heldout_loss(model, val: dict, name: str, mask_id, vocab: int, seed: int) -> float:
    """Mean cross-entropy (nats per predicted token) on the held-out rows."""
    was_training = model.training
    model.eval()
    if name == "bert":
        loss = mlm_loss(model, _mlm_eval_batch(val, mask_id, vocab, seed), val["attention_mask"])
    else:
        loss = train.lm_loss(model, val["input_ids"])
    model.train(was_training)
    return loss


def unigram_loss(data: dict, val: dict, name: str, mask_id, vocab: int, seed: int) -> float:
    """Cross-entropy of an add-one unigram model fitted on the training tokens, on the same held-out targets."""
    if name == "bert":
        labels = _mlm_eval_batch(val, mask_id, vocab, seed)["labels"]
        targets = labels[labels >= 0]
        train_ids = data["input_ids"][data["attention_mask"].bool()]
    else:
        targets = val["input_ids"][:, 1:].reshape(-1)
        train_ids = data["input_ids"].reshape(-1)
    return train.unigram_baseline(train_ids, targets, vocab)


def _artifact_key(cfg: Config, name: str, corp: dict, tok_art: Artifact) -> tuple[dict, list[str]]:
    train_cfg = {k: v for k, v in train_config(cfg, name).__dict__.items() if k != "progress"}
    key = {"name": name, "arch": cfg.arch(name).to_dict(), "train": train_cfg, "python_share": cfg.python_share,
           "eval_blocks": cfg.eval_blocks}
    return key, [c.fingerprint for c in corp.values()] + [tok_art.key]


def get(name: str, cfg: Config, load: bool = True) -> BaseModel | None:
    """Base model `name` for this config: loaded from the cache or trained now (`load=False`: only make sure it
    is in the cache)."""
    if name not in NAMES:
        raise ConfigError(f"unknown base model {name!r}: choose one of {', '.join(NAMES)}")
    corp = source_corpora(cfg)
    tok, tok_art = get_tokenizer(cfg, "wordpiece" if name == "bert" else "bpe", corp)
    key, fps = _artifact_key(cfg, name, corp, tok_art)
    art = load_or_compute("base_model", key, lambda out: _compute_base(cfg, name, tok, corp, out),
                          fingerprints=fps, recompute=cfg.recompute)
    if not load:
        return None
    model, tok = models.load_model(art.path / "model")
    return BaseModel(name, model.eval(), tok, art)


def _build(name: str, cfg: Config) -> None:  # a worker process of get_all
    get(name, cfg, load=False)


def get_all(cfg: Config) -> dict[str, BaseModel]:
    """Every base model of `cfg.models`; those not cached yet are trained side by side in up to
    `parallel.workers()` processes (the BPE tokenizer they share is built once, first)."""
    corp, missing = source_corpora(cfg), []
    for name in cfg.models if not cfg.recompute else ():
        _, tok_art = get_tokenizer(cfg, "wordpiece" if name == "bert" else "bpe", corp)
        key, fps = _artifact_key(cfg, name, corp, tok_art)
        missing += [] if is_cached("base_model", key, fps) else [name]
    if len(missing) > 1:
        parallel.run(_build, [(name, cfg) for name in sorted(missing, key=BUILD_ORDER.index)])
    return {name: get(name, cfg) for name in cfg.models}


def load_base(name: str, profile: str = "tiny", params: dict | None = None) -> BaseModel:
    """The base model of notebook 00_base_models for `profile` (chapters call this)."""
    return get(name, Config.load(profile, params))


# --------------------------------------------------------------------------- the local profile
LOCAL_MODELS = ("smollm2-135m-instruct", "gemma-3-270m")


def get_local(name: str, cfg: Config) -> dict:
    """A packaged real model (local profile): load times from GGUF / cache and held-out perplexity."""
    from lib.paths import cache_dir

    start = time.perf_counter()
    model, tok = models.load_local(name, cache_dir() / "local_models")
    first = time.perf_counter() - start
    start = time.perf_counter()
    model, tok = models.load_local(name, cache_dir() / "local_models")
    again = time.perf_counter() - start
    english = source_corpora(cfg)["english"]
    docs = textdata.sample_docs(english.split()[1], cfg.eval_blocks * cfg.n_ctx * 6, cfg.seed)
    val = textdata.pack_blocks(tok, docs, cfg.n_ctx, max_blocks=cfg.eval_blocks)
    loss = train.lm_loss(model.eval(), val)
    return {"name": name, "model": model, "tokenizer": tok, "load_seconds_first": first, "load_seconds_cached": again,
            "val_loss": loss, "val_ppl": float(np.exp(loss)), "n_params": models.n_params(model)}


def build(cfg: Config) -> dict:
    """Every model of the profile: the study's base models, or (local profile) the packaged real models."""
    if cfg.profile == "local":
        return {n: get_local(n, cfg) for n in LOCAL_MODELS}
    return {name: get(name, cfg) for name in cfg.models}


# --------------------------------------------------------------------------- reporting
def summary(bases: dict):
    import pandas as pd

    rows = []
    for name, b in bases.items():
        if isinstance(b, dict):  # local profile
            rows.append({"model": name, "parameters (M)": b["n_params"] / 1e6, "held-out loss": b["val_loss"],
                         "held-out perplexity": b["val_ppl"], "load from GGUF (s)": b["load_seconds_first"],
                         "load from cache (s)": b["load_seconds_cached"]})
            continue
        m = b.metrics
        rows.append({"model": name, "family": m["arch"]["family"], "layers": m["arch"]["n_layers"],
                     "d_model": m["arch"]["d_model"], "parameters (M)": m["n_params"] / 1e6,
                     "non-embedding (M)": m["n_params_non_embedding"] / 1e6, "tokens seen (M)": m["tokens_seen"] / 1e6,
                     "train time (s)": m["train_seconds"], "tokens/s": m["tokens_per_s"],
                     "held-out loss": m["val_loss"], "unigram loss": m["unigram_loss"],
                     "gain over unigram (nats)": m["unigram_loss"] - m["val_loss"],
                     "held-out perplexity": m["val_ppl"], "unigram perplexity": m["unigram_ppl"]})
    return pd.DataFrame(rows).set_index("model").round(3)


def plot_curves(bases: dict):
    import matplotlib.pyplot as plt

    trained = {n: b for n, b in bases.items() if isinstance(b, BaseModel)}
    if not trained:
        plotting.say("*No training curves: the `local` profile loads pretrained models.*")
        return
    fig, axes = plt.subplots(1, len(trained), figsize=(3.6 * len(trained), 3.2), squeeze=False)
    for ax, (name, b) in zip(axes[0], trained.items()):
        h = b.history()
        tokens_per_step = b.metrics["tokens_seen"] / max(1, h["step"].max())
        ax.plot(h["step"] * tokens_per_step / 1e6, h["train_loss"], lw=0.6, alpha=0.6, label="train")
        ev = pd_evals(b)
        ax.plot(ev["step"] * tokens_per_step / 1e6, ev["val_loss"], "o", ms=4, label="held-out")
        ax.axhline(b.metrics["unigram_loss"], ls="--", c="k", lw=1, label="unigram")
        ax.set(title=name, xlabel="tokens seen (M)", ylabel="loss (nats)")
        ax.legend(fontsize=8)
    plt.tight_layout()
    plt.show()


def pd_evals(b: BaseModel):
    import pandas as pd

    evals = json.loads((b.artifact.path / "evals.json").read_text())
    return pd.DataFrame(evals)


def verdict_text(table, cfg: Config) -> str:
    if cfg.profile == "local":
        parts = [f"**{n}** reaches a held-out perplexity of {r['held-out perplexity']:.1f} on the English corpus "
                 f"(loaded in {r['load from cache (s)']:.2f} s from the cache, {r['load from GGUF (s)']:.1f} s the first time)"
                 for n, r in table.iterrows()]
        return "; ".join(parts) + "."
    parts = []
    for n, r in table.iterrows():
        ok = r["gain over unigram (nats)"] > 0.5
        parts.append(f"**{n}** ({r['parameters (M)']:.2f} M parameters, {r['tokens seen (M)']:.2f} M tokens): held-out "
                     f"loss {r['held-out loss']:.2f} nats against {r['unigram loss']:.2f} for the unigram model, "
                     f"{'a clear gain' if ok else 'NOT a clear gain'} of {r['gain over unigram (nats)']:.2f} nats "
                     f"(perplexity {r['held-out perplexity']:.1f} vs {r['unigram perplexity']:.1f})")
    return f"Profile `{cfg.profile}`. " + "; ".join(parts) + "."


def show_samples(bases: dict, n_tokens: int = 24):
    prompts = {"causal": ["The dog is a", "def __init__(self, name):\n", "A river is"],
               "masked": ["the dog is a domesticated [MASK].", "a [MASK] is a large body of water."]}
    lines = []
    for name, b in bases.items():
        model, tok = (b["model"], b["tokenizer"]) if isinstance(b, dict) else (b.model, b.tokenizer)
        if name == "bert":
            for p in prompts["masked"]:
                enc = tok(p, return_tensors="pt")
                with torch.no_grad():
                    logits = model(**enc).logits[0]
                pos = (enc["input_ids"][0] == tok.mask_token_id).nonzero()[0, 0]
                top = tok.convert_ids_to_tokens(logits[pos].topk(5).indices.tolist())
                lines.append(f"- `{name}` fills `{p}` with: {', '.join(f'`{t}`' for t in top)}")
            continue
        for p in prompts["causal"]:
            enc = tok(p, return_tensors="pt")
            room = getattr(model.config, "n_positions", None) or model.config.max_position_embeddings
            with torch.no_grad():
                out = model.generate(**enc, max_new_tokens=min(n_tokens, room - enc["input_ids"].shape[1]), do_sample=False, pad_token_id=tok.eos_token_id)
            text = tok.decode(out[0, enc["input_ids"].shape[1]:], skip_special_tokens=True)
            lines.append(f"- `{name}`: `{p!r}` → `{text!r}`")
    plotting.say("\n".join(lines))


def write_results(table, cfg: Config) -> None:
    from lib.paths import results_dir

    rows = {n: {k: (float(v) if isinstance(v, (int, float, np.floating, np.integer)) else v) for k, v in r.items()}
            for n, r in table.iterrows()}
    record = {"profile": cfg.profile, "precision": cfg.precision, "models": rows}
    (results_dir() / "base_models.json").write_text(json.dumps(record, indent=1))


def main(argv=None) -> int:
    """`python -m lib.studies.base_models build NAME --profile P`: train base model NAME into the cache (a build step
    of `make book`, so that each chapter starts as soon as its own base is ready)."""
    import argparse

    ap = argparse.ArgumentParser(prog="python -m lib.studies.base_models")
    ap.add_argument("cmd", choices=("build",))
    ap.add_argument("name", choices=NAMES)
    ap.add_argument("--profile", default="tiny")
    args = ap.parse_args(argv)
    try:
        cfg = Config.load(args.profile)
    except ConfigError as e:
        print(f"error: {e}")
        return 2
    if args.name in cfg.models:
        get(args.name, cfg, load=False)
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(main())

