"""Activation access: read and edit the inside of a Hugging Face model with plain PyTorch hooks.

Every model family is addressed with one vocabulary, TransformerLens's (Nanda & Bloom 2022), whatever the underlying
module names are:

| hook name                    | tensor, shape                                    | PyTorch hook on      |
|------------------------------|--------------------------------------------------|----------------------|
| `blocks.{L}.hook_resid_pre`  | input of block L, (B, T, d_model)                | block (pre-hook)     |
| `blocks.{L}.attn.hook_q/k/v` | q/k/v projections before rotary or q/k-norm,     | q/k/v projection     |
|                              | (B, T, H, d_head); k and v have n_kv_heads heads |                      |
| `blocks.{L}.attn.hook_z`     | per-head outputs before W_O, (B, T, H, d_head)   | W_O (pre-hook)       |
| `blocks.{L}.hook_attn_out`   | W_O z (+ bias), (B, T, d_model)                  | W_O                  |
| `blocks.{L}.mlp.hook_post`   | MLP hidden = down-proj input, (B, T, d_mlp)      | down proj (pre-hook) |
| `blocks.{L}.hook_mlp_out`    | MLP down-proj output, (B, T, d_model)            | down proj            |
| `blocks.{L}.hook_resid_post` | output of block L, (B, T, d_model)               | block                |

Family differences to keep in mind (see research/interp.md): Gemma-3 applies `post_attention_layernorm` /
`post_feedforward_layernorm` to attn_out / mlp_out before adding them to the residual stream; BERT is post-LN, so its
resid_post is `LayerNorm(resid_mid + mlp_out)`; Gemma-3's d_head (256 in Gemma-3-270M) is not d_model / n_heads, so it
is read from the weights, never computed from the config. The last layer's `hook_resid_post` is the hidden state
*before* the final norm: Hugging Face's `hidden_states[L + 1]` equals `blocks.{L}.hook_resid_post` for every L but the
last, whose `hidden_states[-1]` is after `ln_f` / `norm` (no final norm in BERT, so there they agree too).
RoBERTa-PreLayerNorm (the study's pre-LN BERT) has the module names of BERT and one final LayerNorm after the last
block; as in GPT-2, `hidden_states[-1]` is after it and the last `hook_resid_post` before it.

Usage (a hook function gets the activation and its name and returns None or a same-shape replacement):

    >>> logits, cache = run_with_cache(model, ids, ["blocks.0.attn.hook_z"])
    >>> with hooks(model, [("blocks.0.attn.hook_z", partial(patch, values=0.0, positions=3, heads=1))]):
    ...     ablated = model(ids).logits          # head 0.1 zero-ablated at position 3

Cross-model patching (Prakash et al. 2024, CMAP): cache a second model of the same architecture on the *same* input
and patch its values into the first:

    >>> names = [f"blocks.{L}.attn.hook_z" for L in range(2)]
    >>> _, tuned_cache = run_with_cache(tuned, ids, names)
    >>> with hooks(base, [(n, partial(patch, values=tuned_cache, positions=-1)) for n in names]):
    ...     base_with_tuned_heads = base(ids).logits

Hooks are registered on entry and always removed on exit, also when the body raises; nothing is folded or rewritten,
so the numbers are Hugging Face's own.
"""
import re
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from typing import Callable

import torch
from torch import nn

from lib.progress import sync_threads


@dataclass(frozen=True)
class Family:
    """Where the parts of a block live, as dotted paths relative to a block (`blocks` relative to the model)."""

    blocks: str  # suffix of the nn.ModuleList of blocks
    o_proj: str  # attention output projection: its input is hook_z
    down_proj: str  # MLP down projection: its input is mlp.hook_post
    qkv: tuple[str, ...]  # separate q, k, v projections, or one fused projection (GPT-2's c_attn)
    causal: bool = True


_LLAMA_LIKE = Family("layers", "self_attn.o_proj", "mlp.down_proj",
                     ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"))
FAMILIES = {
    "gpt2": Family("h", "attn.c_proj", "mlp.c_proj", ("attn.c_attn",)),
    "llama": _LLAMA_LIKE, "mistral": _LLAMA_LIKE, "qwen2": _LLAMA_LIKE, "gemma3": _LLAMA_LIKE,
    "gemma3_text": _LLAMA_LIKE,
    "bert": Family("encoder.layer", "attention.output.dense", "output.dense",
                   ("attention.self.query", "attention.self.key", "attention.self.value"), causal=False),
}
FAMILIES["roberta-prelayernorm"] = FAMILIES["bert"]  # the same module names; the LayerNorms sit before each sublayer


@dataclass(frozen=True)
class ModelSpec:
    """Sizes and block list of a model, in TransformerLens names."""

    family: str
    n_layers: int
    n_heads: int
    n_kv_heads: int
    d_model: int
    d_head: int
    causal: bool
    blocks: nn.ModuleList


def _in_features(module: nn.Module) -> int:
    # nn.Linear stores (out, in); GPT-2's Conv1D stores (in, out).
    return module.in_features if isinstance(module, nn.Linear) else module.weight.shape[0]


def _out_features(module: nn.Module) -> int:
    return module.out_features if isinstance(module, nn.Linear) else module.weight.shape[1]


def _find_blocks(model: nn.Module, suffix: str) -> nn.ModuleList:
    found = [(n, m) for n, m in model.named_modules()
             if isinstance(m, nn.ModuleList) and (n == suffix or n.endswith("." + suffix))]
    if not found:
        raise ValueError(f"no block list '*{suffix}' in {type(model).__name__}")
    # A multimodal Gemma-3 also has vision-tower layers: prefer the language model's.
    found.sort(key=lambda nm: "language_model" not in nm[0])
    return found[0][1]


def model_spec(model: nn.Module) -> ModelSpec:
    """Family, sizes and block list of a Hugging Face model (family from `model.config.model_type`)."""
    model_type = model.config.model_type
    if model_type not in FAMILIES:
        raise ValueError(f"unsupported model_type {model_type!r}; known: {sorted(FAMILIES)}")
    fam = FAMILIES[model_type]
    cfg = model.config.get_text_config()
    blocks = _find_blocks(model, fam.blocks)
    n_heads = cfg.num_attention_heads
    d_head = _in_features(blocks[0].get_submodule(fam.o_proj)) // n_heads
    kv_out = _out_features(blocks[0].get_submodule(fam.qkv[-1]))
    n_kv = n_heads if len(fam.qkv) == 1 else kv_out // d_head
    causal = fam.causal or bool(getattr(cfg, "is_decoder", False))
    return ModelSpec(model_type, len(blocks), n_heads, n_kv, cfg.hidden_size, d_head, causal, blocks)


_HOOK_RE = re.compile(r"blocks\.(\d+)\.(hook_resid_pre|hook_resid_post|attn\.hook_[qkvz]|hook_attn_out"
                      r"|mlp\.hook_post|hook_mlp_out)$")
_LAYER_HOOKS = ("hook_resid_pre", "attn.hook_q", "attn.hook_k", "attn.hook_v", "attn.hook_z", "hook_attn_out",
                "mlp.hook_post", "hook_mlp_out", "hook_resid_post")


def hook_points(model: nn.Module) -> list[str]:
    """All hook names of `model`, in the order a forward pass reaches them."""
    return [f"blocks.{L}.{h}" for L in range(model_spec(model).n_layers) for h in _LAYER_HOOKS]


def _checked(fn: Callable, name: str, act: torch.Tensor) -> torch.Tensor:
    out = fn(act, name)
    if out is None:
        return act
    if out.shape != act.shape:
        raise ValueError(f"hook on {name} returned shape {tuple(out.shape)}, expected {tuple(act.shape)}")
    return out


def _register(model: nn.Module, spec: ModelSpec, name: str, fn: Callable):
    """Register one PyTorch hook that shows `fn` the activation `name` and splices in its return value."""
    m = _HOOK_RE.match(name)
    if m is None:
        raise KeyError(f"unknown hook name {name!r}; see hook_points(model)")
    layer, kind = int(m.group(1)), m.group(2)
    if layer >= spec.n_layers:
        raise KeyError(f"{name}: the model has {spec.n_layers} layers")
    fam, block = FAMILIES[spec.family], spec.blocks[layer]

    def edit_output(module, args, output):  # resid_post / attn_out / mlp_out
        if isinstance(output, tuple):
            return (_checked(fn, name, output[0]),) + output[1:]
        return _checked(fn, name, output)

    def edit_input(module, args, kwargs, heads=None):  # resid_pre / hook_z / mlp.hook_post
        x = args[0] if args else kwargs["hidden_states"]
        act = x.unflatten(-1, (heads, -1)) if heads else x
        new = _checked(fn, name, act).flatten(-2) if heads else _checked(fn, name, act)
        if args:
            return (new,) + tuple(args[1:]), kwargs
        return args, {**kwargs, "hidden_states": new}

    def edit_heads(module, args, output, chunk=None):  # q / k / v, (B, T, heads, d_head)
        if chunk is None:
            return _checked(fn, name, output.unflatten(-1, (-1, spec.d_head))).flatten(-2)
        parts = list(output.split(spec.n_heads * spec.d_head, dim=-1))  # fused GPT-2 c_attn: [q | k | v]
        parts[chunk] = _checked(fn, name, parts[chunk].unflatten(-1, (-1, spec.d_head))).flatten(-2)
        return torch.cat(parts, dim=-1)

    if kind == "hook_resid_pre":
        return block.register_forward_pre_hook(edit_input, with_kwargs=True)
    if kind == "hook_resid_post":
        return block.register_forward_hook(edit_output)
    if kind == "attn.hook_z":
        hook = partial(edit_input, heads=spec.n_heads)
        return block.get_submodule(fam.o_proj).register_forward_pre_hook(hook, with_kwargs=True)
    if kind == "hook_attn_out":
        return block.get_submodule(fam.o_proj).register_forward_hook(edit_output)
    if kind == "mlp.hook_post":
        return block.get_submodule(fam.down_proj).register_forward_pre_hook(edit_input, with_kwargs=True)
    if kind == "hook_mlp_out":
        return block.get_submodule(fam.down_proj).register_forward_hook(edit_output)
    i = "qkv".index(kind[-1])
    if len(fam.qkv) == 1:
        return block.get_submodule(fam.qkv[0]).register_forward_hook(partial(edit_heads, chunk=i))
    return block.get_submodule(fam.qkv[i]).register_forward_hook(edit_heads)


@contextmanager
def hooks(model: nn.Module, fwd_hooks: list[tuple[str, Callable]]):
    """Run `model` with `fwd_hooks` = [(hook_name, fn), ...] attached; all are removed on exit, even on an exception.

    `fn(activation, hook_name)` returns None (keep; in-place edits also take effect) or a replacement of the same
    shape. Several hooks on one name run in list order, each seeing the previous one's result.
    """
    sync_threads()  # a long patching sweep takes up a core that the build has freed (lib.progress)
    spec = model_spec(model)
    handles = []
    try:
        for name, fn in fwd_hooks:
            handles.append(_register(model, spec, name, fn))
        yield model
    finally:
        for h in handles:
            h.remove()


# ---------------------------------------------------------------- running a model ------------------------------------
def forward(model: nn.Module, inputs) -> torch.Tensor:
    """Logits of `model` on `inputs` (a dict of model kwargs, or input ids); last_hidden_state for a bare model."""
    out = model(**inputs) if isinstance(inputs, dict) else model(inputs)
    logits = getattr(out, "logits", None)
    return logits if logits is not None else out[0]


def batch_size(inputs) -> int:
    return (inputs["input_ids"] if isinstance(inputs, dict) else inputs).shape[0]


def take(inputs, idx):
    """The examples `idx` (a slice or index tensor) of `inputs`; tensors with a batch dimension are indexed."""
    if not isinstance(inputs, dict):
        return inputs[idx]
    n = batch_size(inputs)
    return {k: v[idx] if torch.is_tensor(v) and v.dim() and v.shape[0] == n else v for k, v in inputs.items()}


def repeat(inputs, k: int):
    """`inputs` stacked k times along the batch: copy j holds rows [j*B, (j+1)*B)."""
    if not isinstance(inputs, dict):
        return inputs.repeat(k, *[1] * (inputs.dim() - 1))
    n = batch_size(inputs)
    return {key: v.repeat(k, *[1] * (v.dim() - 1)) if torch.is_tensor(v) and v.dim() and v.shape[0] == n else v
            for key, v in inputs.items()}


def select_positions(x: torch.Tensor, positions) -> torch.Tensor:
    """x[:, positions] for an int or list; x[b, positions[b]] for a per-example LongTensor of shape (B,)."""
    if torch.is_tensor(positions) and positions.dim() == 1:
        return x[torch.arange(x.shape[0], device=x.device), positions.to(x.device)]
    return x[:, positions]


def run_with_cache(model: nn.Module, inputs, names, positions=None, grad: bool = False):
    """Run `model` once and return (logits, {hook_name: activation}), activations detached and cloned.

    names: a list of hook names, or a filter `name -> bool` over `hook_points(model)`.
    positions: keep only these positions (see `select_positions`): an int or per-example LongTensor (B,) drops the
    position axis, a list keeps it. resid_post of the last layer is the state *before* the final norm.
    """
    if callable(names):
        names = [n for n in hook_points(model) if names(n)]
    cache = {}

    def save(act, name):
        kept = act if positions is None else select_positions(act, positions)
        cache[name] = kept.detach().clone()

    with torch.set_grad_enabled(grad), hooks(model, [(n, save) for n in names]):
        logits = forward(model, inputs)
    return logits, cache


def mean_activations(model: nn.Module, inputs, names, over_positions: bool = False, chunk: int = 64):
    """Mean of each activation over the examples of `inputs`: {name: (T, ...)}, or (...) with `over_positions`.

    The per-position mean (T, ...) is what Prakash et al. (2024) ablate with (their prompts share one template).
    With `over_positions` padding is left out when `inputs` carries an attention_mask.
    """
    n, sums, count = batch_size(inputs), {}, 0.0
    for start in range(0, n, chunk):
        part = take(inputs, slice(start, start + chunk))
        _, cache = run_with_cache(model, part, names)
        mask = part.get("attention_mask") if isinstance(part, dict) else None
        for name, act in cache.items():
            if over_positions:
                w = torch.ones(act.shape[:2], device=act.device) if mask is None else mask.to(act)
                act = (act * w.view(*w.shape, *[1] * (act.dim() - 2))).sum((0, 1))
            else:
                act = act.sum(0)
            sums[name] = sums.get(name, 0) + act
        count += _count(part, over_positions)
    return {name: s / count for name, s in sums.items()}


def _count(inputs, over_positions: bool) -> float:
    ids = inputs["input_ids"] if isinstance(inputs, dict) else inputs
    if not over_positions:
        return float(ids.shape[0])
    mask = inputs.get("attention_mask") if isinstance(inputs, dict) else None
    return float(ids.numel() if mask is None else mask.sum())


# ---------------------------------------------------------------- patching -------------------------------------------
def position_mask(shape: torch.Size, positions, device=None) -> torch.Tensor:
    """Boolean (B, T) mask of `positions`: None (all), an int, a list of ints, or a per-example LongTensor (B,)."""
    B, T = shape[0], shape[1]
    if positions is None:
        return torch.ones(B, T, dtype=torch.bool, device=device)
    mask = torch.zeros(B, T, dtype=torch.bool, device=device)
    if torch.is_tensor(positions) and positions.dim() == 1:
        mask[torch.arange(B, device=device), positions.to(device) % T] = True
    else:
        mask[:, positions] = True
    return mask


def patch(activation: torch.Tensor, hook_name: str, *, values, positions=None, heads=None, mask=None):
    """The generic patching hook: `activation` with `values` written in at `positions` (and `heads`).

    values: a tensor broadcastable to the activation — a full (B, T, ...) activation from another run, a
        per-position mean (T, ...), a single vector (...), or a scalar — or a dict {hook_name: tensor} (a cache).
    positions: None (all), int, list, or per-example LongTensor (B,), see `position_mask`.
    heads: int or list of heads, for per-head hooks (hook_z, hook_q/k/v) only.
    mask: instead of positions/heads, a boolean tensor over the leading dims, (B, T) or (B, T, H).
    Use as `partial(patch, values=..., positions=...)`; named variants below.
    """
    if isinstance(values, dict):
        values = values[hook_name]
    values = torch.as_tensor(values, dtype=activation.dtype, device=activation.device)
    if mask is None:
        mask = position_mask(activation.shape, positions, activation.device)
        if heads is not None:
            head_mask = torch.zeros(activation.shape[2], dtype=torch.bool, device=activation.device)
            head_mask[heads] = True
            mask = mask[:, :, None] & head_mask
    mask = mask.view(*mask.shape, *[1] * (activation.dim() - mask.dim()))
    return torch.where(mask, values, activation)


zero_ablate = partial(patch, values=0.0)
zero_ablate.__doc__ = "Set the activation to zero at `positions` (and `heads`): `partial(patch, values=0.0)`."


def mean_ablate(activation: torch.Tensor, hook_name: str, *, means, positions=None, heads=None, mask=None):
    """Replace the activation by `means` (e.g. `mean_activations(model, reference, names)`) at `positions`/`heads`."""
    return patch(activation, hook_name, values=means, positions=positions, heads=heads, mask=mask)


def patching_hooks(names: list[str], values, positions=None, heads=None) -> list[tuple[str, Callable]]:
    """[(name, partial(patch, ...)) for each name]: ready for `hooks(model, ...)`; `values` usually a cache dict."""
    return [(n, partial(patch, values=values, positions=positions, heads=heads)) for n in names]
