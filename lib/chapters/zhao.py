"""Notebook 02_zhao: where instruction tuning makes representations task-specific (Zhao, Ziser & Cohen 2024).

MOSSA (Zhao, Ziser & Cohen 2022) compares an *experimental* model E with *control* models C_t, each trained on one
sub-population (here: one task) alone. Both read task t's test prompts; where the two agree (high linear CKA at
layer L), E carries the task-specific information that C_t learned. Two experimental models:

- E0: the pretrained base, untouched (how much of task t pre-training already encodes);
- E1: the base instruction-tuned on the mixture of the seen tasks (the "Llama 2-SFT" of the paper).

The representation is the hidden state of the last prompt token at every layer (Hugging Face ``hidden_states[1:]``,
the paper's choice); similarity is ``lib.similarity.linear_cka`` (feature-space form, biased as in the paper's code,
and debiased). A tuned model is either a LoRA adapter (Hu et al. 2021; the paper's recipe, used by the smoke,
local and paper profiles), cached as the adapter weights only and merged into a copy of the base before analysis,
or a full fine-tune of every weight (``lora_rank=0``, the tiny profile), cached with ``lib.models.save_model``.

Reference: Zhao, Ziser & Cohen, "Layer by Layer: Uncovering Where Multi-Task Learning Happens in
Instruction-Tuned Large Language Models", EMNLP 2024 (arXiv 2410.20008); code github.com/zsquaredz/layer_by_layer.
"""
from __future__ import annotations

import copy
import json
import sysconfig
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

import matplotlib.pyplot as plt

from lib import models, parallel, plotting, precision, train
from lib.artifacts import Artifact, artifact_key, load_or_compute, verify
from lib.config import Config as _Config, ConfigError, param
from lib.paths import cache_dir
from lib.results import Claim, measured
from lib.similarity import cka_by_layer
from lib.synthesis import seed_at
from lib.tasks import instructions as tasks_mod

ESTIMATORS = ("biased", "debiased")
PAPER = "Zhao, Ziser & Cohen 2024 (EMNLP), Layer by Layer"
PAPER_GROUPS = {"shared": (1, 9), "transition": (10, 15), "refinement": (16, 32)}  # layers of Llama-2-7B's 32
PAPER_LAYERS = 32
# Verdict thresholds (stated on the page): differences of mean CKA over seeds.
DROP_MIN = 0.05  # E0-C_t CKA: first layer minus last layer
GAIN_MIN = 0.05  # E1-C_t minus E0-C_t, mean over layers and seen tasks
KIND_GAP_MIN = 0.05  # semantic minus structured tasks, E0-C_t CKA averaged over layers
UNSEEN_SHARE = 0.5  # unseen-task gain as a share of the seen-task gain, for "reproduced"


@dataclass(frozen=True)
class Config(_Config):
    notebook = "02_zhao"
    tasks: tuple[str, ...] = param(tasks_mod.TASKS, choices=tasks_mod.TASKS, doc="instruction tasks (lib.tasks.instructions)")
    held_out: tuple[str, ...] = param(("gloss_match", "words2num"), choices=tasks_mod.TASKS,
                                      doc="tasks left out of E1's mixture (the unseen-task question)")
    n_train: int = param(800, lo=4, hi=10**6, doc="training examples per task")
    n_test: int = param(300, lo=4, hi=10**5, doc="test examples per task (CKA and accuracy)")
    n_seeds: int = param(3, lo=1, hi=10, doc="seeds of every tuned model (C_t and E1)")
    control_steps: int = param(100, lo=1, hi=10**6, doc="optimizer steps of each control model C_t")
    e1_steps: int = param(300, lo=1, hi=10**6, doc="optimizer steps of the multi-task model E1")
    batch_size: int = param(16, lo=1, hi=4096, doc="examples per step (the paper: 4 x 4 accumulation = 16)")
    lr: float = param(3e-3, lo=1e-7, hi=1.0, doc="peak learning rate (cosine decay, 10% warm-up)")
    lora_rank: int = param(8, lo=0, hi=1024, doc="LoRA rank (0 = full fine-tuning); the paper: 8")
    lora_alpha: float = param(16.0, lo=0.1, hi=1e4, doc="LoRA alpha; the paper: 16")
    lora_targets: tuple[str, ...] = param(("c_attn",), doc="module names given LoRA adapters (GPT-2's fused q/k/v "
                                          "projection is c_attn; Llama/Gemma: q_proj, v_proj)")
    max_len: int = param(80, lo=8, hi=4096, doc="longest prompt + answer in tokens (prompts cut from the left)")
    template: str = param("plain", choices=tuple(tasks_mod.TEMPLATES), doc="instruction template")
    estimator: str = param("biased", choices=ESTIMATORS, doc="CKA estimator behind the verdicts (paper: biased)")
    shared_below: float = param(0.33, lo=0.0, hi=1.0, doc="layer-group rule: gain share below which a layer is shared")
    refine_from: float = param(0.67, lo=0.0, hi=1.0, doc="layer-group rule: gain share from which layers refine")
    synthesis_task: str = param("count", choices=tasks_mod.TASKS, doc="the control model offered to the synthesis chapter")
    local_model: str = param("gemma-3-270m", choices=tuple(models.LOCAL_MODELS), doc="local profile: packaged model")
    paper_model: str = param("meta-llama/Llama-2-7b-hf", doc="paper profile: hub id or local folder")
    allow_network: bool = param(False, doc="paper profile: let load_hub reach the Hugging Face hub")
    bf16: bool | str = param("auto", choices=precision.SETTINGS, doc=precision.DOC + "; analysis stays float32")
    dtype: str = param("float32", choices=("float32", "bfloat16"), doc="weights dtype of the base (paper: bfloat16)")
    device: str = param("cpu", choices=("cpu", "cuda", "auto"), doc="where models run")
    threads: int = param(0, lo=0, hi=256, doc="torch CPU threads (0 = the process's own: `make book` gives each "
                         "kernel its share of the cores)")

    def validate(self):
        if len(set(self.tasks)) != len(self.tasks):
            raise ConfigError("parameter 'tasks' names a task twice")
        if missing := [t for t in self.held_out if t not in self.tasks]:
            raise ConfigError(f"parameter 'held_out' = {missing[0]!r} is not one of the chosen tasks")
        if len(self.tasks) - len(set(self.held_out)) < 1:
            raise ConfigError("parameter 'held_out' leaves no task for E1's mixture")
        if self.synthesis_task not in self.tasks:
            raise ConfigError(f"parameter 'synthesis_task' = {self.synthesis_task!r} is not one of the chosen tasks")
        if self.shared_below >= self.refine_from:
            raise ConfigError("parameter 'shared_below' must be smaller than 'refine_from'")

    @property
    def seen(self) -> tuple[str, ...]:
        return tuple(t for t in self.tasks if t not in self.held_out)


# --------------------------------------------------------------------------- base model and data
@dataclass
class Base:
    name: str
    model: torch.nn.Module
    tokenizer: object
    key: str  # the base's cache key: part of every tuned model's key

    @property
    def n_layers(self) -> int:
        return self.model.config.get_text_config().num_hidden_layers

    def info(self) -> dict:
        text = self.model.config.get_text_config()
        return {"name": self.name, "layers": self.n_layers, "d_model": text.hidden_size,
                "parameters (M)": models.n_params(self.model) / 1e6, "vocabulary": len(self.tokenizer)}


def _device(cfg: Config) -> torch.device:
    if cfg.device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(cfg.device)


def load_base_model(cfg: Config) -> Base:
    """E0: the study's GPT-style base (smoke / tiny), the packaged Gemma-3-270M (local) or the hub model (paper)."""
    dtype = getattr(torch, cfg.dtype)
    if cfg.profile == "local":  # raises MissingPackageError (with the pip command) when the package is absent
        model, tok = models.load_local(cfg.local_model)
        name, key = cfg.local_model, f"local:{cfg.local_model}"
    elif cfg.profile == "paper":
        model, tok = models.load_hub(cfg.paper_model, allow_network=cfg.allow_network, dtype=dtype)
        name, key = cfg.paper_model, f"hub:{cfg.paper_model}:{models.n_params(model)}"
    else:
        from lib.chapters.base_models import load_base
        b = load_base("gpt", cfg.profile)
        model, tok, name, key = b.model, b.tokenizer, "gpt (00_base_models)", b.artifact.key
    return Base(name, model.to(device=_device(cfg), dtype=dtype).eval(), tok, key)


def _source_stamps(names) -> list[str]:
    from lib import corpora
    needs = {"wordnet-base": {"topic", "pos", "isa", "antonym", "synonym", "reverse", "count"},
             "dict-gcide": {"gloss_match"}}
    stamps = [(corpora.package_dir(p) / ".complete").read_text().strip() for p, ts in needs.items() if ts & set(names)]
    return stamps + ["python " + sysconfig.get_python_version()]


def task_data(cfg: Config) -> tuple[dict[str, tasks_mod.TaskData], Artifact]:
    """Train / test examples of every task, built once and cached as JSON."""
    key = {"tasks": cfg.tasks, "n_train": cfg.n_train, "n_test": cfg.n_test, "seed": cfg.seed,
           "builder": tasks_mod.BUILD_VERSION}

    def compute(out: Path) -> dict:
        data = {t: tasks_mod.build(t, cfg.n_train, cfg.n_test, cfg.seed) for t in cfg.tasks}
        (out / "tasks.json").write_text(tasks_mod.to_json(data))
        return {"fingerprint": tasks_mod.fingerprint(data)}

    art = load_or_compute("zhao_tasks", key, compute, fingerprints=_source_stamps(cfg.tasks), recompute=cfg.recompute)
    return tasks_mod.from_json((art.path / "tasks.json").read_text()), art


def task_table(cfg: Config, data: dict) -> pd.DataFrame:
    rows = []
    for t, d in data.items():
        ex = d.test[0]
        rows.append({"task": t, "cluster": d.spec.cluster, "kind": d.spec.kind, "source": d.spec.source,
                     "in E1": t not in cfg.held_out, "instruction": d.spec.instruction,
                     "example": f"{ex.input} → {ex.answer}", "train / test": f"{len(d.train)} / {len(d.test)}"})
    return pd.DataFrame(rows).set_index("task")


# --------------------------------------------------------------------------- tuned models (C_t, E1)
def train_config(cfg: Config, which: str, seed: int) -> train.TrainConfig:
    steps = cfg.e1_steps if which == "E1" else cfg.control_steps
    return train.TrainConfig(objective="causal_lm", n_steps=steps, batch_size=cfg.batch_size, lr=cfg.lr,
                             warmup_steps=steps // 10, schedule="cosine", seed=seed, lora_rank=cfg.lora_rank,
                             lora_alpha=cfg.lora_alpha, lora_targets=cfg.lora_targets, progress=False,
                             desc=f"{which} seed {seed}", bf16=cfg.use_bf16())


def _tuned_key(cfg: Config, which: str, seed: int) -> dict:
    tcfg = train_config(cfg, which, seed)
    mixture = cfg.seen if which == "E1" else (which,)
    return {"which": which, "mixture": mixture, "train": {k: v for k, v in tcfg.__dict__.items()
                                                          if k not in ("progress", "desc")},
            "max_len": cfg.max_len, "template": cfg.template}


def _inject_lora(model, tcfg: train.TrainConfig):
    """The same adapters lib.train injects (so saved adapter weights load by name)."""
    from peft import LoraConfig, inject_adapter_in_model
    targets = tcfg.lora_targets or train.LORA_DEFAULT_TARGETS[model.config.model_type]
    lora = LoraConfig(r=tcfg.lora_rank, lora_alpha=tcfg.lora_alpha, target_modules=list(targets), lora_dropout=0.0,
                      fan_in_fan_out=model.config.model_type == "gpt2")
    return inject_adapter_in_model(lora, model)


def _materialise(base: Base, art: Artifact, tcfg: train.TrainConfig):
    """The tuned model of an artifact: a copy of the base with the adapter merged in (or the saved full model)."""
    if not tcfg.lora_rank:
        model, _ = models.load_model(art.path / "model")
        return model.to(device=base.model.device, dtype=base.model.dtype).eval()
    from safetensors.torch import load_file
    model = _inject_lora(copy.deepcopy(base.model), tcfg)
    weights = load_file(art.path / "adapter.safetensors")
    result = model.load_state_dict(weights, strict=False)
    lora_names = {n for n, _ in model.named_parameters() if "lora_" in n}
    if result.unexpected_keys or lora_names - set(weights):
        raise RuntimeError(f"adapter at {art.path} does not match the model's LoRA modules")
    return train.merge_lora(model).eval()


def _train_tuned(cfg: Config, base: Base, data: dict, which: str, seed: int, out: Path) -> dict:
    mixture = cfg.seen if which == "E1" else (which,)
    examples = [e for t in mixture for e in data[t].train]
    enc = tasks_mod.encode(examples, base.tokenizer, cfg.max_len, cfg.template)
    tcfg = train_config(cfg, which, seed)
    model = copy.deepcopy(base.model).train()
    hist = train.train(model, {k: v.to(model.device) for k, v in enc.train_data().items()}, tcfg)
    if tcfg.lora_rank:
        from safetensors.torch import save_file
        save_file({n: p.detach().cpu().contiguous() for n, p in model.named_parameters() if "lora_" in n},
                  out / "adapter.safetensors")
    else:
        models.save_model(model, base.tokenizer, out / "model")
    n_trainable = sum(p.numel() for n, p in model.named_parameters() if "lora_" in n or not tcfg.lora_rank)
    return {"final_loss": float(np.mean(hist.train_loss[-10:])), "train_seconds": hist.train_time,
            "n_trainable": n_trainable, "examples": len(examples)}


def tuned(cfg: Config, base: Base, data: dict, data_art: Artifact, which: str, seed: int,
          cache_only: bool = False) -> tuple[torch.nn.Module, Artifact]:
    """C_t (``which`` = a task name) or E1 (``which`` = "E1") for one seed: trained once, then from the cache.

    ``cache_only=True`` raises FileNotFoundError instead of training (the synthesis chapter's access path).
    """
    key, fps = _tuned_key(cfg, which, seed), [base.key, data_art.metrics["fingerprint"]]
    if cache_only:
        path = cache_dir() / "zhao_tuned" / artifact_key("zhao_tuned", key, fps)
        if not path.exists() or verify(path) is not None:
            raise FileNotFoundError(f"no cached {which} (seed {seed}) for profile {cfg.profile!r}: "
                                    f"run notebook 02_zhao with this profile first")
    art = load_or_compute("zhao_tuned", key, lambda out: _train_tuned(cfg, base, data, which, seed, out),
                          fingerprints=fps, recompute=cfg.recompute and not cache_only)
    return _materialise(base, art, train_config(cfg, which, seed)), art


# --------------------------------------------------------------------------- representations and CKA
def both_cka(X: np.ndarray, Y: np.ndarray) -> dict[str, np.ndarray]:
    """{"biased": (L,), "debiased": (L,)} CKA per layer between states (L, N, d) of two models on the same N prompts."""
    return {est: cka_by_layer(list(X), list(Y), debiased=est == "debiased") for est in ESTIMATORS}


@dataclass
class Results:
    """Everything the page shows. cka[(estimator, pair)] is (n_seeds, n_tasks, n_layers) for pair "E0" / "E1"
    (against C_t of the same seed) and (n_seed_pairs, n_tasks, n_layers) for "seed" (C_t against C_t of the next
    seed, a noise ceiling); accuracy has one row per (model, seed, task)."""

    tasks: list[str]
    held_out: list[str]
    n_layers: int
    cka: dict
    accuracy: pd.DataFrame
    training: pd.DataFrame
    base: dict
    seconds: dict

    def save(self, out: Path) -> None:
        np.savez(out / "cka.npz", **{f"{e}__{p}": v for (e, p), v in self.cka.items()})
        self.accuracy.to_json(out / "accuracy.json", orient="records")
        self.training.to_json(out / "training.json", orient="records")
        (out / "meta.json").write_text(json.dumps({"tasks": self.tasks, "held_out": self.held_out, "base": self.base,
                                                   "n_layers": self.n_layers, "seconds": self.seconds}))

    @classmethod
    def load(cls, path: Path) -> "Results":
        meta = json.loads((path / "meta.json").read_text())
        with np.load(path / "cka.npz", allow_pickle=False) as z:
            cka = {tuple(k.split("__")): z[k] for k in z.files}
        return cls(meta["tasks"], meta["held_out"], meta["n_layers"], cka, pd.read_json(path / "accuracy.json"),
                   pd.read_json(path / "training.json"), meta["base"], meta["seconds"])


class _Evaluator:
    """Scores models on the test prompts and returns their last-prompt-token states (one pass per model and task);
    keeps the accuracy rows and the time spent."""

    def __init__(self, cfg: Config, base: Base, data: dict):
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


def _compute(cfg: Config, base: Base, data: dict, data_art: Artifact) -> Results:
    evaluate, training, train_seconds, cpu_start = _Evaluator(cfg, base, data), [], 0.0, time.process_time()
    e0, keep = {}, cfg.n_seeds > 1  # states are kept across seeds only when reused (paper-scale states are large)
    cka = {(e, p): [] for e in ESTIMATORS for p in ("E0", "E1", "seed")}
    previous = None
    for seed in cfg.seeds:
        per = {(e, p): [] for e in ESTIMATORS for p in ("E0", "E1")}
        start = time.perf_counter()
        e1, art = tuned(cfg, base, data, data_art, "E1", seed)
        training.append({"model": "E1", "seed": seed, "task": "mixture", "cached": art.cached, **art.metrics})
        train_seconds += time.perf_counter() - start
        controls = {}
        for t in cfg.tasks:
            start = time.perf_counter()
            c_t, art = tuned(cfg, base, data, data_art, t, seed)
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
    empty = np.zeros((0, len(cfg.tasks), base.n_layers))
    cka = {k: np.stack(v) if v else empty for k, v in cka.items()}
    return Results(list(cfg.tasks), list(cfg.held_out), base.n_layers, cka, pd.DataFrame(evaluate.rows),
                   pd.DataFrame(training), base.info(), {"train": train_seconds, "evaluate": evaluate.seconds,
                                                         "cpu": time.process_time() - cpu_start})


def run(cfg: Config, base: Base | None = None) -> tuple[Results, Artifact]:
    """Train (or load) every model, read their states and compute CKA and accuracies; cached as one artifact."""
    with parallel.threads(cfg.threads):
        base = base or load_base_model(cfg)
        data, data_art = task_data(cfg)

        def compute(out: Path) -> dict:
            res = _compute(cfg, base, data, data_art)
            res.save(out)
            return res.seconds

        key = {k: v for k, v in cfg.key_dict().items() if k not in ("device", "threads", "synthesis_task")}
        art = load_or_compute("zhao_analysis", key, compute, fingerprints=[base.key, data_art.metrics["fingerprint"]],
                              recompute=cfg.recompute)
    return Results.load(art.path), art


# --------------------------------------------------------------------------- summaries
def accuracy_table(res: Results) -> pd.DataFrame:
    """Task accuracy per model: E0, E1 (mean ± sd over seeds) and the task's own control C_t."""
    a = res.accuracy
    out = pd.DataFrame(index=pd.Index(res.tasks, name="task"))
    out["E0 (base)"] = a[a.model == "E0"].set_index("task")["accuracy"]
    for name, label in (("E1", "E1 (multi-task)"), ("C", "C_t (own task)")):
        g = a[a.model == name].groupby("task")["accuracy"]
        out[label] = [f"{m:.2f} ± {s:.2f}" for m, s in zip(g.mean()[res.tasks], g.std(ddof=1).fillna(0)[res.tasks])]
    out["in E1"] = [t not in res.held_out for t in res.tasks]
    return out


def mean_accuracy(res: Results, model: str, tasks) -> float:
    a = res.accuracy
    return float(a[(a.model == model) & a.task.isin(list(tasks))]["accuracy"].mean())


def task_index(res: Results, names) -> list[int]:
    return [res.tasks.index(t) for t in names if t in res.tasks]


def layer_groups(gain: np.ndarray, shared_below: float, refine_from: float) -> list[str]:
    """Split layers into shared / transition / refinement from a per-layer gain curve (n_layers,).

    Rule: r = gain / max(gain) (negatives count as 0). Shared: the layers before the first one with
    r >= shared_below. Refinement: from the first later layer with r >= refine_from to the end. Transition: in
    between (possibly empty). With no positive gain every layer is "shared".
    """
    g = np.clip(np.asarray(gain, dtype=float), 0, None)
    n = len(g)
    if g.max() <= 1e-9:
        return ["shared"] * n
    r = g / g.max()
    first_t = int(np.argmax(r >= shared_below))
    first_r = first_t + int(np.argmax(r[first_t:] >= refine_from))
    return ["shared"] * first_t + ["transition"] * (first_r - first_t) + ["refinement"] * (n - first_r)


def gain_curve(res: Results, estimator: str, tasks) -> np.ndarray:
    """Per seed and layer: mean over `tasks` of CKA(E1, C_t) - CKA(E0, C_t). Shape (n_seeds, n_layers)."""
    idx = task_index(res, tasks)
    return (res.cka[(estimator, "E1")][:, idx] - res.cka[(estimator, "E0")][:, idx]).mean(1)


def group_table(res: Results, cfg: Config) -> pd.DataFrame:
    """Our layer groups (from the seed-mean gain curve) beside the paper's, with relative depths."""
    groups = layer_groups(gain_curve(res, cfg.estimator, cfg.seen).mean(0), cfg.shared_below, cfg.refine_from)
    rows = []
    for name, (lo, hi) in PAPER_GROUPS.items():
        ours = [i + 1 for i, g in enumerate(groups) if g == name]
        rows.append({"group": name, "paper layers (of 32)": f"{lo}-{hi}",
                     "paper relative depth": f"{(lo - 1) / PAPER_LAYERS:.2f}-{hi / PAPER_LAYERS:.2f}",
                     f"our layers (of {res.n_layers})": f"{ours[0]}-{ours[-1]}" if ours else "none",
                     "our relative depth": f"{(ours[0] - 1) / res.n_layers:.2f}-{ours[-1] / res.n_layers:.2f}"
                     if ours else "-"})
    return pd.DataFrame(rows).set_index("group")


def encoded_table(res: Results, cfg: Config) -> pd.DataFrame:
    """Per task: E0-C_t and E1-C_t CKA averaged over layers (mean over seeds), kind and cluster; sorted."""
    e0 = res.cka[(cfg.estimator, "E0")].mean(axis=(0, 2))
    e1 = res.cka[(cfg.estimator, "E1")].mean(axis=(0, 2))
    acc = res.accuracy.groupby(["model", "task"])["accuracy"].mean()
    rows = [{"task": t, "kind": tasks_mod.SPECS[t].kind, "cluster": tasks_mod.SPECS[t].cluster,
             "E0-C_t CKA": e0[i], "E1-C_t CKA": e1[i], "C_t accuracy": acc[("C", t)],
             "C_t gain over E0": acc[("C", t)] - acc[("E0", t)], "in E1": t not in res.held_out}
            for i, t in enumerate(res.tasks)]
    return pd.DataFrame(rows).set_index("task").sort_values("E0-C_t CKA", ascending=False).round(3)


# --------------------------------------------------------------------------- claims and verdicts
def _verdict(values, threshold: float) -> tuple[str, str]:
    v = np.asarray(values, dtype=float)
    if v.mean() >= threshold and (v > 0).all():
        return "reproduced", f"mean {v.mean():.3f} >= {threshold:.3g} and positive for every seed"
    if v.mean() > 0:
        return "partly", f"mean {v.mean():.3f} is positive but below {threshold:.3g} or not positive for every seed"
    return "not reproduced", f"mean {v.mean():.3f} <= 0"


def _claim(id_, claim, paper, values, threshold, **extra) -> Claim:
    text, mean, sd, n = measured(values)
    verdict, reason = _verdict(values, threshold)
    return Claim(id_, claim, paper, text, verdict, reason, mean, sd, n, extra)


def claims(res: Results, cfg: Config) -> list[Claim]:
    est, seen = cfg.estimator, cfg.seen
    e0 = res.cka[(est, "E0")]  # (S, T, L)
    drop = e0[:, :, 0].mean(1) - e0[:, :, -1].mean(1)
    gain_seen = gain_curve(res, est, seen).mean(1)
    kind_gap = _kind_gap(res, est, res.tasks)
    learned_gap = _kind_gap(res, est, learned_tasks(res))
    out = [
        _claim("pretrained_similarity_falls_with_depth",
               "The pre-trained model's similarity to single-task controls is high in early layers and falls in later ones.",
               "qualitative (CKA high early, decreasing with depth)", drop, DROP_MIN,
               metric=f"mean E0-C_t CKA ({est}), first layer minus last layer"),
        _claim("sft_closer_to_controls",
               "The instruction-tuned model is much closer to the single-task controls than the pre-trained model.",
               "qualitative (much higher CKA across layers)", gain_seen, GAIN_MIN,
               metric=f"CKA(E1, C_t) - CKA(E0, C_t) ({est}), mean over layers and seen tasks"),
        _claim("semantic_tasks_already_encoded",
               "Semantic tasks (sentiment, paraphrase) are already encoded by pre-training; structured-output tasks "
               "(translation, summarisation) need instruction tuning.",
               "qualitative (high vs low E0-C_t CKA)", kind_gap, KIND_GAP_MIN,
               metric=f"E0-C_t CKA ({est}) over layers: semantic minus structured tasks",
               gap_among_learned_tasks=float(learned_gap.mean()), learned_tasks=learned_tasks(res)),
        groups_claim(res, cfg),
    ]
    learned = learned_tasks(res)
    out[2].reason += (f"; among the {len(learned)} tasks whose controls beat the base, semantic minus structured is "
                      f"{np.mean(learned_gap):.3f}")
    if res.held_out:
        gain_unseen = gain_curve(res, est, res.held_out).mean(1)
        share = float(gain_unseen.mean() / gain_seen.mean()) if abs(gain_seen.mean()) > 1e-9 else float("nan")
        c = _claim("unseen_tasks", "The tuned model's move towards the controls extends to tasks it never saw.",
                   "qualitative (asked in the paper; exact split not retrieved)", gain_unseen,
                   UNSEEN_SHARE * max(float(gain_seen.mean()), 1e-9),
                   metric=f"CKA gain (E1 - E0, {est}) on held-out tasks", seen_gain=float(gain_seen.mean()),
                   share_of_seen_gain=share)
        out.append(c)
    return out


def learned_tasks(res: Results, margin: float = 0.05) -> list[str]:
    """Tasks whose control beats the base's accuracy by more than `margin` (mean over seeds)."""
    acc = res.accuracy.groupby(["model", "task"])["accuracy"].mean()
    return [t for t in res.tasks if acc[("C", t)] > acc[("E0", t)] + margin]


def _kind_gap(res: Results, est: str, tasks) -> np.ndarray:
    """Per seed: E0-C_t CKA (mean over layers) of the semantic minus the structured tasks among `tasks`
    (NaN when one kind is missing)."""
    e0 = res.cka[(est, "E0")]
    sem = task_index(res, [t for t in tasks if tasks_mod.SPECS[t].kind == "semantic"])
    struct = task_index(res, [t for t in tasks if tasks_mod.SPECS[t].kind == "structured"])
    if not sem or not struct:
        return np.full(len(e0), np.nan)
    return e0[:, sem].mean(axis=(1, 2)) - e0[:, struct].mean(axis=(1, 2))


def groups_claim(res: Results, cfg: Config) -> Claim:
    """Shared -> transition -> refinement, with the transition near the paper's relative depth 0.28-0.47."""
    gains = gain_curve(res, cfg.estimator, cfg.seen)
    per_seed = [layer_groups(g, cfg.shared_below, cfg.refine_from) for g in gains]
    groups = layer_groups(gains.mean(0), cfg.shared_below, cfg.refine_from)
    L = res.n_layers
    trans = [i + 1 for i, g in enumerate(groups) if g == "transition"]
    centre = np.mean([(i - 0.5) / L for i in trans]) if trans else float("nan")
    paper_lo, paper_hi = (PAPER_GROUPS["transition"][0] - 1) / PAPER_LAYERS, PAPER_GROUPS["transition"][1] / PAPER_LAYERS
    three = all(g in groups for g in ("shared", "transition", "refinement"))
    near = trans and paper_lo - 1 / L <= centre <= paper_hi + 1 / L
    ordered = "shared" in groups and "refinement" in groups
    verdict, reason = (("reproduced", "three groups in order, transition within one layer of the paper's depth")
                       if three and near else
                       ("partly", "the gain rises with depth (shared before refinement) but the transition differs")
                       if ordered else ("not reproduced", "no rise of the gain with depth"))
    ours = " / ".join(f"{g}: " + (", ".join(str(i + 1) for i, x in enumerate(groups) if x == g) or "none")
                      for g in PAPER_GROUPS) + f" (layers of {L}; seed-mean gain)"
    stable = float(np.mean([s == groups for s in per_seed]))
    return Claim("layer_groups", "Layers split into shared, transition and refinement groups; the transition sits "
                 "at about a third of the depth.", "layers 1-9 / 10-15 / 16-32 of 32", ours, verdict, reason,
                 float(centre) if trans else None, None, len(per_seed),
                 {"groups": groups, "per_seed": per_seed, "share_of_seeds_agreeing": stable,
                  "rule": f"r = gain / max gain; shared r < {cfg.shared_below}, refinement r >= {cfg.refine_from}"})


def verdict_table(cl: list[Claim]) -> pd.DataFrame:
    return pd.DataFrame([{"claim": c.claim, "paper": c.paper, "ours": c.ours, "verdict": c.verdict, "why": c.reason}
                         for c in cl]).set_index("claim")


def models_record(res: Results, cfg: Config) -> dict:
    tuning = f"LoRA r={cfg.lora_rank} alpha={cfg.lora_alpha} on {', '.join(cfg.lora_targets)}" if cfg.lora_rank \
        else "full fine-tuning"
    return {"E0": res.base, "C_t": {"count": len(res.tasks) * cfg.n_seeds, "tuning": tuning, "steps": cfg.control_steps},
            "E1": {"count": cfg.n_seeds, "tuning": tuning, "steps": cfg.e1_steps, "tasks": list(cfg.seen)}}


# --------------------------------------------------------------------------- synthesis chapter
def _metric(model, inputs: dict) -> float:
    """Exact-match accuracy: every answer token is the model's argmax (greedy decoding reproduces the answer)."""
    enc = tasks_mod.Encoded(inputs["input_ids"], inputs["attention_mask"], inputs["labels"],
                            inputs["attention_mask"].sum(1) - 1)
    return float(tasks_mod.forward_rows(model, enc)["exact"].mean())


def synthesis_pairs(profile: str = "tiny", params: dict | None = None, seed_index: int = 0) -> list[dict]:
    """Base -> tuned pairs of this chapter for its `seed_index`-th seed, from the cache only: E0 -> E1 (seen-task
    mixture) and E0 -> C_t."""
    cfg = Config.load(profile, params)
    seed = seed_at(cfg.seeds, seed_index)
    base = load_base_model(cfg)
    data, data_art = task_data(cfg)
    out = []
    for which, names in (("E1", cfg.seen), (cfg.synthesis_task, (cfg.synthesis_task,))):
        model, _ = tuned(cfg, base, data, data_art, which, seed, cache_only=True)
        per = max(1, 256 // len(names))
        examples = [e for t in names for e in data[t].test[:per]][:256]
        enc = tasks_mod.encode(examples, base.tokenizer, cfg.max_len, cfg.template)
        out.append({"name": f"zhao: E0 -> {'E1 (multi-task)' if which == 'E1' else 'C_' + which}",
                    "base": base.model, "tuned": model, "tokenizer": base.tokenizer,
                    "inputs": enc.train_data(), "metric": _metric})
    return out


# --------------------------------------------------------------------------- page: figures and computed prose
def _mean_sd(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and sample sd over the first axis (sd 0 with one row)."""
    return x.mean(0), (x.std(0, ddof=1) if len(x) > 1 else np.zeros_like(x[0]))


def show_setup(res: Results, cfg: Config) -> None:
    b = res.base
    tuning = (f"LoRA (rank {cfg.lora_rank}, alpha {cfg.lora_alpha:g}, on {', '.join(cfg.lora_targets)})"
              if cfg.lora_rank else "full fine-tuning of every weight")
    plotting.say(
        f"Profile `{cfg.profile}`. Base E0: {b['name']}, {b['layers']} layers, d_model {b['d_model']}, "
        f"{b['parameters (M)']:.2f} M parameters, vocabulary {b['vocabulary']}. Tuning: {tuning}; "
        f"{len(res.tasks)} controls × {cfg.n_seeds} seeds at {cfg.control_steps} steps and {cfg.n_seeds} multi-task "
        f"models E1 at {cfg.e1_steps} steps, batch {cfg.batch_size}, on {len(cfg.seen)} seen tasks "
        f"(held out: {', '.join(res.held_out) or 'none'}). Computing them (when the cached artifact was made) took "
        f"{res.seconds['train']:.0f} s of training and {res.seconds['evaluate']:.0f} s of evaluation, wall time, "
        f"and {res.seconds.get('cpu', float('nan')):.0f} s of process CPU time (threads: {cfg.threads or 'default'}).")


def say_accuracy(res: Results, cfg: Config) -> None:
    seen, held = cfg.seen, res.held_out
    a = res.accuracy
    c_seen = float(a[(a.model == "C") & a.task.isin(list(seen))]["accuracy"].mean())
    learned = [t for t in res.tasks if a[(a.model == "C") & (a.task == t)]["accuracy"].mean()
               > a[(a.model == "E0") & (a.task == t)]["accuracy"].mean() + 0.05]
    plotting.say(
        f"On the seen tasks, mean accuracy is {mean_accuracy(res, 'E0', seen):.2f} for E0, "
        f"{mean_accuracy(res, 'E1', seen):.2f} for E1 and {c_seen:.2f} for the task's own control; on the held-out "
        f"tasks E1 reaches {mean_accuracy(res, 'E1', held):.2f} (E0 {mean_accuracy(res, 'E0', held):.2f}). "
        f"Controls beat the base by more than 0.05 on {len(learned)} of {len(res.tasks)} tasks "
        f"({', '.join(learned) or 'none'}); a control near chance still learned the answer format, but little of "
        f"the task, and its representations are then compared all the same.")


def _label(res: Results, t: str) -> str:
    return f"{t}*" if t in res.held_out else t


def plot_heatmaps(res: Results, cfg: Config) -> None:
    fig, axes = plt.subplots(1, 2, figsize=(9, 0.32 * len(res.tasks) + 1.6), sharey=True)
    for ax, pair in zip(axes, ("E0", "E1")):
        m = res.cka[(cfg.estimator, pair)].mean(0)  # (tasks, layers)
        im = ax.imshow(m, vmin=0, vmax=1, cmap="viridis", aspect="auto")
        ax.set(title=f"CKA({pair}, C_t), {cfg.estimator}", xlabel="layer", xticks=range(res.n_layers),
               xticklabels=range(1, res.n_layers + 1), yticks=range(len(res.tasks)),
               yticklabels=[_label(res, t) for t in res.tasks])
        ax.grid(False)
        for (i, j), v in np.ndenumerate(m):
            if res.n_layers <= 12:
                ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=7, color="w" if v < 0.6 else "k")
    fig.colorbar(im, ax=axes, shrink=0.8)
    plt.show()


def cluster_curves(res: Results, cfg: Config, pair: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per cluster: (mean, sd) over seeds of the cluster-mean CKA per layer."""
    out = {}
    for cluster in tasks_mod.CLUSTERS:
        idx = task_index(res, [t for t in res.tasks if tasks_mod.SPECS[t].cluster == cluster])
        if idx and len(res.cka[(cfg.estimator, pair)]):
            out[cluster] = _mean_sd(res.cka[(cfg.estimator, pair)][:, idx].mean(1))
    return out


def plot_clusters(res: Results, cfg: Config) -> None:
    curves = {p: cluster_curves(res, cfg, p) for p in ("E0", "E1", "seed")}
    n = len(curves["E0"])
    fig, axes = plt.subplots(1, n, figsize=(2.3 * n, 2.8), sharey=True, squeeze=False)
    layers = np.arange(1, res.n_layers + 1)
    for ax, cluster in zip(axes[0], curves["E0"]):
        for pair, color in (("E0", plotting.PALETTE["base"]), ("E1", plotting.PALETTE["tuned"])):
            m, s = curves[pair][cluster]
            ax.plot(layers, m, "o-", color=color, ms=3, label=f"{pair}–C_t")
            ax.fill_between(layers, m - s, m + s, color=color, alpha=0.25)
        if cluster in curves["seed"]:
            ax.plot(layers, curves["seed"][cluster][0], "--", color=plotting.PALETTE["control"], label="C_t–C_t'")
        ax.set(title=cluster, xlabel="layer", ylim=(0, 1.02), xticks=layers)
    axes[0, 0].set_ylabel(f"linear CKA ({cfg.estimator})")
    fig.legend(*axes[0, 0].get_legend_handles_labels(), loc="lower center", ncol=3, fontsize=8,
               bbox_to_anchor=(0.5, -0.08))
    plt.tight_layout()
    plt.show()


def say_curves(res: Results, cfg: Config) -> None:
    e0, e1 = (res.cka[(cfg.estimator, p)].mean(axis=(0, 1)) for p in ("E0", "E1"))
    seed = res.cka[(cfg.estimator, "seed")]
    ceiling = f" Two controls of the same task from different seeds agree at {seed.mean():.2f} on average." \
        if len(seed) else ""
    plotting.say(
        f"Averaged over tasks and seeds, CKA(E0, C_t) goes from {e0[0]:.2f} at layer 1 to {e0[-1]:.2f} at layer "
        f"{res.n_layers}; CKA(E1, C_t) from {e1[0]:.2f} to {e1[-1]:.2f}.{ceiling}")


def plot_groups(res: Results, cfg: Config) -> None:
    gains = gain_curve(res, cfg.estimator, cfg.seen)
    groups = layer_groups(gains.mean(0), cfg.shared_below, cfg.refine_from)
    layers = np.arange(1, res.n_layers + 1)
    fig, ax = plt.subplots(figsize=(6.5, 3))
    colors = {"shared": "#dddddd", "transition": "#f5c28a", "refinement": "#a8d5a2"}
    for i, g in enumerate(groups):
        ax.axvspan(i + 0.5, i + 1.5, color=colors[g], alpha=0.6, label=g if g not in groups[:i] else None)
    for g in gains:
        ax.plot(layers, g, color=plotting.PALETTE["tuned"], lw=0.8, alpha=0.5)
    ax.plot(layers, gains.mean(0), "o-", color=plotting.PALETTE["tuned"], lw=2, label="mean over seeds")
    ax.axhline(0, color="k", lw=0.6)
    ax.set(xlabel="layer", ylabel="CKA(E1,C_t) − CKA(E0,C_t)", xticks=layers, xlim=(0.5, res.n_layers + 0.5))
    top = ax.secondary_xaxis("top", functions=(lambda x: x / res.n_layers, lambda d: d * res.n_layers))
    top.set_xlabel("relative depth")
    ax.legend(fontsize=7, loc="upper left")
    plt.tight_layout()
    plt.show()


def say_groups(res: Results, cfg: Config) -> None:
    c = groups_claim(res, cfg)
    plotting.say(f"The rule finds {c.ours}; the paper's groups are layers 1–9 / 10–15 / 16–32 of 32. "
                 f"{c.extra['share_of_seeds_agreeing']:.0%} of the seeds, each taken alone, give the same groups.")


def plot_encoded(table: pd.DataFrame) -> None:
    fig, ax = plt.subplots(figsize=(7.5, 2.8))
    colors = [plotting.PALETTE["base"] if k == "semantic" else plotting.PALETTE["tuned"] for k in table["kind"]]
    bars = ax.bar(range(len(table)), table["E0-C_t CKA"], color=colors)
    for bar, gain in zip(bars, table["C_t gain over E0"]):
        if gain <= 0.05:  # the control did not beat the base: nothing task-specific to encode
            bar.set_hatch("///")
            bar.set_alpha(0.5)
    ax.set(xticks=range(len(table)), ylabel="E0–C_t CKA (mean over layers)", ylim=(0, 1))
    ax.set_xticklabels([f"{t}*" if not e else t for t, e in zip(table.index, table["in E1"])], rotation=45,
                       ha="right")
    handles = [plt.Rectangle((0, 0), 1, 1, color=plotting.PALETTE[p]) for p in ("base", "tuned")]
    handles.append(plt.Rectangle((0, 0), 1, 1, facecolor="w", edgecolor="k", hatch="///"))
    ax.legend(handles, ["semantic", "structured", "control ≤ base + 0.05"], fontsize=8)
    plt.tight_layout()
    plt.show()


def say_encoded(res: Results, cfg: Config, table: pd.DataFrame) -> None:
    from scipy.stats import spearmanr

    by_kind = table.groupby("kind")["E0-C_t CKA"].mean()
    rho = spearmanr(table["E0-C_t CKA"], table["C_t gain over E0"]).statistic if len(table) > 2 else float("nan")
    plotting.say(
        f"Mean E0–C_t CKA over layers: {by_kind.get('semantic', float('nan')):.3f} for the semantic tasks and "
        f"{by_kind.get('structured', float('nan')):.3f} for the structured ones. Highest: "
        f"{', '.join(table.index[:3])}; lowest: {', '.join(table.index[-3:])}. Across tasks, the E0–C_t similarity "
        f"and how much the control gained in accuracy over the base have a Spearman correlation of {rho:.2f}: "
        f"a high similarity can also mean that the control learned little, not only that pre-training already "
        f"had the task.")


def plot_unseen(res: Results, cfg: Config) -> None:
    if not res.held_out:
        plotting.say("*No task is held out in this configuration.*")
        return
    layers = np.arange(1, res.n_layers + 1)
    panels = [(t, task_index(res, [t])) for t in res.held_out] + [("seen tasks (mean)", task_index(res, cfg.seen))]
    fig, axes = plt.subplots(1, len(panels), figsize=(2.8 * len(panels), 2.8), sharey=True, squeeze=False)
    for ax, (title, idx) in zip(axes[0], panels):
        for pair, color in (("E0", plotting.PALETTE["base"]), ("E1", plotting.PALETTE["tuned"])):
            m, s = _mean_sd(res.cka[(cfg.estimator, pair)][:, idx].mean(1))
            ax.plot(layers, m, "o-", color=color, ms=3, label=f"{pair}–C_t")
            ax.fill_between(layers, m - s, m + s, color=color, alpha=0.25)
        ax.set(title=title, xlabel="layer", xticks=layers, ylim=(0, 1.02))
    axes[0, 0].set_ylabel(f"linear CKA ({cfg.estimator})")
    axes[0, 0].legend(fontsize=7)
    plt.tight_layout()
    plt.show()


def say_unseen(res: Results, cfg: Config) -> None:
    if not res.held_out:
        return
    unseen = gain_curve(res, cfg.estimator, res.held_out).mean(1)
    seen = gain_curve(res, cfg.estimator, cfg.seen).mean(1)
    plotting.say(
        f"Mean gain over layers of E1 over E0 in CKA with the controls: {measured(unseen)[0]} on the held-out tasks "
        f"against {measured(seen)[0]} on the seen ones.")


def estimator_table(res: Results) -> pd.DataFrame:
    """Mean CKA over tasks, layers and seeds for each pair and estimator (and the first and last layer)."""
    rows = []
    for pair in ("E0", "E1", "seed"):
        for est in ESTIMATORS:
            x = res.cka[(est, pair)]
            if len(x):
                m = x.mean(axis=(0, 1))
                rows.append({"pair": {"seed": "C_t–C_t' (seeds)"}.get(pair, f"{pair}–C_t"), "estimator": est,
                             "mean": x.mean(), "layer 1": m[0], f"layer {res.n_layers}": m[-1]})
    return pd.DataFrame(rows).set_index(["pair", "estimator"]).round(3)


def say_thresholds() -> None:
    plotting.say(f"Thresholds: DROP_MIN = {DROP_MIN}, GAIN_MIN = {GAIN_MIN}, KIND_GAP_MIN = {KIND_GAP_MIN}, "
                 f"UNSEEN_SHARE = {UNSEEN_SHARE}.")
