"""Notebook 05_horn: tracking SAE features through fine-tuning and SLERP merging (Horn & Elliott 2024).

The method (Horn & Elliott 2024, "Tracking Universal Features Through Fine-Tuning and Model Merging",
arXiv 2410.12391), at the study's scale:

1. Models. A one-layer Mistral-style LM `base` (English prose + Python) is fine-tuned on two new domains,
   `stories` and `lua`; the two fine-tunes are merged by SLERP, `merged = slerp(lua, stories, t=0.58)`
   (mergekit semantics: t=0 is Lua, lib.merging).
2. One sparse autoencoder per model on the MLP activations `blocks.0.mlp.hook_post` (the input of the down
   projection; lib.sae), trained on the model's own data mixture (`MIXES`), as the paper does.
3. Matching. Every SAE reads the same comparison tokens (held-out base data, blocks of 24 tokens); feature i of
   a parent and feature j of a child count as the same feature when their activations correlate at
   r >= 0.8 over those tokens (`lib.sae.feature_correlations`). Along each edge parent -> child, parent
   features persist or disappear and child features emerge (`lib.sae.feature_flow`).
4. Interpretation. The paper asks GPT-4 to explain features; offline, a feature is labelled by the token
   class of its top activations (`token_category`). Two case studies search for a variable-assignment feature
   (tokens `=` in code) and a Python-exception feature (`raise`, `except`, `...Error`).

Two references the paper does not have: the same edges with the child's SAE trained from another seed (the
paper gives all SAEs one seed, so parent and child SAEs share their initialisation), and a control, two SAEs of
the *same* model that differ only in their seed: the share of features that "persist" when only the SAE changes.

Data (lib.corpora): `stories` = literary fortune cookies (Debian `fortunes`), the only narrative-like English
that ships offline (TinyStories cannot be downloaded); `lua` = Lua sources of six Debian packages (the paper
used the Lua subset of The Stack).
"""
from __future__ import annotations

import copy
import functools
import keyword
from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd
import torch

from lib import corpora, models, plotting, precision, textdata, train
from lib import sae as saelib
from lib.artifacts import artifact_key, load_or_compute
from lib.config import Config as _Config, ConfigError, param
from lib.hooks import hooks, run_with_cache
from lib.merging import slerp_state_dicts
from lib.results import Claim, measured
from lib.synthesis import seed_at

HOOK = "blocks.0.mlp.hook_post"
MODELS = ("base", "stories", "lua", "merged")
EDGES = (("base", "stories"), ("base", "lua"), ("lua", "merged"), ("stories", "merged"))
# The paper's protocol gives parent and child SAEs the same seed. Two references beside it: the same edges with the
# child's SAE from the next seed ("@next": independent initialisation and batch order), and the control, two SAEs of
# the *same* base model that differ only in their seed.
CROSS = tuple((a, f"{b}@next") for a, b in EDGES)
CONTROL = ("base", "base@next")
ALL_EDGES = (*EDGES, *CROSS, CONTROL)
DOMAINS = ("base", "stories", "lua")  # validation sets: base data (English + Python), stories, Lua
# Each model's own data distribution (character shares), for its SAE: the base data plus its new domain(s).
MIXES = {"base": {"english": 0.5, "python": 0.5},
         "stories": {"english": 0.25, "python": 0.25, "stories": 0.5},
         "lua": {"english": 0.25, "python": 0.25, "lua": 0.5},
         "merged": {"english": 1 / 6, "python": 1 / 6, "stories": 1 / 3, "lua": 1 / 3}}
CATEGORIES = ("punctuation/whitespace", "keyword", "number", "identifier", "English word")
LUA_KEYWORDS = ("and break do else elseif end false for function goto if in local nil not or repeat return then "
                "true until while").split()
KEYWORDS = frozenset(keyword.kwlist) | frozenset(LUA_KEYWORDS)
EXCEPTION_WORDS = frozenset(("raise", "except", "try", "finally"))
HUB = {"base": "nilq/baby-python-mistral-1L-tiny-base", "stories": "nilq/baby-python-mistral-1L-tiny-TinyStories-ft",
       "lua": "nilq/baby-python-mistral-1L-tiny-lua-ft"}
CHARS_PER_TOKEN = 6  # generous: text sampled per wanted token (BPE averages ~3.5-4.5 characters a token)


@dataclass(frozen=True)
class Config(_Config):
    notebook = "05_horn"
    base_source: str = param("study", choices=("study", "hub"),
                             doc="study: the one-layer base of 00_base_models; hub: a Hugging Face id or folder")
    base_profile: str = param("", choices=("", "smoke", "tiny"),
                              doc="profile of the study's base model ('' = this profile; local and paper use tiny)")
    hub_base: str = param(HUB["base"], doc="base model (hub id or folder) when base_source=hub")
    hub_tokenizer: str = param("", doc="tokenizer (hub id or folder) when base_source=hub; '' = the base's own")
    hub_stories: str = param("", doc="a ready stories fine-tune (hub id or folder); '' = fine-tune here")
    hub_lua: str = param("", doc="a ready Lua fine-tune (hub id or folder); '' = fine-tune here")
    allow_network: bool = param(False, doc="let the hub loader download (paper profile only)")
    n_ctx: int = param(128, lo=8, hi=4096, doc="fine-tuning / accuracy block length (capped at the model's)")
    ft_steps: int = param(250, lo=1, hi=10**6, doc="fine-tuning steps per domain")
    ft_batch_size: int = param(16, lo=1, hi=4096, doc="fine-tuning sequences per step")
    ft_lr: float = param(3e-4, lo=1e-8, hi=1.0, doc="fine-tuning peak AdamW lr (cosine, 10% warm-up)")
    bf16: bool | str = param("auto", choices=precision.SETTINGS, doc=precision.DOC + "; fine-tuning and SAE training")
    merge_t: float = param(0.58, lo=0.0, hi=1.0, doc="SLERP t from lua (0) towards stories (1); paper 0.58")
    sweep_ts: tuple[float, ...] = param((0.0, 0.2, 0.4, 0.6, 0.8, 1.0), lo=0.0, hi=1.0,
                                        doc="t values of the interpolation sweep (merge_t is added)")
    eval_blocks: int = param(32, lo=1, hi=10**5, doc="validation blocks per domain for next-token accuracy")
    sae_expansion: int = param(2, lo=1, hi=64, doc="SAE dictionary size / d_mlp (paper 16)")
    sae_l1: float = param(4e-3, lo=0.0, hi=100.0, doc="L1 coefficient (lib.sae units: normalised MSE + l1 * |f|_1)")
    sae_l1_stories: float = param(-1.0, lo=-1.0, hi=100.0, doc="L1 of the stories SAE (-1: sae_l1; paper 10x)")
    sae_lr: float = param(2e-3, lo=1e-8, hi=1.0, doc="SAE Adam lr (paper 1e-4)")
    sae_batch_size: int = param(128, lo=1, hi=10**6, doc="activations (tokens) per SAE step")
    sae_steps: int = param(800, lo=1, hi=10**7, doc="SAE training steps")
    sae_tokens: int = param(102_400, lo=64, hi=10**9, doc="activations per model for SAE training")
    sae_ctx: int = param(24, lo=2, hi=4096, doc="block length of SAE data and comparison tokens (paper 24)")
    sae_dead_window: int = param(200, lo=1, hi=10**7, doc="steps without firing before a feature is resampled")
    sae_eval_tokens: int = param(8192, lo=64, hi=10**8, doc="held-out tokens for FVE, loss recovered, dead share")
    n_seeds: int = param(3, lo=2, hi=20, doc="SAE seeds (>= 3 for the headline shares)")
    finetune_seeds: bool = param(False, doc="vary the fine-tuning seed with the SAE seed (2 fine-tunes a seed)")
    compare_tokens: int = param(12_288, lo=48, hi=10**8, doc="comparison tokens (held-out base data)")
    threshold: float = param(0.8, lo=0.0, hi=1.0, doc="activation correlation that makes two features one (paper 0.8)")
    min_fires: int = param(3, lo=1, hi=10**6, doc="a feature is alive if it fires on this many comparison tokens")
    top_k: int = param(20, lo=1, hi=10_000, doc="top activations that label a feature")
    device: str = param("auto", choices=("auto", "cpu", "cuda"), doc="where SAEs, models and correlations run")

    def validate(self):
        if self.base_source == "study" and self.profile == "paper" and self.base_profile != "tiny":
            raise ConfigError("parameter 'base_source' = 'study' needs base_profile='tiny' in the paper profile")
        if self.compare_tokens < self.sae_ctx or self.sae_eval_tokens < self.sae_ctx:
            raise ConfigError(f"parameters 'compare_tokens' and 'sae_eval_tokens' must be >= sae_ctx={self.sae_ctx}")
        if self.device == "cuda" and not torch.cuda.is_available():
            raise ConfigError("parameter 'device' = 'cuda' but no CUDA device is available: use 'auto' or 'cpu'")

    @property
    def base_profile_resolved(self) -> str:
        return self.base_profile or (self.profile if self.profile in ("smoke", "tiny") else "tiny")

    @property
    def data_profile(self) -> str:
        return self.base_profile_resolved if self.base_source == "study" else self.profile

    @property
    def torch_device(self) -> torch.device:
        return torch.device("cuda" if self.device == "cuda" or (self.device == "auto" and torch.cuda.is_available())
                            else "cpu")

    @property
    def ts(self) -> list[float]:
        return sorted(set(self.sweep_ts) | {self.merge_t})

    def ft_seed(self, i: int) -> int:
        return self.seed + i if self.finetune_seeds else self.seed


# --------------------------------------------------------------------------- set-up: base model, data
@dataclass
class Loaded:
    """A model with the identity its cache keys use (an artifact key, or `hub:<id>`)."""
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
    from lib.chapters import data as data_study

    dcfg = data_study.Config.load(cfg.data_profile)
    out = {}
    for name in ("english", "python", "stories", "lua"):
        train_docs, val_docs = corpora.load_corpus(name, dcfg.max_chars, dcfg.seed).split()
        # a small (smoke) corpus can leave the hash-based validation split empty: hold out one document then
        out[name] = (train_docs, val_docs) if val_docs else (train_docs[:-1], train_docs[-1:])
    return out


def load_base_model(cfg: Config):
    """(Loaded base, tokenizer): the study's one-layer base model, or a hub / folder model (paper profile)."""
    if cfg.base_source == "study":
        from lib.chapters.base_models import load_base

        b = load_base("one_layer", cfg.base_profile_resolved)
        return Loaded("base", b.model, b.artifact.key, dict(b.metrics)), b.tokenizer
    model, tok = models.load_hub(cfg.hub_base, allow_network=cfg.allow_network)
    if cfg.hub_tokenizer:
        from transformers import AutoTokenizer
        tok = AutoTokenizer.from_pretrained(cfg.hub_tokenizer, local_files_only=not cfg.allow_network)
    if tok.eos_token_id is None:
        raise ValueError(f"the tokenizer of {cfg.hub_base} has no eos token (needed to join documents)")
    return Loaded("base", model, f"hub:{cfg.hub_base}"), tok


def setup(cfg: Config, docs: dict | None = None) -> Study:
    """Base model, tokenizer and documents (`docs` replaces the corpora, e.g. in tests)."""
    base, tok = load_base_model(cfg)
    docs = docs if docs is not None else load_docs(cfg)
    fps = {n: corpora.fingerprint(tr + va) for n, (tr, va) in docs.items()}
    device = cfg.torch_device
    base.model.to(device).eval()
    return Study(cfg, tok, base, docs, device, fps)


def blocks(s: Study, shares: dict, split: int, n_tokens: int, ctx: int, seed: int) -> torch.Tensor:
    """(n_blocks, ctx) token blocks of a document mixture (`split` 0 = train, 1 = validation)."""
    docs = {c: s.docs[c][split] for c in shares}
    text = textdata.mixture(docs, shares, n_tokens * CHARS_PER_TOKEN, seed)
    return textdata.pack_blocks(s.tokenizer, text, ctx, max_blocks=max(1, n_tokens // ctx))


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
        model, _ = models.load_hub(hub, allow_network=cfg.allow_network)
        return Loaded(domain, model.to(s.device).eval(), f"hub:{hub}")
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

    art = load_or_compute("horn_finetune", key, compute, fingerprints=[s.base.key, *s.fp(domain)],
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
    key = artifact_key("horn_merged", {"t": s.cfg.merge_t}, [lua.key, stories.key])
    merged = Loaded("merged", merge(lua.model, stories.model, s.cfg.merge_t), key)
    return {"base": s.base, "stories": stories, "lua": lua, "merged": merged}


def model_sets(s: Study) -> dict[int, dict[str, Loaded]]:
    """The four models for every seed index (the same fine-tunes for all unless `finetune_seeds`)."""
    by_ft = {}
    for i in range(s.cfg.n_seeds):
        if s.cfg.ft_seed(i) not in by_ft:
            by_ft[s.cfg.ft_seed(i)] = model_set(s, s.cfg.ft_seed(i))
    return {i: by_ft[s.cfg.ft_seed(i)] for i in range(s.cfg.n_seeds)}


# --------------------------------------------------------------------------- next-token accuracy, interpolation
@torch.no_grad()
def next_token_accuracy(model, input_ids: torch.Tensor, batch_size: int = 16) -> float:
    """Share of positions t < T-1 where argmax logits[t] == input_ids[t+1], over blocks (N, T)."""
    was_training, correct, total = model.training, 0, 0
    model.eval()
    device = next(model.parameters()).device
    for i in range(0, len(input_ids), batch_size):
        ids = input_ids[i:i + batch_size].to(device)
        pred = model(ids).logits[:, :-1].argmax(-1)
        correct += int((pred == ids[:, 1:]).sum())
        total += pred.numel()
    model.train(was_training)
    return correct / max(total, 1)


def eval_sets(s: Study) -> dict[str, torch.Tensor]:
    """Validation blocks (eval_blocks, ctx) of the base data, the stories and the Lua domain."""
    mixes = {"base": MIXES["base"], "stories": {"stories": 1.0}, "lua": {"lua": 1.0}}
    return {d: blocks(s, mix, 1, s.cfg.eval_blocks * s.ctx, s.ctx, s.cfg.seed + 7) for d, mix in mixes.items()}


def accuracy(s: Study, ms: dict[str, Loaded]) -> dict:
    """Next-token accuracy of each model on each domain, and along the SLERP path lua (t=0) -> stories (t=1)."""
    key = {"ts": s.cfg.ts, "eval_blocks": s.cfg.eval_blocks, "n_ctx": s.ctx, "seed": s.cfg.seed}

    def compute(out):
        ev = eval_sets(s)
        table = {name: {d: next_token_accuracy(m.model, ev[d]) for d in DOMAINS} for name, m in ms.items()}
        sweep = []
        for t in s.cfg.ts:
            model = merge(ms["lua"].model, ms["stories"].model, t)
            sweep.append({"t": t, **{d: next_token_accuracy(model, ev[d]) for d in DOMAINS}})
        return {"models": table, "sweep": sweep}

    fps = [m.key for m in ms.values()] + s.fp("english", "python", "stories", "lua")
    return load_or_compute("horn_accuracy", key, compute, fingerprints=fps, recompute=s.cfg.recompute).metrics


# --------------------------------------------------------------------------- SAEs
@torch.no_grad()
def mlp_acts(model, ids: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
    """MLP activations at `blocks.0.mlp.hook_post` for blocks (N, T): (N*T, d_mlp) bfloat16 on the CPU."""
    device = next(model.parameters()).device
    out = []
    for i in range(0, len(ids), batch_size):
        _, cache = run_with_cache(model, ids[i:i + batch_size].to(device), [HOOK])
        out.append(cache[HOOK].flatten(0, 1).to("cpu", torch.bfloat16))
    return torch.cat(out)


@torch.no_grad()
def encode(sae: saelib.SparseAutoencoder, acts: torch.Tensor, batch_size: int = 4096) -> torch.Tensor:
    """SAE feature activations (n, d_sae), bfloat16 on the CPU, of activations (n, d_in)."""
    device = sae.W_enc.device
    return torch.cat([sae.encode(acts[i:i + batch_size].to(device, torch.float32)).to("cpu", torch.bfloat16)
                      for i in range(0, len(acts), batch_size)])


def sae_config(cfg: Config, name: str, d_in: int, seed: int, device) -> saelib.SAEConfig:
    l1 = cfg.sae_l1_stories if name == "stories" and cfg.sae_l1_stories >= 0 else cfg.sae_l1
    return saelib.SAEConfig(d_in=d_in, expansion_factor=cfg.sae_expansion, l1_coefficient=l1, lr=cfg.sae_lr,
                            batch_size=cfg.sae_batch_size, n_steps=cfg.sae_steps, seed=seed,
                            dead_window=cfg.sae_dead_window, device=str(device))


def evaluate_sae(s: Study, m: Loaded, sae) -> dict:
    """FVE, L0 and dead share on held-out activations of the model's own data, and the loss recovered when the
    reconstruction replaces the MLP activation (against zero-ablation)."""
    ids = blocks(s, MIXES[m.name], 1, s.cfg.sae_eval_tokens, s.cfg.sae_ctx, s.cfg.seed + 3)
    metrics = saelib.sae_metrics(sae, mlp_acts(m.model, ids))

    def splice(act, name):
        return sae(act.flatten(0, 1).float())[0].view_as(act).to(act.dtype)

    clean = train.lm_loss(m.model, ids, batch_size=64)
    with torch.no_grad(), hooks(m.model, [(HOOK, splice)]):
        spliced = train.lm_loss(m.model, ids, batch_size=64)
    with torch.no_grad(), hooks(m.model, [(HOOK, lambda act, name: torch.zeros_like(act))]):
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
           "tokens": s.cfg.sae_tokens, "ctx": s.cfg.sae_ctx, "bf16": s.cfg.use_bf16(), "eval_tokens": s.cfg.sae_eval_tokens}

    def compute(out):
        from safetensors.torch import save_file

        sae, hist = fit_sae(train_acts(), scfg, s.cfg.use_bf16())
        save_file({k: v.detach().contiguous().cpu() for k, v in sae.state_dict().items()}, out / "weights.safetensors")
        tail = max(1, scfg.n_steps // 10)
        return {**evaluate_sae(s, m, sae), "d_sae": scfg.d_sae, "train_mse_last": float(np.mean(hist["mse"][-tail:])),
                "train_l0_last": float(np.mean(hist["l0"][-tail:])), "n_resampled": int(sum(hist["n_resampled"]))}

    art = load_or_compute("horn_sae", key, compute, fingerprints=[m.key, *s.fp(*MIXES[m.name])],
                          recompute=s.cfg.recompute)
    return load_sae(art.path, d_in, art.metrics["d_sae"], s.device), art.metrics, art.key


def load_sae(path, d_in: int, d_sae: int, device) -> saelib.SparseAutoencoder:
    from safetensors.torch import load_file

    sae = saelib.SparseAutoencoder(d_in, d_sae)
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


# --------------------------------------------------------------------------- token classes
def token_category(text: str, code: bool) -> str:
    """The class of one token: punctuation/whitespace, keyword (Python or Lua, in code), number, identifier
    (a word-like token in code) or English word (a word-like token in prose)."""
    t = text.strip()
    if not any(ch.isalnum() for ch in t):
        return "punctuation/whitespace"
    if t.replace(".", "", 1).replace("_", "").isdigit():
        return "number"
    if code and t in KEYWORDS:
        return "keyword"
    return "identifier" if code else "English word"


@dataclass
class Stream:
    """The comparison tokens: blocks (N, T) of held-out base data, each all prose or all code."""
    ids: torch.Tensor
    code: np.ndarray  # (N,) bool: the block comes from the Python corpus


def compare_stream(s: Study) -> Stream:
    """Half English, half Python blocks of held-out base data (the paper samples the base's own data)."""
    n, ctx = s.cfg.compare_tokens // 2, s.cfg.sae_ctx
    prose = blocks(s, {"english": 1.0}, 1, max(n, ctx), ctx, s.cfg.seed + 5)
    code = blocks(s, {"python": 1.0}, 1, max(n, ctx), ctx, s.cfg.seed + 6)
    flags = np.r_[np.zeros(len(prose), bool), np.ones(len(code), bool)]
    return Stream(torch.cat([prose, code]), flags)


@functools.lru_cache(maxsize=4)
def _vocab_text(tokenizer) -> tuple[str, ...]:
    return tuple(tokenizer.decode([i]) for i in range(len(tokenizer)))


def token_classes(tokenizer, stream: Stream) -> dict[str, np.ndarray]:
    """Per comparison token (n,): category code (index into CATEGORIES) and the two case-study indicators."""
    text = _vocab_text(tokenizer)
    special = set(tokenizer.all_special_ids)
    ids = stream.ids.numpy()
    code = np.repeat(stream.code, ids.shape[1])
    flat = ids.reshape(-1)
    cats = np.array([0 if t in special else CATEGORIES.index(token_category(text[t], c)) for t, c in zip(flat, code)],
                    dtype=np.int64)
    stripped = [text[t].strip() for t in flat]
    assign = np.array([c and w == "=" for w, c in zip(stripped, code)])
    exc = np.array([c and (w in EXCEPTION_WORDS or "Error" in w or "Exception" in w) for w, c in zip(stripped, code)])
    return {"category": cats, "assign": assign, "except": exc}


def feature_categories(top_idx: np.ndarray, top_val: np.ndarray, cats: np.ndarray) -> np.ndarray:
    """Category of each feature (d,) from its top activations: the class holding most of their activation mass.

    top_idx, top_val (k, d): token positions and values of each feature's k largest activations; -1 = dead."""
    k, d = top_idx.shape
    mass = np.zeros((d, len(CATEGORIES)))
    np.add.at(mass, (np.tile(np.arange(d), k), cats[top_idx].reshape(-1)), top_val.reshape(-1))
    return np.where(top_val.max(0) > 0, mass.argmax(1), -1)


# --------------------------------------------------------------------------- matching features across models
def _summary(name: str, F: torch.Tensor, cls: dict, cfg: Config) -> dict[str, np.ndarray]:
    """Alive mask, top-k activations, category and case-study selectivity of every feature of one SAE."""
    alive = ((F > 0).sum(0) >= cfg.min_fires).numpy()
    k = min(cfg.top_k, len(F))
    tops = [torch.topk(F[:, j:j + 1024].float(), k, dim=0) for j in range(0, F.shape[1], 1024)]
    top_val = torch.cat([t.values for t in tops], 1).numpy()
    top_idx = torch.cat([t.indices for t in tops], 1).numpy()
    category = np.where(alive, feature_categories(top_idx, top_val, cls["category"]), -1)
    out = {f"{name}__alive": alive, f"{name}__top_idx": top_idx.astype(np.int32),
           f"{name}__top_val": top_val.astype(np.float32), f"{name}__category": category}
    indicators = np.stack([cls["assign"], cls["except"]], 1)  # point-biserial correlation with each indicator
    r = correlate_with(F, indicators)
    out[f"{name}__assign_r"], out[f"{name}__except_r"] = r[:, 0], r[:, 1]
    return out


def correlate_with(F: torch.Tensor, X, chunk: int = 4096) -> np.ndarray:
    """Pearson r (d, k) of every column of F (n, d) with each column of X (n, k), in one float64 pass over
    row chunks (cheaper than lib.sae.feature_correlations when k is small); 0 where either side is constant."""
    X = torch.as_tensor(np.asarray(X), dtype=torch.float64)
    n, sums, squares, cross = len(F), 0.0, 0.0, 0.0
    for i in range(0, n, chunk):
        c = F[i:i + chunk].to(torch.float64)
        sums, squares, cross = sums + c.sum(0), squares + (c * c).sum(0), cross + c.T @ X[i:i + chunk]
    mean_f, mean_x = sums / n, X.mean(0)
    sd_f, sd_x = (squares / n - mean_f**2).clamp_min(0).sqrt(), X.std(0, unbiased=False)
    cov = cross / n - mean_f[:, None] * mean_x[None, :]
    denom = sd_f[:, None] * sd_x[None, :]
    ok = denom > 1e-12 * (1 + mean_f.abs()[:, None])
    return torch.where(ok, cov / denom.clamp_min(1e-300), torch.zeros_like(cov)).clamp(-1, 1).numpy()


def _edge(a: str, b: str, feats: dict, arrays: dict, cfg: Config, device) -> dict[str, np.ndarray]:
    """feature_flow at the threshold, and each feature's best partner (alive features only) on the other side."""
    alive_a = torch.as_tensor(arrays[f"{a}__alive"], device=device)
    alive_b = torch.as_tensor(arrays[f"{b}__alive"], device=device)
    corr = saelib.feature_correlations(feats[a], feats[b], device=device)  # (d_a, d_b)
    flow = saelib.feature_flow(corr, cfg.threshold, alive_a, alive_b)
    corr[~alive_a] = -2.0
    corr[:, ~alive_b] = -2.0
    (row_max, row_arg), (col_max, col_arg) = saelib.max_correlation(corr, 1), saelib.max_correlation(corr, 0)
    p = f"{a}__{b}__"
    return {p + "persisting": flow.persisting, p + "disappearing": flow.disappearing, p + "emerging": flow.emerging,
            p + "matched": flow.matched, p + "row_max": row_max.cpu().numpy(), p + "row_arg": row_arg.cpu().numpy(),
            p + "col_max": col_max.cpu().numpy(), p + "col_arg": col_arg.cpu().numpy()}


def _case(kind: str, feats: dict, arrays: dict, device) -> dict[str, np.ndarray]:
    """The base feature most selective for `kind` and its best-correlated partner in every other model."""
    sel = np.where(arrays["base__alive"], arrays[f"base__{kind}_r"], -np.inf)
    i = int(sel.argmax())
    matches, rs = [], []
    for name in MODELS:
        r = correlate_with(feats[name], feats["base"][:, [i]].float())[:, 0]
        r = np.where(arrays[f"{name}__alive"], r, -2.0)
        matches.append(int(r.argmax()))
        rs.append(float(r.max()))
    cols = torch.stack([feats[n][:, j] for n, j in zip(MODELS, matches)], 1)  # (n_tokens, 4)
    pairwise = saelib.feature_correlations(cols, cols).numpy()
    return {f"case__{kind}__match": np.array(matches), f"case__{kind}__r": np.array(rs),
            f"case__{kind}__pairwise": pairwise}


def compare(s: Study, ms: dict[str, Loaded], saes: dict[str, tuple], next_ms: dict[str, Loaded],
            next_saes: dict[str, tuple]) -> dict[str, np.ndarray]:
    """Everything the page needs from one seed's SAEs (and the next seed's, for the references) on the comparison
    tokens, cached as one npz."""
    cfg = s.cfg
    key = {"tokens": cfg.compare_tokens, "ctx": cfg.sae_ctx, "top_k": cfg.top_k, "min_fires": cfg.min_fires,
           "threshold": cfg.threshold, "seed": cfg.seed}
    fps = [saes[n][2] for n in MODELS] + [next_saes[n][2] for n in MODELS] + s.fp("english", "python")

    def compute(out):
        stream = compare_stream(s)
        cls = token_classes(s.tokenizer, stream)
        acts = {}  # MLP activations per distinct model (the next seed's models are the same ones by default)
        for m in (*ms.values(), *next_ms.values()):
            acts[m.key] = acts[m.key] if m.key in acts else mlp_acts(m.model, stream.ids)
        feats = {n: encode(saes[n][0], acts[ms[n].key]) for n in MODELS}
        feats.update({f"{n}@next": encode(next_saes[n][0], acts[next_ms[n].key]) for n in MODELS})
        del acts
        arrays = {"ids": stream.ids.numpy().astype(np.int32), "code": stream.code, "token_category": cls["category"]}
        for name, F in feats.items():
            arrays.update(_summary(name, F, cls, cfg))
        for a, b in ALL_EDGES:
            arrays.update(_edge(a, b, feats, arrays, cfg, s.device))
        for kind in ("assign", "except"):
            arrays.update(_case(kind, feats, arrays, s.device))
        np.savez_compressed(out / "compare.npz", **arrays)
        return {f"{a}->{b}": len(arrays[f"{a}__{b}__persisting"]) / max(1, arrays[f"{a}__alive"].sum())
                for a, b in ALL_EDGES}

    art = load_or_compute("horn_compare", key, compute, fingerprints=fps, recompute=cfg.recompute)
    with np.load(art.path / "compare.npz", allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def compare_all(s: Study, sets: dict, saes: dict) -> list[dict[str, np.ndarray]]:
    """One comparison per seed; the references pair seed i's SAEs with seed i+1's."""
    n = len(saes)
    return [compare(s, sets[i], saes[i], sets[(i + 1) % n], saes[(i + 1) % n]) for i in range(n)]


# --------------------------------------------------------------------------- shares and categories
def shares(comp: dict, a: str, b: str, threshold: float | None = None) -> dict[str, float]:
    """Persisting / disappearing shares of the alive features of a, emerging share of those of b.

    threshold=None: the stored lib.sae.feature_flow result; otherwise recomputed from the best partners."""
    p = f"{a}__{b}__"
    n_a, n_b = int(comp[f"{a}__alive"].sum()), int(comp[f"{b}__alive"].sum())
    if threshold is None:
        pers, emer = len(comp[p + "persisting"]), len(comp[p + "emerging"])
    else:
        pers = int((comp[p + "row_max"] >= threshold).sum())
        emer = n_b - int((comp[p + "col_max"] >= threshold).sum())
    return {"persisting": pers / max(n_a, 1), "disappearing": 1 - pers / max(n_a, 1), "emerging": emer / max(n_b, 1),
            "n_parent": n_a, "n_child": n_b}


def edge_label(a: str, b: str) -> str:
    if (a, b) == CONTROL:
        return "control: base → base, other SAE seed"
    return f"{a} → {b.removesuffix('@next')}" + (", other SAE seed" if b.endswith("@next") else "")


def flow_table(comps: list[dict]) -> pd.DataFrame:
    rows = []
    for a, b in ALL_EDGES:
        per_seed = [shares(c, a, b) for c in comps]
        row = {"edge": edge_label(a, b)}
        for k in ("persisting", "disappearing", "emerging"):
            row[f"{k} (%)"] = measured([100 * x[k] for x in per_seed], "{:.1f}")[0]
        row["alive parent / child"] = f"{np.mean([x['n_parent'] for x in per_seed]):.0f} / " \
                                      f"{np.mean([x['n_child'] for x in per_seed]):.0f}"
        rows.append(row)
    return pd.DataFrame(rows).set_index("edge")


def persistence_text(comps: list[dict], cfg: Config) -> str:
    """The page's sentences on persistence along the edges against the two references."""
    pers, cross = np.mean(mean_persistence(comps)), np.mean(mean_persistence(comps, CROSS))
    ctrl = np.mean(mean_persistence(comps, [CONTROL]))
    return (f"At r ≥ {cfg.threshold}, on average {100 * pers:.1f} % of parent features persist along an edge "
            f"when parent and child SAEs share their seed, as in the paper (per seed: "
            f"{', '.join(f'{100 * p:.1f} %' for p in mean_persistence(comps))}), and {100 * cross:.1f} % when the "
            f"child's SAE comes from another seed. But two SAEs of the *same* base model that differ only in their "
            f"seed share just {100 * ctrl:.1f} % of their features. So re-training the SAE alone already loses "
            f"{100 * (1 - ctrl):.0f} % of the features; fine-tuning or merging removes "
            f"{100 * max(0.0, 1 - cross / ctrl):.0f} % of those that survive re-seeding.")


def mean_persistence(comps: list[dict], edges=EDGES) -> list[float]:
    """Per seed: the persisting share averaged over the edges."""
    return [float(np.mean([shares(c, a, b)["persisting"] for a, b in edges])) for c in comps]


def category_counts(comp: dict) -> pd.DataFrame:
    """Counts of feature categories among persisting and disappearing parent features and emerging child
    features, pooled over the four edges: DataFrame (CATEGORIES x fates)."""
    counts = pd.DataFrame(0, index=list(CATEGORIES), columns=["persisting", "disappearing", "emerging"])
    for a, b in EDGES:
        for fate, side in (("persisting", a), ("disappearing", a), ("emerging", b)):
            cats = comp[f"{side}__category"][comp[f"{a}__{b}__{fate}"]]
            for c in cats[cats >= 0]:
                counts.loc[CATEGORIES[c], fate] += 1
    return counts


def category_shares(comps: list[dict]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(mean, sd) over seeds of each fate's category shares (columns sum to 1)."""
    per_seed = np.stack([(c / c.sum().replace(0, 1)).to_numpy() for c in map(category_counts, comps)])
    idx, cols = list(CATEGORIES), ["persisting", "disappearing", "emerging"]
    sd = per_seed.std(0, ddof=1) if len(per_seed) > 1 else np.zeros_like(per_seed[0])
    return pd.DataFrame(per_seed.mean(0), idx, cols), pd.DataFrame(sd, idx, cols)


def generic_gap(comps: list[dict], category: str = "punctuation/whitespace") -> list[float]:
    """Per seed: share of `category` among persisting minus among disappearing features (pooled edges)."""
    out = []
    for c in map(category_counts, comps):
        share = c.loc[category] / c.sum().replace(0, 1)
        out.append(float(share["persisting"] - share["disappearing"]))
    return out


# --------------------------------------------------------------------------- tables and figures
COLOURS = {"base": plotting.PALETTE["base"], "stories": plotting.PALETTE["stories"], "lua": plotting.PALETTE["lua"],
           "merged": "#8172b3", "base@next": "#937860"}
DATA_OF = {"base": "English + Python (00_base_models)", "stories": "base, fine-tuned on fortunes (stories)",
           "lua": "base, fine-tuned on Lua sources", "merged": "SLERP(lua, stories, t)"}


def models_table(ms: dict[str, Loaded], acc: dict, cfg: Config) -> pd.DataFrame:
    rows = []
    for name, m in ms.items():
        row = {"model": name, "what": DATA_OF[name].replace("t)", f"t={cfg.merge_t})"),
               "parameters (M)": models.n_params(m.model) / 1e6}
        row.update({f"accuracy on {d} (val)": acc["models"][name][d] for d in DOMAINS})
        rows.append(row)
    return pd.DataFrame(rows).set_index("model").round(3)


def plot_sweep(acc: dict, cfg: Config):
    import matplotlib.pyplot as plt

    sweep = pd.DataFrame(acc["sweep"])
    fig, ax = plt.subplots(figsize=(6.5, 3.4))
    for d, colour in (("stories", COLOURS["stories"]), ("lua", COLOURS["lua"]), ("base", COLOURS["base"])):
        ax.plot(sweep["t"], sweep[d], "o-", c=colour, label=f"{d} validation")
        ax.axhline(acc["models"]["base"][d], c=colour, ls=":", lw=1)
    ax.axvline(cfg.merge_t, c="k", ls="--", lw=1, label=f"merge (t={cfg.merge_t})")
    ax.set(xlabel="SLERP t (0 = lua fine-tune, 1 = stories fine-tune)", ylabel="next-token accuracy")
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1, 0.5))
    plt.tight_layout()
    plt.show()


def sae_table(saes: dict[int, dict]) -> pd.DataFrame:
    rows = []
    for name in MODELS:
        ms = [saes[i][name][1] for i in saes]
        rows.append({"model": name, "features": ms[0]["d_sae"],
                     "FVE": measured([m["fve"] for m in ms])[0],
                     "loss recovered": measured([m["loss_recovered"] for m in ms])[0],
                     "L0 (features/token)": measured([m["l0"] for m in ms], "{:.1f}")[0],
                     "dead (%)": measured([100 * m["dead_share"] for m in ms], "{:.1f}")[0]})
    return pd.DataFrame(rows).set_index("model")


def _band(ax, x0, x1, y0, y1, colour, alpha):
    """A smooth ribbon from the interval y0 = (lo, hi) at x0 to y1 at x1."""
    u = np.linspace(0, 1, 60)
    s = 3 * u**2 - 2 * u**3
    ax.fill_between(x0 + (x1 - x0) * u, y0[0] + (y1[0] - y0[0]) * s, y0[1] + (y1[1] - y0[1]) * s,
                    color=colour, alpha=alpha, lw=0)


def plot_flow(comp: dict):
    """Sankey-style flow of features along the four edges: parent bar (persisting | disappearing) on the left,
    child bar (matched | emerging) on the right; heights proportional to alive features."""
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    fig, axes = plt.subplots(1, len(EDGES), figsize=(12, 3.4))
    for ax, (a, b) in zip(axes, EDGES):
        sh = shares(comp, a, b)
        n_a, n_b = sh["n_parent"], sh["n_child"]
        P, M = len(comp[f"{a}__{b}__persisting"]), len(comp[f"{a}__{b}__matched"])
        D, E, sc, w = n_a - P, n_b - M, 1 / max(n_a, n_b, 1), 0.06
        ax.add_patch(Rectangle((0, 1 - P * sc), w, P * sc, color=COLOURS[a]))
        ax.add_patch(Rectangle((0, 1 - (P + D) * sc), w, D * sc, color="0.6"))
        ax.add_patch(Rectangle((1 - w, 1 - M * sc), w, M * sc, color=COLOURS[b]))
        ax.add_patch(Rectangle((1 - w, 1 - (M + E) * sc), w, E * sc, color=COLOURS[b], alpha=0.45))
        _band(ax, w, 1 - w, (1 - P * sc, 1), (1 - M * sc, 1), COLOURS[a], 0.5)
        mid_d, mid_e = 1 - (P + D / 2) * sc, 1 - (M + E / 2) * sc
        _band(ax, w, 0.45, (1 - (P + D) * sc, 1 - P * sc), (mid_d, mid_d), "0.6", 0.35)
        _band(ax, 0.55, 1 - w, (mid_e, mid_e), (1 - (M + E) * sc, 1 - M * sc), COLOURS[b], 0.25)
        ax.text(0.5, 1.02, f"persist {sh['persisting']:.0%}", ha="center", fontsize=8)
        ax.text(0.3, mid_d, f"disappear\n{sh['disappearing']:.0%}", ha="center", va="center", fontsize=8)
        ax.text(0.72, mid_e, f"emerge\n{sh['emerging']:.0%}", ha="center", va="center", fontsize=8)
        ax.set(xlim=(-0.02, 1.02), ylim=(min(1 - (P + D) * sc, 1 - (M + E) * sc) - 0.02, 1.1))
        ax.set_title(f"{a} ({n_a}) → {b} ({n_b})", fontsize=9)
        ax.axis("off")
    plt.tight_layout()
    plt.show()


def plot_threshold(comps: list[dict], cfg: Config):
    import matplotlib.pyplot as plt

    grid = np.round(np.arange(0.3, 0.96, 0.05), 2)
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.3), sharey=True)
    for ax, edges, title in ((axes[0], EDGES, "parent and child SAE: same seed (paper)"),
                             (axes[1], CROSS, "child SAE: another seed")):
        for a, b in (*edges, CONTROL):
            vals = np.array([[shares(c, a, b, t)["persisting"] for t in grid] for c in comps])
            domain = b.removesuffix("@next") if a == "base" else a  # colour by the fine-tuning domain involved
            style = (dict(c="k", ls="--") if (a, b) == CONTROL
                     else dict(c=COLOURS[domain], ls="-" if a == "base" else "-."))
            ax.plot(grid, vals.mean(0), label=edge_label(a, b).split(",")[0] if (a, b) != CONTROL else
                    "control: same model", **style)
            ax.fill_between(grid, vals.min(0), vals.max(0), color=style["c"], alpha=0.12, lw=0)
        ax.axvline(cfg.threshold, c="0.4", lw=1, ls=":")
        ax.set(xlabel="correlation threshold", title=title, ylim=(0, 1))
    axes[0].set_ylabel("persisting share of parent features")
    axes[1].legend(fontsize=8, loc="center left", bbox_to_anchor=(1, 0.5))
    plt.tight_layout()
    plt.show()


def plot_categories(comps: list[dict]):
    import matplotlib.pyplot as plt

    mean, sd = category_shares(comps)
    fig, ax = plt.subplots(figsize=(7.5, 3.2))
    x, width = np.arange(len(CATEGORIES)), 0.27
    for k, (fate, colour) in enumerate((("persisting", "#4c72b0"), ("disappearing", "0.6"), ("emerging", "#dd8452"))):
        ax.bar(x + (k - 1) * width, mean[fate], width, yerr=sd[fate], color=colour, label=fate, capsize=2)
    ax.set_xticks(x, CATEGORIES, fontsize=8)
    ax.set(ylabel="share of features")
    ax.legend(fontsize=8)
    plt.tight_layout()
    plt.show()


def _snippet(text: tuple, ids: np.ndarray, pos: int, ctx: int) -> str:
    start = pos // ctx * ctx
    piece = lambda a, b: "".join(text[t] for t in ids[a:b])  # noqa: E731
    s = piece(max(start, pos - 8), pos) + "⟦" + text[ids[pos]] + "⟧" + piece(pos + 1, min(start + ctx, pos + 3))
    return s.replace("\n", "⏎").replace("|", "¦")


def contexts(comp: dict, tokenizer, name: str, j: int, ctx: int, n: int = 3) -> str:
    """The top-n activating contexts of feature j of `name`, the token in ⟦ ⟧ (newlines as ⏎)."""
    text, ids = _vocab_text(tokenizer), comp["ids"].reshape(-1)
    idx, val = comp[f"{name}__top_idx"][:, j], comp[f"{name}__top_val"][:, j]
    return "  ·  ".join(f"{_snippet(text, ids, int(p), ctx)} ({v:.2g})" for p, v in zip(idx[:n], val[:n]) if v > 0)


def example_features(comp: dict, n: int = 3) -> list[tuple[int, str]]:
    """Base features to show: persisting along both base edges (best matched), disappearing along both
    (worst matched), and the two case-study features."""
    r_s, r_l = comp["base__stories__row_max"], comp["base__lua__row_max"]
    both = np.minimum(r_s, r_l)
    alive = comp["base__alive"]
    order = np.argsort(-np.where(alive, both, -np.inf))
    gone = np.argsort(np.where(alive, np.maximum(r_s, r_l), np.inf))
    picks = [(int(j), "persists (both edges)") for j in order[:n]] + [(int(j), "disappears (both)") for j in gone[:n]]
    picks += [(int(comp[f"case__{k}__match"][0]), f"case study: {k}") for k in ("assign", "except")]
    return picks


def contexts_table(comp: dict, tokenizer, cfg: Config, n: int = 3) -> pd.DataFrame:
    rows = []
    for j, role in example_features(comp, n):
        cat = comp["base__category"][j]
        rows.append({"base feature": j, "role": role, "category": CATEGORIES[cat] if cat >= 0 else "dead",
                     "best r in stories": round(float(comp["base__stories__row_max"][j]), 2),
                     "best r in lua": round(float(comp["base__lua__row_max"][j]), 2),
                     "top contexts (activation)": contexts(comp, tokenizer, "base", j, cfg.sae_ctx)})
    return pd.DataFrame(rows).set_index("base feature")


def case_table(comps: list[dict], kind: str) -> pd.DataFrame:
    """The base feature most selective for `kind` and its best match in each model, over seeds."""
    rows = []
    for k, name in enumerate(MODELS):
        matches = [int(c[f"case__{kind}__match"][k]) for c in comps]
        rows.append({"model": name, "matched feature (seed 0)": matches[0],
                     "r with the base feature": measured([c[f"case__{kind}__r"][k] for c in comps])[0],
                     "selectivity of the match": measured(
                         [c[f"{name}__{kind}_r"][j] for c, j in zip(comps, matches)])[0],
                     "most selective feature of the model": measured(
                         [np.where(c[f"{name}__alive"], c[f"{name}__{kind}_r"], -1).max() for c in comps])[0]})
    return pd.DataFrame(rows).set_index("model")


def case_text(comps: list[dict], cfg: Config) -> str:
    r_a = np.array([c["case__assign__r"] for c in comps]).mean(0)  # (4,) in MODELS order
    r_e = np.array([c["case__except__r"] for c in comps]).mean(0)
    return (f"The assignment feature's best partners correlate at {r_a[1]:.2f} (stories), {r_a[2]:.2f} (lua) and "
            f"{r_a[3]:.2f} (merged), {'all' if r_a[1:].min() >= cfg.threshold else 'not all'} at or above the "
            f"threshold of {cfg.threshold}. The exception feature's best Lua partner correlates at {r_e[2]:.2f}, its "
            f"best stories partner at {r_e[1]:.2f}: "
            + ("it has no match in Lua but one in stories, as the paper's story suggests." if r_e[1] >= cfg.threshold
               > r_e[2] else "it has no match in Lua, but none in stories either, so at this scale the loss is not "
               "specific to the Lua fine-tune." if max(r_e[1], r_e[2]) < cfg.threshold else
               "it keeps a match in Lua."))


# --------------------------------------------------------------------------- verdicts
PAPER = "Horn & Elliott 2024, Tracking Universal Features Through Fine-Tuning and Model Merging (arXiv 2410.12391)"
SELECTIVE = 0.3  # a case-study feature must correlate at least this much with its token indicator
RULES = {
    "few_persist": "mean persisting share over the four edges (paper protocol) < 0.25 and, with independent SAE "
                   "seeds, at most half the same-model control (fine-tuning, not SAE re-training, removes most "
                   "features): reproduced; share < 0.5: partly; else not reproduced",
    "generic_persist": "share of punctuation/whitespace features among persisting minus among disappearing "
                       "features (pooled edges) >= 0.10 on average and > 0 in every seed: reproduced; > 0 on "
                       "average: partly; else not reproduced",
    "assignment_universal": "the base feature most selective for `=` in code (selectivity >= 0.3) has a partner "
                            "at r >= threshold in each of stories, lua and merged (mean over seeds of the weakest "
                            "match): reproduced; weakest match >= 0.5: partly; else not reproduced",
    "exception_no_lua_match": "the base feature most selective for raise/except/…Error has its best Lua partner at "
                              "r < threshold and selectivity >= 0.3: reproduced; r < threshold but selectivity "
                              "< 0.3: partly; r >= threshold: not reproduced",
    "interpolation_monotone": "along the SLERP path, Spearman rho of accuracy against t >= 0.9 on stories and "
                              "<= -0.9 on Lua: reproduced; right signs only: partly; else not reproduced",
}


def _spearman(x, y) -> float:
    rx, ry = pd.Series(x).rank().to_numpy(), pd.Series(y).rank().to_numpy()
    return float(np.corrcoef(rx, ry)[0, 1]) if np.std(rx) and np.std(ry) else 0.0


def claims(comps: list[dict], acc: dict, cfg: Config) -> list[Claim]:
    thr, out = cfg.threshold, []
    pers = mean_persistence(comps)
    cross, ctrl = np.mean(mean_persistence(comps, CROSS)), np.mean(mean_persistence(comps, [CONTROL]))
    text, m, sd, n = measured(pers)
    verdict = ("reproduced" if m < 0.25 and cross <= 0.5 * ctrl else "partly" if m < 0.5 else "not reproduced")
    out.append(Claim("few_persist", "Very few SAE features persist across fine-tuning and merging.",
                     "qualitative, Figure 2 (exact shares not retrieved)", text, verdict,
                     f"mean persisting share {m:.2f} at r >= {thr}; with independent SAE seeds {cross:.2f}, "
                     f"against {ctrl:.2f} between two SAE seeds of one model", m, sd, n,
                     {"independent_seeds": cross, "control": ctrl, "per_seed": pers}))

    gap = generic_gap(comps)
    text, m, sd, n = measured(gap)
    verdict = ("reproduced" if m >= 0.10 and min(gap) > 0 else "partly" if m > 0 else "not reproduced")
    out.append(Claim("generic_persist", "Persisting features are mostly generic ones (punctuation, formatting).",
                     "qualitative (GPT-4 explanations)", text, verdict,
                     f"punctuation/whitespace share among persisting minus disappearing features: {m:+.2f}",
                     m, sd, n))

    weakest = [float(c["case__assign__r"][1:].min()) for c in comps]
    sel = [float(c["base__assign_r"][c["case__assign__match"][0]]) for c in comps]
    text, m, sd, n = measured(weakest)
    verdict = ("reproduced" if m >= thr and np.mean(sel) >= SELECTIVE else "partly" if m >= 0.5 else "not reproduced")
    out.append(Claim("assignment_universal", "A variable-assignment feature appears in all four models.",
                     "qualitative, Figure 3 (high pairwise correlations)", text, verdict,
                     f"weakest best-match r {m:.2f}; selectivity of the base feature {np.mean(sel):.2f}", m, sd, n))

    r_lua = [float(c["case__except__r"][2]) for c in comps]
    r_sto = [float(c["case__except__r"][1]) for c in comps]
    sel = [float(c["base__except_r"][c["case__except__match"][0]]) for c in comps]
    text, m, sd, n = measured(r_lua)
    verdict = ("not reproduced" if m >= thr else "reproduced" if np.mean(sel) >= SELECTIVE else "partly")
    out.append(Claim("exception_no_lua_match", "A Python-exception feature of the base has no match in the Lua model.",
                     "qualitative, Figure 4 (no match above the threshold)", text, verdict,
                     f"best Lua partner r {m:.2f}, selectivity {np.mean(sel):.2f}; best stories partner r "
                     f"{np.mean(r_sto):.2f}" + (" (also unmatched: not Lua-specific)" if np.mean(r_sto) < thr else ""),
                     m, sd, n))

    sweep = pd.DataFrame(acc["sweep"])
    rho_s, rho_l = _spearman(sweep["t"], sweep["stories"]), _spearman(sweep["t"], sweep["lua"])
    verdict = ("reproduced" if rho_s >= 0.9 and rho_l <= -0.9 else "partly" if rho_s > 0 > rho_l else "not reproduced")
    ours = (f"stories {sweep['stories'].iloc[0]:.3f} → {sweep['stories'].iloc[-1]:.3f}, "
            f"Lua {sweep['lua'].iloc[0]:.3f} → {sweep['lua'].iloc[-1]:.3f} (t = 0 → 1, one fine-tune seed)")
    out.append(Claim("interpolation_monotone", "Along the SLERP path each domain's accuracy moves monotonically "
                     "between the two fine-tunes (Figure 5).",
                     "stories 0.247 → 0.497, Lua 0.494 → 0.203 from the Lua to the stories end (exploratory "
                     "metric_test.json)", ours, verdict, f"Spearman rho: stories {rho_s:+.2f}, Lua {rho_l:+.2f}",
                     rho_s, None, 1, {"rho_lua": rho_l}))
    out.append(Claim("gpt4_explanations", "Automated GPT-4 explanations score persisting features differently "
                     "(Figure 6).", "explanation-score histograms", "token-category heuristic instead",
                     "not testable offline", "no LLM explainer offline; features are labelled by token class"))
    return out


def verdict_table(claims_: list[Claim]) -> pd.DataFrame:
    return pd.DataFrame([{"claim": c.claim, "paper": c.paper, "ours": c.ours, "verdict": c.verdict,
                          "why": c.reason} for c in claims_]).set_index("claim")


def write_results(claims_: list[Claim], ms: dict[str, Loaded], saes: dict, cfg: Config) -> dict:
    from lib import results

    sizes = {name: {"n_params": models.n_params(m.model), "d_model": m.model.config.hidden_size,
                    "d_mlp": m.model.config.intermediate_size, "d_sae": saes[0][name][1]["d_sae"]}
             for name, m in ms.items()}
    return results.write("05_horn", PAPER, cfg.profile, sizes, claims_, rules=RULES, n_seeds=cfg.n_seeds,
                         precision=cfg.precision)


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
