"""lib.chapters.prakash, module by module: config rules; measure's pieces against lib.patching and its analysis cache;
every verdict rule on constructed measurements (reproduced, not reproduced / inconclusive, and not testable when the
base does not bind: a copier that names a prompt object at random); the paper-profile pipeline end to end on a tiny
random Llama saved to a folder (the `base`) and a perturbed copy (the released fine-tuned model), never the network."""
import subprocess
import sys

from functools import partial

import numpy as np
import pandas as pd
import pytest
import torch
import transformers as tf

from lib import models
from lib.config import ConfigError
from lib.hooks import forward
from lib.patching import cross_model_patch
from lib.chapters.prakash import build, claims as C, config, measure as M, report
from lib.claims import INCONCLUSIVE, NOT_REPRODUCED, NOT_TESTABLE, OFFLINE, PARTLY, REPRODUCED
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
    cfg = config.Config.load(profile)
    assert cfg.profile == profile and len(cfg.seeds) == cfg.n_seeds


@pytest.mark.parametrize("params, word", [({"heads_base": [1, 2]}, "heads_base"),
                                          ({"base_easy_steps": 10**5}, "base_easy_steps"),
                                          ({"base_d_model": 30}, "base_d_model"),
                                          ({"n_boxes": 1}, "n_boxes"), ({"tuned": ["goat"]}, "tuned"),
                                          ({"tuned_source": "x", "n_seeds": 3}, "n_seeds"),
                                          ({"margin": 0.1}, "margin"), ({"faith_min": 0.5}, "faith_min")])
def test_bad_parameters_are_named(params, word):
    with pytest.raises(ConfigError, match=word):  # the verdict thresholds are no parameters any more
        config.Config.load("tiny", params)


def test_an_untrained_base_needs_no_curriculum_setting():
    assert config.Config.load("tiny", {"base_steps": 0}).base_steps == 0  # the default base_easy_steps is not in the way


def test_paper_profile_needs_its_models():
    with pytest.raises(ConfigError, match="base_source"):
        config.Config.load("paper", {"base_source": ""})


def test_config_imports_no_torch_and_knows_the_local_models():
    code = "import sys, lib.chapters.prakash.config; print(sorted({'torch', 'pandas', 'matplotlib'} & set(sys.modules)))"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "[]"
    assert config.LOCAL_MODELS == tuple(models.LOCAL_MODELS)


# ------------------------------------------------------------------------------------------------ measure: pieces
def test_top_heads_keeps_the_most_negative_heads():
    scores = torch.tensor([[0.1, -0.5], [-0.2, -0.9]])
    assert M.top_heads(scores, 2) == [(1, 1), (0, 1)]
    assert M.top_heads(scores, 2, exclude=[(1, 1)]) == [(0, 1), (1, 0)]
    assert M.top_heads(scores, 4) == [(1, 1), (0, 1), (1, 0)]  # a positive score is never kept
    keep = M.circuit_keep({"VF": [(1, 1)], "PT": [(0, 1)], "PD": [(0, 0)], "SR": []})
    assert keep == {"last": {(1, 1), (0, 1)}, "query": {(0, 0)}, "prev_query": set()}


def test_cmap_logits_agree_with_cross_model_patch():
    base, ids = tiny_model("gpt2"), torch.randint(0, 97, (3, 8), generator=torch.Generator().manual_seed(0))
    tuned = perturbed_copy(base)
    inputs = {"input_ids": ids}
    pos = {"last": 7, "query": 5, "prev_query": torch.tensor([1, 2, 3])}
    assert torch.equal(M.cmap_logits(base, tuned, inputs, {"last": set()}, pos), forward(base, inputs).detach())
    keep = {"last": {(1, 2)}, "query": {(0, 1)}}
    expected = cross_model_patch(base, tuned, inputs, {(1, 2): 7, (0, 1): 5})
    assert torch.equal(M.cmap_logits(base, tuned, inputs, keep, pos), expected)
    both = M.cmap_logits(base, tuned, inputs, {"last": {(0, 1)}, "prev_query": {(0, 1)}}, pos)
    assert not torch.equal(both, M.cmap_logits(base, tuned, inputs, {"last": {(0, 1)}}, pos))  # positions add up


def test_patching_from_an_identical_source_changes_nothing(tok):
    cfg = config.Config.load("tiny", {**SMALL, "objects": "nouns"})
    data = build.task_data(cfg, tok)
    model = tiny_model("gpt2", vocab_size=len(tok))
    name = "dcm_object_test"
    data.enc[name + "_src"] = data.enc[name]
    plain = build.predictions(model, data.enc[name])
    for g in config.GROUPS:
        assert torch.equal(M.patched_from_source(model, data, name, [(0, 1), (1, 3)], g), plain)


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
    cfg = config.Config.load("tiny", {**SMALL, "objects": "nouns"})
    data = build.task_data(cfg, tok)
    layouts = [E.layout(tok, nb, data.vocab) for nb in (2, 3)]
    runs = {0: {"base": build.Trained("base", 0, _Fixed(layouts, len(tok)), None),
                "track": build.Trained("track", 0, _Fixed(layouts, len(tok), box=0), None)}}
    preds = M.test_predictions(runs, data, cfg)  # models without a key: measured directly, not cached
    prof = M.answer_profile(runs, data, preds).set_index("model")
    asked = np.bincount(data.boxes["test"].query_box, minlength=3) / len(data.boxes["test"])
    assert prof.loc["base", "in context"] == 1 and prof.loc["base", "accuracy"] == 1
    assert prof.loc["base", "query-blind baseline"] == pytest.approx((asked ** 2).sum())
    assert prof.loc["track", "box 1"] == 1 and prof.loc["track", "in context"] == 1
    assert prof.loc["track", "accuracy"] == pytest.approx(asked[0])  # box 1 right exactly when box 1 is asked
    assert prof.loc["track", "query-blind baseline"] == pytest.approx(asked[0])
    acc = M.accuracy_table(runs, data, preds).set_index("model")
    assert acc.loc["base", "accuracy"] == build.accuracy(runs[0]["base"].model, data.enc["test"])
    text = report.answer_profile_text(M.answer_profile(runs, data, preds)).data
    base_part, track_part = text.split("**track**")
    assert "binds the query" in base_part and "without binding" in track_part
    curve = M.box_curve(runs, data, tok, cfg).set_index(["model", "boxes"])
    assert list(curve.loc["base", "accuracy"]) == [1.0, 1.0]  # the oracle binds at every box count
    assert list(curve.loc["base", "chance"]) == [1 / 2, 1 / 3]
    assert 0.2 < curve.loc[("track", 2), "accuracy"] < 0.8  # always box 1: right when box 1 is asked (~1/2)
    table = report.box_curve_summary(M.box_curve(runs, data, tok, cfg))
    assert list(table.columns) == ["2 boxes", "3 boxes"] and table.loc["chance (1 / boxes)", "3 boxes"] == "0.33"


def test_analyses_are_cached_by_model_key_and_reload_identically(tok, tmp_path, monkeypatch):
    monkeypatch.setenv("STUDY_CACHE", str(tmp_path / "cache"))
    cfg = config.Config.load("tiny", {**SMALL, "objects": "nouns", "n_seeds": 1})
    data = build.task_data(cfg, tok)
    model = tiny_model("gpt2", vocab_size=len(tok))
    runs = {0: {"base": build.Trained("base", 0, model, None, "test:base-0")}}
    found = M.discover_all(runs, data, cfg)
    first = M.knockout_table(runs, data, cfg), M.faithfulness_table(runs, found, data, cfg)
    assert len(list((tmp_path / "cache" / "prakash_knockout").iterdir())) == 1
    runs[0]["base"].model = None  # a second run must not need the model: everything comes from the cache
    again = M.discover_all(runs, data, cfg)
    assert again[0, "base"][0] == found[0, "base"][0]
    assert all(torch.equal(again[0, "base"][1][g], found[0, "base"][1][g]) for g in config.GROUPS)
    pd.testing.assert_frame_equal(M.knockout_table(runs, data, cfg), first[0])
    pd.testing.assert_frame_equal(M.faithfulness_table(runs, again, data, cfg), first[1])
    other = {0: {"base": build.Trained("base", 0, model, None, "test:base-other")}}  # another model: recomputed
    M.knockout_table(other, data, cfg)
    assert len(list((tmp_path / "cache" / "prakash_knockout").iterdir())) == 2


# ------------------------------------------------------------------------------------------------ claims
SEEDS = (0, 1, 2)
JITTER = (0.0, 0.01, -0.01)  # per-seed noise: intervals are finite and narrow


def _frame(rows):
    return pd.DataFrame(rows)


def _accuracy(base=0.6, arith=0.8, pure=0.6, track=0.9):
    return _frame([{"seed": s, "model": m, "accuracy": v + j} for s, j in zip(SEEDS, JITTER)
                   for m, v in (("base", base), ("arith_bound", arith), ("arith_pure", pure), ("track", track))])


def _answers(accuracy=0.6, baseline=0.2):
    """The base's answer profile: binding gap accuracy - baseline (a copier: accuracy = baseline = 1 / boxes)."""
    return _frame([{"seed": s, "model": "base", "in context": 1.0, "accuracy": accuracy + j,
                    "query-blind baseline": baseline + j} for s, j in zip(SEEDS, JITTER)])


COPIER = dict(accuracy=1 / 7, baseline=1 / 7)  # names a prompt object at random: no binding


def _faith(base=1.0, tuned=0.9, random=0.0):
    return _frame([{"seed": s, "model": m, "circuit": "base", "model_acc": 0.6, "circuit_acc": 0.6 * f + j,
                    "faithfulness": f + j, "random_acc": random} for s, j in zip(SEEDS, JITTER)
                   for m, f in (("base", base), ("arith_bound", tuned))])


TUNED = ("arith_bound", "arith_pure", "track")


def _overlap(found=2, null=0.0, base=2, chance=0.2):
    """Per seed, tuned model and group: `found` of the base group's `base` heads in the tuned group; the other seeds'
    base circuits `null` of them on average (jittered per seed so that intervals are finite)."""
    return _frame([{"seed": s, "model": m, "group": g, "overlap": found, "base": base, "precision": found / base,
                    "null_overlap": max(null + 2 * j, 0.0) if null else null,
                    "null_precision": (max(null + 2 * j, 0.0) if null else null) / base, "chance": chance}
                   for s, j in zip(SEEDS, JITTER) for m in TUNED for g in config.GROUPS])


PAPER_LIKE = {"VF": (12.8, 45.6, 0.0), "PT": (36.9, 2.9, 0.0), "PD": (44.0, 2.1, 0.0), "SR": (13.4, 1.5, 0.0)}


def _dcm(pct=PAPER_LIKE, unpatched=None):
    """% target per group and desideratum; `unpatched` (same layout) the % with nothing patched (default 0)."""
    unpatched = unpatched or {g: (0.0, 0.0, 0.0) for g in pct}
    return _frame([{"seed": s, "model": "base", "group": g, "desideratum": k, "target_pct": v + 100 * abs(j),
                    "unpatched_pct": u, "lift": v + 100 * abs(j) - u}
                   for s, j in zip(SEEDS, JITTER) for g, vals in pct.items()
                   for k, v, u in zip(E.DESIDERATA, vals, unpatched[g])])


def _cmap(recovered=1.0, base=0.6, tuned=0.8):
    return _frame([{"seed": s, "model": "arith_bound", "patched": "full circuit", "base_acc": base + j, "tuned_acc": tuned + j,
                    "accuracy": base + j + recovered * (tuned - base) * (1 + j)} for s, j in zip(SEEDS, JITTER)])


def _knockout(full=0.6, knocked=(0.05, 0.05, 0.3), control=0.6, layers=4):
    names = [k for k in M.KNOCKOUTS if k != M.CONTROL] + [M.CONTROL]
    return _frame([{"seed": s, "model": "base", "knockout": k, "from_layer": f,
                    "accuracy": (full if f == layers else v) + j}
                   for s, j in zip(SEEDS, JITTER) for k, v in zip(names, [*knocked, control])
                   for f in range(layers + 1)])


def _measured(answers=None, **tables) -> M.Measured:
    t = {"accuracy": _accuracy(), "answers": _answers(), "faithfulness": _faith(), "overlap": _overlap(),
         "dcm": _dcm(), "cmap": _cmap(), "knockout": _knockout(), **tables}
    if answers is not None:
        t["answers"] = answers
    return M.Measured(**t, n_boxes=7, tuned=TUNED)


def _verdict(claim_fn, **kw):
    return claim_fn(_measured(**kw)).verdict


def test_every_rule_is_declared_once_and_rendered_from_its_constants():
    assert [r.id for r in C.RULES] == [c.id for c in C.claims(_measured())]
    assert "0.8" in C.FAITHFUL.text() and "0.15" in C.FAITHFUL.text() and "5%" in C.DCM.text()
    assert all(C.BINDS in r.requires for r in C.RULES[2:])  # every circuit claim needs a binding base


def test_arith_rules():
    bound = partial(C.claim_arith, rule=C.ARITH_BOUND_IMPROVES)
    pure = partial(C.claim_arith, rule=C.ARITH_PURE_IMPROVES)
    assert _verdict(bound) == REPRODUCED and _verdict(pure) == NOT_REPRODUCED  # judged separately
    assert _verdict(bound, accuracy=_accuracy(arith=0.6)) == NOT_REPRODUCED
    noisy = _accuracy(arith=0.64)
    noisy.loc[(noisy.model == "arith_bound") & (noisy.seed == 1), "accuracy"] += 0.1
    assert _verdict(bound, accuracy=noisy) == INCONCLUSIVE  # the interval straddles the margin
    one_seed = _measured(accuracy=_accuracy()[lambda d: d.seed == 0])
    assert bound(one_seed).verdict == INCONCLUSIVE
    no_arith = M.Measured(**{**_measured().__dict__, "tuned": ("track",)})
    assert bound(no_arith).verdict == OFFLINE
    ceiling = C.claim_arith(_measured(accuracy=_accuracy(base=0.97, arith=0.98)), C.ARITH_BOUND_IMPROVES)
    assert ceiling.verdict == NOT_TESTABLE and "accuracy" in ceiling.precondition  # no room for the margin


def test_faithfulness_rule():
    assert _verdict(C.claim_faithful) == REPRODUCED
    assert _verdict(C.claim_faithful, faithfulness=_faith(base=0.4, tuned=0.3, random=0.3)) == NOT_REPRODUCED
    assert _verdict(C.claim_faithful, faithfulness=_faith(tuned=0.5)) == PARTLY  # 3 of 4 indicators hold
    claim = C.claim_faithful(_measured(answers=_answers(**COPIER)))
    assert claim.verdict == NOT_TESTABLE and "binding gap" in claim.precondition and "measured" in claim.precondition


def test_overlap_rule():
    assert _verdict(C.claim_overlap) == REPRODUCED
    assert _verdict(C.claim_overlap, overlap=_overlap(found=0)) == NOT_REPRODUCED
    # every seed's circuit holds the same heads: far above chance, but no more than the other seeds' circuits
    same = _overlap(found=2, null=2.0)
    assert (same["precision"] > same["chance"] + 0.25).all() and _verdict(C.claim_overlap, overlap=same) != REPRODUCED
    half = _overlap()
    for col in ("precision", "null_precision"):
        half.loc[half.group.isin(["PD", "SR"]), col] = np.nan  # no base heads there: not defined
    half.loc[half.group.isin(["PD", "SR"]), "base"] = 0
    claim = C.claim_overlap(_measured(overlap=half))
    assert "nan" not in claim.ours and "not defined" in claim.ours
    one = _overlap()[lambda d: d.seed == 0].assign(null_overlap=np.nan, null_precision=np.nan)
    assert _verdict(C.claim_overlap, overlap=one) == INCONCLUSIVE  # one seed: no null
    assert _verdict(C.claim_overlap, answers=_answers(**COPIER)) == NOT_TESTABLE


def test_dcm_rule():
    assert _verdict(C.claim_dcm) == REPRODUCED
    swapped = {g: (o, p, b) for g, (p, o, b) in PAPER_LIKE.items()}  # object and position exchanged
    assert _verdict(C.claim_dcm, dcm=_dcm({**swapped, "SR": (0, 0, 30)})) == NOT_REPRODUCED
    assert _verdict(C.claim_dcm, dcm=_dcm({**PAPER_LIKE, "SR": (10, 1, 30)})) == PARTLY  # box label encoded
    assert _verdict(C.claim_dcm, answers=_answers(**COPIER)) == NOT_TESTABLE
    # a copier: the box-label target (an object of the base prompt) is hit 13.2 % of the time with nothing patched,
    # and patching changes nothing: judged on the lift, no indicator but "box label nowhere" can hold
    copy_rate = {g: (0.0, 0.0, 13.2) for g in PAPER_LIKE}
    copier = _dcm({g: (0.0, 0.0, 13.2) for g in PAPER_LIKE}, unpatched=copy_rate)
    assert _verdict(C.claim_dcm, dcm=copier) == NOT_REPRODUCED
    # the same percentages as the paper's, but all of them already there without the patch: not reproduced
    assert _verdict(C.claim_dcm, dcm=_dcm(unpatched=PAPER_LIKE)) == NOT_REPRODUCED


def test_cmap_rule():
    assert _verdict(C.claim_cmap) == REPRODUCED
    assert _verdict(C.claim_cmap, cmap=_cmap(recovered=0.2)) == NOT_REPRODUCED
    assert _verdict(C.claim_cmap, cmap=_cmap(recovered=0.8)) == INCONCLUSIVE  # straddles 0.8
    flat = _measured(accuracy=_accuracy(arith=0.6, track=0.9))  # track gains, but CMAP reads arith_bound
    claim = C.claim_cmap(flat)
    assert claim.verdict == NOT_TESTABLE and "gain" in claim.precondition  # nothing to recover
    assert _verdict(C.claim_cmap, answers=_answers(**COPIER)) == NOT_TESTABLE


def test_knockout_rule():
    assert _verdict(C.claim_knockout) == REPRODUCED
    assert _verdict(C.claim_knockout, knockout=_knockout(knocked=(0.55, 0.55, 0.55))) == NOT_REPRODUCED
    # every knockout drops as much as the control: nothing specific about these edges
    assert _verdict(C.claim_knockout, knockout=_knockout(knocked=(0.1, 0.1, 0.1), control=0.1)) == NOT_REPRODUCED
    assert _verdict(C.claim_knockout, knockout=_knockout(knocked=(0.05, 0.05, 0.55))) == PARTLY
    # not "below half" any more: a drop from 0.6 to 0.4 (a third) counts, the control's 0.02 is small
    assert _verdict(C.claim_knockout, knockout=_knockout(knocked=(0.4, 0.4, 0.4), control=0.58)) == REPRODUCED
    assert _verdict(C.claim_knockout, answers=_answers(**COPIER)) == NOT_TESTABLE


def test_a_copier_passes_no_circuit_claim_even_with_perfect_circuit_numbers():
    """A model without binding (answers a prompt object at random): accuracy = query-blind baseline = 1/7."""
    claims = C.claims(_measured(answers=_answers(**COPIER)))
    assert [c.verdict for c in claims[2:]] == [NOT_TESTABLE] * 5
    assert all("binding gap" in c.precondition for c in claims[2:])
    assert claims[0].verdict == REPRODUCED  # the accuracy claims are not circuit claims


def test_undefined_values_are_shown_as_not_defined():
    assert C.shown([np.nan, np.nan], why="model accuracy 0") == "not defined (model accuracy 0)"
    assert C.shown([0.5, np.nan], why="x").startswith("0.50 ± 0.00 (n=1); not defined in 1 of 2 (x)")
    faith = _faith()
    faith["faithfulness"] = np.nan
    assert "nan" not in report.faithfulness_summary(faith).to_string()
    assert "nan" not in C.claim_faithful(_measured(faithfulness=faith)).ours


# ------------------------------------------------------------------------------------------------ paper profile
@pytest.mark.models
def test_paper_profile_pipeline_on_a_tiny_llama(tmp_path, monkeypatch, tok):
    monkeypatch.setenv("STUDY_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("STUDY_RESULTS", str(tmp_path / "results"))
    llama = tf.LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                           num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                           bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    torch.manual_seed(0)
    base = tf.LlamaForCausalLM(llama).eval()
    models.save_model(base, tok, tmp_path / "llama")
    models.save_model(perturbed_copy(base, scale=0.2), tok, tmp_path / "float")
    cfg = config.Config.load("paper", {**SMALL, "base_source": str(tmp_path / "llama"),
                                       "tuned_source": str(tmp_path / "float"), "allow_network": False})
    pre = build.get_pretrained(cfg)
    assert pre.key.startswith("dir:")
    data = build.task_data(cfg, pre.tokenizer)
    runs = build.get_models(cfg, pre, data)
    assert list(runs[0]) == ["base", "arith_bound"] and runs[0]["base"].model is pre.model
    assert runs[0]["arith_bound"].key.startswith("dir:")  # the analyses of released models are cached by their folders
    preds = M.test_predictions(runs, data, cfg)
    acc, answers = M.accuracy_table(runs, data, preds), M.answer_profile(runs, data, preds)
    found = M.discover_all(runs, data, cfg)
    circuit, scores = found[0, "base"]
    assert set(circuit) == set(config.GROUPS) and scores["VF"].shape == (3, 4)
    assert scores["SR"][2:].eq(0).all() or not circuit["PD"]  # senders at or after the receivers' layer score 0
    assert len(report.circuit_table(found)) == 2
    faith = M.faithfulness_table(runs, found, data, cfg)
    assert set(faith["circuit"]) == {"base", "arith_bound"} and faith["random_acc"].between(0, 1).all()
    ov = M.overlap_table(found)
    dcm = M.dcm_table(runs, found, data, cfg)
    assert dcm["target_pct"].between(0, 100).all()
    cm = M.cmap_table(runs, found, data, cfg)
    assert set(cm["patched"]) == {"full circuit", *config.GROUPS}
    ko = M.knockout_table(runs, data, cfg)
    assert set(ko["from_layer"]) == {0, 1, 2, 3}
    cost = M.sweep_cost(runs[0]["base"].model, data, cfg)
    assert cost.ratio > 0
    measured = M.Measured(acc, answers, faith, ov, dcm, cm, ko, cfg.n_boxes, tuple(cfg.tuned))
    claims = C.claims(measured)
    assert len(claims) == 7 and all(c.verdict == NOT_TESTABLE for c in claims[2:])  # a random model does not bind
    assert claims[1].verdict == OFFLINE  # the paper profile makes no arith_pure model
    record = report.write_results(cfg, pre, runs, claims, cost)
    assert record["models"]["base"]["layers"] == 3 and (tmp_path / "results" / "03_prakash.json").exists()
    for table in (report.accuracy_summary(acc), report.faithfulness_summary(faith), report.overlap_summary(ov),
                  report.dcm_summary(dcm), report.cmap_summary(cm)):
        assert len(table) and "nan" not in table.to_string()
    for fig in (report.plot_scores(found, 0, cfg.model_names()), report.plot_dcm(dcm), report.plot_knockout(ko)):
        assert fig.axes


@pytest.mark.models
def test_trained_models_are_cached_and_synthesis_pairs_load_them(tmp_path, monkeypatch, tok):
    """The chapter's binder (trained from random init), arith_bound, arith_pure and track through the cache."""
    monkeypatch.setenv("STUDY_CACHE", str(tmp_path / "cache"))
    params = {**SMALL, "base_layers": 2, "base_d_model": 32, "base_heads": 2, "base_steps": 3, "base_easy_steps": 1,
              "base_batch": 4, "eval_every": 1, "arith_steps": 2, "track_steps": 2, "batch_size": 4, "bf16": False,
              "n_seeds": 1}
    cfg = config.Config.load("tiny", params)
    pre = build.get_pretrained(cfg)
    assert pre.key.startswith("prakash_binder:") and models.family_of(pre.model) == "llama"
    data = build.task_data(cfg, pre.tokenizer)
    assert data.enc["test"]["query_pos"] == data.enc["test"]["last"] - 2  # one token per word, as Llama's prompts
    assert (data.enc["test"]["input_ids"][:, 0] == pre.tokenizer.bos_token_id).all()
    runs = build.get_models(cfg, pre, data)
    base = runs[0]["base"]
    assert base.metrics["steps"] == 3 and not base.artifact.cached and [h["step"] for h in base.history()] == [0, 1, 2, 3]
    q = "model.layers.0.self_attn.q_proj.weight"
    assert not torch.equal(base.model.state_dict()[q], pre.model.state_dict()[q])  # trained from the same init
    for k in ("arith_bound", "arith_pure", "track"):
        assert 0 <= runs[0][k].metrics["objective_acc"] <= 1
        assert not torch.equal(runs[0][k].model.state_dict()[q], base.model.state_dict()[q])  # LoRA merged into q
    again = build.get_models(cfg, pre, data, cached_only=True)
    assert all(t.artifact.cached for t in again[0].values())
    pairs = build.synthesis_pairs("tiny", params)
    assert [p["name"] for p in pairs] == ["prakash_arith_bound", "prakash_arith_pure", "prakash_track"]
    test_acc = build.accuracy(runs[0]["arith_bound"].model, data.enc["test"])
    assert pairs[0]["metric"](pairs[0]["tuned"], pairs[0]["inputs"]) == pytest.approx(test_acc)
    with pytest.raises(RuntimeError, match="not in the cache"):
        build.synthesis_pairs("tiny", {**params, "arith_steps": 3})
    # resizing an evaluation set reuses the trained models; resizing the set that steers training does not
    bigger = config.Config.load("tiny", {**params, "test_size": params.get("test_size", 20) + 7, "pp_size": 9,
                                         "curve_size": 11})
    reused = build.get_models(bigger, pre, build.task_data(bigger, pre.tokenizer), True)
    assert all(t.artifact.cached for t in reused[0].values())
    other_val = config.Config.load("tiny", {**params, "val_size": cfg.val_size + 3})
    with pytest.raises(RuntimeError, match="not in the cache"):
        build.get_models(other_val, pre, build.task_data(other_val, pre.tokenizer), cached_only=True)


def test_circuit_rules_on_a_copiers_numbers_with_the_gate_passed():
    """What each circuit rule says about the tables a copier produces (accuracy = 1/7 = the query-blind rate), judged
    as if the binding gate had passed: only the knockout rule cannot tell it from a binder, which is why every circuit
    rule is gated on the binding gap."""
    p = 1 / 7
    faith = _frame([{"seed": s, "model": m, "circuit": "base", "model_acc": p, "circuit_acc": p + j / 10,
                     "faithfulness": 1 + j, "random_acc": p + j / 10} for s, j in zip(SEEDS, JITTER)
                    for m in ("base", *TUNED)])  # mean ablation keeps copying, whichever heads are kept
    assert _verdict(C.claim_faithful, faithfulness=faith) == NOT_REPRODUCED  # random circuits do as well
    assert _verdict(C.claim_overlap, overlap=_overlap(found=1, null=1.0)) != REPRODUCED  # no more than other seeds
    copy_rate = {g: (0.0, 0.0, 100 * p) for g in PAPER_LIKE}
    assert _verdict(C.claim_dcm, dcm=_dcm(copy_rate, unpatched=copy_rate)) == NOT_REPRODUCED
    flat = _accuracy(base=p, arith=p, pure=p, track=p)
    assert _verdict(C.claim_cmap, accuracy=flat) == NOT_TESTABLE  # nothing gained, nothing to recover
    # a copier cannot name an object it cannot see: the last -> object knockout costs its whole accuracy, the control
    # nothing; by the knockout numbers alone it looks like a binder
    copier_ko = _knockout(full=p, knocked=(0.0, p, p), control=p)
    assert C.knockout_effects(copier_ko)["last -> correct object"].gt(0).all()


def test_circuit_claims_read_only_the_seeds_whose_base_binds():
    answers = _answers()
    answers.loc[answers.seed == 1, "query-blind baseline"] = answers.loc[answers.seed == 1, "accuracy"]  # copies
    m = _measured(answers=answers)
    assert C.binding_seeds(m) == [0, 2]
    faith = _faith()
    faith.loc[faith.seed == 1, ["faithfulness", "circuit_acc"]] = 0.0  # the non-binding seed's numbers are not read
    claim = C.claims(_measured(answers=answers, faithfulness=faith))[2]
    assert claim.id == "base_circuit_faithful" and claim.verdict == REPRODUCED and claim.n == 2
    one = answers.copy()
    one.loc[one.seed == 2, "query-blind baseline"] = one.loc[one.seed == 2, "accuracy"]
    claims = C.claims(_measured(answers=one))
    assert [c.verdict for c in claims[2:]] == [NOT_TESTABLE] * 5  # one binding seed: no interval


def test_length_groups_give_the_padded_batchs_loss_and_gradient():
    """The base trains on rows grouped by length (each group padded to its own length): the groups' share-weighted
    losses sum to the one padded batch's loss, and so do their gradients."""
    from lib import train
    from lib.chapters.prakash import binder

    cfg = config.Config.load("smoke", {})
    pre = binder.binder(cfg)
    vocab = build.task_data(cfg, pre.tokenizer).vocab
    pairs = binder.tracking_pairs(vocab, 12, binder.box_shares(5, easy=False), np.random.default_rng(0))
    model = models.build_model(models.model_config_of(pre.model), pre.tokenizer, seed=0)

    def loss_and_grads(batches):
        model.zero_grad()
        total = 0.0
        for rows, share in batches:
            loss = train.causal_lm_loss(model, rows) * share
            loss.backward()
            total += loss.item()
        return total, [p.grad.clone() for p in model.parameters()]

    groups = binder.length_groups(pre.tokenizer, pairs)
    assert len(groups) > 1 and sum(share for _, share in groups) == pytest.approx(1.0)
    assert all(g["attention_mask"].all() for g, _ in groups)  # no padding left inside a group
    one, g_one = loss_and_grads([(binder.lm_rows(pre.tokenizer, pairs), 1.0)])
    split, g_split = loss_and_grads(groups)
    assert split == pytest.approx(one, rel=1e-5)
    assert all(torch.allclose(a, b, atol=1e-6, rtol=1e-4) for a, b in zip(g_one, g_split))
    bad, _ = loss_and_grads([(g, 1.0) for g, _ in groups])  # unweighted means: not the batch's loss
    assert bad != pytest.approx(one, rel=1e-3)


def test_circuit_text_counts_short_groups_and_stages_without_room():
    """Two circuits of a 4-layer model: one full chain, one whose PT heads sit in layer 0 (no room for PD)."""
    cfg = config.Config.load("smoke", {"heads_base": [2, 1, 1, 1], "heads_tuned": [2, 1, 1, 1]})
    scores = {g: torch.zeros(4, 4) for g in config.GROUPS}
    full = {"VF": [(3, 0), (3, 1)], "PT": [(2, 0)], "PD": [(1, 0)], "SR": [(0, 0)]}
    stuck = {"VF": [(3, 0)], "PT": [(0, 1)], "PD": [], "SR": []}
    text = report.circuit_text({(0, "base"): (full, scores), (0, "track"): (stuck, scores)}, cfg).data
    assert "Of the 2 circuits" in text and "have 4." in text
    assert "in: VF 1, PT 0, PD 1, SR 1; it was empty in: VF 0, PT 0, PD 1, SR 1" in text
    assert "layer 0 in 1 circuits" in text and "the PD heads in 0" in text
