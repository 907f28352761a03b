"""What chapter 4 trains or loads, all through the cache: the BERT base and its random control, the held-out and
probe windows, the W_S models, the fine-tuned classifiers, and the per-block readouts (fresh MLM heads per block,
logistic heads on pooled block states) whose training is the chapter's main cost, so a warm run loads them.

    s = build.setup(cfg)                         # base, control, token counts; windows made when first needed
    r = build.block_readouts(s, "base")          # predictions after every block, lens and probe, n_seeds draws
"""
from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from lib import bases, corpora, evals, models, textdata, train
from lib.artifacts import load_or_compute
from lib.chapters.tzach.config import CHAPTER, Config
from lib.chapters.tzach.probes import (block_states, lens_predictions, masked_states, mlm_readout, probe_predictions,
                                       train_probe)
from lib.lenses import seed_at
from lib.tasks import wordnet

# The code each artifact of this chapter is built with: part of its key (an edit rebuilds it).
CODE = ("lib.chapters.tzach.build", "lib.chapters.tzach.probes", "lib.train", "lib.models", "lib.textdata")


@dataclass
class Setup:
    cfg: Config
    base: nn.Module | None  # the masked LM (RoBERTa-PreLayerNorm or BERT), eval mode (None in the local profile)
    control: nn.Module | None  # same architecture, random initialisation
    tok: object = None
    base_key: str = ""  # what the caches built on the base are keyed by (bases.Base.key)
    source: str = ""  # the base in words
    spec: bases.Spec | None = None  # the study bases' settings of this profile
    counts: np.ndarray | None = None  # (V,) token counts in the base's pre-training rows
    local: tuple | None = None  # local profile: (causal LM, held-out ids (N, T))
    memo: dict = field(default_factory=dict)  # windows and pre-training rows, made at most once
    # further independently pre-trained bases of the same recipe (BERT seeds): name -> (model, cache key). The
    # depth and cluster rules read their spread over these models, never over mask draws of one model.
    replicas: dict = field(default_factory=dict)

    @property
    def n_layers(self) -> int:
        return self.base.config.num_hidden_layers

    @property
    def device(self) -> torch.device:
        return next(self.base.parameters()).device

    @property
    def special_ids(self) -> list[int]:
        return sorted(set(self.tok.all_special_ids))

    @property
    def n_ctx(self) -> int:
        return min(self.cfg.n_ctx, max_len(self.base))

    def windows(self, which: str) -> dict:
        """Held-out ("eval": the English corpus's validation documents) or probe-training ("probe") windows."""
        if which not in self.memo:
            train_docs, val_docs = bases.source_corpora(self.spec)["english"].split()
            docs, rows, seed = {"eval": (val_docs, self.cfg.eval_rows, self.cfg.seed + 101),
                                "probe": (train_docs, self.cfg.probe_rows, self.cfg.seed + 202)}[which]
            self.memo[which] = _windows(self.tok, docs, self.n_ctx, rows, seed)
        return self.memo[which]


def max_len(model) -> int:
    """The longest input `model` takes: its position table, less RoBERTa's offset (positions from pad_token_id + 1)."""
    c = model.config
    return c.max_position_embeddings - (models._position_offset(c.pad_token_id)
                                        if c.model_type == "roberta-prelayernorm" else 0)


def fresh_like(model: nn.Module, seed: int, cls=None, **overrides) -> nn.Module:
    """A randomly initialised model of `model`'s config (class `cls`, default the same), seeded; global RNG kept."""
    config = copy.deepcopy(model.config)
    for k, v in overrides.items():
        setattr(config, k, v)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        fresh = (cls or type(model))(config)
    return fresh.to(next(model.parameters()).device).eval()


def load_base(cfg: Config) -> bases.Base:
    """The study's BERT base of this profile, or `base_source` (a folder or hub id of a BERT masked LM)."""
    if not cfg.base_source:
        return bases.load("study:bert", cfg.profile, device=cfg.device)
    return bases.load(cfg.base_source, cfg.profile, task="masked", device=cfg.device, allow_network=cfg.allow_network)


def setup(cfg: Config) -> Setup:
    """Base, control, token counts. Local profile: the packaged causal LM and its held-out blocks only."""
    spec = bases.Spec.load("tiny" if cfg.profile == "local" else cfg.profile)
    if cfg.profile == "local":
        b = bases.load(f"local:{cfg.local_model}", device=cfg.device)
        docs = textdata.sample_docs(bases.source_corpora(spec)["english"].split()[1],
                                    cfg.local_rows * cfg.local_n_ctx * 6, cfg.seed)
        ids = textdata.pack_blocks(b.tokenizer, docs, cfg.local_n_ctx, max_blocks=cfg.local_rows)
        return Setup(cfg, None, None, b.tokenizer, b.key, b.source, spec, local=(b.model, ids))
    b = load_base(cfg)
    s = Setup(cfg, b.model, fresh_like(b.model, cfg.seed), b.tokenizer, b.key, b.source, spec)
    s.memo["trained"] = {"base": b.metrics}  # the study bases' training record (empty for a hub base)
    if not cfg.base_source:  # the study's further BERTs of the same recipe (a hub base has no replicas)
        for k in range(1, spec.replicas("bert")):
            r = bases.load("study:bert", cfg.profile, device=cfg.device, replica=k)
            s.replicas[f"base #{k + 1}"] = (r.model, r.key)
            s.memo["trained"][f"base #{k + 1}"] = r.metrics
    s.counts = token_counts(s)
    return s


def _windows(tok, docs: list[str], n_ctx: int, rows: int, seed: int) -> dict:
    return textdata.mlm_windows(tok, textdata.sample_docs(docs, rows * n_ctx * 8, seed), n_ctx, max_rows=rows)


def full_steps(s: Setup) -> int:
    return s.cfg.ws_full_steps or s.spec.bert_steps


def _rows_key(s: Setup) -> dict:
    """What the pre-training rows depend on beyond the base (a hub base: our windows of its tokenizer)."""
    extra = {"n_ctx": s.cfg.n_ctx, "seed": s.cfg.seed} if s.cfg.base_source else {}
    return {"base": s.base_key, "steps": full_steps(s), **extra}


def pretrain_rows(s: Setup) -> dict:
    """The base's pre-training windows (the study's base: exactly the rows 00_base_models trained on)."""
    if "rows" not in s.memo:
        steps, corp = full_steps(s), bases.source_corpora(s.spec)
        if not s.cfg.base_source:
            docs, _ = bases.splits(s.spec, "bert", corp)
            s.memo["rows"] = bases.tensors(s.spec, "bert", s.tok, docs, steps * s.spec.batch("bert"))
        else:
            s.memo["rows"] = _windows(s.tok, corp["english"].split()[0], s.n_ctx, steps * s.spec.batch("bert"),
                                      s.cfg.seed)
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

    art = load_or_compute("tzach_counts", _rows_key(s), compute, fingerprints=[s.base_key], code=CODE,
                          recompute=s.cfg.recompute)
    s.memo["n_pretrain_rows"] = art.metrics["n_rows"]
    return np.load(art.path / "counts.npz", allow_pickle=False)["counts"]


# ----------------------------------------------------------------------------------- per-block readouts
@dataclass
class Readouts:
    """One model's predictions at the selected positions of the held-out windows, pooled over the n_seeds draws."""
    true: np.ndarray  # (n,) original tokens
    kind: np.ndarray  # (n,) 0 = [MASK], 1 = random token, 2 = unchanged
    seed: np.ndarray  # (n,) which mask draw (0 .. n_seeds - 1)
    pred: dict  # readout ("lens", and "probe" when trained) -> (n, L + 1) predicted tokens

    @classmethod
    def load(cls, folder: Path) -> "Readouts":
        z = np.load(folder / "readouts.npz", allow_pickle=False)
        return cls(z["true"], z["kind"], z["seed"], {k[5:]: z[k] for k in z.files if k.startswith("pred_")})


def _text_fingerprint(s: Setup) -> str:
    """What the windows are cut from: the English corpus's fingerprint (the windows follow from it, the base's
    tokenizer and the settings in the key); windows handed in directly (no `spec`) by their own SHA-256."""
    if s.spec is not None:
        return bases.source_corpora(s.spec)["english"].fingerprint
    h = hashlib.sha256()
    for which in ("eval", "probe"):
        for k in sorted(s.memo[which]):
            h.update(k.encode() + s.memo[which][k].numpy().tobytes())
    return h.hexdigest()[:16]


def _readouts(s: Setup, model, per_block: bool) -> Readouts:
    cfg, mask_id = s.cfg, s.tok.mask_token_id
    heads = []
    if per_block:  # per block, the model's own MLM readout tuned on the [MASK] positions of the probe windows
        tr = masked_states(model, s.windows("probe"), mask_id, s.special_ids, cfg.seed + 1000)
        at = tr.kind == 0  # the head is reported on [MASK] positions, so it is trained on them
        heads = [train_probe(tr.h[at, b], tr.true[at], cfg.seed + b, cfg.probe_steps, cfg.probe_batch, cfg.probe_lr,
                             s.device, cfg.use_bf16(), init=mlm_readout(model)) for b in range(tr.h.shape[1])]
    parts = {"true": [], "kind": [], "seed": [], "lens": [], "probe": []}
    for k in range(cfg.n_seeds):
        ev = masked_states(model, s.windows("eval"), mask_id, s.special_ids, cfg.seed + k)
        blocks = range(ev.h.shape[1]) if per_block else [ev.h.shape[1] - 1]
        parts["true"].append(ev.true)
        parts["kind"].append(ev.kind)
        parts["seed"].append(torch.full_like(ev.true, k))
        parts["lens"].append(torch.stack([lens_predictions(model, ev.h[:, b]) for b in blocks], 1))
        if per_block:
            parts["probe"].append(torch.stack([probe_predictions(hd, ev.h[:, b]) for b, hd in enumerate(heads)], 1))
    cat = {k: torch.cat(v).numpy() for k, v in parts.items() if v}
    return Readouts(cat["true"], cat["kind"], cat["seed"], {r: cat[r] for r in ("lens", "probe") if r in cat})


def block_readouts(s: Setup, name: str, model=None, model_key: str | None = None, per_block: bool = True) -> Readouts:
    """Predictions of `name` ("base", "control", or a W_S model given as `model` with its cache key) over n_seeds
    mask draws of the held-out windows: after every block through the logit lens and a fresh head per block
    (`per_block`), else the model's own head after the last block only (pred["lens"] of shape (n, 1)); cached."""
    model = model if model is not None else {"base": s.base, "control": s.control}[name]
    cfg = s.cfg
    key = {"model": name, "model_key": model_key or s.base_key, "control_seed": cfg.seed if name == "control" else None,
           "per_block": per_block, "n_ctx": s.n_ctx, "eval_rows": cfg.eval_rows, "n_seeds": cfg.n_seeds,
           "seed": cfg.seed, "precision": cfg.use_bf16(), "device": s.device.type,
           "probe": {k: getattr(cfg, f"probe_{k}") for k in ("rows", "steps", "batch", "lr")} if per_block else None}

    def compute(out: Path) -> dict:
        r = _readouts(s, model, per_block)
        np.savez(out / "readouts.npz", true=r.true, kind=r.kind, seed=r.seed,
                 **{f"pred_{k}": v for k, v in r.pred.items()})
        return {"n_positions": int(len(r.true)), "n_windows": int(len(s.windows("eval")["input_ids"]))}

    art = load_or_compute("tzach_readouts", key, compute, fingerprints=[s.base_key, _text_fingerprint(s)], code=CODE,
                          recompute=cfg.recompute)
    s.memo["n_eval_windows"] = art.metrics["n_windows"]
    return Readouts.load(art.path)


# ------------------------------------------------------------------------------------------ W_S models
def ws_model(s: Setup, fraction: float, protocol: str | None = None):
    """A BERT of the base's architecture pre-trained here on the first `fraction` of the base's rows (cached):
    (model, info, cache key); the base itself at fraction 1 of the study's own rows. `protocol` (default the
    config's `ws_protocol`): "same_epochs" scales the steps with the fraction, "same_steps" keeps the base's."""
    if fraction == 1.0 and not s.cfg.base_source:
        return s.base, {"rows": s.memo.get("n_pretrain_rows"), "steps": full_steps(s), "source": "the base"}, None
    cfg, full = s.cfg, full_steps(s)
    protocol = protocol or cfg.ws_protocol
    steps = max(1, round(fraction * full)) if protocol == "same_epochs" else full
    tcfg = bases.train_config(s.spec, "bert")
    tcfg = dataclasses.replace(tcfg, n_steps=steps, warmup_steps=max(1, steps // 20), eval_every=0, progress=False,
                               lr=cfg.ws_lr or tcfg.lr,
                               desc=f"W_S x{fraction:g}" + (", same steps" if protocol != cfg.ws_protocol else ""))

    def compute(out: Path) -> dict:
        rows = pretrain_rows(s)
        n = max(1, round(fraction * len(rows["input_ids"])))
        model = fresh_like(s.base, s.spec.seed).train()
        hist = train.train(model, {k: v[:n] for k, v in rows.items()}, tcfg, mask_token_id=s.tok.mask_token_id,
                           vocab_size=len(s.tok))
        models.save_model(model.cpu(), s.tok, out / "model")
        return {"rows": n, "steps": steps, "tokens_seen": hist.tokens_seen, "train_seconds": hist.train_time}

    key = {"fraction": fraction, "protocol": protocol, "rows": _rows_key(s),
           "train": {k: v for k, v in dataclasses.asdict(tcfg).items() if k != "progress"}}
    art = load_or_compute("tzach_ws", key, compute, fingerprints=[s.base_key], code=CODE, recompute=cfg.recompute)
    model, _ = models.load_model(art.path / "model", task="masked")
    return model.to(s.device).eval(), {**art.metrics, "source": "trained here"}, f"tzach_ws/{art.key}"


# ---------------------------------------------------------------------------- classification tasks
@dataclass
class Task:
    ds: wordnet.LabelledSet
    enc: dict  # input_ids, attention_mask, token_type_ids (N, T); labels (N,)


def tasks(s: Setup) -> dict[str, Task]:
    """The topic and relation sets (cached as JSON: parsing WordNet takes seconds), encoded for the base."""
    cfg = s.cfg
    if "tasks" in s.memo:
        return s.memo["tasks"]
    key = {"topics": cfg.topic_classes, "relations": cfg.relations, "per_class": cfg.task_per_class, "seed": cfg.seed}

    def compute(out: Path) -> dict:
        syn = corpora.wordnet_synsets()
        sets = [wordnet.topic_set(cfg.topic_classes, cfg.task_per_class, cfg.seed, syn),
                wordnet.relation_set(cfg.relations, cfg.task_per_class, cfg.seed, syn)]
        (out / "sets.json").write_text(json.dumps([{"name": d.name, "inputs": d.inputs, "labels": d.labels.tolist(),
                                                     "classes": d.classes} for d in sets]))
        return {d.name: d.fingerprint for d in sets}

    stamp = (corpora.package_dir("wordnet-base") / ".complete").read_text().strip()
    art = load_or_compute("tzach_tasks", key, compute, fingerprints=[stamp], code=CODE + ("lib.tasks.wordnet",),
                          recompute=cfg.recompute)
    longest = min(cfg.task_max_len, max_len(s.base))
    out = {}
    for d in json.loads((art.path / "sets.json").read_text()):
        ds = wordnet.LabelledSet(d["name"], tuple(tuple(x) if isinstance(x, list) else x for x in d["inputs"]),
                                 np.asarray(d["labels"], dtype=np.int64), tuple(d["classes"]))
        out[ds.name] = Task(ds, encode(s.tok, ds, longest))
    s.memo["tasks"] = out
    return out


def encode(tok, ds: wordnet.LabelledSet, max_len: int) -> dict:
    """Token tensors of a labelled set, padded to its longest input; pairs as [CLS] head [SEP] tail [SEP]."""
    x = list(ds.inputs)
    args = ([a for a, _ in x], [b for _, b in x]) if isinstance(x[0], tuple) else (x,)
    enc = tok(*args, padding="longest", truncation=True, max_length=max_len, return_tensors="pt")
    return {k: enc[k] for k in ("input_ids", "attention_mask", "token_type_ids")} | {
        "labels": torch.as_tensor(ds.labels)}


def _inputs(model, part: dict) -> dict:
    dev = next(model.parameters()).device
    return {k: part[k].to(dev) for k in ("input_ids", "attention_mask", "token_type_ids")}


def class_probs(model, inputs: dict, batch: int = 128) -> torch.Tensor:
    """(N, n_classes) class probabilities of a sequence classifier."""
    with evals.eval_mode(model):
        return evals.batched(lambda p: model(**_inputs(model, p)).logits.float().softmax(-1).cpu(), inputs, batch)


def task_accuracy(model, inputs: dict, batch: int = 128) -> float:
    """Accuracy of a sequence classifier on inputs {input_ids, attention_mask, token_type_ids, labels}."""
    return float((class_probs(model, inputs, batch).argmax(1) == inputs["labels"]).float().mean())


def classifier_from(mlm, num_labels: int, seed: int) -> nn.Module:
    """The family's sequence classifier (BertForSequenceClassification, RobertaPreLayerNormForSequenceClassification)
    with the masked LM's encoder and a fresh (seeded) head (BERT's pooler + classifier; RoBERTa's classifier)."""
    from transformers import AutoModelForSequenceClassification

    cls = AutoModelForSequenceClassification._model_mapping[type(mlm.config)]
    clf = fresh_like(mlm, seed, cls=cls, num_labels=num_labels, architectures=[cls.__name__])
    prefix = mlm.base_model_prefix
    missing, unexpected = getattr(clf, prefix).load_state_dict(getattr(mlm, prefix).state_dict(), strict=False)
    if unexpected or any(not k.startswith("pooler.") for k in missing):
        raise RuntimeError(f"encoder weights do not fit: missing {missing}, unexpected {unexpected}")
    return clf


def head_state(clf) -> dict:
    """A sequence classifier's own head: every weight outside the pre-trained encoder, BERT's pooler included."""
    prefix = clf.base_model_prefix + "."
    return {k: v for k, v in clf.state_dict().items() if not k.startswith(prefix) or k.startswith(prefix + "pooler.")}


def _ft_config(cfg: Config, seed: int) -> train.TrainConfig:
    return train.TrainConfig(objective="classification", n_steps=cfg.ft_steps, batch_size=cfg.ft_batch,
                             lr=cfg.ft_lr, weight_decay=0.01, warmup_steps=max(1, cfg.ft_steps // 10),
                             schedule="linear", seed=seed, bf16=cfg.use_bf16(), progress=False, desc="fine-tune")


def _ft_key(cfg: Config, task: Task, seed: int) -> dict:
    tcfg = {k: v for k, v in dataclasses.asdict(_ft_config(cfg, seed)).items() if k != "progress"}
    return {"task": task.ds.name, "data": task.ds.fingerprint, "n_train": cfg.task_train_per_class,
            "max_len": cfg.task_max_len, "train": tcfg}


def tuned_model(s: Setup, task: Task, seed: int):
    """The base fully fine-tuned on the split `seed` of the task (cached): (model, artifact)."""
    tr, te = task.ds.split(s.cfg.task_train_per_class, seed)

    def compute(out: Path) -> dict:
        clf = classifier_from(s.base, len(task.ds.classes), seed)
        hist = train.train(clf, {k: v[tr] for k, v in task.enc.items()}, _ft_config(s.cfg, seed))
        acc = task_accuracy(clf, {k: v[te] for k, v in task.enc.items()})
        models.save_model(clf.cpu(), s.tok, out / "model")
        return {"test_accuracy": acc, "train_seconds": hist.train_time, "n_train": len(tr), "n_test": len(te)}

    art = load_or_compute("tzach_tuned", _ft_key(s.cfg, task, seed), compute, fingerprints=[s.base_key], code=CODE,
                          recompute=s.cfg.recompute)
    model, _ = models.load_model(art.path / "model", task="classification")
    return model.to(s.device).eval(), art


def pooled_states(model, enc: dict, batch: int = 128) -> np.ndarray:
    """Mean over the input's tokens of every block's output: (N, L + 1, d_model)."""
    def pool(part):
        x = _inputs(model, part)
        hs = torch.stack(block_states(model, **x), 1)  # (B, L+1, T, d)
        w = x["attention_mask"][:, None, :, None].to(hs)
        return ((hs * w).sum(2) / w.sum(2)).float().cpu()

    with evals.eval_mode(model):
        return evals.batched(pool, enc, batch).numpy()


def linear_head(X: np.ndarray, y: np.ndarray, train_idx, test_idx) -> float:
    """Test accuracy of a logistic regression on standardised features."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=500, C=1.0))
    clf.fit(X[train_idx], y[train_idx])
    return float(clf.score(X[test_idx], y[test_idx]))


def frozen_heads(s: Setup, tname: str, name: str, model, model_key: str, seeds: list[int]) -> list[dict]:
    """Test accuracy of a logistic head on the frozen, mean-pooled output of each block of `model` (cache key
    `model_key`), for each split seed in `seeds`; cached: [{block, seed, accuracy}]."""
    task = tasks(s)[tname]
    key = {"task": tname, "data": task.ds.fingerprint, "model": name, "model_key": model_key, "seeds": seeds,
           "n_train": s.cfg.task_train_per_class, "max_len": s.cfg.task_max_len, "device": s.device.type}

    def compute(out: Path) -> dict:
        X, rows = pooled_states(model, task.enc), []
        for seed in seeds:
            tr, te = task.ds.split(s.cfg.task_train_per_class, seed)
            rows += [{"block": b, "seed": seed, "accuracy": linear_head(X[:, b], task.ds.labels, tr, te)}
                     for b in range(X.shape[1])]
        (out / "accuracy.json").write_text(json.dumps(rows))
        return {"n_rows": len(rows)}

    art = load_or_compute("tzach_frozen", key, compute, fingerprints=[s.base_key], code=CODE,
                          recompute=s.cfg.recompute)
    return json.loads((art.path / "accuracy.json").read_text())


# ------------------------------------------------------------------------------------------- synthesis
def _from_cache_only(out: Path) -> dict:
    raise RuntimeError(f"no cached fine-tuned classifier: run notebook {CHAPTER} in this profile first")


def synthesis_pairs(profile: str = "tiny", params: dict | None = None, seed_index: int = 0) -> list[dict]:
    """Base -> tuned pairs of this chapter for its `seed_index`-th fine-tuning seed (of `n_ft_seeds`), from the
    cache only: the BERT encoder before and after fine-tuning.

    `base` is the family's sequence classifier holding the *pre-trained* encoder under the tuned model's head
    (pooler and classifier) (so both share one architecture and the metric applies to both); `metric(model, inputs)` is
    test accuracy; `inputs` are up to 256 test examples of the split the tuned model did not train on.
    """
    cfg = Config.load(profile, params)
    seed = seed_at([cfg.seed + k for k in range(cfg.n_ft_seeds)], seed_index)
    b = load_base(cfg)
    s = Setup(cfg, b.model, None, b.tokenizer, b.key, b.source, bases.Spec.load(profile))
    pairs = []
    for name, task in tasks(s).items():
        art = load_or_compute("tzach_tuned", _ft_key(cfg, task, seed), _from_cache_only, fingerprints=[b.key],
                              code=CODE)
        tuned, _ = models.load_model(art.path / "model", task="classification")
        grafted = classifier_from(b.model, len(task.ds.classes), seed)
        missing, unexpected = grafted.load_state_dict(head_state(tuned), strict=False)
        if unexpected or set(head_state(grafted)) & set(missing):
            raise RuntimeError(f"the tuned head does not fit: missing {missing}, unexpected {unexpected}")
        _, te = task.ds.split(cfg.task_train_per_class, seed)
        pairs.append({"name": f"tzach_{name}", "base": grafted.eval(), "tuned": tuned.eval(), "tokenizer": b.tokenizer,
                      "inputs": {k: v[te[:256]] for k, v in task.enc.items()}, "metric": task_accuracy})
    return pairs
