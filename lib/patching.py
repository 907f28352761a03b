"""Causal interventions on attention heads: patching sweeps, path patching, circuit mean ablation, CMAP, DCM, knockout.

All of them edit `blocks.{L}.attn.hook_z`, the per-head outputs before W_O, through `lib.hooks` (one generic
`patch` function), following Prakash et al. 2024, "Fine-Tuning Enhances Existing Mechanisms" (ICLR; code
github.com/Nix07/finetuning, methods summarised in research/papers.md, Paper 3 (c)):

* activation patching of one head (Meng et al. 2022; Vig et al. 2020): `head_patching_sweep`, batched so that one
  forward pass patches many heads (the batch is replicated, each copy patching a different head);
* path patching (Wang et al. 2022; Goldowsky-Dill et al. 2023): `path_patch`, `path_patching_scores`;
* circuit evaluation by mean ablation: `mean_ablation_circuit`;
* cross-model activation patching, CMAP (base model with heads taken from the fine-tuned one): `cross_model_patch`;
* Desiderata-based Component Masking (Davies et al. 2023): `dcm_masks`;
* attention knockout (Geva et al. 2023): `attention_knockout`, `block_attention`.

Per-head caches are dicts {layer: z} with z of shape (B, T, n_heads, d_head). Positions are an int, a list, or a
per-example LongTensor (B,) as in `lib.hooks.position_mask`. Logits are (B, T, vocab).
"""
import itertools
import time
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from typing import Callable

import torch
from transformers import AttentionInterface
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, eager_mask

from lib.hooks import batch_size, forward, hooks, model_spec, patch, position_mask, repeat, run_with_cache, take


def z_name(layer: int) -> str:
    return f"blocks.{layer}.attn.hook_z"


def cache_z(model, inputs, layers=None):
    """(logits, {layer: z (B, T, H, d_head)}) for `layers` (default all).

    `{L: z.mean(0) for L, z in cache_z(model, reference)[1].items()}` is the per-position mean that Prakash et al.
    ablate with (`mean_ablation_circuit`)."""
    layers = range(model_spec(model).n_layers) if layers is None else layers
    logits, cache = run_with_cache(model, inputs, [z_name(L) for L in layers])
    return logits, {L: cache[z_name(L)] for L in layers}


def _per_example(positions, B: int) -> torch.Tensor:
    return positions.long() if torch.is_tensor(positions) else torch.full((B,), positions, dtype=torch.long)


def _all_heads(spec) -> list[tuple[int, int]]:
    return [(L, h) for L in range(spec.n_layers) for h in range(spec.n_heads)]


def _heads_per_pass(inputs, batch_heads) -> int:
    # Measured on 2 CPU cores (GPT-2, d 128, vocab 4096): about 8k tokens per pass is fastest; beyond that the
    # logits no longer fit in cache and a pass costs more per example than a plain forward.
    ids = inputs["input_ids"] if isinstance(inputs, dict) else inputs
    return batch_heads or max(1, 8192 // ids.numel())


def _chunks(items: list, k: int):
    for i in range(0, len(items), k):
        yield items[i:i + k]


def answer_prob(logits: torch.Tensor, answer: torch.Tensor, answer_pos=-1) -> torch.Tensor:
    """Softmax probability of `answer` (B,) at `answer_pos` (int or (B,)): shape (B,)."""
    last = logits[torch.arange(logits.shape[0]), _per_example(answer_pos, logits.shape[0])]
    return last.float().softmax(-1).gather(-1, answer.view(-1, 1)).squeeze(-1)


# ---------------------------------------------------------------- batched activation patching ------------------------
def _write_heads(z, name, *, k, copies, heads, pos, src):
    """Copy j of the k-fold replicated batch gets head heads[i] at `pos` from `src` (B, T, H, d) for j = copies[i]."""
    z = z.unflatten(0, (k, -1)).clone()  # (k, B, T, H, d)
    b = torch.arange(z.shape[1])[None]
    z[copies[:, None], b, pos[None], heads[:, None]] = src[b, pos[None], heads[:, None]]
    return z.flatten(0, 1)


def _copy_hooks(chunk, src_z, pos, k):
    """Hooks that patch head chunk[j] = (layer, head) into batch copy j, taking values from src_z[layer]."""
    fwd = []
    for L in sorted({L for L, _ in chunk}):
        copies = torch.tensor([j for j, (l, _) in enumerate(chunk) if l == L])
        heads = torch.tensor([h for l, h in chunk if l == L])
        fwd.append((z_name(L), partial(_write_heads, k=k, copies=copies, heads=heads, pos=pos, src=src_z[L])))
    return fwd


def head_patching_sweep(model, clean_inputs, source_z: dict, position, metric_fn: Callable, batch_heads=None,
                        heads=None) -> torch.Tensor:
    """Patch each head's z at `position` with `source_z` and score the result: tensor (n_layers, n_heads).

    source_z: {layer: (B, T, H, d_head)}, e.g. `cache_z(model, corrupted)[1]` or another model's (CMAP).
    metric_fn(logits (B, T, V)) -> (B,) or scalar; the score is its mean over examples. Heads not in `heads` are NaN.
    batch_heads: heads patched per forward pass (the batch is stacked that many times); default ~8k tokens a pass.
    """
    spec, B = model_spec(model), batch_size(clean_inputs)
    heads = _all_heads(spec) if heads is None else list(heads)
    k = _heads_per_pass(clean_inputs, batch_heads)
    pos = _per_example(position, B)
    scores = torch.full((spec.n_layers, spec.n_heads), float("nan"))
    for chunk in _chunks(heads, k):
        with torch.no_grad(), hooks(model, _copy_hooks(chunk, source_z, pos, len(chunk))):
            logits = forward(model, repeat(clean_inputs, len(chunk))).unflatten(0, (len(chunk), B))
        for j, (L, h) in enumerate(chunk):
            scores[L, h] = metric_fn(logits[j]).float().mean()
    return scores


@dataclass(frozen=True)
class SweepCost:
    sweep_s: float  # wall time of head_patching_sweep (best of the repeats)
    lower_bound_s: float  # wall time of n_layers * n_heads plain forward passes at the same batch size
    ratio: float  # sweep_s / lower_bound_s
    cpu_ratio: float  # the same ratio in process CPU time, less sensitive to other processes on a shared machine


def sweep_cost_ratio(model, clean_inputs, source_z, position, metric_fn, batch_heads=None, repeats=3) -> SweepCost:
    """Time the sweep against its lower bound, one plain forward pass (+ metric) per head; repeats interleave the two.

    Lower bound: n_layers * n_heads forward passes at the clean batch size, what any per-head patching must compute.
    """
    n = model_spec(model).n_layers * model_spec(model).n_heads

    def plain():
        with torch.no_grad():
            for _ in range(n):
                metric_fn(forward(model, clean_inputs))

    def sweep():
        head_patching_sweep(model, clean_inputs, source_z, position, metric_fn, batch_heads)

    times = {sweep: [], plain: []}
    for _ in range(repeats):
        for fn in times:
            wall, cpu = time.perf_counter(), time.process_time()
            fn()
            times[fn].append((time.perf_counter() - wall, time.process_time() - cpu))
    (sw, sc), (pw, pc) = (tuple(map(min, zip(*times[fn]))) for fn in (sweep, plain))
    return SweepCost(sw, pw, sw / pw, sc / pc)


# ---------------------------------------------------------------- path patching --------------------------------------
def _frozen_with_senders(clean_z, corrupt_z, chunk, sender_pos, corrupt_pos, n_layers):
    """Step 2 values: every head's clean z, except in copy j sender chunk[j] at sender_pos, set to its corrupt z."""
    k, B = len(chunk), clean_z[0].shape[0]
    b = torch.arange(B)
    values = {}
    for L in range(n_layers):
        v = clean_z[L].repeat(k, 1, 1, 1).unflatten(0, (k, B))
        for j, (l, h) in enumerate(chunk):
            if l == L:
                v[j, b, sender_pos, h] = corrupt_z[L][b, corrupt_pos, h]
        values[z_name(L)] = v.flatten(0, 1)
    return values


def _path_patch_logits(model, clean, clean_z, corrupt_z, senders, sender_pos, receivers, receiver_input,
                       receiver_pos, corrupt_pos):
    """Three-step path patching for k senders at once; logits (k, B, T, V)."""
    spec, B, k = model_spec(model), batch_size(clean), len(senders)
    sender_pos = _per_example(sender_pos, B)
    corrupt_pos = sender_pos if corrupt_pos is None else _per_example(corrupt_pos, B)
    values = _frozen_with_senders(clean_z, corrupt_z, senders, sender_pos, corrupt_pos, spec.n_layers)
    frozen = [(n, partial(patch, values=values)) for n in values]
    stacked = repeat(clean, k)
    if receivers == "logits":  # no downstream heads: the step-2 output is the answer
        with torch.no_grad(), hooks(model, frozen):
            return forward(model, stacked).unflatten(0, (k, B))
    layers = sorted({L for L, _ in receivers})
    names = [f"blocks.{L}.attn.hook_{receiver_input}" for L in layers]
    recorded = {}
    record = [(n, lambda act, name: recorded.__setitem__(name, act.detach().clone())) for n in names]
    with torch.no_grad(), hooks(model, frozen + record):
        forward(model, stacked)
    group = spec.n_heads // (spec.n_kv_heads if receiver_input in "kv" else spec.n_heads)
    rpos = receiver_pos.repeat(k) if torch.is_tensor(receiver_pos) else receiver_pos  # rows of the k copies
    fwd = []
    for L, name in zip(layers, names):
        heads = sorted({h // group for l, h in receivers if l == L})  # GQA: a receiver's k/v is its group's
        fwd.append((name, partial(patch, values=recorded, positions=rpos, heads=heads)))
    with torch.no_grad(), hooks(model, fwd):
        return forward(model, stacked).unflatten(0, (k, B))


def path_patch(model, clean, corrupt, sender: tuple[int, int], sender_pos, receivers="logits", receiver_input="v",
               receiver_pos=None, corrupt_pos=None) -> torch.Tensor:
    """Path patching from one sender head to `receivers` (Wang et al. 2022, as Prakash et al. 2024): logits (B, T, V).

    1. cache clean and corrupt z of every head at all positions;
    2. run clean with the sender's z at `sender_pos` set to its corrupt value (taken at `corrupt_pos`, default the
       same position) and every other head frozen to its clean z, so only paths sender -> (MLPs) -> receivers move;
       record the receivers' `receiver_input` ('q', 'k' or 'v': their projection outputs, hook_q/k/v);
    3. rerun clean, patching only the receivers' q/k/v at `receiver_pos` (None = all) with the recorded values.
    With receivers='logits' the step-2 logits are returned. receivers: list of (layer, head). With grouped KV heads a
    receiver's k or v is shared by its group, so patching it moves the whole group.
    """
    _, clean_z = cache_z(model, clean)
    _, corrupt_z = cache_z(model, corrupt)
    return _path_patch_logits(model, clean, clean_z, corrupt_z, [tuple(sender)], sender_pos, receivers,
                              receiver_input, receiver_pos, corrupt_pos)[0]


def path_patching_scores(model, clean, corrupt, answer, sender_pos, receivers="logits", receiver_input="v",
                         receiver_pos=None, answer_pos=-1, corrupt_pos=None, batch_heads=None) -> torch.Tensor:
    """Prakash et al.'s score for every sender head, (n_layers, n_heads): mean over examples of
    (p_patched(answer) - p_clean(answer)) / p_clean(answer). The most negative heads are the circuit's.

    answer: (B,) token ids; answer_pos: int or (B,). Senders in or after the last receiver layer cannot reach a
    receiver's input and score 0 without a forward pass. Senders are batched like `head_patching_sweep`.
    """
    spec, B = model_spec(model), batch_size(clean)
    clean_logits, clean_z = cache_z(model, clean)
    _, corrupt_z = cache_z(model, corrupt)
    p_clean = answer_prob(clean_logits, answer, answer_pos)
    top = spec.n_layers if receivers == "logits" else max(L for L, _ in receivers)
    senders = [(L, h) for L, h in _all_heads(spec) if L < top]
    scores = torch.zeros(spec.n_layers, spec.n_heads)
    for chunk in _chunks(senders, _heads_per_pass(clean, batch_heads)):
        logits = _path_patch_logits(model, clean, clean_z, corrupt_z, chunk, sender_pos, receivers, receiver_input,
                                    receiver_pos, corrupt_pos)
        for j, (L, h) in enumerate(chunk):
            scores[L, h] = ((answer_prob(logits[j], answer, answer_pos) - p_clean) / p_clean).mean()
    return scores


# ---------------------------------------------------------------- circuits and cross-model patching ------------------
def mean_ablation_circuit(model, inputs, mean_z: dict, keep: dict, positions: dict) -> torch.Tensor:
    """Logits of the circuit: every head mean-ablated at every position, except heads keep[key] at positions[key].

    mean_z: {layer: (T, H, d) per-position means, or (H, d), or (B, T, H, d)}. keep: {key: {(layer, head), ...}};
    positions: {key: int or LongTensor (B,)} (Prakash et al.: last token, query label, previous query label).
    """
    spec, B = model_spec(model), batch_size(inputs)
    T = (inputs["input_ids"] if isinstance(inputs, dict) else inputs).shape[1]
    fwd = []
    for L in range(spec.n_layers):
        kept = torch.zeros(B, T, spec.n_heads, dtype=torch.bool)
        for key, pos in positions.items():
            for h in {h for l, h in keep.get(key, ()) if l == L}:
                kept[:, :, h] |= position_mask((B, T), pos)
        fwd.append((z_name(L), partial(patch, values=mean_z[L], mask=~kept)))
    with torch.no_grad(), hooks(model, fwd):
        return forward(model, inputs)


def cross_model_patch(base, tuned, inputs, heads_at: dict) -> torch.Tensor:
    """CMAP: logits of `base` with heads_at's heads {(layer, head): positions} given `tuned`'s z on the same input.

    positions as in `position_mask` (None = all). The two models must share the architecture (Prakash et al. 2024).
    """
    layers = sorted({L for L, _ in heads_at})
    _, tuned_z = cache_z(tuned, inputs, layers)
    spec, B = model_spec(base), batch_size(inputs)
    T = (inputs["input_ids"] if isinstance(inputs, dict) else inputs).shape[1]
    fwd = []
    for L in layers:
        mask = torch.zeros(B, T, spec.n_heads, dtype=torch.bool)
        for (l, h), pos in heads_at.items():
            if l == L:
                mask[:, :, h] |= position_mask((B, T), pos)
        fwd.append((z_name(L), partial(patch, values=tuned_z[L], mask=mask)))
    with torch.no_grad(), hooks(base, fwd):
        return forward(base, inputs)


# ---------------------------------------------------------------- DCM ------------------------------------------------
@dataclass(frozen=True)
class DCMResult:
    heads: list  # the group G, [(layer, head), ...]
    mask: torch.Tensor  # (|G|,) round(m): 0 = head takes the source value, i.e. encodes the desideratum
    weights: torch.Tensor  # (|G|,) learned m in [0, 1]
    accuracy: float  # fraction with argmax(logits at answer_pos) == target under the rounded mask

    @property
    def selected(self) -> list:
        return [hd for hd, m in zip(self.heads, self.mask.tolist()) if m == 0]


def _mix_hooks(heads, m, src, pos):
    """z at `pos` of head i becomes m_i * z + (1 - m_i) * src_i (src: (B, |G|, d), taken at the source position)."""
    b = torch.arange(pos.shape[0])
    fwd = []
    for L in sorted({L for L, _ in heads}):
        idx = [i for i, (l, _) in enumerate(heads) if l == L]
        hs, w = torch.tensor([heads[i][1] for i in idx]), m[idx].view(1, -1, 1)

        def mix(z, name, hs=hs, w=w, idx=idx):
            z = z.clone()
            z[b[:, None], pos[:, None], hs] = w * z[b[:, None], pos[:, None], hs] + (1 - w) * src[:, idx]
            return z
        fwd.append((z_name(L), mix))
    return fwd


def dcm_masks(model, base_inputs, source_inputs, target, heads, position, answer_pos=-1, lam=0.01, lr=0.1,
              epochs=2, batch=32, source_position=None, seed=0) -> DCMResult:
    """Desiderata-based Component Masking (Davies et al. 2023, as Prakash et al. 2024): which heads of `heads` carry
    the property that turns the base output into `target` when patched from the source (desideratum) prompt.

    Learns m in [0,1]^|G| (init 1) for a = m*a_base + (1-m)*a_source at `position`, minimising
    -mean logit[target] + lam * sum(1 - m) with Adam(lr), clamping m to [0,1] after each step; evaluates round(m).
    Only m is trained (gradients are taken with autograd.grad, so the model's .grad stay untouched).
    """
    n = batch_size(base_inputs)
    heads = [tuple(h) for h in heads]
    pos = _per_example(position, n)
    spos = pos if source_position is None else _per_example(source_position, n)
    _, src_z = cache_z(model, source_inputs, sorted({L for L, _ in heads}))
    src = torch.stack([src_z[L][torch.arange(n), spos, h] for L, h in heads], 1)  # (n, |G|, d)
    apos = _per_example(answer_pos, n)
    m = torch.ones(len(heads), requires_grad=True)
    opt = torch.optim.Adam([m], lr=lr)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        for idx in _chunks(torch.randperm(n, generator=gen), batch):
            with hooks(model, _mix_hooks(heads, m, src[idx], pos[idx])):
                logits = forward(model, take(base_inputs, idx))
            target_logit = logits[torch.arange(len(idx)), apos[idx]].gather(-1, target[idx].view(-1, 1))
            loss = -target_logit.mean() + lam * (1 - m).sum()
            (m.grad,) = torch.autograd.grad(loss, [m])
            opt.step()
            with torch.no_grad():
                m.clamp_(0, 1)
    mask = m.detach().round()
    with torch.no_grad(), hooks(model, _mix_hooks(heads, mask, src, pos)):
        pred = forward(model, base_inputs)[torch.arange(n), apos].argmax(-1)
    return DCMResult(heads, mask, m.detach().clone(), (pred == target).float().mean().item())


# ---------------------------------------------------------------- attention knockout ---------------------------------
def block_attention(queries=None, keys=None, layers=None) -> Callable:
    """A knockout mask_fn: block `queries` from attending to `keys` (positions; None = all) in `layers` (None = all),
    in every head. Geva et al. 2023 / Prakash et al. knock out in layers k..L: `layers=range(k, n_layers)`."""
    def mask_fn(layer, shape):
        if layers is not None and layer not in layers:
            return None
        B, _, Tq, Tk = shape
        q, k = position_mask((B, Tq), queries), position_mask((B, Tk), keys)
        return (q[:, :, None] & k[:, None, :])[:, None]  # (B, 1, Tq, Tk)
    return mask_fn


def _knockout_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, softcap=None, *,
                        layer_of, mask_fn, **kwargs):
    """Eager attention with blocked (query, key) scores set to the dtype's minimum before the softmax."""
    rep = query.shape[1] // key.shape[1]  # grouped KV heads
    key, value = key.repeat_interleave(rep, 1), value.repeat_interleave(rep, 1)
    scores = query @ key.transpose(-1, -2) * (query.shape[-1] ** -0.5 if scaling is None else scaling)
    if softcap is not None:
        scores = softcap * torch.tanh(scores / softcap)
    if attention_mask is not None:
        scores = scores + attention_mask[..., : key.shape[-2]]
    blocked = mask_fn(layer_of[id(module)], scores.shape)
    if blocked is not None:
        scores = scores.masked_fill(blocked.to(scores.device), torch.finfo(scores.dtype).min)
    weights = scores.softmax(-1, dtype=torch.float32).to(query.dtype)
    weights = torch.nn.functional.dropout(weights, p=dropout, training=module.training)
    return (weights @ value).transpose(1, 2).contiguous(), weights


_names = itertools.count()


@contextmanager
def attention_knockout(model, mask_fn: Callable):
    """Run `model` with attention knocked out where `mask_fn(layer, (B, H, Tq, Tk))` is True (None = nothing).

    Registers an eager attention function (and eager mask) under a fresh name in transformers' AttentionInterface,
    switches the model to it with `set_attn_implementation`, and restores the previous implementation and the
    registries on exit. Works for every family that dispatches through AttentionInterface (GPT-2, Llama, Mistral,
    Qwen2, Gemma-3, BERT in transformers 5). The attention function is called as `fn(module, query, key, value,
    attention_mask, scaling=..., dropout=..., **kwargs)` with query (B, H, Tq, d) and key/value (B, H_kv, Tk, d); the
    layer is looked up from `module` (the attention module inside block L) rather than `module.layer_idx`, which
    depends on how the model was built. Sliding windows and padding arrive in `attention_mask` (the eager mask is
    registered under the same name). A query whose every key is blocked gets uniform attention: avoid it.
    """
    layer_of = {id(sub): L for L, block in enumerate(model_spec(model).blocks) for sub in block.modules()}
    name = f"lib_knockout_{next(_names)}"
    previous = model.config._attn_implementation
    AttentionInterface.register(name, partial(_knockout_attention, layer_of=layer_of, mask_fn=mask_fn))
    ALL_MASK_ATTENTION_FUNCTIONS.register(name, eager_mask)
    try:
        model.set_attn_implementation(name)
        yield model
    finally:
        model.set_attn_implementation(previous)
        AttentionInterface._global_mapping.pop(name, None)
        ALL_MASK_ATTENTION_FUNCTIONS._global_mapping.pop(name, None)
