"""Tests for lib.hooks: unit tests on plain tensors, then (marked `models`) properties on tiny random models."""
from functools import partial

import pytest
import torch
from torch.testing import assert_close

from lib.hooks import (hook_points, hooks, mean_ablate, mean_activations, model_spec, patch, patching_hooks,
                       position_mask, run_with_cache, select_positions, zero_ablate)
from tests._tiny import CAUSAL, FAMILIES, perturbed_copy, tiny_inputs, tiny_model

# ---------------------------------------------------------------- unit tests, no model -------------------------------


def test_position_mask_forms():
    assert position_mask((2, 4), None).all()
    assert position_mask((2, 4), 1).tolist() == [[False, True, False, False]] * 2
    assert position_mask((2, 4), [0, -1]).tolist() == [[True, False, False, True]] * 2
    per_example = position_mask((2, 4), torch.tensor([0, 3]))
    assert per_example.tolist() == [[True, False, False, False], [False, False, False, True]]


def test_patch_positions_heads_and_means():
    act = torch.zeros(2, 4, 3, 5)  # (B, T, H, d)
    src = torch.ones(2, 4, 3, 5)
    out = patch(act, "x", values=src, positions=torch.tensor([1, 2]), heads=[0, 2])
    assert out.sum() == 2 * 2 * 5 and out[0, 1, 0].eq(1).all() and out[1, 2, 2].eq(1).all() and out[0, 1, 1].eq(0).all()
    per_position_mean = torch.arange(4.0).view(4, 1, 1)  # (T, 1, 1) broadcasts like a (T, H, d) mean
    out = mean_ablate(act, "x", means={"x": per_position_mean}, positions=3)
    assert out[:, 3].eq(3).all() and out[:, :3].eq(0).all()
    assert zero_ablate(src, "x", positions=0)[:, 0].eq(0).all()
    assert select_positions(src[..., 0, 0] * torch.arange(4.0), torch.tensor([1, 3])).tolist() == [1.0, 3.0]


# ---------------------------------------------------------------- tiny models ----------------------------------------

@pytest.mark.models
@pytest.mark.parametrize("family", FAMILIES)
def test_spec_and_hook_points(family):
    model = tiny_model(family)
    spec = model_spec(model)
    assert spec.d_head == (16 if family == "gemma3" else 8)  # Gemma-3: head_dim != d_model / n_heads
    assert spec.n_kv_heads == (4 if family in ("gpt2", "bert") else 2)
    _, cache = run_with_cache(model, tiny_inputs(), hook_points(model))
    assert len(cache) == 9 * spec.n_layers
    assert cache["blocks.0.attn.hook_z"].shape == (3, 8, 4, spec.d_head)
    assert cache["blocks.0.attn.hook_k"].shape == (3, 8, spec.n_kv_heads, spec.d_head)


@pytest.mark.models
@pytest.mark.parametrize("family", FAMILIES + ("gpt2-sdpa",))
def test_patching_clean_into_clean_changes_nothing(family):
    model = tiny_model(family.split("-")[0], attn_implementation="sdpa" if "sdpa" in family else "eager")
    ids = tiny_inputs()
    names = hook_points(model)
    logits, cache = run_with_cache(model, ids, names)
    for name in names:
        with torch.no_grad(), hooks(model, patching_hooks([name], cache, positions=torch.tensor([0, 3, 7]))):
            assert torch.equal(model(ids).logits, logits), name
    with torch.no_grad(), hooks(model, patching_hooks(names, cache)):
        assert torch.equal(model(ids).logits, logits)


@pytest.mark.models
@pytest.mark.parametrize("family", FAMILIES)
def test_heads_through_output_projection_give_attn_out(family):
    model = tiny_model(family)
    spec = model_spec(model)
    o_proj = {"gpt2": "attn.c_proj", "bert": "attention.output.dense"}.get(family, "self_attn.o_proj")
    _, cache = run_with_cache(model, tiny_inputs(), lambda n: "hook_z" in n or "attn_out" in n)
    for L, block in enumerate(spec.blocks):
        z = cache[f"blocks.{L}.attn.hook_z"]
        with torch.no_grad():
            out = block.get_submodule(o_proj)(z.flatten(-2))
        assert_close(out, cache[f"blocks.{L}.hook_attn_out"], atol=1e-5, rtol=0)


@pytest.mark.models
@pytest.mark.parametrize("family", FAMILIES)
def test_zero_ablating_a_head_moves_only_later_positions(family):
    model, ids, p = tiny_model(family), tiny_inputs(), 4
    L = model_spec(model).n_layers - 1
    with torch.no_grad():
        clean = model(ids).logits
        with hooks(model, [(f"blocks.{L}.attn.hook_z", partial(zero_ablate, positions=p, heads=1))]):
            ablated = model(ids).logits
    if family in CAUSAL:
        assert torch.equal(ablated[:, :p], clean[:, :p])  # bitwise: causal attention never sees position p
        assert (ablated[:, p] - clean[:, p]).abs().max() > 1e-6
    else:  # BERT is bidirectional, but a head at position p in the last layer only feeds position p's output
        assert torch.equal(ablated[:, :p], clean[:, :p]) and (ablated[:, p] - clean[:, p]).abs().max() > 1e-6
    ablate_first = [(f"blocks.0.attn.hook_z", partial(zero_ablate, positions=p, heads=1))]
    with torch.no_grad(), hooks(model, ablate_first):
        early = model(ids).logits
    if family in CAUSAL:
        assert torch.equal(early[:, :p], clean[:, :p])
    elif model_spec(model).n_layers > 1:
        assert (early[:, :p] - clean[:, :p]).abs().max() > 0  # bidirectional: earlier positions see it


@pytest.mark.models
@pytest.mark.parametrize("family", ("gpt2", "llama", "bert"))
def test_hooks_removed_after_exception(family):
    model, ids = tiny_model(family), tiny_inputs()
    with torch.no_grad():
        model(ids, output_hidden_states=True)  # transformers installs its own permanent capture hooks on first use

    def snapshot():
        return {n: (len(m._forward_hooks), len(m._forward_pre_hooks)) for n, m in model.named_modules()}

    before, seen = snapshot(), []
    with pytest.raises(RuntimeError, match="boom"):
        with hooks(model, [(n, lambda a, n_: seen.append(n_)) for n in hook_points(model)]):
            assert snapshot() != before
            model(ids)
            raise RuntimeError("boom")
    assert len(seen) == len(hook_points(model))
    assert snapshot() == before


@pytest.mark.models
@pytest.mark.parametrize("family", FAMILIES)
def test_resid_matches_output_hidden_states(family):
    model, ids = tiny_model(family), tiny_inputs()
    n = model_spec(model).n_layers
    logits, cache = run_with_cache(model, ids, lambda name: "resid" in name)
    with torch.no_grad():
        hidden = model(ids, output_hidden_states=True).hidden_states
    assert torch.equal(cache["blocks.0.hook_resid_pre"], hidden[0])
    for L in range(n - 1):
        assert torch.equal(cache[f"blocks.{L}.hook_resid_post"], hidden[L + 1])
        assert torch.equal(cache[f"blocks.{L + 1}.hook_resid_pre"], hidden[L + 1])
    last = cache[f"blocks.{n - 1}.hook_resid_post"]
    base = model.base_model
    final_norm = getattr(base, "ln_f", None) or getattr(base, "norm", None)
    if final_norm is None:  # BERT: no final norm
        assert torch.equal(last, hidden[-1])
    else:  # hidden_states[-1] is after the final norm, resid_post is before it
        with torch.no_grad():
            assert_close(final_norm(last), hidden[-1], atol=1e-6, rtol=0)


@pytest.mark.models
@pytest.mark.parametrize("family", FAMILIES)
def test_cross_model_resid_patching_reproduces_other_model(family):
    base = tiny_model(family)
    tuned = perturbed_copy(base)  # blocks differ, embeddings / final norm / unembedding shared
    ids = tiny_inputs()
    names = [f"blocks.{L}.hook_resid_post" for L in range(model_spec(base).n_layers)]
    tuned_logits, tuned_cache = run_with_cache(tuned, ids, names)
    base_logits, _ = run_with_cache(base, ids, [])
    assert (base_logits - tuned_logits).abs().max() > 1e-3
    with torch.no_grad(), hooks(base, patching_hooks(names, tuned_cache)):
        patched = base(ids).logits
    assert_close(patched, tuned_logits, atol=1e-6, rtol=0)


@pytest.mark.models
def test_run_with_cache_positions_and_means():
    model, ids = tiny_model("llama"), tiny_inputs(batch=4)
    name = "blocks.1.attn.hook_z"
    _, full = run_with_cache(model, ids, [name])
    _, last = run_with_cache(model, ids, [name], positions=-1)
    _, some = run_with_cache(model, ids, [name], positions=[1, 2])
    _, each = run_with_cache(model, ids, [name], positions=torch.tensor([0, 1, 2, 3]))
    assert torch.equal(last[name], full[name][:, -1]) and torch.equal(some[name], full[name][:, [1, 2]])
    assert torch.equal(each[name], full[name][torch.arange(4), torch.arange(4)])
    means = mean_activations(model, ids, [name], chunk=3)  # two chunks
    assert_close(means[name], full[name].mean(0), atol=1e-6, rtol=0)
    mask = torch.ones_like(ids)
    mask[:, -2:] = 0
    pooled = mean_activations(model, {"input_ids": ids, "attention_mask": mask}, [name], over_positions=True)
    _, masked = run_with_cache(model, {"input_ids": ids, "attention_mask": mask}, [name])
    assert_close(pooled[name], masked[name][:, :-2].mean((0, 1)), atol=1e-6, rtol=0)


@pytest.mark.models
def test_bad_hooks_are_rejected():
    model, ids = tiny_model("gpt2"), tiny_inputs()
    with pytest.raises(KeyError):
        with hooks(model, [("blocks.9.hook_resid_pre", lambda a, n: None)]):
            pass
    with pytest.raises(ValueError, match="shape"):
        with hooks(model, [("blocks.0.hook_resid_pre", lambda a, n: a[:, :1])]):
            model(ids)
    assert not model_spec(model).blocks[0]._forward_pre_hooks
