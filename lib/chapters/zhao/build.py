"""What chapter 02_zhao trains or loads, always through the cache: the base E0, the task data, the control models
C_t (one task each) and the multi-task model E1, and the pairs it offers the synthesis chapter.

A tuned model is either a LoRA adapter (Hu et al. 2021; the paper's recipe, used by the smoke, local and paper
profiles), cached as the adapter weights only and merged into a copy of the base before analysis, or a full
fine-tune of every weight (``lora_rank=0``, the tiny profile), cached with ``lib.models.save_model``.
"""
from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import torch

from lib import bases, models, train
from lib.artifacts import Artifact, is_cached, load_or_compute
from lib.chapters.zhao.config import Config
from lib.lenses import seed_at
from lib.tasks import instructions as tasks_mod

# The code that builds this chapter's artifacts: part of their cache keys (lib.artifacts.code_hash).
DATA_CODE = (__name__, "lib.tasks.instructions")
TUNED_CODE = (__name__, "lib.train", "lib.models", "lib.tasks.instructions")


# --------------------------------------------------------------------------- base model and data
def load_base(cfg: Config) -> bases.Base:
    """E0 (see `Config.base_source`) on the configured device, in the configured weights dtype."""
    base = bases.load(cfg.base_source, cfg.profile, device=cfg.device, allow_network=cfg.allow_network,
                      dtype=getattr(torch, cfg.dtype))
    base.model = base.model.to(dtype=getattr(torch, cfg.dtype)).eval()
    return base


def n_layers(model) -> int:
    return model.config.get_text_config().num_hidden_layers


def base_info(base: bases.Base) -> dict:
    """The base's size, for the page and the results record."""
    text = base.model.config.get_text_config()
    return {"name": base.source, "layers": text.num_hidden_layers, "d_model": text.hidden_size,
            "parameters (M)": models.n_params(base.model) / 1e6, "vocabulary": len(base.tokenizer)}


SOURCES = {"wordnet-base": {"topic", "pos", "isa", "antonym", "synonym", "reverse", "count"},
           "dict-gcide": {"gloss_match"}, "libpython3.11-minimal": {"code_type"},
           "libpython3.11-stdlib": {"code_type"}}  # the Debian packages each task is built from


def _source_stamps(names) -> list[str]:
    """The digests of the packages the tasks are built from (versions and checked file sums, lib.sources.digest:
    a changed or repaired file changes the key)."""
    from lib import sources
    return [f"{p} {sources.digest(p)}" for p, ts in SOURCES.items() if ts & set(names)]


def task_data(cfg: Config) -> tuple[dict[str, tasks_mod.TaskData], Artifact]:
    """Train / test examples of every task, built once and cached as JSON."""
    key = {"tasks": cfg.tasks, "n_train": cfg.n_train, "n_test": cfg.n_test, "seed": cfg.seed,
           "builder": tasks_mod.BUILD_VERSION}

    def compute(out: Path) -> dict:
        data = {t: tasks_mod.build(t, cfg.n_train, cfg.n_test, cfg.seed) for t in cfg.tasks}
        (out / "tasks.json").write_text(tasks_mod.to_json(data))
        return {"fingerprint": tasks_mod.fingerprint(data)}

    art = load_or_compute("zhao_tasks", key, compute, fingerprints=_source_stamps(cfg.tasks), code=DATA_CODE,
                          recompute=cfg.recompute)
    return tasks_mod.from_json((art.path / "tasks.json").read_text()), art


# --------------------------------------------------------------------------- tuned models (C_t, E1)
def mixture(cfg: Config, which: str) -> tuple[str, ...]:
    """The tasks a tuned model trains on: the seen tasks for "E1", the task itself for a control."""
    return cfg.seen if which == "E1" else (which,)


def train_config(cfg: Config, which: str, seed: int) -> train.TrainConfig:
    steps = cfg.e1_steps if which == "E1" else cfg.control_steps
    return train.TrainConfig(objective="causal_lm", n_steps=steps, batch_size=cfg.batch_size, lr=cfg.lr,
                             warmup_steps=steps // 10, schedule="cosine", seed=seed, lora_rank=cfg.lora_rank,
                             lora_alpha=cfg.lora_alpha, lora_targets=cfg.lora_targets, progress=False,
                             desc=f"{which} seed {seed}", bf16=cfg.use_bf16())


def _tuned_key(cfg: Config, which: str, seed: int) -> dict:
    tcfg = train_config(cfg, which, seed)
    return {"which": which, "mixture": mixture(cfg, which),
            "train": {k: v for k, v in tcfg.__dict__.items() if k not in ("progress", "desc")},
            "max_len": cfg.max_len, "template": cfg.template}


def _inject_lora(model, tcfg: train.TrainConfig):
    """The same adapters lib.train injects (so saved adapter weights load by name)."""
    from peft import LoraConfig, inject_adapter_in_model
    targets = tcfg.lora_targets or train.LORA_DEFAULT_TARGETS[model.config.model_type]
    lora = LoraConfig(r=tcfg.lora_rank, lora_alpha=tcfg.lora_alpha, target_modules=list(targets), lora_dropout=0.0,
                      fan_in_fan_out=model.config.model_type == "gpt2")
    return inject_adapter_in_model(lora, model)


def _materialise(base: bases.Base, art: Artifact, tcfg: train.TrainConfig):
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


def _train_tuned(cfg: Config, base: bases.Base, data: dict, which: str, seed: int, out: Path) -> dict:
    examples = [e for t in mixture(cfg, which) for e in data[t].train]
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


def tuned(cfg: Config, base: bases.Base, data: dict, data_art: Artifact, which: str, seed: int,
          cache_only: bool = False) -> tuple[torch.nn.Module, Artifact]:
    """C_t (``which`` = a task name) or E1 (``which`` = "E1") for one seed: trained once, then from the cache.

    ``cache_only=True`` raises FileNotFoundError instead of training (the synthesis chapter's access path).
    """
    key, fps = _tuned_key(cfg, which, seed), [base.key, data_art.metrics["fingerprint"]]
    if cache_only and not is_cached("zhao_tuned", key, fps, code=TUNED_CODE):
        raise FileNotFoundError(f"no cached {which} (seed {seed}) for profile {cfg.profile!r}: "
                                f"run notebook 02_zhao with this profile first")
    art = load_or_compute("zhao_tuned", key, lambda out: _train_tuned(cfg, base, data, which, seed, out),
                          fingerprints=fps, code=TUNED_CODE, recompute=cfg.recompute and not cache_only)
    return _materialise(base, art, train_config(cfg, which, seed)), art


# --------------------------------------------------------------------------- synthesis chapter
def _metric(model, inputs: dict) -> float:
    """Exact-match accuracy: every answer token is the model's argmax (greedy decoding reproduces the answer)."""
    answer = inputs["labels"].ne(-100)
    enc = tasks_mod.Encoded(inputs["input_ids"], inputs["attention_mask"], inputs["labels"],
                            answer.int().argmax(1) - 1)  # the last prompt token: just before the first answer token
    return float(tasks_mod.forward_rows(model, enc)["exact"].mean())


def synthesis_pairs(profile: str = "tiny", params: dict | None = None, seed_index: int = 0) -> list[dict]:
    """Base -> tuned pairs of this chapter for its `seed_index`-th seed, from the cache only: E0 -> E1 (seen-task
    mixture) and E0 -> C_t."""
    cfg = Config.load(profile, params)
    seed = seed_at(cfg.seeds, seed_index)
    base = load_base(cfg)
    data, data_art = task_data(cfg)
    out = []
    for which in ("E1", cfg.synthesis_task):
        names = mixture(cfg, which)
        model, _ = tuned(cfg, base, data, data_art, which, seed, cache_only=True)
        per = max(1, 256 // len(names))
        examples = [e for t in names for e in data[t].test[:per]][:256]
        enc = tasks_mod.encode(examples, base.tokenizer, cfg.max_len, cfg.template)
        out.append({"name": f"zhao: E0 -> {'E1 (multi-task)' if which == 'E1' else 'C_' + which}",
                    "base": base.model, "tuned": model, "tokenizer": base.tokenizer,
                    "inputs": enc.train_data(), "metric": _metric})
    return out
