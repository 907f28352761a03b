"""lib.chapters.prakash: config rules, head selection, CMAP and source patching against lib.patching, the verdict
rules on hand-made tables, and the paper-profile pipeline end to end on a tiny random Llama saved to a folder (the
`base`) and a perturbed copy (the released fine-tuned model), never the network."""
import numpy as np
import pandas as pd
import pytest
import torch
import transformers as tf

from lib import models
from lib.config import ConfigError
from lib.hooks import forward
from lib.patching import cross_model_patch
from lib.chapters import prakash as P
from lib.tasks import entities as E
from lib.tokenizers import train_bpe
from tests._tiny import perturbed_copy, tiny_model

WORDS = ("apple", "book", "car", "cup", "dog", "egg", "fish", "hat", "key", "lamp", "map", "pen", "ring", "shoe")
SMALL = dict(n_boxes=3, test_size=24, val_size=8, pp_size=8, mean_size=8, random_draws=2, dcm_size=8,
             dcm_epochs=1, heads_base=[2, 1, 1, 1], heads_tuned=[2, 2, 1, 1], sweep_repeats=1, device="cpu")


@pytest.fixture(scope="module")
def tok():
    vocab = E.Vocab(WORDS, E.LABELS)
    b = E.sample(vocab, 500, 3, np.random.default_rng(0))
    return train_bpe([p + a for p, a in zip(E.prompts(vocab, b), E.answers(vocab, b))] * 2, vocab_size=360)


# ------------------------------------------------------------------------------------------------ config
@pytest.mark.parametrize("profile", ["smoke", "tiny", "local", "paper"])
def test_every_profile_loads(profile):
    cfg = P.Config.load(profile)
    assert cfg.profile == profile and len(cfg.seeds) == cfg.n_seeds


@pytest.mark.parametrize("params, word", [({"heads_base": [1, 2]}, "heads_base"), ({"base_min_boxes": 9}, "base_min"),
                                          ({"n_boxes": 1}, "n_boxes"), ({"tuned": ["goat"]}, "tuned"),
                                          ({"tuned_source": "x", "n_seeds": 3}, "n_seeds")])
def test_bad_parameters_are_named(params, word):
    with pytest.raises(ConfigError, match=word):
        P.Config.load("tiny", params)


def test_paper_profile_needs_its_models():
    with pytest.raises(ConfigError, match="base_source"):
        P.Config.load("paper", {"base_source": ""})


# ------------------------------------------------------------------------------------------------ pieces
def test_top_keeps_the_most_negative_heads():
    scores = torch.tensor([[0.1, -0.5], [-0.2, -0.9]])
    assert P._top(scores, 2) == [(1, 1), (0, 1)]
    assert P._top(scores, 2, exclude=[(1, 1)]) == [(0, 1), (1, 0)]
    assert P._top(scores, 4) == [(1, 1), (0, 1), (1, 0)]  # a positive score is never kept
    keep = P.circuit_keep({"VF": [(1, 1)], "PT": [(0, 1)], "PD": [(0, 0)], "SR": []})
    assert keep == {"last": {(1, 1), (0, 1)}, "query": {(0, 0)}, "prev_query": set()}


def test_cmap_logits_agree_with_cross_model_patch():
    base, ids = tiny_model("gpt2"), torch.randint(0, 97, (3, 8), generator=torch.Generator().manual_seed(0))
    tuned = perturbed_copy(base)
    inputs = {"input_ids": ids}
    pos = {"last": 7, "query": 5, "prev_query": torch.tensor([1, 2, 3])}
    assert torch.equal(P.cmap_logits(base, tuned, inputs, {"last": set()}, pos), forward(base, inputs).detach())
    keep = {"last": {(1, 2)}, "query": {(0, 1)}}
    expected = cross_model_patch(base, tuned, inputs, {(1, 2): 7, (0, 1): 5})
    assert torch.equal(P.cmap_logits(base, tuned, inputs, keep, pos), expected)
    both = P.cmap_logits(base, tuned, inputs, {"last": {(0, 1)}, "prev_query": {(0, 1)}}, pos)
    assert not torch.equal(both, P.cmap_logits(base, tuned, inputs, {"last": {(0, 1)}}, pos))  # positions add up


def _data(tok, cfg):
    return P.task_data(cfg, tok)


def test_patching_from_an_identical_source_changes_nothing(tok):
    cfg = P.Config.load("tiny", {**SMALL, "objects": "nouns"})
    data = _data(tok, cfg)
    model = tiny_model("gpt2", vocab_size=len(tok))
    name = "dcm_object_test"
    data.enc[name + "_src"] = data.enc[name]
    plain = P.predictions(model, data.enc[name])
    for g in P.GROUPS:
        assert torch.equal(P.patched_from_source(model, data, name, [(0, 1), (1, 3)], g), plain)


class _Fixed(torch.nn.Module):
    """Answers the object of the queried box (binds) or always the object of box `box` (copies without binding)."""

    def __init__(self, layouts, vocab_size, box=None):
        super().__init__()
        self.layouts, self.V, self.box = {lay["T"]: lay for lay in layouts}, vocab_size, box

    def forward(self, input_ids, **kw):
        e = self.layouts[input_ids.shape[1]]
        labels = input_ids[:, e["label_pos"]]  # (N, n_boxes)
        qbox = labels.eq(input_ids[:, e["query_pos"], None]).float().argmax(1) if self.box is None \
            else torch.full((len(input_ids),), self.box)
        ans = input_ids[torch.arange(len(input_ids)), e["object_pos"][qbox]]
        logits = torch.zeros(len(input_ids), 1, self.V)
        logits[torch.arange(len(input_ids)), 0, ans] = 1.0
        return type("Out", (), {"logits": logits})()


def test_answer_profile_tells_binding_from_copying(tok):
    cfg = P.Config.load("tiny", {**SMALL, "objects": "nouns"})
    data = _data(tok, cfg)
    enc = data.enc["test"]
    layouts = [E.layout(tok, nb, data.vocab) for nb in (2, 3)]
    runs = {0: {"base": P.Trained("base", 0, _Fixed(layouts, len(tok)), None),
                "track": P.Trained("track", 0, _Fixed(layouts, len(tok), box=0), None)}}
    prof = P.answer_profile(runs, data).set_index("model")
    asked = np.bincount(data.boxes["test"].query_box, minlength=3) / len(data.boxes["test"])
    assert prof.loc["base", "in context"] == 1 and prof.loc["base", "accuracy"] == 1
    assert prof.loc["base", "query-blind baseline"] == pytest.approx((asked ** 2).sum())
    assert prof.loc["track", "box 1"] == 1 and prof.loc["track", "in context"] == 1
    assert prof.loc["track", "accuracy"] == pytest.approx(asked[0])  # box 1 right exactly when box 1 is asked
    assert prof.loc["track", "query-blind baseline"] == pytest.approx(asked[0])
    assert prof.loc["base", "accuracy"] == P.accuracy(runs[0]["base"].model, enc)
    text = P.answer_profile_text(P.answer_profile(runs, data), cfg)
    base_part, track_part = text.split("**track**")
    assert "binds the query" in base_part and "without binding" in track_part
    curve = P.box_curve(runs, data, tok, cfg).set_index(["model", "boxes"])
    assert list(curve.loc["base", "accuracy"]) == [1.0, 1.0]  # the oracle binds at every box count
    assert list(curve.loc["base", "chance"]) == [1 / 2, 1 / 3]
    assert 0.2 < curve.loc[("track", 2), "accuracy"] < 0.8  # always box 1: right when box 1 is asked (~1/2)
    table = P.box_curve_summary(P.box_curve(runs, data, tok, cfg))
    assert list(table.columns) == ["2 boxes", "3 boxes"] and table.loc["chance (1 / boxes)", "3 boxes"] == "0.33"


# ------------------------------------------------------------------------------------------------ verdict rules
def test_tuning_rule():
    cfg = P.Config.load("tiny")
    acc = pd.DataFrame({"seed": [0, 0, 1, 1, 2, 2], "model": ["base", "arith"] * 3,
                        "accuracy": [0.6, 0.7, 0.6, 0.65, 0.6, 0.7]})
    assert P.claim_tuning_improves(acc, cfg).verdict == "reproduced"
    acc.loc[3, "accuracy"] = 0.55
    assert P.claim_tuning_improves(acc, cfg).verdict == "partly"
    acc["accuracy"] = 0.6
    assert P.claim_tuning_improves(acc, cfg).verdict == "not reproduced"


def test_overlap_and_faithfulness_rules():
    cfg = P.Config.load("tiny")
    circuit = {"VF": [(3, 0), (3, 1)], "PT": [(2, 0)], "PD": [(1, 0)], "SR": [(0, 0)]}
    scores = {g: torch.zeros(4, 4) for g in P.GROUPS}
    same = {(0, "base"): (circuit, scores), (0, "track"): (circuit, scores)}
    ov = P.overlap_table(same, cfg)
    assert (ov["precision"] == 1).all() and P.claim_overlap(ov, cfg).verdict == "reproduced"
    other = {g: [(L, 3) for L, _ in heads] for g, heads in circuit.items()}
    ov = P.overlap_table({(0, "base"): (circuit, scores), (0, "track"): (other, scores)}, cfg)
    assert (ov["precision"] == 0).all() and P.claim_overlap(ov, cfg).verdict == "not reproduced"
    faith = pd.DataFrame({"seed": 0, "model": ["base", "track"], "circuit": "base", "model_acc": [0.6, 0.9],
                          "circuit_acc": [0.6, 0.5], "faithfulness": [1.0, 0.55], "random_acc": [0.0, 0.0]})
    assert P.claim_circuit_present(faith, cfg).verdict == "partly"
    faith["faithfulness"] = 0.95
    assert P.claim_circuit_present(faith, cfg).verdict == "reproduced"


def test_dcm_rule():
    cfg = P.Config.load("tiny")
    pct = {"VF": (10, 50, 0), "PT": (40, 3, 0), "PD": (45, 2, 1), "SR": (10, 1, 0)}
    dcm = pd.DataFrame([{"seed": 0, "model": "base", "group": g, "desideratum": k, "target_pct": v}
                        for g, vals in pct.items() for k, v in zip(E.DESIDERATA, vals)])
    assert P.claim_dcm(dcm, cfg).verdict == "reproduced"
    dcm.loc[dcm["desideratum"] == "box_label", "target_pct"] = 30
    assert P.claim_dcm(dcm, cfg).verdict == "partly"


# ------------------------------------------------------------------------------------------------ paper profile
@pytest.mark.models
def test_paper_profile_pipeline_on_a_tiny_llama(tmp_path, monkeypatch, tok):
    monkeypatch.setenv("STUDY_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("STUDY_RESULTS", str(tmp_path / "results"))
    config = tf.LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                            bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    torch.manual_seed(0)
    base = tf.LlamaForCausalLM(config).eval()
    models.save_model(base, tok, tmp_path / "llama")
    models.save_model(perturbed_copy(base, scale=0.2), tok, tmp_path / "float")
    cfg = P.Config.load("paper", {**SMALL, "base_source": str(tmp_path / "llama"),
                                  "tuned_source": str(tmp_path / "float"), "allow_network": False})
    pre = P.get_pretrained(cfg)
    assert pre.key.startswith("dir:")
    data = P.task_data(cfg, pre.tokenizer)
    runs = P.get_models(cfg, pre, data)
    assert list(runs[0]) == ["base", "arith"] and runs[0]["base"].model is pre.model
    acc = P.accuracy_table(runs, data)
    found = P.discover_all(runs, data, cfg)
    circuit, scores = found[0, "base"]
    assert set(circuit) == set(P.GROUPS) and scores["VF"].shape == (3, 4)
    assert scores["SR"][2:].eq(0).all() or not circuit["PD"]  # senders at or after the receivers' layer score 0
    assert len(P.circuit_table(found)) == 2
    faith = P.faithfulness_table(runs, found, data, cfg)
    assert set(faith["circuit"]) == {"base", "arith"} and faith["random_acc"].between(0, 1).all()
    ov = P.overlap_table(found, cfg)
    dcm = P.dcm_table(runs, found, data, cfg)
    assert dcm["target_pct"].between(0, 100).all()
    cm = P.cmap_table(runs, found, data)
    assert set(cm["patched"]) == {"full circuit", *P.GROUPS}
    ko = P.knockout_table(runs, data, cfg)
    assert set(ko["from_layer"]) == {0, 1, 2, 3}
    cost = P.sweep_cost(runs[0]["base"].model, data, cfg)
    assert cost.ratio > 0
    claims = P.verdicts(acc, faith, ov, dcm, cm, ko, cfg)
    assert len(claims) == 6 and len(P.verdict_table(claims)) == 6
    record = P.write_results(cfg, pre, runs, claims, cost)
    assert record["models"]["base"]["layers"] == 3 and (tmp_path / "results" / "03_prakash.json").exists()
    for table in (P.accuracy_summary(acc, cfg), P.faithfulness_summary(faith), P.overlap_summary(ov),
                  P.dcm_summary(dcm), P.cmap_summary(cm)):
        assert len(table)


@pytest.mark.models
def test_trained_models_are_cached_and_synthesis_pairs_load_them(tmp_path, monkeypatch, tok):
    """Base (entity pre-training with a stopping rule), arith and track through the cache, on a tiny GPT-2 folder."""
    monkeypatch.setenv("STUDY_CACHE", str(tmp_path / "cache"))
    torch.manual_seed(0)
    gpt = tf.GPT2LMHeadModel(tf.GPT2Config(vocab_size=len(tok), n_positions=64, n_embd=32, n_layer=2, n_head=2))
    models.save_model(gpt, tok, tmp_path / "gpt")
    params = {**SMALL, "base_source": str(tmp_path / "gpt"), "train_size": 32, "base_steps": 3, "eval_every": 1,
              "arith_steps": 2, "track_steps": 2, "batch_size": 4, "bf16": False, "n_seeds": 1}
    cfg = P.Config.load("tiny", params)
    pre = P.get_pretrained(cfg)
    data = P.task_data(cfg, pre.tokenizer)
    runs = P.get_models(cfg, pre, data)
    base = runs[0]["base"]
    assert base.metrics["steps"] in (0, 1, 2, 3) and not base.artifact.cached
    assert not torch.equal(base.model.transformer.h[0].attn.c_attn.weight, gpt.transformer.h[0].attn.c_attn.weight)
    again = P.get_models(cfg, pre, data, cached_only=True)
    assert all(t.artifact.cached for t in again[0].values())
    pairs = P.synthesis_pairs("tiny", params)
    assert [p["name"] for p in pairs] == ["prakash_arith", "prakash_track"]
    test_acc = P.accuracy(runs[0]["arith"].model, data.enc["test"])
    assert pairs[0]["metric"](pairs[0]["tuned"], pairs[0]["inputs"]) == pytest.approx(test_acc)
    with pytest.raises(RuntimeError, match="not in the cache"):
        P.synthesis_pairs("tiny", {**params, "arith_steps": 3})
    # resizing an evaluation set reuses the trained models; resizing the set that steers training does not
    bigger = P.Config.load("tiny", {**params, "test_size": params.get("test_size", 20) + 7, "pp_size": 9,
                                         "curve_size": 11})
    assert all(t.artifact.cached for t in P.get_models(bigger, pre, P.task_data(bigger, pre.tokenizer), True)[0].values())
    other_val = P.Config.load("tiny", {**params, "val_size": cfg.val_size + 3})
    with pytest.raises(RuntimeError, match="not in the cache"):
        P.get_models(other_val, pre, P.task_data(other_val, pre.tokenizer), cached_only=True)


def test_circuit_claims_fail_without_a_working_base():
    cfg = P.Config.load("tiny")
    acc = pd.DataFrame({"seed": [0, 0], "model": ["base", "arith"], "accuracy": [0.1, 0.1]})
    circuit = {"VF": [(3, 0)], "PT": [(2, 0)], "PD": [(1, 0)], "SR": [(0, 0)]}
    scores = {g: torch.zeros(4, 4) for g in P.GROUPS}
    ov = P.overlap_table({(0, "base"): (circuit, scores), (0, "arith"): (circuit, scores)}, cfg)
    faith = pd.DataFrame({"seed": 0, "model": ["base"], "circuit": "base", "model_acc": 0.1, "circuit_acc": 0.1,
                          "faithfulness": 1.0, "random_acc": 0.0})
    dcm = pd.DataFrame([{"seed": 0, "model": "base", "group": g, "desideratum": k, "target_pct": 0.0}
                        for g in P.GROUPS for k in E.DESIDERATA])
    cm = pd.DataFrame({"seed": 0, "model": "arith", "patched": ["full circuit"], "accuracy": 0.1, "base_acc": 0.1,
                       "tuned_acc": 0.1})
    ko = pd.DataFrame([{"seed": 0, "model": "base", "knockout": k, "from_layer": f, "accuracy": 0.1}
                       for k in P.KNOCKOUTS for f in range(5)])
    claims = P.verdicts(acc, faith, ov, dcm, cm, ko, cfg.__class__.load("tiny", {"tuned": ["arith"]}))
    assert all(c.verdict == "not reproduced" and "chance" in c.reason for c in claims[1:])
    assert P.claim_overlap(ov, cfg).verdict == "reproduced"  # the rule alone would pass it
