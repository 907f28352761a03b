"""Known-answer tests of the reuse index (lib.lenses.reuse_index and its references in lib.chapters.synthesis).

index = (CKA(tuned, base) - CKA(null, base)) / (CKA(tuned, tuned') - CKA(null, base)). Exact answers: a tuned model
whose sibling seed is the base itself has index 1 at every point; a tuned model that is its own null has index 0;
references that coincide give NaN. Constructed pairs through the whole route (build -> measure -> claims), three
seeds each: tuned = base + a small perturbation, the null an unrelated model, must come out "reuse"; tuned = an
unrelated model (its seeds agreeing with one another) must come out "rebuild".
"""
import copy
import json

import numpy as np
import pytest
import torch

from lib import lenses
from lib.chapters.synthesis import build, claims as rules, config, measure, report
from lib.claims import REPRODUCED
from tests._tiny import perturbed_copy, tiny_inputs, tiny_model


def test_reuse_index_formula():
    np.testing.assert_allclose(lenses.reuse_index([0.9, 0.2, 0.55], [0.2, 0.2, 0.2], [0.9, 0.9, 0.9]), [1, 0, 0.5])
    assert lenses.reuse_index([1.0], [0.2], [0.9])[0] == pytest.approx(0.8 / 0.7)  # closer to base than a sibling
    assert np.isnan(lenses.reuse_index([0.5, 0.5, 0.5], [0.6, 0.6, np.nan], [0.6, 0.5, 0.9])).all()  # no separation


def _cfg():
    return config.Config.load("smoke", {"tokens": "all", "min_gap": 1e-6})


def _inputs():
    return {"input_ids": tiny_inputs(batch=16, seq=8, seed=3)}


def _metric(model, inputs) -> float:
    logits = model(input_ids=inputs["input_ids"]).logits[:, :-1].float()
    return torch.log_softmax(logits, -1).gather(-1, inputs["input_ids"][:, 1:, None]).mean().item()


@pytest.mark.models
def test_index_is_one_when_the_ceiling_is_the_base_and_zero_when_tuned_is_the_null(tmp_path, monkeypatch):
    monkeypatch.setenv("STUDY_CACHE", str(tmp_path / "cache"))
    cfg = _cfg()
    base = tiny_model("gpt2")
    pair = lenses.Pair("p", base, perturbed_copy(base, scale=0.005), _inputs(), _metric)
    cka = lenses.cka_lens(base, pair.tuned, pair.inputs, "all", cfg.debiased, cfg.chunk)
    ceiling = build.ceiling_lens("01_lin", pair, copy.deepcopy(base), cfg)["cka_all"]  # tuned' = the base
    null = build.null_lens("01_lin", pair, tiny_model("gpt2", seed=7), build.NULL_RANDOM, cfg)["cka_all"]
    index = lenses.reuse_index(cka, null, ceiling)
    assert np.isfinite(index[1:]).all()
    np.testing.assert_allclose(index[np.isfinite(index)], 1.0, atol=1e-6)
    as_null = build.null_lens("01_lin", pair, copy.deepcopy(pair.tuned), build.NULL_RANDOM, cfg)["cka_all"]
    zero = lenses.reuse_index(cka, as_null, ceiling)
    np.testing.assert_allclose(zero[np.isfinite(zero)], 0.0, atol=1e-6)


def _chapter(kind: str, n_seeds: int = 3):
    """Per seed, Lin's two pairs: base -> tuned and init -> scratch (the scratch model is lin_tuned's null)."""
    base, other = tiny_model("gpt2", seed=0), tiny_model("gpt2", seed=50)
    seeds = []
    for s in range(n_seeds):
        start = base if kind == "reuse" else other  # "rebuild": the tuned model shares nothing with the base
        tuned = perturbed_copy(start, scale=0.005, seed=10 + s)
        init, scratch = tiny_model("gpt2", seed=100 + s), tiny_model("gpt2", seed=200 + s)
        seeds.append([lenses.Pair("lin_tuned", base, tuned, _inputs(), _metric),
                      lenses.Pair("lin_scratch", init, scratch, _inputs(), _metric)])
    return seeds


def _run(kind: str, n_seeds: int = 3):
    cfg = _cfg()
    per_seed = build.measure_chapter("01_lin", "lin", _chapter(kind, n_seeds), cfg, testable=1.0)
    pairs = measure.aggregate(per_seed)
    return pairs, rules.claims([measure.measured(p, cfg) for p in pairs]), per_seed


@pytest.mark.models
def test_a_constructed_reuse_pair_comes_out_reuse(tmp_path, monkeypatch):
    monkeypatch.setenv("STUDY_CACHE", str(tmp_path / "cache"))
    pairs, claim_list, _ = _run("reuse")
    tuned, c = pairs[0], claim_list[0]
    assert tuned.null_kind == build.NULL_SCRATCH and c.extra["class"] == "reuse" and c.verdict == REPRODUCED
    assert c.interval[0] > rules.INDEX_REUSE
    assert measure.indicators(tuned)["late_index_random_null"]  # the fallback null is measured beside it


@pytest.mark.models
def test_a_constructed_rebuild_pair_comes_out_rebuild(tmp_path, monkeypatch):
    monkeypatch.setenv("STUDY_CACHE", str(tmp_path / "cache"))
    pairs, claim_list, _ = _run("rebuild")
    c = claim_list[0]
    assert c.extra["class"] == "rebuild" and c.verdict != REPRODUCED  # Lin's tuned pair expects reuse
    assert c.interval[1] < rules.INDEX_REUSE and abs(c.value) < 0.3


@pytest.mark.models
def test_ceilings_pair_each_seed_with_the_next_and_one_seed_has_none(tmp_path, monkeypatch):
    monkeypatch.setenv("STUDY_CACHE", str(tmp_path / "cache"))
    cfg, seeds = _cfg(), _chapter("reuse")
    per_seed = [p for p in build.measure_chapter("01_lin", "lin", seeds, cfg, 1.0) if p.name == "lin_tuned"]
    for i, p in enumerate(per_seed):
        expect = lenses.cka_lens(seeds[i][0].tuned, seeds[(i + 1) % 3][0].tuned, seeds[i][0].inputs, "all",
                                 cfg.debiased, cfg.chunk)
        np.testing.assert_allclose(p.ceiling_cka, expect, atol=1e-6)
        scratch = lenses.cka_lens(seeds[i][0].base, seeds[i][1].tuned, seeds[i][0].inputs, "all", cfg.debiased,
                                  cfg.chunk)
        np.testing.assert_allclose(p.null_cka, scratch, atol=1e-6)  # the null: the same seed's scratch model
    scratch = [p for p in per_seed_all(cfg, seeds) if p.name == "lin_scratch"]
    assert all(np.isnan(p.ceiling_cka).all() and p.no_ceiling == build.NO_SIBLING for p in scratch)  # own inits
    (one,) = measure.aggregate([p for p in build.measure_chapter("01_lin", "lin", seeds[:1], cfg, 1.0)
                                if p.name == "lin_tuned"])
    assert not measure.has_ceiling(one) and np.isnan(one.ceiling_cka).all()
    c = rules.claim(measure.measured(one, cfg))
    assert c.verdict == "inconclusive" and "too few seeds" in c.reason and "lower bound" in c.ours


def per_seed_all(cfg, seeds):
    return build.measure_chapter("01_lin", "lin", seeds, cfg, 1.0)


@pytest.mark.models
def test_tuned_models_of_different_bases_are_no_ceiling_but_a_new_head_is(tmp_path, monkeypatch):
    """Chapter 3 trains one base per seed: seed k's tuned model is no sibling of seed k+1's. A classifier head
    grafted onto one base (chapter 4) does not make the bases differ."""
    monkeypatch.setenv("STUDY_CACHE", str(tmp_path / "cache"))
    cfg = _cfg()
    per_base = []
    for s in range(3):
        base = tiny_model("gpt2", seed=s)
        per_base.append([lenses.Pair("prakash_track", base, perturbed_copy(base, 0.005, seed=10 + s), _inputs(),
                                     _metric)])
    lenses_ = build.measure_chapter("03_prakash", "prakash", per_base, cfg, 1.0)
    assert all(np.isnan(p.ceiling_cka).all() and p.no_ceiling == build.NO_SIBLING for p in lenses_)
    (agg,) = measure.aggregate(lenses_)
    assert measure.no_ceiling(agg) == build.NO_SIBLING
    base = tiny_model("gpt2", seed=0)
    relabelled = copy.deepcopy(base)
    relabelled.lm_head.weight = torch.nn.Parameter(relabelled.lm_head.weight.detach().clone() + 1.0)
    assert build.trunk_fingerprint(base) == build.trunk_fingerprint(relabelled)
    assert build.model_fingerprint(base) != build.model_fingerprint(relabelled)
    assert build.trunk_fingerprint(base) != build.trunk_fingerprint(perturbed_copy(base, 0.005))


def test_sae_lens_is_read_from_chapter_5s_record(tmp_path, monkeypatch):
    monkeypatch.setenv("STUDY_RESULTS", str(tmp_path))
    monkeypatch.setattr(build, "BOOK_RESULTS", tmp_path / "nowhere")
    cfg = config.Config.load("tiny")
    assert build.sae_persistence(cfg) is None
    record = {"profile": "tiny", "claims": [{"id": "few_persist", "verdict": "reproduced", "n": 3,
                                             "interval": [0.1, 0.3], "extra": {"independent_seeds": 0.05,
                                                                               "control": 0.25}}]}
    (tmp_path / "05_horn.json").write_text(json.dumps(record))
    sae = build.sae_persistence(cfg)
    assert sae["ratio"] == pytest.approx(0.2) and sae["interval"] == [0.1, 0.3]
    p = measure.aggregate([_horn_lens()])
    assert measure.index_table(p, cfg, sae).iloc[0]["SAE persistence / control"] == pytest.approx(0.2)
    assert "0.20" in report.index_text(p, rules.claims([measure.measured(q, cfg) for q in p]), cfg, sae).data


def _horn_lens():
    p = build.PairLens("05_horn", "horn", "base→lua", "mistral", 1, 8, 100, 10, np.array([0.9, 0.8]),
                       np.array([0.9, 0.8]), np.array([0.0, 0.1]), 0.0, 0.2, 0.8, np.zeros(2), np.zeros(2),
                       chapter_testable=1.0)
    p.null_cka, p.random_null_cka, p.null_cka_alt = (np.array([0.1, 0.1]) for _ in range(3))
    return p


def test_the_synthesis_rows_pass_the_scorecard_and_a_gated_row_is_never_not_reproduced(tmp_path, monkeypatch):
    from lib import results
    from lib.chapters import scorecard
    from lib.claims import NOT_TESTABLE

    monkeypatch.setenv("STUDY_RESULTS", str(tmp_path))
    cfg = config.Config.load("smoke")
    gated = _horn_lens()
    gated.ceiling_cka = np.array([0.12, 0.12])  # the ceiling is not above the null: nothing to calibrate against
    claim_list = rules.claims([measure.measured(p, cfg) for p in measure.aggregate([gated])])
    assert claim_list[0].verdict == NOT_TESTABLE and claim_list[0].precondition
    report.write_results(claim_list, cfg, {})
    records, _ = scorecard.load(scorecard.Config.load("smoke"))  # scorecard.check raises on a gated decided row
    counts = scorecard.counts_table(records, [])
    assert counts.loc["06_synthesis", NOT_TESTABLE] == 1 and counts.loc["06_synthesis", "not reproduced"] == 0
    assert results.read_all(tmp_path)[0]["scope"] == "synthesis"
    why = scorecard.claims_table(records).iloc[0]["why"]
    assert why.startswith("precondition failed: seed-ceiling minus null")
