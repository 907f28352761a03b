"""Notebook 04_tzach: accuracy per token and strong-match token clusters in a BERT-6 (Tzach et al. 2025).

Tzach, Gross, Koresh, Rosner, Shpringer, Halevi & Kanter 2025, "Learning mechanism underlying NLP pre-training
and fine-tuning" (arXiv 2509.03407), read a masked language model token by token. Mask text as in pre-training
(15 % of the positions selected; of those 80 % become [MASK], 10 % a random token, 10 % stay) and, over the
selected positions only, count for each token type t how often the model recovers it:

    APT(t) = #{selected i: x_i = t, argmax p(.|i) = t} / #{selected i: x_i = t},   ⟨APT⟩ = mean_t APT(t)

(`lib.apt`). ⟨APT⟩ weighs every token type alike, so it is an "order parameter" of how many *types* the model
has learned, not of how many *positions* it gets right. The chapter measures, on the study's own BERT-6:

1. APT against token frequency (in the pre-training rows), ⟨APT⟩ and APT(50) (mean APT of the 50 most frequent
   types that occur in the evaluation);
2. ⟨APT⟩ after each block b = 0 (embeddings) ... L, read out two ways: the trained MLM head applied to block b
   (*logit lens*), and a fresh MLM head trained on the frozen block-b states (*probe*, only the head trains);
3. ⟨APT⟩ against the pre-training set size W_S (BERTs trained here on fewer documents);
4. the token confusion matrix (sparse), normalised as in the paper (rows whose maximum is off the diagonal
   dropped, each row divided by its diagonal), its strong-match clusters (connected components of entries
   >= `cluster_threshold`) and how sharp they are after each block (share of confusions on a cluster partner);
5. classification accuracy from the representation after block b (frozen features, mean-pooled, logistic
   regression), pre-trained against a randomly initialised control, on WordNet topic and relation sets;
6. the fine-tuned classifier's confidence against the mean APT of each input's tokens.

The `local` profile runs (2) on a packaged causal LM instead (next-token APT through the logit lens).
"""
from __future__ import annotations

import copy
import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from scipy import stats
from torch import nn

from lib import apt, corpora, models, plotting, precision, textdata, train
from lib.artifacts import load_or_compute
from lib.config import Config as _Config, ConfigError, param
from lib.results import Claim, measured
from lib.chapters import base_models
from lib.synthesis import seed_at
from lib.tasks import wordnet

PAPER = "Tzach et al. 2025, arXiv 2509.03407"
CHAPTER = "04_tzach"
PAPER_APT = {0: 0.037, 6: 0.31}  # ⟨APT⟩ at the embedding and after block 6 (the paper's Table 1)
# Verdict rules (stated on the page; applied by `claims`)
DEPTH_RHO, DEPTH_SD = 0.8, 2.0  # rank correlation with depth, and last-minus-first gap in seed sd
MIN_GAP = 0.001  # ... and at least this much (an APT or accuracy is a proportion)
FREQ_RHO = (0.3, 0.1)  # Spearman(frequency, APT): reproduced / partly
SMALL_CLUSTER, SMALL_SHARE, GIANT_SHARE = 4, 0.9, 0.05  # "small": 90 % of clusters <= 4 tokens, none > 5 % of kept
INDEPENDENT_RHO = (0.1, 0.3)  # |Spearman(confidence, mean APT)|: reproduced / partly
MIN_KEPT = 10  # a block's cluster sharpness counts only when at least this many token types keep their diagonal


@dataclass(frozen=True)
class Config(_Config):
    notebook = CHAPTER
    base_source: str = param("", doc="'' = the study's BERT base (00_base_models); else a folder or hub id of a "
                                     "BERT masked LM")
    allow_network: bool = param(False, doc="let the paper profile download base_source from the hub")
    device: str = param("auto", choices=("auto", "cpu", "cuda"), doc="where models run")
    bf16: bool | str = param("auto", choices=precision.SETTINGS, doc=precision.DOC + "; fine-tuning and probe heads")
    n_seeds: int = param(3, lo=1, hi=20, doc="seeds: mask draws of held-out windows (APT), task splits (fine-tuning)")
    n_ctx: int = param(128, lo=8, hi=512, doc="tokens per held-out window (capped by the model)")
    eval_rows: int = param(768, lo=4, hi=10**6, doc="held-out windows masked per seed for APT")
    probe_rows: int = param(1024, lo=4, hi=10**6, doc="training windows whose masked positions train the probes")
    probe_steps: int = param(200, lo=1, hi=10**6, doc="AdamW steps of each fresh MLM head (probe)")
    probe_batch: int = param(256, lo=1, hi=65536, doc="masked positions per probe step")
    probe_lr: float = param(3e-3, lo=1e-6, hi=1.0, doc="probe learning rate (constant)")
    apt_top_k: int = param(50, lo=1, hi=10**5, doc="k of APT(k): mean APT over the k most frequent token types")
    freq_bins: int = param(10, lo=2, hi=100, doc="log-spaced frequency bins for APT against frequency")
    ws_fractions: tuple[float, ...] = param((1.0, 0.125, 0.03125), lo=1e-4, hi=1.0,
                                            doc="pre-training set sizes W_S, as fractions of the base's rows")
    ws_protocol: str = param("same_epochs", choices=("same_epochs", "same_steps"),
                             doc="smaller W_S: as many epochs (steps scale with W_S) or as many steps as the base")
    ws_full_steps: int = param(0, lo=0, hi=10**7, doc="steps at W_S = 1 (0: the base's own; needed for base_source)")
    ws_lr: float = param(0.0, lo=0.0, hi=1.0, doc="learning rate of the W_S models (0: the base's recipe)")
    cluster_threshold: float = param(0.5, lo=1e-3, hi=1.0, doc="strong match: normalised confusion >= this")
    cluster_min_count: int = param(5, lo=1, hi=10**6, doc="token types selected fewer times are left out of clusters")
    topic_classes: tuple[str, ...] = param(wordnet.DEFAULT_TOPICS, choices=wordnet.NOUN_CLASSES,
                                           doc="WordNet lexicographer files of the topic task (DBpedia-like)")
    relations: tuple[str, ...] = param(wordnet.DEFAULT_RELATIONS, choices=tuple(wordnet.RELATIONS),
                                       doc="WordNet relations of the relation task (FewRel-like)")
    task_per_class: int = param(150, lo=4, hi=10**5, doc="examples per class in each task (train + test)")
    task_train_per_class: int = param(100, lo=2, hi=10**5, doc="of which in the training split")
    task_max_len: int = param(48, lo=8, hi=512, doc="tokens per task input (longer ones are cut)")
    ft_steps: int = param(300, lo=1, hi=10**6, doc="steps of full fine-tuning (classifier for analysis 6)")
    ft_batch: int = param(32, lo=1, hi=4096)
    ft_lr: float = param(1e-3, lo=1e-6, hi=1.0, doc="peak fine-tuning learning rate (linear decay)")
    n_ft_seeds: int = param(1, lo=1, hi=20, doc="fully fine-tuned classifiers per task (seed = split seed)")
    n_boot: int = param(1000, lo=10, hi=10**6, doc="bootstrap resamples for correlation intervals")
    local_model: str = param("smollm2-135m-instruct", choices=tuple(models.LOCAL_MODELS), doc="local profile model")
    local_rows: int = param(16, lo=1, hi=10**5, doc="local profile: held-out blocks of local_n_ctx tokens")
    local_n_ctx: int = param(128, lo=8, hi=4096)

    def validate(self):
        if self.task_train_per_class >= self.task_per_class:
            raise ConfigError(f"parameter 'task_train_per_class' = {self.task_train_per_class} must be smaller than "
                              f"'task_per_class' = {self.task_per_class} (the rest is the test split)")
        if self.base_source and self.ws_full_steps == 0 and self.ws_fractions:
            raise ConfigError("parameter 'ws_full_steps' must be > 0 when 'base_source' is set (the W_S models "
                              "are trained here)")
        if len(set(self.ws_fractions)) != len(self.ws_fractions):
            raise ConfigError(f"parameter 'ws_fractions' = {list(self.ws_fractions)} repeats a value")
        for name in ("topic_classes", "relations"):
            if len(set(getattr(self, name))) < 2:
                raise ConfigError(f"parameter {name!r} needs at least two distinct values")


# ----------------------------------------------------------------------------------------------- set-up
@dataclass
class Setup:
    cfg: Config
    base: nn.Module | None  # BertForMaskedLM, eval mode
    control: nn.Module | None  # same architecture, random initialisation
    tok: object = None
    base_key: str = ""  # what the caches built on the base are keyed by
    eval_rows: dict = field(default_factory=dict)  # held-out windows {"input_ids", "attention_mask"} (N, T)
    probe_rows: dict = field(default_factory=dict)  # training-split windows for the probes
    counts: np.ndarray | None = None  # (V,) token counts in the base's pre-training rows
    bcfg: base_models.Config | None = None
    local: pd.DataFrame | None = None  # local profile: per-layer next-token APT
    memo: dict = field(default_factory=dict)  # pre-training rows (computed at most once)

    @property
    def n_layers(self) -> int:
        return self.base.config.num_hidden_layers

    @property
    def device(self) -> torch.device:
        return next(self.base.parameters()).device

    @property
    def special_ids(self) -> list[int]:
        return sorted(set(self.tok.all_special_ids))


def _device(cfg: Config) -> torch.device:
    if cfg.device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(cfg.device)


def fresh_like(model: nn.Module, seed: int, cls=None, **overrides) -> nn.Module:
    """A randomly initialised model of `model`'s config (class `cls`, default the same), seeded; global RNG kept."""
    config = copy.deepcopy(model.config)
    for k, v in overrides.items():
        setattr(config, k, v)
    auto = cls or type(model)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        fresh = auto(config)
    return fresh.to(next(model.parameters()).device).eval()


def _load_base(cfg: Config, bcfg: base_models.Config):
    if not cfg.base_source:
        b = base_models.load_base("bert", cfg.profile)
        return b.model, b.tokenizer, b.artifact.key
    model, tok = models.load_hub(cfg.base_source, task="masked", allow_network=cfg.allow_network)
    return model, tok, f"source:{cfg.base_source}"


def setup(cfg: Config) -> Setup:
    """Base, control, held-out and probe windows, token counts. Local profile: the causal-LM extension only."""
    if cfg.profile == "local":
        return Setup(cfg, None, None, local=run_local(cfg))
    bcfg = base_models.Config.load(cfg.profile)
    base, tok, key = _load_base(cfg, bcfg)
    base = base.to(_device(cfg)).eval()
    s = Setup(cfg, base, fresh_like(base, cfg.seed), tok, key, bcfg=bcfg)
    train_docs, val_docs = base_models.source_corpora(bcfg)["english"].split()
    n_ctx = min(cfg.n_ctx, base.config.max_position_embeddings)
    s.eval_rows = _windows(tok, val_docs, n_ctx, cfg.eval_rows, cfg.seed + 101)
    s.probe_rows = _windows(tok, train_docs, n_ctx, cfg.probe_rows, cfg.seed + 202)
    s.counts = token_counts(s)
    return s


def _windows(tok, docs: list[str], n_ctx: int, rows: int, seed: int) -> dict:
    return textdata.mlm_windows(tok, textdata.sample_docs(docs, rows * n_ctx * 8, seed), n_ctx, max_rows=rows)


def _full_steps(s: Setup) -> int:
    return s.cfg.ws_full_steps or s.bcfg.bert_steps


def _rows_key(s: Setup) -> dict:
    """What the pre-training rows depend on beyond the base (a hub base: our windows of its tokenizer)."""
    extra = {"n_ctx": s.cfg.n_ctx, "seed": s.cfg.seed} if s.cfg.base_source else {}
    return {"base": s.base_key, "steps": _full_steps(s), **extra}


def pretrain_rows(s: Setup) -> dict:
    """The base's pre-training windows (the study's base: exactly the rows 00_base_models trained on)."""
    if "rows" not in s.memo:
        steps, batch = _full_steps(s), s.bcfg.batch_size
        corp = base_models.source_corpora(s.bcfg)
        if not s.cfg.base_source:
            docs, _ = base_models._splits(s.bcfg, "bert", corp)
            s.memo["rows"] = base_models._tensors(s.bcfg, "bert", s.tok, docs, steps * batch)
        else:
            n_ctx = min(s.cfg.n_ctx, s.base.config.max_position_embeddings)
            s.memo["rows"] = _windows(s.tok, corp["english"].split()[0], n_ctx, steps * batch, s.cfg.seed)
    return s.memo["rows"]


def token_counts(s: Setup) -> np.ndarray:
    """(V,) how often each token type occurs in the pre-training rows (special tokens 0), cached."""
    def compute(out: Path) -> dict:
        rows = pretrain_rows(s)
        ids = rows["input_ids"][rows["attention_mask"].bool()]
        counts = np.bincount(ids.numpy(), minlength=len(s.tok))
        counts[s.special_ids] = 0
        np.savez(out / "counts.npz", counts=counts)
        return {"n_rows": int(len(rows["input_ids"])), "n_tokens": int(counts.sum())}

    art = load_or_compute("tzach_counts", _rows_key(s), compute,
                          fingerprints=[s.base_key], recompute=s.cfg.recompute)
    s.memo["n_pretrain_rows"] = art.metrics["n_rows"]
    return np.load(art.path / "counts.npz", allow_pickle=False)["counts"]


# ----------------------------------------------------------------------------------- masked-token states
@dataclass
class MaskedStates:
    """Hidden states at the positions selected for masking, after every block."""

    h: torch.Tensor  # (n, L + 1, d_model); [:, 0] is the embedding output, [:, b] the output of block b
    true: torch.Tensor  # (n,) the original token
    kind: torch.Tensor  # (n,) 0 = [MASK], 1 = random token, 2 = unchanged


@torch.no_grad()
def masked_states(model, rows: dict, mask_id: int, special_ids, seed: int, batch: int = 64,
                  p: float = 0.15) -> MaskedStates:
    """Mask `rows` as in pre-training (seeded, 80/10/10 over 15 %) and keep every block's state at the selection."""
    g = torch.Generator().manual_seed(seed)
    ids, att = rows["input_ids"], rows["attention_mask"]
    never = att.eq(0) | torch.isin(ids, torch.tensor(list(special_ids)))
    masked, labels = train.mask_tokens(ids, mask_id, model.config.vocab_size, never, p, g)
    sel, dev, hs = labels.ne(-100), next(model.parameters()).device, []
    order = att.sum(1).argsort()  # similar lengths together, each batch cut to its longest row
    for i in range(0, len(ids), batch):
        idx = order[i:i + batch]
        T = int(att[idx].sum(1).max())
        out = model(input_ids=masked[idx, :T].to(dev), attention_mask=att[idx, :T].to(dev), output_hidden_states=True)
        hs.append(torch.stack(out.hidden_states, 2)[sel[idx, :T].to(dev)].float().cpu())  # (n_i, L+1, d)
    sel = sel[order]
    shown, true = masked[order][sel], labels[order][sel]
    kind = torch.where(shown == mask_id, 0, torch.where(shown == true, 2, 1))
    return MaskedStates(torch.cat(hs), true, kind)


@torch.no_grad()
def lens_predictions(model, h: torch.Tensor, chunk: int = 4096) -> torch.Tensor:
    """Argmax of the model's own MLM head on states h (n, d) from any block -> (n,) token ids (logit lens)."""
    dev = next(model.parameters()).device
    return torch.cat([model.cls(h[i:i + chunk].to(dev)).argmax(-1).cpu() for i in range(0, len(h), chunk)])


class ProbeHead(nn.Module):
    """A fresh MLM head (BERT's shape: dense -> GELU -> LayerNorm -> decoder), trained on frozen states.

    Its decoder covers only the token types among its training targets (`classes`): a head trained from scratch
    never ranks a type it was never shown first anyway, and a 4k-30k vocabulary would dominate the cost.
    """

    def __init__(self, d_model: int, classes: torch.Tensor):
        super().__init__()
        self.dense, self.norm = nn.Linear(d_model, d_model), nn.LayerNorm(d_model)
        self.decoder = nn.Linear(d_model, len(classes))
        self.register_buffer("classes", classes)  # (K,) token id of each output
        for lin in (self.dense, self.decoder):
            nn.init.normal_(lin.weight, std=0.02)
            nn.init.zeros_(lin.bias)

    def forward(self, h):  # (n, d) -> (n, K) logits over `classes`
        return self.decoder(self.norm(nn.functional.gelu(self.dense(h))))


def train_probe(h: torch.Tensor, y: torch.Tensor, seed: int, steps: int, batch: int, lr: float,
                device=None, bf16: bool = False) -> ProbeHead:
    """Train a ProbeHead on states h (n, d) to predict tokens y (n,); AdamW, constant lr, seeded; bf16 autocast
    when `bf16` (the effective choice, lib.precision)."""
    device = device or torch.device("cpu")
    classes = y.unique()  # sorted
    target = torch.searchsorted(classes, y)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        head = ProbeHead(h.shape[1], classes).to(device)
        opt = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=0.01)
        g = torch.Generator().manual_seed(seed)
        for _ in range(steps):
            idx = torch.randint(len(h), (min(batch, len(h)),), generator=g)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                loss = nn.functional.cross_entropy(head(h[idx].to(device)).float(), target[idx].to(device))
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
    return head.eval()


@torch.no_grad()
def probe_predictions(head: ProbeHead, h: torch.Tensor, chunk: int = 4096) -> torch.Tensor:
    """(n,) token ids: the head's top class for each state in h (n, d)."""
    dev = next(head.parameters()).device
    return torch.cat([head.classes[head(h[i:i + chunk].to(dev)).argmax(-1)].cpu() for i in range(0, len(h), chunk)])


def apt_stats(true, pred, counts, k: int) -> dict:
    """⟨APT⟩, APT(k) and plain (position-weighted) accuracy of predictions over selected positions."""
    per = apt.accuracy_per_token(true, pred)
    return {"mean_apt": apt.mean_apt(per), "apt_top": apt.apt_top_frequent(per, counts, k),
            "accuracy": float((np.asarray(true) == np.asarray(pred)).mean()), "n_types": len(per)}


# ----------------------------------------------------------------------------- analyses 1-2: APT per block
@dataclass
class BlockAPT:
    table: pd.DataFrame  # model, readout, block, seed, mean_apt, apt_top, accuracy, n_types
    true: dict  # model -> (n,) true tokens pooled over seeds
    pred: dict  # (model, readout) -> (n, L + 1) predictions pooled over seeds
    kind: dict  # model -> (n,)


def _skip_local(fn):
    def wrapper(s, *args, **kwargs):
        return None if s is None or getattr(s, "base", 1) is None else fn(s, *args, **kwargs)
    wrapper.__name__, wrapper.__doc__ = fn.__name__, fn.__doc__
    return wrapper


def train_probes(s: Setup, model) -> list[ProbeHead]:
    """One fresh MLM head per block, trained on the frozen states of one masking of the probe windows."""
    cfg = s.cfg
    tr = masked_states(model, s.probe_rows, s.tok.mask_token_id, s.special_ids, cfg.seed + 1000)
    return [train_probe(tr.h[:, b], tr.true, cfg.seed + b, cfg.probe_steps, cfg.probe_batch, cfg.probe_lr, s.device,
                        cfg.use_bf16())
            for b in range(tr.h.shape[1])]


def block_predictions(s: Setup, model, heads: list[ProbeHead], seed: int) -> tuple[MaskedStates, dict]:
    """Masked states of the held-out windows (mask draw `seed`) and {readout: (n, L + 1) predictions}."""
    ev = masked_states(model, s.eval_rows, s.tok.mask_token_id, s.special_ids, s.cfg.seed + seed)
    lens = [lens_predictions(model, ev.h[:, b]) for b in range(ev.h.shape[1])]
    probe = [probe_predictions(head, ev.h[:, b]) for b, head in enumerate(heads)]
    return ev, {"lens": torch.stack(lens, 1), "probe": torch.stack(probe, 1)}


@_skip_local
def run_blocks(s: Setup) -> BlockAPT:
    """⟨APT⟩ after every block, base and control, logit lens and probe, n_seeds mask draws (analysis 2)."""
    rows, true, pred, kind = [], {}, {}, {}
    for name, model in (("base", s.base), ("control", s.control)):
        heads = train_probes(s, model)
        for seed in range(s.cfg.n_seeds):
            ev, preds = block_predictions(s, model, heads, seed)
            true.setdefault(name, []).append(ev.true)
            kind.setdefault(name, []).append(ev.kind)
            for readout, p in preds.items():
                pred.setdefault((name, readout), []).append(p)
                for b in range(p.shape[1]):
                    masked = ev.kind == 0
                    rows.append({"model": name, "readout": readout, "block": b, "seed": seed,
                                 **apt_stats(ev.true, p[:, b], s.counts, s.cfg.apt_top_k),
                                 "mean_apt_masked": apt.mean_apt(ev.true[masked], p[masked, b])})
    cat = lambda d: {k: torch.cat(v).numpy() for k, v in d.items()}  # noqa: E731
    return BlockAPT(pd.DataFrame(rows), cat(true), cat(pred), cat(kind))


def block_summary(res: BlockAPT | None) -> pd.DataFrame | None:
    """Mean and sd over seeds of ⟨APT⟩ per (model, readout, block)."""
    if res is None:
        return None
    g = res.table.groupby(["model", "readout", "block"])
    out = g[["mean_apt", "apt_top", "accuracy", "mean_apt_masked"]].mean()
    out = out.join(g["mean_apt"].std().rename("mean_apt_sd"))
    return out.reset_index().round(4)


@_skip_local
def final_apt(s: Setup, res: BlockAPT) -> dict:
    """The base's own head after the last block (analysis 1): APT per type, frequency bins, correlations."""
    L = s.n_layers
    true, pred = res.true["base"], res.pred[("base", "lens")][:, L]
    per = apt.accuracy_per_token(true, pred)
    ids = np.fromiter(per, dtype=np.int64)
    freq = s.counts[ids]
    vals = np.array([per[i] for i in ids])
    rho = stats.spearmanr(freq, vals).statistic if np.ptp(freq) and np.ptp(vals) else float("nan")
    by_seed = res.table.query("model == 'base' and readout == 'lens' and block == @L")
    bins = {f"block {b} ({r})": apt.apt_by_frequency_bins(apt.accuracy_per_token(true, res.pred[("base", r)][:, b]),
                                                           s.counts, s.cfg.freq_bins)
            for r, b in (("probe", 0), ("probe", L // 2), ("lens", L))}
    return {"apt": per, "freq": freq, "ids": ids, "rho": float(rho), "bins": bins,
            "mean_apt": measured(by_seed["mean_apt"]), "apt_top": measured(by_seed["apt_top"]),
            "accuracy": measured(by_seed["accuracy"]),
            "mask_only": apt.mean_apt(true[res.kind["base"] == 0], pred[res.kind["base"] == 0])}


# ------------------------------------------------------------------------------ analysis 3: W_S models
def ws_model(s: Setup, fraction: float):
    """A BERT of the base's architecture pre-trained here on the first `fraction` of the base's rows (cached)."""
    if fraction == 1.0 and not s.cfg.base_source:
        return s.base, {"rows": s.memo.get("n_pretrain_rows"), "steps": _full_steps(s), "source": "the base"}
    cfg, full = s.cfg, _full_steps(s)
    steps = max(1, round(fraction * full)) if cfg.ws_protocol == "same_epochs" else full
    tcfg = base_models.train_config(s.bcfg, "bert")
    tcfg = dataclasses.replace(tcfg, n_steps=steps, warmup_steps=max(1, steps // 20), eval_every=0, progress=False,
                               lr=cfg.ws_lr or tcfg.lr, desc=f"W_S x{fraction:g}")

    def compute(out: Path) -> dict:
        rows = pretrain_rows(s)
        n = max(1, round(fraction * len(rows["input_ids"])))
        data = {k: v[:n] for k, v in rows.items()}
        model = fresh_like(s.base, s.bcfg.seed).train()
        hist = train.train(model, data, tcfg, mask_token_id=s.tok.mask_token_id, vocab_size=len(s.tok))
        models.save_model(model.cpu(), s.tok, out / "model")
        return {"rows": n, "steps": steps, "tokens_seen": hist.tokens_seen, "train_seconds": hist.train_time}

    key = {"fraction": fraction, "protocol": cfg.ws_protocol, "rows": _rows_key(s),
           "train": {k: v for k, v in dataclasses.asdict(tcfg).items() if k != "progress"}}
    art = load_or_compute("tzach_ws", key, compute, fingerprints=[s.base_key], recompute=cfg.recompute)
    model, _ = models.load_model(art.path / "model", task="masked")
    return model.to(s.device).eval(), {**art.metrics, "source": "trained here"}


@torch.no_grad()
def final_head_apt(s: Setup, model, seed: int) -> dict:
    ev = masked_states(model, s.eval_rows, s.tok.mask_token_id, s.special_ids, s.cfg.seed + seed)
    return apt_stats(ev.true, lens_predictions(model, ev.h[:, -1]), s.counts, s.cfg.apt_top_k)


@_skip_local
def run_ws(s: Setup, res: BlockAPT | None = None) -> pd.DataFrame:
    """⟨APT⟩ of the final head against the pre-training set size (analysis 3), n_seeds mask draws each.

    The base's own numbers are taken from `res` (the same mask draws) when given.
    """
    rows, L = [], s.n_layers
    for f in sorted(s.cfg.ws_fractions):
        model, meta = ws_model(s, f)
        reuse = res is not None and model is s.base
        for seed in range(s.cfg.n_seeds):
            if reuse:
                r = res.table.query("model == 'base' and readout == 'lens' and block == @L and seed == @seed").iloc[0]
                got = {k: r[k] for k in ("mean_apt", "apt_top", "accuracy", "n_types")}
            else:
                got = final_head_apt(s, model, seed)
            rows.append({"fraction": f, "rows": meta["rows"], "steps": meta["steps"], "seed": seed, **got})
    return pd.DataFrame(rows)


# ------------------------------------------------------------------------- analysis 4: confusion clusters
def confusion_clusters(true, pred, vocab: int, threshold: float, min_count: int) -> dict:
    """Sparse confusion matrix -> paper normalisation -> strong-match clusters, and their concentration.

    Rows of token types selected fewer than `min_count` times are dropped first (too few to say where their
    row maximum is). concentration = share of the kept tokens' confusions (off-diagonal counts) that go to a
    member of the token's own cluster: 0 for diffuse errors, 1 when every error stays inside a cluster.
    """
    M = apt.confusion_counts(true, pred, vocab)
    rare = np.flatnonzero(np.asarray(M.sum(1)).ravel() < min_count)
    M = M.tolil()
    M[rare] = 0
    M = M.tocsr()
    M.eliminate_zeros()
    Mn, kept = apt.normalise_confusion(M)
    clusters = apt.strong_match_clusters(Mn, kept, threshold) if kept.size else []
    label = np.full(vocab, -1)
    for c, ids in enumerate(clusters):
        label[ids] = c
    C = M[kept].tocoo()  # rows: kept tokens (0..K-1), columns: token ids
    off = kept[C.row] != C.col
    inside = off & (label[kept[C.row]] >= 0) & (label[kept[C.row]] == label[C.col])
    total = C.data[off].sum()
    return {"clusters": clusters, "n_kept": int(kept.size), **apt.cluster_summary(clusters, kept.size),
            "concentration": float(C.data[inside].sum() / total) if total else float("nan")}


def run_clusters(s: Setup, res: BlockAPT | None) -> tuple[pd.DataFrame | None, dict | None]:
    """Cluster statistics per (model, readout, block) and the base's final-head clusters."""
    rows, final = [], None
    if res is None:
        return None, None
    for (name, readout), pred in res.pred.items():
        for b in range(pred.shape[1]):
            c = confusion_clusters(res.true[name], pred[:, b], len(s.tok), s.cfg.cluster_threshold,
                                   s.cfg.cluster_min_count)
            rows.append({"model": name, "readout": readout, "block": b,
                         **{k: v for k, v in c.items() if k not in ("clusters", "size_histogram")}})
            if (name, readout, b) == ("base", "lens", s.n_layers):
                final = c
    return pd.DataFrame(rows), final


def cluster_examples(s: Setup, final: dict | None, n: int = 12):
    """The largest strong-match clusters of the final head, decoded (a note when there are none)."""
    if s.base is None:
        return None
    if not final or not final["clusters"]:
        return plotting.say("*No strong-match cluster at the final head.*")
    return _full(pd.DataFrame([{"size": len(c), "tokens": " · ".join(s.tok.convert_ids_to_tokens(c.tolist()))}
                               for c in final["clusters"][:n]]))


# ----------------------------------------------------------------------- analysis 5: fine-tuning per block
@dataclass
class Task:
    ds: wordnet.LabelledSet
    enc: dict  # input_ids, attention_mask, token_type_ids (N, T); labels (N,)


def tasks(s: Setup) -> dict[str, Task]:
    """The topic and relation sets (cached as JSON: parsing WordNet takes seconds), encoded for the base."""
    cfg = s.cfg
    key = {"topics": cfg.topic_classes, "relations": cfg.relations, "per_class": cfg.task_per_class, "seed": cfg.seed}

    def compute(out: Path) -> dict:
        from lib.corpora import wordnet_synsets

        syn = wordnet_synsets()
        sets = [wordnet.topic_set(cfg.topic_classes, cfg.task_per_class, cfg.seed, syn),
                wordnet.relation_set(cfg.relations, cfg.task_per_class, cfg.seed, syn)]
        (out / "sets.json").write_text(json.dumps([{"name": d.name, "inputs": d.inputs, "labels": d.labels.tolist(),
                                                     "classes": d.classes} for d in sets]))
        return {d.name: d.fingerprint for d in sets}

    stamp = (corpora.package_dir("wordnet-base") / ".complete").read_text().strip()
    art = load_or_compute("tzach_tasks", key, compute, fingerprints=[stamp], recompute=cfg.recompute)
    max_len = min(cfg.task_max_len, s.base.config.max_position_embeddings)
    out = {}
    for d in json.loads((art.path / "sets.json").read_text()):
        ds = wordnet.LabelledSet(d["name"], tuple(tuple(x) if isinstance(x, list) else x for x in d["inputs"]),
                                 np.asarray(d["labels"], dtype=np.int64), tuple(d["classes"]))
        out[ds.name] = Task(ds, encode(s.tok, ds, max_len))
    return out


def encode(tok, ds: wordnet.LabelledSet, max_len: int) -> dict:
    """Token tensors of a labelled set, padded to its longest input; pairs as [CLS] head [SEP] tail [SEP]."""
    x = list(ds.inputs)
    args = ([a for a, _ in x], [b for _, b in x]) if isinstance(x[0], tuple) else (x,)
    enc = tok(*args, padding="longest", truncation=True, max_length=max_len, return_tensors="pt")
    return {k: enc[k] for k in ("input_ids", "attention_mask", "token_type_ids")} | {
        "labels": torch.as_tensor(ds.labels)}


@torch.no_grad()
def pooled_states(model, enc: dict, batch: int = 128) -> np.ndarray:
    """Mean over the input's tokens of every block's output: (N, L + 1, d_model)."""
    dev, out = next(model.parameters()).device, []
    for i in range(0, len(enc["input_ids"]), batch):
        part = {k: enc[k][i:i + batch].to(dev) for k in ("input_ids", "attention_mask", "token_type_ids")}
        hs = torch.stack(model(**part, output_hidden_states=True).hidden_states, 1)  # (B, L+1, T, d)
        w = part["attention_mask"][:, None, :, None].to(hs)
        out.append(((hs * w).sum(2) / w.sum(2)).float().cpu())
    return torch.cat(out).numpy()


def linear_head(X: np.ndarray, y: np.ndarray, train_idx, test_idx) -> tuple[float, np.ndarray]:
    """Logistic regression on standardised features: (test accuracy, test class probabilities)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=500, C=1.0))
    clf.fit(X[train_idx], y[train_idx])
    return float(clf.score(X[test_idx], y[test_idx])), clf.predict_proba(X[test_idx])


def classifier_from(mlm, num_labels: int, seed: int) -> nn.Module:
    """BertForSequenceClassification with the masked LM's encoder and a fresh (seeded) pooler + classifier."""
    from transformers import BertForSequenceClassification

    clf = fresh_like(mlm, seed, cls=BertForSequenceClassification, num_labels=num_labels,
                     architectures=["BertForSequenceClassification"])
    missing, unexpected = clf.bert.load_state_dict(mlm.bert.state_dict(), strict=False)
    if unexpected or any(not k.startswith("pooler.") for k in missing):
        raise RuntimeError(f"encoder weights do not fit: missing {missing}, unexpected {unexpected}")
    return clf


def _ft_config(cfg: Config, seed: int) -> train.TrainConfig:
    return train.TrainConfig(objective="classification", n_steps=cfg.ft_steps, batch_size=cfg.ft_batch,
                             lr=cfg.ft_lr, weight_decay=0.01, warmup_steps=max(1, cfg.ft_steps // 10),
                             schedule="linear", seed=seed, bf16=cfg.use_bf16(), progress=False, desc="fine-tune")


def _ft_key(s: Setup, task: Task, seed: int) -> dict:
    tcfg = {k: v for k, v in dataclasses.asdict(_ft_config(s.cfg, seed)).items() if k != "progress"}
    return {"task": task.ds.name, "data": task.ds.fingerprint, "n_train": s.cfg.task_train_per_class,
            "max_len": s.cfg.task_max_len, "train": tcfg}


def tuned_model(s: Setup, task: Task, seed: int):
    """The base fully fine-tuned on the split `seed` of the task (cached): (model, artifact)."""
    tr, te = task.ds.split(s.cfg.task_train_per_class, seed)

    def compute(out: Path) -> dict:
        clf = classifier_from(s.base, len(task.ds.classes), seed)
        hist = train.train(clf, {k: v[tr] for k, v in task.enc.items()}, _ft_config(s.cfg, seed))
        acc = task_accuracy(clf, {k: v[te] for k, v in task.enc.items()})
        models.save_model(clf.cpu(), s.tok, out / "model")
        return {"test_accuracy": acc, "train_seconds": hist.train_time, "n_train": len(tr), "n_test": len(te)}

    art = load_or_compute("tzach_tuned", _ft_key(s, task, seed), compute, fingerprints=[s.base_key],
                          recompute=s.cfg.recompute)
    model, _ = models.load_model(art.path / "model", task="classification")
    return model.to(s.device).eval(), art


@torch.no_grad()
def task_accuracy(model, inputs: dict, batch: int = 128) -> float:
    """Accuracy of a sequence classifier on inputs {input_ids, attention_mask, token_type_ids, labels}."""
    return float((class_probs(model, inputs, batch).argmax(1) == inputs["labels"]).float().mean())


@torch.no_grad()
def class_probs(model, inputs: dict, batch: int = 128) -> torch.Tensor:
    was, dev, out = model.training, next(model.parameters()).device, []
    model.eval()
    for i in range(0, len(inputs["input_ids"]), batch):
        part = {k: inputs[k][i:i + batch].to(dev) for k in ("input_ids", "attention_mask", "token_type_ids")}
        out.append(model(**part).logits.float().softmax(-1).cpu())
    model.train(was)
    return torch.cat(out)


@_skip_local
def run_finetune(s: Setup) -> dict:
    """Per-block accuracy of logistic heads on frozen mean-pooled states (base, control, tuned), per task."""
    out = {"table": [], "tuned": {}, "tasks": tasks(s)}
    for tname, task in out["tasks"].items():
        y = task.ds.labels
        feats = {"base": pooled_states(s.base, task.enc), "control": pooled_states(s.control, task.enc)}
        for k in range(s.cfg.n_seeds):
            seed = s.cfg.seed + k
            tr, te = task.ds.split(s.cfg.task_train_per_class, seed)
            if k < s.cfg.n_ft_seeds:
                tuned, art = tuned_model(s, task, seed)
                out["tuned"][(tname, seed)] = (tuned, art, te)
                feats[f"tuned{seed}"] = pooled_states(tuned, task.enc)
            for name, X in feats.items():
                if name.startswith("tuned") and name != f"tuned{seed}":
                    continue
                for b in range(X.shape[1]):
                    acc, _ = linear_head(X[:, b], y, tr, te)
                    out["table"].append({"task": tname, "model": "tuned" if name.startswith("tuned") else name,
                                         "block": b, "seed": seed, "accuracy": acc, "chance": 1 / len(task.ds.classes)})
    out["table"] = pd.DataFrame(out["table"])
    return out


# -------------------------------------------------------------------- analysis 6: confidence against APT
def input_mean_apt(input_ids: torch.Tensor, attention_mask: torch.Tensor, per: dict, special) -> np.ndarray:
    """(N,) mean APT over each input's non-special tokens that have an APT estimate (NaN if none)."""
    out = []
    for ids, m in zip(input_ids.tolist(), attention_mask.tolist()):
        vals = [per[t] for t, keep in zip(ids, m) if keep and t not in special and t in per]
        out.append(np.mean(vals) if vals else np.nan)
    return np.asarray(out)


def _pearson_rows(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Pearson correlation of each row pair of x, y (B, n) -> (B,); NaN where a row is constant."""
    x, y = x - x.mean(1, keepdims=True), y - y.mean(1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (x * y).sum(1) / np.sqrt((x * x).sum(1) * (y * y).sum(1))


def correlation_ci(x, y, n_boot: int, seed: int) -> dict:
    """Pearson r and Spearman rho (Pearson of ranks) with percentile 95 % bootstrap intervals over examples.

    NaN (with a NaN interval) when x or y is constant, e.g. an untrained model's inputs all at APT 0.
    """
    x, y = np.asarray(x, float), np.asarray(y, float)
    idx = np.random.default_rng(seed).integers(0, len(x), (n_boot, len(x)))
    out = {"n": len(x)}
    for name, f in (("pearson", lambda v: v), ("spearman", lambda v: stats.rankdata(v, axis=-1))):
        point = _pearson_rows(f(x)[None], f(y)[None])[0]
        boots = _pearson_rows(f(x[idx]), f(y[idx]))
        ci = np.nanpercentile(boots, [2.5, 97.5]) if np.isfinite(boots).any() else (np.nan, np.nan)
        out |= {name: float(point), f"{name}_ci": (float(ci[0]), float(ci[1]))}
    return out


@_skip_local
def run_confidence(s: Setup, fin: dict, final: dict) -> dict:
    """Per test example: the tuned classifier's max class probability against its tokens' mean APT."""
    out = {}
    for (tname, seed), (tuned, _, te) in fin["tuned"].items():
        if seed != s.cfg.seed:
            continue
        enc = {k: v[te] for k, v in fin["tasks"][tname].enc.items()}
        conf = class_probs(tuned, enc).max(1).values.numpy()
        m = input_mean_apt(enc["input_ids"], enc["attention_mask"], final["apt"], set(s.special_ids))
        ok = ~np.isnan(m)
        out[tname] = {"confidence": conf[ok], "mean_apt": m[ok],
                      **correlation_ci(m[ok], conf[ok], s.cfg.n_boot, s.cfg.seed)}
    return out


# --------------------------------------------------------------------------- local profile: causal LM
def final_norm(model) -> nn.Module:
    """The norm applied before the unembedding (llama-like `model.norm`, GPT-2 `transformer.ln_f`)."""
    for path in ("model.norm", "transformer.ln_f", "model.language_model.norm"):
        try:
            return model.get_submodule(path)
        except AttributeError:
            continue
    raise ValueError(f"no final norm found in {type(model).__name__}")


@torch.no_grad()
def causal_lens_apt(model, input_ids: torch.Tensor, k: int = 50, batch: int = 4) -> pd.DataFrame:
    """Next-token APT after every layer of a causal LM via the logit lens (final norm + unembedding).

    input_ids (N, T). HF's last hidden state is already normed; earlier ones get the final norm. APT(k) uses the
    k most frequent target types of this text. Returns one row per block: block, mean_apt, apt_top, accuracy.
    """
    norm, unembed, dev = final_norm(model), model.get_output_embeddings(), next(model.parameters()).device
    preds, true = None, input_ids[:, 1:].reshape(-1)
    for i in range(0, len(input_ids), batch):
        hs = model(input_ids[i:i + batch].to(dev), output_hidden_states=True).hidden_states
        p = torch.stack([unembed(h if b == len(hs) - 1 else norm(h))[:, :-1].argmax(-1).reshape(-1).cpu()
                         for b, h in enumerate(hs)], 1)  # (B * (T-1), L + 1)
        preds = p if preds is None else torch.cat([preds, p])
    counts = np.bincount(true.numpy(), minlength=int(true.max()) + 1)
    return pd.DataFrame([{"block": b, **apt_stats(true, preds[:, b], counts, k)} for b in range(preds.shape[1])])


def run_local(cfg: Config) -> pd.DataFrame:
    """The APT-per-layer analysis on a packaged causal LM (raises MissingPackageError if not installed)."""
    model, tok = models.load_local(cfg.local_model)
    bcfg = base_models.Config.load("tiny")
    docs = textdata.sample_docs(base_models.source_corpora(bcfg)["english"].split()[1],
                                cfg.local_rows * cfg.local_n_ctx * 6, cfg.seed)
    ids = textdata.pack_blocks(tok, docs, cfg.local_n_ctx, max_blocks=cfg.local_rows)
    return causal_lens_apt(model.to(_device(cfg)), ids, cfg.apt_top_k)


# ------------------------------------------------------------------------------------- verdicts (rules)
def depth_verdict(df: pd.DataFrame, col: str) -> tuple[str, dict]:
    """Rule for "rises along the blocks": df has columns block, seed, `col`. Returns (verdict, numbers).

    reproduced: last block above block 0 by more than DEPTH_SD combined seed-sd and MIN_GAP, and
    Spearman(block, mean) >= DEPTH_RHO; partly: the gap alone; not reproduced: a gap within the noise, or a fall.
    """
    g = df.groupby("block")[col]
    mean, sd = g.mean(), g.std().fillna(0.0)
    first, last = mean.index.min(), mean.index.max()
    gap = float(mean[last] - mean[first])
    noise = float(np.hypot(sd[first], sd[last]))
    rho = float(stats.spearmanr(mean.index, mean.values).statistic) if mean.nunique() > 1 else 0.0
    nums = {"first": float(mean[first]), "last": float(mean[last]), "sd_first": float(sd[first]),
            "sd_last": float(sd[last]), "gap": gap, "rho": rho, "n": int(df["seed"].nunique())}
    clear = gap > MIN_GAP and gap > DEPTH_SD * noise
    return ("reproduced" if clear and rho >= DEPTH_RHO else "partly" if clear else "not reproduced"), nums


def _sizes_verdict(final: dict) -> str:
    sizes = np.array([len(c) for c in final["clusters"]])
    if sizes.size == 0:
        return "not reproduced"
    small = (sizes <= SMALL_CLUSTER).mean() >= SMALL_SHARE and sizes.max() <= max(10, GIANT_SHARE * final["n_kept"])
    return "reproduced" if small and sizes.size >= 3 else "partly"


def _ws_verdict(ws: pd.DataFrame) -> tuple[str, pd.Series]:
    """reproduced: every larger W_S beats the next smaller by more than DEPTH_SD combined sd; partly: only the
    largest beats the smallest that clearly; else not reproduced."""
    g = ws.groupby("rows")["mean_apt"]
    mean, sd = g.mean(), g.std().fillna(0.0)
    steps = [(mean.iloc[i + 1] - mean.iloc[i], np.hypot(sd.iloc[i], sd.iloc[i + 1])) for i in range(len(mean) - 1)]
    clear = [d > MIN_GAP and d > DEPTH_SD * n for d, n in steps]
    overall = mean.iloc[-1] - mean.iloc[0]
    if steps and all(clear):
        return "reproduced", mean
    return ("partly" if overall > MIN_GAP and overall > DEPTH_SD * np.hypot(sd.iloc[0], sd.iloc[-1]) else
            "not reproduced"), mean


def _independence_verdict(c: dict) -> str:
    rho, (lo, hi) = c["spearman"], c["spearman_ci"]
    if not np.isfinite(rho):
        return "not reproduced"
    if abs(rho) < INDEPENDENT_RHO[0] or lo <= 0 <= hi:
        return "reproduced"
    return "partly" if abs(rho) < INDEPENDENT_RHO[1] else "not reproduced"


def _combine(verdicts: list[str]) -> str:
    if all(v == "reproduced" for v in verdicts):
        return "reproduced"
    return "partly" if any(v in ("reproduced", "partly") for v in verdicts) else "not reproduced"


def _fmt(m: float, sd: float) -> str:
    return f"{m:.3f} ± {sd:.3f}"


def claims(s: Setup, res: BlockAPT, fa: dict, ws: pd.DataFrame, cl: pd.DataFrame, final: dict, fin: dict,
           conf: dict) -> list[Claim]:
    """One Claim per headline statement of the paper, verdicts by the rules at the top of this module."""
    L, out = s.n_layers, []
    t = res.table.query("model == 'base'")
    v, n = depth_verdict(t.query("readout == 'probe'"), "mean_apt")
    _, nl = depth_verdict(t.query("readout == 'lens'"), "mean_apt")
    out.append(Claim("apt_rises_with_depth", "⟨APT⟩ rises along the transformer blocks",
                     "0.037 (block 0) → 0.31 (block 6)",
                     f"probe {_fmt(n['first'], n['sd_first'])} → {_fmt(n['last'], n['sd_last'])} (block {L}); "
                     f"logit lens {_fmt(nl['first'], nl['sd_first'])} → {_fmt(nl['last'], nl['sd_last'])} (n={n['n']})",
                     v, f"fresh-head readout: gap {n['gap']:+.3f}, Spearman(block, ⟨APT⟩) {n['rho']:.2f}",
                     value=n["last"], spread=n["sd_last"], n=n["n"], extra={"probe": n, "lens": nl}))
    rho = fa["rho"]
    v = "reproduced" if rho >= FREQ_RHO[0] else "partly" if rho > FREQ_RHO[1] else "not reproduced"
    out.append(Claim("apt_rises_with_frequency", "APT rises with token frequency", "qualitative (Fig. 1)",
                     f"Spearman(frequency, APT) = {rho:.2f} over {len(fa['apt'])} token types; ⟨APT⟩ "
                     f"{fa['mean_apt'][0]}, APT({s.cfg.apt_top_k}) {fa['apt_top'][0]}", v,
                     f"rank correlation over types, final head", value=rho, n=len(fa["apt"])))
    v, means = _ws_verdict(ws)
    out.append(Claim("apt_rises_with_data", "⟨APT⟩ rises with the pre-training set size W_S", "qualitative (Fig. 2)",
                     ", ".join(f"{int(r)} rows: {m:.4f}" for r, m in means.items()), v,
                     f"{s.cfg.ws_protocol.replace('_', ' ')}; {len(means)} sizes, n={s.cfg.n_seeds} mask draws",
                     value=float(means.iloc[-1]), n=s.cfg.n_seeds))
    sizes = [len(c) for c in final["clusters"]]
    out.append(Claim("small_clusters", "pre-training forms finite, small strong-match token clusters", "qualitative",
                     f"{len(sizes)} clusters among {final['n_kept']} kept tokens, sizes {min(sizes, default=0)}–"
                     f"{max(sizes, default=0)} (mean {np.mean(sizes) if sizes else 0:.1f})", _sizes_verdict(final),
                     f"threshold {s.cfg.cluster_threshold}, final head", value=float(len(sizes))))
    probe = cl.query("model == 'base' and readout == 'probe' and n_kept >= @MIN_KEPT")
    conc = probe.set_index("block")["concentration"].dropna()
    if len(conc) >= 3:
        r = float(stats.spearmanr(conc.index, conc.values).statistic) if conc.nunique() > 1 else 0.0
        gap = float(conc.iloc[-1] - conc.iloc[0])
        v = "reproduced" if gap > 0 and r >= DEPTH_RHO else "partly" if gap > 0 else "not reproduced"
        ours = (f"concentration {conc.iloc[0]:.2f} (block {conc.index[0]}) → {conc.iloc[-1]:.2f} "
                f"(block {conc.index[-1]}), Spearman {r:.2f}")
    else:
        v, gap = "not reproduced", float("nan")
        ours = f"fewer than 3 blocks with ≥ {MIN_KEPT} kept tokens (kept: " + ", ".join(
            str(k) for k in cl.query("model == 'base' and readout == 'probe'")["n_kept"]) + ")"
    out.append(Claim("clusters_sharpen", "strong-match clusters sharpen towards the output", "qualitative", ours, v,
                     "share of confusions on a cluster partner, fresh-head readout", value=gap))
    tab = fin["table"].query("model == 'base'")
    per_task = {k: depth_verdict(g, "accuracy") for k, g in tab.groupby("task")}
    ours = "; ".join(f"{k}: {_fmt(nn_['first'], nn_['sd_first'])} → {_fmt(nn_['last'], nn_['sd_last'])}"
                     for k, (_, nn_) in per_task.items())
    out.append(Claim("finetune_rises_with_depth", "fine-tuning accuracy rises along the blocks",
                     "qualitative (FewRel, DBpedia)", ours + f" (n={s.cfg.n_seeds} splits)",
                     _combine([v for v, _ in per_task.values()]), "frozen pre-trained states + logistic head per block",
                     value=float(np.mean([x["last"] for _, x in per_task.values()])), n=s.cfg.n_seeds))
    c = conf["topic"]
    out.append(Claim("confidence_independent_of_apt", "classifier confidence does not depend on the input's mean APT",
                     "qualitative", f"topic: Spearman {c['spearman']:.2f} [{c['spearman_ci'][0]:.2f}, "
                     f"{c['spearman_ci'][1]:.2f}], relation: {conf['relation']['spearman']:.2f} (n={c['n']})",
                     _independence_verdict(c), "95 % bootstrap interval of Spearman's rho, topic task",
                     value=c["spearman"], n=c["n"]))
    return out


def _full(df: pd.DataFrame):
    """A table that the page shows without cutting long cells (pandas truncates at 50 characters)."""
    return df.style.hide(axis="index")


def verdict_table(cl: list[Claim]):
    return _full(pd.DataFrame([{"claim": c.claim, "paper": c.paper, "ours": c.ours, "verdict": c.verdict,
                                "rule/reason": c.reason} for c in cl]))


RULES_TEXT = (f"Depth (⟨APT⟩ with the fresh-head readout; classification with frozen pre-trained states): *reproduced* "
              f"when the last block beats block 0 by more than {DEPTH_SD:g} combined seed-sd (and {MIN_GAP:g}) and "
              f"Spearman(block, value) ≥ {DEPTH_RHO}; *partly* when only the gap is clear (a gap inside the noise is *not "
              f"reproduced*). Frequency: Spearman(frequency, APT) over token types ≥ {FREQ_RHO[0]} reproduced, > "
              f"{FREQ_RHO[1]} partly. W_S: every larger set beats the next smaller by more than {DEPTH_SD:g} sd (and "
              f"{MIN_GAP:g}) reproduced; only the largest the smallest, partly. Small clusters: ≥ 3 clusters, {SMALL_SHARE:.0%} of them ≤ {SMALL_CLUSTER} tokens "
              f"and none above max(10, {GIANT_SHARE:.0%} of the kept tokens) reproduced; some cluster, partly. "
              f"Sharpening (blocks with ≥ {MIN_KEPT} kept token types, at least three of them): concentration higher "
              f"at the last than at the first and Spearman ≥ {DEPTH_RHO} reproduced, only higher partly. Independence: "
              f"|Spearman| < {INDEPENDENT_RHO[0]} or a 95 % interval containing 0 reproduced, |Spearman| < "
              f"{INDEPENDENT_RHO[1]} partly.")


# ----------------------------------------------------------------------------------- tables and figures
def _n_params(model) -> float:
    return models.n_params(model) / 1e6


@_skip_local
def models_table(s: Setup, ws: pd.DataFrame | None = None) -> pd.DataFrame:
    c = s.base.config
    rows = [{"model": "base", "role": "pre-trained masked LM", "layers": c.num_hidden_layers, "d_model": c.hidden_size,
             "heads": c.num_attention_heads, "vocab": c.vocab_size, "parameters (M)": _n_params(s.base),
             "pre-training rows": s.memo.get("n_pretrain_rows")},
            {"model": "control", "role": "same architecture, random init", "layers": c.num_hidden_layers,
             "d_model": c.hidden_size, "heads": c.num_attention_heads, "vocab": c.vocab_size,
             "parameters (M)": _n_params(s.control), "pre-training rows": 0}]
    if ws is not None:
        for (f, r, st), _ in ws.groupby(["fraction", "rows", "steps"]):
            rows.append({"model": f"W_S × {f:g}", "role": f"pre-trained here, {st} steps",
                         "layers": c.num_hidden_layers,
                         "d_model": c.hidden_size, "heads": c.num_attention_heads, "vocab": c.vocab_size,
                         "parameters (M)": _n_params(s.base), "pre-training rows": r})
    return pd.DataFrame(rows).set_index("model").round(3)


def _say_local():
    plotting.say("*Not run in the `local` profile (see the extension section).*")


def plot_frequency(fa: dict | None):
    import matplotlib.pyplot as plt

    if fa is None:
        return _say_local()
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 3.6))
    ok = fa["freq"] > 0
    a1.scatter(fa["freq"][ok], [fa["apt"][i] for i in fa["ids"][ok]], s=4, alpha=0.3, label="token type")
    for (name, b), ls in zip(fa["bins"].items(), (":", "--", "-")):
        centre = np.sqrt(b["bin_lo"] * b["bin_hi"])
        a2.plot(centre, b["mean_apt"], ls, marker="o", ms=3, label=name)
    last = list(fa["bins"].values())[-1]
    a1.plot(np.sqrt(last["bin_lo"] * last["bin_hi"]), last["mean_apt"], "k-o", ms=3, label="bin mean")
    for ax, title in ((a1, "final head, per token type"), (a2, "mean APT per frequency bin")):
        ax.set(xscale="log", xlabel="frequency in the pre-training rows", ylabel="APT", title=title)
        ax.legend(fontsize=8)
    plt.tight_layout()
    plt.show()


def plot_blocks(res: BlockAPT | None, L_paper: int = 6):
    import matplotlib.pyplot as plt

    if res is None:
        return _say_local()
    summ = block_summary(res)
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    styles = {("base", "probe"): "-o", ("base", "lens"): "--o", ("control", "probe"): "-s", ("control", "lens"): "--s"}
    for ax, col in zip(axes, ("mean_apt", "mean_apt_masked")):
        for (m, r), g in summ.groupby(["model", "readout"]):
            err = g["mean_apt_sd"].fillna(0) if col == "mean_apt" else None
            ax.errorbar(g["block"], g[col], yerr=err, fmt=styles[(m, r)], ms=4, capsize=2, color=plotting.PALETTE[m],
                        label=f"{m}, {'fresh head (probe)' if r == 'probe' else 'logit lens'}")
        ax.set(xlabel="block (0 = embeddings)", ylabel="⟨APT⟩",
               title="all selected positions" if col == "mean_apt" else "[MASK] positions only")
    if summ["block"].max() == L_paper:
        axes[0].plot(list(PAPER_APT), list(PAPER_APT.values()), "k*", ms=10, label="paper (Table 1)")
    axes[0].legend(fontsize=8)
    plt.tight_layout()
    plt.show()


def plot_ws(ws: pd.DataFrame | None):
    import matplotlib.pyplot as plt

    if ws is None:
        return _say_local()
    g = ws.groupby("rows")
    fig, ax = plt.subplots(figsize=(6, 3.4))
    for col, fmt in (("mean_apt", "-o"), ("apt_top", "--s")):
        ax.errorbar(g[col].mean().index, g[col].mean(), yerr=g[col].std().fillna(0), fmt=fmt, capsize=2,
                    label="⟨APT⟩" if col == "mean_apt" else "APT(k), k most frequent")
    ax.set(xscale="log", xlabel="pre-training rows W_S", ylabel="APT (final head)", title="APT against W_S")
    ax.legend(fontsize=8)
    plt.tight_layout()
    plt.show()


def plot_clusters(cl: pd.DataFrame | None, final: dict | None):
    import matplotlib.pyplot as plt

    if cl is None:
        return _say_local()
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.4))
    hist = final["size_histogram"] if final else {}
    axes[0].bar(list(hist), list(hist.values()), width=0.8, color=plotting.PALETTE["base"])
    axes[0].set(xlabel="cluster size (tokens)", ylabel="clusters", title="strong-match clusters, final head")
    axes[0].xaxis.get_major_locator().set_params(integer=True)
    for (m, r), g in cl.groupby(["model", "readout"]):
        fmt = ("-" if r == "probe" else "--") + ("o" if m == "base" else "s")
        axes[1].plot(g["block"], g["n_kept"], fmt, color=plotting.PALETTE[m], label=f"{m}, {r}")
        ok = g["n_kept"] >= MIN_KEPT
        axes[2].plot(g["block"][ok], g["concentration"][ok], fmt, color=plotting.PALETTE[m], label=f"{m}, {r}")
    axes[1].set(xlabel="block", ylabel="token types", yscale="symlog", title="diagonal is the row maximum")
    axes[2].set(xlabel="block", ylabel="share of confusions", title="confusions on a cluster partner")
    axes[1].legend(fontsize=8)
    plt.tight_layout()
    plt.show()


def plot_finetune(fin: dict | None):
    import matplotlib.pyplot as plt

    if fin is None:
        return _say_local()
    tab = fin["table"]
    fig, axes = plt.subplots(1, tab["task"].nunique(), figsize=(10, 3.4), squeeze=False)
    for ax, (task, g) in zip(axes[0], tab.groupby("task")):
        for m, gm in g.groupby("model"):
            agg = gm.groupby("block")["accuracy"]
            ax.errorbar(agg.mean().index, agg.mean(), yerr=agg.std().fillna(0), fmt="-o", ms=4, capsize=2,
                        color=plotting.PALETTE.get(m, "k"), label=m)
        ax.axhline(g["chance"].iloc[0], color="k", ls=":", lw=1, label="chance")
        ax.set(xlabel="block", ylabel="test accuracy", title=f"{task} task")
        ax.legend(fontsize=8)
    plt.tight_layout()
    plt.show()


def plot_confidence(conf: dict | None):
    import matplotlib.pyplot as plt

    if conf is None:
        return _say_local()
    fig, axes = plt.subplots(1, len(conf), figsize=(10, 3.4), squeeze=False)
    for ax, (task, c) in zip(axes[0], conf.items()):
        ax.scatter(c["mean_apt"], c["confidence"], s=6, alpha=0.4, color=plotting.PALETTE["tuned"])
        ax.set(xlabel="mean APT of the input's tokens", ylabel="classifier confidence (max prob.)",
               title=f"{task}: Spearman {c['spearman']:.2f}")
    plt.tight_layout()
    plt.show()


def plot_local(df: pd.DataFrame | None):
    import matplotlib.pyplot as plt

    if df is None:
        return plotting.say("*The causal-LM extension runs in the `local` profile only.*")
    fig, ax = plt.subplots(figsize=(6, 3.4))
    ax.plot(df["block"], df["mean_apt"], "-o", label="⟨APT⟩")
    ax.plot(df["block"], df["accuracy"], "--s", label="accuracy (position-weighted)")
    ax.set(xlabel="layer", ylabel="next-token APT (logit lens)", title="packaged causal LM")
    ax.legend(fontsize=8)
    plt.tight_layout()
    plt.show()


# -------------------------------------------------------------------------------------- computed prose
def text_frequency(s: Setup, fa: dict | None) -> str:
    if fa is None:
        return ""
    top = fa["bins"][list(fa["bins"])[-1]].dropna()
    return (f"Over {len(fa['apt'])} token types selected in the held-out windows, the base's own head reaches "
            f"⟨APT⟩ = {fa['mean_apt'][0]} and APT({s.cfg.apt_top_k}) = {fa['apt_top'][0]} (position-weighted "
            f"accuracy {fa['accuracy'][0]}; ⟨APT⟩ over [MASK] positions only {fa['mask_only']:.3f}). APT against "
            f"frequency has Spearman ρ = {fa['rho']:.2f}; the rarest bin averages {top['mean_apt'].iloc[0]:.3f}, "
            f"the most frequent {top['mean_apt'].iloc[-1]:.3f}.")


def text_blocks(s: Setup, res: BlockAPT | None) -> str:
    if res is None:
        return ""
    summ = block_summary(res).query("model == 'base'").set_index(["readout", "block"])["mean_apt"]
    L = s.n_layers
    lens, probe = summ["lens"], summ["probe"]
    best = "fresh head (probe)" if (probe.diff().dropna() >= -1e-3).all() and probe[L] > probe[0] else "neither"
    if best == "neither" and (lens.diff().dropna() >= -1e-3).all() and lens[L] > lens[0]:
        best = "logit lens"
    masked = block_summary(res).query("model == 'base'").set_index(["readout", "block"])["mean_apt_masked"]
    peak = int(lens.idxmax())
    return (f"Base, fresh head per block: ⟨APT⟩ {probe[0]:.3f} at the embeddings → {probe[L]:.3f} after block {L}; "
            f"logit lens: {lens[0]:.3f} → {lens[L]:.3f}, highest after block {peak} ({lens[peak]:.3f}) (paper: 0.037 → "
            f"0.31). The readout whose curve rises monotonically (within 0.001) like the paper's: **{best}**. At "
            f"[MASK] positions alone, where the input token cannot simply be copied, the lens goes "
            f"{masked['lens'][0]:.3f} → {masked['lens'][L]:.3f} and the fresh head {masked['probe'][0]:.3f} → "
            f"{masked['probe'][L]:.3f}.")


def text_ws(ws: pd.DataFrame | None) -> str:
    if ws is None:
        return ""
    m = ws.groupby(["rows", "steps"])["mean_apt"].agg(["mean", "std"]).fillna(0)
    floor = 1 / ws["n_types"].mean()
    return ("⟨APT⟩ of the final head by pre-training set: " + "; ".join(
        f"{int(r)} rows ({int(st)} steps) {a:.4f} ± {b:.4f}" for (r, st), (a, b) in m.iterrows())
        + f". A model that always predicts the same token would score about {floor:.4f} (one token type right "
          f"out of the {ws['n_types'].mean():.0f} selected).")


def text_clusters(s: Setup, cl: pd.DataFrame | None, final: dict | None) -> str:
    if cl is None:
        return ""
    p = cl.query("model == 'base' and readout == 'probe'").set_index("block")
    L, ok = s.n_layers, p.query("n_kept >= @MIN_KEPT")["concentration"].dropna()
    sharp = (f"where at least {MIN_KEPT} are kept, the share of confusions on a cluster partner goes "
             f"{ok.iloc[0]:.2f} (block {ok.index[0]}) → {ok.iloc[-1]:.2f} (block {ok.index[-1]})" if len(ok) >= 2
             else f"too few blocks keep {MIN_KEPT} or more token types to measure sharpness")
    return (f"Final head: {final['n_kept']} token types keep their row maximum on the diagonal (of those selected "
            f"≥ {s.cfg.cluster_min_count} times); {final['n_clusters']} strong-match clusters hold "
            f"{final['n_clustered']} of them (largest {final['max_size']}). With a fresh head per block the kept types "
            f"go {p['n_kept'].iloc[0]} (block 0) → {p['n_kept'].iloc[L]} (block {L}); {sharp}.")


def text_finetune(s: Setup, fin: dict | None) -> str:
    if fin is None:
        return ""
    m = fin["table"].groupby(["task", "model", "block"])["accuracy"].agg(["mean", "std"]).fillna(0)
    L, parts = s.n_layers, []
    for task in m.index.get_level_values(0).unique():
        b, c = m.loc[(task, "base")], m.loc[(task, "control")]
        tuned = m.loc[(task, "tuned")] if (task, "tuned") in m.index.droplevel(2) else None
        parts.append(f"{task}: pre-trained {_fmt(*b.loc[0])} (block 0) → {_fmt(*b.loc[L])} (block {L}), control "
                     f"{_fmt(*c.loc[0])} → {_fmt(*c.loc[L])}"
                     + (f", fine-tuned {tuned['mean'].loc[0]:.3f} → {tuned['mean'].loc[L]:.3f}" if tuned is not None
                        else ""))
    return "Test accuracy of a logistic head on frozen, mean-pooled states (" + f"n = {s.cfg.n_seeds} splits): " + \
        "; ".join(parts) + "."


def text_confidence(conf: dict | None, fin: dict | None) -> str:
    if conf is None:
        return ""
    acc = {t: a.metrics["test_accuracy"] for (t, _), (_, a, _) in fin["tuned"].items()}
    return "; ".join(f"{t}: fine-tuned accuracy {acc.get(t, float('nan')):.3f}, Pearson r = {c['pearson']:.2f} "
                     f"[{c['pearson_ci'][0]:.2f}, {c['pearson_ci'][1]:.2f}], Spearman ρ = {c['spearman']:.2f} "
                     f"[{c['spearman_ci'][0]:.2f}, {c['spearman_ci'][1]:.2f}] over {c['n']} test inputs"
                     for t, c in conf.items()) + "."


def text_differences(s: Setup) -> str:
    """The scale bullet of "What differs from the paper", with this run's numbers."""
    if s.base is None:
        return f"- **Model.** A packaged causal LM (`{s.cfg.local_model}`), not a masked LM: an extension only."
    c = s.base.config
    source = f"`{s.cfg.base_source}` from the hub" if s.cfg.base_source else "the study's own base"
    return (f"- **Scale.** The paper's BERT-6 has hidden size 768 and a 30,522-token vocabulary and was pre-trained on "
            f"Wikipedia for 50 epochs; this run's ({source}) has {c.num_hidden_layers} blocks, hidden size "
            f"{c.hidden_size} and {c.vocab_size} tokens"
            + (f", pre-trained on {s.memo['n_pretrain_rows']} windows of offline English."
               if s.memo.get("n_pretrain_rows") else "."))


def text_local(df: pd.DataFrame | None) -> str:
    if df is None:
        return ""
    peak = int(df["mean_apt"].idxmax())
    return (f"Next-token ⟨APT⟩ through the logit lens: {df['mean_apt'].iloc[0]:.3f} at the embeddings, "
            f"{df['mean_apt'].iloc[len(df) // 2]:.3f} at layer {len(df) // 2}, {df['mean_apt'].iloc[-1]:.3f} after the "
            f"last layer (highest at layer {df['block'][peak]}); position-weighted accuracy "
            f"{df['accuracy'].iloc[0]:.3f} → {df['accuracy'].iloc[-1]:.3f}, APT(k) {df['apt_top'].iloc[0]:.3f} → "
            f"{df['apt_top'].iloc[-1]:.3f}.")


def text_profile(s: Setup) -> str:
    if s.base is None:
        return f"Profile `{s.cfg.profile}`: causal-LM extension with `{s.cfg.local_model}`."
    c = s.base.config
    return (f"Profile `{s.cfg.profile}`: BERT with {c.num_hidden_layers} blocks, d_model {c.hidden_size}, "
            f"{c.num_attention_heads} heads, vocabulary {c.vocab_size}, {_n_params(s.base):.2f} M parameters; "
            f"{len(s.eval_rows['input_ids'])} held-out windows per seed, {s.cfg.n_seeds} seeds.")


# ---------------------------------------------------------------------------------- results and synthesis
def write_results(s: Setup, claim_list: list[Claim]) -> dict:
    from lib import results

    if s.base is None:
        info = {s.cfg.local_model: {"role": "packaged causal LM (local extension)"}}
    else:
        c = s.base.config
        info = {n: {"layers": c.num_hidden_layers, "d_model": c.hidden_size, "vocab": c.vocab_size,
                    "n_params": models.n_params(m), "role": r}
                for n, m, r in (("base", s.base, "pre-trained BERT"), ("control", s.control, "random init"))}
    return results.write(CHAPTER, PAPER, s.cfg.profile, info, claim_list, precision=s.cfg.precision)


def local_claims(df: pd.DataFrame) -> list[Claim]:
    """The local extension's one claim (APT rising with depth in a packaged causal LM)."""
    v, n = depth_verdict(df.assign(seed=0), "mean_apt")
    return [Claim("apt_rises_with_depth_causal", "⟨APT⟩ rises along the layers (extension: causal LM, next token)",
                  "0.037 → 0.31 (BERT-6, masked LM)", f"{n['first']:.3f} → {n['last']:.3f}", v,
                  "logit lens, one held-out sample", value=n["last"], n=1)]


def _from_cache_only(out: Path) -> dict:
    raise RuntimeError(f"no cached fine-tuned classifier: run notebook {CHAPTER} in this profile first")


def synthesis_pairs(profile: str = "tiny", params: dict | None = None, seed_index: int = 0) -> list[dict]:
    """Base -> tuned pairs of this chapter for its `seed_index`-th fine-tuning seed (of `n_ft_seeds`), from the
    cache only: the BERT encoder before and after fine-tuning.

    `base` is a BertForSequenceClassification holding the *pre-trained* encoder under the tuned model's pooler
    and classifier (so both share one architecture and the metric applies to both); `metric(model, inputs)` is
    test accuracy; `inputs` are up to 256 test examples of the split the tuned model did not train on.
    """
    cfg = Config.load(profile, params)
    seed = seed_at([cfg.seed + k for k in range(cfg.n_ft_seeds)], seed_index)
    bcfg = base_models.Config.load(profile)
    base, tok, key = _load_base(cfg, bcfg)
    s = Setup(cfg, base.eval(), None, tok, key, bcfg=bcfg)
    pairs = []
    for name, task in tasks(s).items():
        art = load_or_compute("tzach_tuned", _ft_key(s, task, seed), _from_cache_only, fingerprints=[key])
        tuned, _ = models.load_model(art.path / "model", task="classification")
        grafted = classifier_from(base, len(task.ds.classes), seed)
        grafted.bert.pooler.load_state_dict(tuned.bert.pooler.state_dict())
        grafted.classifier.load_state_dict(tuned.classifier.state_dict())
        _, te = task.ds.split(cfg.task_train_per_class, seed)
        pairs.append({"name": f"tzach_{name}", "base": grafted.eval(), "tuned": tuned.eval(), "tokenizer": tok,
                      "inputs": {k: v[te[:256]] for k, v in task.enc.items()}, "metric": task_accuracy})
    return pairs
