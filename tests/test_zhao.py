"""lib.chapters.zhao: config checks, the layer-group rule, every claim's rule on constructed measurements (reproduced,
not reproduced or inconclusive, precondition failed), the estimator choice, and the whole pipeline (control and
multi-task training, states, CKA) on tiny random models saved locally (paper profile path)."""
import ast
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from lib.claims import INCONCLUSIVE, NOT_REPRODUCED, NOT_TESTABLE, PARTLY, REPRODUCED
from lib.config import ConfigError
from lib.chapters.zhao import claims, config, measure, report
from lib.tasks import instructions as tasks_mod

PACKAGE = Path(__file__).resolve().parents[1] / "lib" / "chapters" / "zhao"


# --------------------------------------------------------------------------------------- config
@pytest.mark.parametrize("profile", ["smoke", "tiny", "local", "paper"])
def test_every_profile_loads(profile):
    cfg = config.Config.load(profile)
    assert len(cfg.seen) >= 1 and set(cfg.held_out) <= set(cfg.tasks)


def test_tiny_profile_meets_the_issue():
    cfg = config.Config.load("tiny")
    assert len(cfg.tasks) >= 12 and len(cfg.held_out) >= 2 and cfg.n_seeds >= 3


@pytest.mark.parametrize("params, match", [
    ({"held_out": ["count"], "tasks": ["topic", "pos"], "synthesis_task": "topic"}, "held_out"),
    ({"tasks": ["count"], "held_out": ["count"], "synthesis_task": "count"}, "no task"),
    ({"tasks": ["count", "count"]}, "twice"),
    ({"estimator": "biased"}, "unknown parameter 'estimator'"),  # verdict settings are no parameters
    ({"shared_below": 0.3}, "unknown parameter 'shared_below'"),
])
def test_bad_configs_fail_with_the_parameter_named(params, match):
    with pytest.raises(ConfigError, match=match):
        config.Config.load("smoke", params)


def test_config_names_match_the_library():
    from lib import models

    assert config.TASKS == tasks_mod.TASKS and config.TEMPLATES == tuple(tasks_mod.TEMPLATES)
    assert config.LOCAL_MODELS == tuple(models.LOCAL_MODELS)


def test_imports_run_one_way():
    """config < build < measure < claims < report; config, build and measure import no plotting library."""
    order = ["config", "build", "measure", "claims", "report"]
    heavy = {"torch", "pandas", "matplotlib", "transformers", "seaborn", "IPython"}
    for i, name in enumerate(order):
        tree = ast.parse((PACKAGE / f"{name}.py").read_text())
        imported = {a.name if isinstance(n, ast.Import) else f"{n.module}.{a.name}"
                    for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom)) for a in n.names}
        ours = {m.split(".")[3] for m in imported if m.startswith("lib.chapters.zhao.")}
        assert ours <= set(order[:i]), (name, ours)
        top = {n.names[0].name.split(".")[0] if isinstance(n, ast.Import) else (n.module or "").split(".")[0]
               for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))}
        if name == "config":
            assert not top & heavy, top
        if name in ("build", "measure"):
            assert not top & {"matplotlib", "seaborn", "IPython"}, top


# --------------------------------------------------------------------------------------- the layer-group rule
@pytest.mark.parametrize("gain, expected", [
    ([0.0, 0.1, 0.5, 1.0], ["shared", "shared", "transition", "refinement"]),
    ([0.0, 0.0, 0.9, 1.0], ["shared", "shared", "refinement", "refinement"]),
    ([0.5, 0.6, 0.8, 1.0], ["transition", "transition", "refinement", "refinement"]),
    ([-0.2, -0.1, 0.0, 0.0], ["shared"] * 4),
    ([-0.5, 0.2, 1.0, 0.9], ["shared", "shared", "refinement", "refinement"]),
])
def test_layer_groups_rule(gain, expected):
    assert measure.layer_groups(np.array(gain), 0.33, 0.67) == expected


# --------------------------------------------------------------------------------------- constructed measurements
SEEN = ("topic", "pos", "isa", "count", "num2words", "reverse")  # semantic labels, a structured label, generations
HELD = ("code_type", "py_eval")  # the whole code cluster


def fake_results(e0, e1, tasks=SEEN + HELD, held=HELD, seeds=3, noise=0.0, d_model=64, n_test=100,
                 e1_acc=0.8, control_acc=0.9, unlearned=(), cross=None, probe_e0=0.6, probe_c=0.6,
                 e1_unlearned=(), unlearned_in_seed=None):
    """Results whose CKA curves are e0 / e1 (n_layers,) for every task and seed (plus a little per-seed noise),
    the cross-task baseline `cross` (default: e0) and probe accuracies probe_e0 / probe_c at every layer; controls
    beat the base (accuracy 0.1) except on `unlearned` tasks (and on task `unlearned_in_seed[0]` in seed
    `unlearned_in_seed[1]` only), E1 except on `e1_unlearned`. n_test < 10 d_model: debiased verdicts."""
    rng = np.random.default_rng(0)
    shape, L, T = (seeds, len(tasks), len(e0)), len(e0), len(tasks)
    cka = {}
    for est in measure.ESTIMATORS:
        for p, c in (("E0", e0), ("E1", e1), ("seed", e1)):
            cka[(est, p)] = np.broadcast_to(np.asarray(c, float), shape).copy() + noise * rng.standard_normal(shape)
        x = np.broadcast_to(np.asarray(e0 if cross is None else cross, float), (seeds, T, T, L)).copy()
        x += noise * rng.standard_normal(x.shape)
        x[:, np.arange(T), np.arange(T)] = np.nan
        cka[(est, measure.CROSS)] = x
    probe = {"E0": np.full((1, T, L), probe_e0, float), "C": np.full((seeds, T, L), probe_c, float)
             + noise * rng.standard_normal((seeds, T, L)), "chance": np.full(T, 0.5)}
    rows = [{"model": "E0", "seed": -1, "task": t, "accuracy": 0.1, "exact_match": 0.1} for t in tasks]
    rows += [{"model": m, "seed": s, "task": t, "accuracy": a, "exact_match": a} for s in range(seeds) for t in tasks
             for m, a in (("C", 0.1 if t in unlearned or unlearned_in_seed == (t, s) else control_acc),
                          ("E1", 0.1 if t in e1_unlearned else e1_acc))]
    return measure.Results(list(tasks), list(held), len(e0), cka, pd.DataFrame(rows), pd.DataFrame(),
                           {"d_model": d_model, "name": "fake"}, {}, n_test, probe)


def verdicts(res):
    return {c.id: c.verdict for c in claims.claims(res)}


def one(res, rule):
    return claims.decide(rule, res)


FALL = [0.95, 0.9, 0.85, 0.6, 0.5, 0.4, 0.35, 0.3]
HIGH = [0.96, 0.95, 0.95, 0.93, 0.92, 0.92, 0.92, 0.92]


def test_claims_on_the_papers_pattern():
    """E0 falls with depth, E1 stays high: the gain rises, fastest at about a third of the depth."""
    res = fake_results(FALL, HIGH, noise=0.005)
    v = verdicts(res)
    assert v[claims.FALLS.id] == REPRODUCED
    assert v[claims.CLOSER.id] == REPRODUCED
    assert v[claims.GROUPS.id] == REPRODUCED
    assert v[claims.UNSEEN.id] == REPRODUCED  # the same curves for held-out tasks
    assert v[claims.KINDS.id] == NOT_REPRODUCED  # no difference between kinds
    assert v[claims.BEYOND.id] == REPRODUCED  # the other tasks' controls sit at E0's level
    assert v[claims.ENCODED.id] == NOT_REPRODUCED  # the probe reads every task equally well off E0 and C_t


def test_beyond_not_reproduced_when_other_controls_are_as_close():
    """Format adaptation only: every control is as close to C_t as E1 is."""
    res = fake_results(FALL, HIGH, noise=0.005, cross=HIGH)
    c = one(res, claims.BEYOND)
    assert c.verdict == NOT_REPRODUCED and one(res, claims.CLOSER).verdict == REPRODUCED
    assert c.extra["gains_per_seed"] == [6, 6, 6]  # seen tasks, all learned, all gain over E0 ...
    exact = one(fake_results(FALL, HIGH, cross=HIGH), claims.BEYOND)
    assert exact.verdict == NOT_REPRODUCED and exact.extra["surviving_per_seed"] == [0, 0, 0]  # ... none survives


def test_beyond_counts_the_gains_that_survive():
    res = fake_results(FALL, HIGH, noise=0.0, cross=FALL)
    assert one(res, claims.BEYOND).extra["surviving_per_seed"] == [6, 6, 6]
    i = res.tasks.index("topic")
    for est in measure.ESTIMATORS:
        res.cka[(est, measure.CROSS)][:, :, i] = 0.99  # topic's control is as close to every other control
    assert one(res, claims.BEYOND).extra["surviving_per_seed"] == [5, 5, 5]


def test_encoded_reproduced_when_only_structured_tasks_need_tuning():
    res = fake_results(FALL, HIGH, noise=0.005)
    struct = [i for i, t in enumerate(res.tasks) if tasks_mod.SPECS[t].kind == "structured"]
    res.probe["C"][:, struct] += 0.3  # the controls' states decode structured answers, E0's do not
    c = one(res, claims.ENCODED)
    assert c.verdict == REPRODUCED and c.value == pytest.approx(0.3, abs=0.02)
    assert c.extra["answer_types"] == ["label"]  # only label tasks hold both kinds here


def test_kinds_compare_within_one_answer_type():
    """A gap that comes from the answer type alone (generation tasks far from their controls) is no kind effect."""
    res = fake_results([0.8] * 4, [0.9] * 4, noise=0.005)
    gen = [i for i, t in enumerate(res.tasks) if tasks_mod.SPECS[t].answer == "generation"]
    for est in measure.ESTIMATORS:
        res.cka[(est, "E0")][:, gen] -= 0.4
    assert one(res, claims.KINDS).verdict == NOT_REPRODUCED


def test_every_rule_when_tuning_changes_nothing():
    flat = [0.9] * 8
    v = verdicts(fake_results(flat, flat, noise=0.005))
    assert v[claims.CLOSER.id] == NOT_REPRODUCED
    assert v[claims.FALLS.id] == NOT_REPRODUCED
    assert v[claims.UNSEEN.id] == INCONCLUSIVE  # no gain anywhere: the effect sits on its margin
    assert v[claims.BEYOND.id] in (NOT_REPRODUCED, INCONCLUSIVE)
    assert v[claims.GROUPS.id] in (NOT_REPRODUCED, INCONCLUSIVE)


def test_unseen_not_reproduced_when_only_seen_tasks_gain():
    res = fake_results(FALL, HIGH, noise=0.005)
    held = measure.task_index(res, res.held_out)
    for est in measure.ESTIMATORS:
        res.cka[(est, "E1")][:, held] = res.cka[(est, "E0")][:, held]
    c = one(res, claims.UNSEEN)
    assert c.verdict == NOT_REPRODUCED and c.interval[1] <= 0


def test_kinds_reproduced_when_semantic_tasks_are_closer_to_their_controls():
    res = fake_results([0.5] * 4, [0.9] * 4, noise=0.005)
    sem = [i for i, t in enumerate(res.tasks) if tasks_mod.SPECS[t].kind == "semantic"]
    for est in measure.ESTIMATORS:
        res.cka[(est, "E0")][:, sem] += 0.3
    assert one(res, claims.KINDS).verdict == REPRODUCED


def test_a_wide_interval_is_inconclusive():
    """One seed far off: the mean gain is above the margin but its interval straddles it."""
    res = fake_results([0.5] * 4, [0.6] * 4)
    for est in measure.ESTIMATORS:
        res.cka[(est, "E1")][2] -= 0.3
    c = one(res, claims.CLOSER)
    assert c.verdict == INCONCLUSIVE and c.interval[0] < claims.CLOSER["margin"] < c.interval[1]


def test_one_seed_is_inconclusive():
    assert one(fake_results(FALL, HIGH, seeds=1), claims.CLOSER).verdict == INCONCLUSIVE


@pytest.mark.parametrize("rule, measured", [
    (claims.FALLS, {"n_layers": 1}),
    (claims.CLOSER, {"e1_gain": 0.0}),
    (claims.KINDS, {"n_comparable_types": 0}),
    (claims.ENCODED, {"n_comparable_types": 0}),
    (claims.BEYOND, {"e1_gain": 0.0}),
    (claims.GROUPS, {"n_layers": 6}),
    (claims.UNSEEN, {"n_held_out": 0}),
    (claims.UNSEEN, {"n_held_out_with_sibling": 1}),
])
def test_every_rule_names_its_failed_precondition(rule, measured):
    res = fake_results(FALL, HIGH, noise=0.005)
    c = claims.decide(rule, res, {**claims.facts(res), **measured})
    assert c.verdict == NOT_TESTABLE and c.precondition and "measured" in c.precondition


def test_preconditions_from_the_measurements():
    res = fake_results(FALL[:6], HIGH[:6], noise=0.005)  # six layers: too few for the layer groups
    assert one(res, claims.GROUPS).verdict == NOT_TESTABLE
    res = fake_results(FALL, HIGH, noise=0.005, e1_acc=0.1)  # E1 learned nothing
    assert {c.id for c in claims.claims(res) if c.verdict == NOT_TESTABLE} == {
        claims.CLOSER.id, claims.BEYOND.id, claims.GROUPS.id, claims.UNSEEN.id}
    res = fake_results(FALL, HIGH, tasks=SEEN, held=(), noise=0.005)
    assert one(res, claims.UNSEEN).verdict == NOT_TESTABLE
    res = fake_results(FALL, HIGH, held=("reverse", "code_type", "py_eval"), noise=0.005)  # count is seen
    assert one(res, claims.UNSEEN).verdict == NOT_TESTABLE
    res = fake_results(FALL, HIGH, tasks=("topic", "pos", "num2words", "reverse", "code_type", "py_eval"),
                       noise=0.005)  # no structured label task: no answer type holds both kinds
    assert one(res, claims.KINDS).verdict == NOT_TESTABLE and one(res, claims.ENCODED).verdict == NOT_TESTABLE


def test_tasks_whose_control_did_not_learn_are_excluded_and_counted():
    res = fake_results(FALL, HIGH, noise=0.005, unlearned=("topic",))
    c = one(res, claims.CLOSER)
    assert c.verdict == REPRODUCED and c.extra["excluded_tasks"] == ["topic"]
    # an unlearned task's curves do not count: flatten topic's E1 and nothing changes
    for est in measure.ESTIMATORS:
        res.cka[(est, "E1")][:, 0] = res.cka[(est, "E0")][:, 0]
    assert one(res, claims.CLOSER).value == pytest.approx(c.value)


def test_too_few_learned_tasks_is_inconclusive():
    res = fake_results(FALL, HIGH, noise=0.005, unlearned=("topic", "pos", "isa", "count"))
    v = verdicts(res)
    assert v[claims.CLOSER.id] == INCONCLUSIVE and v[claims.FALLS.id] != INCONCLUSIVE  # 4 of 8 tasks learned
    assert v[claims.KINDS.id] == INCONCLUSIVE  # no structured label task learned
    assert v[claims.ENCODED.id] == INCONCLUSIVE
    res = fake_results(FALL, HIGH, noise=0.005, unlearned=HELD)
    assert one(res, claims.UNSEEN).verdict == INCONCLUSIVE


def test_layer_groups_not_reproduced_when_the_transition_is_elsewhere():
    late = [0.95, 0.95, 0.95, 0.95, 0.9, 0.6, 0.4, 0.3]  # E0 falls only near the end: a late transition
    c = one(fake_results(late, [0.96] * 8, noise=0.005), claims.GROUPS)
    assert c.verdict == NOT_REPRODUCED and c.extra["indicators"]["gain rises with depth"] == REPRODUCED
    assert c.extra["share_of_seeds_with_paper_grouping"] == 0 and c.extra["share_of_resamples_with_paper_grouping"] == 0


def test_layer_groups_need_most_seeds():
    """The paper's pattern in one seed and a late transition in two: the seed-mean curve alone would not do."""
    res = fake_results(FALL, HIGH, noise=0.005)
    late = np.array([0.95, 0.95, 0.95, 0.95, 0.9, 0.6, 0.4, 0.3])
    for est in measure.ESTIMATORS:
        res.cka[(est, "E0")][1:] = late
    c = one(res, claims.GROUPS)
    assert c.extra["share_of_seeds_with_paper_grouping"] == pytest.approx(1 / 3)
    assert c.verdict in (PARTLY, NOT_REPRODUCED)


def test_layer_groups_resamples_of_identical_tasks_all_agree():
    gains = np.broadcast_to(np.array(HIGH) - np.array(FALL), (3, 5, 8))
    curves = claims.resampled_curves(gains, n=50)
    assert curves.shape == (50, 8) and np.allclose(curves, gains[0, 0])
    assert claims.paper_grouping(curves[0]) and not claims.paper_grouping(np.zeros(8))


def test_layer_groups_rule_is_no_coin_flip():
    """Gain curves of pure noise (E1 = E0 + noise): the rule must almost never find the paper's grouping."""
    passed = 0
    for k in range(100):
        rng = np.random.default_rng(100 + k)
        res = fake_results([0.5] * 8, [0.5] * 8)
        for est in measure.ESTIMATORS:
            res.cka[(est, "E1")] = res.cka[(est, "E0")] + 0.02 * rng.standard_normal(res.cka[(est, "E0")].shape)
        passed += one(res, claims.GROUPS).verdict in (REPRODUCED, PARTLY)
    assert passed <= 5


def test_a_control_that_failed_in_one_seed_is_excluded():
    res = fake_results(FALL, HIGH, noise=0.005, unlearned_in_seed=("topic", 1))
    assert "topic" not in measure.learned_tasks(res, claims.LEARNED_MARGIN)
    assert one(res, claims.CLOSER).extra["excluded_tasks"] == ["topic"]


def test_e1_claims_read_only_the_tasks_e1_learned():
    res = fake_results(FALL, HIGH, noise=0.005, e1_unlearned=("pos",))
    c = one(res, claims.CLOSER)
    assert c.verdict == REPRODUCED and c.extra["seen_tasks_e1_did_not_learn"] == ["pos"]
    i = res.tasks.index("pos")
    for est in measure.ESTIMATORS:  # what E1 does on a task it did not learn does not count
        res.cka[(est, "E1")][:, i] = res.cka[(est, "E0")][:, i]
    assert one(res, claims.CLOSER).value == pytest.approx(c.value)
    assert one(res, claims.FALLS).extra["seen_tasks_e1_did_not_learn"] == ["pos"]
    res = fake_results(FALL, HIGH, noise=0.005, e1_unlearned=SEEN[:4])  # two seen tasks left: too few
    assert one(res, claims.CLOSER).verdict == INCONCLUSIVE and one(res, claims.FALLS).verdict == REPRODUCED


def test_cross_partners_spread_and_balanced():
    for T in (12, 6, 3):
        partners = measure.cross_partners(T)
        assert all(t not in p and len(set(p)) == len(p) == min(T - 1, measure.CROSS_OTHERS)
                   for t, p in enumerate(partners))
        uses = np.bincount([s for p in partners for s in p], minlength=T)
        assert (uses == uses[0]).all()  # every control serves as many tasks


def test_estimator_choice_and_flips():
    assert claims.estimator_for(fake_results(FALL, HIGH, d_model=64, n_test=100)) == "debiased"
    assert claims.estimator_for(fake_results(FALL, HIGH, d_model=8, n_test=100)) == "biased"
    res = fake_results([0.5] * 4, [0.5] * 4, noise=0.005)
    res.cka[("biased", "E1")] += 0.2  # only the biased estimator sees a gain
    c = one(res, claims.CLOSER)
    assert c.verdict == NOT_REPRODUCED and c.extra["flips_between_estimators"]
    assert c.extra["by_estimator"] == {"debiased": NOT_REPRODUCED, "biased": REPRODUCED}
    assert "biased CKA: reproduced" in c.ours


def test_rule_text_renders_its_constants():
    assert f"{claims.REFINE_FROM}" in claims.GROUPS.text() and "≥ 7" in claims.GROUPS.text()
    assert all(r.text() for r in claims.RULES) and len({r.id for r in claims.RULES}) == len(claims.RULES)


def test_results_round_trip(tmp_path):
    res = fake_results([0.9, 0.5], [0.9, 0.8])
    res.save(tmp_path)
    back = measure.Results.load(tmp_path)
    assert back.tasks == res.tasks and np.array_equal(back.cka[("biased", "E1")], res.cka[("biased", "E1")])
    assert back.accuracy.equals(res.accuracy) and back.n_test == res.n_test
    assert np.array_equal(back.probe["C"], res.probe["C"])
    assert np.array_equal(back.cka[("debiased", measure.CROSS)], res.cka[("debiased", measure.CROSS)],
                          equal_nan=True)


# --------------------------------------------------------------------------------------- the whole pipeline
TEXTS = ["Task: How many words are there?\nInput: cat sun box\nAnswer: 3", "two thousand forty seven 2047",
         "max(3, 9) gives 9 and 4 + 5 = 9", "[INST] Write the number in words.\n47 [/INST] forty seven"] * 20
PIPELINE = {"tasks": ["count", "py_eval", "num2words", "words2num"], "held_out": ["words2num"],
            "synthesis_task": "count", "n_train": 12, "n_test": 8, "n_seeds": 2, "control_steps": 2,
            "e1_steps": 3, "batch_size": 4, "max_len": 48, "dtype": "float32", "device": "cpu", "bf16": False,
            "threads": 1}


def save_tiny(family, folder):
    import transformers as tf

    from lib import models
    from lib.tokenizers import train_bpe

    tok = train_bpe(TEXTS, vocab_size=300)
    if family == "llama":
        cfg = tf.LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                             num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                             bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
        model = tf.LlamaForCausalLM(cfg)
    else:
        model = tf.GPT2LMHeadModel(tf.GPT2Config(vocab_size=len(tok), n_positions=64, n_embd=32, n_layer=3, n_head=4))
    models.save_model(model, tok, folder)
    return str(folder)


@pytest.mark.models
@pytest.mark.parametrize("family, n_seeds, lora", [
    ("llama", 1, {"lora_rank": 8, "lora_targets": ["q_proj", "v_proj"]}),  # the paper's recipe, one seed
    ("gpt2", 2, {"lora_rank": 0, "lr": 1e-3}),  # full fine-tuning, two seeds (the seed-to-seed ceiling)
])
def test_paper_profile_pipeline_on_a_tiny_random_model(tmp_path, monkeypatch, family, n_seeds, lora):
    import torch

    from lib.chapters.zhao import build

    monkeypatch.setenv("STUDY_CACHE", str(tmp_path / "cache"))
    cfg = config.Config.load("paper", {**PIPELINE, **lora, "n_seeds": n_seeds, "allow_network": False,
                                       "paper_model": save_tiny(family, tmp_path / family)})
    res, art = measure.run(cfg)
    assert res.n_layers == 3 and res.n_test == 8
    for (est, pair), v in res.cka.items():
        shape = (n_seeds, 4, 4, 3) if pair == measure.CROSS else ((n_seeds - 1 if pair == "seed" else n_seeds), 4, 3)
        assert v.shape == shape
        v = v[np.isfinite(v)]
        assert np.all(v <= 1 + 1e-9) and (est == "debiased" or np.all(v >= 0))
    assert np.isnan(res.cka[("biased", measure.CROSS)][:, range(4), range(4)]).all()
    assert res.probe["E0"].shape == (1, 4, 3) and res.probe["C"].shape == (n_seeds, 4, 3)
    assert set(res.accuracy.model) == {"E0", "E1", "C"}
    assert len(res.accuracy) == 4 + n_seeds * (4 + 4)  # E0 once per task; per seed E1 and C_t on every task
    assert res.accuracy["accuracy"].between(0, 1).all()
    assert len(res.training) == n_seeds * 5 and not res.training["cached"].any()
    again, art2 = measure.run(cfg)  # now from the cache
    assert art2.cached and np.array_equal(again.cka[("biased", "E1")], res.cka[("biased", "E1")])
    base = build.load_base(cfg)
    data, data_art = build.task_data(cfg)
    model, _ = build.tuned(cfg, base, data, data_art, "count", cfg.seed, cache_only=True)
    assert not any("lora_" in n for n, _ in model.named_parameters())  # merged into plain modules
    assert any(not torch.equal(p, q) for p, q in zip(model.parameters(), base.model.parameters()))
    with pytest.raises(FileNotFoundError, match="run notebook 02_zhao"):
        build.tuned(cfg, base, data, data_art, "count", cfg.seed + 7, cache_only=True)
    cl = claims.claims(res)
    assert [c.id for c in cl] == [r.id for r in claims.RULES]
    monkeypatch.setattr(config.Config, "load", classmethod(lambda cls, profile="tiny", params=None: cfg))
    pairs = build.synthesis_pairs("paper")
    assert [p["name"] for p in pairs] == ["zhao: E0 -> E1 (multi-task)", "zhao: E0 -> C_count"]
    for p in pairs:
        assert len(p["inputs"]["input_ids"]) <= 256 and set(p["inputs"]) == {"input_ids", "attention_mask", "labels"}
        assert 0.0 <= p["metric"](p["tuned"], p["inputs"]) <= 1.0


@pytest.mark.models
def test_local_profile_names_the_missing_package(tmp_path, monkeypatch):
    """Without its PyPI package (simulated by a package name that does not exist), the local profile fails with
    MissingPackageError and the pip command."""
    from lib import models
    from lib.chapters.zhao import build

    monkeypatch.setenv("STUDY_CACHE", str(tmp_path))
    monkeypatch.setitem(models.LOCAL_MODELS, "gemma-3-270m",
                        models.LocalModel("no-such-gemma-package", "no_such_gemma_package", "x.gguf", assembled=True))
    with pytest.raises(models.MissingPackageError, match="no-such-gemma-package.* is not installed"):
        build.load_base(config.Config.load("local"))


def test_probe_table_marks_tasks_without_a_probe():
    res = fake_results(FALL, HIGH)
    t = res.tasks.index("topic")
    res.probe["E0"][:, t] = np.nan
    res.probe["C"][:, t] = np.nan
    shown = report.probe_table(res)
    assert shown.loc["topic", "probe on E0"] == "—" and shown.loc["pos", "probe on E0"] == pytest.approx(0.6)
    assert "No probe for topic" in report.probe_text(res).data
    assert "No probe" not in report.probe_text(fake_results(FALL, HIGH)).data
