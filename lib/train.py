"""One training loop for every model and objective in the study.

``train(model, data, cfg)`` runs ``cfg.n_steps`` AdamW steps on a Hugging Face model, in place, and returns a
:class:`History`. The loop is deliberately plain (nanoGPT-like): draw a minibatch, forward with ``labels`` (the HF
model computes the loss; causal models shift labels internally), backward, clip, step; :func:`loop_overhead`
measures it against a bare forward/backward/step loop. Objectives:

- ``causal_lm``: next-token prediction. ``data["labels"]`` (N, T) with -100 on positions not trained is how loss
  masking works: fine-tuning on answers only sets -100 on the prompt tokens. Without labels, labels = input_ids
  (padding, where ``attention_mask`` is 0, set to -100).
- ``masked_lm``: BERT's objective (Devlin et al. 2019). Masking is drawn on the fly, per minibatch, from a seeded
  ``torch.Generator``: each non-special position is selected with probability ``mlm_probability``; a selected
  position becomes [MASK] 80% of the time, a uniformly random token 10%, stays unchanged 10%; the loss is on
  selected positions only (labels -100 elsewhere), and the MLM head runs on those positions only
  (:func:`masked_lm_loss`). So each epoch sees fresh masks, yet a run is reproducible.
- ``classification``: ``data["labels"]`` (N,) class ids; the model is an ``AutoModelForSequenceClassification``.

``lora_rank > 0`` trains LoRA adapters (Hu et al. 2021, via peft) injected into the model's own modules, base
weights frozen; :func:`merge_lora` folds them back so analyses see plain HF modules. ``freeze_embeddings`` keeps
every ``nn.Embedding`` (and a tied LM head) fixed.

Reproducibility: the seed in :class:`TrainConfig` fixes minibatch order (epoch-wise permutations from one
generator), the MLM masks (a second generator) and dropout / LoRA init (the torch RNG, seeded inside
``fork_rng`` so the caller's global RNG is untouched). On CPU two runs with one seed give bitwise-equal losses.
"""
from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from tqdm import tqdm

from lib.progress import Ticker

OBJECTIVES = ("causal_lm", "masked_lm", "classification")
SCHEDULES = ("constant", "cosine", "linear")
DATA_KEYS = ("input_ids", "attention_mask", "labels", "token_type_ids", "special_tokens_mask")
# Default LoRA targets per model_type when TrainConfig.lora_targets is empty (the attention q/v projections).
LORA_DEFAULT_TARGETS = {"gpt2": ("c_attn",), "bert": ("query", "value"), "roberta-prelayernorm": ("query", "value"),
                        **dict.fromkeys(("llama", "mistral", "qwen2", "gemma3_text"), ("q_proj", "v_proj"))}


@dataclass(frozen=True)
class TrainConfig:
    """Everything that decides a training run. ``eval_every=0`` evaluates only at the end; ``grad_clip=0`` is
    no clipping; ``lora_rank=0`` is full fine-tuning. Weight decay applies to matrices only (not biases / norms)."""

    objective: str
    n_steps: int
    batch_size: int
    lr: float
    weight_decay: float = 0.0
    warmup_steps: int = 0
    schedule: str = "constant"
    grad_clip: float = 1.0
    eval_every: int = 0
    seed: int = 0
    bf16: bool = False
    mlm_probability: float = 0.15
    lora_rank: int = 0
    lora_alpha: float = 16
    lora_targets: tuple[str, ...] = ()
    freeze_embeddings: bool = False
    progress: bool = True
    desc: str = "train"

    def __post_init__(self):
        for name, allowed in (("objective", OBJECTIVES), ("schedule", SCHEDULES)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")
        for name, low in (("n_steps", 1), ("batch_size", 1), ("eval_every", 0), ("seed", 0), ("lora_rank", 0)):
            _int(name, getattr(self, name), low)
        _int("warmup_steps", self.warmup_steps, 0, self.n_steps)
        for name, positive in (("lr", True), ("lora_alpha", True), ("weight_decay", False), ("grad_clip", False)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0 or (positive and not value):
                raise ValueError(f"{name} must be a number {'>' if positive else '>='} 0, got {value!r}")
        if not 0 < self.mlm_probability < 1:
            raise ValueError(f"mlm_probability must be in (0, 1), got {self.mlm_probability!r}")
        for name, kind in (("bf16", bool), ("freeze_embeddings", bool), ("progress", bool), ("desc", str)):
            if not isinstance(getattr(self, name), kind):
                raise ValueError(f"{name} must be a {kind.__name__}, got {getattr(self, name)!r}")
        targets = (self.lora_targets,) if isinstance(self.lora_targets, str) else tuple(self.lora_targets)
        if not all(isinstance(t, str) and t for t in targets):
            raise ValueError(f"lora_targets must be module names (str), got {self.lora_targets!r}")
        object.__setattr__(self, "lora_targets", targets)  # frozen: normalise a list to a hashable tuple


def _int(name, value, low, high=None):
    if not isinstance(value, int) or isinstance(value, bool) or value < low or (high is not None and value > high):
        bounds = f">= {low}" if high is None else f"in [{low}, {high}]"
        raise ValueError(f"{name} must be an int {bounds}, got {value!r}")


@dataclass
class History:
    """What a run did: per-step loss and lr, eval records ``{"step": s, **metrics}``, throughput. ``tokens_per_s``
    counts input tokens (non-padding ones given an attention mask) over training time, evaluation excluded."""

    steps: list[int] = field(default_factory=list)
    train_loss: list[float] = field(default_factory=list)
    lr: list[float] = field(default_factory=list)
    evals: list[dict] = field(default_factory=list)
    tokens_seen: int = 0
    train_time: float = 0.0
    wall_time: float = 0.0

    @property
    def tokens_per_s(self) -> float:
        return self.tokens_seen / self.train_time if self.train_time else 0.0

    def to_frame(self):
        """A pandas DataFrame indexed by step: train_loss, lr and one ``eval_<metric>`` column (NaN between evals)."""
        import pandas as pd

        frame = pd.DataFrame({"train_loss": self.train_loss, "lr": self.lr}, index=pd.Index(self.steps, name="step"))
        if not self.evals:
            return frame
        return frame.join(pd.DataFrame(self.evals).set_index("step").add_prefix("eval_"), how="outer")


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Learning rate of optimizer step ``step`` (0-based): linear warmup to ``cfg.lr``, then the schedule decays
    towards 0 (cosine: ``lr * (1 + cos(pi * p)) / 2``; linear: ``lr * (1 - p)``; p = progress after warmup)."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, cfg.n_steps - cfg.warmup_steps)
    if cfg.schedule == "cosine":
        return cfg.lr * 0.5 * (1.0 + math.cos(math.pi * progress))
    if cfg.schedule == "linear":
        return cfg.lr * (1.0 - progress)
    return cfg.lr


def mask_tokens(input_ids: torch.Tensor, mask_token_id: int, vocab_size: int, special_mask: torch.Tensor,
                probability: float = 0.15, generator: torch.Generator | None = None):
    """BERT's 80/10/10 masking. input_ids (B, T); special_mask (B, T) bool, True where never to mask.

    Returns (masked input_ids (B, T), labels (B, T): the original id at selected positions, -100 elsewhere).
    At least one position is selected when any is eligible (an all -100 batch would give a NaN loss).
    """
    probs = torch.full(input_ids.shape, probability).masked_fill_(special_mask, 0.0)
    selected = torch.bernoulli(probs, generator=generator).bool()
    eligible = (~special_mask).flatten().nonzero().squeeze(1)
    if not selected.any() and len(eligible):
        selected.view(-1)[eligible[torch.randint(len(eligible), (1,), generator=generator)]] = True
    labels = input_ids.masked_fill(~selected, -100)
    roll = torch.rand(input_ids.shape, generator=generator)
    random_ids = torch.randint(vocab_size, input_ids.shape, generator=generator)
    masked = input_ids.masked_fill(selected & (roll < 0.8), mask_token_id)
    return torch.where(selected & (roll >= 0.8) & (roll < 0.9), random_ids, masked), labels


def train(model, data: dict, cfg: TrainConfig, eval_data: dict | None = None,
          eval_fn: Callable | None = None, mask_token_id: int | None = None, vocab_size: int | None = None,
          special_ids=None) -> History:
    """Train ``model`` (a HF model whose head matches ``cfg.objective``) in place; return the :class:`History`.

    ``data``: equal-length tensors: "input_ids" (N, T) long; optional "attention_mask" (N, T), "labels" ((N, T)
    for LM objectives, (N,) for classification), "token_type_ids", "special_tokens_mask" (N, T).
    ``eval_data`` (same layout) gives the recorded "loss" (and "accuracy" for classification), and
    ``eval_fn(model) -> dict`` extra metrics, at each evaluation: every ``cfg.eval_every`` steps and after the
    last step, in eval mode under no_grad. masked_lm only: ``mask_token_id`` (required), ``vocab_size``
    (default: the model's), ``special_ids`` never masked (default: the model config's pad / bos / eos / cls /
    sep ids; ``mask_token_id`` always).
    """
    n = _check_data(data, cfg)
    special = None
    if cfg.objective == "masked_lm":
        if mask_token_id is None:
            raise ValueError("mask_token_id is required for objective='masked_lm'")
        vocab_size = vocab_size or model.config.vocab_size
        names = ("pad_token_id", "bos_token_id", "eos_token_id", "cls_token_id", "sep_token_id")
        special_ids = [getattr(model.config, a, None) for a in names] if special_ids is None else special_ids
        special = torch.tensor(sorted({int(i) for i in special_ids if i is not None} | {int(mask_token_id)}))
    hist, start = History(), time.perf_counter()
    flags = {p: p.requires_grad for p in model.parameters()}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        try:
            params = _trainable_params(model, cfg)
            optimizer = torch.optim.AdamW(_param_groups(params, cfg.weight_decay), lr=cfg.lr)
            order = _batch_indices(n, cfg.batch_size, torch.Generator().manual_seed(cfg.seed))
            masking = torch.Generator().manual_seed(cfg.seed + 1)  # its own stream: order does not shift masks
            model.train()
            bar = tqdm(range(cfg.n_steps), desc=cfg.desc, disable=not cfg.progress, leave=False)
            tick = Ticker(f"training {cfg.desc}", cfg.n_steps)
            for step in bar:
                t0 = time.perf_counter()
                idx = next(order)  # (batch_size,) row indices
                batch = {k: v[idx] for k, v in data.items()}
                inputs = trim_padding(_model_inputs(batch, cfg, mask_token_id, vocab_size, special, masking,
                                                    model.device))
                lr = lr_at(step, cfg)
                for group in optimizer.param_groups:
                    group["lr"] = lr
                with torch.autocast(model.device.type, dtype=torch.bfloat16, enabled=cfg.bf16):
                    loss = (causal_lm_loss(model, inputs) if cfg.objective == "causal_lm" else
                            masked_lm_loss(model, inputs) if cfg.objective == "masked_lm" else model(**inputs).loss)
                loss.backward()
                if cfg.grad_clip:
                    torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                hist.steps.append(step + 1)
                hist.train_loss.append(loss.item())
                hist.lr.append(lr)
                pad = batch.get("attention_mask")
                n_tokens = batch["input_ids"].numel() if pad is None else int(pad.sum())
                hist.tokens_seen += n_tokens
                hist.train_time += time.perf_counter() - t0
                tick.update(tokens=n_tokens)
                bar.set_postfix(loss=f"{hist.train_loss[-1]:.4f}", refresh=False)
                due = (cfg.eval_every and (step + 1) % cfg.eval_every == 0) or step + 1 == cfg.n_steps
                if due and (eval_data is not None or eval_fn is not None):
                    metrics = evaluate(model, eval_data, cfg, eval_fn, mask_token_id, vocab_size, special)
                    hist.evals.append({"step": step + 1, **metrics})
            bar.close()
            tick.close()
        finally:
            for p, flag in flags.items():  # LoRA / freezing changed these: leave the caller's flags as they were
                p.requires_grad_(flag)
    hist.wall_time = time.perf_counter() - start
    return hist


def causal_lm_loss(model, inputs: dict, sparse_below: float = 0.5) -> torch.Tensor:
    """Mean next-token cross-entropy over the labelled targets, as HF's causal LM loss, with logits computed only at
    the positions that predict a labelled token when fewer than ``sparse_below`` of them are labelled (answer-only
    losses: Gemma-3's 262k-word unembedding of every position was most of a LoRA step). Dense labels take HF's path."""
    labels = inputs["labels"]
    keep = torch.zeros_like(labels, dtype=torch.bool)
    keep[:, :-1] = labels[:, 1:].ne(-100)  # position t predicts token t + 1
    n = int(keep.sum())
    if n == 0 or n >= sparse_below * labels.numel():
        return model(**inputs).loss
    logits = model(**{k: v for k, v in inputs.items() if k != "labels"}, logits_to_keep=keep).logits
    return F.cross_entropy(logits.reshape(n, -1).float(), labels[:, 1:][keep[:, :-1]])


def masked_lm_loss(model, inputs: dict) -> torch.Tensor:
    """Mean cross-entropy over the selected (labelled) positions, as HF's masked-LM loss, with the MLM head (its
    transform and the vocabulary decoder) applied to those positions only: the head acts on each position on its
    own, so the loss and its gradient are the same, and at 15-40 % masking most of the decoder's cost is saved.
    A model with no known head split falls back to its own full forward pass."""
    head = _mlm_head(model)
    if head is None:
        return model(**inputs).loss
    labels = inputs["labels"]
    keep = labels.ne(-100)
    encoder = getattr(model, model.base_model_prefix)
    hidden = encoder(**{k: v for k, v in inputs.items() if k != "labels"}).last_hidden_state
    return F.cross_entropy(head(hidden[keep]).float(), labels[keep])


def _mlm_head(model):
    """The position-wise MLM head after the encoder's last hidden state: BERT's `cls`, RoBERTa's `lm_head`."""
    if model.config.model_type == "bert" and hasattr(model, "cls"):
        return model.cls
    if model.config.model_type == "roberta-prelayernorm" and hasattr(model, "lm_head"):
        return model.lm_head
    return None


@torch.no_grad()
def evaluate(model, eval_data, cfg, eval_fn=None, mask_token_id=None, vocab_size=None, special=None,
             batch_size: int = 32) -> dict:
    """Metrics of ``model`` in eval mode: "loss" (mean over trained tokens / examples) and, for classification,
    "accuracy" on ``eval_data`` (MLM masks drawn from a fixed seed, the same at every evaluation), plus
    ``eval_fn(model)``. The model's train/eval mode is restored afterwards."""
    was_training, metrics, classify = model.training, {}, cfg.objective == "classification"
    model.eval()
    if eval_data is not None:
        masking = torch.Generator().manual_seed(cfg.seed + 2)
        total, count, correct = 0.0, 0, 0
        for i in range(0, len(eval_data["input_ids"]), batch_size):
            batch = {k: v[i:i + batch_size] for k, v in eval_data.items()}
            inputs = _model_inputs(batch, cfg, mask_token_id, vocab_size, special, masking, model.device)
            out, labels = model(**inputs), inputs["labels"]
            # HF losses are means over examples, or over non -100 targets (shifted by one for causal models)
            weight = len(labels) if classify else int(labels[:, cfg.objective == "causal_lm":].ne(-100).sum())
            total, count = total + (out.loss.item() * weight if weight else 0.0), count + weight  # 0 * NaN
            correct += int((out.logits.argmax(-1) == labels).sum()) if classify else 0
        metrics["loss"] = total / max(count, 1)
        metrics.update({"accuracy": correct / max(count, 1)} if classify else {})
    if eval_fn is not None:
        metrics.update(eval_fn(model))
    model.train(was_training)
    return metrics


def merge_lora(model):
    """Fold LoRA adapters (injected by :func:`train`, or a peft ``PeftModel``) into their base weights, in place;
    return the plain model: the original HF modules (so hooks and save_model work), every parameter trainable."""
    if hasattr(model, "merge_and_unload"):  # a PeftModel wrapper
        model = model.merge_and_unload()
    from peft.tuners.tuners_utils import BaseTunerLayer

    for name, module in list(model.named_modules()):
        if isinstance(module, BaseTunerLayer):
            module.merge()
            parent_name, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent_name) if parent_name else model, child, module.get_base_layer())
    for p in model.parameters():
        p.requires_grad_(True)
    return model


def _trainable_params(model, cfg) -> list[torch.nn.Parameter]:
    """Set requires_grad for this run (LoRA adapters only / embeddings frozen) and return the trainable ones."""
    if cfg.lora_rank:
        if not any("lora_" in name for name, _ in model.named_parameters()):
            from peft import LoraConfig, inject_adapter_in_model

            targets = cfg.lora_targets or LORA_DEFAULT_TARGETS.get(model.config.model_type)
            if not targets:
                raise ValueError(f"lora_targets is empty and no default is known for {model.config.model_type!r}")
            lora = LoraConfig(r=cfg.lora_rank, lora_alpha=cfg.lora_alpha, target_modules=list(targets),
                              lora_dropout=0.0, fan_in_fan_out=model.config.model_type == "gpt2")  # GPT-2: Conv1D
            inject_adapter_in_model(lora, model)  # in place: the caller's object now holds the adapters
        for name, p in model.named_parameters():
            # A classification head is new either way, so it trains with the adapters.
            head = cfg.objective == "classification" and name.split(".")[0] in ("classifier", "score")
            p.requires_grad_("lora_" in name or head)
    if cfg.freeze_embeddings:
        for module in model.modules():
            if isinstance(module, torch.nn.Embedding):
                module.weight.requires_grad_(False)
    return [p for p in model.parameters() if p.requires_grad]


def _param_groups(params, weight_decay):
    return [{"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
            {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]


def _batch_indices(n: int, batch_size: int, generator: torch.Generator):
    """Endless minibatch indices: a fresh permutation per epoch, batches running across epoch boundaries."""
    pending = torch.empty(0, dtype=torch.long)
    while True:
        while len(pending) < batch_size:
            pending = torch.cat([pending, torch.randperm(n, generator=generator)])
        yield pending[:batch_size]
        pending = pending[batch_size:]


def _model_inputs(batch, cfg, mask_token_id, vocab_size, special, masking, device) -> dict:
    """The model's keyword arguments for one batch, on ``device`` (masks are drawn on the CPU generator)."""
    inputs = {k: v for k, v in batch.items() if k != "special_tokens_mask"}
    if cfg.objective == "masked_lm":
        never = torch.isin(batch["input_ids"], special if special is not None else torch.tensor([mask_token_id]))
        if "attention_mask" in batch:
            never |= batch["attention_mask"] == 0
        if "special_tokens_mask" in batch:
            never |= batch["special_tokens_mask"].bool()
        inputs["input_ids"], inputs["labels"] = mask_tokens(batch["input_ids"], mask_token_id, vocab_size, never,
                                                            cfg.mlm_probability, masking)
    elif cfg.objective == "causal_lm" and "labels" not in batch:
        inputs["labels"] = _pad_masked(batch["input_ids"], batch.get("attention_mask"))
    return {k: v.to(device) for k, v in inputs.items()}


def trim_padding(inputs: dict) -> dict:
    """``inputs`` without the trailing columns that are padding (attention_mask 0) in every row: a batch costs
    its own longest row, not the whole set's. Exact: no kept position attends to a dropped one (the mask hides
    them, and causal models cannot look ahead), and a dropped position carries no label. Every (N, T) tensor is
    cut; (N,) labels and inputs without an attention mask pass unchanged. Masked-LM masks are drawn before the
    cut, so they are those of the untrimmed batch."""
    mask = inputs.get("attention_mask")
    if mask is None or mask.dim() != 2:
        return inputs
    on = mask.ne(0).any(0).nonzero()
    width = int(on[-1]) + 1 if len(on) else 1
    if width == mask.shape[1]:
        return inputs
    return {k: v[:, :width].contiguous() if v.dim() == 2 and v.shape == mask.shape else v for k, v in inputs.items()}


def _pad_masked(input_ids, attention_mask):
    return input_ids if attention_mask is None else input_ids.masked_fill(attention_mask == 0, -100)


def _check_data(data: dict, cfg: TrainConfig) -> int:
    """Validate the data dict; return N."""
    if "input_ids" not in data or set(data) - set(DATA_KEYS):
        raise ValueError(f"data needs 'input_ids'; unknown data keys {sorted(set(data) - set(DATA_KEYS))}; "
                         f"allowed keys: {DATA_KEYS}")
    ids, labels = data["input_ids"], data.get("labels")
    if ids.dim() != 2 or ids.dtype != torch.long:
        raise ValueError(f"data['input_ids'] must be a (N, T) LongTensor, got {tuple(ids.shape)} {ids.dtype}")
    for key, value in data.items():
        if len(value) != len(ids):
            raise ValueError(f"data[{key!r}] has {len(value)} rows, data['input_ids'] has {len(ids)}")
    want = (len(ids),) if cfg.objective == "classification" else ids.shape
    if (labels is None and cfg.objective == "classification") or (labels is not None and labels.shape != want):
        raise ValueError(f"objective={cfg.objective!r} needs data['labels'] of shape {tuple(want)}")
    return len(ids)


# ------------------------------------------------------------------------------------------ evaluation helpers
@torch.no_grad()
def lm_loss(model, input_ids: torch.Tensor, labels: torch.Tensor | None = None, batch_size: int = 8,
            attention_mask: torch.Tensor | None = None) -> float:
    """Mean next-token cross-entropy (nats) of a causal LM over all predicted tokens.

    input_ids (N, T); labels (N, T) with -100 on positions not scored (default: input_ids, padding excluded).
    Token-weighted across batches (not a mean of batch means). Model mode is restored afterwards.
    """
    labels = _pad_masked(input_ids, attention_mask) if labels is None else labels
    was_training, total, count = model.training, 0.0, 0
    model.eval()
    for i in range(0, len(input_ids), batch_size):
        mask = None if attention_mask is None else attention_mask[i:i + batch_size].to(model.device)
        logits = model(input_ids[i:i + batch_size].to(model.device), attention_mask=mask).logits[:, :-1].float()
        target = labels[i:i + batch_size, 1:].to(logits.device)  # position t predicts token t + 1
        total += torch.nn.functional.cross_entropy(logits.transpose(1, 2), target, reduction="sum").item()
        count += int(target.ne(-100).sum())
    model.train(was_training)
    return total / max(count, 1)


def perplexity(model, blocks: torch.Tensor, batch_size: int = 8) -> float:
    """exp(:func:`lm_loss`) over token blocks (N, T)."""
    return math.exp(lm_loss(model, blocks, batch_size=batch_size))


def unigram_baseline(train_ids, eval_ids, vocab_size: int) -> float:
    """Cross-entropy (nats per token) on ``eval_ids`` of an add-one-smoothed unigram model fit on ``train_ids``.

    The floor every base LM must beat: a model below it has learned nothing beyond token frequencies.
    Ids of any shape (tensor, array or list); negative ids (-100) are ignored.
    """
    train_ids, eval_ids = (torch.as_tensor(x).flatten().long() for x in (train_ids, eval_ids))
    counts = torch.bincount(train_ids[train_ids >= 0], minlength=vocab_size).double() + 1.0
    log_p = counts.log() - counts.sum().log()
    return float(-log_p[eval_ids[eval_ids >= 0]].mean())


# ------------------------------------------------------------------------------------------------- benchmark
def bare_loop_tokens_per_s(model, input_ids: torch.Tensor, n_steps: int, lr: float = 1e-3) -> float:
    """Tokens/s of the barest causal-LM loop (forward with labels, backward, AdamW step) on one batch (B, T)."""
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    start = time.perf_counter()
    for _ in range(n_steps):
        model(input_ids, labels=input_ids).loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return input_ids.numel() * n_steps / (time.perf_counter() - start)


def loop_overhead(model_factory: Callable, data: dict, n_steps: int, lr: float = 1e-3) -> tuple[float, float, float]:
    """(train tok/s, bare tok/s, ratio) on fresh models from ``model_factory()``; the whole of
    ``data["input_ids"]`` (B, T) is the batch for both loops, so each step does the same work."""
    ids = data["input_ids"]
    cfg = TrainConfig("causal_lm", n_steps=n_steps, batch_size=len(ids), lr=lr, progress=False)
    loop = train(model_factory(), {"input_ids": ids}, cfg).tokens_per_s
    bare = bare_loop_tokens_per_s(model_factory(), ids, n_steps, lr)
    return loop, bare, loop / bare
