"""Three lenses on a base -> tuned pair: representation similarity, weight change and cross-model patching.

Each lens gives one number per *layer point* i = 0..n_layers of a model with n_layers blocks: point 0 is the
embedding output (`blocks.0.hook_resid_pre`), point i >= 1 is the output of block i-1
(`blocks.{i-1}.hook_resid_post`, the residual stream before any final norm). Point i sits at depth fraction
i / n_layers, so models of different depth share one x-axis from 0 (embeddings) to 1 (last block).

1. **CKA to the base** (Kornblith et al. 2019, `lib.similarity.linear_cka`). With H_base^i and H_tuned^i the
   (N, d_model) residual states of the two models on the same N token positions of the same inputs,

       cka_i = CKA(H_base^i, H_tuned^i)  in [0, 1];  1 = the same representation up to rotation and scale.

   Which positions are rows is a choice (`token_mask`): "readout" takes the positions the task metric reads
   (the last prompt token when the inputs carry per-token labels, the [CLS] / last token of a sequence
   classifier, every token for next-token prediction); "all" takes every non-padding token.

2. **Relative weight change** (`lib.similarity.grouped_weight_change`). With the parameters W of a group g,

       dw_g = sqrt(sum_{W in g} ||W_tuned - W_base||_F^2) / sqrt(sum_{W in g} ||W_base||_F^2),

   where group i >= 1 is block i-1 and group 0 the embedding parameters (token, position, embedding norm);
   everything else (final norm, unembedding, pooler, classifier) forms the group "head". Two independent draws
   of the same initialiser give dw of about sqrt(2) = 1.41; dw << 1 means the tuned weights are a small edit.
   When the base is a random initialisation (a model trained from scratch), dw measures how far training travelled
   from its starting point: small dw there means "lazy" training that keeps the random features.

3. **Cross-model patching recovery** (activation patching as in Meng et al. 2022, across models as in Prakash
   et al. 2024's CMAP). Run the base on the inputs while its residual stream at point i is replaced, at every
   position, by the tuned model's on the same input; with a task metric m (higher is better),

       recovery_i = (m(base; resid_i <- tuned resid_i) - m(base)) / (m(tuned) - m(base)).

   1 = the tuned model's states up to point i carry all of its gain; 0 = none of it; values outside [0, 1] are
   possible. When |m(tuned) - m(base)| < min_gap there is no gain to share out and recovery is NaN. At the last
   block the remaining gap to 1 is the share of the gain that lives in the weights after the residual stream
   (final norm, unembedding, classifier head).

The final norm is a point of its own (`ln_final.hook_normalized`, TransformerLens's name): the last block's
`hook_resid_post` is the state *before* it, so `cka_lens(..., final_norm=True)` appends the CKA of the two models'
final-norm outputs (NaN for a post-LN encoder such as BERT, which has none). It stays off the depth axis: the halves
and every number read from them are over the n_layers + 1 residual points only.

4. **The reuse index** (`reuse_index`): CKA to the base calibrated by two references measured with the same lens on
   the same inputs, a *null* (a model that shares nothing with the base: one trained from scratch on the same task,
   or, where a chapter has none, the base's architecture freshly initialised) and a *seed ceiling* (the tuned model
   against its own run from another seed):

       index_i = (CKA(tuned, base)_i - CKA(null, base)_i) / (CKA(tuned, tuned')_i - CKA(null, base)_i).

   0 = no closer to the base than the null; 1 = as close to the base as two runs of the same fine-tune are to each
   other (above 1 is possible: closer to the base than to a sibling seed). NaN where the ceiling does not exceed the
   null (the lens cannot tell the two references apart, so there is nothing to calibrate against).

A chapter offers its comparisons as `Pair`s (base, tuned, a batch of its task's inputs, its task metric). This module
is the one route by which the study reads residual streams for the lenses; the reads go through `lib.hooks`.

Every function takes Hugging Face models of any family `lib.hooks` knows (GPT-2, BERT, RoBERTa-PreLayerNorm, Llama,
Mistral, Gemma-3).
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from lib.evals import batched, eval_mode
from lib.hooks import hooks, model_spec, run_with_cache
from lib.similarity import grouped_weight_change, linear_cka

MODEL_KEYS = ("input_ids", "attention_mask", "token_type_ids", "position_ids")
FINAL_NORM = "ln_final.hook_normalized"
_ROWS = "_rows"  # the CKA-row mask, sliced with the inputs in `residual_states`
# where each family keeps its final norm, relative to the model (BERT is post-LN: no final norm)
_FINAL_NORM_NAME = {"gpt2": "ln_f", "llama": "norm", "mistral": "norm", "qwen2": "norm", "gemma3": "norm",
                    "gemma3_text": "norm", "roberta-prelayernorm": "roberta_prelayernorm.LayerNorm"}


@dataclass
class Pair:
    """One base -> tuned comparison a chapter offers (`synthesis_pairs` returns them as dicts; `from_dict`).

    inputs: a dict of (B, T) tensors (input_ids, attention_mask, and labels (B, T) / (B,) or answer_ids (B,) when
    the metric reads one position), or a (B, T) tensor of ids. metric(model, inputs) -> float, higher is better."""

    name: str
    base: nn.Module
    tuned: nn.Module
    inputs: Any
    metric: Callable[[nn.Module, Any], float]
    tokenizer: Any = None

    @classmethod
    def from_dict(cls, d: dict) -> "Pair":
        missing = [k for k in ("name", "base", "tuned", "inputs", "metric") if k not in d]
        if missing:
            raise ValueError(f"a synthesis pair needs {', '.join(missing)} (got keys {sorted(d)})")
        return cls(d["name"], d["base"], d["tuned"], d["inputs"], d["metric"], d.get("tokenizer"))


# ---------------------------------------------------------------------------------------------- layer points
def layer_points(model: nn.Module) -> list[str]:
    """Hook names of the n_layers + 1 layer points: embedding output, then every block's resid_post."""
    n = model_spec(model).n_layers
    return ["blocks.0.hook_resid_pre"] + [f"blocks.{L}.hook_resid_post" for L in range(n)]


def point_labels(n_layers: int) -> list[str]:
    """'embed', 'block 0', ..., for tables."""
    return ["embed"] + [f"block {L}" for L in range(n_layers)]


def depth_fraction(n_layers: int) -> np.ndarray:
    """(n_layers + 1,) depth of each layer point: 0 (embeddings) ... 1 (last block)."""
    return np.arange(n_layers + 1) / n_layers


def halves(n_layers: int) -> tuple[np.ndarray, np.ndarray]:
    """Boolean masks (n_layers + 1,) of the early (depth <= 0.5) and late (depth > 0.5) layer points."""
    d = depth_fraction(n_layers)
    return d <= 0.5, d > 0.5


# ---------------------------------------------------------------------------------------------- 1. CKA
def model_inputs(inputs, device) -> dict:
    """The model's own keyword arguments from a pair's inputs (labels and extras left out), on `device`."""
    if not isinstance(inputs, dict):
        return {"input_ids": inputs.to(device)}
    return {k: v.to(device) for k, v in inputs.items() if k in MODEL_KEYS}


def token_mask(model: nn.Module, inputs, tokens: str = "readout") -> torch.Tensor:
    """Boolean (B, T) mask of the positions that become CKA rows.

    tokens="all": every non-padding token. tokens="readout": the positions the task metric reads --
    with per-token `labels` (B, T) (-100 = not scored), the position just before the first scored token (the
    last prompt token, whose logits predict the answer); with a per-example target, `labels` or `answer_ids` of
    shape (B,) (a sequence classifier, a one-token answer read at the end of the prompt), [CLS] (position 0) for an
    encoder and the last non-padding token for a causal model; without a target (next-token prediction over the
    whole window), every non-padding token.
    """
    if tokens not in ("readout", "all"):
        raise ValueError(f"tokens must be 'readout' or 'all', got {tokens!r}")
    ids = inputs["input_ids"] if isinstance(inputs, dict) else inputs
    pad = inputs.get("attention_mask") if isinstance(inputs, dict) else None
    pad = torch.ones_like(ids, dtype=torch.bool) if pad is None else pad.bool()
    labels = None
    if isinstance(inputs, dict):
        labels = inputs.get("labels", inputs.get("answer_ids"))
    if tokens == "all" or labels is None:
        return pad
    B, T = ids.shape
    mask = torch.zeros(B, T, dtype=torch.bool)
    if labels.dim() == 2:
        first = (labels != -100).float().argmax(1)  # (B,) first scored token
        mask[torch.arange(B), (first - 1).clamp(min=0)] = True
    elif model_spec(model).causal:
        last = T - 1 - pad.flip(1).float().argmax(1)  # (B,) last non-padding position
        mask[torch.arange(B), last] = True
    else:
        mask[:, 0] = True
    return mask


def final_norm(model: nn.Module) -> nn.Module | None:
    """The final norm module (GPT-2's `ln_f`, Llama / Mistral / Gemma-3's `norm`, RoBERTa-PreLayerNorm's last
    `LayerNorm`), None for a family without one."""
    name = _FINAL_NORM_NAME.get(model_spec(model).family)
    if name is None:
        return None
    found = sorted(((n, m) for n, m in model.named_modules() if n == name or n.endswith("." + name)),
                   key=lambda nm: ("language_model" not in nm[0], len(nm[0])))  # multimodal Gemma-3: the text model's
    return found[0][1] if found else None


@contextmanager
def _final_norm_read(model: nn.Module, store: dict):
    """While inside, every forward pass of `model` puts its final norm's output (B, T, d_model) in store[FINAL_NORM]."""
    norm = final_norm(model)
    if norm is None:
        yield
        return
    handle = norm.register_forward_hook(lambda module, args, out: store.__setitem__(FINAL_NORM, out.detach()))
    try:
        yield
    finally:
        handle.remove()


def residual_states(model: nn.Module, inputs, mask: torch.Tensor, chunk: int = 64,
                    with_final_norm: bool = False) -> list[torch.Tensor]:
    """The residual stream at every layer point on the masked positions: n_layers + 1 tensors (N, d_model), and
    with `with_final_norm` one more, the final norm's output (None for a model without a final norm).

    N = mask.sum(); rows follow the mask in row-major order, so two models give aligned rows."""
    names = layer_points(model)
    device = next(model.parameters()).device
    data = {**(inputs if isinstance(inputs, dict) else {"input_ids": inputs}), _ROWS: mask}
    has_norm = with_final_norm and final_norm(model) is not None

    def read(part: dict) -> list[torch.Tensor]:
        store: dict = {}
        with _final_norm_read(model, store) if has_norm else _nothing():
            _, cache = run_with_cache(model, model_inputs(part, device), names)
        m = part[_ROWS].to(device)
        acts = [cache[n] for n in names] + ([store[FINAL_NORM]] if has_norm else [])
        return [a[m].float().cpu() for a in acts]  # (n_rows, d_model) each

    with eval_mode(model):
        states = list(batched(read, data, chunk))
    return states + ([None] if with_final_norm and not has_norm else [])


@contextmanager
def _nothing():
    yield


def cka_lens(base: nn.Module, tuned: nn.Module, inputs, tokens: str = "readout", debiased: bool = False,
             chunk: int = 64, final_norm: bool = False) -> np.ndarray:
    """(n_layers + 1,) linear CKA between base and tuned residual states at each layer point; NaN where either
    model's states are the same on every row (nothing to compare). With `final_norm`, (n_layers + 2,): the last
    value is the CKA of the two final norms' outputs (NaN without a final norm)."""
    mask = token_mask(base, inputs, tokens)
    hb = residual_states(base, inputs, mask, chunk, final_norm)
    ht = residual_states(tuned, inputs, mask, chunk, final_norm)
    return np.array([linear_cka(x, y, debiased=debiased) if x is not None and y is not None and _varies(x)
                     and _varies(y) else np.nan for x, y in zip(hb, ht)])


def _varies(x: torch.Tensor, rtol: float = 1e-6) -> bool:
    """False when every row is (nearly) the same vector, e.g. the embedding of [CLS] at position 0: CKA is then
    undefined (linear_cka would report 0.0), and the lens reports NaN instead."""
    x = x.double()
    return bool(torch.linalg.vector_norm(x - x.mean(0)) > rtol * max(torch.linalg.vector_norm(x).item(), 1e-300))


# ---------------------------------------------------------------------------------------------- 2. weights
def _block_prefix(model: nn.Module) -> str:
    blocks = model_spec(model).blocks
    return next(name for name, m in model.named_modules() if m is blocks)


def weight_group(model: nn.Module) -> Callable[[str], int | str]:
    """name -> layer point of a parameter: 0 for embedding parameters, L + 1 for block L, 'head' for the rest."""
    prefix = _block_prefix(model) + "."

    def group(name: str) -> int | str:
        if name.startswith(prefix):
            return int(name[len(prefix):].split(".", 1)[0]) + 1
        leaf = name.split(".")
        return 0 if any("embed" in part or part in ("wte", "wpe") for part in leaf) else "head"

    return group


def weight_lens(base: nn.Module, tuned: nn.Module) -> tuple[np.ndarray, float]:
    """((n_layers + 1,) relative weight change per layer point, relative change of the 'head' group or NaN)."""
    sd_base, sd_tuned = dict(base.named_parameters()), dict(tuned.named_parameters())
    dw = grouped_weight_change(sd_base, sd_tuned, weight_group(base))
    n = model_spec(base).n_layers
    return np.array([dw.get(i, np.nan) for i in range(n + 1)], dtype=float), float(dw.get("head", np.nan))


# ---------------------------------------------------------------------------------------------- 3. patching
@contextmanager
def tuned_states_patched(base: nn.Module, tuned: nn.Module, name: str):
    """Inside the block, every forward call of `base` runs `tuned` on the same arguments first and replaces
    base's activation `name` (all positions) by tuned's. Works whatever batching the metric does inside."""
    store, busy = {}, [False]

    def grab(module, args, kwargs):
        if busy[0]:  # base is tuned (same object): the tuned run below re-enters this hook
            return None
        busy[0] = True
        try:
            with torch.no_grad(), hooks(tuned, [(name, lambda act, _: store.__setitem__("v", act.detach()))]):
                tuned(*args, **kwargs)
        finally:
            busy[0] = False
        return None

    handle = base.register_forward_pre_hook(grab, with_kwargs=True)
    try:
        with hooks(base, [(name, lambda act, _: None if busy[0] else store["v"].to(act.dtype))]):
            yield base
    finally:
        handle.remove()


def recovery(m_patched, m_base: float, m_tuned: float, min_gap: float = 0.02) -> np.ndarray:
    """(m_patched - m_base) / (m_tuned - m_base), elementwise; all NaN when |m_tuned - m_base| < min_gap."""
    m_patched = np.asarray(m_patched, dtype=float)
    gap = m_tuned - m_base
    if not np.isfinite(gap) or abs(gap) < min_gap:
        return np.full_like(m_patched, np.nan)
    return (m_patched - m_base) / gap


def patching_lens(base: nn.Module, tuned: nn.Module, inputs, metric: Callable, min_gap: float = 0.02) -> dict:
    """Metric of base, of tuned, and of base with tuned's residual stream patched in at each layer point.

    Returns {"m_base": float, "m_tuned": float, "m_patched": (n_layers + 1,), "recovery": (n_layers + 1,)}."""
    with eval_mode(base), eval_mode(tuned):
        m_base, m_tuned = float(metric(base, inputs)), float(metric(tuned, inputs))
        patched = []
        for name in layer_points(base):
            with tuned_states_patched(base, tuned, name):
                patched.append(float(metric(base, inputs)))
    patched = np.array(patched)
    return {"m_base": m_base, "m_tuned": m_tuned, "m_patched": patched,
            "recovery": recovery(patched, m_base, m_tuned, min_gap)}


def seed_at(seeds: list[int], index: int) -> int:
    """The `index`-th of a chapter's seeds for `synthesis_pairs(..., seed_index=index)`; IndexError past the last
    (the synthesis then stops collecting that chapter's seeds)."""
    if not 0 <= index < len(seeds):
        raise IndexError(f"seed_index {index} out of range: the chapter trained {len(seeds)} seed(s)")
    return seeds[index]


def first_above(values: np.ndarray, level: float = 0.5) -> int | None:
    """Index of the first layer point whose value exceeds `level` (None if none does; NaN never does)."""
    hit = np.flatnonzero(np.nan_to_num(np.asarray(values, dtype=float), nan=-np.inf) > level)
    return int(hit[0]) if len(hit) else None


# ---------------------------------------------------------------------------------------------- 4. reuse index
def reuse_index(cka_tuned, cka_null, cka_ceiling, min_separation: float = 1e-9) -> np.ndarray:
    """(CKA(tuned, base) - CKA(null, base)) / (CKA(tuned, tuned') - CKA(null, base)), elementwise; NaN where the
    ceiling exceeds the null by less than `min_separation` (or either is NaN). Same shape as the inputs."""
    a, n, c = (np.asarray(x, dtype=float) for x in (cka_tuned, cka_null, cka_ceiling))
    sep = c - n
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(np.nan_to_num(sep, nan=-np.inf) >= min_separation, (a - n) / sep, np.nan)


def random_init(model: nn.Module, seed: int) -> nn.Module:
    """The null a chapter without a scratch model gets: `model`'s architecture (its Hugging Face config and class)
    with fresh random weights from `seed`, in eval mode on the model's device; the global RNG is left untouched."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        fresh = type(model)(model.config)
    dtype = next(model.parameters()).dtype
    return fresh.to(device=next(model.parameters()).device, dtype=dtype).eval()
