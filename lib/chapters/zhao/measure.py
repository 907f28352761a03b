"""What chapter 02_zhao measures: every model's task accuracy and its last-prompt-token states, and CKA between
E0 / E1 and each task's control C_t, layer by layer (cached as one artifact); then one summary per page section.

    res, art = measure.run(cfg)                  # trains (through build) or loads everything
    measure.gain_curve(res, "debiased", tasks)   # (n_seeds, n_layers): CKA(E1, C_t) - CKA(E0, C_t)

No plotting and no prose here: models in, arrays, DataFrames and dataclasses out.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
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
# The code that computes the analysis artifact: part of its key.
CODE = (__name__, *build.TUNED_CODE, "lib.similarity")


def both_cka(X: np.ndarray, Y: np.ndarray) -> dict[str, np.ndarray]:
    """{"biased": (L,), "debiased": (L,)} CKA per layer between states (L, N, d) of two models on the same N prompts."""
    return {est: cka_by_layer(list(X), list(Y), debiased=est == "debiased") for est in ESTIMATORS}


@dataclass
class Results:
    """Everything the page shows. cka[(estimator, pair)] is (n_seeds, n_tasks, n_layers) for pair "E0" / "E1"
    (against C_t of the same seed) and (n_seeds - 1, n_tasks, n_layers) for "seed" (C_t against C_t of the next
    seed, a noise ceiling); accuracy has one row per (model, seed, task); n_test is the fewest test prompts of a
    task (the n of every CKA)."""

    tasks: list[str]
    held_out: list[str]
    n_layers: int
    cka: dict
    accuracy: pd.DataFrame
    training: pd.DataFrame
    base: dict
    seconds: dict
    n_test: int = 0

    @property
    def seen(self) -> list[str]:
        return [t for t in self.tasks if t not in self.held_out]

    def save(self, out: Path) -> None:
        np.savez(out / "cka.npz", **{f"{e}__{p}": v for (e, p), v in self.cka.items()})
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
        return cls(meta["tasks"], meta["held_out"], meta["n_layers"], cka, pd.read_json(path / "accuracy.json"),
                   pd.read_json(path / "training.json"), meta["base"], meta["seconds"], meta.get("n_test", 0))


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


def _compute(cfg: Config, base: bases.Base, data: dict, data_art: Artifact) -> Results:
    evaluate, training, train_seconds, cpu_start = _Evaluator(cfg, base, data), [], 0.0, time.process_time()
    e0, keep = {}, cfg.n_seeds > 1  # states are kept across seeds only when reused (paper-scale states are large)
    cka = {(e, p): [] for e in ESTIMATORS for p in PAIRS}
    previous = None
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
            states = evaluate(c_t, "C", seed, t)
            controls[t] = states if keep else None
            x0 = e0[t] if t in e0 else evaluate(base.model, "E0", -1, t)
            e0[t] = x0 if keep else None
            for pair, X in (("E0", x0), ("E1", evaluate(e1, "E1", seed, t))):
                for e, v in both_cka(X, states).items():
                    per[(e, pair)].append(v)
            del c_t
        for (e, pair), v in per.items():
            cka[(e, pair)].append(np.stack(v))
        if previous is not None:  # the same task's control from the previous seed: a noise ceiling
            ceiling = [both_cka(previous[t], controls[t]) for t in cfg.tasks]
            for e in ESTIMATORS:
                cka[(e, "seed")].append(np.stack([c[e] for c in ceiling]))
        previous = controls
    L = build.n_layers(base.model)
    empty = np.zeros((0, len(cfg.tasks), L))
    cka = {k: np.stack(v) if v else empty for k, v in cka.items()}
    return Results(list(cfg.tasks), list(cfg.held_out), L, cka, pd.DataFrame(evaluate.rows), pd.DataFrame(training),
                   build.base_info(base), {"train": train_seconds, "evaluate": evaluate.seconds,
                                          "cpu": time.process_time() - cpu_start},
                   min(len(data[t].test) for t in cfg.tasks))


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


def learned_tasks(res: Results, margin: float, tasks=None) -> list[str]:
    """The tasks (of `tasks`, default all) whose control beats the base's accuracy by more than `margin`."""
    gain = control_gain(res)
    return [t for t in (res.tasks if tasks is None else tasks) if gain[t] > margin]


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
    for pair in PAIRS:
        for est in ESTIMATORS:
            x = res.cka[(est, pair)]
            if len(x):
                m = x.mean(axis=(0, 1))
                rows.append({"pair": {"seed": "C_t–C_t' (seeds)"}.get(pair, f"{pair}–C_t"), "estimator": est,
                             "mean": x.mean(), "layer 1": m[0], f"layer {res.n_layers}": m[-1]})
    return pd.DataFrame(rows).set_index(["pair", "estimator"]).round(3)


# --------------------------------------------------------------------------- section 2: layer groups
def gain_curve(res: Results, estimator: str, tasks) -> np.ndarray:
    """Per seed and layer: mean over `tasks` of CKA(E1, C_t) - CKA(E0, C_t). Shape (n_seeds, n_layers)."""
    idx = task_index(res, tasks)
    return (res.cka[(estimator, "E1")][:, idx] - res.cka[(estimator, "E0")][:, idx]).mean(1)


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
def kind_gap(res: Results, estimator: str, tasks) -> np.ndarray:
    """Per seed: E0-C_t CKA (mean over layers) of the semantic minus the structured tasks among `tasks`
    (NaN when one kind is missing)."""
    e0 = res.cka[(estimator, "E0")]
    sem = task_index(res, [t for t in tasks if tasks_mod.SPECS[t].kind == "semantic"])
    struct = task_index(res, [t for t in tasks if tasks_mod.SPECS[t].kind == "structured"])
    if not sem or not struct:
        return np.full(len(e0), np.nan)
    return e0[:, sem].mean(axis=(1, 2)) - e0[:, struct].mean(axis=(1, 2))


def encoded_table(res: Results, estimator: str) -> pd.DataFrame:
    """Per task: E0-C_t and E1-C_t CKA averaged over layers (mean over seeds), kind, cluster and how much the
    control gained in accuracy over the base; sorted by E0-C_t CKA."""
    e0 = res.cka[(estimator, "E0")].mean(axis=(0, 2))
    e1 = res.cka[(estimator, "E1")].mean(axis=(0, 2))
    acc_c, gain = task_accuracy(res, "C"), control_gain(res)
    rows = [{"task": t, "kind": tasks_mod.SPECS[t].kind, "cluster": tasks_mod.SPECS[t].cluster,
             "E0-C_t CKA": e0[i], "E1-C_t CKA": e1[i], "C_t accuracy": acc_c[t], "C_t gain over E0": gain[t],
             "in E1": t not in res.held_out} for i, t in enumerate(res.tasks)]
    return pd.DataFrame(rows).set_index("task").sort_values("E0-C_t CKA", ascending=False).round(3)


# --------------------------------------------------------------------------- section 4: unseen tasks
def mean_gain(res: Results, estimator: str, tasks) -> np.ndarray:
    """(n_seeds,) the gain curve of `tasks` averaged over layers."""
    return gain_curve(res, estimator, tasks).mean(1)
