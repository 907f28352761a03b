"""Tests for lib.lenses (the three lenses) and the lib.chapters.synthesis package (sources, cache, rules).

Known answers: a model compared with itself has CKA 1 and weight change 0 everywhere; perturbing one block moves
only that block's weight change; patching the last residual stream of a tuned model that shares the final norm and
unembedding with its base recovers exactly its metric (recovery 1), patching the shared embedding output recovers
nothing (recovery 0); a pair without a metric gap gives NaN recovery. Every rule of claims.py has a constructed
input where it must come out "reproduced", one where it must not, and one whose precondition fails.
"""
import copy
import json
import sys
import types

import numpy as np
import pytest
import torch

from lib import lenses as lens
from lib.chapters import NOTEBOOKS, SYNTHESIS_SOURCES
from lib.chapters.synthesis import build, claims as rules, config, measure, report
from lib.claims import INCONCLUSIVE, NOT_REPRODUCED, NOT_TESTABLE, REPRODUCED, VERDICTS
from lib.config import PROFILES, ConfigError
from lib.hooks import model_spec
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


def test_pair_from_dict_names_what_is_missing():
    p = lens.Pair.from_dict({"name": "x", "base": 1, "tuned": 2, "inputs": 3, "metric": len})
    assert p.name == "x" and p.tokenizer is None
    with pytest.raises(ValueError, match="metric"):
        lens.Pair.from_dict({"name": "x", "base": 1, "tuned": 2, "inputs": 3})


def _lens(cka, weight, module="lin", name="lin_tuned", notebook="01_lin", seed_index=0, testable=1.0, null=0.0,
          ceiling=1.0):
    """One seed's lenses; the index's null and ceiling are constant over depth (0 and 1: the index equals the CKA)."""
    n = len(cka) - 1
    p = build.PairLens(notebook, module, name, "gpt2", n, 8, 100, 10, np.array(cka, float), np.array(cka, float),
                       np.array(weight, float), 0.0, 0.2, 0.8, np.zeros(n + 1), np.zeros(n + 1), seed_index,
                       chapter_testable=testable)
    for attr, v in (("null_cka", null), ("null_cka_alt", null), ("random_null_cka", null), ("ceiling_cka", ceiling),
                    ("ceiling_cka_alt", ceiling)):
        setattr(p, attr, np.full(n + 1, v, dtype=float))
    return p


NULL, CEILING = 0.3, 0.9  # the references of the constructed pairs: CKA = NULL + index * (CEILING - NULL)


def _seeds(index_late, index_early=None, n_layers=4, weight_late=0.1, **kw):
    """One PairLens per seed whose reuse index has the given late-half (and early-half) value, over n_layers blocks."""
    early, late = lens.halves(n_layers)
    out = []
    for i, il in enumerate(index_late):
        ie = index_early[i] if index_early is not None else 0.95
        cka = NULL + np.where(late, il, ie) * (CEILING - NULL)
        weight = np.where(late, weight_late, 0.01)
        out.append(_lens(cka, weight, seed_index=i, null=NULL, ceiling=CEILING, **kw))
    return out


def _claim(per_seed, cfg=None):
    cfg = cfg or config.Config.load("tiny")
    (p,) = measure.aggregate(per_seed)
    return rules.claim(measure.measured(p, cfg))


def test_every_pair_of_every_source_has_a_rule():
    assert {m for m, _, _ in rules.FOR_PAIRS} == set(SYNTHESIS_SOURCES)
    assert rules.rule_for("lin", "x") is rules.LIN_TUNED
    assert build.NULL_PAIRS == {("lin", "lin_scratch"): "lin_tuned"}  # the scratch pair is a control, not a claim
    assert set(rules.KIND) == {r.id for r in rules.RULES}
    with pytest.raises(KeyError, match="no synthesis rule"):
        rules.rule_for("data", "x")


def test_no_threshold_is_a_parameter():
    fields = set(config.Config.field_names())
    assert not fields & {"index_reuse", "depth_margin", "min_separation", "cka_reuse", "weight_reuse"}
    assert all(f"{v:g}" in rules.LIN_TUNED.text() for v in (rules.INDEX_REUSE, rules.MIN_SEPARATION))
    assert f"{rules.DEPTH_MARGIN:g}" in rules.ZHAO_LATE.text()


# the reuse rules: (module, pair name, notebook)
REUSE = [("lin", "lin_tuned", "01_lin"), ("prakash", "prakash_goat", "03_prakash"),
         ("tzach", "tzach_sst", "04_tzach")]
REBUILD = [("horn", "base→lua", "05_horn")]


@pytest.mark.parametrize("module,name,notebook", REUSE)
def test_reuse_rules_known_answers(module, name, notebook):
    kw = dict(module=module, name=name, notebook=notebook)
    kept = _claim(_seeds([0.9, 0.95, 0.92], **kw))
    assert kept.verdict == REPRODUCED and kept.extra["class"] == "reuse"
    assert kept.value == pytest.approx(np.mean([0.9, 0.95, 0.92]))  # the claim's number is the late index
    assert kept.extra["rule"] == rules.rule_for(module, name).id and kept.id.startswith(module + ":")
    rebuilt = _claim(_seeds([0.1, 0.15, 0.05], **kw))
    assert rebuilt.verdict == NOT_REPRODUCED and rebuilt.extra["class"] == "rebuild"
    moved = _claim(_seeds([0.9, 0.95, 0.92], weight_late=1.2, **kw))  # the weight change decides nothing
    assert moved.verdict == REPRODUCED
    straddles = _claim(_seeds([0.2, 0.9, 0.6], **kw))
    assert straddles.verdict == INCONCLUSIVE and straddles.extra["class"] == "undecided"
    one_seed = _claim(_seeds([0.9], **kw))
    assert one_seed.verdict == INCONCLUSIVE and one_seed.interval is None and "too few seeds" in one_seed.reason
    gated = _claim(_seeds([0.9, 0.95, 0.92], testable=0.2, **kw))
    assert gated.verdict == NOT_TESTABLE and "measured 0.2" in gated.precondition
    assert gated.extra["class"] == "not testable" and gated.value == pytest.approx(kept.value)
    no_record = _claim(_seeds([0.9, 0.95, 0.92], testable=None, **kw))
    assert no_record.verdict == NOT_TESTABLE and "not measured" in no_record.precondition


@pytest.mark.parametrize("module,name,notebook", REBUILD)
def test_rebuild_rules_known_answers(module, name, notebook):
    kw = dict(module=module, name=name, notebook=notebook)
    rebuilt = _claim(_seeds([0.05, 0.1, 0.0], **kw))
    assert rebuilt.verdict == REPRODUCED and rebuilt.extra["class"] == "rebuild"
    kept = _claim(_seeds([0.9, 0.95, 0.92], **kw))
    assert kept.verdict == NOT_REPRODUCED and kept.extra["class"] == "reuse"
    gated = _claim(_seeds([0.05, 0.1, 0.0], testable=0.0, **kw))
    assert gated.verdict == NOT_TESTABLE, "a base that cannot do its task is not testable, not 'rebuild'"


def _no_sibling(per_seed):
    """The same seeds with no seed ceiling, as when every seed starts from its own base."""
    for p in per_seed:
        p.ceiling_cka = np.full_like(p.ceiling_cka, np.nan)
        p.ceiling_cka_alt = np.full_like(p.ceiling_cka, np.nan)
        p.no_ceiling = build.NO_SIBLING
    return per_seed


@pytest.mark.parametrize("module,name,notebook", REUSE + REBUILD)
def test_without_a_sibling_only_a_decision_above_the_threshold_stands(module, name, notebook):
    """Against a ceiling of 1 the index is a lower bound: "above index_reuse" still holds, "below" cannot be told."""
    kw = dict(module=module, name=name, notebook=notebook)
    high = _seeds([0.9, 0.95, 0.92], **kw)  # CKA high enough that even against a ceiling of 1 the index is high
    for p in high:
        p.cka = p.cka_alt = np.full_like(p.cka, 0.97)
    low = _claim(_no_sibling(_seeds([0.05, 0.1, 0.0], **kw)))
    above = _claim(_no_sibling(high))
    assert low.verdict == INCONCLUSIVE and "lower bound" in low.reason and build.NO_SIBLING in low.ours
    assert low.extra["class"] == "undecided" and not low.extra["has_ceiling"]
    expect = REPRODUCED if rules.rule_for(module, name) in (rules.LIN_TUNED, rules.PRAKASH_REUSE,
                                                              rules.TZACH_REUSE) else NOT_REPRODUCED
    assert above.verdict == expect and above.extra["class"] == "reuse"
    with_sibling = _claim(_seeds([0.05, 0.1, 0.0], **kw))  # the same low index with a ceiling is decided
    assert with_sibling.verdict != INCONCLUSIVE


def test_the_depth_rule_needs_a_ceiling_for_its_drop():
    kw = dict(module="zhao", name="zhao: E0 -> E1 (multi-task)", notebook="02_zhao")
    c = _claim(_no_sibling(_seeds([0.5, 0.45, 0.55], index_early=[0.95, 0.93, 0.94], **kw)))
    assert c.verdict == INCONCLUSIVE  # a difference of two lower bounds bounds nothing


def test_the_scratch_pair_is_a_control_shown_beside_its_tuned_pair():
    cfg = config.Config.load("tiny")
    pairs = measure.aggregate(_seeds([0.9, 0.95, 0.92]) + _seeds([0.05, 0.1, 0.0], name="lin_scratch"))
    claim_list = rules.claims([measure.measured(p, cfg) for p in pairs])
    assert [c.extra["pair"] for c in claim_list] == ["lin_tuned"]
    table = report.table(pairs, claim_list, cfg)
    assert table.loc[("01_lin", "lin_scratch"), "class"] == "control (the null of lin_tuned)"
    assert "null of lin_tuned" in measure.index_table(pairs, cfg).loc[("01_lin", "lin_scratch"), "ceiling"]
    assert "lin_scratch is the null of lin_tuned" in report.index_text(pairs, claim_list, cfg).data
    assert "control (the null of lin_tuned)" in report.chapter_text(pairs, claim_list, cfg).data


def test_references_that_cannot_be_told_apart_are_not_testable():
    per_seed = [_lens([0.5] * 5, [0.1] * 5, seed_index=i, null=0.8, ceiling=0.85) for i in range(3)]
    c = _claim(per_seed)
    assert c.verdict == NOT_TESTABLE and "seed-ceiling minus null" in c.precondition and "0.05" in c.precondition
    assert c.extra["class"] == "not testable"


def test_depth_rule_known_answers():
    kw = dict(module="zhao", name="zhao: E0 -> E1 (multi-task)", notebook="02_zhao")
    late = _claim(_seeds([0.5, 0.45, 0.55], index_early=[0.95, 0.93, 0.94], **kw))
    assert late.verdict == REPRODUCED and late.extra["rule"] == rules.ZHAO_LATE.id
    flat = _claim(_seeds([0.5, 0.52, 0.49], index_early=[0.5, 0.51, 0.5], **kw))
    assert flat.verdict == NOT_REPRODUCED
    shallow = _claim(_seeds([0.5, 0.45, 0.55], index_early=[0.95, 0.93, 0.94], n_layers=1, **kw))
    assert shallow.verdict == NOT_TESTABLE and "blocks in the model" in shallow.precondition


def test_every_rule_can_give_each_decided_outcome_and_names_its_preconditions():
    for rule in rules.RULES:
        assert rules.TESTABLE in rule.requires and rules.SEPARATED in rule.requires
        assert rule.gate({"chapter_testable": 1.0, "n_layers": 4, "separation": 0.5}) is None
        assert rule.gate({"chapter_testable": 0.0, "n_layers": 4, "separation": 0.5}).verdict == NOT_TESTABLE
        assert rule.gate({"chapter_testable": 1.0, "n_layers": 4, "separation": 0.0}).verdict == NOT_TESTABLE


def test_aggregate_averages_seeds_and_keeps_their_spread():
    a = _lens([np.nan, 0.8, 0.6], [0.0, 0.1, 0.3])
    b = _lens([np.nan, 0.6, 0.2], [0.0, 0.3, 0.5], seed_index=1)
    b.m_tuned = 0.6
    other = _lens([1, 1, 1], [0, 0, 0], name="lin_scratch")
    agg = {p.name: p for p in measure.aggregate([a, other, b])}
    m = agg["lin_tuned"]
    assert m.n_seeds == 2 and agg["lin_scratch"].n_seeds == 1
    np.testing.assert_allclose(m.cka, [np.nan, 0.7, 0.4])  # an all-NaN point stays NaN
    np.testing.assert_allclose(m.weight, [0.0, 0.2, 0.4])
    np.testing.assert_allclose(m.sd["cka"][1:], [np.std([0.8, 0.6], ddof=1), np.std([0.6, 0.2], ddof=1)])
    assert m.m_tuned == pytest.approx(0.7)
    assert measure.late_spread(m, "cka") == pytest.approx(np.std([0.6, 0.2], ddof=1))  # late half = last point
    assert np.isnan(measure.late_spread(agg["lin_scratch"], "cka"))
    assert measure.indicators(m)["late_cka"] == [0.6, 0.2]
    claim = rules.claim(measure.measured(m, config.Config.load("tiny")))
    assert claim.n == 2 and claim.spread == pytest.approx(measure.late_spread(m, "cka"))
    assert claim.value == pytest.approx(0.4) and claim.id == "lin:lin_tuned"  # null 0, ceiling 1: index = CKA


def test_report_tables_and_text_carry_the_claims():
    cfg = config.Config.load("tiny")
    pairs = measure.aggregate(_seeds([0.9, 0.95, 0.92]) + _seeds([0.05, 0.1, 0.0], name="lin_scratch"))
    claim_list = rules.claims([measure.measured(p, cfg) for p in pairs])
    table = report.table(pairs, claim_list, cfg)
    assert list(table["verdict"]) == [REPRODUCED, "— (a control, not a claim)"]
    assert list(table["class"]) == ["reuse", "control (the null of lin_tuned)"]
    text = report.overall_text(pairs, claim_list, cfg).data
    assert "1 reproduced" in text and "0 not testable at this scale" in text
    assert "lin_tuned" in report.chapter_text(pairs, claim_list, cfg).data
    assert "reproduced" in report.comparison_text(pairs, claim_list, cfg).data
    assert f"{rules.INDEX_REUSE:g}" in report.rules_text().data
    index = measure.index_table(pairs, cfg)
    assert index.loc[("01_lin", "lin_tuned"), "index late"] == pytest.approx(np.mean([0.9, 0.95, 0.92]), abs=1e-3)
    assert "lin_tuned" in report.index_text(pairs, claim_list, cfg).data
    import matplotlib.pyplot as plt

    fig = report.figure(pairs, cfg)
    assert len(fig.axes) == 4
    plt.close(fig)
    fig = report.headline_figure(pairs, cfg)
    assert len(fig.axes) == 2
    plt.close(fig)


def test_results_record_is_scoped_and_valid(tmp_path, monkeypatch):
    monkeypatch.setenv("STUDY_RESULTS", str(tmp_path))
    cfg = config.Config.load("smoke")
    pairs = measure.aggregate(_seeds([0.9, 0.92, 0.91]))
    claim_list = rules.claims([measure.measured(p, cfg) for p in pairs])
    record = report.write_results(claim_list, cfg, measure.models_info(pairs))
    saved = json.loads((tmp_path / "06_synthesis.json").read_text())
    assert saved["scope"] == "synthesis" and record["claims"][0]["verdict"] in VERDICTS
    assert saved["claims"][0]["rule"] and saved["claims"][0]["interval"]
    assert list(saved["models"]) == ["01_lin/lin_tuned"]


# ---------------------------------------------------------------------------------------------- sources
def _fake_chapter(monkeypatch, fn, name="fake"):
    monkeypatch.setitem(sys.modules, f"lib.chapters.{name}.build", types.SimpleNamespace(synthesis_pairs=fn))


def test_a_chapter_with_fewer_seeds_stops_without_error(monkeypatch):
    def pairs(profile, params=None, seed_index=0):
        seed = lens.seed_at([7, 8], seed_index)
        return [{"name": f"s{seed}", "base": None, "tuned": None, "inputs": None, "metric": len}]

    _fake_chapter(monkeypatch, pairs)
    assert [p.name for p in build.chapter_pairs("09_fake", "fake", "tiny", 1)] == ["s8"]
    assert build.chapter_pairs("09_fake", "fake", "tiny", 2) is None
    with pytest.raises(IndexError):
        lens.seed_at([], 0)


def test_missing_cache_names_the_notebook_to_run(monkeypatch):
    def not_cached(profile, params=None, seed_index=0):
        raise RuntimeError("this model is not in the cache")

    _fake_chapter(monkeypatch, not_cached)
    with pytest.raises(build.ChapterNotReady, match=r"run 09_fake in the tiny profile first: make run NB=09_fake "
                                                    r"PROFILE=tiny"):
        build.chapter_pairs("09_fake", "fake", "tiny")


def test_sources_are_the_explicit_list_in_book_order():
    found = build.sources(config.Config.load("tiny"))
    assert [m for _, m in found] == list(SYNTHESIS_SOURCES)
    order = list(NOTEBOOKS)
    assert [nb for nb, _ in found] == sorted((nb for nb, _ in found), key=order.index)
    chosen = build.sources(config.Config.load("tiny", {"chapters": ["04_tzach"]}))
    assert chosen == [("04_tzach", "tzach")]
    with pytest.raises(ConfigError):
        config.Config.load("tiny", {"chapters": ["06_synthesis"]})


def test_chapter_testable_reads_the_chapters_record(tmp_path, monkeypatch):
    monkeypatch.setenv("STUDY_RESULTS", str(tmp_path / "results"))
    (tmp_path / "results").mkdir()
    claims = [{"verdict": v} for v in (NOT_TESTABLE, NOT_TESTABLE, NOT_TESTABLE, REPRODUCED)]
    (tmp_path / "results" / "03_prakash.json").write_text(json.dumps({"profile": "tiny", "claims": claims}))
    monkeypatch.setattr(build, "BOOK_RESULTS", tmp_path / "nowhere")
    assert build.chapter_testable("03_prakash", config.Config.load("tiny")) == 0.25
    assert build.chapter_testable("03_prakash", config.Config.load("smoke")) is None  # another profile's record
    assert build.chapter_testable("01_lin", config.Config.load("tiny")) is None
    cfg = config.Config.load("tiny", {"results": str(tmp_path / "results")})
    assert build.chapter_testable("03_prakash", cfg) == 0.25


@pytest.mark.parametrize("profile", PROFILES)
def test_every_profile_loads(profile):
    cfg = config.Config.load(profile)
    assert cfg.profile == profile and cfg.tokens in ("readout", "all")


def test_config_imports_no_heavy_module():
    import subprocess

    code = ("import sys, lib.chapters.synthesis.config; "
            "print([m for m in ('torch', 'pandas', 'matplotlib', 'transformers') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


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


# ---------------------------------------------------------------------------------------------- tiny models
@pytest.mark.models
@pytest.mark.parametrize("family", FAMILIES)
def test_model_with_itself(family):
    model = tiny_model(family)
    inputs = {"input_ids": tiny_inputs(batch=6, seq=8), "attention_mask": torch.ones(6, 8, dtype=torch.long)}
    n = model_spec(model).n_layers
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
        for p in model_spec(tuned).blocks[1].parameters():
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


@pytest.mark.models
@pytest.mark.parametrize("family", FAMILIES)
def test_final_norm_point(family):
    model = tiny_model(family)
    inputs = {"input_ids": tiny_inputs(batch=6, seq=8), "attention_mask": torch.ones(6, 8, dtype=torch.long)}
    n = model_spec(model).n_layers
    cka = lens.cka_lens(model, perturbed_copy(model), inputs, "all", final_norm=True)
    assert cka.shape == (n + 2,)
    assert np.isnan(cka[-1]) if family == "bert" else np.isfinite(cka[-1])  # BERT is post-LN: no final norm
    same = lens.cka_lens(model, copy.deepcopy(model), inputs, "all", final_norm=True)
    assert np.allclose(same[np.isfinite(same)], 1.0, atol=1e-6)
    plain = lens.cka_lens(model, perturbed_copy(model), inputs, "all")
    np.testing.assert_allclose(plain, cka[:-1])  # the extra point leaves the layer points unchanged
    if family != "bert":  # the final norm's output is what the unembedding reads: HF's last hidden state
        mask = torch.ones(6, 8, dtype=torch.bool)
        states = lens.residual_states(model, inputs, mask, chunk=4, with_final_norm=True)
        hidden = model(**inputs, output_hidden_states=True).hidden_states[-1].reshape(-1, states[-1].shape[1])
        torch.testing.assert_close(states[-1], hidden.detach(), rtol=1e-5, atol=1e-5)


@pytest.mark.models
def test_lens_measurements_are_cached_per_pair(tmp_path, monkeypatch):
    monkeypatch.setenv("STUDY_CACHE", str(tmp_path / "cache"))
    base = tiny_model("gpt2")
    pair = lens.Pair("p", base, perturbed_copy(base), {"input_ids": tiny_inputs(batch=4, seq=6)}, next_token_logprob)
    cfg = config.Config.load("smoke", {"min_gap": 1e-6})
    first = build.measure_pair("01_lin", "lin", pair, cfg)
    again = build.measure_pair("01_lin", "lin", pair, cfg)
    assert not first.cached and again.cached
    np.testing.assert_array_equal(first.cka, again.cka)
    np.testing.assert_array_equal(first.recovery, again.recovery)
    direct = lens.cka_lens(pair.base, pair.tuned, pair.inputs, "readout", cfg.debiased, cfg.chunk)
    np.testing.assert_allclose(first.cka, direct)
    other = lens.Pair("p", base, perturbed_copy(base, seed=5), pair.inputs, next_token_logprob)
    assert not build.measure_pair("01_lin", "lin", other, cfg).cached  # other weights: another key
    assert build.model_fingerprint(base) == build.model_fingerprint(copy.deepcopy(base))
