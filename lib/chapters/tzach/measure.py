"""Chapter 4's measurements, one function per page section: models and cached readouts in, DataFrames and dicts
out. No plotting, no prose, no verdicts (those are `claims.py`).

    res = measure.blocks(s)                       # section 2: ⟨APT⟩ per (model, readout, block, mask draw)
    fa = measure.final_apt(s, res)                # section 1: APT against frequency at the base's own head
    m = measure.for_claims(s, res, fa, ...)       # the numbers the rules read
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from scipy import stats as st
from torch import nn

from lib import apt, evals, stats
from lib.chapters.tzach import build
from lib.results import measured


def _skip_local(fn):
    """Sections of the masked-LM path return None in the local profile (no BERT base there)."""
    @functools.wraps(fn)
    def wrapper(s, *args, **kwargs):
        return None if s is None or s.base is None else fn(s, *args, **kwargs)
    return wrapper


def apt_stats(true, pred, counts, k: int) -> dict:
    """⟨APT⟩, APT(k) and plain (position-weighted) accuracy of predictions over selected positions."""
    per = apt.accuracy_per_token(true, pred)
    return {"mean_apt": apt.mean_apt(per), "apt_top": apt.apt_top_frequent(per, counts, k),
            "accuracy": float((np.asarray(true) == np.asarray(pred)).mean()), "n_types": len(per)}


# ----------------------------------------------------------------------------- sections 1-2: APT per block
@dataclass
class BlockAPT:
    table: pd.DataFrame  # model, readout, block, seed, mean_apt, apt_top, accuracy, n_types, mean_apt_masked
    readouts: dict  # model -> build.Readouts (pooled over mask draws)


@_skip_local
def blocks(s: build.Setup) -> BlockAPT:
    """⟨APT⟩ after every block, base and control, logit lens and fresh head, n_seeds mask draws (section 2)."""
    rows, reads = [], {name: build.block_readouts(s, name) for name in ("base", "control")}
    for name, r in reads.items():
        for seed in range(s.cfg.n_seeds):
            at, masked = r.seed == seed, (r.seed == seed) & (r.kind == 0)
            for readout, p in r.pred.items():
                rows += [{"model": name, "readout": readout, "block": b, "seed": seed,
                          **apt_stats(r.true[at], p[at, b], s.counts, s.cfg.apt_top_k),
                          "mean_apt_masked": apt.mean_apt(r.true[masked], p[masked, b])} for b in range(p.shape[1])]
    return BlockAPT(pd.DataFrame(rows), reads)


def block_summary(res: BlockAPT | None) -> pd.DataFrame | None:
    """Mean and sd over mask draws of ⟨APT⟩ per (model, readout, block)."""
    if res is None:
        return None
    g = res.table.groupby(["model", "readout", "block"])
    out = g[["mean_apt", "apt_top", "accuracy", "mean_apt_masked"]].mean()
    out = out.join(g["mean_apt"].std().rename("mean_apt_sd"))
    return out.reset_index().round(4)


@_skip_local
def final_apt(s: build.Setup, res: BlockAPT) -> dict:
    """The base's own head after the last block (section 1): APT per type, frequency bins, rank correlation."""
    L, r = s.n_layers, res.readouts["base"]
    true, pred = r.true, r.pred["lens"][:, L]
    per = apt.accuracy_per_token(true, pred)
    ids = np.fromiter(per, dtype=np.int64)
    freq, vals = s.counts[ids], np.array([per[i] for i in ids])
    rho, lo, hi = stats.rank_correlation(freq, vals, n_boot=s.cfg.n_boot, seed=s.cfg.seed)
    by_seed = res.table.query("model == 'base' and readout == 'lens' and block == @L")
    bins = {f"block {b} ({ro})": apt.apt_by_frequency_bins(apt.accuracy_per_token(true, r.pred[ro][:, b]),
                                                            s.counts, s.cfg.freq_bins)
            for ro, b in (("probe", 0), ("probe", L // 2), ("lens", L))}
    return {"apt": per, "freq": freq, "ids": ids, "rho": float(rho), "rho_ci": (lo, hi), "bins": bins,
            "mean_apt": measured(by_seed["mean_apt"]), "apt_top": measured(by_seed["apt_top"]),
            "accuracy": measured(by_seed["accuracy"]), "n_types_seed": float(by_seed["n_types"].mean()),
            "mask_only": apt.mean_apt(true[r.kind == 0], pred[r.kind == 0])}


# ------------------------------------------------------------------------------ section 3: W_S models
@_skip_local
def ws(s: build.Setup, res: BlockAPT | None = None) -> pd.DataFrame:
    """⟨APT⟩ of the final head against the pre-training set size (section 3), n_seeds mask draws each.
    The base's own numbers are taken from `res` (the same mask draws) when given."""
    rows, L = [], s.n_layers
    for f in sorted(s.cfg.ws_fractions):
        model, meta, key = build.ws_model(s, f)
        if model is s.base and res is not None:
            got = res.table.query("model == 'base' and readout == 'lens' and block == @L").set_index("seed")
            per_seed = [{k: got.loc[seed, k] for k in ("mean_apt", "apt_top", "accuracy", "n_types")}
                        for seed in range(s.cfg.n_seeds)]
        else:
            r = build.block_readouts(s, f"ws{f:g}", model, key or s.base_key, per_block=False)
            per_seed = [apt_stats(r.true[r.seed == k], r.pred["lens"][r.seed == k, -1], s.counts, s.cfg.apt_top_k)
                        for k in range(s.cfg.n_seeds)]
        rows += [{"fraction": f, "rows": meta["rows"], "steps": meta["steps"], "seed": k, **got}
                 for k, got in enumerate(per_seed)]
    return pd.DataFrame(rows)


# ------------------------------------------------------------------------- section 4: confusion clusters
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


def clusters(s: build.Setup, res: BlockAPT | None, threshold: float) -> tuple[pd.DataFrame | None, dict | None]:
    """Cluster statistics per (model, readout, block), links at normalised confusion >= `threshold` (the rule's
    constant, `claims.CLUSTER_THRESHOLD`), and the base's final-head clusters."""
    if res is None:
        return None, None
    rows, final = [], None
    for name, r in res.readouts.items():
        for readout, pred in r.pred.items():
            for b in range(pred.shape[1]):
                c = confusion_clusters(r.true, pred[:, b], len(s.tok), threshold, s.cfg.cluster_min_count)
                rows.append({"model": name, "readout": readout, "block": b,
                             **{k: v for k, v in c.items() if k not in ("clusters", "size_histogram")}})
                if (name, readout, b) == ("base", "lens", s.n_layers):
                    final = c
    return pd.DataFrame(rows), final


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
def for_claims(s: build.Setup, res: BlockAPT, fa: dict, ws_: pd.DataFrame, cl: pd.DataFrame, final: dict,
               fin: dict, conf: dict) -> dict:
    """The measured numbers of every rule in `claims.py`, as plain values and small tables."""
    base = res.table.query("model == 'base'")
    return {
        "n_layers": s.n_layers,
        "types_recovered": fa["mean_apt"][1] * fa["n_types_seed"],  # Σ_t APT(t): a constant prediction gets 1
        "depth": {"base": base},  # per pre-trained model: its (readout, block, seed) table
        "frequency": {"rho": fa["rho"], "ci": fa["rho_ci"], "n_types": len(fa["apt"]),
                      "mean_apt": fa["mean_apt"][0], "apt_top": fa["apt_top"][0], "k": s.cfg.apt_top_k},
        "ws": ws_[["rows", "steps", "seed", "mean_apt"]], "ws_protocol": s.cfg.ws_protocol,
        "final_clusters": {"sizes": [len(c) for c in final["clusters"]], "n_kept": final["n_kept"]},
        "sharpness": {"base": cl.query("model == 'base' and readout == 'probe'")[["block", "n_kept", "concentration"]]},
        "finetune": fin["table"].query("model == 'base'")[["task", "block", "seed", "accuracy", "chance"]],
        "confidence": {t: {k: c[k] for k in ("spearman", "spearman_ci", "n", "accuracy", "chance")}
                       for t, c in conf.items()},
    }
