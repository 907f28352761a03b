"""Tests of lib.chapters.horn (chapter 5: SAE features through fine-tuning and SLERP merging), one section per
module of the package: config, build, measure, claims (a known answer for every rule), report."""

import numpy as np
import pytest
import torch

from lib import bases
from lib import sae as saelib
from lib.claims import INCONCLUSIVE, NOT_REPRODUCED, NOT_TESTABLE, OFFLINE, REPRODUCED
from lib.config import ConfigError
from lib.paths import PARAMS_DIR
from lib.chapters.horn import build, claims, config, matching, measure, report

from _tiny import tiny_model


# ------------------------------------------------------------------------------------------------ config
@pytest.mark.parametrize("profile", ["smoke", "tiny", "local", "paper"])
def test_every_profile_loads(profile):
    cfg = config.Config.load(profile, {"device": "cpu"})
    assert cfg.n_seeds >= 2
    assert cfg.merge_t in cfg.ts and cfg.ts == sorted(cfg.ts)


@pytest.mark.parametrize("bad", [{"n_seeds": 1}, {"merge_t": 1.5}, {"device": "tpu"}, {"sweep_ts": [0.0, 2.0]},
                                 {"compare_tokens": 10, "sae_ctx": 24}, {"base_profile": "paper"},
                                 {"threshold": 0.8}])
def test_bad_parameters_raise_one_config_error(bad):
    with pytest.raises(ConfigError):
        config.Config.load("smoke", bad)


def test_no_verdict_threshold_is_a_parameter():
    assert "threshold" not in config.Config.field_names()
    for path in (PARAMS_DIR / "05_horn").glob("*.yaml"):
        assert "threshold" not in path.read_text(), path.name


def test_local_profile_uses_the_tiny_base():
    assert config.Config.load("local", {"device": "cpu"}).base_profile_resolved == "tiny"
    assert config.Config.load("smoke", {"device": "cpu"}).base_profile_resolved == "smoke"


# ------------------------------------------------------------------------------------------------ build
class _Oracle(torch.nn.Module):
    """Logits that put all mass on the true next token (or on `constant`)."""

    def __init__(self, vocab=11, constant=None):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))
        self.vocab, self.constant = vocab, constant

    def forward(self, ids):
        target = ids.roll(-1, dims=1) if self.constant is None else torch.full_like(ids, self.constant)
        return type("Out", (), {"logits": torch.nn.functional.one_hot(target, self.vocab).float()})()


def test_next_token_accuracy_known_answers():
    ids = torch.tensor([[1, 2, 3, 4], [3, 3, 5, 3]])
    assert build.next_token_accuracy(_Oracle(), ids) == 1.0
    # predicting 3 everywhere: targets are 2 3 4 | 3 5 3 -> 3 of 6 correct
    assert build.next_token_accuracy(_Oracle(constant=3), ids, batch_size=1) == 0.5


def test_merge_endpoints_and_midpoint():
    lua, stories = tiny_model("mistral", seed=0), tiny_model("mistral", seed=1)
    for t, want in ((0.0, lua), (1.0, stories)):
        merged = build.merge(lua, stories, t)
        for (name, p), q in zip(merged.state_dict().items(), want.state_dict().values()):
            assert torch.equal(p, q), name
    mid = build.merge(lua, stories, 0.5).state_dict()
    assert not torch.equal(mid["lm_head.weight"], lua.state_dict()["lm_head.weight"])


def test_bf16_sae_training_learns_like_float32():
    g = torch.Generator().manual_seed(0)
    directions = torch.linalg.qr(torch.randn(16, 16, generator=g))[0][:8]
    acts = (torch.rand(2048, 8, generator=g) < 0.15) * (0.5 + torch.rand(2048, 8, generator=g)) @ directions
    scfg = saelib.SAEConfig(d_in=16, d_sae=32, l1_coefficient=0.05, lr=3e-3, batch_size=256, n_steps=200)
    mse = {bf16: np.mean(build.fit_sae(acts, scfg, bf16)[1]["mse"][-20:]) for bf16 in (False, True)}
    assert mse[False] < 0.3  # it learned
    assert mse[True] < 1.3 * mse[False]  # and bf16 learned too (a cached bf16 weight copy would not)


# ------------------------------------------------------------------------------------------------ measure
@pytest.mark.parametrize("text, code, want", [
    (" =", True, "punctuation/whitespace"), ("\n    ", True, "punctuation/whitespace"),
    ("():", True, "punctuation/whitespace"),
    (" def", True, "keyword"), (" local", True, "keyword"), (" def", False, "English word"),
    (" 42", False, "number"), ("3.14", True, "number"), (" foo_bar", True, "identifier"),
    (" river", False, "English word"),
])
def test_token_category(text, code, want):
    assert measure.token_category(text, code) == want


def test_feature_categories_follow_the_activation_mass():
    cats = np.array([0, 0, 4, 4, 4, 1])  # token -> category index
    top_idx = np.array([[0, 2, 5], [1, 3, 0], [2, 4, 0]])  # (k=3, d=3)
    top_val = np.array([[5.0, 1.0, 0.0], [4.0, 1.0, 0.0], [1.0, 1.0, 0.0]])
    # feature 0: mass 9 on category 0, 1 on category 4; feature 1: all category 4; feature 2 never fires
    assert measure.feature_categories(top_idx, top_val, cats).tolist() == [0, 4, -1]


def test_flow_from_best_partners_equals_lib_sae_feature_flow():
    g = torch.Generator().manual_seed(0)
    base = torch.relu(torch.randn(400, 12, generator=g))
    copies = base[:, :6] + 0.3 * torch.randn(400, 6, generator=g)
    child = torch.cat([copies, torch.relu(torch.randn(400, 5, generator=g)), torch.zeros(400, 1)], 1)
    # 6 noisy copies, 5 new features, 1 dead
    feats = {"a": base, "b": child}
    arrays = {"a__alive": np.ones(12, bool), "b__alive": (child > 0).sum(0).numpy() > 0}
    comp = {**arrays, **measure.best_partners("a", "b", feats, arrays, torch.device("cpu"))}
    corr = saelib.feature_correlations(base, child)
    for t in (0.3, 0.6, claims.MATCH, 0.9):
        want = saelib.feature_flow(corr, t, torch.as_tensor(arrays["a__alive"]), torch.as_tensor(arrays["b__alive"]))
        got = measure.flow(comp, "a", "b", t)
        for fate in ("persisting", "disappearing", "emerging", "matched"):
            assert getattr(got, fate).tolist() == getattr(want, fate).tolist(), (t, fate)
        assert got.shares()["persisting"] == pytest.approx(want.persisting_share)
        assert got.shares()["emerging"] == pytest.approx(want.emerging_share)
    assert comp["a__b__row_max"][:6].min() > 0.8  # the noisy copies persist
    assert measure.shares(comp, "a", "b", claims.MATCH)["n_child"] == 11  # the dead feature is left out


def test_case_study_finds_the_planted_feature():
    n = 300
    g = torch.Generator().manual_seed(1)
    indicator = torch.rand(n, generator=g) < 0.1
    feats = {}
    for k, name in enumerate(build.MODELS):
        f = torch.relu(torch.randn(n, 6, generator=g))
        f[:, (k + 2) % 6] = indicator.float() * (1 + 0.1 * torch.rand(n, generator=g))  # planted in a different slot
        feats[name] = f
    cls = {"category": np.zeros(n, np.int64), "assign": indicator.numpy(), "except": np.zeros(n, bool)}
    arrays = {}
    for name, f in feats.items():
        arrays.update(measure.summarise(name, f, cls, min_fires=1, top_k=3))
    case = measure.follow("assign", feats, arrays)
    assert case["case__assign__match"].tolist() == [2, 3, 4, 5]
    assert case["case__assign__r"].min() > 0.95
    assert arrays["base__except_r"].tolist() == [0.0] * 6  # a constant indicator correlates 0


def test_correlate_with_matches_lib_sae():
    g = torch.Generator().manual_seed(3)
    F = torch.relu(torch.randn(500, 7, generator=g)).to(torch.bfloat16)
    F[:, 3] = 0  # never fires
    X = np.stack([(torch.rand(500, generator=g) < 0.2).numpy(), np.zeros(500, bool)], 1)  # second one constant
    got = measure.correlate_with(F, X, chunk=128)
    want = saelib.feature_correlations(F.float(), torch.as_tensor(X, dtype=torch.float32)).numpy()
    np.testing.assert_allclose(got, want, atol=1e-5)
    assert got[3].tolist() == [0.0, 0.0] and (got[:, 1] == 0).all()


# ------------------------------------------------------------------------------------------------ matching
def _sparse_acts(n, d, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.relu(torch.randn(n, d, generator=g) - 1.2)


def test_flow_candidates_follow_the_definition():
    """Brute force: per sample, L1 over tokens between the raw parent feature and the child's per-token
    L2-normalised encodings; the mean over child features is the distance, the first argmin the partner."""
    Fa, Fb, T = _sparse_acts(96, 30, 0), _sparse_acts(96, 25, 1), 8
    dist, partner = matching.flow_candidates(Fa, Fb, T)
    assert dist.shape == partner.shape == (12, 30)
    _, partner_near = matching.flow_candidates(Fa, Fb, T, max_similarity=0.5)
    assert ((partner_near == partner) | (partner_near == -1)).all()
    for s in range(12):
        fa, fb = Fa[s * T:(s + 1) * T], Fb[s * T:(s + 1) * T]
        nb = torch.nn.functional.normalize(fb, dim=1)
        for a in range(30):
            d = (nb - fa[:, a:a + 1]).abs().sum(0)
            if fa[:, a].sum() == 0:
                assert partner[s, a] == -1 and np.isinf(dist[s, a])
            elif dist[s, a] >= 0.5:
                assert partner_near[s, a] == -1
            else:
                assert dist[s, a] == pytest.approx(float(d.mean()), abs=1e-5)
                assert partner[s, a] == int(torch.argmin(d))


def test_flow_families_known_answers():
    # feature 0: a first-sample candidate, re-matched elsewhere in 1 of 4 later samples (25 % > 20 %): dropped;
    # feature 1: candidate, always consistent: kept; feature 2: too far in the first sample; feature 3: silent there
    summary = {"dist0": np.array([0.01, 0.02, 0.5, np.inf], np.float32), "partner0": np.array([4, 7, 1, -1]),
               "other_feature": np.array([0, 2, 2]), "other_dist": np.array([0.01, 0.01, 0.01], np.float32),
               "n_samples": np.array(5)}
    assert matching.flow_families(summary, 0.05, 0.8).tolist() == [-1, 7, -1, -1]
    assert matching.flow_families(summary, 0.05, 0.7).tolist() == [4, 7, -1, -1]  # 25 % <= 30 % tolerated
    assert matching.flow_families(summary, 1.0, 0.5).tolist() == [4, 7, 1, -1]  # feature 2: 2 of 4 changed
    # a re-match far above the similarity is no candidate, so it is no inconsistency
    far = {**summary, "other_dist": np.array([0.9, 0.01, 0.01], np.float32)}
    assert matching.flow_families(far, 0.05, 0.8).tolist() == [4, 7, -1, -1]


def test_flow_summary_round_trip_matches_a_direct_count():
    dist = np.array([[0.01, np.inf], [0.02, 0.01], [0.03, 0.02]], np.float32)
    partner = np.array([[3, -1], [5, 2], [3, 2]])
    summary = matching.flow_summary(dist, partner)
    assert summary["other_feature"].tolist() == [0, 1, 1] and int(summary["n_samples"]) == 3
    assert matching.flow_families(summary, 0.05, 0.5).tolist() == [3, -1]  # 1 of 2 changed: 50 % <= 50 %


def test_profile_correlations_follow_the_definition():
    from scipy.stats import pearsonr

    Fa, Fb = _sparse_acts(200, 12, 2), _sparse_acts(200, 10, 3)
    keys = np.random.default_rng(0).integers(0, 6, 200)
    pa, pb = matching.token_profiles(Fa, keys, 6), matching.token_profiles(Fb, keys, 6)
    r = matching.profile_correlations(pa, pb)
    for i in range(12):
        for j in range(10):
            common = (pa[1][i] & pb[1][j]).numpy()
            x, y = pa[0][i].numpy()[common], pb[0][j].numpy()[common]
            if common.sum() >= 2 and x.std() > 0 and y.std() > 0:
                assert float(r[i, j]) == pytest.approx(pearsonr(x, y)[0], abs=1e-4)
            else:
                assert torch.isnan(r[i, j])
    # the profile is the mean of the non-zero activations per key
    F = torch.tensor([[1.0], [3.0], [0.0], [2.0]])
    values, fired = matching.token_profiles(F, np.array([0, 0, 0, 1]), 3)
    assert values[0].tolist() == [2.0, 2.0, 0.0] and fired[0].tolist() == [True, True, False]


def _comp_with_flow(partner_first, n_child=4):
    k = len(partner_first)
    return {"p__alive": np.ones(k, bool), "c__alive": np.ones(n_child, bool),
            "p__c__flow_dist0": np.full(k, 0.01, np.float32), "p__c__flow_partner0": np.array(partner_first),
            "p__c__flow_other_feature": np.zeros(0, np.int32), "p__c__flow_other_dist": np.zeros(0, np.float32),
            "p__c__flow_n_samples": np.array(3)}


def test_flow_shares_under_the_flow_matcher():
    comp = _comp_with_flow([2, 2, -1])
    f = measure.flow(comp, "p", "c", 0.05, "flow", 0.8)
    assert f.persisting.tolist() == [0, 1] and f.disappearing.tolist() == [2]
    assert f.matched.tolist() == [2] and f.emerging.tolist() == [0, 1, 3]


def test_curve_shape_and_linear_merge():
    concave = [{"t": t, "d": 1 - (2 * t - 1) ** 2 * 0.5} for t in (0.0, 0.5, 1.0)]
    assert measure.curve_shape(concave, "d")["mean_above_chord"] == pytest.approx(0.5)
    straight = [{"t": t, "d": 0.2 + 0.3 * t} for t in (0.0, 0.25, 0.75, 1.0)]
    assert measure.curve_shape(straight, "d")["max_above_chord"] == pytest.approx(0.0, abs=1e-12)
    a, b = torch.nn.Linear(3, 2), torch.nn.Linear(3, 2)
    mid = measure.linear_merge(a, b, 0.5)
    assert torch.allclose(mid.weight, (a.weight + b.weight) / 2)
    assert torch.equal(measure.linear_merge(a, b, 0.0).weight, a.weight)


# ------------------------------------------------------------------------------------------------ claims
def _measured(**kw) -> dict:
    """A `measured` input under which every rule is testable and reproduced; `kw` replaces entries."""
    m = {"paper_protocol": [0.10, 0.12, 0.11], "independent": [0.10, 0.12, 0.11],
         "control_per_seed": [0.80, 0.82, 0.79], "control": 0.79, "generic_gap": [0.30, 0.32, 0.31],
         "assign_weakest": [0.90, 0.92, 0.91], "assign_selectivity": 0.5, "assign_control_r": [0.9, 0.9, 0.9],
         "except_lua": [0.30, 0.32, 0.31], "except_stories": [0.85, 0.86, 0.84], "except_selectivity": 0.5,
         "except_control_r": [0.9, 0.9, 0.9], "sweep_t": [0.0, 0.2, 0.4, 0.58, 0.6, 0.8, 1.0],
         "sweep_stories": [0.10, 0.15, 0.20, 0.24, 0.25, 0.30, 0.35],
         "sweep_lua": [0.40, 0.35, 0.30, 0.26, 0.25, 0.20, 0.15], "domain_lead": 0.2,
         "except_control_r_mean": 0.9, "sae_fve_min": 0.85, "sae_loss_recovered_min": 0.9, "sae_dead_max": 0.02}
    return {**m, **kw}


def _verdicts(m: dict) -> dict[str, str]:
    return {c.id: c.verdict for c in claims.claims(m)}


LOW_CONTROL = {"control_per_seed": [0.10, 0.12, 0.11], "control": 0.10}
CASES = {  # rule id -> (replacements that make it fail, replacements that break its precondition)
    "few_persist": ({"independent": [0.78, 0.80, 0.77]}, LOW_CONTROL),
    "generic_persist": ({"generic_gap": [-0.10, -0.12, -0.09]}, LOW_CONTROL),
    "assignment_universal": ({"assign_weakest": [0.40, 0.42, 0.41]}, {"assign_selectivity": 0.1}),
    "exception_no_lua_match": ({"except_lua": [0.95, 0.96, 0.94]}, {"except_selectivity": 0.1}),
    "interpolation_monotone": ({"sweep_stories": [0.35, 0.30, 0.25, 0.24, 0.20, 0.15, 0.10]}, {"domain_lead": 0.0}),
}


def test_every_rule_has_a_known_answer_case():
    assert set(CASES) | {claims.GPT4_EXPLANATIONS.id} == {r.id for r in claims.RULES}


@pytest.mark.parametrize("rule_id", list(CASES))
def test_rule_reproduced_on_a_constructed_input(rule_id):
    assert _verdicts(_measured())[rule_id] == REPRODUCED


@pytest.mark.parametrize("rule_id", list(CASES))
def test_rule_not_reproduced_on_a_constructed_input(rule_id):
    assert _verdicts(_measured(**CASES[rule_id][0]))[rule_id] == NOT_REPRODUCED


@pytest.mark.parametrize("rule_id", list(CASES))
def test_rule_not_testable_when_its_precondition_fails(rule_id):
    c = {c.id: c for c in claims.claims(_measured(**CASES[rule_id][1]))}[rule_id]
    assert c.verdict == NOT_TESTABLE and c.precondition


def test_a_low_control_makes_every_persistence_claim_not_testable_and_keeps_its_numbers():
    m = _measured(**LOW_CONTROL)
    got = {c.id: c for c in claims.claims(m)}
    for rule in claims.PERSISTENCE_RULES:
        assert got[rule.id].verdict == NOT_TESTABLE, rule.id
        assert "control" in got[rule.id].precondition
    assert got["few_persist"].value == pytest.approx(np.mean(m["paper_protocol"]))
    assert got["few_persist"].n == 3
    assert got["interpolation_monotone"].verdict == REPRODUCED  # not a persistence claim
    assert got["gpt4_explanations"].verdict == OFFLINE


@pytest.mark.parametrize("kw, rule_id", [
    ({"independent": [0.2, 0.7, 0.45]}, "few_persist"),  # relative persistence straddles 0.5
    ({"generic_gap": [0.0, 0.3, 0.15]}, "generic_persist"),
    ({"assign_weakest": [0.6, 0.95, 0.8]}, "assignment_universal"),
    ({"paper_protocol": [0.1, 0.1], "independent": [0.1, 0.5], "control_per_seed": [0.8, 0.8], "control": 0.8},
     "few_persist"),  # two seeds that disagree
])
def test_an_interval_across_the_margin_is_inconclusive(kw, rule_id):
    assert _verdicts(_measured(**kw))[rule_id] == INCONCLUSIVE


@pytest.mark.parametrize("weak", [{"sae_fve_min": 0.5}, {"sae_loss_recovered_min": 0.6}, {"sae_dead_max": 0.4}])
def test_weak_saes_make_every_feature_claim_not_testable(weak):
    got = {c.id: c for c in claims.claims(_measured(**weak))}
    for rule in claims.PERSISTENCE_RULES:
        assert got[rule.id].verdict == NOT_TESTABLE and "worst SAE" in got[rule.id].precondition, rule.id
    assert got["interpolation_monotone"].verdict == REPRODUCED


def test_an_exception_feature_without_a_match_under_reseeding_is_not_testable():
    c = {c.id: c for c in claims.claims(_measured(except_control_r_mean=0.5))}["exception_no_lua_match"]
    assert c.verdict == NOT_TESTABLE and "second SAE of the base" in c.precondition


def test_sae_gates_read_the_worst_sae():
    import pandas as pd

    q = pd.DataFrame({"fve": [0.9, 0.6], "loss_recovered": [0.95, 0.85], "dead_share": [0.0, 0.3]})
    assert claims.sae_gates(q) == {"sae_fve_min": 0.6, "sae_loss_recovered_min": 0.85, "sae_dead_max": 0.3}


def test_claims_carry_their_rendered_rule():
    for c, rule in zip(claims.claims(_measured()), claims.RULES):
        assert c.id == rule.id and c.rule == rule.text()
    assert f"r ≥ {claims.MATCH}" in claims.FEW_PERSIST.text()


# ------------------------------------------------------------------------------------------------ the paper path
def _docs():
    english = [f"The river number {i} runs to the sea, and the old town stands by its bank. " * 4 for i in range(24)]
    python = [f"def f{i}(x):\n    y = x + {i}\n    if y > 3:\n        raise ValueError('bad')\n"
              f"    try:\n        return y\n    except KeyError:\n        return None\n" * 2 for i in range(24)]
    stories = [f"Once a fox named Tom{i} met a crow. The crow sang and the fox laughed. " * 4 for i in range(24)]
    lua = [f"local t{i} = {{}}\nfunction t{i}.go(x)\n  local y = x + {i}\n  if y > 3 then return y end\n"
           f"  return nil\nend\n" * 2 for i in range(24)]
    named = (("english", english), ("python", python), ("stories", stories), ("lua", lua))
    return {n: (d[:20], d[20:]) for n, d in named}


def _paper_params(folder):
    return {"hub_base": str(folder), "hub_stories": "", "hub_lua": "", "allow_network": False, "n_ctx": 16,
            "ft_steps": 2, "ft_batch_size": 2, "eval_blocks": 2, "sweep_ts": [0.0, 1.0], "sae_expansion": 2,
            "sae_steps": 4, "sae_batch_size": 64, "sae_tokens": 256, "sae_ctx": 8, "sae_dead_window": 2,
            "sae_eval_tokens": 64, "n_seeds": 2, "compare_tokens": 128, "top_k": 3, "min_fires": 1,
            "device": "cpu", "bf16": False}


@pytest.fixture
def tiny_mistral_folder(tmp_path, monkeypatch):
    """A randomly initialised one-layer Mistral (the paper's family, tiny sizes) and a BPE tokenizer, saved locally."""
    from transformers import MistralConfig, MistralForCausalLM

    from lib.tokenizers import train_bpe

    monkeypatch.setenv("STUDY_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("STUDY_RESULTS", str(tmp_path / "results"))
    docs = _docs()
    tok = train_bpe([d for tr, va in docs.values() for d in tr], vocab_size=300)
    mcfg = MistralConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                         sliding_window=None, eos_token_id=tok.eos_token_id, bos_token_id=tok.bos_token_id)
    torch.manual_seed(0)
    MistralForCausalLM(mcfg).save_pretrained(tmp_path / "paper-base")
    tok.save_pretrained(tmp_path / "paper-base")
    return tmp_path / "paper-base", docs


@pytest.mark.models
def test_paper_profile_pipeline_on_a_tiny_random_mistral(tiny_mistral_folder):
    from lib.chapters.horn import report

    folder, docs = tiny_mistral_folder
    cfg = config.Config.load("paper", _paper_params(folder))
    s = build.setup(cfg, docs=docs)
    assert s.base.key == bases.source_key(str(folder))
    sets = build.model_sets(s)
    ms = sets[0]
    assert sets[1] is sets[0]  # one fine-tune seed unless finetune_seeds
    base_sd, lua_sd = ms["base"].model.state_dict(), ms["lua"].model.state_dict()
    assert any(not torch.equal(base_sd[k], lua_sd[k]) for k in base_sd)  # fine-tuning changed the weights
    acc = measure.accuracy(s, ms)
    assert [r["t"] for r in acc["sweep"]] == cfg.ts
    assert acc["sweep"][0]["lua"] == pytest.approx(acc["models"]["lua"]["lua"])  # t = 0 is the Lua model
    saes = build.train_saes(s, sets)
    assert saes[0]["base"][0].d_sae == 2 * 64 and saes[0]["base"][2] != saes[1]["base"][2]
    comps = measure.compare_all(s, sets, saes)
    assert len(comps) == 2
    for a, b in (*measure.EDGES, measure.CONTROL):
        sh = measure.shares(comps[0], a, b, claims.MATCH)
        assert 0 <= sh["persisting"] <= 1 and sh["persisting"] + sh["disappearing"] == pytest.approx(1)
    quality = measure.sae_quality(saes)
    found = claims.claims(claims.measured(comps, acc, quality))
    assert [c.id for c in found] == [r.id for r in claims.RULES]
    assert len(report.sae_quality_table(quality)) == len(build.MODELS)
    assert len(report.matcher_table(comps)) == 3 * len(measure.GROUPS)
    assert list(report.families_table(comps)["paper (count)"]) == [462, 456, 405, 399]
    assert len(report.shape_table(acc)) == 6
    record = report.write_results(found, ms, saes, cfg)
    assert record["models"]["base"]["d_mlp"] == 64
    assert set(record["rules"]) == {r.id for r in claims.RULES}
    for fig in (report.plot_sweep(acc, cfg), report.plot_sankey(comps[0]), report.plot_matchers(comps),
                report.plot_categories(comps), report.plot_assign_pairwise(comps)):
        assert fig.axes
    assert len(report.flow_table(comps)) == len(measure.ALL_EDGES)
    assert "threshold" in report.case_text(comps).data
    # a second pass is served from the cache
    again = build.finetune(s, "lua", cfg.ft_seed(0))
    assert again.key == ms["lua"].key
    assert measure.compare_all(s, sets, saes)[0].keys() == comps[0].keys()


@pytest.mark.models
def test_a_lossless_sae_recovers_all_the_loss(tiny_mistral_folder):
    folder, docs = tiny_mistral_folder
    cfg = config.Config.load("paper", _paper_params(folder))
    s = build.setup(cfg, docs=docs)
    d = 64
    sae = saelib.SparseAutoencoder(d, 2 * d)
    with torch.no_grad():  # ReLU(x) - ReLU(-x) = x: an exact reconstruction
        sae.W_enc.copy_(torch.cat([torch.eye(d), -torch.eye(d)], 1))
        sae.W_dec.copy_(torch.cat([torch.eye(d), -torch.eye(d)], 0))
        sae.b_enc.zero_()
        sae.b_dec.zero_()
    m = build.evaluate_sae(s, s.base, sae)
    assert m["fve"] == pytest.approx(1.0, abs=1e-6)
    assert m["loss_recovered"] == pytest.approx(1.0, abs=1e-4)


@pytest.mark.models
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_sae_and_matching_run_on_cuda(tiny_mistral_folder):
    folder, docs = tiny_mistral_folder
    cfg = config.Config.load("paper", {**_paper_params(folder), "device": "cuda", "bf16": True})
    s = build.setup(cfg, docs=docs)
    sets = build.model_sets(s)
    saes = build.train_saes(s, sets)
    assert saes[0]["base"][0].W_enc.is_cuda
    comps = measure.compare_all(s, sets, saes)
    assert 0 <= measure.shares(comps[0], "base", "lua", claims.MATCH)["persisting"] <= 1


@pytest.mark.models
def test_mlp_acts_equal_the_full_forward_pass(tiny_mistral_folder):
    """Known answer: reading the MLP with the unembedding at the last position only changes no activation."""
    from lib.hooks import run_with_cache

    folder, docs = tiny_mistral_folder
    model = bases.load(str(folder)).model
    ids = torch.randint(3, model.config.vocab_size, (5, 12), generator=torch.Generator().manual_seed(0))
    _, full = run_with_cache(model, ids, [build.HOOK])
    got = build.mlp_acts(model, ids, batch_size=2)
    assert got.shape == (60, model.config.intermediate_size)
    torch.testing.assert_close(got, full[build.HOOK].flatten(0, 1).to(torch.bfloat16))
