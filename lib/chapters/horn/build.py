"""What chapter 05_horn trains or loads, through the cache: the base, the two fine-tunes, their SLERP merge and one
sparse autoencoder per model and SAE seed; and `synthesis_pairs` for the synthesis chapter.

    s = setup(cfg)                     # base (bases.load), tokenizer, documents, device
    sets = model_sets(s)               # {seed index: {"base" | "stories" | "lua" | "merged": Loaded}}
    saes = train_saes(s, sets)         # {seed index: {model: (SparseAutoencoder, metrics, artifact key)}}
"""
from __future__ import annotations

import copy
import functools
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from lib import bases, corpora, evals, models, textdata, train
from lib import sae as saelib
from lib.artifacts import artifact_key, load_or_compute
from lib.hooks import hooks, run_with_cache
from lib.merging import slerp_state_dicts
from lib.lenses import seed_at

from lib.chapters.horn.config import Config

HOOK = "blocks.0.mlp.hook_post"
MODELS = ("base", "stories", "lua", "merged")
DOMAINS = ("base", "stories", "lua")  # validation sets: base data (English + Python), stories, Lua
# Each model's own data distribution (character shares), for its SAE: the base data plus its new domain(s).
MIXES = {"base": {"english": 0.5, "python": 0.5},
         "stories": {"english": 0.25, "python": 0.25, "stories": 0.5},
         "lua": {"english": 0.25, "python": 0.25, "lua": 0.5},
         "merged": {"english": 1 / 6, "python": 1 / 6, "stories": 1 / 3, "lua": 1 / 3}}
CHARS_PER_TOKEN = 6  # generous: text sampled per wanted token (BPE averages ~3.5-4.5 characters a token)
# The code that builds this chapter's artifacts: part of their cache keys.
CODE = (__name__, "lib.train", "lib.sae", "lib.hooks", "lib.textdata", "lib.models", "lib.merging")


# --------------------------------------------------------------------------- set-up: base model, data
@dataclass
class Loaded:
    """A model with the identity its cache keys use (an artifact key, `hub:<id>` or `dir:<checksums>`)."""
    name: str
    model: torch.nn.Module
    key: str
    metrics: dict = field(default_factory=dict)


@dataclass
class Study:
    cfg: Config
    tokenizer: object
    base: Loaded
    docs: dict  # corpus -> (train docs, validation docs)
    device: torch.device
    fingerprints: dict  # corpus -> fingerprint

    def fp(self, *names) -> list[str]:
        return [self.fingerprints[n] for n in names]

    @property
    def ctx(self) -> int:
        return min(self.cfg.n_ctx, self.base.model.config.max_position_embeddings)


def load_docs(cfg: Config) -> dict:
    """Train / validation documents of the four corpora, as the data chapter builds them for the profile."""
    dcfg = corpora.CorpusConfig.load(cfg.data_profile)
    out = {}
    for name in ("english", "python", "stories", "lua"):
        train_docs, val_docs = corpora.load_corpus(name, dcfg.max_chars, dcfg.seed).split()
        # a small (smoke) corpus can leave the hash-based validation split empty: hold out one document then
        out[name] = (train_docs, val_docs) if val_docs else (train_docs[:-1], train_docs[-1:])
    return out


def load_base_model(cfg: Config) -> tuple[Loaded, object]:
    """(Loaded base, tokenizer): the study's one-layer base, or a hub id / folder (paper profile), via bases.load."""
    source = "study:one_layer" if cfg.base_source == "study" else cfg.hub_base
    b = bases.load(source, cfg.base_profile_resolved, device=cfg.device, allow_network=cfg.allow_network)
    tok = b.tokenizer
    if cfg.base_source == "hub" and cfg.hub_tokenizer:
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(cfg.hub_tokenizer, local_files_only=not cfg.allow_network)
    if tok.eos_token_id is None:
        raise ValueError(f"the tokenizer of {source} has no eos token (needed to join documents)")
    return Loaded("base", b.model, b.key, dict(b.metrics)), tok


def setup(cfg: Config, docs: dict | None = None) -> Study:
    """Base model, tokenizer and documents (`docs` replaces the corpora, e.g. in tests)."""
    base, tok = load_base_model(cfg)
    docs = docs if docs is not None else load_docs(cfg)
    fps = {n: corpora.fingerprint(tr + va) for n, (tr, va) in docs.items()}
    return Study(cfg, tok, base, docs, models.resolve_device(cfg.device), fps)


def blocks(s: Study, shares: dict, split: int, n_tokens: int, ctx: int, seed: int) -> torch.Tensor:
    """(n_blocks, ctx) token blocks of a document mixture (`split` 0 = train, 1 = validation)."""
    docs = {c: s.docs[c][split] for c in shares}
    text = textdata.mixture(docs, shares, n_tokens * CHARS_PER_TOKEN, seed)
    return textdata.pack_blocks(s.tokenizer, text, ctx, max_blocks=max(1, n_tokens // ctx))


def eval_sets(s: Study) -> dict[str, torch.Tensor]:
    """Validation blocks (eval_blocks, ctx) of the base data, the stories and the Lua domain."""
    mixes = {"base": MIXES["base"], "stories": {"stories": 1.0}, "lua": {"lua": 1.0}}
    return {d: blocks(s, mix, 1, s.cfg.eval_blocks * s.ctx, s.ctx, s.cfg.seed + 7) for d, mix in mixes.items()}


def next_token_accuracy(model, input_ids: torch.Tensor, batch_size: int = 16) -> float:
    """Share of positions t < T-1 where argmax logits[t] == input_ids[t+1], over blocks (N, T)."""
    device = next(model.parameters()).device

    def hits(ids):  # (B, T) -> (B * (T-1),) bool
        ids = ids.to(device)
        return (model(ids).logits[:, :-1].argmax(-1) == ids[:, 1:]).flatten().cpu()

    with evals.eval_mode(model):
        correct = evals.batched(hits, input_ids, batch_size)
    return int(correct.sum()) / max(correct.numel(), 1)


# --------------------------------------------------------------------------- models: fine-tunes and merges
def finetune_config(cfg: Config, domain: str, seed: int) -> train.TrainConfig:
    return train.TrainConfig(objective="causal_lm", n_steps=cfg.ft_steps, batch_size=cfg.ft_batch_size, lr=cfg.ft_lr,
                             weight_decay=0.01, warmup_steps=max(1, cfg.ft_steps // 10), schedule="cosine",
                             seed=seed, bf16=cfg.use_bf16(), progress=False, desc=f"fine-tune {domain}")


def finetune(s: Study, domain: str, seed: int, cached_only: bool = False) -> Loaded:
    """`base` fine-tuned on one domain (`stories` or `lua`), through the cache; or a ready hub model."""
    cfg = s.cfg
    hub = {"stories": cfg.hub_stories, "lua": cfg.hub_lua}[domain]
    if hub:
        b = bases.load(hub, device=str(s.device), allow_network=cfg.allow_network)
        return Loaded(domain, b.model, b.key)
    tcfg = finetune_config(cfg, domain, seed)
    key = {"domain": domain, "n_ctx": s.ctx, "train": {k: v for k, v in asdict(tcfg).items() if k != "progress"}}

    def compute(out):
        if cached_only:
            raise FileNotFoundError(f"no cached {domain} fine-tune for this profile: run notebook 05_horn first")
        data = {"input_ids": blocks(s, {domain: 1.0}, 0, cfg.ft_steps * cfg.ft_batch_size * s.ctx, s.ctx, seed)}
        model = copy.deepcopy(s.base.model).to(s.device)
        hist = train.train(model, data, tcfg)
        models.save_model(model.cpu(), s.tokenizer, out / "model")
        return {"rows": len(data["input_ids"]), "tokens_seen": hist.tokens_seen, "train_seconds": hist.train_time,
                "loss_first": float(np.mean(hist.train_loss[:10])), "loss_last": float(np.mean(hist.train_loss[-10:]))}

    art = load_or_compute("horn_finetune", key, compute, fingerprints=[s.base.key, *s.fp(domain)], code=CODE,
                          recompute=cfg.recompute and not cached_only)
    model, _ = models.load_model(art.path / "model")
    return Loaded(domain, model.to(s.device).eval(), art.key, art.metrics)


def merge(lua: torch.nn.Module, stories: torch.nn.Module, t: float) -> torch.nn.Module:
    """SLERP of two fine-tunes per tensor, mergekit style: base_model = Lua, so t=0 is Lua, t=1 stories."""
    merged = copy.deepcopy(lua)
    merged.load_state_dict(slerp_state_dicts(lua.state_dict(), stories.state_dict(), t))
    return merged.eval()


def model_set(s: Study, ft_seed: int, cached_only: bool = False) -> dict[str, Loaded]:
    stories, lua = finetune(s, "stories", ft_seed, cached_only), finetune(s, "lua", ft_seed, cached_only)
    key = artifact_key("horn_merged", {"t": s.cfg.merge_t}, [lua.key, stories.key], code=CODE)
    merged = Loaded("merged", merge(lua.model, stories.model, s.cfg.merge_t), key)
    return {"base": s.base, "stories": stories, "lua": lua, "merged": merged}


def model_sets(s: Study) -> dict[int, dict[str, Loaded]]:
    """The four models for every seed index (the same fine-tunes for all unless `finetune_seeds`)."""
    by_ft = {}
    for i in range(s.cfg.n_seeds):
        if s.cfg.ft_seed(i) not in by_ft:
            by_ft[s.cfg.ft_seed(i)] = model_set(s, s.cfg.ft_seed(i))
    return {i: by_ft[s.cfg.ft_seed(i)] for i in range(s.cfg.n_seeds)}


# --------------------------------------------------------------------------- SAEs
def mlp_acts(model, ids: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
    """MLP activations at `blocks.0.mlp.hook_post` for blocks (N, T): (N*T, d_mlp) bfloat16 on the CPU. The
    unembedding runs at the last position only (`logits_to_keep=1`): the hook sits before it, and over every
    position the 4096-word unembedding was about half of a one-layer model's forward pass."""
    device = next(model.parameters()).device

    def one(b):
        _, cache = run_with_cache(model, {"input_ids": b.to(device), "logits_to_keep": 1}, [HOOK])
        return cache[HOOK].flatten(0, 1).to("cpu", torch.bfloat16)

    with evals.eval_mode(model):
        return evals.batched(one, ids, batch_size)


def encode(sae: saelib.SparseAutoencoder, acts: torch.Tensor, batch_size: int = 4096) -> torch.Tensor:
    """SAE feature activations (n, d_sae), bfloat16 on the CPU, of activations (n, d_in)."""
    device = sae.W_enc.device
    with evals.eval_mode(sae):
        return evals.batched(lambda a: sae.encode(a.to(device, torch.float32)).to("cpu", torch.bfloat16), acts,
                             batch_size)


def sae_config(cfg: Config, name: str, d_in: int, seed: int, device) -> saelib.SAEConfig:
    l1 = cfg.sae_l1_stories if name == "stories" and cfg.sae_l1_stories >= 0 else cfg.sae_l1
    size = {"d_sae": cfg.sae_features} if cfg.sae_features else {"expansion_factor": cfg.sae_expansion}
    topk = cfg.sae_kind == "topk"
    return saelib.SAEConfig(d_in=d_in, **size, l1_coefficient=0.0 if topk else l1, lr=cfg.sae_lr,
                            batch_size=cfg.sae_batch_size, n_steps=cfg.sae_steps, seed=seed,
                            dead_window=cfg.sae_dead_window, kind=cfg.sae_kind, k=cfg.sae_k if topk else None,
                            device=str(device))


def evaluate_sae(s: Study, m: Loaded, sae) -> dict:
    """FVE, L0 and dead share on held-out activations of the model's own data, and the loss recovered when the
    reconstruction replaces the MLP activation (against zero-ablation)."""
    ids = blocks(s, MIXES[m.name], 1, s.cfg.sae_eval_tokens, s.cfg.sae_ctx, s.cfg.seed + 3)
    metrics = saelib.sae_metrics(sae, mlp_acts(m.model, ids))

    def splice(act, name):
        return sae(act.flatten(0, 1).float())[0].view_as(act).to(act.dtype)

    with evals.eval_mode(m.model):
        clean = train.lm_loss(m.model, ids, batch_size=64)
        with hooks(m.model, [(HOOK, splice)]):
            spliced = train.lm_loss(m.model, ids, batch_size=64)
        with hooks(m.model, [(HOOK, lambda act, name: torch.zeros_like(act))]):
            zero = train.lm_loss(m.model, ids, batch_size=64)
    return {**metrics, "loss_clean": clean, "loss_sae": spliced, "loss_zero": zero,
            "loss_recovered": saelib.loss_recovered(clean, spliced, zero)}


def fit_sae(acts: torch.Tensor, scfg: saelib.SAEConfig, bf16: bool) -> tuple[saelib.SparseAutoencoder, dict]:
    """lib.sae.train_sae, its matmuls in bf16 autocast when `bf16` (the effective choice, lib.precision)."""
    # cache_enabled=False: autocast otherwise keeps the bf16 copies of W_enc / W_dec made at the first step for the
    # whole context, and the matmuls would never see the updated weights.
    with torch.autocast(torch.device(scfg.device).type, dtype=torch.bfloat16, enabled=bf16, cache_enabled=False):
        return saelib.train_sae(acts, scfg, progress=False)


def get_sae(s: Study, m: Loaded, seed: int, train_acts) -> tuple[saelib.SparseAutoencoder, dict, str]:
    """(SAE, metrics, artifact key) for model `m` and an SAE seed; `train_acts()` gives the training activations
    (called only when the SAE is not cached)."""
    d_in = m.model.config.intermediate_size
    scfg = sae_config(s.cfg, m.name, d_in, seed, s.device)
    key = {"model": m.name, "sae": {k: v for k, v in asdict(scfg).items() if k != "device"}, "mix": MIXES[m.name],
           "tokens": s.cfg.sae_tokens, "ctx": s.cfg.sae_ctx, "bf16": s.cfg.use_bf16(),
           "eval_tokens": s.cfg.sae_eval_tokens}

    def compute(out):
        from safetensors.torch import save_file

        sae, hist = fit_sae(train_acts(), scfg, s.cfg.use_bf16())
        save_file({k: v.detach().contiguous().cpu() for k, v in sae.state_dict().items()}, out / "weights.safetensors")
        tail = max(1, scfg.n_steps // 10)
        return {**evaluate_sae(s, m, sae), "d_sae": scfg.d_sae, "d_in": d_in, "kind": scfg.kind, "k": scfg.k, "train_mse_last": float(np.mean(hist["mse"][-tail:])),
                "train_l0_last": float(np.mean(hist["l0"][-tail:])), "n_resampled": int(sum(hist["n_resampled"]))}

    art = load_or_compute("horn_sae", key, compute, fingerprints=[m.key, *s.fp(*MIXES[m.name])], code=CODE,
                          recompute=s.cfg.recompute)
    return load_sae(art.path, d_in, art.metrics["d_sae"], s.device, art.metrics.get("k")), art.metrics, art.key


def load_sae(path, d_in: int, d_sae: int, device, k: int | None = None) -> saelib.SparseAutoencoder:
    """The SAE saved in `path` (weights.safetensors); k: a TopK SAE's active features a token (None: ReLU)."""
    from safetensors.torch import load_file

    sae = saelib.SparseAutoencoder(d_in, d_sae, k=k)
    sae.load_state_dict(load_file(path / "weights.safetensors"))
    return sae.to(device).eval()


def train_saes(s: Study, sets: dict[int, dict[str, Loaded]]) -> dict[int, dict[str, tuple]]:
    """{seed index: {model: (sae, metrics, key)}}; each model's training activations are drawn once."""
    out = {i: {} for i in sets}
    for name in MODELS:
        memo = {}
        for i, ms in sets.items():
            m = ms[name]
            if m.key not in memo:
                ids_seed = s.cfg.seed + 11
                memo[m.key] = functools.cache(lambda m=m: mlp_acts(
                    m.model, blocks(s, MIXES[m.name], 0, s.cfg.sae_tokens, s.cfg.sae_ctx, ids_seed)))
            out[i][name] = get_sae(s, m, s.cfg.seed + i, memo[m.key])
        memo.clear()
    return out


# --------------------------------------------------------------------------- for the synthesis chapter
def synthesis_pairs(profile: str = "tiny", params: dict | None = None, seed_index: int = 0) -> list[dict]:
    """base → stories, base → lua and lua → merged for the `seed_index`-th fine-tuning seed, from the cache (raises
    if 05_horn has not run). Distinct fine-tunes exist per SAE seed only with `finetune_seeds`, else one.

    metric = next-token accuracy on the tuned model's domain: stories, Lua, and for the merge both halves."""
    cfg = Config.load(profile, {"device": "cpu", **(params or {})})
    ft_seed = seed_at(list(dict.fromkeys(cfg.ft_seed(i) for i in range(cfg.n_seeds))), seed_index)
    s = setup(cfg)
    ms = model_set(s, ft_seed, cached_only=True)
    ev = eval_sets(s)

    def metric(model, inputs) -> float:
        return next_token_accuracy(model, inputs["input_ids"])

    both = torch.cat([ev["stories"][:128], ev["lua"][:128]])
    pairs = (("base→stories", "base", "stories", ev["stories"]), ("base→lua", "base", "lua", ev["lua"]),
             ("lua→merged", "lua", "merged", both))
    return [{"name": n, "base": ms[a].model, "tuned": ms[b].model, "tokenizer": s.tokenizer,
             "inputs": {"input_ids": x[:256]}, "metric": metric} for n, a, b, x in pairs]
