"""Chapter 3's measurements, one function per page section: models in, DataFrames out (no plotting, no prose).

Every section that runs the models is a cached artifact per seed and model (`_cached`): its key holds the keys of the
models it reads, the fingerprints of the prompt sets, the settings (the circuits themselves, where a section reads
one) and the source of this module, lib.patching and lib.hooks, so a warm build loads instead of recomputing, and a
change to any of them recomputes. A model made in memory (no key, as in the unit tests) is measured directly.
Results are stored as JSON (rows) and npz (arrays), never pickles.
"""
from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import torch

from lib.artifacts import load_or_compute
from lib.chapters.prakash import build
from lib.chapters.prakash.build import TaskData, Trained, accuracy, predictions
from lib.chapters.prakash.config import GROUPS, Config
from lib import evals
from lib.evals import eval_mode
from lib.hooks import forward, hooks, model_spec, patch, position_mask
from lib.patching import (answer_prob, attention_knockout, block_attention, cache_z, dcm_masks, mean_ablation_circuit,
                          path_patching_scores, sweep_cost_ratio, z_name)
from lib.tasks import entities as E

GROUP_POS = {"VF": "last", "PT": "last", "PD": "query", "SR": "prev_query"}  # where each group is read / patched
KNOCKOUTS = {"last -> correct object": ("last", "object"),
             "query label -> previous query label": ("query", "prev_query"),
             "last -> query label": ("last", "query"),
             "last -> a wrong object (control)": ("last", "wrong_object")}
CONTROL = "last -> a wrong object (control)"
DCM_COLUMNS = ("seed", "model", "group", "desideratum", "selected", "of", "train_acc", "target_pct", "unpatched_pct",
               "lift")
# The code behind every analysis artifact (its source is part of the key).
CODE = (sys.modules[__name__], build.__name__, "lib.patching", "lib.hooks", "lib.tasks.entities")


# ------------------------------------------------------------------------------------------------ the cache
def _save(out: Path, value: dict) -> dict:
    arrays = {k: np.asarray(v) for k, v in value.items() if isinstance(v, (np.ndarray, torch.Tensor))}
    np.savez(out / "arrays.npz", **arrays)
    (out / "value.json").write_text(json.dumps({k: v for k, v in value.items() if k not in arrays}))
    return {}


def _load(path: Path) -> dict:
    with np.load(path / "arrays.npz") as f:
        arrays = {k: f[k] for k in f.files}
    return {**json.loads((path / "value.json").read_text()), **arrays}


def _cached(kind: str, cfg: Config, models: list[Trained], sets: list[str], data: TaskData, settings: dict,
            compute: Callable[[], dict]) -> dict:
    """compute() -> {name: JSON value or array}, through the cache unless a model has no key."""
    if any(t.key is None for t in models):
        return _roundtrip(compute())
    key = {"objects": cfg.objects, "n_boxes": cfg.n_boxes, **settings}
    art = load_or_compute(f"prakash_{kind}", key, lambda out: _save(out, compute()), code=CODE,
                          fingerprints=[t.key for t in models] + data.fingerprints(*sets), recompute=cfg.recompute)
    return _load(art.path)


def _roundtrip(value: dict) -> dict:
    """What the cache would give back (arrays as numpy, the rest through JSON): the same types either way."""
    arrays = {k: np.asarray(v) for k, v in value.items() if isinstance(v, (np.ndarray, torch.Tensor))}
    return {**json.loads(json.dumps({k: v for k, v in value.items() if k not in arrays})), **arrays}


def _each(runs: dict, skip_base: bool = False):
    for s, ms in runs.items():
        for name, t in ms.items():
            if not (skip_base and name == "base"):
                yield s, name, t


def _heads(pairs) -> list[tuple[int, int]]:
    return [(int(L), int(h)) for L, h in pairs]


# ------------------------------------------------------------------------------------------------ 1. accuracy
def test_predictions(runs: dict, data: TaskData, cfg: Config) -> dict:
    """{(seed, model): (N,) the top prediction on each test prompt} (cached per model)."""
    return {(s, name): torch.as_tensor(_cached(
        "predictions", cfg, [t], ["test"], data, {},
        lambda t=t: {"pred": predictions(t.model, data.enc["test"])})["pred"]) for s, name, t in _each(runs)}


def restricted_accuracy(model, enc: dict, obj_ids: torch.Tensor, objects: np.ndarray, batch: int = 250) -> float:
    """Accuracy when the model may only name one of the prompt's objects (argmax of its logits over them): the
    measure for a model that spreads probability over other words (a packaged model's answer may be any word)."""
    rows = {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}
    with eval_mode(model):
        logits = evals.batched(lambda b: forward(model, {**b, "logits_to_keep": 1})[:, -1], rows, batch)
    ctx = obj_ids[torch.as_tensor(objects)]  # (N, n_boxes)
    pick = ctx[torch.arange(len(ctx)), logits.gather(1, ctx).argmax(1)]
    return float(pick.eq(enc["answer_ids"]).float().mean())


def restricted_table(runs: dict, data: TaskData, cfg: Config) -> pd.DataFrame:
    """Test accuracy restricted to the prompt's objects, per seed and model (cached per model)."""
    rows = []
    for s, name, t in _each(runs):
        v = _cached("restricted", cfg, [t], ["test"], data, {}, lambda t=t: {"acc": restricted_accuracy(
            t.model, data.enc["test"], data.obj_ids, data.boxes["test"].objects)})
        rows.append({"seed": s, "model": name, "restricted accuracy": float(v["acc"])})
    return pd.DataFrame(rows)


INDUCTION_LEN, INDUCTION_N = 20, 200  # random-token sequences of this length, each repeated once


def induction_score(model, vocab_size: int, seed: int) -> float:
    """Top-1 accuracy on the second copy of a repeated random-token sequence (BOS, x_1..x_n, x_1..x_n), first token
    of the copy excluded: an induction / look-back score (chance ~1 / vocabulary; a model that looks back ~1)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(3, vocab_size, (INDUCTION_N, INDUCTION_LEN), generator=g)  # above the special tokens
    bos = torch.full((INDUCTION_N, 1), model.config.bos_token_id or 0)
    ids = torch.cat([bos, x, x], 1)
    with eval_mode(model):
        logits = forward(model, {"input_ids": ids})
    pred = logits[:, INDUCTION_LEN + 1:-1].argmax(-1)  # predicting x_2..x_n of the copy
    return float(pred.eq(ids[:, INDUCTION_LEN + 2:]).float().mean())


def induction_table(runs: dict, data: TaskData, cfg: Config) -> pd.DataFrame:
    """The induction score of every model (cached per model)."""
    rows = []
    for s, name, t in _each(runs):
        v = _cached("induction", cfg, [t], [], data, {"len": INDUCTION_LEN, "n": INDUCTION_N, "seed": cfg.seed},
                    lambda t=t: {"score": induction_score(t.model, t.model.config.vocab_size, cfg.seed)})
        rows.append({"seed": s, "model": name, "induction score": float(v["score"])})
    return pd.DataFrame(rows)


def accuracy_table(runs: dict, data: TaskData, preds: dict) -> pd.DataFrame:
    """Test accuracy per seed and model, and the base's training steps."""
    answer = data.enc["test"]["answer_ids"]
    return pd.DataFrame([{"seed": s, "model": name, "accuracy": float(preds[s, name].eq(answer).float().mean()),
                          "steps": t.metrics.get("steps")} for s, name, t in _each(runs)])


def base_curves(runs: dict) -> pd.DataFrame:
    """The base's validation accuracy at each check of its entity pre-training, per seed."""
    return pd.DataFrame([{"seed": s, **e} for s, ms in runs.items() for e in ms["base"].history()])


def box_curve(runs: dict, data: TaskData, tokenizer, cfg: Config) -> pd.DataFrame:
    """Test accuracy per seed, model and number of boxes (2 .. n_boxes; curve_size fresh prompts each), with the
    chance rate 1 / boxes: where, if anywhere, a model tracks entities better than a guess among the boxes."""
    sets = {nb: build.curve_prompts(cfg, tokenizer, data.vocab, nb) for nb in range(2, cfg.n_boxes + 1)}
    fps = {"curves": [E.fingerprint(b) for b, _ in sets.values()]}
    rows = []
    for s, name, t in _each(runs):
        accs = _cached("curve", cfg, [t], [], data, fps,
                       lambda t=t: {"acc": [accuracy(t.model, enc) for _, enc in sets.values()]})["acc"]
        rows += [{"seed": s, "model": name, "boxes": nb, "accuracy": a, "chance": 1 / nb} for nb, a in zip(sets, accs)]
    rows.sort(key=lambda r: r["boxes"])  # box count first, as the table reads
    return pd.DataFrame(rows)


def answer_profile(runs: dict, data: TaskData, preds: dict) -> pd.DataFrame:
    """What the models answer on the test prompts, per seed and model: the share of answers that name an object from
    the prompt ("in context"), the accuracy, the share naming the object of box k ("box k"), and the accuracy a
    query-blind model with the same box shares would get (sum over k of box-k share x share of prompts asking for box
    k). A model that copies a context object without binding it to its box has in context ~1 and accuracy ~ the
    query-blind baseline; binding shows as accuracy above it (the binding gap)."""
    b = data.boxes["test"]
    ctx = data.obj_ids[torch.as_tensor(b.objects)]  # (N, n_boxes) token ids of the prompt's objects
    asked = torch.stack([torch.as_tensor(b.query_box == k).float().mean() for k in range(b.n_boxes)])
    rows = []
    for s, name, _ in _each(runs):
        pred = preds[s, name]
        picks = ctx.eq(pred[:, None]).float().mean(0)  # (n_boxes,) share of answers naming box k's object
        rows.append({"seed": s, "model": name, "in context": float(ctx.eq(pred[:, None]).any(1).float().mean()),
                     "accuracy": float(pred.eq(data.enc["test"]["answer_ids"]).float().mean()),
                     "query-blind baseline": float(picks @ asked),
                     **{f"box {k + 1}": float(picks[k]) for k in range(b.n_boxes)}})
    return pd.DataFrame(rows)


# ------------------------------------------------------------------------------------------------ 2. path patching
def positions(enc: dict) -> dict:
    """The circuit's three positions: last token, query label (last - 2), previous query label (per example)."""
    return {"last": enc["last"], "query": enc["query_pos"], "prev_query": enc["prev_query_pos"]}


def top_heads(scores: torch.Tensor, k: int, exclude=()) -> list[tuple[int, int]]:
    """The k most negative heads (Prakash et al. keep the heads whose patching lowers p(answer) the most)."""
    flat = scores.clone().flatten()
    H = scores.shape[1]
    for L, h in exclude:
        flat[L * H + h] = float("inf")
    order = torch.argsort(flat)[:k]
    return [(int(i) // H, int(i) % H) for i in order if flat[i] < 0]


def discover(model, data: TaskData, counts: tuple[int, ...]) -> tuple[dict, dict]:
    """Path patching VF -> PT -> PD -> SR (research/papers.md, Paper 3 (c) 1); returns (circuit, scores).

    VF: heads at the last token whose direct path to the logits carries the answer; PT: heads at the last token
    acting on VF queries; PD: heads at the query label acting on PT values; SR: heads at the previous query label
    acting on PD values. circuit: {group: [(layer, head)]}; scores: {group: (n_layers, n_heads)}.
    """
    clean, corrupt = E.model_inputs(data.enc["pp"]), E.model_inputs(data.enc["pp_corrupt"])
    ans, pos = data.enc["pp"]["answer_ids"], positions(data.enc["pp"])
    n_vf, n_pt, n_pd, n_sr = counts
    scores = {"VF": path_patching_scores(model, clean, corrupt, ans, sender_pos=pos["last"])}
    stage = partial(path_patching_scores, model, clean, corrupt, ans)
    vf = top_heads(scores["VF"], n_vf)
    scores["PT"] = stage(pos["last"], receivers=vf, receiver_input="q", receiver_pos=pos["last"]) \
        if vf else torch.zeros_like(scores["VF"])
    pt = top_heads(scores["PT"], n_pt)
    vf = [h for h in vf if h not in pt]  # a head in both is a PT head (the paper removes it from VF)
    scores["PD"] = stage(pos["query"], receivers=pt, receiver_input="v", receiver_pos=pos["query"]) \
        if pt else torch.zeros_like(scores["VF"])
    pd_ = top_heads(scores["PD"], n_pd)
    scores["SR"] = stage(pos["prev_query"], receivers=pd_, receiver_input="v", receiver_pos=pos["prev_query"]) \
        if pd_ else torch.zeros_like(scores["VF"])
    return {"VF": vf, "PT": pt, "PD": pd_, "SR": top_heads(scores["SR"], n_sr)}, scores


def discover_all(runs: dict, data: TaskData, cfg: Config) -> dict:
    """{(seed, model): (circuit, scores)}: the base circuit with heads_base, each tuned circuit with heads_tuned."""
    def one(t: Trained, counts) -> dict:
        circuit, scores = discover(t.model, data, counts)
        return {"circuit": circuit, **{f"scores_{g}": scores[g] for g in GROUPS}}

    out = {}
    for s, name, t in _each(runs):
        counts = cfg.heads(name)
        v = _cached("circuit", cfg, [t], ["pp", "pp_corrupt"], data, {"heads": counts}, partial(one, t, counts))
        out[s, name] = ({g: _heads(v["circuit"][g]) for g in GROUPS},
                        {g: torch.as_tensor(v[f"scores_{g}"]) for g in GROUPS})
    return out


# ------------------------------------------------------------------------------------------------ 3. mean ablation
def mean_z(model, data: TaskData) -> dict:
    """Per-position means of every head's z over the reference prompts: {layer: (T, H, d_head)}."""
    return {L: z.mean(0) for L, z in cache_z(model, E.model_inputs(data.enc["mean"]))[1].items()}


def circuit_keep(circuit: dict) -> dict:
    """mean_ablation_circuit's keep: {position key: heads kept there}."""
    return {"last": set(circuit["VF"]) | set(circuit["PT"]), "query": set(circuit["PD"]),
            "prev_query": set(circuit["SR"])}


def circuit_accuracy(model, data: TaskData, circuit: dict, means: dict) -> float:
    enc = data.enc["analysis"]
    with eval_mode(model):
        logits = mean_ablation_circuit(model, E.model_inputs(enc), means, circuit_keep(circuit), positions(enc))
    return float(logits[:, -1].argmax(-1).eq(enc["answer_ids"]).float().mean())


def random_circuit(circuit: dict, spec, rng: np.random.Generator) -> dict:
    """Random heads, as many per group as `circuit` has."""
    heads = [(L, h) for L in range(spec.n_layers) for h in range(spec.n_heads)]
    return {g: [heads[i] for i in rng.choice(len(heads), len(v), replace=False)] for g, v in circuit.items()}


def _faithfulness(t: Trained, s: int, circuits: dict, data: TaskData, cfg: Config) -> dict:
    means, full = mean_z(t.model, data), accuracy(t.model, data.enc["analysis"])
    rows = []
    for which, circuit in circuits.items():
        rng = np.random.default_rng(cfg.seed + s)
        rand = [circuit_accuracy(t.model, data, random_circuit(circuit, model_spec(t.model), rng), means)
                for _ in range(cfg.random_draws)]
        acc = circuit_accuracy(t.model, data, circuit, means)
        rows.append({"seed": s, "model": t.name, "circuit": which, "model_acc": full, "circuit_acc": acc,
                     "faithfulness": acc / full if full else float("nan"), "random_acc": float(np.mean(rand)),
                     "n_heads": sum(len(v) for v in circuit.values())})
    return {"rows": rows}


def faithfulness_table(runs: dict, found: dict, data: TaskData, cfg: Config) -> pd.DataFrame:
    """Per seed, model and circuit (the base's, the model's own): model, circuit and random-circuit accuracy."""
    rows = []
    for s, name, t in _each(runs):
        circuits = {which: found[s, which][0] for which in dict.fromkeys(["base", name])}
        settings = {"circuits": circuits, "draws": cfg.random_draws, "rng": cfg.seed + s, "n": cfg.analysis_size}
        rows += _cached("faithfulness", cfg, [t], ["test", "mean"], data, settings,
                        partial(_faithfulness, t, s, circuits, data, cfg))["rows"]
    return pd.DataFrame(rows)


# ------------------------------------------------------------------------------------------------ 4. overlap
def overlap_table(found: dict) -> pd.DataFrame:
    """Base heads also found in the tuned circuit, per group: precision = overlap / |base|, recall = / |tuned|;
    chance = the precision expected if the tuned group were |tuned| heads drawn at random; null_overlap /
    null_precision = the same for the base circuits of the *other* seeds (mean over them; NaN with one seed): a
    permutation null that keeps whatever makes some heads likely in every model of this architecture and recipe."""
    rows = []
    seeds = sorted({s for s, _ in found})
    for (s, name), (circuit, scores) in found.items():
        if name == "base":
            continue
        n_heads, base = scores["VF"].numel(), found[s, "base"][0]
        others = [found[o, "base"][0] for o in seeds if o != s]
        for g in GROUPS:
            b, t = set(base[g]), set(circuit[g])
            null = float(np.mean([len(set(o[g]) & t) for o in others])) if others else float("nan")
            null_b = float(np.mean([len(o[g]) for o in others])) if others else float("nan")
            rows.append({"seed": s, "model": name, "group": g, "overlap": len(b & t), "base": len(b),
                         "tuned": len(t), "precision": len(b & t) / len(b) if b else float("nan"),
                         "recall": len(b & t) / len(t) if t else float("nan"), "chance": len(t) / n_heads,
                         "null_overlap": null, "null_precision": null / null_b if null_b else float("nan")})
    return pd.DataFrame(rows)


# ------------------------------------------------------------------------------------------------ 5. DCM
def _inputs_pos(data: TaskData, name: str, group: str):
    return positions(data.enc[name])[GROUP_POS[group]], positions(data.enc[name + "_src"])[GROUP_POS[group]]


def patched_from_source(model, data: TaskData, name: str, heads: list, group: str) -> torch.Tensor:
    """Predictions on prompts `name` with `heads` at the group's position taken from the source prompts."""
    enc, src = data.enc[name], data.enc[name + "_src"]
    pos, spos = (torch.as_tensor(p).expand(len(enc["input_ids"])) for p in _inputs_pos(data, name, group))
    layers = sorted({L for L, _ in heads})
    with eval_mode(model):
        _, sz = cache_z(model, E.model_inputs(src), layers)
        b = torch.arange(len(pos))[:, None]
        fwd = []
        for L in layers:
            hs = torch.tensor([h for l, h in heads if l == L])
            values = sz[L].clone()  # (B, T, H, d): source z moved from the source position to the base position
            values[b, pos[:, None], hs] = sz[L][b, spos[:, None], hs]
            mask = torch.zeros(values.shape[:3], dtype=torch.bool)
            mask[b, pos[:, None], hs] = True
            fwd.append((z_name(L), partial(patch, values=values, mask=mask)))
        with hooks(model, fwd):
            return forward(model, E.model_inputs(enc))[:, -1].argmax(-1)


def _dcm(t: Trained, s: int, circuit: dict, data: TaskData, cfg: Config) -> dict:
    rows = []
    unpatched = {k: predictions(t.model, data.enc[f"dcm_{k}_test"]) for k in E.DESIDERATA}
    for g in GROUPS:
        for kind in E.DESIDERATA if circuit[g] else ():
            tr, te = f"dcm_{kind}_train", f"dcm_{kind}_test"
            pos, spos = _inputs_pos(data, tr, g)
            res = dcm_masks(t.model, E.model_inputs(data.enc[tr]), E.model_inputs(data.enc[tr + "_src"]),
                            data.targets[tr], circuit[g], pos, lam=cfg.dcm_lam, lr=cfg.dcm_lr,
                            epochs=cfg.dcm_epochs, source_position=spos, seed=s)
            pred = patched_from_source(t.model, data, te, res.selected, g)
            pct = 100 * float(pred.eq(data.targets[te]).float().mean())
            base_pct = 100 * float(unpatched[kind].eq(data.targets[te]).float().mean())
            rows.append({"seed": s, "model": t.name, "group": g, "desideratum": kind, "selected": len(res.selected),
                         "of": len(circuit[g]), "train_acc": res.accuracy, "target_pct": pct,
                         "unpatched_pct": base_pct, "lift": pct - base_pct})
    return {"rows": rows}


def dcm_table(runs: dict, found: dict, data: TaskData, cfg: Config) -> pd.DataFrame:
    """DCM masks of the base circuit's groups, per model and desideratum: heads selected and the % of test outputs
    equal to the desideratum's target when the selected heads are patched from the source (fresh test prompts), the
    same % with nothing patched (a model that names a prompt object at random hits the box-label target, an object
    of the base prompt, that often by itself) and the lift, the difference: what the patch caused."""
    sets = [f"dcm_{k}_{split}{src}" for k in E.DESIDERATA for split in ("train", "test") for src in ("", "_src")]
    rows = []
    for s, name, t in _each(runs):
        circuit = found[s, "base"][0]
        settings = {"circuit": circuit, "lam": cfg.dcm_lam, "lr": cfg.dcm_lr, "epochs": cfg.dcm_epochs, "seed": s}
        rows += _cached("dcm", cfg, [t], sets, data, settings, partial(_dcm, t, s, circuit, data, cfg))["rows"]
    return pd.DataFrame(rows, columns=DCM_COLUMNS)  # the columns also when no group has heads


# ------------------------------------------------------------------------------------------------ 6. CMAP
def cmap_logits(base, tuned, inputs: dict, keep: dict, pos: dict) -> torch.Tensor:
    """CMAP: base's logits with heads keep[key] at positions pos[key] given tuned's z on the same input."""
    spec, (B, T) = model_spec(base), inputs["input_ids"].shape
    layers = sorted({L for heads in keep.values() for L, _ in heads})
    with eval_mode(base), eval_mode(tuned):
        _, tz = cache_z(tuned, inputs, layers)
        fwd = []
        for L in layers:
            mask = torch.zeros(B, T, spec.n_heads, dtype=torch.bool)
            for key, heads in keep.items():
                for h in {h for l, h in heads if l == L}:
                    mask[:, :, h] |= position_mask((B, T), pos[key])
            fwd.append((z_name(L), partial(patch, values=tz[L], mask=mask)))
        with hooks(base, fwd):
            return forward(base, inputs)


def _cmap(base: Trained, t: Trained, s: int, circuit: dict, data: TaskData) -> dict:
    enc = data.enc["analysis"]
    base_acc, tuned_acc = accuracy(base.model, enc), accuracy(t.model, enc)
    rows = []
    for label, groups in {"full circuit": circuit, **{g: {g: circuit[g]} for g in GROUPS}}.items():
        keep = {k: set() for k in ("last", "query", "prev_query")}
        for g, heads in groups.items():
            keep[GROUP_POS[g]] |= set(heads)
        logits = cmap_logits(base.model, t.model, E.model_inputs(enc), keep, positions(enc))
        rows.append({"seed": s, "model": t.name, "patched": label,
                     "accuracy": float(logits[:, -1].argmax(-1).eq(enc["answer_ids"]).float().mean()),
                     "base_acc": base_acc, "tuned_acc": tuned_acc})
    return {"rows": rows}


def cmap_table(runs: dict, found: dict, data: TaskData, cfg: Config) -> pd.DataFrame:
    """Accuracy of base with the tuned model's circuit heads (per group, and all) patched in from tuned."""
    rows = []
    for s, name, t in _each(runs, skip_base=True):
        base, circuit = runs[s]["base"], found[s, name][0]
        rows += _cached("cmap", cfg, [base, t], ["test"], data, {"circuit": circuit, "n": cfg.analysis_size},
                        partial(_cmap, base, t, s, circuit, data))["rows"]
    return pd.DataFrame(rows)


# ------------------------------------------------------------------------------------------------ 7. knockout
def knockout_positions(enc: dict, rng: np.random.Generator) -> dict:
    """Per-example positions: last, query, prev_query, the correct object and a wrong object of the context."""
    n, nb = len(enc["input_ids"]), len(enc["object_pos"])
    box = (enc["prev_query_pos"][:, None] == enc["label_pos"][None]).float().argmax(1)  # (N,) the queried box
    wrong = (box + torch.as_tensor(rng.integers(1, nb, n))) % nb
    return {"last": enc["last"], "query": enc["query_pos"], "prev_query": enc["prev_query_pos"],
            "object": enc["object_pos"][box], "wrong_object": enc["object_pos"][wrong]}


def _knockout(t: Trained, s: int, data: TaskData, cfg: Config) -> dict:
    enc = data.enc["analysis"]
    pos, n = knockout_positions(enc, np.random.default_rng(cfg.seed)), len(enc["input_ids"])
    n_layers, full = model_spec(t.model).n_layers, accuracy(t.model, enc)
    rows = []
    for label, (q, k) in KNOCKOUTS.items():
        qp, kp = (torch.as_tensor(pos[x]).expand(n) for x in (q, k))
        for first in range(n_layers + 1):
            acc = full
            if first < n_layers:
                with attention_knockout(t.model, block_attention(qp, kp, range(first, n_layers))):
                    acc = accuracy(t.model, enc, batch=n)  # one batch: the mask holds every example
            rows.append({"seed": s, "model": t.name, "knockout": label, "from_layer": first, "accuracy": acc})
    return {"rows": rows}


def knockout_table(runs: dict, data: TaskData, cfg: Config) -> pd.DataFrame:
    """Accuracy with attention from one position to another blocked in layers k..L-1 (all heads), per k."""
    rows = []
    for s, name, t in _each(runs):
        rows += _cached("knockout", cfg, [t], ["test"], data, {"rng": cfg.seed, "n": cfg.analysis_size},
                        partial(_knockout, t, s, data, cfg))["rows"]
    return pd.DataFrame(rows)


# ------------------------------------------------------------------------------------------------ sweep cost
def sweep_cost(model, data: TaskData, cfg: Config):
    """Batched activation-patching sweep over every head at the last token against its forward-pass lower bound
    (a timing of this run: never cached)."""
    enc = data.enc["pp"]
    _, source = cache_z(model, E.model_inputs(data.enc["pp_corrupt"]))
    metric = partial(answer_prob, answer=enc["answer_ids"])
    return sweep_cost_ratio(model, E.model_inputs(enc), source, enc["last"], metric, repeats=cfg.sweep_repeats)


# ------------------------------------------------------------------------------------------------ what claims read
@dataclass
class Measured:
    """Everything the verdicts read: the tables above (columns as their functions make them)."""
    accuracy: pd.DataFrame  # seed, model, accuracy
    answers: pd.DataFrame  # seed, model, in context, accuracy, query-blind baseline, box k
    faithfulness: pd.DataFrame
    overlap: pd.DataFrame
    dcm: pd.DataFrame
    cmap: pd.DataFrame
    knockout: pd.DataFrame
    n_boxes: int
    tuned: tuple[str, ...] = field(default=("arith_bound", "arith_pure", "track"))
