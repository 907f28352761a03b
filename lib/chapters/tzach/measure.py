"""Chapter 4's measurements, one function per page section: models and cached readouts in, DataFrames and dicts
out. No plotting, no prose, no verdicts (those are `claims.py`).

    res = measure.blocks(s)                       # section 2: ⟨APT⟩ per (model, readout, block, mask draw)
    fa = measure.final_apt(s, res)                # section 1: APT against frequency at the base's own head
    m = measure.for_claims(s, res, fa, ...)       # the numbers the rules read
"""
from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from scipy import stats as st
from torch import nn

from lib import apt, evals, stats
from lib.artifacts import load_or_compute
from lib.chapters.tzach import build
from lib.results import measured


def _skip_local(fn):
    """Sections of the masked-LM path return None in the local profile (no BERT base there)."""
    @functools.wraps(fn)
    def wrapper(s, *args, **kwargs):
        return None if s is None or s.base is None else fn(s, *args, **kwargs)
    return wrapper


MIN_OCCURRENCES = 20  # ⟨APT⟩ is the mean over token types selected at least this often (APT of rarer: noise)
LOSS_ROWS = 256  # held-out windows of the loss check (one fixed 15 % draw)


@_skip_local
def loss_gaps(s: build.Setup) -> pd.DataFrame:
    """Has each pre-trained model learned more than token frequencies? Its held-out masked-LM loss (nats per
    selected token; the first LOSS_ROWS evaluation windows, one fixed 15 % draw, 80/10/10) beside the add-one
    unigram predictor's, fitted on the pre-training rows, on the same targets; `gap` = unigram − model."""
    from lib import train

    rows = {k: v[:LOSS_ROWS] for k, v in s.windows("eval").items()}
    ids, att = rows["input_ids"], rows["attention_mask"]
    never = att.eq(0) | torch.isin(ids, torch.tensor(s.special_ids))
    masked, labels = train.mask_tokens(ids, s.tok.mask_token_id, len(s.tok), never, 0.15,
                                       torch.Generator().manual_seed(s.cfg.seed + 303))
    counts = np.asarray(s.counts, float) + 1.0
    target = labels[labels.ne(-100)].numpy()
    unigram = float(-np.log(counts[target] / counts.sum()).mean())
    out = []
    for name, (model, _) in pretrained(s).items():
        dev = next(model.parameters()).device

        def summed(b, model=model, dev=dev):
            logits = model(input_ids=b["ids"].to(dev), attention_mask=b["att"].to(dev)).logits.float()
            return torch.nn.functional.cross_entropy(logits.flatten(0, 1), b["lab"].to(dev).flatten(),
                                                     ignore_index=-100, reduction="sum").cpu()[None]

        with evals.eval_mode(model):
            total = float(evals.batched(summed, {"ids": masked, "att": att, "lab": labels}, 32).sum())
        loss = total / max(len(target), 1)
        out.append({"model": name, "val_loss": loss, "unigram_loss": unigram, "gap": unigram - loss,
                    "n_targets": int(len(target))})
    return pd.DataFrame(out)


def apt_stats(true, pred, counts, k: int) -> dict:
    """Over selected positions: ⟨APT⟩ over the types selected ≥ MIN_OCCURRENCES times (and their number), the
    paper's unrestricted ⟨APT⟩ over every type seen, APT(k) over the k most frequent types (pre-training counts)
    and plain (position-weighted) accuracy."""
    per = apt.accuracy_per_token(true, pred)
    m, n = apt.mean_apt_frequent(true, pred, MIN_OCCURRENCES)
    return {"mean_apt": m, "n_types": n, "mean_apt_all_types": apt.mean_apt(per) if per else float("nan"),
            "apt_top": apt.apt_top_frequent(per, counts, k) if per else float("nan"),
            "accuracy": float((np.asarray(true) == np.asarray(pred)).mean()) if len(true) else float("nan"),
            "n_positions": int(len(true))}


# ----------------------------------------------------------------------------- sections 1-2: APT per block
@dataclass
class BlockAPT:
    """table: one row per (model, readout, block, positions) with the apt_stats columns; positions "mask" = the
    [MASK] positions (the headline), "all" = every selected position; the mask draws of one model are pooled
    (they add positions, not replicates). models: the independently pre-trained bases ("base" first)."""
    table: pd.DataFrame
    readouts: dict  # model -> build.Readouts (pooled over mask draws)
    models: tuple = ("base",)


def pretrained(s: build.Setup) -> dict:
    """The independently pre-trained bases: {"base": (model, key), **s.replicas}."""
    return {"base": (s.base, s.base_key), **s.replicas}


@_skip_local
def blocks(s: build.Setup) -> BlockAPT:
    """⟨APT⟩ after every block, each pre-trained base and the control, logit lens and tuned head (section 2)."""
    runs = {name: build.block_readouts(s, name, model=m, model_key=k) for name, (m, k) in pretrained(s).items()}
    runs["control"] = build.block_readouts(s, "control")
    rows = []
    for name, r in runs.items():
        for where, at in (("mask", r.kind == 0), ("all", np.ones(len(r.true), bool))):
            for readout, p in r.pred.items():
                rows += [{"model": name, "readout": readout, "block": b, "positions": where,
                          **apt_stats(r.true[at], p[at, b], s.counts, s.cfg.apt_top_k)} for b in range(p.shape[1])]
    return BlockAPT(pd.DataFrame(rows), runs, tuple(pretrained(s)))


def block_summary(res: BlockAPT | None) -> pd.DataFrame | None:
    """⟨APT⟩ per (model, readout, block): [MASK] positions (the headline) and all selected positions."""
    if res is None:
        return None
    t = res.table.pivot_table(index=["model", "readout", "block"], columns="positions",
                              values=["mean_apt", "apt_top"], dropna=False)
    t.columns = [f"{v}_{p}" for v, p in t.columns]
    n = res.table.query("positions == 'mask'").set_index(["model", "readout", "block"])[["n_types", "n_positions"]]
    return t.join(n).reset_index().round(4)


def _type_table(true, pred, counts, min_count: int) -> pd.DataFrame:
    """Per token type selected ≥ min_count times: occurrences, hits, APT, pre-training frequency."""
    true, pred = np.asarray(true), np.asarray(pred)
    tot = np.bincount(true, minlength=len(counts))
    hit = np.bincount(true[true == pred], minlength=len(counts))
    ids = np.flatnonzero(tot >= min_count)
    return pd.DataFrame({"id": ids, "n": tot[ids], "apt": hit[ids] / tot[ids], "freq": np.asarray(counts)[ids]})


@_skip_local
def final_apt(s: build.Setup, res: BlockAPT) -> dict:
    """The base's own head after the last block on [MASK] positions (section 1): APT per type (types selected
    ≥ MIN_OCCURRENCES times), beside the random-init control's and the unigram predictor's (a context-free guess
    drawn from the pre-training frequencies: expected APT(t) = p(t)); frequency bins; rank correlation."""
    L, r, c = s.n_layers, res.readouts["base"], res.readouts["control"]
    at, cat = r.kind == 0, c.kind == 0
    per = _type_table(r.true[at], r.pred["lens"][at, L], s.counts, MIN_OCCURRENCES)
    ctl = _type_table(c.true[cat], c.pred["lens"][cat, L], s.counts, 1).set_index("id")["apt"]
    per["control"] = ctl.reindex(per["id"]).fillna(0.0).values
    per["unigram"] = per["freq"] / max(float(s.counts.sum()), 1.0)
    if len(per) >= 3:
        rho, lo, hi = stats.rank_correlation(per["freq"], per["apt"], n_boot=s.cfg.n_boot, seed=s.cfg.seed)
    else:
        rho, lo, hi = (float("nan"),) * 3
    row = res.table.query("model == 'base' and readout == 'lens' and block == @L and positions == 'mask'").iloc[0]
    full = apt.accuracy_per_token(r.true[at], r.pred["lens"][at, L])
    bins = {f"block {b} ({ro})": apt.apt_by_frequency_bins(apt.accuracy_per_token(r.true[at], r.pred[ro][at, b]),
                                                            s.counts, s.cfg.freq_bins)
            for ro, b in (("probe", 0), ("probe", L // 2), ("lens", L))} if full else {}
    return {"types": per, "apt": dict(zip(per["id"].tolist(), per["apt"].tolist())), "apt_all": full,
            "rho": float(rho), "rho_ci": (lo, hi), "bins": bins, "mean_apt": float(row["mean_apt"]),
            "apt_top": float(row["apt_top"]), "accuracy": float(row["accuracy"]), "n_types": int(row["n_types"]),
            "n_positions": int(row["n_positions"]), "mean_apt_all_types": float(row["mean_apt_all_types"])}


# ------------------------------------------------------------------------------ section 3: W_S models
@_skip_local
def ws(s: build.Setup, res: BlockAPT | None = None) -> pd.DataFrame:
    """⟨APT⟩ of the final head on [MASK] positions against the pre-training set size (section 3), the mask draws
    pooled, a row per model; `protocol` is the sweep's (`ws_protocol`) or "same_steps" for the sizes of
    `ws_same_steps`. The base's own numbers are taken from `res` (the same mask draws) when given."""
    rows, L = [], s.n_layers
    runs = [(f, s.cfg.ws_protocol) for f in sorted(s.cfg.ws_fractions)]
    runs += [(f, "same_steps") for f in sorted(s.cfg.ws_same_steps)]
    for f, protocol in runs:
        model, meta, key = build.ws_model(s, f, protocol)
        if model is s.base and res is not None:
            got = res.table.query("model == 'base' and readout == 'lens' and block == @L and positions == 'mask'")
            got = got.iloc[0][["mean_apt", "apt_top", "accuracy", "n_types", "n_positions"]].to_dict()
        else:
            name = f"ws{f:g}" + ("" if protocol == s.cfg.ws_protocol else f"-{protocol}")
            r = build.block_readouts(s, name, model, key or s.base_key, per_block=False)
            at = r.kind == 0
            got = apt_stats(r.true[at], r.pred["lens"][at, -1], s.counts, s.cfg.apt_top_k)
        tokens = meta.get("tokens_seen")
        if tokens is None and model is s.base:  # the base itself: its own training record
            tokens = s.memo.get("trained", {}).get("base", {}).get("tokens_seen")
        rows.append({"fraction": f, "protocol": protocol, "rows": meta["rows"], "steps": meta["steps"],
                     "tokens": tokens, **got})
    return pd.DataFrame(rows)


def sweep(ws_: pd.DataFrame, protocol: str) -> pd.DataFrame:
    """The rows of `ws(...)` that form the W_S sweep itself (its own protocol; a table without the column is one)."""
    return ws_ if "protocol" not in ws_ else ws_[ws_["protocol"] == protocol]


# ------------------------------------------------------------------------- section 4: confusion clusters
CLUSTER_NULLS = 19  # shuffled-prediction nulls per model: a base beyond all of them has permutation p = 0.05
CLUSTER_BOOT = 200  # bootstrap resamples of the positions for the sharpening interval


def confusion_clusters(true, pred, vocab: int, threshold: float, min_count: int) -> dict:
    """Sparse confusion matrix -> paper normalisation -> strong-match clusters, and their concentration.

    Rows of token types selected fewer than `min_count` times are dropped first (too few to say where their
    row maximum is). concentration = share of the kept tokens' confusions (off-diagonal counts) that go to a
    member of the token's own cluster: 0 for diffuse errors, 1 when every error stays inside a cluster.
    """
    true, pred = np.asarray(true), np.asarray(pred)
    ok = np.bincount(true, minlength=vocab)[true] >= min_count  # rows of rare types dropped = their positions
    M = apt.confusion_counts(true[ok], pred[ok], vocab)
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


def clusters(s: build.Setup, res: BlockAPT | None, threshold: float) -> tuple[pd.DataFrame | None, dict | None]:
    """Cluster statistics per (model, readout, block) on [MASK] positions, links at normalised confusion >=
    `threshold` (the rule's constant, `claims.CLUSTER_THRESHOLD`), and the base's final-head clusters."""
    if res is None:
        return None, None
    rows, final = [], None
    for name, r in res.readouts.items():
        at = r.kind == 0
        for readout, pred in r.pred.items():
            for b in range(pred.shape[1]):
                c = confusion_clusters(r.true[at], pred[at, b], len(s.tok), threshold, s.cfg.cluster_min_count)
                rows.append({"model": name, "readout": readout, "block": b,
                             **{k: v for k, v in c.items() if k not in ("clusters", "size_histogram")}})
                if (name, readout, b) == ("base", "lens", s.n_layers):
                    final = c
    return pd.DataFrame(rows), final


def _sizes(c: dict) -> list[int]:
    return [len(x) for x in c["clusters"]]


def cluster_tests(true, pred_last, pred_first, vocab: int, threshold: float, min_count: int, seed: int,
                  n_null: int = CLUSTER_NULLS, n_boot: int = CLUSTER_BOOT) -> dict:
    """The two cluster claims' evidence for one model, on [MASK] positions.

    true (n,); pred_last (n,) the model's own head after the last block; pred_first (n,) the first block whose
    readout keeps enough types (None: no sharpening test). Null: the predictions shuffled across positions, which
    keeps both marginals (how often each token is true, how often each is predicted) and breaks the pairing, so
    clusters that only reflect what the model predicts everywhere appear in it too. Returns the observed and null
    cluster sizes and, over `n_boot` resamples of the positions (a fresh shuffle in each), the sharpening
    concentration(last) - concentration(first) of the model and of its null (NaN where a block has no
    confusion)."""
    rng, true = np.random.default_rng(seed), np.asarray(true)
    cc = functools.partial(confusion_clusters, vocab=vocab, threshold=threshold, min_count=min_count)
    obs = cc(true, pred_last)
    out = {"sizes": _sizes(obs), "n_kept": obs["n_kept"],
           "null_sizes": [_sizes(cc(true, rng.permutation(pred_last))) for _ in range(n_null)]}
    if pred_first is None:
        return out
    sharp, null = [], []
    for _ in range(n_boot):
        i = rng.integers(0, len(true), len(true))
        sharp.append(cc(true[i], pred_last[i])["concentration"] - cc(true[i], pred_first[i])["concentration"])
        j = rng.permutation(i)  # the null: predictions of other resampled positions
        null.append(cc(true[i], pred_last[j])["concentration"] - cc(true[i], pred_first[j])["concentration"])
    return out | {"sharpening": sharp, "null_sharpening": null}


def _digest(r) -> str:
    h = hashlib.sha256(r.true.tobytes() + r.kind.tobytes())
    for k in sorted(r.pred):
        h.update(k.encode() + r.pred[k].tobytes())
    return h.hexdigest()[:16]


def cluster_evidence(s: build.Setup, res: BlockAPT | None, cl: pd.DataFrame | None, threshold: float,
                     min_kept: int) -> dict | None:
    """cluster_tests for every pre-trained base and the control (cached: the bootstrap re-clusters every
    resample). The sharpening runs from the first block whose tuned head keeps ≥ `min_kept` types to the model's
    own head after the last block; {model: evidence}."""
    if res is None:
        return None
    L, out = s.n_layers, {}
    for name, r in res.readouts.items():
        t = cl.query("model == @name and readout == 'probe' and n_kept >= @min_kept and block < @L")
        first = int(t["block"].min()) if len(t) else None
        key = {"readouts": _digest(r), "threshold": threshold, "min_count": s.cfg.cluster_min_count, "first": first,
               "seed": s.cfg.seed, "n_null": CLUSTER_NULLS, "n_boot": CLUSTER_BOOT}

        def compute(folder: Path, r=r, first=first) -> dict:
            at = r.kind == 0
            ev = cluster_tests(r.true[at], r.pred["lens"][at, L], None if first is None else r.pred["probe"][at, first],
                               len(s.tok), threshold, s.cfg.cluster_min_count, s.cfg.seed)
            (folder / "evidence.json").write_text(json.dumps(ev))
            return {"first_block": first}

        art = load_or_compute("tzach_cluster_tests", key, compute, code=("lib.chapters.tzach.measure", "lib.apt"),
                              recompute=s.cfg.recompute)
        out[name] = json.loads((art.path / "evidence.json").read_text()) | {"first_block": first, "last_block": L}
    return out


# ----------------------------------------------------------------------- section 5: classification per block
@_skip_local
def finetune(s: build.Setup) -> dict:
    """Per-block test accuracy of logistic heads on frozen mean-pooled states (base, control, fine-tuned base),
    per task: {"table": DataFrame(task, model, block, seed, accuracy, chance), "tuned": {(task, seed): (model,
    artifact, test indices)}, "tasks": the tasks}."""
    out, table = {"tuned": {}, "tasks": build.tasks(s)}, []
    seeds = [s.cfg.seed + k for k in range(s.cfg.n_seeds)]
    for tname, task in out["tasks"].items():
        chance = 1 / len(task.ds.classes)
        runs = [("base", s.base, s.base_key, seeds), ("control", s.control, f"control:{s.cfg.seed}", seeds)]
        for seed in seeds[:s.cfg.n_ft_seeds]:
            tuned, art = build.tuned_model(s, task, seed)
            out["tuned"][(tname, seed)] = (tuned, art, task.ds.split(s.cfg.task_train_per_class, seed)[1])
            runs.append(("tuned", tuned, f"tzach_tuned/{art.key}", [seed]))
        for name, model, key, on in runs:
            table += [{"task": tname, "model": name, **row, "chance": chance}
                      for row in build.frozen_heads(s, tname, name, model, key, on)]
    out["table"] = pd.DataFrame(table)
    return out


# -------------------------------------------------------------------- section 6: confidence against APT
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
    """Pearson r and Spearman rho (Pearson of ranks) with percentile 95 % bootstrap intervals over examples
    (vectorised: all resamples at once). NaN (with a NaN interval) when x or y is constant."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    idx = np.random.default_rng(seed).integers(0, len(x), (n_boot, len(x)))
    out = {"n": len(x)}
    for name, f in (("pearson", lambda v: v), ("spearman", lambda v: st.rankdata(v, axis=-1))):
        point = _pearson_rows(f(x)[None], f(y)[None])[0]
        boots = _pearson_rows(f(x[idx]), f(y[idx]))
        ci = np.nanpercentile(boots, [2.5, 97.5]) if np.isfinite(boots).any() else (np.nan, np.nan)
        out |= {name: float(point), f"{name}_ci": (float(ci[0]), float(ci[1]))}
    return out


@_skip_local
def confidence(s: build.Setup, fin: dict, fa: dict) -> dict:
    """Per test input of the first fine-tuning seed: the classifier's max class probability against its tokens'
    mean APT (final head), with the correlations, the classifier's accuracy and chance, per task."""
    out = {}
    for (tname, seed), (tuned, art, te) in fin["tuned"].items():
        if seed != s.cfg.seed:
            continue
        enc = {k: v[te] for k, v in fin["tasks"][tname].enc.items()}
        conf = build.class_probs(tuned, enc).max(1).values.numpy()
        m = input_mean_apt(enc["input_ids"], enc["attention_mask"], fa["apt"], set(s.special_ids))
        ok = ~np.isnan(m)
        out[tname] = {"confidence": conf[ok], "mean_apt": m[ok], "accuracy": art.metrics["test_accuracy"],
                      "chance": 1 / len(fin["tasks"][tname].ds.classes),
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


def causal_lens_apt(model, input_ids: torch.Tensor, k: int = 50, batch: int = 4) -> pd.DataFrame:
    """Next-token APT after every layer of a causal LM via the logit lens (final norm + unembedding).

    input_ids (N, T). HF's last hidden state is already normed; earlier ones get the final norm. APT(k) uses the
    k most frequent target types of this text. Returns one row per block: block, mean_apt, apt_top, accuracy.
    """
    norm, unembed, dev = final_norm(model), model.get_output_embeddings(), next(model.parameters()).device
    true = input_ids[:, 1:].reshape(-1)

    def preds(ids):  # (B * (T-1), L + 1) next-token argmax after each layer
        hs = model(ids.to(dev), output_hidden_states=True).hidden_states
        return torch.stack([unembed(h if b == len(hs) - 1 else norm(h))[:, :-1].argmax(-1).reshape(-1).cpu()
                            for b, h in enumerate(hs)], 1)

    with evals.eval_mode(model):
        p = evals.batched(preds, input_ids, batch)
    counts = np.bincount(true.numpy(), minlength=int(true.max()) + 1)
    return pd.DataFrame([{"block": b, **apt_stats(true, p[:, b], counts, k)} for b in range(p.shape[1])])


def local_apt(s: build.Setup) -> pd.DataFrame | None:
    """The APT-per-layer analysis on the packaged causal LM (local profile only; None otherwise)."""
    if s.local is None:
        return None
    model, ids = s.local
    return causal_lens_apt(model, ids, s.cfg.apt_top_k)


# ------------------------------------------------------------------------------ what the rules read
def for_claims(s: build.Setup, res: BlockAPT, fa: dict, ws_: pd.DataFrame, evidence: dict, fin: dict,
               conf: dict, gaps: pd.DataFrame | None = None) -> dict:
    """The measured numbers of every rule in `claims.py`, as plain values and small tables; `evidence` is
    `cluster_evidence(...)`."""
    t = res.table
    head = t.query("readout == 'probe' and positions == 'mask'")
    bases_ = list(res.models)
    n_pos = t.query("positions == 'all' and model in @bases_").groupby("model")["n_positions"].max()
    return {
        "n_layers": s.n_layers,
        "n_positions": int(n_pos.min()),  # the smallest evaluation of any pre-trained model
        "loss_gap": float((gaps if gaps is not None else loss_gaps(s))["gap"].min()),  # the least-trained model
        "types_recovered": float(sum(fa["apt_all"].values())),  # Σ_t APT(t): a constant prediction gets 1
        "depth": {m: head.query("model == @m")[["block", "mean_apt"]] for m in res.models},
        "frequency": {"types": fa["types"], "rho": fa["rho"], "ci": fa["rho_ci"], "n_types": fa["n_types"],
                      "mean_apt": fa["mean_apt"], "apt_top": fa["apt_top"], "k": s.cfg.apt_top_k},
        "n_boot": s.cfg.n_boot,
        "ws": sweep(ws_, s.cfg.ws_protocol)[["rows", "steps", "mean_apt"]], "ws_protocol": s.cfg.ws_protocol,
        "clusters": evidence,
        "finetune": fin["table"].query("model in ('base', 'control')")[["task", "model", "block", "seed",
                                                                         "accuracy", "chance"]],
        "confidence": {t: {k: c[k] for k in ("spearman", "spearman_ci", "n", "accuracy", "chance")}
                       for t, c in conf.items()},
    }
