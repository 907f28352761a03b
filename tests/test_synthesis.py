"""Tests for lib.synthesis (the three lenses) and lib.chapters.synthesis (discovery, rules, failure message).

Known answers: a model compared with itself has CKA 1 and weight change 0 everywhere; perturbing one block moves
only that block's weight change; patching the last residual stream of a tuned model that shares the final norm and
unembedding with its base recovers exactly its metric (recovery 1), patching the shared embedding output recovers
nothing (recovery 0); a pair without a metric gap gives NaN recovery.
"""
import copy

import numpy as np
import pytest
import torch

from lib import synthesis as lens
from lib.config import PROFILES
from lib.chapters import NOTEBOOKS
from lib.chapters import synthesis as study
from tests._tiny import FAMILIES, perturbed_copy, tiny_inputs, tiny_model


def next_token_logprob(model, inputs, batch: int = 2) -> float:
    """Mean log-probability of the next token, computed in batches of 2 rows (as chapters' metrics batch)."""
    ids, total = inputs["input_ids"], 0.0
    for i in range(0, len(ids), batch):
        logits = model(input_ids=ids[i:i + batch]).logits[:, :-1].float()
        lp = torch.log_softmax(logits, -1).gather(-1, ids[i:i + batch, 1:, None])
        total += lp.sum().item()
    return total / (ids.shape[0] * (ids.shape[1] - 1))


# ---------------------------------------------------------------------------------------------- no model
def test_depth_and_halves():
    assert lens.depth_fraction(4).tolist() == [0, 0.25, 0.5, 0.75, 1.0]
    early, late = lens.halves(4)
    assert early.tolist() == [True, True, True, False, False] and late.tolist() == [False, False, False, True, True]
    assert lens.halves(1)[1].tolist() == [False, True]  # a one-layer model: embeddings early, its block late
    assert lens.point_labels(2) == ["embed", "block 0", "block 1"]


def test_recovery_formula_and_guard():
    assert np.allclose(lens.recovery([0.5, 0.75, 1.0], 0.5, 1.0), [0.0, 0.5, 1.0])
    assert np.allclose(lens.recovery([0.3], 0.5, 0.3), [1.0])  # a negative gain is shared out the same way
    assert np.isnan(lens.recovery([0.5, 0.6], 0.5, 0.51, min_gap=0.02)).all()
    assert lens.first_above(np.array([np.nan, 0.2, 0.7, 0.4]), 0.5) == 2
    assert lens.first_above(np.array([np.nan, 0.2]), 0.5) is None


def _pair_lens(cka, weight, module="lin", name="lin_tuned"):
    n = len(cka) - 1
    return study.PairLens("01_lin", module, name, "gpt2", n, 8, 100, 10, np.array(cka, float), np.array(cka, float),
                          np.array(weight, float), 0.0, 0.2, 0.8, np.zeros(n + 1), np.zeros(n + 1))


def test_classes_and_verdicts_follow_the_stated_rules():
    cfg = study.Config.load("tiny", {"cka_reuse": 0.7, "weight_reuse": 0.5, "depth_margin": 0.05})
    kept = _pair_lens([1, 0.9, 0.9, 0.8, 0.8], [0, 0.1, 0.1, 0.1, 0.1])
    assert study.classify(kept, cfg) == "reuse" and study.verdict(kept, cfg) == "reproduced"
    moved = _pair_lens([1, 0.9, 0.9, 0.8, 0.8], [0, 0.1, 0.1, 0.9, 0.9])  # representation kept, weights moved
    assert study.classify(moved, cfg) == "rebuild" and study.verdict(moved, cfg) == "partly"
    scratch = _pair_lens([np.nan, 0.2, 0.2, 0.1, 0.1], [2, 1, 1, 1, 1], name="lin_scratch")
    assert study.expectation(scratch).kind == "rebuild" and study.verdict(scratch, cfg) == "reproduced"
    zhao = _pair_lens([1, 0.9, 0.8, 0.5, 0.4], [0, 0.1, 0.1, 0.1, 0.1], module="zhao", name="zhao: E0 -> E1")
    assert study.classify(zhao, cfg) == "rebuild" and study.verdict(zhao, cfg) == "reproduced"
    flat = _pair_lens([0.5, 0.5, 0.5, 0.5, 0.5], [0, 0, 0, 0, 0], module="zhao", name="zhao: E0 -> C_x")
    assert study.verdict(flat, cfg) == "not reproduced"
    claim = study.claims([kept], cfg)[0]
    assert claim.verdict == "reproduced" and claim.id == "lin:lin_tuned"


def test_aggregate_averages_seeds_and_keeps_their_spread():
    a = _pair_lens([np.nan, 0.8, 0.6], [0.0, 0.1, 0.3])
    b = _pair_lens([np.nan, 0.6, 0.2], [0.0, 0.3, 0.5])
    b.seed_index, b.m_tuned = 1, 0.6
    other = _pair_lens([1, 1, 1], [0, 0, 0], name="lin_scratch")
    agg = {p.name: p for p in study.aggregate([a, other, b])}
    m = agg["lin_tuned"]
    assert m.n_seeds == 2 and agg["lin_scratch"].n_seeds == 1
    np.testing.assert_allclose(m.cka, [np.nan, 0.7, 0.4])  # an all-NaN point stays NaN
    np.testing.assert_allclose(m.weight, [0.0, 0.2, 0.4])
    np.testing.assert_allclose(m.sd["cka"][1:], [np.std([0.8, 0.6], ddof=1), np.std([0.6, 0.2], ddof=1)])
    assert m.m_tuned == pytest.approx(0.7)
    assert m.late_spread("cka") == pytest.approx(np.std([0.6, 0.2], ddof=1))  # late half = the last point here
    assert np.isnan(agg["lin_scratch"].late_spread("cka"))
    claim = study.claims([m], study.Config.load("tiny"))[0]
    assert claim.n == 2 and claim.spread == pytest.approx(m.late_spread("cka"))


def test_a_chapter_with_fewer_seeds_stops_without_error(monkeypatch):
    from lib.chapters import lin

    def pairs(profile, params=None, seed_index=0):
        return [{"seed": lens.seed_at([7, 8], seed_index)}]

    monkeypatch.setattr(lin, "synthesis_pairs", pairs)
    assert study.chapter_pairs("01_lin", "lin", "tiny", 1) == [{"seed": 8}]
    assert study.chapter_pairs("01_lin", "lin", "tiny", 2) is None
    with pytest.raises(IndexError):
        lens.seed_at([], 0)


def test_token_mask_readout_rule():
    ids = torch.zeros(2, 5, dtype=torch.long)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
    labels = torch.full((2, 5), -100)
    labels[0, 4], labels[1, 2] = 7, 7  # answers at positions 4 and 2: read out at 3 and 1
    model = tiny_model("gpt2")
    got = lens.token_mask(model, {"input_ids": ids, "attention_mask": mask, "labels": labels}, "readout")
    assert got.nonzero().tolist() == [[0, 3], [1, 1]]
    assert lens.token_mask(model, {"input_ids": ids, "attention_mask": mask}, "readout").sum() == 8  # no labels
    assert lens.token_mask(model, {"input_ids": ids, "attention_mask": mask, "labels": labels}, "all").sum() == 8
    cls = {"input_ids": ids, "attention_mask": mask, "labels": torch.tensor([0, 1])}
    assert lens.token_mask(tiny_model("bert"), cls, "readout").nonzero().tolist() == [[0, 0], [1, 0]]
    assert lens.token_mask(model, cls, "readout").nonzero().tolist() == [[0, 4], [1, 2]]  # causal: last token
    answer = {"input_ids": ids, "attention_mask": mask, "answer_ids": torch.tensor([3, 4])}
    assert lens.token_mask(model, answer, "readout").nonzero().tolist() == [[0, 4], [1, 2]]


def test_discovery_finds_chapters_with_synthesis_pairs():
    found = study.discover()
    modules = [m for _, m in found]
    assert {"lin", "zhao", "tzach", "horn"} <= set(modules)
    assert "synthesis" not in modules and not any("scorecard" in m for m in modules)
    assert "data" not in modules and "base_models" not in modules  # no synthesis_pairs there
    order = list(NOTEBOOKS)
    assert [nb for nb, _ in found] == sorted((nb for nb, _ in found), key=order.index)


def test_missing_cache_names_the_notebook_to_run(monkeypatch):
    from lib.chapters import lin

    def not_cached(profile, params=None, seed_index=0):
        raise RuntimeError("this model is not in the cache")

    monkeypatch.setattr(lin, "synthesis_pairs", not_cached)
    with pytest.raises(study.ChapterNotReady, match=r"run 01_lin in the tiny profile first: make run NB=01_lin "
                                                    r"PROFILE=tiny"):
        study.chapter_pairs("01_lin", "lin", "tiny")


@pytest.mark.parametrize("profile", PROFILES)
def test_every_profile_loads(profile):
    cfg = study.Config.load(profile)
    assert cfg.profile == profile and cfg.tokens in ("readout", "all")


# ---------------------------------------------------------------------------------------------- tiny models
@pytest.mark.models
@pytest.mark.parametrize("family", FAMILIES)
def test_model_with_itself(family):
    model = tiny_model(family)
    inputs = {"input_ids": tiny_inputs(batch=6, seq=8), "attention_mask": torch.ones(6, 8, dtype=torch.long)}
    n = lens.model_spec(model).n_layers
    for debiased in (False, True):
        cka = lens.cka_lens(model, copy.deepcopy(model), inputs, "all", debiased=debiased, chunk=4)
        assert cka.shape == (n + 1,) and np.allclose(cka, 1.0, atol=1e-6)
    weight, head = lens.weight_lens(model, copy.deepcopy(model))
    assert weight.shape == (n + 1,) and (weight == 0).all() and head == 0


@pytest.mark.models
@pytest.mark.parametrize("family", ("gpt2", "llama", "bert", "gemma3"))
def test_weight_change_of_one_perturbed_block(family):
    base = tiny_model(family)
    tuned = copy.deepcopy(base)
    with torch.no_grad():
        for p in lens.model_spec(tuned).blocks[1].parameters():
            p.add_(0.1 * torch.randn_like(p))
    weight, head = lens.weight_lens(base, tuned)
    assert weight[2] > 0.01 and weight[0] == 0 and weight[1] == 0 and head == 0  # point 2 = block 1


@pytest.mark.models
@pytest.mark.parametrize("family", ("gpt2", "llama", "mistral", "gemma3"))
def test_patching_recovery_known_answers(family):
    base = tiny_model(family)
    tuned = perturbed_copy(base, scale=1.0)  # blocks differ; embeddings, final norm and unembedding are shared
    inputs = {"input_ids": tiny_inputs(batch=5, seq=8)}
    out = lens.patching_lens(base, tuned, inputs, next_token_logprob, min_gap=1e-6)
    assert abs(out["m_tuned"] - out["m_base"]) > 1e-3, "the perturbation must change the metric"
    assert out["recovery"][-1] == pytest.approx(1.0, abs=1e-4)  # the last resid_post determines the logits
    assert out["recovery"][0] == pytest.approx(0.0, abs=1e-4)  # shared embeddings: patching them changes nothing
    assert next_token_logprob(base, inputs) == out["m_base"]  # the hooks are gone afterwards


@pytest.mark.models
def test_recovery_is_nan_without_a_gap():
    base = tiny_model("gpt2")
    inputs = {"input_ids": tiny_inputs(batch=4, seq=6)}
    for tuned in (base, copy.deepcopy(base)):  # the same object too: the patch must not recurse
        out = lens.patching_lens(base, tuned, inputs, next_token_logprob)
        assert np.isnan(out["recovery"]).all() and np.allclose(out["m_patched"], out["m_base"])


@pytest.mark.models
def test_cka_of_constant_rows_is_nan():
    model = tiny_model("bert")
    inputs = {"input_ids": tiny_inputs(batch=6, seq=8), "labels": torch.zeros(6, dtype=torch.long)}
    inputs["input_ids"][:, 0] = 1  # the same first token everywhere: the [CLS] embedding is one vector
    cka = lens.cka_lens(model, perturbed_copy(model), inputs, "readout")
    assert np.isnan(cka[0]) and np.isfinite(cka[1:]).all()
