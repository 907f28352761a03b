"""Tests for lib.patching on tiny random models: known answers and hand-computed references."""
from functools import partial

import pytest
import torch
from torch.testing import assert_close
from transformers import AttentionInterface

from lib.hooks import forward, hooks, model_spec, patch, patching_hooks, run_with_cache
from lib.patching import (answer_prob, attention_knockout, block_attention, cache_z, cross_model_patch, dcm_masks,
                          head_patching_sweep, mean_ablation_circuit, path_patch, path_patching_scores,
                          sweep_cost_ratio, z_name)
from tests._tiny import CAUSAL, FAMILIES, perturbed_copy, tiny_inputs, tiny_model

pytestmark = pytest.mark.models


def _patch_one_head(model, ids, layer, head, pos, source_z):
    with torch.no_grad(), hooks(model, [(z_name(layer), partial(patch, values=source_z[layer], positions=pos,
                                                                heads=head))]):
        return forward(model, ids)


# ---------------------------------------------------------------- attention knockout ---------------------------------
@pytest.mark.parametrize("family", FAMILIES)
def test_knockout_with_empty_mask_is_eager_attention(family):
    model, ids = tiny_model(family), tiny_inputs()
    with torch.no_grad():
        clean = forward(model, ids)
        with attention_knockout(model, lambda layer, shape: None):
            assert model.config._attn_implementation.startswith("lib_knockout")
            knocked = forward(model, ids)
    assert_close(knocked, clean, atol=1e-6, rtol=0)
    assert model.config._attn_implementation == "eager"
    assert not [k for k in AttentionInterface._global_mapping if k.startswith("lib_knockout")]


@pytest.mark.parametrize("family", FAMILIES)
def test_knocking_out_a_key_everywhere_equals_padding_it(family):
    # An attention_mask zero at key k hides k from every query in every layer: the same as knocking k out everywhere.
    model, ids, k = tiny_model(family, attn_implementation="sdpa"), tiny_inputs(), 2
    padded = torch.ones_like(ids)
    padded[:, k] = 0
    with torch.no_grad():
        reference = forward(model, {"input_ids": ids, "attention_mask": padded})
        with attention_knockout(model, block_attention(keys=k)):
            knocked = forward(model, ids)
        clean = forward(model, ids)
    assert_close(knocked, reference, atol=1e-5, rtol=0)
    assert (knocked[:, k + 1:] - clean[:, k + 1:]).abs().max() > 1e-4
    assert model.config._attn_implementation == "sdpa"


def test_knockout_in_late_layers_matches_hand_computed_attention():
    model, ids = tiny_model("gpt2", n_layer=3), tiny_inputs()
    q, k, first = 6, 2, 1  # block query 6 -> key 2 in layers 1..2
    mask_fn = block_attention(queries=q, keys=k, layers=range(first, 3))
    with torch.no_grad(), attention_knockout(model, mask_fn):
        _, cache = run_with_cache(model, ids, ["blocks.0.attn.hook_z", "blocks.1.hook_resid_pre",
                                               "blocks.1.attn.hook_z"])
    _, clean = run_with_cache(model, ids, ["blocks.0.attn.hook_z"])
    assert torch.equal(cache["blocks.0.attn.hook_z"], clean["blocks.0.attn.hook_z"])  # layer 0 untouched
    block = model.transformer.h[1]
    with torch.no_grad():
        qs, ks, vs = block.attn.c_attn(block.ln_1(cache["blocks.1.hook_resid_pre"])).split(32, -1)
        qs, ks, vs = (t.unflatten(-1, (4, 8)).transpose(1, 2) for t in (qs, ks, vs))  # (B, H, T, d)
        scores = qs @ ks.transpose(-1, -2) / 8 ** 0.5
        blocked = torch.ones(8, 8).tril().logical_not()
        blocked[q, k] = True
        z = (scores.masked_fill(blocked, float("-inf")).softmax(-1) @ vs).transpose(1, 2)
    assert_close(z, cache["blocks.1.attn.hook_z"], atol=1e-6, rtol=0)


def test_knockout_restores_implementation_after_exception():
    model = tiny_model("llama", attn_implementation="sdpa")
    with pytest.raises(RuntimeError):
        with attention_knockout(model, block_attention(keys=0)):
            raise RuntimeError
    assert model.config._attn_implementation == "sdpa"


# ---------------------------------------------------------------- batched sweep --------------------------------------
@pytest.mark.parametrize("family", ("gpt2", "llama", "gemma3"))
def test_batched_sweep_equals_one_head_at_a_time(family):
    model, clean, corrupted = tiny_model(family), tiny_inputs(batch=3), tiny_inputs(batch=3, seed=5)
    _, source = cache_z(model, corrupted)
    pos = torch.tensor([7, 5, 6])
    answer = torch.tensor([1, 2, 3])

    def metric(logits):
        return answer_prob(logits, answer, pos)

    spec = model_spec(model)
    expected = torch.stack([torch.stack([metric(_patch_one_head(model, clean, L, h, pos, source)).mean()
                                         for h in range(spec.n_heads)]) for L in range(spec.n_layers)])
    for batch_heads in (1, 3, 8):
        scores = head_patching_sweep(model, clean, source, pos, metric, batch_heads=batch_heads)
        assert_close(scores, expected, atol=1e-6, rtol=1e-5)
    partial_scores = head_patching_sweep(model, clean, source, -1, metric, heads=[(1, 2)])
    assert partial_scores.isnan().sum() == spec.n_layers * spec.n_heads - 1


def test_sweep_cost_ratio_runs():
    model, clean = tiny_model("gpt2"), tiny_inputs()
    _, source = cache_z(model, tiny_inputs(seed=5))
    cost = sweep_cost_ratio(model, clean, source, -1, lambda logits: logits[:, -1, 0], repeats=1)
    assert cost.sweep_s > 0 and cost.lower_bound_s > 0 and cost.ratio == cost.sweep_s / cost.lower_bound_s


# ---------------------------------------------------------------- path patching --------------------------------------
@pytest.mark.parametrize("family", ("gpt2", "llama", "mistral"))
def test_path_patching_with_clean_corrupt_changes_nothing(family):
    model, ids = tiny_model(family), tiny_inputs()
    clean = forward(model, ids).detach()
    for receivers in ("logits", [(model_spec(model).n_layers - 1, 1)]):
        out = path_patch(model, ids, ids, sender=(0, 2), sender_pos=5, receivers=receivers, receiver_input="k")
        assert_close(out, clean, atol=1e-6, rtol=0)


@pytest.mark.parametrize("family", ("gpt2", "llama"))
def test_path_to_logits_from_last_layer_is_activation_patching(family):
    model, clean, corrupted = tiny_model(family), tiny_inputs(), tiny_inputs(seed=5)
    L = model_spec(model).n_layers - 1
    _, corrupt_z = cache_z(model, corrupted)
    expected = _patch_one_head(model, clean, L, 3, 6, corrupt_z)
    assert_close(path_patch(model, clean, corrupted, (L, 3), 6), expected, atol=1e-6, rtol=0)


def _manual_path_patch(model, clean, corrupted, sender, pos, receiver, kind):
    """The three steps written out with hooks and the generic `patch`, one forward pass each."""
    n = model_spec(model).n_layers
    _, clean_z = cache_z(model, clean)
    _, corrupt_z = cache_z(model, corrupted)
    frozen = []
    for L in range(n):
        values = clean_z[L].clone()
        if L == sender[0]:
            values[:, pos, sender[1]] = corrupt_z[L][:, pos, sender[1]]
        frozen.append((z_name(L), partial(patch, values=values)))
    name = f"blocks.{receiver[0]}.attn.hook_{kind}"
    with torch.no_grad(), hooks(model, frozen):
        _, recorded = run_with_cache(model, clean, [name])
    group = model_spec(model).n_heads // model_spec(model).n_kv_heads if kind in "kv" else 1
    with torch.no_grad(), hooks(model, patching_hooks([name], recorded, positions=pos, heads=receiver[1] // group)):
        return forward(model, clean)


@pytest.mark.parametrize("family,kind", [("gpt2", "q"), ("gpt2", "v"), ("llama", "k"), ("llama", "v")])
def test_path_patching_freezes_intermediate_heads(family, kind):
    layers = {"n_layer": 3} if family == "gpt2" else {"num_hidden_layers": 3}
    overrides = dict(layers, initializer_range=0.3)  # strong weights: second-order paths are visible
    model, clean, corrupted = tiny_model(family, **overrides), tiny_inputs(), tiny_inputs(seed=5)
    sender, receiver, pos = (0, 1), (2, 3), 6
    out = path_patch(model, clean, corrupted, sender, pos, [receiver], kind, receiver_pos=pos)
    assert_close(out, _manual_path_patch(model, clean, corrupted, sender, pos, receiver, kind), atol=1e-6, rtol=0)
    # Without freezing, the sender's effect also reaches the receiver through layer-1 heads: a different answer.
    _, corrupt_z = cache_z(model, corrupted)
    name = f"blocks.2.attn.hook_{kind}"
    with torch.no_grad(), hooks(model, [(z_name(0), partial(patch, values=corrupt_z[0], positions=pos, heads=1))]):
        _, unfrozen = run_with_cache(model, clean, [name])
    group = 2 if family == "llama" and kind in "kv" else 1
    with torch.no_grad(), hooks(model, patching_hooks([name], unfrozen, positions=pos, heads=3 // group)):
        unfrozen_out = forward(model, clean)
    assert (unfrozen_out - out).abs().max() > 1e-3
    clean_logits = forward(model, clean).detach()
    assert (out - clean_logits).abs().max() > 1e-3


def test_path_patching_scores_match_single_runs():
    model, clean, corrupted = tiny_model("gpt2", n_layer=3), tiny_inputs(), tiny_inputs(seed=5)
    answer = torch.tensor([3, 4, 5])
    receivers = [(2, 0), (1, 3)]
    scores = path_patching_scores(model, clean, corrupted, answer, sender_pos=-1, receivers=receivers,
                                  receiver_input="q", receiver_pos=-1, batch_heads=5)
    assert scores[2].eq(0).all()  # senders at or after the last receiver layer cannot reach it
    p_clean = answer_prob(forward(model, clean).detach(), answer)
    for sender in [(0, 0), (1, 2)]:
        logits = path_patch(model, clean, corrupted, sender, -1, receivers, "q", receiver_pos=-1)
        expected = ((answer_prob(logits, answer) - p_clean) / p_clean).mean()
        assert_close(scores[sender], expected, atol=1e-6, rtol=1e-4)
    to_logits = path_patching_scores(model, clean, corrupted, answer, sender_pos=-1)
    assert to_logits[2].abs().max() > 0


# ---------------------------------------------------------------- circuits, CMAP ------------------------------------
@pytest.mark.parametrize("family", ("gpt2", "llama", "bert"))
def test_mean_ablation_circuit_extremes(family):
    model, ids = tiny_model(family), tiny_inputs()
    spec = model_spec(model)
    _, ref_z = cache_z(model, tiny_inputs(batch=6, seed=9))
    mean_z = {L: z.mean(0) for L, z in ref_z.items()}  # per-position means, (T, H, d)
    everything = {(L, h) for L in range(spec.n_layers) for h in range(spec.n_heads)}
    positions = {t: t for t in range(8)}
    full = mean_ablation_circuit(model, ids, mean_z, {t: everything for t in range(8)}, positions)
    assert torch.equal(full, forward(model, ids).detach())
    empty = mean_ablation_circuit(model, ids, mean_z, {"last": set()}, {"last": -1})
    all_mean = [(z_name(L), partial(patch, values=mean_z[L])) for L in range(spec.n_layers)]
    with torch.no_grad(), hooks(model, all_mean):
        assert torch.equal(empty, forward(model, ids))
    last_only = mean_ablation_circuit(model, ids, mean_z, {"last": everything}, {"last": torch.tensor([7, 7, 7])})
    if family in CAUSAL:  # earlier positions are still fully mean-ablated
        assert torch.equal(last_only[:, :7], empty[:, :7]) and (last_only[:, 7] - empty[:, 7]).abs().max() > 0


@pytest.mark.parametrize("family", ("gpt2", "llama", "gemma3"))
def test_cross_model_patch(family):
    base, ids, p = tiny_model(family), tiny_inputs(), 5
    tuned = perturbed_copy(base)
    spec = model_spec(base)
    every = {(L, h): None for L in range(spec.n_layers) for h in range(spec.n_heads)}
    base_logits = forward(base, ids).detach()
    assert torch.equal(cross_model_patch(base, base, ids, every), base_logits)
    patched = cross_model_patch(base, tuned, ids, {(0, 1): p, (1, 2): p})
    assert torch.equal(patched[:, :p], base_logits[:, :p])
    assert (patched[:, p:] - base_logits[:, p:]).abs().amax(-1).gt(1e-6).all()  # every later position moves
    _, tuned_z = cache_z(tuned, ids)
    with torch.no_grad(), hooks(base, [(z_name(0), partial(patch, values=tuned_z[0], positions=p, heads=1)),
                                       (z_name(1), partial(patch, values=tuned_z[1], positions=p, heads=2))]):
        assert torch.equal(patched, forward(base, ids))


# ---------------------------------------------------------------- DCM ------------------------------------------------
def _one_route_model():
    """1-layer GPT-2 whose only route from earlier tokens to the last position's logits is head 0."""
    model = tiny_model("gpt2", n_layer=1, n_head=2, seed=3)
    with torch.no_grad():
        model.transformer.h[0].attn.c_proj.weight[16:] = 0  # head 1 writes nothing
        model.transformer.h[0].attn.c_proj.weight[:16] *= 30  # head 0 dominates the residual stream
        model.transformer.h[0].mlp.c_proj.weight.zero_()
        model.transformer.h[0].mlp.c_proj.bias.zero_()
    return model


def test_dcm_finds_the_only_route():
    model = _one_route_model()
    base = tiny_inputs(batch=48, seq=6, seed=11)
    source = tiny_inputs(batch=48, seq=6, seed=12)
    source[:, -1] = base[:, -1]  # same last token: only the context differs
    target = forward(model, source)[:, -1].argmax(-1).detach()
    base_acc = (forward(model, base)[:, -1].argmax(-1) == target).float().mean().item()
    assert base_acc < 0.5
    result = dcm_masks(model, base, source, target, heads=[(0, 0), (0, 1)], position=-1, lam=0.01, epochs=6,
                       batch=16)
    assert result.mask.tolist() == [0.0, 1.0] and result.selected == [(0, 0)]
    assert result.accuracy == 1.0
    assert all(p.grad is None for p in model.parameters())
    kept = dcm_masks(model, base, source, target, heads=[(0, 0), (0, 1)], position=-1, lam=1e4, epochs=1)
    assert kept.mask.tolist() == [1.0, 1.0] and kept.accuracy == pytest.approx(base_acc)
