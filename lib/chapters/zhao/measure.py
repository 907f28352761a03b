"""What chapter 02_zhao measures: every model's task accuracy and its last-prompt-token states, CKA between E0 / E1
and each task's control C_t layer by layer, the cross-task baseline (CKA between C_s and C_t on t's prompts, s != t:
what any control tuned in the same format shares with C_t) and direct-encoding probes on E0's and C_t's states
(cached as one artifact); then one summary per page section.

    res, art = measure.run(cfg)                  # trains (through build) or loads everything
    measure.gain_curve(res, "debiased", tasks)   # (n_seeds, n_layers): CKA(E1, C_t) - CKA(E0, C_t)

No plotting and no prose here: models in, arrays, DataFrames and dataclasses out.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from lib import bases, parallel
from lib.artifacts import Artifact, load_or_compute
from lib.chapters.zhao import build
from lib.chapters.zhao.config import Config
from lib.similarity import cka_by_layer
from lib.tasks import instructions as tasks_mod

ESTIMATORS = ("biased", "debiased")
PAIRS = ("E0", "E1", "seed")
CROSS = "cross"  # cka[(estimator, CROSS)]: (n_seeds, n_tasks, n_tasks, n_layers), see Results
PROBE_FOLDS = 5  # cross-validation folds of the direct-encoding probes; a probe class needs this many examples
CROSS_OTHERS = 4  # controls of other tasks read on each task t for its cross-task baseline (all when fewer exist)
# The code that computes the analysis artifact: part of its key.
CODE = (__name__, *build.TUNED_CODE, "lib.similarity", "lib.probing")


def both_cka(X: np.ndarray, Y: np.ndarray) -> dict[str, np.ndarray]:
    """{"biased": (L,), "debiased": (L,)} CKA per layer between states (L, N, d) of two models on the same N prompts."""
    return {est: cka_by_layer(list(X), list(Y), debiased=est == "debiased") for est in ESTIMATORS}


def probe_target(examples, tokenizer) -> np.ndarray:
    """What a direct-encoding probe reads off a task's last-prompt-token state: the label (label tasks) or the
    answer's first token (generation tasks), as strings (N,)."""
    if examples[0].choices:
        return np.array([e.answer for e in examples])
    return np.array([str(i) for i in tasks_mod.first_answer_tokens(examples, tokenizer)])


def probe_curve(states: np.ndarray, y: np.ndarray) -> np.ndarray:
    """(n_layers,) cross-validated accuracy of a linear probe for `y` on states (n_layers, N, d), on the rows whose
    class has at least PROBE_FOLDS examples; NaN when fewer than two such classes remain."""
    from lib.probing import probe_accuracy
    values, counts = np.unique(y, return_counts=True)
    keep = np.isin(y, values[counts >= PROBE_FOLDS])
    if len(np.unique(y[keep])) < 2:
        return np.full(len(states), np.nan)
    return np.array([probe_accuracy(X[keep], y[keep], folds=PROBE_FOLDS) for X in states])


def probe_chance(y: np.ndarray) -> float:
    """The majority-class rate among the rows `probe_curve` keeps (NaN when it keeps none)."""
    values, counts = np.unique(y, return_counts=True)
    kept = counts[counts >= PROBE_FOLDS]
    return float(kept.max() / kept.sum()) if len(kept) >= 2 else float("nan")


@dataclass
class Results:
    """Everything the page shows. cka[(estimator, pair)] is (n_seeds, n_tasks, n_layers) for pair "E0" / "E1"
    (against C_t of the same seed), (n_seeds - 1, n_tasks, n_layers) for "seed" (C_t against C_t of the next
    seed, a noise ceiling) and (n_seeds, n_tasks, n_tasks, n_layers) for "cross": [seed, s, t] is CKA(C_s, C_t) on
    task t's prompts (NaN on the diagonal), the cross-task baseline; accuracy has one row per (model, seed, task);
    n_test is the fewest test prompts of a task (the n of every CKA). probe["E0"] (1, n_tasks, n_layers) and
    probe["C"] (n_seeds, n_tasks, n_layers) are direct-encoding probe accuracies on E0's and C_t's states,
    probe["chance"] (n_tasks,) their majority rates."""

    tasks: list[str]
    held_out: list[str]
    n_layers: int
    cka: dict
    accuracy: pd.DataFrame
    training: pd.DataFrame
    base: dict
    seconds: dict
    n_test: int = 0
    probe: dict = field(default_factory=dict)

    @property
    def seen(self) -> list[str]:
        return [t for t in self.tasks if t not in self.held_out]

    def save(self, out: Path) -> None:
        np.savez(out / "cka.npz", **{f"{e}__{p}": v for (e, p), v in self.cka.items()})
        np.savez(out / "probe.npz", **self.probe)
        self.accuracy.to_json(out / "accuracy.json", orient="records")
        self.training.to_json(out / "training.json", orient="records")
        (out / "meta.json").write_text(json.dumps({"tasks": self.tasks, "held_out": self.held_out, "base": self.base,
                                                   "n_layers": self.n_layers, "seconds": self.seconds,
                                                   "n_test": self.n_test}))

    @classmethod
    def load(cls, path: Path) -> "Results":
        meta = json.loads((path / "meta.json").read_text())
        with np.load(path / "cka.npz", allow_pickle=False) as z:
            cka = {tuple(k.split("__")): z[k] for k in z.files}
        probe = {}
        if (path / "probe.npz").exists():
            with np.load(path / "probe.npz", allow_pickle=False) as z:
                probe = {k: z[k] for k in z.files}
        return cls(meta["tasks"], meta["held_out"], meta["n_layers"], cka, pd.read_json(path / "accuracy.json"),
                   pd.read_json(path / "training.json"), meta["base"], meta["seconds"], meta.get("n_test", 0), probe)


class _Evaluator:
    """Scores models on the test prompts and returns their last-prompt-token states (one pass per model and task);
    keeps the accuracy rows and the time spent."""

    def __init__(self, cfg: Config, base: bases.Base, data: dict):
        self.cfg, self.base, self.data, self.rows, self.seconds = cfg, base, data, [], 0.0
        # the logits of one batch are batch x length x vocabulary floats: keep them near 1 GB (Gemma: 262k words)
        self.batch_size = max(1, min(64, 2**28 // (cfg.max_len * len(base.tokenizer))))

    def __call__(self, model, name: str, seed: int, task: str) -> np.ndarray:
        start = time.perf_counter()
        metrics, states = tasks_mod.evaluate(model, self.base.tokenizer, self.data[task].test, self.cfg.max_len,
                                             self.cfg.template, states=True, batch_size=self.batch_size)
        self.rows.append({"model": name, "seed": seed, "task": task, **metrics})
        self.seconds += time.perf_counter() - start
        return states  # (n_layers, n_test, d_model)

    def states(self, model, task: str) -> np.ndarray:
        """(n_layers, n_test, d_model) last-prompt-token states only (no scoring): a control read on another task."""
        start = time.perf_counter()
        enc = tasks_mod.encode(self.data[task].test, self.base.tokenizer, self.cfg.max_len, self.cfg.template)
        out = tasks_mod.last_states(model, enc, self.batch_size)
        self.seconds += time.perf_counter() - start
        return out


def cross_partners(n_tasks: int, k: int = CROSS_OTHERS) -> list[list[int]]:
    """For each task t (an index), the other tasks s whose control is read on t's prompts for the cross-task
    baseline: all of them when there are at most `k`, else `k` at offsets spread evenly around the task list (so
    each control also serves exactly `k` tasks, and a cluster's neighbour is not always among them)."""
    if n_tasks - 1 <= k:
        return [[s for s in range(n_tasks) if s != t] for t in range(n_tasks)]
    offsets = sorted({min(n_tasks - 1, max(1, round(i * n_tasks / (k + 1)))) for i in range(1, k + 1)})
    return [[(t + o) % n_tasks for o in offsets] for t in range(n_tasks)]


def _cross_task(cfg: Config, base, data, data_art, evaluate: _Evaluator, own: dict, seed: int) -> dict:
    """{estimator: (n_tasks, n_tasks, n_layers)}: [s, t] = CKA(C_s, C_t) on task t's prompts for the partners s of
    each t (`cross_partners`; NaN elsewhere and for s = t). Every control learns the same template, answer-only
    loss and read-out position: what C_s shares with C_t on t's prompts is format adaptation, the baseline a
    task-specific similarity must beat."""
    T, L = len(cfg.tasks), len(next(iter(own.values())))
    out = {e: np.full((T, T, L), np.nan) for e in ESTIMATORS}
    partners = cross_partners(T)
    for i, s in enumerate(cfg.tasks):
        c_s, _ = build.tuned(cfg, base, data, data_art, s, seed)  # cached by now
        for j, t in enumerate(cfg.tasks):
            if i in partners[j]:
                for e, v in both_cka(evaluate.states(c_s, t), own[t]).items():
                    out[e][i, j] = v
        del c_s
    return out


def _compute(cfg: Config, base: bases.Base, data: dict, data_art: Artifact) -> Results:
    evaluate, training, train_seconds, cpu_start = _Evaluator(cfg, base, data), [], 0.0, time.process_time()
    e0 = {}  # E0's states per task: read once, kept for the probes
    cka = {(e, p): [] for e in ESTIMATORS for p in (*PAIRS, CROSS)}
    probe_c, previous = [], None
    for seed in cfg.seeds:
        per = {(e, p): [] for e in ESTIMATORS for p in ("E0", "E1")}
        start = time.perf_counter()
        e1, art = build.tuned(cfg, base, data, data_art, "E1", seed)
        training.append({"model": "E1", "seed": seed, "task": "mixture", "cached": art.cached, **art.metrics})
        train_seconds += time.perf_counter() - start
        controls = {}
        for t in cfg.tasks:
            start = time.perf_counter()
            c_t, art = build.tuned(cfg, base, data, data_art, t, seed)
            training.append({"model": "C", "seed": seed, "task": t, "cached": art.cached, **art.metrics})
            train_seconds += time.perf_counter() - start
            controls[t] = states = evaluate(c_t, "C", seed, t)
            if t not in e0:
                e0[t] = evaluate(base.model, "E0", -1, t)
            for pair, X in (("E0", e0[t]), ("E1", evaluate(e1, "E1", seed, t))):
                for e, v in both_cka(X, states).items():
                    per[(e, pair)].append(v)
            del c_t
        del e1
        for (e, pair), v in per.items():
            cka[(e, pair)].append(np.stack(v))
        for e, v in _cross_task(cfg, base, data, data_art, evaluate, controls, seed).items():
            cka[(e, CROSS)].append(v)
        if previous is not None:  # the same task's control from the previous seed: a noise ceiling
            ceiling = [both_cka(previous[t], controls[t]) for t in cfg.tasks]
            for e in ESTIMATORS:
                cka[(e, "seed")].append(np.stack([c[e] for c in ceiling]))
        probe_c.append(_probes_of(cfg, base, data, controls))
        previous = controls
    L = build.n_layers(base.model)
    probe_e0 = _probes_of(cfg, base, data, e0)
    probe = {"E0": probe_e0[None], "C": np.stack(probe_c),
             "chance": np.array([probe_chance(probe_target(data[t].test, base.tokenizer)) for t in cfg.tasks])}
    empty = np.zeros((0, len(cfg.tasks), L))
    cka = {k: np.stack(v) if v else empty for k, v in cka.items()}
    return Results(list(cfg.tasks), list(cfg.held_out), L, cka, pd.DataFrame(evaluate.rows), pd.DataFrame(training),
                   build.base_info(base), {"train": train_seconds, "evaluate": evaluate.seconds,
                                          "cpu": time.process_time() - cpu_start},
                   min(len(data[t].test) for t in cfg.tasks), probe)


def _probes_of(cfg: Config, base, data, states: dict) -> np.ndarray:
    """(n_tasks, n_layers) direct-encoding probe accuracy on one model's states per task."""
    return np.stack([probe_curve(states[t], probe_target(data[t].test, base.tokenizer)) for t in cfg.tasks])


def run(cfg: Config, base: bases.Base | None = None) -> tuple[Results, Artifact]:
    """Train (or load) every model, read their states and compute CKA and accuracies; cached as one artifact."""
    with parallel.threads(cfg.threads):
        base = base or build.load_base(cfg)
        data, data_art = build.task_data(cfg)

        def compute(out: Path) -> dict:
            res = _compute(cfg, base, data, data_art)
            res.save(out)
            return res.seconds

        key = {k: v for k, v in cfg.key_dict().items() if k not in ("device", "threads", "synthesis_task")}
        art = load_or_compute("zhao_analysis", key, compute, fingerprints=[base.key, data_art.metrics["fingerprint"]],
                              code=CODE, recompute=cfg.recompute)
    return Results.load(art.path), art


# --------------------------------------------------------------------------- section 0: the models' accuracy
def task_accuracy(res: Results, model: str) -> pd.Series:
    """Accuracy per task of "E0", "E1" or "C" (the task's own control), mean over seeds."""
    a = res.accuracy
    return a[a.model == model].groupby("task")["accuracy"].mean().reindex(res.tasks)


def mean_accuracy(res: Results, model: str, tasks) -> float:
    return float(task_accuracy(res, model).reindex(list(tasks)).mean()) if len(tasks) else float("nan")


def control_gain(res: Results) -> pd.Series:
    """Per task: the control's accuracy minus the base's (mean over seeds): did C_t learn its task?"""
    return task_accuracy(res, "C") - task_accuracy(res, "E0")


def seed_gains(res: Results, model: str = "C") -> pd.DataFrame:
    """(task x seed) accuracy of `model` ("C": the task's own control, or "E1") minus the base's, per seed."""
    a = res.accuracy
    per = a[a.model == model].pivot_table(index="task", columns="seed", values="accuracy").reindex(res.tasks)
    return per.sub(task_accuracy(res, "E0"), axis=0)


def learned_tasks(res: Results, margin: float, tasks=None, model: str = "C") -> list[str]:
    """The tasks (of `tasks`, default all) on which `model` ("C": each task's own control; "E1") beats the base's
    accuracy by more than `margin` in every seed."""
    worst = seed_gains(res, model).min(axis=1)
    return [t for t in (res.tasks if tasks is None else tasks) if worst.get(t, -np.inf) > margin]


def task_index(res: Results, names) -> list[int]:
    return [res.tasks.index(t) for t in names if t in res.tasks]


# --------------------------------------------------------------------------- section 1: CKA over layers
def cluster_curves(res: Results, estimator: str, pair: str) -> dict[str, np.ndarray]:
    """Per task cluster: (n_seeds, n_layers) cluster-mean CKA of `pair` ("E0", "E1" or "seed")."""
    out = {}
    for cluster in tasks_mod.CLUSTERS:
        idx = task_index(res, [t for t in res.tasks if tasks_mod.SPECS[t].cluster == cluster])
        if idx and len(res.cka[(estimator, pair)]):
            out[cluster] = res.cka[(estimator, pair)][:, idx].mean(1)
    return out


def layer_means(res: Results, estimator: str, pair: str) -> np.ndarray:
    """(n_layers,) CKA of `pair` averaged over tasks and seeds."""
    return res.cka[(estimator, pair)].mean(axis=(0, 1))


def estimator_table(res: Results) -> pd.DataFrame:
    """Mean CKA over tasks, layers and seeds for each pair and estimator (and the first and last layer)."""
    rows = []
    for pair in (*PAIRS, CROSS):
        for est in ESTIMATORS:
            x = res.cka[(est, pair)] if pair != CROSS else cross_baseline(res, est)
            if len(x):
                m = x.mean(axis=(0, 1))
                rows.append({"pair": {"seed": "C_t–C_t' (seeds)", CROSS: "C_s–C_t (other tasks)"}.get(pair, f"{pair}–C_t"), "estimator": est,
                             "mean": x.mean(), "layer 1": m[0], f"layer {res.n_layers}": m[-1]})
    return pd.DataFrame(rows).set_index(["pair", "estimator"]).round(3)


def cross_baseline(res: Results, estimator: str) -> np.ndarray:
    """(n_seeds, n_tasks, n_layers): per task t, the mean over the other tasks s of CKA(C_s, C_t) on t's prompts,
    the similarity any model tuned in the same format reaches with C_t."""
    return np.nanmean(res.cka[(estimator, CROSS)], axis=1)


def net_gain_curve(res: Results, estimator: str, tasks) -> np.ndarray:
    """(n_seeds, n_layers): mean over `tasks` of CKA(E1, C_t) minus the cross-task baseline of t."""
    idx = task_index(res, tasks)
    return (res.cka[(estimator, "E1")][:, idx] - cross_baseline(res, estimator)[:, idx]).mean(1)


def surviving_gains(res: Results, estimator: str, tasks) -> tuple[np.ndarray, np.ndarray]:
    """Per seed: (how many of `tasks` have a positive gain CKA(E1, C_t) - CKA(E0, C_t), how many of those also
    beat the cross-task baseline), both over the mean of the layers."""
    idx = task_index(res, tasks)
    e1 = res.cka[(estimator, "E1")][:, idx].mean(2)
    gain = e1 - res.cka[(estimator, "E0")][:, idx].mean(2)
    net = e1 - cross_baseline(res, estimator)[:, idx].mean(2)
    return (gain > 0).sum(1), ((gain > 0) & (net > 0)).sum(1)


# --------------------------------------------------------------------------- section 2: layer groups
def task_gains(res: Results, estimator: str, tasks) -> np.ndarray:
    """(n_seeds, len(tasks), n_layers): CKA(E1, C_t) - CKA(E0, C_t) per seed, task and layer."""
    idx = task_index(res, tasks)
    return res.cka[(estimator, "E1")][:, idx] - res.cka[(estimator, "E0")][:, idx]


def gain_curve(res: Results, estimator: str, tasks) -> np.ndarray:
    """Per seed and layer: mean over `tasks` of CKA(E1, C_t) - CKA(E0, C_t). Shape (n_seeds, n_layers)."""
    return task_gains(res, estimator, tasks).mean(1)


def layer_groups(gain: np.ndarray, shared_below: float, refine_from: float) -> list[str]:
    """Split layers into shared / transition / refinement from a per-layer gain curve (n_layers,).

    r = gain / max(gain) (negatives count as 0). Shared: the layers before the first one with r >= shared_below.
    Refinement: from the first later layer with r >= refine_from to the end. Transition: in between (possibly
    empty). With no positive gain every layer is "shared".
    """
    g = np.clip(np.asarray(gain, dtype=float), 0, None)
    n = len(g)
    if g.max() <= 1e-9:
        return ["shared"] * n
    r = g / g.max()
    first_t = int(np.argmax(r >= shared_below))
    first_r = first_t + int(np.argmax(r[first_t:] >= refine_from))
    return ["shared"] * first_t + ["transition"] * (first_r - first_t) + ["refinement"] * (n - first_r)


def transition_centre(groups: list[str]) -> float:
    """Relative depth (0-1) of the middle of the transition layers; NaN without a transition."""
    L = len(groups)
    trans = [i + 1 for i, g in enumerate(groups) if g == "transition"]
    return float(np.mean([(i - 0.5) / L for i in trans])) if trans else float("nan")


# --------------------------------------------------------------------------- section 3: what pre-training encodes
def comparable_types(tasks, min_per_kind: int = 1) -> list[str]:
    """The answer types among which `tasks` hold at least `min_per_kind` semantic and structured tasks each."""
    kinds = {(tasks_mod.SPECS[t].answer, tasks_mod.SPECS[t].kind) for t in tasks}
    count = {a: {k: sum(1 for t in tasks if (tasks_mod.SPECS[t].answer, tasks_mod.SPECS[t].kind) == (a, k))
                 for k in tasks_mod.KINDS} for a, _ in kinds}
    return [a for a in tasks_mod.ANSWER_TYPES if a in count and min(count[a].values()) >= min_per_kind]


def _within_types(per_task: np.ndarray, res: Results, tasks, min_per_kind: int = 1) -> np.ndarray:
    """Per seed: semantic minus structured mean of `per_task` (n_seeds, n_tasks), within each answer type holding
    both kinds, averaged over those types (NaN when none does)."""
    gaps = []
    for a in comparable_types(tasks, min_per_kind):
        of = [t for t in tasks if tasks_mod.SPECS[t].answer == a]
        sem = task_index(res, [t for t in of if tasks_mod.SPECS[t].kind == "semantic"])
        struct = task_index(res, [t for t in of if tasks_mod.SPECS[t].kind == "structured"])
        gaps.append(per_task[:, sem].mean(1) - per_task[:, struct].mean(1))
    return np.mean(gaps, axis=0) if gaps else np.full(len(per_task), np.nan)


def kind_gap(res: Results, estimator: str, tasks, min_per_kind: int = 1) -> np.ndarray:
    """Per seed: E0-C_t CKA (mean over layers) of the semantic minus the structured tasks among `tasks`, within
    one answer type (see `_within_types`)."""
    return _within_types(res.cka[(estimator, "E0")].mean(2), res, tasks, min_per_kind)


def probe_best(res: Results, model: str) -> np.ndarray:
    """(n_seeds or 1, n_tasks): the best layer's probe accuracy on `model`'s ("E0" or "C") states."""
    if not res.probe:
        return np.zeros((0, len(res.tasks)))
    x = res.probe[model]
    return np.where(np.isnan(x).all(2), np.nan, np.nanmax(np.nan_to_num(x, nan=-np.inf), axis=2))


def encoding_deficit(res: Results) -> np.ndarray:
    """(n_seeds, n_tasks): how much better C_t's states decode the task's target than E0's (best layer of each):
    near 0 means pre-training already laid the information out linearly."""
    return probe_best(res, "C") - probe_best(res, "E0")


def deficit_gap(res: Results, tasks, min_per_kind: int = 1) -> np.ndarray:
    """Per seed: encoding deficit of the structured minus the semantic tasks among `tasks`, within one answer
    type (positive: the semantic tasks are more "already encoded")."""
    return -_within_types(encoding_deficit(res), res, tasks, min_per_kind)


def probe_table(res: Results) -> pd.DataFrame:
    """Per task: the probe's chance rate, its best-layer accuracy on E0 and on C_t (mean over seeds) and the
    deficit, with kind, answer type and whether the control learned its task (gain in accuracy over E0)."""
    e0, c, gain = probe_best(res, "E0")[0], probe_best(res, "C").mean(0), control_gain(res)
    rows = [{"task": t, "kind": tasks_mod.SPECS[t].kind, "answer": tasks_mod.SPECS[t].answer,
             "probe chance": res.probe["chance"][i], "probe on E0": e0[i], "probe on C_t": c[i],
             "deficit (C_t - E0)": c[i] - e0[i], "C_t gain over E0": gain[t]} for i, t in enumerate(res.tasks)]
    return pd.DataFrame(rows).set_index("task").round(3)


def encoded_table(res: Results, estimator: str) -> pd.DataFrame:
    """Per task: E0-C_t and E1-C_t CKA averaged over layers (mean over seeds), kind, cluster and how much the
    control gained in accuracy over the base; sorted by E0-C_t CKA."""
    e0 = res.cka[(estimator, "E0")].mean(axis=(0, 2))
    e1 = res.cka[(estimator, "E1")].mean(axis=(0, 2))
    acc_c, gain = task_accuracy(res, "C"), control_gain(res)
    rows = [{"task": t, "kind": tasks_mod.SPECS[t].kind, "cluster": tasks_mod.SPECS[t].cluster,
             "answer": tasks_mod.SPECS[t].answer,
             "E0-C_t CKA": e0[i], "E1-C_t CKA": e1[i], "C_t accuracy": acc_c[t], "C_t gain over E0": gain[t],
             "in E1": t not in res.held_out} for i, t in enumerate(res.tasks)]
    return pd.DataFrame(rows).set_index("task").sort_values("E0-C_t CKA", ascending=False).round(3)


# --------------------------------------------------------------------------- section 4: unseen tasks
def mean_gain(res: Results, estimator: str, tasks) -> np.ndarray:
    """(n_seeds,) the gain curve of `tasks` averaged over layers."""
    return gain_curve(res, estimator, tasks).mean(1)
