"""The measurements of chapter 05_horn, one per page section: accuracy along the SLERP path, the comparison of every
SAE's features on one token stream (cached), persistence shares along the edges, token classes of the features that
persist, disappear or emerge, and the two case studies. Models and cached arrays in, numbers and DataFrames out.

Matching at a correlation threshold is computed here from each feature's best partner, so the threshold (the
paper's r >= 0.8, a constant of `claims.py`) is an argument and the cached comparison does not depend on it:
`flow(comp, a, b, t)` equals `lib.sae.feature_flow(corr, t, alive_a, alive_b)` on the full correlation matrix.
"""
from __future__ import annotations

import copy
import functools
import keyword
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from lib import sae as saelib
from lib.artifacts import load_or_compute

from lib.chapters.horn import build, matching
from lib.chapters.horn.build import DOMAINS, MODELS, Loaded, Study

EDGES = (("base", "stories"), ("base", "lua"), ("lua", "merged"), ("stories", "merged"))
# The paper's protocol gives parent and child SAEs the same seed. Two references beside it: the same edges with the
# child's SAE from the next seed ("@next": independent initialisation and batch order), and the control, two SAEs of
# the *same* base model that differ only in their seed.
CROSS = tuple((a, f"{b}@next") for a, b in EDGES)
CONTROL = ("base", "base@next")
ALL_EDGES = (*EDGES, *CROSS, CONTROL)
GROUPS = {"paper protocol": EDGES, "independent seeds": CROSS, "control: same model": (CONTROL,)}
# The three matchers on the page: today's position-level Pearson r, and the two of the paper's released code
# (lib.chapters.horn.matching). Their thresholds are constants of claims.py; measure takes them as arguments.
MATCHERS = ("position", "profile", "flow")
# base -> merged is no edge of the flow, but the paper's released families follow every base feature into all three
# children (the flow matcher only)
FAMILY_EDGES = (("base", "stories"), ("base", "lua"), ("base", "merged"))
FLOW_MAX_SIMILARITY = 10.0  # the flow matcher's partners are stored for similarities up to this (the page's sweep)
CATEGORIES = ("punctuation/whitespace", "keyword", "number", "identifier", "English word")
LUA_KEYWORDS = ("and break do else elseif end false for function goto if in local nil not or repeat return then "
                "true until while").split()
KEYWORDS = frozenset(keyword.kwlist) | frozenset(LUA_KEYWORDS)
EXCEPTION_WORDS = frozenset(("raise", "except", "try", "finally"))
CASES = ("assign", "except")
CODE = (__name__, matching.__name__, *build.CODE)  # what builds the cached measurements


# --------------------------------------------------------------------------- next-token accuracy, interpolation
def accuracy(s: Study, ms: dict[str, Loaded]) -> dict:
    """Next-token accuracy of each model on each domain, and along the SLERP path lua (t=0) -> stories (t=1) and the
    straight (linear) path beside it: {"models": {model: {domain: acc}}, "sweep": [{"t": t, domain: acc, ...}, ...],
    "sweep_linear": [...]}, cached."""
    key = {"ts": s.cfg.ts, "eval_blocks": s.cfg.eval_blocks, "n_ctx": s.ctx, "seed": s.cfg.seed}

    def compute(out):
        ev = build.eval_sets(s)
        table = {name: {d: build.next_token_accuracy(m.model, ev[d]) for d in DOMAINS} for name, m in ms.items()}
        sweeps = {"sweep": [], "sweep_linear": []}
        for t in s.cfg.ts:
            for name, merge in (("sweep", build.merge), ("sweep_linear", linear_merge)):
                model = merge(ms["lua"].model, ms["stories"].model, t)
                sweeps[name].append({"t": t, **{d: build.next_token_accuracy(model, ev[d]) for d in DOMAINS}})
        return {"models": table, **sweeps}

    fps = [m.key for m in ms.values()] + s.fp("english", "python", "stories", "lua")
    return load_or_compute("horn_accuracy", key, compute, fingerprints=fps, code=CODE,
                           recompute=s.cfg.recompute).metrics


def linear_merge(lua: torch.nn.Module, stories: torch.nn.Module, t: float) -> torch.nn.Module:
    """The plain-interpolation baseline of SLERP: (1 - t) * lua + t * stories per floating-point tensor."""
    merged = copy.deepcopy(lua)
    sd1 = stories.state_dict()
    merged.load_state_dict({k: torch.lerp(v.float(), sd1[k].float(), t).to(v.dtype) if v.is_floating_point() else v
                            for k, v in lua.state_dict().items()})
    return merged.eval()


def curve_shape(sweep: list[dict], domain: str) -> dict[str, float]:
    """The shape of an accuracy curve over t: its mean and largest distance above the chord from t = 0 to t = 1 at
    the interior points (positive: concave, as the paper's Figure 5; about 0: near-linear)."""
    df = pd.DataFrame(sweep).sort_values("t")
    t, y = df["t"].to_numpy(), df[domain].to_numpy()
    bow = (y - (y[0] + (y[-1] - y[0]) * t))[1:-1]
    return {"mean_above_chord": float(bow.mean()) if len(bow) else float("nan"),
            "max_above_chord": float(bow.max()) if len(bow) else float("nan")}


# --------------------------------------------------------------------------- SAE quality
def sae_quality(saes: dict[int, dict[str, tuple]]) -> pd.DataFrame:
    """Per SAE seed and model: FVE, loss recovered, dead share and L0 on held-out tokens (build.evaluate_sae)."""
    return pd.DataFrame([{"seed": i, "model": name, **{k: float(saes[i][name][1][k]) for k in
                                                       ("fve", "loss_recovered", "dead_share", "l0")}}
                         for i in saes for name in MODELS])


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
    prose = build.blocks(s, {"english": 1.0}, 1, max(n, ctx), ctx, s.cfg.seed + 5)
    code = build.blocks(s, {"python": 1.0}, 1, max(n, ctx), ctx, s.cfg.seed + 6)
    flags = np.r_[np.zeros(len(prose), bool), np.ones(len(code), bool)]
    return Stream(torch.cat([prose, code]), flags)


@functools.lru_cache(maxsize=4)
def vocab_text(tokenizer) -> tuple[str, ...]:
    """The decoded text of every token id."""
    return tuple(tokenizer.decode([i]) for i in range(len(tokenizer)))


def token_classes(tokenizer, stream: Stream) -> dict[str, np.ndarray]:
    """Per comparison token (n,): category code (index into CATEGORIES) and the two case-study indicators."""
    text = vocab_text(tokenizer)
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


# --------------------------------------------------------------------------- comparing features across models
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


def summarise(name: str, F: torch.Tensor, cls: dict, min_fires: int, top_k: int) -> dict[str, np.ndarray]:
    """Alive mask, top-k activations, category and case-study selectivity of every feature of one SAE."""
    alive = ((F > 0).sum(0) >= min_fires).numpy()
    k = min(top_k, len(F))
    tops = [torch.topk(F[:, j:j + 1024].float(), k, dim=0) for j in range(0, F.shape[1], 1024)]
    top_val = torch.cat([t.values for t in tops], 1).numpy()
    top_idx = torch.cat([t.indices for t in tops], 1).numpy()
    category = np.where(alive, feature_categories(top_idx, top_val, cls["category"]), -1)
    out = {f"{name}__alive": alive, f"{name}__top_idx": top_idx.astype(np.int32),
           f"{name}__top_val": top_val.astype(np.float32), f"{name}__category": category}
    r = correlate_with(F, np.stack([cls["assign"], cls["except"]], 1))  # point-biserial r with each indicator
    out[f"{name}__assign_r"], out[f"{name}__except_r"] = r[:, 0], r[:, 1]
    return out


def best_partners(a: str, b: str, feats: dict, arrays: dict, device) -> dict[str, np.ndarray]:
    """Each alive feature's best-correlated alive partner on the other side of the edge a -> b (dead features get
    r = -2): row_max / row_arg (d_a,), col_max / col_arg (d_b,)."""
    alive_a = torch.as_tensor(arrays[f"{a}__alive"], device=device)
    alive_b = torch.as_tensor(arrays[f"{b}__alive"], device=device)
    corr = saelib.feature_correlations(feats[a], feats[b], device=device)  # (d_a, d_b)
    corr[~alive_a] = -2.0
    corr[:, ~alive_b] = -2.0
    (row_max, row_arg), (col_max, col_arg) = saelib.max_correlation(corr, 1), saelib.max_correlation(corr, 0)
    p = f"{a}__{b}__"
    return {p + "row_max": row_max.cpu().numpy(), p + "row_arg": row_arg.cpu().numpy(),
            p + "col_max": col_max.cpu().numpy(), p + "col_arg": col_arg.cpu().numpy()}


def string_keys(tokenizer, ids: np.ndarray) -> tuple[np.ndarray, int]:
    """The decoded string of every token position as an index (n,), and the number of distinct strings: the token
    profiles of the paper's matcher are per decoded string."""
    text = vocab_text(tokenizer)
    index = {t: i for i, t in enumerate(dict.fromkeys(text))}
    by_id = np.array([index[t] for t in text])
    present, keys = np.unique(by_id[ids.reshape(-1)], return_inverse=True)  # only the strings in the stream
    return keys.reshape(-1), len(present)


def profile_partners(a: str, b: str, profiles: dict, arrays: dict) -> dict[str, np.ndarray]:
    """Best token-profile partner of every alive feature on the other side of a -> b (dead ones and pairs
    without two common strings get r = -2)."""
    r = matching.profile_correlations(profiles[a], profiles[b]).nan_to_num(-2.0)
    r[~torch.as_tensor(arrays[f"{a}__alive"])] = -2.0
    r[:, ~torch.as_tensor(arrays[f"{b}__alive"])] = -2.0
    p = f"{a}__{b}__profile_"
    return {p + "row_max": r.max(1).values.numpy(), p + "col_max": r.max(0).values.numpy()}


def flow_partners(a: str, b: str, feats: dict, ctx: int) -> dict[str, np.ndarray]:
    """The flow matcher's compact record of a -> b (matching.flow_summary), keys prefixed `a__b__flow_`."""
    summary = matching.flow_summary(*matching.flow_candidates(feats[a], feats[b], ctx, FLOW_MAX_SIMILARITY))
    return {f"{a}__{b}__flow_{k}": v for k, v in summary.items()}


def follow(kind: str, feats: dict, arrays: dict) -> dict[str, np.ndarray]:
    """The base feature most selective for `kind` and its best-correlated partner in every model (MODELS order)."""
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
    """Everything the page reads from one seed's SAEs (and the next seed's, for the references) on the comparison
    tokens, cached as one npz: per SAE its feature summary, per edge the best partners, per case study the match."""
    cfg = s.cfg
    key = {"tokens": cfg.compare_tokens, "ctx": cfg.sae_ctx, "top_k": cfg.top_k, "min_fires": cfg.min_fires,
           "seed": cfg.seed}
    fps = [saes[n][2] for n in MODELS] + [next_saes[n][2] for n in MODELS] + s.fp("english", "python")

    def compute(out):
        stream = compare_stream(s)
        cls = token_classes(s.tokenizer, stream)
        acts = {}  # MLP activations per distinct model (the next seed's models are the same ones by default)
        for m in (*ms.values(), *next_ms.values()):
            acts[m.key] = acts[m.key] if m.key in acts else build.mlp_acts(m.model, stream.ids)
        feats = {n: build.encode(saes[n][0], acts[ms[n].key]) for n in MODELS}
        feats.update({f"{n}@next": build.encode(next_saes[n][0], acts[next_ms[n].key]) for n in MODELS})
        del acts
        arrays = {"ids": stream.ids.numpy().astype(np.int32), "code": stream.code, "token_category": cls["category"]}
        for name, F in feats.items():
            arrays.update(summarise(name, F, cls, cfg.min_fires, cfg.top_k))
        keys, n_keys = string_keys(s.tokenizer, arrays["ids"])
        profiles = {name: matching.token_profiles(F, keys, n_keys) for name, F in feats.items()}
        for a, b in ALL_EDGES:
            arrays.update(best_partners(a, b, feats, arrays, s.device))
            arrays.update(profile_partners(a, b, profiles, arrays))
        for a, b in dict.fromkeys((*ALL_EDGES, *FAMILY_EDGES)):
            arrays.update(flow_partners(a, b, feats, cfg.sae_ctx))
        for kind in CASES:
            arrays.update(follow(kind, feats, arrays))
        np.savez_compressed(out / "compare.npz", **arrays)
        return {f"{name}__alive": int(arrays[f"{name}__alive"].sum()) for name in feats}

    art = load_or_compute("horn_compare", key, compute, fingerprints=fps, code=CODE, recompute=cfg.recompute)
    with np.load(art.path / "compare.npz", allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def compare_all(s: Study, sets: dict, saes: dict) -> list[dict[str, np.ndarray]]:
    """One comparison per seed; the references pair seed i's SAEs with seed i+1's."""
    n = len(saes)
    return [compare(s, sets[i], saes[i], sets[(i + 1) % n], saes[(i + 1) % n]) for i in range(n)]


# --------------------------------------------------------------------------- persistence at a threshold
@dataclass(frozen=True)
class Flow:
    """The fate of the alive features along an edge a -> b at a correlation threshold (feature indices)."""
    persisting: np.ndarray  # features of a with a partner at r >= threshold
    disappearing: np.ndarray  # alive features of a without one
    emerging: np.ndarray  # alive features of b that no feature of a matches
    matched: np.ndarray  # features of b that some feature of a matches
    n_parent: int
    n_child: int

    def shares(self) -> dict[str, float]:
        return {"persisting": len(self.persisting) / max(self.n_parent, 1),
                "disappearing": len(self.disappearing) / max(self.n_parent, 1),
                "emerging": len(self.emerging) / max(self.n_child, 1),
                "n_parent": self.n_parent, "n_child": self.n_child}


def flow(comp: dict, a: str, b: str, threshold: float, matcher: str = "position", consistency: float = 0.8) -> Flow:
    """lib.sae.feature_flow of the edge a -> b at `threshold` under one of MATCHERS: "position" and "profile" read
    the stored best partners (threshold = r); "flow" the paper's families (threshold = similarity, with
    `consistency`), where a child feature is matched when it is some parent feature's partner."""
    alive_a, alive_b = comp[f"{a}__alive"], comp[f"{b}__alive"]
    if matcher == "flow":
        partner = families(comp, a, b, threshold, consistency)
        row_hit = partner >= 0
        col_hit = np.zeros(len(alive_b), bool)
        col_hit[partner[row_hit]] = True
    else:
        p = f"{a}__{b}__" + ("" if matcher == "position" else f"{matcher}_")
        row_hit, col_hit = comp[p + "row_max"] >= threshold, comp[p + "col_max"] >= threshold
    return Flow(np.flatnonzero(alive_a & row_hit), np.flatnonzero(alive_a & ~row_hit),
                np.flatnonzero(alive_b & ~col_hit), np.flatnonzero(alive_b & col_hit),
                int(alive_a.sum()), int(alive_b.sum()))


def families(comp: dict, a: str, b: str, similarity: float, consistency: float) -> np.ndarray:
    """The flow matcher's consistent partner in b of every feature of a (-1: none)."""
    p = f"{a}__{b}__flow_"
    return matching.flow_families({k[len(p):]: v for k, v in comp.items() if k.startswith(p)}, similarity,
                                  consistency)


def paper_families(comps: list[dict], similarity: float, consistency: float) -> pd.DataFrame:
    """Per seed, the released flow data's counts: base features in a family (a consistent partner in stories, lua or
    merged), with a stories partner, with a merge partner, whole chains (partners in all three); and d_sae."""
    rows = []
    for i, c in enumerate(comps):
        part = {b: families(c, "base", b, similarity, consistency) >= 0 for _, b in FAMILY_EDGES}
        rows.append({"seed": i, "families": int((part["stories"] | part["lua"] | part["merged"]).sum()),
                     "with stories partner": int(part["stories"].sum()),
                     "with merge partner": int(part["merged"].sum()),
                     "whole chains": int((part["stories"] & part["lua"] & part["merged"]).sum()),
                     "features": len(c["base__alive"]), "alive": int(c["base__alive"].sum())})
    return pd.DataFrame(rows)


def shares(comp: dict, a: str, b: str, threshold: float, matcher: str = "position",
           consistency: float = 0.8) -> dict[str, float]:
    """Persisting / disappearing shares of the alive features of a, emerging share of those of b, and the counts."""
    return flow(comp, a, b, threshold, matcher, consistency).shares()


def persistence(comps: list[dict], threshold: float, edges=EDGES, matcher: str = "position",
                consistency: float = 0.8) -> list[float]:
    """Per seed: the persisting share averaged over the edges."""
    return [float(np.mean([shares(c, a, b, threshold, matcher, consistency)["persisting"] for a, b in edges]))
            for c in comps]


def matcher_shares(comps: list[dict], thresholds: dict[str, float], consistency: float) -> pd.DataFrame:
    """Per matcher, edge group (GROUPS: the paper's protocol, independent SAE seeds, the same-model control) and
    seed: the persisting / disappearing / emerging shares averaged over the group's edges (long format)."""
    rows = []
    for matcher in MATCHERS:
        for group, edges in GROUPS.items():
            for i, c in enumerate(comps):
                sh = [shares(c, a, b, thresholds[matcher], matcher, consistency) for a, b in edges]
                rows.append({"matcher": matcher, "edges": group, "seed": i,
                             **{k: float(np.mean([x[k] for x in sh]))
                                for k in ("persisting", "disappearing", "emerging")}})
    return pd.DataFrame(rows)


def matcher_sweep(comps: list[dict], grids: dict[str, np.ndarray], consistency: float) -> pd.DataFrame:
    """Persisting share per matcher, threshold, edge group and seed (long format), for the threshold figure."""
    return pd.DataFrame([{"matcher": m, "threshold": float(t), "edges": g, "seed": i,
                          "persisting": persistence([c], t, edges, m, consistency)[0]}
                         for m in MATCHERS for t in grids[m] for g, edges in GROUPS.items()
                         for i, c in enumerate(comps)])


def flow_shares(comps: list[dict], threshold: float) -> pd.DataFrame:
    """Per edge and seed: persisting / disappearing / emerging shares and alive counts (long format)."""
    rows = [{"parent": a, "child": b, "seed": i, **shares(c, a, b, threshold)}
            for a, b in ALL_EDGES for i, c in enumerate(comps)]
    return pd.DataFrame(rows)


def threshold_sweep(comps: list[dict], grid) -> pd.DataFrame:
    """Persisting share per edge, threshold and seed (long format), for the threshold figure."""
    rows = [{"parent": a, "child": b, "threshold": float(t), "seed": i, "persisting": shares(c, a, b, t)["persisting"]}
            for a, b in ALL_EDGES for t in grid for i, c in enumerate(comps)]
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------- what persists
def category_counts(comp: dict, threshold: float, edges=EDGES) -> pd.DataFrame:
    """Counts of feature categories among persisting and disappearing parent features and emerging child
    features, pooled over the edges: DataFrame (CATEGORIES x fates)."""
    counts = pd.DataFrame(0, index=list(CATEGORIES), columns=["persisting", "disappearing", "emerging"])
    for a, b in edges:
        f = flow(comp, a, b, threshold)
        for fate, side in (("persisting", a), ("disappearing", a), ("emerging", b)):
            cats = comp[f"{side}__category"][getattr(f, fate)]
            for c in cats[cats >= 0]:
                counts.loc[CATEGORIES[c], fate] += 1
    return counts


def category_shares(comps: list[dict], threshold: float) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(mean, sd) over seeds of each fate's category shares (columns sum to 1)."""
    per_seed = np.stack([(c / c.sum().replace(0, 1)).to_numpy()
                         for c in (category_counts(comp, threshold) for comp in comps)])
    idx, cols = list(CATEGORIES), ["persisting", "disappearing", "emerging"]
    sd = per_seed.std(0, ddof=1) if len(per_seed) > 1 else np.zeros_like(per_seed[0])
    return pd.DataFrame(per_seed.mean(0), idx, cols), pd.DataFrame(sd, idx, cols)


def generic_gap(comps: list[dict], threshold: float, category: str = "punctuation/whitespace",
                edges=EDGES) -> list[float]:
    """Per seed: share of `category` among persisting minus among disappearing features (pooled edges)."""
    out = []
    for c in (category_counts(comp, threshold, edges) for comp in comps):
        share = c.loc[category] / c.sum().replace(0, 1)
        out.append(float(share["persisting"] - share["disappearing"]))
    return out


def example_features(comp: dict, n: int = 3) -> list[tuple[int, str]]:
    """Base features to show: persisting along both base edges (best matched), disappearing along both
    (worst matched), and the two case-study features."""
    r_s, r_l = comp["base__stories__row_max"], comp["base__lua__row_max"]
    alive = comp["base__alive"]
    order = np.argsort(-np.where(alive, np.minimum(r_s, r_l), -np.inf))
    gone = np.argsort(np.where(alive, np.maximum(r_s, r_l), np.inf))
    picks = [(int(j), "persists (both edges)") for j in order[:n]] + [(int(j), "disappears (both)") for j in gone[:n]]
    return picks + [(int(comp[f"case__{k}__match"][0]), f"case study: {k}") for k in CASES]


# --------------------------------------------------------------------------- case studies
def case_study(comps: list[dict], kind: str) -> pd.DataFrame:
    """Per model and seed: the base feature most selective for `kind`, its best partner in the model, their r, the
    partner's selectivity and the model's most selective alive feature; plus the base feature's best partner in a
    second SAE of the base (`control_r`, the same in every row)."""
    rows = []
    for i, c in enumerate(comps):
        base_j = int(c[f"case__{kind}__match"][0])
        for k, name in enumerate(MODELS):
            j = int(c[f"case__{kind}__match"][k])
            rows.append({"model": name, "seed": i, "feature": j, "r": float(c[f"case__{kind}__r"][k]),
                         "selectivity": float(c[f"{name}__{kind}_r"][j]),
                         "best_selectivity": float(np.where(c[f"{name}__alive"], c[f"{name}__{kind}_r"], -1).max()),
                         "control_r": float(c["base__base@next__row_max"][base_j])})
    return pd.DataFrame(rows)
